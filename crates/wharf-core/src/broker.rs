//! The broker: the data directory, its topics and one partition log per partition.
//!
//! ```text
//! <data-dir>/.lock                       DirLock: one broker per data directory
//!           /topics.json                 the topic registry (see `registry`)
//!           /topics/<topic>/<partition>/ one wharf_log::SharedLog each
//!           /topics/<topic>~<id>.deleted a topic being deleted; removed on next open
//!           /producer-ids                high-water mark of allocated producer ids
//!           /topics/<topic>/<partition>/<offset>.producers  producer state snapshots
//! ```
//!
//! Concurrency: the topic map sits behind a `std::sync::RwLock` held only long enough to
//! clone an `Arc` out of it, never across a blocking call or an `.await`. Appends and
//! reads run on tokio's blocking pool (the log is synchronous). Admin operations
//! (create, delete, alter, add partitions) are serialized by the registry's mutex, which
//! only they take, inside a blocking task.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError, RwLock, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::watch;
use tracing::{debug, error, info, warn};
use wharf_log::{
    AppendInfo, AppendOutcome, AppendWithError, DirLock, FlushPolicy, LogError, LogStats,
    ReadResult, SharedLog,
};

use crate::dedup::{Claim, Dedup, Reservations};
use crate::error::{CoreError, IoContext, Result};
use crate::group::{GroupConfig, GroupCoordinator};
use crate::metrics::TopicMetrics;
use crate::otel::{self, MessageTracer};
use crate::producer::{
    PartitionProducers, ProducerEntry, ProducerIdAllocator, ProducerIdAndEpoch, SequenceError,
    MAX_BUMPED_EPOCH,
};
use crate::publish::{self, Publish, Published};
use crate::registry::{sync_dir, TopicRecord, TopicRegistry};
use crate::topic::{ConfigOp, NewTopic, TopicConfig, TopicDescription, TopicName};

/// Name of the folder holding one folder per topic.
pub const TOPICS_DIR: &str = "topics";
/// Suffix of a topic folder being deleted. Together with `~`, which no topic name may
/// contain, it can never be mistaken for a live topic (`a.deleted` is a valid name).
const DELETED_SUFFIX: &str = ".deleted";

/// How often retention runs unless configured otherwise.
pub const DEFAULT_RETENTION_CHECK_INTERVAL: Duration = Duration::from_secs(30);

/// How long a producer id stays known on a partition without appending there, unless
/// configured otherwise (Kafka's `producer.id.expiration.ms` default, one day).
pub const DEFAULT_PRODUCER_ID_EXPIRATION: Duration = Duration::from_secs(24 * 60 * 60);

/// How many bytes a partition appends between two producer state snapshots unless
/// configured otherwise.
pub const DEFAULT_PRODUCER_SNAPSHOT_INTERVAL_BYTES: u64 = 64 << 20;

/// Settings of a [`Broker`].
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Where topics and the registry live. Created if missing.
    pub data_dir: PathBuf,
    /// When appends become durable; applies to every partition.
    pub flush: FlushPolicy,
    /// Settings of a topic that does not override them (Kafka's broker-level defaults).
    pub topic_defaults: TopicConfig,
    /// How often retention (`retention.ms`, `retention.bytes`) is applied.
    pub retention_check_interval: Duration,
    /// The consumer-group coordinator's settings.
    pub groups: GroupConfig,
    /// Bytes appended to a partition between two snapshots of its producer state. A
    /// smaller value writes (and fsyncs) snapshots more often; a larger one makes opening
    /// after a crash replay more of the log (only batch headers are used, but whole
    /// batches are read).
    pub producer_snapshot_interval_bytes: u64,
    /// A producer that appended nothing to a partition for this long is forgotten there
    /// (checked with retention, every `retention_check_interval`). Its later batches are
    /// accepted at any sequence, so a retry it sends after that is stored twice; a
    /// longer time keeps more state in memory and in snapshots.
    pub producer_id_expiration: Duration,
}

impl BrokerConfig {
    /// Defaults: `always` flush, Kafka's topic defaults, retention every 30 s.
    pub fn new(data_dir: impl Into<PathBuf>) -> BrokerConfig {
        BrokerConfig {
            data_dir: data_dir.into(),
            flush: FlushPolicy::default(),
            topic_defaults: TopicConfig::default(),
            retention_check_interval: DEFAULT_RETENTION_CHECK_INTERVAL,
            groups: GroupConfig::default(),
            producer_snapshot_interval_bytes: DEFAULT_PRODUCER_SNAPSHOT_INTERVAL_BYTES,
            producer_id_expiration: DEFAULT_PRODUCER_ID_EXPIRATION,
        }
    }
}

/// The offsets of one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionOffsets {
    /// First offset still stored (raised by retention).
    pub log_start_offset: u64,
    /// Offset the next appended record gets.
    pub log_end_offset: u64,
    /// Everything below it is committed (durable under the flush policy); fetches never
    /// read past it.
    pub high_watermark: u64,
}

/// One open partition.
struct Partition {
    topic: TopicName,
    index: u32,
    log: SharedLog,
    /// Idempotent producers' sequence state; checked and updated inside the log's
    /// append hooks.
    producers: PartitionProducers,
    /// The last published high watermark. A long-poll fetch waits on a receiver instead
    /// of sleeping; dropping the partition (topic deleted, broker shut down) closes it.
    hw: watch::Sender<u64>,
    /// Idempotency keys published within the dedup window (see `dedup`).
    dedup: Dedup,
    /// The topic's metric handles (shared with its `TopicState`).
    metrics: Arc<TopicMetrics>,
}

impl Partition {
    fn err(&self, source: LogError) -> CoreError {
        CoreError::Log {
            topic: self.topic.to_string(),
            partition: self.index,
            source,
        }
    }

    fn sequence_err(&self, e: SequenceError) -> CoreError {
        let (topic, partition) = (self.topic.to_string(), self.index);
        match e {
            SequenceError::Fenced {
                producer_id,
                current_epoch,
                epoch,
            } => CoreError::InvalidProducerEpoch {
                topic,
                partition,
                producer_id,
                producer_epoch: epoch,
                current_epoch,
            },
            SequenceError::OutOfOrder {
                producer_id,
                epoch,
                expected,
                received,
            } => CoreError::OutOfOrderSequence {
                topic,
                partition,
                producer_id,
                producer_epoch: epoch,
                expected,
                received,
            },
            SequenceError::Transactional { producer_id } => CoreError::TransactionalBatch {
                topic,
                partition,
                producer_id,
            },
        }
    }

    /// Writes a producer state snapshot; a failure is logged, not returned, because the
    /// state can always be rebuilt from the log.
    fn snapshot_producers(&self, wait: bool) {
        if let Err(e) = self.producers.snapshot(&self.log, wait) {
            warn!(topic = %self.topic, partition = self.index, error = %e,
                "could not write a producer state snapshot; the next open replays more of the log");
        }
    }

    /// An append error as the broker reports it.
    fn append_err(&self, e: AppendWithError<SequenceError>) -> CoreError {
        match e {
            AppendWithError::Log(e) => self.err(e),
            AppendWithError::Rejected(e) => self.sequence_err(e),
        }
    }

    /// What follows a durable append: wake readers of the new high watermark, and
    /// snapshot the producer state when enough was appended since the last one.
    fn appended(&self) {
        self.publish_high_watermark();
        if self.producers.snapshot_due() {
            self.snapshot_producers(false);
        }
    }

