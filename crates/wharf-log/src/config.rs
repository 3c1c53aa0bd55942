//! Per-log settings and the flush (durability) policy.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// When appended bytes are made durable with `fdatasync`.
///
/// | policy          | an append returns…                                   | a SIGKILL loses |
/// |-----------------|------------------------------------------------------|-----------------|
/// | `always`        | after an `fdatasync` that covers it (group commit)   | nothing acked   |
/// | `interval:<ms>` | at once; a flusher syncs every `<ms>` milliseconds   | nothing (the page cache survives a process kill); a machine crash loses up to `<ms>` |
/// | `never`         | at once; the kernel writes back when it likes        | nothing on a process kill; a machine crash loses unsynced data |
///
/// `always` is the default: it is the only policy under which an acknowledged batch
/// survives a power loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FlushPolicy {
    /// Every append is acknowledged only after an `fdatasync` that covers it; concurrent
    /// appenders share one sync.
    #[default]
    Always,
    /// Appends are acknowledged once written; the owner of the log calls
    /// [`crate::SharedLog::sync`] at this interval.
    Interval(Duration),
    /// Appends are acknowledged once written; only roll, close and explicit syncs flush.
    Never,
}

impl fmt::Display for FlushPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FlushPolicy::Always => f.write_str("always"),
            FlushPolicy::Interval(d) => write!(f, "interval:{}", d.as_millis()),
            FlushPolicy::Never => f.write_str("never"),
        }
    }
}

/// Error parsing a [`FlushPolicy`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid flush policy {0:?}: expected `always`, `never` or `interval:<milliseconds>` (e.g. `interval:100`)")]
pub struct ParseFlushPolicyError(String);

impl FromStr for FlushPolicy {
    type Err = ParseFlushPolicyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseFlushPolicyError(s.to_string());
        match s.trim() {
            "always" => Ok(FlushPolicy::Always),
            "never" => Ok(FlushPolicy::Never),
            other => {
                let ms = other.strip_prefix("interval:").ok_or_else(err)?;
                let ms: u64 = ms.trim().parse().map_err(|_| err())?;
                if ms == 0 {
                    return Err(err());
                }
                Ok(FlushPolicy::Interval(Duration::from_millis(ms)))
            }
        }
    }
}

/// Settings of one partition log. Sizes in bytes, ages in milliseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// Roll to a new segment before an append would take the active one past this size
    /// (Kafka `segment.bytes`). Default 1 GiB.
    pub segment_bytes: u64,
    /// Roll the active segment once its first batch is older than this (Kafka
    /// `segment.ms`). Default 7 days. `None` disables rolling by age.
    pub segment_ms: Option<u64>,
    /// Delete the oldest segments while the log is larger than this (Kafka
    /// `retention.bytes`). Default `None`: unlimited.
    pub retention_bytes: Option<u64>,
    /// Delete segments whose newest timestamp is older than this (Kafka `retention.ms`).
    /// Default 7 days. `None`: keep forever.
    pub retention_ms: Option<u64>,
    /// Largest batch accepted, in bytes including its 12-byte offset and length prefix
    /// (Kafka `max.message.bytes`). Default 1 MiB + 12.
    pub max_batch_bytes: u32,
    /// One offset and one time index entry per this many bytes of log. Default 4 KiB.
    pub index_interval_bytes: u32,
    /// When appends become durable.
    pub flush: FlushPolicy,
}

pub const DEFAULT_SEGMENT_BYTES: u64 = 1 << 30;
pub const DEFAULT_RETENTION_MS: u64 = 7 * 24 * 60 * 60 * 1000;
pub const DEFAULT_MAX_BATCH_BYTES: u32 = (1 << 20) + 12;

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            segment_ms: Some(DEFAULT_RETENTION_MS),
            retention_bytes: None,
            retention_ms: Some(DEFAULT_RETENTION_MS),
            max_batch_bytes: DEFAULT_MAX_BATCH_BYTES,
            index_interval_bytes: 4096,
            flush: FlushPolicy::Always,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flush_policy_round_trips_through_text() {
        for p in [
            FlushPolicy::Always,
            FlushPolicy::Never,
            FlushPolicy::Interval(Duration::from_millis(250)),
        ] {
            assert_eq!(p.to_string().parse::<FlushPolicy>(), Ok(p));
        }
        assert!("interval:".parse::<FlushPolicy>().is_err());
        assert!("interval:0".parse::<FlushPolicy>().is_err());
        assert!("sometimes".parse::<FlushPolicy>().is_err());
    }
}
