//! The log of one partition: an ordered list of segments, the last one active.
//!
//! Lifecycle: `Log::open` recovers it at start (or creates it for a new partition); appends
//! and reads run until `close` (shutdown) or `delete` (topic deletion). It lives in an
//! `Rc<RefCell<Log>>` on the owning shard; no borrow is ever held across an `.await`.
//!
//! Append path (group commit): `append` assigns offsets at once (so that the order of
//! offsets is the order of arrival), queues the batch and waits. One flusher task per log
//! takes everything queued, writes it with a single O_DIRECT write (and one fdatasync under
//! the `fsync` policy), then makes it visible: index, cache, high watermark, waiters. Batches
//! that arrive while a write is in flight ride on the next one, so under load many produce
//! requests share each write and flush.
//!
//! Idempotent producers: `append` checks every batch that carries a producer id against the
//! partition's producer state (`producer_state.rs`) before it assigns offsets, in the same
//! borrow, so the order of checks is the order of offsets. A duplicate gets the offsets of
//! the original (after waiting until the original is durable) and is not written again. The
//! state is snapshotted at each roll and at close, and rebuilt at open (`snapshot.rs`).
//!
//! Read path: the cache of recent batches answers tail reads with `Bytes` clones; older data
//! is located through the sparse index and returned as a file region for `sendfile`, or as
//! bytes read with O_DIRECT for the few blocks that may still be rewritten.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::channel::oneshot;

use crate::constants::{
    BATCH_CACHE_BYTES_PER_LOG, LOCATE_READ_BYTES, NO_SPACE_RETRY_MS_MAX, NO_SPACE_RETRY_MS_MIN,
    PRODUCER_ID_EXPIRATION_MS, ZERO_AHEAD_BYTES, ZERO_AHEAD_STEP_BYTES,
};
use crate::fatal::{fatal, FatalReason};
use crate::metrics::Traffic;
use crate::model::batch::{self, BatchHeader};
use crate::model::record_scan;
use crate::model::topic::{Durability, TimestampType, TopicConfig};
use crate::model::TopicPartition;
use crate::model::TxnOutcome;
use crate::model::{now_ms, FirstBatch, Isolation, LeaderEpoch, Offset, ProducerEpoch, ProducerId};
use crate::storage::cache::{BatchCache, CacheBudget, CachedBatch};
use crate::storage::clean_stop::LogState;
use crate::storage::files::{Buffered, OpenFiles};
use crate::storage::leader_epochs::{self, LeaderEpochs};
use crate::storage::producer_state::{self, AppendCheck, ProducerBatch, ProducerStateTable};
use crate::storage::segment::{self, Segment, SegmentRole};
use crate::storage::snapshot::{self, Flush};
use crate::storage::space;
use crate::storage::{
    count_fdatasync, count_write, count_zero_write, glommio_io_error, io_error, Error,
};

/// Where an append landed.
#[derive(Debug, Clone, Copy)]
pub struct AppendInfo {
    pub base_offset: Offset,
    /// The broker's timestamp when the topic uses LogAppendTime, else -1.
    pub log_append_time: i64,
    pub log_start_offset: Offset,
}

/// A piece of a fetch response's record data.
#[derive(Debug, Clone)]
pub enum ReadChunk {
    /// Bytes already in memory (the cache, or a DMA read of the unstable tail).
    Memory(Bytes),
    /// A region of a segment file, sent with `sendfile` without a copy through user space.
    File { file: Arc<Buffered>, position: u64, len: u64 },
}

