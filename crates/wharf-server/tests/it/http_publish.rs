//! `POST /v1/topics/{topic}/messages` against a real `wharf serve`: what is stored is
//! read back by a Kafka consumer (librdkafka), keys land where librdkafka's murmur2
//! partitioner puts them, and idempotency keys deduplicate, concurrently and across a
//! SIGKILL.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{json, Value};

use crate::http_topics::{error_of, post};
use crate::{serve_on, Server};

fn create_topic(addr: SocketAddr, name: &str, partitions: u32, config: Value) {
    let body = json!({"name": name, "partitions": partitions, "config": config}).to_string();
    let (status, created) = post(addr, "/v1/topics", "application/json", &body);
    assert_eq!(status, 201, "{created}");
}

fn publish(addr: SocketAddr, topic: &str, messages: Value) -> (u16, Value) {
    post(
        addr,
        &format!("/v1/topics/{topic}/messages"),
        "application/json",
        &json!({ "messages": messages }).to_string(),
    )
}

/// Publishes and expects 200; the answer's `(partition, offset, duplicate)` list.
fn published(addr: SocketAddr, topic: &str, messages: Value) -> Vec<(i32, i64, bool)> {
    let (status, body) = publish(addr, topic, messages);
    assert_eq!(status, 200, "{body}");
    body["messages"]
        .as_array()
        .unwrap_or_else(|| panic!("no messages: {body}"))
        .iter()
        .map(|m| {
            (
                m["partition"].as_i64().unwrap() as i32,
                m["offset"].as_i64().unwrap(),
                m["duplicate"].as_bool().unwrap(),
            )
        })
        .collect()
}

/// A record as a Kafka consumer got it.
#[derive(Debug)]
struct Got {
    offset: i64,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: BTreeMap<String, Option<Vec<u8>>>,
}

fn consumer(server: &Server) -> BaseConsumer {
    ClientConfig::new()
        .set(
            "bootstrap.servers",
            server.kafka.expect("Kafka address").to_string(),
        )
        .set("group.id", "wharf-assign-only")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "100")
        .create()
        .expect("consumer")
}

/// Reads `count` records of one partition from the beginning.
fn consume(server: &Server, topic: &str, partition: i32, count: usize) -> Vec<Got> {
    let consumer = consumer(server);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut got = Vec::new();
    while got.len() < count {
        assert!(
            Instant::now() < deadline,
            "consumed {} of {count}",
            got.len()
        );
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => got.push(Got {
                offset: m.offset(),
                key: m.key().map(<[u8]>::to_vec),
                value: m.payload().map(<[u8]>::to_vec),
                headers: m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                            .collect()
                    })
                    .unwrap_or_default(),
            }),
            Some(Err(e)) => panic!("consumer error: {e}"),
            None => {}
        }
    }
    got
}

/// Sum of the high watermarks of a topic's partitions: the records stored.
fn stored(server: &Server, topic: &str, partitions: i32) -> i64 {
    let c = consumer(server);
    (0..partitions)
        .map(|p| {
            c.fetch_watermarks(topic, p, Duration::from_secs(10))
                .expect("watermarks")
                .1
        })
        .sum()
}

