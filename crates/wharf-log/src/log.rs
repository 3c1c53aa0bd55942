//! STUB
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: u64,
    pub last_offset: u64,
    pub batches: u32,
    pub records: u64,
    pub max_timestamp: i64,
    pub bytes: usize,
}
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReadResult {
    pub bytes: Vec<u8>,
    pub high_watermark: u64,
    pub log_start_offset: u64,
    pub log_end_offset: u64,
}
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RetentionReport {
    pub segments_deleted: usize,
    pub bytes_deleted: u64,
    pub log_start_offset: u64,
}
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RecoveryReport {
    pub clean: bool,
    pub segments: usize,
    pub truncated_bytes: u64,
    pub indexes_rebuilt: usize,
}
pub struct Log;
