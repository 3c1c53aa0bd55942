//! DescribeGroups: state, protocol, members (with metadata and assignment once Stable).
//! An unknown group is, before v6, a `Dead` group with no error (as Kafka answers it);
//! from v6 `GROUP_ID_NOT_FOUND` with a message. No ACLs: authorized operations stay
//! "not provided".

use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::{DescribeGroupsRequest, DescribeGroupsResponse};
use wharf_core::group::GroupState;
use wharf_core::GroupError;

use super::str_bytes;
use crate::conn::Ctx;

pub async fn handle(ctx: &Ctx, req: DescribeGroupsRequest, version: i16) -> DescribeGroupsResponse {
    let groups = req
        .groups
        .into_iter()
        .map(|id| {
            let group = DescribedGroup::default().with_group_id(id.clone());
            match ctx.broker.groups().describe_group(&id.0) {
                Ok(d) => {
                    let members = d
                        .members
                        .into_iter()
                        .map(|m| {
                            let member = DescribedGroupMember::default()
                                .with_member_id(str_bytes(m.member_id))
                                .with_client_id(str_bytes(m.client_id))
                                .with_client_host(str_bytes(m.client_host))
                                .with_member_metadata(m.metadata.into())
                                .with_member_assignment(m.assignment.into());
                            if version >= 4 {
                                member.with_group_instance_id(m.group_instance_id.map(str_bytes))
                            } else {
                                member
                            }
                        })
                        .collect();
                    group
                        .with_group_state(str_bytes(d.state.as_str()))
                        .with_protocol_type(str_bytes(d.protocol_type))
                        .with_protocol_data(str_bytes(d.protocol))
                        .with_members(members)
                }
                Err(GroupError::GroupIdNotFound { .. }) if version < 6 => {
                    group.with_group_state(str_bytes(GroupState::Dead.as_str()))
                }
                Err(e) => {
                    let group = group
                        .with_error_code(crate::metrics::count(e.code()))
                        .with_group_state(str_bytes(GroupState::Dead.as_str()));
                    if version >= 6 {
                        group.with_error_message(Some(str_bytes(e.to_string())))
                    } else {
                        group
                    }
                }
            }
        })
        .collect();
    DescribeGroupsResponse::default().with_groups(groups)
}
