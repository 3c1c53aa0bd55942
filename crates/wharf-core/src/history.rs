//! Message history: what the queue subscriptions did to each message (deliveries, acks,
//! nacks and their reasons, expired leases, dead letters, redrives), kept in memory for
//! a window of time, so that a message's life can be looked up afterwards.
//!
//! [`MessageHistory`] is a [`QueueObserver`]: registered with
//! [`crate::queue::Queues::add_observer`], it stores each event under its message
//! (topic id, partition, offset: a topic deleted and made anew under its name starts
//! with no history). It is bounded twice: events older than the window are pruned as
//! new ones come in and when a message is looked up (and never shown), and at most
//! `max_messages` messages are held, oldest first out. Nothing is written to disk: the
//! history starts empty after a restart.
//!
//! The messages sit in a ring in the order they were first seen; a message whose older
//! events were pruned while newer ones remain goes to the back again. So the front is
//! the oldest, to evict at the cap or prune past the window, and eviction walks memory
//! in order; a map from (topic id, partition, offset) finds a message's slot.
//!
//! Cost on the pull and ack paths: one mutex per request (the queues hand over a
//! request's events at once), and per event a hash-map lookup; a message's first two
//! events are held in its map entry, so recording them allocates nothing, and the
//! intern table of names (subscriptions, consumers, reasons, dead-letter topics) is
//! looked up only for a name not among the last few used.
//!
//! Memory: per message a slot (its first two events in place, about 200 bytes) and a
//! map entry (about 40 bytes); further events about 80 bytes each. The intern
//! table drops names no event uses any more whenever it has doubled.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, Mutex, PoisonError};

use uuid::Uuid;

use crate::error::{CoreError, Result};
use crate::observe::{QueueEvent, QueueEventKind, QueueObserver};
use crate::queue::dead_letter_headers as dlh;
use crate::records::{self, Message};
use crate::Broker;

/// Default window: an hour.
pub const DEFAULT_HISTORY_WINDOW_MS: u64 = 3_600_000;
/// Default most messages held.
pub const DEFAULT_HISTORY_MAX_MESSAGES: usize = 100_000;
const INTERN_MIN: usize = 1_024;

/// One recorded event of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEvent {
    /// Milliseconds since the epoch.
    pub time_ms: i64,
    pub subscription: Arc<str>,
    pub kind: HistoryKind,
}

/// What happened; see [`QueueEventKind`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HistoryKind {
    Delivered {
        consumer: Arc<str>,
        delivery_count: u32,
        deadline_ms: i64,
    },
    Acked {
        delivery_count: u32,
    },
    Nacked {
        delivery_count: u32,
        reason: Arc<str>,
        redeliver_at_ms: Option<i64>,
    },
    LeaseExpired {
        delivery_count: u32,
    },
    Expired,
    DeadLettered {
        reason: Arc<str>,
        delivery_count: u32,
        dead_letter_topic: Arc<str>,
        dlq_partition: u32,
        dlq_offset: u64,
    },
    Redriven {
        from_topic: Arc<str>,
        from_partition: u32,
        from_offset: u64,
    },
}

impl HistoryKind {
    /// The event's name, as [`QueueEventKind::name`].
    pub fn name(&self) -> &'static str {
        match self {
            HistoryKind::Delivered { .. } => "delivered",
            HistoryKind::Acked { .. } => "acked",
            HistoryKind::Nacked { .. } => "nacked",
            HistoryKind::LeaseExpired { .. } => "lease_expired",
            HistoryKind::Expired => "expired",
            HistoryKind::DeadLettered { .. } => "dead_lettered",
            HistoryKind::Redriven { .. } => "redriven",
        }
    }
}

/// A message: its topic's id, its partition and offset.
type Key = (u128, u32, u64);

/// A quick hash of a [`Key`]. Every part of a key is the broker's choice (a random topic
/// id, a partition, an offset the log assigned), none a client's, so it needs no
/// defence against chosen collisions; names, which clients choose, use std's hasher.
#[derive(Default, Clone, Copy)]
struct KeyHasher(u64);

