//! The single-threaded log engine: segments, recovery, append, read, retention.

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tracing::{info, warn};

use crate::batch::{self, BatchDefect, BatchHeader};
use crate::config::{FlushPolicy, LogConfig};
use crate::error::{IoContext, LogError, Result};
use crate::segment::{self, read_header, sync_dir, Segment};

const CLEAN_MARKER: &str = "clean-shutdown";
const LOG_START_FILE: &str = "log-start";

/// What one `append` stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    /// Offset of the first record of the first batch.
    pub base_offset: u64,
    /// Offset of the last record of the last batch.
    pub last_offset: u64,
    pub batches: u32,
    pub records: u64,
    /// Largest max timestamp among the batches.
    pub max_timestamp: i64,
    pub bytes: usize,
}

/// Stored batches returned by a read, with the log's bounds at the time.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReadResult {
    /// Whole batches, exactly as stored.
    pub bytes: Vec<u8>,
    pub high_watermark: u64,
    pub log_start_offset: u64,
    pub log_end_offset: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RetentionReport {
    pub segments_deleted: usize,
    pub bytes_deleted: u64,
    pub log_start_offset: u64,
}

/// What opening the log found and repaired.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RecoveryReport {
    /// The log had been closed cleanly.
    pub clean: bool,
    /// The directory held no segment: the log was created by this open.
    pub created: bool,
    pub segments: usize,
    /// Bytes cut from torn or corrupt tails.
    pub truncated_bytes: u64,
    /// Segments whose index was missing or did not match and was rebuilt.
    pub indexes_rebuilt: usize,
    /// Segments dropped because an earlier one was cut short.
    pub segments_dropped: usize,
}

/// Work for a read, planned under the log's lock and carried out without it.
/// A read planned under the log's lock, to run without it ([`ReadPlan::execute`]).
pub struct ReadPlan {
    offset: u64,
    max_bytes: usize,
    parts: Vec<ReadPart>,
    pub(crate) result: ReadResult,
}

struct ReadPart {
    file: Arc<File>,
    path: PathBuf,
    /// First byte to scan from, and the offset of the batch that starts there.
    scan_pos: u64,
    scan_offset: u64,
    /// Bytes of this segment that may be read (the high watermark in the active one).
    limit: u64,
    /// The part is in the active (last) segment.
    active: bool,
}

/// How close to the end of the log a read must start to count as hot
/// ([`ReadPlan::is_hot`]): data written this recently is in the page cache unless the
/// machine is short of memory.
pub const HOT_READ_BYTES: u64 = 4 << 20;

impl ReadPlan {
    /// Whether the read touches nothing, or only the last [`HOT_READ_BYTES`] below the
    /// high watermark of the active segment: bytes just written, so in the page cache,
    /// and read in microseconds. A caller on an async runtime can run such a read in
    /// place rather than hand it to a thread that may block on the disk.
    pub fn is_hot(&self) -> bool {
        match &self.parts[..] {
            [] => true,
            [part] => part.active && part.limit.saturating_sub(part.scan_pos) <= HOT_READ_BYTES,
            _ => false,
        }
    }

    /// Reads the planned bytes. Segments below their limit are immutable, so this needs
    /// no lock.
    pub fn execute(mut self) -> Result<ReadResult> {
        let mut out: Vec<u8> = Vec::new();
        let mut offset = self.offset;
        'parts: for part in &self.parts {
            // Find the batch holding `offset`.
            let mut pos = part.scan_pos;
            let mut at = part.scan_offset;
            loop {
                let Some(h) = read_header(&part.file, &part.path, pos, part.limit)? else {
                    continue 'parts;
                };
                let Some(total) = h.total_len() else {
                    return Err(corrupt(&part.path, pos, "impossible batch length"));
                };
                let last = at + h.last_offset_delta.max(0) as u64;
                if last >= offset {
                    break;
                }
                at = last + 1;
                pos += total as u64;
            }
            // Read as much of the budget as the segment offers, then keep whole batches.
            let budget = self.max_bytes.saturating_sub(out.len()) as u64;
            let mut want = budget.min(part.limit - pos);
            if out.is_empty() {
                // At least one whole batch, however large, so a consumer always progresses.
                if let Some(h) = read_header(&part.file, &part.path, pos, part.limit)? {
                    let first = h.total_len().unwrap_or(0) as u64;
                    want = want.max(first.min(part.limit - pos));
                }
            }
            let start = out.len();
            out.resize(start + want as usize, 0);
            part.file
                .read_exact_at(&mut out[start..], pos)
                .ctx("read", &part.path)?;
            let mut keep = 0usize;
            let chunk = &out[start..];
            while let Some(h) = BatchHeader::parse(&chunk[keep..]) {
                let Some(total) = h.total_len() else { break };
                if keep + total > chunk.len() {
                    break;
                }
                keep += total;
                offset = (h.base_offset.max(0) as u64) + h.last_offset_delta.max(0) as u64 + 1;
            }
            let full = keep == chunk.len() && pos + want == part.limit;
            out.truncate(start + keep);
            if !full {
                break;
            }
        }
        self.result.bytes = out;
        Ok(self.result)
    }
}

