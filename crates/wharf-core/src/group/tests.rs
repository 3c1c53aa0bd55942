//! The pure state machine under a fake clock: every instant is a number chosen here.

use std::time::Duration;

use super::*;

const SESSION: i32 = 10_000;
const REBALANCE: i32 = 30_000;

fn config(initial_delay_ms: u64) -> GroupConfig {
    GroupConfig {
        initial_rebalance_delay: Duration::from_millis(initial_delay_ms),
        min_session_timeout: Duration::from_millis(1000),
        ..GroupConfig::default()
    }
}

/// A consumer subscription (version 0) to `topics`.
fn subscription(topics: &[&str]) -> Vec<u8> {
    let mut b = 0i16.to_be_bytes().to_vec();
    b.extend((topics.len() as i32).to_be_bytes());
    for t in topics {
        b.extend((t.len() as i16).to_be_bytes());
        b.extend(t.as_bytes());
    }
    b.extend((-1i32).to_be_bytes());
    b
}

fn protocols(names: &[&str], topics: &[&str]) -> Vec<Protocol> {
    names
        .iter()
        .map(|n| Protocol {
            name: n.to_string(),
            metadata: subscription(topics),
        })
        .collect()
}

fn join_req(member_id: &str, client: &str) -> JoinRequest {
    JoinRequest {
        group_id: "g".into(),
        member_id: member_id.into(),
        group_instance_id: None,
        client_id: client.into(),
        client_host: "/127.0.0.1".into(),
        session_timeout_ms: SESSION,
        rebalance_timeout_ms: REBALANCE,
        protocol_type: "consumer".into(),
        protocols: protocols(&["range"], &["t"]),
        require_known_member_id: false,
    }
}

/// The group plus the caller's bookkeeping: request ids and the replies seen.
struct Harness {
    g: Group,
    next: RequestId,
    replies: Vec<Reply>,
}

impl Harness {
    fn new(initial_delay_ms: u64) -> Harness {
        Harness {
            g: Group::new("g", config(initial_delay_ms)),
            next: 0,
            replies: Vec::new(),
        }
    }

    fn collect(&mut self) {
        self.replies.extend(self.g.take_replies());
    }

    fn join(&mut self, now: u64, req: JoinRequest) -> RequestId {
        self.next += 1;
        self.g.join(now, self.next, req);
        self.collect();
        self.next
    }

    fn sync(
        &mut self,
        now: u64,
        member: &str,
        generation: i32,
        assignments: &[(&str, &[u8])],
    ) -> RequestId {
        self.next += 1;
        let req = SyncRequest {
            group_id: "g".into(),
            generation_id: generation,
            member_id: member.into(),
            group_instance_id: None,
            protocol_type: Some("consumer".into()),
            protocol_name: None,
            assignments: assignments
                .iter()
                .map(|(m, a)| (m.to_string(), a.to_vec()))
                .collect(),
        };
        self.g.sync(now, self.next, req);
        self.collect();
        self.next
    }

    fn tick(&mut self, now: u64) {
        self.g.tick(now);
        self.collect();
    }

    fn heartbeat(&mut self, now: u64, member: &str, generation: i32) -> Result<(), GroupError> {
        self.g.heartbeat(
            now,
            &HeartbeatRequest {
                group_id: "g".into(),
                generation_id: generation,
                member_id: member.into(),
                group_instance_id: None,
            },
        )
    }

    /// The reply to `request`, if it has come.
    fn reply(&self, request: RequestId) -> Option<&Reply> {
        self.replies.iter().find(|r| r.request() == request)
    }

    fn joined(&self, request: RequestId) -> JoinResponse {
        match self.reply(request) {
            Some(Reply::Join { result: Ok(r), .. }) => r.clone(),
            other => panic!("join {request}: expected a response, got {other:?}"),
        }
    }

