//! The ranna face (seed 002): ops PING/EXEC/KILL in, events
//! PONG/ERROR/SPAWN/LOG/STOP out over `GET /v1/ws`, and the REST calls
//! `POST /v1/exec`, `GET /v1/spec`, `GET /v1/info`. sandlot adds standard
//! input: EXEC's `stdin` (the whole input) and `interactive` (kept open),
//! and op 3 STDIN `{runid, data?, eof?}` for an interactive run.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Value, json};
use tokio::task::JoinSet;

use super::openapi::ErrorBody;
use super::socket::{Connection, Incoming, Outbox, Unreadable};
use super::{App, IdText, Peer, Utf8Chunks, parse_typed_off_thread, public_message};

use crate::error::Error;
use crate::host::Placeholders;
use crate::input::{Stdin, StdinError, StdinWriter};
use crate::language::Language;
use crate::metrics::Face;
use crate::program::Program;
use crate::registry::{Client, Entry, RunEvents};
use crate::run::{RunOutcome, SessionEvent};
use crate::runtime::SessionOptions;

const PONG: u8 = 0;
const ERROR: u8 = 1;
const SPAWN: u8 = 2;
const LOG: u8 = 3;
const STOP: u8 = 4;

/// One op as sent; its parts stay JSON text until the op is known.
#[derive(Deserialize)]
pub(crate) struct OpMessage {
    op: Option<Box<RawValue>>,
    nonce: Option<Box<RawValue>>,
    args: Option<Box<RawValue>>,
}

/// What a client may ask on the socket.
#[derive(Debug)]
pub(crate) enum Op {
    Ping,
    Exec(Box<ExecutionRequest>),
    Kill(String),
    Stdin(StdinArgs),
}

/// A nonce, echoed in every event the op causes: a number or a short string.
type Nonce = Option<Value>;

/// Reads one op. The nonce is returned even when the op is refused, so the
/// error event carries it.
pub(crate) fn parse_op(message: &OpMessage) -> (Nonce, Result<Op, String>) {
    let nonce = match message.nonce.as_deref().map(|n| serde_json::from_str::<Value>(n.get())) {
        None | Some(Ok(Value::Null)) => None,
        Some(Ok(nonce @ Value::Number(_))) => Some(nonce),
        Some(Ok(Value::String(s))) if s.len() <= 256 => Some(Value::String(s)),
        _ => return (None, Err("nonce must be a number or a string of 256 bytes at most".into())),
    };
    let op = match message.op.as_deref().map(|op| serde_json::from_str::<u64>(op.get())) {
        Some(Ok(op)) => op,
        _ => return (nonce, Err(format!("every message needs a numeric \"op\": {OPS}"))),
    };
    let args = message.args.as_deref().map_or("null", RawValue::get);
    let op = match op {
        0 => Ok(Op::Ping),
        1 => serde_json::from_str::<ExecutionRequest>(args)
            .map(|request| Op::Exec(Box::new(request)))
            .map_err(|e| format!("invalid program: EXEC args: {e}")),
        2 => match serde_json::from_str::<KillArgs>(args) {
            Ok(KillArgs { runid: Some(IdText(runid)) }) => Ok(Op::Kill(runid)),
            _ => Err("KILL needs args.runid, the run id SPAWN gave".into()),
        },
        3 => match serde_json::from_str::<StdinArgs>(args) {
            Ok(stdin) if stdin.runid.is_some() => Ok(Op::Stdin(stdin)),
            Ok(_) => Err("STDIN needs args.runid, the run id SPAWN gave".into()),
            Err(e) => Err(format!("STDIN args {{runid, data?, eof?}}: {e}")),
        },
        other => Err(format!("unknown op {other}; ops are {OPS}")),
    };
    (nonce, op)
}

const OPS: &str = "0 PING, 1 EXEC, 2 KILL, 3 STDIN";

#[derive(Deserialize)]
struct KillArgs {
    runid: Option<IdText>,
}

/// sandlot's op 3: bytes for a run's standard input, and/or its end.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StdinArgs {
    runid: Option<IdText>,
    #[serde(default)]
    data: Option<String>,
    #[serde(default)]
    eof: Option<bool>,
}

