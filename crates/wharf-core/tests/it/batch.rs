//! Record batches for the tests, built with the log's own encoder.

use wharf_log::batch::{Record, RecordBatchBuilder};

/// One RecordBatch v2 holding `values` (no keys, no headers), all stamped
/// `timestamp_ms`, with base offset 0 (the log assigns the real one).
pub fn batch(values: &[&[u8]], timestamp_ms: i64) -> Vec<u8> {
    let mut b = RecordBatchBuilder::new();
    for v in values {
        b.push(&Record {
            key: None,
            value: Some(v),
            headers: Vec::new(),
            timestamp: timestamp_ms,
        });
    }
    b.build()
}

/// `batch` as the log stores it once it assigned `base_offset`.
pub fn with_base_offset(mut b: Vec<u8>, base_offset: u64) -> Vec<u8> {
    b[0..8].copy_from_slice(&base_offset.to_be_bytes());
    b
}

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
