//! `sandlot run`, driven as a user would: the real binary on real files.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn sandlot(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sandlot"))
        .args(args)
        .current_dir(dir)
        .env("SANDLOT_LOG", "warn")
        .output()
        .expect("sandlot starts")
}

fn folder(name: &str, files: &[(&str, &str)]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sandlot-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    for (file, content) in files {
        let path = dir.join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
    dir
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn runs_hello_in_both_languages() {
    let dir =
        folder("hello", &[("hello.py", "print('hello from python')"), ("hello.js", "console.log('hello from js')")]);
    let out = sandlot(&["run", "hello.py"], &dir);
    assert_eq!(
        (text(&out.stdout).as_str(), out.status.code()),
        ("hello from python\n", Some(0)),
        "{}",
        text(&out.stderr)
    );
    let out = sandlot(&["run", "hello.js"], &dir);
    assert_eq!((text(&out.stdout).as_str(), out.status.code()), ("hello from js\n", Some(0)), "{}", text(&out.stderr));
}

#[test]
fn passes_arguments_and_finds_the_other_files() {
    let dir = folder(
        "multi",
        &[
            ("app/main.py", "import sys, util\nprint(util.shout(sys.argv[1]))"),
            ("app/util.py", "def shout(s):\n    return s.upper()"),
        ],
    );
    let out = sandlot(&["run", "--main", "app/main.py", "app/util.py", "--", "quiet"], &dir);
    assert_eq!(text(&out.stdout), "QUIET\n", "{}", text(&out.stderr));
}

#[test]
fn exits_with_the_guests_status() {
    let dir = folder(
        "status",
        &[
            ("fail.py", "raise KeyError('k')"),
            ("three.js", "process.exit(3)"),
            ("spin.py", "while True:\n    pass"),
            ("bomb.js", "const a = []; for (;;) a.push(new Array(1e6).fill(0));"),
        ],
    );
    let out = sandlot(&["run", "fail.py"], &dir);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("KeyError: 'k'"));
    assert_eq!(sandlot(&["run", "three.js"], &dir).status.code(), Some(3));
    let out = sandlot(&["run", "--timeout", "0.5", "spin.py"], &dir);
    assert_eq!(out.status.code(), Some(124));
    assert!(text(&out.stderr).contains("time limit"), "{}", text(&out.stderr));
    let out = sandlot(&["run", "--memory", "48", "bomb.js"], &dir);
    assert_eq!(out.status.code(), Some(137), "{}", text(&out.stderr));
}

#[test]
fn explains_what_it_cannot_do() {
    let dir = folder("bad", &[("notes.txt", "hi"), ("ok.py", "print(1)")]);
    let out = sandlot(&["run", "notes.txt"], &dir);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("pass --lang"), "{}", text(&out.stderr));
    let out = sandlot(&["run", "--lang", "cobol", "ok.py"], &dir);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("unknown language \"cobol\""), "{}", text(&out.stderr));
    let out = sandlot(&["run", "missing.py"], &dir);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("cannot read missing.py"), "{}", text(&out.stderr));
}

#[test]
fn passes_its_standard_input_to_the_program() {
    use std::io::Write;
    use std::process::Stdio;
    let dir = folder(
        "stdin",
        &[
            ("sum.py", "import sys\nprint(sum(int(l) for l in sys.stdin))"),
            (
                "sum.js",
                "const rl = require('readline').createInterface({ input: process.stdin });\n\
                 (async () => { let n = 0; for await (const l of rl) n += Number(l); console.log(n); })();",
            ),
            ("sum.lua", "local n = 0\nfor l in io.lines() do n = n + tonumber(l) end\nprint(n)"),
        ],
    );
    for file in ["sum.py", "sum.js", "sum.lua"] {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_sandlot"))
            .args(["run", file])
            .current_dir(&dir)
            .env("SANDLOT_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("sandlot starts");
        child.stdin.take().unwrap().write_all(b"40\n2\n").unwrap();
        let out = child.wait_with_output().unwrap();
        assert_eq!((text(&out.stdout).as_str(), out.status.code()), ("42\n", Some(0)), "{file}: {}", text(&out.stderr));
    }
}

/// The seccomp filters on each thread of a process.
fn seccomp_filters(pid: u32) -> Vec<usize> {
    let mut counts = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let status = std::fs::read_to_string(task.unwrap().path().join("status")).unwrap();
        let line = status.lines().find(|l| l.starts_with("Seccomp_filters:")).unwrap();
        counts.push(line.split_once(':').unwrap().1.trim().parse().unwrap());
    }
    counts
}

