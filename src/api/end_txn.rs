//! EndTxn (API 26): commits or aborts a transaction; its coordinator writes Prepare*, the
//! partitions' markers and the groups' offsets, then Complete*, before answering, as Kafka's.

use bytes::Bytes;
use kafka_protocol::messages::{EndTxnRequest, EndTxnResponse, ProducerId};

use super::txn_common::{call, fenced};
use super::{Context, Outcome};
use crate::model::{ErrorCode, ProducerEpoch, TxnOutcome};
use crate::txn::coordinator::{TxnRequest, TxnResponse};
use crate::txn::state::Producer;

pub async fn handle(ctx: &Context, body: Bytes) -> Outcome {
    let request: EndTxnRequest = match ctx.decode(body) {
        Ok(r) => r,
        Err(close) => return close,
    };
    let producer = Producer {
        producer_id: request.producer_id.into(),
        producer_epoch: ProducerEpoch(request.producer_epoch),
    };
    let txn = TxnRequest::End {
        transactional_id: request.transactional_id.0.to_string(),
        producer,
        outcome: TxnOutcome::from_committed(request.committed),
    };
    let mut response = EndTxnResponse::default();
    let code = if !ctx.txn_allowed(&request.transactional_id.0) {
        ErrorCode::TransactionalIdAuthorizationFailed
    } else {
        match call(ctx, &request.transactional_id.0, txn).await {
            Some(TxnResponse::Code(code)) => fenced(code, ctx.version, 2),
            _ => ErrorCode::CoordinatorNotAvailable,
        }
    };
    response.error_code = code.code();
    // v5 (transaction version 2) answers the next epoch; not used at version 1.
    response.producer_id = ProducerId(-1);
    response.producer_epoch = -1;
    ctx.reply(&response)
}
