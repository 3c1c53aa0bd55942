//! The NATS drivers, through the `async-nats` crate: JetStream (`--driver jetstream`,
//! durable streams) and core NATS (`--driver nats`, no retention, for fan-out).
//!
//! The traits are synchronous and async-nats is not, so the driver owns a small tokio
//! runtime whose worker threads run the connections; the workload threads call
//! `Handle::block_on` only for what is cheap: queueing a publish into the client's
//! channel, or waiting for messages that are due anyway. Acknowledgements are awaited
//! by a collector task per producer, never one round trip per `send`.
//!
//! What "acknowledged" means here:
//! - JetStream, `--acks all`/`1`: a PubAck, sent by the server once it stored the
//!   message in the stream: its file store wrote it to the OS, but fsyncs on a timer
//!   (every 60 s in nats-server 2.9, not configurable there; `sync_interval`, 2
//!   minutes by default, from 2.10). A PubAck is no promise against a power loss.
//! - Core NATS, and JetStream with `--acks 0`: the server received the message; counted
//!   when a connection flush (PING/PONG) queued after it returns.
//!
//! Names: a stream is named after the topic and a durable consumer after the group,
//! with every character JetStream does not allow in names replaced by `_`. Topics have
//! no partitions here, and keys, `--linger-ms` and `--compression` do not apply.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _, Result};
use async_nats::jetstream::{self, consumer::pull, stream};
use async_nats::{Client, ConnectOptions, Event, Subject};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::runtime::{Handle, Runtime};
use tokio::sync::{mpsc, oneshot};

use crate::driver::{Acks, Consumer, Driver, Producer, ProducerOpts};

/// Unacknowledged JetStream publishes per producer: enough to keep a local server busy
/// (a PubAck round trip is tens of µs; the server stores thousands of messages in that
/// time), bounded so a slow server backs the producer up instead of its memory.
const PUBLISH_WINDOW: usize = 4096;
/// Core NATS producers hand a batch to a connection flush after this many messages...
const FLUSH_EVERY: u64 = 1000;
/// ...or this long after the batch's first message, whichever comes first.
const FLUSH_INTERVAL: Duration = Duration::from_millis(5);
/// Batches waiting for their flush, per producer; then `send` waits.
const FLUSHES_QUEUED: usize = 64;
/// Messages a subscription buffers in the client before it drops them (a slow
/// consumer). The default, 64 Ki, is easy to reach when the producer outruns a debug
/// build's consumer; dropped messages fail the run (see [`Trouble`]). The client reads
/// the socket whatever the backlog, so this, times the message size, is also the
/// memory a lagging consumer may take (256 MiB at the default 1 KiB).
const SUBSCRIPTION_CAPACITY: usize = 1 << 18;
/// Messages a JetStream pull consumer asks for at once (and may hold unacknowledged).
const PULL_BATCH: usize = 1000;
/// At most this many messages per `poll` call, so callers check their stop condition.
const POLL_BATCH: usize = 1000;
/// Messages delivered and not yet acknowledged, per durable consumer, before the server
/// stops delivering (2.9's default is 1000: too low for several pulling consumers).
const MAX_ACK_PENDING: i64 = 100_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    JetStream,
    Core,
}

pub struct NatsDriver {
    url: String,
    flavor: Flavor,
    rt: Runtime,
    /// Per durable consumer (stream and group), the ack floor already reported by one of
    /// its consumers' `commit`: see [`JsConsumer::commit`].
    reported: Mutex<HashMap<String, Arc<AtomicU64>>>,
}

impl NatsDriver {
    pub fn new(url: String, flavor: Flavor) -> Result<NatsDriver> {
        // Two workers run every connection's reader and writer and the ack collectors;
        // the workload threads only enter the runtime through `block_on`.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("nats-client")
            .enable_all()
            .build()
            .context("starting the NATS client runtime")?;
        Ok(NatsDriver {
            url,
            flavor,
            rt,
            reported: Mutex::new(HashMap::new()),
        })
    }

    fn connect(&self, role: &str) -> Result<(Client, Arc<Trouble>)> {
        let trouble = Arc::new(Trouble::default());
        let events = trouble.clone();
        let opts = ConnectOptions::new()
            .name(format!("wharf-bench {role}"))
            .subscription_capacity(SUBSCRIPTION_CAPACITY)
            .event_callback(move |event| {
                let events = events.clone();
                async move { events.note(event) }
            });
        let client = self
            .rt
            .block_on(opts.connect(self.url.as_str()))
            .with_context(|| format!("connecting to NATS at {}", self.url))?;
        Ok((client, trouble))
    }
}

