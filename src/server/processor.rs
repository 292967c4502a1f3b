//! The processor face (seed 004) on `GET /processor`: ready → context →
//! ready → raw code (a plain text frame) → the script runs, its engine
//! commands going to the client and blocking the script until the client's
//! `command_result` → end. After the end the server is ready for a new context.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Extension, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Value, json};
use tokio::sync::oneshot;

use super::socket::{Connection, Incoming, Outbox, Unreadable};
use super::{App, Peer, Utf8Chunks, now_ms, parse_typed_off_thread, public_message};

use crate::host::{EngineAnswer, EngineBridge};
use crate::language::Language;
use crate::metrics::Face;
use crate::program::Program;
use crate::registry::{Client, Entry, Keep, RunEvents};
use crate::run::{EndReason, RunOutcome, SessionEvent};
use crate::runtime::SessionOptions;
use crate::sync::lock;

/// Most stderr kept to explain an interpreter error.
const ERROR_TAIL_BYTES: usize = 8 * 1024;

/// The processor lifecycle: a script runs, its engine commands go to the client and its answers back.
#[utoipa::path(
    get,
    path = "/processor",
    tag = "processor",
    operation_id = "processor_websocket",
    responses(
        (status = 101, description = "the WebSocket is open; a token, when the server has tokens, goes in the first \
                                      message or an Authorization: Bearer header on the upgrade"),
        (status = 400, description = "not a WebSocket upgrade"),
    )
)]
pub(crate) async fn websocket(
    State(app): State<App>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    super::socket::accept(app, peer, headers, upgrade, (Face::Processor, unauthorized_message), connection)
}

/// The error for a socket whose first message has no accepted token.
fn unauthorized_message(why: &str) -> Value {
    json!({ "type": "error", "code": "UNAUTHORIZED", "message": why, "time": now_ms().to_string() })
}

pub(crate) type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<EngineAnswer>>>>;

/// A command as sent to the client, its arguments as the script gave them.
#[derive(Serialize)]
struct CommandMessage<'a> {
    r#type: &'static str,
    id: u64,
    command: &'a str,
    args: &'a RawValue,
    time: String,
}

/// Sends a script's engine commands to this socket's client and waits for the answer.
struct ClientEngine {
    outbox: Outbox,
    pending: Pending,
    next_id: AtomicU64,
    /// With `--low-latency`, the script's thread polls for a quick engine's
    /// answer before it waits, as sockets poll for their next message.
    poller: crate::latency::Poller,
}

impl EngineBridge for ClientEngine {
    fn command(&self, command: String, args: Box<RawValue>) -> Pin<Box<dyn Future<Output = EngineAnswer> + Send + '_>> {
        Box::pin(async move {
            let id = self.next_id.fetch_add(1, Ordering::SeqCst);
            let (answer_tx, answer) = oneshot::channel();
            lock(&self.pending).insert(id, answer_tx);
            let message =
                CommandMessage { r#type: "command", id, command: &command, args: &args, time: now_ms().to_string() };
            let sent = match serde_json::to_string(&message) {
                Ok(text) => self.outbox.text(text).await,
                Err(_) => false,
            };
            if !sent {
                lock(&self.pending).remove(&id);
                return Err("the client has disconnected".into());
            }
            self.poller.wait(answer).await.unwrap_or_else(|_| Err("the client has disconnected".into()))
        })
    }
}

enum Stage {
    AwaitContext,
    AwaitCode { language: Language, context: Option<Box<RawValue>> },
    Running { entry: Arc<Entry>, forwarder: tokio::task::JoinHandle<()> },
}

async fn connection(app: App, mut connection: Connection) {
    let outbox = connection.outbox.clone();
    let pending: Pending = Arc::default();
    let engine = Arc::new(ClientEngine {
        outbox: outbox.clone(),
        pending: pending.clone(),
        next_id: AtomicU64::new(1),
        poller: Default::default(),
    });
    let mut stage = Stage::AwaitContext;
    ready(&outbox, "send the context: {\"type\":\"context\",\"language\":...,\"context\":{...}}").await;
    loop {
        connection.set_busy(matches!(stage, Stage::Running { .. }));
        let incoming = match &mut stage {
            Stage::Running { forwarder, .. } => {
                tokio::select! {
                    incoming = connection.next() => incoming,
                    _ = forwarder => {
                        stage = Stage::AwaitContext;
                        ready(&outbox, "the run has ended; send a new context to run again").await;
                        continue;
                    }
                }
            }
            _ => connection.next().await,
        };
        let Some(incoming) = incoming else { break };
        let text = match incoming {
            Incoming::Text(text) => text,
            Incoming::Refused(why) => {
                server_error(&outbox, &why.to_string()).await;
                continue;
            }
            Incoming::Binary(_) => {
                server_error(&outbox, &Unreadable::Binary.to_string()).await;
                continue;
            }
        };
        stage = match stage {
            Stage::AwaitCode { language, context } => {
                match start(&app, connection.client(), language, context, text, engine.clone()).await {
                    Ok((entry, events)) => {
                        let outbox = outbox.clone();
                        let forwarder = tokio::spawn(async move { forward(&outbox, events).await });
                        Stage::Running { entry, forwarder }
                    }
                    Err(message) => {
                        server_error(&outbox, &message).await;
                        ready(&outbox, "send a new context").await;
                        Stage::AwaitContext
                    }
                }
            }
            Stage::AwaitContext => match context(parse_typed_off_thread(text).await) {
                Ok((language, context)) => {
                    ready(&outbox, "send the code as one plain text frame").await;
                    Stage::AwaitCode { language, context }
                }
                Err(message) => {
                    server_error(&outbox, &message).await;
                    Stage::AwaitContext
                }
            },
            running @ Stage::Running { .. } => {
                if let Err(message) = command_result(parse_typed_off_thread(text).await, &pending) {
                    server_error(&outbox, &message).await;
                }
                running
            }
        };
    }
    // A disconnect (or the server stopping) ends the run; the client's
    // unanswered commands fail inside the script.
    lock(&pending).clear();
    if let Stage::Running { entry, forwarder } = stage {
        entry.kill();
        let _ = forwarder.await;
    }
    connection.close().await;
}

