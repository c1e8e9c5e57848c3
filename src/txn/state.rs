//! The transaction coordinator as a pure state machine (Kafka's `TransactionCoordinator` and
//! `TransactionMetadata`, transaction version 1): no I/O, no clock; every call takes
//! `now_ms`, and every change of a transaction's metadata is queued as a record (`take_records`)
//! that the glue persists before it answers.
//!
//! ```text
//!                 AddPartitions/AddOffsets             EndTxn(commit)
//!   Empty ───────────────────────────────▶ Ongoing ─────────────────▶ PrepareCommit
//!     ▲  ▲                                   │  │  EndTxn(abort), timeout,     │ markers
//!     │  │ InitProducerId (epoch + 1)         │  │  InitProducerId (epoch + 1)  ▼ written
//!     │  └───────────── CompleteCommit ◀─────┼──┼──────────────────────── CompleteCommit
//!     │                 CompleteAbort  ◀─────┘  └────▶ PrepareAbort ───▶ CompleteAbort
//! ```
//!
//! While a transaction is Prepare*, its markers are being written: every request for it but
//! a retry of the same EndTxn gets CONCURRENT_TRANSACTIONS, which clients retry. A timeout or
//! an InitProducerId during Ongoing bumps the epoch first, so the old producer is fenced
//! (PRODUCER_FENCED) everywhere, then aborts.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::model::{ErrorCode, LeaderEpoch, Offset, ProducerEpoch, ProducerId, TxnOutcome};

/// Kafka's `transaction.max.timeout.ms` default.
pub const TRANSACTION_TIMEOUT_MS_MAX: i32 = 900_000;

pub use crate::model::settings::TxnConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnState {
    Empty,
    Ongoing,
    PrepareCommit,
    PrepareAbort,
    CompleteCommit,
    CompleteAbort,
}

impl TxnState {
    /// Kafka's status byte in the transaction log.
    pub fn code(self) -> i8 {
        match self {
            TxnState::Empty => 0,
            TxnState::Ongoing => 1,
            TxnState::PrepareCommit => 2,
            TxnState::PrepareAbort => 3,
            TxnState::CompleteCommit => 4,
            TxnState::CompleteAbort => 5,
        }
    }

    pub fn from_code(code: i8) -> Option<TxnState> {
        Some(match code {
            0 => TxnState::Empty,
            1 => TxnState::Ongoing,
            2 => TxnState::PrepareCommit,
            3 => TxnState::PrepareAbort,
            4 => TxnState::CompleteCommit,
            5 => TxnState::CompleteAbort,
            _ => return None,
        })
    }

    /// Where a transaction ending with `outcome` waits while its markers are written.
    pub fn prepared(outcome: TxnOutcome) -> TxnState {
        match outcome {
            TxnOutcome::Commit => TxnState::PrepareCommit,
            TxnOutcome::Abort => TxnState::PrepareAbort,
        }
    }

    /// Where it is once they are.
    pub fn completed(outcome: TxnOutcome) -> TxnState {
        match outcome {
            TxnOutcome::Commit => TxnState::CompleteCommit,
            TxnOutcome::Abort => TxnState::CompleteAbort,
        }
    }

    /// Kafka's names (DescribeTransactions, ListTransactions).
    pub fn name(self) -> &'static str {
        match self {
            TxnState::Empty => "Empty",
            TxnState::Ongoing => "Ongoing",
            TxnState::PrepareCommit => "PrepareCommit",
            TxnState::PrepareAbort => "PrepareAbort",
            TxnState::CompleteCommit => "CompleteCommit",
            TxnState::CompleteAbort => "CompleteAbort",
        }
    }
}

/// One transactional id's metadata: what the log records and what Describe shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnMeta {
    pub transactional_id: String,
    pub producer_id: ProducerId,
    pub producer_epoch: ProducerEpoch,
    pub timeout_ms: i32,
    pub state: TxnState,
    /// (topic, partition) in the transaction.
    pub partitions: BTreeSet<(String, i32)>,
    /// Groups whose offsets are in the transaction (AddOffsetsToTxn).
    pub groups: BTreeSet<String>,
    /// TxnOffsetCommit's offsets, by (group, topic, partition): kept here, in the transaction
    /// log, so that a crash cannot separate them from the transaction's outcome; they go to
    /// the groups' coordinators when the transaction commits.
    pub offsets: BTreeMap<(String, String, i32), TxnOffset>,
    pub start_ms: i64,
    pub update_ms: i64,
}

/// One offset of TxnOffsetCommit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnOffset {
    pub offset: Offset,
    pub leader_epoch: LeaderEpoch,
    pub metadata: String,
}

impl TxnOffset {
    /// The offset as the group coordinator commits it, for `topic`'s `partition`.
    pub fn into_commit(
        self,
        topic: String,
        partition: i32,
    ) -> crate::group::state::CommitPartition {
        crate::group::state::CommitPartition {
            topic,
            partition,
            offset: self.offset,
            leader_epoch: self.leader_epoch,
            metadata: Some(self.metadata),
        }
    }
}

