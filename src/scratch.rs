//! A session's scratch folder: the one place a guest may write files, seen as
//! `/tmp`, private to its instance and removed with it.
//!
//! Each instance gets a fresh folder under the runtime's scratch root when it
//! is made (warm instances too: their folder is empty until their session
//! writes). WASI confines the guest to it (a preopen: no `..` or symlink leads
//! out). The root is private: made with a random name and mode 0700, refused
//! if it is not a folder of this user's (`ScratchRoot`), so another user of
//! the machine can neither read a session's files nor plant a symlink that
//! redirects them.
//!
//! Its size is bounded by `Limits::scratch_bytes` and `MAX_ENTRIES`, counted
//! two ways:
//! - the folder is measured (`Scratch::check`) at every epoch tick while a
//!   call runs and at the call's end (a model call's end at most every
//!   `CHECK_INTERVAL`): a walk of the whole tree at any depth, bounded by the
//!   entries it may hold, that counts past it as over (a walk cut short by
//!   `MAX_ENTRIES`, a path longer than `MAX_PATH_BYTES`, or a folder it cannot
//!   read ends the call too), plus the bytes of files the guest deleted while
//!   it still holds them open for writing;
//! - every write a component guest makes through `wasi:filesystem` is counted
//!   first (`Quota::take`, from `host/filesystem.rs`): between two
//!   measurements a guest may write only what the last one left under the
//!   limit, so the folder never holds more than the limit. A write past it
//!   fails with "disk quota exceeded" and the call ends (`scratch-limit`).
//!   python-sci's preview-1 writes are not seen one by one; for it the tick's
//!   measurement bounds what one tick can write (5 ms).
//!
//! Reading for clients goes through cap-std too, so a symlink the guest made
//! cannot point a client's fetch outside the folder.
//!
//! Making and removing a folder costs ~120 µs on this machine's ext4, a tenth
//! of a small session, and most instances write nothing: a folder found
//! empty when its instance goes is kept (up to `SPARE_FOLDERS`) for the next
//! instance instead. Empty means nothing of the last one is left in it: it is
//! checked when the instance goes, and again when the folder is handed on,
//! at least `SPARE_DELAY` later (a file operation the old instance had in
//! flight, on wasmtime-wasi's blocking threads, has long ended by then);
//! a folder found holding anything is removed.

use std::collections::VecDeque;
use std::fs::DirBuilder;
use std::io::Read;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use cap_std::ambient_authority;
use cap_std::fs::Dir;

/// Most files and folders a scratch folder may hold.
pub const MAX_ENTRIES: usize = 256;
/// Longest path under `/tmp` (Linux's `PATH_MAX`): a file deeper than this
/// could not be named by a client, so a tree holding one is over its limit.
pub const MAX_PATH_BYTES: usize = 4096;
/// Most files a guest may hold open for writing at once (each is looked at
/// by every measurement, in case it was deleted while open).
pub const MAX_OPEN_WRITERS: usize = MAX_ENTRIES;
/// Largest file a client is sent from a scratch folder (4 MiB: 5.3 MiB as
/// base64, within a WebSocket message).
pub const MAX_FETCH_BYTES: u64 = 4 << 20;
/// Epoch ticks between measurements while a call runs, once the guest's
/// writes are counted before they land (`Quota::check_every`).
const CHECK_TICKS: u32 = 10;
/// A run's or an eval's end is always measured, a model call's (the
/// direct-IO hot path) only once this long has passed since the last
/// measurement.
pub(crate) const CHECK_INTERVAL: std::time::Duration = std::time::Duration::from_millis(50);

/// Empty folders kept for new instances at most.
const SPARE_FOLDERS: usize = 1024;
/// How long an emptied folder rests before it is handed on.
const SPARE_DELAY: Duration = Duration::from_secs(1);

/// Why a file of a scratch folder could not be read for a client.
#[derive(Debug, thiserror::Error)]
pub enum ScratchReadError {
    #[error("{0:?} is not a file under /tmp: name one by its path there, as session_files or list_files show it")]
    NotUnderTmp(String),
    #[error("no file {0:?} under /tmp; session_files or list_files show the files there")]
    NoFile(String),
    #[error("{0:?} is not a file (a folder?); session_files or list_files show the files under /tmp")]
    NotAFile(String),
    #[error("{path:?} holds {bytes} bytes; at most {limit} are sent: have the code write it in smaller files")]
    TooLarge { path: String, bytes: u64, limit: u64 },
    #[error("this session has no scratch folder")]
    NoFolder,
    /// The host failed to read it (its message may name host paths: not for clients).
    #[error("a scratch file could not be read: {0}")]
    Unreadable(String),
}

