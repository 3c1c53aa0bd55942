//! Queues: subscriptions that deliver a topic's records one by one, with acks, retries
//! and dead-lettering; `durable` is what of them survives a restart.

pub mod durable;
pub mod ranges;
