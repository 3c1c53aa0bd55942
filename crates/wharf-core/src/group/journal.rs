//! The offsets journal: committed offsets and group metadata, durable across restarts
//! and crashes.
//!
//! ```text
//! <data-dir>/groups/offsets.journal    header, then records appended one batch at a time
//!                  /offsets.snapshot   header, the compacted state as records, an End op
//!                  /offsets.snapshot.tmp   a snapshot being written (removed on open)
//!
//! header:  | magic (8 bytes)                   | version u32 LE = 1 |
//!            "WHFGJRN1" (journal), "WHFGSNP1" (snapshot)
//!
//! record:  | len u32 LE | crc32c(payload) u32 LE | payload (len bytes)                |
//! payload: | op count u32 LE | op | op | ...                                         |
//! op:      | tag u8 | fields; strings are u32 LE length + UTF-8, integers LE         |
//!   1 Commit      group, topic, partition i32, offset i64, leader epoch i32,
//!                 metadata, commit timestamp i64
//!   2 DeleteOffset group, topic, partition i32
//!   3 GroupMeta   group, protocol type, generation i32
//!   4 DeleteGroup group (its offsets go with it)
//!   5 End         record count u64 (snapshot only: its last op)
//! ```
//!
//! One record holds every op of one request, so an OffsetCommit of many partitions is
//! all or nothing. A record is acknowledged only after an `fdatasync` covers it; many
//! concurrent requests share one write and one sync (group commit), done by a dedicated
//! writer thread.
//!
//! Torn tails: a crash may leave a partial record at the end (a short length, a short
//! payload, a CRC mismatch). Such a record was never acknowledged, because its sync had
//! not returned. On open the journal is cut at the first record that does not check out;
//! everything before it is kept. After a failed write or sync the writer refuses all
//! further records rather than guess what reached the disk.
//!
//! Compaction: when the journal outgrows `journal_compact_bytes` (and the last
//! snapshot), the writer writes the whole state to `offsets.snapshot.tmp`, syncs it,
//! renames it over `offsets.snapshot`, syncs the directory, and then replaces the journal
//! with an empty one the same way. A crash between the two renames leaves the old journal
//! beside the new snapshot; replaying it again is harmless because every op is a blind
//! write of the keys it names (last writer wins), so the replay ends in the same state.
//! A snapshot is written atomically, so a damaged one is an error, never truncated.
//!
//! The framing, recovery, writer thread and compaction are [`crate::journal`]'s; this
//! module holds the group ops, their codec and how they apply.

use std::collections::BTreeMap;
use std::path::Path;

use super::state::{CommittedOffset, TopicPartition};
use crate::error::{CoreError, Result};
use crate::journal::{put_str, Durable, JournalFiles, Reader};

pub use crate::journal::MAX_RECORD_BYTES;

/// Folder of the group coordinator's files, under the data directory.
pub const GROUPS_DIR: &str = "groups";
pub const JOURNAL_FILE: &str = "offsets.journal";
pub const SNAPSHOT_FILE: &str = "offsets.snapshot";

const JOURNAL_MAGIC: &[u8; 8] = b"WHFGJRN1";
const SNAPSHOT_MAGIC: &[u8; 8] = b"WHFGSNP1";

/// One change to the durable state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Commit {
        group: String,
        tp: TopicPartition,
        offset: CommittedOffset,
    },
    DeleteOffset {
        group: String,
        tp: TopicPartition,
    },
    GroupMeta {
        group: String,
        protocol_type: String,
        generation: i32,
    },
    DeleteGroup {
        group: String,
    },
}

/// What is durable about one group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DurableGroup {
    pub protocol_type: String,
    pub generation: i32,
    pub offsets: BTreeMap<TopicPartition, CommittedOffset>,
}

/// The durable state: every group the journal knows.
pub type DurableState = BTreeMap<String, DurableGroup>;

/// The offsets journal's recovered state.
pub type Recovered = crate::journal::Recovered<DurableState>;
/// The offsets journal's writer.
pub type Journal = crate::journal::Journal<DurableState>;

/// Opens (or creates) `<data_dir>/groups`, loads the snapshot, replays the journal and
/// cuts its torn tail.
pub fn open(data_dir: &Path) -> Result<Recovered> {
    crate::journal::open(data_dir)
}

