//! Consumer groups over the wire: FindCoordinator, the join/sync/heartbeat/leave cycle
//! with two members on two connections, KIP-394's MEMBER_ID_REQUIRED, offsets, and the
//! group admin APIs, each at every advertised version where versions differ.
//!
//! The coordinator runs with its default 3 s initial rebalance delay, as a real broker
//! does; the joins of one rebalance are sent together so they share a generation.

use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_delete_request::{
    OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
};
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    DeleteGroupsRequest, DescribeGroupsRequest, FindCoordinatorRequest, GroupId, HeartbeatRequest,
    JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest, ListGroupsRequest, OffsetCommitRequest,
    OffsetDeleteRequest, OffsetFetchRequest, SyncGroupRequest,
};
use kafka_protocol::protocol::StrBytes;
use wharf_core::NewTopic;

use crate::{topic, Client, TestBroker};

const MEMBER_ID_REQUIRED: i16 = 79;
const REBALANCE_IN_PROGRESS: i16 = 27;
const UNKNOWN_MEMBER_ID: i16 = 25;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const GROUP_ID_NOT_FOUND: i16 = 69;
const NON_EMPTY_GROUP: i16 = 68;

fn s(v: &str) -> StrBytes {
    StrBytes::from_string(v.to_string())
}

fn gid(v: &str) -> GroupId {
    GroupId(s(v))
}

fn join_req(group: &str, member: &str, metadata: &[u8]) -> JoinGroupRequest {
    JoinGroupRequest::default()
        .with_group_id(gid(group))
        .with_member_id(s(member))
        .with_session_timeout_ms(10_000)
        .with_rebalance_timeout_ms(10_000)
        .with_protocol_type(s("consumer"))
        .with_protocols(vec![JoinGroupRequestProtocol::default()
            .with_name(s("range"))
            .with_metadata(metadata.to_vec().into())])
}

/// Joins at `version`, following MEMBER_ID_REQUIRED (v4+) with the given id.
async fn join(c: &mut Client, group: &str, version: i16, metadata: &[u8]) -> JoinGroupResponse {
    let resp = c.call(&join_req(group, "", metadata), version).await;
    if resp.error_code != MEMBER_ID_REQUIRED {
        return resp;
    }
    assert!(version >= 4, "v{version} got MEMBER_ID_REQUIRED");
    assert!(!resp.member_id.is_empty());
    let member = resp.member_id.to_string();
    c.call(&join_req(group, &member, metadata), version).await
}

fn commit_req(group: &str, topic_name: &str, offsets: &[(i32, i64)]) -> OffsetCommitRequest {
    OffsetCommitRequest::default()
        .with_group_id(gid(group))
        .with_generation_id_or_member_epoch(-1)
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(topic(topic_name))
            .with_partitions(
                offsets
                    .iter()
                    .map(|&(p, o)| {
                        OffsetCommitRequestPartition::default()
                            .with_partition_index(p)
                            .with_committed_offset(o)
                            .with_committed_metadata(Some(s("meta")))
                    })
                    .collect(),
            )])
}

/// The group's committed offsets of `partitions` of `topic_name` (v7 OffsetFetch).
async fn fetched(c: &mut Client, group: &str, topic_name: &str, partitions: &[i32]) -> Vec<i64> {
    let req = OffsetFetchRequest::default()
        .with_group_id(gid(group))
        .with_topics(Some(vec![OffsetFetchRequestTopic::default()
            .with_name(topic(topic_name))
            .with_partition_indexes(partitions.to_vec())]));
    let resp = c.call(&req, 7).await;
    assert_eq!(resp.error_code, 0);
    resp.topics[0]
        .partitions
        .iter()
        .map(|p| p.committed_offset)
        .collect()
}

