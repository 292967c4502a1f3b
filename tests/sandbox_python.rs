//! What only the Python guest has, through the library's session core with
//! real instances (the contract every language keeps is tests/contract.rs):
//! packages, the standard library, its tracebacks and exits, its memory and
//! recursion errors, the file system in detail, the sandlot module's forms.

mod common;

use std::time::Duration;

use common::{kill_while_printing, program, run, run_with, runtime};
use sandlot::{EndReason, Language, Limits, SessionEvent, SessionOptions};
use serde_json::json;

const PY: Language = Language::Python;

#[tokio::test]
async fn files_import_each_other_including_packages() {
    let ran = run(
        PY,
        &[
            ("main.py", "import helper\nfrom pkg.tools import double\nprint(helper.greet('ada'), double(21))"),
            ("helper.py", "def greet(name):\n    return f'hi {name}'"),
            ("pkg/__init__.py", ""),
            ("pkg/tools.py", "def double(x):\n    return 2 * x"),
        ],
    )
    .await;
    assert_eq!(ran.stdout, "hi ada 42\n", "stderr: {}", ran.stderr);
}

#[tokio::test]
async fn the_whole_stdlib_is_there() {
    let code = "import datetime, pickle, heapq, json, re, decimal, fractions, statistics, itertools, csv, io\n\
                from collections import Counter\n\
                print(Counter('abracadabra').most_common(1), heapq.nsmallest(2, [5, 1, 3]),\n\
                      pickle.loads(pickle.dumps({'a': 1})), statistics.mean([1, 2, 3]),\n\
                      datetime.date(2024, 2, 29).isoformat())";
    let ran = run(PY, &[("main.py", code)]).await;
    assert_eq!(ran.stdout, "[('a', 5)] [1, 3] {'a': 1} 2 2024-02-29\n", "stderr: {}", ran.stderr);
}

#[tokio::test]
async fn uncaught_error_prints_a_traceback_with_file_and_line() {
    let ran = run(
        PY,
        &[
            ("main.py", "import helper\nhelper.explode()"),
            ("helper.py", "def explode():\n    x = 1\n    raise ValueError('boom')"),
        ],
    )
    .await;
    assert_eq!((ran.outcome.exit_code, ran.outcome.reason), (1, EndReason::Error));
    assert!(ran.stderr.starts_with("Traceback (most recent call last):"), "{}", ran.stderr);
    assert!(ran.stderr.contains("File \"main.py\", line 2"), "{}", ran.stderr);
    assert!(ran.stderr.contains("File \"helper.py\", line 3, in explode"), "{}", ran.stderr);
    assert!(ran.stderr.contains("raise ValueError('boom')"), "{}", ran.stderr);
    assert!(ran.stderr.trim_end().ends_with("ValueError: boom"), "{}", ran.stderr);
    assert!(!ran.stderr.contains("app.py"), "driver frames leak into the traceback: {}", ran.stderr);
}

#[tokio::test]
async fn syntax_errors_name_the_line() {
    let ran = run(PY, &[("main.py", "x = 1\ny = (\n")]).await;
    assert_eq!(ran.outcome.exit_code, 1);
    assert!(ran.stderr.contains("main.py\", line 2"), "{}", ran.stderr);
    assert!(ran.stderr.contains("SyntaxError"), "{}", ran.stderr);
}

#[tokio::test]
async fn exit_codes_are_the_programs() {
    for (code, want) in
        [("import sys\nsys.exit(3)", 3), ("raise SystemExit(0)", 0), ("exit(7)", 7), ("import sys\nsys.exit('bad')", 1)]
    {
        let ran = run(PY, &[("main.py", code)]).await;
        assert_eq!(ran.outcome.exit_code, want, "{code}: {}", ran.stderr);
    }
    // WASI preview 2 carries only success or failure out of a process exit.
    let ran = run(PY, &[("main.py", "import os\nos._exit(5)")]).await;
    assert_eq!(ran.outcome.exit_code, 1);
    assert!(!ran.session.is_live(), "os._exit ends the interpreter");
}

