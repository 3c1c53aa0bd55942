//! The topic admin routes: create, list, describe, delete. Thin translations onto
//! `Broker::{create_topic, list_topics, describe_topic, delete_topic}`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use wharf_core::{Broker, NewTopic, TopicDescription};

use super::{ApiError, ErrorBody, JsonBody};

/// `POST /v1/topics`'s body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTopicRequest {
    /// 1 to 249 ASCII letters, digits, `.`, `_` and `-`; not `.` or `..` (Kafka's rules).
    #[schema(example = "orders")]
    pub name: String,
    /// Number of partitions, 1 to 10000.
    #[serde(default = "one_partition")]
    #[schema(default = 1, minimum = 1, maximum = 10000)]
    pub partitions: u32,
    /// Per-topic overrides of the broker's defaults, with Kafka's keys and text values:
    /// `retention.ms`, `retention.bytes`, `segment.bytes`, `max.message.bytes`,
    /// `cleanup.policy`, and Wharf's `message.ttl.ms` (-1: none) and `dedup.window.ms`
    /// (publisher deduplication window; 0 disables).
    #[serde(default)]
    #[schema(example = json!({"retention.ms": "86400000"}))]
    pub config: BTreeMap<String, String>,
}

fn one_partition() -> u32 {
    1
}

/// A topic as the broker has it.
#[derive(Debug, Serialize, ToSchema)]
pub struct Topic {
    pub name: String,
    /// Fresh for every creation, so a re-created topic is told apart from a deleted one.
    pub id: uuid::Uuid,
    pub partitions: u32,
    /// Every setting in effect: the broker's defaults with the overrides applied.
    #[schema(example = json!({"cleanup.policy": "delete", "dedup.window.ms": "300000", "max.message.bytes": "1048588", "message.ttl.ms": "-1", "retention.bytes": "-1", "retention.ms": "86400000", "segment.bytes": "1073741824"}))]
    pub config: BTreeMap<String, String>,
    /// Only the settings this topic overrides.
    #[schema(example = json!({"retention.ms": "86400000"}))]
    pub overrides: BTreeMap<String, String>,
}

impl From<TopicDescription> for Topic {
    fn from(d: TopicDescription) -> Topic {
        Topic {
            name: d.name.as_str().to_string(),
            id: d.id,
            partitions: d.partitions,
            config: d
                .config
                .entries()
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            overrides: d.overrides,
        }
    }
}

/// `GET /v1/topics`'s answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct TopicList {
    /// Every topic, by name.
    pub topics: Vec<Topic>,
}

/// Creates a topic.
#[utoipa::path(
    post,
    path = "/v1/topics",
    tag = "topics",
    request_body = CreateTopicRequest,
    responses(
        (status = 201, description = "The topic was created", body = Topic),
        (status = 400, description = "`invalid_json`: the body is not JSON or does not match the schema (an unknown field is named); `invalid_argument`: a bad name, partition count or config", body = ErrorBody),
        (status = 409, description = "`already_exists`: a topic of this name exists", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: the body is over 1 MiB", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`: the body is not sent as `application/json`", body = ErrorBody),
    )
)]
pub async fn create_topic(
    State(broker): State<Arc<Broker>>,
    JsonBody(req): JsonBody<CreateTopicRequest>,
) -> Result<(StatusCode, Json<Topic>), ApiError> {
    let new = NewTopic {
        name: req.name,
        partitions: req.partitions,
        configs: req.config,
    };
    let desc = broker.create_topic(new).await?;
    Ok((StatusCode::CREATED, Json(desc.into())))
}

/// Lists every topic.
#[utoipa::path(
    get,
    path = "/v1/topics",
    tag = "topics",
    responses((status = 200, description = "Every topic, by name", body = TopicList))
)]
pub async fn list_topics(State(broker): State<Arc<Broker>>) -> Json<TopicList> {
    let mut topics: Vec<Topic> = broker.list_topics().into_iter().map(Topic::from).collect();
    topics.sort_by(|a, b| a.name.cmp(&b.name));
    Json(TopicList { topics })
}

/// Describes one topic.
#[utoipa::path(
    get,
    path = "/v1/topics/{topic}",
    tag = "topics",
    params(("topic" = String, Path, description = "The topic's name")),
    responses(
        (status = 200, description = "The topic", body = Topic),
        (status = 404, description = "`not_found`: no such topic", body = ErrorBody),
    )
)]
pub async fn get_topic(
    State(broker): State<Arc<Broker>>,
    topic: Result<Path<String>, PathRejection>,
) -> Result<Json<Topic>, ApiError> {
    Ok(Json(broker.describe_topic(&topic_name(topic)?)?.into()))
}

/// Deletes a topic and its data; answers what the topic was.
#[utoipa::path(
    delete,
    path = "/v1/topics/{topic}",
    tag = "topics",
    params(("topic" = String, Path, description = "The topic's name")),
    responses(
        (status = 200, description = "The topic was deleted; this is what it was", body = Topic),
        (status = 404, description = "`not_found`: no such topic", body = ErrorBody),
    )
)]
pub async fn delete_topic(
    State(broker): State<Arc<Broker>>,
    topic: Result<Path<String>, PathRejection>,
) -> Result<Json<Topic>, ApiError> {
    Ok(Json(broker.delete_topic(&topic_name(topic)?).await?.into()))
}

/// The `{topic}` segment, or a JSON 400 instead of axum's plain-text rejection (a
/// percent-encoding that is not UTF-8).
pub(super) fn topic_name(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    path.map(|Path(name)| name).map_err(|r| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_argument",
            format!("bad topic in the path: {}", r.body_text()),
        )
    })
}