impl ReadChunk {
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn len(&self) -> usize {
        match self {
            ReadChunk::Memory(bytes) => bytes.len(),
            ReadChunk::File { len, .. } => *len as usize,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct ReadOutcome {
    pub chunks: Vec<ReadChunk>,
    /// read_committed only: aborted transactions overlapping the range read.
    pub aborted: Vec<crate::storage::txn_index::AbortedTxn>,
    /// read_committed only: the last stable offset (else the high watermark).
    pub last_stable_offset: Offset,
    pub size_bytes: usize,
    pub high_watermark: Offset,
    pub log_start_offset: Offset,
}

struct Pending {
    bytes: Bytes,
    base_offset: Offset,
    last_offset: Offset,
    max_timestamp: i64,
    done: Option<oneshot::Sender<()>>,
}

pub struct Log {
    pub tp: TopicPartition,
    dir: PathBuf,
    pub config: TopicConfig,
    pub(super) segments: Vec<Segment>,
    pub log_start_offset: Offset,
    /// Next offset to assign, counting queued batches (the log end offset).
    next_offset: Offset,
    /// Offset after the last written batch (durable under the topic's policy): followers
    /// read below it.
    pub written_end: Offset,
    /// Consumers read below it: `written_end` on a partition without followers; on a
    /// replicated one, it never goes back and moves to the smaller of `written_end` and
    /// `high_watermark_bound` (what every in-sync replica has, or on a follower the
    /// leader's high watermark).
    pub high_watermark: Offset,
    high_watermark_bound: Option<Offset>,
    /// The leader epoch stamped into the batches this log assigns offsets to.
    pub leader_epoch: LeaderEpoch,
    /// Clustered: the first offset of each leader epoch, kept in `leader-epoch-checkpoint`.
    pub epochs: LeaderEpochs,
    epochs_tracked: bool,
    /// A new epoch the flusher writes to the file before the next batches.
    epochs_dirty: bool,
    pub(super) cache: BatchCache,
    /// The shard's cache of open segment files (see `files.rs`).
    pub(super) files: Rc<OpenFiles>,
    pending: Vec<Pending>,
    /// The batches queued or being written (offsets assigned, not yet in `cache` nor in the
    /// segment), oldest first: a follower reads them before they land here
    /// (`read_for_follower`), so that its write overlaps this one.
    unwritten: VecDeque<CachedBatch>,
    /// True while a flusher task (or a roll, or close) owns the active segment.
    busy: bool,
    pub(super) deleted: bool,
    /// Held by a truncation, a restart or a close (`take_when_idle`): the cleaner does not
    /// swap segments meanwhile.
    pub(super) held: bool,
    /// True while the cleaner swaps cleaned segments in (`cleaner.rs`): retention,
    /// DeleteRecords, truncations and closes wait for it.
    pub(super) swapping: bool,
    /// Counts the cleaner's swaps, odd while one is under way: a read that opened a file
    /// across a swap reads again (its index positions may be the old file's).
    pub(super) swap_generation: u64,
    /// Offsets below this were cleaned (the first dirty offset; `cleaner-offset-checkpoint`).
    pub(super) cleaned_to: Offset,
    /// Idempotent producers' epochs and last batches, counting queued batches.
    pub producers: ProducerStateTable,
    /// Duplicates waiting for their original to be durable: (original's last offset, waker).
    durable_waiters: Vec<(Offset, oneshot::Sender<()>)>,
    /// acks=all produces of a replicated partition waiting for the high watermark to pass
    /// their last offset; dropped (the produce fails) when this node stops leading.
    replication_waiters: Vec<(Offset, oneshot::Sender<()>)>,
    /// Runs of batches the flusher wrote since open (see `storage::IoTotals`): how many
    /// appends group commit shared each write among, for tests.
    pub writes: u64,
    /// What was appended and read since open, for `metrics` (a `Cell`: reads borrow the
    /// log shared).
    pub traffic: Cell<Traffic>,
}

/// What recovery found, for the start-up log line.
#[derive(Debug, Default, Clone, Copy)]
pub struct RecoveryReport {
    pub segments: usize,
    pub truncated_segments: usize,
    /// Idempotent producers known after recovery.
    pub producers: usize,
    /// Batch headers read after the producer-state snapshot.
    pub replayed_batches: usize,
    /// Logs whose active segment and producer state came from the last clean stop's record.
    pub resumed: usize,
}

impl Log {
    /// Opens (recovering) or creates the log of `tp` under `data_dir`, with a batch cache of
    /// its own (`BATCH_CACHE_BYTES_PER_LOG`) and no budget of open files: for logs outside a
    /// shard's shared budgets (tests). `resume` as for `open_in`.
    pub async fn open(
        data_dir: &Path,
        tp: TopicPartition,
        config: TopicConfig,
        resume: Option<&LogState>,
    ) -> Result<(Log, RecoveryReport), Error> {
        let cache = CacheBudget::new(BATCH_CACHE_BYTES_PER_LOG);
        Log::open_in(data_dir, tp, config, cache, &OpenFiles::unbounded(), resume).await
    }

    /// Opens (recovering) or creates the log of `tp` under `data_dir`; its recent batches
    /// are cached under `cache` and its descriptors under `files` (the shard's budgets,
    /// shared by its partitions). `resume` is what the last clean stop recorded of it, if
    /// anything (`clean_stop.rs`): its active segment and producer state then come from
    /// there when the files still match.
    pub async fn open_in(
        data_dir: &Path,
        tp: TopicPartition,
        config: TopicConfig,
        cache: Rc<CacheBudget>,
        files: &Rc<OpenFiles>,
        resume: Option<&LogState>,
    ) -> Result<(Log, RecoveryReport), Error> {
        let dir = data_dir.join(tp.dir_name());
        std::fs::create_dir_all(&dir)?;
        let now = now_ms();
        // A clean that a crash interrupted: finished if it had swapped, forgotten if not.
        crate::storage::cleaner::recover_swaps(&dir)?;
        let bases = segment::list_segments(&dir)?;
        let mut report = RecoveryReport::default();
        let mut segments: Vec<Segment> = Vec::with_capacity(bases.len().max(1));
        let mut resumed = false;
        for (i, &base) in bases.iter().enumerate() {
            let is_last = i + 1 == bases.len();
            let resume = resume.filter(|_| is_last);
            let (opened, repairs) = Segment::open(&dir, base, now, files, resume).await?;
            resumed = repairs.resumed;
            let torn = repairs.torn;
            report.segments += 1;
            let follows = segments.last().is_none_or(|prev| prev.next_offset == opened.base_offset);
            if !follows {
                let base = base.0;
                tracing::warn!(%tp, base, "segment does not follow the one before; dropping it on");
                for later in &bases[i..] {
                    remove_segment_files(&dir, *later);
                }
                break;
            }
            if torn {
                report.truncated_segments += 1;
                let (base, size) = (base.0, opened.size);
                tracing::warn!(%tp, base, size, "truncated a torn segment tail");
            }
            // A sealed segment that recovery changed is sealed again (true length, indexes
            // on disk); one that was sound, as every one is after a clean stop, costs nothing
            // more than reading its indexes and the batches after the last entry.
            if !is_last && (repairs.torn || repairs.index_rebuilt) {
                opened.seal().await?;
            }
            // A sealed segment cut short is followed only if it still ends where the next
            // one begins (checked above on the next turn): the bytes cut were then padding,
            // such as zeros a roll's truncation left when a power loss undid it, and the
            // segments after it hold acknowledged records. One that lost records ends
            // earlier, and the segments after it are dropped there, as Kafka does.
            segments.push(opened);
        }
        if segments.is_empty() {
            let created = Segment::create(&dir, Offset::ZERO, config.segment_bytes, now, files);
            segments.push(created.await?);
            if config.durability == Durability::Fsync {
                // The segment's name in the partition directory, and the directory's in the
                // data dir (it may be new too), before any write to it is acknowledged.
                crate::storage::sync_new_entry(&dir).await;
                crate::storage::sync_new_entry(data_dir).await;
            }
        }
        let first_offset = segments[0].base_offset;
        let next_offset = segments.last().map_or(Offset::ZERO, |s| s.next_offset);
        // DeleteRecords may have moved the start inside the first segment.
        let log_start_offset = read_log_start(&dir)
            .filter(|start| (first_offset..=next_offset).contains(start))
            .unwrap_or(first_offset);
        let from_clean_stop = resume
            .filter(|_| resumed)
            .and_then(|state| ProducerStateTable::decode_snapshot(&state.producers).ok())
            .filter(|(offset, _)| Some(*offset) == resume.map(|state| state.next_offset));
        let (snapshot_offset, mut producers) = match from_clean_stop {
            Some(found) => found,
            None => snapshot::load(&dir, first_offset, next_offset),
        };
        report.resumed = usize::from(resumed);
        report.replayed_batches =
            snapshot::replay(&segments, snapshot_offset, &mut producers, now).await?;
        report.producers = producers.len();
        let cleaned_to = crate::storage::cleaner::read_checkpoint(&dir);
        let log = Log {
            tp,
            dir,
            config,
            segments,
            log_start_offset,
            next_offset,
            written_end: next_offset,
            high_watermark: next_offset,
            high_watermark_bound: None,
            leader_epoch: LeaderEpoch::INITIAL,
            epochs: LeaderEpochs::default(),
            epochs_tracked: false,
            epochs_dirty: false,
            cache: BatchCache::new(cache),
            files: files.clone(),
            pending: Vec::new(),
            unwritten: VecDeque::new(),
            busy: false,
            deleted: false,
            held: false,
            swapping: false,
            swap_generation: 0,
            cleaned_to,
            producers,
            durable_waiters: Vec::new(),
            replication_waiters: Vec::new(),
            writes: 0,
            traffic: Cell::new(Traffic::default()),
        };
        Ok((log, report))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn size_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.size).sum()
    }

    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    fn active(&mut self) -> &mut Segment {
        let last = self.segments.len() - 1;
        &mut self.segments[last]
    }
}

/// Appends validated batches (each one whole batch, checked by `batch::validate`) and waits
/// until they are durable under the topic's policy.
pub async fn append(log: &Rc<RefCell<Log>>, batches: Vec<Bytes>) -> Result<AppendInfo, Error> {
    let mut appending = enqueue(log, batches)?;
    appending.wait().await;
    appending.outcome().unwrap_or(Err(Error::Deleted))
}

/// An append whose offsets are assigned and whose write is queued (or, for a duplicate, whose
/// original is known): the second stage of a produce. Lives on the log's shard.
#[derive(Debug)]
pub struct Appending {
    info: AppendInfo,
    /// Fires when the batches (or a duplicate's original) are durable; `None` once fired or
    /// when the original was durable already.
    durable: Option<oneshot::Receiver<()>>,
    /// Set when the log was deleted before the write landed.
    deleted: bool,
}

impl Appending {
    /// An append that is already answered (a duplicate of a delayed batch): `info` at once.
    pub fn ready(info: AppendInfo) -> Appending {
        Appending { info, durable: None, deleted: false }
    }

    /// The same write, answered with `info` once it is durable (a delayed batch: written to
    /// the partition's delay log, its records placed in the partition later).
    pub fn answered_as(self, info: AppendInfo) -> Appending {
        Appending { info, ..self }
    }

    /// Waits until the append is durable (or its log deleted). Cancel-safe: dropping the
    /// future leaves the append as it was, to be waited for or asked again.
    pub async fn wait(&mut self) {
        if let Some(durable) = self.durable.as_mut() {
            self.deleted = durable.await.is_err();
            self.durable = None;
        }
    }

    /// Where the append landed once it is durable; `None` while it is still being written.
    pub fn outcome(&mut self) -> Option<Result<AppendInfo, Error>> {
        if let Some(durable) = self.durable.as_mut() {
            match durable.try_recv() {
                Ok(Some(())) => self.durable = None,
                Ok(None) => return None,
                Err(_) => {
                    self.durable = None;
                    self.deleted = true;
                }
            }
        }
        Some(if self.deleted { Err(Error::Deleted) } else { Ok(self.info) })
    }
}

/// The first stage of an append, without an await: checks the idempotent producers, assigns
/// offsets and queues the batches for the log's flusher. Calls made in some order get offsets
/// in that order, which is what lets a connection admit pipelined requests one after another
/// and wait for their writes together.
pub fn enqueue(log: &Rc<RefCell<Log>>, batches: Vec<Bytes>) -> Result<Appending, Error> {
    assert!(!batches.is_empty());
    let (done_tx, done_rx) = oneshot::channel();
    let (info, start_flusher) = {
        let mut l = log.borrow_mut();
        if l.deleted {
            return Err(Error::Deleted);
        }
        let append_time = match l.config.timestamp_type {
            TimestampType::LogAppendTime => now_ms(),
            TimestampType::CreateTime => -1,
        };
        if let Some(original) = check_producers(&mut l, &batches, append_time)? {
            let info = AppendInfo {
                base_offset: original.first_offset,
                log_append_time: if append_time >= 0 { original.timestamp } else { -1 },
                log_start_offset: l.log_start_offset,
            };
            if original.last_offset < l.high_watermark {
                return Ok(Appending { info, durable: None, deleted: false });
            }
            // The original is still queued: answer when its write completes, not before.
            l.durable_waiters.push((original.last_offset, done_tx));
            (info, false)
        } else {
            queue(&mut l, batches, append_time, done_tx)
        }
    };
    if start_flusher {
        glommio::spawn_local(flush_loop(log.clone())).detach();
    }
    Ok(Appending { info, durable: Some(done_rx), deleted: false })
}

/// A coordinator's append to its own internal partition (Kafka's `AppendOrigin.COORDINATOR`):
/// like `enqueue`, but without the idempotent-producer checks, since a group coordinator
/// writes producers' transactional offset commits (no sequence) and the markers that end
/// them (control batches) itself. The transaction index learns both, as a follower's
/// would, so the partition's last stable offset and aborted transactions stay right.
pub fn enqueue_coordinator(
    log: &Rc<RefCell<Log>>,
    batches: Vec<Bytes>,
) -> Result<Appending, Error> {
    assert!(!batches.is_empty());
    let (done_tx, done_rx) = oneshot::channel();
    let (info, start_flusher) = {
        let mut l = log.borrow_mut();
        if l.deleted {
            return Err(Error::Deleted);
        }
        let now = now_ms();
        let count = batches.len();
        let mut done = Some(done_tx);
        let mut first = None;
        let mut start = false;
        for (i, bytes) in batches.into_iter().enumerate() {
            let control = {
                let header = BatchHeader::parse(&bytes).unwrap_or_else(|_| unreachable!());
                let producer_id = header.producer_id();
                (header.is_control() && producer_id.is_valid()).then(|| {
                    let outcome = crate::model::records::control_outcome(&bytes);
                    (producer_id, header.producer_epoch(), outcome)
                })
            };
            // Only the last batch's write tells the caller; the others' senders are dropped
            // unheard (they land before it, in order).
            let tx = if i + 1 == count {
                done.take().unwrap_or_else(|| unreachable!())
            } else {
                oneshot::channel().0
            };
            let (queued, started) = queue(&mut l, vec![bytes], -1, tx);
            start |= started;
            first = first.or(Some(queued));
            if let Some((producer_id, producer_epoch, outcome)) = control {
                let _ = l.producers.on_marker(producer_id, producer_epoch, now);
                if let Some(outcome) = outcome {
                    l.producers.txns.on_marker(producer_id, queued.base_offset, outcome);
                }
            }
        }
        (first.unwrap_or_else(|| unreachable!()), start)
    };
    if start_flusher {
        glommio::spawn_local(flush_loop(log.clone())).detach();
    }
    Ok(Appending { info, durable: Some(done_rx), deleted: false })
}

/// Delayed delivery, at admission: runs the idempotent-producer checks of `batches` (bound
/// for the partition's delay log, not for this log) against this log's producer state and
/// records them without offsets (`ProducerStateTable::try_append_delayed`), in the same
/// order as `enqueue` checks, so that the producer's next batch follows them. `Some` is the
/// original of a duplicate (a retry: nothing is scheduled again).
pub fn admit_delayed(
    log: &Rc<RefCell<Log>>,
    batches: &[Bytes],
) -> Result<Option<producer_state::BatchMetadata>, Error> {
    let mut l = log.borrow_mut();
    if l.deleted {
        return Err(Error::Deleted);
    }
    let producer_batches = producer_batches_of(batches, -1)?;
    if producer_batches.is_empty() {
        return Ok(None);
    }
    match l.producers.try_append_delayed(&producer_batches, now_ms()) {
        Ok(AppendCheck::Append) => Ok(None),
        Ok(AppendCheck::Duplicate(original)) => Ok(Some(original)),
        Err(e) => Err(Error::Producer(e)),
    }
}

/// Delayed delivery, at start-up: a delayed batch read back from the partition's delay log
/// (`ProducerStateTable::restore_delayed`), since a crash may have left this log's producer
/// state without it.
pub fn restore_delayed(log: &Rc<RefCell<Log>>, batch: &[u8]) {
    let Ok(header) = BatchHeader::parse(batch) else { return };
    let producer_batch = ProducerBatch::from_header(&header, header.max_timestamp());
    log.borrow_mut().producers.restore_delayed(&producer_batch, now_ms());
}

/// Delayed delivery: the next base sequence of the broker's delivery producer
/// (`producer_id`, epoch 0) in this log, 0 when it has none.
pub fn delivery_sequence_next(log: &Rc<RefCell<Log>>, producer_id: ProducerId) -> i32 {
    let l = log.borrow();
    let last = l.producers.get(producer_id).and_then(|entry| entry.batches.back());
    last.map_or(0, |m| m.last_sequence.wrapping_add(1).max(0))
}

/// Delayed delivery: appends one batch of the broker's delivery producer (see
/// `partition::delay`), unless this log already has it (its last sequence is at or below
/// the producer's last one here: a delivery repeated after a crash). None: already here.
pub fn enqueue_delivery(log: &Rc<RefCell<Log>>, batch: Bytes) -> Result<Option<Appending>, Error> {
    {
        let l = log.borrow();
        let header = BatchHeader::parse(&batch).unwrap_or_else(|_| unreachable!());
        let producer_batch = ProducerBatch::from_header(&header, header.max_timestamp());
        assert!(producer_batch.has_producer_id());
        let entry = l.producers.get(producer_batch.producer_id);
        let known = entry.filter(|entry| entry.epoch == producer_batch.producer_epoch);
        let last = known.and_then(|entry| entry.batches.back()).map(|m| m.last_sequence);
        if last.is_some_and(|last| producer_batch.last_sequence() <= last) {
            return Ok(None);
        }
    }
    enqueue(log, vec![batch]).map(Some)
}

/// A transaction marker for the partition, asked for by the transaction coordinator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marker {
    pub producer_id: ProducerId,
    pub producer_epoch: ProducerEpoch,
    pub outcome: TxnOutcome,
    pub coordinator_epoch: i32,
}

/// Appends a transaction marker (a control batch built here) and waits until it is
/// durable. Ends the producer's open transaction in this partition: the last stable offset
/// moves past it, and an abort joins the aborted-transactions index. Returns its offset.
pub async fn append_marker(log: &Rc<RefCell<Log>>, marker: Marker) -> Result<Offset, Error> {
    let (done_tx, done_rx) = oneshot::channel();
    let (info, start_flusher) = {
        let mut l = log.borrow_mut();
        if l.deleted {
            return Err(Error::Deleted);
        }
        let now = now_ms();
        l.producers
            .on_marker(marker.producer_id, marker.producer_epoch, now)
            .map_err(Error::Producer)?;
        let bytes = crate::model::records::build_control_batch(
            now,
            marker.producer_id,
            marker.producer_epoch,
            marker.outcome,
            marker.coordinator_epoch,
        );
        let append_time = match l.config.timestamp_type {
            TimestampType::LogAppendTime => now,
            TimestampType::CreateTime => -1,
        };
        let queued = queue(&mut l, vec![Bytes::from(bytes)], append_time, done_tx);
        l.producers.txns.on_marker(marker.producer_id, queued.0.base_offset, marker.outcome);
        queued
    };
    if start_flusher {
        glommio::spawn_local(flush_loop(log.clone())).detach();
    }
    done_rx.await.map_err(|_| Error::Deleted)?;
    Ok(info.base_offset)
}

/// DeleteRecords: moves the log start up to `offset` (-1: the high watermark), deletes the
/// whole segments below it (never the active one) and records the start in
/// `log-start-offset` next to the segments (temporary file, fsync, rename), so that a
/// restart keeps it. Returns the new log start (the low watermark).
pub async fn delete_records(log: &Rc<RefCell<Log>>, offset: Offset) -> Result<Offset, Error> {
    wait_for_swap(log).await;
    let (dir, start, removed) = {
        let mut l = log.borrow_mut();
        if l.deleted {
            return Err(Error::Deleted);
        }
        let offset = if offset == Offset::NONE { l.high_watermark } else { offset };
        if offset < Offset::ZERO || offset > l.high_watermark {
            return Err(Error::OffsetOutOfRange);
        }
        if offset <= l.log_start_offset {
            return Ok(l.log_start_offset);
        }
        l.log_start_offset = offset;
        let mut count = 0;
        while count + 1 < l.segments.len() && l.segments[count + 1].base_offset <= offset {
            count += 1;
        }
        let removed: Vec<Segment> = l.segments.drain(..count).collect();
        l.producers.txns.truncate_start(offset);
        (l.dir.clone(), offset, removed)
    };
    segment::remove(removed).await;
    glommio::executor().spawn_blocking(move || write_log_start(&dir, start)).await?;
    Ok(start)
}

/// Waits until no cleaner swap is under way (they take milliseconds).
async fn wait_for_swap(log: &Rc<RefCell<Log>>) {
    while log.borrow().swapping {
        glommio::timer::sleep(std::time::Duration::from_millis(1)).await;
    }
}

const LOG_START_FILE: &str = "log-start-offset";

fn read_log_start(dir: &Path) -> Option<Offset> {
    std::fs::read_to_string(dir.join(LOG_START_FILE)).ok()?.trim().parse().ok().map(Offset)
}

fn write_log_start(dir: &Path, start: Offset) -> std::io::Result<()> {
    use std::io::Write;
    let temporary = dir.join(format!("{LOG_START_FILE}.tmp"));
    let mut file = std::fs::File::create(&temporary)?;
    writeln!(file, "{}", start.0)?;
    file.sync_all()?;
    std::fs::rename(&temporary, dir.join(LOG_START_FILE))?;
    std::fs::File::open(dir)?.sync_all()
}

/// The last stable offset: read_committed consumers read below it.
pub fn last_stable_offset(log: &Rc<RefCell<Log>>) -> Offset {
    let l = log.borrow();
    l.producers.txns.last_stable_offset(l.high_watermark)
}

// ----- replication ------------------------------------------------------------------------

/// Sets how the log takes part in replication, from its partition's placement: the leader
/// epoch it stamps into the batches it assigns offsets to, whether it keeps its leader
/// epochs (every partition of a clustered node; loaded from the file the first time), and
/// whether its high watermark waits for a bound (a replicated partition). Without a bound
/// the high watermark is the written end again.
pub fn set_replication(log: &Rc<RefCell<Log>>, leader_epoch: LeaderEpoch, replicated: bool) {
    let mut l = log.borrow_mut();
    l.leader_epoch = leader_epoch;
    if !l.epochs_tracked {
        l.epochs_tracked = true;
        l.epochs = LeaderEpochs::load(&l.dir, l.next_offset);
    }
    match (replicated, l.high_watermark_bound) {
        (true, None) => l.high_watermark_bound = Some(l.high_watermark),
        (false, _) => {
            // Not replicated (any more): the written end, also from a start held back by
            // `start_high_watermark`.
            l.high_watermark_bound = None;
            advance_high_watermark(&mut l);
        }
        _ => {}
    }
}

/// A clustered node's log, just opened: its high watermark starts at the checkpointed one
/// (`high_watermarks`), or at its log start when there is none, never beyond its end; it
/// climbs from there once the log takes part in replication (`set_replication`).
pub fn start_high_watermark(log: &Rc<RefCell<Log>>, checkpointed: Option<Offset>) {
    let mut l = log.borrow_mut();
    let start = checkpointed.unwrap_or(l.log_start_offset);
    l.high_watermark = start.max(l.log_start_offset).min(l.written_end);
}

/// The high watermark of a replicated log, to checkpoint; None for one that is not.
pub fn replicated_high_watermark(l: &Log) -> Option<Offset> {
    l.high_watermark_bound.map(|_| l.high_watermark)
}

/// A replicated log's new high watermark bound: on a leader the smallest log end of its
/// in-sync followers, on a follower the leader's high watermark.
pub fn set_high_watermark_bound(log: &Rc<RefCell<Log>>, bound: Offset) {
    let mut l = log.borrow_mut();
    if l.high_watermark_bound.is_some() {
        l.high_watermark_bound = Some(bound);
        advance_high_watermark(&mut l);
    }
}

/// Fires once the high watermark passes `last_offset`; None when it already has.
pub fn wait_high_watermark(
    log: &Rc<RefCell<Log>>,
    last_offset: Offset,
) -> Option<oneshot::Receiver<()>> {
    let mut l = log.borrow_mut();
    if last_offset < l.high_watermark || l.deleted {
        return None;
    }
    let (sender, receiver) = oneshot::channel();
    l.replication_waiters.push((last_offset, sender));
    Some(receiver)
}

/// This node stopped leading the partition: the produces waiting for its high watermark
/// fail (their records may be cut by the new leader's log).
pub fn drop_replication_waiters(log: &Rc<RefCell<Log>>) -> usize {
    let waiters = std::mem::take(&mut log.borrow_mut().replication_waiters);
    waiters.len()
}

/// Writes a producer-state snapshot of the log now, named by its next offset, and waits until
/// it is on disk and the log's writes have reached that offset (so that recovery can use it).
/// For a caller about to drop another copy of that state: delayed delivery trims its delay
/// log, whose records are what restores the admissions of delayed batches (recorded in this
/// log's producer state without offsets) after a crash. False: not written.
pub async fn snapshot_producers(log: &Rc<RefCell<Log>>) -> bool {
    let (dir, offset, bytes) = {
        let l = log.borrow();
        if l.deleted {
            return false;
        }
        (l.dir.clone(), l.next_offset, l.producers.encode_snapshot(l.next_offset))
    };
    let written = glommio::executor()
        .spawn_blocking(move || snapshot::write(&dir, offset, &bytes, Flush::Now))
        .await;
    if let Err(e) = written {
        tracing::warn!(tp = %log.borrow().tp, "cannot write a producer snapshot: {e}");
        return false;
    }
    if offset > Offset::ZERO {
        if let Some(reached) = wait_high_watermark(log, Offset(offset.0 - 1)) {
            let _ = reached.await;
        }
    }
    !log.borrow().deleted
}

/// How many whole segments lie below `offset` (never the active one): what
/// `delete_segments_before` would delete.
pub fn segments_before(log: &Rc<RefCell<Log>>, offset: Offset) -> usize {
    whole_segments_before(&log.borrow(), offset)
}

fn whole_segments_before(l: &Log, offset: Offset) -> usize {
    let mut count = 0;
    while count + 1 < l.segments.len() && l.segments[count + 1].base_offset <= offset {
        count += 1;
    }
    count
}

/// Waits until no write of the log is queued or running (nothing is claimed: a write
/// queued afterwards runs as usual).
pub async fn wait_idle(log: &Rc<RefCell<Log>>) {
    loop {
        {
            let l = log.borrow();
            if !l.busy && l.pending.is_empty() {
                return;
            }
        }
        glommio::timer::sleep(std::time::Duration::from_millis(1)).await;
    }
}

/// The offset the next batch gets (the log end offset, counting queued batches).
pub fn log_end(log: &Rc<RefCell<Log>>) -> Offset {
    log.borrow().next_offset
}

/// A follower's append: batches as the leader wrote them (offsets, leader epochs and
/// producer fields kept), which must start at the log end and follow each other. The
/// producer state and the transaction index learn them as recovery would (a follower that
/// becomes leader then knows its producers). Fires like `enqueue` once written.
pub fn enqueue_replica(log: &Rc<RefCell<Log>>, batches: Vec<Bytes>) -> Result<Appending, Error> {
    assert!(!batches.is_empty());
    let (done_tx, done_rx) = oneshot::channel();
    let (info, start_flusher) = {
        let mut l = log.borrow_mut();
        if l.deleted {
            return Err(Error::Deleted);
        }
        let mut expected = l.next_offset;
        for bytes in &batches {
            let header = BatchHeader::parse(bytes).map_err(|_| Error::OffsetOutOfRange)?;
            if header.base_offset() != expected || header.size_bytes() != bytes.len() {
                return Err(Error::OffsetOutOfRange);
            }
            expected = header.last_offset() + 1;
        }
        let first_offset = l.next_offset;
        let now = now_ms();
        let count = batches.len();
        let mut done = Some(done_tx);
        for (i, bytes) in batches.into_iter().enumerate() {
            let (base_offset, last_offset, max_timestamp, epoch) = {
                let header = BatchHeader::parse(&bytes).unwrap_or_else(|_| unreachable!());
                let base_offset = header.base_offset();
                let producer_id = header.producer_id();
                if header.is_control() && producer_id.is_valid() {
                    let _ = l.producers.on_marker(producer_id, header.producer_epoch(), now);
                    if let Some(outcome) = crate::model::records::control_outcome(&bytes) {
                        l.producers.txns.on_marker(producer_id, base_offset, outcome);
                    }
                } else if producer_id.is_valid() {
                    let batch = ProducerBatch::from_header(&header, header.max_timestamp());
                    l.producers.replay(&batch, base_offset, now);
                    if header.is_transactional() {
                        l.producers.txns.on_data(producer_id, base_offset);
                    }
                }
                let epoch = header.partition_leader_epoch();
                (base_offset, header.last_offset(), header.max_timestamp(), epoch)
            };
            note_epoch(&mut l, epoch, base_offset);
            l.next_offset = last_offset + 1;
            let done = if i + 1 == count { done.take() } else { None };
            l.unwritten.push_back(CachedBatch { base_offset, last_offset, bytes: bytes.clone() });
            l.pending.push(Pending { bytes, base_offset, last_offset, max_timestamp, done });
        }
        let info = AppendInfo {
            base_offset: first_offset,
            log_append_time: -1,
            log_start_offset: l.log_start_offset,
        };
        let start = !l.busy;
        l.busy = true;
        (info, start)
    };
    if start_flusher {
        glommio::spawn_local(flush_loop(log.clone())).detach();
    }
    Ok(Appending { info, durable: Some(done_rx), deleted: false })
}

/// Cuts the log back to `offset` (a follower whose log diverged from its leader's, KIP-101):
/// waits for queued writes, cuts the segment holding `offset` at the batch that holds it
/// (everything from that batch on goes; the follower fetches it again), removes the
/// segments after it, their producer snapshots and leader epochs past the cut, and opens
/// the log again from its files, as recovery would. The high watermark never passes the new
/// end. Nothing at or below `offset` changes.
pub async fn truncate_to(log: &Rc<RefCell<Log>>, offset: Offset) -> Result<(), Error> {
    while_idle(log, truncate_idle(log, offset)).await
}

/// Runs `change` once the log's queued writes are done, with the flusher held off (the log
/// is `busy`), then lets the flusher take what was queued meanwhile.
async fn while_idle(
    log: &Rc<RefCell<Log>>,
    change: impl std::future::Future<Output = Result<(), Error>>,
) -> Result<(), Error> {
    take_when_idle(log).await;
    if log.borrow().deleted {
        let mut l = log.borrow_mut();
        l.busy = false;
        l.held = false;
        return Err(Error::Deleted);
    }
    let result = change.await;
    let restart = {
        let mut l = log.borrow_mut();
        l.held = false;
        l.busy = !l.pending.is_empty();
        l.busy
    };
    if restart {
        glommio::spawn_local(flush_loop(log.clone())).detach();
    }
    result
}

async fn truncate_idle(log: &Rc<RefCell<Log>>, offset: Offset) -> Result<(), Error> {
    let (cut_index, opening, scan_from, size) = {
        let l = log.borrow();
        if offset >= l.next_offset {
            return Ok(());
        }
        let at = l.segments.partition_point(|s| s.base_offset <= offset).max(1) - 1;
        let segment = &l.segments[at];
        let relative = (offset - segment.base_offset).clamp(0, i64::from(u32::MAX)) as u32;
        let from = u64::from(segment.index.position_before(relative));
        (at, segment.direct(), from, segment.size)
    };
    let file = opening.await?;
    let cut_position = if offset <= log.borrow().segments[cut_index].base_offset {
        0
    } else {
        match locate(&file, scan_from, size, offset).await? {
            Some((position, _)) => position,
            None => size,
        }
    };
    drop(file);
    let (dir, tp, config, budget, files, later, cut_base, kept) = {
        let mut l = log.borrow_mut();
        l.cache.clear();
        let later: Vec<Segment> = l.segments.drain(cut_index + 1..).collect();
        let cut = l.segments.pop().unwrap_or_else(|| unreachable!());
        let cut_base = cut.base_offset;
        drop(cut);
        let kept = Kept::of(&l);
        l.segments.clear();
        (
            l.dir.clone(),
            l.tp.clone(),
            l.config.clone(),
            l.cache.budget(),
            l.files.clone(),
            later,
            cut_base,
            kept,
        )
    };
    segment::remove(later).await;
    let cut_dir = dir.clone();
    glommio::executor()
        .spawn_blocking(move || -> std::io::Result<()> {
            let log_file = std::fs::OpenOptions::new()
                .write(true)
                .open(cut_dir.join(segment::file_name(cut_base, "log")))?;
            log_file.set_len(cut_position)?;
            log_file.sync_all()?;
            for extension in ["index", "timeindex"] {
                let _ = std::fs::remove_file(cut_dir.join(segment::file_name(cut_base, extension)));
            }
            for snapshot in snapshot::list(&cut_dir) {
                if snapshot > offset {
                    let _ = std::fs::remove_file(
                        cut_dir.join(segment::file_name(snapshot, "snapshot")),
                    );
                }
            }
            let mut epochs = LeaderEpochs::load(&cut_dir, Offset(i64::MAX));
            epochs.truncate_from(offset);
            leader_epochs::write(&cut_dir, &epochs.encode())?;
            std::fs::File::open(&cut_dir)?.sync_all()
        })
        .await?;
    let data_dir = dir.parent().map(Path::to_path_buf).unwrap_or_default();
    let (mut reopened, _) = Log::open_in(&data_dir, tp, config, budget, &files, None).await?;
    reopened.epochs = LeaderEpochs::load(&dir, reopened.next_offset);
    let end = reopened.next_offset.0;
    let high_watermark = kept.high_watermark.min(reopened.next_offset);
    kept.reinstate(log, reopened, high_watermark);
    tracing::info!(tp = %log.borrow().tp, offset = offset.0, end, "truncated the log");
    Ok(())
}

/// Empties the log and starts it again at `offset` (Kafka's `truncateFullyAndStartAt`): a
/// follower whose log ends below its leader's log start can never fetch what it misses, so
/// it drops all it has and follows from the leader's start. Waits for queued writes, removes
/// every segment, producer snapshot and leader epoch, records the start, creates an empty
/// segment at `offset` and opens the log from its files. Nothing is kept below `offset`.
pub async fn restart_at(log: &Rc<RefCell<Log>>, offset: Offset) -> Result<(), Error> {
    while_idle(log, restart_idle(log, offset)).await
}

async fn restart_idle(log: &Rc<RefCell<Log>>, offset: Offset) -> Result<(), Error> {
    let (dir, tp, config, budget, files, all, kept) = {
        let mut l = log.borrow_mut();
        l.cache.clear();
        let all: Vec<Segment> = l.segments.drain(..).collect();
        let kept = Kept::of(&l);
        (
            l.dir.clone(),
            l.tp.clone(),
            l.config.clone(),
            l.cache.budget(),
            l.files.clone(),
            all,
            kept,
        )
    };
    segment::remove(all).await;
    let start_dir = dir.clone();
    glommio::executor()
        .spawn_blocking(move || -> std::io::Result<()> {
            for snapshot in snapshot::list(&start_dir) {
                let _ =
                    std::fs::remove_file(start_dir.join(segment::file_name(snapshot, "snapshot")));
            }
            leader_epochs::write(&start_dir, &LeaderEpochs::default().encode())?;
            write_log_start(&start_dir, offset)?;
            std::fs::File::open(&start_dir)?.sync_all()
        })
        .await?;
    let created = Segment::create(&dir, offset, config.segment_bytes, now_ms(), &files).await?;
    drop(created);
    crate::storage::sync_new_entry(&dir).await;
    let data_dir = dir.parent().map(Path::to_path_buf).unwrap_or_default();
    let (reopened, _) = Log::open_in(&data_dir, tp, config, budget, &files, None).await?;
    let high_watermark = kept.high_watermark.clamp(offset, reopened.next_offset);
    kept.reinstate(log, reopened, high_watermark);
    let tp = log.borrow().tp.clone();
    tracing::info!(%tp, offset = offset.0, "emptied the log to start at its leader's start");
    Ok(())
}

/// What a truncation carries over to the log it opens again.
struct Kept {
    leader_epoch: LeaderEpoch,
    bound: Option<Offset>,
    high_watermark: Offset,
    tracked: bool,
    writes: u64,
}

impl Kept {
    fn of(l: &Log) -> Kept {
        Kept {
            leader_epoch: l.leader_epoch,
            bound: l.high_watermark_bound,
            high_watermark: l.high_watermark,
            tracked: l.epochs_tracked,
            writes: l.writes,
        }
    }