/// A JetStream name (stream, durable consumer) for `name`: letters, digits, `-` and
/// `_` are kept, anything else (`.`, `*`, `>`, spaces, slashes...) becomes `_`.
pub fn js_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// What went wrong on a connection behind the client's back: async-nats reports a
/// subscription that dropped messages (a slow consumer), a disconnect (whatever was in
/// flight may be lost) or a server error only through its event callback. Consumers
/// and core producers check it, so dropped messages fail the run instead of going
/// unnoticed.
#[derive(Debug, Default)]
struct Trouble {
    first: Mutex<Option<String>>,
}

impl Trouble {
    fn note(&self, event: Event) {
        match event {
            Event::SlowConsumer(_)
            | Event::Disconnected
            | Event::ServerError(_)
            | Event::ClientError(_) => {
                let mut first = self.first.lock().unwrap_or_else(|e| e.into_inner());
                if first.is_none() {
                    // Once, not for every message dropped.
                    eprintln!("nats: {event}");
                    *first = Some(event.to_string());
                }
            }
            Event::Connected | Event::LameDuckMode | Event::Draining | Event::Closed => {}
        }
    }

    /// The first trouble since the last call, if any.
    fn take(&self) -> Option<String> {
        self.first.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

impl Driver for NatsDriver {
    fn name(&self) -> &'static str {
        match self.flavor {
            Flavor::JetStream => "jetstream",
            Flavor::Core => "nats",
        }
    }

    fn retains(&self) -> bool {
        self.flavor == Flavor::JetStream
    }

    fn create_topic(&self, topic: &str, _partitions: i32) -> Result<()> {
        if self.flavor == Flavor::Core {
            return Ok(());
        }
        let (client, _) = self.connect("admin")?;
        // A JetStream context spawns a task when made: inside the runtime.
        let js = self.rt.block_on(async { jetstream::new(client) });
        let name = js_name(topic);
        let config = stream::Config {
            name: name.clone(),
            subjects: vec![topic.to_owned()],
            storage: stream::StorageType::File,
            num_replicas: 1,
            retention: stream::RetentionPolicy::Limits,
            // No limit may drop a message during a run.
            max_messages: -1,
            max_bytes: -1,
            max_messages_per_subject: -1,
            max_age: Duration::ZERO,
            ..Default::default()
        };
        self.rt
            .block_on(js.create_stream(config))
            .with_context(|| format!("creating stream {name} for subject {topic}"))?;
        Ok(())
    }

    fn delete_topic(&self, topic: &str) -> Result<()> {
        if self.flavor == Flavor::Core {
            return Ok(());
        }
        let (client, _) = self.connect("admin")?;
        // A JetStream context spawns a task when made: inside the runtime.
        let js = self.rt.block_on(async { jetstream::new(client) });
        let name = js_name(topic);
        self.rt
            .block_on(js.delete_stream(&name))
            .with_context(|| format!("deleting stream {name}"))?;
        Ok(())
    }

    fn producer(
        &self,
        topic: &str,
        opts: &ProducerOpts,
        acks: Arc<Acks>,
    ) -> Result<Box<dyn Producer>> {
        let (client, trouble) = self.connect("producer")?;
        let subject = Subject::from(topic);
        if self.flavor == Flavor::Core || opts.acks == "0" {
            return Ok(Box::new(FlushProducer::new(
                self.rt.handle().clone(),
                client,
                subject,
                acks,
                trouble,
            )));
        }
        let js = self.rt.block_on(async {
            jetstream::ContextBuilder::new()
                .max_ack_inflight(PUBLISH_WINDOW)
                .backpressure_on_inflight(true)
                .build(client)
        });
        // Room for every PubAck future the window allows, and a flush marker.
        let (tx, rx) = mpsc::channel(PUBLISH_WINDOW + 1);
        self.rt.spawn(collect_pub_acks(rx, acks, topic.to_owned()));
        Ok(Box::new(JsProducer {
            rt: self.rt.handle().clone(),
            js,
            subject,
            tx,
        }))
    }

    fn consumer(&self, topic: &str, group: &str) -> Result<Box<dyn Consumer>> {
        let (client, trouble) = self.connect("consumer")?;
        match self.flavor {
            Flavor::Core => {
                let sub = self
                    .rt
                    .block_on(async {
                        let sub = client
                            .queue_subscribe(Subject::from(topic), group.to_owned())
                            .await?;
                        // The server handles a connection's commands in order: once the
                        // PONG is back, the SUB is registered and no message is missed.
                        client.flush().await?;
                        Ok::<_, async_nats::Error>(sub)
                    })
                    .map_err(|e| anyhow!("subscribing to {topic} in queue group {group}: {e}"))?;
                Ok(Box::new(CoreConsumer {
                    rt: self.rt.handle().clone(),
                    sub,
                    trouble,
                    _client: client,
                }))
            }
            Flavor::JetStream => {
                let js = self.rt.block_on(async { jetstream::new(client.clone()) });
                let stream_name = js_name(topic);
                let durable = js_name(group);
                let config = pull::Config {
                    durable_name: Some(durable.clone()),
                    deliver_policy: jetstream::consumer::DeliverPolicy::All,
                    ack_policy: jetstream::consumer::AckPolicy::Explicit,
                    max_ack_pending: MAX_ACK_PENDING,
                    ..Default::default()
                };
                let (consumer, messages) = self
                    .rt
                    .block_on(async {
                        let stream = js.get_stream_no_info(&stream_name).await?;
                        let consumer: jetstream::consumer::PullConsumer =
                            stream.get_or_create_consumer(&durable, config).await?;
                        let messages = consumer
                            .stream()
                            .max_messages_per_batch(PULL_BATCH)
                            .heartbeat(Duration::from_secs(5))
                            .messages()
                            .await?;
                        Ok::<_, async_nats::Error>((consumer, messages))
                    })
                    .map_err(|e| {
                        anyhow!("creating durable consumer {durable} on stream {stream_name}: {e}")
                    })?;
                let reported = self
                    .reported
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .entry(format!("{stream_name}/{durable}"))
                    .or_default()
                    .clone();
                Ok(Box::new(JsConsumer {
                    rt: self.rt.handle().clone(),
                    client,
                    consumer,
                    messages,
                    reported,
                    trouble,
                }))
            }
        }
    }
}

/// A JetStream producer: each `send` queues a publish (with a reply inbox) and hands its
/// PubAck future to [`collect_pub_acks`]; at most [`PUBLISH_WINDOW`] are outstanding.
struct JsProducer {
    rt: Handle,
    js: jetstream::Context,
    subject: Subject,
    tx: mpsc::Sender<Pending>,
}

enum Pending {
    Ack(u64, jetstream::context::PublishAckFuture),
    /// Everything queued before it was counted.
    Marker(oneshot::Sender<()>),
}

/// Awaits PubAcks in publish order (the server acknowledges a stream's messages in
/// order, so waiting on the oldest first costs nothing) and counts them.
async fn collect_pub_acks(mut rx: mpsc::Receiver<Pending>, acks: Arc<Acks>, topic: String) {
    while let Some(pending) = rx.recv().await {
        match pending {
            Pending::Ack(bytes, ack) => match ack.await {
                Ok(_) => acks.ok(bytes),
                Err(e) => acks.fail(format!("{topic}: {e}")),
            },
            Pending::Marker(done) => {
                let _ = done.send(());
            }
        }
    }
}

impl Producer for JsProducer {
    fn send(&mut self, _key: Option<&[u8]>, payload: &[u8]) -> Result<()> {
        let bytes = payload.len() as u64;
        let payload = Bytes::copy_from_slice(payload);
        self.rt.block_on(async {
            // Waits only while the window is full.
            let ack = self
                .js
                .publish(self.subject.clone(), payload)
                .await
                .map_err(|e| anyhow!("publishing to {}: {e}", self.subject))?;
            self.tx
                .send(Pending::Ack(bytes, ack))
                .await
                .map_err(|_| anyhow!("the PubAck collector of {} stopped", self.subject))
        })
    }