    fn join_error(&self, request: RequestId) -> GroupError {
        match self.reply(request) {
            Some(Reply::Join { result: Err(e), .. }) => e.clone(),
            other => panic!("join {request}: expected an error, got {other:?}"),
        }
    }

    fn synced(&self, request: RequestId) -> Vec<u8> {
        match self.reply(request) {
            Some(Reply::Sync { result: Ok(r), .. }) => r.assignment.clone(),
            other => panic!("sync {request}: expected a response, got {other:?}"),
        }
    }

    fn sync_error(&self, request: RequestId) -> GroupError {
        match self.reply(request) {
            Some(Reply::Sync { result: Err(e), .. }) => e.clone(),
            other => panic!("sync {request}: expected an error, got {other:?}"),
        }
    }

    /// Two members formed into a Stable generation 1: returns (leader, follower).
    fn stable_pair(&mut self) -> (String, String) {
        let a = self.join(0, join_req("", "a"));
        let b = self.join(10, join_req("", "b"));
        // The initial delay, extended by b's arrival, ends at 3010.
        self.tick(3010);
        let (ja, jb) = (self.joined(a), self.joined(b));
        assert_eq!(ja.generation_id, 1);
        let (leader, follower) = if ja.leader == ja.member_id {
            (ja.member_id, jb.member_id)
        } else {
            (jb.member_id, ja.member_id)
        };
        let s1 = self.sync(3020, &follower, 1, &[]);
        let s2 = self.sync(3020, &leader, 1, &[(&leader, b"L"), (&follower, b"F")]);
        assert_eq!(self.synced(s1), b"F");
        assert_eq!(self.synced(s2), b"L");
        assert_eq!(self.g.state(), GroupState::Stable);
        (leader, follower)
    }
}

#[test]
fn two_members_join_one_leads_and_sync_distributes_the_assignments() {
    let mut h = Harness::new(3000);
    let a = h.join(0, join_req("", "client-a"));
    let b = h.join(100, join_req("", "client-b"));
    // The initial delay holds the first rebalance open for more members.
    assert!(h.reply(a).is_none() && h.reply(b).is_none());
    assert_eq!(h.g.state(), GroupState::PreparingRebalance);
    h.tick(3099);
    assert!(h.reply(a).is_none(), "each newcomer extends the delay");
    h.tick(3100);
    let (ja, jb) = (h.joined(a), h.joined(b));
    assert!(ja.member_id.starts_with("client-a-"), "{}", ja.member_id);
    assert_eq!(
        ja.member_id.len(),
        "client-a-".len() + 36,
        "client id + uuid"
    );
    assert_eq!((ja.generation_id, jb.generation_id), (1, 1));
    assert_eq!(ja.leader, ja.member_id, "the first member leads");
    assert_eq!(jb.leader, ja.member_id);
    assert_eq!(ja.protocol_name.as_deref(), Some("range"));
    assert_eq!(ja.members.len(), 2, "the leader sees every member");
    assert!(ja
        .members
        .iter()
        .all(|m| m.metadata == subscription(&["t"])));
    assert!(jb.members.is_empty(), "followers see none");
    assert_eq!(h.g.state(), GroupState::CompletingRebalance);

    // The follower's sync waits for the leader's.
    let sb = h.sync(3200, &jb.member_id, 1, &[]);
    assert!(h.reply(sb).is_none());
    let sa = h.sync(
        3300,
        &ja.member_id,
        1,
        &[(&ja.member_id, b"p0"), (&jb.member_id, b"p1")],
    );
    assert_eq!(h.synced(sa), b"p0");
    assert_eq!(h.synced(sb), b"p1");
    assert_eq!(h.g.state(), GroupState::Stable);
    assert_eq!(h.heartbeat(3400, &jb.member_id, 1), Ok(()));
    // A late follower sync in a Stable group is answered at once.
    let again = h.sync(3500, &jb.member_id, 1, &[]);
    assert_eq!(h.synced(again), b"p1");
}

