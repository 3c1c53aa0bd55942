//! Publishing single messages ([`crate::Broker::publish`]), for front-ends that receive
//! messages one by one (HTTP) rather than as record batches: validation, the partition
//! each message goes to, and encoding a partition's messages as uncompressed record
//! batches.

use wharf_log::batch::{Record, RecordBatchBuilder, HEADER_LEN};

use crate::error::{CoreError, Result};
use crate::headers::{
    DELAY_MS, IDEMPOTENCY_KEY, MAX_DELAY_MS, MAX_IDEMPOTENCY_KEY_BYTES, RESERVED_PREFIX, TTL_MS,
};
use crate::partitioner::partition_for_key;

/// Most messages one [`crate::Broker::publish`] call takes.
pub const MAX_PUBLISH_MESSAGES: usize = 10_000;

/// One message to publish. Everything is optional; a message with nothing set is a
/// record with a null key, a null value and no headers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Publish {
    pub key: Option<Vec<u8>>,
    /// `None` stores a null value.
    pub value: Option<Vec<u8>>,
    /// Free headers, in order. Names starting with [`RESERVED_PREFIX`] are refused: set
    /// the fields below instead.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Stored as the [`DELAY_MS`] header; at most [`MAX_DELAY_MS`].
    pub delay_ms: Option<u64>,
    /// Stored as the [`TTL_MS`] header; at least 1.
    pub ttl_ms: Option<u64>,
    /// Stored as the [`IDEMPOTENCY_KEY`] header; deduplicated within the topic's
    /// `dedup.window.ms`. 1 to [`MAX_IDEMPOTENCY_KEY_BYTES`] bytes.
    pub idempotency_key: Option<String>,
    /// The partition to append to; otherwise chosen from the key (Kafka's murmur2
    /// partitioner), else the idempotency key, else round robin.
    pub partition: Option<u32>,
}

/// Where a published message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    pub partition: u32,
    pub offset: u64,
    /// The idempotency key was stored within the dedup window already (by an earlier
    /// request or earlier in this one): nothing was written, and `partition` and
    /// `offset` are the original's.
    pub duplicate: bool,
}

fn invalid(index: usize, reason: impl std::fmt::Display) -> CoreError {
    CoreError::InvalidPublish {
        reason: format!("message {index}: {reason}"),
    }
}

/// Checks a request's messages before anything is appended.
pub(crate) fn validate(topic: &str, partitions: u32, messages: &[Publish]) -> Result<()> {
    if messages.is_empty() {
        return Err(CoreError::InvalidPublish {
            reason: "no messages to publish".into(),
        });
    }
    if messages.len() > MAX_PUBLISH_MESSAGES {
        return Err(CoreError::InvalidPublish {
            reason: format!(
                "{} messages in one request; at most {MAX_PUBLISH_MESSAGES} are allowed",
                messages.len()
            ),
        });
    }
    for (i, m) in messages.iter().enumerate() {
        if let Some(p) = m.partition {
            if p >= partitions {
                return Err(invalid(
                    i,
                    format!(
                        "partition {p} does not exist; topic {topic:?} has {partitions} partition(s), numbered from 0"
                    ),
                ));
            }
        }
        if let Some(d) = m.delay_ms {
            if d > MAX_DELAY_MS {
                return Err(invalid(
                    i,
                    format!("delay_ms {d} is over the maximum of {MAX_DELAY_MS} (7 days)"),
                ));
            }
        }
        if m.ttl_ms == Some(0) {
            return Err(invalid(i, "ttl_ms must be at least 1"));
        }
        if let Some(k) = &m.idempotency_key {
            if k.is_empty() || k.len() > MAX_IDEMPOTENCY_KEY_BYTES {
                return Err(invalid(
                    i,
                    format!(
                        "idempotency_key must be 1 to {MAX_IDEMPOTENCY_KEY_BYTES} bytes long, not {}",
                        k.len()
                    ),
                ));
            }
        }
        if let Some((name, _)) = m
            .headers
            .iter()
            .find(|(n, _)| n.starts_with(RESERVED_PREFIX))
        {
            return Err(invalid(
                i,
                format!(
                    "header {name:?}: names starting with {RESERVED_PREFIX:?} are reserved; use the delay_ms, ttl_ms and idempotency_key fields"
                ),
            ));
        }
    }
    Ok(())
}

