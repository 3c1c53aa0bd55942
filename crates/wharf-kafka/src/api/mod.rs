//! Request dispatch: one module per API, and the table of what is implemented.

mod alter_configs;
mod api_versions;
mod configs;
mod create_partitions;
mod create_topics;
mod delete_groups;
mod delete_records;
mod delete_topics;
mod describe_cluster;
mod describe_configs;
mod describe_groups;
mod fetch;
mod find_coordinator;
mod heartbeat;
mod incremental_alter_configs;
mod init_producer_id;
mod join_group;
mod leave_group;
mod list_groups;
mod list_offsets;
mod metadata;
mod offset_commit;
mod offset_delete;
mod offset_fetch;
mod offset_for_leader_epoch;
mod produce;
mod sync_group;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{
    AlterConfigsRequest, ApiKey, ApiVersionsRequest, CreatePartitionsRequest, CreateTopicsRequest,
    DeleteRecordsRequest, DeleteTopicsRequest, DescribeClusterRequest, DescribeConfigsRequest,
    FetchRequest, IncrementalAlterConfigsRequest, InitProducerIdRequest, ListOffsetsRequest,
    MetadataRequest, OffsetForLeaderEpochRequest, ProduceRequest, RequestHeader, ResponseHeader,
};
use kafka_protocol::messages::{
    DeleteGroupsRequest, DescribeGroupsRequest, FindCoordinatorRequest, HeartbeatRequest,
    JoinGroupRequest, LeaveGroupRequest, ListGroupsRequest, OffsetCommitRequest,
    OffsetDeleteRequest, OffsetFetchRequest, SyncGroupRequest,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion};
use tracing::debug;

use crate::conn::{ConnError, Ctx};

/// One implemented API and the versions of it Wharf answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SupportedApi {
    pub key: ApiKey,
    pub min: i16,
    pub max: i16,
}

const fn api(key: ApiKey, min: i16, max: i16) -> SupportedApi {
    SupportedApi { key, min, max }
}

/// What ApiVersions advertises: exactly what this crate implements.
const SUPPORTED: &[SupportedApi] = &[
    api(ApiKey::Produce, 3, 12),
    api(ApiKey::Fetch, 4, 16),
    api(ApiKey::ListOffsets, 1, 7),
    api(ApiKey::Metadata, 0, 12),
    api(ApiKey::OffsetCommit, 2, 9),
    api(ApiKey::OffsetFetch, 1, 9),
    api(ApiKey::FindCoordinator, 0, 6),
    api(ApiKey::JoinGroup, 0, 9),
    api(ApiKey::Heartbeat, 0, 4),
    api(ApiKey::LeaveGroup, 0, 5),
    api(ApiKey::SyncGroup, 0, 5),
    api(ApiKey::DescribeGroups, 0, 6),
    api(ApiKey::ListGroups, 0, 5),
    api(ApiKey::ApiVersions, 0, 4),
    api(ApiKey::CreateTopics, 2, 7),
    api(ApiKey::DeleteTopics, 1, 6),
    api(ApiKey::DeleteRecords, 0, 2),
    api(ApiKey::OffsetForLeaderEpoch, 2, 4),
    api(ApiKey::DescribeConfigs, 1, 4),
    api(ApiKey::AlterConfigs, 0, 2),
    api(ApiKey::CreatePartitions, 0, 3),
    api(ApiKey::DeleteGroups, 0, 2),
    api(ApiKey::IncrementalAlterConfigs, 0, 1),
    api(ApiKey::OffsetDelete, 0, 0),
    api(ApiKey::DescribeCluster, 0, 1),
    api(ApiKey::InitProducerId, 0, 5),
];

/// The APIs Wharf implements, with their version ranges.
pub fn supported_apis() -> &'static [SupportedApi] {
    SUPPORTED
}

fn supported(key: ApiKey, version: i16) -> bool {
    SUPPORTED
        .iter()
        .any(|a| a.key == key && (a.min..=a.max).contains(&version))
}

