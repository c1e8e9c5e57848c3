//! Per-partition state of idempotent producers, and the checks Kafka runs on every batch that
//! carries a producer id (`ProducerStateManager` / `ProducerAppendInfo.checkSequence`).
//!
//! Lifecycle: one `ProducerStateTable` per partition log, owned by the log on its shard. It is
//! loaded from the latest snapshot and the batch headers after it when the log opens, updated
//! by `try_append` at offset-assignment time (under the log's borrow, before the batches are
//! queued for writing), snapshotted when a segment is sealed and at clean shutdown, and pruned
//! of idle producers by the retention pass. Pure: no I/O, no clock (time comes in as
//! arguments), so every rule is tested here.
//!
//! Per producer id it keeps the epoch and the first/last sequence and offset of the last five
//! batches. A batch is checked in this order:
//!
//! ```text
//!   no state for the producer id ............ accept any sequence (Kafka's rule since
//!                                             KIP-360: state may have expired)
//!   same epoch, same first and last sequence
//!     as one of the last five batches ....... duplicate: answer with the original offsets,
//!                                             write nothing
//!   epoch older than the producer's ......... INVALID_PRODUCER_EPOCH
//!   epoch newer, sequence != 0 .............. OUT_OF_ORDER_SEQUENCE_NUMBER
//!   same epoch, not last sequence + 1 ....... OUT_OF_ORDER_SEQUENCE_NUMBER
//!     (sequences wrap: after i32::MAX comes 0)
//! ```
//!
//! The state never looks at records: the batch header holds the producer id, epoch, base
//! sequence and last offset delta (record count - 1), which is all it needs.

use std::collections::{HashMap, VecDeque};

use crate::constants::PRODUCER_BATCHES_RETAINED;
use crate::model::batch::BatchHeader;
use crate::model::{ErrorCode, Offset, ProducerEpoch, ProducerId};
use crate::storage::txn_index::{AbortedTxn, TxnIndex};

/// Sequence before the first one (the next expected sequence is then 0).
pub const NO_SEQUENCE: i32 = -1;

/// What the producer state needs from a batch header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerBatch {
    pub producer_id: ProducerId,
    pub producer_epoch: ProducerEpoch,
    pub base_sequence: i32,
    pub last_offset_delta: i32,
    /// The batch's max_timestamp as stored (LogAppendTime already applied).
    pub max_timestamp: i64,
    pub is_transactional: bool,
}

/// One of the last batches of a producer: where it landed and which sequences it held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchMetadata {
    pub first_sequence: i32,
    pub last_sequence: i32,
    pub first_offset: Offset,
    pub last_offset: Offset,
    /// The batch's max_timestamp (Kafka answers a duplicate with it as log_append_time).
    pub timestamp: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerEntry {
    pub epoch: ProducerEpoch,
    /// Oldest first; never empty, at most `PRODUCER_BATCHES_RETAINED`.
    pub batches: VecDeque<BatchMetadata>,
    /// Broker time of the producer's last append (or of the recovery that found it); the
    /// producer expires when it has been idle for `producer.id.expiration.ms`.
    pub last_seen_ms: i64,
}

/// Why a batch was refused; `error_code` gives the Kafka error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProducerError {
    /// INVALID_PRODUCER_EPOCH (47): a zombie with an older epoch.
    InvalidProducerEpoch,
    /// OUT_OF_ORDER_SEQUENCE_NUMBER (45): a gap or a reordering.
    OutOfOrderSequence,
    /// INVALID_RECORD (87): a producer id with a negative base sequence.
    InvalidSequence,
    /// INVALID_RECORD (87): a client sent a control batch (only the transaction
    /// coordinator writes markers).
    ControlFromClient,
}

impl ProducerError {
    /// The Produce error code of a failed producer check (Kafka's codes for the same cases).
    pub fn error_code(self) -> ErrorCode {
        match self {
            ProducerError::InvalidProducerEpoch => ErrorCode::InvalidProducerEpoch,
            ProducerError::OutOfOrderSequence => ErrorCode::OutOfOrderSequenceNumber,
            ProducerError::InvalidSequence => ErrorCode::InvalidRecord,
            ProducerError::ControlFromClient => ErrorCode::InvalidRecord,
        }
    }
}

/// What `try_append` decided for a whole append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendCheck {
    /// Assign offsets and write; the state already holds the new batches.
    Append,
    /// The batch was written before: answer with these offsets and write nothing.
    Duplicate(BatchMetadata),
}

/// The producers of one partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProducerStateTable {
    producers: HashMap<ProducerId, ProducerEntry>,
    /// Open and aborted transactions in this partition; snapshotted with the producers.
    pub txns: TxnIndex,
}

impl ProducerBatch {
    pub fn from_header(header: &BatchHeader<'_>, max_timestamp: i64) -> ProducerBatch {
        ProducerBatch {
            producer_id: header.producer_id(),
            producer_epoch: header.producer_epoch(),
            base_sequence: header.base_sequence(),
            last_offset_delta: header.last_offset_delta(),
            max_timestamp,
            is_transactional: header.is_transactional(),
        }
    }

    pub fn has_producer_id(&self) -> bool {
        self.producer_id.is_valid()
    }

