//! Consumer groups with real clients against a real `wharf serve`: rdkafka (bundled
//! librdkafka) consumers sharing, handing over and resuming partitions, and Debian's
//! kcat (librdkafka 2.0.2) as a balanced consumer (`-G`).
//!
//! The broker keeps Kafka's 3 s initial rebalance delay, so the first assignment of a
//! group takes a few seconds.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

use crate::kcat::{kcat, run};
use crate::{serve_on, Server};

const CONSUME_TIMEOUT: Duration = Duration::from_secs(90);

fn create_topic(addr: &str, name: &str, partitions: i32) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", addr)
        .create()
        .expect("admin client");
    let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    let results = rt
        .block_on(admin.create_topics([&topic], &AdminOptions::new()))
        .expect("create topics");
    assert!(results[0].is_ok(), "{results:?}");
}

/// Produces the values `range` (as decimal strings), value `i` to partition
/// `i % partitions`, with acks=all.
fn produce(addr: &str, topic: &str, partitions: i32, range: std::ops::Range<i32>) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", addr)
        .set("acks", "all")
        .set("linger.ms", "5")
        .create()
        .expect("producer");
    for i in range {
        let value = i.to_string();
        producer
            .send(
                BaseRecord::<(), _>::to(topic)
                    .partition(i % partitions)
                    .payload(&value),
            )
            .unwrap_or_else(|(e, _)| panic!("enqueue {i}: {e}"));
        producer.poll(Duration::ZERO);
    }
    producer
        .flush(Duration::from_secs(30))
        .expect("every message delivered");
}

fn group_consumer(addr: &str, group: &str) -> BaseConsumer {
    group_consumer_with(addr, group, &[])
}

fn group_consumer_with(addr: &str, group: &str, extra: &[(&str, &str)]) -> BaseConsumer {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", addr)
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500")
        .set("fetch.wait.max.ms", "100");
    for (k, v) in extra {
        config.set(*k, *v);
    }
    config.create().expect("consumer")
}

/// One poll of each consumer, committing what came synchronously: (consumer index,
/// value) per message.
fn consume_some(consumers: &[&BaseConsumer]) -> Vec<(usize, i32)> {
    let mut seen = Vec::new();
    for (i, c) in consumers.iter().enumerate() {
        let Some(Ok(msg)) = c.poll(Duration::from_millis(100)) else {
            continue;
        };
        let value: i32 = std::str::from_utf8(msg.payload().expect("a value"))
            .unwrap()
            .parse()
            .unwrap();
        c.commit_message(&msg, CommitMode::Sync)
            .expect("synchronous commit");
        seen.push((i, value));
    }
    seen
}

/// Polls the consumers in turn, committing each message synchronously, until `want`
/// distinct values have been seen; returns (consumer index, value) for every message.
fn consume(consumers: &[&BaseConsumer], want: usize, server: &Server) -> Vec<(usize, i32)> {
    let deadline = Instant::now() + CONSUME_TIMEOUT;
    let mut seen = Vec::new();
    let mut distinct = BTreeSet::new();
    while distinct.len() < want {
        assert!(
            Instant::now() < deadline,
            "saw {} of {want} values; broker log:\n{}",
            distinct.len(),
            server.stderr()
        );
        for (i, value) in consume_some(consumers) {
            seen.push((i, value));
            distinct.insert(value);
        }
    }
    seen
}

fn values(seen: &[(usize, i32)]) -> Vec<i32> {
    let mut v: Vec<i32> = seen.iter().map(|&(_, v)| v).collect();
    v.sort_unstable();
    v
}

fn assigned(c: &BaseConsumer) -> Vec<i32> {
    let mut p: Vec<i32> = c
        .assignment()
        .unwrap()
        .elements()
        .iter()
        .map(|e| e.partition())
        .collect();
    p.sort_unstable();
    p
}

fn committed(c: &BaseConsumer, topic: &str, partitions: i32) -> Vec<Offset> {
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    c.committed_offsets(tpl, Duration::from_secs(10))
        .expect("committed offsets")
        .elements()
        .iter()
        .map(|e| e.offset())
        .collect()
}

#[test]
fn rdkafka_group_of_two_shares_four_partitions_then_one_takes_over_when_the_other_leaves() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(serve_on(dir.path()));
    let addr = server.kafka.expect("Kafka address").to_string();
    create_topic(&addr, "shared", 4);
    produce(&addr, "shared", 4, 0..400);

    let a = group_consumer(&addr, "sharers");
    let b = group_consumer(&addr, "sharers");
    a.subscribe(&["shared"]).unwrap();
    b.subscribe(&["shared"]).unwrap();
    let seen = consume(&[&a, &b], 400, &server);
    assert_eq!(
        values(&seen),
        (0..400).collect::<Vec<_>>(),
        "each message exactly once"
    );
    let who: BTreeSet<usize> = seen.iter().map(|&(i, _)| i).collect();
    assert_eq!(who, BTreeSet::from([0, 1]), "both consumers got messages");
    let (pa, pb) = (assigned(&a), assigned(&b));
    assert!(!pa.is_empty() && !pb.is_empty(), "{pa:?} {pb:?}");
    let mut all = [pa, pb].concat();
    all.sort_unstable();
    assert_eq!(all, [0, 1, 2, 3]);
    // Commits are visible to the group, from either member.
    assert_eq!(committed(&a, "shared", 4), vec![Offset::Offset(100); 4]);
    assert_eq!(committed(&b, "shared", 4), vec![Offset::Offset(100); 4]);

    // `a` closes (LeaveGroup); `b` gets every partition and reads on from the commits.
    drop(a);
    produce(&addr, "shared", 4, 400..600);
    let later = consume(&[&b], 200, &server);
    assert_eq!(values(&later), (400..600).collect::<Vec<_>>());
    assert_eq!(assigned(&b), [0, 1, 2, 3]);
    assert_eq!(committed(&b, "shared", 4), vec![Offset::Offset(150); 4]);
    drop(b);
    let (status, log) = server.stop();
    assert!(status.success(), "{log}");
}

