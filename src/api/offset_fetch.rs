//! OffsetFetch (API 9): a group's committed offsets, of every partition or of those named;
//! from v8 (KIP-709) several groups at once, with one mesh message per owning shard; from v9
//! (KIP-848) with the member id and epoch, which a consumer group checks (UNKNOWN_MEMBER_ID,
//! STALE_MEMBER_EPOCH per group); from v7 with `require_stable`, an offset an open
//! transaction holds is UNSTABLE_OFFSET_COMMIT for its partition. From v10 (KIP-848, Kafka
//! 4.1) topics are named by id, as Kafka does: an id the catalog does not know answers
//! UNKNOWN_TOPIC_ID for the partitions asked, and a fetch of every topic leaves out topics
//! that no longer exist (they have no id).

use std::collections::BTreeMap;

use bytes::Bytes;
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{GroupId, OffsetFetchRequest, OffsetFetchResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::group_common::{check_group_id, EmptyGroupId};
use super::{str_bytes, Context, Outcome};
use crate::group::coordinator::{FetchGroup, GroupRequest, GroupResponse};
use crate::group::state::FetchedOffset;
use crate::model::{ErrorCode, ShardId};
use crate::security::acl::Operation;

pub async fn handle(ctx: &Context, body: Bytes) -> Outcome {
    let request: OffsetFetchRequest = match ctx.decode(body) {
        Ok(r) => r,
        Err(close) => return close,
    };
    type Wanted = Option<Vec<(String, Vec<i32>)>>;
    let by_id = ctx.version >= 10;
    let mut members: BTreeMap<String, (String, i32)> = BTreeMap::new();
    // v10: per group, the topics asked for by an id the catalog does not know.
    let mut unknown_ids: BTreeMap<String, Vec<(uuid::Uuid, Vec<i32>)>> = BTreeMap::new();
    let asked: Vec<(String, Wanted)> = if ctx.version < 8 {
        let topics = request.topics.as_ref().map(|topics| {
            topics.iter().map(|t| (t.name.0.to_string(), t.partition_indexes.clone())).collect()
        });
        vec![(request.group_id.0.to_string(), topics)]
    } else {
        if ctx.version >= 9 {
            for g in &request.groups {
                if let Some(member_id) = &g.member_id {
                    members
                        .insert(g.group_id.0.to_string(), (member_id.to_string(), g.member_epoch));
                }
            }
        }
        let catalog = ctx.shard().catalog.borrow();
        let asked = request
            .groups
            .iter()
            .map(|g| {
                let group_id = g.group_id.0.to_string();
                let topics = g.topics.as_ref().map(|topics| {
                    let mut named = Vec::with_capacity(topics.len());
                    for t in topics {
                        let name = if by_id {
                            catalog.name_of(t.topic_id.as_bytes()).map(|n| n.to_string())
                        } else {
                            Some(t.name.0.to_string())
                        };
                        match name {
                            Some(name) => named.push((name, t.partition_indexes.clone())),
                            None => unknown_ids
                                .entry(group_id.clone())
                                .or_default()
                                .push((t.topic_id, t.partition_indexes.clone())),
                        }
                    }
                    named
                });
                (group_id, topics)
            })
            .collect();
        asked
    };
    // v7+: offsets a transaction still holds are UNSTABLE_OFFSET_COMMIT (clients retry).
    let require_stable = ctx.version >= 7 && request.require_stable;
    // One message per owning shard, with every group it owns.
    let mut by_shard: BTreeMap<ShardId, Vec<FetchGroup>> = BTreeMap::new();
    let mut found: BTreeMap<String, Result<Vec<FetchedOffset>, ErrorCode>> = BTreeMap::new();
    for (group_id, wanted) in &asked {
        match check_group_id(ctx, group_id, EmptyGroupId::Accepted, Operation::Describe) {
            Err(code) => {
                found.insert(group_id.clone(), Err(code));
            }
            Ok(()) => {
                let owner = ctx.groups().owner(group_id);
                by_shard.entry(owner).or_default().push(FetchGroup {
                    group_id: group_id.clone(),
                    member: members.get(group_id).cloned(),
                    partitions: wanted.clone(),
                    require_stable,
                });
            }
        }
    }
    let calls = by_shard.into_iter().map(|(owner, groups)| {
        let ids: Vec<String> = groups.iter().map(|g| g.group_id.clone()).collect();
        let call = ctx.groups().call(owner, GroupRequest::Fetch { groups });
        async move { (ids, call.await) }
    });
    for (ids, answer) in futures::future::join_all(calls).await {
        match answer {
            Some(GroupResponse::Fetch(groups)) => {
                for (group_id, offsets) in groups {
                    found.insert(group_id, offsets);
                }
            }
            _ => {
                for group_id in ids {
                    found.insert(group_id, Err(ErrorCode::CoordinatorNotAvailable));
                }
            }
        }
    }
    // Kafka: a topic the principal may not describe is left out of an all-topics fetch, and
    // its partitions are TOPIC_AUTHORIZATION_FAILED when named (`denied` below).
    for (group_id, wanted) in &asked {
        if let (None, Some(Ok(offsets))) = (wanted, found.get_mut(group_id)) {
            offsets.retain(|o| ctx.topic_allowed(Operation::Describe, &o.topic));
        }
    }
    let denied = |topic: &str| !ctx.topic_allowed(Operation::Describe, topic);
    let mut response = OffsetFetchResponse::default();
    if ctx.version < 8 {
        let (group_id, _) = &asked[0];
        let result = found.remove(group_id).unwrap_or(Err(ErrorCode::CoordinatorNotAvailable));
        match result {
            Err(code) => {
                if ctx.version >= 2 {
                    response.error_code = code.code();
                }
            }
            Ok(offsets) => {
                response.topics = by_topic(offsets)
                    .into_iter()
                    .map(|(name, offsets)| {
                        let mut topic = OffsetFetchResponseTopic::default();
                        topic.name = TopicName(str_bytes(&name));
                        topic.partitions = offsets
                            .into_iter()
                            .map(|o| {
                                let a = Answer::of(&o, denied(&name));
                                let mut p = OffsetFetchResponsePartition::default();
                                p.partition_index = o.partition;
                                p.error_code = a.error_code;
                                p.committed_offset = a.committed_offset;
                                if ctx.version >= 5 {
                                    p.committed_leader_epoch = a.committed_leader_epoch;
                                }
                                p.metadata = a.metadata;
                                p
                            })
                            .collect();
                        topic
                    })
                    .collect();
            }
        }
    } else {
        for (group_id, _) in &asked {
            let mut group = OffsetFetchResponseGroup::default();
            group.group_id = GroupId(str_bytes(group_id));
            match found.get(group_id).cloned().unwrap_or(Err(ErrorCode::CoordinatorNotAvailable)) {
                Err(code) => group.error_code = code.code(),
                Ok(offsets) => {
                    let ids = |name: &str| {
                        let catalog = ctx.shard().catalog.borrow();
                        catalog.get(name).map(|meta| uuid::Uuid::from_bytes(meta.id))
                    };
                    group.topics = by_topic(offsets)
                        .into_iter()
                        .filter_map(|(name, offsets)| {
                            // v10 names topics by id: a topic without one (deleted) is left
                            // out, as Kafka does.
                            let topic_id = ids(&name);
                            if by_id && topic_id.is_none() {
                                return None;
                            }
                            let mut topic = OffsetFetchResponseTopics::default();
                            topic.name = TopicName(str_bytes(&name));
                            topic.topic_id = topic_id.unwrap_or_default();
                            topic.partitions = offsets
                                .into_iter()
                                .map(|o| {
                                    let a = Answer::of(&o, denied(&name));
                                    let mut p = OffsetFetchResponsePartitions::default();
                                    p.partition_index = o.partition;
                                    p.error_code = a.error_code;
                                    p.committed_offset = a.committed_offset;
                                    p.committed_leader_epoch = a.committed_leader_epoch;
                                    p.metadata = a.metadata;
                                    p
                                })
                                .collect();
                            Some(topic)
                        })
                        .collect();
                    for (topic_id, partitions) in unknown_ids.remove(group_id).unwrap_or_default() {
                        let mut topic = OffsetFetchResponseTopics::default();
                        topic.topic_id = topic_id;
                        topic.partitions = partitions
                            .into_iter()
                            .map(|partition| {
                                let mut p = OffsetFetchResponsePartitions::default();
                                p.partition_index = partition;
                                p.error_code = ErrorCode::UnknownTopicId.code();
                                p.committed_offset = -1;
                                p.committed_leader_epoch = -1;
                                p.metadata = Some(StrBytes::default());
                                p
                            })
                            .collect();
                        group.topics.push(topic);
                    }
                }
            }
            response.groups.push(group);
        }
    }
    ctx.reply(&response)
}

/// What a partition's entry says, in either response layout (groups from v8).
struct Answer {
    error_code: i16,
    committed_offset: i64,
    committed_leader_epoch: i32,
    metadata: Option<StrBytes>,
}

impl Answer {
    fn of(offset: &FetchedOffset, denied: bool) -> Answer {
        if denied {
            return Answer {
                error_code: ErrorCode::TopicAuthorizationFailed.code(),
                committed_offset: -1,
                committed_leader_epoch: -1,
                metadata: Some(StrBytes::default()),
            };
        }
        Answer {
            error_code: offset.error_code.code(),
            committed_offset: offset.offset.0,
            committed_leader_epoch: offset.leader_epoch.0,
            metadata: Some(str_bytes(&offset.metadata)),
        }
    }
}

fn by_topic(offsets: Vec<FetchedOffset>) -> Vec<(String, Vec<FetchedOffset>)> {
    let mut grouped: Vec<(String, Vec<FetchedOffset>)> = Vec::new();
    for offset in offsets {
        match grouped.iter_mut().find(|(name, _)| *name == offset.topic) {
            Some((_, list)) => list.push(offset),
            None => grouped.push((offset.topic.clone(), vec![offset])),
        }
    }
    grouped
}
