//! The async driver of the group state machines: [`GroupCoordinator`].
//!
//! All groups live in one map behind a `std::sync::Mutex` that is never held across an
//! `.await` or a blocking call. A JoinGroup or SyncGroup that must wait is parked: its
//! oneshot sender is stored under a fresh [`RequestId`] and the caller awaits the
//! receiver; whenever a state machine emits a [`Reply`] (on a later request or on a
//! tick), the sender is taken out and completed. A tick task (every
//! `GroupConfig::tick_interval`) expires sessions and ends rebalances that ran out of
//! time.
//!
//! Offsets are written through the journal before they are visible: a commit is checked
//! under the lock and queued to the journal writer (still under the lock, so journal
//! order is decision order); the writer thread syncs, then applies the batch to the
//! in-memory groups in journal order (taking the lock briefly), then acknowledges. An
//! OffsetFetch therefore never returns an offset that a crash could take back.
//!
//! Lock order: the group map, then (briefly) the journal's sender. The journal thread
//! takes only the group map.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::error::GroupError;
use super::journal::{self, Journal, Op, MAX_RECORD_BYTES};
use super::state::{
    CommittedOffset, Group, GroupConfig, GroupDescription, GroupListing, GroupState,
    HeartbeatRequest, JoinRequest, JoinResponse, LeaveMember, Reply, RequestId, SyncRequest,
    SyncResponse, TopicPartition,
};
use crate::error::{CoreError, Result};
use crate::journal::JournalError;

/// One partition's offset in an OffsetCommit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetCommit {
    pub partition: TopicPartition,
    pub offset: i64,
    /// -1 for none.
    pub leader_epoch: i32,
    pub metadata: Option<String>,
}

/// An OffsetCommit request. A "simple" consumer (no group management) sends an empty
/// member id and generation -1; that is accepted while the group is Empty.
#[derive(Debug, Clone)]
pub struct OffsetCommitRequest {
    pub group_id: String,
    pub generation_id: i32,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub offsets: Vec<OffsetCommit>,
}

/// Per-partition results, in request order.
pub type PartitionResults = Vec<(TopicPartition, Result<(), GroupError>)>;

enum Waiter {
    Join(oneshot::Sender<Result<JoinResponse, GroupError>>),
    Sync(oneshot::Sender<Result<SyncResponse, GroupError>>),
}

struct Live {
    config: GroupConfig,
    groups: HashMap<String, Group>,
    waiters: HashMap<RequestId, Waiter>,
    next_request: RequestId,
}

impl Live {
    fn dispatch(&mut self, replies: Vec<Reply>) {
        for reply in replies {
            let waiter = self.waiters.remove(&reply.request());
            // A send fails only when the caller stopped waiting (client gone): fine.
            match (reply, waiter) {
                (Reply::Join { result, .. }, Some(Waiter::Join(tx))) => {
                    let _ = tx.send(result);
                }
                (Reply::Sync { result, .. }, Some(Waiter::Sync(tx))) => {
                    let _ = tx.send(result);
                }
                (reply, _) => {
                    warn!(
                        request = reply.request(),
                        "a group reply had no matching waiter"
                    );
                }
            }
        }
    }

    /// Delivers a group's replies and journals its metadata if it changed. Called under
    /// the lock after every state machine call.
    fn settle(&mut self, group_id: &str, journal: &Journal) {
        let Some(g) = self.groups.get_mut(group_id) else {
            return;
        };
        let replies = g.take_replies();
        let meta = g.take_meta_changed().then(|| Op::GroupMeta {
            group: g.id().to_string(),
            protocol_type: g.protocol_type().unwrap_or_default().to_string(),
            generation: g.generation(),
        });
        if g.is_vacant() {
            // Created by a JoinGroup that failed at once: nothing worth listing.
            self.groups.remove(group_id);
        }
        self.dispatch(replies);
        if let Some(op) = meta {
            // Not awaited: the generation is advisory after a restart (members rejoin).
            if let Err(e) = journal.submit(vec![op], None) {
                warn!(group = group_id, error = %e, "could not journal group metadata");
            }
        }
    }

    /// Applies a durable journal batch (called by the journal thread, in journal order).
    fn apply(&mut self, ops: &[Op]) {
        for op in ops {
            match op {
                Op::Commit { group, tp, offset } => {
                    let config = self.config;
                    self.groups
                        .entry(group.clone())
                        .or_insert_with(|| Group::new(group.clone(), config))
                        .set_offset(tp.clone(), offset.clone());
                }
                Op::DeleteOffset { group, tp } => {
                    if let Some(g) = self.groups.get_mut(group) {
                        g.remove_offset(tp);
                    }
                }
                Op::DeleteGroup { group } => {
                    if self
                        .groups
                        .get(group)
                        .is_some_and(|g| g.state() == GroupState::Dead)
                    {
                        self.groups.remove(group);
                    }
                }
                // The live group is already at (or past) this generation.
                Op::GroupMeta { .. } => {}
            }
        }
    }
}

