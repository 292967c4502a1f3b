//! Warm instances (`Runtime::warm_instances`): sessions start in instances
//! made before they were asked for, each instance serves one session and
//! never another, a session with other limits gets instances made for them,
//! and with none kept every session starts cold. Each test has a runtime of
//! its own, so its counts are its own.

mod common;

use std::time::Duration;

use common::{drain, program};
use sandlot::{EndReason, Language, Limits, Runtime, RuntimeConfig, SessionOptions};

fn runtime(warm: usize) -> Runtime {
    Runtime::new(RuntimeConfig { warm_instances: Some(warm), ..RuntimeConfig::default() }).expect("runtime starts")
}

/// Waits until all the instances of `language` the runtime keeps are ready.
async fn stocked(runtime: &Runtime, language: Language) {
    let count = runtime.warm_instances();
    assert!(
        runtime.wait_warm(language, Duration::from_secs(60)).await,
        "{language}: {count} warm instances were not made in a minute"
    );
}

/// Prints `fresh` unless an earlier program left `mark` behind in the
/// interpreter, then leaves it.
fn mark(language: Language) -> (&'static str, &'static str) {
    match language {
        Language::Python | Language::PythonSci => {
            // In the interpreter itself: a run's own globals are fresh each run.
            ("main.py", "import builtins\nprint('seen' if hasattr(builtins, 'mark') else 'fresh')\nbuiltins.mark = 1")
        }
        Language::JavaScript => {
            ("main.js", "console.log(globalThis.mark === undefined ? 'fresh' : 'seen');\nglobalThis.mark = 1;")
        }
        Language::Lua => ("main.lua", "print(mark == nil and 'fresh' or 'seen')\nmark = 1"),
    }
}

#[tokio::test]
async fn sessions_start_in_warm_instances_each_used_once() {
    let runtime = runtime(2);
    for language in [Language::Python, Language::JavaScript, Language::Lua] {
        runtime.keep_warm(language, None, &Limits::default());
        stocked(&runtime, language).await;
        let served = runtime.warm_served();
        for round in 0..6 {
            let (mut session, mut events) =
                runtime.session(language, SessionOptions::default()).await.expect("session starts");
            let outcome = session.run(program(&[mark(language)])).await.expect("run is accepted");
            let (stdout, stderr) = drain(&mut events);
            assert_eq!((stdout.as_str(), outcome.exit_code), ("fresh\n", 0), "{language} round {round}: {stderr}");
            // Its instance is its own for its whole life: the mark stays there.
            let outcome = session.run(program(&[mark(language)])).await.expect("run is accepted");
            let (stdout, _) = drain(&mut events);
            assert_eq!((stdout.as_str(), outcome.exit_code), ("seen\n", 0), "{language}: same instance, same globals");
        }
        assert!(
            runtime.warm_served() >= served + 2,
            "{language}: the sessions found the two warm instances ready ({} served)",
            runtime.warm_served() - served
        );
    }
}

#[tokio::test]
async fn a_session_with_other_limits_gets_an_instance_made_for_them() {
    let runtime = runtime(2);
    let language = Language::JavaScript;
    runtime.keep_warm(language, None, &Limits::default());
    stocked(&runtime, language).await;
    let served = runtime.warm_served();
    let small = Limits::default().with_memory_bytes(24 << 20).with_wall_clock(Duration::from_secs(5));
    let options = || SessionOptions { limits: Some(small.clone()), ..SessionOptions::default() };
    let (mut session, mut events) = runtime.session(language, options()).await.expect("session starts");
    assert_eq!(runtime.warm_served(), served, "the warm instances were made for other limits: not used");
    let bomb = "const keep = [];\nwhile (true) keep.push(new Array(1 << 20).fill(1.5));";
    let outcome = session.run(program(&[("main.js", bomb)])).await.expect("run is accepted");
    drain(&mut events);
    assert_eq!(outcome.reason, EndReason::Memory, "{outcome:?}");
    assert!(outcome.peak_memory <= 24 << 20, "the session's own limit held: {outcome:?}");

    // The shelf now stocks instances for the smaller limits, which hold them too.
    stocked(&runtime, language).await;
    let (mut session, mut events) = runtime.session(language, options()).await.expect("session starts");
    assert_eq!(runtime.warm_served(), served + 1, "an instance made for these limits");
    let outcome = session.run(program(&[("main.js", bomb)])).await.expect("run is accepted");
    drain(&mut events);
    assert_eq!(outcome.reason, EndReason::Memory, "{outcome:?}");
    assert!(outcome.peak_memory <= 24 << 20, "a warm instance keeps the session's limit: {outcome:?}");
}

#[tokio::test]
async fn with_no_warm_instances_every_session_starts_cold() {
    let runtime = runtime(3);
    runtime.keep_warm(Language::Lua, None, &Limits::default());
    stocked(&runtime, Language::Lua).await;
    runtime.set_warm_instances(0);
    assert_eq!(runtime.warm_ready(Language::Lua), 0, "the ready ones are dropped");
    for _ in 0..3 {
        let (mut session, mut events) =
            runtime.session(Language::Lua, SessionOptions::default()).await.expect("session starts");
        let outcome = session.run(program(&[mark(Language::Lua)])).await.expect("run is accepted");
        assert_eq!((drain(&mut events).0.as_str(), outcome.exit_code), ("fresh\n", 0));
    }
    assert_eq!((runtime.warm_served(), runtime.warm_ready(Language::Lua)), (0, 0));
}

/// Runtimes in one process have scratch roots of their own: one dropped
/// removes its own sessions' `/tmp` folders, never another runtime's.
#[tokio::test]
async fn dropping_a_runtime_leaves_another_runtimes_scratch_folders_alone() {
    let (first, second) = (runtime(0), runtime(0));
    let (mut kept, mut events) =
        second.session(Language::Python, SessionOptions::default()).await.expect("session starts");
    let (gone, _) = first.session(Language::Python, SessionOptions::default()).await.expect("session starts");
    drop(gone);
    drop(first);
    let write = "open('/tmp/note', 'w').write('kept')\nprint(open('/tmp/note').read())";
    let outcome = kept.run(program(&[("main.py", write)])).await.expect("run is accepted");
    let (stdout, stderr) = drain(&mut events);
    assert_eq!(
        (stdout.as_str(), outcome.exit_code),
        ("kept\n", 0),
        "the other runtime's /tmp is still there: {stderr}"
    );
}

/// A warm instance that could not be made is tried again without waiting
/// for a session to take one: here the scratch base is a file at first.
#[tokio::test]
async fn a_refill_that_failed_tries_again_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("scratch");
    std::fs::write(&base, "not a folder").unwrap();
    let runtime = Runtime::new(RuntimeConfig {
        warm_instances: Some(1),
        scratch_dir: Some(base.clone()),
        ..RuntimeConfig::default()
    })
    .expect("runtime starts");
    runtime.keep_warm(Language::Lua, None, &Limits::default());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(runtime.warm_ready(Language::Lua), 0, "no scratch folder, no instance");
    std::fs::remove_file(&base).unwrap();
    assert!(
        runtime.wait_warm(Language::Lua, Duration::from_secs(30)).await,
        "the refill tried again once the scratch folder could be made"
    );
}
