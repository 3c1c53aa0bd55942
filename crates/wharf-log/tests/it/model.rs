//! Random operation sequences against an in-memory model of the log, compared byte for
//! byte after every step, including across reopens (clean and unclean).

use proptest::prelude::*;
use wharf_log::{FlushPolicy, LogConfig, LogError, SharedLog};

use crate::common::batch;

#[derive(Debug, Clone)]
enum Op {
    /// Batches of (records, value length, timestamp skew), then clock advance.
    Append(Vec<(usize, usize, i64)>, i64),
    Read(u64, usize),
    Roll,
    Retention(i64),
    Truncate(u64),
    Purge(u64),
    OffsetForTime(i64),
    Reopen {
        clean: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (prop::collection::vec((1usize..6, 0usize..200, -50i64..50), 1..3), 0i64..300)
            .prop_map(|(b, t)| Op::Append(b, t)),
        3 => (any::<u64>(), 1usize..3000).prop_map(|(o, m)| Op::Read(o, m)),
        1 => Just(Op::Roll),
        1 => (0i64..3000).prop_map(Op::Retention),
        1 => any::<u64>().prop_map(Op::Truncate),
        1 => any::<u64>().prop_map(Op::Purge),
        1 => (-100i64..20_000).prop_map(Op::OffsetForTime),
        1 => any::<bool>().prop_map(|clean| Op::Reopen { clean }),
    ]
}

#[derive(Debug, Clone)]
struct MBatch {
    base: u64,
    count: u64,
    max_ts: i64,
    /// Each record's timestamp, in offset order.
    record_ts: Vec<i64>,
    bytes: Vec<u8>,
}

#[derive(Debug, Clone)]
struct MSeg {
    base: u64,
    next: u64,
    size: u64,
    max_ts: i64,
    first_append: Option<i64>,
    batches: Vec<MBatch>,
}

impl MSeg {
    fn new(base: u64) -> MSeg {
        MSeg {
            base,
            next: base,
            size: 0,
            max_ts: -1,
            first_append: None,
            batches: vec![],
        }
    }
}

struct Model {
    cfg: LogConfig,
    segs: Vec<MSeg>,
    log_start: u64,
}

