//! Test helper for `producer_state_survives_sigkill` (`tests/it/producer.rs`): opens a
//! broker on DIR, creates topic `t` (one partition) unless it exists, gets two producer
//! ids, prints `pid <id>` for each, then lets both produce one-record batches with
//! sequences 0, 1, 2, … (one in flight each) and prints `ack <id> <seq> <offset>` for
//! every acknowledged batch, until it is killed. Snapshots of the producer state are
//! written every few KiB, so kills land before, during and after them. Not part of the
//! broker.

use std::io::Write;
use std::sync::Arc;

use wharf_core::{Broker, BrokerConfig, CoreError, NewTopic};
use wharf_log::batch::{Record, RecordBatchBuilder};

fn fail(what: &str, e: CoreError) -> ! {
    eprintln!("crash producer: {what}: {e}");
    std::process::exit(1);
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let Some(dir) = std::env::args().nth(1) else {
        eprintln!("usage: wharf-core-crash-producer DIR");
        std::process::exit(2);
    };
    let mut config = BrokerConfig::new(dir);
    config.producer_snapshot_interval_bytes = 4096;
    let broker = match Broker::open(config).await {
        Ok(b) => Arc::new(b),
        Err(e) => fail("open", e),
    };
    match broker.create_topic(NewTopic::new("t", 1)).await {
        Ok(_) | Err(CoreError::TopicExists { .. }) => {}
        Err(e) => fail("create topic", e),
    }
    let mut ids = Vec::new();
    for _ in 0..2 {
        match broker.init_producer_id(None, -1, -1).await {
            Ok(p) => ids.push(p.producer_id),
            Err(e) => fail("init producer id", e),
        }
    }
    {
        let mut out = std::io::stdout().lock();
        for id in &ids {
            let _ = writeln!(out, "pid {id}");
        }
        let _ = out.flush();
    }
    let tasks: Vec<_> = ids
        .into_iter()
        .map(|id| {
            let broker = Arc::clone(&broker);
            tokio::spawn(async move {
                for seq in 0.. {
                    let mut b = RecordBatchBuilder::new().producer(id, 0, seq);
                    let value = format!("{id}/0/{seq}+0");
                    b.push(&Record {
                        value: Some(value.as_bytes()),
                        timestamp: 1,
                        ..Record::default()
                    });
                    match broker.produce("t", 0, b.build()).await {
                        Ok(r) => {
                            let mut out = std::io::stdout().lock();
                            let _ = writeln!(out, "ack {id} {seq} {}", r.info.base_offset);
                            let _ = out.flush();
                        }
                        Err(e) => fail("produce", e),
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
}
