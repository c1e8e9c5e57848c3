//! Transactions (transaction version 1): InitProducerId with a transactional id,
//! AddPartitionsToTxn, AddOffsetsToTxn, TxnOffsetCommit, EndTxn, and for operators
//! DescribeTransactions, ListTransactions and DescribeProducers.
//!
//! Each request goes to the shard that owns its transactional id (`txn::coordinator`), one
//! mesh message per transaction; TxnOffsetCommit is checked there and then held by the
//! group's coordinator until the transaction ends. DescribeProducers asks each partition's
//! owner. PRODUCER_FENCED becomes INVALID_PRODUCER_EPOCH for request versions older than
//! the one that introduced it, as Kafka answers.

use std::collections::BTreeMap;

use bytes::Bytes;
use futures::future::join_all;
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::describe_producers_response::{
    PartitionResponse, ProducerState, TopicResponse,
};
use kafka_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use kafka_protocol::messages::{
    describe_transactions_response, list_transactions_response, AddOffsetsToTxnRequest,
    AddOffsetsToTxnResponse, AddPartitionsToTxnRequest, AddPartitionsToTxnResponse,
    DescribeProducersRequest, DescribeProducersResponse, DescribeTransactionsRequest,
    DescribeTransactionsResponse, EndTxnRequest, EndTxnResponse, ListTransactionsRequest,
    ListTransactionsResponse, ProducerId, TopicName, TransactionalId, TxnOffsetCommitRequest,
    TxnOffsetCommitResponse,
};

use super::{str_bytes, Context, Outcome};
use crate::constants::GROUP_ID_LENGTH_MAX;
use crate::model::{ShardId, TopicPartition};
use crate::partition::{self, PartitionRequest};
use crate::protocol::errors;
use crate::txn::coordinator::{TxnRequest, TxnResponse};
use crate::txn::state::{Producer, TxnOffset};

/// Topics and their partition indexes, as a request names them.
type TopicPartitions = Vec<(TopicName, Vec<i32>)>;

/// InitProducerId for a transactional producer: the id, epoch, or the error code.
pub async fn init_producer_id(
    ctx: &Context,
    transactional_id: &str,
    timeout_ms: i32,
    producer: Producer,
) -> Result<Producer, i16> {
    let request =
        TxnRequest::Init { transactional_id: transactional_id.to_string(), timeout_ms, producer };
    match call(ctx, transactional_id, request).await {
        Some(TxnResponse::Init(result)) => result.map_err(|code| fenced(code, ctx.version, 4)),
        _ => Err(errors::COORDINATOR_NOT_AVAILABLE),
    }
}

pub async fn add_partitions(ctx: &Context, body: Bytes) -> Outcome {
    let request: AddPartitionsToTxnRequest = match ctx.decode(body) {
        Ok(r) => r,
        Err(close) => return close,
    };
    // v0-3 carry one transaction at top level; v4+ (brokers) a list of them.
    let transactions: Vec<(TransactionalId, Producer, TopicPartitions)> = if ctx.version <= 3 {
        let topics = request
            .v3_and_below_topics
            .iter()
            .map(|t| (t.name.clone(), t.partitions.clone()))
            .collect();
        let producer = Producer {
            producer_id: request.v3_and_below_producer_id.0,
            producer_epoch: request.v3_and_below_producer_epoch,
        };
        vec![(request.v3_and_below_transactional_id.clone(), producer, topics)]
    } else {
        request
            .transactions
            .iter()
            .map(|t| {
                let topics =
                    t.topics.iter().map(|t| (t.name.clone(), t.partitions.clone())).collect();
                let producer =
                    Producer { producer_id: t.producer_id.0, producer_epoch: t.producer_epoch };
                (t.transactional_id.clone(), producer, topics)
            })
            .collect()
    };
    let answers = transactions.iter().map(|(id, producer, topics)| async move {
        let code = add_one(ctx, id, *producer, topics).await;
        let mut result = AddPartitionsToTxnResult::default();
        result.transactional_id = id.clone();
        for (name, partitions) in topics {
            let mut topic = AddPartitionsToTxnTopicResult::default();
            topic.name = name.clone();
            for partition in partitions {
                let mut p = AddPartitionsToTxnPartitionResult::default();
                p.partition_index = *partition;
                p.partition_error_code = code(&name.0, *partition);
                topic.results_by_partition.push(p);
            }
            result.topic_results.push(topic);
        }
        result
    });
    let mut results = join_all(answers).await;
    let mut response = AddPartitionsToTxnResponse::default();
    if ctx.version <= 3 {
        response.results_by_transaction = Vec::new();
        if let Some(result) = results.pop() {
            // v0-3 put the one transaction's topics at top level (the codec's field for it).
            response.results_by_topic_v3_and_below = result.topic_results;
        }
    } else {
        response.results_by_transaction = results;
    }
    ctx.reply(&response)
}

