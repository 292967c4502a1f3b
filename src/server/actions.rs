//! The runtime actions face (seeds 000/001) on `GET /`: run, get_placeholder,
//! run_model, get_stats, status and stop; list_files and get_file read what a
//! live session wrote under `/tmp`. Requests are JSON or JavaScript
//! object literals; every reply names its action, and errors carry
//! `"error"` (what went wrong and what to do) and a short `"code"`.
//! A session answers only the client that started it (its token, else its
//! address); to any other its id is `unknown_session`, as one that never
//! existed. In cluster mode a forwarded request carries its client.
//!
//! Pushed on the socket that started a run: `{"action":"output","sessionId",
//! "stream":"stdout"|"stderr","data"}` while it runs, then `{"action":"finished",
//! "sessionId","status","exitCode","exectimems","reason"}`.

use std::sync::Arc;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Extension, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Value, json};
use tokio::task::JoinSet;

use super::socket::{Connection, Incoming, Outbox, Unreadable};
use super::{App, Fields, IdText, Peer, Utf8Chunks, field, parse_fields_off_thread, public_message};

use crate::error::Error;
use crate::host::table_stats;
use crate::input::Stdin;
use crate::language::Language;
use crate::metrics::Face;
use crate::program::{Program, SourceFile};
use crate::registry::{Client, Keep, RunEvents, RunStatus};
use crate::run::{EndReason, RunOutcome, SessionEvent};
use crate::runtime::SessionOptions;
use crate::scratch::ScratchReadError;

/// The runtime server's actions: run, get_placeholder, run_model, get_stats, status, stop, list_files, get_file; a first message with \"target\" \"file_upload\" or \"cluster\" makes it an upload or a direct-IO socket.
#[utoipa::path(
    get,
    path = "/",
    tag = "actions",
    operation_id = "actions_websocket",
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
    super::socket::accept(app, peer, headers, upgrade, (Face::Actions, unauthorized_reply), connection)
}

/// The reply to a socket whose first message has no accepted token.
fn unauthorized_reply(why: &str) -> Value {
    json!({ "action": null, "error": why, "code": "unauthorized" })
}

/// A refusal: the reply's `code` and `error`.
pub(crate) struct Refusal {
    code: &'static str,
    message: String,
}

fn refuse(code: &'static str, message: impl Into<String>) -> Refusal {
    Refusal { code, message: message.into() }
}

impl From<Error> for Refusal {
    fn from(e: Error) -> Self {
        let code = match &e {
            Error::Busy { .. } => "busy",
            Error::ClientBusy { .. } => "client_busy",
            Error::RateLimited { .. } => "rate_limited",
            Error::ShuttingDown => "shutting_down",
            Error::Preparing { .. } => "preparing",
            Error::UnknownLanguage(_) => "unknown_language",
            Error::InvalidProgram(_) | Error::InvalidInput(_) => "bad_request",
            Error::Scratch(ScratchReadError::NoFile(_)) => "not_found",
            Error::Scratch(ScratchReadError::TooLarge { .. }) | Error::RequestTooLarge(_) => "too_large",
            Error::Scratch(ScratchReadError::Unreadable(_)) => "server_error",
            Error::Scratch(_) => "bad_request",
            Error::CellRunning(_) => "still_running",
            Error::TooManySessions { .. } => "too_many_sessions",
            Error::UnknownModel { .. } => "unknown_model",
            Error::UnknownSession(_) => "unknown_session",
            Error::SessionEnded(_) => "session_ended",
            Error::StillRunning(_) => "still_running",
            Error::PredictionTooLarge { .. } => "too_large",
            Error::Cluster(_) => "cluster_unavailable",
            Error::GuestLoad { .. } | Error::Instantiate { .. } | Error::Engine(_) | Error::Storage(_) => {
                "server_error"
            }
        };
        Refusal { code, message: public_message(&e) }
    }
}

