//! A subscription's settings: what a client may set, the defaults, and the checks.
//!
//! Stored as JSON in the subscriptions journal (`Op::Create`, `Op::Settings`), so a
//! setting added later reads old records with its default.

use serde::{Deserialize, Serialize};

use crate::error::{CoreError, Result};
use crate::topic::TopicName;

/// Where a new subscription starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StartPosition {
    /// Only messages published after the subscription was created.
    #[default]
    Latest,
    /// Every message still retained.
    Earliest,
}

/// What happens to producers while a subscription's backlog is over its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BacklogPolicy {
    /// Slow producers down: HTTP 429 with `Retry-After`, Kafka a delayed answer with
    /// `throttle_time_ms`.
    #[default]
    Block,
    /// Refuse the publish with an error.
    Reject,
}

/// Retry backoff after a nack: `initial_ms × multiplier^(n-1)` before the n-th retry,
/// capped at `max_ms`, then spread by ±20% jitter.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Backoff {
    pub initial_ms: u64,
    pub max_ms: u64,
    pub multiplier: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial_ms: 1_000,
            max_ms: 60_000,
            multiplier: 2.0,
        }
    }
}

impl Backoff {
    /// The wait before the retry that follows failure number `failures` (1-based),
    /// before jitter.
    pub fn base_delay_ms(&self, failures: u32) -> u64 {
        let exp = i32::try_from(failures.saturating_sub(1)).unwrap_or(i32::MAX);
        let d = self.initial_ms as f64 * self.multiplier.powi(exp);
        if d.is_finite() && d < self.max_ms as f64 {
            d as u64
        } else {
            self.max_ms
        }
    }
}

/// Longest ack deadline, delay or backoff accepted: 7 days.
pub const MAX_DURATION_MS: u64 = 7 * 24 * 60 * 60 * 1000;

/// Every setting of a queue subscription, each with a default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SubscriptionSettings {
    /// How long a pulled message stays leased to its consumer before it is delivered
    /// again (the visibility timeout).
    pub ack_deadline_ms: u64,
    /// Deliveries after which a message that was not acked goes to the dead-letter topic;
    /// 0 retries for ever.
    pub max_deliveries: u32,
    pub backoff: Backoff,
    /// Where dead letters go; `None` means `<topic>.<subscription>.dlq`, created when
    /// first needed.
    pub dead_letter_topic: Option<String>,
    /// Most messages one consumer may hold unacked.
    pub max_in_flight: u32,
    /// Deliver messages of one key one at a time, in order; a failing message holds back
    /// only its own key.
    pub ordered_by_key: bool,
    /// Backlog (unacked messages) above which producers are slowed or refused.
    pub max_backlog_messages: Option<u64>,
    /// Backlog in bytes (stored from the oldest unacked message of each partition on,
    /// placed by the sparse index: to within 4 KiB) above which producers are slowed or
    /// refused.
    pub max_backlog_bytes: Option<u64>,
    pub backlog_policy: BacklogPolicy,
    pub start: StartPosition,
    /// Delay added to every message's first delivery (a message's own `delay_ms` header
    /// wins).
    pub delay_ms: u64,
}

impl Default for SubscriptionSettings {
    fn default() -> Self {
        SubscriptionSettings {
            ack_deadline_ms: 30_000,
            max_deliveries: 5,
            backoff: Backoff::default(),
            dead_letter_topic: None,
            max_in_flight: 1_000,
            ordered_by_key: false,
            max_backlog_messages: None,
            max_backlog_bytes: None,
            backlog_policy: BacklogPolicy::default(),
            start: StartPosition::default(),
            delay_ms: 0,
        }
    }
}

