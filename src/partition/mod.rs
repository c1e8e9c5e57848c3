//! The partitions a shard owns, as a service on the shard: their logs and the batch cache
//! they share, produce (admission in order, then the durable write), reads, offsets,
//! transaction markers, DeleteRecords, DescribeProducers, and the fetch long-poll watches
//! on them; clustered, each log's part in replication (`replicas.rs`: a leader's view of its
//! followers, the high watermark it allows; the partitions a follower fetches, which the
//! `replication` service's fetchers read and append).
//!
//! Lifecycle: built on every shard at start (`Partitions::new`), `open_owned_logs` recovers
//! the logs before the shard serves, `close_all` seals them at shutdown. Other shards reach
//! it through its mesh (`PartitionRequest`); the connection's own shard calls it directly.
//! Concurrency: shard-local, `RefCell`s never borrowed across an `.await`.
//!
//! Fetch long-poll: a fetch waits in its shard's purgatory on its own waiter id and on the
//! partitions of that shard; each other owner of its partitions holds a watch for it
//! (`Watch`) that a notification of the partition turns into a `Notify` of the waiter.

pub mod cleaner;
pub mod delay;
mod produce;
mod read;
pub mod replicas;
pub mod retention;

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;

use crate::constants::{
    LOG_OPENS_IN_FLIGHT, METRICS_PARTITIONS_PER_YIELD, REPEATED_WARNING_INTERVAL_MS,
};
use crate::metrics::{CacheReport, PartitionReport};
use crate::model::dynamic_config::DynamicConfigs;
use crate::model::{now_ms, ErrorCode, Isolation, Offset, ProducerEpoch, ProducerId};
use crate::model::{LeaderEpoch, NodeId, PartitionEpoch, ShardId, TopicPartition};
use crate::shard::catalog::{TopicMeta, META_DIR};
use crate::shard::delayed::{Key, Wait};
use crate::shard::internal_log::{InternalRole, REPLICATED_INTERNAL_TOPICS};
use crate::shard::mesh::{Mesh, Served, Service};
use crate::shard::Shard;
use crate::storage::cache::CacheBudget;
use crate::storage::clean_stop::{CleanStop, LogState};
use crate::storage::files::{FileStats, OpenFiles};
use crate::storage::high_watermarks;
use crate::storage::log::{self, Log, Marker, ReadChunk, RecoveryReport};
use crate::storage::txn_index::AbortedTxn;
use crate::storage::Error as StorageError;
use crate::throttle::Throttle;
use replicas::Followers;
use retention::RetentionSchedule;

type LogRef = Rc<RefCell<Log>>;

/// A request to the shard that owns the partitions it names.
#[derive(Debug)]
pub enum PartitionRequest {
    /// `timeout_ms`: how long the producer waits for the write (its request timeout); past
    /// it the partition answers REQUEST_TIMED_OUT (the write itself still completes).
    Produce {
        partitions: Vec<(TopicPartition, Vec<Bytes>)>,
        timeout_ms: i32,
        /// -1 (all): a replicated partition answers once its high watermark passed the
        /// batches; 0 and 1 once the leader wrote them.
        acks: i16,
    },
    Read {
        partitions: Vec<ReadSpec>,
    },
    /// Under read_committed, latest is the last stable offset.
    ListOffsets {
        partitions: Vec<(TopicPartition, i64)>,
        isolation: Isolation,
    },
    /// Append these transaction markers.
    WriteMarkers {
        markers: Vec<(TopicPartition, Marker)>,
    },
    /// Move the partitions' log start (DeleteRecords).
    DeleteRecords {
        partitions: Vec<(TopicPartition, Offset)>,
    },
    /// The partitions' producers (DescribeProducers).
    DescribeProducers {
        partitions: Vec<TopicPartition>,
    },
    /// Every shard: adopt this topic and open the logs it owns. Answered `Applied`: an
    /// error names the log that could not be opened (the controller then undoes the change).
    ApplyTopic(TopicMeta),
    /// Every shard: adopt the dynamic broker and group configs (its catalog copy) and the
    /// topics whose configs they changed (their open logs take the new configs). Answered
    /// `Done`.
    ApplyConfigs {
        configs: DynamicConfigs,
        topics: Vec<TopicMeta>,
    },
    /// Every shard: delete the logs it owns of topic `name` from partition `from` on, and
    /// forget the topic when `from` is 0 (DeleteTopics, or undoing a creation).
    RemovePartitions {
        name: String,
        from: i32,
    },
    /// A post: notify waiter `waiter` of the sender on the next append to one of these
    /// partitions within `timeout_ms`, at once if a partition already passed what the
    /// waiter saw.
    Watch {
        waiter: u64,
        partitions: Vec<(TopicPartition, Seen)>,
        timeout_ms: u64,
    },
    /// A post: new data arrived on a partition that waiter `waiter` of this shard watches.
    Notify {
        waiter: u64,
    },
    /// A post: wake the fetches waiting on these partitions of this shard (a share group's
    /// coordinator freed records of them: released, or their acquisition locks ended).
    Wake {
        partitions: Vec<TopicPartition>,
    },
}

#[derive(Debug)]
pub enum PartitionResponse {
    Produce(Vec<ProduceResult>),
    Read(Vec<ReadResult>),
    Offsets(Vec<OffsetResult>),
    Markers(Vec<(TopicPartition, ErrorCode)>),
    Producers(Vec<(TopicPartition, Result<Vec<ProducerInfo>, ErrorCode>)>),
    Applied(Result<(), String>),
    Done,
}

#[derive(Debug, Clone)]
pub struct ReadSpec {
    pub tp: TopicPartition,
    pub offset: Offset,
    pub size_bytes_max: usize,
    /// read_committed: stop at the last stable offset, report aborted transactions.
    pub isolation: Isolation,
    /// A follower's fetch (None: a consumer's).
    pub follower: Option<FollowerFetch>,
    /// A consumer's fetch (v11+) naming its rack to a node whose replica selector is
    /// rack-aware: where it leads the partition, it may name another replica to read from
    /// (`ReadResult::preferred_read_replica`, KIP-392).
    pub client_rack: Option<ClientRack>,
}

