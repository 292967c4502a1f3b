//! The ranna face (seed 002): ops PING/EXEC/KILL in, events
//! PONG/ERROR/SPAWN/LOG/STOP out over `GET /v1/ws`, and the REST calls
//! `POST /v1/exec`, `GET /v1/spec`, `GET /v1/info`.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::ws::WebSocketUpgrade;
use axum::http::HeaderMap;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::task::JoinSet;

use super::socket::{Connection, Incoming, Outbox, Unreadable};
use super::{App, Utf8Chunks};

use crate::error::Error;
use crate::language::Language;
use crate::program::Program;
use crate::registry::RunEvents;
use crate::session::{RunOutcome, SessionEvent};

const PONG: u8 = 0;
const ERROR: u8 = 1;
const SPAWN: u8 = 2;
const LOG: u8 = 3;
const STOP: u8 = 4;

/// ranna's `models.ExecutionRequest`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExecutionRequest {
    language: String,
    code: String,
    #[serde(default)]
    arguments: Vec<String>,
    #[serde(default)]
    environment: HashMap<String, String>,
    #[serde(default)]
    inline_expression: bool,
}

impl ExecutionRequest {
    fn into_program(self) -> Result<(Language, Program), Error> {
        let language: Language = self.language.parse()?;
        let code = if self.inline_expression { inline(language, &self.code) } else { self.code };
        let mut program = Program::single(format!("main.{}", language.extension()), code);
        program.args = self.arguments;
        let mut env: Vec<(String, String)> = self.environment.into_iter().collect();
        env.sort();
        program.env = env;
        Ok((language, program))
    }
}

/// ranna's inline template: the expression whose value is printed.
fn inline_template(language: Language) -> &'static str {
    match language {
        Language::Python | Language::PythonSci => "print($${CODE})",
        Language::JavaScript => "console.log($${CODE})",
    }
}

fn inline(language: Language, expression: &str) -> String {
    inline_template(language).replace("$${CODE}", &format!("({})", expression.trim()))
}

pub(crate) async fn websocket(State(app): State<App>, headers: HeaderMap, upgrade: WebSocketUpgrade) -> Response {
    let hard = app.config.hard_message_limit();
    upgrade.max_message_size(hard).max_frame_size(hard).on_upgrade(move |socket| {
        let socket = Connection::new(socket, app.clone(), &headers, unauthorized_event);
        connection(app, socket)
    })
}

/// The ERROR event for a socket whose first op has no accepted token.
fn unauthorized_event(why: &str) -> Value {
    json!({ "code": ERROR, "data": why })
}

async fn connection(app: App, mut connection: Connection) {
    let outbox = connection.outbox.clone();
    let mine: Arc<Mutex<HashSet<String>>> = Arc::default();
    let mut runs = JoinSet::new();
    while let Some(incoming) = connection.next().await {
        while runs.try_join_next().is_some() {}
        let text = match incoming {
            Incoming::Text(text) => text,
            Incoming::Refused(why) => {
                error(&outbox, None, &why.to_string()).await;
                continue;
            }
            Incoming::Binary(_) => {
                error(&outbox, None, &Unreadable::Binary.to_string()).await;
                continue;
            }
        };
        let op: Value = match serde_json::from_str(&text) {
            Ok(op) => op,
            Err(e) => {
                error(&outbox, None, &format!("the op is not valid JSON: {e}")).await;
                continue;
            }
        };
        let nonce = op.get("nonce").cloned().filter(|n| !n.is_null());
        match op.get("op").and_then(Value::as_u64) {
            Some(0) => {
                event(&outbox, PONG, nonce, json!("Pong!")).await;
            }
            Some(1) => {
                if runs.len() >= app.config.max_runs_per_connection {
                    let limit = app.config.max_runs_per_connection;
                    error(&outbox, nonce, &format!("this socket has {limit} runs going already; wait for one to stop"))
                        .await;
                    continue;
                }
                let args = op.get("args").cloned().unwrap_or(Value::Null);
                match start(&app, args).await {
                    Ok(started) => {
                        let runid = started.entry.id().to_string();
                        crate::sync::lock(&mine).insert(runid.clone());
                        event(&outbox, SPAWN, nonce.clone(), json!({ "runid": runid })).await;
                        let (outbox, mine) = (outbox.clone(), mine.clone());
                        runs.spawn(async move {
                            forward(&outbox, nonce, &runid, started.events).await;
                            crate::sync::lock(&mine).remove(&runid);
                        });
                    }
                    Err(e) => error(&outbox, nonce, &e.to_string()).await,
                }
            }
            Some(2) => {
                let runid = op.pointer("/args/runid").and_then(run_id);
                let Some(runid) = runid else {
                    error(&outbox, nonce, "KILL needs args.runid, the run id SPAWN gave").await;
                    continue;
                };
                let known = crate::sync::lock(&mine).contains(&runid);
                match app.registry.get(&runid).filter(|_| known) {
                    Some(entry) => entry.kill(),
                    None => error(&outbox, nonce, &format!("no running run {runid} on this socket")).await,
                }
            }
            Some(other) => error(&outbox, nonce, &format!("unknown op {other}; ops are 0 PING, 1 EXEC, 2 KILL")).await,
            None => error(&outbox, nonce, "every message needs a numeric \"op\": 0 PING, 1 EXEC, 2 KILL").await,
        }
    }
    // The client left or the server is stopping: stop this socket's runs and
    // let their STOP events out before closing.
    for runid in crate::sync::lock(&mine).iter() {
        if let Some(entry) = app.registry.get(runid) {
            entry.kill();
        }
    }
    while runs.join_next().await.is_some() {}
    connection.close().await;
}

