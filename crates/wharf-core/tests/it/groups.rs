//! Consumer groups through `Broker::groups()`: the rebalance protocol in real time (short
//! timeouts), committed offsets across reopens, crashes and damaged journals.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use wharf_core::group::{
    GroupState, HeartbeatRequest, JoinRequest, JoinResponse, LeaveMember, OffsetCommit,
    OffsetCommitRequest, Protocol, SyncRequest, TopicPartition, GROUPS_DIR, JOURNAL_FILE,
    SNAPSHOT_FILE,
};
use wharf_core::{Broker, BrokerConfig, GroupConfig, GroupCoordinator, GroupError};

fn group_config() -> GroupConfig {
    GroupConfig {
        initial_rebalance_delay: Duration::ZERO,
        min_session_timeout: Duration::from_millis(10),
        tick_interval: Duration::from_millis(10),
        ..GroupConfig::default()
    }
}

async fn open_with(dir: &Path, groups: GroupConfig) -> Broker {
    let mut config = BrokerConfig::new(dir);
    config.groups = groups;
    match Broker::open(config).await {
        Ok(b) => b,
        Err(e) => panic!("opening a broker on {}: {e}", dir.display()),
    }
}

async fn open(dir: &Path) -> Broker {
    open_with(dir, group_config()).await
}

fn subscription(topics: &[&str]) -> Vec<u8> {
    let mut b = 1i16.to_be_bytes().to_vec();
    b.extend((topics.len() as i32).to_be_bytes());
    for t in topics {
        b.extend((t.len() as i16).to_be_bytes());
        b.extend(t.as_bytes());
    }
    b.extend((-1i32).to_be_bytes());
    b.extend(0i32.to_be_bytes());
    b
}

fn join_req(
    group: &str,
    member_id: &str,
    client: &str,
    session_ms: i32,
    rebalance_ms: i32,
) -> JoinRequest {
    JoinRequest {
        group_id: group.into(),
        member_id: member_id.into(),
        group_instance_id: None,
        client_id: client.into(),
        client_host: "/127.0.0.1".into(),
        session_timeout_ms: session_ms,
        rebalance_timeout_ms: rebalance_ms,
        protocol_type: "consumer".into(),
        protocols: vec![Protocol {
            name: "cooperative-sticky".into(),
            metadata: subscription(&["orders"]),
        }],
        require_known_member_id: false,
    }
}

fn sync_req(group: &str, j: &JoinResponse, assignments: Vec<(String, Vec<u8>)>) -> SyncRequest {
    SyncRequest {
        group_id: group.into(),
        generation_id: j.generation_id,
        member_id: j.member_id.clone(),
        group_instance_id: None,
        protocol_type: Some("consumer".into()),
        protocol_name: j.protocol_name.clone(),
        assignments,
    }
}

fn heartbeat(group: &str, j: &JoinResponse) -> HeartbeatRequest {
    HeartbeatRequest {
        group_id: group.into(),
        generation_id: j.generation_id,
        member_id: j.member_id.clone(),
        group_instance_id: None,
    }
}

/// The leader's assignment: member i gets the bytes "p<i>".
fn assign(leader: &JoinResponse) -> Vec<(String, Vec<u8>)> {
    leader
        .members
        .iter()
        .enumerate()
        .map(|(i, m)| (m.member_id.clone(), format!("p{i}").into_bytes()))
        .collect()
}

/// Joins `n` members at once (with an initial delay so they land in one generation) and
/// syncs them; returns their join responses, leader first.
async fn stable_group(groups: &GroupCoordinator, group: &str, n: usize) -> Vec<JoinResponse> {
    let mut tasks = Vec::new();
    for i in 0..n {
        let g = groups.clone();
        let req = join_req(group, "", &format!("c{i}"), 5000, 5000);
        tasks.push(tokio::spawn(async move { g.join(req).await }));
    }
    let mut joined = Vec::new();
    for t in tasks {
        joined.push(t.await.unwrap().unwrap());
    }
    joined.sort_by_key(|j| j.leader != j.member_id);
    let generation = joined[0].generation_id;
    assert!(joined.iter().all(|j| j.generation_id == generation));
    let mut syncs = Vec::new();
    for j in &joined {
        let g = groups.clone();
        let req = sync_req(
            group,
            j,
            if j.leader == j.member_id {
                assign(j)
            } else {
                vec![]
            },
        );
        syncs.push(tokio::spawn(async move { g.sync(req).await }));
    }
    for s in syncs {
        s.await.unwrap().unwrap();
    }
    joined
}

