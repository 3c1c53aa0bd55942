//! Produce: every partition's batches go to `Broker::append` as sent (no decoding, no
//! re-encoding). Under the default flush policy `append` returns once the batches are
//! durable, which is what acks=all (-1) asks for; acks=1 gets the same answer, and
//! acks=0 gets no response at all.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use tracing::debug;

use super::metadata::lookup_or_create;
use crate::conn::Ctx;
use crate::errors;

pub async fn handle(ctx: &Ctx, req: ProduceRequest, _version: i16) -> Option<ProduceResponse> {
    let acks = req.acks;
    let bad_acks = !matches!(acks, -1..=1);
    let mut responses = Vec::with_capacity(req.topic_data.len());
    for topic in req.topic_data {
        let name = topic.name.0.to_string();
        let known = if bad_acks || req.transactional_id.is_some() {
            Err(if bad_acks {
                ResponseError::InvalidRequiredAcks.code()
            } else {
                // Transactions are not implemented; a transactional producer never got a
                // producer id from us, so this is a confused client.
                ResponseError::TransactionalIdAuthorizationFailed.code()
            })
        } else {
            lookup_or_create(ctx, &name, ctx.config.auto_create_topics)
                .await
                .map(|_| ())
        };
        let mut partitions = Vec::with_capacity(topic.partition_data.len());
        for p in topic.partition_data {
            let resp = PartitionProduceResponse::default().with_index(p.index);
            let resp = match (&known, p.records) {
                (Err(code), _) => resp.with_error_code(*code).with_base_offset(-1),
                (Ok(()), None) => resp
                    .with_error_code(ResponseError::CorruptMessage.code())
                    .with_base_offset(-1),
                (Ok(()), Some(records)) => {
                    let Ok(index) = u32::try_from(p.index) else {
                        partitions.push(
                            resp.with_error_code(ResponseError::UnknownTopicOrPartition.code())
                                .with_base_offset(-1),
                        );
                        continue;
                    };
                    match ctx.broker.append(&name, index, records.to_vec()).await {
                        Ok(info) => {
                            let start = ctx
                                .broker
                                .offsets(&name, index)
                                .map(|o| o.log_start_offset as i64)
                                .unwrap_or(-1);
                            resp.with_base_offset(info.base_offset as i64)
                                .with_log_append_time_ms(-1)
                                .with_log_start_offset(start)
                        }
                        Err(e) => {
                            debug!(topic = %name, partition = index, error = %e, "produce refused");
                            resp.with_error_code(errors::code(&e))
                                .with_base_offset(-1)
                                .with_error_message(Some(super::str_bytes(e.to_string())))
                        }
                    }
                }
            };
            partitions.push(resp);
        }
        responses.push(
            TopicProduceResponse::default()
                .with_name(topic.name)
                .with_partition_responses(partitions),
        );
    }
    if acks == 0 {
        return None;
    }
    Some(ProduceResponse::default().with_responses(responses))
}
