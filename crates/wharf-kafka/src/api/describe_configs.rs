//! DescribeConfigs: a topic's effective settings, each marked as a topic override or a
//! default. Broker resources describe as empty.

use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};

use super::configs::{config_type, failure, invalid_request, RESOURCE_BROKER, RESOURCE_TOPIC};
use super::create_topics::{SOURCE_DEFAULT, SOURCE_DYNAMIC_TOPIC};
use super::str_bytes;
use crate::conn::Ctx;

pub async fn handle(
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
