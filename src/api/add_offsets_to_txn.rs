//! AddOffsetsToTxn (API 25): adds a consumer group to a producer's transaction, so that the
//! offsets TxnOffsetCommit sends for it are committed or dropped with the transaction.

use bytes::Bytes;
use kafka_protocol::messages::{AddOffsetsToTxnRequest, AddOffsetsToTxnResponse};

use super::txn_common::{call, fenced};
use super::{Context, Outcome};
use crate::constants::GROUP_ID_LENGTH_MAX;
use crate::model::{ErrorCode, ProducerEpoch};
use crate::security::acl::Operation;
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
    let txn = TxnRequest::Add {
        transactional_id: request.transactional_id.0.to_string(),
        producer,
        partitions: Vec::new(),
        groups: vec![request.group_id.0.to_string()],
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
