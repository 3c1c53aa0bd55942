//! Kafka RecordBatch v2: the unit the log stores.
//!
//! ```text
//! offset  size  field                   covered by CRC
//!      0     8  base offset             no  (assigned by the log, in place)
//!      8     4  batch length            no  (bytes after this field)
//!     12     4  partition leader epoch  no
//!     16     1  magic (= 2)             no
//!     17     4  CRC-32C                 no
//!     21     2  attributes              yes
//!     23     4  last offset delta       yes
//!     27     8  base timestamp          yes
//!     35     8  max timestamp           yes
//!     43     8  producer id             yes
//!     51     2  producer epoch          yes
//!     53     4  base sequence           yes
//!     57     4  record count            yes
//!     61     …  records                 yes
//! ```
//!
//! All integers big-endian. Because the CRC starts at byte 21, the log can write the base
//! offset of a stored batch without touching anything a client checks.

/// Bytes before the records; also the smallest valid batch.
pub const HEADER_LEN: usize = 61;
/// Bytes of base offset plus batch length: the prefix not counted by `batch length`.
pub const LOG_OVERHEAD: usize = 12;
pub const MAGIC_V2: i8 = 2;
const CRC_START: usize = 21;

fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}
fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn be_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(a)
}

/// The fixed header of one batch, read from at least [`HEADER_LEN`] bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    /// Value of the `batch length` field: bytes that follow it.
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub record_count: i32,
}

impl BatchHeader {
    /// Parses the header; `None` if fewer than [`HEADER_LEN`] bytes are given.
    pub fn parse(b: &[u8]) -> Option<BatchHeader> {
        if b.len() < HEADER_LEN {
            return None;
        }
        Some(BatchHeader {
            base_offset: be_i64(b, 0),
            batch_length: be_i32(b, 8),
            partition_leader_epoch: be_i32(b, 12),
            magic: b[16] as i8,
            crc: be_u32(b, 17),
            attributes: be_i16(b, 21),
            last_offset_delta: be_i32(b, 23),
            base_timestamp: be_i64(b, 27),
            max_timestamp: be_i64(b, 35),
            producer_id: be_i64(b, 43),
            producer_epoch: be_i16(b, 51),
            base_sequence: be_i32(b, 53),
            record_count: be_i32(b, 57),
        })
    }

    /// Total bytes of the batch including the 12-byte prefix, if `batch_length` is sane.
    pub fn total_len(&self) -> Option<usize> {
        let len = usize::try_from(self.batch_length).ok()?;
        let total = len.checked_add(LOG_OVERHEAD)?;
        (total >= HEADER_LEN).then_some(total)
    }

    /// Offset of the last record, given the base offset stored in the header.
    pub fn last_offset(&self) -> i64 {
        self.base_offset
            .saturating_add(i64::from(self.last_offset_delta))
    }

    /// Compression codec bits of `attributes` (0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd).
    pub fn compression(&self) -> u8 {
        (self.attributes & 0x7) as u8
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & 0x10 != 0
    }

    pub fn is_control(&self) -> bool {
        self.attributes & 0x20 != 0
    }
}

/// CRC-32C of a whole batch's covered bytes.
pub fn compute_crc(batch: &[u8]) -> u32 {
    crc32c::crc32c(&batch[CRC_START.min(batch.len())..])
}

/// Why a byte range is not a valid batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchDefect {
    /// Fewer bytes than the header or than the batch length says: a torn write.
    Truncated { needed: usize, available: usize },
    /// A header field that no valid v2 batch has.
    Malformed(String),
    /// Stored and computed CRC-32C differ.
    CrcMismatch { stored: u32, computed: u32 },
}

impl std::fmt::Display for BatchDefect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BatchDefect::Truncated { needed, available } => {
                write!(f, "truncated: needs {needed} bytes, {available} present")
            }
            BatchDefect::Malformed(why) => f.write_str(why),
            BatchDefect::CrcMismatch { stored, computed } => {
                write!(f, "CRC-32C is {stored:#010x}, computed {computed:#010x}")
            }
        }
    }
}

/// Checks the batch that starts at `b[0]`: header sanity, length, CRC-32C.
/// Returns its header and total length.
pub fn validate(b: &[u8]) -> Result<(BatchHeader, usize), BatchDefect> {
    let header = BatchHeader::parse(b).ok_or(BatchDefect::Truncated {
        needed: HEADER_LEN,
        available: b.len(),
    })?;
    let total = header.total_len().ok_or_else(|| {
        BatchDefect::Malformed(format!(
            "batch length {} is impossible",
            header.batch_length
        ))
    })?;
    if header.magic != MAGIC_V2 {
        return Err(BatchDefect::Malformed(format!(
            "magic byte {} (only RecordBatch v2 is stored)",
            header.magic
        )));
    }
    if header.last_offset_delta < 0 {
        return Err(BatchDefect::Malformed(format!(
            "last offset delta {} is negative",
            header.last_offset_delta
        )));
    }
    if header.record_count < 0 {
        return Err(BatchDefect::Malformed(format!(
            "record count {} is negative",
            header.record_count
        )));
    }
    if b.len() < total {
        return Err(BatchDefect::Truncated {
            needed: total,
            available: b.len(),
        });
    }
    let computed = compute_crc(&b[..total]);
    if computed != header.crc {
        return Err(BatchDefect::CrcMismatch {
            stored: header.crc,
            computed,
        });
    }
    Ok((header, total))
}

