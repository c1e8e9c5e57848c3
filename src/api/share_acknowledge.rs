//! ShareAcknowledge (API 79, KIP-932): a share group member's acknowledgements (ACCEPT,
//! RELEASE, REJECT, and GAP for offsets it never got) outside a ShareFetch, with its share
//! session's next epoch (0 is INVALID_SHARE_SESSION_EPOCH; -1 closes the session after the
//! acknowledgements, releasing what the member still holds). Answered once the share
//! partitions' new states are in the coordinator's log, so an acknowledged record is never
//! delivered again, not even after a crash. Clustered, it comes to the partitions' leader
//! and goes on to the group's coordinator (`share_call`).

use std::collections::BTreeMap;

use bytes::Bytes;
use kafka_protocol::messages::share_acknowledge_response::{
    LeaderIdAndEpoch, PartitionData, ShareAcknowledgeTopicResponse,
};
use kafka_protocol::messages::{ShareAcknowledgeRequest, ShareAcknowledgeResponse};

use super::share_call;
use super::share_common::{check_request, named_partitions, resolve};
use super::{Context, Outcome};
use crate::group::assignor::TopicId;
use crate::group::share::AckRequest;
use crate::group::share_call::{ShareAnswer, ShareCall};
use crate::model::ErrorCode;

pub async fn handle(ctx: &Context, body: Bytes) -> Outcome {
    let request: ShareAcknowledgeRequest = match ctx.decode(body) {
        Ok(r) => r,
        Err(close) => return close,
    };
    let mut response = ShareAcknowledgeResponse::default();
    let group_id = request.group_id.as_ref().map(|g| g.0.to_string()).unwrap_or_default();
    let member_id = request.member_id.as_ref().map(|m| m.to_string()).unwrap_or_default();
    if let Err(code) = check_request(ctx, &group_id, &member_id) {
        response.error_code = code.code();
        return ctx.reply(&response);
    }
    let named = named_partitions!(request.topics);
    let resolved = resolve(ctx, named);
    let ids: BTreeMap<_, TopicId> =
        resolved.known.iter().map(|p| (p.tp.clone(), p.topic_id)).collect();
    let ack = AckRequest {
        group_id: group_id.clone(),
        member_id,
        node: ctx.shard().config.node_id,
        session_epoch: request.share_session_epoch,
        partitions: resolved.known,
    };
    let outcome = match share_call::call(ctx, ShareCall::Acknowledge(ack)).await {
        ShareAnswer::Acknowledged(outcome) => outcome,
        _ => Err(ErrorCode::CoordinatorNotAvailable),
    };
    let acked = match outcome {
        Ok(acked) => acked,
        Err(code) => {
            response.error_code = code.code();
            return ctx.reply(&response);
        }
    };
    let node = ctx.shard().config.node_id.0;
    let mut by_topic: BTreeMap<TopicId, Vec<PartitionData>> = BTreeMap::new();
    let mut push = |topic_id: TopicId, partition: i32, code: ErrorCode| {
        let mut data = PartitionData::default();
        data.partition_index = partition;
        data.error_code = code.code();
        let mut leader = LeaderIdAndEpoch::default();
        leader.leader_id = node;
        data.current_leader = leader;
        by_topic.entry(topic_id).or_default().push(data);
    };
    for (topic_id, partition, code) in resolved.failed {
        push(topic_id, partition, code);
    }
    for (tp, code) in acked {
        if let Some(topic_id) = ids.get(&tp) {
            push(*topic_id, tp.partition, code);
        }
    }
    response.responses = by_topic
        .into_iter()
        .map(|(topic_id, partitions)| {
            let mut topic = ShareAcknowledgeTopicResponse::default();
            topic.topic_id = uuid::Uuid::from_bytes(topic_id);
            topic.partitions = partitions;
            topic
        })
        .collect();
    ctx.reply(&response)
}