/// What the glue must do to finish a transaction: write a marker to every partition and
/// settle every group's pending offsets, then call `complete`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndPlan {
    pub transactional_id: String,
    pub producer_id: ProducerId,
    pub producer_epoch: ProducerEpoch,
    pub outcome: TxnOutcome,
    pub partitions: Vec<(String, i32)>,
    pub groups: Vec<String>,
    /// The offsets to commit per group (commit only; empty for an abort).
    pub offsets: BTreeMap<String, Vec<(String, i32, TxnOffset)>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InitOutcome {
    /// Answer with this producer id and epoch.
    Ready {
        producer_id: ProducerId,
        producer_epoch: ProducerEpoch,
    },
    /// Call again with a fresh producer id.
    NeedProducerId,
    /// An open transaction was aborted (epoch bumped): finish it, then answer
    /// CONCURRENT_TRANSACTIONS (the client retries and gets the next epoch).
    Abort(EndPlan),
    Error(ErrorCode),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndOutcome {
    /// Already done (a retried EndTxn): answer NONE.
    Done,
    /// Write the markers, `complete`, then answer NONE.
    Markers(EndPlan),
    Error(ErrorCode),
}

/// Who is asking: the producer id and epoch a request carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Producer {
    pub producer_id: ProducerId,
    pub producer_epoch: ProducerEpoch,
}

/// A change for the transaction log: a transactional id's metadata, or its removal (a
/// tombstone: the id expired).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnRecord {
    Put(TxnMeta),
    Remove(String),
}

impl TxnRecord {
    pub fn transactional_id(&self) -> &str {
        match self {
            TxnRecord::Put(meta) => &meta.transactional_id,
            TxnRecord::Remove(id) => id,
        }
    }

    pub fn meta(&self) -> Option<&TxnMeta> {
        match self {
            TxnRecord::Put(meta) => Some(meta),
            TxnRecord::Remove(_) => None,
        }
    }
}

#[derive(Debug, Default)]
pub struct Transactions {
    txns: HashMap<String, TxnMeta>,
    records: Vec<TxnRecord>,
}

impl Transactions {
    pub fn new() -> Transactions {
        Transactions::default()
    }

    /// Records to persist, in the order the metadata changed.
    pub fn take_records(&mut self) -> Vec<TxnRecord> {
        std::mem::take(&mut self.records)
    }

    pub fn get(&self, transactional_id: &str) -> Option<&TxnMeta> {
        self.txns.get(transactional_id)
    }

    pub fn len(&self) -> usize {
        self.txns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.txns.is_empty()
    }

    pub fn all(&self) -> impl Iterator<Item = &TxnMeta> {
        self.txns.values()
    }

    /// InitProducerId with a transactional id. `producer` is the id and epoch the request
    /// carried (-1/-1 for a new producer; KIP-360 producers send their current ones).
    /// `fresh_producer_id` answers a previous `NeedProducerId`.
    pub fn init_producer_id(
        &mut self,
        now: i64,
        transactional_id: &str,
        timeout_ms: i32,
        producer: Producer,
        fresh_producer_id: Option<ProducerId>,
    ) -> InitOutcome {
        if timeout_ms <= 0 || timeout_ms > TRANSACTION_TIMEOUT_MS_MAX {
            return InitOutcome::Error(ErrorCode::InvalidTransactionTimeout);
        }
        let Some(meta) = self.txns.get_mut(transactional_id) else {
            let Some(producer_id) = fresh_producer_id else {
                return InitOutcome::NeedProducerId;
            };
            let meta = TxnMeta {
                transactional_id: transactional_id.to_string(),
                producer_id,
                producer_epoch: ProducerEpoch::FIRST,
                timeout_ms,
                state: TxnState::Empty,
                partitions: BTreeSet::new(),
                groups: BTreeSet::new(),
                offsets: BTreeMap::new(),
                start_ms: -1,
                update_ms: now,
            };
            self.records.push(TxnRecord::Put(meta.clone()));
            self.txns.insert(transactional_id.to_string(), meta);
            return InitOutcome::Ready { producer_id, producer_epoch: ProducerEpoch::FIRST };
        };
        if producer.producer_id.is_valid()
            && (producer.producer_id != meta.producer_id
                || producer.producer_epoch != meta.producer_epoch)
        {
            return InitOutcome::Error(ErrorCode::ProducerFenced);
        }
        match meta.state {
            TxnState::PrepareCommit | TxnState::PrepareAbort => {
                InitOutcome::Error(ErrorCode::ConcurrentTransactions)
            }
            TxnState::Ongoing => {
                // Fence the current producer, then abort what it left open.
                let Some(plan) = prepare_end(meta, now, TxnOutcome::Abort, Fencing::BumpEpoch)
                else {
                    return InitOutcome::NeedProducerId;
                };
                self.records.push(TxnRecord::Put(meta.clone()));
                InitOutcome::Abort(plan)
            }
            TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort => {
                if meta.producer_epoch.is_exhausted() {
                    // The epoch is exhausted: a new producer id starts at epoch 0.
                    let Some(producer_id) = fresh_producer_id else {
                        return InitOutcome::NeedProducerId;
                    };
                    meta.producer_id = producer_id;
                    meta.producer_epoch = ProducerEpoch::FIRST;
                } else {
                    meta.producer_epoch = meta.producer_epoch.bumped();
                }
                meta.timeout_ms = timeout_ms;
                meta.state = TxnState::Empty;
                meta.partitions.clear();
                meta.groups.clear();
                meta.offsets.clear();
                meta.start_ms = -1;
                meta.update_ms = now;
                self.records.push(TxnRecord::Put(meta.clone()));
                InitOutcome::Ready {
                    producer_id: meta.producer_id,
                    producer_epoch: meta.producer_epoch,
                }
            }
        }
    }

