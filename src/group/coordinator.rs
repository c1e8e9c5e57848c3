//! The group coordinator of one shard: the glue between the pure state machine
//! (`state::Groups`), the mesh, the clock and the shard's committed-offsets log.
//!
//! Lifecycle: built with the shard; `load` (before the shard serves) opens the log
//! `__consumer_offsets-<shard>`, replays it and starts the tick task; it serves group
//! requests from any shard through its mesh; `close` (shutdown) stops the tick and seals
//! the log.
//! Lives in an `Rc` on its shard; state is in `RefCell`s never borrowed across an `.await`.
//!
//! Parked requests: JoinGroup and SyncGroup wait for other members. Each gets a `ReplyId`
//! and a oneshot; the state machine answers every parked request eventually (rebalance or
//! join timeouts, member removal), so no request waits forever.
//!
//! Time: the state machine keeps its deadlines (sessions, rebalance and join delays, sync
//! expiry) on a timing wheel (`group::timers`). One task per shard waits in the shard's
//! purgatory (`Key::Groups`) until the earliest of them, and a request that sets an earlier
//! one notifies it, so a timeout fires within a millisecond or so of its deadline with no
//! timer per member and no periodic polling. The
//! same task runs offset retention and compacts the log, waking at least every
//! `GROUP_IDLE_WAKE_MS`.
//!
//! Persistence: records go through one outbox and one flusher, so they reach the log in the
//! order the state changed, several requests' records in one batch. OffsetCommit answers
//! after its records are written (under the broker's durability policy); group records are
//! written behind (losing one in a crash only costs the members a rejoin).
//!
//! Transactions (Kafka's way): TxnOffsetCommit comes here, to the group's coordinator; its
//! offsets are written to the group's partition (a single node: this shard's log) in a
//! transactional batch of the producer and kept pending (`txn_offsets`), and the
//! transaction's marker, sent by its coordinator to this partition's leader (this shard), is
//! written here as a control batch and then settles them (commit: committed offsets; abort:
//! dropped). Loading a partition (a single node's log) replays both in log order. A
//! transaction a single node's previous version began holds its offsets in the transaction
//! log and hands them over at its end (`GroupRequest::TxnEnd`).
//!
//! Compaction and layout: the offsets log is one of the shard's internal logs
//! (`shard::internal_log`): compacted by a snapshot of the whole state, each group reset
//! first, and migrated between shards when `--cores` changes.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use futures::channel::oneshot;
use futures::future::join_all;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, FetchRequest, FetchResponse, ProduceRequest, ProduceResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use crate::cluster::{broker_client, Cluster};
use crate::constants::{
    CLUSTER_INTERNAL_TOPIC_PARTITIONS, DEAD_LETTER_DECOMPRESSED_BYTES_MAX,
    DEAD_LETTER_READ_BYTES_MAX, DEAD_LETTER_RETRY_MS, DEAD_LETTER_WARN_INTERVAL_MS,
    DEAD_LETTER_WRITE_TIMEOUT_MS, GROUP_IDLE_WAKE_MS, INTERNAL_BATCH_BYTES_MAX,
    OFFSETS_RETENTION_CHECK_INTERVAL_MS,
};
use crate::controller::{Controller, ControllerRequest, CreateTopic};
use crate::group::assignor::TopicId;
use crate::group::consumer::{
    ConsumerHeartbeat, DescribedConsumerGroup, HeartbeatResponse, TopicView,
};
use crate::group::records::Record;
use crate::group::share::DeadLetter;
use crate::group::share::{
    DescribedShareGroup, FetchOpened, ShareHeartbeat, ShareSettings, Shares, StartOffsets,
};
use crate::group::share_call::{ShareAnswer, ShareCall};
use crate::group::share_partition::DeadLetterProducer;
use crate::group::share_remote;
use crate::group::state::{
    CommitPartition, CommitRequest, DescribedGroup, FetchedOffset, GroupConfig, Groups,
    HeartbeatRequest, JoinRequest, JoinResponse, LeaveMember, LeaveResponse, ListedGroup,
    PartitionCodes, Reply, ReplyId, SyncRequest, SyncResponse, TopicPartitions, TxnCommitRequest,
};
use crate::model::batch::BatchHeader;
use crate::model::dynamic_config::{
    consumer_timeouts, DeadLetterRules, RedeliveryBackoff, DLQ_COPY_RECORD, DLQ_TOPIC_NAME,
    RESOURCE_GROUP, SHARE_AUTO_OFFSET_RESET, SHARE_DELIVERY_COUNT_LIMIT, SHARE_HEARTBEAT_INTERVAL,
    SHARE_ISOLATION_LEVEL, SHARE_PARTITION_MAX_RECORD_LOCKS, SHARE_RECORD_LOCK_DURATION,
    SHARE_REDELIVERY_BACKOFF, SHARE_SESSION_TIMEOUT,
};
use crate::model::record_scan::KeyValue;
use crate::model::records::{self as model_records, RecordIn};
use crate::model::topic::Durability;
use crate::model::topic::DLQ_GROUP_ENABLE;
use crate::model::Isolation;
use crate::model::{
    now_ms, ErrorCode, NodeId, Offset, ProducerEpoch, ProducerId, ShardId, TopicPartition,
    TxnOutcome,
};
use crate::partition::{PartitionRequest, PartitionResponse, Partitions, ReadSpec};
use crate::shard::delayed::Key;
pub use crate::shard::internal_log::OFFSETS_TOPIC;
use crate::shard::internal_log::{self, Compactor, InternalRole, LogRef};
use crate::shard::mesh::{Mesh, Served, Service};
use crate::shard::table::coordinator_partition;
use crate::shard::Shard;
use crate::storage::clean_stop::{CleanStop, LogState};
use crate::storage::log;
use crate::throttle::Throttle;

/// A group request forwarded to the owning shard (one per client request and shard).
#[derive(Debug)]
pub enum GroupRequest {
    Join(JoinRequest),
    Sync(SyncRequest),
    Heartbeat(HeartbeatRequest),
    Leave {
        group_id: String,
        members: Vec<LeaveMember>,
    },
    Commit(CommitRequest),
    /// OffsetFetch for several groups this shard owns; `None` partitions means all.
    Fetch {
        groups: Vec<FetchGroup>,
    },
    /// ConsumerGroupHeartbeat (KIP-848).
    ConsumerHeartbeat(ConsumerHeartbeat),
    /// ConsumerGroupDescribe for groups this shard owns.
    ConsumerDescribe {
        groups: Vec<String>,
    },
    /// ShareGroupHeartbeat (KIP-932).
    ShareHeartbeat(ShareHeartbeat),
    /// ShareGroupDescribe for groups this shard owns.
    ShareDescribe {
        groups: Vec<String>,
    },
    /// A call of a ShareFetch or ShareAcknowledge (`share_call`).
    Share(ShareCall),
    /// DescribeShareGroupOffsets for groups this shard owns: each share partition's start.
    ShareOffsets {
        groups: Vec<String>,
    },
    /// AlterShareGroupOffsets: each share partition named starts again at its offset (the
    /// handler checked the topics and partitions).
    ShareAlterOffsets {
        group_id: String,
        offsets: Vec<(TopicPartition, i64)>,
    },
    /// DeleteShareGroupOffsets: the share state of the topics named goes.
    ShareDeleteOffsets {
        group_id: String,
        topics: Vec<String>,
    },
    Describe {
        groups: Vec<String>,
    },
    List {
        states: Vec<String>,
    },
    Delete {
        groups: Vec<String>,
    },
    DeleteOffsets {
        group_id: String,
        topics: TopicPartitions,
    },
    /// TxnOffsetCommit, at the group's coordinator as in Kafka: the offsets are written to
    /// the group's partition (single node: the shard's log) in a transactional batch and
    /// kept pending.
    TxnCommit(TxnCommitRequest),
    /// A transaction marker for a partition of `__consumer_offsets` this node leads (from
    /// the transaction's coordinator, on this node or by WriteTxnMarkers), or, on a single
    /// node, for this shard's log (`partition`: the shard): written there, then the
    /// producer's pending offsets of its groups are settled.
    TxnMarker {
        partition: i32,
        producer_id: ProducerId,
        producer_epoch: ProducerEpoch,
        outcome: TxnOutcome,
    },
    /// Single node, from the transaction coordinator: the producer's transaction ended; a
    /// commit carries the offsets a transaction begun by the previous version kept in the
    /// transaction log (none for one begun since: its offsets are pending here).
    TxnEnd {
        group_id: String,
        producer_id: ProducerId,
        outcome: TxnOutcome,
        offsets: Vec<CommitPartition>,
    },
}

#[derive(Debug)]
pub enum GroupResponse {
    Join(JoinResponse),
    Sync(SyncResponse),
    Heartbeat(ErrorCode),
    Leave(LeaveResponse),
    Commit(Result<Vec<ErrorCode>, ErrorCode>),
    Fetch(Vec<(String, Result<Vec<FetchedOffset>, ErrorCode>)>),
    ConsumerHeartbeat(HeartbeatResponse),
    ConsumerDescribe(Vec<DescribedConsumerGroup>),
    ShareHeartbeat(HeartbeatResponse),
    ShareDescribe(Vec<DescribedShareGroup>),
    Share(ShareAnswer),
    /// Per group: its share partitions' offsets (None: not a share group here).
    ShareOffsets(Vec<(String, Option<StartOffsets>)>),
    /// AlterShareGroupOffsets: done, or the group's error.
    ShareOffsetsAltered(Result<(), ErrorCode>),
    /// DeleteShareGroupOffsets: per topic, or the group's error.
    ShareOffsetsDeleted(Result<Vec<(String, ErrorCode)>, ErrorCode>),
    Describe(Vec<DescribedGroup>),
    List(Vec<ListedGroup>),
    Delete(Vec<(String, ErrorCode)>),
    DeleteOffsets(Result<PartitionCodes, ErrorCode>),
    /// A transaction marker's code, as a partition answers WriteTxnMarkers.
    Marker(ErrorCode),
    Done,
}

/// One group of an OffsetFetch.
#[derive(Debug, Clone)]
pub struct FetchGroup {
    pub group_id: String,
    /// OffsetFetch v9+: the member asking and its epoch (checked for consumer groups).
    pub member: Option<(String, i32)>,
    pub partitions: Option<TopicPartitions>,
    /// OffsetFetch v7+ `require_stable`: offsets a transaction still holds are
    /// UNSTABLE_OFFSET_COMMIT.
    pub require_stable: bool,
}