    /// Publishes the log's high watermark to waiters. The log is read inside the watch's
    /// lock so that two racing publishers cannot publish an older value last.
    fn publish_high_watermark(&self) {
        let log = &self.log;
        self.hw.send_if_modified(|cur| {
            let hw = log.high_watermark();
            if hw != *cur {
                *cur = hw;
                true
            } else {
                false
            }
        });
    }
}

/// A topic's state. Immutable: an alteration swaps in a new `Arc<TopicState>`, so
/// readers never see half a change and never wait for a writer.
struct TopicState {
    desc: TopicDescription,
    partitions: Vec<Arc<Partition>>,
    /// Where [`Broker::publish`]'s next unkeyed message goes; shared by every version of
    /// the topic's state.
    round_robin: Arc<AtomicU32>,
    /// The topic's metric handles, shared by every version of its state.
    metrics: Arc<TopicMetrics>,
}

/// Wakes background threads when the broker stops.
#[derive(Default)]
struct StopSignal {
    stopped: Mutex<bool>,
    cv: Condvar,
}

impl StopSignal {
    /// Waits up to `d`; returns true once stop was signalled.
    fn wait(&self, d: Duration) -> bool {
        let guard = self.stopped.lock().unwrap_or_else(PoisonError::into_inner);
        let (guard, _) = self
            .cv
            .wait_timeout_while(guard, d, |stopped| !*stopped)
            .unwrap_or_else(PoisonError::into_inner);
        *guard
    }

    fn stop(&self) {
        *self.stopped.lock().unwrap_or_else(PoisonError::into_inner) = true;
        self.cv.notify_all();
    }
}

struct Background {
    stop: Arc<StopSignal>,
    threads: Vec<JoinHandle<()>>,
}

impl Background {
    fn stop_and_join(self) {
        self.stop.stop();
        for t in self.threads {
            if t.join().is_err() {
                error!("a broker background thread panicked");
            }
        }
    }
}

struct Shared {
    data_dir: PathBuf,
    flush: FlushPolicy,
    defaults: TopicConfig,
    topics: RwLock<BTreeMap<String, Arc<TopicState>>>,
    /// Serializes admin operations; taken only inside blocking tasks.
    registry: Mutex<TopicRegistry>,
    /// Taken only inside blocking tasks (it may fsync).
    producer_ids: Mutex<ProducerIdAllocator>,
    producer_snapshot_every: u64,
    producer_id_expiration_ms: i64,
    closed: AtomicBool,
    /// Spans of traced messages; set once, at startup, when tracing is on.
    tracer: OnceLock<Arc<MessageTracer>>,
}

/// The broker core: topics, their partitions and the background work on them.
///
/// Front-ends hold it (or an `Arc` of it) and call its async methods from any task.
pub struct Broker {
    shared: Arc<Shared>,
    background: Mutex<Option<Background>>,
    /// Declared before `lock`: dropped (its journal thread joined) before the lock goes.
    groups: GroupCoordinator,
    /// Back-pressure from queue subscriptions, asked before a produce is stored.
    gate: RwLock<Option<Weak<dyn ProduceGate>>>,
    /// Held until shutdown completes, so no second broker opens the directory while
    /// this one still has logs open.
    lock: Mutex<Option<DirLock>>,
}

/// Runs blocking work on tokio's blocking pool. A panic there becomes an error rather
/// than taking the caller's task down.
async fn run_blocking<T, F>(what: &'static str, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| CoreError::Internal {
            what,
            reason: e.to_string(),
        })?
}

/// Decides whether a topic takes new messages now: queue subscriptions over their
/// backlog limit slow producers down or refuse them.
pub trait ProduceGate: Send + Sync {
    /// `Ok` to store; [`CoreError::Throttled`] to slow the producer down (retry soon);
    /// [`CoreError::BacklogFull`] to refuse.
    fn admit(&self, topic: &str) -> Result<()>;
    /// Resolves when a backlog may have shrunk (acks, dead letters, seeks), so a held
    /// producer looks again; create it before calling `admit`.
    fn drained(&self) -> tokio::sync::futures::Notified<'_>;
}

/// A produce whose batches are written, on its way to disk: see
/// [`Broker::produce_start`].
#[must_use = "a produce is acknowledged only once durable() returns"]
pub enum PendingProduce {
    /// Durable already (a flush policy other than `always`).
    Ready(AppendOutcome),
    /// The blocking task that waits for the fsync (and runs it, if its turn).
    Waiting(tokio::task::JoinHandle<Result<AppendOutcome>>),
}

/// Largest request written in place by [`Broker::produce_start`]; larger ones (their
/// CRC alone takes a while) go to the blocking pool.
const INLINE_APPEND_BYTES: usize = 1 << 20;

/// Bytes read at a time while rebuilding a partition's dedup window.
const DEDUP_SCAN_READ_BYTES: usize = 1 << 20;

/// [`Broker::publish`]'s work on one partition: claim the idempotency keys, append the
/// messages this call owns as one append, complete the claims, then wait for keys other
/// calls are appending (claiming again those whose append failed).
async fn publish_partition(
    p: Arc<Partition>,
    mut todo: Vec<(usize, Publish)>,
    window_ms: u64,
    max_batch: u32,
    tracer: Option<Arc<MessageTracer>>,
) -> Result<Vec<(usize, Published)>> {
    let dedup = window_ms > 0 && todo.iter().any(|(_, m)| m.idempotency_key.is_some());
    if dedup {
        let loader = Arc::clone(&p);
        p.dedup
            .loaded
            .get_or_try_init(|| load_dedup(loader, window_ms))
            .await?;
    }
    let mut out = Vec::with_capacity(todo.len());
    while !todo.is_empty() {
        let now = now_ms();
        let claims = if dedup {
            p.dedup.claim_all(
                todo.iter().map(|(_, m)| m.idempotency_key.as_deref()),
                window_ms,
                now,
            )
        } else {
            todo.iter().map(|_| None).collect()
        };
        let mut own = Vec::new();
        let mut waits = Vec::new();
        let mut reservations = Reservations::new(&p.dedup);
        for ((i, m), claim) in todo.drain(..).zip(claims) {
            let published = |offset| Published {
                partition: p.index,
                offset,
                duplicate: true,
            };
            match claim {
                None => own.push((i, m)),
                Some(Claim::Owned(r)) => {
                    reservations.push(r, own.len() as u64);
                    own.push((i, m));
                }
                Some(Claim::Stored(offset)) => out.push((i, published(offset))),
                Some(Claim::Wait(rx)) => waits.push((i, m, rx)),
            }
        }
        if !own.is_empty() {
            // On an error the reservations are dropped: released for others to claim.
            let batches = publish::encode(&own, now, max_batch)?;
            let outcome = produce_on(Arc::clone(&p), batches, tracer.clone())
                .await?
                .durable()
                .await?;
            let base = outcome.info.base_offset;
            reservations.complete(base, now);
            for (position, (i, _)) in own.into_iter().enumerate() {
                out.push((
                    i,
                    Published {
                        partition: p.index,
                        offset: base + position as u64,
                        duplicate: false,
                    },
                ));
            }
        } else {
            drop(reservations);
        }
        for (i, m, mut rx) in waits {
            let stored = rx.wait_for(Option::is_some).await.ok().and_then(|v| *v);
            match stored {
                Some(offset) => out.push((
                    i,
                    Published {
                        partition: p.index,
                        offset,
                        duplicate: true,
                    },
                )),
                // The other call's append failed: claim it again.
                None => todo.push((i, m)),
            }
        }
    }
    Ok(out)
}

