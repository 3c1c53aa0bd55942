//! Topic names and per-topic settings, validated the way Kafka validates them.
//!
//! Settings travel as Kafka does: string keys (`retention.ms`) with string values, so the
//! Kafka `CreateTopics` / `AlterConfigs` front-end can hand them through unchanged. A
//! topic stores only its *overrides*; its effective [`TopicConfig`] is the broker's
//! defaults with the overrides applied, as in Kafka, so a later change of a broker default
//! reaches every topic that did not override it.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use wharf_log::{FlushPolicy, LogConfig};

use crate::error::{CoreError, Result};

/// Longest topic name Kafka accepts (`Topic.MAX_NAME_LENGTH`).
pub const MAX_TOPIC_NAME_LEN: usize = 249;

/// Most partitions one topic may have. Not a Kafka limit: a guard against a typo such as
/// `1000000`, which would open a million logs. Raise it when someone needs more.
pub const MAX_PARTITIONS: u32 = 10_000;

/// Kafka `retention.ms`: age after which a segment is deleted; `-1` keeps forever.
pub const RETENTION_MS: &str = "retention.ms";
/// Kafka `retention.bytes`: partition size above which the oldest segments are deleted;
/// `-1` is unlimited.
pub const RETENTION_BYTES: &str = "retention.bytes";
/// Kafka `segment.bytes`: size at which the active segment is rolled.
pub const SEGMENT_BYTES: &str = "segment.bytes";
/// Kafka `max.message.bytes`: largest record batch accepted, including its 12-byte
/// offset and length prefix.
pub const MAX_MESSAGE_BYTES: &str = "max.message.bytes";
/// Kafka `cleanup.policy`: only `delete` is supported today.
pub const CLEANUP_POLICY: &str = "cleanup.policy";
/// Wharf `message.ttl.ms`: how long after it was stored a message is still handed out by
/// queue subscriptions; `-1` (the default) is no limit. A message's own
/// [`crate::headers::TTL_MS`] header applies too (the shorter wins). Stored here; applied
/// by the consumers of queue subscriptions, not by retention.
pub const MESSAGE_TTL_MS: &str = "message.ttl.ms";
/// Wharf `dedup.window.ms`: how long [`crate::Broker::publish`] remembers a message's
/// idempotency key, so that a repeat within it is answered as a duplicate and not stored
/// again; `0` disables publisher deduplication. Default 5 minutes, at most 7 days.
pub const DEDUP_WINDOW_MS: &str = "dedup.window.ms";

/// Every topic setting Wharf understands, in the order `describe` lists them.
pub const TOPIC_CONFIG_KEYS: [&str; 7] = [
    CLEANUP_POLICY,
    DEDUP_WINDOW_MS,
    MAX_MESSAGE_BYTES,
    MESSAGE_TTL_MS,
    RETENTION_BYTES,
    RETENTION_MS,
    SEGMENT_BYTES,
];

/// Kafka's default `retention.ms`: 7 days.
pub const DEFAULT_RETENTION_MS: u64 = 7 * 24 * 60 * 60 * 1000;
/// Kafka's default `segment.bytes`: 1 GiB.
pub const DEFAULT_SEGMENT_BYTES: u32 = 1 << 30;
/// Kafka's default `max.message.bytes`: 1 MiB plus the 12-byte log overhead.
pub const DEFAULT_MAX_MESSAGE_BYTES: u32 = (1 << 20) + 12;
/// Smallest `segment.bytes` Kafka 3.x accepts (one legacy v0 record's overhead). Kafka 4
/// raised it to 1 MiB; Wharf keeps the lower bound so tests can roll segments cheaply.
pub const MIN_SEGMENT_BYTES: u32 = 14;
/// Default `dedup.window.ms`: 5 minutes.
pub const DEFAULT_DEDUP_WINDOW_MS: u64 = 5 * 60 * 1000;
/// Largest `dedup.window.ms`: 7 days. The dedup memory grows with the window.
pub const MAX_DEDUP_WINDOW_MS: u64 = 7 * 24 * 60 * 60 * 1000;

