//! Queue events reach a registered observer from a real broker and `Queues`: every
//! step of a message's life, with the record where the queues hold it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use wharf_core::observe::{QueueEvent, QueueEventKind, QueueObserver};
use wharf_core::queue::{Queues, SubscriptionSettings};
use wharf_core::{NewTopic, Publish};

/// Keeps what it is told, as text, so the test can compare it.
#[derive(Default)]
struct Recorder(Mutex<Vec<String>>);

impl QueueObserver for Recorder {
    fn on_event(&self, e: &QueueEvent<'_>) {
        assert!(!e.topic_id.is_nil());
        let trace = e
            .message
            .and_then(|m| m.header("traceparent"))
            .map(|v| String::from_utf8_lossy(v).into_owned());
        let what = match e.kind {
            QueueEventKind::Delivered {
                consumer,
                delivery_count,
                ack_id,
                deadline_ms,
            } => {
                assert!(deadline_ms >= e.time_ms + 29_000, "{deadline_ms} {}", e.time_ms);
                assert_eq!(ack_id.delivery, delivery_count);
                format!("delivered {consumer} #{delivery_count}")
            }
            QueueEventKind::Acked { delivery_count } => format!("acked #{delivery_count}"),
            QueueEventKind::Nacked {
                delivery_count,
                reason,
                redeliver_at_ms,
            } => format!(
                "nacked #{delivery_count} {reason} again:{}",
                redeliver_at_ms.is_some()
            ),
            QueueEventKind::LeaseExpired { delivery_count } => {
                format!("lease expired #{delivery_count}")
            }
            QueueEventKind::Expired => "expired".into(),
            QueueEventKind::DeadLettered {
                reason,
                delivery_count,
                dead_letter_topic,
                dlq_partition,
                dlq_offset,
            } => format!(
                "dead-lettered #{delivery_count} {reason} to {dead_letter_topic}/{dlq_partition}/{dlq_offset}"
            ),
            QueueEventKind::Redriven {
                from_topic,
                from_partition,
                from_offset,
            } => format!("redriven from {from_topic}/{from_partition}/{from_offset}"),
        };
        self.0.lock().unwrap().push(format!(
            "{}/{} {}@{} {what} {}",
            e.topic,
            e.subscription,
            e.partition,
            e.offset,
            trace.unwrap_or_default()
        ));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_observer_sees_deliveries_nacks_a_dead_letter_a_redrive_and_the_ack() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Arc::new(crate::open(dir.path()).await);
    let queues = Queues::open(Arc::clone(&broker)).await.unwrap();
    broker.create_topic(NewTopic::new("t", 1)).await.unwrap();
    let settings = SubscriptionSettings {
        max_deliveries: 2,
        ..Default::default()
    };
    queues.put("t", "s", settings).await.unwrap();
    let rec = Arc::new(Recorder::default());
    queues.add_observer(rec.clone());
    broker
        .publish(
            "t",
            vec![Publish {
                value: Some(b"v".to_vec()),
                headers: vec![("traceparent".into(), b"00-abc-def-01".to_vec())],
                ..Publish::default()
            }],
        )
        .await
        .unwrap();
    let wait = Duration::from_secs(5);
    for (consumer, reason) in [("a", "first"), ("b", "second")] {
        let got = queues.pull("t", "s", consumer, 1, wait).await.unwrap();
        assert_eq!(got.len(), 1);
        queues
            .nack("t", "s", &[got[0].ack_id], reason, Some(0))
            .await
            .unwrap();
    }
    // The dead letter is written in the background.
    let deadline = std::time::Instant::now() + wait;
    while !rec
        .0
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains("dead-lettered"))
    {
        assert!(std::time::Instant::now() < deadline, "no dead letter");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(queues.redrive("t", "s").await.unwrap(), 1);
    let got = queues.pull("t", "s", "c", 1, wait).await.unwrap();
    queues.ack("t", "s", &[got[0].ack_id]).await.unwrap();
    let seen = rec.0.lock().unwrap().clone();
    assert_eq!(
        seen,
        [
            "t/s 0@0 delivered a #1 00-abc-def-01",
            "t/s 0@0 nacked #1 first again:true ",
            "t/s 0@0 delivered b #2 00-abc-def-01",
            "t/s 0@0 nacked #2 second again:false ",
            "t/s 0@0 dead-lettered #2 second to t.s.dlq/0/0 00-abc-def-01",
            "t/s 0@0 redriven from t.s.dlq/0/0 ",
            "t/s 0@0 delivered c #1 00-abc-def-01",
            "t/s 0@0 acked #1 ",
        ]
    );
    queues.close().await;
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_past_its_time_to_live_is_reported_expired_then_dead_lettered() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Arc::new(crate::open(dir.path()).await);
    let queues = Queues::open(Arc::clone(&broker)).await.unwrap();
    let rec = Arc::new(Recorder::default());
    // Registered before the subscription exists: it is observed from its creation.
    queues.add_observer(rec.clone());
    broker.create_topic(NewTopic::new("t", 1)).await.unwrap();
    queues
        .put("t", "s", SubscriptionSettings::default())
        .await
        .unwrap();
    broker
        .publish(
            "t",
            vec![Publish {
                value: Some(b"v".to_vec()),
                ttl_ms: Some(1),
                headers: vec![("traceparent".into(), b"00-ttl-01".to_vec())],
                ..Publish::default()
            }],
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let got = queues
        .pull("t", "s", "a", 1, Duration::from_millis(300))
        .await
        .unwrap();
    assert!(got.is_empty());
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while rec.0.lock().unwrap().len() < 2 {
        assert!(std::time::Instant::now() < deadline, "no dead letter");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        *rec.0.lock().unwrap(),
        [
            "t/s 0@0 expired ",
            "t/s 0@0 dead-lettered #0 expired to t.s.dlq/0/0 00-ttl-01",
        ]
    );
    queues.close().await;
    broker.shutdown().await.unwrap();
}
