//! The broker: the data directory lock, appends and reads, deletion, background work.

use std::fs;
use std::time::Duration;

use wharf_core::{Broker, BrokerConfig, CoreError, FlushPolicy, NewTopic};

use crate::batch::{batch, now_ms, with_base_offset};
use crate::open;

#[tokio::test]
async fn a_second_broker_on_the_same_dir_fails_with_the_lock_error() {
    let dir = tempfile::tempdir().unwrap();
    let first = open(dir.path()).await;
    let started = std::time::Instant::now();
    let err = match Broker::open(BrokerConfig::new(dir.path())).await {
        Err(e) => e,
        Ok(_) => panic!("two brokers opened the same data directory"),
    };
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "must fail at once"
    );
    assert!(matches!(err, CoreError::DataDirLocked { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&dir.path().display().to_string()), "{msg}");
    assert!(msg.contains(".lock"), "{msg}");
    // Releasing the first broker frees the directory.
    first.shutdown().await.unwrap();
    drop(first);
    open(dir.path()).await.shutdown().await.unwrap();
}

#[tokio::test]
async fn append_then_read_returns_the_stored_batches() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open(dir.path()).await;
    broker.create_topic(NewTopic::new("t", 2)).await.unwrap();

    let b1 = batch(&[b"one", b"two"], now_ms());
    let b2 = batch(&[b"three"], now_ms());
    let i1 = broker.append("t", 1, b1.clone()).await.unwrap();
    let i2 = broker.append("t", 1, b2.clone()).await.unwrap();
    assert_eq!((i1.base_offset, i1.last_offset), (0, 1));
    assert_eq!((i2.base_offset, i2.last_offset), (2, 2));

    let offsets = broker.offsets("t", 1).unwrap();
    assert_eq!(offsets.log_start_offset, 0);
    assert_eq!(offsets.log_end_offset, 3);
    assert_eq!(
        offsets.high_watermark, 3,
        "`always` makes every ack committed"
    );
    assert_eq!(broker.offsets("t", 0).unwrap().log_end_offset, 0);

    let read = broker.read("t", 1, 0, 1 << 20).await.unwrap();
    let mut expected = with_base_offset(b1, 0);
    expected.extend(with_base_offset(b2.clone(), 2));
    assert_eq!(read.bytes, expected);
    assert_eq!(read.high_watermark, 3);
    let read = broker.read("t", 1, 2, 1 << 20).await.unwrap();
    assert_eq!(read.bytes, with_base_offset(b2, 2));

    assert!(matches!(
        broker.append("t", 2, batch(&[b"x"], 0)).await,
        Err(CoreError::UnknownPartition {
            partition: 2,
            partitions: 2,
            ..
        })
    ));
    assert!(matches!(
        broker.read("nope", 0, 0, 100).await,
        Err(CoreError::UnknownTopic { .. })
    ));
    broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn appended_data_survives_shutdown_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let b = batch(&[b"kept"], now_ms());
    {
        let broker = open(dir.path()).await;
        broker.create_topic(NewTopic::new("t", 1)).await.unwrap();
        broker.append("t", 0, b.clone()).await.unwrap();
        broker.shutdown().await.unwrap();
        assert!(matches!(
            broker.append("t", 0, b.clone()).await,
            Err(CoreError::ShuttingDown)
        ));
    }
    let broker = open(dir.path()).await;
    assert_eq!(broker.offsets("t", 0).unwrap().log_end_offset, 1);
    let read = broker.read("t", 0, 0, 1 << 20).await.unwrap();
    assert_eq!(read.bytes, with_base_offset(b, 0));
    broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn delete_and_recreate_with_the_same_name_starts_empty() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open(dir.path()).await;
    let old = broker.create_topic(NewTopic::new("t", 1)).await.unwrap();
    broker
        .append("t", 0, batch(&[b"old"], now_ms()))
        .await
        .unwrap();
    let deleted = broker.delete_topic("t").await.unwrap();
    assert_eq!(deleted.id, old.id);
    assert!(broker.list_topics().is_empty());
    assert!(matches!(
        broker.offsets("t", 0),
        Err(CoreError::UnknownTopic { .. })
    ));
    assert!(!dir.path().join("topics/t").exists());

    let new = broker.create_topic(NewTopic::new("t", 1)).await.unwrap();
    assert_ne!(new.id, old.id, "a re-created topic gets a fresh id");
    assert_eq!(broker.offsets("t", 0).unwrap().log_end_offset, 0);
    let read = broker.read("t", 0, 0, 1 << 20).await.unwrap();
    assert!(read.bytes.is_empty());
    broker.shutdown().await.unwrap();

    // And the deletion is persisted.
    let broker = open(dir.path()).await;
    assert_eq!(broker.describe_topic("t").unwrap().id, new.id);
    assert_eq!(broker.offsets("t", 0).unwrap().log_end_offset, 0);
    broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn an_interrupted_delete_is_finished_on_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let broker = open(dir.path()).await;
        broker.create_topic(NewTopic::new("keep", 1)).await.unwrap();
        broker.shutdown().await.unwrap();
    }
    let topics = dir.path().join("topics");
    // A crash after the rename, during removal…
    fs::create_dir_all(topics.join("gone~6f1c1c1c-1c1c-4c1c-9c1c-1c1c1c1c1c1c.deleted/0")).unwrap();
    // …and a crash after persisting the registry, before the rename.
    fs::create_dir_all(topics.join("orphan/0")).unwrap();
    fs::write(topics.join("orphan/0/00000000000000000000.log"), b"old").unwrap();
    // …and a partition increase that never reached the registry.
    fs::create_dir_all(topics.join("keep/7")).unwrap();

    let broker = open(dir.path()).await;
    let mut left: Vec<_> = fs::read_dir(&topics)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    assert_eq!(left, ["keep"]);
    assert!(!topics.join("keep/7").exists());
    assert!(topics.join("keep/0").exists());
    broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn topic_data_without_a_registry_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir_all(dir.path().join("topics/orders/0")).unwrap();
    match Broker::open(BrokerConfig::new(dir.path())).await {
        Err(e @ CoreError::CorruptRegistry { .. }) => {
            assert!(e.to_string().contains("missing"), "{e}");
        }
        Err(e) => panic!("expected CorruptRegistry, got {e}"),
        Ok(_) => panic!("must not start and silently drop topic data"),
    }
    assert!(
        dir.path().join("topics/orders/0").exists(),
        "data untouched"
    );
}