fn lock(m: &Mutex<Live>) -> MutexGuard<'_, Live> {
    // A panic inside a state machine call could leave one group half-updated; carrying
    // on serves every other group, which beats refusing them all.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

struct Inner {
    live: Arc<Mutex<Live>>,
    journal: Journal,
    epoch: Instant,
    closed: AtomicBool,
    ticker: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl Inner {
    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn tick(&self) {
        let now = self.now();
        let mut live = lock(&self.live);
        let ids: Vec<String> = live.groups.keys().cloned().collect();
        for id in ids {
            if let Some(g) = live.groups.get_mut(&id) {
                g.tick(now);
            }
            live.settle(&id, &self.journal);
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(t) = self
            .ticker
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            t.abort();
        }
    }
}

/// The consumer-group coordinator: every group of the broker, their members and
/// rebalances, and their committed offsets (durable in `<data-dir>/groups/`).
///
/// Cheap to clone; all clones are the same coordinator.
#[derive(Clone)]
pub struct GroupCoordinator {
    inner: Arc<Inner>,
}

fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

fn shut_down() -> GroupError {
    GroupError::unavailable("the broker is shutting down")
}

/// The outcome of a journal submission, as the requester sees it.
fn durable(
    r: std::result::Result<Result<(), JournalError>, oneshot::error::RecvError>,
) -> Result<(), GroupError> {
    match r {
        Ok(r) => r.map_err(GroupError::from),
        // The writer dropped the sender without answering: it is stopping.
        Err(_) => Err(shut_down()),
    }
}

impl GroupCoordinator {
    /// Opens the coordinator on `data_dir` (recovering `groups/`) and starts its tick
    /// task. The caller must own the data directory exclusively ([`crate::Broker::open`]
    /// does, under the directory lock).
    pub async fn open(data_dir: &Path, config: GroupConfig) -> Result<GroupCoordinator> {
        let handle = tokio::runtime::Handle::current();
        let dir = data_dir.to_path_buf();
        tokio::task::spawn_blocking(move || GroupCoordinator::open_blocking(&dir, config, &handle))
            .await
            .map_err(|e| CoreError::Internal {
                what: "opening the group coordinator",
                reason: e.to_string(),
            })?
    }

    pub(crate) fn open_blocking(
        data_dir: &Path,
        config: GroupConfig,
        runtime: &tokio::runtime::Handle,
    ) -> Result<GroupCoordinator> {
        let recovered = journal::open(data_dir)?;
        let mut groups = HashMap::new();
        for (id, g) in &recovered.state {
            let protocol_type = (!g.protocol_type.is_empty()).then(|| g.protocol_type.clone());
            let mut group = Group::restore(id.clone(), config, protocol_type, g.generation);
            for (tp, o) in &g.offsets {
                group.set_offset(tp.clone(), o.clone());
            }
            groups.insert(id.clone(), group);
        }
        info!(
            groups = groups.len(),
            truncated_bytes = recovered.truncated_bytes,
            "group coordinator opened"
        );
        let live = Arc::new(Mutex::new(Live {
            config,
            groups,
            waiters: HashMap::new(),
            next_request: 0,
        }));
        let for_journal = Arc::clone(&live);
        let journal = Journal::start(
            data_dir,
            recovered,
            config.journal_compact_bytes,
            Some(Box::new(move |ops| lock(&for_journal).apply(ops))),
            None,
        )?;
        let inner = Arc::new(Inner {
            live,
            journal,
            epoch: Instant::now(),
            closed: AtomicBool::new(false),
            ticker: std::sync::Mutex::new(None),
        });
        let weak: Weak<Inner> = Arc::downgrade(&inner);
        let every = config
            .tick_interval
            .max(std::time::Duration::from_millis(1));
        let ticker = runtime.spawn(async move {
            let mut interval = tokio::time::interval(every);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                // Holding only a weak reference lets the coordinator drop (and its journal
                // thread end) without an explicit shutdown.
                let Some(inner) = weak.upgrade() else { break };
                if inner.closed.load(Ordering::Acquire) {
                    break;
                }
                inner.tick();
            }
        });
        *inner.ticker.lock().unwrap_or_else(PoisonError::into_inner) = Some(ticker);
        Ok(GroupCoordinator { inner })
    }

