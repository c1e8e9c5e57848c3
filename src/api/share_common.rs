//! What the share group handlers (`share_fetch`, `share_acknowledge`, and the offset admin
//! APIs) share: the checks of the request as a whole, naming its partitions by topic id,
//! with READ checked on each topic, and turning its acknowledgement batches into
//! `group::share_partition::AckBatch`es.

use std::collections::BTreeMap;

use super::group_common::{check_group_id, EmptyGroupId};
use super::Context;
use crate::group::assignor::TopicId;
use crate::group::share::SessionPartition;
use crate::group::share_partition::AckBatch;
use crate::model::{ErrorCode, Isolation, ShardId, TopicPartition};
use crate::partition::{PartitionRequest, PartitionResponse};
use crate::security::acl::Operation;

/// The group-level checks of the share-group offset admin APIs (AlterShareGroupOffsets,
/// DeleteShareGroupOffsets): the group id and `operation` on the group as
/// `group_common::check_group_id` makes them.
pub(super) fn check_offsets_admin(
    ctx: &Context,
    group_id: &str,
    operation: Operation,
) -> Result<(), ErrorCode> {
    check_group_id(ctx, group_id, EmptyGroupId::Refused, operation)
}

/// Kafka's message with NON_EMPTY_GROUP from the share-group offset admin APIs.
pub(super) fn non_empty_message(group_id: &str) -> String {
    format!("The group {group_id} is not empty.")
}

/// A request's partitions: those it may use, and the others with their error.
#[derive(Default)]
pub(super) struct Resolved {
    pub known: Vec<SessionPartition>,
    pub failed: Vec<(TopicId, i32, ErrorCode)>,
}

/// One partition as a request names it: topic id, partition, acknowledgement batches
/// (first offset, last offset, types).
pub(super) type Named = (TopicId, i32, Vec<(i64, i64, Vec<i8>)>);

/// The checks ShareFetch and ShareAcknowledge make of the whole request, in Kafka's order: a
/// request without a group or member id INVALID_REQUEST, and the member needs READ on the
/// group (GROUP_AUTHORIZATION_FAILED).
pub(super) fn check_request(
    ctx: &Context,
    group_id: &str,
    member_id: &str,
) -> Result<(), ErrorCode> {
    if group_id.is_empty() || member_id.is_empty() {
        Err(ErrorCode::InvalidRequest)
    } else if !ctx.group_allowed(Operation::Read, group_id) {
        Err(ErrorCode::GroupAuthorizationFailed)
    } else {
        Ok(())
    }
}

/// Every partition of a request's topics with its acknowledgement batches, as `Named`s.
/// ShareFetch and ShareAcknowledge carry them in two distinct types with the same fields, so
/// this is a macro rather than a function.
macro_rules! named_partitions {
    ($topics:expr) => {{
        let named: Vec<$crate::api::share_common::Named> = $topics
            .iter()
            .flat_map(|topic| {
                let topic_id = *topic.topic_id.as_bytes();
                topic.partitions.iter().map(move |p| {
                    let acks = p.acknowledgement_batches.iter();
                    let acks =
                        acks.map(|b| (b.first_offset, b.last_offset, b.acknowledge_types.clone()));
                    (topic_id, p.partition_index, acks.collect())
                })
            })
            .collect();
        named
    }};
}
pub(super) use named_partitions;

/// Names each partition by its topic: UNKNOWN_TOPIC_ID for an id the catalog does not know,
/// TOPIC_AUTHORIZATION_FAILED without READ on the topic, UNKNOWN_TOPIC_OR_PARTITION for a
/// partition the topic does not have, as Kafka answers.
pub(super) fn resolve(ctx: &Context, partitions: Vec<Named>) -> Resolved {
    let catalog = ctx.shard().catalog.borrow();
    let mut out = Resolved::default();
    for (topic_id, partition, acks) in partitions {
        let meta = catalog
            .name_of(&topic_id)
            .and_then(|name| catalog.get(&name).cloned())
            .filter(|meta| !meta.is_internal());
        let Some(meta) = meta else {
            out.failed.push((topic_id, partition, ErrorCode::UnknownTopicId));
            continue;
        };
        if !ctx.topic_allowed(Operation::Read, &meta.name) {
            out.failed.push((topic_id, partition, ErrorCode::TopicAuthorizationFailed));
            continue;
        }
        if !(0..meta.partitions).contains(&partition) {
            out.failed.push((topic_id, partition, ErrorCode::UnknownTopicOrPartition));
            continue;
        }
        let acks = acks
            .into_iter()
            .map(|(first_offset, last_offset, types)| AckBatch { first_offset, last_offset, types })
            .collect();
        let tp = TopicPartition::new(meta.name.clone(), partition);
        out.known.push(SessionPartition { tp, topic_id, acks });
    }
    out
}

/// ListOffsets on the partitions' owners, one call per owning shard: each partition with
/// its Kafka timestamp (-2 earliest, the log start; -1 latest, the high watermark, or under
/// read_committed the last stable offset), the offset or the error of each that answered
/// (NOT_LEADER_OR_FOLLOWER on a clustered node that does not lead it).
pub async fn list_offsets(
    ctx: &Context,
    partitions: impl Iterator<Item = (TopicPartition, i64)>,
    isolation: Isolation,
) -> BTreeMap<TopicPartition, Result<i64, ErrorCode>> {
    let mut by_shard: BTreeMap<ShardId, Vec<(TopicPartition, i64)>> = BTreeMap::new();
    for (tp, timestamp) in partitions {
        by_shard.entry(ctx.shard().owner(&tp)).or_default().push((tp, timestamp));
    }
    let calls = by_shard.into_iter().map(|(owner, partitions)| {
        ctx.partitions().call(owner, PartitionRequest::ListOffsets { partitions, isolation })
    });
    let mut out = BTreeMap::new();
    for answer in futures::future::join_all(calls).await {
        let Some(PartitionResponse::Offsets(results)) = answer else { continue };
        for result in results {
            let offset = match result.error_code {
                ErrorCode::None => Ok(result.offset.0),
                code => Err(code),
            };
            out.insert(result.tp, offset);
        }
    }
    out
}
