//! The seam between workloads and brokers.
//!
//! A workload (produce, consume, e2e, latency, fanout) only talks to a [`Driver`]: it
//! creates and deletes a topic, opens producers that count acknowledged messages into
//! [`Acks`], and consumers that hand each received payload to a closure. The Kafka
//! driver (librdkafka) is the first; NATS JetStream and core NATS (`nats.rs`) follow, and
//! AMQP 0-9-1 and Wharf's HTTP queue API fit behind the same three traits.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Result;

/// How a producer is configured, in terms every driver can map to its protocol.
#[derive(Debug, Clone)]
pub struct ProducerOpts {
    /// Kafka `acks`: "all", "1" or "0". Other drivers map "all" to their durable
    /// confirmation (publisher confirms, JetStream acks).
    pub acks: String,
    /// How long a producer waits to fill a batch.
    pub linger_ms: u64,
    /// Largest batch in bytes.
    pub batch_bytes: u64,
    /// "none", "gzip", "snappy", "lz4" or "zstd".
    pub compression: String,
    /// Give every message a W3C `traceparent` header of a new trace, this fraction of
    /// them sampled (Kafka).
    pub traceparent: Option<f64>,
}

/// Messages and bytes the broker acknowledged to one or more producers. Only a
/// successful acknowledgement counts; failures are counted apart, with the first error.
#[derive(Debug, Default)]
pub struct Acks {
    pub messages: AtomicU64,
    pub bytes: AtomicU64,
    pub failed: AtomicU64,
    pub first_error: Mutex<Option<String>>,
}

impl Acks {
    pub fn ok(&self, bytes: u64) {
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        // Last, so that a reader who sees the count also sees its bytes.
        self.messages.fetch_add(1, Ordering::Release);
    }

    /// `messages` messages of `bytes` bytes in all, acknowledged at once (a NATS
    /// connection flush covers every publish queued before it).
    pub fn ok_many(&self, messages: u64, bytes: u64) {
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.messages.fetch_add(messages, Ordering::Release);
    }

    pub fn fail(&self, error: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_error.lock().unwrap_or_else(|e| e.into_inner());
        first.get_or_insert(error);
    }

    pub fn messages(&self) -> u64 {
        self.messages.load(Ordering::Acquire)
    }
}

/// A broker, reached through one client protocol.
pub trait Driver: Send + Sync {
    /// A short name for reports ("kafka").
    fn name(&self) -> &'static str;
    /// Creates `topic` with `partitions` partitions (drivers without partitions ignore it).
    fn create_topic(&self, topic: &str, partitions: i32) -> Result<()>;
    /// Whether the broker keeps messages for a group that has no consumer yet. `consume`
    /// fills the topic before its consumers exist, so it needs this; core NATS, which
    /// only delivers to subscriptions that exist when a message arrives, does not.
    fn retains(&self) -> bool {
        true
    }
    /// Deletes `topic` and its data.
    fn delete_topic(&self, topic: &str) -> Result<()>;
    /// A producer to `topic`; every message the broker acknowledges is counted in `acks`.
    fn producer(
        &self,
        topic: &str,
        opts: &ProducerOpts,
        acks: std::sync::Arc<Acks>,
    ) -> Result<Box<dyn Producer>>;
    /// Makes sure `group` will receive every message sent to `topic` from now on, before
    /// any of its consumers exists. Workloads call it for every group before the first
    /// send. Kafka and JetStream groups read from the start of the topic anyway (a no-op
    /// there); an AMQP driver declares and binds the group's queue here.
    fn prepare_group(&self, _topic: &str, _group: &str) -> Result<()> {
        Ok(())
    }
    /// A consumer of `topic` in `group`: consumers sharing a group share the messages,
    /// every group receives every message sent after [`Driver::prepare_group`].
    fn consumer(&self, topic: &str, group: &str) -> Result<Box<dyn Consumer>>;
}

pub trait Producer: Send {
    /// Queues one message, waiting while the client's queue is full. It is counted in
    /// the producer's [`Acks`] once the broker acknowledged it.
    fn send(&mut self, key: Option<&[u8]>, payload: &[u8]) -> Result<()>;
    /// Waits until every queued message was acknowledged or failed.
    fn flush(&mut self, timeout: Duration) -> Result<()>;
}

pub trait Consumer: Send {
    /// Waits up to `timeout` for messages and calls `each` with every payload received
    /// (several per call when they are there). Returns how many.
    fn poll(&mut self, timeout: Duration, each: &mut dyn FnMut(&[u8])) -> Result<usize>;
    /// True once the broker gave this consumer something to read (for Kafka: a
    /// partition assignment). Workloads that time a producer wait for it first, so a
    /// group join is not measured.
    fn ready(&self) -> bool;
    /// Durably commits what this consumer has read, then reads the commit back from the
    /// broker (commit callbacks are not trusted): how many messages the committed
    /// positions of its assignment cover, counted from the start of the topic. `None`
    /// where the protocol has no committed positions.
    fn commit(&mut self) -> Result<Option<u64>>;
}
