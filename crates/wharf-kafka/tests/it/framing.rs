//! Framing, ApiVersions and hostile input.

use bytes::{Buf, BufMut, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, MetadataRequest, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use tokio::io::AsyncWriteExt;

use crate::TestBroker;

fn ranges(resp: &ApiVersionsResponse) -> Vec<(i16, i16, i16)> {
    resp.api_keys
        .iter()
        .map(|k| (k.api_key, k.min_version, k.max_version))
        .collect()
}

fn implemented() -> Vec<(i16, i16, i16)> {
    wharf_kafka::supported_apis()
        .iter()
        .map(|a| (a.key as i16, a.min, a.max))
        .collect()
}

#[tokio::test]
async fn api_versions_advertises_exactly_the_implemented_ranges_at_every_version() {
    let b = TestBroker::start().await;
    let mut c = b.connect().await;
    for version in 0..=4 {
        let req = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("wharf-test"))
            .with_client_software_version(StrBytes::from_static_str("1"));
        let resp = c.call(&req, version).await;
        assert_eq!(resp.error_code, 0, "v{version}");
        assert_eq!(ranges(&resp), implemented(), "v{version}");
    }
    // No transactions are advertised.
    for missing in [
        ApiKey::AddPartitionsToTxn,
        ApiKey::EndTxn,
        ApiKey::TxnOffsetCommit,
    ] {
        assert!(!implemented().iter().any(|a| a.0 == missing as i16));
    }
    b.stop().await;
}

#[tokio::test]
async fn api_versions_v3_omits_tagged_fields_that_hold_their_default() {
    // librdkafka 2.0.2 (Debian's kcat) mis-skips tagged fields with default values; the
    // response must carry none: the body ends with an empty tagged-field section.
    let b = TestBroker::start().await;
    let mut c = b.connect().await;
    let id = c.send(&ApiVersionsRequest::default(), 3).await;
    let mut frame = c.recv_frame().await.unwrap();
    // ApiVersions responses always use header v0 (KIP-511).
    assert_eq!(frame.get_i32(), id);
    let body = frame.clone();
    let resp = ApiVersionsResponse::decode(&mut frame, 3).unwrap();
    assert!(resp.supported_features.is_empty() && resp.finalized_features.is_empty());
    // error code, compact array of (key, min, max, no tags), throttle, no tags.
    let n = implemented().len();
    assert_eq!(body.len(), 2 + 1 + n * 7 + 4 + 1);
    assert_eq!(body[body.len() - 1], 0, "tagged fields present: {body:?}");
    b.stop().await;
}

#[tokio::test]
async fn a_too_new_api_versions_gets_a_v0_answer_with_unsupported_version_and_the_ranges() {
    // KIP-511: the broker cannot parse the body, so it answers in v0, which any client
    // can read, and the client retries with a version from the ranges.
    let b = TestBroker::start().await;
    let mut c = b.connect().await;
    let mut body = BytesMut::new();
    body.put_i16(ApiKey::ApiVersions as i16);
    body.put_i16(42);
    body.put_i32(77);
    body.put_slice(b"\x00\x0awharf-test\x00 whatever a future version carries");
    c.send_raw(&body).await;
    let mut frame = c.recv_frame().await.unwrap();
    let header = ResponseHeader::decode(&mut frame, 0).unwrap();
    assert_eq!(header.correlation_id, 77);
    let resp = ApiVersionsResponse::decode(&mut frame, 0).unwrap();
    assert_eq!(resp.error_code, 35, "UNSUPPORTED_VERSION");
    assert_eq!(ranges(&resp), implemented());
    // The connection is still usable.
    let resp = c.call(&ApiVersionsRequest::default(), 3).await;
    assert_eq!(resp.error_code, 0);
    b.stop().await;
}

