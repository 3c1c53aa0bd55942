//! The sans-IO state machine of one consumer group (Kafka's classic rebalance protocol).
//!
//! [`Group`] is pure state. Every call takes `now`, a monotonic clock in milliseconds
//! chosen by the caller, and nothing here sleeps, spawns, reads a file or a socket.
//! Heartbeat, LeaveGroup and the offset checks answer at once (a return value). JoinGroup
//! and SyncGroup may have to wait for other members: the caller passes a [`RequestId`] of
//! its choosing, and the answer appears later — during this call, a later call, or a
//! [`Group::tick`] — as a [`Reply`] in the outbox drained by [`Group::take_replies`]. An
//! async driver keeps a oneshot sender per `RequestId` (see `coordinator`); a test just
//! reads the outbox.
//!
//! States (as Kafka's `GroupMetadata`):
//!
//! ```text
//!   Empty --join--> PreparingRebalance --all joined / timeout--> CompletingRebalance
//!     ^                ^        |                                   |
//!     |                |        +--no member left--> Empty          | leader's SyncGroup
//!     |                +--join/leave/expiry------------------------ Stable
//!   delete (only when Empty) --> Dead
//! ```
//!
//! A rebalance ends when every known member has rejoined, or when the rebalance timeout
//! (the largest of the members') passes; members that did not rejoin by then are removed.
//! The first rebalance of an empty group waits `initial_rebalance_delay` first, extended
//! by each member that joins meanwhile, up to the rebalance timeout.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use super::consumer::{subscribed_topics, CONSUMER_PROTOCOL_TYPE};
use super::error::GroupError;

/// Chosen by the caller to match a parked JoinGroup/SyncGroup with its later [`Reply`].
pub type RequestId = u64;

/// Settings of the coordinator (Kafka's `group.*` broker settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupConfig {
    /// `group.initial.rebalance.delay.ms`: how long the first rebalance of an empty group
    /// waits for more members. Default 3 s; 0 completes it as soon as all have joined.
    pub initial_rebalance_delay: Duration,
    /// `group.min.session.timeout.ms` (default 6 s).
    pub min_session_timeout: Duration,
    /// `group.max.session.timeout.ms` (default 30 min).
    pub max_session_timeout: Duration,
    /// `group.max.size` (default unlimited).
    pub max_size: usize,
    /// `offset.metadata.max.bytes` (default 4096).
    pub offset_metadata_max_bytes: usize,
    /// The offsets journal is compacted into a snapshot once it is larger than this and
    /// than the last snapshot (default 64 MiB).
    pub journal_compact_bytes: u64,
    /// How often session and rebalance deadlines are checked (default 100 ms).
    pub tick_interval: Duration,
}

impl Default for GroupConfig {
    fn default() -> GroupConfig {
        GroupConfig {
            initial_rebalance_delay: Duration::from_millis(3000),
            min_session_timeout: Duration::from_millis(6000),
            max_session_timeout: Duration::from_millis(1_800_000),
            max_size: usize::MAX,
            offset_metadata_max_bytes: 4096,
            journal_compact_bytes: 64 << 20,
            tick_interval: Duration::from_millis(100),
        }
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The state of a group, named as Kafka names it (`Display`/`FromStr` use these names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    pub const ALL: [GroupState; 5] = [
        GroupState::Empty,
        GroupState::PreparingRebalance,
        GroupState::CompletingRebalance,
        GroupState::Stable,
        GroupState::Dead,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }
}

impl fmt::Display for GroupState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for GroupState {
    type Err = String;
    /// Case-insensitive, as Kafka's ListGroups states filter.
    fn from_str(s: &str) -> Result<GroupState, String> {
        GroupState::ALL
            .into_iter()
            .find(|st| st.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("unknown group state {s:?}"))
    }
}

/// One protocol a member supports: its name (an assignor, e.g. `range`,
/// `cooperative-sticky`) and opaque metadata (for consumers, the subscription).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Protocol {
    pub name: String,
    pub metadata: Vec<u8>,
}

/// A JoinGroup request.
#[derive(Debug, Clone)]
pub struct JoinRequest {
    pub group_id: String,
    /// Empty for a member joining for the first time.
    pub member_id: String,
    /// `group.instance.id` of a static member (KIP-345).
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    /// JoinGroup v0 has none: pass the session timeout.
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    /// In the member's order of preference.
    pub protocols: Vec<Protocol>,
    /// KIP-394 (JoinGroup v4+): a dynamic member joining with an empty member id gets
    /// [`GroupError::MemberIdRequired`] with its new id and must join again with it.
    pub require_known_member_id: bool,
}

/// A member as the leader sees it in its JoinGroup response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinedMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    /// The member's metadata for the selected protocol.
    pub metadata: Vec<u8>,
}

/// A successful JoinGroup answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinResponse {
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    /// Always false: Wharf never asks a leader to skip the assignment (KIP-814 is for
    /// static leaders on newer brokers).
    pub skip_assignment: bool,
    pub member_id: String,
    /// Every member with its metadata, for the leader only; empty for followers.
    pub members: Vec<JoinedMember>,
}

