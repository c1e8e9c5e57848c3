//! Delayed delivery on the partitions' owner: the glue between produce, each partition's
//! delay log, its schedule (`wheel::schedule`, pure) and the partition's log. What a record
//! asks for and the delay log's records are in `model::delay`.
//!
//! Produce to a topic with `spate.delivery.delay.ms` set (0 or more) reads the records'
//! headers (the only produce path that opens batches besides compacted topics); a batch
//! due later than now goes, instead of to the partition:
//!
//! 1. through the partition's idempotence check (`log::admit_delayed`: recorded without
//!    offsets, so a retry is a duplicate and schedules nothing, and the producer's next
//!    batch follows its sequences);
//! 2. to the partition's delay log as a `Scheduled` record, written with the same appender
//!    and durability policy as any log; the produce is answered once it is written, with
//!    base offset -1 (the records get their offsets when they are delivered);
//! 3. onto the partition's schedule (its batch kept in memory only while it is due within
//!    the horizon; later ones are read back from the delay log when the window reaches them).
//!
//! A transactional batch is written as `ScheduledTxn` and held aside until its transaction's
//! marker reaches the partition: `end_delayed_txn` writes `TxnEnd` first, then the marker is
//! appended; commit schedules the batches, abort drops them.
//!
//! One task per shard (`run_deliveries`) sleeps until the earliest schedule's next wake-up
//! (to the microsecond, or a poke from an earlier admission) and delivers what is due,
//! partition by partition, in due-time then admission order. A delivery round of a
//! partition:
//!
//! 1. writes `Delivering` (each entry with the base sequence it gets) to the delay log and
//!    waits until it is written;
//! 2. appends the batches to the partition as batches of the broker's delivery producer
//!    (`DELIVERY_PRODUCER_ID`, epoch 0, those sequences; the CRC recomputed): the records
//!    get their offsets now, and keep their codec and timestamps; the next round may begin
//!    as soon as they are queued (its `Delivering` write overlaps this write);
//! 3. once they are written, writes `Delivered`, and trims the delay log (`trim`: sealed
//!    segments with nothing pending are deleted).
//!
//! A tombstone with the header `spate-cancel` writes a `Cancel` record with its key before
//! it (it goes through the delay log like a delayed batch, due at once): records of that
//! key in entries before it are dropped from their batches when those come due.
//!
//! A crash between 1 and 3 leaves `Delivering` without `Delivered`: the restart delivers
//! those entries again with the same sequences, and `log::enqueue_delivery` skips each one
//! the partition's producer state shows is there already (its sequence at or below the
//! delivery producer's last one). So nothing acknowledged is lost, and nothing is
//! delivered twice. Entries that came due while the broker was down are delivered at once,
//! in due-time order.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::channel::mpsc;
use futures::future::{select, Either};
use futures::StreamExt;

use super::{LogRef, Partitions};
use crate::constants::{DELAY_LOG_SEGMENT_BYTES, DELIVERY_ROUND_BATCHES_MAX};
use crate::model::batch::BatchHeader;
use crate::model::delay::{self, DelayRecord};
use crate::model::record_scan::RecordView;
use crate::model::records::{self, RecordIn};
use crate::model::topic::Durability;
use crate::model::TxnOutcome;
use crate::model::{now_ms, ErrorCode, Offset, ProducerEpoch, ProducerId, TopicPartition};
use crate::shard::internal_log;
use crate::storage::cache::CacheBudget;
use crate::storage::compaction::{self, Dropped};
use crate::storage::files::OpenFiles;
use crate::storage::log::{self, AppendInfo, Appending, Log};
use crate::storage::Error as StorageError;
use crate::wheel::schedule::{DeliverySchedule, Placement};

/// The directory under the data dir that holds the partitions' delay logs
/// (`__spate_delay/<topic>-<partition>/`, segments as any log's).
pub const DELAY_DIR: &str = "__spate_delay";

/// The producer id the broker delivers delayed batches with (epoch 0, a sequence per
/// partition): far above any id the controller hands out (blocks of 1000 from 0, or
/// interleaved by node id). DescribeProducers lists it on partitions that had deliveries.
pub const DELIVERY_PRODUCER_ID: ProducerId = ProducerId(i64::MAX - 1);
const DELIVERY_PRODUCER_EPOCH: ProducerEpoch = ProducerEpoch(0);

/// The delayed deliveries of the partitions a shard owns.
pub struct Delays {
    logs: RefCell<HashMap<TopicPartition, Rc<DelayLog>>>,
    /// The time the driver wakes at on its own; an earlier admission pokes it.
    planned_wake_ms: Cell<i64>,
    poke_tx: mpsc::UnboundedSender<()>,
    poke_rx: RefCell<Option<mpsc::UnboundedReceiver<()>>>,
}

