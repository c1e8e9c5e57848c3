//! Keyed records inside an uncompressed magic v2 batch, for the broker's own internal logs
//! (committed offsets, transactions) and the transaction markers it appends. Client batches
//! never pass through here; the produce and fetch paths stay passthrough.
//!
//! The record format is Kafka's, and so is the codec: kafka-protocol's `RecordBatchEncoder`
//! and `RecordBatchDecoder` write and read the bytes; this module only fixes what Spate puts
//! in the batch header and checks a batch before handing it over.
//!
//! ```text
//!  batch (header: see model::batch):
//!    base_offset 0 (the log assigns it), partition_leader_epoch 0, no codec, CreateTime,
//!    every record at one timestamp, producer id / epoch / base sequence -1 (a marker: the
//!    producer's id and epoch, transactional and control)
//!  record (after the 61-byte header; all varints zigzag):
//!    length            varint  bytes after this field
//!    attributes        int8    unused, 0
//!    timestamp_delta   varint  0
//!    offset_delta      varint  from the batch's base_offset
//!    key_length        varint  -1 for a null key
//!    key               bytes
//!    value_length      varint  -1 for a null value (a tombstone)
//!    value             bytes
//!    headers_count     varint  0 here
//! ```
//!
//! Data directories hold batches written by the hand-written codec this one replaced; the
//! tests keep a few of those as fixtures, read them back and write them again byte for byte.

use bytes::{Bytes, BytesMut};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions,
    TimestampType, NO_PRODUCER_EPOCH, NO_PRODUCER_ID, NO_SEQUENCE,
};

use crate::constants::BATCH_HEADER_BYTES;
use crate::model::batch::{self, BatchError, BatchHeader};
use crate::model::{LeaderEpoch, ProducerEpoch, ProducerId, TxnOutcome};

/// One record to write: key and value, either may be null (a null value is a tombstone).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordIn<'a> {
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
}

const CODEC_MASK: i16 = 0x07;

/// The smallest record: a one-byte length, attributes, and five one-byte varints (timestamp
/// and offset deltas, null key, null value, no headers).
const RECORD_BYTES_MIN: usize = 7;
/// Room for one record beside its key and value, as a capacity hint: varints of the sizes
/// internal records have.
const RECORD_OVERHEAD_BYTES: usize = 16;

/// Builds one uncompressed batch at base offset 0 (the log assigns the real one) holding
/// `records`, all stamped `timestamp`, with no producer id (-1), as Kafka writes its own
/// internal records. The batch, CRC-32C included, passes `batch::validate`.
pub fn build_batch(timestamp: i64, records: &[RecordIn<'_>]) -> Vec<u8> {
    assert!(!records.is_empty());
    let records: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(delta, r)| Record {
            key: r.key.map(Bytes::copy_from_slice),
            value: r.value.map(Bytes::copy_from_slice),
            ..record(delta as i64, timestamp)
        })
        .collect();
    encode(&records)
}

/// Builds one uncompressed batch of `records` in a producer's transaction (transactional
/// attribute, the producer's id and epoch, no sequence), as Kafka's group coordinator writes
/// TxnOffsetCommit's offsets: they count only once the transaction's marker follows.
pub fn build_txn_batch(
    timestamp: i64,
    producer_id: ProducerId,
    producer_epoch: ProducerEpoch,
    records: &[RecordIn<'_>],
) -> Vec<u8> {
    assert!(!records.is_empty());
    assert!(producer_id.is_valid());
    let records: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(delta, r)| Record {
            transactional: true,
            producer_id: producer_id.0,
            producer_epoch: producer_epoch.0,
            key: r.key.map(Bytes::copy_from_slice),
            value: r.value.map(Bytes::copy_from_slice),
            ..record(delta as i64, timestamp)
        })
        .collect();
    encode(&records)
}

/// One dead letter (KIP-1191): a record whose key and value are the source record's (or
/// null), with the context headers, as an idempotent producer's batch of one record with
/// sequence `base_sequence` (a repeated write is then a duplicate the partition drops).
pub fn build_dead_letter_batch(
    timestamp: i64,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    headers: &[(&str, String)],
    producer_id: ProducerId,
    base_sequence: i32,
) -> Vec<u8> {
    assert!(producer_id.is_valid());
    assert!(base_sequence >= 0);
    let headers = headers.iter().map(|(name, value)| {
        (StrBytes::from_string(name.to_string()), Some(Bytes::copy_from_slice(value.as_bytes())))
    });
    encode(&[Record {
        producer_id: producer_id.0,
        producer_epoch: 0,
        sequence: base_sequence,
        key: key.map(Bytes::copy_from_slice),
        value: value.map(Bytes::copy_from_slice),
        headers: headers.collect(),
        ..record(0, timestamp)
    }])
}