/// `sandlot run` refuses the system calls sandlot never makes, as `serve`
/// does (`sandlot::harden`), from before its first thread; `--seccomp false`
/// turns that off.
#[test]
fn a_run_is_under_the_seccomp_filter_unless_turned_off() {
    use std::io::{BufRead, BufReader, Read};
    use std::process::Stdio;
    let dir =
        folder("seccomp", &[("wait.py", "import sys\nprint('waiting', flush=True)\nsys.stdin.read()\nprint('done')")]);
    let own = seccomp_filters(std::process::id())[0];
    let ours = sandlot::harden::syscall_filters().unwrap().len();
    for (args, filters) in [(&["run", "wait.py"][..], own + ours), (&["run", "--seccomp", "false", "wait.py"], own)] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_sandlot"))
            .args(args)
            .current_dir(&dir)
            .env("SANDLOT_LOG", "warn")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("sandlot starts");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        assert_eq!(line, "waiting\n", "{args:?}");
        let counts = seccomp_filters(child.id());
        assert!(counts.len() > 1 && counts.iter().all(|&n| n == filters), "{args:?}: {counts:?}, not {filters}");
        drop(child.stdin.take());
        let mut rest = String::new();
        stdout.read_to_string(&mut rest).unwrap();
        assert_eq!((rest.as_str(), child.wait().unwrap().code()), ("done\n", Some(0)), "{args:?}");
    }
}

/// On a terminal, a run whose language is not prepared yet shows what is
/// being prepared (a spinner, cleared before the program writes); piped, it
/// prints nothing but the program's own output.
#[test]
fn a_terminal_sees_what_is_being_prepared_and_a_pipe_does_not() {
    let dir = folder("progress", &[("hello.lua", "print('hello from lua')")]);
    let binary = env!("CARGO_BIN_EXE_sandlot");
    // `script` runs the command with a pseudo-terminal as its stdout and stderr.
    let cache = tempfile::tempdir().unwrap();
    let out = Command::new("script")
        .args(["-qec", &format!("{binary} run hello.lua"), "/dev/null"])
        .current_dir(&dir)
        .env("SANDLOT_CACHE_DIR", cache.path())
        .env("SANDLOT_LOG", "warn")
        .output()
        .expect("script runs");
    let shown = text(&out.stdout);
    let spinner = shown.find("preparing lua (its first preparation on a machine takes ~2 s)");
    let hello = shown.find("hello from lua");
    assert!(spinner.is_some() && hello.is_some() && spinner < hello, "{shown:?}");
    let cache = tempfile::tempdir().unwrap();
    let out = Command::new(binary)
        .args(["run", "hello.lua"])
        .current_dir(&dir)
        .env("SANDLOT_CACHE_DIR", cache.path())
        .env("SANDLOT_LOG", "warn")
        .output()
        .expect("sandlot starts");
    assert_eq!((text(&out.stdout).as_str(), text(&out.stderr).as_str()), ("hello from lua\n", ""));
}

/// JavaScript's and Lua's interpreters are started once, when their guests
/// are compiled, and baked into them (`src/guest/prebake.rs`): the log says
/// so, and each run from that one image has its own files and its own
/// random numbers.
#[test]
fn javascript_and_lua_are_compiled_with_their_interpreters_started() {
    let programs = [
        (
            "main.js",
            "const fs = require('fs'); fs.writeFileSync('/tmp/x', 'kept'); console.log(fs.readFileSync('/tmp/x', 'utf8'), Math.random())",
        ),
        (
            "main.lua",
            "local f = io.open('/tmp/x', 'w'); f:write('kept'); f:close(); print(io.open('/tmp/x'):read('a'), math.random())",
        ),
    ];
    let dir = folder("prebake", &programs);
    let cache = tempfile::tempdir().unwrap();
    for (file, _) in programs {
        let mut outputs = Vec::new();
        for _ in 0..2 {
            let out = Command::new(env!("CARGO_BIN_EXE_sandlot"))
                .args(["run", file])
                .current_dir(&dir)
                .env("SANDLOT_CACHE_DIR", cache.path())
                .env("SANDLOT_LOG", "info")
                .output()
                .expect("sandlot starts");
            let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
            assert!(out.status.success() && stdout.starts_with("kept"), "{file}: {stdout}{stderr}");
            outputs.push(stdout);
            if outputs.len() == 1 {
                assert!(stderr.contains("interpreter started and baked in"), "{file}: {stderr}");
            }
        }
        assert_ne!(outputs[0], outputs[1], "{file}: two runs drew the same random numbers");
    }
}

/// A log format the binary does not know is refused with what it can be.
#[test]
fn an_unknown_log_format_is_refused_clearly() {
    let dir = folder("log-format", &[("hello.lua", "print('hi')")]);
    let out = Command::new(env!("CARGO_BIN_EXE_sandlot"))
        .args(["run", "hello.lua"])
        .current_dir(&dir)
        .env("SANDLOT_LOG_FORMAT", "xml")
        .output()
        .expect("sandlot starts");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("SANDLOT_LOG_FORMAT is \"xml\"; it can be human or json"),
        "{}",
        text(&out.stderr)
    );
    let out = sandlot(&["--log-format", "xml", "run", "hello.lua"], &dir);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("possible values: human, json"), "{}", text(&out.stderr));
}

/// A server asked to keep more warm instances than it may is refused at
/// start, saying the most it takes.
#[test]
fn too_many_warm_instances_are_refused_clearly() {
    let dir = folder("warm-too-many", &[]);
    std::fs::create_dir_all(&dir).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sandlot"))
        .args(["serve", "--listen", "127.0.0.1:0", "--warm-instances", "100000", "--data-dir"])
        .arg(dir.join("data"))
        .current_dir(&dir)
        .output()
        .expect("sandlot starts");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("--warm-instances is 100000; it can be at most 64 per language"),
        "{}",
        text(&out.stderr)
    );
}