/// Rebuilds a partition's dedup map from its log: the idempotency-key headers of the
/// records from the first batch stored within the window up to the high watermark.
/// Bounded by what the partition stored within the window; runs on the blocking pool.
async fn load_dedup(p: Arc<Partition>, window_ms: u64) -> Result<()> {
    run_blocking("rebuilding the dedup window", move || {
        let now = now_ms();
        let since = now.saturating_sub(i64::try_from(window_ms).unwrap_or(i64::MAX));
        let hw = p.log.high_watermark();
        let mut offset = p
            .log
            .offset_for_timestamp(since)
            .map_err(|e| p.err(e))?
            .unwrap_or(hw)
            .max(p.log.log_start_offset());
        let mut found = Vec::new();
        while offset < hw {
            let read = match p.log.plan_read(offset, DEDUP_SCAN_READ_BYTES) {
                Ok(plan) => plan.execute(),
                Err(e) => Err(e),
            };
            let read = match read {
                Ok(r) => r,
                // Retention moved the start past us.
                Err(LogError::OffsetOutOfRange { log_start, .. }) if log_start > offset => {
                    offset = log_start;
                    continue;
                }
                Err(e) => return Err(p.err(e)),
            };
            if read.bytes.is_empty() {
                break;
            }
            let decoded = match crate::records::decode(read.bytes.into(), offset) {
                Ok(d) => d,
                Err(e) => {
                    warn!(topic = %p.topic, partition = p.index, error = %e,
                        "stopped rebuilding the dedup window at a batch that does not decode; keys stored after it are not deduplicated");
                    break;
                }
            };
            for m in &decoded.messages {
                if m.offset >= hw {
                    break;
                }
                let key = m
                    .header(crate::headers::IDEMPOTENCY_KEY)
                    .and_then(|v| std::str::from_utf8(v).ok());
                if let Some(key) = key {
                    found.push((key.to_string(), m.offset, m.timestamp_ms));
                }
            }
            if decoded.end_offset <= offset {
                break;
            }
            offset = decoded.end_offset;
        }
        debug!(topic = %p.topic, partition = p.index, keys = found.len(), "dedup window rebuilt from the log");
        p.dedup.load(found);
        Ok(())
    })
    .await
}

/// [`Broker::produce_start`] on a partition already looked up.
///
/// With a tracer, the stored batches (their base offsets stamped) go to
/// [`MessageTracer::stored`] once durable, after the high watermark moved.
async fn produce_on(
    p: Arc<Partition>,
    mut batches: Vec<u8>,
    tracer: Option<Arc<MessageTracer>>,
) -> Result<PendingProduce> {
    let now = now_ms();
    let received = tracer.as_ref().map(|_| SystemTime::now());
    if batches.len() <= INLINE_APPEND_BYTES && !p.log.roll_due(batches.len() as u64, now) {
        // The common case, in place: checking a CRC over at most 1 MiB and a pwrite
        // into the page cache take microseconds, and a message that waits for no
        // other thread reaches its fsync sooner. Only the wait for durability (which
        // may run the fsync) goes to the blocking pool.
        let (outcome, durability) = p
            .producers
            .append_deferred(&p.log, &mut batches, now)
            .map_err(|e| p.append_err(e))?;
        // Only with a tracer, only for batches actually stored, and only when they may
        // hold a traced record: kept (a zero-copy move) until they are durable;
        // otherwise freed here as before.
        let traced = match (tracer, received) {
            (Some(t), Some(r)) if !outcome.duplicate && otel::may_hold_traces(&batches) => {
                Some((t, Bytes::from(batches), r, SystemTime::now()))
            }
            _ => None,
        };
        count_appended(&p, &outcome);
        if durability.is_none() {
            // Readable now (a policy other than `always`).
            p.publish_high_watermark();
            if !p.producers.snapshot_due() {
                if let Some((t, b, received, written)) = traced {
                    t.stored(
                        p.topic.as_str(),
                        p.index,
                        b,
                        received,
                        written,
                        SystemTime::now(),
                    );
                }
                return Ok(PendingProduce::Ready(outcome));
            }
        }
        let task = tokio::task::spawn_blocking(move || {
            if let Some(d) = durability {
                p.log.wait_durable_for(d).map_err(|e| p.err(e))?;
            }
            p.appended();
            if let Some((t, b, received, written)) = traced {
                t.stored(
                    p.topic.as_str(),
                    p.index,
                    b,
                    received,
                    written,
                    SystemTime::now(),
                );
            }
            Ok(outcome)
        });
        return Ok(PendingProduce::Waiting(task));
    }
    // A large request, or one that rolls the segment (which syncs the sealed segment
    // and creates files): all of it on the blocking pool.
    let (written_tx, written_rx) = tokio::sync::oneshot::channel::<()>();
    // Publishing inside the blocking task means waiters are woken even if the caller
    // stops waiting once the append has started.
    let task = tokio::task::spawn_blocking(move || {
        let outcome = p
            .producers
            .append(&p.log, &mut batches, now, move |_| {
                let _ = written_tx.send(());
            })
            .map_err(|e| p.append_err(e))?;
        count_appended(&p, &outcome);
        p.appended();
        if let (Some(t), Some(received)) = (tracer, received) {
            if !outcome.duplicate && otel::may_hold_traces(&batches) {
                let now = SystemTime::now();
                t.stored(
                    p.topic.as_str(),
                    p.index,
                    Bytes::from(batches),
                    received,
                    now,
                    now,
                );
            }
        }
        Ok(outcome)
    });
    let pending = PendingProduce::Waiting(task);
    match written_rx.await {
        Ok(()) => Ok(pending),
        // Refused (or failed) before anything was written: the task's error.
        Err(_) => match pending.durable().await {
            Err(e) => Err(e),
            Ok(outcome) => Err(CoreError::Internal {
                what: "appending",
                reason: format!("append ended without being written: {outcome:?}"),
            }),
        },
    }
}

/// Counts a written append in its topic's metrics (a duplicate wrote nothing).
fn count_appended(p: &Partition, outcome: &AppendOutcome) {
    if !outcome.duplicate {
        p.metrics
            .appended(outcome.info.records, outcome.info.bytes as u64);
    }
}