    fn flush(&mut self, timeout: Duration) -> Result<()> {
        let (done, wait) = oneshot::channel();
        self.rt
            .block_on(async {
                // Made inside the runtime: a timer needs its context.
                tokio::time::timeout(timeout, async {
                    self.tx.send(Pending::Marker(done)).await.ok()?;
                    wait.await.ok()
                })
                .await
            })
            .map_err(|_| {
                anyhow!(
                    "PubAcks of {} still missing after {timeout:?}",
                    self.subject
                )
            })?
            .ok_or_else(|| anyhow!("the PubAck collector of {} stopped", self.subject))
    }
}

/// A producer whose messages count once a connection flush (PING/PONG) queued after
/// them returns: the server received them. Core NATS has no other acknowledgement;
/// JetStream `--acks 0` uses it too.
struct FlushProducer {
    rt: Handle,
    client: Client,
    subject: Subject,
    tx: mpsc::Sender<Batch>,
    batch_messages: u64,
    batch_bytes: u64,
    batch_started: Instant,
}

enum Batch {
    Sent { messages: u64, bytes: u64 },
    Marker(oneshot::Sender<()>),
}

impl FlushProducer {
    fn new(
        rt: Handle,
        client: Client,
        subject: Subject,
        acks: Arc<Acks>,
        trouble: Arc<Trouble>,
    ) -> FlushProducer {
        let (tx, rx) = mpsc::channel(FLUSHES_QUEUED);
        rt.spawn(collect_flushes(rx, client.clone(), acks, trouble));
        FlushProducer {
            rt,
            client,
            subject,
            tx,
            batch_messages: 0,
            batch_bytes: 0,
            batch_started: Instant::now(),
        }
    }