#[tokio::test]
async fn memory_bomb_is_refused_and_the_host_stays_healthy() {
    let limits = Limits::default().with_memory_bytes(96 << 20);
    let bomb = "blocks = []\nwhile True:\n    blocks.append(bytearray(8 << 20))";
    let ran = run_with(PY, program(&[("main.py", bomb)]), limits).await;
    assert_eq!((ran.outcome.reason, ran.outcome.exit_code), (EndReason::Memory, 137), "{}", ran.stderr);
    assert!(ran.stderr.contains("MemoryError"), "{}", ran.stderr);
    assert!(ran.outcome.peak_memory <= 96 << 20, "peak {}", ran.outcome.peak_memory);
    // The guest recovered from the refusal: the same instance still answers.
    let mut ran = ran;
    let (out, _, outcome) = ran.eval("blocks = None\nprint('alive')").await;
    assert_eq!((out.as_str(), outcome.exit_code), ("alive\n", 0));
    let again = run(PY, &[("main.py", "print('next session fine')")]).await;
    assert_eq!(again.stdout, "next session fine\n");
}

#[tokio::test]
async fn infinite_recursion_is_a_catchable_error() {
    let code = "def f(n):\n    return f(n + 1)\ntry:\n    f(0)\nexcept RecursionError as e:\n    print('caught', type(e).__name__)\nf(0)";
    let ran = run(PY, &[("main.py", code)]).await;
    assert!(ran.stdout.starts_with("caught RecursionError"), "{} / {}", ran.stdout, ran.stderr);
    assert_eq!((ran.outcome.exit_code, ran.outcome.reason), (1, EndReason::Error));
    assert!(ran.stderr.contains("RecursionError"), "{}", ran.stderr);
}

#[tokio::test]
async fn kill_stops_a_running_session() {
    let mut session = kill_while_printing(PY, "main.py", "while True:\n    print('busy')").await;
    let err = session.eval("print(1)").await.unwrap_err();
    assert!(err.to_string().contains("session has ended"), "{err}");
}

#[tokio::test]
async fn host_files_are_out_of_reach() {
    let code = r#"
import os
for path in ['/etc/passwd', '../../etc/passwd', '/', '.', '/proc/self/environ', os.path.expanduser('~')]:
    try:
        with open(path) as f:
            print('READ', path, f.read(40))
    except OSError as e:
        print('refused', path, type(e).__name__)
for path in ['/', '.', '..']:
    try:
        print('LISTED', path, os.listdir(path))
    except OSError as e:
        print('refused', path, type(e).__name__)
try:
    open('/sandlot-escape', 'w').write('x')
    print('WROTE')
except OSError as e:
    print('refused write', type(e).__name__)
# /tmp is the session's own scratch folder, not the host's /tmp.
open('/tmp/sandlot-scratch-probe', 'w').write('x')
print('scratch', os.listdir('/tmp'))
"#;
    let ran = run(PY, &[("main.py", code)]).await;
    assert_eq!(ran.outcome.exit_code, 0, "{}", ran.stderr);
    assert!(
        !ran.stdout.contains("READ") && !ran.stdout.contains("LISTED") && !ran.stdout.contains("WROTE"),
        "{}",
        ran.stdout
    );
    assert!(ran.stdout.ends_with("scratch ['sandlot-scratch-probe']\n"), "{}", ran.stdout);
    assert!(!std::path::Path::new("/tmp/sandlot-scratch-probe").exists(), "the host's /tmp is untouched");
    assert_eq!(ran.stdout.matches("refused").count(), 10, "{}", ran.stdout);
    assert!(!std::path::Path::new("/tmp/sandlot-escape").exists());
}

#[tokio::test]
async fn the_host_environment_is_invisible() {
    // SAFETY: set before any session of this test starts; only read by this process.
    unsafe { std::env::set_var("SANDLOT_TEST_SECRET", "hunter2") };
    let mut p = program(&[("main.py", "import os, sys\nprint(sorted(os.environ.items()), sys.argv)")]);
    p.env = vec![("GREETING".into(), "hi".into())];
    p.args = vec!["--flag".into()];
    let ran = run_with(PY, p, Limits::default()).await;
    assert_eq!(ran.stdout, "[('GREETING', 'hi')] ['main.py', '--flag']\n", "{}", ran.stderr);
    assert!(!ran.stdout.contains("hunter2"));
}

