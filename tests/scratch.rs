//! The scratch folder's quota (`/tmp`) against every way past it, through
//! the library's session core with real guests: nesting below any depth,
//! writing faster than the folder is measured, deleting a file while it is
//! still open, and the root a runtime makes its folders in.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use common::{program, run};
use sandlot::{EndReason, Language, Runtime, RuntimeConfig, SessionOptions};

/// The default limit (`Limits::scratch_bytes`).
const LIMIT: u64 = 16 << 20;

/// Files at the bottom of 20 nested folders count as much as files at the
/// top (the walk used to stop at 16 levels, and what lay below went unseen:
/// 256 MiB and 2,000 files there ended `exit`).
#[tokio::test]
async fn files_below_any_depth_count() {
    let bytes = "import os\nd = '/tmp/' + '/'.join(f'n{i}' for i in range(20))\nos.makedirs(d)\n\
                 block = b'x' * (1 << 20)\nfor i in range(64):\n    with open(f'{d}/f{i}', 'wb') as f:\n        f.write(block)\n\
                 print('wrote it all')";
    let ran = run(Language::Python, &[("main.py", bytes)]).await;
    assert_eq!(ran.outcome.reason, EndReason::ScratchLimit, "{:?} {}", ran.outcome, ran.stderr);
    assert!(!ran.stdout.contains("wrote it all"), "{}", ran.stdout);

    let files = "import os\nd = '/tmp/' + '/'.join(f'n{i}' for i in range(20))\nos.makedirs(d)\n\
                 for i in range(2000):\n    open(f'{d}/f{i}', 'w').close()\nprint('made them all')";
    let ran = run(Language::Python, &[("main.py", files)]).await;
    assert_eq!(ran.outcome.reason, EndReason::ScratchLimit, "{:?} {}", ran.outcome, ran.stderr);

    // Folders alone, 300 deep: each is an entry wherever it is.
    let deep = "import os\nos.makedirs('/tmp/' + '/'.join(['d'] * 300))\nprint('deep')";
    let ran = run(Language::Python, &[("main.py", deep)]).await;
    assert_eq!(ran.outcome.reason, EndReason::ScratchLimit, "{:?} {}", ran.outcome, ran.stderr);
}

/// A write that would take the folder past its limit fails in the guest
/// (no space left on device; wasi-libc reports a failed stream write as
/// EIO) before it reaches the disk: however fast a
/// program writes, the folder never holds more than the limit between two
/// measurements. The run then ends with `scratch-limit`.
#[tokio::test]
async fn a_write_past_the_limit_is_refused_before_it_lands() {
    let python = "import errno, os\nblock = b'x' * (1 << 20)\nwritten = 0\n\
                  fd = os.open('/tmp/big', os.O_WRONLY | os.O_CREAT)\n\
                  try:\n    while written < 64 << 20:\n        written += os.write(fd, block)\n\
                  except OSError as e:\n    print('refused', errno.errorcode.get(e.errno), written, flush=True)\n";
    let ran = run(Language::Python, &[("main.py", python)]).await;
    assert_eq!(ran.outcome.reason, EndReason::ScratchLimit, "{:?} {}", ran.outcome, ran.stderr);
    let (refused_with, written) = refusal(&ran.stdout);
    assert!(["ENOSPC", "EIO"].contains(&refused_with.as_str()), "{}", ran.stdout);
    assert!(written <= LIMIT, "{written} bytes landed, past the limit of {LIMIT}");

    let js = "const fs = require('fs'); const block = 'x'.repeat(1 << 20); let written = 0;\n\
              try { for (let i = 0; i < 64; i++) { fs.appendFileSync('/tmp/big', block); written += block.length; } }\n\
              catch (e) { console.log('refused', String(e.message).replace(/ /g, '_'), written); }";
    let ran = run(Language::JavaScript, &[("main.js", js)]).await;
    assert_eq!(ran.outcome.reason, EndReason::ScratchLimit, "{:?} {}", ran.outcome, ran.stderr);
    let (_, written) = refusal(&ran.stdout);
    assert!(written <= LIMIT, "{written} bytes landed, past the limit of {LIMIT}: {}", ran.stdout);
}