impl Model {
    fn end(&self) -> u64 {
        self.segs.last().map_or(0, |s| s.next)
    }
    fn size(&self) -> u64 {
        self.segs.iter().map(|s| s.size).sum()
    }
    fn roll(&mut self) {
        let end = self.end();
        if self.segs.last().is_some_and(|s| s.size > 0) {
            self.segs.push(MSeg::new(end));
        }
    }
    fn append(&mut self, batches: Vec<(Vec<u8>, Vec<i64>)>, now: i64) -> (u64, u64) {
        let len: u64 = batches.iter().map(|(b, _)| b.len() as u64).sum();
        let a = self.segs.last().expect("one segment");
        let too_old = matches!((self.cfg.segment_ms, a.first_append), (Some(ms), Some(f)) if now - f >= ms as i64);
        if a.size > 0 && (a.size + len > self.cfg.segment_bytes || too_old) {
            self.roll();
        }
        let first = self.end();
        let mut next = first;
        let a = self.segs.last_mut().expect("one segment");
        for (mut b, record_ts) in batches {
            let h = wharf_log::batch::BatchHeader::parse(&b).expect("header");
            b[..8].copy_from_slice(&(next as i64).to_be_bytes());
            let count = h.last_offset_delta as u64 + 1;
            a.size += b.len() as u64;
            a.max_ts = a.max_ts.max(h.max_timestamp);
            a.batches.push(MBatch {
                base: next,
                count,
                max_ts: h.max_timestamp,
                record_ts,
                bytes: b,
            });
            next += count;
        }
        a.next = next;
        a.first_append.get_or_insert(now);
        (first, next - 1)
    }
    fn all(&self) -> impl Iterator<Item = &MBatch> {
        self.segs.iter().flat_map(|s| s.batches.iter())
    }
    fn read(&self, offset: u64, max: usize) -> Result<Vec<u8>, ()> {
        if offset < self.log_start || offset > self.end() {
            return Err(());
        }
        let mut out: Vec<u8> = Vec::new();
        for b in self.all().filter(|b| b.base + b.count > offset) {
            if !out.is_empty() && out.len() + b.bytes.len() > max {
                break;
            }
            out.extend_from_slice(&b.bytes);
            if out.len() >= max {
                break;
            }
        }
        Ok(out)
    }
    fn delete_oldest(&mut self) {
        self.segs.remove(0);
        self.log_start = self.log_start.max(self.segs[0].base);
    }
    fn retention(&mut self, now: i64) {
        if let Some(ms) = self.cfg.retention_ms {
            let cutoff = now - ms as i64;
            let n = self.segs.len();
            if n == 1 || self.segs[..n - 1].iter().all(|s| s.max_ts < cutoff) {
                let a = &self.segs[n - 1];
                if a.size > 0 && a.max_ts < cutoff {
                    self.roll();
                }
            }
            while self.segs.len() > 1 && self.segs[0].max_ts < cutoff {
                self.delete_oldest();
            }
        }
        if let Some(limit) = self.cfg.retention_bytes {
            while self.segs.len() > 1 && self.size() - self.segs[0].size >= limit {
                self.delete_oldest();
            }
        }
    }
    fn truncate(&mut self, o: u64) -> Result<(), ()> {
        if o >= self.end() {
            return Ok(());
        }
        if o < self.log_start {
            return Err(());
        }
        let i = self.segs.partition_point(|s| s.base <= o) - 1;
        self.segs.truncate(i + 1);
        let s = &mut self.segs[i];
        let keep = s
            .batches
            .iter()
            .take_while(|b| b.base + b.count <= o)
            .count();
        s.batches.truncate(keep);
        s.size = s.batches.iter().map(|b| b.bytes.len() as u64).sum();
        s.next = s.batches.last().map_or(s.base, |b| b.base + b.count);
        s.max_ts = s.batches.iter().map(|b| b.max_ts).max().unwrap_or(-1);
        s.first_append = None;
        let end = s.next;
        self.log_start = self.log_start.min(end);
        Ok(())
    }
    fn purge(&mut self, o: u64) -> Result<(), ()> {
        if o > self.end() {
            return Err(());
        }
        if o <= self.log_start {
            return Ok(());
        }
        self.log_start = o;
        if o == self.end() {
            self.roll();
        }
        while self.segs.len() > 1 && self.segs[0].next <= o {
            self.delete_oldest();
        }
        Ok(())
    }
    fn offset_for_time(&self, ts: i64) -> Option<u64> {
        // Kafka's rule: the first record, at or after the log start, stamped at or after ts.
        self.all()
            .flat_map(|b| {
                b.record_ts
                    .iter()
                    .enumerate()
                    .map(move |(i, t)| (b.base + i as u64, *t))
            })
            .find(|(offset, t)| *t >= ts && *offset >= self.log_start)
            .map(|(offset, _)| offset)
    }
}

/// Picks an interesting offset from a random number: around the log's bounds.
fn pick(raw: u64, model: &Model) -> u64 {
    let span = model.end() + 3;
    raw % span
}

fn check_same(log: &SharedLog, model: &Model) -> Result<(), TestCaseError> {
    prop_assert_eq!(log.log_start_offset(), model.log_start);
    prop_assert_eq!(log.log_end_offset(), model.end());
    prop_assert_eq!(log.high_watermark(), model.end());
    prop_assert_eq!(log.size_bytes(), model.size());
    let all = log
        .read(model.log_start, usize::MAX)
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let expect = model
        .read(model.log_start, usize::MAX)
        .map_err(|()| TestCaseError::fail("model read"))?;
    prop_assert!(
        all.bytes == expect,
        "full read differs: {} vs {} bytes",
        all.bytes.len(),
        expect.len()
    );
    Ok(())
}

