//! Results: the table on stdout, the JSON file, the progress line on stderr.

use std::fmt::Write as _;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

use crate::workload::{Outcome, Progress, Stop};
use crate::Global;

/// The machine a run was measured on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cores: usize,
    pub hostname: Option<String>,
    pub os: &'static str,
    /// /proc/loadavg's 1, 5 and 15 minute averages when the run started.
    pub load_average: Option<[f64; 3]>,
}

impl Machine {
    pub fn probe() -> Machine {
        let read = |path: &str| std::fs::read_to_string(path).ok();
        let load_average = read("/proc/loadavg").and_then(|s| {
            let mut it = s.split_whitespace().map(|x| x.parse::<f64>().ok());
            Some([it.next()??, it.next()??, it.next()??])
        });
        Machine {
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            hostname: read("/proc/sys/kernel/hostname").map(|s| s.trim().to_owned()),
            os: std::env::consts::OS,
            load_average,
        }
    }
}

/// End-to-end latency percentiles, in microseconds.
#[derive(Debug, Serialize, Deserialize)]
pub struct Latency {
    pub count: u64,
    pub mean_us: f64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    /// The distribution as (percentile, µs) points, evenly spaced in "nines"
    /// (-log10(1 - p)) up to what the sample count resolves, then the maximum at 100.
    pub curve: Vec<(f64, u64)>,
}

impl Latency {
    /// The summary of a non-empty histogram of microseconds.
    pub fn from_histogram(h: &hdrhistogram::Histogram<u64>) -> Latency {
        Latency {
            count: h.len(),
            mean_us: h.mean(),
            p50_us: h.value_at_quantile(0.50),
            p90_us: h.value_at_quantile(0.90),
            p99_us: h.value_at_quantile(0.99),
            p999_us: h.value_at_quantile(0.999),
            max_us: h.max(),
            curve: curve(h),
        }
    }
}

/// Points of the percentile curve: 10 per decade of nines.
const CURVE_STEPS_PER_NINE: u32 = 10;

fn curve(h: &hdrhistogram::Histogram<u64>) -> Vec<(f64, u64)> {
    // Beyond log10(count) nines a percentile is just the maximum again.
    let max_nines = (h.len() as f64).log10().clamp(0.0, 6.0);
    let steps = (max_nines * f64::from(CURVE_STEPS_PER_NINE)).floor() as u32;
    let mut points: Vec<(f64, u64)> = (0..=steps)
        .map(|i| {
            let nines = f64::from(i) / f64::from(CURVE_STEPS_PER_NINE);
            let q = 1.0 - 10f64.powf(-nines);
            (q * 100.0, h.value_at_quantile(q))
        })
        .collect();
    points.push((100.0, h.max()));
    points
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub workload: &'static str,
    pub driver: String,
    pub brokers: String,
    pub topic: String,
    /// Unix seconds.
    pub started_at: u64,
    pub params: serde_json::Value,
    pub duration_s: f64,
    /// The messages the rate counts: acknowledged (produce), received (consume, e2e,
    /// latency) or delivered to all groups together (fanout).
    pub messages: u64,
    pub msgs_per_s: f64,
    /// Payload bytes per second, in 10^6 bytes.
    pub mb_per_s: f64,
    pub sent: u64,
    pub acked: u64,
    pub failed: u64,
    pub received: u64,
    /// Messages the consumers' committed positions cover (`consume` only).
    pub committed: Option<u64>,
    pub latency: Option<Latency>,
    pub machine: Machine,
}

