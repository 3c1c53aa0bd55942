//! The HTTP front-end: `GET /health`, the topic admin API under `/v1/topics`, publishing
//! (`POST /v1/topics/{topic}/messages`), queue subscriptions, a message's history
//! (`GET /v1/topics/{topic}/messages/{partition}/{offset}/history`), Prometheus metrics
//! at `GET /metrics` (`metrics`: also the per-route request counters), and the OpenAPI
//! document at `GET /v1/openapi.json`.
//!
//! Every error body has one shape, so clients parse one thing:
//! `{"error":{"code":"not_found","message":"…"}}`. That includes what axum would
//! otherwise answer in plain text: request bodies go through [`JsonBody`], never
//! `axum::Json`, and unknown routes and methods have JSON fallbacks.
//!
//! A request flows: the router matches the route, [`JsonBody`] checks the Content-Type,
//! reads the body up to the route's limit and decodes it (unknown fields refused), the
//! handler in `topics` or `publish` calls `wharf_core::Broker`, and a [`CoreError`] becomes an
//! [`ApiError`] (status and code) in one place, [`ApiError::from`].
//!
//! The OpenAPI document is derived (utoipa) from the same request and response types
//! the handlers use, so a changed field shows up in both.

mod history;
mod metrics;
mod publish;
mod subscriptions;
mod topics;

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRef, FromRequest, Request};
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::json;
use tracing::error;
use utoipa::{OpenApi, ToSchema};
use wharf_core::history::MessageHistory;
use wharf_core::queue::Queues;
use wharf_core::{Broker, CoreError};

/// Largest request body the admin routes (`/v1/topics…`) accept: a topic definition is
/// a few hundred bytes, so anything near this is a mistake, refused with 413 before
/// it is buffered whole.
pub const ADMIN_BODY_LIMIT: usize = 1 << 20;

/// Largest request body `POST /v1/topics/{topic}/messages` accepts: 16 MiB, room for
/// many messages of Kafka's default 1 MiB `max.message.bytes`. Larger bodies are refused
/// with 413 before they are buffered whole; send several requests instead.
pub const PUBLISH_BODY_LIMIT: usize = 16 << 20;

/// What every handler may reach: the broker, its queue subscriptions, their message
/// history, the metrics.
#[derive(Clone)]
pub struct AppState {
    pub broker: Arc<Broker>,
    pub queues: Queues,
    pub history: Arc<MessageHistory>,
    pub metrics: Arc<crate::metrics::Metrics>,
}

impl FromRef<AppState> for Arc<Broker> {
    fn from_ref(s: &AppState) -> Arc<Broker> {
        Arc::clone(&s.broker)
    }
}

impl FromRef<AppState> for Queues {
    fn from_ref(s: &AppState) -> Queues {
        s.queues.clone()
    }
}

/// The HTTP API's routes, over the open broker. The listener is bound only after
/// `Broker::open`, so `/health` answering means ready.
pub fn router(state: AppState) -> Router {
    const SUB: &str = "/v1/topics/{topic}/subscriptions/{subscription}";
    let admin = Router::new()
        .route(
            "/v1/topics",
            get(topics::list_topics).post(topics::create_topic),
        )
        .route(
            "/v1/topics/{topic}",
            get(topics::get_topic).delete(topics::delete_topic),
        )
        .route(
            "/v1/topics/{topic}/subscriptions",
            get(subscriptions::list_subscriptions),
        )
        .route(
            SUB,
            get(subscriptions::get_subscription)
                .put(subscriptions::put_subscription)
                .delete(subscriptions::delete_subscription),
        )
        .route(&format!("{SUB}/pull"), post(subscriptions::pull))
        .route(&format!("{SUB}/ack"), post(subscriptions::ack))
        .route(&format!("{SUB}/nack"), post(subscriptions::nack))
        .route(&format!("{SUB}/extend"), post(subscriptions::extend))
        .route(&format!("{SUB}/seek"), post(subscriptions::seek))
        .route(&format!("{SUB}/redrive"), post(subscriptions::redrive))
        .route(
            "/v1/topics/{topic}/messages/{partition}/{offset}/history",
            get(history::message_history),
        )
        .layer(DefaultBodyLimit::max(ADMIN_BODY_LIMIT));
    let messages = Router::new()
        .route("/v1/topics/{topic}/messages", post(publish::publish))
        .layer(DefaultBodyLimit::max(PUBLISH_BODY_LIMIT));
    Router::new()
        .route("/health", get(health))
        .route("/v1/openapi.json", get(openapi))
        .route("/metrics", get(metrics::scrape))
        .merge(admin)
        .merge(messages)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(metrics::HttpMetrics::new()),
            metrics::track,
        ))
        .with_state(state)
}