/// One partition's delay log and schedule.
struct DelayLog {
    tp: TopicPartition,
    log: LogRef,
    schedule: RefCell<DeliverySchedule<i64>>,
    /// The batches of the entries in the wheel, by entry (delay-log offset).
    near: RefCell<BTreeMap<i64, Bytes>>,
    /// The lowest far entry (pending, beyond the window, not in memory), if any: far entries
    /// are only counted, and a trim must keep the segment of the lowest.
    far_min: Cell<Option<i64>>,
    /// Entries taken off the schedule by a delivery round whose `Delivered` is not queued yet.
    in_flight: RefCell<BTreeSet<i64>>,
    /// A trim of the delay log runs (`trim`).
    trimming: Cell<bool>,
    /// A round ended while a trim ran: that trim looks again before it ends (rounds
    /// overlap, so the last round's own trim may find the previous one still running).
    trim_again: Cell<bool>,
    /// Entries a crash left `Delivering`: delivered again with these sequences, first (and
    /// the offset of that `Delivering` record: the cancels before it applied to them).
    redeliver: RefCell<BTreeMap<i64, (i32, i64)>>,
    /// Cancels (`spate-cancel`) by key: the offset of the latest; records of that key in
    /// entries below it are not delivered. Dropped once no entry below it is pending.
    cancels: RefCell<HashMap<Vec<u8>, i64>>,
    /// The next base sequence of the delivery producer here.
    next_sequence: Cell<i32>,
    /// A delivery round or a load runs: the driver leaves the partition alone meanwhile.
    busy: Cell<bool>,
    /// While a load reads the delay log: the far entries admitted meanwhile, which it may
    /// not find on disk.
    loading: RefCell<Option<Vec<(i64, i64, Bytes)>>>,
    /// Batches of open transactions, by producer id: (entry, due time, batch), scheduled
    /// when the transaction's commit marker comes, dropped at its abort marker.
    txn_pending: RefCell<HashMap<i64, TxnBatches>>,
}

/// The delayed batches of one producer's open transaction: (entry, due time, batch).
type TxnBatches = Vec<(i64, i64, Bytes)>;

/// What a read of a delay log found (`replay`).
#[derive(Default)]
struct Replayed {
    /// Entries to deliver (not delivered, not in an open or aborted transaction): due time,
    /// and the batch when `keep` wanted it.
    ready: BTreeMap<i64, (i64, Option<Bytes>)>,
    /// Entries a crash may have left half delivered, with their sequences.
    delivering: BTreeMap<i64, (i32, i64)>,
    /// The latest cancel of each key (its offset).
    cancels: HashMap<Vec<u8>, i64>,
    /// Entries of transactions still open, by producer id.
    txn_open: HashMap<i64, TxnBatches>,
}

impl Default for Delays {
    fn default() -> Self {
        let (poke_tx, poke_rx) = mpsc::unbounded();
        Delays {
            logs: RefCell::new(HashMap::new()),
            planned_wake_ms: Cell::new(i64::MAX),
            poke_tx,
            poke_rx: RefCell::new(Some(poke_rx)),
        }
    }
}

/// What a partition's delay log holds, for metrics: pending records and the next wake-up
/// of its schedule (at or before its earliest due time; None: nothing pending).
#[derive(Debug, Clone, Copy, Default)]
pub struct DelayStats {
    pub pending_batches: u64,
    pub next_due_ms: Option<i64>,
}

impl Partitions {
    /// Produce on the owner, for a topic that opted in: None when the batches are due now
    /// (the caller appends them as usual), else the admission of the delayed batches (see
    /// the module doc) or the refusal with its message and record errors.
    #[allow(clippy::type_complexity)]
    pub(super) fn admit_delayed(
        &self,
        tp: &TopicPartition,
        log: &LogRef,
        batches: &[Bytes],
    ) -> Option<Result<Appending, (ErrorCode, String, Vec<(i32, String)>)>> {
        let default_delay_ms = log.borrow().config.delivery_delay_ms;
        if default_delay_ms < 0 {
            return None;
        }
        let now = now_ms();
        let mut due_max: Option<i64> = None;
        let mut cancels: Vec<Vec<u8>> = Vec::new();
        let mut first = 0i32;
        for bytes in batches {
            match delay::scan_batch(bytes, default_delay_ms, now) {
                Ok(scan) => {
                    if let Some(due) = scan.due_ms {
                        due_max = Some(due_max.map_or(due, |m| m.max(due)));
                    }
                    cancels.extend(scan.cancels);
                }
                Err(e) => {
                    let index = first + e.record;
                    return Some(Err(refusal(index, e.message)));
                }
            }
            first += BatchHeader::parse(bytes).map_or(0, |h| h.records_count());
        }
        // Every batch of the partition in this request takes the latest due time. A cancel
        // goes through the delay log too (due now when nothing delays it): written before it
        // is answered, and ordered among the admissions it applies to.
        let due = match due_max {
            Some(due) => due,
            None if !cancels.is_empty() => now,
            None => return None,
        };
        Some(self.schedule_batches(tp, log, batches, due, cancels))
    }

