//! The Kafka driver: librdkafka through the `rdkafka` crate, for any Kafka-compatible
//! broker.
//!
//! Producers are `BaseProducer`s with a delivery callback, so many messages are in
//! flight at once (awaiting one `FutureProducer::send` at a time would measure round
//! trips, not throughput), served by a thread of our own that librdkafka wakes (see
//! [`DeliveryThread`]). Consumers are `BaseConsumer`s subscribed to the topic.

use std::io::Read as _;
use std::os::fd::AsRawFd as _;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::bindings as rdsys;
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer as _};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{DeliveryResult, Message};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer as _, ProducerContext};
use rdkafka::{ClientContext, Offset};

use crate::driver::{Acks, Consumer, Driver, Producer, ProducerOpts};

pub struct KafkaDriver {
    brokers: String,
    /// `-X key=value` properties, applied to every client after ours.
    extra: Vec<(String, String)>,
}

impl KafkaDriver {
    pub fn new(brokers: String, extra: Vec<(String, String)>) -> KafkaDriver {
        KafkaDriver { brokers, extra }
    }

    fn config(&self) -> ClientConfig {
        let mut cfg = ClientConfig::new();
        cfg.set("bootstrap.servers", &self.brokers)
            // TCP_NODELAY, as the Java client sets it. librdkafka leaves Nagle on by
            // default, which holds a small request back until the previous one is
            // acknowledged: with requests in flight that wait for an fsync, it would
            // measure Nagle and delayed ACKs instead of the broker.
            .set("socket.nagle.disable", "true");
        cfg
    }

    fn with_extra(&self, cfg: &mut ClientConfig) {
        for (k, v) in &self.extra {
            cfg.set(k, v);
        }
    }

    fn admin(&self) -> Result<(AdminClient<DefaultClientContext>, tokio::runtime::Runtime)> {
        let mut cfg = self.config();
        self.with_extra(&mut cfg);
        let admin = cfg.create().context("creating the Kafka admin client")?;
        // The admin calls are futures; a small runtime drives them.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok((admin, rt))
    }
}

const ADMIN_TIMEOUT: Duration = Duration::from_secs(30);

impl Driver for KafkaDriver {
    fn name(&self) -> &'static str {
        "kafka"
    }

    fn create_topic(&self, topic: &str, partitions: i32) -> Result<()> {
        let (admin, rt) = self.admin()?;
        let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
        let opts = AdminOptions::new().operation_timeout(Some(ADMIN_TIMEOUT));
        let results = rt
            .block_on(admin.create_topics([&new], &opts))
            .with_context(|| format!("creating topic {topic}"))?;
        for r in results {
            if let Err((name, code)) = r {
                bail!("creating topic {name}: {code}");
            }
        }
        Ok(())
    }

    fn delete_topic(&self, topic: &str) -> Result<()> {
        let (admin, rt) = self.admin()?;
        let opts = AdminOptions::new().operation_timeout(Some(ADMIN_TIMEOUT));
        let results = rt
            .block_on(admin.delete_topics(&[topic], &opts))
            .with_context(|| format!("deleting topic {topic}"))?;
        for r in results {
            if let Err((name, code)) = r {
                bail!("deleting topic {name}: {code}");
            }
        }
        Ok(())
    }

    fn producer(
        &self,
        topic: &str,
        opts: &ProducerOpts,
        acks: Arc<Acks>,
    ) -> Result<Box<dyn Producer>> {
        let mut cfg = self.config();
        cfg.set("acks", &opts.acks)
            .set("linger.ms", opts.linger_ms.to_string())
            .set("batch.size", opts.batch_bytes.to_string())
            .set("compression.type", &opts.compression);
        self.with_extra(&mut cfg);
        let producer: BaseProducer<AckContext> = cfg
            .create_with_context(AckContext { acks })
            .context("creating a Kafka producer")?;
        let producer = Arc::new(producer);
        let reports = DeliveryThread::start(Arc::clone(&producer))?;
        Ok(Box::new(KafkaProducer {
            producer,
            _reports: reports,
            topic: topic.to_owned(),
            trace: opts
                .traceparent
                .map(|sampled| TraceIds::new(topic, sampled)),
        }))
    }

    fn consumer(&self, topic: &str, group: &str) -> Result<Box<dyn Consumer>> {
        let mut cfg = self.config();
        cfg.set("group.id", group)
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "true");
        self.with_extra(&mut cfg);
        let consumer: BaseConsumer = cfg.create().context("creating a Kafka consumer")?;
        consumer
            .subscribe(&[topic])
            .with_context(|| format!("subscribing to {topic}"))?;
        Ok(Box::new(KafkaConsumer { consumer }))
    }
}

/// Counts delivery reports: a message counts once the broker acknowledged it.
struct AckContext {
    acks: Arc<Acks>,
}

impl ClientContext for AckContext {}

impl ProducerContext for AckContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(msg) => self.acks.ok(msg.payload_len() as u64),
            Err((e, msg)) => self
                .acks
                .fail(format!("{}[{}]: {e}", msg.topic(), msg.partition())),
        }
    }
}

