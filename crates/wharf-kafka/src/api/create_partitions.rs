//! CreatePartitions: raises a topic's partition count (manual assignments are ignored:
//! the one broker holds every partition).

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};
use wharf_core::{CoreError, MAX_PARTITIONS};

use super::str_bytes;
use crate::conn::Ctx;
use crate::errors;

pub async fn handle(
    ctx: &Ctx,
    req: CreatePartitionsRequest,
    _version: i16,
) -> CreatePartitionsResponse {
    let mut results = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let name = t.name.0.to_string();
        let outcome = match u32::try_from(t.count) {
            Err(_) => Err(CoreError::InvalidPartitions {
                topic: name.clone(),
                count: 0,
                reason: "the count must be positive".into(),
            }),
            Ok(count) if req.validate_only => ctx.broker.describe_topic(&name).and_then(|d| {
                if count <= d.partitions || count > MAX_PARTITIONS {
                    Err(CoreError::InvalidPartitions {
                        topic: name.clone(),
                        count,
                        reason: format!(
                            "must be more than the current {} and at most {MAX_PARTITIONS}",
                            d.partitions
                        ),
                    })
                } else {
                    Ok(d)
                }
            }),
            Ok(count) => ctx.broker.create_partitions(&name, count).await,
        };
        let r = CreatePartitionsTopicResult::default().with_name(t.name);
        results.push(match outcome {
            Ok(_) => r,
            Err(e) => r
                .with_error_code(errors::code(&e))
                .with_error_message(Some(str_bytes(e.to_string()))),
        });
    }
    CreatePartitionsResponse::default().with_results(results)
}