/// Polls (never for long) until `group` is in `state`.
async fn wait_for_state(groups: &GroupCoordinator, group: &str, state: GroupState) {
    for _ in 0..500 {
        if groups.describe_group(group).map(|d| d.state) == Ok(state) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("group {group} never reached {state}");
}

fn with_delay(ms: u64) -> GroupConfig {
    GroupConfig {
        initial_rebalance_delay: Duration::from_millis(ms),
        ..group_config()
    }
}

fn tp(topic: &str, p: i32) -> TopicPartition {
    TopicPartition::new(topic, p)
}

async fn commit(
    groups: &GroupCoordinator,
    group: &str,
    generation: i32,
    member: &str,
    offsets: &[(i32, i64)],
) -> Result<(), GroupError> {
    let results = groups
        .commit_offsets(OffsetCommitRequest {
            group_id: group.into(),
            generation_id: generation,
            member_id: member.into(),
            group_instance_id: None,
            offsets: offsets
                .iter()
                .map(|(p, o)| OffsetCommit {
                    partition: tp("orders", *p),
                    offset: *o,
                    leader_epoch: -1,
                    metadata: Some(format!("m{o}")),
                })
                .collect(),
        })
        .await?;
    results.into_iter().try_for_each(|(_, r)| r)
}

async fn fetched(groups: &GroupCoordinator, group: &str, p: i32) -> Option<i64> {
    let got = groups
        .fetch_offsets(group, Some(vec![tp("orders", p)]))
        .await
        .unwrap();
    got[0].1.as_ref().map(|o| o.offset)
}

#[tokio::test]
async fn two_members_join_sync_and_a_third_makes_everyone_rejoin_at_the_next_generation() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open_with(dir.path(), with_delay(300)).await;
    let groups = broker.groups();
    let joined = stable_group(groups, "g", 2).await;
    let (leader, follower) = (&joined[0], &joined[1]);
    assert_eq!(leader.generation_id, 1);
    assert_eq!(leader.members.len(), 2);
    assert!(follower.members.is_empty());
    assert_eq!(leader.protocol_name.as_deref(), Some("cooperative-sticky"));
    let d = groups.describe_group("g").unwrap();
    assert_eq!(d.state, GroupState::Stable);
    let mut assignments: Vec<Vec<u8>> = d.members.iter().map(|m| m.assignment.clone()).collect();
    assignments.sort();
    assert_eq!(assignments, vec![b"p0".to_vec(), b"p1".to_vec()]);

    let g = groups.clone();
    let third = tokio::spawn(async move { g.join(join_req("g", "", "c2", 5000, 5000)).await });
    wait_for_state(groups, "g", GroupState::PreparingRebalance).await;
    assert!(matches!(
        groups.heartbeat(heartbeat("g", leader)).await,
        Err(GroupError::RebalanceInProgress { .. })
    ));
    let (g1, g2) = (groups.clone(), groups.clone());
    let (l, f) = (leader.member_id.clone(), follower.member_id.clone());
    let rl = tokio::spawn(async move { g1.join(join_req("g", &l, "c0", 5000, 5000)).await });
    let rf = tokio::spawn(async move { g2.join(join_req("g", &f, "c1", 5000, 5000)).await });
    let (rl, rf, third) = (
        rl.await.unwrap().unwrap(),
        rf.await.unwrap().unwrap(),
        third.await.unwrap().unwrap(),
    );
    assert_eq!(
        (rl.generation_id, rf.generation_id, third.generation_id),
        (2, 2, 2)
    );
    assert_eq!(rl.leader, leader.member_id);
    assert_eq!(rl.members.len(), 3);
    broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_member_that_stops_heartbeating_is_expelled_and_the_others_rebalance() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open_with(dir.path(), with_delay(300)).await;
    let groups = broker.groups();
    let mut tasks = Vec::new();
    for i in 0..2 {
        let g = groups.clone();
        tasks.push(tokio::spawn(async move {
            g.join(join_req("g", "", &format!("c{i}"), 300, 5000)).await
        }));
    }
    let a = tasks.remove(0).await.unwrap().unwrap();
    let b = tasks.remove(0).await.unwrap().unwrap();
    let (leader, follower) = if a.leader == a.member_id {
        (a, b)
    } else {
        (b, a)
    };
    let g = groups.clone();
    let fs = sync_req("g", &follower, vec![]);
    let fsync = tokio::spawn(async move { g.sync(fs).await });
    groups
        .sync(sync_req("g", &leader, assign(&leader)))
        .await
        .unwrap();
    fsync.await.unwrap().unwrap();

    // Only the leader heartbeats; the follower's 300 ms session runs out.
    let mut expelled = false;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        match groups.heartbeat(heartbeat("g", &leader)).await {
            Ok(()) => {}
            Err(GroupError::RebalanceInProgress { .. }) => {
                expelled = true;
                break;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(expelled, "the silent member was never expelled");
    let r = groups
        .join(join_req("g", &leader.member_id, "c0", 300, 5000))
        .await
        .unwrap();
    assert_eq!((r.generation_id, r.members.len()), (2, 1));
    assert!(matches!(
        groups.heartbeat(heartbeat("g", &follower)).await,
        Err(GroupError::UnknownMemberId { .. })
    ));
    broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn leave_makes_the_others_rebalance_and_the_last_leaving_empties_the_group() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open_with(dir.path(), with_delay(300)).await;
    let groups = broker.groups();
    let joined = stable_group(groups, "g", 2).await;
    let res = groups
        .leave(
            "g",
            vec![LeaveMember {
                member_id: joined[1].member_id.clone(),
                group_instance_id: None,
            }],
        )
        .await
        .unwrap();
    assert_eq!(res, vec![Ok(())]);
    assert_eq!(
        groups.describe_group("g").unwrap().state,
        GroupState::PreparingRebalance
    );
    let r = groups
        .join(join_req("g", &joined[0].member_id, "c0", 5000, 5000))
        .await
        .unwrap();
    assert_eq!((r.generation_id, r.members.len()), (2, 1));
    groups
        .leave(
            "g",
            vec![LeaveMember {
                member_id: r.member_id.clone(),
                group_instance_id: None,
            }],
        )
        .await
        .unwrap();
    assert_eq!(groups.describe_group("g").unwrap().state, GroupState::Empty);
    broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_static_member_restarting_with_its_instance_id_causes_no_rebalance_and_fences_the_old_id()
{
    let dir = tempfile::tempdir().unwrap();
    let broker = open(dir.path()).await;
    let groups = broker.groups();
    let mut req = join_req("g", "", "static", 5000, 5000);
    req.group_instance_id = Some("host-1".into());
    let first = groups.join(req.clone()).await.unwrap();
    assert_eq!(first.generation_id, 1);
    let mut s = sync_req("g", &first, assign(&first));
    s.group_instance_id = Some("host-1".into());
    assert_eq!(groups.sync(s).await.unwrap().assignment, b"p0");

    // The process restarts: it lost its member id but keeps its instance id.
    let second = groups.join(req).await.unwrap();
    assert_ne!(second.member_id, first.member_id);
    assert_eq!(second.generation_id, 1, "no rebalance");
    assert_eq!(
        groups.describe_group("g").unwrap().state,
        GroupState::Stable
    );
    let mut s = sync_req("g", &second, vec![]);
    s.group_instance_id = Some("host-1".into());
    assert_eq!(groups.sync(s).await.unwrap().assignment, b"p0");

    let mut old = heartbeat("g", &first);
    old.group_instance_id = Some("host-1".into());
    let err = groups.heartbeat(old).await.unwrap_err();
    assert!(matches!(err, GroupError::FencedInstanceId { .. }), "{err}");
    assert_eq!(err.code(), 82);
    let mut new = heartbeat("g", &second);
    new.group_instance_id = Some("host-1".into());
    groups.heartbeat(new).await.unwrap();
    broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_rebalance_timeout_removes_a_member_that_does_not_rejoin() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open_with(dir.path(), with_delay(300)).await;
    let groups = broker.groups();
    let mut tasks = Vec::new();
    for i in 0..2 {
        let g = groups.clone();
        tasks.push(tokio::spawn(async move {
            g.join(join_req("g", "", &format!("c{i}"), 5000, 300)).await
        }));
    }
    let a = tasks.remove(0).await.unwrap().unwrap();
    let b = tasks.remove(0).await.unwrap().unwrap();
    let (a, b) = if a.leader == a.member_id {
        (a, b)
    } else {
        (b, a)
    };
    let g = groups.clone();
    let bs = sync_req("g", &b, vec![]);
    let bsync = tokio::spawn(async move { g.sync(bs).await });
    groups.sync(sync_req("g", &a, assign(&a))).await.unwrap();
    bsync.await.unwrap().unwrap();
    // The leader rejoins (a rebalance); b keeps heartbeating but never rejoins.
    let g = groups.clone();
    let am = a.member_id.clone();
    let rejoin = tokio::spawn(async move { g.join(join_req("g", &am, "c0", 5000, 300)).await });
    let started = std::time::Instant::now();
    while !rejoin.is_finished() {
        let _ = groups.heartbeat(heartbeat("g", &b)).await;
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "rebalance never completed"
        );
    }
    let r = rejoin.await.unwrap().unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "{:?}",
        started.elapsed()
    );
    assert_eq!((r.generation_id, r.members.len()), (2, 1));
    let d = groups.describe_group("g").unwrap();
    assert_eq!(d.members.len(), 1);
    assert_eq!(d.members[0].member_id, a.member_id);
    broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn member_id_required_hands_out_an_id_to_join_with() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open(dir.path()).await;
    let groups = broker.groups();
    let mut req = join_req("g", "", "rdkafka", 5000, 5000);
    req.require_known_member_id = true;
    let err = groups.join(req.clone()).await.unwrap_err();
    let GroupError::MemberIdRequired { member_id } = err else {
        panic!("expected MEMBER_ID_REQUIRED, got {err}")
    };
    assert!(member_id.starts_with("rdkafka-"));
    req.member_id = member_id.clone();
    let j = groups.join(req).await.unwrap();
    assert_eq!(j.member_id, member_id);
    assert_eq!(j.leader, member_id);
    broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn commits_are_checked_against_member_and_generation_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open(dir.path()).await;
    let groups = broker.groups();
    let j = groups
        .join(join_req("g", "", "c", 5000, 5000))
        .await
        .unwrap();
    groups.sync(sync_req("g", &j, assign(&j))).await.unwrap();
    commit(groups, "g", 1, &j.member_id, &[(0, 42), (1, 7)])
        .await
        .unwrap();
    assert_eq!(fetched(groups, "g", 0).await, Some(42));
    assert_eq!(fetched(groups, "g", 2).await, None);
    let stale = commit(groups, "g", 0, &j.member_id, &[(0, 99)]).await;
    assert!(
        matches!(
            stale,
            Err(GroupError::IllegalGeneration { got: 0, current: 1 })
        ),
        "{stale:?}"
    );
    let stranger = commit(groups, "g", 1, "who", &[(0, 99)]).await;
    assert!(matches!(stranger, Err(GroupError::UnknownMemberId { .. })));
    let simple = commit(groups, "g", -1, "", &[(0, 99)]).await;
    assert!(
        matches!(simple, Err(GroupError::UnknownMemberId { .. })),
        "the group is active"
    );
    assert_eq!(
        fetched(groups, "g", 0).await,
        Some(42),
        "nothing rejected was stored"
    );

    // A simple consumer may commit to a group nobody manages.
    commit(groups, "plain", -1, "", &[(3, 5)]).await.unwrap();
    assert_eq!(fetched(groups, "plain", 3).await, Some(5));
    let gone = commit(groups, "nogroup", 4, "m", &[(0, 1)]).await;
    assert!(matches!(gone, Err(GroupError::IllegalGeneration { .. })));

    let all = groups.fetch_offsets("g", None).await.unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all[1].1.as_ref().unwrap().metadata, "m7");
    let too_long = groups
        .commit_offsets(OffsetCommitRequest {
            group_id: "plain".into(),
            generation_id: -1,
            member_id: String::new(),
            group_instance_id: None,
            offsets: vec![OffsetCommit {
                partition: tp("orders", 0),
                offset: 1,
                leader_epoch: -1,
                metadata: Some("x".repeat(5000)),
            }],
        })
        .await
        .unwrap();
    assert_eq!(too_long[0].1.as_ref().unwrap_err().code(), 12);
    broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn committed_offsets_and_groups_survive_a_reopen_and_a_drop_without_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    {
        let broker = open(dir.path()).await;
        let groups = broker.groups();
        let j = groups
            .join(join_req("g", "", "c", 5000, 5000))
            .await
            .unwrap();
        groups.sync(sync_req("g", &j, assign(&j))).await.unwrap();
        commit(groups, "g", 1, &j.member_id, &[(0, 10), (1, 20)])
            .await
            .unwrap();
        commit(groups, "g", 1, &j.member_id, &[(0, 11)])
            .await
            .unwrap();
        broker.shutdown().await.unwrap();
    }
    {
        let broker = open(dir.path()).await;
        let groups = broker.groups();
        assert_eq!(fetched(groups, "g", 0).await, Some(11));
        assert_eq!(fetched(groups, "g", 1).await, Some(20));
        let listed = groups.list_groups(&[]).unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(
            (listed[0].state, listed[0].protocol_type.as_str()),
            (GroupState::Empty, "consumer")
        );
        let d = groups.describe_group("g").unwrap();
        assert_eq!(d.generation_id, 1, "the generation is kept");
        // Members are not: an old member id is unknown and must rejoin.
        let j = groups
            .join(join_req("g", "", "c", 5000, 5000))
            .await
            .unwrap();
        assert_eq!(j.generation_id, 2);
        groups.sync(sync_req("g", &j, assign(&j))).await.unwrap();
        commit(groups, "g", 2, &j.member_id, &[(1, 21)])
            .await
            .unwrap();
        // No shutdown: as close to a crash as an in-process test gets.
        drop(broker);
    }
    let broker = open(dir.path()).await;
    assert_eq!(fetched(broker.groups(), "g", 0).await, Some(11));
    assert_eq!(fetched(broker.groups(), "g", 1).await, Some(21));
    broker.shutdown().await.unwrap();
}

