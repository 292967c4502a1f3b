//! Tokens: who may use the server.
//!
//! With no token configured, the server only listens on loopback (`serve`
//! refuses anything else) and takes every request. With tokens, every REST
//! call needs `Authorization: Bearer <token>` and every WebSocket a `"token"`
//! in its first message (or that header on the upgrade request). Tokens are
//! kept as SHA-256 digests and compared in constant time; a refusal is logged
//! without the token given.

use axum::Extension;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::{App, Peer};
use crate::registry::Client;

/// A token's digest: what the server keeps and counts a client by.
pub(crate) type TokenDigest = [u8; 32];

/// The accepted tokens, as digests.
#[derive(Clone, Debug, Default)]
pub(crate) struct Tokens {
    digests: Vec<[u8; 32]>,
}

impl Tokens {
    pub(crate) fn new(tokens: &[String]) -> Self {
        Tokens { digests: tokens.iter().map(|t| Sha256::digest(t.as_bytes()).into()).collect() }
    }

    /// One digest of all the accepted tokens, whatever their order (what
    /// the nodes of a cluster compare).
    #[cfg(feature = "cluster")]
    pub(crate) fn digest(&self) -> String {
        let mut digests = self.digests.clone();
        digests.sort();
        let all = Sha256::digest(digests.concat());
        let hex: String = all.iter().map(|b| format!("{b:02x}")).collect();
        format!("{} tokens, sha256 {}", digests.len(), &hex[..16])
    }

    /// Whether requests need a token at all.
    pub(crate) fn required(&self) -> bool {
        !self.digests.is_empty()
    }

    /// The token's digest, if it is accepted.
    pub(crate) fn accepts(&self, token: &str) -> Option<TokenDigest> {
        let given: TokenDigest = Sha256::digest(token.as_bytes()).into();
        // Check every digest, each byte by byte: no early exit to time.
        let found = self.digests.iter().fold(false, |found, digest| {
            found | (digest.iter().zip(&given).fold(0u8, |diff, (a, b)| diff | (a ^ b)) == 0)
        });
        found.then_some(given)
    }

    /// The digest of the request's accepted token, if any: `Authorization:
    /// Bearer <token>` (or any scheme, or none: ranna's client sends whatever
    /// its user configured) or `X-Auth-Token: <token>` (Hanami's SDK).
    pub(crate) fn accepts_header(&self, headers: &HeaderMap) -> Option<TokenDigest> {
        let value = |name| headers.get(name).and_then(|v: &axum::http::HeaderValue| v.to_str().ok()).map(str::trim);
        let authorization =
            value(header::AUTHORIZATION.as_str()).map(|v| v.split_once(' ').map_or(v, |(_scheme, token)| token.trim()));
        [authorization, value("x-auth-token")].into_iter().flatten().find_map(|token| self.accepts(token))
    }

    /// Checks the `token` of a socket's first message; its digest when accepted.
    pub(crate) fn check_message(&self, message: &Value) -> Result<TokenDigest, &'static str> {
        match message.get("token").and_then(Value::as_str) {
            Some(token) => self.accepts(token).ok_or("the token is not accepted by this server"),
            None => Err("this server needs a \"token\" in the first message of every socket"),
        }
    }

    /// Who a client is for fair shares and rate limits: its token when tokens
    /// are in use, else its address.
    pub(crate) fn client(&self, token: Option<TokenDigest>, peer: &Peer) -> Client {
        match token {
            Some(digest) if self.required() => Client::Token(digest),
            _ => Client::Address(peer.client_address()),
        }
    }
}

/// Middleware for the REST routes: 401 without an accepted bearer token;
/// otherwise the request carries its `Client`.
pub(crate) async fn require_token(
    State(app): State<App>,
    Extension(peer): Extension<Peer>,
    mut request: Request,
    next: Next,
) -> Response {
    let token = app.tokens.accepts_header(request.headers());
    if !app.tokens.required() || token.is_some() {
        request.extensions_mut().insert(app.tokens.client(token, &peer));
        return next.run(request).await;
    }
    let why = if request.headers().contains_key(header::AUTHORIZATION) {
        "the bearer token is not accepted by this server"
    } else {
        "this server needs a token: an Authorization: Bearer <token> or an X-Auth-Token: <token> header"
    };
    app.registry.metrics().refused(crate::metrics::Refusal::Token);
    tracing::warn!(path = %request.uri().path(), "refused a request: {why}");
    let body = json!({ "code": 401, "error": why, "context": "ask the server's operator for a token" });
    (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Bearer")], axum::Json(body)).into_response()
}
