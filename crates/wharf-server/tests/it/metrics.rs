//! `GET /metrics`: scraped from a real `wharf serve` before and after real traffic
//! (rdkafka producers and consumer groups, HTTP publish and subscriptions), every
//! scrape parsed with `prometheus-parse` and refused if any line does not parse.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use prometheus_parse::{LineInfo, Scrape, Value};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use serde_json::{json, Value as Json};

use crate::{serve_on, Server};

/// One parsed scrape.
struct Metrics {
    scrape: Scrape,
    text: String,
}

/// `GET /metrics`: 200, the 0.0.4 text content type, and a body every line of which
/// the parser understands (a HELP, a TYPE or a sample with a number, no timestamp).
fn scrape(addr: SocketAddr) -> Metrics {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let mut resp = agent
        .get(&format!("http://{addr}/metrics"))
        .call()
        .expect("GET /metrics");
    assert_eq!(resp.status().as_u16(), 200);
    let ctype = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(
        ctype.starts_with("text/plain; version=0.0.4"),
        "content type {ctype:?}"
    );
    let text = resp.body_mut().read_to_string().expect("body");
    for (n, line) in text.lines().enumerate() {
        match LineInfo::parse(line) {
            LineInfo::Empty | LineInfo::Doc { .. } | LineInfo::Type { .. } => {}
            LineInfo::Sample {
                value, timestamp, ..
            } => {
                assert!(
                    timestamp.is_none() && value.parse::<f64>().is_ok(),
                    "line {}: {line:?} does not parse as a sample",
                    n + 1
                );
            }
            LineInfo::Ignored => panic!("line {}: {line:?} does not parse", n + 1),
        }
    }
    let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("the scrape parses");
    Metrics { scrape, text }
}

impl Metrics {
    /// The value of the counter or gauge `name` whose labels include `labels`, summed
    /// over the series that match (0 when none does).
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.matching(name, labels)
            .map(|v| match v {
                Value::Counter(x) | Value::Gauge(x) | Value::Untyped(x) => *x,
                other => panic!("{name} is not a counter or gauge: {other:?}"),
            })
            .sum()
    }

    /// Whether any series of `name` has `labels`.
    fn has(&self, name: &str, labels: &[(&str, &str)]) -> bool {
        self.matching(name, labels).next().is_some()
    }

    /// Observations of the histogram `name` (its `+Inf` bucket) with `labels`.
    fn observations(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let mut found = false;
        let n = self
            .matching(name, labels)
            .map(|v| match v {
                Value::Histogram(buckets) => {
                    found = true;
                    buckets
                        .iter()
                        .find(|b| b.less_than.is_infinite())
                        .map_or(0.0, |b| b.count)
                }
                other => panic!("{name} is not a histogram: {other:?}"),
            })
            .sum();
        assert!(found, "no histogram {name} {labels:?} in\n{}", self.text);
        n
    }

    fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Value> + 'a {
        self.scrape
            .samples
            .iter()
            .filter(move |s| {
                s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))
            })
            .map(|s| &s.value)
    }

    /// Every metric name in the scrape, histograms also as `_bucket`, `_sum`, `_count`.
    fn names(&self) -> BTreeSet<String> {
        let mut names = BTreeSet::new();
        for s in &self.scrape.samples {
            names.insert(s.metric.clone());
            if matches!(s.value, Value::Histogram(_)) {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{}{suffix}", s.metric));
                }
            }
        }
        names
    }
}

/// Scrapes until `check` holds (a gauge computed at scrape time catching up with a
/// commit, say), failing after 15 s with the last scrape.
fn eventually(addr: SocketAddr, what: &str, check: impl Fn(&Metrics) -> bool) -> Metrics {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let m = scrape(addr);
        if check(&m) {
            return m;
        }
        assert!(
            Instant::now() < deadline,
            "{what}; last scrape:\n{}",
            m.text
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn http(addr: SocketAddr, method: &str, path: &str, body: &Json) -> (u16, Json) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into();
    let url = format!("http://{addr}{path}");
    let resp = match method {
        "GET" => agent.get(&url).call(),
        "DELETE" => agent.delete(&url).call(),
        "PUT" => agent
            .put(&url)
            .header("Content-Type", "application/json")
            .send(body.to_string()),
        _ => agent
            .post(&url)
            .header("Content-Type", "application/json")
            .send(body.to_string()),
    };
    let mut resp = resp.expect("HTTP request");
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Json::Null))
}

