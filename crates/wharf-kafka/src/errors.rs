//! Mapping of core errors to Kafka error codes.

use kafka_protocol::error::ResponseError;
use wharf_core::CoreError;
// Only the error type: this crate never calls the log itself.
use wharf_log::LogError;

/// The Kafka error code a core error stands for.
/// Counted in `wharf_kafka_errors_total`: call it only for a code that is answered.
pub fn code(e: &CoreError) -> i16 {
    crate::metrics::count(kafka_error(e).code())
}

pub fn kafka_error(e: &CoreError) -> ResponseError {
    match e {
        CoreError::InvalidTopicName { .. } => ResponseError::InvalidTopicException,
        CoreError::InvalidConfig { .. }
        | CoreError::UnknownConfig { .. }
        | CoreError::UnsupportedConfig { .. } => ResponseError::InvalidConfig,
        CoreError::InvalidPartitions { .. } => ResponseError::InvalidPartitions,
        CoreError::TopicExists { .. } => ResponseError::TopicAlreadyExists,
        CoreError::UnknownTopic { .. } | CoreError::UnknownPartition { .. } => {
            ResponseError::UnknownTopicOrPartition
        }
        CoreError::Log { source, .. } => match source {
            LogError::CorruptBatch { .. } | LogError::InvalidBatch { .. } => {
                ResponseError::CorruptMessage
            }
            LogError::BatchTooLarge { .. } => ResponseError::MessageTooLarge,
            LogError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
            // A log closed under us: its topic was deleted or the broker is stopping.
            LogError::Closed { .. } => ResponseError::NotLeaderOrFollower,
            LogError::Io { .. } | LogError::Poisoned { .. } | LogError::Locked { .. } => {
                ResponseError::KafkaStorageError
            }
        },
        CoreError::ShuttingDown => ResponseError::NotLeaderOrFollower,
        CoreError::UnknownOffset { .. } => ResponseError::OffsetOutOfRange,
        CoreError::OutOfOrderSequence { .. } => ResponseError::OutOfOrderSequenceNumber,
        CoreError::InvalidProducerEpoch { .. } => ResponseError::InvalidProducerEpoch,
        CoreError::TransactionalBatch { .. } | CoreError::InvalidPublish { .. } => {
            ResponseError::InvalidRecord
        }
        CoreError::MessageTooLarge { .. } => ResponseError::MessageTooLarge,
        // Kafka has no "transactions unsupported" code; this one is fatal to every client,
        // so a transactional producer fails at once, with our message in the log.
        CoreError::TransactionsUnsupported { .. } => {
            ResponseError::TransactionalIdAuthorizationFailed
        }
        // Queue-only errors; a produce meets only the backlog ones.
        CoreError::BacklogFull { .. } | CoreError::Throttled { .. } => {
            ResponseError::PolicyViolation
        }
        CoreError::InvalidSubscription { .. }
        | CoreError::InvalidSubscriptionName { .. }
        | CoreError::InvalidQueueRequest { .. } => ResponseError::InvalidRequest,
        CoreError::UnknownSubscription { .. } => ResponseError::UnknownTopicOrPartition,
        CoreError::QueueUnavailable { .. } => ResponseError::KafkaStorageError,
        CoreError::CorruptRegistry { .. }
        | CoreError::CorruptGroupJournal { .. }
        | CoreError::CorruptJournal { .. }
        | CoreError::CorruptProducerIds { .. }
        | CoreError::DataDirLocked { .. }
        | CoreError::Io { .. }
        | CoreError::DataDir { .. } => ResponseError::KafkaStorageError,
        CoreError::Internal { .. } => ResponseError::UnknownServerError,
    }
}
