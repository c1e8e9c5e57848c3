//! ConsumerGroupDescribe (API 69, KIP-848): each consumer group's state, epochs, assignor and
//! members with their current and target assignments (topic ids with names), one mesh
//! message per owning shard. A classic group, or none, is GROUP_ID_NOT_FOUND, as in Kafka.

use std::collections::BTreeMap;

use bytes::Bytes;
use kafka_protocol::messages::consumer_group_describe_response::{
    Assignment, DescribedGroup, Member, TopicPartitions,
};
use kafka_protocol::messages::{
    ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse, GroupId, TopicName,
};

use super::group_common::{by_owner, check_group_id, EmptyGroupId};
use super::{str_bytes, Context, Outcome};
use crate::group::assignor;
use crate::group::consumer::DescribedConsumerGroup;
use crate::group::coordinator::{GroupRequest, GroupResponse};
use crate::model::ErrorCode;
use crate::security::acl::{Operation, ResourceType};

/// Member type of a member that speaks the consumer protocol (v1+; 0 would be classic).
const MEMBER_TYPE_CONSUMER: i8 = 1;

pub async fn handle(ctx: &Context, body: Bytes) -> Outcome {
    let request: ConsumerGroupDescribeRequest = match ctx.decode(body) {
        Ok(r) => r,
        Err(close) => return close,
    };
    let ids: Vec<String> = request.group_ids.iter().map(|g| g.0.to_string()).collect();
    let calls = by_owner(ctx, &ids, EmptyGroupId::Refused, Operation::Describe)
        .into_iter()
        .map(|(owner, groups)| ctx.groups().call(owner, GroupRequest::ConsumerDescribe { groups }));
    let mut described: BTreeMap<String, DescribedConsumerGroup> = BTreeMap::new();
    for answer in futures::future::join_all(calls).await {
        if let Some(GroupResponse::ConsumerDescribe(groups)) = answer {
            described.extend(groups.into_iter().map(|g| (g.group_id.clone(), g)));
        }
    }
    let mut response = ConsumerGroupDescribeResponse::default();
    let catalog = ctx.shard().catalog.borrow();
    let assignment = |assigned: &assignor::Assignment| {
        let mut out = Assignment::default();
        out.topic_partitions = assigned
            .iter()
            .map(|(topic, partitions)| {
                let mut entry = TopicPartitions::default();
                entry.topic_id = uuid::Uuid::from_bytes(*topic);
                let name = catalog.name_of(topic).map(|n| n.to_string()).unwrap_or_default();
                entry.topic_name = TopicName(str_bytes(&name));
                entry.partitions = partitions.iter().copied().collect();
                entry
            })
            .collect();
        out
    };
    for id in ids {
        let mut group = DescribedGroup::default();
        group.group_id = GroupId(str_bytes(&id));
        group.authorized_operations = i32::MIN;
        if let Err(code) = check_group_id(ctx, &id, EmptyGroupId::Refused, Operation::Describe) {
            group.error_code = code.code();
            response.groups.push(group);
            continue;
        }
        let Some(found) = described.remove(&id) else {
            group.error_code = ErrorCode::CoordinatorNotAvailable.code();
            response.groups.push(group);
            continue;
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
                    member.member_type = MEMBER_TYPE_CONSUMER;
                }
                member
            })
            .collect();
        response.groups.push(group);
    }
    drop(catalog);
    ctx.reply(&response)
}
