//! What the consumer group handlers share. Each handler (`join_group`, `sync_group`,
//! `heartbeat`, `leave_group`, `offset_commit`, `offset_fetch`, `offset_delete`,
//! `describe_groups`, `list_groups`, `delete_groups`) checks what Kafka checks before its
//! coordinator (group id, session timeout, topics), turns the request into plain
//! `group::state` data, and sends it to the shard that owns the group: one mesh message per
//! request and owning shard (ListGroups asks every shard). The answer is turned back into the
//! wire format of the request's version. FindCoordinator names this broker for every group
//! on a single node; in a cluster the node that owns the group's partition of
//! `__consumer_offsets`, and every other node answers NOT_COORDINATOR for it.

use super::Context;
use crate::constants::GROUP_ID_LENGTH_MAX;
use crate::group::coordinator::{GroupRequest, GroupResponse};
use crate::model::ErrorCode;
use crate::security::acl::Operation;
use crate::shard::internal_log::OFFSETS_TOPIC;

/// Whether an API takes the empty group id. Kafka refuses it for the membership APIs (and
/// OffsetDelete) but accepts it for OffsetCommit, OffsetFetch, DescribeGroups and
/// DeleteGroups (old clients used it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum EmptyGroupId {
    Refused,
    Accepted,
}

/// Checks a request's group id, after the principal's `operation` on the group (with an
/// authorizer; GROUP_AUTHORIZATION_FAILED first, as Kafka checks it before the coordinator
/// sees the request). Kafka has no length limit; ours is what its offsets records
/// can hold. In a cluster, a group another node coordinates is NOT_COORDINATOR (the client
/// asks FindCoordinator again), and any group before the coordinators are placed
/// COORDINATOR_NOT_AVAILABLE.
pub(super) fn check_group_id(
    ctx: &Context,
    group_id: &str,
    empty: EmptyGroupId,
    operation: Operation,
) -> Result<(), ErrorCode> {
    if !ctx.group_allowed(operation, group_id) {
        return Err(ErrorCode::GroupAuthorizationFailed);
    }
    let refused = group_id.is_empty() && empty == EmptyGroupId::Refused;
    if refused || group_id.len() > GROUP_ID_LENGTH_MAX {
        return Err(ErrorCode::InvalidGroupId);
    }
    coordinated_here(ctx, OFFSETS_TOPIC, group_id)
}

/// The group ids of a multi-group request that pass `check_group_id`, by the shard that
/// owns each; the caller answers the others with their check's error.
pub(super) fn by_owner(
    ctx: &Context,
    ids: &[String],
    empty: EmptyGroupId,
    operation: Operation,
) -> std::collections::BTreeMap<crate::model::ShardId, Vec<String>> {
    let mut by_shard: std::collections::BTreeMap<_, Vec<String>> = Default::default();
    for id in ids.iter().filter(|id| check_group_id(ctx, id, empty, operation).is_ok()) {
        by_shard.entry(ctx.groups().owner(id)).or_default().push(id.clone());
    }
    by_shard
}

/// Whether this node coordinates `key` of `internal_topic` (always on a single node).
pub(super) fn coordinated_here(
    ctx: &Context,
    internal_topic: &str,
    key: &str,
) -> Result<(), ErrorCode> {
    if !ctx.cluster().clustered() {
        return Ok(());
    }
    let view = ctx.cluster().view();
    match view.as_ref().and_then(|view| view.coordinator(internal_topic, key)) {
        Some(owner) if owner == ctx.shard().config.node_id => Ok(()),
        Some(_) => Err(ErrorCode::NotCoordinator),
        None => Err(ErrorCode::CoordinatorNotAvailable),
    }
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