struct KafkaProducer {
    producer: Arc<BaseProducer<AckContext>>,
    /// Declared after `producer` but holding its own `Arc` of it: stopped (and its
    /// queue handle released) before the last `Arc` of the producer goes.
    _reports: DeliveryThread,
    topic: String,
    /// With --traceparent: where each message's trace id comes from.
    trace: Option<TraceIds>,
}

/// Distinct trace and span ids, one pair per message: a per-producer seed (time and
/// topic) mixed with a counter.
struct TraceIds {
    seed: u64,
    next: u64,
    /// Fraction of messages whose sampled flag is set.
    sampled: f64,
}

impl TraceIds {
    fn new(topic: &str, sampled: f64) -> TraceIds {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let seed = topic.bytes().fold(nanos ^ 0x9e37_79b9_7f4a_7c15, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        TraceIds {
            seed,
            next: 0,
            sampled,
        }
    }

    /// `00-<trace id>-<span id>-<flags>`: flags 01 (sampled) on `sampled` of them,
    /// evenly spread, else 00.
    fn traceparent(&mut self) -> String {
        self.next += 1;
        let n = self.next as f64;
        let flags = if (n * self.sampled).floor() > ((n - 1.0) * self.sampled).floor() {
            "01"
        } else {
            "00"
        };
        let mix = |x: u64| {
            let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            (z ^ (z >> 31)) | 1
        };
        let (a, b, c) = (
            mix(self.seed),
            mix(self.seed ^ self.next),
            mix(self.next.rotate_left(17) ^ self.seed),
        );
        format!("00-{a:016x}{b:016x}-{c:016x}-{flags}")
    }
}

impl Producer for KafkaProducer {
    fn send(&mut self, key: Option<&[u8]>, payload: &[u8]) -> Result<()> {
        let mut record = BaseRecord::<[u8], [u8]>::to(&self.topic).payload(payload);
        if let Some(key) = key {
            record = record.key(key);
        }
        if let Some(ids) = &mut self.trace {
            let tp = ids.traceparent();
            record = record.headers(OwnedHeaders::new_with_capacity(1).insert(Header {
                key: "traceparent",
                value: Some(tp.as_str()),
            }));
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                // librdkafka's queue is full: the broker is behind; wait for acks.
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((e, _)) => return Err(anyhow!("producing to {}: {e}", self.topic)),
            }
        }
    }

