//! Queue subscriptions over HTTP: create or change (`PUT`), describe, list, delete, and
//! the consumer side: pull, ack, nack, extend, seek, redrive. Thin translations onto
//! `wharf_core::queue::Queues`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use base64::Engine;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use wharf_core::queue::{
    AckId, BacklogPolicy, Backoff, Outcome, Pulled, Queues, SeekTarget, StartPosition,
    SubscriptionInfo, SubscriptionSettings, MAX_PULL,
};

use super::{ApiError, ErrorBody, JsonBody};
use wharf_core::Broker;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Most ack ids one ack, nack or extend takes.
pub const MAX_ACK_IDS: usize = 10_000;
/// Longest pull wait.
pub const MAX_WAIT_MS: u64 = 60_000;
/// Longest nack reason kept (longer ones are cut).
pub const MAX_REASON_CHARS: usize = 1_024;

/// Retry backoff: `initial_ms × multiplier^(n-1)` before the n-th retry, at most `max_ms`,
/// spread by ±20% jitter.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackoffSettings {
    #[schema(default = 1000, minimum = 0, maximum = 604800000)]
    pub initial_ms: Option<u64>,
    #[schema(default = 60000, minimum = 0, maximum = 604800000)]
    pub max_ms: Option<u64>,
    #[schema(default = 2.0, minimum = 1.0, maximum = 100.0)]
    pub multiplier: Option<f64>,
}

/// `PUT …/subscriptions/{subscription}`'s body. Every field is optional; a field left
/// out takes its default (a `PUT` replaces every setting).
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionSettingsRequest {
    /// How long a pulled message stays leased before it is delivered again.
    #[schema(default = 30000, minimum = 1, maximum = 604800000)]
    pub ack_deadline_ms: Option<u64>,
    /// Deliveries after which an unacked message is dead-lettered; 0 retries for ever.
    #[schema(default = 5, minimum = 0, maximum = 1000000)]
    pub max_deliveries: Option<u32>,
    pub backoff: Option<BackoffSettings>,
    /// Where dead letters go; by default `<topic>.<subscription>.dlq`, created when
    /// first needed.
    pub dead_letter_topic: Option<String>,
    /// Most unacked messages one consumer may hold.
    #[schema(default = 1000, minimum = 1, maximum = 100000)]
    pub max_in_flight: Option<u32>,
    /// Deliver messages of one key one at a time, in order.
    #[schema(default = false)]
    pub ordered_by_key: Option<bool>,
    /// Unacked messages above which producers are slowed (`block`) or refused (`reject`).
    #[schema(minimum = 1)]
    pub max_backlog_messages: Option<u64>,
    /// Bytes stored from the oldest unacked message on (to within 4 KiB per partition)
    /// above which producers are slowed or refused.
    #[schema(minimum = 1)]
    pub max_backlog_bytes: Option<u64>,
    #[schema(value_type = Option<String>, example = "block")]
    pub backlog_policy: Option<PolicyName>,
    /// Where a new subscription starts: `latest` (only messages published from now) or
    /// `earliest` (every retained message). Ignored when changing a subscription.
    #[schema(value_type = Option<String>, example = "latest")]
    pub start: Option<StartName>,
    /// Delay before every message's first delivery (a message's own `delay_ms` wins).
    #[schema(default = 0, minimum = 0, maximum = 604800000)]
    pub delay_ms: Option<u64>,
}

/// `block` or `reject`.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PolicyName {
    Block,
    Reject,
}

/// `latest` or `earliest`.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum StartName {
    Latest,
    Earliest,
}

impl From<SubscriptionSettingsRequest> for SubscriptionSettings {
    fn from(r: SubscriptionSettingsRequest) -> SubscriptionSettings {
        let d = SubscriptionSettings::default();
        let b = r.backoff.unwrap_or(BackoffSettings {
            initial_ms: None,
            max_ms: None,
            multiplier: None,
        });
        SubscriptionSettings {
            ack_deadline_ms: r.ack_deadline_ms.unwrap_or(d.ack_deadline_ms),
            max_deliveries: r.max_deliveries.unwrap_or(d.max_deliveries),
            backoff: Backoff {
                initial_ms: b.initial_ms.unwrap_or(d.backoff.initial_ms),
                max_ms: b.max_ms.unwrap_or(d.backoff.max_ms),
                multiplier: b.multiplier.unwrap_or(d.backoff.multiplier),
            },
            dead_letter_topic: r.dead_letter_topic,
            max_in_flight: r.max_in_flight.unwrap_or(d.max_in_flight),
            ordered_by_key: r.ordered_by_key.unwrap_or(d.ordered_by_key),
            max_backlog_messages: r.max_backlog_messages,
            max_backlog_bytes: r.max_backlog_bytes,
            backlog_policy: match r.backlog_policy {
                Some(PolicyName::Reject) => BacklogPolicy::Reject,
                _ => BacklogPolicy::Block,
            },
            start: match r.start {
                Some(StartName::Earliest) => StartPosition::Earliest,
                _ => StartPosition::Latest,
            },
            delay_ms: r.delay_ms.unwrap_or(d.delay_ms),
        }
    }
}

