//! Queue subscriptions over HTTP against a real `wharf serve`: fan-out, competing
//! consumers, redelivery, backoff, dead letters and redrive, key order, delay and TTL,
//! back-pressure, seek, and a SIGKILL in the middle.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::{json, Value};

use crate::{serve_on, Server};

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

fn answer(resp: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> (u16, Value) {
    let mut resp = resp.expect("HTTP request");
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().expect("body");
    let json = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("status {status}: body is not JSON ({e}): {text:?}"));
    (status, json)
}

pub(crate) fn call(addr: SocketAddr, method: &str, path: &str, body: &Value) -> (u16, Value) {
    let url = format!("http://{addr}{path}");
    let a = agent();
    match method {
        "GET" => answer(a.get(&url).call()),
        "DELETE" => answer(a.delete(&url).call()),
        "PUT" => answer(
            a.put(&url)
                .header("Content-Type", "application/json")
                .send(body.to_string()),
        ),
        _ => answer(
            a.post(&url)
                .header("Content-Type", "application/json")
                .send(body.to_string()),
        ),
    }
}

/// A broker, one topic, helpers for its subscriptions.
struct Q {
    server: Server,
    topic: String,
}

impl Q {
    fn start(dir: &std::path::Path, topic: &str, partitions: u32) -> Q {
        let server = Server::start(serve_on(dir));
        let q = Q {
            server,
            topic: topic.to_string(),
        };
        let (s, b) = q.call(
            "POST",
            "/v1/topics",
            &json!({"name": topic, "partitions": partitions}),
        );
        assert_eq!(s, 201, "{b}");
        q
    }

    fn call(&self, method: &str, path: &str, body: &Value) -> (u16, Value) {
        call(self.server.http, method, path, body)
    }

    fn sub_path(&self, sub: &str, op: &str) -> String {
        format!("/v1/topics/{}/subscriptions/{sub}{op}", self.topic)
    }

    fn subscribe(&self, sub: &str, settings: Value) -> Value {
        let (s, b) = self.call("PUT", &self.sub_path(sub, ""), &settings);
        assert_eq!(s, 201, "{b}");
        b
    }

    /// Publishes messages; answers each one's (partition, offset).
    fn publish(&self, messages: Value) -> (u16, Value) {
        self.call(
            "POST",
            &format!("/v1/topics/{}/messages", self.topic),
            &json!({ "messages": messages }),
        )
    }

    fn publish_ok(&self, messages: Value) -> Vec<(u64, u64)> {
        let (s, b) = self.publish(messages);
        assert!(s == 200 || s == 201, "{s} {b}");
        b["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["partition"].as_u64().unwrap(),
                    m["offset"].as_u64().unwrap(),
                )
            })
            .collect()
    }

    fn pull(&self, sub: &str, consumer: &str, max: u32, wait_ms: u64) -> Vec<Value> {
        let (s, b) = self.call(
            "POST",
            &self.sub_path(sub, "/pull"),
            &json!({"max_messages": max, "wait_ms": wait_ms, "consumer": consumer}),
        );
        assert_eq!(s, 200, "{b}");
        b["messages"].as_array().unwrap().clone()
    }

    fn ack(&self, sub: &str, msgs: &[Value]) -> Value {
        let ids: Vec<&Value> = msgs.iter().map(|m| &m["ack_id"]).collect();
        let (s, b) = self.call(
            "POST",
            &self.sub_path(sub, "/ack"),
            &json!({ "ack_ids": ids }),
        );
        assert_eq!(s, 200, "{b}");
        b
    }

    fn nack(&self, sub: &str, msgs: &[Value], reason: &str) -> Value {
        let ids: Vec<&Value> = msgs.iter().map(|m| &m["ack_id"]).collect();
        let (s, b) = self.call(
            "POST",
            &self.sub_path(sub, "/nack"),
            &json!({ "ack_ids": ids, "reason": reason }),
        );
        assert_eq!(s, 200, "{b}");
        b
    }

    fn stats(&self, sub: &str) -> Value {
        let (s, b) = self.call("GET", &self.sub_path(sub, ""), &json!(null));
        assert_eq!(s, 200, "{b}");
        b["stats"].clone()
    }

    /// Pulls until `n` messages came or `timeout` passed.
    fn pull_n(&self, sub: &str, n: usize, timeout: Duration) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        let mut got = Vec::new();
        while got.len() < n && Instant::now() < deadline {
            got.extend(self.pull(sub, "c", (n - got.len()) as u32, 500));
        }
        got
    }
}