/// A transaction marker: the control batch the transaction coordinator asks a partition to
/// append when a transaction ends (Kafka's `EndTransactionMarker`). One record:
///
/// ```text
///   key:   version int16 (0) | type int16 (0 = ABORT, 1 = COMMIT)
///   value: version int16 (0) | coordinator_epoch int32
/// ```
///
/// The batch has the transactional and control attributes, the producer's id and epoch, and
/// base sequence -1 (markers take no sequence).
pub fn build_control_batch(
    timestamp: i64,
    producer_id: ProducerId,
    producer_epoch: ProducerEpoch,
    outcome: TxnOutcome,
    coordinator_epoch: i32,
) -> Vec<u8> {
    let mut key = [0u8; 4];
    key[2..4].copy_from_slice(&outcome.control_type().to_be_bytes());
    let mut value = [0u8; 6];
    value[2..6].copy_from_slice(&coordinator_epoch.to_be_bytes());
    encode(&[Record {
        transactional: true,
        control: true,
        producer_id: producer_id.0,
        producer_epoch: producer_epoch.0,
        key: Some(Bytes::copy_from_slice(&key)),
        value: Some(Bytes::copy_from_slice(&value)),
        ..record(0, timestamp)
    }])
}

/// The outcome a stored control batch marks: a COMMIT or an ABORT marker; None for anything
/// else (a damaged or unknown control record).
pub fn control_outcome(bytes: &[u8]) -> Option<TxnOutcome> {
    let records = parse_batch(bytes).ok()?;
    let key = records.first()?.key.as_ref()?;
    if key.len() < 4 || key[0..2] != [0, 0] {
        return None;
    }
    TxnOutcome::from_control_type(i16::from_be_bytes([key[2], key[3]]))
}

/// Reads every record of one stored batch (which must be exactly one whole batch). Only
/// uncompressed batches are accepted: the broker's internal logs are never compressed.
/// Each record's `offset` is absolute; its key and value share one copy of `bytes`.
pub fn parse_batch(bytes: &[u8]) -> Result<Vec<Record>, BatchError> {
    let header = batch::validate(bytes, usize::MAX)?;
    if header.attributes() & CODEC_MASK != 0 {
        return Err(BatchError::Malformed);
    }
    check_decodable(&header, bytes.len())?;
    // The base offset is outside the CRC, so anything may be there, and kafka-protocol adds
    // offset deltas to it unchecked: it decodes a copy with base offset 0, and the base is
    // added here, saturating. (It adds timestamp deltas unchecked too, but base and deltas
    // are under the CRC, and a release build wraps rather than panics.)
    let mut copy = BytesMut::from(bytes);
    copy[0..8].fill(0);
    let mut copy = copy.freeze();
    let set = RecordBatchDecoder::decode(&mut copy).map_err(|_| BatchError::Malformed)?;
    let mut records = set.records;
    for record in &mut records {
        record.offset = header.base_offset().0.saturating_add(record.offset);
    }
    Ok(records)
}

/// The longest string of Kafka's internal-record formats (an int16 length).
pub const SHORT_STRING_BYTES_MAX: usize = i16::MAX as usize;

/// Appends `text` as an int16-length string, as the coordinators' record formats write them.
/// Longer text is cut to `SHORT_STRING_BYTES_MAX` bytes at a character boundary, so that what
/// is read back is still UTF-8 (APIs refuse ids that long; this guards free text such as a
/// client id).
pub fn put_short_string(out: &mut Vec<u8>, text: &str) {
    let mut end = text.len().min(SHORT_STRING_BYTES_MAX);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    out.extend((end as i16).to_be_bytes());
    out.extend_from_slice(&text.as_bytes()[..end]);
}

