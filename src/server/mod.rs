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
//! | `GET /healthz`, `GET /readyz`, `GET /metrics` | operators | `operators.rs` |
//! | `GET /v1/openapi.json` | the OpenAPI document of all of these | `openapi.rs` |
//! | `GET /playground` | a page for people, over the ranna face | `playground.rs` |
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
mod openapi;
mod operators;
mod playground;
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
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::Language;
use crate::datasets::{DatasetLimits, Datasets};
use crate::folder::DataFolder;
use crate::limits::Limits;
use crate::metrics::Face;
use crate::program::Program;
use crate::registry::{Client, Keep, Registry, RegistryConfig, Started};
use crate::runtime::{Runtime, SessionOptions};
use crate::store::Store;
use auth::Tokens;
pub(crate) use json::{Fields, IdText, field, parse_fields_off_thread, parse_lenient, parse_typed_off_thread};
pub(crate) use listener::Peer;
#[cfg(feature = "cli")]
pub(crate) use socket::READ_BUFFER_BYTES;

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
    /// would not leave enough for sessions and the store: `file_caps`);
    /// when all are taken, an idle one is closed to admit a new one.
    pub max_connections: usize,
    /// Connections held at once from one client address (an IPv6 /64 is one address).
    pub max_connections_per_address: usize,
    /// How long a client has to send an HTTP request's headers, and how long
    /// an idle keep-alive connection is kept.
    pub header_timeout: Duration,
    /// How long a socket has to send its first message (with its token,
    /// when the server has tokens).
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
    /// Whether `serve` applies the seccomp filter (`harden::restrict_syscalls`)
    /// to the whole process once it runs as that user: off for an embedder,
    /// whose process is its own; on in `sandlot serve` unless turned off.
    pub seccomp: bool,
    /// Instances kept ready per language (see `Runtime::set_warm_instances`);
    /// `None` leaves the runtime's setting.
    pub warm_instances: Option<usize>,
    /// The cluster to join; `None`: this node alone.
    #[cfg(feature = "cluster")]
    pub cluster: Option<crate::cluster::ClusterConfig>,
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
            seccomp: false,
            warm_instances: None,
            #[cfg(feature = "cluster")]
            cluster: None,
        }
    }
}

impl ServerConfig {
    fn hard_message_limit(&self) -> usize {
        self.max_message_bytes.saturating_mul(2).saturating_add(1 << 20)
    }

    /// The caps in force under the open-files limit `files`: connections
    /// and live sessions. Each connection holds a descriptor, each running or
    /// live session up to `FILES_PER_SESSION` (python-sci's folders), and
    /// `FILES_RESERVE` are kept for the rest (the store and datasets, the
    /// guests' cache files, connections being evicted). When the configured
    /// caps do not fit, connections and sessions share what is left half and
    /// half, neither above its configured cap (at 1024 files: 384
    /// connections, 128 live sessions beside 64 running).
    fn file_caps(&self, files: Option<u64>) -> FileCaps {
        let configured = FileCaps { connections: self.max_connections, live: self.registry.max_live };
        let Some(files) = files else { return configured };
        let running = self.registry.max_running as u64;
        let sessions = running.saturating_add(self.registry.max_live as u64);
        let wanted = FILES_RESERVE
            .saturating_add(FILES_PER_SESSION.saturating_mul(sessions))
            .saturating_add(self.max_connections as u64);
        if files >= wanted {
            return configured;
        }
        let left = files.saturating_sub(FILES_RESERVE);
        let connections = (left / 2).min(self.max_connections as u64).max(MIN_CONNECTIONS as u64);
        let live = (left.saturating_sub(connections) / FILES_PER_SESSION).saturating_sub(running);
        FileCaps { connections: connections as usize, live: live.min(self.registry.max_live as u64) as usize }
    }
}

/// Descriptors kept for what is neither a connection nor a session.
const FILES_RESERVE: u64 = 256;
/// Descriptors a running or live session may hold.
const FILES_PER_SESSION: u64 = 2;
/// Connections taken however low the open-files limit.
const MIN_CONNECTIONS: usize = 16;

/// Connections and live sessions the open-files limit leaves room for.
#[derive(Debug, PartialEq, Eq)]
struct FileCaps {
    connections: usize,
    live: usize,
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
    pub(crate) readiness: Arc<operators::Readiness>,
    /// What direct-IO sockets' values waiting for their last frame hold.
    pub(crate) waiting_values: Arc<direct_io::WaitingMemory>,
    /// `GET /v1/openapi.json`'s document.
    pub(crate) openapi: openapi::Document,
    /// The cluster this node is in, if any.
    #[cfg(feature = "cluster")]
    pub(crate) cluster: Option<crate::cluster::Cluster>,
    /// The MCP face's tools, made once (their notebooks are the server's).
    #[cfg(feature = "mcp")]
    mcp: Arc<std::sync::OnceLock<mcp::McpTools>>,
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