/// Where a runtime's scratch folders are made, and its empty spare ones
/// (oldest first, with when each was given back).
#[derive(Debug)]
pub(crate) struct ScratchRoot {
    path: PathBuf,
    spare: Mutex<VecDeque<(Instant, PathBuf)>>,
    delay: Duration,
}

impl ScratchRoot {
    pub(crate) fn new(path: PathBuf) -> Arc<Self> {
        Self::with_delay(path, SPARE_DELAY)
    }

    fn with_delay(path: PathBuf, delay: Duration) -> Arc<Self> {
        Arc::new(ScratchRoot { path, spare: Mutex::new(VecDeque::new()), delay })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// An empty folder for a new instance: a rested spare one, else a new one.
    pub(crate) fn folder(self: &Arc<Self>) -> std::io::Result<Scratch> {
        let rested = {
            let mut spare = crate::sync::lock(&self.spare);
            match spare.front() {
                Some((since, _)) if since.elapsed() >= self.delay => spare.pop_front().map(|(_, path)| path),
                _ => None,
            }
        };
        if let Some(path) = rested {
            if is_empty(&path) {
                return Ok(Scratch::at(path, Some(self.clone())));
            }
            let _ = std::fs::remove_dir_all(&path);
        }
        private_folder(&self.path)?;
        let path = self.path.join(uuid::Uuid::new_v4().simple().to_string());
        DirBuilder::new().mode(0o700).create(&path)?;
        Ok(Scratch::at(path, Some(self.clone())))
    }

    /// Takes back a folder whose instance is gone: kept if empty and there
    /// is room, else removed.
    fn give_back(&self, path: &Path) {
        if is_empty(path) {
            let mut spare = crate::sync::lock(&self.spare);
            if spare.len() < SPARE_FOLDERS {
                spare.push_back((Instant::now(), path.to_path_buf()));
                return;
            }
        }
        let _ = std::fs::remove_dir_all(path);
    }
}

/// Makes `path` a folder only this user can enter (0700), or checks that it
/// is one: an existing entry that is a symlink, not a folder, or not ours is
/// refused, never used or changed. Its parent folders are made as usual.
pub(crate) fn private_folder(path: &Path) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    match DirBuilder::new().mode(0o700).create(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    // `symlink_metadata`: a planted symlink is seen as one, not followed.
    let meta = std::fs::symlink_metadata(path)?;
    let refuse = |why: &str| {
        Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!("{} {why}; remove it or choose another scratch folder (SANDLOT_SCRATCH_DIR)", path.display()),
        ))
    };
    if !meta.file_type().is_dir() {
        return refuse("is not a folder (a symlink or a file)");
    }
    if meta.uid() != rustix::process::geteuid().as_raw() {
        return refuse("belongs to another user");
    }
    if meta.mode() & 0o077 != 0 {
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
    }
    Ok(())
}

fn is_empty(path: &Path) -> bool {
    std::fs::read_dir(path).is_ok_and(|mut entries| entries.next().is_none())
}

/// One instance's scratch folder; given back (emptied or removed) when dropped.
#[derive(Debug)]
pub(crate) struct Scratch {
    path: PathBuf,
    /// Where it goes back to; none for a folder of its own.
    root: Option<Arc<ScratchRoot>>,
    quota: Arc<Quota>,
}

/// A file in a scratch folder.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ScratchFile {
    /// Its path under `/tmp`, with `/` between folders.
    pub path: String,
    pub bytes: u64,
}

/// What a scratch folder holds.
#[derive(Debug, Default)]
pub(crate) struct Usage {
    pub(crate) bytes: u64,
    pub(crate) entries: usize,
    /// The walk did not see the whole tree (too many entries, a path too
    /// long, a folder it could not read): what it missed counts as over.
    pub(crate) cut: bool,
}

