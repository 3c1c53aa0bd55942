//! Errors of the partition log. Each names the file or offset it is about.

use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The batch (or buffer of batches) handed to `append` is not a valid RecordBatch v2.
    #[error("invalid record batch at byte {position} of the request: {reason}")]
    InvalidBatch { position: usize, reason: String },
    /// CRC-32C mismatch on a batch handed to `append`.
    #[error("corrupt record batch at byte {position} of the request: CRC-32C is {stored:#010x}, computed {computed:#010x}")]
    CorruptBatch {
        position: usize,
        stored: u32,
        computed: u32,
    },
    #[error("record batch of {size} bytes is larger than the limit of {max} bytes")]
    BatchTooLarge { size: usize, max: u32 },
    #[error("offset {offset} is out of range: the log holds [{log_start}, {log_end})")]
    OffsetOutOfRange {
        offset: u64,
        log_start: u64,
        log_end: u64,
    },
    /// A previous `fdatasync` failed. The kernel may have dropped the dirty pages, so the
    /// log cannot know what is on disk; it refuses further writes until reopened.
    #[error("log {dir} refuses writes after a failed sync: {reason}")]
    Poisoned { dir: PathBuf, reason: String },
    #[error("data directory {dir} is locked by another process (is another wharf running on it?)")]
    Locked { dir: PathBuf },
    #[error("log {dir} is closed")]
    Closed { dir: PathBuf },
}

pub type Result<T, E = LogError> = std::result::Result<T, E>;

pub(crate) trait IoContext<T> {
    fn ctx(self, op: &'static str, path: &std::path::Path) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, op: &'static str, path: &std::path::Path) -> Result<T> {
        self.map_err(|source| LogError::Io {
            op,
            path: path.to_path_buf(),
            source,
        })
    }
}
