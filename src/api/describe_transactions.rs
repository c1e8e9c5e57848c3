//! DescribeTransactions (API 65): each transactional id's state, timeout, start time, producer
//! and partitions, from the shards that own them; an unknown id is TRANSACTIONAL_ID_NOT_FOUND.

use std::collections::BTreeMap;

use bytes::Bytes;
use futures::future::join_all;
use kafka_protocol::messages::{
    describe_transactions_response, DescribeTransactionsRequest, DescribeTransactionsResponse,
    ProducerId, TopicName,
};

use super::{str_bytes, Context, Outcome};
use crate::model::{ErrorCode, ShardId};
use crate::security::acl::{Operation, ResourceType};
use crate::txn::coordinator::{TxnRequest, TxnResponse};

pub async fn handle(ctx: &Context, body: Bytes) -> Outcome {
    let request: DescribeTransactionsRequest = match ctx.decode(body) {
        Ok(r) => r,
        Err(close) => return close,
    };
    let mut by_shard: BTreeMap<ShardId, Vec<String>> = BTreeMap::new();
    for id in &request.transactional_ids {
        let owner = ctx.txns().owner(&id.0);
        by_shard.entry(owner).or_default().push(id.0.to_string());
    }
    let calls = by_shard.into_iter().map(|(owner, transactional_ids)| {
        ctx.txns().call(owner, TxnRequest::Describe { transactional_ids })
    });
    let mut found = BTreeMap::new();
    for answer in join_all(calls).await {
        if let Some(TxnResponse::Described(list)) = answer {
            found.extend(list);
        }
    }
    let mut response = DescribeTransactionsResponse::default();
    for id in &request.transactional_ids {
        let mut state = describe_transactions_response::TransactionState::default();
        state.transactional_id = id.clone();
        let txn_kind = ResourceType::TransactionalId;
        if !ctx.allowed(Operation::Describe, txn_kind, &id.0) {
            state.error_code = ErrorCode::TransactionalIdAuthorizationFailed.code();
            state.producer_id = ProducerId(-1);
            state.producer_epoch = -1;
            state.transaction_start_time_ms = -1;
            state.transaction_state = str_bytes("");
            response.transaction_states.push(state);
            continue;
        }
        match found.get(&*id.0).cloned().flatten() {
            None => {
                state.error_code = ErrorCode::TransactionalIdNotFound.code();
                state.producer_id = ProducerId(-1);
                state.producer_epoch = -1;
                state.transaction_start_time_ms = -1;
                state.transaction_state = str_bytes("");
            }
            Some(meta) => {
                state.transaction_state = str_bytes(meta.state.name());
                state.transaction_timeout_ms = meta.timeout_ms;
                state.transaction_start_time_ms = meta.start_ms;
                state.producer_id = meta.producer_id.into();
                state.producer_epoch = meta.producer_epoch.0;
                let mut topics: BTreeMap<String, Vec<i32>> = BTreeMap::new();
                for (topic, partition) in &meta.partitions {
                    topics.entry(topic.clone()).or_default().push(*partition);
                }
                for (topic, partitions) in topics {
                    let mut data = describe_transactions_response::TopicData::default();
                    data.topic = TopicName(str_bytes(&topic));
                    data.partitions = partitions;
                    state.topics.push(data);
                }
            }
        }
        response.transaction_states.push(state);
    }
    ctx.reply(&response)
}