/// The shard's catalog as the consumer group state machine reads it.
struct CatalogView<'a>(&'a crate::shard::catalog::Catalog);

impl TopicView for CatalogView<'_> {
    fn lookup(&self, name: &str) -> Option<(TopicId, i32)> {
        let meta = self.0.get(name).filter(|meta| !meta.is_internal());
        meta.map(|meta| (meta.id, meta.partitions))
    }

    fn name_of(&self, id: &TopicId) -> Option<String> {
        self.0.name_of(id).map(|name| name.to_string())
    }

    fn names(&self) -> Vec<String> {
        let visible = self.0.topics.values().filter(|meta| !meta.is_internal());
        visible.map(|meta| meta.name.to_string()).collect()
    }
}

/// What start-up did, for its log line.
#[derive(Debug, Default, Clone, Copy)]
pub struct LoadReport {
    pub records: usize,
    pub groups: usize,
    /// True when the core count changed and the groups were moved between logs.
    pub migrated: bool,
}

pub struct Coordinator {
    shard: ShardId,
    shards: usize,
    /// The shard's plumbing: its purgatory wakes the tick.
    home: Rc<Shard>,
    mesh: Mesh<Coordinator>,
    data_dir: PathBuf,
    durability: Durability,
    segment_bytes: u64,
    state: RefCell<Groups>,
    /// Share groups (KIP-932): membership, sessions, share partitions (single node).
    shares: RefCell<Shares>,
    log: RefCell<Option<LogRef>>,
    waiting: RefCell<HashMap<ReplyId, oneshot::Sender<Reply>>>,
    next_reply: Cell<ReplyId>,
    outbox: RefCell<Outbox>,
    tick: RefCell<Option<glommio::task::JoinHandle<()>>>,
    /// When the tick task will wake on its own (ms); an earlier deadline wakes it.
    planned_wake_ms: Cell<i64>,
    compactor: Compactor,
    /// Clustered: this shard's groups live in the partitions of the replicated topic
    /// `__consumer_offsets` it owns, not in a log of its own (see `shard::internal_log`).
    clustered: bool,
    /// Clustered: the partitions whose groups this coordinator serves (this node leads
    /// them and their log was replayed), by partition.
    loaded: RefCell<BTreeMap<i32, LoadedPartition>>,
    /// Clustered: the partitions being replayed.
    loading: RefCell<BTreeSet<i32>>,
    /// Dead letters (KIP-1191): the data partitions a dead letter's source is read from and
    /// its topic written to, and the controller that creates the topic and gives producer ids.
    partitions: Rc<Partitions>,
    controller: Rc<Controller>,
    /// Clustered: the other brokers, for dead letters whose source or target partition
    /// another node leads.
    cluster: Rc<Cluster>,
    /// Wakes the dead-letter writer (`write_dead_letters`) when records were archived.
    dead_letter_wake: RefCell<Option<futures::channel::mpsc::UnboundedSender<()>>>,
    dead_letter_task: RefCell<Option<glommio::task::JoinHandle<()>>>,
    /// Clustered: the partitions whose waiting ShareFetches another node is still to be
    /// woken for (`wake_fetches`), by the node that leads them.
    remote_wakes: RefCell<HashMap<NodeId, RemoteWake>>,
}

/// The wake of one other node's ShareFetches: the partitions still to name, and whether a
/// call to it is on its way (the next one takes what freed meanwhile).
#[derive(Default)]
struct RemoteWake {
    partitions: BTreeSet<TopicPartition>,
    sending: bool,
}

/// A partition of `__consumer_offsets` whose groups this coordinator serves.
struct LoadedPartition {
    log: LogRef,
    /// The stretch of leadership it was loaded in (`InternalRole::led_since`).
    led_since: u64,
    compactor: Compactor,
}

/// What a write of group records came to: the base offset of the append (None: nothing
/// was written), or the error code to answer.
type Written = Result<Option<Offset>, ErrorCode>;

/// Whether the caller of `dispatch` waits for the records it queued to be in the log. The
/// state machine's replies go out at once either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WaitFor {
    /// Joins, syncs, heartbeats, leaves and the timers: their records are written behind.
    Nothing,
    /// Offset commits, deletions, a transaction's offsets and the snapshots (the groups moved
    /// at start-up, a compaction's cut): a receiver fires once their records are in the log.
    Write,
}

#[derive(Default)]
struct Outbox {
    records: Vec<Record>,
    /// Told how the append that carried their records went.
    acks: Vec<Ack>,
    flushing: bool,
}

struct Ack {
    /// Clustered: the partition of `__consumer_offsets` the waiter's records went to (None:
    /// every partition written, or a single node's one log).
    partition: Option<i32>,
    sender: oneshot::Sender<Written>,
}

impl Service for Coordinator {
    type Request = GroupRequest;
    type Response = GroupResponse;

    fn mesh(&self) -> &Mesh<Coordinator> {
        &self.mesh
    }

    fn serve(self: &Rc<Self>, _from: ShardId, request: GroupRequest) -> Served<GroupResponse> {
        let this = self.clone();
        Served::Later(Box::pin(async move { this.handle(request).await }))
    }
}

impl Coordinator {
    pub fn new(
        home: Rc<Shard>,
        mesh: Mesh<Coordinator>,
        partitions: Rc<Partitions>,
        controller: Rc<Controller>,
        cluster: Rc<Cluster>,
    ) -> Coordinator {
        let config = &home.config;
        Coordinator {
            shard: home.id,
            shards: config.cores,
            data_dir: config.data_dir.clone(),
            durability: config.topic_defaults.durability,
            segment_bytes: config.groups.offsets_segment_bytes,
            state: RefCell::new(Groups::new(config.groups.clone())),
            shares: RefCell::new(Shares::new(config.groups.clone())),
            log: RefCell::new(None),
            waiting: RefCell::new(HashMap::new()),
            next_reply: Cell::new(1),
            outbox: RefCell::new(Outbox::default()),
            tick: RefCell::new(None),
            planned_wake_ms: Cell::new(i64::MAX),
            compactor: Compactor::new(OFFSETS_TOPIC, config.groups.offsets_segment_bytes),
            clustered: config.cluster.is_some(),
            loaded: RefCell::new(BTreeMap::new()),
            loading: RefCell::new(BTreeSet::new()),
            partitions,
            controller,
            cluster,
            dead_letter_wake: RefCell::new(None),
            dead_letter_task: RefCell::new(None),
            remote_wakes: RefCell::new(HashMap::new()),
            home,
            mesh,
        }
    }

    /// Sends a group request to the shard that owns the group (or serves it here); `None`
    /// once the mesh is closed.
    pub async fn call(&self, owner: ShardId, request: GroupRequest) -> Option<GroupResponse> {
        self.mesh.call(owner, request).await
    }

    /// Sends the same request to every shard and waits for all the answers.
    pub async fn broadcast(&self, make: impl Fn() -> GroupRequest) -> Vec<Option<GroupResponse>> {
        self.mesh.broadcast(make).await
    }

    /// The groups this shard coordinates, for a metrics scrape.
    pub fn metrics_report(&self) -> Vec<crate::metrics::GroupReport> {
        self.state.borrow().metrics_report()
    }

    pub fn config(&self) -> GroupConfig {
        self.state.borrow().config().clone()
    }

