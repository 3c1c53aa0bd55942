//! Spans of traced messages: the broker's part of a producer's OpenTelemetry trace.
//!
//! A message is traced when it carries a W3C Trace Context `traceparent` header (a
//! Kafka record header, or an HTTP message header, both stored as record headers), with
//! `tracestate` taken along when present. The broker then adds spans to that trace:
//!
//! | span              | parent / links                              | from → to                    |
//! |-------------------|---------------------------------------------|------------------------------|
//! | `publish <topic>` | child of the message's `traceparent`        | request received → durable   |
//! | `persist <topic>` | a root, linked to every traced message in it | batch written → durable      |
//! | `deliver <topic>` | child of the message's `traceparent`        | the fetch or pull answering  |
//! | `deliver`, `redeliver`, `ack`, `nack`, `lease expired`, `expired`, `dead-letter`, `redrive` (queues, `<name> <topic>`) | child of it | the event |
//!
//! Every span carries `topic`, `partition` and `offset` (and `subscription` for queue
//! spans), plus the OpenTelemetry messaging conventions' names for the same
//! (`messaging.destination.name`, `messaging.destination.partition.id`,
//! `messaging.kafka.offset`, `messaging.consumer.group.name`).
//!
//! Sampling follows the producer: the SDK the binary installs samples a child as its
//! parent was sampled, so a `traceparent` with the sampled flag off gets no spans.
//!
//! Cost: without a [`MessageTracer`] (no `--otlp-endpoint`) nothing here runs, and the
//! hot paths only test an `Option`. With one, each stored or fetched run of batches is
//! scanned for the header name (`memchr::memmem`, gigabytes per second); where it is
//! there, the records of uncompressed batches are walked in place (lengths and header
//! names only, nothing allocated for a record without a sampled `traceparent`), and
//! compressed batches are decoded.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use opentelemetry::global::BoxedTracer;
use opentelemetry::trace::{
    Link, Span as _, SpanBuilder, SpanContext, SpanId, SpanKind, TraceContextExt as _, TraceFlags,
    TraceId, TraceState, Tracer as _,
};
use opentelemetry::{Context, KeyValue};
use wharf_log::batch::{get_varint, BatchHeader};

use crate::observe::{QueueEvent, QueueEventKind, QueueObserver};
use crate::records::{self, Message};

/// The W3C Trace Context header names, as record headers.
pub const TRACEPARENT: &str = "traceparent";
pub const TRACESTATE: &str = "tracestate";

/// Traced messages in flight on queue subscriptions whose context is remembered between
/// their delivery and their settlement. Past it, the oldest are forgotten (their later
/// spans are then not emitted).
const MAX_REMEMBERED: usize = 100_000;

/// Parses a `traceparent` value (W3C Trace Context, level 1): `00-<trace id>-<parent
/// id>-<flags>`, lowercase hex. A later version is read by its first four fields, as
/// the spec asks; version `ff`, all-zero ids and anything malformed give `None`.
pub fn parse_traceparent(value: &[u8], tracestate: Option<&[u8]>) -> Option<SpanContext> {
    let s = std::str::from_utf8(value).ok()?.trim();
    let b = s.as_bytes();
    if b.len() < 55 {
        return None;
    }
    let lower_hex = |part: &str| part.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'));
    let (version, trace_id, span_id, flags) = (&s[0..2], &s[3..35], &s[36..52], &s[53..55]);
    if b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
        return None;
    }
    if ![version, trace_id, span_id, flags]
        .into_iter()
        .all(lower_hex)
        || version == "ff"
    {
        return None;
    }
    match (version, b.len()) {
        ("00", 55) => {}
        ("00", _) => return None,
        (_, 55) => {}
        (_, _) if b[55] == b'-' => {}
        _ => return None,
    }
    let trace_id = TraceId::from_hex(trace_id).ok()?;
    let span_id = SpanId::from_hex(span_id).ok()?;
    if trace_id == TraceId::INVALID || span_id == SpanId::INVALID {
        return None;
    }
    let flags = u8::from_str_radix(flags, 16).ok()?;
    let state = tracestate
        .and_then(|t| std::str::from_utf8(t).ok())
        .and_then(|t| TraceState::from_str(t).ok())
        .unwrap_or(TraceState::NONE);
    Some(SpanContext::new(
        trace_id,
        span_id,
        TraceFlags::new(flags & 0x01),
        true,
        state,
    ))
}