    /// Starts a one-shot run (nothing of it kept once its client has its
    /// end): in cluster mode on whichever node has room, else here.
    pub(crate) async fn one_shot(
        &self,
        client: &Client,
        face: Face,
        language: Language,
        program: Program,
        options: SessionOptions,
    ) -> Result<Started, crate::Error> {
        #[cfg(feature = "cluster")]
        let cluster = self.cluster.as_ref();
        #[cfg(not(feature = "cluster"))]
        let cluster = None;
        one_shot(&self.registry, cluster, client, face, language, program, options).await
    }
}

#[cfg(not(feature = "cluster"))]
type ClusterRef<'a> = Option<&'a std::convert::Infallible>;
#[cfg(feature = "cluster")]
type ClusterRef<'a> = Option<&'a crate::cluster::Cluster>;

/// `App::one_shot`, for faces that hold the registry and cluster themselves.
pub(crate) async fn one_shot(
    registry: &Registry,
    cluster: ClusterRef<'_>,
    client: &Client,
    face: Face,
    language: Language,
    program: Program,
    options: SessionOptions,
) -> Result<Started, crate::Error> {
    // Runs that talk to this node while they go (a game engine's commands)
    // run here.
    #[cfg(feature = "cluster")]
    let program = match cluster {
        Some(cluster) if options.engine.is_none() => {
            match cluster.start(registry, client, face, language, program, &options).await? {
                Ok(started) => return Ok(started),
                Err(program) => program,
            }
        }
        _ => program,
    };
    #[cfg(not(feature = "cluster"))]
    let _ = cluster;
    registry.start(client, face, language, program, options, Keep::Nothing).await
}

