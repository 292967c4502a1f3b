//! A session's scratch folder: the one place a guest may write files, seen as
//! `/tmp`, private to its instance and removed with it.
//!
//! Each instance gets a fresh folder under the runtime's scratch root when it
//! is made (warm instances too: their folder is empty until their session
//! writes). WASI confines the guest to it (a preopen: no `..` or symlink leads
//! out). Its size is bounded by `Limits::scratch_bytes` and `MAX_ENTRIES`:
//! checked every `CHECK_TICKS` epoch ticks while a call runs and at the call's
//! end; past either the call is stopped (reason `scratch-limit`), so a guest
//! can overshoot by what it writes in one check interval, never more.
//! Reading for clients goes through cap-std too, so a symlink the guest made
//! cannot point a client's fetch outside the folder.

use std::io::Read;
use std::path::{Path, PathBuf};

use cap_std::ambient_authority;
use cap_std::fs::Dir;

/// Most files and folders a scratch folder may hold.
pub const MAX_ENTRIES: usize = 256;
/// Deepest folder nesting looked into.
const MAX_DEPTH: usize = 16;
/// Epoch ticks between size checks while a call runs (5 ms each).
pub(crate) const CHECK_TICKS: u32 = 10;

/// One instance's scratch folder; removed when dropped.
#[derive(Debug)]
pub(crate) struct Scratch {
    path: PathBuf,
}

/// A file in a scratch folder.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ScratchFile {
    /// Its path under `/tmp`, with `/` between folders.
    pub path: String,
    pub bytes: u64,
}

/// What a scratch folder holds, as far as it was looked at.
#[derive(Debug, Default)]
pub(crate) struct Usage {
    pub(crate) bytes: u64,
    pub(crate) entries: usize,
}

impl Scratch {
    /// A new empty folder under `root`.
    pub(crate) fn new(root: &Path) -> std::io::Result<Scratch> {
        std::fs::create_dir_all(root)?;
        let path = root.join(uuid::Uuid::new_v4().simple().to_string());
        std::fs::create_dir(&path)?;
        Ok(Scratch { path })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes and entries it holds, counting at most `MAX_ENTRIES + 1` entries
    /// (enough to tell it is over), so a check costs a bounded walk.
    pub(crate) fn usage(&self) -> Usage {
        let mut usage = Usage::default();
        let _ = self.walk(|_, bytes| {
            usage.bytes += bytes;
            usage.entries += 1;
            usage.entries <= MAX_ENTRIES
        });
        usage
    }

    /// Whether it holds more than `limit_bytes` or `MAX_ENTRIES`.
    pub(crate) fn over(&self, limit_bytes: u64) -> bool {
        let usage = self.usage();
        usage.bytes > limit_bytes || usage.entries > MAX_ENTRIES
    }

    /// Its files (not folders), by path.
    pub(crate) fn files(&self) -> Vec<ScratchFile> {
        let mut files = Vec::new();
        let _ = self.walk(|path, bytes| {
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
    pub(crate) fn read(&self, path: &str, max_bytes: u64) -> Result<Vec<u8>, String> {
        let relative = path.strip_prefix("/tmp/").unwrap_or(path).trim_start_matches('/');
        if relative.is_empty() || relative.split('/').any(|p| p == "..") || relative.contains('\0') {
            return Err(format!("{path:?} is not a file under /tmp"));
        }
        let dir = Dir::open_ambient_dir(&self.path, ambient_authority()).map_err(|e| e.to_string())?;
        let file = dir.open(relative).map_err(|_| format!("no file {path:?} under /tmp"))?;
        let meta = file.metadata().map_err(|e| e.to_string())?;
        if !meta.is_file() {
            return Err(format!("{path:?} is not a file"));
        }
        if meta.len() > max_bytes {
            return Err(format!("{path:?} holds {} bytes; at most {max_bytes} are sent", meta.len()));
        }
        let mut bytes = Vec::with_capacity(meta.len() as usize);
        file.take(max_bytes + 1).read_to_end(&mut bytes).map_err(|e| e.to_string())?;
        Ok(bytes)
    }

    /// Calls `each(path of a file or None for a folder, bytes)` for entries,
    /// depth first, until it returns false. Symlinks are not followed.
    fn walk(&self, mut each: impl FnMut(Option<String>, u64) -> bool) -> Result<(), ()> {
        let mut pending = vec![(self.path.clone(), String::new(), 0)];
        while let Some((dir, prefix, depth)) = pending.pop() {
            let entries = std::fs::read_dir(&dir).map_err(|_| ())?;
            for entry in entries.flatten() {
                let Ok(kind) = entry.file_type() else { continue };
                let name = format!("{prefix}{}", entry.file_name().to_string_lossy());
                let more = if kind.is_dir() {
                    if depth < MAX_DEPTH {
                        pending.push((entry.path(), format!("{name}/"), depth + 1));
                    }
                    each(None, 0)
                } else {
                    let bytes = entry.metadata().map(|m| m.len()).unwrap_or(0);
                    each(kind.is_file().then_some(name), bytes)
                };
                if !more {
                    return Ok(());
                }
            }
        }
        Ok(())
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
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
        let usage = scratch.usage();
        assert_eq!((usage.bytes, usage.entries), (15, 3));
        let paths: Vec<String> = scratch.files().into_iter().map(|f| f.path).collect();
        assert_eq!(paths, ["b.bin", "sub/a.txt"]);
        assert_eq!(scratch.read("/tmp/sub/a.txt", 100).unwrap(), b"hello");
        assert!(scratch.read("sub/a.txt", 3).unwrap_err().contains("at most 3"));
        assert!(scratch.read("../x", 100).is_err());
        assert!(scratch.read("sub", 100).unwrap_err().contains("not a file"));
        assert!(!scratch.over(15) && scratch.over(14));
        let path = scratch.path().to_path_buf();
        drop(scratch);
        assert!(!path.exists(), "removed with its instance");
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
