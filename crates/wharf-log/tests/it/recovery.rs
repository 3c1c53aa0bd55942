//! Recovery: torn and corrupt tails are cut at the last valid batch, indexes rebuilt.

use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};

use wharf_log::{FlushPolicy, LogConfig, SharedLog};

use crate::common::{batch, split};

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 64 * 1024,
        index_interval_bytes: 512,
        flush: FlushPolicy::Never,
        ..LogConfig::default()
    }
}

/// Appends `n` batches of 3 records; returns their stored bytes, oldest first.
fn fill(dir: &Path, n: u64) -> Vec<Vec<u8>> {
    let log = SharedLog::open(dir, config()).expect("open");
    for i in 0..n {
        let mut b = batch(i, 3, 100, 1_000 + i as i64);
        log.append(&mut b).expect("append");
    }
    let all = log.read(0, usize::MAX).expect("read");
    drop(log); // no clean close: recovery must validate the tail
    split(&all.bytes).into_iter().map(|(_, b)| b).collect()
}

fn active_segment(dir: &Path) -> PathBuf {
    let mut logs: Vec<PathBuf> = fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort();
    logs.pop().expect("a segment")
}

fn reopen_and_check(dir: &Path, expect: &[Vec<u8>], cut: u64) {
    let log = SharedLog::open(dir, config()).expect("reopen");
    let report = log.recovery_report();
    assert_eq!(report.truncated_bytes, cut, "{report:?}");
    let n: u64 = expect.len() as u64;
    assert_eq!(log.log_end_offset(), n * 3);
    let all = log.read(0, usize::MAX).expect("read");
    assert_eq!(all.bytes, expect.concat());
    // Appends continue right after the last valid batch.
    let mut b = batch(99, 2, 10, 5_000);
    let info = log.append(&mut b).expect("append after recovery");
    assert_eq!(info.base_offset, n * 3);
}

#[test]
fn flipped_byte_in_last_batch_truncates_to_previous_batch() {
    let batch_len = batch(0, 3, 100, 0).len();
    // Every region of the batch: header, CRC, records, last byte.
    for flip_at in [0usize, 9, 17, 22, 30, 61, 100, batch_len - 1] {
        let dir = tempfile::tempdir().expect("tempdir");
        let stored = fill(dir.path(), 10);
        let seg = active_segment(dir.path());
        let mut bytes = fs::read(&seg).expect("read segment");
        let last_start = bytes.len() - batch_len;
        bytes[last_start + flip_at] ^= 0x5a;
        fs::write(&seg, &bytes).expect("write segment");
        reopen_and_check(dir.path(), &stored[..9], batch_len as u64);
    }
}

#[test]
fn cut_last_batch_truncates_to_previous_batch() {
    let batch_len = batch(0, 3, 100, 0).len();
    for keep in [1usize, 12, 60, 61, batch_len - 1] {
        let dir = tempfile::tempdir().expect("tempdir");
        let stored = fill(dir.path(), 10);
        let seg = active_segment(dir.path());
        let len = fs::metadata(&seg).expect("stat").len();
        let f = OpenOptions::new().write(true).open(&seg).expect("open");
        f.set_len(len - batch_len as u64 + keep as u64)
            .expect("cut");
        // A torn tail of only zero bytes looks like preallocated space: cut all the
        // same, but not reported as damage.
        let torn = &stored[9][..keep];
        let reported = if torn.iter().all(|&b| b == 0) {
            0
        } else {
            keep as u64
        };
        reopen_and_check(dir.path(), &stored[..9], reported);
    }
}

#[test]
fn garbage_after_last_batch_is_cut() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stored = fill(dir.path(), 5);
    let seg = active_segment(dir.path());
    let mut bytes = fs::read(&seg).expect("read");
    let mut garbage = vec![0u8; 4096];
    garbage[100] = 0x17;
    bytes.extend_from_slice(&garbage);
    fs::write(&seg, &bytes).expect("write");
    reopen_and_check(dir.path(), &stored, 4096);
}