fn kafka_addr(server: &Server) -> String {
    server.kafka.expect("Kafka address").to_string()
}

/// Creates `topic` over Kafka; answers the error code name of a failure.
fn create_topic(addr: &str, topic: &str, partitions: i32) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", addr)
        .create()
        .expect("admin client");
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    let results = rt
        .block_on(admin.create_topics([&new], &AdminOptions::new()))
        .expect("create topics");
    match &results[0] {
        Ok(_) => Ok(()),
        Err((_, code)) => Err(format!("{code:?}")),
    }
}

/// Sends `n` records of `size` bytes each with acks=all, over the topic's partitions.
fn produce(addr: &str, topic: &str, partitions: i32, n: usize, size: usize) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", addr)
        .set("acks", "all")
        .set("linger.ms", "5")
        .create()
        .expect("producer");
    let value = vec![b'v'; size];
    for i in 0..n {
        producer
            .send(
                BaseRecord::<(), _>::to(topic)
                    .partition(i as i32 % partitions)
                    .payload(&value),
            )
            .unwrap_or_else(|(e, _)| panic!("enqueue {i}: {e}"));
        producer.poll(Duration::ZERO);
    }
    producer
        .flush(Duration::from_secs(30))
        .expect("every record delivered");
}

/// A group member that reads `n` records and commits synchronously after each.
fn consume_and_commit(addr: &str, group: &str, topic: &str, n: usize) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", addr)
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500")
        .set("fetch.wait.max.ms", "100")
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = 0;
    while seen < n {
        assert!(Instant::now() < deadline, "consumed {seen} of {n}");
        if let Some(Ok(msg)) = consumer.poll(Duration::from_millis(100)) {
            assert_eq!(msg.topic(), topic);
            consumer
                .commit_message(&msg, CommitMode::Sync)
                .expect("synchronous commit");
            seen += 1;
        }
    }
}

const N: usize = 60;
const SIZE: usize = 100;

/// Kafka traffic on a fresh 2-partition topic: `N` records produced, then consumed
/// and committed by `group`. Checks the counters and histograms moved by what was
/// sent, and the group's lag reaching 0.
fn kafka_traffic(server: &Server, topic: &str, group: &str) {
    let addr = kafka_addr(server);
    create_topic(&addr, topic, 2).expect("topic created");
    let t = [("topic", topic)];
    let before = scrape(server.http);
    produce(&addr, topic, 2, N, SIZE);
    let after = scrape(server.http);

    let d = |name: &str, labels: &[(&str, &str)]| {
        after.value(name, labels) - before.value(name, labels)
    };
    // Messages in: exactly the records sent, counted from the batch headers.
    assert_eq!(d("wharf_messages_in_total", &t), N as f64, "{}", after.text);
    // Bytes in: the batches, so the payloads plus per-record and per-batch overhead.
    let bytes_in = d("wharf_bytes_in_total", &t);
    assert!(
        bytes_in >= (N * SIZE) as f64 && bytes_in <= (N * SIZE * 2) as f64,
        "bytes in {bytes_in} for {N} records of {SIZE} bytes"
    );
    let produces = d("wharf_kafka_requests_total", &[("api", "Produce")]);
    assert!(produces >= 1.0, "{}", after.text);
    let timed = after.observations(
        "wharf_kafka_request_duration_seconds",
        &[("api", "Produce")],
    ) - before.observations(
        "wharf_kafka_request_duration_seconds",
        &[("api", "Produce")],
    );
    assert_eq!(timed, produces, "every produce request is timed");
    // Under the default `always` policy every produce waited for an fdatasync.
    let syncs = after.observations("wharf_log_sync_duration_seconds", &[])
        - before.observations("wharf_log_sync_duration_seconds", &[]);
    assert!(syncs >= 1.0, "{}", after.text);
    let synced_batches = after.value("wharf_log_sync_batches_sum", &[])
        - before.value("wharf_log_sync_batches_sum", &[]);
    assert!(synced_batches >= 1.0, "{}", after.text);
    let synced_bytes = after.value("wharf_log_sync_bytes_sum", &[])
        - before.value("wharf_log_sync_bytes_sum", &[]);
    assert!(
        synced_bytes >= bytes_in,
        "synced {synced_bytes} of {bytes_in}"
    );
    assert!(d("wharf_kafka_connections_accepted_total", &[]) >= 1.0);

    consume_and_commit(&addr, group, topic, N);
    let g = [("group", group), ("topic", topic)];
    let after = eventually(server.http, "the group's lag reaches 0", |m| {
        m.has("wharf_group_lag", &g) && m.value("wharf_group_lag", &g) == 0.0
    });
    assert_eq!(
        after.value("wharf_group_committed_offset", &g),
        N as f64,
        "{}",
        after.text
    );
    let fetched = [("topic", topic), ("via", "kafka_fetch")];
    let d = |name: &str, labels: &[(&str, &str)]| {
        after.value(name, labels) - before.value(name, labels)
    };
    // Fetched once each, whole batches as stored: out equals in.
    assert_eq!(d("wharf_messages_out_total", &fetched), N as f64);
    assert_eq!(d("wharf_bytes_out_total", &fetched), bytes_in);
    let fetches = d("wharf_kafka_requests_total", &[("api", "Fetch")]);
    assert!(fetches >= 1.0);
    let timed = after.observations("wharf_kafka_request_duration_seconds", &[("api", "Fetch")])
        - before.observations("wharf_kafka_request_duration_seconds", &[("api", "Fetch")]);
    assert_eq!(timed, fetches, "every fetch is timed");
    assert!(d("wharf_kafka_requests_total", &[("api", "OffsetCommit")]) >= N as f64);
    assert!(d("wharf_kafka_requests_total", &[("api", "JoinGroup")]) >= 1.0);
    assert_eq!(after.value("wharf_topic_high_watermark", &t), N as f64);
    assert_eq!(after.value("wharf_topic_partitions", &t), 2.0);

    // A request that fails: creating the topic again.
    let before = scrape(server.http);
    assert_eq!(
        create_topic(&addr, topic, 2).expect_err("exists"),
        "TopicAlreadyExists"
    );
    let after = scrape(server.http);
    let code = [("code", "TOPIC_ALREADY_EXISTS")];
    assert_eq!(
        after.value("wharf_kafka_errors_total", &code)
            - before.value("wharf_kafka_errors_total", &code),
        1.0,
        "{}",
        after.text
    );
}