/// A validated topic name: 1 to 249 characters of ASCII letters, digits, `.`, `_` and
/// `-`, and neither `.` nor `..` (Kafka's rules, which keep names safe as directory
/// names too).
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct TopicName(String);

impl TopicName {
    /// Validates `name`.
    pub fn new(name: impl Into<String>) -> Result<TopicName> {
        let name = name.into();
        let invalid = |reason: String| CoreError::InvalidTopicName {
            name: name.clone(),
            reason,
        };
        if name.is_empty() {
            return Err(invalid("the name is empty".into()));
        }
        if name.len() > MAX_TOPIC_NAME_LEN {
            return Err(invalid(format!(
                "it is {} characters long; the maximum is {MAX_TOPIC_NAME_LEN}",
                name.len()
            )));
        }
        if name == "." || name == ".." {
            return Err(invalid("`.` and `..` are not allowed".into()));
        }
        if let Some(c) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return Err(invalid(format!(
                "it contains {c:?}; only ASCII letters, digits, `.`, `_` and `-` are allowed"
            )));
        }
        Ok(TopicName(name))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for TopicName {
    type Err = CoreError;
    fn from_str(s: &str) -> Result<Self> {
        TopicName::new(s)
    }
}

impl TryFrom<String> for TopicName {
    type Error = CoreError;
    fn try_from(s: String) -> Result<Self> {
        TopicName::new(s)
    }
}

impl From<TopicName> for String {
    fn from(n: TopicName) -> String {
        n.0
    }
}

impl AsRef<str> for TopicName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Kafka `cleanup.policy`. Only `delete` exists today; compaction is a later issue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CleanupPolicy {
    /// Old segments are deleted by `retention.ms` and `retention.bytes`.
    #[default]
    Delete,
}

impl fmt::Display for CleanupPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CleanupPolicy::Delete => f.write_str("delete"),
        }
    }
}

impl FromStr for CleanupPolicy {
    type Err = CoreError;
    fn from_str(s: &str) -> Result<Self> {
        // Kafka takes a comma-separated list (`compact,delete`).
        let mut delete = false;
        let mut compact = false;
        for item in s.split(',').map(str::trim) {
            match item {
                "delete" => delete = true,
                "compact" => compact = true,
                other => {
                    return Err(CoreError::InvalidConfig {
                        key: CLEANUP_POLICY.into(),
                        value: s.into(),
                        reason: format!(
                            "{other:?} is not a cleanup policy; expected `delete` (or `compact`, which is not supported yet)"
                        ),
                    })
                }
            }
        }
        if compact {
            return Err(CoreError::UnsupportedConfig {
                key: CLEANUP_POLICY.into(),
                value: s.into(),
                reason: "log compaction is not implemented yet; use `delete`".into(),
            });
        }
        debug_assert!(delete);
        Ok(CleanupPolicy::Delete)
    }
}

/// The effective settings of one topic. Built from [`TopicConfig::default`] (Kafka's
/// defaults) and changed only through [`TopicConfig::set`], so every value is valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicConfig {
    retention_ms: Option<u64>,
    retention_bytes: Option<u64>,
    segment_bytes: u32,
    max_message_bytes: u32,
    cleanup_policy: CleanupPolicy,
    message_ttl_ms: Option<u64>,
    dedup_window_ms: u64,
}

impl Default for TopicConfig {
    /// Kafka's defaults: 7 days retention, unlimited size, 1 GiB segments, 1 MiB + 12
    /// bytes per batch, `delete`.
    fn default() -> Self {
        TopicConfig {
            retention_ms: Some(DEFAULT_RETENTION_MS),
            retention_bytes: None,
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            cleanup_policy: CleanupPolicy::Delete,
            message_ttl_ms: None,
            dedup_window_ms: DEFAULT_DEDUP_WINDOW_MS,
        }
    }
}