    #[allow(clippy::type_complexity)]
    fn schedule_batches(
        &self,
        tp: &TopicPartition,
        log: &LogRef,
        batches: &[Bytes],
        due_ms: i64,
        cancels: Vec<Vec<u8>>,
    ) -> Result<Appending, (ErrorCode, String, Vec<(i32, String)>)> {
        let storage = |message: &str| (ErrorCode::KafkaStorageError, message.to_string(), vec![]);
        let Some(delays) = self.delays.logs.borrow().get(tp).cloned() else {
            return Err(storage("the partition's delay log is not open yet"));
        };
        let log_start_offset = log.borrow().log_start_offset;
        let unplaced =
            AppendInfo { base_offset: Offset::NONE, log_append_time: -1, log_start_offset };
        match log::admit_delayed(log, batches) {
            // A retry of a batch already scheduled: answered, nothing scheduled again.
            Ok(Some(_original)) => return Ok(Appending::ready(unplaced)),
            Ok(None) => {}
            Err(StorageError::Producer(e)) => return Err((e.error_code(), String::new(), vec![])),
            Err(_) => return Err((ErrorCode::UnknownTopicOrPartition, String::new(), vec![])),
        }
        let now = now_ms();
        // A transactional batch waits for its transaction's commit (`end_delayed_txn`).
        let owned: Vec<(Bytes, Option<i64>)> = batches
            .iter()
            .map(|b| {
                let header = BatchHeader::parse(b).unwrap_or_else(|_| unreachable!("validated"));
                let txn = header.is_transactional().then(|| header.producer_id().0);
                (Bytes::copy_from_slice(b), txn)
            })
            .collect();
        // A `Cancel` first: the produced batches (the cancels' own tombstones) come after it,
        // so it leaves them alone.
        let cancel = (!cancels.is_empty())
            .then(|| delay_batch_at(&DelayRecord::Cancel(cancels.clone()), now));
        let shift = i64::from(cancel.is_some());
        let wrappers: Vec<Bytes> = cancel
            .into_iter()
            .chain(owned.iter().map(|(batch, txn)| {
                let batch = batch.to_vec();
                let record = match txn {
                    Some(producer_id) => {
                        DelayRecord::ScheduledTxn { due_ms, producer_id: *producer_id, batch }
                    }
                    None => DelayRecord::Scheduled { due_ms, batch },
                };
                delay_batch_at(&record, now)
            }))
            .collect();
        // One record per wrapper batch: the entries have consecutive delay-log offsets.
        let cancel_at = log::log_end(&delays.log).0;
        let first_entry = cancel_at + shift;
        let appending = match log::enqueue(&delays.log, wrappers) {
            Ok(appending) => appending,
            Err(_) => return Err(storage("the partition's delay log is gone")),
        };
        let mut known = delays.cancels.borrow_mut();
        known.extend(cancels.into_iter().map(|key| (key, cancel_at)));
        drop(known);
        for (i, (batch, txn)) in owned.into_iter().enumerate() {
            let entry = first_entry + i as i64;
            match txn {
                Some(producer_id) => delays
                    .txn_pending
                    .borrow_mut()
                    .entry(producer_id)
                    .or_default()
                    .push((entry, due_ms, batch)),
                None => place(&delays, due_ms, entry, batch),
            }
        }
        self.poke_deliveries(due_ms);
        Ok(appending.answered_as(unplaced))
    }

    /// A transaction marker is about to be appended to `tp` (`write_marker`): the delayed
    /// batches of the producer's transaction there are scheduled (commit) or dropped
    /// (abort), once a `TxnEnd` saying so is written to the delay log. Written before the
    /// marker: a crash between the two leaves the coordinator to write the marker again,
    /// which writes `TxnEnd` again, harmlessly. False: it could not be written (the marker
    /// must not be appended then).
    pub(super) async fn end_delayed_txn(
        &self,
        tp: &TopicPartition,
        producer_id: ProducerId,
        outcome: TxnOutcome,
    ) -> bool {
        let Some(delays) = self.delays.logs.borrow().get(tp).cloned() else { return true };
        if !delays.txn_pending.borrow().contains_key(&producer_id.0) {
            return true;
        }
        let commit = outcome == TxnOutcome::Commit;
        let end = DelayRecord::TxnEnd { producer_id: producer_id.0, commit };
        if !self.write_delay_record(&delays, end).await {
            return false;
        }
        let entries = delays.txn_pending.borrow_mut().remove(&producer_id.0).unwrap_or_default();
        if commit {
            let earliest = entries.iter().map(|(_, due, _)| *due).min();
            for (entry, due_ms, batch) in entries {
                place(&delays, due_ms, entry, batch);
            }
            if let Some(earliest) = earliest {
                self.poke_deliveries(earliest);
            }
        }
        true
    }

