//! SyncGroup (API 14): the leader's assignment goes to the owning shard's group, and every
//! member gets its own; from v5 a request without protocol type and name is
//! INCONSISTENT_GROUP_PROTOCOL, as in Kafka.

use bytes::Bytes;
use kafka_protocol::messages::{SyncGroupRequest, SyncGroupResponse};

use super::group_common::{call, check_group_id, EmptyGroupId};
use super::{str_bytes, Context, Outcome};
use crate::group::coordinator::{GroupRequest, GroupResponse};
use crate::group::state;
use crate::model::ErrorCode;
use crate::security::acl::Operation;

pub async fn handle(ctx: &Context, body: Bytes) -> Outcome {
    let request: SyncGroupRequest = match ctx.decode(body) {
        Ok(r) => r,
        Err(close) => return close,
    };
    let group_id = request.group_id.0.to_string();
    let missing_protocol =
        ctx.version >= 5 && (request.protocol_type.is_none() || request.protocol_name.is_none());
    let answer =
        if let Err(code) = check_group_id(ctx, &group_id, EmptyGroupId::Refused, Operation::Read) {
            state::SyncResponse::error(code)
        } else if missing_protocol {
            state::SyncResponse::error(ErrorCode::InconsistentGroupProtocol)
        } else {
            let sync = state::SyncRequest {
                group_id: group_id.clone(),
                generation_id: request.generation_id,
                member_id: request.member_id.to_string(),
                group_instance_id: request.group_instance_id.as_ref().map(|s| s.to_string()),
                protocol_type: request.protocol_type.as_ref().map(|s| s.to_string()),
                protocol_name: request.protocol_name.as_ref().map(|s| s.to_string()),
                assignments: request
                    .assignments
                    .iter()
                    .map(|a| (a.member_id.to_string(), a.assignment.clone()))
                    .collect(),
            };
            match call(ctx, &group_id, GroupRequest::Sync(sync)).await {
                Some(GroupResponse::Sync(answer)) => answer,
                _ => state::SyncResponse::error(ErrorCode::CoordinatorNotAvailable),
            }
        };
    let mut response = SyncGroupResponse::default();
    response.error_code = answer.error_code.code();
    if ctx.version >= 5 {
        response.protocol_type = answer.protocol_type.as_deref().map(str_bytes);
        response.protocol_name = answer.protocol_name.as_deref().map(str_bytes);
    }
    response.assignment = answer.assignment;
    ctx.reply(&response)
}