/// The bytes a folder may still take before its next measurement, shared
/// by the folder and the guest's write streams.
#[derive(Debug)]
pub(crate) struct Quota {
    /// The folder it keeps.
    path: PathBuf,
    /// Whether the guest's writes are counted here (a component's are, once
    /// it writes; python-sci's never are, so its folder is measured at every
    /// tick rather than every `CHECK_TICKS`).
    counted: AtomicBool,
    state: Mutex<QuotaState>,
}

#[derive(Debug)]
struct QuotaState {
    limit: u64,
    /// What the last measurement found.
    held: u64,
    /// Bytes written since it.
    written: u64,
    /// A write was refused: the call ends at the next measurement.
    refused: bool,
    /// Files opened for writing, looked at by each measurement in case one
    /// was deleted while open (its bytes are still on disk, in no folder).
    writers: Vec<Weak<std::fs::File>>,
}

impl Quota {
    fn new(path: PathBuf) -> Arc<Quota> {
        Arc::new(Quota {
            path,
            counted: AtomicBool::new(false),
            state: Mutex::new(QuotaState { limit: 0, held: 0, written: 0, refused: false, writers: Vec::new() }),
        })
    }

    /// Epoch ticks between two measurements while a call runs: every tick
    /// until the guest's writes are counted here, then every `CHECK_TICKS`
    /// (what is left to catch then is entries, which cost no bytes to speak
    /// of, and deleted files, which a write's refusal measures anyway).
    pub(crate) fn check_every(&self) -> u32 {
        if self.counted.load(Ordering::Relaxed) { CHECK_TICKS } else { 1 }
    }

    /// The session's limit, set when an instance is bound to its session.
    pub(crate) fn set_limit(&self, bytes: u64) {
        crate::sync::lock(&self.state).limit = bytes;
    }

    /// Counts `bytes` about to be written; false (and the call ends) if they
    /// would take the folder past its limit. The running count (what the
    /// last measurement found plus what was written since) only grows, so
    /// before a write is refused the folder is measured again: a file
    /// rewritten in place or deleted gives its bytes back.
    pub(crate) fn take(&self, bytes: u64) -> bool {
        self.counted.store(true, Ordering::Relaxed);
        for measured in [false, true] {
            if measured {
                let limit = crate::sync::lock(&self.state).limit;
                self.measure(limit);
            }
            let mut state = crate::sync::lock(&self.state);
            if state.refused {
                return false;
            }
            let total = state.held.saturating_add(state.written).saturating_add(bytes);
            if total <= state.limit {
                state.written = total - state.held;
                return true;
            }
        }
        crate::sync::lock(&self.state).refused = true;
        false
    }

    /// Measures the folder against `limit_bytes` and `MAX_ENTRIES`, and
    /// gives the guest's writes until the next measurement what is left:
    /// true if it is over (or a write was refused since the last one).
    pub(crate) fn measure(&self, limit_bytes: u64) -> bool {
        let usage = usage(&self.path);
        let held = usage.bytes.saturating_add(self.deleted_but_open());
        let mut state = crate::sync::lock(&self.state);
        state.limit = limit_bytes;
        state.held = held;
        state.written = 0;
        usage.cut || held > limit_bytes || usage.entries > MAX_ENTRIES || state.refused
    }

    /// Notes a file opened for writing; false if too many are open already.
    pub(crate) fn track(&self, file: &Arc<std::fs::File>) -> bool {
        let mut state = crate::sync::lock(&self.state);
        if state.writers.iter().any(|w| std::ptr::eq(w.as_ptr(), Arc::as_ptr(file))) {
            return true;
        }
        if state.writers.len() >= MAX_OPEN_WRITERS {
            state.writers.retain(|w| w.strong_count() > 0);
            if state.writers.len() >= MAX_OPEN_WRITERS {
                return false;
            }
        }
        state.writers.push(Arc::downgrade(file));
        true
    }

    /// Bytes of files still open for writing that no folder holds.
    fn deleted_but_open(&self) -> u64 {
        let mut state = crate::sync::lock(&self.state);
        state.writers.retain(|w| w.strong_count() > 0);
        let mut bytes = 0u64;
        for file in state.writers.iter().filter_map(Weak::upgrade) {
            if let Ok(meta) = file.metadata()
                && meta.nlink() == 0
            {
                bytes = bytes.saturating_add(meta.len().max(meta.blocks().saturating_mul(512)));
            }
        }
        bytes
    }
}