/// Every setting in effect.
#[derive(Debug, Serialize, ToSchema)]
pub struct Settings {
    pub ack_deadline_ms: u64,
    pub max_deliveries: u32,
    pub backoff: BackoffSettings,
    pub dead_letter_topic: String,
    pub max_in_flight: u32,
    pub ordered_by_key: bool,
    pub max_backlog_messages: Option<u64>,
    pub max_backlog_bytes: Option<u64>,
    pub backlog_policy: PolicyName,
    pub start: StartName,
    pub delay_ms: u64,
}

/// Live figures. Counters count since the broker started.
#[derive(Debug, Serialize, ToSchema)]
pub struct Stats {
    /// Messages not acked yet, in flight included.
    pub backlog: u64,
    /// Messages leased to consumers now.
    pub in_flight: u64,
    pub delivered: u64,
    pub acked: u64,
    pub nacked: u64,
    pub dead_lettered: u64,
    /// Age of the oldest unacked message; `null` when there is none.
    pub oldest_unacked_age_ms: Option<u64>,
}

/// A subscription: its settings and live figures.
#[derive(Debug, Serialize, ToSchema)]
pub struct Subscription {
    pub topic: String,
    pub name: String,
    /// Milliseconds since the epoch.
    pub created_ms: i64,
    pub settings: Settings,
    pub stats: Stats,
}

impl From<SubscriptionInfo> for Subscription {
    fn from(i: SubscriptionInfo) -> Subscription {
        let s = i.settings;
        Subscription {
            topic: i.topic,
            name: i.name,
            created_ms: i.created_ms,
            settings: Settings {
                ack_deadline_ms: s.ack_deadline_ms,
                max_deliveries: s.max_deliveries,
                backoff: BackoffSettings {
                    initial_ms: Some(s.backoff.initial_ms),
                    max_ms: Some(s.backoff.max_ms),
                    multiplier: Some(s.backoff.multiplier),
                },
                dead_letter_topic: i.dead_letter_topic,
                max_in_flight: s.max_in_flight,
                ordered_by_key: s.ordered_by_key,
                max_backlog_messages: s.max_backlog_messages,
                max_backlog_bytes: s.max_backlog_bytes,
                backlog_policy: match s.backlog_policy {
                    BacklogPolicy::Block => PolicyName::Block,
                    BacklogPolicy::Reject => PolicyName::Reject,
                },
                start: match s.start {
                    StartPosition::Latest => StartName::Latest,
                    StartPosition::Earliest => StartName::Earliest,
                },
                delay_ms: s.delay_ms,
            },
            stats: Stats {
                backlog: i.stats.backlog,
                in_flight: i.stats.in_flight,
                delivered: i.stats.delivered,
                acked: i.stats.acked,
                nacked: i.stats.nacked,
                dead_lettered: i.stats.dead_lettered,
                oldest_unacked_age_ms: i.stats.oldest_unacked_age_ms,
            },
        }
    }
}

/// `GET /v1/topics/{topic}/subscriptions`'s answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct SubscriptionList {
    pub subscriptions: Vec<Subscription>,
}

/// `POST …/pull`'s body.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PullRequest {
    /// Most messages to return.
    #[schema(default = 1, minimum = 1, maximum = 1000)]
    pub max_messages: Option<u32>,
    /// How long to wait for a first message when none is available (long poll).
    #[schema(default = 0, minimum = 0, maximum = 60000)]
    pub wait_ms: Option<u64>,
    /// Who is pulling: `max_in_flight` counts per consumer.
    #[schema(default = "default", max_length = 256)]
    pub consumer: Option<String>,
}

