//! Prometheus metrics: the recorder behind the `metrics` facade, and `GET /metrics`.
//!
//! Two kinds of metrics end up in one scrape:
//!
//! - **Events**, counted where they happen through the `metrics` facade and its cached
//!   handles: per-topic messages and bytes in and out and back-pressure
//!   (`wharf_core::metrics`), Kafka connections, requests, errors and latencies
//!   (`wharf-kafka`), log syncs (`wharf-log`), HTTP requests (`http`). [`install`] sets
//!   the global Prometheus recorder before the broker opens, so every handle the
//!   libraries take is live.
//! - **State**, computed when scraped, from the broker's own APIs (topics and their
//!   high watermarks, `Broker::groups()` committed offsets, `Queues::list` subscription
//!   figures): nothing is updated on the hot path for them, and a deleted topic, group
//!   or subscription simply is not in the next scrape. They are written into a
//!   recorder made for the one scrape and rendered after the global one.
//!
//! Labels are bounded by what the operator creates (`topic`, `group`, `subscription`,
//! `api`, `code`, `route`); `partition` labels appear only with
//! `--metrics-partition-labels`.

use std::collections::BTreeMap;
use std::time::Duration;

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use wharf_core::group::TopicPartition;
use wharf_core::queue::Queues;
use wharf_core::Broker;

/// Histogram buckets of latencies: 100 µs to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Histogram buckets of sizes in bytes: 512 B to 64 MiB, by fours.
const BYTES_BUCKETS: &[f64] = &[
    512.0, 2048.0, 8192.0, 32768.0, 131072.0, 524288.0, 2097152.0, 8388608.0, 33554432.0,
    67108864.0,
];

/// Histogram buckets of batch counts: 1 to 4096, by twos.
const COUNT_BUCKETS: &[f64] = &[
    1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0,
];

/// How often histogram samples are folded into their buckets when nobody scrapes.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// What `GET /metrics` needs.
#[derive(Clone)]
pub struct Metrics {
    handle: PrometheusHandle,
    /// Per-partition labels on the state gauges (`--metrics-partition-labels`).
    pub partition_labels: bool,
}

/// Installs the global Prometheus recorder (once per process, before the broker
/// opens) and describes every metric the libraries record.
pub fn install(partition_labels: bool) -> anyhow::Result<Metrics> {
    let handle = PrometheusBuilder::new()
        .set_buckets(LATENCY_BUCKETS)?
        .set_buckets_for_metric(Matcher::Suffix("_bytes".into()), BYTES_BUCKETS)?
        .set_buckets_for_metric(
            Matcher::Full("wharf_log_sync_batches".into()),
            COUNT_BUCKETS,
        )?
        .install_recorder()?;
    describe_events();
    Ok(Metrics {
        handle,
        partition_labels,
    })
}

impl Metrics {
    /// Folds histogram samples into their buckets every few seconds, so memory stays
    /// bounded between scrapes. Runs until the runtime stops.
    pub fn spawn_upkeep(&self) {
        let handle = self.handle.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(UPKEEP_INTERVAL);
            loop {
                tick.tick().await;
                handle.run_upkeep();
            }
        });
    }

    /// The whole scrape: the event metrics, then the state computed now.
    pub async fn render(&self, broker: &Broker, queues: &Queues) -> String {
        let state = State::collect(broker, queues, self.partition_labels).await;
        let mut out = self.handle.render();
        out.push_str(&state.render());
        out
    }
}

