//! Publisher deduplication: per partition, the idempotency keys of the messages
//! [`crate::Broker::publish`] stored within the topic's `dedup.window.ms`, each with the
//! offset it got and when it was stored.
//!
//! A key is *claimed* before its message is appended: absent, it becomes `Pending` and
//! the claimer owns it; a second claimer (another request, or a repeat inside the same
//! request) finds it `Pending` and waits on a watch channel for the owner's offset. The
//! owner appends, then completes its claims (`Stored`, offset sent to waiters); if the
//! append fails, or the owner's task goes away, the claims are released (entry removed,
//! channel closed) and a waiter claims the key again itself. Owners always append before
//! they wait on anyone, so two requests each owning a key the other repeats cannot
//! deadlock.
//!
//! The map is in memory only. After an open it is rebuilt lazily: the first publish of
//! a keyed message to a partition scans that partition's records from the first batch
//! stored within the window up to the high watermark (on the blocking pool) and collects
//! their [`crate::headers::IDEMPOTENCY_KEY`] headers, so an append that was durable but
//! never answered (a crash in between) still counts as stored. Keyed publishes wait for
//! that scan (a `tokio::sync::OnceCell`); unkeyed ones never do.
//!
//! Memory: one entry per idempotency key stored within the window (the key, at most
//! [`crate::headers::MAX_IDEMPOTENCY_KEY_BYTES`] bytes, plus about 100 bytes of map and
//! queue overhead). Entries older than the window are pruned on every claim, so the map
//! holds at most the keys published in the `dedup.window.ms` before the partition's
//! latest keyed publish (at 1,000 keyed
//! messages a second and the default 5 minutes, 300,000 entries, some 40 MB with 36-byte
//! keys).
//!
//! The `std::sync::Mutex` is held only for map operations, never across an `.await` or
//! I/O.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio::sync::{watch, OnceCell};

/// One partition's dedup state.
#[derive(Default)]
pub(crate) struct Dedup {
    /// Initialized once the map holds what the log had within the window.
    pub(crate) loaded: OnceCell<()>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    entries: HashMap<String, Entry>,
    /// Stored keys in the order they were stored, with the time, for pruning.
    order: VecDeque<(i64, String)>,
}

enum Entry {
    /// A request is appending it: `Some(offset)` arrives once it is stored; the channel
    /// closes without a value if the append failed.
    Pending(watch::Receiver<Option<u64>>),
    Stored {
        offset: u64,
        at_ms: i64,
    },
}

/// What a claim of a key found.
pub(crate) enum Claim {
    /// Stored within the window, at this offset.
    Stored(u64),
    /// Another claimer is appending it: wait for `Some(offset)`, or claim again if the
    /// channel closes.
    Wait(watch::Receiver<Option<u64>>),
    /// Ours: append the message, then complete (or drop) the reservation.
    Owned(Reservation),
}

/// An owned claim on a key.
pub(crate) struct Reservation {
    key: String,
    tx: watch::Sender<Option<u64>>,
}

impl State {
    fn prune(&mut self, cutoff: i64) {
        while let Some((at, _)) = self.order.front() {
            if *at >= cutoff {
                break;
            }
            let Some((at, key)) = self.order.pop_front() else {
                break;
            };
            // The key may have been stored again since (after it expired).
            if matches!(self.entries.get(&key), Some(Entry::Stored { at_ms, .. }) if *at_ms == at) {
                self.entries.remove(&key);
            }
        }
    }

    fn store(&mut self, key: String, offset: u64, at_ms: i64) {
        self.order.push_back((at_ms, key.clone()));
        self.entries.insert(key, Entry::Stored { offset, at_ms });
    }
}

impl Dedup {
    fn state(&self) -> MutexGuard<'_, State> {
        // Every update is a complete map operation; a panic cannot leave half of one.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Claims each key (`None` for a message without one), in order, under one lock.
    pub(crate) fn claim_all<'k>(
        &self,
        keys: impl IntoIterator<Item = Option<&'k str>>,
        window_ms: u64,
        now_ms: i64,
    ) -> Vec<Option<Claim>> {
        let cutoff = now_ms.saturating_sub(i64::try_from(window_ms).unwrap_or(i64::MAX));
        let mut state = self.state();
        state.prune(cutoff);
        keys.into_iter()
            .map(|key| {
                let key = key?;
                Some(match state.entries.get(key) {
                    Some(Entry::Stored { offset, at_ms }) if *at_ms >= cutoff => {
                        Claim::Stored(*offset)
                    }
                    Some(Entry::Pending(rx)) => Claim::Wait(rx.clone()),
                    // Absent, or expired but not pruned yet (clock steps).
                    _ => {
                        let (tx, rx) = watch::channel(None);
                        state.entries.insert(key.to_string(), Entry::Pending(rx));
                        Claim::Owned(Reservation {
                            key: key.to_string(),
                            tx,
                        })
                    }
                })
            })
            .collect()
    }

    /// Records what the log holds (`(key, offset, stored_at_ms)`, in offset order) after
    /// an open. The first occurrence of a key is the original; later ones are left out.
    pub(crate) fn load(&self, found: Vec<(String, u64, i64)>) {
        let mut state = self.state();
        for (key, offset, at_ms) in found {
            if !state.entries.contains_key(&key) {
                state.store(key, offset, at_ms);
            }
        }
    }

    /// Number of keys held (stored or pending); for tests.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.state().entries.len()
    }
}

