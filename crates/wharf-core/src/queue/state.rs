//! One subscription's delivery state, sans I/O: leases, acks, retries, key order and
//! dead-letter decisions, driven by a clock the caller passes in.
//!
//! Per partition the state is a read position `next` and a *window*: every offset below
//! `next` that is not done (acked, dead-lettered, or holding no data record) has an
//! [`Entry`] in the window. Offsets at or above `next` are not read yet. The durable part
//! ([`DurablePartition`]: floor, done offsets above it, delivery history, redriven
//! offsets) is mirrored here and every change to it is queued as an [`Op`] in
//! [`SubState::ops`]; the caller journals the ops, in order, before the answers that
//! depend on them go out (acks, seeks) or in the background (delivery counts).
//!
//! After a restart only the durable part is known: `next` starts at the floor (or the
//! lowest redriven offset), the window refills as consumers pull, and every lease is
//! gone, so each message not acked is delivered again, with its delivery count kept.
//!
//! For observers (`wharf_core::observe`), a state with [`SubState::observe`] set also
//! lists what happened to single messages (acked, nacked, lease expired, TTL expired,
//! reopened) in [`SubState::events`], for the caller to report once it has let go of
//! the lock; with it unset nothing is recorded.
//!
//! Invariants (checked by the tests):
//! - an offset is in at most one of: done, window, not yet read;
//! - a leased entry is in `leases` (by deadline) and counted in `in_flight` once;
//! - with `ordered_by_key`, only the lowest pending offset of a key may be leased.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use super::durable::{DurablePartition, Meta, Op};
use super::settings::SubscriptionSettings;

/// Most pending entries one partition keeps in memory. Reading stops there until some
/// are acked: a consumer holding this many unacked messages (or a run of delayed ones)
/// holds back newer ones in that partition.
pub const MAX_WINDOW: usize = 10_000;

/// Reason a dead letter gives when its ack deadline ran out on its last delivery.
pub const REASON_DEADLINE: &str = "ack_deadline_exceeded";
/// Reason a dead letter gives when its time to live ran out.
pub const REASON_EXPIRED: &str = "expired";

/// Names one delivery of one message: partition, offset and the delivery number. A
/// nack or extend with an older delivery number is stale (the message was delivered
/// again since); an ack is taken whatever the number, since the work was done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AckId {
    pub partition: u32,
    pub offset: u64,
    pub delivery: u32,
}

impl fmt::Display for AckId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}-{}", self.partition, self.offset, self.delivery)
    }
}

/// An ack id that is not `<partition>-<offset>-<delivery>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed ack id {0:?}: expected <partition>-<offset>-<delivery>, as pull returned it")]
pub struct BadAckId(pub String);

impl FromStr for AckId {
    type Err = BadAckId;
    fn from_str(s: &str) -> Result<AckId, BadAckId> {
        let bad = || BadAckId(s.chars().take(100).collect());
        let mut it = s.split('-');
        let mut next = || it.next().ok_or_else(bad);
        let (p, o, d) = (next()?, next()?, next()?);
        if it.next().is_some() {
            return Err(bad());
        }
        Ok(AckId {
            partition: p.parse().map_err(|_| bad())?,
            offset: o.parse().map_err(|_| bad())?,
            delivery: d.parse().map_err(|_| bad())?,
        })
    }
}

/// What the caller learned about a record it read from the log, for [`SubState::add_read`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadRecord {
    pub offset: u64,
    pub published_ms: i64,
    /// A hash of the key (ordered-by-key delivery); `None` for a record without key.
    pub key_hash: Option<u64>,
    /// The message's own delay (`wharf-delay-ms` header).
    pub delay_ms: Option<i64>,
    /// Time to live: the message's own `wharf-ttl-ms`, else the topic's `message.ttl.ms`.
    pub ttl_ms: Option<i64>,
}

/// A message handed to a consumer by [`SubState::select`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub ack_id: AckId,
    pub published_ms: i64,
    /// When it was leased (the `now` of the select).
    pub leased_ms: i64,
    /// When the lease ends unless acked, nacked or extended.
    pub deadline_ms: i64,
}