fn run_id(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

async fn start(app: &App, args: Value) -> Result<crate::Started, Error> {
    let request: ExecutionRequest =
        serde_json::from_value(args).map_err(|e| Error::InvalidProgram(format!("EXEC args: {e}")))?;
    let (language, program) = request.into_program()?;
    let options = app.session_options();
    app.registry.start(language, program, options, false).await
}

/// Sends a run's output as LOG events and its end as STOP.
async fn forward(outbox: &Outbox, nonce: Option<Value>, runid: &str, mut events: RunEvents) {
    let (mut stdout, mut stderr) = (Utf8Chunks::default(), Utf8Chunks::default());
    while let Some(ev) = events.recv().await {
        let (key, text) = match ev {
            SessionEvent::Stdout(bytes) => ("stdout", stdout.push(&bytes)),
            SessionEvent::Stderr(bytes) => ("stderr", stderr.push(&bytes)),
            SessionEvent::Finished(outcome) => {
                for (key, rest) in [("stdout", stdout.finish()), ("stderr", stderr.finish())] {
                    if !rest.is_empty() {
                        event(outbox, LOG, nonce.clone(), json!({ "runid": runid, key: rest })).await;
                    }
                }
                event(outbox, STOP, nonce.clone(), stop_data(runid, &outcome)).await;
                return;
            }
            SessionEvent::Spawned => continue,
        };
        if !text.is_empty() {
            event(outbox, LOG, nonce.clone(), json!({ "runid": runid, key: text })).await;
        }
    }
}

fn stop_data(runid: &str, outcome: &RunOutcome) -> Value {
    let mut data = json!({
        "runid": runid,
        "exectimems": outcome.wall_time.as_millis() as u64,
        "exitcode": outcome.exit_code,
        "reason": outcome.reason.as_str(),
    });
    if let Some(message) = &outcome.message {
        data["message"] = json!(message);
    }
    data
}

async fn event(outbox: &Outbox, code: u8, nonce: Option<Value>, data: Value) {
    let mut message = json!({ "code": code, "data": data });
    if let Some(nonce) = nonce {
        message["nonce"] = nonce;
    }
    outbox.json(message).await;
}

async fn error(outbox: &Outbox, nonce: Option<Value>, message: &str) {
    event(outbox, ERROR, nonce, json!(message)).await;
}

// ---- REST ----

fn rest_error(status: StatusCode, error: &str, context: &str) -> Response {
    (status, Json(json!({ "code": status.as_u16(), "error": error, "context": context }))).into_response()
}

fn status_of(error: &Error) -> StatusCode {
    match error {
        Error::Busy { .. } => StatusCode::SERVICE_UNAVAILABLE,
        Error::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
        Error::GuestLoad { .. } | Error::Instantiate { .. } | Error::Engine(_) | Error::Storage(_) => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
        _ => StatusCode::BAD_REQUEST,
    }
}

/// `POST /v1/exec`: runs to the end and answers with the whole output.
pub(crate) async fn exec(State(app): State<App>, body: Bytes) -> Response {
    let args: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return rest_error(StatusCode::BAD_REQUEST, &format!("the body is not valid JSON: {e}"), "exec"),
    };
    let started = match start(&app, args).await {
        Ok(started) => started,
        Err(e) => return rest_error(status_of(&e), &e.to_string(), "exec"),
    };
    let mut events = started.events;
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    while let Some(ev) = events.recv().await {
        match ev {
            SessionEvent::Stdout(b) => stdout.extend_from_slice(&b),
            SessionEvent::Stderr(b) => stderr.extend_from_slice(&b),
            SessionEvent::Finished(outcome) => {
                let mut body = stop_data(started.entry.id(), &outcome);
                body["stdout"] = json!(String::from_utf8_lossy(&stdout));
                body["stderr"] = json!(String::from_utf8_lossy(&stderr));
                return Json(body).into_response();
            }
            SessionEvent::Spawned => {}
        }
    }
    rest_error(StatusCode::INTERNAL_SERVER_ERROR, "the run ended without reporting", "exec")
}

/// `GET /v1/spec`: languages in ranna's spec shape; aliases `use` their target.
pub(crate) async fn spec() -> Json<Value> {
    let mut specs = serde_json::Map::new();
    for language in Language::ALL {
        let example = match language {
            Language::Python | Language::PythonSci => "print('hello, world')",
            Language::JavaScript => "console.log('hello, world')",
        };
        specs.insert(
            language.name().into(),
            json!({
                "language": language.name(),
                "filename": format!("main.{}", language.extension()),
                "example": example,
                "inline": inline_template(language),
                "cmd": "",
                "entrypoint": "",
                "image": "",
            }),
        );
        for alias in language.aliases() {
            specs.insert((*alias).into(), json!({ "use": language.name() }));
        }
    }
    Json(Value::Object(specs))
}

/// `GET /v1/info`: version and sandbox.
pub(crate) async fn info() -> Json<Value> {
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "builddate": env!("SANDLOT_BUILD_DATE"),
        "sandbox": { "type": "wasmtime", "version": crate::WASMTIME_VERSION },
    }))
}
