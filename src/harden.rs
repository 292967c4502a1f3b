//! Defence in depth for the server process itself, should a guest ever
//! escape its sandbox or a bug hand a client more than it should get:
//!
//! - `restrict_files`: on Linux with Landlock, the process may from then on
//!   touch only its data folder (read-write), its cache of compiled guests
//!   (read-write: compiled once, on first use), the guests' scratch folders
//!   (read-write; in the data folder unless `$SANDLOT_SCRATCH_DIR`), python-sci's files
//!   (read-only) and the files serving reads now and then (read-only: cluster mode's TLS
//!   certificates). It must run before any thread starts: Landlock binds the
//!   calling thread and the threads it starts later.
//! - `drop_privileges`: started as root with `--user NAME`, the server gives
//!   the data folder to that user and becomes it once its port is bound.
//! - `root_warning`: started as root without `--user`, it says so plainly
//!   (containers and CI run as root, so it does not refuse).

use std::path::{Path, PathBuf};

use landlock::{ABI, Access, AccessFs, Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetStatus, path_beneath_rules};

/// Restricts this process's file-system access, where the kernel supports
/// it; returns what it did, for the log.
pub fn restrict_files(data_dir: &Path, cache_dir: Option<&Path>, scratch: &Path, also_readable: &[PathBuf]) -> String {
    let cache = cache_dir.map_or_else(crate::cache::default_dir, Path::to_path_buf);
    let writable: Vec<PathBuf> = vec![data_dir.to_path_buf(), cache, scratch.to_path_buf()];
    for folder in &writable {
        if let Err(e) = std::fs::create_dir_all(folder) {
            return format!("off (could not create {}: {e})", folder.display());
        }
    }
    let mut readable = vec![crate::guests::sci_dir()];
    readable.extend(also_readable.iter().cloned());
    let abi = ABI::V5;
    let restricted = Ruleset::default()
        .handle_access(AccessFs::from_all(abi))
        .and_then(|ruleset| ruleset.create())
        .and_then(|ruleset| ruleset.add_rules(path_beneath_rules(&readable, AccessFs::from_read(abi))))
        .and_then(|ruleset| ruleset.add_rules(path_beneath_rules(&writable, AccessFs::from_all(abi))))
        .and_then(|ruleset| ruleset.restrict_self());
    match restricted {
        Ok(status) => match status.ruleset {
            RulesetStatus::FullyEnforced => "on".into(),
            RulesetStatus::PartiallyEnforced => "on, partly (an older kernel)".into(),
            RulesetStatus::NotEnforced => "off (this kernel does not support Landlock)".into(),
        },
        Err(e) => format!("off ({e})"),
    }
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// What to tell the operator of a server started as root without `--user`.
pub fn root_warning() -> &'static str {
    "running as root: a sandbox escape would be root's; start with --user NAME to drop to an unprivileged \
     user once the port is bound"
}

/// The user a server started as root becomes once its port is bound.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunAs {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

impl RunAs {
    /// Looks the user up (before `restrict_files`, which hides `/etc/passwd`).
    pub fn lookup(name: &str) -> Result<RunAs, String> {
        if !is_root() {
            return Err(format!("--user {name} needs sandlot to be started as root"));
        }
        let found = nix::unistd::User::from_name(name)
            .map_err(|e| format!("cannot look up user {name:?}: {e}"))?
            .ok_or_else(|| format!("there is no user {name:?} on this machine"))?;
        Ok(RunAs { name: name.to_string(), uid: found.uid.as_raw(), gid: found.gid.as_raw() })
    }

    /// Gives `data_dir` (everything in it) to the user and becomes it, group
    /// and supplementary groups included.
    pub fn become_user(&self, data_dir: Option<&Path>) -> Result<(), String> {
        use nix::unistd::{Gid, Uid, setgid, setgroups, setuid};
        if let Some(data_dir) = data_dir {
            give(data_dir, self.uid, self.gid)
                .map_err(|e| format!("cannot give the data folder {} to {}: {e}", data_dir.display(), self.name))?;
        }
        let gid = Gid::from_raw(self.gid);
        setgroups(&[gid]).map_err(|e| format!("cannot set the groups of {}: {e}", self.name))?;
        setgid(gid).map_err(|e| format!("cannot become group {gid}: {e}"))?;
        setuid(Uid::from_raw(self.uid)).map_err(|e| format!("cannot become user {}: {e}", self.name))?;
        if is_root() {
            return Err(format!("still root after becoming {}", self.name));
        }
        Ok(())
    }
}

/// Changes the owner of `path` and everything under it (links themselves, not what they name).
fn give(path: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))?;
    if path.symlink_metadata()?.is_dir() {
        for entry in std::fs::read_dir(path)? {
            give(&entry?.path(), uid, gid)?;
        }
    }
    Ok(())
}