fn run(ops: Vec<Op>, cfg: LogConfig) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = SharedLog::open(dir.path(), cfg.clone()).expect("open");
    let mut model = Model {
        cfg: cfg.clone(),
        segs: vec![MSeg::new(0)],
        log_start: 0,
    };
    let mut now: i64 = 10_000;
    let mut seed = 0u64;
    for op in ops {
        match op {
            Op::Append(spec, advance) => {
                now += advance;
                // common::batch stamps record i with ts + i.
                let batches: Vec<(Vec<u8>, Vec<i64>)> = spec
                    .iter()
                    .map(|&(n, len, skew)| {
                        seed += 1;
                        let ts = now + skew;
                        (
                            batch(seed, n, len, ts),
                            (0..n as i64).map(|i| ts + i).collect(),
                        )
                    })
                    .collect();
                let mut buf: Vec<u8> = batches.iter().flat_map(|(b, _)| b.clone()).collect();
                let info = log
                    .append_at(&mut buf, now)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                let (first, last) = model.append(batches, now);
                prop_assert_eq!((info.base_offset, info.last_offset), (first, last));
            }
            Op::Read(raw, max) => {
                let o = pick(raw, &model);
                match (log.read(o, max), model.read(o, max)) {
                    (Ok(r), Ok(m)) => prop_assert!(r.bytes == m, "read({}, {}) differs", o, max),
                    (Err(LogError::OffsetOutOfRange { .. }), Err(())) => {}
                    (r, m) => prop_assert!(
                        false,
                        "read({}) real {:?} model {:?}",
                        o,
                        r.map(|r| r.bytes.len()),
                        m.map(|m| m.len())
                    ),
                }
            }
            Op::Roll => {
                log.roll().map_err(|e| TestCaseError::fail(e.to_string()))?;
                model.roll();
            }
            Op::Retention(advance) => {
                now += advance;
                log.apply_retention(now)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                model.retention(now);
            }
            Op::Truncate(raw) => {
                let o = pick(raw, &model);
                let r = log.truncate_suffix(o);
                let m = model.truncate(o);
                prop_assert_eq!(r.is_ok(), m.is_ok(), "truncate_suffix({})", o);
            }
            Op::Purge(raw) => {
                let o = pick(raw, &model);
                let r = log.purge_prefix(o);
                let m = model.purge(o);
                prop_assert_eq!(r.is_ok(), m.is_ok(), "purge_prefix({})", o);
            }
            Op::OffsetForTime(delta) => {
                let ts = now - 10_000 + delta;
                let r = log
                    .offset_for_timestamp(ts)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(r, model.offset_for_time(ts), "offset_for_timestamp({})", ts);
            }
            Op::Reopen { clean } => {
                if clean {
                    log.close()
                        .map_err(|e| TestCaseError::fail(e.to_string()))?;
                }
                drop(log);
                log = SharedLog::open(dir.path(), cfg.clone())
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                let report = log.recovery_report();
                prop_assert_eq!(report.truncated_bytes, 0);
                prop_assert_eq!(report.clean, clean);
                for s in &mut model.segs {
                    s.first_append = None;
                }
            }
        }
        check_same(&log, &model)?;
    }
    Ok(())
}

fn config() -> impl Strategy<Value = LogConfig> {
    (
        300u64..4000,
        prop::option::of(100u64..2000),
        prop::option::of(500u64..8000),
        prop::option::of(200u64..3000),
        64u32..1024,
    )
        .prop_map(
            |(segment_bytes, segment_ms, retention_bytes, retention_ms, interval)| LogConfig {
                segment_bytes,
                segment_ms,
                retention_bytes,
                retention_ms,
                index_interval_bytes: interval,
                flush: FlushPolicy::Never,
                ..LogConfig::default()
            },
        )
}

proptest! {
    // 256 cases by default; PROPTEST_CASES=N for a longer hunt.
    #[test]
    fn log_agrees_with_model(cfg in config(), ops in prop::collection::vec(op(), 1..60)) {
        run(ops, cfg)?;
    }
}

#[test]
fn log_agrees_with_model_under_always_policy() {
    // A shorter run with real fdatasyncs: the high watermark must track the log end once
    // each append has returned.
    let cfg = LogConfig {
        segment_bytes: 2000,
        index_interval_bytes: 256,
        flush: FlushPolicy::Always,
        ..LogConfig::default()
    };
    let ops: Vec<Op> = (0..40)
        .map(|i| match i % 10 {
            3 => Op::Read(i, 700),
            6 => Op::Reopen { clean: i % 20 == 6 },
            8 => Op::Truncate(i * 7),
            _ => Op::Append(vec![(3, 100, 0)], 5),
        })
        .collect();
    run(ops, cfg).expect("agrees");
}
