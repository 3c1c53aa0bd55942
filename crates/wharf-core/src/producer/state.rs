//! Per-partition state of idempotent producers, as a pure state machine: no I/O, no
//! locks. The partition runs [`ProducerStates::admit`] and [`ProducerStates::apply`]
//! inside the log's append hooks (see `wharf_log::SharedLog::append_with`), so the check,
//! the offset assignment and the update are one atomic step.
//!
//! Rules (Kafka's `ProducerAppendInfo`, KIP-98, with KIP-360's handling of unknown
//! producers), for a batch whose producer id is not -1:
//!
//! | state of the producer id         | batch                                   | answer                     |
//! |----------------------------------|-----------------------------------------|----------------------------|
//! | unknown                          | any epoch, any sequence                 | append                     |
//! | epoch E                          | epoch < E                               | `Fenced`                   |
//! | epoch E                          | epoch > E, first sequence 0             | append, window reset       |
//! | epoch E                          | epoch > E, first sequence != 0          | `OutOfOrder`               |
//! | epoch E, window of last 5 batches| epoch E, same first and last sequence as one in the window | duplicate: its offsets |
//! | epoch E, last sequence L         | epoch E, first sequence L + 1 (wrapping to 0 after `i32::MAX`) | append      |
//! | epoch E                          | anything else                           | `OutOfOrder`               |
//!
//! An unknown producer is accepted at any sequence because that is what Kafka brokers
//! do since 2.5 (KIP-360): a producer whose batches were all removed by retention comes
//! back with its old sequence, and refusing it (`UNKNOWN_PRODUCER_ID`) makes the client
//! reset and re-send, which reintroduces the duplicates idempotence exists to prevent.
//!
//! Batches with producer id -1 are not idempotent and bypass every check.

use std::collections::{HashMap, VecDeque};

use wharf_log::batch::BatchHeader;
use wharf_log::CheckedBatch;

/// How many recent batches per producer are kept for duplicate detection. Kafka keeps 5,
/// and its clients never have more than 5 requests in flight per connection with
/// idempotence enabled, so every retry they can send is inside the window.
pub const BATCHES_TO_RETAIN: usize = 5;

/// Where one stored batch of a producer went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchMeta {
    pub first_seq: i32,
    pub last_seq: i32,
    pub base_offset: u64,
    pub last_offset: u64,
}

/// What a partition knows about one producer id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerEntry {
    pub epoch: i16,
    /// The last [`BATCHES_TO_RETAIN`] batches of `epoch`, oldest first; never empty.
    pub batches: VecDeque<BatchMeta>,
    /// Broker wall-clock time (ms since the epoch) of the producer's last append; for
    /// batches replayed from the log, the time of the replay. Drives expiration. The
    /// batch's own timestamp is not used: a client sets it, and old timestamps (a
    /// replay of old data) would expire a live producer at once.
    pub last_append_ms: i64,
}

impl ProducerEntry {
    fn last(&self) -> Option<&BatchMeta> {
        self.batches.back()
    }

    fn find_duplicate(&self, epoch: i16, first_seq: i32, last_seq: i32) -> Option<BatchMeta> {
        if epoch != self.epoch {
            return None;
        }
        self.batches
            .iter()
            .find(|b| b.first_seq == first_seq && b.last_seq == last_seq)
            .copied()
    }

    fn push(&mut self, meta: BatchMeta) {
        self.batches.push_back(meta);
        while self.batches.len() > BATCHES_TO_RETAIN {
            self.batches.pop_front();
        }
    }
}

/// Why a batch of an idempotent producer was refused. Nothing of the request is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SequenceError {
    /// The batch's epoch is older than the producer's current one: a zombie.
    Fenced {
        producer_id: i64,
        current_epoch: i16,
        epoch: i16,
    },
    /// The batch does not continue the producer's sequence. `expected` is the sequence
    /// that would have been accepted.
    OutOfOrder {
        producer_id: i64,
        epoch: i16,
        expected: i32,
        received: i32,
    },
    /// A transactional or control batch: Wharf has no transactions.
    Transactional { producer_id: i64 },
}

