//! One share partition's records in flight (KIP-932; Kafka's `SharePartition`): which records
//! of a topic partition a share group has handed out, to whom, until when, and how often.
//!
//! ```text
//!   offsets:   ... done ... | start (SPSO)            end (SPEO) | never handed out ...
//!                            [ in flight: Available or Acquired ]
//!   an offset in [start, end) that is not in `records` is done: Acknowledged or Archived
//! ```
//!
//! A record moves Available -> Acquired (a ShareFetch gave it to a member, delivery count +1,
//! locked until `now + lock`) -> done (ACCEPT: acknowledged; REJECT or GAP: archived) or back
//! to Available (RELEASE, the lock timed out, the member left or closed its share session);
//! a record going back to Available whose delivery count reached the limit is archived
//! instead. With dead letters on (the group names a dead-letter topic, KIP-1191), a record
//! archived without being accepted (REJECT, or its delivery count limit) is Archiving first:
//! it holds `start` until its dead letter is written (`next_dead_letter`, `dead_lettered`),
//! then it is done. `start` moves up past done records, so everything below it is finished for the
//! group; `end` is the first offset never handed out. At most `max_locks` records lie in
//! [start, end): a member gets no new record past that until the oldest are done.
//!
//! Stored state (`Stored`): start, end and every in-flight record with its delivery count,
//! the records waiting for their dead letters, each with the sequence number it was given
//! when archived, the next such number, and the producer id their writes use. A dead
//! letter is written as that producer's batch with the letter's sequence, so a write
//! repeated after a crash is a duplicate the dead-letter topic's partition drops: each dead
//! letter is written exactly once. (A letter is written only once its Archiving state is
//! stored, so a sequence written is never given to another letter after a restart.)
//! Acquired records are stored as Available (their lock does not survive a restart), so a
//! restart redelivers exactly what was not acknowledged, with the delivery counts it had.
//!
//! Pure: time (ms) and limits are arguments; no I/O. One per (group, topic, partition), on the
//! group coordinator's shard.

use std::collections::BTreeMap;

use crate::model::dynamic_config::RedeliveryBackoff;
use crate::model::ErrorCode;

/// Kafka's acknowledge types (ShareFetch and ShareAcknowledge `AcknowledgeTypes`).
pub const ACK_GAP: i8 = 0;
pub const ACK_ACCEPT: i8 = 1;
pub const ACK_RELEASE: i8 = 2;
pub const ACK_REJECT: i8 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordState {
    Available,
    Acquired,
    /// Archived without being accepted, its dead letter not written yet.
    Archiving,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct InFlight {
    state: RecordState,
    delivery_count: i16,
    /// The member holding it (Acquired only).
    owner: Option<String>,
    /// When its acquisition lock ends (Acquired), or when its redelivery back-off ends
    /// (Available: not handed out before; 0 none).
    lock_deadline_ms: i64,
    /// Why it is archived (Archiving only).
    reason: ArchiveReason,
    /// Its dead letter's sequence number (Archiving only).
    letter: i32,
}

/// What releasing a record does: archives it at the delivery count limit, else makes it
/// Available again, to be handed out after its redelivery back-off (from `now_ms`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Release {
    pub delivery_limit: i16,
    pub backoff: RedeliveryBackoff,
    pub now_ms: i64,
}

impl Release {
    /// No back-off: Kafka's behaviour.
    pub fn at_once(delivery_limit: i16) -> Release {
        Release { delivery_limit, backoff: RedeliveryBackoff::default(), now_ms: 0 }
    }
}

impl InFlight {
    /// Available and past its redelivery back-off at `now_ms`.
    fn acquirable(&self, now_ms: i64) -> bool {
        self.state == RecordState::Available && self.lock_deadline_ms <= now_ms
    }
}

/// A run of records handed out together: the ShareFetch response's `AcquiredRecords`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Acquired {
    pub first_offset: i64,
    pub last_offset: i64,
    pub delivery_count: i16,
}

/// Why a record was archived (its dead letter says so).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveReason {
    Rejected,
    DeliveryCountExceeded,
}

impl ArchiveReason {
    /// The stored code.
    pub fn code(self) -> i8 {
        match self {
            ArchiveReason::Rejected => 0,
            ArchiveReason::DeliveryCountExceeded => 1,
        }
    }

    pub fn from_code(code: i8) -> ArchiveReason {
        match code {
            1 => ArchiveReason::DeliveryCountExceeded,
            _ => ArchiveReason::Rejected,
        }
    }

    /// The dead letter's `__dlq.errors.message` header: Kafka's `ShareGroupDLQThrowable`
    /// messages.
    pub fn message(self) -> &'static str {
        match self {
            ArchiveReason::Rejected => "Offset rejected by client.",
            ArchiveReason::DeliveryCountExceeded => "Offset delivery count exceeded the threshold.",
        }
    }
}

/// A record waiting for its dead letter, with the letter's sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Letter {
    pub offset: i64,
    pub delivery_count: i16,
    pub reason: ArchiveReason,
    pub sequence: i32,
}