/// Frames ops as one record: length, CRC-32C, payload.
pub fn encode_record(ops: &[Op]) -> Vec<u8> {
    crate::journal::encode_record::<DurableState>(ops)
}

/// Applies ops in order. Used by recovery and by the writer's copy of the state.
pub fn apply(state: &mut DurableState, ops: &[Op]) {
    for op in ops {
        match op {
            Op::Commit { group, tp, offset } => {
                state
                    .entry(group.clone())
                    .or_default()
                    .offsets
                    .insert(tp.clone(), offset.clone());
            }
            Op::DeleteOffset { group, tp } => {
                if let Some(g) = state.get_mut(group) {
                    g.offsets.remove(tp);
                }
            }
            Op::GroupMeta {
                group,
                protocol_type,
                generation,
            } => {
                let g = state.entry(group.clone()).or_default();
                g.protocol_type.clone_from(protocol_type);
                g.generation = *generation;
            }
            Op::DeleteGroup { group } => {
                state.remove(group);
            }
        }
    }
}

// ---- encoding -------------------------------------------------------------------------

const TAG_COMMIT: u8 = 1;
const TAG_DELETE_OFFSET: u8 = 2;
const TAG_GROUP_META: u8 = 3;
const TAG_DELETE_GROUP: u8 = 4;
const TAG_END: u8 = 5;

fn encode_op(b: &mut Vec<u8>, op: &Op) {
    match op {
        Op::Commit { group, tp, offset } => {
            b.push(TAG_COMMIT);
            put_str(b, group);
            put_str(b, &tp.topic);
            b.extend(tp.partition.to_le_bytes());
            b.extend(offset.offset.to_le_bytes());
            b.extend(offset.leader_epoch.to_le_bytes());
            put_str(b, &offset.metadata);
            b.extend(offset.commit_timestamp_ms.to_le_bytes());
        }
        Op::DeleteOffset { group, tp } => {
            b.push(TAG_DELETE_OFFSET);
            put_str(b, group);
            put_str(b, &tp.topic);
            b.extend(tp.partition.to_le_bytes());
        }
        Op::GroupMeta {
            group,
            protocol_type,
            generation,
        } => {
            b.push(TAG_GROUP_META);
            put_str(b, group);
            put_str(b, protocol_type);
            b.extend(generation.to_le_bytes());
        }
        Op::DeleteGroup { group } => {
            b.push(TAG_DELETE_GROUP);
            put_str(b, group);
        }
    }
}

fn decode_op(tag: u8, r: &mut Reader<'_>) -> Option<Op> {
    Some(match tag {
        TAG_COMMIT => Op::Commit {
            group: r.string()?,
            tp: TopicPartition {
                topic: r.string()?,
                partition: r.i32()?,
            },
            offset: CommittedOffset {
                offset: r.i64()?,
                leader_epoch: r.i32()?,
                metadata: r.string()?,
                commit_timestamp_ms: r.i64()?,
            },
        },
        TAG_DELETE_OFFSET => Op::DeleteOffset {
            group: r.string()?,
            tp: TopicPartition {
                topic: r.string()?,
                partition: r.i32()?,
            },
        },
        TAG_GROUP_META => Op::GroupMeta {
            group: r.string()?,
            protocol_type: r.string()?,
            generation: r.i32()?,
        },
        TAG_DELETE_GROUP => Op::DeleteGroup { group: r.string()? },
        _ => return None,
    })
}

impl Durable for DurableState {
    type Op = Op;

    const FILES: JournalFiles = JournalFiles {
        dir: GROUPS_DIR,
        journal: JOURNAL_FILE,
        snapshot: SNAPSHOT_FILE,
        journal_magic: JOURNAL_MAGIC,
        snapshot_magic: SNAPSHOT_MAGIC,
        end_tag: TAG_END,
        thread: "wharf-groups-journal",
        what: "offsets journal",
        kind: "group",
    };

    fn encode_op(buf: &mut Vec<u8>, op: &Op) {
        encode_op(buf, op);
    }

    fn decode_op(tag: u8, r: &mut Reader<'_>) -> Option<Op> {
        decode_op(tag, r)
    }

    fn apply(&mut self, ops: &[Op]) {
        apply(self, ops);
    }