/// The partition of each message; `round_robin` is where this request's unkeyed
/// messages start.
pub(crate) fn assign_partitions(
    messages: &[Publish],
    partitions: u32,
    mut round_robin: u32,
) -> Vec<u32> {
    let partitions = partitions.max(1);
    messages
        .iter()
        .map(|m| {
            if let Some(p) = m.partition {
                p
            } else if let Some(k) = &m.key {
                partition_for_key(k, partitions)
            } else if let Some(k) = &m.idempotency_key {
                // A retried request must land where its first attempt did.
                partition_for_key(k.as_bytes(), partitions)
            } else {
                let p = round_robin % partitions;
                round_robin = round_robin.wrapping_add(1);
                p
            }
        })
        .collect()
}

/// How many of `messages` take a round-robin partition.
pub(crate) fn unkeyed(messages: &[Publish]) -> u32 {
    let n = messages
        .iter()
        .filter(|m| m.partition.is_none() && m.key.is_none() && m.idempotency_key.is_none())
        .count();
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// A message's headers as stored: the free ones, then Wharf's.
fn stored_headers(m: &Publish) -> Vec<(&str, Vec<u8>)> {
    let mut h: Vec<(&str, Vec<u8>)> = m
        .headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    if let Some(d) = m.delay_ms {
        h.push((DELAY_MS, d.to_string().into_bytes()));
    }
    if let Some(t) = m.ttl_ms {
        h.push((TTL_MS, t.to_string().into_bytes()));
    }
    if let Some(k) = &m.idempotency_key {
        h.push((IDEMPOTENCY_KEY, k.clone().into_bytes()));
    }
    h
}

/// More than the bytes a record adds to a batch: its fields plus the largest varint
/// for every length and delta.
fn record_bound(r: &Record<'_>) -> usize {
    const VARINT: usize = 10;
    let field = |b: Option<&[u8]>| VARINT + b.map_or(0, <[u8]>::len);
    1 + 3 * VARINT
        + field(r.key)
        + field(r.value)
        + VARINT
        + r.headers
            .iter()
            .map(|(k, v)| field(Some(k.as_bytes())) + field(*v))
            .sum::<usize>()
}

/// Fails with [`CoreError::MessageTooLarge`] if `record` alone makes a batch over
/// `max_batch_bytes`; measured exactly only when its `bound` says it might.
fn check_fits(index: usize, record: &Record<'_>, bound: usize, max_batch_bytes: u32) -> Result<()> {
    let max = usize::try_from(max_batch_bytes).unwrap_or(usize::MAX);
    if HEADER_LEN + bound <= max {
        return Ok(());
    }
    let mut alone = RecordBatchBuilder::new();
    alone.push(record);
    let size = alone.size();
    if size > max {
        return Err(CoreError::MessageTooLarge {
            index,
            size,
            max: max_batch_bytes,
        });
    }
    Ok(())
}

/// Checks that every message fits a batch of `max_batch_bytes` on its own, without
/// encoding those that clearly do.
pub(crate) fn check_sizes(messages: &[Publish], max_batch_bytes: u32) -> Result<()> {
    for (index, m) in messages.iter().enumerate() {
        let headers = stored_headers(m);
        let record = Record {
            key: m.key.as_deref(),
            value: m.value.as_deref(),
            headers: headers
                .iter()
                .map(|(k, v)| (*k, Some(v.as_slice())))
                .collect(),
            timestamp: 0,
        };
        check_fits(index, &record, record_bound(&record), max_batch_bytes)?;
    }
    Ok(())
}

/// Encodes one partition's messages (`(request index, message)`) as uncompressed
/// RecordBatch v2 batches, concatenated: one batch unless they exceed `max_batch_bytes`
/// (the topic's `max.message.bytes`), then as few as fit. All records get `timestamp`.
pub(crate) fn encode(
    messages: &[(usize, Publish)],
    timestamp: i64,
    max_batch_bytes: u32,
) -> Result<Vec<u8>> {
    let max = usize::try_from(max_batch_bytes).unwrap_or(usize::MAX);
    let mut out = Vec::new();
    let mut builder = RecordBatchBuilder::new();
    for (index, m) in messages {
        let headers = stored_headers(m);
        let record = Record {
            key: m.key.as_deref(),
            value: m.value.as_deref(),
            headers: headers
                .iter()
                .map(|(k, v)| (*k, Some(v.as_slice())))
                .collect(),
            timestamp,
        };
        let bound = record_bound(&record);
        check_fits(*index, &record, bound, max_batch_bytes)?;
        if !builder.is_empty() && builder.size() + bound > max {
            out.extend(std::mem::take(&mut builder).build());
        }
        builder.push(&record);
    }
    if !builder.is_empty() {
        out.extend(builder.build());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::decode;

    fn msg(value: &str) -> Publish {
        Publish {
            value: Some(value.as_bytes().to_vec()),
            ..Publish::default()
        }
    }

    #[test]
    fn messages_are_encoded_with_wharfs_headers() {
        let m = Publish {
            key: Some(b"k".to_vec()),
            headers: vec![("h".into(), b"v".to_vec())],
            delay_ms: Some(5),
            ttl_ms: Some(60_000),
            idempotency_key: Some("id-1".into()),
            ..msg("hello")
        };
        let bytes = encode(&[(0, m), (1, msg("two"))], 1234, 1 << 20).unwrap();
        let d = decode(bytes.clone().into(), 0).unwrap();
        assert_eq!(d.messages.len(), 2);
        let first = &d.messages[0];
        assert_eq!(first.timestamp_ms, 1234);
        assert_eq!(first.key.as_deref(), Some(&b"k"[..]));
        assert_eq!(first.header("h").map(|v| &v[..]), Some(&b"v"[..]));
        assert_eq!(first.header_i64(DELAY_MS), Some(5));
        assert_eq!(first.header_i64(TTL_MS), Some(60_000));
        assert_eq!(
            first.header(IDEMPOTENCY_KEY).map(|v| &v[..]),
            Some(&b"id-1"[..])
        );
        assert_eq!(d.messages[1].offset, 1);
        assert!(d.messages[1].headers.is_empty());
    }

    #[test]
    fn a_partition_over_the_batch_limit_is_split_and_a_huge_message_refused() {
        let many: Vec<_> = (0..10).map(|i| (i, msg(&"x".repeat(100)))).collect();
        let bytes = encode(&many, 0, 400).unwrap();
        let mut pos = 0;
        let mut batches = 0;
        while pos < bytes.len() {
            let (h, len) = wharf_log::batch::validate(&bytes[pos..]).unwrap();
            assert!(len <= 400, "{len}");
            assert!(h.record_count >= 1);
            pos += len;
            batches += 1;
        }
        assert!(batches > 1);
        assert_eq!(decode(bytes.clone().into(), 0).unwrap().messages.len(), 10);

        let e = encode(&[(3, msg(&"x".repeat(500)))], 0, 400).unwrap_err();
        assert!(
            matches!(e, CoreError::MessageTooLarge { index: 3, .. }),
            "{e}"
        );
        let e = check_sizes(&[msg("small"), msg(&"x".repeat(500))], 400).unwrap_err();
        assert!(
            matches!(e, CoreError::MessageTooLarge { index: 1, .. }),
            "{e}"
        );
        // Just under the limit by the exact measure, though over the estimate.
        let fits = msg(&"x".repeat(300));
        let exact = encode(&[(0, fits.clone())], 0, 1 << 20).unwrap().len() as u32;
        assert!(check_sizes(std::slice::from_ref(&fits), exact).is_ok());
        assert!(check_sizes(&[fits], exact - 1).is_err());
    }

    #[test]
    fn partitions_follow_explicit_then_key_then_idempotency_key_then_round_robin() {
        let ms = vec![
            Publish {
                partition: Some(2),
                key: Some(b"k".to_vec()),
                ..Publish::default()
            },
            Publish {
                key: Some(b"k".to_vec()),
                ..Publish::default()
            },
            Publish {
                idempotency_key: Some("k".into()),
                ..Publish::default()
            },
            Publish::default(),
            Publish::default(),
        ];
        let k = partition_for_key(b"k", 3);
        assert_eq!(assign_partitions(&ms, 3, 7), vec![2, k, k, 1, 2]);
        assert_eq!(unkeyed(&ms), 2);
    }

    #[test]
    fn bad_messages_are_refused_naming_their_index() {
        let ok = Publish::default();
        for (bad, needle) in [
            (
                Publish {
                    partition: Some(3),
                    ..Publish::default()
                },
                "partition 3",
            ),
            (
                Publish {
                    ttl_ms: Some(0),
                    ..Publish::default()
                },
                "ttl_ms",
            ),
            (
                Publish {
                    delay_ms: Some(MAX_DELAY_MS + 1),
                    ..Publish::default()
                },
                "delay_ms",
            ),
            (
                Publish {
                    idempotency_key: Some(String::new()),
                    ..Publish::default()
                },
                "idempotency_key",
            ),
            (
                Publish {
                    headers: vec![(DELAY_MS.into(), b"1".to_vec())],
                    ..Publish::default()
                },
                "reserved",
            ),
        ] {
            let e = validate("t", 3, &[ok.clone(), bad])
                .unwrap_err()
                .to_string();
            assert!(e.contains("message 1") && e.contains(needle), "{e}");
        }
        assert!(validate("t", 3, &[]).is_err());
        assert!(validate("t", 3, &vec![ok; MAX_PUBLISH_MESSAGES + 1]).is_err());
    }
}
