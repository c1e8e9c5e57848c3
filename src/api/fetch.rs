//! Fetch: one read message per owning shard, long-poll until `min_bytes` or `max_wait_ms`,
//! and a hand-framed response whose record data is the cache's `Bytes` or file regions for
//! sendfile, never copied into a response buffer.
//!
//! Waiting: when too few bytes came back, the fetch waits in its shard's purgatory and asks
//! each other owning shard to notify it on the next append to any of the partitions (passing
//! the high watermark it saw, so an append that raced ahead of the registration wakes it at
//! once; see `partition`). It then reads again; on timeout it answers with what there is.
//!
//! Follower fetching (KIP-392): a consumer's fetch of v11+ (which carries the client's
//! metadata, its rack) may read from any replica of the partition, not only its leader
//! (Kafka's `FetchParams.fetchOnlyLeader`), below that replica's high watermark. With
//! `--replica-selector rack-aware` the leader names a live in-sync replica in the
//! consumer's rack when it is not in that rack itself (`preferred_read_replica`, no records
//! then), and the client fetches from there. A `current_leader_epoch` older than this
//! node's is FENCED_LEADER_EPOCH, a newer one UNKNOWN_LEADER_EPOCH, as in Kafka's
//! `Partition.getLocalLog`. From v16 (KIP-951) a partition answered NOT_LEADER_OR_FOLLOWER
//! or FENCED_LEADER_EPOCH names its current leader and leader epoch, and the response the
//! leaders' endpoints, so the client moves there without a Metadata request.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use futures::future::join_all;
use kafka_protocol::messages::FetchRequest;

use super::{Context, Outcome};
use crate::constants::FETCH_WAIT_MS_MAX;
use crate::model::TopicPartition;
use crate::model::{ErrorCode, Isolation, LeaderEpoch, NodeId, Offset, ReplicaSelector, ShardId};
use crate::partition::{ClientRack, FollowerFetch, PartitionRequest, PartitionResponse};
use crate::partition::{ReadResult, ReadSpec, Seen};
use crate::protocol::fetch_response::{self, FetchResponseHead, Part, PartitionData, TopicData};
use crate::protocol::put_response_header;
use crate::security::acl::Operation;
use crate::shard::catalog::TopicMeta;
use crate::storage::log::ReadChunk;

/// One requested partition: where its answer goes and what to read.
struct Wanted {
    topic_index: usize,
    partition_index: i32,
    /// None when the topic is unknown (the error code is in `error_code`).
    tp: Option<TopicPartition>,
    /// The topic's name when it is known (for KIP-951's current leader).
    topic: Option<Arc<str>>,
    error_code: ErrorCode,
    offset: Offset,
    size_bytes_max: usize,
    /// isolation_level 1: read below the last stable offset.
    isolation: Isolation,
    /// A follower's fetch: the epoch of its last batch (Fetch v12+; NONE before).
    last_fetched_epoch: LeaderEpoch,
    /// A follower's fetch: its log start (v5+).
    log_start_offset: Offset,
}

/// Which replicas of a partition may answer a fetch (Kafka's `FetchParams.fetchOnlyLeader`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Readable {
    /// A follower's fetch, or a consumer's before v11: only the leader.
    LeaderOnly,
    /// A consumer's of v11+ (it carries the client's metadata): any replica.
    AnyReplica,
}