/// Whether the request in `frame` only reads and may wait (a Fetch): it can be dropped
/// unanswered when the broker stops.
pub fn only_waits(frame: &Bytes) -> bool {
    frame.len() >= 2 && i16::from_be_bytes([frame[0], frame[1]]) == ApiKey::Fetch as i16
}

/// What to send back for a request.
pub enum Reply {
    /// A whole response frame, size prefix included.
    Send(BytesMut),
    /// Nothing: a Produce with acks=0.
    None,
}

/// Whether `frame` is a Produce request: the one request a connection may start while
/// earlier ones are still waiting for their answers (see [`start`]).
pub fn pipelines(frame: &Bytes) -> bool {
    frame.len() >= 2 && i16::from_be_bytes([frame[0], frame[1]]) == ApiKey::Produce as i16
}

/// A request that [`start`] began.
pub enum Started {
    /// Answered.
    Done(Reply),
    /// A produce whose batches are written, its answer waiting for them to be durable.
    Pending(std::pin::Pin<Box<dyn std::future::Future<Output = Result<Reply, ConnError>> + Send>>),
}

/// Decodes one request frame, runs it and encodes the response.
pub async fn handle(ctx: &Ctx, frame: Bytes) -> Result<Reply, ConnError> {
    match start(ctx, frame).await? {
        Started::Done(reply) => Ok(reply),
        Started::Pending(answer) => answer.await,
    }
}

/// Decodes one request frame and runs it: to the end, except a Produce, which returns
/// once its batches are written (in order), with the rest of its work pending.
pub async fn start(ctx: &Ctx, mut frame: Bytes) -> Result<Started, ConnError> {
    start_inner(ctx, &mut frame).await
}

