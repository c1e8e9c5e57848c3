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
//!    group's owner settles the transaction's pending offsets (commit: they become the
//!    group's committed offsets; abort: dropped);
//! 3. Complete* is written, and EndTxn answers.
//!
//! A crash between 1 and 3 leaves Prepare* in the log; `start` repeats 2 and 3. Markers are
//! idempotent enough for that: a second marker for a producer with no open transaction in
//! a partition changes nothing but adds a control batch.
//!
//! Time: one task per shard waits on the shard's timing wheel (`Delayed`) for
//! `TXN_TIMEOUT_CHECK_MS` at a time and aborts transactions past their timeout. Every
//! `TXN_ID_EXPIRATION_CHECK_MS` it also drops the transactional ids unused for
//! transactional.id.expiration.ms (a tombstone each).
//!
//! The log is one of the shard's internal logs (`shard::internal_log`): compacted by a
//! snapshot of every transactional id's metadata when it grows, and migrated between shards
//! when `--cores` changes, so an open transaction is finished by its new owner.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use futures::future::join_all;

use crate::config::Config;
use crate::constants::{
    INTERNAL_BATCH_BYTES_MAX, TXN_ID_EXPIRATION_CHECK_MS, TXN_TIMEOUT_CHECK_MS,
};
use crate::model::topic::Durability;
use crate::model::{now_ms, ShardId, TopicPartition};
use crate::protocol::errors;
pub use crate::shard::internal_log::TRANSACTION_TOPIC;
use crate::shard::internal_log::{self, Compactor, LogRef, Replayed};
use crate::shard::mesh::{ShardRequest, ShardResponse};
use crate::shard::table::shard_for_key;
use crate::shard::{Shard, CONTROLLER};
use crate::storage::log::{self, Marker};
use crate::txn::state::{
    EndOutcome, EndPlan, InitOutcome, Producer, Transactions, TxnConfig, TxnMeta, TxnOffset,
    TxnRecord,
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
    /// TxnOffsetCommit: these offsets join the producer's transaction.
    CommitOffsets {
        transactional_id: String,
        producer: Producer,
        group_id: String,
        offsets: Vec<(String, i32, TxnOffset)>,
    },
    End {
        transactional_id: String,
        producer: Producer,
        commit: bool,
    },
    Describe {
        transactional_ids: Vec<String>,
    },
    List,
}

#[derive(Debug)]
pub enum TxnResponse {
    Init(Result<Producer, i16>),
    Code(i16),
    Described(Vec<(String, Option<TxnMeta>)>),
    Listed(Vec<TxnMeta>),
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
}

impl TxnCoordinator {
    pub fn new(shard: ShardId, config: &Config) -> TxnCoordinator {
        TxnCoordinator {
            shard,
            shards: config.cores,
            data_dir: config.data_dir.clone(),
            durability: config.topic_defaults.durability,
            config: config.txns.clone(),
            state: RefCell::new(Transactions::new()),
            log: RefCell::new(None),
            compactor: Compactor::new(TRANSACTION_TOPIC, config.txns.log_segment_bytes),
        }
    }

    /// The shard that owns `transactional_id`.
    pub fn owner(&self, transactional_id: &str) -> ShardId {
        shard_for_key(transactional_id, self.shards)
    }

