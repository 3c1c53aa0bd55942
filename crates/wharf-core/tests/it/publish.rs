//! `Broker::publish`: dedup across a reopen when the append was never answered, and
//! racing publishers of one key.

use std::sync::Arc;

use wharf_core::headers::IDEMPOTENCY_KEY;
use wharf_core::{records, NewTopic, Publish};
use wharf_log::batch::{Record, RecordBatchBuilder};

use crate::open;

fn keyed(key: &str, partition: u32) -> Publish {
    Publish {
        idempotency_key: Some(key.into()),
        partition: Some(partition),
        value: Some(b"v".to_vec()),
        ..Publish::default()
    }
}

#[tokio::test]
async fn a_key_stored_before_a_crash_is_a_duplicate_after_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let broker = open(dir.path()).await;
    broker.create_topic(NewTopic::new("t", 2)).await.unwrap();
    // As if a publish appended and crashed before answering (or a Kafka producer set
    // the header): a record carrying the key, written by a plain append.
    let mut b = RecordBatchBuilder::new();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    for (i, key) in ["x", "y"].iter().enumerate() {
        b.push(&Record {
            key: None,
            value: Some(b"stored"),
            headers: vec![(IDEMPOTENCY_KEY, Some(key.as_bytes()))],
            timestamp: now + i as i64,
        });
    }
    broker.append("t", 1, b.build()).await.unwrap();
    drop(broker);

    let broker = open(dir.path()).await;
    let got = broker
        .publish("t", vec![keyed("y", 1), keyed("z", 1), keyed("x", 1)])
        .await
        .unwrap();
    let summary: Vec<_> = got.iter().map(|p| (p.offset, p.duplicate)).collect();
    assert_eq!(summary, [(1, true), (2, false), (0, true)]);
    let read = broker.read("t", 1, 0, 1 << 20).await.unwrap();
    assert_eq!(
        records::decode(read.bytes.into(), 0)
            .unwrap()
            .messages
            .len(),
        3
    );
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_publishers_of_one_key_store_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Arc::new(open(dir.path()).await);
    broker.create_topic(NewTopic::new("t", 1)).await.unwrap();
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let broker = Arc::clone(&broker);
            tokio::spawn(async move {
                broker
                    .publish("t", vec![keyed("k", 0), keyed("other", 0)])
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap());
    }
    for i in 0..2 {
        let offsets: Vec<_> = answers.iter().map(|a| a[i].offset).collect();
        assert!(offsets.iter().all(|o| *o == offsets[0]), "{offsets:?}");
        assert_eq!(answers.iter().filter(|a| !a[i].duplicate).count(), 1);
    }
    assert_eq!(broker.offsets("t", 0).unwrap().log_end_offset, 2);
    broker.shutdown().await.unwrap();
}
