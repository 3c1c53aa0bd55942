//! Produce: every partition's batches go to `Broker::append` as sent (no decoding, no
//! re-encoding). Under the default flush policy `append` returns once the batches are
//! durable, which is what acks=all (-1) asks for; acks=1 gets the same answer, and
//! acks=0 gets no response at all. The partitions of one request are appended
//! concurrently, so they share fsyncs instead of waiting for each other's.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use tokio::task::JoinHandle;
use tracing::debug;
use wharf_core::Broker;

use super::metadata::lookup_or_create;
use super::str_bytes;
use crate::conn::Ctx;
use crate::errors;

/// A partition's answer: ready, or an append in flight.
enum Pending {
    Done(PartitionProduceResponse),
    Appending(i32, JoinHandle<PartitionProduceResponse>),
}

pub async fn handle(ctx: &Ctx, req: ProduceRequest, _version: i16) -> Option<ProduceResponse> {
    let acks = req.acks;
    let refused = if !matches!(acks, -1..=1) {
        Some(ResponseError::InvalidRequiredAcks.code())
    } else if req.transactional_id.is_some() {
        // Transactions are not implemented (InitProducerId refuses transactional ids), so
        // a transactional request comes from a confused client.
        Some(ResponseError::TransactionalIdAuthorizationFailed.code())
    } else {
        None
    };
    let mut topics = Vec::with_capacity(req.topic_data.len());
    for topic in req.topic_data {
        let name = topic.name.0.to_string();
        let known = match refused {
            Some(code) => Err(code),
            None => lookup_or_create(ctx, &name, ctx.config.auto_create_topics)
                .await
                .map(|_| ()),
        };
        let mut partitions = Vec::with_capacity(topic.partition_data.len());
        for p in topic.partition_data {
            let failed = |code: i16| {
                Pending::Done(
                    PartitionProduceResponse::default()
                        .with_index(p.index)
                        .with_error_code(code)
                        .with_base_offset(-1),
                )
            };
            partitions.push(match (&known, u32::try_from(p.index), p.records) {
                (Err(code), _, _) => failed(*code),
                (Ok(()), Err(_), _) => failed(ResponseError::UnknownTopicOrPartition.code()),
                (Ok(()), Ok(_), None) => failed(ResponseError::CorruptMessage.code()),
                (Ok(()), Ok(index), Some(records)) => Pending::Appending(
                    p.index,
                    tokio::spawn(append(
                        Arc::clone(&ctx.broker),
                        name.clone(),
                        index,
                        p.index,
                        records.to_vec(),
                    )),
                ),
            });
        }
        topics.push((topic.name, partitions));
    }
    let mut responses = Vec::with_capacity(topics.len());
    for (name, pending) in topics {
        let mut partitions = Vec::with_capacity(pending.len());
        for p in pending {
            partitions.push(match p {
                Pending::Done(r) => r,
                Pending::Appending(index, task) => task.await.unwrap_or_else(|e| {
                    PartitionProduceResponse::default()
                        .with_index(index)
                        .with_error_code(ResponseError::UnknownServerError.code())
                        .with_base_offset(-1)
                        .with_error_message(Some(str_bytes(format!("append task failed: {e}"))))
                }),
            });
        }
        responses.push(
            TopicProduceResponse::default()
                .with_name(name)
                .with_partition_responses(partitions),
        );
    }
    if acks == 0 {
        return None;
    }
    Some(ProduceResponse::default().with_responses(responses))
}

async fn append(
    broker: Arc<Broker>,
    topic: String,
    partition: u32,
    index: i32,
    records: Vec<u8>,
) -> PartitionProduceResponse {
    let resp = PartitionProduceResponse::default().with_index(index);
    match broker.append(&topic, partition, records).await {
        Ok(info) => {
            let start = broker
                .offsets(&topic, partition)
                .map(|o| o.log_start_offset as i64)
                .unwrap_or(-1);
            resp.with_base_offset(info.base_offset as i64)
                .with_log_append_time_ms(-1)
                .with_log_start_offset(start)
        }
        Err(e) => {
            debug!(%topic, partition, error = %e, "produce refused");
            resp.with_error_code(errors::code(&e))
                .with_base_offset(-1)
                .with_error_message(Some(str_bytes(e.to_string())))
        }
    }
}
