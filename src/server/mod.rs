//! `sandlot serve`: the HTTP and WebSocket faces over one session registry.
//!
//! Each face is a thin adapter in its own file: it parses its wire messages
//! into calls on the `Registry` and turns `SessionEvent`s into its wire
//! messages. No protocol type reaches the sandbox.
//!
//! | path            | face                                   | file          |
//! |-----------------|----------------------------------------|---------------|
//! | `GET /v1/ws`    | ranna ops and events                   | `ranna.rs`    |
//! | `POST /v1/exec`, `GET /v1/spec`, `GET /v1/info` | ranna REST | `ranna.rs`  |
//! | `GET /`         | runtime actions                        | `actions.rs`  |
//! | `GET /processor`| processor lifecycle                    | `processor.rs`|
//! | `POST`/`PUT /v1/{csv,mnist}/dataset`, `GET /v1/dataset`, `GET /v1/dataset/progress`, `DELETE /v1/dataset`, and `GET /` with `"target":"file_upload"` | datasets | `datasets.rs` |
//!
//! Tokens (`auth.rs`) guard every REST route and every socket's first message.
//! With a data folder, finished runs and datasets are kept in it (`store.rs`)
//! and survive a restart.

pub(crate) mod actions;
mod auth;
pub(crate) mod datasets;
pub(crate) mod direct_io;
mod guard;
pub(crate) mod json;
mod listener;
#[cfg(feature = "mcp")]
pub mod mcp;
pub(crate) mod processor;
pub(crate) mod proto;
pub(crate) mod ranna;
mod socket;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::Language;
use crate::datasets::{DatasetLimits, Datasets};
use crate::folder::DataFolder;
use crate::limits::Limits;
#[cfg(feature = "mcp")]
use crate::registry::Client;
use crate::registry::{Registry, RegistryConfig};
use crate::runtime::{Runtime, SessionOptions};
use crate::store::Store;
use auth::Tokens;
pub(crate) use json::{Fields, IdText, field, parse_fields_off_thread, parse_lenient, parse_typed_off_thread};
pub(crate) use listener::Peer;

/// Settings of the server.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Limits of every run started through the server.
    pub limits: Limits,
    pub registry: RegistryConfig,
    /// Largest WebSocket message or request body handled; a larger one gets an
    /// error reply. Past twice this (plus 1 MiB) the socket is closed with 1009.
    pub max_message_bytes: usize,
    /// Runs one connection may have going at once.
    pub max_runs_per_connection: usize,
    /// Bytes of a run's output held for its client at most; while the client
    /// does not read, the run's guest waits.
    pub output_queue_bytes: usize,
    /// How long running guests get to report their end when the server stops.
    pub shutdown_grace: Duration,
    /// Where finished runs and datasets are kept (`state.redb`, `datasets/`,
    /// `uploads/`); without one, nothing outlives the process and there are no datasets.
    pub data_dir: Option<PathBuf>,
    /// Accepted tokens; none means no token is asked for, and then `serve`
    /// only listens on loopback.
    pub tokens: Vec<String>,
    /// How long records of finished runs, and unfinished uploads, are kept.
    pub retention: Duration,
    /// The datasets' quotas.
    pub datasets: DatasetLimits,
    /// Connections held at once (fewer if the process's open-files limit
    /// would not leave enough for sessions and the store).
    pub max_connections: usize,
    /// Connections held at once from one client address (an IPv6 /64 is one address).
    pub max_connections_per_address: usize,
    /// How long a client has to send an HTTP request's headers, and how long
    /// an idle keep-alive connection is kept.
    pub header_timeout: Duration,
    /// How long a socket that must show a token has to send its first message.
    pub first_message_timeout: Duration,
    /// A socket with no run going that sends nothing for this long is closed.
    pub idle_timeout: Duration,
    /// Host names the server answers to besides IP addresses and localhost
    /// (a browser page on any other name could be a DNS rebinding attack).
    pub allowed_hosts: Vec<String>,
    /// Web origins (`https://example.org`) whose pages may use the server,
    /// besides the server's own.
    pub allowed_origins: Vec<String>,
    /// The user to become once the port is bound (the server started as root).
    pub run_as: Option<crate::harden::RunAs>,
    /// Instances kept ready per language (see `Runtime::set_warm_instances`);
    /// `None` leaves the runtime's setting.
    pub warm_instances: Option<usize>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8765)),
            limits: Limits::default(),
            registry: RegistryConfig::default(),
            max_message_bytes: 8 << 20,
            max_runs_per_connection: 32,
            output_queue_bytes: 64 << 10,
            shutdown_grace: Duration::from_secs(5),
            data_dir: None,
            tokens: Vec::new(),
            retention: Duration::from_secs(7 * 24 * 3600),
            datasets: DatasetLimits::default(),
            max_connections: 1024,
            max_connections_per_address: 128,
            header_timeout: Duration::from_secs(10),
            first_message_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            allowed_hosts: Vec::new(),
            allowed_origins: Vec::new(),
            run_as: None,
            warm_instances: None,
        }
    }
}