/// HTTP traffic on a fresh topic with one subscription (2 deliveries at most, no
/// backoff): publish, pull, ack, nack until dead-lettered, and requests that fail.
/// Checks the subscription's figures and the HTTP counters at each step.
fn http_traffic(server: &Server, topic: &str) {
    let a = server.http;
    let (s, b) = http(
        a,
        "POST",
        "/v1/topics",
        &json!({"name": topic, "partitions": 1}),
    );
    assert_eq!(s, 201, "{b}");
    let sub = format!("/v1/topics/{topic}/subscriptions/s");
    let (s, b) = http(
        a,
        "PUT",
        &sub,
        &json!({"max_deliveries": 2, "backoff": {"initial_ms": 0, "multiplier": 1.0, "max_ms": 0}}),
    );
    assert_eq!(s, 201, "{b}");
    let st = [("topic", topic), ("subscription", "s")];
    let publish_route = [("route", "POST /v1/topics/:topic/messages")];
    let pull_route = [(
        "route",
        "POST /v1/topics/:topic/subscriptions/:subscription/pull",
    )];
    let before = scrape(a);
    let messages: Vec<Json> = (0..10).map(|i| json!({"value": format!("m{i}")})).collect();
    let (s, b) = http(
        a,
        "POST",
        &format!("/v1/topics/{topic}/messages"),
        &json!({ "messages": messages }),
    );
    assert_eq!(s, 200, "{b}");
    let after = scrape(a);
    let t = [("topic", topic)];
    assert_eq!(
        after.value("wharf_messages_in_total", &t) - before.value("wharf_messages_in_total", &t),
        10.0
    );
    let ok = [publish_route[0], ("status", "2xx")];
    assert_eq!(
        after.value("wharf_http_requests_total", &ok)
            - before.value("wharf_http_requests_total", &ok),
        1.0
    );
    assert_eq!(
        after.observations("wharf_http_request_duration_seconds", &publish_route)
            - before.observations("wharf_http_request_duration_seconds", &publish_route),
        1.0
    );
    assert_eq!(
        after.value("wharf_subscription_backlog_messages", &st),
        10.0,
        "{}",
        after.text
    );

    // Pull 4: in flight, delivered, out through the queue.
    let pull = |max: u32| {
        let (s, b) = http(
            a,
            "POST",
            &format!("{sub}/pull"),
            &json!({"max_messages": max, "wait_ms": 2000, "consumer": "c"}),
        );
        assert_eq!(s, 200, "{b}");
        b["messages"].as_array().expect("messages").clone()
    };
    let before = scrape(a);
    let got = pull(4);
    assert_eq!(got.len(), 4);
    let after = scrape(a);
    let pulled = [("topic", topic), ("via", "queue_pull")];
    assert_eq!(
        after.value("wharf_messages_out_total", &pulled)
            - before.value("wharf_messages_out_total", &pulled),
        4.0
    );
    // "m0" … "m3": 2 bytes each.
    assert_eq!(
        after.value("wharf_bytes_out_total", &pulled)
            - before.value("wharf_bytes_out_total", &pulled),
        8.0
    );
    assert_eq!(
        after.observations("wharf_http_request_duration_seconds", &pull_route)
            - before.observations("wharf_http_request_duration_seconds", &pull_route),
        1.0
    );
    assert_eq!(
        after.value("wharf_subscription_in_flight_messages", &st),
        4.0
    );
    assert_eq!(after.value("wharf_subscription_delivered_total", &st), 4.0);
    assert!(after.value("wharf_subscription_oldest_unacked_age_seconds", &st) >= 0.0);

    // Ack 2, nack 2: acked, nacked, back to the window.
    let ids = |msgs: &[Json]| msgs.iter().map(|m| m["ack_id"].clone()).collect::<Vec<_>>();
    let (s, b) = http(
        a,
        "POST",
        &format!("{sub}/ack"),
        &json!({"ack_ids": ids(&got[..2])}),
    );
    assert_eq!(s, 200, "{b}");
    let (s, b) = http(
        a,
        "POST",
        &format!("{sub}/nack"),
        &json!({"ack_ids": ids(&got[2..]), "reason": "test"}),
    );
    assert_eq!(s, 200, "{b}");
    let m = scrape(a);
    assert_eq!(m.value("wharf_subscription_acked_total", &st), 2.0);
    assert_eq!(m.value("wharf_subscription_nacked_total", &st), 2.0);
    assert_eq!(m.value("wharf_subscription_backlog_messages", &st), 8.0);
    assert_eq!(m.value("wharf_subscription_in_flight_messages", &st), 0.0);

    // The nacked two come back (delivery 2), are nacked again and, at 2 deliveries,
    // go to the dead-letter topic.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut again = Vec::new();
    while again.len() < 2 {
        assert!(Instant::now() < deadline, "redelivered {again:?}");
        again.extend(pull(8).into_iter().filter(|m| m["delivery_count"] == 2));
    }
    let (s, b) = http(
        a,
        "POST",
        &format!("{sub}/nack"),
        &json!({"ack_ids": ids(&again), "reason": "again"}),
    );
    assert_eq!(s, 200, "{b}");
    let m = eventually(a, "two messages dead-lettered", |m| {
        m.value("wharf_subscription_dead_lettered_total", &st) == 2.0
    });
    assert_eq!(m.value("wharf_subscription_redelivered_total", &st), 2.0);
    assert_eq!(m.value("wharf_subscription_nacked_total", &st), 4.0);
    // 10 published, 2 acked, 2 dead: 6 left (the other pulled ones are leased).
    assert_eq!(m.value("wharf_subscription_backlog_messages", &st), 6.0);
    assert!(m.value("wharf_subscription_oldest_unacked_age_seconds", &st) > 0.0);

    // Requests that fail count as 4xx of their route, or as unmatched.
    let before = scrape(a);
    assert_eq!(
        http(a, "GET", "/v1/topics/no-such-topic", &Json::Null).0,
        404
    );
    assert_eq!(http(a, "GET", "/no/such/route", &Json::Null).0, 404);
    let (s, _) = http(
        a,
        "POST",
        &format!("{sub}/pull"),
        &json!({"max_messages": 0}),
    );
    assert_eq!(s, 400);
    let after = scrape(a);
    for labels in [
        [("route", "GET /v1/topics/:topic"), ("status", "4xx")],
        [("route", "unmatched"), ("status", "4xx")],
        [pull_route[0], ("status", "4xx")],
    ] {
        assert_eq!(
            after.value("wharf_http_requests_total", &labels)
                - before.value("wharf_http_requests_total", &labels),
            1.0,
            "{labels:?}"
        );
    }
}

