//! Tokens: who may use the server.
//!
//! With no token configured, the server only listens on loopback (`serve`
//! refuses anything else) and takes every request. With tokens, every REST
//! call needs `Authorization: Bearer <token>` and every WebSocket a `"token"`
//! in its first message (or that header on the upgrade request). Tokens are
//! kept as SHA-256 digests and compared in constant time; a refusal is logged
//! without the token given.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::App;

/// The accepted tokens, as digests.
#[derive(Clone, Debug, Default)]
pub(crate) struct Tokens {
    digests: Vec<[u8; 32]>,
}

impl Tokens {
    pub(crate) fn new(tokens: &[String]) -> Self {
        Tokens { digests: tokens.iter().map(|t| Sha256::digest(t.as_bytes()).into()).collect() }
    }

    /// Whether requests need a token at all.
    pub(crate) fn required(&self) -> bool {
        !self.digests.is_empty()
    }

    pub(crate) fn accepts(&self, token: &str) -> bool {
        let given: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        // Check every digest, each byte by byte: no early exit to time.
        self.digests.iter().fold(false, |found, digest| {
            found | (digest.iter().zip(&given).fold(0u8, |diff, (a, b)| diff | (a ^ b)) == 0)
        })
    }

    /// Whether the request carries an accepted `Authorization: Bearer` token.
    pub(crate) fn accepts_header(&self, headers: &HeaderMap) -> bool {
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")));
        bearer.is_some_and(|token| self.accepts(token.trim()))
    }

    /// Checks the `token` of a socket's first message.
    pub(crate) fn check_message(&self, message: &Value) -> Result<(), &'static str> {
        match message.get("token").and_then(Value::as_str) {
            Some(token) if self.accepts(token) => Ok(()),
            Some(_) => Err("the token is not accepted by this server"),
            None => Err("this server needs a \"token\" in the first message of every socket"),
        }
    }
}

/// Middleware for the REST routes: 401 without an accepted bearer token.
pub(crate) async fn require_token(State(app): State<App>, request: Request, next: Next) -> Response {
    if !app.tokens.required() || app.tokens.accepts_header(request.headers()) {
        return next.run(request).await;
    }
    let why = if request.headers().contains_key(header::AUTHORIZATION) {
        "the bearer token is not accepted by this server"
    } else {
        "this server needs an Authorization: Bearer <token> header"
    };
    tracing::warn!(path = %request.uri().path(), "refused a request: {why}");
    let body = json!({ "code": 401, "error": why, "context": "ask the server's operator for a token" });
    (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Bearer")], axum::Json(body)).into_response()
}