    fn check_open(&self) -> Result<(), GroupError> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(shut_down());
        }
        Ok(())
    }

    fn check_group_id(group_id: &str) -> Result<(), GroupError> {
        if group_id.is_empty() {
            return Err(GroupError::InvalidGroupId {
                group: group_id.to_string(),
            });
        }
        Ok(())
    }

    /// Parks a request: runs `f` on the group (created if missing) with a fresh request
    /// id whose reply goes to `waiter`.
    /// Parks a request: runs `f` on the group with a fresh request id whose reply goes
    /// to `waiter`. A missing group is created (JoinGroup) or answered with `missing`
    /// (SyncGroup). `closed` is checked under the lock, so a request either is parked
    /// before shutdown fails all parked requests, or is refused: none is left hanging.
    fn park(
        &self,
        group_id: &str,
        waiter: Waiter,
        missing: Option<GroupError>,
        f: impl FnOnce(&mut Group, u64, RequestId),
    ) {
        let now = self.inner.now();
        let mut live = lock(&self.inner.live);
        let refuse = if self.inner.closed.load(Ordering::Acquire) {
            Some(shut_down())
        } else if live.groups.contains_key(group_id) {
            None
        } else {
            missing
        };
        if let Some(e) = refuse {
            // Failing a receiver that nobody awaits any more is fine.
            match waiter {
                Waiter::Join(tx) => drop(tx.send(Err(e))),
                Waiter::Sync(tx) => drop(tx.send(Err(e))),
            }
            return;
        }
        let id = live.next_request;
        live.next_request = live.next_request.wrapping_add(1);
        live.waiters.insert(id, waiter);
        let config = live.config;
        let group = live
            .groups
            .entry(group_id.to_string())
            .or_insert_with(|| Group::new(group_id, config));
        f(group, now, id);
        live.settle(group_id, &self.inner.journal);
    }

    /// JoinGroup. Waits until the rebalance completes (or answers at once with an error
    /// or, for a known member of a stable group, the current generation).
    pub async fn join(&self, req: JoinRequest) -> Result<JoinResponse, GroupError> {
        self.check_open()?;
        Self::check_group_id(&req.group_id)?;
        let (tx, rx) = oneshot::channel();
        let group_id = req.group_id.clone();
        self.park(&group_id, Waiter::Join(tx), None, |g, now, id| {
            g.join(now, id, req)
        });
        rx.await.unwrap_or_else(|_| Err(shut_down()))
    }

    /// SyncGroup. A follower waits for the leader's assignment.
    pub async fn sync(&self, req: SyncRequest) -> Result<SyncResponse, GroupError> {
        self.check_open()?;
        Self::check_group_id(&req.group_id)?;
        let (tx, rx) = oneshot::channel();
        let group_id = req.group_id.clone();
        let missing = GroupError::UnknownMemberId {
            group: req.group_id.clone(),
            member: req.member_id.clone(),
        };
        self.park(&group_id, Waiter::Sync(tx), Some(missing), |g, now, id| {
            g.sync(now, id, req)
        });
        rx.await.unwrap_or_else(|_| Err(shut_down()))
    }

    /// Runs `f` on an existing group and settles it; `None` if there is no such group.
    fn with_group<R>(&self, group_id: &str, f: impl FnOnce(&mut Group, u64) -> R) -> Option<R> {
        let now = self.inner.now();
        let mut live = lock(&self.inner.live);
        let r = f(live.groups.get_mut(group_id)?, now);
        live.settle(group_id, &self.inner.journal);
        Some(r)
    }

    /// Heartbeat.
    pub async fn heartbeat(&self, req: HeartbeatRequest) -> Result<(), GroupError> {
        self.check_open()?;
        Self::check_group_id(&req.group_id)?;
        self.with_group(&req.group_id, |g, now| g.heartbeat(now, &req))
            .unwrap_or_else(|| {
                Err(GroupError::UnknownMemberId {
                    group: req.group_id.clone(),
                    member: req.member_id.clone(),
                })
            })
    }

    /// LeaveGroup: one result per member, in order.
    pub async fn leave(
        &self,
        group_id: &str,
        members: Vec<LeaveMember>,
    ) -> Result<Vec<Result<(), GroupError>>, GroupError> {
        self.check_open()?;
        Self::check_group_id(group_id)?;
        self.with_group(group_id, |g, now| g.leave(now, &members))
            .unwrap_or_else(|| {
                Ok(members
                    .iter()
                    .map(|m| {
                        Err(GroupError::UnknownMemberId {
                            group: group_id.to_string(),
                            member: m.member_id.clone(),
                        })
                    })
                    .collect())
            })
    }

    /// OffsetCommit. Returns once every accepted offset is durable. A top-level error
    /// applies to every partition; per-partition errors are metadata too large.
    pub async fn commit_offsets(
        &self,
        req: OffsetCommitRequest,
    ) -> Result<PartitionResults, GroupError> {
        self.check_open()?;
        Self::check_group_id(&req.group_id)?;
        let timestamp = wall_ms();
        let (results, rx) = {
            let now = self.inner.now();
            let mut live = lock(&self.inner.live);
            let config = live.config;
            if !live.groups.contains_key(&req.group_id) {
                if req.generation_id >= 0 {
                    // Kafka: no group, yet a generation: a member of a gone generation.
                    return Err(GroupError::IllegalGeneration {
                        got: req.generation_id,
                        current: -1,
                    });
                }
                live.groups.insert(
                    req.group_id.clone(),
                    Group::new(req.group_id.clone(), config),
                );
            }
            let g = live
                .groups
                .get_mut(&req.group_id)
                .ok_or_else(|| GroupError::unavailable("group vanished"))?;
            g.check_commit(
                now,
                &req.member_id,
                req.group_instance_id.as_deref(),
                req.generation_id,
            )?;
            let mut results = Vec::with_capacity(req.offsets.len());
            let mut ops = Vec::new();
            for c in req.offsets {
                let metadata = c.metadata.unwrap_or_default();
                if metadata.len() > config.offset_metadata_max_bytes {
                    let e = GroupError::OffsetMetadataTooLarge {
                        len: metadata.len(),
                        max: config.offset_metadata_max_bytes,
                    };
                    results.push((c.partition, Err(e)));
                    continue;
                }
                ops.push(Op::Commit {
                    group: req.group_id.clone(),
                    tp: c.partition.clone(),
                    offset: CommittedOffset {
                        offset: c.offset,
                        leader_epoch: c.leader_epoch,
                        metadata,
                        commit_timestamp_ms: timestamp,
                    },
                });
                results.push((c.partition, Ok(())));
            }
            if ops.is_empty() {
                return Ok(results);
            }
            let bytes = journal::encode_record(&ops).len();
            if bytes > MAX_RECORD_BYTES {
                return Err(GroupError::InvalidCommitOffsetSize {
                    bytes,
                    max: MAX_RECORD_BYTES,
                });
            }
            let (tx, rx) = oneshot::channel();
            self.inner.journal.submit(ops, Some(tx))?;
            (results, rx)
        };
        durable(rx.await)?;
        Ok(results)
    }

    /// OffsetFetch: the listed partitions (`None` where nothing is committed), or with
    /// `partitions: None` every partition with a committed offset. An unknown group has
    /// no offsets.
    pub async fn fetch_offsets(
        &self,
        group_id: &str,
        partitions: Option<Vec<TopicPartition>>,
    ) -> Result<Vec<(TopicPartition, Option<CommittedOffset>)>, GroupError> {
        self.check_open()?;
        Self::check_group_id(group_id)?;
        let live = lock(&self.inner.live);
        let group = live.groups.get(group_id);
        Ok(match partitions {
            Some(list) => list
                .into_iter()
                .map(|tp| {
                    let o = group.and_then(|g| g.offset(&tp)).cloned();
                    (tp, o)
                })
                .collect(),
            None => group
                .map(|g| {
                    g.offsets()
                        .map(|(tp, o)| (tp.clone(), Some(o.clone())))
                        .collect()
                })
                .unwrap_or_default(),
        })
    }

    /// OffsetDelete. Partitions of topics an active consumer group subscribes to answer
    /// `GroupSubscribedToTopic`; an active group of another protocol type refuses with a
    /// top-level `NonEmptyGroup`.
    pub async fn delete_offsets(
        &self,
        group_id: &str,
        partitions: Vec<TopicPartition>,
    ) -> Result<PartitionResults, GroupError> {
        self.check_open()?;
        Self::check_group_id(group_id)?;
        let (results, rx) = {
            let live = lock(&self.inner.live);
            let not_found = || GroupError::GroupIdNotFound {
                group: group_id.to_string(),
            };
            let g = live.groups.get(group_id).ok_or_else(not_found)?;
            match g.state() {
                GroupState::Dead => return Err(not_found()),
                GroupState::Empty => {}
                _ if g.protocol_type() == Some(super::CONSUMER_PROTOCOL_TYPE) => {}
                _ => {
                    return Err(GroupError::NonEmptyGroup {
                        group: group_id.to_string(),
                    })
                }
            }
            let mut ops = Vec::new();
            let mut results = Vec::with_capacity(partitions.len());
            for tp in partitions {
                match g.check_offset_delete(&tp.topic) {
                    Ok(()) => {
                        ops.push(Op::DeleteOffset {
                            group: group_id.to_string(),
                            tp: tp.clone(),
                        });
                        results.push((tp, Ok(())));
                    }
                    Err(e) => results.push((tp, Err(e))),
                }
            }
            if ops.is_empty() {
                return Ok(results);
            }
            let (tx, rx) = oneshot::channel();
            self.inner.journal.submit(ops, Some(tx))?;
            (results, rx)
        };
        durable(rx.await)?;
        Ok(results)
    }

    /// DescribeGroups for one group. An unknown group is `GroupIdNotFound` (before
    /// DescribeGroups v6, Kafka answers such a group as `Dead` with no error instead).
    pub fn describe_group(&self, group_id: &str) -> Result<GroupDescription, GroupError> {
        self.check_open()?;
        lock(&self.inner.live)
            .groups
            .get(group_id)
            .map(Group::describe)
            .ok_or_else(|| GroupError::GroupIdNotFound {
                group: group_id.to_string(),
            })
    }

    /// ListGroups: groups in any of `states` (all groups if `states` is empty), by id.
    pub fn list_groups(&self, states: &[GroupState]) -> Result<Vec<GroupListing>, GroupError> {
        self.check_open()?;
        let live = lock(&self.inner.live);
        let mut out: Vec<GroupListing> = live
            .groups
            .values()
            .filter(|g| states.is_empty() || states.contains(&g.state()))
            .map(Group::listing)
            .collect();
        out.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        Ok(out)
    }

    /// DeleteGroups: each group must exist and be Empty; its offsets go with it. One
    /// result per group, in order.
    pub async fn delete_groups(
        &self,
        group_ids: Vec<String>,
    ) -> Vec<(String, Result<(), GroupError>)> {
        let mut waiting = Vec::with_capacity(group_ids.len());
        for id in group_ids {
            let queued = self.queue_delete(&id);
            waiting.push((id, queued));
        }
        let mut out = Vec::with_capacity(waiting.len());
        for (id, queued) in waiting {
            let result = match queued {
                Ok(rx) => {
                    let r = durable(rx.await);
                    if r.is_err() {
                        if let Some(g) = lock(&self.inner.live).groups.get_mut(&id) {
                            g.revive();
                        }
                    } else {
                        info!(group = %id, "group deleted");
                    }
                    r
                }
                Err(e) => Err(e),
            };
            out.push((id, result));
        }
        out
    }

    fn queue_delete(
        &self,
        id: &str,
    ) -> Result<oneshot::Receiver<Result<(), JournalError>>, GroupError> {
        self.check_open()?;
        Self::check_group_id(id)?;
        let mut live = lock(&self.inner.live);
        let g = live
            .groups
            .get_mut(id)
            .ok_or_else(|| GroupError::GroupIdNotFound {
                group: id.to_string(),
            })?;
        // Dead at once, so no member can join while the deletion is being made durable.
        g.mark_dead()?;
        let (tx, rx) = oneshot::channel();
        if let Err(e) = self.inner.journal.submit(
            vec![Op::DeleteGroup {
                group: id.to_string(),
            }],
            Some(tx),
        ) {
            g.revive();
            return Err(e.into());
        }
        Ok(rx)
    }

    /// Runs one tick now (the tick task does this every `tick_interval`).
    pub fn tick(&self) {
        self.inner.tick();
    }

    /// Stops the tick task, fails every parked request with `CoordinatorNotAvailable`,
    /// and closes the journal (everything acknowledged is already durable). Later calls
    /// fail with `CoordinatorNotAvailable`.
    pub async fn shutdown(&self) {
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        if let Some(t) = self
            .inner
            .ticker
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            t.abort();
        }
        {
            let mut live = lock(&self.inner.live);
            let ids: Vec<String> = live.groups.keys().cloned().collect();
            for id in ids {
                if let Some(g) = live.groups.get_mut(&id) {
                    g.abort_parked(&shut_down());
                }
                live.settle(&id, &self.inner.journal);
            }
        }
        let inner = Arc::clone(&self.inner);
        if let Err(e) = tokio::task::spawn_blocking(move || inner.journal.close()).await {
            warn!(error = %e, "closing the offsets journal failed");
        }
    }
}