/// Writes `base_offset` into the batch at `b[0..8]` (outside the CRC).
pub fn set_base_offset(b: &mut [u8], base_offset: i64) {
    b[..8].copy_from_slice(&base_offset.to_be_bytes());
}

/// Reads a zigzag varint (as records encode their fields) at `*pos`, advancing it.
/// `None` when the bytes end first or it runs past 64 bits.
pub fn get_varint(b: &[u8], pos: &mut usize) -> Option<i64> {
    let mut raw: u64 = 0;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*pos)?;
        *pos += 1;
        raw |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(((raw >> 1) as i64) ^ -((raw & 1) as i64));
        }
    }
    None
}

/// In a whole, uncompressed batch (base offset as stored), the offset of the first record
/// at or after `min_offset` whose timestamp is at or after `ts`. `None` when no record
/// qualifies, or when the records cannot be read without decompressing or are malformed
/// (the caller then falls back to the batch's first offset).
pub fn first_record_at_or_after(batch: &[u8], ts: i64, min_offset: u64) -> Option<u64> {
    let h = BatchHeader::parse(batch)?;
    let total = h.total_len()?;
    if h.compression() != 0 || batch.len() < total {
        return None;
    }
    let base = u64::try_from(h.base_offset).ok()?;
    let log_append_time = h.attributes & 0x8 != 0;
    let records = &batch[HEADER_LEN..total];
    let mut pos = 0usize;
    for _ in 0..h.record_count.max(0) {
        let len = usize::try_from(get_varint(records, &mut pos)?).ok()?;
        let start = pos;
        let end = start.checked_add(len)?;
        if end > records.len() {
            return None;
        }
        pos += 1; // attributes
        let ts_delta = get_varint(records, &mut pos)?;
        let offset_delta = u64::try_from(get_varint(records, &mut pos)?).ok()?;
        let record_ts = if log_append_time {
            h.max_timestamp
        } else {
            h.base_timestamp.wrapping_add(ts_delta)
        };
        let offset = base + offset_delta;
        if record_ts >= ts && offset >= min_offset {
            return Some(offset);
        }
        pos = end;
    }
    None
}

/// One record for [`RecordBatchBuilder`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Record<'a> {
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub headers: Vec<(&'a str, Option<&'a [u8]>)>,
    /// Milliseconds since the epoch.
    pub timestamp: i64,
}

/// Encodes uncompressed RecordBatch v2 batches, as a producer would, for front-ends that
/// receive records one by one (HTTP) and for tests and benchmarks.
#[derive(Debug, Clone)]
pub struct RecordBatchBuilder {
    buf: Vec<u8>,
    count: i32,
    base_timestamp: i64,
    max_timestamp: i64,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
}

fn put_varint(buf: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    loop {
        let byte = (z & 0x7f) as u8;
        z >>= 7;
        if z == 0 {
            buf.push(byte);
            return;
        }
        buf.push(byte | 0x80);
    }
}

fn varint_len(v: i64) -> usize {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    let mut n = 1;
    while z >= 0x80 {
        z >>= 7;
        n += 1;
    }
    n
}

fn put_bytes(buf: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        None => put_varint(buf, -1),
        Some(b) => {
            put_varint(buf, b.len() as i64);
            buf.extend_from_slice(b);
        }
    }
}

impl Default for RecordBatchBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl RecordBatchBuilder {
    pub fn new() -> Self {
        let mut buf = Vec::with_capacity(256);
        buf.resize(HEADER_LEN, 0);
        RecordBatchBuilder {
            buf,
            count: 0,
            base_timestamp: 0,
            max_timestamp: -1,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
        }
    }

    /// Marks the batch as coming from an idempotent producer.
    pub fn producer(mut self, id: i64, epoch: i16, base_sequence: i32) -> Self {
        self.producer_id = id;
        self.producer_epoch = epoch;
        self.base_sequence = base_sequence;
        self
    }

