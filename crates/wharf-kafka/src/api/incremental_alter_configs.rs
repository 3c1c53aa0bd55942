//! IncrementalAlterConfigs: SET and DELETE of single topic settings.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{
    incremental_alter_configs_response, IncrementalAlterConfigsRequest,
    IncrementalAlterConfigsResponse,
};
use wharf_core::ConfigOp;

use super::configs::{apply, Failure};
use super::str_bytes;
use crate::conn::Ctx;

const OP_SET: i8 = 0;
const OP_DELETE: i8 = 1;

/// IncrementalAlterConfigs: SET and DELETE. APPEND and SUBTRACT work on list settings,
/// and the only one Wharf has (`cleanup.policy`) supports one value today.
pub async fn handle(
    ctx: &Ctx,
    req: IncrementalAlterConfigsRequest,
    _version: i16,
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
                    crate::metrics::count(ResponseError::InvalidConfig.code()),
                    format!("SET of `{}` needs a value", c.name),
                )),
                (OP_DELETE, _) => Ok(ConfigOp::Delete {
                    key: c.name.to_string(),
                }),
                (op, _) => Err((
                    crate::metrics::count(ResponseError::InvalidConfig.code()),
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
