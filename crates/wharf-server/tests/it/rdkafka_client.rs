//! A Rust client on librdkafka (the `rdkafka` crate, bundled build) against a real
//! `wharf serve`: admin create topic, produce with acks=all under every compression
//! codec and with a 1 MiB message, consume by `assign` (no consumer groups yet).

use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

use crate::{serve_on, Server};

const TOPIC: &str = "rd";
const MIB: usize = 1 << 20;

/// One message as produced: key, value (None for null), one header.
struct Sent {
    key: String,
    value: Option<Vec<u8>>,
    header: String,
}

fn messages(codec: &str) -> Vec<Sent> {
    let mut out: Vec<Sent> = (0..20)
        .map(|i| Sent {
            key: format!("{codec}-key-{i}"),
            value: Some(format!("{codec} value {i} {}", "x".repeat(i * 10)).into_bytes()),
            header: format!("h-{i}"),
        })
        .collect();
    out.push(Sent {
        key: format!("{codec}-null"),
        value: None,
        header: "null".into(),
    });
    // 1 MiB, varied enough that it does not compress to nothing.
    let big: Vec<u8> = (0..MIB)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    out.push(Sent {
        key: format!("{codec}-big"),
        value: Some(big),
        header: "big".into(),
    });
    out
}

#[test]
fn rdkafka_produces_with_acks_all_under_every_codec_and_consumes_back_exactly_by_assign() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(serve_on(dir.path()));
    let addr = server.kafka.expect("Kafka address").to_string();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    // Through CreateTopics, with a per-topic limit above the 1 MiB default.
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &addr)
        .create()
        .expect("admin client");
    let limit = (4 * MIB).to_string();
    let topic =
        NewTopic::new(TOPIC, 1, TopicReplication::Fixed(1)).set("max.message.bytes", &limit);
    let results = rt
        .block_on(admin.create_topics([&topic], &AdminOptions::new()))
        .expect("create topics");
    assert!(results[0].is_ok(), "{results:?}");

    let mut expected = Vec::new();
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", &addr)
            .set("acks", "all")
            .set("compression.codec", codec)
            .set("message.max.bytes", &limit)
            .set("linger.ms", "5")
            .create()
            .expect("producer");
        let sent = messages(codec);
        rt.block_on(async {
            // All enqueued before any is awaited (`send` would enqueue only when
            // polled), so several share one (compressed) batch.
            let futures: Vec<_> = sent
                .iter()
                .map(|m| {
                    let mut record = FutureRecord::to(TOPIC).partition(0).key(&m.key).headers(
                        OwnedHeaders::new().insert(Header {
                            key: "h",
                            value: Some(m.header.as_bytes()),
                        }),
                    );
                    if let Some(v) = &m.value {
                        record = record.payload(v);
                    }
                    producer
                        .send_result(record)
                        .unwrap_or_else(|(e, _)| panic!("{codec}: enqueue: {e}"))
                })
                .collect();
            let mut last = -1;
            for f in futures {
                let delivery = f
                    .await
                    .expect("delivery report")
                    .unwrap_or_else(|(e, _)| panic!("{codec}: {e}"));
                assert!(delivery.offset > last, "{codec}: offsets in order");
                last = delivery.offset;
            }
        });
        expected.extend(sent);
    }

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &addr)
        // librdkafka's assign() needs a group id even when no group is joined and
        // nothing is committed.
        .set("group.id", "wharf-assign-only")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "100")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(TOPIC, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut got = Vec::new();
    while got.len() < expected.len() {
        assert!(
            Instant::now() < deadline,
            "consumed {} of {} messages; broker log:\n{}",
            got.len(),
            expected.len(),
            server.stderr()
        );
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => got.push((
                m.offset(),
                m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                m.payload().map(<[u8]>::to_vec),
                m.headers().and_then(|h| {
                    h.iter()
                        .next()
                        .map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec)))
                }),
            )),
            Some(Err(e)) => panic!("consumer error: {e}"),
            None => {}
        }
    }
    for (i, (want, (offset, key, value, header))) in expected.iter().zip(&got).enumerate() {
        assert_eq!(*offset, i as i64);
        assert_eq!(key.as_deref(), Some(want.key.as_str()), "offset {i}");
        assert!(
            *value == want.value,
            "offset {i} ({}): value differs",
            want.key
        );
        assert_eq!(
            header,
            &Some(("h".to_string(), Some(want.header.clone().into_bytes()))),
            "offset {i}"
        );
    }
    drop(consumer);
    drop(admin);
    let (status, log) = server.stop();
    assert!(status.success(), "{log}");
}