    /// The sequence of the batch's last record, wrapping after i32::MAX as Kafka does
    /// (`DefaultRecordBatch.incrementSequence`).
    pub fn last_sequence(&self) -> i32 {
        increment_sequence(self.base_sequence, self.last_offset_delta)
    }
}

impl ProducerStateTable {
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// Every producer, by ascending id.
    pub fn entries(&self) -> impl Iterator<Item = (ProducerId, &ProducerEntry)> {
        let mut ids: Vec<ProducerId> = self.producers.keys().copied().collect();
        ids.sort_unstable();
        ids.into_iter().map(|id| (id, &self.producers[&id]))
    }

    pub fn get(&self, producer_id: ProducerId) -> Option<&ProducerEntry> {
        self.producers.get(&producer_id)
    }

    /// Checks the batches of one append, whose first batch will get `first_offset`, and
    /// records them when all pass. All or nothing: on an error or a duplicate the state is
    /// as before. Batches without a producer id pass untouched.
    pub fn try_append(
        &mut self,
        batches: &[ProducerBatch],
        first_offset: Offset,
        now_ms: i64,
    ) -> Result<AppendCheck, ProducerError> {
        assert!(first_offset >= Offset::ZERO);
        self.try_append_at(batches, Some(first_offset), now_ms)
    }

    /// `try_append` for batches that go to the partition's delay log (delayed delivery):
    /// checked the same way and recorded without offsets (`Offset::NONE`), so that the
    /// producer's next batch follows their sequences and a retry of them is a duplicate
    /// (answered with base offset -1: the records get theirs when they are delivered).
    pub fn try_append_delayed(
        &mut self,
        batches: &[ProducerBatch],
        now_ms: i64,
    ) -> Result<AppendCheck, ProducerError> {
        self.try_append_at(batches, None, now_ms)
    }

    /// A delayed batch read back from the delay log at start-up (the partition's snapshot
    /// and log may predate it): put among the producer's retained batches in sequence order
    /// (a retry of it is then a duplicate, and the producer's next batch follows the latest),
    /// unless its epoch is older, it is there already, or it is older than all of them.
    pub fn restore_delayed(&mut self, batch: &ProducerBatch, now_ms: i64) {
        if !batch.has_producer_id() || batch.base_sequence < 0 {
            return;
        }
        let entry = self.producers.entry(batch.producer_id).or_insert_with(|| ProducerEntry {
            epoch: batch.producer_epoch,
            batches: VecDeque::with_capacity(PRODUCER_BATCHES_RETAINED),
            last_seen_ms: now_ms,
        });
        if batch.producer_epoch < entry.epoch {
            return;
        }
        if batch.producer_epoch > entry.epoch {
            entry.epoch = batch.producer_epoch;
            entry.batches.clear();
        }
        let (first_sequence, last_sequence) = (batch.base_sequence, batch.last_sequence());
        let same = |m: &BatchMetadata| {
            m.first_sequence == first_sequence && m.last_sequence == last_sequence
        };
        if entry.batches.iter().any(same) {
            return;
        }
        let at = entry
            .batches
            .iter()
            .position(|m| m.first_sequence > first_sequence)
            .unwrap_or(entry.batches.len());
        if at == 0 && entry.batches.len() == PRODUCER_BATCHES_RETAINED {
            return;
        }
        let metadata = BatchMetadata {
            first_sequence,
            last_sequence,
            first_offset: Offset::NONE,
            last_offset: Offset::NONE,
            timestamp: batch.max_timestamp,
        };
        entry.batches.insert(at, metadata);
        if entry.batches.len() > PRODUCER_BATCHES_RETAINED {
            entry.batches.pop_front();
        }
        entry.last_seen_ms = entry.last_seen_ms.max(now_ms);
    }

    fn try_append_at(
        &mut self,
        batches: &[ProducerBatch],
        first_offset: Option<Offset>,
        now_ms: i64,
    ) -> Result<AppendCheck, ProducerError> {
        if !batches.iter().any(ProducerBatch::has_producer_id) {
            return Ok(AppendCheck::Append);
        }
        // Several batches in one append may belong to one producer, so each is checked against
        // the state the earlier ones left; the entries they touch are saved to undo.
        let several = batches.len() > 1;
        let mut undo: Vec<(ProducerId, Option<ProducerEntry>)> = Vec::new();
        let mut offset = first_offset;
        for batch in batches {
            if batch.has_producer_id() {
                let outcome = self.check(batch);
                if !matches!(outcome, Ok(AppendCheck::Append)) {
                    self.restore(undo);
                    return outcome;
                }
                if several && !undo.iter().any(|(id, _)| *id == batch.producer_id) {
                    undo.push((batch.producer_id, self.producers.get(&batch.producer_id).cloned()));
                }
                self.record(batch, offset, now_ms);
            }
            offset = offset.map(|o| o + (i64::from(batch.last_offset_delta) + 1));
        }
        Ok(AppendCheck::Append)
    }

    /// Applies a batch found in the log during recovery, without checks (it passed them when
    /// it was appended). Batches without a producer id or with a negative sequence (which
    /// `try_append` never lets in) are ignored.
    pub fn replay(&mut self, batch: &ProducerBatch, first_offset: Offset, now_ms: i64) {
        if batch.has_producer_id() && batch.base_sequence >= 0 {
            self.record(batch, Some(first_offset), now_ms);
        }
    }

