//! ConsumerGroupHeartbeat (API 68, KIP-848): a consumer group member's join, heartbeat,
//! subscription change, revocation report and leave, in one request. Checks what Kafka checks
//! before its coordinator (`throwIfConsumerGroupHeartbeatRequestIsInvalid`), then the group's
//! owning shard answers (`group::consumer`): the member epoch, the heartbeat interval and,
//! when it changed, the member's assignment by topic id.

use bytes::Bytes;
use kafka_protocol::messages::consumer_group_heartbeat_response::{Assignment, TopicPartitions};
use kafka_protocol::messages::{ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse};

use super::group_common::{heartbeat_response, modern_heartbeat};
use super::{Context, Outcome};
use crate::group::assignor;
use crate::group::consumer::{
    ConsumerHeartbeat, HeartbeatResponse, LEAVE_GROUP_MEMBER_EPOCH, LEAVE_GROUP_STATIC_MEMBER_EPOCH,
};
use crate::group::coordinator::GroupRequest;
use crate::model::ErrorCode;

pub async fn handle(ctx: &Context, body: Bytes) -> Outcome {
    let request: ConsumerGroupHeartbeatRequest = match ctx.decode(body) {
        Ok(r) => r,
        Err(close) => return close,
    };
    let group_id = request.group_id.0.to_string();
    let answer = match validate(ctx, &request) {
        Err(answer) => answer,
        Ok(()) => {
            let subscribed = request.subscribed_topic_names.as_ref();
            let beat = || GroupRequest::ConsumerHeartbeat(heartbeat(ctx, &group_id, &request));
            modern_heartbeat(ctx, &group_id, subscribed, beat).await
        }
    };
    let response =
        heartbeat_response!(ConsumerGroupHeartbeatResponse, Assignment, TopicPartitions, answer);
    ctx.reply(&response)
}

/// Kafka's request checks: INVALID_REQUEST with Kafka's messages, or UNSUPPORTED_ASSIGNOR.
fn validate(
    ctx: &Context,
    request: &ConsumerGroupHeartbeatRequest,
) -> Result<(), HeartbeatResponse> {
    let invalid = |message: &str| Err(HeartbeatResponse::error(ErrorCode::InvalidRequest, message));
    if request.group_id.0.is_empty() {
        return Err(HeartbeatResponse::error(ErrorCode::InvalidGroupId, "GroupId can't be empty."));
    }
    if request.instance_id.as_ref().is_some_and(|i| i.is_empty()) {
        return invalid("InstanceId can't be empty.");
    }
    if request.rack_id.as_ref().is_some_and(|r| r.is_empty()) {
        return invalid("RackId can't be empty.");
    }
    // v1+ (KIP-1082): the client makes its member id.
    if ctx.version >= 1 && request.member_id.is_empty() {
        return invalid("MemberId can't be empty.");
    }
    let epoch = request.member_epoch;
    if epoch == 0 {
        if request.rebalance_timeout_ms == -1 {
            return invalid("RebalanceTimeoutMs must be provided in first request.");
        }
        if request.topic_partitions.as_ref().is_none_or(|t| !t.is_empty()) {
            return invalid("TopicPartitions must be empty when (re-)joining.");
        }
        let names = request.subscribed_topic_names.is_some();
        let regex = request.subscribed_topic_regex.is_some();
        if !names && !regex {
            return invalid(
                "SubscribedTopicNames or SubscribedTopicRegex must be set in first request.",
            );
        }
    } else if epoch == LEAVE_GROUP_STATIC_MEMBER_EPOCH {
        if request.instance_id.is_none() {
            return invalid("InstanceId can't be null.");
        }
    } else if epoch < LEAVE_GROUP_STATIC_MEMBER_EPOCH {
        return invalid(&format!(
            "MemberEpoch is {epoch}, but must be greater than or equal to -2."
        ));
    }
    if epoch != 0 && epoch != LEAVE_GROUP_MEMBER_EPOCH && request.member_id.is_empty() {
        return invalid("MemberId can't be empty.");
    }
    if let Some(assignor) = request.server_assignor.as_ref().filter(|a| !a.is_empty()) {
        let offered = ctx.groups().config().consumer_assignors;
        if !assignor::known(assignor) || !offered.iter().any(|a| a.as_str() == &**assignor) {
            return Err(HeartbeatResponse::error(
                ErrorCode::UnsupportedAssignor,
                format!(
                    "ServerAssignor {} is not supported. Supported assignors: {}.",
                    &**assignor,
                    offered.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

fn heartbeat(
    ctx: &Context,
    group_id: &str,
    request: &ConsumerGroupHeartbeatRequest,
) -> ConsumerHeartbeat {
    ConsumerHeartbeat {
        group_id: group_id.to_string(),
        member_id: request.member_id.to_string(),
        member_epoch: request.member_epoch,
        instance_id: request.instance_id.as_ref().map(|s| s.to_string()),
        rack_id: request.rack_id.as_ref().map(|s| s.to_string()),
        rebalance_timeout_ms: request.rebalance_timeout_ms,
        subscribed_topic_names: request
            .subscribed_topic_names
            .as_ref()
            .map(|names| names.iter().map(|n| n.0.to_string()).collect()),
        subscribed_topic_regex: request.subscribed_topic_regex.as_ref().map(|s| s.to_string()),
        server_assignor: request.server_assignor.as_ref().map(|s| s.to_string()),
        owned: request.topic_partitions.as_ref().map(|topics| {
            let mut owned = assignor::Assignment::new();
            for t in topics {
                owned
                    .entry(*t.topic_id.as_bytes())
                    .or_default()
                    .extend(t.partitions.iter().copied());
            }
            owned
        }),
        client_id: ctx.header.client_id.as_ref().map(|c| c.to_string()).unwrap_or_default(),
        client_host: ctx.peer.map(|p| format!("/{}", p.ip())).unwrap_or_default(),
    }
}
