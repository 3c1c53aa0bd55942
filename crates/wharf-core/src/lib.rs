//! Wharf's broker core: topics, their partitions and the registry that persists them,
//! and the state of idempotent producers.
//!
//! The core owns the model and knows nothing of wire formats beyond the record batch.
//! Front-ends (Kafka, HTTP, AMQP) hold a [`Broker`] and call it; the broker runs each
//! partition's synchronous [`wharf_log::SharedLog`] on tokio's blocking pool.
//!
//! The seam a replicated log will later fill is narrow on purpose: append batches and
//! get their offsets ([`Broker::append`]), read below the high watermark
//! ([`Broker::read`]), and wait for the high watermark to move
//! ([`Broker::wait_for_high_watermark`]).

mod broker;
mod dedup;
mod error;
pub mod group;
pub mod headers;
pub mod history;
pub mod journal;
pub mod metrics;
pub mod observe;
pub mod otel;
pub mod partitioner;
pub mod producer;
mod publish;
pub mod queue;
pub mod records;
pub mod registry;
mod topic;

pub use broker::{
    Broker, BrokerConfig, PartitionOffsets, PendingProduce, ProduceGate,
    DEFAULT_PRODUCER_ID_EXPIRATION, DEFAULT_PRODUCER_SNAPSHOT_INTERVAL_BYTES,
    DEFAULT_RETENTION_CHECK_INTERVAL, TOPICS_DIR,
};
pub use error::{CoreError, Result};
pub use group::{GroupConfig, GroupCoordinator, GroupError};
pub use producer::ProducerIdAndEpoch;
pub use publish::{Publish, Published, MAX_PUBLISH_MESSAGES};
pub use topic::{
    CleanupPolicy, ConfigOp, NewTopic, TopicConfig, TopicDescription, TopicName, CLEANUP_POLICY,
    DEDUP_WINDOW_MS, DEFAULT_DEDUP_WINDOW_MS, DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_RETENTION_MS,
    DEFAULT_SEGMENT_BYTES, MAX_DEDUP_WINDOW_MS, MAX_MESSAGE_BYTES, MAX_PARTITIONS,
    MAX_TOPIC_NAME_LEN, MESSAGE_TTL_MS, MIN_SEGMENT_BYTES, RETENTION_BYTES, RETENTION_MS,
    SEGMENT_BYTES, TOPIC_CONFIG_KEYS,
};
pub use wharf_log::{AppendInfo, AppendOutcome, FlushPolicy, LogStats, ReadResult};
