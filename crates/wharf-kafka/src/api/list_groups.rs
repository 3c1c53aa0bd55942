//! ListGroups: every group, with its protocol type; v4+ its state and a states filter
//! (case-insensitive; an unknown state matches no group), v5+ its type and a types
//! filter. Every Wharf group is a "classic" group (the rebalance protocol of JoinGroup
//! and SyncGroup; KIP-848's "consumer" groups do not exist here).

use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{GroupId, ListGroupsRequest, ListGroupsResponse};
use wharf_core::group::GroupState;

use super::str_bytes;
use crate::conn::Ctx;

const CLASSIC: &str = "classic";

pub async fn handle(ctx: &Ctx, req: ListGroupsRequest, version: i16) -> ListGroupsResponse {
    let resp = ListGroupsResponse::default();
    let states: Vec<GroupState> = if version >= 4 {
        req.states_filter
            .iter()
            .filter_map(|s| s.parse().ok())
            .collect()
    } else {
        Vec::new()
    };
    let none_match = (version >= 4 && !req.states_filter.is_empty() && states.is_empty())
        || (version >= 5
            && !req.types_filter.is_empty()
            && !req
                .types_filter
                .iter()
                .any(|t| t.eq_ignore_ascii_case(CLASSIC)));
    if none_match {
        return resp;
    }
    let listed = match ctx.broker.groups().list_groups(&states) {
        Ok(l) => l,
        Err(e) => return resp.with_error_code(crate::metrics::count(e.code())),
    };
    let groups = listed
        .into_iter()
        .map(|g| {
            let group = ListedGroup::default()
                .with_group_id(GroupId(str_bytes(g.group_id)))
                .with_protocol_type(str_bytes(g.protocol_type));
            let group = if version >= 4 {
                group.with_group_state(str_bytes(g.state.as_str()))
            } else {
                group
            };
            if version >= 5 {
                group.with_group_type(str_bytes(CLASSIC))
            } else {
                group
            }
        })
        .collect();
    resp.with_groups(groups)
}