/// The trace context a message carries, if any.
pub fn message_context(m: &Message) -> Option<SpanContext> {
    parse_traceparent(m.header(TRACEPARENT)?, m.header(TRACESTATE).map(|v| &v[..]))
}

/// Whether a run of whole batches may hold a traced record: an uncompressed batch only
/// if the header name appears in its bytes; a compressed one always (its bytes say
/// nothing until inflated).
pub fn may_hold_traces(bytes: &[u8]) -> bool {
    let finder = memchr::memmem::Finder::new(TRACEPARENT.as_bytes());
    let mut pos = 0;
    while let Some(h) = BatchHeader::parse(&bytes[pos..]) {
        let Some(len) = h.total_len() else {
            return false;
        };
        let end = (pos + len).min(bytes.len());
        if h.compression() != 0 || finder.find(&bytes[pos..end]).is_some() {
            return true;
        }
        pos = end;
    }
    false
}

/// Skips a varint-prefixed byte string (length -1: null), returning it.
fn bytes_at<'a>(b: &'a [u8], pos: &mut usize) -> Option<Option<&'a [u8]>> {
    let len = get_varint(b, pos)?;
    if len < 0 {
        return Some(None);
    }
    let end = pos.checked_add(usize::try_from(len).ok()?)?;
    let v = b.get(*pos..end)?;
    *pos = end;
    Some(Some(v))
}

/// The sampled trace contexts of the records at or after `from` in a run of whole
/// batches (as stored: base offsets stamped), with their offsets. Uncompressed batches
/// are walked in place, record by record, reading only lengths and header names, with
/// nothing allocated for records without a sampled `traceparent`; compressed ones are
/// decoded. A batch that does not parse ends the walk.
pub fn sampled_contexts(bytes: &Bytes, from: u64) -> Vec<(u64, SpanContext)> {
    let mut out = Vec::new();
    let mut pos = 0;
    while let Some(h) = BatchHeader::parse(&bytes[pos..]) {
        let Some(len) = h.total_len() else { break };
        let Some(batch) = bytes.get(pos..pos + len) else {
            break;
        };
        let start = pos;
        pos += len;
        let last = u64::try_from(h.last_offset()).unwrap_or(0);
        if last < from || h.is_control() {
            continue;
        }
        if h.compression() != 0 {
            let Ok(d) = records::decode(bytes.slice(start..start + len), from) else {
                break;
            };
            out.extend(d.messages.iter().filter_map(|m| {
                Some((
                    m.offset,
                    message_context(m).filter(SpanContext::is_sampled)?,
                ))
            }));
            continue;
        }
        let base = u64::try_from(h.base_offset).unwrap_or(0);
        if walk_records(batch, base, from, &mut out).is_none() {
            break;
        }
    }
    out
}

/// [`sampled_contexts`] of one uncompressed batch; `None` when it does not parse.
fn walk_records(
    batch: &[u8],
    base: u64,
    from: u64,
    out: &mut Vec<(u64, SpanContext)>,
) -> Option<()> {
    let count = BatchHeader::parse(batch)?.record_count;
    let mut pos = wharf_log::batch::HEADER_LEN;
    for _ in 0..count.max(0) {
        let len = usize::try_from(get_varint(batch, &mut pos)?).ok()?;
        let end = pos.checked_add(len)?;
        let record = batch.get(pos..end)?;
        pos = end;
        let mut at = 1; // attributes
        get_varint(record, &mut at)?; // timestamp delta
        let delta = u64::try_from(get_varint(record, &mut at)?).ok()?;
        let offset = base.checked_add(delta)?;
        if offset < from {
            continue;
        }
        bytes_at(record, &mut at)?; // key
        bytes_at(record, &mut at)?; // value
        let headers = get_varint(record, &mut at)?;
        let (mut parent, mut state) = (None, None);
        for _ in 0..headers.max(0) {
            let name = bytes_at(record, &mut at)?;
            let value = bytes_at(record, &mut at)?;
            match (name, value) {
                (Some(n), Some(v)) if n == TRACEPARENT.as_bytes() && parent.is_none() => {
                    parent = Some(v)
                }
                (Some(n), Some(v)) if n == TRACESTATE.as_bytes() && state.is_none() => {
                    state = Some(v)
                }
                _ => {}
            }
        }
        if let Some(cx) = parent
            .and_then(|v| parse_traceparent(v, state))
            .filter(SpanContext::is_sampled)
        {
            out.push((offset, cx));
        }
    }
    Some(())
}

