//! What operators ask of a running server (CONTRACT face 7): `GET /healthz`
//! (the process answers), `GET /readyz` (each language's guest prepared and
//! its first warm instances made; the store open) and `GET /metrics`
//! (Prometheus text, `metrics.rs`). The first two need no token: a load
//! balancer or an orchestrator asks them. Without one `/readyz` says only
//! whether the server is ready and each language ready, preparing or
//! unavailable; its details (timings, the store, the cluster's nodes, queue
//! and slots) need a token, as `/metrics` does (a server without tokens, on
//! loopback, shows them to all).

use std::sync::Mutex;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::App;
use crate::language::Language;
use crate::runtime::Runtime;
use crate::sync::lock;

/// How long a starting server waits for a language's first warm instances
/// before it counts the language as ready without them.
pub(crate) const WARM_AT_START: Duration = Duration::from_secs(10);

/// Which languages have been ready since the server started (a language
/// stays ready once it was: its warm shelf running empty under load is not
/// a reason to take the node out of a load balancer).
#[derive(Default)]
pub(crate) struct Readiness {
    ready: Mutex<Vec<Language>>,
}

impl Readiness {
    pub(crate) fn mark(&self, language: Language) {
        let mut ready = lock(&self.ready);
        if !ready.contains(&language) {
            ready.push(language);
        }
    }

    fn is_ready(&self, language: Language) -> bool {
        lock(&self.ready).contains(&language)
    }

    /// Each language's state, and whether none is still on its way; with
    /// `details`, warming told from preparing, and how long it has taken.
    fn report(&self, runtime: &Runtime, details: bool) -> (bool, Vec<Value>) {
        let mut all = true;
        let states = Language::ALL.map(|language| {
            let name = language.name();
            if self.is_ready(language) {
                return json!({ "language": name, "state": "ready" });
            }
            if let Some(so_far) = runtime.preparing(language) {
                all = false;
                if !details {
                    return json!({ "language": name, "state": "preparing" });
                }
                return json!({ "language": name, "state": "preparing", "seconds": so_far.as_secs(),
                               "expected_seconds": language.first_preparation().as_secs() });
            }
            if runtime.is_prepared(language) {
                all = false;
                let state = if details { "warming" } else { "preparing" };
                return json!({ "language": name, "state": state });
            }
            // Its preparation failed (the log says why); it does not hold
            // back the languages that work.
            json!({ "language": name, "state": "unavailable" })
        });
        (all, states.into())
    }
}

/// `GET /healthz`: the process is up and its I/O threads answer.
#[utoipa::path(get, path = "/healthz", tag = "operators", responses((status = 200, description = "{status: ok}", body = Object)))]
pub(crate) async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// `GET /readyz`: 200 once every language is ready (or known to be
/// unavailable), 503 while one is being prepared or warmed; the body says
/// which. With an accepted token (or on a server without tokens) it says
/// more: warming apart from preparing, how long the preparation has gone
/// on, the store, and the cluster as this node sees it.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operators",
    responses(
        (status = 200, description = "ready: {ready, languages: [{language, state}]}; with a token also store, \
                                      and in cluster mode cluster: {node, connected, nodes, queued_runs, \
                                      free_slots, slots}", body = Object),
        (status = 503, description = "a language is still being prepared or warmed: the same body; with a \
                                      token, seconds and expected_seconds of each one preparing", body = Object),
    ),
    security((), ("bearer" = []), ("x-auth-token" = []))
)]
pub(crate) async fn readyz(State(app): State<App>, headers: HeaderMap) -> Response {
    let details = !app.tokens.required() || app.tokens.accepts_header(&headers).is_some();
    let (ready, languages) = app.readiness.report(app.registry.runtime(), details);
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let mut body = json!({ "ready": ready, "languages": languages });
    if !details {
        return (status, Json(body)).into_response();
    }
    body["store"] = json!(if app.datasets.is_some() { "open" } else { "none" });
    #[cfg(feature = "cluster")]
    if let Some(cluster) = &app.cluster {
        let (free, slots) = cluster.slots();
        body["cluster"] = json!({
            "node": cluster.node(),
            "connected": cluster.connected(),
            "nodes": cluster.nodes_seen(),
            "queued_runs": cluster.queue_depth(),
            "free_slots": free,
            "slots": slots,
        });
    }
    (status, Json(body)).into_response()
}

/// `GET /metrics`: every series in Prometheus's text format.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operators",
    responses(
        (status = 200, description = "Prometheus text format 0.0.4", body = String, content_type = "text/plain"),
        (status = 401, description = "no accepted token", body = super::openapi::ErrorBody),
    ),
    security(("bearer" = []), ("x-auth-token" = []))
)]
pub(crate) async fn metrics(State(app): State<App>) -> Response {
    let (running, live, _) = app.registry.counts();
    let text = app.registry.metrics().encode(running, live);
    ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response()
}
