//! FindCoordinator: Wharf is one broker, the coordinator of every group. Answers with
//! the node id, host and port Metadata advertises. v0-3 ask for one key, v4+ for a
//! batch (`coordinator_keys`). Transaction coordinators (key type 1) and share-group
//! coordinators (key type 2) do not exist: transactions are not supported, and the
//! answer is an error a client treats as fatal rather than one it retries forever.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;

use super::str_bytes;
use crate::conn::Ctx;
use crate::NODE_ID;

const GROUP: i8 = 0;
const TRANSACTION: i8 = 1;

/// The coordinator for one key: `Ok((node, host, port))` or an error with its message.
fn find(ctx: &Ctx, key_type: i8, key: &str) -> Result<(i32, String, i32), (i16, String)> {
    match key_type {
        GROUP if key.is_empty() => Err((
            crate::metrics::count(ResponseError::InvalidGroupId.code()),
            "the group id is empty".into(),
        )),
        GROUP => Ok((NODE_ID, ctx.advertised.0.clone(), ctx.advertised.1)),
        // The same code as an InitProducerId with a transactional id: fatal to clients.
        TRANSACTION => Err((
            crate::metrics::count(ResponseError::TransactionalIdAuthorizationFailed.code()),
            "transactions are not supported by Wharf".into(),
        )),
        other => Err((
            crate::metrics::count(ResponseError::InvalidRequest.code()),
            format!("coordinator key type {other} is not supported by Wharf"),
        )),
    }
}

pub async fn handle(
    ctx: &Ctx,
    req: FindCoordinatorRequest,
    version: i16,
) -> FindCoordinatorResponse {
    // v0 has no key type: always a group.
    let key_type = if version >= 1 { req.key_type } else { GROUP };
    if version >= 4 {
        let coordinators = req
            .coordinator_keys
            .iter()
            .map(|key| {
                let c = Coordinator::default().with_key(key.clone());
                match find(ctx, key_type, key) {
                    Ok((node, host, port)) => c
                        .with_node_id(BrokerId(node))
                        .with_host(str_bytes(host))
                        .with_port(port),
                    Err((code, message)) => c
                        .with_node_id(BrokerId(-1))
                        .with_port(-1)
                        .with_error_code(code)
                        .with_error_message(Some(str_bytes(message))),
                }
            })
            .collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    let resp = FindCoordinatorResponse::default();
    match find(ctx, key_type, &req.key) {
        Ok((node, host, port)) => resp
            .with_node_id(BrokerId(node))
            .with_host(str_bytes(host))
            .with_port(port),
        Err((code, message)) => {
            let resp = resp
                .with_error_code(code)
                .with_node_id(BrokerId(-1))
                .with_host(StrBytes::default())
                .with_port(-1);
            if version >= 1 {
                resp.with_error_message(Some(str_bytes(message)))
            } else {
                resp
            }
        }
    }
}