/// Something that happened to one message, listed in [`SubState::events`] when
/// [`SubState::observe`] is set. Deliveries are not listed: [`SubState::select`]
/// returns them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Happened {
    Acked {
        partition: u32,
        offset: u64,
        deliveries: u32,
    },
    /// Given back by its consumer: delivered again at `retry_at_ms`, or, when `None`,
    /// that was its last delivery and it goes to the dead-letter topic.
    Nacked {
        partition: u32,
        offset: u64,
        deliveries: u32,
        retry_at_ms: Option<i64>,
    },
    /// Its ack deadline passed ([`REASON_DEADLINE`]); if that was its last delivery it
    /// goes to the dead-letter topic.
    LeaseExpired {
        partition: u32,
        offset: u64,
        deliveries: u32,
    },
    /// Its time to live ran out: it goes to the dead-letter topic.
    Expired { partition: u32, offset: u64 },
    /// Done before, pending again (a redrive).
    Reopened { partition: u32, offset: u64 },
}

/// A message the caller must append to the dead-letter topic, then report with
/// [`SubState::dead_lettered`] or [`SubState::dead_letter_failed`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub partition: u32,
    pub offset: u64,
    pub meta: Meta,
}

/// What became of one id given to ack, nack or extend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Done,
    /// Acked or dead-lettered already: nothing to do.
    AlreadyDone,
    /// The message was delivered again since this id was handed out (nack, extend), or
    /// it is not leased now.
    Stale,
    /// No such message in this subscription.
    Unknown,
}

#[derive(Debug, Clone)]
struct Lease {
    consumer: Arc<str>,
    deadline_ms: i64,
}

#[derive(Debug, Clone)]
struct Entry {
    key: Option<u64>,
    published_ms: i64,
    /// Not deliverable before this (delay, retry backoff).
    available_ms: i64,
    expires_ms: Option<i64>,
    meta: Meta,
    lease: Option<Lease>,
    /// Handed to the caller to dead-letter; waiting for its answer.
    dead_lettering: bool,
}

#[derive(Debug, Default)]
struct Part {
    durable: DurablePartition,
    next: u64,
    window: BTreeMap<u64, Entry>,
    /// Ordered-by-key: the pending offsets of each key.
    keys: HashMap<u64, BTreeSet<u64>>,
}

impl Part {
    fn from_durable(durable: DurablePartition) -> Part {
        let next = durable
            .reopened
            .first()
            .copied()
            .unwrap_or(durable.floor)
            .min(durable.floor);
        Part {
            durable,
            next,
            ..Part::default()
        }
    }
}

/// Counters since the broker started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub delivered: u64,
    pub acked: u64,
    pub nacked: u64,
    pub dead_lettered: u64,
    /// Deliveries of a message that had been delivered before (after a nack, an
    /// expired lease or a restart).
    pub redelivered: u64,
}

/// The delivery state of one subscription.
#[derive(Debug)]
pub struct SubState {
    pub id: u64,
    pub settings: SubscriptionSettings,
    parts: Vec<Part>,
    /// Leases by deadline: (deadline, partition, offset).
    leases: BTreeSet<(i64, u32, u64)>,
    in_flight: HashMap<Arc<str>, u32>,
    /// The partition the next `select` starts from, so partitions take turns.
    turn: usize,
    rng: u64,
    /// Durable changes, in order, for the caller to journal.
    pub ops: Vec<Op>,
    /// Messages to append to the dead-letter topic.
    pub dead: Vec<DeadLetter>,
    pub counters: Counters,
    /// Whether to list what happens in `events` (somebody observes the queues).
    pub observe: bool,
    /// What happened to single messages, in order, for the caller to report.
    pub events: Vec<Happened>,
}

impl SubState {
    /// The state of subscription `id` as its durable part left it (after creation, or
    /// recovered after a restart): nothing leased, nothing read yet.
    pub fn new(
        id: u64,
        settings: SubscriptionSettings,
        durable: impl IntoIterator<Item = (u32, DurablePartition)>,
    ) -> SubState {
        let mut s = SubState {
            id,
            settings,
            parts: Vec::new(),
            leases: BTreeSet::new(),
            in_flight: HashMap::new(),
            turn: 0,
            rng: 0x9E37_79B9_7F4A_7C15 ^ id,
            ops: Vec::new(),
            dead: Vec::new(),
            counters: Counters::default(),
            observe: false,
            events: Vec::new(),
        };
        for (p, d) in durable {
            s.ensure_partitions(p as usize + 1);
            s.parts[p as usize] = Part::from_durable(d);
        }
        s
    }

