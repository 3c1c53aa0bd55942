//! Produce, Fetch, ListOffsets and OffsetForLeaderEpoch with a raw client.

use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiVersionsRequest, FetchRequest, FetchResponse, ListOffsetsRequest, MetadataRequest,
    OffsetForLeaderEpochRequest, ProduceRequest, ProduceResponse,
};
use wharf_core::NewTopic;

use crate::{batch, topic, Client, TestBroker};

fn produce_req(name: &str, partition: i32, records: Vec<u8>, acks: i16) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(5000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(topic(name))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(partition)
                .with_records(Some(Bytes::from(records)))])])
}

async fn produce(c: &mut Client, name: &str, records: Vec<u8>, version: i16) -> ProduceResponse {
    c.call(&produce_req(name, 0, records, -1), version).await
}

fn fetch_req(
    name: &str,
    id: uuid::Uuid,
    offset: i64,
    max_wait_ms: i32,
    min_bytes: i32,
) -> FetchRequest {
    FetchRequest::default()
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(min_bytes)
        .with_max_bytes(50 << 20)
        .with_topics(vec![FetchTopic::default()
            .with_topic(topic(name))
            .with_topic_id(id)
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(1 << 20)])])
}

fn records_of(resp: &FetchResponse) -> Bytes {
    resp.responses[0].partitions[0]
        .records
        .clone()
        .unwrap_or_default()
}

#[tokio::test]
async fn produce_then_fetch_returns_the_batch_byte_for_byte_at_every_version() {
    let b = TestBroker::start().await;
    let d = b.broker.create_topic(NewTopic::new("t", 1)).await.unwrap();
    let mut c = b.connect().await;
    let sent = batch(&[
        (Some(b"k1"), Some(b"v1")),
        (None, None),
        (Some(b"k3"), Some(b"v3")),
    ]);
    let mut offset = 0;
    for version in 3..=12 {
        let resp = produce(&mut c, "t", sent.clone(), version).await;
        let p = &resp.responses[0].partition_responses[0];
        assert_eq!(p.error_code, 0, "produce v{version}");
        assert_eq!(p.base_offset, offset, "produce v{version}");
        offset += 3;
    }
    for version in 4..=16 {
        let resp = c.call(&fetch_req("t", d.id, 3, 0, 1), version).await;
        assert_eq!(resp.error_code, 0);
        let p = &resp.responses[0].partitions[0];
        assert_eq!(p.error_code, 0, "fetch v{version}");
        assert_eq!(p.high_watermark, offset, "fetch v{version}");
        assert_eq!(p.last_stable_offset, offset, "fetch v{version}");
        let got = records_of(&resp);
        // Stored as sent, with the base offset written into bytes 0..8.
        assert_eq!(got.len() % sent.len(), 0, "fetch v{version}");
        assert_eq!(&got[0..8], &3i64.to_be_bytes());
        assert_eq!(&got[8..sent.len()], &sent[8..], "fetch v{version}");
        if version >= 13 {
            assert_eq!(resp.responses[0].topic_id, d.id);
        } else {
            assert_eq!(resp.responses[0].topic.0.as_str(), "t");
        }
    }
    b.stop().await;
}

#[tokio::test]
async fn a_long_poll_fetch_is_woken_by_an_append_well_before_max_wait() {
    let b = TestBroker::start().await;
    let d = b.broker.create_topic(NewTopic::new("t", 1)).await.unwrap();
    let mut consumer = b.connect().await;
    let mut producer = b.connect().await;
    let started = Instant::now();
    let id = consumer.send(&fetch_req("t", d.id, 0, 10_000, 1), 12).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    produce(&mut producer, "t", batch(&[(None, Some(b"wake"))]), 9).await;
    let resp = consumer.recv::<FetchRequest>(12, id).await;
    let waited = started.elapsed();
    assert!(!records_of(&resp).is_empty());
    assert!(waited >= Duration::from_millis(300), "{waited:?}");
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    b.stop().await;
}

#[tokio::test]
async fn a_fetch_with_nothing_to_read_answers_empty_after_max_wait() {
    let b = TestBroker::start().await;
    let d = b.broker.create_topic(NewTopic::new("t", 1)).await.unwrap();
    let mut c = b.connect().await;
    let started = Instant::now();
    let resp = c.call(&fetch_req("t", d.id, 0, 400, 1), 11).await;
    let waited = started.elapsed();
    assert!(records_of(&resp).is_empty());
    assert_eq!(resp.responses[0].partitions[0].error_code, 0);
    assert!(waited >= Duration::from_millis(350), "{waited:?}");
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    b.stop().await;
}

