//! Produce: validate every batch on the connection's core (spreading CRC work over cores),
//! group partitions by owning shard, send one message per shard, and answer in request
//! order. Record batches are never decompressed.
//!
//! Two stages (see `api`): admission validates, routes and admits the batches on their
//! owning shards, which assigns offsets and queues the writes in arrival order; the answer
//! waits for the writes and may complete while later requests are admitted.
//!
//! KIP-951 (v10+): a partition answered NOT_LEADER_OR_FOLLOWER carries its current leader
//! and leader epoch as this node's catalog has them, and the response the leaders'
//! endpoints, so that the client moves to the new leader without a Metadata request.

use std::collections::BTreeMap;

use bytes::Bytes;
use futures::future::join_all;
use kafka_protocol::messages::produce_response::{
    BatchIndexAndErrorMessage, LeaderIdAndEpoch, NodeEndpoint, PartitionProduceResponse,
    TopicProduceResponse,
};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use kafka_protocol::protocol::StrBytes;

use super::{Admitted, Context, Outcome};
use crate::model::batch::{self, BatchError};
use crate::model::{ErrorCode, NodeId, ShardId, TopicPartition};
use crate::security::acl::Operation;
use crate::shard::internal_log::INTERNAL_TOPICS;

pub async fn admit(ctx: Context, body: Bytes) -> Admitted {
    let request: ProduceRequest = match ctx.decode(body) {
        Ok(r) => r,
        Err(close) => return Admitted::Now(close),
    };
    let shard = ctx.shard();
    let acks = request.acks;
    let timeout_ms = request.timeout_ms;
    // Kafka: a transactional producer needs WRITE on its transactional id, else the whole
    // request fails with TRANSACTIONAL_ID_AUTHORIZATION_FAILED; each topic needs WRITE.
    let txn_denied = request.transactional_id.as_ref().is_some_and(|id| !ctx.txn_allowed(id));
    let mut topics: Vec<TopicProduceResponse> = Vec::new();
    let mut by_shard: BTreeMap<ShardId, Vec<(TopicPartition, Vec<Bytes>)>> = BTreeMap::new();
    let mut slot_of: BTreeMap<TopicPartition, (usize, usize)> = BTreeMap::new();
    for (topic_index, topic) in request.topic_data.into_iter().enumerate() {
        let mut topic_response = TopicProduceResponse::default();
        topic_response.name = topic.name.clone();
        topic_response.topic_id = topic.topic_id;
        let name: &str = &topic.name.0;
        let denied = if txn_denied {
            Some(ErrorCode::TransactionalIdAuthorizationFailed)
        } else if !ctx.topic_allowed(Operation::Write, name) {
            Some(ErrorCode::TopicAuthorizationFailed)
        } else {
            None
        };
        let usable = acks_valid(acks) && denied.is_none();
        // A cluster's internal topics are written by their coordinators only.
        let usable = usable && !INTERNAL_TOPICS.contains(&name);
        let meta = if usable { ctx.shard().catalog.borrow().get(name).cloned() } else { None };
        let meta = match meta {
            Some(meta) => Some(meta),
            None if usable && shard.config.auto_create_topics && ctx.may_create_topic(name) => {
                ctx.controller().ensure_topic(name).await.ok().flatten()
            }
            None => None,
        };
        for (partition_index, data) in topic.partition_data.into_iter().enumerate() {
            let mut response = PartitionProduceResponse::default();
            response.index = data.index;
            response.base_offset = -1;
            response.log_append_time_ms = -1;
            response.log_start_offset = -1;
            let code = if let Some(denied) = denied {
                denied
            } else if !acks_valid(acks) {
                ErrorCode::InvalidRequiredAcks
            } else {
                match &meta {
                    None => ErrorCode::UnknownTopicOrPartition,
                    Some(m) if data.index < 0 || data.index >= m.partitions => {
                        ErrorCode::UnknownTopicOrPartition
                    }
                    Some(m) if !m.is_led_by(data.index, shard.config.node_id) => {
                        ErrorCode::NotLeaderOrFollower
                    }
                    Some(m) => match split(data.records, m.config.max_message_bytes as usize) {
                        Ok(batches) => {
                            let tp = TopicPartition::new(m.name.clone(), data.index);
                            slot_of.insert(tp.clone(), (topic_index, partition_index));
                            by_shard.entry(shard.owner(&tp)).or_default().push((tp, batches));
                            ErrorCode::None
                        }
                        Err(code) => code,
                    },
                }
            };
            response.error_code = code.code();
            topic_response.partition_responses.push(response);
        }
        topics.push(topic_response);
    }
    let mut answers = Vec::with_capacity(by_shard.len());
    for (owner, partitions) in by_shard {
        answers.push(ctx.partitions().admit_produce_on(owner, partitions, timeout_ms, acks).await);
    }
    Admitted::Later(Box::pin(async move {
        for results in join_all(answers).await {
            for result in results {
                let Some(&(topic_index, partition_index)) = slot_of.get(&result.tp) else {
                    continue;
                };
                let slot = &mut topics[topic_index].partition_responses[partition_index];
                slot.error_code = result.error_code.code();
                if ctx.version >= 8 {
                    slot.error_message = result.error_message.map(StrBytes::from_string);
                    slot.record_errors = result
                        .record_errors
                        .into_iter()
                        .map(|(batch_index, message)| {
                            let mut error = BatchIndexAndErrorMessage::default();
                            error.batch_index = batch_index;
                            error.batch_index_error_message = Some(StrBytes::from_string(message));
                            error
                        })
                        .collect();
                }
                slot.base_offset = result.base_offset.0;
                slot.log_append_time_ms = result.log_append_time;
                slot.log_start_offset = result.log_start_offset.0;
            }
        }
        if acks == 0 {
            return Outcome::NoReply;
        }
        let mut response = ProduceResponse::default();
        if ctx.version >= 10 {
            response.node_endpoints = current_leaders(&ctx, &mut topics);
        }
        response.responses = topics;
        ctx.reply(&response)
    }))
}