pub async fn handle(ctx: &Context, body: Bytes) -> Outcome {
    let request: FetchRequest = match ctx.decode(body) {
        Ok(r) => r,
        Err(close) => return close,
    };
    let shard = ctx.shard();
    let me = shard.config.node_id;
    let by_id = ctx.version >= fetch_response::TOPIC_ID_FROM;
    // A broker's follower fetch names its node id (v15+ in the replica state).
    let replica_id =
        if ctx.version >= 15 { request.replica_state.replica_id.0 } else { request.replica_id.0 };
    let follower = (replica_id >= 0).then_some(NodeId(replica_id));
    let cluster_action = follower.is_none() || ctx.cluster_allowed(Operation::ClusterAction);
    // Kafka's fetchOnlyLeader: a follower's fetch, or a consumer's without client metadata
    // (before v11).
    let readable = match follower {
        None if ctx.version >= 11 => Readable::AnyReplica,
        _ => Readable::LeaderOnly,
    };
    let client_rack = match follower {
        None => client_rack(ctx, &request),
        Some(_) => None,
    };
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
            let current_epoch = LeaderEpoch(partition.current_leader_epoch);
            let (tp, error_code) = match &meta {
                _ if denied => (None, ErrorCode::TopicAuthorizationFailed),
                Some(m) if (0..m.partitions).contains(&partition.partition) => {
                    match servable(m, partition.partition, current_epoch, me, readable) {
                        ErrorCode::None => (
                            Some(TopicPartition::new(m.name.clone(), partition.partition)),
                            ErrorCode::None,
                        ),
                        code => (None, code),
                    }
                }
                Some(_) => (None, ErrorCode::UnknownTopicOrPartition),
                None => (None, unknown_code),
            };
            wanted.push(Wanted {
                topic_index,
                partition_index: partition.partition,
                tp,
                topic: meta.as_ref().map(|m| m.name.clone()),
                error_code,
                offset: Offset(partition.fetch_offset),
                size_bytes_max: partition.partition_max_bytes.max(0) as usize,
                isolation: Isolation::from_wire(request.isolation_level),
                last_fetched_epoch: LeaderEpoch(partition.last_fetched_epoch),
                log_start_offset: Offset(partition.log_start_offset),
            });
        }
    }
    let max_wait = Duration::from_millis(request.max_wait_ms.clamp(0, FETCH_WAIT_MS_MAX) as u64);
    let deadline = Instant::now() + max_wait;
    let min_bytes = request.min_bytes.max(0) as usize;
    let mut results = read_all(ctx, &wanted, follower, client_rack.as_ref()).await;
    loop {
        let total: usize = results.values().map(|r| r.size_bytes).sum();
        let any_error = results.values().any(|r| r.error_code != ErrorCode::None)
            || wanted.iter().any(|w| w.error_code != ErrorCode::None)
            || results.values().any(|r| r.diverging.is_some())
            || results.values().any(|r| r.preferred_read_replica.is_some());
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
        results = read_all(ctx, &wanted, follower, client_rack.as_ref()).await;
        if !woke {
            break;
        }
    }
    respond(ctx, &request, topics, wanted, results)
}

/// Whether partition `partition` of `m` may be fetched here (ErrorCode::None) or the error
/// that says why not: Kafka's `Partition.getLocalLog`, the consumer's leader epoch first
/// (a fetch that names none, -1, is not checked), then leadership.
fn servable(
    m: &TopicMeta,
    partition: i32,
    current_epoch: LeaderEpoch,
    me: NodeId,
    readable: Readable,
) -> ErrorCode {
    if let Some(placement) = m.placement(partition).filter(|_| current_epoch.0 >= 0) {
        if placement.leader_epoch > current_epoch {
            return ErrorCode::FencedLeaderEpoch;
        }
        if placement.leader_epoch < current_epoch {
            return ErrorCode::UnknownLeaderEpoch;
        }
    }
    let here = match readable {
        Readable::LeaderOnly => m.is_led_by(partition, me),
        Readable::AnyReplica => m.has_replica_on(partition, me),
    };
    if here {
        ErrorCode::None
    } else {
        ErrorCode::NotLeaderOrFollower
    }
}

/// The consumer's rack and the live brokers' racks, when this node chooses read replicas
/// by rack (`--replica-selector rack-aware`) and the fetch (v11+) names a rack.
fn client_rack(ctx: &Context, request: &FetchRequest) -> Option<ClientRack> {
    let rack_aware = ctx.shard().config.replica_selector == ReplicaSelector::RackAware;
    if !rack_aware || ctx.version < 11 || request.rack_id.is_empty() {
        return None;
    }
    let view = ctx.cluster().view()?;
    let racks = view
        .live_brokers()
        .filter_map(|b| b.rack.as_deref().map(|rack| (b.node_id, Arc::from(rack))))
        .collect();
    Some(ClientRack { rack: Arc::from(&*request.rack_id), racks: Arc::new(racks) })
}

