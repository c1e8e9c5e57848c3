//! Delayed delivery, the pure parts: when a produced batch is due (its records' headers and
//! the topic's `spate.delivery.delay.ms`), and the records of a partition's delay log.
//!
//! Only a topic that opts in (`spate.delivery.delay.ms` set to 0 or more) has its batches
//! read here; every other topic's batches are never opened (the produce path stays
//! passthrough). On such a topic a record is delayed by either header, both decimal ASCII:
//!
//! - `spate-deliver-at`: the epoch milliseconds at which it becomes visible;
//! - `spate-delay-ms`: milliseconds from its arrival at the broker;
//!
//! or, without either header, by the topic's `spate.delivery.delay.ms` when it is above 0.
//! A batch is delivered as a whole, so it takes the latest due time of its records: an
//! immediate record produced in the same batch as a delayed one waits with it. A batch
//! whose due time is not after now is appended at once, as on any topic.
//!
//! The delay log of a partition (`<data dir>/__spate_delay/<topic>-<partition>/`, a log of
//! uncompressed batches of one record each, written with the partition's appender) holds:
//!
//! ```text
//!  key (1 byte)   value (big-endian)
//!  1 Scheduled    8 due_ms, then the produced batch as it arrived (its header, its records)
//!  2 Delivering   4 count, then per entry: 8 entry (the Scheduled record's delay-log
//!                 offset), 4 base sequence it is delivered with
//!  3 Delivered    4 count, then per entry: 8 entry
//!  4 ScheduledTxn 8 due_ms, 8 producer id, then the batch: a transactional batch, due only
//!                 if the producer's transaction commits
//!  5 TxnEnd       8 producer id, 1 outcome (1 commit, 0 abort): ends every ScheduledTxn of
//!                 the producer before it (written before the partition's marker)
//!  6 Cancel       4 count, then per key: 4 length, the key: the records of these keys in
//!                 entries before it are not delivered (`spate-cancel` tombstones)
//! ```

use crate::constants::{DELIVERY_DELAY_MS_MAX, DELIVERY_HEADER_SCAN_DECOMPRESSED_MAX};
use crate::model::batch::{BatchHeader, ATTRIBUTE_TRANSACTIONAL};
use crate::model::record_scan::{self, ScanError};
use crate::model::{ProducerEpoch, ProducerId};

/// The header with a record's due time in epoch milliseconds.
pub const HEADER_DELIVER_AT: &str = "spate-deliver-at";
/// The header with a record's delay in milliseconds from its arrival.
pub const HEADER_DELAY_MS: &str = "spate-delay-ms";
/// The header that makes a tombstone a cancel: the partition's pending delayed records of
/// its key, produced before it, are never delivered (its value is not read).
pub const HEADER_CANCEL: &str = "spate-cancel";

/// The topic config that opts a topic in: -1 (the default) off, 0 headers only, above 0 the
/// delay of records without a header.
pub const DELIVERY_DELAY_CONFIG: &str = "spate.delivery.delay.ms";

/// Why a batch cannot be scheduled; the message names the header (Produce v8+ says it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueError {
    /// The index of the offending record in its batch.
    pub record: i32,
    pub message: String,
}

/// When `batch` (one validated batch) is due on a topic whose `spate.delivery.delay.ms` is
/// `default_delay_ms` (0 or more), arriving at `now_ms`: None when it is due now (no record
/// asks for a later time), else the latest due time of its records.
pub fn batch_due_ms(
    batch: &[u8],
    default_delay_ms: i64,
    now_ms: i64,
) -> Result<Option<i64>, DueError> {
    scan_batch(batch, default_delay_ms, now_ms).map(|scan| scan.due_ms)
}

/// What `scan_batch` found in a batch.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BatchScan {
    /// None: due now; else the latest due time of its records (`batch_due_ms`).
    pub due_ms: Option<i64>,
    /// The keys of its cancels (tombstones with `spate-cancel`), in order.
    pub cancels: Vec<Vec<u8>>,
}