impl ServerConfig {
    fn hard_message_limit(&self) -> usize {
        self.max_message_bytes.saturating_mul(2).saturating_add(1 << 20)
    }

    /// The connection cap in force: `max_connections`, lowered so that the
    /// open-files limit (`files`) keeps a reserve for what is not a
    /// connection: the store and datasets, the guests' cache files, and each
    /// running or live session's folders (python-sci holds five).
    fn connection_cap(&self, files: Option<u64>) -> usize {
        let Some(files) = files else { return self.max_connections };
        let sessions = self.registry.max_running.saturating_add(self.registry.max_live);
        let reserve = 256u64.saturating_add(2u64.saturating_mul(sessions as u64));
        let cap = files.saturating_sub(reserve).min(self.max_connections as u64) as usize;
        if cap < self.max_connections {
            tracing::warn!(
                files,
                reserve,
                connections = cap.max(16),
                "the open-files limit is low for this configuration: connections are capped lower; \
                 raise it (ulimit -n) to hold more"
            );
        }
        cap.max(16)
    }
}

/// What every handler can reach.
#[derive(Clone)]
pub(crate) struct App {
    pub(crate) registry: Registry,
    pub(crate) config: Arc<ServerConfig>,
    pub(crate) tokens: Arc<Tokens>,
    /// Present when the server has a data folder.
    pub(crate) datasets: Option<Arc<Datasets>>,
    /// Becomes true when the server starts to stop.
    pub(crate) closing: watch::Receiver<bool>,
    pub(crate) allowed: Arc<guard::Allowed>,
}

impl App {
    /// Options for a session started by a face: the server's limits and,
    /// with a data folder, the datasets at `/data`.
    pub(crate) fn session_options(&self) -> SessionOptions {
        SessionOptions {
            limits: Some(self.config.limits.clone()),
            data: self.datasets.as_ref().map(|d| d.mount_dir().to_path_buf()),
            output_queue_bytes: Some(self.config.output_queue_bytes),
            ..SessionOptions::default()
        }
    }
}

/// Prepares the guests, binds, prints `listening on http://ADDR`, and serves
/// until `shutdown` resolves; then stops running guests, reports their end to
/// their clients, and returns.
pub async fn serve(
    runtime: Runtime,
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if config.tokens.is_empty() && !config.listen.ip().is_loopback() {
        return Err(std::io::Error::other(format!(
            "refusing to listen on {} without a token: anyone who can reach it could run code here. \
             Set SANDLOT_TOKENS or `tokens` in the --config file, or listen on 127.0.0.1",
            config.listen
        )));
    }
    // A stop asked for while the guests are compiled (minutes, the first
    // time) is done at once: a compile left behind is never half-written.
    let mut shutdown = std::pin::pin!(shutdown);
    let prepared = async {
        for language in Language::ALL {
            runtime.prepare(language).await?;
        }
        Ok::<_, crate::Error>(())
    };
    tokio::select! {
        prepared = prepared => prepared.map_err(std::io::Error::other)?,
        () = &mut shutdown => {
            tracing::info!("stopped before serving");
            return Ok(());
        }
    }
    let listener = TcpListener::bind(config.listen).await?;
    let address = listener.local_addr()?;
    match &config.run_as {
        Some(user) => {
            user.become_user(config.data_dir.as_deref()).map_err(std::io::Error::other)?;
            tracing::info!(user = %user.name, "the port is bound; running as {} from now on", user.name);
        }
        None if crate::harden::is_root() => tracing::warn!("{}", crate::harden::root_warning()),
        None => {}
    }
    let ready = move || {
        println!("listening on http://{address}");
        tracing::info!(%address, "listening");
    };
    serve_ready(runtime, config, listener, shutdown, ready).await
}

/// Serves on a bound listener (the caller prepares guests and reports the
/// address), as `serve` does.
pub async fn serve_on(
    runtime: Runtime,
    config: ServerConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_ready(runtime, config, listener, shutdown, || {}).await
}

/// How long a starting server waits for its first warm instances.
const WARM_AT_START: Duration = Duration::from_secs(10);