/// One message handed out by a pull.
#[derive(Debug, Serialize, ToSchema)]
pub struct PulledMessage {
    /// Names this delivery: give it to ack, nack or extend.
    pub ack_id: String,
    /// The same across deliveries and subscriptions: deduplicate on it.
    pub message_id: String,
    pub partition: u32,
    pub offset: u64,
    /// The key as UTF-8; `null` when there is none or it is not UTF-8.
    pub key: Option<String>,
    /// The key in base64, when it is not UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_base64: Option<String>,
    /// The value as UTF-8; `null` when there is none or it is not UTF-8.
    pub value: Option<String>,
    /// The value in base64, when it is not UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value_base64: Option<String>,
    /// Headers with UTF-8 values.
    pub headers: BTreeMap<String, String>,
    /// Headers whose values are not UTF-8, in base64.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub headers_base64: BTreeMap<String, String>,
    /// 1 on the first delivery.
    pub delivery_count: u32,
    /// Milliseconds since the epoch.
    pub publish_time_ms: i64,
}

/// Text and base64 forms of some bytes: exactly one is set when there are bytes.
pub(super) fn text_or_base64(b: Option<&[u8]>) -> (Option<String>, Option<String>) {
    match b {
        None => (None, None),
        Some(b) => match std::str::from_utf8(b) {
            Ok(s) => (Some(s.to_string()), None),
            Err(_) => (None, Some(B64.encode(b))),
        },
    }
}

/// Record headers as the API shows them: UTF-8 values in the first map, the others in
/// base64 in the second; the first value of a repeated name wins, a null value is "".
pub(super) fn split_headers<V: AsRef<[u8]>>(
    raw: Vec<(String, Option<V>)>,
) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let mut headers = BTreeMap::new();
    let mut headers_base64 = BTreeMap::new();
    for (k, v) in raw {
        match text_or_base64(v.as_ref().map(AsRef::as_ref)) {
            (Some(t), _) => {
                headers.entry(k).or_insert(t);
            }
            (None, Some(b)) => {
                headers_base64.entry(k).or_insert(b);
            }
            (None, None) => {
                headers.entry(k).or_insert_with(String::new);
            }
        }
    }
    (headers, headers_base64)
}

impl From<Pulled> for PulledMessage {
    fn from(p: Pulled) -> PulledMessage {
        let m = p.message;
        let (key, key_base64) = text_or_base64(m.key.as_deref());
        let (value, value_base64) = text_or_base64(m.value.as_deref());
        let (headers, headers_base64) = split_headers(m.headers);
        PulledMessage {
            ack_id: p.ack_id.to_string(),
            message_id: p.message_id,
            partition: p.partition,
            offset: m.offset,
            key,
            key_base64,
            value,
            value_base64,
            headers,
            headers_base64,
            delivery_count: p.delivery_count,
            publish_time_ms: m.timestamp_ms,
        }
    }
}

/// `POST …/pull`'s answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct PullResponse {
    pub messages: Vec<PulledMessage>,
}

/// `POST …/ack`'s body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AckRequest {
    /// Ack ids as pull returned them (1 to 10000).
    pub ack_ids: Vec<String>,
}

/// `POST …/nack`'s body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NackRequest {
    pub ack_ids: Vec<String>,
    /// Why: kept with the message and written on its dead letter (up to 1024
    /// characters).
    pub reason: Option<String>,
    /// Deliver again after this long instead of the subscription's backoff.
    #[schema(minimum = 0, maximum = 604800000)]
    pub delay_ms: Option<u64>,
}

/// `POST …/extend`'s body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExtendRequest {
    pub ack_ids: Vec<String>,
    /// The new deadline, counted from now.
    #[schema(minimum = 1, maximum = 604800000)]
    pub deadline_ms: u64,
}

/// What became of each id, in request order.
#[derive(Debug, Serialize, ToSchema)]
pub struct AckResponse {
    /// How many ids took effect.
    pub succeeded: usize,
    pub results: Vec<AckResult>,
}

/// What became of one id.
#[derive(Debug, Serialize, ToSchema)]
pub struct AckResult {
    pub ack_id: String,
    /// `ok`; `already_done` (acked or dead-lettered before); `stale` (delivered again
    /// since, or no longer leased: nack and extend only); `unknown` (no such message).
    #[schema(example = "ok")]
    pub status: &'static str,
}