/// A SyncGroup request.
#[derive(Debug, Clone)]
pub struct SyncRequest {
    pub group_id: String,
    pub generation_id: i32,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    /// v5+: checked against the group's when present.
    pub protocol_type: Option<String>,
    /// v5+: checked against the group's when present.
    pub protocol_name: Option<String>,
    /// From the leader: (member id, assignment). Followers send none.
    pub assignments: Vec<(String, Vec<u8>)>,
}

/// A successful SyncGroup answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncResponse {
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Vec<u8>,
}

/// A Heartbeat request.
#[derive(Debug, Clone)]
pub struct HeartbeatRequest {
    pub group_id: String,
    pub generation_id: i32,
    pub member_id: String,
    pub group_instance_id: Option<String>,
}

/// One member leaving (LeaveGroup v3+ carries a batch; v0-2 one member id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaveMember {
    /// May be empty when a static member leaves by instance id.
    pub member_id: String,
    pub group_instance_id: Option<String>,
}

/// A partition of a topic, as offsets are committed for it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicPartition {
    pub topic: String,
    pub partition: i32,
}

impl TopicPartition {
    pub fn new(topic: impl Into<String>, partition: i32) -> TopicPartition {
        TopicPartition {
            topic: topic.into(),
            partition,
        }
    }
}

impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.topic, self.partition)
    }
}

/// A committed offset as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    pub offset: i64,
    /// -1 when the client sent none.
    pub leader_epoch: i32,
    pub metadata: String,
    /// Wall-clock time of the commit (ms since the epoch).
    pub commit_timestamp_ms: i64,
}

/// An answer to a parked request, to be delivered by the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Join {
        request: RequestId,
        result: Result<JoinResponse, GroupError>,
    },
    Sync {
        request: RequestId,
        result: Result<SyncResponse, GroupError>,
    },
}

impl Reply {
    pub fn request(&self) -> RequestId {
        match self {
            Reply::Join { request, .. } | Reply::Sync { request, .. } => *request,
        }
    }
}

/// A member as DescribeGroups shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberDescription {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    /// The metadata for the selected protocol; empty unless the group is Stable.
    pub metadata: Vec<u8>,
    /// Empty unless the group is Stable.
    pub assignment: Vec<u8>,
}

/// A group as DescribeGroups shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    pub group_id: String,
    pub state: GroupState,
    pub protocol_type: String,
    /// The selected protocol; empty unless the group is Stable (as Kafka).
    pub protocol: String,
    pub generation_id: i32,
    pub leader: Option<String>,
    pub members: Vec<MemberDescription>,
}

/// A group as ListGroups shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupListing {
    pub group_id: String,
    pub protocol_type: String,
    pub state: GroupState,
}

#[derive(Debug, Clone)]
struct Member {
    id: String,
    instance_id: Option<String>,
    client_id: String,
    client_host: String,
    session_timeout: u64,
    rebalance_timeout: u64,
    protocols: Vec<Protocol>,
    assignment: Vec<u8>,
    awaiting_join: Option<RequestId>,
    awaiting_sync: Option<RequestId>,
    /// The session expires at this instant unless the member is parked in a join or sync.
    deadline: u64,
}

impl Member {
    fn metadata(&self, protocol: Option<&str>) -> Vec<u8> {
        protocol
            .and_then(|p| self.protocols.iter().find(|x| x.name == p))
            .map(|p| p.metadata.clone())
            .unwrap_or_default()
    }
}

/// One consumer group: members, generation, rebalance progress and committed offsets.
#[derive(Debug, Clone)]
pub struct Group {
    id: String,
    config: GroupConfig,
    state: GroupState,
    generation: i32,
    protocol_type: Option<String>,
    protocol: Option<String>,
    leader: Option<String>,
    members: BTreeMap<String, Member>,
    /// `group.instance.id` -> member id of the static member holding it.
    static_members: HashMap<String, String>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, until they expire (session timeout).
    pending: HashMap<String, u64>,
    rebalance_deadline: Option<u64>,
    /// While the initial delay of a group's first rebalance runs: the latest it may end.
    initial_delay_limit: Option<u64>,
    offsets: BTreeMap<TopicPartition, CommittedOffset>,
    replies: Vec<Reply>,
    /// Generation or protocol type changed since the caller last asked.
    meta_changed: bool,
}

impl Group {
    /// A new, empty group.
    pub fn new(id: impl Into<String>, config: GroupConfig) -> Group {
        Group {
            id: id.into(),
            config,
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            static_members: HashMap::new(),
            pending: HashMap::new(),
            rebalance_deadline: None,
            initial_delay_limit: None,
            offsets: BTreeMap::new(),
            replies: Vec::new(),
            meta_changed: false,
        }
    }

