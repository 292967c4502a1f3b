//! Shared by the integration tests: one `Runtime` per test binary, and a
//! helper that runs a program in a real guest and collects what it printed.

#![allow(dead_code)]

use std::sync::OnceLock;
use std::time::Duration;

use sandlot::{
    EndReason, Language, Limits, Program, RunOutcome, Runtime, RuntimeConfig, Session, SessionEvent, SessionEvents,
    SessionOptions, SourceFile,
};

pub mod nats;
pub mod server;

pub fn runtime() -> Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| Runtime::new(RuntimeConfig::default()).expect("runtime starts")).clone()
}

/// What a call printed and how it ended, plus the session for later calls.
pub struct Ran {
    pub stdout: String,
    pub stderr: String,
    pub outcome: RunOutcome,
    pub session: Session,
    pub events: SessionEvents,
}

/// A JSON value as the text sessions take.
pub fn raw(value: serde_json::Value) -> Box<serde_json::value::RawValue> {
    serde_json::value::RawValue::from_string(value.to_string()).expect("JSON")
}

impl Ran {
    /// Asks a model the run saved for a prediction, in values rather than JSON text.
    pub async fn predict(
        &mut self,
        name: &str,
        input: serde_json::Value,
    ) -> Result<Result<serde_json::Value, String>, sandlot::Error> {
        let answer = self.session.predict(name, &raw(input)).await?;
        Ok(answer.map(|json| serde_json::from_str(json.get()).expect("the answer is JSON")))
    }

    /// Evaluates more code in the same session and returns its output.
    pub async fn eval(&mut self, code: &str) -> (String, String, RunOutcome) {
        let outcome = self.session.eval(code).await.expect("eval is accepted");
        let (stdout, stderr) = drain(&mut self.events);
        (stdout, stderr, outcome)
    }
}

pub fn program(files: &[(&str, &str)]) -> Program {
    Program {
        files: files.iter().map(|(n, c)| SourceFile { name: n.to_string(), content: c.to_string() }).collect(),
        main_file: files[0].0.to_string(),
        ..Program::default()
    }
}

pub async fn run_with(language: Language, program: Program, limits: Limits) -> Ran {
    let (mut session, mut events) = runtime()
        .session(language, SessionOptions { limits: Some(limits), ..SessionOptions::default() })
        .await
        .expect("session starts");
    let outcome = session.run(program).await.expect("program is accepted");
    let (stdout, stderr) = drain(&mut events);
    Ran { stdout, stderr, outcome, session, events }
}

pub async fn run(language: Language, files: &[(&str, &str)]) -> Ran {
    run_with(language, program(files), Limits::default()).await
}

/// Collects the output events already sent; a call's output is all sent before it returns.
pub fn drain(events: &mut SessionEvents) -> (String, String) {
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    while let Some(event) = events.try_recv() {
        match event {
            SessionEvent::Stdout(b) => stdout.extend_from_slice(&b),
            SessionEvent::Stderr(b) => stderr.extend_from_slice(&b),
            SessionEvent::Spawned | SessionEvent::Finished(_) => {}
        }
    }
    (String::from_utf8_lossy(&stdout).into_owned(), String::from_utf8_lossy(&stderr).into_owned())
}

/// Runs `code` (which loops, printing), kills it, and checks the kill's
/// report: made by `kill()` itself, the call's one Finished event and its
/// last, and the same outcome the call returns. Returns the ended session.
pub async fn kill_while_printing(language: Language, main: &str, code: &str) -> Session {
    let (mut session, mut events) = runtime().session(language, SessionOptions::default()).await.unwrap();
    let kill = session.kill_handle();
    let program = program(&[(main, code)]);
    // On a thread of its own: on the test's one thread, the test would see
    // the first output only after the guest's next 61 yields (tokio's
    // event interval; 300 ms), long enough to print past the output limit.
    let task = tokio::task::spawn_blocking(move || {
        let thread = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        thread.block_on(async move {
            let outcome = session.run(program).await.unwrap();
            (outcome, session)
        })
    });
    // Kill once the loop is printing.
    loop {
        match events.recv().await.expect("the session reports until it ends") {
            SessionEvent::Stdout(_) => break,
            SessionEvent::Spawned | SessionEvent::Stderr(_) => {}
            SessionEvent::Finished(outcome) => panic!("ended before the kill: {outcome:?}"),
        }
    }
    let reported = kill.kill().expect("a kill of a running call reports its end");
    assert_eq!((reported.reason, reported.exit_code), (EndReason::Killed, 137));
    assert!(kill.kill().is_none(), "a second kill reports nothing");
    let (outcome, session) =
        tokio::time::timeout(Duration::from_secs(1), task).await.expect("the guest stops").unwrap();
    assert_eq!(outcome, reported, "the call returns what the kill reported");
    let mut after = Vec::new();
    while let Some(event) = events.try_recv() {
        after.push(event);
    }
    let finished: Vec<_> = after.iter().filter(|e| matches!(e, SessionEvent::Finished(_))).collect();
    assert_eq!(finished, [&SessionEvent::Finished(reported)], "one end, reported once");
    assert!(matches!(after.last(), Some(SessionEvent::Finished(_))), "nothing after the end: {:?}", after.last());
    session
}

pub fn short_limits() -> Limits {
    Limits::default().with_wall_clock(Duration::from_secs(1))
}
