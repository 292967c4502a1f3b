//! The agents' face (CONTRACT face 6): a Model Context Protocol server on the
//! official Rust SDK (rmcp), over stdio (`sandlot mcp`) and as streamable
//! HTTP at `/mcp` under `sandlot serve` (behind the same tokens, Host and
//! Origin checks as every REST route).
//!
//! Tools so far: `list_languages` and `run_code` (a one-shot run, as ranna's
//! EXEC: nothing of it is kept). Their descriptions are written for a model
//! to read. Bad arguments are tool errors (`isError`), never protocol errors,
//! so the model reads what to change.

use std::sync::Arc;
use std::time::Duration;

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{CallToolResult, ContentBlock, Implementation, ServerCapabilities, ServerConfig as McpServerConfig};
use rmcp::service::RequestContext;
use rmcp::{RoleServer, ServerHandler, schemars, tool, tool_handler, tool_router};
use serde::Deserialize;
use serde_json::json;

use crate::input::Stdin;
use crate::language::Language;
use crate::program::Program;
use crate::registry::{Client, Collected, Keep, Registry};
use crate::runtime::SessionOptions;

/// What every tool says about the sandbox, for the model deciding to call it.
const SANDBOX: &str = "Code runs in a WebAssembly sandbox: no network, no host files (only read-only datasets under \
                       /data), no host environment, no subprocesses, no threads. Each run has a wall-clock limit, a \
                       memory limit (256 MiB by default) and 1 MiB of output.";

/// The tools, over whichever transport.
#[derive(Clone)]
pub struct McpTools {
    registry: Registry,
    options: SessionOptions,
    /// Who the caller is when the transport does not say (stdio: the local user).
    client: Client,
    tool_router: ToolRouter<Self>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct RunCode {
    /// python, javascript, lua or python-sci (see list_languages).
    language: Option<String>,
    /// The program's source: one file, run as the main file.
    code: Option<String>,
    /// The program's whole standard input (it reads EOF after it); none if absent.
    stdin: Option<String>,
    /// Seconds the run may take, at most the server's limit (10 s by default).
    timeout_s: Option<f64>,
}

#[tool_router]
impl McpTools {
    /// Tools over `registry`, whose runs get `options` (the server's
    /// limits and datasets); callers the transport does not name are `client`.
    pub fn new(registry: Registry, options: SessionOptions, client: Client) -> Self {
        McpTools { registry, options, client, tool_router: Self::tool_router() }
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

    #[tool(description = "Runs a program once, in a fresh sandbox, and returns its stdout, stderr, exit code and \
                          how it ended (reason: exit, error, timeout, memory, fuel, output-limit, killed). Nothing \
                          is kept after it ends. Print what you want to see. Code runs in a WebAssembly sandbox: no \
                          network, no host files (only read-only datasets under /data), no host environment, no \
                          subprocesses, no threads; each run has a wall-clock limit, a memory limit and 1 MiB of \
                          output.")]
    async fn run_code(
        &self,
        Parameters(request): Parameters<RunCode>,
        context: RequestContext<RoleServer>,
    ) -> CallToolResult {
        // Over HTTP the request's client (its token, else its address); over stdio ours.
        let parts = context.extensions.get::<axum::http::request::Parts>();
        let client = parts.and_then(|p| p.extensions.get::<Client>().cloned()).unwrap_or_else(|| self.client.clone());
        match self.run(&client, request).await {
            Ok(result) => result,
            Err(why) => CallToolResult::error(vec![ContentBlock::text(why)]),
        }
    }
}

impl McpTools {
    async fn run(&self, client: &Client, request: RunCode) -> Result<CallToolResult, String> {
        let names = || Language::ALL.into_iter().map(Language::name).collect::<Vec<_>>().join(", ");
        let language: Language = request
            .language
            .ok_or_else(|| format!("run_code needs \"language\": one of {}", names()))?
            .parse()
            .map_err(|e: crate::language::UnknownLanguage| e.to_string())?;
        let code = request.code.ok_or("run_code needs \"code\": the program's source")?;
        let mut options = self.options.clone();
        let mut limits = options.limits.clone().unwrap_or_default();
        if let Some(seconds) = request.timeout_s {
            if !(seconds.is_finite() && seconds > 0.0) {
                return Err("timeout_s must be a positive number of seconds".into());
            }
            limits.wall_clock = limits.wall_clock.min(Duration::from_secs_f64(seconds));
        }
        options.limits = Some(limits);
        options.stdin = request.stdin.map_or(Stdin::Closed, |text| Stdin::Data(text.into()));
        let program = Program::single(language.main_file(), code);
        let started = self
            .registry
            .start(client, language, program, options, Keep::Nothing)
            .await
            .map_err(|e| super::public_message(&e))?;
        let run = started.events.collect().await;
        let Some(Collected { stdout, stderr, outcome }) = run else {
            return Err("the run ended without reporting its end (the server is stopping?)".into());
        };
        let (stdout, stderr) = (String::from_utf8_lossy(&stdout), String::from_utf8_lossy(&stderr));
        let structured = json!({
            "stdout": stdout,
            "stderr": stderr,
            "exit_code": outcome.exit_code,
            "reason": outcome.reason.as_str(),
            "message": outcome.message,
            "wall_time_ms": outcome.wall_time.as_millis() as u64,
        });
        let mut text = format!("exit code {} ({})", outcome.exit_code, outcome.reason);
        if let Some(message) = &outcome.message {
            text.push_str(&format!(": {message}"));
        }
        for (name, stream) in [("stdout", &stdout), ("stderr", &stderr)] {
            if !stream.is_empty() {
                text.push_str(&format!("\n--- {name} ---\n{stream}"));
            }
        }
        let mut result = CallToolResult::structured(structured);
        result.content = vec![ContentBlock::text(text)];
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
             run_code. {SANDBOX}"
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