    /// Puts `reopened`, with what was kept and `high_watermark`, in the place of the log,
    /// which keeps its waiters. The log stays busy: its caller (`while_idle`) ends that.
    fn reinstate(self, log: &Rc<RefCell<Log>>, mut reopened: Log, high_watermark: Offset) {
        reopened.leader_epoch = self.leader_epoch;
        reopened.epochs_tracked = self.tracked;
        reopened.high_watermark_bound = self.bound;
        reopened.high_watermark = high_watermark;
        reopened.writes = self.writes;
        reopened.busy = true;
        let mut l = log.borrow_mut();
        let waiters = std::mem::take(&mut l.durable_waiters);
        let replication_waiters = std::mem::take(&mut l.replication_waiters);
        *l = reopened;
        l.durable_waiters = waiters;
        l.replication_waiters = replication_waiters;
    }
}

/// Assigns offsets to `batches` and queues them for the flusher; `done` fires when the last
/// one is durable. Returns the append's info and whether a flusher must be started.
fn queue(
    l: &mut Log,
    batches: Vec<Bytes>,
    append_time: i64,
    done_tx: oneshot::Sender<()>,
) -> (AppendInfo, bool) {
    let first_offset = l.next_offset;
    let count = batches.len();
    let mut done = Some(done_tx);
    let epoch = l.leader_epoch;
    note_epoch(l, epoch, first_offset);
    for (i, original) in batches.into_iter().enumerate() {
        let mut bytes = BytesMut::from(&original[..]);
        let base_offset = l.next_offset;
        batch::assign_offset(&mut bytes, base_offset, epoch);
        if append_time >= 0 {
            batch::set_log_append_time(&mut bytes, append_time);
        }
        let (last_offset, max_timestamp) = {
            let header = BatchHeader::parse(&bytes).unwrap_or_else(|_| unreachable!());
            if header.is_transactional() && !header.is_control() && header.producer_id().is_valid()
            {
                l.producers.txns.on_data(header.producer_id(), base_offset);
            }
            (header.last_offset(), header.max_timestamp())
        };
        l.next_offset = last_offset + 1;
        let done = if i + 1 == count { done.take() } else { None };
        let bytes = bytes.freeze();
        l.unwritten.push_back(CachedBatch { base_offset, last_offset, bytes: bytes.clone() });
        l.pending.push(Pending { bytes, base_offset, last_offset, max_timestamp, done });
    }
    let info = AppendInfo {
        base_offset: first_offset,
        log_append_time: append_time,
        log_start_offset: l.log_start_offset,
    };
    let start = !l.busy;
    l.busy = true;
    (info, start)
}

/// Records that batches of `epoch` start at `start` in a log that tracks epochs; a new
/// epoch is written to its file by the flusher before the batches.
fn note_epoch(l: &mut Log, epoch: LeaderEpoch, start: Offset) {
    if l.epochs_tracked && l.epochs.assign(epoch, start) {
        l.epochs_dirty = true;
    }
}

/// Runs the idempotent-producer checks of one append and records its batches in the producer
/// state. `Some` is the original of a duplicate. Reads only batch headers.
fn check_producers(
    l: &mut Log,
    batches: &[Bytes],
    append_time: i64,
) -> Result<Option<producer_state::BatchMetadata>, Error> {
    let producer_batches = producer_batches_of(batches, append_time)?;
    if producer_batches.is_empty() {
        return Ok(None);
    }
    let first_offset = l.next_offset;
    match l.producers.try_append(&producer_batches, first_offset, now_ms()) {
        Ok(AppendCheck::Append) => Ok(None),
        Ok(AppendCheck::Duplicate(original)) => Ok(Some(original)),
        Err(e) => Err(Error::Producer(e)),
    }
}

/// The producer view of `batches` for the idempotence checks: empty when none carries a
/// producer id; a control batch from a client is refused.
fn producer_batches_of(batches: &[Bytes], append_time: i64) -> Result<Vec<ProducerBatch>, Error> {
    fn header_of(bytes: &Bytes) -> BatchHeader<'_> {
        BatchHeader::parse(bytes).unwrap_or_else(|_| unreachable!())
    }
    if batches.iter().all(|bytes| !header_of(bytes).producer_id().is_valid()) {
        return Ok(Vec::new());
    }
    if batches.iter().any(|bytes| header_of(bytes).is_control()) {
        return Err(Error::Producer(producer_state::ProducerError::ControlFromClient));
    }
    Ok(batches
        .iter()
        .map(|bytes| {
            let header = header_of(bytes);
            let max_timestamp = if append_time >= 0 { append_time } else { header.max_timestamp() };
            ProducerBatch::from_header(&header, max_timestamp)
        })
        .collect())
}