fn invalid(field: &str, value: impl ToString, reason: &str) -> CoreError {
    CoreError::InvalidSubscription {
        field: field.to_string(),
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

impl SubscriptionSettings {
    /// Checks every field's range.
    pub fn validate(&self) -> Result<()> {
        let ms = |field: &str, v: u64, min: u64| {
            if v < min || v > MAX_DURATION_MS {
                Err(invalid(
                    field,
                    v,
                    &format!("must be between {min} and {MAX_DURATION_MS} ms"),
                ))
            } else {
                Ok(())
            }
        };
        ms("ack_deadline_ms", self.ack_deadline_ms, 1)?;
        ms("backoff.initial_ms", self.backoff.initial_ms, 0)?;
        ms("backoff.max_ms", self.backoff.max_ms, 0)?;
        ms("delay_ms", self.delay_ms, 0)?;
        if self.backoff.max_ms < self.backoff.initial_ms {
            return Err(invalid(
                "backoff.max_ms",
                self.backoff.max_ms,
                "must not be below backoff.initial_ms",
            ));
        }
        let m = self.backoff.multiplier;
        if !(1.0..=100.0).contains(&m) {
            return Err(invalid(
                "backoff.multiplier",
                m,
                "must be between 1 and 100",
            ));
        }
        if self.max_in_flight == 0 || self.max_in_flight > 100_000 {
            return Err(invalid(
                "max_in_flight",
                self.max_in_flight,
                "must be between 1 and 100000",
            ));
        }
        if self.max_deliveries > 1_000_000 {
            return Err(invalid(
                "max_deliveries",
                self.max_deliveries,
                "must be at most 1000000 (0 retries for ever)",
            ));
        }
        if let Some(t) = &self.dead_letter_topic {
            TopicName::new(t.clone())
                .map_err(|e| invalid("dead_letter_topic", t, &e.to_string()))?;
        }
        for (field, v) in [
            ("max_backlog_messages", self.max_backlog_messages),
            ("max_backlog_bytes", self.max_backlog_bytes),
        ] {
            if v == Some(0) {
                return Err(invalid(
                    field,
                    0,
                    "must be at least 1 (leave it out for no limit)",
                ));
            }
        }
        Ok(())
    }

    /// The dead-letter topic of subscription `sub` on `topic`.
    pub fn dead_letter_topic_for(&self, topic: &str, sub: &str) -> String {
        self.dead_letter_topic
            .clone()
            .unwrap_or_else(|| format!("{topic}.{sub}.dlq"))
    }
}

/// Checks a subscription name: the same characters as a topic name, at most 200 long
/// (so that `<topic>.<subscription>.dlq` has room to be a topic name too, for short
/// topic names).
pub fn validate_subscription_name(name: &str) -> Result<()> {
    let bad = |reason: &str| CoreError::InvalidSubscriptionName {
        name: name.to_string(),
        reason: reason.to_string(),
    };
    if name.is_empty() || name.len() > 200 {
        return Err(bad("must be 1 to 200 characters long"));
    }
    if name == "." || name == ".." {
        return Err(bad("must not be `.` or `..`"));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(bad("may hold only ASCII letters, digits, `.`, `_` and `-`"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_by_the_multiplier_up_to_the_cap() {
        let b = Backoff {
            initial_ms: 100,
            max_ms: 1_000,
            multiplier: 3.0,
        };
        let got: Vec<_> = (1..=5).map(|n| b.base_delay_ms(n)).collect();
        assert_eq!(got, vec![100, 300, 900, 1_000, 1_000]);
        assert_eq!(b.base_delay_ms(u32::MAX), 1_000);
    }

    #[test]
    fn settings_read_with_defaults_and_refuse_unknown_fields() {
        let s: SubscriptionSettings =
            serde_json::from_str(r#"{"ack_deadline_ms":5000,"backoff":{"initial_ms":10}}"#)
                .unwrap();
        assert_eq!(s.ack_deadline_ms, 5_000);
        assert_eq!(s.backoff.initial_ms, 10);
        assert_eq!(s.backoff.max_ms, 60_000);
        assert_eq!(s.max_deliveries, 5);
        assert!(serde_json::from_str::<SubscriptionSettings>(r#"{"nope":1}"#).is_err());
    }

    #[test]
    fn out_of_range_settings_are_refused_naming_the_field() {
        let mut s = SubscriptionSettings {
            ack_deadline_ms: 0,
            ..Default::default()
        };
        let e = s.validate().unwrap_err().to_string();
        assert!(e.contains("ack_deadline_ms"), "{e}");
        s.ack_deadline_ms = 10;
        s.backoff.multiplier = 0.5;
        assert!(s.validate().unwrap_err().to_string().contains("multiplier"));
        s.backoff.multiplier = 2.0;
        s.dead_letter_topic = Some("bad name".into());
        assert!(s.validate().is_err());
        s.dead_letter_topic = None;
        assert!(s.validate().is_ok());
        assert!(validate_subscription_name("ok-name_1.x").is_ok());
        assert!(validate_subscription_name("no/slash").is_err());
    }
}
