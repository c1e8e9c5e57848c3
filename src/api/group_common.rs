//! Consumer group APIs: FindCoordinator, JoinGroup, SyncGroup, Heartbeat, LeaveGroup,
//! OffsetCommit, OffsetFetch, DescribeGroups, ListGroups, DeleteGroups and OffsetDelete.
//!
//! Each handler checks what Kafka checks before its coordinator (group id, session timeout,
//! topics), turns the request into plain `group::state` data, and sends it to the shard that
//! owns the group: one mesh message per request and owning shard (ListGroups asks every
//! shard). The answer is turned back into the wire format of the request's version.

use std::collections::BTreeMap;

use bytes::Bytes;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::find_coordinator_response::Coordinator as CoordinatorEntry;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{
    BrokerId, DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest,
    DescribeGroupsResponse, FindCoordinatorRequest, FindCoordinatorResponse, GroupId,
    HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest,
    LeaveGroupResponse, ListGroupsRequest, ListGroupsResponse, OffsetCommitRequest,
    OffsetCommitResponse, OffsetDeleteRequest, OffsetDeleteResponse, OffsetFetchRequest,
    OffsetFetchResponse, SyncGroupRequest, SyncGroupResponse, TopicName,
};

use super::{str_bytes, Context, Outcome};
use crate::constants::GROUP_ID_LENGTH_MAX;
use crate::group::coordinator::{GroupRequest, GroupResponse};
use crate::group::records::STRING_LENGTH_MAX;
use crate::group::state::{self, CommitPartition, FetchedOffset, LeaveMember, Protocol};
use crate::model::ShardId;
use crate::protocol::errors;

const KEY_TYPE_GROUP: i8 = 0;
const KEY_TYPE_TRANSACTION: i8 = 1;

// ----- FindCoordinator -----------------------------------------------------------------------

/// Every group (and transaction) key is coordinated by this broker: a single node owns every
/// partition of `__consumer_offsets`. The shard behind it is found per request.
pub fn find_coordinator(ctx: &Context, body: Bytes) -> Outcome {
    let request: FindCoordinatorRequest = match ctx.decode(body) {
        Ok(r) => r,
        Err(close) => return close,
    };
    let config = &ctx.shard().config;
    let known_type = matches!(request.key_type, KEY_TYPE_GROUP | KEY_TYPE_TRANSACTION);
    let (code, message) = if known_type {
        (errors::NONE, None)
    } else {
        (errors::INVALID_REQUEST, Some(str_bytes("unsupported coordinator key type")))
    };
    let mut response = FindCoordinatorResponse::default();
    if ctx.version < 4 {
        response.error_code = code;
        if ctx.version >= 1 {
            response.error_message = message;
        }
        if code == errors::NONE {
            response.node_id = BrokerId(config.node_id);
            response.host = str_bytes(&config.advertised_host);
            response.port = i32::from(config.advertised_port);
        } else {
            response.node_id = BrokerId(-1);
            response.port = -1;
        }
    } else {
        response.coordinators = request
            .coordinator_keys
            .iter()
            .map(|key| {
                let mut entry = CoordinatorEntry::default();
                entry.key = key.clone();
                entry.error_code = code;
                entry.error_message = message.clone();
                if code == errors::NONE {
                    entry.node_id = BrokerId(config.node_id);
                    entry.host = str_bytes(&config.advertised_host);
                    entry.port = i32::from(config.advertised_port);
                } else {
                    entry.node_id = BrokerId(-1);
                    entry.port = -1;
                }
                entry
            })
            .collect();
    }
    ctx.reply(&response)
}

// ----- membership ----------------------------------------------------------------------------

pub async fn join_group(ctx: &Context, body: Bytes) -> Outcome {
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
    let answer = if let Err(code) = check_group_id(&group_id, false) {
        state::JoinResponse::error(&member_id, code)
    } else if session < limits.session_timeout_ms_min || session > limits.session_timeout_ms_max {
        state::JoinResponse::error(&member_id, errors::INVALID_SESSION_TIMEOUT)
    } else if too_long {
        state::JoinResponse::error(&member_id, errors::INVALID_REQUEST)
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
            _ => state::JoinResponse::error(&member_id, errors::COORDINATOR_NOT_AVAILABLE),
        }
    };
    let mut response = JoinGroupResponse::default();
    response.error_code = answer.error_code;
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

