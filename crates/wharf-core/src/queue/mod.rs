//! Queues: subscriptions that deliver a topic's records one by one, with acks, retries
//! and dead-lettering; `durable` is what of them survives a restart.

pub mod durable;
mod manager;
pub mod ranges;
pub mod settings;
pub mod state;

pub use manager::{
    dead_letter_headers, Pulled, Queues, SeekTarget, SubStats, SubscriptionInfo, MAX_BLOCK,
    MAX_PULL, MAX_WAIT,
};
pub use settings::{BacklogPolicy, Backoff, StartPosition, SubscriptionSettings};
pub use state::{AckId, BadAckId, Outcome};
