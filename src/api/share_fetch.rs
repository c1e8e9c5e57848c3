//! ShareFetch (API 78, KIP-932): a share group member's fetch, in two halves around the
//! reads. First the group's coordinator moves the member's share session (epoch 0
//! opens it, -1 closes it, otherwise the next epoch; SHARE_SESSION_NOT_FOUND and
//! INVALID_SHARE_SESSION_EPOCH as Kafka answers), applies the acknowledgements the request
//! carries and says where to read each partition of the session (`group::share`). Then each
//! partition is read from its owning shard like a Fetch (read_uncommitted, or below the last
//! stable offset with `share.isolation.level=read_committed`), a share
//! partition met for the first time starting at its `share.auto.offset.reset` offset, and the
//! coordinator hands out what it may of the batches read (`ShareAcquire`, written to its log
//! before the answer). The response carries whole batches, as Kafka's does, with the acquired
//! ranges and their delivery counts; the client keeps only the acquired records. It is
//! framed by hand (`protocol::share_fetch_response`) so that those batches are never copied:
//! cache memory goes out as it is, segment file regions with sendfile (of a catch-up read
//! only the batch headers are read).
//!
//! Waiting: with nothing acquired and `max_wait_ms` left, the fetch waits for new data on its
//! partitions (their watches, as Fetch does) or `--group-share-fetch-recheck-ms` (50),
//! whichever comes first, and asks again. Records released or whose lock ended wake it at
//! once: the coordinator wakes the watches of their partitions (`Partitions::wake`), on its
//! own node and, clustered, on the node that leads them (`ShareCall::Wake`); the recheck
//! covers a release that lands between the read and the watch, and a wake that was lost.
//!
//! Clustered, the request comes to the leader of its partitions and the coordinator is
//! usually on another node: the calls go there (`share_call`).

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::join_all;
use kafka_protocol::messages::{ShareFetchRequest, ShareFetchResponse};

use super::fetch::{current_leader, node_endpoints};
use super::share_call;
use super::share_common::{self, check_request, named_partitions, resolve};
use super::{Context, Outcome};
use crate::constants::{
    BATCH_HEADER_BYTES, FETCH_WAIT_MS_MAX, SHARE_FETCH_MAX_RECORDS_DEFAULT,
    SHARE_FETCH_PARTITION_BYTES_MAX,
};
use crate::group::assignor::TopicId;
use crate::group::share::{FetchOpen, FetchOpened, FetchPlan, ShareRead};
use crate::group::share_call::{ShareAnswer, ShareCall};
use crate::group::share_partition::Acquired;
use crate::model::batch::BatchHeader;
use crate::model::{ErrorCode, Isolation, Offset, ShardId, TopicPartition};
use crate::partition::{PartitionRequest, PartitionResponse, ReadResult, ReadSpec, Seen};
use crate::protocol::share_fetch_response::{self, PartitionData, TopicData};
use crate::storage::log::ReadChunk;
use crate::storage::txn_index;

/// One batch read: its offsets, and where its bytes are (a slice of the cache's memory or a
/// region of a segment file, sent as they are).
struct ReadBatch {
    first: i64,
    last: i64,
    control: bool,
    data: ReadChunk,
}

/// What one partition's read gave.
struct PartitionRead {
    /// The offset the read began at.
    read_from: i64,
    error_code: ErrorCode,
    high_watermark: i64,
    log_start: i64,
    batches: Vec<ReadBatch>,
}

impl PartitionRead {
    fn failed(error_code: ErrorCode) -> PartitionRead {
        PartitionRead {
            read_from: -1,
            error_code,
            high_watermark: -1,
            log_start: -1,
            batches: Vec::new(),
        }
    }
}