/// `serve_on`, calling `ready` once the store, the datasets and the first
/// warm instances are in place, just before the first connection is taken.
async fn serve_ready(
    runtime: Runtime,
    config: ServerConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
    ready: impl FnOnce(),
) -> std::io::Result<()> {
    let warm = runtime.clone();
    let (registry, datasets) = match &config.data_dir {
        Some(dir) => {
            let folder = Arc::new(DataFolder::open(dir).map_err(std::io::Error::other)?);
            let store = Store::open(&folder).map_err(std::io::Error::other)?;
            let datasets =
                Datasets::open(folder, store.clone(), config.datasets.clone()).map_err(std::io::Error::other)?;
            let registry =
                Registry::persistent(runtime, config.registry.clone(), store.clone()).map_err(std::io::Error::other)?;
            let datasets = Arc::new(datasets);
            prune(store.clone(), datasets.clone(), config.retention).await;
            tokio::spawn(retire(store, datasets.clone(), config.retention));
            (registry, Some(datasets))
        }
        None => (Registry::new(runtime, config.registry.clone()), None),
    };
    let (closing_tx, closing) = watch::channel(false);
    let admission = listener::Admission::new(
        config.connection_cap(listener::raise_file_limit()),
        config.max_connections_per_address,
    );
    let app = App {
        registry: registry.clone(),
        tokens: Arc::new(Tokens::new(&config.tokens)),
        allowed: Arc::new(guard::Allowed::new(&config.allowed_hosts, &config.allowed_origins)),
        config: Arc::new(config),
        datasets,
        closing: closing.clone(),
    };
    // Sessions start in instances made ahead (`warm.rs`), from the first:
    // made for exactly what the faces' sessions ask for.
    if let Some(count) = app.config.warm_instances {
        warm.set_warm_instances(count);
    }
    let options = app.session_options();
    let limits = options.limits.unwrap_or_default();
    for language in Language::ALL {
        warm.keep_warm(language, options.data.as_deref(), &limits);
    }
    let started = tokio::time::Instant::now();
    let warmed = async {
        for language in Language::ALL {
            if !warm.wait_warm(language, WARM_AT_START.saturating_sub(started.elapsed())).await {
                tracing::warn!(
                    "the first warm instances took over {WARM_AT_START:?}; serving without waiting for them"
                );
                break;
            }
        }
    };
    // A stop asked for while warming up is done at once: nothing has run yet.
    let mut shutdown = std::pin::pin!(shutdown);
    tokio::select! {
        () = warmed => {}
        () = &mut shutdown => {
            tracing::info!("stopped before serving");
            return Ok(());
        }
    }
    ready();
    let accepting = tokio::spawn(listener::accept(
        listener,
        router(app.clone()),
        admission.clone(),
        app.config.header_timeout,
        closing,
    ));
    shutdown.await;
    tracing::info!("shutting down: stopping running guests");
    let _ = closing_tx.send(true);
    registry.shutdown(app.config.shutdown_grace).await;
    let _ = accepting.await;
    // Sockets send their last events (how their runs ended), then close.
    admission.drained(Duration::from_secs(5)).await;
    tracing::info!("stopped");
    Ok(())
}

/// Forgets finished runs and unfinished uploads past their retention: hourly
/// (`serve_on` does it once before it serves).
async fn retire(store: Arc<Store>, datasets: Arc<Datasets>, retention: Duration) {
    let hour = Duration::from_secs(3600);
    let mut hourly = tokio::time::interval_at(tokio::time::Instant::now() + hour, hour);
    loop {
        hourly.tick().await;
        prune(store.clone(), datasets.clone(), retention).await;
    }
}

async fn prune(store: Arc<Store>, datasets: Arc<Datasets>, retention: Duration) {
    let Some(cutoff) = SystemTime::now().checked_sub(retention) else { return };
    let pruned = tokio::task::spawn_blocking(move || (store.prune_runs(cutoff), datasets.prune_unfinished(cutoff)));
    match pruned.await {
        Ok((Ok(runs), uploads)) if runs + uploads > 0 => {
            tracing::info!(runs, uploads, "forgot records and uploads past their retention")
        }
        Ok((Err(e), _)) => tracing::error!(error = %e, "could not forget old runs"),
        _ => {}
    }
}

/// The largest body of a dataset request (a name, sizes, uuids).
const DATASET_BODY_BYTES: usize = 64 << 10;

