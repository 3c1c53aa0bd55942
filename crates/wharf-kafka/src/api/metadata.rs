//! Metadata: the one broker, and topics with every partition led by it (epoch 0).
//! Unknown topics are created when auto-creation is on and the request allows it.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse};
use uuid::Uuid;
use wharf_core::{CoreError, TopicDescription};

use super::{str_bytes, topic_name};
use crate::conn::Ctx;
use crate::errors;
use crate::{CLUSTER_ID, NODE_ID};

pub async fn handle(ctx: &Ctx, req: MetadataRequest, version: i16) -> MetadataResponse {
    // v0: an empty list means every topic; v1+: null means every topic.
    let all = match &req.topics {
        None => true,
        Some(t) => version == 0 && t.is_empty(),
    };
    let allow_create =
        ctx.config.auto_create_topics && (version < 4 || req.allow_auto_topic_creation);
    let mut topics = Vec::new();
    if all {
        topics.extend(
            ctx.broker
                .list_topics()
                .iter()
                .map(|d| describe(d, version)),
        );
    } else {
        for t in req.topics.unwrap_or_default() {
            let result = match &t.name {
                Some(name) => lookup_or_create(ctx, name, allow_create).await,
                None => by_id(ctx, t.topic_id),
            };
            topics.push(match result {
                Ok(desc) => describe(&desc, version),
                Err(e) => MetadataResponseTopic::default()
                    .with_error_code(e)
                    .with_name(t.name.clone())
                    .with_topic_id(t.topic_id),
            });
        }
    }
    let (host, port) = &ctx.advertised;
    MetadataResponse::default()
        .with_brokers(vec![MetadataResponseBroker::default()
            .with_node_id(BrokerId(NODE_ID))
            .with_host(str_bytes(host.clone()))
            .with_port(*port)])
        .with_cluster_id(Some(str_bytes(CLUSTER_ID)))
        .with_controller_id(BrokerId(NODE_ID))
        .with_topics(topics)
}

/// The topic, created first if it is unknown and `create` allows it.
pub async fn lookup_or_create(
    ctx: &Ctx,
    name: &str,
    create: bool,
) -> Result<TopicDescription, i16> {
    match ctx.broker.describe_topic(name) {
        Ok(d) => Ok(d),
        Err(CoreError::UnknownTopic { .. }) if create => {
            let new = wharf_core::NewTopic::new(name, ctx.config.default_partitions);
            match ctx.broker.create_topic(new).await {
                Ok(d) => {
                    tracing::info!(topic = %name, partitions = d.partitions, "topic auto-created");
                    Ok(d)
                }
                // Created by a concurrent request.
                Err(CoreError::TopicExists { .. }) => ctx
                    .broker
                    .describe_topic(name)
                    .map_err(|e| errors::code(&e)),
                Err(e) => Err(errors::code(&e)),
            }
        }
        Err(e) => Err(errors::code(&e)),
    }
}

fn by_id(ctx: &Ctx, id: Uuid) -> Result<TopicDescription, i16> {
    find_by_id(ctx, id).ok_or_else(|| crate::metrics::count(ResponseError::UnknownTopicId.code()))
}

/// The topic with this id, if any.
pub fn find_by_id(ctx: &Ctx, id: Uuid) -> Option<TopicDescription> {
    ctx.broker.list_topics().into_iter().find(|d| d.id == id)
}

fn describe(d: &TopicDescription, version: i16) -> MetadataResponseTopic {
    let partitions = (0..d.partitions)
        .map(|p| {
            MetadataResponsePartition::default()
                .with_partition_index(p as i32)
                .with_leader_id(BrokerId(NODE_ID))
                .with_leader_epoch(0)
                .with_replica_nodes(vec![BrokerId(NODE_ID)])
                .with_isr_nodes(vec![BrokerId(NODE_ID)])
        })
        .collect();
    let t = MetadataResponseTopic::default()
        .with_name(Some(topic_name(d.name.as_str())))
        .with_partitions(partitions);
    if version >= 10 {
        t.with_topic_id(d.id)
    } else {
        t
    }
}
