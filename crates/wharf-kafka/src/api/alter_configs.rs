//! AlterConfigs: replaces every override of a topic with the given set.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{alter_configs_response, AlterConfigsRequest, AlterConfigsResponse};
use wharf_core::ConfigOp;

use super::configs::apply;
use super::str_bytes;
use crate::conn::Ctx;

pub async fn handle(ctx: &Ctx, req: AlterConfigsRequest, _version: i16) -> AlterConfigsResponse {
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
                crate::metrics::count(ResponseError::InvalidConfig.code()),
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