fn journal_path(dir: &Path) -> std::path::PathBuf {
    dir.join(GROUPS_DIR).join(JOURNAL_FILE)
}

#[tokio::test]
async fn a_journal_with_a_torn_or_corrupt_tail_recovers_to_the_last_good_record() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open(dir.path()).await;
    for o in 1..=3 {
        commit(broker.groups(), "plain", -1, "", &[(0, o)])
            .await
            .unwrap();
    }
    broker.shutdown().await.unwrap();
    drop(broker);
    let path = journal_path(dir.path());
    let good = fs::read(&path).unwrap();

    // A torn last record: cut anywhere inside it.
    let before_last = {
        let broker = open(dir.path()).await;
        commit(broker.groups(), "plain", -1, "", &[(0, 4)])
            .await
            .unwrap();
        broker.shutdown().await.unwrap();
        good.len()
    };
    let full = fs::read(&path).unwrap();
    for cut in [before_last + 1, before_last + 8, full.len() - 1] {
        fs::write(&path, &full[..cut]).unwrap();
        let broker = open(dir.path()).await;
        assert_eq!(
            fetched(broker.groups(), "plain", 0).await,
            Some(3),
            "cut at {cut}"
        );
        broker.shutdown().await.unwrap();
        drop(broker);
        assert_eq!(fs::read(&path).unwrap(), good, "the torn tail is cut off");
    }

    // A flipped bit in the last record, and garbage appended after good records.
    let mut flipped = full.clone();
    let last = flipped.len() - 3;
    flipped[last] ^= 0x40;
    fs::write(&path, &flipped).unwrap();
    let broker = open(dir.path()).await;
    assert_eq!(fetched(broker.groups(), "plain", 0).await, Some(3));
    // New commits land after the cut and are kept.
    commit(broker.groups(), "plain", -1, "", &[(0, 5)])
        .await
        .unwrap();
    broker.shutdown().await.unwrap();
    drop(broker);
    let mut f = fs::OpenOptions::new().append(true).open(&path).unwrap();
    f.write_all(&[0xff; 13]).unwrap();
    drop(f);
    let broker = open(dir.path()).await;
    assert_eq!(fetched(broker.groups(), "plain", 0).await, Some(5));
    broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_damaged_snapshot_or_journal_header_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open(dir.path()).await;
    commit(broker.groups(), "plain", -1, "", &[(0, 1)])
        .await
        .unwrap();
    broker.shutdown().await.unwrap();
    drop(broker);
    let path = journal_path(dir.path());
    let mut bytes = fs::read(&path).unwrap();
    bytes[0] = b'X';
    fs::write(&path, &bytes).unwrap();
    let err = match Broker::open(BrokerConfig::new(dir.path())).await {
        Err(e) => e,
        Ok(_) => panic!("opened over a journal with a bad magic"),
    };
    assert!(err.to_string().contains("offsets.journal"), "{err}");
}

