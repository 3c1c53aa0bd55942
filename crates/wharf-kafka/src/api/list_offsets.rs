//! ListOffsets: earliest (-2), latest (-1, the high watermark) and by timestamp.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};

use crate::conn::Ctx;
use crate::errors;

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;

pub async fn handle(ctx: &Ctx, req: ListOffsetsRequest, version: i16) -> ListOffsetsResponse {
    // The leader epoch exists from v4 on; the encoder refuses it before.
    let epoch = if version >= 4 { 0 } else { -1 };
    let mut topics = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let name = t.name.0.to_string();
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for p in t.partitions {
            let resp = ListOffsetsPartitionResponse::default()
                .with_partition_index(p.partition_index)
                .with_timestamp(-1)
                .with_offset(-1)
                .with_leader_epoch(epoch);
            partitions.push(
                match lookup(ctx, &name, p.partition_index, p.timestamp).await {
                    Ok(offset) => resp.with_offset(offset),
                    Err(code) => resp.with_error_code(code).with_leader_epoch(-1),
                },
            );
        }
        topics.push(
            ListOffsetsTopicResponse::default()
                .with_name(t.name)
                .with_partitions(partitions),
        );
    }
    ListOffsetsResponse::default().with_topics(topics)
}

async fn lookup(ctx: &Ctx, topic: &str, partition: i32, timestamp: i64) -> Result<i64, i16> {
    let partition = u32::try_from(partition)
        .map_err(|_| crate::metrics::count(ResponseError::UnknownTopicOrPartition.code()))?;
    let offsets = ctx
        .broker
        .offsets(topic, partition)
        .map_err(|e| errors::code(&e))?;
    Ok(match timestamp {
        EARLIEST => offsets.log_start_offset as i64,
        LATEST => offsets.high_watermark as i64,
        // Timestamps are indexed per batch, not per record: Wharf cannot name the record
        // with the largest timestamp.
        MAX_TIMESTAMP => {
            return Err(crate::metrics::count(
                ResponseError::UnsupportedVersion.code(),
            ))
        }
        ts if ts < 0 => return Err(crate::metrics::count(ResponseError::InvalidRequest.code())),
        ts => match ctx
            .broker
            .offset_for_timestamp(topic, partition, ts)
            .await
            .map_err(|e| errors::code(&e))?
        {
            Some(o) if o < offsets.high_watermark => o as i64,
            _ => -1,
        },
    })
}