/// `batch_due_ms`, and the keys of the batch's cancels. A record with `spate-cancel` must be
/// a tombstone (null value) with a key, outside a transaction.
pub fn scan_batch(batch: &[u8], default_delay_ms: i64, now_ms: i64) -> Result<BatchScan, DueError> {
    assert!(default_delay_ms >= 0);
    let unreadable = |e: ScanError| DueError {
        record: 0,
        message: format!("the records cannot be read for their delivery headers: {e}"),
    };
    let header = BatchHeader::parse(batch).map_err(|_| unreadable(ScanError::Header))?;
    let section = record_scan::decompress_records(batch, DELIVERY_HEADER_SCAN_DECOMPRESSED_MAX)
        .map_err(unreadable)?;
    let records = record_scan::records(&section, header.records_count()).map_err(unreadable)?;
    let mut due_max: Option<i64> = None;
    let mut cancels = Vec::new();
    for (index, record) in records.iter().enumerate() {
        let index = index as i32;
        let headers = record_scan::record_headers(record.headers)
            .map_err(|e| DueError { record: index, ..unreadable(e) })?;
        // A header replaces the topic's default delay; a record with both headers waits for
        // the later.
        let mut asked_max: Option<i64> = None;
        for (key, value) in headers {
            if key == HEADER_CANCEL.as_bytes() {
                let refuse = |why: &str| DueError {
                    record: index,
                    message: format!("header {HEADER_CANCEL}: {why}"),
                };
                if header.is_transactional() {
                    return Err(refuse("cancels are not taken inside a transaction"));
                }
                if record.value.is_some() {
                    return Err(refuse("a cancel is a tombstone (null value)"));
                }
                let Some(cancelled) = record.key else {
                    return Err(refuse("a cancel needs the key of the records it cancels"));
                };
                cancels.push(cancelled.to_vec());
                continue;
            }
            let name = match key {
                k if k == HEADER_DELIVER_AT.as_bytes() => HEADER_DELIVER_AT,
                k if k == HEADER_DELAY_MS.as_bytes() => HEADER_DELAY_MS,
                _ => continue,
            };
            let asked = header_due_ms(name, value, now_ms)
                .map_err(|message| DueError { record: index, message })?;
            asked_max = Some(asked_max.map_or(asked, |m| m.max(asked)));
        }
        let default = (default_delay_ms > 0).then(|| now_ms.saturating_add(default_delay_ms));
        let due = asked_max.or(default);
        if let Some(due) = due {
            due_max = Some(due_max.map_or(due, |m| m.max(due)));
        }
    }
    Ok(BatchScan { due_ms: due_max.filter(|due| *due > now_ms), cancels })
}

/// The due time a header asks for, or the message that refuses it (naming the header).
pub fn header_due_ms(name: &str, value: Option<&[u8]>, now_ms: i64) -> Result<i64, String> {
    let bad = |why: &str| format!("header {name}: {why}");
    let Some(value) = value else {
        return Err(bad("null value (decimal milliseconds expected)"));
    };
    let text = std::str::from_utf8(value).map_err(|_| bad("not decimal ASCII"))?;
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        if text.starts_with('-') && text.len() > 1 && text[1..].bytes().all(|b| b.is_ascii_digit())
        {
            return Err(bad(&format!("negative value {text}")));
        }
        return Err(bad(&format!("{text:?} is not a decimal number of milliseconds")));
    }
    let number: i64 = text.parse().map_err(|_| bad(&format!("{text} is too large")))?;
    let due = match name {
        HEADER_DELIVER_AT => number,
        _ => {
            if number > DELIVERY_DELAY_MS_MAX {
                return Err(bad(&format!(
                    "delay {number} ms is beyond the maximum {DELIVERY_DELAY_MS_MAX} ms"
                )));
            }
            now_ms.saturating_add(number)
        }
    };
    if due > now_ms.saturating_add(DELIVERY_DELAY_MS_MAX) {
        return Err(bad(&format!(
            "due time {due} is more than {DELIVERY_DELAY_MS_MAX} ms after now ({now_ms})"
        )));
    }
    Ok(due)
}

/// Makes a produced batch one of the broker's delivery producer: not transactional (its
/// transaction committed, or it had none), this producer id, epoch and base sequence; the
/// CRC recomputed (all are covered by it).
pub fn restamp(batch: &mut [u8], producer_id: ProducerId, epoch: ProducerEpoch, sequence: i32) {
    assert!(batch.len() >= crate::constants::BATCH_HEADER_BYTES);
    let attributes = i16::from_be_bytes([batch[21], batch[22]]) & !ATTRIBUTE_TRANSACTIONAL;
    batch[21..23].copy_from_slice(&attributes.to_be_bytes());
    crate::model::batch::set_producer(batch, producer_id, epoch, sequence);
}

