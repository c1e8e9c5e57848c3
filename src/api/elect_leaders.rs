//! ElectLeaders (API 43, v0-2): preferred or unclean leader election, decided by the
//! metadata log as Kafka's controller decides it (`cluster::state`, one `ElectLeader`
//! record per partition, proposed from any node like other admin requests, answered once
//! applied here): PREFERRED makes the first replica lead if it is live and in sync
//! (ELECTION_NOT_NEEDED when it leads, PREFERRED_LEADER_NOT_AVAILABLE when it cannot);
//! UNCLEAN gives a leaderless partition a live replica, from outside the ISR if need be, as
//! Kafka's explicit unclean election does whatever `unclean.leader.election.enable` says
//! (ELECTION_NOT_NEEDED when it has a leader, ELIGIBLE_LEADERS_NOT_AVAILABLE when no replica
//! is live). No partitions named (null): every partition, and only those that needed an
//! election are answered. Needs ALTER on the cluster (CLUSTER_AUTHORIZATION_FAILED, at the
//! top and for every partition named). A single node answers as a cluster of one broker:
//! never needed.

use bytes::Bytes;
use futures::future::join_all;
use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::{ElectLeadersRequest, ElectLeadersResponse, TopicName};

use super::{str_bytes, Context, Outcome};
use crate::cluster::records::Election;
use crate::controller::ControllerRequest;
use crate::model::{ErrorCode, NodeId};
use crate::security::acl::Operation;

pub async fn handle(ctx: &Context, body: Bytes) -> Outcome {
    let request: ElectLeadersRequest = match ctx.decode(body) {
        Ok(r) => r,
        Err(close) => return close,
    };
    // v0 has no election type: preferred.
    let election = match request.election_type {
        _ if ctx.version == 0 => Ok(Election::Preferred),
        0 => Ok(Election::Preferred),
        1 => Ok(Election::Unclean),
        other => Err(format!("Unknown election type {other}")),
    };
    let refusal = match &election {
        _ if !ctx.cluster_allowed(Operation::Alter) => {
            Some((ErrorCode::ClusterAuthorizationFailed, None))
        }
        Err(message) => Some((ErrorCode::InvalidRequest, Some(message.clone()))),
        Ok(_) => None,
    };
    let mut response = ElectLeadersResponse::default();
    if let Some((code, message)) = refusal {
        response.error_code = code.code();
        for topic in request.topic_partitions.iter().flatten() {
            let results = topic.partitions.iter().map(|p| result(*p, code, message.clone()));
            response.replica_election_results.push(topic_result(&topic.topic, results.collect()));
        }
        return ctx.reply(&response);
    }
    let election = election.unwrap_or(Election::Preferred);
    let everything = request.topic_partitions.is_none();
    let wanted: Vec<(TopicName, Vec<i32>)> = match request.topic_partitions {
        Some(topics) => topics.into_iter().map(|t| (t.topic, t.partitions)).collect(),
        None => candidates(ctx, election),
    };
    let elections = wanted.iter().map(|(topic, partitions)| {
        join_all(partitions.iter().map(|partition| async move {
            let call = ControllerRequest::ElectLeader {
                name: topic.0.to_string(),
                partition: *partition,
                election,
                timeout_ms: request.timeout_ms,
            };
            match ctx.controller().change_topic(call).await {
                Ok(_) => result(*partition, ErrorCode::None, None),
                Err(e) => result(*partition, e.code, Some(e.message)),
            }
        }))
    });
    for ((topic, _), results) in wanted.iter().zip(join_all(elections).await) {
        // Asked for every partition: only those an election was tried for (Kafka).
        let not_needed = ErrorCode::ElectionNotNeeded.code();
        let results: Vec<PartitionResult> =
            results.into_iter().filter(|r| !everything || r.error_code != not_needed).collect();
        if !everything || !results.is_empty() {
            response.replica_election_results.push(topic_result(topic, results));
        }
    }
    ctx.reply(&response)
}

/// Every partition of this node's catalog that may need the election (by topic name): its
/// first replica does not lead (preferred), or it has no leader (unclean). The log decides.
fn candidates(ctx: &Context, election: Election) -> Vec<(TopicName, Vec<i32>)> {
    let catalog = ctx.shard().catalog.borrow();
    let mut wanted = Vec::new();
    for meta in catalog.topics.values() {
        let partitions: Vec<i32> = (0..meta.partitions)
            .filter(|p| {
                meta.placement(*p).is_some_and(|placement| match election {
                    Election::Preferred => placement.replicas.first() != Some(&placement.leader),
                    Election::Unclean => placement.leader == NodeId::NONE,
                })
            })
            .collect();
        if !partitions.is_empty() {
            wanted.push((TopicName(str_bytes(&meta.name)), partitions));
        }
    }
    wanted.sort_by(|a, b| a.0 .0.cmp(&b.0 .0));
    wanted
}

fn result(partition_id: i32, code: ErrorCode, message: Option<String>) -> PartitionResult {
    let mut result = PartitionResult::default();
    result.partition_id = partition_id;
    result.error_code = code.code();
    result.error_message = message.as_deref().map(str_bytes);
    result
}

fn topic_result(topic: &TopicName, results: Vec<PartitionResult>) -> ReplicaElectionResult {
    let mut entry = ReplicaElectionResult::default();
    entry.topic = topic.clone();
    entry.partition_result = results;
    entry
}