/// The idempotent producer a share partition writes its dead letters with: the target
/// partition of the dead-letter topic, and the sequence it expects next. A new target, or a
/// letter whose sequence is not the expected one (one before it was given up), gets a new
/// producer id (a producer the partition does not know takes any first sequence).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterProducer {
    pub producer_id: i64,
    pub next_sequence: i32,
    pub topic: String,
    pub partition: i32,
}

/// A record archived without being accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Archived {
    pub offset: i64,
    pub delivery_count: i16,
    pub reason: ArchiveReason,
}

/// One acknowledgement batch: `types` has one type for the whole range or one per offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckBatch {
    pub first_offset: i64,
    pub last_offset: i64,
    pub types: Vec<i8>,
}

/// The limits of an acquisition.
#[derive(Debug, Clone, Copy)]
pub struct AcquireLimits {
    /// Records to hand out at most.
    pub max_records: usize,
    pub lock_ms: i64,
    /// In-flight records at most (`end - start`).
    pub max_locks: i64,
    /// A record delivered this often is archived instead of handed out again (one restored
    /// after a restart at its limit).
    pub delivery_limit: i16,
}

/// What an acquisition gave a member, and what it archived on the way.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Acquisition {
    pub acquired: Vec<Acquired>,
    pub archived: Vec<Archived>,
}

/// The stored form: start, end and the in-flight records as runs of offsets with one
/// delivery count (first, last, count).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Stored {
    pub start_offset: i64,
    pub end_offset: i64,
    pub runs: Vec<(i64, i64, i16)>,
    /// The records waiting for their dead letters.
    pub letters: Vec<Letter>,
    /// The sequence number the next letter gets.
    pub next_letter: i32,
    pub producer: Option<DeadLetterProducer>,
    /// The redelivery back-offs of Available records: runs of offsets (first, last) waiting
    /// until one wall-clock time (ms since the Unix epoch), so that a restart keeps them.
    pub backoffs: Vec<(i64, i64, i64)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharePartition {
    start: i64,
    end: i64,
    records: BTreeMap<i64, InFlight>,
    /// Whether a record archived without being accepted waits for its dead letter (the
    /// group's policy now, set before each change; not stored).
    dead_letters: bool,
    next_letter: i32,
    producer: Option<DeadLetterProducer>,
}

impl SharePartition {
    /// A share partition whose first record to hand out is `start` (the reset policy's
    /// choice: the log start or the high watermark).
    pub fn new(start: i64) -> SharePartition {
        SharePartition {
            start,
            end: start,
            records: BTreeMap::new(),
            dead_letters: false,
            next_letter: 0,
            producer: None,
        }
    }

    pub fn from_stored(stored: &Stored) -> SharePartition {
        let mut records = BTreeMap::new();
        for &(first, last, delivery_count) in &stored.runs {
            for offset in first.max(stored.start_offset)..=last.min(stored.end_offset - 1) {
                let record = InFlight {
                    state: RecordState::Available,
                    delivery_count,
                    owner: None,
                    lock_deadline_ms: 0,
                    reason: ArchiveReason::Rejected,
                    letter: 0,
                };
                records.insert(offset, record);
            }
        }
        for &(first, last, until_ms) in &stored.backoffs {
            for (_, record) in records.range_mut(first..=last) {
                record.lock_deadline_ms = until_ms.max(0);
            }
        }
        for letter in stored.letters.iter().filter(|l| l.offset >= stored.start_offset) {
            let record = InFlight {
                state: RecordState::Archiving,
                delivery_count: letter.delivery_count,
                owner: None,
                lock_deadline_ms: 0,
                reason: letter.reason,
                letter: letter.sequence,
            };
            records.insert(letter.offset, record);
        }
        let mut partition = SharePartition {
            start: stored.start_offset,
            end: stored.end_offset.max(records.keys().last().map_or(0, |o| o + 1)),
            records,
            dead_letters: false,
            next_letter: stored.next_letter,
            producer: stored.producer.clone(),
        };
        partition.end = partition.end.max(partition.start);
        partition.advance_start();
        partition
    }

    pub fn stored(&self) -> Stored {
        let mut runs: Vec<(i64, i64, i16)> = Vec::new();
        let mut letters = Vec::new();
        let mut backoffs: Vec<(i64, i64, i64)> = Vec::new();
        for (&offset, record) in &self.records {
            if record.state == RecordState::Available && record.lock_deadline_ms > 0 {
                let until = record.lock_deadline_ms;
                match backoffs.last_mut() {
                    Some(run) if run.1 + 1 == offset && run.2 == until => run.1 = offset,
                    _ => backoffs.push((offset, offset, until)),
                }
            }
            if record.state == RecordState::Archiving {
                letters.push(Letter {
                    offset,
                    delivery_count: record.delivery_count,
                    reason: record.reason,
                    sequence: record.letter,
                });
                continue;
            }
            match runs.last_mut() {
                Some(run) if run.1 + 1 == offset && run.2 == record.delivery_count => {
                    run.1 = offset
                }
                _ => runs.push((offset, offset, record.delivery_count)),
            }
        }
        Stored {
            start_offset: self.start,
            end_offset: self.end,
            runs,
            letters,
            next_letter: self.next_letter,
            producer: self.producer.clone(),
            backoffs,
        }
    }

    pub fn start_offset(&self) -> i64 {
        self.start
    }

    pub fn end_offset(&self) -> i64 {
        self.end
    }

