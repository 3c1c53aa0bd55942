//! DeleteGroups: each group must exist and be Empty (`GROUP_ID_NOT_FOUND`,
//! `NON_EMPTY_GROUP` otherwise); its committed offsets go with it, durably.

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{DeleteGroupsRequest, DeleteGroupsResponse, GroupId};

use super::str_bytes;
use crate::conn::Ctx;

pub async fn handle(ctx: &Ctx, req: DeleteGroupsRequest, _version: i16) -> DeleteGroupsResponse {
    let ids = req.groups_names.iter().map(|g| g.0.to_string()).collect();
    let results = ctx
        .broker
        .groups()
        .delete_groups(ids)
        .await
        .into_iter()
        .map(|(id, r)| {
            DeletableGroupResult::default()
                .with_group_id(GroupId(str_bytes(id)))
                .with_error_code(r.err().map_or(0, |e| crate::metrics::count(e.code())))
        })
        .collect();
    DeleteGroupsResponse::default().with_results(results)
}