/// What a follower's fetch says of one partition.
#[derive(Debug, Clone, Copy)]
pub struct FollowerFetch {
    pub node: NodeId,
    /// The epoch of the last batch it has (NONE when it has none), checked against this
    /// leader's epochs for divergence.
    pub last_epoch: LeaderEpoch,
    /// Its log start (a replica that no longer holds an offset is not named to consumers).
    pub log_start: Offset,
}

/// A consumer's rack and the racks of the live brokers, for the rack-aware choice of the
/// replica it reads from (`replicas::rack_aware_read_replica`). Built once per request.
#[derive(Debug, Clone)]
pub struct ClientRack {
    pub rack: Arc<str>,
    /// The rack of every live (unfenced) broker that has one.
    pub racks: Arc<BTreeMap<NodeId, Arc<str>>>,
}

#[derive(Debug, Clone)]
pub struct ProduceResult {
    pub tp: TopicPartition,
    pub error_code: ErrorCode,
    /// Said to clients that read it (Produce v8+): why the write was refused.
    pub error_message: Option<String>,
    /// The records that made the write fail (Produce v8+): index in the batch, and why.
    pub record_errors: Vec<(i32, String)>,
    pub base_offset: Offset,
    pub log_append_time: i64,
    pub log_start_offset: Offset,
}

#[derive(Debug)]
pub struct ReadResult {
    pub tp: TopicPartition,
    pub error_code: ErrorCode,
    pub high_watermark: Offset,
    pub last_stable_offset: Offset,
    pub log_start_offset: Offset,
    pub aborted: Vec<AbortedTxn>,
    pub chunks: Vec<ReadChunk>,
    pub size_bytes: usize,
    /// The written end when it was read (what a follower's fetch waits to pass).
    pub log_end: Offset,
    /// A follower's log diverged: the epoch and end offset it must truncate to (Fetch
    /// v12+'s diverging_epoch); nothing is read then.
    pub diverging: Option<(LeaderEpoch, Offset)>,
    /// A consumer should read from this replica rather than the leader (Fetch v11+'s
    /// preferred_read_replica, KIP-392); nothing is read then.
    pub preferred_read_replica: Option<NodeId>,
}

impl ReadResult {
    /// The bytes read, in one buffer: a catch-up read's file regions are read into memory
    /// (for the readers that need the records themselves: the dead-letter writer).
    pub fn bytes(&self) -> std::io::Result<Bytes> {
        use std::os::unix::fs::FileExt;
        let mut data = bytes::BytesMut::with_capacity(self.size_bytes);
        for chunk in &self.chunks {
            match chunk {
                ReadChunk::Memory(bytes) => data.extend_from_slice(bytes),
                ReadChunk::File { file, position, len } => {
                    let mut buf = vec![0u8; *len as usize];
                    file.read_exact_at(&mut buf, *position)?;
                    data.extend_from_slice(&buf);
                }
            }
        }
        Ok(data.freeze())
    }
}

#[derive(Debug, Clone)]
pub struct OffsetResult {
    pub tp: TopicPartition,
    pub error_code: ErrorCode,
    pub offset: Offset,
    pub timestamp: i64,
}

/// One producer of a partition, as DescribeProducers reports it.
#[derive(Debug, Clone)]
pub struct ProducerInfo {
    pub producer_id: ProducerId,
    pub producer_epoch: ProducerEpoch,
    pub last_sequence: i32,
    pub last_timestamp: i64,
    pub current_txn_start_offset: Offset,
}

pub struct Partitions {
    shard: Rc<Shard>,
    mesh: Mesh<Partitions>,
    logs: RefCell<HashMap<TopicPartition, LogRef>>,
    /// The memory the batch caches of this shard's partitions share.
    cache: Rc<CacheBudget>,
    files: Rc<OpenFiles>,
    /// Which logs the next retention pass visits.
    retention: RefCell<RetentionSchedule>,
    /// The shard's cleaner of compacted logs (`cleaner.rs`).
    pub cleaner: cleaner::CleanerState,
    /// Reads that found damaged bytes: logged once a second with a count, since a consumer
    /// fetches the same damaged place again and again.
    corrupt_reads: RefCell<Throttle>,
    started: std::time::Instant,
    /// Replicated partitions this shard leads: what their followers fetched.
    leading: RefCell<HashMap<TopicPartition, Followers>>,
    /// Partitions this shard follows, with their leader: what the fetchers fetch.
    following: RefCell<BTreeMap<TopicPartition, Following>>,
    /// Clustered: the high watermarks checkpointed before this start, each taken by its log
    /// when it opens (`storage::high_watermarks`).
    checkpointed: RefCell<HashMap<TopicPartition, Offset>>,
    /// What this shard's checkpoint last held, so an unchanged one is not written again.
    checkpoint_written: RefCell<Vec<(TopicPartition, Offset)>>,
    /// Delayed delivery: the delay logs and schedules of this shard's partitions (`delay.rs`).
    delays: delay::Delays,
    /// Told the name of each topic removed on this shard (`on_topic_removed`).
    topic_removed: RefCell<Vec<TopicRemoved>>,
}

/// A listener of topic removals (`Partitions::on_topic_removed`).
pub type TopicRemoved = Box<dyn Fn(&str)>;

/// What a waiting fetch saw of a partition: a consumer its high watermark, a follower the
/// leader's written end (which it reads up to).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    HighWatermark(Offset),
    LogEnd(Offset),
}

/// A partition this node follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Following {
    pub leader: NodeId,
    pub leader_epoch: LeaderEpoch,
    /// Whether its high watermark is one a leader gave (or this node had as the leader) in
    /// this process, so that consumers may read below it (KIP-392). Not at first: a log
    /// opened at start has the high watermark of its last checkpoint (`high_watermarks`),
    /// safe but seconds old, and a consumer sent here would wait for what its leader has.
    pub serves_consumers: bool,
}

