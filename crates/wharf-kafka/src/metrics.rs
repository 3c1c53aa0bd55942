//! The Kafka front-end's metrics, through the `metrics` facade.
//!
//! | metric | labels | what |
//! |---|---|---|
//! | `wharf_kafka_connections_open` | | connections open now (gauge) |
//! | `wharf_kafka_connections_accepted_total` | | connections accepted |
//! | `wharf_kafka_requests_total` | `api` | requests decoded and handled, by API name (`Produce`, `Fetch`, …; `unknown` for an unknown key or version) |
//! | `wharf_kafka_errors_total` | `code` | error codes answered, by Kafka's name (`UNKNOWN_TOPIC_OR_PARTITION`, …): one per error in a response (a partition's, a group's, the request's) |
//! | `wharf_kafka_request_duration_seconds` | `api` | Produce (until answered: durable) and Fetch (including its long-poll wait) latency (histogram) |
//!
//! Every handle is registered once (the binary installs its recorder before the
//! listener exists): the connection and request handles when the listener is bound,
//! an error code's counter the first time that code is answered (so the scrape lists
//! the codes that happened, not all of Kafka's). They sit in tables indexed by API key
//! and error code: a request costs atomic adds, no registry lookup or label allocation.

use std::collections::HashMap;
use std::sync::{LazyLock, OnceLock};

use kafka_protocol::error::ResponseError;
use metrics::{counter, gauge, histogram, Counter, Gauge, Histogram};

use crate::api::supported_apis;

pub(crate) struct KafkaMetrics {
    pub connections_open: Gauge,
    pub connections_accepted: Counter,
    /// By API key.
    requests: HashMap<i16, Counter>,
    unknown_api: Counter,
    /// By error code + 1 (codes run from -1 to about 130), made on first use.
    errors: Vec<OnceLock<Counter>>,
    pub produce_latency: Histogram,
    pub fetch_latency: Histogram,
}

/// Error codes -1 to 254 have a slot.
const ERROR_SLOTS: usize = 256;

/// The handles, registered on first use.
pub(crate) static METRICS: LazyLock<KafkaMetrics> = LazyLock::new(KafkaMetrics::new);

impl KafkaMetrics {
    fn new() -> KafkaMetrics {
        let requests = supported_apis()
            .iter()
            .map(|a| {
                let name = crate::api::api_name(a.key);
                (
                    a.key as i16,
                    counter!("wharf_kafka_requests_total", "api" => name),
                )
            })
            .collect();
        let errors = (0..ERROR_SLOTS).map(|_| OnceLock::new()).collect();
        KafkaMetrics {
            connections_open: gauge!("wharf_kafka_connections_open"),
            connections_accepted: counter!("wharf_kafka_connections_accepted_total"),
            requests,
            unknown_api: counter!("wharf_kafka_requests_total", "api" => "unknown"),
            errors,
            produce_latency: histogram!("wharf_kafka_request_duration_seconds", "api" => "Produce"),
            fetch_latency: histogram!("wharf_kafka_request_duration_seconds", "api" => "Fetch"),
        }
    }

    /// One request of `key` (an implemented one; anything else counts as `unknown`).
    pub fn request(&self, key: i16) {
        self.requests
            .get(&key)
            .unwrap_or(&self.unknown_api)
            .increment(1);
    }

    /// One error code answered; 0 (no error) and codes Kafka does not define are not
    /// counted.
    pub fn error(&self, code: i16) {
        if code == 0 {
            return;
        }
        let Some(slot) = usize::try_from(code + 1)
            .ok()
            .and_then(|i| self.errors.get(i))
        else {
            return;
        };
        if let Some(c) = slot.get() {
            c.increment(1);
        } else if let Some(e) = ResponseError::try_from_code(code) {
            slot.get_or_init(|| counter!("wharf_kafka_errors_total", "code" => error_name(e)))
                .increment(1);
        }
    }
}

/// Counts `code` (if an error) in `wharf_kafka_errors_total` and returns it, so a
/// handler writes `errors::counted(…)` where it puts a code in its response.
pub(crate) fn count(code: i16) -> i16 {
    METRICS.error(code);
    code
}

/// Kafka's name of an error: `UnknownTopicOrPartition` → `UNKNOWN_TOPIC_OR_PARTITION`.
fn error_name(e: ResponseError) -> String {
    let camel = format!("{e:?}");
    let mut out = String::with_capacity(camel.len() + 8);
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_names_are_kafkas() {
        assert_eq!(
            error_name(ResponseError::UnknownTopicOrPartition),
            "UNKNOWN_TOPIC_OR_PARTITION"
        );
        assert_eq!(
            error_name(ResponseError::PolicyViolation),
            "POLICY_VIOLATION"
        );
    }
}