async fn connection(app: App, mut connection: Connection) {
    let outbox = connection.outbox.clone();
    let mut runs = JoinSet::new();
    let mut first = true;
    loop {
        while runs.try_join_next().is_some() {}
        connection.set_busy(!runs.is_empty());
        // A run's end makes the socket idle again (its time-out, and room
        // for the listener to evict it), even if its client says nothing.
        let incoming = tokio::select! {
            incoming = connection.next() => incoming,
            Some(_) = runs.join_next(), if !runs.is_empty() => continue,
        };
        let Some(incoming) = incoming else { break };
        let is_first = std::mem::replace(&mut first, false);
        let text = match incoming {
            Incoming::Text(text) => text,
            Incoming::Refused(why) => {
                let code = if matches!(why, Unreadable::TooLarge { .. }) { "too_large" } else { "bad_request" };
                reply_error(&outbox, None, refuse(code, why.to_string())).await;
                continue;
            }
            Incoming::Binary(_) => {
                reply_error(&outbox, None, refuse("bad_request", Unreadable::Binary.to_string())).await;
                continue;
            }
        };
        let request = match parse_fields_off_thread(text).await {
            Ok(request) => request,
            Err(e) if e.contains("object") => {
                reply_error(&outbox, None, refuse("bad_request", "a request is a JSON object with an \"action\""))
                    .await;
                continue;
            }
            Err(e) => {
                reply_error(&outbox, None, refuse("bad_request", e)).await;
                continue;
            }
        };
        if let Some(target) = request.get("target") {
            match (is_first, target.get()) {
                (true, "\"file_upload\"") => return super::datasets::upload(app, connection, request).await,
                (true, "\"cluster\"") => return super::direct_io::connection(app, connection, request).await,
                _ => {}
            }
            let why = if is_first {
                "unknown target; targets are \"file_upload\" and \"cluster\"".to_string()
            } else {
                "an upload or direct IO starts on a socket of its own: send {\"target\":...} first".into()
            };
            reply_error(&outbox, None, refuse("bad_request", why)).await;
            continue;
        }
        let action = field::<String>(&request, "action", "action").ok().flatten();
        let client = connection.client().clone();
        let result = match action.as_deref() {
            Some("run") if runs.len() >= app.config.max_runs_per_connection => Err(refuse(
                "busy",
                format!(
                    "this socket has {} runs going already; wait for one to end",
                    app.config.max_runs_per_connection
                ),
            )),
            Some("run") => match run(&app, &client, &request).await {
                Ok((id, events)) => {
                    let (outbox, reply_id) = (outbox.clone(), id.clone());
                    runs.spawn(async move { push_output(&outbox, &id, events).await });
                    Ok(Reply::Json(json!({ "sessionId": reply_id })))
                }
                Err(e) => Err(e),
            },
            Some(name) if SESSION_ACTIONS.contains(&name) => {
                outbox.text(session_action(&app, &client, name, &request).await).await;
                continue;
            }
            Some(other) => Err(refuse(
                "unknown_action",
                format!(
                    "unknown action {:?}; actions are run, get_placeholder, run_model, get_stats, status, stop, \
                     list_files, get_file",
                    other.chars().take(64).collect::<String>()
                ),
            )),
            None => Err(refuse("bad_request", "every request needs an \"action\" string")),
        };
        outbox.text(reply_text(action.as_deref(), result)).await;
    }
    if *app.closing.borrow() {
        // The server is stopping its guests: tell this client how they ended.
        while runs.join_next().await.is_some() {}
    } else {
        // Runs started here go on after the client leaves (their ids work
        // from any of its connections); only their pushed output is lost.
        runs.abort_all();
    }
    connection.close().await;
}

/// A reply: a JSON value (the action's name is added), or text already
/// written whole (replies that carry a saved JSON text unparsed).
enum Reply {
    Json(Value),
    Text(String),
}

async fn reply_error(outbox: &Outbox, action: Option<&str>, refusal: Refusal) {
    outbox.text(reply_text(action, Err(refusal))).await;
}

/// A reply as the text sent: the action's name added to a JSON reply, or
/// the error with its code.
fn reply_text(action: Option<&str>, result: Result<Reply, Refusal>) -> String {
    match result {
        Ok(Reply::Json(mut reply)) => {
            reply["action"] = json!(action);
            reply.to_string()
        }
        Ok(Reply::Text(text)) => text,
        Err(refusal) => json!({ "action": action, "error": refusal.message, "code": refusal.code }).to_string(),
    }
}