#[tokio::test]
async fn compaction_writes_a_snapshot_and_keeps_every_offset() {
    let dir = tempfile::tempdir().unwrap();
    let config = GroupConfig {
        journal_compact_bytes: 2048,
        ..group_config()
    };
    let broker = open_with(dir.path(), config).await;
    for round in 0..50i64 {
        let offsets: Vec<(i32, i64)> = (0..4).map(|p| (p, round * 10 + i64::from(p))).collect();
        commit(broker.groups(), "a", -1, "", &offsets)
            .await
            .unwrap();
        commit(broker.groups(), "b", -1, "", &[(0, round)])
            .await
            .unwrap();
    }
    let deleted = broker.groups().delete_groups(vec!["b".into()]).await;
    assert_eq!(deleted[0].1, Ok(()));
    broker.shutdown().await.unwrap();
    drop(broker);
    let snapshot = dir.path().join(GROUPS_DIR).join(SNAPSHOT_FILE);
    assert!(snapshot.exists(), "no snapshot was written");
    assert!(fs::metadata(journal_path(dir.path())).unwrap().len() < 4096);
    let broker = open_with(dir.path(), config).await;
    for p in 0..4 {
        assert_eq!(
            fetched(broker.groups(), "a", p).await,
            Some(490 + i64::from(p))
        );
    }
    assert_eq!(fetched(broker.groups(), "b", 0).await, None);
    assert!(broker.groups().describe_group("b").is_err());
    broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn only_an_empty_group_can_be_deleted_and_its_offsets_go_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open(dir.path()).await;
    let groups = broker.groups();
    let j = groups
        .join(join_req("g", "", "c", 5000, 5000))
        .await
        .unwrap();
    groups.sync(sync_req("g", &j, assign(&j))).await.unwrap();
    commit(groups, "g", 1, &j.member_id, &[(0, 5)])
        .await
        .unwrap();
    let res = groups
        .delete_groups(vec!["g".into(), "missing".into(), String::new()])
        .await;
    assert!(matches!(res[0].1, Err(GroupError::NonEmptyGroup { .. })));
    assert!(matches!(res[1].1, Err(GroupError::GroupIdNotFound { .. })));
    assert!(matches!(res[2].1, Err(GroupError::InvalidGroupId { .. })));
    groups
        .leave(
            "g",
            vec![LeaveMember {
                member_id: j.member_id.clone(),
                group_instance_id: None,
            }],
        )
        .await
        .unwrap();
    assert_eq!(groups.delete_groups(vec!["g".into()]).await[0].1, Ok(()));
    assert!(matches!(
        groups.describe_group("g"),
        Err(GroupError::GroupIdNotFound { .. })
    ));
    assert_eq!(fetched(groups, "g", 0).await, None);
    broker.shutdown().await.unwrap();
    drop(broker);
    let broker = open(dir.path()).await;
    assert_eq!(
        fetched(broker.groups(), "g", 0).await,
        None,
        "deleted for good"
    );
    assert!(broker.groups().list_groups(&[]).unwrap().is_empty());
    broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn offset_delete_refuses_topics_an_active_consumer_group_subscribes_to() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open(dir.path()).await;
    let groups = broker.groups();
    let j = groups
        .join(join_req("g", "", "c", 5000, 5000))
        .await
        .unwrap();
    groups.sync(sync_req("g", &j, assign(&j))).await.unwrap();
    let results = groups
        .commit_offsets(OffsetCommitRequest {
            group_id: "g".into(),
            generation_id: 1,
            member_id: j.member_id.clone(),
            group_instance_id: None,
            offsets: ["orders", "old"]
                .iter()
                .map(|t| OffsetCommit {
                    partition: tp(t, 0),
                    offset: 1,
                    leader_epoch: -1,
                    metadata: None,
                })
                .collect(),
        })
        .await
        .unwrap();
    assert!(results.iter().all(|(_, r)| r.is_ok()));
    let res = groups
        .delete_offsets("g", vec![tp("orders", 0), tp("old", 0)])
        .await
        .unwrap();
    assert!(matches!(
        res[0].1,
        Err(GroupError::GroupSubscribedToTopic { .. })
    ));
    assert_eq!(res[1].1, Ok(()));
    let left = groups.fetch_offsets("g", None).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].0, tp("orders", 0));
    assert!(matches!(
        groups.delete_offsets("nope", vec![tp("orders", 0)]).await,
        Err(GroupError::GroupIdNotFound { .. })
    ));
    broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn list_and_describe_show_each_groups_state() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open_with(dir.path(), with_delay(300)).await;
    let groups = broker.groups();
    stable_group(groups, "stable", 1).await;
    commit(groups, "empty", -1, "", &[(0, 1)]).await.unwrap();
    let j = groups
        .join(join_req("completing", "", "c", 5000, 5000))
        .await
        .unwrap();
    assert_eq!(j.generation_id, 1);
    // A stable group that a newcomer joins waits (up to 5 s) for its member to rejoin.
    stable_group(groups, "preparing", 1).await;
    let g = groups.clone();
    let _newcomer =
        tokio::spawn(async move { g.join(join_req("preparing", "", "n", 5000, 5000)).await });
    wait_for_state(groups, "preparing", GroupState::PreparingRebalance).await;

    let states: Vec<(String, GroupState)> = groups
        .list_groups(&[])
        .unwrap()
        .into_iter()
        .map(|l| (l.group_id, l.state))
        .collect();
    assert_eq!(
        states,
        vec![
            ("completing".into(), GroupState::CompletingRebalance),
            ("empty".into(), GroupState::Empty),
            ("preparing".into(), GroupState::PreparingRebalance),
            ("stable".into(), GroupState::Stable),
        ]
    );
    let only: Vec<String> = groups
        .list_groups(&[GroupState::Stable, GroupState::Empty])
        .unwrap()
        .into_iter()
        .map(|l| l.group_id)
        .collect();
    assert_eq!(only, vec!["empty".to_string(), "stable".to_string()]);
    let d = groups.describe_group("stable").unwrap();
    assert_eq!(
        (d.protocol_type.as_str(), d.protocol.as_str()),
        ("consumer", "cooperative-sticky")
    );
    assert_eq!(d.members[0].client_id, "c0");
    assert_eq!(d.members[0].metadata, subscription(&["orders"]));
    assert_eq!(groups.describe_group("empty").unwrap().members.len(), 0);
    broker.shutdown().await.unwrap();
    // Parked requests are answered when the broker shuts down, never left hanging.
    assert!(matches!(
        groups.join(join_req("x", "", "c", 5000, 5000)).await,
        Err(GroupError::CoordinatorNotAvailable { .. })
    ));
}