    /// AddPartitionsToTxn (`partitions`) and AddOffsetsToTxn (`groups`). Ok(true) when the
    /// metadata changed (the caller waits for its record before answering).
    pub fn add(
        &mut self,
        now: i64,
        transactional_id: &str,
        producer: Producer,
        partitions: &[(String, i32)],
        groups: &[String],
    ) -> Result<bool, ErrorCode> {
        let meta = self.owned(transactional_id, producer)?;
        match meta.state {
            TxnState::PrepareCommit | TxnState::PrepareAbort => {
                return Err(ErrorCode::ConcurrentTransactions)
            }
            TxnState::Ongoing => {
                let known = partitions.iter().all(|p| meta.partitions.contains(p))
                    && groups.iter().all(|g| meta.groups.contains(g));
                if known {
                    return Ok(false);
                }
            }
            TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort => {
                meta.state = TxnState::Ongoing;
                meta.start_ms = now;
                meta.partitions.clear();
                meta.groups.clear();
                meta.offsets.clear();
            }
        }
        meta.partitions.extend(partitions.iter().cloned());
        meta.groups.extend(groups.iter().cloned());
        meta.update_ms = now;
        let record = meta.clone();
        self.records.push(TxnRecord::Put(record));
        Ok(true)
    }

    /// Checks that `producer` may commit offsets in this transaction.
    pub fn check_ongoing(
        &self,
        transactional_id: &str,
        producer: Producer,
    ) -> Result<(), ErrorCode> {
        let meta = self.txns.get(transactional_id).ok_or(ErrorCode::InvalidProducerIdMapping)?;
        check_producer(meta, producer)?;
        if meta.state != TxnState::Ongoing {
            return Err(ErrorCode::InvalidTxnState);
        }
        Ok(())
    }

    /// The previous version's single-node TxnOffsetCommit: the offsets join the transaction
    /// (a later one for the same partition replaces an earlier one) and are committed with
    /// it. TxnOffsetCommit now goes to the group's coordinator; a transaction begun before
    /// the upgrade still delivers the offsets its record holds (`EndPlan::offsets`), which
    /// the tests below write this way.
    #[cfg(test)]
    pub fn commit_offsets(
        &mut self,
        now: i64,
        transactional_id: &str,
        producer: Producer,
        group_id: &str,
        offsets: Vec<(String, i32, TxnOffset)>,
    ) -> Result<(), ErrorCode> {
        self.check_ongoing(transactional_id, producer)?;
        let meta = self.owned(transactional_id, producer)?;
        meta.groups.insert(group_id.to_string());
        for (topic, partition, offset) in offsets {
            meta.offsets.insert((group_id.to_string(), topic, partition), offset);
        }
        meta.update_ms = now;
        let record = meta.clone();
        self.records.push(TxnRecord::Put(record));
        Ok(())
    }

    /// EndTxn.
    pub fn end(
        &mut self,
        now: i64,
        transactional_id: &str,
        producer: Producer,
        outcome: TxnOutcome,
    ) -> EndOutcome {
        let meta = match self.owned(transactional_id, producer) {
            Ok(meta) => meta,
            Err(code) => return EndOutcome::Error(code),
        };
        match (meta.state, outcome) {
            (TxnState::Ongoing, _) => match prepare_end(meta, now, outcome, Fencing::KeepEpoch) {
                Some(plan) => {
                    let record = meta.clone();
                    self.records.push(TxnRecord::Put(record));
                    EndOutcome::Markers(plan)
                }
                None => EndOutcome::Error(ErrorCode::InvalidTxnState),
            },
            (TxnState::CompleteCommit, TxnOutcome::Commit)
            | (TxnState::CompleteAbort, TxnOutcome::Abort) => EndOutcome::Done,
            (TxnState::PrepareCommit, TxnOutcome::Commit)
            | (TxnState::PrepareAbort, TxnOutcome::Abort) => {
                EndOutcome::Error(ErrorCode::ConcurrentTransactions)
            }
            _ => EndOutcome::Error(ErrorCode::InvalidTxnState),
        }
    }

    /// The markers of `plan` are written: the transaction is complete.
    pub fn complete(&mut self, now: i64, plan: &EndPlan) {
        let Some(meta) = self.txns.get_mut(&plan.transactional_id) else { return };
        if meta.state != TxnState::prepared(plan.outcome) || meta.producer_id != plan.producer_id {
            return;
        }
        meta.state = TxnState::completed(plan.outcome);
        meta.partitions.clear();
        meta.groups.clear();
        meta.offsets.clear();
        meta.update_ms = now;
        let record = meta.clone();
        self.records.push(TxnRecord::Put(record));
    }

    /// When the ongoing transaction of `transactional_id` times out (ms), or `None` if it
    /// has no ongoing transaction.
    pub fn timeout_deadline(&self, transactional_id: &str) -> Option<i64> {
        let meta = self.txns.get(transactional_id)?;
        let ongoing = meta.state == TxnState::Ongoing;
        ongoing.then(|| meta.start_ms + i64::from(meta.timeout_ms))
    }