    /// Records in flight (Available or Acquired).
    pub fn in_flight(&self) -> usize {
        self.records.len()
    }

    /// Records in flight whose delivery is not complete (Available or Acquired: not those
    /// waiting for their dead letters).
    pub fn incomplete(&self) -> usize {
        self.records.values().filter(|r| r.state != RecordState::Archiving).count()
    }

    /// Where a fetch at `now_ms` should read from: the first record waiting to be
    /// redelivered whose back-off has passed, else the first never handed out.
    pub fn fetch_offset(&self, now_ms: i64) -> i64 {
        let available = self.records.iter().find(|(_, r)| r.acquirable(now_ms));
        available.map_or(self.end, |(offset, _)| *offset)
    }

    /// Whether a fetch could get anything below `high_watermark` at `now_ms`.
    pub fn has_acquirable(&self, high_watermark: i64, max_locks: i64, now_ms: i64) -> bool {
        self.records.values().any(|r| r.acquirable(now_ms))
            || (self.end < high_watermark && self.end - self.start < max_locks)
    }

    /// The log start moved past `log_start` (retention, DeleteRecords): records below it are
    /// gone and count as done.
    pub fn move_start(&mut self, log_start: i64) {
        if log_start <= self.start {
            return;
        }
        self.records = self.records.split_off(&log_start);
        self.start = log_start;
        self.end = self.end.max(log_start);
        self.advance_start();
    }