    /// Grows to `n` partitions (a topic's partitions were added); new ones start at 0,
    /// since every message in them came after the subscription.
    pub fn ensure_partitions(&mut self, n: usize) {
        while self.parts.len() < n {
            self.parts.push(Part::default());
        }
    }

    pub fn partitions(&self) -> usize {
        self.parts.len()
    }

    /// Where the next read of partition `p` starts, if its window has room.
    pub fn read_position(&self, p: u32) -> Option<u64> {
        let part = self.parts.get(p as usize)?;
        (part.window.len() < MAX_WINDOW).then_some(part.next)
    }

    /// The floor of partition `p`: every offset below it is done, except redriven ones.
    pub fn floor(&self, p: u32) -> u64 {
        self.parts.get(p as usize).map_or(0, |x| x.durable.floor)
    }

    /// Takes in records read from partition `p` starting at `from`, up to `end` (one
    /// past the last offset the read covered). A read that no longer starts at the read
    /// position (another reader got there first) is ignored. Offsets in the range that
    /// hold no data record are done.
    pub fn add_read(&mut self, p: u32, from: u64, end: u64, records: &[ReadRecord]) {
        let ordered = self.settings.ordered_by_key;
        let delay = i64::try_from(self.settings.delay_ms).unwrap_or(i64::MAX);
        let id = self.id;
        let Some(part) = self.parts.get_mut(p as usize) else {
            return;
        };
        if part.next != from || end <= from {
            return;
        }
        let mut gaps = Vec::new();
        let mut expected = from;
        for r in records {
            if r.offset < expected {
                continue;
            }
            if r.offset > expected {
                gaps.push((expected, r.offset));
            }
            expected = r.offset + 1;
            if part.durable.is_done(r.offset) || part.window.contains_key(&r.offset) {
                continue;
            }
            let meta = part
                .durable
                .meta
                .get(&r.offset)
                .cloned()
                .unwrap_or_default();
            let delay = r.delay_ms.unwrap_or(delay).max(0);
            let entry = Entry {
                key: if ordered { r.key_hash } else { None },
                published_ms: r.published_ms,
                available_ms: r.published_ms.saturating_add(delay).max(meta.retry_at_ms),
                expires_ms: r
                    .ttl_ms
                    .filter(|t| *t > 0)
                    .map(|t| r.published_ms.saturating_add(t)),
                meta,
                lease: None,
                dead_lettering: false,
            };
            if let Some(k) = entry.key {
                part.keys.entry(k).or_default().insert(r.offset);
            }
            part.window.insert(r.offset, entry);
        }
        if end > expected {
            gaps.push((expected, end));
        }
        let floor = part.durable.floor;
        let ranges: Vec<(u64, u64)> = gaps
            .into_iter()
            .map(|(s, e)| (s.max(floor), e))
            .filter(|(s, e)| s < e)
            .collect();
        part.next = part.next.max(end);
        if !ranges.is_empty() {
            for (s, e) in &ranges {
                part.durable.mark_done(*s, *e);
            }
            self.ops.push(Op::Done {
                id,
                partition: p,
                ranges,
            });
        }
    }

    /// Partition `p`'s log now starts at `log_start` (retention deleted the rest):
    /// what was pending below it is gone and counts as done.
    pub fn skip_to(&mut self, p: u32, log_start: u64) {
        let id = self.id;
        let Some(part) = self.parts.get(p as usize) else {
            return;
        };
        if part.next >= log_start && part.durable.floor >= log_start {
            return;
        }
        let gone: Vec<u64> = part.window.range(..log_start).map(|(o, _)| *o).collect();
        for o in gone {
            self.remove(p, o);
        }
        let part = &mut self.parts[p as usize];
        let start = part.durable.floor;
        if start < log_start {
            part.durable.mark_done(start, log_start);
            self.ops.push(Op::Done {
                id,
                partition: p,
                ranges: vec![(start, log_start)],
            });
        }
        part.next = part.next.max(log_start);
    }