fn values(msgs: &[Value]) -> Vec<String> {
    msgs.iter()
        .map(|m| m["value"].as_str().unwrap().to_string())
        .collect()
}

fn batch(prefix: &str, n: usize) -> Value {
    Value::Array(
        (0..n)
            .map(|i| json!({"value": format!("{prefix}{i}")}))
            .collect(),
    )
}

#[test]
fn every_subscription_gets_every_message_published_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let q = Q::start(dir.path(), "fan", 2);
    q.publish_ok(batch("before", 3));
    q.subscribe("a", json!({}));
    q.subscribe("b", json!({}));
    q.subscribe("all", json!({"start": "earliest"}));
    q.publish_ok(batch("m", 10));
    for sub in ["a", "b"] {
        let got = q.pull_n(sub, 10, Duration::from_secs(10));
        let mut v = values(&got);
        v.sort();
        let mut want: Vec<String> = (0..10).map(|i| format!("m{i}")).collect();
        want.sort();
        assert_eq!(v, want, "subscription {sub}");
        assert!(got.iter().all(|m| m["delivery_count"] == 1));
        q.ack(sub, &got);
        assert!(q.pull(sub, "c", 10, 0).is_empty());
    }
    assert_eq!(q.pull_n("all", 13, Duration::from_secs(10)).len(), 13);
    // The same message has the same id in every subscription.
    let (s, list) = q.call("GET", "/v1/topics/fan/subscriptions", &json!(null));
    assert_eq!(s, 200);
    assert_eq!(list["subscriptions"].as_array().unwrap().len(), 3);
}

