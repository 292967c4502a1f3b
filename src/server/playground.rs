//! `GET /playground`: one page for people (`playground.html`, built into the
//! binary: no CDN, nothing fetched from elsewhere). It speaks ranna's face
//! over `/v1/ws`: pick a language, edit, Run and Kill, output streamed as it
//! is written (stderr marked), exit status and time, placeholders as JSON,
//! tables or images, a standard-input box, and the bench chart
//! (`/playground/bench.svg`, the README's `docs/bench/cold-start.svg`).

use axum::http::header;
use axum::response::IntoResponse;

const PAGE: &str = include_str!("playground.html");
const CHART: &str = include_str!("../../docs/bench/cold-start.svg");

/// What the page may load and reach: itself, its own server, and data: URLs
/// for the PNG placeholders it shows.
const POLICY: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                      img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
                      frame-ancestors 'none'";

/// The playground page.
#[utoipa::path(
    get,
    path = "/playground",
    tag = "operators",
    responses((status = 200, description = "the playground page (HTML)", body = String, content_type = "text/html"))
)]
pub(crate) async fn page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        PAGE,
    )
}

/// The bench chart the page shows.
#[utoipa::path(
    get,
    path = "/playground/bench.svg",
    tag = "operators",
    responses((status = 200, description = "the bench chart (SVG)", body = String, content_type = "image/svg+xml"))
)]
pub(crate) async fn chart() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "image/svg+xml"), (header::X_CONTENT_TYPE_OPTIONS, "nosniff")], CHART)
}