#[test]
fn a_third_member_triggers_a_rebalance_and_everyone_rejoins_at_the_next_generation() {
    let mut h = Harness::new(3000);
    let (leader, follower) = h.stable_pair();
    let c = h.join(5000, join_req("", "c"));
    assert_eq!(h.g.state(), GroupState::PreparingRebalance);
    assert!(h.reply(c).is_none(), "waits for the known members");
    assert!(matches!(
        h.heartbeat(5100, &leader, 1),
        Err(GroupError::RebalanceInProgress { .. })
    ));
    let rl = h.join(5200, join_req(&leader, "a"));
    assert!(h.reply(rl).is_none());
    let rf = h.join(5300, join_req(&follower, "b"));
    let (jl, jf, jc) = (h.joined(rl), h.joined(rf), h.joined(c));
    assert_eq!(
        (jl.generation_id, jf.generation_id, jc.generation_id),
        (2, 2, 2)
    );
    assert_eq!(jl.leader, leader, "the leader keeps leading");
    assert_eq!(jl.members.len(), 3);
    assert!(matches!(
        h.heartbeat(5400, &follower, 1),
        Err(GroupError::IllegalGeneration { got: 1, current: 2 })
    ));
    // A sync of the old generation is refused.
    let old = h.sync(5500, &follower, 1, &[]);
    assert!(matches!(
        h.sync_error(old),
        GroupError::IllegalGeneration { .. }
    ));
}

#[test]
fn a_silent_member_is_expelled_after_its_session_timeout_and_the_rest_rebalance() {
    let mut h = Harness::new(3000);
    let (leader, follower) = h.stable_pair();
    // Only the leader heartbeats.
    for t in (4000..=13_000).step_by(2000) {
        assert_eq!(h.heartbeat(t, &leader, 1), Ok(()));
        h.tick(t);
    }
    assert!(
        h.g.has_member(&follower),
        "the session lasts 10 s from its last sync"
    );
    h.tick(13_020);
    assert!(
        !h.g.has_member(&follower),
        "expelled 10 s after its sync at 3020"
    );
    assert_eq!(h.g.state(), GroupState::PreparingRebalance);
    let r = h.join(13_100, join_req(&leader, "a"));
    let j = h.joined(r);
    assert_eq!((j.generation_id, j.members.len()), (2, 1));
}

#[test]
fn leaving_triggers_a_rebalance_and_the_last_one_out_empties_the_group() {
    let mut h = Harness::new(3000);
    let (leader, follower) = h.stable_pair();
    let res =
        h.g.leave(
            4000,
            &[
                LeaveMember {
                    member_id: leader.clone(),
                    group_instance_id: None,
                },
                LeaveMember {
                    member_id: "nobody".into(),
                    group_instance_id: None,
                },
            ],
        )
        .unwrap();
    assert_eq!(res[0], Ok(()));
    assert!(matches!(res[1], Err(GroupError::UnknownMemberId { .. })));
    assert_eq!(h.g.state(), GroupState::PreparingRebalance);
    let r = h.join(4100, join_req(&follower, "b"));
    let j = h.joined(r);
    assert_eq!(j.leader, follower, "leadership passes on");
    assert_eq!(j.generation_id, 2);
    h.g.leave(
        4200,
        &[LeaveMember {
            member_id: follower.clone(),
            group_instance_id: None,
        }],
    )
    .unwrap();
    assert_eq!(h.g.state(), GroupState::Empty);
    assert_eq!(h.g.generation(), 3);
}

fn static_req(instance: &str, member_id: &str) -> JoinRequest {
    JoinRequest {
        group_instance_id: Some(instance.into()),
        ..join_req(member_id, instance)
    }
}

