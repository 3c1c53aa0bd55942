//! Test helper for the crash test (`tests/it/crash.rs`): appends to a log with the default
//! flush policy from several threads and prints `ack <base> <last> <seed>` for every append
//! that returned, until it is killed. Not part of the broker.

use std::io::Write;
use std::sync::Arc;

use wharf_log::batch::{Record, RecordBatchBuilder};
use wharf_log::{LogConfig, SharedLog};

/// The batch for `seed`; the crash test rebuilds it to check what was stored.
pub fn crash_batch(seed: u64) -> Vec<u8> {
    let mut b = RecordBatchBuilder::new();
    for i in 0..4u64 {
        let value: Vec<u8> = (0..200u64).map(|j| (seed ^ (i * 31) ^ j) as u8).collect();
        let key = seed.to_be_bytes();
        b.push(&Record {
            key: Some(&key),
            value: Some(&value),
            headers: vec![],
            timestamp: 1_000 + seed as i64,
        });
    }
    b.build()
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(dir), Some(threads), Some(first_seed)) = (args.next(), args.next(), args.next())
    else {
        eprintln!("usage: wharf-log-crash-appender DIR THREADS FIRST_SEED");
        std::process::exit(2);
    };
    let threads: u64 = threads.parse().unwrap_or(4);
    let first_seed: u64 = first_seed.parse().unwrap_or(0);
    let config = LogConfig {
        segment_bytes: 256 * 1024,
        ..LogConfig::default()
    };
    let log = match SharedLog::open(&dir, config) {
        Ok(l) => Arc::new(l),
        Err(e) => {
            eprintln!("open {dir}: {e}");
            std::process::exit(1);
        }
    };
    let handles: Vec<_> = (0..threads)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || {
                let mut seq = 0u64;
                loop {
                    let seed = first_seed + (t << 32) + seq;
                    seq += 1;
                    let mut b = crash_batch(seed);
                    match log.append(&mut b) {
                        Ok(info) => {
                            let mut out = std::io::stdout().lock();
                            let _ = writeln!(
                                out,
                                "ack {} {} {}",
                                info.base_offset, info.last_offset, seed
                            );
                            let _ = out.flush();
                        }
                        Err(e) => {
                            eprintln!("append: {e}");
                            std::process::exit(1);
                        }
                    }
                }
            })
        })
        .collect();
    for h in handles {
        let _ = h.join();
    }
}
