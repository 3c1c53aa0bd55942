//! SyncGroup: the leader hands in the assignment, every member gets its own; a follower
//! waits for the leader's. v5+ protocol type and name are checked when given.

use kafka_protocol::messages::{SyncGroupRequest, SyncGroupResponse};
use wharf_core::group::SyncRequest;

use super::str_bytes;
use crate::conn::Ctx;

pub async fn handle(ctx: &Ctx, req: SyncGroupRequest, version: i16) -> SyncGroupResponse {
    let sync = SyncRequest {
        group_id: req.group_id.0.to_string(),
        generation_id: req.generation_id,
        member_id: req.member_id.to_string(),
        group_instance_id: req.group_instance_id.map(|s| s.to_string()),
        protocol_type: req.protocol_type.map(|s| s.to_string()),
        protocol_name: req.protocol_name.map(|s| s.to_string()),
        assignments: req
            .assignments
            .into_iter()
            .map(|a| (a.member_id.to_string(), a.assignment.to_vec()))
            .collect(),
    };
    match ctx.broker.groups().sync(sync).await {
        Ok(r) => {
            let resp = SyncGroupResponse::default().with_assignment(r.assignment.into());
            if version >= 5 {
                resp.with_protocol_type(r.protocol_type.map(str_bytes))
                    .with_protocol_name(r.protocol_name.map(str_bytes))
            } else {
                resp
            }
        }
        Err(e) => SyncGroupResponse::default().with_error_code(crate::metrics::count(e.code())),
    }
}