    /// A transaction marker (control batch) of `producer_id` at `epoch`, written by the
    /// transaction coordinator. Markers carry no sequence: they are checked against the epoch
    /// only (an older one is a fenced coordinator request, INVALID_PRODUCER_EPOCH), and a
    /// newer epoch (the coordinator bumped it to fence the producer, as on a timeout) resets
    /// the producer's batches, so its next data batch must start a new sequence.
    pub fn on_marker(
        &mut self,
        producer_id: ProducerId,
        epoch: ProducerEpoch,
        now_ms: i64,
    ) -> Result<(), ProducerError> {
        assert!(producer_id.is_valid());
        let entry = self.producers.entry(producer_id).or_insert_with(|| ProducerEntry {
            epoch,
            batches: VecDeque::with_capacity(PRODUCER_BATCHES_RETAINED),
            last_seen_ms: now_ms,
        });
        if epoch < entry.epoch {
            return Err(ProducerError::InvalidProducerEpoch);
        }
        if epoch > entry.epoch {
            entry.epoch = epoch;
            entry.batches.clear();
        }
        entry.last_seen_ms = entry.last_seen_ms.max(now_ms);
        Ok(())
    }

    /// Forgets producers idle for at least `expiration_ms` (Kafka's
    /// `producer.id.expiration.ms`). Returns how many were removed.
    /// When the next producer id expires (`expire`), None when there is none.
    pub fn next_expiry(&self, expiration_ms: i64) -> Option<i64> {
        self.producers.values().map(|entry| entry.last_seen_ms.saturating_add(expiration_ms)).min()
    }

    pub fn expire(&mut self, now_ms: i64, expiration_ms: i64) -> usize {
        let before = self.producers.len();
        self.producers.retain(|_, entry| now_ms - entry.last_seen_ms < expiration_ms);
        before - self.producers.len()
    }

    /// The checks of `ProducerStateManager`, in Kafka's order, for one batch.
    fn check(&self, batch: &ProducerBatch) -> Result<AppendCheck, ProducerError> {
        assert!(batch.has_producer_id());
        if batch.base_sequence < 0 {
            return Err(ProducerError::InvalidSequence);
        }
        let Some(entry) = self.producers.get(&batch.producer_id) else {
            return Ok(AppendCheck::Append);
        };
        if batch.producer_epoch == entry.epoch {
            let last_sequence = batch.last_sequence();
            let duplicate = entry.batches.iter().find(|m| {
                m.first_sequence == batch.base_sequence && m.last_sequence == last_sequence
            });
            if let Some(original) = duplicate {
                return Ok(AppendCheck::Duplicate(*original));
            }
        }
        if batch.producer_epoch < entry.epoch {
            return Err(ProducerError::InvalidProducerEpoch);
        }
        if batch.producer_epoch != entry.epoch {
            if batch.base_sequence != 0 && entry.epoch != ProducerEpoch::NONE {
                return Err(ProducerError::OutOfOrderSequence);
            }
            return Ok(AppendCheck::Append);
        }
        let last = entry.batches.back().map_or(NO_SEQUENCE, |m| m.last_sequence);
        if !in_sequence(last, batch.base_sequence) {
            return Err(ProducerError::OutOfOrderSequence);
        }
        Ok(AppendCheck::Append)
    }

    /// `first_offset` None: a delayed batch, which has no offsets yet (both `Offset::NONE`).
    fn record(&mut self, batch: &ProducerBatch, first_offset: Option<Offset>, now_ms: i64) {
        let metadata = BatchMetadata {
            first_sequence: batch.base_sequence,
            last_sequence: batch.last_sequence(),
            first_offset: first_offset.unwrap_or(Offset::NONE),
            last_offset: first_offset
                .map_or(Offset::NONE, |first| first + i64::from(batch.last_offset_delta)),
            timestamp: batch.max_timestamp,
        };
        let entry = self.producers.entry(batch.producer_id).or_insert_with(|| ProducerEntry {
            epoch: batch.producer_epoch,
            batches: VecDeque::with_capacity(PRODUCER_BATCHES_RETAINED),
            last_seen_ms: now_ms,
        });
        if entry.epoch != batch.producer_epoch {
            entry.epoch = batch.producer_epoch;
            entry.batches.clear();
        }
        if entry.batches.len() == PRODUCER_BATCHES_RETAINED {
            entry.batches.pop_front();
        }
        entry.batches.push_back(metadata);
        entry.last_seen_ms = entry.last_seen_ms.max(now_ms);
        assert!(entry.batches.len() <= PRODUCER_BATCHES_RETAINED);
    }

    fn restore(&mut self, undo: Vec<(ProducerId, Option<ProducerEntry>)>) {
        for (producer_id, saved) in undo {
            match saved {
                Some(entry) => self.producers.insert(producer_id, entry),
                None => self.producers.remove(&producer_id),
            };
        }
    }
}

