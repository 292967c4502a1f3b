//! `GET /v1/openapi.json`: the OpenAPI 3.1 document of every HTTP route,
//! made by utoipa from the `#[utoipa::path]` of each handler. The router is
//! built from those same handlers (`utoipa_axum::routes!`), so a route is
//! served exactly when it is documented; `/mcp`, served by the MCP SDK's own
//! service, is documented here by `mcp`.
//!
//! The shapes below are what the handlers write as JSON: the two error
//! shapes, and the bodies of the dataset routes (read field by field).

use std::sync::{Arc, OnceLock};

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use super::App;

/// The document, made once the router is (`router()` sets it).
pub(crate) type Document = Arc<OnceLock<String>>;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "sandlot",
        description = "Runs untrusted Python, JavaScript and Lua in WebAssembly sandboxes. The WebSocket routes \
                       carry each face's messages (CONTRACT.md); these are their upgrades and the HTTP routes.",
        license(name = "Apache-2.0")
    ),
    paths(mcp),
    components(schemas(ErrorBody, DatasetErrorBody)),
    modifiers(&Tokens),
    tags(
        (name = "ranna", description = "ranna's face: runs and languages"),
        (name = "actions", description = "the runtime server's actions socket"),
        (name = "processor", description = "the processor lifecycle socket"),
        (name = "datasets", description = "Hanami's datasets and direct IO, under /v1 and /control/v1"),
        (name = "operators", description = "health, readiness, metrics, this document"),
        (name = "mcp", description = "the Model Context Protocol over streamable HTTP"),
    )
)]
pub(crate) struct ApiDoc;

/// Tokens as the server takes them: a bearer token, or Hanami's header.
struct Tokens;

impl Modify for Tokens {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components.add_security_scheme(
            "x-auth-token",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-Auth-Token"))),
        );
    }
}

/// The error of every REST route but the datasets': its HTTP status again,
/// what went wrong and where to look.
#[derive(ToSchema)]
#[allow(dead_code)]
pub(crate) struct ErrorBody {
    code: u16,
    error: String,
    context: String,
}

/// A dataset route's error: `ErrorBody` with the reason as a word
/// (`bad_request`, `not_found`, `conflict`, `overlap`, `incomplete`,
/// `too_large`, `quota`, `out_of_range`, `unavailable`, `server`).
#[derive(ToSchema)]
#[allow(dead_code)]
pub(crate) struct DatasetErrorBody {
    code: u16,
    reason: String,
    error: String,
    context: String,
}

/// MCP over streamable HTTP: JSON-RPC requests from an MCP client (tools
/// `list_languages`, `run_code`, `session_*`), each answered with one JSON
/// body; no transport session is kept.
#[utoipa::path(
    post,
    path = "/mcp",
    tag = "mcp",
    request_body(content = Object, description = "a JSON-RPC 2.0 message", content_type = "application/json"),
    responses(
        (status = 200, description = "the JSON-RPC answer", body = Object),
        (status = 401, description = "no accepted token", body = ErrorBody),
    ),
    security(("bearer" = []), ("x-auth-token" = []))
)]
#[allow(dead_code)]
fn mcp() {}

/// This document.
#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    tag = "operators",
    responses((status = 200, description = "the OpenAPI 3.1 document of every route", body = Object))
)]
pub(crate) async fn document(State(app): State<App>) -> Response {
    let text = app.openapi.get().cloned().unwrap_or_default();
    ([(header::CONTENT_TYPE, "application/json")], text).into_response()
}

/// The dataset routes appear under /v1 and /control/v1 with one handler
/// each: the second copy's operations get ids of their own.
pub(crate) fn distinct_operation_ids(openapi: &mut utoipa::openapi::OpenApi) {
    for (path, item) in openapi.paths.paths.iter_mut() {
        if !path.starts_with("/control/") {
            continue;
        }
        for operation in [&mut item.get, &mut item.put, &mut item.post, &mut item.delete].into_iter().flatten() {
            if let Some(id) = &operation.operation_id {
                operation.operation_id = Some(format!("control_{id}"));
            }
        }
    }
}