/// Writes queued batches until the queue is empty. Exactly one runs per log at a time.
async fn flush_loop(log: Rc<RefCell<Log>>) {
    loop {
        let idle_step = {
            let l = log.borrow();
            if l.pending.is_empty() && !l.deleted {
                zero_ahead_due(&l)
            } else {
                None
            }
        };
        if let Some(step) = idle_step {
            // Still busy: appends meanwhile queue for the next group write.
            zero_ahead(&log, step).await;
            continue;
        }
        hold_while_asked(&log).await;
        let (group, durability, roll_needed) = {
            let mut l = log.borrow_mut();
            if l.pending.is_empty() || l.deleted {
                l.busy = false;
                return;
            }
            let group = std::mem::take(&mut l.pending);
            let first_size = group[0].bytes.len() as u64;
            let roll = should_roll(&l, first_size, group[0].last_offset, now_ms());
            (group, l.config.durability, roll)
        };
        write_epochs_if_new(&log).await;
        if roll_needed {
            roll(&log, group[0].base_offset, WhenFull::Wait).await;
        }
        // Split the group where the active segment would overflow and roll between runs.
        let mut start = 0;
        while start < group.len() {
            let end = {
                let l = log.borrow();
                // Deleted during an await above (a reassignment moved the partition away
                // while its epochs file was written): it has no segments any more, and the
                // group's waiters fail with `Deleted` as their `done`s drop.
                if l.deleted {
                    return;
                }
                run_end(&l, &group, start)
            };
            write_run(&log, &group[start..end], durability).await;
            if !commit_run(&log, &group[start..end]) {
                return;
            }
            start = end;
            if start < group.len() {
                roll(&log, group[start].base_offset, WhenFull::Wait).await;
            }
        }
        for pending in group {
            if let Some(done) = pending.done {
                let _ = done.send(());
            }
        }
    }
}