/// `POST …/seek`'s body: exactly one of `offset` and `time`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SeekRequest {
    /// Everything before this offset counts as acked, everything from it as never
    /// delivered.
    pub offset: Option<u64>,
    /// Milliseconds since the epoch: seek to the first message published at or after it.
    pub time: Option<i64>,
    /// Only this partition; every partition when left out.
    pub partition: Option<u32>,
}

/// Where a seek put each partition.
#[derive(Debug, Serialize, ToSchema)]
pub struct SeekResponse {
    pub positions: Vec<Position>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Position {
    pub partition: u32,
    pub offset: u64,
}

/// `POST …/redrive`'s answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct RedriveResponse {
    /// Dead letters made pending again.
    pub redriven: u64,
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_argument", message)
}

/// `{topic}` and `{subscription}`, or a JSON 400.
fn names(
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<(String, String), ApiError> {
    path.map(|Path(p)| p)
        .map_err(|r| bad(format!("bad path: {}", r.body_text())))
}

fn parse_ids(ids: &[String]) -> Result<Vec<AckId>, ApiError> {
    if ids.is_empty() {
        return Err(bad("ack_ids is empty"));
    }
    if ids.len() > MAX_ACK_IDS {
        return Err(bad(format!(
            "{} ack_ids; at most {MAX_ACK_IDS} per request",
            ids.len()
        )));
    }
    ids.iter()
        .map(|s| s.parse::<AckId>().map_err(|e| bad(e.to_string())))
        .collect()
}

fn results(ids: Vec<String>, outcomes: Vec<Outcome>) -> AckResponse {
    let results: Vec<AckResult> = ids
        .into_iter()
        .zip(outcomes)
        .map(|(ack_id, o)| AckResult {
            ack_id,
            status: match o {
                Outcome::Done => "ok",
                Outcome::AlreadyDone => "already_done",
                Outcome::Stale => "stale",
                Outcome::Unknown => "unknown",
            },
        })
        .collect();
    AckResponse {
        succeeded: results.iter().filter(|r| r.status == "ok").count(),
        results,
    }
}

/// Creates a subscription, or replaces the settings of one.
#[utoipa::path(
    put,
    path = "/v1/topics/{topic}/subscriptions/{subscription}",
    tag = "subscriptions",
    params(("topic" = String, Path), ("subscription" = String, Path, description = "1 to 200 ASCII letters, digits, `.`, `_`, `-`")),
    request_body = SubscriptionSettingsRequest,
    responses(
        (status = 201, description = "Created", body = Subscription),
        (status = 200, description = "Settings replaced", body = Subscription),
        (status = 400, description = "`invalid_json` or `invalid_argument`", body = ErrorBody),
        (status = 404, description = "`not_found`: no such topic", body = ErrorBody),
        (status = 415, description = "`unsupported_media_type`", body = ErrorBody),
    )
)]
pub async fn put_subscription(
    State(queues): State<Queues>,
    path: Result<Path<(String, String)>, PathRejection>,
    JsonBody(req): JsonBody<SubscriptionSettingsRequest>,
) -> Result<(StatusCode, Json<Subscription>), ApiError> {
    let (topic, name) = names(path)?;
    let (info, created) = queues.put(&topic, &name, req.into()).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(info.into())))
}

