//! The Wharf partition log.
//!
//! One log per partition: a directory of segments holding Kafka RecordBatch v2 bytes
//! exactly as producers sent them, with the base offset assigned in place (the batch
//! CRC-32C does not cover it). Plain synchronous Rust over `std::fs`: no async runtime,
//! no protocol crates. The broker core runs it on its own threads.
//!
//! ```text
//! <dir>/00000000000000000000.log        batches, back to back
//!      /00000000000000000000.index      sparse offset index (sealed segments, clean close)
//!      /00000000000000000000.timeindex  sparse time index
//!      /log-start                       log start offset after purge_prefix
//!      /clean-shutdown                  present only while the log is closed cleanly
//! ```
//!
//! [`SharedLog`] is the thread-safe handle with group commit; [`Log`] is the
//! single-threaded engine underneath.

pub mod batch;
mod config;
mod error;
mod index;
mod lock;
mod log;
mod segment;
mod shared;

pub use config::{
    FlushPolicy, LogConfig, ParseFlushPolicyError, DEFAULT_MAX_BATCH_BYTES, DEFAULT_RETENTION_MS,
    DEFAULT_SEGMENT_BYTES,
};
pub use error::{LogError, Result};
pub use lock::DirLock;
pub use log::{
    check_batches, AppendInfo, CheckedBatch, Log, ReadPlan, ReadResult, RecoveryReport,
    RetentionReport, HOT_READ_BYTES,
};
pub use shared::{Admission, AppendOutcome, AppendWithError, Durability, LogStats, SharedLog};