pub async fn handle(ctx: &Context, body: Bytes) -> Outcome {
    let request: ShareFetchRequest = match ctx.decode(body) {
        Ok(r) => r,
        Err(close) => return close,
    };
    let mut response = ShareFetchResponse::default();
    let group_id = request.group_id.as_ref().map(|g| g.0.to_string()).unwrap_or_default();
    let member_id = request.member_id.as_ref().map(|m| m.to_string()).unwrap_or_default();
    if let Err(code) = check_request(ctx, &group_id, &member_id) {
        response.error_code = code.code();
        return ctx.reply(&response);
    }
    let named = named_partitions!(request.topics);
    let resolved = resolve(ctx, named);
    let forgotten: Vec<TopicPartition> = {
        let forgotten = request.forgotten_topics_data.iter().flat_map(|topic| {
            let topic_id = *topic.topic_id.as_bytes();
            topic.partitions.iter().map(move |p| (topic_id, *p, Vec::new()))
        });
        resolve(ctx, forgotten.collect()).known.into_iter().map(|p| p.tp).collect()
    };
    let node = ctx.shard().config.node_id;
    let open = FetchOpen {
        group_id: group_id.clone(),
        member_id: member_id.clone(),
        node,
        session_epoch: request.share_session_epoch,
        partitions: resolved.known,
        forgotten,
    };
    let opened = match share_call::call(ctx, ShareCall::Open(open)).await {
        ShareAnswer::Opened(opened) => opened,
        _ => FetchOpened { error_code: ErrorCode::CoordinatorNotAvailable, ..Default::default() },
    };
    if opened.error_code != ErrorCode::None {
        response.error_code = opened.error_code.code();
        return ctx.reply(&response);
    }
    let lock_ms = opened.lock_ms.clamp(0, i64::from(i32::MAX)) as i32;

    let max_wait = Duration::from_millis(request.max_wait_ms.clamp(0, FETCH_WAIT_MS_MAX) as u64);
    let deadline = Instant::now() + max_wait;
    let max_records = match request.max_records {
        n if n > 0 => n as usize,
        _ => SHARE_FETCH_MAX_RECORDS_DEFAULT,
    };
    // MaxBytes 0 (a client's fetch.max.bytes=0) reads nothing, as Kafka answers it: the
    // session and the acknowledgements still count, and the fetch waits out max_wait_ms
    // rather than have the client ask again at once.
    if request.max_bytes <= 0 {
        glommio::timer::sleep(max_wait).await;
        let (failed, acks) = (resolved.failed, opened.acks);
        return respond(ctx, lock_ms, failed, acks, &[], Vec::new(), BTreeMap::new());
    }
    let size_bytes_max = (request.max_bytes as usize).min(SHARE_FETCH_PARTITION_BYTES_MAX);
    let mut plan = opened.plan;
    let mut acquired: Vec<(TopicPartition, Vec<Acquired>)> = Vec::new();
    let mut reads: BTreeMap<TopicPartition, PartitionRead> = BTreeMap::new();
    while !plan.is_empty() {
        let mut starts = BTreeMap::new();
        let mut unstarted = Vec::new();
        for (tp, start) in initial_offsets(ctx, &plan).await {
            match start {
                Ok(offset) => {
                    starts.insert(tp, offset);
                }
                Err(code) => unstarted.push((tp, code)),
            }
        }
        reads = read_all(ctx, &plan, &starts, size_bytes_max).await;
        // A partition whose start could not be looked up answers why, so that the client
        // goes to its leader.
        for (tp, code) in unstarted {
            reads.insert(tp, PartitionRead::failed(code));
        }
        let share_reads: Vec<ShareRead> = plan
            .iter()
            .filter_map(|p| {
                let read = reads.get(&p.tp)?;
                // Below the log start (retention moved it): the share partition moves up,
                // and the next round reads from there.
                let usable = [ErrorCode::None, ErrorCode::OffsetOutOfRange];
                if !usable.contains(&read.error_code) {
                    return None;
                }
                let init_offset = match p.fetch_offset {
                    None => Some(*starts.get(&p.tp)?),
                    Some(_) => None,
                };
                Some(ShareRead {
                    tp: p.tp.clone(),
                    init_offset,
                    log_start: read.log_start,
                    read_from: read.read_from,
                    batches: read.batches.iter().map(|b| (b.first, b.last, b.control)).collect(),
                })
            })
            .collect();
        let acquire = ShareCall::Acquire {
            group_id: group_id.clone(),
            member_id: member_id.clone(),
            reads: share_reads,
            max_records,
        };
        if let ShareAnswer::Acquired(got) = share_call::call(ctx, acquire).await {
            acquired = got;
        }
        let errors = reads.values().any(|r| !read_ok(r.error_code));
        let now = Instant::now();
        if !acquired.is_empty() || errors || now >= deadline {
            break;
        }
        // Wait for new data or the recheck, then ask where to read again.
        let seen: Vec<(TopicPartition, Seen)> = reads
            .iter()
            .map(|(tp, r)| (tp.clone(), Seen::HighWatermark(Offset(r.high_watermark))))
            .collect();
        let recheck_ms = ctx.shard().config.groups.share_fetch_recheck_ms.max(1) as u64;
        let recheck = Duration::from_millis(recheck_ms).min(deadline - now);
        if let Some(wait) = ctx.partitions().watch(seen, recheck).await {
            let _ = wait.done.await;
        }
        let replan =
            ShareCall::Plan { group_id: group_id.clone(), member_id: member_id.clone(), node };
        plan = match share_call::call(ctx, replan).await {
            ShareAnswer::Plan(plan) => plan,
            _ => Vec::new(),
        };
    }
    respond(ctx, lock_ms, resolved.failed, opened.acks, &plan, acquired, reads)
}

