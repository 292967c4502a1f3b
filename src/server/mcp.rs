//! The agents' face (CONTRACT face 6): a Model Context Protocol server on the
//! official Rust SDK (rmcp), over stdio (`sandlot mcp`) and as streamable
//! HTTP at `/mcp` under `sandlot serve` (behind the same tokens, Host and
//! Origin checks as every REST route).
//!
//! Tools: `list_languages`; `run_code` (a one-shot run, as ranna's EXEC:
//! nothing of it is kept); and notebook sessions (`notebook.rs`):
//! `session_start`, `session_exec`, `session_get`, `session_close`. Results
//! carry stdout, stderr, exit code, reason and the trailing expression's value,
//! as text and as structured content; PNG placeholders (a matplotlib figure
//! given to `sandlot.set_placeholder`) come back as image content. The
//! descriptions are written for a model to read. Bad arguments are tool
//! errors (`isError`), never protocol errors, so the model reads what to change.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ContentBlock, Implementation, ServerCapabilities, ServerConfig as McpServerConfig};
use rmcp::service::RequestContext;
use rmcp::{RoleServer, ServerHandler, schemars, tool, tool_handler, tool_router};
use serde::{Deserialize, Serialize};
use serde_json::json;
use serde_json::value::RawValue;

use crate::input::Stdin;
use crate::language::Language;
use crate::metrics::Face;
use crate::notebook::{NotebookConfig, Notebooks};
use crate::program::{Program, SourceFile};
use crate::registry::{Client, Collected, Registry};
use crate::run::RunOutcome;
use crate::runtime::SessionOptions;
use crate::scratch::MAX_FETCH_BYTES;

/// What every tool says about the sandbox, for the model deciding to call it.
const SANDBOX: &str = "Code runs in a WebAssembly sandbox: no network, no host files (only read-only datasets under \
                       /data), no host environment, no subprocesses, no threads. Each run has a wall-clock limit, a \
                       memory limit (256 MiB by default) and 1 MiB of output.";

/// The tools, over whichever transport.
#[derive(Clone)]
pub struct McpTools {
    registry: Registry,
    notebooks: Notebooks,
    options: SessionOptions,
    /// Who the caller is when the transport does not say (stdio: the local user).
    client: Client,
    /// The cluster `run_code` runs go through, in cluster mode.
    #[cfg(feature = "cluster")]
    cluster: Option<crate::cluster::Cluster>,
    tool_router: ToolRouter<Self>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct RunCode {
    /// python, javascript, lua or python-sci (see list_languages).
    language: Option<String>,
    /// The program's source, run as its main file.
    code: Option<String>,
    /// Other files of the program (modules the code imports or requires), as {"path": "text"}.
    files: Option<BTreeMap<String, String>>,
    /// The program's whole standard input (it reads EOF after it); none if absent.
    stdin: Option<String>,
    /// Seconds the run may take, at most the server's limit (10 s by default).
    #[serde(default)]
    #[schemars(with = "Option<f64>")]
    timeout_s: Seconds,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct SessionStart {
    /// python, javascript, lua or python-sci (see list_languages).
    language: Option<String>,
    /// Seconds each session_exec may take, at most the server's limit (10 s by default).
    #[serde(default)]
    #[schemars(with = "Option<f64>")]
    timeout_s: Seconds,
}

/// A number of seconds as a client sent it. Whatever it is, the arguments
/// are read: a value that is not a number is the tool's error to report
/// (so the model reads what to change), not the protocol's.
#[derive(Debug, Default)]
pub(crate) struct Seconds(Option<Result<f64, &'static str>>);

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(Seconds(match serde_json::Value::deserialize(deserializer)? {
            serde_json::Value::Null => None,
            serde_json::Value::Number(n) => Some(n.as_f64().ok_or("a number too large")),
            serde_json::Value::String(_) => Some(Err("text")),
            serde_json::Value::Bool(_) => Some(Err("true or false")),
            serde_json::Value::Array(_) => Some(Err("a list")),
            serde_json::Value::Object(_) => Some(Err("an object")),
        }))
    }
}

#[derive(Debug, Deserialize, Serialize, schemars::JsonSchema)]
pub struct SessionExec {
    /// The id session_start returned.
    session_id: Option<String>,
    /// Code to run next in the session, in the same global scope as earlier calls.
    code: Option<String>,
}

#[derive(Debug, Deserialize, Serialize, schemars::JsonSchema)]
pub struct SessionGet {
    /// The id session_start returned.
    session_id: Option<String>,
    /// The placeholder's name, as the code saved it with sandlot.set_placeholder (Python) or
    /// sandlot.setPlaceholder (JavaScript).
    name: Option<String>,
}

#[derive(Debug, Deserialize, Serialize, schemars::JsonSchema)]
pub struct SessionFiles {
    /// The id session_start returned.
    session_id: Option<String>,
}

#[derive(Debug, Deserialize, Serialize, schemars::JsonSchema)]
pub struct SessionFile {
    /// The id session_start returned.
    session_id: Option<String>,
    /// The file's path under /tmp, as the code wrote it (e.g. "/tmp/out.csv" or "out.csv").
    path: Option<String>,
}

#[derive(Debug, Deserialize, Serialize, schemars::JsonSchema)]
pub struct SessionClose {
    /// The id session_start returned.
    session_id: Option<String>,
}

#[tool_router]
impl McpTools {
    /// Tools over `registry`, whose runs get `options` (the server's
    /// limits and datasets); callers the transport does not name are `client`.
    pub fn new(registry: Registry, options: SessionOptions, client: Client) -> Self {
        let notebooks = Notebooks::new(registry.clone(), NotebookConfig::default());
        McpTools {
            registry,
            notebooks,
            options,
            client,
            #[cfg(feature = "cluster")]
            cluster: None,
            tool_router: Self::tool_router(),
        }
    }

