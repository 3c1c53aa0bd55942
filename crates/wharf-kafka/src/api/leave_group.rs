//! LeaveGroup: v0-2 one member id, whose error is the response's; v3+ a batch of
//! members (static ones may leave by `group.instance.id`), one error each.

use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{LeaveGroupRequest, LeaveGroupResponse};
use wharf_core::group::LeaveMember;

use crate::conn::Ctx;

pub async fn handle(ctx: &Ctx, req: LeaveGroupRequest, version: i16) -> LeaveGroupResponse {
    let members: Vec<LeaveMember> = if version >= 3 {
        req.members
            .iter()
            .map(|m| LeaveMember {
                member_id: m.member_id.to_string(),
                group_instance_id: m.group_instance_id.as_ref().map(|s| s.to_string()),
            })
            .collect()
    } else {
        vec![LeaveMember {
            member_id: req.member_id.to_string(),
            group_instance_id: None,
        }]
    };
    let resp = LeaveGroupResponse::default();
    let results = match ctx.broker.groups().leave(&req.group_id.0, members).await {
        Ok(results) => results,
        Err(e) => return resp.with_error_code(crate::metrics::count(e.code())),
    };
    if version < 3 {
        let code = results
            .first()
            .and_then(|r| r.as_ref().err())
            .map_or(0, |e| crate::metrics::count(e.code()));
        return resp.with_error_code(code);
    }
    let members = req
        .members
        .into_iter()
        .zip(results)
        .map(|(m, r)| {
            MemberResponse::default()
                .with_member_id(m.member_id)
                .with_group_instance_id(m.group_instance_id)
                .with_error_code(r.err().map_or(0, |e| crate::metrics::count(e.code())))
        })
        .collect();
    resp.with_members(members)
}
