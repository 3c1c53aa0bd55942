//! Requests captured from a real client, replayed: Debian 12's kcat 1.7.1 (librdkafka
//! 2.0.2) producing three keyed, zstd-compressed records with a header (one with a null
//! key, one with a null value), consuming them, and listing metadata. The bytes were
//! recorded by a proxy in front of Wharf and are kept in
//! `tests/fixtures/kcat-1.7.1/<seq>-<api>-v<version>.bin` (frames without their size
//! prefix). They pin what that client sends, whatever kcat a machine has installed.

use std::path::PathBuf;

use bytes::{Buf, Bytes};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, FetchRequest, FetchResponse,
    ListOffsetsRequest, ListOffsetsResponse, MetadataRequest, MetadataResponse, ProduceRequest,
    ProduceResponse, RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::Decodable;

use crate::TestBroker;

fn fixtures() -> Vec<(String, Bytes)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/kcat-1.7.1");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, Bytes::from(std::fs::read(&p).unwrap()))
        })
        .collect()
}

fn decode<T: Decodable>(buf: &mut Bytes, version: i16, what: &str) -> T {
    let v = T::decode(buf, version).unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        !buf.has_remaining(),
        "{what}: {} bytes left over",
        buf.remaining()
    );
    v
}

#[tokio::test]
async fn kcat_1_7_1_requests_decode_and_get_answers_it_can_use() {
    let frames = fixtures();
    assert_eq!(frames.len(), 14);
    let b = TestBroker::start().await;
    let mut c = b.connect().await;
    let mut produced = Vec::new();
    let mut fetched = Bytes::new();
    for (name, frame) in frames {
        let mut req = frame.clone();
        let key = ApiKey::try_from(req.clone().get_i16()).unwrap();
        let version = (&frame[2..4]).get_i16();
        let header: RequestHeader = decode_header(&mut req, key, version);
        assert_eq!(header.client_id.as_deref(), Some("rdkafka"), "{name}");

        c.send_raw(&frame).await;
        let mut resp = c
            .recv_frame()
            .await
            .unwrap_or_else(|| panic!("{name}: closed"));
        let rh = ResponseHeader::decode(&mut resp, key.response_header_version(version)).unwrap();
        assert_eq!(rh.correlation_id, header.correlation_id, "{name}");
        match key {
            ApiKey::ApiVersions => {
                decode::<ApiVersionsRequest>(&mut req, version, &name);
                let r: ApiVersionsResponse = decode(&mut resp, version, &name);
                assert_eq!(r.error_code, 0, "{name}");
            }
            ApiKey::Metadata => {
                decode::<MetadataRequest>(&mut req, version, &name);
                let r: MetadataResponse = decode(&mut resp, version, &name);
                assert!(r.topics.iter().all(|t| t.error_code == 0), "{name}: {r:?}");
            }
            ApiKey::Produce => {
                let p: ProduceRequest = decode(&mut req, version, &name);
                produced.push(p.topic_data[0].partition_data[0].records.clone().unwrap());
                let r: ProduceResponse = decode(&mut resp, version, &name);
                assert_eq!(
                    r.responses[0].partition_responses[0].error_code, 0,
                    "{name}"
                );
            }
            ApiKey::ListOffsets => {
                decode::<ListOffsetsRequest>(&mut req, version, &name);
                let r: ListOffsetsResponse = decode(&mut resp, version, &name);
                assert_eq!(r.topics[0].partitions[0].error_code, 0, "{name}");
            }
            ApiKey::Fetch => {
                decode::<FetchRequest>(&mut req, version, &name);
                let r: FetchResponse = decode(&mut resp, version, &name);
                let p = &r.responses[0].partitions[0];
                assert_eq!(p.error_code, 0, "{name}");
                if fetched.is_empty() {
                    fetched = p.records.clone().unwrap_or_default();
                }
            }
            other => panic!("{name}: unexpected {other:?}"),
        }
    }
    // What was fetched is what was produced, batch for batch, with the offsets the log
    // assigned written into the first 8 bytes of each.
    let mut offset = 0i64;
    let mut rest = fetched.clone();
    for batch in &produced {
        assert!(rest.len() >= batch.len(), "fetched less than produced");
        let got = rest.split_to(batch.len());
        assert_eq!(&got[0..8], &offset.to_be_bytes());
        assert_eq!(&got[8..], &batch[8..]);
        let last_delta = (&batch[23..27]).get_i32();
        offset += i64::from(last_delta) + 1;
    }
    assert!(rest.is_empty());
    b.stop().await;
}

fn decode_header(buf: &mut Bytes, key: ApiKey, version: i16) -> RequestHeader {
    RequestHeader::decode(buf, key.request_header_version(version)).unwrap()
}
