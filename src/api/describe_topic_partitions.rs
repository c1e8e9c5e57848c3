//! DescribeTopicPartitions (API 75, KIP-966): what the Java AdminClient's describeTopics asks
//! since 3.8, Metadata's partitions with pagination. Topics are answered in name order (the
//! named ones, or every topic the principal may describe), from a cursor (topic, first
//! partition) on, at most `response_partition_limit` partitions in all (Kafka's bound:
//! between 1 and `max.request.partition.size.limit`, 2000); where the limit cuts, the answer
//! names the next cursor. Per partition Kafka's fields: leader and leader epoch
//! (LEADER_NOT_AVAILABLE and -1 without a live leader), replicas, in-sync and offline
//! replicas, and empty eligible leader replica lists (KIP-966's ELR is not kept here).
//! Named topics that do not exist are UNKNOWN_TOPIC_OR_PARTITION; ones the principal may not
//! DESCRIBE are TOPIC_AUTHORIZATION_FAILED (listed after the others, as Kafka does), and are
//! left out of the all-topics answer. A cursor topic outside the named ones or a negative
//! cursor partition is INVALID_REQUEST for every named topic (Kafka's error response).

use std::collections::BTreeSet;

use bytes::Bytes;
use kafka_protocol::messages::describe_topic_partitions_response::{
    Cursor, DescribeTopicPartitionsResponsePartition, DescribeTopicPartitionsResponseTopic,
};
use kafka_protocol::messages::{
    DescribeTopicPartitionsRequest, DescribeTopicPartitionsResponse, TopicName,
};

use super::metadata::{live_check, partition_view};
use super::{str_bytes, Context, Outcome};
use crate::constants::DESCRIBE_TOPIC_PARTITIONS_LIMIT_MAX;
use crate::model::{ErrorCode, NodeId};
use crate::security::acl::{Operation, ResourceType};
use crate::shard::catalog::TopicMeta;
use crate::shard::internal_log::INTERNAL_TOPICS;

pub fn handle(ctx: &Context, body: Bytes) -> Outcome {
    let request: DescribeTopicPartitionsRequest = match ctx.decode(body) {
        Ok(r) => r,
        Err(close) => return close,
    };
    let all = request.topics.is_empty();
    let cursor = request.cursor.as_ref().map(|c| (c.topic_name.0.to_string(), c.partition_index));
    let cursor_topic = cursor.as_ref().map_or("", |(name, _)| name.as_str());
    let names: BTreeSet<String> = match all {
        true => {
            let catalog = ctx.shard().catalog.borrow();
            let visible = catalog.topics.values().filter(|meta| !meta.is_internal());
            visible.map(|meta| meta.name.to_string()).collect()
        }
        false => request.topics.iter().map(|t| t.name.0.to_string()).collect(),
    };
    let names: BTreeSet<String> =
        names.into_iter().filter(|n| n.as_str() >= cursor_topic).collect();
    let invalid = match &cursor {
        Some((topic, _)) if !all && !names.contains(topic) => {
            Some(format!("the topic list should contain the cursor topic {topic}"))
        }
        Some((_, partition)) if *partition < 0 => {
            Some(format!("the cursor partition must be valid: {partition}"))
        }
        _ => None,
    };
    if let Some(message) = invalid {
        tracing::debug!("DescribeTopicPartitions: {message}");
        let mut response = DescribeTopicPartitionsResponse::default();
        for topic in &request.topics {
            let mut entry = DescribeTopicPartitionsResponseTopic::default();
            entry.name = Some(topic.name.clone());
            entry.error_code = ErrorCode::InvalidRequest.code();
            response.topics.push(entry);
        }
        return ctx.reply(&response);
    }
    let limit = request.response_partition_limit.clamp(1, DESCRIBE_TOPIC_PARTITIONS_LIMIT_MAX);
    let mut remaining = limit as usize;
    let mut response = DescribeTopicPartitionsResponse::default();
    let mut unauthorized = Vec::new();
    let live = live_check(ctx);
    let node_id = ctx.shard().config.node_id;
    for name in names {
        if !ctx.topic_allowed(Operation::Describe, &name) {
            // Named: refused without telling whether it exists (zero id); all: left out.
            if !all {
                let mut entry = DescribeTopicPartitionsResponseTopic::default();
                entry.name = Some(TopicName(str_bytes(&name)));
                entry.error_code = ErrorCode::TopicAuthorizationFailed.code();
                unauthorized.push(entry);
            }
            continue;
        }
        if remaining == 0 {
            response.next_cursor = Some(next_cursor(&name, 0));
            break;
        }
        // A cluster's internal topics are hidden, as Metadata hides them.
        let meta = ctx.shard().catalog.borrow().get(&name).filter(|m| !m.is_internal()).cloned();
        let Some(meta) = meta else {
            let mut entry = DescribeTopicPartitionsResponseTopic::default();
            entry.name = Some(TopicName(str_bytes(&name)));
            entry.error_code = ErrorCode::UnknownTopicOrPartition.code();
            entry.is_internal = INTERNAL_TOPICS.contains(&name.as_str());
            response.topics.push(entry);
            continue;
        };
        let first = match &cursor {
            Some((topic, partition)) if *topic == name => *partition,
            _ => 0,
        };
        let end = first.saturating_add(remaining as i32).min(meta.partitions);
        let mut entry = DescribeTopicPartitionsResponseTopic::default();
        entry.name = Some(TopicName(str_bytes(&name)));
        entry.topic_id = uuid::Uuid::from_bytes(meta.id);
        entry.partitions =
            (first..end).map(|p| partition_entry(&meta, p, node_id, &live)).collect();
        entry.topic_authorized_operations = ctx.authorized_operations(ResourceType::Topic, &name);
        remaining -= entry.partitions.len();
        response.topics.push(entry);
        if end < meta.partitions {
            response.next_cursor = Some(next_cursor(&name, end));
            break;
        }
    }
    response.topics.extend(unauthorized);
    ctx.reply(&response)
}

fn next_cursor(topic: &str, partition_index: i32) -> Cursor {
    let mut cursor = Cursor::default();
    cursor.topic_name = TopicName(str_bytes(topic));
    cursor.partition_index = partition_index;
    cursor
}

/// One partition as Kafka's KRaft metadata cache describes it (no eligible leader replicas:
/// see docs/ARCHITECTURE.md, Known gaps).
fn partition_entry(
    meta: &TopicMeta,
    index: i32,
    node_id: NodeId,
    live: &impl Fn(NodeId) -> bool,
) -> DescribeTopicPartitionsResponsePartition {
    let view = partition_view(meta, index, node_id, live);
    let mut p = DescribeTopicPartitionsResponsePartition::default();
    p.partition_index = index;
    p.eligible_leader_replicas = Some(Vec::new());
    p.last_known_elr = Some(Vec::new());
    p.error_code = view.error.code();
    p.leader_id = view.leader.into();
    p.leader_epoch = view.leader_epoch.0;
    p.replica_nodes = view.replicas;
    p.isr_nodes = view.isr;
    p.offline_replicas = view.offline;
    p
}