#[test]
fn kafka_producers_and_consumer_groups_move_the_counters_by_what_they_sent() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(serve_on(dir.path()));
    kafka_traffic(&server, "metrics-kafka", "metrics-group");
    // Per-partition series only with --metrics-partition-labels.
    let m = scrape(server.http);
    assert!(!m.has("wharf_partition_high_watermark", &[]));
    assert!(!m.has("wharf_partition_group_lag", &[]));
    // Connections end with their clients.
    eventually(server.http, "the clients' connections are closed", |m| {
        m.value("wharf_kafka_connections_open", &[]) == 0.0
    });
    server.stop();
}

#[test]
fn http_publish_and_subscriptions_move_the_queue_figures_and_deleted_topics_leave_the_scrape() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(serve_on(dir.path()));
    http_traffic(&server, "metrics-http");
    let t = [("topic", "metrics-http")];
    assert!(scrape(server.http).has("wharf_topic_partitions", &t));
    let (s, b) = http(
        server.http,
        "DELETE",
        "/v1/topics/metrics-http",
        &Json::Null,
    );
    assert_eq!(s, 200, "{b}");
    let m = scrape(server.http);
    for name in [
        "wharf_topic_partitions",
        "wharf_topic_high_watermark",
        "wharf_subscription_backlog_messages",
    ] {
        assert!(!m.has(name, &t), "{name} still there:\n{}", m.text);
    }
    server.stop();
}