fn corrupt(path: &Path, pos: u64, why: &str) -> LogError {
    LogError::Io {
        op: "read",
        path: path.to_path_buf(),
        source: std::io::Error::other(format!("{why} at byte {pos}")),
    }
}

/// Zeroed space kept ahead of the active segment's end under `always`, between these
/// bounds (it grows with the segment): see [`Log::preallocate_ahead`].
const PREALLOCATE_MIN: u64 = 16 * 1024;
const PREALLOCATE_MAX: u64 = 256 * 1024;
/// Syncs of more unsynced bytes than this get no preallocation.
const PREALLOCATE_MAX_SYNC: u64 = 64 * 1024;

/// What one sync covers (see [`Log::sync_target`]).
pub(crate) struct SyncTarget {
    pub(crate) files: Vec<(Arc<File>, PathBuf)>,
    pub(crate) offset: u64,
    pub(crate) pos: u64,
    pub(crate) generation: u64,
}

/// A partition log. Not thread-safe on its own: [`crate::SharedLog`] wraps it.
pub struct Log {
    dir: PathBuf,
    config: LogConfig,
    /// Sorted by base offset, never empty; the last one is active.
    segments: Vec<Segment>,
    log_start: u64,
    /// High watermark: what the flush policy has made committed.
    committed: u64,
    /// Byte position of `committed` in the active segment.
    committed_pos: u64,
    /// Bumped by every truncation, so a sync that raced one is not trusted.
    generation: u64,
    poisoned: Option<String>,
    closed: bool,
    recovery: RecoveryReport,
}

