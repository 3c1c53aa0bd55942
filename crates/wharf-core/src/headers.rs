//! Record headers with a meaning to Wharf. They are plain Kafka record headers, so a
//! Kafka producer can set them as well as the HTTP publish API does; values are decimal
//! integers or text in UTF-8. Every name starts with [`RESERVED_PREFIX`], which
//! [`crate::Broker::publish`] keeps for these: a caller sets them through
//! [`crate::Publish`]'s fields, not as free headers.

/// Milliseconds after it was stored before a message is handed out by queue
/// subscriptions (a delayed message). 0 to [`MAX_DELAY_MS`].
pub const DELAY_MS: &str = "wharf-delay-ms";
/// Milliseconds after it was stored that a message expires for queue subscriptions;
/// 1 or more. The topic's `message.ttl.ms` applies too; the shorter wins.
pub const TTL_MS: &str = "wharf-ttl-ms";
/// The publisher's idempotency key: a message published again with the same key within
/// the topic's `dedup.window.ms` is not stored again (see [`crate::Broker::publish`]).
pub const IDEMPOTENCY_KEY: &str = "wharf-idempotency-key";

/// The prefix of every header name Wharf gives a meaning to.
pub const RESERVED_PREFIX: &str = "wharf-";

/// Longest delay a message may ask for: 7 days.
pub const MAX_DELAY_MS: u64 = 7 * 24 * 60 * 60 * 1000;
/// Longest idempotency key, in bytes: it is kept in memory for the dedup window.
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 256;
