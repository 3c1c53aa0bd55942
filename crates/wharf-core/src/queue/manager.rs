//! [`Queues`]: every subscription of every topic, driven over the broker's logs.
//!
//! A pull goes: end expired leases and lease what is available ([`SubState::select`]);
//! if that is not enough, read the partitions past their read position (one reader per
//! subscription at a time), add what was read to the window, and select again; then
//! read the records of redelivered messages back from the log, and answer. With nothing
//! to hand out it waits, up to `wait_ms`, for a new high watermark on any partition, a
//! nack, ack or expiry in the subscription ([`Sub::changed`]), or the time the next
//! delayed or backed-off message comes due.
//!
//! Every state change is queued to the subscriptions journal under the subscription's
//! lock, so the journal holds them in the order they happened. Acks, nacks, seeks,
//! redrives and settings wait for their record to be durable before answering; a
//! delivery's count is journaled without waiting (a crash can lose the count of a
//! delivery, never a message).
//!
//! Dead letters: a message out of deliveries (or past its time to live) is appended to
//! the subscription's dead-letter topic, with headers naming where it came from and why,
//! and only then counts as done. A crash in between delivers the dead letter twice,
//! never loses it.
//!
//! Observers ([`crate::observe`]): what happens to single messages is reported to the
//! registered [`QueueObserver`]s after the subscription's lock is let go. The state
//! lists what it decided ([`SubState::events`], only while somebody observes); the
//! manager adds what only it knows (deliveries with their records, dead letters with
//! their place in the dead-letter topic, redrives with the dead letter they came from).
//! With no observer registered nothing is listed or built. Every event's time is read
//! under the subscription's lock, so the events of one message are stamped in the order
//! they happened (a delivery's time is that of its lease).
//!
//! Lock order: the subscription map, then one subscription's state; neither is held
//! across an `.await`. The observer list is read-locked only to call the observers.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::{oneshot, Notify};
use tracing::{info, warn};
use uuid::Uuid;
use wharf_log::batch::{Record, RecordBatchBuilder};
use wharf_log::LogError;

use super::durable::{self, DurableSubscriptions, Op};
use super::settings::{
    validate_subscription_name, BacklogPolicy, StartPosition, SubscriptionSettings,
};
use super::state::{AckId, DeadLetter, Delivery, Happened, Outcome, ReadRecord, SubState};
use crate::broker::{Broker, ProduceGate};
use crate::error::{CoreError, Result};
use crate::headers;
use crate::journal::JournalError;
use crate::observe::{QueueEvent, QueueEventKind, QueueObserver};
use crate::records::{self, Message};
use crate::topic::{NewTopic, TopicDescription, TopicName};

/// Headers a dead letter carries, besides the original message's own.
pub mod dead_letter_headers {
    pub const TOPIC: &str = "wharf-dlq-topic";
    pub const PARTITION: &str = "wharf-dlq-partition";
    pub const OFFSET: &str = "wharf-dlq-offset";
    pub const SUBSCRIPTION: &str = "wharf-dlq-subscription";
    pub const DELIVERY_COUNT: &str = "wharf-dlq-delivery-count";
    /// Milliseconds since the epoch.
    pub const FIRST_FAILURE_MS: &str = "wharf-dlq-first-failure-ms";
    /// Milliseconds since the epoch.
    pub const LAST_FAILURE_MS: &str = "wharf-dlq-last-failure-ms";
    pub const REASON: &str = "wharf-dlq-reason";
}
use dead_letter_headers as dlh;

/// Most messages one pull hands out.
pub const MAX_PULL: usize = 1_000;
/// Longest a pull may wait for messages.
pub const MAX_WAIT: Duration = Duration::from_secs(60);
/// Bytes one read of a partition asks for.
const READ_BYTES: usize = 1 << 20;
/// How often leases are checked for expiry when no pull looks.
const TICK: Duration = Duration::from_millis(100);
/// How long a blocked Kafka produce waits for a backlog to drain before it is stored
/// anyway (with the wait reported as `throttle_time_ms`).
pub const MAX_BLOCK: Duration = Duration::from_secs(5);

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every update under these locks leaves the state consistent at each step that can
    // panic (none is expected), so a poisoned lock is still usable.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// FNV-1a: a stable hash of a message key, for ordered-by-key delivery.
fn key_hash(key: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

type JournalResult = std::result::Result<(), JournalError>;

fn unavailable(e: JournalError) -> CoreError {
    CoreError::QueueUnavailable { reason: e.reason }
}

/// Compaction threshold of the subscriptions journal.
const JOURNAL_COMPACT_BYTES: u64 = 64 << 20;
/// Delivery counts (journaled without anybody waiting) are synced with the next ack,
/// nack or seek, or this long after they were written: they cost no fdatasync of their
/// own, and a crash loses at most this much of them.
const LAZY_SYNC: Duration = Duration::from_millis(200);

fn open_journal(data_dir: &Path) -> Result<(DurableSubscriptions, durable::Journal)> {
    let recovered = durable::open(data_dir)?;
    let state = recovered.state.clone();
    let journal = durable::start(
        data_dir,
        recovered,
        JOURNAL_COMPACT_BYTES,
        None,
        Some(LAZY_SYNC),
    )?;
    Ok((state, journal))
}

/// The topic's `message.ttl.ms`, if set.
fn topic_ttl_ms(d: &TopicDescription) -> Option<i64> {
    d.config
        .message_ttl_ms()
        .and_then(|t| i64::try_from(t).ok())
}

/// One subscription.
pub struct Sub {
    pub topic: String,
    pub name: String,
    pub topic_id: Uuid,
    pub created_ms: i64,
    state: Mutex<SubState>,
    /// Redrive read positions in the dead-letter topic, per its partition.
    redrive: Mutex<BTreeMap<u32, u64>>,
    /// Woken when something may have become deliverable (nack, expiry, ack of a key's
    /// message, seek, redrive) or the subscription went away.
    changed: Notify,
    /// One log reader per subscription at a time.
    reading: tokio::sync::Mutex<()>,
    /// The partition the next read starts with.
    next_read: AtomicU32,
}

/// A message handed out by a pull.
#[derive(Debug, Clone)]
pub struct Pulled {
    pub ack_id: AckId,
    /// Stable across deliveries and subscriptions: `<topic id>-<partition>-<offset>`.
    pub message_id: String,
    pub delivery_count: u32,
    pub message: Message,
    pub partition: u32,
}

/// Live figures of a subscription.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubStats {
    /// Messages not acked yet (including those in flight).
    pub backlog: u64,
    pub in_flight: u64,
    pub delivered: u64,
    pub acked: u64,
    pub nacked: u64,
    pub dead_lettered: u64,
    pub redelivered: u64,
    /// Age of the oldest message not acked, if there is one.
    pub oldest_unacked_age_ms: Option<u64>,
}