/// Describes a subscription with its live figures.
#[utoipa::path(
    get,
    path = "/v1/topics/{topic}/subscriptions/{subscription}",
    tag = "subscriptions",
    params(("topic" = String, Path), ("subscription" = String, Path)),
    responses(
        (status = 200, description = "The subscription", body = Subscription),
        (status = 404, description = "`not_found`", body = ErrorBody),
    )
)]
pub async fn get_subscription(
    State(queues): State<Queues>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Json<Subscription>, ApiError> {
    let (topic, name) = names(path)?;
    Ok(Json(queues.describe(&topic, &name).await?.into()))
}

/// Deletes a subscription and its state; answers what it was.
#[utoipa::path(
    delete,
    path = "/v1/topics/{topic}/subscriptions/{subscription}",
    tag = "subscriptions",
    params(("topic" = String, Path), ("subscription" = String, Path)),
    responses(
        (status = 200, description = "Deleted; this is what it was", body = Subscription),
        (status = 404, description = "`not_found`", body = ErrorBody),
    )
)]
pub async fn delete_subscription(
    State(queues): State<Queues>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Json<Subscription>, ApiError> {
    let (topic, name) = names(path)?;
    Ok(Json(queues.delete(&topic, &name).await?.into()))
}

/// Lists a topic's subscriptions.
#[utoipa::path(
    get,
    path = "/v1/topics/{topic}/subscriptions",
    tag = "subscriptions",
    params(("topic" = String, Path)),
    responses(
        (status = 200, description = "Every subscription of the topic", body = SubscriptionList),
        (status = 404, description = "`not_found`: no such topic", body = ErrorBody),
    )
)]
pub async fn list_subscriptions(
    State(queues): State<Queues>,
    topic: Result<Path<String>, PathRejection>,
) -> Result<Json<SubscriptionList>, ApiError> {
    let topic = topic
        .map(|Path(t)| t)
        .map_err(|r| bad(format!("bad path: {}", r.body_text())))?;
    let subscriptions = queues
        .list(&topic)
        .await?
        .into_iter()
        .map(Subscription::from)
        .collect();
    Ok(Json(SubscriptionList { subscriptions }))
}

/// Leases messages to the caller, waiting up to `wait_ms` for some.
#[utoipa::path(
    post,
    path = "/v1/topics/{topic}/subscriptions/{subscription}/pull",
    tag = "subscriptions",
    params(("topic" = String, Path), ("subscription" = String, Path)),
    request_body = PullRequest,
    responses(
        (status = 200, description = "Messages, possibly none", body = PullResponse),
        (status = 400, description = "`invalid_json` or `invalid_argument`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
    )
)]
pub async fn pull(
    State(queues): State<Queues>,
    State(broker): State<Arc<Broker>>,
    path: Result<Path<(String, String)>, PathRejection>,
    JsonBody(req): JsonBody<PullRequest>,
) -> Result<Json<PullResponse>, ApiError> {
    let (topic, name) = names(path)?;
    let max = req.max_messages.unwrap_or(1);
    if max == 0 || max as usize > MAX_PULL {
        return Err(bad(format!("max_messages {max}: must be 1 to {MAX_PULL}")));
    }
    let wait = req.wait_ms.unwrap_or(0);
    if wait > MAX_WAIT_MS {
        return Err(bad(format!("wait_ms {wait}: must be 0 to {MAX_WAIT_MS}")));
    }
    let consumer = req.consumer.unwrap_or_else(|| "default".into());
    if consumer.is_empty() || consumer.len() > 256 {
        return Err(bad("consumer must be 1 to 256 bytes long"));
    }
    let got = queues
        .pull(
            &topic,
            &name,
            &consumer,
            max as usize,
            Duration::from_millis(wait),
        )
        .await?;
    if let Some(m) = broker.topic_metrics(&topic) {
        let bytes: usize = got
            .iter()
            .map(|p| {
                p.message.key.as_ref().map_or(0, |k| k.len())
                    + p.message.value.as_ref().map_or(0, |v| v.len())
            })
            .sum();
        m.pulled(got.len() as u64, bytes as u64);
    }
    Ok(Json(PullResponse {
        messages: got.into_iter().map(PulledMessage::from).collect(),
    }))
}

/// Acks messages: durable before the answer, never delivered again.
#[utoipa::path(
    post,
    path = "/v1/topics/{topic}/subscriptions/{subscription}/ack",
    tag = "subscriptions",
    params(("topic" = String, Path), ("subscription" = String, Path)),
    request_body = AckRequest,
    responses(
        (status = 200, description = "What became of each id", body = AckResponse),
        (status = 400, description = "A malformed ack id, or none, or too many", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
    )
)]
pub async fn ack(
    State(queues): State<Queues>,
    path: Result<Path<(String, String)>, PathRejection>,
    JsonBody(req): JsonBody<AckRequest>,
) -> Result<Json<AckResponse>, ApiError> {
    let (topic, name) = names(path)?;
    let ids = parse_ids(&req.ack_ids)?;
    let out = queues.ack(&topic, &name, &ids).await?;
    Ok(Json(results(req.ack_ids, out)))
}

