//! The thread-safe handle: group commit under concurrency, interval policy, close.

use std::sync::Arc;
use std::time::Duration;

use wharf_log::{FlushPolicy, LogConfig, LogError, SharedLog};

use crate::common::{batch, split};

#[test]
fn concurrent_appenders_share_syncs_and_get_distinct_contiguous_offsets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = LogConfig {
        segment_bytes: 64 * 1024,
        ..LogConfig::default()
    };
    assert_eq!(
        cfg.flush,
        FlushPolicy::Always,
        "durable policy is the default"
    );
    let log = Arc::new(SharedLog::open(dir.path(), cfg).expect("open"));
    let threads = 8u64;
    let per_thread = 40u64;
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                let mut mine = Vec::new();
                for i in 0..per_thread {
                    let seed = t * 1000 + i;
                    let info = log.append(&mut batch(seed, 2, 300, 0)).expect("append");
                    // Acknowledged means readable: at or below the high watermark.
                    assert!(log.high_watermark() > info.last_offset);
                    mine.push((info.base_offset, seed));
                }
                mine
            })
        })
        .collect();
    let mut all: Vec<(u64, u64)> = handles
        .into_iter()
        .flat_map(|h| h.join().expect("thread"))
        .collect();
    all.sort();
    let stored = split(&log.read(0, usize::MAX).expect("read").bytes);
    assert_eq!(stored.len() as u64, threads * per_thread);
    for ((base, seed), (sbase, bytes)) in all.iter().zip(&stored) {
        assert_eq!(base, sbase);
        let mut expect = batch(*seed, 2, 300, 0);
        wharf_log::batch::set_base_offset(&mut expect, *base as i64);
        assert_eq!(&expect, bytes);
    }
    let stats = log.stats();
    assert_eq!(stats.appends, threads * per_thread);
    assert!(stats.syncs < stats.appends, "no sync was shared: {stats:?}");
}

#[test]
fn interval_policy_acknowledges_at_once_and_sync_covers_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = LogConfig {
        flush: FlushPolicy::Interval(Duration::from_millis(50)),
        ..LogConfig::default()
    };
    let log = SharedLog::open(dir.path(), cfg).expect("open");
    let info = log.append(&mut batch(1, 1, 10, 0)).expect("append");
    assert_eq!(log.high_watermark(), info.last_offset + 1);
    assert_eq!(log.stats().syncs, 0);
    log.sync().expect("sync");
    assert_eq!(log.stats().syncs, 1);
}

#[test]
fn closed_log_refuses_writes_and_reopens_clean() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = SharedLog::open(dir.path(), LogConfig::default()).expect("open");
    assert!(log.recovery_report().created, "a new log says so");
    log.append(&mut batch(1, 3, 10, 0)).expect("append");
    log.close().expect("close");
    assert!(matches!(
        log.append(&mut batch(2, 1, 10, 0)),
        Err(LogError::Closed { .. })
    ));
    drop(log);
    let log = SharedLog::open(dir.path(), LogConfig::default()).expect("reopen");
    assert!(log.recovery_report().clean);
    assert!(!log.recovery_report().created);
    assert_eq!(log.log_end_offset(), 3);
}

