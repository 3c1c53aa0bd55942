//! The durable state of queue subscriptions: which subscriptions exist, and per
//! partition which offsets are done, which are pending again, and the delivery history
//! of pending ones. Written through a [`crate::journal`] journal.
//!
//! ```text
//! <data-dir>/queues/subscriptions.journal    header, then records appended one batch at a time
//!                  /subscriptions.snapshot   header, the compacted state as records, an End op
//!                  /subscriptions.snapshot.tmp, subscriptions.journal.tmp   (removed on open)
//!
//! header:  | magic (8 bytes)                   | version u32 LE = 1 |
//!            "WHFQJRN1" (journal), "WHFQSNP1" (snapshot)
//!
//! record:  | len u32 LE | crc32c(payload) u32 LE | payload (len bytes)                |
//! payload: | op count u32 LE | op | op | ...                                         |
//! op:      | tag u8 | fields; integers LE, strings u32 LE length + UTF-8, uuids 16   |
//!          | bytes, vecs u32 LE count + items                                        |
//!   1 Create        id u64, topic, name, topic id uuid, settings (JSON), created ms i64,
//!                   floors vec<u64> (index = partition)
//!   2 Settings      id u64, settings (JSON)
//!   3 Delete        id u64
//!   4 Done          id u64, partition u32, ranges vec<(start u64, end u64)>
//!   5 Meta          id u64, partition u32, offset u64, deliveries u32,
//!                   first failure ms i64, last failure ms i64, retry at ms i64, reason
//!   6 Reopen        id u64, partition u32, offsets vec<u64>
//!   7 Seek          id u64, partition u32, offset u64
//!   8 RedriveCursor id u64, dead-letter partition u32, offset u64
//! 255 End           record count u64 (snapshot only: its last op)
//! ```
//!
//! Every op is a blind write of what it names, so replaying a journal over a snapshot
//! that already contains it (a crash during compaction) ends in the same state.
//!
//! Per partition the state is a floor (every offset below it is done, except the
//! `reopened` ones) and, at and above it, the `done` offsets; the floor advances over
//! done offsets as soon as they join it. A snapshot writes each subscription as a Create
//! with no partitions, its redrive cursors, and per partition a Seek to its floor
//! followed by its done ranges, reopened offsets and delivery histories, split into
//! records of at most [`SNAPSHOT_RECORD_OPS`] ops.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use uuid::Uuid;

use super::ranges::RangeSet;
use crate::error::Result;
use crate::journal::{self, put_count, put_str, Durable, JournalFiles, OnDurable, Reader};

/// Folder of the queue subscriptions' files, under the data directory.
pub const QUEUES_DIR: &str = "queues";
pub const JOURNAL_FILE: &str = "subscriptions.journal";
pub const SNAPSHOT_FILE: &str = "subscriptions.snapshot";

const JOURNAL_MAGIC: &[u8; 8] = b"WHFQJRN1";
const SNAPSHOT_MAGIC: &[u8; 8] = b"WHFQSNP1";

/// At most this many ops go in one snapshot record.
pub const SNAPSHOT_RECORD_OPS: usize = 256;
/// At most this many ranges (in a Done) or offsets (in a Reopen) go in one snapshot op.
const SNAPSHOT_OP_ITEMS: usize = 1024;

/// One change to the durable state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Creates (or re-creates, resetting all its state) subscription `id`.
    Create {
        id: u64,
        topic: String,
        name: String,
        topic_id: Uuid,
        /// JSON, opaque here.
        settings: String,
        created_ms: i64,
        /// Start offset per partition, index = partition.
        floors: Vec<u64>,
    },
    /// Replaces the settings JSON.
    Settings {
        id: u64,
        settings: String,
    },
    Delete {
        id: u64,
    },
    /// Offsets of `partition` that are done (acked or dead-lettered, or skipped):
    /// half-open ranges.
    Done {
        id: u64,
        partition: u32,
        ranges: Vec<(u64, u64)>,
    },
    /// Delivery history of one pending offset, replacing what was there.
    Meta {
        id: u64,
        partition: u32,
        offset: u64,
        meta: Meta,
    },
    /// Offsets made pending again (redrive), with their history cleared; they may lie
    /// below the floor.
    Reopen {
        id: u64,
        partition: u32,
        offsets: Vec<u64>,
    },
    /// Sets the floor of `partition` to `offset`: below done, at and above pending;
    /// clears done, meta and reopened of the partition.
    Seek {
        id: u64,
        partition: u32,
        offset: u64,
    },
    /// How far this subscription's redrive has read dead-letter partition
    /// `dlq_partition`.
    RedriveCursor {
        id: u64,
        dlq_partition: u32,
        offset: u64,
    },
}

/// The delivery history of one pending offset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Meta {
    pub deliveries: u32,
    /// 0 = none.
    pub first_failure_ms: i64,
    pub last_failure_ms: i64,
    /// 0 = none.
    pub retry_at_ms: i64,
    pub reason: String,
}

/// What is durable about one subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DurableSubscription {
    pub id: u64,
    pub topic: String,
    pub name: String,
    pub topic_id: Uuid,
    pub settings: String,
    pub created_ms: i64,
    /// A partition missing here behaves as a default one (floor 0, nothing done).
    pub partitions: BTreeMap<u32, DurablePartition>,
    /// Dead-letter partition → how far redrive has read it.
    pub redrive_cursors: BTreeMap<u32, u64>,
}

