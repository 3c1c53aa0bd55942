//! Wharf's Kafka wire-protocol front-end.
//!
//! A [`KafkaListener`] accepts TCP connections and runs one task per connection. Each
//! task reads size-prefixed request frames, decodes them with the `kafka-protocol`
//! crate, calls [`wharf_core::Broker`] and writes the encoded response back. Requests on
//! one connection are handled one at a time, so responses leave in request order (as
//! Kafka brokers do: a connection is muted while its request is in flight).
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