    /// Times out the transaction of `transactional_id` if it is ongoing and past its timeout:
    /// its epoch is bumped (fencing the producer) and it moves to PrepareAbort. The caller
    /// writes the abort markers. `None` if there is nothing to time out (yet).
    pub fn expire_one(&mut self, now: i64, transactional_id: &str) -> Option<EndPlan> {
        if now < self.timeout_deadline(transactional_id)? {
            return None;
        }
        let meta = self.txns.get_mut(transactional_id)?;
        let plan = prepare_end(meta, now, TxnOutcome::Abort, Fencing::BumpEpoch)?;
        self.records.push(TxnRecord::Put(meta.clone()));
        Some(plan)
    }

    /// Every ongoing transaction past its timeout, as `expire_one` does each (in id order).
    #[cfg(test)]
    pub fn expire(&mut self, now: i64) -> Vec<EndPlan> {
        let mut ids: Vec<String> = self.txns.keys().cloned().collect();
        ids.sort();
        ids.iter().filter_map(|id| self.expire_one(now, id)).collect()
    }

    /// Transactions whose markers may not all be written (Prepare* after a restart).
    pub fn unfinished(&self) -> Vec<EndPlan> {
        let mut plans: Vec<EndPlan> = self
            .txns
            .values()
            .filter_map(|m| match m.state {
                TxnState::PrepareCommit => Some(plan_of(m, TxnOutcome::Commit)),
                TxnState::PrepareAbort => Some(plan_of(m, TxnOutcome::Abort)),
                _ => None,
            })
            .collect();
        plans.sort_by(|a, b| a.transactional_id.cmp(&b.transactional_id));
        plans
    }

    /// Removes the transactional ids unused for `expiration_ms` with no transaction open
    /// (Kafka's transactional.id.expiration.ms): a producer that comes back with one starts
    /// afresh. Queues a tombstone for each; returns how many went.
    pub fn expire_ids(&mut self, now: i64, expiration_ms: i64) -> usize {
        let mut gone: Vec<String> = self
            .txns
            .values()
            .filter(|m| {
                matches!(
                    m.state,
                    TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort
                ) && now.saturating_sub(m.update_ms) >= expiration_ms
            })
            .map(|m| m.transactional_id.clone())
            .collect();
        gone.sort();
        for id in &gone {
            self.txns.remove(id);
            self.records.push(TxnRecord::Remove(id.clone()));
        }
        gone.len()
    }

    /// Forgets the transactional ids `owned` names without writing anything: this
    /// coordinator no longer leads their partition of `__transaction_state` (Kafka's
    /// `removeTransactionsForTxnTopicPartition`). Returns them.
    pub fn unload(&mut self, owned: impl Fn(&str) -> bool) -> Vec<String> {
        let gone: Vec<String> = self.txns.keys().filter(|id| owned(id)).cloned().collect();
        for id in &gone {
            self.txns.remove(id);
        }
        gone
    }

    /// Every transactional id's metadata, in id order: written to the log, it restates the
    /// whole state, so the history before it can go (compaction).
    pub fn snapshot(&self) -> Vec<TxnRecord> {
        self.snapshot_of(|_| true)
    }

    /// `snapshot` of the transactional ids `owned` names (one partition's).
    pub fn snapshot_of(&self, owned: impl Fn(&str) -> bool) -> Vec<TxnRecord> {
        let mut metas: Vec<&TxnMeta> =
            self.txns.values().filter(|m| owned(&m.transactional_id)).collect();
        metas.sort_by(|a, b| a.transactional_id.cmp(&b.transactional_id));
        metas.into_iter().map(|m| TxnRecord::Put(m.clone())).collect()
    }

    /// Applies a record read back from the log (the last one per id wins).
    pub fn replay(&mut self, record: TxnRecord) {
        match record {
            TxnRecord::Put(meta) => {
                self.txns.insert(meta.transactional_id.clone(), meta);
            }
            TxnRecord::Remove(id) => {
                self.txns.remove(&id);
            }
        }
    }

    fn owned(
        &mut self,
        transactional_id: &str,
        producer: Producer,
    ) -> Result<&mut TxnMeta, ErrorCode> {
        let meta =
            self.txns.get_mut(transactional_id).ok_or(ErrorCode::InvalidProducerIdMapping)?;
        check_producer(meta, producer)?;
        Ok(meta)
    }
}

fn check_producer(meta: &TxnMeta, producer: Producer) -> Result<(), ErrorCode> {
    if meta.producer_id != producer.producer_id {
        return Err(ErrorCode::InvalidProducerIdMapping);
    }
    if meta.producer_epoch != producer.producer_epoch {
        return Err(ErrorCode::ProducerFenced);
    }
    Ok(())
}

/// Whether ending a transaction fences its producer first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fencing {
    /// EndTxn: the producer itself ends its transaction and keeps its epoch.
    KeepEpoch,
    /// A timeout, or an InitProducerId during the transaction: the epoch is bumped first, so
    /// the producer that left the transaction open is fenced.
    BumpEpoch,
}