#[test]
fn competing_consumers_share_a_subscription_without_losing_or_doubling() {
    let dir = tempfile::tempdir().unwrap();
    let q = Q::start(dir.path(), "work", 3);
    q.subscribe("workers", json!({"ack_deadline_ms": 60000}));
    let total = 300;
    q.publish_ok(batch("job", total));
    let addr = q.server.http;
    let workers: Vec<_> = (0..3)
        .map(|w| {
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                let deadline = Instant::now() + Duration::from_secs(20);
                while Instant::now() < deadline {
                    let (s, b) = call(
                        addr,
                        "POST",
                        "/v1/topics/work/subscriptions/workers/pull",
                        &json!({"max_messages": 7, "wait_ms": 300, "consumer": format!("w{w}")}),
                    );
                    assert_eq!(s, 200, "{b}");
                    let msgs = b["messages"].as_array().unwrap().clone();
                    if msgs.is_empty() {
                        break;
                    }
                    let ids: Vec<Value> = msgs.iter().map(|m| m["ack_id"].clone()).collect();
                    let (s, r) = call(
                        addr,
                        "POST",
                        "/v1/topics/work/subscriptions/workers/ack",
                        &json!({ "ack_ids": ids }),
                    );
                    assert_eq!(s, 200, "{r}");
                    assert_eq!(r["succeeded"].as_u64(), Some(msgs.len() as u64), "{r}");
                    seen.extend(
                        msgs.iter()
                            .map(|m| m["message_id"].as_str().unwrap().to_string()),
                    );
                }
                seen
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut per_worker = Vec::new();
    for w in workers {
        let seen = w.join().unwrap();
        per_worker.push(seen.len());
        all.extend(seen);
    }
    let unique: BTreeSet<&String> = all.iter().collect();
    assert_eq!(all.len(), total, "doubled deliveries: {per_worker:?}");
    assert_eq!(unique.len(), total);
    assert!(
        per_worker.iter().filter(|n| **n > 0).count() >= 2,
        "{per_worker:?}"
    );
    let stats = q.stats("workers");
    assert_eq!(stats["backlog"], 0, "{stats}");
    assert_eq!(stats["acked"], total as u64, "{stats}");
}

#[test]
fn an_unacked_message_comes_back_after_its_ack_deadline_with_delivery_count_2() {
    let dir = tempfile::tempdir().unwrap();
    let q = Q::start(dir.path(), "slow", 1);
    q.subscribe("s", json!({"ack_deadline_ms": 500}));
    q.publish_ok(json!([{"value": "x"}]));
    let first = q.pull("s", "a", 1, 2000);
    assert_eq!(first.len(), 1);
    assert_eq!(first[0]["delivery_count"], 1);
    assert!(
        q.pull("s", "b", 1, 0).is_empty(),
        "leased: not delivered twice at once"
    );
    let t = Instant::now();
    let second = q.pull("s", "b", 1, 5000);
    assert_eq!(second.len(), 1);
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(second[0]["delivery_count"], 2);
    assert_eq!(second[0]["message_id"], first[0]["message_id"]);
    // The first delivery's lease is over: its nack is stale, the new one's ack counts.
    let r = q.nack("s", &first, "late");
    assert_eq!(r["results"][0]["status"], "stale", "{r}");
    let r = q.ack("s", &second);
    assert_eq!(r["results"][0]["status"], "ok", "{r}");
    // Extend keeps a lease past its deadline.
    q.publish_ok(json!([{"value": "y"}]));
    let m = q.pull("s", "a", 1, 2000);
    let (s, r) = q.call(
        "POST",
        &q.sub_path("s", "/extend"),
        &json!({"ack_ids": [m[0]["ack_id"]], "deadline_ms": 3000}),
    );
    assert_eq!((s, &r["results"][0]["status"]), (200, &json!("ok")), "{r}");
    assert!(q.pull("s", "b", 1, 1200).is_empty(), "extended lease held");
}

#[test]
fn nacks_back_off_longer_each_time_then_dead_letter_with_origin_headers_and_redrive() {
    let dir = tempfile::tempdir().unwrap();
    let q = Q::start(dir.path(), "pay", 1);
    q.subscribe(
        "s",
        json!({"max_deliveries": 3, "backoff": {"initial_ms": 300, "multiplier": 3.0, "max_ms": 10000}}),
    );
    let published =
        q.publish_ok(json!([{"key": "k1", "value": "poison", "headers": {"trace": "abc"}}]));
    let mut gaps = Vec::new();
    let mut last = q.pull("s", "c", 1, 2000);
    let mut id = last[0]["message_id"].clone();
    for n in 1..=2 {
        assert_eq!(last[0]["delivery_count"], n);
        q.nack("s", &last, &format!("boom {n}"));
        let t = Instant::now();
        last = q.pull("s", "c", 1, 10_000);
        gaps.push(t.elapsed());
        assert_eq!(last.len(), 1);
        assert_eq!(last[0]["message_id"], id);
    }
    // 300 ms, then 900 ms (±20% jitter).
    assert!(gaps[0] >= Duration::from_millis(200), "{gaps:?}");
    assert!(gaps[1] >= Duration::from_millis(650), "{gaps:?}");
    // Grows: by about 600 ms nominally, at least 360 ms with the jitter. A loaded
    // machine adds about the same delay to both gaps, so compare the difference.
    assert!(gaps[1] >= gaps[0] + Duration::from_millis(250), "{gaps:?}");
    q.nack("s", &last, "boom 3");

    // The third failure was the last delivery: the message is in the dead-letter topic.
    let dlq = "pay.s.dlq";
    let deadline = Instant::now() + Duration::from_secs(10);
    while q.call("GET", &format!("/v1/topics/{dlq}"), &json!(null)).0 != 200 {
        assert!(Instant::now() < deadline, "no dead-letter topic");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (s, b) = call(
        q.server.http,
        "PUT",
        &format!("/v1/topics/{dlq}/subscriptions/inspect"),
        &json!({"start": "earliest"}),
    );
    assert_eq!(s, 201, "{b}");
    let (s, b) = call(
        q.server.http,
        "POST",
        &format!("/v1/topics/{dlq}/subscriptions/inspect/pull"),
        &json!({"max_messages": 10, "wait_ms": 5000}),
    );
    assert_eq!(s, 200, "{b}");
    let dead = b["messages"].as_array().unwrap();
    assert_eq!(dead.len(), 1, "{b}");
    let h = &dead[0]["headers"];
    assert_eq!(dead[0]["value"], "poison");
    assert_eq!(dead[0]["key"], "k1");
    assert_eq!(h["trace"], "abc");
    assert_eq!(h["wharf-dlq-topic"], "pay");
    assert_eq!(h["wharf-dlq-partition"], published[0].0.to_string());
    assert_eq!(h["wharf-dlq-offset"], published[0].1.to_string());
    assert_eq!(h["wharf-dlq-subscription"], "s");
    assert_eq!(h["wharf-dlq-delivery-count"], "3");
    assert_eq!(h["wharf-dlq-reason"], "boom 3");
    let first: i64 = h["wharf-dlq-first-failure-ms"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let last_f: i64 = h["wharf-dlq-last-failure-ms"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(first > 0 && last_f >= first + 900, "{h}");
    assert!(q.pull("s", "c", 1, 500).is_empty());
    let stats = q.stats("s");
    assert_eq!(
        (stats["dead_lettered"].as_u64(), stats["backlog"].as_u64()),
        (Some(1), Some(0)),
        "{stats}"
    );

    // Redrive: the message is delivered again, its count starting over.
    let (s, r) = q.call("POST", &q.sub_path("s", "/redrive"), &json!({}));
    assert_eq!((s, &r["redriven"]), (200, &json!(1)), "{r}");
    let back = q.pull("s", "c", 1, 2000);
    assert_eq!(back.len(), 1);
    id = back[0]["message_id"].clone();
    assert_eq!(id, last[0]["message_id"]);
    assert_eq!(back[0]["delivery_count"], 1);
    q.ack("s", &back);
    let (_, r) = q.call("POST", &q.sub_path("s", "/redrive"), &json!({}));
    assert_eq!(r["redriven"], 0, "a dead letter is redriven once");
}

#[test]
fn ordered_by_key_holds_back_only_the_poisoned_key() {
    let dir = tempfile::tempdir().unwrap();
    let q = Q::start(dir.path(), "ord", 1);
    q.subscribe(
        "s",
        json!({"ordered_by_key": true, "max_deliveries": 2, "backoff": {"initial_ms": 1500}}),
    );
    q.publish_ok(json!([
        {"key": "A", "value": "A1"}, {"key": "B", "value": "B1"}, {"key": "A", "value": "A2"},
        {"key": "B", "value": "B2"}, {"key": "C", "value": "C1"}, {"key": "B", "value": "B3"}
    ]));
    let first = q.pull("s", "c", 10, 2000);
    assert_eq!(
        values(&first),
        vec!["A1", "B1", "C1"],
        "one message per key at a time"
    );
    let (a1, rest): (Vec<Value>, Vec<Value>) = first.into_iter().partition(|m| m["value"] == "A1");
    q.nack("s", &a1, "poison");
    q.ack("s", &rest);
    // A is parked for its backoff; B flows on in order.
    let b2 = q.pull("s", "c", 10, 1000);
    assert_eq!(values(&b2), vec!["B2"]);
    q.ack("s", &b2);
    let b3 = q.pull("s", "c", 10, 1000);
    assert_eq!(values(&b3), vec!["B3"]);
    q.ack("s", &b3);
    // A1 comes back after its backoff, ahead of A2; failing again it is dead-lettered
    // and A2 follows.
    let again = q.pull("s", "c", 10, 5000);
    assert_eq!(values(&again), vec!["A1"]);
    assert_eq!(again[0]["delivery_count"], 2);
    q.nack("s", &again, "poison");
    let a2 = q.pull("s", "c", 10, 5000);
    assert_eq!(values(&a2), vec!["A2"]);
}

#[test]
fn delayed_messages_wait_and_expired_ones_are_dead_lettered() {
    let dir = tempfile::tempdir().unwrap();
    let q = Q::start(dir.path(), "later", 1);
    q.subscribe("s", json!({}));
    q.publish_ok(json!([{"value": "delayed", "delay_ms": 1200}, {"value": "now"}]));
    let t = Instant::now();
    let now = q.pull("s", "c", 10, 0);
    assert_eq!(
        values(&now),
        vec!["now"],
        "the delayed message waits; others pass it"
    );
    q.ack("s", &now);
    let later = q.pull("s", "c", 10, 5000);
    assert_eq!(values(&later), vec!["delayed"]);
    assert!(
        t.elapsed() >= Duration::from_millis(900),
        "{:?}",
        t.elapsed()
    );
    q.ack("s", &later);

    q.publish_ok(json!([{"value": "stale", "ttl_ms": 200}, {"value": "fresh", "ttl_ms": 60000}]));
    std::thread::sleep(Duration::from_millis(500));
    let got = q.pull("s", "c", 10, 1000);
    assert_eq!(values(&got), vec!["fresh"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stats = q.stats("s");
        if stats["dead_lettered"] == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "{stats}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (s, _) = call(
        q.server.http,
        "PUT",
        "/v1/topics/later.s.dlq/subscriptions/x",
        &json!({"start": "earliest"}),
    );
    assert_eq!(s, 201);
    let (_, b) = call(
        q.server.http,
        "POST",
        "/v1/topics/later.s.dlq/subscriptions/x/pull",
        &json!({"max_messages": 5, "wait_ms": 3000}),
    );
    let dead = b["messages"].as_array().unwrap();
    assert_eq!(dead.len(), 1, "{b}");
    assert_eq!(dead[0]["value"], "stale");
    assert_eq!(dead[0]["headers"]["wharf-dlq-reason"], "expired");
}

#[test]
fn a_full_backlog_rejects_or_throttles_publishers_until_consumers_catch_up() {
    let dir = tempfile::tempdir().unwrap();
    let q = Q::start(dir.path(), "bp", 1);
    q.subscribe(
        "strict",
        json!({"max_backlog_messages": 3, "backlog_policy": "reject"}),
    );
    q.publish_ok(batch("m", 3));
    let (s, b) = q.publish(batch("over", 1));
    assert_eq!(s, 409, "{b}");
    assert_eq!(b["error"]["code"], "backlog_full");
    assert!(
        b["error"]["message"].as_str().unwrap().contains("strict"),
        "{b}"
    );
    let got = q.pull("strict", "c", 1, 1000);
    q.ack("strict", &got);
    q.publish_ok(batch("again", 1));
    // Nothing was stored by the refused publish.
    let rest = q.pull_n("strict", 3, Duration::from_secs(5));
    assert_eq!(values(&rest), vec!["m1", "m2", "again0"]);
    q.ack("strict", &rest);

    let (s, _) = q.call(
        "PUT",
        &q.sub_path("strict", ""),
        &json!({"max_backlog_messages": 2, "backlog_policy": "block"}),
    );
    assert_eq!(s, 200);
    q.publish_ok(batch("b", 2));
    let resp = agent()
        .post(&format!("http://{}/v1/topics/bp/messages", q.server.http))
        .header("Content-Type", "application/json")
        .send(json!({"messages": [{"value": "wait"}]}).to_string())
        .unwrap();
    assert_eq!(resp.status().as_u16(), 429);
    assert!(resp.headers().get("retry-after").is_some());
    let got = q.pull_n("strict", 2, Duration::from_secs(5));
    q.ack("strict", &got);
    q.publish_ok(batch("flows", 1));
}

#[test]
fn seek_moves_a_subscription_back_by_offset_and_by_time() {
    let dir = tempfile::tempdir().unwrap();
    let q = Q::start(dir.path(), "replay", 1);
    q.subscribe("s", json!({}));
    q.publish_ok(batch("m", 3));
    std::thread::sleep(Duration::from_millis(30));
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    q.publish_ok(batch("n", 2));
    let all = q.pull_n("s", 5, Duration::from_secs(5));
    q.ack("s", &all);
    let (s, r) = q.call("POST", &q.sub_path("s", "/seek"), &json!({"offset": 1}));
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["positions"], json!([{"partition": 0, "offset": 1}]));
    let again = q.pull_n("s", 4, Duration::from_secs(5));
    assert_eq!(values(&again), vec!["m1", "m2", "n0", "n1"]);
    assert!(again.iter().all(|m| m["delivery_count"] == 1));
    let (s, _) = q.call("POST", &q.sub_path("s", "/seek"), &json!({"time": t}));
    assert_eq!(s, 200);
    let from_time = q.pull_n("s", 2, Duration::from_secs(5));
    assert_eq!(values(&from_time), vec!["n0", "n1"]);
    let (s, e) = q.call(
        "POST",
        &q.sub_path("s", "/seek"),
        &json!({"offset": 1, "time": t}),
    );
    assert_eq!(s, 400, "{e}");
}

#[test]
fn after_sigkill_no_unacked_message_is_lost_and_no_acked_one_comes_back() {
    let dir = tempfile::tempdir().unwrap();
    let q = Q::start(dir.path(), "crash", 2);
    q.subscribe("s", json!({"max_deliveries": 0}));
    q.publish_ok(batch("m", 40));
    let got = q.pull_n("s", 40, Duration::from_secs(10));
    assert_eq!(got.len(), 40);
    let (acked, unacked): (Vec<Value>, Vec<Value>) = got
        .into_iter()
        .partition(|m| m["offset"].as_u64().unwrap() % 2 == 0);
    q.ack("s", &acked);
    q.server.signal(Signal::SIGKILL);
    let mut server = q.server;
    assert!(server.wait_timeout(Duration::from_secs(10)).is_some());
    drop(server);

    let server = Server::start(serve_on(dir.path()));
    let q = Q {
        server,
        topic: "crash".into(),
    };
    let back = q.pull_n("s", 40, Duration::from_secs(5));
    let ids = |m: &[Value]| -> BTreeMap<String, u64> {
        m.iter()
            .map(|m| {
                (
                    m["message_id"].as_str().unwrap().to_string(),
                    m["delivery_count"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    let back_ids = ids(&back);
    let want: BTreeSet<String> = ids(&unacked).into_keys().collect();
    assert_eq!(back_ids.keys().cloned().collect::<BTreeSet<_>>(), want);
    assert!(
        back_ids.values().all(|c| *c == 2),
        "delivery counts survive: {back_ids:?}"
    );
    q.ack("s", &back);
    assert_eq!(q.stats("s")["backlog"], 0);
}

#[test]
fn bad_requests_get_a_4xx_with_a_readable_message() {
    let dir = tempfile::tempdir().unwrap();
    let q = Q::start(dir.path(), "bad", 1);
    q.subscribe("s", json!({}));
    let cases = [
        (
            "PUT",
            q.sub_path("s", ""),
            json!({"ack_deadline_ms": 0}),
            400,
        ),
        ("PUT", q.sub_path("s", ""), json!({"nope": 1}), 400),
        ("PUT", q.sub_path("bad/name", ""), json!({}), 404),
        (
            "PUT",
            "/v1/topics/none/subscriptions/s".to_string(),
            json!({}),
            404,
        ),
        ("GET", q.sub_path("missing", ""), json!(null), 404),
        (
            "POST",
            q.sub_path("s", "/pull"),
            json!({"max_messages": 0}),
            400,
        ),
        (
            "POST",
            q.sub_path("s", "/pull"),
            json!({"max_messages": 5000}),
            400,
        ),
        (
            "POST",
            q.sub_path("s", "/ack"),
            json!({"ack_ids": ["garbage"]}),
            400,
        ),
        ("POST", q.sub_path("s", "/ack"), json!({"ack_ids": []}), 400),
        (
            "POST",
            q.sub_path("s", "/nack"),
            json!({"ack_ids": ["1-2"]}),
            400,
        ),
        (
            "POST",
            q.sub_path("s", "/extend"),
            json!({"ack_ids": ["0-0-1"], "deadline_ms": 0}),
            400,
        ),
        ("POST", q.sub_path("s", "/seek"), json!({}), 400),
    ];
    for (method, path, body, want) in cases {
        let (s, b) = q.call(method, &path, &body);
        assert_eq!(s, want, "{method} {path} {body}: {b}");
        assert!(
            b["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{b}"
        );
    }
    let (s, b) = q.call(
        "POST",
        &q.sub_path("s", "/ack"),
        &json!({"ack_ids": ["0-99-1"]}),
    );
    assert_eq!(s, 200);
    assert_eq!(b["results"][0]["status"], "unknown");
    // A default dead-letter topic name that would be too long is refused up front.
    let long = "x".repeat(200);
    let (s, b) = q.call("PUT", &q.sub_path(&long, ""), &json!({}));
    assert_eq!(s, 201, "{b}");
    let (_, t) = q.call("POST", "/v1/topics", &json!({"name": "y".repeat(100)}));
    let (s, b) = q.call(
        "PUT",
        &format!(
            "/v1/topics/{}/subscriptions/{long}",
            t["name"].as_str().unwrap()
        ),
        &json!({}),
    );
    assert_eq!(s, 400, "{b}");
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("dead_letter_topic"),
        "{b}"
    );

    let (s, b) = q.call("DELETE", &q.sub_path("s", ""), &json!(null));
    assert_eq!(s, 200, "{b}");
    assert_eq!(q.call("GET", &q.sub_path("s", ""), &json!(null)).0, 404);

    // Subscriptions go with their topic; a topic made anew under the name has none.
    q.subscribe("s", json!({}));
    assert_eq!(q.call("DELETE", "/v1/topics/bad", &json!(null)).0, 200);
    assert_eq!(q.call("POST", "/v1/topics", &json!({"name": "bad"})).0, 201);
    assert_eq!(q.call("GET", &q.sub_path("s", ""), &json!(null)).0, 404);
    let (s, list) = q.call("GET", "/v1/topics/bad/subscriptions", &json!(null));
    assert_eq!(
        (s, list["subscriptions"].as_array().unwrap().len()),
        (200, 0),
        "{list}"
    );
}

#[test]
fn kafka_producers_are_held_back_by_a_blocking_backlog_and_refused_by_a_rejecting_one() {
    use rdkafka::config::ClientConfig;
    use rdkafka::error::{KafkaError, RDKafkaErrorCode};
    use rdkafka::producer::{FutureProducer, FutureRecord};

    let dir = tempfile::tempdir().unwrap();
    let q = Q::start(dir.path(), "kbp", 1);
    q.subscribe(
        "s",
        json!({"max_backlog_messages": 2, "backlog_policy": "block"}),
    );
    q.publish_ok(batch("m", 2));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", q.server.kafka.unwrap().to_string())
        .set("acks", "all")
        .set("message.timeout.ms", "20000")
        .create()
        .expect("producer");
    let send = |value: &str| {
        rt.block_on(producer.send(
            FutureRecord::<(), _>::to("kbp").partition(0).payload(value),
            Duration::from_secs(20),
        ))
        .map_err(|(e, _)| e)
    };
    let addr = q.server.http;
    let drain = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1500));
        let (_, b) = call(
            addr,
            "POST",
            "/v1/topics/kbp/subscriptions/s/pull",
            &json!({"max_messages": 10, "wait_ms": 1000}),
        );
        let ids: Vec<Value> = b["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["ack_id"].clone())
            .collect();
        call(
            addr,
            "POST",
            "/v1/topics/kbp/subscriptions/s/ack",
            &json!({ "ack_ids": ids }),
        );
        ids.len()
    });
    let t = Instant::now();
    let sent = send("held");
    let held = t.elapsed();
    assert_eq!(drain.join().unwrap(), 2);
    assert!(sent.is_ok(), "{sent:?}");
    assert!(
        held >= Duration::from_millis(1200) && held < Duration::from_millis(4900),
        "held {held:?}: until the backlog drained, not the whole 5 s"
    );

    let (s, _) = q.call(
        "PUT",
        &q.sub_path("s", ""),
        &json!({"max_backlog_messages": 1, "backlog_policy": "reject"}),
    );
    assert_eq!(s, 200);
    match send("refused") {
        Err(KafkaError::MessageProduction(code)) => {
            assert_eq!(code, RDKafkaErrorCode::PolicyViolation)
        }
        other => panic!("expected a policy violation, got {other:?}"),
    }
    let got = q.pull_n("s", 1, Duration::from_secs(5));
    assert_eq!(
        values(&got),
        vec!["held"],
        "the refused message was not stored"
    );
}

#[test]
fn a_subscription_delay_a_topic_ttl_a_bytes_limit_and_max_in_flight_apply() {
    let dir = tempfile::tempdir().unwrap();
    let q = Q::start(dir.path(), "knobs", 1);
    // Per-subscription delay: every message waits before its first delivery, in that
    // subscription only.
    q.subscribe("slow", json!({"delay_ms": 800}));
    q.subscribe("fast", json!({"max_in_flight": 2}));
    q.publish_ok(batch("m", 3));
    let t = Instant::now();
    assert!(q.pull("slow", "c", 10, 0).is_empty());
    let got = q.pull_n("slow", 3, Duration::from_secs(5));
    assert_eq!(got.len(), 3);
    assert!(
        t.elapsed() >= Duration::from_millis(600),
        "{:?}",
        t.elapsed()
    );
    q.ack("slow", &got);
    // max_in_flight counts per consumer.
    let a = q.pull("fast", "a", 10, 1000);
    assert_eq!(a.len(), 2, "capped at max_in_flight");
    assert!(q.pull("fast", "a", 10, 0).is_empty());
    assert_eq!(
        q.pull("fast", "b", 10, 1000).len(),
        1,
        "another consumer has its own room"
    );
    q.ack("fast", &a);
    assert!(q.pull("fast", "a", 10, 0).is_empty(), "nothing left");

    // A topic TTL dead-letters what waited too long, as a message's own ttl_ms does.
    let (s, b) = q.call(
        "POST",
        "/v1/topics",
        &json!({"name": "brief", "config": {"message.ttl.ms": "300"}}),
    );
    assert_eq!(s, 201, "{b}");
    let brief = Q {
        server: q.server,
        topic: "brief".into(),
    };
    brief.subscribe("s", json!({}));
    brief.publish_ok(batch("old", 2));
    std::thread::sleep(Duration::from_millis(600));
    brief.publish_ok(batch("new", 1));
    let got = brief.pull("s", "c", 10, 1000);
    assert_eq!(values(&got), vec!["new0"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while brief.stats("s")["dead_lettered"] != 2 {
        assert!(Instant::now() < deadline, "{}", brief.stats("s"));
        std::thread::sleep(Duration::from_millis(50));
    }

    // A bytes limit: about 3 KiB of 1 KiB messages.
    brief.subscribe(
        "tight",
        json!({"max_backlog_bytes": 3000, "backlog_policy": "reject"}),
    );
    let kib = "x".repeat(1024);
    for _ in 0..3 {
        brief.publish_ok(json!([{ "value": kib }]));
    }
    let (s, b) = brief.publish(json!([{ "value": kib }]));
    assert_eq!(s, 409, "{b}");
    assert!(
        b["error"]["message"].as_str().unwrap().contains("bytes"),
        "{b}"
    );
}

#[test]
fn kafka_producers_compressed_batches_are_pulled_as_single_messages() {
    use rdkafka::config::ClientConfig;
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{FutureProducer, FutureRecord};

    let dir = tempfile::tempdir().unwrap();
    let q = Q::start(dir.path(), "mixed", 1);
    q.subscribe("s", json!({}));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut want = Vec::new();
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", q.server.kafka.unwrap().to_string())
            .set("acks", "all")
            .set("compression.codec", codec)
            .set("linger.ms", "20")
            .create()
            .expect("producer");
        let values: Vec<String> = (0..5).map(|i| format!("{codec}-{i}")).collect();
        rt.block_on(async {
            // Enqueued together, so they share one compressed batch.
            let sends: Vec<_> = values
                .iter()
                .map(|v| {
                    producer
                        .send_result(
                            FutureRecord::to("mixed")
                                .partition(0)
                                .key(codec)
                                .payload(v)
                                .headers(OwnedHeaders::new().insert(Header {
                                    key: "codec",
                                    value: Some(codec.as_bytes()),
                                })),
                        )
                        .unwrap_or_else(|(e, _)| panic!("{codec}: enqueue: {e}"))
                })
                .collect();
            for s in sends {
                s.await
                    .expect("delivery report")
                    .unwrap_or_else(|(e, _)| panic!("{codec}: {e}"));
            }
        });
        want.extend(values);
    }
    let got = q.pull_n("s", want.len(), Duration::from_secs(10));
    assert_eq!(values(&got), want);
    for m in &got {
        let codec = m["key"].as_str().unwrap();
        assert_eq!(m["headers"]["codec"], codec, "{m}");
        assert!(m["value"].as_str().unwrap().starts_with(codec));
    }
    q.ack("s", &got);
    assert_eq!(q.stats("s")["backlog"], 0);
}
