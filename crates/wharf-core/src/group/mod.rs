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