#[test]
fn zeros_after_last_batch_are_cut_as_preallocated_space() {
    let dir = tempfile::tempdir().expect("tempdir");
    let stored = fill(dir.path(), 5);
    let seg = active_segment(dir.path());
    let mut bytes = fs::read(&seg).expect("read");
    let len = bytes.len() as u64;
    bytes.extend_from_slice(&[0u8; 70_000]);
    fs::write(&seg, &bytes).expect("write");
    // Not damage: nothing reported, and the file is its batches again.
    reopen_and_check(dir.path(), &stored, 0);
    let batch_after = batch(99, 2, 10, 5_000).len() as u64;
    assert_eq!(fs::metadata(&seg).expect("stat").len(), len + batch_after);
}

#[test]
fn corrupt_sealed_segment_is_cut_and_later_segments_dropped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = LogConfig {
        segment_bytes: 2_000,
        ..config()
    };
    let log = SharedLog::open(dir.path(), cfg.clone()).expect("open");
    for i in 0..30 {
        log.append(&mut batch(i, 3, 100, 0)).expect("append");
    }
    let all = split(&log.read(0, usize::MAX).expect("read").bytes);
    log.close().expect("close");
    drop(log);
    let mut logs: Vec<PathBuf> = fs::read_dir(dir.path())
        .expect("list")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort();
    assert!(
        logs.len() >= 3,
        "expected several segments, got {}",
        logs.len()
    );
    // Remove the second segment's index so it must be rebuilt by a validating scan,
    // and corrupt its last batch.
    let second = &logs[1];
    fs::remove_file(second.with_extension("index")).expect("rm index");
    let mut bytes = fs::read(second).expect("read");
    let n = bytes.len();
    bytes[n - 5] ^= 0xff;
    fs::write(second, &bytes).expect("write");

    let log = SharedLog::open(dir.path(), cfg).expect("reopen");
    let report = log.recovery_report();
    assert!(
        report.truncated_bytes > 0 && report.segments_dropped >= 1,
        "{report:?}"
    );
    let kept = split(&log.read(0, usize::MAX).expect("read").bytes);
    assert!(!kept.is_empty() && kept.len() < all.len());
    assert_eq!(
        kept,
        all[..kept.len()].to_vec(),
        "a prefix of the log survives intact"
    );
    assert_eq!(log.log_end_offset(), kept.len() as u64 * 3);
}

#[test]
fn missing_or_damaged_index_is_rebuilt() {
    for damage in ["delete", "garble", "stale"] {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = LogConfig {
            segment_bytes: 4_000,
            ..config()
        };
        let log = SharedLog::open(dir.path(), cfg.clone()).expect("open");
        for i in 0..40 {
            log.append(&mut batch(i, 3, 100, 1_000 + i as i64 * 10))
                .expect("append");
        }
        let before = log.read(0, usize::MAX).expect("read").bytes;
        let ts_offset = log.offset_for_timestamp(1_200).expect("ts");
        log.close().expect("close");
        drop(log);
        for entry in fs::read_dir(dir.path()).expect("list") {
            let p = entry.expect("entry").path();
            if p.extension()
                .is_some_and(|e| e == "index" || e == "timeindex")
            {
                match damage {
                    "delete" => fs::remove_file(&p).expect("rm"),
                    "garble" => fs::write(&p, b"WHIX not really an index").expect("write"),
                    _ => {
                        let mut b = fs::read(&p).expect("read");
                        if b.len() > 30 {
                            b[28] ^= 1;
                        }
                        fs::write(&p, b).expect("write");
                    }
                }
            }
        }
        let log = SharedLog::open(dir.path(), cfg).expect("reopen");
        assert!(
            log.recovery_report().indexes_rebuilt > 0,
            "{damage}: {:?}",
            log.recovery_report()
        );
        assert_eq!(log.recovery_report().truncated_bytes, 0);
        assert_eq!(
            log.read(0, usize::MAX).expect("read").bytes,
            before,
            "{damage}"
        );
        for o in [0u64, 1, 37, 59, 60, 119] {
            let r = log.read(o, 1).expect("read one");
            let (base, b) = split(&r.bytes).remove(0);
            assert!(
                base <= o && o < base + 3,
                "{damage}: read({o}) gave batch at {base}"
            );
            assert_eq!(b.len(), r.bytes.len());
        }
        assert_eq!(
            log.offset_for_timestamp(1_200).expect("ts"),
            ts_offset,
            "{damage}"
        );
    }
}

