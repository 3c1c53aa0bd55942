//! Per-topic counters, recorded through the `metrics` facade.
//!
//! Each topic's handles are registered once, when the broker opens or creates the topic,
//! and shared by every version of its state and by its partitions, so recording a
//! request is an atomic add on a cached handle: no registry lookup, no label
//! allocation, nothing per message (message counts come from the batch headers' record
//! count). Without an installed recorder (library tests) the handles do nothing.
//!
//! | metric | labels | what |
//! |---|---|---|
//! | `wharf_messages_in_total` | `topic` | records appended (Kafka produce, HTTP publish), from batch headers |
//! | `wharf_bytes_in_total` | `topic` | record-batch bytes appended |
//! | `wharf_messages_out_total` | `topic`, `via` | records handed to consumers: `kafka_fetch`, `queue_pull` |
//! | `wharf_bytes_out_total` | `topic`, `via` | batch bytes of fetch responses; payload bytes (key + value) of pulls |
//!
//! A fetch sends stored batches whole, so one that starts inside a batch counts that
//! batch's earlier records (and bytes) too: "out" is what went over the wire.
//! | `wharf_produce_throttle_seconds` | `topic` | how long a Kafka produce was held by queue back-pressure (histogram) |
//! | `wharf_backpressure_rejections_total` | `topic`, `reason` | produces and publishes turned away: `throttled`, `backlog_full` |

use metrics::{counter, histogram, Counter, Histogram};

/// `via` of a Kafka fetch.
pub const VIA_KAFKA_FETCH: &str = "kafka_fetch";
/// `via` of a queue subscription pull.
pub const VIA_QUEUE_PULL: &str = "queue_pull";

/// The cached metric handles of one topic.
#[derive(Debug)]
pub struct TopicMetrics {
    messages_in: Counter,
    bytes_in: Counter,
    fetch_messages: Counter,
    fetch_bytes: Counter,
    pull_messages: Counter,
    pull_bytes: Counter,
    throttle: Histogram,
    rejected_throttled: Counter,
    rejected_full: Counter,
}

impl TopicMetrics {
    /// Registers (or finds again, for a topic re-created under the same name) the
    /// handles of `topic`.
    pub fn new(topic: &str) -> TopicMetrics {
        let t = topic.to_string();
        TopicMetrics {
            messages_in: counter!("wharf_messages_in_total", "topic" => t.clone()),
            bytes_in: counter!("wharf_bytes_in_total", "topic" => t.clone()),
            fetch_messages: counter!("wharf_messages_out_total", "topic" => t.clone(), "via" => VIA_KAFKA_FETCH),
            fetch_bytes: counter!("wharf_bytes_out_total", "topic" => t.clone(), "via" => VIA_KAFKA_FETCH),
            pull_messages: counter!("wharf_messages_out_total", "topic" => t.clone(), "via" => VIA_QUEUE_PULL),
            pull_bytes: counter!("wharf_bytes_out_total", "topic" => t.clone(), "via" => VIA_QUEUE_PULL),
            throttle: histogram!("wharf_produce_throttle_seconds", "topic" => t.clone()),
            rejected_throttled: counter!("wharf_backpressure_rejections_total", "topic" => t.clone(), "reason" => "throttled"),
            rejected_full: counter!("wharf_backpressure_rejections_total", "topic" => t, "reason" => "backlog_full"),
        }
    }

    /// Records appended to the topic: `records` from the batch headers, `bytes` of
    /// whole batches.
    pub fn appended(&self, records: u64, bytes: u64) {
        self.messages_in.increment(records);
        self.bytes_in.increment(bytes);
    }

    /// A Kafka fetch response carried `records` records in `bytes` batch bytes of
    /// this topic.
    pub fn fetched(&self, records: u64, bytes: u64) {
        if records > 0 || bytes > 0 {
            self.fetch_messages.increment(records);
            self.fetch_bytes.increment(bytes);
        }
    }

    /// A queue pull handed out `messages` messages of this topic, `bytes` of keys and
    /// values.
    pub fn pulled(&self, messages: u64, bytes: u64) {
        if messages > 0 {
            self.pull_messages.increment(messages);
            self.pull_bytes.increment(bytes);
        }
    }

    /// A Kafka produce was held `seconds` by back-pressure before it was let through.
    pub(crate) fn throttled(&self, seconds: f64) {
        self.throttle.record(seconds);
    }

    /// A produce or publish was turned away by back-pressure.
    pub(crate) fn rejected(&self, e: &crate::CoreError) {
        match e {
            crate::CoreError::Throttled { .. } => self.rejected_throttled.increment(1),
            crate::CoreError::BacklogFull { .. } => self.rejected_full.increment(1),
            _ => {}
        }
    }
}

/// Records and bytes in a run of stored record batches (a read's bytes), from the
/// batch headers only: per batch, not per record. A torn tail is not counted.
pub fn count_records(mut batches: &[u8]) -> (u64, u64) {
    let mut records = 0u64;
    let total = batches.len() as u64;
    while let Some(h) = wharf_log::batch::BatchHeader::parse(batches) {
        let Some(len) = h.total_len().filter(|&l| l > 0 && l <= batches.len()) else {
            break;
        };
        records += u64::try_from(h.record_count).unwrap_or(0);
        batches = &batches[len..];
    }
    (records, total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use wharf_log::batch::{Record, RecordBatchBuilder};

    fn batch(records: usize) -> Vec<u8> {
        let mut b = RecordBatchBuilder::new();
        for _ in 0..records {
            b.push(&Record {
                key: None,
                value: Some(b"value"),
                headers: vec![],
                timestamp: 1,
            });
        }
        b.build()
    }

    #[test]
    fn records_are_counted_from_the_batch_headers_and_a_torn_tail_is_not() {
        let mut bytes = batch(3);
        bytes.extend(batch(1));
        bytes.extend(batch(5));
        let total = bytes.len() as u64;
        assert_eq!(count_records(&bytes), (9, total));
        let whole = bytes.len();
        bytes.extend(&batch(7)[..20]);
        assert_eq!(count_records(&bytes).0, 9);
        assert_eq!(count_records(&bytes[..whole - 1]).0, 4);
        assert_eq!(count_records(&[]), (0, 0));
    }
}
