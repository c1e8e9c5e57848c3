//! ListOffsets: earliest (-2), latest (-1), max timestamp (-3), earliest local (-4), or the
//! first offset at or after a timestamp. One message per owning shard. A read_committed
//! request's latest is the last stable offset.

use std::collections::BTreeMap;

use bytes::Bytes;
use futures::future::join_all;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};

use super::{Context, Outcome};
use crate::model::{ErrorCode, Isolation, LeaderEpoch, ShardId, TopicPartition};
use crate::partition::{PartitionRequest, PartitionResponse};
use crate::security::acl::Operation;

pub async fn handle(ctx: &Context, body: Bytes) -> Outcome {
    let request: ListOffsetsRequest = match ctx.decode(body) {
        Ok(r) => r,
        Err(close) => return close,
    };
    let shard = ctx.shard();
    let mut response = ListOffsetsResponse::default();
    let mut by_shard: BTreeMap<ShardId, Vec<(TopicPartition, i64)>> = BTreeMap::new();
    let mut slot_of: BTreeMap<TopicPartition, (usize, usize)> = BTreeMap::new();
    for (topic_index, topic) in request.topics.iter().enumerate() {
        let denied = !ctx.topic_allowed(Operation::Describe, &topic.name.0);
        let meta = shard.catalog.borrow().get(&topic.name.0).cloned();
        let mut topic_response = ListOffsetsTopicResponse::default();
        topic_response.name = topic.name.clone();
        for (partition_index, partition) in topic.partitions.iter().enumerate() {
            let mut p = ListOffsetsPartitionResponse::default();
            p.partition_index = partition.partition_index;
            p.offset = -1;
            p.timestamp = -1;
            let epoch = if ctx.version >= 4 { LeaderEpoch::INITIAL } else { LeaderEpoch::NONE };
            p.leader_epoch = epoch.0;
            match &meta {
                _ if denied => p.error_code = ErrorCode::TopicAuthorizationFailed.code(),
                Some(m) if m.led_elsewhere(partition.partition_index, shard.config.node_id) => {
                    p.error_code = ErrorCode::NotLeaderOrFollower.code();
                }
                Some(m) if (0..m.partitions).contains(&partition.partition_index) => {
                    let tp = TopicPartition::new(m.name.clone(), partition.partition_index);
                    slot_of.insert(tp.clone(), (topic_index, partition_index));
                    by_shard.entry(shard.owner(&tp)).or_default().push((tp, partition.timestamp));
                }
                _ => p.error_code = ErrorCode::UnknownTopicOrPartition.code(),
            }
            topic_response.partitions.push(p);
        }
        response.topics.push(topic_response);
    }
    // read_committed: latest is the last stable offset.
    let isolation = Isolation::from_wire(request.isolation_level);
    let calls = by_shard.into_iter().map(|(owner, partitions)| {
        ctx.partitions().call(owner, PartitionRequest::ListOffsets { partitions, isolation })
    });
    for answer in join_all(calls).await {
        let Some(PartitionResponse::Offsets(results)) = answer else { continue };
        for result in results {
            let Some(&(t, p)) = slot_of.get(&result.tp) else { continue };
            let slot = &mut response.topics[t].partitions[p];
            slot.error_code = result.error_code.code();
            slot.offset = result.offset.0;
            slot.timestamp = result.timestamp;
        }
    }
    ctx.reply(&response)
}