/// A followed partition as a fetcher asks for it.
#[derive(Debug, Clone)]
pub struct FetchPosition {
    pub tp: TopicPartition,
    pub leader_epoch: LeaderEpoch,
    /// The follower's log end: where it fetches from.
    pub log_end: Offset,
    /// The epoch of its last batch (NONE: it has none).
    pub last_epoch: LeaderEpoch,
    pub log_start: Offset,
}

/// What a leader wants changed in a partition's ISR (proposed by the `replication` service),
/// and the epochs it saw the partition in.
#[derive(Debug, Clone)]
pub struct IsrChange {
    pub tp: TopicPartition,
    pub leader_epoch: LeaderEpoch,
    pub partition_epoch: PartitionEpoch,
    pub isr: Vec<NodeId>,
}

impl Service for Partitions {
    type Request = PartitionRequest;
    type Response = PartitionResponse;

    fn mesh(&self) -> &Mesh<Partitions> {
        &self.mesh
    }

    fn serve(self: &Rc<Self>, from: ShardId, request: PartitionRequest) -> Served<Self::Response> {
        use PartitionRequest as Q;
        use PartitionResponse as R;
        let this = self.clone();
        match request {
            // Admitted here, before the next message is taken, so that a connection's
            // pipelined produces get offsets in the order it sent them.
            Q::Produce { partitions, timeout_ms, acks } => {
                let results = self.admit_produce(partitions, timeout_ms, acks);
                Served::Later(Box::pin(async move { R::Produce(results.await) }))
            }
            Q::Read { partitions } => {
                Served::Later(Box::pin(async move { R::Read(this.read(partitions).await) }))
            }
            Q::ListOffsets { partitions, isolation } => Served::Later(Box::pin(async move {
                R::Offsets(this.list_offsets(partitions, isolation).await)
            })),
            Q::WriteMarkers { markers } => {
                Served::Later(Box::pin(
                    async move { R::Markers(this.write_markers(markers).await) },
                ))
            }
            Q::DeleteRecords { partitions } => {
                Served::Later(Box::pin(
                    async move { R::Offsets(this.delete_records(partitions).await) },
                ))
            }
            Q::DescribeProducers { partitions } => {
                Served::Now(R::Producers(self.describe_producers(partitions)))
            }
            Q::ApplyTopic(meta) => {
                Served::Later(Box::pin(async move { R::Applied(this.apply_topic(meta).await) }))
            }
            Q::ApplyConfigs { configs, topics } => {
                self.shard.catalog.borrow_mut().configs = configs;
                for meta in topics {
                    self.shard.catalog.borrow_mut().apply(meta.clone());
                    self.reconfigure_logs(&meta);
                }
                Served::Now(R::Done)
            }
            Q::RemovePartitions { name, from } => Served::Later(Box::pin(async move {
                this.remove_partitions(&name, from).await;
                R::Done
            })),
            Q::Watch { waiter, partitions, timeout_ms } => {
                if self.watch_here(from, waiter, partitions, timeout_ms) {
                    // Already past what the waiter saw: wake it at once.
                    Served::Later(Box::pin(async move {
                        this.mesh.post(from, Q::Notify { waiter }).await;
                        R::Done
                    }))
                } else {
                    Served::Now(R::Done)
                }
            }
            Q::Notify { waiter } => {
                let remote = self.shard.delayed.notify(&Key::Waiter(waiter));
                debug_assert!(remote.is_empty(), "a waiter id is only watched on its shard");
                Served::Now(R::Done)
            }
            Q::Wake { partitions } => Served::Later(Box::pin(async move {
                for tp in &partitions {
                    this.notify_partition(tp).await;
                }
                R::Done
            })),
        }
    }
}

impl Partitions {
    /// `open_files`: the shard's budget of descriptors for segment files.
    pub fn new(shard: Rc<Shard>, mesh: Mesh<Partitions>, open_files: usize) -> Partitions {
        let cache = CacheBudget::new(shard.config.batch_cache_bytes as usize);
        let files = OpenFiles::new(open_files);
        Partitions {
            shard,
            mesh,
            logs: RefCell::new(HashMap::new()),
            cache,
            files,
            retention: RefCell::new(RetentionSchedule::default()),
            cleaner: cleaner::CleanerState::default(),
            corrupt_reads: RefCell::new(Throttle::new(REPEATED_WARNING_INTERVAL_MS)),
            started: std::time::Instant::now(),
            leading: RefCell::new(HashMap::new()),
            following: RefCell::new(BTreeMap::new()),
            checkpointed: RefCell::new(HashMap::new()),
            checkpoint_written: RefCell::new(Vec::new()),
            delays: delay::Delays::default(),
            topic_removed: RefCell::new(Vec::new()),
        }
    }

    /// The shard's cache of open segment files (its counts, for the shutdown line).
    pub fn open_files(&self) -> FileStats {
        self.files.stats()
    }

    /// Sends a request to the partitions' owner `target` (or serves it here); `None` once
    /// the mesh is closed.
    pub async fn call(
        &self,
        target: ShardId,
        request: PartitionRequest,
    ) -> Option<PartitionResponse> {
        self.mesh.call(target, request).await
    }

    /// Sends the same request to every shard and waits for all of them.
    pub async fn broadcast(
        &self,
        make: impl Fn() -> PartitionRequest,
    ) -> Vec<Option<PartitionResponse>> {
        self.mesh.broadcast(make).await
    }