/// What [`ProducerStates::admit`] decides about a whole request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Append,
    /// Every batch is a retry of one already stored, at these offsets.
    Duplicate {
        base_offset: u64,
        last_offset: u64,
    },
}

/// The last sequence of a batch: `first + delta`, wrapping to 0 after `i32::MAX` as
/// Kafka producers number them.
pub fn last_sequence(first: i32, last_offset_delta: i32) -> i32 {
    let v = (i64::from(first) + i64::from(last_offset_delta)) % (i64::from(i32::MAX) + 1);
    // In range by construction for non-negative inputs; negative ones are refused earlier.
    i32::try_from(v).unwrap_or(i32::MAX)
}

fn next_sequence(last: i32) -> i32 {
    if last == i32::MAX {
        0
    } else {
        last + 1
    }
}

fn batch_last_offset(base_offset: u64, h: &BatchHeader) -> u64 {
    base_offset + u64::try_from(h.last_offset_delta).unwrap_or(0)
}

/// Every idempotent producer's state on one partition, and the log offset it covers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProducerStates {
    producers: HashMap<i64, ProducerEntry>,
    /// The state reflects every batch below this offset (the log end when it is live).
    end_offset: u64,
    /// Base offset and CRC-32C of the batch that ends at `end_offset`, when known: a
    /// snapshot is trusted only if the log still holds that very batch there.
    last_batch: Option<(u64, u32)>,
}

impl ProducerStates {
    /// An empty state covering everything below `end_offset` (nothing known).
    pub fn new(end_offset: u64) -> ProducerStates {
        ProducerStates {
            producers: HashMap::new(),
            end_offset,
            last_batch: None,
        }
    }

    pub(crate) fn from_parts(
        producers: HashMap<i64, ProducerEntry>,
        end_offset: u64,
        last_batch: Option<(u64, u32)>,
    ) -> ProducerStates {
        ProducerStates {
            producers,
            end_offset,
            last_batch,
        }
    }

    /// Base offset and CRC-32C of the last batch the state reflects, if known.
    pub fn last_batch(&self) -> Option<(u64, u32)> {
        self.last_batch
    }

    /// The offset up to which (exclusive) the state reflects the log.
    pub fn end_offset(&self) -> u64 {
        self.end_offset
    }

    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    pub fn get(&self, producer_id: i64) -> Option<&ProducerEntry> {
        self.producers.get(&producer_id)
    }

    /// Entries sorted by producer id (for snapshots: deterministic bytes).
    pub fn entries(&self) -> Vec<(i64, &ProducerEntry)> {
        let mut v: Vec<_> = self.producers.iter().map(|(k, e)| (*k, e)).collect();
        v.sort_unstable_by_key(|(k, _)| *k);
        v
    }