impl Log {
    /// Opens the log in `dir` (creating it if needed) and recovers it: indexes are loaded
    /// or rebuilt, the tail of the active segment is validated batch by batch and cut at
    /// the first torn or corrupt batch.
    pub fn open(dir: impl Into<PathBuf>, config: LogConfig) -> Result<Log> {
        let dir = dir.into();
        fs::create_dir_all(&dir).ctx("create directory", &dir)?;
        let marker = dir.join(CLEAN_MARKER);
        let clean = marker.exists();
        let mut bases = Vec::new();
        for entry in fs::read_dir(&dir).ctx("list", &dir)? {
            let entry = entry.ctx("list", &dir)?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(stem) = name.strip_suffix(".log") {
                if let Ok(base) = stem.parse::<u64>() {
                    bases.push(base);
                }
            } else if name.ends_with(".tmp") {
                let _ = fs::remove_file(entry.path());
            }
        }
        bases.sort_unstable();
        // Index files without a log are leftovers of an interrupted delete.
        for entry in fs::read_dir(&dir).ctx("list", &dir)? {
            let entry = entry.ctx("list", &dir)?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let stem = name
                .strip_suffix(".index")
                .or_else(|| name.strip_suffix(".timeindex"));
            if let Some(base) = stem.and_then(|s| s.parse::<u64>().ok()) {
                if bases.binary_search(&base).is_err() {
                    let _ = fs::remove_file(entry.path());
                }
            }
        }

        let interval = config.index_interval_bytes.max(1);
        let mut report = RecoveryReport {
            clean,
            created: bases.is_empty(),
            ..RecoveryReport::default()
        };
        let mut segments: Vec<Segment> = Vec::with_capacity(bases.len().max(1));
        let count = bases.len();
        for (i, base) in bases.iter().copied().enumerate() {
            let is_last = i + 1 == count;
            // Sealed segments had their index written at roll; the active one only at a
            // clean close.
            let trust = !is_last || clean;
            let (mut seg, scan, rebuilt) = Segment::open(&dir, base, trust, interval)?;
            if rebuilt && (!is_last || clean) {
                report.indexes_rebuilt += 1;
            }
            if let Some(prev) = segments.last() {
                if prev.next_offset != base {
                    warn!(dir = %dir.display(), segment = base, expected = prev.next_offset,
                        "segment does not continue the log; dropping it and every later segment");
                    report.segments_dropped += count - i;
                    for b in &bases[i..] {
                        drop_segment_files(&dir, *b);
                    }
                    break;
                }
            }
            let mut cut = false;
            if let Some(defect) = &scan.defect {
                let cut_bytes = seg.size - scan.valid_len;
                warn!(
                    dir = %dir.display(),
                    segment = base,
                    position = scan.valid_len,
                    bytes = cut_bytes,
                    next_offset = seg.next_offset,
                    reason = %defect,
                    "truncating torn or corrupt tail"
                );
                seg.truncate(scan.valid_len, interval)?;
                seg.file.sync_data().ctx("fdatasync", &seg.path)?;
                seg.dirty = false;
                report.truncated_bytes += cut_bytes;
                cut = true;
            }
            if rebuilt && !is_last && !cut {
                // Store the rebuilt index so the next open need not scan again; sync the
                // bytes first, as they may still be only in the page cache.
                seg.dirty = true;
                seg.sync()?;
                seg.store_index(&dir)?;
            }
            segments.push(seg);
            if cut && !is_last {
                warn!(dir = %dir.display(), dropped = count - i - 1,
                    "dropping segments after a corrupt sealed segment");
                report.segments_dropped += count - i - 1;
                for b in &bases[i + 1..] {
                    drop_segment_files(&dir, *b);
                }
                break;
            }
        }
        if segments.is_empty() {
            let start = read_log_start(&dir)?.unwrap_or(0);
            segments.push(Segment::create(&dir, start)?);
        }
        let log_end = segments.last().map_or(0, |s| s.next_offset);
        let first_base = segments.first().map_or(0, |s| s.base);
        let log_start = read_log_start(&dir)?
            .unwrap_or(0)
            .max(first_base)
            .min(log_end);
        if clean {
            fs::remove_file(&marker).ctx("delete", &marker)?;
        }
        report.segments = segments.len();
        if report.truncated_bytes > 0 || report.segments_dropped > 0 || (!clean && count > 0) {
            info!(dir = %dir.display(), clean, segments = report.segments,
                truncated_bytes = report.truncated_bytes, indexes_rebuilt = report.indexes_rebuilt,
                log_start, log_end, "recovered log");
        }
        let committed_pos = segments.last().map_or(0, |s| s.size);
        Ok(Log {
            dir,
            config,
            segments,
            log_start,
            committed: log_end,
            committed_pos,
            generation: 0,
            poisoned: None,
            closed: false,
            recovery: report,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn config(&self) -> &LogConfig {
        &self.config
    }
    pub fn set_config(&mut self, config: LogConfig) {
        self.config = config;
    }
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.recovery
    }
    pub fn log_start_offset(&self) -> u64 {
        self.log_start
    }
    pub fn log_end_offset(&self) -> u64 {
        self.active().next_offset
    }
    /// The highest offset readers may see: under `always`, what an fdatasync covers;
    /// under the other policies, the log end.
    pub fn high_watermark(&self) -> u64 {
        self.committed
    }
    /// Bytes in all segments.
    pub fn size_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.size).sum()
    }
    /// Bytes stored from the batch holding `offset` to the log end, placed by the
    /// sparse index (so it may count up to one index interval, 4 KiB by default, of the
    /// batches before it); 0 at or past the log end.
    pub fn bytes_from(&self, offset: u64) -> u64 {
        if offset >= self.log_end_offset() {
            return 0;
        }
        let first = self
            .segments
            .partition_point(|s| s.base <= offset)
            .saturating_sub(1);
        self.segments
            .iter()
            .skip(first)
            .map(|s| {
                if s.base <= offset {
                    let rel = u32::try_from(offset - s.base).unwrap_or(u32::MAX);
                    s.size.saturating_sub(u64::from(s.idx.floor(rel).pos))
                } else {
                    s.size
                }
            })
            .sum()
    }
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }
    /// Base offsets of the segments, oldest first.
    pub fn segment_bases(&self) -> Vec<u64> {
        self.segments.iter().map(|s| s.base).collect()
    }

    fn active(&self) -> &Segment {
        &self.segments[self.segments.len() - 1]
    }
    fn active_mut(&mut self) -> &mut Segment {
        let n = self.segments.len();
        &mut self.segments[n - 1]
    }

    fn check_writable(&self) -> Result<()> {
        if self.closed {
            return Err(LogError::Closed {
                dir: self.dir.clone(),
            });
        }
        if let Some(reason) = &self.poisoned {
            return Err(LogError::Poisoned {
                dir: self.dir.clone(),
                reason: reason.clone(),
            });
        }
        Ok(())
    }

    pub(crate) fn poison(&mut self, reason: String) {
        warn!(dir = %self.dir.display(), %reason, "log refuses further writes");
        self.poisoned = Some(reason);
    }

    /// Appends one or more concatenated batches at the wall-clock time `now_ms`.
    ///
    /// Every batch is checked (header, length, CRC-32C, size limit) before anything is
    /// written, so a bad batch stores nothing. Base offsets are written into `batches`.
    pub fn append(&mut self, batches: &mut [u8], now_ms: i64) -> Result<AppendInfo> {
        let checked = check_batches(batches)?;
        self.append_checked(batches, &checked, now_ms)
    }

    /// Appends batches that [`check_batches`] accepted. Split from `append` so that
    /// [`crate::SharedLog`] can run the CRC checks before taking its lock.
    pub(crate) fn append_checked(
        &mut self,
        batches: &mut [u8],
        headers: &[CheckedBatch],
        now_ms: i64,
    ) -> Result<AppendInfo> {
        self.check_writable()?;
        if let Some(b) = headers
            .iter()
            .find(|b| b.len > self.config.max_batch_bytes as usize)
        {
            return Err(LogError::BatchTooLarge {
                size: b.len,
                max: self.config.max_batch_bytes,
            });
        }
        let records: u64 = headers.iter().map(|b| b.header.record_count as u64).sum();
        let len = batches.len() as u64;
        self.maybe_roll(len, records, now_ms)?;

        let interval = self.config.index_interval_bytes.max(1);
        let first = self.log_end_offset();
        let mut next = first;
        let mut max_ts = -1i64;
        for CheckedBatch {
            position: p,
            header: h,
            ..
        } in headers
        {
            batch::set_base_offset(&mut batches[*p..], next as i64);
            next += h.last_offset_delta as u64 + 1;
            max_ts = max_ts.max(h.max_timestamp);
        }
        let seg = self.active_mut();
        let at = seg.size;
        if let Err(e) = seg.file.write_all_at(batches, at) {
            // Put the file back as it was; if even that fails the file's tail is unknown.
            let path = seg.path.clone();
            seg.allocated = at;
            if let Err(e2) = seg.file.set_len(at) {
                self.poison(format!("write failed ({e}) and could not be undone ({e2})"));
            }
            return Err(LogError::Io {
                op: "write",
                path,
                source: e,
            });
        }
        let mut rel_offset = first;
        for CheckedBatch {
            position: p,
            header: h,
            len: total,
        } in headers
        {
            seg.max_ts = seg.max_ts.max(h.max_timestamp);
            let rel = (rel_offset - seg.base) as u32;
            seg.idx.on_batch(
                rel,
                (at + *p as u64) as u32,
                *total as u32,
                seg.max_ts,
                interval,
            );
            rel_offset += h.last_offset_delta as u64 + 1;
        }
        seg.size += len;
        seg.allocated = seg.allocated.max(seg.size);
        seg.next_offset = next;
        seg.dirty = true;
        seg.first_append_ms.get_or_insert(now_ms);
        let size = seg.size;
        if self.config.flush != FlushPolicy::Always {
            self.committed = next;
            self.committed_pos = size;
        }
        Ok(AppendInfo {
            base_offset: first,
            last_offset: next - 1,
            batches: headers.len() as u32,
            records,
            max_timestamp: max_ts,
            bytes: len as usize,
        })
    }

    fn maybe_roll(&mut self, incoming: u64, records: u64, now_ms: i64) -> Result<()> {
        if self.roll_due(incoming, records, now_ms) {
            self.roll()?;
        }
        Ok(())
    }

    /// Whether appending `incoming` bytes holding `records` records at `now_ms` rolls the
    /// active segment first (by size, by age, or because its index would overflow).
    pub fn roll_due(&self, incoming: u64, records: u64, now_ms: i64) -> bool {
        let seg = self.active();
        if seg.size == 0 {
            return false;
        }
        let too_big = seg.size + incoming > self.config.segment_bytes;
        // Index entries hold 32-bit relative offsets and positions.
        let too_many = seg.next_offset - seg.base + records > u64::from(u32::MAX) / 2
            || seg.size + incoming > u64::from(u32::MAX) / 2;
        let too_old = match (self.config.segment_ms, seg.first_append_ms) {
            (Some(ms), Some(first)) => now_ms.saturating_sub(first) >= ms as i64,
            _ => false,
        };
        too_big || too_many || too_old
    }

    /// Seals the active segment and starts a new one at the log end. A no-op on an empty
    /// active segment. Under `always` and `interval` the sealed segment is synced first,
    /// so every sealed segment lies below the high watermark.
    pub fn roll(&mut self) -> Result<()> {
        self.check_writable()?;
        if self.active().size == 0 {
            return Ok(());
        }
        let policy = self.config.flush;
        let dir = self.dir.clone();
        let seg = self.active_mut();
        // A sealed segment is exactly its batches: cut the zeros written ahead.
        if let Err(e) = seg.trim() {
            self.poison(e.to_string());
            return Err(e);
        }
        if policy != FlushPolicy::Never {
            if let Err(e) = seg.sync() {
                self.poison(e.to_string());
                return Err(e);
            }
            // Under `never` the bytes are not synced yet, so the index waits for close.
            seg.store_index(&dir)?;
        }
        let next = seg.next_offset;
        let new = Segment::create(&dir, next)?;
        self.segments.push(new);
        self.committed = next;
        self.committed_pos = 0;
        Ok(())
    }

    /// What a sync of the log must cover now: the dirty segment files, the offset and
    /// position they reach, and the generation for [`Log::mark_durable`].
    pub(crate) fn sync_target(&self) -> SyncTarget {
        SyncTarget {
            files: self
                .segments
                .iter()
                .filter(|s| s.dirty)
                .map(|s| (s.file.clone(), s.path.clone()))
                .collect(),
            offset: self.log_end_offset(),
            pos: self.active().size,
            generation: self.generation,
        }
    }

    /// Under `always`, while syncs are small (a small produce request each), keeps zeroed
    /// space ahead of the active segment's end, so that syncs write only data (see
    /// [`Segment::preallocate`]). Called right after a sync covering `synced_bytes`
    /// completed: the zeros are written then and their writeback starts at once, so it
    /// is done, or nearly, when the next sync needs the disk. Large syncs already spread
    /// the cost of growing the file over many bytes, so they get none, and the zeros
    /// cost no extra writes there.
    pub(crate) fn preallocate_ahead(&mut self, synced_bytes: u64) {
        if self.config.flush != FlushPolicy::Always || self.closed || self.poisoned.is_some() {
            return;
        }
        if synced_bytes == 0 || synced_bytes > PREALLOCATE_MAX_SYNC {
            return;
        }
        let limit = self.config.segment_bytes;
        let Some(seg) = self.segments.last_mut() else {
            return;
        };
        // Grow with the segment, so that a partition written a little holds little.
        let chunk = (seg.size / 2).clamp(PREALLOCATE_MIN, PREALLOCATE_MAX);
        if seg.allocated >= seg.size + chunk / 2 {
            return;
        }
        // Past the roll point is no use; a whole number of pages.
        let to = (seg.size + chunk)
            .min(limit.max(seg.size))
            .next_multiple_of(4096);
        if to <= seg.allocated {
            return;
        }
        if let Err(e) = seg.preallocate(to) {
            warn!(dir = %self.dir.display(), error = %e,
                "could not preallocate segment space; appends grow the file");
        }
    }

    /// Records that an fdatasync covered the log up to `offset` (at byte `pos` of the
    /// active segment) as it was in `generation`.
    /// Returns how many bytes of the active segment became durable (0 when the sync
    /// covered nothing new).
    pub(crate) fn mark_durable(
        &mut self,
        offset: u64,
        pos: u64,
        generation: u64,
        files: usize,
    ) -> u64 {
        if generation != self.generation || offset > self.log_end_offset() {
            return 0;
        }
        if files > 0 && offset == self.log_end_offset() {
            for s in &mut self.segments {
                s.dirty = false;
            }
        }
        if offset > self.committed {
            let synced = pos.saturating_sub(self.committed_pos);
            self.committed = offset;
            self.committed_pos = pos;
            return synced;
        }
        0
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// Makes everything written so far durable.
    pub fn sync(&mut self) -> Result<()> {
        for s in &mut self.segments {
            s.sync()?;
        }
        self.committed = self.log_end_offset();
        self.committed_pos = self.active().size;
        Ok(())
    }

    /// Plans a read of whole batches from the one holding `offset`, at most `max_bytes`
    /// (but at least one batch), below the high watermark.
    pub fn plan_read(&self, offset: u64, max_bytes: usize) -> Result<ReadPlan> {
        let log_end = self.log_end_offset();
        if offset < self.log_start || offset > log_end {
            return Err(LogError::OffsetOutOfRange {
                offset,
                log_start: self.log_start,
                log_end,
            });
        }
        let result = ReadResult {
            bytes: Vec::new(),
            high_watermark: self.committed,
            log_start_offset: self.log_start,
            log_end_offset: log_end,
        };
        let mut parts = Vec::new();
        if offset < self.committed {
            let first = self
                .segments
                .partition_point(|s| s.base <= offset)
                .saturating_sub(1);
            let last = self.segments.len() - 1;
            for (i, s) in self.segments.iter().enumerate().skip(first) {
                let limit = if i == last {
                    self.committed_pos
                } else {
                    s.size
                };
                if limit == 0 || s.next_offset <= offset {
                    continue;
                }
                let (scan_pos, scan_offset) = if s.base <= offset {
                    let f = s.idx.floor((offset - s.base) as u32);
                    (u64::from(f.pos), s.base + u64::from(f.rel))
                } else {
                    (0, s.base)
                };
                parts.push(ReadPart {
                    file: s.file.clone(),
                    path: s.path.clone(),
                    scan_pos,
                    scan_offset,
                    limit,
                    active: i == last,
                });
            }
        }
        Ok(ReadPlan {
            offset,
            max_bytes,
            parts,
            result,
        })
    }

    /// Reads whole stored batches from the one holding `offset`: at most `max_bytes` in
    /// all, but at least one batch when any lies below the high watermark.
    pub fn read(&self, offset: u64, max_bytes: usize) -> Result<ReadResult> {
        self.plan_read(offset, max_bytes)?.execute()
    }

    /// The offset, at or after the log start, of the first record whose timestamp is at
    /// or after `ts` (Kafka ListOffsets by time); `None` if no record is that recent.
    /// Inside a compressed batch the batch's first offset stands for its records.
    pub fn offset_for_timestamp(&self, ts: i64) -> Result<Option<u64>> {
        for s in &self.segments {
            if s.size == 0 || s.max_ts < ts || s.next_offset <= self.log_start {
                continue;
            }
            let (mut pos, mut at) = match s.idx.time_floor(ts) {
                Some(rel) => {
                    let f = s.idx.floor(rel);
                    (u64::from(f.pos), s.base + u64::from(f.rel))
                }
                None => (0, s.base),
            };
            while let Some(h) = read_header(&s.file, &s.path, pos, s.size)? {
                let Some(total) = h.total_len() else { break };
                let last = at + h.last_offset_delta.max(0) as u64;
                if h.max_timestamp >= ts && last >= self.log_start {
                    if h.compression() != 0 {
                        // Records inside a compressed batch are not read here; Kafka
                        // clients skip the earlier records of a batch they fetch.
                        return Ok(Some(at.max(self.log_start)));
                    }
                    let mut whole = vec![0u8; total];
                    s.file.read_exact_at(&mut whole, pos).ctx("read", &s.path)?;
                    match batch::first_record_at_or_after(&whole, ts, self.log_start) {
                        Some(offset) => return Ok(Some(offset)),
                        // Its late records all lie below the log start: go on.
                        None if batch::validate(&whole).is_ok() => {}
                        None => return Ok(Some(at.max(self.log_start))),
                    }
                }
                at = last + 1;
                pos += total as u64;
            }
        }
        Ok(None)
    }

    /// Deletes old segments by age (`retention_ms`, judged by each segment's newest
    /// timestamp) and then by total size (`retention_bytes`). Never deletes the active
    /// segment; an active segment that has wholly expired is rolled first so it can go.
    pub fn apply_retention(&mut self, now_ms: i64) -> Result<RetentionReport> {
        self.check_writable()?;
        let mut report = RetentionReport::default();
        if let Some(ms) = self.config.retention_ms {
            let cutoff = now_ms.saturating_sub(ms as i64);
            let expired = |s: &Segment| s.max_ts < cutoff;
            if self.segments.len() == 1
                || self.segments[..self.segments.len() - 1].iter().all(expired)
            {
                let a = self.active();
                if a.size > 0 && expired(a) {
                    self.roll()?;
                }
            }
            while self.segments.len() > 1 && expired(&self.segments[0]) {
                self.delete_oldest(&mut report)?;
            }
        }
        if let Some(limit) = self.config.retention_bytes {
            while self.segments.len() > 1 && self.size_bytes() - self.segments[0].size >= limit {
                self.delete_oldest(&mut report)?;
            }
        }
        report.log_start_offset = self.log_start;
        if report.segments_deleted > 0 {
            info!(dir = %self.dir.display(), segments = report.segments_deleted,
                bytes = report.bytes_deleted, log_start = self.log_start, "retention deleted segments");
        }
        Ok(report)
    }

    fn delete_oldest(&mut self, report: &mut RetentionReport) -> Result<()> {
        let seg = self.segments.remove(0);
        seg.remove_files(&self.dir)?;
        report.segments_deleted += 1;
        report.bytes_deleted += seg.size;
        self.log_start = self.log_start.max(self.segments[0].base);
        sync_dir(&self.dir)
    }

    /// Removes every batch at or after `offset`: the log end becomes the base offset of
    /// the batch holding `offset` (or `offset` itself on a batch boundary). For a Raft log
    /// store and for replica truncation. A no-op at or past the log end.
    pub fn truncate_suffix(&mut self, offset: u64) -> Result<()> {
        self.check_writable()?;
        let log_end = self.log_end_offset();
        if offset >= log_end {
            return Ok(());
        }
        if offset < self.log_start {
            return Err(LogError::OffsetOutOfRange {
                offset,
                log_start: self.log_start,
                log_end,
            });
        }
        let i = self
            .segments
            .partition_point(|s| s.base <= offset)
            .saturating_sub(1);
        let (pos, new_end) = if offset <= self.segments[i].base {
            (0, self.segments[i].base)
        } else {
            self.segments[i].locate(offset)?
        };
        while self.segments.len() > i + 1 {
            if let Some(s) = self.segments.pop() {
                s.remove_files(&self.dir)?;
            }
        }
        let interval = self.config.index_interval_bytes.max(1);
        let policy = self.config.flush;
        let dir = self.dir.clone();
        let seg = self.active_mut();
        seg.truncate(pos, interval)?;
        seg.first_append_ms = None;
        // Its index files, if sealed, now describe bytes that are gone.
        let _ = fs::remove_file(segment::index_path(&dir, seg.base));
        let _ = fs::remove_file(segment::time_index_path(&dir, seg.base));
        if policy != FlushPolicy::Never {
            seg.sync()?;
        }
        sync_dir(&dir)?;
        debug_assert_eq!(self.active().next_offset, new_end);
        self.generation += 1;
        self.committed = new_end;
        self.committed_pos = pos;
        if new_end < self.log_start {
            write_log_start(&self.dir, new_end)?;
            self.log_start = new_end;
        }
        Ok(())
    }

    /// Moves the log start up to `offset` (Kafka DeleteRecords) and deletes the segments
    /// wholly below it. `offset` may not pass the log end.
    pub fn purge_prefix(&mut self, offset: u64) -> Result<()> {
        self.check_writable()?;
        let log_end = self.log_end_offset();
        if offset > log_end {
            return Err(LogError::OffsetOutOfRange {
                offset,
                log_start: self.log_start,
                log_end,
            });
        }
        if offset <= self.log_start {
            return Ok(());
        }
        write_log_start(&self.dir, offset)?;
        self.log_start = offset;
        if offset == log_end && self.active().size > 0 {
            self.roll()?;
        }
        let mut report = RetentionReport::default();
        while self.segments.len() > 1 && self.segments[0].next_offset <= offset {
            self.delete_oldest(&mut report)?;
        }
        Ok(())
    }

    /// Syncs, writes the active segment's index and the clean-shutdown marker. The log
    /// refuses writes afterwards.
    pub fn close(&mut self) -> Result<()> {
        if self.closed {
            return Ok(());
        }
        self.active_mut().trim()?;
        self.sync()?;
        let dir = self.dir.clone();
        let last = self.segments.len() - 1;
        for (i, s) in self.segments.iter_mut().enumerate() {
            if i == last || !s.index_stored {
                s.store_index(&dir)?;
            }
        }
        let marker = self.dir.join(CLEAN_MARKER);
        File::create(&marker).ctx("create", &marker)?;
        sync_dir(&self.dir)?;
        self.closed = true;
        Ok(())
    }
}

