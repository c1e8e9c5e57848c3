//! What the consumer group handlers share. Each handler (`join_group`, `sync_group`,
//! `heartbeat`, `leave_group`, `offset_commit`, `offset_fetch`, `offset_delete`,
//! `describe_groups`, `list_groups`, `delete_groups`) checks what Kafka checks before its
//! coordinator (group id, session timeout, topics), turns the request into plain
//! `group::state` data, and sends it to the shard that owns the group: one mesh message per
//! request and owning shard (ListGroups asks every shard). The answer is turned back into the
//! wire format of the request's version. FindCoordinator names this broker for every group.

use super::Context;
use crate::constants::GROUP_ID_LENGTH_MAX;
use crate::group::coordinator::{GroupRequest, GroupResponse};
use crate::model::ErrorCode;

/// Whether an API takes the empty group id. Kafka refuses it for the membership APIs (and
/// OffsetDelete) but accepts it for OffsetCommit, OffsetFetch, DescribeGroups and
/// DeleteGroups (old clients used it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum EmptyGroupId {
    Refused,
    Accepted,
}

/// Checks a request's group id. Kafka has no length limit; ours is what its offsets records
/// can hold.
pub(super) fn check_group_id(group_id: &str, empty: EmptyGroupId) -> Result<(), ErrorCode> {
    let refused = group_id.is_empty() && empty == EmptyGroupId::Refused;
    if refused || group_id.len() > GROUP_ID_LENGTH_MAX {
        return Err(ErrorCode::InvalidGroupId);
    }
    Ok(())
}

/// Sends `request` to the coordinator of the shard that owns `group_id`.
pub(super) async fn call(
    ctx: &Context,
    group_id: &str,
    request: GroupRequest,
) -> Option<GroupResponse> {
    let owner = ctx.groups().owner(group_id);
    ctx.groups().call(owner, request).await
}