/// What is durable about one partition of a subscription.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DurablePartition {
    /// Offsets below are done (except `reopened` ones), at and above pending unless done.
    pub floor: u64,
    /// Offsets >= floor that are done. Never holds a range starting at the floor.
    pub done: RangeSet,
    /// Delivery history of pending offsets.
    pub meta: BTreeMap<u64, Meta>,
    /// Offsets < floor that are pending again.
    pub reopened: BTreeSet<u64>,
}

/// The durable state: every subscription the journal knows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DurableSubscriptions {
    pub subs: BTreeMap<u64, DurableSubscription>,
    /// Max id seen + 1 (by Create and Delete, even of an id not known).
    pub next_id: u64,
}

impl DurableSubscription {
    /// The partition's state, created (floor 0) if missing.
    pub fn partition_mut(&mut self, partition: u32) -> &mut DurablePartition {
        self.partitions.entry(partition).or_default()
    }
}

impl DurablePartition {
    /// Whether `offset` is done: below the floor and not reopened, or in `done`.
    pub fn is_done(&self, offset: u64) -> bool {
        if offset < self.floor {
            !self.reopened.contains(&offset)
        } else {
            self.done.contains(offset)
        }
    }

    /// Marks `start..end` done (dropping their history) and moves the floor past
    /// every done offset at its bottom.
    pub fn mark_done(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        // Reopened offsets all lie below the floor; done ones at or above it.
        let reopened: Vec<u64> = self
            .reopened
            .range(start..end.min(self.floor).max(start))
            .copied()
            .collect();
        for o in reopened {
            self.reopened.remove(&o);
        }
        self.done.insert_range(start.max(self.floor), end);
        let metas: Vec<u64> = self.meta.range(start..end).map(|(&o, _)| o).collect();
        for o in metas {
            self.meta.remove(&o);
        }
        self.advance_floor();
    }

    fn advance_floor(&mut self) {
        while let Some(end) = self.done.pop_first_if_starts_at(self.floor) {
            self.floor = end;
        }
    }

    /// Makes a done offset pending again, with no history.
    pub fn reopen(&mut self, offset: u64) {
        if offset < self.floor {
            self.reopened.insert(offset);
        } else {
            self.done.remove(offset);
        }
        self.meta.remove(&offset);
    }

    /// Puts the floor at `offset`: below it done, from it pending, no history.
    pub fn seek(&mut self, offset: u64) {
        self.floor = offset;
        self.done.clear();
        self.meta.clear();
        self.reopened.clear();
    }
}

impl DurableSubscriptions {
    fn see_id(&mut self, id: u64) {
        self.next_id = self.next_id.max(id.saturating_add(1));
    }

    fn partition(&mut self, id: u64, partition: u32) -> Option<&mut DurablePartition> {
        Some(self.subs.get_mut(&id)?.partition_mut(partition))
    }

    /// Applies ops in order. Ops naming an unknown subscription are ignored (but for
    /// Create and Delete raising `next_id`).
    pub fn apply_ops(&mut self, ops: &[Op]) {
        for op in ops {
            self.apply_op(op);
        }
    }

    fn apply_op(&mut self, op: &Op) {
        match op {
            Op::Create {
                id,
                topic,
                name,
                topic_id,
                settings,
                created_ms,
                floors,
            } => {
                self.see_id(*id);
                let partitions = (0u32..)
                    .zip(floors)
                    .map(|(p, &floor)| {
                        (
                            p,
                            DurablePartition {
                                floor,
                                ..DurablePartition::default()
                            },
                        )
                    })
                    .collect();
                self.subs.insert(
                    *id,
                    DurableSubscription {
                        id: *id,
                        topic: topic.clone(),
                        name: name.clone(),
                        topic_id: *topic_id,
                        settings: settings.clone(),
                        created_ms: *created_ms,
                        partitions,
                        redrive_cursors: BTreeMap::new(),
                    },
                );
            }
            Op::Settings { id, settings } => {
                if let Some(s) = self.subs.get_mut(id) {
                    s.settings.clone_from(settings);
                }
            }
            Op::Delete { id } => {
                self.see_id(*id);
                self.subs.remove(id);
            }
            Op::Done {
                id,
                partition,
                ranges,
            } => {
                if let Some(p) = self.partition(*id, *partition) {
                    for &(start, end) in ranges {
                        p.mark_done(start, end);
                    }
                    p.advance_floor();
                }
            }
            Op::Meta {
                id,
                partition,
                offset,
                meta,
            } => {
                if let Some(p) = self.partition(*id, *partition) {
                    if !p.is_done(*offset) {
                        p.meta.insert(*offset, meta.clone());
                    }
                }
            }
            Op::Reopen {
                id,
                partition,
                offsets,
            } => {
                if let Some(p) = self.partition(*id, *partition) {
                    for &o in offsets {
                        p.reopen(o);
                    }
                }
            }
            Op::Seek {
                id,
                partition,
                offset,
            } => {
                if let Some(p) = self.partition(*id, *partition) {
                    p.seek(*offset);
                }
            }
            Op::RedriveCursor {
                id,
                dlq_partition,
                offset,
            } => {
                if let Some(s) = self.subs.get_mut(id) {
                    s.redrive_cursors.insert(*dlq_partition, *offset);
                }
            }
        }
    }

