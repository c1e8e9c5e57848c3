//! The transaction coordinator of one shard: the glue between the pure state machine
//! (`state::Transactions`), the mesh, the clock and the shard's transaction log.
//!
//! Lifecycle: built with the shard; `load` (before the shard serves) opens the log
//! `__transaction_state-<shard>` and replays it; `start` (once every shard serves) finishes
//! the transactions a crash left in PrepareCommit/PrepareAbort and starts the timeout task;
//! `close` seals the log. Lives in an `Rc` on its shard; state is in `RefCell`s never
//! borrowed across an `.await`.
//!
//! Ending a transaction (EndTxn, a timeout, or InitProducerId during a transaction):
//! 1. the state machine moves it to Prepare* and the record is written to the log;
//! 2. each partition's owner appends a marker (one mesh message per owning shard), and each
//!    group's coordinator writes a marker to its offsets log, which settles the producer's
//!    pending offsets there (commit: they become the group's committed offsets; abort:
//!    dropped; a transaction begun before the upgrade to this path hands its offsets over
//!    with `GroupRequest::TxnEnd`). Clustered, the markers go to each partition's leader,
//!    and a group's offsets are settled by the marker of its partition of
//!    `__consumer_offsets` (added by AddOffsetsToTxn), which its group coordinator writes;
//! 3. Complete* is written, and EndTxn answers.
//!
//! A crash between 1 and 3 leaves Prepare* in the log; `start` repeats 2 and 3. Markers are
//! idempotent enough for that: a second marker for a producer with no open transaction in
//! a partition changes nothing but adds a control batch.
//!
//! Time: a transaction's timeout is one operation in the shard's purgatory, keyed by its
//! transactional id (`Key::Transaction`), armed when the transaction begins and notified away
//! when it ends; at its deadline the transaction is aborted. No scan of the transactions.
//! A housekeeping task drops the transactional ids unused for transactional.id.expiration.ms
//! (a tombstone each, a periodic scan as in Kafka) and compacts the log.
//!
//! The log is one of the shard's internal logs (`shard::internal_log`): compacted by a
//! snapshot of every transactional id's metadata when it grows, and migrated between shards
//! when `--cores` changes, so an open transaction is finished by its new owner.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::join_all;
use kafka_protocol::messages::write_txn_markers_request::{
    WritableTxnMarker, WritableTxnMarkerTopic,
};
use kafka_protocol::messages::{
    ApiKey, TopicName, WriteTxnMarkersRequest, WriteTxnMarkersResponse,
};
use kafka_protocol::protocol::StrBytes;

use crate::cluster::{broker_client, Cluster};
use crate::constants::{
    CLUSTER_INTERNAL_TOPIC_PARTITIONS, INTERNAL_BATCH_BYTES_MAX, TXN_HOUSEKEEPING_MS,
    TXN_ID_EXPIRATION_CHECK_MS, TXN_MARKER_REQUEST_TIMEOUT_MS, TXN_MARKER_RETRY_MS_MAX,
    TXN_MARKER_RETRY_MS_MIN,
};
use crate::controller::Controller;
use crate::group::coordinator::{
    Coordinator as GroupCoordinator, GroupRequest, GroupResponse, OFFSETS_TOPIC,
};
use crate::model::topic::Durability;
use crate::model::{now_ms, ErrorCode, NodeId, Offset, ShardId, TopicPartition, TxnOutcome};
use crate::partition::{PartitionRequest, PartitionResponse, Partitions};
use crate::shard::delayed::Key;
pub use crate::shard::internal_log::TRANSACTION_TOPIC;
use crate::shard::internal_log::{self, Compactor, InternalRole, LogRef, Replayed};
use crate::shard::mesh::{Mesh, Served, Service};
use crate::shard::table::coordinator_partition;
use crate::shard::Shard;
use crate::storage::clean_stop::{CleanStop, LogState};
use crate::storage::log::{self, Marker};
use crate::txn::state::{
    EndOutcome, EndPlan, InitOutcome, Producer, Transactions, TxnConfig, TxnMeta, TxnRecord,
};

/// A transaction request forwarded to the shard that owns the transactional id.
#[derive(Debug)]
pub enum TxnRequest {
    Init {
        transactional_id: String,
        timeout_ms: i32,
        producer: Producer,
    },
    Add {
        transactional_id: String,
        producer: Producer,
        partitions: Vec<(String, i32)>,
        groups: Vec<String>,
    },
    End {
        transactional_id: String,
        producer: Producer,
        outcome: TxnOutcome,
    },
    Describe {
        transactional_ids: Vec<String>,
    },
    List,
}

#[derive(Debug)]
pub enum TxnResponse {
    Init(Result<Producer, ErrorCode>),
    Code(ErrorCode),
    Described(Vec<(String, Option<TxnMeta>)>),
    Listed(Vec<TxnMeta>),
}