#[tokio::test]
async fn sockets_are_refused() {
    let code = "try:\n    import socket\n    s = socket.create_connection(('127.0.0.1', 22), timeout=1)\n    print('CONNECTED')\nexcept Exception as e:\n    print('refused', type(e).__name__)";
    let ran = run(PY, &[("main.py", code)]).await;
    assert!(ran.stdout.starts_with("refused"), "{} / {}", ran.stdout, ran.stderr);
    let ran = run(PY, &[("main.py", "import urllib.request\nurllib.request.urlopen('http://127.0.0.1:1/')")]).await;
    assert_eq!(ran.outcome.exit_code, 1);
}

#[tokio::test]
async fn placeholders_outlive_the_run() {
    let code = "import sandlot\nsandlot.set_placeholder('TrainX', [[1, 2], [3, 4]])\nsandlot.set_placeholder('message', {'ok': True})\nprint(sandlot.get_placeholder('message'), sandlot.get_placeholder('missing'))";
    let ran = run(PY, &[("main.py", code)]).await;
    assert_eq!(ran.stdout, "{'ok': True} None\n", "{}", ran.stderr);
    let placeholders = ran.session.placeholders();
    drop(ran);
    assert_eq!(placeholders.get("TrainX"), Some(json!([[1, 2], [3, 4]])));
    assert_eq!(placeholders.names(), vec!["TrainX".to_string(), "message".to_string()]);
    let ran = run(PY, &[("main.py", "import sandlot\nsandlot.set_placeholder('x', object())")]).await;
    assert!(ran.stderr.contains("TypeError") && ran.stderr.contains("JSON"), "{}", ran.stderr);
}

#[tokio::test]
async fn placeholder_budget_is_enforced() {
    let limits = Limits { placeholder_bytes: 1000, ..Limits::default() };
    let code = "import sandlot\ntry:\n    sandlot.set_placeholder('big', 'x' * 5000)\nexcept sandlot.SandlotError as e:\n    print('refused:', e)";
    let ran = run_with(PY, program(&[("main.py", code)]), limits).await;
    assert!(ran.stdout.contains("refused:") && ran.stdout.contains("budget"), "{} {}", ran.stdout, ran.stderr);
}

#[tokio::test]
async fn saved_models_predict_after_the_run() {
    let code = "import sandlot\nclass Doubler:\n    def predict(self, xs):\n        return [2 * x for x in xs]\nsandlot.save_model('double', Doubler())\nsandlot.save_model('neg', lambda x: -x)";
    let mut ran = run(PY, &[("main.py", code)]).await;
    assert_eq!(ran.outcome.exit_code, 0, "{}", ran.stderr);
    assert_eq!(ran.session.models(), vec!["double".to_string(), "neg".to_string()]);
    assert_eq!(ran.predict("double", json!([1, 2.5])).await.unwrap(), Ok(json!([2, 5.0])));
    assert_eq!(ran.predict("neg", json!(4)).await.unwrap(), Ok(json!(-4)));
    let model_error = ran.predict("double", json!(null)).await.unwrap().unwrap_err();
    assert!(model_error.contains("TypeError"), "{model_error}");
    let err = ran.predict("missing", json!(1)).await.unwrap_err();
    assert!(err.to_string().contains("double, neg"), "{err}");
    // A model error leaves the instance usable.
    assert_eq!(ran.predict("neg", json!(1)).await.unwrap(), Ok(json!(-1)));
}