/// ranna's `models.ExecutionRequest`. Its Go client sends `null` for unset
/// slices and maps: null means absent.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ExecutionRequest {
    language: String,
    code: String,
    #[serde(default)]
    arguments: Option<Vec<String>>,
    #[serde(default)]
    environment: Option<HashMap<String, String>>,
    #[serde(default)]
    inline_expression: Option<bool>,
    /// sandlot's: the run's standard input, whole (then EOF), as Piston and
    /// Judge0 take it; with `interactive`, what it starts with.
    #[serde(default)]
    stdin: Option<String>,
    /// sandlot's: keep the run's standard input open for STDIN ops until
    /// one says `eof` (without it a run reads EOF after `stdin`).
    #[serde(default)]
    interactive: Option<bool>,
}

impl ExecutionRequest {
    /// What the run's standard input is.
    fn stdin(&self) -> Stdin {
        let given = Bytes::from(self.stdin.clone().unwrap_or_default());
        match (self.interactive, self.stdin.is_some()) {
            (Some(true), _) => Stdin::Open(given),
            (_, true) => Stdin::Data(given),
            (_, false) => Stdin::Closed,
        }
    }

    fn into_program(self) -> Result<(Language, Program), Error> {
        let language: Language = self.language.parse()?;
        let code = if self.inline_expression == Some(true) { inline(language, &self.code) } else { self.code };
        let mut program = Program::single(language.main_file(), code);
        program.args = self.arguments.unwrap_or_default();
        let mut env: Vec<(String, String)> = self.environment.unwrap_or_default().into_iter().collect();
        env.sort();
        program.env = env;
        Ok((language, program))
    }
}

/// The program for an inline expression: its imports, then the template
/// around the rest. (The regex engine is linear in the input's length.)
fn inline(language: Language, expression: &str) -> String {
    static PATTERNS: std::sync::OnceLock<HashMap<Language, regex::Regex>> = std::sync::OnceLock::new();
    let patterns = PATTERNS.get_or_init(|| {
        Language::ALL
            .into_iter()
            .map(|l| (l, regex::Regex::new(l.spec().inline.import_regex).expect("a valid import pattern")))
            .collect()
    });
    let pattern = &patterns[&language];
    let imports: Vec<&str> = pattern.find_iter(expression).map(|m| m.as_str().trim()).collect();
    let code = pattern.replace_all(expression, "");
    language.spec().inline.template.replace("$${IMPORTS}", &imports.join("\n")).replace("$${CODE}", code.trim())
}

/// ranna's ops and events: 0 PING, 1 EXEC, 2 KILL, 3 STDIN; events PONG, ERROR, SPAWN, LOG, STOP.
#[utoipa::path(
    get,
    path = "/v1/ws",
    tag = "ranna",
    operation_id = "ranna_websocket",
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
    super::socket::accept(app, peer, headers, upgrade, (Face::Ranna, unauthorized_event), connection)
}

/// The ERROR event for a socket whose first op has no accepted token.
fn unauthorized_event(why: &str) -> Value {
    json!({ "code": ERROR, "data": why })
}

async fn connection(app: App, mut connection: Connection) {
    let outbox = connection.outbox.clone();
    // This socket's runs, by id: only this socket can kill them. They are
    // one-shot: nothing of them is kept once their STOP is sent.
    let mut mine: HashMap<String, Arc<Entry>> = HashMap::new();
    let mut runs: JoinSet<String> = JoinSet::new();
    loop {
        while let Some(done) = runs.try_join_next() {
            if let Ok(runid) = done {
                mine.remove(&runid);
            }
        }
        connection.set_busy(!runs.is_empty());
        let incoming = tokio::select! {
            incoming = connection.next() => incoming,
            Some(Ok(runid)) = runs.join_next(), if !runs.is_empty() => {
                mine.remove(&runid);
                continue;
            }
        };
        let Some(incoming) = incoming else { break };
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
        let message: OpMessage = match parse_typed_off_thread(text).await {
            Ok(message) => message,
            Err(e) => {
                error(&outbox, None, &format!("the op {e}")).await;
                continue;
            }
        };
        let (nonce, op) = parse_op(&message);
        match op {
            Err(why) => error(&outbox, nonce, &why).await,
            Ok(Op::Ping) => event(&outbox, PONG, nonce, json!("Pong!")).await,
            Ok(Op::Exec(_)) if runs.len() >= app.config.max_runs_per_connection => {
                let limit = app.config.max_runs_per_connection;
                error(&outbox, nonce, &format!("this socket has {limit} runs going already; wait for one to stop"))
                    .await;
            }
            Ok(Op::Exec(request)) => match start(&app, connection.client(), *request).await {
                Ok(started) => {
                    let runid = started.entry.id().to_string();
                    mine.insert(runid.clone(), started.entry.clone());
                    event(&outbox, SPAWN, nonce.clone(), json!({ "runid": runid })).await;
                    let outbox = outbox.clone();
                    let saved = started.entry.placeholders().clone();
                    runs.spawn(async move {
                        forward(&outbox, nonce, &runid, started.events, saved).await;
                        runid
                    });
                }
                Err(e) => error(&outbox, nonce, &public_message(&e)).await,
            },
            Ok(Op::Kill(runid)) => match mine.get(&runid) {
                Some(entry) => entry.kill(),
                None => error(&outbox, nonce, &format!("no running run {runid} on this socket")).await,
            },
            Ok(Op::Stdin(args)) => {
                let runid = args.runid.map(|id| id.0).unwrap_or_default();
                let Some(entry) = mine.get(&runid) else {
                    error(&outbox, nonce, &format!("no running run {runid} on this socket")).await;
                    continue;
                };
                if let Err(why) = send_stdin(entry.stdin(), args.data, args.eof == Some(true)) {
                    error(&outbox, nonce, &format!("STDIN for run {runid}: {why}")).await;
                }
            }
        }
    }
    // The client left or the server is stopping: stop this socket's runs and
    // let their STOP events out before closing.
    for entry in mine.values() {
        entry.kill();
    }
    while runs.join_next().await.is_some() {}
    connection.close().await;
}