impl Report {
    pub fn new(
        workload: &'static str,
        global: &Global,
        topic: &str,
        started_at: u64,
        params: serde_json::Value,
        o: &Outcome,
        machine: Machine,
    ) -> Report {
        let secs = o.elapsed.as_secs_f64();
        let rate = |x: u64| if secs > 0.0 { x as f64 / secs } else { 0.0 };
        let latency = o
            .latency
            .as_ref()
            .filter(|h| !h.is_empty())
            .map(Latency::from_histogram);
        Report {
            workload,
            driver: format!("{:?}", global.driver).to_lowercase(),
            brokers: global.brokers().to_owned(),
            topic: topic.to_owned(),
            started_at,
            params,
            duration_s: secs,
            messages: o.messages,
            msgs_per_s: rate(o.messages),
            mb_per_s: rate(o.bytes) / 1e6,
            sent: o.sent,
            acked: o.acked,
            failed: o.failed,
            received: o.received,
            committed: o.committed,
            latency,
            machine,
        }
    }

    pub fn table(&self) -> String {
        let mut rows: Vec<(&str, String)> = vec![
            ("workload", self.workload.to_owned()),
            ("driver", format!("{} ({})", self.driver, self.brokers)),
            ("duration", format!("{:.2} s", self.duration_s)),
            ("messages", self.messages.to_string()),
            ("msgs/s", format!("{:.0}", self.msgs_per_s)),
            ("MB/s", format!("{:.2}", self.mb_per_s)),
            (
                "sent/acked/failed/received",
                format!(
                    "{}/{}/{}/{}",
                    self.sent, self.acked, self.failed, self.received
                ),
            ),
        ];
        if let Some(c) = self.committed {
            rows.push(("committed", c.to_string()));
        }
        if let Some(l) = &self.latency {
            let ms = |us: u64| format!("{:.3} ms", us as f64 / 1000.0);
            rows.push(("latency p50", ms(l.p50_us)));
            rows.push(("latency p90", ms(l.p90_us)));
            rows.push(("latency p99", ms(l.p99_us)));
            rows.push(("latency p99.9", ms(l.p999_us)));
            rows.push(("latency max", ms(l.max_us)));
        }
        let m = &self.machine;
        rows.push((
            "machine",
            format!(
                "{} cores, {}, load {}",
                m.cores,
                m.hostname.as_deref().unwrap_or("?"),
                m.load_average.map_or("?".to_owned(), |l| format!(
                    "{:.2} {:.2} {:.2}",
                    l[0], l[1], l[2]
                ))
            ),
        ));
        let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        let mut out = String::new();
        for (k, v) in rows {
            let _ = writeln!(out, "{k:<width$}  {v}");
        }
        out
    }
}

/// Progress on stderr until `done`: a bar on a terminal (towards the run's duration or
/// message count), otherwise a line every second (for logs).
pub fn spawn_progress(
    workload: &'static str,
    stop: Stop,
    progress: Arc<Progress>,
    done: Arc<AtomicBool>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let bar = std::io::stderr().is_terminal().then(|| {
            let (len, unit) = match stop {
                Stop::Count(n) => (n, "msgs"),
                Stop::Time(d) => (d.as_secs().max(1), "s"),
            };
            let bar = ProgressBar::new(len);
            let style = ProgressStyle::with_template(&format!(
                "{workload} [{{bar:30}}] {{pos}}/{{len}} {unit}  {{msg}}"
            ))
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            bar.set_style(style);
            bar
        });
        let start = Instant::now();
        let mut next = Duration::from_secs(1);
        let mut last = (0, 0);
        while !done.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(50));
            if start.elapsed() < next {
                continue;
            }
            next += Duration::from_secs(1);
            let sent = progress.sent.load(Ordering::Relaxed);
            let acked = progress.acks.messages();
            let received = progress.received.load(Ordering::Relaxed);
            let line = format!(
                "sent {sent}  acked {acked} (+{}/s)  received {received} (+{}/s)",
                acked - last.0,
                received - last.1,
            );
            last = (acked, received);
            match &bar {
                Some(bar) => {
                    bar.set_position(match stop {
                        Stop::Count(_) => sent,
                        Stop::Time(_) => start.elapsed().as_secs(),
                    });
                    bar.set_message(line);
                }
                None => eprintln!("{workload} {:>6.1}s  {line}", start.elapsed().as_secs_f64()),
            }
        }
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
    })
}