    /// The same tools, their `run_code` runs going through `cluster`.
    #[cfg(feature = "cluster")]
    pub(crate) fn with_cluster(mut self, cluster: Option<crate::cluster::Cluster>) -> Self {
        self.cluster = cluster;
        self
    }

    #[tool(description = "Lists the languages run_code takes, with what each has installed. \
                          python: CPython 3.14 with its standard library. python-sci: CPython 3.15 with numpy, \
                          pandas, scipy, scikit-learn, statsmodels and matplotlib already imported. javascript: \
                          QuickJS (ES2023) with console, timers, require of the program's files, fs reads of /data, \
                          readline. lua: Lua 5.4.")]
    async fn list_languages(&self) -> CallToolResult {
        let languages: Vec<_> = Language::ALL
            .into_iter()
            .map(|l| json!({ "name": l.name(), "aliases": l.spec().aliases, "file": l.main_file() }))
            .collect();
        let names: Vec<&str> = Language::ALL.into_iter().map(Language::name).collect();
        let mut result = CallToolResult::structured(json!({ "languages": languages }));
        result.content = vec![ContentBlock::text(format!("Languages: {}. {SANDBOX}", names.join(", ")))];
        result
    }

    #[tool(description = "Runs a program once, in a fresh sandbox, and returns its stdout, stderr, exit code, \
                          how it ended (reason: exit, error, timeout, memory, fuel, output-limit, killed) and the \
                          value of its last line when that is an expression (as a notebook cell shows it; in Lua, \
                          what the chunk returns). Nothing is kept after it ends: for state kept between calls use \
                          session_start. A matplotlib figure saved with sandlot.set_placeholder(name, fig) comes \
                          back as an image. Code runs in a WebAssembly sandbox: no network, no host files (only \
                          read-only datasets under /data), no host environment, no subprocesses, no threads; each \
                          run has a wall-clock limit, a memory limit and 1 MiB of output.")]
    async fn run_code(
        &self,
        Parameters(request): Parameters<RunCode>,
        context: RequestContext<RoleServer>,
    ) -> CallToolResult {
        let client = caller(&context, &self.client);
        answer(self.run(&client, request).await)
    }

