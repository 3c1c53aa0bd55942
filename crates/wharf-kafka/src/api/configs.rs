//! What the config APIs (DescribeConfigs, AlterConfigs, IncrementalAlterConfigs) share:
//! Kafka's resource and config-type numbers, and applying a change to a topic. Only
//! topic configs exist; broker settings come from the command line, environment or
//! config file.

use std::collections::BTreeMap;

use kafka_protocol::error::ResponseError;
use kafka_protocol::protocol::StrBytes;
use wharf_core::{ConfigOp, CoreError};

use crate::conn::Ctx;
use crate::errors;

pub const RESOURCE_TOPIC: i8 = 2;
pub const RESOURCE_BROKER: i8 = 4;

/// Kafka's config types, for DescribeConfigs v3+.
const TYPE_STRING: i8 = 2;
const TYPE_INT: i8 = 3;
const TYPE_LONG: i8 = 5;
const TYPE_LIST: i8 = 7;

/// The Kafka config type of a topic setting.
pub fn config_type(key: &str) -> i8 {
    match key {
        wharf_core::RETENTION_MS
        | wharf_core::RETENTION_BYTES
        | wharf_core::MESSAGE_TTL_MS
        | wharf_core::DEDUP_WINDOW_MS => TYPE_LONG,
        wharf_core::SEGMENT_BYTES | wharf_core::MAX_MESSAGE_BYTES => TYPE_INT,
        wharf_core::CLEANUP_POLICY => TYPE_LIST,
        _ => TYPE_STRING,
    }
}

pub type Failure = (i16, String);

pub fn failure(e: &CoreError) -> Failure {
    (errors::code(e), e.to_string())
}

pub fn invalid_request(msg: impl Into<String>) -> Failure {
    (
        crate::metrics::count(ResponseError::InvalidRequest.code()),
        msg.into(),
    )
}

/// Checks that `ops` applied to the topic's overrides give a valid config; then, unless
/// `validate_only`, applies them.
pub async fn apply(
    ctx: &Ctx,
    resource_type: i8,
    name: &StrBytes,
    ops: Result<Vec<ConfigOp>, Failure>,
    validate_only: bool,
) -> Result<(), Failure> {
    if resource_type != RESOURCE_TOPIC {
        return Err(invalid_request(
            "only topic configs can be altered; broker settings come from the command line, environment or config file",
        ));
    }
    let ops = ops?;
    let d = ctx.broker.describe_topic(name).map_err(|e| failure(&e))?;
    if validate_only {
        let mut overrides: BTreeMap<String, String> = d.overrides.clone();
        for op in &ops {
            match op {
                ConfigOp::Set { key, value } => {
                    overrides.insert(key.clone(), value.clone());
                }
                ConfigOp::Delete { key } => {
                    overrides.remove(key);
                }
            }
        }
        ctx.broker
            .topic_defaults()
            .with_overrides(&overrides)
            .map_err(|e| failure(&e))?;
        return Ok(());
    }
    ctx.broker
        .alter_topic_config(name, ops)
        .await
        .map(|_| ())
        .map_err(|e| failure(&e))
}