    fn poke_deliveries(&self, due_ms: i64) {
        if due_ms < self.delays.planned_wake_ms.get() {
            self.delays.planned_wake_ms.set(due_ms);
            let _ = self.delays.poke_tx.unbounded_send(());
        }
    }

    /// Opens the delay log of `tp` if its topic opted in or it has one on disk, and loads
    /// its pending entries (restoring the partition's producer state from them). Called
    /// once the partition's log is open: at start-up and when a topic is created or its
    /// configs change. Idempotent.
    pub(super) async fn open_delay_log(&self, tp: &TopicPartition) -> Result<(), StorageError> {
        if self.delays.logs.borrow().contains_key(tp) {
            return Ok(());
        }
        let Some(partition_log) = self.log(tp) else { return Ok(()) };
        let dir = self.delay_dir();
        let opted_in = partition_log.borrow().config.delivery_delay_ms >= 0;
        if !opted_in && !dir.join(tp.dir_name()).exists() {
            return Ok(());
        }
        let (durability, segment_bytes) = {
            let config = &partition_log.borrow().config;
            (config.durability, config.segment_bytes.min(DELAY_LOG_SEGMENT_BYTES))
        };
        // Segments no larger than the topic's: a trim deletes whole segments (`trim`).
        let config = internal_log::log_config(segment_bytes, durability);
        if !dir.exists() {
            std::fs::create_dir_all(&dir)?;
            if durability == Durability::Fsync {
                // The delay directory's name in the data dir, before anything in it is
                // acknowledged (`Log::open_in` makes the entries below it durable).
                crate::storage::sync_new_entry(&self.shard.config.data_dir).await;
            }
        }
        let cache = CacheBudget::new(0);
        let files = OpenFiles::unbounded();
        let (opened, _) = Log::open_in(&dir, tp.clone(), config, cache, &files, None).await?;
        let log = Rc::new(RefCell::new(opened));
        if self.delays.logs.borrow().contains_key(tp) {
            // Opened meanwhile by another caller.
            log::close(&log).await;
            return Ok(());
        }
        let batches = internal_log::read_led_log(&log).await?;
        let now = now_ms();
        let horizon = self.shard.config.delivery_horizon_ms as i64;
        let found = replay(
            tp,
            &batches,
            |batch| log::restore_delayed(&partition_log, batch),
            |due| due < now + horizon,
        );
        drop(batches);
        let mut schedule = DeliverySchedule::new(now, horizon);
        let mut near = BTreeMap::new();
        let mut far_min = None;
        let mut next_sequence = log::delivery_sequence_next(&partition_log, DELIVERY_PRODUCER_ID);
        let mut redeliver = BTreeMap::new();
        for (entry, (due_ms, batch)) in found.ready {
            if schedule.admit(due_ms, entry) == Placement::Near {
                let batch = batch.unwrap_or_else(|| unreachable!("near entries keep their batch"));
                if let Some(&(sequence, at)) = found.delivering.get(&entry) {
                    let count = BatchHeader::parse(&batch).map_or(1, |h| h.last_offset_delta() + 1);
                    next_sequence = next_sequence.max(sequence.saturating_add(count));
                    redeliver.insert(entry, (sequence, at));
                }
                near.insert(entry, batch);
            } else {
                far_min = far_min.or(Some(entry));
            }
        }
        let pending = schedule.pending();
        let delay_log = Rc::new(DelayLog {
            tp: tp.clone(),
            log,
            schedule: RefCell::new(schedule),
            near: RefCell::new(near),
            far_min: Cell::new(far_min),
            in_flight: RefCell::new(BTreeSet::new()),
            trimming: Cell::new(false),
            trim_again: Cell::new(false),
            redeliver: RefCell::new(redeliver),
            cancels: RefCell::new(found.cancels),
            next_sequence: Cell::new(next_sequence),
            busy: Cell::new(false),
            loading: RefCell::new(None),
            txn_pending: RefCell::new(found.txn_open),
        });
        if pending > 0 {
            tracing::info!(%tp, pending, "delayed records loaded");
        }
        self.delays.logs.borrow_mut().insert(tp.clone(), delay_log);
        self.poke_deliveries(i64::MIN);
        Ok(())
    }

    fn delay_dir(&self) -> PathBuf {
        self.shard.config.data_dir.join(DELAY_DIR)
    }

    /// Deletes the delay log of `tp` (its topic or partition was deleted) with what it held.
    pub(super) async fn delete_delay_log(&self, tp: &TopicPartition) {
        let removed = self.delays.logs.borrow_mut().remove(tp);
        if let Some(delay_log) = removed {
            log::delete(&delay_log.log).await;
        }
    }

    /// Closes every delay log (shutdown): their queued writes land first. They keep no
    /// clean-stop record; the next start recovers them from their files.
    pub(super) async fn close_delay_logs(&self) {
        let all: Vec<Rc<DelayLog>> =
            self.delays.logs.borrow_mut().drain().map(|(_, delay_log)| delay_log).collect();
        for delay_log in all {
            log::close(&delay_log.log).await;
        }
    }