/// A record of a batch Spate writes, without key and value: `offset_delta` from base offset
/// 0, no producer. kafka-protocol starts a new batch wherever `offset - sequence` changes
/// and writes the first record's sequence as the batch's base sequence, so the sequence
/// runs along with the offset from -1 (no sequence).
fn record(offset_delta: i64, timestamp: i64) -> Record {
    Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: LeaderEpoch::INITIAL.0,
        producer_id: NO_PRODUCER_ID,
        producer_epoch: NO_PRODUCER_EPOCH,
        timestamp_type: TimestampType::Creation,
        offset: offset_delta,
        sequence: NO_SEQUENCE.wrapping_add(offset_delta as i32),
        timestamp,
        key: None,
        value: None,
        headers: Default::default(),
    }
}

/// Encodes `records` (which share every batch-level field) as exactly one uncompressed
/// batch. kafka-protocol fails only for sizes past `i32::MAX`, which no internal batch
/// reaches: a failure is a bug.
fn encode(records: &[Record]) -> Vec<u8> {
    let options = RecordEncodeOptions { version: 2, compression: Compression::None };
    let payload: usize = records
        .iter()
        .map(|r| {
            let key = r.key.as_ref().map_or(0, Bytes::len);
            key + r.value.as_ref().map_or(0, Bytes::len) + RECORD_OVERHEAD_BYTES
        })
        .sum();
    let mut out = Vec::with_capacity(BATCH_HEADER_BYTES + payload);
    if let Err(e) = RecordBatchEncoder::encode(&mut out, records, &options) {
        panic!("an internal batch of {} records did not encode: {e}", records.len());
    }
    let header = BatchHeader::parse(&out).unwrap_or_else(|_| unreachable!());
    assert!(header.size_bytes() == out.len()); // one batch: the records shared its fields
    assert!(header.records_count() as usize == records.len());
    out
}

