//! Idempotent producers (Kafka KIP-98, with KIP-360's handling of unknown producers):
//! producer ids (`ids.rs`), the per-partition sequence state (`state.rs`, a pure state
//! machine: [`ProducerStates`]) and its persistence (`snapshot.rs`: snapshots plus a
//! replay of the log's batch headers).
//!
//! The check and the update run inside the log's append hooks
//! (`wharf_log::SharedLog::append_with`), under the log's lock and before the fsync
//! wait, so a sequence is checked and recorded atomically with offset assignment while
//! group commit still batches the fsyncs of many producers.
//!
//! Lock order: the log's lock, then [`PartitionProducers`]' state mutex. The state
//! mutex is never held while taking the log's lock or doing I/O.

mod ids;
mod snapshot;
mod state;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use wharf_log::{Admission, AppendOutcome, AppendWithError, Durability, SharedLog};

pub(crate) use ids::ProducerIdAllocator;
pub use ids::{ID_BLOCK, PRODUCER_IDS_FILE};
pub use snapshot::SNAPSHOT_SUFFIX;
pub use state::{
    BatchMeta, ProducerEntry, ProducerStates, SequenceError, Verdict, BATCHES_TO_RETAIN,
};

use crate::error::Result;

/// A producer id with its epoch, as `InitProducerId` answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProducerIdAndEpoch {
    pub producer_id: i64,
    pub producer_epoch: i16,
}

/// Epochs at or above this are not handed out by a bump; the producer gets a new id
/// instead (Kafka does the same, keeping `i16::MAX` free).
pub const MAX_BUMPED_EPOCH: i16 = i16::MAX - 1;

/// One partition's producer state, with its snapshot bookkeeping.
pub(crate) struct PartitionProducers {
    states: Mutex<ProducerStates>,
    /// Bytes appended since the last snapshot.
    since_snapshot: AtomicU64,
    snapshot_every: u64,
    /// Serializes snapshot writes of this partition.
    snapshotting: Mutex<()>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Updates of the state are applied batch by batch; a panic mid-way leaves at worst a
    // window missing a batch, which makes a retry out of order rather than duplicated.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl PartitionProducers {
    /// Loads the latest usable snapshot of `log`'s folder and replays the log after it.
    pub(crate) fn open(
        log: &SharedLog,
        topic: &str,
        partition: u32,
        snapshot_every: u64,
        now_ms: i64,
    ) -> Result<PartitionProducers> {
        let states = snapshot::load(log, topic, partition, now_ms)?;
        Ok(PartitionProducers {
            states: Mutex::new(states),
            since_snapshot: AtomicU64::new(0),
            snapshot_every: snapshot_every.max(1),
            snapshotting: Mutex::new(()),
        })
    }

    /// Appends through the sequence check; see the module docs. `written` runs once the
    /// batches are written (or found duplicate), before the wait for durability (see
    /// `SharedLog::append_staged`).
    pub(crate) fn append(
        &self,
        log: &SharedLog,
        batches: &mut [u8],
        now_ms: i64,
        written: impl FnOnce(&AppendOutcome),
    ) -> std::result::Result<AppendOutcome, AppendWithError<SequenceError>> {
        let (outcome, durability) = self.append_deferred(log, batches, now_ms)?;
        written(&outcome);
        if let Some(d) = durability {
            log.wait_durable_for(d).map_err(AppendWithError::Log)?;
        }
        Ok(outcome)
    }

    /// [`PartitionProducers::append`] without the wait for durability: what to wait for
    /// (`SharedLog::wait_durable_for`) comes back with the outcome.
    pub(crate) fn append_deferred(
        &self,
        log: &SharedLog,
        batches: &mut [u8],
        now_ms: i64,
    ) -> std::result::Result<(AppendOutcome, Option<Durability>), AppendWithError<SequenceError>>
    {
        let admit = |checked: &[wharf_log::CheckedBatch], next: u64| {
            Ok(match lock(&self.states).admit(checked, next)? {
                Verdict::Append => Admission::Append,
                Verdict::Duplicate {
                    base_offset,
                    last_offset,
                } => Admission::Duplicate {
                    base_offset,
                    last_offset,
                },
            })
        };
        let appended = |checked: &[wharf_log::CheckedBatch], info: &wharf_log::AppendInfo| {
            lock(&self.states).apply_all(checked, info.base_offset, now_ms);
            self.since_snapshot
                .fetch_add(info.bytes as u64, Ordering::Relaxed);
        };
        log.append_deferred(batches, now_ms, admit, appended)
    }

    /// Whether enough was appended since the last snapshot to write another.
    pub(crate) fn snapshot_due(&self) -> bool {
        self.since_snapshot.load(Ordering::Relaxed) >= self.snapshot_every
    }

    /// Writes a snapshot of the current state (after forgetting producers whose batches
    /// retention deleted). With `wait` false, returns at once if one is being written.
    pub(crate) fn snapshot(&self, log: &SharedLog, wait: bool) -> Result<()> {
        let _guard = if wait {
            lock(&self.snapshotting)
        } else {
            match self.snapshotting.try_lock() {
                Ok(g) => g,
                Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) => return Ok(()),
            }
        };
        let log_start = log.log_start_offset();
        let copy = {
            let mut states = lock(&self.states);
            states.prune_below(log_start);
            states.clone()
        };
        self.since_snapshot.store(0, Ordering::Relaxed);
        snapshot::write(log.dir(), &copy)
    }

    /// Forgets producers idle since `cutoff_ms`; returns how many.
    pub(crate) fn expire(&self, cutoff_ms: i64) -> usize {
        lock(&self.states).expire(cutoff_ms)
    }

    /// The state of one producer (for tests and introspection).
    pub(crate) fn entry(&self, producer_id: i64) -> Option<ProducerEntry> {
        lock(&self.states).get(producer_id).cloned()
    }
}