/// Kafka's `inSequence`: the next sequence follows the last one, wrapping at i32::MAX.
fn in_sequence(last: i32, next: i32) -> bool {
    i64::from(next) == i64::from(last) + 1 || (next == 0 && last == i32::MAX)
}

fn increment_sequence(sequence: i32, increment: i32) -> i32 {
    assert!(increment >= 0);
    if sequence > i32::MAX - increment {
        increment - (i32::MAX - sequence) - 1
    } else {
        sequence + increment
    }
}

// ----- snapshot format ---------------------------------------------------------------------

/// A snapshot file, `<offset>.snapshot` (20 digits) next to the segments, all big-endian:
///
/// ```text
///  offset  size  field
///       0     4  magic "SPPS"
///       4     2  version (2; 1 has no transactions section)
///       6     4  CRC-32C of every byte after this field
///      10     8  offset: the state covers every batch below it and none at or above it
///      18     4  producer count
///      22     .  producers, by ascending id:
///                  8 producer_id   2 epoch   8 last_seen_ms   1 batch count (1..=5)
///                  then per batch, oldest first:
///                  4 first_sequence  4 last_sequence  8 first_offset  8 last_offset
///                  8 timestamp
///       .     4  open transaction count (v2)
///       .     .  per open transaction: 8 producer_id  8 first_offset
///       .     4  aborted transaction count (v2)
///       .     .  per aborted transaction, by marker offset:
///                  8 producer_id  8 first_offset  8 last_offset (the abort marker)
/// ```
const SNAPSHOT_MAGIC: &[u8; 4] = b"SPPS";
const SNAPSHOT_VERSION: u16 = 2;
const SNAPSHOT_HEADER_BYTES: usize = 22;
const SNAPSHOT_PRODUCER_BYTES: usize = 19;
const SNAPSHOT_BATCH_BYTES: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotError {
    Truncated,
    BadMagic,
    UnsupportedVersion,
    BadCrc,
    Malformed,
}

