//! AlterShareGroupOffsets (API 91, KIP-932): sets the start offset (SPSO) of share
//! partitions of a share group without members, what `kafka-share-groups.sh --reset-offsets`
//! and the Admin client's `alterShareGroupOffsets` do. Each partition named starts again at
//! its offset with nothing in flight (Kafka's share coordinator initializes its state anew);
//! the new state is written before the answer. As Kafka (since 4.2) a group that does not
//! exist yet is created, so that its offsets can be set before first use (not when no
//! partition named passes: there would be no state to keep across a restart); a classic or
//! consumer group under the id is GROUP_ID_NOT_FOUND, a group with members NON_EMPTY_GROUP.
//! Authorization as Kafka's: READ on the group, READ on each topic
//! (TOPIC_AUTHORIZATION_FAILED per partition). A topic the catalog does not know, or a
//! partition it does not have, is UNKNOWN_TOPIC_OR_PARTITION; a negative offset
//! INVALID_REQUEST (Spate's check: Kafka's tool resolves offsets before it asks).

use bytes::Bytes;
use kafka_protocol::messages::alter_share_group_offsets_response::{
    AlterShareGroupOffsetsResponsePartition, AlterShareGroupOffsetsResponseTopic,
};
use kafka_protocol::messages::{
    AlterShareGroupOffsetsRequest, AlterShareGroupOffsetsResponse, TopicName,
};

use super::group_common::call;
use super::share_common::{check_offsets_admin, non_empty_message};
use super::{str_bytes, Context, Outcome};
use crate::group::coordinator::{GroupRequest, GroupResponse};
use crate::model::{ErrorCode, TopicPartition};
use crate::security::acl::Operation;

pub async fn handle(ctx: &Context, body: Bytes) -> Outcome {
    let request: AlterShareGroupOffsetsRequest = match ctx.decode(body) {
        Ok(r) => r,
        Err(close) => return close,
    };
    let group_id = request.group_id.0.to_string();
    let mut response = AlterShareGroupOffsetsResponse::default();
    if let Err(code) = check_offsets_admin(ctx, &group_id, Operation::Read) {
        response.error_code = code.code();
        return ctx.reply(&response);
    }
    // Each topic's answer per partition; the partitions that pass go to the coordinator.
    let mut offsets: Vec<(TopicPartition, i64)> = Vec::new();
    {
        let catalog = ctx.shard().catalog.borrow();
        for asked in &request.topics {
            let name = asked.topic_name.0.to_string();
            let allowed = ctx.topic_allowed(Operation::Read, &name);
            let meta = catalog.get(&name).filter(|meta| !meta.is_internal());
            let mut topic = AlterShareGroupOffsetsResponseTopic::default();
            topic.topic_name = TopicName(str_bytes(&name));
            topic.topic_id = uuid::Uuid::from_bytes(meta.map_or([0; 16], |meta| meta.id));
            for p in &asked.partitions {
                let code = match meta {
                    _ if !allowed => ErrorCode::TopicAuthorizationFailed,
                    Some(meta) if (0..meta.partitions).contains(&p.partition_index) => {
                        if p.start_offset < 0 {
                            ErrorCode::InvalidRequest
                        } else {
                            let tp = TopicPartition::new(meta.name.clone(), p.partition_index);
                            offsets.push((tp, p.start_offset));
                            ErrorCode::None
                        }
                    }
                    _ => ErrorCode::UnknownTopicOrPartition,
                };
                let mut partition = AlterShareGroupOffsetsResponsePartition::default();
                partition.partition_index = p.partition_index;
                partition.error_code = code.code();
                topic.partitions.push(partition);
            }
            response.responses.push(topic);
        }
    }
    let alter = GroupRequest::ShareAlterOffsets { group_id: group_id.clone(), offsets };
    let outcome = match call(ctx, &group_id, alter).await {
        Some(GroupResponse::ShareOffsetsAltered(outcome)) => outcome,
        _ => Err(ErrorCode::CoordinatorNotAvailable),
    };
    if let Err(code) = outcome {
        // Kafka's answer for a group-level error: the code alone, no topics.
        response.responses.clear();
        response.error_code = code.code();
        if code == ErrorCode::NonEmptyGroup {
            response.error_message = Some(str_bytes(&non_empty_message(&group_id)));
        }
    }
    ctx.reply(&response)
}