    /// Opens every log this shard owns according to the catalog (recovering each, or
    /// resuming it from what the last clean stop recorded of it).
    pub async fn open_owned_logs(
        &self,
        clean_stop: &Mutex<CleanStop>,
    ) -> Result<RecoveryReport, (TopicPartition, StorageError)> {
        if self.clustered() {
            let meta_dir = self.shard.config.data_dir.join(META_DIR);
            let found = glommio::executor()
                .spawn_blocking(move || high_watermarks::read_all(&meta_dir))
                .await;
            *self.checkpointed.borrow_mut() = found;
        }
        let metas: Vec<TopicMeta> = self.shard.catalog.borrow().topics.values().cloned().collect();
        let mut total = RecoveryReport::default();
        for meta in metas {
            let report = self.open_topic(&meta, Some(clean_stop)).await?;
            total.segments += report.segments;
            total.truncated_segments += report.truncated_segments;
            total.resumed += report.resumed;
            self.open_delay_logs(&meta).await?;
        }
        Ok(total)
    }

    /// Opens the delay logs of `meta`'s partitions whose logs are open here (see
    /// `delay::open_delay_log`): those of a topic that opted in, and any left on disk.
    async fn open_delay_logs(
        &self,
        meta: &TopicMeta,
    ) -> Result<(), (TopicPartition, StorageError)> {
        for partition in 0..meta.partitions {
            let tp = TopicPartition::new(meta.name.clone(), partition);
            if self.log(&tp).is_some() {
                self.open_delay_log(&tp).await.map_err(|e| (tp, e))?;
            }
        }
        Ok(())
    }

    pub fn owned_partition_count(&self) -> usize {
        self.logs.borrow().len()
    }

    /// Every log this shard owns as a scrape reports it, read off the logs now (nothing is
    /// kept per partition for metrics but the log's own `traffic`), and the shard's batch
    /// cache. Yields every `METRICS_PARTITIONS_PER_YIELD` logs, so a scrape at 100,000
    /// partitions does not hold this shard's requests back.
    pub async fn metrics_report(&self) -> (Vec<PartitionReport>, CacheReport, (u64, u64)) {
        let logs: Vec<LogRef> = self.logs.borrow().values().cloned().collect();
        let mut reports = Vec::with_capacity(logs.len());
        let now = now_ms();
        for (i, log) in logs.iter().enumerate() {
            if i % METRICS_PARTITIONS_PER_YIELD == METRICS_PARTITIONS_PER_YIELD - 1 {
                glommio::yield_if_needed().await;
            }
            let l = log.borrow();
            let cleanable = crate::storage::cleaner::cleanable(&l, now);
            let delayed = self.delay_stats(&l.tp);
            reports.push(PartitionReport {
                delayed_batches: delayed.pending_batches,
                delayed_next_due_ms: delayed.next_due_ms.unwrap_or(0).max(0) as u64,
                dirty_bytes: cleanable.map_or(0, |c| c.dirty_bytes),
                cleanable_bytes: cleanable.map_or(0, |c| c.dirty_bytes + c.clean_bytes),
                topic: l.tp.topic.clone(),
                partition: l.tp.partition,
                log_end_offset: log::log_end(log).0,
                high_watermark: l.high_watermark.0,
                log_start_offset: l.log_start_offset.0,
                size_bytes: l.size_bytes(),
                traffic: l.traffic.get(),
            });
        }
        let (reads, bytes, bytes_max) = self.cache.stats();
        let cache = CacheReport {
            hits: reads.hits,
            misses: reads.misses,
            bytes: bytes as u64,
            bytes_max: bytes_max as u64,
        };
        (reports, cache, (reads.hit_bytes, reads.file_bytes))
    }

    /// Opens the logs of `meta` this shard owns (of partitions with a replica on this node)
    /// and has not opened yet, `LOG_OPENS_IN_FLIGHT`
    /// at a time (each is a few small reads and an open through io_uring: one after the
    /// other, a shard of 50,000 partitions would start in a minute); an error names a
    /// partition whose log could not be opened (those opened before it stay open).
    async fn open_topic(
        &self,
        meta: &TopicMeta,
        clean_stop: Option<&Mutex<CleanStop>>,
    ) -> Result<RecoveryReport, (TopicPartition, StorageError)> {
        let me = self.shard.config.node_id;
        let owned: Vec<TopicPartition> = (0..meta.partitions)
            .filter(|partition| meta.has_replica_on(*partition, me))
            .map(|partition| TopicPartition::new(meta.name.clone(), partition))
            .filter(|tp| {
                self.shard.owner(tp) == self.shard.id && !self.logs.borrow().contains_key(tp)
            })
            .collect();
        let mut opening = futures::stream::iter(owned)
            .map(|tp| async move {
                let resume = clean_stop.and_then(|found| {
                    found.lock().unwrap_or_else(|e| e.into_inner()).take(&tp.dir_name())
                });
                let opened = Log::open_in(
                    &self.shard.config.data_dir,
                    tp.clone(),
                    meta.config.clone(),
                    self.cache.clone(),
                    &self.files,
                    resume.as_ref(),
                )
                .await;
                (tp, opened)
            })
            .buffer_unordered(LOG_OPENS_IN_FLIGHT);
        let mut total = RecoveryReport::default();
        let mut failed = None;
        // Every open runs to its end, even after one failed, so that no log is left half
        // opened and unregistered.
        while let Some((tp, opened)) = opening.next().await {
            match opened {
                Ok((log, report)) => {
                    total.segments += report.segments;
                    total.truncated_segments += report.truncated_segments;
                    total.resumed += report.resumed;
                    self.mark_for_retention(&tp);
                    let log = Rc::new(std::cell::RefCell::new(log));
                    if self.clustered() {
                        let checkpointed = self.checkpointed.borrow_mut().remove(&tp);
                        log::start_high_watermark(&log, checkpointed);
                    }
                    self.logs.borrow_mut().insert(tp, log);
                }
                Err(e) => failed = failed.or(Some((tp, e))),
            }
        }
        match failed {
            Some(failure) => Err(failure),
            None => Ok(total),
        }
    }

