//! Errors of the group coordinator, one variant per Kafka error code.

use std::fmt;

/// What a group operation can answer besides success.
///
/// Every variant maps onto exactly one Kafka error code ([`GroupError::code`]), so a
/// front-end translates it without a table of its own:
///
/// | variant                      | Kafka error                  | code |
/// |------------------------------|------------------------------|------|
/// | `OffsetMetadataTooLarge`     | `OFFSET_METADATA_TOO_LARGE`  | 12   |
/// | `CoordinatorNotAvailable`    | `COORDINATOR_NOT_AVAILABLE`  | 15   |
/// | `IllegalGeneration`          | `ILLEGAL_GENERATION`         | 22   |
/// | `InconsistentGroupProtocol`  | `INCONSISTENT_GROUP_PROTOCOL`| 23   |
/// | `InvalidGroupId`             | `INVALID_GROUP_ID`           | 24   |
/// | `UnknownMemberId`            | `UNKNOWN_MEMBER_ID`          | 25   |
/// | `InvalidSessionTimeout`      | `INVALID_SESSION_TIMEOUT`    | 26   |
/// | `RebalanceInProgress`        | `REBALANCE_IN_PROGRESS`      | 27   |
/// | `InvalidCommitOffsetSize`    | `INVALID_COMMIT_OFFSET_SIZE` | 28   |
/// | `NonEmptyGroup`              | `NON_EMPTY_GROUP`            | 68   |
/// | `GroupIdNotFound`            | `GROUP_ID_NOT_FOUND`         | 69   |
/// | `MemberIdRequired`           | `MEMBER_ID_REQUIRED`         | 79   |
/// | `GroupMaxSizeReached`        | `GROUP_MAX_SIZE_REACHED`     | 81   |
/// | `FencedInstanceId`           | `FENCED_INSTANCE_ID`         | 82   |
/// | `GroupSubscribedToTopic`     | `GROUP_SUBSCRIBED_TO_TOPIC`  | 86   |
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GroupError {
    /// The commit's metadata string is longer than `offset.metadata.max.bytes`.
    #[error("offset metadata of {len} bytes exceeds the limit of {max} bytes")]
    OffsetMetadataTooLarge { len: usize, max: usize },

    /// The coordinator cannot serve the request now: it is shutting down, its journal
    /// failed, or the group is being deleted. Clients retry (after FindCoordinator).
    #[error("group coordinator not available: {reason}")]
    CoordinatorNotAvailable { reason: String },

    /// The request names a generation other than the group's current one.
    #[error("illegal generation {got} (the group is at generation {current})")]
    IllegalGeneration { got: i32, current: i32 },

    /// The member's protocol type or protocols do not fit the group's.
    #[error("inconsistent group protocol: {reason}")]
    InconsistentGroupProtocol { reason: String },

    /// The group id is empty.
    #[error("invalid group id {group:?}")]
    InvalidGroupId { group: String },

    /// The member id is not (or no longer) a member of the group.
    #[error("unknown member id {member:?} in group {group:?}")]
    UnknownMemberId { group: String, member: String },

    /// The session timeout lies outside the broker's allowed range.
    #[error("session timeout {ms} ms outside the allowed range {min}..={max} ms")]
    InvalidSessionTimeout { ms: i32, min: u64, max: u64 },

    /// The group is rebalancing; the member must (re)join.
    #[error("group {group:?} is rebalancing")]
    RebalanceInProgress { group: String },

    /// A commit too large for one journal record.
    #[error("offset commit of {bytes} bytes exceeds the journal record limit of {max} bytes")]
    InvalidCommitOffsetSize { bytes: usize, max: usize },

    /// The group still has members (DeleteGroups, OffsetDelete of a non-consumer group).
    #[error("group {group:?} is not empty")]
    NonEmptyGroup { group: String },

    /// No such group.
    #[error("group {group:?} not found")]
    GroupIdNotFound { group: String },

    /// KIP-394: a new member must rejoin with the member id it is given here.
    #[error("member id required: rejoin with member id {member_id:?}")]
    MemberIdRequired { member_id: String },

    /// The group has `group.max.size` members already.
    #[error("group {group:?} reached its maximum size of {max} members")]
    GroupMaxSizeReached { group: String, max: usize },

    /// KIP-345: another member id has taken over this `group.instance.id`.
    #[error("instance id {instance:?} of group {group:?} is now used by another member id; {member:?} is fenced")]
    FencedInstanceId {
        group: String,
        instance: String,
        member: String,
    },

    /// OffsetDelete of a topic an active consumer group subscribes to.
    #[error("group {group:?} is subscribed to topic {topic:?}")]
    GroupSubscribedToTopic { group: String, topic: String },
}

impl GroupError {
    /// The Kafka error code of this error.
    pub fn code(&self) -> i16 {
        match self {
            GroupError::OffsetMetadataTooLarge { .. } => 12,
            GroupError::CoordinatorNotAvailable { .. } => 15,
            GroupError::IllegalGeneration { .. } => 22,
            GroupError::InconsistentGroupProtocol { .. } => 23,
            GroupError::InvalidGroupId { .. } => 24,
            GroupError::UnknownMemberId { .. } => 25,
            GroupError::InvalidSessionTimeout { .. } => 26,
            GroupError::RebalanceInProgress { .. } => 27,
            GroupError::InvalidCommitOffsetSize { .. } => 28,
            GroupError::NonEmptyGroup { .. } => 68,
            GroupError::GroupIdNotFound { .. } => 69,
            GroupError::MemberIdRequired { .. } => 79,
            GroupError::GroupMaxSizeReached { .. } => 81,
            GroupError::FencedInstanceId { .. } => 82,
            GroupError::GroupSubscribedToTopic { .. } => 86,
        }
    }

    pub(crate) fn unavailable(reason: impl fmt::Display) -> GroupError {
        GroupError::CoordinatorNotAvailable {
            reason: reason.to_string(),
        }
    }
}

impl From<crate::journal::JournalError> for GroupError {
    /// The offsets journal failed or is closed: the coordinator is not available.
    fn from(e: crate::journal::JournalError) -> GroupError {
        GroupError::unavailable(e.reason)
    }
}