#[tokio::test]
async fn an_unknown_api_key_or_version_gets_unsupported_version_not_a_hang() {
    let b = TestBroker::start().await;
    let mut c = b.connect().await;
    for (key, version, correlation) in [
        (999i16, 0i16, 5i32),
        (ApiKey::Produce as i16, 99, 6),
        (ApiKey::JoinGroup as i16, 10, 7),
        (ApiKey::Produce as i16, 0, 8),
    ] {
        let mut body = BytesMut::new();
        body.put_i16(key);
        body.put_i16(version);
        body.put_i32(correlation);
        body.put_i16(-1);
        c.send_raw(&body).await;
        let mut frame = c.recv_frame().await.expect("an answer, not a close");
        assert_eq!(frame.get_i32(), correlation);
        assert_eq!(
            frame.get_i16(),
            35,
            "UNSUPPORTED_VERSION for {key} v{version}"
        );
    }
    let resp = c.call(&ApiVersionsRequest::default(), 0).await;
    assert_eq!(resp.error_code, 0);
    b.stop().await;
}

#[tokio::test]
async fn garbage_truncated_frames_and_absurd_lengths_disconnect_only_that_client() {
    let b = TestBroker::start().await;
    let mut good = b.connect().await;
    assert_eq!(
        good.call(&ApiVersionsRequest::default(), 3)
            .await
            .error_code,
        0
    );

    // An absurd length: 2 GiB - 1, and a negative one.
    for size in [i32::MAX, -5, 3] {
        let mut bad = b.connect().await;
        bad.stream.write_all(&size.to_be_bytes()).await.unwrap();
        assert!(bad.is_closed().await, "size {size}");
    }
    // Garbage: a valid size, then a header claiming Metadata v12 and junk.
    let mut bad = b.connect().await;
    let mut body = BytesMut::new();
    body.put_i16(ApiKey::Metadata as i16);
    body.put_i16(12);
    body.put_i32(1);
    body.put_slice(&[0xff; 7]);
    bad.send_raw(&body).await;
    assert!(bad.is_closed().await);
    // A truncated frame: says 100 bytes, sends 10, closes its write side.
    let mut bad = b.connect().await;
    bad.stream.write_all(&100i32.to_be_bytes()).await.unwrap();
    bad.stream.write_all(&[0u8; 10]).await.unwrap();
    bad.stream.shutdown().await.unwrap();
    assert!(bad.is_closed().await);

    assert_eq!(
        good.call(&MetadataRequest::default(), 12)
            .await
            .brokers
            .len(),
        1
    );
    b.stop().await;
}

#[tokio::test]
async fn a_request_claiming_billions_of_array_entries_closes_the_connection_not_the_broker() {
    // kafka-protocol reserves Vec capacity from the array length on the wire; without
    // LazyHugeAlloc this 30-byte request aborts the process (240 GB allocation).
    let b = TestBroker::start().await;
    for (version, count) in [
        (2i16, vec![0x7f, 0xff, 0xff, 0xff]),
        (5, vec![0xff, 0xff, 0xff, 0xff, 0x0f]),
    ] {
        let mut bad = b.connect().await;
        let mut body = BytesMut::new();
        body.put_i16(ApiKey::CreateTopics as i16);
        body.put_i16(version);
        body.put_i32(1);
        body.put_i16(-1);
        if version >= 5 {
            body.put_u8(0);
        }
        body.put_slice(&count);
        body.put_slice(&[0u8; 10]);
        bad.send_raw(&body).await;
        assert!(bad.is_closed().await);
    }
    let mut good = b.connect().await;
    assert_eq!(
        good.call(&ApiVersionsRequest::default(), 3)
            .await
            .error_code,
        0
    );
    b.stop().await;
}

#[tokio::test]
async fn a_request_over_the_configured_maximum_is_refused_before_it_is_read() {
    let b = TestBroker::start_with(wharf_kafka::KafkaConfig {
        max_request_bytes: 1024,
        ..Default::default()
    })
    .await;
    let mut bad = b.connect().await;
    bad.stream.write_all(&1025i32.to_be_bytes()).await.unwrap();
    assert!(bad.is_closed().await);
    let mut good = b.connect().await;
    let mut body = BytesMut::new();
    ApiVersionsRequest::default().encode(&mut body, 0).unwrap();
    assert_eq!(
        good.call(&ApiVersionsRequest::default(), 0)
            .await
            .error_code,
        0
    );
    b.stop().await;
}

