//! Log compaction as pure code: which records of a partition's sealed segments a clean keeps
//! (Kafka's `LogCleaner`), with no I/O. `cleaner.rs` reads the segments, feeds their batches
//! here, writes what comes back and swaps the segments.
//!
//! A clean has two passes over batches, as in Kafka:
//!
//! ```text
//!   log start                first dirty            map end      first uncleanable  active
//!   |--- cleaned before -----|------ dirty ----------|-- dirty --|----------------|-- ... --|
//!   pass 1 (MapBuilder): key -> last offset, from the first dirty offset until the map is
//!     full or the uncleanable part begins (the map's latest offset is where it stopped)
//!   pass 2 (Cleaner): every batch from the log start to the map end: a record stays if it
//!     is past the map's latest offset, or if it is the last of its key (and not a tombstone
//!     past its delete horizon)
//! ```
//!
//! Rules kept from Kafka:
//! - Offsets never change: a batch keeps its base offset and last offset delta (so that its
//!   producer's last sequence stays right), a removed record leaves a hole.
//! - A batch with nothing removed is kept byte for byte; one with records removed is written
//!   again with its own codec, attributes and producer fields; one with nothing left goes,
//!   unless the caller asks to keep it empty (header only): the last batch of a segment is
//!   kept so, which keeps every segment ending where the next one begins (`Log::open`'s
//!   continuity check) and an idempotent producer's last sequence in the log.
//! - Tombstones (null values) and markers of transactions with no records left stay until
//!   their delete horizon (KIP-534): the first clean that keeps one stamps its batch with
//!   `now + delete.retention.ms` (attributes bit 6, the base timestamp then holds the horizon
//!   and the records' timestamp deltas are rebased on it); a later clean past it removes it.
//! - Transactions: the records of aborted transactions are removed (and never enter the
//!   map); an abort marker stays while any batch of its transaction was seen in this clean,
//!   a commit marker while any of its records were, then both go by the delete horizon.
//! - Records without a key are removed (a compacted topic refuses them; this only meets ones
//!   written before the topic was compacted).
//!
//! The offset map holds a 16-byte hash of each key (SHA-256's first half; Kafka uses MD5) and
//! the key's last offset; its capacity comes from the memory it may use
//! (`log.cleaner.dedupe.buffer.size`, Kafka's 24 bytes per entry at a 90% load). Two keys
//! with the same hash would lose the older record of one; at 2^-64 per pair, never seen.

use std::collections::{HashMap, HashSet};

use bytes::BytesMut;
use sha2::{Digest, Sha256};

use crate::constants::{
    BATCH_HEADER_BYTES, CLEANER_DECOMPRESSED_MAX, OFFSET_MAP_ENTRY_BYTES, OFFSET_MAP_LOAD_PERCENT,
};
use crate::model::batch::BatchHeader;
use crate::model::record_scan::{self, RecordView};
use crate::model::records::control_outcome;
use crate::model::{Offset, ProducerId, TxnOutcome};
use crate::storage::txn_index::AbortedTxn;

/// Attributes bit of a batch whose base timestamp is its delete horizon (KIP-534).
pub const ATTRIBUTE_DELETE_HORIZON: i16 = 1 << 6;
const ATTRIBUTE_LOG_APPEND_TIME: i16 = 1 << 3;
const CODEC_MASK: i16 = 0x07;

/// Key hash -> the key's last offset in the dirty part, bounded in entries.
#[derive(Debug)]
pub struct OffsetMap {
    entries: HashMap<u128, Offset>,
    capacity: usize,
    /// The last offset the map covers: every record up to it was looked at.
    latest_offset: Offset,
}

impl OffsetMap {
    /// A map that uses at most about `memory_bytes` (Kafka's accounting).
    pub fn with_memory(memory_bytes: u64) -> OffsetMap {
        let slots = memory_bytes / OFFSET_MAP_ENTRY_BYTES;
        let capacity = (slots * OFFSET_MAP_LOAD_PERCENT / 100).max(1) as usize;
        OffsetMap { entries: HashMap::new(), capacity, latest_offset: Offset::NONE }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The last offset the map covers (NONE before anything was added).
    pub fn latest_offset(&self) -> Offset {
        self.latest_offset
    }

    pub fn get(&self, key: &[u8]) -> Option<Offset> {
        self.entries.get(&hash(key)).copied()
    }

    /// Records `offset` as the last of `key`; false (and nothing changed) when the map is
    /// full and the key is new.
    fn put(&mut self, key: &[u8], offset: Offset) -> bool {
        let hashed = hash(key);
        if self.entries.len() >= self.capacity && !self.entries.contains_key(&hashed) {
            return false;
        }
        self.entries.insert(hashed, offset);
        self.latest_offset = self.latest_offset.max(offset);
        true
    }

    fn cover(&mut self, offset: Offset) {
        self.latest_offset = self.latest_offset.max(offset);
    }
}

fn hash(key: &[u8]) -> u128 {
    let digest = Sha256::digest(key);
    let mut first = [0u8; 16];
    first.copy_from_slice(&digest[..16]);
    u128::from_be_bytes(first)
}

/// Pass 1: fills an offset map from the dirty batches, in offset order.
pub struct MapBuilder<'a> {
    map: &'a mut OffsetMap,
    txns: Transactions,
    /// The first dirty offset: records below it are not added.
    start: Offset,
}