    /// A share group's settings: the broker's, with the group's configs over them
    /// (`share.auto.offset.reset`, `share.isolation.level`, `share.record.lock.duration.ms`,
    /// `share.session.timeout.ms`, `share.heartbeat.interval.ms`,
    /// `share.delivery.count.limit`, `share.partition.max.record.locks`).
    fn share_settings(&self, group_id: &str) -> ShareSettings {
        let base = ShareSettings::of(&self.home.config.groups);
        let catalog = self.home.catalog.borrow();
        let configs = catalog.configs.of(RESOURCE_GROUP, group_id);
        let int = |name: &str| configs.get(name).and_then(|v| v.trim().parse::<i32>().ok());
        ShareSettings {
            reset_earliest: configs
                .get(SHARE_AUTO_OFFSET_RESET)
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("earliest")),
            read_committed: configs
                .get(SHARE_ISOLATION_LEVEL)
                .is_some_and(|v| v.as_str() == "read_committed"),
            lock_ms: int(SHARE_RECORD_LOCK_DURATION).map_or(base.lock_ms, i64::from),
            session_timeout_ms: int(SHARE_SESSION_TIMEOUT).unwrap_or(base.session_timeout_ms),
            heartbeat_interval_ms: int(SHARE_HEARTBEAT_INTERVAL)
                .unwrap_or(base.heartbeat_interval_ms),
            assignment_interval_ms: base.assignment_interval_ms,
            delivery_limit: int(SHARE_DELIVERY_COUNT_LIMIT)
                .map_or(base.delivery_limit, |limit| limit.clamp(2, 10) as i16),
            max_locks: int(SHARE_PARTITION_MAX_RECORD_LOCKS).map_or(base.max_locks, i64::from),
            max_size: base.max_size,
            dead_letters: configs.get(DLQ_TOPIC_NAME).is_some_and(|t| !t.trim().is_empty()),
            backoff: configs
                .get(SHARE_REDELIVERY_BACKOFF)
                .and_then(|v| RedeliveryBackoff::parse(v).ok())
                .unwrap_or_default(),
            now_ms: now_ms(),
        }
    }

    /// The shard that owns `group_id`.
    pub fn owner(&self, group_id: &str) -> ShardId {
        self.home.coordinator_of(OFFSETS_TOPIC, group_id)
    }

    // ----- start-up and shutdown -----------------------------------------------------------

    /// Opens and replays this shard's offsets log (all logs when the core count changed),
    /// then starts the tick. Must finish before the shard serves.
    pub async fn load(
        self: &Rc<Self>,
        clean_stop: &Mutex<CleanStop>,
    ) -> Result<LoadReport, crate::storage::Error> {
        let me = Rc::downgrade(self);
        self.partitions.on_topic_removed(Box::new(move |topic| {
            if let Some(me) = me.upgrade() {
                me.forget_topic(topic);
            }
        }));
        if self.clustered {
            // The partitions are loaded as this node comes to lead them (`reconcile`).
            let tick = glommio::spawn_local(self.clone().run_tick()).detach();
            *self.tick.borrow_mut() = Some(tick);
            self.start_dead_letter_writer();
            return Ok(LoadReport::default());
        }
        let config = internal_log::log_config(self.segment_bytes, self.durability);
        let log = internal_log::open(&self.data_dir, OFFSETS_TOPIC, self.shard, config, clean_stop);
        let log = log.await?;
        *self.log.borrow_mut() = Some(log.clone());
        let now = now_ms();
        // Transactional offsets (a producer's transactional batches) are pending until the
        // marker that ends them in the same log, as in a partition of a cluster's.
        let replayed = internal_log::replay_batches(
            &self.data_dir,
            OFFSETS_TOPIC,
            self.shard,
            self.shards,
            |source, batches| {
                let tp = TopicPartition::new(OFFSETS_TOPIC.into(), source as i32);
                decode_partition(&tp, batches)
            },
            |record| match record {
                Record::Marker { .. } => None,
                record => Some(record.group_id()),
            },
            |record, stored_in_source| match record {
                Record::Share { group, topic, partition, value } => {
                    let tp = TopicPartition::new(topic.into(), partition);
                    self.shares.borrow_mut().replay(group, tp, value)
                }
                Record::Marker { producer_id, outcome, .. } => {
                    let mut state = self.state.borrow_mut();
                    state.complete_txn(now, producer_id, outcome, stored_in_source);
                }
                record => self.state.borrow_mut().replay(now, record),
            },
        )
        .await?;
        let groups = {
            let mut state = self.state.borrow_mut();
            let catalog = self.home.catalog.borrow();
            let timeouts =
                |group: &str| consumer_timeouts(catalog.configs.of(RESOURCE_GROUP, group));
            state.finish_load_of(now, |_| true, timeouts);
            state.group_count()
        };
        // A topic deleted just before a crash, its group state's tombstones not yet written:
        // the catalog (read before this load) no longer has it.
        self.forget_deleted_topics();
        if replayed.migrated {
            let mut snapshot = self.state.borrow().snapshot();
            snapshot.extend(self.shares.borrow().snapshot_of(|_| true));
            if let Some(done) = self.persist(snapshot, WaitFor::Write) {
                let _ = done.await;
            }
        }
        self.compactor.loaded(&log);
        let tick = glommio::spawn_local(self.clone().run_tick()).detach();
        *self.tick.borrow_mut() = Some(tick);
        // Dead letters restored by the replay are written first.
        self.start_dead_letter_writer();
        Ok(LoadReport { records: replayed.records, groups, migrated: replayed.migrated })
    }

    /// Stops the tick and closes the log (shutdown, after in-flight requests finished):
    /// returns what the next start resumes it from (`storage::clean_stop`).
    pub async fn close(&self) -> Option<LogState> {
        if let Some(tick) = self.tick.borrow_mut().take() {
            tick.cancel();
        }
        if let Some(writer) = self.dead_letter_task.borrow_mut().take() {
            writer.cancel();
        }
        while self.outbox.borrow().flushing {
            glommio::timer::sleep(Duration::from_millis(1)).await;
        }
        let log = self.log.borrow().clone();
        if let Some(log) = log {
            return Some(log::close(&log).await);
        }
        None
    }

    // ----- requests --------------------------------------------------------------------------

    async fn handle(self: &Rc<Self>, request: GroupRequest) -> GroupResponse {
        if let Some(refused) = self.refuse_unserved(&request) {
            return refused;
        }
        let now = now_ms();
        match request {
            GroupRequest::Join(req) if self.shares.borrow().contains(&req.group_id) => {
                GroupResponse::Join(JoinResponse::error(
                    &req.member_id,
                    ErrorCode::InconsistentGroupProtocol,
                ))
            }
            GroupRequest::Join(req) => {
                let member_id = req.member_id.clone();
                let (id, answer) = self.park();
                {
                    let catalog = self.home.catalog.borrow();
                    self.state.borrow_mut().join(now, id, req, &CatalogView(&catalog));
                }
                self.dispatch(WaitFor::Nothing);
                match answer.await {
                    Ok(Reply::Join(response)) => GroupResponse::Join(response),
                    _ => GroupResponse::Join(JoinResponse::error(
                        &member_id,
                        ErrorCode::CoordinatorNotAvailable,
                    )),
                }
            }
            GroupRequest::Sync(req) => {
                let (id, answer) = self.park();
                self.state.borrow_mut().sync(now, id, req);
                self.dispatch(WaitFor::Nothing);
                match answer.await {
                    Ok(Reply::Sync(response)) => GroupResponse::Sync(response),
                    _ => {
                        GroupResponse::Sync(SyncResponse::error(ErrorCode::CoordinatorNotAvailable))
                    }
                }
            }
            GroupRequest::Heartbeat(req) => {
                let code = self.state.borrow_mut().heartbeat(now, req);
                self.dispatch(WaitFor::Nothing);
                GroupResponse::Heartbeat(code)
            }
            GroupRequest::Leave { group_id, members } => {
                let response = self.state.borrow_mut().leave(now, &group_id, members);
                self.dispatch(WaitFor::Nothing);
                GroupResponse::Leave(response)
            }
            GroupRequest::Commit(req) => {
                // Below the free-space reserve, before the state changes: Kafka's coordinator
                // answers a storage failure with NOT_COORDINATOR, which clients retry after
                // looking the coordinator up again.
                if self.home.space.check().is_err() {
                    return GroupResponse::Commit(Err(ErrorCode::NotCoordinator));
                }
                let result = self.state.borrow_mut().commit_offsets(now, req);
                GroupResponse::Commit(self.written(result).await)
            }
            GroupRequest::TxnCommit(req) => {
                // As OffsetCommit: below the free-space reserve, NOT_COORDINATOR.
                if self.home.space.check().is_err() {
                    return GroupResponse::Commit(Err(ErrorCode::NotCoordinator));
                }
                let result = self.state.borrow_mut().txn_commit_offsets(now, req);
                GroupResponse::Commit(self.written(result).await)
            }
            GroupRequest::TxnMarker { partition, producer_id, producer_epoch, outcome } => {
                GroupResponse::Marker(
                    self.write_marker(partition, producer_id, producer_epoch, outcome).await,
                )
            }
            GroupRequest::TxnEnd { group_id, producer_id, outcome, offsets } => {
                if outcome == TxnOutcome::Commit && !offsets.is_empty() {
                    self.state.borrow_mut().commit_transactional_offsets(now, &group_id, offsets);
                    if let Some(written) = self.dispatch(WaitFor::Write) {
                        let _ = written.await;
                    }
                }
                tracing::debug!(group = %group_id, %producer_id, ?outcome, "transaction ended");
                GroupResponse::Done
            }
            GroupRequest::Fetch { groups } => {
                // Answer after every record already queued is written (require_stable in
                // spirit: nothing not yet durable is reported), at most one write's wait.
                if let Some(written) = self.barrier() {
                    let _ = written.await;
                }
                let state = self.state.borrow();
                let found = groups
                    .into_iter()
                    .map(|g| {
                        let member = g.member.as_ref().map(|(id, epoch)| (id.as_str(), *epoch));
                        let mut offsets =
                            state.fetch_member_offsets(&g.group_id, member, g.partitions);
                        if let (true, Ok(offsets)) = (g.require_stable, offsets.as_mut()) {
                            state.mark_unstable(&g.group_id, offsets);
                        }
                        (g.group_id, offsets)
                    })
                    .collect();
                GroupResponse::Fetch(found)
            }
            GroupRequest::ConsumerHeartbeat(req)
                if self.shares.borrow().contains(&req.group_id) =>
            {
                GroupResponse::ConsumerHeartbeat(HeartbeatResponse::error(
                    ErrorCode::GroupIdNotFound,
                    format!("Group {} is not a consumer group.", req.group_id),
                ))
            }
            GroupRequest::ShareHeartbeat(req) => {
                if self.state.borrow().contains(&req.group_id) {
                    return GroupResponse::ShareHeartbeat(HeartbeatResponse::error(
                        ErrorCode::GroupIdNotFound,
                        format!("Group {} is not a share group.", req.group_id),
                    ));
                }
                let settings = self.share_settings(&req.group_id);
                let response = {
                    let catalog = self.home.catalog.borrow();
                    let view = CatalogView(&catalog);
                    self.shares.borrow_mut().heartbeat(now, req, &view, settings)
                };
                self.dispatch(WaitFor::Nothing);
                GroupResponse::ShareHeartbeat(response)
            }
            GroupRequest::ShareDescribe { groups } => {
                let state = self.state.borrow();
                let shares = self.shares.borrow();
                let described = groups.iter().map(|g| {
                    let mut described = shares.describe(g);
                    if state.contains(g) {
                        described.error_message = Some(format!("Group {g} is not a share group."));
                    }
                    described
                });
                GroupResponse::ShareDescribe(described.collect())
            }
            GroupRequest::Share(call) => GroupResponse::Share(self.share_call(now, call).await),
            GroupRequest::ShareOffsets { groups } => {
                let shares = self.shares.borrow();
                let offsets = groups.into_iter().map(|g| {
                    let starts = shares.start_offsets(&g);
                    (g, starts)
                });
                GroupResponse::ShareOffsets(offsets.collect())
            }
            GroupRequest::ShareAlterOffsets { group_id, offsets } => {
                // A classic or consumer group under the id: Kafka's "not a share group".
                if self.state.borrow().contains(&group_id) {
                    return GroupResponse::ShareOffsetsAltered(Err(ErrorCode::GroupIdNotFound));
                }
                let result = self.shares.borrow_mut().alter_offsets(&group_id, &offsets);
                let written = self.written(Ok(Vec::new())).await;
                GroupResponse::ShareOffsetsAltered(result.and(written.map(|_| ())))
            }
            GroupRequest::ShareDeleteOffsets { group_id, topics } => {
                if self.state.borrow().contains(&group_id) {
                    return GroupResponse::ShareOffsetsDeleted(Err(ErrorCode::GroupIdNotFound));
                }
                let result = self.shares.borrow_mut().delete_offsets(&group_id, &topics);
                let written = self.written(Ok(Vec::new())).await;
                GroupResponse::ShareOffsetsDeleted(written.and(result))
            }
            GroupRequest::ConsumerHeartbeat(req) => {
                let response = {
                    let catalog = self.home.catalog.borrow();
                    let stored = catalog.configs.of(RESOURCE_GROUP, &req.group_id);
                    let timeouts = consumer_timeouts(stored);
                    let view = CatalogView(&catalog);
                    self.state.borrow_mut().consumer_heartbeat_with(now, req, &view, timeouts)
                };
                self.dispatch(WaitFor::Nothing);
                GroupResponse::ConsumerHeartbeat(response)
            }
            GroupRequest::ConsumerDescribe { groups } => {
                let state = self.state.borrow();
                GroupResponse::ConsumerDescribe(
                    groups.iter().map(|g| state.consumer_describe(g)).collect(),
                )
            }
            GroupRequest::Describe { groups } => {
                let state = self.state.borrow();
                GroupResponse::Describe(groups.iter().map(|g| state.describe(g)).collect())
            }
            GroupRequest::List { states } => {
                let mut listed = self.state.borrow().list(&states);
                listed.extend(self.shares.borrow().list(&states));
                GroupResponse::List(listed)
            }
            GroupRequest::Delete { groups } => {
                let results: Vec<(String, ErrorCode)> = {
                    let mut state = self.state.borrow_mut();
                    let mut shares = self.shares.borrow_mut();
                    groups
                        .into_iter()
                        .map(|g| {
                            let code = if shares.contains(&g) {
                                shares.delete_group(&g)
                            } else {
                                state.delete_group(&g)
                            };
                            (g, code)
                        })
                        .collect()
                };
                if let Some(written) = self.dispatch(WaitFor::Write) {
                    let _ = written.await;
                }
                GroupResponse::Delete(results)
            }
            GroupRequest::DeleteOffsets { group_id, topics } => {
                let result = self.state.borrow_mut().delete_offsets(&group_id, topics);
                if let Some(written) = self.dispatch(WaitFor::Write) {
                    let _ = written.await;
                }
                GroupResponse::DeleteOffsets(result)
            }
        }
    }

    fn park(&self) -> (ReplyId, oneshot::Receiver<Reply>) {
        let id = self.next_reply.get();
        self.next_reply.set(id + 1);
        let (tx, rx) = oneshot::channel();
        self.waiting.borrow_mut().insert(id, tx);
        (id, rx)
    }

    /// A commit's answer once its records are in the log: `result` when they were written
    /// (or there were none), the write's error otherwise.
    async fn written(
        self: &Rc<Self>,
        result: Result<Vec<ErrorCode>, ErrorCode>,
    ) -> Result<Vec<ErrorCode>, ErrorCode> {
        let Some(written) = self.dispatch(WaitFor::Write) else { return result };
        match written.await {
            Ok(Ok(_)) => result,
            Ok(Err(code)) => Err(code),
            Err(_) => Err(ErrorCode::CoordinatorNotAvailable),
        }
    }

    /// Forgets the committed offsets and share state of the topics the catalog no longer
    /// has, written as tombstones: topics deleted while no coordinator here could write
    /// theirs (see the callers for why the catalog is current enough).
    fn forget_deleted_topics(self: &Rc<Self>) {
        let deleted: Vec<String> = {
            let catalog = self.home.catalog.borrow();
            let mut names = self.state.borrow().topic_names();
            names.extend(self.shares.borrow().topic_names());
            names.into_iter().filter(|name| catalog.get(name).is_none()).collect()
        };
        for topic in &deleted {
            self.forget_topic(topic);
        }
    }

    /// A topic was removed from this shard (`Partitions::on_topic_removed`): its committed
    /// offsets and share state leave every group served here, written as tombstones (Kafka's
    /// `onTopicsDeleted` and `maybeCleanupShareGroupState`).
    fn forget_topic(self: &Rc<Self>, topic: &str) {
        let offsets = self.state.borrow_mut().forget_topic(topic);
        let share_partitions = self.shares.borrow_mut().forget_topic(topic);
        if offsets + share_partitions > 0 {
            tracing::info!(topic, offsets, share_partitions, "deleted topic's group state removed");
            let _ = self.dispatch(WaitFor::Nothing);
        }
    }

    /// Delivers the state machine's answers and queues its records. With `WaitFor::Write`,
    /// returns a receiver that fires once those records are in the log (None: nothing to
    /// write).
    fn dispatch(self: &Rc<Self>, wait: WaitFor) -> Option<oneshot::Receiver<Written>> {
        let (replies, records, next_deadline) = {
            let mut state = self.state.borrow_mut();
            let mut shares = self.shares.borrow_mut();
            let mut records = state.take_records();
            records.extend(shares.take_records());
            // Archived share records (rejected, or past the delivery count limit): those of a
            // group with a dead-letter topic wait for the writer, which is woken.
            let archived = shares.take_archived();
            for (group, tp, archived) in &archived {
                tracing::debug!(%group, %tp, offset = archived.offset,
                    delivery_count = archived.delivery_count, reason = ?archived.reason,
                    "share record archived");
            }
            if !archived.is_empty() {
                if let Some(wake) = self.dead_letter_wake.borrow().as_ref() {
                    let _ = wake.unbounded_send(());
                }
            }
            // Records made available again: the ShareFetches waiting on their partitions look
            // again now rather than at their next recheck.
            let freed = shares.take_freed();
            if !freed.is_empty() {
                self.wake_fetches(freed);
            }
            let deadline = match (state.next_deadline(), shares.next_deadline()) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            (state.take_replies(), records, deadline)
        };
        if next_deadline.is_some_and(|deadline| deadline < self.planned_wake_ms.get()) {
            self.planned_wake_ms.set(next_deadline.unwrap_or(i64::MAX));
            let remote = self.home.delayed.notify(&Key::Groups);
            debug_assert!(remote.is_empty());
        }
        for (id, reply) in replies {
            if let Some(tx) = self.waiting.borrow_mut().remove(&id) {
                let _ = tx.send(reply);
            }
        }
        self.persist(records, wait)
    }

    /// Wakes the ShareFetches waiting on partitions whose records were made available again:
    /// this node's at once, and clustered, those on each other node that leads some of them
    /// (a client sends its ShareFetch to the partition's leader) with a `ShareCall::Wake`,
    /// one call at a time per node; what frees while one is on its way goes in the next. A
    /// wake that fails is left to the fetches' recheck.
    fn wake_fetches(self: &Rc<Self>, freed: Vec<TopicPartition>) {
        let mut start = Vec::new();
        {
            let mut wakes = self.remote_wakes.borrow_mut();
            for tp in &freed {
                let Some(node) = self.remote_leader(tp) else { continue };
                let wake = wakes.entry(node).or_default();
                wake.partitions.insert(tp.clone());
                if !wake.sending {
                    wake.sending = true;
                    start.push(node);
                }
            }
        }
        for node in start {
            let this = self.clone();
            glommio::spawn_local(async move { this.send_wakes(node).await }).detach();
        }
        let partitions = self.partitions.clone();
        glommio::spawn_local(async move { partitions.wake(freed).await }).detach();
    }

    /// Sends `node` the wakes queued for it until none are left.
    async fn send_wakes(self: Rc<Self>, node: NodeId) {
        loop {
            let partitions = {
                let mut wakes = self.remote_wakes.borrow_mut();
                let Some(wake) = wakes.get_mut(&node) else { return };
                if wake.partitions.is_empty() {
                    wakes.remove(&node);
                    return;
                }
                std::mem::take(&mut wake.partitions)
            };
            let call = ShareCall::Wake { partitions: partitions.into_iter().collect() };
            match share_remote::send(&self.cluster, node, &call).await {
                Ok(Ok(_)) => {}
                Ok(Err(code)) => tracing::debug!(%node, ?code, "share fetch wake refused"),
                Err(e) => tracing::debug!(%node, "share fetch wake not sent: {e}"),
            }
        }
    }

    /// A receiver that fires when everything queued so far is written (None: nothing queued).
    fn barrier(&self) -> Option<oneshot::Receiver<Written>> {
        let mut out = self.outbox.borrow_mut();
        if !out.flushing {
            return None;
        }
        let (sender, rx) = oneshot::channel();
        out.acks.push(Ack { partition: None, sender });
        Some(rx)
    }

    // ----- dead letters (KIP-1191) -----------------------------------------------------------

    /// Starts the dead-letter writer, woken once for the letters a replay restored.
    fn start_dead_letter_writer(self: &Rc<Self>) {
        let (wake, woken) = futures::channel::mpsc::unbounded();
        let _ = wake.unbounded_send(());
        *self.dead_letter_wake.borrow_mut() = Some(wake);
        let writer = glommio::spawn_local(self.clone().write_dead_letters(woken)).detach();
        *self.dead_letter_task.borrow_mut() = Some(writer);
    }

    /// Writes the dead letters of this shard's share partitions, one at a time in each share
    /// partition's letter order, for as long as the coordinator runs; waits on `woken` when
    /// there is none. A write that fails for a reason that may pass (the disk, the topic
    /// being created) is tried again after `DEAD_LETTER_RETRY_MS`.
    async fn write_dead_letters(
        self: Rc<Self>,
        mut woken: futures::channel::mpsc::UnboundedReceiver<()>,
    ) {
        use futures::StreamExt;
        let mut failures = Throttle::new(DEAD_LETTER_WARN_INTERVAL_MS);
        loop {
            let next = self.shares.borrow().next_dead_letter();
            let Some(next) = next else {
                if woken.next().await.is_none() {
                    return;
                }
                continue;
            };
            match self.write_dead_letter(&next).await {
                Ok(written) => {
                    let offset = next.letter.offset;
                    self.shares.borrow_mut().dead_lettered(
                        &next.group_id,
                        &next.tp,
                        offset,
                        written,
                    );
                    if let Some(done) = self.dispatch(WaitFor::Write) {
                        let _ = done.await;
                    }
                }
                Err(why) => {
                    if let Some(count) = failures.admit(now_ms().max(0) as u64) {
                        tracing::warn!(group = %next.group_id, tp = %next.tp,
                            offset = next.letter.offset, count,
                            "dead letter not written yet, will try again: {why}");
                    }
                    glommio::timer::sleep(Duration::from_millis(DEAD_LETTER_RETRY_MS)).await;
                }
            }
        }
    }

    /// Writes one dead letter (Kafka's `ShareGroupDLQStateManager`): Ok(true) once it is in
    /// the group's dead-letter topic, Ok(false) when the topic cannot take it (the group
    /// names none any more, a name Kafka refuses, a topic that does not allow it or does not
    /// exist without auto-creation: the record is archived without it, as in Kafka, with a
    /// warning), Err for a failure that may pass.
    async fn write_dead_letter(self: &Rc<Self>, next: &DeadLetter) -> Result<bool, String> {
        let group = &next.group_id;
        let (topic, copy, rules) = {
            let catalog = self.home.catalog.borrow();
            let configs = catalog.configs.of(RESOURCE_GROUP, group);
            let topic = configs.get(DLQ_TOPIC_NAME).map(|t| t.trim().to_string());
            let copy = configs.get(DLQ_COPY_RECORD);
            let copy = copy.is_some_and(|c| c.trim().eq_ignore_ascii_case("true"));
            (topic, copy, DeadLetterRules::of(&catalog.configs, self.home.config.node_id))
        };
        let give_up = |why: String| {
            tracing::warn!(%group, tp = %next.tp, offset = next.letter.offset,
                "record archived without its dead letter: {why}");
            Ok(false)
        };
        let Some(topic) = topic.filter(|t| !t.is_empty()) else {
            return give_up(format!("share group {group} names no dead-letter topic any more"));
        };
        if let Some(why) = rules.refuse_name(group, &topic) {
            return give_up(why);
        }
        let meta = self.home.catalog.borrow().get(&topic).cloned();
        let meta = match meta {
            Some(meta) if !meta.config.dead_letter_group_enable => {
                return give_up(format!(
                    "DLQ is not enabled on configured DLQ topic for share group: {group}, \
                     topic: {topic}."
                ));
            }
            Some(meta) => meta,
            None if !rules.auto_create => {
                return give_up(format!(
                    "DLQ topic does not exist and auto create is disabled on cluster for share \
                     group: {group}, topic: {topic}."
                ));
            }
            None => self.create_dead_letter_topic(&topic).await?,
        };
        let partition = next.tp.partition % meta.partitions.max(1);
        let letter = &next.letter;
        // The producer the target partition knows, if it expects this letter's sequence;
        // else a new one (a partition takes any first sequence of a producer it does not know).
        let usable = |p: &&DeadLetterProducer| {
            p.topic == topic && p.partition == partition && p.next_sequence == letter.sequence
        };
        let producer = match next.producer.as_ref().filter(usable) {
            Some(producer) => producer.clone(),
            None => self.new_dead_letter_producer(next, &topic, partition).await?,
        };
        let source = match copy {
            true => self.read_source(&next.tp, next.letter.offset).await?,
            false => None,
        };
        let (key, value) = source.unwrap_or_default();
        let headers = [
            ("__dlq.errors.topic", next.tp.topic.to_string()),
            ("__dlq.errors.partition", next.tp.partition.to_string()),
            ("__dlq.errors.offset", letter.offset.to_string()),
            ("__dlq.errors.group", group.clone()),
            ("__dlq.errors.delivery.count", letter.delivery_count.to_string()),
            ("__dlq.errors.message", letter.reason.message().to_string()),
        ];
        let batch = model_records::build_dead_letter_batch(
            now_ms(),
            key.as_deref(),
            value.as_deref(),
            &headers,
            ProducerId(producer.producer_id),
            letter.sequence,
        );
        // Written only once the letter's Archiving state (and so its sequence) is in the log:
        // a sequence that reached the topic is then never given to another letter.
        if let Some(stored) = self.barrier() {
            if !matches!(stored.await, Ok(Ok(_))) {
                return Err("the share partition's state was not written".into());
            }
        }
        let target = TopicPartition::new(topic.clone().into(), partition);
        let written = match self.remote_leader(&target) {
            Some(leader) => self.produce_on(leader, &target, Bytes::from(batch)).await?,
            None => {
                let owner = self.home.owner(&target);
                let produce = PartitionRequest::Produce {
                    partitions: vec![(target, vec![Bytes::from(batch)])],
                    timeout_ms: DEAD_LETTER_WRITE_TIMEOUT_MS,
                    acks: -1,
                };
                let answer = self.partitions.call(owner, produce).await;
                let Some(PartitionResponse::Produce(results)) = answer else {
                    return Err("the partition did not answer".into());
                };
                results.first().map(|r| r.error_code)
            }
        };
        // A repeated write (after a crash) is a duplicate of the first: answered without error.
        match written {
            Some(ErrorCode::None) => Ok(true),
            Some(code @ (ErrorCode::MessageTooLarge | ErrorCode::CorruptMessage)) => {
                give_up(format!("the dead-letter topic {topic} refused it: {code:?}"))
            }
            code => Err(format!("writing to {topic}: {code:?}")),
        }
    }

    /// Auto-creation of a dead-letter topic (`errors.deadletterqueue.auto.create.topics.enable`):
    /// the broker's default partitions, `errors.deadletterqueue.group.enable=true`.
    async fn create_dead_letter_topic(
        &self,
        topic: &str,
    ) -> Result<crate::shard::catalog::TopicMeta, String> {
        let create = CreateTopic {
            name: topic.to_string(),
            partitions: -1,
            overrides: [(DLQ_GROUP_ENABLE.to_string(), "true".to_string())].into(),
            validate_only: false,
            assignments: Vec::new(),
            replication_factor: -1,
            timeout_ms: 0,
        };
        match self.controller.change_topic(ControllerRequest::CreateTopic(create)).await {
            Ok(_) => {}
            Err(e) if e.code == ErrorCode::TopicAlreadyExists => {}
            Err(e) => return Err(format!("creating {topic}: {}", e.message)),
        }
        let meta = self.home.catalog.borrow().get(topic).cloned();
        meta.ok_or_else(|| format!("{topic} not in the catalog yet"))
    }

    /// A producer id for a share partition's dead letters to a new target, stored before its
    /// first write (a write repeated after a crash must carry the same id and sequence).
    async fn new_dead_letter_producer(
        self: &Rc<Self>,
        next: &DeadLetter,
        topic: &str,
        partition: i32,
    ) -> Result<DeadLetterProducer, String> {
        let id = self.controller.producer_id().await;
        let id = id.map_err(|code| format!("no producer id: {code:?}"))?;
        let producer = DeadLetterProducer {
            producer_id: id.0,
            next_sequence: next.letter.sequence,
            topic: topic.to_string(),
            partition,
        };
        let group = &next.group_id;
        self.shares.borrow_mut().set_dead_letter_producer(group, &next.tp, producer.clone());
        if let Some(written) = self.dispatch(WaitFor::Write) {
            if !matches!(written.await, Ok(Ok(_))) {
                return Err("the share partition's state was not written".into());
            }
        }
        Ok(producer)
    }

    /// Clustered: the node that leads `tp` when it is another one (None on a single node, or
    /// when this node leads it or no node does: the local call then answers the error).
    fn remote_leader(&self, tp: &TopicPartition) -> Option<NodeId> {
        if !self.clustered {
            return None;
        }
        self.home.catalog.borrow().leader_other_than(tp, self.home.config.node_id)
    }

    /// A dead letter's write to the leader of `tp` on another node: an acks=all Produce v9, as
    /// the idempotent producer of the letter's batch (the brokers' login, as any request
    /// between them). Its partition's error code (None: not in the answer).
    async fn produce_on(
        &self,
        leader: NodeId,
        tp: &TopicPartition,
        batch: Bytes,
    ) -> Result<Option<ErrorCode>, String> {
        let mut partition = PartitionProduceData::default();
        partition.index = tp.partition;
        partition.records = Some(batch);
        let mut topic = TopicProduceData::default();
        topic.name = TopicName(StrBytes::from_string(tp.topic.to_string()));
        topic.partition_data = vec![partition];
        let mut request = ProduceRequest::default();
        request.acks = -1;
        request.timeout_ms = DEAD_LETTER_WRITE_TIMEOUT_MS;
        request.topic_data = vec![topic];
        let timeout = Duration::from_millis(DEAD_LETTER_WRITE_TIMEOUT_MS as u64 + 5_000);
        let answer: ProduceResponse =
            broker_client::call(&self.cluster, leader, ApiKey::Produce, 9, &request, timeout)
                .await
                .map_err(|e| format!("writing {tp} on broker {leader}: {e}"))?;
        let codes = answer.responses.iter().flat_map(|t| &t.partition_responses);
        let code = codes.filter(|p| p.index == tp.partition).map(|p| p.error_code).next();
        Ok(code.map(|code| ErrorCode::from_code(code).unwrap_or(ErrorCode::UnknownServerError)))
    }

    /// The key and value of the source record (`errors.deadletterqueue.copy.record.enable`);
    /// None when the log no longer has it. Clustered, read from the partition's leader (a
    /// consumer's Fetch v12 when that is another node).
    async fn read_source(
        &self,
        tp: &TopicPartition,
        offset: i64,
    ) -> Result<Option<KeyValue>, String> {
        if let Some(leader) = self.remote_leader(tp) {
            let bytes = self.fetch_on(leader, tp, offset).await?;
            let max = DEAD_LETTER_DECOMPRESSED_BYTES_MAX;
            return Ok(bytes.and_then(|b| crate::model::record_scan::key_value_at(&b, offset, max)));
        }
        let spec = ReadSpec {
            tp: tp.clone(),
            offset: Offset(offset),
            size_bytes_max: DEAD_LETTER_READ_BYTES_MAX,
            isolation: Isolation::ReadUncommitted,
            follower: None,
            client_rack: None,
        };
        let read = PartitionRequest::Read { partitions: vec![spec] };
        let Some(PartitionResponse::Read(results)) =
            self.partitions.call(self.home.owner(tp), read).await
        else {
            return Err("the partition did not answer".into());
        };
        let Some(result) = results.into_iter().next() else { return Ok(None) };
        match result.error_code {
            ErrorCode::None => {}
            ErrorCode::OffsetOutOfRange => return Ok(None),
            code => return Err(format!("reading {tp} at {offset}: {code:?}")),
        }
        let bytes = result.bytes().map_err(|e| format!("reading {tp} at {offset}: {e}"))?;
        let max = DEAD_LETTER_DECOMPRESSED_BYTES_MAX;
        Ok(crate::model::record_scan::key_value_at(&bytes, offset, max))
    }

    /// The batches of `tp` from `offset` on its leader `leader` (None: below its log start).
    async fn fetch_on(
        &self,
        leader: NodeId,
        tp: &TopicPartition,
        offset: i64,
    ) -> Result<Option<Bytes>, String> {
        let mut partition = FetchPartition::default();
        partition.partition = tp.partition;
        partition.current_leader_epoch = -1;
        partition.fetch_offset = offset;
        partition.log_start_offset = -1;
        partition.partition_max_bytes = DEAD_LETTER_READ_BYTES_MAX as i32;
        let mut topic = FetchTopic::default();
        topic.topic = TopicName(StrBytes::from_string(tp.topic.to_string()));
        topic.partitions = vec![partition];
        let mut request = FetchRequest::default();
        request.replica_id = (-1).into();
        request.max_wait_ms = 0;
        request.min_bytes = 0;
        request.max_bytes = DEAD_LETTER_READ_BYTES_MAX as i32;
        request.session_epoch = -1;
        request.topics = vec![topic];
        let timeout = Duration::from_millis(DEAD_LETTER_WRITE_TIMEOUT_MS as u64);
        let answer: FetchResponse =
            broker_client::call(&self.cluster, leader, ApiKey::Fetch, 12, &request, timeout)
                .await
                .map_err(|e| format!("reading {tp} at {offset} on broker {leader}: {e}"))?;
        let found = answer.responses.into_iter().flat_map(|t| t.partitions);
        let Some(found) = found.into_iter().find(|p| p.partition_index == tp.partition) else {
            return Err(format!("reading {tp} at {offset} on broker {leader}: no answer"));
        };
        match ErrorCode::from_code(found.error_code) {
            Some(ErrorCode::None) => Ok(found.records),
            Some(ErrorCode::OffsetOutOfRange) => Ok(None),
            code => Err(format!("reading {tp} at {offset} on broker {leader}: {code:?}")),
        }
    }

    // ----- persistence -----------------------------------------------------------------------

    fn persist(
        self: &Rc<Self>,
        records: Vec<Record>,
        wait: WaitFor,
    ) -> Option<oneshot::Receiver<Written>> {
        if records.is_empty() {
            return None;
        }
        // Clustered, the partition the records go to when they all go to one (a request's
        // records are of one group).
        let first = self.partition_of_record(&records[0]);
        let one = records.iter().all(|record| self.partition_of_record(record) == first);
        let partition = (self.clustered && one).then_some(first);
        let (answer, start) = {
            let mut out = self.outbox.borrow_mut();
            out.records.extend(records);
            let answer = (wait == WaitFor::Write).then(|| {
                let (sender, rx) = oneshot::channel();
                out.acks.push(Ack { partition, sender });
                rx
            });
            let start = !out.flushing;
            out.flushing = true;
            (answer, start)
        };
        // Spawned with no borrow held: the new task may run before this returns.
        if start {
            glommio::spawn_local(self.clone().flush_loop()).detach();
        }
        answer
    }

    /// Writes queued records until the outbox is empty. Exactly one runs at a time.
    async fn flush_loop(self: Rc<Self>) {
        loop {
            let (records, acks) = {
                let mut out = self.outbox.borrow_mut();
                if out.records.is_empty() {
                    out.flushing = false;
                    // Barrier waiters queued with nothing to write: everything is written.
                    for ack in out.acks.drain(..) {
                        let _ = ack.sender.send(Ok(None));
                    }
                    return;
                }
                (std::mem::take(&mut out.records), std::mem::take(&mut out.acks))
            };
            if self.clustered {
                self.write_partitions(records, acks).await;
                continue;
            }
            let log = self.log.borrow().clone();
            let Some(log) = log else {
                tracing::error!(shard = self.shard.0, "offsets log not open; records dropped");
                continue;
            };
            let batch_bytes_max = INTERNAL_BATCH_BYTES_MAX.min(self.segment_bytes as usize / 4);
            let transactional = records
                .iter()
                .any(|r| matches!(r, Record::TxnOffset { .. } | Record::Marker { .. }));
            let batches = encode_records(&records, now_ms(), batch_bytes_max);
            let appended = if transactional {
                // The coordinator's own append (transactional offsets, markers), without
                // the idempotence checks, as a cluster's partition takes them.
                match log::enqueue_coordinator(&log, batches) {
                    Ok(mut appending) => {
                        appending.wait().await;
                        appending.outcome().unwrap_or(Err(crate::storage::Error::Deleted))
                    }
                    Err(e) => Err(e),
                }
            } else {
                log::append(&log, batches).await
            };
            match appended {
                Ok(info) => {
                    for ack in acks {
                        let _ = ack.sender.send(Ok(Some(info.base_offset)));
                    }
                }
                Err(e) => tracing::warn!(shard = self.shard.0, "offsets append failed: {e}"),
            }
        }
    }

    // ----- clustered: the partitions of __consumer_offsets --------------------------------

    /// The partition of `__consumer_offsets` that holds `group_id` (clustered).
    fn partition_of(&self, group_id: &str) -> i32 {
        coordinator_partition(group_id, CLUSTER_INTERNAL_TOPIC_PARTITIONS) as i32
    }

    /// The partition a record goes to: its group's, or a marker's own.
    fn partition_of_record(&self, record: &Record) -> i32 {
        match record {
            Record::Marker { partition, .. } => *partition,
            record => self.partition_of(record.group_id()),
        }
    }

    /// Writes a transaction marker to `partition` (after every record queued before it, so
    /// the log has the producer's offsets first) and, once it is replicated, settles the
    /// pending offsets of the producer in the partition's groups (Kafka's
    /// `completeTransaction`). A failed write leaves them pending; the transaction's
    /// coordinator sends the marker again.
    async fn write_marker(
        self: &Rc<Self>,
        partition: i32,
        producer_id: ProducerId,
        producer_epoch: ProducerEpoch,
        outcome: TxnOutcome,
    ) -> ErrorCode {
        let marker = Record::Marker { partition, producer_id, producer_epoch, outcome };
        let written = match self.persist(vec![marker], WaitFor::Write) {
            Some(written) => written.await.unwrap_or(Err(ErrorCode::NotCoordinator)),
            None => Ok(None),
        };
        match written {
            Ok(_) => {}
            // Kafka turns the coordinator's NOT_COORDINATOR, COORDINATOR_NOT_AVAILABLE and
            // COORDINATOR_LOAD_IN_PROGRESS into NOT_LEADER_OR_FOLLOWER for the marker's sender.
            Err(
                ErrorCode::NotCoordinator
                | ErrorCode::CoordinatorNotAvailable
                | ErrorCode::CoordinatorLoadInProgress,
            ) => return ErrorCode::NotLeaderOrFollower,
            Err(code) => return code,
        }
        // A single node's log is its shard's: the marker settles every group of the shard.
        let owned = |group_id: &str| !self.clustered || self.partition_of(group_id) == partition;
        let settled = self.state.borrow_mut().complete_txn(now_ms(), producer_id, outcome, owned);
        tracing::debug!(partition, %producer_id, ?outcome, settled, "transaction marker written");
        ErrorCode::None
    }

    /// A ShareFetch's or ShareAcknowledge's call (`share_call`).
    async fn share_call(self: &Rc<Self>, now: i64, call: ShareCall) -> ShareAnswer {
        match call {
            ShareCall::Open(req) => {
                let settings = self.share_settings(&req.group_id);
                let opened = self.shares.borrow_mut().open_fetch(now, req, settings);
                let acked = !opened.acks.is_empty();
                let wait = if acked { WaitFor::Write } else { WaitFor::Nothing };
                if let Some(written) = self.dispatch(wait) {
                    if let Ok(Err(code)) = written.await {
                        let acks = opened.acks.iter().map(|(tp, _)| (tp.clone(), code)).collect();
                        return ShareAnswer::Opened(FetchOpened { acks, ..opened });
                    }
                }
                ShareAnswer::Opened(opened)
            }
            ShareCall::Plan { group_id, member_id, node } => {
                let settings = self.share_settings(&group_id);
                ShareAnswer::Plan(self.shares.borrow().plan(&group_id, &member_id, node, settings))
            }
            ShareCall::Acquire { group_id, member_id, reads, max_records } => {
                // Below the free-space reserve nothing new is handed out: its state could not
                // be written.
                if self.home.space.check().is_err() {
                    return ShareAnswer::Acquired(Vec::new());
                }
                let settings = self.share_settings(&group_id);
                let acquired = self.shares.borrow_mut().acquire(
                    now,
                    &group_id,
                    &member_id,
                    reads,
                    max_records,
                    settings,
                );
                // Handed out only once written: a crash then cannot lose what a member holds
                // nor forget a share partition's start.
                if let Some(written) = self.dispatch(WaitFor::Write) {
                    if !matches!(written.await, Ok(Ok(_))) {
                        return ShareAnswer::Acquired(Vec::new());
                    }
                }
                ShareAnswer::Acquired(acquired)
            }
            ShareCall::Acknowledge(req) => {
                let settings = self.share_settings(&req.group_id);
                let result = self.shares.borrow_mut().acknowledge(req, settings);
                if let Some(written) = self.dispatch(WaitFor::Write) {
                    if let (Ok(Err(code)), Ok(acked)) = (written.await, &result) {
                        let failed = acked.iter().map(|(tp, _)| (tp.clone(), code)).collect();
                        return ShareAnswer::Acknowledged(Ok(failed));
                    }
                }
                ShareAnswer::Acknowledged(result)
            }
            // Served by the node that gets it (`api::share_call`); here for a call on this
            // node's own mesh, which wakes the same fetches.
            ShareCall::Wake { partitions } => {
                self.partitions.wake(partitions).await;
                ShareAnswer::Woken
            }
        }
    }

    /// Clustered: whether this coordinator serves `group_id` now: NOT_COORDINATOR when this
    /// node does not lead its partition (any more), COORDINATOR_LOAD_IN_PROGRESS while it
    /// replays it, as Kafka answers.
    fn serves(&self, group_id: &str) -> Result<(), ErrorCode> {
        if !self.clustered {
            return Ok(());
        }
        self.serves_partition(self.partition_of(group_id))
    }

    /// Clustered: whether this coordinator serves the groups of `partition` now (`serves`).
    fn serves_partition(&self, partition: i32) -> Result<(), ErrorCode> {
        if !self.clustered {
            return Ok(());
        }
        let role = self.home.internal.get(OFFSETS_TOPIC, partition).filter(|role| role.leads);
        let loaded = self.loaded.borrow().get(&partition).map(|loaded| loaded.led_since);
        match (role, loaded) {
            (Some(role), Some(since)) if role.led_since == since => Ok(()),
            (Some(_), _) => Err(ErrorCode::CoordinatorLoadInProgress),
            (None, _) => Err(ErrorCode::NotCoordinator),
        }
    }

    /// Clustered: the answer to a request for a group this coordinator does not serve now
    /// (None: serve it). Requests for several groups answer each unserved one so.
    fn refuse_unserved(&self, request: &GroupRequest) -> Option<GroupResponse> {
        if !self.clustered {
            return None;
        }
        let refused = |group_id: &str| self.serves(group_id).err();
        match request {
            GroupRequest::Join(req) => refused(&req.group_id)
                .map(|code| GroupResponse::Join(JoinResponse::error(&req.member_id, code))),
            GroupRequest::Sync(req) => {
                refused(&req.group_id).map(|code| GroupResponse::Sync(SyncResponse::error(code)))
            }
            GroupRequest::Heartbeat(req) => refused(&req.group_id).map(GroupResponse::Heartbeat),
            GroupRequest::Leave { group_id, .. } => refused(group_id).map(|code| {
                GroupResponse::Leave(LeaveResponse { error_code: code, members: Vec::new() })
            }),
            GroupRequest::Commit(req) => {
                refused(&req.group_id).map(|code| GroupResponse::Commit(Err(code)))
            }
            GroupRequest::TxnCommit(req) => {
                refused(&req.group_id).map(|code| GroupResponse::Commit(Err(code)))
            }
            // Kafka's answer to a marker for a partition whose coordinator is not ready (not
            // loaded yet, or no longer led here): NOT_LEADER_OR_FOLLOWER, which the
            // transaction's coordinator retries after looking the leader up again.
            GroupRequest::TxnMarker { partition, .. } => self
                .serves_partition(*partition)
                .err()
                .map(|_| GroupResponse::Marker(ErrorCode::NotLeaderOrFollower)),
            GroupRequest::ConsumerHeartbeat(req) => refused(&req.group_id)
                .map(|code| GroupResponse::ConsumerHeartbeat(HeartbeatResponse::error(code, ""))),
            GroupRequest::DeleteOffsets { group_id, .. } => {
                refused(group_id).map(|code| GroupResponse::DeleteOffsets(Err(code)))
            }
            GroupRequest::Fetch { groups } => {
                let codes: Vec<_> = groups.iter().map(|g| refused(&g.group_id)).collect();
                codes.iter().any(Option::is_some).then(|| {
                    let found = groups.iter().zip(codes).map(|(g, code)| {
                        let offsets = match code {
                            Some(code) => Err(code),
                            None => self.fetch_now(g),
                        };
                        (g.group_id.clone(), offsets)
                    });
                    GroupResponse::Fetch(found.collect())
                })
            }
            GroupRequest::Delete { groups } => {
                groups.iter().any(|g| refused(g).is_some()).then(|| {
                    // All or nothing here: the served ones are deleted on the client's retry.
                    let codes = groups.iter().map(|g| {
                        (g.clone(), refused(g).unwrap_or(ErrorCode::CoordinatorLoadInProgress))
                    });
                    GroupResponse::Delete(codes.collect())
                })
            }
            // A transaction's offsets for a group another node coordinates (the known gap of
            // cross-node transactional offsets, see ARCHITECTURE.md) are not taken: a group
            // this node does not lead must not appear in its state.
            GroupRequest::TxnEnd { group_id, producer_id, outcome, offsets } => refused(group_id)
                .map(|code| {
                    if *outcome == TxnOutcome::Commit && !offsets.is_empty() {
                        tracing::warn!(group = %group_id, %producer_id, ?code,
                            "transactional offsets of a group not coordinated here are dropped");
                    }
                    GroupResponse::Done
                }),
            // Described and listed from what is loaded: a group of a partition not (yet)
            // served here is not known here.
            GroupRequest::ConsumerDescribe { .. }
            | GroupRequest::Describe { .. }
            | GroupRequest::List { .. } => None,
            GroupRequest::Share(call) => {
                refused(call.group_id()).map(|code| GroupResponse::Share(call.refused(code)))
            }
            GroupRequest::ShareHeartbeat(req) => refused(&req.group_id)
                .map(|code| GroupResponse::ShareHeartbeat(HeartbeatResponse::error(code, ""))),
            GroupRequest::ShareAlterOffsets { group_id, .. } => {
                refused(group_id).map(|code| GroupResponse::ShareOffsetsAltered(Err(code)))
            }
            GroupRequest::ShareDeleteOffsets { group_id, .. } => {
                refused(group_id).map(|code| GroupResponse::ShareOffsetsDeleted(Err(code)))
            }
            // Described from what is loaded, as consumer groups are.
            GroupRequest::ShareDescribe { .. } | GroupRequest::ShareOffsets { .. } => None,
        }
    }

    /// The committed offsets of one group of an OffsetFetch, as the state has them now.
    fn fetch_now(&self, group: &FetchGroup) -> Result<Vec<FetchedOffset>, ErrorCode> {
        let member = group.member.as_ref().map(|(id, epoch)| (id.as_str(), *epoch));
        let partitions = group.partitions.clone();
        let state = self.state.borrow();
        let mut offsets = state.fetch_member_offsets(&group.group_id, member, partitions);
        if let (true, Ok(offsets)) = (group.require_stable, offsets.as_mut()) {
            state.mark_unstable(&group.group_id, offsets);
        }
        offsets
    }

    /// Clustered: loads the partitions this node came to lead and forgets those it no
    /// longer leads (or lost and led again since they were loaded: the log may have changed
    /// meanwhile), as `partition` set their roles. Runs on each wake of the tick, which a
    /// change of roles notifies.
    fn reconcile(self: &Rc<Self>) {
        if !self.clustered {
            return;
        }
        let led = self.home.internal.led(OFFSETS_TOPIC);
        let stale: Vec<i32> = {
            let loaded = self.loaded.borrow();
            let stale = loaded.iter().filter(|(partition, loaded)| {
                led.get(partition).is_none_or(|role| role.led_since != loaded.led_since)
            });
            stale.map(|(partition, _)| *partition).collect()
        };
        for partition in stale {
            self.unload_partition(partition);
        }
        for (partition, role) in led {
            let known = self.loaded.borrow().contains_key(&partition)
                || self.loading.borrow().contains(&partition);
            if !known {
                self.loading.borrow_mut().insert(partition);
                glommio::spawn_local(self.clone().load_partition(partition, role)).detach();
            }
        }
    }

    /// Replays the log of a partition this node now leads and serves its groups (Kafka's
    /// `loadGroupsForPartition`): members must heartbeat within their session timeout, as
    /// after any coordinator failover. Nothing else writes the log meanwhile: this is its
    /// only writer, and it writes only partitions it loaded.
    async fn load_partition(self: Rc<Self>, partition: i32, role: InternalRole) {
        let started = std::time::Instant::now();
        let read = internal_log::read_led_log(&role.log).await;
        self.loading.borrow_mut().remove(&partition);
        let current = self.home.internal.get(OFFSETS_TOPIC, partition);
        if !current.is_some_and(|now| now.leads && now.led_since == role.led_since) {
            // Lost again while reading: the next reconcile sees what is true now.
            self.wake_tick();
            return;
        }
        let tp = TopicPartition::new(OFFSETS_TOPIC.into(), partition);
        let batches = match read {
            Ok(batches) => batches,
            Err(e) => {
                // Not loaded: its groups stay COORDINATOR_LOAD_IN_PROGRESS; the next
                // reconcile tries again.
                tracing::warn!(%tp, "cannot read the partition's log to load its groups: {e}");
                return;
            }
        };
        let records = decode_partition(&tp, &batches);
        let owned = |group_id: &str| self.partition_of(group_id) == partition;
        let now = now_ms();
        let (count, groups) = {
            let mut state = self.state.borrow_mut();
            let mut shares = self.shares.borrow_mut();
            let mut count = 0;
            for record in records {
                match record {
                    Record::Share { group, topic, partition, value } if owned(&group) => {
                        shares.replay(group, TopicPartition::new(topic.into(), partition), value)
                    }
                    // A marker settles the producer's pending offsets of this partition's
                    // groups, in log order with the rest.
                    Record::Marker { producer_id, outcome, .. } => {
                        state.complete_txn(now, producer_id, outcome, owned);
                    }
                    // Only this partition's keys: a log left by another layout holds no others.
                    record if owned(record.group_id()) => state.replay(now, record),
                    _ => continue,
                }
                count += 1;
            }
            let catalog = self.home.catalog.borrow();
            let timeouts =
                |group: &str| consumer_timeouts(catalog.configs.of(RESOURCE_GROUP, group));
            state.finish_load_of(now, owned, timeouts);
            (count, state.group_count() + shares.group_count())
        };
        let compactor = Compactor::new(OFFSETS_TOPIC, self.segment_bytes);
        compactor.loaded(&role.log);
        let loaded = LoadedPartition { log: role.log, led_since: role.led_since, compactor };
        self.loaded.borrow_mut().insert(partition, loaded);
        // A topic deleted while the partition's last coordinator held its groups, which died
        // before it wrote their tombstones. The catalog that named this node the leader is
        // past every record that coordinator could still write (it wrote only while it led,
        // and only of topics its own catalog had, which is behind that same record), so a
        // topic the replayed state names and the catalog does not have was deleted.
        self.forget_deleted_topics();
        self.dispatch(WaitFor::Nothing);
        tracing::info!(
            %tp,
            leader_epoch = role.leader_epoch.0,
            records = count,
            groups_on_shard = groups,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "loaded the groups of a partition this node now leads"
        );
    }

    /// Forgets the groups of a partition this node no longer leads (Kafka's
    /// `removeGroupsForPartition`): its parked requests are answered NOT_COORDINATOR, and
    /// the records still queued for it are dropped when their write finds it gone.
    fn unload_partition(self: &Rc<Self>, partition: i32) {
        self.loaded.borrow_mut().remove(&partition);
        let owned = |group_id: &str| self.partition_of(group_id) == partition;
        let groups = self.state.borrow_mut().unload(owned) + self.shares.borrow_mut().unload(owned);
        self.dispatch(WaitFor::Nothing);
        let tp = TopicPartition::new(OFFSETS_TOPIC.into(), partition);
        tracing::info!(%tp, groups, "unloaded the groups of a partition this node no longer leads");
    }

    fn wake_tick(&self) {
        self.planned_wake_ms.set(i64::MIN);
        let remote = self.home.delayed.notify(&Key::Groups);
        debug_assert!(remote.is_empty());
    }

    /// Clustered: writes queued records to their partitions (concurrently) and tells each
    /// waiter how its partition's write went.
    async fn write_partitions(&self, records: Vec<Record>, acks: Vec<Ack>) {
        let mut by_partition: BTreeMap<i32, Vec<Record>> = BTreeMap::new();
        for record in records {
            let partition = self.partition_of_record(&record);
            by_partition.entry(partition).or_default().push(record);
        }
        let writes = by_partition.into_iter().map(|(partition, records)| async move {
            (partition, self.write_led(partition, records).await)
        });
        let outcomes: BTreeMap<i32, Written> = join_all(writes).await.into_iter().collect();
        for ack in acks {
            let written = match ack.partition {
                Some(partition) => outcomes.get(&partition).copied().unwrap_or(Ok(None)),
                None => outcomes.values().find(|w| w.is_err()).copied().unwrap_or(Ok(None)),
            };
            let _ = ack.sender.send(written);
        }
    }

    /// Appends records to a partition this coordinator loaded and waits until they are
    /// replicated (`internal_log::append_led`).
    async fn write_led(&self, partition: i32, records: Vec<Record>) -> Written {
        let loaded = self.loaded.borrow().get(&partition).map(|l| (l.log.clone(), l.led_since));
        let Some((log, led_since)) = loaded else { return Err(ErrorCode::NotCoordinator) };
        let batch_bytes_max = INTERNAL_BATCH_BYTES_MAX.min(self.segment_bytes as usize / 4);
        let batches = encode_records(&records, now_ms(), batch_bytes_max);
        let tp = TopicPartition::new(OFFSETS_TOPIC.into(), partition);
        let led = internal_log::Led { roles: &self.home.internal, tp: &tp, log: &log, led_since };
        led.append(batches, self.partitions.wake_followers_when_queued(&tp)).await.map(Some)
    }

    /// Clustered: compacts each loaded partition that outgrew its threshold, as a single
    /// node compacts its log: a snapshot of the partition's groups, then the whole segments
    /// before it go. The followers follow the leader's log start (`partition`).
    async fn maybe_compact_partitions(self: &Rc<Self>) {
        let partitions: Vec<i32> = self.loaded.borrow().keys().copied().collect();
        for partition in partitions {
            let due = {
                let loaded = self.loaded.borrow();
                let Some(loaded) = loaded.get(&partition) else { continue };
                loaded.compactor.begin(&loaded.log).map(|run| (run, loaded.log.clone()))
            };
            let Some((run, log)) = due else { continue };
            let owned = |group_id: &str| self.partition_of(group_id) == partition;
            let mut snapshot = self.state.borrow().snapshot_of(owned);
            snapshot.extend(self.shares.borrow().snapshot_of(owned));
            let written = if snapshot.is_empty() {
                self.barrier()
            } else {
                self.persist(snapshot, WaitFor::Write)
            };
            let outcome = match written {
                Some(rx) => rx.await.unwrap_or(Err(ErrorCode::NotCoordinator)),
                None => Ok(None),
            };
            let loaded = self.loaded.borrow();
            let Some(loaded) = loaded.get(&partition) else { continue };
            match outcome {
                // Cut below the snapshot only once it is replicated (or, with an empty state,
                // below the high watermark: everything written is history).
                Ok(base) => loaded.compactor.finish(&log, self.shard, base, run),
                Err(_) => loaded.compactor.abandon(run),
            }
        }
    }

    // ----- time --------------------------------------------------------------------------------

    async fn run_tick(self: Rc<Self>) {
        let mut last_retention = now_ms();
        loop {
            self.reconcile();
            let now = now_ms();
            self.state.borrow_mut().advance(now);
            self.shares.borrow_mut().advance(now, |group| self.share_settings(group));
            if now - last_retention >= OFFSETS_RETENTION_CHECK_INTERVAL_MS {
                last_retention = now;
                let expired = self.state.borrow_mut().expire_offsets(now);
                if expired > 0 {
                    tracing::info!(shard = self.shard.0, expired, "expired committed offsets");
                }
            }
            self.planned_wake_ms.set(i64::MIN);
            self.dispatch(WaitFor::Nothing);
            self.maybe_compact().await;
            let now = now_ms();
            let idle_wake = now + GROUP_IDLE_WAKE_MS as i64;
            let shares_deadline = self.shares.borrow().next_deadline().unwrap_or(i64::MAX);
            let wake = self.state.borrow().next_deadline().map_or(idle_wake, |d| d.min(idle_wake));
            let wake = wake.min(shares_deadline);
            self.planned_wake_ms.set(wake);
            let sleep_ms = wake.saturating_sub(now).max(1) as u64;
            let keys = [Key::Groups, Key::InternalRoles(OFFSETS_TOPIC)];
            let wait = self.home.delayed.wait(keys, Duration::from_millis(sleep_ms));
            let _ = wait.done.await;
        }
    }

    async fn maybe_compact(self: &Rc<Self>) {
        if self.clustered {
            self.maybe_compact_partitions().await;
            return;
        }
        let log = self.log.borrow().clone();
        let Some(log) = log else { return };
        let Some(run) = self.compactor.begin(&log) else { return };
        let mut snapshot = self.state.borrow().snapshot();
        snapshot.extend(self.shares.borrow().snapshot_of(|_| true));
        // An empty state still waits for what is queued: the cut then falls after it.
        let written = if snapshot.is_empty() {
            self.barrier()
        } else {
            self.persist(snapshot, WaitFor::Write)
        };
        let base = match written {
            Some(rx) => rx.await.ok().and_then(Result::ok).flatten(),
            None => None,
        };
        self.compactor.finish(&log, self.shard, base, run);
    }
}

