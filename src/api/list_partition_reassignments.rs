//! ListPartitionReassignments (API 46): the reassignments in progress, from this node's
//! catalog (the metadata log as applied here): per partition its replicas (the target's
//! first, then those being removed), the ones being added and the ones being removed, as
//! Kafka lists them. No topics named (null): every topic; named topics that do not exist
//! and partitions not being reassigned are left out. Needs DESCRIBE on the cluster
//! (CLUSTER_AUTHORIZATION_FAILED). A single node never has one in progress.

use bytes::Bytes;
use kafka_protocol::messages::list_partition_reassignments_response::{
    OngoingPartitionReassignment, OngoingTopicReassignment,
};
use kafka_protocol::messages::{
    ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse, TopicName,
};

use super::{str_bytes, Context, Outcome};
use crate::model::ErrorCode;
use crate::security::acl::Operation;
use crate::shard::catalog::TopicMeta;

pub fn handle(ctx: &Context, body: Bytes) -> Outcome {
    let request: ListPartitionReassignmentsRequest = match ctx.decode(body) {
        Ok(r) => r,
        Err(close) => return close,
    };
    let mut response = ListPartitionReassignmentsResponse::default();
    if !ctx.cluster_allowed(Operation::Describe) {
        response.error_code = ErrorCode::ClusterAuthorizationFailed.code();
        return ctx.reply(&response);
    }
    let catalog = ctx.shard().catalog.borrow();
    let wanted: Vec<(TopicMeta, Vec<i32>)> = match request.topics {
        None => {
            let mut all: Vec<&TopicMeta> = catalog.topics.values().collect();
            all.sort_by(|a, b| a.name.cmp(&b.name));
            all.into_iter().map(|meta| (meta.clone(), (0..meta.partitions).collect())).collect()
        }
        Some(topics) => topics
            .into_iter()
            .filter_map(|t| Some((catalog.get(&t.name.0)?.clone(), t.partition_indexes)))
            .collect(),
    };
    drop(catalog);
    for (meta, partitions) in wanted {
        let ongoing: Vec<OngoingPartitionReassignment> =
            partitions.into_iter().filter_map(|p| ongoing(&meta, p)).collect();
        if ongoing.is_empty() {
            continue;
        }
        let mut topic = OngoingTopicReassignment::default();
        topic.name = TopicName(str_bytes(&meta.name));
        topic.partitions = ongoing;
        response.topics.push(topic);
    }
    ctx.reply(&response)
}

/// Partition `index` of `meta` if a reassignment of it is in progress.
fn ongoing(meta: &TopicMeta, index: i32) -> Option<OngoingPartitionReassignment> {
    let placement = meta.placement(index)?;
    if placement.adding.is_empty() && placement.removing.is_empty() {
        return None;
    }
    let mut entry = OngoingPartitionReassignment::default();
    entry.partition_index = index;
    entry.replicas = placement.replicas.iter().map(|id| (*id).into()).collect();
    entry.adding_replicas = placement.adding.iter().map(|id| (*id).into()).collect();
    entry.removing_replicas = placement.removing.iter().map(|id| (*id).into()).collect();
    Some(entry)
}