#[test]
fn a_restarted_static_member_takes_its_place_without_a_rebalance_and_fences_its_old_id() {
    let mut h = Harness::new(0);
    let a = h.join(0, static_req("i-a", ""));
    let ja = h.joined(a);
    let b = h.join(10, static_req("i-b", ""));
    let rb = h.join(20, static_req("i-a", &ja.member_id));
    let (ja, jb) = (h.joined(rb), h.joined(b));
    assert_eq!(ja.generation_id, 2);
    h.sync(30, &jb.member_id, 2, &[]);
    h.sync(
        40,
        &ja.member_id,
        2,
        &[(&ja.member_id, b"A"), (&jb.member_id, b"B")],
    );
    assert_eq!(h.g.state(), GroupState::Stable);

    // b restarts: a fresh JoinGroup with an empty member id and the same instance id.
    let again = h.join(1000, static_req("i-b", ""));
    let j = h.joined(again);
    assert_ne!(j.member_id, jb.member_id);
    assert_eq!(j.generation_id, 2, "no rebalance");
    assert_eq!(h.g.state(), GroupState::Stable);
    let s = h.sync(1100, &j.member_id, 2, &[]);
    assert_eq!(h.synced(s), b"B", "it inherits the assignment");

    // The old member id is fenced wherever it shows up with its instance id.
    let hb = h.g.heartbeat(
        1200,
        &HeartbeatRequest {
            group_id: "g".into(),
            generation_id: 2,
            member_id: jb.member_id.clone(),
            group_instance_id: Some("i-b".into()),
        },
    );
    assert!(
        matches!(hb, Err(GroupError::FencedInstanceId { .. })),
        "{hb:?}"
    );
    let commit = h.g.check_commit(1300, &jb.member_id, Some("i-b"), 2);
    assert!(matches!(commit, Err(GroupError::FencedInstanceId { .. })));
    assert!(matches!(
        h.heartbeat(1400, &jb.member_id, 2),
        Err(GroupError::UnknownMemberId { .. })
    ));

    // Changed protocols do rebalance.
    let mut changed = static_req("i-b", "");
    changed.protocols = protocols(&["range"], &["t", "u"]);
    h.join(2000, changed);
    assert_eq!(h.g.state(), GroupState::PreparingRebalance);
}

#[test]
fn the_rebalance_timeout_removes_a_member_that_did_not_rejoin() {
    let mut h = Harness::new(3000);
    let (leader, follower) = h.stable_pair();
    let r = h.join(5000, join_req(&leader, "a"));
    // The follower heartbeats (keeping its session) but never rejoins.
    for t in (5000..35_000).step_by(3000) {
        let _ = h.heartbeat(t, &follower, 1);
        h.tick(t);
        assert!(h.reply(r).is_none(), "still waiting at {t}");
    }
    h.tick(35_000);
    let j = h.joined(r);
    assert_eq!((j.generation_id, j.members.len()), (2, 1));
    assert!(!h.g.has_member(&follower));
}

#[test]
fn member_id_required_then_join_with_the_given_id() {
    let mut h = Harness::new(0);
    let mut req = join_req("", "kip394");
    req.require_known_member_id = true;
    let first = h.join(0, req.clone());
    let GroupError::MemberIdRequired { member_id } = h.join_error(first) else {
        panic!("expected MEMBER_ID_REQUIRED");
    };
    assert!(member_id.starts_with("kip394-"));
    assert_eq!(h.g.state(), GroupState::Empty, "no member yet");
    req.member_id = member_id.clone();
    let second = h.join(10, req.clone());
    let j = h.joined(second);
    assert_eq!((j.member_id, j.generation_id), (member_id, 1));
    // An id the coordinator never gave out is unknown.
    req.member_id = "made-up".into();
    let third = h.join(20, req);
    assert!(matches!(
        h.join_error(third),
        GroupError::UnknownMemberId { .. }
    ));
}

