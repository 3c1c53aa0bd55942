//! Consumer groups: Kafka's classic rebalance protocol and durable committed offsets.
//!
//! - [`Group`] (`state`): the sans-IO state machine of one group. Pure state; the caller
//!   passes a monotonic clock in and drains [`Reply`]s out. Unit-tested with a fake clock.
//! - [`GroupCoordinator`] (`coordinator`): the async driver every front-end calls. It
//!   owns all groups, parks JoinGroup/SyncGroup callers on oneshot channels, ticks
//!   session and rebalance timeouts, and writes offsets through the journal.
//! - `journal`: `<data-dir>/groups/offsets.journal` (+ `offsets.snapshot`), CRC-32C
//!   records, group commit, torn-tail truncation, compaction.
//! - `consumer`: reads the subscribed topics out of "consumer" protocol metadata.
//!
//! Members are not durable (as in Kafka, they rejoin after a coordinator restart); group
//! ids, protocol types, generations and committed offsets are.
//!
//! For a front-end, Kafka API by Kafka API (FindCoordinator is answered by the front-end
//! itself: this broker is the coordinator of every group):
//!
//! | Kafka API     | call                                   | notes                                      |
//! |---------------|----------------------------------------|--------------------------------------------|
//! | JoinGroup     | [`GroupCoordinator::join`]             | `require_known_member_id` = version >= 4; v0 has no rebalance timeout: pass the session timeout; on `MemberIdRequired` answer with its `member_id` |
//! | SyncGroup     | [`GroupCoordinator::sync`]             | v5+ protocol type/name are checked when given |
//! | Heartbeat     | [`GroupCoordinator::heartbeat`]        |                                            |
//! | LeaveGroup    | [`GroupCoordinator::leave`]            | v0-2: one member, v3+: the batch           |
//! | OffsetCommit  | [`GroupCoordinator::commit_offsets`]   | v0 and "simple" consumers: generation -1, empty member id; retention time (v2-4) is ignored |
//! | OffsetFetch   | [`GroupCoordinator::fetch_offsets`]    | `None` partitions = all; a missing offset is -1 on the wire; v8+ batches: call once per group |
//! | OffsetDelete  | [`GroupCoordinator::delete_offsets`]   |                                            |
//! | DescribeGroups| [`GroupCoordinator::describe_group`]   | `GroupIdNotFound` is, before v6, a `Dead` group with no error |
//! | ListGroups    | [`GroupCoordinator::list_groups`]      | v4+ states filter (parse with `GroupState::from_str`) |
//! | DeleteGroups  | [`GroupCoordinator::delete_groups`]    |                                            |
//!
//! Every error is a [`GroupError`]; [`GroupError::code`] is its Kafka error code.

mod consumer;
mod coordinator;
mod error;
mod journal;
mod state;

pub use consumer::{subscribed_topics, CONSUMER_PROTOCOL_TYPE};
pub use coordinator::{GroupCoordinator, OffsetCommit, OffsetCommitRequest, PartitionResults};
pub use error::GroupError;
pub use journal::{GROUPS_DIR, JOURNAL_FILE, MAX_RECORD_BYTES, SNAPSHOT_FILE};
pub use state::{
    CommittedOffset, Group, GroupConfig, GroupDescription, GroupListing, GroupState,
    HeartbeatRequest, JoinRequest, JoinResponse, JoinedMember, LeaveMember, MemberDescription,
    Protocol, Reply, RequestId, SyncRequest, SyncResponse, TopicPartition,
};

#[cfg(test)]
mod tests;