/// Encodes records into the batches of one append, in order: plain records into plain
/// batches (`internal_log::encode_batches`), a producer's transactional offsets into its
/// transactional batches, a marker into its control batch (Kafka's formats for each).
fn encode_records(records: &[Record], timestamp: i64, batch_bytes_max: usize) -> Vec<Bytes> {
    let mut batches = Vec::new();
    let mut start = 0;
    while start < records.len() {
        match &records[start] {
            Record::Marker { producer_id, producer_epoch, outcome, .. } => {
                let bytes = model_records::build_control_batch(
                    timestamp,
                    *producer_id,
                    *producer_epoch,
                    *outcome,
                    0,
                );
                batches.push(Bytes::from(bytes));
                start += 1;
            }
            Record::TxnOffset { producer_id, producer_epoch, .. } => {
                let same = |record: &Record| match record {
                    Record::TxnOffset { producer_id: id, producer_epoch: epoch, .. } => {
                        id == producer_id && epoch == producer_epoch
                    }
                    _ => false,
                };
                let mut end = start;
                let mut size = 0;
                let mut encoded = Vec::new();
                while end < records.len() && same(&records[end]) {
                    let (key, value) = records[end].encode();
                    let record_size = key.len() + value.as_ref().map_or(0, Vec::len) + 16;
                    if end > start && size + record_size > batch_bytes_max {
                        break;
                    }
                    size += record_size;
                    encoded.push((key, value));
                    end += 1;
                }
                let ins: Vec<RecordIn<'_>> = encoded
                    .iter()
                    .map(|(key, value)| RecordIn { key: Some(key), value: value.as_deref() })
                    .collect();
                let bytes =
                    model_records::build_txn_batch(timestamp, *producer_id, *producer_epoch, &ins);
                batches.push(Bytes::from(bytes));
                start = end;
            }
            _ => {
                let plain = |record: &Record| {
                    !matches!(record, Record::Marker { .. } | Record::TxnOffset { .. })
                };
                let end = records[start..]
                    .iter()
                    .position(|r| !plain(r))
                    .map_or(records.len(), |n| start + n);
                let encoded: Vec<_> = records[start..end].iter().map(Record::encode).collect();
                batches.extend(internal_log::encode_batches(&encoded, timestamp, batch_bytes_max));
                start = end;
            }
        }
    }
    batches
}