/// One record of a partition's delay log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DelayRecord {
    /// A produced batch, due at `due_ms`; its delay-log offset names it from then on.
    Scheduled { due_ms: i64, batch: Vec<u8> },
    /// These entries are being appended to the partition with these base sequences (of the
    /// broker's delivery producer id): a restart delivers them again with the same ones, and
    /// the partition's idempotence check drops what was already written.
    Delivering(Vec<(i64, i32)>),
    /// These entries are in the partition.
    Delivered(Vec<i64>),
    /// A batch of a transaction, due at `due_ms` if it commits.
    ScheduledTxn { due_ms: i64, producer_id: i64, batch: Vec<u8> },
    /// The producer's transaction in this partition ended: its `ScheduledTxn` entries before
    /// this record are scheduled (commit) or dropped (abort).
    TxnEnd { producer_id: i64, commit: bool },
    /// Cancels (`spate-cancel`): the records with these keys in entries before this record
    /// are not delivered.
    Cancel(Vec<Vec<u8>>),
}

const KEY_SCHEDULED: u8 = 1;
const KEY_DELIVERING: u8 = 2;
const KEY_DELIVERED: u8 = 3;
const KEY_SCHEDULED_TXN: u8 = 4;
const KEY_TXN_END: u8 = 5;
const KEY_CANCEL: u8 = 6;

impl DelayRecord {
    /// The record's key and value.
    pub fn encode(&self) -> (Vec<u8>, Vec<u8>) {
        match self {
            DelayRecord::Scheduled { due_ms, batch } => {
                let mut value = Vec::with_capacity(8 + batch.len());
                value.extend_from_slice(&due_ms.to_be_bytes());
                value.extend_from_slice(batch);
                (vec![KEY_SCHEDULED], value)
            }
            DelayRecord::Delivering(entries) => {
                let mut value = Vec::with_capacity(4 + 12 * entries.len());
                value.extend_from_slice(&(entries.len() as u32).to_be_bytes());
                for (entry, sequence) in entries {
                    value.extend_from_slice(&entry.to_be_bytes());
                    value.extend_from_slice(&sequence.to_be_bytes());
                }
                (vec![KEY_DELIVERING], value)
            }
            DelayRecord::Delivered(entries) => {
                let mut value = Vec::with_capacity(4 + 8 * entries.len());
                value.extend_from_slice(&(entries.len() as u32).to_be_bytes());
                for entry in entries {
                    value.extend_from_slice(&entry.to_be_bytes());
                }
                (vec![KEY_DELIVERED], value)
            }
            DelayRecord::ScheduledTxn { due_ms, producer_id, batch } => {
                let mut value = Vec::with_capacity(16 + batch.len());
                value.extend_from_slice(&due_ms.to_be_bytes());
                value.extend_from_slice(&producer_id.to_be_bytes());
                value.extend_from_slice(batch);
                (vec![KEY_SCHEDULED_TXN], value)
            }
            DelayRecord::TxnEnd { producer_id, commit } => {
                let mut value = producer_id.to_be_bytes().to_vec();
                value.push(u8::from(*commit));
                (vec![KEY_TXN_END], value)
            }
            DelayRecord::Cancel(keys) => {
                let mut value = (keys.len() as u32).to_be_bytes().to_vec();
                for key in keys {
                    value.extend_from_slice(&(key.len() as u32).to_be_bytes());
                    value.extend_from_slice(key);
                }
                (vec![KEY_CANCEL], value)
            }
        }
    }