impl KeyHasher {
    fn add(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        // Mix the high bits down: HashMap takes its bucket from the low ones.
        let mut x = self.0;
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^ (x >> 33)
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.add(u64::from(*b));
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.add(u64::from(n));
    }
    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }
    fn write_u128(&mut self, n: u128) {
        self.add(n as u64);
        self.add((n >> 64) as u64);
    }
}

type KeyHash = BuildHasherDefault<KeyHasher>;

/// One held message.
struct Slot {
    key: Key,
    events: Events,
}

/// A message's events: most messages have one or two (delivered, acked), held in place,
/// so recording them allocates nothing.
#[derive(Default)]
struct Events {
    first: [Option<HistoryEvent>; 2],
    more: Vec<HistoryEvent>,
}

impl Events {
    fn push(&mut self, e: HistoryEvent) {
        match self.first.iter_mut().find(|slot| slot.is_none()) {
            Some(slot) => *slot = Some(e),
            None => self.more.push(e),
        }
    }

    fn iter(&self) -> impl Iterator<Item = &HistoryEvent> {
        self.first.iter().flatten().chain(&self.more)
    }

    fn oldest(&self) -> i64 {
        self.iter().map(|e| e.time_ms).min().unwrap_or(i64::MIN)
    }

    /// Keeps the events at or after `cutoff`; returns the time of the oldest kept.
    fn keep_since(&mut self, cutoff: i64) -> Option<i64> {
        if self.iter().all(|e| e.time_ms >= cutoff) {
            return self.iter().map(|e| e.time_ms).min();
        }
        let old = std::mem::take(self);
        for e in old.first.into_iter().flatten().chain(old.more) {
            if e.time_ms >= cutoff {
                self.push(e);
            }
        }
        self.iter().map(|e| e.time_ms).min()
    }
}

/// Names looked at last, checked before the intern table: most events of a run share
/// their subscription and consumer.
const RECENT_NAMES: usize = 8;

/// The held messages in a ring, oldest first: a message goes to the back when it is
/// first seen, and again when pruning dropped its older events, so the front is the
/// one to evict (the cap) or prune (the window), and eviction walks memory in order.
#[derive(Default)]
struct Store {
    slots: VecDeque<Slot>,
    /// Position of `slots[0]`, counting every slot ever pushed.
    base: u64,
    /// Each held message's position.
    index: HashMap<Key, u64, KeyHash>,
    names: HashSet<Arc<str>>,
    names_limit: usize,
    recent: Vec<Arc<str>>,
}

impl Store {
    fn intern(&mut self, s: &str) -> Arc<str> {
        if let Some(a) = self.recent.iter().find(|a| ***a == *s) {
            return Arc::clone(a);
        }
        let a = match self.names.get(s) {
            Some(a) => Arc::clone(a),
            None => {
                if self.names.len() >= self.names_limit.max(INTERN_MIN) {
                    // Names only this table (or the recent list) still holds belong to
                    // no event.
                    self.recent.clear();
                    self.names.retain(|a| Arc::strong_count(a) > 1);
                    self.names_limit = (self.names.len() * 2).max(INTERN_MIN);
                }
                let a: Arc<str> = Arc::from(s);
                self.names.insert(Arc::clone(&a));
                a
            }
        };
        if self.recent.len() >= RECENT_NAMES {
            self.recent.remove(0);
        }
        self.recent.push(Arc::clone(&a));
        a
    }

    fn kind(&mut self, k: &QueueEventKind<'_>) -> HistoryKind {
        match *k {
            QueueEventKind::Delivered {
                consumer,
                delivery_count,
                deadline_ms,
                ..
            } => HistoryKind::Delivered {
                consumer: self.intern(consumer),
                delivery_count,
                deadline_ms,
            },
            QueueEventKind::Acked { delivery_count } => HistoryKind::Acked { delivery_count },
            QueueEventKind::Nacked {
                delivery_count,
                reason,
                redeliver_at_ms,
            } => HistoryKind::Nacked {
                delivery_count,
                reason: self.intern(reason),
                redeliver_at_ms,
            },
            QueueEventKind::LeaseExpired { delivery_count } => {
                HistoryKind::LeaseExpired { delivery_count }
            }
            QueueEventKind::Expired => HistoryKind::Expired,
            QueueEventKind::DeadLettered {
                reason,
                delivery_count,
                dead_letter_topic,
                dlq_partition,
                dlq_offset,
            } => HistoryKind::DeadLettered {
                reason: self.intern(reason),
                delivery_count,
                dead_letter_topic: self.intern(dead_letter_topic),
                dlq_partition,
                dlq_offset,
            },
            QueueEventKind::Redriven {
                from_topic,
                from_partition,
                from_offset,
            } => HistoryKind::Redriven {
                from_topic: self.intern(from_topic),
                from_partition,
                from_offset,
            },
        }
    }