    /// The ops that rebuild this state from an empty one, in order.
    fn snapshot_ops(&self) -> Vec<Op> {
        let mut ops = Vec::new();
        let max_live = self.subs.keys().next_back().map(|id| id.saturating_add(1));
        if self.next_id > max_live.unwrap_or(0) {
            // The highest id is gone: a Delete of it keeps `next_id`.
            ops.push(Op::Delete {
                id: self.next_id - 1,
            });
        }
        for s in self.subs.values() {
            ops.push(Op::Create {
                id: s.id,
                topic: s.topic.clone(),
                name: s.name.clone(),
                topic_id: s.topic_id,
                settings: s.settings.clone(),
                created_ms: s.created_ms,
                floors: Vec::new(),
            });
            ops.extend(
                s.redrive_cursors
                    .iter()
                    .map(|(&q, &offset)| Op::RedriveCursor {
                        id: s.id,
                        dlq_partition: q,
                        offset,
                    }),
            );
            for (&partition, p) in &s.partitions {
                ops.push(Op::Seek {
                    id: s.id,
                    partition,
                    offset: p.floor,
                });
                let ranges: Vec<(u64, u64)> = p.done.iter().collect();
                ops.extend(ranges.chunks(SNAPSHOT_OP_ITEMS).map(|c| Op::Done {
                    id: s.id,
                    partition,
                    ranges: c.to_vec(),
                }));
                let reopened: Vec<u64> = p.reopened.iter().copied().collect();
                ops.extend(reopened.chunks(SNAPSHOT_OP_ITEMS).map(|c| Op::Reopen {
                    id: s.id,
                    partition,
                    offsets: c.to_vec(),
                }));
                ops.extend(p.meta.iter().map(|(&offset, meta)| Op::Meta {
                    id: s.id,
                    partition,
                    offset,
                    meta: meta.clone(),
                }));
            }
        }
        ops
    }
}

// ---- encoding -------------------------------------------------------------------------

const TAG_CREATE: u8 = 1;
const TAG_SETTINGS: u8 = 2;
const TAG_DELETE: u8 = 3;
const TAG_DONE: u8 = 4;
const TAG_META: u8 = 5;
const TAG_REOPEN: u8 = 6;
const TAG_SEEK: u8 = 7;
const TAG_REDRIVE_CURSOR: u8 = 8;
const TAG_END: u8 = 0xFF;

fn put_u64(b: &mut Vec<u8>, v: u64) {
    b.extend(v.to_le_bytes());
}

fn encode_op(b: &mut Vec<u8>, op: &Op) {
    match op {
        Op::Create {
            id,
            topic,
            name,
            topic_id,
            settings,
            created_ms,
            floors,
        } => {
            b.push(TAG_CREATE);
            put_u64(b, *id);
            put_str(b, topic);
            put_str(b, name);
            b.extend(topic_id.as_bytes());
            put_str(b, settings);
            b.extend(created_ms.to_le_bytes());
            put_count(b, floors.len());
            for &f in floors {
                put_u64(b, f);
            }
        }
        Op::Settings { id, settings } => {
            b.push(TAG_SETTINGS);
            put_u64(b, *id);
            put_str(b, settings);
        }
        Op::Delete { id } => {
            b.push(TAG_DELETE);
            put_u64(b, *id);
        }
        Op::Done {
            id,
            partition,
            ranges,
        } => {
            b.push(TAG_DONE);
            put_u64(b, *id);
            b.extend(partition.to_le_bytes());
            put_count(b, ranges.len());
            for &(start, end) in ranges {
                put_u64(b, start);
                put_u64(b, end);
            }
        }
        Op::Meta {
            id,
            partition,
            offset,
            meta,
        } => {
            b.push(TAG_META);
            put_u64(b, *id);
            b.extend(partition.to_le_bytes());
            put_u64(b, *offset);
            b.extend(meta.deliveries.to_le_bytes());
            b.extend(meta.first_failure_ms.to_le_bytes());
            b.extend(meta.last_failure_ms.to_le_bytes());
            b.extend(meta.retry_at_ms.to_le_bytes());
            put_str(b, &meta.reason);
        }
        Op::Reopen {
            id,
            partition,
            offsets,
        } => {
            b.push(TAG_REOPEN);
            put_u64(b, *id);
            b.extend(partition.to_le_bytes());
            put_count(b, offsets.len());
            for &o in offsets {
                put_u64(b, o);
            }
        }
        Op::Seek {
            id,
            partition,
            offset,
        } => {
            b.push(TAG_SEEK);
            put_u64(b, *id);
            b.extend(partition.to_le_bytes());
            put_u64(b, *offset);
        }
        Op::RedriveCursor {
            id,
            dlq_partition,
            offset,
        } => {
            b.push(TAG_REDRIVE_CURSOR);
            put_u64(b, *id);
            b.extend(dlq_partition.to_le_bytes());
            put_u64(b, *offset);
        }
    }
}

/// `count` u64s, the count bounded by what the payload can hold.
fn u64s(r: &mut Reader<'_>) -> Option<Vec<u64>> {
    let n = r.count(8)?;
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        v.push(r.u64()?);
    }
    Some(v)
}