pub async fn sync_group(ctx: &Context, body: Bytes) -> Outcome {
    let request: SyncGroupRequest = match ctx.decode(body) {
        Ok(r) => r,
        Err(close) => return close,
    };
    let group_id = request.group_id.0.to_string();
    let missing_protocol =
        ctx.version >= 5 && (request.protocol_type.is_none() || request.protocol_name.is_none());
    let answer = if let Err(code) = check_group_id(&group_id, false) {
        state::SyncResponse::error(code)
    } else if missing_protocol {
        state::SyncResponse::error(errors::INCONSISTENT_GROUP_PROTOCOL)
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
            _ => state::SyncResponse::error(errors::COORDINATOR_NOT_AVAILABLE),
        }
    };
    let mut response = SyncGroupResponse::default();
    response.error_code = answer.error_code;
    if ctx.version >= 5 {
        response.protocol_type = answer.protocol_type.as_deref().map(str_bytes);
        response.protocol_name = answer.protocol_name.as_deref().map(str_bytes);
    }
    response.assignment = answer.assignment;
    ctx.reply(&response)
}

pub async fn heartbeat(ctx: &Context, body: Bytes) -> Outcome {
    let request: HeartbeatRequest = match ctx.decode(body) {
        Ok(r) => r,
        Err(close) => return close,
    };
    let group_id = request.group_id.0.to_string();
    let code = match check_group_id(&group_id, false) {
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
                _ => errors::COORDINATOR_NOT_AVAILABLE,
            }
        }
    };
    let mut response = HeartbeatResponse::default();
    response.error_code = code;
    ctx.reply(&response)
}

pub async fn leave_group(ctx: &Context, body: Bytes) -> Outcome {
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
    let answer = match check_group_id(&group_id, false) {
        Err(code) => state::LeaveResponse { error_code: code, members: Vec::new() },
        Ok(()) => {
            let leave = GroupRequest::Leave { group_id: group_id.clone(), members: leaving };
            match call(ctx, &group_id, leave).await {
                Some(GroupResponse::Leave(answer)) => answer,
                _ => state::LeaveResponse {
                    error_code: errors::COORDINATOR_NOT_AVAILABLE,
                    members: Vec::new(),
                },
            }
        }
    };
    let mut response = LeaveGroupResponse::default();
    if ctx.version < 3 {
        // One member, no member list: its error is the response's (as Kafka answers v0-v2).
        let member_error = answer.members.first().map_or(errors::NONE, |(_, code)| *code);
        response.error_code =
            if answer.error_code != errors::NONE { answer.error_code } else { member_error };
    } else {
        response.error_code = answer.error_code;
        response.members = answer
            .members
            .into_iter()
            .map(|(who, code)| {
                let mut member = MemberResponse::default();
                member.member_id = str_bytes(&who.member_id);
                member.group_instance_id = who.group_instance_id.as_deref().map(str_bytes);
                member.error_code = code;
                member
            })
            .collect();
    }
    ctx.reply(&response)
}

// ----- offsets -------------------------------------------------------------------------------

pub async fn offset_commit(ctx: &Context, body: Bytes) -> Outcome {
    let request: OffsetCommitRequest = match ctx.decode(body) {
        Ok(r) => r,
        Err(close) => return close,
    };
    let group_id = request.group_id.0.to_string();
    // Partitions of unknown topics are answered here and never reach the coordinator.
    let mut codes: Vec<Vec<i16>> = Vec::with_capacity(request.topics.len());
    let mut partitions = Vec::new();
    {
        let catalog = ctx.shard().catalog.borrow();
        for topic in &request.topics {
            let count = catalog.get(&topic.name.0).map_or(0, |meta| meta.partitions);
            let mut topic_codes = Vec::with_capacity(topic.partitions.len());
            for p in &topic.partitions {
                if p.partition_index < 0 || p.partition_index >= count {
                    topic_codes.push(errors::UNKNOWN_TOPIC_OR_PARTITION);
                    continue;
                }
                topic_codes.push(errors::NONE);
                partitions.push(CommitPartition {
                    topic: topic.name.0.to_string(),
                    partition: p.partition_index,
                    offset: p.committed_offset,
                    leader_epoch: if ctx.version >= 6 { p.committed_leader_epoch } else { -1 },
                    metadata: p.committed_metadata.as_ref().map(|s| s.to_string()),
                });
            }
            codes.push(topic_codes);
        }
    }
    let outcome: Result<Vec<i16>, i16> = if let Err(code) = check_group_id(&group_id, true) {
        Err(code)
    } else if partitions.is_empty() {
        Ok(Vec::new())
    } else {
        let commit = state::CommitRequest {
            group_id: group_id.clone(),
            generation_id: request.generation_id_or_member_epoch,
            member_id: request.member_id.to_string(),
            group_instance_id: request.group_instance_id.as_ref().map(|s| s.to_string()),
            retention_time_ms: if (2..=4).contains(&ctx.version) {
                request.retention_time_ms
            } else {
                -1
            },
            api_version: ctx.version,
            partitions,
        };
        match call(ctx, &group_id, GroupRequest::Commit(commit)).await {
            Some(GroupResponse::Commit(outcome)) => outcome,
            _ => Err(errors::COORDINATOR_NOT_AVAILABLE),
        }
    };
    let mut accepted = match &outcome {
        Ok(codes) => codes.clone().into_iter(),
        Err(_) => Vec::new().into_iter(),
    };
    let mut response = OffsetCommitResponse::default();
    for (topic, topic_codes) in request.topics.iter().zip(codes) {
        let mut entry = OffsetCommitResponseTopic::default();
        entry.name = topic.name.clone();
        for (p, code) in topic.partitions.iter().zip(topic_codes) {
            let mut partition = OffsetCommitResponsePartition::default();
            partition.partition_index = p.partition_index;
            partition.error_code = if code != errors::NONE {
                code
            } else {
                match &outcome {
                    Err(whole) => *whole,
                    Ok(_) => accepted.next().unwrap_or(errors::UNKNOWN_SERVER_ERROR),
                }
            };
            entry.partitions.push(partition);
        }
        response.topics.push(entry);
    }
    ctx.reply(&response)
}

