//! A message's history (`GET /v1/topics/{topic}/messages/{partition}/{offset}/history`
//! and `wharf trace`) against a real `wharf serve`: a message nacked twice, its lease
//! run out on the last delivery, dead-lettered, redriven and acked shows every step;
//! the dead letter points back to its origin; bad locations are 404s; with history off
//! nothing is recorded.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::http_queues::call;
use crate::{run_bounded, serve_on, wharf, Server};

fn history_path(topic: &str, partition: u64, offset: u64) -> String {
    format!("/v1/topics/{topic}/messages/{partition}/{offset}/history")
}

fn history(addr: SocketAddr, topic: &str, partition: u64, offset: u64) -> Value {
    let (s, b) = call(
        addr,
        "GET",
        &history_path(topic, partition, offset),
        &json!(null),
    );
    assert_eq!(s, 200, "{b}");
    b
}

fn ok(addr: SocketAddr, method: &str, path: &str, body: Value) -> Value {
    let (s, b) = call(addr, method, path, &body);
    assert!((200..300).contains(&s), "{method} {path}: {s} {b}");
    b
}

fn pull(addr: SocketAddr, consumer: &str) -> Value {
    let b = ok(
        addr,
        "POST",
        "/v1/topics/orders/subscriptions/s/pull",
        json!({"max_messages": 1, "wait_ms": 10_000, "consumer": consumer}),
    );
    let msgs = b["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 1, "{consumer} got {b}");
    msgs[0].clone()
}

/// `wharf trace` with `args`, its exit status, stdout and stderr.
fn trace(args: &[&str]) -> (bool, String, String) {
    let out = run_bounded(wharf().arg("trace").args(args), Duration::from_secs(30));
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// The (kind, subscription, consumer, delivery_count, reason) of each event.
fn steps(h: &Value) -> Vec<(String, String, String, u64, String)> {
    h["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap().to_string(),
                e["subscription"].as_str().unwrap().to_string(),
                e["consumer"].as_str().unwrap_or("").to_string(),
                e["delivery_count"].as_u64().unwrap_or(0),
                e["reason"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

#[test]
fn a_message_nacked_twice_dead_lettered_redriven_and_acked_shows_every_step() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(serve_on(dir.path()));
    let addr = server.http;
    ok(
        addr,
        "POST",
        "/v1/topics",
        json!({"name": "orders", "partitions": 2}),
    );
    ok(
        addr,
        "PUT",
        "/v1/topics/orders/subscriptions/s",
        json!({"max_deliveries": 3, "ack_deadline_ms": 1000}),
    );
    // Another message first, so the one followed is not at offset 0.
    ok(
        addr,
        "POST",
        "/v1/topics/orders/messages",
        json!({"messages": [{"value": "other", "partition": 1}]}),
    );
    let published = ok(
        addr,
        "POST",
        "/v1/topics/orders/messages",
        json!({"messages": [{"key": "k1", "value": "poison", "partition": 1,
            "headers": {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}}]}),
    );
    let (p, o) = (
        published["messages"][0]["partition"].as_u64().unwrap(),
        published["messages"][0]["offset"].as_u64().unwrap(),
    );
    assert_eq!((p, o), (1, 1));
    // The other message is acked out of the way by a consumer of its own.
    let other = pull(addr, "sweeper");
    assert_eq!(other["value"], "other");
    ok(
        addr,
        "POST",
        "/v1/topics/orders/subscriptions/s/ack",
        json!({"ack_ids": [other["ack_id"]]}),
    );

    let nack = |m: &Value, reason: &str| {
        ok(
            addr,
            "POST",
            "/v1/topics/orders/subscriptions/s/nack",
            json!({"ack_ids": [m["ack_id"]], "reason": reason, "delay_ms": 0}),
        )
    };
    let first = pull(addr, "c1");
    assert_eq!(first["value"], "poison");
    nack(&first, "first failure");
    let second = pull(addr, "c2");
    nack(&second, "second failure");
    // The third delivery is never answered: its lease runs out, and that was the last.
    let third = pull(addr, "c3");
    assert_eq!(third["delivery_count"], 3);
    let deadline = Instant::now() + Duration::from_secs(15);
    while !steps(&history(addr, "orders", p, o))
        .iter()
        .any(|s| s.0 == "dead_lettered")
    {
        assert!(Instant::now() < deadline, "never dead-lettered");
        std::thread::sleep(Duration::from_millis(100));
    }
    let r = ok(
        addr,
        "POST",
        "/v1/topics/orders/subscriptions/s/redrive",
        json!({}),
    );
    assert_eq!(r["redriven"], 1);
    let back = pull(addr, "c4");
    assert_eq!(back["delivery_count"], 1);
    ok(
        addr,
        "POST",
        "/v1/topics/orders/subscriptions/s/ack",
        json!({"ack_ids": [back["ack_id"]]}),
    );

    let h = history(addr, "orders", p, o);
    let s = |kind: &str, consumer: &str, n: u64, reason: &str| {
        (
            kind.to_string(),
            "s".to_string(),
            consumer.to_string(),
            n,
            reason.to_string(),
        )
    };
    assert_eq!(
        steps(&h),
        vec![
            s("delivered", "c1", 1, ""),
            s("nacked", "", 1, "first failure"),
            s("delivered", "c2", 2, ""),
            s("nacked", "", 2, "second failure"),
            s("delivered", "c3", 3, ""),
            s("lease_expired", "", 3, ""),
            s("dead_lettered", "", 3, "ack_deadline_exceeded"),
            s("redriven", "", 0, ""),
            s("delivered", "c4", 1, ""),
            s("acked", "", 1, ""),
        ],
        "{h:#}"
    );
    let events = h["events"].as_array().unwrap();
    let times: Vec<i64> = events
        .iter()
        .map(|e| e["time_ms"].as_i64().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    // The lease ran out no sooner than its deadline.
    let deadline3 = events[4]["ack_deadline_ms"].as_i64().unwrap();
    assert!(times[5] >= deadline3, "{h:#}");
    assert!(events[1]["redeliver_at_ms"].as_i64().unwrap() >= times[1]);
    // The stored message, as pulls show it.
    let m = &h["message"];
    assert_eq!(h["message_id"], first["message_id"]);
    assert_eq!(
        (h["partition"].as_u64(), h["offset"].as_u64()),
        (Some(p), Some(o))
    );
    assert_eq!(m["publish_time_ms"], first["publish_time_ms"]);
    assert!(m["publish_time_ms"].as_i64().unwrap() <= times[0]);
    assert_eq!((&m["key"], &m["value"]), (&json!("k1"), &json!("poison")));
    assert_eq!(m["headers"], first["headers"]);
    assert_eq!(h["history_window_ms"], 3_600_000);
    // Where the dead letter went, and back.
    let dlq = json!({"topic": "orders.s.dlq", "partition": 0, "offset": 0,
        "history": "/v1/topics/orders.s.dlq/messages/0/0/history"});
    assert_eq!(events[6]["dead_letter"], dlq);
    assert_eq!(events[7]["redriven_from"], dlq);
    assert_eq!(h["dead_letters"], json!([dlq]));
    assert_eq!(h["dead_letter_of"], Value::Null);

    // The dead letter points back to its origin.
    let d = history(addr, "orders.s.dlq", 0, 0);
    assert_eq!(
        d["dead_letter_of"],
        json!({"origin": {"topic": "orders", "partition": p, "offset": o,
                "history": history_path("orders", p, o)},
            "subscription": "s", "delivery_count": 3, "reason": "ack_deadline_exceeded"})
    );
    assert_eq!(d["message"]["value"], "poison");
    assert_eq!(d["events"], json!([]));

    // `wharf trace` tells the same story, in order.
    let http = addr.to_string();
    let (good, out, err) = trace(&["orders", "1", "1", "--http-addr", &http]);
    assert!(good, "{err}");
    let lines = [
        "message orders/1/1",
        "value    \"poison\"",
        "header   traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "published",
        "[s] delivered to c1 (delivery 1)",
        "[s] nacked (delivery 1): \"first failure\"; redelivered in",
        "[s] delivered to c2 (delivery 2)",
        "[s] nacked (delivery 2): \"second failure\"; redelivered in",
        "[s] delivered to c3 (delivery 3)",
        "[s] ack deadline passed (delivery 3)",
        "[s] dead-lettered (delivery 3): \"ack_deadline_exceeded\" to orders.s.dlq/0/0",
        "[s] redriven from orders.s.dlq/0/0",
        "[s] delivered to c4 (delivery 1)",
        "[s] acked (delivery 1)",
        "Events of the last 1h",
    ];
    let mut at = 0;
    for l in lines {
        let found = out[at..]
            .find(l)
            .unwrap_or_else(|| panic!("{l:?} missing or out of order in:\n{out}"));
        at += found + l.len();
    }
    let (good, out, err) = trace(&["orders.s.dlq", "0", "0", "--http-addr", &http]);
    assert!(good, "{err}");
    assert!(
        out.contains("a dead letter of orders/1/1, subscription s")
            && out.contains("wharf trace orders 1 1"),
        "{out}"
    );
    let (good, out, err) = trace(&["orders", "1", "1", "--http-addr", &http, "--json"]);
    assert!(good, "{err}");
    let j: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(j["events"], h["events"]);
}

#[test]
fn unknown_locations_are_404s_and_a_message_with_no_events_has_an_empty_history() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(serve_on(dir.path()));
    let addr = server.http;
    ok(
        addr,
        "POST",
        "/v1/topics",
        json!({"name": "t", "partitions": 2}),
    );
    ok(
        addr,
        "POST",
        "/v1/topics/t/messages",
        json!({"messages": [{"value": "a", "partition": 0}, {"value": "b", "partition": 0}]}),
    );
    for (path, mentions) in [
        (history_path("nope", 0, 0), "unknown topic"),
        (history_path("t", 2, 0), "unknown partition 2"),
        (history_path("t", 0, 2), "no message at offset 2"),
        (history_path("t", 1, 0), "holds no messages"),
    ] {
        let (s, b) = call(addr, "GET", &path, &json!(null));
        assert_eq!(
            (s, &b["error"]["code"]),
            (404, &json!("not_found")),
            "{path}: {b}"
        );
        let msg = b["error"]["message"].as_str().unwrap();
        assert!(msg.contains(mentions), "{path}: {msg}");
    }
    for path in [
        "/v1/topics/t/messages/x/0/history",
        "/v1/topics/t/messages/0/-1/history",
        "/v1/topics/t/messages/99999999999/0/history",
    ] {
        let (s, b) = call(addr, "GET", path, &json!(null));
        assert_eq!(
            (s, &b["error"]["code"]),
            (400, &json!("invalid_argument")),
            "{path}: {b}"
        );
    }
    // In the log, never delivered: the stored facts and no events.
    let h = history(addr, "t", 0, 1);
    assert_eq!(h["message"]["value"], "b");
    assert_eq!(h["events"], json!([]));
    assert_eq!(h["dead_letters"], json!([]));
    assert!(h["message_id"].as_str().unwrap().ends_with("-0-1"));
    let (good, out, _) = trace(&["t", "0", "1", "--http-addr", &addr.to_string()]);
    assert!(good);
    assert!(
        out.contains("No events within the history window (1h"),
        "{out}"
    );
    // Errors reach the command line readably, with a failing status.
    let (good, out, err) = trace(&["nope", "0", "0", "--http-addr", &addr.to_string()]);
    assert!(!good && out.is_empty(), "{out}");
    assert!(
        err.contains("not_found") && err.contains("unknown topic \"nope\""),
        "{err}"
    );
    // So does a broker that is not there.
    drop(server);
    let (good, _, err) = trace(&["t", "0", "0", "--http-addr", &addr.to_string()]);
    assert!(!good);
    assert!(err.contains("is `wharf serve` running there?"), "{err}");
}

#[test]
fn with_history_off_nothing_is_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = serve_on(dir.path());
    cmd.env("WHARF_HISTORY_WINDOW_MS", "0");
    let server = Server::start(cmd);
    assert!(
        server.stderr().contains("queue message history off"),
        "{}",
        server.stderr()
    );
    let addr = server.http;
    ok(
        addr,
        "POST",
        "/v1/topics",
        json!({"name": "orders", "partitions": 1}),
    );
    ok(addr, "PUT", "/v1/topics/orders/subscriptions/s", json!({}));
    ok(
        addr,
        "POST",
        "/v1/topics/orders/messages",
        json!({"messages": [{"value": "x"}]}),
    );
    let m = pull(addr, "c");
    ok(
        addr,
        "POST",
        "/v1/topics/orders/subscriptions/s/nack",
        json!({"ack_ids": [m["ack_id"]], "delay_ms": 0}),
    );
    let m = pull(addr, "c");
    ok(
        addr,
        "POST",
        "/v1/topics/orders/subscriptions/s/ack",
        json!({"ack_ids": [m["ack_id"]]}),
    );
    let h = history(addr, "orders", 0, 0);
    assert_eq!(
        (&h["events"], &h["history_window_ms"]),
        (&json!([]), &json!(0))
    );
    assert_eq!(h["message"]["value"], "x");
    let (good, out, _) = trace(&["orders", "0", "0", "--http-addr", &addr.to_string()]);
    assert!(good);
    assert!(out.contains("History is off"), "{out}");
}
