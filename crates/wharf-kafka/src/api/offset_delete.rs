//! OffsetDelete: removes a group's committed offsets for some partitions. As Kafka: a
//! topic that does not exist (or a partition beyond its count) is
//! `UNKNOWN_TOPIC_OR_PARTITION`; a topic an active consumer group subscribes to is
//! `GROUP_SUBSCRIBED_TO_TOPIC`; group-level errors (`GROUP_ID_NOT_FOUND`,
//! `NON_EMPTY_GROUP`) are top-level.

use std::collections::HashMap;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::{OffsetDeleteRequest, OffsetDeleteResponse};
use wharf_core::group::TopicPartition;

use crate::conn::Ctx;

pub async fn handle(ctx: &Ctx, req: OffsetDeleteRequest, _version: i16) -> OffsetDeleteResponse {
    let mut codes: HashMap<TopicPartition, i16> = HashMap::new();
    let mut known = Vec::new();
    for t in &req.topics {
        let count = ctx.broker.describe_topic(&t.name.0).map(|d| d.partitions);
        for p in &t.partitions {
            let tp = TopicPartition::new(t.name.0.to_string(), p.partition_index);
            let exists = count
                .as_ref()
                .is_ok_and(|&n| u32::try_from(p.partition_index).is_ok_and(|i| i < n));
            if exists {
                known.push(tp);
            } else {
                codes.insert(
                    tp,
                    crate::metrics::count(ResponseError::UnknownTopicOrPartition.code()),
                );
            }
        }
    }
    let resp = OffsetDeleteResponse::default();
    match ctx
        .broker
        .groups()
        .delete_offsets(&req.group_id.0, known)
        .await
    {
        Ok(results) => {
            for (tp, r) in results {
                codes.insert(tp, r.err().map_or(0, |e| crate::metrics::count(e.code())));
            }
        }
        Err(e) => return resp.with_error_code(crate::metrics::count(e.code())),
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
                    OffsetDeleteResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(codes.get(&tp).copied().unwrap_or(0))
                })
                .collect();
            OffsetDeleteResponseTopic::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    resp.with_topics(topics)
}