#[tokio::test]
async fn find_coordinator_names_this_broker_for_groups_and_refuses_transactions() {
    let b = TestBroker::start().await;
    let mut c = b.connect().await;
    let port = i32::from(b.addr.port());
    for version in 0..=3 {
        let req = FindCoordinatorRequest::default().with_key(s("g"));
        let resp = c.call(&req, version).await;
        assert_eq!(resp.error_code, 0, "v{version}");
        assert_eq!(resp.node_id.0, 0);
        assert_eq!(resp.host.as_str(), "127.0.0.1");
        assert_eq!(resp.port, port);
    }
    for version in 1..=3 {
        let req = FindCoordinatorRequest::default()
            .with_key(s("tx"))
            .with_key_type(1);
        let resp = c.call(&req, version).await;
        assert_eq!(resp.error_code, 53, "TRANSACTIONAL_ID_AUTHORIZATION_FAILED");
        assert!(resp.error_message.unwrap().contains("not supported"));
    }
    for version in 4..=6 {
        let req = FindCoordinatorRequest::default().with_coordinator_keys(vec![s("a"), s("b")]);
        let resp = c.call(&req, version).await;
        let got: Vec<(&str, i16, i32, i32)> = resp
            .coordinators
            .iter()
            .map(|k| (k.key.as_str(), k.error_code, k.node_id.0, k.port))
            .collect();
        assert_eq!(got, [("a", 0, 0, port), ("b", 0, 0, port)], "v{version}");
        let req = FindCoordinatorRequest::default()
            .with_key_type(1)
            .with_coordinator_keys(vec![s("tx")]);
        let resp = c.call(&req, version).await;
        assert_eq!(resp.coordinators[0].error_code, 53, "v{version}");
    }
    b.stop().await;
}

#[tokio::test]
async fn join_group_v4_and_later_asks_a_new_member_to_rejoin_with_its_member_id() {
    let b = TestBroker::start().await;
    let mut c = b.connect().await;
    for version in 4..=9 {
        let resp = c.call(&join_req("kip394", "", b"m"), version).await;
        assert_eq!(resp.error_code, MEMBER_ID_REQUIRED, "v{version}");
        assert!(!resp.member_id.is_empty(), "v{version}");
        assert_eq!(resp.generation_id, -1);
    }
    // Rejoining with the id completes (alone, after the initial delay).
    let resp = join(&mut c, "kip394", 9, b"m").await;
    assert_eq!(resp.error_code, 0);
    assert_eq!(resp.generation_id, 1);
    assert_eq!(resp.leader, resp.member_id);
    assert_eq!(
        resp.protocol_type.as_ref().map(|p| p.as_str()),
        Some("consumer")
    );
    assert_eq!(
        resp.protocol_name.as_ref().map(|p| p.as_str()),
        Some("range")
    );
    b.stop().await;
}