#[tokio::test]
async fn fetch_errors_are_per_partition() {
    let b = TestBroker::start().await;
    let d = b.broker.create_topic(NewTopic::new("t", 1)).await.unwrap();
    let mut c = b.connect().await;
    produce(&mut c, "t", batch(&[(None, Some(b"x"))]), 9).await;
    let resp = c.call(&fetch_req("t", d.id, 5, 0, 1), 11).await;
    assert_eq!(
        resp.responses[0].partitions[0].error_code, 1,
        "OFFSET_OUT_OF_RANGE"
    );
    let resp = c.call(&fetch_req("nope", d.id, 0, 0, 1), 11).await;
    assert_eq!(
        resp.responses[0].partitions[0].error_code, 3,
        "UNKNOWN_TOPIC_OR_PARTITION"
    );
    let resp = c
        .call(&fetch_req("", uuid::Uuid::new_v4(), 0, 0, 1), 13)
        .await;
    assert_eq!(
        resp.responses[0].partitions[0].error_code, 100,
        "UNKNOWN_TOPIC_ID"
    );
    b.stop().await;
}

#[tokio::test]
async fn produce_maps_bad_batches_to_kafka_errors() {
    let b = TestBroker::start().await;
    b.broker
        .create_topic(NewTopic::new("t", 1).config("max.message.bytes", "200"))
        .await
        .unwrap();
    let mut c = b.connect().await;
    let mut corrupt = batch(&[(None, Some(b"x"))]);
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0xff;
    let resp = produce(&mut c, "t", corrupt, 9).await;
    assert_eq!(
        resp.responses[0].partition_responses[0].error_code, 2,
        "CORRUPT_MESSAGE"
    );
    let big = batch(&[(None, Some(&[7u8; 500]))]);
    let resp = produce(&mut c, "t", big, 9).await;
    assert_eq!(
        resp.responses[0].partition_responses[0].error_code, 10,
        "MESSAGE_TOO_LARGE"
    );
    let resp = c
        .call(&produce_req("t", 7, batch(&[(None, Some(b"x"))]), -1), 9)
        .await;
    assert_eq!(
        resp.responses[0].partition_responses[0].error_code, 3,
        "UNKNOWN_TOPIC_OR_PARTITION"
    );
    let resp = c
        .call(&produce_req("t", 0, batch(&[(None, Some(b"x"))]), 2), 9)
        .await;
    assert_eq!(
        resp.responses[0].partition_responses[0].error_code, 21,
        "INVALID_REQUIRED_ACKS"
    );
    b.stop().await;
}

#[tokio::test]
async fn acks_zero_gets_no_response_and_the_next_answer_is_in_order() {
    let b = TestBroker::start().await;
    b.broker.create_topic(NewTopic::new("t", 1)).await.unwrap();
    let mut c = b.connect().await;
    c.send(&produce_req("t", 0, batch(&[(None, Some(b"fire"))]), 0), 9)
        .await;
    let id = c.send(&ApiVersionsRequest::default(), 3).await;
    let resp = c.recv::<ApiVersionsRequest>(3, id).await;
    assert_eq!(resp.error_code, 0);
    assert_eq!(b.broker.offsets("t", 0).unwrap().high_watermark, 1);
    b.stop().await;
}

