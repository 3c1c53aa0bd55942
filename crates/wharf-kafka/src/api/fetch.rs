//! Fetch: stored batches as stored, below the high watermark, with long polling.
//!
//! The request is answered as soon as `min_bytes` are available or `max_wait_ms` has
//! passed. While waiting, the task sleeps on the high-watermark watches of every
//! partition asked for; an append to any of them wakes it to read again. There are no
//! fetch sessions: the response's session id is 0, so clients send full requests.

use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{FetchRequest, FetchResponse, TopicName};
use tokio::sync::watch;
use tokio::time::Instant;
use uuid::Uuid;

use super::metadata::find_by_id;
use crate::conn::Ctx;
use crate::errors;

/// Upper bound on `max_wait_ms`, so a client cannot park a request for days.
const MAX_WAIT: Duration = Duration::from_secs(60);

/// Upper bound on the bytes one fetch response carries, whatever the request's
/// `max_bytes` says: Kafka's broker-side `fetch.max.bytes` default (55 MiB). Every read
/// is buffered whole, so without it a request asking for 2 GiB over many partitions
/// would make the broker allocate that much. A batch larger than the limit is still
/// returned whole when it comes first, so no consumer is stuck.
const FETCH_MAX_BYTES: usize = 55 * 1024 * 1024;

/// One partition asked for, resolved to a topic name.
struct Wanted {
    topic: Result<String, i16>,
    partition: i32,
    offset: i64,
    max_bytes: i32,
}

pub async fn handle(ctx: &Ctx, req: FetchRequest, version: i16) -> FetchResponse {
    let wait = Duration::from_millis(u64::try_from(req.max_wait_ms).unwrap_or(0)).min(MAX_WAIT);
    let deadline = Instant::now() + wait;
    let min_bytes = usize::try_from(req.min_bytes).unwrap_or(0);
    let max_bytes = usize::try_from(req.max_bytes)
        .unwrap_or(0)
        .min(FETCH_MAX_BYTES);

    // Resolve names (v13+ sends topic ids) once, keeping the request's shape.
    let mut shape: Vec<(TopicName, Uuid, Vec<Wanted>)> = Vec::new();
    for t in &req.topics {
        let topic = if version >= 13 {
            find_by_id(ctx, t.topic_id)
                .map(|d| d.name.to_string())
                .ok_or_else(|| crate::metrics::count(ResponseError::UnknownTopicId.code()))
        } else {
            Ok(t.topic.0.to_string())
        };
        let wanted = t
            .partitions
            .iter()
            .map(|p| Wanted {
                topic: topic.clone(),
                partition: p.partition,
                offset: p.fetch_offset,
                max_bytes: p.partition_max_bytes,
            })
            .collect();
        shape.push((t.topic.clone(), t.topic_id, wanted));
    }

    loop {
        // Subscribe before reading, so an append between the read and the wait is not
        // missed: it marks the watch changed.
        let mut watches = Vec::new();
        for (_, _, wanted) in &shape {
            for w in wanted {
                if let (Ok(topic), Ok(p)) = (&w.topic, u32::try_from(w.partition)) {
                    if let Ok(mut rx) = ctx.broker.watch_high_watermark(topic, p) {
                        rx.borrow_and_update();
                        watches.push(rx);
                    }
                }
            }
        }
        let (responses, total, errored) = read_all(ctx, &shape, max_bytes, version).await;
        if total >= min_bytes || errored || Instant::now() >= deadline || watches.is_empty() {
            return answer(ctx, &shape, responses);
        }
        if !wait_for_any(watches, deadline).await {
            // Timed out: answer with what there is now (one more read, as data may have
            // arrived just at the deadline).
            let (responses, _, _) = read_all(ctx, &shape, max_bytes, version).await;
            return answer(ctx, &shape, responses);
        }
    }
}

/// The response, counted in each topic's `wharf_messages_out_total` and
/// `wharf_bytes_out_total` (records from the batch headers: per batch, not per record).
fn answer(
    ctx: &Ctx,
    shape: &[(TopicName, Uuid, Vec<Wanted>)],
    responses: Vec<FetchableTopicResponse>,
) -> FetchResponse {
    for ((_, _, wanted), t) in shape.iter().zip(&responses) {
        let Some(Ok(topic)) = wanted.first().map(|w| &w.topic) else {
            continue;
        };
        let (mut records, mut bytes) = (0, 0);
        for p in &t.partitions {
            if let Some(r) = &p.records {
                let (n, b) = wharf_core::metrics::count_records(r);
                records += n;
                bytes += b;
            }
        }
        if bytes > 0 {
            if let Some(m) = ctx.broker.topic_metrics(topic) {
                m.fetched(records, bytes);
            }
        }
    }
    FetchResponse::default().with_responses(responses)
}