#[test]
fn an_unused_required_member_id_expires() {
    let mut h = Harness::new(0);
    let mut req = join_req("", "x");
    req.require_known_member_id = true;
    let r = h.join(0, req.clone());
    let GroupError::MemberIdRequired { member_id } = h.join_error(r) else {
        panic!()
    };
    h.tick(SESSION as u64 + 1);
    req.member_id = member_id;
    let late = h.join(SESSION as u64 + 2, req);
    assert!(matches!(
        h.join_error(late),
        GroupError::UnknownMemberId { .. }
    ));
}

#[test]
fn commits_are_checked_against_member_and_generation() {
    let mut h = Harness::new(3000);
    // A simple consumer may commit to an Empty group.
    assert_eq!(h.g.check_commit(0, "", None, -1), Ok(()));
    let (leader, _follower) = h.stable_pair();
    assert_eq!(h.g.check_commit(4000, &leader, None, 1), Ok(()));
    assert!(matches!(
        h.g.check_commit(4000, &leader, None, 0),
        Err(GroupError::IllegalGeneration { got: 0, current: 1 })
    ));
    assert!(matches!(
        h.g.check_commit(4000, "stranger", None, 1),
        Err(GroupError::UnknownMemberId { .. })
    ));
    assert!(matches!(
        h.g.check_commit(4000, "", None, -1),
        Err(GroupError::UnknownMemberId { .. })
    ));
    // A member may still commit its generation while a rebalance is being prepared.
    h.join(5000, join_req("", "c"));
    assert_eq!(h.g.check_commit(5001, &leader, None, 1), Ok(()));
}

#[test]
fn a_rebalance_during_completing_answers_parked_syncs_with_rebalance_in_progress() {
    let mut h = Harness::new(0);
    let a = h.join(0, join_req("", "a"));
    let ja = h.joined(a);
    let b = h.join(10, join_req("", "b"));
    let ra = h.join(20, join_req(&ja.member_id, "a"));
    let (ja, jb) = (h.joined(ra), h.joined(b));
    let follower = if ja.leader == ja.member_id { &jb } else { &ja };
    let s = h.sync(30, &follower.member_id, 2, &[]);
    h.join(40, join_req("", "c"));
    assert!(matches!(
        h.sync_error(s),
        GroupError::RebalanceInProgress { .. }
    ));
}

#[test]
fn the_protocol_is_chosen_by_vote_among_those_all_members_support() {
    let mut h = Harness::new(1000);
    let mut a = join_req("", "a");
    a.protocols = protocols(&["roundrobin", "range"], &["t"]);
    let mut b = join_req("", "b");
    b.protocols = protocols(&["range", "cooperative-sticky"], &["t"]);
    let mut c = join_req("", "c");
    c.protocols = protocols(&["cooperative-sticky", "range", "roundrobin"], &["t"]);
    let ids = [h.join(0, a), h.join(1, b), h.join(2, c)];
    h.tick(5000);
    for id in ids {
        assert_eq!(h.joined(id).protocol_name.as_deref(), Some("range"));
    }
    let mut d = join_req("", "d");
    d.protocols = protocols(&["sticky"], &["t"]);
    let r = h.join(6000, d);
    assert!(matches!(
        h.join_error(r),
        GroupError::InconsistentGroupProtocol { .. }
    ));
    let mut e = join_req("", "e");
    e.protocol_type = "connect".into();
    let r = h.join(6000, e);
    assert!(matches!(
        h.join_error(r),
        GroupError::InconsistentGroupProtocol { .. }
    ));
}

#[test]
fn session_timeouts_outside_the_configured_range_are_refused() {
    let mut h = Harness::new(0);
    let mut req = join_req("", "a");
    req.session_timeout_ms = 10;
    let r = h.join(0, req);
    assert_eq!(h.join_error(r).code(), 26);
}