    #[tool(description = "Starts a session in a language: a sandbox that keeps its state between session_exec \
                          calls, as a notebook kernel does (variables, functions, imports; python-sci's pandas \
                          stays imported). Returns session_id. Each session_exec has the time limit; the session's \
                          memory limit counts everything it holds. A session unused for 10 minutes is closed; a \
                          client may hold 8 at once: close them with session_close when done.")]
    async fn session_start(
        &self,
        Parameters(request): Parameters<SessionStart>,
        context: RequestContext<RoleServer>,
    ) -> CallToolResult {
        answer(self.start(&caller(&context, &self.client), request).await)
    }

    #[tool(description = "Runs code in a session (from session_start), in the global scope of its earlier \
                          calls. Returns stdout, stderr, exit code, reason and the value of the last line when \
                          that is an expression (as a notebook cell shows it), and images for matplotlib figures \
                          saved with sandlot.set_placeholder(name, fig). An error in the code leaves the session \
                          as it was; a time or memory limit ends it (alive: false).")]
    async fn session_exec(
        &self,
        Parameters(request): Parameters<SessionExec>,
        context: RequestContext<RoleServer>,
    ) -> CallToolResult {
        let client = caller(&context, &self.client);
        #[cfg(feature = "cluster")]
        if let Some(elsewhere) = self.elsewhere(&client, "session_exec", request.session_id.as_deref(), &request).await
        {
            return answer(elsewhere);
        }
        answer(self.exec(&client, request).await)
    }

    #[tool(description = "Reads a placeholder a session's code saved with sandlot.set_placeholder(name, value) \
                          (JavaScript: sandlot.setPlaceholder): its JSON value, or an image for a saved figure.")]
    async fn session_get(
        &self,
        Parameters(request): Parameters<SessionGet>,
        context: RequestContext<RoleServer>,
    ) -> CallToolResult {
        let client = caller(&context, &self.client);
        #[cfg(feature = "cluster")]
        if let Some(elsewhere) = self.elsewhere(&client, "session_get", request.session_id.as_deref(), &request).await {
            return answer(elsewhere);
        }
        answer(self.get(&client, request))
    }

    #[tool(description = "Lists the files a session's code wrote under /tmp, its scratch folder (the only place \
                          code may write: at most 16 MiB and 256 files, private to the session, gone with it).")]
    async fn session_files(
        &self,
        Parameters(request): Parameters<SessionFiles>,
        context: RequestContext<RoleServer>,
    ) -> CallToolResult {
        let client = caller(&context, &self.client);
        #[cfg(feature = "cluster")]
        if let Some(elsewhere) = self.elsewhere(&client, "session_files", request.session_id.as_deref(), &request).await
        {
            return answer(elsewhere);
        }
        answer(self.files(&client, request))
    }

    #[tool(description = "Reads a file a session's code wrote under /tmp: as text when it is UTF-8, as base64 \
                          otherwise, and as an image for a PNG (e.g. plt.savefig('/tmp/plot.png')). At most 4 MiB.")]
    async fn session_file(
        &self,
        Parameters(request): Parameters<SessionFile>,
        context: RequestContext<RoleServer>,
    ) -> CallToolResult {
        let client = caller(&context, &self.client);
        #[cfg(feature = "cluster")]
        if let Some(elsewhere) = self.elsewhere(&client, "session_file", request.session_id.as_deref(), &request).await
        {
            return answer(elsewhere);
        }
        answer(self.file(&client, request))
    }