fn router(app: App) -> Router {
    let body_limit = app.config.max_message_bytes;
    // Sockets check their token in their first message (`socket.rs`).
    // Hanami's SDK uses /control/v1, the seed /v1: both. Dataset requests
    // are a few fields: their bodies get a small limit.
    let mut dataset_routes = Router::new();
    for prefix in ["/v1", "/control/v1"] {
        dataset_routes = dataset_routes
            .route(&format!("{prefix}/csv/dataset"), post(datasets::create_csv).put(datasets::finalise_csv))
            .route(&format!("{prefix}/mnist/dataset"), post(datasets::create_mnist).put(datasets::finalise_mnist))
            .route(&format!("{prefix}/dataset"), get(datasets::get).delete(datasets::delete))
            .route(&format!("{prefix}/dataset/all"), get(datasets::list))
            .route(&format!("{prefix}/dataset/progress"), get(datasets::progress))
            .route(&format!("{prefix}/cluster/set_mode"), axum::routing::put(direct_io::set_mode));
    }
    let dataset_routes = dataset_routes.layer(DefaultBodyLimit::max(DATASET_BODY_BYTES));
    let rest = Router::new().route("/v1/exec", post(ranna::exec));
    // MCP over streamable HTTP: behind the same tokens (its client is the
    // token's or the address's, as for REST).
    #[cfg(feature = "mcp")]
    let rest = rest.route_service(
        "/mcp",
        mcp::http_service(mcp::McpTools::new(app.registry.clone(), app.session_options(), Client::Local)),
    );
    let rest = rest
        .route("/v1/spec", get(ranna::spec))
        .route("/v1/info", get(ranna::info))
        .merge(dataset_routes)
        .route_layer(axum::middleware::from_fn_with_state(app.clone(), auth::require_token));
    Router::new()
        .route("/", get(actions::websocket))
        .route("/v1/ws", get(ranna::websocket))
        .route("/processor", get(processor::websocket))
        .merge(rest)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn_with_state(app.clone(), guard::check))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(app)
}

async fn not_found(uri: axum::http::Uri) -> impl IntoResponse {
    (
        StatusCode::NOT_FOUND,
        axum::Json(json!({
            "code": 404,
            "error": format!("no such endpoint: {}", uri.path()),
            "context": "see GET /v1/spec, POST /v1/exec, the /v1/dataset routes, WebSockets at /, /v1/ws and /processor",
        })),
    )
}

/// What a client is told of an error. Errors of the server itself (storage,
/// guest loading, the engine) can name host paths and internals: the client
/// gets a generic message with a reference, the log gets the detail.
pub(crate) fn public_message(error: &crate::Error) -> String {
    use crate::Error;
    match error {
        Error::GuestLoad { .. } | Error::Instantiate { .. } | Error::Engine(_) | Error::Storage(_) => {
            let reference = uuid::Uuid::new_v4().simple().to_string();
            let reference = &reference[..12];
            tracing::error!(reference, error = %error, "a request failed inside the server");
            format!("internal server error (reference {reference}); the server's log has the details")
        }
        other => other.to_string(),
    }
}

/// Milliseconds since the Unix epoch, as the processor face writes times.
pub(crate) fn now_ms() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0)
}

/// Turns a stream of output chunks into text without splitting a UTF-8
/// character across two messages; invalid bytes become U+FFFD.
#[derive(Default)]
pub(crate) struct Utf8Chunks {
    carry: Vec<u8>,
}

impl Utf8Chunks {
    pub(crate) fn push(&mut self, bytes: &[u8]) -> String {
        self.carry.extend_from_slice(bytes);
        let keep = match std::str::from_utf8(&self.carry) {
            Ok(_) => 0,
            Err(e) if e.error_len().is_none() => self.carry.len() - e.valid_up_to(),
            Err(_) => 0,
        };
        let tail = self.carry.split_off(self.carry.len() - keep);
        let text = String::from_utf8_lossy(&self.carry).into_owned();
        self.carry = tail;
        text
    }

    pub(crate) fn finish(&mut self) -> String {
        let text = String::from_utf8_lossy(&self.carry).into_owned();
        self.carry.clear();
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_leave_file_descriptors_for_sessions() {
        let config = ServerConfig::default();
        assert_eq!(config.connection_cap(None), 1024);
        assert_eq!(config.connection_cap(Some(1 << 20)), 1024, "a high limit leaves the configured cap");
        // 64 running + 1000 live sessions keep 256 + 2 × 1064 descriptors in reserve.
        assert_eq!(config.connection_cap(Some(3000)), 3000 - 2384);
        assert_eq!(config.connection_cap(Some(1024)), 16, "a low limit still serves a few");
    }

    #[test]
    fn utf8_chunks_never_split_a_character() {
        let mut chunks = Utf8Chunks::default();
        let wave = "👋".as_bytes();
        assert_eq!(chunks.push(&wave[..2]), "");
        assert_eq!(chunks.push(&wave[2..]), "👋");
        assert_eq!(chunks.push(b"a\xffb"), "a\u{fffd}b");
        assert_eq!(chunks.push(&wave[..1]), "");
        assert_eq!(chunks.finish(), "\u{fffd}");
    }
}