/// Reads every known partition: one message per owning shard, all in parallel.
async fn read_all(
    ctx: &Context,
    wanted: &[Wanted],
    follower: Option<NodeId>,
    client_rack: Option<&ClientRack>,
) -> BTreeMap<TopicPartition, ReadResult> {
    let mut by_shard: BTreeMap<ShardId, Vec<ReadSpec>> = BTreeMap::new();
    for w in wanted {
        if let Some(tp) = &w.tp {
            let spec = ReadSpec {
                tp: tp.clone(),
                offset: w.offset,
                size_bytes_max: w.size_bytes_max,
                isolation: w.isolation,
                follower: follower.map(|node| FollowerFetch {
                    node,
                    last_epoch: w.last_fetched_epoch,
                    log_start: w.log_start_offset,
                }),
                client_rack: client_rack.cloned(),
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
    let mut leaders = std::collections::BTreeSet::new();
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
            preferred_read_replica: NodeId::NONE.0,
            current_leader: None,
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
            data.preferred_read_replica = result.preferred_read_replica.unwrap_or(NodeId::NONE).0;
            // The response limit: always let the first data through (KIP-74), then stop
            // adding partitions once the limit is reached.
            if total == 0 || total + result.size_bytes <= size_bytes_max {
                total += result.size_bytes;
                data.records_size = result.size_bytes;
                data.records = result.chunks;
            }
        }
        ctx.shard().metrics.error(ctx.header.request_api_key, data.error_code);
        let moved = [ErrorCode::NotLeaderOrFollower, ErrorCode::FencedLeaderEpoch]
            .map(ErrorCode::code)
            .contains(&data.error_code);
        if ctx.version >= fetch_response::NODE_ENDPOINTS_FROM && moved {
            data.current_leader = w.topic.as_deref().and_then(|topic| {
                let leader = current_leader(ctx, topic, w.partition_index)?;
                leaders.insert(leader.0);
                Some((leader.0 .0, leader.1 .0))
            });
        }
        out[w.topic_index].partitions.push(data);
    }
    let head = FetchResponseHead {
        throttle_time_ms: 0,
        error_code: ErrorCode::None.code(),
        session_id: 0,
        node_endpoints: node_endpoints(ctx, leaders),
    };
    let (parts, body_size) = fetch_response::encode(ctx.version, &head, out);
    reply_parts(ctx, parts, body_size)
}

/// A hand-framed answer (Fetch, ShareFetch): the length prefix and the response header,
/// then the parts in order, the records among them as they were read.
pub(super) fn reply_parts(ctx: &Context, parts: Vec<Part<ReadChunk>>, body_size: usize) -> Outcome {
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

/// KIP-951: the leader of `topic`-`partition` and its leader epoch as this node's catalog
/// has them (Kafka's `getCurrentLeader`); None on a single node or without a leader.
pub(super) fn current_leader(
    ctx: &Context,
    topic: &str,
    partition: i32,
) -> Option<(NodeId, LeaderEpoch)> {
    let catalog = ctx.shard().catalog.borrow();
    let placement = catalog.get(topic)?.placement(partition)?.clone();
    (placement.leader != NodeId::NONE).then_some((placement.leader, placement.leader_epoch))
}

/// KIP-951: the endpoints of `leaders` that are live brokers (Kafka's response field
/// `node_endpoints`, of the listener the client came on: a cluster node has one).
pub(super) fn node_endpoints(
    ctx: &Context,
    leaders: std::collections::BTreeSet<NodeId>,
) -> Vec<fetch_response::NodeEndpoint> {
    let Some(view) = ctx.cluster().view() else { return Vec::new() };
    leaders
        .into_iter()
        .filter_map(|id| view.live_broker(id))
        .map(|broker| fetch_response::NodeEndpoint {
            node_id: broker.node_id.0,
            host: broker.host.clone(),
            port: i32::from(broker.port),
            rack: broker.rack.clone(),
        })
        .collect()
}
