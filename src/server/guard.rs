//! What a browser could be made to send on a user's behalf, refused before
//! any face sees it.
//!
//! A page on another site can open a WebSocket to `127.0.0.1:8765` or POST a
//! `text/plain` body to it (no CORS preflight for either), and a page whose
//! DNS name is rebound to 127.0.0.1 talks to the server as its own origin. So:
//! - `Host` must be an IP address, `localhost`, or a name in `allowed_hosts`
//!   (a rebound name is none of these);
//! - an `Origin`, when sent (browsers always send one on WebSocket upgrades
//!   and cross-site POSTs; other clients don't), must be the server's own
//!   (its scheme-less form equal to `Host`) or one in `allowed_origins`;
//! - a request body is taken only as `application/json` or with no
//!   Content-Type at all (what Hanami's SDK sends); form and text bodies are
//!   what a cross-site page can send without asking, so they are refused.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::App;

/// The names and origins a server accepts beyond IP addresses and localhost.
#[derive(Clone, Debug, Default)]
pub(crate) struct Allowed {
    hosts: Vec<String>,
    origins: Vec<String>,
}

impl Allowed {
    pub(crate) fn new(hosts: &[String], origins: &[String]) -> Self {
        let lower =
            |items: &[String]| items.iter().map(|s| s.trim().trim_end_matches('/').to_ascii_lowercase()).collect();
        Allowed { hosts: lower(hosts), origins: lower(origins) }
    }

    /// Why the request is refused, if it is.
    fn check(&self, method: &Method, headers: &HeaderMap) -> Result<(), (StatusCode, String)> {
        let host = headers.get(header::HOST).map(|h| h.to_str().unwrap_or("\u{fffd}").to_ascii_lowercase());
        if let Some(host) = &host
            && !self.host_allowed(host)
        {
            return Err((
                StatusCode::MISDIRECTED_REQUEST,
                format!(
                    "this server does not answer to the name {host:?}; use its IP address or localhost, \
                     or add the name to allowed_hosts in its config"
                ),
            ));
        }
        if let Some(origin) = headers.get(header::ORIGIN) {
            let origin = origin.to_str().unwrap_or("\u{fffd}").trim_end_matches('/').to_ascii_lowercase();
            let own = host.as_deref().is_some_and(|host| {
                origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://")) == Some(host)
            });
            if !own && !self.origins.contains(&origin) {
                return Err((
                    StatusCode::FORBIDDEN,
                    format!(
                        "requests from web pages of {origin:?} are refused; add the origin to allowed_origins \
                         in the server's config to let that page use it"
                    ),
                ));
            }
        }
        if matches!(*method, Method::POST | Method::PUT | Method::PATCH | Method::DELETE)
            && let Some(kind) = headers.get(header::CONTENT_TYPE)
        {
            let kind = kind.to_str().unwrap_or("");
            let essence = kind.split(';').next().unwrap_or("").trim();
            if !essence.eq_ignore_ascii_case("application/json") {
                return Err((
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    format!("bodies are JSON: send Content-Type: application/json (or none), not {kind:?}"),
                ));
            }
        }
        Ok(())
    }

    fn host_allowed(&self, host: &str) -> bool {
        let name = match host.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or(""),
            None => host.rsplit_once(':').map_or(host, |(name, _port)| name),
        };
        name.parse::<std::net::IpAddr>().is_ok() || name == "localhost" || self.hosts.iter().any(|h| h == name)
    }
}

/// Middleware over every route, WebSocket upgrades included.
pub(crate) async fn check(State(app): State<App>, request: Request, next: Next) -> Response {
    match app.allowed.check(request.method(), request.headers()) {
        Ok(()) => next.run(request).await,
        Err((status, why)) => {
            app.registry.metrics().refused(crate::metrics::Refusal::HostOrigin);
            tracing::warn!(path = %request.uri().path(), "refused a request: {why}");
            let body = json!({ "code": status.as_u16(), "error": why, "context": "browser safety checks" });
            (status, axum::Json(body)).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(name.clone(), HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn hosts_must_be_addresses_localhost_or_allowed() {
        let allowed = Allowed::new(&["sandlot.example".into()], &[]);
        for host in ["127.0.0.1:8765", "[::1]:8765", "localhost:80", "sandlot.example:443", "10.1.2.3"] {
            assert!(allowed.check(&Method::GET, &headers(&[(header::HOST, host)])).is_ok(), "{host}");
        }
        for host in ["evil.example:8765", "127.0.0.1.evil.example", "localhost.evil.example:8765"] {
            let (status, _) = allowed.check(&Method::GET, &headers(&[(header::HOST, host)])).unwrap_err();
            assert_eq!(status, StatusCode::MISDIRECTED_REQUEST, "{host}");
        }
    }

    #[test]
    fn origins_must_be_the_servers_own_or_allowed() {
        let allowed = Allowed::new(&[], &["https://play.example".into()]);
        let check = |origin: &str| {
            allowed.check(&Method::GET, &headers(&[(header::HOST, "127.0.0.1:8765"), (header::ORIGIN, origin)]))
        };
        assert!(check("http://127.0.0.1:8765").is_ok());
        assert!(check("https://play.example").is_ok());
        assert_eq!(check("https://evil.example").unwrap_err().0, StatusCode::FORBIDDEN);
        assert_eq!(check("null").unwrap_err().0, StatusCode::FORBIDDEN);
        assert_eq!(check("http://127.0.0.1:9999").unwrap_err().0, StatusCode::FORBIDDEN);
    }

    #[test]
    fn bodies_are_json_or_untyped() {
        let allowed = Allowed::new(&[], &[]);
        let post = |kind: Option<&str>| {
            let mut pairs = vec![(header::HOST, "127.0.0.1")];
            pairs.extend(kind.map(|k| (header::CONTENT_TYPE, k)));
            allowed.check(&Method::POST, &headers(&pairs))
        };
        assert!(post(None).is_ok());
        assert!(post(Some("application/json")).is_ok());
        assert!(post(Some("Application/JSON; charset=utf-8")).is_ok());
        for kind in ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"] {
            assert_eq!(post(Some(kind)).unwrap_err().0, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{kind}");
        }
    }
}
