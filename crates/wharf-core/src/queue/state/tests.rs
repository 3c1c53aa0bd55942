//! The delivery state machine on a fake clock.

use super::*;
use crate::queue::durable::DurableSubscriptions;

fn rec(offset: u64, key: Option<u64>) -> ReadRecord {
    ReadRecord {
        offset,
        published_ms: 0,
        key_hash: key,
        delay_ms: None,
        ttl_ms: None,
    }
}

fn sub(settings: SubscriptionSettings) -> SubState {
    SubState::new(1, settings, [(0, DurablePartition::default())])
}

fn offsets(d: &[Delivery]) -> Vec<u64> {
    d.iter().map(|d| d.ack_id.offset).collect()
}

/// Replays the ops the state queued onto a durable copy, as the journal would, and
/// checks the state rebuilt from it agrees on what is done.
fn durable_after(st: &mut SubState) -> DurableSubscriptions {
    let mut d = DurableSubscriptions::default();
    d.apply_ops(&[Op::Create {
        id: 1,
        topic: "t".into(),
        name: "s".into(),
        topic_id: uuid::Uuid::nil(),
        settings: "{}".into(),
        created_ms: 0,
        floors: vec![0],
    }]);
    d.apply_ops(&std::mem::take(&mut st.ops));
    d
}

#[test]
fn competing_consumers_share_messages_and_acks_move_the_floor() {
    let mut st = sub(SubscriptionSettings::default());
    st.add_read(
        0,
        0,
        4,
        &[rec(0, None), rec(1, None), rec(2, None), rec(3, None)],
    );
    let a = st.select(0, "a", 2);
    let b = st.select(0, "b", 10);
    assert_eq!(offsets(&a), vec![0, 1]);
    assert_eq!(offsets(&b), vec![2, 3]);
    assert!(st.select(0, "c", 10).is_empty());
    let ids: Vec<AckId> = a.iter().chain(&b).map(|d| d.ack_id).collect();
    assert_eq!(st.ack(&ids[..1]), vec![Outcome::Done]);
    assert_eq!(st.ack(&ids[..1]), vec![Outcome::AlreadyDone]);
    assert_eq!(st.backlog(0, 4), 3);
    st.ack(&ids[1..]);
    assert_eq!(st.backlog(0, 4), 0);
    let d = durable_after(&mut st);
    assert_eq!(d.subs[&1].partitions[&0].floor, 4);
}

#[test]
fn an_expired_lease_is_delivered_again_with_the_next_count_and_the_old_id_goes_stale() {
    let mut st = sub(SubscriptionSettings {
        ack_deadline_ms: 100,
        ..Default::default()
    });
    st.add_read(0, 0, 1, &[rec(0, None)]);
    let first = st.select(0, "a", 1)[0].ack_id;
    assert_eq!(first.delivery, 1);
    assert_eq!(st.expire(99), 0);
    assert!(st.select(99, "b", 1).is_empty());
    assert_eq!(st.expire(100), 1);
    let second = st.select(100, "b", 1)[0].ack_id;
    assert_eq!(second.delivery, 2);
    assert_eq!(st.nack(100, &[first], "late", None), vec![Outcome::Stale]);
    assert_eq!(st.extend(100, &[first], 1000), vec![Outcome::Stale]);
    assert_eq!(st.extend(100, &[second], 1000), vec![Outcome::Done]);
    assert_eq!(st.expire(1099), 0);
    // A late ack of the first delivery still counts: the work was done.
    assert_eq!(st.ack(&[first]), vec![Outcome::Done]);
    assert_eq!(st.in_flight(), 0);
}

#[test]
fn nacks_back_off_growing_and_the_last_failure_goes_to_the_dead_letters() {
    let mut st = sub(SubscriptionSettings {
        max_deliveries: 3,
        backoff: crate::queue::Backoff {
            initial_ms: 100,
            max_ms: 10_000,
            multiplier: 4.0,
        },
        ..Default::default()
    });
    st.add_read(0, 0, 1, &[rec(0, None)]);
    let mut now = 1_000;
    let mut waits = Vec::new();
    for n in 1..=3 {
        let d = st.select(now, "a", 1);
        assert_eq!(offsets(&d), vec![0], "delivery {n}");
        st.nack(now, &[d[0].ack_id], &format!("fail {n}"), None);
        if n < 3 {
            let at = st.next_wakeup(now).unwrap();
            waits.push(at - now);
            assert!(st.select(at - 1, "a", 1).is_empty());
            now = at;
        }
    }
    assert!(waits[0] >= 80 && waits[0] <= 120, "{waits:?}");
    assert!(waits[1] >= 320 && waits[1] <= 480, "{waits:?}");
    assert_eq!(st.dead.len(), 1);
    let dl = &st.dead[0];
    assert_eq!((dl.offset, dl.meta.deliveries), (0, 3));
    assert_eq!(dl.meta.reason, "fail 3");
    assert_eq!(dl.meta.first_failure_ms, 1_000);
    assert_eq!(dl.meta.last_failure_ms, now);
    assert!(st.select(now + 100_000, "a", 1).is_empty());
    st.dead_lettered(0, 0);
    assert_eq!(st.backlog(0, 1), 0);
    assert_eq!(st.counters.dead_lettered, 1);
}