    fn jitter(&mut self, ms: u64) -> i64 {
        // xorshift64: only spreads retries apart, so any fair-looking sequence does.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let f = 0.8 + 0.4 * ((self.rng >> 11) as f64 / (1u64 << 53) as f64);
        i64::try_from((ms as f64 * f) as u64).unwrap_or(i64::MAX)
    }

    fn at_max(&self, meta: &Meta) -> bool {
        self.settings.max_deliveries > 0 && meta.deliveries >= self.settings.max_deliveries
    }

    /// Leases up to `max` available messages to `consumer` (fewer if it would pass
    /// `max_in_flight`), oldest first within a partition, partitions taking turns.
    /// Messages found expired or out of deliveries on the way go to [`SubState::dead`].
    pub fn select(&mut self, now: i64, consumer: &str, max: usize) -> Vec<Delivery> {
        let held = self.in_flight.get(consumer).copied().unwrap_or(0);
        let room = (self.settings.max_in_flight.saturating_sub(held)) as usize;
        let max = max.min(room);
        let mut out = Vec::new();
        let n = self.parts.len();
        if n == 0 || max == 0 {
            return out;
        }
        let consumer: Arc<str> = Arc::from(consumer);
        for i in 0..n {
            if out.len() >= max {
                break;
            }
            let p = (self.turn + i) % n;
            let mut picked = Vec::new();
            let mut to_dead = Vec::new();
            {
                let part = &self.parts[p];
                for (&o, e) in &part.window {
                    if picked.len() + out.len() >= max {
                        break;
                    }
                    if e.lease.is_some() || e.dead_lettering || e.available_ms > now {
                        continue;
                    }
                    if let Some(k) = e.key {
                        if part.keys.get(&k).and_then(|s| s.first()) != Some(&o) {
                            continue;
                        }
                    }
                    if e.expires_ms.is_some_and(|x| x <= now) {
                        to_dead.push((o, Some(REASON_EXPIRED)));
                    } else if self.at_max(&e.meta) {
                        to_dead.push((o, None));
                    } else {
                        picked.push(o);
                    }
                }
            }
            let p = p as u32;
            for (o, reason) in to_dead {
                if reason.is_some() {
                    self.happened(Happened::Expired {
                        partition: p,
                        offset: o,
                    });
                }
                self.send_to_dead(p, o, now, reason);
            }
            out.extend(
                picked
                    .into_iter()
                    .filter_map(|o| self.lease(p, o, now, &consumer)),
            );
        }
        self.turn = (self.turn + 1) % n;
        out
    }

    fn lease(&mut self, p: u32, o: u64, now: i64, consumer: &Arc<str>) -> Option<Delivery> {
        let deadline =
            now.saturating_add(i64::try_from(self.settings.ack_deadline_ms).unwrap_or(i64::MAX));
        let id = self.id;
        let e = self.parts.get_mut(p as usize)?.window.get_mut(&o)?;
        e.meta.deliveries += 1;
        e.meta.retry_at_ms = 0;
        e.lease = Some(Lease {
            consumer: Arc::clone(consumer),
            deadline_ms: deadline,
        });
        let delivery = Delivery {
            ack_id: AckId {
                partition: p,
                offset: o,
                delivery: e.meta.deliveries,
            },
            published_ms: e.published_ms,
            leased_ms: now,
            deadline_ms: deadline,
        };
        let meta = e.meta.clone();
        self.parts[p as usize].durable.meta.insert(o, meta.clone());
        self.ops.push(Op::Meta {
            id,
            partition: p,
            offset: o,
            meta,
        });
        self.leases.insert((deadline, p, o));
        *self.in_flight.entry(Arc::clone(consumer)).or_default() += 1;
        self.counters.delivered += 1;
        if delivery.ack_id.delivery > 1 {
            self.counters.redelivered += 1;
        }
        Some(delivery)
    }

    /// Drops an entry's lease, if any, from the indexes.
    fn unlease(&mut self, p: u32, o: u64) {
        let Some(e) = self.parts[p as usize].window.get_mut(&o) else {
            return;
        };
        if let Some(l) = e.lease.take() {
            self.leases.remove(&(l.deadline_ms, p, o));
            if let Some(n) = self.in_flight.get_mut(&l.consumer) {
                *n -= 1;
                if *n == 0 {
                    self.in_flight.remove(&l.consumer);
                }
            }
        }
    }

