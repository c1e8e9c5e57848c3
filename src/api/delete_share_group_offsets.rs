//! DeleteShareGroupOffsets (API 92, KIP-932): removes the share state of whole topics of a
//! share group without members, what `kafka-share-groups.sh --delete-offsets` and the Admin
//! client's `deleteShareGroupOffsets` do: the next member to fetch such a partition starts
//! it by the group's `share.auto.offset.reset`, as a partition never consumed. The removal
//! is written before the answer. Kafka's errors: a group that is not a share group (or none)
//! GROUP_ID_NOT_FOUND, one with members NON_EMPTY_GROUP; per topic, one the catalog does not
//! know UNKNOWN_TOPIC_OR_PARTITION, one the group has no state for the same code with
//! "There is no offset information to delete.". Authorization as Kafka's: DELETE on the
//! group, READ on each topic (TOPIC_AUTHORIZATION_FAILED).

use bytes::Bytes;
use kafka_protocol::messages::delete_share_group_offsets_response as wire;
use kafka_protocol::messages::{
    DeleteShareGroupOffsetsRequest, DeleteShareGroupOffsetsResponse, TopicName,
};

use super::group_common::call;
use super::share_common::{check_offsets_admin, non_empty_message};
use super::{str_bytes, Context, Outcome};
use crate::group::coordinator::{GroupRequest, GroupResponse};
use crate::model::ErrorCode;
use crate::security::acl::Operation;

/// Kafka's message for a topic the group holds no share state for.
const NO_OFFSETS: &str = "There is no offset information to delete.";

pub async fn handle(ctx: &Context, body: Bytes) -> Outcome {
    let request: DeleteShareGroupOffsetsRequest = match ctx.decode(body) {
        Ok(r) => r,
        Err(close) => return close,
    };
    let group_id = request.group_id.0.to_string();
    let mut response = DeleteShareGroupOffsetsResponse::default();
    if let Err(code) = check_offsets_admin(ctx, &group_id, Operation::Delete) {
        response.error_code = code.code();
        return ctx.reply(&response);
    }
    // Topics refused here (not allowed, unknown) answer at once; the others go to the
    // coordinator. Each answer carries the topic's id.
    let mut refused: Vec<(String, ErrorCode)> = Vec::new();
    let mut asked: Vec<String> = Vec::new();
    let ids = {
        let catalog = ctx.shard().catalog.borrow();
        let mut ids = std::collections::BTreeMap::new();
        for topic in &request.topics {
            let name = topic.topic_name.0.to_string();
            let meta = catalog.get(&name).filter(|meta| !meta.is_internal());
            if !ctx.topic_allowed(Operation::Read, &name) {
                refused.push((name, ErrorCode::TopicAuthorizationFailed));
            } else if let Some(meta) = meta {
                ids.insert(name.clone(), meta.id);
                asked.push(name);
            } else {
                refused.push((name, ErrorCode::UnknownTopicOrPartition));
            }
        }
        ids
    };
    let delete = GroupRequest::ShareDeleteOffsets { group_id: group_id.clone(), topics: asked };
    let outcome = match call(ctx, &group_id, delete).await {
        Some(GroupResponse::ShareOffsetsDeleted(outcome)) => outcome,
        _ => Err(ErrorCode::CoordinatorNotAvailable),
    };
    match outcome {
        Err(code) => {
            response.error_code = code.code();
            let message = match code {
                ErrorCode::NonEmptyGroup => Some(non_empty_message(&group_id)),
                ErrorCode::GroupIdNotFound => Some(format!("Group {group_id} not found.")),
                _ => None,
            };
            response.error_message = message.as_deref().map(str_bytes);
        }
        Ok(deleted) => {
            let no_state = |(name, code): (String, ErrorCode)| {
                let message = (code == ErrorCode::UnknownTopicOrPartition).then_some(NO_OFFSETS);
                (name, code, message)
            };
            let refused = refused.into_iter().map(|(name, code)| (name, code, None));
            for (name, code, message) in deleted.into_iter().map(no_state).chain(refused) {
                let mut topic = wire::DeleteShareGroupOffsetsResponseTopic::default();
                topic.topic_name = TopicName(str_bytes(&name));
                topic.topic_id = uuid::Uuid::from_bytes(ids.get(&name).copied().unwrap_or([0; 16]));
                topic.error_code = code.code();
                topic.error_message = message.map(str_bytes);
                response.responses.push(topic);
            }
        }
    }
    ctx.reply(&response)
}