fn header(got: &Got, name: &str) -> Option<String> {
    got.headers
        .get(name)
        .and_then(|v| v.as_deref())
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

#[test]
fn http_published_values_base64_and_headers_are_read_back_by_a_kafka_consumer() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(serve_on(dir.path()));
    let addr = server.http;
    create_topic(addr, "events", 1, json!({}));

    let binary = [0u8, 255, 1, 2, 128];
    let answer = published(
        addr,
        "events",
        json!([
            {"key": "k1", "value": "hello", "headers": {"source": "web", "n": "1"}},
            {"value_base64": STANDARD.encode(binary)},
            {},
            {"key_base64": STANDARD.encode(b"\x01key"), "value": "later", "delay_ms": 1500, "ttl_ms": 60000},
        ]),
    );
    assert_eq!(
        answer,
        vec![(0, 0, false), (0, 1, false), (0, 2, false), (0, 3, false)]
    );
    // A second request continues the offsets.
    assert_eq!(
        published(addr, "events", json!([{"value": "next"}])),
        vec![(0, 4, false)]
    );

    let got = consume(&server, "events", 0, 5);
    assert_eq!(
        got.iter().map(|g| g.offset).collect::<Vec<_>>(),
        [0, 1, 2, 3, 4]
    );
    assert_eq!(got[0].key.as_deref(), Some(&b"k1"[..]));
    assert_eq!(got[0].value.as_deref(), Some(&b"hello"[..]));
    assert_eq!(header(&got[0], "source").as_deref(), Some("web"));
    assert_eq!(header(&got[0], "n").as_deref(), Some("1"));
    assert_eq!(got[0].headers.len(), 2, "{:?}", got[0].headers);
    assert_eq!(got[1].key, None);
    assert_eq!(got[1].value.as_deref(), Some(&binary[..]));
    assert_eq!(got[2].key, None);
    assert_eq!(got[2].value, None, "neither value field: a null value");
    assert!(got[2].headers.is_empty());
    assert_eq!(got[3].key.as_deref(), Some(&b"\x01key"[..]));
    assert_eq!(got[3].value.as_deref(), Some(&b"later"[..]));
    assert_eq!(header(&got[3], "wharf-delay-ms").as_deref(), Some("1500"));
    assert_eq!(header(&got[3], "wharf-ttl-ms").as_deref(), Some("60000"));
    assert_eq!(got[4].value.as_deref(), Some(&b"next"[..]));

    let (status, log) = server.stop();
    assert!(status.success(), "{log}");
}

#[test]
fn http_keys_land_where_librdkafkas_murmur2_partitioner_puts_them_and_unkeyed_spread() {
    const PARTITIONS: i32 = 6;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(serve_on(dir.path()));
    let addr = server.http;
    create_topic(addr, "keyed", PARTITIONS as u32, json!({}));

    let keys: Vec<String> = (0..24)
        .map(|i| format!("customer-{i}"))
        .chain(["", "a", "21", "foobar", "ü-unicode"].map(String::from))
        .collect();

    // Where librdkafka puts them.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let producer: FutureProducer = ClientConfig::new()
        .set(
            "bootstrap.servers",
            server.kafka.expect("Kafka address").to_string(),
        )
        .set("partitioner", "murmur2_random")
        .create()
        .expect("producer");
    let kafka_partitions: Vec<i32> = rt.block_on(async {
        let futures: Vec<_> = keys
            .iter()
            .map(|k| {
                producer
                    .send_result(FutureRecord::to("keyed").key(k).payload("kafka"))
                    .unwrap_or_else(|(e, _)| panic!("enqueue: {e}"))
            })
            .collect();
        let mut out = Vec::new();
        for f in futures {
            let delivery = f
                .await
                .expect("delivery report")
                .unwrap_or_else(|(e, _)| panic!("{e}"));
            out.push(delivery.partition);
        }
        out
    });
    let distinct: std::collections::BTreeSet<_> = kafka_partitions.iter().collect();
    assert!(distinct.len() > 3, "keys spread: {kafka_partitions:?}");

    let by_key: Vec<Value> = keys.iter().map(|k| json!({"key": k})).collect();
    let http: Vec<i32> = published(addr, "keyed", Value::Array(by_key))
        .into_iter()
        .map(|(p, _, _)| p)
        .collect();
    assert_eq!(http, kafka_partitions, "keys: {keys:?}");

    // Without a key, the idempotency key picks the partition the same way.
    let by_id: Vec<Value> = keys
        .iter()
        .map(|k| json!({"idempotency_key": format!("{k}!")}))
        .collect();
    let with_bang: Vec<Value> = keys
        .iter()
        .map(|k| json!({"key": format!("{k}!")}))
        .collect();
    let id_partitions: Vec<i32> = published(addr, "keyed", Value::Array(by_id))
        .into_iter()
        .map(|(p, _, _)| p)
        .collect();
    let key_partitions: Vec<i32> = published(addr, "keyed", Value::Array(with_bang))
        .into_iter()
        .map(|(p, _, _)| p)
        .collect();
    assert_eq!(id_partitions, key_partitions);

    // An explicit partition wins over the key.
    assert_eq!(
        published(
            addr,
            "keyed",
            json!([{"key": "customer-0", "partition": 5}, {"partition": 0}])
        )
        .iter()
        .map(|(p, _, _)| *p)
        .collect::<Vec<_>>(),
        [5, 0]
    );

    // Unkeyed: round robin, each partition gets its share.
    let unkeyed: Vec<Value> = (0..12).map(|i| json!({"value": format!("v{i}")})).collect();
    let mut counts = [0; PARTITIONS as usize];
    for (p, _, _) in published(addr, "keyed", Value::Array(unkeyed)) {
        counts[p as usize] += 1;
    }
    assert_eq!(counts, [2; PARTITIONS as usize]);

    drop(producer);
    let (status, log) = server.stop();
    assert!(status.success(), "{log}");
}

