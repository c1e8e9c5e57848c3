//! TxnOffsetCommit (API 28): offsets committed inside a transaction, which reach the group
//! only if the transaction commits. The group's coordinator checks them, as in Kafka: it
//! writes them to the group's partition of `__consumer_offsets` (a single node: its shard's
//! offsets log) in a transactional batch, and the transaction's marker there settles them.

use bytes::Bytes;
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{TxnOffsetCommitRequest, TxnOffsetCommitResponse};

use super::group_common::{call as group_call, coordinated_here};
use super::{Context, Outcome};
use crate::constants::GROUP_ID_LENGTH_MAX;
use crate::group::coordinator::{GroupRequest, GroupResponse, OFFSETS_TOPIC};
use crate::group::state::TxnCommitRequest;
use crate::model::{ErrorCode, LeaderEpoch, Offset, ProducerEpoch};
use crate::security::acl::Operation;
use crate::txn::state::{Producer, TxnOffset};

pub async fn handle(ctx: &Context, body: Bytes) -> Outcome {
    let request: TxnOffsetCommitRequest = match ctx.decode(body) {
        Ok(r) => r,
        Err(close) => return close,
    };
    let producer = Producer {
        producer_id: request.producer_id.into(),
        producer_epoch: ProducerEpoch(request.producer_epoch),
    };
    let metadata_max = ctx.groups().config().offset_metadata_bytes_max;
    // Kafka: WRITE on the transactional id, then READ on the group, fail every partition;
    // READ on a topic fails its partitions.
    let whole = if !ctx.txn_allowed(&request.transactional_id.0) {
        Some(ErrorCode::TransactionalIdAuthorizationFailed)
    } else if !ctx.group_allowed(Operation::Read, &request.group_id.0) {
        Some(ErrorCode::GroupAuthorizationFailed)
    } else {
        None
    };
    let mut codes = Vec::new();
    let mut offsets = Vec::new();
    for topic in &request.topics {
        let topic_allowed = ctx.topic_allowed(Operation::Read, &topic.name.0);
        for p in &topic.partitions {
            if let Some(code) = whole {
                codes.push(code);
                continue;
            }
            if !topic_allowed {
                codes.push(ErrorCode::TopicAuthorizationFailed);
                continue;
            }
            let metadata = p.committed_metadata.as_ref().map(|m| m.to_string()).unwrap_or_default();
            if metadata.len() > metadata_max {
                codes.push(ErrorCode::OffsetMetadataTooLarge);
                continue;
            }
            codes.push(ErrorCode::None);
            let offset = TxnOffset {
                offset: Offset(p.committed_offset),
                leader_epoch: LeaderEpoch(p.committed_leader_epoch),
                metadata,
            };
            offsets.push((topic.name.0.to_string(), p.partition_index, offset));
        }
    }
    let codes = commit_at_group(ctx, &request, producer, whole, codes, offsets).await;
    reply(ctx, &request, codes)
}

/// Kafka's way: the group's coordinator checks the producer epoch, member and
/// generation, writes the offsets to the group's partition of `__consumer_offsets` in a
/// transactional batch and keeps them pending until the transaction's marker arrives there;
/// NOT_COORDINATOR on a node that does not coordinate the group. `codes` holds each
/// partition's code so far (NONE: its offset is in `offsets`); the answer is every
/// partition's code.
async fn commit_at_group(
    ctx: &Context,
    request: &TxnOffsetCommitRequest,
    producer: Producer,
    whole: Option<ErrorCode>,
    mut codes: Vec<ErrorCode>,
    offsets: Vec<(String, i32, TxnOffset)>,
) -> Vec<ErrorCode> {
    let group_id = request.group_id.0.to_string();
    let whole = whole.or_else(|| {
        let too_long = group_id.len() > GROUP_ID_LENGTH_MAX;
        let refused = coordinated_here(ctx, OFFSETS_TOPIC, &group_id).err();
        if too_long {
            Some(ErrorCode::InvalidGroupId)
        } else {
            refused
        }
    });
    let outcome = match whole {
        Some(code) => Err(code),
        None if offsets.is_empty() => Ok(Vec::new()),
        None => {
            let commit = TxnCommitRequest {
                group_id: group_id.clone(),
                producer_id: producer.producer_id,
                producer_epoch: producer.producer_epoch,
                generation_id: request.generation_id,
                member_id: request.member_id.to_string(),
                group_instance_id: request.group_instance_id.as_ref().map(|s| s.to_string()),
                partitions: offsets
                    .into_iter()
                    .map(|(topic, partition, o)| o.into_commit(topic, partition))
                    .collect(),
            };
            match group_call(ctx, &group_id, GroupRequest::TxnCommit(commit)).await {
                Some(GroupResponse::Commit(outcome)) => outcome,
                _ => Err(ErrorCode::CoordinatorNotAvailable),
            }
        }
    };
    let mut accepted = match &outcome {
        Ok(accepted) => accepted.clone().into_iter(),
        Err(_) => Vec::new().into_iter(),
    };
    for code in codes.iter_mut().filter(|code| **code == ErrorCode::None) {
        *code = match &outcome {
            Err(whole) => *whole,
            Ok(_) => accepted.next().unwrap_or(ErrorCode::UnknownServerError),
        };
    }
    codes
}

/// The response: each partition's code, in request order.
fn reply(ctx: &Context, request: &TxnOffsetCommitRequest, codes: Vec<ErrorCode>) -> Outcome {
    let mut response = TxnOffsetCommitResponse::default();
    let mut codes = codes.into_iter();
    for topic in &request.topics {
        let mut t = TxnOffsetCommitResponseTopic::default();
        t.name = topic.name.clone();
        for p in &topic.partitions {
            let mut answer = TxnOffsetCommitResponsePartition::default();
            answer.partition_index = p.partition_index;
            answer.error_code = codes.next().unwrap_or(ErrorCode::UnknownServerError).code();
            t.partitions.push(answer);
        }
        response.topics.push(t);
    }
    ctx.reply(&response)
}
