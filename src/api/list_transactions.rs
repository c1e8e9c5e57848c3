//! ListTransactions (API 66): every shard's transactional ids, filtered by state, producer id
//! and (v1) how long they have run; state names it does not know come back in
//! unknown_state_filters, as in Kafka.

use bytes::Bytes;
use kafka_protocol::messages::{
    list_transactions_response, ListTransactionsRequest, ListTransactionsResponse, TransactionalId,
};

use super::{str_bytes, Context, Outcome};
use crate::model::ProducerId;
use crate::security::acl::{Operation, ResourceType};
use crate::txn::coordinator::{TxnRequest, TxnResponse};

pub async fn handle(ctx: &Context, body: Bytes) -> Outcome {
    let request: ListTransactionsRequest = match ctx.decode(body) {
        Ok(r) => r,
        Err(close) => return close,
    };
    const STATES: [&str; 6] =
        ["Empty", "Ongoing", "PrepareCommit", "PrepareAbort", "CompleteCommit", "CompleteAbort"];
    let mut response = ListTransactionsResponse::default();
    let states: Vec<String> = request.state_filters.iter().map(|s| s.to_string()).collect();
    response.unknown_state_filters =
        states.iter().filter(|s| !STATES.contains(&s.as_str())).map(|s| str_bytes(s)).collect();
    let now = crate::model::now_ms();
    for answer in ctx.txns().broadcast(|| TxnRequest::List).await {
        let Some(TxnResponse::Listed(metas)) = answer else { continue };
        for meta in metas {
            let by_state = states.is_empty() || states.iter().any(|s| s == meta.state.name());
            let by_producer = request.producer_id_filters.is_empty()
                || request
                    .producer_id_filters
                    .iter()
                    .any(|p| ProducerId::from(*p) == meta.producer_id);
            // v1: only transactions running longer than the duration filter.
            let by_duration = request.duration_filter < 0
                || (meta.start_ms >= 0 && now - meta.start_ms >= request.duration_filter);
            // Kafka lists the transactional ids the principal may describe.
            let txn_kind = ResourceType::TransactionalId;
            let allowed = || ctx.allowed(Operation::Describe, txn_kind, &meta.transactional_id);
            if by_state && by_producer && by_duration && allowed() {
                let mut state = list_transactions_response::TransactionState::default();
                state.transactional_id = TransactionalId(str_bytes(&meta.transactional_id));
                state.producer_id = meta.producer_id.into();
                state.transaction_state = str_bytes(meta.state.name());
                response.transaction_states.push(state);
            }
        }
    }
    ctx.reply(&response)
}
