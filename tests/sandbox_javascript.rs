//! What only the JavaScript guest has, through the library's session core
//! with real instances (the contract every language keeps is
//! tests/contract.rs): Node-like console and modules, promises and timers,
//! its stack traces, exits, memory and recursion errors, the sandlot forms.

mod common;

use common::{kill_while_printing, program, run, run_with, runtime};
use sandlot::{EndReason, Language, Limits, SessionOptions};
use serde_json::json;

const JS: Language = Language::JavaScript;

#[tokio::test]
async fn console_formats_values_like_node() {
    let ran = run(JS, &[("main.js", "console.log('n', 1, [1, 'a'], {a: {b: null}}, undefined, true)")]).await;
    assert_eq!(ran.stdout, "n 1 [ 1, \"a\" ] { a: { b: null } } undefined true\n");
}

#[tokio::test]
async fn files_import_each_other_with_require_and_import() {
    let ran = run(
        JS,
        &[
            ("main.js", "const h = require('./lib/helper');\nconsole.log(h.greet('ada'));"),
            (
                "lib/helper.js",
                "const { double } = require('./math.js');\nexports.greet = (n) => `hi ${n} ${double(21)}`;",
            ),
            ("lib/math.js", "module.exports = { double: (x) => 2 * x };"),
        ],
    )
    .await;
    assert_eq!(ran.stdout, "hi ada 42\n", "stderr: {}", ran.stderr);
    let ran = run(
        JS,
        &[
            (
                "main.mjs",
                "import { double } from './math.js';\nimport cfg from './cfg.js';\nconsole.log(double(cfg.n));",
            ),
            ("math.js", "export function double(x) { return 2 * x; }"),
            ("cfg.js", "export default { n: 5 };"),
        ],
    )
    .await;
    assert_eq!(ran.stdout, "10\n", "stderr: {}", ran.stderr);
}

#[tokio::test]
async fn uncaught_error_prints_its_stack_with_file_and_line() {
    let ran = run(
        JS,
        &[
            ("main.js", "const h = require('./helper.js');\nh.explode();"),
            ("helper.js", "exports.explode = function explode() {\n  throw new Error('boom');\n};"),
        ],
    )
    .await;
    assert_eq!((ran.outcome.exit_code, ran.outcome.reason), (1, EndReason::Error));
    assert!(ran.stderr.starts_with("Uncaught Error: boom"), "{}", ran.stderr);
    assert!(ran.stderr.contains("at explode (helper.js:2"), "{}", ran.stderr);
    assert!(ran.stderr.contains("main.js:2"), "{}", ran.stderr);
}

#[tokio::test]
async fn syntax_errors_name_the_line() {
    let ran = run(JS, &[("main.js", "let x = 1;\nlet y = (;\n")]).await;
    assert_eq!(ran.outcome.exit_code, 1);
    assert!(ran.stderr.contains("SyntaxError") && ran.stderr.contains("main.js:2"), "{}", ran.stderr);
}

#[tokio::test]
async fn exit_codes_are_the_programs() {
    for (code, want) in [
        ("process.exit(3)", 3),
        ("try { process.exit(4) } catch (e) {}\nconsole.log('not reached')", 4),
        ("process.exitCode = 2", 2),
        ("async function m() { await null; process.exit(6) }\nm()", 6),
        ("Promise.reject(new Error('nope'))", 1),
        ("console.log('fine')", 0),
    ] {
        let ran = run(JS, &[("main.js", code)]).await;
        assert_eq!(ran.outcome.exit_code, want, "{code}: {}", ran.stderr);
        assert!(!ran.stdout.contains("not reached"));
    }
}