/// The claims one append owns, each with the position of its message in the append.
/// Dropped without [`Reservations::complete`], it releases them: the keys are removed
/// and their waiters told to claim again.
pub(crate) struct Reservations<'a> {
    dedup: &'a Dedup,
    held: Vec<(Reservation, u64)>,
}

impl<'a> Reservations<'a> {
    pub(crate) fn new(dedup: &'a Dedup) -> Reservations<'a> {
        Reservations {
            dedup,
            held: Vec::new(),
        }
    }

    /// Holds `r` for the message at `position` (0-based) of the coming append.
    pub(crate) fn push(&mut self, r: Reservation, position: u64) {
        self.held.push((r, position));
    }

    /// The append stored its first record at `base_offset`: every held key is stored.
    pub(crate) fn complete(mut self, base_offset: u64, now_ms: i64) {
        let held = std::mem::take(&mut self.held);
        if held.is_empty() {
            return;
        }
        let mut state = self.dedup.state();
        for (r, position) in held {
            let offset = base_offset + position;
            state.store(r.key, offset, now_ms);
            r.tx.send_replace(Some(offset));
        }
    }
}

impl Drop for Reservations<'_> {
    fn drop(&mut self) {
        if self.held.is_empty() {
            return;
        }
        let held = std::mem::take(&mut self.held);
        {
            let mut state = self.dedup.state();
            for (r, _) in &held {
                // Pending entries are only ever replaced by their owner: this one is ours.
                if matches!(state.entries.get(&r.key), Some(Entry::Pending(_))) {
                    state.entries.remove(&r.key);
                }
            }
        }
        // Closing the channels wakes the waiters, who claim again.
        drop(held);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owned(c: Option<Claim>) -> Reservation {
        match c {
            Some(Claim::Owned(r)) => r,
            _ => panic!("expected an owned claim"),
        }
    }

    #[test]
    fn a_stored_key_is_a_duplicate_within_the_window_only() {
        let d = Dedup::default();
        let mut claims = d.claim_all([Some("a"), None, Some("a")], 1000, 10_000);
        let third = claims.pop().flatten();
        assert!(claims.pop().flatten().is_none());
        let mut rs = Reservations::new(&d);
        rs.push(owned(claims.pop().flatten()), 0);
        let Some(Claim::Wait(mut rx)) = third else {
            panic!("a repeat inside the request waits for the first")
        };
        rs.complete(42, 10_000);
        assert_eq!(*rx.borrow_and_update(), Some(42));

        let again = d.claim_all([Some("a")], 1000, 10_999);
        assert!(matches!(again[0], Some(Claim::Stored(42))));
        // Past the window: pruned, and claimable again.
        let later = d.claim_all([Some("a")], 1000, 11_001);
        assert!(matches!(later[0], Some(Claim::Owned(_))));
    }

    #[tokio::test]
    async fn a_released_claim_wakes_waiters_and_frees_the_key() {
        let d = Dedup::default();
        let mut first = d.claim_all([Some("k")], 1000, 0);
        let mut second = d.claim_all([Some("k")], 1000, 0);
        let Some(Some(Claim::Wait(mut rx))) = second.pop() else {
            panic!("expected to wait")
        };
        {
            let mut rs = Reservations::new(&d);
            rs.push(owned(first.pop().flatten()), 0);
            // Dropped: the append failed.
        }
        assert!(rx.wait_for(Option::is_some).await.is_err());
        assert_eq!(d.len(), 0);
        assert!(matches!(
            d.claim_all([Some("k")], 1000, 0).pop().flatten(),
            Some(Claim::Owned(_))
        ));
    }

    #[test]
    fn loading_keeps_the_first_occurrence() {
        let d = Dedup::default();
        d.load(vec![("x".into(), 5, 100), ("x".into(), 9, 200)]);
        assert!(matches!(
            d.claim_all([Some("x")], 1000, 300).pop().flatten(),
            Some(Claim::Stored(5))
        ));
    }
}