fn decode_op(tag: u8, r: &mut Reader<'_>) -> Option<Op> {
    Some(match tag {
        TAG_CREATE => Op::Create {
            id: r.u64()?,
            topic: r.string()?,
            name: r.string()?,
            topic_id: Uuid::from_bytes(r.bytes::<16>()?),
            settings: r.string()?,
            created_ms: r.i64()?,
            floors: u64s(r)?,
        },
        TAG_SETTINGS => Op::Settings {
            id: r.u64()?,
            settings: r.string()?,
        },
        TAG_DELETE => Op::Delete { id: r.u64()? },
        TAG_DONE => {
            let id = r.u64()?;
            let partition = r.u32()?;
            let n = r.count(16)?;
            let mut ranges = Vec::with_capacity(n);
            for _ in 0..n {
                ranges.push((r.u64()?, r.u64()?));
            }
            Op::Done {
                id,
                partition,
                ranges,
            }
        }
        TAG_META => Op::Meta {
            id: r.u64()?,
            partition: r.u32()?,
            offset: r.u64()?,
            meta: Meta {
                deliveries: r.u32()?,
                first_failure_ms: r.i64()?,
                last_failure_ms: r.i64()?,
                retry_at_ms: r.i64()?,
                reason: r.string()?,
            },
        },
        TAG_REOPEN => Op::Reopen {
            id: r.u64()?,
            partition: r.u32()?,
            offsets: u64s(r)?,
        },
        TAG_SEEK => Op::Seek {
            id: r.u64()?,
            partition: r.u32()?,
            offset: r.u64()?,
        },
        TAG_REDRIVE_CURSOR => Op::RedriveCursor {
            id: r.u64()?,
            dlq_partition: r.u32()?,
            offset: r.u64()?,
        },
        _ => return None,
    })
}

impl Durable for DurableSubscriptions {
    type Op = Op;

    const FILES: JournalFiles = JournalFiles {
        dir: QUEUES_DIR,
        journal: JOURNAL_FILE,
        snapshot: SNAPSHOT_FILE,
        journal_magic: JOURNAL_MAGIC,
        snapshot_magic: SNAPSHOT_MAGIC,
        end_tag: TAG_END,
        thread: "wharf-queues-journal",
        what: "subscriptions journal",
        kind: "queue subscriptions",
    };

    fn encode_op(buf: &mut Vec<u8>, op: &Op) {
        encode_op(buf, op);
    }

    fn decode_op(tag: u8, r: &mut Reader<'_>) -> Option<Op> {
        decode_op(tag, r)
    }

    fn apply(&mut self, ops: &[Op]) {
        self.apply_ops(ops);
    }

    fn snapshot_records(&self) -> Vec<Vec<Op>> {
        self.snapshot_ops()
            .chunks(SNAPSHOT_RECORD_OPS)
            .map(<[Op]>::to_vec)
            .collect()
    }

    fn item_count(&self) -> usize {
        self.subs.len()
    }
}

/// The subscriptions journal's recovered state.
pub type Recovered = journal::Recovered<DurableSubscriptions>;
/// The subscriptions journal's writer.
pub type Journal = journal::Journal<DurableSubscriptions>;

/// Opens (or creates) `<data_dir>/queues`, loads the snapshot, replays the journal and
/// cuts its torn tail.
pub fn open(data_dir: &Path) -> Result<Recovered> {
    journal::open(data_dir)
}

/// Starts the writer thread over a recovered journal; it compacts once the journal
/// outgrows `compact_bytes` (and the last snapshot). `on_durable` sees each batch once
/// it is durable, in journal order, before its submitter is told. With `lazy_sync`,
/// records nobody waits for are synced with the next one somebody waits for, or that
/// long after they were written (see [`journal::Journal::start`]).
pub fn start(
    data_dir: &Path,
    recovered: Recovered,
    compact_bytes: u64,
    on_durable: Option<OnDurable<Op>>,
    lazy_sync: Option<std::time::Duration>,
) -> Result<Journal> {
    Journal::start(data_dir, recovered, compact_bytes, on_durable, lazy_sync)
}