#[tokio::test]
async fn promises_and_timers_run_in_order() {
    let code = "setTimeout(() => console.log('timeout 20'), 20);\nsetTimeout(() => console.log('timeout 0'), 0);\n\
                Promise.resolve().then(() => console.log('microtask'));\n\
                (async () => { await new Promise(r => setTimeout(r, 5)); console.log('awaited'); })();\n\
                console.log('sync');";
    let ran = run(JS, &[("main.js", code)]).await;
    assert_eq!(ran.stdout, "sync\nmicrotask\ntimeout 0\nawaited\ntimeout 20\n", "{}", ran.stderr);
}

#[tokio::test]
async fn memory_bomb_is_refused_and_the_host_stays_healthy() {
    let limits = Limits::default().with_memory_bytes(64 << 20);
    let bomb = "const keep = [];\nwhile (true) keep.push(new Array(1 << 20).fill(1.5));";
    let ran = run_with(JS, program(&[("main.js", bomb)]), limits).await;
    assert_eq!((ran.outcome.reason, ran.outcome.exit_code), (EndReason::Memory, 137), "{}", ran.stderr);
    assert!(ran.stderr.contains("out of memory"), "{}", ran.stderr);
    let again = run(JS, &[("main.js", "console.log('next session fine')")]).await;
    assert_eq!(again.stdout, "next session fine\n");
}

#[tokio::test]
async fn infinite_recursion_is_a_catchable_error() {
    let code = "function f(n) { return f(n + 1) + 1; }\ntry { f(0) } catch (e) { console.log('caught', e.name) }\n\
                const deep = []; let o = deep; for (let i = 0; i < 50000; i++) { const n = []; o.push(n); o = n; }\n\
                try { JSON.stringify(deep) } catch (e) { console.log('caught', e.name) }\nf(0)";
    // QuickJS checks a deep structure for cycles level by level: the
    // stringify alone takes ~5 s of guest time. The test is about the
    // error, not the time; a loaded machine gets room.
    let limits = Limits::default().with_wall_clock(std::time::Duration::from_secs(60));
    let mut ran = run_with(JS, program(&[("main.js", code)]), limits).await;
    assert_eq!(ran.stdout, "caught RangeError\ncaught RangeError\n", "{:?}: {}", ran.outcome, ran.stderr);
    assert_eq!((ran.outcome.exit_code, ran.outcome.reason), (1, EndReason::Error));
    assert!(ran.stderr.contains("RangeError"), "{}", ran.stderr);
    let (out, _, _) = ran.eval("console.log('still alive')").await;
    assert_eq!(out, "still alive\n");
}

#[tokio::test]
async fn kill_stops_a_running_session() {
    let session = kill_while_printing(JS, "main.js", "for (;;) { console.log('busy') }").await;
    assert!(!session.is_live());
}

#[tokio::test]
async fn placeholders_outlive_the_run() {
    let code = "sandlot.setPlaceholder('TrainX', [[1, 2], [3, 4]]);\nsandlot.setPlaceholder('message', {ok: true});\n\
                console.log(JSON.stringify(sandlot.getPlaceholder('message')), sandlot.getPlaceholder('missing'));";
    let ran = run(JS, &[("main.js", code)]).await;
    assert_eq!(ran.stdout, "{\"ok\":true} null\n", "{}", ran.stderr);
    let placeholders = ran.session.placeholders();
    drop(ran);
    assert_eq!(placeholders.get("TrainX"), Some(json!([[1, 2], [3, 4]])));
    let ran = run(JS, &[("main.js", "sandlot.setPlaceholder('f', () => 1)")]).await;
    assert!(ran.stderr.contains("TypeError") && ran.stderr.contains("JSON"), "{}", ran.stderr);
}