    fn happened(&mut self, h: Happened) {
        if self.observe {
            self.events.push(h);
        }
    }

    /// Removes an entry from the window and every index.
    fn remove(&mut self, p: u32, o: u64) -> Option<Entry> {
        self.unlease(p, o);
        let part = &mut self.parts[p as usize];
        let e = part.window.remove(&o)?;
        if let Some(k) = e.key {
            if let Some(set) = part.keys.get_mut(&k) {
                set.remove(&o);
                if set.is_empty() {
                    part.keys.remove(&k);
                }
            }
        }
        part.durable.meta.remove(&o);
        Some(e)
    }

    fn record_failure(e: &mut Entry, now: i64, reason: &str) {
        if e.meta.first_failure_ms == 0 {
            e.meta.first_failure_ms = now;
        }
        e.meta.last_failure_ms = now;
        e.meta.reason = reason.to_string();
    }

    fn send_to_dead(&mut self, p: u32, o: u64, now: i64, reason: Option<&str>) {
        self.unlease(p, o);
        let Some(e) = self.parts[p as usize].window.get_mut(&o) else {
            return;
        };
        if let Some(reason) = reason {
            Self::record_failure(e, now, reason);
        }
        e.dead_lettering = true;
        self.dead.push(DeadLetter {
            partition: p,
            offset: o,
            meta: e.meta.clone(),
        });
    }

    /// Acks messages: each is done, whatever delivery the id names.
    pub fn ack(&mut self, ids: &[AckId]) -> Vec<Outcome> {
        let mut done: BTreeMap<u32, Vec<(u64, u64)>> = BTreeMap::new();
        let out = ids
            .iter()
            .map(|id| {
                let (p, o) = (id.partition, id.offset);
                let Some(part) = self.parts.get(p as usize) else {
                    return Outcome::Unknown;
                };
                match part.window.get(&o) {
                    Some(e) if !e.dead_lettering => {
                        let deliveries = e.meta.deliveries;
                        self.remove(p, o);
                        self.happened(Happened::Acked {
                            partition: p,
                            offset: o,
                            deliveries,
                        });
                        self.parts[p as usize].durable.mark_done(o, o + 1);
                        done.entry(p).or_default().push((o, o + 1));
                        self.counters.acked += 1;
                        Outcome::Done
                    }
                    Some(_) => Outcome::AlreadyDone,
                    None if o < part.next && part.durable.is_done(o) => Outcome::AlreadyDone,
                    None => Outcome::Unknown,
                }
            })
            .collect();
        for (partition, mut ranges) in done {
            ranges.sort_unstable();
            let mut merged: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
            for (s, e) in ranges {
                match merged.last_mut() {
                    Some(last) if last.1 >= s => last.1 = last.1.max(e),
                    _ => merged.push((s, e)),
                }
            }
            self.ops.push(Op::Done {
                id: self.id,
                partition,
                ranges: merged,
            });
        }
        out
    }

    /// The lease named by `id`, if it is the current delivery.
    fn current(&self, id: &AckId) -> Result<(), Outcome> {
        let part = self
            .parts
            .get(id.partition as usize)
            .ok_or(Outcome::Unknown)?;
        match part.window.get(&id.offset) {
            Some(e) if e.lease.is_some() && e.meta.deliveries == id.delivery => Ok(()),
            Some(_) => Err(Outcome::Stale),
            None if id.offset < part.next && part.durable.is_done(id.offset) => {
                Err(Outcome::AlreadyDone)
            }
            None => Err(Outcome::Unknown),
        }
    }

    /// Gives messages back: each is delivered again after `delay_ms`, or after the
    /// subscription's backoff, or goes to the dead-letter topic once out of deliveries.
    pub fn nack(
        &mut self,
        now: i64,
        ids: &[AckId],
        reason: &str,
        delay_ms: Option<u64>,
    ) -> Vec<Outcome> {
        ids.iter()
            .map(|id| {
                if let Err(o) = self.current(id) {
                    return o;
                }
                self.counters.nacked += 1;
                self.fail(id.partition, id.offset, now, reason, delay_ms);
                Outcome::Done
            })
            .collect()
    }