type Key = (String, String, u32, u64);

/// Emits the broker's spans of traced messages through an OpenTelemetry tracer (the
/// binary's SDK, exporting over OTLP). See the module docs.
pub struct MessageTracer {
    tracer: BoxedTracer,
    /// Queue messages delivered and not yet settled: (topic, subscription, partition,
    /// offset) → the producer's context, so that an ack or nack, which does not read
    /// the record, still joins its trace.
    remembered: Mutex<HashMap<Key, SpanContext>>,
}

impl std::fmt::Debug for MessageTracer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageTracer").finish_non_exhaustive()
    }
}

fn base_attributes(topic: &str, partition: u32, offset: u64) -> Vec<KeyValue> {
    let offset = i64::try_from(offset).unwrap_or(i64::MAX);
    vec![
        KeyValue::new("messaging.system", "wharf"),
        KeyValue::new("messaging.destination.name", topic.to_string()),
        KeyValue::new("messaging.destination.partition.id", partition.to_string()),
        KeyValue::new("messaging.kafka.offset", offset),
        KeyValue::new("topic", topic.to_string()),
        KeyValue::new("partition", i64::from(partition)),
        KeyValue::new("offset", offset),
    ]
}

impl MessageTracer {
    pub fn new(tracer: BoxedTracer) -> MessageTracer {
        MessageTracer {
            tracer,
            remembered: Mutex::new(HashMap::new()),
        }
    }

    fn child(
        &self,
        parent: &SpanContext,
        name: String,
        kind: SpanKind,
        start: SystemTime,
        end: SystemTime,
        attributes: Vec<KeyValue>,
    ) {
        let cx = Context::new().with_remote_span_context(parent.clone());
        let mut span = self.tracer.build_with_context(
            SpanBuilder::from_name(name)
                .with_kind(kind)
                .with_start_time(start)
                .with_attributes(attributes),
            &cx,
        );
        span.end_with_timestamp(end);
    }

    /// Batches just stored at their offsets (`batches` as the log holds them, base
    /// offsets stamped): a `publish` span per traced message, from `received` to
    /// `durable`, and one `persist` span from `written` to `durable` linked to them.
    /// The caller has checked [`may_hold_traces`] (it decides whether to keep the
    /// batches until durable at all), so it is not scanned again here.
    pub fn stored(
        &self,
        topic: &str,
        partition: u32,
        batches: Bytes,
        received: SystemTime,
        written: SystemTime,
        durable: SystemTime,
    ) {
        let traced = sampled_contexts(&batches, 0);
        if traced.is_empty() {
            return;
        }
        // The run's offsets and size, from the batch headers.
        let (mut first, mut last, mut messages) = (u64::MAX, 0, 0u64);
        let mut pos = 0;
        while let Some(h) = BatchHeader::parse(&batches[pos..]) {
            let Some(len) = h.total_len() else { break };
            pos += len;
            let (b, l) = (
                u64::try_from(h.base_offset).unwrap_or(0),
                u64::try_from(h.last_offset()).unwrap_or(0),
            );
            first = first.min(b);
            last = last.max(l);
            messages += u64::try_from(h.record_count).unwrap_or(0);
        }
        let bytes = batches.len();
        let mut links = Vec::with_capacity(traced.len());
        for (offset, parent) in traced {
            self.child(
                &parent,
                format!("publish {topic}"),
                SpanKind::Server,
                received,
                durable,
                base_attributes(topic, partition, offset),
            );
            links.push(Link::with_context(parent));
        }
        if links.is_empty() {
            return;
        }
        let mut attributes = base_attributes(topic, partition, first);
        attributes.extend([
            KeyValue::new("last_offset", i64::try_from(last).unwrap_or(i64::MAX)),
            KeyValue::new("messages", i64::try_from(messages).unwrap_or(0)),
            KeyValue::new("bytes", i64::try_from(bytes).unwrap_or(0)),
        ]);
        let mut span = self.tracer.build_with_context(
            SpanBuilder::from_name(format!("persist {topic}"))
                .with_kind(SpanKind::Internal)
                .with_start_time(written)
                .with_attributes(attributes)
                .with_links(links),
            &Context::new(),
        );
        span.end_with_timestamp(durable);
    }

