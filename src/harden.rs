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
//! - `restrict_syscalls`: on Linux (x86-64, aarch64) a seccomp filter, on
//!   every thread, refuses the system calls a server never makes and an
//!   intruder would need to go further (start programs, trace or read other
//!   processes, make namespaces, mount, load kernel code, reach the kernel's
//!   riskiest interfaces). A deny-list, not an allow-list: what the server
//!   does make (~70 calls, through wasmtime, tokio, redb, glibc) changes with
//!   each of them and with the glibc of the machine (a new one starts threads
//!   with calls an older one never made), and a call refused there would break
//!   the server, not an intruder.

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

/// Refuses, from now on and in every thread of this process (those it starts
/// later included), the system calls in `syscall_filters`; returns what it
/// did, for the log. Run after `--user` has dropped root: the filter sets
/// no_new_privs, and nothing here would stop the change of user anyway.
pub fn restrict_syscalls() -> String {
    let filters = match syscall_filters() {
        Ok(filters) => filters,
        Err(why) => return format!("off ({why})"),
    };
    for filter in &filters {
        if let Err(e) = seccompiler::apply_filter_all_threads(filter) {
            return format!("off ({e})");
        }
    }
    format!("on ({} system calls refused)", REFUSED.len() + ARCH_REFUSED.len())
}

/// The seccomp filters `restrict_syscalls` applies, in order: the refused
/// calls (EPERM); `clone3`, whose arguments a filter cannot read, as if the
/// kernel lacked it (ENOSYS: glibc then starts threads with `clone`, whose
/// flags the first filter checks); on x86-64, every x32 call (ENOSYS), whose
/// numbers differ from the ones the first filter names.
pub fn syscall_filters() -> Result<Vec<seccompiler::BpfProgram>, String> {
    use seccompiler::{SeccompAction, SeccompFilter};
    use std::collections::BTreeMap;
    let arch = target_arch()?;
    let mut refused: BTreeMap<i64, Vec<seccompiler::SeccompRule>> =
        REFUSED.iter().chain(ARCH_REFUSED).map(|&call| (call, Vec::new())).collect();
    for (call, rules) in argument_rules().map_err(|e| e.to_string())? {
        refused.insert(call, rules);
    }
    let eperm = SeccompAction::Errno(libc::EPERM as u32);
    let enosys = SeccompAction::Errno(libc::ENOSYS as u32);
    let compile = |rules, action| {
        SeccompFilter::new(rules, SeccompAction::Allow, action, arch)
            .and_then(seccompiler::BpfProgram::try_from)
            .map_err(|e| e.to_string())
    };
    let mut filters =
        vec![compile(refused, eperm)?, compile(BTreeMap::from([(libc::SYS_clone3, Vec::new())]), enosys)?];
    if cfg!(target_arch = "x86_64") {
        filters.push(no_x32());
    }
    Ok(filters)
}

#[cfg(target_arch = "x86_64")]
fn target_arch() -> Result<seccompiler::TargetArch, String> {
    Ok(seccompiler::TargetArch::x86_64)
}

