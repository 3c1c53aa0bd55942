//! Produce: every partition's batches go to the broker as sent (no decoding, no
//! re-encoding). Under the default flush policy the answer waits until the batches are
//! durable, which is what acks=all (-1) asks for; acks=1 gets the same answer, and
//! acks=0 gets no response at all. The partitions of one request are appended
//! concurrently, so they share fsyncs instead of waiting for each other's.
//!
//! A request runs in two steps ([`start`]): the batches are written, in the order the
//! connection's requests arrive, then the answer waits for durability. The connection
//! reads and starts its next produce request in between, so requests in flight on one
//! connection share fsyncs too (group commit) rather than each paying its own.

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use tracing::debug;
use wharf_core::queue::MAX_BLOCK;
use wharf_core::{Broker, CoreError, PendingProduce};

use super::metadata::lookup_or_create;
use super::str_bytes;
use crate::conn::Ctx;
use crate::errors;

/// A partition's answer: ready, or an append in flight (the index into `appends`).
enum Pending {
    Done(PartitionProduceResponse),
    Appending(i32, usize),
}

/// A partition whose batches are written, waiting to be durable.
enum Written {
    Done(PartitionProduceResponse),
    Durable(i32, PendingProduce),
}

/// Runs a Produce request up to the point where every partition's batches are written
/// (offsets assigned, in the order requests arrive), and returns what waits for them to
/// be durable and builds the answer (`None` for acks=0). A connection starts its next
/// produce request once this returns, so requests in flight share fsyncs.
pub async fn start(
    ctx: &Ctx,
    req: ProduceRequest,
    _version: i16,
) -> impl std::future::Future<Output = Option<ProduceResponse>> + Send + 'static {
    let acks = req.acks;
    let refused = if !matches!(acks, -1..=1) {
        Some(crate::metrics::count(
            ResponseError::InvalidRequiredAcks.code(),
        ))
    } else if req.transactional_id.is_some() {
        // Transactions are not implemented (InitProducerId refuses transactional ids), so
        // a transactional request comes from a confused client.
        Some(crate::metrics::count(
            ResponseError::TransactionalIdAuthorizationFailed.code(),
        ))
    } else {
        None
    };
    let mut topics = Vec::with_capacity(req.topic_data.len());
    let mut appends = Vec::new();
    let mut throttled = std::time::Duration::ZERO;
    for topic in req.topic_data {
        let name = topic.name.0.to_string();
        let known = match refused {
            Some(code) => Err(code),
            None => lookup_or_create(ctx, &name, ctx.config.auto_create_topics)
                .await
                .map(|_| ()),
        };
        // Back-pressure from queue subscriptions: a full backlog under `block` holds
        // the answer (and this connection's next requests) until consumers catch up or
        // MAX_BLOCK passes, and reports the wait as throttle_time_ms; under `reject`
        // the topic's partitions are refused.
        let mut gate_refusal = None;
        if known.is_ok() {
            match ctx.broker.admit(&name, MAX_BLOCK).await {
                Ok(waited) => throttled = throttled.max(waited),
                Err(e) => gate_refusal = Some(e),
            }
        }
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
            if let Some(e) = &gate_refusal {
                partitions.push(Pending::Done(refusal(&name, p.index, e)));
                continue;
            }
            partitions.push(match (&known, u32::try_from(p.index), p.records) {
                (Err(code), _, _) => failed(*code),
                (Ok(()), Err(_), _) => failed(crate::metrics::count(
                    ResponseError::UnknownTopicOrPartition.code(),
                )),
                (Ok(()), Ok(_), None) => {
                    failed(crate::metrics::count(ResponseError::CorruptMessage.code()))
                }
                (Ok(()), Ok(index), Some(records)) => {
                    appends.push(append(
                        &ctx.broker,
                        name.clone(),
                        index,
                        p.index,
                        records.to_vec(),
                    ));
                    Pending::Appending(p.index, appends.len() - 1)
                }
            });
        }
        topics.push((topic.name, name, partitions));
    }
    // Every partition written, the partitions of one request concurrently (each append
    // runs on the blocking pool from its first poll).
    let mut appended: Vec<Option<Result<PendingProduce, PartitionProduceResponse>>> =
        futures_util::future::join_all(appends)
            .await
            .into_iter()
            .map(Some)
            .collect();
    let mut written = Vec::with_capacity(topics.len());
    for (name, topic, pending) in topics {
        let mut partitions = Vec::with_capacity(pending.len());
        for p in pending {
            partitions.push(match p {
                Pending::Done(r) => Written::Done(r),
                Pending::Appending(index, i) => match appended.get_mut(i).and_then(Option::take) {
                    Some(Ok(pending)) => Written::Durable(index, pending),
                    Some(Err(refused)) => Written::Done(refused),
                    None => Written::Done(internal(index, "append result missing")),
                },
            });
        }
        written.push((name, topic, partitions));
    }
    let broker = Arc::clone(&ctx.broker);
    async move {
        let mut responses = Vec::with_capacity(written.len());
        for (name, topic, partitions) in written {
            let mut answers = Vec::with_capacity(partitions.len());
            for p in partitions {
                answers.push(match p {
                    Written::Done(r) => r,
                    Written::Durable(index, pending) => {
                        answer(&broker, &topic, index, pending.durable().await)
                    }
                });
            }
            responses.push(
                TopicProduceResponse::default()
                    .with_name(name)
                    .with_partition_responses(answers),
            );
        }
        let throttle_ms = i32::try_from(throttled.as_millis()).unwrap_or(i32::MAX);
        (acks != 0).then(|| {
            ProduceResponse::default()
                .with_responses(responses)
                .with_throttle_time_ms(throttle_ms)
        })
    }
}

fn internal(index: i32, reason: &str) -> PartitionProduceResponse {
    PartitionProduceResponse::default()
        .with_index(index)
        .with_error_code(crate::metrics::count(
            ResponseError::UnknownServerError.code(),
        ))
        .with_base_offset(-1)
        .with_error_message(Some(str_bytes(reason)))
}

/// Writes one partition's batches; the refusal, if any, is its answer.
async fn append(
    broker: &Broker,
    topic: String,
    partition: u32,
    index: i32,
    records: Vec<u8>,
) -> Result<PendingProduce, PartitionProduceResponse> {
    broker
        .produce_start(&topic, partition, records)
        .await
        .map_err(|e| refusal(&topic, index, &e))
}

fn refusal(topic: &str, index: i32, e: &CoreError) -> PartitionProduceResponse {
    debug!(%topic, partition = index, error = %e, "produce refused");
    PartitionProduceResponse::default()
        .with_index(index)
        .with_error_code(errors::code(e))
        .with_base_offset(-1)
        .with_error_message(Some(str_bytes(e.to_string())))
}

/// A partition's answer once its batches are durable (or failed to be).
fn answer(
    broker: &Broker,
    topic: &str,
    index: i32,
    outcome: wharf_core::Result<wharf_core::AppendOutcome>,
) -> PartitionProduceResponse {
    match outcome {
        Ok(outcome) => {
            let start = u32::try_from(index)
                .ok()
                .and_then(|p| broker.offsets(topic, p).ok())
                .map_or(-1, |o| o.log_start_offset as i64);
            PartitionProduceResponse::default()
                .with_index(index)
                .with_base_offset(outcome.info.base_offset as i64)
                .with_log_append_time_ms(-1)
                .with_log_start_offset(start)
        }
        Err(e) => refusal(topic, index, &e),
    }
}