    /// Opens and replays this shard's transaction log (every log when the core count
    /// changed). Must finish before the shard serves.
    pub async fn load(&self) -> Result<Replayed, crate::storage::Error> {
        let config = internal_log::log_config(self.config.log_segment_bytes, self.durability);
        let log = internal_log::open(&self.data_dir, TRANSACTION_TOPIC, self.shard, config).await?;
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

    pub async fn close(&self) {
        let log = self.log.borrow().clone();
        if let Some(log) = log {
            if let Err(e) = log::close(&log).await {
                tracing::warn!(shard = self.shard.0, "closing the transaction log failed: {e}");
            }
        }
    }

    pub fn transaction_count(&self) -> usize {
        self.state.borrow().len()
    }

    /// Writes what the state machine queued; Err when the log cannot take it.
    async fn persist(&self) -> Result<(), i16> {
        let records = self.state.borrow_mut().take_records();
        self.append(&records).await.map(|_| ())
    }

    /// Appends `records` in order; the base offset of the first (None: nothing to write).
    async fn append(&self, records: &[TxnRecord]) -> Result<Option<i64>, i16> {
        if records.is_empty() {
            return Ok(None);
        }
        let Some(log) = self.log.borrow().clone() else {
            return Err(errors::COORDINATOR_NOT_AVAILABLE);
        };
        let encoded: Vec<_> = records.iter().map(super::records::encode).collect();
        let batch_bytes_max =
            INTERNAL_BATCH_BYTES_MAX.min(self.config.log_segment_bytes as usize / 4);
        let batches = internal_log::encode_batches(&encoded, now_ms(), batch_bytes_max);
        match log::append(&log, batches).await {
            Ok(info) => Ok(Some(info.base_offset)),
            Err(e) => {
                tracing::warn!(shard = self.shard.0, "transaction log append failed: {e}");
                Err(errors::COORDINATOR_NOT_AVAILABLE)
            }
        }
    }

    /// How often to look for expired transactional ids: a tenth of the expiration, between
    /// the timeout check and `TXN_ID_EXPIRATION_CHECK_MS`.
    fn id_expiration_check_ms(&self) -> i64 {
        (self.config.id_expiration_ms / 10)
            .clamp(TXN_TIMEOUT_CHECK_MS as i64, TXN_ID_EXPIRATION_CHECK_MS)
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

impl Shard {
    /// Serves a transaction request on the shard that owns its transactional id.
    pub(crate) async fn handle_txn(self: &Rc<Self>, request: TxnRequest) -> TxnResponse {
        let txns = self.txns.clone();
        match request {
            TxnRequest::Init { transactional_id, timeout_ms, producer } => {
                TxnResponse::Init(self.txn_init(&transactional_id, timeout_ms, producer).await)
            }
            TxnRequest::Add { transactional_id, producer, partitions, groups } => {
                let added = txns.state.borrow_mut().add(
                    now_ms(),
                    &transactional_id,
                    producer,
                    &partitions,
                    &groups,
                );
                let code = match added {
                    Ok(_) => txns.persist().await.err().unwrap_or(errors::NONE),
                    Err(code) => code,
                };
                TxnResponse::Code(code)
            }
            TxnRequest::CommitOffsets { transactional_id, producer, group_id, offsets } => {
                let committed = txns.state.borrow_mut().commit_offsets(
                    now_ms(),
                    &transactional_id,
                    producer,
                    &group_id,
                    offsets,
                );
                let code = match committed {
                    Ok(()) => txns.persist().await.err().unwrap_or(errors::NONE),
                    Err(code) => code,
                };
                TxnResponse::Code(code)
            }
            TxnRequest::End { transactional_id, producer, commit } => {
                let outcome =
                    txns.state.borrow_mut().end(now_ms(), &transactional_id, producer, commit);
                let code = match outcome {
                    EndOutcome::Done => errors::NONE,
                    EndOutcome::Error(code) => code,
                    EndOutcome::Markers(plan) => match txns.persist().await {
                        Ok(()) => self.finish_txn(plan).await,
                        Err(code) => code,
                    },
                };
                TxnResponse::Code(code)
            }
            TxnRequest::Describe { transactional_ids } => {
                let state = txns.state.borrow();
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
            TxnRequest::List => TxnResponse::Listed(txns.state.borrow().all().cloned().collect()),
        }
    }

    async fn txn_init(
        self: &Rc<Self>,
        transactional_id: &str,
        timeout_ms: i32,
        producer: Producer,
    ) -> Result<Producer, i16> {
        let txns = self.txns.clone();
        let mut fresh = None;
        // At most: one abort of an open transaction, one producer id allocation.
        for _ in 0..4 {
            let outcome = txns.state.borrow_mut().init_producer_id(
                now_ms(),
                transactional_id,
                timeout_ms,
                producer,
                fresh,
            );
            match outcome {
                InitOutcome::Ready { producer_id, producer_epoch } => {
                    txns.persist().await?;
                    return Ok(Producer { producer_id, producer_epoch });
                }
                InitOutcome::NeedProducerId => {
                    match self.call(CONTROLLER, ShardRequest::AllocateProducerId).await {
                        ShardResponse::ProducerId(Ok(id)) => fresh = Some(id),
                        ShardResponse::ProducerId(Err(code)) => return Err(code),
                        _ => return Err(errors::COORDINATOR_NOT_AVAILABLE),
                    }
                }
                InitOutcome::Abort(plan) => {
                    txns.persist().await?;
                    let code = self.finish_txn(plan).await;
                    if code != errors::NONE {
                        return Err(code);
                    }
                }
                InitOutcome::Error(code) => return Err(code),
            }
        }
        Err(errors::CONCURRENT_TRANSACTIONS)
    }

    /// Writes the markers and settles the groups of a prepared transaction, then records
    /// it complete. Returns the code to answer EndTxn with.
    pub(crate) async fn finish_txn(self: &Rc<Self>, plan: EndPlan) -> i16 {
        let marker = Marker {
            producer_id: plan.producer_id,
            producer_epoch: plan.producer_epoch,
            commit: plan.commit,
            coordinator_epoch: 0,
        };
        let mut by_shard: BTreeMap<ShardId, Vec<(TopicPartition, Marker)>> = BTreeMap::new();
        for (topic, partition) in &plan.partitions {
            let tp = TopicPartition::new(topic.as_str().into(), *partition);
            by_shard.entry(self.owner(&tp)).or_default().push((tp, marker));
        }
        let writes = by_shard
            .into_iter()
            .map(|(owner, markers)| self.call(owner, ShardRequest::WriteMarkers { markers }));
        let groups = plan.groups.iter().map(|group| {
            let owner = self.groups.owner(group);
            let offsets = plan.offsets.get(group).cloned().unwrap_or_default();
            let request = crate::group::coordinator::GroupRequest::TxnEnd {
                group_id: group.clone(),
                producer_id: plan.producer_id,
                commit: plan.commit,
                offsets: offsets
                    .into_iter()
                    .map(|(topic, partition, o)| crate::group::state::CommitPartition {
                        topic,
                        partition,
                        offset: o.offset,
                        leader_epoch: o.leader_epoch,
                        metadata: Some(o.metadata),
                    })
                    .collect(),
            };
            self.call(owner, ShardRequest::Group(request))
        });
        let (written, _) = futures::join!(join_all(writes), join_all(groups));
        for response in written {
            if let ShardResponse::Markers(codes) = response {
                for (tp, code) in codes.into_iter().filter(|(_, c)| *c != errors::NONE) {
                    tracing::warn!(%tp, code, producer_id = plan.producer_id, "marker not written");
                }
            }
        }
        self.txns.state.borrow_mut().complete(now_ms(), &plan);
        self.txns.persist().await.err().unwrap_or(errors::NONE)
    }

    /// Once the shard serves: finishes what a crash left prepared, then aborts timed-out
    /// transactions every `TXN_TIMEOUT_CHECK_MS`, waiting on the shard's timing wheel, and
    /// expires unused transactional ids and compacts the log.
    pub fn start_txn_coordinator(self: &Rc<Self>) {
        let shard = self.clone();
        glommio::spawn_local(async move {
            let unfinished = shard.txns.state.borrow().unfinished();
            for plan in unfinished {
                tracing::info!(transactional_id = %plan.transactional_id, commit = plan.commit,
                    "finishing a transaction prepared before the restart");
                shard.finish_txn(plan).await;
            }
            let mut last_id_expiry = now_ms();
            loop {
                let waiter = shard.new_waiter_id();
                let _ =
                    shard.delayed.wait(waiter, Duration::from_millis(TXN_TIMEOUT_CHECK_MS)).await;
                let now = now_ms();
                if now - last_id_expiry >= shard.txns.id_expiration_check_ms() {
                    last_id_expiry = now;
                    shard.txns.expire_ids(now).await;
                }
                shard.txns.maybe_compact().await;
                let expired = shard.txns.state.borrow_mut().expire(now);
                if expired.is_empty() {
                    continue;
                }
                if shard.txns.persist().await.is_err() {
                    continue;
                }
                for plan in expired {
                    tracing::info!(transactional_id = %plan.transactional_id,
                        "aborting a transaction past its timeout");
                    let shard = shard.clone();
                    glommio::spawn_local(async move { shard.finish_txn(plan).await }).detach();
                }
            }
        })
        .detach();
    }

    /// On a partition's owner: appends the markers, one per partition.
    pub(crate) async fn write_markers(
        &self,
        markers: Vec<(TopicPartition, Marker)>,
    ) -> Vec<(TopicPartition, i16)> {
        let writes = markers.into_iter().map(|(tp, marker)| async move {
            let Some(log) = self.log_of(&tp) else {
                return (tp, errors::UNKNOWN_TOPIC_OR_PARTITION);
            };
            let code = match log::append_marker(&log, marker).await {
                Ok(_) => {
                    self.notify_partition(&tp).await;
                    errors::NONE
                }
                Err(crate::storage::Error::Producer(e)) => crate::shard::producers::error_code(e),
                Err(_) => errors::UNKNOWN_TOPIC_OR_PARTITION,
            };
            (tp, code)
        });
        join_all(writes).await
    }
}