#[tokio::test]
async fn metadata_and_produce_auto_create_unknown_topics_unless_disabled() {
    let b = TestBroker::start().await;
    let mut c = b.connect().await;
    let req = MetadataRequest::default()
        .with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(topic("auto")))
        ]))
        .with_allow_auto_topic_creation(true);
    let resp = c.call(&req, 12).await;
    assert_eq!(resp.topics[0].error_code, 0);
    assert_eq!(resp.topics[0].partitions.len(), 1);
    assert_eq!(resp.topics[0].partitions[0].leader_id.0, 0);
    assert_eq!(resp.brokers[0].port, i32::from(b.addr.port()));
    let resp = produce(&mut c, "by-produce", batch(&[(None, Some(b"x"))]), 9).await;
    assert_eq!(resp.responses[0].partition_responses[0].error_code, 0);
    assert!(b.broker.describe_topic("by-produce").is_ok());
    // The client may forbid it.
    let req = MetadataRequest::default()
        .with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(topic("no")))
        ]))
        .with_allow_auto_topic_creation(false);
    assert_eq!(c.call(&req, 12).await.topics[0].error_code, 3);
    b.stop().await;

    let b = TestBroker::start_with(wharf_kafka::KafkaConfig {
        auto_create_topics: false,
        advertised_addr: Some(("kafka.example".into(), 1234)),
        ..Default::default()
    })
    .await;
    let mut c = b.connect().await;
    let req = MetadataRequest::default()
        .with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(topic("auto")))
        ]))
        .with_allow_auto_topic_creation(true);
    let resp = c.call(&req, 12).await;
    assert_eq!(resp.topics[0].error_code, 3);
    assert_eq!(resp.brokers[0].host.as_str(), "kafka.example");
    assert_eq!(resp.brokers[0].port, 1234);
    let resp = produce(&mut c, "auto", batch(&[(None, Some(b"x"))]), 9).await;
    assert_eq!(resp.responses[0].partition_responses[0].error_code, 3);
    b.stop().await;
}

#[tokio::test]
async fn list_offsets_answers_earliest_latest_and_by_time() {
    let b = TestBroker::start().await;
    b.broker.create_topic(NewTopic::new("t", 1)).await.unwrap();
    let mut c = b.connect().await;
    produce(
        &mut c,
        "t",
        batch(&[(None, Some(b"a")), (None, Some(b"b"))]),
        9,
    )
    .await;
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    tokio::time::sleep(Duration::from_millis(5)).await;
    produce(&mut c, "t", batch(&[(None, Some(b"c"))]), 9).await;
    let ask = |ts: i64| {
        ListOffsetsRequest::default()
            .with_replica_id((-1).into())
            .with_topics(vec![ListOffsetsTopic::default()
                .with_name(topic("t"))
                .with_partitions(vec![ListOffsetsPartition::default()
                    .with_partition_index(0)
                    .with_timestamp(ts)])])
    };
    for version in 1..=7 {
        let offset = |resp: kafka_protocol::messages::ListOffsetsResponse| {
            resp.topics[0].partitions[0].offset
        };
        assert_eq!(offset(c.call(&ask(-2), version).await), 0, "v{version}");
        assert_eq!(offset(c.call(&ask(-1), version).await), 3, "v{version}");
        assert_eq!(
            offset(c.call(&ask(before + 1), version).await),
            2,
            "v{version}"
        );
        assert_eq!(
            offset(c.call(&ask(i64::MAX / 2), version).await),
            -1,
            "v{version}"
        );
    }
    b.stop().await;
}

#[tokio::test]
async fn offset_for_leader_epoch_answers_epoch_0_ending_at_the_log_end() {
    let b = TestBroker::start().await;
    b.broker.create_topic(NewTopic::new("t", 1)).await.unwrap();
    let mut c = b.connect().await;
    produce(
        &mut c,
        "t",
        batch(&[(None, Some(b"a")), (None, Some(b"b"))]),
        9,
    )
    .await;
    let req = OffsetForLeaderEpochRequest::default()
        .with_replica_id((-1).into())
        .with_topics(vec![OffsetForLeaderTopic::default()
            .with_topic(topic("t"))
            .with_partitions(vec![OffsetForLeaderPartition::default()
                .with_partition(0)
                .with_current_leader_epoch(0)
                .with_leader_epoch(0)])]);
    for version in 2..=4 {
        let resp = c.call(&req, version).await;
        let p = &resp.topics[0].partitions[0];
        assert_eq!(
            (p.error_code, p.leader_epoch, p.end_offset),
            (0, 0, 2),
            "v{version}"
        );
    }
    b.stop().await;
}

