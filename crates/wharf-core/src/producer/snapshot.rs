//! Producer state on disk: snapshots, and the replay of the log after one.
//!
//! The log is the truth: every stored batch header carries its producer id, epoch,
//! first sequence and last offset delta, so the state can always be rebuilt by reading
//! the headers from the log start. A snapshot only saves that work. It is written at a
//! clean close and every `producer_snapshot_interval_bytes` of appends, as
//! `<end-offset, 20 digits>.producers` in the partition folder; the two newest are kept.
//!
//! ```text
//! offset  size  field
//!      0     4  magic "WPST"
//!      4     2  format version (= 1), big-endian
//!      6     2  zero
//!      8     8  end offset: the state reflects every batch below it (u64)
//!     16     1  1 if the last batch below the end offset is known, else 0
//!     17     8  that batch's base offset (u64; 0 if unknown)
//!     25     4  that batch's CRC-32C (0 if unknown)
//!     29     4  producer count N (u32)
//!     33     …  N entries, by producer id:
//!                 producer id i64 | epoch i16 | last append ms i64 | batch count B u8 (1..=5)
//!                 B × (first seq i32 | last seq i32 | base offset u64 | last offset u64)
//!    end-4   4  CRC-32C of everything before it
//! ```
//!
//! On open: snapshots above the log end describe batches a crash cut off (a snapshot can
//! be written before its last batches are synced) and are deleted (and the deletion made
//! durable, lest a lost unlink resurrect one once the log has grown past it again). The
//! newest remaining one is loaded if its CRC checks and the log still holds, at the
//! recorded offset, the batch with the recorded CRC — the snapshot then describes this
//! very history, not one a crash or a truncation replaced. With none, the state starts
//! empty at the log start. Producers whose batches lie wholly below the log start are
//! dropped; then the batch headers from the snapshot's end offset to the log end are
//! replayed.

use std::collections::{HashMap, VecDeque};
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use tracing::{info, warn};
use wharf_log::batch::BatchHeader;
use wharf_log::SharedLog;

use super::state::{BatchMeta, ProducerEntry, ProducerStates, BATCHES_TO_RETAIN};
use crate::error::{CoreError, IoContext, Result};
use crate::registry::sync_dir;

const MAGIC: [u8; 4] = *b"WPST";
const FORMAT: u16 = 1;
const HEADER: usize = 33;
const ENTRY_HEAD: usize = 8 + 2 + 8 + 1;
const BATCH: usize = 4 + 4 + 8 + 8;
/// File name suffix of a snapshot.
pub const SNAPSHOT_SUFFIX: &str = ".producers";
/// The log deletes `*.tmp` files of its folder on open, so a torn temp file goes away.
const SNAPSHOT_TMP: &str = "producers.tmp";
/// Snapshots kept: the newest may lie above what a crash left of the log.
const KEEP: usize = 2;
/// Bytes read from the log per step of a replay.
const REPLAY_CHUNK: usize = 1 << 20;

pub fn encode(states: &ProducerStates) -> Vec<u8> {
    let entries = states.entries();
    let mut b = Vec::with_capacity(HEADER + entries.len() * (ENTRY_HEAD + BATCH) + 4);
    b.extend_from_slice(&MAGIC);
    b.extend_from_slice(&FORMAT.to_be_bytes());
    b.extend_from_slice(&[0, 0]);
    b.extend_from_slice(&states.end_offset().to_be_bytes());
    let (known, base, crc) = match states.last_batch() {
        Some((base, crc)) => (1u8, base, crc),
        None => (0, 0, 0),
    };
    b.push(known);
    b.extend_from_slice(&base.to_be_bytes());
    b.extend_from_slice(&crc.to_be_bytes());
    b.extend_from_slice(&(entries.len() as u32).to_be_bytes());
    for (id, e) in entries {
        b.extend_from_slice(&id.to_be_bytes());
        b.extend_from_slice(&e.epoch.to_be_bytes());
        b.extend_from_slice(&e.last_append_ms.to_be_bytes());
        b.push(e.batches.len() as u8);
        for m in &e.batches {
            b.extend_from_slice(&m.first_seq.to_be_bytes());
            b.extend_from_slice(&m.last_seq.to_be_bytes());
            b.extend_from_slice(&m.base_offset.to_be_bytes());
            b.extend_from_slice(&m.last_offset.to_be_bytes());
        }
    }
    let crc = crc32c::crc32c(&b);
    b.extend_from_slice(&crc.to_be_bytes());
    b
}

/// A cursor over untrusted bytes: every read is bounds-checked.
struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> std::result::Result<[u8; N], String> {
        let end = self.pos.checked_add(N).filter(|e| *e <= self.b.len());
        let end = end.ok_or_else(|| format!("truncated at byte {}", self.pos))?;
        let mut a = [0u8; N];
        a.copy_from_slice(&self.b[self.pos..end]);
        self.pos = end;
        Ok(a)
    }
}