    /// Checks a request's batches, which would be stored from `next_offset` on, against
    /// the state, without changing it. All batches are checked before any is stored;
    /// later batches are checked against the state the earlier ones would leave.
    ///
    /// A request is a duplicate only if every idempotent batch in it is one (a request
    /// mixing retried and new batches is refused as out of order; Kafka clients send one
    /// batch per partition per request, so they never build one).
    pub fn admit(
        &self,
        batches: &[CheckedBatch],
        next_offset: u64,
    ) -> Result<Verdict, SequenceError> {
        // Producers the request advances are copied here, so that its later batches are
        // checked against the earlier ones. A single-batch request (what Kafka clients
        // send) needs no copy.
        let more_than_one = batches.len() > 1;
        let mut scratch: HashMap<i64, ProducerEntry> = HashMap::new();
        let mut offset = next_offset;
        let mut duplicates: Vec<BatchMeta> = Vec::new();
        let mut fresh = 0usize;
        let mut first_duplicate: Option<BatchHeader> = None;
        for b in batches {
            let h = &b.header;
            let base = offset;
            let last_offset = batch_last_offset(base, h);
            offset = last_offset + 1;
            if h.is_transactional() || h.is_control() {
                return Err(SequenceError::Transactional {
                    producer_id: h.producer_id,
                });
            }
            if h.producer_id < 0 {
                fresh += 1;
                continue;
            }
            if h.base_sequence < 0 {
                let expected = scratch
                    .get(&h.producer_id)
                    .or_else(|| self.producers.get(&h.producer_id))
                    .and_then(ProducerEntry::last)
                    .map_or(0, |m| next_sequence(m.last_seq));
                return Err(SequenceError::OutOfOrder {
                    producer_id: h.producer_id,
                    epoch: h.producer_epoch,
                    expected,
                    received: h.base_sequence,
                });
            }
            let last_seq = last_sequence(h.base_sequence, h.last_offset_delta);
            let current = scratch
                .get(&h.producer_id)
                .or_else(|| self.producers.get(&h.producer_id));
            if let Some(dup) =
                current.and_then(|e| e.find_duplicate(h.producer_epoch, h.base_sequence, last_seq))
            {
                duplicates.push(dup);
                first_duplicate.get_or_insert(*h);
                continue;
            }
            if let Some(e) = current {
                check_sequence(h, e)?;
            }
            fresh += 1;
            if !more_than_one {
                continue;
            }
            let meta = BatchMeta {
                first_seq: h.base_sequence,
                last_seq,
                base_offset: base,
                last_offset,
            };
            let entry = scratch.entry(h.producer_id).or_insert_with(|| {
                self.producers
                    .get(&h.producer_id)
                    .cloned()
                    .unwrap_or_else(|| ProducerEntry {
                        epoch: h.producer_epoch,
                        batches: VecDeque::new(),
                        last_append_ms: 0,
                    })
            });
            if entry.epoch != h.producer_epoch {
                entry.epoch = h.producer_epoch;
                entry.batches.clear();
            }
            entry.push(meta);
        }
        match (duplicates.first(), duplicates.last()) {
            (Some(first), Some(last)) if fresh == 0 => Ok(Verdict::Duplicate {
                base_offset: first.base_offset,
                last_offset: last.last_offset,
            }),
            (Some(_), _) => {
                // Report the first retried batch: it is what broke the request.
                let (producer_id, epoch, received) = first_duplicate.map_or((-1, -1, -1), |h| {
                    (h.producer_id, h.producer_epoch, h.base_sequence)
                });
                let expected = scratch
                    .get(&producer_id)
                    .or_else(|| self.producers.get(&producer_id))
                    .and_then(ProducerEntry::last)
                    .map_or(0, |m| next_sequence(m.last_seq));
                Err(SequenceError::OutOfOrder {
                    producer_id,
                    epoch,
                    expected,
                    received,
                })
            }
            _ => Ok(Verdict::Append),
        }
    }

    /// Records a stored batch whose first offset is `base_offset`, without checks (it
    /// was admitted, or it is being replayed from the log). Also advances the offset the
    /// state covers, for batches of every producer, idempotent or not.
    /// `now_ms` is the broker's wall clock.
    pub fn apply(&mut self, h: &BatchHeader, base_offset: u64, now_ms: i64) {
        let last_offset = batch_last_offset(base_offset, h);
        if last_offset + 1 >= self.end_offset {
            self.end_offset = last_offset + 1;
            self.last_batch = Some((base_offset, h.crc));
        }
        if h.producer_id < 0 || h.base_sequence < 0 {
            return;
        }
        let meta = BatchMeta {
            first_seq: h.base_sequence,
            last_seq: last_sequence(h.base_sequence, h.last_offset_delta),
            base_offset,
            last_offset,
        };
        let entry = self
            .producers
            .entry(h.producer_id)
            .or_insert_with(|| ProducerEntry {
                epoch: h.producer_epoch,
                batches: VecDeque::with_capacity(BATCHES_TO_RETAIN),
                last_append_ms: now_ms,
            });
        if entry.epoch != h.producer_epoch {
            entry.epoch = h.producer_epoch;
            entry.batches.clear();
        }
        entry.last_append_ms = now_ms;
        entry.push(meta);
    }

    /// Records the batches of a request stored from `base_offset` on, in order.
    pub fn apply_all(&mut self, batches: &[CheckedBatch], base_offset: u64, now_ms: i64) {
        let mut offset = base_offset;
        for b in batches {
            self.apply(&b.header, offset, now_ms);
            offset = batch_last_offset(offset, &b.header) + 1;
        }
    }