    /// Hands `member` the records of `batches` (the offset ranges a read returned, in order)
    /// that are Available, then new ones from `end` on, within `limits`. Returns the runs
    /// acquired, each with its delivery count.
    pub fn acquire(
        &mut self,
        now_ms: i64,
        member: &str,
        batches: &[(i64, i64)],
        limits: AcquireLimits,
    ) -> Acquisition {
        let deadline = now_ms.saturating_add(limits.lock_ms);
        let mut got: Vec<(i64, i16)> = Vec::new();
        let mut archived = Vec::new();
        'batches: for &(first, last) in batches {
            if last < first {
                continue;
            }
            let low = first.max(self.start);
            let high = last.min(self.end - 1);
            // Records in flight: only the Available ones (a batch wholly below the start
            // has none; `range_mut` must not be given an empty range backwards).
            if low <= high {
                for (&offset, record) in self.records.range_mut(low..=high) {
                    if got.len() >= limits.max_records {
                        break 'batches;
                    }
                    if !record.acquirable(now_ms) {
                        continue;
                    }
                    if record.delivery_count >= limits.delivery_limit {
                        archived.push(Archived {
                            offset,
                            delivery_count: record.delivery_count,
                            reason: ArchiveReason::DeliveryCountExceeded,
                        });
                        continue;
                    }
                    record.state = RecordState::Acquired;
                    record.delivery_count = record.delivery_count.saturating_add(1);
                    record.owner = Some(member.to_string());
                    record.lock_deadline_ms = deadline;
                    got.push((offset, record.delivery_count));
                }
            }
            // Records never handed out. Offsets between `end` and the batch's first are not
            // in the log (compacted away): they are done. The limits are Kafka's soft ones
            // (`SharePartition.acquireNewBatchRecords`, the batch-optimized acquire mode):
            // they decide whether a batch is begun, and one begun is taken to its end, so
            // that a batch goes to one member rather than to several that would each
            // receive (and decompress) all of it to keep only their part.
            let mut offset = first.max(self.end);
            if offset <= last
                && (got.len() >= limits.max_records || offset - self.start >= limits.max_locks)
            {
                break 'batches;
            }
            while offset <= last {
                if self.records.is_empty() && offset > self.end {
                    // Nothing in flight and a gap: start moves with end.
                    self.start = offset;
                }
                self.end = offset + 1;
                let record = InFlight {
                    state: RecordState::Acquired,
                    delivery_count: 1,
                    owner: Some(member.to_string()),
                    lock_deadline_ms: deadline,
                    reason: ArchiveReason::Rejected,
                    letter: 0,
                };
                self.records.insert(offset, record);
                got.push((offset, 1));
                offset += 1;
            }
        }
        for gone in &archived {
            self.archive(gone.offset, gone.reason);
        }
        self.advance_start();
        let mut runs: Vec<Acquired> = Vec::new();
        for (offset, count) in got {
            match runs.last_mut() {
                Some(run) if run.last_offset + 1 == offset && run.delivery_count == count => {
                    run.last_offset = offset
                }
                _ => runs.push(Acquired {
                    first_offset: offset,
                    last_offset: offset,
                    delivery_count: count,
                }),
            }
        }
        Acquisition { acquired: runs, archived }
    }

    /// A control batch read at `end`: its offsets are never handed out, `end` moves past
    /// them (and `start` with it when nothing is in flight). One further on is left for
    /// the read that reaches it.
    pub fn skip_control(&mut self, first: i64, last: i64) {
        if first <= self.end && self.end <= last {
            self.end = last + 1;
            self.advance_start();
        }
    }

    /// Applies a member's acknowledgements, all or nothing: INVALID_REQUEST for a malformed
    /// batch, INVALID_RECORD_STATE when a record is not held by `member`. Returns the
    /// records archived without being accepted.
    pub fn acknowledge(
        &mut self,
        member: &str,
        batches: &[AckBatch],
        release: Release,
    ) -> Result<Vec<Archived>, ErrorCode> {
        for batch in batches {
            let span = batch.last_offset.checked_sub(batch.first_offset);
            let Some(span) = span.filter(|span| *span >= 0) else {
                return Err(ErrorCode::InvalidRequest);
            };
            let count = span.saturating_add(1);
            if batch.types.len() != 1 && batch.types.len() as i64 != count {
                return Err(ErrorCode::InvalidRequest);
            }
            if batch.types.iter().any(|t| !(ACK_GAP..=ACK_REJECT).contains(t)) {
                return Err(ErrorCode::InvalidRequest);
            }
            if count > self.records.len() as i64 {
                return Err(ErrorCode::InvalidRecordState);
            }
            for offset in batch.first_offset..=batch.last_offset {
                let held = self.records.get(&offset).is_some_and(|r| {
                    r.state == RecordState::Acquired && r.owner.as_deref() == Some(member)
                });
                if !held {
                    return Err(ErrorCode::InvalidRecordState);
                }
            }
        }
        let mut archived = Vec::new();
        for batch in batches {
            for (index, offset) in (batch.first_offset..=batch.last_offset).enumerate() {
                let kind = if batch.types.len() == 1 { batch.types[0] } else { batch.types[index] };
                match kind {
                    ACK_ACCEPT | ACK_GAP => {
                        self.records.remove(&offset);
                    }
                    ACK_REJECT => {
                        if let Some(gone) = self.archive(offset, ArchiveReason::Rejected) {
                            archived.push(gone);
                        }
                    }
                    _ => {
                        if let Some(gone) = self.make_available(offset, release) {
                            archived.push(gone);
                        }
                    }
                }
            }
        }
        self.advance_start();
        Ok(archived)
    }

    /// Releases every record `member` holds (it left, was fenced, or closed its share
    /// session). Returns the records archived for their delivery count.
    pub fn release_member(&mut self, member: &str, release: Release) -> Vec<Archived> {
        let held: Vec<i64> = self
            .records
            .iter()
            .filter(|(_, r)| r.state == RecordState::Acquired && r.owner.as_deref() == Some(member))
            .map(|(offset, _)| *offset)
            .collect();
        let archived = held.into_iter().filter_map(|o| self.make_available(o, release));
        let archived = archived.collect();
        self.advance_start();
        archived
    }

    /// Releases every record whose acquisition lock ended by `release.now_ms`, and ends the
    /// redelivery back-offs that passed. Returns the records archived for their delivery
    /// count, and whether anything changed.
    pub fn expire_locks(&mut self, release: Release) -> (Vec<Archived>, bool) {
        let now_ms = release.now_ms;
        let mut backed_off = false;
        for record in self.records.values_mut() {
            let waited = record.state == RecordState::Available && record.lock_deadline_ms > 0;
            if waited && record.lock_deadline_ms <= now_ms {
                record.lock_deadline_ms = 0;
                backed_off = true;
            }
        }
        let expired: Vec<i64> = self
            .records
            .iter()
            .filter(|(_, r)| r.state == RecordState::Acquired && r.lock_deadline_ms <= now_ms)
            .map(|(offset, _)| *offset)
            .collect();
        let changed = !expired.is_empty() || backed_off;
        let archived = expired.into_iter().filter_map(|o| self.make_available(o, release));
        let archived = archived.collect();
        self.advance_start();
        (archived, changed)
    }

    /// The earliest acquisition lock deadline or redelivery back-off end, if any.
    pub fn next_lock_deadline(&self) -> Option<i64> {
        let timed = self.records.values().filter(|r| {
            r.state == RecordState::Acquired
                || (r.state == RecordState::Available && r.lock_deadline_ms > 0)
        });
        timed.map(|r| r.lock_deadline_ms).min()
    }

    /// Acquired records by member, for tests and metrics.
    pub fn acquired_by(&self, member: &str) -> usize {
        let held = self.records.values().filter(|r| r.owner.as_deref() == Some(member));
        held.filter(|r| r.state == RecordState::Acquired).count()
    }

    /// An Acquired record back to Available (after its redelivery back-off), or archived
    /// (returned) when its delivery count reached the limit.
    fn make_available(&mut self, offset: i64, release: Release) -> Option<Archived> {
        let record = self.records.get_mut(&offset)?;
        if record.delivery_count >= release.delivery_limit {
            return self.archive(offset, ArchiveReason::DeliveryCountExceeded);
        }
        let wait = release.backoff.wait_ms(record.delivery_count);
        record.state = RecordState::Available;
        record.owner = None;
        record.lock_deadline_ms = if wait > 0 { release.now_ms.saturating_add(wait) } else { 0 };
        None
    }

    /// Archives a record not accepted: done, or Archiving until its dead letter is written
    /// when dead letters are on. Returns it as archived.
    fn archive(&mut self, offset: i64, reason: ArchiveReason) -> Option<Archived> {
        let dead_letters = self.dead_letters;
        let sequence = self.next_letter;
        let record = self.records.get_mut(&offset)?;
        let gone = Archived { offset, delivery_count: record.delivery_count, reason };
        if dead_letters {
            record.state = RecordState::Archiving;
            record.owner = None;
            record.lock_deadline_ms = 0;
            record.reason = reason;
            record.letter = sequence;
            self.next_letter = sequence.checked_add(1).unwrap_or(0);
        } else {
            self.records.remove(&offset);
        }
        Some(gone)
    }

    /// Whether records archived from now on wait for their dead letters (the group's
    /// dead-letter topic is set).
    pub fn set_dead_letters(&mut self, on: bool) {
        self.dead_letters = on;
    }

    /// The record waiting longest for its dead letter (the lowest sequence: letters are
    /// written one at a time in the order they were archived).
    pub fn next_dead_letter(&self) -> Option<Letter> {
        let waiting = self.records.iter().filter(|(_, r)| r.state == RecordState::Archiving);
        let first = waiting.min_by_key(|(_, r)| r.letter);
        first.map(|(offset, r)| Letter {
            offset: *offset,
            delivery_count: r.delivery_count,
            reason: r.reason,
            sequence: r.letter,
        })
    }

    /// The record at `offset` had its dead letter written (`written`: the producer expects
    /// the sequence after the letter's next) or given up (the topic cannot take it): it is
    /// done. False when it was not waiting.
    pub fn dead_lettered(&mut self, offset: i64, written: bool) -> bool {
        let Some(record) = self.records.get(&offset) else { return false };
        if record.state != RecordState::Archiving {
            return false;
        }
        let sequence = record.letter;
        self.records.remove(&offset);
        if let Some(producer) = self.producer.as_mut().filter(|_| written) {
            producer.next_sequence = sequence.checked_add(1).unwrap_or(0);
        }
        self.advance_start();
        true
    }

    pub fn dead_letter_producer(&self) -> Option<&DeadLetterProducer> {
        self.producer.as_ref()
    }

    pub fn set_dead_letter_producer(&mut self, producer: DeadLetterProducer) {
        self.producer = Some(producer);
    }

    /// `start` up to the first record still in flight (or `end`).
    fn advance_start(&mut self) {
        self.start = self.records.keys().next().copied().unwrap_or(self.end).max(self.start);
        assert!(self.start <= self.end);
        debug_assert!(self.records.keys().all(|o| (self.start..self.end).contains(o)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{test_seed, CaseSeed, TestRng};
    use std::collections::BTreeSet;

    const LIMITS: AcquireLimits =
        AcquireLimits { max_records: 500, lock_ms: 1000, max_locks: 200, delivery_limit: 5 };

    fn ack(first: i64, last: i64, kind: i8) -> AckBatch {
        AckBatch { first_offset: first, last_offset: last, types: vec![kind] }
    }

    fn runs(got: &Acquisition) -> Vec<(i64, i64, i16)> {
        got.acquired.iter().map(|a| (a.first_offset, a.last_offset, a.delivery_count)).collect()
    }

    #[test]
    fn a_released_record_waits_for_its_redelivery_backoff() {
        let backoff = RedeliveryBackoff::parse("1000,4000").expect("valid");
        let release = |now_ms| Release { delivery_limit: 5, backoff, now_ms };
        let mut p = SharePartition::new(0);
        assert_eq!(runs(&p.acquire(0, "a", &[(0, 1)], LIMITS)), vec![(0, 1, 1)]);
        // Offset 0 released at 100 after its first delivery: held until 1100.
        p.acknowledge("a", &[ack(0, 0, ACK_RELEASE)], release(100)).expect("ack");
        assert_eq!(p.next_lock_deadline(), Some(1000), "offset 1's lock comes first");
        assert_eq!(p.fetch_offset(1099), 2);
        assert!(!p.has_acquirable(2, 200, 1099));
        assert_eq!(runs(&p.acquire(1099, "b", &[(0, 1)], LIMITS)), vec![]);
        // Offset 1's lock ends at 1000: released after its first delivery too, until 2000.
        let (archived, changed) = p.expire_locks(release(1000));
        assert!(archived.is_empty() && changed);
        assert_eq!(p.next_lock_deadline(), Some(1100));
        // A restart keeps both back-offs (stored with their wall-clock ends).
        let restored = SharePartition::from_stored(&p.stored());
        assert_eq!(restored.stored().backoffs, vec![(0, 0, 1100), (1, 1, 2000)]);
        assert_eq!((restored.fetch_offset(1099), restored.next_lock_deadline()), (2, Some(1100)));
        assert_eq!(restored.fetch_offset(1100), 0);
        let (_, changed) = p.expire_locks(release(1100));
        assert!(changed, "a back-off that ends is a change (waiting fetches are woken)");
        assert_eq!((p.fetch_offset(1100), p.next_lock_deadline()), (0, Some(2000)));
        assert_eq!(runs(&p.acquire(1100, "b", &[(0, 1)], LIMITS)), vec![(0, 0, 2)]);
        // The second redelivery waits the second value, and so would every later one.
        p.acknowledge("b", &[ack(0, 0, ACK_RELEASE)], release(1200)).expect("ack");
        assert_eq!(runs(&p.acquire(5199, "b", &[(0, 0)], LIMITS)), vec![]);
        assert_eq!(runs(&p.acquire(5200, "b", &[(0, 1)], LIMITS)), vec![(0, 0, 3), (1, 1, 2)]);
        // Without a back-off a release is available at once (Kafka's behaviour).
        p.acknowledge("b", &[ack(0, 1, ACK_RELEASE)], Release::at_once(5)).expect("ack");
        assert_eq!((p.fetch_offset(0), p.next_lock_deadline()), (0, None));
    }

    #[test]
    fn with_dead_letters_an_archived_record_holds_the_start_until_its_letter_is_written() {
        let mut p = SharePartition::new(0);
        p.set_dead_letters(true);
        let limits = AcquireLimits { delivery_limit: 2, ..LIMITS };
        p.acquire(0, "a", &[(0, 2)], limits);
        let rejected = p.acknowledge(
            "a",
            &[ack(0, 0, ACK_REJECT), ack(2, 2, ACK_ACCEPT)],
            Release::at_once(2),
        );
        let gone = Archived { offset: 0, delivery_count: 1, reason: ArchiveReason::Rejected };
        assert_eq!(rejected, Ok(vec![gone]));
        let letter =
            Letter { offset: 0, delivery_count: 1, reason: ArchiveReason::Rejected, sequence: 0 };
        assert_eq!(p.acknowledge("a", &[ack(1, 1, ACK_RELEASE)], Release::at_once(2)), Ok(vec![]));
        // Offset 1 comes back once more, then its limit archives it too.
        assert_eq!(runs(&p.acquire(0, "a", &[(0, 2)], limits)), vec![(1, 1, 2)]);
        p.expire_locks(Release { now_ms: LIMITS.lock_ms, ..Release::at_once(2) });
        assert_eq!((p.start_offset(), p.fetch_offset(0)), (0, 3));
        assert_eq!(p.next_dead_letter(), Some(letter));
        // Stored and restored (a restart): the letters wait, with their producer.
        let producer = DeadLetterProducer {
            producer_id: 7,
            next_sequence: 0,
            topic: "dlq.t".into(),
            partition: 0,
        };
        p.set_dead_letter_producer(producer.clone());
        let mut back = SharePartition::from_stored(&p.stored());
        assert_eq!(back.stored(), p.stored());
        assert!(!back.dead_lettered(2, true), "offset 2 was accepted, not archived");
        assert!(back.dead_lettered(0, true));
        assert_eq!(back.start_offset(), 1);
        assert_eq!(back.dead_letter_producer().map(|p| p.next_sequence), Some(1));
        let second = Letter {
            offset: 1,
            delivery_count: 2,
            reason: ArchiveReason::DeliveryCountExceeded,
            sequence: 1,
        };
        assert_eq!(back.next_dead_letter(), Some(second));
        assert!(back.dead_lettered(1, false), "given up: the producer expects 1 still");
        assert_eq!(back.dead_letter_producer().map(|p| p.next_sequence), Some(1));
        assert_eq!(back.stored().next_letter, 2);
        assert_eq!((back.start_offset(), back.in_flight(), back.next_dead_letter()), (3, 0, None));
    }

    #[test]
    fn two_members_get_disjoint_records_and_accepts_move_the_start() {
        let mut p = SharePartition::new(0);
        let batches = [(0, 2), (3, 4)];
        let a = p.acquire(0, "a", &batches, AcquireLimits { max_records: 3, ..LIMITS });
        assert_eq!(runs(&a), vec![(0, 2, 1)]);
        let b = p.acquire(0, "b", &batches, LIMITS);
        assert_eq!(runs(&b), vec![(3, 4, 1)]);
        let wrong = p.acknowledge("b", &[ack(0, 0, ACK_ACCEPT)], Release::at_once(5));
        assert_eq!(wrong, Err(ErrorCode::InvalidRecordState));
        assert_eq!(p.acknowledge("b", &[ack(3, 4, ACK_ACCEPT)], Release::at_once(5)), Ok(vec![]));
        assert_eq!(p.start_offset(), 0);
        assert_eq!(p.acknowledge("a", &[ack(0, 2, ACK_ACCEPT)], Release::at_once(5)), Ok(vec![]));
        assert_eq!((p.start_offset(), p.end_offset(), p.in_flight()), (5, 5, 0));
    }

    #[test]
    fn release_and_lock_timeout_redeliver_with_a_higher_count_then_archive() {
        let mut p = SharePartition::new(10);
        let limits = AcquireLimits { delivery_limit: 3, ..LIMITS };
        p.acquire(0, "a", &[(10, 11)], limits);
        assert_eq!(
            p.acknowledge("a", &[ack(10, 10, ACK_RELEASE)], Release::at_once(3)),
            Ok(vec![])
        );
        assert_eq!(p.fetch_offset(0), 10);
        let again = p.acquire(5, "b", &[(10, 11)], limits);
        assert_eq!(runs(&again), vec![(10, 10, 2)]);
        assert_eq!(p.next_lock_deadline(), Some(1000));
        let (archived, changed) = p.expire_locks(Release { now_ms: 1000, ..Release::at_once(3) });
        assert!(changed && archived.is_empty());
        assert_eq!((p.acquired_by("a"), p.acquired_by("b")), (0, 1));
        p.expire_locks(Release { now_ms: 2000, ..Release::at_once(3) });
        let third = p.acquire(2000, "c", &[(10, 11)], limits);
        assert_eq!(runs(&third), vec![(10, 10, 3), (11, 11, 2)]);
        let (archived, _) = p.expire_locks(Release { now_ms: 3000, ..Release::at_once(3) });
        let expected = Archived {
            offset: 10,
            delivery_count: 3,
            reason: ArchiveReason::DeliveryCountExceeded,
        };
        assert_eq!(archived, vec![expected]);
        assert_eq!((p.start_offset(), p.fetch_offset(0)), (11, 11));
        let stale = p.acknowledge("c", &[ack(11, 11, ACK_ACCEPT)], Release::at_once(3));
        assert_eq!(stale, Err(ErrorCode::InvalidRecordState));
    }

    #[test]
    fn batches_below_the_start_or_empty_are_skipped() {
        let mut p = SharePartition::new(5);
        assert!(p.acquire(0, "a", &[(0, 4), (3, 2)], LIMITS).acquired.is_empty());
        p.acquire(0, "a", &[(5, 9)], LIMITS);
        p.acknowledge("a", &[ack(5, 7, ACK_ACCEPT)], Release::at_once(5)).expect("ack");
        assert!(p.acquire(0, "b", &[(0, 6)], LIMITS).acquired.is_empty());
        assert!(p.acquire(0, "b", &[(5, 9)], LIMITS).acquired.is_empty());
    }

    /// Batches of ten records from `first` up to `last`.
    fn tens(first: i64, last: i64) -> Vec<(i64, i64)> {
        (first..=last).step_by(10).map(|base| (base, base + 9)).collect()
    }

    #[test]
    fn max_locks_bounds_what_is_in_flight() {
        let mut p = SharePartition::new(0);
        let small = AcquireLimits { max_locks: 100, ..LIMITS };
        let got = p.acquire(0, "a", &tens(0, 999), small);
        assert_eq!(got.acquired[0].last_offset, 99);
        assert!(p.acquire(0, "b", &tens(100, 999), small).acquired.is_empty());
        assert!(!p.has_acquirable(1000, 100, 0));
        p.acknowledge("a", &[ack(0, 9, ACK_ACCEPT)], Release::at_once(5)).expect("ack");
        let more = p.acquire(0, "b", &tens(100, 999), small);
        assert_eq!(runs(&more), vec![(100, 109, 1)]);
    }

    #[test]
    fn a_batch_begun_is_handed_out_whole() {
        // Kafka's batch-optimized acquisition: the limits decide whether a batch is begun;
        // one begun goes to one member whole, beyond MaxRecords and the in-flight window.
        let mut p = SharePartition::new(0);
        let limits = AcquireLimits { max_records: 3, max_locks: 8, ..LIMITS };
        let a = p.acquire(0, "a", &[(0, 4), (5, 9)], limits);
        assert_eq!(runs(&a), vec![(0, 4, 1)], "the first batch whole, the second not begun");
        let b = p.acquire(0, "b", &[(5, 9), (10, 14)], limits);
        assert_eq!(runs(&b), vec![(5, 9, 1)], "begun at 5 of 8 in flight, ends at 10 of 8");
        assert_eq!(p.in_flight(), 10);
        assert!(p.acquire(0, "c", &[(10, 14)], limits).acquired.is_empty());
        // A batch taken up to the middle before (a restart, a smaller limit then) is taken
        // on from the end.
        let mut q = SharePartition::new(0);
        q.acquire(0, "a", &[(0, 0)], limits);
        let rest = q.acquire(0, "b", &[(0, 4)], limits);
        assert_eq!(runs(&rest), vec![(1, 4, 1)]);
    }

    #[test]
    fn stored_state_restores_in_flight_records_as_available_with_their_counts() {
        let mut p = SharePartition::new(0);
        p.acquire(0, "a", &[(0, 9)], LIMITS);
        p.acknowledge("a", &[ack(0, 1, ACK_ACCEPT), ack(5, 5, ACK_ACCEPT)], Release::at_once(5))
            .expect("ack");
        p.acknowledge("a", &[ack(2, 2, ACK_RELEASE)], Release::at_once(5)).expect("ack");
        let stored = p.stored();
        assert_eq!(stored.start_offset, 2);
        assert_eq!(stored.end_offset, 10);
        let mut restored = SharePartition::from_stored(&stored);
        assert_eq!(restored.stored(), stored);
        let got = restored.acquire(0, "b", &[(0, 9)], LIMITS);
        assert_eq!(runs(&got), vec![(2, 4, 2), (6, 9, 2)]);
    }

    #[test]
    fn malformed_acknowledgements_are_refused_whole() {
        let mut p = SharePartition::new(0);
        p.acquire(0, "a", &[(0, 3)], LIMITS);
        let mixed = AckBatch { first_offset: 0, last_offset: 3, types: vec![1, 2] };
        assert_eq!(
            p.acknowledge("a", &[mixed], Release::at_once(5)),
            Err(ErrorCode::InvalidRequest)
        );
        assert_eq!(
            p.acknowledge("a", &[ack(0, 1, 4)], Release::at_once(5)),
            Err(ErrorCode::InvalidRequest)
        );
        assert_eq!(
            p.acknowledge("a", &[ack(3, 1, 1)], Release::at_once(5)),
            Err(ErrorCode::InvalidRequest)
        );
        let partly_bad = [ack(0, 1, ACK_ACCEPT), ack(3, 4, ACK_ACCEPT)];
        assert_eq!(
            p.acknowledge("a", &partly_bad, Release::at_once(5)),
            Err(ErrorCode::InvalidRecordState)
        );
        assert_eq!(p.in_flight(), 4);
        let per_record = AckBatch { first_offset: 0, last_offset: 3, types: vec![1, 3, 0, 2] };
        let archived = p.acknowledge("a", &[per_record], Release::at_once(5)).expect("ack");
        let rejected = Archived { offset: 1, delivery_count: 1, reason: ArchiveReason::Rejected };
        assert_eq!(archived, vec![rejected]);
        assert_eq!((p.start_offset(), p.fetch_offset(0)), (3, 3));
    }

    /// A seeded random walk of acquisitions, acknowledgements, lock timeouts, members
    /// leaving and restarts (stored state restored), checked against what was handed out:
    /// an offset is held by one member at a time; an accepted or archived offset is never
    /// handed out again; each delivery counts one more, never past the limit; every offset
    /// below `end` is finished or still in flight (nothing lost), and `start` never passes
    /// one in flight. Replay with `SPATE_TEST_SEED`; `SPATE_TEST_ROUNDS` cases (200).
    #[test]
    fn random_walk_keeps_the_share_invariants() {
        let seed = test_seed("share partition random walk");
        let rounds: u64 =
            std::env::var("SPATE_TEST_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(200);
        let members = ["a", "b", "c"];
        let limit: i16 = 3;
        for round in 0..rounds {
            let case = seed.wrapping_add(round);
            let _guard = CaseSeed(case);
            let mut rng = TestRng::new(case);
            let mut p = SharePartition::new(0);
            let mut high_watermark = 0i64;
            let mut now = 0i64;
            let mut finished: BTreeSet<i64> = BTreeSet::new();
            let mut deliveries: BTreeMap<i64, i16> = BTreeMap::new();
            for _ in 0..80 {
                now += rng.below(400) as i64;
                let member = members[rng.below(3) as usize];
                let held = |p: &SharePartition| -> BTreeMap<i64, String> {
                    let acquired =
                        p.records.iter().filter(|(_, r)| r.state == RecordState::Acquired);
                    acquired.map(|(o, r)| (*o, r.owner.clone().unwrap_or_default())).collect()
                };
                let before = held(&p);
                match rng.below(7) {
                    0 => high_watermark += rng.below(8) as i64,
                    1 | 2 => {
                        let from = p.fetch_offset(0);
                        let limits = AcquireLimits {
                            max_records: 1 + rng.below(6) as usize,
                            lock_ms: 500,
                            max_locks: 10,
                            delivery_limit: limit,
                        };
                        let got = p.acquire(now, member, &[(from, high_watermark - 1)], limits);
                        for gone in &got.archived {
                            assert!(finished.insert(gone.offset));
                        }
                        for run in &got.acquired {
                            for offset in run.first_offset..=run.last_offset {
                                assert!(offset < high_watermark);
                                assert!(!finished.contains(&offset), "{offset} handed out again");
                                assert!(!before.contains_key(&offset), "{offset} held twice");
                                let count = deliveries.entry(offset).or_insert(0);
                                *count += 1;
                                assert_eq!(*count, run.delivery_count);
                                assert!(*count <= limit);
                            }
                        }
                    }
                    3 | 4 => {
                        let mine: Vec<i64> =
                            before.iter().filter(|(_, m)| *m == member).map(|(o, _)| *o).collect();
                        if mine.is_empty() {
                            let stranger = p.acknowledge(
                                member,
                                &[ack(p.end, p.end, 1)],
                                Release::at_once(limit),
                            );
                            assert_eq!(stranger, Err(ErrorCode::InvalidRecordState));
                            continue;
                        }
                        let offset = mine[rng.below(mine.len() as u64) as usize];
                        let kind = rng.below(4) as i8;
                        let archived = p.acknowledge(
                            member,
                            &[ack(offset, offset, kind)],
                            Release::at_once(limit),
                        );
                        let archived = archived.expect("held records acknowledge");
                        if kind != ACK_RELEASE || !archived.is_empty() {
                            assert!(finished.insert(offset));
                        }
                    }
                    5 => {
                        let (archived, _) =
                            p.expire_locks(Release { now_ms: now, ..Release::at_once(limit) });
                        let left = p.release_member(member, Release::at_once(limit));
                        for gone in archived.iter().chain(&left) {
                            assert_eq!(gone.reason, ArchiveReason::DeliveryCountExceeded);
                            assert!(finished.insert(gone.offset));
                        }
                    }
                    _ => p = SharePartition::from_stored(&p.stored()),
                }
                assert!(p.start_offset() <= p.end_offset());
                assert!(p.end_offset() <= high_watermark.max(0));
                for offset in 0..p.end_offset() {
                    let in_flight = p.records.contains_key(&offset);
                    assert!(in_flight != finished.contains(&offset), "{offset} lost or doubled");
                    if in_flight {
                        assert!(offset >= p.start_offset());
                    }
                }
            }
        }
    }
}