    /// Pending delayed batches of `tp` and its schedule's next wake-up, for metrics.
    pub(super) fn delay_stats(&self, tp: &TopicPartition) -> DelayStats {
        let logs = self.delays.logs.borrow();
        let Some(delay_log) = logs.get(tp) else { return DelayStats::default() };
        let schedule = delay_log.schedule.borrow();
        let pending = schedule.pending() as u64;
        DelayStats {
            pending_batches: pending,
            next_due_ms: schedule.next_wake_ms().filter(|_| pending > 0),
        }
    }

    /// The shard's delivery driver: sleeps until the earliest schedule's next wake-up (or a
    /// poke), then loads and delivers what is due. Runs until cancelled at shutdown.
    pub async fn run_deliveries(self: Rc<Self>) {
        let Some(mut pokes) = self.delays.poke_rx.borrow_mut().take() else { return };
        let mut due = Vec::new();
        loop {
            let now = now_ms();
            let all: Vec<Rc<DelayLog>> = self.delays.logs.borrow().values().cloned().collect();
            // With no delay log on the shard, only a poke (a log opened) wakes the driver.
            let idle_ms = if all.is_empty() { 60_000 } else { 1_000 };
            let mut wake = now + idle_ms;
            for delay_log in all {
                if delay_log.busy.get() {
                    continue;
                }
                let range = delay_log.schedule.borrow().reload_due(now);
                if range.is_some() && delay_log.trimming.get() {
                    // A load reads the files a trim deletes: after it (it pokes).
                    continue;
                }
                if let Some(range) = range {
                    delay_log.busy.set(true);
                    let this = self.clone();
                    glommio::spawn_local(async move {
                        this.load_window(&delay_log, range).await;
                        delay_log.busy.set(false);
                        this.poke_deliveries(i64::MIN);
                    })
                    .detach();
                    continue;
                }
                due.clear();
                delay_log.schedule.borrow_mut().due(now, &mut due);
                if !due.is_empty() {
                    delay_log.busy.set(true);
                    let this = self.clone();
                    let entries = std::mem::take(&mut due);
                    // `deliver` frees the partition for the next round (`busy`) as soon as
                    // its batches are queued on the partition, before they are written.
                    glommio::spawn_local(async move { this.deliver(&delay_log, entries).await })
                        .detach();
                    continue;
                }
                if let Some(next) = delay_log.schedule.borrow().next_wake_ms() {
                    wake = wake.min(next);
                }
            }
            self.delays.planned_wake_ms.set(wake);
            let sleep = glommio::timer::sleep(until_ms(wake, idle_ms));
            match select(Box::pin(sleep), pokes.next()).await {
                Either::Left(_) => {}
                Either::Right((Some(()), _)) => {
                    // Take every poke queued meanwhile: one pass serves them all.
                    while pokes.try_recv().is_ok() {}
                }
                Either::Right((None, _)) => return,
            }
        }
    }

    /// Reads the entries due in `range` from the delay log into the schedule (the window
    /// moved over them). Entries admitted while it reads are taken from `loading`.
    async fn load_window(&self, delay_log: &DelayLog, (from, to): (i64, i64)) {
        *delay_log.loading.borrow_mut() = Some(Vec::new());
        // Every entry below `end` is on disk once the log's high watermark passed it.
        let end = log::log_end(&delay_log.log);
        if end > Offset::ZERO {
            if let Some(written) = log::wait_high_watermark(&delay_log.log, Offset(end.0 - 1)) {
                let _ = written.await;
            }
        }
        // Read and parsed off the shard: a delay log of a million records is a read of about
        // 150 MB and a parse of as many records, a stall of the shard's deliveries otherwise.
        let dir = delay_log.log.borrow().dir().to_path_buf();
        let tp = delay_log.tp.clone();
        let in_range = move |due: i64| (from..to).contains(&due);
        let read = glommio::executor().spawn_blocking(move || {
            let batches = internal_log::read_batches(&dir)?;
            Ok::<_, std::io::Error>(replay(&tp, &batches, |_| {}, in_range))
        });
        let replayed = match read.await {
            Ok(replayed) => replayed,
            Err(e) => {
                tracing::warn!(tp = %delay_log.tp, "cannot read the delay log: {e}");
                Replayed::default()
            }
        };
        let mut found: BTreeMap<i64, (i64, Bytes)> = BTreeMap::new();
        let mut far_min: Option<i64> = None;
        for (entry, (due_ms, batch)) in replayed.ready {
            if due_ms >= to {
                far_min = far_min.or(Some(entry));
            } else if let Some(batch) = batch.filter(|_| in_range(due_ms)) {
                found.insert(entry, (due_ms, batch));
            }
        }
        let admitted = delay_log.loading.borrow_mut().take().unwrap_or_default();
        for (due_ms, entry, batch) in admitted {
            if in_range(due_ms) {
                found.insert(entry, (due_ms, batch));
            } else if due_ms >= to {
                far_min = Some(far_min.map_or(entry, |m| m.min(entry)));
            }
        }
        delay_log.far_min.set(far_min);
        // A commit whose `TxnEnd` the read saw but whose entries are not placed yet (its
        // write completed during the read): they are placed when it resumes, not here.
        for held in delay_log.txn_pending.borrow().values() {
            for (entry, ..) in held {
                found.remove(entry);
            }
        }
        let mut near = delay_log.near.borrow_mut();
        let loaded: Vec<(i64, i64)> = found
            .into_iter()
            .map(|(entry, (due_ms, batch))| {
                near.insert(entry, batch);
                (due_ms, entry)
            })
            .collect();
        delay_log.schedule.borrow_mut().loaded((from, to), loaded);
    }