#[test]
fn partition_labels_appear_only_when_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = serve_on(dir.path());
    cmd.env("WHARF_METRICS_PARTITION_LABELS", "true");
    let server = Server::start(cmd);
    let addr = kafka_addr(&server);
    create_topic(&addr, "parts", 3).expect("topic created");
    produce(&addr, "parts", 3, 9, 10);
    consume_and_commit(&addr, "parts-group", "parts", 9);
    let m = eventually(server.http, "per-partition lag 0", |m| {
        (0..3).all(|p| {
            let l = [
                ("group", "parts-group"),
                ("topic", "parts"),
                ("partition", &*p.to_string()),
            ];
            m.has("wharf_partition_group_lag", &l)
                && m.value("wharf_partition_group_lag", &l) == 0.0
        })
    });
    for p in 0..3 {
        let l = [("topic", "parts"), ("partition", &*p.to_string())];
        assert_eq!(m.value("wharf_partition_high_watermark", &l), 3.0);
    }
    server.stop();
}

/// The metric names in the dashboard's PromQL expressions.
fn dashboard_metrics() -> BTreeSet<String> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/grafana/wharf.json"
    );
    let text = std::fs::read_to_string(path).expect("the dashboard");
    let doc: Json = serde_json::from_str(&text).expect("the dashboard is JSON");
    let mut exprs = Vec::new();
    collect_exprs(&doc, &mut exprs);
    assert!(exprs.len() >= 10, "only {} expressions", exprs.len());
    let mut names = BTreeSet::new();
    for e in exprs {
        let mut rest = e.as_str();
        while let Some(i) = rest.find("wharf_") {
            let tail = &rest[i..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            names.insert(tail[..end].to_string());
            rest = &tail[end..];
        }
    }
    names
}

fn collect_exprs(v: &Json, out: &mut Vec<String>) {
    match v {
        Json::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr", Json::String(s)) => out.push(s.clone()),
                    _ => collect_exprs(v, out),
                }
            }
        }
        Json::Array(items) => items.iter().for_each(|i| collect_exprs(i, out)),
        _ => {}
    }
}

#[test]
fn every_metric_the_dashboard_charts_is_in_a_scrape_after_traffic() {
    let wanted = dashboard_metrics();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(serve_on(dir.path()));
    kafka_traffic(&server, "dash-kafka", "dash-group");
    http_traffic(&server, "dash-http");
    let have = scrape(server.http).names();
    let missing: Vec<&String> = wanted.difference(&have).collect();
    assert!(
        missing.is_empty(),
        "charted but not scraped: {missing:?}\nscraped: {have:?}"
    );
    // And every family the broker exports is charted somewhere.
    let families: BTreeSet<String> = have
        .iter()
        .filter(|n| !n.ends_with("_bucket") && !n.ends_with("_sum") && !n.ends_with("_count"))
        .filter(|n| !n.starts_with("wharf_partition_"))
        .cloned()
        .collect();
    let charted = |f: &String| {
        wanted.iter().any(|w| {
            w == f
                || w.strip_prefix(f.as_str())
                    .is_some_and(|s| s.starts_with('_'))
        })
    };
    let uncharted: Vec<&String> = families.iter().filter(|f| !charted(f)).collect();
    assert!(
        uncharted.is_empty(),
        "scraped but not charted: {uncharted:?}"
    );
    server.stop();
}