/// The services a transaction coordinator reaches: the partitions' owners (markers), the
/// groups' coordinators (offsets), the controller (producer ids).
pub struct TxnPeers {
    pub partitions: Rc<Partitions>,
    pub groups: Rc<GroupCoordinator>,
    pub controller: Rc<Controller>,
    /// Clustered: where the partitions' leaders listen (markers go there).
    pub cluster: Rc<Cluster>,
}

pub struct TxnCoordinator {
    shard: ShardId,
    shards: usize,
    data_dir: PathBuf,
    durability: Durability,
    config: TxnConfig,
    state: RefCell<Transactions>,
    log: RefCell<Option<LogRef>>,
    compactor: Compactor,
    home: Rc<Shard>,
    mesh: Mesh<TxnCoordinator>,
    peers: TxnPeers,
    /// The transactions whose timeout waits in the purgatory, with the start (ms) of the
    /// transaction it was armed for.
    armed: RefCell<HashMap<Arc<str>, i64>>,
    /// Clustered: this shard's transactional ids live in the partitions of the replicated
    /// topic `__transaction_state` it owns, not in a log of its own (`shard::internal_log`).
    clustered: bool,
    /// Clustered: the partitions whose transactional ids this coordinator serves (this node
    /// leads them and their log was replayed), by partition.
    loaded: RefCell<BTreeMap<i32, LoadedPartition>>,
    /// Clustered: the partitions being replayed.
    loading: RefCell<BTreeSet<i32>>,
}

/// A partition of `__transaction_state` whose transactional ids this coordinator serves.
struct LoadedPartition {
    log: LogRef,
    /// The stretch of leadership it was loaded in (`InternalRole::led_since`).
    led_since: u64,
    compactor: Compactor,
}

impl Service for TxnCoordinator {
    type Request = TxnRequest;
    type Response = TxnResponse;

    fn mesh(&self) -> &Mesh<TxnCoordinator> {
        &self.mesh
    }

    fn serve(self: &Rc<Self>, _from: ShardId, request: TxnRequest) -> Served<TxnResponse> {
        let this = self.clone();
        Served::Later(Box::pin(async move { this.handle(request).await }))
    }
}

impl TxnCoordinator {
    pub fn new(home: Rc<Shard>, mesh: Mesh<TxnCoordinator>, peers: TxnPeers) -> TxnCoordinator {
        let config = &home.config;
        TxnCoordinator {
            shard: home.id,
            shards: config.cores,
            data_dir: config.data_dir.clone(),
            durability: config.topic_defaults.durability,
            config: config.txns.clone(),
            state: RefCell::new(Transactions::new()),
            log: RefCell::new(None),
            compactor: Compactor::new(TRANSACTION_TOPIC, config.txns.log_segment_bytes),
            clustered: config.cluster.is_some(),
            home,
            mesh,
            peers,
            armed: RefCell::new(HashMap::new()),
            loaded: RefCell::new(BTreeMap::new()),
            loading: RefCell::new(BTreeSet::new()),
        }
    }

    /// The shard that owns `transactional_id`.
    pub fn owner(&self, transactional_id: &str) -> ShardId {
        self.home.coordinator_of(TRANSACTION_TOPIC, transactional_id)
    }

    /// Sends a transaction request to the shard that owns its transactional id (or serves
    /// it here); `None` once the mesh is closed.
    pub async fn call(&self, owner: ShardId, request: TxnRequest) -> Option<TxnResponse> {
        self.mesh.call(owner, request).await
    }

    /// Sends the same request to every shard and waits for all the answers.
    pub async fn broadcast(&self, make: impl Fn() -> TxnRequest) -> Vec<Option<TxnResponse>> {
        self.mesh.broadcast(make).await
    }

    /// Opens and replays this shard's transaction log (every log when the core count
    /// changed). Must finish before the shard serves.
    pub async fn load(
        &self,
        clean_stop: &Mutex<CleanStop>,
    ) -> Result<Replayed, crate::storage::Error> {
        if self.clustered {
            // The partitions are loaded as this node comes to lead them (`reconcile`).
            return Ok(Replayed::default());
        }
        let config = internal_log::log_config(self.config.log_segment_bytes, self.durability);
        let topic = TRANSACTION_TOPIC;
        let log = internal_log::open(&self.data_dir, topic, self.shard, config, clean_stop);
        let log = log.await?;
        *self.log.borrow_mut() = Some(log.clone());
        let replayed = internal_log::replay(
            &self.data_dir,
            TRANSACTION_TOPIC,
            self.shard,
            self.shards,
            super::records::decode,
            TxnRecord::transactional_id,
            |record| self.state.borrow_mut().replay(record),
        )
        .await?;
        if replayed.migrated {
            let snapshot = self.state.borrow().snapshot();
            if self.append(&snapshot).await.is_err() {
                return Err(crate::storage::Error::Io(std::io::Error::other(
                    "cannot write the migrated transaction state",
                )));
            }
        }
        self.compactor.loaded(&log);
        Ok(replayed)
    }

