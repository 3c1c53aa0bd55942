//! Hooks for watching what queue subscriptions do to single messages: each delivery,
//! ack, nack, expired lease or time to live, dead letter and redrive, reported to the
//! [`QueueObserver`]s registered with [`crate::queue::Queues::add_observer`] (the
//! message history store and tracing spans are such observers).
//!
//! Observers are called on the pull, ack and nack paths, after the subscription's lock
//! is let go, from async tasks: an observer must be cheap and must not block or wait
//! (take a short lock, push, return). With no observer registered no event is built.
//! Events are reported after the state changed in memory; an ack's or nack's event may
//! come before its journal record is durable (and the request may still fail on that).

use uuid::Uuid;

use crate::queue::AckId;
use crate::records::Message;

/// Something that watches queue events.
pub trait QueueObserver: Send + Sync {
    /// Called once per event. Events are reported after the lock is let go, so two
    /// racing requests can report one message's events out of order; their `time_ms`,
    /// read under the lock, is in the order they happened (sort on it).
    fn on_event(&self, e: &QueueEvent<'_>);

    /// Called with the events of one request (a pull's deliveries, an ack's acks, …),
    /// in order. By default one [`QueueObserver::on_event`] each; an observer that
    /// takes a lock can take it once here instead.
    fn on_events(&self, events: &[QueueEvent<'_>]) {
        for e in events {
            self.on_event(e);
        }
    }
}

/// One thing that happened to one message in one subscription.
#[derive(Debug, Clone, Copy)]
pub struct QueueEvent<'a> {
    pub topic: &'a str,
    /// The topic's id: tells a re-created topic of the same name from the old one.
    pub topic_id: Uuid,
    pub subscription: &'a str,
    pub partition: u32,
    pub offset: u64,
    /// Milliseconds since the epoch.
    pub time_ms: i64,
    pub kind: QueueEventKind<'a>,
    /// The record, where the queues have it at hand: on `Delivered` and `DeadLettered`
    /// (the original record, not the dead letter), so an observer can read its headers
    /// (for example `traceparent`).
    pub message: Option<&'a Message>,
}

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueEventKind<'a> {
    /// Leased to `consumer` until `deadline_ms`; `delivery_count` counts this delivery.
    Delivered {
        consumer: &'a str,
        delivery_count: u32,
        ack_id: AckId,
        deadline_ms: i64,
    },
    Acked {
        delivery_count: u32,
    },
    /// Given back by its consumer. `redeliver_at_ms` is when it becomes available
    /// again, `None` when that was its last delivery (a `DeadLettered` follows).
    Nacked {
        delivery_count: u32,
        reason: &'a str,
        redeliver_at_ms: Option<i64>,
    },
    /// The ack deadline of delivery `delivery_count` passed; the message is available
    /// again at once, or, if that was its last delivery, a `DeadLettered` follows.
    LeaseExpired {
        delivery_count: u32,
    },
    /// Its time to live ran out before a delivery; a `DeadLettered` follows.
    Expired,
    /// Appended to `dead_letter_topic` at (`dlq_partition`, `dlq_offset`) and done in
    /// this subscription.
    DeadLettered {
        reason: &'a str,
        delivery_count: u32,
        dead_letter_topic: &'a str,
        dlq_partition: u32,
        dlq_offset: u64,
    },
    /// Pending again, with a fresh delivery count, brought back by a redrive from the
    /// dead letter at (`from_topic`, `from_partition`, `from_offset`).
    Redriven {
        from_topic: &'a str,
        from_partition: u32,
        from_offset: u64,
    },
}

impl QueueEventKind<'_> {
    /// A short stable name: `delivered`, `acked`, `nacked`, `lease_expired`, `expired`,
    /// `dead_lettered`, `redriven`.
    pub fn name(&self) -> &'static str {
        match self {
            QueueEventKind::Delivered { .. } => "delivered",
            QueueEventKind::Acked { .. } => "acked",
            QueueEventKind::Nacked { .. } => "nacked",
            QueueEventKind::LeaseExpired { .. } => "lease_expired",
            QueueEventKind::Expired => "expired",
            QueueEventKind::DeadLettered { .. } => "dead_lettered",
            QueueEventKind::Redriven { .. } => "redriven",
        }
    }
}