/// Frames ops as one record, as the journal writes it (its length is what
/// [`journal::MAX_RECORD_BYTES`] bounds).
pub fn encode_record(ops: &[Op]) -> Vec<u8> {
    journal::encode_record::<DurableSubscriptions>(ops)
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::sync::{Arc, Mutex};

    use proptest::prelude::*;
    use tokio::sync::oneshot;

    use super::*;
    use crate::journal::{header, Decoded, HEADER_LEN};

    const TOPIC_ID: Uuid = Uuid::from_u128(0x0011_2233_4455_6677_8899_aabb_ccdd_eeff);

    fn scan(buf: &[u8]) -> (Vec<Decoded<Op>>, usize, Option<&'static str>) {
        crate::journal::scan::<DurableSubscriptions>(buf)
    }

    fn create(id: u64, floors: Vec<u64>) -> Op {
        Op::Create {
            id,
            topic: "orders".into(),
            name: "billing".into(),
            topic_id: TOPIC_ID,
            settings: r#"{"max_deliveries":5}"#.into(),
            created_ms: 1_700_000_000_000,
            floors,
        }
    }

    fn done(id: u64, partition: u32, ranges: &[(u64, u64)]) -> Op {
        Op::Done {
            id,
            partition,
            ranges: ranges.to_vec(),
        }
    }

    fn meta_op(id: u64, partition: u32, offset: u64, deliveries: u32) -> Op {
        Op::Meta {
            id,
            partition,
            offset,
            meta: Meta {
                deliveries,
                first_failure_ms: 10,
                last_failure_ms: 20,
                retry_at_ms: 30,
                reason: "timeout".into(),
            },
        }
    }

    fn reopen(id: u64, partition: u32, offsets: &[u64]) -> Op {
        Op::Reopen {
            id,
            partition,
            offsets: offsets.to_vec(),
        }
    }

    fn state_of(records: &[Vec<Op>]) -> DurableSubscriptions {
        let mut s = DurableSubscriptions::default();
        for ops in records {
            s.apply_ops(ops);
        }
        s
    }

    fn part(s: &DurableSubscriptions, id: u64, partition: u32) -> &DurablePartition {
        &s.subs[&id].partitions[&partition]
    }

    fn done_ranges(p: &DurablePartition) -> Vec<(u64, u64)> {
        p.done.iter().collect()
    }

    fn rebuilt(s: &DurableSubscriptions) -> DurableSubscriptions {
        state_of(&s.snapshot_records())
    }

    fn every_op() -> Vec<Op> {
        vec![
            create(1, vec![0, 7, u64::MAX]),
            create(2, vec![]),
            Op::Settings {
                id: 1,
                settings: "{\"name\":\"é\"}".into(),
            },
            Op::Delete { id: 2 },
            done(1, 0, &[(0, 3), (5, 9)]),
            done(1, 1, &[]),
            meta_op(1, 0, 4, 2),
            reopen(1, 1, &[1, 2, 40]),
            Op::Seek {
                id: 1,
                partition: 2,
                offset: 99,
            },
            Op::RedriveCursor {
                id: 1,
                dlq_partition: 3,
                offset: 1234,
            },
        ]
    }

    #[test]
    fn every_op_round_trips() {
        let ops = every_op();
        let rec = encode_record(&ops);
        let (decoded, valid, problem) = scan(&rec);
        assert_eq!((valid, problem), (rec.len(), None));
        match &decoded[..] {
            [Decoded::Ops(got)] => assert_eq!(got, &ops),
            _ => panic!("expected one record"),
        }
        for op in ops {
            let rec = encode_record(std::slice::from_ref(&op));
            match &scan(&rec).0[..] {
                [Decoded::Ops(got)] => assert_eq!(got, &[op]),
                _ => panic!("expected one record"),
            }
        }
    }

    /// Pins the on-disk layout: a change here strands users' subscriptions, so it must
    /// come with a new version number and a reader for the old one.
    #[test]
    fn the_record_layout_is_version_1() {
        let rec = encode_record(&[
            create(3, vec![4]),
            done(3, 1, &[(2, 5)]),
            meta_op(3, 1, 6, 2),
        ]);
        let mut payload = vec![3, 0, 0, 0];
        payload.push(TAG_CREATE);
        payload.extend(3u64.to_le_bytes());
        payload.extend([6, 0, 0, 0]);
        payload.extend(b"orders");
        payload.extend([7, 0, 0, 0]);
        payload.extend(b"billing");
        payload.extend([
            0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd,
            0xee, 0xff,
        ]);
        payload.extend([20, 0, 0, 0]);
        payload.extend(br#"{"max_deliveries":5}"#);
        payload.extend(1_700_000_000_000i64.to_le_bytes());
        payload.extend([1, 0, 0, 0]);
        payload.extend(4u64.to_le_bytes());
        payload.push(TAG_DONE);
        payload.extend(3u64.to_le_bytes());
        payload.extend(1u32.to_le_bytes());
        payload.extend([1, 0, 0, 0]);
        payload.extend(2u64.to_le_bytes());
        payload.extend(5u64.to_le_bytes());
        payload.push(TAG_META);
        payload.extend(3u64.to_le_bytes());
        payload.extend(1u32.to_le_bytes());
        payload.extend(6u64.to_le_bytes());
        payload.extend(2u32.to_le_bytes());
        payload.extend(10i64.to_le_bytes());
        payload.extend(20i64.to_le_bytes());
        payload.extend(30i64.to_le_bytes());
        payload.extend([7, 0, 0, 0]);
        payload.extend(b"timeout");
        let mut expected = (payload.len() as u32).to_le_bytes().to_vec();
        expected.extend(crc32c::crc32c(&payload).to_le_bytes());
        expected.extend(&payload);
        assert_eq!(rec, expected);
        assert_eq!(header(JOURNAL_MAGIC), b"WHFQJRN1\x01\0\0\0");
        assert_eq!(header(SNAPSHOT_MAGIC), b"WHFQSNP1\x01\0\0\0");
        let tags = [
            TAG_CREATE,
            TAG_SETTINGS,
            TAG_DELETE,
            TAG_DONE,
            TAG_META,
            TAG_REOPEN,
            TAG_SEEK,
            TAG_REDRIVE_CURSOR,
        ];
        assert_eq!(tags, [1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(TAG_END, 0xFF);
    }

    #[test]
    fn a_corrupt_count_is_refused_before_allocating() {
        for tag in [TAG_CREATE, TAG_DONE, TAG_REOPEN] {
            let mut op = Vec::new();
            encode_op(
                &mut op,
                &match tag {
                    TAG_CREATE => create(1, vec![]),
                    TAG_DONE => done(1, 0, &[]),
                    _ => reopen(1, 0, &[]),
                },
            );
            // The count is the op's last 4 bytes: claim u32::MAX items, and give a few.
            let at = op.len() - 4;
            op[at..].copy_from_slice(&u32::MAX.to_le_bytes());
            op.extend([0; 64]);
            assert_eq!(decode_op(op[0], &mut Reader::new(&op[1..])), None);
        }
        // An undecodable op makes the whole record undecodable.
        let mut payload = 1u32.to_le_bytes().to_vec();
        payload.extend([TAG_REOPEN, 0, 0]);
        let mut rec = (payload.len() as u32).to_le_bytes().to_vec();
        rec.extend(crc32c::crc32c(&payload).to_le_bytes());
        rec.extend(payload);
        assert_eq!(scan(&rec).2, Some("an undecodable record"));
    }

    #[test]
    fn the_floor_advances_over_done_offsets_out_of_order() {
        let mut s = state_of(&[vec![create(1, vec![10, 0])]]);
        s.apply_ops(&[done(1, 0, &[(12, 13)])]);
        assert_eq!(part(&s, 1, 0).floor, 10);
        assert_eq!(done_ranges(part(&s, 1, 0)), [(12, 13)]);
        s.apply_ops(&[done(1, 0, &[(14, 16)]), done(1, 0, &[(11, 12)])]);
        assert_eq!(part(&s, 1, 0).floor, 10);
        assert_eq!(done_ranges(part(&s, 1, 0)), [(11, 13), (14, 16)]);
        s.apply_ops(&[done(1, 0, &[(10, 11)])]);
        assert_eq!(part(&s, 1, 0).floor, 13);
        s.apply_ops(&[done(1, 0, &[(13, 14)])]);
        let p = part(&s, 1, 0);
        assert_eq!((p.floor, done_ranges(p)), (16, vec![]));
        // Done below the floor changes nothing; a partition missing from Create has
        // floor 0.
        s.apply_ops(&[done(1, 0, &[(0, 5)]), done(1, 7, &[(0, 2), (3, 4)])]);
        assert_eq!(part(&s, 1, 0).floor, 16);
        assert_eq!(part(&s, 1, 7).floor, 2);
        assert_eq!(done_ranges(part(&s, 1, 7)), [(3, 4)]);
        assert!(part(&s, 1, 7).is_done(0) && !part(&s, 1, 7).is_done(2));
        assert!(part(&s, 1, 7).is_done(3) && !part(&s, 1, 7).is_done(4));
    }

    #[test]
    fn reopen_below_and_above_the_floor() {
        let mut s = state_of(&[vec![
            create(1, vec![0]),
            done(1, 0, &[(0, 5), (7, 9)]),
            meta_op(1, 0, 5, 1),
        ]]);
        assert_eq!(part(&s, 1, 0).floor, 5);
        s.apply_ops(&[reopen(1, 0, &[2, 8, 5, 20])]);
        let p = part(&s, 1, 0);
        assert_eq!(p.floor, 5);
        assert_eq!(p.reopened, BTreeSet::from([2]));
        assert_eq!(done_ranges(p), [(7, 8)]);
        assert!(p.meta.is_empty(), "reopen clears the history");
        assert!(!p.is_done(2) && p.is_done(3) && !p.is_done(8) && p.is_done(7));
        // A reopened offset takes history, and is done again by Done.
        s.apply_ops(&[meta_op(1, 0, 2, 1)]);
        assert!(part(&s, 1, 0).meta.contains_key(&2));
        s.apply_ops(&[done(1, 0, &[(0, 3)])]);
        let p = part(&s, 1, 0);
        assert!(p.reopened.is_empty() && p.meta.is_empty() && p.is_done(2));
        assert_eq!(p.floor, 5);
    }

    #[test]
    fn meta_is_kept_only_for_pending_offsets() {
        let mut s = state_of(&[vec![create(1, vec![3]), done(1, 0, &[(5, 6)])]]);
        s.apply_ops(&[
            meta_op(1, 0, 1, 1),
            meta_op(1, 0, 5, 1),
            meta_op(1, 0, 4, 1),
            meta_op(1, 0, 4, 2),
        ]);
        let p = part(&s, 1, 0);
        assert_eq!(p.meta.keys().copied().collect::<Vec<_>>(), [4]);
        assert_eq!(p.meta[&4].deliveries, 2);
        s.apply_ops(&[done(1, 0, &[(3, 5)])]);
        let p = part(&s, 1, 0);
        assert_eq!((p.floor, p.meta.len()), (6, 0));
    }

    #[test]
    fn seek_resets_the_partition() {
        let mut s = state_of(&[vec![
            create(1, vec![0, 0]),
            done(1, 0, &[(0, 4), (6, 8)]),
            reopen(1, 0, &[1]),
            meta_op(1, 0, 4, 3),
            done(1, 1, &[(0, 2)]),
        ]]);
        s.apply_ops(&[Op::Seek {
            id: 1,
            partition: 0,
            offset: 2,
        }]);
        let p = part(&s, 1, 0);
        assert_eq!(p.floor, 2);
        assert!(p.done.is_empty() && p.meta.is_empty() && p.reopened.is_empty());
        assert!(p.is_done(1) && !p.is_done(2) && !p.is_done(7));
        assert_eq!(part(&s, 1, 1).floor, 2, "other partitions keep their state");
        s.apply_ops(&[Op::Seek {
            id: 1,
            partition: 0,
            offset: 50,
        }]);
        assert!(part(&s, 1, 0).is_done(7));
    }

    #[test]
    fn create_resets_delete_removes_and_unknown_ids_are_ignored() {
        let mut s = state_of(&[vec![
            create(4, vec![0]),
            done(4, 0, &[(0, 3)]),
            Op::RedriveCursor {
                id: 4,
                dlq_partition: 0,
                offset: 9,
            },
            Op::Settings {
                id: 4,
                settings: "{}".into(),
            },
        ]]);
        assert_eq!(s.next_id, 5);
        assert_eq!(s.subs[&4].settings, "{}");
        assert_eq!(s.subs[&4].redrive_cursors[&0], 9);
        s.apply_ops(&[create(4, vec![1])]);
        assert_eq!(
            s.subs[&4].partitions[&0],
            DurablePartition {
                floor: 1,
                ..DurablePartition::default()
            }
        );
        assert!(s.subs[&4].redrive_cursors.is_empty());
        let before = s.clone();
        s.apply_ops(&[
            done(9, 0, &[(0, 1)]),
            meta_op(9, 0, 0, 1),
            reopen(9, 0, &[0]),
            Op::Seek {
                id: 9,
                partition: 0,
                offset: 5,
            },
            Op::Settings {
                id: 9,
                settings: "{}".into(),
            },
            Op::RedriveCursor {
                id: 9,
                dlq_partition: 0,
                offset: 1,
            },
        ]);
        assert_eq!(s, before);
        s.apply_ops(&[Op::Delete { id: 4 }, Op::Delete { id: 7 }]);
        assert!(s.subs.is_empty());
        assert_eq!(s.next_id, 8);
        // The snapshot keeps next_id although its subscription is gone.
        assert_eq!(rebuilt(&s), s);
    }

    #[test]
    fn replaying_a_journal_over_its_own_snapshot_changes_nothing() {
        let journal = vec![
            vec![create(1, vec![0, 5])],
            vec![done(1, 0, &[(1, 3)]), meta_op(1, 0, 0, 1)],
            vec![done(1, 0, &[(0, 1)]), reopen(1, 0, &[1, 4])],
            vec![meta_op(1, 0, 1, 2), done(1, 1, &[(5, 9)])],
            vec![create(2, vec![3]), Op::Delete { id: 1 }],
            vec![Op::Seek {
                id: 2,
                partition: 0,
                offset: 1,
            }],
        ];
        let once = state_of(&journal);
        let mut twice = once.clone();
        for ops in &journal {
            twice.apply_ops(ops);
        }
        assert_eq!(once, twice);
        assert_eq!(rebuilt(&once), once);
    }

    fn op_strategy() -> impl Strategy<Value = Op> {
        let id = 0..3u64;
        let p = 0..3u32;
        let off = 0..24u64;
        prop_oneof![
            1 => (id.clone(), prop::collection::vec(0..8u64, 0..3))
                .prop_map(|(id, floors)| create(id, floors)),
            1 => id.clone().prop_map(|id| Op::Settings { id, settings: format!("{{\"v\":{id}}}") }),
            1 => id.clone().prop_map(|id| Op::Delete { id }),
            6 => (id.clone(), p.clone(), prop::collection::vec((off.clone(), 0..5u64), 0..3))
                .prop_map(|(id, partition, r)| Op::Done {
                    id,
                    partition,
                    ranges: r.into_iter().map(|(s, n)| (s, s + n)).collect(),
                }),
            3 => (id.clone(), p.clone(), off.clone(), 1..4u32)
                .prop_map(|(id, partition, offset, d)| meta_op(id, partition, offset, d)),
            2 => (id.clone(), p.clone(), prop::collection::vec(off.clone(), 0..3))
                .prop_map(|(id, partition, offsets)| Op::Reopen { id, partition, offsets }),
            1 => (id.clone(), p.clone(), off.clone())
                .prop_map(|(id, partition, offset)| Op::Seek { id, partition, offset }),
            1 => (id, p, off).prop_map(|(id, dlq_partition, offset)| Op::RedriveCursor {
                id,
                dlq_partition,
                offset,
            }),
        ]
    }

    fn records() -> impl Strategy<Value = Vec<Vec<Op>>> {
        prop::collection::vec(prop::collection::vec(op_strategy(), 1..4), 0..16)
    }

    proptest! {
        /// A crash between compaction's two renames replays the journal over the
        /// snapshot that already holds it; the snapshot itself rebuilds the state.
        #[test]
        fn replay_over_a_snapshot_and_rebuild_from_it(before in records(), journal in records()) {
            let mut once = state_of(&before);
            for ops in &journal {
                once.apply_ops(ops);
            }
            let mut twice = rebuilt(&once);
            prop_assert_eq!(&twice, &once);
            for ops in &journal {
                twice.apply_ops(ops);
            }
            prop_assert_eq!(&twice, &once);
            for ops in &journal {
                let rec = encode_record(ops);
                match &scan(&rec).0[..] {
                    [Decoded::Ops(got)] => prop_assert_eq!(got, ops),
                    _ => prop_assert!(false, "expected one record"),
                }
            }
        }
    }

    // ---- on disk --------------------------------------------------------------------

    fn journal_path(dir: &Path) -> std::path::PathBuf {
        dir.join(QUEUES_DIR).join(JOURNAL_FILE)
    }

    /// Submits each record with a completion channel, waits for all, and closes.
    fn write_all(dir: &Path, records: &[Vec<Op>], compact_bytes: u64) -> Vec<Vec<Op>> {
        let recovered = open(dir).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let hook = Arc::clone(&seen);
        let journal = start(
            dir,
            recovered,
            compact_bytes,
            Some(Box::new(move |ops: &[Op]| {
                hook.lock().unwrap().push(ops.to_vec());
            })),
            None,
        )
        .unwrap();
        let waiting: Vec<_> = records
            .iter()
            .map(|ops| {
                let (tx, rx) = oneshot::channel();
                journal.submit(ops.clone(), Some(tx)).unwrap();
                rx
            })
            .collect();
        for rx in waiting {
            assert!(matches!(rx.blocking_recv(), Ok(Ok(()))));
        }
        journal.close();
        assert!(journal.submit(vec![], None).is_err(), "closed");
        let seen = seen.lock().unwrap().clone();
        seen
    }

    fn sample(n: u64) -> Vec<Vec<Op>> {
        let mut records = vec![vec![create(1, vec![0, 0]), create(2, vec![100])]];
        for i in 0..n {
            records.push(vec![
                done(1, (i % 2) as u32, &[(i * 3 + 1, i * 3 + 3)]),
                meta_op(1, 0, i * 3, 1),
            ]);
            if i % 5 == 4 {
                records.push(vec![reopen(1, 1, &[i]), done(2, 0, &[(100 + i, 101 + i)])]);
            }
        }
        records.push(vec![Op::RedriveCursor {
            id: 2,
            dlq_partition: 1,
            offset: 77,
        }]);
        records
    }

    #[test]
    fn the_state_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let records = sample(10);
        let seen = write_all(dir.path(), &records, 1 << 30);
        assert_eq!(seen, records, "on_durable sees every batch, in order");
        let recovered = open(dir.path()).unwrap();
        assert_eq!(recovered.truncated_bytes, 0);
        assert_eq!(recovered.state, state_of(&records));
        assert!(!dir.path().join(QUEUES_DIR).join(SNAPSHOT_FILE).exists());
    }

    #[test]
    fn a_torn_tail_is_cut_and_the_records_before_it_survive() {
        let dir = tempfile::tempdir().unwrap();
        let records = sample(4);
        write_all(dir.path(), &records, 1 << 30);
        let path = journal_path(dir.path());
        let len = fs::metadata(&path).unwrap().len();
        let f = fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(len - 3).unwrap();
        drop(f);
        let recovered = open(dir.path()).unwrap();
        let last = encode_record(&records[records.len() - 1]).len() as u64;
        assert_eq!(recovered.truncated_bytes, last - 3);
        assert_eq!(recovered.state, state_of(&records[..records.len() - 1]));
        drop(recovered);
        assert_eq!(fs::metadata(&path).unwrap().len(), len - last);
        // Appending after the cut works, and the next open has nothing to cut.
        let more = vec![vec![Op::Delete { id: 2 }]];
        write_all(dir.path(), &more, 1 << 30);
        let recovered = open(dir.path()).unwrap();
        assert_eq!(recovered.truncated_bytes, 0);
        let mut expected = records[..records.len() - 1].to_vec();
        expected.extend(more);
        assert_eq!(recovered.state, state_of(&expected));
    }

    #[test]
    fn compaction_then_reopen_gives_the_same_state() {
        let dir = tempfile::tempdir().unwrap();
        let records = sample(60);
        write_all(dir.path(), &records, 512);
        let snapshot = dir.path().join(QUEUES_DIR).join(SNAPSHOT_FILE);
        assert!(snapshot.exists(), "compacted");
        let journal_len = fs::metadata(journal_path(dir.path())).unwrap().len();
        let written: usize = records.iter().map(|r| encode_record(r).len()).sum();
        assert!(journal_len < written as u64 + HEADER_LEN as u64);
        let recovered = open(dir.path()).unwrap();
        assert_eq!(recovered.state, state_of(&records));
        drop(recovered);
        // A damaged snapshot is refused, never cut.
        let mut bytes = fs::read(&snapshot).unwrap();
        bytes[0] ^= 0xff;
        fs::write(&snapshot, bytes).unwrap();
        let err = match open(dir.path()) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("opened over a damaged snapshot"),
        };
        assert!(err.contains(SNAPSHOT_FILE), "{err}");
    }

    #[test]
    fn lazy_records_are_synced_with_the_next_waited_one_or_by_the_timer_or_at_close() {
        let dir = tempfile::tempdir().unwrap();
        let create = Op::Create {
            id: 1,
            topic: "t".into(),
            name: "s".into(),
            topic_id: uuid::Uuid::nil(),
            settings: "{}".into(),
            created_ms: 0,
            floors: vec![0],
        };
        let meta = |offset: u64| Op::Meta {
            id: 1,
            partition: 0,
            offset,
            meta: Meta {
                deliveries: 1,
                ..Meta::default()
            },
        };
        let seen = Arc::new(Mutex::new(Vec::new()));
        let hook = Arc::clone(&seen);
        let journal = start(
            dir.path(),
            open(dir.path()).unwrap(),
            1 << 30,
            Some(Box::new(move |ops: &[Op]| {
                hook.lock().unwrap().push(ops.to_vec());
            })),
            Some(std::time::Duration::from_millis(50)),
        )
        .unwrap();
        journal.submit(vec![create.clone()], None).unwrap();
        journal.submit(vec![meta(0)], None).unwrap();
        let (tx, rx) = oneshot::channel();
        journal.submit(vec![meta(1)], Some(tx)).unwrap();
        rx.blocking_recv().unwrap().unwrap();
        // The waited record's sync covered the two lazy ones before it, in order.
        assert_eq!(
            *seen.lock().unwrap(),
            vec![vec![create.clone()], vec![meta(0)], vec![meta(1)]]
        );
        // A lazy record alone is synced by the timer.
        journal.submit(vec![meta(2)], None).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while seen.lock().unwrap().len() < 4 {
            assert!(std::time::Instant::now() < deadline, "never synced");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        // And one still waiting at close is synced by the close.
        journal.submit(vec![meta(3)], None).unwrap();
        journal.close();
        assert_eq!(seen.lock().unwrap().len(), 5);
        let state = open(dir.path()).unwrap().state;
        let metas: Vec<u64> = state.subs[&1].partitions[&0].meta.keys().copied().collect();
        assert_eq!(metas, vec![0, 1, 2, 3]);
    }
}