    /// Closes the log at shutdown: returns what the next start resumes it from
    /// (`storage::clean_stop`).
    pub async fn close(&self) -> Option<LogState> {
        let log = self.log.borrow().clone();
        if let Some(log) = log {
            return Some(log::close(&log).await);
        }
        None
    }

    pub fn transaction_count(&self) -> usize {
        self.state.borrow().len()
    }

    /// Writes what the state machine queued; Err when the log cannot take it.
    async fn persist(&self) -> Result<(), ErrorCode> {
        let records = self.state.borrow_mut().take_records();
        self.append(&records).await.map(|_| ())
    }

    /// Appends `records` in order; the base offset of the first (None: nothing to write).
    async fn append(&self, records: &[TxnRecord]) -> Result<Option<Offset>, ErrorCode> {
        if records.is_empty() {
            return Ok(None);
        }
        if self.clustered {
            return self.append_partitions(records).await;
        }
        let Some(log) = self.log.borrow().clone() else {
            return Err(ErrorCode::CoordinatorNotAvailable);
        };
        let encoded: Vec<_> = records.iter().map(super::records::encode).collect();
        let batch_bytes_max =
            INTERNAL_BATCH_BYTES_MAX.min(self.config.log_segment_bytes as usize / 4);
        let batches = internal_log::encode_batches(&encoded, now_ms(), batch_bytes_max);
        match log::append(&log, batches).await {
            Ok(info) => Ok(Some(info.base_offset)),
            Err(e) => {
                tracing::warn!(shard = self.shard.0, "transaction log append failed: {e}");
                Err(ErrorCode::CoordinatorNotAvailable)
            }
        }
    }

    /// How often to look for expired transactional ids: a tenth of the expiration, between
    /// the housekeeping period and `TXN_ID_EXPIRATION_CHECK_MS`.
    fn id_expiration_check_ms(&self) -> i64 {
        (self.config.id_expiration_ms / 10)
            .clamp(TXN_HOUSEKEEPING_MS as i64, TXN_ID_EXPIRATION_CHECK_MS)
    }

    /// Drops the expired transactional ids (their tombstones written).
    async fn expire_ids(&self, now: i64) {
        let expired = self.state.borrow_mut().expire_ids(now, self.config.id_expiration_ms);
        if expired > 0 && self.persist().await.is_ok() {
            tracing::info!(shard = self.shard.0, expired, "expired transactional ids");
        }
    }

    /// When the log has grown enough: appends a snapshot of every transactional id and
    /// deletes the segments before it.
    async fn maybe_compact(&self) {
        if self.clustered {
            self.maybe_compact_partitions().await;
            return;
        }
        let log = self.log.borrow().clone();
        let Some(log) = log else { return };
        let Some(run) = self.compactor.begin(&log) else { return };
        let snapshot = self.state.borrow().snapshot();
        match self.append(&snapshot).await {
            Ok(base) => self.compactor.finish(&log, self.shard, base, run),
            Err(_) => self.compactor.abandon(run),
        }
    }
}

impl TxnCoordinator {
    /// Serves a transaction request on the shard that owns its transactional id.
    async fn handle(self: &Rc<Self>, request: TxnRequest) -> TxnResponse {
        // Below the free-space reserve, a request that writes the transaction log is refused
        // before the state changes, with Kafka's answer to a storage failure (NOT_COORDINATOR:
        // clients look the coordinator up again and retry). Timeouts and markers of
        // transactions already open still write, into the reserve.
        let writes = matches!(
            request,
            TxnRequest::Init { .. } | TxnRequest::Add { .. } | TxnRequest::End { .. }
        );
        let key = match &request {
            TxnRequest::Init { transactional_id, .. }
            | TxnRequest::Add { transactional_id, .. }
            | TxnRequest::End { transactional_id, .. } => Some(transactional_id.as_str()),
            TxnRequest::Describe { .. } | TxnRequest::List => None,
        };
        if let Some(Err(code)) = key.map(|id| self.serves(id)) {
            return match request {
                TxnRequest::Init { .. } => TxnResponse::Init(Err(code)),
                _ => TxnResponse::Code(code),
            };
        }
        if writes && self.home.space.check().is_err() {
            return match request {
                TxnRequest::Init { .. } => TxnResponse::Init(Err(ErrorCode::NotCoordinator)),
                _ => TxnResponse::Code(ErrorCode::NotCoordinator),
            };
        }
        match request {
            TxnRequest::Init { transactional_id, timeout_ms, producer } => {
                TxnResponse::Init(self.init(&transactional_id, timeout_ms, producer).await)
            }
            TxnRequest::Add { transactional_id, producer, partitions, groups } => {
                let added = self.state.borrow_mut().add(
                    now_ms(),
                    &transactional_id,
                    producer,
                    &partitions,
                    &groups,
                );
                let code = match added {
                    Ok(_) => {
                        self.arm_timeout(&transactional_id);
                        self.persist().await.err().unwrap_or(ErrorCode::None)
                    }
                    Err(code) => code,
                };
                TxnResponse::Code(code)
            }
            TxnRequest::End { transactional_id, producer, outcome } => {
                let ended =
                    self.state.borrow_mut().end(now_ms(), &transactional_id, producer, outcome);
                let code = match ended {
                    EndOutcome::Done => ErrorCode::None,
                    EndOutcome::Error(code) => code,
                    EndOutcome::Markers(plan) => match self.persist().await {
                        Ok(()) => self.finish(plan).await,
                        Err(code) => code,
                    },
                };
                TxnResponse::Code(code)
            }
            TxnRequest::Describe { transactional_ids } => {
                let state = self.state.borrow();
                TxnResponse::Described(
                    transactional_ids
                        .into_iter()
                        .map(|id| {
                            let meta = state.get(&id).cloned();
                            (id, meta)
                        })
                        .collect(),
                )
            }
            TxnRequest::List => TxnResponse::Listed(self.state.borrow().all().cloned().collect()),
        }
    }

