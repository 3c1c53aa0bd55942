//! The thread-safe log handle, and group commit.
//!
//! Appenders write under a mutex held only for the `pwrite`; under `always` each then
//! waits until an `fdatasync` covers its batch. Whoever finds no sync running becomes the
//! syncer: it notes the log end, syncs *without* holding the append lock (so other
//! appenders keep writing into the page cache meanwhile), publishes the new durable
//! offset and wakes everyone. Appenders that arrived during that sync are covered by the
//! next one, so N concurrent appenders cost about two syncs, not N.
//!
//! Lock order: `state` before `sync`; never the other way round.
//!
//! Metrics (through the `metrics` facade; handles taken once, at open): every sync that
//! covers files records its duration (`wharf_log_sync_duration_seconds`), the bytes of
//! the active segment it made durable (`wharf_log_sync_bytes`) and the batches it
//! covered (`wharf_log_sync_batches`), one series for all partitions.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::log::{CheckedBatch, SyncTarget};
use crate::{
    AppendInfo, FlushPolicy, Log, LogConfig, LogError, ReadPlan, ReadResult, RecoveryReport,
    Result, RetentionReport,
};

/// An fdatasync slower than this is logged (at warn).
const SLOW_SYNC: std::time::Duration = std::time::Duration::from_millis(50);

struct SyncState {
    /// Mirror of the log's high watermark and generation, for waiters.
    durable: u64,
    generation: u64,
    syncing: bool,
    failed: Option<String>,
}

/// Thread-safe handle on one partition log, with group commit. See the module docs.
pub struct SharedLog {
    dir: PathBuf,
    state: Mutex<Log>,
    sync: Mutex<SyncState>,
    synced: Condvar,
    appends: AtomicU64,
    syncs: AtomicU64,
    /// Batches written since the last sync target was taken; both under the `state`
    /// lock, so each sync counts exactly the batches it covers.
    unsynced_batches: AtomicU64,
    metrics: SyncMetrics,
}

/// The sync histograms, registered once per log (the same series for every log).
struct SyncMetrics {
    duration: metrics::Histogram,
    bytes: metrics::Histogram,
    batches: metrics::Histogram,
}

impl SyncMetrics {
    fn new() -> SyncMetrics {
        SyncMetrics {
            duration: metrics::histogram!("wharf_log_sync_duration_seconds"),
            bytes: metrics::histogram!("wharf_log_sync_bytes"),
            batches: metrics::histogram!("wharf_log_sync_batches"),
        }
    }
}

/// What an admission check (see [`SharedLog::append_with`]) decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Store the batches.
    Append,
    /// The batches are already stored at these offsets (a retried send): write nothing.
    Duplicate { base_offset: u64, last_offset: u64 },
}

/// What [`SharedLog::append_with`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendOutcome {
    /// Where the batches are. For a duplicate, `bytes` is 0.
    pub info: AppendInfo,
    /// The admission check found them already stored; nothing was written.
    pub duplicate: bool,
}

/// Error of [`SharedLog::append_with`].
#[derive(Debug, thiserror::Error)]
pub enum AppendWithError<E> {
    #[error(transparent)]
    Log(#[from] LogError),
    /// The admission check refused the batches; nothing was written.
    #[error("append refused")]
    Rejected(E),
}

/// What an append deferred by [`SharedLog::append_deferred`] waits for to be durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Durability {
    end: u64,
    generation: u64,
}