    /// One delivery round of a partition (see the module doc): `entries` are due, in order.
    /// The partition is free for its next round (`busy`) as soon as this round's batches are
    /// queued on it, before they are written: the next round's `Delivering` write overlaps
    /// this round's partition write, and its batches still follow these (queued after them).
    async fn deliver(&self, delay_log: &DelayLog, entries: Vec<(i64, i64)>) {
        let release = || {
            if delay_log.busy.replace(false) {
                self.poke_deliveries(i64::MIN);
            }
        };
        let tp = &delay_log.tp;
        let Some(partition_log) = self.log(tp) else {
            // The partition is gone; its delay log goes with it (`delete_delay_log`).
            release();
            return;
        };
        // Entries a crash left half delivered go first, with their sequences.
        let mut again: Vec<((i32, i64), i64)> = Vec::new();
        let mut rest: Vec<(i64, Option<(i32, i64)>)> = Vec::with_capacity(entries.len());
        {
            let mut redeliver = delay_log.redeliver.borrow_mut();
            for (_, entry) in &entries {
                match redeliver.remove(entry) {
                    Some(recorded) => again.push((recorded, *entry)),
                    None => rest.push((*entry, None)),
                }
            }
        }
        again.sort_unstable();
        let ordered: Vec<(i64, Option<(i32, i64)>)> = again
            .into_iter()
            .map(|(recorded, entry)| (entry, Some(recorded)))
            .chain(rest)
            .collect();
        delay_log.in_flight.borrow_mut().extend(ordered.iter().map(|(entry, _)| *entry));
        let mut queued = Vec::new();
        for chunk in ordered.chunks(DELIVERY_ROUND_BATCHES_MAX) {
            queued.push(self.queue_chunk(delay_log, &partition_log, chunk).await);
        }
        release();
        for (mut appendings, done) in queued {
            for appending in &mut appendings {
                appending.wait().await;
            }
            self.notify_partition(tp).await;
            // 3. Delivered (not waited for: a crash before it only repeats step 2, harmlessly).
            if !done.is_empty() {
                let delivered = delay_batch(&DelayRecord::Delivered(done));
                let _ = log::enqueue(&delay_log.log, vec![delivered]);
            }
        }
        {
            let mut in_flight = delay_log.in_flight.borrow_mut();
            for (entry, _) in &ordered {
                in_flight.remove(entry);
            }
        }
        self.trim(delay_log).await;
    }

