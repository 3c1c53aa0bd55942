//! Sparse offset and time indexes of one segment.
//!
//! In memory they are sorted vectors; on disk they are written whole (temp file, rename)
//! when a segment is sealed and when the log closes, with a header that says which log
//! length they describe. An index whose header does not match its log is rebuilt from
//! the log, so a stale or torn index can cost time but never correctness.
//!
//! ```text
//! file    := magic "WHIX" | version u16 | kind u8 | 0u8 | log_len u64 | count u32
//!            | crc32c(entries) u32 | entries
//! offset entry (kind 0) := relative offset u32 | file position u32        (8 bytes)
//! time entry   (kind 1) := max timestamp so far i64 | relative offset u32 (12 bytes)
//! ```
//! Big-endian. A time entry `(ts, rel)` says: every batch up to and including the one
//! holding `rel` has a max timestamp of at most `ts`, and `ts` is reached there.

use std::fs;
use std::io::Write;
use std::path::Path;

use crate::error::{IoContext, Result};

const MAGIC: &[u8; 4] = b"WHIX";
const VERSION: u16 = 1;
const HEADER: usize = 24;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OffsetEntry {
    pub rel: u32,
    pub pos: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TimeEntry {
    pub ts: i64,
    pub rel: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Indexes {
    pub offsets: Vec<OffsetEntry>,
    pub times: Vec<TimeEntry>,
    /// Log bytes covered when the last offset entry was added, for the interval rule.
    pub bytes_since_entry: u64,
}

impl Indexes {
    /// Notes a batch at `pos` holding `rel..=last_rel` whose max timestamp is `max_ts`.
    /// `max_ts_so_far` is the segment's max timestamp including this batch.
    pub fn on_batch(&mut self, rel: u32, pos: u32, len: u32, max_ts_so_far: i64, interval: u32) {
        if self.offsets.is_empty() || self.bytes_since_entry >= u64::from(interval) {
            self.offsets.push(OffsetEntry { rel, pos });
            self.bytes_since_entry = 0;
            if self.times.last().is_none_or(|t| max_ts_so_far > t.ts) {
                self.times.push(TimeEntry {
                    ts: max_ts_so_far,
                    rel,
                });
            }
        }
        self.bytes_since_entry += u64::from(len);
    }

    /// The last entry at or below `rel`: where to start scanning for it.
    pub fn floor(&self, rel: u32) -> OffsetEntry {
        let i = self.offsets.partition_point(|e| e.rel <= rel);
        if i == 0 {
            OffsetEntry { rel: 0, pos: 0 }
        } else {
            self.offsets[i - 1]
        }
    }

    /// A relative offset from which a scan finds the first batch with max timestamp at or
    /// after `ts`: the last time entry still below `ts`.
    pub fn time_floor(&self, ts: i64) -> Option<u32> {
        let i = self.times.partition_point(|e| e.ts < ts);
        (i > 0).then(|| self.times[i - 1].rel)
    }
}

fn encode(kind: u8, log_len: u64, entries: &[u8], count: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + entries.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_be_bytes());
    out.push(kind);
    out.push(0);
    out.extend_from_slice(&log_len.to_be_bytes());
    out.extend_from_slice(&(count as u32).to_be_bytes());
    out.extend_from_slice(&crc32c::crc32c(entries).to_be_bytes());
    out.extend_from_slice(entries);
    out
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = fs::File::create(&tmp).ctx("create", &tmp)?;
    f.write_all(bytes).ctx("write", &tmp)?;
    f.sync_data().ctx("fdatasync", &tmp)?;
    fs::rename(&tmp, path).ctx("rename", path)?;
    Ok(())
}

/// Writes both index files for a segment whose log is `log_len` bytes long.
pub(crate) fn store(
    offset_path: &Path,
    time_path: &Path,
    idx: &Indexes,
    log_len: u64,
) -> Result<()> {
    let mut o = Vec::with_capacity(idx.offsets.len() * 8);
    for e in &idx.offsets {
        o.extend_from_slice(&e.rel.to_be_bytes());
        o.extend_from_slice(&e.pos.to_be_bytes());
    }
    write_atomic(offset_path, &encode(0, log_len, &o, idx.offsets.len()))?;
    let mut t = Vec::with_capacity(idx.times.len() * 12);
    for e in &idx.times {
        t.extend_from_slice(&e.ts.to_be_bytes());
        t.extend_from_slice(&e.rel.to_be_bytes());
    }
    write_atomic(time_path, &encode(1, log_len, &t, idx.times.len()))
}

fn decode(bytes: &[u8], kind: u8, log_len: u64, entry: usize) -> Option<&[u8]> {
    if bytes.len() < HEADER || &bytes[0..4] != MAGIC {
        return None;
    }
    if u16::from_be_bytes([bytes[4], bytes[5]]) != VERSION || bytes[6] != kind {
        return None;
    }
    let mut l = [0u8; 8];
    l.copy_from_slice(&bytes[8..16]);
    if u64::from_be_bytes(l) != log_len {
        return None;
    }
    let count = u32::from_be_bytes([bytes[16], bytes[17], bytes[18], bytes[19]]) as usize;
    let crc = u32::from_be_bytes([bytes[20], bytes[21], bytes[22], bytes[23]]);
    let body = &bytes[HEADER..];
    if body.len() != count.checked_mul(entry)? || crc32c::crc32c(body) != crc {
        return None;
    }
    Some(body)
}

/// Loads both index files if they exist, are intact and describe a log of exactly
/// `log_len` bytes; `None` means "rebuild from the log".
pub(crate) fn load(offset_path: &Path, time_path: &Path, log_len: u64) -> Option<Indexes> {
    let ob = fs::read(offset_path).ok()?;
    let tb = fs::read(time_path).ok()?;
    let o = decode(&ob, 0, log_len, 8)?;
    let t = decode(&tb, 1, log_len, 12)?;
    let offsets: Vec<OffsetEntry> = o
        .chunks_exact(8)
        .map(|c| OffsetEntry {
            rel: u32::from_be_bytes([c[0], c[1], c[2], c[3]]),
            pos: u32::from_be_bytes([c[4], c[5], c[6], c[7]]),
        })
        .collect();
    let times: Vec<TimeEntry> = t
        .chunks_exact(12)
        .map(|c| {
            let mut ts = [0u8; 8];
            ts.copy_from_slice(&c[0..8]);
            TimeEntry {
                ts: i64::from_be_bytes(ts),
                rel: u32::from_be_bytes([c[8], c[9], c[10], c[11]]),
            }
        })
        .collect();
    // Entries must be strictly increasing and inside the log; anything else is stale.
    let sorted = offsets
        .windows(2)
        .all(|w| w[0].rel < w[1].rel && w[0].pos < w[1].pos)
        && times
            .windows(2)
            .all(|w| w[0].rel < w[1].rel && w[0].ts < w[1].ts)
        && offsets.iter().all(|e| u64::from(e.pos) < log_len.max(1));
    if !sorted || (log_len > 0 && offsets.first().is_none_or(|e| e.pos != 0)) {
        return None;
    }
    Some(Indexes {
        offsets,
        times,
        // Unknown after a reload; start a fresh interval at the next append.
        bytes_since_entry: u64::MAX / 2,
    })
}
