//! HTTP request metrics and `GET /metrics`.
//!
//! Every answered request counts in `wharf_http_requests_total{route,status}`: `route`
//! is the method and the route's template, parameters written `:name`
//! (`POST /v1/topics/:topic/messages`: braces inside label values trip simple
//! exposition parsers and need escaping in PromQL regexes), never the concrete path,
//! so topics and subscriptions do not multiply the series; requests no route matched
//! (404, 405) count as `unmatched`. `status` is the class (`2xx` … `5xx`).
//! Publish and pull also record their latency in
//! `wharf_http_request_duration_seconds{route}`. The handles are made once, when the
//! router is built, in a table the middleware only reads: a request costs a hash
//! lookup of its route template and atomic adds.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics::{counter, histogram, Counter, Histogram};

use super::AppState;

/// Every route of the API: method and template, as in `http::router`. A route missing
/// here counts as `unmatched` (a test checks the list against the OpenAPI document).
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/health"),
    ("GET", "/metrics"),
    ("GET", "/v1/openapi.json"),
    ("GET", "/v1/topics"),
    ("POST", "/v1/topics"),
    ("GET", "/v1/topics/{topic}"),
    ("DELETE", "/v1/topics/{topic}"),
    ("POST", "/v1/topics/{topic}/messages"),
    ("GET", "/v1/topics/{topic}/subscriptions"),
    ("GET", "/v1/topics/{topic}/subscriptions/{subscription}"),
    ("PUT", "/v1/topics/{topic}/subscriptions/{subscription}"),
    ("DELETE", "/v1/topics/{topic}/subscriptions/{subscription}"),
    (
        "POST",
        "/v1/topics/{topic}/subscriptions/{subscription}/pull",
    ),
    (
        "POST",
        "/v1/topics/{topic}/subscriptions/{subscription}/ack",
    ),
    (
        "POST",
        "/v1/topics/{topic}/subscriptions/{subscription}/nack",
    ),
    (
        "POST",
        "/v1/topics/{topic}/subscriptions/{subscription}/extend",
    ),
    (
        "POST",
        "/v1/topics/{topic}/subscriptions/{subscription}/seek",
    ),
    (
        "POST",
        "/v1/topics/{topic}/subscriptions/{subscription}/redrive",
    ),
    (
        "GET",
        "/v1/topics/{topic}/messages/{partition}/{offset}/history",
    ),
];

/// Routes whose latency is recorded.
const TIMED: &[&str] = &[
    "/v1/topics/{topic}/messages",
    "/v1/topics/{topic}/subscriptions/{subscription}/pull",
];

/// The handles of one route: a counter per status class, and maybe a histogram.
struct RouteMetrics {
    by_class: [Counter; 5],
    latency: Option<Histogram>,
}

impl RouteMetrics {
    fn new(route: &str, timed: bool) -> RouteMetrics {
        let class = |c: &'static str| counter!("wharf_http_requests_total", "route" => route.to_string(), "status" => c);
        RouteMetrics {
            by_class: [
                class("1xx"),
                class("2xx"),
                class("3xx"),
                class("4xx"),
                class("5xx"),
            ],
            latency: timed.then(
                || histogram!("wharf_http_request_duration_seconds", "route" => route.to_string()),
            ),
        }
    }
}

/// The table of route handles, built with the router.
pub struct HttpMetrics {
    /// Template → method → handles.
    routes: HashMap<&'static str, Vec<(Method, RouteMetrics)>>,
    unmatched: RouteMetrics,
}

impl HttpMetrics {
    pub fn new() -> HttpMetrics {
        let mut routes: HashMap<&'static str, Vec<(Method, RouteMetrics)>> = HashMap::new();
        for &(method, path) in ROUTES {
            let Ok(m) = Method::from_bytes(method.as_bytes()) else {
                continue;
            };
            let label = format!("{method} {}", route_label(path));
            let handles = RouteMetrics::new(&label, TIMED.contains(&path));
            routes.entry(path).or_default().push((m, handles));
        }
        HttpMetrics {
            routes,
            unmatched: RouteMetrics::new("unmatched", false),
        }
    }

    fn find(&self, method: &Method, path: Option<&str>) -> &RouteMetrics {
        path.and_then(|p| self.routes.get(p))
            .and_then(|ms| ms.iter().find(|(m, _)| m == method))
            .map_or(&self.unmatched, |(_, h)| h)
    }
}

/// `/v1/topics/{topic}` → `/v1/topics/:topic`.
pub fn route_label(template: &str) -> String {
    template.replace('{', ":").replace('}', "")
}

/// Middleware: counts the answer by route and status class, times publish and pull.
pub async fn track(State(table): State<Arc<HttpMetrics>>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.extensions().get::<MatchedPath>().cloned();
    let resp = next.run(req).await;
    let handles = table.find(&method, path.as_ref().map(MatchedPath::as_str));
    let class = usize::from(resp.status().as_u16() / 100).clamp(1, 5) - 1;
    handles.by_class[class].increment(1);
    if let Some(h) = &handles.latency {
        h.record(started.elapsed().as_secs_f64());
    }
    resp
}

/// The Prometheus text exposition format, version 0.0.4.
const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// `GET /metrics`: every metric in the Prometheus text format (see `crate::metrics`).
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "meta",
    responses((status = 200, description = "Metrics in the Prometheus text exposition format 0.0.4", content_type = "text/plain"))
)]
pub async fn scrape(State(state): State<AppState>) -> Response {
    let body = state.metrics.render(&state.broker, &state.queues).await;
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE))],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_of_the_openapi_document_has_its_handles() {
        let doc = serde_json::to_value(<super::super::ApiDoc as utoipa::OpenApi>::openapi())
            .expect("document");
        let mut documented = Vec::new();
        for (path, ops) in doc["paths"].as_object().expect("paths") {
            for method in ops.as_object().expect("operations").keys() {
                documented.push((method.to_uppercase(), path.clone()));
            }
        }
        documented.sort();
        let mut listed: Vec<(String, String)> = ROUTES
            .iter()
            .map(|(m, p)| (m.to_string(), p.to_string()))
            .collect();
        listed.sort();
        assert_eq!(documented, listed);
        let table = HttpMetrics::new();
        for (m, p) in ROUTES {
            let method = Method::from_bytes(m.as_bytes()).expect("method");
            assert!(
                !std::ptr::eq(table.find(&method, Some(p)), &table.unmatched),
                "{m} {p}"
            );
        }
        assert_eq!(
            route_label("/v1/topics/{topic}/subscriptions/{subscription}/pull"),
            "/v1/topics/:topic/subscriptions/:subscription/pull"
        );
    }
}