    async fn init(
        self: &Rc<Self>,
        transactional_id: &str,
        timeout_ms: i32,
        producer: Producer,
    ) -> Result<Producer, ErrorCode> {
        let mut fresh = None;
        // At most: one abort of an open transaction, one producer id allocation.
        for _ in 0..4 {
            let outcome = self.state.borrow_mut().init_producer_id(
                now_ms(),
                transactional_id,
                timeout_ms,
                producer,
                fresh,
            );
            match outcome {
                InitOutcome::Ready { producer_id, producer_epoch } => {
                    self.persist().await?;
                    return Ok(Producer { producer_id, producer_epoch });
                }
                InitOutcome::NeedProducerId => {
                    fresh = Some(self.peers.controller.producer_id().await?)
                }
                InitOutcome::Abort(plan) => {
                    self.persist().await?;
                    let code = self.finish(plan).await;
                    if code != ErrorCode::None {
                        return Err(code);
                    }
                }
                InitOutcome::Error(code) => return Err(code),
            }
        }
        Err(ErrorCode::ConcurrentTransactions)
    }

    /// Writes the markers and settles the groups of a prepared transaction, then records
    /// it complete. Returns the code to answer EndTxn with.
    async fn finish(self: &Rc<Self>, plan: EndPlan) -> ErrorCode {
        // The transaction ended: its timeout leaves the purgatory.
        self.disarm_timeout(&plan.transactional_id);
        let marker = Marker {
            producer_id: plan.producer_id,
            producer_epoch: plan.producer_epoch,
            outcome: plan.outcome,
            coordinator_epoch: 0,
        };
        let partitions: Vec<TopicPartition> = plan
            .partitions
            .iter()
            .map(|(topic, partition)| TopicPartition::new(topic.as_str().into(), *partition))
            .collect();
        let groups = plan.groups.iter().map(|group| {
            let owner = self.peers.groups.owner(group);
            let offsets = plan.offsets.get(group).cloned().unwrap_or_default();
            let request = GroupRequest::TxnEnd {
                group_id: group.clone(),
                producer_id: plan.producer_id,
                outcome: plan.outcome,
                offsets: offsets
                    .into_iter()
                    .map(|(topic, partition, o)| o.into_commit(topic, partition))
                    .collect(),
            };
            self.peers.groups.call(owner, request)
        });
        futures::join!(
            self.write_markers(partitions, marker),
            join_all(groups),
            self.write_group_markers(&plan.groups, marker)
        );
        self.state.borrow_mut().complete(now_ms(), &plan);
        self.persist().await.err().unwrap_or(ErrorCode::None)
    }

