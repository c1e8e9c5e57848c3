//! AlterPartitionReassignments (API 45, v0-1): moves partitions to other brokers, or cancels
//! a move (a null replica list), decided by the metadata log as Kafka's controller decides
//! it (`cluster::state`: one `AlterReassignment` record per partition, proposed from any
//! node, answered once applied here). A move adds the new replicas, which fetch from the
//! leader and join the ISR once caught up; then the active controller ends it
//! (`CompleteReassignment`): the replicas no longer wanted leave (the leader moves if it is
//! one of them) and delete their copy. Errors in Kafka's words: INVALID_REPLICA_ASSIGNMENT
//! (an empty list, a broker twice or not registered, a cancel that would need an unclean
//! election), NO_REASSIGNMENT_IN_PROGRESS (a cancel with nothing to cancel),
//! UNKNOWN_TOPIC_OR_PARTITION, INVALID_REPLICATION_FACTOR (v1 with
//! `allow_replication_factor_change` false and another replica count). Needs ALTER on the
//! cluster (CLUSTER_AUTHORIZATION_FAILED, at the top and for every partition). A single node
//! answers as a cluster of one broker: only itself may be named, and nothing moves.

use bytes::Bytes;
use futures::future::join_all;
use kafka_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse,
};

use super::{str_bytes, Context, Outcome};
use crate::controller::ControllerRequest;
use crate::model::{ErrorCode, NodeId};
use crate::security::acl::Operation;

pub async fn handle(ctx: &Context, body: Bytes) -> Outcome {
    let request: AlterPartitionReassignmentsRequest = match ctx.decode(body) {
        Ok(r) => r,
        Err(close) => return close,
    };
    let mut response = AlterPartitionReassignmentsResponse::default();
    // v1 (KIP-860): the answer says the broker honours the flag.
    response.allow_replication_factor_change = request.allow_replication_factor_change;
    if !ctx.cluster_allowed(Operation::Alter) {
        let code = ErrorCode::ClusterAuthorizationFailed;
        response.error_code = code.code();
        for topic in &request.topics {
            let mut entry = ReassignableTopicResponse::default();
            entry.name = topic.name.clone();
            entry.partitions =
                topic.partitions.iter().map(|p| result(p.partition_index, code, None)).collect();
            response.responses.push(entry);
        }
        return ctx.reply(&response);
    }
    let allow_factor_change = request.allow_replication_factor_change;
    let timeout_ms = request.timeout_ms;
    let topics = request.topics.iter().map(|topic| {
        join_all(topic.partitions.iter().map(|partition| async move {
            let call = ControllerRequest::AlterReassignment {
                name: topic.name.0.to_string(),
                partition: partition.partition_index,
                target: partition
                    .replicas
                    .as_ref()
                    .map(|ids| ids.iter().map(|id| NodeId::from(*id)).collect()),
                allow_factor_change,
                timeout_ms,
            };
            match ctx.controller().change_topic(call).await {
                Ok(_) => result(partition.partition_index, ErrorCode::None, None),
                Err(e) => result(partition.partition_index, e.code, Some(e.message)),
            }
        }))
    });
    for (topic, results) in request.topics.iter().zip(join_all(topics).await) {
        let mut entry = ReassignableTopicResponse::default();
        entry.name = topic.name.clone();
        entry.partitions = results;
        response.responses.push(entry);
    }
    ctx.reply(&response)
}

fn result(
    partition_index: i32,
    code: ErrorCode,
    message: Option<String>,
) -> ReassignablePartitionResponse {
    let mut result = ReassignablePartitionResponse::default();
    result.partition_index = partition_index;
    result.error_code = code.code();
    result.error_message = message.as_deref().map(str_bytes);
    result
}
