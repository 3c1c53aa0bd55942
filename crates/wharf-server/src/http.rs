//! The HTTP front-end. Today: `GET /health`, and JSON errors for everything else.
//!
//! Every error body has one shape, so clients parse one thing:
//! `{"error":{"code":"not_found","message":"…"}}`.

use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

/// The HTTP API's routes. No broker state yet: `/health` needs none, because the
/// listener is bound only after the broker opened. The queues API will add it.
pub fn router() -> Router {
    Router::new()
        .route("/health", get(health))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
}

/// A JSON error response with a stable machine-readable `code`.
pub fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let body = json!({ "error": { "code": code, "message": message.into() } });
    (status, Json(body)).into_response()
}

/// 200 once the broker is open: the listener is bound only after `Broker::open`.
async fn health() -> Response {
    Json(json!({ "status": "ok", "version": env!("CARGO_PKG_VERSION") })).into_response()
}

async fn not_found(method: Method, uri: Uri) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no route for {method} {}", uri.path()),
    )
}

async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not allowed on {}", uri.path()),
    )
}
