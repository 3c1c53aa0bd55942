//! OffsetForLeaderEpoch: one broker, one epoch (0) that has lasted since the beginning,
//! so the end offset of epoch 0 (or any later epoch asked for) is the log end.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};

use crate::conn::Ctx;
use crate::errors;

pub async fn handle(
    ctx: &Ctx,
    req: OffsetForLeaderEpochRequest,
    _version: i16,
) -> OffsetForLeaderEpochResponse {
    let topics = req
        .topics
        .into_iter()
        .map(|t| {
            let name = t.topic.0.to_string();
            let partitions = t
                .partitions
                .into_iter()
                .map(|p| {
                    let resp = EpochEndOffset::default().with_partition(p.partition);
                    let offsets = u32::try_from(p.partition)
                        .map_err(|_| {
                            crate::metrics::count(ResponseError::UnknownTopicOrPartition.code())
                        })
                        .and_then(|i| ctx.broker.offsets(&name, i).map_err(|e| errors::code(&e)));
                    match offsets {
                        Ok(_) if p.leader_epoch < 0 => {
                            resp.with_leader_epoch(-1).with_end_offset(-1)
                        }
                        Ok(o) => resp
                            .with_leader_epoch(0)
                            .with_end_offset(o.log_end_offset as i64),
                        Err(code) => resp
                            .with_error_code(code)
                            .with_leader_epoch(-1)
                            .with_end_offset(-1),
                    }
                })
                .collect();
            OffsetForLeaderTopicResult::default()
                .with_topic(t.topic)
                .with_partitions(partitions)
        })
        .collect();
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}
