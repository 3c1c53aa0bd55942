//! DeleteRecords: moves a partition's log start offset up (-1 means the high watermark).

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};

use crate::conn::Ctx;
use crate::errors;

pub async fn handle(ctx: &Ctx, req: DeleteRecordsRequest, _version: i16) -> DeleteRecordsResponse {
    let mut topics = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let name = t.name.0.to_string();
        let mut partitions = Vec::with_capacity(t.partitions.len());
        for p in t.partitions {
            let resp = DeleteRecordsPartitionResult::default()
                .with_partition_index(p.partition_index)
                .with_low_watermark(-1);
            partitions.push(
                match delete(ctx, &name, p.partition_index, p.offset).await {
                    Ok(low) => resp.with_low_watermark(low as i64),
                    Err(code) => resp.with_error_code(code),
                },
            );
        }
        topics.push(
            DeleteRecordsTopicResult::default()
                .with_name(t.name)
                .with_partitions(partitions),
        );
    }
    DeleteRecordsResponse::default().with_topics(topics)
}

async fn delete(ctx: &Ctx, topic: &str, partition: i32, offset: i64) -> Result<u64, i16> {
    let partition = u32::try_from(partition)
        .map_err(|_| crate::metrics::count(ResponseError::UnknownTopicOrPartition.code()))?;
    let offset = match offset {
        -1 => {
            ctx.broker
                .offsets(topic, partition)
                .map_err(|e| errors::code(&e))?
                .high_watermark
        }
        o => u64::try_from(o)
            .map_err(|_| crate::metrics::count(ResponseError::OffsetOutOfRange.code()))?,
    };
    ctx.broker
        .delete_records(topic, partition, offset)
        .await
        .map_err(|e| errors::code(&e))
}