    /// Clustered: writes this shard's high watermark checkpoint (`storage::high_watermarks`)
    /// when it changed since the last one: Kafka's `replication-offset-checkpoint`, every
    /// `HIGH_WATERMARK_CHECKPOINT_MS` and at a clean stop.
    pub async fn checkpoint_high_watermarks(&self) {
        let mut entries: Vec<(TopicPartition, Offset)> = self
            .logs
            .borrow()
            .iter()
            .filter_map(|(tp, log)| {
                Some((tp.clone(), log::replicated_high_watermark(&log.borrow())?))
            })
            .collect();
        entries.sort_unstable();
        if *self.checkpoint_written.borrow() == entries {
            return;
        }
        let meta_dir = self.shard.config.data_dir.join(META_DIR);
        let shard = self.shard.id.index();
        let written = entries.clone();
        let result = glommio::executor()
            .spawn_blocking(move || high_watermarks::write(&meta_dir, shard, &written))
            .await;
        match result {
            Ok(()) => *self.checkpoint_written.borrow_mut() = entries,
            Err(e) => tracing::warn!(shard = shard, "cannot checkpoint the high watermarks: {e}"),
        }
    }

    fn clustered(&self) -> bool {
        self.shard.config.cluster.is_some()
    }

    /// Closes every log, `LOG_OPENS_IN_FLIGHT` at a time (each waits for its queued writes
    /// and reads its last batch's header): called once at shutdown, after the listener
    /// stopped. Returns what the caller records for the next start (`clean_stop.rs`), after
    /// it has synced the file system.
    pub async fn close_all(&self) -> Vec<LogState> {
        self.close_delay_logs().await;
        let logs: Vec<LogRef> = self.logs.borrow().values().cloned().collect();
        futures::stream::iter(logs)
            .map(|log| async move { log::close(&log).await })
            .buffer_unordered(LOG_OPENS_IN_FLIGHT)
            .collect()
            .await
    }

    /// Periodic housekeeping: retention, time-based rolls and producer id expiry, for the
    /// logs written, reconfigured or opened since the last pass and those whose deadline has
    /// come (`retention.rs`), not for every log.
    pub async fn enforce_retention(&self) {
        let now = now_ms();
        let due = self.retention.borrow_mut().take_due(now);
        for tp in due {
            let Some(log) = self.log(&tp) else { continue };
            if let Err(e) = log::enforce_retention(&log, now).await {
                tracing::warn!(%tp, "retention failed: {e}");
            }
            let next = log::retention_due(&log.borrow(), now_ms());
            self.retention.borrow_mut().schedule(tp, next);
            glommio::yield_if_needed().await;
        }
    }

    /// The log of `tp` was written or reconfigured: the next retention pass visits it.
    fn mark_for_retention(&self, tp: &TopicPartition) {
        self.retention.borrow_mut().mark(tp);
    }

    fn log(&self, tp: &TopicPartition) -> Option<LogRef> {
        self.logs.borrow().get(tp).cloned()
    }

    async fn apply_topic(&self, meta: TopicMeta) -> Result<(), String> {
        self.shard.catalog.borrow_mut().apply(meta.clone());
        self.reconfigure_logs(&meta);
        let opened = self.open_topic(&meta, None).await.map(|_| ());
        let opened = match opened {
            Ok(()) => self.open_delay_logs(&meta).await,
            Err(e) => Err(e),
        };
        let opened = opened.map_err(|(tp, e)| {
            tracing::error!(%tp, "cannot open the partition's log: {e}");
            format!("cannot open the log of {tp} in {}: {e}", self.shard.config.data_dir.display())
        });
        self.apply_roles(&meta).await;
        self.remove_replicas_moved_away(&meta).await;
        opened
    }

    /// Logs already open take the topic's new configs (AlterConfigs, new broker defaults).
    fn reconfigure_logs(&self, meta: &TopicMeta) {
        for partition in 0..meta.partitions {
            let tp = TopicPartition::new(meta.name.clone(), partition);
            if let Some(log) = self.logs.borrow().get(&tp) {
                log.borrow_mut().config = meta.config.clone();
                self.mark_for_retention(&tp);
            }
        }
    }

    /// Clustered: deletes the logs of `meta`'s partitions that this node no longer keeps a
    /// copy of (a reassignment moved the replica to another broker), as Kafka's StopReplica
    /// with deletion does.
    async fn remove_replicas_moved_away(&self, meta: &TopicMeta) {
        let me = self.shard.config.node_id;
        let doomed: Vec<(TopicPartition, LogRef)> = {
            let mut logs = self.logs.borrow_mut();
            let keys: Vec<TopicPartition> = logs
                .keys()
                .filter(|tp| tp.topic == meta.name && tp.partition < meta.partitions)
                .filter(|tp| !meta.has_replica_on(tp.partition, me))
                .cloned()
                .collect();
            keys.into_iter().filter_map(|tp| logs.remove(&tp).map(|log| (tp, log))).collect()
        };
        for (tp, _) in &doomed {
            tracing::info!(%tp, "no longer a replica here (reassigned): deleting its log");
        }
        self.delete_logs(doomed).await;
    }