    #[tool(description = "Closes a session: stops what it is running and frees its sandbox.")]
    async fn session_close(
        &self,
        Parameters(request): Parameters<SessionClose>,
        context: RequestContext<RoleServer>,
    ) -> CallToolResult {
        let client = caller(&context, &self.client);
        #[cfg(feature = "cluster")]
        if let Some(elsewhere) = self.elsewhere(&client, "session_close", request.session_id.as_deref(), &request).await
        {
            return answer(elsewhere);
        }
        answer(self.close(&client, request).await)
    }
}

/// Over HTTP the request's client (its token, else its address); over stdio `local`.
fn caller(context: &RequestContext<RoleServer>, local: &Client) -> Client {
    let parts = context.extensions.get::<axum::http::request::Parts>();
    parts.and_then(|p| p.extensions.get::<Client>().cloned()).unwrap_or_else(|| local.clone())
}

fn answer(result: Result<CallToolResult, String>) -> CallToolResult {
    result.unwrap_or_else(|why| CallToolResult::error(vec![ContentBlock::text(why)]))
}

/// Images at most in one result.
const MAX_IMAGES: usize = 8;

/// A placeholder holding a PNG, as `sandlot.set_placeholder` saves a matplotlib figure.
#[derive(Deserialize)]
struct Png {
    r#type: String,
    base64: String,
}

/// Whether a file's bytes are a PNG.
fn is_png(bytes: &[u8]) -> bool {
    bytes.starts_with(b"\x89PNG\r\n\x1a\n")
}

fn base64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn png(json: &RawValue) -> Option<String> {
    // Only values that can be one are parsed.
    if !json.get().starts_with('{') || !json.get().contains("image/png") {
        return None;
    }
    serde_json::from_str::<Png>(json.get()).ok().filter(|p| p.r#type == "image/png").map(|p| p.base64)
}

/// A run's or a cell's result: text for the model, the same as structured
/// content (plus `extra`), and an image per PNG placeholder it saved.
fn outcome_result(
    stdout: &[u8],
    stderr: &[u8],
    outcome: &RunOutcome,
    saved: &BTreeMap<String, Arc<RawValue>>,
    extra: serde_json::Value,
) -> CallToolResult {
    let (stdout, stderr) = (String::from_utf8_lossy(stdout), String::from_utf8_lossy(stderr));
    let images: Vec<(&String, String)> =
        saved.iter().filter_map(|(name, json)| png(json).map(|data| (name, data))).take(MAX_IMAGES).collect();
    let mut structured = json!({
        "stdout": stdout,
        "stderr": stderr,
        "exit_code": outcome.exit_code,
        "reason": outcome.reason.as_str(),
        "message": outcome.message,
        "value": outcome.value,
        "wall_time_ms": outcome.wall_time.as_millis() as u64,
        "images": images.iter().map(|(name, _)| name.as_str()).collect::<Vec<_>>(),
    });
    if let (Some(fields), serde_json::Value::Object(more)) = (structured.as_object_mut(), extra) {
        fields.extend(more);
    }
    let mut text = format!("exit code {} ({})", outcome.exit_code, outcome.reason);
    if let Some(message) = &outcome.message {
        text.push_str(&format!(": {message}"));
    }
    for (name, stream) in [("stdout", &stdout), ("stderr", &stderr)] {
        if !stream.is_empty() {
            text.push_str(&format!("\n--- {name} ---\n{stream}"));
        }
    }
    if let Some(value) = &outcome.value {
        text.push_str(&format!("\n--- value ---\n{value}"));
    }
    let mut result = CallToolResult::structured(structured);
    result.content = vec![ContentBlock::text(text)];
    result.content.extend(images.into_iter().map(|(_, data)| ContentBlock::image(data, "image/png")));
    result
}

impl RunCode {
    /// The run asked for: its language, program, and `options` with its
    /// time limit and input.
    fn checked(self, options: SessionOptions) -> Result<(Language, Program, SessionOptions), String> {
        let language = language("run_code", self.language)?;
        let code = self.code.ok_or("run_code needs \"code\": the program's source")?;
        let mut options = with_timeout(options, self.timeout_s)?;
        options.stdin = self.stdin.map_or(Stdin::Closed, |text| Stdin::Data(text.into()));
        let mut program = Program::single(language.main_file(), code);
        let files = self.files.unwrap_or_default().into_iter();
        program.files.extend(files.map(|(name, content)| SourceFile { name, content }));
        Ok((language, program, options))
    }
}

impl SessionStart {
    fn checked(self, options: SessionOptions) -> Result<(Language, SessionOptions), String> {
        Ok((language("session_start", self.language)?, with_timeout(options, self.timeout_s)?))
    }
}

/// Reads `arguments` as each tool's and checks them as the tool does, but
/// runs nothing (the fuzz target `mcp_arguments`).
pub(crate) fn check_arguments(arguments: &[u8]) {
    let options = SessionOptions { limits: Some(crate::Limits::default()), ..SessionOptions::default() };
    if let Ok(request) = serde_json::from_slice::<RunCode>(arguments)
        && let Ok((_, program, _)) = request.checked(options.clone())
    {
        let _ = program.validated();
    }
    if let Ok(request) = serde_json::from_slice::<SessionStart>(arguments) {
        let _ = request.checked(options);
    }
    if let Ok(request) = serde_json::from_slice::<SessionExec>(arguments) {
        let _ = session_id("session_exec", request.session_id);
    }
    if let Ok(request) = serde_json::from_slice::<SessionFile>(arguments) {
        let _ = session_id("session_file", request.session_id);
    }
    if let Ok(request) = serde_json::from_slice::<SessionGet>(arguments) {
        let _ = session_id("session_get", request.session_id);
    }
}

/// The shortest `timeout_s` taken.
const MIN_TIMEOUT: Duration = Duration::from_millis(1);

/// `timeout_s` applied to `options`' limits: it can only lower them (a
/// larger one, however large, is the server's limit).
fn with_timeout(mut options: SessionOptions, timeout_s: Seconds) -> Result<SessionOptions, String> {
    let mut limits = options.limits.clone().unwrap_or_default();
    let refused = |what: &str| {
        format!(
            "timeout_s must be a number of seconds from {} to the server's limit, {} (a larger one is the limit); \
             it was {what}",
            MIN_TIMEOUT.as_secs_f64(),
            limits.wall_clock.as_secs_f64()
        )
    };
    match timeout_s.0 {
        None => {}
        Some(Err(what)) => return Err(refused(what)),
        Some(Ok(seconds)) => {
            // Shown short: -1e308 is not 309 digits, nor 1e-300 301.
            let plain = seconds == 0.0 || (1e-3..1e9).contains(&seconds.abs());
            let shown = || if plain { seconds.to_string() } else { format!("{seconds:e}") };
            if seconds.is_nan() || seconds < MIN_TIMEOUT.as_secs_f64() {
                return Err(refused(&shown()));
            }
            // Infinity and anything past the limit is the limit, never converted.
            if seconds < limits.wall_clock.as_secs_f64() {
                let wanted = Duration::try_from_secs_f64(seconds).map_err(|_| refused(&shown()))?;
                limits.wall_clock = limits.wall_clock.min(wanted);
            }
        }
    }
    options.limits = Some(limits);
    Ok(options)
}

fn language(tool: &str, name: Option<String>) -> Result<Language, String> {
    let names = || Language::ALL.into_iter().map(Language::name).collect::<Vec<_>>().join(", ");
    name.ok_or_else(|| format!("{tool} needs \"language\": one of {}", names()))?
        .parse()
        .map_err(|e: crate::language::UnknownLanguage| e.to_string())
}

fn session_id(tool: &str, id: Option<String>) -> Result<String, String> {
    id.ok_or_else(|| format!("{tool} needs \"session_id\": the id session_start returned"))
}

/// A session error as the model should read it.
fn session_error(id: &str, e: &crate::error::Error) -> String {
    match e {
        crate::error::Error::UnknownSession(_) => format!(
            "no session {id}: it was never started, was closed, or ended (idle for 10 minutes, or a limit); \
             start one with session_start"
        ),
        other => super::public_message(other),
    }
}

/// A session tool's call sent to the node that holds the session.
#[cfg(feature = "cluster")]
#[derive(Serialize, Deserialize)]
struct Forwarded {
    tool: String,
    arguments: Box<RawValue>,
}

#[cfg(feature = "cluster")]
impl McpTools {
    /// In cluster mode, the answer of the node that holds session `id`,
    /// when another node does; `None`: it is answered here.
    async fn elsewhere(
        &self,
        client: &Client,
        tool: &str,
        id: Option<&str>,
        arguments: &impl Serialize,
    ) -> Option<Result<CallToolResult, String>> {
        let cluster = self.cluster.as_ref()?;
        let node = cluster.owner_of(id?)?;
        let arguments = serde_json::value::to_raw_value(arguments).expect("arguments are JSON");
        let request = serde_json::to_vec(&Forwarded { tool: tool.into(), arguments }).expect("a call is JSON");
        match cluster.forward(&node, "mcp", client, request.into()).await {
            Ok(Some(reply)) => {
                Some(serde_json::from_slice(&reply).map_err(|e| format!("node {node} answered unreadably: {e}")))
            }
            // Its node has stopped, and its sessions with it: answered here.
            Ok(None) => None,
            Err(e) => Some(Err(super::public_message(&e))),
        }
    }

    /// Answers a session tool's call another node forwarded here
    /// (`elsewhere` there) for `client`: the `CallToolResult`'s JSON.
    pub(crate) async fn answer_forwarded(self, request: bytes::Bytes, client: Option<Client>) -> bytes::Bytes {
        let result = match (client, serde_json::from_slice::<Forwarded>(&request)) {
            (Some(client), Ok(call)) => self.call_here(&client, &call.tool, call.arguments.get()).await,
            (None, _) => Err("a forwarded call must name its client".into()),
            (_, Err(e)) => Err(format!("a forwarded call is unreadable: {e}")),
        };
        serde_json::to_vec(&answer(result)).expect("a tool result is JSON").into()
    }

    async fn call_here(&self, client: &Client, tool: &str, arguments: &str) -> Result<CallToolResult, String> {
        fn read<T: serde::de::DeserializeOwned>(arguments: &str) -> Result<T, String> {
            serde_json::from_str(arguments).map_err(|e| format!("the arguments are unreadable: {e}"))
        }
        match tool {
            "session_exec" => self.exec(client, read(arguments)?).await,
            "session_get" => self.get(client, read(arguments)?),
            "session_files" => self.files(client, read(arguments)?),
            "session_file" => self.file(client, read(arguments)?),
            "session_close" => self.close(client, read(arguments)?).await,
            other => Err(format!("{other} is not a session tool")),
        }
    }
}

impl McpTools {
    async fn run(&self, client: &Client, request: RunCode) -> Result<CallToolResult, String> {
        let (language, program, options) = request.checked(self.options.clone())?;
        #[cfg(feature = "cluster")]
        let cluster = self.cluster.as_ref();
        #[cfg(not(feature = "cluster"))]
        let cluster = None;
        let started = super::one_shot(&self.registry, cluster, client, Face::Mcp, language, program, options)
            .await
            .map_err(|e| super::public_message(&e))?;
        let placeholders = started.entry.placeholders().clone();
        let run = started.events.collect().await;
        let Some(Collected { stdout, stderr, outcome }) = run else {
            return Err("the run ended without reporting its end (the server is stopping?)".into());
        };
        Ok(outcome_result(&stdout, &stderr, &outcome, &placeholders.snapshot(), json!({})))
    }

    async fn start(&self, client: &Client, request: SessionStart) -> Result<CallToolResult, String> {
        let (language, options) = request.checked(self.options.clone())?;
        let id = self.notebooks.start(client, language, options).await.map_err(|e| super::public_message(&e))?;
        let mut result = CallToolResult::structured(json!({ "session_id": id, "language": language.name() }));
        result.content = vec![ContentBlock::text(format!(
            "session_id: {id} ({language}); run code in it with session_exec, close it with session_close"
        ))];
        Ok(result)
    }

    async fn exec(&self, client: &Client, request: SessionExec) -> Result<CallToolResult, String> {
        let id = session_id("session_exec", request.session_id)?;
        let code = request.code.ok_or("session_exec needs \"code\": the code to run next")?;
        let cell = self.notebooks.exec(client, &id, code).await.map_err(|e| session_error(&id, &e))?;
        let written: Vec<&str> = cell.written.iter().map(|f| f.path.as_str()).collect();
        let extra = json!({ "alive": cell.alive, "files_written": written });
        let mut result = outcome_result(&cell.stdout, &cell.stderr, &cell.outcome, &cell.saved, extra);
        // PNG files the cell wrote come back as images, as saved figures do.
        let pngs = cell.written.iter().filter(|f| f.path.ends_with(".png") && f.bytes <= MAX_FETCH_BYTES);
        for file in pngs.take(MAX_IMAGES) {
            if let Ok(bytes) = self.notebooks.file(client, &id, &file.path, MAX_FETCH_BYTES)
                && is_png(&bytes)
            {
                result.content.push(ContentBlock::image(base64(&bytes), "image/png"));
            }
        }
        if !cell.alive {
            result.content.push(ContentBlock::text("The session has ended: start a new one with session_start."));
        }
        Ok(result)
    }

    fn files(&self, client: &Client, request: SessionFiles) -> Result<CallToolResult, String> {
        let id = session_id("session_files", request.session_id)?;
        let files = self.notebooks.files(client, &id).map_err(|e| session_error(&id, &e))?;
        let text = match files.is_empty() {
            true => "no files under /tmp".to_string(),
            false => {
                files.iter().map(|f| format!("/tmp/{} ({} bytes)", f.path, f.bytes)).collect::<Vec<_>>().join("\n")
            }
        };
        let mut result = CallToolResult::structured(json!({ "files": files }));
        result.content = vec![ContentBlock::text(text)];
        Ok(result)
    }

    fn file(&self, client: &Client, request: SessionFile) -> Result<CallToolResult, String> {
        let id = session_id("session_file", request.session_id)?;
        let path = request.path.ok_or("session_file needs \"path\": the file's path under /tmp")?;
        let bytes = self.notebooks.file(client, &id, &path, MAX_FETCH_BYTES).map_err(|e| session_error(&id, &e))?;
        let (structured, content) = match std::str::from_utf8(&bytes) {
            Ok(text) if !is_png(&bytes) => {
                (json!({ "path": path, "bytes": bytes.len(), "text": text }), ContentBlock::text(text))
            }
            _ => {
                let data = base64(&bytes);
                let content = match is_png(&bytes) {
                    true => ContentBlock::image(data.clone(), "image/png"),
                    false => ContentBlock::text(format!("{} bytes, base64:\n{data}", bytes.len())),
                };
                (json!({ "path": path, "bytes": bytes.len(), "base64": data }), content)
            }
        };
        let mut result = CallToolResult::structured(structured);
        result.content = vec![content];
        Ok(result)
    }

    fn get(&self, client: &Client, request: SessionGet) -> Result<CallToolResult, String> {
        let id = session_id("session_get", request.session_id)?;
        let name = request.name.ok_or("session_get needs \"name\": the placeholder's name")?;
        let value = self.notebooks.placeholder(client, &id, &name).map_err(|e| session_error(&id, &e))?;
        let Some(json) = value else {
            return Err(format!("session {id} has no placeholder {name:?}"));
        };
        let value: serde_json::Value = serde_json::from_str(json.get()).map_err(|e| e.to_string())?;
        let mut result = CallToolResult::structured(json!({ "name": name, "value": value }));
        result.content = match png(&json) {
            Some(data) => vec![ContentBlock::image(data, "image/png")],
            None => vec![ContentBlock::text(json.get().to_string())],
        };
        Ok(result)
    }

    async fn close(&self, client: &Client, request: SessionClose) -> Result<CallToolResult, String> {
        let id = session_id("session_close", request.session_id)?;
        self.notebooks.close(client, &id).await.map_err(|e| session_error(&id, &e))?;
        let mut result = CallToolResult::structured(json!({ "session_id": id, "closed": true }));
        result.content = vec![ContentBlock::text(format!("session {id} closed"))];
        Ok(result)
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for McpTools {
    fn get_info(&self) -> McpServerConfig {
        McpServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("sandlot", env!("CARGO_PKG_VERSION")))
            .with_instructions(format!(
                "sandlot runs untrusted Python, JavaScript and Lua. Call list_languages for what each has, then \
             run_code for a one-off run, or session_start and session_exec to keep state between calls. {SANDBOX}"
            ))
    }
}

/// The MCP service for `/mcp`, over `tools`, stateless.
pub(crate) fn http_service(
    tools: McpTools,
) -> rmcp::transport::streamable_http_server::StreamableHttpService<
    McpTools,
    rmcp::transport::streamable_http_server::session::local::LocalSessionManager,
> {
    use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
    // Host and Origin are checked by the server's own guard before this.
    let mut config = StreamableHttpServerConfig::default().disable_allowed_hosts().with_max_request_body_bytes(1 << 20);
    // Stateless: no MCP session is held per client (a map any client could
    // fill by initialising again and again); the tools keep no state in the
    // transport, and each answer is one JSON body.
    config.legacy_session_mode = false;
    config.json_response = true;
    StreamableHttpService::new(move || Ok(tools.clone()), Arc::default(), config)
}