    fn get(&self, key: &Key) -> Option<&Slot> {
        let pos = *self.index.get(key)?;
        self.slots.get(usize::try_from(pos - self.base).ok()?)
    }

    fn pop_front(&mut self) -> Option<Slot> {
        let slot = self.slots.pop_front()?;
        self.base += 1;
        self.index.remove(&slot.key);
        Some(slot)
    }

    fn push_back(&mut self, slot: Slot) {
        let pos = self.base + self.slots.len() as u64;
        self.index.insert(slot.key, pos);
        self.slots.push_back(slot);
    }

    fn record(&mut self, e: &QueueEvent<'_>, window_ms: i64, cap: usize) {
        let event = HistoryEvent {
            time_ms: e.time_ms,
            subscription: self.intern(e.subscription),
            kind: self.kind(&e.kind),
        };
        let key = (e.topic_id.as_u128(), e.partition, e.offset);
        let held = self
            .index
            .get(&key)
            .and_then(|pos| usize::try_from(pos - self.base).ok());
        match held.and_then(|i| self.slots.get_mut(i)) {
            Some(slot) => slot.events.push(event),
            None => {
                while self.slots.len() >= cap.max(1) {
                    self.pop_front();
                }
                let mut events = Events::default();
                events.push(event);
                self.push_back(Slot { key, events });
            }
        }
        self.prune(e.time_ms.saturating_sub(window_ms));
    }

    /// Drops events older than `cutoff`, and messages left with none; a message that
    /// keeps some goes to the back of the ring.
    fn prune(&mut self, cutoff: i64) {
        // Each message is looked at once at most: one moved to the back is not old.
        for _ in 0..self.slots.len() {
            match self.slots.front() {
                Some(front) if front.events.oldest() < cutoff => {}
                _ => break,
            }
            let Some(mut slot) = self.pop_front() else {
                break;
            };
            if slot.events.keep_since(cutoff).is_some() {
                self.push_back(slot);
            }
        }
    }
}

/// The history of queue messages for the last `window_ms`; see the module docs.
pub struct MessageHistory {
    window_ms: u64,
    max_messages: usize,
    store: Mutex<Store>,
}

impl MessageHistory {
    /// A store keeping `window_ms` of events of at most `max_messages` messages. With
    /// either 0 it keeps nothing (and need not be registered).
    pub fn new(window_ms: u64, max_messages: usize) -> MessageHistory {
        MessageHistory {
            window_ms,
            max_messages,
            store: Mutex::new(Store::default()),
        }
    }

    /// Whether it keeps anything.
    pub fn enabled(&self) -> bool {
        self.window_ms > 0 && self.max_messages > 0
    }

    pub fn window_ms(&self) -> u64 {
        self.window_ms
    }

    pub fn max_messages(&self) -> usize {
        self.max_messages
    }

    fn window(&self) -> i64 {
        i64::try_from(self.window_ms).unwrap_or(i64::MAX)
    }

    /// The events of one message (of the topic with id `topic_id`: a topic deleted and
    /// made anew under the same name has a new id, and none of the old one's history)
    /// within the window before `now_ms`, oldest first (by time; events of the same
    /// millisecond in the order they were recorded).
    pub fn events(
        &self,
        topic_id: Uuid,
        partition: u32,
        offset: u64,
        now_ms: i64,
    ) -> Vec<HistoryEvent> {
        let cutoff = now_ms.saturating_sub(self.window());
        let key = (topic_id.as_u128(), partition, offset);
        let mut out: Vec<HistoryEvent> = {
            let mut store = lock(&self.store);
            store.prune(cutoff);
            store
                .get(&key)
                .map(|slot| {
                    slot.events
                        .iter()
                        .filter(|e| e.time_ms >= cutoff)
                        .cloned()
                        .collect()
                })
                .unwrap_or_default()
        };
        out.sort_by_key(|e| e.time_ms);
        out
    }