/// Writes the leader epoch file when an epoch was added since the last write: before the
/// batches of that epoch, so the file covers every batch on disk.
async fn write_epochs_if_new(log: &Rc<RefCell<Log>>) {
    let (dir, text) = {
        let mut l = log.borrow_mut();
        if !l.epochs_dirty || l.deleted {
            return;
        }
        l.epochs_dirty = false;
        (l.dir.clone(), l.epochs.encode())
    };
    let written = glommio::executor().spawn_blocking(move || leader_epochs::write(&dir, &text));
    if let Err(e) = written.await {
        if !log.borrow().deleted {
            fatal(FatalReason::StorageIo, format!("cannot write the leader epoch file: {e}"));
        }
    }
}

/// A step of zeros to write ahead of the active segment's data, when one is due: under
/// `--durability fsync`, while the flusher is idle and the written lead over the data is
/// shorter than `ZERO_AHEAD_BYTES`, within what is already preallocated (so no more disk is
/// taken than without it).
///
/// Why: preallocation leaves unwritten extents, and the first write into each block converts
/// its extent, a journal update that the append's fdatasync must then commit. Measured with
/// fio on this machine's ext4: fdatasync after a 16 KiB write p50/p99 41/129 us into written
/// blocks, 110/561 us into fallocated ones. Zeros written (and synced) ahead while idle make
/// the appends overwrites of written blocks, whose fdatasync carries no metadata.
fn zero_ahead_due(l: &Log) -> Option<(u64, u64)> {
    if l.config.durability != Durability::Fsync {
        return None;
    }
    let active = l.segments.last()?;
    let data_end = active.size.next_multiple_of(active.alignment);
    let from = active.zeroed.max(data_end);
    let limit = active.allocated.min(active.size_max) / active.alignment * active.alignment;
    if from >= limit || from - data_end >= ZERO_AHEAD_BYTES {
        return None;
    }
    Some((from, limit.min(from + ZERO_AHEAD_STEP_BYTES)))
}

