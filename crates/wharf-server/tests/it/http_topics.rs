//! The HTTP topic admin API (`/v1/topics`) and its OpenAPI document, against a real
//! `wharf serve`.

use std::net::SocketAddr;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use serde_json::{json, Value};

use crate::{serve_on, Server};

pub(crate) fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

/// The status and the body parsed as JSON (every answer of this API is JSON).
pub(crate) fn answer(resp: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> (u16, Value) {
    let mut resp = resp.expect("HTTP request");
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().expect("body");
    let json = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("status {status}: body is not JSON ({e}): {text:?}"));
    (status, json)
}

pub(crate) fn post(addr: SocketAddr, path: &str, content_type: &str, body: &str) -> (u16, Value) {
    answer(
        agent()
            .post(&format!("http://{addr}{path}"))
            .header("Content-Type", content_type)
            .send(body),
    )
}

fn post_json(addr: SocketAddr, body: &str) -> (u16, Value) {
    post(addr, "/v1/topics", "application/json", body)
}

pub(crate) fn get(addr: SocketAddr, path: &str) -> (u16, Value) {
    answer(agent().get(&format!("http://{addr}{path}")).call())
}

fn delete(addr: SocketAddr, path: &str) -> (u16, Value) {
    answer(agent().delete(&format!("http://{addr}{path}")).call())
}

/// Asserts the one error shape, and returns the message.
pub(crate) fn error_of(status: u16, body: &Value, want_status: u16, want_code: &str) -> String {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["error"]["code"], want_code, "{body}");
    body["error"]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("no message: {body}"))
        .to_string()
}