#[test]
fn ordered_by_key_parks_only_the_failing_key() {
    let mut st = sub(SubscriptionSettings {
        ordered_by_key: true,
        max_deliveries: 2,
        ..Default::default()
    });
    // Keys: 0:A 1:B 2:A 3:B 4:C
    let keys = [1, 2, 1, 2, 3];
    let recs: Vec<_> = (0..5).map(|o| rec(o, Some(keys[o as usize]))).collect();
    st.add_read(0, 0, 5, &recs);
    let d = st.select(0, "a", 10);
    assert_eq!(offsets(&d), vec![0, 1, 4], "one message per key at a time");
    // A fails: parked for its backoff; B is acked and moves on.
    st.nack(0, &[d[0].ack_id], "poison", None);
    st.ack(&[d[1].ack_id, d[2].ack_id]);
    assert_eq!(offsets(&st.select(1, "a", 10)), vec![3]);
    // A's retry comes due; it fails again, its last delivery: dead-lettered, and A moves on.
    let at = st.next_wakeup(1).unwrap();
    let again = st.select(at, "a", 10);
    assert_eq!(offsets(&again), vec![0]);
    st.nack(at, &[again[0].ack_id], "poison", None);
    assert_eq!(st.dead.len(), 1);
    assert!(
        st.select(at, "a", 10).is_empty(),
        "A waits for its dead letter"
    );
    st.dead_lettered(0, 0);
    assert_eq!(offsets(&st.select(at, "a", 10)), vec![2]);
}

#[test]
fn delay_and_ttl() {
    let mut st = sub(SubscriptionSettings::default());
    let mut delayed = rec(0, None);
    delayed.delay_ms = Some(500);
    let mut short = rec(1, None);
    short.ttl_ms = Some(100);
    st.add_read(0, 0, 3, &[delayed, short, rec(2, None)]);
    assert_eq!(offsets(&st.select(200, "a", 10)), vec![2]);
    assert_eq!(st.dead.len(), 1);
    assert_eq!(st.dead[0].offset, 1);
    assert_eq!(st.dead[0].meta.reason, REASON_EXPIRED);
    assert!(st.select(499, "a", 10).is_empty());
    assert_eq!(offsets(&st.select(500, "a", 10)), vec![0]);
}

#[test]
fn max_in_flight_caps_each_consumer() {
    let mut st = sub(SubscriptionSettings {
        max_in_flight: 2,
        ..Default::default()
    });
    let recs: Vec<_> = (0..5).map(|o| rec(o, None)).collect();
    st.add_read(0, 0, 5, &recs);
    let a = st.select(0, "a", 10);
    assert_eq!(a.len(), 2);
    assert!(st.select(0, "a", 10).is_empty());
    assert_eq!(st.select(0, "b", 10).len(), 2);
    st.ack(&[a[0].ack_id]);
    assert_eq!(st.select(0, "a", 10).len(), 1);
}

#[test]
fn gaps_in_a_read_are_done_and_a_restart_delivers_only_what_was_not_acked() {
    let mut st = sub(SubscriptionSettings::default());
    // Offset 1 holds no data record (a transaction marker, say).
    st.add_read(0, 0, 4, &[rec(0, None), rec(2, None), rec(3, None)]);
    let d = st.select(0, "a", 10);
    assert_eq!(offsets(&d), vec![0, 2, 3]);
    st.ack(&[d[0].ack_id, d[2].ack_id]);
    let durable = durable_after(&mut st);
    let p = durable.subs[&1].partitions[&0].clone();
    assert_eq!(p.floor, 2);
    // After a restart: nothing leased, offset 2 delivered again with its count kept.
    let mut again = SubState::new(1, SubscriptionSettings::default(), [(0, p)]);
    assert_eq!(again.read_position(0), Some(2));
    again.add_read(0, 2, 4, &[rec(2, None), rec(3, None)]);
    let d = again.select(0, "a", 10);
    assert_eq!(offsets(&d), vec![2]);
    assert_eq!(d[0].ack_id.delivery, 2);
}