pub fn decode(bytes: &[u8]) -> std::result::Result<ProducerStates, String> {
    if bytes.len() < HEADER + 4 {
        return Err(format!("{} bytes, too short", bytes.len()));
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    let stored = u32::from_be_bytes([crc[0], crc[1], crc[2], crc[3]]);
    let computed = crc32c::crc32c(body);
    if stored != computed {
        return Err(format!(
            "CRC-32C is {stored:#010x}, computed {computed:#010x}"
        ));
    }
    let mut r = Reader { b: body, pos: 0 };
    if r.take::<4>()? != MAGIC {
        return Err("bad magic".into());
    }
    let version = u16::from_be_bytes(r.take()?);
    if version != FORMAT {
        return Err(format!("unknown format version {version}"));
    }
    r.take::<2>()?;
    let end_offset = u64::from_be_bytes(r.take()?);
    let known = r.take::<1>()?[0];
    let base = u64::from_be_bytes(r.take()?);
    let crc = u32::from_be_bytes(r.take()?);
    let last_batch = match known {
        0 => None,
        1 => Some((base, crc)),
        other => return Err(format!("bad last-batch flag {other}")),
    };
    let count = u32::from_be_bytes(r.take()?) as usize;
    // Bound the allocation by what the file can hold, not by what it claims.
    if count > body.len() / (ENTRY_HEAD + BATCH) {
        return Err(format!(
            "{count} producers cannot fit in {} bytes",
            body.len()
        ));
    }
    let mut producers = HashMap::with_capacity(count);
    for _ in 0..count {
        let id = i64::from_be_bytes(r.take()?);
        let epoch = i16::from_be_bytes(r.take()?);
        let last_append_ms = i64::from_be_bytes(r.take()?);
        let n = r.take::<1>()?[0] as usize;
        if n == 0 || n > BATCHES_TO_RETAIN || id < 0 {
            return Err(format!("bad entry for producer {id} ({n} batches)"));
        }
        let mut batches = VecDeque::with_capacity(n);
        for _ in 0..n {
            batches.push_back(BatchMeta {
                first_seq: i32::from_be_bytes(r.take()?),
                last_seq: i32::from_be_bytes(r.take()?),
                base_offset: u64::from_be_bytes(r.take()?),
                last_offset: u64::from_be_bytes(r.take()?),
            });
        }
        producers.insert(
            id,
            ProducerEntry {
                epoch,
                batches,
                last_append_ms,
            },
        );
    }
    if r.pos != body.len() {
        return Err(format!("{} trailing bytes", body.len() - r.pos));
    }
    Ok(ProducerStates::from_parts(
        producers, end_offset, last_batch,
    ))
}

fn snapshot_path(dir: &Path, offset: u64) -> PathBuf {
    dir.join(format!("{offset:020}{SNAPSHOT_SUFFIX}"))
}

/// Snapshot files in `dir`, by end offset, oldest first.
fn list(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).ctx("list", dir)? {
        let entry = entry.ctx("list", dir)?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(offset) = name
            .strip_suffix(SNAPSHOT_SUFFIX)
            .and_then(|s| s.parse::<u64>().ok())
        {
            found.push((offset, entry.path()));
        }
    }
    found.sort_unstable_by_key(|(o, _)| *o);
    Ok(found)
}

/// Writes `states` as a snapshot (temp file, fsync, rename, directory fsync) and deletes
/// all but the newest [`KEEP`] snapshots. Callers serialize calls per folder.
pub fn write(dir: &Path, states: &ProducerStates) -> Result<()> {
    let tmp = dir.join(SNAPSHOT_TMP);
    let path = snapshot_path(dir, states.end_offset());
    let mut f = File::create(&tmp).ctx("create", &tmp)?;
    f.write_all(&encode(states)).ctx("write", &tmp)?;
    f.sync_data().ctx("fdatasync", &tmp)?;
    drop(f);
    fs::rename(&tmp, &path).ctx("rename", &path)?;
    sync_dir(dir)?;
    let all = list(dir)?;
    for (_, old) in all.iter().rev().skip(KEEP) {
        if let Err(e) = fs::remove_file(old) {
            warn!(path = %old.display(), error = %e, "could not delete an old producer snapshot");
        }
    }
    Ok(())
}