/// xorshift64*: deterministic, so a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// A request body (header included) of type `R` at `version`.
fn encoded<R: kafka_protocol::protocol::Request>(req: &R, version: i16) -> Vec<u8> {
    let header = kafka_protocol::messages::RequestHeader::default()
        .with_request_api_key(R::KEY)
        .with_request_api_version(version)
        .with_correlation_id(1)
        .with_client_id(Some(StrBytes::from_static_str("fuzz")));
    let mut body = BytesMut::new();
    header
        .encode(&mut body, R::header_version(version))
        .unwrap();
    req.encode(&mut body, version).unwrap();
    body.to_vec()
}

fn seeds() -> Vec<Vec<u8>> {
    use bytes::Bytes;
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::*;
    let t = crate::topic("t");
    let produce = ProduceRequest::default()
        .with_acks(-1)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(t.clone())
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(1)
                .with_records(Some(Bytes::from(crate::batch(&[(
                    Some(b"k"),
                    Some(b"v"),
                )]))))])]);
    let fetch = FetchRequest::default()
        .with_max_wait_ms(50)
        .with_max_bytes(1 << 20)
        .with_topics(vec![FetchTopic::default()
            .with_topic(t.clone())
            .with_partitions(vec![FetchPartition::default()
                .with_partition(1)
                .with_partition_max_bytes(1 << 20)])]);
    let list = ListOffsetsRequest::default().with_topics(vec![ListOffsetsTopic::default()
        .with_name(t.clone())
        .with_partitions(vec![ListOffsetsPartition::default().with_timestamp(-1)])]);
    let metadata = MetadataRequest::default().with_topics(Some(vec![
        MetadataRequestTopic::default().with_name(Some(t.clone())),
    ]));
    let mut out = Vec::new();
    for v in [3, 9, 12] {
        out.push(encoded(&produce, v));
    }
    for v in [4, 11, 12, 16] {
        out.push(encoded(&fetch, v));
    }
    for v in [1, 7] {
        out.push(encoded(&list, v));
    }
    for v in [0, 9, 12] {
        out.push(encoded(&metadata, v));
    }
    for v in [0, 3] {
        out.push(encoded(&ApiVersionsRequest::default(), v));
    }
    out.push(encoded(&DescribeClusterRequest::default(), 1));
    out.push(encoded(&DescribeConfigsRequest::default(), 4));
    out
}

#[tokio::test]
async fn ten_thousand_mutated_requests_never_take_the_broker_down() {
    let b = TestBroker::start().await;
    b.broker
        .create_topic(wharf_core::NewTopic::new("t", 2))
        .await
        .unwrap();
    let seeds = seeds();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for i in 0..10_000 {
        let mut frame = seeds[i % seeds.len()].clone();
        for _ in 0..=rng.below(4) {
            // Keep the api key and version (bytes 0..4): mutate what a decoder reads.
            let at = 4 + rng.below(frame.len() - 4);
            match rng.below(5) {
                0 => frame[at] ^= 1 << rng.below(8),
                1 => frame[at] = 0xff,
                2 => frame[at] = 0x7f,
                3 => frame[at] = 0x00,
                _ => frame.truncate(at.max(8)),
            }
        }
        let mut c = b.connect().await;
        c.send_raw(&frame).await;
        // Whatever the answer (an error, a response, a close), do not wait for it.
    }
    let mut good = b.connect().await;
    assert_eq!(
        good.call(&ApiVersionsRequest::default(), 3)
            .await
            .error_code,
        0
    );
    let resp = good
        .call(&MetadataRequest::default().with_topics(None), 12)
        .await;
    assert!(resp
        .topics
        .iter()
        .any(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == "t")));
    b.stop().await;
}