/// Run as a child process by `acknowledged_commits_survive_sigkill`: commits increasing
/// offsets to the group in `WHARF_CRASH_DIR` and prints each one once acknowledged.
#[tokio::test]
#[ignore = "helper process for acknowledged_commits_survive_sigkill"]
async fn crash_committer() {
    let Ok(dir) = std::env::var("WHARF_CRASH_DIR") else {
        return;
    };
    let broker = open(Path::new(&dir)).await;
    let mut out = std::io::stdout();
    for o in 1.. {
        commit(broker.groups(), "crash", -1, "", &[(0, o), (1, o)])
            .await
            .unwrap();
        writeln!(out, "{o}").unwrap();
        out.flush().unwrap();
    }
}

#[tokio::test]
async fn acknowledged_commits_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    for round in 0..3 {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "groups::crash_committer",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("WHARF_CRASH_DIR", dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut acked = 0i64;
        while acked < 20 + round * 10 {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Ok(o) = line.trim().parse::<i64>() {
                        acked = o;
                    }
                }
                _ => panic!("the committer ended early after {acked}"),
            }
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let broker = open(dir.path()).await;
        for p in 0..2 {
            let got = fetched(broker.groups(), "crash", p).await.unwrap_or(0);
            assert!(
                got >= acked,
                "round {round}: partition {p} has {got}, {acked} was acknowledged"
            );
        }
        broker.shutdown().await.unwrap();
        drop(broker);
        // The next round's child commits from 1 again; reset so "acknowledged" stays a
        // lower bound of what must be there.
        let _ = fs::remove_dir_all(dir.path().join(GROUPS_DIR));
    }
}