#[test]
fn http_idempotency_keys_store_once_across_retries_races_and_a_sigkill() {
    const PARTITIONS: i32 = 3;
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(serve_on(dir.path()));
    let addr = server.http;
    create_topic(addr, "idem", PARTITIONS as u32, json!({}));

    let batch = json!([
        {"idempotency_key": "a", "value": "first"},
        {"idempotency_key": "b", "value": "second"},
        {"idempotency_key": "a", "value": "first"},
    ]);
    let first = published(addr, "idem", batch.clone());
    assert!(!first[0].2 && !first[1].2, "{first:?}");
    assert_eq!(
        first[2],
        (first[0].0, first[0].1, true),
        "a repeat inside one request is stored once"
    );
    let retry = published(addr, "idem", batch.clone());
    assert_eq!(
        retry,
        first
            .iter()
            .map(|(p, o, _)| (*p, *o, true))
            .collect::<Vec<_>>()
    );
    assert_eq!(stored(&server, "idem", PARTITIONS), 2);

    // Racing requests with the same key: stored once, all told the same offset.
    let racers: Vec<_> = (0..8)
        .map(|i| {
            std::thread::spawn(move || {
                published(
                    addr,
                    "idem",
                    json!([{"idempotency_key": "raced", "value": format!("try {i}")}]),
                )[0]
            })
        })
        .collect();
    let answers: Vec<_> = racers
        .into_iter()
        .map(|t| t.join().expect("racer"))
        .collect();
    assert!(
        answers
            .iter()
            .all(|a| (a.0, a.1) == (answers[0].0, answers[0].1)),
        "{answers:?}"
    );
    assert_eq!(
        answers.iter().filter(|a| !a.2).count(),
        1,
        "exactly one stored it: {answers:?}"
    );
    assert_eq!(stored(&server, "idem", PARTITIONS), 3);

    // Stored but never answered is the same as stored and answered: after a crash the
    // keys are rebuilt from the log.
    server.signal(nix::sys::signal::Signal::SIGKILL);
    server
        .wait_timeout(Duration::from_secs(10))
        .expect("exit after SIGKILL");
    let server = Server::start(serve_on(dir.path()));
    let addr = server.http;
    let after = published(addr, "idem", batch);
    assert_eq!(
        after,
        first
            .iter()
            .map(|(p, o, _)| (*p, *o, true))
            .collect::<Vec<_>>()
    );
    let raced = published(addr, "idem", json!([{"idempotency_key": "raced"}]));
    assert_eq!(raced, vec![(answers[0].0, answers[0].1, true)]);
    assert_eq!(stored(&server, "idem", PARTITIONS), 3);

    // The stored record carries the key as a header, for Kafka consumers too.
    let (p, o, _) = first[0];
    let got = consume(&server, "idem", p, (o + 1) as usize);
    assert_eq!(
        header(&got[o as usize], "wharf-idempotency-key").as_deref(),
        Some("a")
    );

    // With the window at 0, a repeat is stored again.
    create_topic(addr, "nodedup", 1, json!({"dedup.window.ms": "0"}));
    let twice = json!([{"idempotency_key": "x"}, {"idempotency_key": "x"}]);
    assert_eq!(
        published(addr, "nodedup", twice),
        vec![(0, 0, false), (0, 1, false)]
    );

    let (status, log) = server.stop();
    assert!(status.success(), "{log}");
}