    /// Steps 1 and 2 of a round for one chunk: `Delivering` written, then the batches queued
    /// on the partition. Returns their appends and the entries they deliver.
    async fn queue_chunk(
        &self,
        delay_log: &DelayLog,
        partition_log: &LogRef,
        chunk: &[(i64, Option<(i32, i64)>)],
    ) -> (Vec<Appending>, Vec<i64>) {
        let tp = &delay_log.tp;
        // The batches, stamped with the delivery producer and their sequences.
        let mut stamped: Vec<(i64, Bytes)> = Vec::with_capacity(chunk.len());
        let mut fresh: Vec<(i64, i32)> = Vec::new();
        // Entries whose every record was cancelled: resolved without an append.
        let mut cancelled = Vec::new();
        for (entry, recorded) in chunk {
            let Some(batch) = delay_log.near.borrow_mut().remove(entry) else {
                tracing::warn!(%tp, entry, "a due delayed batch is not in memory; skipped");
                continue;
            };
            // A redelivery applies the cancels its first delivery applied, no later ones.
            let before = recorded.map_or(i64::MAX, |(_, at)| at);
            let cancels = delay_log.cancels.borrow();
            let Some(batch) = without_cancelled(&cancels, *entry, before, batch) else {
                cancelled.push(*entry);
                continue;
            };
            drop(cancels);
            let count = BatchHeader::parse(&batch).map_or(1, |h| h.last_offset_delta() + 1);
            let sequence = match recorded {
                Some((sequence, _)) => *sequence,
                None => {
                    let sequence = delay_log.next_sequence.get();
                    fresh.push((*entry, sequence));
                    sequence
                }
            };
            delay_log
                .next_sequence
                .set(delay_log.next_sequence.get().max(sequence.wrapping_add(count).max(0)));
            let mut bytes = BytesMut::from(&batch[..]);
            delay::restamp(&mut bytes, DELIVERY_PRODUCER_ID, DELIVERY_PRODUCER_EPOCH, sequence);
            stamped.push((*entry, bytes.freeze()));
        }
        let mut appendings = Vec::with_capacity(stamped.len());
        let mut done = cancelled;
        if stamped.is_empty() {
            return (appendings, done);
        }
        // 1. Delivering, written before the partition sees the batches.
        if !fresh.is_empty()
            && !self.write_delay_record(delay_log, DelayRecord::Delivering(fresh)).await
        {
            return (appendings, done);
        }
        // 2. The partition, in one go (no await between the appends: consecutive offsets).
        for (entry, bytes) in stamped {
            self.mark_for_retention(tp);
            match log::enqueue_delivery(partition_log, bytes) {
                Ok(Some(appending)) => appendings.push(appending),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(%tp, entry, "delayed batch not delivered: {e}");
                    continue;
                }
            }
            done.push(entry);
        }
        (appendings, done)
    }

    /// Deletes the delay log's sealed segments whose entries are all resolved (delivered, or
    /// dropped with their aborted transaction), so that delivered records give their space
    /// back. Runs after a round, and does nothing unless a whole segment lies below the
    /// lowest pending entry.
    ///
    /// Crash safety: each entry below the cut was delivered (the partition's write of it
    /// completed before its `Delivered` was queued) or dropped (its `TxnEnd` written first),
    /// so a restart that no longer finds it delivers nothing twice and loses nothing. What
    /// else those records gave a restart, the producers' admissions of delayed batches
    /// (`restore_delayed`), is kept by a snapshot of the partition's producer state taken
    /// first and on disk before anything is deleted. Segments go oldest first, so a crash
    /// midway leaves segments that still follow one another. A load reads the files a trim
    /// deletes: the two never overlap (`trimming`, `loading`).
    async fn trim(&self, delay_log: &DelayLog) {
        if delay_log.trimming.get() {
            delay_log.trim_again.set(true);
            return;
        }
        if delay_log.loading.borrow().is_some() {
            return;
        }
        delay_log.trimming.set(true);
        loop {
            delay_log.trim_again.set(false);
            self.trim_once(delay_log).await;
            if !delay_log.trim_again.get() {
                break;
            }
        }
        delay_log.trimming.set(false);
        self.poke_deliveries(i64::MIN);
    }

    async fn trim_once(&self, delay_log: &DelayLog) {
        let end = log::log_end(&delay_log.log).0;
        let lowest = lowest_pending(delay_log);
        // A cancel matters while an entry below it is pending.
        delay_log.cancels.borrow_mut().retain(|_, at| lowest.is_some_and(|lowest| *at > lowest));
        let cut = lowest.map_or(end, |lowest| lowest.min(end));
        if log::segments_before(&delay_log.log, Offset(cut)) == 0 {
            return;
        }
        let Some(partition_log) = self.log(&delay_log.tp) else { return };
        if log::snapshot_producers(&partition_log).await {
            // Entries pending now are those counted above or admitted since (above `end`).
            let cut = lowest_pending(delay_log).map_or(cut, |lowest| lowest.min(cut));
            let removed = log::remove_segments_before(&delay_log.log, Offset(cut)).await;
            tracing::debug!(tp = %delay_log.tp, removed, cut, "delay log trimmed");
        }
    }

    /// Writes one record to the delay log and waits until it is written (false: the log is
    /// gone).
    async fn write_delay_record(&self, delay_log: &DelayLog, record: DelayRecord) -> bool {
        match log::enqueue(&delay_log.log, vec![delay_batch(&record)]) {
            Ok(mut appending) => {
                appending.wait().await;
                appending.outcome().is_some_and(|outcome| outcome.is_ok())
            }
            Err(_) => false,
        }
    }
}

/// The lowest entry of `delay_log` not resolved yet: in memory, far, being delivered, or in
/// an open transaction. None: every entry is resolved.
fn lowest_pending(delay_log: &DelayLog) -> Option<i64> {
    let near = delay_log.near.borrow().keys().next().copied();
    let in_flight = delay_log.in_flight.borrow().iter().next().copied();
    let held = delay_log.txn_pending.borrow().values().flatten().map(|(entry, ..)| *entry).min();
    [near, delay_log.far_min.get(), in_flight, held].into_iter().flatten().min()
}