/// The actions that name a session, answered by the node that holds it.
const SESSION_ACTIONS: [&str; 7] =
    ["get_placeholder", "run_model", "get_stats", "status", "stop", "list_files", "get_file"];

/// Answers one of `SESSION_ACTIONS`: here, or, in cluster mode, on the
/// node whose id the session has (the request forwarded as it came).
async fn session_action(app: &App, client: &Client, action: &str, request: &Fields) -> String {
    #[cfg(feature = "cluster")]
    if let Some(cluster) = &app.cluster
        && let Some(id) = target_session(action, request)
    {
        if let Some(node) = cluster.owner_of(&id) {
            let bytes = serde_json::to_vec(request).expect("fields are JSON");
            match cluster.forward(&node, "actions", client, bytes.into()).await {
                Ok(Some(reply)) => {
                    return String::from_utf8(reply.to_vec()).unwrap_or_else(|_| {
                        reply_text(Some(action), Err(refuse("server_error", "a node answered garbage")))
                    });
                }
                // Its node has stopped: answered from the record it shared.
                Ok(None) => {}
                Err(e) => return reply_text(Some(action), Err(e.into())),
            }
        }
        // Its node is gone (or forgot it): the record it shared, if any.
        if app.registry.status(client, &id).is_none()
            && let Some(record) = cluster.record(&id).await
        {
            app.registry.adopt(record);
        }
    }
    reply_text(Some(action), answer_here(app, client, action, request).await)
}

/// The session a request of `action` names, if it names one readably.
#[cfg(feature = "cluster")]
fn target_session(action: &str, request: &Fields) -> Option<String> {
    match action {
        "get_placeholder" | "get_stats" => placeholder_request(request).ok().map(|(id, _)| id),
        "run_model" => {
            let model: Fields = field(request, "model", "model").ok()??;
            field::<IdText>(&model, "sessionId", "sessionId").ok()?.map(|id| id.0)
        }
        _ => field::<IdText>(request, "sessionId", "sessionId").ok()?.map(|id| id.0),
    }
}

async fn answer_here(app: &App, client: &Client, action: &str, request: &Fields) -> Result<Reply, Refusal> {
    match action {
        "get_placeholder" => get_placeholder(app, client, request).map(Reply::Text),
        "run_model" => run_model(app, client, request).await.map(Reply::Text),
        "get_stats" => get_stats(app, client, request).await,
        "status" => status(app, client, request),
        "stop" => stop(app, client, request).await,
        "list_files" => list_files(app, client, request),
        "get_file" => get_file(app, client, request),
        _ => Err(refuse("unknown_action", format!("{action} is not an action on a session"))),
    }
}

/// Answers a session action another node forwarded here (`session_action`
/// there): `request` is its JSON, `client` who asked.
#[cfg(feature = "cluster")]
pub(crate) async fn answer_forwarded(app: App, request: bytes::Bytes, client: Option<Client>) -> bytes::Bytes {
    let Some(client) = client else {
        return reply_text(None, Err(refuse("bad_request", "a forwarded request must name its client"))).into();
    };
    let Ok(text) = String::from_utf8(request.to_vec()) else {
        return reply_text(None, Err(refuse("bad_request", "a forwarded request is JSON"))).into();
    };
    let request = match parse_fields_off_thread(text).await {
        Ok(request) => request,
        Err(e) => return reply_text(None, Err(refuse("bad_request", e))).into(),
    };
    let action = field::<String>(&request, "action", "action").ok().flatten().unwrap_or_default();
    reply_text(Some(&action), answer_here(&app, &client, &action, &request).await).into()
}

/// A required field, as `T`.
fn required<T: serde::de::DeserializeOwned>(fields: &Fields, key: &str, what: &str) -> Result<T, Refusal> {
    field::<T>(fields, key, key)
        .map_err(|e| refuse("bad_request", e))?
        .ok_or_else(|| refuse("bad_request", format!("{what} needs a \"{key}\" field")))
}

/// A field that is itself an object.
fn object(fields: &Fields, key: &str, what: &str) -> Result<Fields, Refusal> {
    required::<Fields>(fields, key, what).map_err(|e| {
        if e.message.contains("needs") { e } else { refuse("bad_request", format!("{key} must be an object")) }
    })
}