#[tokio::test]
async fn one_produce_request_for_many_partitions_answers_each_in_request_order() {
    let b = TestBroker::start().await;
    b.broker.create_topic(NewTopic::new("t", 3)).await.unwrap();
    let mut c = b.connect().await;
    // Partition 1 twice in one request is not something clients do; use 2, 0, 1.
    let order = [2, 0, 1];
    let req = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(5000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(topic("t"))
            .with_partition_data(
                order
                    .iter()
                    .map(|p| {
                        PartitionProduceData::default()
                            .with_index(*p)
                            .with_records(Some(Bytes::from(batch(&[(None, Some(b"x"))]))))
                    })
                    .collect(),
            )]);
    for round in 0..3 {
        let resp = c.call(&req, 9).await;
        let got: Vec<(i32, i16, i64)> = resp.responses[0]
            .partition_responses
            .iter()
            .map(|p| (p.index, p.error_code, p.base_offset))
            .collect();
        assert_eq!(got, order.map(|p| (p, 0, round)));
    }
    for p in 0..3 {
        assert_eq!(b.broker.offsets("t", p).unwrap().high_watermark, 3);
    }
    b.stop().await;
}

#[tokio::test]
async fn pipelined_produce_requests_are_stored_and_answered_in_order_and_share_fsyncs() {
    let b = TestBroker::start().await;
    b.broker.create_topic(NewTopic::new("t", 1)).await.unwrap();
    let mut c = b.connect().await;
    // All requests leave in one write, as a client with many in flight sends them,
    // with a Metadata request at the end (which must wait for every produce answer).
    const N: usize = 40;
    let mut frames = Vec::new();
    let mut ids = Vec::new();
    for i in 0..N {
        let payload = format!("m{i}");
        let req = produce_req("t", 0, batch(&[(None, Some(payload.as_bytes()))]), -1);
        let (id, frame) = c.encode(&req, 9);
        ids.push(id);
        frames.extend_from_slice(&frame);
    }
    let (meta_id, frame) = c.encode(&MetadataRequest::default().with_topics(None), 12);
    frames.extend_from_slice(&frame);
    c.write_all(&frames).await;

    for (i, id) in ids.into_iter().enumerate() {
        let resp = c.recv::<ProduceRequest>(9, id).await;
        let p = &resp.responses[0].partition_responses[0];
        assert_eq!(p.error_code, 0, "request {i}");
        // Stored in request order: request i holds offset i.
        assert_eq!(p.base_offset, i as i64, "request {i}");
    }
    let meta = c.recv::<MetadataRequest>(12, meta_id).await;
    assert!(meta.topics.iter().any(|t| t.name == Some(topic("t"))));

    // Each answer came only once durable: everything is below the high watermark, and
    // reading it back gives the payloads in order.
    assert_eq!(b.broker.offsets("t", 0).unwrap().high_watermark, N as u64);
    let stats = b.broker.log_stats("t", 0).unwrap();
    assert_eq!(stats.appends, N as u64);
    // Requests in flight together were covered by shared fsyncs. Answering one request
    // before reading the next would cost exactly one fsync each; a request is written
    // in microseconds and an fsync takes far longer, so pipelined ones share.
    assert!(
        stats.syncs < N as u64,
        "{} fsyncs for {N} pipelined requests",
        stats.syncs
    );
    b.stop().await;
}

#[tokio::test]
async fn a_bad_request_after_pipelined_produces_closes_only_after_answering_them() {
    let b = TestBroker::start().await;
    b.broker.create_topic(NewTopic::new("t", 1)).await.unwrap();
    let mut c = b.connect().await;
    let mut frames = Vec::new();
    let mut ids = Vec::new();
    for i in 0..5 {
        let payload = format!("m{i}");
        let req = produce_req("t", 0, batch(&[(None, Some(payload.as_bytes()))]), -1);
        let (id, frame) = c.encode(&req, 9);
        ids.push(id);
        frames.extend_from_slice(&frame);
    }
    // A Produce v9 frame whose body is not a request.
    let mut bad = vec![0u8, 0, 0, 9, 0, 0, 0, 99];
    bad.extend_from_slice(&[0xff; 12]);
    frames.extend_from_slice(&(bad.len() as i32).to_be_bytes());
    frames.extend_from_slice(&bad);
    c.write_all(&frames).await;
    for (i, id) in ids.into_iter().enumerate() {
        let resp = c.recv::<ProduceRequest>(9, id).await;
        let p = &resp.responses[0].partition_responses[0];
        assert_eq!((p.error_code, p.base_offset), (0, i as i64), "request {i}");
    }
    assert!(c.recv_frame().await.is_none(), "the connection stays open");
    assert_eq!(b.broker.offsets("t", 0).unwrap().high_watermark, 5);
    b.stop().await;
}
