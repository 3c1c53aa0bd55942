//! A message's life on demand: `GET /v1/topics/{topic}/messages/{partition}/{offset}/history`,
//! a thin translation of `wharf_core::history::MessageHistory::story`: the record as the
//! log holds it, and what the queue subscriptions did with it within the history
//! window (kept in memory, lost on restart).

use std::collections::BTreeMap;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;
use wharf_core::history::{DeadLetterOrigin, HistoryEvent, HistoryKind, MessageStory};

use super::subscriptions::{split_headers, text_or_base64};
use super::{ApiError, AppState, ErrorBody};

/// The record as stored.
#[derive(Debug, Serialize, ToSchema)]
pub struct StoredMessage {
    pub offset: u64,
    /// When it was published: the record's timestamp, milliseconds since the epoch.
    pub publish_time_ms: i64,
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
}

/// A message somewhere: topic, partition, offset, and the path of its own history.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessageLocation {
    pub topic: String,
    pub partition: u32,
    pub offset: u64,
    /// `/v1/topics/{topic}/messages/{partition}/{offset}/history` of that message.
    pub history: String,
}

impl MessageLocation {
    fn new(topic: &str, partition: u32, offset: u64) -> MessageLocation {
        MessageLocation {
            topic: topic.to_string(),
            partition,
            offset,
            history: history_path(topic, partition, offset),
        }
    }
}

fn history_path(topic: &str, partition: u32, offset: u64) -> String {
    format!("/v1/topics/{topic}/messages/{partition}/{offset}/history")
}

/// One thing that happened to the message in one subscription. Fields that do not
/// apply to the event's kind are left out.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessageEvent {
    /// Milliseconds since the epoch.
    pub time_ms: i64,
    pub subscription: String,
    /// `delivered`, `acked`, `nacked`, `lease_expired` (its ack deadline passed),
    /// `expired` (its time to live ran out), `dead_lettered` or `redriven`.
    #[schema(example = "delivered")]
    pub kind: &'static str,
    /// Who pulled it (`delivered`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consumer: Option<String>,
    /// The delivery this event is about, 1 for the first (every kind but `expired` and
    /// `redriven`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivery_count: Option<u32>,
    /// When the lease ends unless acked, nacked or extended (`delivered`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ack_deadline_ms: Option<i64>,
    /// Why (`nacked`, `dead_lettered`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When it will be delivered again (`nacked`); left out when that was its last
    /// delivery (a `dead_lettered` follows).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redeliver_at_ms: Option<i64>,
    /// Where the dead letter is (`dead_lettered`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dead_letter: Option<MessageLocation>,
    /// The dead letter it was brought back from (`redriven`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redriven_from: Option<MessageLocation>,
}

impl From<HistoryEvent> for MessageEvent {
    fn from(e: HistoryEvent) -> MessageEvent {
        let mut out = MessageEvent {
            time_ms: e.time_ms,
            subscription: e.subscription.to_string(),
            kind: e.kind.name(),
            consumer: None,
            delivery_count: None,
            ack_deadline_ms: None,
            reason: None,
            redeliver_at_ms: None,
            dead_letter: None,
            redriven_from: None,
        };
        match e.kind {
            HistoryKind::Delivered {
                consumer,
                delivery_count,
                deadline_ms,
            } => {
                out.consumer = Some(consumer.to_string());
                out.delivery_count = Some(delivery_count);
                out.ack_deadline_ms = Some(deadline_ms);
            }
            HistoryKind::Acked { delivery_count }
            | HistoryKind::LeaseExpired { delivery_count } => {
                out.delivery_count = Some(delivery_count);
            }
            HistoryKind::Nacked {
                delivery_count,
                reason,
                redeliver_at_ms,
            } => {
                out.delivery_count = Some(delivery_count);
                out.reason = Some(reason.to_string());
                out.redeliver_at_ms = redeliver_at_ms;
            }
            HistoryKind::Expired => {}
            HistoryKind::DeadLettered {
                reason,
                delivery_count,
                dead_letter_topic,
                dlq_partition,
                dlq_offset,
            } => {
                out.delivery_count = Some(delivery_count);
                out.reason = Some(reason.to_string());
                out.dead_letter = Some(MessageLocation::new(
                    &dead_letter_topic,
                    dlq_partition,
                    dlq_offset,
                ));
            }
            HistoryKind::Redriven {
                from_topic,
                from_partition,
                from_offset,
            } => {
                out.redriven_from = Some(MessageLocation::new(
                    &from_topic,
                    from_partition,
                    from_offset,
                ));
            }
        }
        out
    }
}