/// A subscription as the API shows it.
#[derive(Debug, Clone)]
pub struct SubscriptionInfo {
    pub topic: String,
    pub name: String,
    pub settings: SubscriptionSettings,
    pub dead_letter_topic: String,
    pub created_ms: i64,
    pub stats: SubStats,
}

/// Where a seek goes.
#[derive(Debug, Clone, Copy)]
pub enum SeekTarget {
    Offset(u64),
    /// Milliseconds since the epoch: the first message at or after it.
    Time(i64),
}

struct Inner {
    broker: Arc<Broker>,
    journal: durable::Journal,
    subs: Mutex<BTreeMap<(String, String), Arc<Sub>>>,
    next_id: Mutex<u64>,
    /// Woken after acks, dead letters, seeks and deletions: a blocked producer looks
    /// at the backlog again.
    drained: Notify,
    stop: Notify,
    /// Set once the first observer is registered; read without a lock on every path.
    observed: AtomicBool,
    observers: RwLock<Vec<Arc<dyn QueueObserver>>>,
}

/// Every queue subscription. Cheap to clone.
#[derive(Clone)]
pub struct Queues {
    inner: Arc<Inner>,
}

impl Queues {
    /// Loads the subscriptions journal under the broker's data directory, rebuilds every
    /// subscription's state, starts the lease ticker, and registers itself as the
    /// broker's produce gate (back-pressure).
    pub async fn open(broker: Arc<Broker>) -> Result<Queues> {
        let dir = broker.data_dir().to_path_buf();
        let (recovered_state, journal) = tokio::task::spawn_blocking(move || open_journal(&dir))
            .await
            .map_err(|e| CoreError::Internal {
                what: "opening the subscriptions journal",
                reason: e.to_string(),
            })??;
        let mut subs = BTreeMap::new();
        for (id, d) in &recovered_state.subs {
            let settings: SubscriptionSettings = match serde_json::from_str(&d.settings) {
                Ok(s) => s,
                Err(e) => {
                    warn!(topic = %d.topic, subscription = %d.name, error = %e,
                        "unreadable subscription settings; using the defaults");
                    SubscriptionSettings::default()
                }
            };
            let state = SubState::new(
                *id,
                settings,
                d.partitions.iter().map(|(p, dp)| (*p, dp.clone())),
            );
            subs.insert(
                (d.topic.clone(), d.name.clone()),
                Arc::new(Sub {
                    topic: d.topic.clone(),
                    name: d.name.clone(),
                    topic_id: d.topic_id,
                    created_ms: d.created_ms,
                    state: Mutex::new(state),
                    redrive: Mutex::new(d.redrive_cursors.clone()),
                    changed: Notify::new(),
                    reading: tokio::sync::Mutex::new(()),
                    next_read: AtomicU32::new(0),
                }),
            );
        }
        info!(subscriptions = subs.len(), "queue subscriptions recovered");
        let queues = Queues {
            inner: Arc::new(Inner {
                broker: Arc::clone(&broker),
                journal,
                subs: Mutex::new(subs),
                next_id: Mutex::new(recovered_state.next_id),
                drained: Notify::new(),
                stop: Notify::new(),
                observed: AtomicBool::new(false),
                observers: RwLock::new(Vec::new()),
            }),
        };
        let weak = Arc::downgrade(&queues.inner);
        tokio::spawn(tick(weak));
        // Weak: the queues hold the broker, not the other way round.
        let gate: Weak<Inner> = Arc::downgrade(&queues.inner);
        broker.set_produce_gate(gate);
        Ok(queues)
    }

    /// Stops the ticker and closes the journal (everything acknowledged is durable
    /// already).
    pub async fn close(&self) {
        self.inner.stop.notify_waiters();
        let inner = Arc::clone(&self.inner);
        let _ = tokio::task::spawn_blocking(move || inner.journal.close()).await;
    }

    /// Registers an observer of queue events ([`crate::observe`]); it sees what happens
    /// from now on, in every subscription.
    pub fn add_observer(&self, observer: Arc<dyn QueueObserver>) {
        self.inner
            .observers
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .push(observer);
        let subs = lock(&self.inner.subs);
        self.inner.observed.store(true, Ordering::Release);
        for sub in subs.values() {
            lock(&sub.state).observe = true;
        }
    }

    fn observed(&self) -> bool {
        self.inner.observed.load(Ordering::Acquire)
    }

