//! JoinGroup (API 11): checks the group id, the session timeout against the broker's bounds
//! and the lengths of names, as Kafka does, then the owning shard's `group::state` runs Kafka's
//! classic rebalance (MEMBER_ID_REQUIRED from v4, static members, skip_assignment from v9).

use bytes::Bytes;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::{JoinGroupRequest, JoinGroupResponse};

use super::group_common::{call, check_group_id, EmptyGroupId};
use super::{str_bytes, Context, Outcome};
use crate::group::coordinator::{GroupRequest, GroupResponse};
use crate::group::records::STRING_LENGTH_MAX;
use crate::group::state::{self, Protocol};
use crate::model::ErrorCode;
use crate::security::acl::Operation;

pub async fn handle(ctx: &Context, body: Bytes) -> Outcome {
    let request: JoinGroupRequest = match ctx.decode(body) {
        Ok(r) => r,
        Err(close) => return close,
    };
    let group_id = request.group_id.0.to_string();
    let member_id = request.member_id.to_string();
    let limits = ctx.groups().config();
    let session = request.session_timeout_ms;
    let too_long = request.group_instance_id.as_ref().is_some_and(|i| i.len() > STRING_LENGTH_MAX)
        || request.protocol_type.len() > STRING_LENGTH_MAX
        || request.protocols.iter().any(|p| p.name.len() > STRING_LENGTH_MAX);
    let answer = if let Err(code) =
        check_group_id(ctx, &group_id, EmptyGroupId::Refused, Operation::Read)
    {
        state::JoinResponse::error(&member_id, code)
    } else if session < limits.session_timeout_ms_min || session > limits.session_timeout_ms_max {
        state::JoinResponse::error(&member_id, ErrorCode::InvalidSessionTimeout)
    } else if too_long {
        state::JoinResponse::error(&member_id, ErrorCode::InvalidRequest)
    } else {
        let join = state::JoinRequest {
            group_id: group_id.clone(),
            member_id: member_id.clone(),
            group_instance_id: request.group_instance_id.as_ref().map(|s| s.to_string()),
            client_id: client_id(ctx),
            client_host: client_host(ctx),
            session_timeout_ms: session,
            rebalance_timeout_ms: if ctx.version >= 1 {
                request.rebalance_timeout_ms
            } else {
                session
            },
            protocol_type: request.protocol_type.to_string(),
            protocols: request
                .protocols
                .iter()
                .map(|p| Protocol { name: p.name.to_string(), metadata: p.metadata.clone() })
                .collect(),
            require_known_member_id: ctx.version >= 4,
            supports_skip_assignment: ctx.version >= 9,
        };
        match call(ctx, &group_id, GroupRequest::Join(join)).await {
            Some(GroupResponse::Join(answer)) => answer,
            _ => state::JoinResponse::error(&member_id, ErrorCode::CoordinatorNotAvailable),
        }
    };
    let mut response = JoinGroupResponse::default();
    response.error_code = answer.error_code.code();
    response.generation_id = answer.generation_id;
    if ctx.version >= 7 {
        response.protocol_type = answer.protocol_type.as_deref().map(str_bytes);
        response.protocol_name = answer.protocol_name.as_deref().map(str_bytes);
    } else {
        // Not nullable before v7.
        response.protocol_name = Some(str_bytes(answer.protocol_name.as_deref().unwrap_or("")));
    }
    response.leader = str_bytes(&answer.leader);
    response.skip_assignment = ctx.version >= 9 && answer.skip_assignment;
    response.member_id = str_bytes(&answer.member_id);
    response.members = answer
        .members
        .into_iter()
        .map(|m| {
            let mut member = JoinGroupResponseMember::default();
            member.member_id = str_bytes(&m.member_id);
            if ctx.version >= 5 {
                member.group_instance_id = m.group_instance_id.as_deref().map(str_bytes);
            }
            member.metadata = m.metadata;
            member
        })
        .collect();
    ctx.reply(&response)
}

fn client_id(ctx: &Context) -> String {
    ctx.header.client_id.as_ref().map(|s| s.to_string()).unwrap_or_default()
}

/// Kafka reports a member's host as Java prints an address: "/127.0.0.1".
fn client_host(ctx: &Context) -> String {
    ctx.peer.map(|peer| format!("/{}", peer.ip())).unwrap_or_default()
}
