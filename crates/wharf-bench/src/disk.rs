//! `wharf-bench disk`: what the disk alone gives a durable broker at a fixed rate.
//!
//! Writes `size` bytes and fdatasyncs them, `rate` times a second, each write timed from
//! when it was due, exactly as the `latency` workload times messages. A stall therefore
//! counts for every write it holds back, as it does for messages, where fio's percentiles
//! count each fdatasync once however long the writes behind it waited. The file is
//! either grown by each write (`append`, like fio's appending test) or overwritten
//! inside zeroed space written and synced first (`overwrite`, like Wharf's preallocated
//! segments).
//!
//! With `--group-commit` the writes and the syncs run on two threads, as in a broker
//! that commits in groups: writes go on at their due times while a sync runs, and each
//! sync covers every write made before it started. A write's latency then ends with the
//! first sync that started after it: the disk's floor for a message that a consumer may
//! see only once it is durable.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Condvar, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::ValueEnum;
use serde::Serialize;

use crate::report::Latency;
use crate::workload::due;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Each write extends the file.
    Append,
    /// Writes land in zeroed space written and synced before the run.
    Overwrite,
}

#[derive(Debug, Serialize)]
pub struct DiskReport {
    pub workload: &'static str,
    pub mode: Mode,
    pub rate: u64,
    pub size: usize,
    pub group_commit: bool,
    pub writes: u64,
    /// fdatasync calls made (one per write unless `group_commit`).
    pub syncs: u64,
    /// Time from when each write was due to the end of its fdatasync.
    pub latency: Latency,
    /// fdatasync calls alone, each counted once (fio's view).
    pub sync: Latency,
}

pub fn run(
    dir: &Path,
    mode: Mode,
    group_commit: bool,
    rate: u64,
    size: usize,
    duration: Duration,
) -> Result<DiskReport> {
    if rate == 0 {
        bail!("--rate must be at least 1");
    }
    if size == 0 {
        bail!("--size must be at least 1");
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(format!("wharf-bench-disk-{}.dat", std::process::id()));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    let result = measure(&file, mode, group_commit, rate, size, duration);
    let _ = std::fs::remove_file(&path);
    result.with_context(|| format!("writing {}", path.display()))
}

fn measure(
    file: &std::fs::File,
    mode: Mode,
    group_commit: bool,
    rate: u64,
    size: usize,
    duration: Duration,
) -> Result<DiskReport> {
    let every = Duration::from_nanos(1_000_000_000 / rate);
    let writes = (duration.as_secs_f64() * rate as f64).ceil() as u64;
    if mode == Mode::Overwrite {
        let zeros = vec![0u8; 1 << 20];
        let total = writes * size as u64;
        let mut at = 0;
        while at < total {
            let n = (total - at).min(zeros.len() as u64) as usize;
            file.write_all_at(&zeros[..n], at)?;
            at += n as u64;
        }
        file.sync_all()?;
    }
    // As the fixed-rate sender does: no timer slack, so the schedule is the disk's to meet.
    let _ = nix::sys::prctl::set_timerslack(1);
    let buf: Vec<u8> = (0..size).map(|i| (i % 251) as u8 + 1).collect();
    let mut e2e = hdrhistogram::Histogram::<u64>::new(3)?;
    let mut sync = hdrhistogram::Histogram::<u64>::new(3)?;
    let syncs = if group_commit {
        grouped(file, &buf, every, writes, &mut e2e, &mut sync)?
    } else {
        let start = Instant::now();
        for i in 0..writes {
            let due = due(every, i);
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                thread::sleep(wait);
            }
            file.write_all_at(&buf, i * size as u64)?;
            let synced = Instant::now();
            file.sync_data()?;
            let done = start.elapsed();
            sync.record(synced.elapsed().as_micros() as u64)?;
            e2e.record(done.saturating_sub(due).as_micros() as u64)?;
        }
        writes
    };
    Ok(DiskReport {
        workload: "disk",
        mode,
        rate,
        size,
        group_commit,
        writes,
        syncs,
        latency: Latency::from_histogram(&e2e),
        sync: Latency::from_histogram(&sync),
    })
}

/// `--group-commit`: this thread writes at the due times; another syncs, again and again,
/// everything written before each sync starts. Returns the number of syncs.
fn grouped(
    file: &std::fs::File,
    buf: &[u8],
    every: Duration,
    writes: u64,
    e2e: &mut hdrhistogram::Histogram<u64>,
    sync: &mut hdrhistogram::Histogram<u64>,
) -> Result<u64> {
    // Writes made so far, and whether the writer gave up (an error).
    let written = Mutex::new((0u64, false));
    let more = Condvar::new();
    let lock = || written.lock().unwrap_or_else(PoisonError::into_inner);
    let start = Instant::now();
    thread::scope(|s| {
        let syncer = s.spawn(|| -> Result<u64> {
            let (mut synced, mut syncs) = (0u64, 0u64);
            while synced < writes {
                let upto = {
                    let mut w = lock();
                    while w.0 == synced && !w.1 {
                        w = more.wait(w).unwrap_or_else(PoisonError::into_inner);
                    }
                    if w.0 == synced {
                        break;
                    }
                    w.0
                };
                let began = Instant::now();
                file.sync_data()?;
                let done = start.elapsed();
                syncs += 1;
                sync.record(began.elapsed().as_micros() as u64)?;
                for i in synced..upto {
                    e2e.record(done.saturating_sub(due(every, i)).as_micros() as u64)?;
                }
                synced = upto;
            }
            Ok(syncs)
        });
        let wrote = (|| -> Result<()> {
            for i in 0..writes {
                if let Some(wait) = due(every, i).checked_sub(start.elapsed()) {
                    thread::sleep(wait);
                }
                file.write_all_at(buf, i * buf.len() as u64)?;
                lock().0 = i + 1;
                more.notify_one();
            }
            Ok(())
        })();
        lock().1 = true;
        more.notify_one();
        let syncs = syncer
            .join()
            .map_err(|_| anyhow::anyhow!("the sync thread panicked"))?;
        wrote?;
        syncs
    })
}