fn session_id(fields: &Fields, what: &str) -> Result<String, Refusal> {
    required::<IdText>(fields, "sessionId", what).map(|id| id.0).map_err(|e| {
        if e.message.contains("needs") { e } else { refuse("bad_request", "sessionId must be a number or a string") }
    })
}

#[derive(Deserialize)]
struct FileSpec {
    filename: String,
    content: String,
}

async fn run(app: &App, client: &Client, request: &Fields) -> Result<(String, RunEvents), Refusal> {
    let (language, program, stdin) = program_of(request)?;
    let options = SessionOptions { stdin, ..app.session_options() };
    let started = app.registry.start(client, Face::Actions, language, program, options, Keep::Live).await?;
    Ok((started.entry.id().to_string(), started.events))
}

/// The language, program and standard input (`"stdin"`: the whole input,
/// else EOF) of a `run` request.
pub(crate) fn program_of(request: &Fields) -> Result<(Language, Program, Stdin), Refusal> {
    let mut chosen = None;
    for (key, value) in request {
        if key == "action" || key == "token" {
            continue;
        }
        match key.parse::<Language>() {
            Ok(language) if chosen.is_none() => chosen = Some((language, value)),
            Ok(_) => return Err(refuse("bad_request", "run takes one language key, not several")),
            Err(e) => return Err(refuse("unknown_language", e.to_string())),
        }
    }
    let (language, spec) = chosen.ok_or_else(|| {
        refuse("bad_request", "run needs a language key with the program, e.g. {\"action\":\"run\",\"python\":{...}}")
    })?;
    let spec: Fields =
        serde_json::from_str(spec.get()).map_err(|_| refuse("bad_request", "the program must be an object"))?;
    let files: Vec<FileSpec> = field(&spec, "files", "files")
        .map_err(|_| refuse("bad_request", "files must be a list of {filename, content} strings"))?
        .ok_or_else(|| refuse("bad_request", "the program needs a \"files\" field"))?;
    let sources: Vec<SourceFile> =
        files.into_iter().map(|f| SourceFile { name: f.filename, content: f.content }).collect();
    if let Some(number) =
        field::<u64>(&spec, "number", "number").map_err(|_| refuse("bad_request", "number must be a whole number"))?
        && number != sources.len() as u64
    {
        return Err(refuse("bad_request", format!("number says {number} files but {} were given", sources.len())));
    }
    let main_file = match field::<String>(&spec, "mainfile", "mainfile").map_err(|e| refuse("bad_request", e))? {
        Some(main) => main,
        None if sources.len() == 1 => sources[0].name.clone(),
        None => return Err(refuse("bad_request", "mainfile is needed when there are several files")),
    };
    let args: Vec<String> = field(&spec, "arguments", "arguments")
        .map_err(|_| refuse("bad_request", "arguments must be a list of strings"))?
        .unwrap_or_default();
    let stdin = field::<String>(&spec, "stdin", "stdin")
        .map_err(|_| refuse("bad_request", "stdin must be a string: the program's whole standard input"))?
        .map_or(Stdin::Closed, |text| Stdin::Data(text.into()));
    Ok((language, Program { files: sources, main_file, args, env: Vec::new() }.validated()?, stdin))
}

async fn push_output(outbox: &Outbox, id: &str, mut events: RunEvents) {
    let (mut stdout, mut stderr) = (Utf8Chunks::default(), Utf8Chunks::default());
    while let Some(event) = events.recv().await {
        let (stream, data) = match event {
            SessionEvent::Stdout(bytes) => ("stdout", stdout.push(&bytes)),
            SessionEvent::Stderr(bytes) => ("stderr", stderr.push(&bytes)),
            SessionEvent::Finished(outcome) => {
                let mut end = json!({
                    "action": "finished",
                    "sessionId": id,
                    "status": RunState::of(Some(&outcome)).as_str(),
                    "exitCode": outcome.exit_code,
                    "exectimems": outcome.wall_time.as_millis() as u64,
                    "reason": outcome.reason.as_str(),
                });
                if let Some(message) = outcome.message {
                    end["message"] = json!(message);
                }
                outbox.json(end).await;
                return;
            }
            SessionEvent::Spawned => continue,
        };
        if !data.is_empty() {
            outbox.json(json!({ "action": "output", "sessionId": id, "stream": stream, "data": data })).await;
        }
    }
}