impl ProducerStateTable {
    /// The snapshot of this state, taken when the log's next offset is `offset`.
    pub fn encode_snapshot(&self, offset: Offset) -> Vec<u8> {
        let batches: usize = self.producers.values().map(|e| e.batches.len()).sum();
        let size = SNAPSHOT_HEADER_BYTES
            + self.producers.len() * SNAPSHOT_PRODUCER_BYTES
            + batches * SNAPSHOT_BATCH_BYTES
            + 8
            + self.txns.ongoing().count() * 16
            + self.txns.aborted_between(Offset::MIN, Offset::MAX).len() * 24;
        let mut out = Vec::with_capacity(size);
        out.extend_from_slice(SNAPSHOT_MAGIC);
        out.extend(SNAPSHOT_VERSION.to_be_bytes());
        out.extend(0u32.to_be_bytes());
        out.extend(offset.0.to_be_bytes());
        out.extend((self.producers.len() as u32).to_be_bytes());
        let mut ids: Vec<ProducerId> = self.producers.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            let entry = &self.producers[&id];
            out.extend(id.0.to_be_bytes());
            out.extend(entry.epoch.0.to_be_bytes());
            out.extend(entry.last_seen_ms.to_be_bytes());
            out.push(entry.batches.len() as u8);
            for m in &entry.batches {
                out.extend(m.first_sequence.to_be_bytes());
                out.extend(m.last_sequence.to_be_bytes());
                out.extend(m.first_offset.0.to_be_bytes());
                out.extend(m.last_offset.0.to_be_bytes());
                out.extend(m.timestamp.to_be_bytes());
            }
        }
        let ongoing: Vec<(ProducerId, Offset)> = self.txns.ongoing().collect();
        out.extend((ongoing.len() as u32).to_be_bytes());
        for (producer_id, first_offset) in ongoing {
            out.extend(producer_id.0.to_be_bytes());
            out.extend(first_offset.0.to_be_bytes());
        }
        let aborted = self.txns.aborted_between(Offset::MIN, Offset::MAX);
        out.extend((aborted.len() as u32).to_be_bytes());
        for a in aborted {
            out.extend(a.producer_id.0.to_be_bytes());
            out.extend(a.first_offset.0.to_be_bytes());
            out.extend(a.last_offset.0.to_be_bytes());
        }
        assert_eq!(out.len(), size);
        let crc = crc32c::crc32c(&out[10..]);
        out[6..10].copy_from_slice(&crc.to_be_bytes());
        out
    }

    /// Reads a snapshot: the offset it was taken at and the state.
    pub fn decode_snapshot(bytes: &[u8]) -> Result<(Offset, ProducerStateTable), SnapshotError> {
        if bytes.len() < SNAPSHOT_HEADER_BYTES {
            return Err(SnapshotError::Truncated);
        }
        if &bytes[0..4] != SNAPSHOT_MAGIC {
            return Err(SnapshotError::BadMagic);
        }
        let version = u16::from_be_bytes([bytes[4], bytes[5]]);
        if version != SNAPSHOT_VERSION && version != 1 {
            return Err(SnapshotError::UnsupportedVersion);
        }
        let crc = u32::from_be_bytes([bytes[6], bytes[7], bytes[8], bytes[9]]);
        if crc32c::crc32c(&bytes[10..]) != crc {
            return Err(SnapshotError::BadCrc);
        }
        let mut reader = Reader { bytes, at: 10 };
        let offset = reader.offset()?;
        let count = reader.u32()? as usize;
        let mut table = ProducerStateTable::default();
        for _ in 0..count {
            let producer_id = ProducerId(reader.i64()?);
            let epoch = ProducerEpoch(reader.i16()?);
            let last_seen_ms = reader.i64()?;
            let batch_count = usize::from(reader.u8()?);
            // No batches: a transaction marker moved the epoch on (`on_marker`).
            if !producer_id.is_valid() || batch_count > PRODUCER_BATCHES_RETAINED {
                return Err(SnapshotError::Malformed);
            }
            let mut batches = VecDeque::with_capacity(PRODUCER_BATCHES_RETAINED);
            for _ in 0..batch_count {
                batches.push_back(BatchMetadata {
                    first_sequence: reader.i32()?,
                    last_sequence: reader.i32()?,
                    first_offset: reader.offset()?,
                    last_offset: reader.offset()?,
                    timestamp: reader.i64()?,
                });
            }
            let entry = ProducerEntry { epoch, batches, last_seen_ms };
            if table.producers.insert(producer_id, entry).is_some() {
                return Err(SnapshotError::Malformed);
            }
        }
        if version >= 2 {
            let mut txns = TxnIndex::default();
            for _ in 0..reader.u32()? {
                let (producer_id, first_offset) = (reader.producer_id()?, reader.offset()?);
                txns.on_data(producer_id.max(ProducerId(0)), first_offset);
            }
            for _ in 0..reader.u32()? {
                let a = AbortedTxn {
                    producer_id: reader.producer_id()?,
                    first_offset: reader.offset()?,
                    last_offset: reader.offset()?,
                };
                if !txns.restore_aborted(a) {
                    return Err(SnapshotError::Malformed);
                }
            }
            table.txns = txns;
        }
        if reader.at != bytes.len() {
            return Err(SnapshotError::Malformed);
        }
        Ok((offset, table))
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], SnapshotError> {
        let end = self.at.checked_add(N).ok_or(SnapshotError::Truncated)?;
        let slice = self.bytes.get(self.at..end).ok_or(SnapshotError::Truncated)?;
        self.at = end;
        let mut out = [0u8; N];
        out.copy_from_slice(slice);
        Ok(out)
    }
    fn u8(&mut self) -> Result<u8, SnapshotError> {
        Ok(self.take::<1>()?[0])
    }
    fn i16(&mut self) -> Result<i16, SnapshotError> {
        Ok(i16::from_be_bytes(self.take()?))
    }
    fn i32(&mut self) -> Result<i32, SnapshotError> {
        Ok(i32::from_be_bytes(self.take()?))
    }
    fn u32(&mut self) -> Result<u32, SnapshotError> {
        Ok(u32::from_be_bytes(self.take()?))
    }
    fn i64(&mut self) -> Result<i64, SnapshotError> {
        Ok(i64::from_be_bytes(self.take()?))
    }
    fn offset(&mut self) -> Result<Offset, SnapshotError> {
        Ok(Offset(self.i64()?))
    }
    fn producer_id(&mut self) -> Result<ProducerId, SnapshotError> {
        Ok(ProducerId(self.i64()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::TxnOutcome;

    const PID: i64 = 1000;
    const NOW: i64 = 1_700_000_000_000;

    fn batch(epoch: i16, base_sequence: i32, count: i32) -> ProducerBatch {
        ProducerBatch {
            producer_id: ProducerId(PID),
            producer_epoch: ProducerEpoch(epoch),
            base_sequence,
            last_offset_delta: count - 1,
            max_timestamp: 5,
            is_transactional: false,
        }
    }

    fn append(
        table: &mut ProducerStateTable,
        b: ProducerBatch,
        offset: i64,
    ) -> Result<AppendCheck, ProducerError> {
        table.try_append(&[b], Offset(offset), NOW)
    }

    #[test]
    fn delayed_batches_take_sequences_without_offsets_and_come_back_after_a_crash() {
        let mut table = ProducerStateTable::default();
        assert_eq!(append(&mut table, batch(0, 0, 2), 0), Ok(AppendCheck::Append));
        let delayed = batch(0, 2, 3);
        assert_eq!(table.try_append_delayed(&[delayed], NOW), Ok(AppendCheck::Append));
        // A retry is a duplicate without offsets; the next batch follows its sequences.
        let Ok(AppendCheck::Duplicate(original)) = table.try_append_delayed(&[delayed], NOW) else {
            panic!("a retry of a delayed batch is a duplicate")
        };
        assert_eq!((original.first_offset, original.last_offset), (Offset::NONE, Offset::NONE));
        assert_eq!(append(&mut table, batch(0, 5, 1), 2), Ok(AppendCheck::Append));
        // After a crash the log's replay knows batches 0-1 and 5 only: the delayed one is
        // restored between them, so a retry of either is a duplicate.
        let mut replayed = ProducerStateTable::default();
        replayed.replay(&batch(0, 0, 2), Offset(0), NOW);
        replayed.replay(&batch(0, 5, 1), Offset(2), NOW);
        replayed.restore_delayed(&delayed, NOW);
        replayed.restore_delayed(&delayed, NOW);
        let sequences: Vec<(i32, i32)> = replayed.producers[&ProducerId(PID)]
            .batches
            .iter()
            .map(|m| (m.first_sequence, m.last_sequence))
            .collect();
        assert_eq!(sequences, [(0, 1), (2, 4), (5, 5)]);
        assert!(matches!(
            replayed.try_append_delayed(&[delayed], NOW),
            Ok(AppendCheck::Duplicate(_))
        ));
        assert_eq!(append(&mut replayed, batch(0, 6, 1), 3), Ok(AppendCheck::Append));
        // An older epoch is not restored.
        replayed.restore_delayed(&batch(-1, 9, 1), NOW);
        assert_eq!(replayed.producers[&ProducerId(PID)].batches.len(), 4);
    }

    #[test]
    fn a_new_producer_may_start_at_any_sequence() {
        for sequence in [0, 1, 17, i32::MAX] {
            let mut table = ProducerStateTable::default();
            assert_eq!(append(&mut table, batch(0, sequence, 1), 0), Ok(AppendCheck::Append));
            assert_eq!(table.len(), 1);
        }
        let mut table = ProducerStateTable::default();
        assert_eq!(append(&mut table, batch(7, 5, 3), 10), Ok(AppendCheck::Append));
        let entry = table.get(ProducerId(PID)).expect("entry");
        assert_eq!(entry.epoch, ProducerEpoch(7));
        assert_eq!(
            entry.batches.back().copied(),
            Some(BatchMetadata {
                first_sequence: 5,
                last_sequence: 7,
                first_offset: Offset(10),
                last_offset: Offset(12),
                timestamp: 5
            })
        );
    }

    #[test]
    fn in_order_batches_pass_and_every_gap_or_step_back_is_out_of_order() {
        let mut table = ProducerStateTable::default();
        assert_eq!(append(&mut table, batch(0, 0, 5), 0), Ok(AppendCheck::Append));
        // Next expected is 5; anything else that is not a duplicate is out of order.
        for wrong in [-1, 0, 1, 3, 4, 6, 7, 100, i32::MAX] {
            let b = batch(0, wrong, 1);
            let expected = if wrong < 0 {
                Err(ProducerError::InvalidSequence)
            } else {
                Err(ProducerError::OutOfOrderSequence)
            };
            assert_eq!(append(&mut table, b, 5), expected, "sequence {wrong}");
        }
        assert_eq!(append(&mut table, batch(0, 5, 2), 5), Ok(AppendCheck::Append));
        assert_eq!(append(&mut table, batch(0, 7, 1), 7), Ok(AppendCheck::Append));
        assert_eq!(table.get(ProducerId(PID)).map(|e| e.batches.len()), Some(3));
    }

    #[test]
    fn each_of_the_last_five_batches_is_a_duplicate_with_its_original_offsets() {
        let mut table = ProducerStateTable::default();
        let mut offset = 100;
        for i in 0..7 {
            assert_eq!(append(&mut table, batch(0, i * 2, 2), offset), Ok(AppendCheck::Append));
            offset += 2;
        }
        let before = table.clone();
        // Batches 2..=6 are retained; 0 and 1 fell out and are now simply out of order.
        for i in 0..7 {
            let outcome = append(&mut table, batch(0, i * 2, 2), 999);
            if i >= 2 {
                let original = BatchMetadata {
                    first_sequence: i * 2,
                    last_sequence: i * 2 + 1,
                    first_offset: Offset(100 + i64::from(i) * 2),
                    last_offset: Offset(101 + i64::from(i) * 2),
                    timestamp: 5,
                };
                assert_eq!(outcome, Ok(AppendCheck::Duplicate(original)), "batch {i}");
            } else {
                assert_eq!(outcome, Err(ProducerError::OutOfOrderSequence), "batch {i}");
            }
        }
        assert_eq!(table, before, "checks that fail or find duplicates change nothing");
    }

    #[test]
    fn a_duplicate_must_match_both_ends_and_the_epoch() {
        let mut table = ProducerStateTable::default();
        append(&mut table, batch(3, 0, 4), 0).expect("first");
        // Same first sequence, different length: not a duplicate, and not in sequence.
        assert_eq!(append(&mut table, batch(3, 0, 3), 4), Err(ProducerError::OutOfOrderSequence));
        assert_eq!(append(&mut table, batch(3, 1, 3), 4), Err(ProducerError::OutOfOrderSequence));
        // Same sequences from an older epoch: fenced, not a duplicate.
        assert_eq!(append(&mut table, batch(2, 0, 4), 4), Err(ProducerError::InvalidProducerEpoch));
    }

    #[test]
    fn an_older_epoch_is_fenced_whatever_its_sequence() {
        let mut table = ProducerStateTable::default();
        append(&mut table, batch(5, 0, 1), 0).expect("first");
        for sequence in [0, 1, 2, 1000] {
            for epoch in [0, 4] {
                assert_eq!(
                    append(&mut table, batch(epoch, sequence, 1), 1),
                    Err(ProducerError::InvalidProducerEpoch)
                );
            }
        }
    }

    #[test]
    fn a_newer_epoch_must_start_at_sequence_zero_and_resets_the_batches() {
        let mut table = ProducerStateTable::default();
        append(&mut table, batch(0, 0, 3), 0).expect("first");
        assert_eq!(append(&mut table, batch(1, 3, 1), 3), Err(ProducerError::OutOfOrderSequence));
        assert_eq!(append(&mut table, batch(1, 1, 1), 3), Err(ProducerError::OutOfOrderSequence));
        assert_eq!(append(&mut table, batch(1, 0, 2), 3), Ok(AppendCheck::Append));
        let entry = table.get(ProducerId(PID)).expect("entry");
        assert_eq!(entry.epoch, ProducerEpoch(1));
        assert_eq!(entry.batches.len(), 1);
        // The old epoch's batches are gone: its retry is now fenced.
        assert_eq!(append(&mut table, batch(0, 0, 3), 5), Err(ProducerError::InvalidProducerEpoch));
        assert_eq!(append(&mut table, batch(1, 2, 1), 5), Ok(AppendCheck::Append));
    }

    #[test]
    fn sequences_wrap_after_i32_max() {
        let b = batch(0, i32::MAX - 1, 4);
        assert_eq!(b.last_sequence(), 1);
        assert_eq!(batch(0, i32::MAX, 1).last_sequence(), i32::MAX);
        assert_eq!(batch(0, i32::MAX, 2).last_sequence(), 0);
        assert_eq!(batch(0, 0, 1).last_sequence(), 0);
        let mut table = ProducerStateTable::default();
        append(&mut table, batch(0, i32::MAX - 2, 3), 0).expect("up to MAX");
        assert_eq!(append(&mut table, batch(0, 0, 2), 3), Ok(AppendCheck::Append));
        assert!(matches!(
            append(&mut table, batch(0, i32::MAX - 2, 3), 9),
            Ok(AppendCheck::Duplicate(m)) if m.first_offset == Offset(0)
        ));
        // A batch that wraps inside itself.
        let mut table = ProducerStateTable::default();
        append(&mut table, batch(0, i32::MAX - 1, 4), 0).expect("wrapping batch");
        assert_eq!(append(&mut table, batch(0, 2, 1), 4), Ok(AppendCheck::Append));
        assert!(matches!(
            append(&mut table, batch(0, i32::MAX - 1, 4), 9),
            Ok(AppendCheck::Duplicate(m)) if m.last_sequence == 1
        ));
    }

    #[test]
    fn in_sequence_matches_kafka_at_every_boundary() {
        let cases = [
            (NO_SEQUENCE, 0, true),
            (NO_SEQUENCE, 1, false),
            (0, 1, true),
            (0, 0, false),
            (0, 2, false),
            (i32::MAX - 1, i32::MAX, true),
            (i32::MAX, 0, true),
            (i32::MAX, 1, false),
            (i32::MAX, i32::MIN, false),
        ];
        for (last, next, expected) in cases {
            assert_eq!(in_sequence(last, next), expected, "{last} -> {next}");
        }
    }

    #[test]
    fn batches_without_a_producer_id_are_never_checked() {
        let mut table = ProducerStateTable::default();
        let plain = ProducerBatch { producer_id: ProducerId::NONE, ..batch(-1, -1, 3) };
        for offset in [0, 3, 6] {
            assert_eq!(table.try_append(&[plain], Offset(offset), NOW), Ok(AppendCheck::Append));
        }
        assert!(table.is_empty());
    }

    #[test]
    fn markers_check_the_epoch_and_a_newer_one_restarts_the_sequence() {
        let mut table = ProducerStateTable::default();
        let b = ProducerBatch { is_transactional: true, ..batch(0, 0, 1) };
        assert_eq!(append(&mut table, b, 0), Ok(AppendCheck::Append));
        assert_eq!(table.on_marker(ProducerId(PID), ProducerEpoch(0), 0), Ok(()));
        // Same epoch: sequences go on across transactions.
        assert_eq!(append(&mut table, batch(0, 1, 1), 2), Ok(AppendCheck::Append));
        assert_eq!(table.on_marker(ProducerId(PID), ProducerEpoch(1), 0), Ok(()));
        assert_eq!(table.get(ProducerId(PID)).map(|e| e.batches.len()), Some(0));
        assert_eq!(append(&mut table, batch(0, 2, 1), 4), Err(ProducerError::InvalidProducerEpoch));
        assert_eq!(
            table.on_marker(ProducerId(PID), ProducerEpoch(0), 0),
            Err(ProducerError::InvalidProducerEpoch)
        );
        assert_eq!(append(&mut table, batch(1, 0, 1), 4), Ok(AppendCheck::Append));
        let mut fresh = ProducerStateTable::default();
        assert_eq!(fresh.on_marker(ProducerId(9), ProducerEpoch(3), 0), Ok(()));
        let bytes = fresh.encode_snapshot(Offset(1));
        assert_eq!(ProducerStateTable::decode_snapshot(&bytes), Ok((Offset(1), fresh)));
    }

    #[test]
    fn open_and_aborted_transactions_survive_a_snapshot() {
        let mut table = ProducerStateTable::default();
        table.txns.on_data(ProducerId(5), Offset(0));
        table.txns.on_marker(ProducerId(5), Offset(3), TxnOutcome::Abort);
        table.txns.on_data(ProducerId(6), Offset(4));
        table.txns.on_data(ProducerId(5), Offset(7));
        let bytes = table.encode_snapshot(Offset(9));
        let (_, loaded) = ProducerStateTable::decode_snapshot(&bytes).expect("decodes");
        assert_eq!(loaded.txns.last_stable_offset(Offset(9)), Offset(4));
        assert_eq!(loaded.txns.aborted_between(Offset(0), Offset(9)).len(), 1);
        assert_eq!(loaded, table);
    }

    #[test]
    fn several_batches_in_one_append_are_all_or_nothing() {
        let mut table = ProducerStateTable::default();
        let other = ProducerBatch { producer_id: ProducerId(PID + 1), ..batch(0, 0, 1) };
        // Two in-order batches of one producer, and another producer, in one append.
        let ok = [batch(0, 0, 2), batch(0, 2, 3), other];
        assert_eq!(table.try_append(&ok, Offset(10), NOW), Ok(AppendCheck::Append));
        let entry = table.get(ProducerId(PID)).expect("entry");
        assert_eq!(entry.batches[1].first_offset, Offset(12));
        assert_eq!(entry.batches[1].last_offset, Offset(14));
        assert_eq!(
            table.get(ProducerId(PID + 1)).map(|e| e.batches[0].first_offset),
            Some(Offset(15))
        );
        let before = table.clone();
        // The second batch is out of order: the first one's update must be undone too.
        let third = ProducerBatch { producer_id: ProducerId(PID + 2), ..batch(0, 0, 1) };
        let bad = [third, batch(0, 5, 1), batch(0, 9, 1)];
        assert_eq!(table.try_append(&bad, Offset(16), NOW), Err(ProducerError::OutOfOrderSequence));
        assert_eq!(table, before);
        // A duplicate anywhere answers for the whole append, and nothing is recorded.
        let dup = [batch(0, 5, 1), batch(0, 2, 3)];
        assert!(matches!(
            table.try_append(&dup, Offset(16), NOW),
            Ok(AppendCheck::Duplicate(m)) if m.first_offset == Offset(12)
        ));
        assert_eq!(table, before);
    }

    #[test]
    fn idle_producers_expire() {
        let mut table = ProducerStateTable::default();
        table.try_append(&[batch(0, 0, 1)], Offset(0), 1_000).expect("a");
        let other = ProducerBatch { producer_id: ProducerId(PID + 1), ..batch(0, 0, 1) };
        table.try_append(&[other], Offset(1), 5_000).expect("b");
        assert_eq!(table.expire(10_999, 10_000), 0);
        assert_eq!(table.expire(11_000, 10_000), 1);
        assert!(table.get(ProducerId(PID)).is_none());
        assert!(table.get(ProducerId(PID + 1)).is_some());
        // An expired producer starts over with any sequence.
        assert_eq!(
            table.try_append(&[batch(0, 42, 1)], Offset(2), 12_000),
            Ok(AppendCheck::Append)
        );
    }

    #[test]
    fn replay_records_without_checking() {
        let mut table = ProducerStateTable::default();
        table.replay(&batch(0, 0, 2), Offset(0), NOW);
        table.replay(&batch(0, 2, 2), Offset(2), NOW);
        table.replay(
            &ProducerBatch { producer_id: ProducerId(-1), ..batch(0, 0, 1) },
            Offset(4),
            NOW,
        );
        assert_eq!(table.len(), 1);
        assert!(matches!(
            append(&mut table, batch(0, 2, 2), 9),
            Ok(AppendCheck::Duplicate(m)) if m.first_offset == Offset(2)
        ));
        assert_eq!(append(&mut table, batch(0, 4, 1), 5), Ok(AppendCheck::Append));
    }

    #[test]
    fn snapshots_round_trip_and_every_corruption_is_caught() {
        let mut table = ProducerStateTable::default();
        for producer in 0..4 {
            for i in 0..(producer + 3) {
                let b =
                    ProducerBatch { producer_id: ProducerId(producer as i64), ..batch(2, i, 1) };
                table.try_append(&[b], Offset(i64::from(producer * 100 + i)), NOW).expect("append");
            }
        }
        let bytes = table.encode_snapshot(Offset(12_345));
        let (offset, loaded) = ProducerStateTable::decode_snapshot(&bytes).expect("decode");
        assert_eq!(offset, Offset(12_345));
        assert_eq!(loaded, table);
        for byte in 0..bytes.len() {
            for bit in 0..8 {
                let mut corrupt = bytes.clone();
                corrupt[byte] ^= 1 << bit;
                assert!(
                    ProducerStateTable::decode_snapshot(&corrupt).is_err(),
                    "byte {byte} bit {bit}"
                );
            }
        }
        for len in 0..bytes.len() {
            assert!(ProducerStateTable::decode_snapshot(&bytes[..len]).is_err(), "len {len}");
        }
        let empty = ProducerStateTable::default().encode_snapshot(Offset(0));
        assert_eq!(
            ProducerStateTable::decode_snapshot(&empty),
            Ok((Offset(0), Default::default()))
        );
    }
}