/// Where a dead letter came from, read from its `wharf-dlq-*` headers.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetterOf {
    /// The original message.
    pub origin: MessageLocation,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subscription: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivery_count: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl From<DeadLetterOrigin> for DeadLetterOf {
    fn from(o: DeadLetterOrigin) -> DeadLetterOf {
        DeadLetterOf {
            origin: MessageLocation::new(&o.topic, o.partition, o.offset),
            subscription: o.subscription,
            delivery_count: o.delivery_count,
            reason: o.reason,
        }
    }
}

/// `GET …/messages/{partition}/{offset}/history`'s answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessageHistoryResponse {
    pub topic: String,
    pub partition: u32,
    pub offset: u64,
    /// As pulls give it: the same across deliveries and subscriptions.
    pub message_id: String,
    pub message: StoredMessage,
    /// What the queue subscriptions did with it, oldest first. Empty when nothing
    /// happened within the window, when history is off, or after a restart (history is
    /// kept in memory only).
    pub events: Vec<MessageEvent>,
    /// Where it was dead-lettered, oldest first (from the events).
    pub dead_letters: Vec<MessageLocation>,
    /// Set when this record is itself a dead letter: where it came from.
    pub dead_letter_of: Option<DeadLetterOf>,
    /// How long events are kept (the broker's `--history-window-ms`); 0: history is off.
    pub history_window_ms: u64,
}

impl From<MessageStory> for MessageHistoryResponse {
    fn from(s: MessageStory) -> MessageHistoryResponse {
        let m = s.message;
        let (key, key_base64) = text_or_base64(m.key.as_deref());
        let (value, value_base64) = text_or_base64(m.value.as_deref());
        let (headers, headers_base64) = split_headers(m.headers);
        let events: Vec<MessageEvent> = s.events.into_iter().map(MessageEvent::from).collect();
        let dead_letters = events
            .iter()
            .filter_map(|e| e.dead_letter.as_ref())
            .map(|l| MessageLocation::new(&l.topic, l.partition, l.offset))
            .collect();
        MessageHistoryResponse {
            topic: s.topic,
            partition: s.partition,
            offset: m.offset,
            message_id: s.message_id,
            message: StoredMessage {
                offset: m.offset,
                publish_time_ms: m.timestamp_ms,
                key,
                key_base64,
                value,
                value_base64,
                headers,
                headers_base64,
            },
            events,
            dead_letters,
            dead_letter_of: s.dead_letter_of.map(DeadLetterOf::from),
            history_window_ms: 0,
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The life of one message: the record as stored, and each delivery, ack, nack, expired
/// lease, dead letter and redrive within the history window.
#[utoipa::path(
    get,
    path = "/v1/topics/{topic}/messages/{partition}/{offset}/history",
    tag = "messages",
    params(
        ("topic" = String, Path, description = "The topic's name"),
        ("partition" = u32, Path, description = "The partition, from 0"),
        ("offset" = u64, Path, description = "The message's offset in the partition")
    ),
    responses(
        (status = 200, description = "The message and its events (possibly none)", body = MessageHistoryResponse),
        (status = 400, description = "`invalid_argument`: a partition or offset that is not a number", body = ErrorBody),
        (status = 404, description = "`not_found`: no such topic or partition, or no message at that offset (below the log start, past the end, or not a data record)", body = ErrorBody),
    )
)]
pub async fn message_history(
    State(state): State<AppState>,
    path: Result<Path<(String, u32, u64)>, PathRejection>,
) -> Result<Json<MessageHistoryResponse>, ApiError> {
    let (topic, partition, offset) = path.map(|Path(p)| p).map_err(|r| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_argument",
            format!("bad path: {}", r.body_text()),
        )
    })?;
    let history = &state.history;
    let story = history
        .story(&state.broker, &topic, partition, offset, now_ms())
        .await?;
    let mut answer = MessageHistoryResponse::from(story);
    answer.history_window_ms = if history.enabled() {
        history.window_ms()
    } else {
        0
    };
    Ok(Json(answer))
}
