//! TxnOffsetCommit (API 28): offsets committed inside a transaction; the transaction's
//! coordinator checks and keeps them, and they reach the group only if the transaction commits.

use bytes::Bytes;
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{TxnOffsetCommitRequest, TxnOffsetCommitResponse};

use super::txn_common::{call, fenced};
use super::{Context, Outcome};
use crate::model::{ErrorCode, LeaderEpoch, Offset, ProducerEpoch};
use crate::security::acl::Operation;
use crate::txn::coordinator::{TxnRequest, TxnResponse};
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
    let offsets_empty = offsets.is_empty();
    let commit = TxnRequest::CommitOffsets {
        transactional_id: request.transactional_id.0.to_string(),
        producer,
        group_id: request.group_id.0.to_string(),
        offsets,
    };
    let code = match (whole, offsets_empty) {
        (Some(code), _) => code,
        (None, true) if codes.iter().any(|c| *c != ErrorCode::None) => ErrorCode::None,
        (None, _) => match call(ctx, &request.transactional_id.0, commit).await {
            Some(TxnResponse::Code(code)) => fenced(code, ctx.version, 2),
            _ => ErrorCode::CoordinatorNotAvailable,
        },
    };
    if code != ErrorCode::None {
        codes.iter_mut().filter(|c| **c == ErrorCode::None).for_each(|c| *c = code);
    }
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
