//! DeleteTopics, by name or (v6+) by topic id.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse};
use uuid::Uuid;

use super::metadata::find_by_id;
use super::{str_bytes, topic_name};
use crate::conn::Ctx;
use crate::errors;

pub async fn handle(ctx: &Ctx, req: DeleteTopicsRequest, version: i16) -> DeleteTopicsResponse {
    let wanted: Vec<(Option<String>, Uuid)> = if version >= 6 {
        req.topics
            .into_iter()
            .map(|t| (t.name.map(|n| n.0.to_string()), t.topic_id))
            .collect()
    } else {
        req.topic_names
            .into_iter()
            .map(|n| (Some(n.0.to_string()), Uuid::nil()))
            .collect()
    };
    let mut responses = Vec::with_capacity(wanted.len());
    for (name, id) in wanted {
        let name = match name {
            Some(n) => Some(n),
            None => find_by_id(ctx, id).map(|d| d.name.to_string()),
        };
        let r = DeletableTopicResult::default()
            .with_name(name.as_deref().map(topic_name))
            .with_topic_id(id);
        let Some(name) = name else {
            responses.push(
                r.with_error_code(crate::metrics::count(ResponseError::UnknownTopicId.code())),
            );
            continue;
        };
        responses.push(match ctx.broker.delete_topic(&name).await {
            Ok(d) => {
                tracing::info!(topic = %name, "topic deleted");
                if version >= 6 {
                    r.with_topic_id(d.id)
                } else {
                    r
                }
            }
            Err(e) => r
                .with_error_code(errors::code(&e))
                .with_error_message(Some(str_bytes(e.to_string()))),
        });
    }
    DeleteTopicsResponse::default().with_responses(responses)
}