/// One batch of an append request that passed [`check_batches`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckedBatch {
    /// Byte position of the batch in the request buffer.
    pub position: usize,
    pub header: BatchHeader,
    /// Total length in bytes, including the 12-byte prefix.
    pub len: usize,
}

/// Checks a buffer of concatenated batches (structure, CRC-32C, record count) without
/// touching the log. Returns each batch's position, header and length.
pub fn check_batches(batches: &[u8]) -> Result<Vec<CheckedBatch>> {
    let mut headers = Vec::with_capacity(1);
    let mut pos = 0usize;
    while pos < batches.len() {
        let (h, total) = batch::validate(&batches[pos..]).map_err(|d| match d {
            BatchDefect::CrcMismatch { stored, computed } => LogError::CorruptBatch {
                position: pos,
                stored,
                computed,
            },
            other => LogError::InvalidBatch {
                position: pos,
                reason: other.to_string(),
            },
        })?;
        if h.record_count < 1 || i64::from(h.record_count) != i64::from(h.last_offset_delta) + 1 {
            return Err(LogError::InvalidBatch {
                position: pos,
                reason: format!(
                    "record count {} does not match last offset delta {}",
                    h.record_count, h.last_offset_delta
                ),
            });
        }
        headers.push(CheckedBatch {
            position: pos,
            header: h,
            len: total,
        });
        pos += total;
    }
    if headers.is_empty() {
        return Err(LogError::InvalidBatch {
            position: 0,
            reason: "no record batch given".to_string(),
        });
    }
    Ok(headers)
}