fn describe_events() {
    describe_counter!(
        "wharf_messages_in_total",
        Unit::Count,
        "Records appended per topic (Kafka produce and HTTP publish), from batch headers"
    );
    describe_counter!(
        "wharf_bytes_in_total",
        Unit::Bytes,
        "Record-batch bytes appended per topic"
    );
    describe_counter!(
        "wharf_messages_out_total",
        Unit::Count,
        "Records handed to consumers per topic, via kafka_fetch or queue_pull"
    );
    describe_counter!(
        "wharf_bytes_out_total",
        Unit::Bytes,
        "Bytes handed to consumers per topic: fetched batch bytes, pulled key and value bytes"
    );
    describe_histogram!(
        "wharf_produce_throttle_seconds",
        Unit::Seconds,
        "Time a Kafka produce was held by queue back-pressure, per topic"
    );
    describe_counter!(
        "wharf_backpressure_rejections_total",
        Unit::Count,
        "Produces and publishes turned away by queue back-pressure, per topic and reason"
    );
    describe_histogram!(
        "wharf_log_sync_duration_seconds",
        Unit::Seconds,
        "Duration of each fdatasync round of a partition log (group commit)"
    );
    describe_histogram!(
        "wharf_log_sync_bytes",
        Unit::Bytes,
        "Bytes of the active segment each fdatasync round made durable"
    );
    describe_histogram!(
        "wharf_log_sync_batches",
        Unit::Count,
        "Record batches each fdatasync round covered"
    );
    describe_gauge!(
        "wharf_kafka_connections_open",
        Unit::Count,
        "Kafka client connections open now"
    );
    describe_counter!(
        "wharf_kafka_connections_accepted_total",
        Unit::Count,
        "Kafka client connections accepted"
    );
    describe_counter!(
        "wharf_kafka_requests_total",
        Unit::Count,
        "Kafka requests handled, per API"
    );
    describe_counter!(
        "wharf_kafka_errors_total",
        Unit::Count,
        "Kafka error codes answered, per code name"
    );
    describe_histogram!(
        "wharf_kafka_request_duration_seconds",
        Unit::Seconds,
        "Kafka Produce (until durable and answered) and Fetch (long poll included) latency"
    );
    describe_counter!(
        "wharf_http_requests_total",
        Unit::Count,
        "HTTP requests answered, per route and status class"
    );
    describe_histogram!(
        "wharf_http_request_duration_seconds",
        Unit::Seconds,
        "Latency of HTTP publish and subscription pull requests (long poll included), per route"
    );
}

/// A gauge or counter computed at scrape time.
struct Sample {
    name: &'static str,
    labels: Vec<(&'static str, String)>,
    value: f64,
}

/// The broker's state, as gauges.
#[derive(Default)]
struct State {
    samples: Vec<Sample>,
}

impl State {
    fn push(&mut self, name: &'static str, labels: Vec<(&'static str, String)>, value: f64) {
        self.samples.push(Sample {
            name,
            labels,
            value,
        });
    }

    async fn collect(broker: &Broker, queues: &Queues, per_partition: bool) -> State {
        let mut st = State::default();
        let topics = broker.list_topics();
        // High watermarks of every partition, for topics and group lag alike.
        let mut hws: BTreeMap<(String, u32), u64> = BTreeMap::new();
        for t in &topics {
            let name = t.name.to_string();
            st.push(
                "wharf_topic_partitions",
                vec![("topic", name.clone())],
                f64::from(t.partitions),
            );
            let (mut hw_sum, mut stored) = (0u64, 0u64);
            for p in 0..t.partitions {
                let Ok(o) = broker.offsets(&name, p) else {
                    continue;
                };
                hws.insert((name.clone(), p), o.high_watermark);
                hw_sum += o.high_watermark;
                stored += broker
                    .partition_bytes_from(&name, p, o.log_start_offset)
                    .unwrap_or(0);
                if per_partition {
                    st.push(
                        "wharf_partition_high_watermark",
                        vec![("topic", name.clone()), ("partition", p.to_string())],
                        o.high_watermark as f64,
                    );
                }
            }
            st.push(
                "wharf_topic_high_watermark",
                vec![("topic", name.clone())],
                hw_sum as f64,
            );
            st.push(
                "wharf_topic_stored_bytes",
                vec![("topic", name.clone())],
                stored as f64,
            );
        }
        st.collect_groups(broker, &hws, per_partition).await;
        for t in &topics {
            let Ok(subs) = queues.list(t.name.as_str()).await else {
                continue;
            };
            for s in subs {
                let labels = vec![("topic", s.topic.clone()), ("subscription", s.name.clone())];
                let x = &s.stats;
                for (name, value) in [
                    ("wharf_subscription_backlog_messages", x.backlog),
                    ("wharf_subscription_in_flight_messages", x.in_flight),
                    ("wharf_subscription_delivered_total", x.delivered),
                    ("wharf_subscription_acked_total", x.acked),
                    ("wharf_subscription_nacked_total", x.nacked),
                    ("wharf_subscription_redelivered_total", x.redelivered),
                    ("wharf_subscription_dead_lettered_total", x.dead_lettered),
                ] {
                    st.push(name, labels.clone(), value as f64);
                }
                st.push(
                    "wharf_subscription_oldest_unacked_age_seconds",
                    labels,
                    x.oldest_unacked_age_ms.unwrap_or(0) as f64 / 1000.0,
                );
            }
        }
        st
    }

