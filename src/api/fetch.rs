//! Fetch: one read message per owning shard, long-poll until `min_bytes` or `max_wait_ms`,
//! and a hand-framed response whose record data is the cache's `Bytes` or file regions for
//! sendfile, never copied into a response buffer.
//!
//! Waiting: when too few bytes came back, the fetch waits in its shard's purgatory and asks
//! each other owning shard to notify it on the next append to any of the partitions (passing
//! the high watermark it saw, so an append that raced ahead of the registration wakes it at
//! once; see `partition`). It then reads again; on timeout it answers with what there is.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use futures::future::join_all;
use kafka_protocol::messages::FetchRequest;

use super::{Context, Outcome};
use crate::constants::FETCH_WAIT_MS_MAX;
use crate::model::{ErrorCode, Isolation, LeaderEpoch, NodeId, Offset, ShardId, TopicPartition};
use crate::partition::{PartitionRequest, PartitionResponse, ReadResult, ReadSpec, Seen};
use crate::protocol::fetch_response::{self, FetchResponseHead, Part, PartitionData, TopicData};
use crate::protocol::put_response_header;
use crate::security::acl::Operation;
use crate::storage::log::ReadChunk;

/// One requested partition: where its answer goes and what to read.
struct Wanted {
    topic_index: usize,
    partition_index: i32,
    /// None when the topic is unknown (the error code is in `error_code`).
    tp: Option<TopicPartition>,
    error_code: ErrorCode,
    offset: Offset,
    size_bytes_max: usize,
    /// isolation_level 1: read below the last stable offset.
    isolation: Isolation,
    /// A follower's fetch: the epoch of its last batch (Fetch v12+; NONE before).
    last_fetched_epoch: LeaderEpoch,
}

pub async fn handle(ctx: &Context, body: Bytes) -> Outcome {
    let request: FetchRequest = match ctx.decode(body) {
        Ok(r) => r,
        Err(close) => return close,
    };
    let shard = ctx.shard();
    let by_id = ctx.version >= fetch_response::TOPIC_ID_FROM;
    // A broker's follower fetch names its node id (v15+ in the replica state).
    let replica_id =
        if ctx.version >= 15 { request.replica_state.replica_id.0 } else { request.replica_id.0 };
    let follower = (replica_id >= 0).then_some(NodeId(replica_id));
    let cluster_action = follower.is_none() || ctx.cluster_allowed(Operation::ClusterAction);
    let mut topics: Vec<(String, [u8; 16])> = Vec::new();
    let mut wanted: Vec<Wanted> = Vec::new();
    for (topic_index, topic) in request.topics.iter().enumerate() {
        let (meta, unknown_code) = {
            let catalog = shard.catalog.borrow();
            if by_id {
                let name = catalog.name_of(topic.topic_id.as_bytes());
                (name.and_then(|n| catalog.get(&n).cloned()), ErrorCode::UnknownTopicId)
            } else {
                (catalog.get(&topic.topic.0).cloned(), ErrorCode::UnknownTopicOrPartition)
            }
        };
        topics.push((topic.topic.0.to_string(), *topic.topic_id.as_bytes()));
        // Kafka: a follower needs CLUSTER_ACTION, a consumer READ on each topic (a topic id
        // that names no topic stays UNKNOWN_TOPIC_ID).
        let denied = match (follower, &meta) {
            (Some(_), _) => !cluster_action,
            (None, Some(m)) => !ctx.topic_allowed(Operation::Read, &m.name),
            (None, None) => !by_id && !ctx.topic_allowed(Operation::Read, &topic.topic.0),
        };
        for partition in &topic.partitions {
            let (tp, error_code) = match &meta {
                _ if denied => (None, ErrorCode::TopicAuthorizationFailed),
                Some(m) if m.led_elsewhere(partition.partition, shard.config.node_id) => {
                    (None, ErrorCode::NotLeaderOrFollower)
                }
                Some(m) if (0..m.partitions).contains(&partition.partition) => (
                    Some(TopicPartition::new(m.name.clone(), partition.partition)),
                    ErrorCode::None,
                ),
                Some(_) => (None, ErrorCode::UnknownTopicOrPartition),
                None => (None, unknown_code),
            };
            wanted.push(Wanted {
                topic_index,
                partition_index: partition.partition,
                tp,
                error_code,
                offset: Offset(partition.fetch_offset),
                size_bytes_max: partition.partition_max_bytes.max(0) as usize,
                isolation: Isolation::from_wire(request.isolation_level),
                last_fetched_epoch: LeaderEpoch(partition.last_fetched_epoch),
            });
        }
    }
    let max_wait = Duration::from_millis(request.max_wait_ms.clamp(0, FETCH_WAIT_MS_MAX) as u64);
    let deadline = Instant::now() + max_wait;
    let min_bytes = request.min_bytes.max(0) as usize;
    let mut results = read_all(ctx, &wanted, follower).await;
    loop {
        let total: usize = results.values().map(|r| r.size_bytes).sum();
        let any_error = results.values().any(|r| r.error_code != ErrorCode::None)
            || wanted.iter().any(|w| w.error_code != ErrorCode::None)
            || results.values().any(|r| r.diverging.is_some());
        let now = Instant::now();
        if total >= min_bytes || any_error || now >= deadline || wanted.is_empty() {
            break;
        }
        // Wait for an append on any partition, or the deadline. A read_committed fetch
        // waiting at the last stable offset also wakes on appends (a marker is one), then
        // reads again.
        let seen: Vec<(TopicPartition, Seen)> = results
            .iter()
            .map(|(tp, r)| {
                let seen = match follower {
                    Some(_) => Seen::LogEnd(r.log_end),
                    None => Seen::HighWatermark(r.high_watermark),
                };
                (tp.clone(), seen)
            })
            .collect();
        let woke = match ctx.partitions().watch(seen, deadline - now).await {
            Some(wait) => wait.done.await.unwrap_or(false),
            None => true,
        };
        results = read_all(ctx, &wanted, follower).await;
        if !woke {
            break;
        }
    }
    respond(ctx, &request, topics, wanted, results)
}