/// One transaction of AddPartitionsToTxn: a code per partition (unknown partitions get
/// UNKNOWN_TOPIC_OR_PARTITION and the others OPERATION_NOT_ATTEMPTED, as in Kafka).
async fn add_one(
    ctx: &Context,
    id: &TransactionalId,
    producer: Producer,
    topics: &[(TopicName, Vec<i32>)],
) -> impl Fn(&str, i32) -> i16 {
    let mut unknown: Vec<(String, i32)> = Vec::new();
    let mut partitions: Vec<(String, i32)> = Vec::new();
    {
        let catalog = ctx.shard().catalog.borrow();
        for (name, indexes) in topics {
            let meta = catalog.get(&name.0);
            for partition in indexes {
                let known = meta.is_some_and(|m| (0..m.partitions).contains(partition));
                let entry = (name.0.to_string(), *partition);
                if known {
                    partitions.push(entry);
                } else {
                    unknown.push(entry);
                }
            }
        }
    }
    let code = if !unknown.is_empty() {
        errors::OPERATION_NOT_ATTEMPTED
    } else {
        let request = TxnRequest::Add {
            transactional_id: id.0.to_string(),
            producer,
            partitions,
            groups: Vec::new(),
        };
        match call(ctx, &id.0, request).await {
            Some(TxnResponse::Code(code)) => fenced(code, ctx.version, 2),
            _ => errors::COORDINATOR_NOT_AVAILABLE,
        }
    };
    move |topic: &str, partition: i32| {
        if unknown.iter().any(|(t, p)| t == topic && *p == partition) {
            errors::UNKNOWN_TOPIC_OR_PARTITION
        } else {
            code
        }
    }
}

pub async fn add_offsets(ctx: &Context, body: Bytes) -> Outcome {
    let request: AddOffsetsToTxnRequest = match ctx.decode(body) {
        Ok(r) => r,
        Err(close) => return close,
    };
    let producer =
        Producer { producer_id: request.producer_id.0, producer_epoch: request.producer_epoch };
    let txn = TxnRequest::Add {
        transactional_id: request.transactional_id.0.to_string(),
        producer,
        partitions: Vec::new(),
        groups: vec![request.group_id.0.to_string()],
    };
    let mut response = AddOffsetsToTxnResponse::default();
    if request.group_id.0.len() > GROUP_ID_LENGTH_MAX {
        response.error_code = errors::INVALID_GROUP_ID;
        return ctx.reply(&response);
    }
    response.error_code = match call(ctx, &request.transactional_id.0, txn).await {
        Some(TxnResponse::Code(code)) => fenced(code, ctx.version, 2),
        _ => errors::COORDINATOR_NOT_AVAILABLE,
    };
    ctx.reply(&response)
}

pub async fn txn_offset_commit(ctx: &Context, body: Bytes) -> Outcome {
    let request: TxnOffsetCommitRequest = match ctx.decode(body) {
        Ok(r) => r,
        Err(close) => return close,
    };
    let producer =
        Producer { producer_id: request.producer_id.0, producer_epoch: request.producer_epoch };
    let metadata_max = ctx.groups().config().offset_metadata_bytes_max;
    let mut codes = Vec::new();
    let mut offsets = Vec::new();
    for topic in &request.topics {
        for p in &topic.partitions {
            let metadata = p.committed_metadata.as_ref().map(|m| m.to_string()).unwrap_or_default();
            if metadata.len() > metadata_max {
                codes.push(errors::OFFSET_METADATA_TOO_LARGE);
                continue;
            }
            codes.push(errors::NONE);
            let offset = TxnOffset {
                offset: p.committed_offset,
                leader_epoch: p.committed_leader_epoch,
                metadata,
            };
            offsets.push((topic.name.0.to_string(), p.partition_index, offset));
        }
    }
    let commit = TxnRequest::CommitOffsets {
        transactional_id: request.transactional_id.0.to_string(),
        producer,
        group_id: request.group_id.0.to_string(),
        offsets,
    };
    let code = match call(ctx, &request.transactional_id.0, commit).await {
        Some(TxnResponse::Code(code)) => fenced(code, ctx.version, 2),
        _ => errors::COORDINATOR_NOT_AVAILABLE,
    };
    if code != errors::NONE {
        codes.iter_mut().filter(|c| **c == errors::NONE).for_each(|c| *c = code);
    }
    let mut response = TxnOffsetCommitResponse::default();
    let mut codes = codes.into_iter();
    for topic in &request.topics {
        let mut t = TxnOffsetCommitResponseTopic::default();
        t.name = topic.name.clone();
        for p in &topic.partitions {
            let mut answer = TxnOffsetCommitResponsePartition::default();
            answer.partition_index = p.partition_index;
            answer.error_code = codes.next().unwrap_or(errors::UNKNOWN_SERVER_ERROR);
            t.partitions.push(answer);
        }
        response.topics.push(t);
    }
    ctx.reply(&response)
}