impl PendingProduce {
    /// Waits until the batches are durable (under `FlushPolicy::Always`; at once
    /// otherwise) and returns where they are.
    pub async fn durable(self) -> Result<AppendOutcome> {
        match self {
            PendingProduce::Ready(outcome) => Ok(outcome),
            PendingProduce::Waiting(task) => task.await.map_err(|e| CoreError::Internal {
                what: "appending",
                reason: e.to_string(),
            })?,
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding one of these locks cannot leave the guarded data half
    // updated (every update is a single assignment), so poisoning is ignored.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Broker {
    /// Opens the broker on `config.data_dir`: takes the directory lock first (so a
    /// second broker fails at once with [`CoreError::DataDirLocked`]), loads the topic
    /// registry, finishes interrupted deletions, opens every partition log (recovering
    /// its tail) and starts the background flusher and retention threads.
    pub async fn open(config: BrokerConfig) -> Result<Broker> {
        let runtime = tokio::runtime::Handle::current();
        run_blocking("opening the broker", move || {
            Broker::open_blocking(config, &runtime)
        })
        .await
    }

    fn open_blocking(config: BrokerConfig, runtime: &tokio::runtime::Handle) -> Result<Broker> {
        let dir = config.data_dir.clone();
        let dir_lock = DirLock::acquire(&dir).map_err(|e| match e {
            LogError::Locked { .. } => CoreError::DataDirLocked { dir: dir.clone() },
            other => CoreError::DataDir {
                dir: dir.clone(),
                source: other,
            },
        })?;
        let registry = TopicRegistry::load(&dir)?;
        let topics_dir = dir.join(TOPICS_DIR);
        fs::create_dir_all(&topics_dir).ctx("create", &topics_dir)?;
        clean_topics_dir(&topics_dir, &registry)?;

        let producer_ids = ProducerIdAllocator::open(&dir)?;
        let records: Vec<TopicRecord> = registry.topics().cloned().collect();
        let shared = Shared {
            data_dir: dir.clone(),
            flush: config.flush,
            defaults: config.topic_defaults.clone(),
            topics: RwLock::new(BTreeMap::new()),
            registry: Mutex::new(registry),
            producer_ids: Mutex::new(producer_ids),
            producer_snapshot_every: config.producer_snapshot_interval_bytes,
            producer_id_expiration_ms: i64::try_from(config.producer_id_expiration.as_millis())
                .unwrap_or(i64::MAX),
            closed: AtomicBool::new(false),
            tracer: OnceLock::new(),
        };
        let mut opened = BTreeMap::new();
        for record in &records {
            let state = shared.open_topic(record)?;
            opened.insert(record.name.to_string(), Arc::new(state));
        }
        let partitions: usize = opened.values().map(|t| t.partitions.len()).sum();
        info!(
            data_dir = %dir.display(),
            topics = opened.len(),
            partitions,
            flush = %config.flush,
            "broker opened"
        );
        *shared
            .topics
            .write()
            .unwrap_or_else(PoisonError::into_inner) = opened;
        let groups = GroupCoordinator::open_blocking(&dir, config.groups, runtime)?;
        let shared = Arc::new(shared);
        let background = start_background(&shared, &config)?;
        Ok(Broker {
            shared,
            background: Mutex::new(Some(background)),
            lock: Mutex::new(Some(dir_lock)),
            groups,
            gate: RwLock::new(None),
        })
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.shared.data_dir
    }

    /// The consumer-group coordinator (groups and committed offsets).
    pub fn groups(&self) -> &GroupCoordinator {
        &self.groups
    }

    /// Turns on the spans of traced messages (see [`crate::otel`]). Once: a second
    /// tracer is ignored.
    pub fn set_tracer(&self, tracer: Arc<MessageTracer>) {
        let _ = self.shared.tracer.set(tracer);
    }

    /// The tracer of traced messages, when tracing is on.
    pub fn tracer(&self) -> Option<&Arc<MessageTracer>> {
        self.shared.tracer.get()
    }

    /// Installs the back-pressure check every produce passes (the queue subscriptions).
    pub fn set_produce_gate(&self, gate: Weak<dyn ProduceGate>) {
        *self.gate.write().unwrap_or_else(PoisonError::into_inner) = Some(gate);
    }

    /// Asks the produce gate whether `topic` takes messages now: `Ok`, or
    /// [`CoreError::BacklogFull`] (refuse), or, after holding the producer up to
    /// `max_wait` for a backlog to drain, how long it was held: a producer held that
    /// long is then let through, and should be told to slow down by that much.
    pub async fn admit(&self, topic: &str, max_wait: Duration) -> Result<Duration> {
        let gate = self
            .gate
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .and_then(Weak::upgrade);
        let Some(gate) = gate else {
            return Ok(Duration::ZERO);
        };
        let start = tokio::time::Instant::now();
        let mut waited = false;
        let held = loop {
            let drained = gate.drained();
            tokio::pin!(drained);
            drained.as_mut().enable();
            match gate.admit(topic) {
                Ok(()) => break start.elapsed(),
                Err(CoreError::Throttled { .. }) if start.elapsed() >= max_wait => {
                    break start.elapsed();
                }
                Err(CoreError::Throttled { .. }) => {
                    waited = true;
                    let _ = tokio::time::timeout_at(start + max_wait, drained).await;
                }
                Err(e) => {
                    if let Ok(t) = self.shared.topic(topic) {
                        t.metrics.rejected(&e);
                    }
                    return Err(e);
                }
            }
        };
        if waited {
            if let Ok(t) = self.shared.topic(topic) {
                t.metrics.throttled(held.as_secs_f64());
            }
        }
        Ok(held)
    }

    /// The produce gate's answer for `topic` without waiting: `Ok`,
    /// [`CoreError::Throttled`] or [`CoreError::BacklogFull`].
    pub fn admit_now(&self, topic: &str) -> Result<()> {
        let gate = self
            .gate
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .and_then(Weak::upgrade);
        let admitted = gate.map_or(Ok(()), |g| g.admit(topic));
        if let Err(e) = &admitted {
            if let Ok(t) = self.shared.topic(topic) {
                t.metrics.rejected(e);
            }
        }
        admitted
    }

    /// The metric handles of `topic` (see [`crate::metrics`]), for a front-end to
    /// count what it hands out (fetches, pulls); `None` for an unknown topic.
    pub fn topic_metrics(&self, topic: &str) -> Option<Arc<TopicMetrics>> {
        self.shared
            .topic(topic)
            .ok()
            .map(|t| Arc::clone(&t.metrics))
    }

    /// Bytes a partition's log holds from the batch holding `offset` on (placed by the
    /// sparse index: it may count up to 4 KiB before it).
    pub fn partition_bytes_from(&self, topic: &str, partition: u32, offset: u64) -> Result<u64> {
        Ok(self
            .shared
            .partition(topic, partition)?
            .log
            .bytes_from(offset))
    }

    /// The flush policy every partition uses.
    pub fn flush_policy(&self) -> FlushPolicy {
        self.shared.flush
    }

    /// The settings a topic gets for every key it does not override.
    pub fn topic_defaults(&self) -> &TopicConfig {
        &self.shared.defaults
    }

    fn check_open(&self) -> Result<()> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(CoreError::ShuttingDown);
        }
        Ok(())
    }

    /// Creates a topic: validates its name, partition count and settings, persists it in
    /// the registry with a fresh topic id, and opens its (empty) partition logs.
    pub async fn create_topic(&self, new: NewTopic) -> Result<TopicDescription> {
        self.check_open()?;
        let shared = Arc::clone(&self.shared);
        run_blocking("creating a topic", move || shared.create_topic(new)).await
    }

    /// Deletes a topic: removes it from the registry (persisted) first, then closes its
    /// logs and deletes its data. Returns what the topic was.
    pub async fn delete_topic(&self, name: &str) -> Result<TopicDescription> {
        self.check_open()?;
        let shared = Arc::clone(&self.shared);
        let name = name.to_string();
        run_blocking("deleting a topic", move || shared.delete_topic(&name)).await
    }

    /// Changes a topic's settings (all of `ops` or none), persists them, and applies
    /// them to its open logs.
    pub async fn alter_topic_config(
        &self,
        name: &str,
        ops: Vec<ConfigOp>,
    ) -> Result<TopicDescription> {
        self.check_open()?;
        let shared = Arc::clone(&self.shared);
        let name = name.to_string();
        run_blocking("altering a topic's config", move || {
            shared.alter_topic_config(&name, &ops)
        })
        .await
    }

    /// Raises a topic's partition count to `count` (Kafka `CreatePartitions`); the count
    /// can never shrink.
    pub async fn create_partitions(&self, name: &str, count: u32) -> Result<TopicDescription> {
        self.check_open()?;
        let shared = Arc::clone(&self.shared);
        let name = name.to_string();
        run_blocking("adding partitions", move || {
            shared.create_partitions(&name, count)
        })
        .await
    }