pub(crate) fn placeholder_request(request: &Fields) -> Result<(String, String), Refusal> {
    let placeholder = object(request, "placeholder", "this action")?;
    let id = session_id(&placeholder, "placeholder")?;
    let name = required::<String>(&placeholder, "name", "placeholder")?;
    Ok((id, name))
}

/// The JSON text a session of `client` saved under `name`.
fn saved(app: &App, client: &Client, id: &str, name: &str) -> Result<Arc<RawValue>, Refusal> {
    let saved = app.registry.placeholders(client, id).ok_or_else(|| Refusal::from(Error::UnknownSession(id.into())))?;
    let placeholders = saved.placeholders;
    placeholders.get_json(name).ok_or_else(|| {
        if saved.dropped {
            return refuse(
                "unknown_placeholder",
                format!(
                    "session {id}'s placeholders were not kept: there was no room for them when it ended (the \
                     server's room for saved placeholders was full, or, in a cluster, they were larger than a message)"
                ),
            );
        }
        let names = placeholders.names();
        let saved = if names.is_empty() { "none".to_string() } else { names.join(", ") };
        refuse("unknown_placeholder", format!("session {id} saved no placeholder {name:?}; saved: {saved}"))
    })
}

/// A reply that carries JSON text as it was saved, never parsed into a tree.
#[derive(Serialize)]
struct RawReply<'a> {
    action: &'a str,
    #[serde(rename = "sessionId")]
    session_id: &'a str,
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prediction: Option<&'a RawValue>,
}

fn get_placeholder(app: &App, client: &Client, request: &Fields) -> Result<String, Refusal> {
    let (id, name) = placeholder_request(request)?;
    let value = saved(app, client, &id, &name)?;
    let reply =
        RawReply { action: "get_placeholder", session_id: &id, name: &name, value: Some(&value), prediction: None };
    serde_json::to_string(&reply).map_err(|e| refuse("server_error", e.to_string()))
}

#[derive(Deserialize)]
struct ModelRequest {
    #[serde(rename = "sessionId")]
    session_id: Option<IdText>,
    name: Option<String>,
    is_data: Option<Box<RawValue>>,
    data: Option<Box<RawValue>>,
}

async fn run_model(app: &App, client: &Client, request: &Fields) -> Result<String, Refusal> {
    let model: ModelRequest = required(request, "model", "run_model").map_err(|e| {
        if e.message.contains("needs") { e } else { refuse("bad_request", format!("model: {}", e.message)) }
    })?;
    let id = model.session_id.ok_or_else(|| refuse("bad_request", "model needs a \"sessionId\" field"))?.0;
    let name = model.name.ok_or_else(|| refuse("bad_request", "model needs a \"name\" field"))?;
    // Anything but false means the data is given inline (the seed's default).
    let is_data = model.is_data.is_none_or(|v| v.get() != "false");
    let data = model.data.ok_or_else(|| refuse("bad_request", "model needs a \"data\" field"))?;
    let data = if is_data {
        data
    } else {
        // `data` is a dataset file's path as sessions see it, e.g. /data/iris.csv.
        let path: String = serde_json::from_str(data.get()).map_err(|_| {
            refuse(
                "bad_request",
                "data must be a string (a dataset path such as /data/<name>.csv, with is_data: false)",
            )
        })?;
        let datasets = app.datasets.as_ref().ok_or_else(|| {
            refuse("not_supported", "this server keeps no datasets (start it with --data-dir); send the data inline")
        })?;
        super::datasets::rows(datasets, &path, app.config.max_message_bytes)
            .await
            .map_err(|e| refuse(e.code(), super::datasets::public_dataset_message(&e)))?
    };
    match app.registry.predict(client, &id, &name, data).await? {
        Ok(prediction) => {
            let reply = RawReply {
                action: "run_model",
                session_id: &id,
                name: &name,
                value: None,
                prediction: Some(&prediction),
            };
            serde_json::to_string(&reply).map_err(|e| refuse("server_error", e.to_string()))
        }
        Err(message) => Err(refuse("model_error", format!("model {name:?} failed: {message}"))),
    }
}

