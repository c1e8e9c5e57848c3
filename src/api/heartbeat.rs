//! Heartbeat (API 12): keeps a member's session alive on the group's owning shard, and tells
//! the member to rejoin (REBALANCE_IN_PROGRESS) during a rebalance, as Kafka's classic groups do.

use bytes::Bytes;
use kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse};

use super::group_common::{call, check_group_id, EmptyGroupId};
use super::{Context, Outcome};
use crate::group::coordinator::{GroupRequest, GroupResponse};
use crate::group::state;
use crate::model::ErrorCode;
use crate::security::acl::Operation;

pub async fn handle(ctx: &Context, body: Bytes) -> Outcome {
    let request: HeartbeatRequest = match ctx.decode(body) {
        Ok(r) => r,
        Err(close) => return close,
    };
    let group_id = request.group_id.0.to_string();
    let code = match check_group_id(ctx, &group_id, EmptyGroupId::Refused, Operation::Read) {
        Err(code) => code,
        Ok(()) => {
            let beat = state::HeartbeatRequest {
                group_id: group_id.clone(),
                generation_id: request.generation_id,
                member_id: request.member_id.to_string(),
                group_instance_id: request.group_instance_id.as_ref().map(|s| s.to_string()),
            };
            match call(ctx, &group_id, GroupRequest::Heartbeat(beat)).await {
                Some(GroupResponse::Heartbeat(code)) => code,
                _ => ErrorCode::CoordinatorNotAvailable,
            }
        }
    };
    let mut response = HeartbeatResponse::default();
    response.error_code = code.code();
    ctx.reply(&response)
}