/// Whether the map took a whole batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filled {
    /// Every keyed record of the batch is in the map; go on.
    Taken,
    /// The map is full: it covers the batch up to its latest offset, and nothing after.
    Full,
}

impl<'a> MapBuilder<'a> {
    /// `aborted`: the partition's aborted transactions from the log start on (any order).
    pub fn new(map: &'a mut OffsetMap, start: Offset, aborted: &[AbortedTxn]) -> MapBuilder<'a> {
        MapBuilder { map, txns: Transactions::new(aborted), start }
    }

    /// Adds the keys of one stored batch (batches come in offset order, from any offset:
    /// those before the first dirty offset only inform the transaction bookkeeping).
    pub fn add(&mut self, batch: &[u8]) -> Result<Filled, CleanError> {
        let header = BatchHeader::parse(batch).map_err(|_| CleanError::Header)?;
        self.txns.consume_aborted_up_to(header.base_offset(), header.last_offset());
        if header.is_control() {
            let outcome = control_outcome(batch);
            self.txns.on_control(header.producer_id(), outcome);
        } else if !self.txns.on_batch(&header) && header.last_offset() >= self.start {
            let section = record_scan::decompress_records(batch, CLEANER_DECOMPRESSED_MAX)?;
            for record in record_scan::records(&section, header.records_count())? {
                let offset = Offset(header.base_offset().0 + record.offset_delta);
                let Some(key) = record.key else { continue };
                if offset >= self.start && !self.map.put(key, offset) {
                    return Ok(Filled::Full);
                }
            }
        }
        if header.last_offset() >= self.start {
            self.map.cover(header.last_offset());
        }
        Ok(Filled::Taken)
    }
}

/// What a clean keeps of one batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Retained {
    /// The batch as it was.
    Whole,
    /// The batch written again (records removed, or its delete horizon set).
    Rewritten(Vec<u8>),
    /// Nothing.
    Dropped,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CleanError {
    #[error("not a stored record batch")]
    Header,
    #[error("{0}")]
    Records(#[from] record_scan::ScanError),
    #[error("cannot compress the cleaned records: {0}")]
    Compress(String),
}

/// Pass 2: decides batch by batch, in offset order from the log start, what stays.
pub struct Cleaner<'a> {
    map: &'a OffsetMap,
    txns: Transactions,
    now_ms: i64,
    delete_retention_ms: i64,
}

impl<'a> Cleaner<'a> {
    /// `aborted`: the partition's aborted transactions (any order); `now_ms` decides delete
    /// horizons.
    pub fn new(
        map: &'a OffsetMap,
        aborted: &[AbortedTxn],
        now_ms: i64,
        delete_retention_ms: i64,
    ) -> Cleaner<'a> {
        Cleaner { map, txns: Transactions::new(aborted), now_ms, delete_retention_ms }
    }

    /// What stays of `batch`. `keep_empty`: a batch with nothing left is kept as an empty
    /// batch (same offsets, producer fields and max timestamp, no records) rather than
    /// dropped. A batch that cannot be read is kept whole.
    pub fn clean(&mut self, batch: &[u8], keep_empty: bool) -> Result<Retained, CleanError> {
        let header = BatchHeader::parse(batch).map_err(|_| CleanError::Header)?;
        if header.size_bytes() != batch.len() {
            return Err(CleanError::Header);
        }
        self.txns.consume_aborted_up_to(header.base_offset(), header.last_offset());
        let horizon = delete_horizon(&header);
        let horizon_passed = horizon.is_some_and(|at| self.now_ms >= at);
        if header.is_control() && header.records_count() == 0 {
            // An empty control batch (a marker cleaned before): nothing to keep.
            return Ok(self.nothing_left(batch, &header, keep_empty));
        }
        if header.is_control() {
            let outcome = control_outcome(batch);
            let discardable = self.txns.on_control(header.producer_id(), outcome);
            return Ok(match (discardable, horizon) {
                (false, _) => Retained::Whole,
                (true, Some(_)) if horizon_passed => self.nothing_left(batch, &header, keep_empty),
                (true, Some(_)) => Retained::Whole,
                (true, None) => {
                    let section = record_scan::decompress_records(batch, CLEANER_DECOMPRESSED_MAX)?;
                    let records = record_scan::records(&section, header.records_count())?;
                    let stamped = self.now_ms.saturating_add(self.delete_retention_ms);
                    Retained::Rewritten(rebuild(batch, &header, &records, Some(stamped))?)
                }
            });
        }
        if self.txns.on_batch(&header) {
            // Aborted: none of its records count.
            return Ok(self.nothing_left(batch, &header, keep_empty));
        }
        if header.base_offset() > self.map.latest_offset() {
            return Ok(Retained::Whole);
        }
        let section = record_scan::decompress_records(batch, CLEANER_DECOMPRESSED_MAX)?;
        let records = record_scan::records(&section, header.records_count())?;
        let mut kept = Vec::with_capacity(records.len());
        let mut tombstones = false;
        for record in &records {
            let offset = Offset(header.base_offset().0 + record.offset_delta);
            if self.retains(record, offset, horizon_passed) {
                tombstones |= record.value.is_none();
                kept.push(*record);
            }
        }
        if kept.is_empty() {
            return Ok(self.nothing_left(batch, &header, keep_empty));
        }
        let needs_horizon = tombstones && horizon.is_none();
        if kept.len() == records.len() && !needs_horizon {
            return Ok(Retained::Whole);
        }
        let stamped = if needs_horizon {
            Some(self.now_ms.saturating_add(self.delete_retention_ms))
        } else {
            horizon
        };
        Ok(Retained::Rewritten(rebuild(batch, &header, &kept, stamped)?))
    }