/// A model's answer is encoded once per call by an encoder the guest keeps
/// (json.dumps builds one per call): its answers must read as json.dumps's,
/// an encode cut short must not poison the next one, and an encode started
/// from inside another (a `tolist` that saves a placeholder) must still work.
#[tokio::test]
async fn model_answers_encode_as_json_dumps_would() {
    let code = r#"import sandlot
box = [[1, float('nan')]]
class Vector:
    def tolist(self):
        sandlot.set_placeholder('inner', {'saved': (1, 2)})
        return [7, 8]
class Model:
    def predict(self, x):
        if x == 'nan':
            return box
        if x == 'again':
            box[0] = [1, 2]
            return box
        if x == 'nested':
            return {'v': Vector(), 's': {3}, 't': (True, None), 'u': 'é"\u2028'}
        if x == 'cycle':
            loop = [1]
            loop.append(loop)
            return loop
        return x
sandlot.save_model('m', Model())"#;
    let mut ran = run(PY, &[("main.py", code)]).await;
    assert_eq!(ran.outcome.exit_code, 0, "{}", ran.stderr);
    let nan = ran.predict("m", json!("nan")).await.unwrap().unwrap_err();
    assert!(nan.contains("ValueError") && nan.contains("not JSON compliant"), "{nan}");
    // The same object, encoded again after the failed encode left it marked.
    assert_eq!(ran.predict("m", json!("again")).await.unwrap(), Ok(json!([[1, 2]])));
    let nested = ran.predict("m", json!("nested")).await.unwrap();
    assert_eq!(nested, Ok(json!({"v": [7, 8], "s": [3], "t": [true, null], "u": "é\"\u{2028}"})));
    let cycle = ran.predict("m", json!("cycle")).await.unwrap().unwrap_err();
    assert!(cycle.contains("Circular reference"), "{cycle}");
    // Input with whitespace, nesting and every JSON type is read as json.loads reads it.
    let input = json!({"a": [1, 2.5, -0.0, 1e300], "b": {"c": null, "d": false}, "e": "x y"});
    assert_eq!(ran.predict("m", input.clone()).await.unwrap(), Ok(input.clone()));
    let spaced = serde_json::value::RawValue::from_string(format!(" {input:#} \n")).unwrap();
    let answer = ran.session.predict("m", &spaced).await.unwrap().unwrap();
    assert_eq!(serde_json::from_str::<serde_json::Value>(answer.get()).unwrap(), input);
}

#[tokio::test]
async fn eval_sees_the_runs_globals() {
    let mut ran = run(PY, &[("main.py", "import helper\ntotal = helper.base + 1"), ("helper.py", "base = 41")]).await;
    let (out, err, outcome) = ran.eval("print(total, helper.base)").await;
    assert_eq!((out.as_str(), outcome.exit_code), ("42 41\n", 0), "{err}");
    let (_, err, outcome) = ran.eval("undefined_name").await;
    assert_eq!(outcome.exit_code, 1);
    assert!(err.contains("NameError") && err.contains("<eval>"), "{err}");
    let (out, _, _) = ran.eval("total += 1\nprint(total)").await;
    assert_eq!(out, "43\n");
}

#[tokio::test]
async fn stats_and_context_reach_the_guest() {
    let options = SessionOptions { context: Some(common::raw(json!({"player": "ada"}))), ..SessionOptions::default() };
    let (mut session, mut events) = runtime().session(PY, options).await.unwrap();
    let code = "import sandlot\ns = sandlot.stats([1, 2, 3, 4, 10])\nprint(s['count'], s['mean'], s['50%'], s['max'], sandlot.context['player'])\ntry:\n    sandlot.stats([])\nexcept ValueError as e:\n    print('refused', e)\ntry:\n    sandlot.engine('move', {'x': 1})\nexcept sandlot.EngineError as e:\n    print('engine:', e)";
    let outcome = session.run(program(&[("main.py", code)])).await.unwrap();
    let (out, err) = common::drain(&mut events);
    assert_eq!(outcome.exit_code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "5 4.0 3.0 10.0 ada");
    assert!(lines[1].starts_with("refused") && lines[1].contains("at least one"), "{out}");
    assert!(lines[2].contains("no game engine"), "{out}");
}

#[tokio::test]
async fn a_hundred_sessions_at_once() {
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            tokio::spawn(async move {
                let code = format!("import helper\nprint(helper.square({i}))");
                let ran = run(PY, &[("main.py", &code), ("helper.py", "def square(x):\n    return x * x")]).await;
                (i, ran.stdout, ran.outcome.exit_code)
            })
        })
        .collect();
    for task in tasks {
        let (i, stdout, code) = task.await.unwrap();
        assert_eq!((stdout, code), (format!("{}\n", i * i), 0));
    }
}

#[tokio::test]
async fn bad_programs_get_clear_errors() {
    let (mut session, _) = runtime().session(PY, SessionOptions::default()).await.unwrap();
    let mut p = program(&[("main.py", "print(1)")]);
    p.main_file = "other.py".into();
    let err = session.run(p).await.unwrap_err().to_string();
    assert!(err.contains("main file \"other.py\" is not one of"), "{err}");
    let err = session.run(program(&[("../escape.py", "print(1)")])).await.unwrap_err().to_string();
    assert!(err.contains("`..`"), "{err}");
    // Refused programs never reached the guest: the session still runs code.
    assert_eq!(session.run(program(&[("main.py", "print(1)")])).await.unwrap().exit_code, 0);
}