/// The offsets to start the share partitions at that the plan says are new
/// (`share.auto.offset.reset`: earliest, the log start; latest, the high watermark, or the
/// last stable offset under `share.isolation.level=read_committed`), or why there is none
/// (a clustered node that does not lead the partition: NOT_LEADER_OR_FOLLOWER).
async fn initial_offsets(
    ctx: &Context,
    plan: &[FetchPlan],
) -> BTreeMap<TopicPartition, Result<i64, ErrorCode>> {
    let mut out = BTreeMap::new();
    for isolation in [Isolation::ReadUncommitted, Isolation::ReadCommitted] {
        let wanted =
            plan.iter().filter(|p| p.fetch_offset.is_none() && isolation_of(p) == isolation);
        let wanted = wanted.map(|p| {
            // Kafka's ListOffsets timestamps: -2 earliest, -1 latest.
            let timestamp = if p.reset_earliest { -2 } else { -1 };
            (p.tp.clone(), timestamp)
        });
        out.extend(share_common::list_offsets(ctx, wanted, isolation).await);
    }
    out
}

/// How a planned partition is read (`share.isolation.level`).
fn isolation_of(plan: &FetchPlan) -> Isolation {
    if plan.read_committed {
        Isolation::ReadCommitted
    } else {
        Isolation::ReadUncommitted
    }
}

/// Whether a partition's read went well enough to answer it (a read below the log start
/// moves the share partition and is read again).
fn read_ok(code: ErrorCode) -> bool {
    code == ErrorCode::None || code == ErrorCode::OffsetOutOfRange
}

/// Reads every planned partition from where the plan (or its initial offset) says: one
/// message per owning shard.
async fn read_all(
    ctx: &Context,
    plan: &[FetchPlan],
    starts: &BTreeMap<TopicPartition, i64>,
    size_bytes_max: usize,
) -> BTreeMap<TopicPartition, PartitionRead> {
    let mut by_shard: BTreeMap<ShardId, Vec<ReadSpec>> = BTreeMap::new();
    let mut from: BTreeMap<TopicPartition, i64> = BTreeMap::new();
    for p in plan {
        let Some(offset) = p.fetch_offset.or_else(|| starts.get(&p.tp).copied()) else {
            continue;
        };
        from.insert(p.tp.clone(), offset);
        let spec = ReadSpec {
            tp: p.tp.clone(),
            offset: Offset(offset),
            size_bytes_max,
            isolation: isolation_of(p),
            follower: None,
            client_rack: None,
        };
        by_shard.entry(ctx.shard().owner(&p.tp)).or_default().push(spec);
    }
    let calls = by_shard.into_iter().map(|(owner, partitions)| {
        ctx.partitions().call(owner, PartitionRequest::Read { partitions })
    });
    let mut out = BTreeMap::new();
    for response in join_all(calls).await {
        if let Some(PartitionResponse::Read(results)) = response {
            for result in results {
                let read_from = from.get(&result.tp).copied().unwrap_or(i64::MAX);
                out.insert(result.tp.clone(), batches_of(result, read_from));
            }
        }
    }
    out
}

