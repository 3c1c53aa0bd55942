//! The HTTP driver (`--driver http`): Wharf's HTTP/JSON queue API through `ureq`, a
//! small blocking client (HTTP/1.1, no TLS: benchmarks run on loopback).
//!
//! - A topic is `POST /v1/topics` and `DELETE /v1/topics/{t}`.
//! - A producer hands messages to a batching thread, which closes a batch after
//!   `--linger-ms` (with 0: whatever is queued when the previous batch left), at
//!   [`MAX_BATCH_MESSAGES`] messages or at `--batch-size` payload bytes (at most
//!   [`MAX_BATCH_BYTES`]), and gives it to
//!   one of [`IN_FLIGHT`] posting threads: one `POST /v1/topics/{t}/messages` each, on
//!   a keep-alive connection. A 2xx answer counts every message of the batch as
//!   acknowledged (its `messages` array must have one entry per message sent); any
//!   other answer counts them all as failed. 429 is retried after its `Retry-After`.
//! - A group is a subscription, `PUT /v1/topics/{t}/subscriptions/{g}` with
//!   `start: earliest`, made in [`Driver::prepare_group`] before the first send.
//! - A consumer long-polls `…/pull` for up to [`PULL_MAX`] messages, acknowledges all of
//!   them in one `…/ack`, and only then hands their payloads to the workload: what the
//!   workloads count (and time) for this driver is a message whose ack the broker
//!   accepted (`status: ok`), so latencies run from the send to the acknowledgement.
//!
//! Payloads are binary (a timestamp, then noise), so they travel as `value_base64`; a
//! message that comes back as UTF-8 `value` is taken as its bytes. Keys are sent as
//! text. `--acks` and `--compression` do not apply (every publish is durable before
//! its answer, as the broker's Kafka `acks=all`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TryRecvError};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::json;
use ureq::Agent;

use crate::driver::{Acks, Consumer, Driver, Producer, ProducerOpts};

/// Messages per publish request, at most.
pub const MAX_BATCH_MESSAGES: usize = 1000;
/// Payload bytes per publish request, at most, whatever `--batch-size` says: in base64
/// (4/3 of it) and JSON, well under the 16 MiB the broker takes in one request.
pub const MAX_BATCH_BYTES: u64 = 8_000_000;
/// Publish requests in flight per producer (each on a connection of its own).
pub const IN_FLIGHT: usize = 4;
/// Messages a producer queues before `send` waits for the batcher.
const SEND_QUEUE: usize = 10_000;
/// Messages one pull asks for (the API's limit).
pub const PULL_MAX: usize = 1000;
/// Any request's limit, long polls included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// The largest answer read (a pull of 1000 messages of 100 MB each is not a benchmark).
const RESPONSE_LIMIT: u64 = 1 << 30;
/// How long a 429 without a usable `Retry-After` waits, and the most any 429 waits.
const DEFAULT_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

pub struct HttpDriver {
    base: String,
    agent: Agent,
}

/// `host:port` becomes `http://host:port`; a URL is kept (without a trailing `/`).
pub fn base_url(brokers: &str) -> String {
    let b = brokers.trim().trim_end_matches('/');
    if b.starts_with("http://") || b.starts_with("https://") {
        b.to_owned()
    } else {
        format!("http://{b}")
    }
}

fn new_agent() -> Agent {
    Agent::config_builder()
        // Error answers are read (their JSON says what went wrong), not turned into
        // ureq errors.
        .http_status_as_error(false)
        .timeout_global(Some(REQUEST_TIMEOUT))
        .max_idle_connections_per_host(IN_FLIGHT * 4)
        .build()
        .new_agent()
}

/// An answer: status, `Retry-After` (for 429) and body.
struct Answer {
    status: u16,
    retry_after: Option<Duration>,
    body: Vec<u8>,
}