/// Waits until one of the watches changes (true) or the deadline passes (false), in
/// this task: no task per partition to spawn and abort on every wait.
async fn wait_for_any(mut watches: Vec<watch::Receiver<u64>>, deadline: Instant) -> bool {
    // An error means the partition is gone; reading again reports that.
    let changed = async {
        match &mut watches[..] {
            [] => {}
            [one] => {
                let _ = one.changed().await;
            }
            many => {
                let waits = many.iter_mut().map(|rx| Box::pin(rx.changed()));
                let _ = futures_util::future::select_all(waits).await;
            }
        }
    };
    tokio::time::timeout_at(deadline, changed).await.is_ok()
}

/// Reads every partition once. Returns the responses, the bytes they carry, and whether
/// any partition had an error (which answers the fetch at once).
async fn read_all(
    ctx: &Ctx,
    shape: &[(TopicName, Uuid, Vec<Wanted>)],
    max_bytes: usize,
    version: i16,
) -> (Vec<FetchableTopicResponse>, usize, bool) {
    let mut total = 0usize;
    let mut errored = false;
    let mut responses = Vec::with_capacity(shape.len());
    for (name, id, wanted) in shape {
        let mut partitions = Vec::with_capacity(wanted.len());
        for w in wanted {
            // Kafka returns at least one batch (the first partition with data), even
            // past the limits, so a consumer can always make progress.
            let cap = usize::try_from(w.max_bytes)
                .unwrap_or(0)
                .min(max_bytes.saturating_sub(total));
            let budget = if total == 0 { cap.max(1) } else { cap };
            let data = read_partition(ctx, w, budget).await;
            if data.error_code != 0 {
                errored = true;
            }
            total += data.records.as_ref().map_or(0, Bytes::len);
            partitions.push(data);
        }
        let t = FetchableTopicResponse::default().with_partitions(partitions);
        responses.push(if version >= 13 {
            t.with_topic_id(*id)
        } else {
            t.with_topic(name.clone())
        });
    }
    (responses, total, errored)
}

async fn read_partition(ctx: &Ctx, w: &Wanted, budget: usize) -> PartitionData {
    let resp = PartitionData::default()
        .with_partition_index(w.partition)
        .with_high_watermark(-1)
        .with_last_stable_offset(-1)
        .with_log_start_offset(-1)
        .with_records(Some(Bytes::new()));
    let topic = match &w.topic {
        Ok(t) => t,
        Err(code) => return resp.with_error_code(*code),
    };
    let Ok(partition) = u32::try_from(w.partition) else {
        return resp.with_error_code(crate::metrics::count(
            ResponseError::UnknownTopicOrPartition.code(),
        ));
    };
    let offsets = match ctx.broker.offsets(topic, partition) {
        Ok(o) => o,
        Err(e) => return resp.with_error_code(errors::code(&e)),
    };
    let hw = offsets.high_watermark as i64;
    let resp = resp
        .with_high_watermark(hw)
        .with_last_stable_offset(hw)
        .with_log_start_offset(offsets.log_start_offset as i64);
    let offset = match u64::try_from(w.offset) {
        Ok(o) if o >= offsets.log_start_offset && o <= offsets.log_end_offset => o,
        _ => {
            return resp.with_error_code(crate::metrics::count(
                ResponseError::OffsetOutOfRange.code(),
            ))
        }
    };
    if offset >= offsets.high_watermark || budget == 0 {
        return resp;
    }
    let started = ctx.broker.tracer().map(|_| std::time::SystemTime::now());
    match ctx.broker.read(topic, partition, offset, budget).await {
        Ok(r) => {
            let records = Bytes::from(r.bytes);
            if let (Some(t), Some(started)) = (ctx.broker.tracer(), started) {
                let client = ctx.client_id.as_deref().unwrap_or("");
                t.fetched(topic, partition, offset, &records, client, started);
            }
            resp.with_high_watermark(r.high_watermark as i64)
                .with_last_stable_offset(r.high_watermark as i64)
                .with_log_start_offset(r.log_start_offset as i64)
                .with_records(Some(records))
        }
        Err(e) => resp.with_error_code(errors::code(&e)),
    }
}