#[test]
fn bad_batches_are_refused_and_store_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = LogConfig {
        max_batch_bytes: 1_000,
        ..config()
    };
    let log = SharedLog::open(dir.path(), cfg).expect("open");
    let good = batch(1, 2, 10, 0);
    let mut bad_crc = good.clone();
    let n = bad_crc.len();
    bad_crc[n - 1] ^= 1;
    let mut torn = good.clone();
    torn.truncate(n - 3);
    let mut big = batch(2, 20, 100, 0);
    let mut two = [good.clone(), bad_crc.clone()].concat();
    assert!(matches!(
        log.append(&mut bad_crc),
        Err(wharf_log::LogError::CorruptBatch { .. })
    ));
    assert!(matches!(
        log.append(&mut torn),
        Err(wharf_log::LogError::InvalidBatch { .. })
    ));
    assert!(matches!(
        log.append(&mut big),
        Err(wharf_log::LogError::BatchTooLarge { .. })
    ));
    assert!(
        matches!(log.append(&mut two), Err(wharf_log::LogError::CorruptBatch { position, .. }) if position == good.len())
    );
    assert!(matches!(
        log.append(&mut []),
        Err(wharf_log::LogError::InvalidBatch { .. })
    ));
    assert_eq!(log.log_end_offset(), 0);
    assert_eq!(log.size_bytes(), 0);
    let mut ok = good.clone();
    assert_eq!(log.append(&mut ok).expect("good append").base_offset, 0);
}

#[test]
fn reads_out_of_range_are_errors_and_at_the_end_are_empty() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = SharedLog::open(dir.path(), config()).expect("open");
    for i in 0..4 {
        log.append(&mut batch(i, 3, 10, 0)).expect("append");
    }
    log.purge_prefix(4).expect("purge");
    assert!(log.read(3, 100).is_err());
    assert!(log.read(13, 100).is_err());
    assert!(log.read(12, 100).expect("read at end").bytes.is_empty());
    // A purge mid-batch still serves the batch holding the new log start.
    let r = log.read(4, 1).expect("read at log start");
    assert_eq!(split(&r.bytes)[0].0, 3);
    assert!(log.purge_prefix(13).is_err());
}

#[test]
fn unsynced_sealed_segments_are_validated_after_an_unclean_stop() {
    // Under `never`, sealed segments were never synced, so no index vouches for them:
    // after an unclean stop every batch in them is checked, not just the active tail.
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = LogConfig {
        segment_bytes: 2_000,
        ..config()
    };
    assert_eq!(cfg.flush, FlushPolicy::Never);
    let log = SharedLog::open(dir.path(), cfg.clone()).expect("open");
    for i in 0..30 {
        log.append(&mut batch(i, 3, 100, 0)).expect("append");
    }
    let all = split(&log.read(0, usize::MAX).expect("read").bytes);
    drop(log); // no close
    let first = dir.path().join(format!("{:020}.log", 0));
    assert!(
        !first.with_extension("index").exists(),
        "index written before its bytes were synced"
    );
    let mut bytes = fs::read(&first).expect("read");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    fs::write(&first, &bytes).expect("write");
    let log = SharedLog::open(dir.path(), cfg).expect("reopen");
    let report = log.recovery_report();
    assert!(
        report.truncated_bytes > 0 && report.segments_dropped > 0,
        "{report:?}"
    );
    let kept = split(&log.read(0, usize::MAX).expect("read").bytes);
    assert_eq!(kept, all[..kept.len()].to_vec());
}
