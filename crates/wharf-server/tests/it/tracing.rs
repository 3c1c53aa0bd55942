//! OpenTelemetry tracing against a real `wharf serve --otlp-endpoint`: a small OTLP/gRPC
//! collector receives what Wharf exports, and the spans must continue the producer's
//! trace (its `traceparent` record header) with the message's topic, partition, offset
//! and subscription.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message as _, Offset, TopicPartitionList};
use serde_json::{json, Value};

use crate::http_queues::call;
use crate::{serve_on, Server};

/// Spans received, with the service name of their resource.
#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<(String, Span)>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut got = self.spans.lock().unwrap();
        for rs in request.into_inner().resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| kv.value.as_ref()?.value.as_ref())
                .map(|v| match v {
                    AnyValue::StringValue(s) => s.clone(),
                    other => format!("{other:?}"),
                })
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for span in ss.spans {
                    got.push((service.clone(), span));
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// Runs the collector on an ephemeral port in a thread of its own; stops with the
/// returned runtime.
fn start_collector() -> (Collector, SocketAddr, tokio::runtime::Runtime) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let collector = Collector::default();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let service = TraceServiceServer::new(collector.clone());
    rt.spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream_of(listener))
            .await
    });
    (collector, addr, rt)
}

/// A listener as the stream of connections tonic's server takes.
fn tokio_stream_of(
    listener: tokio::net::TcpListener,
) -> impl futures_util::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    futures_util::stream::unfold(listener, |l| async move {
        let conn = l.accept().await.map(|(s, _)| s);
        Some((conn, l))
    })
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn attr(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
        .map(|v| match v {
            AnyValue::StringValue(s) => s.clone(),
            AnyValue::IntValue(i) => i.to_string(),
            other => format!("{other:?}"),
        })
}

const TRACE_ACKED: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ACKED: &str = "00f067aa0ba902b7";
const TRACE_DEAD: &str = "0af7651916cd43dd8448eb211c80319c";
const PARENT_DEAD: &str = "b7ad6b7169203331";
const TRACE_UNSAMPLED: &str = "11111111111111111111111111111111";
const TRACE_HTTP: &str = "5e1f1c4a2b3d4e5f60718293a4b5c6d7";
const PARENT_HTTP: &str = "1a2b3c4d5e6f7081";