#[test]
fn http_publish_errors_are_json_4xx_with_readable_messages() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(serve_on(dir.path()));
    let addr = server.http;
    create_topic(addr, "t", 2, json!({"max.message.bytes": "1000"}));

    let cases: Vec<(Value, u16, &str, &str)> = vec![
        (
            json!([{"value": "a", "value_base64": "YQ=="}]),
            400,
            "invalid_argument",
            "not both",
        ),
        (
            json!([{"value_base64": "not base64!"}]),
            400,
            "invalid_argument",
            "base64",
        ),
        (
            json!([{"key": "a", "key_base64": "YQ=="}]),
            400,
            "invalid_argument",
            "key",
        ),
        (json!([]), 400, "invalid_argument", "no messages"),
        (
            json!([{}, {"partition": 2}]),
            400,
            "invalid_argument",
            "partition 2",
        ),
        (json!([{"ttl_ms": 0}]), 400, "invalid_argument", "ttl_ms"),
        (
            json!([{"delay_ms": 604_800_001u64}]),
            400,
            "invalid_argument",
            "delay_ms",
        ),
        (
            json!([{"delay_ms": -1}]),
            400,
            "invalid_argument",
            "delay_ms",
        ),
        (
            json!([{"ttl_ms": "soon"}]),
            400,
            "invalid_json",
            "expected i64",
        ),
        (
            json!([{"headers": {"wharf-delay-ms": "5"}}]),
            400,
            "invalid_argument",
            "reserved",
        ),
        (json!([{"valeu": "typo"}]), 400, "invalid_json", "valeu"),
        (
            json!([{"value": "x".repeat(2000)}]),
            413,
            "payload_too_large",
            "max.message.bytes",
        ),
    ];
    for (messages, want_status, want_code, needle) in cases {
        let (status, body) = publish(addr, "t", messages.clone());
        let message = error_of(status, &body, want_status, want_code);
        assert!(message.contains(needle), "{messages}: {message}");
    }
    let too_many: Vec<Value> = (0..10_001).map(|_| json!({})).collect();
    let (status, body) = publish(addr, "t", Value::Array(too_many));
    let message = error_of(status, &body, 400, "invalid_argument");
    assert!(message.contains("10000"), "{message}");

    // An unknown field at the top level, a wrong content type, an unknown topic.
    let (status, body) = post(
        addr,
        "/v1/topics/t/messages",
        "application/json",
        r#"{"messages":[],"extra":1}"#,
    );
    let message = error_of(status, &body, 400, "invalid_json");
    assert!(message.contains("extra"), "{message}");
    let (status, body) = post(
        addr,
        "/v1/topics/t/messages",
        "text/plain",
        r#"{"messages":[{}]}"#,
    );
    error_of(status, &body, 415, "unsupported_media_type");
    let (status, body) = publish(addr, "nope", json!([{"value": "x"}]));
    let message = error_of(status, &body, 404, "not_found");
    assert!(message.contains("nope"), "{message}");

    // Over the 16 MiB publish limit; a body over the admin routes' 1 MiB is fine here.
    let big = json!([{"value": "x".repeat(17 << 20)}]);
    let (status, body) = publish(addr, "t", big);
    let message = error_of(status, &body, 413, "payload_too_large");
    assert!(message.contains(&(16 << 20).to_string()), "{message}");
    let (status, body) = publish(addr, "t", json!([{"value": "x".repeat(2 << 20)}]));
    error_of(status, &body, 413, "payload_too_large");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("max.message.bytes")),
        "{body}"
    );

    // None of that stored anything.
    assert_eq!(stored(&server, "t", 2), 0);
    let (status, log) = server.stop();
    assert!(status.success(), "{log}");
}