async fn start_inner(ctx: &Ctx, frame: &mut Bytes) -> Result<Started, ConnError> {
    let frame = &mut *frame;
    // The frame holds at least these 8 bytes (checked by `read_frame`).
    let mut fixed = frame.slice(0..8);
    let key = fixed.get_i16();
    let version = fixed.get_i16();
    let correlation_id = fixed.get_i32();
    let Ok(api_key) = ApiKey::try_from(key) else {
        crate::metrics::METRICS.request(-1);
        debug!(
            api_key = key,
            version, "unknown API key: answering UNSUPPORTED_VERSION"
        );
        return Ok(Started::Done(Reply::Send(bare_error(
            correlation_id,
            ResponseError::UnsupportedVersion,
        ))));
    };
    if !supported(api_key, version) {
        crate::metrics::METRICS.request(-1);
        debug!(api = ?api_key, version, "unsupported API version: answering UNSUPPORTED_VERSION");
        if api_key == ApiKey::ApiVersions {
            // KIP-511: a v0 response the client can always read, with our ranges.
            let resp = api_versions::response(crate::metrics::count(
                ResponseError::UnsupportedVersion.code(),
            ));
            return encode(ApiKey::ApiVersions, 0, correlation_id, &resp)
                .map(|b| Started::Done(Reply::Send(b)));
        }
        return Ok(Started::Done(Reply::Send(bare_error(
            correlation_id,
            ResponseError::UnsupportedVersion,
        ))));
    }
    crate::metrics::METRICS.request(key);
    let name = api_name(api_key);
    let started = std::time::Instant::now();
    let done = Finished {
        api: name,
        version,
        correlation_id,
        started,
    };
    let decode_err = |e: anyhow::Error| ConnError::Decode {
        api: name,
        version,
        reason: e.to_string(),
    };
    let header = RequestHeader::decode(frame, api_key.request_header_version(version))
        .map_err(decode_err)?;

    macro_rules! call {
        ($req:ty, $module:ident) => {{
            let req = <$req>::decode(frame, version).map_err(decode_err)?;
            let resp = $module::handle(ctx, req, version).await;
            encode(api_key, version, correlation_id, &resp).map(Reply::Send)
        }};
    }

    let reply = match api_key {
        ApiKey::ApiVersions => {
            let _req = ApiVersionsRequest::decode(frame, version).map_err(decode_err)?;
            let resp = api_versions::response(0);
            encode(api_key, version, correlation_id, &resp).map(Reply::Send)
        }
        ApiKey::Produce => {
            let req = ProduceRequest::decode(frame, version).map_err(decode_err)?;
            let answer = produce::start(ctx, req, version).await;
            return Ok(Started::Pending(Box::pin(async move {
                let reply = match answer.await {
                    Some(resp) => encode(api_key, version, correlation_id, &resp).map(Reply::Send),
                    None => Ok(Reply::None),
                };
                drop(done);
                reply
            })));
        }
        ApiKey::Fetch => call!(FetchRequest, fetch),
        ApiKey::ListOffsets => call!(ListOffsetsRequest, list_offsets),
        ApiKey::Metadata => call!(MetadataRequest, metadata),
        ApiKey::FindCoordinator => call!(FindCoordinatorRequest, find_coordinator),
        ApiKey::JoinGroup => {
            let req = JoinGroupRequest::decode(frame, version).map_err(decode_err)?;
            // The member's client id (DescribeGroups shows it) is the header's.
            let client_id = header.client_id.as_ref();
            let resp = join_group::handle(ctx, req, version, client_id).await;
            encode(api_key, version, correlation_id, &resp).map(Reply::Send)
        }
        ApiKey::SyncGroup => call!(SyncGroupRequest, sync_group),
        ApiKey::Heartbeat => call!(HeartbeatRequest, heartbeat),
        ApiKey::LeaveGroup => call!(LeaveGroupRequest, leave_group),
        ApiKey::OffsetCommit => call!(OffsetCommitRequest, offset_commit),
        ApiKey::OffsetFetch => call!(OffsetFetchRequest, offset_fetch),
        ApiKey::OffsetDelete => call!(OffsetDeleteRequest, offset_delete),
        ApiKey::DescribeGroups => call!(DescribeGroupsRequest, describe_groups),
        ApiKey::ListGroups => call!(ListGroupsRequest, list_groups),
        ApiKey::DeleteGroups => call!(DeleteGroupsRequest, delete_groups),
        ApiKey::OffsetForLeaderEpoch => call!(OffsetForLeaderEpochRequest, offset_for_leader_epoch),
        ApiKey::CreateTopics => call!(CreateTopicsRequest, create_topics),
        ApiKey::DeleteTopics => call!(DeleteTopicsRequest, delete_topics),
        ApiKey::CreatePartitions => call!(CreatePartitionsRequest, create_partitions),
        ApiKey::DeleteRecords => call!(DeleteRecordsRequest, delete_records),
        ApiKey::DescribeCluster => call!(DescribeClusterRequest, describe_cluster),
        ApiKey::InitProducerId => call!(InitProducerIdRequest, init_producer_id),
        ApiKey::DescribeConfigs => call!(DescribeConfigsRequest, describe_configs),
        ApiKey::AlterConfigs => call!(AlterConfigsRequest, alter_configs),
        ApiKey::IncrementalAlterConfigs => {
            call!(IncrementalAlterConfigsRequest, incremental_alter_configs)
        }
        // `supported` admits only the keys above.
        _ => Ok(Reply::Send(bare_error(
            correlation_id,
            ResponseError::UnsupportedVersion,
        ))),
    };
    drop(done);
    reply.map(Started::Done)
}

/// Logs (at debug) each request when its handling ends.
struct Finished {
    api: &'static str,
    version: i16,
    correlation_id: i32,
    started: std::time::Instant,
}