#[test]
fn only_an_empty_group_can_be_deleted_and_offsets_delete_respects_subscriptions() {
    let mut h = Harness::new(3000);
    let (leader, follower) = h.stable_pair();
    assert!(matches!(
        h.g.mark_dead(),
        Err(GroupError::NonEmptyGroup { .. })
    ));
    assert!(matches!(
        h.g.check_offset_delete("t"),
        Err(GroupError::GroupSubscribedToTopic { .. })
    ));
    assert_eq!(h.g.check_offset_delete("other"), Ok(()));
    let leaving: Vec<LeaveMember> = [leader, follower]
        .into_iter()
        .map(|member_id| LeaveMember {
            member_id,
            group_instance_id: None,
        })
        .collect();
    h.g.leave(4000, &leaving).unwrap();
    assert_eq!(h.g.state(), GroupState::Empty);
    assert_eq!(h.g.check_offset_delete("t"), Ok(()));
    assert_eq!(h.g.mark_dead(), Ok(()));
    assert_eq!(h.g.state(), GroupState::Dead);
    let r = h.join(5000, join_req("", "late"));
    assert_eq!(h.join_error(r).code(), 15);
}

#[test]
fn describe_shows_members_and_assignments_only_when_stable() {
    let mut h = Harness::new(3000);
    let (leader, _) = h.stable_pair();
    let d = h.g.describe();
    assert_eq!(
        (d.state, d.protocol.as_str()),
        (GroupState::Stable, "range")
    );
    assert_eq!(d.members.len(), 2);
    let l = d.members.iter().find(|m| m.member_id == leader).unwrap();
    assert_eq!(l.assignment, b"L");
    h.join(5000, join_req("", "c"));
    let d = h.g.describe();
    assert_eq!(d.state, GroupState::PreparingRebalance);
    assert!(d.protocol.is_empty() && d.members.iter().all(|m| m.assignment.is_empty()));
    assert_eq!(
        "preparingrebalance".parse::<GroupState>(),
        Ok(GroupState::PreparingRebalance)
    );
    assert_eq!(
        GroupState::CompletingRebalance.to_string(),
        "CompletingRebalance"
    );
}

#[test]
fn error_codes_match_kafka() {
    let e = GroupError::MemberIdRequired {
        member_id: "m".into(),
    };
    assert_eq!(e.code(), 79);
    assert_eq!(
        GroupError::FencedInstanceId {
            group: "g".into(),
            instance: "i".into(),
            member: "m".into()
        }
        .code(),
        82
    );
    assert_eq!(
        GroupError::GroupSubscribedToTopic {
            group: "g".into(),
            topic: "t".into()
        }
        .code(),
        86
    );
}

/// A tiny deterministic generator, so a failing seed can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn check_invariants(g: &Group, seed: u64, step: usize) {
    let ctx = format!("seed {seed} step {step}: {g:?}");
    match g.state() {
        GroupState::Empty => assert!(g.member_ids().next().is_none(), "{ctx}"),
        GroupState::CompletingRebalance | GroupState::Stable => {
            let leader = g.leader().unwrap_or_else(|| panic!("no leader: {ctx}"));
            assert!(g.has_member(leader), "leader not a member: {ctx}");
            assert!(g.protocol().is_some(), "{ctx}");
        }
        GroupState::PreparingRebalance => {
            assert!(
                g.next_deadline().is_some(),
                "a rebalance without deadline: {ctx}"
            )
        }
        GroupState::Dead => panic!("{ctx}"),
    }
}

