//! Wharf's Kafka wire-protocol front-end.
//!
//! A [`KafkaListener`] accepts TCP connections and runs one task per connection. Each
//! task reads size-prefixed request frames, decodes them with the `kafka-protocol`
//! crate, calls [`wharf_core::Broker`] and writes the encoded response back. Responses
//! leave in request order. Requests on one connection run one at a time (as Kafka
//! brokers do: a connection is muted while its request is in flight), except that
//! consecutive Produce requests overlap their fsync waits: each is written, in order,
//! before the next starts, and answered once durable (see `conn`).
//!
//! ```text
//! request frame:   +--------+---------+---------+----------------+--------+------+
//!                  | size   | api_key | version | correlation_id | header | body |
//!                  | i32 BE | i16     | i16     | i32            | rest   |      |
//!                  +--------+---------+---------+----------------+--------+------+
//!                   size counts everything after itself; bounded by
//!                   `max_request_bytes` before anything is allocated.
//! response frame:  | size i32 | correlation_id i32 | [tagged fields] | body |
//! ```
//!
//! This crate never touches a file: everything it serves comes from `wharf-core`.
//! Record batches are passed through as bytes: stored as the producer sent them,
//! served as stored.

mod alloc;
mod api;
mod conn;
mod errors;
mod frame;
mod metrics;
mod server;

pub use alloc::{LazyHugeAlloc, HUGE};
pub use api::{supported_apis, SupportedApi};
pub use server::KafkaListener;

/// Default bound on one request frame: 100 MiB, as Kafka's `socket.request.max.bytes`.
pub const DEFAULT_MAX_REQUEST_BYTES: u32 = 100 * 1024 * 1024;

/// The only broker's node id. Wharf is a single broker: it leads every partition, with
/// leader epoch 0.
pub const NODE_ID: i32 = 0;

/// The cluster id returned by Metadata and DescribeCluster.
pub const CLUSTER_ID: &str = "wharf";

/// Settings of the Kafka front-end.
#[derive(Debug, Clone)]
pub struct KafkaConfig {
    /// Largest request frame accepted (bytes after the 4-byte size); a larger claimed
    /// size closes the connection before anything is allocated.
    pub max_request_bytes: u32,
    /// Host and port Metadata tells clients to connect to; `None` is the bound address.
    pub advertised_addr: Option<(String, u16)>,
    /// Whether Metadata and Produce requests for an unknown topic create it (Kafka's
    /// `auto.create.topics.enable`).
    pub auto_create_topics: bool,
    /// Partitions of an auto-created topic, and of CreateTopics with `num_partitions`
    /// -1 (Kafka's `num.partitions`).
    pub default_partitions: u32,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            advertised_addr: None,
            auto_create_topics: true,
            default_partitions: 1,
        }
    }
}

/// Runs one request frame (the bytes after the 4-byte size, as a connection reads them)
/// through the same decoding and dispatch as a client connection, against `broker`, and
/// returns the response frame: `Ok(None)` for a request answered with nothing (acks=0),
/// `Err` with the reason when the connection would be closed.
///
/// For the fuzz target (`fuzz/`) and tests that replay captured requests; the listener
/// does not use it. `frame` must hold at least the 8 bytes of api key, version and
/// correlation id, as the connection's framing guarantees.
pub async fn handle_frame(
    broker: std::sync::Arc<wharf_core::Broker>,
    config: KafkaConfig,
    advertised: (String, i32),
    frame: bytes::Bytes,
) -> Result<Option<bytes::BytesMut>, String> {
    if frame.len() < 8 {
        return Err(format!(
            "a request frame holds at least 8 bytes, not {}",
            frame.len()
        ));
    }
    let ctx = conn::Ctx {
        broker,
        config,
        advertised,
        peer: None,
        client_id: None,
    };
    match api::handle(&ctx, frame).await {
        Ok(api::Reply::Send(bytes)) => Ok(Some(bytes)),
        Ok(api::Reply::None) => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}
