//! ShareGroupHeartbeat (API 76, KIP-932): a share group member's join, heartbeat,
//! subscription change and leave. Checks what Kafka checks before its coordinator
//! (`throwIfShareGroupHeartbeatRequestIsInvalid`), then the group's owning shard answers
//! (`group::share`): the member epoch, the heartbeat interval and, when it changed, the
//! member's partitions by topic id (clustered, a node that does not coordinate the group
//! answers NOT_COORDINATOR, as for a consumer group).

use bytes::Bytes;
use kafka_protocol::messages::share_group_heartbeat_response::{Assignment, TopicPartitions};
use kafka_protocol::messages::{ShareGroupHeartbeatRequest, ShareGroupHeartbeatResponse};

use super::group_common::{heartbeat_response, modern_heartbeat};
use super::{Context, Outcome};
use crate::group::consumer::HeartbeatResponse;
use crate::group::coordinator::GroupRequest;
use crate::group::share::{ShareHeartbeat, LEAVE_GROUP_MEMBER_EPOCH};
use crate::model::ErrorCode;

pub async fn handle(ctx: &Context, body: Bytes) -> Outcome {
    let request: ShareGroupHeartbeatRequest = match ctx.decode(body) {
        Ok(r) => r,
        Err(close) => return close,
    };
    let group_id = request.group_id.0.to_string();
    let answer = match validate(&request) {
        Err(answer) => answer,
        Ok(()) => {
            let subscribed = request.subscribed_topic_names.as_ref();
            let beat = || GroupRequest::ShareHeartbeat(heartbeat(ctx, &group_id, &request));
            modern_heartbeat(ctx, &group_id, subscribed, beat).await
        }
    };
    let response =
        heartbeat_response!(ShareGroupHeartbeatResponse, Assignment, TopicPartitions, answer);
    ctx.reply(&response)
}

fn heartbeat(
    ctx: &Context,
    group_id: &str,
    request: &ShareGroupHeartbeatRequest,
) -> ShareHeartbeat {
    ShareHeartbeat {
        group_id: group_id.to_string(),
        member_id: request.member_id.to_string(),
        member_epoch: request.member_epoch,
        rack_id: request.rack_id.as_ref().map(|s| s.to_string()),
        subscribed_topic_names: request
            .subscribed_topic_names
            .as_ref()
            .map(|names| names.iter().map(|n| n.0.to_string()).collect()),
        client_id: ctx.header.client_id.as_ref().map(|c| c.to_string()).unwrap_or_default(),
        client_host: ctx.peer.map(|p| format!("/{}", p.ip())).unwrap_or_default(),
    }
}

/// Kafka's request checks (INVALID_REQUEST with Kafka's messages).
fn validate(request: &ShareGroupHeartbeatRequest) -> Result<(), HeartbeatResponse> {
    let invalid = |message: &str| Err(HeartbeatResponse::error(ErrorCode::InvalidRequest, message));
    if request.group_id.0.is_empty() {
        return Err(HeartbeatResponse::error(ErrorCode::InvalidGroupId, "GroupId can't be empty."));
    }
    if request.rack_id.as_ref().is_some_and(|r| r.is_empty()) {
        return invalid("RackId can't be empty.");
    }
    if request.member_id.is_empty() {
        return invalid("MemberId can't be empty.");
    }
    let epoch = request.member_epoch;
    if epoch < LEAVE_GROUP_MEMBER_EPOCH {
        return invalid(&format!(
            "MemberEpoch is {epoch}, but must be greater than or equal to -1."
        ));
    }
    if epoch == 0 && request.subscribed_topic_names.as_ref().is_none_or(|t| t.is_empty()) {
        return invalid("SubscribedTopicNames must be set in first request.");
    }
    Ok(())
}