    /// Kafka's `shouldRetainRecord`: past the map, or the key's last record and not a
    /// tombstone past its horizon.
    fn retains(&self, record: &RecordView<'_>, offset: Offset, horizon_passed: bool) -> bool {
        if offset > self.map.latest_offset() {
            return true;
        }
        let Some(key) = record.key else { return false };
        let latest = self.map.get(key).is_none_or(|last| offset >= last);
        latest && (record.value.is_some() || !horizon_passed)
    }

    fn nothing_left(&self, batch: &[u8], header: &BatchHeader<'_>, keep_empty: bool) -> Retained {
        if keep_empty {
            Retained::Rewritten(empty_batch(batch, header))
        } else {
            Retained::Dropped
        }
    }
}

/// The delete horizon a batch carries, if it has one.
pub fn delete_horizon(header: &BatchHeader<'_>) -> Option<i64> {
    (header.attributes() & ATTRIBUTE_DELETE_HORIZON != 0).then(|| header.base_timestamp())
}

/// Kafka's `CleanedTransactionMetadata`: which producers are inside an aborted transaction
/// at the current offset of a pass, and which markers may go.
struct Transactions {
    /// Aborted transactions by first offset, those before `next` already entered.
    aborted: Vec<AbortedTxn>,
    next: usize,
    /// Producers inside an aborted transaction: whether a batch of it was seen, and the
    /// offset of its abort marker.
    ongoing_aborted: HashMap<ProducerId, (bool, Offset)>,
    /// Producers whose committed transaction had a batch seen in this pass.
    ongoing_committed: HashSet<ProducerId>,
}

impl Transactions {
    fn new(aborted: &[AbortedTxn]) -> Transactions {
        let mut aborted = aborted.to_vec();
        aborted.sort_by_key(|txn| txn.first_offset);
        Transactions {
            aborted,
            next: 0,
            ongoing_aborted: HashMap::new(),
            ongoing_committed: HashSet::new(),
        }
    }

    /// Enters the aborted transactions that begin at or before the batch `[base, last]`, and
    /// leaves those whose marker lies before it: a marker a previous clean removed (with the
    /// last batch of its transaction) is never met, and the producer's next transaction
    /// must not count as aborted.
    fn consume_aborted_up_to(&mut self, base: Offset, last: Offset) {
        self.ongoing_aborted.retain(|_, (_, marker)| *marker >= base);
        while self.next < self.aborted.len() && self.aborted[self.next].first_offset <= last {
            let txn = self.aborted[self.next];
            if txn.last_offset >= base {
                self.ongoing_aborted.insert(txn.producer_id, (false, txn.last_offset));
            }
            self.next += 1;
        }
    }

    /// A data batch: true when it belongs to an aborted transaction (its records go).
    fn on_batch(&mut self, header: &BatchHeader<'_>) -> bool {
        if !header.is_transactional() {
            return false;
        }
        let producer_id = header.producer_id();
        match self.ongoing_aborted.get_mut(&producer_id) {
            Some((seen, _)) => {
                *seen = true;
                true
            }
            None => {
                self.ongoing_committed.insert(producer_id);
                false
            }
        }
    }

    /// A control batch: true when its marker may go (once past its delete horizon).
    fn on_control(&mut self, producer_id: ProducerId, outcome: Option<TxnOutcome>) -> bool {
        match outcome {
            Some(TxnOutcome::Abort) => {
                // Kept while a batch of the transaction was seen: consumers need it to skip
                // those records.
                !self.ongoing_aborted.remove(&producer_id).is_some_and(|(seen, _)| seen)
            }
            Some(TxnOutcome::Commit) => !self.ongoing_committed.remove(&producer_id),
            // An empty control batch (cleaned before) may go; an unknown one stays.
            None => false,
        }
    }
}

