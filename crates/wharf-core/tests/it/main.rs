//! wharf-core integration tests: one binary, one module per area.

mod batch;
mod broker;
mod groups;
mod observe;
mod producer;
mod publish;
mod registry;

use std::path::Path;

use wharf_core::{Broker, BrokerConfig};

/// A broker on `dir` with the defaults a user gets.
async fn open(dir: &Path) -> Broker {
    match Broker::open(BrokerConfig::new(dir)).await {
        Ok(b) => b,
        Err(e) => panic!("opening a broker on {}: {e}", dir.display()),
    }
}