#[cfg(target_arch = "aarch64")]
fn target_arch() -> Result<seccompiler::TargetArch, String> {
    Ok(seccompiler::TargetArch::aarch64)
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn target_arch() -> Result<seccompiler::TargetArch, String> {
    Err(format!("no seccomp filter is written for {}", std::env::consts::ARCH))
}

/// Calls refused whatever their arguments, on every architecture.
const REFUSED: &[i64] = &[
    // Starting programs: the server starts none once it runs.
    libc::SYS_execve,
    libc::SYS_execveat,
    // Other processes' memory and state.
    libc::SYS_ptrace,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_process_madvise,
    libc::SYS_pidfd_getfd,
    libc::SYS_kcmp,
    // Namespaces, mounts and the file-system root.
    libc::SYS_unshare,
    libc::SYS_setns,
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_mount_setattr,
    libc::SYS_move_mount,
    libc::SYS_open_tree,
    libc::SYS_fsopen,
    libc::SYS_fsconfig,
    libc::SYS_fsmount,
    libc::SYS_fspick,
    libc::SYS_pivot_root,
    libc::SYS_chroot,
    libc::SYS_open_by_handle_at,
    libc::SYS_quotactl,
    libc::SYS_quotactl_fd,
    libc::SYS_swapon,
    libc::SYS_swapoff,
    // Kernel code, the kernel's riskiest interfaces, the machine itself.
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_kexec_load,
    libc::SYS_kexec_file_load,
    libc::SYS_reboot,
    libc::SYS_bpf,
    libc::SYS_perf_event_open,
    libc::SYS_userfaultfd,
    libc::SYS_io_uring_setup,
    libc::SYS_io_uring_enter,
    libc::SYS_io_uring_register,
    libc::SYS_keyctl,
    libc::SYS_add_key,
    libc::SYS_request_key,
    libc::SYS_fanotify_init,
    libc::SYS_personality,
    libc::SYS_acct,
    libc::SYS_syslog,
    libc::SYS_vhangup,
    libc::SYS_settimeofday,
    libc::SYS_clock_settime,
    libc::SYS_clock_adjtime,
    libc::SYS_adjtimex,
    libc::SYS_sethostname,
    libc::SYS_setdomainname,
];

/// x86-64's own old and privileged calls.
#[cfg(target_arch = "x86_64")]
const ARCH_REFUSED: &[i64] = &[
    libc::SYS_iopl,
    libc::SYS_ioperm,
    libc::SYS_modify_ldt,
    libc::SYS_uselib,
    libc::SYS_nfsservctl,
    libc::SYS__sysctl,
    libc::SYS_ustat,
    libc::SYS_sysfs,
    libc::SYS_lookup_dcookie,
];

#[cfg(not(target_arch = "x86_64"))]
const ARCH_REFUSED: &[i64] = &[libc::SYS_lookup_dcookie];

/// Calls refused for some arguments only: `clone` making a namespace (a
/// thread's flags make none), raw and packet sockets, and the ioctls that
/// type into a terminal.
fn argument_rules() -> seccompiler::Result<Vec<(i64, Vec<seccompiler::SeccompRule>)>> {
    use seccompiler::{SeccompCmpArgLen::Dword, SeccompCmpOp, SeccompCondition, SeccompRule};
    let when = |arg, op, value| SeccompRule::new(vec![SeccompCondition::new(arg, Dword, op, value)?]);
    let namespaces = [
        libc::CLONE_NEWNS,
        libc::CLONE_NEWUSER,
        libc::CLONE_NEWPID,
        libc::CLONE_NEWNET,
        libc::CLONE_NEWIPC,
        libc::CLONE_NEWUTS,
        libc::CLONE_NEWCGROUP,
        libc::CLONE_NEWTIME,
    ];
    let clone = namespaces
        .iter()
        .map(|&flag| when(0, SeccompCmpOp::MaskedEq(flag as u64), flag as u64))
        .collect::<Result<_, _>>()?;
    // A socket's type carries SOCK_NONBLOCK and SOCK_CLOEXEC above its low 4 bits.
    let socket = vec![
        when(0, SeccompCmpOp::Eq, libc::AF_PACKET as u64)?,
        when(1, SeccompCmpOp::MaskedEq(0xf), libc::SOCK_RAW as u64)?,
    ];
    #[allow(clippy::unnecessary_cast, reason = "an ioctl number's type differs between targets")]
    let ioctl =
        vec![when(1, SeccompCmpOp::Eq, libc::TIOCSTI as u64)?, when(1, SeccompCmpOp::Eq, libc::TIOCLINUX as u64)?];
    Ok(vec![(libc::SYS_clone, clone), (libc::SYS_socket, socket), (libc::SYS_ioctl, ioctl)])
}

/// A filter answering ENOSYS to every x32 call (x86-64's second ABI: the
/// same architecture, numbers with bit 30 set, which no rule above names).
fn no_x32() -> seccompiler::BpfProgram {
    use seccompiler::sock_filter;
    const X32_BIT: u32 = 0x4000_0000;
    const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
    let statement = |code: u16, k: u32| sock_filter { code, jt: 0, jf: 0, k };
    let jump = |code: u16, k: u32, jt: u8, jf: u8| sock_filter { code, jt, jf, k };
    let (ld_w_abs, jeq_k, jge_k, ret_k) = (0x20, 0x15, 0x35, 0x06);
    vec![
        statement(ld_w_abs, 4), // seccomp_data.arch
        jump(jeq_k, AUDIT_ARCH_X86_64, 0, 3),
        statement(ld_w_abs, 0), // seccomp_data.nr
        jump(jge_k, X32_BIT, 0, 1),
        statement(ret_k, libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32),
        statement(ret_k, libc::SECCOMP_RET_ALLOW),
    ]
}

#[cfg(all(test, any(target_arch = "x86_64", target_arch = "aarch64")))]
mod tests {
    use super::*;

    /// `errno` of a call that failed, or `None` if it succeeded.
    fn failed(result: libc::c_long) -> Option<i32> {
        (result == -1).then(|| std::io::Error::last_os_error().raw_os_error().unwrap())
    }

    /// The filters, applied to one thread of the test process only (the
    /// server applies them to all of its threads): what they refuse, and
    /// that what a server does still works under them.
    #[test]
    fn the_filters_refuse_what_a_server_never_does() {
        let checked = std::thread::spawn(|| {
            for filter in syscall_filters().unwrap() {
                seccompiler::apply_filter(&filter).unwrap();
            }
            // Each call is one that would fail anyway, or be harmless, were
            // it let through (another error), so a broken filter fails this
            // test and nothing else.
            let path = c"/nonexistent/sandlot";
            let argv = [path.as_ptr(), std::ptr::null()];
            // SAFETY: every pointer is valid for the call; none is kept.
            unsafe {
                let env = [std::ptr::null()];
                assert_eq!(failed(libc::execve(path.as_ptr(), argv.as_ptr(), env.as_ptr()) as _), Some(libc::EPERM));
                assert_eq!(failed(libc::unshare(libc::CLONE_NEWUSER) as _), Some(libc::EPERM));
                assert_eq!(failed(libc::syscall(libc::SYS_ptrace, libc::PTRACE_PEEKDATA, 0, 0, 0)), Some(libc::EPERM));
                assert_eq!(failed(libc::syscall(libc::SYS_bpf, 0, 0, 0)), Some(libc::EPERM));
                assert_eq!(failed(libc::syscall(libc::SYS_io_uring_setup, 1, 0)), Some(libc::EPERM));
                assert_eq!(failed(libc::syscall(libc::SYS_userfaultfd, 0)), Some(libc::EPERM));
                assert_eq!(failed(libc::syscall(libc::SYS_clone3, 0, 0)), Some(libc::ENOSYS));
                let namespace = libc::CLONE_NEWUSER | libc::CLONE_FS;
                assert_eq!(failed(libc::syscall(libc::SYS_clone, namespace, 0, 0, 0, 0)), Some(libc::EPERM));
                assert_eq!(failed(libc::socket(libc::AF_PACKET, libc::SOCK_DGRAM, 0) as _), Some(libc::EPERM));
                let raw = libc::SOCK_RAW | libc::SOCK_CLOEXEC;
                assert_eq!(failed(libc::socket(libc::AF_INET, raw, libc::IPPROTO_ICMP) as _), Some(libc::EPERM));
                assert_eq!(failed(libc::ioctl(0, libc::TIOCSTI, c"x".as_ptr()) as _), Some(libc::EPERM));
                #[cfg(target_arch = "x86_64")]
                assert_eq!(failed(libc::syscall(0x4000_0000 | libc::SYS_getpid)), Some(libc::ENOSYS));
            }
            assert!(std::process::Command::new("/bin/true").status().is_err(), "no program starts");
            // What the server does: threads (clone3 refused, clone taken
            // instead), files, sockets, memory.
            let thread = std::thread::spawn(|| std::fs::read_to_string("/proc/thread-self/status").unwrap());
            assert!(thread.join().unwrap().contains("Seccomp:\t2"));
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let _client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
            listener.accept().unwrap();
            let folder = tempfile::tempdir().unwrap();
            std::fs::write(folder.path().join("file"), b"kept").unwrap();
            assert_eq!(std::fs::read(folder.path().join("file")).unwrap(), b"kept");
            assert_eq!(vec![7u8; 64 << 20].iter().map(|&b| b as usize).sum::<usize>(), 7 << 26);
        });
        checked.join().unwrap();
    }
}