    pub fn len(&self) -> usize {
        self.count as usize
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Encoded size so far, in bytes.
    pub fn size(&self) -> usize {
        self.buf.len()
    }

    pub fn push(&mut self, r: &Record<'_>) {
        if self.count == 0 {
            self.base_timestamp = r.timestamp;
        }
        self.max_timestamp = self.max_timestamp.max(r.timestamp);
        let ts_delta = r.timestamp.wrapping_sub(self.base_timestamp);
        let offset_delta = i64::from(self.count);
        let mut body =
            Vec::with_capacity(16 + r.key.map_or(0, <[u8]>::len) + r.value.map_or(0, <[u8]>::len));
        body.push(0); // record attributes
        put_varint(&mut body, ts_delta);
        put_varint(&mut body, offset_delta);
        put_bytes(&mut body, r.key);
        put_bytes(&mut body, r.value);
        put_varint(&mut body, r.headers.len() as i64);
        for (k, v) in &r.headers {
            put_bytes(&mut body, Some(k.as_bytes()));
            put_bytes(&mut body, *v);
        }
        self.buf.reserve(body.len() + varint_len(body.len() as i64));
        put_varint(&mut self.buf, body.len() as i64);
        self.buf.extend_from_slice(&body);
        self.count += 1;
    }

    /// Finishes the batch: header fields and CRC-32C. Base offset 0 (the log assigns it).
    pub fn build(self) -> Vec<u8> {
        let mut b = self.buf;
        let batch_length = (b.len() - LOG_OVERHEAD) as i32;
        b[0..8].copy_from_slice(&0i64.to_be_bytes());
        b[8..12].copy_from_slice(&batch_length.to_be_bytes());
        b[12..16].copy_from_slice(&(-1i32).to_be_bytes());
        b[16] = MAGIC_V2 as u8;
        b[21..23].copy_from_slice(&0i16.to_be_bytes());
        b[23..27].copy_from_slice(&(self.count - 1).max(0).to_be_bytes());
        b[27..35].copy_from_slice(&self.base_timestamp.to_be_bytes());
        b[35..43].copy_from_slice(&self.max_timestamp.to_be_bytes());
        b[43..51].copy_from_slice(&self.producer_id.to_be_bytes());
        b[51..53].copy_from_slice(&self.producer_epoch.to_be_bytes());
        b[53..57].copy_from_slice(&self.base_sequence.to_be_bytes());
        b[57..61].copy_from_slice(&self.count.to_be_bytes());
        let crc = compute_crc(&b);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut b = RecordBatchBuilder::new();
        b.push(&Record {
            key: Some(b"k"),
            value: Some(b"hello"),
            headers: vec![("h", Some(b"v"))],
            timestamp: 1_000,
        });
        b.push(&Record {
            key: None,
            value: None,
            headers: vec![],
            timestamp: 1_005,
        });
        b.build()
    }

    #[test]
    fn built_batch_validates_and_reports_its_fields() {
        let b = sample();
        let (h, len) = validate(&b).expect("valid");
        assert_eq!(len, b.len());
        assert_eq!(h.record_count, 2);
        assert_eq!(h.last_offset_delta, 1);
        assert_eq!(h.base_timestamp, 1_000);
        assert_eq!(h.max_timestamp, 1_005);
        assert_eq!(h.magic, 2);
    }

    #[test]
    fn base_offset_is_outside_the_crc() {
        let mut b = sample();
        set_base_offset(&mut b, 42);
        let (h, _) = validate(&b).expect("still valid");
        assert_eq!(h.base_offset, 42);
        assert_eq!(h.last_offset(), 43);
    }

    #[test]
    fn every_flipped_covered_byte_is_caught() {
        let b = sample();
        for i in 8..b.len() {
            let mut c = b.clone();
            c[i] ^= 0x40;
            if (12..16).contains(&i) {
                // Partition leader epoch is outside the CRC by design.
                continue;
            }
            assert!(validate(&c).is_err(), "flip at byte {i} not detected");
        }
    }

    #[test]
    fn finds_the_first_record_at_or_after_a_timestamp() {
        let mut b = RecordBatchBuilder::new();
        for (i, ts) in [100i64, 300, 200, 400].iter().enumerate() {
            let v = [i as u8; 3];
            b.push(&Record {
                key: None,
                value: Some(&v),
                headers: vec![],
                timestamp: *ts,
            });
        }
        let mut batch = b.build();
        set_base_offset(&mut batch, 10);
        assert_eq!(first_record_at_or_after(&batch, 50, 0), Some(10));
        assert_eq!(first_record_at_or_after(&batch, 150, 0), Some(11));
        assert_eq!(first_record_at_or_after(&batch, 250, 0), Some(11));
        assert_eq!(first_record_at_or_after(&batch, 350, 0), Some(13));
        assert_eq!(first_record_at_or_after(&batch, 401, 0), None);
        assert_eq!(first_record_at_or_after(&batch, 150, 12), Some(12));
        assert_eq!(first_record_at_or_after(&batch, 250, 12), Some(13));
        // Truncated or garbled input is a None, not a panic.
        for cut in 0..batch.len() {
            let _ = first_record_at_or_after(&batch[..cut], 150, 0);
        }
        let mut bad = batch.clone();
        bad[HEADER_LEN] = 0xff;
        let _ = first_record_at_or_after(&bad, 150, 0);
    }

    #[test]
    fn short_input_is_truncated_not_a_panic() {
        let b = sample();
        for cut in 0..b.len() {
            assert!(matches!(
                validate(&b[..cut]),
                Err(BatchDefect::Truncated { .. }) | Err(BatchDefect::Malformed(_))
            ));
        }
    }
}