#[tokio::test]
async fn two_members_join_sync_heartbeat_and_leave_over_the_wire() {
    let b = TestBroker::start().await;
    let (mut a, mut f) = (b.connect().await, b.connect().await);
    // One flexible-version member with KIP-394, one old-version member without.
    let (ja, jf) = tokio::join!(
        join(&mut a, "pair", 9, b"meta-a"),
        join(&mut f, "pair", 2, b"meta-f")
    );
    assert_eq!((ja.error_code, jf.error_code), (0, 0));
    assert_eq!(ja.generation_id, jf.generation_id);
    assert_eq!(ja.leader, jf.leader);
    let (leader, follower, leader_v, follower_v, lj) = if ja.leader == ja.member_id {
        (&mut a, &mut f, 9, 2, &ja)
    } else {
        (&mut f, &mut a, 2, 9, &jf)
    };
    let mut members: Vec<(String, Vec<u8>)> = lj
        .members
        .iter()
        .map(|m| (m.member_id.to_string(), m.metadata.to_vec()))
        .collect();
    members.sort_by(|x, y| x.1.cmp(&y.1));
    assert_eq!(
        members.iter().map(|m| m.1.as_slice()).collect::<Vec<_>>(),
        [b"meta-a".as_slice(), b"meta-f".as_slice()]
    );
    let generation = ja.generation_id;
    let (leader_id, follower_id) = if ja.leader == ja.member_id {
        (ja.member_id.clone(), jf.member_id.clone())
    } else {
        (jf.member_id.clone(), ja.member_id.clone())
    };

    let assignments = vec![
        SyncGroupRequestAssignment::default()
            .with_member_id(leader_id.clone())
            .with_assignment(b"for-leader".to_vec().into()),
        SyncGroupRequestAssignment::default()
            .with_member_id(follower_id.clone())
            .with_assignment(b"for-follower".to_vec().into()),
    ];
    let sync = |member: &StrBytes| {
        SyncGroupRequest::default()
            .with_group_id(gid("pair"))
            .with_generation_id(generation)
            .with_member_id(member.clone())
    };
    let sync_v = |v: i16| if v >= 5 { 5 } else { 0 };
    // The follower may sync first: it waits for the leader's assignment.
    let (follower_sync, leader_sync) = (
        sync(&follower_id),
        sync(&leader_id).with_assignments(assignments),
    );
    let (sf, sl) = tokio::join!(
        follower.call(&follower_sync, sync_v(follower_v)),
        leader.call(&leader_sync, sync_v(leader_v))
    );
    assert_eq!((sl.error_code, sf.error_code), (0, 0));
    assert_eq!(sl.assignment.as_ref(), b"for-leader");
    assert_eq!(sf.assignment.as_ref(), b"for-follower");

    for (c, id) in [(&mut *leader, &leader_id), (&mut *follower, &follower_id)] {
        for version in 0..=4 {
            let hb = HeartbeatRequest::default()
                .with_group_id(gid("pair"))
                .with_generation_id(generation)
                .with_member_id(id.clone());
            assert_eq!(c.call(&hb, version).await.error_code, 0, "v{version}");
        }
    }
    let hb = HeartbeatRequest::default()
        .with_group_id(gid("pair"))
        .with_generation_id(generation)
        .with_member_id(s("stranger"));
    assert_eq!(leader.call(&hb, 4).await.error_code, UNKNOWN_MEMBER_ID);

    // DescribeGroups shows both, with what the header and the socket said.
    let d = leader
        .call(
            &DescribeGroupsRequest::default().with_groups(vec![gid("pair")]),
            5,
        )
        .await;
    let g = &d.groups[0];
    assert_eq!((g.error_code, g.group_state.as_str()), (0, "Stable"));
    assert_eq!(g.protocol_data.as_str(), "range");
    assert_eq!(g.members.len(), 2);
    for m in &g.members {
        assert_eq!(m.client_id.as_str(), "wharf-test");
        assert_eq!(m.client_host.as_str(), "/127.0.0.1");
    }

    // The follower leaves (v3+ batch, with an unknown member alongside): the leader's
    // next heartbeat says rebalance.
    let leave = LeaveGroupRequest::default()
        .with_group_id(gid("pair"))
        .with_members(vec![
            MemberIdentity::default().with_member_id(follower_id.clone()),
            MemberIdentity::default().with_member_id(s("nobody")),
        ]);
    let resp = follower.call(&leave, 5).await;
    assert_eq!(resp.error_code, 0);
    let codes: Vec<i16> = resp.members.iter().map(|m| m.error_code).collect();
    assert_eq!(codes, [0, UNKNOWN_MEMBER_ID]);
    let hb = HeartbeatRequest::default()
        .with_group_id(gid("pair"))
        .with_generation_id(generation)
        .with_member_id(leader_id.clone());
    assert_eq!(leader.call(&hb, 4).await.error_code, REBALANCE_IN_PROGRESS);
    // The leader rejoins alone; then leaves by the v0-2 single-member form.
    let rejoin = leader
        .call(&join_req("pair", &leader_id, b"meta"), leader_v)
        .await;
    assert_eq!(rejoin.error_code, 0);
    assert_eq!(rejoin.generation_id, generation + 1);
    let leave = LeaveGroupRequest::default()
        .with_group_id(gid("pair"))
        .with_member_id(leader_id.clone());
    assert_eq!(leader.call(&leave, 1).await.error_code, 0);
    assert_eq!(leader.call(&leave, 1).await.error_code, UNKNOWN_MEMBER_ID);
    let d = leader
        .call(
            &DescribeGroupsRequest::default().with_groups(vec![gid("pair")]),
            0,
        )
        .await;
    assert_eq!(d.groups[0].group_state.as_str(), "Empty");
    b.stop().await;
}

