//! What the transaction handlers share (transaction version 1). Each request of
//! AddPartitionsToTxn, AddOffsetsToTxn, TxnOffsetCommit, EndTxn, DescribeTransactions,
//! ListTransactions and of InitProducerId with a transactional id goes to the shard that owns
//! its transactional id (`txn::coordinator`), one mesh message per transaction; the coordinator
//! keeps TxnOffsetCommit's offsets with the transaction and hands them to each group's
//! coordinator when it commits. DescribeProducers asks each partition's owner.
//! PRODUCER_FENCED becomes INVALID_PRODUCER_EPOCH for request versions older than the one that
//! introduced it, as Kafka answers.

use super::Context;
use crate::protocol::errors;
use crate::txn::coordinator::{TxnRequest, TxnResponse};

/// Sends `request` to the coordinator of the shard that owns `transactional_id`.
pub(super) async fn call(
    ctx: &Context,
    transactional_id: &str,
    request: TxnRequest,
) -> Option<TxnResponse> {
    let owner = ctx.txns().owner(transactional_id);
    ctx.txns().call(owner, request).await
}

/// PRODUCER_FENCED is new in the request version `since`; older ones get
/// INVALID_PRODUCER_EPOCH, as Kafka answers them.
pub(super) fn fenced(code: i16, version: i16, since: i16) -> i16 {
    if code == errors::PRODUCER_FENCED && version < since {
        errors::INVALID_PRODUCER_EPOCH
    } else {
        code
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn producer_fenced_is_only_sent_to_versions_that_know_it() {
        assert_eq!(fenced(errors::PRODUCER_FENCED, 1, 2), errors::INVALID_PRODUCER_EPOCH);
        assert_eq!(fenced(errors::PRODUCER_FENCED, 2, 2), errors::PRODUCER_FENCED);
        assert_eq!(fenced(errors::PRODUCER_FENCED, 3, 4), errors::INVALID_PRODUCER_EPOCH);
        assert_eq!(fenced(errors::NONE, 0, 2), errors::NONE);
    }
}