    /// Clustered: each owned log's part in replication as `meta` places it (its leader
    /// epoch; leading a replicated partition, following one, or neither).
    async fn apply_roles(&self, meta: &TopicMeta) {
        let me = self.shard.config.node_id;
        for partition in 0..meta.partitions {
            let Some(placement) = meta.placement(partition) else { return };
            let tp = TopicPartition::new(meta.name.clone(), partition);
            let Some(log) = self.log(&tp) else {
                self.leading.borrow_mut().remove(&tp);
                self.following.borrow_mut().remove(&tp);
                self.set_internal_role(&tp, None);
                continue;
            };
            let replicated = placement.replicas.len() > 1;
            log::set_replication(&log, placement.leader_epoch, replicated);
            let leads = placement.leader == me;
            if !leads {
                let failed = log::drop_replication_waiters(&log);
                if failed > 0 {
                    tracing::info!(%tp, failed, "no longer leader: waiting acks=all produces fail");
                }
            }
            if leads && replicated {
                self.following.borrow_mut().remove(&tp);
                let bound = {
                    let mut leading = self.leading.borrow_mut();
                    let followers = leading.entry(tp.clone()).or_insert_with(|| {
                        let mut followers = Followers::new(
                            me,
                            placement.leader_epoch,
                            &placement.replicas,
                            &placement.isr,
                            now_ms(),
                        );
                        followers.epoch_start = log::log_end(&log);
                        // Leading in an epoch this log already has batches of: this process
                        // resumes it after a restart, and followers may hold batches of it
                        // that were never written here (`log::read_for_follower`).
                        if log.borrow().epochs.latest() == Some(placement.leader_epoch) {
                            followers.resumed = Some((placement.leader_epoch, log::log_end(&log)));
                        }
                        followers
                    });
                    // Leading on in a new epoch (an ISR change, a reassignment): the
                    // followers' progress stays.
                    followers.leader_epoch = placement.leader_epoch;
                    followers.set_replicas(&placement.replicas, now_ms());
                    followers.set_isr(&placement.isr, placement.partition_epoch);
                    let behind = followers.behind(log.borrow().high_watermark);
                    if !behind.is_empty() {
                        // Never, with the maximal ISR: records up to the high watermark
                        // were acknowledged, and an in-sync replica lacks some of them.
                        tracing::error!(
                            %tp,
                            ?behind,
                            high_watermark = log.borrow().high_watermark.0,
                            "an in-sync replica is behind the high watermark"
                        );
                    }
                    followers.high_watermark_bound()
                };
                self.set_bound(&tp, &log, bound).await;
            } else if !leads && placement.leader != NodeId::NONE && placement.is_replica(me) {
                let led = self.leading.borrow_mut().remove(&tp).is_some();
                let served = self.following.borrow().get(&tp).is_some_and(|f| f.serves_consumers);
                let following = Following {
                    leader: placement.leader,
                    leader_epoch: placement.leader_epoch,
                    serves_consumers: led || served,
                };
                self.following.borrow_mut().insert(tp.clone(), following);
            } else {
                self.leading.borrow_mut().remove(&tp);
                self.following.borrow_mut().remove(&tp);
            }
            let isr = placement.isr.len();
            let leader_epoch = placement.leader_epoch;
            let role = InternalRole { log, leader_epoch, isr, leads, led_since: 0 };
            self.set_internal_role(&tp, Some(role));
        }
    }

    /// Clustered: tells the coordinator of a replicated internal topic (`__consumer_offsets`)
    /// this node's part in one of its partitions, waking it when leadership came or went.
    fn set_internal_role(&self, tp: &TopicPartition, role: Option<InternalRole>) {
        let Some(topic) = REPLICATED_INTERNAL_TOPICS.into_iter().find(|t| *t == &*tp.topic) else {
            return;
        };
        if self.shard.internal.set(tp, role) {
            let remote = self.shard.delayed.notify(&Key::InternalRoles(topic));
            debug_assert!(remote.is_empty());
        }
    }

    /// Moves a replicated log's high watermark bound; wakes the fetches waiting on it when
    /// the high watermark moved.
    async fn set_bound(&self, tp: &TopicPartition, log: &LogRef, bound: Offset) {
        let before = log.borrow().high_watermark;
        log::set_high_watermark_bound(log, bound);
        if log.borrow().high_watermark != before {
            self.notify_partition(tp).await;
        }
    }

    // ----- replication: the follower's side --------------------------------------------------

    /// The partitions this shard follows from `leader`, where each fetches from.
    pub fn fetch_positions(&self, leader: NodeId) -> Vec<FetchPosition> {
        let following = self.following.borrow();
        following
            .iter()
            .filter(|(_, f)| f.leader == leader)
            .filter_map(|(tp, f)| {
                let log = self.log(tp)?;
                let l = log.borrow();
                Some(FetchPosition {
                    tp: tp.clone(),
                    leader_epoch: f.leader_epoch,
                    log_end: l.written_end,
                    last_epoch: l.epochs.latest().unwrap_or(LeaderEpoch::NONE),
                    log_start: l.log_start_offset,
                })
            })
            .collect()
    }

    /// The leaders this shard follows partitions of.
    pub fn followed_leaders(&self) -> std::collections::BTreeSet<NodeId> {
        self.following.borrow().values().map(|f| f.leader).collect()
    }

    /// Appends what the leader sent of a followed partition (whole batches from this log's
    /// end) and waits until it is written, then takes the leader's high watermark as the
    /// bound and its log start as this log's (DeleteRecords and retention on the leader, so
    /// that a follower that becomes leader does not serve records deleted there). False
    /// when the partition is not followed from `leader` any more or the batches do not
    /// start at the log end (the fetcher asks again).
    pub async fn append_replica(
        &self,
        tp: &TopicPartition,
        leader: NodeId,
        batches: Vec<Bytes>,
        leader_high_watermark: Offset,
        leader_log_start: Offset,
    ) -> bool {
        let followed = self.following.borrow().get(tp).is_some_and(|f| f.leader == leader);
        let Some(log) = self.log(tp).filter(|_| followed) else { return false };
        if !batches.is_empty() {
            let mut appending = match log::enqueue_replica(&log, batches) {
                Ok(appending) => appending,
                Err(e) => {
                    tracing::debug!(%tp, "follower append refused: {e}");
                    return false;
                }
            };
            self.mark_for_retention(tp);
            appending.wait().await;
            if appending.outcome().is_none_or(|outcome| outcome.is_err()) {
                return false;
            }
        }
        self.set_bound(tp, &log, leader_high_watermark).await;
        if let Some(following) = self.following.borrow_mut().get_mut(tp) {
            following.serves_consumers = true;
        }
        let behind = {
            let l = log.borrow();
            leader_log_start > l.log_start_offset && leader_log_start <= l.high_watermark
        };
        if behind {
            if let Err(e) = log::delete_records(&log, leader_log_start).await {
                tracing::warn!(%tp, "cannot follow the leader's log start: {e}");
            }
        }
        true
    }