#[tokio::test]
async fn offsets_commit_and_fetch_at_every_version() {
    let b = TestBroker::start().await;
    b.broker.create_topic(NewTopic::new("t", 2)).await.unwrap();
    let mut c = b.connect().await;
    for version in 2..=9i16 {
        let group = format!("commit-v{version}");
        let req = commit_req(
            &group,
            "t",
            &[(0, 10 + i64::from(version)), (1, 20), (2, 30)],
        );
        let resp = c.call(&req, version).await;
        let codes: Vec<i16> = resp.topics[0]
            .partitions
            .iter()
            .map(|p| p.error_code)
            .collect();
        assert_eq!(codes, [0, 0, UNKNOWN_TOPIC_OR_PARTITION], "v{version}");
        let resp = c
            .call(&commit_req(&group, "nope", &[(0, 1)]), version)
            .await;
        assert_eq!(
            resp.topics[0].partitions[0].error_code,
            UNKNOWN_TOPIC_OR_PARTITION
        );
        assert_eq!(
            fetched(&mut c, &group, "t", &[0, 1, 2]).await,
            [10 + i64::from(version), 20, -1]
        );
    }
    // OffsetFetch v1-7: one group; a partition without a commit is -1 with no error.
    for version in 1..=7 {
        let req = OffsetFetchRequest::default()
            .with_group_id(gid("commit-v9"))
            .with_topics(Some(vec![OffsetFetchRequestTopic::default()
                .with_name(topic("t"))
                .with_partition_indexes(vec![1, 0, 5])]));
        let resp = c.call(&req, version).await;
        assert_eq!(resp.error_code, 0);
        let got: Vec<(i32, i64, &str, i16)> = resp.topics[0]
            .partitions
            .iter()
            .map(|p| {
                let meta = p.metadata.as_ref().map_or("<null>", |m| m.as_str());
                (p.partition_index, p.committed_offset, meta, p.error_code)
            })
            .collect();
        assert_eq!(
            got,
            [(1, 20, "meta", 0), (0, 19, "meta", 0), (5, -1, "", 0)],
            "v{version}"
        );
        if version >= 2 {
            // Null topics: every committed partition.
            let all = c
                .call(
                    &OffsetFetchRequest::default()
                        .with_group_id(gid("commit-v9"))
                        .with_topics(None),
                    version,
                )
                .await;
            let parts: Vec<(i32, i64)> = all.topics[0]
                .partitions
                .iter()
                .map(|p| (p.partition_index, p.committed_offset))
                .collect();
            assert_eq!(parts, [(0, 19), (1, 20)], "v{version}");
        }
    }
    // v8+: several groups in one request, an unknown one among them.
    for version in 8..=9 {
        let req = OffsetFetchRequest::default().with_groups(vec![
            OffsetFetchRequestGroup::default()
                .with_group_id(gid("commit-v2"))
                .with_topics(Some(vec![OffsetFetchRequestTopics::default()
                    .with_name(topic("t"))
                    .with_partition_indexes(vec![0])])),
            OffsetFetchRequestGroup::default()
                .with_group_id(gid("commit-v3"))
                .with_topics(None),
            OffsetFetchRequestGroup::default()
                .with_group_id(gid("never-committed"))
                .with_topics(Some(vec![OffsetFetchRequestTopics::default()
                    .with_name(topic("t"))
                    .with_partition_indexes(vec![0])])),
            OffsetFetchRequestGroup::default()
                .with_group_id(gid(""))
                .with_topics(None),
        ]);
        let resp = c.call(&req, version).await;
        let got: Vec<(String, i16, Vec<i64>)> = resp
            .groups
            .iter()
            .map(|g| {
                let offsets = g
                    .topics
                    .iter()
                    .flat_map(|t| t.partitions.iter().map(|p| p.committed_offset))
                    .collect();
                (g.group_id.0.to_string(), g.error_code, offsets)
            })
            .collect();
        assert_eq!(
            got,
            [
                ("commit-v2".to_string(), 0, vec![12]),
                ("commit-v3".to_string(), 0, vec![13, 20]),
                ("never-committed".to_string(), 0, vec![-1]),
                (String::new(), 24, vec![]),
            ],
            "v{version}"
        );
    }
    // A group member must name the current generation.
    let resp = c
        .call(
            &commit_req("commit-v9", "t", &[(0, 1)])
                .with_generation_id_or_member_epoch(7)
                .with_member_id(s("ghost")),
            9,
        )
        .await;
    assert_ne!(resp.topics[0].partitions[0].error_code, 0);
    assert_eq!(fetched(&mut c, "commit-v9", "t", &[0]).await, [19]);
    b.stop().await;
}