fn parse_int(key: &str, value: &str, min: i64, max: i64, what: &str) -> Result<i64> {
    let invalid = |reason: String| CoreError::InvalidConfig {
        key: key.into(),
        value: value.into(),
        reason,
    };
    // Kafka trims whitespace around numbers in configs; so do we.
    let n: i64 = value
        .trim()
        .parse()
        .map_err(|_| invalid(format!("expected an integer, {what}")))?;
    if n < min || n > max {
        return Err(invalid(format!("out of range, {what}")));
    }
    Ok(n)
}

/// Reads `-1` as "unlimited" and `0..=max` as a limit.
fn parse_limit(key: &str, value: &str, what: &str) -> Result<Option<u64>> {
    let n = parse_int(key, value, -1, i64::MAX, what)?;
    Ok(u64::try_from(n).ok())
}

fn limit_to_string(v: Option<u64>) -> String {
    v.map_or_else(|| "-1".to_string(), |n| n.to_string())
}

impl TopicConfig {
    /// Sets one setting from its Kafka key and string value, validating it as Kafka does.
    pub fn set(&mut self, key: &str, value: &str) -> Result<()> {
        match key {
            RETENTION_MS => {
                self.retention_ms = parse_limit(
                    key,
                    value,
                    "milliseconds: -1 keeps data forever, otherwise 0 or more",
                )?
            }
            RETENTION_BYTES => {
                self.retention_bytes = parse_limit(
                    key,
                    value,
                    "bytes per partition: -1 is unlimited, otherwise 0 or more",
                )?
            }
            SEGMENT_BYTES => {
                let n = parse_int(
                    key,
                    value,
                    MIN_SEGMENT_BYTES.into(),
                    i32::MAX.into(),
                    "bytes from 14 to 2147483647",
                )?;
                // In range by the check above.
                self.segment_bytes = u32::try_from(n).unwrap_or(DEFAULT_SEGMENT_BYTES);
            }
            MAX_MESSAGE_BYTES => {
                let n = parse_int(key, value, 0, i32::MAX.into(), "bytes from 0 to 2147483647")?;
                self.max_message_bytes = u32::try_from(n).unwrap_or(DEFAULT_MAX_MESSAGE_BYTES);
            }
            CLEANUP_POLICY => self.cleanup_policy = value.parse()?,
            MESSAGE_TTL_MS => {
                let what = "milliseconds: -1 for no limit, otherwise 1 or more";
                let n = parse_int(key, value, -1, i64::MAX, what)?;
                if n == 0 {
                    return Err(CoreError::InvalidConfig {
                        key: key.into(),
                        value: value.into(),
                        reason: format!("out of range, {what}"),
                    });
                }
                self.message_ttl_ms = u64::try_from(n).ok();
            }
            DEDUP_WINDOW_MS => {
                let max = i64::try_from(MAX_DEDUP_WINDOW_MS).unwrap_or(i64::MAX);
                let n = parse_int(
                    key,
                    value,
                    0,
                    max,
                    "milliseconds from 0 (no deduplication) to 604800000 (7 days)",
                )?;
                self.dedup_window_ms = u64::try_from(n).unwrap_or(DEFAULT_DEDUP_WINDOW_MS);
            }
            other => {
                return Err(CoreError::UnknownConfig {
                    key: other.into(),
                    supported: TOPIC_CONFIG_KEYS.join(", "),
                })
            }
        }
        Ok(())
    }

    /// This config with `key` set to `value`; for building broker defaults.
    pub fn with(mut self, key: &str, value: &str) -> Result<TopicConfig> {
        self.set(key, value)?;
        Ok(self)
    }

