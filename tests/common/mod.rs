//! Shared by the integration tests: one `Runtime` per test binary, and a
//! helper that runs a program in a real guest and collects what it printed.

#![allow(dead_code)]

use std::sync::OnceLock;
use std::time::Duration;

use sandlot::{
    Language, Limits, Program, RunOutcome, Runtime, RuntimeConfig, Session, SessionEvent, SessionEvents,
    SessionOptions, SourceFile,
};

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

impl Ran {
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
    while let Ok(event) = events.try_recv() {
        match event {
            SessionEvent::Stdout(b) => stdout.extend_from_slice(&b),
            SessionEvent::Stderr(b) => stderr.extend_from_slice(&b),
            SessionEvent::Spawned | SessionEvent::Finished(_) => {}
        }
    }
    (String::from_utf8_lossy(&stdout).into_owned(), String::from_utf8_lossy(&stderr).into_owned())
}

pub fn short_limits() -> Limits {
    Limits::default().with_wall_clock(Duration::from_secs(1))
}