/// Refuses a record count the batch's bytes cannot hold before kafka-protocol reserves room
/// for that many records (the count is CRC-covered, but a CRC is no proof of who wrote it).
fn check_decodable(header: &BatchHeader<'_>, size_bytes: usize) -> Result<(), BatchError> {
    let count = usize::try_from(header.records_count()).map_err(|_| BatchError::Malformed)?;
    if count > (size_bytes - BATCH_HEADER_BYTES) / RECORD_BYTES_MIN {
        return Err(BatchError::Malformed);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Offset;

    #[test]
    fn a_dead_letter_is_an_idempotent_batch_with_its_headers() {
        let headers =
            [("__dlq.errors.topic", "t".to_string()), ("__dlq.errors.offset", "7".into())];
        let batch = build_dead_letter_batch(99, Some(b"k"), None, &headers, ProducerId(42), 3);
        let header = batch::validate(&batch, usize::MAX).expect("a valid batch");
        assert_eq!((header.producer_id(), header.base_sequence()), (ProducerId(42), 3));
        assert_eq!((header.producer_epoch(), header.records_count()), (ProducerEpoch(0), 1));
        let records = parse_batch(&batch).expect("parse");
        assert_eq!(records[0].key.as_deref(), Some(&b"k"[..]));
        assert_eq!(records[0].value, None);
        let read: Vec<(String, Option<Bytes>)> =
            records[0].headers.iter().map(|(k, v)| (k.as_str().to_string(), v.clone())).collect();
        assert_eq!(read[1], ("__dlq.errors.offset".to_string(), Some(Bytes::from("7"))));
        // The record it copies is found by its offset in a read's batches.
        let mut stored = build_batch(5, &[RecordIn { key: None, value: Some(b"a") }; 3]);
        stored[0..8].copy_from_slice(&10i64.to_be_bytes());
        let found = crate::model::record_scan::key_value_at(&stored, 11, 1 << 20);
        assert_eq!(found, Some((None, Some(b"a".to_vec()))));
        assert_eq!(crate::model::record_scan::key_value_at(&stored, 13, 1 << 20), None);
    }

    /// Batches as Spate's hand-written codec wrote them before kafka-protocol's replaced it
    /// (captured from it before it was deleted): what existing data directories hold.
    /// `build_batch(1_700_000_000_123, [k1 = v1, k2 = null, null = 64 x "x"])`, a COMMIT and
    /// an ABORT marker (timestamp 9, producer 1234 epoch 5, coordinator epoch 7), and
    /// `batch::build_uncompressed(Offset(7), 3, 10, 99)`.
    const WRITTEN_RECORDS: &str = concat!(
        "00000000000000000000008e00000000023dfa56ce0000000000020000018bcfe5687b0000018bcf",
        "e5687bffffffffffffffffffffffffffff0000000314000000046b310476310010000002046b3201",
        "008e0100000401800178787878787878787878787878787878787878787878787878787878787878",
        "78787878787878787878787878787878787878787878787878787878787878787800",
    );
    const WRITTEN_COMMIT: &str = concat!(
        "00000000000000000000004200000000029783029b00300000000000000000000000090000000000",
        "00000900000000000004d20005ffffffff000000012000000008000000010c00000000000700",
    );
    const WRITTEN_ABORT: &str = concat!(
        "000000000000000000000042000000000263bdd4d300300000000000000000000000090000000000",
        "00000900000000000004d20005ffffffff000000012000000008000000000c00000000000700",
    );
    const WRITTEN_UNCOMPRESSED: &str = concat!(
        "00000000000000070000006400000000025aa5dbc100000000000200000000000000630000000000",
        "000063ffffffffffffffffffffffffffff0000000320000000011476767676767676767676002000",
        "0002011476767676767676767676002000000401147676767676767676767600",
    );

    fn unhex(text: &str) -> Vec<u8> {
        assert!(text.len().is_multiple_of(2));
        let digit = |at: usize| u8::from_str_radix(&text[at..at + 2], 16).expect("hex");
        (0..text.len()).step_by(2).map(digit).collect()
    }

    #[test]
    fn a_transactional_batch_carries_the_producer_and_no_sequence() {
        let records = [
            RecordIn { key: Some(b"k1"), value: Some(b"v1") },
            RecordIn { key: Some(b"k2"), value: Some(b"v2") },
        ];
        let bytes = build_txn_batch(5, ProducerId(77), ProducerEpoch(3), &records);
        let header = batch::validate(&bytes, usize::MAX).expect("valid");
        assert!(header.is_transactional());
        assert!(!header.is_control());
        assert_eq!(header.producer_id(), ProducerId(77));
        assert_eq!(header.producer_epoch(), ProducerEpoch(3));
        assert_eq!(header.base_sequence(), -1);
        assert_eq!(header.records_count(), 2);
        let read = parse_batch(&bytes).expect("parse");
        assert_eq!(read[1].key.as_deref(), Some(&b"k2"[..]));
        assert_eq!(read[1].value.as_deref(), Some(&b"v2"[..]));
        assert_eq!(control_outcome(&bytes), None);
    }

    #[test]
    fn batches_written_by_the_old_codec_read_back_and_are_written_again() {
        let value = [b'x'; 64];
        let records = [
            RecordIn { key: Some(b"k1"), value: Some(b"v1") },
            RecordIn { key: Some(b"k2"), value: None },
            RecordIn { key: None, value: Some(&value) },
        ];
        let stored = unhex(WRITTEN_RECORDS);
        let read = parse_batch(&stored).expect("parse");
        assert_eq!(read.len(), records.len());
        for (i, (record, written)) in read.iter().zip(records.iter()).enumerate() {
            assert_eq!(record.offset, i as i64);
            assert_eq!(record.timestamp, 1_700_000_000_123);
            assert_eq!(record.key.as_deref(), written.key);
            assert_eq!(record.value.as_deref(), written.value);
            assert!(record.headers.is_empty());
        }
        assert_eq!(build_batch(1_700_000_000_123, &records), stored);

        for (hex, outcome) in
            [(WRITTEN_COMMIT, TxnOutcome::Commit), (WRITTEN_ABORT, TxnOutcome::Abort)]
        {
            let stored = unhex(hex);
            assert_eq!(control_outcome(&stored), Some(outcome));
            assert_eq!(
                build_control_batch(9, ProducerId(1234), ProducerEpoch(5), outcome, 7),
                stored
            );
        }

        let stored = unhex(WRITTEN_UNCOMPRESSED);
        let read = parse_batch(&stored).expect("parse");
        assert_eq!(read.iter().map(|r| r.offset).collect::<Vec<_>>(), vec![7, 8, 9]);
        assert_eq!(batch::build_uncompressed(Offset(7), 3, 10, 99), stored);
        // Two-byte varints (record lengths over 63): CRC-32C of what the old builder wrote.
        let larger = batch::build_uncompressed(Offset(0), 40, 200, 1_700_000_000_000);
        assert_eq!(larger.len(), 8421);
        assert_eq!(crc32c::crc32c(&larger), 0x76d8_5e19);
    }

    #[test]
    fn markers_are_valid_control_batches_that_read_back() {
        for outcome in [TxnOutcome::Abort, TxnOutcome::Commit] {
            let bytes = build_control_batch(9, ProducerId(1234), ProducerEpoch(5), outcome, 7);
            let header = batch::validate(&bytes, usize::MAX).expect("valid");
            assert!(header.is_control());
            assert!(header.is_transactional());
            assert_eq!(header.producer_id(), ProducerId(1234));
            assert_eq!(header.producer_epoch(), ProducerEpoch(5));
            assert_eq!(header.base_sequence(), -1);
            assert_eq!(control_outcome(&bytes), Some(outcome));
            let records = parse_batch(&bytes).expect("parse");
            assert_eq!(records[0].value.as_deref(), Some(&[0, 0, 0, 0, 0, 7][..]));
        }
        assert_eq!(control_outcome(&build_batch(0, &[RecordIn { key: None, value: None }])), None);
    }

    #[test]
    fn records_survive_a_round_trip() {
        let records = [
            RecordIn { key: Some(b"k1"), value: Some(b"v1") },
            RecordIn { key: Some(b"k2"), value: None },
            RecordIn { key: None, value: Some(&[0u8; 300]) },
        ];
        let mut bytes = build_batch(1_234, &records);
        batch::assign_offset(&mut bytes, Offset(40), LeaderEpoch::INITIAL);
        let header = batch::validate(&bytes, usize::MAX).expect("valid batch");
        assert_eq!(header.records_count(), 3);
        assert_eq!(header.last_offset(), Offset(42));
        assert_eq!(header.base_sequence(), -1);
        let read = parse_batch(&bytes).expect("parse");
        assert_eq!(read.len(), 3);
        for (i, (record, written)) in read.iter().zip(records.iter()).enumerate() {
            assert_eq!(record.offset, 40 + i as i64);
            assert_eq!(record.timestamp, 1_234);
            assert_eq!(record.key.as_deref(), written.key);
            assert_eq!(record.value.as_deref(), written.value);
        }
    }

    #[test]
    fn damage_is_refused_not_misread() {
        let bytes = build_batch(1, &[RecordIn { key: Some(b"key"), value: Some(b"value") }]);
        for cut in [0, 30, bytes.len() - 1] {
            assert!(parse_batch(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut compressed = bytes.clone();
        compressed[22] |= 1; // gzip, CRC now wrong as well
        assert!(parse_batch(&compressed).is_err());
    }

    #[test]
    fn offsets_saturate_at_a_base_offset_anyone_could_have_written() {
        let records = [RecordIn { key: Some(b"k"), value: None }; 3];
        let mut bytes = build_batch(1, &records);
        bytes[0..8].copy_from_slice(&(i64::MAX - 1).to_be_bytes()); // outside the CRC
        let read = parse_batch(&bytes).expect("parse");
        let offsets: Vec<i64> = read.iter().map(|r| r.offset).collect();
        assert_eq!(offsets, vec![i64::MAX - 1, i64::MAX, i64::MAX]);
    }

    #[test]
    fn a_record_count_the_bytes_cannot_hold_is_refused_before_decoding() {
        let mut bytes = build_batch(1, &[RecordIn { key: None, value: None }]);
        bytes[57..61].copy_from_slice(&i32::MAX.to_be_bytes());
        let crc = crc32c::crc32c(&bytes[21..]);
        bytes[17..21].copy_from_slice(&crc.to_be_bytes());
        assert!(batch::validate(&bytes, usize::MAX).is_ok());
        assert_eq!(parse_batch(&bytes).err(), Some(BatchError::Malformed));
    }

    #[test]
    fn short_strings_are_cut_at_a_character_boundary() {
        let mut out = Vec::new();
        put_short_string(&mut out, "abc");
        assert_eq!(out, [0, 3, b'a', b'b', b'c']);
        // 10,923 three-byte characters: the cut falls before the last whole one that fits.
        let long = "\u{20ac}".repeat(SHORT_STRING_BYTES_MAX / 3 + 1);
        let mut out = Vec::new();
        put_short_string(&mut out, &long);
        let length = i16::from_be_bytes([out[0], out[1]]) as usize;
        assert_eq!(length, SHORT_STRING_BYTES_MAX / 3 * 3);
        assert!(std::str::from_utf8(&out[2..]).is_ok());
        assert_eq!(out.len(), 2 + length);
    }
}
