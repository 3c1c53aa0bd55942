//! STUB — being implemented. Signatures are final.
use std::path::{Path, PathBuf};

use crate::{AppendInfo, LogConfig, ReadResult, RecoveryReport, Result, RetentionReport};

/// Thread-safe handle on one partition log, with group commit.
pub struct SharedLog {
    dir: PathBuf,
}

impl SharedLog {
    /// Opens (creating if needed) the log in `dir`, recovering its tail.
    pub fn open(dir: impl Into<PathBuf>, config: LogConfig) -> Result<SharedLog> {
        let _ = config;
        Ok(SharedLog { dir: dir.into() })
    }
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// Validates one or more concatenated RecordBatch v2 batches, assigns their base
    /// offsets in place, appends them and, under `FlushPolicy::Always`, returns only once
    /// an fdatasync covers them.
    pub fn append(&self, batches: &mut [u8]) -> Result<AppendInfo> {
        let _ = batches;
        todo!()
    }
    /// As `append`, with the wall clock given (milliseconds since the epoch).
    pub fn append_at(&self, batches: &mut [u8], now_ms: i64) -> Result<AppendInfo> {
        let _ = (batches, now_ms);
        todo!()
    }
    /// Whole stored batches from the one containing `offset`, at most `max_bytes` in all
    /// but always at least one batch when any is readable; never past the high watermark.
    pub fn read(&self, offset: u64, max_bytes: usize) -> Result<ReadResult> {
        let _ = (offset, max_bytes);
        todo!()
    }
    /// The first offset of the first batch whose max timestamp is at or after `ts`.
    pub fn offset_for_timestamp(&self, ts: i64) -> Result<Option<u64>> {
        let _ = ts;
        todo!()
    }
    pub fn log_start_offset(&self) -> u64 {
        todo!()
    }
    pub fn log_end_offset(&self) -> u64 {
        todo!()
    }
    pub fn high_watermark(&self) -> u64 {
        todo!()
    }
    pub fn size_bytes(&self) -> u64 {
        todo!()
    }
    pub fn roll(&self) -> Result<()> {
        todo!()
    }
    pub fn apply_retention(&self, now_ms: i64) -> Result<RetentionReport> {
        let _ = now_ms;
        todo!()
    }
    pub fn truncate_suffix(&self, offset: u64) -> Result<()> {
        let _ = offset;
        todo!()
    }
    pub fn purge_prefix(&self, offset: u64) -> Result<()> {
        let _ = offset;
        todo!()
    }
    /// Makes everything appended so far durable (used by the interval flusher and shutdown).
    pub fn sync(&self) -> Result<()> {
        todo!()
    }
    pub fn config(&self) -> LogConfig {
        todo!()
    }
    pub fn set_config(&self, config: LogConfig) {
        let _ = config;
        todo!()
    }
    /// Syncs, writes the indexes and the clean-shutdown marker; later calls fail with `Closed`.
    pub fn close(&self) -> Result<()> {
        todo!()
    }
    pub fn recovery_report(&self) -> RecoveryReport {
        todo!()
    }
}