impl Answer {
    fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The API's `{"error":{"code","message"}}`, or the body as text.
    fn error(&self, what: &str) -> anyhow::Error {
        #[derive(Deserialize)]
        struct Body {
            error: Detail,
        }
        #[derive(Deserialize)]
        struct Detail {
            code: String,
            message: String,
        }
        match serde_json::from_slice::<Body>(&self.body) {
            Ok(b) => anyhow!(
                "{what}: {} {}: {}",
                self.status,
                b.error.code,
                b.error.message
            ),
            Err(_) => anyhow!(
                "{what}: {} {}",
                self.status,
                String::from_utf8_lossy(&self.body[..self.body.len().min(300)])
            ),
        }
    }
}

#[derive(Clone, Copy)]
enum Method {
    Post,
    Put,
    Delete,
}

fn request(agent: &Agent, method: Method, url: &str, body: Option<&[u8]>) -> Result<Answer> {
    let sent = match (method, body) {
        (Method::Post, Some(b)) => agent
            .post(url)
            .header("content-type", "application/json")
            .send(b),
        (Method::Put, Some(b)) => agent
            .put(url)
            .header("content-type", "application/json")
            .send(b),
        (Method::Post, None) => agent.post(url).send_empty(),
        (Method::Put, None) => agent.put(url).send_empty(),
        (Method::Delete, _) => agent.delete(url).call(),
    };
    let mut resp = sent.map_err(|e| anyhow!("{url}: {e}"))?;
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(|s| Duration::from_secs_f64(s).min(MAX_BACKOFF));
    let body = resp
        .body_mut()
        .with_config()
        .limit(RESPONSE_LIMIT)
        .read_to_vec()
        .map_err(|e| anyhow!("{url}: reading the answer: {e}"))?;
    Ok(Answer {
        status,
        retry_after,
        body,
    })
}

/// [`request`], retried while the broker answers 429 (after its `Retry-After`), until
/// `deadline`.
fn request_backing_off(
    agent: &Agent,
    method: Method,
    url: &str,
    body: Option<&[u8]>,
    deadline: Instant,
) -> Result<Answer> {
    loop {
        let a = request(agent, method, url, body)?;
        if a.status != 429 || Instant::now() >= deadline || crate::workload::interrupted() {
            return Ok(a);
        }
        std::thread::sleep(a.retry_after.unwrap_or(DEFAULT_BACKOFF));
    }
}

impl HttpDriver {
    pub fn new(brokers: &str) -> HttpDriver {
        HttpDriver {
            base: base_url(brokers),
            agent: new_agent(),
        }
    }
}

impl Driver for HttpDriver {
    fn name(&self) -> &'static str {
        "http"
    }

    fn create_topic(&self, topic: &str, partitions: i32) -> Result<()> {
        let body = json!({ "name": topic, "partitions": partitions }).to_string();
        let url = format!("{}/v1/topics", self.base);
        let a = request(&self.agent, Method::Post, &url, Some(body.as_bytes()))?;
        if !a.ok() {
            return Err(a.error(&format!("creating topic {topic}")));
        }
        Ok(())
    }

    fn delete_topic(&self, topic: &str) -> Result<()> {
        let url = format!("{}/v1/topics/{topic}", self.base);
        let a = request(&self.agent, Method::Delete, &url, None)?;
        if !a.ok() {
            return Err(a.error(&format!("deleting topic {topic}")));
        }
        Ok(())
    }

    fn producer(
        &self,
        topic: &str,
        opts: &ProducerOpts,
        acks: Arc<Acks>,
    ) -> Result<Box<dyn Producer>> {
        Ok(Box::new(HttpProducer::new(
            format!("{}/v1/topics/{topic}/messages", self.base),
            opts,
            acks,
        )))
    }

    fn prepare_group(&self, topic: &str, group: &str) -> Result<()> {
        let url = format!("{}/v1/topics/{topic}/subscriptions/{group}", self.base);
        let body = json!({ "start": "earliest" }).to_string();
        let a = request(&self.agent, Method::Put, &url, Some(body.as_bytes()))?;
        if !a.ok() {
            return Err(a.error(&format!("creating subscription {group} on {topic}")));
        }
        Ok(())
    }

    fn consumer(&self, topic: &str, group: &str) -> Result<Box<dyn Consumer>> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let sub = format!("{}/v1/topics/{topic}/subscriptions/{group}", self.base);
        Ok(Box::new(HttpConsumer {
            agent: new_agent(),
            pull_url: format!("{sub}/pull"),
            ack_url: format!("{sub}/ack"),
            name: format!("{group}-c{}", NEXT.fetch_add(1, Ordering::Relaxed)),
            warned: false,
        }))
    }
}

