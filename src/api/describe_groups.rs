//! DescribeGroups (API 15): each group's state, protocol and members, with one mesh message per
//! owning shard; from v6 a group that does not exist is GROUP_ID_NOT_FOUND, as in Kafka, and
//! so is a KIP-848 consumer group ("not a classic group"; ConsumerGroupDescribe describes it).

use std::collections::BTreeMap;

use bytes::Bytes;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::{DescribeGroupsRequest, DescribeGroupsResponse, GroupId};

use super::group_common::{by_owner, check_group_id, EmptyGroupId};
use super::{str_bytes, Context, Outcome};
use crate::group::coordinator::{GroupRequest, GroupResponse};
use crate::group::state;
use crate::model::ErrorCode;
use crate::security::acl::{Operation, ResourceType};

pub async fn handle(ctx: &Context, body: Bytes) -> Outcome {
    let request: DescribeGroupsRequest = match ctx.decode(body) {
        Ok(r) => r,
        Err(close) => return close,
    };
    let ids: Vec<String> = request.groups.iter().map(|g| g.0.to_string()).collect();
    let calls = by_owner(ctx, &ids, EmptyGroupId::Accepted, Operation::Describe)
        .into_iter()
        .map(|(owner, groups)| ctx.groups().call(owner, GroupRequest::Describe { groups }));
    let mut described: BTreeMap<String, state::DescribedGroup> = BTreeMap::new();
    for answer in futures::future::join_all(calls).await {
        if let Some(GroupResponse::Describe(groups)) = answer {
            described.extend(groups.into_iter().map(|g| (g.group_id.clone(), g)));
        }
    }
    let mut response = DescribeGroupsResponse::default();
    for id in ids {
        let mut group = DescribedGroup::default();
        group.group_id = GroupId(str_bytes(&id));
        if let Err(code) = check_group_id(ctx, &id, EmptyGroupId::Accepted, Operation::Describe) {
            group.error_code = code.code();
            group.group_state = str_bytes(state::GroupState::Dead.name());
            response.groups.push(group);
            continue;
        }
        let Some(found) = described.remove(&id) else {
            group.error_code = ErrorCode::CoordinatorNotAvailable.code();
            response.groups.push(group);
            continue;
        };
        group.group_state = str_bytes(found.state.name());
        if found.state == state::GroupState::Dead && ctx.version >= 6 {
            group.error_code = ErrorCode::GroupIdNotFound.code();
            let message = if found.is_consumer_group {
                format!("Group {id} is not a classic group.")
            } else {
                format!("Group {id} not found.")
            };
            group.error_message = Some(str_bytes(&message));
        }
        if ctx.version >= 3 && request.include_authorized_operations {
            group.authorized_operations = ctx.authorized_operations(ResourceType::Group, &id);
        }
        group.protocol_type = str_bytes(&found.protocol_type);
        group.protocol_data = str_bytes(&found.protocol_data);
        group.members = found
            .members
            .into_iter()
            .map(|m| {
                let mut member = DescribedGroupMember::default();
                member.member_id = str_bytes(&m.member_id);
                if ctx.version >= 4 {
                    member.group_instance_id = m.group_instance_id.as_deref().map(str_bytes);
                }
                member.client_id = str_bytes(&m.client_id);
                member.client_host = str_bytes(&m.client_host);
                member.member_metadata = m.metadata;
                member.member_assignment = m.assignment;
                member
            })
            .collect();
        response.groups.push(group);
    }
    ctx.reply(&response)
}
