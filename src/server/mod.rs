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

mod actions;
mod auth;
mod datasets;
mod processor;
mod ranna;
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
use axum::serve::ListenerExt;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::Language;
use crate::datasets::Datasets;
use crate::limits::Limits;
use crate::registry::{Registry, RegistryConfig};
use crate::runtime::{Runtime, SessionOptions};
use crate::store::Store;
use auth::Tokens;

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
    /// The largest dataset file accepted.
    pub max_dataset_file_bytes: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8765)),
            limits: Limits::default(),
            registry: RegistryConfig::default(),
            max_message_bytes: 8 << 20,
            max_runs_per_connection: 32,
            shutdown_grace: Duration::from_secs(5),
            data_dir: None,
            tokens: Vec::new(),
            retention: Duration::from_secs(7 * 24 * 3600),
            max_dataset_file_bytes: 4 << 30,
        }
    }
}

impl ServerConfig {
    fn hard_message_limit(&self) -> usize {
        self.max_message_bytes.saturating_mul(2).saturating_add(1 << 20)
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
    /// Held by every clone of `App`, so by every open connection; the server
    /// waits until all are dropped.
    pub(crate) _connections: mpsc::Sender<()>,
}

impl App {
    /// Options for a session started by a face: the server's limits and,
    /// with a data folder, the datasets at `/data`.
    pub(crate) fn session_options(&self) -> SessionOptions {
        SessionOptions {
            limits: Some(self.config.limits.clone()),
            data: self.datasets.as_ref().map(|d| d.mount_dir().to_path_buf()),
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
    for language in Language::ALL {
        runtime.prepare(language).await.map_err(std::io::Error::other)?;
    }
    let listener = TcpListener::bind(config.listen).await?;
    let address = listener.local_addr()?;
    println!("listening on http://{address}");
    tracing::info!(%address, "listening");
    serve_on(runtime, config, listener, shutdown).await
}

/// Serves on a bound listener (the caller prepares guests and reports the
/// address), as `serve` does.
pub async fn serve_on(
    runtime: Runtime,
    config: ServerConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (registry, datasets) = match &config.data_dir {
        Some(dir) => {
            let store = Store::open(dir).map_err(std::io::Error::other)?;
            let datasets =
                Datasets::open(dir, store.clone(), config.max_dataset_file_bytes).map_err(std::io::Error::other)?;
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
    let (connections, mut all_closed) = mpsc::channel::<()>(1);
    let app = App {
        registry: registry.clone(),
        tokens: Arc::new(Tokens::new(&config.tokens)),
        config: Arc::new(config),
        datasets,
        closing,
        _connections: connections,
    };
    let router = router(app.clone());
    let stopping = async move {
        shutdown.await;
        tracing::info!("shutting down: stopping running guests");
        let _ = closing_tx.send(true);
        registry.shutdown(app.config.shutdown_grace).await;
        drop(app);
    };
    // Events are small and latency is the product: no Nagle delays.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    axum::serve(listener, router).with_graceful_shutdown(stopping).await?;
    // Upgraded WebSockets outlive the HTTP server: let them send their last events.
    let _ = tokio::time::timeout(Duration::from_secs(5), all_closed.recv()).await;
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

fn router(app: App) -> Router {
    let body_limit = app.config.max_message_bytes;
    // Sockets check their token in their first message (`socket.rs`).
    let rest = Router::new()
        .route("/v1/exec", post(ranna::exec))
        .route("/v1/spec", get(ranna::spec))
        .route("/v1/info", get(ranna::info))
        .route("/v1/csv/dataset", post(datasets::create_csv).put(datasets::finalise_csv))
        .route("/v1/mnist/dataset", post(datasets::create_mnist).put(datasets::finalise_mnist))
        .route("/v1/dataset", get(datasets::list).delete(datasets::delete))
        .route("/v1/dataset/progress", get(datasets::progress))
        .route_layer(axum::middleware::from_fn_with_state(app.clone(), auth::require_token));
    Router::new()
        .route("/", get(actions::websocket))
        .route("/v1/ws", get(ranna::websocket))
        .route("/processor", get(processor::websocket))
        .merge(rest)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(body_limit))
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

/// Milliseconds since the Unix epoch, as the processor face writes times.
pub(crate) fn now_ms() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0)
}

/// Parses a client's JSON, also accepting JavaScript object literals
/// (unquoted keys, single quotes), as the seed protocols' examples are written.
pub(crate) fn parse_lenient(text: &str) -> Result<Value, String> {
    serde_json::from_str(text).or_else(|json_error| {
        json5::from_str::<Value>(text).map_err(|_| format!("the message is not valid JSON: {json_error}"))
    })
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
    fn utf8_chunks_never_split_a_character() {
        let mut chunks = Utf8Chunks::default();
        let wave = "👋".as_bytes();
        assert_eq!(chunks.push(&wave[..2]), "");
        assert_eq!(chunks.push(&wave[2..]), "👋");
        assert_eq!(chunks.push(b"a\xffb"), "a\u{fffd}b");
        assert_eq!(chunks.push(&wave[..1]), "");
        assert_eq!(chunks.finish(), "\u{fffd}");
    }

    #[test]
    fn lenient_parsing_takes_object_literals() {
        let v = parse_lenient("{action: 'get_placeholder', placeholder: {sessionId: 123123123123, name: \"message\"}}")
            .unwrap();
        assert_eq!(v["placeholder"]["sessionId"], json!(123123123123u64));
        assert!(parse_lenient("{action: ").unwrap_err().contains("not valid JSON"));
    }
}
