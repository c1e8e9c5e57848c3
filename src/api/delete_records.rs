//! DeleteRecords (API 21): moves each partition's log start offset (the low watermark) up,
//! as Kafka's `kafka-delete-records` does. One message per owning shard; the owner deletes
//! whole segments below the new start and records it durably (`storage::log`).

use std::collections::BTreeMap;

use bytes::Bytes;
use futures::future::join_all;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};

use super::{Context, Outcome};
use crate::model::{ErrorCode, Offset, ShardId, TopicPartition};
use crate::partition::{PartitionRequest, PartitionResponse};
use crate::security::acl::Operation;

pub async fn handle(ctx: &Context, body: Bytes) -> Outcome {
    let request: DeleteRecordsRequest = match ctx.decode(body) {
        Ok(r) => r,
        Err(close) => return close,
    };
    let mut by_shard: BTreeMap<ShardId, Vec<(TopicPartition, Offset)>> = BTreeMap::new();
    let mut response = DeleteRecordsResponse::default();
    for topic in &request.topics {
        let denied = !ctx.topic_allowed(Operation::Delete, &topic.name.0);
        let meta = ctx.shard().catalog.borrow().get(&topic.name.0).cloned();
        let mut result = DeleteRecordsTopicResult::default();
        result.name = topic.name.clone();
        for p in &topic.partitions {
            let mut answer = DeleteRecordsPartitionResult::default();
            answer.partition_index = p.partition_index;
            answer.low_watermark = -1;
            let node_id = ctx.shard().config.node_id;
            match &meta {
                _ if denied => answer.error_code = ErrorCode::TopicAuthorizationFailed.code(),
                Some(m) if m.led_elsewhere(p.partition_index, node_id) => {
                    answer.error_code = ErrorCode::NotLeaderOrFollower.code();
                }
                Some(m) if (0..m.partitions).contains(&p.partition_index) => {
                    let tp = TopicPartition::new(m.name.clone(), p.partition_index);
                    by_shard
                        .entry(ctx.shard().owner(&tp))
                        .or_default()
                        .push((tp, Offset(p.offset)));
                }
                _ => answer.error_code = ErrorCode::UnknownTopicOrPartition.code(),
            }
            result.partitions.push(answer);
        }
        response.topics.push(result);
    }
    let calls = by_shard.into_iter().map(|(owner, partitions)| {
        ctx.partitions().call(owner, PartitionRequest::DeleteRecords { partitions })
    });
    let mut done = BTreeMap::new();
    for answer in join_all(calls).await {
        if let Some(PartitionResponse::Offsets(results)) = answer {
            for r in results {
                done.insert(r.tp.clone(), r);
            }
        }
    }
    for topic in &mut response.topics {
        for p in &mut topic.partitions {
            if p.error_code != ErrorCode::None.code() {
                continue;
            }
            let tp = TopicPartition::new(topic.name.0.as_str().into(), p.partition_index);
            match done.get(&tp) {
                Some(r) => {
                    p.error_code = r.error_code.code();
                    p.low_watermark = r.offset.0;
                }
                None => p.error_code = ErrorCode::UnknownServerError.code(),
            }
        }
    }
    ctx.reply(&response)
}
