//! OffsetFetch (v1-9; kafka-protocol, like Kafka 4, no longer has v0): committed offsets
//! of the listed partitions, or (v2+, topics null) of every partition the group
//! committed. A partition without a committed offset answers offset -1, metadata "" and
//! no error, as Kafka does. Group-level errors are top-level from v2 (per partition in
//! v1); v8+ batch several groups, each with its own error. `require_stable` (v7+) needs
//! nothing: Wharf has no transactional offsets pending.

use std::collections::BTreeMap;

use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{OffsetFetchRequest, OffsetFetchResponse, TopicName};
use wharf_core::group::{CommittedOffset, TopicPartition};

use super::{str_bytes, topic_name};
use crate::conn::Ctx;

/// One topic's answer: (partition, committed offset if any).
type TopicOffsets = (TopicName, Vec<(i32, Option<CommittedOffset>)>);

/// The group's offsets for `topics` (`None`: every committed partition), or the
/// group-level error code.
async fn fetch(
    ctx: &Ctx,
    group_id: &str,
    topics: Option<Vec<(TopicName, Vec<i32>)>>,
) -> Result<Vec<TopicOffsets>, i16> {
    let wanted = topics.as_ref().map(|ts| {
        ts.iter()
            .flat_map(|(name, ps)| {
                ps.iter()
                    .map(|&p| TopicPartition::new(name.0.to_string(), p))
            })
            .collect()
    });
    let found = ctx
        .broker
        .groups()
        .fetch_offsets(group_id, wanted)
        .await
        .map_err(|e| crate::metrics::count(e.code()))?;
    let mut found: BTreeMap<TopicPartition, Option<CommittedOffset>> = found.into_iter().collect();
    Ok(match topics {
        // In request order.
        Some(ts) => ts
            .into_iter()
            .map(|(name, ps)| {
                let partitions = ps
                    .into_iter()
                    .map(|p| {
                        let tp = TopicPartition::new(name.0.to_string(), p);
                        (p, found.remove(&tp).flatten())
                    })
                    .collect();
                (name, partitions)
            })
            .collect(),
        None => {
            let mut by_topic: BTreeMap<String, Vec<(i32, Option<CommittedOffset>)>> =
                BTreeMap::new();
            for (tp, o) in found {
                by_topic
                    .entry(tp.topic)
                    .or_default()
                    .push((tp.partition, o));
            }
            by_topic
                .into_iter()
                .map(|(t, ps)| (topic_name(&t), ps))
                .collect()
        }
    })
}

/// (offset, leader epoch, metadata) as the wire carries them; -1, -1, "" when none.
fn wire(o: Option<CommittedOffset>) -> (i64, i32, String) {
    match o {
        Some(o) => (o.offset, o.leader_epoch, o.metadata),
        None => (-1, -1, String::new()),
    }
}

pub async fn handle(ctx: &Ctx, req: OffsetFetchRequest, version: i16) -> OffsetFetchResponse {
    if version >= 8 {
        let mut groups = Vec::with_capacity(req.groups.len());
        for g in req.groups {
            let topics = g.topics.map(|ts| {
                ts.into_iter()
                    .map(|t| (t.name, t.partition_indexes))
                    .collect()
            });
            let group = OffsetFetchResponseGroup::default().with_group_id(g.group_id.clone());
            groups.push(match fetch(ctx, &g.group_id.0, topics).await {
                Ok(found) => group.with_topics(
                    found
                        .into_iter()
                        .map(|(name, ps)| {
                            let partitions = ps
                                .into_iter()
                                .map(|(p, o)| {
                                    let (offset, epoch, metadata) = wire(o);
                                    OffsetFetchResponsePartitions::default()
                                        .with_partition_index(p)
                                        .with_committed_offset(offset)
                                        .with_committed_leader_epoch(epoch)
                                        .with_metadata(Some(str_bytes(metadata)))
                                })
                                .collect();
                            OffsetFetchResponseTopics::default()
                                .with_name(name)
                                .with_partitions(partitions)
                        })
                        .collect(),
                ),
                Err(code) => group.with_error_code(code),
            });
        }
        return OffsetFetchResponse::default().with_groups(groups);
    }

    let requested: Option<Vec<(TopicName, Vec<i32>)>> = req.topics.map(|ts| {
        ts.into_iter()
            .map(|t| (t.name, t.partition_indexes))
            .collect()
    });
    let (found, error) = match fetch(ctx, &req.group_id.0, requested.clone()).await {
        Ok(found) => (found, 0),
        Err(code) if version >= 2 => (Vec::new(), code),
        // v1 has no top-level error: every requested partition carries it.
        Err(code) => (
            requested
                .unwrap_or_default()
                .into_iter()
                .map(|(name, ps)| (name, ps.into_iter().map(|p| (p, None)).collect()))
                .collect(),
            code,
        ),
    };
    let partition_error = if version >= 2 { 0 } else { error };
    let topics = found
        .into_iter()
        .map(|(name, ps)| {
            let partitions = ps
                .into_iter()
                .map(|(p, o)| {
                    let (offset, epoch, metadata) = wire(o);
                    let part = OffsetFetchResponsePartition::default()
                        .with_partition_index(p)
                        .with_committed_offset(offset)
                        .with_metadata(Some(str_bytes(metadata)))
                        .with_error_code(partition_error);
                    if version >= 5 {
                        part.with_committed_leader_epoch(epoch)
                    } else {
                        part
                    }
                })
                .collect();
            OffsetFetchResponseTopic::default()
                .with_name(name)
                .with_partitions(partitions)
        })
        .collect();
    let resp = OffsetFetchResponse::default().with_topics(topics);
    if version >= 2 {
        resp.with_error_code(error)
    } else {
        resp
    }
}