    /// Per group and topic: members, committed offsets and lag (high watermark minus
    /// committed offset, summed over the partitions the group committed).
    async fn collect_groups(
        &mut self,
        broker: &Broker,
        hws: &BTreeMap<(String, u32), u64>,
        per_partition: bool,
    ) {
        let groups = broker.groups();
        let Ok(listing) = groups.list_groups(&[]) else {
            return;
        };
        for g in listing {
            let members = groups
                .describe_group(&g.group_id)
                .map_or(0, |d| d.members.len());
            self.push(
                "wharf_group_members",
                vec![("group", g.group_id.clone())],
                members as f64,
            );
            let Ok(offsets) = groups.fetch_offsets(&g.group_id, None).await else {
                continue;
            };
            // Per topic: (committed sum, lag sum).
            let mut per_topic: BTreeMap<String, (u64, u64)> = BTreeMap::new();
            for (TopicPartition { topic, partition }, committed) in offsets {
                let (Some(c), Ok(p)) = (committed, u32::try_from(partition)) else {
                    continue;
                };
                // Offsets of deleted topics stay committed; they are not shown.
                let Some(&hw) = hws.get(&(topic.clone(), p)) else {
                    continue;
                };
                let committed = u64::try_from(c.offset).unwrap_or(0);
                let lag = hw.saturating_sub(committed);
                let e = per_topic.entry(topic.clone()).or_default();
                e.0 += committed;
                e.1 += lag;
                if per_partition {
                    let labels = vec![
                        ("group", g.group_id.clone()),
                        ("topic", topic.clone()),
                        ("partition", p.to_string()),
                    ];
                    self.push("wharf_partition_group_lag", labels, lag as f64);
                }
            }
            for (topic, (committed, lag)) in per_topic {
                let labels = vec![("group", g.group_id.clone()), ("topic", topic)];
                self.push(
                    "wharf_group_committed_offset",
                    labels.clone(),
                    committed as f64,
                );
                self.push("wharf_group_lag", labels, lag as f64);
            }
        }
    }

    /// Renders the samples through a recorder made for this scrape (the exporter's
    /// own escaping and formatting), so nothing of them outlives the scrape.
    fn render(&self) -> String {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            describe_state();
            for s in &self.samples {
                let labels: Vec<metrics::Label> = s
                    .labels
                    .iter()
                    .map(|(k, v)| metrics::Label::new(*k, v.clone()))
                    .collect();
                if s.name.ends_with("_total") {
                    metrics::counter!(s.name, labels).absolute(s.value as u64);
                } else {
                    metrics::gauge!(s.name, labels).set(s.value);
                }
            }
        });
        handle.render()
    }
}

fn describe_state() {
    for (name, help) in [
        ("wharf_topic_partitions", "Partitions per topic"),
        (
            "wharf_topic_high_watermark",
            "Sum of the topic's partition high watermarks (committed offsets end)",
        ),
        (
            "wharf_partition_high_watermark",
            "High watermark per partition (with --metrics-partition-labels)",
        ),
        (
            "wharf_topic_stored_bytes",
            "Bytes the topic's partition logs hold",
        ),
        ("wharf_group_members", "Members of a consumer group"),
        (
            "wharf_group_committed_offset",
            "Sum of a consumer group's committed offsets per topic",
        ),
        (
            "wharf_group_lag",
            "Consumer group lag per topic: high watermark minus committed offset, summed over committed partitions",
        ),
        (
            "wharf_partition_group_lag",
            "Consumer group lag per partition (with --metrics-partition-labels)",
        ),
        (
            "wharf_subscription_backlog_messages",
            "Messages of a queue subscription not acked yet (in flight included)",
        ),
        (
            "wharf_subscription_in_flight_messages",
            "Messages of a queue subscription leased to consumers now",
        ),
        (
            "wharf_subscription_oldest_unacked_age_seconds",
            "Age of a subscription's oldest unacked message (0 when there is none)",
        ),
    ] {
        describe_gauge!(name, help);
    }
    for (name, help) in [
        (
            "wharf_subscription_delivered_total",
            "Deliveries of a subscription's messages since the broker started",
        ),
        (
            "wharf_subscription_acked_total",
            "Messages of a subscription acked since the broker started",
        ),
        (
            "wharf_subscription_nacked_total",
            "Messages of a subscription nacked since the broker started",
        ),
        (
            "wharf_subscription_redelivered_total",
            "Deliveries of messages delivered before (nack, expired lease, restart) since the broker started",
        ),
        (
            "wharf_subscription_dead_lettered_total",
            "Messages of a subscription dead-lettered since the broker started",
        ),
    ] {
        describe_counter!(name, help);
    }
}