/// Random joins, rejoins, syncs, heartbeats, leaves and clock jumps against one group:
/// no request is answered twice, generations only grow, the invariants of each state
/// hold after every step, and once time runs far ahead every parked request has been
/// answered and every silent member is gone.
#[test]
fn random_member_behaviour_keeps_the_group_consistent_and_answers_every_request() {
    // How often each state was seen after a step, so the walk provably covers them.
    let mut seen = std::collections::BTreeMap::<GroupState, usize>::new();
    for seed in 1..=300u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let mut h = Harness::new(rng.below(3) * 1000);
        let mut now = 0u64;
        let mut known: Vec<(String, i32)> = Vec::new();
        let mut issued = 0u64;
        let mut last_generation = 0;
        for step in 0..200 {
            now += rng.below(4000);
            let pick = |rng: &mut Rng, known: &Vec<(String, i32)>| {
                (!known.is_empty()).then(|| known[rng.below(known.len() as u64) as usize].clone())
            };
            match rng.below(7) {
                0 => {
                    let mut req = join_req("", &format!("c{step}"));
                    req.require_known_member_id = rng.below(2) == 0;
                    if rng.below(3) == 0 {
                        req.group_instance_id = Some(format!("s{}", rng.below(2)));
                    }
                    h.join(now, req);
                    issued += 1;
                }
                1 | 2 => {
                    if let Some((m, _)) = pick(&mut rng, &known) {
                        let mut req = join_req(&m, "c");
                        if rng.below(5) == 0 {
                            req.protocols = protocols(&["range"], &["t", "x"]);
                        }
                        h.join(now, req);
                        issued += 1;
                    }
                }
                3 => {
                    if let Some((m, gen)) = pick(&mut rng, &known) {
                        let assignments: Vec<(String, Vec<u8>)> = known
                            .iter()
                            .map(|(k, _)| (k.clone(), k.as_bytes().to_vec()))
                            .collect();
                        h.next += 1;
                        h.g.sync(
                            now,
                            h.next,
                            SyncRequest {
                                group_id: "g".into(),
                                generation_id: gen,
                                member_id: m,
                                group_instance_id: None,
                                protocol_type: None,
                                protocol_name: None,
                                assignments,
                            },
                        );
                        h.collect();
                        issued += 1;
                    }
                }
                4 => {
                    if let Some((m, gen)) = pick(&mut rng, &known) {
                        let _ = h.heartbeat(now, &m, gen);
                    }
                }
                5 => {
                    if let Some((m, _)) = pick(&mut rng, &known) {
                        let _ = h.g.leave(
                            now,
                            &[LeaveMember {
                                member_id: m,
                                group_instance_id: None,
                            }],
                        );
                        h.collect();
                    }
                }
                _ => h.tick(now),
            }
            // Learn member ids and generations from the answers, as clients do.
            for r in &h.replies {
                match r {
                    Reply::Join { result: Ok(j), .. } => {
                        known.retain(|(m, _)| *m != j.member_id);
                        known.push((j.member_id.clone(), j.generation_id));
                    }
                    Reply::Join {
                        result: Err(GroupError::MemberIdRequired { member_id }),
                        ..
                    } if !known.iter().any(|(m, _)| m == member_id) => {
                        known.push((member_id.clone(), -1));
                    }
                    _ => {}
                }
            }
            assert!(
                h.g.generation() >= last_generation,
                "seed {seed}: generation went back"
            );
            last_generation = h.g.generation();
            check_invariants(&h.g, seed, step);
            *seen.entry(h.g.state()).or_default() += 1;
        }
        for _ in 0..10 {
            now += 10_000_000;
            h.tick(now);
        }
        let mut answered: Vec<RequestId> = h.replies.iter().map(Reply::request).collect();
        answered.sort_unstable();
        let total = answered.len();
        answered.dedup();
        assert_eq!(
            answered.len(),
            total,
            "seed {seed}: a request was answered twice"
        );
        assert_eq!(
            total as u64, issued,
            "seed {seed}: a request was never answered"
        );
        assert_eq!(h.g.state(), GroupState::Empty, "seed {seed}: {:?}", h.g);
    }
    for state in [
        GroupState::Empty,
        GroupState::PreparingRebalance,
        GroupState::CompletingRebalance,
        GroupState::Stable,
    ] {
        assert!(
            seen.get(&state).copied().unwrap_or(0) > 100,
            "{state} barely seen: {seen:?}"
        );
    }
}
