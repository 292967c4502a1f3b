//! The runtime actions face (seeds 000/001) on `GET /`: run, get_placeholder,
//! run_model, get_stats, status and stop. Requests are JSON or JavaScript
//! object literals; every reply names its action, and errors carry
//! `"error"` (what went wrong and what to do) and a short `"code"`.
//!
//! Pushed on the socket that started a run: `{"action":"output","sessionId",
//! "stream":"stdout"|"stderr","data"}` while it runs, then `{"action":"finished",
//! "sessionId","status","exitCode","exectimems","reason"}`.

use std::sync::Arc;

use axum::extract::State;
use axum::extract::ws::WebSocketUpgrade;
use axum::http::HeaderMap;
use axum::response::Response;
use serde_json::{Map, Value, json};
use tokio::task::JoinSet;

use super::socket::{Connection, Incoming, Outbox, Unreadable};
use super::{App, Utf8Chunks, parse_lenient};

use crate::error::Error;
use crate::host::describe;
use crate::language::Language;
use crate::program::{Program, SourceFile};
use crate::registry::{Entry, RunEvents, RunStatus};
use crate::session::SessionEvent;

pub(crate) async fn websocket(State(app): State<App>, headers: HeaderMap, upgrade: WebSocketUpgrade) -> Response {
    let hard = app.config.hard_message_limit();
    upgrade.max_message_size(hard).max_frame_size(hard).on_upgrade(move |socket| {
        let socket = Connection::new(socket, app.clone(), &headers, unauthorized_reply);
        connection(app, socket)
    })
}

/// The reply to a socket whose first message has no accepted token.
fn unauthorized_reply(why: &str) -> Value {
    json!({ "action": null, "error": why, "code": "unauthorized" })
}

/// A refusal: the reply's `code` and `error`.
struct Refusal {
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
            Error::ShuttingDown => "shutting_down",
            Error::UnknownLanguage(_) => "unknown_language",
            Error::InvalidProgram(_) | Error::InvalidInput(_) => "bad_request",
            Error::UnknownModel { .. } => "unknown_model",
            Error::SessionEnded(_) => "session_ended",
            Error::StillRunning(_) => "still_running",
            Error::GuestLoad { .. } | Error::Instantiate { .. } | Error::Engine(_) | Error::Storage(_) => {
                "server_error"
            }
        };
        Refusal { code, message: e.to_string() }
    }
}

async fn connection(app: App, mut connection: Connection) {
    let outbox = connection.outbox.clone();
    let mut runs = JoinSet::new();
    let mut first = true;
    while let Some(incoming) = connection.next().await {
        let is_first = std::mem::replace(&mut first, false);
        while runs.try_join_next().is_some() {}
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
        let request = match parse_lenient(&text) {
            Ok(Value::Object(map)) => map,
            Ok(_) => {
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
            if is_first && target == "file_upload" {
                return super::datasets::upload(app, connection, request).await;
            }
            let why = if is_first {
                format!("unknown target {target}; the one target is \"file_upload\"")
            } else {
                "a file upload starts on a socket of its own: send {\"target\":\"file_upload\",...} first".into()
            };
            reply_error(&outbox, None, refuse("bad_request", why)).await;
            continue;
        }
        let action = request.get("action").and_then(Value::as_str).map(str::to_string);
        let result = match action.as_deref() {
            Some("run") if runs.len() >= app.config.max_runs_per_connection => Err(refuse(
                "busy",
                format!(
                    "this socket has {} runs going already; wait for one to end",
                    app.config.max_runs_per_connection
                ),
            )),
            Some("run") => match run(&app, &request).await {
                Ok((entry, events)) => {
                    let (outbox, id) = (outbox.clone(), entry.id().to_string());
                    runs.spawn(async move { push_output(&outbox, &id, events).await });
                    Ok(json!({ "sessionId": entry.id() }))
                }
                Err(e) => Err(e),
            },
            Some("get_placeholder") => get_placeholder(&app, &request),
            Some("run_model") => run_model(&app, &request).await,
            Some("get_stats") => get_stats(&app, &request),
            Some("status") => status(&app, &request),
            Some("stop") => stop(&app, &request).await,
            Some(other) => Err(refuse(
                "unknown_action",
                format!(
                    "unknown action {other:?}; actions are run, get_placeholder, run_model, get_stats, status, stop"
                ),
            )),
            None => Err(refuse("bad_request", "every request needs an \"action\" string")),
        };
        match result {
            Ok(mut reply) => {
                reply["action"] = json!(action);
                outbox.json(reply).await;
            }
            Err(refusal) => reply_error(&outbox, action.as_deref(), refusal).await,
        }
    }
    if *app.closing.borrow() {
        // The server is stopping its guests: tell this client how they ended.
        while runs.join_next().await.is_some() {}
    } else {
        // Runs started here go on after the client leaves (their ids work
        // from any connection); only their pushed output is lost.
        runs.abort_all();
    }
    connection.close().await;
}

async fn reply_error(outbox: &Outbox, action: Option<&str>, refusal: Refusal) {
    outbox.json(json!({ "action": action, "error": refusal.message, "code": refusal.code })).await;
}

fn field<'a>(object: &'a Map<String, Value>, key: &str, what: &str) -> Result<&'a Value, Refusal> {
    object.get(key).ok_or_else(|| refuse("bad_request", format!("{what} needs a \"{key}\" field")))
}

