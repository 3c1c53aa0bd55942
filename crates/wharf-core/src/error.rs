//! Errors of the broker core. Each names the topic, partition, key or file it is about,
//! so a front-end can turn it into its protocol's error code and a readable message.
//! Where a variant has a Kafka error code, its doc comment names it; the producer-state
//! variants map 1:1 to theirs.

use std::io;
use std::path::{Path, PathBuf};

use wharf_log::LogError;

/// Everything that can go wrong in the broker core.
#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    /// The topic name breaks Kafka's rules (Kafka `INVALID_TOPIC_EXCEPTION`).
    #[error("invalid topic name {name:?}: {reason}")]
    InvalidTopicName { name: String, reason: String },

    /// A topic setting has a value outside its domain (Kafka `INVALID_CONFIG`).
    #[error("invalid value {value:?} for topic config `{key}`: {reason}")]
    InvalidConfig {
        key: String,
        value: String,
        reason: String,
    },

    /// The key is not a topic setting Wharf knows (Kafka `INVALID_CONFIG`).
    #[error("unknown topic config `{key}` (supported: {supported})")]
    UnknownConfig { key: String, supported: String },

    /// A valid Kafka setting whose feature Wharf does not have yet, such as
    /// `cleanup.policy=compact` (Kafka `INVALID_CONFIG`).
    #[error("topic config `{key}={value}` is not supported yet: {reason}")]
    UnsupportedConfig {
        key: String,
        value: String,
        reason: String,
    },

    /// A partition count that is zero, too large, or not an increase
    /// (Kafka `INVALID_PARTITIONS`).
    #[error("invalid partition count {count} for topic {topic:?}: {reason}")]
    InvalidPartitions {
        topic: String,
        count: u32,
        reason: String,
    },

    /// Kafka `TOPIC_ALREADY_EXISTS`.
    #[error("topic {name:?} already exists")]
    TopicExists { name: String },

    /// Kafka `UNKNOWN_TOPIC_OR_PARTITION`.
    #[error("unknown topic {name:?}")]
    UnknownTopic { name: String },

    /// Kafka `UNKNOWN_TOPIC_OR_PARTITION`.
    #[error(
        "unknown partition {partition} of topic {topic:?}, which has {partitions} partition(s)"
    )]
    UnknownPartition {
        topic: String,
        partition: u32,
        partitions: u32,
    },

    /// No record at this offset: below the log start, at or past the high watermark,
    /// or an offset that holds no data record. Kafka `OFFSET_OUT_OF_RANGE`.
    #[error("topic {topic:?} partition {partition}: no message at offset {offset} ({detail})")]
    UnknownOffset {
        topic: String,
        partition: u32,
        offset: u64,
        detail: String,
    },

    /// `topics.json` exists but cannot be understood. The broker refuses to start rather
    /// than guess, because guessing could delete topics.
    #[error("topic registry {path} is corrupt: {reason}")]
    CorruptRegistry { path: PathBuf, reason: String },

    /// The group coordinator's offsets snapshot or journal header cannot be understood
    /// (a torn journal tail is not this: it is cut and logged).
    #[error("group offsets file {path} is corrupt: {reason}")]
    CorruptGroupJournal { path: PathBuf, reason: String },

    /// Another journal's snapshot or journal header (see `crate::journal`) cannot be
    /// understood (a torn journal tail is not this: it is cut and logged).
    #[error("journal file {path} is corrupt: {reason}")]
    CorruptJournal { path: PathBuf, reason: String },

    /// Another process holds the data directory's lock.
    #[error("data directory {dir} is locked: {lock} is held by another process (is another wharf running on this data directory?)", lock = dir.join(".lock").display())]
    DataDirLocked { dir: PathBuf },

    /// File system trouble outside the partition logs (the registry, topic directories).
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// Opening the data directory (its lock) failed for a reason other than contention.
    #[error("data directory {dir}: {source}")]
    DataDir {
        dir: PathBuf,
        #[source]
        source: LogError,
    },

    /// An operation on one partition's log failed.
    #[error("topic {topic:?} partition {partition}: {source}")]
    Log {
        topic: String,
        partition: u32,
        #[source]
        source: LogError,
    },

    /// A batch of an idempotent producer does not continue its sequence: a gap, a new
    /// epoch not starting at 0, or a retry older than the last 5 batches
    /// (Kafka `OUT_OF_ORDER_SEQUENCE_NUMBER`, 45). Nothing of the request was stored.
    #[error("topic {topic:?} partition {partition}: out of order sequence number from producer {producer_id} epoch {producer_epoch}: got {received}, expected {expected}")]
    OutOfOrderSequence {
        topic: String,
        partition: u32,
        producer_id: i64,
        producer_epoch: i16,
        expected: i32,
        received: i32,
    },

    /// A batch carries an epoch older than the producer's current one on this partition:
    /// a newer instance of the producer exists (Kafka `INVALID_PRODUCER_EPOCH`, 47).
    /// Nothing of the request was stored.
    #[error("topic {topic:?} partition {partition}: producer {producer_id} is fenced: epoch {producer_epoch} is older than the current epoch {current_epoch}")]
    InvalidProducerEpoch {
        topic: String,
        partition: u32,
        producer_id: i64,
        producer_epoch: i16,
        current_epoch: i16,
    },

    /// A transactional or control batch: Wharf has no transactions (Kafka
    /// `INVALID_RECORD`, 87, with this text as the error message). Nothing was stored.
    #[error("topic {topic:?} partition {partition}: producer {producer_id} sent a transactional batch, but transactions are not supported")]
    TransactionalBatch {
        topic: String,
        partition: u32,
        producer_id: i64,
    },

    /// `InitProducerId` with a transactional id: Wharf has no transactions. Kafka has no
    /// code that says so; map it to `TRANSACTIONAL_ID_AUTHORIZATION_FAILED` (53), which
    /// every client treats as fatal at once (rather than retrying) and reports with the
    /// transactional id, and log this message.
    #[error("transactional id {transactional_id:?}: transactions are not supported; use an idempotent producer without transactional.id")]
    TransactionsUnsupported { transactional_id: String },

    /// `<data-dir>/producer-ids` exists but cannot be read back. The broker refuses to
    /// start rather than guess, because guessing low could hand out an id twice.
    #[error("producer id file {path} is corrupt: {reason}")]
    CorruptProducerIds { path: PathBuf, reason: String },

    /// A subscription setting outside its domain (HTTP 400).
    #[error("invalid subscription setting `{field}` = {value}: {reason}")]
    InvalidSubscription {
        field: String,
        value: String,
        reason: String,
    },

    /// A subscription name breaking the naming rules (HTTP 400).
    #[error("invalid subscription name {name:?}: {reason}")]
    InvalidSubscriptionName { name: String, reason: String },

    /// A request the queue API cannot take as given, such as a seek naming both an
    /// offset and a time (HTTP 400).
    #[error("{reason}")]
    InvalidQueueRequest { reason: String },

    /// HTTP 404.
    #[error("topic {topic:?} has no subscription {name:?}")]
    UnknownSubscription { topic: String, name: String },

    /// A subscription of the topic is over its backlog limit with policy `block`: the
    /// producer should retry after a while (HTTP 429 with `Retry-After`; a Kafka produce
    /// is held back instead).
    #[error("topic {topic:?}: subscription {subscription:?} is over its backlog limit ({detail}); publishing is slowed until consumers catch up")]
    Throttled {
        topic: String,
        subscription: String,
        detail: String,
    },

    /// A subscription of the topic is over its backlog limit with policy `reject`
    /// (HTTP 409, Kafka `POLICY_VIOLATION`). Nothing was stored.
    #[error("topic {topic:?}: subscription {subscription:?} is over its backlog limit ({detail}) and refuses new messages")]
    BacklogFull {
        topic: String,
        subscription: String,
        detail: String,
    },

    /// The subscriptions journal failed earlier or is closed; nothing more is accepted
    /// until a restart (HTTP 503).
    #[error("queue state unavailable: {reason}")]
    QueueUnavailable { reason: String },

    /// A [`crate::Broker::publish`] request that cannot be stored as asked: no messages,
    /// too many, or a message with a bad field (the reason names which). Nothing of the
    /// request was stored (Kafka `INVALID_RECORD`).
    #[error("invalid publish request: {reason}")]
    InvalidPublish { reason: String },

    /// A published message that alone is larger than the topic's `max.message.bytes`
    /// once encoded as a record batch (Kafka `MESSAGE_TOO_LARGE`).
    #[error(
        "message {index} is {size} bytes as a record batch; the topic's max.message.bytes is {max}"
    )]
    MessageTooLarge { index: usize, size: usize, max: u32 },

    /// The broker is shutting down or has shut down; no new work is accepted.
    #[error("the broker is shutting down")]
    ShuttingDown,

    /// A blocking task panicked or was cancelled; a bug, reported instead of propagated as
    /// a panic so one request cannot take the broker down.
    #[error("internal error in {what}: {reason}")]
    Internal { what: &'static str, reason: String },
}

/// Result with [`CoreError`].
pub type Result<T, E = CoreError> = std::result::Result<T, E>;

pub(crate) trait IoContext<T> {
    fn ctx(self, op: &'static str, path: &Path) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, op: &'static str, path: &Path) -> Result<T> {
        self.map_err(|source| CoreError::Io {
            op,
            path: path.to_path_buf(),
            source,
        })
    }
}