    /// How many messages have events held.
    pub fn messages(&self) -> usize {
        lock(&self.store).slots.len()
    }
}

/// Where a dead letter came from, as its `wharf-dlq-*` headers say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterOrigin {
    pub topic: String,
    pub partition: u32,
    pub offset: u64,
    pub subscription: Option<String>,
    pub delivery_count: Option<u32>,
    pub reason: Option<String>,
}

impl DeadLetterOrigin {
    /// The origin a record names, if it is a dead letter.
    pub fn of(m: &Message) -> Option<DeadLetterOrigin> {
        let text = |h: &str| {
            m.header(h)
                .and_then(|v| std::str::from_utf8(v).ok())
                .map(str::to_string)
        };
        Some(DeadLetterOrigin {
            topic: text(dlh::TOPIC)?,
            partition: u32::try_from(m.header_i64(dlh::PARTITION)?).ok()?,
            offset: u64::try_from(m.header_i64(dlh::OFFSET)?).ok()?,
            subscription: text(dlh::SUBSCRIPTION),
            delivery_count: m
                .header_i64(dlh::DELIVERY_COUNT)
                .and_then(|n| u32::try_from(n).ok()),
            reason: text(dlh::REASON),
        })
    }
}

/// What is known of one stored message: the record as the log holds it, and its
/// recorded events.
#[derive(Debug, Clone)]
pub struct MessageStory {
    pub topic: String,
    pub partition: u32,
    /// Stable across deliveries and subscriptions, as pulls give it:
    /// `<topic id>-<partition>-<offset>`.
    pub message_id: String,
    /// The record; its timestamp is when it was published.
    pub message: Message,
    /// Oldest first; empty when nothing happened to it within the window (or history is
    /// off).
    pub events: Vec<HistoryEvent>,
    /// Set when the record is itself a dead letter.
    pub dead_letter_of: Option<DeadLetterOrigin>,
}

