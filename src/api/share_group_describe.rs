//! ShareGroupDescribe (API 77, KIP-932): each share group's state, epochs, assignor and
//! members with their assignments (topic ids with names), one mesh message per owning shard.
//! A group that is not a share group, or none, is GROUP_ID_NOT_FOUND, as in Kafka.

use std::collections::BTreeMap;

use bytes::Bytes;
use kafka_protocol::messages::share_group_describe_response::{
    Assignment, DescribedGroup, Member, TopicPartitions,
};
use kafka_protocol::messages::{
    GroupId, ShareGroupDescribeRequest, ShareGroupDescribeResponse, TopicName,
};

use super::group_common::{describe_by_owner, described_assignment, described_one};
use super::{str_bytes, Context, Outcome};
use crate::group::assignor;
use crate::group::coordinator::{GroupRequest, GroupResponse};
use crate::group::share::{DescribedShareGroup, SHARE_ASSIGNOR};
use crate::security::acl::ResourceType;

pub async fn handle(ctx: &Context, body: Bytes) -> Outcome {
    let request: ShareGroupDescribeRequest = match ctx.decode(body) {
        Ok(r) => r,
        Err(close) => return close,
    };
    let ids: Vec<String> = request.group_ids.iter().map(|g| g.0.to_string()).collect();
    let ask = |groups| GroupRequest::ShareDescribe { groups };
    let mut described: BTreeMap<String, DescribedShareGroup> =
        describe_by_owner(ctx, &ids, ask, |response| match response {
            GroupResponse::ShareDescribe(groups) => {
                Some(groups.into_iter().map(|g| (g.group_id.clone(), g)).collect())
            }
            _ => None,
        })
        .await;
    let mut response = ShareGroupDescribeResponse::default();
    let catalog = ctx.shard().catalog.borrow();
    let assignment = |assigned: &assignor::Assignment| {
        described_assignment!(Assignment, TopicPartitions, catalog, assigned)
    };
    for id in ids {
        let mut group = DescribedGroup::default();
        group.group_id = GroupId(str_bytes(&id));
        group.authorized_operations = i32::MIN;
        let found = match described_one(ctx, &id, &mut described) {
            Ok(found) => found,
            Err(code) => {
                group.error_code = code.code();
                response.groups.push(group);
                continue;
            }
        };
        if request.include_authorized_operations {
            group.authorized_operations = ctx.authorized_operations(ResourceType::Group, &id);
        }
        group.error_code = found.error_code.code();
        group.error_message = found.error_message.as_deref().map(str_bytes);
        group.group_state = str_bytes(found.state);
        group.group_epoch = found.group_epoch;
        group.assignment_epoch = found.assignment_epoch;
        group.assignor_name = str_bytes(SHARE_ASSIGNOR);
        group.members = found
            .members
            .iter()
            .map(|m| {
                let mut member = Member::default();
                member.member_id = str_bytes(&m.member_id);
                member.rack_id = m.rack_id.as_deref().map(str_bytes);
                member.member_epoch = m.member_epoch;
                member.client_id = str_bytes(&m.client_id);
                member.client_host = str_bytes(&m.client_host);
                member.subscribed_topic_names =
                    m.subscribed_topic_names.iter().map(|n| TopicName(str_bytes(n))).collect();
                member.assignment = assignment(&m.assignment);
                member
            })
            .collect();
        response.groups.push(group);
    }
    drop(catalog);
    ctx.reply(&response)
}
