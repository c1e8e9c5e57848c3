//! DeleteGroups (API 42): deletes empty groups and their offsets on their owning shards, with
//! one mesh message per shard; a group with members is NON_EMPTY_GROUP, as in Kafka.

use std::collections::BTreeMap;

use bytes::Bytes;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{DeleteGroupsRequest, DeleteGroupsResponse, GroupId};

use super::group_common::{by_owner, check_group_id, EmptyGroupId};
use super::{str_bytes, Context, Outcome};
use crate::group::coordinator::{GroupRequest, GroupResponse};
use crate::model::ErrorCode;
use crate::security::acl::Operation;

pub async fn handle(ctx: &Context, body: Bytes) -> Outcome {
    let request: DeleteGroupsRequest = match ctx.decode(body) {
        Ok(r) => r,
        Err(close) => return close,
    };
    let ids: Vec<String> = request.groups_names.iter().map(|g| g.0.to_string()).collect();
    let calls = by_owner(ctx, &ids, EmptyGroupId::Accepted, Operation::Delete)
        .into_iter()
        .map(|(owner, groups)| ctx.groups().call(owner, GroupRequest::Delete { groups }));
    let mut codes: BTreeMap<String, ErrorCode> = BTreeMap::new();
    for answer in futures::future::join_all(calls).await {
        if let Some(GroupResponse::Delete(results)) = answer {
            codes.extend(results);
        }
    }
    let mut response = DeleteGroupsResponse::default();
    for id in ids {
        let mut result = DeletableGroupResult::default();
        let code = match check_group_id(ctx, &id, EmptyGroupId::Accepted, Operation::Delete) {
            Err(code) => code,
            Ok(()) => codes.get(&id).copied().unwrap_or(ErrorCode::CoordinatorNotAvailable),
        };
        result.error_code = code.code();
        result.group_id = GroupId(str_bytes(&id));
        response.results.push(result);
    }
    ctx.reply(&response)
}