impl MessageHistory {
    /// The story of the message at `offset` of `topic`'s `partition`: the record read
    /// from the log and the events held for it. An unknown topic or partition, or an
    /// offset with no record below the high watermark, is an error (`UnknownTopic`,
    /// `UnknownPartition`, `UnknownOffset`).
    pub async fn story(
        &self,
        broker: &Broker,
        topic: &str,
        partition: u32,
        offset: u64,
        now_ms: i64,
    ) -> Result<MessageStory> {
        let desc = broker.describe_topic(topic)?;
        if partition >= desc.partitions {
            return Err(CoreError::UnknownPartition {
                topic: topic.into(),
                partition,
                partitions: desc.partitions,
            });
        }
        let unknown = |detail: String| CoreError::UnknownOffset {
            topic: topic.into(),
            partition,
            offset,
            detail,
        };
        let o = broker.offsets(topic, partition)?;
        if offset < o.log_start_offset || offset >= o.high_watermark {
            return Err(unknown(if o.log_start_offset >= o.high_watermark {
                "the partition holds no messages".into()
            } else {
                format!(
                    "the partition holds offsets {} to {}",
                    o.log_start_offset,
                    o.high_watermark - 1
                )
            }));
        }
        let read = match broker.read(topic, partition, offset, 1).await {
            Ok(r) => r,
            Err(CoreError::Log {
                source: wharf_log::LogError::OffsetOutOfRange { .. },
                ..
            }) => return Err(unknown("deleted by retention".into())),
            Err(e) => return Err(e),
        };
        let decoded =
            records::decode(read.bytes.into(), offset).map_err(|e| CoreError::Internal {
                what: "reading a message for its history",
                reason: e.to_string(),
            })?;
        let message = decoded
            .messages
            .into_iter()
            .find(|m| m.offset == offset)
            .ok_or_else(|| unknown("the offset holds no data record".into()))?;
        Ok(MessageStory {
            topic: topic.into(),
            partition,
            message_id: format!("{}-{partition}-{offset}", desc.id.simple()),
            events: self.events(desc.id, partition, offset, now_ms),
            dead_letter_of: DeadLetterOrigin::of(&message),
            message,
        })
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Each update leaves the shard consistent at every step that could panic.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl QueueObserver for MessageHistory {
    fn on_event(&self, e: &QueueEvent<'_>) {
        self.on_events(std::slice::from_ref(e));
    }

    /// One lock for the events of a request.
    fn on_events(&self, events: &[QueueEvent<'_>]) {
        if !self.enabled() || events.is_empty() {
            return;
        }
        let (window, cap) = (self.window(), self.max_messages);
        let mut store = lock(&self.store);
        for e in events {
            store.record(e, window, cap);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev<'a>(
        topic: &'a str,
        offset: u64,
        time_ms: i64,
        kind: QueueEventKind<'a>,
    ) -> QueueEvent<'a> {
        QueueEvent {
            topic,
            topic_id: id(topic),
            subscription: "s",
            partition: 0,
            offset,
            time_ms,
            kind,
            message: None,
        }
    }

    /// A fixed id per test topic name.
    fn id(topic: &str) -> Uuid {
        Uuid::from_u128(topic.bytes().fold(0, |h, b| h * 131 + u128::from(b)))
    }

    fn acked(n: u32) -> QueueEventKind<'static> {
        QueueEventKind::Acked { delivery_count: n }
    }

    fn times(h: &MessageHistory, topic: &str, offset: u64, now: i64) -> Vec<i64> {
        h.events(id(topic), 0, offset, now)
            .iter()
            .map(|e| e.time_ms)
            .collect()
    }

    #[test]
    fn events_older_than_the_window_are_pruned_and_a_message_left_with_none_goes() {
        let h = MessageHistory::new(1_000, 100);
        h.on_event(&ev("t", 1, 0, acked(1)));
        h.on_event(&ev("t", 1, 500, acked(2)));
        h.on_event(&ev("t", 2, 600, acked(1)));
        assert_eq!(times(&h, "t", 1, 900), vec![0, 500]);
        // Recording at 1_200 prunes what is older than 200.
        h.on_event(&ev("t", 3, 1_200, acked(1)));
        assert_eq!(times(&h, "t", 1, 1_200), vec![500]);
        assert_eq!(h.messages(), 3);
        // At 1_550 the first message has nothing left in the window. (It went behind
        // the others when its first event was pruned, and is dropped when it comes
        // round.)
        assert_eq!(times(&h, "t", 1, 1_550), Vec::<i64>::new());
        assert_eq!(times(&h, "t", 2, 1_550), vec![600]);
        assert_eq!(times(&h, "t", 3, 1_550), vec![1_200]);
        assert_eq!(times(&h, "t", 3, 2_201), Vec::<i64>::new());
        assert_eq!(h.messages(), 0);
    }

    #[test]
    fn past_the_cap_the_message_with_the_oldest_event_is_evicted_whole() {
        let h = MessageHistory::new(1_000_000, 3);
        h.on_event(&ev("t", 1, 10, acked(1)));
        h.on_event(&ev("t", 2, 20, acked(1)));
        h.on_event(&ev("u", 3, 30, acked(1)));
        // More events of message 1 do not make it younger: it came first.
        h.on_event(&ev("t", 1, 40, acked(2)));
        h.on_event(&ev("t", 4, 50, acked(1)));
        assert_eq!(h.messages(), 3);
        assert_eq!(times(&h, "t", 1, 60), Vec::<i64>::new());
        assert_eq!(times(&h, "t", 2, 60), vec![20]);
        assert_eq!(times(&h, "u", 3, 60), vec![30]);
        assert_eq!(times(&h, "t", 4, 60), vec![50]);
        h.on_event(&ev("t", 5, 70, acked(1)));
        assert_eq!(times(&h, "t", 2, 80), Vec::<i64>::new());
        assert_eq!(h.messages(), 3);
    }

    #[test]
    fn a_message_pruned_in_part_is_evicted_by_its_oldest_remaining_event() {
        let h = MessageHistory::new(100, 2);
        h.on_event(&ev("t", 1, 0, acked(1)));
        h.on_event(&ev("t", 2, 50, acked(1)));
        h.on_event(&ev("t", 1, 90, acked(2)));
        // At 120, message 1 keeps only its event at 90: now younger than message 2.
        assert_eq!(times(&h, "t", 1, 120), vec![90]);
        h.on_event(&ev("t", 3, 120, acked(1)));
        assert_eq!(times(&h, "t", 2, 120), Vec::<i64>::new());
        assert_eq!(times(&h, "t", 1, 120), vec![90]);
    }

    #[test]
    fn events_come_back_in_time_order_with_their_details() {
        let h = MessageHistory::new(1_000, 10);
        h.on_event(&ev(
            "t",
            7,
            20,
            QueueEventKind::Nacked {
                delivery_count: 1,
                reason: "boom",
                redeliver_at_ms: Some(30),
            },
        ));
        h.on_event(&ev(
            "t",
            7,
            10,
            QueueEventKind::Delivered {
                consumer: "c1",
                delivery_count: 1,
                ack_id: crate::queue::AckId {
                    partition: 0,
                    offset: 7,
                    delivery: 1,
                },
                deadline_ms: 99,
            },
        ));
        let got = h.events(id("t"), 0, 7, 40);
        assert_eq!(
            got.iter().map(|e| e.kind.clone()).collect::<Vec<_>>(),
            vec![
                HistoryKind::Delivered {
                    consumer: "c1".into(),
                    delivery_count: 1,
                    deadline_ms: 99
                },
                HistoryKind::Nacked {
                    delivery_count: 1,
                    reason: "boom".into(),
                    redeliver_at_ms: Some(30)
                },
            ]
        );
        assert_eq!(&*got[0].subscription, "s");
        assert!(h.events(id("t"), 1, 7, 40).is_empty());
        assert!(h.events(id("other"), 0, 7, 40).is_empty());
    }

    #[test]
    fn a_topic_made_anew_under_the_same_name_starts_with_no_history() {
        let h = MessageHistory::new(1_000, 10);
        h.on_event(&ev("t", 1, 0, acked(1)));
        h.on_event(&ev("t", 2, 0, acked(1)));
        let new_id = Uuid::from_u128(99);
        assert!(h.events(new_id, 0, 1, 10).is_empty());
        let mut e = ev("t", 3, 5, acked(1));
        e.topic_id = new_id;
        h.on_event(&e);
        assert_eq!(h.events(new_id, 0, 3, 10).len(), 1);
        assert!(h.events(id("t"), 0, 3, 10).is_empty());
        assert_eq!(h.events(id("t"), 0, 1, 10).len(), 1);
    }

    #[test]
    fn an_event_stays_small() {
        // A time, an interned subscription, and the kind's counts and interned names.
        assert!(std::mem::size_of::<HistoryEvent>() <= 80);
    }

    #[test]
    fn a_disabled_store_keeps_nothing() {
        for h in [MessageHistory::new(0, 10), MessageHistory::new(10, 0)] {
            assert!(!h.enabled());
            h.on_event(&ev("t", 1, 0, acked(1)));
            assert_eq!(h.messages(), 0);
        }
    }

    #[test]
    fn names_no_event_uses_are_dropped_from_the_intern_table() {
        let h = MessageHistory::new(10, 1);
        for i in 0..5_000u64 {
            let consumer = format!("consumer-{i}");
            let kind = QueueEventKind::Delivered {
                consumer: &consumer,
                delivery_count: 1,
                ack_id: crate::queue::AckId {
                    partition: 0,
                    offset: i,
                    delivery: 1,
                },
                deadline_ms: 0,
            };
            h.on_event(&ev("t", i, i as i64, kind));
        }
        let names = lock(&h.store).names.len();
        assert!(names <= 2 * INTERN_MIN, "{names} names interned");
    }
}