#[tokio::test]
async fn saved_models_predict_after_the_run() {
    let code = "sandlot.saveModel('double', { predict: (xs) => xs.map((x) => 2 * x) });\n\
                sandlot.saveModel('neg', (x) => -x);\nsandlot.saveModel('slow', async (x) => x + 1);";
    let mut ran = run(JS, &[("main.js", code)]).await;
    assert_eq!(ran.outcome.exit_code, 0, "{}", ran.stderr);
    assert_eq!(ran.predict("double", json!([1, 2.5])).await.unwrap(), Ok(json!([2, 5])));
    assert_eq!(ran.predict("neg", json!(4)).await.unwrap(), Ok(json!(-4)));
    assert_eq!(ran.predict("slow", json!(1)).await.unwrap(), Ok(json!(2)));
    let model_error = ran.predict("double", json!(7)).await.unwrap().unwrap_err();
    assert!(model_error.contains("TypeError"), "{model_error}");
    assert!(ran.predict("missing", json!(1)).await.is_err());
    assert_eq!(ran.predict("neg", json!(1)).await.unwrap(), Ok(json!(-1)));
}

#[tokio::test]
async fn eval_sees_the_runs_globals() {
    let mut ran =
        run(JS, &[("main.js", "const base = 41;\nlet total = base + 1;\nfunction twice(x) { return 2 * x; }")]).await;
    let (out, err, outcome) = ran.eval("console.log(total, twice(base))").await;
    assert_eq!((out.as_str(), outcome.exit_code), ("42 82\n", 0), "{err}");
    let (_, err, outcome) = ran.eval("undefinedName").await;
    assert_eq!(outcome.exit_code, 1);
    assert!(err.contains("ReferenceError"), "{err}");
    let (out, _, _) = ran.eval("total += 1; console.log(total)").await;
    assert_eq!(out, "43\n");
}

#[tokio::test]
async fn stats_and_context_reach_the_guest() {
    let options = SessionOptions { context: Some(common::raw(json!({"player": "ada"}))), ..SessionOptions::default() };
    let (mut session, mut events) = runtime().session(JS, options).await.unwrap();
    let code = "const s = sandlot.stats([1, 2, 3, 4, 10]);\nconsole.log(s.count, s.mean, s['50%'], s.max, sandlot.context.player);\n\
                try { sandlot.stats([]) } catch (e) { console.log('refused', e.message) }\n\
                try { sandlot.engine('move', {x: 1}) } catch (e) { console.log(e.name, e.message) }";
    let outcome = session.run(program(&[("main.js", code)])).await.unwrap();
    let (out, err) = common::drain(&mut events);
    assert_eq!(outcome.exit_code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "5 4 3 10 ada");
    assert!(lines[1].starts_with("refused") && lines[1].contains("at least one"), "{out}");
    assert!(lines[2].starts_with("EngineError") && lines[2].contains("no game engine"), "{out}");
}

#[tokio::test]
async fn a_hundred_sessions_at_once() {
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            tokio::spawn(async move {
                let code = format!("const {{ square }} = require('./helper.js');\nconsole.log(square({i}))");
                let ran = run(JS, &[("main.js", &code), ("helper.js", "exports.square = (x) => x * x;")]).await;
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
async fn sessions_do_not_share_random_state() {
    let code = "console.log(Math.random())";
    let a = run(JS, &[("main.js", code)]).await;
    let b = run(JS, &[("main.js", code)]).await;
    assert_eq!(a.outcome.exit_code, 0, "{}", a.stderr);
    assert_ne!(a.stdout, b.stdout);
}

#[tokio::test]
async fn a_kill_before_the_run_starts_still_reports_its_end() {
    let (mut session, mut events) = runtime().session(JS, SessionOptions::default()).await.unwrap();
    session.kill_handle().kill();
    let outcome = session.run(program(&[("main.js", "console.log('never')")])).await.unwrap();
    assert_eq!((outcome.reason, outcome.exit_code), (EndReason::Killed, 137));
    let mut finished = false;
    while let Some(event) = events.try_recv() {
        assert_ne!(event, sandlot::SessionEvent::Stdout("never\n".into()));
        finished |= matches!(event, sandlot::SessionEvent::Finished(_));
    }
    assert!(finished, "the end is reported as an event too");
    assert!(session.run(program(&[("main.js", "1")])).await.is_err(), "a killed session takes no more calls");
}