    fn fail(&mut self, p: u32, o: u64, now: i64, reason: &str, delay_ms: Option<u64>) {
        self.unlease(p, o);
        let failures = {
            let Some(e) = self.parts[p as usize].window.get(&o) else {
                return;
            };
            if self.at_max(&e.meta) {
                let deliveries = e.meta.deliveries;
                self.happened(Happened::Nacked {
                    partition: p,
                    offset: o,
                    deliveries,
                    retry_at_ms: None,
                });
                self.send_to_dead(p, o, now, Some(reason));
                return;
            }
            e.meta.deliveries
        };
        let wait = match delay_ms {
            Some(d) => i64::try_from(d).unwrap_or(i64::MAX),
            None => {
                let base = self.settings.backoff.base_delay_ms(failures);
                self.jitter(base)
            }
        };
        let id = self.id;
        let Some(e) = self.parts[p as usize].window.get_mut(&o) else {
            return;
        };
        Self::record_failure(e, now, reason);
        e.available_ms = now.saturating_add(wait);
        e.meta.retry_at_ms = e.available_ms;
        let meta = e.meta.clone();
        self.happened(Happened::Nacked {
            partition: p,
            offset: o,
            deliveries: meta.deliveries,
            retry_at_ms: Some(meta.retry_at_ms),
        });
        self.parts[p as usize].durable.meta.insert(o, meta.clone());
        self.ops.push(Op::Meta {
            id,
            partition: p,
            offset: o,
            meta,
        });
    }

    /// Moves the deadline of current leases to `deadline_ms` from now.
    pub fn extend(&mut self, now: i64, ids: &[AckId], deadline_ms: u64) -> Vec<Outcome> {
        let deadline = now.saturating_add(i64::try_from(deadline_ms).unwrap_or(i64::MAX));
        ids.iter()
            .map(|id| {
                if let Err(o) = self.current(id) {
                    return o;
                }
                let (p, o) = (id.partition, id.offset);
                if let Some(l) = self.parts[p as usize]
                    .window
                    .get_mut(&o)
                    .and_then(|e| e.lease.as_mut())
                {
                    self.leases.remove(&(l.deadline_ms, p, o));
                    l.deadline_ms = deadline;
                    self.leases.insert((deadline, p, o));
                }
                Outcome::Done
            })
            .collect()
    }

    /// Ends the leases whose deadline has passed: each message is available again at
    /// once, or goes to the dead-letter topic if that was its last delivery. Returns how
    /// many leases ended.
    pub fn expire(&mut self, now: i64) -> usize {
        let due: Vec<(i64, u32, u64)> = self
            .leases
            .range(..=(now, u32::MAX, u64::MAX))
            .copied()
            .collect();
        for &(_, p, o) in &due {
            self.unlease(p, o);
            let (at_max, deliveries) = match self.parts[p as usize].window.get_mut(&o) {
                Some(e) => {
                    Self::record_failure(e, now, REASON_DEADLINE);
                    (
                        self.settings.max_deliveries > 0
                            && e.meta.deliveries >= self.settings.max_deliveries,
                        e.meta.deliveries,
                    )
                }
                None => continue,
            };
            self.happened(Happened::LeaseExpired {
                partition: p,
                offset: o,
                deliveries,
            });
            if at_max {
                self.send_to_dead(p, o, now, None);
            } else if let Some(e) = self.parts[p as usize].window.get_mut(&o) {
                e.available_ms = now;
                let meta = e.meta.clone();
                self.parts[p as usize].durable.meta.insert(o, meta.clone());
                self.ops.push(Op::Meta {
                    id: self.id,
                    partition: p,
                    offset: o,
                    meta,
                });
            }
        }
        due.len()
    }

    /// A dead letter is durable in the dead-letter topic: the message is done. Returns
    /// whether it was pending here (a seek may have moved past it meanwhile).
    pub fn dead_lettered(&mut self, p: u32, o: u64) -> bool {
        if self.remove(p, o).is_some() {
            self.parts[p as usize].durable.mark_done(o, o + 1);
            self.ops.push(Op::Done {
                id: self.id,
                partition: p,
                ranges: vec![(o, o + 1)],
            });
            self.counters.dead_lettered += 1;
            true
        } else {
            false
        }
    }

