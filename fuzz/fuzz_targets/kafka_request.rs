//! Fuzz target: one Kafka request frame, through the broker's own decoding and dispatch
//! (`wharf_kafka::handle_frame`), against a real in-process broker.
//!
//! Run: `cargo fuzz run -s none kafka_request fuzz/corpus/kafka_request` (see
//! fuzz/README.md). Inputs are frames without the 4-byte size prefix, as a connection
//! reads them; the kcat captures in crates/wharf-kafka/tests/fixtures seed the corpus.
#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use wharf_core::{Broker, BrokerConfig, FlushPolicy, NewTopic};
use wharf_kafka::KafkaConfig;

// As in the `wharf` binary: hostile array lengths must not abort the process.
#[global_allocator]
static ALLOC: wharf_kafka::LazyHugeAlloc = wharf_kafka::LazyHugeAlloc;

struct Env {
    rt: tokio::runtime::Runtime,
    broker: Arc<Broker>,
    _dir: tempfile::TempDir,
}

static ENV: OnceLock<Env> = OnceLock::new();

fn env() -> &'static Env {
    ENV.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = BrokerConfig::new(dir.path());
        // Speed, not durability, is what a fuzzer needs from the log.
        config.flush = FlushPolicy::Never;
        let broker = rt.block_on(Broker::open(config)).expect("broker");
        rt.block_on(broker.create_topic(NewTopic::new("fuzz", 2)))
            .expect("topic");
        Env {
            rt,
            broker: Arc::new(broker),
            _dir: dir,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        // The framing layer never hands over less.
        return;
    }
    let env = env();
    let config = KafkaConfig {
        auto_create_topics: false,
        ..KafkaConfig::default()
    };
    let frame = Bytes::copy_from_slice(data);
    env.rt.block_on(async {
        // A Fetch may long-poll and a JoinGroup wait for a rebalance: what matters here
        // is decoding and dispatch, so a short bound is enough.
        let _ = tokio::time::timeout(
            Duration::from_millis(20),
            wharf_kafka::handle_frame(
                Arc::clone(&env.broker),
                config,
                ("127.0.0.1".to_string(), 9092),
                frame,
            ),
        )
        .await;
    });
});