#[test]
fn topics_are_created_listed_described_and_deleted_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(serve_on(dir.path()));
    let addr = server.http;

    let (status, created) = post_json(
        addr,
        r#"{"name":"orders","partitions":3,"config":{"retention.ms":"86400000"}}"#,
    );
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["name"], "orders");
    assert_eq!(created["partitions"], 3);
    assert_eq!(created["config"]["retention.ms"], "86400000");
    assert_eq!(created["config"]["cleanup.policy"], "delete");
    assert_eq!(created["config"]["dedup.window.ms"], "300000");
    assert_eq!(created["config"]["message.ttl.ms"], "-1");
    assert_eq!(created["overrides"], json!({"retention.ms": "86400000"}));
    assert!(created["id"].as_str().is_some_and(|id| id.len() == 36));

    // Partitions default to 1, config to none.
    let (status, small) = post_json(addr, r#"{"name":"audit"}"#);
    assert_eq!(status, 201, "{small}");
    assert_eq!(small["partitions"], 1);
    assert_eq!(small["overrides"], json!({}));

    let (status, list) = get(addr, "/v1/topics");
    assert_eq!(status, 200, "{list}");
    let names: Vec<&str> = list["topics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["audit", "orders"]);

    let (status, got) = get(addr, "/v1/topics/orders");
    assert_eq!(status, 200, "{got}");
    assert_eq!(got, created);

    let (status, deleted) = delete(addr, "/v1/topics/orders");
    assert_eq!(status, 200, "{deleted}");
    assert_eq!(deleted["id"], created["id"]);

    let (status, body) = get(addr, "/v1/topics/orders");
    let message = error_of(status, &body, 404, "not_found");
    assert!(message.contains("orders"), "{message}");
    let (status, body) = delete(addr, "/v1/topics/orders");
    error_of(status, &body, 404, "not_found");
    let (status, list) = get(addr, "/v1/topics");
    assert_eq!(status, 200);
    assert_eq!(list["topics"].as_array().unwrap().len(), 1, "{list}");

    let (status, log) = server.stop();
    assert!(status.success(), "{log}");
}

#[test]
fn http_create_refuses_duplicates_and_bad_arguments_with_json_errors() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(serve_on(dir.path()));
    let addr = server.http;

    assert_eq!(post_json(addr, r#"{"name":"dup"}"#).0, 201);
    let (status, body) = post_json(addr, r#"{"name":"dup","partitions":2}"#);
    let message = error_of(status, &body, 409, "already_exists");
    assert!(message.contains("dup"), "{message}");

    for bad in [
        r#"{"name":"no/slash"}"#,
        r#"{"name":"zero","partitions":0}"#,
        r#"{"name":"cfg","config":{"retention.ms":"soon"}}"#,
        r#"{"name":"cfg","config":{"no.such.key":"1"}}"#,
    ] {
        let (status, body) = post_json(addr, bad);
        error_of(status, &body, 400, "invalid_argument");
    }

    // Malformed JSON: serde's message, with where it broke.
    let (status, body) = post_json(addr, r#"{"name": "x","#);
    let message = error_of(status, &body, 400, "invalid_json");
    assert!(message.contains("line 1"), "{message}");
    // A wrong type is a decoding error too.
    let (status, body) = post_json(addr, r#"{"name":"x","partitions":-1}"#);
    error_of(status, &body, 400, "invalid_json");

    // An unknown field is named.
    let (status, body) = post_json(addr, r#"{"name":"x","partitons":2}"#);
    let message = error_of(status, &body, 400, "invalid_json");
    assert!(message.contains("partitons"), "{message}");

    // Not JSON by Content-Type.
    let (status, body) = post(addr, "/v1/topics", "text/plain", r#"{"name":"x"}"#);
    error_of(status, &body, 415, "unsupported_media_type");

    // Over the admin routes' 1 MiB limit.
    let big = format!(r#"{{"name":"x","pad":"{}"}}"#, "a".repeat(2 << 20));
    let (status, body) = post_json(addr, &big);
    error_of(status, &body, 413, "payload_too_large");

    // Nothing above created a topic; unknown methods answer JSON too.
    let (_, list) = get(addr, "/v1/topics");
    assert_eq!(list["topics"].as_array().unwrap().len(), 1, "{list}");
    let (status, body) = post(addr, "/v1/topics/dup", "application/json", "{}");
    error_of(status, &body, 405, "method_not_allowed");
    let (status, body) = get(addr, "/v1/topics/%FF");
    assert!(status == 400 || status == 404, "{status} {body}");
    assert!(body["error"]["code"].is_string(), "{body}");

    let (status, log) = server.stop();
    assert!(status.success(), "{log}");
}

#[test]
fn a_topic_created_over_http_is_seen_by_kafka_clients_and_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(serve_on(dir.path()));
    let (status, created) = post_json(server.http, r#"{"name":"shared","partitions":3}"#);
    assert_eq!(status, 201, "{created}");

    // Metadata for all topics: naming the topic could auto-create it.
    let kafka = server.kafka.expect("Kafka address");
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", kafka.to_string())
        .create()
        .expect("consumer");
    let metadata = consumer
        .fetch_metadata(None, Duration::from_secs(10))
        .expect("metadata");
    let topic = metadata
        .topics()
        .iter()
        .find(|t| t.name() == "shared")
        .expect("the HTTP-created topic in Kafka metadata");
    assert_eq!(topic.partitions().len(), 3);
    drop(consumer);

    let (status, log) = server.stop();
    assert!(status.success(), "{log}");
    let server = Server::start(serve_on(dir.path()));
    let (status, got) = get(server.http, "/v1/topics/shared");
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["id"], created["id"]);
    assert_eq!(got["partitions"], 3);
    let (status, log) = server.stop();
    assert!(status.success(), "{log}");
}

#[test]
fn the_openapi_document_describes_every_topic_route() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(serve_on(dir.path()));
    let (status, doc) = get(server.http, "/v1/openapi.json");
    assert_eq!(status, 200, "{doc}");
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
        "{doc}"
    );
    for (path, method, statuses) in [
        (
            "/v1/topics",
            "post",
            &["201", "400", "409", "413", "415"][..],
        ),
        ("/v1/topics", "get", &["200"][..]),
        ("/v1/topics/{topic}", "get", &["200", "404"][..]),
        ("/v1/topics/{topic}", "delete", &["200", "404"][..]),
        (
            "/v1/topics/{topic}/messages",
            "post",
            &["200", "400", "404", "413", "415"][..],
        ),
        ("/v1/openapi.json", "get", &["200"][..]),
        ("/health", "get", &["200"][..]),
    ] {
        let op = &doc["paths"][path][method];
        assert!(op.is_object(), "{method} {path} missing");
        for s in statuses {
            assert!(op["responses"][s].is_object(), "{method} {path} {s}");
        }
    }
    let schemas = &doc["components"]["schemas"];
    for name in [
        "CreateTopicRequest",
        "Topic",
        "TopicList",
        "ErrorBody",
        "PublishRequest",
        "PublishMessage",
        "PublishResponse",
        "PublishedMessage",
    ] {
        assert!(schemas[name].is_object(), "schema {name} missing");
    }
    for name in ["CreateTopicRequest", "PublishRequest", "PublishMessage"] {
        assert_eq!(
            schemas[name]["additionalProperties"],
            json!(false),
            "{name}: unknown fields are refused, and the document should say so"
        );
    }
    let (status, log) = server.stop();
    assert!(status.success(), "{log}");
}