#[test]
fn back_pressure_counts_held_produces_and_turned_away_publishes() {
    use rdkafka::producer::{FutureProducer, FutureRecord};

    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(serve_on(dir.path()));
    let a = server.http;
    let (s, b) = http(
        a,
        "POST",
        "/v1/topics",
        &json!({"name": "bp", "partitions": 1}),
    );
    assert_eq!(s, 201, "{b}");
    let sub = "/v1/topics/bp/subscriptions/s";
    let (s, b) = http(
        a,
        "PUT",
        sub,
        &json!({"max_backlog_messages": 2, "backlog_policy": "block"}),
    );
    assert_eq!(s, 201, "{b}");
    let publish = |v: &str| {
        http(
            a,
            "POST",
            "/v1/topics/bp/messages",
            &json!({"messages": [{"value": v}]}),
        )
        .0
    };
    assert_eq!(publish("m0"), 200);
    assert_eq!(publish("m1"), 200);
    let t = [("topic", "bp")];
    let throttled = [("topic", "bp"), ("reason", "throttled")];
    let full = [("topic", "bp"), ("reason", "backlog_full")];

    // HTTP: over the limit under `block`, a publish is answered 429 at once.
    let before = scrape(a);
    assert_eq!(publish("m2"), 429);
    let after = scrape(a);
    let rejections =
        |m: &Metrics, l: &[(&str, &str)]| m.value("wharf_backpressure_rejections_total", l);
    assert_eq!(
        rejections(&after, &throttled) - rejections(&before, &throttled),
        1.0
    );

    // Kafka: a produce is held until a consumer drains the backlog (after ~0.5 s).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", kafka_addr(&server))
        .set("acks", "all")
        .set("message.timeout.ms", "20000")
        .create()
        .expect("producer");
    let send = |value: &str| {
        rt.block_on(producer.send(
            FutureRecord::<(), _>::to("bp").partition(0).payload(value),
            Duration::from_secs(20),
        ))
        .map_err(|(e, _)| e)
    };
    let drain = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(500));
        let (_, b) = http(
            a,
            "POST",
            &format!("{sub}/pull"),
            &json!({"max_messages": 10, "wait_ms": 1000}),
        );
        let ids: Vec<Json> = b["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .map(|m| m["ack_id"].clone())
            .collect();
        http(a, "POST", &format!("{sub}/ack"), &json!({ "ack_ids": ids }));
    });
    let before = scrape(a);
    send("held").expect("stored once the backlog drained");
    drain.join().unwrap();
    let after = scrape(a);
    let held_n = after.observations("wharf_produce_throttle_seconds", &t)
        - before.observations("wharf_produce_throttle_seconds", &t);
    assert_eq!(held_n, 1.0, "{}", after.text);
    let held_s = after.value("wharf_produce_throttle_seconds_sum", &t)
        - before.value("wharf_produce_throttle_seconds_sum", &t);
    assert!((0.3..5.5).contains(&held_s), "held {held_s} s");

    // `reject`: refused, over HTTP (409) and Kafka (POLICY_VIOLATION).
    let (s, b) = http(
        a,
        "PUT",
        sub,
        &json!({"max_backlog_messages": 1, "backlog_policy": "reject"}),
    );
    assert_eq!(s, 200, "{b}");
    let before = scrape(a);
    assert_eq!(publish("refused"), 409);
    assert!(send("refused").is_err());
    let after = scrape(a);
    assert_eq!(rejections(&after, &full) - rejections(&before, &full), 2.0);
    let code = [("code", "POLICY_VIOLATION")];
    assert!(
        after.value("wharf_kafka_errors_total", &code)
            - before.value("wharf_kafka_errors_total", &code)
            >= 1.0
    );
    server.stop();
}