/// Writes a STDIN op's bytes, then its EOF.
fn send_stdin(stdin: &StdinWriter, data: Option<String>, eof: bool) -> Result<(), String> {
    if let Some(data) = data {
        stdin.write(data).map_err(|e| match e {
            StdinError::Closed if !eof => format!(
                "{e}. A run takes STDIN only when its EXEC says \"interactive\": true; \"stdin\" alone gives its whole input"
            ),
            e => e.to_string(),
        })?;
    }
    if eof {
        stdin.close();
    }
    Ok(())
}

async fn start(app: &App, client: &Client, request: ExecutionRequest) -> Result<crate::Started, Error> {
    let stdin = request.stdin();
    let (language, program) = request.into_program()?;
    let options = SessionOptions { stdin, ..app.session_options() };
    app.one_shot(client, Face::Ranna, language, program, options).await
}

/// The most placeholder text a STOP carries; past it, STOP says how many
/// placeholders it left out (the output a run holds for its client is 64 KiB).
const STOP_PLACEHOLDER_BYTES: usize = 64 << 10;

/// Sends a run's output as LOG events and its end as STOP (with, as
/// sandlot's extension, the placeholders the run saved, when it saved any
/// and they take at most `STOP_PLACEHOLDER_BYTES`).
async fn forward(outbox: &Outbox, nonce: Nonce, runid: &str, mut events: RunEvents, saved: Placeholders) {
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
                let placeholders = saved.snapshot();
                let bytes: usize = placeholders.iter().map(|(name, json)| name.len() + json.get().len()).sum();
                if placeholders.is_empty() {
                    event(outbox, STOP, nonce.clone(), stop_data(runid, &outcome)).await;
                } else if bytes > STOP_PLACEHOLDER_BYTES {
                    // A STOP is held like any event for a client that does not
                    // read: it stays about as small as the output a run holds.
                    let mut data = stop_data(runid, &outcome);
                    data["placeholders_omitted"] = json!(placeholders.len());
                    event(outbox, STOP, nonce.clone(), data).await;
                } else {
                    // Their JSON text as saved, never parsed into a tree here.
                    let stop = StopWithPlaceholders {
                        code: STOP,
                        nonce: nonce.as_ref(),
                        data: StopData { outcome: stop_data(runid, &outcome), placeholders },
                    };
                    outbox.text(serde_json::to_string(&stop).expect("a STOP is JSON")).await;
                }
                return;
            }
            SessionEvent::Spawned => continue,
        };
        if !text.is_empty() {
            event(outbox, LOG, nonce.clone(), json!({ "runid": runid, key: text })).await;
        }
    }
}

#[derive(Serialize)]
struct StopWithPlaceholders<'a> {
    code: u8,
    #[serde(skip_serializing_if = "Option::is_none")]
    nonce: Option<&'a Value>,
    data: StopData,
}

