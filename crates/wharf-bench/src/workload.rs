//! The workloads, written against [`Driver`] only.
//!
//! Every payload starts with a timestamp (microseconds since the Unix epoch, little
//! endian): the time the message was meant to be sent. A consumer records now minus
//! that in an HDR histogram. In `latency` it is the scheduled send time, so a producer
//! that falls behind its rate shows up as latency instead of hiding it (coordinated
//! omission).

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use hdrhistogram::Histogram;

use crate::driver::{Acks, Consumer, Driver, Producer, ProducerOpts};

/// Set on Ctrl-C or SIGTERM: producers and consumers stop, so that the topic can be
/// deleted without a straggling client creating it again.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

pub(crate) fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::Relaxed)
}

/// When a producer stops.
#[derive(Debug, Clone, Copy)]
pub enum Stop {
    Count(u64),
    Time(Duration),
}

/// What one run measured.
#[derive(Debug)]
pub struct Outcome {
    /// The messages the headline rate counts (acknowledged, consumed or delivered).
    pub messages: u64,
    pub bytes: u64,
    pub elapsed: Duration,
    pub sent: u64,
    pub acked: u64,
    pub failed: u64,
    pub received: u64,
    /// What the consumers' committed positions cover, read back from the broker after
    /// a durable commit (`consume` only; Kafka: the sum of committed offsets).
    pub committed: Option<u64>,
    /// End-to-end latency in microseconds, when messages were consumed.
    pub latency: Option<Histogram<u64>>,
}

/// Counters the progress line reads.
#[derive(Default)]
pub struct Progress {
    pub sent: AtomicU64,
    pub received: AtomicU64,
    pub acks: Arc<Acks>,
}