    /// Writes `marker` to every partition, each at its leader: on this node through the
    /// owning shard, on another as WriteTxnMarkers to that node. Kafka's coordinator retries
    /// a marker until it is written, and so does this, in rounds (back-off from
    /// `TXN_MARKER_RETRY_MS_MIN` to `_MAX`), looking each partition's leader up again every
    /// round: a partition without a leader, or whose leader moved or is unreachable, waits
    /// for the metadata to move on. Only a partition that is gone (its topic deleted) or a
    /// marker refused for good (a newer producer epoch there) is given up, with a warning.
    async fn write_markers(&self, mut pending: Vec<TopicPartition>, marker: Marker) {
        let me = self.home.config.node_id;
        let mut retry_ms = TXN_MARKER_RETRY_MS_MIN;
        let mut round = 0u32;
        while !pending.is_empty() {
            let mut local: BTreeMap<ShardId, Vec<(TopicPartition, Marker)>> = BTreeMap::new();
            let mut remote: BTreeMap<NodeId, Vec<TopicPartition>> = BTreeMap::new();
            let mut offsets_local = Vec::new();
            let mut waiting = Vec::new();
            {
                let catalog = self.home.catalog.borrow();
                for tp in pending.drain(..) {
                    let Some(meta) = catalog.get(&tp.topic) else { continue };
                    if !(0..meta.partitions).contains(&tp.partition) {
                        continue;
                    }
                    match meta.leader(tp.partition) {
                        // A partition of `__consumer_offsets` led here: its group coordinator
                        // writes the marker and settles its groups' offsets.
                        Some(leader) if leader == me && &*tp.topic == OFFSETS_TOPIC => {
                            offsets_local.push(tp)
                        }
                        None => local.entry(self.home.owner(&tp)).or_default().push((tp, marker)),
                        Some(leader) if leader == me => {
                            local.entry(self.home.owner(&tp)).or_default().push((tp, marker))
                        }
                        Some(NodeId::NONE) => waiting.push(tp),
                        Some(leader) => remote.entry(leader).or_default().push(tp),
                    }
                }
            }
            let partitions = &self.peers.partitions;
            let writes = local.into_iter().map(|(owner, markers)| async move {
                match partitions.call(owner, PartitionRequest::WriteMarkers { markers }).await {
                    Some(PartitionResponse::Markers(codes)) => codes,
                    _ => Vec::new(),
                }
            });
            let sends = remote.into_iter().map(|(node, tps)| self.send_markers(node, tps, marker));
            let settles = offsets_local.into_iter().map(|tp| self.offsets_marker(tp, marker));
            let (written, sent, settled) =
                futures::join!(join_all(writes), join_all(sends), join_all(settles));
            let written = written.into_iter().flatten().chain(sent.into_iter().flatten());
            for (tp, code) in written.chain(settled) {
                match code {
                    ErrorCode::None => {}
                    code if marker_retriable(code) => pending.push(tp),
                    code => {
                        let producer_id = marker.producer_id;
                        tracing::warn!(%tp, code = code.code(), %producer_id, "marker refused");
                    }
                }
            }
            pending.extend(waiting);
            if pending.is_empty() {
                break;
            }
            round += 1;
            if round % 10 == 1 {
                let producer_id = marker.producer_id;
                let first = &pending[0];
                tracing::warn!(
                    partitions = pending.len(),
                    %first,
                    %producer_id,
                    round,
                    "transaction markers not written yet; retrying"
                );
            }
            glommio::timer::sleep(Duration::from_millis(retry_ms)).await;
            retry_ms = (retry_ms * 2).min(TXN_MARKER_RETRY_MS_MAX);
        }
    }

    /// Single node: writes `marker` to the offsets log of each shard that coordinates one of
    /// `groups` (a transaction's AddOffsetsToTxn groups), whose coordinator then settles the
    /// producer's pending offsets there (a cluster's partitions of `__consumer_offsets` get
    /// theirs in `write_markers`). A refused write is retried as those are, until written.
    async fn write_group_markers(&self, groups: &[String], marker: Marker) {
        if self.clustered {
            return;
        }
        let mut pending: BTreeSet<ShardId> =
            groups.iter().map(|group| self.peers.groups.owner(group)).collect();
        let mut retry_ms = TXN_MARKER_RETRY_MS_MIN;
        while !pending.is_empty() {
            let owners: Vec<ShardId> = pending.iter().copied().collect();
            let sends = owners.into_iter().map(|owner| async move {
                let request = GroupRequest::TxnMarker {
                    partition: owner.index() as i32,
                    producer_id: marker.producer_id,
                    producer_epoch: marker.producer_epoch,
                    outcome: marker.outcome,
                };
                // Settled: written, or the mesh is closed (shutting down; as `write_markers`
                // gives a shard up then).
                let settled = !matches!(
                    self.peers.groups.call(owner, request).await,
                    Some(GroupResponse::Marker(code)) if code != ErrorCode::None
                );
                (owner, settled)
            });
            for (owner, settled) in join_all(sends).await {
                if settled {
                    pending.remove(&owner);
                }
            }
            if pending.is_empty() {
                break;
            }
            let producer_id = marker.producer_id;
            tracing::warn!(shards = pending.len(), %producer_id, "offsets markers not written yet");
            glommio::timer::sleep(Duration::from_millis(retry_ms)).await;
            retry_ms = (retry_ms * 2).min(TXN_MARKER_RETRY_MS_MAX);
        }
    }

    /// The marker of a partition of `__consumer_offsets` this node leads, written by the
    /// group coordinator of its shard; NOT_LEADER_OR_FOLLOWER (retried) when that shard
    /// cannot be asked.
    async fn offsets_marker(
        &self,
        tp: TopicPartition,
        marker: Marker,
    ) -> (TopicPartition, ErrorCode) {
        let owner = self.home.owner(&tp);
        let request = GroupRequest::TxnMarker {
            partition: tp.partition,
            producer_id: marker.producer_id,
            producer_epoch: marker.producer_epoch,
            outcome: marker.outcome,
        };
        let code = match self.peers.groups.call(owner, request).await {
            Some(GroupResponse::Marker(code)) => code,
            _ => ErrorCode::NotLeaderOrFollower,
        };
        (tp, code)
    }