#[test]
fn seek_and_reopen() {
    let mut st = sub(SubscriptionSettings::default());
    let recs: Vec<_> = (0..4).map(|o| rec(o, None)).collect();
    st.add_read(0, 0, 4, &recs);
    let d = st.select(0, "a", 10);
    st.ack(&d.iter().map(|d| d.ack_id).collect::<Vec<_>>());
    assert_eq!(st.backlog(0, 4), 0);
    st.seek(0, 1);
    assert_eq!(st.backlog(0, 4), 3);
    assert_eq!(st.read_position(0), Some(1));
    st.add_read(0, 1, 4, &recs[1..]);
    let d = st.select(0, "a", 10);
    assert_eq!(offsets(&d), vec![1, 2, 3]);
    assert_eq!(d[0].ack_id.delivery, 1, "a seek forgets delivery counts");
    st.ack(&d.iter().map(|d| d.ack_id).collect::<Vec<_>>());
    assert_eq!(
        st.reopen(0, &[2, 2, 9]),
        1,
        "only done offsets reopen, once"
    );
    assert_eq!(st.read_position(0), Some(2));
    st.add_read(0, 2, 4, &recs[2..]);
    let d = st.select(0, "a", 10);
    assert_eq!(offsets(&d), vec![2]);
    let durable = durable_after(&mut st);
    assert!(!durable.subs[&1].partitions[&0].is_done(2));
}

#[test]
fn ack_ids_round_trip_and_garbage_is_refused() {
    let id = AckId {
        partition: 3,
        offset: 12345,
        delivery: 2,
    };
    assert_eq!(id.to_string().parse::<AckId>(), Ok(id));
    for bad in ["", "1-2", "1-2-3-4", "a-b-c", "-1-2-3", "1--2"] {
        assert!(bad.parse::<AckId>().is_err(), "{bad}");
    }
}

#[test]
fn an_observed_state_lists_what_happened_and_an_unobserved_one_nothing() {
    let settings = SubscriptionSettings {
        max_deliveries: 2,
        ack_deadline_ms: 100,
        ..Default::default()
    };
    let run = |observe: bool| {
        let mut st = sub(settings.clone());
        st.observe = observe;
        let mut expiring = rec(2, None);
        expiring.ttl_ms = Some(50);
        st.add_read(0, 0, 3, &[rec(0, None), rec(1, None), expiring]);
        // 0: nacked, then its lease runs out on the last delivery.
        let d = st.select(0, "a", 1);
        st.nack(0, &[d[0].ack_id], "no", Some(0));
        let d = st.select(0, "a", 2);
        assert_eq!(offsets(&d), vec![0, 1]);
        assert_eq!(d[0].deadline_ms, 100);
        st.ack(&[d[1].ack_id]);
        st.expire(100);
        // 2 is past its time to live when next looked at.
        assert!(st.select(100, "a", 1).is_empty());
        for dl in std::mem::take(&mut st.dead) {
            assert!(st.dead_lettered(dl.partition, dl.offset));
        }
        assert_eq!(st.reopen(0, &[0]), 1);
        std::mem::take(&mut st.events)
    };
    assert_eq!(run(false), vec![]);
    assert_eq!(
        run(true),
        vec![
            Happened::Nacked {
                partition: 0,
                offset: 0,
                deliveries: 1,
                retry_at_ms: Some(0)
            },
            Happened::Acked {
                partition: 0,
                offset: 1,
                deliveries: 1
            },
            Happened::LeaseExpired {
                partition: 0,
                offset: 0,
                deliveries: 2
            },
            Happened::Expired {
                partition: 0,
                offset: 2
            },
            Happened::Reopened {
                partition: 0,
                offset: 0
            },
        ]
    );
}

#[test]
fn a_nack_of_the_last_delivery_is_listed_without_a_retry_time() {
    let mut st = sub(SubscriptionSettings {
        max_deliveries: 1,
        ..Default::default()
    });
    st.observe = true;
    st.add_read(0, 0, 1, &[rec(0, None)]);
    let d = st.select(0, "a", 1);
    st.nack(5, &[d[0].ack_id], "bad", None);
    assert_eq!(
        st.events,
        vec![Happened::Nacked {
            partition: 0,
            offset: 0,
            deliveries: 1,
            retry_at_ms: None
        }]
    );
    assert_eq!(st.dead.len(), 1);
    assert_eq!(st.dead[0].meta.reason, "bad");
}
