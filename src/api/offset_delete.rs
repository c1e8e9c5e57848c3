//! OffsetDelete (API 47): deletes a group's committed offsets of the partitions named; the
//! owning shard refuses a topic the group still consumes (GROUP_SUBSCRIBED_TO_TOPIC), as Kafka.

use bytes::Bytes;
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::{OffsetDeleteRequest, OffsetDeleteResponse, TopicName};

use super::group_common::{call, check_group_id, EmptyGroupId};
use super::{str_bytes, Context, Outcome};
use crate::group::coordinator::{GroupRequest, GroupResponse};
use crate::model::ErrorCode;
use crate::security::acl::Operation;

pub async fn handle(ctx: &Context, body: Bytes) -> Outcome {
    let request: OffsetDeleteRequest = match ctx.decode(body) {
        Ok(r) => r,
        Err(close) => return close,
    };
    let group_id = request.group_id.0.to_string();
    type Topics = Vec<(String, Vec<i32>)>;
    let (topics, denied): (Topics, Topics) = request
        .topics
        .iter()
        .map(|t| (t.name.0.to_string(), t.partitions.iter().map(|p| p.partition_index).collect()))
        .partition(|(name, _)| ctx.topic_allowed(Operation::Read, name));
    let outcome = match check_group_id(ctx, &group_id, EmptyGroupId::Refused, Operation::Delete) {
        Err(code) => Err(code),
        Ok(()) => {
            let delete = GroupRequest::DeleteOffsets { group_id: group_id.clone(), topics };
            match call(ctx, &group_id, delete).await {
                Some(GroupResponse::DeleteOffsets(outcome)) => outcome,
                _ => Err(ErrorCode::CoordinatorNotAvailable),
            }
        }
    };
    let mut response = OffsetDeleteResponse::default();
    match outcome {
        Err(code) => response.error_code = code.code(),
        Ok(topics) => {
            // Kafka: the partitions of topics the principal may not read are
            // TOPIC_AUTHORIZATION_FAILED, the others go to the coordinator.
            let denied = denied.into_iter().map(|(name, partitions)| {
                let codes = partitions
                    .into_iter()
                    .map(|index| (index, ErrorCode::TopicAuthorizationFailed));
                (name, codes.collect::<Vec<_>>())
            });
            for (name, partitions) in topics.into_iter().chain(denied) {
                let mut topic = OffsetDeleteResponseTopic::default();
                topic.name = TopicName(str_bytes(&name));
                for (index, code) in partitions {
                    let mut partition = OffsetDeleteResponsePartition::default();
                    partition.partition_index = index;
                    partition.error_code = code.code();
                    topic.partitions.push(partition);
                }
                response.topics.push(topic);
            }
        }
    }
    ctx.reply(&response)
}