    /// This config with every override applied, validating each.
    pub fn with_overrides(&self, overrides: &BTreeMap<String, String>) -> Result<TopicConfig> {
        let mut c = self.clone();
        for (k, v) in overrides {
            c.set(k, v)?;
        }
        Ok(c)
    }

    /// The value of `key` in Kafka's text form, or `None` for an unknown key.
    pub fn get(&self, key: &str) -> Option<String> {
        Some(match key {
            RETENTION_MS => limit_to_string(self.retention_ms),
            RETENTION_BYTES => limit_to_string(self.retention_bytes),
            SEGMENT_BYTES => self.segment_bytes.to_string(),
            MAX_MESSAGE_BYTES => self.max_message_bytes.to_string(),
            CLEANUP_POLICY => self.cleanup_policy.to_string(),
            MESSAGE_TTL_MS => limit_to_string(self.message_ttl_ms),
            DEDUP_WINDOW_MS => self.dedup_window_ms.to_string(),
            _ => return None,
        })
    }

    /// Every setting as `(key, value)` in Kafka's text form.
    pub fn entries(&self) -> Vec<(&'static str, String)> {
        TOPIC_CONFIG_KEYS
            .iter()
            .map(|k| (*k, self.get(k).unwrap_or_default()))
            .collect()
    }

    /// `retention.ms`; `None` keeps data forever.
    pub fn retention_ms(&self) -> Option<u64> {
        self.retention_ms
    }
    /// `retention.bytes`; `None` is unlimited.
    pub fn retention_bytes(&self) -> Option<u64> {
        self.retention_bytes
    }
    /// `segment.bytes`.
    pub fn segment_bytes(&self) -> u32 {
        self.segment_bytes
    }
    /// `max.message.bytes`.
    pub fn max_message_bytes(&self) -> u32 {
        self.max_message_bytes
    }
    /// `cleanup.policy`.
    pub fn cleanup_policy(&self) -> CleanupPolicy {
        self.cleanup_policy
    }
    /// `message.ttl.ms`; `None` is no limit.
    pub fn message_ttl_ms(&self) -> Option<u64> {
        self.message_ttl_ms
    }
    /// `dedup.window.ms`; 0 disables publisher deduplication.
    pub fn dedup_window_ms(&self) -> u64 {
        self.dedup_window_ms
    }

    /// The partition log settings these topic settings stand for. Settings without a
    /// topic key (segment age, index interval) keep the log's defaults.
    pub fn log_config(&self, flush: FlushPolicy) -> LogConfig {
        LogConfig {
            segment_bytes: self.segment_bytes.into(),
            retention_bytes: self.retention_bytes,
            retention_ms: self.retention_ms,
            max_batch_bytes: self.max_message_bytes,
            flush,
            ..LogConfig::default()
        }
    }
}

/// Validates a set of overrides and returns them in canonical form (trimmed numbers),
/// so what is persisted and described is what takes effect.
pub(crate) fn canonical_overrides(
    overrides: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>> {
    let mut probe = TopicConfig::default();
    let mut out = BTreeMap::new();
    for (k, v) in overrides {
        probe.set(k, v)?;
        let canonical = probe.get(k).unwrap_or_else(|| v.clone());
        out.insert(k.clone(), canonical);
    }
    Ok(out)
}

/// A topic to create: Kafka `CreateTopics` without replica assignment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTopic {
    /// The name, validated on creation.
    pub name: String,
    /// Number of partitions, 1 to [`MAX_PARTITIONS`].
    pub partitions: u32,
    /// Per-topic overrides of the broker's default settings.
    pub configs: BTreeMap<String, String>,
}

impl NewTopic {
    /// A topic with the broker's default settings.
    pub fn new(name: impl Into<String>, partitions: u32) -> NewTopic {
        NewTopic {
            name: name.into(),
            partitions,
            configs: BTreeMap::new(),
        }
    }

