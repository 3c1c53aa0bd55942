//! Frames kept from the fuzzer (`fuzz/regressions/`) and captured from real clients
//! (`tests/fixtures/`), replayed through `wharf_kafka::handle_frame`: each is answered or
//! refused with a reason, never a panic or a hang, and the broker keeps serving.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use wharf_core::{Broker, BrokerConfig, FlushPolicy, NewTopic};
use wharf_kafka::KafkaConfig;

fn frames(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .collect(),
        Err(_) => Vec::new(),
    };
    out.sort();
    out
}

#[tokio::test]
async fn fuzz_regressions_and_client_captures_are_answered_or_refused_cleanly() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut inputs = frames(&root.join("../../fuzz/regressions"));
    inputs.extend(frames(&root.join("tests/fixtures/kcat-1.7.1")));
    assert!(
        inputs.len() >= 10,
        "expected the kcat captures at least: {inputs:?}"
    );

    let dir = tempfile::tempdir().unwrap();
    let mut config = BrokerConfig::new(dir.path());
    config.flush = FlushPolicy::Never;
    let broker = Arc::new(Broker::open(config).await.unwrap());
    broker.create_topic(NewTopic::new("fuzz", 2)).await.unwrap();
    for path in &inputs {
        let data = std::fs::read(path).unwrap();
        if data.len() < 8 {
            continue;
        }
        let outcome = tokio::time::timeout(
            Duration::from_secs(10),
            wharf_kafka::handle_frame(
                Arc::clone(&broker),
                KafkaConfig::default(),
                ("127.0.0.1".to_string(), 9092),
                Bytes::from(data),
            ),
        )
        .await;
        assert!(outcome.is_ok(), "{} hung", path.display());
    }
    // Still serving: an append and a read after all of that.
    let before = broker.offsets("fuzz", 0).unwrap().log_end_offset;
    let batch = wharf_log::batch::RecordBatchBuilder::new();
    let mut b = batch;
    b.push(&wharf_log::batch::Record {
        key: None,
        value: Some(b"ok"),
        headers: vec![],
        timestamp: 0,
    });
    broker.append("fuzz", 0, b.build()).await.unwrap();
    assert_eq!(
        broker.offsets("fuzz", 0).unwrap().log_end_offset,
        before + 1
    );
    broker.shutdown().await.unwrap();
}
