//! OffsetCommit (v2-9; kafka-protocol, like Kafka 4, no longer has v0-1): answered once
//! every accepted offset is durable. A partition of a topic that does not exist, or
//! beyond its partition count, is `UNKNOWN_TOPIC_OR_PARTITION` and not committed, as
//! Kafka does; a group-level error (generation, member, rebalance) applies to every
//! partition. The retention time of v2-4 is ignored (offsets do not expire).

use std::collections::HashMap;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse};
use wharf_core::group::{OffsetCommit, OffsetCommitRequest as Commit, TopicPartition};

use crate::conn::Ctx;

pub async fn handle(ctx: &Ctx, req: OffsetCommitRequest, _version: i16) -> OffsetCommitResponse {
    let mut codes: HashMap<TopicPartition, i16> = HashMap::new();
    let mut offsets = Vec::new();
    for t in &req.topics {
        let partitions = ctx.broker.describe_topic(&t.name.0).map(|d| d.partitions);
        for p in &t.partitions {
            let tp = TopicPartition::new(t.name.0.to_string(), p.partition_index);
            let exists = partitions
                .as_ref()
                .is_ok_and(|&n| u32::try_from(p.partition_index).is_ok_and(|i| i < n));
            if !exists {
                codes.insert(
                    tp,
                    crate::metrics::count(ResponseError::UnknownTopicOrPartition.code()),
                );
                continue;
            }
            offsets.push(OffsetCommit {
                partition: tp,
                offset: p.committed_offset,
                leader_epoch: p.committed_leader_epoch,
                metadata: p.committed_metadata.as_ref().map(|m| m.to_string()),
            });
        }
    }
    let commit = Commit {
        group_id: req.group_id.0.to_string(),
        generation_id: req.generation_id_or_member_epoch,
        member_id: req.member_id.to_string(),
        group_instance_id: req.group_instance_id.as_ref().map(|s| s.to_string()),
        offsets,
    };
    let mut all: Option<i16> = None;
    if !commit.offsets.is_empty() {
        match ctx.broker.groups().commit_offsets(commit).await {
            Ok(results) => {
                for (tp, r) in results {
                    codes.insert(tp, r.err().map_or(0, |e| crate::metrics::count(e.code())));
                }
            }
            Err(e) => all = Some(crate::metrics::count(e.code())),
        }
    }
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let tp = TopicPartition::new(t.name.0.to_string(), p.partition_index);
                    let code = match codes.get(&tp) {
                        // An unknown partition stays unknown whatever the group said.
                        Some(&c) if c != 0 || all.is_none() => c,
                        _ => all.unwrap_or(0),
                    };
                    OffsetCommitResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(code)
                })
                .collect();
            OffsetCommitResponseTopic::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}