/// The OpenAPI 3 document of every route above.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Wharf HTTP API",
        description = "Topics, publishing and queue subscriptions over HTTP/JSON. Every error answers `{\"error\":{\"code\":…,\"message\":…}}`."
    ),
    paths(
        health,
        openapi,
        metrics::scrape,
        topics::create_topic,
        topics::list_topics,
        topics::get_topic,
        topics::delete_topic,
        subscriptions::put_subscription,
        subscriptions::get_subscription,
        subscriptions::delete_subscription,
        subscriptions::list_subscriptions,
        subscriptions::pull,
        subscriptions::ack,
        subscriptions::nack,
        subscriptions::extend,
        subscriptions::seek,
        subscriptions::redrive,
        publish::publish,
        history::message_history
    ),
    components(schemas(
        ErrorBody,
        ErrorDetail,
        Health,
        publish::PublishRequest,
        publish::PublishMessage,
        publish::PublishResponse,
        publish::PublishedMessage,
        history::MessageHistoryResponse,
        history::StoredMessage,
        history::MessageEvent,
        history::MessageLocation,
        history::DeadLetterOf
    ))
)]
pub struct ApiDoc;

/// The error body every failed request answers with.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong: a stable machine-readable `code` and a readable `message`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// One of `invalid_json`, `invalid_argument`, `invalid_body`, `not_found`,
    /// `already_exists`, `method_not_allowed`, `unsupported_media_type`,
    /// `payload_too_large`, `unavailable`, `internal`.
    #[schema(example = "not_found")]
    pub code: String,
    pub message: String,
}

/// A failed request: the status and the JSON error body.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let throttled = self.status == StatusCode::TOO_MANY_REQUESTS;
        let mut r = error(self.status, self.code, self.message);
        if throttled {
            // Back-pressure: a backlog drains in about a second under a consumer that
            // keeps up; the client retries then.
            r.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        }
        r
    }
}

impl From<CoreError> for ApiError {
    fn from(e: CoreError) -> ApiError {
        use CoreError as E;
        let (status, code) = match &e {
            E::InvalidTopicName { .. }
            | E::InvalidConfig { .. }
            | E::UnknownConfig { .. }
            | E::UnsupportedConfig { .. }
            | E::InvalidPartitions { .. }
            | E::InvalidSubscription { .. }
            | E::InvalidSubscriptionName { .. }
            | E::InvalidQueueRequest { .. }
            | E::InvalidPublish { .. } => (StatusCode::BAD_REQUEST, "invalid_argument"),
            E::MessageTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            E::UnknownSubscription { .. } => (StatusCode::NOT_FOUND, "not_found"),
            E::Throttled { .. } => (StatusCode::TOO_MANY_REQUESTS, "backlog_throttled"),
            E::BacklogFull { .. } => (StatusCode::CONFLICT, "backlog_full"),
            E::QueueUnavailable { .. } => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            E::TopicExists { .. } => (StatusCode::CONFLICT, "already_exists"),
            E::UnknownTopic { .. } | E::UnknownPartition { .. } | E::UnknownOffset { .. } => {
                (StatusCode::NOT_FOUND, "not_found")
            }
            E::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            _ => {
                error!(error = %e, "HTTP request failed in the broker");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal")
            }
        };
        ApiError::new(status, code, e.to_string())
    }
}

/// A JSON error response with a stable machine-readable `code`.
pub fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let body = ErrorBody {
        error: ErrorDetail {
            code: code.to_string(),
            message: message.into(),
        },
    };
    (status, Json(body)).into_response()
}

/// A JSON request body, decoded into `T`. Unlike `axum::Json`, every rejection is an
/// [`ApiError`]: 415 without a JSON Content-Type, 413 past `LIMIT` bytes (after the
/// rest of the body was read and thrown away, see [`read_body`]), 400
/// `invalid_json` with serde's message (which names an unknown or missing field, or the
/// line and column of a syntax error).
pub struct JsonBody<T, const LIMIT: usize = ADMIN_BODY_LIMIT>(pub T);