#[tokio::test]
async fn list_describe_and_delete_groups() {
    let b = TestBroker::start().await;
    b.broker.create_topic(NewTopic::new("t", 1)).await.unwrap();
    let mut c = b.connect().await;
    for g in ["g-a", "g-b", "g-c", "g-d"] {
        let resp = c.call(&commit_req(g, "t", &[(0, 5)]), 9).await;
        assert_eq!(resp.topics[0].partitions[0].error_code, 0);
    }
    for version in 0..=5 {
        let resp = c.call(&ListGroupsRequest::default(), version).await;
        assert_eq!(resp.error_code, 0);
        let ids: Vec<&str> = resp.groups.iter().map(|g| g.group_id.0.as_str()).collect();
        assert_eq!(ids, ["g-a", "g-b", "g-c", "g-d"], "v{version}");
        if version >= 4 {
            assert_eq!(resp.groups[0].group_state.as_str(), "Empty");
            let only = |states: &[&str]| {
                ListGroupsRequest::default()
                    .with_states_filter(states.iter().map(|x| s(x)).collect())
            };
            let resp = c.call(&only(&["empty"]), version).await;
            assert_eq!(resp.groups.len(), 4);
            let resp = c
                .call(&only(&["Stable", "PreparingRebalance"]), version)
                .await;
            assert!(resp.groups.is_empty());
            let resp = c.call(&only(&["NoSuchState"]), version).await;
            assert!(resp.groups.is_empty());
        }
        if version >= 5 {
            assert_eq!(resp.groups[0].group_type.as_str(), "classic");
            let types = |t: &str| ListGroupsRequest::default().with_types_filter(vec![s(t)]);
            assert_eq!(c.call(&types("classic"), 5).await.groups.len(), 4);
            assert!(c.call(&types("consumer"), 5).await.groups.is_empty());
        }
    }
    for version in 0..=6 {
        let req = DescribeGroupsRequest::default().with_groups(vec![gid("g-a"), gid("missing")]);
        let resp = c.call(&req, version).await;
        let found = &resp.groups[0];
        assert_eq!((found.error_code, found.group_state.as_str()), (0, "Empty"));
        assert!(found.members.is_empty());
        let missing = &resp.groups[1];
        assert_eq!(missing.group_state.as_str(), "Dead", "v{version}");
        let want = if version >= 6 { GROUP_ID_NOT_FOUND } else { 0 };
        assert_eq!(missing.error_code, want, "v{version}");
    }
    // A group with a member cannot be deleted.
    let joined = join(&mut c, "busy", 9, b"m").await;
    assert_eq!(joined.error_code, 0);
    for (version, group) in [(0, "g-a"), (1, "g-b"), (2, "g-c")] {
        let req = DeleteGroupsRequest::default().with_groups_names(vec![
            gid(group),
            gid("missing"),
            gid("busy"),
        ]);
        let resp = c.call(&req, version).await;
        let got: Vec<(&str, i16)> = resp
            .results
            .iter()
            .map(|r| (r.group_id.0.as_str(), r.error_code))
            .collect();
        assert_eq!(
            got,
            [
                (group, 0),
                ("missing", GROUP_ID_NOT_FOUND),
                ("busy", NON_EMPTY_GROUP)
            ],
            "v{version}"
        );
        // Its offsets went with it.
        assert_eq!(fetched(&mut c, group, "t", &[0]).await, [-1]);
    }
    let resp = c.call(&ListGroupsRequest::default(), 3).await;
    let ids: Vec<&str> = resp.groups.iter().map(|g| g.group_id.0.as_str()).collect();
    assert_eq!(ids, ["busy", "g-d"]);
    b.stop().await;
}

#[tokio::test]
async fn offset_delete_removes_offsets_of_existing_partitions() {
    let b = TestBroker::start().await;
    b.broker.create_topic(NewTopic::new("t", 2)).await.unwrap();
    let mut c = b.connect().await;
    let resp = c.call(&commit_req("od", "t", &[(0, 7), (1, 8)]), 9).await;
    assert!(resp.topics[0].partitions.iter().all(|p| p.error_code == 0));
    let del = |group: &str| {
        OffsetDeleteRequest::default()
            .with_group_id(gid(group))
            .with_topics(vec![
                OffsetDeleteRequestTopic::default()
                    .with_name(topic("t"))
                    .with_partitions(vec![
                        OffsetDeleteRequestPartition::default().with_partition_index(0),
                        OffsetDeleteRequestPartition::default().with_partition_index(9),
                    ]),
                OffsetDeleteRequestTopic::default()
                    .with_name(topic("nope"))
                    .with_partitions(vec![
                        OffsetDeleteRequestPartition::default().with_partition_index(0)
                    ]),
            ])
    };
    let resp = c.call(&del("od"), 0).await;
    assert_eq!(resp.error_code, 0);
    let codes: Vec<Vec<i16>> = resp
        .topics
        .iter()
        .map(|t| t.partitions.iter().map(|p| p.error_code).collect())
        .collect();
    assert_eq!(
        codes,
        [
            vec![0, UNKNOWN_TOPIC_OR_PARTITION],
            vec![UNKNOWN_TOPIC_OR_PARTITION]
        ]
    );
    assert_eq!(fetched(&mut c, "od", "t", &[0, 1]).await, [-1, 8]);
    let resp = c.call(&del("no-such-group"), 0).await;
    assert_eq!(resp.error_code, GROUP_ID_NOT_FOUND);
    b.stop().await;
}