#[test]
fn admission_hook_can_reject_or_answer_a_duplicate_without_writing() {
    use wharf_log::{Admission, AppendWithError};
    let dir = tempfile::tempdir().expect("tempdir");
    let log = SharedLog::open(dir.path(), LogConfig::default()).expect("open");
    let mut seen = None;
    let first = log
        .append_with(
            &mut batch(1, 3, 10, 0),
            0,
            |b, next| {
                assert_eq!((b.len(), next), (1, 0));
                Ok::<_, ()>(Admission::Append)
            },
            |_, info| seen = Some(*info),
        )
        .expect("append");
    assert!(!first.duplicate);
    assert_eq!(seen, Some(first.info));
    let size = log.size_bytes();

    let dup = log
        .append_with(
            &mut batch(1, 3, 10, 0),
            0,
            |_, next| {
                assert_eq!(next, 3);
                Ok::<_, ()>(Admission::Duplicate {
                    base_offset: 0,
                    last_offset: 2,
                })
            },
            |_, _| panic!("nothing was appended"),
        )
        .expect("duplicate");
    assert!(dup.duplicate);
    assert_eq!((dup.info.base_offset, dup.info.last_offset), (0, 2));

    let rejected = log.append_with(&mut batch(2, 1, 10, 0), 0, |_, _| Err("fenced"), |_, _| {});
    assert!(matches!(rejected, Err(AppendWithError::Rejected("fenced"))));
    assert_eq!(
        log.size_bytes(),
        size,
        "neither the duplicate nor the rejected batch was stored"
    );
    assert_eq!(log.log_end_offset(), 3);
}

#[test]
fn only_reads_of_the_last_few_mib_of_the_active_segment_count_as_hot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = LogConfig {
        segment_bytes: 16 << 20,
        flush: FlushPolicy::Never,
        ..LogConfig::default()
    };
    let log = SharedLog::open(dir.path(), cfg).expect("open");
    // Nothing to read (at the end of an empty log) is hot.
    assert!(log.plan_read(0, 1 << 20).expect("plan").is_hot());
    // 6 MiB in 64 KiB batches of one record.
    let per_batch = 64 << 10;
    let batches = (6 << 20) / per_batch;
    for i in 0..batches {
        log.append(&mut batch(i as u64, 1, per_batch, 0))
            .expect("append");
    }
    let end = log.log_end_offset();
    // Near the end: hot, and reads the same bytes as a plain read.
    let plan = log.plan_read(end - 2, 1 << 20).expect("plan");
    assert!(plan.is_hot());
    assert_eq!(
        plan.execute().expect("read").bytes,
        log.read(end - 2, 1 << 20).expect("read").bytes
    );
    // More than HOT_READ_BYTES behind the end: not hot.
    assert!(!log.plan_read(0, 1 << 20).expect("plan").is_hot());
    // At the end of the log, nothing to read: hot.
    assert!(log.plan_read(end, 1 << 20).expect("plan").is_hot());
    // A sealed segment is never hot, however small the read.
    log.roll().expect("roll");
    log.append(&mut batch(999, 1, 100, 0)).expect("append");
    assert!(!log.plan_read(end - 1, 1 << 20).expect("plan").is_hot());
    assert!(log.plan_read(end, 1 << 20).expect("plan").is_hot());
}

/// The `.log` files in `dir`, oldest first, with their lengths on disk.
fn segment_files(dir: &std::path::Path) -> Vec<(std::path::PathBuf, u64)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .expect("list")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .map(|p| {
            let len = std::fs::metadata(&p).expect("stat").len();
            (p, len)
        })
        .collect();
    v.sort();
    v
}

