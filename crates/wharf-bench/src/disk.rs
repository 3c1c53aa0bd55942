//! `wharf-bench disk`: what the disk alone gives a durable broker at a fixed rate.
//!
//! Writes `size` bytes and fdatasyncs them, `rate` times a second, each write timed from
//! when it was due, exactly as the `latency` workload times messages. A stall therefore
//! counts for every write it holds back, as it does for messages, where fio's percentiles
//! count each fdatasync once however long the writes behind it waited. The file is
//! either grown by each write (`append`, like fio's appending test) or overwritten
//! inside zeroed space written and synced first (`overwrite`, like Wharf's preallocated
//! segments).

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::ValueEnum;
use serde::Serialize;

use crate::report::Latency;

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
    pub writes: u64,
    /// Time from when each write was due to the end of its fdatasync.
    pub latency: Latency,
    /// fdatasync calls alone, each counted once (fio's view).
    pub sync: Latency,
}

pub fn run(
    dir: &Path,
    mode: Mode,
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
    let result = measure(&file, mode, rate, size, duration);
    let _ = std::fs::remove_file(&path);
    result.with_context(|| format!("writing {}", path.display()))
}

fn measure(
    file: &std::fs::File,
    mode: Mode,
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
    let start = Instant::now();
    for i in 0..writes {
        let due = every * u32::try_from(i).unwrap_or(u32::MAX);
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
    Ok(DiskReport {
        workload: "disk",
        mode,
        rate,
        size,
        writes,
        latency: Latency::from_histogram(&e2e),
        sync: Latency::from_histogram(&sync),
    })
}
