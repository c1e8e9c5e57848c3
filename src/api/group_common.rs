//! What the consumer group handlers share. Each handler (`join_group`, `sync_group`,
//! `heartbeat`, `leave_group`, `offset_commit`, `offset_fetch`, `offset_delete`,
//! `describe_groups`, `list_groups`, `delete_groups`) checks what Kafka checks before its
//! coordinator (group id, session timeout, topics), turns the request into plain
//! `group::state` data, and sends it to the shard that owns the group: one mesh message per
//! request and owning shard (ListGroups asks every shard). The answer is turned back into the
//! wire format of the request's version. FindCoordinator names this broker for every group
//! on a single node; in a cluster the node that owns the group's partition of
//! `__consumer_offsets`, and every other node answers NOT_COORDINATOR for it.

use kafka_protocol::messages::TopicName;

use super::Context;
use crate::constants::GROUP_ID_LENGTH_MAX;
use crate::group::consumer::HeartbeatResponse;
use crate::group::coordinator::{GroupRequest, GroupResponse};
use crate::model::ErrorCode;
use crate::security::acl::Operation;
use crate::shard::internal_log::{self, OFFSETS_TOPIC};
use crate::shard::table::coordinator_partition;

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
    let me = ctx.shard().config.node_id;
    match view.as_ref().and_then(|view| view.coordinator(internal_topic, key)) {
        Some(owner) if owner == me => {
            // The view (the log as shard 0 applied it, which FindCoordinator answers from)
            // can be a moment ahead of the catalog, whose partition roles the coordinators
            // serve by: until the catalog has this node lead the key's partition too, the
            // coordinator would say NOT_COORDINATOR and send the client away from the node
            // FindCoordinator named. Kafka answers COORDINATOR_LOAD_IN_PROGRESS (retriable,
            // the client stays) while it takes a partition on.
            if !internal_log::replicated(internal_topic) {
                return Ok(()); // a static placement of the previous version: no topic
            }
            let partitions = view.as_ref().and_then(|v| v.coordinators.get(internal_topic));
            let partition = coordinator_partition(key, partitions.map_or(0, Vec::len));
            let catalog = ctx.shard().catalog.borrow();
            let leader = catalog.get(internal_topic).and_then(|m| m.leader(partition as i32));
            match leader {
                Some(leader) if leader == me => Ok(()),
                _ => Err(ErrorCode::CoordinatorLoadInProgress),
            }
        }
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

/// A KIP-848 or KIP-932 heartbeat once the request passed its own checks: READ on the group
/// (GROUP_AUTHORIZATION_FAILED with Kafka's message), the group id and coordinator checks,
/// DESCRIBE on every subscribed topic (TOPIC_AUTHORIZATION_FAILED), then the shard that owns
/// the group answers `beat`.
pub(super) async fn modern_heartbeat(
    ctx: &Context,
    group_id: &str,
    subscribed: Option<&Vec<TopicName>>,
    beat: impl FnOnce() -> GroupRequest,
) -> HeartbeatResponse {
    match check_group_id(ctx, group_id, EmptyGroupId::Refused, Operation::Read) {
        Err(ErrorCode::GroupAuthorizationFailed) => {
            return HeartbeatResponse::error(
                ErrorCode::GroupAuthorizationFailed,
                "Group authorization failed.",
            )
        }
        Err(code) => return HeartbeatResponse::error(code, "not the coordinator"),
        Ok(()) => {}
    }
    // Kafka: every topic a member subscribes to by name needs DESCRIBE.
    let names = subscribed.into_iter().flatten();
    if !names.into_iter().all(|name| ctx.topic_allowed(Operation::Describe, name)) {
        return HeartbeatResponse::error(
            ErrorCode::TopicAuthorizationFailed,
            "Topic authorization failed for a subscribed topic.",
        );
    }
    match call(ctx, group_id, beat()).await {
        Some(GroupResponse::ConsumerHeartbeat(answer) | GroupResponse::ShareHeartbeat(answer)) => {
            answer
        }
        _ => {
            HeartbeatResponse::error(ErrorCode::CoordinatorNotAvailable, "coordinator unavailable")
        }
    }
}

/// A heartbeat's answer in the wire type of its API: ConsumerGroupHeartbeat and
/// ShareGroupHeartbeat answer with distinct types that have the same fields, so this is a
/// macro rather than a function.
macro_rules! heartbeat_response {
    ($response:ty, $assignment:ty, $topic:ty, $answer:expr) => {{
        let answer: $crate::group::consumer::HeartbeatResponse = $answer;
        let mut response = <$response>::default();
        response.error_code = answer.error_code.code();
        response.error_message = answer.error_message.as_deref().map($crate::api::str_bytes);
        if answer.error_code == $crate::model::ErrorCode::None {
            response.member_id = Some($crate::api::str_bytes(&answer.member_id));
            response.member_epoch = answer.member_epoch;
            response.heartbeat_interval_ms = answer.heartbeat_interval_ms;
            response.assignment = answer.assignment.map(|assigned| {
                let mut assignment = <$assignment>::default();
                assignment.topic_partitions = assigned
                    .into_iter()
                    .map(|(topic, partitions)| {
                        let mut entry = <$topic>::default();
                        entry.topic_id = uuid::Uuid::from_bytes(topic);
                        entry.partitions = partitions.into_iter().collect();
                        entry
                    })
                    .collect();
                assignment
            });
        }
        response
    }};
}
pub(super) use heartbeat_response;

/// A member's assignment as ConsumerGroupDescribe and ShareGroupDescribe report it: topic ids
/// with their names (distinct wire types with the same fields, hence a macro).
macro_rules! described_assignment {
    ($assignment:ty, $topic:ty, $catalog:expr, $assigned:expr) => {{
        let assigned: &$crate::group::assignor::Assignment = $assigned;
        let mut out = <$assignment>::default();
        out.topic_partitions = assigned
            .iter()
            .map(|(topic, partitions)| {
                let mut entry = <$topic>::default();
                entry.topic_id = uuid::Uuid::from_bytes(*topic);
                let name = $catalog.name_of(topic).map(|n| n.to_string()).unwrap_or_default();
                let name = $crate::api::str_bytes(&name);
                entry.topic_name = kafka_protocol::messages::TopicName(name);
                entry.partitions = partitions.iter().copied().collect();
                entry
            })
            .collect();
        out
    }};
}
pub(super) use described_assignment;

/// ConsumerGroupDescribe and ShareGroupDescribe: asks each shard that owns some of `ids`
/// (those that pass `check_group_id`) with `request`, and gathers what `answer` finds in
/// the responses, by group id.
pub(super) async fn describe_by_owner<T>(
    ctx: &Context,
    ids: &[String],
    request: impl Fn(Vec<String>) -> GroupRequest,
    answer: impl Fn(GroupResponse) -> Option<Vec<(String, T)>>,
) -> std::collections::BTreeMap<String, T> {
    let owners = by_owner(ctx, ids, EmptyGroupId::Refused, Operation::Describe);
    let calls = owners.into_iter().map(|(owner, groups)| ctx.groups().call(owner, request(groups)));
    let answers = futures::future::join_all(calls).await;
    answers.into_iter().flatten().filter_map(answer).flatten().collect()
}

/// One group of a describe: its entry in `described`, else the error of its group id check,
/// else COORDINATOR_NOT_AVAILABLE (its shard did not answer).
pub(super) fn described_one<T>(
    ctx: &Context,
    id: &str,
    described: &mut std::collections::BTreeMap<String, T>,
) -> Result<T, ErrorCode> {
    check_group_id(ctx, id, EmptyGroupId::Refused, Operation::Describe)?;
    described.remove(id).ok_or(ErrorCode::CoordinatorNotAvailable)
}