#[test]
fn small_durable_appends_write_into_zeroed_space_that_rest_and_recovery_cut() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = LogConfig {
        segment_bytes: 256 * 1024,
        ..LogConfig::default()
    };
    let log = SharedLog::open(dir.path(), cfg.clone()).expect("open");
    let mut stored = 0u64;
    for i in 0..20 {
        stored += log.append(&mut batch(i, 1, 500, 0)).expect("append").bytes as u64;
    }
    // The active segment holds zeros past its batches, on a 4 KiB boundary.
    let files = segment_files(dir.path());
    assert_eq!(files.len(), 1);
    let (path, len) = &files[0];
    assert!(
        len > &stored,
        "no space written ahead: {len} bytes on disk, {stored} stored"
    );
    assert_eq!(len % 4096, 0);
    let bytes = std::fs::read(path).expect("read segment");
    assert!(bytes[stored as usize..].iter().all(|&b| b == 0));
    // Readers see only the batches.
    let read = log.read(0, usize::MAX).expect("read");
    assert_eq!(read.bytes.len() as u64, stored);
    assert_eq!(split(&read.bytes).len(), 20);

    // A crash (no close) leaves the zeros; reopening cuts them without calling it damage,
    // and appends continue right after the last batch.
    drop(log);
    let log = SharedLog::open(dir.path(), cfg.clone()).expect("reopen after a crash");
    let report = log.recovery_report();
    assert!(!report.clean);
    assert_eq!(report.truncated_bytes, 0, "{report:?}");
    assert_eq!(log.log_end_offset(), 20);
    assert_eq!(segment_files(dir.path())[0].1, stored);
    let info = log
        .append(&mut batch(20, 1, 500, 0))
        .expect("append after reopen");
    assert_eq!(info.base_offset, 20);
    stored += info.bytes as u64;

    // Fill past the segment size: the sealed segment is exactly its batches.
    let mut sealed_end = stored;
    for i in 21..600 {
        let before = log.log_end_offset();
        let info = log.append(&mut batch(i, 1, 500, 0)).expect("append");
        if segment_files(dir.path()).len() > 1 {
            assert_eq!(info.base_offset, before);
            break;
        }
        stored += info.bytes as u64;
        sealed_end = stored;
    }
    let files = segment_files(dir.path());
    assert_eq!(files.len(), 2, "the segment rolled");
    assert_eq!(files[0].1, sealed_end, "sealed segment holds zeros");

    // A clean close leaves the active segment exactly its batches too.
    let end = log.log_end_offset();
    log.close().expect("close");
    drop(log);
    // `split` fails on anything but whole batches, zeros included; one record each.
    let batches: usize = segment_files(dir.path())
        .iter()
        .map(|(p, _)| split(&std::fs::read(p).expect("read")).len())
        .sum();
    assert_eq!(batches as u64, end);
    let log = SharedLog::open(dir.path(), cfg).expect("reopen");
    assert!(log.recovery_report().clean);
    assert_eq!(log.log_end_offset(), end);
}

#[test]
fn large_durable_appends_get_no_zeroed_space() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = SharedLog::open(dir.path(), LogConfig::default()).expect("open");
    let mut stored = 0u64;
    for i in 0..4 {
        // Each sync covers one ~100 KiB batch: the file only grows by what is stored.
        stored += log
            .append(&mut batch(i, 100, 1000, 0))
            .expect("append")
            .bytes as u64;
    }
    assert_eq!(segment_files(dir.path())[0].1, stored);
}

#[test]
fn bytes_from_counts_what_is_stored_from_an_offset_to_the_end_across_segments() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = LogConfig {
        segment_bytes: 8 * 1024,
        index_interval_bytes: 1,
        flush: FlushPolicy::Never,
        ..LogConfig::default()
    };
    let log = SharedLog::open(dir.path(), cfg).expect("open");
    // 30 batches of 3 records, about 1 KiB each: several segments.
    let mut sizes = Vec::new();
    for i in 0..30 {
        let mut b = batch(i, 3, 300, 0);
        sizes.push(b.len() as u64);
        log.append(&mut b).expect("append");
    }
    let total: u64 = sizes.iter().sum();
    assert_eq!(log.bytes_from(0), total);
    assert_eq!(log.bytes_from(90), 0, "at the log end");
    assert_eq!(log.bytes_from(1_000), 0, "past it");
    // With an index entry per batch, any offset is placed at the start of its batch.
    for batch_no in [1usize, 7, 8, 15, 29] {
        let want: u64 = sizes[batch_no..].iter().sum();
        let first = batch_no as u64 * 3;
        assert_eq!(log.bytes_from(first), want, "batch {batch_no}");
        assert_eq!(log.bytes_from(first + 2), want, "inside batch {batch_no}");
    }
    let segments = std::fs::read_dir(dir.path())
        .expect("list")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "log"))
        })
        .count();
    assert!(segments > 2, "{segments} segments");
}
