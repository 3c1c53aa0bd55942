//! Heartbeat: keeps a member's session alive; `REBALANCE_IN_PROGRESS` tells it to rejoin.

use kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse};

use crate::conn::Ctx;

pub async fn handle(ctx: &Ctx, req: HeartbeatRequest, _version: i16) -> HeartbeatResponse {
    let beat = wharf_core::group::HeartbeatRequest {
        group_id: req.group_id.0.to_string(),
        generation_id: req.generation_id,
        member_id: req.member_id.to_string(),
        group_instance_id: req.group_instance_id.map(|s| s.to_string()),
    };
    let code = match ctx.broker.groups().heartbeat(beat).await {
        Ok(()) => 0,
        Err(e) => crate::metrics::count(e.code()),
    };
    HeartbeatResponse::default().with_error_code(code)
}
