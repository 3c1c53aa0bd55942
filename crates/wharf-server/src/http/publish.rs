//! `POST /v1/topics/{topic}/messages`: publish messages. A thin translation onto
//! `Broker::publish`, which partitions, deduplicates and appends; this module only
//! decodes text and base64 into bytes.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use wharf_core::{Broker, Publish, Published};

use super::topics::topic_name;
use super::{ApiError, ErrorBody, JsonBody, PUBLISH_BODY_LIMIT};

/// `POST /v1/topics/{topic}/messages`'s body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PublishRequest {
    /// 1 to 10000 messages, answered in this order.
    pub messages: Vec<PublishMessage>,
}

/// One message. Every field is optional; an empty object stores a record with a null
/// key and a null value.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PublishMessage {
    /// The key as UTF-8 text. Keyed messages go to the partition Kafka's default
    /// partitioner picks (murmur2), as a Kafka producer would.
    #[schema(example = "customer-17")]
    pub key: Option<String>,
    /// The key as standard base64, for binary keys. Not together with `key`.
    pub key_base64: Option<String>,
    /// The value as UTF-8 text. Neither `value` nor `value_base64`: a null value.
    #[schema(example = "{\"order\":42}")]
    pub value: Option<String>,
    /// The value as standard base64 (with padding), for binary values. Not together
    /// with `value`.
    pub value_base64: Option<String>,
    /// Record headers, name to UTF-8 value. Names starting with `wharf-` are reserved.
    #[serde(default)]
    #[schema(example = json!({"source": "web"}))]
    pub headers: BTreeMap<String, String>,
    /// Milliseconds to hold the message back from queue subscriptions, 0 to 604800000
    /// (7 days). Stored as the `wharf-delay-ms` header.
    #[schema(minimum = 0, maximum = 604800000)]
    pub delay_ms: Option<i64>,
    /// Milliseconds after which queue subscriptions drop the message, at least 1.
    /// Stored as the `wharf-ttl-ms` header.
    #[schema(minimum = 1)]
    pub ttl_ms: Option<i64>,
    /// 1 to 256 bytes. A message with the same key published to the same partition
    /// within the topic's `dedup.window.ms` is not stored again; the answer is the
    /// original's partition and offset with `duplicate: true`. Also picks the partition
    /// of a message without `key` or `partition`, so a retried request lands on the
    /// same one. Stored as the `wharf-idempotency-key` header.
    #[schema(example = "order-42-created")]
    pub idempotency_key: Option<String>,
    /// Append to this partition (numbered from 0), whatever the key.
    pub partition: Option<u32>,
}

/// Where one message is.
#[derive(Debug, Serialize, ToSchema)]
pub struct PublishedMessage {
    pub partition: u32,
    pub offset: u64,
    /// The idempotency key was stored within the dedup window already: nothing was
    /// written, `partition` and `offset` are the original's.
    pub duplicate: bool,
}

/// `POST /v1/topics/{topic}/messages`'s answer: one entry per message, in request order.
#[derive(Debug, Serialize, ToSchema)]
pub struct PublishResponse {
    pub messages: Vec<PublishedMessage>,
}

impl From<Published> for PublishedMessage {
    fn from(p: Published) -> PublishedMessage {
        PublishedMessage {
            partition: p.partition,
            offset: p.offset,
            duplicate: p.duplicate,
        }
    }
}

fn bad(index: usize, message: String) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "invalid_argument",
        format!("message {index}: {message}"),
    )
}

/// Text or base64 (not both) as bytes.
fn bytes_of(
    index: usize,
    field: &str,
    text: Option<String>,
    base64: Option<String>,
) -> Result<Option<Vec<u8>>, ApiError> {
    match (text, base64) {
        (Some(_), Some(_)) => Err(bad(
            index,
            format!("give either `{field}` or `{field}_base64`, not both"),
        )),
        (Some(t), None) => Ok(Some(t.into_bytes())),
        (None, Some(b)) => STANDARD.decode(b.as_bytes()).map(Some).map_err(|e| {
            bad(
                index,
                format!("`{field}_base64` is not standard base64: {e}"),
            )
        }),
        (None, None) => Ok(None),
    }
}

/// Milliseconds, refused when negative (a signed field in the schema, so the error can
/// name it, which serde's for an unsigned one does not).
fn non_negative(index: usize, field: &str, ms: Option<i64>) -> Result<Option<u64>, ApiError> {
    ms.map(|v| {
        u64::try_from(v).map_err(|_| bad(index, format!("{field} must not be negative, got {v}")))
    })
    .transpose()
}

impl PublishMessage {
    fn into_publish(self, index: usize) -> Result<Publish, ApiError> {
        Ok(Publish {
            key: bytes_of(index, "key", self.key, self.key_base64)?,
            value: bytes_of(index, "value", self.value, self.value_base64)?,
            headers: self
                .headers
                .into_iter()
                .map(|(k, v)| (k, v.into_bytes()))
                .collect(),
            delay_ms: non_negative(index, "delay_ms", self.delay_ms)?,
            ttl_ms: non_negative(index, "ttl_ms", self.ttl_ms)?,
            idempotency_key: self.idempotency_key,
            partition: self.partition,
        })
    }
}

/// Publishes messages to a topic.
#[utoipa::path(
    post,
    path = "/v1/topics/{topic}/messages",
    tag = "messages",
    params(("topic" = String, Path, description = "The topic's name")),
    request_body = PublishRequest,
    responses(
        (status = 200, description = "Every message is stored durably (or was already, within the dedup window: `duplicate`). One answer per message, in request order", body = PublishResponse),
        (status = 400, description = "`invalid_json`: the body is not JSON or does not match the schema (an unknown field is named); `invalid_argument`: no messages or more than 10000, `value` with `value_base64`, bad base64, a partition that does not exist, a bad `delay_ms`/`ttl_ms`/`idempotency_key`, a reserved header name. Nothing was stored", body = ErrorBody),
        (status = 404, description = "`not_found`: no such topic", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: the body is over 16 MiB, or one message is over the topic's `max.message.bytes`. Nothing was stored", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`: the body is not sent as `application/json`", body = ErrorBody),
    )
)]
pub async fn publish(
    State(broker): State<Arc<Broker>>,
    topic: Result<Path<String>, PathRejection>,
    JsonBody(req): JsonBody<PublishRequest, PUBLISH_BODY_LIMIT>,
) -> Result<Json<PublishResponse>, ApiError> {
    let topic = topic_name(topic)?;
    let messages = req
        .messages
        .into_iter()
        .enumerate()
        .map(|(i, m)| m.into_publish(i))
        .collect::<Result<Vec<_>, _>>()?;
    let published = broker.publish(&topic, messages).await?;
    Ok(Json(PublishResponse {
        messages: published.into_iter().map(PublishedMessage::from).collect(),
    }))
}
