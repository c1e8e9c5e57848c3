//! AddOffsetsToTxn (API 25): adds a consumer group to a producer's transaction, so that the
//! offsets TxnOffsetCommit sends for it are committed or dropped with the transaction
//! (clustered: the group's partition of `__consumer_offsets`, as Kafka adds it).

use bytes::Bytes;
use kafka_protocol::messages::{AddOffsetsToTxnRequest, AddOffsetsToTxnResponse};

use super::txn_common::{call, fenced};
use super::{Context, Outcome};
use crate::constants::{CLUSTER_INTERNAL_TOPIC_PARTITIONS, GROUP_ID_LENGTH_MAX};
use crate::model::{ErrorCode, ProducerEpoch};
use crate::security::acl::Operation;
use crate::shard::internal_log::OFFSETS_TOPIC;
use crate::shard::table::coordinator_partition;
use crate::txn::coordinator::{TxnRequest, TxnResponse};
use crate::txn::state::Producer;

pub async fn handle(ctx: &Context, body: Bytes) -> Outcome {
    let request: AddOffsetsToTxnRequest = match ctx.decode(body) {
        Ok(r) => r,
        Err(close) => return close,
    };
    let producer = Producer {
        producer_id: request.producer_id.into(),
        producer_epoch: ProducerEpoch(request.producer_epoch),
    };
    // Clustered, as in Kafka: the group's partition of `__consumer_offsets` joins the
    // transaction, and its marker (written there by the group's coordinator) settles the
    // offsets TxnOffsetCommit gave that coordinator. A single node keeps the group in the
    // transaction, and the transaction's coordinator hands the offsets over at its end.
    let group_id = request.group_id.0.to_string();
    let (partitions, groups) = if ctx.cluster().clustered() {
        let partition = coordinator_partition(&group_id, CLUSTER_INTERNAL_TOPIC_PARTITIONS);
        (vec![(OFFSETS_TOPIC.to_string(), partition as i32)], Vec::new())
    } else {
        (Vec::new(), vec![group_id])
    };
    let txn = TxnRequest::Add {
        transactional_id: request.transactional_id.0.to_string(),
        producer,
        partitions,
        groups,
    };
    let mut response = AddOffsetsToTxnResponse::default();
    // Kafka: WRITE on the transactional id, then READ on the group.
    if !ctx.txn_allowed(&request.transactional_id.0) {
        response.error_code = ErrorCode::TransactionalIdAuthorizationFailed.code();
        return ctx.reply(&response);
    }
    if !ctx.group_allowed(Operation::Read, &request.group_id.0) {
        response.error_code = ErrorCode::GroupAuthorizationFailed.code();
        return ctx.reply(&response);
    }
    if request.group_id.0.len() > GROUP_ID_LENGTH_MAX {
        response.error_code = ErrorCode::InvalidGroupId.code();
        return ctx.reply(&response);
    }
    let code = match call(ctx, &request.transactional_id.0, txn).await {
        Some(TxnResponse::Code(code)) => fenced(code, ctx.version, 2),
        _ => ErrorCode::CoordinatorNotAvailable,
    };
    response.error_code = code.code();
    ctx.reply(&response)
}