    /// Appending a dead letter failed: try again in a second (the message stays pending
    /// and out of deliveries, so the next look sends it to the dead-letter topic again).
    pub fn dead_letter_failed(&mut self, p: u32, o: u64, now: i64) {
        if let Some(e) = self
            .parts
            .get_mut(p as usize)
            .and_then(|x| x.window.get_mut(&o))
        {
            e.dead_lettering = false;
            e.available_ms = now.saturating_add(1_000);
        }
    }

    /// A message at `o` whose record is gone from the log (retention) or unreadable:
    /// done, without delivery.
    pub fn drop_message(&mut self, p: u32, o: u64) {
        let _ = self.dead_lettered(p, o);
    }

    /// Moves partition `p`'s floor to `offset`: everything below is done, everything at
    /// or above pending and undelivered. Leases in the partition end.
    pub fn seek(&mut self, p: u32, offset: u64) {
        if p as usize >= self.parts.len() {
            self.ensure_partitions(p as usize + 1);
        }
        let held: Vec<u64> = self.parts[p as usize].window.keys().copied().collect();
        for o in held {
            self.remove(p, o);
        }
        let part = &mut self.parts[p as usize];
        part.durable.seek(offset);
        part.window.clear();
        part.keys.clear();
        part.next = offset;
        self.ops.push(Op::Seek {
            id: self.id,
            partition: p,
            offset,
        });
    }

    /// Makes done offsets of partition `p` pending again with no delivery history
    /// (redrive). Returns how many were done and are now pending.
    pub fn reopen(&mut self, p: u32, offsets: &[u64]) -> usize {
        self.ensure_partitions(p as usize + 1);
        let part = &mut self.parts[p as usize];
        let mut reopened = Vec::new();
        for &o in offsets {
            if part.durable.is_done(o) && !reopened.contains(&o) {
                part.durable.reopen(o);
                part.next = part.next.min(o);
                reopened.push(o);
            }
        }
        let n = reopened.len();
        if self.observe {
            for &o in &reopened {
                self.events.push(Happened::Reopened {
                    partition: p,
                    offset: o,
                });
            }
        }
        if n > 0 {
            self.ops.push(Op::Reopen {
                id: self.id,
                partition: p,
                offsets: reopened,
            });
        }
        n
    }

    /// When, after `now`, something next becomes deliverable (a delay or backoff ends)
    /// or a lease runs out, if anything waits for that.
    pub fn next_wakeup(&self, now: i64) -> Option<i64> {
        let lease = self.leases.first().map(|l| l.0);
        let waiting = self
            .parts
            .iter()
            .flat_map(|p| {
                p.window.iter().filter(move |(o, e)| {
                    // A message held back by an earlier one of its key waits for that
                    // one, not for a time.
                    e.key
                        .is_none_or(|k| p.keys.get(&k).and_then(|s| s.first()) == Some(*o))
                })
            })
            .map(|(_, e)| e)
            .filter(|e| e.lease.is_none() && !e.dead_lettering && e.available_ms > now)
            .map(|e| e.available_ms)
            .min();
        match (lease, waiting) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Unacked messages of partition `p` whose log ends at `log_end`: everything from the
    /// floor up, less what is done above it, plus redriven ones.
    pub fn backlog(&self, p: u32, log_end: u64) -> u64 {
        let Some(part) = self.parts.get(p as usize) else {
            return log_end;
        };
        let d = &part.durable;
        log_end.saturating_sub(d.floor).saturating_sub(d.done.len()) + d.reopened.len() as u64
    }

    /// Messages leased now.
    pub fn in_flight(&self) -> usize {
        self.leases.len()
    }

    /// Publish time of the oldest pending message this state has read, if any.
    pub fn oldest_pending_ms(&self) -> Option<i64> {
        self.parts
            .iter()
            .filter_map(|p| p.window.values().next().map(|e| e.published_ms))
            .min()
    }

    /// Whether partition `p` has pending messages not read yet (`next` below `log_end`).
    pub fn unread(&self, p: u32, log_end: u64) -> bool {
        self.parts.get(p as usize).is_some_and(|x| x.next < log_end)
    }
}

#[cfg(test)]
mod tests;