fn drop_segment_files(dir: &Path, base: u64) {
    for p in [
        segment::log_path(dir, base),
        segment::index_path(dir, base),
        segment::time_index_path(dir, base),
    ] {
        let _ = fs::remove_file(p);
    }
}

fn read_log_start(dir: &Path) -> Result<Option<u64>> {
    let path = dir.join(LOG_START_FILE);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).ctx("read", &path),
    };
    if bytes.len() != 12 || crc32c::crc32c(&bytes[..8]).to_be_bytes() != bytes[8..12] {
        warn!(path = %path.display(), "ignoring corrupt log start file");
        return Ok(None);
    }
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[..8]);
    Ok(Some(u64::from_be_bytes(b)))
}

fn write_log_start(dir: &Path, offset: u64) -> Result<()> {
    let path = dir.join(LOG_START_FILE);
    let tmp = dir.join("log-start.tmp");
    let mut bytes = offset.to_be_bytes().to_vec();
    bytes.extend_from_slice(&crc32c::crc32c(&offset.to_be_bytes()).to_be_bytes());
    let mut f = File::create(&tmp).ctx("create", &tmp)?;
    f.write_all(&bytes).ctx("write", &tmp)?;
    f.sync_data().ctx("fdatasync", &tmp)?;
    fs::rename(&tmp, &path).ctx("rename", &path)?;
    sync_dir(dir)
}
