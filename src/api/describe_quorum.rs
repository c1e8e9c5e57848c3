//! DescribeQuorum (API 55, KIP-595/KIP-853): the controller quorum's state for
//! `kafka-metadata-quorum describe --status` and the Java AdminClient's
//! `describeMetadataQuorum`. Served on clustered nodes only (`versions::CLUSTER_ONLY`).
//!
//! Kafka's offsets of the metadata log map onto Raft indexes one to one: the entry at index
//! `i` is offset `i - 1`, so a log end offset is the last index and the high watermark is the
//! commit index. Any node answers from its own view (Kafka brokers forward the request to the
//! active controller instead): the leader knows every voter's log end, a follower only its
//! own (-1 for the others). Broker-only nodes (Raft learners) are listed as observers, with
//! their log ends as the leader knows them. Fetch and caught-up timestamps are not tracked
//! yet (-1, which Kafka also answers for unknown).

use bytes::Bytes;
use kafka_protocol::messages::describe_quorum_response::{
    Listener, Node, PartitionData, ReplicaState, TopicData,
};
use kafka_protocol::messages::{DescribeQuorumRequest, DescribeQuorumResponse, TopicName};

use super::{str_bytes, Context, Outcome};
use crate::cluster::VoterState;
use crate::model::{ErrorCode, NodeId};
use crate::security::acl::Operation;

/// The metadata log's name and partition in Kafka, which clients ask for.
const METADATA_TOPIC: &str = "__cluster_metadata";
/// The listener name the voters' addresses are given under (Kafka's default).
const CONTROLLER_LISTENER: &str = "CONTROLLER";

pub fn handle(ctx: &Context, body: Bytes) -> Outcome {
    let request: DescribeQuorumRequest = match ctx.decode(body) {
        Ok(request) => request,
        Err(close) => return close,
    };
    let mut response = DescribeQuorumResponse::default();
    if !ctx.cluster_allowed(Operation::Describe) {
        response.error_code = ErrorCode::ClusterAuthorizationFailed.code();
        return ctx.reply(&response);
    }
    let asks_for_the_log = request.topics.len() == 1
        && request.topics[0].topic_name.0.as_str() == METADATA_TOPIC
        && request.topics[0].partitions.len() == 1
        && request.topics[0].partitions[0].partition_index == 0;
    if !asks_for_the_log {
        response.error_code = ErrorCode::UnknownTopicOrPartition.code();
        return ctx.reply(&response);
    }
    let mut partition = PartitionData::default();
    partition.partition_index = 0;
    match ctx.cluster().view() {
        Some(view) if view.leader_id.is_some() => {
            partition.leader_id = view.leader_id.unwrap_or(NodeId::NONE).into();
            partition.leader_epoch = i32::try_from(view.term).unwrap_or(i32::MAX);
            partition.high_watermark = view.commit_index as i64;
            partition.current_voters = view.voters.iter().map(replica_state).collect();
            partition.observers = view.observers.iter().map(replica_state).collect();
            if ctx.version >= 2 {
                response.nodes = view
                    .voter_addresses
                    .iter()
                    .map(|voter| {
                        let mut listener = Listener::default();
                        listener.name = str_bytes(CONTROLLER_LISTENER);
                        listener.host = str_bytes(&voter.host);
                        listener.port = voter.port;
                        let mut node = Node::default();
                        node.node_id = voter.id.into();
                        node.listeners = vec![listener];
                        node
                    })
                    .collect();
            }
        }
        // No leader known here yet (an election, or the log still opening): retriable.
        _ => {
            partition.error_code = ErrorCode::NotLeaderOrFollower.code();
            partition.leader_id = NodeId::NONE.into();
            partition.high_watermark = -1;
        }
    }
    let mut topic = TopicData::default();
    topic.topic_name = TopicName(str_bytes(METADATA_TOPIC));
    topic.partitions = vec![partition];
    response.topics = vec![topic];
    ctx.reply(&response)
}

/// A voter's or observer's state: its log end offset as this node knows it.
fn replica_state(replica: &VoterState) -> ReplicaState {
    let mut state = ReplicaState::default();
    state.replica_id = replica.node_id.into();
    state.log_end_offset = replica.log_end_index.map_or(-1, |index| index as i64);
    state.last_fetch_timestamp = -1;
    state.last_caught_up_timestamp = -1;
    state
}
