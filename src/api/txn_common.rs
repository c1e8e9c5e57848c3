//! What the transaction handlers share (transaction version 1). Each request of
//! AddPartitionsToTxn, AddOffsetsToTxn, TxnOffsetCommit, EndTxn, DescribeTransactions,
//! ListTransactions and of InitProducerId with a transactional id goes to the shard that owns
//! its transactional id (`txn::coordinator`), one mesh message per transaction; on a single
//! node the coordinator keeps TxnOffsetCommit's offsets with the transaction and hands them to
//! each group's coordinator when it commits (clustered, TxnOffsetCommit goes to the group's
//! coordinator instead, as in Kafka). DescribeProducers asks each partition's owner.
//! PRODUCER_FENCED becomes INVALID_PRODUCER_EPOCH for request versions older than the one that
//! introduced it, as Kafka answers.

use super::group_common::coordinated_here;
use super::Context;
use crate::model::ErrorCode;
use crate::shard::internal_log::TRANSACTION_TOPIC;
use crate::txn::coordinator::{TxnRequest, TxnResponse};

/// Sends `request` to the coordinator of the shard that owns `transactional_id`. In a
/// cluster, a transactional id another node coordinates is answered NOT_COORDINATOR here
/// (COORDINATOR_NOT_AVAILABLE before the coordinators are placed).
pub(super) async fn call(
    ctx: &Context,
    transactional_id: &str,
    request: TxnRequest,
) -> Option<TxnResponse> {
    if let Err(code) = coordinated_here(ctx, TRANSACTION_TOPIC, transactional_id) {
        return Some(match request {
            TxnRequest::Init { .. } => TxnResponse::Init(Err(code)),
            _ => TxnResponse::Code(code),
        });
    }
    let owner = ctx.txns().owner(transactional_id);
    ctx.txns().call(owner, request).await
}

/// PRODUCER_FENCED is new in the request version `since`; older ones get
/// INVALID_PRODUCER_EPOCH, as Kafka answers them.
pub(super) fn fenced(code: ErrorCode, version: i16, since: i16) -> ErrorCode {
    if code == ErrorCode::ProducerFenced && version < since {
        ErrorCode::InvalidProducerEpoch
    } else {
        code
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn producer_fenced_is_only_sent_to_versions_that_know_it() {
        assert_eq!(fenced(ErrorCode::ProducerFenced, 1, 2), ErrorCode::InvalidProducerEpoch);
        assert_eq!(fenced(ErrorCode::ProducerFenced, 2, 2), ErrorCode::ProducerFenced);
        assert_eq!(fenced(ErrorCode::ProducerFenced, 3, 4), ErrorCode::InvalidProducerEpoch);
        assert_eq!(fenced(ErrorCode::None, 0, 2), ErrorCode::None);
    }
}