/// Gives messages back for redelivery after `delay_ms` or the backoff; a message out of
/// deliveries goes to the dead-letter topic.
#[utoipa::path(
    post,
    path = "/v1/topics/{topic}/subscriptions/{subscription}/nack",
    tag = "subscriptions",
    params(("topic" = String, Path), ("subscription" = String, Path)),
    request_body = NackRequest,
    responses(
        (status = 200, description = "What became of each id", body = AckResponse),
        (status = 400, description = "A malformed ack id, or none, or too many", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
    )
)]
pub async fn nack(
    State(queues): State<Queues>,
    path: Result<Path<(String, String)>, PathRejection>,
    JsonBody(req): JsonBody<NackRequest>,
) -> Result<Json<AckResponse>, ApiError> {
    let (topic, name) = names(path)?;
    let ids = parse_ids(&req.ack_ids)?;
    if let Some(d) = req.delay_ms {
        if d > wharf_core::queue::settings::MAX_DURATION_MS {
            return Err(bad(format!("delay_ms {d}: at most 604800000 (7 days)")));
        }
    }
    let reason: String = req
        .reason
        .unwrap_or_else(|| "nacked".into())
        .chars()
        .take(MAX_REASON_CHARS)
        .collect();
    let out = queues
        .nack(&topic, &name, &ids, &reason, req.delay_ms)
        .await?;
    Ok(Json(results(req.ack_ids, out)))
}

/// Moves lease deadlines to `deadline_ms` from now.
#[utoipa::path(
    post,
    path = "/v1/topics/{topic}/subscriptions/{subscription}/extend",
    tag = "subscriptions",
    params(("topic" = String, Path), ("subscription" = String, Path)),
    request_body = ExtendRequest,
    responses(
        (status = 200, description = "What became of each id", body = AckResponse),
        (status = 400, description = "A malformed ack id, or a bad deadline", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
    )
)]
pub async fn extend(
    State(queues): State<Queues>,
    path: Result<Path<(String, String)>, PathRejection>,
    JsonBody(req): JsonBody<ExtendRequest>,
) -> Result<Json<AckResponse>, ApiError> {
    let (topic, name) = names(path)?;
    let ids = parse_ids(&req.ack_ids)?;
    let d = req.deadline_ms;
    if d == 0 || d > wharf_core::queue::settings::MAX_DURATION_MS {
        return Err(bad(format!(
            "deadline_ms {d}: must be 1 to 604800000 (7 days)"
        )));
    }
    let out = queues.extend(&topic, &name, &ids, d).await?;
    Ok(Json(results(req.ack_ids, out)))
}

/// Moves the subscription to an offset or a time: earlier messages count as acked,
/// later ones as never delivered.
#[utoipa::path(
    post,
    path = "/v1/topics/{topic}/subscriptions/{subscription}/seek",
    tag = "subscriptions",
    params(("topic" = String, Path), ("subscription" = String, Path)),
    request_body = SeekRequest,
    responses(
        (status = 200, description = "Where each partition is now", body = SeekResponse),
        (status = 400, description = "Neither or both of offset and time", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
    )
)]
pub async fn seek(
    State(queues): State<Queues>,
    path: Result<Path<(String, String)>, PathRejection>,
    JsonBody(req): JsonBody<SeekRequest>,
) -> Result<Json<SeekResponse>, ApiError> {
    let (topic, name) = names(path)?;
    let target = match (req.offset, req.time) {
        (Some(o), None) => SeekTarget::Offset(o),
        (None, Some(t)) => SeekTarget::Time(t),
        _ => return Err(bad("give exactly one of `offset` and `time`")),
    };
    let positions = queues
        .seek(&topic, &name, req.partition, target)
        .await?
        .into_iter()
        .map(|(partition, offset)| Position { partition, offset })
        .collect();
    Ok(Json(SeekResponse { positions }))
}

/// Moves this subscription's dead letters back: each is delivered again, its count
/// starting over. The body, if any, is ignored.
#[utoipa::path(
    post,
    path = "/v1/topics/{topic}/subscriptions/{subscription}/redrive",
    tag = "subscriptions",
    params(("topic" = String, Path), ("subscription" = String, Path)),
    responses(
        (status = 200, description = "How many dead letters are pending again", body = RedriveResponse),
        (status = 404, description = "`not_found`", body = ErrorBody),
    )
)]
pub async fn redrive(
    State(queues): State<Queues>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Json<RedriveResponse>, ApiError> {
    let (topic, name) = names(path)?;
    let redriven = queues.redrive(&topic, &name).await?;
    Ok(Json(RedriveResponse { redriven }))
}