/// Test hook for the replication tests: with `SPATE_TEST_HOLD_WRITES=<file>`, while that
/// file exists the logs of user topics write nothing, their batches queued in memory (where
/// followers read them), as a leader whose writes are slow and that is killed before they
/// land. Costs one environment lookup per shard without the variable.
async fn hold_while_asked(log: &Rc<RefCell<Log>>) {
    thread_local! {
        static HOLD: Option<PathBuf> =
            std::env::var_os("SPATE_TEST_HOLD_WRITES").map(PathBuf::from);
    }
    let Some(file) = HOLD.with(Clone::clone) else { return };
    if log.borrow().tp.topic.starts_with("__") {
        return;
    }
    let mut said = false;
    while file.exists() {
        if !std::mem::replace(&mut said, true) {
            tracing::warn!(tp = %log.borrow().tp, "test hook: holding this log's writes");
        }
        glommio::timer::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// Writes zeros over `[from, to)` of the active segment and fdatasyncs them (see
/// `zero_ahead_due`). Optional work: a full disk gives it up for this segment.
async fn zero_ahead(log: &Rc<RefCell<Log>>, (from, to): (u64, u64)) {
    let (opening, base) = {
        let l = log.borrow();
        let active = l.segments.last().unwrap_or_else(|| unreachable!());
        (active.direct(), active.base_offset)
    };
    let Ok(file) = opening.await else { return };
    let mut zeros = file.alloc_dma_buffer((to - from) as usize);
    zeros.as_bytes_mut().fill(0);
    let written = match file.write_at(zeros, from).await {
        Ok(_) => file.fdatasync().await.map(drop),
        Err(e) => Err(e),
    };
    // A full disk gives zeroing up for this segment (`zeroed` past any limit).
    let reached = match written {
        Ok(()) => to,
        Err(e) => {
            let e = glommio_io_error(e);
            if !space::is_no_space(&e) {
                fatal(FatalReason::StorageIo, format!("log write failed: {e}; check the disk"));
            }
            u64::MAX
        }
    };
    count_zero_write();
    let mut l = log.borrow_mut();
    if l.deleted {
        return;
    }
    let active = l.active();
    if active.base_offset == base {
        active.zeroed = active.zeroed.max(reached);
    }
}

/// Makes a written run visible: index, cache, high watermark. False if the log was deleted.
fn commit_run(log: &Rc<RefCell<Log>>, run: &[Pending]) -> bool {
    let mut l = log.borrow_mut();
    if l.deleted {
        return false;
    }
    for pending in run {
        let position = l.active().size;
        let size = pending.bytes.len() as u64;
        l.active().record_batch(position, pending.last_offset, pending.max_timestamp, size);
        l.cache.push(CachedBatch {
            base_offset: pending.base_offset,
            last_offset: pending.last_offset,
            bytes: pending.bytes.clone(),
        });
        l.written_end = pending.last_offset + 1;
        // Runs are written in the order their offsets were assigned.
        if l.unwritten.front().is_some_and(|b| b.last_offset <= pending.last_offset) {
            l.unwritten.pop_front();
        }
    }
    let mut traffic = l.traffic.get();
    for pending in run {
        traffic.records_in += (pending.last_offset - pending.base_offset + 1) as u64;
        traffic.bytes_in += pending.bytes.len() as u64;
    }
    l.traffic.set(traffic);
    advance_high_watermark(&mut l);
    true
}

/// Moves the high watermark to what the bound allows (see `Log::high_watermark`) and wakes
/// the waiters it passed.
fn advance_high_watermark(l: &mut Log) {
    l.high_watermark = match l.high_watermark_bound {
        None => l.written_end,
        Some(bound) => l.high_watermark.max(l.written_end.min(bound)),
    };
    let high_watermark = l.high_watermark;
    for waiters in [&mut l.durable_waiters, &mut l.replication_waiters] {
        if waiters.is_empty() {
            continue;
        }
        let (passed, waiting): (Vec<_>, Vec<_>) =
            waiters.drain(..).partition(|(last, _)| *last < high_watermark);
        *waiters = waiting;
        for (_, waiter) in passed {
            let _ = waiter.send(());
        }
    }
}

/// The records of a stored batch, counted by its offsets (`last_offset_delta + 1`, as
/// appends count them); 0 for bytes that are not a batch header.
fn records_by_offset(batch: &[u8]) -> u64 {
    BatchHeader::parse(batch).map_or(0, |header| header.last_offset_delta().max(0) as u64 + 1)
}

fn should_roll(l: &Log, batch_size: u64, last_offset: Offset, now: i64) -> bool {
    let active = l.segments.last().unwrap_or_else(|| unreachable!());
    if active.size == 0 {
        return false;
    }
    active.size + batch_size > l.config.segment_bytes
        || now - active.created_ms > l.config.segment_ms
        || last_offset - active.base_offset > i64::from(u32::MAX)
}

/// End of the run of batches from `start` that fits in the active segment (at least one).
fn run_end(l: &Log, group: &[Pending], start: usize) -> usize {
    let active = l.segments.last().unwrap_or_else(|| unreachable!());
    let mut size = active.size;
    let mut end = start;
    while end < group.len() {
        let next = size + group[end].bytes.len() as u64;
        let overflows = next > l.config.segment_bytes
            || group[end].last_offset - active.base_offset > i64::from(u32::MAX);
        if end > start && overflows {
            break;
        }
        size = next;
        end += 1;
    }
    end
}

/// One O_DIRECT write of the tail block plus `run`, from the aligned tail position.
///
/// When the run starts in a partial tail block (written before) and goes past it, the tail
/// block and the rest are two writes, issued together: the tail block is then a pure
/// overwrite of written blocks and the rest lies wholly in preallocated (unwritten) space, and
/// ext4 can issue each without blocking. One write spanning both kinds of extent is not an
/// "overwrite" to ext4, cannot be issued with IOCB_NOWAIT, and io_uring hands it to a kernel
/// worker thread, with a thread hand-off and a wake-up per write. Counted with the io_uring
/// tracepoints at 50,000 small produces/s (block-aligned writes, see `Segment`): one write
/// per run, 94% of the writes punted; split, 2 of 21,546.
///
/// A full file system (ENOSPC from the write or the fdatasync, or a short write) is not fatal:
/// the run's offsets are assigned and its bytes are here, so the same bytes are written again
/// at the same positions (idempotent: nothing after them was written or acknowledged) after a
/// back-off, until the write goes through; `space::note_no_space` meanwhile closes the gates
/// that admit new writes. Rewriting before a second fdatasync is sound for O_DIRECT, unlike
/// the buffered "fsyncgate" case: the data never waited in the page cache to be lost, and the
/// rewrite puts every byte of the run on the device again before the fdatasync that covers
/// it. Any other failure ends the process (`fatal`).
async fn write_run(log: &Rc<RefCell<Log>>, run: &[Pending], durability: Durability) {
    let opening = {
        let l = log.borrow();
        if l.deleted {
            return;
        }
        l.segments.last().unwrap_or_else(|| unreachable!()).direct()
    };
    let file = match opening.await {
        Ok(file) => file,
        // A deleted log's files are gone; its waiters fail with `Deleted`.
        Err(_) if log.borrow().deleted => return,
        Err(e) => fatal(
            FatalReason::StorageIo,
            format!("cannot open the active segment: {e}; check the disk and `ulimit -n`"),
        ),
    };
    let (tail, tail_position, alignment, mut allocated, size_max) = {
        let mut l = log.borrow_mut();
        if l.deleted {
            return;
        }
        let active = l.active();
        // Only this flusher reads the tail; it puts the new one back below.
        let tail = std::mem::take(&mut active.tail);
        let alignment = active.alignment as usize;
        (tail, active.tail_position, alignment, active.allocated, active.size_max)
    };
    let mut pieces: Vec<&[u8]> = Vec::with_capacity(run.len() + 1);
    pieces.push(&tail);
    pieces.extend(run.iter().map(|p| &p.bytes[..]));
    let total: usize = pieces.iter().map(|piece| piece.len()).sum();
    let aligned = total.div_ceil(alignment) * alignment;
    let split = if !tail.is_empty() && aligned > alignment { alignment } else { aligned };
    let full = total - total % alignment;
    let mut new_tail = vec![0u8; total - full];
    copy_range(&pieces, full, &mut new_tail);
    let new_tail_position = tail_position + full as u64;
    let end = tail_position + aligned as u64;
    let mut retry_ms = NO_SPACE_RETRY_MS_MIN;
    loop {
        allocated = Segment::reserve(&file, allocated, end, size_max).await;
        let layout = RunLayout { position: tail_position, split, aligned };
        match write_attempt(&file, &pieces, layout, durability).await {
            Ok(()) => break,
            Err(e) => {
                space::note_no_space("a log write", &e);
                glommio::timer::sleep(std::time::Duration::from_millis(retry_ms)).await;
                retry_ms = (retry_ms * 2).min(NO_SPACE_RETRY_MS_MAX);
            }
        }
    }
    let mut l = log.borrow_mut();
    l.writes += 1;
    if l.deleted {
        return;
    }
    let active = l.active();
    active.tail = new_tail;
    active.tail_position = new_tail_position;
    active.allocated = active.allocated.max(allocated);
}

/// Where a run's bytes go: from `position` (aligned), `aligned` bytes, as two writes split at
/// `split` (see `write_run`).
#[derive(Debug, Clone, Copy)]
struct RunLayout {
    position: u64,
    split: usize,
    aligned: usize,
}

/// One attempt at a run's write (and its fdatasync under the `fsync` policy). Err: the file
/// system is full (or the write came back short), for the caller to retry; any other failure
/// ends the process.
async fn write_attempt(
    file: &glommio::io::DmaFile,
    pieces: &[&[u8]],
    layout: RunLayout,
    durability: Durability,
) -> Result<(), std::io::Error> {
    let mut writes = Vec::with_capacity(2);
    for (from, to) in [(0, layout.split), (layout.split, layout.aligned)] {
        if to > from {
            let mut buffer = file.alloc_dma_buffer(to - from);
            copy_range(pieces, from, buffer.as_bytes_mut());
            writes.push((layout.position + from as u64, buffer));
        }
    }
    let issued = writes.into_iter().map(|(position, buffer)| {
        let expected = buffer.len();
        async move { (expected, file.write_at(buffer, position).await) }
    });
    let mut full = None;
    for (expected, written) in futures::future::join_all(issued).await {
        match written {
            Ok(written) if written == expected => {}
            // On a file system that runs out of space part-way, O_DIRECT writes what it could
            // and returns the count; the rewrite then tells a full disk from a broken one.
            Ok(written) => {
                full = Some(std::io::Error::new(
                    std::io::ErrorKind::StorageFull,
                    format!("short O_DIRECT write ({written} of {expected} bytes)"),
                ));
            }
            Err(e) => {
                let e = glommio_io_error(e);
                if !space::is_no_space(&e) {
                    fatal(FatalReason::StorageIo, format!("log write failed: {e}; check the disk"))
                }
                full = Some(e);
            }
        }
    }
    if let Some(e) = full {
        return Err(e);
    }
    count_write();
    if durability == Durability::Fsync {
        if let Err(e) = file.fdatasync().await {
            let e = glommio_io_error(e);
            if !space::is_no_space(&e) {
                fatal(FatalReason::StorageIo, format!("fdatasync failed: {e}; check the disk"));
            }
            return Err(e);
        }
        count_fdatasync();
    }
    Ok(())
}

/// Copies the bytes from `from` of the concatenation of `pieces` into `out`, with zeros where
/// the pieces end before `out` does.
fn copy_range(pieces: &[&[u8]], from: usize, out: &mut [u8]) {
    let mut skip = from;
    let mut at = 0;
    for piece in pieces {
        if at == out.len() {
            return;
        }
        if skip >= piece.len() {
            skip -= piece.len();
            continue;
        }
        let take = (piece.len() - skip).min(out.len() - at);
        out[at..at + take].copy_from_slice(&piece[skip..skip + take]);
        at += take;
        skip = 0;
    }
    out[at..].fill(0);
}

/// What a roll does when the file system has no room for the new segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WhenFull {
    /// Batches wait for the segment: retry until space is freed.
    Wait,
    /// Retention asked for it: keep the active segment and go on deleting (the next pass
    /// rolls), so that retention never waits for the space it is about to free.
    Skip,
}

/// Seals the active segment and starts a new one at `base_offset`. The caller owns `busy`.
async fn roll(log: &Rc<RefCell<Log>>, base_offset: Offset, when_full: WhenFull) {
    let durability = log.borrow().config.durability;
    let (dir, preallocate, files, opening, size) = {
        let l = log.borrow();
        if l.deleted {
            // Deleted while its caller awaited: no segments left to seal.
            return;
        }
        let active = l.segments.last().unwrap_or_else(|| unreachable!());
        (l.dir.clone(), l.config.segment_bytes, l.files.clone(), active.direct(), active.size)
    };
    let truncated = match opening.await {
        Ok(file) => file.truncate(size).await.map_err(io_error),
        Err(e) => Err(e),
    };
    if log.borrow().deleted {
        return;
    }
    if let Err(e) = truncated {
        fatal(FatalReason::StorageIo, format!("cannot truncate a sealed segment: {e}"));
    }
    let created = create_segment(&dir, base_offset, preallocate, &files, when_full).await;
    let Some(created) = created else {
        // Not rolled: the active segment goes on, truncated to its size (preallocated again
        // by the next write).
        let mut l = log.borrow_mut();
        if !l.deleted {
            let active = l.active();
            active.allocated = active.size;
        }
        return;
    };
    if durability == Durability::Fsync {
        // The new segment's name, before the writes that follow the roll are acknowledged.
        crate::storage::sync_new_entry(&dir).await;
    }
    let index_writer = {
        let mut l = log.borrow_mut();
        if l.deleted {
            return;
        }
        {
            let old = l.active();
            // The sealed segment's bytes are all below its size now: every byte is stable.
            old.tail_position = old.size;
            old.tail.clear();
        }
        let writer = {
            let old = l.segments.last().unwrap_or_else(|| unreachable!());
            let base = old.base_offset;
            let offsets = old.index.encode_offsets();
            let times = old.index.encode_times();
            let dir = l.dir.clone();
            // The producer state counts every batch with an offset, queued ones included, so
            // the snapshot is named by the next offset (see snapshot.rs for a crash before
            // the queued batches are written).
            let snapshot_offset = l.next_offset;
            let snapshot_bytes = l.producers.encode_snapshot(snapshot_offset);
            move || {
                let _ = std::fs::write(dir.join(segment::file_name(base, "index")), offsets);
                let _ = std::fs::write(dir.join(segment::file_name(base, "timeindex")), times);
                if let Err(e) = snapshot::write(&dir, snapshot_offset, &snapshot_bytes, Flush::Now)
                {
                    tracing::warn!(dir = %dir.display(), "cannot write a producer snapshot: {e}");
                }
            }
        };
        l.segments.push(created);
        writer
    };
    glommio::executor().spawn_blocking(index_writer).await;
}

/// Creates the next segment of a roll; on a full file system, retried with back-off until
/// space is freed (the batches waiting for it stay queued), or given up (`WhenFull::Skip`:
/// None, with any file it left removed, so that recovery never sees a segment out of
/// order). Any other failure is fatal.
async fn create_segment(
    dir: &Path,
    base_offset: Offset,
    preallocate: u64,
    files: &Rc<OpenFiles>,
    when_full: WhenFull,
) -> Option<Segment> {
    let mut retry_ms = NO_SPACE_RETRY_MS_MIN;
    loop {
        match Segment::create(dir, base_offset, preallocate, now_ms(), files).await {
            Ok(created) => return Some(created),
            Err(Error::Io(e)) if space::is_no_space(&e) => {
                space::note_no_space("creating a segment", &e);
                if when_full == WhenFull::Skip {
                    remove_segment_files(dir, base_offset);
                    return None;
                }
                glommio::timer::sleep(std::time::Duration::from_millis(retry_ms)).await;
                retry_ms = (retry_ms * 2).min(NO_SPACE_RETRY_MS_MAX);
            }
            Err(e) => fatal(
                FatalReason::StorageIo,
                format!("cannot create a segment in {}: {e}", dir.display()),
            ),
        }
    }
}

/// Reads from `offset`: at most `size_bytes_max` bytes, but a whole first batch with
/// `FirstBatch::Whole` (KIP-74: a consumer must always make progress).
pub async fn read(
    log: &Rc<RefCell<Log>>,
    offset: Offset,
    size_bytes_max: usize,
    first: FirstBatch,
) -> Result<ReadOutcome, Error> {
    read_below(log, offset, size_bytes_max, first, Isolation::ReadUncommitted).await
}

/// `read`, or for a read_committed consumer, only batches below the last stable offset (and
/// the aborted transactions in that range).
pub async fn read_below(
    log: &Rc<RefCell<Log>>,
    offset: Offset,
    size_bytes_max: usize,
    first: FirstBatch,
    isolation: Isolation,
) -> Result<ReadOutcome, Error> {
    read_up_to(log, offset, size_bytes_max, first, isolation, false).await
}

/// A follower's read: like `read`, but past the high watermark (the follower's fetch is
/// what moves it), up to the log end: from the written end on, the batches still queued or
/// being written here, from memory. The follower's write then overlaps this log's own; the
/// high watermark still waits for this one (it never passes `written_end`). A leader that
/// crashes before its write lands may restart with followers ahead of it in the same epoch:
/// `partition::replicas::Followers::resumed` makes them truncate first.
pub async fn read_for_follower(
    log: &Rc<RefCell<Log>>,
    offset: Offset,
    size_bytes_max: usize,
) -> Result<ReadOutcome, Error> {
    read_up_to(log, offset, size_bytes_max, FirstBatch::Whole, Isolation::ReadUncommitted, true)
        .await
}

/// The queued and in-flight batches from the one holding `offset`: at most `size_bytes_max`
/// bytes, but always a whole first batch (a follower must make progress).
fn unwritten_from(
    unwritten: &VecDeque<CachedBatch>,
    offset: Offset,
    size_bytes_max: usize,
) -> Vec<Bytes> {
    let start = unwritten.partition_point(|b| b.last_offset < offset);
    let mut out = Vec::new();
    let mut size = 0;
    for batch in unwritten.range(start..) {
        if !out.is_empty() && size + batch.bytes.len() > size_bytes_max {
            break;
        }
        size += batch.bytes.len();
        out.push(batch.bytes.clone());
    }
    out
}

/// A read that a cleaner's swap overlapped is done again: it may have located its batch in
/// the old file and opened the new one (or found the old one's name gone). Swaps are rare
/// and short, and a read waits for one under way.
async fn read_up_to(
    log: &Rc<RefCell<Log>>,
    offset: Offset,
    size_bytes_max: usize,
    first: FirstBatch,
    isolation: Isolation,
    follower: bool,
) -> Result<ReadOutcome, Error> {
    loop {
        wait_for_swap(log).await;
        let generation = log.borrow().swap_generation;
        let read = read_once(log, offset, size_bytes_max, first, isolation, follower).await;
        if log.borrow().swap_generation == generation {
            return read;
        }
    }
}

async fn read_once(
    log: &Rc<RefCell<Log>>,
    offset: Offset,
    size_bytes_max: usize,
    first: FirstBatch,
    isolation: Isolation,
    follower: bool,
) -> Result<ReadOutcome, Error> {
    let committed = isolation == Isolation::ReadCommitted;
    let (opening, read_file, scan_from, end, stable_end, bound, base) = {
        let l = log.borrow();
        let visible_end = if follower { l.next_offset } else { l.high_watermark };
        // Out of range only past the log end (Kafka's `LocalLog.read`): a consumer's offset
        // between the high watermark and the log end reads nothing yet. A consumer that
        // read up to its leader's high watermark and now reads from a follower whose high
        // watermark is behind (KIP-392) is there, as is one whose new leader's high
        // watermark has not caught up with the old leader's.
        let log_end = l.next_offset;
        if offset < l.log_start_offset || offset > log_end {
            return Err(Error::OffsetOutOfRange);
        }
        let bound = l.producers.txns.last_stable_offset(l.high_watermark);
        let mut outcome = ReadOutcome {
            chunks: Vec::new(),
            aborted: Vec::new(),
            last_stable_offset: bound,
            size_bytes: 0,
            high_watermark: l.high_watermark,
            log_start_offset: l.log_start_offset,
        };
        let bound = if committed { bound } else { visible_end };
        if offset >= bound {
            return Ok(outcome);
        }
        if committed {
            outcome.aborted = l.producers.txns.aborted_between(offset, bound);
        }
        if follower && offset >= l.written_end {
            let batches = unwritten_from(&l.unwritten, offset, size_bytes_max);
            outcome.size_bytes = batches.iter().map(Bytes::len).sum();
            let mut traffic = l.traffic.get();
            traffic.bytes_out += outcome.size_bytes as u64;
            traffic.records_out += batches.iter().map(|b| records_by_offset(b)).sum::<u64>();
            l.traffic.set(traffic);
            outcome.chunks = batches.into_iter().map(ReadChunk::Memory).collect();
            return Ok(outcome);
        }
        if let Some(cached) = l.cache.read_below(offset, size_bytes_max, first, bound) {
            outcome.size_bytes = cached.iter().map(Bytes::len).sum();
            let mut traffic = l.traffic.get();
            traffic.bytes_out += outcome.size_bytes as u64;
            traffic.records_out += cached.iter().map(|b| records_by_offset(b)).sum::<u64>();
            l.traffic.set(traffic);
            outcome.chunks = cached.into_iter().map(ReadChunk::Memory).collect();
            return Ok(outcome);
        }
        let at = l.segments.partition_point(|s| s.base_offset <= offset);
        if at == 0 {
            return Err(Error::OffsetOutOfRange);
        }
        let segment = &l.segments[at - 1];
        let role = if at == l.segments.len() { SegmentRole::Active } else { SegmentRole::Sealed };
        let relative = (offset - segment.base_offset).clamp(0, i64::from(u32::MAX)) as u32;
        (
            segment.direct(),
            segment.buffered().map_err(gone_is_out_of_range)?,
            u64::from(segment.index.position_before(relative)),
            segment.size,
            segment.stable_end(role),
            // A bound inside the written data (the last stable offset, or the high
            // watermark of a replicated partition) stops the read at its batch.
            (bound < l.written_end).then_some(bound),
            outcome,
        )
    };
    let file = opening.await.map_err(gone_is_out_of_range)?;
    let mut outcome = {
        let l = log.borrow();
        ReadOutcome {
            high_watermark: l.high_watermark,
            log_start_offset: l.log_start_offset,
            ..base
        }
    };
    let Some((position, first_size)) = locate(&file, scan_from, end, offset).await? else {
        return Ok(outcome);
    };
    let mut end = end;
    if let Some(bound) = bound {
        // read_committed: stop at the batch holding the last stable offset.
        if let Some((stop, _)) = locate(&file, position, end, bound).await? {
            end = stop;
        }
        if end <= position {
            return Ok(outcome);
        }
    }
    let available = end - position;
    let mut len = available.min(size_bytes_max as u64);
    if first == FirstBatch::Whole {
        len = len.max(first_size.min(available));
    } else if first_size > len {
        return Ok(outcome);
    }
    if len == 0 {
        return Ok(outcome);
    }
    let chunk = if let Some(file) = read_file.filter(|_| position + len <= stable_end) {
        ReadChunk::File { file, position, len }
    } else {
        let bytes = file.read_at(position, len as usize).await.map_err(io_error)?;
        ReadChunk::Memory(Bytes::copy_from_slice(&bytes))
    };
    outcome.size_bytes = chunk.len();
    outcome.chunks.push(chunk);
    {
        let l = log.borrow();
        let mut traffic = l.traffic.get();
        traffic.bytes_out += outcome.size_bytes as u64;
        l.traffic.set(traffic);
        l.cache.file_read(outcome.size_bytes);
    }
    Ok(outcome)
}

/// A segment file that is gone was removed by retention (or DeleteRecords) while the read
/// waited to open it: the offset is below the log start now.
fn gone_is_out_of_range(e: Error) -> Error {
    if is_gone(&e) {
        Error::OffsetOutOfRange
    } else {
        e
    }
}

/// The segment file was removed (retention, DeleteRecords) since the log listed it.
fn is_gone(e: &Error) -> bool {
    matches!(e, Error::Io(io) if io.kind() == std::io::ErrorKind::NotFound)
}

/// Finds the position and size of the batch that holds `offset`, scanning batch headers from
/// `position` (given by the index) up to `end`. Below `end` every byte belongs to a batch, so
/// a header that does not parse there is damage (start-up checks a segment only after its
/// last index entry): `Error::Corrupt`, not "nothing there", which a consumer would fetch
/// again for ever.
async fn locate(
    file: &glommio::io::DmaFile,
    mut position: u64,
    end: u64,
    offset: Offset,
) -> Result<Option<(u64, u64)>, Error> {
    while position < end {
        let want = (end - position).min(LOCATE_READ_BYTES as u64) as usize;
        let chunk = file.read_at(position, want).await.map_err(io_error)?;
        let bytes: &[u8] = &chunk;
        let mut at = 0usize;
        while at + crate::constants::BATCH_HEADER_BYTES <= bytes.len() {
            let parsed = BatchHeader::parse(&bytes[at..]);
            let Some(header) = parsed.ok().filter(|h| h.magic() == batch::MAGIC_V2) else {
                let path = file.path().map(|p| p.to_path_buf()).unwrap_or_default();
                return Err(Error::Corrupt { path, position: position + at as u64 });
            };
            if header.last_offset() >= offset {
                return Ok(Some((position + at as u64, header.size_bytes() as u64)));
            }
            at += header.size_bytes();
        }
        if at == 0 {
            return Ok(None);
        }
        position += at as u64;
    }
    Ok(None)
}

/// The first offset whose record timestamp is at least `timestamp`, and that timestamp.
/// Needs the records of one batch, so it streams through exactly that batch
/// (`model::record_scan`, bounded, on the blocking pool); this is the only place the log
/// reads records, and it is not on the produce or fetch path.
pub async fn offset_for_timestamp(
    log: &Rc<RefCell<Log>>,
    timestamp: i64,
) -> Result<Option<(Offset, i64)>, Error> {
    let candidates: Vec<_> = {
        let l = log.borrow();
        l.segments
            .iter()
            .filter(|s| s.max_timestamp >= timestamp && s.size > 0)
            .map(|s| {
                let from = s
                    .index
                    .offset_before_time(timestamp)
                    .map_or(0, |rel| s.index.position_before(rel + 1));
                (s.direct(), u64::from(from), s.size)
            })
            .collect()
    };
    for (opening, mut position, end) in candidates {
        let file = match opening.await {
            Ok(file) => file,
            // Removed by retention since: later segments may still answer.
            Err(e) if is_gone(&e) => continue,
            Err(e) => return Err(e),
        };
        while position < end {
            let header_bytes = file.read_at(position, crate::constants::BATCH_HEADER_BYTES).await;
            let header_bytes = header_bytes.map_err(io_error)?;
            let Ok(header) = BatchHeader::parse(&header_bytes) else { break };
            let size = header.size_bytes() as u64;
            if header.max_timestamp() >= timestamp {
                let whole = file.read_at(position, size as usize).await.map_err(io_error)?;
                let batch = whole.to_vec();
                // Decompression is CPU work of unknown size: off the shard's thread, bounded.
                let scanned = glommio::executor()
                    .spawn_blocking(move || {
                        record_scan::first_at_or_after(
                            &batch,
                            timestamp,
                            crate::constants::TIMESTAMP_SCAN_DECOMPRESSED_MAX,
                        )
                    })
                    .await;
                // The batch's first offset when the records cannot tell (damaged, or beyond
                // the bound): never later than the answer, so a consumer misses nothing.
                let fallback = (header.base_offset(), header.max_timestamp());
                return Ok(Some(match scanned {
                    Ok(record_scan::Found::At(offset, at)) => (offset, at),
                    Ok(record_scan::Found::None) => fallback,
                    Ok(record_scan::Found::Bounded) => {
                        let base = header.base_offset().0;
                        tracing::warn!(
                            base,
                            "a batch decompresses beyond the bound of a \
                            timestamp lookup; answering its first offset"
                        );
                        fallback
                    }
                    Err(e) => {
                        let base = header.base_offset().0;
                        tracing::warn!(base, "cannot read a batch's records: {e}");
                        fallback
                    }
                }));
            }
            position += size;
        }
    }
    Ok(None)
}

/// The offset of the record with the largest timestamp (ListOffsets -3, KIP-734).
pub async fn offset_of_max_timestamp(
    log: &Rc<RefCell<Log>>,
) -> Result<Option<(Offset, i64)>, Error> {
    let max = {
        let l = log.borrow();
        l.segments.iter().map(|s| s.max_timestamp).max().unwrap_or(-1)
    };
    if max < 0 {
        return Ok(None);
    }
    offset_for_timestamp(log, max).await
}

/// The earliest time at which `enforce_retention` can find work in this log without a write
/// or a config change in between (both of which the caller tracks): its oldest sealed segment
/// or its active one expiring, the active one ageing past `segment.ms`, an idle producer id
/// expiring. None when nothing but a write can give it work. A log in the middle of a write
/// is due at once, since the pass skips it.
pub fn retention_due(log: &Log, now: i64) -> Option<i64> {
    if log.deleted {
        return None;
    }
    if log.busy || !log.pending.is_empty() || log.swapping {
        return Some(now);
    }
    let config = &log.config;
    let expiry = |max_timestamp: i64| {
        (config.cleanup.delete && config.retention_ms >= 0 && max_timestamp >= 0)
            .then(|| max_timestamp.saturating_add(config.retention_ms).saturating_add(1))
    };
    let active = log.segments.last().unwrap_or_else(|| unreachable!());
    let mut due = log.producers.next_expiry(PRODUCER_ID_EXPIRATION_MS);
    let mut earliest = |time: Option<i64>| {
        if let Some(time) = time {
            due = Some(due.map_or(time, |due| due.min(time)));
        }
    };
    if active.size > 0 {
        earliest(expiry(active.max_timestamp));
        earliest(Some(active.created_ms.saturating_add(config.segment_ms).saturating_add(1)));
    }
    if log.segments.len() > 1 {
        // Segments go oldest first; a sealed one with no timestamp (-1) goes at once.
        let oldest = log.segments[0].max_timestamp;
        let by_time = config.cleanup.delete && config.retention_ms >= 0;
        earliest(if by_time { Some(expiry(oldest).unwrap_or(now)) } else { None });
        let rest = log.size_bytes() - log.segments[0].size;
        let by_size = config.cleanup.delete && config.retention_bytes >= 0;
        if by_size && rest as i64 >= config.retention_bytes {
            earliest(Some(now));
        }
    }
    due
}

/// Deletes whole segments past the topic's retention time or size, never the active one
/// (an expired active segment is rolled first, so the next pass can delete it).
pub async fn enforce_retention(log: &Rc<RefCell<Log>>, now: i64) -> Result<usize, Error> {
    let roll_active = {
        let mut l = log.borrow_mut();
        if l.deleted {
            return Ok(0);
        }
        let expired = l.producers.expire(now, PRODUCER_ID_EXPIRATION_MS);
        if expired > 0 {
            tracing::debug!(tp = %l.tp, expired, "expired idle producer ids");
        }
        if l.busy {
            return Ok(0);
        }
        let config = l.config.clone();
        let active = l.segments.last().unwrap_or_else(|| unreachable!());
        let expired = config.cleanup.delete
            && config.retention_ms >= 0
            && active.max_timestamp >= 0
            && active.max_timestamp < now - config.retention_ms;
        let aged = now - active.created_ms > config.segment_ms;
        let roll = active.size > 0 && (expired || aged) && l.pending.is_empty();
        if roll {
            l.busy = true;
        }
        roll.then_some(l.next_offset)
    };
    if let Some(base) = roll_active {
        roll(log, base, WhenFull::Skip).await;
        let restart = {
            let mut l = log.borrow_mut();
            l.busy = false;
            !l.pending.is_empty()
        };
        if restart {
            log.borrow_mut().busy = true;
            glommio::spawn_local(flush_loop(log.clone())).detach();
        }
    }
    let removed: Vec<Segment> = {
        let mut l = log.borrow_mut();
        if l.swapping || l.deleted {
            // The cleaner is swapping segments: the next pass deletes.
            return Ok(0);
        }
        let config = l.config.clone();
        let mut total = l.size_bytes() as i64;
        let mut count = 0;
        while count + 1 < l.segments.len() {
            let segment = &l.segments[count];
            // `cleanup.policy` without `delete` (compact only) keeps every segment.
            let deletes = config.cleanup.delete;
            let by_time = deletes
                && config.retention_ms >= 0
                && segment.max_timestamp < now - config.retention_ms;
            let by_size = deletes
                && config.retention_bytes >= 0
                && total - segment.size as i64 >= config.retention_bytes;
            if !(by_time || by_size) {
                break;
            }
            total -= segment.size as i64;
            count += 1;
        }
        let removed: Vec<Segment> = l.segments.drain(..count).collect();
        if count > 0 {
            l.log_start_offset = l.segments[0].base_offset.max(l.log_start_offset);
            l.cache.clear();
            let log_start_offset = l.log_start_offset;
            l.producers.txns.truncate_start(log_start_offset);
            let log_start_offset = log_start_offset.0;
            tracing::info!(tp = %l.tp, segments = count, log_start_offset, "retention deleted");
        }
        removed
    };
    let count = removed.len();
    segment::remove(removed).await;
    Ok(count)
}

/// Deletes the whole segments that lie below `offset` (never the active one) and moves the
/// log start to the first kept segment. For internal logs that restate their whole state at
/// `offset` (a snapshot), so that the history before it can go. Returns how many went; their
/// files are removed by a task of their own.
pub fn delete_segments_before(log: &Rc<RefCell<Log>>, offset: Offset) -> usize {
    let removed = take_segments_before(log, offset);
    let count = removed.len();
    glommio::spawn_local(segment::remove(removed)).detach();
    count
}

/// `delete_segments_before`, returning once the files are removed (oldest first: a crash
/// midway leaves segments that still follow one another).
pub async fn remove_segments_before(log: &Rc<RefCell<Log>>, offset: Offset) -> usize {
    let removed = take_segments_before(log, offset);
    let count = removed.len();
    segment::remove(removed).await;
    count
}

fn take_segments_before(log: &Rc<RefCell<Log>>, offset: Offset) -> Vec<Segment> {
    let mut l = log.borrow_mut();
    if l.swapping {
        return Vec::new();
    }
    let count = whole_segments_before(&l, offset);
    let removed: Vec<Segment> = l.segments.drain(..count).collect();
    if count > 0 {
        l.log_start_offset = l.segments[0].base_offset.max(l.log_start_offset);
        l.cache.clear();
    }
    removed
}

/// Finishes queued writes and returns what the next start needs to resume the log without
/// reading its active segment (`clean_stop.rs`), which the caller writes with the other logs'
/// after its one `sync_file_system` (the batches are on the device already, written with
/// O_DIRECT; the sync makes their blocks' metadata durable). Nothing is written to the log's
/// own files: the active segment keeps its preallocated zeros, and its indexes and producer
/// state live only in the record (a crash after the next start recovers the segment by
/// scanning it, as after any crash).
pub async fn close(log: &Rc<RefCell<Log>>) -> LogState {
    take_when_idle(log).await;
    let state = {
        let l = log.borrow();
        let active = l.segments.last().unwrap_or_else(|| unreachable!());
        let dir_name = l.dir.file_name().map(|name| name.to_string_lossy().into_owned());
        let producers = l.producers.encode_snapshot(l.next_offset);
        active.clean_stop_state(dir_name.unwrap_or_default(), producers)
    };
    state.await
}

/// Waits until no write is queued or in flight and takes the active segment (`busy`), so
/// that no flusher starts until the caller gives it back.
async fn take_when_idle(log: &Rc<RefCell<Log>>) {
    loop {
        {
            let mut l = log.borrow_mut();
            if !l.busy && l.pending.is_empty() && !l.swapping {
                l.busy = true;
                l.held = true;
                return;
            }
        }
        glommio::timer::sleep(std::time::Duration::from_millis(1)).await;
    }
}

/// `syncfs` of the file system that holds `dir`: what the logs wrote without fsync (the
/// allocation of their O_DIRECT writes) reaches the disk in one call instead of an
/// fdatasync per log.
pub async fn sync_file_system(dir: &Path) -> Result<(), Error> {
    let dir = dir.to_path_buf();
    glommio::executor()
        .spawn_blocking(move || -> std::io::Result<()> {
            use std::os::fd::AsRawFd;
            let handle = std::fs::File::open(&dir)?;
            // SAFETY: syncfs on a descriptor that `handle` keeps open for the call.
            if unsafe { libc::syncfs(handle.as_raw_fd()) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
        .await?;
    Ok(())
}

/// Deletes the log and its directory; waiting appends fail with `Deleted`.
pub async fn delete(log: &Rc<RefCell<Log>>) {
    let dir = {
        let mut l = log.borrow_mut();
        l.deleted = true;
        l.cache.clear();
        for pending in l.pending.drain(..) {
            drop(pending.done);
        }
        l.unwritten.clear();
        l.durable_waiters.clear();
        l.replication_waiters.clear();
        l.segments.clear();
        l.dir.clone()
    };
    let _ = glommio::executor().spawn_blocking(move || std::fs::remove_dir_all(dir)).await;
}

fn remove_segment_files(dir: &Path, base: Offset) {
    for extension in ["log", "index", "timeindex"] {
        let _ = std::fs::remove_file(dir.join(segment::file_name(base, extension)));
    }
}

#[cfg(test)]
mod tests {
    use super::{copy_range, unwritten_from};
    use crate::model::Offset;
    use crate::storage::cache::CachedBatch;
    use bytes::Bytes;
    use std::collections::VecDeque;

    #[test]
    fn a_follower_reads_unwritten_batches_from_the_one_holding_its_offset() {
        // Batches [10..=14] (100 bytes), [15..=15] (50), [16..=20] (100).
        let batch = |base: i64, last: i64, size: usize| CachedBatch {
            base_offset: Offset(base),
            last_offset: Offset(last),
            bytes: Bytes::from(vec![base as u8; size]),
        };
        let unwritten: VecDeque<CachedBatch> =
            [batch(10, 14, 100), batch(15, 15, 50), batch(16, 20, 100)].into();
        let firsts = |out: Vec<Bytes>| out.iter().map(|b| b[0]).collect::<Vec<u8>>();
        assert_eq!(firsts(unwritten_from(&unwritten, Offset(10), 1 << 20)), [10, 15, 16]);
        // The batch holding the offset, then whole batches within the size...
        assert_eq!(firsts(unwritten_from(&unwritten, Offset(12), 150)), [10, 15]);
        assert_eq!(firsts(unwritten_from(&unwritten, Offset(15), 149)), [15]);
        // ...but always a whole first one, and nothing past the end.
        assert_eq!(firsts(unwritten_from(&unwritten, Offset(16), 1)), [16]);
        assert!(unwritten_from(&unwritten, Offset(21), 1 << 20).is_empty());
    }

    #[test]
    fn copy_range_reads_across_pieces_and_pads_with_zeros() {
        let pieces: [&[u8]; 4] = [b"ab", b"", b"cde", b"f"];
        let whole = b"abcdef";
        for from in 0..=whole.len() {
            for len in 0..10 {
                let mut out = vec![0xffu8; len];
                copy_range(&pieces, from, &mut out);
                let mut expected: Vec<u8> = whole[from..].iter().copied().take(len).collect();
                expected.resize(len, 0);
                assert_eq!(out, expected, "from {from}, len {len}");
            }
        }
    }
}