impl Scratch {
    fn at(path: PathBuf, root: Option<Arc<ScratchRoot>>) -> Scratch {
        let quota = Quota::new(path.clone());
        Scratch { path, root, quota }
    }

    /// A new empty folder under `root`, of its own (removed when dropped).
    pub(crate) fn new(root: &Path) -> std::io::Result<Scratch> {
        private_folder(root)?;
        let path = root.join(uuid::Uuid::new_v4().simple().to_string());
        DirBuilder::new().mode(0o700).create(&path)?;
        Ok(Scratch::at(path, None))
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn quota(&self) -> &Arc<Quota> {
        &self.quota
    }

    /// Measures it (`Quota::measure`): true if it is over its limit.
    pub(crate) fn over(&self, limit_bytes: u64) -> bool {
        self.quota.measure(limit_bytes)
    }

    /// Its files (not folders), by path.
    pub(crate) fn files(&self) -> Vec<ScratchFile> {
        let mut files = Vec::new();
        walk(&self.path, |path, bytes| {
            if let Some(path) = path {
                files.push(ScratchFile { path, bytes });
            }
            files.len() <= MAX_ENTRIES
        });
        files.sort_by(|a, b| a.path.cmp(&b.path));
        files
    }

    /// A file's contents, at most `max_bytes` of them. The path is relative
    /// to the folder (a leading `/tmp/` is allowed); nothing outside it is
    /// reached, through `..` or a symlink.
    pub(crate) fn read(&self, path: &str, max_bytes: u64) -> Result<Vec<u8>, ScratchReadError> {
        let relative = path.strip_prefix("/tmp/").unwrap_or(path).trim_start_matches('/');
        if relative.is_empty() || relative.split('/').any(|p| p == "..") || relative.contains('\0') {
            return Err(ScratchReadError::NotUnderTmp(path.into()));
        }
        let unreadable = |e: std::io::Error| ScratchReadError::Unreadable(e.to_string());
        let dir = Dir::open_ambient_dir(&self.path, ambient_authority()).map_err(unreadable)?;
        let file = dir.open(relative).map_err(|_| ScratchReadError::NoFile(path.into()))?;
        let meta = file.metadata().map_err(unreadable)?;
        if !meta.is_file() {
            return Err(ScratchReadError::NotAFile(path.into()));
        }
        if meta.len() > max_bytes {
            return Err(ScratchReadError::TooLarge { path: path.into(), bytes: meta.len(), limit: max_bytes });
        }
        let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
        file.take(max_bytes + 1).read_to_end(&mut bytes).map_err(unreadable)?;
        Ok(bytes)
    }
}

/// Calls `each(path of a file or None for a folder, bytes)` for entries
/// at any depth, depth first, until it returns false. Each folder is
/// opened relative to its parent (cap-std: no path grows past the
/// system's limit, nothing outside the folder is reached) and symlinks
/// are not followed. True if it saw the whole tree; false if `each`
/// stopped it, a path passed `MAX_PATH_BYTES` or a folder could not be
/// read.
fn walk(path: &Path, mut each: impl FnMut(Option<String>, u64) -> bool) -> bool {
    let Ok(top) = Dir::open_ambient_dir(path, ambient_authority()) else { return false };
    // Folders still to look into: their parent, their name there, and
    // their path under `/tmp`. A parent stays open only while a child
    // of it waits, so open folders are few whatever the shape.
    let mut pending: Vec<(Arc<Dir>, std::ffi::OsString, String)> = Vec::new();
    let mut current = (Arc::new(top), String::new());
    loop {
        let (dir, prefix) = current;
        let Ok(entries) = dir.entries() else { return false };
        for entry in entries {
            let Ok(entry) = entry else { return false };
            let Ok(kind) = entry.file_type() else { return false };
            let name = entry.file_name();
            let path = format!("{prefix}{}", name.to_string_lossy());
            if path.len() > MAX_PATH_BYTES {
                return false;
            }
            let more = if kind.is_dir() {
                pending.push((dir.clone(), name, format!("{path}/")));
                each(None, 0)
            } else {
                let bytes = entry.metadata().map(|m| m.len()).unwrap_or(0);
                each(kind.is_file().then_some(path), bytes)
            };
            if !more {
                return false;
            }
        }
        drop(dir);
        let Some((parent, name, prefix)) = pending.pop() else { return true };
        let Ok(dir) = parent.open_dir(&name) else { return false };
        current = (Arc::new(dir), prefix);
    }
}

/// Bytes and entries under `path`, counting at most `MAX_ENTRIES + 1`
/// entries (enough to tell it is over), so a measurement costs a bounded
/// walk.
fn usage(path: &Path) -> Usage {
    let mut usage = Usage::default();
    let complete = walk(path, |_, bytes| {
        usage.bytes = usage.bytes.saturating_add(bytes);
        usage.entries += 1;
        usage.entries <= MAX_ENTRIES
    });
    usage.cut = !complete;
    usage
}

impl Drop for Scratch {
    fn drop(&mut self) {
        match &self.root {
            Some(root) => root.give_back(&self.path),
            None => {
                let _ = std::fs::remove_dir_all(&self.path);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_lists_reads_and_removes() {
        let root = tempfile::tempdir().unwrap();
        let scratch = Scratch::new(root.path()).unwrap();
        std::fs::create_dir(scratch.path().join("sub")).unwrap();
        std::fs::write(scratch.path().join("sub/a.txt"), "hello").unwrap();
        std::fs::write(scratch.path().join("b.bin"), [0u8; 10]).unwrap();
        let usage = usage(scratch.path());
        assert_eq!((usage.bytes, usage.entries), (15, 3));
        let paths: Vec<String> = scratch.files().into_iter().map(|f| f.path).collect();
        assert_eq!(paths, ["b.bin", "sub/a.txt"]);
        assert_eq!(scratch.read("/tmp/sub/a.txt", 100).unwrap(), b"hello");
        assert!(matches!(scratch.read("sub/a.txt", 3), Err(ScratchReadError::TooLarge { bytes: 5, limit: 3, .. })));
        assert!(matches!(scratch.read("../x", 100), Err(ScratchReadError::NotUnderTmp(_))));
        assert!(matches!(scratch.read("sub", 100), Err(ScratchReadError::NotAFile(_))));
        assert!(matches!(scratch.read("nothing", 100), Err(ScratchReadError::NoFile(_))));
        assert!(!scratch.over(15) && scratch.over(14));
        let path = scratch.path().to_path_buf();
        drop(scratch);
        assert!(!path.exists(), "removed with its instance");
    }

    #[test]
    fn only_empty_folders_are_used_again() {
        let root = tempfile::tempdir().unwrap();
        let root = ScratchRoot::with_delay(root.path().join("scratch"), Duration::from_millis(200));
        let first = root.folder().unwrap();
        let kept = first.path().to_path_buf();
        drop(first);
        assert!(kept.exists(), "an empty folder is kept");
        let early = root.folder().unwrap();
        assert_ne!(early.path(), kept, "not handed on before it has rested");
        std::thread::sleep(Duration::from_millis(250));
        let second = root.folder().unwrap();
        assert_eq!(second.path(), kept, "then handed to the next instance");
        std::fs::write(second.path().join("secret"), "mine").unwrap();
        drop(second);
        assert!(!kept.exists(), "a folder with files in it is removed, never handed on");
        // A file that lands after the folder was given back (an operation
        // still in flight) is seen when the folder would be handed on.
        let late = early.path().to_path_buf();
        drop(early);
        std::fs::write(late.join("late"), "x").unwrap();
        std::thread::sleep(Duration::from_millis(250));
        let third = root.folder().unwrap();
        assert!(!late.exists() && third.path() != late, "a spare that is no longer empty is removed");
        assert_eq!(std::fs::read_dir(third.path()).unwrap().count(), 0);
    }

    #[test]
    fn symlinks_lead_nowhere() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("secret"), "host file").unwrap();
        let scratch = Scratch::new(&root.path().join("scratch")).unwrap();
        std::os::unix::fs::symlink(root.path().join("secret"), scratch.path().join("link")).unwrap();
        std::os::unix::fs::symlink("../../secret", scratch.path().join("relative")).unwrap();
        assert!(scratch.read("link", 100).is_err(), "an absolute symlink is not followed out");
        assert!(scratch.read("relative", 100).is_err(), "nor a relative one");
        assert!(scratch.files().is_empty(), "symlinks are not listed as files");
    }
}