    /// One WriteTxnMarkers to `node` for `partitions`: each partition's code, or
    /// NETWORK_EXCEPTION for all of them when the node could not be asked.
    async fn send_markers(
        &self,
        node: NodeId,
        partitions: Vec<TopicPartition>,
        marker: Marker,
    ) -> Vec<(TopicPartition, ErrorCode)> {
        let mut request = WriteTxnMarkersRequest::default();
        let mut written = WritableTxnMarker::default();
        written.producer_id = marker.producer_id.0.into();
        written.producer_epoch = marker.producer_epoch.0;
        written.transaction_result = marker.outcome == TxnOutcome::Commit;
        written.coordinator_epoch = marker.coordinator_epoch;
        for tp in &partitions {
            let name = &*tp.topic;
            if written.topics.last().is_none_or(|t| t.name.0.as_str() != name) {
                let mut topic = WritableTxnMarkerTopic::default();
                topic.name = TopicName(StrBytes::from_string(name.to_string()));
                written.topics.push(topic);
            }
            if let Some(topic) = written.topics.last_mut() {
                topic.partition_indexes.push(tp.partition);
            }
        }
        request.markers.push(written);
        let client_id = format!("spate-txn-coordinator-{}", self.home.config.node_id.0);
        let timeout = Duration::from_millis(TXN_MARKER_REQUEST_TIMEOUT_MS);
        let answered: std::io::Result<WriteTxnMarkersResponse> = async {
            let connect_timeout = Duration::from_millis(TXN_MARKER_RETRY_MS_MAX);
            let mut stream =
                broker_client::connect(&self.peers.cluster, node, connect_timeout).await?;
            let version = 1;
            let key = ApiKey::WriteTxnMarkers;
            broker_client::exchange(&mut stream, key, version, 1, client_id, &request, timeout)
                .await
        }
        .await;
        let response = match answered {
            Ok(response) => response,
            Err(e) => {
                tracing::debug!(%node, "WriteTxnMarkers failed: {e}");
                return partitions
                    .into_iter()
                    .map(|tp| (tp, ErrorCode::NetworkException))
                    .collect();
            }
        };
        let mut codes = Vec::with_capacity(partitions.len());
        for result in response.markers {
            for topic in result.topics {
                let name: std::sync::Arc<str> = topic.name.0.as_str().into();
                for p in topic.partitions {
                    let tp = TopicPartition::new(name.clone(), p.partition_index);
                    let code =
                        ErrorCode::from_code(p.error_code).unwrap_or(ErrorCode::UnknownServerError);
                    codes.push((tp, code));
                }
            }
        }
        // A partition the answer left out is asked for again.
        for tp in partitions {
            if !codes.iter().any(|(answered, _)| *answered == tp) {
                codes.push((tp, ErrorCode::NetworkException));
            }
        }
        codes
    }

    /// Puts the timeout of `transactional_id`'s ongoing transaction in the purgatory, once
    /// per transaction.
    fn arm_timeout(self: &Rc<Self>, transactional_id: &str) {
        let (start_ms, deadline) = {
            let state = self.state.borrow();
            let Some(deadline) = state.timeout_deadline(transactional_id) else { return };
            let Some(meta) = state.get(transactional_id) else { return };
            (meta.start_ms, deadline)
        };
        if self.armed.borrow().get(transactional_id) == Some(&start_ms) {
            return;
        }
        let id: Arc<str> = transactional_id.into();
        self.armed.borrow_mut().insert(id.clone(), start_ms);
        let remaining = Duration::from_millis(deadline.saturating_sub(now_ms()).max(0) as u64);
        let wait = self.home.delayed.wait([Key::Transaction(id.clone())], remaining);
        let this = self.clone();
        glommio::spawn_local(async move {
            if wait.done.await.unwrap_or(true) {
                return; // The transaction ended in time.
            }
            if this.armed.borrow().get(&id) == Some(&start_ms) {
                this.armed.borrow_mut().remove(&id);
            }
            this.time_out(&id).await;
        })
        .detach();
    }

    /// The transaction of `transactional_id` ended: its timeout leaves the purgatory.
    fn disarm_timeout(&self, transactional_id: &str) {
        if self.armed.borrow_mut().remove(transactional_id).is_some() {
            let remote = self.home.delayed.notify(&Key::Transaction(transactional_id.into()));
            debug_assert!(remote.is_empty());
        }
    }

    /// Aborts the transaction of `transactional_id` if it is still the one past its timeout
    /// (the wheel's clock and the wall clock may disagree by a tick: then it waits again).
    async fn time_out(self: &Rc<Self>, transactional_id: &str) {
        let expired = self.state.borrow_mut().expire_one(now_ms(), transactional_id);
        let Some(plan) = expired else {
            self.arm_timeout(transactional_id);
            return;
        };
        if self.persist().await.is_err() {
            // The abort is decided in memory but not recorded; markers without the record
            // could not be finished after a restart. (The state machine does not roll a
            // refused transition back yet: the transaction stays PrepareAbort until restart.)
            tracing::warn!(%transactional_id, "cannot record the timeout abort");
            return;
        }
        tracing::info!(transactional_id = %plan.transactional_id,
            "aborting a transaction past its timeout");
        self.finish(plan).await;
    }

