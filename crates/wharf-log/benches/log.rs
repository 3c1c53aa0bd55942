//! Append and read throughput of the partition log.
//!
//! Workload: 1 KiB records in 16 KiB batches (16 records each), as a producer with
//! `batch.size=16384` would send them. `docs/benchmarks.md` puts the results next to
//! `fio` figures for the same disk, taken in the same sitting (`bench/disk-baseline.sh`).
//!
//! Run: `cargo bench -p wharf-log --bench log`

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use wharf_log::batch::{Record, RecordBatchBuilder};
use wharf_log::{FlushPolicy, LogConfig, SharedLog};

fn batch_16k() -> Vec<u8> {
    let value = vec![0x5au8; 1024];
    let mut b = RecordBatchBuilder::new();
    for i in 0..16 {
        let key = format!("key-{i}");
        b.push(&Record {
            key: Some(key.as_bytes()),
            value: Some(&value),
            headers: vec![],
            timestamp: 1_700_000_000_000 + i,
        });
    }
    b.build()
}

fn config(flush: FlushPolicy) -> LogConfig {
    LogConfig {
        segment_bytes: 256 << 20,
        // Keep the bench's disk footprint bounded; retention runs between iterations.
        retention_bytes: Some(1 << 30),
        retention_ms: None,
        flush,
        ..LogConfig::default()
    }
}

/// `appenders` threads each append `per_thread` batches; returns the wall time.
fn run(log: &Arc<SharedLog>, template: &[u8], appenders: u64, per_thread: u64) -> Duration {
    let start = Instant::now();
    let handles: Vec<_> = (0..appenders)
        .map(|_| {
            let log = log.clone();
            let template = template.to_vec();
            std::thread::spawn(move || {
                // The log only rewrites the base offset (outside the CRC), so one buffer
                // can be appended again and again, as a network buffer would be reused.
                let mut b = template;
                for _ in 0..per_thread {
                    log.append(&mut b).expect("append");
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("appender");
    }
    let took = start.elapsed();
    log.apply_retention(0).ok();
    took
}

fn append(c: &mut Criterion) {
    let template = batch_16k();
    let mut g = c.benchmark_group("append");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(8))
        .warm_up_time(Duration::from_secs(2));

    for (name, flush, appenders) in [
        ("never", FlushPolicy::Never, 1u64),
        ("always", FlushPolicy::Always, 1),
        ("always", FlushPolicy::Always, 8),
    ] {
        let dir = tempfile::tempdir_in(
            std::env::var("WHARF_BENCH_DIR").unwrap_or_else(|_| env!("CARGO_TARGET_TMPDIR").into()),
        )
        .expect("tempdir");
        let log = Arc::new(SharedLog::open(dir.path(), config(flush)).expect("open"));
        g.throughput(Throughput::Bytes(template.len() as u64 * appenders));
        g.bench_function(
            BenchmarkId::new(name, format!("{appenders}-appenders")),
            |b| {
                b.iter_custom(|iters| {
                    let per_thread = iters.max(1);
                    run(&log, &template, appenders, per_thread)
                })
            },
        );
        let stats = log.stats();
        eprintln!(
            "append/{name}/{appenders}: {} appends, {} syncs ({:.1} appends per sync)",
            stats.appends,
            stats.syncs,
            stats.appends as f64 / stats.syncs.max(1) as f64
        );
    }
    g.finish();
}

fn read(c: &mut Criterion) {
    let template = batch_16k();
    let dir = tempfile::tempdir_in(
        std::env::var("WHARF_BENCH_DIR").unwrap_or_else(|_| env!("CARGO_TARGET_TMPDIR").into()),
    )
    .expect("tempdir");
    let log = Arc::new(SharedLog::open(dir.path(), config(FlushPolicy::Never)).expect("open"));
    // 256 MiB of batches, read back in 1 MiB fetches as a consumer would.
    let batches = (256 << 20) / template.len() as u64;
    run(&log, &template, 1, batches);
    let end = log.log_end_offset();
    let mut g = c.benchmark_group("read");
    g.sample_size(10).measurement_time(Duration::from_secs(8));
    g.throughput(Throughput::Bytes(1 << 20));
    let mut offset = 0u64;
    g.bench_function("1MiB-fetches", |b| {
        b.iter(|| {
            let r = log.read(offset, 1 << 20).expect("read");
            let mut next = offset;
            let mut rest = &r.bytes[..];
            while let Some(h) = wharf_log::batch::BatchHeader::parse(rest) {
                next = h.last_offset() as u64 + 1;
                rest = &rest[h.total_len().unwrap_or(rest.len())..];
            }
            offset = if next >= end { 0 } else { next };
            r.bytes.len()
        })
    });
    g.finish();
}

criterion_group!(benches, append, read);
criterion_main!(benches);