/// Binds, prints `listening on http://ADDR` and serves at once, preparing
/// the guests behind it (`GET /readyz` says how far), until `shutdown`
/// resolves; then stops running guests, reports their end to their clients,
/// and returns. With `run_as`, everything is prepared before the user is
/// changed (that user may not be able to write the compile cache), so
/// before it listens.
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
    let mut shutdown = std::pin::pin!(shutdown);
    let listener = TcpListener::bind(config.listen).await?;
    let address = listener.local_addr()?;
    match &config.run_as {
        Some(user) => {
            // A stop asked for while the guests are compiled (minutes, the
            // first time) is done at once: a compile left behind is never half-written.
            let prepared = async {
                for language in Language::preparation_order() {
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
            user.become_user(config.data_dir.as_deref()).map_err(std::io::Error::other)?;
            tracing::info!(user = %user.name, "the port is bound; running as {} from now on", user.name);
        }
        None if crate::harden::is_root() => tracing::warn!("{}", crate::harden::root_warning()),
        None => {}
    }
    if config.seccomp {
        let status = crate::harden::restrict_syscalls();
        tracing::info!("seccomp: {status}");
    } else {
        tracing::info!("seccomp: off (turned off in the settings)");
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

/// `serve_on`, calling `ready` once the store and the datasets are open,
/// just before the first connection is taken; the guests are prepared and
/// their first warm instances made behind it.
async fn serve_ready(
    runtime: Runtime,
    config: ServerConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
    ready: impl FnOnce(),
) -> std::io::Result<()> {
    let warm = runtime.clone();
    let mut config = config;
    let files = listener::raise_file_limit();
    let caps = config.file_caps(files);
    if caps.live < config.registry.max_live || caps.connections < config.max_connections {
        tracing::warn!(
            files,
            connections = caps.connections,
            live_sessions = caps.live,
            "the open-files limit is low for this configuration: connections and live sessions are capped lower; \
             raise the hard limit (ulimit -Hn, LimitNOFILE=) to hold more"
        );
    }
    config.registry.max_live = caps.live;
    tracing::info!(
        files,
        connections = caps.connections,
        per_address = config.max_connections_per_address,
        live_sessions = caps.live,
        first_message_s = config.first_message_timeout.as_secs_f64(),
        idle_s = config.idle_timeout.as_secs_f64(),
        "connection caps: when all are taken, the idle connection silent the longest (of the address holding the \
         most) is closed for a new one"
    );
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
    let admission = listener::Admission::new(caps.connections, config.max_connections_per_address);
    let app = App {
        registry: registry.clone(),
        tokens: Arc::new(Tokens::new(&config.tokens)),
        allowed: Arc::new(guard::Allowed::new(&config.allowed_hosts, &config.allowed_origins)),
        config: Arc::new(config),
        datasets,
        closing: closing.clone(),
        readiness: Arc::default(),
        waiting_values: direct_io::WaitingMemory::new(direct_io::CLIENT_WAITING_BYTES, direct_io::SERVER_WAITING_BYTES),
        openapi: Arc::default(),
        #[cfg(feature = "cluster")]
        cluster: None,
        #[cfg(feature = "mcp")]
        mcp: Arc::default(),
    };
    #[cfg(feature = "cluster")]
    let app = join_cluster(app, listener.local_addr()?.port()).await?;
    // Sessions start in instances made ahead (`warm.rs`), from the first:
    // made for exactly what the faces' sessions ask for.
    if let Some(count) = app.config.warm_instances {
        warm.set_warm_instances(count);
    }
    let preparing = prepare_and_warm(&warm, &app);
    ready();
    let accepting = tokio::spawn(listener::accept(
        listener,
        router(app.clone()),
        admission.clone(),
        app.config.header_timeout,
        closing,
        app.registry.metrics().clone(),
    ));
    shutdown.await;
    preparing.abort();
    tracing::info!("shutting down: stopping running guests");
    let _ = closing_tx.send(true);
    registry.shutdown(app.config.shutdown_grace).await;
    #[cfg(feature = "cluster")]
    if let Some(cluster) = &app.cluster {
        cluster.leave().await;
    }
    let _ = accepting.await;
    // Sockets send their last events (how their runs ended), then close.
    admission.drained(Duration::from_secs(5)).await;
    tracing::info!("stopped");
    Ok(())
}

#[cfg(feature = "mcp")]
fn mcp_tools(app: &App) -> mcp::McpTools {
    let made = app.mcp.get_or_init(|| {
        let tools = mcp::McpTools::new(app.registry.clone(), app.session_options(), Client::Local);
        #[cfg(feature = "cluster")]
        let tools = tools.with_cluster(app.cluster.clone());
        tools
    });
    made.clone()
}

impl ServerConfig {
    /// Files outside the data folder that serving reads now and then (cluster
    /// mode's TLS certificates at each connection to NATS), which Landlock
    /// must leave readable.
    pub fn files_read_while_serving(&self) -> Vec<std::path::PathBuf> {
        #[cfg(feature = "cluster")]
        if let Some(cluster) = &self.cluster {
            return cluster.access.files_read();
        }
        Vec::new()
    }
}

/// Joins the cluster the config names, if any; a node that cannot join
/// does not start.
#[cfg(feature = "cluster")]
async fn join_cluster(mut app: App, port: u16) -> std::io::Result<App> {
    let Some(config) = app.config.cluster.clone() else { return Ok(app) };
    let agreement = crate::cluster::Agreement {
        version: env!("CARGO_PKG_VERSION").into(),
        tokens: app.tokens.digest(),
        limits: format!("{:?}", app.config.limits),
        runs_per_second: app.config.registry.runs_per_second_per_client.to_string(),
    };
    let (registry, options) = (app.registry.clone(), app.session_options());
    let cluster = crate::cluster::Cluster::join(&config, port, agreement, registry, options, app.config.retention)
        .await
        .map_err(std::io::Error::other)?;
    app.cluster = Some(cluster.clone());
    let answering = app.clone();
    let actions: crate::cluster::Handler = std::sync::Arc::new(move |request, client| {
        Box::pin(actions::answer_forwarded(answering.clone(), request, client))
    });
    cluster.serve("actions", actions).await.map_err(std::io::Error::other)?;
    if let Some(datasets) = &app.datasets {
        cluster.datasets().follow(datasets.clone());
    }
    #[cfg(feature = "mcp")]
    {
        let tools = mcp_tools(&app);
        let mcp: crate::cluster::Handler =
            std::sync::Arc::new(move |request, client| Box::pin(tools.clone().answer_forwarded(request, client)));
        cluster.serve("mcp", mcp).await.map_err(std::io::Error::other)?;
    }
    Ok(app)
}

/// Prepares every language in the background, quick ones first, and stocks
/// each one's warm instances once it is prepared; a language is ready when
/// its first warm instances are made (`WARM_AT_START` at most). Says every
/// 10 s what it is still preparing.
fn prepare_and_warm(runtime: &Runtime, app: &App) -> tokio::task::JoinHandle<()> {
    let options = app.session_options();
    let limits = options.limits.unwrap_or_default();
    let (warm, readiness) = (runtime.clone(), app.readiness.clone());
    let order = Language::preparation_order();
    let preparing = runtime.prepare_in_background(order.clone(), move |language| {
        if !warm.is_prepared(language) {
            return;
        }
        warm.keep_warm(language, options.data.as_deref(), &limits);
        let (warm, readiness) = (warm.clone(), readiness.clone());
        tokio::spawn(async move {
            if !warm.wait_warm(language, operators::WARM_AT_START).await {
                tracing::warn!("{language}'s first warm instances took over {:?}", operators::WARM_AT_START);
            }
            readiness.mark(language);
        });
    });
    let runtime = runtime.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(10));
        every.tick().await;
        let mut preparing = preparing;
        loop {
            tokio::select! {
                _ = &mut preparing => return,
                _ = every.tick() => {}
            }
            for &language in &order {
                if let Some(so_far) = runtime.preparing(language) {
                    tracing::info!(
                        "still preparing {language} ({} s so far; its first preparation on a machine takes ~{} s)",
                        so_far.as_secs(),
                        language.first_preparation().as_secs()
                    );
                }
            }
        }
    })
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
    // Every route is made from its handler's `#[utoipa::path]` (so it is in
    // the OpenAPI document), but /mcp, the MCP SDK's service (documented in
    // `openapi.rs`). Sockets check their token in their first message
    // (`socket.rs`); the REST routes through `auth::require_token`.
    // Hanami's SDK uses /control/v1, the seed /v1: both. Dataset requests
    // are a few fields: their bodies get a small limit.
    let datasets = OpenApiRouter::new()
        .routes(routes!(datasets::create_csv, datasets::finalise_csv))
        .routes(routes!(datasets::create_mnist, datasets::finalise_mnist))
        .routes(routes!(datasets::get, datasets::delete))
        .routes(routes!(datasets::list))
        .routes(routes!(datasets::progress))
        .routes(routes!(direct_io::set_mode))
        .layer(DefaultBodyLimit::max(DATASET_BODY_BYTES));
    let rest = OpenApiRouter::new()
        .routes(routes!(ranna::exec))
        .routes(routes!(ranna::spec))
        .routes(routes!(ranna::info))
        .routes(routes!(operators::metrics));
    // MCP over streamable HTTP: behind the same tokens (its client is the
    // token's or the address's, as for REST).
    #[cfg(feature = "mcp")]
    let rest = rest.route_service("/mcp", mcp::http_service(mcp_tools(&app)));
    let rest = rest
        .merge(datasets.clone())
        .nest("/control", datasets)
        .route_layer(axum::middleware::from_fn_with_state(app.clone(), auth::require_token));
    let (router, mut document) = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(actions::websocket))
        .routes(routes!(ranna::websocket))
        .routes(routes!(processor::websocket))
        .routes(routes!(operators::healthz))
        .routes(routes!(operators::readyz))
        .routes(routes!(openapi::document))
        .routes(routes!(playground::page))
        .routes(routes!(playground::chart))
        .merge(rest)
        .split_for_parts();
    openapi::distinct_operation_ids(&mut document);
    #[cfg(not(feature = "mcp"))]
    document.paths.paths.remove("/mcp");
    let _ = app.openapi.set(document.to_json().expect("the OpenAPI document is JSON"));
    router
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(axum::middleware::from_fn_with_state(app.clone(), guard::check))
        // Refusals (401, 429, 503: busy, or /readyz while preparing) are
        // answers, not failures: logged as errors they would let any client
        // fill the log. Failures inside the server log their own detail.
        .layer(tower_http::trace::TraceLayer::new_for_http().on_failure(()))
        .with_state(app)
}

