//! DescribeProducers (API 61): each partition's active producers (id, epoch, last sequence and
//! timestamp, open transaction's first offset), asked of the partitions' owning shards.

use std::collections::BTreeMap;

use bytes::Bytes;
use futures::future::join_all;
use kafka_protocol::messages::describe_producers_response::{
    PartitionResponse, ProducerState, TopicResponse,
};
use kafka_protocol::messages::{DescribeProducersRequest, DescribeProducersResponse};

use super::{Context, Outcome};
use crate::model::{ErrorCode, ShardId, TopicPartition};
use crate::partition::{self, PartitionRequest};
use crate::security::acl::Operation;

pub async fn handle(ctx: &Context, body: Bytes) -> Outcome {
    let request: DescribeProducersRequest = match ctx.decode(body) {
        Ok(r) => r,
        Err(close) => return close,
    };
    let mut by_shard: BTreeMap<ShardId, Vec<TopicPartition>> = BTreeMap::new();
    // Kafka: READ on the topic (TOPIC_AUTHORIZATION_FAILED per partition otherwise).
    let allowed = |name: &str| ctx.topic_allowed(Operation::Read, name);
    for topic in request.topics.iter().filter(|t| allowed(&t.name.0)) {
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
                _ if !allowed(&topic.name.0) => {
                    p.error_code = ErrorCode::TopicAuthorizationFailed.code();
                }
                Some(Ok(producers)) => {
                    for info in producers {
                        let mut state = ProducerState::default();
                        state.producer_id = info.producer_id.into();
                        state.producer_epoch = i32::from(info.producer_epoch.0);
                        state.last_sequence = info.last_sequence;
                        state.last_timestamp = info.last_timestamp;
                        state.coordinator_epoch = -1;
                        state.current_txn_start_offset = info.current_txn_start_offset.0;
                        p.active_producers.push(state);
                    }
                }
                Some(Err(code)) => p.error_code = code.code(),
                None => p.error_code = ErrorCode::UnknownTopicOrPartition.code(),
            }
            t.partitions.push(p);
        }
        response.topics.push(t);
    }
    ctx.reply(&response)
}
