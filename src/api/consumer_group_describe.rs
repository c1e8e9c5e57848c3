//! ConsumerGroupDescribe (API 69, KIP-848): each consumer group's state, epochs, assignor and
//! members with their current and target assignments (topic ids with names), one mesh
//! message per owning shard. A classic group, or none, is GROUP_ID_NOT_FOUND, as in Kafka.

use bytes::Bytes;
use kafka_protocol::messages::consumer_group_describe_response::{
    Assignment, DescribedGroup, Member, TopicPartitions,
};
use kafka_protocol::messages::{
    ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse, GroupId, TopicName,
};

use super::group_common::{describe_by_owner, described_assignment, described_one};
use super::{str_bytes, Context, Outcome};
use crate::group::assignor;
use crate::group::coordinator::{GroupRequest, GroupResponse};
use crate::security::acl::ResourceType;

/// Member types (v1+): a member that speaks the consumer protocol, and a classic member of a
/// consumer group (KIP-848's online migration).
const MEMBER_TYPE_CONSUMER: i8 = 1;
const MEMBER_TYPE_CLASSIC: i8 = 0;

pub async fn handle(ctx: &Context, body: Bytes) -> Outcome {
    let request: ConsumerGroupDescribeRequest = match ctx.decode(body) {
        Ok(r) => r,
        Err(close) => return close,
    };
    let ids: Vec<String> = request.group_ids.iter().map(|g| g.0.to_string()).collect();
    let ask = |groups| GroupRequest::ConsumerDescribe { groups };
    let mut described = describe_by_owner(ctx, &ids, ask, |response| match response {
        GroupResponse::ConsumerDescribe(groups) => {
            Some(groups.into_iter().map(|g| (g.group_id.clone(), g)).collect())
        }
        _ => None,
    })
    .await;
    let mut response = ConsumerGroupDescribeResponse::default();
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
        group.assignor_name = str_bytes(&found.assignor);
        group.members = found
            .members
            .iter()
            .map(|m| {
                let mut member = Member::default();
                member.member_id = str_bytes(&m.member_id);
                member.instance_id = m.instance_id.as_deref().map(str_bytes);
                member.rack_id = m.rack_id.as_deref().map(str_bytes);
                member.member_epoch = m.member_epoch;
                member.client_id = str_bytes(&m.client_id);
                member.client_host = str_bytes(&m.client_host);
                member.subscribed_topic_names =
                    m.subscribed_topic_names.iter().map(|n| TopicName(str_bytes(n))).collect();
                member.subscribed_topic_regex = m.subscribed_topic_regex.as_deref().map(str_bytes);
                member.assignment = assignment(&m.assignment);
                member.target_assignment = assignment(&m.target);
                if ctx.version >= 1 {
                    member.member_type =
                        if m.classic { MEMBER_TYPE_CLASSIC } else { MEMBER_TYPE_CONSUMER };
                }
                member
            })
            .collect();
        response.groups.push(group);
    }
    drop(catalog);
    ctx.reply(&response)
}
