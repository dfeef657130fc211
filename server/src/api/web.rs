//! The web page: `server/web/` (HTML, CSS and JavaScript, no build step), embedded in the binary
//! with `include_bytes!`, so a server needs no asset directory and the page works on a network
//! without internet. The page is a client of the public API like any other (docs/agenda-api.md,
//! docs/websocket.md); nothing here reads the store.
//!
//! | route | serves |
//! |---|---|
//! | `GET /`, `GET /cluster` | the page (`/cluster` opens the operators' view of the shards) |
//! | `GET /web/app.js`, `GET /web/style.css` | its script and style sheet |
//!
//! Every answer carries a Content-Security-Policy that allows only this server's own scripts,
//! styles and connections (no inline script, no other origin), and `no-cache`: a new binary's
//! page is fetched at once (the files are small, and revalidation would need an ETag scheme).

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// One embedded file and its media type.
struct Asset {
    bytes: &'static [u8],
    content_type: &'static str,
}

const INDEX: Asset = Asset {
    bytes: include_bytes!("../../web/index.html"),
    content_type: "text/html; charset=utf-8",
};
const SCRIPT: Asset = Asset {
    bytes: include_bytes!("../../web/app.js"),
    content_type: "text/javascript; charset=utf-8",
};
const STYLE: Asset = Asset {
    bytes: include_bytes!("../../web/style.css"),
    content_type: "text/css; charset=utf-8",
};

/// Only this origin's files and sockets; no framing by other sites.
const POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// The page's routes (merged into the HTTP router; any state).
pub(crate) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|| async { serve(&INDEX) }))
        .route("/cluster", get(|| async { serve(&INDEX) }))
        .route("/web/app.js", get(|| async { serve(&SCRIPT) }))
        .route("/web/style.css", get(|| async { serve(&STYLE) }))
}

fn serve(asset: &'static Asset) -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(asset.content_type),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(POLICY),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
        ],
        asset.bytes,
    )
        .into_response()
}