/// The batches of a read, each with its offsets and its bytes where they are: memory the
/// cache holds is sliced, and of a catch-up read's file regions only the batch headers are
/// read (the records go out with sendfile, as a Fetch's do). Under read_committed the
/// batches of aborted transactions (the read's aborted list) count as control batches:
/// never handed out, the share partition moves past them, as Kafka archives them.
fn batches_of(result: ReadResult, read_from: i64) -> PartitionRead {
    let mut read = PartitionRead {
        read_from,
        error_code: result.error_code,
        high_watermark: result.high_watermark.0,
        log_start: result.log_start_offset.0,
        batches: Vec::new(),
    };
    let aborted = &result.aborted;
    let batch_of = |header: &BatchHeader, data: ReadChunk| ReadBatch {
        first: header.base_offset().0,
        last: header.last_offset().0,
        control: header.is_control()
            || (header.is_transactional()
                && txn_index::is_aborted(aborted, header.producer_id(), header.base_offset())),
        data,
    };
    for chunk in &result.chunks {
        // A batch cut short ends the read: whatever follows it is not at a batch boundary.
        let whole = match chunk {
            ReadChunk::Memory(bytes) => {
                let mut position = 0;
                while position < bytes.len() {
                    let Ok(header) = BatchHeader::parse(&bytes[position..]) else { break };
                    let size = header.size_bytes();
                    if position + size > bytes.len() {
                        break;
                    }
                    let data = ReadChunk::Memory(bytes.slice(position..position + size));
                    read.batches.push(batch_of(&header, data));
                    position += size;
                }
                position == bytes.len()
            }
            ReadChunk::File { file, position, len } => {
                let mut at = 0u64;
                let mut head = [0u8; BATCH_HEADER_BYTES];
                while at + BATCH_HEADER_BYTES as u64 <= *len {
                    if let Err(e) = file.read_exact_at(&mut head, position + at) {
                        tracing::warn!(tp = %result.tp, "share fetch read failed: {e}");
                        read.error_code = ErrorCode::UnknownServerError;
                        return read;
                    }
                    let Ok(header) = BatchHeader::parse(&head) else { break };
                    let size = header.size_bytes() as u64;
                    if at + size > *len {
                        break;
                    }
                    let data =
                        ReadChunk::File { file: file.clone(), position: position + at, len: size };
                    read.batches.push(batch_of(&header, data));
                    at += size;
                }
                at == *len
            }
        };
        if !whole {
            break;
        }
    }
    read
}

/// What goes into one partition of the response.
enum Update {
    Failed(ErrorCode),
    Acked(ErrorCode),
    ReadFailed(ErrorCode),
    Records(Vec<ReadChunk>, usize, Vec<(i64, i64, i16)>),
}