pub async fn offset_fetch(ctx: &Context, body: Bytes) -> Outcome {
    let request: OffsetFetchRequest = match ctx.decode(body) {
        Ok(r) => r,
        Err(close) => return close,
    };
    type Wanted = Option<Vec<(String, Vec<i32>)>>;
    let asked: Vec<(String, Wanted)> = if ctx.version < 8 {
        let topics = request.topics.as_ref().map(|topics| {
            topics.iter().map(|t| (t.name.0.to_string(), t.partition_indexes.clone())).collect()
        });
        vec![(request.group_id.0.to_string(), topics)]
    } else {
        request
            .groups
            .iter()
            .map(|g| {
                let topics = g.topics.as_ref().map(|topics| {
                    topics
                        .iter()
                        .map(|t| (t.name.0.to_string(), t.partition_indexes.clone()))
                        .collect()
                });
                (g.group_id.0.to_string(), topics)
            })
            .collect()
    };
    // One message per owning shard, with every group it owns.
    let mut by_shard: BTreeMap<ShardId, Vec<(String, Wanted)>> = BTreeMap::new();
    let mut found: BTreeMap<String, Result<Vec<FetchedOffset>, i16>> = BTreeMap::new();
    for (group_id, wanted) in &asked {
        match check_group_id(group_id, true) {
            Err(code) => {
                found.insert(group_id.clone(), Err(code));
            }
            Ok(()) => {
                let owner = ctx.groups().owner(group_id);
                by_shard.entry(owner).or_default().push((group_id.clone(), wanted.clone()));
            }
        }
    }
    let calls = by_shard.into_iter().map(|(owner, groups)| {
        let ids: Vec<String> = groups.iter().map(|(g, _)| g.clone()).collect();
        let call = ctx.groups().call(owner, GroupRequest::Fetch { groups });
        async move { (ids, call.await) }
    });
    for (ids, answer) in futures::future::join_all(calls).await {
        match answer {
            Some(GroupResponse::Fetch(groups)) => {
                for (group_id, offsets) in groups {
                    found.insert(group_id, Ok(offsets));
                }
            }
            _ => {
                for group_id in ids {
                    found.insert(group_id, Err(errors::COORDINATOR_NOT_AVAILABLE));
                }
            }
        }
    }
    let mut response = OffsetFetchResponse::default();
    if ctx.version < 8 {
        let (group_id, _) = &asked[0];
        let result = found.remove(group_id).unwrap_or(Err(errors::COORDINATOR_NOT_AVAILABLE));
        match result {
            Err(code) => {
                if ctx.version >= 2 {
                    response.error_code = code;
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
                                let mut p = OffsetFetchResponsePartition::default();
                                p.partition_index = o.partition;
                                p.committed_offset = o.offset;
                                if ctx.version >= 5 {
                                    p.committed_leader_epoch = o.leader_epoch;
                                }
                                p.metadata = Some(str_bytes(&o.metadata));
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
            match found.get(group_id).cloned().unwrap_or(Err(errors::COORDINATOR_NOT_AVAILABLE)) {
                Err(code) => group.error_code = code,
                Ok(offsets) => {
                    group.topics = by_topic(offsets)
                        .into_iter()
                        .map(|(name, offsets)| {
                            let mut topic = OffsetFetchResponseTopics::default();
                            topic.name = TopicName(str_bytes(&name));
                            topic.partitions = offsets
                                .into_iter()
                                .map(|o| {
                                    let mut p = OffsetFetchResponsePartitions::default();
                                    p.partition_index = o.partition;
                                    p.committed_offset = o.offset;
                                    p.committed_leader_epoch = o.leader_epoch;
                                    p.metadata = Some(str_bytes(&o.metadata));
                                    p
                                })
                                .collect();
                            topic
                        })
                        .collect();
                }
            }
            response.groups.push(group);
        }
    }
    ctx.reply(&response)
}

pub async fn offset_delete(ctx: &Context, body: Bytes) -> Outcome {
    let request: OffsetDeleteRequest = match ctx.decode(body) {
        Ok(r) => r,
        Err(close) => return close,
    };
    let group_id = request.group_id.0.to_string();
    let topics: Vec<(String, Vec<i32>)> = request
        .topics
        .iter()
        .map(|t| (t.name.0.to_string(), t.partitions.iter().map(|p| p.partition_index).collect()))
        .collect();
    let outcome = match check_group_id(&group_id, false) {
        Err(code) => Err(code),
        Ok(()) => {
            let delete = GroupRequest::DeleteOffsets { group_id: group_id.clone(), topics };
            match call(ctx, &group_id, delete).await {
                Some(GroupResponse::DeleteOffsets(outcome)) => outcome,
                _ => Err(errors::COORDINATOR_NOT_AVAILABLE),
            }
        }
    };
    let mut response = OffsetDeleteResponse::default();
    match outcome {
        Err(code) => response.error_code = code,
        Ok(topics) => {
            for (name, partitions) in topics {
                let mut topic = OffsetDeleteResponseTopic::default();
                topic.name = TopicName(str_bytes(&name));
                for (index, code) in partitions {
                    let mut partition = OffsetDeleteResponsePartition::default();
                    partition.partition_index = index;
                    partition.error_code = code;
                    topic.partitions.push(partition);
                }
                response.topics.push(topic);
            }
        }
    }
    ctx.reply(&response)
}

// ----- administration ------------------------------------------------------------------------

pub async fn describe_groups(ctx: &Context, body: Bytes) -> Outcome {
    let request: DescribeGroupsRequest = match ctx.decode(body) {
        Ok(r) => r,
        Err(close) => return close,
    };
    let ids: Vec<String> = request.groups.iter().map(|g| g.0.to_string()).collect();
    let mut by_shard: BTreeMap<ShardId, Vec<String>> = BTreeMap::new();
    for id in ids.iter().filter(|id| check_group_id(id, true).is_ok()) {
        by_shard.entry(ctx.groups().owner(id)).or_default().push(id.clone());
    }
    let calls = by_shard
        .into_iter()
        .map(|(owner, groups)| ctx.groups().call(owner, GroupRequest::Describe { groups }));
    let mut described: BTreeMap<String, state::DescribedGroup> = BTreeMap::new();
    for answer in futures::future::join_all(calls).await {
        if let Some(GroupResponse::Describe(groups)) = answer {
            described.extend(groups.into_iter().map(|g| (g.group_id.clone(), g)));
        }
    }
    let mut response = DescribeGroupsResponse::default();
    for id in ids {
        let mut group = DescribedGroup::default();
        group.group_id = GroupId(str_bytes(&id));
        if let Err(code) = check_group_id(&id, true) {
            group.error_code = code;
            group.group_state = str_bytes(state::GroupState::Dead.name());
            response.groups.push(group);
            continue;
        }
        let Some(found) = described.remove(&id) else {
            group.error_code = errors::COORDINATOR_NOT_AVAILABLE;
            response.groups.push(group);
            continue;
        };
        group.group_state = str_bytes(found.state.name());
        if found.state == state::GroupState::Dead && ctx.version >= 6 {
            group.error_code = errors::GROUP_ID_NOT_FOUND;
            group.error_message = Some(str_bytes(&format!("Group {id} not found.")));
        }
        group.protocol_type = str_bytes(&found.protocol_type);
        group.protocol_data = str_bytes(&found.protocol_data);
        group.members = found
            .members
            .into_iter()
            .map(|m| {
                let mut member = DescribedGroupMember::default();
                member.member_id = str_bytes(&m.member_id);
                if ctx.version >= 4 {
                    member.group_instance_id = m.group_instance_id.as_deref().map(str_bytes);
                }
                member.client_id = str_bytes(&m.client_id);
                member.client_host = str_bytes(&m.client_host);
                member.member_metadata = m.metadata;
                member.member_assignment = m.assignment;
                member
            })
            .collect();
        response.groups.push(group);
    }
    ctx.reply(&response)
}

pub async fn list_groups(ctx: &Context, body: Bytes) -> Outcome {
    let request: ListGroupsRequest = match ctx.decode(body) {
        Ok(r) => r,
        Err(close) => return close,
    };
    let states: Vec<String> = request.states_filter.iter().map(|s| s.trim().to_string()).collect();
    let classic_wanted = request.types_filter.is_empty()
        || request.types_filter.iter().any(|t| t.trim().eq_ignore_ascii_case("classic"));
    let mut listed = Vec::new();
    if classic_wanted {
        let answers = ctx.groups().broadcast(|| GroupRequest::List { states: states.clone() });
        for answer in answers.await {
            if let Some(GroupResponse::List(groups)) = answer {
                listed.extend(groups);
            }
        }
    }
    listed.sort_by(|a, b| a.group_id.cmp(&b.group_id));
    let mut response = ListGroupsResponse::default();
    response.groups = listed
        .into_iter()
        .map(|g| {
            let mut group = ListedGroup::default();
            group.group_id = GroupId(str_bytes(&g.group_id));
            group.protocol_type = str_bytes(&g.protocol_type);
            if ctx.version >= 4 {
                group.group_state = str_bytes(g.state.name());
            }
            if ctx.version >= 5 {
                group.group_type = str_bytes("classic");
            }
            group
        })
        .collect();
    ctx.reply(&response)
}

pub async fn delete_groups(ctx: &Context, body: Bytes) -> Outcome {
    let request: DeleteGroupsRequest = match ctx.decode(body) {
        Ok(r) => r,
        Err(close) => return close,
    };
    let ids: Vec<String> = request.groups_names.iter().map(|g| g.0.to_string()).collect();
    let mut by_shard: BTreeMap<ShardId, Vec<String>> = BTreeMap::new();
    for id in ids.iter().filter(|id| check_group_id(id, true).is_ok()) {
        by_shard.entry(ctx.groups().owner(id)).or_default().push(id.clone());
    }
    let calls = by_shard
        .into_iter()
        .map(|(owner, groups)| ctx.groups().call(owner, GroupRequest::Delete { groups }));
    let mut codes: BTreeMap<String, i16> = BTreeMap::new();
    for answer in futures::future::join_all(calls).await {
        if let Some(GroupResponse::Delete(results)) = answer {
            codes.extend(results);
        }
    }
    let mut response = DeleteGroupsResponse::default();
    for id in ids {
        let mut result = DeletableGroupResult::default();
        result.error_code = match check_group_id(&id, true) {
            Err(code) => code,
            Ok(()) => codes.get(&id).copied().unwrap_or(errors::COORDINATOR_NOT_AVAILABLE),
        };
        result.group_id = GroupId(str_bytes(&id));
        response.results.push(result);
    }
    ctx.reply(&response)
}

// ----- helpers -------------------------------------------------------------------------------

/// Kafka refuses an empty group id for membership APIs (and OffsetDelete) but accepts it for
/// OffsetCommit, OffsetFetch, DescribeGroups and DeleteGroups (old clients used it). Kafka
/// has no length limit; ours is what its offsets records can hold.
fn check_group_id(group_id: &str, empty_ok: bool) -> Result<(), i16> {
    if (group_id.is_empty() && !empty_ok) || group_id.len() > GROUP_ID_LENGTH_MAX {
        return Err(errors::INVALID_GROUP_ID);
    }
    Ok(())
}

async fn call(ctx: &Context, group_id: &str, request: GroupRequest) -> Option<GroupResponse> {
    let owner = ctx.groups().owner(group_id);
    ctx.groups().call(owner, request).await
}

fn client_id(ctx: &Context) -> String {
    ctx.header.client_id.as_ref().map(|s| s.to_string()).unwrap_or_default()
}

/// Kafka reports a member's host as Java prints an address: "/127.0.0.1".
fn client_host(ctx: &Context) -> String {
    ctx.peer.map(|peer| format!("/{}", peer.ip())).unwrap_or_default()
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