/// The records of a led partition's log (`internal_log::read_led_log`), oldest first, as
/// their batches make them: records of a producer's transactional batch are its pending
/// offsets (`Record::TxnOffset`), a control batch is a marker of the partition. Unreadable
/// records are skipped with a warning.
fn decode_partition(tp: &TopicPartition, batches: &[Vec<u8>]) -> Vec<Record> {
    let mut out = Vec::new();
    for bytes in batches {
        let Ok(header) = BatchHeader::parse(bytes) else { continue };
        let producer_id = header.producer_id();
        let producer_epoch = header.producer_epoch();
        if header.is_control() {
            let outcome = model_records::control_outcome(bytes);
            if let (true, Some(outcome)) = (producer_id.is_valid(), outcome) {
                out.push(Record::Marker {
                    partition: tp.partition,
                    producer_id,
                    producer_epoch,
                    outcome,
                });
            }
            continue;
        }
        let transactional = header.is_transactional() && producer_id.is_valid();
        let Ok(views) = model_records::parse_batch(bytes) else { continue };
        for view in views {
            let Some(key) = view.key.as_deref() else { continue };
            let record = match Record::decode(key, view.value.as_deref()) {
                Ok(record) => record,
                Err(_) => {
                    tracing::warn!(%tp, offset = view.offset, "skipping an unreadable record");
                    continue;
                }
            };
            out.push(match record {
                Record::Offset { group, topic, partition, value: Some(value) } if transactional => {
                    Record::TxnOffset {
                        producer_id,
                        producer_epoch,
                        group,
                        topic,
                        partition,
                        value,
                    }
                }
                record => record,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::group::records::OffsetValue;
    use crate::model::LeaderEpoch;

    fn offset_value(offset: i64) -> OffsetValue {
        OffsetValue {
            offset: Offset(offset),
            leader_epoch: LeaderEpoch(2),
            metadata: "m".into(),
            commit_timestamp: 5,
            expire_timestamp: None,
        }
    }

    #[test]
    fn transactional_offsets_and_markers_read_back_as_written() {
        let plain = |offset| Record::Offset {
            group: "g".into(),
            topic: "t".into(),
            partition: 0,
            value: Some(offset_value(offset)),
        };
        let pending = |producer: i64, offset| Record::TxnOffset {
            producer_id: ProducerId(producer),
            producer_epoch: ProducerEpoch(1),
            group: "g".into(),
            topic: "t".into(),
            partition: 1,
            value: offset_value(offset),
        };
        let marker = Record::Marker {
            partition: 9,
            producer_id: ProducerId(3),
            producer_epoch: ProducerEpoch(1),
            outcome: TxnOutcome::Commit,
        };
        let records = vec![
            plain(1),
            pending(3, 10),
            pending(3, 11),
            pending(4, 12),
            plain(2),
            marker.clone(),
            Record::Group { group: "g".into(), value: None },
        ];
        let batches = encode_records(&records, 7, 1 << 20);
        // plain, producer 3, producer 4, plain, marker, plain
        assert_eq!(batches.len(), 6);
        let header = BatchHeader::parse(&batches[1]).expect("header");
        assert!(header.is_transactional() && !header.is_control());
        assert_eq!(header.producer_id(), ProducerId(3));
        assert!(BatchHeader::parse(&batches[4]).expect("header").is_control());
        let stored: Vec<Vec<u8>> = batches.iter().map(|b| b.to_vec()).collect();
        let tp = TopicPartition::new(OFFSETS_TOPIC.into(), 9);
        assert_eq!(decode_partition(&tp, &stored), records);
        // A small batch bound splits a producer's run into several transactional batches.
        assert_eq!(encode_records(&records[1..3], 7, 1).len(), 2);
    }
}
