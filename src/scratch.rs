//! A session's scratch folder: the one place a guest may write files, seen as
//! `/tmp`, private to its instance and removed with it.
//!
//! Each instance gets a fresh folder under the runtime's scratch root when it
//! is made (warm instances too: their folder is empty until their session
//! writes). WASI confines the guest to it (a preopen: no `..` or symlink leads
//! out). Its size is bounded by `Limits::scratch_bytes` and `MAX_ENTRIES`:
//! checked every `CHECK_TICKS` epoch ticks while a call runs and at the call's
//! end (a model call's end at most every `CHECK_INTERVAL`); past either the call is stopped (reason `scratch-limit`), so a guest
//! can overshoot by what it writes in one check interval, never more.
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
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cap_std::ambient_authority;
use cap_std::fs::Dir;

/// Most files and folders a scratch folder may hold.
pub const MAX_ENTRIES: usize = 256;
/// Deepest folder nesting looked into.
const MAX_DEPTH: usize = 16;
/// Largest file a client is sent from a scratch folder (4 MiB: 5.3 MiB as
/// base64, within a WebSocket message).
pub const MAX_FETCH_BYTES: u64 = 4 << 20;
/// Epoch ticks between size checks while a call runs (5 ms each).
pub(crate) const CHECK_TICKS: u32 = 10;
/// The same interval in time: a run's or an eval's end is always checked, a
/// model call's (the direct-IO hot path) only once this long has passed
/// since the last check, which keeps the same bound on what can overshoot.
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
                return Ok(Scratch { path, root: Some(self.clone()) });
            }
            let _ = std::fs::remove_dir_all(&path);
        }
        std::fs::create_dir_all(&self.path)?;
        let path = self.path.join(uuid::Uuid::new_v4().simple().to_string());
        std::fs::create_dir(&path)?;
        Ok(Scratch { path, root: Some(self.clone()) })
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

fn is_empty(path: &Path) -> bool {
    std::fs::read_dir(path).is_ok_and(|mut entries| entries.next().is_none())
}

/// One instance's scratch folder; given back (emptied or removed) when dropped.
#[derive(Debug)]
pub(crate) struct Scratch {
    path: PathBuf,
    /// Where it goes back to; none for a folder of its own.
    root: Option<Arc<ScratchRoot>>,
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
    /// A new empty folder under `root`, of its own (removed when dropped).
    pub(crate) fn new(root: &Path) -> std::io::Result<Scratch> {
        std::fs::create_dir_all(root)?;
        let path = root.join(uuid::Uuid::new_v4().simple().to_string());
        std::fs::create_dir(&path)?;
        Ok(Scratch { path, root: None })
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
        let usage = scratch.usage();
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
