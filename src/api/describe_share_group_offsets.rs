//! DescribeShareGroupOffsets (API 90, KIP-932): each share partition's start offset (SPSO:
//! every record below it is acknowledged or archived), what `kafka-share-groups.sh
//! --describe --offsets` and the Admin client's `listShareGroupOffsets` show. A partition the
//! group has not started is -1, as in Kafka; a topic the catalog does not know is
//! UNKNOWN_TOPIC_OR_PARTITION. One mesh message per owning shard.
//!
//! v1 (Kafka 4.2, KIP-1226) adds each partition's lag: the records below the high watermark
//! whose delivery is not complete (`ShareOffset::lag`; -1 for a partition not started), the
//! high watermarks read from the partitions' owning shards (ListOffsets, latest); clustered,
//! those of partitions another node leads are asked of their leaders.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::describe_share_group_offsets_response::{
    DescribeShareGroupOffsetsResponseGroup, DescribeShareGroupOffsetsResponsePartition,
    DescribeShareGroupOffsetsResponseTopic,
};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{
    ApiKey, DescribeShareGroupOffsetsRequest, DescribeShareGroupOffsetsResponse, GroupId,
    ListOffsetsRequest, ListOffsetsResponse, TopicName,
};

use super::group_common::{by_owner, check_group_id, EmptyGroupId};
use super::share_common;
use super::{str_bytes, Context, Outcome};
use crate::cluster::broker_client;
use crate::constants::SHARE_LAG_CALL_TIMEOUT_MS;
use crate::group::coordinator::{GroupRequest, GroupResponse};
use crate::group::share::ShareOffset;
use crate::model::{ErrorCode, Isolation, NodeId, TopicPartition};
use crate::security::acl::Operation;

/// The ListOffsets version a node asks another for high watermarks (Kafka 2.8's v6, the first
/// flexible one; every Spate node serves 1-9).
const LIST_OFFSETS_VERSION: i16 = 6;

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

/// The high watermark of each partition, read from its owning shard; clustered, that of a
/// partition another node leads is asked of that node (ListOffsets, latest), as this node
/// may hold no replica of it, or a follower's, a fetch behind. A partition whose read fails
/// is left out: its lag is -1.
async fn high_watermarks(
    ctx: &Context,
    partitions: impl Iterator<Item = TopicPartition>,
) -> BTreeMap<TopicPartition, i64> {
    let mut here = Vec::new();
    let mut elsewhere: BTreeMap<NodeId, Vec<TopicPartition>> = BTreeMap::new();
    for tp in partitions {
        match remote_leader(ctx, &tp) {
            Some(leader) => elsewhere.entry(leader).or_default().push(tp),
            None => here.push(tp),
        }
    }
    let asked =
        elsewhere.into_iter().map(|(leader, partitions)| latest_on(ctx, leader, partitions));
    // Kafka's ListOffsets timestamp -1: the latest offset, the high watermark.
    let (found, asked) = futures::join!(
        share_common::list_offsets(
            ctx,
            here.into_iter().map(|tp| (tp, -1)),
            Isolation::ReadUncommitted
        ),
        futures::future::join_all(asked)
    );
    let mut out: BTreeMap<TopicPartition, i64> =
        found.into_iter().filter_map(|(tp, offset)| Some((tp, offset.ok()?))).collect();
    out.extend(asked.into_iter().flatten());
    out
}

/// The node that leads `tp` when it is another one (clustered only).
fn remote_leader(ctx: &Context, tp: &TopicPartition) -> Option<NodeId> {
    if !ctx.cluster().clustered() {
        return None;
    }
    ctx.shard().catalog.borrow().leader_other_than(tp, ctx.shard().config.node_id)
}

/// The high watermarks of `partitions` on their leader `leader`, another node: a consumer's
/// ListOffsets (latest, read_uncommitted) on the brokers' kept connections. What fails or
/// answers an error is left out (and logged at debug level).
async fn latest_on(
    ctx: &Context,
    leader: NodeId,
    partitions: Vec<TopicPartition>,
) -> Vec<(TopicPartition, i64)> {
    let mut topics: Vec<ListOffsetsTopic> = Vec::new();
    for tp in &partitions {
        if topics.last().is_none_or(|t| t.name.0.as_str() != &*tp.topic) {
            let mut topic = ListOffsetsTopic::default();
            topic.name = TopicName(str_bytes(&tp.topic));
            topics.push(topic);
        }
        let mut partition = ListOffsetsPartition::default();
        partition.partition_index = tp.partition;
        partition.current_leader_epoch = -1;
        partition.timestamp = -1;
        if let Some(topic) = topics.last_mut() {
            topic.partitions.push(partition);
        }
    }
    let mut request = ListOffsetsRequest::default();
    request.replica_id = (-1).into();
    request.isolation_level = 0;
    request.topics = topics;
    let timeout = Duration::from_millis(SHARE_LAG_CALL_TIMEOUT_MS);
    let cluster = ctx.cluster();
    let version = LIST_OFFSETS_VERSION;
    let answer: ListOffsetsResponse =
        match broker_client::call(cluster, leader, ApiKey::ListOffsets, version, &request, timeout)
            .await
        {
            Ok(answer) => answer,
            Err(e) => {
                tracing::debug!(%leader, "high watermarks for share lags not read: {e}");
                return Vec::new();
            }
        };
    let mut out = Vec::new();
    for topic in &answer.topics {
        for partition in &topic.partitions {
            let tp = TopicPartition::new(topic.name.0.as_str().into(), partition.partition_index);
            if partition.error_code == ErrorCode::None.code() && partitions.contains(&tp) {
                out.push((tp, partition.offset));
            } else if partition.error_code != ErrorCode::None.code() {
                tracing::debug!(%tp, %leader, code = partition.error_code, "high watermark");
            }
        }
    }
    out
}