#[tokio::test]
async fn failed_joins_and_syncs_of_unknown_groups_leave_no_group_behind() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open(dir.path()).await;
    let groups = broker.groups();
    let err = groups
        .join(join_req("g", "", "c", 1, 5000))
        .await
        .unwrap_err();
    assert_eq!(err.code(), 26, "{err}");
    let j = JoinResponse {
        generation_id: 1,
        protocol_type: None,
        protocol_name: None,
        leader: String::new(),
        skip_assignment: false,
        member_id: "m".into(),
        members: vec![],
    };
    let err = groups.sync(sync_req("h", &j, vec![])).await.unwrap_err();
    assert!(matches!(err, GroupError::UnknownMemberId { .. }), "{err}");
    assert!(matches!(
        groups.heartbeat(heartbeat("h", &j)).await,
        Err(GroupError::UnknownMemberId { .. })
    ));
    assert!(groups.list_groups(&[]).unwrap().is_empty());
    assert_eq!(
        groups
            .join(join_req("", "", "c", 5000, 5000))
            .await
            .unwrap_err()
            .code(),
        24
    );
    broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn concurrent_commits_are_all_acknowledged_and_all_kept() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open(dir.path()).await;
    let mut tasks = Vec::new();
    for p in 0..200 {
        let g = broker.groups().clone();
        tasks.push(tokio::spawn(async move {
            commit(&g, "many", -1, "", &[(p, i64::from(p) * 3)]).await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(
        broker
            .groups()
            .fetch_offsets("many", None)
            .await
            .unwrap()
            .len(),
        200
    );
    broker.shutdown().await.unwrap();
    drop(broker);
    let broker = open(dir.path()).await;
    let all = broker.groups().fetch_offsets("many", None).await.unwrap();
    assert_eq!(all.len(), 200);
    assert!(all
        .iter()
        .all(|(tp, o)| o.as_ref().map(|o| o.offset) == Some(i64::from(tp.partition) * 3)));
    broker.shutdown().await.unwrap();
}