#[derive(Serialize)]
struct StopData {
    #[serde(flatten)]
    outcome: Value,
    placeholders: BTreeMap<String, Arc<RawValue>>,
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

/// The REST answer to a refused run: 503 when the server is busy or still
/// preparing the language, 429 when the client is over its share or rate,
/// each with `Retry-After`.
fn refused(error: &Error, context: &str) -> Response {
    let status = match error {
        Error::Busy { .. } | Error::ShuttingDown | Error::Preparing { .. } => StatusCode::SERVICE_UNAVAILABLE,
        Error::ClientBusy { .. } | Error::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
        Error::GuestLoad { .. } | Error::Instantiate { .. } | Error::Engine(_) | Error::Storage(_) => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
        _ => StatusCode::BAD_REQUEST,
    };
    let mut response = rest_error(status, &public_message(error), context);
    let retry = error.retry_after().map(|after| after.as_secs().max(1));
    if let Some(seconds) = retry
        && let Ok(value) = seconds.to_string().parse()
    {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

/// `POST /v1/exec`: runs to the end and answers with the whole output.
#[utoipa::path(
    post,
    path = "/v1/exec",
    tag = "ranna",
    request_body = ExecutionRequest,
    responses(
        (status = 200, description = "the run ended: {runid, stdout, stderr, exectimems, exitcode, reason, message?}",
         body = Object),
        (status = 400, description = "a malformed request or program", body = ErrorBody),
        (status = 401, description = "no accepted token", body = ErrorBody),
        (status = 429, description = "over the client's share or rate", body = ErrorBody,
         headers(("Retry-After" = u64, description = "seconds"))),
        (status = 503, description = "busy, stopping, or the language still being prepared", body = ErrorBody,
         headers(("Retry-After" = u64, description = "seconds"))),
    ),
    security(("bearer" = []), ("x-auth-token" = []))
)]
pub(crate) async fn exec(
    State(app): State<App>,
    Extension(client): Extension<Client>,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    // Refusals are JSON with a length, as ranna's client reads them.
    let body = match body {
        Ok(body) => body,
        Err(rejection) => return rest_error(rejection.status(), &rejection.body_text(), "exec"),
    };
    let Ok(text) = String::from_utf8(body.into()) else {
        return rest_error(StatusCode::BAD_REQUEST, "the body must be UTF-8 JSON", "exec");
    };
    let request: ExecutionRequest = match parse_typed_off_thread(text).await {
        Ok(request) => request,
        Err(e) => return rest_error(StatusCode::BAD_REQUEST, &format!("the body {e}"), "exec"),
    };
    let started = match start(&app, &client, request).await {
        Ok(started) => started,
        Err(e) => return refused(&e, "exec"),
    };
    match started.events.collect().await {
        Some(run) => {
            let mut body = stop_data(started.entry.id(), &run.outcome);
            body["stdout"] = json!(String::from_utf8_lossy(&run.stdout));
            body["stderr"] = json!(String::from_utf8_lossy(&run.stderr));
            Json(body).into_response()
        }
        None => rest_error(StatusCode::INTERNAL_SERVER_ERROR, "the run ended without reporting", "exec"),
    }
}

/// `GET /v1/spec`: languages in ranna's spec shape; aliases `use` their target.
#[utoipa::path(
    get,
    path = "/v1/spec",
    tag = "ranna",
    responses(
        (status = 200, description = "{name: {language, filename, example, inline: {import_regex, template}, cmd, \
                                      entrypoint, image} or {use: name}}", body = Object),
        (status = 401, description = "no accepted token", body = ErrorBody),
    ),
    security(("bearer" = []), ("x-auth-token" = []))
)]
pub(crate) async fn spec() -> Json<Value> {
    let mut specs = serde_json::Map::new();
    for language in Language::ALL {
        specs.insert(
            language.name().into(),
            json!({
                "language": language.name(),
                "filename": language.main_file(),
                "example": language.spec().hello,
                "inline": {
                    "import_regex": language.spec().inline.import_regex,
                    "template": language.spec().inline.template,
                },
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
#[utoipa::path(
    get,
    path = "/v1/info",
    tag = "ranna",
    responses(
        (status = 200, description = "{version, builddate, sandbox: {type, version}}", body = Object),
        (status = 401, description = "no accepted token", body = ErrorBody),
    ),
    security(("bearer" = []), ("x-auth-token" = []))
)]
pub(crate) async fn info() -> Json<Value> {
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "builddate": env!("SANDLOT_BUILD_DATE"),
        "sandbox": { "type": "wasmtime", "version": crate::WASMTIME_VERSION },
    }))
}