#[test]
fn rdkafka_cooperative_sticky_consumers_hand_partitions_over_incrementally() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(serve_on(dir.path()));
    let addr = server.kafka.expect("Kafka address").to_string();
    create_topic(&addr, "coop", 4);
    produce(&addr, "coop", 4, 0..200);
    let cooperative = [("partition.assignment.strategy", "cooperative-sticky")];
    // `a` alone takes all four partitions and reads the topic.
    let a = group_consumer_with(&addr, "coop-group", &cooperative);
    a.subscribe(&["coop"]).unwrap();
    let seen = consume(&[&a], 200, &server);
    assert_eq!(values(&seen), (0..200).collect::<Vec<_>>());
    assert_eq!(assigned(&a), [0, 1, 2, 3]);
    // `b` joins: two incremental rebalances move partitions over while `a` keeps the
    // rest. Nothing is committed meanwhile: a synchronous commit in this one thread
    // could wait behind `a`'s JoinGroup for `b`, which only this thread's polls move on
    // (a Kafka broker also answers one request per connection at a time).
    let b = group_consumer_with(&addr, "coop-group", &cooperative);
    b.subscribe(&["coop"]).unwrap();
    let deadline = Instant::now() + CONSUME_TIMEOUT;
    while assigned(&b).is_empty() || assigned(&a).len() + assigned(&b).len() != 4 {
        assert!(
            Instant::now() < deadline,
            "no incremental rebalance:\n{}",
            server.stderr()
        );
        for c in [&a, &b] {
            if let Some(Ok(msg)) = c.poll(Duration::from_millis(100)) {
                panic!("message at offset {} read again", msg.offset());
            }
        }
    }
    assert!(assigned(&a).len() < 4, "`a` kept everything");
    // Both read on from the commits: every new message exactly once, and both get some.
    produce(&addr, "coop", 4, 200..400);
    let later = consume(&[&a, &b], 200, &server);
    assert_eq!(
        values(&later),
        (200..400).collect::<Vec<_>>(),
        "each message exactly once"
    );
    let who: BTreeSet<usize> = later.iter().map(|&(i, _)| i).collect();
    assert_eq!(who, BTreeSet::from([0, 1]));
    drop((a, b));
    let (status, log) = server.stop();
    assert!(status.success(), "{log}");
}

#[test]
fn rdkafka_consumer_resumes_at_its_committed_offset_after_a_broker_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(serve_on(dir.path()));
    let addr = server.kafka.expect("Kafka address").to_string();
    create_topic(&addr, "resume", 2);
    produce(&addr, "resume", 2, 0..100);
    let c = group_consumer(&addr, "resumers");
    c.subscribe(&["resume"]).unwrap();
    let seen = consume(&[&c], 100, &server);
    assert_eq!(values(&seen), (0..100).collect::<Vec<_>>());
    drop(c);
    let (status, log) = server.stop();
    assert!(status.success(), "{log}");

    // Same data directory, new ports.
    let server = Server::start(serve_on(dir.path()));
    let addr = server.kafka.expect("Kafka address").to_string();
    produce(&addr, "resume", 2, 100..150);
    let c = group_consumer(&addr, "resumers");
    assert_eq!(committed(&c, "resume", 2), vec![Offset::Offset(50); 2]);
    c.subscribe(&["resume"]).unwrap();
    let later = consume(&[&c], 50, &server);
    // Only what came after the commits: nothing from before the restart again.
    assert_eq!(values(&later), (100..150).collect::<Vec<_>>());
    drop(c);
    let (status, log) = server.stop();
    assert!(status.success(), "{log}");
}

#[test]
fn kcat_balanced_consumer_reads_a_topic_and_resumes_after_its_commits() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(serve_on(dir.path()));
    let kafka = server.kafka.expect("Kafka address");
    let addr = kafka.to_string();
    create_topic(&addr, "balanced", 2);
    produce(&addr, "balanced", 2, 0..30);
    let group_read = |count: usize| -> Vec<i32> {
        let out = run(
            kcat(
                kafka,
                &[
                    "-G",
                    "kcat-group",
                    "-X",
                    "auto.offset.reset=earliest",
                    "-c",
                    &count.to_string(),
                    "-f",
                    "%s\n",
                    "-q",
                    "balanced",
                ],
            ),
            "",
        );
        let mut v: Vec<i32> = out.lines().map(|l| l.parse().unwrap()).collect();
        v.sort_unstable();
        v
    };
    assert_eq!(group_read(30), (0..30).collect::<Vec<_>>());
    // kcat commits its offsets when it closes: the next run starts after them.
    produce(&addr, "balanced", 2, 30..36);
    assert_eq!(group_read(6), (30..36).collect::<Vec<_>>());
    let (status, log) = server.stop();
    assert!(status.success(), "{log}");
}