#[test]
fn rdkafka_keyed_messages_over_3_partitions_come_back_in_per_partition_order() {
    const N: usize = 10_000;
    const KEYS: usize = 50;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(serve_on(dir.path()));
    let addr = server.kafka.expect("Kafka address").to_string();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &addr)
        .create()
        .expect("admin client");
    let topic = NewTopic::new("keyed", 3, TopicReplication::Fixed(1));
    let results = rt
        .block_on(admin.create_topics([&topic], &AdminOptions::new()))
        .expect("create topics");
    assert!(results[0].is_ok(), "{results:?}");

    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &addr)
        .set("acks", "all")
        .set("linger.ms", "10")
        .create()
        .expect("producer");
    // key -> partition, as the producer's partitioner chose it.
    let mut partition_of = std::collections::HashMap::new();
    rt.block_on(async {
        let records: Vec<(String, String)> = (0..N)
            .map(|i| (format!("key-{}", i % KEYS), i.to_string()))
            .collect();
        // All enqueued at once (`send` would enqueue only when polled): the producer
        // batches them per partition.
        let futures: Vec<_> = records
            .iter()
            .map(|(key, value)| {
                let f = producer
                    .send_result(FutureRecord::to("keyed").key(key).payload(value))
                    .unwrap_or_else(|(e, _)| panic!("enqueue: {e}"));
                (key, f)
            })
            .collect();
        for (key, f) in futures {
            let d = f
                .await
                .expect("delivery report")
                .unwrap_or_else(|(e, _)| panic!("{e}"));
            let p = *partition_of.entry(key.clone()).or_insert(d.partition);
            assert_eq!(p, d.partition, "{key} went to two partitions");
        }
    });

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &addr)
        .set("group.id", "wharf-assign-only")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "100")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    for p in 0..3 {
        tpl.add_partition_offset("keyed", p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut last_seq_per_key = std::collections::HashMap::new();
    let mut next_offset = [0i64; 3];
    let mut count = 0;
    while count < N {
        assert!(Instant::now() < deadline, "consumed {count} of {N}");
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => {
                let p = m.partition();
                assert_eq!(
                    m.offset(),
                    next_offset[p as usize],
                    "partition {p}: gap or repeat"
                );
                next_offset[p as usize] += 1;
                let key = String::from_utf8(m.key().unwrap().to_vec()).unwrap();
                assert_eq!(partition_of[&key], p, "{key}");
                let seq: usize = std::str::from_utf8(m.payload().unwrap())
                    .unwrap()
                    .parse()
                    .unwrap();
                // Messages of one key were sent in increasing order and must come back so.
                if let Some(prev) = last_seq_per_key.insert(key.clone(), seq) {
                    assert!(seq > prev, "{key}: {seq} after {prev}");
                }
                count += 1;
            }
            Some(Err(e)) => panic!("consumer error: {e}"),
            None => {}
        }
    }
    assert_eq!(next_offset.iter().sum::<i64>(), N as i64);
    assert!(
        next_offset.iter().all(|n| *n > 0),
        "{next_offset:?}: keys not spread"
    );
    drop(consumer);
    drop(producer);
    drop(admin);
    let (status, log) = server.stop();
    assert!(status.success(), "{log}");
}

/// `wharf serve` on `dir` with the Kafka listener on a fixed `port`, so a restarted
/// broker is found by the clients again.
fn serve_on_port(dir: &std::path::Path, port: u16) -> std::process::Command {
    let mut cmd = crate::wharf();
    cmd.args(["serve", "--http-addr", "127.0.0.1:0", "--kafka-addr"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(dir);
    cmd
}

#[test]
fn every_message_acked_with_acks_all_survives_repeated_sigkills_of_the_broker() {
    const KILLS: usize = 3;
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut server = Server::start(serve_on_port(dir.path(), port));

    // The producer runs until every kill and restart is done.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let producer_stop = stop.clone();
    let producer_addr = addr.clone();
    let producing = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", &producer_addr)
            .set("acks", "all")
            .set("linger.ms", "2")
            .set("message.timeout.ms", "60000")
            .set("reconnect.backoff.ms", "50")
            .set("reconnect.backoff.max.ms", "500")
            .create()
            .expect("producer");
        let mut acked = Vec::new();
        let mut failed = 0;
        let mut sent = 0;
        while !producer_stop.load(std::sync::atomic::Ordering::Relaxed) {
            let chunk: Vec<String> = (sent..sent + 50).map(|i| format!("m-{i}")).collect();
            sent += chunk.len();
            let futures: Vec<_> = chunk
                .iter()
                .map(|v| {
                    let f = producer
                        .send_result(FutureRecord::<(), _>::to("dur").partition(0).payload(v))
                        .unwrap_or_else(|(e, _)| panic!("enqueue: {e}"));
                    (v.clone(), f)
                })
                .collect();
            rt.block_on(async {
                for (v, f) in futures {
                    match f.await.expect("delivery report") {
                        Ok(_) => acked.push(v),
                        Err(_) => failed += 1,
                    }
                }
            });
            std::thread::sleep(Duration::from_millis(20));
        }
        (acked, failed, sent)
    });

    for _ in 0..KILLS {
        std::thread::sleep(Duration::from_millis(700));
        server.signal(nix::sys::signal::Signal::SIGKILL);
        server
            .wait_timeout(Duration::from_secs(10))
            .expect("exit after SIGKILL");
        server = Server::start(serve_on_port(dir.path(), port));
    }
    std::thread::sleep(Duration::from_millis(700));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (acked, failed, sent) = producing.join().expect("producer thread");
    eprintln!("sent {sent}, acked {}, failed {failed}", acked.len());
    assert!(
        acked.len() > sent / 2,
        "only {} of {sent} acked ({failed} failed)",
        acked.len()
    );

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &addr)
        .set("group.id", "wharf-assign-only")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "100")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("dur", 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let end = server_high_watermark(&consumer);
    let mut seen = std::collections::HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut next = 0;
    while next < end {
        assert!(Instant::now() < deadline, "read {next} of {end}");
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => {
                next = m.offset() + 1;
                seen.insert(String::from_utf8(m.payload().unwrap().to_vec()).unwrap());
            }
            Some(Err(e)) => panic!("consumer error: {e}"),
            None => {}
        }
    }
    let lost: Vec<&String> = acked.iter().filter(|v| !seen.contains(*v)).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged messages lost, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    drop(consumer);
    let (status, log) = server.stop();
    assert!(status.success(), "{log}");
}

/// The partition's high watermark, as ListOffsets tells the consumer.
fn server_high_watermark(consumer: &BaseConsumer) -> i64 {
    let (_, high) = consumer
        .fetch_watermarks("dur", 0, Duration::from_secs(10))
        .expect("watermarks");
    high
}