#[tokio::test]
async fn sessions_do_not_share_random_state() {
    let code = "import random, os\nprint(random.random(), os.urandom(8).hex())";
    let a = run(PY, &[("main.py", code)]).await;
    let b = run(PY, &[("main.py", code)]).await;
    assert_eq!(a.outcome.exit_code, 0, "{}", a.stderr);
    assert_ne!(a.stdout, b.stdout);
}

/// The snapshot's objects are made immortal when the guest is compiled
/// (src/guest/immortal.rs): CPython leaves their counts alone, a run's own
/// objects are counted as ever, and a session that changes a snapshot object
/// changes it in its own memory only.
#[tokio::test]
async fn the_snapshots_objects_are_immortal_and_still_each_sessions_own() {
    let code = "import sys, json, collections\n\
                def mine(): pass\n\
                print(sys._is_immortal(json.dumps), sys._is_immortal(collections.OrderedDict),\n\
                      sys._is_immortal(mine), sys._is_immortal(object()))\n\
                json.dumps = lambda value: 'changed'\n\
                del json.JSONDecoder, sys.modules['json']\n\
                print(json.dumps([1]), hasattr(json, 'JSONDecoder'), collections.Counter('aab').most_common(1))";
    let ran = run(PY, &[("main.py", code)]).await;
    assert_eq!(ran.stdout, "True True False False\nchanged False [('a', 2)]\n", "stderr: {}", ran.stderr);
    let next = run(PY, &[("main.py", "import json\nprint(json.dumps([1]))")]).await;
    assert_eq!(next.stdout, "[1]\n", "stderr: {}", next.stderr);
}

/// CPython takes its hash secret when it starts, and the guest's heap is a
/// snapshot taken after that, at build time: every session hashes `str` and
/// `bytes` with the same secret (a session cannot have its own: the
/// snapshot's strings keep the hashes they cached, and its dicts place keys
/// by them; see the README's limits). Pinned here, with what bounds it.
#[tokio::test]
async fn every_session_shares_the_snapshot_s_hash_secret() {
    let code = "print(hash('abc'), hash(b'abc'))";
    let a = run(PY, &[("main.py", code)]).await;
    let b = run(PY, &[("main.py", code)]).await;
    assert_eq!(a.outcome.exit_code, 0, "{}", a.stderr);
    assert_eq!(a.stdout, b.stdout);
}

/// Keys that all hash alike make each insert compare with every key before
/// it. They need no secret (an int's hash is itself modulo
/// `sys.hash_info.modulus`), and they cost only the program that makes them:
/// its own fuel ends it, and while one floods, another session runs as ever.
#[tokio::test]
async fn a_hash_flood_meets_its_own_limits_and_slows_no_other_session() {
    let flood = "import sys\nm = sys.hash_info.modulus\nd = {}\ni = 0\nprint('flooding', flush=True)\n\
                 while True:\n    d[i * m] = i\n    i += 1";
    let limits = Limits::default().with_fuel(2_000_000_000).with_wall_clock(Duration::from_secs(120));
    let ran = run_with(PY, program(&[("main.py", flood)]), limits).await;
    assert_eq!((ran.outcome.reason, ran.stdout.as_str()), (EndReason::Fuel, "flooding\n"), "{}", ran.stderr);

    let endless = Limits::default().with_fuel(u64::MAX / 2).with_wall_clock(Duration::from_secs(600));
    let options = SessionOptions { limits: Some(endless), ..SessionOptions::default() };
    let (mut session, mut events) = runtime().session(PY, options).await.unwrap();
    let kill = session.kill_handle();
    let flooding = tokio::task::spawn_blocking(move || {
        let thread = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        thread.block_on(async move { session.run(program(&[("main.py", flood)])).await.unwrap() })
    });
    loop {
        match events.recv().await.expect("the flood reports until it ends") {
            SessionEvent::Stdout(_) => break,
            SessionEvent::Finished(outcome) => panic!("the flood ended: {outcome:?}"),
            _ => {}
        }
    }
    let other = run(PY, &[("main.py", "print(sum(range(1000)))")]).await;
    assert_eq!((other.stdout.as_str(), other.outcome.reason), ("499500\n", EndReason::Exit), "{}", other.stderr);
    assert!(!flooding.is_finished(), "the flood was still going when the other session ended");
    kill.kill();
    assert_eq!(flooding.await.unwrap().reason, EndReason::Killed);
}