    /// Cuts a followed partition's log back to `offset` (its leader said it diverged).
    pub async fn truncate_replica(&self, tp: &TopicPartition, offset: Offset) -> bool {
        let Some(log) = self.log(tp) else { return false };
        match log::truncate_to(&log, offset).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(%tp, "truncation to {} failed: {e}", offset.0);
                false
            }
        }
    }

    /// A follower of `leader` whose log ends below the leader's log start drops its log and
    /// starts again at `offset` (`log::restart_at`); not if it no longer follows `leader`.
    pub async fn restart_replica(&self, tp: &TopicPartition, leader: NodeId, offset: Offset) {
        let followed = self.following.borrow().get(tp).is_some_and(|f| f.leader == leader);
        let Some(log) = self.log(tp).filter(|_| followed) else { return };
        if let Err(e) = log::restart_at(&log, offset).await {
            tracing::warn!(%tp, "starting the log again at {} failed: {e}", offset.0);
        }
    }

    // ----- replication: the leader's side ----------------------------------------------------

    /// A follower fetched `tp` from `fetch_offset`: its progress, the high watermark.
    async fn on_follower_fetch(
        &self,
        tp: &TopicPartition,
        fetch: FollowerFetch,
        fetch_offset: Offset,
    ) {
        let Some(log) = self.log(tp) else { return };
        let leader_end = log.borrow().written_end;
        let bound = {
            let mut leading = self.leading.borrow_mut();
            let Some(followers) = leading.get_mut(tp) else { return };
            if !followers.on_fetch(fetch.node, fetch_offset, leader_end, now_ms()) {
                return;
            }
            followers.set_log_start(fetch.node, fetch.log_start);
            followers.high_watermark_bound()
        };
        self.set_bound(tp, &log, bound).await;
    }

    /// A follower's fetch past where this leader resumed its epoch after a restart, before
    /// it truncated there (`Followers::resumed_divergence`): the diverging epoch to answer.
    pub(super) fn resumed_divergence(
        &self,
        tp: &TopicPartition,
        node: NodeId,
        last_epoch: LeaderEpoch,
        fetch_offset: Offset,
    ) -> Option<(LeaderEpoch, Offset)> {
        let mut leading = self.leading.borrow_mut();
        let diverging = leading.get_mut(tp)?.resumed_divergence(node, last_epoch, fetch_offset)?;
        tracing::info!(
            %tp,
            follower = node.0,
            fetch_offset = fetch_offset.0,
            resumed_end = diverging.1 .0,
            "a follower holds batches this leader never wrote before its restart: it truncates"
        );
        Some(diverging)
    }

    /// The ISR changes the partitions this shard leads call for (a follower that fell
    /// behind for `lag_ms`, one that caught up and whose broker is `eligible`), for the
    /// controller.
    pub fn isr_changes(&self, lag_ms: i64, eligible: &dyn Fn(NodeId) -> bool) -> Vec<IsrChange> {
        let now = now_ms();
        let leading = self.leading.borrow();
        leading
            .iter()
            .filter_map(|(tp, followers)| {
                let log = self.log(tp)?;
                let high_watermark = log.borrow().high_watermark;
                let epoch_start = followers.epoch_start;
                let isr =
                    followers.wanted_isr(now, lag_ms, high_watermark, epoch_start, eligible)?;
                Some(IsrChange {
                    tp: tp.clone(),
                    leader_epoch: followers.leader_epoch,
                    partition_epoch: followers.partition_epoch,
                    isr,
                })
            })
            .collect()
    }

    /// The replication service asks the controller for `change`: from now on the
    /// followers it would add hold the high watermark (`Followers::asked`).
    pub fn isr_asked(&self, change: &IsrChange) {
        let mut leading = self.leading.borrow_mut();
        let Some(followers) = leading.get_mut(&change.tp) else { return };
        if followers.leader_epoch == change.leader_epoch {
            followers.asked(change.partition_epoch, &change.isr);
        }
    }

    /// Where this shard leads `tp` replicated: the replica a consumer in `client`'s rack
    /// fetching from `fetch_offset` should read from instead (None: read here).
    fn preferred_read_replica(
        &self,
        tp: &TopicPartition,
        client: &ClientRack,
        leader_end: Offset,
        fetch_offset: Offset,
    ) -> Option<NodeId> {
        let leading = self.leading.borrow();
        let followers = leading.get(tp)?;
        followers.preferred_read_replica(
            &client.rack,
            &client.racks,
            leader_end,
            fetch_offset,
            now_ms(),
        )
    }

    /// Whether consumers may read `tp` here: not while it follows it with a high watermark
    /// no leader gave yet in this process (see `Following::serves_consumers`).
    fn serves_consumers(&self, tp: &TopicPartition) -> bool {
        self.following.borrow().get(tp).is_none_or(|f| f.serves_consumers)
    }

    /// How many replicas of `tp` are in sync, if this shard leads it replicated.
    fn isr_len(&self, tp: &TopicPartition) -> Option<usize> {
        self.leading.borrow().get(tp).map(Followers::isr_len)
    }

    /// `listener` is called on this shard with the name of each topic removed from it
    /// (deleted, or, clustered, created again under its name with another id), once its logs
    /// here are gone: the group coordinator forgets the topic's offsets and share state.
    pub fn on_topic_removed(&self, listener: TopicRemoved) {
        self.topic_removed.borrow_mut().push(listener);
    }

    async fn remove_partitions(&self, name: &str, from: i32) {
        if from == 0 {
            self.shard.catalog.borrow_mut().remove(name);
        }
        let doomed: Vec<(TopicPartition, LogRef)> = {
            let mut logs = self.logs.borrow_mut();
            let keys: Vec<TopicPartition> = logs
                .keys()
                .filter(|tp| &*tp.topic == name && tp.partition >= from)
                .cloned()
                .collect();
            keys.into_iter().filter_map(|tp| logs.remove(&tp).map(|log| (tp, log))).collect()
        };
        self.delete_logs(doomed).await;
        if from == 0 {
            for listener in self.topic_removed.borrow().iter() {
                listener(name);
            }
        }
    }

    /// Deletes logs already taken out of `logs`, with their retention, replication roles
    /// and the fetches waiting on them.
    async fn delete_logs(&self, doomed: Vec<(TopicPartition, LogRef)>) {
        for (tp, log) in doomed {
            self.retention.borrow_mut().forget(&tp);
            self.leading.borrow_mut().remove(&tp);
            self.following.borrow_mut().remove(&tp);
            self.set_internal_role(&tp, None);
            log::delete(&log).await;
            self.delete_delay_log(&tp).await;
            self.notify_partition(&tp).await;
        }
    }

    // ----- fetch long-poll ----------------------------------------------------------------

    /// True if this shard leads `tp` with followers (they fetch what is queued here).
    pub(crate) fn has_followers(&self, tp: &TopicPartition) -> bool {
        self.leading.borrow().contains_key(tp)
    }

    /// Waits until one of `partitions` (with the high watermark the fetch saw) gets new
    /// data, or `timeout`. `None` when one of them already has: read again at once.
    /// Registered before the watches go out, so a notification cannot come too early.
    pub async fn watch(
        &self,
        partitions: Vec<(TopicPartition, Seen)>,
        timeout: Duration,
    ) -> Option<Wait> {
        let mut by_shard: BTreeMap<ShardId, Vec<(TopicPartition, Seen)>> = BTreeMap::new();
        for (tp, seen) in partitions {
            by_shard.entry(self.shard.owner(&tp)).or_default().push((tp, seen));
        }
        let here = by_shard.remove(&self.shard.id).unwrap_or_default();
        if here.iter().any(|(tp, seen)| self.moved_past(tp, *seen)) {
            return None;
        }
        let waiter = self.shard.new_waiter_id();
        let keys = here.into_iter().map(|(tp, seen)| watch_key(tp, seen));
        let wait = self.shard.delayed.wait(keys.chain([Key::Waiter(waiter)]), timeout);
        let timeout_ms = timeout.as_millis() as u64;
        for (owner, partitions) in by_shard {
            let watch = PartitionRequest::Watch { waiter, partitions, timeout_ms };
            self.mesh.post(owner, watch).await;
        }
        Some(wait)
    }

    /// On the owner: holds `from`'s watch of `partitions`. True if one of them already moved
    /// past what the waiter saw (nothing is held then).
    fn watch_here(
        &self,
        from: ShardId,
        waiter: u64,
        partitions: Vec<(TopicPartition, Seen)>,
        timeout_ms: u64,
    ) -> bool {
        if partitions.iter().any(|(tp, seen)| self.moved_past(tp, *seen)) {
            return true;
        }
        let keys = partitions.into_iter().map(|(tp, seen)| watch_key(tp, seen));
        let timeout = Duration::from_millis(timeout_ms);
        self.shard.delayed.wait_there(from, waiter, keys, timeout);
        false
    }

    /// True if `tp` moved past what was `seen` of it, or `tp` is gone.
    fn moved_past(&self, tp: &TopicPartition, seen: Seen) -> bool {
        match (self.log(tp), seen) {
            (Some(log), Seen::HighWatermark(seen)) => log.borrow().high_watermark > seen,
            (Some(log), Seen::LogEnd(seen)) => log::log_end(&log) > seen,
            (None, _) => true,
        }
    }

    /// Wakes the fetches waiting on `partitions` wherever they are owned (a share group's
    /// coordinator freed records of them): one post per owning shard.
    pub async fn wake(&self, partitions: Vec<TopicPartition>) {
        let mut by_shard: BTreeMap<ShardId, Vec<TopicPartition>> = BTreeMap::new();
        for tp in partitions {
            by_shard.entry(self.shard.owner(&tp)).or_default().push(tp);
        }
        for (owner, partitions) in by_shard {
            if owner == self.shard.id {
                for tp in &partitions {
                    self.notify_partition(tp).await;
                }
            } else {
                self.mesh.post(owner, PartitionRequest::Wake { partitions }).await;
            }
        }
    }

    /// Wakes the fetches waiting on `tp`: after an append, a marker, a deletion.
    pub(crate) async fn notify_partition(&self, tp: &TopicPartition) {
        self.notify_key(Key::Partition(tp.clone())).await;
        self.notify_key(Key::Replicas(tp.clone())).await;
    }

    /// The hook a coordinator gives `shard::internal_log::Led::append` for `tp`, a
    /// replicated internal partition: once the coordinator's batches are queued on its log,
    /// it wakes the fetches waiting on `tp` on its owning shard (`wake`). No produce request
    /// announces those batches, and until a follower fetches them the coordinator's append
    /// waits (for the high watermark) and the followers' fetches at this leader would wait
    /// out their max wait (`--replica-fetch-wait-max-ms`).
    pub fn wake_followers_when_queued(self: &Rc<Self>, tp: &TopicPartition) -> impl FnOnce() {
        let (partitions, tp) = (self.clone(), tp.clone());
        move || {
            let wake = async move { partitions.wake(vec![tp]).await };
            glommio::spawn_local(wake).detach();
        }
    }

    /// Wakes only the followers' fetches waiting on `tp`: batches were queued (they read
    /// them before they are written).
    pub(crate) async fn notify_replicas(&self, tp: &TopicPartition) {
        self.notify_key(Key::Replicas(tp.clone())).await;
    }

    async fn notify_key(&self, key: Key) {
        let remote = self.shard.delayed.notify(&key);
        for (shard, waiter) in remote {
            self.mesh.post(shard, PartitionRequest::Notify { waiter }).await;
        }
    }
}

/// What a fetch waits on: a follower's (it saw the log end) also wakes when batches are
/// queued; a consumer's only when they are written.
fn watch_key(tp: TopicPartition, seen: Seen) -> Key {
    match seen {
        Seen::LogEnd(_) => Key::Replicas(tp),
        Seen::HighWatermark(_) => Key::Partition(tp),
    }
}