    /// One record per group: its metadata, then its offsets.
    fn snapshot_records(&self) -> Vec<Vec<Op>> {
        self.iter()
            .map(|(name, g)| {
                let mut ops = vec![Op::GroupMeta {
                    group: name.clone(),
                    protocol_type: g.protocol_type.clone(),
                    generation: g.generation,
                }];
                ops.extend(g.offsets.iter().map(|(tp, o)| Op::Commit {
                    group: name.clone(),
                    tp: tp.clone(),
                    offset: o.clone(),
                }));
                ops
            })
            .collect()
    }

    fn item_count(&self) -> usize {
        self.len()
    }

    fn corrupt(path: &Path, reason: String) -> CoreError {
        CoreError::CorruptGroupJournal {
            path: path.to_path_buf(),
            reason,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::{header, Decoded};

    fn scan(buf: &[u8]) -> (Vec<Decoded<Op>>, usize, Option<&'static str>) {
        crate::journal::scan::<DurableState>(buf)
    }

    fn commit(group: &str, partition: i32, offset: i64) -> Op {
        Op::Commit {
            group: group.into(),
            tp: TopicPartition::new("t", partition),
            offset: CommittedOffset {
                offset,
                leader_epoch: -1,
                metadata: "m".into(),
                commit_timestamp_ms: 7,
            },
        }
    }

    #[test]
    fn records_round_trip() {
        let ops = vec![
            commit("g", 0, 5),
            Op::DeleteOffset {
                group: "g".into(),
                tp: TopicPartition::new("t", 1),
            },
            Op::GroupMeta {
                group: "g".into(),
                protocol_type: "consumer".into(),
                generation: 3,
            },
            Op::DeleteGroup { group: "h".into() },
        ];
        let rec = encode_record(&ops);
        let (decoded, valid, problem) = scan(&rec);
        assert_eq!((valid, problem), (rec.len(), None));
        match &decoded[..] {
            [Decoded::Ops(got)] => assert_eq!(got, &ops),
            _ => panic!("expected one record"),
        }
    }

    /// Pins the on-disk layout: a change here strands users' offsets, so it must come
    /// with a new version number and a reader for the old one.
    #[test]
    fn the_record_layout_is_version_1() {
        let rec = encode_record(&[commit("g", 2, 5)]);
        let mut payload = vec![1, 0, 0, 0, TAG_COMMIT];
        payload.extend([1, 0, 0, 0, b'g']);
        payload.extend([1, 0, 0, 0, b't']);
        payload.extend(2i32.to_le_bytes());
        payload.extend(5i64.to_le_bytes());
        payload.extend((-1i32).to_le_bytes());
        payload.extend([1, 0, 0, 0, b'm']);
        payload.extend(7i64.to_le_bytes());
        let mut expected = (payload.len() as u32).to_le_bytes().to_vec();
        expected.extend(crc32c::crc32c(&payload).to_le_bytes());
        expected.extend(&payload);
        assert_eq!(rec, expected);
        assert_eq!(header(JOURNAL_MAGIC), b"WHFGJRN1\x01\0\0\0");
    }

    #[test]
    fn scan_stops_at_every_kind_of_damage() {
        let mut buf = encode_record(&[commit("g", 0, 1)]);
        let good = buf.len();
        buf.extend(encode_record(&[commit("g", 0, 2)]));
        for cut in good..buf.len() {
            let (recs, valid, problem) = scan(&buf[..cut]);
            assert_eq!((recs.len(), valid), (1, good), "cut at {cut}");
            assert!(problem.is_some() || cut == good);
        }
        let mut flipped = buf.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0xff;
        assert_eq!(scan(&flipped).1, good);
    }

    #[test]
    fn replaying_a_journal_over_its_own_snapshot_changes_nothing() {
        let journal = vec![
            vec![commit("g", 0, 5)],
            vec![Op::DeleteGroup { group: "g".into() }],
            vec![commit("g", 1, 7), commit("h", 0, 1)],
            vec![Op::DeleteOffset {
                group: "h".into(),
                tp: TopicPartition::new("t", 0),
            }],
        ];
        let mut once = DurableState::new();
        for ops in &journal {
            apply(&mut once, ops);
        }
        let mut twice = once.clone();
        for ops in &journal {
            apply(&mut twice, ops);
        }
        assert_eq!(once, twice);
    }
}
