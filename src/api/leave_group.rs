//! LeaveGroup (API 13): removes one member (v0-2) or a batch of members by member or instance
//! id (v3+, KIP-345) from their group on the owning shard, which rebalances as Kafka's does.

use bytes::Bytes;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{LeaveGroupRequest, LeaveGroupResponse};

use super::group_common::{call, check_group_id, EmptyGroupId};
use super::{str_bytes, Context, Outcome};
use crate::group::coordinator::{GroupRequest, GroupResponse};
use crate::group::state::{self, LeaveMember};
use crate::model::ErrorCode;
use crate::security::acl::Operation;

pub async fn handle(ctx: &Context, body: Bytes) -> Outcome {
    let request: LeaveGroupRequest = match ctx.decode(body) {
        Ok(r) => r,
        Err(close) => return close,
    };
    let group_id = request.group_id.0.to_string();
    let leaving: Vec<LeaveMember> = if ctx.version < 3 {
        vec![LeaveMember { member_id: request.member_id.to_string(), group_instance_id: None }]
    } else {
        request
            .members
            .iter()
            .map(|m| LeaveMember {
                member_id: m.member_id.to_string(),
                group_instance_id: m.group_instance_id.as_ref().map(|s| s.to_string()),
            })
            .collect()
    };
    let answer = match check_group_id(ctx, &group_id, EmptyGroupId::Refused, Operation::Read) {
        Err(code) => state::LeaveResponse { error_code: code, members: Vec::new() },
        Ok(()) => {
            let leave = GroupRequest::Leave { group_id: group_id.clone(), members: leaving };
            match call(ctx, &group_id, leave).await {
                Some(GroupResponse::Leave(answer)) => answer,
                _ => state::LeaveResponse {
                    error_code: ErrorCode::CoordinatorNotAvailable,
                    members: Vec::new(),
                },
            }
        }
    };
    let mut response = LeaveGroupResponse::default();
    if ctx.version < 3 {
        // One member, no member list: its error is the response's (as Kafka answers v0-v2).
        let member_error = answer.members.first().map_or(ErrorCode::None, |(_, code)| *code);
        let code =
            if answer.error_code != ErrorCode::None { answer.error_code } else { member_error };
        response.error_code = code.code();
    } else {
        response.error_code = answer.error_code.code();
        response.members = answer
            .members
            .into_iter()
            .map(|(who, code)| {
                let mut member = MemberResponse::default();
                member.member_id = str_bytes(&who.member_id);
                member.group_instance_id = who.group_instance_id.as_deref().map(str_bytes);
                member.error_code = code.code();
                member
            })
            .collect();
    }
    ctx.reply(&response)
}