    /// An empty group as recovered from disk: members are not kept across restarts
    /// (they rejoin, as after a Kafka coordinator failover).
    pub fn restore(
        id: impl Into<String>,
        config: GroupConfig,
        protocol_type: Option<String>,
        generation: i32,
    ) -> Group {
        let mut g = Group::new(id, config);
        g.protocol_type = protocol_type;
        g.generation = generation;
        g
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn state(&self) -> GroupState {
        self.state
    }

    pub fn generation(&self) -> i32 {
        self.generation
    }

    pub fn protocol_type(&self) -> Option<&str> {
        self.protocol_type.as_deref()
    }

    pub fn protocol(&self) -> Option<&str> {
        self.protocol.as_deref()
    }

    pub fn leader(&self) -> Option<&str> {
        self.leader.as_deref()
    }

    pub fn member_ids(&self) -> impl Iterator<Item = &str> {
        self.members.keys().map(String::as_str)
    }

    pub fn has_member(&self, member_id: &str) -> bool {
        self.members.contains_key(member_id)
    }

    /// Nothing here is worth keeping: Empty, never formed a generation, no members, no
    /// member ids handed out, no offsets.
    pub fn is_vacant(&self) -> bool {
        self.state == GroupState::Empty
            && self.generation == 0
            && self.members.is_empty()
            && self.pending.is_empty()
            && self.offsets.is_empty()
            && self.replies.is_empty()
    }

    /// The answers produced since the last call, in order.
    pub fn take_replies(&mut self) -> Vec<Reply> {
        std::mem::take(&mut self.replies)
    }

    /// True once after the generation or protocol type changed (what a journal keeps).
    pub fn take_meta_changed(&mut self) -> bool {
        std::mem::take(&mut self.meta_changed)
    }

    /// The earliest instant at which [`Group::tick`] has something to do.
    pub fn next_deadline(&self) -> Option<u64> {
        let sessions = self
            .members
            .values()
            .filter(|m| m.awaiting_join.is_none() && m.awaiting_sync.is_none())
            .map(|m| m.deadline);
        sessions
            .chain(self.pending.values().copied())
            .chain(self.rebalance_deadline)
            .min()
    }

    fn unknown_member(&self, member: &str) -> GroupError {
        GroupError::UnknownMemberId {
            group: self.id.clone(),
            member: member.to_string(),
        }
    }

    fn dead(&self) -> GroupError {
        GroupError::unavailable(format!("group {:?} is being deleted", self.id))
    }

    fn rebalancing(&self) -> GroupError {
        GroupError::RebalanceInProgress {
            group: self.id.clone(),
        }
    }

    fn illegal_generation(&self, got: i32) -> GroupError {
        GroupError::IllegalGeneration {
            got,
            current: self.generation,
        }
    }

    /// KIP-345 fencing: an instance id now held by another member id fences the caller.
    fn check_member(&self, member_id: &str, instance_id: Option<&str>) -> Result<(), GroupError> {
        if let Some(iid) = instance_id {
            if let Some(holder) = self.static_members.get(iid) {
                if holder != member_id {
                    return Err(GroupError::FencedInstanceId {
                        group: self.id.clone(),
                        instance: iid.to_string(),
                        member: member_id.to_string(),
                    });
                }
            }
        }
        if !self.members.contains_key(member_id) {
            return Err(self.unknown_member(member_id));
        }
        Ok(())
    }

    /// Protocol names every current member supports, in the first member's order.
    fn candidate_protocols(&self) -> Vec<&str> {
        let mut members = self.members.values();
        let Some(first) = members.next() else {
            return Vec::new();
        };
        let rest: Vec<&Member> = members.collect();
        first
            .protocols
            .iter()
            .map(|p| p.name.as_str())
            .filter(|name| {
                rest.iter()
                    .all(|m| m.protocols.iter().any(|p| p.name == *name))
            })
            .collect()
    }

    /// Kafka's vote: among the protocols all members support, each member votes for the
    /// first it lists; the most votes wins, ties going to the earlier candidate.
    fn select_protocol(&self) -> Option<String> {
        let candidates = self.candidate_protocols();
        let mut votes = vec![0usize; candidates.len()];
        for m in self.members.values() {
            let choice = m
                .protocols
                .iter()
                .find_map(|p| candidates.iter().position(|c| *c == p.name));
            if let Some(i) = choice {
                votes[i] += 1;
            }
        }
        let mut best: Option<(usize, usize)> = None;
        for (i, v) in votes.iter().enumerate() {
            if best.is_none_or(|(_, bv)| *v > bv) {
                best = Some((i, *v));
            }
        }
        best.map(|(i, _)| candidates[i].to_string())
    }

    fn check_protocols(&self, req: &JoinRequest) -> Result<(), GroupError> {
        let inconsistent = |reason: String| GroupError::InconsistentGroupProtocol { reason };
        if req.protocol_type.is_empty() || req.protocols.is_empty() {
            return Err(inconsistent(
                "a protocol type and at least one protocol are required".into(),
            ));
        }
        // The joining member itself may be the only member (a rejoin): judge it against
        // the others only.
        let others: Vec<&Member> = self
            .members
            .values()
            .filter(|m| m.id != req.member_id)
            .collect();
        if others.is_empty() {
            return Ok(());
        }
        if self.protocol_type.as_deref() != Some(req.protocol_type.as_str()) {
            return Err(inconsistent(format!(
                "protocol type {:?} differs from the group's {:?}",
                req.protocol_type,
                self.protocol_type.as_deref().unwrap_or("")
            )));
        }
        let common = req.protocols.iter().any(|p| {
            others
                .iter()
                .all(|m| m.protocols.iter().any(|q| q.name == p.name))
        });
        if !common {
            return Err(inconsistent(
                "none of the member's protocols is supported by all other members".into(),
            ));
        }
        Ok(())
    }

    /// JoinGroup. The answer arrives as a [`Reply::Join`] with `request`, now or when the
    /// rebalance completes.
    pub fn join(&mut self, now: u64, request: RequestId, req: JoinRequest) {
        if let Err(e) = self.try_join(now, request, req) {
            self.replies.push(Reply::Join {
                request,
                result: Err(e),
            });
        }
    }

    fn try_join(
        &mut self,
        now: u64,
        request: RequestId,
        req: JoinRequest,
    ) -> Result<(), GroupError> {
        if self.state == GroupState::Dead {
            return Err(self.dead());
        }
        let (min, max) = (
            ms(self.config.min_session_timeout),
            ms(self.config.max_session_timeout),
        );
        let session = u64::try_from(req.session_timeout_ms).unwrap_or(0);
        if session < min || session > max {
            return Err(GroupError::InvalidSessionTimeout {
                ms: req.session_timeout_ms,
                min,
                max,
            });
        }
        self.check_protocols(&req)?;
        if req.member_id.is_empty() {
            self.join_new(now, request, req)
        } else {
            self.join_known(now, request, req)
        }
    }

    fn join_new(
        &mut self,
        now: u64,
        request: RequestId,
        req: JoinRequest,
    ) -> Result<(), GroupError> {
        if self.members.len() >= self.config.max_size {
            return Err(GroupError::GroupMaxSizeReached {
                group: self.id.clone(),
                max: self.config.max_size,
            });
        }
        let new_id = format!("{}-{}", req.client_id, uuid::Uuid::new_v4());
        match &req.group_instance_id {
            Some(iid) => {
                if let Some(old_id) = self.static_members.get(iid).cloned() {
                    self.replace_static_member(now, request, &old_id, new_id, req);
                } else {
                    self.add_member(now, request, new_id, req);
                }
                Ok(())
            }
            None if req.require_known_member_id => {
                let session = u64::try_from(req.session_timeout_ms).unwrap_or(0);
                self.pending
                    .insert(new_id.clone(), now.saturating_add(session));
                Err(GroupError::MemberIdRequired { member_id: new_id })
            }
            None => {
                self.add_member(now, request, new_id, req);
                Ok(())
            }
        }
    }

    fn join_known(
        &mut self,
        now: u64,
        request: RequestId,
        req: JoinRequest,
    ) -> Result<(), GroupError> {
        if req.group_instance_id.is_none() && self.pending.remove(&req.member_id).is_some() {
            let id = req.member_id.clone();
            self.add_member(now, request, id, req);
            return Ok(());
        }
        self.check_member(&req.member_id, req.group_instance_id.as_deref())?;
        let unchanged = self
            .members
            .get(&req.member_id)
            .is_some_and(|m| m.protocols == req.protocols);
        let is_leader = self.leader.as_deref() == Some(req.member_id.as_str());
        match self.state {
            GroupState::PreparingRebalance => {
                self.update_member(now, request, req);
                self.try_complete_join(now);
            }
            GroupState::CompletingRebalance if unchanged => {
                // It lost the response: answer with the current generation again.
                let response = self.join_response(&req.member_id);
                self.replies.push(Reply::Join {
                    request,
                    result: Ok(response),
                });
            }
            GroupState::Stable if unchanged && !is_leader => {
                let response = self.join_response(&req.member_id);
                self.replies.push(Reply::Join {
                    request,
                    result: Ok(response),
                });
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                self.update_member(now, request, req);
                self.prepare_rebalance(now);
                self.try_complete_join(now);
            }
            GroupState::Empty | GroupState::Dead => {
                return Err(self.unknown_member(&req.member_id));
            }
        }
        Ok(())
    }

    fn update_member(&mut self, now: u64, request: RequestId, req: JoinRequest) {
        let Some(m) = self.members.get_mut(&req.member_id) else {
            return;
        };
        m.protocols = req.protocols;
        m.session_timeout = u64::try_from(req.session_timeout_ms).unwrap_or(0);
        m.rebalance_timeout = rebalance_timeout(&req.rebalance_timeout_ms, m.session_timeout);
        m.client_id = req.client_id;
        m.client_host = req.client_host;
        m.deadline = now.saturating_add(m.session_timeout);
        // A second JoinGroup replaces the first, which the client has given up on.
        if let Some(old) = m.awaiting_join.replace(request) {
            let e = GroupError::RebalanceInProgress {
                group: self.id.clone(),
            };
            self.replies.push(Reply::Join {
                request: old,
                result: Err(e),
            });
        }
    }

    fn add_member(&mut self, now: u64, request: RequestId, id: String, req: JoinRequest) {
        let session = u64::try_from(req.session_timeout_ms).unwrap_or(0);
        let member = Member {
            id: id.clone(),
            instance_id: req.group_instance_id.clone(),
            client_id: req.client_id,
            client_host: req.client_host,
            session_timeout: session,
            rebalance_timeout: rebalance_timeout(&req.rebalance_timeout_ms, session),
            protocols: req.protocols,
            assignment: Vec::new(),
            awaiting_join: Some(request),
            awaiting_sync: None,
            deadline: now.saturating_add(session),
        };
        if let Some(iid) = &req.group_instance_id {
            self.static_members.insert(iid.clone(), id.clone());
        }
        if self.members.is_empty() {
            if self.protocol_type.as_deref() != Some(req.protocol_type.as_str()) {
                self.meta_changed = true;
            }
            self.protocol_type = Some(req.protocol_type);
        }
        if self.leader.is_none() {
            self.leader = Some(id.clone());
        }
        self.members.insert(id, member);
        match self.state {
            GroupState::PreparingRebalance => {
                if let Some(limit) = self.initial_delay_limit {
                    // Each newcomer during the initial delay buys the others more time.
                    let delay = ms(self.config.initial_rebalance_delay);
                    self.rebalance_deadline = Some(now.saturating_add(delay).min(limit));
                }
            }
            _ => self.prepare_rebalance(now),
        }
        self.try_complete_join(now);
    }

    /// A static member rejoined with a new member id (KIP-345): it takes over the old
    /// member's place and assignment; the old id is fenced from now on.
    fn replace_static_member(
        &mut self,
        now: u64,
        request: RequestId,
        old_id: &str,
        new_id: String,
        req: JoinRequest,
    ) {
        let Some(mut m) = self.members.remove(old_id) else {
            self.add_member(now, request, new_id, req);
            return;
        };
        let fenced = GroupError::FencedInstanceId {
            group: self.id.clone(),
            instance: req.group_instance_id.clone().unwrap_or_default(),
            member: old_id.to_string(),
        };
        if let Some(r) = m.awaiting_join.take() {
            self.replies.push(Reply::Join {
                request: r,
                result: Err(fenced.clone()),
            });
        }
        if let Some(r) = m.awaiting_sync.take() {
            self.replies.push(Reply::Sync {
                request: r,
                result: Err(fenced),
            });
        }
        let unchanged = m.protocols == req.protocols;
        let old_leader = self.leader.clone().unwrap_or_default();
        m.id = new_id.clone();
        m.protocols = req.protocols;
        m.client_id = req.client_id;
        m.client_host = req.client_host;
        m.session_timeout = u64::try_from(req.session_timeout_ms).unwrap_or(0);
        m.rebalance_timeout = rebalance_timeout(&req.rebalance_timeout_ms, m.session_timeout);
        m.deadline = now.saturating_add(m.session_timeout);
        if let Some(iid) = &req.group_instance_id {
            self.static_members.insert(iid.clone(), new_id.clone());
        }
        if self.leader.as_deref() == Some(old_id) {
            self.leader = Some(new_id.clone());
        }
        match self.state {
            GroupState::Stable if unchanged => {
                self.members.insert(new_id.clone(), m);
                let mut response = self.join_response(&new_id);
                // The old leader id, so that a restarted static leader does not assign
                // again: a Stable group would not pass a new assignment on.
                response.leader = old_leader;
                response.members.clear();
                self.replies.push(Reply::Join {
                    request,
                    result: Ok(response),
                });
            }
            GroupState::PreparingRebalance => {
                m.awaiting_join = Some(request);
                self.members.insert(new_id, m);
                self.try_complete_join(now);
            }
            _ => {
                m.awaiting_join = Some(request);
                self.members.insert(new_id, m);
                self.prepare_rebalance(now);
                self.try_complete_join(now);
            }
        }
    }

    fn join_response(&self, member_id: &str) -> JoinResponse {
        let leader = self.leader.clone().unwrap_or_default();
        let members = if leader == member_id {
            self.members
                .values()
                .map(|m| JoinedMember {
                    member_id: m.id.clone(),
                    group_instance_id: m.instance_id.clone(),
                    metadata: m.metadata(self.protocol.as_deref()),
                })
                .collect()
        } else {
            Vec::new()
        };
        JoinResponse {
            generation_id: self.generation,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol.clone(),
            leader,
            skip_assignment: false,
            member_id: member_id.to_string(),
            members,
        }
    }

    fn prepare_rebalance(&mut self, now: u64) {
        if self.state == GroupState::CompletingRebalance {
            // The assignment being made is void: followers waiting for it learn so.
            let group = self.id.clone();
            for m in self.members.values_mut() {
                m.assignment.clear();
                if let Some(r) = m.awaiting_sync.take() {
                    self.replies.push(Reply::Sync {
                        request: r,
                        result: Err(GroupError::RebalanceInProgress {
                            group: group.clone(),
                        }),
                    });
                }
            }
        }
        let timeout = self
            .members
            .values()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or(0);
        let delay = ms(self.config.initial_rebalance_delay);
        if self.state == GroupState::Empty && delay > 0 {
            let limit = now.saturating_add(timeout);
            self.initial_delay_limit = Some(limit);
            self.rebalance_deadline = Some(now.saturating_add(delay).min(limit));
        } else {
            self.initial_delay_limit = None;
            self.rebalance_deadline = Some(now.saturating_add(timeout));
        }
        self.state = GroupState::PreparingRebalance;
    }

    fn try_complete_join(&mut self, now: u64) {
        let all_joined = self.members.values().all(|m| m.awaiting_join.is_some());
        if self.state == GroupState::PreparingRebalance
            && self.initial_delay_limit.is_none()
            && all_joined
            && self.pending.is_empty()
        {
            self.complete_join(now);
        }
    }

    fn complete_join(&mut self, now: u64) {
        let gone: Vec<String> = self
            .members
            .values()
            .filter(|m| m.awaiting_join.is_none())
            .map(|m| m.id.clone())
            .collect();
        for id in gone {
            self.remove_member(&id);
        }
        self.rebalance_deadline = None;
        self.initial_delay_limit = None;
        self.generation = self.generation.wrapping_add(1);
        self.meta_changed = true;
        if self.members.is_empty() {
            self.state = GroupState::Empty;
            self.protocol = None;
            self.leader = None;
            return;
        }
        self.protocol = self.select_protocol();
        self.state = GroupState::CompletingRebalance;
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            let response = self.join_response(&id);
            if let Some(m) = self.members.get_mut(&id) {
                m.deadline = now.saturating_add(m.session_timeout);
                if let Some(r) = m.awaiting_join.take() {
                    self.replies.push(Reply::Join {
                        request: r,
                        result: Ok(response),
                    });
                }
            }
        }
    }

