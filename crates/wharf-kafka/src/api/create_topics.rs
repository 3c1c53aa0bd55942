//! CreateTopics: name, partition count (-1: the default), replication factor (-1 or 1:
//! there is one broker) and per-topic configs. `validate_only` checks without creating.

use std::collections::BTreeMap;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};
use wharf_core::{CoreError, NewTopic, TopicDescription, TopicName, MAX_PARTITIONS};

use super::str_bytes;
use crate::conn::Ctx;
use crate::errors;

/// Kafka's `ConfigSource` values.
pub const SOURCE_DYNAMIC_TOPIC: i8 = 1;
pub const SOURCE_DEFAULT: i8 = 5;

pub async fn handle(ctx: &Ctx, req: CreateTopicsRequest, version: i16) -> CreateTopicsResponse {
    let mut topics = Vec::with_capacity(req.topics.len());
    for t in req.topics {
        let r = CreatableTopicResult::default()
            .with_name(t.name.clone())
            .with_num_partitions(-1)
            .with_replication_factor(-1);
        let name = t.name.0.to_string();
        let fail = |r: CreatableTopicResult, code: i16, msg: String| {
            r.with_error_code(code)
                .with_error_message(Some(str_bytes(msg)))
        };
        if !matches!(t.replication_factor, -1 | 1) {
            topics.push(fail(
                r,
                crate::metrics::count(ResponseError::InvalidReplicationFactor.code()),
                format!(
                    "replication factor {} is impossible: Wharf is a single broker (use 1 or -1)",
                    t.replication_factor
                ),
            ));
            continue;
        }
        if !t.assignments.is_empty() {
            topics.push(fail(
                r,
                crate::metrics::count(ResponseError::InvalidRequest.code()),
                "manual replica assignment is not supported: Wharf is a single broker".into(),
            ));
            continue;
        }
        let partitions = match t.num_partitions {
            -1 => ctx.config.default_partitions,
            n => u32::try_from(n).unwrap_or(0),
        };
        let mut configs = BTreeMap::new();
        let mut null_config = None;
        for c in t.configs {
            match c.value {
                Some(v) => {
                    configs.insert(c.name.to_string(), v.to_string());
                }
                None => null_config = Some(c.name.to_string()),
            }
        }
        if let Some(key) = null_config {
            topics.push(fail(
                r,
                crate::metrics::count(ResponseError::InvalidConfig.code()),
                format!("config `{key}` has a null value"),
            ));
            continue;
        }
        let new = NewTopic {
            name: name.clone(),
            partitions,
            configs,
        };
        let outcome = if req.validate_only {
            validate(ctx, &new)
        } else {
            ctx.broker.create_topic(new).await
        };
        topics.push(match outcome {
            Ok(d) => {
                if !req.validate_only {
                    tracing::info!(topic = %name, partitions = d.partitions, "topic created");
                }
                let r = r
                    .with_num_partitions(d.partitions as i32)
                    .with_replication_factor(1);
                let r = if version >= 7 {
                    r.with_topic_id(d.id)
                } else {
                    r
                };
                r.with_configs(Some(configs_of(&d)))
            }
            Err(e) => fail(r, errors::code(&e), e.to_string()),
        });
    }
    CreateTopicsResponse::default().with_topics(topics)
}

/// Everything `create_topic` would check, without creating.
fn validate(ctx: &Ctx, new: &NewTopic) -> Result<TopicDescription, CoreError> {
    let name = TopicName::new(new.name.clone())?;
    if ctx.broker.describe_topic(&new.name).is_ok() {
        return Err(CoreError::TopicExists {
            name: new.name.clone(),
        });
    }
    if new.partitions == 0 || new.partitions > MAX_PARTITIONS {
        return Err(CoreError::InvalidPartitions {
            topic: new.name.clone(),
            count: new.partitions,
            reason: format!("must be from 1 to {MAX_PARTITIONS}"),
        });
    }
    let config = ctx.broker.topic_defaults().with_overrides(&new.configs)?;
    Ok(TopicDescription {
        name,
        id: uuid::Uuid::nil(),
        partitions: new.partitions,
        config,
        overrides: new.configs.clone(),
    })
}

fn configs_of(d: &TopicDescription) -> Vec<CreatableTopicConfigs> {
    d.config
        .entries()
        .into_iter()
        .map(|(k, v)| {
            CreatableTopicConfigs::default()
                .with_name(str_bytes(k))
                .with_value(Some(str_bytes(v)))
                .with_config_source(if d.overrides.contains_key(k) {
                    SOURCE_DYNAMIC_TOPIC
                } else {
                    SOURCE_DEFAULT
                })
        })
        .collect()
}