    /// Moves the covered end to `offset` if it is below: batches there were deleted
    /// (retention) and are known to belong to no producer still tracked.
    pub fn advance_to(&mut self, offset: u64) {
        if offset > self.end_offset {
            self.end_offset = offset;
            self.last_batch = None;
        }
    }

    /// Forgets producers that appended nothing since `cutoff_ms` (Kafka's
    /// `producer.id.expiration.ms`). Such a producer is then unknown and accepted at any
    /// sequence, so a retry it sends after that long is stored again.
    pub fn expire(&mut self, cutoff_ms: i64) -> usize {
        let before = self.producers.len();
        self.producers.retain(|_, e| e.last_append_ms >= cutoff_ms);
        before - self.producers.len()
    }

    /// Forgets producers whose last batch lies wholly below `log_start_offset` (deleted
    /// by retention): rebuilding from the log could not know them either. Such a producer
    /// is then unknown and accepted at any sequence (see the module docs).
    pub fn prune_below(&mut self, log_start_offset: u64) -> usize {
        let before = self.producers.len();
        self.producers.retain(|_, e| {
            e.last()
                .is_some_and(|last| last.last_offset >= log_start_offset)
        });
        before - self.producers.len()
    }
}

fn check_sequence(h: &BatchHeader, e: &ProducerEntry) -> Result<(), SequenceError> {
    if h.producer_epoch < e.epoch {
        return Err(SequenceError::Fenced {
            producer_id: h.producer_id,
            current_epoch: e.epoch,
            epoch: h.producer_epoch,
        });
    }
    if h.producer_epoch > e.epoch {
        if h.base_sequence != 0 {
            return Err(SequenceError::OutOfOrder {
                producer_id: h.producer_id,
                epoch: h.producer_epoch,
                expected: 0,
                received: h.base_sequence,
            });
        }
        return Ok(());
    }
    let Some(last) = e.last() else {
        return Ok(());
    };
    let expected = next_sequence(last.last_seq);
    if h.base_sequence != expected {
        return Err(SequenceError::OutOfOrder {
            producer_id: h.producer_id,
            epoch: h.producer_epoch,
            expected,
            received: h.base_sequence,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use wharf_log::batch::{Record, RecordBatchBuilder};

    fn checked(id: i64, epoch: i16, seq: i32, records: usize) -> Vec<CheckedBatch> {
        let mut b = RecordBatchBuilder::new().producer(id, epoch, seq);
        for _ in 0..records {
            b.push(&Record {
                value: Some(b"v"),
                timestamp: 1,
                ..Record::default()
            });
        }
        wharf_log::check_batches(&b.build()).unwrap()
    }

    fn store(s: &mut ProducerStates, batches: &[CheckedBatch]) -> Verdict {
        let v = s.admit(batches, s.end_offset()).unwrap();
        if v == Verdict::Append {
            let end = s.end_offset();
            s.apply_all(batches, end, 0);
        }
        v
    }

    /// Random producers sending in-order batches, retries (recent and old), gaps and
    /// epoch bumps. Checks: a duplicate verdict always names offsets holding that very
    /// batch; every stored idempotent batch continued its producer's sequence; and the
    /// live state equals the state rebuilt from the stored batches alone.
    #[test]
    fn verdicts_agree_with_the_stored_batches() {
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        let mut live = ProducerStates::new(0);
        // (producer, epoch, first seq, records, base offset) of every stored batch.
        let mut log: Vec<(i64, i16, i32, usize, u64)> = Vec::new();
        // What each producer would send next: (epoch, seq).
        let mut cursor = [(0i16, 0i32); 4];
        for _ in 0..5_000 {
            let p = next(4) as usize;
            let (mut epoch, mut seq) = cursor[p];
            let records = 1 + next(3) as usize;
            match next(10) {
                0 => {
                    // Retry of a random earlier batch of this producer.
                    let mine: Vec<_> = log.iter().filter(|b| b.0 == p as i64).collect();
                    if let Some(b) = mine.get(next(mine.len().max(1) as u64) as usize) {
                        (epoch, seq) = (b.1, b.2);
                        let c = checked(p as i64, epoch, seq, b.3);
                        match live.admit(&c, live.end_offset()) {
                            Ok(Verdict::Duplicate { base_offset, .. }) => {
                                let stored = log.iter().find(|s| s.4 == base_offset).unwrap();
                                assert_eq!((stored.0, stored.1, stored.2), (p as i64, epoch, seq));
                            }
                            Ok(Verdict::Append) => panic!("a stored batch accepted again"),
                            Err(_) => {}
                        }
                    }
                    continue;
                }
                1 => seq += 1 + next(3) as i32, // a gap
                2 => {
                    epoch += 1;
                    seq = next(2) as i32; // a new epoch, at 0 or not
                }
                _ => {}
            }
            let c = checked(p as i64, epoch, seq, records);
            let base = live.end_offset();
            if let Ok(v) = live.admit(&c, base) {
                assert_eq!(v, Verdict::Append);
                live.apply_all(&c, base, 0);
                log.push((p as i64, epoch, seq, records, base));
                cursor[p] = (epoch, last_sequence(seq, records as i32 - 1) + 1);
            }
        }
        let mut last: HashMap<i64, (i16, i32)> = HashMap::new();
        for &(p, epoch, seq, records, _) in &log {
            match last.get(&p) {
                None => {}
                Some(&(e, _)) if epoch > e => assert_eq!(seq, 0, "new epoch of {p}"),
                Some(&(e, l)) => {
                    assert_eq!(epoch, e, "{p} went back an epoch");
                    assert_eq!(seq, next_sequence(l), "{p} skipped");
                }
            }
            last.insert(p, (epoch, last_sequence(seq, records as i32 - 1)));
        }
        let mut rebuilt = ProducerStates::new(0);
        for &(p, epoch, seq, records, base) in &log {
            rebuilt.apply_all(&checked(p, epoch, seq, records), base, 0);
        }
        assert_eq!(rebuilt, live);
        assert!(log.len() > 1_000, "too few batches stored: {}", log.len());
    }

    #[test]
    fn sequence_wraps_to_zero_after_i32_max() {
        assert_eq!(last_sequence(i32::MAX, 0), i32::MAX);
        assert_eq!(last_sequence(i32::MAX - 1, 2), 0);
        assert_eq!(last_sequence(i32::MAX, 3), 2);
        let mut s = ProducerStates::new(0);
        assert_eq!(
            store(&mut s, &checked(1, 0, i32::MAX - 1, 3)),
            Verdict::Append
        );
        assert_eq!(store(&mut s, &checked(1, 0, 1, 1)), Verdict::Append);
    }

    #[test]
    fn a_new_epoch_must_start_at_zero_and_clears_the_window() {
        let mut s = ProducerStates::new(0);
        store(&mut s, &checked(7, 0, 0, 3));
        assert!(matches!(
            s.admit(&checked(7, 1, 3, 1), 3),
            Err(SequenceError::OutOfOrder { expected: 0, .. })
        ));
        assert_eq!(store(&mut s, &checked(7, 1, 0, 1)), Verdict::Append);
        assert_eq!(s.get(7).unwrap().batches.len(), 1);
        assert!(matches!(
            s.admit(&checked(7, 0, 0, 3), 4),
            Err(SequenceError::Fenced {
                current_epoch: 1,
                epoch: 0,
                ..
            })
        ));
    }

    #[test]
    fn batches_of_one_request_are_checked_in_order() {
        let s = ProducerStates::new(10);
        let mut two = checked(3, 0, 0, 2);
        let second = checked(3, 0, 2, 1);
        two.push(CheckedBatch {
            position: 100,
            ..second[0]
        });
        assert_eq!(s.admit(&two, 10), Ok(Verdict::Append));
        let gap = checked(3, 0, 5, 1);
        let mut bad = checked(3, 0, 0, 2);
        bad.push(gap[0]);
        assert!(matches!(
            s.admit(&bad, 10),
            Err(SequenceError::OutOfOrder {
                expected: 2,
                received: 5,
                ..
            })
        ));
    }
}