async fn get_stats(app: &App, client: &Client, request: &Fields) -> Result<Reply, Refusal> {
    let (id, name) = placeholder_request(request)?;
    let value = saved(app, client, &id, &name)?;
    // One pass over the saved text, off the I/O threads.
    let stats = tokio::task::spawn_blocking(move || table_stats(value.get()))
        .await
        .map_err(|_| refuse("server_error", "the statistics could not be computed"))?
        .map_err(|e| refuse("not_numeric", format!("placeholder {name:?}: {e}")))?;
    Ok(Reply::Json(json!({ "sessionId": id, "name": name, "stats": stats })))
}

/// Where a run is in its life, in this face's words.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RunState {
    Running,
    /// Ended with exit code 0.
    Finished,
    /// Ended with an error, a non-zero exit, or a memory or output limit.
    Failed,
    /// Killed or stopped by a client.
    Stopped,
    /// Stopped by the wall-clock or fuel limit.
    Timeout,
}

impl RunState {
    fn of(outcome: Option<&RunOutcome>) -> RunState {
        let Some(outcome) = outcome else { return RunState::Running };
        match outcome.reason {
            EndReason::Exit if outcome.exit_code == 0 => RunState::Finished,
            EndReason::Killed => RunState::Stopped,
            EndReason::Timeout | EndReason::Fuel => RunState::Timeout,
            _ => RunState::Failed,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            RunState::Running => "running",
            RunState::Finished => "finished",
            RunState::Failed => "failed",
            RunState::Stopped => "stopped",
            RunState::Timeout => "timeout",
        }
    }
}

fn status_reply(status: &RunStatus) -> Value {
    let mut reply = json!({
        "sessionId": status.id,
        "language": status.language.name(),
        "status": RunState::of(status.outcome.as_ref()).as_str(),
        "live": status.live,
        "startedAt": status.started_at.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0),
    });
    if let Some(outcome) = &status.outcome {
        reply["exitCode"] = json!(outcome.exit_code);
        reply["exectimems"] = json!(outcome.wall_time.as_millis() as u64);
        reply["reason"] = json!(outcome.reason.as_str());
        reply["fuelUsed"] = json!(outcome.fuel_used);
        reply["peakMemory"] = json!(outcome.peak_memory);
        if let Some(message) = &outcome.message {
            reply["message"] = json!(message);
        }
    }
    reply
}

/// The files a live session's code wrote under `/tmp`.
fn list_files(app: &App, client: &Client, request: &Fields) -> Result<Reply, Refusal> {
    let id = session_id(request, "list_files")?;
    let files = app.registry.scratch_files(client, &id)?;
    Ok(Reply::Json(json!({ "sessionId": id, "files": files })))
}

/// One file a live session's code wrote under `/tmp`: as `text` when it is
/// UTF-8, else as `base64`.
fn get_file(app: &App, client: &Client, request: &Fields) -> Result<Reply, Refusal> {
    use base64::Engine as _;
    let id = session_id(request, "get_file")?;
    let path = required::<String>(request, "path", "get_file")?;
    let bytes = app.registry.scratch_file(client, &id, &path, crate::scratch::MAX_FETCH_BYTES)?;
    let mut reply = json!({ "sessionId": id, "path": path, "bytes": bytes.len() });
    match std::str::from_utf8(&bytes) {
        Ok(text) => reply["text"] = json!(text),
        Err(_) => reply["base64"] = json!(base64::engine::general_purpose::STANDARD.encode(&bytes)),
    }
    Ok(Reply::Json(reply))
}

fn status(app: &App, client: &Client, request: &Fields) -> Result<Reply, Refusal> {
    let id = session_id(request, "status")?;
    let status = app.registry.status(client, &id).ok_or_else(|| Refusal::from(Error::UnknownSession(id)))?;
    Ok(Reply::Json(status_reply(&status)))
}

async fn stop(app: &App, client: &Client, request: &Fields) -> Result<Reply, Refusal> {
    let id = session_id(request, "stop")?;
    let status = app.registry.stop(client, &id).await.ok_or_else(|| Refusal::from(Error::UnknownSession(id)))?;
    Ok(Reply::Json(status_reply(&status)))
}