    /// Removes a member without touching the group state; answers its parked requests.
    fn remove_member(&mut self, id: &str) {
        let Some(m) = self.members.remove(id) else {
            return;
        };
        if let Some(iid) = &m.instance_id {
            if self.static_members.get(iid).map(String::as_str) == Some(id) {
                self.static_members.remove(iid);
            }
        }
        let e = self.unknown_member(id);
        if let Some(r) = m.awaiting_join {
            self.replies.push(Reply::Join {
                request: r,
                result: Err(e.clone()),
            });
        }
        if let Some(r) = m.awaiting_sync {
            self.replies.push(Reply::Sync {
                request: r,
                result: Err(e),
            });
        }
        if self.leader.as_deref() == Some(id) {
            // Prefer a member that is rejoining: it will get the metadata to assign.
            self.leader = self
                .members
                .values()
                .find(|m| m.awaiting_join.is_some())
                .or_else(|| self.members.values().next())
                .map(|m| m.id.clone());
        }
    }

    fn remove_member_and_rebalance(&mut self, now: u64, id: &str) {
        self.remove_member(id);
        match self.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.prepare_rebalance(now);
                self.try_complete_join(now);
            }
            GroupState::PreparingRebalance => self.try_complete_join(now),
            GroupState::Empty | GroupState::Dead => {}
        }
    }

    /// SyncGroup. The answer arrives as a [`Reply::Sync`] with `request`: at once, or for
    /// a follower when the leader's assignment arrives.
    pub fn sync(&mut self, now: u64, request: RequestId, req: SyncRequest) {
        if let Err(e) = self.try_sync(now, request, req) {
            self.replies.push(Reply::Sync {
                request,
                result: Err(e),
            });
        }
    }

    fn try_sync(
        &mut self,
        now: u64,
        request: RequestId,
        req: SyncRequest,
    ) -> Result<(), GroupError> {
        if self.state == GroupState::Dead {
            return Err(self.dead());
        }
        self.check_member(&req.member_id, req.group_instance_id.as_deref())?;
        if req.generation_id != self.generation {
            return Err(self.illegal_generation(req.generation_id));
        }
        let mismatch = |given: &Option<String>, ours: &Option<String>| {
            given.as_ref().is_some_and(|g| Some(g) != ours.as_ref())
        };
        if mismatch(&req.protocol_type, &self.protocol_type)
            || mismatch(&req.protocol_name, &self.protocol)
        {
            return Err(GroupError::InconsistentGroupProtocol {
                reason: format!(
                    "SyncGroup names protocol {:?}/{:?}, the group uses {:?}/{:?}",
                    req.protocol_type, req.protocol_name, self.protocol_type, self.protocol
                ),
            });
        }
        match self.state {
            GroupState::PreparingRebalance => Err(self.rebalancing()),
            GroupState::Empty | GroupState::Dead => Err(self.unknown_member(&req.member_id)),
            GroupState::Stable => {
                let m = self
                    .members
                    .get_mut(&req.member_id)
                    .ok_or_else(|| GroupError::unavailable("member vanished"))?;
                m.deadline = now.saturating_add(m.session_timeout);
                let response = SyncResponse {
                    protocol_type: self.protocol_type.clone(),
                    protocol_name: self.protocol.clone(),
                    assignment: m.assignment.clone(),
                };
                self.replies.push(Reply::Sync {
                    request,
                    result: Ok(response),
                });
                Ok(())
            }
            GroupState::CompletingRebalance => {
                let group = self.id.clone();
                if let Some(m) = self.members.get_mut(&req.member_id) {
                    m.deadline = now.saturating_add(m.session_timeout);
                    if let Some(old) = m.awaiting_sync.replace(request) {
                        self.replies.push(Reply::Sync {
                            request: old,
                            result: Err(GroupError::RebalanceInProgress { group }),
                        });
                    }
                }
                if self.leader.as_deref() == Some(req.member_id.as_str()) {
                    let mut given: HashMap<String, Vec<u8>> = req.assignments.into_iter().collect();
                    for m in self.members.values_mut() {
                        m.assignment = given.remove(&m.id).unwrap_or_default();
                    }
                    self.state = GroupState::Stable;
                    for m in self.members.values_mut() {
                        if let Some(r) = m.awaiting_sync.take() {
                            self.replies.push(Reply::Sync {
                                request: r,
                                result: Ok(SyncResponse {
                                    protocol_type: self.protocol_type.clone(),
                                    protocol_name: self.protocol.clone(),
                                    assignment: m.assignment.clone(),
                                }),
                            });
                        }
                    }
                }
                Ok(())
            }
        }
    }

    /// Heartbeat: `Ok` keeps the session alive; `RebalanceInProgress` tells the member
    /// to rejoin (its session is kept alive too).
    pub fn heartbeat(&mut self, now: u64, req: &HeartbeatRequest) -> Result<(), GroupError> {
        if self.state == GroupState::Dead {
            return Err(self.dead());
        }
        self.check_member(&req.member_id, req.group_instance_id.as_deref())?;
        if req.generation_id != self.generation {
            return Err(self.illegal_generation(req.generation_id));
        }
        if let Some(m) = self.members.get_mut(&req.member_id) {
            m.deadline = now.saturating_add(m.session_timeout);
        }
        match self.state {
            GroupState::PreparingRebalance => Err(self.rebalancing()),
            GroupState::Empty => Err(self.unknown_member(&req.member_id)),
            _ => Ok(()),
        }
    }

    /// LeaveGroup: one result per member, in order. Any member leaving starts a
    /// rebalance of the others.
    pub fn leave(
        &mut self,
        now: u64,
        members: &[LeaveMember],
    ) -> Result<Vec<Result<(), GroupError>>, GroupError> {
        if self.state == GroupState::Dead {
            return Err(self.dead());
        }
        let mut results = Vec::with_capacity(members.len());
        for lm in members {
            results.push(self.leave_one(now, lm));
        }
        Ok(results)
    }

    fn leave_one(&mut self, now: u64, lm: &LeaveMember) -> Result<(), GroupError> {
        let id = match &lm.group_instance_id {
            Some(iid) => {
                let Some(holder) = self.static_members.get(iid).cloned() else {
                    return Err(self.unknown_member(&lm.member_id));
                };
                if !lm.member_id.is_empty() && holder != lm.member_id {
                    return Err(GroupError::FencedInstanceId {
                        group: self.id.clone(),
                        instance: iid.clone(),
                        member: lm.member_id.clone(),
                    });
                }
                holder
            }
            None => {
                if self.pending.remove(&lm.member_id).is_some() {
                    self.try_complete_join(now);
                    return Ok(());
                }
                if !self.members.contains_key(&lm.member_id) {
                    return Err(self.unknown_member(&lm.member_id));
                }
                lm.member_id.clone()
            }
        };
        self.remove_member_and_rebalance(now, &id);
        Ok(())
    }

    /// Expires sessions and pending member ids, and ends a rebalance whose time is up.
    pub fn tick(&mut self, now: u64) {
        if self.state == GroupState::Dead {
            return;
        }
        let before = self.pending.len();
        self.pending.retain(|_, expiry| *expiry > now);
        if self.pending.len() != before {
            self.try_complete_join(now);
        }
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| m.awaiting_join.is_none() && m.awaiting_sync.is_none() && m.deadline <= now)
            .map(|m| m.id.clone())
            .collect();
        for id in expired {
            tracing::info!(group = %self.id, member = %id, "member session expired");
            self.remove_member_and_rebalance(now, &id);
        }
        if self.state == GroupState::PreparingRebalance
            && self.rebalance_deadline.is_some_and(|d| d <= now)
        {
            self.complete_join(now);
        }
    }

    /// Checks an OffsetCommit as Kafka does: a "simple" consumer (generation < 0) may
    /// commit to an Empty group; otherwise the member must belong to the current
    /// generation, and a group completing a rebalance answers `RebalanceInProgress`.
    /// A successful check counts as a heartbeat.
    pub fn check_commit(
        &mut self,
        now: u64,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> Result<(), GroupError> {
        if self.state == GroupState::Dead {
            return Err(self.dead());
        }
        if let Some(iid) = instance_id {
            if self
                .static_members
                .get(iid)
                .is_some_and(|holder| holder != member_id)
            {
                return Err(GroupError::FencedInstanceId {
                    group: self.id.clone(),
                    instance: iid.to_string(),
                    member: member_id.to_string(),
                });
            }
        }
        if generation < 0 && self.state == GroupState::Empty {
            return Ok(());
        }
        if self.state == GroupState::CompletingRebalance {
            return Err(self.rebalancing());
        }
        if !self.members.contains_key(member_id) {
            return Err(self.unknown_member(member_id));
        }
        if generation != self.generation {
            return Err(self.illegal_generation(generation));
        }
        if let Some(m) = self.members.get_mut(member_id) {
            m.deadline = now.saturating_add(m.session_timeout);
        }
        Ok(())
    }

    /// Stores a committed offset (the caller made it durable first).
    pub fn set_offset(&mut self, tp: TopicPartition, offset: CommittedOffset) {
        self.offsets.insert(tp, offset);
    }

    /// Forgets a committed offset.
    pub fn remove_offset(&mut self, tp: &TopicPartition) {
        self.offsets.remove(tp);
    }

    pub fn offset(&self, tp: &TopicPartition) -> Option<&CommittedOffset> {
        self.offsets.get(tp)
    }

    pub fn offsets(&self) -> impl Iterator<Item = (&TopicPartition, &CommittedOffset)> {
        self.offsets.iter()
    }

    /// The topics the members subscribe to, decoded from their "consumer" protocol
    /// metadata; `None` if the group is not a consumer group or some metadata cannot be
    /// decoded.
    pub fn subscribed_topics(&self) -> Option<BTreeSet<String>> {
        if self.protocol_type.as_deref() != Some(CONSUMER_PROTOCOL_TYPE) {
            return None;
        }
        let mut topics = BTreeSet::new();
        for m in self.members.values() {
            let metadata = match &self.protocol {
                Some(p) => m.protocols.iter().find(|x| &x.name == p),
                None => m.protocols.first(),
            }?;
            topics.extend(subscribed_topics(&metadata.metadata)?);
        }
        Some(topics)
    }

    /// Whether OffsetDelete may remove the offsets of `topic`: always in an Empty group;
    /// in an active consumer group only for topics no member subscribes to (undecodable
    /// subscriptions count as subscribed to everything); never in another active group.
    pub fn check_offset_delete(&self, topic: &str) -> Result<(), GroupError> {
        match self.state {
            GroupState::Dead => Err(GroupError::GroupIdNotFound {
                group: self.id.clone(),
            }),
            GroupState::Empty => Ok(()),
            _ if self.protocol_type.as_deref() == Some(CONSUMER_PROTOCOL_TYPE) => {
                match self.subscribed_topics() {
                    Some(topics) if !topics.contains(topic) => Ok(()),
                    _ => Err(GroupError::GroupSubscribedToTopic {
                        group: self.id.clone(),
                        topic: topic.to_string(),
                    }),
                }
            }
            _ => Err(GroupError::NonEmptyGroup {
                group: self.id.clone(),
            }),
        }
    }

    /// DeleteGroups: only an Empty group may go; it becomes Dead (its offsets go with it).
    pub fn mark_dead(&mut self) -> Result<(), GroupError> {
        match self.state {
            GroupState::Empty => {
                self.state = GroupState::Dead;
                Ok(())
            }
            GroupState::Dead => Err(GroupError::GroupIdNotFound {
                group: self.id.clone(),
            }),
            _ => Err(GroupError::NonEmptyGroup {
                group: self.id.clone(),
            }),
        }
    }

    /// Undoes [`Group::mark_dead`] when the deletion could not be made durable.
    pub fn revive(&mut self) {
        if self.state == GroupState::Dead {
            self.state = GroupState::Empty;
        }
    }

    /// Fails every parked request (shutdown).
    pub fn abort_parked(&mut self, error: &GroupError) {
        for m in self.members.values_mut() {
            if let Some(r) = m.awaiting_join.take() {
                self.replies.push(Reply::Join {
                    request: r,
                    result: Err(error.clone()),
                });
            }
            if let Some(r) = m.awaiting_sync.take() {
                self.replies.push(Reply::Sync {
                    request: r,
                    result: Err(error.clone()),
                });
            }
        }
    }

    pub fn describe(&self) -> GroupDescription {
        let stable = self.state == GroupState::Stable;
        GroupDescription {
            group_id: self.id.clone(),
            state: self.state,
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            protocol: if stable {
                self.protocol.clone().unwrap_or_default()
            } else {
                String::new()
            },
            generation_id: self.generation,
            leader: self.leader.clone(),
            members: self
                .members
                .values()
                .map(|m| MemberDescription {
                    member_id: m.id.clone(),
                    group_instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    metadata: if stable {
                        m.metadata(self.protocol.as_deref())
                    } else {
                        Vec::new()
                    },
                    assignment: if stable {
                        m.assignment.clone()
                    } else {
                        Vec::new()
                    },
                })
                .collect(),
        }
    }

    pub fn listing(&self) -> GroupListing {
        GroupListing {
            group_id: self.id.clone(),
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            state: self.state,
        }
    }
}

/// A non-positive rebalance timeout (JoinGroup v0 has none) means the session timeout.
fn rebalance_timeout(given: &i32, session: u64) -> u64 {
    match u64::try_from(*given) {
        Ok(ms) if ms > 0 => ms,
        _ => session,
    }
}