    fn hand_off(&mut self) -> Result<()> {
        if self.batch_messages == 0 {
            return Ok(());
        }
        let batch = Batch::Sent {
            messages: self.batch_messages,
            bytes: self.batch_bytes,
        };
        self.batch_messages = 0;
        self.batch_bytes = 0;
        self.tx
            .blocking_send(batch)
            .map_err(|_| anyhow!("the flush collector of {} stopped", self.subject))
    }
}

/// Flushes the connection once per batch, in order, and counts the batch when the PONG
/// is back. The flush is queued after the batch's publishes on the same connection, so
/// its PONG means the server read them. After a disconnect (or any trouble) the batch
/// being flushed and those already waiting are failed: some of their messages may have
/// been lost with the connection.
async fn collect_flushes(
    mut rx: mpsc::Receiver<Batch>,
    client: Client,
    acks: Arc<Acks>,
    trouble: Arc<Trouble>,
) {
    let fail = |messages: u64, why: &str| {
        for _ in 0..messages {
            acks.fail(why.to_owned());
        }
    };
    while let Some(batch) = rx.recv().await {
        match batch {
            Batch::Sent { messages, bytes } => match client.flush().await {
                Ok(()) => match trouble.take() {
                    None => acks.ok_many(messages, bytes),
                    Some(why) => {
                        fail(messages, &why);
                        while let Ok(Batch::Sent { messages, .. }) = rx.try_recv() {
                            fail(messages, &why);
                        }
                    }
                },
                Err(e) => fail(messages, &format!("flushing the connection: {e}")),
            },
            Batch::Marker(done) => {
                let _ = done.send(());
            }
        }
    }
}

impl Producer for FlushProducer {
    fn send(&mut self, _key: Option<&[u8]>, payload: &[u8]) -> Result<()> {
        let bytes = payload.len() as u64;
        let payload = Bytes::copy_from_slice(payload);
        // Queues the PUB into the client's channel; waits only while it is full.
        self.rt
            .block_on(self.client.publish(self.subject.clone(), payload))
            .map_err(|e| anyhow!("publishing to {}: {e}", self.subject))?;
        if self.batch_messages == 0 {
            self.batch_started = Instant::now();
        }
        self.batch_messages += 1;
        self.batch_bytes += bytes;
        if self.batch_messages >= FLUSH_EVERY || self.batch_started.elapsed() >= FLUSH_INTERVAL {
            self.hand_off()?;
        }
        Ok(())
    }

    fn flush(&mut self, timeout: Duration) -> Result<()> {
        self.hand_off()?;
        let (done, wait) = oneshot::channel();
        self.rt
            .block_on(async {
                tokio::time::timeout(timeout, async {
                    self.tx.send(Batch::Marker(done)).await.ok()?;
                    wait.await.ok()
                })
                .await
            })
            .map_err(|_| {
                anyhow!(
                    "flushes of {} still missing after {timeout:?}",
                    self.subject
                )
            })?
            .ok_or_else(|| anyhow!("the flush collector of {} stopped", self.subject))
    }
}

/// A core NATS queue subscription: the members of one queue group share the messages,
/// every group gets all of them.
struct CoreConsumer {
    rt: Handle,
    sub: async_nats::Subscriber,
    trouble: Arc<Trouble>,
    /// Keeps the connection open (the subscriber alone does too; explicit is clearer).
    _client: Client,
}

impl Consumer for CoreConsumer {
    fn poll(&mut self, timeout: Duration, each: &mut dyn FnMut(&[u8])) -> Result<usize> {
        let n = self.rt.block_on(async {
            let mut n = 0;
            let mut wait = timeout;
            while n < POLL_BATCH {
                // A zero timeout still polls the subscription once: what is buffered.
                match tokio::time::timeout(wait, self.sub.next()).await {
                    Err(_) => break,
                    Ok(None) => bail!("the subscription was closed"),
                    Ok(Some(msg)) => {
                        each(&msg.payload);
                        n += 1;
                    }
                }
                wait = Duration::ZERO;
            }
            Ok(n)
        })?;
        if let Some(why) = self.trouble.take() {
            bail!(
                "core NATS lost messages for this consumer ({why}); it has no retention, so \
                 they are gone"
            );
        }
        Ok(n)
    }