    fn flush(&mut self, timeout: Duration) -> Result<()> {
        // `BaseProducer::flush` would poll for delivery reports itself, in the loop
        // described at [`DeliveryThread`]; the delivery thread serves them, so this
        // only waits until none is left (messages queued, in flight, or reported but
        // not yet served).
        let deadline = Instant::now() + timeout;
        while self.producer.in_flight_count() > 0 {
            if Instant::now() >= deadline {
                bail!(
                    "flushing the producer of {}: {} messages still in flight after {timeout:?}",
                    self.topic,
                    self.producer.in_flight_count()
                );
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    }
}

/// Most events served per wake-up of the [`DeliveryThread`].
const SERVE_BOUND: usize = 100_000;

/// Serves a producer's delivery reports (its main queue) from a thread that sleeps until
/// librdkafka has one.
///
/// rdkafka's `ThreadedProducer` polls in a loop of `BaseProducer::poll(100 ms)`, and that
/// call (rdkafka 0.38) keeps polling until its deadline passes, converting the time left
/// to whole milliseconds: in the last millisecond of every call it asks librdkafka to
/// wait 0 ms, again and again, spinning a core for up to 1 ms every 100 ms. On two cores
/// shared with the broker that spin shows in the latency of whichever messages it meets:
/// at 2,000 msg/s, about 1% of them. Here librdkafka writes a byte to a socket when the
/// queue gets an event (`rd_kafka_queue_io_event_enable`); the thread blocks reading it,
/// then serves the queue until it is empty with non-blocking polls.
struct DeliveryThread {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    queue: Arc<MainQueue>,
    /// The socket pair librdkafka writes to; open until the io event is disabled.
    _wake: (UnixStream, UnixStream),
}

/// A handle on a producer's main queue (`rd_kafka_queue_get_main`), released on drop.
struct MainQueue {
    queue: *mut rdsys::rd_kafka_queue_t,
    /// Keeps the client the handle belongs to alive as long as the handle.
    _producer: Arc<BaseProducer<AckContext>>,
}

// SAFETY: librdkafka's queue functions (`rd_kafka_queue_length`,
// `rd_kafka_queue_io_event_enable`, `rd_kafka_queue_destroy`) lock the queue themselves
// and may be called from any thread; the handle is valid until `Drop` destroys it, and
// `_producer` keeps the client it belongs to alive until then.
unsafe impl Send for MainQueue {}
// SAFETY: as for `Send`: every use through `&MainQueue` is a thread-safe librdkafka call.
unsafe impl Sync for MainQueue {}

impl MainQueue {
    fn new(producer: Arc<BaseProducer<AckContext>>) -> MainQueue {
        // SAFETY: `native_ptr` is the live client owned by `producer`;
        // `rd_kafka_queue_get_main` returns a new reference to its main queue (never
        // null for a live client), released once in `Drop`.
        let queue = unsafe { rdsys::rd_kafka_queue_get_main(producer.client().native_ptr()) };
        MainQueue {
            queue,
            _producer: producer,
        }
    }

    fn len(&self) -> usize {
        // SAFETY: `queue` is valid until `Drop` (see `MainQueue::new`).
        unsafe { rdsys::rd_kafka_queue_length(self.queue) }
    }

    /// Has librdkafka write a byte to `fd` whenever the queue goes from empty to not
    /// empty; `None` turns that off.
    fn wake_on(&self, fd: Option<&UnixStream>) {
        const BYTE: &[u8; 1] = b"1";
        let raw = fd.map_or(-1, |f| f.as_raw_fd());
        // SAFETY: `queue` is valid (see `MainQueue::new`); `BYTE` is static, and the
        // caller keeps `fd` open until it turns the event off (`DeliveryThread::drop`).
        unsafe {
            rdsys::rd_kafka_queue_io_event_enable(self.queue, raw, BYTE.as_ptr().cast(), 1);
        }
    }
}

impl Drop for MainQueue {
    fn drop(&mut self) {
        // SAFETY: the reference taken in `MainQueue::new`, released exactly once; the
        // client is still alive (`_producer` is dropped after this runs).
        unsafe { rdsys::rd_kafka_queue_destroy(self.queue) }
    }
}

impl DeliveryThread {
    fn start(producer: Arc<BaseProducer<AckContext>>) -> Result<DeliveryThread> {
        let (rx, tx) = UnixStream::pair().context("creating the delivery wake-up socket")?;
        // librdkafka's writes must never block its threads.
        tx.set_nonblocking(true)?;
        // Wake up now and then even without a report, to see `stop`.
        rx.set_read_timeout(Some(Duration::from_millis(100)))?;
        let queue = Arc::new(MainQueue::new(Arc::clone(&producer)));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (stop, queue) = (Arc::clone(&stop), Arc::clone(&queue));
            let mut rx = rx.try_clone()?;
            std::thread::Builder::new()
                .name("delivery reports".into())
                .spawn(move || {
                    let mut buf = [0u8; 64];
                    while !stop.load(Ordering::Acquire) {
                        // Wakes on a byte (a report queued), a timeout or an error
                        // alike; the queue is looked at either way.
                        let _ = rx.read(&mut buf);
                        // A report queued after this finds the queue empty again and
                        // writes another byte. Bounded, so an op that a poll does not
                        // take off the queue cannot make this spin.
                        for _ in 0..SERVE_BOUND {
                            if queue.len() == 0 {
                                break;
                            }
                            producer.poll(Duration::ZERO);
                        }
                    }
                })
                .context("starting the delivery report thread")?
        };
        // Only once the thread runs, so a failure above leaves librdkafka writing to no
        // socket. A report queued before this is seen at the thread's first timeout.
        queue.wake_on(Some(&tx));
        Ok(DeliveryThread {
            stop,
            thread: Some(thread),
            queue,
            _wake: (rx, tx),
        })
    }
}

impl Drop for DeliveryThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        // Before the socket closes (`_wake` is dropped after this body).
        self.queue.wake_on(None);
    }
}

struct KafkaConsumer {
    consumer: BaseConsumer,
}

const COMMIT_TIMEOUT: Duration = Duration::from_secs(30);

/// At most this many messages per `poll` call, so callers check their stop condition.
const POLL_BATCH: usize = 1000;

impl Consumer for KafkaConsumer {
    fn poll(&mut self, timeout: Duration, each: &mut dyn FnMut(&[u8])) -> Result<usize> {
        let mut n = 0;
        let mut wait = timeout;
        while n < POLL_BATCH {
            match self.consumer.poll(wait) {
                None => break,
                Some(Ok(msg)) => {
                    each(msg.payload().unwrap_or(&[]));
                    n += 1;
                }
                // Transient (a rebalance, a reconnect): librdkafka retries by itself.
                Some(Err(e)) => eprintln!("consumer: {e}"),
            }
            wait = Duration::ZERO;
        }
        Ok(n)
    }

    fn commit(&mut self) -> Result<Option<u64>> {
        match self.consumer.commit_consumer_state(CommitMode::Sync) {
            // Nothing read, so nothing to commit.
            Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(e) => return Err(anyhow!("committing offsets: {e}")),
        }
        let committed = self
            .consumer
            .committed(COMMIT_TIMEOUT)
            .context("reading committed offsets back")?;
        let mut covered = 0;
        for p in committed.elements() {
            if let Offset::Offset(n) = p.offset() {
                covered += u64::try_from(n).unwrap_or(0);
            }
        }
        Ok(Some(covered))
    }

    fn ready(&self) -> bool {
        self.consumer
            .assignment()
            .map(|a| a.count() > 0)
            .unwrap_or(false)
    }
}