/// Ongoing -> Prepare*, bumping the epoch first for `Fencing::BumpEpoch` (None: the epoch is
/// exhausted).
fn prepare_end(
    meta: &mut TxnMeta,
    now: i64,
    outcome: TxnOutcome,
    fencing: Fencing,
) -> Option<EndPlan> {
    assert_eq!(meta.state, TxnState::Ongoing);
    if fencing == Fencing::BumpEpoch {
        if meta.producer_epoch.is_exhausted() {
            return None;
        }
        meta.producer_epoch = meta.producer_epoch.bumped();
    }
    meta.state = TxnState::prepared(outcome);
    meta.update_ms = now;
    Some(plan_of(meta, outcome))
}

fn plan_of(meta: &TxnMeta, outcome: TxnOutcome) -> EndPlan {
    let mut offsets: BTreeMap<String, Vec<(String, i32, TxnOffset)>> = BTreeMap::new();
    if outcome == TxnOutcome::Commit {
        for ((group, topic, partition), offset) in &meta.offsets {
            offsets.entry(group.clone()).or_default().push((
                topic.clone(),
                *partition,
                offset.clone(),
            ));
        }
    }
    EndPlan {
        offsets,
        transactional_id: meta.transactional_id.clone(),
        producer_id: meta.producer_id,
        producer_epoch: meta.producer_epoch,
        outcome,
        partitions: meta.partitions.iter().cloned().collect(),
        groups: meta.groups.iter().cloned().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &str = "txn";

    fn p(producer_id: i64, producer_epoch: i16) -> Producer {
        Producer {
            producer_id: ProducerId(producer_id),
            producer_epoch: ProducerEpoch(producer_epoch),
        }
    }

    fn tp(partition: i32) -> (String, i32) {
        ("t".to_string(), partition)
    }

    fn ready(txns: &mut Transactions, now: i64) -> Producer {
        match txns.init_producer_id(now, T, 60_000, p(-1, -1), Some(ProducerId(7))) {
            InitOutcome::Ready { producer_id, producer_epoch } => {
                Producer { producer_id, producer_epoch }
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_new_transactional_id_needs_a_producer_id_then_starts_at_epoch_zero() {
        let mut txns = Transactions::new();
        let asked = txns.init_producer_id(0, T, 60_000, p(-1, -1), None);
        assert_eq!(asked, InitOutcome::NeedProducerId);
        assert!(txns.take_records().is_empty());
        assert_eq!(ready(&mut txns, 0), p(7, 0));
        assert_eq!(txns.take_records().len(), 1);
        // Every later InitProducerId bumps the epoch and keeps the id.
        assert_eq!(ready(&mut txns, 1), p(7, 1));
        assert_eq!(ready(&mut txns, 2), p(7, 2));
    }

    #[test]
    fn bad_timeouts_are_refused() {
        let mut txns = Transactions::new();
        for timeout in [0, -1, TRANSACTION_TIMEOUT_MS_MAX + 1] {
            assert_eq!(
                txns.init_producer_id(0, T, timeout, p(-1, -1), Some(ProducerId(1))),
                InitOutcome::Error(ErrorCode::InvalidTransactionTimeout)
            );
        }
    }

    #[test]
    fn commit_goes_through_prepare_and_complete_and_a_retry_is_idempotent() {
        let mut txns = Transactions::new();
        let me = ready(&mut txns, 0);
        assert_eq!(txns.add(5, T, me, &[tp(0), tp(1)], &[]), Ok(true));
        assert_eq!(txns.add(6, T, me, &[tp(1)], &[]), Ok(false));
        assert_eq!(txns.add(6, T, me, &[], &["g".into()]), Ok(true));
        assert_eq!(txns.get(T).map(|m| m.state), Some(TxnState::Ongoing));
        assert_eq!(txns.get(T).map(|m| m.start_ms), Some(5));
        txns.take_records();
        let EndOutcome::Markers(plan) = txns.end(7, T, me, TxnOutcome::Commit) else { panic!() };
        assert_eq!(plan.partitions, vec![tp(0), tp(1)]);
        assert_eq!(plan.groups, vec!["g".to_string()]);
        assert_eq!(plan.outcome, TxnOutcome::Commit);
        assert_eq!(plan.producer_epoch, ProducerEpoch(0));
        assert_eq!(txns.take_records()[0].meta().map(|m| m.state), Some(TxnState::PrepareCommit));
        // While markers are written: retries wait, anything else is refused.
        let retried = txns.end(8, T, me, TxnOutcome::Commit);
        assert_eq!(retried, EndOutcome::Error(ErrorCode::ConcurrentTransactions));
        let turned = txns.end(8, T, me, TxnOutcome::Abort);
        assert_eq!(turned, EndOutcome::Error(ErrorCode::InvalidTxnState));
        assert_eq!(txns.add(8, T, me, &[tp(2)], &[]), Err(ErrorCode::ConcurrentTransactions));
        assert_eq!(
            txns.init_producer_id(8, T, 60_000, p(-1, -1), None),
            InitOutcome::Error(ErrorCode::ConcurrentTransactions)
        );
        assert_eq!(txns.unfinished(), vec![plan.clone()]);
        txns.complete(9, &plan);
        let meta = txns.get(T).cloned().expect("meta");
        assert_eq!(meta.state, TxnState::CompleteCommit);
        assert!(meta.partitions.is_empty());
        assert!(txns.unfinished().is_empty());
        assert_eq!(txns.end(10, T, me, TxnOutcome::Commit), EndOutcome::Done);
        assert_eq!(
            txns.end(10, T, me, TxnOutcome::Abort),
            EndOutcome::Error(ErrorCode::InvalidTxnState)
        );
        // The next transaction starts from Complete with the same epoch.
        assert_eq!(txns.add(11, T, me, &[tp(3)], &[]), Ok(true));
        assert_eq!(txns.get(T).map(|m| m.partitions.len()), Some(1));
        let EndOutcome::Markers(plan) = txns.end(12, T, me, TxnOutcome::Abort) else { panic!() };
        txns.complete(13, &plan);
        assert_eq!(txns.get(T).map(|m| m.state), Some(TxnState::CompleteAbort));
        assert_eq!(txns.end(14, T, me, TxnOutcome::Abort), EndOutcome::Done);
    }

    #[test]
    fn offsets_ride_with_the_transaction_and_only_a_commit_delivers_them() {
        let mut txns = Transactions::new();
        let me = ready(&mut txns, 0);
        let at =
            |offset| TxnOffset { offset, leader_epoch: LeaderEpoch::NONE, metadata: String::new() };
        assert_eq!(
            txns.commit_offsets(1, T, me, "g", vec![("in".into(), 0, at(Offset(5)))]),
            Err(ErrorCode::InvalidTxnState),
            "no transaction yet"
        );
        txns.add(1, T, me, &[], &["g".into()]).expect("add offsets");
        txns.commit_offsets(2, T, me, "g", vec![("in".into(), 0, at(Offset(5)))]).expect("offsets");
        txns.commit_offsets(3, T, me, "g", vec![("in".into(), 0, at(Offset(9)))]).expect("offsets");
        assert_eq!(txns.commit_offsets(3, T, p(7, 9), "g", vec![]), Err(ErrorCode::ProducerFenced));
        let records = txns.take_records();
        assert_eq!(
            records.last().and_then(TxnRecord::meta).map(|m| m.offsets.len()),
            Some(1),
            "persisted"
        );
        let EndOutcome::Markers(plan) = txns.end(4, T, me, TxnOutcome::Commit) else { panic!() };
        assert_eq!(plan.offsets["g"], vec![("in".to_string(), 0, at(Offset(9)))]);
        txns.complete(5, &plan);
        assert!(txns.get(T).map(|m| m.offsets.is_empty()).unwrap_or(false));
        txns.add(6, T, me, &[], &["g".into()]).expect("add offsets");
        txns.commit_offsets(7, T, me, "g", vec![("in".into(), 0, at(Offset(12)))])
            .expect("offsets");
        let EndOutcome::Markers(plan) = txns.end(8, T, me, TxnOutcome::Abort) else { panic!() };
        assert!(plan.offsets.is_empty(), "an abort delivers nothing");
    }

    #[test]
    fn ending_without_a_transaction_is_invalid() {
        let mut txns = Transactions::new();
        let me = ready(&mut txns, 0);
        assert_eq!(
            txns.end(1, T, me, TxnOutcome::Commit),
            EndOutcome::Error(ErrorCode::InvalidTxnState)
        );
        assert_eq!(
            txns.end(1, T, me, TxnOutcome::Abort),
            EndOutcome::Error(ErrorCode::InvalidTxnState)
        );
    }

    #[test]
    fn zombies_and_strangers_are_fenced() {
        let mut txns = Transactions::new();
        let old = ready(&mut txns, 0);
        let new = ready(&mut txns, 1);
        assert_eq!(new.producer_epoch, old.producer_epoch.bumped());
        assert_eq!(txns.add(2, T, old, &[tp(0)], &[]), Err(ErrorCode::ProducerFenced));
        assert_eq!(
            txns.end(2, T, old, TxnOutcome::Commit),
            EndOutcome::Error(ErrorCode::ProducerFenced)
        );
        assert_eq!(txns.check_ongoing(T, old), Err(ErrorCode::ProducerFenced));
        let stranger = Producer { producer_id: ProducerId(99), ..new };
        assert_eq!(
            txns.add(2, T, stranger, &[tp(0)], &[]),
            Err(ErrorCode::InvalidProducerIdMapping)
        );
        assert_eq!(
            txns.add(2, "other", new, &[tp(0)], &[]),
            Err(ErrorCode::InvalidProducerIdMapping)
        );
        // A KIP-360 InitProducerId must name the current id and epoch.
        assert_eq!(
            txns.init_producer_id(3, T, 60_000, old, None),
            InitOutcome::Error(ErrorCode::ProducerFenced)
        );
        assert!(matches!(
            txns.init_producer_id(3, T, 60_000, new, None),
            InitOutcome::Ready { producer_epoch: ProducerEpoch(2), .. }
        ));
        assert_eq!(txns.check_ongoing(T, p(7, 2)), Err(ErrorCode::InvalidTxnState));
    }

    #[test]
    fn init_during_a_transaction_fences_and_aborts_it() {
        let mut txns = Transactions::new();
        let me = ready(&mut txns, 0);
        txns.add(1, T, me, &[tp(0)], &[]).expect("add");
        let InitOutcome::Abort(plan) = txns.init_producer_id(2, T, 60_000, p(-1, -1), None) else {
            panic!()
        };
        assert_eq!(plan.outcome, TxnOutcome::Abort);
        assert_eq!(plan.producer_epoch, me.producer_epoch.bumped());
        assert_eq!(plan.partitions, vec![tp(0)]);
        assert_eq!(txns.add(3, T, me, &[tp(1)], &[]), Err(ErrorCode::ProducerFenced));
        txns.complete(3, &plan);
        assert!(matches!(
            txns.init_producer_id(4, T, 60_000, p(-1, -1), None),
            InitOutcome::Ready { producer_epoch: ProducerEpoch(2), .. }
        ));
    }

    #[test]
    fn timeouts_abort_with_a_bumped_epoch_exactly_at_the_deadline() {
        let mut txns = Transactions::new();
        txns.init_producer_id(0, T, 1000, p(-1, -1), Some(ProducerId(3)));
        let me = p(3, 0);
        txns.add(100, T, me, &[tp(0)], &[]).expect("add");
        assert!(txns.expire(1099).is_empty());
        let plans = txns.expire(1100);
        assert_eq!(plans.len(), 1);
        assert_eq!(plans[0].producer_epoch, ProducerEpoch(1));
        assert_eq!(plans[0].outcome, TxnOutcome::Abort);
        assert!(txns.expire(5000).is_empty(), "only once");
        assert_eq!(
            txns.end(1200, T, me, TxnOutcome::Commit),
            EndOutcome::Error(ErrorCode::ProducerFenced)
        );
        txns.complete(1200, &plans[0]);
        assert_eq!(txns.get(T).map(|m| m.state), Some(TxnState::CompleteAbort));
    }

    #[test]
    fn an_exhausted_epoch_takes_a_new_producer_id() {
        let mut txns = Transactions::new();
        ready(&mut txns, 0);
        let mut meta = txns.get(T).cloned().expect("meta");
        meta.producer_epoch = ProducerEpoch(i16::MAX - 1);
        txns.replay(TxnRecord::Put(meta));
        assert_eq!(
            txns.init_producer_id(1, T, 60_000, p(-1, -1), None),
            InitOutcome::NeedProducerId
        );
        assert_eq!(
            txns.init_producer_id(1, T, 60_000, p(-1, -1), Some(ProducerId(8))),
            InitOutcome::Ready { producer_id: ProducerId(8), producer_epoch: ProducerEpoch(0) }
        );
    }

    /// Every request against every state, from the right producer, as a table (Kafka's
    /// answers for transaction version 1).
    #[test]
    fn every_request_in_every_state() {
        use TxnState::*;
        const STATES: [TxnState; 6] =
            [Empty, Ongoing, PrepareCommit, PrepareAbort, CompleteCommit, CompleteAbort];
        let in_state = |state: TxnState| {
            let mut txns = Transactions::new();
            txns.replay(TxnRecord::Put(TxnMeta {
                transactional_id: T.into(),
                producer_id: ProducerId(7),
                producer_epoch: ProducerEpoch(3),
                timeout_ms: 60_000,
                state,
                partitions: [tp(0)].into_iter().collect(),
                groups: Default::default(),
                offsets: Default::default(),
                start_ms: 0,
                update_ms: 0,
            }));
            txns
        };
        let me = p(7, 3);
        for state in STATES {
            // AddPartitionsToTxn
            let added = in_state(state).add(1, T, me, &[tp(1)], &[]);
            let expected = match state {
                PrepareCommit | PrepareAbort => Err(ErrorCode::ConcurrentTransactions),
                _ => Ok(true),
            };
            assert_eq!(added, expected, "add in {state:?}");
            // EndTxn, both ways
            for outcome in [TxnOutcome::Commit, TxnOutcome::Abort] {
                let ended = in_state(state).end(1, T, me, outcome);
                let expected = match (state, outcome) {
                    (Ongoing, _) => "markers",
                    (CompleteCommit, TxnOutcome::Commit) | (CompleteAbort, TxnOutcome::Abort) => {
                        "done"
                    }
                    (PrepareCommit, TxnOutcome::Commit) | (PrepareAbort, TxnOutcome::Abort) => {
                        "concurrent"
                    }
                    _ => "invalid",
                };
                let got = match ended {
                    EndOutcome::Markers(plan) => {
                        assert_eq!(plan.outcome, outcome);
                        assert_eq!(
                            plan.producer_epoch,
                            ProducerEpoch(3),
                            "EndTxn does not bump the epoch"
                        );
                        "markers"
                    }
                    EndOutcome::Done => "done",
                    EndOutcome::Error(ErrorCode::ConcurrentTransactions) => "concurrent",
                    EndOutcome::Error(ErrorCode::InvalidTxnState) => "invalid",
                    EndOutcome::Error(code) => panic!("EndTxn in {state:?}: code {code:?}"),
                };
                assert_eq!(got, expected, "EndTxn({outcome:?}) in {state:?}");
            }
            // InitProducerId
            let init = in_state(state).init_producer_id(1, T, 60_000, p(-1, -1), None);
            match state {
                Ongoing => {
                    let bumped = ProducerEpoch(4);
                    assert!(
                        matches!(&init, InitOutcome::Abort(plan) if plan.producer_epoch == bumped),
                        "{init:?}"
                    )
                }
                PrepareCommit | PrepareAbort => {
                    assert_eq!(init, InitOutcome::Error(ErrorCode::ConcurrentTransactions))
                }
                _ => assert_eq!(
                    init,
                    InitOutcome::Ready {
                        producer_id: ProducerId(7),
                        producer_epoch: ProducerEpoch(4)
                    }
                ),
            }
            // TxnOffsetCommit's check
            let checked = in_state(state).check_ongoing(T, me);
            let expected = if state == Ongoing { Ok(()) } else { Err(ErrorCode::InvalidTxnState) };
            assert_eq!(checked, expected, "check in {state:?}");
            // A fenced epoch and a wrong producer id are refused the same way in every state.
            let mut txns = in_state(state);
            assert_eq!(txns.add(1, T, p(7, 2), &[tp(1)], &[]), Err(ErrorCode::ProducerFenced));
            assert_eq!(
                txns.add(1, T, p(8, 3), &[tp(1)], &[]),
                Err(ErrorCode::InvalidProducerIdMapping)
            );
            assert_eq!(
                txns.end(1, T, p(7, 4), TxnOutcome::Commit),
                EndOutcome::Error(ErrorCode::ProducerFenced)
            );
            // Expiry touches only Ongoing transactions past their deadline.
            let expired = in_state(state).expire(60_000);
            assert_eq!(expired.len(), usize::from(state == Ongoing), "expire in {state:?}");
        }
    }

    #[test]
    fn every_state_has_a_stable_code() {
        for code in 0..6 {
            let state = TxnState::from_code(code).expect("state");
            assert_eq!(state.code(), code);
            assert!(!state.name().is_empty());
        }
        assert_eq!(TxnState::from_code(6), None);
    }

    #[test]
    fn ids_expire_only_when_idle_with_no_transaction_open() {
        let mut txns = Transactions::new();
        let other = "other";
        ready(&mut txns, 0);
        txns.init_producer_id(0, other, 60_000, p(-1, -1), Some(ProducerId(9)));
        let me = p(7, 0);
        txns.add(500, T, me, &[tp(0)], &[]).expect("add");
        txns.take_records();
        assert_eq!(txns.expire_ids(999, 1000), 0, "not yet");
        // `other` is idle past the expiration; T has a transaction open, however old.
        assert_eq!(txns.expire_ids(10_000, 1000), 1);
        assert_eq!(txns.take_records(), vec![TxnRecord::Remove(other.into())]);
        assert!(txns.get(other).is_none());
        let EndOutcome::Markers(plan) = txns.end(10_000, T, me, TxnOutcome::Commit) else {
            panic!()
        };
        assert_eq!(txns.expire_ids(20_000, 1000), 0, "PrepareCommit stays");
        txns.complete(20_000, &plan);
        assert_eq!(txns.expire_ids(20_999, 1000), 0, "complete counts as a use");
        assert_eq!(txns.expire_ids(21_000, 1000), 1);
        assert!(txns.is_empty());
        // A producer coming back with an expired id starts afresh.
        assert_eq!(
            txns.init_producer_id(30_000, T, 60_000, p(-1, -1), None),
            InitOutcome::NeedProducerId
        );
    }

    /// The log's two ways back to the state: replaying every record written, and replaying
    /// a snapshot (compaction), must both give the state the machine holds.
    #[test]
    fn replaying_the_records_or_a_snapshot_restores_the_state() {
        let seed =
            crate::model::test_seed("replaying_the_records_or_a_snapshot_restores_the_state");
        let mut rng = crate::model::TestRng::new(seed);
        let mut next = move |n: u64| rng.below(n);
        let ids = ["a", "b", "c", "d"];
        let mut txns = Transactions::new();
        let mut written = Vec::new();
        let mut next_pid = 100;
        for step in 0..2000i64 {
            let id = ids[next(4) as usize];
            let now = step * 10;
            let current = txns
                .get(id)
                .map(|m| Producer { producer_id: m.producer_id, producer_epoch: m.producer_epoch });
            match next(6) {
                0 => {
                    next_pid += 1;
                    let _ =
                        txns.init_producer_id(now, id, 500, p(-1, -1), Some(ProducerId(next_pid)));
                }
                1 | 2 => {
                    if let Some(me) = current {
                        let partition = next(3) as i32;
                        let _ = txns.add(now, id, me, &[tp(partition)], &["g".into()]);
                    }
                }
                3 => {
                    if let Some(me) = current {
                        let outcome = TxnOutcome::from_committed(next(2) == 0);
                        if let EndOutcome::Markers(plan) = txns.end(now, id, me, outcome) {
                            txns.complete(now, &plan);
                        }
                    }
                }
                4 => {
                    for plan in txns.expire(now) {
                        txns.complete(now, &plan);
                    }
                }
                _ => {
                    txns.expire_ids(now, 300);
                }
            }
            written.extend(txns.take_records());
        }
        let from_log = {
            let mut back = Transactions::new();
            written.into_iter().for_each(|r| back.replay(r));
            back.snapshot()
        };
        let from_snapshot = {
            let mut back = Transactions::new();
            txns.snapshot().into_iter().for_each(|r| back.replay(r));
            back.snapshot()
        };
        assert_eq!(from_log, txns.snapshot(), "seed {seed}");
        assert_eq!(from_snapshot, txns.snapshot(), "seed {seed}");
    }
}