    fn ready(&self) -> bool {
        // `consumer` returned after the subscription was registered (a flush).
        true
    }

    fn commit(&mut self) -> Result<Option<u64>> {
        // Nothing is stored, so there is no position to commit.
        Ok(None)
    }
}

/// A JetStream pull consumer on a durable consumer shared by the group. A pull stream
/// keeps up to [`PULL_BATCH`] messages requested ahead, so `poll` mostly takes what
/// already arrived.
struct JsConsumer {
    rt: Handle,
    client: Client,
    consumer: jetstream::consumer::PullConsumer,
    messages: pull::Stream,
    reported: Arc<AtomicU64>,
    trouble: Arc<Trouble>,
}

impl Consumer for JsConsumer {
    fn poll(&mut self, timeout: Duration, each: &mut dyn FnMut(&[u8])) -> Result<usize> {
        let n = self.rt.block_on(async {
            let mut n = 0;
            let mut wait = timeout;
            while n < POLL_BATCH {
                match tokio::time::timeout(wait, self.messages.next()).await {
                    Err(_) => break,
                    Ok(None) => bail!("the pull consumer's message stream ended"),
                    Ok(Some(Err(e))) if e.kind() == pull::MessagesErrorKind::MissingHeartbeat => {
                        // The stream re-issues its pull request by itself.
                        eprintln!("consumer: {e}");
                    }
                    Ok(Some(Err(e))) => bail!("pulling messages: {e}"),
                    Ok(Some(Ok(msg))) => {
                        each(&msg.payload);
                        n += 1;
                        // A plain ack: one PUB on the connection, no reply awaited. A
                        // double ack (AckSync) would wait a round trip per message, which
                        // would cap the consumer at one message per RTT. Lost acks would
                        // only mean redeliveries after ack_wait; `commit` flushes and
                        // then reads the ack floor back from the server, so what is
                        // reported is what the server recorded, not what was sent.
                        msg.ack()
                            .await
                            .map_err(|e| anyhow!("acknowledging a message: {e}"))?;
                    }
                }
                wait = Duration::ZERO;
            }
            Ok(n)
        })?;
        if let Some(why) = self.trouble.take() {
            // A slow consumer's dropped messages would come back only after ack_wait (30
            // s), as redeliveries counted twice: fail instead of reporting that.
            bail!("the JetStream consumer's connection had trouble: {why}");
        }
        Ok(n)
    }

    fn ready(&self) -> bool {
        // `consumer` returned once the durable consumer existed (DeliverPolicy::All:
        // it will see every message of the stream, whenever it is sent).
        true
    }

    /// The durable consumer's ack floor read back from the server: its stream sequence
    /// is how many messages, from the start of the stream, are acknowledged without a
    /// gap (sequences start at 1 and runs delete nothing). It belongs to the group, not
    /// to one consumer, while the workload adds up its consumers' commits (Kafka
    /// assignments are disjoint): so each consumer reports how far the floor moved since
    /// any consumer of the group last reported it, and the sum is the floor.
    fn commit(&mut self) -> Result<Option<u64>> {
        let floor = self.rt.block_on(async {
            // Acks are plain PUBs: after this PONG the server has read every one.
            self.client
                .flush()
                .await
                .map_err(|e| anyhow!("flushing acknowledgements: {e}"))?;
            // ...but it applies them to the consumer later (2.9 queues acks to the
            // consumer's own goroutine): read the floor until it stops moving.
            let mut last = None;
            for _ in 0..100 {
                let info = self
                    .consumer
                    .info()
                    .await
                    .map_err(|e| anyhow!("reading the consumer's ack floor: {e}"))?;
                let floor = info.ack_floor.stream_sequence;
                if info.num_ack_pending == 0 || last == Some(floor) {
                    return Ok(floor);
                }
                last = Some(floor);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            last.ok_or_else(|| anyhow!("no consumer info"))
        })?;
        let before = self.reported.fetch_max(floor, Ordering::AcqRel);
        Ok(Some(floor.saturating_sub(before)))
    }
}

#[cfg(test)]
mod tests {
    use super::js_name;

    #[test]
    fn js_names_keep_what_jetstream_allows() {
        assert_eq!(js_name("wharf-bench-e2e-17_3"), "wharf-bench-e2e-17_3");
        assert_eq!(js_name("orders.eu.*>/x y\\z"), "orders_eu____x_y_z");
    }
}