pub async fn end_txn(ctx: &Context, body: Bytes) -> Outcome {
    let request: EndTxnRequest = match ctx.decode(body) {
        Ok(r) => r,
        Err(close) => return close,
    };
    let producer =
        Producer { producer_id: request.producer_id.0, producer_epoch: request.producer_epoch };
    let txn = TxnRequest::End {
        transactional_id: request.transactional_id.0.to_string(),
        producer,
        commit: request.committed,
    };
    let mut response = EndTxnResponse::default();
    response.error_code = match call(ctx, &request.transactional_id.0, txn).await {
        Some(TxnResponse::Code(code)) => fenced(code, ctx.version, 2),
        _ => errors::COORDINATOR_NOT_AVAILABLE,
    };
    // v5 (transaction version 2) answers the next epoch; not used at version 1.
    response.producer_id = ProducerId(-1);
    response.producer_epoch = -1;
    ctx.reply(&response)
}

pub async fn describe_transactions(ctx: &Context, body: Bytes) -> Outcome {
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
        match found.get(&*id.0).cloned().flatten() {
            None => {
                state.error_code = errors::TRANSACTIONAL_ID_NOT_FOUND;
                state.producer_id = ProducerId(-1);
                state.producer_epoch = -1;
                state.transaction_start_time_ms = -1;
                state.transaction_state = str_bytes("");
            }
            Some(meta) => {
                state.transaction_state = str_bytes(meta.state.name());
                state.transaction_timeout_ms = meta.timeout_ms;
                state.transaction_start_time_ms = meta.start_ms;
                state.producer_id = ProducerId(meta.producer_id);
                state.producer_epoch = meta.producer_epoch;
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

pub async fn list_transactions(ctx: &Context, body: Bytes) -> Outcome {
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
                || request.producer_id_filters.iter().any(|p| p.0 == meta.producer_id);
            // v1: only transactions running longer than the duration filter.
            let by_duration = request.duration_filter < 0
                || (meta.start_ms >= 0 && now - meta.start_ms >= request.duration_filter);
            if by_state && by_producer && by_duration {
                let mut state = list_transactions_response::TransactionState::default();
                state.transactional_id = TransactionalId(str_bytes(&meta.transactional_id));
                state.producer_id = ProducerId(meta.producer_id);
                state.transaction_state = str_bytes(meta.state.name());
                response.transaction_states.push(state);
            }
        }
    }
    ctx.reply(&response)
}

pub async fn describe_producers(ctx: &Context, body: Bytes) -> Outcome {
    let request: DescribeProducersRequest = match ctx.decode(body) {
        Ok(r) => r,
        Err(close) => return close,
    };
    let mut by_shard: BTreeMap<ShardId, Vec<TopicPartition>> = BTreeMap::new();
    for topic in &request.topics {
        for partition in &topic.partition_indexes {
            let tp = TopicPartition::new(topic.name.0.as_str().into(), *partition);
            by_shard.entry(ctx.shard().owner(&tp)).or_default().push(tp);
        }
    }
    let calls = by_shard.into_iter().map(|(owner, partitions)| {
        ctx.partitions().call(owner, PartitionRequest::DescribeProducers { partitions })
    });
    let mut found = BTreeMap::new();
    for answer in join_all(calls).await {
        if let Some(partition::PartitionResponse::Producers(list)) = answer {
            found.extend(list);
        }
    }
    let mut response = DescribeProducersResponse::default();
    for topic in &request.topics {
        let mut t = TopicResponse::default();
        t.name = topic.name.clone();
        for partition in &topic.partition_indexes {
            let tp = TopicPartition::new(topic.name.0.as_str().into(), *partition);
            let mut p = PartitionResponse::default();
            p.partition_index = *partition;
            match found.remove(&tp) {
                Some(Ok(producers)) => {
                    for info in producers {
                        let mut state = ProducerState::default();
                        state.producer_id = ProducerId(info.producer_id);
                        state.producer_epoch = i32::from(info.producer_epoch);
                        state.last_sequence = info.last_sequence;
                        state.last_timestamp = info.last_timestamp;
                        state.coordinator_epoch = -1;
                        state.current_txn_start_offset = info.current_txn_start_offset;
                        p.active_producers.push(state);
                    }
                }
                Some(Err(code)) => p.error_code = code,
                None => p.error_code = errors::UNKNOWN_TOPIC_OR_PARTITION,
            }
            t.partitions.push(p);
        }
        response.topics.push(t);
    }
    ctx.reply(&response)
}

async fn call(ctx: &Context, transactional_id: &str, request: TxnRequest) -> Option<TxnResponse> {
    let owner = ctx.txns().owner(transactional_id);
    ctx.txns().call(owner, request).await
}

/// PRODUCER_FENCED is new in the request version `since`; older ones get
/// INVALID_PRODUCER_EPOCH, as Kafka answers them.
fn fenced(code: i16, version: i16, since: i16) -> i16 {
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