/// What `drop_records` made of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dropped {
    /// No record was dropped: the batch as it was.
    Nothing,
    /// Some were: the batch rebuilt with the others, in its own codec (their offset deltas
    /// and the batch's last offset delta kept, as compaction leaves them).
    Rebuilt(Vec<u8>),
    /// Every record was dropped.
    Everything,
}

/// `batch` (one whole batch) without the records `drop` picks: delayed delivery's cancels.
pub fn drop_records(
    batch: &[u8],
    drop: impl Fn(&RecordView<'_>) -> bool,
) -> Result<Dropped, CleanError> {
    let header = BatchHeader::parse(batch).map_err(|_| CleanError::Header)?;
    let section = record_scan::decompress_records(batch, CLEANER_DECOMPRESSED_MAX)?;
    let records = record_scan::records(&section, header.records_count())?;
    let kept: Vec<RecordView<'_>> = records.iter().filter(|r| !drop(r)).copied().collect();
    Ok(match kept.len() {
        0 => Dropped::Everything,
        n if n == records.len() => Dropped::Nothing,
        _ => Dropped::Rebuilt(rebuild(batch, &header, &kept, None)?),
    })
}

/// An empty batch in place of `batch`: its offsets (base offset, last offset delta), leader
/// epoch, producer fields and max timestamp, no records, uncompressed (Kafka's
/// `writeEmptyHeader`).
fn empty_batch(batch: &[u8], header: &BatchHeader<'_>) -> Vec<u8> {
    let mut out = batch[..BATCH_HEADER_BYTES].to_vec();
    let keep = header.attributes() & !(CODEC_MASK | ATTRIBUTE_DELETE_HORIZON);
    out[21..23].copy_from_slice(&keep.to_be_bytes());
    let max_timestamp = header.max_timestamp();
    out[27..35].copy_from_slice(&max_timestamp.to_be_bytes());
    out[35..43].copy_from_slice(&max_timestamp.to_be_bytes());
    out[57..61].copy_from_slice(&0i32.to_be_bytes());
    finish(out)
}

/// `batch` written again with only `kept` (some of its records, in order), compressed with
/// its own codec; `horizon`: the delete horizon it carries from now on.
fn rebuild(
    batch: &[u8],
    header: &BatchHeader<'_>,
    kept: &[RecordView<'_>],
    horizon: Option<i64>,
) -> Result<Vec<u8>, CleanError> {
    let old_base = header.base_timestamp();
    let new_base = horizon.unwrap_or(old_base);
    let log_append_time = header.attributes() & ATTRIBUTE_LOG_APPEND_TIME != 0;
    let mut raw = Vec::with_capacity(kept.iter().map(|r| r.bytes.len() + 4).sum());
    let mut max_timestamp = i64::MIN;
    for record in kept {
        let timestamp = old_base.wrapping_add(record.timestamp_delta);
        max_timestamp = max_timestamp.max(timestamp);
        if new_base == old_base {
            raw.extend_from_slice(record.bytes);
            continue;
        }
        let mut delta = Vec::with_capacity(10);
        record_scan::put_varlong(&mut delta, timestamp.wrapping_sub(new_base));
        let length = 1 + delta.len() + record.after_timestamp.len();
        record_scan::put_varlong(&mut raw, length as i64);
        raw.push(0); // record attributes: unused
        raw.extend_from_slice(&delta);
        raw.extend_from_slice(record.after_timestamp);
    }
    if log_append_time {
        max_timestamp = header.max_timestamp();
    }
    let mut out = batch[..BATCH_HEADER_BYTES].to_vec();
    let mut attributes = header.attributes() & !ATTRIBUTE_DELETE_HORIZON;
    if horizon.is_some() {
        attributes |= ATTRIBUTE_DELETE_HORIZON;
    }
    out[21..23].copy_from_slice(&attributes.to_be_bytes());
    out[27..35].copy_from_slice(&new_base.to_be_bytes());
    out[35..43].copy_from_slice(&max_timestamp.to_be_bytes());
    out[57..61].copy_from_slice(&(kept.len() as i32).to_be_bytes());
    compress(header.attributes() & CODEC_MASK, &raw, &mut out)?;
    Ok(finish(out))
}

/// Appends `raw` records compressed with `codec` (Kafka's framing, as producers write it).
fn compress(codec: i16, raw: &[u8], out: &mut Vec<u8>) -> Result<(), CleanError> {
    use kafka_protocol::compression::{Compressor, Gzip, Lz4, Snappy, Zstd};
    let fill = |buf: &mut BytesMut| {
        buf.extend_from_slice(raw);
        Ok(())
    };
    let done = match codec {
        0 => {
            out.extend_from_slice(raw);
            Ok(())
        }
        1 => <Gzip as Compressor<Vec<u8>>>::compress(out, fill),
        2 => <Snappy as Compressor<Vec<u8>>>::compress(out, fill),
        3 => <Lz4 as Compressor<Vec<u8>>>::compress(out, fill),
        4 => <Zstd as Compressor<Vec<u8>>>::compress(out, fill),
        other => return Err(CleanError::Compress(format!("unknown codec {other}"))),
    };
    done.map_err(|e| CleanError::Compress(e.to_string()))
}

/// Sets the batch length and the CRC of a batch built here.
fn finish(mut out: Vec<u8>) -> Vec<u8> {
    let length = (out.len() - 12) as i32;
    out[8..12].copy_from_slice(&length.to_be_bytes());
    let crc = crc32c::crc32c(&out[21..]);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::batch::{self, MAGIC_V2};
    use crate::model::{test_seed, ProducerEpoch, TestRng};
    use bytes::Bytes;
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };
    use std::collections::BTreeMap;

    impl OffsetMap {
        fn with_capacity(capacity: usize) -> OffsetMap {
            OffsetMap { entries: HashMap::new(), capacity, latest_offset: Offset::NONE }
        }
    }

    const CODECS: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    /// A record of the generated log, as the model knows it.
    #[derive(Debug, Clone, PartialEq, Eq)]
    struct Rec {
        offset: i64,
        key: Option<Vec<u8>>,
        value: Option<Vec<u8>>,
        timestamp: i64,
        /// The transaction's producer, for transactional records.
        txn: Option<i64>,
    }

    /// A generated log: its batches (split into segments), its records, and its aborted
    /// transactions with the offsets of every transaction's marker.
    struct Generated {
        segments: Vec<Vec<Vec<u8>>>,
        records: Vec<Rec>,
        aborted: Vec<AbortedTxn>,
        /// Offsets of aborted transactions' data records.
        aborted_offsets: HashSet<i64>,
        /// Marker offset -> (producer, commit?, data offsets of its transaction).
        markers: BTreeMap<i64, (i64, bool, Vec<i64>)>,
    }

    fn data_batch(records: &[Rec], producer: Option<i64>, codec: Compression) -> Vec<u8> {
        let base = records[0].offset;
        let encoded: Vec<Record> = records
            .iter()
            .map(|r| Record {
                transactional: r.txn.is_some(),
                control: false,
                partition_leader_epoch: 0,
                producer_id: producer.unwrap_or(-1),
                producer_epoch: if producer.is_some() { 0 } else { -1 },
                timestamp_type: TimestampType::Creation,
                offset: r.offset,
                // kafka-protocol starts a new batch where offset - sequence changes.
                sequence: (r.offset - base) as i32,
                timestamp: r.timestamp,
                key: r.key.clone().map(Bytes::from),
                value: r.value.clone().map(Bytes::from),
                headers: Default::default(),
                delete_horizon: false,
            })
            .collect();
        let mut out = BytesMut::new();
        let options = RecordEncodeOptions { version: 2, compression: codec };
        RecordBatchEncoder::encode(&mut out, &encoded, &options).unwrap();
        let header = BatchHeader::parse(&out).unwrap();
        assert_eq!(header.size_bytes(), out.len(), "one batch");
        out.to_vec()
    }

    fn generate(rng: &mut TestRng) -> Generated {
        let keys = 1 + rng.below(12);
        let mut offset = 0i64;
        let mut timestamp = 1_000i64;
        let mut batches: Vec<Vec<u8>> = Vec::new();
        let mut records = Vec::new();
        let mut aborted = Vec::new();
        let mut aborted_offsets = HashSet::new();
        let mut markers = BTreeMap::new();
        // Open transactions: producer -> (first offset, data offsets).
        let mut open: BTreeMap<i64, (i64, Vec<i64>)> = BTreeMap::new();
        for _ in 0..(1 + rng.below(40)) {
            let choice = rng.below(10);
            if choice < 2 && !open.is_empty() {
                // End a transaction.
                let producer = *open.keys().nth(rng.below(open.len() as u64) as usize).unwrap();
                let (first, data) = open.remove(&producer).unwrap();
                let commit = rng.below(2) == 0;
                let outcome = if commit { TxnOutcome::Commit } else { TxnOutcome::Abort };
                let mut marker = crate::model::records::build_control_batch(
                    timestamp,
                    ProducerId(producer),
                    ProducerEpoch(0),
                    outcome,
                    0,
                );
                marker[0..8].copy_from_slice(&offset.to_be_bytes());
                batches.push(marker);
                if !commit {
                    aborted.push(AbortedTxn {
                        producer_id: ProducerId(producer),
                        first_offset: Offset(first),
                        last_offset: Offset(offset),
                    });
                    aborted_offsets.extend(data.iter().copied());
                }
                markers.insert(offset, (producer, commit, data));
                offset += 1;
                continue;
            }
            let txn = (choice < 4).then(|| 100 + rng.below(3) as i64);
            let producer = txn.or_else(|| (rng.below(3) == 0).then_some(7));
            let count = 1 + rng.below(5) as usize;
            let mut batch_records = Vec::new();
            for _ in 0..count {
                timestamp += rng.below(3) as i64;
                let key = match rng.below(20) {
                    0 => None,
                    _ => Some(format!("k{}", rng.below(keys)).into_bytes()),
                };
                let value = match rng.below(6) {
                    0 => None,
                    _ => Some(format!("v{offset}-{}", "x".repeat(rng.below(30) as usize))),
                };
                let value = value.map(String::into_bytes);
                batch_records.push(Rec { offset, key, value, timestamp, txn });
                offset += 1;
            }
            if let Some(producer) = txn {
                let entry = open.entry(producer).or_insert((batch_records[0].offset, Vec::new()));
                entry.1.extend(batch_records.iter().map(|r| r.offset));
            }
            let codec = CODECS[rng.below(5) as usize];
            batches.push(data_batch(&batch_records, producer, codec));
            records.extend(batch_records);
        }
        // Every transaction ends (a clean never reaches past the last stable offset).
        for (producer, (first, data)) in std::mem::take(&mut open) {
            let mut marker = crate::model::records::build_control_batch(
                timestamp,
                ProducerId(producer),
                ProducerEpoch(0),
                TxnOutcome::Abort,
                0,
            );
            marker[0..8].copy_from_slice(&offset.to_be_bytes());
            batches.push(marker);
            aborted.push(AbortedTxn {
                producer_id: ProducerId(producer),
                first_offset: Offset(first),
                last_offset: Offset(offset),
            });
            aborted_offsets.extend(data.iter().copied());
            markers.insert(offset, (producer, false, data));
            offset += 1;
        }
        let mut segments = vec![Vec::new()];
        for batch in batches {
            if !segments.last().unwrap().is_empty() && rng.below(4) == 0 {
                segments.push(Vec::new());
            }
            segments.last_mut().unwrap().push(batch);
        }
        Generated { segments, records, aborted, aborted_offsets, markers }
    }

    /// Builds the map over the batches from `start`, as the cleaner does.
    fn build_map(
        segments: &[Vec<Vec<u8>>],
        start: Offset,
        map: &mut OffsetMap,
        aborted: &[AbortedTxn],
    ) {
        let mut builder = MapBuilder::new(map, start, aborted);
        for batch in segments.iter().flatten() {
            if builder.add(batch).unwrap() == Filled::Full {
                return;
            }
        }
    }

    /// One clean of every segment, the last batch of each kept at least empty.
    fn clean_all(
        segments: &[Vec<Vec<u8>>],
        map: &OffsetMap,
        aborted: &[AbortedTxn],
        now_ms: i64,
    ) -> Vec<Vec<Vec<u8>>> {
        let mut cleaner = Cleaner::new(map, aborted, now_ms, DELETE_RETENTION_MS);
        segments
            .iter()
            .map(|segment| {
                let mut out = Vec::new();
                for (i, batch) in segment.iter().enumerate() {
                    match cleaner.clean(batch, i + 1 == segment.len()).unwrap() {
                        Retained::Whole => out.push(batch.clone()),
                        Retained::Rewritten(bytes) => out.push(bytes),
                        Retained::Dropped => {}
                    }
                }
                out
            })
            .collect()
    }

    const DELETE_RETENTION_MS: i64 = 1_000;

    /// Every record of the batches, with its absolute timestamp; and the markers' offsets.
    fn read_back(segments: &[Vec<Vec<u8>>]) -> (Vec<Rec>, Vec<i64>) {
        let mut records = Vec::new();
        let mut markers = Vec::new();
        for batch_bytes in segments.iter().flatten() {
            let header = batch::validate(batch_bytes, usize::MAX).expect("a valid batch");
            assert_eq!(header.magic(), MAGIC_V2);
            if header.is_control() {
                if header.records_count() > 0 {
                    markers.push(header.base_offset().0);
                }
                continue;
            }
            let section = record_scan::decompress_records(batch_bytes, 1 << 30).unwrap();
            for r in record_scan::records(&section, header.records_count()).unwrap() {
                let offset = header.base_offset().0 + r.offset_delta;
                assert!(offset <= header.last_offset().0);
                records.push(Rec {
                    offset,
                    key: r.key.map(<[u8]>::to_vec),
                    value: r.value.map(<[u8]>::to_vec),
                    timestamp: header.base_timestamp() + r.timestamp_delta,
                    txn: header.is_transactional().then(|| header.producer_id().0),
                });
            }
        }
        (records, markers)
    }

    /// Offsets and segment shape: every output batch is an input batch's (same base and last
    /// offset, producer fields), in order, and every segment ends with its last batch.
    fn check_shape(before: &[Vec<Vec<u8>>], after: &[Vec<Vec<u8>>]) {
        assert_eq!(before.len(), after.len());
        for (old, new) in before.iter().zip(after) {
            let span = |b: &Vec<u8>| {
                let h = BatchHeader::parse(b).unwrap();
                (h.base_offset(), h.last_offset(), h.producer_id(), h.is_control())
            };
            let old_spans: Vec<_> = old.iter().map(span).collect();
            let new_spans: Vec<_> = new.iter().map(span).collect();
            assert_eq!(old_spans.last(), new_spans.last(), "a segment keeps its last batch");
            let mut at = 0;
            for s in &new_spans {
                while old_spans[at] != *s {
                    at += 1;
                }
            }
        }
    }

    #[test]
    fn dropped_records_leave_the_others_in_their_codec() {
        for codec in CODECS {
            let records: Vec<Rec> = (0..4)
                .map(|i| Rec {
                    offset: i,
                    key: Some(format!("k{}", i % 2).into_bytes()),
                    value: Some(format!("v{i}").into_bytes()),
                    timestamp: 1_000 + i,
                    txn: None,
                })
                .collect();
            let batch = data_batch(&records, None, codec);
            assert_eq!(drop_records(&batch, |_| false).expect("read"), Dropped::Nothing);
            assert_eq!(drop_records(&batch, |_| true).expect("read"), Dropped::Everything);
            let odd = drop_records(&batch, |r| r.key == Some(b"k0".as_slice())).expect("read");
            let Dropped::Rebuilt(rebuilt) = odd else { panic!("not rebuilt") };
            let header = batch::validate(&rebuilt, usize::MAX).expect("a valid batch");
            assert_eq!((header.records_count(), header.last_offset_delta()), (2, 3));
            let section = record_scan::decompress_records(&rebuilt, u64::MAX).expect("read");
            let kept = record_scan::records(&section, 2).expect("two records");
            let deltas: Vec<i64> = kept.iter().map(|r| r.offset_delta).collect();
            assert_eq!(deltas, [1, 3], "{codec:?}");
            assert_eq!(kept[1].value, Some(b"v3".as_slice()));
        }
    }

    #[test]
    fn one_clean_matches_the_model() {
        let mut rng = TestRng::new(test_seed("compaction_one_clean_matches_the_model"));
        for round in 0..300 {
            let log = generate(&mut rng);
            let end = log.records.last().map_or(0, |r| r.offset) + 2;
            let start = Offset(rng.below(end as u64) as i64 / 2);
            let mut map = OffsetMap::with_capacity(1 + rng.below(15) as usize);
            build_map(&log.segments, start, &mut map, &log.aborted);
            let latest = map.latest_offset().0;
            let cleaned = clean_all(&log.segments, &map, &log.aborted, 5_000);
            check_shape(&log.segments, &cleaned);
            let (kept, markers) = read_back(&cleaned);
            // The model: the last offset of each key among the counted records.
            let counted = |r: &&Rec| {
                r.offset >= start.0
                    && r.offset <= latest
                    && !log.aborted_offsets.contains(&r.offset)
            };
            let mut last: HashMap<Vec<u8>, i64> = HashMap::new();
            for r in log.records.iter().filter(counted) {
                if let Some(key) = &r.key {
                    last.insert(key.clone(), r.offset);
                }
            }
            let expected: Vec<Rec> = log
                .records
                .iter()
                .filter(|r| !log.aborted_offsets.contains(&r.offset))
                .filter(|r| {
                    r.offset > latest
                        || r.key
                            .as_ref()
                            .is_some_and(|k| last.get(k).is_none_or(|l| r.offset >= *l))
                })
                .cloned()
                .collect();
            assert_eq!(kept, expected, "round {round}, start {start:?}, latest {latest}");
            // Markers: an abort marker stays (its data was seen in this pass), a commit one
            // too (first clean: no horizon yet).
            let all: Vec<i64> = log.markers.keys().copied().collect();
            assert_eq!(markers, all, "round {round}");
        }
    }

    #[test]
    fn cleaning_until_nothing_changes_keeps_the_latest_value_of_each_key() {
        let mut rng = TestRng::new(test_seed("compaction_cleaning_until_nothing_changes"));
        for round in 0..200 {
            let log = generate(&mut rng);
            let mut segments = log.segments.clone();
            let mut now = 5_000;
            for _ in 0..4 {
                let mut map = OffsetMap::with_capacity(1 << 20);
                build_map(&segments, Offset::ZERO, &mut map, &log.aborted);
                let cleaned = clean_all(&segments, &map, &log.aborted, now);
                check_shape(&segments, &cleaned);
                segments = cleaned;
                now += DELETE_RETENTION_MS + 1;
            }
            let (kept, markers) = read_back(&segments);
            let mut latest: BTreeMap<Vec<u8>, Rec> = BTreeMap::new();
            for r in log.records.iter().filter(|r| !log.aborted_offsets.contains(&r.offset)) {
                if let Some(key) = &r.key {
                    latest.insert(key.clone(), r.clone());
                }
            }
            let mut expected: Vec<Rec> =
                latest.into_values().filter(|r| r.value.is_some()).collect();
            expected.sort_by_key(|r| r.offset);
            assert_eq!(kept, expected, "round {round}");
            // Idempotent: one more clean changes nothing.
            let mut map = OffsetMap::with_capacity(1 << 20);
            build_map(&segments, Offset::ZERO, &mut map, &log.aborted);
            assert_eq!(clean_all(&segments, &map, &log.aborted, now), segments, "round {round}");
            // A marker stays only while a batch of its transaction does.
            let data_batches: Vec<(i64, i64)> = segments
                .iter()
                .flatten()
                .map(|b| BatchHeader::parse(b).unwrap())
                .filter(|h| !h.is_control() && h.is_transactional())
                .map(|h| (h.base_offset().0, h.last_offset().0))
                .collect();
            for (offset, (_, commit, data)) in &log.markers {
                let has_data = data_batches
                    .iter()
                    .any(|(base, last)| data.iter().any(|d| d >= base && d <= last));
                if !commit {
                    assert!(!has_data || markers.contains(offset), "round {round}");
                }
                if !has_data {
                    assert!(!markers.contains(offset), "round {round}: marker {offset} stays");
                }
            }
        }
    }

    #[test]
    fn a_tombstone_stays_until_its_delete_horizon_then_goes() {
        let records = [
            Rec {
                offset: 0,
                key: Some(b"a".to_vec()),
                value: Some(b"1".to_vec()),
                timestamp: 10,
                txn: None,
            },
            Rec { offset: 1, key: Some(b"a".to_vec()), value: None, timestamp: 20, txn: None },
            Rec {
                offset: 2,
                key: Some(b"b".to_vec()),
                value: Some(b"2".to_vec()),
                timestamp: 30,
                txn: None,
            },
        ];
        for codec in CODECS {
            let segments = vec![
                vec![data_batch(&records, None, codec)],
                vec![data_batch(
                    &[Rec {
                        offset: 3,
                        key: Some(b"c".to_vec()),
                        value: Some(b"3".to_vec()),
                        timestamp: 40,
                        txn: None,
                    }],
                    None,
                    codec,
                )],
            ];
            let mut map = OffsetMap::with_capacity(100);
            build_map(&segments, Offset::ZERO, &mut map, &[]);
            let first = clean_all(&segments, &map, &[], 1_000);
            let header = BatchHeader::parse(&first[0][0]).unwrap();
            assert_eq!(delete_horizon(&header), Some(1_000 + DELETE_RETENTION_MS), "{codec:?}");
            assert_eq!(header.attributes() & CODEC_MASK, codec as i16, "its own codec");
            let (kept, _) = read_back(&first);
            // Timestamps survive the rebase on the horizon.
            assert_eq!(
                kept,
                vec![
                    records[1].clone(),
                    records[2].clone(),
                    Rec {
                        offset: 3,
                        key: Some(b"c".to_vec()),
                        value: Some(b"3".to_vec()),
                        timestamp: 40,
                        txn: None,
                    }
                ]
            );
            // Before the horizon: unchanged. After: the tombstone goes.
            let same = clean_all(&first, &map, &[], 1_000 + DELETE_RETENTION_MS - 1);
            assert_eq!(same, first);
            let later = clean_all(&first, &map, &[], 1_000 + DELETE_RETENTION_MS);
            let (kept, _) = read_back(&later);
            assert_eq!(kept.iter().map(|r| r.offset).collect::<Vec<_>>(), vec![2, 3]);
        }
    }

    #[test]
    fn a_batch_with_nothing_left_is_dropped_or_kept_empty_with_its_offsets() {
        let old = [Rec {
            offset: 0,
            key: Some(b"a".to_vec()),
            value: Some(b"1".to_vec()),
            timestamp: 10,
            txn: None,
        }];
        let new = [Rec {
            offset: 1,
            key: Some(b"a".to_vec()),
            value: Some(b"2".to_vec()),
            timestamp: 20,
            txn: None,
        }];
        let batch = data_batch(&old, Some(9), Compression::Zstd);
        let mut map = OffsetMap::with_capacity(10);
        build_map(
            &[vec![batch.clone(), data_batch(&new, None, Compression::None)]],
            Offset::ZERO,
            &mut map,
            &[],
        );
        let mut cleaner = Cleaner::new(&map, &[], 0, 0);
        assert_eq!(cleaner.clean(&batch, false).unwrap(), Retained::Dropped);
        let Retained::Rewritten(empty) = cleaner.clean(&batch, true).unwrap() else { panic!() };
        let header = batch::validate(&empty, usize::MAX).unwrap();
        let original = BatchHeader::parse(&batch).unwrap();
        assert_eq!(header.records_count(), 0);
        assert_eq!(header.base_offset(), original.base_offset());
        assert_eq!(header.last_offset(), original.last_offset());
        assert_eq!(header.producer_id(), original.producer_id());
        assert_eq!(header.base_sequence(), original.base_sequence());
        assert_eq!(header.max_timestamp(), original.max_timestamp());
        assert_eq!(header.attributes() & CODEC_MASK, 0);
    }
}