    /// The record of a key and value read back (None: not one of these).
    pub fn decode(key: &[u8], value: Option<&[u8]>) -> Option<DelayRecord> {
        let value = value?;
        let i64_at = |at: usize| -> Option<i64> {
            Some(i64::from_be_bytes(value.get(at..at + 8)?.try_into().ok()?))
        };
        let count = || -> Option<usize> {
            Some(u32::from_be_bytes(value.get(0..4)?.try_into().ok()?) as usize)
        };
        match key {
            [KEY_SCHEDULED] => {
                let due_ms = i64_at(0)?;
                let batch = value[8..].to_vec();
                BatchHeader::parse(&batch).ok()?;
                Some(DelayRecord::Scheduled { due_ms, batch })
            }
            [KEY_DELIVERING] => {
                let n = count()?;
                if value.len() != 4 + 12 * n {
                    return None;
                }
                let entries = (0..n)
                    .map(|i| {
                        let at = 4 + 12 * i;
                        let sequence = i32::from_be_bytes(value[at + 8..at + 12].try_into().ok()?);
                        Some((i64_at(at)?, sequence))
                    })
                    .collect::<Option<Vec<_>>>()?;
                Some(DelayRecord::Delivering(entries))
            }
            [KEY_DELIVERED] => {
                let n = count()?;
                if value.len() != 4 + 8 * n {
                    return None;
                }
                let entries = (0..n).map(|i| i64_at(4 + 8 * i)).collect::<Option<Vec<_>>>()?;
                Some(DelayRecord::Delivered(entries))
            }
            [KEY_SCHEDULED_TXN] => {
                let (due_ms, producer_id) = (i64_at(0)?, i64_at(8)?);
                let batch = value[16..].to_vec();
                BatchHeader::parse(&batch).ok()?;
                Some(DelayRecord::ScheduledTxn { due_ms, producer_id, batch })
            }
            [KEY_CANCEL] => {
                let n = count()?;
                let mut keys = Vec::with_capacity(n.min(value.len() / 4));
                let mut at = 4;
                for _ in 0..n {
                    let size = u32::from_be_bytes(value.get(at..at + 4)?.try_into().ok()?);
                    let key = value.get(at + 4..at + 4 + size as usize)?;
                    keys.push(key.to_vec());
                    at += 4 + size as usize;
                }
                (at == value.len()).then_some(DelayRecord::Cancel(keys))
            }
            [KEY_TXN_END] => match value.get(8..) {
                Some([outcome @ (0 | 1)]) => {
                    Some(DelayRecord::TxnEnd { producer_id: i64_at(0)?, commit: *outcome == 1 })
                }
                _ => None,
            },
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::records::{build_batch, RecordIn};

    const NOW: i64 = 1_700_000_000_000;

    /// A record as a client sends it, with these headers (Kafka's record format, built by
    /// hand: the internal encoder writes no headers). The encoder starts a new batch
    /// wherever offset - sequence changes, so the sequences of a non-idempotent batch (base
    /// sequence -1) go up with the offsets: one batch, as a client builds it.
    fn client_record(
        offset: i64,
        key: Option<&str>,
        value: Option<&str>,
        headers: &[(&str, Option<&str>)],
    ) -> kafka_protocol::records::Record {
        kafka_protocol::records::Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: kafka_protocol::records::TimestampType::Creation,
            offset,
            sequence: offset as i32 - 1,
            timestamp: NOW,
            key: key.map(|k| bytes::Bytes::from(k.to_string())),
            value: value.map(|v| bytes::Bytes::from(v.to_string())),
            headers: headers
                .iter()
                .map(|(k, v)| {
                    (
                        kafka_protocol::protocol::StrBytes::from_string(k.to_string()),
                        v.map(|v| bytes::Bytes::from(v.to_string())),
                    )
                })
                .collect(),
        }
    }

    /// `records` encoded as one batch.
    fn encoded(
        records: &[kafka_protocol::records::Record],
        compression: kafka_protocol::records::Compression,
    ) -> Vec<u8> {
        use kafka_protocol::records::{RecordBatchEncoder, RecordEncodeOptions};
        let mut out = bytes::BytesMut::new();
        let options = RecordEncodeOptions { version: 2, compression };
        RecordBatchEncoder::encode(&mut out, records, &options).expect("encodes");
        let header = BatchHeader::parse(&out).expect("a batch");
        assert_eq!(header.size_bytes(), out.len(), "one batch");
        assert_eq!(header.records_count(), records.len() as i32);
        out.to_vec()
    }

    /// A batch of records with these headers each, lz4-compressed.
    fn batch_with_headers(records: &[Vec<(&str, Option<&str>)>]) -> Vec<u8> {
        let records: Vec<_> = records
            .iter()
            .enumerate()
            .map(|(i, headers)| client_record(i as i64, None, Some("v"), headers))
            .collect();
        let batch = encoded(&records, kafka_protocol::records::Compression::Lz4);
        assert_eq!(BatchHeader::parse(&batch).expect("a batch").base_sequence(), -1);
        batch
    }

    #[test]
    fn records_without_headers_are_due_now_unless_the_topic_delays_them() {
        let batch = build_batch(NOW, &[RecordIn { key: None, value: Some(b"x") }]);
        assert_eq!(batch_due_ms(&batch, 0, NOW), Ok(None));
        assert_eq!(batch_due_ms(&batch, 5_000, NOW), Ok(Some(NOW + 5_000)));
    }

    #[test]
    fn a_batch_takes_the_latest_due_time_of_its_records_even_compressed() {
        let at = (NOW + 9_000).to_string();
        let batch = batch_with_headers(&[
            vec![(HEADER_DELAY_MS, Some("3000"))],
            vec![],
            vec![("other", None), (HEADER_DELIVER_AT, Some(&at))],
        ]);
        assert_eq!(batch_due_ms(&batch, 0, NOW), Ok(Some(NOW + 9_000)));
        // A header replaces the topic's default, which still delays the record without one.
        assert_eq!(batch_due_ms(&batch, 60_000, NOW), Ok(Some(NOW + 60_000)));
        let past = batch_with_headers(&[vec![(HEADER_DELIVER_AT, Some("1000"))]]);
        assert_eq!(batch_due_ms(&past, 0, NOW), Ok(None));
        let shorter = batch_with_headers(&[vec![(HEADER_DELAY_MS, Some("10"))]]);
        assert_eq!(batch_due_ms(&shorter, 60_000, NOW), Ok(Some(NOW + 10)));
    }

    #[test]
    fn bad_header_values_are_refused_naming_the_header_and_the_record() {
        for (name, value, why) in [
            (HEADER_DELAY_MS, Some("abc"), "is not a decimal number"),
            (HEADER_DELAY_MS, Some("-5"), "negative value -5"),
            (HEADER_DELAY_MS, Some(""), "is not a decimal number"),
            (HEADER_DELAY_MS, None, "null value"),
            (HEADER_DELAY_MS, Some("99999999999999999999"), "too large"),
            (HEADER_DELAY_MS, Some("40000000000"), "beyond the maximum"),
            (HEADER_DELIVER_AT, Some("9999999999999"), "more than"),
            (HEADER_DELIVER_AT, Some("1.5"), "is not a decimal number"),
        ] {
            let batch = batch_with_headers(&[vec![], vec![(name, value)]]);
            let error = batch_due_ms(&batch, 0, NOW).unwrap_err();
            assert_eq!(error.record, 1);
            assert!(error.message.contains(name), "{}", error.message);
            assert!(error.message.contains(why), "{} / {why}", error.message);
        }
    }

    #[test]
    fn cancels_are_keyed_tombstones() {
        let with = |key: Option<&str>, value: Option<&str>| {
            let record = client_record(0, key, value, &[(HEADER_CANCEL, None)]);
            let batch = encoded(&[record], kafka_protocol::records::Compression::None);
            scan_batch(&batch, 0, NOW)
        };
        let scan = with(Some("order-17"), None).expect("a cancel");
        assert_eq!(scan, BatchScan { due_ms: None, cancels: vec![b"order-17".to_vec()] });
        let error = with(Some("order-17"), Some("x")).unwrap_err();
        assert!(error.message.contains("tombstone"), "{}", error.message);
        let error = with(None, None).unwrap_err();
        assert!(error.message.contains("needs the key"), "{}", error.message);
    }

    #[test]
    fn a_restamped_batch_is_the_delivery_producers_and_valid() {
        use crate::model::batch::validate;
        let ins = [RecordIn { key: Some(b"k"), value: Some(b"x") }];
        let mut batch =
            crate::model::records::build_txn_batch(NOW, ProducerId(7), ProducerEpoch(3), &ins);
        assert!(BatchHeader::parse(&batch).expect("a batch").is_transactional());
        restamp(&mut batch, ProducerId(i64::MAX - 1), ProducerEpoch(0), 42);
        let header = validate(&batch, usize::MAX).expect("the CRC holds");
        assert!(!header.is_transactional());
        assert_eq!(header.producer_id(), ProducerId(i64::MAX - 1));
        assert_eq!((header.producer_epoch(), header.base_sequence()), (ProducerEpoch(0), 42));
    }

    #[test]
    fn delay_log_records_round_trip() {
        let batch = build_batch(NOW, &[RecordIn { key: Some(b"k"), value: Some(b"x") }]);
        for record in [
            DelayRecord::Scheduled { due_ms: NOW + 1, batch: batch.clone() },
            DelayRecord::Delivering(vec![(3, 0), (7, 12)]),
            DelayRecord::Delivered(vec![3, 7]),
            DelayRecord::Delivered(vec![]),
            DelayRecord::ScheduledTxn { due_ms: 5, producer_id: 9, batch: batch.clone() },
            DelayRecord::TxnEnd { producer_id: 9, commit: true },
            DelayRecord::TxnEnd { producer_id: 9, commit: false },
            DelayRecord::Cancel(vec![b"order-17".to_vec(), vec![], b"k".to_vec()]),
            DelayRecord::Cancel(vec![]),
        ] {
            let (key, value) = record.encode();
            assert_eq!(DelayRecord::decode(&key, Some(&value)), Some(record));
        }
        assert_eq!(DelayRecord::decode(&[2], Some(&[0, 0, 0, 1])), None);
        assert_eq!(DelayRecord::decode(&[9], Some(&[])), None);
        assert_eq!(DelayRecord::decode(&[6], Some(&[0, 0, 0, 1, 0, 0, 0, 9, 1])), None);
    }
}