    /// Once the shard serves: finishes what a crash left prepared, arms the timeouts of the
    /// ongoing transactions, then expires unused transactional ids and compacts the log
    /// every `TXN_HOUSEKEEPING_MS`.
    pub fn start(self: &Rc<Self>) {
        let this = self.clone();
        glommio::spawn_local(async move {
            let unfinished = this.state.borrow().unfinished();
            for plan in unfinished {
                tracing::info!(transactional_id = %plan.transactional_id, outcome = ?plan.outcome,
                    "finishing a transaction prepared before the restart");
                this.finish(plan).await;
            }
            let ongoing: Vec<String> =
                this.state.borrow().all().map(|m| m.transactional_id.clone()).collect();
            for id in ongoing {
                this.arm_timeout(&id);
            }
            if this.clustered {
                glommio::spawn_local(this.clone().watch_roles()).detach();
            }
            let mut last_id_expiry = now_ms();
            loop {
                glommio::timer::sleep(Duration::from_millis(TXN_HOUSEKEEPING_MS)).await;
                let now = now_ms();
                if now - last_id_expiry >= this.id_expiration_check_ms() {
                    last_id_expiry = now;
                    this.expire_ids(now).await;
                }
                this.maybe_compact().await;
            }
        })
        .detach();
    }
}

/// Clustered: the partitions of `__transaction_state` (see the group coordinator's, which
/// this follows: Kafka's `TransactionStateManager` loads and unloads them the same way).
impl TxnCoordinator {
    /// The partition of `__transaction_state` that holds `transactional_id` (clustered).
    fn partition_of(&self, transactional_id: &str) -> i32 {
        coordinator_partition(transactional_id, CLUSTER_INTERNAL_TOPIC_PARTITIONS) as i32
    }

    /// Clustered: whether this coordinator serves `transactional_id` now: NOT_COORDINATOR
    /// when this node does not lead its partition (any more), COORDINATOR_LOAD_IN_PROGRESS
    /// while it replays it.
    fn serves(&self, transactional_id: &str) -> Result<(), ErrorCode> {
        if !self.clustered {
            return Ok(());
        }
        let partition = self.partition_of(transactional_id);
        let role = self.home.internal.get(TRANSACTION_TOPIC, partition).filter(|r| r.leads);
        let loaded = self.loaded.borrow().get(&partition).map(|loaded| loaded.led_since);
        match (role, loaded) {
            (Some(role), Some(since)) if role.led_since == since => Ok(()),
            (Some(_), _) => Err(ErrorCode::CoordinatorLoadInProgress),
            (None, _) => Err(ErrorCode::NotCoordinator),
        }
    }

    /// Reconciles on every change of roles (and every housekeeping period).
    async fn watch_roles(self: Rc<Self>) {
        loop {
            self.reconcile();
            let keys = [Key::InternalRoles(TRANSACTION_TOPIC)];
            let wait = self.home.delayed.wait(keys, Duration::from_millis(TXN_HOUSEKEEPING_MS));
            let _ = wait.done.await;
        }
    }