enum Queued {
    Message {
        key: Option<Vec<u8>>,
        payload: Vec<u8>,
    },
    /// Close the batch now: `flush` is waiting.
    Flush,
}

/// A publish request ready to go: its JSON body, messages and payload bytes.
struct Batch {
    body: Vec<u8>,
    messages: u64,
    bytes: u64,
}

/// Messages acknowledged or failed so far, for `flush` to wait on.
#[derive(Default)]
struct Done {
    count: Mutex<u64>,
    changed: Condvar,
}

impl Done {
    fn add(&self, n: u64) {
        *self.count.lock().unwrap_or_else(|e| e.into_inner()) += n;
        self.changed.notify_all();
    }
}

struct HttpProducer {
    tx: Option<SyncSender<Queued>>,
    queued: u64,
    done: Arc<Done>,
    threads: Vec<JoinHandle<()>>,
}

impl HttpProducer {
    fn new(url: String, opts: &ProducerOpts, acks: Arc<Acks>) -> HttpProducer {
        let (tx, rx) = mpsc::sync_channel(SEND_QUEUE);
        let (batches_tx, batches_rx) = mpsc::sync_channel::<Batch>(0);
        let batches_rx = Arc::new(Mutex::new(batches_rx));
        let done = Arc::new(Done::default());
        let linger = Duration::from_millis(opts.linger_ms);
        let max_bytes = opts.batch_bytes.clamp(1, MAX_BATCH_BYTES);
        let mut threads = vec![std::thread::spawn(move || {
            batcher(rx, batches_tx, linger, max_bytes)
        })];
        let agent = new_agent();
        for _ in 0..IN_FLIGHT {
            let (agent, url, rx) = (agent.clone(), url.clone(), batches_rx.clone());
            let (acks, done) = (acks.clone(), done.clone());
            threads.push(std::thread::spawn(move || loop {
                let batch = match rx.lock().unwrap_or_else(|e| e.into_inner()).recv() {
                    Ok(b) => b,
                    Err(_) => return,
                };
                match publish(&agent, &url, &batch) {
                    Ok(()) => acks.ok_many(batch.messages, batch.bytes),
                    Err(e) => {
                        let e = format!("{e:#}");
                        for _ in 0..batch.messages {
                            acks.fail(e.clone());
                        }
                    }
                }
                done.add(batch.messages);
            }));
        }
        HttpProducer {
            tx: Some(tx),
            queued: 0,
            done,
            threads,
        }
    }
}

/// One publish request; `Ok` when the broker acknowledged every message in it.
fn publish(agent: &Agent, url: &str, batch: &Batch) -> Result<()> {
    #[derive(Deserialize)]
    struct Published {
        messages: Vec<serde::de::IgnoredAny>,
    }
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    let a = request_backing_off(agent, Method::Post, url, Some(&batch.body), deadline)?;
    if !a.ok() {
        return Err(a.error("publishing"));
    }
    let p: Published = serde_json::from_slice(&a.body)
        .with_context(|| format!("publishing: a {} answer without `messages`", a.status))?;
    if p.messages.len() as u64 != batch.messages {
        bail!(
            "publishing: {} messages sent, {} acknowledged",
            batch.messages,
            p.messages.len()
        );
    }
    Ok(())
}

