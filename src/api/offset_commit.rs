//! OffsetCommit (API 8): partitions of unknown topics are answered here; the rest go to the
//! group's owning shard, which checks generation and member as Kafka does and answers once the
//! offsets are written to its `__consumer_offsets` log. From v10 (KIP-848, Kafka 4.1) topics
//! are named by id: an id the catalog does not know is UNKNOWN_TOPIC_ID for every partition
//! of it, as Kafka answers, and the answer names topics by id too.

use bytes::Bytes;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{OffsetCommitRequest, OffsetCommitResponse};

use super::group_common::{call, check_group_id, EmptyGroupId};
use super::{Context, Outcome};
use crate::group::coordinator::{GroupRequest, GroupResponse};
use crate::group::state::{self, CommitPartition};
use crate::model::{ErrorCode, LeaderEpoch, Offset};
use crate::security::acl::Operation;

pub async fn handle(ctx: &Context, body: Bytes) -> Outcome {
    let request: OffsetCommitRequest = match ctx.decode(body) {
        Ok(r) => r,
        Err(close) => return close,
    };
    let group_id = request.group_id.0.to_string();
    let by_id = ctx.version >= 10;
    // Partitions of unknown topics are answered here and never reach the coordinator.
    let mut codes: Vec<Vec<ErrorCode>> = Vec::with_capacity(request.topics.len());
    let mut partitions = Vec::new();
    {
        let catalog = ctx.shard().catalog.borrow();
        for topic in &request.topics {
            // v10: the topic's name from its id (None: an id the catalog does not know).
            let name: Option<String> = if by_id {
                catalog.name_of(topic.topic_id.as_bytes()).map(|n| n.to_string())
            } else {
                Some(topic.name.0.to_string())
            };
            let Some(name) = name else {
                codes.push(vec![ErrorCode::UnknownTopicId; topic.partitions.len()]);
                continue;
            };
            let count = catalog.get(&name).map_or(0, |meta| meta.partitions);
            let denied = !ctx.topic_allowed(Operation::Read, &name);
            let mut topic_codes = Vec::with_capacity(topic.partitions.len());
            for p in &topic.partitions {
                if denied {
                    topic_codes.push(ErrorCode::TopicAuthorizationFailed);
                    continue;
                }
                if p.partition_index < 0 || p.partition_index >= count {
                    topic_codes.push(ErrorCode::UnknownTopicOrPartition);
                    continue;
                }
                topic_codes.push(ErrorCode::None);
                partitions.push(CommitPartition {
                    topic: name.clone(),
                    partition: p.partition_index,
                    offset: Offset(p.committed_offset),
                    leader_epoch: if ctx.version >= 6 {
                        LeaderEpoch(p.committed_leader_epoch)
                    } else {
                        LeaderEpoch::NONE
                    },
                    metadata: p.committed_metadata.as_ref().map(|s| s.to_string()),
                });
            }
            codes.push(topic_codes);
        }
    }
    let outcome: Result<Vec<ErrorCode>, ErrorCode> = if let Err(code) =
        check_group_id(ctx, &group_id, EmptyGroupId::Accepted, Operation::Read)
    {
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
            _ => Err(ErrorCode::CoordinatorNotAvailable),
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
        entry.topic_id = topic.topic_id;
        for (p, code) in topic.partitions.iter().zip(topic_codes) {
            let mut partition = OffsetCommitResponsePartition::default();
            partition.partition_index = p.partition_index;
            let code = if code != ErrorCode::None {
                code
            } else {
                match &outcome {
                    Err(whole) => *whole,
                    Ok(_) => accepted.next().unwrap_or(ErrorCode::UnknownServerError),
                }
            };
            partition.error_code = code.code();
            entry.partitions.push(partition);
        }
        response.topics.push(entry);
    }
    ctx.reply(&response)
}