    /// All topics, ordered by name.
    pub fn list_topics(&self) -> Vec<TopicDescription> {
        self.shared
            .read_topics()
            .values()
            .map(|t| t.desc.clone())
            .collect()
    }

    /// One topic.
    pub fn describe_topic(&self, name: &str) -> Result<TopicDescription> {
        Ok(self.shared.topic(name)?.desc.clone())
    }

    /// Appends one or more concatenated RecordBatch v2 batches to a partition: as
    /// [`Broker::produce`], returning only where the batches are.
    pub async fn append(
        &self,
        topic: &str,
        partition: u32,
        batches: Vec<u8>,
    ) -> Result<AppendInfo> {
        Ok(self.produce(topic, partition, batches).await?.info)
    }

    /// Appends one or more concatenated RecordBatch v2 batches to a partition. The log
    /// assigns offsets; under `FlushPolicy::Always` this returns only once the batches
    /// are on disk. Waiters on the partition's high watermark are woken.
    ///
    /// Batches of idempotent producers (producer id >= 0) are checked against the
    /// partition's producer state first, all of them before any is stored:
    /// a retry of one of the producer's last 5 batches is answered with the offsets it
    /// was stored at and `duplicate: true`, and not stored again (once the original is
    /// durable); a gap fails with [`CoreError::OutOfOrderSequence`], an older epoch with
    /// [`CoreError::InvalidProducerEpoch`], a transactional batch with
    /// [`CoreError::TransactionalBatch`], and then nothing is stored.
    pub async fn produce(
        &self,
        topic: &str,
        partition: u32,
        batches: Vec<u8>,
    ) -> Result<AppendOutcome> {
        self.produce_start(topic, partition, batches)
            .await?
            .durable()
            .await
    }

    /// [`Broker::produce`] in two steps: this returns once the batches are written and
    /// have their offsets (or were refused), and [`PendingProduce::durable`] once they
    /// are on disk. A caller that must keep requests in order (a Kafka connection) can
    /// start the next produce in between, so that consecutive requests share a sync.
    /// The sync and the high-watermark update go ahead even if `durable` is never
    /// awaited (a client that disconnects).
    pub async fn produce_start(
        &self,
        topic: &str,
        partition: u32,
        batches: Vec<u8>,
    ) -> Result<PendingProduce> {
        self.check_open()?;
        let p = self.shared.partition(topic, partition)?;
        produce_on(p, batches, self.shared.tracer.get().cloned()).await
    }