    /// Calls every observer with the events of one request. Never called with a
    /// subscription's lock held.
    fn emit(&self, events: &[QueueEvent<'_>]) {
        if events.is_empty() {
            return;
        }
        let observers = self
            .inner
            .observers
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        for o in observers.iter() {
            o.on_events(events);
        }
    }

    /// Reports what the state listed ([`SubState::events`]), at `now`; `reason` is the
    /// nack's. Redrives are reported by [`Queues::redrive`], which knows their origin.
    fn report(&self, sub: &Sub, events: &[Happened], now: i64, reason: &str) {
        if events.is_empty() {
            return;
        }
        let mut out = Vec::with_capacity(events.len());
        for h in events {
            let (partition, offset, kind) = match *h {
                Happened::Acked {
                    partition,
                    offset,
                    deliveries,
                } => (
                    partition,
                    offset,
                    QueueEventKind::Acked {
                        delivery_count: deliveries,
                    },
                ),
                Happened::Nacked {
                    partition,
                    offset,
                    deliveries,
                    retry_at_ms,
                } => (
                    partition,
                    offset,
                    QueueEventKind::Nacked {
                        delivery_count: deliveries,
                        reason,
                        redeliver_at_ms: retry_at_ms,
                    },
                ),
                Happened::LeaseExpired {
                    partition,
                    offset,
                    deliveries,
                } => (
                    partition,
                    offset,
                    QueueEventKind::LeaseExpired {
                        delivery_count: deliveries,
                    },
                ),
                Happened::Expired { partition, offset } => {
                    (partition, offset, QueueEventKind::Expired)
                }
                Happened::Reopened { .. } => continue,
            };
            out.push(QueueEvent {
                topic: &sub.topic,
                topic_id: sub.topic_id,
                subscription: &sub.name,
                partition,
                offset,
                time_ms: now,
                kind,
                message: None,
            });
        }
        self.emit(&out);
    }

    fn get(&self, topic: &str, name: &str) -> Result<Arc<Sub>> {
        let sub = lock(&self.inner.subs)
            .get(&(topic.to_string(), name.to_string()))
            .cloned();
        let Some(sub) = sub else {
            self.inner.broker.describe_topic(topic)?;
            return Err(CoreError::UnknownSubscription {
                topic: topic.into(),
                name: name.into(),
            });
        };
        // A subscription outlives nothing: once its topic is gone (or was re-created),
        // so is it.
        match self.inner.broker.describe_topic(topic) {
            Ok(d) if d.id == sub.topic_id => Ok(sub),
            Ok(_) | Err(CoreError::UnknownTopic { .. }) => {
                self.forget(&sub);
                Err(CoreError::UnknownSubscription {
                    topic: topic.into(),
                    name: name.into(),
                })
            }
            Err(e) => Err(e),
        }
    }

    fn forget(&self, sub: &Arc<Sub>) {
        let id = lock(&sub.state).id;
        let removed = {
            let mut subs = lock(&self.inner.subs);
            let key = (sub.topic.clone(), sub.name.clone());
            match subs.get(&key) {
                Some(s) if Arc::ptr_eq(s, sub) => subs.remove(&key).is_some(),
                _ => false,
            }
        };
        if removed {
            let _ = self.inner.journal.submit(vec![Op::Delete { id }], None);
            sub.changed.notify_waiters();
            self.inner.drained.notify_waiters();
        }
    }

    /// Queues the state's pending ops (under its lock, so in order) and starts its dead
    /// letters. With `wait`, returns the receiver of the journal's answer.
    fn flush(
        &self,
        sub: &Arc<Sub>,
        st: &mut SubState,
        wait: bool,
    ) -> Result<Option<oneshot::Receiver<JournalResult>>> {
        let ops = std::mem::take(&mut st.ops);
        let dead = std::mem::take(&mut st.dead);
        if !dead.is_empty() {
            let me = self.clone();
            let sub = Arc::clone(sub);
            let dlq = st.settings.dead_letter_topic_for(&sub.topic, &sub.name);
            tokio::spawn(async move { me.dead_letter(sub, dlq, dead).await });
        }
        if ops.is_empty() {
            return Ok(None);
        }
        let (tx, rx) = if wait {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        self.inner.journal.submit(ops, tx).map_err(unavailable)?;
        Ok(rx)
    }

    async fn durable(rx: Option<oneshot::Receiver<JournalResult>>) -> Result<()> {
        match rx {
            None => Ok(()),
            Some(rx) => match rx.await {
                Ok(r) => r.map_err(unavailable),
                Err(_) => Err(CoreError::QueueUnavailable {
                    reason: "the subscriptions journal closed".into(),
                }),
            },
        }
    }

    // ---- admin ----------------------------------------------------------------------

    /// Creates subscription `name` on `topic`, or changes its settings (`start` counts
    /// only at creation). Returns it, and whether it was created.
    pub async fn put(
        &self,
        topic: &str,
        name: &str,
        settings: SubscriptionSettings,
    ) -> Result<(SubscriptionInfo, bool)> {
        validate_subscription_name(name)?;
        settings.validate()?;
        // The dead-letter topic must be a valid topic name before any message needs it.
        let dlq = settings.dead_letter_topic_for(topic, name);
        TopicName::new(dlq.clone()).map_err(|e| CoreError::InvalidSubscription {
            field: "dead_letter_topic".into(),
            value: dlq,
            reason: format!("{e} (name one with dead_letter_topic)"),
        })?;
        if settings.dead_letter_topic.as_deref() == Some(topic) {
            return Err(CoreError::InvalidSubscription {
                field: "dead_letter_topic".into(),
                value: topic.into(),
                reason: "a subscription cannot dead-letter into its own topic".into(),
            });
        }
        let json = serde_json::to_string(&settings).map_err(|e| CoreError::Internal {
            what: "encoding subscription settings",
            reason: e.to_string(),
        })?;
        if let Ok(sub) = self.get(topic, name) {
            let rx = {
                let mut st = lock(&sub.state);
                st.settings = settings;
                let id = st.id;
                st.ops.push(Op::Settings { id, settings: json });
                self.flush(&sub, &mut st, true)?
            };
            Self::durable(rx).await?;
            sub.changed.notify_waiters();
            self.inner.drained.notify_waiters();
            return Ok((self.info(&sub).await?, false));
        }
        let desc = self.inner.broker.describe_topic(topic)?;
        let mut floors = Vec::with_capacity(desc.partitions as usize);
        for p in 0..desc.partitions {
            let o = self.inner.broker.offsets(topic, p)?;
            floors.push(match settings.start {
                StartPosition::Latest => o.high_watermark,
                StartPosition::Earliest => o.log_start_offset,
            });
        }
        let created_ms = now_ms();
        let made = {
            let mut subs = lock(&self.inner.subs);
            let key = (topic.to_string(), name.to_string());
            if let std::collections::btree_map::Entry::Vacant(slot) = subs.entry(key) {
                let id = {
                    let mut next = lock(&self.inner.next_id);
                    let id = *next;
                    *next += 1;
                    id
                };
                let durable_parts = floors.iter().enumerate().map(|(p, f)| {
                    let dp = durable::DurablePartition {
                        floor: *f,
                        ..Default::default()
                    };
                    (p as u32, dp)
                });
                let mut state = SubState::new(id, settings.clone(), durable_parts);
                state.ensure_partitions(desc.partitions as usize);
                state.observe = self.observed();
                state.ops.push(Op::Create {
                    id,
                    topic: topic.to_string(),
                    name: name.to_string(),
                    topic_id: desc.id,
                    settings: json,
                    created_ms,
                    floors,
                });
                let sub = Arc::new(Sub {
                    topic: topic.to_string(),
                    name: name.to_string(),
                    topic_id: desc.id,
                    created_ms,
                    state: Mutex::new(state),
                    redrive: Mutex::new(BTreeMap::new()),
                    changed: Notify::new(),
                    reading: tokio::sync::Mutex::new(()),
                    next_read: AtomicU32::new(0),
                });
                let rx = {
                    let mut st = lock(&sub.state);
                    self.flush(&sub, &mut st, true)?
                };
                slot.insert(Arc::clone(&sub));
                Some((sub, rx))
            } else {
                None
            }
        };
        let Some((sub, rx)) = made else {
            // Created by a concurrent request: treat this one as an update.
            return Box::pin(self.put(topic, name, settings)).await;
        };
        Self::durable(rx).await?;
        info!(topic, subscription = name, "subscription created");
        Ok((self.info(&sub).await?, true))
    }

    /// Deletes a subscription and its state.
    pub async fn delete(&self, topic: &str, name: &str) -> Result<SubscriptionInfo> {
        let sub = self.get(topic, name)?;
        let info = self.info(&sub).await?;
        let id = lock(&sub.state).id;
        let removed = {
            let mut subs = lock(&self.inner.subs);
            subs.remove(&(topic.to_string(), name.to_string()))
                .is_some()
        };
        if !removed {
            return Err(CoreError::UnknownSubscription {
                topic: topic.into(),
                name: name.into(),
            });
        }
        let (tx, rx) = oneshot::channel();
        self.inner
            .journal
            .submit(vec![Op::Delete { id }], Some(tx))
            .map_err(unavailable)?;
        Self::durable(Some(rx)).await?;
        sub.changed.notify_waiters();
        self.inner.drained.notify_waiters();
        info!(topic, subscription = name, "subscription deleted");
        Ok(info)
    }

    /// One subscription with its live figures.
    pub async fn describe(&self, topic: &str, name: &str) -> Result<SubscriptionInfo> {
        let sub = self.get(topic, name)?;
        self.info(&sub).await
    }

    /// Every subscription of `topic`.
    pub async fn list(&self, topic: &str) -> Result<Vec<SubscriptionInfo>> {
        self.inner.broker.describe_topic(topic)?;
        let names: Vec<String> = lock(&self.inner.subs)
            .keys()
            .filter(|(t, _)| t == topic)
            .map(|(_, n)| n.clone())
            .collect();
        let mut out = Vec::new();
        for n in names {
            if let Ok(s) = self.describe(topic, &n).await {
                out.push(s);
            }
        }
        Ok(out)
    }

    async fn info(&self, sub: &Arc<Sub>) -> Result<SubscriptionInfo> {
        let broker = &self.inner.broker;
        let desc = broker.describe_topic(&sub.topic)?;
        let now = now_ms();
        let mut unread_floors = Vec::new();
        let (settings, mut stats) = {
            let mut st = lock(&sub.state);
            st.ensure_partitions(desc.partitions as usize);
            let mut backlog = 0;
            for p in 0..desc.partitions {
                let o = broker.offsets(&sub.topic, p)?;
                backlog += st.backlog(p, o.high_watermark);
                if st.floor(p) < o.high_watermark {
                    unread_floors.push((p, st.floor(p)));
                }
            }
            let c = st.counters;
            let stats = SubStats {
                backlog,
                in_flight: st.in_flight() as u64,
                delivered: c.delivered,
                acked: c.acked,
                nacked: c.nacked,
                dead_lettered: c.dead_lettered,
                redelivered: c.redelivered,
                oldest_unacked_age_ms: st
                    .oldest_pending_ms()
                    .map(|t| u64::try_from(now - t).unwrap_or(0)),
            };
            (st.settings.clone(), stats)
        };
        // The oldest unacked message may not be read yet: look at each floor.
        for (p, floor) in unread_floors {
            if let Ok(r) = broker.read(&sub.topic, p, floor, 1).await {
                if let Ok(d) = records::decode(r.bytes.into(), floor) {
                    if let Some(m) = d.messages.first() {
                        let age = u64::try_from(now - m.timestamp_ms).unwrap_or(0);
                        stats.oldest_unacked_age_ms =
                            Some(stats.oldest_unacked_age_ms.map_or(age, |a| a.max(age)));
                    }
                }
            }
        }
        Ok(SubscriptionInfo {
            topic: sub.topic.clone(),
            name: sub.name.clone(),
            dead_letter_topic: settings.dead_letter_topic_for(&sub.topic, &sub.name),
            settings,
            created_ms: sub.created_ms,
            stats,
        })
    }

    // ---- consuming -----------------------------------------------------------------

    /// Leases up to `max` messages to `consumer`, waiting up to `wait` for some.
    pub async fn pull(
        &self,
        topic: &str,
        name: &str,
        consumer: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Pulled>> {
        let max = max.clamp(1, MAX_PULL);
        let deadline = Instant::now() + wait.min(MAX_WAIT);
        let sub = self.get(topic, name)?;
        let broker = &self.inner.broker;
        let desc = broker.describe_topic(topic)?;
        let mut watches = Vec::with_capacity(desc.partitions as usize);
        for p in 0..desc.partitions {
            watches.push(broker.watch_high_watermark(topic, p)?);
        }
        loop {
            let changed = sub.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            for w in &mut watches {
                w.borrow_and_update();
            }
            let mut cache = HashMap::new();
            let got = self
                .select_and_fill(&sub, consumer, max, &mut cache)
                .await?;
            if !got.is_empty() {
                return self.materialize(&sub, consumer, got, cache).await;
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(Vec::new());
            }
            let mut until = deadline;
            if let Some(at) = lock(&sub.state).next_wakeup(now_ms()) {
                let ms = u64::try_from(at - now_ms()).unwrap_or(0);
                until = until.min(now + Duration::from_millis(ms));
            }
            let hw = async {
                if watches.is_empty() {
                    std::future::pending::<()>().await;
                }
                let waits = watches.iter_mut().map(|rx| Box::pin(rx.changed()));
                let _ = futures_util::future::select_all(waits).await;
            };
            tokio::select! {
                _ = &mut changed => {}
                _ = hw => {}
                _ = tokio::time::sleep_until(until.into()) => {}
            }
            // The subscription may be gone now.
            self.get(topic, name)?;
        }
    }

    /// Expires leases and selects; reads more from the log when that was not enough.
    async fn select_and_fill(
        &self,
        sub: &Arc<Sub>,
        consumer: &str,
        max: usize,
        cache: &mut HashMap<(u32, u64), Message>,
    ) -> Result<Vec<Delivery>> {
        let broker = &self.inner.broker;
        let partitions = broker.describe_topic(&sub.topic)?.partitions;
        let (mut got, events, now) = {
            let mut st = lock(&sub.state);
            // Taken under the lock, as every event time: a select after a redrive or a
            // nack is never stamped before it.
            let now = now_ms();
            st.ensure_partitions(partitions as usize);
            st.expire(now);
            let got = st.select(now, consumer, max);
            self.flush(sub, &mut st, false)?;
            (got, std::mem::take(&mut st.events), now)
        };
        self.report(sub, &events, now, "");
        if got.len() >= max {
            return Ok(got);
        }
        let _reader = sub.reading.lock().await;
        let topic_ttl = broker
            .describe_topic(&sub.topic)
            .ok()
            .and_then(|d| topic_ttl_ms(&d));
        // Partitions take turns at being read first, so one with a deep backlog does
        // not starve the others of reads.
        let first = sub.next_read.fetch_add(1, Ordering::Relaxed);
        for i in 0..partitions {
            if got.len() >= max {
                break;
            }
            let p = (first.wrapping_add(i)) % partitions;
            let offsets = broker.offsets(&sub.topic, p)?;
            let from = {
                let mut st = lock(&sub.state);
                if offsets.log_start_offset > 0 {
                    st.skip_to(p, offsets.log_start_offset);
                }
                match st.read_position(p) {
                    Some(next) if next < offsets.high_watermark => next,
                    _ => continue,
                }
            };
            let read = match broker.read(&sub.topic, p, from, READ_BYTES).await {
                Ok(r) => r,
                Err(CoreError::Log {
                    source: LogError::OffsetOutOfRange { log_start, .. },
                    ..
                }) => {
                    lock(&sub.state).skip_to(p, log_start);
                    continue;
                }
                Err(e) => return Err(e),
            };
            let decoded = match records::decode(read.bytes.into(), from) {
                Ok(d) => d,
                Err(e) => {
                    warn!(topic = %sub.topic, subscription = %sub.name, partition = p, error = %e,
                        "skipping a batch that does not decode; its records cannot be delivered");
                    // It cannot be delivered and must not block the rest: its offsets
                    // (and only those: it is the first batch read) count as done.
                    let mut st = lock(&sub.state);
                    st.add_read(p, from, e.end.max(from + 1), &[]);
                    continue;
                }
            };
            let recs: Vec<ReadRecord> = decoded
                .messages
                .iter()
                .map(|m| ReadRecord {
                    offset: m.offset,
                    published_ms: m.timestamp_ms,
                    key_hash: m.key.as_deref().map(key_hash),
                    delay_ms: m.header_i64(headers::DELAY_MS),
                    ttl_ms: match (m.header_i64(headers::TTL_MS), topic_ttl) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    },
                })
                .collect();
            let (events, now) = {
                let mut st = lock(&sub.state);
                let now = now_ms();
                st.add_read(p, from, decoded.end_offset, &recs);
                if got.len() < max {
                    let more = st.select(now, consumer, max - got.len());
                    got.extend(more);
                }
                self.flush(sub, &mut st, false)?;
                (std::mem::take(&mut st.events), now)
            };
            self.report(sub, &events, now, "");
            for m in decoded.messages {
                cache.insert((p, m.offset), m);
            }
        }
        Ok(got)
    }

    /// The records of `got`: from what this pull just read, else read back from the
    /// log (redeliveries, or messages an earlier pull read ahead), one read per run of
    /// offsets rather than per message.
    async fn materialize(
        &self,
        sub: &Arc<Sub>,
        consumer: &str,
        got: Vec<Delivery>,
        mut cache: HashMap<(u32, u64), Message>,
    ) -> Result<Vec<Pulled>> {
        let mut missing: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
        for d in &got {
            let key = (d.ack_id.partition, d.ack_id.offset);
            if !cache.contains_key(&key) {
                missing.entry(key.0).or_default().push(key.1);
            }
        }
        self.read_messages(&sub.topic, missing, &mut cache).await;
        let mut out = Vec::with_capacity(got.len());
        let topic_id = sub.topic_id.simple().to_string();
        // (lease time, deadline) of each of `out`, for the observers.
        let mut leases = Vec::new();
        let observed = self.observed();
        for d in got {
            let (p, o) = (d.ack_id.partition, d.ack_id.offset);
            let Some(message) = cache.remove(&(p, o)) else {
                // Gone (retention) or unreadable: it cannot be delivered.
                let mut st = lock(&sub.state);
                st.drop_message(p, o);
                self.flush(sub, &mut st, false)?;
                continue;
            };
            if observed {
                leases.push((d.leased_ms, d.deadline_ms));
            }
            out.push(Pulled {
                message_id: format!("{topic_id}-{p}-{o}"),
                delivery_count: d.ack_id.delivery,
                ack_id: d.ack_id,
                message,
                partition: p,
            });
        }
        if observed {
            let events: Vec<QueueEvent<'_>> = out
                .iter()
                .zip(&leases)
                .map(|(m, &(leased_ms, deadline_ms))| QueueEvent {
                    topic: &sub.topic,
                    topic_id: sub.topic_id,
                    subscription: &sub.name,
                    partition: m.partition,
                    offset: m.message.offset,
                    time_ms: leased_ms,
                    kind: QueueEventKind::Delivered {
                        consumer,
                        delivery_count: m.delivery_count,
                        ack_id: m.ack_id,
                        deadline_ms,
                    },
                    message: Some(&m.message),
                })
                .collect();
            self.emit(&events);
        }
        Ok(out)
    }

    /// Reads the records at `offsets` (per partition) into `into`, one read per run of
    /// offsets rather than per message. Offsets that are gone or unreadable are left out.
    async fn read_messages(
        &self,
        topic: &str,
        offsets: BTreeMap<u32, Vec<u64>>,
        into: &mut HashMap<(u32, u64), Message>,
    ) {
        for (p, mut offsets) in offsets {
            offsets.sort_unstable();
            let Some(&last) = offsets.last() else {
                continue;
            };
            let mut i = 0;
            while i < offsets.len() {
                let from = offsets[i];
                let read = self
                    .inner
                    .broker
                    .read(topic, p, from, READ_BYTES)
                    .await
                    .ok()
                    .and_then(|r| records::decode(r.bytes.into(), from).ok());
                let Some(d) = read else {
                    // Unreadable from here: the rest of this run counts as missing.
                    i += 1;
                    continue;
                };
                for m in d.messages {
                    if m.offset > last {
                        break;
                    }
                    into.insert((p, m.offset), m);
                }
                // Past what this read covered (at least one offset, so this ends).
                while i < offsets.len() && offsets[i] < d.end_offset.max(from + 1) {
                    i += 1;
                }
            }
        }
    }

    fn settle(&self, sub: &Arc<Sub>) {
        sub.changed.notify_waiters();
        self.inner.drained.notify_waiters();
    }

    /// Acks messages (durable before this returns).
    pub async fn ack(&self, topic: &str, name: &str, ids: &[AckId]) -> Result<Vec<Outcome>> {
        let sub = self.get(topic, name)?;
        let (out, rx, events, now) = {
            let mut st = lock(&sub.state);
            let now = now_ms();
            let out = st.ack(ids);
            let rx = self.flush(&sub, &mut st, true)?;
            (out, rx, std::mem::take(&mut st.events), now)
        };
        self.report(&sub, &events, now, "");
        Self::durable(rx).await?;
        self.settle(&sub);
        Ok(out)
    }

    /// Gives messages back, to be delivered again after `delay_ms` or the backoff.
    pub async fn nack(
        &self,
        topic: &str,
        name: &str,
        ids: &[AckId],
        reason: &str,
        delay_ms: Option<u64>,
    ) -> Result<Vec<Outcome>> {
        let sub = self.get(topic, name)?;
        let (out, rx, events, now) = {
            let mut st = lock(&sub.state);
            let now = now_ms();
            let out = st.nack(now, ids, reason, delay_ms);
            let rx = self.flush(&sub, &mut st, true)?;
            (out, rx, std::mem::take(&mut st.events), now)
        };
        self.report(&sub, &events, now, reason);
        Self::durable(rx).await?;
        self.settle(&sub);
        Ok(out)
    }

    /// Moves lease deadlines to `deadline_ms` from now.
    pub async fn extend(
        &self,
        topic: &str,
        name: &str,
        ids: &[AckId],
        deadline_ms: u64,
    ) -> Result<Vec<Outcome>> {
        let sub = self.get(topic, name)?;
        let mut st = lock(&sub.state);
        Ok(st.extend(now_ms(), ids, deadline_ms))
    }

    /// Moves the subscription to `target` in every partition (or only `partition`):
    /// earlier messages count as acked, later ones as never delivered. Returns the new
    /// position per partition.
    pub async fn seek(
        &self,
        topic: &str,
        name: &str,
        partition: Option<u32>,
        target: SeekTarget,
    ) -> Result<Vec<(u32, u64)>> {
        let sub = self.get(topic, name)?;
        let broker = &self.inner.broker;
        let n = broker.describe_topic(topic)?.partitions;
        let parts: Vec<u32> = match partition {
            Some(p) if p < n => vec![p],
            Some(p) => {
                return Err(CoreError::UnknownPartition {
                    topic: topic.into(),
                    partition: p,
                    partitions: n,
                })
            }
            None => (0..n).collect(),
        };
        let mut to = Vec::new();
        for p in parts {
            let o = broker.offsets(topic, p)?;
            let at = match target {
                SeekTarget::Offset(x) => x,
                SeekTarget::Time(t) => broker
                    .offset_for_timestamp(topic, p, t)
                    .await?
                    .unwrap_or(o.high_watermark),
            };
            to.push((p, at.clamp(o.log_start_offset, o.high_watermark)));
        }
        let _reader = sub.reading.lock().await;
        let rx = {
            let mut st = lock(&sub.state);
            for (p, at) in &to {
                st.seek(*p, *at);
            }
            self.flush(&sub, &mut st, true)?
        };
        Self::durable(rx).await?;
        self.settle(&sub);
        Ok(to)
    }

    /// Brings this subscription's dead letters back: every message the dead-letter topic
    /// received from it since the last redrive is pending again, with its delivery count
    /// reset. Returns how many.
    pub async fn redrive(&self, topic: &str, name: &str) -> Result<u64> {
        let sub = self.get(topic, name)?;
        let broker = &self.inner.broker;
        let dlq = lock(&sub.state).settings.dead_letter_topic_for(topic, name);
        let parts = match broker.describe_topic(&dlq) {
            Ok(d) => d.partitions,
            Err(CoreError::UnknownTopic { .. }) => return Ok(0),
            Err(e) => return Err(e),
        };
        let _reader = sub.reading.lock().await;
        let mut found: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
        // Source (partition, offset) -> the dead letter's (partition, offset).
        let mut origin: HashMap<(u32, u64), (u32, u64)> = HashMap::new();
        let observed = self.observed();
        let mut cursors = Vec::new();
        for dp in 0..parts {
            let o = broker.offsets(&dlq, dp)?;
            let mut pos = lock(&sub.redrive)
                .get(&dp)
                .copied()
                .unwrap_or(0)
                .max(o.log_start_offset);
            while pos < o.high_watermark {
                let r = broker.read(&dlq, dp, pos, READ_BYTES).await?;
                let d = records::decode(r.bytes.into(), pos).map_err(|e| CoreError::Internal {
                    what: "reading the dead-letter topic",
                    reason: e.to_string(),
                })?;
                for m in &d.messages {
                    let text = |h: &str| m.header(h).and_then(|v| std::str::from_utf8(v).ok());
                    if text(dlh::TOPIC) != Some(topic) || text(dlh::SUBSCRIPTION) != Some(name) {
                        continue;
                    }
                    if let (Some(p), Some(off)) =
                        (m.header_i64(dlh::PARTITION), m.header_i64(dlh::OFFSET))
                    {
                        if let (Ok(p), Ok(off)) = (u32::try_from(p), u64::try_from(off)) {
                            found.entry(p).or_default().push(off);
                            if observed {
                                origin.insert((p, off), (dp, m.offset));
                            }
                        }
                    }
                }
                if d.end_offset <= pos {
                    break;
                }
                pos = d.end_offset;
            }
            cursors.push((dp, pos));
        }
        // Event times are taken under the lock, so a delivery after the redrive cannot be
        // stamped before it.
        let (n, rx, events, now) = {
            let mut st = lock(&sub.state);
            let now = now_ms();
            let mut n = 0;
            for (p, offsets) in &found {
                n += st.reopen(*p, offsets) as u64;
            }
            let id = st.id;
            for (dp, pos) in &cursors {
                st.ops.push(Op::RedriveCursor {
                    id,
                    dlq_partition: *dp,
                    offset: *pos,
                });
            }
            let rx = self.flush(&sub, &mut st, true)?;
            (n, rx, std::mem::take(&mut st.events), now)
        };
        let redriven: Vec<QueueEvent<'_>> = events
            .iter()
            .filter_map(|h| {
                let Happened::Reopened { partition, offset } = *h else {
                    return None;
                };
                let &(from_partition, from_offset) = origin.get(&(partition, offset))?;
                Some(QueueEvent {
                    topic: &sub.topic,
                    topic_id: sub.topic_id,
                    subscription: &sub.name,
                    partition,
                    offset,
                    time_ms: now,
                    kind: QueueEventKind::Redriven {
                        from_topic: &dlq,
                        from_partition,
                        from_offset,
                    },
                    message: None,
                })
            })
            .collect();
        self.emit(&redriven);
        Self::durable(rx).await?;
        lock(&sub.redrive).extend(cursors);
        self.settle(&sub);
        info!(
            topic,
            subscription = name,
            redriven = n,
            "dead letters redriven"
        );
        Ok(n)
    }

    /// Appends dead letters to `dlq` (creating it if needed), then marks them done.
    async fn dead_letter(&self, sub: Arc<Sub>, dlq: String, dead: Vec<DeadLetter>) {
        let result = self.append_dead_letters(&sub, &dlq, &dead).await;
        let mut st = lock(&sub.state);
        let now = now_ms();
        let mut appended = None;
        match result {
            Ok((base, messages)) => {
                let observed = st.observe;
                let mut done = Vec::new();
                for d in &dead {
                    let removed = st.dead_lettered(d.partition, d.offset);
                    if observed {
                        done.push(removed);
                    }
                }
                if observed {
                    appended = Some((base, messages, done));
                }
            }
            Err(e) => {
                warn!(topic = %sub.topic, subscription = %sub.name, dead_letter_topic = %dlq,
                    error = %e, "could not write dead letters; retrying in a second");
                for d in &dead {
                    st.dead_letter_failed(d.partition, d.offset, now_ms());
                }
            }
        }
        let _ = self.flush(&sub, &mut st, false);
        drop(st);
        if let Some((base, messages, done)) = appended {
            let events: Vec<QueueEvent<'_>> = dead
                .iter()
                .zip(&messages)
                .zip(done)
                .zip(base..)
                .filter(|(((_, _), removed), _)| *removed)
                .map(|(((d, m), _), dlq_offset)| QueueEvent {
                    topic: &sub.topic,
                    topic_id: sub.topic_id,
                    subscription: &sub.name,
                    partition: d.partition,
                    offset: d.offset,
                    time_ms: now,
                    kind: QueueEventKind::DeadLettered {
                        reason: &d.meta.reason,
                        delivery_count: d.meta.deliveries,
                        dead_letter_topic: &dlq,
                        dlq_partition: 0,
                        dlq_offset,
                    },
                    message: Some(m),
                })
                .collect();
            self.emit(&events);
        }
        self.settle(&sub);
    }

    /// Appends the dead letters, in order, to partition 0 of `dlq`. Returns the offset
    /// of the first and the original records (in the order of `dead`).
    async fn append_dead_letters(
        &self,
        sub: &Arc<Sub>,
        dlq: &str,
        dead: &[DeadLetter],
    ) -> Result<(u64, Vec<Message>)> {
        let broker = &self.inner.broker;
        if let Err(CoreError::UnknownTopic { .. }) = broker.describe_topic(dlq) {
            match broker.create_topic(NewTopic::new(dlq, 1)).await {
                Ok(_) | Err(CoreError::TopicExists { .. }) => {
                    info!(topic = dlq, "dead-letter topic created");
                }
                Err(e) => return Err(e),
            }
        }
        let mut wanted: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
        for d in dead {
            wanted.entry(d.partition).or_default().push(d.offset);
        }
        let mut found = HashMap::new();
        self.read_messages(&sub.topic, wanted, &mut found).await;
        let mut messages = Vec::with_capacity(dead.len());
        for d in dead {
            // A record that is gone cannot be dead-lettered; it is done all the same.
            let m = found.remove(&(d.partition, d.offset)).unwrap_or(Message {
                offset: d.offset,
                timestamp_ms: now_ms(),
                key: None,
                value: None,
                headers: Vec::new(),
            });
            messages.push((d, m));
        }
        let now = now_ms();
        let texts: Vec<Vec<(&'static str, String)>> = messages
            .iter()
            .map(|(d, _)| {
                vec![
                    (dlh::TOPIC, sub.topic.clone()),
                    (dlh::PARTITION, d.partition.to_string()),
                    (dlh::OFFSET, d.offset.to_string()),
                    (dlh::SUBSCRIPTION, sub.name.clone()),
                    (dlh::DELIVERY_COUNT, d.meta.deliveries.to_string()),
                    (dlh::FIRST_FAILURE_MS, d.meta.first_failure_ms.to_string()),
                    (dlh::LAST_FAILURE_MS, d.meta.last_failure_ms.to_string()),
                    (dlh::REASON, d.meta.reason.clone()),
                ]
            })
            .collect();
        let mut b = RecordBatchBuilder::new();
        for ((_, m), extra) in messages.iter().zip(&texts) {
            let mut headers: Vec<(&str, Option<&[u8]>)> = m
                .headers
                .iter()
                .filter(|(k, _)| !k.starts_with("wharf-dlq-"))
                .map(|(k, v)| (k.as_str(), v.as_deref()))
                .collect();
            headers.extend(extra.iter().map(|(k, v)| (*k, Some(v.as_bytes()))));
            b.push(&Record {
                key: m.key.as_deref(),
                value: m.value.as_deref(),
                headers,
                timestamp: now,
            });
        }
        let batch = b.build();
        let info = broker.append(dlq, 0, batch).await?;
        Ok((
            info.base_offset,
            messages.into_iter().map(|(_, m)| m).collect(),
        ))
    }

    // ---- back-pressure ---------------------------------------------------------------

    /// Whether `topic` takes new messages now: see [`ProduceGate::admit`].
    pub fn admit(&self, topic: &str) -> Result<()> {
        self.inner.admit(topic)
    }
}

impl Inner {
    /// Whether `topic` takes new messages now: the first subscription over its backlog
    /// limit says no (`Throttled` for `block`, `BacklogFull` for `reject`).
    pub fn admit(&self, topic: &str) -> Result<()> {
        let subs: Vec<Arc<Sub>> = lock(&self.subs)
            .range((topic.to_string(), String::new())..)
            .take_while(|((t, _), _)| t == topic)
            .map(|(_, s)| Arc::clone(s))
            .collect();
        if subs.is_empty() {
            return Ok(());
        }
        let broker = &self.broker;
        let Ok(desc) = broker.describe_topic(topic) else {
            return Ok(());
        };
        let mut ends = Vec::new();
        for p in 0..desc.partitions {
            ends.push(broker.offsets(topic, p)?.high_watermark);
        }
        for sub in subs {
            if sub.topic_id != desc.id {
                continue;
            }
            let (limits, backlog, floors) = {
                let st = lock(&sub.state);
                let s = &st.settings;
                if s.max_backlog_messages.is_none() && s.max_backlog_bytes.is_none() {
                    continue;
                }
                let backlog: u64 = (0..desc.partitions)
                    .map(|p| st.backlog(p, ends[p as usize]))
                    .sum();
                let floors: Vec<u64> = (0..desc.partitions).map(|p| st.floor(p)).collect();
                (
                    (
                        s.max_backlog_messages,
                        s.max_backlog_bytes,
                        s.backlog_policy,
                    ),
                    backlog,
                    floors,
                )
            };
            let (max_messages, max_bytes, policy) = limits;
            let bytes = || -> Result<u64> {
                let mut sum = 0;
                for (p, floor) in (0u32..).zip(&floors) {
                    sum += broker.partition_bytes_from(topic, p, *floor)?;
                }
                Ok(sum)
            };
            let over = match (max_messages, max_bytes) {
                (Some(m), _) if backlog >= m => {
                    Some(format!("{backlog} messages unacked, limit {m}"))
                }
                (_, Some(b)) => {
                    let have = bytes()?;
                    (have >= b).then(|| {
                        format!("{have} bytes from the oldest unacked message on, limit {b}")
                    })
                }
                _ => None,
            };
            if let Some(detail) = over {
                let (topic, subscription) = (topic.to_string(), sub.name.clone());
                return Err(match policy {
                    BacklogPolicy::Block => CoreError::Throttled {
                        topic,
                        subscription,
                        detail,
                    },
                    BacklogPolicy::Reject => CoreError::BacklogFull {
                        topic,
                        subscription,
                        detail,
                    },
                });
            }
        }
        Ok(())
    }
}

impl ProduceGate for Inner {
    fn admit(&self, topic: &str) -> Result<()> {
        Inner::admit(self, topic)
    }

    fn drained(&self) -> tokio::sync::futures::Notified<'_> {
        self.drained.notified()
    }
}

/// Ends expired leases of every subscription, every [`TICK`], so that a message whose
/// consumer went away is dead-lettered (or made available) even when nobody pulls; and
/// removes the subscriptions of deleted topics.
async fn tick(inner: Weak<Inner>) {
    let mut every = tokio::time::interval(TICK);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        {
            let Some(inner) = inner.upgrade() else {
                return;
            };
            let stop = inner.stop.notified();
            tokio::pin!(stop);
            stop.as_mut().enable();
            tokio::select! {
                _ = every.tick() => {}
                _ = &mut stop => return,
            }
            let queues = Queues {
                inner: Arc::clone(&inner),
            };
            let subs: Vec<Arc<Sub>> = lock(&queues.inner.subs).values().cloned().collect();
            for sub in subs {
                // A subscription dies with its topic (deleted, or deleted and made anew).
                let gone = match queues.inner.broker.describe_topic(&sub.topic) {
                    Ok(d) => d.id != sub.topic_id,
                    Err(e) => matches!(e, CoreError::UnknownTopic { .. }),
                };
                if gone {
                    info!(topic = %sub.topic, subscription = %sub.name, "subscription removed with its topic");
                    queues.forget(&sub);
                    continue;
                }
                let mut st = lock(&sub.state);
                let now = now_ms();
                if st.expire(now) > 0 {
                    let _ = queues.flush(&sub, &mut st, false);
                    let events = std::mem::take(&mut st.events);
                    drop(st);
                    queues.report(&sub, &events, now, "");
                    sub.changed.notify_waiters();
                }
            }
        }
    }
}