#[test]
fn spans_continue_the_producers_trace_through_publish_delivery_ack_and_dead_letter() {
    let (collector, otlp, _rt) = start_collector();
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = serve_on(dir.path());
    cmd.arg("--otlp-endpoint").arg(format!("http://{otlp}"));
    let server = Server::start(cmd);
    let kafka = server.kafka.expect("Kafka address").to_string();
    let topic = "traced";
    let (s, b) = call(
        server.http,
        "POST",
        "/v1/topics",
        &json!({"name": topic, "partitions": 1}),
    );
    assert_eq!(s, 201, "{b}");
    let (s, b) = call(
        server.http,
        "PUT",
        &format!("/v1/topics/{topic}/subscriptions/work"),
        &json!({"max_deliveries": 2, "start": "earliest", "backoff": {"initial_ms": 10, "max_ms": 10}}),
    );
    assert_eq!(s, 201, "{b}");

    // Three messages from a Kafka producer: two traced (sampled), one whose trace is
    // not sampled, and one with no trace at all.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &kafka)
        .set("linger.ms", "0")
        .create()
        .unwrap();
    let sends = [
        ("acked", Some(format!("00-{TRACE_ACKED}-{PARENT_ACKED}-01"))),
        ("dead", Some(format!("00-{TRACE_DEAD}-{PARENT_DEAD}-01"))),
        (
            "unsampled",
            Some(format!("00-{TRACE_UNSAMPLED}-2222222222222222-00")),
        ),
        ("untraced", None),
    ];
    for (value, tp) in &sends {
        let mut headers = OwnedHeaders::new();
        if let Some(tp) = tp {
            headers = headers.insert(Header {
                key: "traceparent",
                value: Some(tp.as_str()),
            });
        }
        let record = FutureRecord::to(topic)
            .key("k")
            .payload(*value)
            .partition(0)
            .headers(headers);
        rt.block_on(producer.send(record, Duration::from_secs(10)))
            .unwrap_or_else(|(e, _)| panic!("send: {e}"));
    }

    // An HTTP publish carries the header among its message headers.
    let (s, b) = call(
        server.http,
        "POST",
        &format!("/v1/topics/{topic}/messages"),
        &json!({"messages": [{"value": "from-http", "partition": 0,
            "headers": {"traceparent": format!("00-{TRACE_HTTP}-{PARENT_HTTP}-01")}}]}),
    );
    assert_eq!(s, 200, "{b}");
    let http_offset = b["messages"][0]["offset"].as_u64().expect("offset");

    // A Kafka consumer reads them (deliver spans for Kafka fetches).
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &kafka)
        .set("group.id", "trace-readers")
        .set("client.id", "trace-reader")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut read = 0;
    while read < sends.len() + 1 {
        assert!(Instant::now() < deadline, "Kafka consumer read {read}");
        if let Some(m) = consumer.poll(Duration::from_millis(200)) {
            let m = m.expect("consume");
            assert_eq!(m.topic(), topic);
            read += 1;
        }
    }
    drop(consumer);

    // The queue: ack the first, nack the second twice (dead-lettered at max 2).
    let pull = |max: u32| -> Vec<Value> {
        let (s, b) = call(
            server.http,
            "POST",
            &format!("/v1/topics/{topic}/subscriptions/work/pull"),
            &json!({"max_messages": max, "wait_ms": 2000, "consumer": "worker-1"}),
        );
        assert_eq!(s, 200, "{b}");
        b["messages"].as_array().cloned().unwrap_or_default()
    };
    let settle = |op: &str, m: &Value| {
        let (s, b) = call(
            server.http,
            "POST",
            &format!("/v1/topics/{topic}/subscriptions/work/{op}"),
            &if op == "nack" {
                json!({"ack_ids": [m["ack_id"]], "reason": "cannot parse"})
            } else {
                json!({"ack_ids": [m["ack_id"]]})
            },
        );
        assert_eq!(s, 200, "{b}");
    };
    let value_of = |m: &Value| m["value"].as_str().unwrap_or_default().to_string();
    let mut first = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while first.len() < sends.len() + 1 {
        assert!(Instant::now() < deadline, "pulled {first:?}");
        first.extend(pull(10));
    }
    let mut dead_offset = None;
    for m in &first {
        match value_of(m).as_str() {
            "dead" => {
                dead_offset = m["offset"].as_u64();
                settle("nack", m);
            }
            _ => settle("ack", m),
        }
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert!(Instant::now() < deadline, "the nacked message came back");
        let again = pull(10);
        if let Some(m) = again.iter().find(|m| value_of(m) == "dead") {
            assert_eq!(m["delivery_count"], 2, "{m}");
            settle("nack", m);
            break;
        }
    }
    let dead_offset = dead_offset.expect("the dead message was pulled");

    // The collector gets the spans within a few export rounds.
    let want = [
        (TRACE_ACKED, "publish traced"),
        (TRACE_ACKED, "deliver traced"),
        (TRACE_ACKED, "ack traced"),
        (TRACE_DEAD, "publish traced"),
        (TRACE_DEAD, "nack traced"),
        (TRACE_DEAD, "redeliver traced"),
        (TRACE_DEAD, "dead-letter traced"),
        (TRACE_HTTP, "publish traced"),
        (TRACE_HTTP, "ack traced"),
    ];
    let deadline = Instant::now() + Duration::from_secs(20);
    let spans = loop {
        let spans = collector.spans.lock().unwrap().clone();
        let have = |t: &str, n: &str| {
            spans
                .iter()
                .any(|(_, s)| hex(&s.trace_id) == t && s.name == n)
        };
        let persist = spans.iter().any(|(_, s)| s.name == "persist traced");
        if persist && want.iter().all(|(t, n)| have(t, n)) {
            break spans;
        }
        assert!(
            Instant::now() < deadline,
            "spans received: {:?}",
            spans
                .iter()
                .map(|(_, s)| (hex(&s.trace_id), s.name.clone()))
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let (status, stderr) = server.stop();
    assert!(status.success(), "{stderr}");
    // One line per Kafka connection opening and closing, with the client id.
    assert!(
        stderr
            .lines()
            .any(|l| l.contains("Kafka connection opened") && l.contains("client_id=trace-reader")),
        "{stderr}"
    );
    assert!(
        stderr
            .lines()
            .any(|l| l.contains("Kafka connection closed") && l.contains("client_id=trace-reader")),
        "{stderr}"
    );

    let mut by_trace: BTreeMap<String, Vec<&Span>> = BTreeMap::new();
    for (service, s) in &spans {
        assert_eq!(service, "wharf");
        by_trace.entry(hex(&s.trace_id)).or_default().push(s);
    }
    // Nothing for the unsampled trace, nor for the message without one: the only
    // other traces are the persist spans' own (roots linked to the messages).
    assert!(!by_trace.contains_key(TRACE_UNSAMPLED), "{by_trace:?}");
    for (trace, list) in &by_trace {
        if ![TRACE_ACKED, TRACE_DEAD, TRACE_HTTP].contains(&trace.as_str()) {
            assert!(
                list.iter()
                    .all(|s| s.name == "persist traced" || s.name == "persist traced.work.dlq"),
                "{trace}: {list:?}"
            );
        }
    }

    for (trace, parent, offset) in [
        (TRACE_ACKED, PARENT_ACKED, 0),
        (TRACE_DEAD, PARENT_DEAD, dead_offset),
        (TRACE_HTTP, PARENT_HTTP, http_offset),
    ] {
        let list = &by_trace[trace];
        // The dead letter keeps the header, so its append to the dead-letter topic
        // is in the same trace; the checks below are of the source topic's spans.
        for s in list.iter().filter(|s| s.name.ends_with("traced")) {
            // Every span of the message's trace is a child of the producer's span and
            // names the message.
            assert_eq!(hex(&s.parent_span_id), parent, "{}", s.name);
            assert_eq!(attr(s, "topic").as_deref(), Some(topic), "{}", s.name);
            assert_eq!(attr(s, "partition").as_deref(), Some("0"), "{}", s.name);
            assert_eq!(attr(s, "offset"), Some(offset.to_string()), "{}", s.name);
            assert_eq!(
                attr(s, "messaging.destination.name").as_deref(),
                Some(topic)
            );
            if !s.name.starts_with("publish") && attr(s, "messaging.client.id").is_none() {
                // Queue spans: the subscription.
                assert_eq!(
                    attr(s, "subscription").as_deref(),
                    Some("work"),
                    "{}",
                    s.name
                );
            }
        }
        // The Kafka fetch's delivery names its consumer's client id.
        assert!(
            list.iter().any(|s| s.name == "deliver traced"
                && attr(s, "messaging.client.id").as_deref() == Some("trace-reader")),
            "{list:?}"
        );
    }
    let dead = &by_trace[TRACE_DEAD];
    assert!(
        dead.iter().any(|s| s.name == "publish traced.work.dlq"
            && attr(s, "topic").as_deref() == Some("traced.work.dlq")),
        "{dead:?}"
    );
    let nacks: Vec<_> = dead.iter().filter(|s| s.name == "nack traced").collect();
    assert_eq!(nacks.len(), 2, "{dead:?}");
    assert!(nacks
        .iter()
        .all(|s| attr(s, "reason").as_deref() == Some("cannot parse")));
    let dl = dead
        .iter()
        .find(|s| s.name == "dead-letter traced")
        .unwrap();
    assert_eq!(
        attr(dl, "dead_letter_topic").as_deref(),
        Some("traced.work.dlq")
    );
    assert_eq!(attr(dl, "delivery_count").as_deref(), Some("2"));
    let acked = &by_trace[TRACE_ACKED];
    let ack = acked.iter().find(|s| s.name == "ack traced").unwrap();
    assert_eq!(attr(ack, "delivery_count").as_deref(), Some("1"));
    let deliver = acked
        .iter()
        .find(|s| s.name == "deliver traced" && attr(s, "subscription").is_some())
        .unwrap();
    assert_eq!(attr(deliver, "consumer").as_deref(), Some("worker-1"));

    // The persist span of the batch links to each traced message's context.
    let linked: Vec<(String, String)> = spans
        .iter()
        .filter(|(_, s)| s.name == "persist traced")
        .flat_map(|(_, s)| &s.links)
        .map(|l| (hex(&l.trace_id), hex(&l.span_id)))
        .collect();
    for (trace, parent) in [(TRACE_ACKED, PARENT_ACKED), (TRACE_DEAD, PARENT_DEAD)] {
        assert!(
            linked.contains(&(trace.to_string(), parent.to_string())),
            "{linked:?}"
        );
    }
}

#[test]
fn without_an_endpoint_nothing_is_traced_and_logs_can_be_json() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = serve_on(dir.path());
    cmd.args(["--log-format", "json"]);
    let child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn wharf");
    let server = Server::adopt(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let line = server
            .next_line(deadline)
            .unwrap_or_else(|| panic!("no ready line; stderr:\n{}", server.stderr()));
        let v: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        if v["fields"]["message"] == "wharf ready" {
            break;
        }
    }
    let (status, stderr) = server.stop();
    assert!(status.success(), "{stderr}");
    let mut saw_start = false;
    for line in stderr.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(v["timestamp"].is_string(), "{line}");
        assert!(v["level"].is_string(), "{line}");
        if v["fields"]["message"] == "starting wharf" {
            saw_start = true;
            assert_eq!(v["fields"]["otlp_endpoint"], "none", "{line}");
            assert_eq!(v["fields"]["log_format"], "json", "{line}");
        }
    }
    assert!(saw_start, "{stderr}");
}
