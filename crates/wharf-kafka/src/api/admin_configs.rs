//! DescribeConfigs, AlterConfigs and IncrementalAlterConfigs for topics. Broker
//! resources describe as empty and cannot be altered: broker settings come from the
//! command line, environment or config file.

use std::collections::BTreeMap;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::{
    alter_configs_response, incremental_alter_configs_response, AlterConfigsRequest,
    AlterConfigsResponse, DescribeConfigsRequest, DescribeConfigsResponse,
    IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
};
use kafka_protocol::protocol::StrBytes;
use wharf_core::{ConfigOp, CoreError};

use super::create_topics::{SOURCE_DEFAULT, SOURCE_DYNAMIC_TOPIC};
use super::str_bytes;
use crate::conn::Ctx;
use crate::errors;

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;

/// Kafka's config types, for DescribeConfigs v3+.
const TYPE_STRING: i8 = 2;
const TYPE_INT: i8 = 3;
const TYPE_LONG: i8 = 5;
const TYPE_LIST: i8 = 7;

fn config_type(key: &str) -> i8 {
    match key {
        wharf_core::RETENTION_MS | wharf_core::RETENTION_BYTES => TYPE_LONG,
        wharf_core::SEGMENT_BYTES | wharf_core::MAX_MESSAGE_BYTES => TYPE_INT,
        wharf_core::CLEANUP_POLICY => TYPE_LIST,
        _ => TYPE_STRING,
    }
}

type Failure = (i16, String);

fn failure(e: &CoreError) -> Failure {
    (errors::code(e), e.to_string())
}

fn invalid_request(msg: impl Into<String>) -> Failure {
    (ResponseError::InvalidRequest.code(), msg.into())
}

pub async fn describe(
    ctx: &Ctx,
    req: DescribeConfigsRequest,
    version: i16,
) -> DescribeConfigsResponse {
    let results = req
        .resources
        .into_iter()
        .map(|r| {
            let out = DescribeConfigsResult::default()
                .with_resource_type(r.resource_type)
                .with_resource_name(r.resource_name.clone());
            let entries = match r.resource_type {
                RESOURCE_TOPIC => ctx
                    .broker
                    .describe_topic(&r.resource_name)
                    .map_err(|e| failure(&e))
                    .map(|d| {
                        d.config
                            .entries()
                            .into_iter()
                            .filter(|(k, _)| {
                                // Null or empty: every key.
                                r.configuration_keys.as_ref().is_none_or(|keys| {
                                    keys.is_empty() || keys.iter().any(|w| w.as_str() == *k)
                                })
                            })
                            .map(|(k, v)| {
                                let c = DescribeConfigsResourceResult::default()
                                    .with_name(str_bytes(k))
                                    .with_value(Some(str_bytes(v)))
                                    .with_config_source(if d.overrides.contains_key(k) {
                                        SOURCE_DYNAMIC_TOPIC
                                    } else {
                                        SOURCE_DEFAULT
                                    });
                                if version >= 3 {
                                    c.with_config_type(config_type(k))
                                } else {
                                    c
                                }
                            })
                            .collect()
                    }),
                RESOURCE_BROKER => Ok(Vec::new()),
                other => Err(invalid_request(format!(
                    "unsupported resource type {other}"
                ))),
            };
            match entries {
                Ok(configs) => out.with_configs(configs),
                Err((code, msg)) => out
                    .with_error_code(code)
                    .with_error_message(Some(str_bytes(msg))),
            }
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}

/// Checks that `ops` applied to the topic's overrides give a valid config; then, unless
/// `validate_only`, applies them.
async fn apply(
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

/// AlterConfigs replaces every override of the topic with the given set.
pub async fn alter(ctx: &Ctx, req: AlterConfigsRequest) -> AlterConfigsResponse {
    let mut responses = Vec::with_capacity(req.resources.len());
    for r in req.resources {
        let mut ops = Vec::new();
        let mut given = Vec::new();
        let mut null = None;
        for c in &r.configs {
            given.push(c.name.to_string());
            match &c.value {
                Some(v) => ops.push(ConfigOp::Set {
                    key: c.name.to_string(),
                    value: v.to_string(),
                }),
                None => null = Some(c.name.to_string()),
            }
        }
        if let Ok(d) = ctx.broker.describe_topic(&r.resource_name) {
            for key in d.overrides.keys().filter(|k| !given.contains(k)) {
                ops.push(ConfigOp::Delete { key: key.clone() });
            }
        }
        let ops = match null {
            Some(key) => Err((
                ResponseError::InvalidConfig.code(),
                format!("config `{key}` has a null value"),
            )),
            None => Ok(ops),
        };
        let outcome = apply(
            ctx,
            r.resource_type,
            &r.resource_name,
            ops,
            req.validate_only,
        )
        .await;
        let out = alter_configs_response::AlterConfigsResourceResponse::default()
            .with_resource_type(r.resource_type)
            .with_resource_name(r.resource_name);
        responses.push(match outcome {
            Ok(()) => out,
            Err((code, msg)) => out
                .with_error_code(code)
                .with_error_message(Some(str_bytes(msg))),
        });
    }
    AlterConfigsResponse::default().with_responses(responses)
}

const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;

/// IncrementalAlterConfigs: SET and DELETE. APPEND and SUBTRACT work on list settings,
/// and the only one Wharf has (`cleanup.policy`) supports one value today.
pub async fn incremental_alter(
    ctx: &Ctx,
    req: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let mut responses = Vec::with_capacity(req.resources.len());
    for r in req.resources {
        let ops: Result<Vec<ConfigOp>, Failure> = r
            .configs
            .iter()
            .map(|c| match (c.config_operation, &c.value) {
                (OP_SET, Some(v)) => Ok(ConfigOp::Set {
                    key: c.name.to_string(),
                    value: v.to_string(),
                }),
                (OP_SET, None) => Err((
                    ResponseError::InvalidConfig.code(),
                    format!("SET of `{}` needs a value", c.name),
                )),
                (OP_DELETE, _) => Ok(ConfigOp::Delete {
                    key: c.name.to_string(),
                }),
                (op, _) => Err((
                    ResponseError::InvalidConfig.code(),
                    format!(
                        "config operation {op} on `{}` is not supported (only SET and DELETE)",
                        c.name
                    ),
                )),
            })
            .collect();
        let outcome = apply(
            ctx,
            r.resource_type,
            &r.resource_name,
            ops,
            req.validate_only,
        )
        .await;
        let out = incremental_alter_configs_response::AlterConfigsResourceResponse::default()
            .with_resource_type(r.resource_type)
            .with_resource_name(r.resource_name);
        responses.push(match outcome {
            Ok(()) => out,
            Err((code, msg)) => out
                .with_error_code(code)
                .with_error_message(Some(str_bytes(msg))),
        });
    }
    IncrementalAlterConfigsResponse::default().with_responses(responses)
}
