//! Helpers shared by the log tests.

use wharf_log::batch::{Record, RecordBatchBuilder};

/// A batch of `records` records whose values are `value_len` bytes derived from `seed`,
/// with timestamps starting at `ts`.
pub fn batch(seed: u64, records: usize, value_len: usize, ts: i64) -> Vec<u8> {
    let mut b = RecordBatchBuilder::new();
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for i in 0..records {
        let value: Vec<u8> = (0..value_len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state as u8
            })
            .collect();
        let key = format!("key-{seed}-{i}");
        b.push(&Record {
            key: Some(key.as_bytes()),
            value: Some(&value),
            headers: vec![("seed", Some(&seed.to_be_bytes()[..]))],
            timestamp: ts + i as i64,
        });
    }
    b.build()
}

/// Splits a buffer of stored batches into (base offset, batch bytes).
pub fn split(mut bytes: &[u8]) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let (h, len) = wharf_log::batch::validate(bytes).expect("stored batch is valid");
        out.push((h.base_offset as u64, bytes[..len].to_vec()));
        bytes = &bytes[len..];
    }
    out
}