/// Reads every known partition: one message per owning shard, all in parallel.
async fn read_all(
    ctx: &Context,
    wanted: &[Wanted],
    follower: Option<NodeId>,
) -> BTreeMap<TopicPartition, ReadResult> {
    let mut by_shard: BTreeMap<ShardId, Vec<ReadSpec>> = BTreeMap::new();
    for w in wanted {
        if let Some(tp) = &w.tp {
            let spec = ReadSpec {
                tp: tp.clone(),
                offset: w.offset,
                size_bytes_max: w.size_bytes_max,
                isolation: w.isolation,
                follower: follower.map(|node| (node, w.last_fetched_epoch)),
            };
            by_shard.entry(ctx.shard().owner(tp)).or_default().push(spec);
        }
    }
    let calls = by_shard.into_iter().map(|(owner, partitions)| {
        ctx.partitions().call(owner, PartitionRequest::Read { partitions })
    });
    let mut out = BTreeMap::new();
    for response in join_all(calls).await {
        if let Some(PartitionResponse::Read(results)) = response {
            for result in results {
                out.insert(result.tp.clone(), result);
            }
        }
    }
    out
}

fn respond(
    ctx: &Context,
    request: &FetchRequest,
    topics: Vec<(String, [u8; 16])>,
    wanted: Vec<Wanted>,
    mut results: BTreeMap<TopicPartition, ReadResult>,
) -> Outcome {
    let size_bytes_max = request.max_bytes.max(0) as usize;
    let mut total = 0usize;
    let mut out: Vec<TopicData<ReadChunk>> = topics
        .into_iter()
        .map(|(name, topic_id)| TopicData { name, topic_id, partitions: Vec::new() })
        .collect();
    for w in wanted {
        let mut data = PartitionData {
            partition_index: w.partition_index,
            error_code: w.error_code.code(),
            high_watermark: -1,
            last_stable_offset: -1,
            log_start_offset: -1,
            aborted: None,
            records: Vec::new(),
            records_size: 0,
            diverging_epoch: None,
        };
        if let Some(result) = w.tp.as_ref().and_then(|tp| results.remove(tp)) {
            data.error_code = result.error_code.code();
            data.high_watermark = result.high_watermark.0;
            data.last_stable_offset = result.last_stable_offset.0;
            if w.isolation == Isolation::ReadCommitted {
                let aborted = result.aborted.iter().map(|a| (a.producer_id.0, a.first_offset.0));
                data.aborted = Some(aborted.collect());
            }
            data.log_start_offset = result.log_start_offset.0;
            data.diverging_epoch = result.diverging.map(|(epoch, end)| (epoch.0, end.0));
            // The response limit: always let the first data through (KIP-74), then stop
            // adding partitions once the limit is reached.
            if total == 0 || total + result.size_bytes <= size_bytes_max {
                total += result.size_bytes;
                data.records_size = result.size_bytes;
                data.records = result.chunks;
            }
        }
        ctx.shard().metrics.error(ctx.header.request_api_key, data.error_code);
        out[w.topic_index].partitions.push(data);
    }
    let head = FetchResponseHead {
        throttle_time_ms: 0,
        error_code: ErrorCode::None.code(),
        session_id: 0,
    };
    let (parts, body_size) = fetch_response::encode(ctx.version, &head, out);
    let header_version = ctx.api_key.response_header_version(ctx.version);
    let mut prefix = BytesMut::with_capacity(16);
    let header_size = if header_version >= 1 { 5 } else { 4 };
    prefix.put_i32((header_size + body_size) as i32);
    put_response_header(&mut prefix, ctx.header.correlation_id, header_version);
    let mut chunks = Vec::with_capacity(parts.len() + 1);
    chunks.push(ReadChunk::Memory(prefix.freeze()));
    chunks.extend(parts.into_iter().map(|part| match part {
        Part::Encoded(bytes) => ReadChunk::Memory(bytes),
        Part::Records(chunk) => chunk,
    }));
    Outcome::Reply(chunks)
}
