//! ConsumerGroupHeartbeat (API 68, KIP-848): a consumer group member's join, heartbeat,
//! subscription change, revocation report and leave, in one request. Checks what Kafka checks
//! before its coordinator (`throwIfConsumerGroupHeartbeatRequestIsInvalid`), then the group's
//! owning shard answers (`group::consumer`): the member epoch, the heartbeat interval and,
//! when it changed, the member's assignment by topic id.

use bytes::Bytes;
use kafka_protocol::messages::consumer_group_heartbeat_response::{Assignment, TopicPartitions};
use kafka_protocol::messages::{ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse};

use super::group_common::{call, check_group_id, EmptyGroupId};
use super::{str_bytes, Context, Outcome};
use crate::group::assignor;
use crate::group::consumer::{
    ConsumerHeartbeat, ConsumerHeartbeatResponse, LEAVE_GROUP_MEMBER_EPOCH,
    LEAVE_GROUP_STATIC_MEMBER_EPOCH,
};
use crate::group::coordinator::{GroupRequest, GroupResponse};
use crate::model::ErrorCode;
use crate::security::acl::Operation;

pub async fn handle(ctx: &Context, body: Bytes) -> Outcome {
    let request: ConsumerGroupHeartbeatRequest = match ctx.decode(body) {
        Ok(r) => r,
        Err(close) => return close,
    };
    let group_id = request.group_id.0.to_string();
    let answer = match validate(ctx, &request) {
        Err(answer) => answer,
        Ok(()) => match check_group_id(ctx, &group_id, EmptyGroupId::Refused, Operation::Read) {
            Err(ErrorCode::GroupAuthorizationFailed) => ConsumerHeartbeatResponse::error(
                ErrorCode::GroupAuthorizationFailed,
                "Group authorization failed.",
            ),
            Err(code) => ConsumerHeartbeatResponse::error(code, "not the coordinator"),
            Ok(()) if !subscription_allowed(ctx, &request) => ConsumerHeartbeatResponse::error(
                ErrorCode::TopicAuthorizationFailed,
                "Topic authorization failed for a subscribed topic.",
            ),
            Ok(()) => {
                let beat = heartbeat(ctx, &group_id, &request);
                match call(ctx, &group_id, GroupRequest::ConsumerHeartbeat(beat)).await {
                    Some(GroupResponse::ConsumerHeartbeat(answer)) => answer,
                    _ => ConsumerHeartbeatResponse::error(
                        ErrorCode::CoordinatorNotAvailable,
                        "coordinator unavailable",
                    ),
                }
            }
        },
    };
    let mut response = ConsumerGroupHeartbeatResponse::default();
    response.error_code = answer.error_code.code();
    response.error_message = answer.error_message.as_deref().map(str_bytes);
    if answer.error_code == ErrorCode::None {
        response.member_id = Some(str_bytes(&answer.member_id));
        response.member_epoch = answer.member_epoch;
        response.heartbeat_interval_ms = answer.heartbeat_interval_ms;
        response.assignment = answer.assignment.map(|assigned| {
            let mut assignment = Assignment::default();
            assignment.topic_partitions = assigned
                .into_iter()
                .map(|(topic, partitions)| {
                    let mut entry = TopicPartitions::default();
                    entry.topic_id = uuid::Uuid::from_bytes(topic);
                    entry.partitions = partitions.into_iter().collect();
                    entry
                })
                .collect();
            assignment
        });
    }
    ctx.reply(&response)
}

/// Kafka: every topic a member subscribes to by name needs DESCRIBE.
fn subscription_allowed(ctx: &Context, request: &ConsumerGroupHeartbeatRequest) -> bool {
    let names = request.subscribed_topic_names.iter().flatten();
    names.into_iter().all(|name| ctx.topic_allowed(Operation::Describe, name))
}

/// Kafka's request checks: INVALID_REQUEST with Kafka's messages, or UNSUPPORTED_ASSIGNOR.
fn validate(
    ctx: &Context,
    request: &ConsumerGroupHeartbeatRequest,
) -> Result<(), ConsumerHeartbeatResponse> {
    let invalid =
        |message: &str| Err(ConsumerHeartbeatResponse::error(ErrorCode::InvalidRequest, message));
    if request.group_id.0.is_empty() {
        return Err(ConsumerHeartbeatResponse::error(
            ErrorCode::InvalidGroupId,
            "GroupId can't be empty.",
        ));
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
            return Err(ConsumerHeartbeatResponse::error(
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