/// `batch` of `entry` without its records that a cancel at an offset in `(entry, before)`
/// names; None when it has no record left.
fn without_cancelled(
    cancels: &HashMap<Vec<u8>, i64>,
    entry: i64,
    before: i64,
    batch: Bytes,
) -> Option<Bytes> {
    if cancels.is_empty() {
        return Some(batch);
    }
    let named = |record: &RecordView<'_>| {
        let at = record.key.and_then(|key| cancels.get(key));
        at.is_some_and(|at| (entry + 1..before).contains(at))
    };
    match compaction::drop_records(&batch, named) {
        Ok(Dropped::Nothing) => Some(batch),
        Ok(Dropped::Rebuilt(rebuilt)) => Some(Bytes::from(rebuilt)),
        Ok(Dropped::Everything) => None,
        Err(e) => {
            tracing::warn!(entry, "cannot apply cancels to a delayed batch, delivered whole: {e}");
            Some(batch)
        }
    }
}

/// How long to sleep until the epoch millisecond `wake_ms` begins (at most `limit_ms`): to the
/// microsecond, since `now_ms` rounds down (a sleep of whole milliseconds from a rounded now
/// wakes up to a millisecond late).
fn until_ms(wake_ms: i64, limit_ms: i64) -> Duration {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    let now_us = since.map_or(0, |d| d.as_micros() as i64);
    let wait_us = wake_ms.saturating_mul(1_000).saturating_sub(now_us);
    Duration::from_micros(wait_us.clamp(0, limit_ms.saturating_mul(1_000)) as u64)
}

/// A delay-log record as a batch of its own.
fn delay_batch(record: &DelayRecord) -> Bytes {
    delay_batch_at(record, now_ms())
}

fn delay_batch_at(record: &DelayRecord, now: i64) -> Bytes {
    let (key, value) = record.encode();
    let ins = [RecordIn { key: Some(&key), value: Some(&value) }];
    Bytes::from(records::build_batch(now, &ins))
}

/// Puts a pending entry on the schedule: its batch in memory when near; when far, nothing
/// (it is on disk), unless a load is reading the log (it may not find it there).
fn place(delays: &DelayLog, due_ms: i64, entry: i64, batch: Bytes) {
    match delays.schedule.borrow_mut().admit(due_ms, entry) {
        Placement::Near => {
            delays.near.borrow_mut().insert(entry, batch);
        }
        Placement::Far => {
            delays.far_min.set(Some(delays.far_min.get().map_or(entry, |m| m.min(entry))));
            if let Some(loading) = delays.loading.borrow_mut().as_mut() {
                loading.push((due_ms, entry, batch));
            }
        }
    }
}

/// Reads a delay log's records in order (see `model::delay` for what each means):
/// `on_scheduled` sees every batch ever scheduled (for the producer state), `keep` says
/// which due times' batches to keep in memory.
fn replay(
    tp: &TopicPartition,
    batches: &[Vec<u8>],
    mut on_scheduled: impl FnMut(&[u8]),
    keep: impl Fn(i64) -> bool,
) -> Replayed {
    let mut found = Replayed::default();
    for bytes in batches {
        let Ok(records) = records::parse_batch(bytes) else { continue };
        for record in records {
            let Some(key) = record.key.as_deref() else { continue };
            let offset = record.offset;
            match DelayRecord::decode(key, record.value.as_deref()) {
                Some(DelayRecord::Scheduled { due_ms, batch }) => {
                    on_scheduled(&batch);
                    let batch = keep(due_ms).then(|| Bytes::from(batch));
                    found.ready.insert(offset, (due_ms, batch));
                }
                Some(DelayRecord::ScheduledTxn { due_ms, producer_id, batch }) => {
                    on_scheduled(&batch);
                    let open = found.txn_open.entry(producer_id).or_default();
                    open.push((offset, due_ms, Bytes::from(batch)));
                }
                Some(DelayRecord::TxnEnd { producer_id, commit }) => {
                    let ended = found.txn_open.remove(&producer_id).unwrap_or_default();
                    for (entry, due_ms, batch) in ended.into_iter().filter(|_| commit) {
                        found.ready.insert(entry, (due_ms, keep(due_ms).then_some(batch)));
                    }
                }
                Some(DelayRecord::Delivering(entries)) => found.delivering.extend(
                    entries.into_iter().map(|(entry, sequence)| (entry, (sequence, offset))),
                ),
                Some(DelayRecord::Cancel(keys)) => {
                    found.cancels.extend(keys.into_iter().map(|key| (key, offset)));
                }
                Some(DelayRecord::Delivered(entries)) => {
                    for entry in entries {
                        found.ready.remove(&entry);
                        found.delivering.remove(&entry);
                    }
                }
                None => tracing::warn!(%tp, offset, "unreadable delay record"),
            }
        }
    }
    found
}

/// INVALID_RECORD for record `index` (Kafka's RecordValidationException text).
fn refusal(index: i32, message: String) -> (ErrorCode, String, Vec<(i32, String)>) {
    let summary = format!(
        "One or more records have been rejected due to 1 record errors in total, and only \
         showing the first three errors at most: [RecordError(batchIndex={index}, \
         message='{message}')]"
    );
    (ErrorCode::InvalidRecord, summary, vec![(index, message)])
}