async fn ready(outbox: &Outbox, message: &str) {
    outbox.json(json!({ "type": "ready", "message": message, "time": now_ms().to_string() })).await;
}

async fn server_error(outbox: &Outbox, message: &str) {
    outbox
        .json(json!({ "type": "error", "code": "SERVER_ERROR", "message": message, "time": now_ms().to_string() }))
        .await;
}

/// A message of the processor protocol, as the client sends it; only the
/// fields its `type` uses are read, and values stay JSON text.
#[derive(Deserialize)]
pub(crate) struct ClientMessage {
    r#type: Option<String>,
    language: Option<String>,
    context: Option<Box<RawValue>>,
    id: Option<u64>,
    ok: Option<bool>,
    result: Option<Box<RawValue>>,
    error: Option<Box<RawValue>>,
}

pub(crate) fn context(message: Result<ClientMessage, String>) -> Result<(Language, Option<Box<RawValue>>), String> {
    let message = message.map_err(|e| format!("expected the context message; this message {e}"))?;
    if message.r#type.as_deref() != Some("context") {
        return Err("expected {\"type\":\"context\",\"language\":...,\"context\":{...}} first".into());
    }
    let language = message
        .language
        .ok_or("the context message needs a \"language\": python, javascript, lua or python-sci")?
        .parse::<Language>()
        .map_err(|e| e.to_string())?;
    Ok((language, message.context.filter(|c| c.get() != "null")))
}

async fn start(
    app: &App,
    client: &Client,
    language: Language,
    context: Option<Box<RawValue>>,
    code: String,
    engine: Arc<ClientEngine>,
) -> Result<(Arc<Entry>, RunEvents), String> {
    let program = Program::single(language.main_file(), code);
    let options = SessionOptions { context, engine: Some(engine), ..app.session_options() };
    let started = app
        .registry
        .start(client, Face::Processor, language, program, options, Keep::Nothing)
        .await
        .map_err(|e| public_message(&e))?;
    Ok((started.entry, started.events))
}

pub(crate) fn command_result(message: Result<ClientMessage, String>, pending: &Pending) -> Result<(), String> {
    let message = message.map_err(|e| format!("expected a command_result; this message {e}"))?;
    if message.r#type.as_deref() != Some("command_result") {
        return Err("a script is running: only {\"type\":\"command_result\",...} messages are expected now".into());
    }
    let id = message.id.ok_or("command_result needs the numeric \"id\" of its command")?;
    let answer = match message.ok {
        Some(true) => Ok(message.result.unwrap_or_else(|| RawValue::from_string("null".into()).expect("null is JSON"))),
        Some(false) => Err(message
            .error
            .and_then(|e| serde_json::from_str::<String>(e.get()).ok())
            .unwrap_or_else(|| "the engine refused the command".to_string())),
        None => return Err("command_result needs \"ok\": true or false".into()),
    };
    let waiting = lock(pending).remove(&id).ok_or_else(|| format!("no command {id} is waiting for an answer"))?;
    let _ = waiting.send(answer);
    Ok(())
}

async fn forward(outbox: &Outbox, mut events: RunEvents) {
    let (mut stdout, mut stderr) = (Utf8Chunks::default(), Utf8Chunks::default());
    let mut error_tail = String::new();
    while let Some(event) = events.recv().await {
        let (kind, message) = match event {
            SessionEvent::Stdout(bytes) => ("stdout", stdout.push(&bytes)),
            SessionEvent::Stderr(bytes) => {
                let text = stderr.push(&bytes);
                error_tail.push_str(&text);
                if error_tail.len() > ERROR_TAIL_BYTES {
                    let mut cut = error_tail.len() - ERROR_TAIL_BYTES;
                    while !error_tail.is_char_boundary(cut) {
                        cut += 1;
                    }
                    error_tail.drain(..cut);
                }
                ("stderr", text)
            }
            SessionEvent::Finished(outcome) => {
                end(outbox, &outcome, error_tail.trim_end()).await;
                return;
            }
            SessionEvent::Spawned => continue,
        };
        if !message.is_empty() {
            outbox.json(json!({ "type": kind, "message": message, "time": now_ms().to_string() })).await;
        }
    }
}

async fn end(outbox: &Outbox, outcome: &RunOutcome, stderr_tail: &str) {
    let time = now_ms().to_string();
    let error = match outcome.reason {
        EndReason::Error if !stderr_tail.is_empty() => Some(("INTERPRETER_ERROR", stderr_tail.to_string())),
        EndReason::Exit => None,
        _ => outcome.message.clone().map(|m| ("SERVER_ERROR", m)),
    };
    if let Some((code, message)) = error {
        outbox.json(json!({ "type": "error", "code": code, "message": message, "time": time })).await;
    }
    outbox
        .json(json!({
            "type": "end",
            "exitCode": outcome.exit_code,
            "exectimems": outcome.wall_time.as_millis() as u64,
            "reason": outcome.reason.as_str(),
            "time": time,
        }))
        .await;
}