/// Counters of one log since it was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LogStats {
    /// Successful `append` calls.
    pub appends: u64,
    /// fdatasync rounds run by group commit or `sync` (each covers every dirty segment).
    pub syncs: u64,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl SharedLog {
    /// Opens (creating if needed) the log in `dir`, recovering its tail.
    pub fn open(dir: impl Into<PathBuf>, config: LogConfig) -> Result<SharedLog> {
        let dir = dir.into();
        let log = Log::open(dir.clone(), config)?;
        let sync = SyncState {
            durable: log.high_watermark(),
            generation: log.generation(),
            syncing: false,
            failed: None,
        };
        Ok(SharedLog {
            dir,
            state: Mutex::new(log),
            sync: Mutex::new(sync),
            synced: Condvar::new(),
            appends: AtomicU64::new(0),
            syncs: AtomicU64::new(0),
            unsynced_batches: AtomicU64::new(0),
            metrics: SyncMetrics::new(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn log(&self) -> MutexGuard<'_, Log> {
        // A panic while holding the lock leaves the log as consistent as any crash would;
        // keep serving rather than cascade the panic.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn sync_state(&self) -> MutexGuard<'_, SyncState> {
        self.sync.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Publishes the log's high watermark to waiters. Called with the log lock held.
    fn publish(&self, log: &Log) {
        let mut st = self.sync_state();
        st.durable = log.high_watermark();
        st.generation = log.generation();
        drop(st);
        self.synced.notify_all();
    }

    /// Validates one or more concatenated RecordBatch v2 batches, assigns their base
    /// offsets in place, appends them and, under `FlushPolicy::Always`, returns only once
    /// an fdatasync covers them.
    pub fn append(&self, batches: &mut [u8]) -> Result<AppendInfo> {
        self.append_at(batches, now_ms())
    }

    /// As `append`, with the wall clock given (milliseconds since the epoch).
    pub fn append_at(&self, batches: &mut [u8], now_ms: i64) -> Result<AppendInfo> {
        let admit =
            |_: &[CheckedBatch], _: u64| Ok::<_, std::convert::Infallible>(Admission::Append);
        match self.append_with(batches, now_ms, admit, |_, _| {}) {
            Ok(outcome) => Ok(outcome.info),
            Err(AppendWithError::Log(e)) => Err(e),
            Err(AppendWithError::Rejected(never)) => match never {},
        }
    }

    /// Appends like [`SharedLog::append_at`], with two hooks run under the log's lock, so
    /// that what they see and record is atomic with offset assignment (the broker's
    /// idempotent-producer check uses them):
    ///
    /// - `admit(batches, next_offset)` runs after the batches passed validation and
    ///   before anything is written; `next_offset` is the offset the first batch will
    ///   get. It may reject the append (`Err`), let it go ahead, or answer that the
    ///   batches are a retried send already stored ([`Admission::Duplicate`]): nothing is
    ///   written and the outcome carries the stored offsets.
    /// - `appended(batches, info)` runs after a successful write, still under the lock.
    ///
    /// Under `always`, a duplicate too is answered only once its original is durable.
    pub fn append_with<E, A, C>(
        &self,
        batches: &mut [u8],
        now_ms: i64,
        admit: A,
        appended: C,
    ) -> Result<AppendOutcome, AppendWithError<E>>
    where
        A: FnOnce(&[CheckedBatch], u64) -> Result<Admission, E>,
        C: FnOnce(&[CheckedBatch], &AppendInfo),
    {
        self.append_staged(batches, now_ms, admit, appended, |_| {})
    }

    /// [`SharedLog::append_with`] with a third hook, `written(outcome)`, run once the
    /// batches have their offsets and are written (or found duplicate), after the log's
    /// lock is released and before the wait for durability. A caller that serves
    /// requests in order (a Kafka connection with several produce requests in flight)
    /// moves on to the next request from there, so consecutive requests share one
    /// fdatasync instead of each waiting for its own: the order of the writes is the
    /// order of the requests, and each is still answered only once durable.
    pub fn append_staged<E, A, C, W>(
        &self,
        batches: &mut [u8],
        now_ms: i64,
        admit: A,
        appended: C,
        written: W,
    ) -> Result<AppendOutcome, AppendWithError<E>>
    where
        A: FnOnce(&[CheckedBatch], u64) -> Result<Admission, E>,
        C: FnOnce(&[CheckedBatch], &AppendInfo),
        W: FnOnce(&AppendOutcome),
    {
        let (outcome, durability) = self.append_deferred(batches, now_ms, admit, appended)?;
        written(&outcome);
        if let Some(d) = durability {
            self.wait_durable_for(d).map_err(AppendWithError::Log)?;
        }
        Ok(outcome)
    }

    /// The first half of [`SharedLog::append_with`]: validates, admits and writes the
    /// batches, and returns at once with what [`SharedLog::wait_durable_for`] must wait
    /// for under `always` (`None` under the other policies). An async caller writes in
    /// place (a `pwrite` into the page cache) and leaves only the wait to a thread that
    /// may block.
    pub fn append_deferred<E, A, C>(
        &self,
        batches: &mut [u8],
        now_ms: i64,
        admit: A,
        appended: C,
    ) -> Result<(AppendOutcome, Option<Durability>), AppendWithError<E>>
    where
        A: FnOnce(&[CheckedBatch], u64) -> Result<Admission, E>,
        C: FnOnce(&[CheckedBatch], &AppendInfo),
    {
        // CRC-32C over the whole request runs before the lock, so concurrent appenders
        // check their batches in parallel.
        let checked = crate::log::check_batches(batches).map_err(AppendWithError::Log)?;
        let (outcome, policy, generation) = {
            let mut log = self.log();
            let next = log.log_end_offset();
            let outcome = match admit(&checked, next).map_err(AppendWithError::Rejected)? {
                Admission::Append => {
                    let hw_before = log.high_watermark();
                    let info = log
                        .append_checked(batches, &checked, now_ms)
                        .map_err(AppendWithError::Log)?;
                    if log.high_watermark() != hw_before {
                        // A roll (or a non-`always` policy) moved the high watermark.
                        self.publish(&log);
                    }
                    appended(&checked, &info);
                    self.unsynced_batches
                        .fetch_add(u64::from(info.batches), Ordering::Relaxed);
                    AppendOutcome {
                        info,
                        duplicate: false,
                    }
                }
                Admission::Duplicate {
                    base_offset,
                    last_offset,
                } => AppendOutcome {
                    info: AppendInfo {
                        base_offset,
                        last_offset,
                        batches: checked.len() as u32,
                        records: checked.iter().map(|b| b.header.record_count as u64).sum(),
                        max_timestamp: checked
                            .iter()
                            .map(|b| b.header.max_timestamp)
                            .max()
                            .unwrap_or(-1),
                        bytes: 0,
                    },
                    duplicate: true,
                },
            };
            (outcome, log.config().flush, log.generation())
        };
        if !outcome.duplicate {
            self.appends.fetch_add(1, Ordering::Relaxed);
        }
        let durability = (policy == FlushPolicy::Always).then_some(Durability {
            end: outcome.info.last_offset + 1,
            generation,
        });
        Ok((outcome, durability))
    }

    /// Blocks until the append that returned `d` is durable (see
    /// [`SharedLog::append_deferred`]), taking a turn as the syncer if none is running.
    pub fn wait_durable_for(&self, d: Durability) -> Result<()> {
        self.wait_durable(d.end, d.generation)
    }

    /// Whether an append of `incoming` bytes now would first roll the active segment
    /// (which syncs the sealed one and creates files: slow, for a blocking thread).
    pub fn roll_due(&self, incoming: u64, now_ms: i64) -> bool {
        self.log().roll_due(incoming, 0, now_ms)
    }

    /// Blocks until the high watermark reaches `end`, taking a turn as the syncer when no
    /// sync is running.
    fn wait_durable(&self, end: u64, generation: u64) -> Result<()> {
        let mut st = self.sync_state();
        loop {
            if let Some(reason) = &st.failed {
                return Err(LogError::Poisoned {
                    dir: self.dir.clone(),
                    reason: reason.clone(),
                });
            }
            if st.generation != generation {
                return Err(LogError::Io {
                    op: "append",
                    path: self.dir.clone(),
                    source: std::io::Error::other(
                        "the log was truncated before the batch was synced",
                    ),
                });
            }
            if st.durable >= end {
                return Ok(());
            }
            if st.syncing {
                st = self.synced.wait(st).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            st.syncing = true;
            drop(st);
            let outcome = self.sync_once();
            st = self.sync_state();
            st.syncing = false;
            if let Err(e) = &outcome {
                st.failed.get_or_insert_with(|| e.to_string());
            }
            drop(st);
            self.synced.notify_all();
            st = self.sync_state();
        }
    }

    /// One fdatasync of everything written so far, outside the append lock.
    fn sync_once(&self) -> Result<()> {
        let (target, batches) = {
            let log = self.log();
            (
                log.sync_target(),
                self.unsynced_batches.swap(0, Ordering::Relaxed),
            )
        };
        let SyncTarget {
            files,
            offset,
            pos,
            generation,
        } = target;
        if !files.is_empty() {
            self.syncs.fetch_add(1, Ordering::Relaxed);
        }
        let started = std::time::Instant::now();
        for (file, path) in &files {
            if let Err(source) = file.sync_data() {
                let err = LogError::Io {
                    op: "fdatasync",
                    path: path.clone(),
                    source,
                };
                // After a failed fdatasync the kernel may have dropped the dirty pages:
                // what is on disk is unknown, so no further write may be acknowledged.
                self.log().poison(err.to_string());
                return Err(err);
            }
        }
        let elapsed = started.elapsed();
        if elapsed >= SLOW_SYNC {
            // Every acknowledgement waiting on this sync waited this long: worth a line.
            tracing::warn!(
                dir = %self.dir.display(),
                files = files.len(),
                elapsed_ms = elapsed.as_millis() as u64,
                "slow fdatasync"
            );
        }
        let mut log = self.log();
        let synced_bytes = log.mark_durable(offset, pos, generation, files.len());
        if !files.is_empty() {
            self.metrics.duration.record(elapsed.as_secs_f64());
            self.metrics.bytes.record(synced_bytes as f64);
            self.metrics.batches.record(batches as f64);
        }
        self.publish(&log);
        log.preallocate_ahead(synced_bytes);
        Ok(())
    }

    /// Whole stored batches from the one containing `offset`, at most `max_bytes` in all
    /// but always at least one batch when any is readable; never past the high watermark.
    /// The file reads happen outside the lock.
    pub fn read(&self, offset: u64, max_bytes: usize) -> Result<ReadResult> {
        let plan = self.log().plan_read(offset, max_bytes)?;
        plan.execute()
    }

    /// Plans a [`SharedLog::read`] under the lock, to execute later without it (and,
    /// when [`ReadPlan::is_hot`], without leaving an async task's thread).
    pub fn plan_read(&self, offset: u64, max_bytes: usize) -> Result<ReadPlan> {
        self.log().plan_read(offset, max_bytes)
    }

    /// The first offset of the first batch whose max timestamp is at or after `ts`.
    pub fn offset_for_timestamp(&self, ts: i64) -> Result<Option<u64>> {
        self.log().offset_for_timestamp(ts)
    }

    pub fn log_start_offset(&self) -> u64 {
        self.log().log_start_offset()
    }

    pub fn log_end_offset(&self) -> u64 {
        self.log().log_end_offset()
    }

    pub fn high_watermark(&self) -> u64 {
        self.log().high_watermark()
    }

    /// Log start, log end and high watermark, read together under one lock, so they
    /// describe the same moment.
    pub fn bounds(&self) -> (u64, u64, u64) {
        let log = self.log();
        (
            log.log_start_offset(),
            log.log_end_offset(),
            log.high_watermark(),
        )
    }

    pub fn size_bytes(&self) -> u64 {
        self.log().size_bytes()
    }

    /// See [`Log::bytes_from`].
    pub fn bytes_from(&self, offset: u64) -> u64 {
        self.log().bytes_from(offset)
    }

    pub fn roll(&self) -> Result<()> {
        let mut log = self.log();
        log.roll()?;
        self.publish(&log);
        Ok(())
    }

    pub fn apply_retention(&self, now_ms: i64) -> Result<RetentionReport> {
        let mut log = self.log();
        let r = log.apply_retention(now_ms)?;
        self.publish(&log);
        Ok(r)
    }

    pub fn truncate_suffix(&self, offset: u64) -> Result<()> {
        let mut log = self.log();
        log.truncate_suffix(offset)?;
        self.publish(&log);
        Ok(())
    }

    pub fn purge_prefix(&self, offset: u64) -> Result<()> {
        let mut log = self.log();
        log.purge_prefix(offset)?;
        self.publish(&log);
        Ok(())
    }

    /// Makes everything appended so far durable (used by the interval flusher and
    /// shutdown). Runs outside the append lock.
    pub fn sync(&self) -> Result<()> {
        {
            let st = self.sync_state();
            if let Some(reason) = &st.failed {
                return Err(LogError::Poisoned {
                    dir: self.dir.clone(),
                    reason: reason.clone(),
                });
            }
        }
        let r = self.sync_once();
        if let Err(e) = &r {
            self.sync_state()
                .failed
                .get_or_insert_with(|| e.to_string());
        }
        r
    }

    pub fn config(&self) -> LogConfig {
        self.log().config().clone()
    }

    pub fn set_config(&self, config: LogConfig) {
        self.log().set_config(config);
    }

    /// Syncs, writes the indexes and the clean-shutdown marker; later writes fail with
    /// `Closed`.
    pub fn close(&self) -> Result<()> {
        let mut log = self.log();
        log.close()?;
        self.publish(&log);
        Ok(())
    }

    pub fn stats(&self) -> LogStats {
        LogStats {
            appends: self.appends.load(Ordering::Relaxed),
            syncs: self.syncs.load(Ordering::Relaxed),
        }
    }

    pub fn recovery_report(&self) -> RecoveryReport {
        self.log().recovery_report().clone()
    }
}
