//! The data folder, opened once as a capability (`cap_std::fs::Dir`).
//!
//! Everything the server keeps (`state.redb`, `uploads/`, `datasets/`) is
//! reached through this handle, never by joining paths: a name a client
//! influenced cannot lead out of the folder, by construction. The folder and
//! its subfolders are created owner-only (0700), its files 0600.

use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use cap_std::ambient_authority;
use cap_std::fs::DirBuilderExt as _;
use cap_std::fs::{Dir, DirBuilder, File, OpenOptions, OpenOptionsExt};

use crate::error::Error;

/// Owner-only permissions of what the server creates.
const DIR_MODE: u32 = 0o700;
const FILE_MODE: u32 = 0o600;

/// The open data folder.
pub(crate) struct DataFolder {
    root: Dir,
    /// For messages in the log, and for what must be named by path (the
    /// guests' read-only `/data`).
    path: PathBuf,
}

impl DataFolder {
    /// Opens (creating, owner-only) the data folder at `path`.
    pub(crate) fn open(path: &Path) -> Result<Self, Error> {
        let failed = |what: &str, e: io::Error| {
            Error::Storage(format!("could not {what} the data folder {}: {e}", path.display()))
        };
        std::fs::DirBuilder::new().recursive(true).mode(DIR_MODE).create(path).map_err(|e| failed("create", e))?;
        // A folder made earlier, or by hand, is made owner-only too.
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(DIR_MODE)).map_err(|e| failed("secure", e))?;
        let root = Dir::open_ambient_dir(path, ambient_authority()).map_err(|e| failed("open", e))?;
        Ok(DataFolder { root, path: path.to_path_buf() })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// A subfolder (created owner-only if missing), with its path.
    pub(crate) fn subfolder(&self, name: &str) -> Result<(Dir, PathBuf), Error> {
        ensure_dir(&self.root, name)
            .and_then(|()| self.root.open_dir(name))
            .map(|dir| (dir, self.path.join(name)))
            .map_err(|e| Error::Storage(format!("could not open {}: {e}", self.path.join(name).display())))
    }

    /// Opens a file of the folder for reading and writing, created 0600 if missing.
    pub(crate) fn open_file(&self, name: &str) -> Result<std::fs::File, Error> {
        open_rw(&self.root, name, true)
            .map(File::into_std)
            .map_err(|e| Error::Storage(format!("could not open {}: {e}", self.path.join(name).display())))
    }

    /// Bytes free for the server on the folder's file system.
    pub(crate) fn free_bytes(&self) -> Option<u64> {
        let stats = rustix::fs::fstatvfs(&self.root).ok()?;
        Some(stats.f_bavail.saturating_mul(stats.f_frsize))
    }
}

/// Creates `name` in `dir` owner-only, unless it exists.
pub(crate) fn ensure_dir(dir: &Dir, name: &str) -> io::Result<()> {
    let mut builder = DirBuilder::new();
    builder.mode(DIR_MODE);
    match dir.create_dir_with(name, &builder) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        other => other,
    }
}

/// Opens `name` in `dir` to read and write; with `create`, made 0600 if missing.
pub(crate) fn open_rw(dir: &Dir, name: &str, create: bool) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.read(true).write(true).create(create).mode(FILE_MODE);
    dir.open_with(name, &options)
}

/// Makes a folder's entries (renames, new files) durable.
pub(crate) fn sync_dir(dir: &Dir) -> io::Result<()> {
    dir.open(".")?.sync_all()
}
