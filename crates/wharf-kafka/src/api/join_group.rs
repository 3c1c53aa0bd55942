//! JoinGroup: parks until the group's rebalance completes (or answers at once with an
//! error, or a stable group's current generation for a known member). The connection is
//! busy meanwhile, as a Kafka broker keeps a connection muted while its JoinGroup waits.
//!
//! v4+ (KIP-394): a new dynamic member first gets `MEMBER_ID_REQUIRED` with its member
//! id and joins again with it. v0 has no rebalance timeout: the session timeout stands
//! in. v5+ carry `group.instance.id` (static membership). Before v7 the protocol name
//! is not nullable: an error answers it as "".

use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::{JoinGroupRequest, JoinGroupResponse};
use kafka_protocol::protocol::StrBytes;
use wharf_core::group::{JoinRequest, Protocol};
use wharf_core::GroupError;

use super::str_bytes;
use crate::conn::Ctx;

/// How Kafka shows a member's host: the client's IP with a leading slash.
pub fn client_host(ctx: &Ctx) -> String {
    ctx.peer.map(|p| format!("/{}", p.ip())).unwrap_or_default()
}

pub async fn handle(
    ctx: &Ctx,
    req: JoinGroupRequest,
    version: i16,
    client_id: Option<&StrBytes>,
) -> JoinGroupResponse {
    let request_member = req.member_id.to_string();
    let join = JoinRequest {
        group_id: req.group_id.0.to_string(),
        member_id: request_member.clone(),
        group_instance_id: req.group_instance_id.map(|s| s.to_string()),
        client_id: client_id.map(|s| s.to_string()).unwrap_or_default(),
        client_host: client_host(ctx),
        session_timeout_ms: req.session_timeout_ms,
        rebalance_timeout_ms: if version >= 1 {
            req.rebalance_timeout_ms
        } else {
            req.session_timeout_ms
        },
        protocol_type: req.protocol_type.to_string(),
        protocols: req
            .protocols
            .into_iter()
            .map(|p| Protocol {
                name: p.name.to_string(),
                metadata: p.metadata.to_vec(),
            })
            .collect(),
        require_known_member_id: version >= 4,
    };
    let resp = JoinGroupResponse::default();
    match ctx.broker.groups().join(join).await {
        Ok(r) => {
            let members = r
                .members
                .into_iter()
                .map(|m| {
                    let member = JoinGroupResponseMember::default()
                        .with_member_id(str_bytes(m.member_id))
                        .with_metadata(m.metadata.into());
                    if version >= 5 {
                        member.with_group_instance_id(m.group_instance_id.map(str_bytes))
                    } else {
                        member
                    }
                })
                .collect();
            let resp = resp
                .with_generation_id(r.generation_id)
                .with_protocol_name(protocol_name(r.protocol_name, version))
                .with_leader(str_bytes(r.leader))
                .with_member_id(str_bytes(r.member_id))
                .with_members(members);
            if version >= 7 {
                resp.with_protocol_type(r.protocol_type.map(str_bytes))
            } else {
                resp
            }
        }
        Err(e) => {
            let member_id = match &e {
                GroupError::MemberIdRequired { member_id } => member_id.clone(),
                _ => request_member,
            };
            resp.with_error_code(crate::metrics::count(e.code()))
                .with_generation_id(-1)
                .with_protocol_name(protocol_name(None, version))
                .with_member_id(str_bytes(member_id))
        }
    }
}

fn protocol_name(name: Option<String>, version: i16) -> Option<StrBytes> {
    match name {
        Some(n) => Some(str_bytes(n)),
        None if version >= 7 => None,
        None => Some(StrBytes::default()),
    }
}