#[tokio::test]
async fn an_append_wakes_a_waiting_reader() {
    let dir = tempfile::tempdir().unwrap();
    let broker = std::sync::Arc::new(open(dir.path()).await);
    broker.create_topic(NewTopic::new("t", 1)).await.unwrap();
    let waiter = {
        let broker = broker.clone();
        tokio::spawn(async move {
            broker
                .wait_for_high_watermark("t", 0, 0, Duration::from_secs(20))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = std::time::Instant::now();
    broker
        .append("t", 0, batch(&[b"x"], now_ms()))
        .await
        .unwrap();
    let hw = waiter.await.unwrap().unwrap();
    assert_eq!(hw, 1);
    assert!(started.elapsed() < Duration::from_secs(5));
    // With nothing new, the wait ends at the timeout with the current value.
    let hw = broker
        .wait_for_high_watermark("t", 0, 1, Duration::from_millis(50))
        .await
        .unwrap();
    assert_eq!(hw, 1);
    broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn the_interval_flusher_advances_the_high_watermark() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = BrokerConfig::new(dir.path());
    config.flush = FlushPolicy::Interval(Duration::from_millis(50));
    let broker = Broker::open(config).await.unwrap();
    broker.create_topic(NewTopic::new("t", 1)).await.unwrap();
    broker
        .append("t", 0, batch(&[b"a", b"b"], now_ms()))
        .await
        .unwrap();
    let hw = broker
        .wait_for_high_watermark("t", 0, 1, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(hw, 2);
    broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn new_partitions_take_appends() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open(dir.path()).await;
    broker.create_topic(NewTopic::new("t", 1)).await.unwrap();
    broker
        .append("t", 0, batch(&[b"a"], now_ms()))
        .await
        .unwrap();
    let d = broker.create_partitions("t", 3).await.unwrap();
    assert_eq!(d.partitions, 3);
    let info = broker
        .append("t", 2, batch(&[b"b"], now_ms()))
        .await
        .unwrap();
    assert_eq!(info.base_offset, 0);
    assert_eq!(broker.offsets("t", 0).unwrap().log_end_offset, 1);
    assert!(matches!(
        broker.create_partitions("t", 2).await,
        Err(CoreError::InvalidPartitions { .. })
    ));
    broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn altered_config_reaches_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open(dir.path()).await;
    broker.create_topic(NewTopic::new("t", 1)).await.unwrap();
    broker
        .alter_topic_config(
            "t",
            vec![wharf_core::ConfigOp::Set {
                key: "max.message.bytes".into(),
                value: "100".into(),
            }],
        )
        .await
        .unwrap();
    let big = batch(&[&[7u8; 200]], now_ms());
    let err = broker.append("t", 0, big).await.unwrap_err();
    assert!(matches!(err, CoreError::Log { partition: 0, .. }), "{err}");
    assert!(
        err.to_string().contains("\"t\""),
        "errors name the topic: {err}"
    );
    broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn retention_runs_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = BrokerConfig::new(dir.path());
    config.retention_check_interval = Duration::from_millis(50);
    let broker = Broker::open(config).await.unwrap();
    broker
        .create_topic(
            NewTopic::new("t", 1)
                .config("retention.ms", "1000")
                // One batch per segment, so old ones can go.
                .config("segment.bytes", "100"),
        )
        .await
        .unwrap();
    let old = now_ms() - 3_600_000;
    for _ in 0..3 {
        broker
            .append("t", 0, batch(&[&[1u8; 80]], old))
            .await
            .unwrap();
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if broker.offsets("t", 0).unwrap().log_start_offset >= 2 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "retention never ran");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    broker.shutdown().await.unwrap();
}

#[tokio::test]
async fn delete_records_moves_the_log_start_and_refuses_past_the_high_watermark() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open(dir.path()).await;
    broker.create_topic(NewTopic::new("t", 1)).await.unwrap();
    for _ in 0..3 {
        broker
            .append("t", 0, batch(&[b"a", b"b"], now_ms()))
            .await
            .unwrap();
    }
    assert_eq!(broker.delete_records("t", 0, 4).await.unwrap(), 4);
    assert_eq!(broker.offsets("t", 0).unwrap().log_start_offset, 4);
    // Never backwards.
    assert_eq!(broker.delete_records("t", 0, 1).await.unwrap(), 4);
    let err = broker.delete_records("t", 0, 7).await.unwrap_err();
    assert!(
        matches!(
            err,
            CoreError::Log {
                source: wharf_log::LogError::OffsetOutOfRange { offset: 7, .. },
                ..
            }
        ),
        "{err}"
    );
    assert!(matches!(
        broker.delete_records("nope", 0, 0).await,
        Err(CoreError::UnknownTopic { .. })
    ));
    // The new start survives a restart.
    broker.shutdown().await.unwrap();
    let broker = open(dir.path()).await;
    assert_eq!(broker.offsets("t", 0).unwrap().log_start_offset, 4);
    broker.shutdown().await.unwrap();
}