/// KIP-951: fills in the current leader (and its epoch) of every partition answered
/// NOT_LEADER_OR_FOLLOWER whose leader this node's catalog knows, and returns the endpoints
/// of those leaders that are live brokers (Kafka's `getCurrentLeader` and the response's
/// node endpoints). A single node names nobody: it leads everything it has.
fn current_leaders(ctx: &Context, topics: &mut [TopicProduceResponse]) -> Vec<NodeEndpoint> {
    let Some(view) = ctx.cluster().view() else { return Vec::new() };
    let catalog = ctx.shard().catalog.borrow();
    let mut leaders = std::collections::BTreeSet::new();
    for topic in topics.iter_mut() {
        let Some(meta) = catalog.get(&topic.name.0) else { continue };
        for partition in &mut topic.partition_responses {
            if partition.error_code != ErrorCode::NotLeaderOrFollower.code() {
                continue;
            }
            let Some(placement) = meta.placement(partition.index) else { continue };
            if placement.leader == NodeId::NONE {
                continue;
            }
            let mut current = LeaderIdAndEpoch::default();
            current.leader_id = placement.leader.into();
            current.leader_epoch = placement.leader_epoch.0;
            partition.current_leader = current;
            leaders.insert(placement.leader);
        }
    }
    leaders
        .into_iter()
        .filter_map(|id| view.live_broker(id))
        .map(|broker| {
            let mut endpoint = NodeEndpoint::default();
            endpoint.node_id = broker.node_id.into();
            endpoint.host = StrBytes::from_string(broker.host.clone());
            endpoint.port = i32::from(broker.port);
            endpoint.rack = broker.rack.clone().map(StrBytes::from_string);
            endpoint
        })
        .collect()
}

fn acks_valid(acks: i16) -> bool {
    matches!(acks, -1..=1)
}

/// Splits a partition's records into validated batches; the error is the Kafka code.
fn split(records: Option<Bytes>, size_bytes_max: usize) -> Result<Vec<Bytes>, ErrorCode> {
    let Some(records) = records else {
        return Err(ErrorCode::InvalidRecord);
    };
    match batch::split_batches(&records, size_bytes_max) {
        Ok(ends) => {
            let mut start = 0;
            Ok(ends
                .into_iter()
                .map(|end| {
                    let piece = records.slice(start..end);
                    start = end;
                    piece
                })
                .collect())
        }
        Err(BatchError::TooLarge) => Err(ErrorCode::MessageTooLarge),
        // As Kafka's ProduceRequest validation: an old magic in a v3+ request, or a batch that
        // claims more bytes than were sent, is an invalid record; a bad CRC or a length too
        // short for a header is a corrupt message.
        Err(BatchError::UnsupportedMagic)
        | Err(BatchError::Truncated)
        | Err(BatchError::RecordsMismatch) => Err(ErrorCode::InvalidRecord),
        Err(BatchError::CorruptCrc) | Err(BatchError::Malformed) => Err(ErrorCode::CorruptMessage),
    }
}
