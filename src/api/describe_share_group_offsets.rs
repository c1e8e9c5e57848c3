//! DescribeShareGroupOffsets (API 90, KIP-932): each share partition's start offset (SPSO:
//! every record below it is acknowledged or archived), what `kafka-share-groups.sh
//! --describe --offsets` and the Admin client's `listShareGroupOffsets` show. A partition the
//! group has not started is -1, as in Kafka; a topic the catalog does not know is
//! UNKNOWN_TOPIC_OR_PARTITION. One mesh message per owning shard.
//!
//! v1 (Kafka 4.2, KIP-1226) adds each partition's lag: the records below the high watermark
//! whose delivery is not complete (`ShareOffset::lag`; -1 for a partition not started), the
//! high watermarks read from the partitions' owning shards (ListOffsets, latest).

use std::collections::BTreeMap;

use bytes::Bytes;
use kafka_protocol::messages::describe_share_group_offsets_response::{
    DescribeShareGroupOffsetsResponseGroup, DescribeShareGroupOffsetsResponsePartition,
    DescribeShareGroupOffsetsResponseTopic,
};
use kafka_protocol::messages::{
    DescribeShareGroupOffsetsRequest, DescribeShareGroupOffsetsResponse, GroupId, TopicName,
};

use super::group_common::{by_owner, check_group_id, EmptyGroupId};
use super::share_common;
use super::{str_bytes, Context, Outcome};
use crate::group::coordinator::{GroupRequest, GroupResponse};
use crate::group::share::ShareOffset;
use crate::model::{ErrorCode, Isolation, TopicPartition};
use crate::security::acl::Operation;

pub async fn handle(ctx: &Context, body: Bytes) -> Outcome {
    let request: DescribeShareGroupOffsetsRequest = match ctx.decode(body) {
        Ok(r) => r,
        Err(close) => return close,
    };
    let ids: Vec<String> = request.groups.iter().map(|g| g.group_id.0.to_string()).collect();
    let mut found: BTreeMap<String, Option<Vec<(TopicPartition, ShareOffset)>>> = BTreeMap::new();
    let calls = by_owner(ctx, &ids, EmptyGroupId::Refused, Operation::Describe)
        .into_iter()
        .map(|(owner, groups)| ctx.groups().call(owner, GroupRequest::ShareOffsets { groups }));
    for answer in futures::future::join_all(calls).await {
        if let Some(GroupResponse::ShareOffsets(groups)) = answer {
            found.extend(groups);
        }
    }
    let high_watermarks = if ctx.version >= 1 {
        let started = found.values().flatten().flatten().map(|(tp, _)| tp.clone());
        high_watermarks(ctx, started).await
    } else {
        BTreeMap::new()
    };
    let mut response = DescribeShareGroupOffsetsResponse::default();
    for asked in &request.groups {
        let id = asked.group_id.0.to_string();
        let mut group = DescribeShareGroupOffsetsResponseGroup::default();
        group.group_id = GroupId(str_bytes(&id));
        if let Err(code) = check_group_id(ctx, &id, EmptyGroupId::Refused, Operation::Describe) {
            group.error_code = code.code();
            response.groups.push(group);
            continue;
        }
        let starts: BTreeMap<TopicPartition, ShareOffset> =
            found.remove(&id).flatten().unwrap_or_default().into_iter().collect();
        // Asked partitions, or every partition the group started (topics null).
        let wanted: Vec<(String, Vec<i32>)> = match &asked.topics {
            Some(topics) => {
                topics.iter().map(|t| (t.topic_name.0.to_string(), t.partitions.clone())).collect()
            }
            None => {
                let mut by_topic: BTreeMap<String, Vec<i32>> = BTreeMap::new();
                for tp in starts.keys() {
                    by_topic.entry(tp.topic.to_string()).or_default().push(tp.partition);
                }
                by_topic.into_iter().collect()
            }
        };
        let catalog = ctx.shard().catalog.borrow();
        for (name, partitions) in wanted {
            if !ctx.topic_allowed(Operation::Describe, &name) {
                continue;
            }
            let meta = catalog.get(&name).filter(|meta| !meta.is_internal());
            let mut topic = DescribeShareGroupOffsetsResponseTopic::default();
            topic.topic_name = TopicName(str_bytes(&name));
            topic.topic_id = uuid::Uuid::from_bytes(meta.map_or([0; 16], |meta| meta.id));
            topic.partitions = partitions
                .into_iter()
                .map(|partition| {
                    let mut out = DescribeShareGroupOffsetsResponsePartition::default();
                    out.partition_index = partition;
                    out.leader_epoch = -1;
                    match meta {
                        Some(meta) if (0..meta.partitions).contains(&partition) => {
                            let tp = TopicPartition::new(meta.name.clone(), partition);
                            let offset = starts.get(&tp);
                            out.start_offset = offset.map_or(-1, |o| o.start);
                            if ctx.version >= 1 {
                                let lag = offset.zip(high_watermarks.get(&tp));
                                out.lag = lag.map_or(-1, |(o, hw)| o.lag(*hw));
                            }
                        }
                        _ => {
                            out.start_offset = -1;
                            out.error_code = ErrorCode::UnknownTopicOrPartition.code();
                        }
                    }
                    out
                })
                .collect();
            group.topics.push(topic);
        }
        drop(catalog);
        response.groups.push(group);
    }
    ctx.reply(&response)
}

/// The high watermark of each partition, read from its owning shard (a partition whose
/// read fails is left out: its lag is -1).
async fn high_watermarks(
    ctx: &Context,
    partitions: impl Iterator<Item = TopicPartition>,
) -> BTreeMap<TopicPartition, i64> {
    // Kafka's ListOffsets timestamp -1: the latest offset, the high watermark.
    let found =
        share_common::list_offsets(ctx, partitions.map(|tp| (tp, -1)), Isolation::ReadUncommitted)
            .await;
    found.into_iter().filter_map(|(tp, offset)| Some((tp, offset.ok()?))).collect()
}