fn object<'a>(value: &'a Value, what: &str) -> Result<&'a Map<String, Value>, Refusal> {
    value.as_object().ok_or_else(|| refuse("bad_request", format!("{what} must be an object")))
}

fn string<'a>(value: &'a Value, what: &str) -> Result<&'a str, Refusal> {
    value.as_str().ok_or_else(|| refuse("bad_request", format!("{what} must be a string")))
}

/// A session id given as a number or a string.
fn session_id(value: &Value) -> Result<String, Refusal> {
    match value {
        Value::String(s) if !s.trim().is_empty() => Ok(s.trim().to_string()),
        Value::Number(n) => Ok(n.to_string()),
        _ => Err(refuse("bad_request", "sessionId must be a number or a string")),
    }
}

fn find(app: &App, id: &str) -> Result<Arc<Entry>, Refusal> {
    app.registry
        .get(id)
        .ok_or_else(|| refuse("unknown_session", format!("no session {id}: it never existed or has expired")))
}

async fn run(app: &App, request: &Map<String, Value>) -> Result<(Arc<Entry>, RunEvents), Refusal> {
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
    let spec = object(spec, "the program")?;
    let files = field(spec, "files", "the program")?
        .as_array()
        .ok_or_else(|| refuse("bad_request", "files must be a list of {filename, content}"))?;
    let mut sources = Vec::with_capacity(files.len());
    for file in files {
        let file = object(file, "each file")?;
        sources.push(SourceFile {
            name: string(field(file, "filename", "each file")?, "filename")?.to_string(),
            content: string(field(file, "content", "each file")?, "content")?.to_string(),
        });
    }
    if let Some(number) = spec.get("number") {
        let number = number.as_u64().ok_or_else(|| refuse("bad_request", "number must be a whole number"))?;
        if number != sources.len() as u64 {
            return Err(refuse("bad_request", format!("number says {number} files but {} were given", sources.len())));
        }
    }
    let main_file = match spec.get("mainfile") {
        Some(main) => string(main, "mainfile")?.to_string(),
        None if sources.len() == 1 => sources[0].name.clone(),
        None => return Err(refuse("bad_request", "mainfile is needed when there are several files")),
    };
    let args = match spec.get("arguments") {
        Some(Value::Array(items)) => {
            items.iter().map(|a| string(a, "each argument").map(str::to_string)).collect::<Result<_, _>>()?
        }
        Some(_) => return Err(refuse("bad_request", "arguments must be a list of strings")),
        None => Vec::new(),
    };
    let program = Program { files: sources, main_file, args, env: Vec::new() };
    let options = app.session_options();
    let started = app.registry.start(language, program, options, true).await?;
    Ok((started.entry, started.events))
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
                    "status": crate::registry::RunState::of_outcome(&outcome).as_str(),
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

fn placeholder_request(request: &Map<String, Value>) -> Result<(String, String), Refusal> {
    let placeholder = object(field(request, "placeholder", "this action")?, "placeholder")?;
    let id = session_id(field(placeholder, "sessionId", "placeholder")?)?;
    let name = string(field(placeholder, "name", "placeholder")?, "name")?.to_string();
    Ok((id, name))
}

fn saved(app: &App, id: &str, name: &str) -> Result<Value, Refusal> {
    let entry = find(app, id)?;
    entry.placeholders().get(name).ok_or_else(|| {
        let names = entry.placeholders().names();
        let saved = if names.is_empty() { "none".to_string() } else { names.join(", ") };
        refuse("unknown_placeholder", format!("session {id} saved no placeholder {name:?}; saved: {saved}"))
    })
}

fn get_placeholder(app: &App, request: &Map<String, Value>) -> Result<Value, Refusal> {
    let (id, name) = placeholder_request(request)?;
    let value = saved(app, &id, &name)?;
    Ok(json!({ "sessionId": id, "name": name, "value": value }))
}

async fn run_model(app: &App, request: &Map<String, Value>) -> Result<Value, Refusal> {
    let model = object(field(request, "model", "run_model")?, "model")?;
    let id = session_id(field(model, "sessionId", "model")?)?;
    let name = string(field(model, "name", "model")?, "name")?.to_string();
    let is_data = model.get("is_data").map(|v| v.as_bool().unwrap_or(true)).unwrap_or(true);
    let data = field(model, "data", "model")?;
    let entry = find(app, &id)?;
    let read;
    let data = if is_data {
        data
    } else {
        // `data` is a dataset file's path as sessions see it, e.g. /data/iris.csv.
        let path = string(data, "data (a dataset path such as /data/<name>.csv, with is_data: false)")?;
        let datasets = app.datasets.as_ref().ok_or_else(|| {
            refuse("not_supported", "this server keeps no datasets (start it with --data-dir); send the data inline")
        })?;
        read = super::datasets::rows(datasets, path, app.config.max_message_bytes)
            .await
            .map_err(|e| refuse(e.code(), e.to_string()))?;
        &read
    };
    match entry.predict(&name, data).await? {
        Ok(prediction) => Ok(json!({ "sessionId": id, "name": name, "prediction": prediction })),
        Err(message) => Err(refuse("model_error", format!("model {name:?} failed: {message}"))),
    }
}

fn get_stats(app: &App, request: &Map<String, Value>) -> Result<Value, Refusal> {
    let (id, name) = placeholder_request(request)?;
    let value = saved(app, &id, &name)?;
    let stats = stats_of(&value).map_err(|e| refuse("not_numeric", format!("placeholder {name:?}: {e}")))?;
    Ok(json!({ "sessionId": id, "name": name, "stats": stats }))
}

/// Statistics of a list of numbers, or per numeric column of a table given as
/// a list of records or a map of columns.
fn stats_of(value: &Value) -> Result<Value, String> {
    fn numbers(items: &[Value]) -> Option<Vec<f64>> {
        items.iter().map(Value::as_f64).collect()
    }
    fn summary(values: &[f64]) -> Result<Value, String> {
        let s = describe(values)?;
        let std = if s.std.is_nan() { Value::Null } else { json!(s.std) };
        Ok(json!({ "count": s.count, "mean": s.mean, "std": std, "min": s.min,
                   "25%": s.q1, "50%": s.median, "75%": s.q3, "max": s.max }))
    }
    fn columns(columns: Vec<(String, Vec<Value>)>) -> Result<Value, String> {
        let mut out = Map::new();
        for (name, cells) in columns {
            if let Some(values) = numbers(&cells) {
                out.insert(name, summary(&values)?);
            }
        }
        if out.is_empty() {
            return Err("the table has no numeric column".into());
        }
        Ok(Value::Object(out))
    }
    match value {
        Value::Array(items) if items.iter().all(Value::is_number) => summary(&numbers(items).unwrap_or_default()),
        Value::Array(rows) if !rows.is_empty() && rows.iter().all(Value::is_object) => {
            let mut names: Vec<String> = Vec::new();
            for row in rows {
                for key in row.as_object().into_iter().flat_map(|r| r.keys()) {
                    if !names.contains(key) {
                        names.push(key.clone());
                    }
                }
            }
            columns(
                names
                    .into_iter()
                    .map(|n| {
                        let cells = rows.iter().map(|r| r.get(&n).cloned().unwrap_or(Value::Null)).collect();
                        (n, cells)
                    })
                    .collect(),
            )
        }
        Value::Object(map) if map.values().all(Value::is_array) => {
            columns(map.iter().map(|(k, v)| (k.clone(), v.as_array().cloned().unwrap_or_default())).collect())
        }
        Value::Array(rows) if !rows.is_empty() && rows.iter().all(Value::is_array) => {
            let width = rows.iter().map(|r| r.as_array().map_or(0, Vec::len)).max().unwrap_or(0);
            columns(
                (0..width)
                    .map(|i| (i.to_string(), rows.iter().map(|r| r.get(i).cloned().unwrap_or(Value::Null)).collect()))
                    .collect(),
            )
        }
        _ => Err("stats need a list of numbers, a list of records, a list of rows or a map of columns".into()),
    }
}

fn status_reply(status: &RunStatus) -> Value {
    let mut reply = json!({
        "sessionId": status.id,
        "language": status.language.name(),
        "status": status.state.as_str(),
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

fn status(app: &App, request: &Map<String, Value>) -> Result<Value, Refusal> {
    let id = session_id(field(request, "sessionId", "status")?)?;
    Ok(status_reply(&find(app, &id)?.status()))
}

async fn stop(app: &App, request: &Map<String, Value>) -> Result<Value, Refusal> {
    let id = session_id(field(request, "sessionId", "stop")?)?;
    let entry = find(app, &id)?;
    entry.kill();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), entry.finished()).await;
    Ok(status_reply(&entry.status()))
}

#[cfg(test)]
mod tests {
    use super::stats_of;
    use serde_json::json;

    #[test]
    fn stats_of_lists_records_rows_and_columns() {
        let s = stats_of(&json!([1, 2, 3, 4, 10])).unwrap();
        assert_eq!((s["count"].clone(), s["50%"].clone(), s["max"].clone()), (json!(5), json!(3.0), json!(10.0)));
        let records = stats_of(&json!([{"a": 1, "b": "x"}, {"a": 3, "b": "y"}])).unwrap();
        assert_eq!(records["a"]["mean"], json!(2.0));
        assert!(records.get("b").is_none());
        let columns = stats_of(&json!({"a": [1, 2], "b": [10, 30]})).unwrap();
        assert_eq!(columns["b"]["mean"], json!(20.0));
        let rows = stats_of(&json!([[1, 10], [3, 30]])).unwrap();
        assert_eq!(rows["1"]["max"], json!(30.0));
        assert!(stats_of(&json!("text")).is_err());
        assert!(stats_of(&json!([{"b": "x"}])).unwrap_err().contains("no numeric column"));
    }
}
