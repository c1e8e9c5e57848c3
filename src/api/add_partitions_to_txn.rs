//! AddPartitionsToTxn (API 24): adds partitions to a producer's transaction at the coordinator
//! of its transactional id; v0-3 carry one transaction, v4+ (sent by brokers) a batch. A
//! partition that does not exist fails its transaction's others, as in Kafka.

use bytes::Bytes;
use futures::future::join_all;
use kafka_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResult, AddPartitionsToTxnTopicResult,
};
use kafka_protocol::messages::{
    AddPartitionsToTxnRequest, AddPartitionsToTxnResponse, TopicName, TransactionalId,
};

use super::txn_common::{call, fenced};
use super::{Context, Outcome};
use crate::model::{ErrorCode, ProducerEpoch};
use crate::security::acl::Operation;
use crate::txn::coordinator::{TxnRequest, TxnResponse};
use crate::txn::state::Producer;

/// Topics and their partition indexes, as a request names them.
type TopicPartitions = Vec<(TopicName, Vec<i32>)>;

pub async fn handle(ctx: &Context, body: Bytes) -> Outcome {
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
            producer_id: request.v3_and_below_producer_id.into(),
            producer_epoch: ProducerEpoch(request.v3_and_below_producer_epoch),
        };
        vec![(request.v3_and_below_transactional_id.clone(), producer, topics)]
    } else {
        request
            .transactions
            .iter()
            .map(|t| {
                let topics =
                    t.topics.iter().map(|t| (t.name.clone(), t.partitions.clone())).collect();
                let producer = Producer {
                    producer_id: t.producer_id.into(),
                    producer_epoch: ProducerEpoch(t.producer_epoch),
                };
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
                p.partition_error_code = code(&name.0, *partition).code();
                topic.results_by_partition.push(p);
            }
            result.topic_results.push(topic);
        }
        result
    });
    let mut response = AddPartitionsToTxnResponse::default();
    // v4+ comes from brokers, which need CLUSTER_ACTION (Kafka's check).
    if ctx.version >= 4 && !ctx.cluster_allowed(Operation::ClusterAction) {
        response.error_code = ErrorCode::ClusterAuthorizationFailed.code();
        return ctx.reply(&response);
    }
    let mut results = join_all(answers).await;
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

/// One transaction of AddPartitionsToTxn: a code per partition, as in Kafka: every partition
/// TRANSACTIONAL_ID_AUTHORIZATION_FAILED without WRITE on the transactional id; else the
/// partitions of topics without WRITE TOPIC_AUTHORIZATION_FAILED, unknown partitions
/// UNKNOWN_TOPIC_OR_PARTITION, and when there is either, the others OPERATION_NOT_ATTEMPTED.
async fn add_one(
    ctx: &Context,
    id: &TransactionalId,
    producer: Producer,
    topics: &[(TopicName, Vec<i32>)],
) -> impl Fn(&str, i32) -> ErrorCode {
    let txn_allowed = ctx.txn_allowed(&id.0);
    let mut unknown: Vec<(String, i32)> = Vec::new();
    let mut denied: Vec<(String, i32)> = Vec::new();
    let mut partitions: Vec<(String, i32)> = Vec::new();
    {
        let catalog = ctx.shard().catalog.borrow();
        for (name, indexes) in topics {
            let meta = catalog.get(&name.0);
            let topic_allowed = ctx.topic_allowed(Operation::Write, &name.0);
            for partition in indexes {
                let known = meta.is_some_and(|m| (0..m.partitions).contains(partition));
                let entry = (name.0.to_string(), *partition);
                if !topic_allowed {
                    denied.push(entry);
                } else if known {
                    partitions.push(entry);
                } else {
                    unknown.push(entry);
                }
            }
        }
    }
    let code = if !txn_allowed {
        ErrorCode::TransactionalIdAuthorizationFailed
    } else if !unknown.is_empty() || !denied.is_empty() {
        ErrorCode::OperationNotAttempted
    } else {
        let request = TxnRequest::Add {
            transactional_id: id.0.to_string(),
            producer,
            partitions,
            groups: Vec::new(),
        };
        match call(ctx, &id.0, request).await {
            Some(TxnResponse::Code(code)) => fenced(code, ctx.version, 2),
            _ => ErrorCode::CoordinatorNotAvailable,
        }
    };
    move |topic: &str, partition: i32| {
        if !txn_allowed {
            code
        } else if denied.iter().any(|(t, p)| t == topic && *p == partition) {
            ErrorCode::TopicAuthorizationFailed
        } else if unknown.iter().any(|(t, p)| t == topic && *p == partition) {
            ErrorCode::UnknownTopicOrPartition
        } else {
            code
        }
    }
}