/// Rebuilds a partition's producer state on open; see the module docs.
/// `now_ms` stands for the last append time of producers first seen in the replay.
pub fn load(log: &SharedLog, topic: &str, partition: u32, now_ms: i64) -> Result<ProducerStates> {
    let dir = log.dir();
    let log_end = log.log_end_offset();
    let log_start = log.log_start_offset();
    let mut loaded = None;
    let mut deleted = false;
    for (offset, path) in list(dir)?.into_iter().rev() {
        if offset > log_end {
            warn!(
                topic,
                partition,
                snapshot = offset,
                log_end,
                "deleting a producer snapshot beyond the recovered log end"
            );
            fs::remove_file(&path).ctx("delete", &path)?;
            deleted = true;
            continue;
        }
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).ctx("read", &path),
        };
        match decode(&bytes) {
            Ok(s) if s.end_offset() == offset => {
                let holds = matches_log(log, &s, log_start).map_err(|source| CoreError::Log {
                    topic: topic.into(),
                    partition,
                    source,
                })?;
                if holds {
                    loaded = Some(s);
                    break;
                }
                warn!(path = %path.display(), "ignoring a producer snapshot of batches the log no longer holds");
            }
            Ok(_) => {
                warn!(path = %path.display(), "ignoring a producer snapshot whose name and content disagree")
            }
            Err(reason) => {
                warn!(path = %path.display(), reason, "ignoring a corrupt producer snapshot")
            }
        }
    }
    if deleted {
        sync_dir(dir)?;
    }
    let from_snapshot = loaded.is_some();
    let mut states = loaded.unwrap_or_else(|| ProducerStates::new(log_start));
    states.prune_below(log_start);
    // Retention may have deleted batches the snapshot never saw: start after them.
    states.advance_to(log_start);
    let replay_from = states.end_offset();
    replay(log, &mut states, log_end, now_ms).map_err(|source| CoreError::Log {
        topic: topic.into(),
        partition,
        source,
    })?;
    if replay_from < log_end {
        info!(
            topic,
            partition,
            from_snapshot,
            replay_from,
            log_end,
            producers = states.len(),
            "producer state rebuilt from the log"
        );
    }
    Ok(states)
}

/// Whether the log holds, where the snapshot says, the last batch it reflects.
fn matches_log(
    log: &SharedLog,
    s: &ProducerStates,
    log_start: u64,
) -> std::result::Result<bool, wharf_log::LogError> {
    let Some((base, crc)) = s.last_batch() else {
        // Nothing to compare (an empty log, or the end moved past deleted data).
        return Ok(true);
    };
    if s.end_offset() <= log_start {
        // Everything it covers was deleted; only producers with later batches matter,
        // and those are replayed.
        return Ok(true);
    }
    let read = log.read(base.max(log_start), 1)?;
    Ok(BatchHeader::parse(&read.bytes)
        .is_some_and(|h| h.base_offset >= 0 && h.base_offset as u64 == base && h.crc == crc))
}

/// Applies the headers of the batches from `states.end_offset()` to `log_end`.
fn replay(
    log: &SharedLog,
    states: &mut ProducerStates,
    log_end: u64,
    now_ms: i64,
) -> std::result::Result<(), wharf_log::LogError> {
    let mut next = states.end_offset();
    while next < log_end {
        let read = log.read(next, REPLAY_CHUNK)?;
        let bytes = &read.bytes;
        let mut pos = 0;
        while let Some(h) = bytes.get(pos..).and_then(BatchHeader::parse) {
            let Some(total) = h.total_len() else { break };
            if pos + total > bytes.len() || h.base_offset < 0 {
                break;
            }
            let base = h.base_offset as u64;
            if h.last_offset() >= 0 && h.last_offset() as u64 >= next {
                states.apply(&h, base, now_ms);
            }
            pos += total;
        }
        if states.end_offset() <= next {
            // Nothing readable advanced the state (should not happen below the log end).
            break;
        }
        next = states.end_offset();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use wharf_log::batch::{Record, RecordBatchBuilder};

    #[test]
    fn a_snapshot_round_trips_and_detects_corruption() {
        let mut s = ProducerStates::new(0);
        for (id, seq) in [(4, 0), (4, 1), (9, 0), (4, 2), (4, 3), (4, 4), (4, 5)] {
            let mut b = RecordBatchBuilder::new().producer(id, 2, seq);
            b.push(&Record {
                value: Some(b"x"),
                timestamp: 5,
                ..Record::default()
            });
            let c = wharf_log::check_batches(&b.build()).unwrap();
            let end = s.end_offset();
            s.apply_all(&c, end, 5);
        }
        let bytes = encode(&s);
        assert_eq!(decode(&bytes).unwrap(), s);
        assert_eq!(s.get(4).unwrap().batches.len(), BATCHES_TO_RETAIN);
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x40;
            assert!(decode(&bad).is_err(), "flip at {i} not detected");
        }
        assert!(decode(&bytes[..bytes.len() - 1]).is_err());
    }
}