/// The answer, framed by hand (`protocol::share_fetch_response`) so that the acquired
/// batches go out as they were read: cache memory as it is, segment file regions with
/// sendfile.
fn respond(
    ctx: &Context,
    lock_ms: i32,
    failed: Vec<(TopicId, i32, ErrorCode)>,
    acks: Vec<(TopicPartition, ErrorCode)>,
    plan: &[FetchPlan],
    acquired: Vec<(TopicPartition, Vec<Acquired>)>,
    mut reads: BTreeMap<TopicPartition, PartitionRead>,
) -> Outcome {
    let node = ctx.shard().config.node_id.0;
    let topic_ids: BTreeMap<TopicPartition, TopicId> =
        plan.iter().map(|p| (p.tp.clone(), p.topic_id)).collect();
    let mut by_topic: BTreeMap<TopicId, BTreeMap<i32, PartitionData<ReadChunk>>> = BTreeMap::new();
    let mut entry = |topic_id: TopicId, partition: i32| {
        let partitions = by_topic.entry(topic_id).or_default();
        partitions.entry(partition).or_insert_with(|| PartitionData {
            partition_index: partition,
            error_code: 0,
            acknowledge_error_code: 0,
            leader_id: node,
            leader_epoch: 0,
            records: Vec::new(),
            records_size: 0,
            acquired: Vec::new(),
        });
        (topic_id, partition)
    };
    let mut updates: Vec<((TopicId, i32), Update)> = Vec::new();
    for (topic_id, partition, code) in failed {
        updates.push((entry(topic_id, partition), Update::Failed(code)));
    }
    for (tp, code) in &acks {
        if let Some(topic_id) = topic_id_of(&topic_ids, tp, ctx) {
            updates.push((entry(topic_id, tp.partition), Update::Acked(*code)));
        }
    }
    for (tp, read) in &reads {
        if !read_ok(read.error_code) {
            if let Some(topic_id) = topic_ids.get(tp) {
                let key = entry(*topic_id, tp.partition);
                updates.push((key, Update::ReadFailed(read.error_code)));
            }
        }
    }
    for (tp, runs) in acquired {
        let Some(topic_id) = topic_ids.get(&tp).copied() else { continue };
        let Some(read) = reads.remove(&tp) else { continue };
        let overlaps = |b: &ReadBatch| {
            runs.iter().any(|r| b.first <= r.last_offset && r.first_offset <= b.last)
        };
        let batches = read.batches.into_iter().filter(|b| !b.control && overlaps(b));
        let (records, size) = contiguous(batches.map(|b| b.data));
        let key = entry(topic_id, tp.partition);
        let runs = runs.iter().map(|r| (r.first_offset, r.last_offset, r.delivery_count));
        updates.push((key, Update::Records(records, size, runs.collect())));
    }
    for ((topic_id, partition), update) in updates {
        let Some(data) = by_topic.get_mut(&topic_id).and_then(|t| t.get_mut(&partition)) else {
            continue;
        };
        match update {
            Update::Failed(code) => {
                data.error_code = code.code();
                data.acknowledge_error_code = code.code();
            }
            Update::Acked(code) => data.acknowledge_error_code = code.code(),
            Update::ReadFailed(code) => data.error_code = code.code(),
            Update::Records(records, size, acquired) => {
                data.records = records;
                data.records_size = size;
                data.acquired = acquired;
            }
        }
    }
    // Each partition names its leader and leader epoch as the catalog has them (clustered; a
    // single node names itself, epoch 0), with the endpoints of those that are other brokers
    // (KIP-951), so that a client sent away with NOT_LEADER_OR_FOLLOWER knows where to go.
    let mut leaders = BTreeSet::new();
    for (topic_id, partitions) in by_topic.iter_mut() {
        let name = ctx.shard().catalog.borrow().name_of(topic_id);
        let Some(name) = name else { continue };
        for data in partitions.values_mut() {
            let Some((leader, epoch)) = current_leader(ctx, &name, data.partition_index) else {
                continue;
            };
            data.leader_id = leader.0;
            data.leader_epoch = epoch.0;
            if leader.0 != node {
                leaders.insert(leader);
            }
        }
    }
    let endpoints = node_endpoints(ctx, leaders);
    let topics = by_topic
        .into_iter()
        .map(|(topic_id, partitions)| TopicData {
            topic_id,
            partitions: partitions.into_values().collect(),
        })
        .collect();
    let (parts, body_size) = share_fetch_response::encode(0, lock_ms, topics, &endpoints);
    super::fetch::reply_parts(ctx, parts, body_size)
}

/// The chunks of the batches to send, in order, with the file regions that follow each
/// other in one file made one (one sendfile), and their size in bytes.
fn contiguous(chunks: impl Iterator<Item = ReadChunk>) -> (Vec<ReadChunk>, usize) {
    let mut out: Vec<ReadChunk> = Vec::new();
    let mut size = 0;
    for chunk in chunks {
        size += chunk.len();
        if let (
            Some(ReadChunk::File { file, position, len }),
            ReadChunk::File { file: next, position: at, len: more },
        ) = (out.last_mut(), &chunk)
        {
            if Arc::ptr_eq(file, next) && *position + *len == *at {
                *len += more;
                continue;
            }
        }
        out.push(chunk);
    }
    (out, size)
}

/// A partition's topic id: from the plan, else the catalog (an acknowledgement in a closing
/// request, which has no plan).
fn topic_id_of(
    plan: &BTreeMap<TopicPartition, TopicId>,
    tp: &TopicPartition,
    ctx: &Context,
) -> Option<TopicId> {
    if let Some(id) = plan.get(tp) {
        return Some(*id);
    }
    ctx.shard().catalog.borrow().get(&tp.topic).map(|meta| meta.id)
}