async fn not_found(uri: axum::http::Uri) -> impl IntoResponse {
    (
        StatusCode::NOT_FOUND,
        axum::Json(json!({
            "code": 404,
            "error": format!("no such endpoint: {}", uri.path()),
            "context": "see GET /v1/spec, POST /v1/exec, the /v1/dataset routes, WebSockets at /, /v1/ws and \
                        /processor; GET /v1/openapi.json lists every route",
        })),
    )
}

/// What a client is told of an error. Errors of the server itself (storage,
/// guest loading, the engine) can name host paths and internals: the client
/// gets a generic message with a reference, the log gets the detail.
pub(crate) fn public_message(error: &crate::Error) -> String {
    use crate::Error;
    match error {
        Error::GuestLoad { .. }
        | Error::Instantiate { .. }
        | Error::Engine(_)
        | Error::Storage(_)
        | Error::Scratch(crate::ScratchReadError::Unreadable(_)) => {
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
    fn connections_and_sessions_share_the_file_descriptors() {
        let config = ServerConfig::default();
        let caps = |connections, live| FileCaps { connections, live };
        assert_eq!(config.file_caps(None), caps(1024, 1000));
        assert_eq!(config.file_caps(Some(1 << 20)), caps(1024, 1000), "a high limit leaves the configured caps");
        // 256 + 2 × (64 running + 1000 live) + 1024 connections.
        assert_eq!(config.file_caps(Some(3408)), caps(1024, 1000));
        assert_eq!(config.file_caps(Some(3000)), caps(1024, (3000 - 256 - 1024) / 2 - 64));
        assert_eq!(config.file_caps(Some(1024)), caps(384, 128), "half and half of what the reserve leaves");
        assert_eq!(config.file_caps(Some(100)), caps(16, 0), "a very low limit still serves a few");
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