    /// Adds one override.
    pub fn config(mut self, key: impl Into<String>, value: impl Into<String>) -> NewTopic {
        self.configs.insert(key.into(), value.into());
        self
    }
}

/// One change of a topic's settings, as in Kafka `IncrementalAlterConfigs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigOp {
    /// Override `key` with `value`.
    Set { key: String, value: String },
    /// Drop the override of `key`, falling back to the broker default.
    Delete { key: String },
}

/// What the registry knows about a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicDescription {
    /// The topic's name.
    pub name: TopicName,
    /// The topic id (a UUID v4), fresh for every creation, so a deleted and re-created
    /// topic is told apart from the old one (Kafka topic ids).
    pub id: uuid::Uuid,
    /// Number of partitions, numbered `0..partitions`.
    pub partitions: u32,
    /// Effective settings: broker defaults with the overrides applied.
    pub config: TopicConfig,
    /// The per-topic overrides only, in canonical form.
    pub overrides: BTreeMap<String, String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_kafka_rules() {
        for ok in ["a", "orders", "a.b_c-D9", &"x".repeat(249), "..."] {
            assert!(TopicName::new(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".", "..", "a/b", "a b", "ü", &"x".repeat(250), "a\0"] {
            assert!(TopicName::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn config_text_round_trips() {
        let c = TopicConfig::default();
        for (k, v) in c.entries() {
            let mut d = TopicConfig::default();
            d.set(k, &v).unwrap();
            assert_eq!(d, c);
        }
        assert_eq!(c.get(RETENTION_BYTES).as_deref(), Some("-1"));
        assert_eq!(c.get(RETENTION_MS).as_deref(), Some("604800000"));
        assert_eq!(c.get(MAX_MESSAGE_BYTES).as_deref(), Some("1048588"));
        assert_eq!(c.get(MESSAGE_TTL_MS).as_deref(), Some("-1"));
        assert_eq!(c.get(DEDUP_WINDOW_MS).as_deref(), Some("300000"));
    }

    #[test]
    fn ttl_and_dedup_window_are_validated() {
        let c = TopicConfig::default()
            .with(MESSAGE_TTL_MS, " 60000 ")
            .and_then(|c| c.with(DEDUP_WINDOW_MS, "0"))
            .unwrap();
        assert_eq!(c.message_ttl_ms(), Some(60_000));
        assert_eq!(c.dedup_window_ms(), 0);
        assert_eq!(
            c.clone()
                .with(MESSAGE_TTL_MS, "-1")
                .unwrap()
                .message_ttl_ms(),
            None
        );
        for (k, bad) in [
            (MESSAGE_TTL_MS, "0"),
            (MESSAGE_TTL_MS, "-2"),
            (MESSAGE_TTL_MS, "soon"),
            (DEDUP_WINDOW_MS, "-1"),
            (DEDUP_WINDOW_MS, "604800001"),
        ] {
            let e = c.clone().with(k, bad).unwrap_err();
            assert!(e.to_string().contains(k), "{e}");
        }
        assert_eq!(
            c.with(DEDUP_WINDOW_MS, "604800000")
                .unwrap()
                .dedup_window_ms(),
            MAX_DEDUP_WINDOW_MS
        );
    }

    #[test]
    fn log_config_maps_every_setting() {
        let c = TopicConfig::default()
            .with(RETENTION_MS, "-1")
            .and_then(|c| c.with(RETENTION_BYTES, "1000"))
            .and_then(|c| c.with(SEGMENT_BYTES, "4096"))
            .and_then(|c| c.with(MAX_MESSAGE_BYTES, "512"))
            .unwrap();
        let l = c.log_config(FlushPolicy::Never);
        assert_eq!(l.retention_ms, None);
        assert_eq!(l.retention_bytes, Some(1000));
        assert_eq!(l.segment_bytes, 4096);
        assert_eq!(l.max_batch_bytes, 512);
        assert_eq!(l.flush, FlushPolicy::Never);
    }
}
