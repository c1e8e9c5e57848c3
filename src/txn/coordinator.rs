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
//! `TXN_TIMEOUT_CHECK_MS` at a time and aborts transactions past their timeout.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::join_all;

use crate::config::Config;
use crate::constants::TXN_TIMEOUT_CHECK_MS;
use crate::model::records::{self, RecordIn};
use crate::model::topic::{Durability, TimestampType, TopicConfig};
use crate::model::{now_ms, ShardId, TopicPartition};
use crate::protocol::errors;
use crate::shard::mesh::{ShardRequest, ShardResponse};
use crate::shard::table::shard_for_key;
use crate::shard::{Shard, CONTROLLER};
use crate::storage::log::{self, Log, Marker};
use crate::txn::state::{
    EndOutcome, EndPlan, InitOutcome, Producer, Transactions, TxnMeta, TxnOffset,
};

/// Kafka's name for the transaction log; Spate keeps one partition per shard.
pub const TRANSACTION_TOPIC: &str = "__transaction_state";

type LogRef = Rc<RefCell<Log>>;

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
    state: RefCell<Transactions>,
    log: RefCell<Option<LogRef>>,
}

impl TxnCoordinator {
    pub fn new(shard: ShardId, config: &Config) -> TxnCoordinator {
        TxnCoordinator {
            shard,
            shards: config.cores,
            data_dir: config.data_dir.clone(),
            durability: config.topic_defaults.durability,
            state: RefCell::new(Transactions::new()),
            log: RefCell::new(None),
        }
    }

    /// The shard that owns `transactional_id`.
    pub fn owner(&self, transactional_id: &str) -> ShardId {
        shard_for_key(transactional_id, self.shards)
    }

    /// Opens and replays this shard's transaction log. Must finish before the shard serves.
    pub async fn load(&self) -> Result<usize, crate::storage::Error> {
        let tp = TopicPartition::new(TRANSACTION_TOPIC.into(), self.shard.0 as i32);
        let config = TopicConfig {
            segment_bytes: 64 << 20,
            segment_ms: i64::MAX,
            retention_ms: -1,
            retention_bytes: -1,
            max_message_bytes: u32::MAX,
            timestamp_type: TimestampType::CreateTime,
            durability: self.durability,
        };
        let (opened, _) = Log::open(&self.data_dir, tp, config).await?;
        *self.log.borrow_mut() = Some(Rc::new(RefCell::new(opened)));
        let dir = self.data_dir.join(format!("{TRANSACTION_TOPIC}-{}", self.shard.0));
        let batches = glommio::executor()
            .spawn_blocking(move || crate::group::coordinator::read_batches(&dir))
            .await?;
        let mut replayed = 0;
        let mut state = self.state.borrow_mut();
        for bytes in &batches {
            let Ok(views) = records::parse_batch(bytes) else { continue };
            for view in views {
                let decoded =
                    view.key.zip(view.value).and_then(|(k, v)| super::records::decode(k, v));
                match decoded {
                    Some(meta) if self.owner(&meta.transactional_id) == self.shard => {
                        state.replay(meta);
                        replayed += 1;
                    }
                    Some(_) => {}
                    None => tracing::warn!(offset = view.offset, "skipping a transaction record"),
                }
            }
        }
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
        let metas = self.state.borrow_mut().take_records();
        if metas.is_empty() {
            return Ok(());
        }
        let Some(log) = self.log.borrow().clone() else {
            return Err(errors::COORDINATOR_NOT_AVAILABLE);
        };
        let encoded: Vec<(Vec<u8>, Vec<u8>)> = metas
            .iter()
            .map(|m| {
                (super::records::encode_key(&m.transactional_id), super::records::encode_value(m))
            })
            .collect();
        let ins: Vec<RecordIn<'_>> =
            encoded.iter().map(|(k, v)| RecordIn { key: Some(k), value: Some(v) }).collect();
        let batch = Bytes::from(records::build_batch(now_ms(), &ins));
        log::append(&log, vec![batch]).await.map(|_| ()).map_err(|e| {
            tracing::warn!(shard = self.shard.0, "transaction log append failed: {e}");
            errors::COORDINATOR_NOT_AVAILABLE
        })
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
    /// transactions every `TXN_TIMEOUT_CHECK_MS`, waiting on the shard's timing wheel.
    pub fn start_txn_coordinator(self: &Rc<Self>) {
        let shard = self.clone();
        glommio::spawn_local(async move {
            let unfinished = shard.txns.state.borrow().unfinished();
            for plan in unfinished {
                tracing::info!(transactional_id = %plan.transactional_id, commit = plan.commit,
                    "finishing a transaction prepared before the restart");
                shard.finish_txn(plan).await;
            }
            loop {
                let waiter = shard.new_waiter_id();
                let _ =
                    shard.delayed.wait(waiter, Duration::from_millis(TXN_TIMEOUT_CHECK_MS)).await;
                let expired = shard.txns.state.borrow_mut().expire(now_ms());
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