impl<S, T, const LIMIT: usize> FromRequest<S> for JsonBody<T, LIMIT>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, ApiError> {
        if !is_json(req.headers()) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "the request body must be JSON, sent with `Content-Type: application/json`",
            ));
        }
        let bytes = read_body(req.into_body(), LIMIT).await?;
        serde_json::from_slice(&bytes).map(JsonBody).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_json",
                format!("invalid JSON body: {e}"),
            )
        })
    }
}

/// How long a body past its limit is read (and thrown away) before the 413 answer.
const DRAIN_TIME: Duration = Duration::from_secs(5);
/// How much of a body past its limit is read and thrown away at most.
const DRAIN_BYTES: usize = 64 << 20;

/// Reads a request body of at most `limit` bytes. A larger one is answered 413, but
/// only after the rest of it was read and thrown away (up to [`DRAIN_BYTES`] or
/// [`DRAIN_TIME`]): answering while the client still sends, then closing, makes the
/// kernel reset the connection, and the client may lose the answer with it.
async fn read_body(body: axum::body::Body, limit: usize) -> Result<Bytes, ApiError> {
    use futures_util::StreamExt;

    let mut stream = body.into_data_stream();
    let mut buf = Vec::new();
    let mut seen = 0usize;
    let deadline = tokio::time::Instant::now() + DRAIN_TIME;
    loop {
        let next = if seen > limit {
            match tokio::time::timeout_at(deadline, stream.next()).await {
                Ok(next) => next,
                Err(_) => break,
            }
        } else {
            stream.next().await
        };
        let Some(chunk) = next else { break };
        let chunk = chunk.map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_body",
                format!("reading the request body: {e}"),
            )
        })?;
        seen = seen.saturating_add(chunk.len());
        if seen <= limit {
            buf.extend_from_slice(&chunk);
        } else {
            buf = Vec::new();
            if seen > limit.saturating_add(DRAIN_BYTES) {
                break;
            }
        }
    }
    if seen > limit {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the request body is larger than this route's limit of {limit} bytes"),
        ));
    }
    Ok(Bytes::from(buf))
}

/// `application/json` or `application/<something>+json`, with any parameters.
fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let mime = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

/// `GET /health`'s answer.
#[derive(Serialize, ToSchema)]
pub struct Health {
    #[schema(example = "ok")]
    status: &'static str,
    version: &'static str,
}

/// 200 once the broker is open: the listener is bound only after `Broker::open`.
#[utoipa::path(
    get,
    path = "/health",
    tag = "health",
    responses((status = 200, description = "The broker is open and serving", body = Health))
)]
async fn health() -> Json<Health> {
    Json(Health {
        status: "ok",
        version: env!("CARGO_PKG_VERSION"),
    })
}

/// The document, built once.
static OPENAPI_JSON: LazyLock<serde_json::Value> = LazyLock::new(|| {
    serde_json::to_value(ApiDoc::openapi())
        .unwrap_or_else(|e| json!({ "error": { "code": "internal", "message": e.to_string() } }))
});

/// This API's OpenAPI 3 document.
#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    tag = "meta",
    responses((status = 200, description = "The OpenAPI 3 document", content_type = "application/json"))
)]
async fn openapi() -> Json<&'static serde_json::Value> {
    Json(&OPENAPI_JSON)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types_are_recognised() {
        let check = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, v.parse().expect("header value"));
            is_json(&h)
        };
        assert!(check("application/json"));
        assert!(check("Application/JSON; charset=utf-8"));
        assert!(check("application/merge-patch+json"));
        assert!(!check("text/plain"));
        assert!(!check("application/x-www-form-urlencoded"));
        assert!(!is_json(&HeaderMap::new()));
    }

    #[test]
    fn the_openapi_document_names_every_route() {
        let doc = &*OPENAPI_JSON;
        assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
        let paths = &doc["paths"];
        for (path, method) in [
            ("/health", "get"),
            ("/v1/openapi.json", "get"),
            ("/metrics", "get"),
            ("/v1/topics", "get"),
            ("/v1/topics", "post"),
            ("/v1/topics/{topic}", "get"),
            ("/v1/topics/{topic}", "delete"),
            ("/v1/topics/{topic}/messages", "post"),
            (
                "/v1/topics/{topic}/messages/{partition}/{offset}/history",
                "get",
            ),
        ] {
            assert!(paths[path][method].is_object(), "{method} {path}: {doc:#}");
        }
    }
}