    /// Batches a Kafka fetch from `from` is answering `client_id` with: a `deliver`
    /// span per traced message at or after `from` in them.
    pub fn fetched(
        &self,
        topic: &str,
        partition: u32,
        from: u64,
        batches: &Bytes,
        client_id: &str,
        start: SystemTime,
    ) {
        if !may_hold_traces(batches) {
            return;
        }
        let now = SystemTime::now();
        for (offset, parent) in sampled_contexts(batches, from) {
            let mut attributes = base_attributes(topic, partition, offset);
            attributes.push(KeyValue::new("messaging.client.id", client_id.to_string()));
            self.child(
                &parent,
                format!("deliver {topic}"),
                SpanKind::Producer,
                start,
                now,
                attributes,
            );
        }
    }
}

impl QueueObserver for MessageTracer {
    /// A span per queue event of a traced message. The record comes with deliveries
    /// and dead letters; for the other events the context remembered from the
    /// message's delivery is used.
    fn on_event(&self, e: &QueueEvent<'_>) {
        let (topic, subscription, partition, offset) =
            (e.topic, e.subscription, e.partition, e.offset);
        let key = || {
            (
                topic.to_string(),
                subscription.to_string(),
                partition,
                offset,
            )
        };
        let parent = match e.message.and_then(message_context) {
            Some(cx) => Some(cx),
            None => self
                .remembered
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(&key())
                .cloned(),
        };
        let Some(parent) = parent.filter(SpanContext::is_sampled) else {
            return;
        };
        let mut attributes = base_attributes(topic, partition, offset);
        attributes.push(KeyValue::new("subscription", subscription.to_string()));
        attributes.push(KeyValue::new(
            "messaging.consumer.group.name",
            subscription.to_string(),
        ));
        let count = |n: u32| KeyValue::new("delivery_count", i64::from(n));
        // (span name, kind, whether the message is settled in this subscription)
        let (name, kind, settled) = match e.kind {
            QueueEventKind::Delivered {
                consumer,
                delivery_count,
                ..
            } => {
                attributes.push(KeyValue::new("consumer", consumer.to_string()));
                attributes.push(count(delivery_count));
                let name = if delivery_count > 1 {
                    "redeliver"
                } else {
                    "deliver"
                };
                (name, SpanKind::Producer, false)
            }
            QueueEventKind::Acked { delivery_count } => {
                attributes.push(count(delivery_count));
                ("ack", SpanKind::Server, true)
            }
            QueueEventKind::Nacked {
                delivery_count,
                reason,
                ..
            } => {
                attributes.push(count(delivery_count));
                attributes.push(KeyValue::new("reason", reason.to_string()));
                ("nack", SpanKind::Server, false)
            }
            QueueEventKind::LeaseExpired { delivery_count } => {
                attributes.push(count(delivery_count));
                ("lease expired", SpanKind::Internal, false)
            }
            QueueEventKind::Expired => ("expired", SpanKind::Internal, false),
            QueueEventKind::DeadLettered {
                reason,
                delivery_count,
                dead_letter_topic,
                dlq_partition,
                dlq_offset,
            } => {
                attributes.extend([
                    count(delivery_count),
                    KeyValue::new("reason", reason.to_string()),
                    KeyValue::new("dead_letter_topic", dead_letter_topic.to_string()),
                    KeyValue::new("dead_letter_partition", i64::from(dlq_partition)),
                    KeyValue::new(
                        "dead_letter_offset",
                        i64::try_from(dlq_offset).unwrap_or(i64::MAX),
                    ),
                ]);
                // Remembered still: a redrive may bring it back into the same trace.
                ("dead-letter", SpanKind::Producer, false)
            }
            QueueEventKind::Redriven {
                from_topic,
                from_partition,
                from_offset,
            } => {
                attributes.extend([
                    KeyValue::new("dead_letter_topic", from_topic.to_string()),
                    KeyValue::new("dead_letter_partition", i64::from(from_partition)),
                    KeyValue::new(
                        "dead_letter_offset",
                        i64::try_from(from_offset).unwrap_or(i64::MAX),
                    ),
                ]);
                ("redrive", SpanKind::Internal, false)
            }
        };
        let at = UNIX_EPOCH + Duration::from_millis(u64::try_from(e.time_ms).unwrap_or(0));
        self.child(
            &parent,
            format!("{name} {topic}"),
            kind,
            at,
            at.max(SystemTime::now()),
            attributes,
        );
        let mut remembered = self.remembered.lock().unwrap_or_else(|p| p.into_inner());
        if settled {
            remembered.remove(&key());
        } else if e.message.is_some() || matches!(e.kind, QueueEventKind::Redriven { .. }) {
            if remembered.len() >= MAX_REMEMBERED {
                // Rare (that many traced messages in flight): forget an arbitrary half
                // rather than grow without bound.
                let drop: Vec<Key> = remembered
                    .keys()
                    .take(MAX_REMEMBERED / 2)
                    .cloned()
                    .collect();
                for k in drop {
                    remembered.remove(&k);
                }
            }
            remembered.insert(key(), parent);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wharf_log::batch::{set_base_offset, Record, RecordBatchBuilder};

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    const TP_OFF: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00";

    /// A record's headers.
    type Headers<'a> = Vec<(&'a str, Option<&'a [u8]>)>;

    /// One batch at `base` of records with these headers.
    fn batch(base: i64, records: &[Headers<'_>]) -> Vec<u8> {
        let mut b = RecordBatchBuilder::new();
        for (i, headers) in records.iter().enumerate() {
            b.push(&Record {
                key: Some(b"k"),
                value: Some(format!("value {i}").as_bytes()),
                headers: headers.clone(),
                timestamp: 1_700_000_000_000 + i as i64,
            });
        }
        let mut bytes = b.build();
        set_base_offset(&mut bytes, base);
        bytes
    }

    #[test]
    fn sampled_contexts_are_found_in_place_and_agree_with_decoding() {
        let mut run = batch(
            10,
            &[
                vec![],
                vec![
                    ("other", Some(b"x".as_slice())),
                    ("traceparent", Some(TP.as_bytes())),
                ],
                vec![("traceparent", Some(TP_OFF.as_bytes()))],
                vec![("traceparent", None)],
                vec![
                    ("traceparent", Some(TP.as_bytes())),
                    ("tracestate", Some(b"congo=t61rcWkgMzE".as_slice())),
                ],
            ],
        );
        run.extend(batch(
            15,
            &[
                vec![("traceparent", Some(b"garbage".as_slice()))],
                vec![("traceparent", Some(TP.as_bytes()))],
            ],
        ));
        let bytes = Bytes::from(run);
        let found = sampled_contexts(&bytes, 0);
        let offsets: Vec<u64> = found.iter().map(|(o, _)| *o).collect();
        assert_eq!(offsets, vec![11, 14, 16]);
        assert_eq!(
            found[2].1.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(found[1].1.trace_state().get("congo"), Some("t61rcWkgMzE"));
        // The same answer as decoding every record.
        let decoded: Vec<(u64, SpanContext)> = records::decode(bytes.clone(), 0)
            .unwrap()
            .messages
            .iter()
            .filter_map(|m| {
                Some((
                    m.offset,
                    message_context(m).filter(SpanContext::is_sampled)?,
                ))
            })
            .collect();
        assert_eq!(found, decoded);
        // From an offset on; a torn tail ends the walk without a panic.
        assert_eq!(sampled_contexts(&bytes, 12).len(), 2);
        let torn = bytes.slice(..bytes.len() - 3);
        assert_eq!(sampled_contexts(&torn, 0).len(), 2);
        let mut bad = bytes.to_vec();
        bad[61] = 0xff; // the first record's length: a varint that never ends here
        assert!(sampled_contexts(&Bytes::from(bad), 0).len() <= 3);
    }

    #[test]
    fn traceparent_parses_per_the_w3c_rules() {
        let ok = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let cx = parse_traceparent(ok, Some(b"congo=t61rcWkgMzE")).unwrap();
        assert_eq!(
            cx.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(cx.span_id().to_string(), "00f067aa0ba902b7");
        assert!(cx.is_sampled());
        assert!(cx.is_remote());
        assert_eq!(cx.trace_state().get("congo"), Some("t61rcWkgMzE"));
        let unsampled = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
        assert!(!parse_traceparent(unsampled, None).unwrap().is_sampled());
        // A later version may append fields after a dash.
        let future = b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra";
        assert!(parse_traceparent(future, None).is_some());
        for bad in [
            &b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra"[..],
            b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            b"00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            b"",
            b"\xff\xfe",
        ] {
            assert!(parse_traceparent(bad, None).is_none(), "{bad:?}");
        }
    }
}