/// A file deleted while it is still open is on the disk in no folder: its
/// bytes still count, so it cannot be used to write past the limit unseen.
#[tokio::test]
async fn a_deleted_file_still_open_still_counts() {
    let code = "import os, errno, time\nblock = b'x' * (1 << 20)\nwritten = 0\n\
                fd = os.open('/tmp/hidden', os.O_WRONLY | os.O_CREAT)\nos.remove('/tmp/hidden')\n\
                try:\n    while written < 64 << 20:\n        written += os.write(fd, block)\n        time.sleep(0.001)\n\
                except OSError as e:\n    print('refused', errno.errorcode.get(e.errno), written, flush=True)\n";
    let ran = run(Language::Python, &[("main.py", code)]).await;
    assert_eq!(ran.outcome.reason, EndReason::ScratchLimit, "{:?} {} {}", ran.outcome, ran.stdout, ran.stderr);
    let (refused_with, written) = refusal(&ran.stdout);
    assert!(["ENOSPC", "EIO"].contains(&refused_with.as_str()), "{}", ran.stdout);
    assert!(written <= LIMIT, "{written} bytes landed, past the limit of {LIMIT}");
}

/// A file rewritten in place many times is held once: only what the folder
/// holds counts, not what was ever written.
#[tokio::test]
async fn rewriting_a_file_within_the_limit_goes_on() {
    let code = "block = b'x' * (4 << 20)\nfor i in range(40):\n    with open('/tmp/same', 'wb') as f:\n        f.write(block)\n\
                import os\nprint(os.path.getsize('/tmp/same'))";
    let ran = run(Language::Python, &[("main.py", code)]).await;
    assert_eq!((ran.outcome.reason, ran.stdout.as_str()), (EndReason::Exit, "4194304\n"), "{}", ran.stderr);
}

fn refusal(stdout: &str) -> (String, u64) {
    let line = stdout.lines().find(|l| l.starts_with("refused")).unwrap_or_else(|| panic!("no refusal: {stdout}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    (words[1].to_string(), words[words.len() - 1].parse().expect("bytes written"))
}

/// A runtime's scratch root is private (0700, this user's, a name no one
/// can guess); a symlink planted where a root would go is never followed.
#[tokio::test]
async fn the_scratch_root_is_private_and_no_planted_link_is_followed() {
    let base = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    // The names an attacker could predict before: `sandlot-scratch-PID-N`.
    for n in 0..8 {
        let planted = base.path().join(format!("sandlot-scratch-{}-{n}", std::process::id()));
        std::os::unix::fs::symlink(elsewhere.path(), planted).unwrap();
    }
    let runtime = Runtime::new(RuntimeConfig {
        warm_instances: Some(0),
        scratch_dir: Some(base.path().to_path_buf()),
        ..RuntimeConfig::default()
    })
    .expect("runtime starts");
    let (mut session, _events) = runtime.session(Language::Lua, SessionOptions::default()).await.unwrap();
    let outcome = session.run(program(&[("main.lua", "io.open('/tmp/mine', 'w'):write('secret'):close()")])).await;
    assert_eq!(outcome.unwrap().exit_code, 0);
    assert_eq!(std::fs::read_dir(elsewhere.path()).unwrap().count(), 0, "nothing written through a planted link");
    let roots: Vec<_> =
        std::fs::read_dir(base.path()).unwrap().flatten().filter(|e| e.file_type().is_ok_and(|t| t.is_dir())).collect();
    assert_eq!(roots.len(), 1, "one root of its own");
    let meta = roots[0].metadata().unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o700, "the root is private");
    assert_eq!(meta.uid(), rustix::process::geteuid().as_raw());
    for folder in std::fs::read_dir(roots[0].path()).unwrap().flatten() {
        assert_eq!(folder.metadata().unwrap().permissions().mode() & 0o777, 0o700, "and so is each session's folder");
    }
    assert!(!roots[0].file_name().to_string_lossy().ends_with("-0"), "its name is not a counter");
}

/// A scratch base that is a symlink to another user's folder, or a root that
/// is not ours, is refused with what to do.
#[tokio::test]
async fn a_root_that_is_a_symlink_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let runtime = Runtime::new(RuntimeConfig {
        warm_instances: Some(0),
        scratch_dir: Some(dir.path().to_path_buf()),
        ..RuntimeConfig::default()
    })
    .expect("runtime starts");
    // Find the root's name by making one session, then replace the root by a link.
    let (session, _) = runtime.session(Language::Lua, SessionOptions::default()).await.unwrap();
    drop(session);
    let root = std::fs::read_dir(dir.path()).unwrap().flatten().next().unwrap().path();
    std::fs::remove_dir_all(&root).unwrap();
    std::os::unix::fs::symlink(elsewhere.path(), &root).unwrap();
    let refused = runtime.session(Language::Lua, SessionOptions::default()).await.err().expect("refused");
    assert!(refused.to_string().contains("is not a folder"), "{refused}");
    assert_eq!(std::fs::read_dir(elsewhere.path()).unwrap().count(), 0, "nothing made through the link");
}