/// Turns queued messages into publish requests, until the producer is dropped.
fn batcher(rx: Receiver<Queued>, out: SyncSender<Batch>, linger: Duration, max_bytes: u64) {
    let mut body = Vec::new();
    let mut messages = 0u64;
    let mut bytes = 0u64;
    let mut deadline: Option<Instant> = None;
    let mut open = true;
    while open {
        // Wait for the first message of a batch without a deadline; then until the
        // batch's linger is up (with no linger: only for what is already queued).
        let next = match deadline {
            None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
            Some(_) if linger.is_zero() => rx.try_recv().map_err(|e| match e {
                TryRecvError::Empty => RecvTimeoutError::Timeout,
                TryRecvError::Disconnected => RecvTimeoutError::Disconnected,
            }),
            Some(d) => rx.recv_timeout(d.saturating_duration_since(Instant::now())),
        };
        let close = match next {
            Ok(Queued::Message { key, payload }) => {
                if messages == 0 {
                    body.clear();
                    body.extend_from_slice(b"{\"messages\":[");
                    deadline = Some(Instant::now() + linger);
                } else {
                    body.push(b',');
                }
                body.push(b'{');
                if let Some(key) = key {
                    let key = serde_json::to_string(&String::from_utf8_lossy(&key))
                        .unwrap_or_else(|_| "\"\"".to_owned());
                    body.extend_from_slice(b"\"key\":");
                    body.extend_from_slice(key.as_bytes());
                    body.push(b',');
                }
                body.extend_from_slice(b"\"value_base64\":\"");
                let mut encoded = String::new();
                B64.encode_string(&payload, &mut encoded);
                body.extend_from_slice(encoded.as_bytes());
                body.extend_from_slice(b"\"}");
                messages += 1;
                bytes += payload.len() as u64;
                messages as usize >= MAX_BATCH_MESSAGES
                    || bytes >= max_bytes
                    || deadline.is_some_and(|d| !linger.is_zero() && Instant::now() >= d)
            }
            Ok(Queued::Flush) | Err(RecvTimeoutError::Timeout) => true,
            Err(RecvTimeoutError::Disconnected) => {
                open = false;
                true
            }
        };
        if close && messages > 0 {
            body.extend_from_slice(b"]}");
            let batch = Batch {
                body: std::mem::take(&mut body),
                messages,
                bytes,
            };
            if out.send(batch).is_err() {
                return;
            }
            (messages, bytes, deadline) = (0, 0, None);
        }
    }
}

impl Producer for HttpProducer {
    fn send(&mut self, key: Option<&[u8]>, payload: &[u8]) -> Result<()> {
        let tx = self.tx.as_ref().ok_or_else(|| anyhow!("producer closed"))?;
        tx.send(Queued::Message {
            key: key.map(<[u8]>::to_vec),
            payload: payload.to_vec(),
        })
        .map_err(|_| anyhow!("the producer's batching thread is gone"))?;
        self.queued += 1;
        Ok(())
    }