/// How long consumers wait for a message that should come before giving up.
const IDLE_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a consumer may take to be assigned its partitions (Kafka group joins
/// include the broker's initial rebalance delay, 3 s on Kafka and Wharf).
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long consumers keep polling after they are assigned, before a timed producer starts.
const SETTLE: Duration = Duration::from_millis(500);
const FLUSH_TIMEOUT: Duration = Duration::from_secs(120);

pub struct Params<'a> {
    pub driver: &'a dyn Driver,
    pub topic: &'a str,
    pub size: usize,
    pub keys: u64,
    pub stop: Stop,
    pub producer: ProducerOpts,
    pub progress: Arc<Progress>,
    /// Where to write every received message's due time and latency (`--latency-samples`).
    pub samples: Option<&'a Path>,
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// A payload of `size` bytes that compresses about as badly as real data would.
fn payload(size: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..size)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn new_histogram() -> Histogram<u64> {
    // 1 µs to 10 minutes at 3 significant digits.
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

/// When the `i`th message of a fixed-rate run is due.
pub(crate) fn due(every: Duration, i: u64) -> Duration {
    Duration::from_nanos((every.as_nanos() as u64).saturating_mul(i))
}

/// Sends until `stop`; `count` is this producer's share when stopping by count.
/// `schedule`, when set, is the interval between sends (a fixed rate).
fn send_loop(
    producer: &mut dyn Producer,
    p: &Params<'_>,
    count: Option<u64>,
    schedule: Option<Duration>,
) -> Result<u64> {
    let mut buf = payload(p.size);
    let keys: Vec<Vec<u8>> = (0..p.keys)
        .map(|k| format!("key-{k}").into_bytes())
        .collect();
    if schedule.is_some() {
        // Sends are timed from when they were due, so oversleeping counts as latency.
        // The kernel lets a sleeping thread wake up to its timer slack (50 µs by
        // default) late; ask for none, so the schedule is the broker's to meet.
        let _ = nix::sys::prctl::set_timerslack(1);
    }
    let start = Instant::now();
    let start_micros = now_micros();
    let mut i: u64 = 0;
    while !interrupted() {
        match (p.stop, count) {
            (Stop::Count(_), Some(n)) if i >= n => break,
            (Stop::Time(d), _)
                if start.elapsed() >= d || schedule.is_some_and(|every| due(every, i) >= d) =>
            {
                break
            }
            _ => {}
        }
        let stamp = match schedule {
            Some(every) => {
                let due = due(every, i);
                if let Some(wait) = due.checked_sub(start.elapsed()) {
                    thread::sleep(wait);
                }
                start_micros + due.as_micros() as u64
            }
            None => now_micros(),
        };
        buf[..8].copy_from_slice(&stamp.to_le_bytes());
        let key = (!keys.is_empty()).then(|| keys[(i % p.keys) as usize].as_slice());
        producer.send(key, &buf)?;
        i += 1;
        p.progress.sent.fetch_add(1, Ordering::Relaxed);
    }
    producer.flush(FLUSH_TIMEOUT)?;
    Ok(i)
}

fn check_acks(acks: &Acks) -> Result<()> {
    let failed = acks.failed.load(Ordering::Relaxed);
    if failed > 0 {
        let first = acks
            .first_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .unwrap_or_default();
        eprintln!("warning: {failed} messages were not acknowledged; first error: {first}");
    }
    Ok(())
}

/// `producers` producers send until `stop`; counts what the broker acknowledged.
pub fn produce(p: &Params<'_>, producers: usize) -> Result<Outcome> {
    let acks = p.progress.acks.clone();
    let mut clients = Vec::new();
    for _ in 0..producers {
        clients.push(p.driver.producer(p.topic, &p.producer, acks.clone())?);
    }
    let start = Instant::now();
    let sent: u64 = thread::scope(|s| {
        let handles: Vec<_> = clients
            .into_iter()
            .enumerate()
            .map(|(n, mut client)| {
                let share = match p.stop {
                    Stop::Count(total) => {
                        let base = total / producers as u64;
                        Some(base + u64::from((n as u64) < total % producers as u64))
                    }
                    Stop::Time(_) => None,
                };
                s.spawn(move || send_loop(client.as_mut(), p, share, None))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().map_err(|_| anyhow!("a producer panicked"))?)
            .sum::<Result<u64>>()
    })?;
    let elapsed = start.elapsed();
    check_acks(&acks)?;
    let acked = acks.messages();
    Ok(Outcome {
        messages: acked,
        bytes: acks.bytes.load(Ordering::Relaxed),
        elapsed,
        sent,
        acked,
        failed: acks.failed.load(Ordering::Relaxed),
        received: 0,
        committed: None,
        latency: None,
    })
}

/// One consumer's loop: reads until its group has `target` messages (the target is
/// `u64::MAX` until the producer is done) or nothing came for [`IDLE_TIMEOUT`].
struct Reader {
    consumer: Box<dyn Consumer>,
    /// Messages received by this consumer's group.
    group_count: Arc<AtomicU64>,
    /// Time of the last message received by anyone, in µs since `origin`.
    last: Arc<AtomicU64>,
    first: Arc<AtomicU64>,
}

struct ReadResult {
    histogram: Histogram<u64>,
    bytes: u64,
    /// (when due, µs since the Unix epoch; latency, µs) of every message received, when
    /// asked for (`--latency-samples`).
    samples: Vec<(u64, u64)>,
}

fn read_loop(
    r: &mut Reader,
    origin: Instant,
    target: &AtomicU64,
    progress: &Progress,
    keep_samples: bool,
) -> Result<ReadResult> {
    let mut histogram = new_histogram();
    let mut bytes = 0u64;
    let mut samples = Vec::new();
    let mut idle_since = Instant::now();
    while !interrupted() {
        if r.group_count.load(Ordering::Acquire) >= target.load(Ordering::Acquire) {
            break;
        }
        let n = r
            .consumer
            .poll(Duration::from_millis(100), &mut |payload: &[u8]| {
                bytes += payload.len() as u64;
                if let Some(stamp) = payload.get(..8) {
                    let sent = u64::from_le_bytes(stamp.try_into().unwrap_or_default());
                    let latency = now_micros().saturating_sub(sent).max(1);
                    let _ = histogram.record(latency);
                    if keep_samples {
                        samples.push((sent, latency));
                    }
                }
            })?;
        if n > 0 {
            let at = origin.elapsed().as_micros() as u64;
            r.first.fetch_min(at, Ordering::Relaxed);
            r.last.fetch_max(at, Ordering::Relaxed);
            r.group_count.fetch_add(n as u64, Ordering::AcqRel);
            progress.received.fetch_add(n as u64, Ordering::Relaxed);
            idle_since = Instant::now();
        } else if target.load(Ordering::Acquire) != u64::MAX && idle_since.elapsed() > IDLE_TIMEOUT
        {
            bail!(
                "consumers stopped receiving: {} of {} messages after {:?} without any",
                r.group_count.load(Ordering::Acquire),
                target.load(Ordering::Acquire),
                IDLE_TIMEOUT
            );
        }
    }
    Ok(ReadResult {
        histogram,
        bytes,
        samples,
    })
}

/// Writes `--latency-samples`: one line per message received, `<due µs> <latency µs>`
/// (the due time in µs since the Unix epoch), in order of due time. The histogram gives
/// the percentiles; this gives when the slow ones happened, to tell a periodic cause
/// (a timer, a polling loop) from a stall.
fn write_samples(path: &Path, mut samples: Vec<(u64, u64)>) -> Result<()> {
    use std::io::Write as _;
    samples.sort_unstable();
    let file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut out = std::io::BufWriter::new(file);
    for (due, latency) in samples {
        writeln!(out, "{due} {latency}")?;
    }
    out.flush()
        .with_context(|| format!("writing {}", path.display()))
}

/// Waits until every consumer was given something to read.
fn wait_ready(readers: &mut [Reader], progress: &Progress) -> Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    for r in readers.iter_mut() {
        while !r.consumer.ready() {
            if Instant::now() > deadline {
                bail!("a consumer got no partitions within {READY_TIMEOUT:?}");
            }
            if interrupted() {
                bail!("interrupted");
            }
            // The topic is empty, but count anything, so nothing is lost.
            let n = r.consumer.poll(Duration::from_millis(50), &mut |_| {})?;
            r.group_count.fetch_add(n as u64, Ordering::AcqRel);
            progress.received.fetch_add(n as u64, Ordering::Relaxed);
        }
    }
    // An assignment comes before the consumer has looked up its start offsets and
    // sent its first fetch; without this pause the first messages of a run measure
    // that start-up instead of the broker.
    let settle = Instant::now() + SETTLE;
    while Instant::now() < settle {
        for r in readers.iter_mut() {
            let n = r.consumer.poll(Duration::from_millis(10), &mut |_| {})?;
            r.group_count.fetch_add(n as u64, Ordering::AcqRel);
            progress.received.fetch_add(n as u64, Ordering::Relaxed);
        }
    }
    Ok(())
}

/// `groups` consumer groups of one consumer each read the topic while one producer
/// writes it (at `rate` messages per second when given); timed from the first send to
/// the last message received. The consumers are assigned before the producer starts.
fn produce_and_read(
    p: &Params<'_>,
    groups: usize,
    schedule: Option<Duration>,
    run_id: &str,
) -> Result<Outcome> {
    produce_and_read_group(p, groups, 1, schedule, false, run_id)
}

/// [`produce_and_read`] with `per_group` consumers sharing each group's messages; with
/// `commit`, every consumer commits at the end and the positions read back are
/// reported (see [`consume`]).
fn produce_and_read_group(
    p: &Params<'_>,
    groups: usize,
    per_group: usize,
    schedule: Option<Duration>,
    commit: bool,
    run_id: &str,
) -> Result<Outcome> {
    let origin = Instant::now();
    let first = Arc::new(AtomicU64::new(u64::MAX));
    let last = Arc::new(AtomicU64::new(0));
    let mut readers = Vec::new();
    for g in 0..groups {
        p.driver.prepare_group(p.topic, &format!("{run_id}-g{g}"))?;
    }
    for g in 0..groups {
        let group_count = Arc::new(AtomicU64::new(0));
        for _ in 0..per_group {
            readers.push(Reader {
                consumer: p.driver.consumer(p.topic, &format!("{run_id}-g{g}"))?,
                group_count: group_count.clone(),
                first: first.clone(),
                last: last.clone(),
            });
        }
    }
    wait_ready(&mut readers, &p.progress)?;
    let acks = p.progress.acks.clone();
    let mut producer = p.driver.producer(p.topic, &p.producer, acks.clone())?;
    let target = AtomicU64::new(u64::MAX);
    let start = origin.elapsed();
    let (sent, results) = thread::scope(|s| -> Result<_> {
        let handles: Vec<_> = readers
            .iter_mut()
            .map(|r| s.spawn(|| read_loop(r, origin, &target, &p.progress, p.samples.is_some())))
            .collect();
        let count = match p.stop {
            Stop::Count(n) => Some(n),
            Stop::Time(_) => None,
        };
        let sent = send_loop(producer.as_mut(), p, count, schedule);
        // Whatever happened, let the readers finish: on acknowledged messages.
        target.store(acks.messages(), Ordering::Release);
        let results: Vec<Result<ReadResult>> = handles
            .into_iter()
            .map(|h| h.join().map_err(|_| anyhow!("a consumer panicked"))?)
            .collect();
        Ok((sent?, results))
    })?;
    let mut histogram = new_histogram();
    let mut bytes = 0;
    let mut samples = Vec::new();
    for r in results {
        let r = r?;
        histogram.add(&r.histogram)?;
        bytes += r.bytes;
        samples.extend(r.samples);
    }
    if let Some(path) = p.samples {
        write_samples(path, samples)?;
    }
    check_acks(&acks)?;
    // Each group once (its consumers share one counter).
    let received: u64 = readers
        .iter()
        .step_by(per_group)
        .map(|r| r.group_count.load(Ordering::Acquire))
        .sum();
    let end = Duration::from_micros(last.load(Ordering::Relaxed));
    let acked = acks.messages();
    let committed = if commit {
        commit_all(&mut readers)?
    } else {
        None
    };
    Ok(Outcome {
        messages: received,
        bytes,
        elapsed: end.saturating_sub(start),
        sent,
        acked,
        failed: acks.failed.load(Ordering::Relaxed),
        received,
        committed,
        latency: Some(histogram),
    })
}

/// 1 producer and 1 consumer at once: end-to-end throughput.
pub fn e2e(p: &Params<'_>, run_id: &str) -> Result<Outcome> {
    produce_and_read(p, 1, None, run_id)
}

/// 1 producer at `rate` messages per second and 1 consumer: end-to-end latency.
pub fn latency(p: &Params<'_>, rate: u64, run_id: &str) -> Result<Outcome> {
    if rate == 0 {
        bail!("--rate must be at least 1");
    }
    produce_and_read(
        p,
        1,
        Some(Duration::from_nanos(1_000_000_000 / rate)),
        run_id,
    )
}

/// 1 producer over a many-partition topic and `consumers` consumers in one group.
pub fn partitions(p: &Params<'_>, consumers: usize, run_id: &str) -> Result<Outcome> {
    produce_and_read_group(p, 1, consumers, None, false, run_id)
}

/// 1 producer, `consumers` consumers sharing one queue (an HTTP subscription, or a
/// consumer group) and acknowledging what they get: end-to-end msgs/s and latency. The
/// HTTP driver hands a message over only once its ack was accepted, so there the count
/// and the latency are to the acknowledgement; Kafka consumers commit at the end (and
/// the committed offsets are read back), JetStream and AMQP ack as they read. With
/// `rate`, the producer sends at that many messages per second, as in [`latency`].
pub fn queue(p: &Params<'_>, consumers: usize, rate: Option<u64>, run_id: &str) -> Result<Outcome> {
    let schedule = match rate {
        Some(0) => bail!("--rate must be at least 1"),
        Some(r) => Some(Duration::from_nanos(1_000_000_000 / r)),
        None => None,
    };
    produce_and_read_group(p, 1, consumers, schedule, true, run_id)
}

/// Commits every reader's position (none share an assignment: they are all still in
/// their group) and adds up what the commits cover; `None` where the protocol has no
/// committed positions.
fn commit_all(readers: &mut [Reader]) -> Result<Option<u64>> {
    let mut committed = Some(0);
    for r in readers.iter_mut() {
        committed = match (committed, r.consumer.commit()?) {
            (Some(a), Some(b)) => Some(a + b),
            _ => None,
        };
    }
    Ok(committed)
}

/// 1 producer, `groups` consumer groups that each receive every message: deliveries.
pub fn fanout(p: &Params<'_>, groups: usize, run_id: &str) -> Result<Outcome> {
    produce_and_read(p, groups, None, run_id)
}

/// Fills the topic (not timed), then `consumers` consumers in one group drain it,
/// timed from the first message received to the last (so the group join is not
/// counted).
pub fn consume(p: &Params<'_>, consumers: usize, run_id: &str) -> Result<Outcome> {
    if !p.driver.retains() {
        bail!(
            "consume needs a broker that keeps messages until a consumer reads them; the {} \
             driver does not (use e2e or fanout, or a durable driver)",
            p.driver.name()
        );
    }
    p.driver
        .prepare_group(p.topic, &format!("{run_id}-drain"))?;
    eprintln!("filling {} ...", p.topic);
    let filled = produce(p, 1)?;
    eprintln!(
        "filled {} with {} messages; draining with {consumers} consumers",
        p.topic, filled.acked
    );
    let origin = Instant::now();
    let first = Arc::new(AtomicU64::new(u64::MAX));
    let last = Arc::new(AtomicU64::new(0));
    let group_count = Arc::new(AtomicU64::new(0));
    let mut readers = Vec::new();
    for _ in 0..consumers {
        readers.push(Reader {
            consumer: p.driver.consumer(p.topic, &format!("{run_id}-drain"))?,
            group_count: group_count.clone(),
            first: first.clone(),
            last: last.clone(),
        });
    }
    let target = AtomicU64::new(filled.acked);
    let results: Vec<Result<ReadResult>> = thread::scope(|s| {
        let handles: Vec<_> = readers
            .iter_mut()
            .map(|r| s.spawn(|| read_loop(r, origin, &target, &p.progress, false)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().map_err(|_| anyhow!("a consumer panicked"))?)
            .collect()
    });
    let mut bytes = 0;
    for r in results {
        bytes += r?.bytes;
    }
    let received = group_count.load(Ordering::Acquire);
    // Every consumer is still in the group, so the assignments do not overlap and
    // their committed positions add up.
    let committed = commit_all(&mut readers)?;
    let first = Duration::from_micros(first.load(Ordering::Relaxed).min(u64::MAX / 2));
    let last = Duration::from_micros(last.load(Ordering::Relaxed));
    Ok(Outcome {
        messages: received,
        bytes,
        elapsed: last.saturating_sub(first),
        sent: filled.sent,
        acked: filled.acked,
        failed: filled.failed,
        received,
        committed,
        // Latency since the fill is meaningless here.
        latency: None,
    })
}