impl Drop for Finished {
    fn drop(&mut self) {
        let m = &crate::metrics::METRICS;
        match self.api {
            "Produce" => m
                .produce_latency
                .record(self.started.elapsed().as_secs_f64()),
            "Fetch" => m.fetch_latency.record(self.started.elapsed().as_secs_f64()),
            _ => {}
        }
        debug!(
            api = self.api,
            version = self.version,
            correlation_id = self.correlation_id,
            elapsed_us = self.started.elapsed().as_micros() as u64,
            "request handled"
        );
    }
}

pub(crate) fn api_name(key: ApiKey) -> &'static str {
    match key {
        ApiKey::Produce => "Produce",
        ApiKey::Fetch => "Fetch",
        ApiKey::ListOffsets => "ListOffsets",
        ApiKey::Metadata => "Metadata",
        ApiKey::FindCoordinator => "FindCoordinator",
        ApiKey::JoinGroup => "JoinGroup",
        ApiKey::SyncGroup => "SyncGroup",
        ApiKey::Heartbeat => "Heartbeat",
        ApiKey::LeaveGroup => "LeaveGroup",
        ApiKey::OffsetCommit => "OffsetCommit",
        ApiKey::OffsetFetch => "OffsetFetch",
        ApiKey::OffsetDelete => "OffsetDelete",
        ApiKey::DescribeGroups => "DescribeGroups",
        ApiKey::ListGroups => "ListGroups",
        ApiKey::DeleteGroups => "DeleteGroups",
        ApiKey::ApiVersions => "ApiVersions",
        ApiKey::CreateTopics => "CreateTopics",
        ApiKey::DeleteTopics => "DeleteTopics",
        ApiKey::DeleteRecords => "DeleteRecords",
        ApiKey::OffsetForLeaderEpoch => "OffsetForLeaderEpoch",
        ApiKey::DescribeConfigs => "DescribeConfigs",
        ApiKey::AlterConfigs => "AlterConfigs",
        ApiKey::CreatePartitions => "CreatePartitions",
        ApiKey::IncrementalAlterConfigs => "IncrementalAlterConfigs",
        ApiKey::DescribeCluster => "DescribeCluster",
        ApiKey::InitProducerId => "InitProducerId",
        _ => "other",
    }
}

/// Encodes a response frame: size, header, body.
fn encode<R: Encodable + HeaderVersion>(
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    resp: &R,
) -> Result<BytesMut, ConnError> {
    let fail = |e: anyhow::Error| ConnError::Encode {
        api: api_name(api_key),
        version,
        reason: e.to_string(),
    };
    let mut buf = BytesMut::with_capacity(64);
    buf.put_i32(0);
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    header
        .encode(&mut buf, api_key.response_header_version(version))
        .map_err(fail)?;
    resp.encode(&mut buf, version).map_err(fail)?;
    let size = i32::try_from(buf.len() - 4).map_err(|_| ConnError::Encode {
        api: api_name(api_key),
        version,
        reason: "response larger than 2 GiB".into(),
    })?;
    buf[0..4].copy_from_slice(&size.to_be_bytes());
    Ok(buf)
}

/// A response to a request Wharf cannot decode the body of (unknown API key or version):
/// the correlation id and an error code, which is how every response of Kafka's starts
/// when it has no throttle time first, and all a client needs to fail fast.
fn bare_error(correlation_id: i32, error: ResponseError) -> BytesMut {
    let mut buf = BytesMut::with_capacity(10);
    buf.put_i32(6);
    buf.put_i32(correlation_id);
    buf.put_i16(crate::metrics::count(error.code()));
    buf
}

/// A topic name as kafka-protocol carries it.
pub(crate) fn topic_name(name: &str) -> kafka_protocol::messages::TopicName {
    kafka_protocol::messages::TopicName(kafka_protocol::protocol::StrBytes::from_string(
        name.to_string(),
    ))
}

pub(crate) fn str_bytes(s: impl Into<String>) -> kafka_protocol::protocol::StrBytes {
    kafka_protocol::protocol::StrBytes::from_string(s.into())
}