    /// Loads the partitions this node came to lead and forgets those it no longer leads (or
    /// lost and led again since they were loaded).
    fn reconcile(self: &Rc<Self>) {
        let led = self.home.internal.led(TRANSACTION_TOPIC);
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

    /// Replays the log of a partition this node now leads and serves its transactional
    /// ids; then, as after a restart, finishes the transactions it finds prepared (their
    /// markers again: harmless where written) and arms the timeouts of the ongoing ones.
    async fn load_partition(self: Rc<Self>, partition: i32, role: InternalRole) {
        let started = std::time::Instant::now();
        let read = internal_log::read_led_log(&role.log).await;
        self.loading.borrow_mut().remove(&partition);
        let current = self.home.internal.get(TRANSACTION_TOPIC, partition);
        if !current.is_some_and(|now| now.leads && now.led_since == role.led_since) {
            let remote = self.home.delayed.notify(&Key::InternalRoles(TRANSACTION_TOPIC));
            debug_assert!(remote.is_empty());
            return;
        }
        let tp = TopicPartition::new(TRANSACTION_TOPIC.into(), partition);
        let batches = match read {
            Ok(batches) => batches,
            Err(e) => {
                tracing::warn!(%tp, "cannot read the partition's log to load its ids: {e}");
                return;
            }
        };
        let records = internal_log::decode_records(&tp, &batches, super::records::decode);
        let owned = |id: &str| self.partition_of(id) == partition;
        let count = {
            let mut state = self.state.borrow_mut();
            let mut count = 0;
            for record in records.into_iter().filter(|r| owned(r.transactional_id())) {
                state.replay(record);
                count += 1;
            }
            count
        };
        let compactor = Compactor::new(TRANSACTION_TOPIC, self.config.log_segment_bytes);
        compactor.loaded(&role.log);
        let loaded = LoadedPartition { log: role.log, led_since: role.led_since, compactor };
        self.loaded.borrow_mut().insert(partition, loaded);
        let (unfinished, ongoing): (Vec<EndPlan>, Vec<String>) = {
            let state = self.state.borrow();
            let unfinished = state.unfinished().into_iter();
            let ids = state.all().map(|m| m.transactional_id.clone());
            (
                unfinished.filter(|plan| owned(&plan.transactional_id)).collect(),
                ids.filter(|id| owned(id)).collect(),
            )
        };
        tracing::info!(
            %tp,
            leader_epoch = role.leader_epoch.0,
            records = count,
            transactional_ids = ongoing.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "loaded the transactional ids of a partition this node now leads"
        );
        for id in ongoing {
            self.arm_timeout(&id);
        }
        for plan in unfinished {
            tracing::info!(transactional_id = %plan.transactional_id, outcome = ?plan.outcome,
                "finishing a transaction its previous coordinator prepared");
            self.finish(plan).await;
        }
    }

    /// Forgets the transactional ids of a partition this node no longer leads; their
    /// timeouts leave the purgatory (the new coordinator arms them).
    fn unload_partition(&self, partition: i32) {
        self.loaded.borrow_mut().remove(&partition);
        let gone = self.state.borrow_mut().unload(|id| self.partition_of(id) == partition);
        for id in &gone {
            self.disarm_timeout(id);
        }
        let tp = TopicPartition::new(TRANSACTION_TOPIC.into(), partition);
        tracing::info!(%tp, ids = gone.len(), "unloaded the transactional ids of a partition");
    }

    /// Appends records to their partitions (a request's are of one transactional id, so of
    /// one partition), each once replicated (`internal_log::Led::append`). The base offset
    /// of the first partition's append.
    async fn append_partitions(&self, records: &[TxnRecord]) -> Result<Option<Offset>, ErrorCode> {
        let mut by_partition: BTreeMap<i32, Vec<&TxnRecord>> = BTreeMap::new();
        for record in records {
            let partition = self.partition_of(record.transactional_id());
            by_partition.entry(partition).or_default().push(record);
        }
        let mut first = None;
        for (partition, records) in by_partition {
            let loaded = self.loaded.borrow().get(&partition).map(|l| (l.log.clone(), l.led_since));
            let Some((log, led_since)) = loaded else { return Err(ErrorCode::NotCoordinator) };
            let encoded: Vec<_> = records.into_iter().map(super::records::encode).collect();
            let batch_bytes_max =
                INTERNAL_BATCH_BYTES_MAX.min(self.config.log_segment_bytes as usize / 4);
            let batches = internal_log::encode_batches(&encoded, now_ms(), batch_bytes_max);
            let tp = TopicPartition::new(TRANSACTION_TOPIC.into(), partition);
            let led =
                internal_log::Led { roles: &self.home.internal, tp: &tp, log: &log, led_since };
            let queued = self.peers.partitions.wake_followers_when_queued(&tp);
            let base = led.append(batches, queued).await?;
            first = first.or(Some(base));
        }
        Ok(first)
    }

    /// Compacts each loaded partition that outgrew its threshold: a snapshot of its
    /// transactional ids, then the whole segments before it go (the followers follow the
    /// leader's log start).
    async fn maybe_compact_partitions(&self) {
        let partitions: Vec<i32> = self.loaded.borrow().keys().copied().collect();
        for partition in partitions {
            let due = {
                let loaded = self.loaded.borrow();
                let Some(loaded) = loaded.get(&partition) else { continue };
                loaded.compactor.begin(&loaded.log).map(|run| (run, loaded.log.clone()))
            };
            let Some((run, log)) = due else { continue };
            let owned = |id: &str| self.partition_of(id) == partition;
            let snapshot = self.state.borrow().snapshot_of(owned);
            let outcome = self.append(&snapshot).await;
            let loaded = self.loaded.borrow();
            let Some(loaded) = loaded.get(&partition) else { continue };
            match outcome {
                Ok(base) => loaded.compactor.finish(&log, self.shard, base, run),
                Err(_) => loaded.compactor.abandon(run),
            }
        }
    }
}

/// Whether a marker refused with `code` is written again (Kafka's
/// `TransactionMarkerRequestCompletionHandler` retries these; anything else is fatal there).
fn marker_retriable(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::UnknownTopicOrPartition
            | ErrorCode::NotLeaderOrFollower
            | ErrorCode::NotEnoughReplicas
            | ErrorCode::NotEnoughReplicasAfterAppend
            | ErrorCode::RequestTimedOut
            | ErrorCode::KafkaStorageError
            | ErrorCode::NetworkException
            | ErrorCode::UnknownServerError
    )
}