    /// Publishes single messages (the HTTP publish API): picks each message's partition
    /// (its explicit `partition`; else Kafka's murmur2 partitioner on its key, so Kafka
    /// producers put a key on the same partition; else murmur2 of its idempotency key,
    /// so a retry lands where the first attempt did; else round robin over the topic),
    /// encodes each partition's messages as one uncompressed record batch (more if they
    /// exceed `max.message.bytes`) stamped with the current time, and appends the
    /// partitions concurrently, one durable append each. Answers where every message
    /// is, in request order.
    ///
    /// `delay_ms`, `ttl_ms` and `idempotency_key` are stored as the
    /// [`crate::headers`] record headers. A message whose idempotency key was stored on
    /// its partition within the topic's `dedup.window.ms` (by an earlier call, or
    /// earlier in this one, or by a call racing this one) is not stored again: it is
    /// answered with the original's offset and `duplicate: true`. This holds across
    /// restarts: the keys are recovered from the log (see the `dedup` module).
    ///
    /// Everything is validated first ([`CoreError::InvalidPublish`],
    /// [`CoreError::MessageTooLarge`]; nothing is stored then). If an append fails,
    /// other partitions of the request may have been stored; with idempotency keys a
    /// retry is safe.
    pub async fn publish(&self, topic: &str, messages: Vec<Publish>) -> Result<Vec<Published>> {
        self.check_open()?;
        let state = self.shared.topic(topic)?;
        let partitions = state.desc.partitions;
        publish::validate(topic, partitions, &messages)?;
        // Back-pressure: a subscription over its backlog limit turns the request away
        // (`Throttled`: retry later; `BacklogFull`: refused) before anything is stored.
        self.admit_now(topic)?;
        let start = state
            .round_robin
            .fetch_add(publish::unkeyed(&messages), Ordering::Relaxed);
        let targets = publish::assign_partitions(&messages, partitions, start);
        let max_batch = state.desc.config.max_message_bytes();
        // Before anything is appended, so that a message too large fails the request
        // with nothing stored.
        publish::check_sizes(&messages, max_batch)?;
        let total = messages.len();
        let mut groups: BTreeMap<u32, Vec<(usize, Publish)>> = BTreeMap::new();
        for (i, (m, p)) in messages.into_iter().zip(targets).enumerate() {
            groups.entry(p).or_default().push((i, m));
        }
        let window_ms = state.desc.config.dedup_window_ms();
        // Each partition in its own task: they append concurrently, and an append and
        // its dedup bookkeeping finish even if the caller goes away.
        let mut tasks = Vec::with_capacity(groups.len());
        for (index, msgs) in groups {
            let p = usize::try_from(index)
                .ok()
                .and_then(|i| state.partitions.get(i))
                .cloned()
                .ok_or_else(|| CoreError::UnknownPartition {
                    topic: topic.into(),
                    partition: index,
                    partitions,
                })?;
            tasks.push(tokio::spawn(publish_partition(
                p,
                msgs,
                window_ms,
                max_batch,
                self.shared.tracer.get().cloned(),
            )));
        }
        let mut out: Vec<Option<Published>> = vec![None; total];
        let mut first_err = None;
        for task in tasks {
            let result = task.await.map_err(|e| CoreError::Internal {
                what: "publishing",
                reason: e.to_string(),
            });
            match result.and_then(|r| r) {
                Ok(done) => {
                    for (i, published) in done {
                        if let Some(slot) = out.get_mut(i) {
                            *slot = Some(published);
                        }
                    }
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_err {
            return Err(e);
        }
        out.into_iter()
            .enumerate()
            .map(|(i, p)| {
                p.ok_or_else(|| CoreError::Internal {
                    what: "publishing",
                    reason: format!("message {i} got no answer"),
                })
            })
            .collect()
    }

    /// Kafka `InitProducerId` for an idempotent producer. `producer_id` and
    /// `producer_epoch` are what the producer holds, -1 for none (as on the wire).
    ///
    /// - No id (or one this data directory never handed out): a fresh id, epoch 0. Ids
    ///   are never handed out twice, not even across restarts.
    /// - An id with an epoch below [`MAX_BUMPED_EPOCH`] (KIP-360 epoch bump): the same
    ///   id with epoch + 1. Partitions then fence the old epoch once the new one appends
    ///   there, and the new epoch starts at sequence 0.
    /// - At the epoch limit: a fresh id, epoch 0.
    ///
    /// A transactional id fails with [`CoreError::TransactionsUnsupported`].
    pub async fn init_producer_id(
        &self,
        transactional_id: Option<&str>,
        producer_id: i64,
        producer_epoch: i16,
    ) -> Result<ProducerIdAndEpoch> {
        self.check_open()?;
        if let Some(t) = transactional_id {
            return Err(CoreError::TransactionsUnsupported {
                transactional_id: t.to_string(),
            });
        }
        let shared = Arc::clone(&self.shared);
        run_blocking("allocating a producer id", move || {
            let mut ids = lock(&shared.producer_ids);
            if (0..MAX_BUMPED_EPOCH).contains(&producer_epoch)
                && ids.may_have_allocated(producer_id)
            {
                return Ok(ProducerIdAndEpoch {
                    producer_id,
                    producer_epoch: producer_epoch + 1,
                });
            }
            let id = ids.allocate()?;
            debug!(producer_id = id, "producer id allocated");
            Ok(ProducerIdAndEpoch {
                producer_id: id,
                producer_epoch: 0,
            })
        })
        .await
    }

    /// What a partition knows about an idempotent producer: its epoch and the offsets
    /// of its last batches (`None` if nothing). For introspection and tests.
    pub fn producer_state(
        &self,
        topic: &str,
        partition: u32,
        producer_id: i64,
    ) -> Result<Option<ProducerEntry>> {
        Ok(self
            .shared
            .partition(topic, partition)?
            .producers
            .entry(producer_id))
    }

    /// Reads whole stored batches from the one holding `offset`, up to about
    /// `max_bytes` (at least one batch when any is readable), never past the high
    /// watermark.
    pub async fn read(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        max_bytes: usize,
    ) -> Result<ReadResult> {
        self.check_open()?;
        let p = self.shared.partition(topic, partition)?;
        let plan = p.log.plan_read(offset, max_bytes).map_err(|e| p.err(e))?;
        if plan.is_hot() {
            // The last few MiB just written: in the page cache, read in microseconds, so
            // a consumer keeping up is not handed to another thread and back.
            return plan.execute().map_err(|e| p.err(e));
        }
        run_blocking("reading", move || plan.execute().map_err(|e| p.err(e))).await
    }

    /// Moves the partition's log start offset up to `offset` (Kafka `DeleteRecords`),
    /// deleting the segments wholly below it, and returns the new log start offset.
    /// `offset` may not pass the high watermark: only committed data can be deleted.
    pub async fn delete_records(&self, topic: &str, partition: u32, offset: u64) -> Result<u64> {
        self.check_open()?;
        let p = self.shared.partition(topic, partition)?;
        run_blocking("deleting records", move || {
            let hw = p.log.high_watermark();
            if offset > hw {
                return Err(p.err(LogError::OffsetOutOfRange {
                    offset,
                    log_start: p.log.log_start_offset(),
                    log_end: hw,
                }));
            }
            p.log.purge_prefix(offset).map_err(|e| p.err(e))?;
            Ok(p.log.log_start_offset())
        })
        .await
    }

    /// The first offset whose batch's max timestamp is at or after `timestamp_ms`
    /// (Kafka `ListOffsets` by time); `None` if there is none.
    pub async fn offset_for_timestamp(
        &self,
        topic: &str,
        partition: u32,
        timestamp_ms: i64,
    ) -> Result<Option<u64>> {
        self.check_open()?;
        let p = self.shared.partition(topic, partition)?;
        run_blocking("looking up an offset by time", move || {
            p.log
                .offset_for_timestamp(timestamp_ms)
                .map_err(|e| p.err(e))
        })
        .await
    }

    /// Log start, log end and high watermark of a partition.
    pub fn offsets(&self, topic: &str, partition: u32) -> Result<PartitionOffsets> {
        let p = self.shared.partition(topic, partition)?;
        let (log_start_offset, log_end_offset, high_watermark) = p.log.bounds();
        Ok(PartitionOffsets {
            log_start_offset,
            log_end_offset,
            high_watermark,
        })
    }

    /// A receiver of the partition's high watermark, updated after every append (and
    /// every interval flush). `changed()` fails once the partition is gone (topic
    /// deleted, broker shut down).
    pub fn watch_high_watermark(
        &self,
        topic: &str,
        partition: u32,
    ) -> Result<watch::Receiver<u64>> {
        Ok(self.shared.partition(topic, partition)?.hw.subscribe())
    }

    /// Appends and fdatasync rounds of a partition's log since it was opened: how well
    /// group commit shares syncs (appends per sync).
    pub fn log_stats(&self, topic: &str, partition: u32) -> Result<LogStats> {
        Ok(self.shared.partition(topic, partition)?.log.stats())
    }

    /// Waits until the partition's high watermark is above `offset` or `timeout` passes,
    /// and returns the high watermark then. This is what a long-poll fetch waits on.
    pub async fn wait_for_high_watermark(
        &self,
        topic: &str,
        partition: u32,
        offset: u64,
        timeout: Duration,
    ) -> Result<u64> {
        let mut rx = self.watch_high_watermark(topic, partition)?;
        let waited = tokio::time::timeout(timeout, async {
            rx.wait_for(|hw| *hw > offset).await.map(|hw| *hw)
        })
        .await;
        match waited {
            Ok(Ok(hw)) => Ok(hw),
            Err(_elapsed) => Ok(*rx.borrow()),
            Ok(Err(_closed)) => {
                self.check_open()?;
                Err(CoreError::UnknownTopic { name: topic.into() })
            }
        }
    }

    /// Stops background work, then closes every log (which syncs it and marks it clean)
    /// and releases the data directory. Further calls do nothing; other methods then fail
    /// with [`CoreError::ShuttingDown`]. Returns the first error met, after trying every
    /// log.
    pub async fn shutdown(&self) -> Result<()> {
        if self.shared.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.groups.shutdown().await;
        let background = lock(&self.background).take();
        let dir_lock = lock(&self.lock).take();
        let shared = Arc::clone(&self.shared);
        run_blocking("shutting down", move || {
            if let Some(bg) = background {
                bg.stop_and_join();
            }
            // Wait for an admin operation in flight, and keep new ones out (they check
            // `closed` under this lock).
            let _registry = lock(&shared.registry);
            let topics = std::mem::take(
                &mut *shared
                    .topics
                    .write()
                    .unwrap_or_else(PoisonError::into_inner),
            );
            let mut first_err = None;
            for p in topics.values().flat_map(|t| t.partitions.iter()) {
                if let Err(e) = p.log.close() {
                    let e = p.err(e);
                    error!(error = %e, "closing a partition log failed");
                    first_err.get_or_insert(e);
                    continue;
                }
                // After the close no append can move the state past this snapshot, so
                // the next open replays nothing.
                p.snapshot_producers(true);
            }
            // Dropping the partitions closes their watches, which wakes waiters.
            drop(topics);
            drop(dir_lock);
            info!("broker shut down");
            first_err.map_or(Ok(()), Err)
        })
        .await
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        // Without `shutdown` the logs are not closed cleanly (recovery checks them on the
        // next open), but background threads must not outlive the broker: they are joined
        // here, before the directory lock (a later field) is released, so a broker opened
        // next on this directory never races a retention pass or a producer snapshot of
        // this one. They wake on the stop signal at once.
        if let Some(bg) = lock(&self.background).take() {
            bg.stop_and_join();
        }
    }
}

impl Shared {
    fn read_topics(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Arc<TopicState>>> {
        self.topics.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write_topics(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Arc<TopicState>>> {
        self.topics.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn topic(&self, name: &str) -> Result<Arc<TopicState>> {
        self.read_topics()
            .get(name)
            .cloned()
            .ok_or_else(|| CoreError::UnknownTopic { name: name.into() })
    }

    fn partition(&self, topic: &str, partition: u32) -> Result<Arc<Partition>> {
        let state = self.topic(topic)?;
        let found = usize::try_from(partition)
            .ok()
            .and_then(|i| state.partitions.get(i));
        found.cloned().ok_or_else(|| CoreError::UnknownPartition {
            topic: topic.into(),
            partition,
            partitions: state.desc.partitions,
        })
    }

    fn all_partitions(&self) -> Vec<Arc<Partition>> {
        self.read_topics()
            .values()
            .flat_map(|t| t.partitions.iter().cloned())
            .collect()
    }

    fn topic_dir(&self, name: &str) -> PathBuf {
        self.data_dir.join(TOPICS_DIR).join(name)
    }

    fn describe(&self, record: &TopicRecord) -> Result<TopicDescription> {
        Ok(TopicDescription {
            name: record.name.clone(),
            id: record.id,
            partitions: record.partitions,
            config: self.defaults.with_overrides(&record.configs)?,
            overrides: record.configs.clone(),
        })
    }

    fn open_partition(
        &self,
        desc: &TopicDescription,
        index: u32,
        metrics: &Arc<TopicMetrics>,
    ) -> Result<Arc<Partition>> {
        let dir = self.topic_dir(desc.name.as_str()).join(index.to_string());
        let log = SharedLog::open(&dir, desc.config.log_config(self.flush)).map_err(|source| {
            CoreError::Log {
                topic: desc.name.to_string(),
                partition: index,
                source,
            }
        })?;
        let report = log.recovery_report();
        if !report.clean && !report.created {
            warn!(
                topic = %desc.name, partition = index,
                truncated_bytes = report.truncated_bytes,
                indexes_rebuilt = report.indexes_rebuilt,
                "partition log was not closed cleanly and has been recovered"
            );
        }
        let producers = PartitionProducers::open(
            &log,
            desc.name.as_str(),
            index,
            self.producer_snapshot_every,
            now_ms(),
        )?;
        let (hw, _) = watch::channel(log.high_watermark());
        Ok(Arc::new(Partition {
            topic: desc.name.clone(),
            index,
            log,
            producers,
            hw,
            dedup: Dedup::default(),
            metrics: Arc::clone(metrics),
        }))
    }

    fn open_topic(&self, record: &TopicRecord) -> Result<TopicState> {
        let desc = self.describe(record)?;
        let metrics = Arc::new(TopicMetrics::new(desc.name.as_str()));
        let partitions = (0..record.partitions)
            .map(|i| self.open_partition(&desc, i, &metrics))
            .collect::<Result<Vec<_>>>()?;
        Ok(TopicState {
            desc,
            partitions,
            round_robin: Arc::default(),
            metrics,
        })
    }

    /// Locks the registry for an admin operation, refusing once shutdown has begun.
    fn admin(&self) -> Result<std::sync::MutexGuard<'_, TopicRegistry>> {
        let guard = lock(&self.registry);
        if self.closed.load(Ordering::Acquire) {
            return Err(CoreError::ShuttingDown);
        }
        Ok(guard)
    }

    fn create_topic(&self, new: NewTopic) -> Result<TopicDescription> {
        let mut registry = self.admin()?;
        // Validate the effective settings before anything is persisted.
        TopicName::new(new.name.clone())?;
        self.defaults.with_overrides(&new.configs)?;
        if registry.get(&new.name).is_some() {
            return Err(CoreError::TopicExists { name: new.name });
        }
        // A folder left by a delete that could not finish must not leak old data into
        // the new topic.
        discard_dir(&self.topic_dir(&new.name), &self.graveyard(&new.name))?;
        let record = registry.create(&new)?;
        match self.open_topic(&record) {
            Ok(state) => {
                let desc = state.desc.clone();
                self.write_topics()
                    .insert(record.name.to_string(), Arc::new(state));
                info!(topic = %desc.name, id = %desc.id, partitions = desc.partitions, "topic created");
                Ok(desc)
            }
            Err(e) => {
                // Undo: the registry must not name a topic whose logs do not open.
                if let Err(undo) = registry.delete(&new.name) {
                    error!(topic = %new.name, error = %undo, "could not roll back a failed topic creation");
                }
                if let Err(undo) =
                    discard_dir(&self.topic_dir(&new.name), &self.graveyard(&new.name))
                {
                    warn!(topic = %new.name, error = %undo, "could not remove a failed topic's folder; it is removed on next start");
                }
                Err(e)
            }
        }
    }

    fn graveyard(&self, name: &str) -> PathBuf {
        let id = uuid::Uuid::new_v4();
        self.data_dir
            .join(TOPICS_DIR)
            .join(format!("{name}~{id}{DELETED_SUFFIX}"))
    }

    fn delete_topic(&self, name: &str) -> Result<TopicDescription> {
        let mut registry = self.admin()?;
        let record = registry.delete(name)?;
        let desc = self.describe(&record)?;
        // The registry no longer names the topic: from here on a crash leaves an orphan
        // folder, which the next open removes.
        let state = self.write_topics().remove(name);
        if let Some(state) = state {
            for p in &state.partitions {
                if let Err(e) = p.log.close() {
                    warn!(topic = %name, partition = p.index, error = %e, "closing a deleted partition failed");
                }
            }
        }
        let graveyard = self.graveyard(name);
        if let Err(e) = discard_dir(&self.topic_dir(name), &graveyard) {
            warn!(topic = %name, error = %e, "could not remove a deleted topic's data now; it is removed on next start");
        }
        info!(topic = %name, id = %desc.id, "topic deleted");
        Ok(desc)
    }

    fn alter_topic_config(&self, name: &str, ops: &[ConfigOp]) -> Result<TopicDescription> {
        let mut registry = self.admin()?;
        let current = registry
            .get(name)
            .cloned()
            .ok_or_else(|| CoreError::UnknownTopic { name: name.into() })?;
        // Dry run first: the effective config must be valid before it is persisted.
        let mut probe = current.configs.clone();
        for op in ops {
            match op {
                ConfigOp::Set { key, value } => {
                    probe.insert(key.clone(), value.clone());
                }
                ConfigOp::Delete { key } => {
                    probe.remove(key);
                }
            }
        }
        self.defaults.with_overrides(&probe)?;
        let record = registry.alter_config(name, ops)?;
        let desc = self.describe(&record)?;
        let old = self.topic(name)?;
        let log_config = desc.config.log_config(self.flush);
        for p in &old.partitions {
            p.log.set_config(log_config.clone());
        }
        self.write_topics().insert(
            name.to_string(),
            Arc::new(TopicState {
                desc: desc.clone(),
                partitions: old.partitions.clone(),
                round_robin: Arc::clone(&old.round_robin),
                metrics: Arc::clone(&old.metrics),
            }),
        );
        info!(topic = %name, overrides = ?desc.overrides, "topic config altered");
        Ok(desc)
    }

    fn create_partitions(&self, name: &str, count: u32) -> Result<TopicDescription> {
        let mut registry = self.admin()?;
        let current = registry
            .get(name)
            .cloned()
            .ok_or_else(|| CoreError::UnknownTopic { name: name.into() })?;
        if count <= current.partitions || count > crate::topic::MAX_PARTITIONS {
            // Let the registry produce the precise error without changing anything.
            return registry
                .set_partitions(name, count)
                .and_then(|r| self.describe(&r));
        }
        let old = self.topic(name)?;
        let mut next = current.clone();
        next.partitions = count;
        let desc = self.describe(&next)?;
        let mut added = Vec::new();
        let undo = |added: &[Arc<Partition>]| {
            for p in added {
                // Never registered, so nothing in them was ever acknowledged as durable
                // under a registered partition: safe to throw away.
                let _ = p.log.close();
                let dir = self.topic_dir(name).join(p.index.to_string());
                if let Err(e) = fs::remove_dir_all(&dir) {
                    warn!(topic = %name, partition = p.index, error = %e, "could not remove an unregistered partition folder; it is removed on next start");
                }
            }
        };
        for index in current.partitions..count {
            let dir = self.topic_dir(name).join(index.to_string());
            // Left by an earlier attempt that crashed before persisting the new count.
            if let Err(e) = remove_dir_if_exists(&dir) {
                undo(&added);
                return Err(e);
            }
            match self.open_partition(&desc, index, &old.metrics) {
                Ok(p) => added.push(p),
                Err(e) => {
                    undo(&added);
                    return Err(e);
                }
            }
        }
        if let Err(e) = registry.set_partitions(name, count) {
            undo(&added);
            return Err(e);
        }
        let mut partitions = old.partitions.clone();
        partitions.extend(added);
        self.write_topics().insert(
            name.to_string(),
            Arc::new(TopicState {
                desc: desc.clone(),
                partitions,
                round_robin: Arc::clone(&old.round_robin),
                metrics: Arc::clone(&old.metrics),
            }),
        );
        info!(topic = %name, from = current.partitions, to = count, "partitions added");
        Ok(desc)
    }

    /// Makes every partition durable; run by the interval flusher.
    fn sync_all(&self) {
        for p in self.all_partitions() {
            match p.log.sync() {
                Ok(()) => p.publish_high_watermark(),
                // Deleted between the snapshot and the sync.
                Err(LogError::Closed { .. }) => {
                    debug!(topic = %p.topic, partition = p.index, "skipped sync of a closed log")
                }
                Err(e) => {
                    error!(topic = %p.topic, partition = p.index, error = %e, "interval flush failed")
                }
            }
        }
    }

    fn apply_retention(&self) {
        let now = now_ms();
        let cutoff = now.saturating_sub(self.producer_id_expiration_ms);
        for p in self.all_partitions() {
            let expired = p.producers.expire(cutoff);
            if expired > 0 {
                debug!(topic = %p.topic, partition = p.index, expired, "producer ids expired");
            }
            match p.log.apply_retention(now) {
                Ok(r) if r.segments_deleted > 0 => info!(
                    topic = %p.topic, partition = p.index,
                    segments = r.segments_deleted, bytes = r.bytes_deleted,
                    log_start_offset = r.log_start_offset,
                    "retention deleted old segments"
                ),
                Ok(_) | Err(LogError::Closed { .. }) => {}
                Err(e) => {
                    error!(topic = %p.topic, partition = p.index, error = %e, "retention failed")
                }
            }
        }
    }
}

fn start_background(shared: &Arc<Shared>, config: &BrokerConfig) -> Result<Background> {
    let stop = Arc::new(StopSignal::default());
    let mut threads = Vec::new();
    let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
        std::thread::Builder::new()
            .name(name.into())
            .spawn(f)
            .map_err(|e| CoreError::Internal {
                what: "starting a background thread",
                reason: e.to_string(),
            })
    };
    if let FlushPolicy::Interval(every) = config.flush {
        // One thread for all partitions: with fsyncs of many logs in a row, the disk is
        // the bottleneck, not the thread.
        let (shared, stop) = (Arc::clone(shared), Arc::clone(&stop));
        threads.push(spawn(
            "wharf-flusher",
            Box::new(move || {
                while !stop.wait(every) {
                    shared.sync_all();
                }
            }),
        )?);
    }
    let every = config.retention_check_interval;
    let (shared2, stop2) = (Arc::clone(shared), Arc::clone(&stop));
    let retention = spawn(
        "wharf-retention",
        Box::new(move || {
            while !stop2.wait(every) {
                shared2.apply_retention();
            }
        }),
    );
    match retention {
        Ok(t) => threads.push(t),
        Err(e) => {
            Background { stop, threads }.stop_and_join();
            return Err(e);
        }
    }
    Ok(Background { stop, threads })
}

fn remove_dir_if_exists(dir: &Path) -> Result<()> {
    match fs::remove_dir_all(dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e).ctx("remove", dir),
        _ => Ok(()),
    }
}

/// Deletes `dir` by first renaming it to `graveyard` (a `~…deleted` name), so that a
/// crash halfway through `remove_dir_all` leaves a folder the next open recognizes as
/// garbage, never a half-deleted topic under a live name.
fn discard_dir(dir: &Path, graveyard: &Path) -> Result<()> {
    match fs::rename(dir, graveyard) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).ctx("rename for deletion", dir),
    }
    if let Some(parent) = dir.parent() {
        sync_dir(parent)?;
    }
    fs::remove_dir_all(graveyard).ctx("remove", graveyard)
}

/// Finishes what a crash interrupted, before any log is opened:
/// - `<topic>~<id>.deleted` folders are removed;
/// - a topic folder the registry does not name is the remains of a deletion (the
///   registry is persisted first) and is removed;
/// - partition folders beyond a topic's count are the remains of an unfinished
///   `create_partitions` and are removed.
///
/// If `topics.json` does not exist at all but topic folders do, the registry was lost,
/// not a deletion interrupted: refuse to start rather than delete every topic.
fn clean_topics_dir(topics_dir: &Path, registry: &TopicRegistry) -> Result<()> {
    let mut removed = false;
    for entry in fs::read_dir(topics_dir).ctx("list", topics_dir)? {
        let entry = entry.ctx("list", topics_dir)?;
        let path = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            warn!(path = %path.display(), "ignoring a file with a non UTF-8 name in the topics folder");
            continue;
        };
        if name.contains('~') && name.ends_with(DELETED_SUFFIX) {
            info!(path = %path.display(), "removing the remains of a deleted topic");
            fs::remove_dir_all(&path).ctx("remove", &path)?;
            removed = true;
            continue;
        }
        if TopicName::new(name.clone()).is_err() || !path.is_dir() {
            warn!(path = %path.display(), "ignoring an unexpected entry in the topics folder");
            continue;
        }
        match registry.get(&name) {
            Some(record) => {
                removed |= clean_partition_dirs(&path, record)?;
            }
            None if !registry.existed() => {
                return Err(CoreError::CorruptRegistry {
                    path: registry.path(),
                    reason: format!(
                        "the file is missing but topic data exists in {}; restore {} or remove the topic folders to start empty",
                        topics_dir.display(),
                        registry.path().display()
                    ),
                });
            }
            None => {
                warn!(topic = %name, "removing a topic folder the registry does not name (an interrupted delete)");
                let graveyard =
                    topics_dir.join(format!("{name}~{}{DELETED_SUFFIX}", uuid::Uuid::new_v4()));
                discard_dir(&path, &graveyard)?;
            }
        }
    }
    if removed {
        sync_dir(topics_dir)?;
    }
    Ok(())
}

fn clean_partition_dirs(topic_dir: &Path, record: &TopicRecord) -> Result<bool> {
    let mut removed = false;
    for entry in fs::read_dir(topic_dir).ctx("list", topic_dir)? {
        let entry = entry.ctx("list", topic_dir)?;
        let index = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok());
        if let Some(index) = index {
            if index >= record.partitions {
                let path = entry.path();
                warn!(topic = %record.name, partition = index, "removing a partition folder beyond the topic's partition count (an interrupted partition increase)");
                fs::remove_dir_all(&path).ctx("remove", &path)?;
                removed = true;
            }
        }
    }
    if removed {
        sync_dir(topic_dir)?;
    }
    Ok(removed)
}