    fn flush(&mut self, timeout: Duration) -> Result<()> {
        if let Some(tx) = &self.tx {
            let _ = tx.send(Queued::Flush);
        }
        let deadline = Instant::now() + timeout;
        let mut done = self.done.count.lock().unwrap_or_else(|e| e.into_inner());
        while *done < self.queued {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!(
                    "flush: {} of {} messages answered after {timeout:?}",
                    *done,
                    self.queued
                );
            }
            done = self
                .done
                .changed
                .wait_timeout(done, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        Ok(())
    }
}

impl Drop for HttpProducer {
    fn drop(&mut self) {
        // The batcher sees the channel close, sends what it has and ends; the posters
        // end when it does.
        self.tx.take();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

struct HttpConsumer {
    agent: Agent,
    pull_url: String,
    ack_url: String,
    /// The `consumer` of every pull (the broker's in-flight limit is per consumer).
    name: String,
    /// Whether an ack that did not take effect was reported already.
    warned: bool,
}

/// `…/ack`'s answer: what became of each id, in request order.
#[derive(Deserialize)]
struct Acked {
    results: Vec<AckResult>,
}

#[derive(Deserialize)]
struct AckResult {
    ack_id: String,
    status: String,
}

#[derive(Deserialize)]
struct Pulled {
    messages: Vec<PulledMessage>,
}

#[derive(Deserialize)]
struct PulledMessage {
    ack_id: String,
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    value_base64: Option<String>,
}

impl Consumer for HttpConsumer {
    fn poll(&mut self, timeout: Duration, each: &mut dyn FnMut(&[u8])) -> Result<usize> {
        let body = json!({
            "max_messages": PULL_MAX,
            "wait_ms": timeout.as_millis() as u64,
            "consumer": self.name,
        })
        .to_string();
        let a = request(
            &self.agent,
            Method::Post,
            &self.pull_url,
            Some(body.as_bytes()),
        )?;
        if a.status == 429 {
            std::thread::sleep(a.retry_after.unwrap_or(DEFAULT_BACKOFF).min(timeout));
            return Ok(0);
        }
        if !a.ok() {
            return Err(a.error("pulling"));
        }
        let pulled: Pulled = serde_json::from_slice(&a.body).context("pulling: the answer")?;
        if pulled.messages.is_empty() {
            return Ok(0);
        }
        let mut payloads = Vec::with_capacity(pulled.messages.len());
        let mut ack_ids = Vec::with_capacity(pulled.messages.len());
        for m in pulled.messages {
            let payload = match (m.value_base64, m.value) {
                (Some(b), _) => B64
                    .decode(b.as_bytes())
                    .with_context(|| format!("message {}: bad value_base64", m.ack_id))?,
                (None, Some(v)) => v.into_bytes(),
                (None, None) => Vec::new(),
            };
            payloads.push(payload);
            ack_ids.push(m.ack_id);
        }
        let body = serde_json::to_vec(&json!({ "ack_ids": ack_ids }))?;
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        let a = request_backing_off(
            &self.agent,
            Method::Post,
            &self.ack_url,
            Some(&body),
            deadline,
        )?;
        if !a.ok() {
            return Err(a.error(&format!("acknowledging {} messages", ack_ids.len())));
        }
        // Only ids whose ack took effect count: one whose lease ran out (redelivered
        // since) is counted when its new delivery is acknowledged.
        let acked: Acked = serde_json::from_slice(&a.body).context("acknowledging: the answer")?;
        if acked.results.len() != payloads.len() {
            bail!(
                "acknowledging {} messages: {} results",
                payloads.len(),
                acked.results.len()
            );
        }
        let mut n = 0;
        for (p, r) in payloads.iter().zip(&acked.results) {
            if r.status == "ok" {
                each(p);
                n += 1;
            } else if !self.warned {
                self.warned = true;
                eprintln!("http: ack {}: {} (not counted)", r.ack_id, r.status);
            }
        }
        Ok(n)
    }

    /// A subscription hands out messages to any consumer that pulls: no assignment.
    fn ready(&self) -> bool {
        true
    }

    /// Acknowledgements are per message, sent in `poll`: no positions to commit.
    fn commit(&mut self) -> Result<Option<u64>> {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn brokers_become_a_base_url() {
        assert_eq!(base_url("127.0.0.1:8080"), "http://127.0.0.1:8080");
        assert_eq!(base_url("http://h:1/"), "http://h:1");
    }

    #[test]
    fn the_batcher_closes_batches_at_the_count_limit_and_on_flush() {
        let (tx, rx) = mpsc::sync_channel(SEND_QUEUE);
        let (out_tx, out_rx) = mpsc::sync_channel(16);
        let t = std::thread::spawn(move || batcher(rx, out_tx, Duration::from_secs(60), 1 << 40));
        for i in 0..MAX_BATCH_MESSAGES + 2 {
            let key = (i == 0).then(|| b"k\"1".to_vec());
            tx.send(Queued::Message {
                key,
                payload: vec![0xff; 3],
            })
            .unwrap();
        }
        tx.send(Queued::Flush).unwrap();
        drop(tx);
        t.join().unwrap();
        let batches: Vec<Batch> = out_rx.iter().collect();
        assert_eq!(batches.len(), 2);
        assert_eq!(batches[0].messages, MAX_BATCH_MESSAGES as u64);
        assert_eq!(batches[1].messages, 2);
        assert_eq!(batches[1].bytes, 6);
        let v: serde_json::Value = serde_json::from_slice(&batches[0].body).unwrap();
        assert_eq!(v["messages"][0]["key"], "k\"1");
        assert_eq!(v["messages"][0]["value_base64"], "////");
        assert!(v["messages"][1].get("key").is_none());
    }
}