#[tokio::test]
async fn a_stop_does_not_wait_for_a_join_parked_in_a_rebalance() {
    let b = TestBroker::start().await;
    let mut c = b.connect().await;
    // v3: no MEMBER_ID_REQUIRED round trip; the join waits out the 3 s initial delay.
    c.send(&join_req("parked", "", b"m"), 3).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    b.stop().await;
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "stop took {:?}",
        started.elapsed()
    );
    assert!(c.recv_frame().await.is_none(), "the parked join is dropped");
}

#[tokio::test]
async fn every_join_sync_and_describe_version_encodes_a_full_answer() {
    let b = TestBroker::start().await;
    // One group per JoinGroup version, all waiting out the same initial delay; v5+
    // members are static (group.instance.id), which get their member id at once; a
    // dynamic v4 member is asked to rejoin with one.
    let mut tasks = Vec::new();
    for version in 0..=9i16 {
        let mut c = b.connect().await;
        tasks.push(tokio::spawn(async move {
            let group = format!("v{version}");
            let mut req = join_req(&group, "", b"meta");
            if version >= 5 {
                req = req.with_group_instance_id(Some(s(&format!("instance-{version}"))));
            }
            let mut resp = c.call(&req, version).await;
            if resp.error_code == MEMBER_ID_REQUIRED {
                let again = req.with_member_id(resp.member_id.clone());
                resp = c.call(&again, version).await;
            }
            (c, version, group, resp)
        }));
    }
    let mut joined = Vec::new();
    for t in tasks {
        joined.push(t.await.unwrap());
    }
    for (c, version, group, resp) in &mut joined {
        assert_eq!(resp.error_code, 0, "v{version}");
        assert_eq!(resp.generation_id, 1, "v{version}");
        assert_eq!(resp.members.len(), 1, "v{version}");
        assert_eq!(resp.members[0].metadata.as_ref(), b"meta");
        let instance = resp.members[0]
            .group_instance_id
            .as_ref()
            .map(|i| i.to_string());
        let want = (*version >= 5).then(|| format!("instance-{version}"));
        assert_eq!(instance, want, "v{version}");
        let sync_version = (*version).min(5);
        let sync = SyncGroupRequest::default()
            .with_group_id(gid(group))
            .with_generation_id(1)
            .with_member_id(resp.member_id.clone())
            .with_assignments(vec![SyncGroupRequestAssignment::default()
                .with_member_id(resp.member_id.clone())
                .with_assignment(b"mine".to_vec().into())]);
        let sync = if *version >= 5 {
            sync.with_group_instance_id(Some(s(&format!("instance-{version}"))))
        } else {
            sync
        };
        let synced = c.call(&sync, sync_version).await;
        assert_eq!(synced.error_code, 0, "v{version}");
        assert_eq!(synced.assignment.as_ref(), b"mine");
        if sync_version >= 5 {
            assert_eq!(
                synced.protocol_name.as_ref().map(|p| p.as_str()),
                Some("range")
            );
        }
    }
    let mut c = b.connect().await;
    for version in 0..=6 {
        let req = DescribeGroupsRequest::default().with_groups(vec![gid("v9")]);
        let g = &c.call(&req, version).await.groups[0];
        assert_eq!(g.group_state.as_str(), "Stable", "v{version}");
        assert_eq!(g.members[0].member_assignment.as_ref(), b"mine");
        let instance = g.members[0].group_instance_id.as_ref().map(|i| i.as_str());
        let want = (version >= 4).then_some("instance-9");
        assert_eq!(instance, want, "v{version}");
    }
    // A static member leaves by its instance id (LeaveGroup v3+).
    let leave = LeaveGroupRequest::default()
        .with_group_id(gid("v9"))
        .with_members(vec![
            MemberIdentity::default().with_group_instance_id(Some(s("instance-9")))
        ]);
    let resp = c.call(&leave, 4).await;
    assert_eq!((resp.error_code, resp.members[0].error_code), (0, 0));
    let req = DescribeGroupsRequest::default().with_groups(vec![gid("v9")]);
    assert_eq!(
        c.call(&req, 6).await.groups[0].group_state.as_str(),
        "Empty"
    );
    b.stop().await;
}
