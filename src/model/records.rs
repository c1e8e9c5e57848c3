//! Keyed records inside an uncompressed magic v2 batch: the small encoder and decoder the
//! broker needs for its own internal logs (committed offsets). Client batches never pass
//! through here; the produce and fetch paths stay passthrough.
//!
//! ```text
//!  record (inside the batch, after the 61-byte header; all varints zigzag):
//!    length            varint  bytes after this field
//!    attributes        int8    unused, 0
//!    timestamp_delta   varint  from the batch's base_timestamp
//!    offset_delta      varint  from the batch's base_offset
//!    key_length        varint  -1 for a null key
//!    key               bytes
//!    value_length      varint  -1 for a null value (a tombstone)
//!    value             bytes
//!    headers_count     varint  0 here
//! ```

use crate::constants::BATCH_HEADER_BYTES;
use crate::model::batch::{self, BatchError, BatchHeader};

/// One record to write: key and value, either may be null (a null value is a tombstone).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordIn<'a> {
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
}

/// One record read back: its absolute offset and timestamp, key and value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordView<'a> {
    pub offset: i64,
    pub timestamp: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
}

const CODEC_MASK: i16 = 0x07;

/// Builds one uncompressed batch at base offset 0 (the log assigns the real one) holding
/// `records`, all stamped `timestamp`, with no producer id (-1), as Kafka writes its own
/// internal records. The CRC-32C is computed here; the batch passes `batch::validate`.
pub fn build_batch(timestamp: i64, records: &[RecordIn<'_>]) -> Vec<u8> {
    assert!(!records.is_empty());
    let count = i32::try_from(records.len()).unwrap_or(i32::MAX);
    let mut body = Vec::new();
    let mut record = Vec::new();
    for (delta, r) in records.iter().enumerate() {
        record.clear();
        record.push(0u8); // attributes
        put_varint(&mut record, 0); // timestamp delta
        put_varint(&mut record, delta as i64);
        put_bytes(&mut record, r.key);
        put_bytes(&mut record, r.value);
        put_varint(&mut record, 0); // headers
        put_varint(&mut body, record.len() as i64);
        body.extend_from_slice(&record);
    }
    let mut out = Vec::with_capacity(BATCH_HEADER_BYTES + body.len());
    out.extend(0i64.to_be_bytes()); // base_offset
    out.extend(((BATCH_HEADER_BYTES - 12 + body.len()) as i32).to_be_bytes());
    out.extend(0i32.to_be_bytes()); // partition_leader_epoch
    out.push(2); // magic
    out.extend(0u32.to_be_bytes()); // crc, filled below
    out.extend(0i16.to_be_bytes()); // attributes: no codec, CreateTime
    out.extend((count - 1).to_be_bytes()); // last_offset_delta
    out.extend(timestamp.to_be_bytes()); // base_timestamp
    out.extend(timestamp.to_be_bytes()); // max_timestamp
    out.extend((-1i64).to_be_bytes()); // producer_id
    out.extend((-1i16).to_be_bytes()); // producer_epoch
    out.extend((-1i32).to_be_bytes()); // base_sequence
    out.extend(count.to_be_bytes());
    out.extend(body);
    let crc = crc32c::crc32c(&out[21..]);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    out
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
    producer_id: i64,
    producer_epoch: i16,
    commit: bool,
    coordinator_epoch: i32,
) -> Vec<u8> {
    let mut key = [0u8; 4];
    key[2..4].copy_from_slice(&i16::from(commit).to_be_bytes());
    let mut value = [0u8; 6];
    value[2..6].copy_from_slice(&coordinator_epoch.to_be_bytes());
    let record = RecordIn { key: Some(&key), value: Some(&value) };
    let mut out = build_batch(timestamp, &[record]);
    out[21..23].copy_from_slice(
        &(batch::ATTRIBUTE_TRANSACTIONAL | batch::ATTRIBUTE_CONTROL).to_be_bytes(),
    );
    batch::set_producer(&mut out, producer_id, producer_epoch, -1);
    out
}

/// Whether a stored control batch is a COMMIT marker (Some(true)) or an ABORT marker
/// (Some(false)); None for anything else (a damaged or unknown control record).
pub fn control_commit(bytes: &[u8]) -> Option<bool> {
    let records = parse_batch(bytes).ok()?;
    let key = records.first()?.key?;
    if key.len() < 4 || key[0..2] != [0, 0] {
        return None;
    }
    match i16::from_be_bytes([key[2], key[3]]) {
        0 => Some(false),
        1 => Some(true),
        _ => None,
    }
}

/// Reads every record of one stored batch (which must be exactly one whole batch). Only
/// uncompressed batches are accepted: the broker's internal logs are never compressed.
pub fn parse_batch(bytes: &[u8]) -> Result<Vec<RecordView<'_>>, BatchError> {
    let header = batch::validate(bytes, usize::MAX)?;
    if header.attributes() & CODEC_MASK != 0 {
        return Err(BatchError::Malformed);
    }
    parse_records(&header, &bytes[BATCH_HEADER_BYTES..])
}

fn parse_records<'a>(
    header: &BatchHeader<'_>,
    mut rest: &'a [u8],
) -> Result<Vec<RecordView<'a>>, BatchError> {
    let count = usize::try_from(header.records_count()).map_err(|_| BatchError::Malformed)?;
    let mut out = Vec::with_capacity(count.min(rest.len()));
    for _ in 0..count {
        let length = take_varint(&mut rest)?;
        let length = usize::try_from(length).map_err(|_| BatchError::Malformed)?;
        if length > rest.len() {
            return Err(BatchError::Truncated);
        }
        let (mut record, after) = rest.split_at(length);
        rest = after;
        take(&mut record, 1)?; // attributes
        let timestamp_delta = take_varint(&mut record)?;
        let offset_delta = take_varint(&mut record)?;
        let key = take_bytes(&mut record)?;
        let value = take_bytes(&mut record)?;
        out.push(RecordView {
            // Saturating: deltas are varints anyone could have written.
            offset: header.base_offset().saturating_add(offset_delta),
            timestamp: header.base_timestamp().saturating_add(timestamp_delta),
            key,
            value,
        });
    }
    if !rest.is_empty() {
        return Err(BatchError::Malformed);
    }
    Ok(out)
}

fn put_bytes(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        None => put_varint(out, -1),
        Some(bytes) => {
            put_varint(out, bytes.len() as i64);
            out.extend_from_slice(bytes);
        }
    }
}

fn put_varint(out: &mut Vec<u8>, value: i64) {
    let mut zigzag = ((value << 1) ^ (value >> 63)) as u64;
    while zigzag >= 0x80 {
        out.push((zigzag as u8) | 0x80);
        zigzag >>= 7;
    }
    out.push(zigzag as u8);
}

fn take<'a>(bytes: &mut &'a [u8], n: usize) -> Result<&'a [u8], BatchError> {
    if bytes.len() < n {
        return Err(BatchError::Truncated);
    }
    let (head, tail) = bytes.split_at(n);
    *bytes = tail;
    Ok(head)
}

fn take_varint(bytes: &mut &[u8]) -> Result<i64, BatchError> {
    let mut value: u64 = 0;
    for shift in (0..64).step_by(7) {
        let byte = take(bytes, 1)?[0];
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(((value >> 1) as i64) ^ -((value & 1) as i64));
        }
    }
    Err(BatchError::Malformed)
}

fn take_bytes<'a>(bytes: &mut &'a [u8]) -> Result<Option<&'a [u8]>, BatchError> {
    let length = take_varint(bytes)?;
    if length < 0 {
        return Ok(None);
    }
    let length = usize::try_from(length).map_err(|_| BatchError::Malformed)?;
    take(bytes, length).map(Some)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_are_valid_control_batches_that_read_back() {
        for commit in [false, true] {
            let bytes = build_control_batch(9, 1234, 5, commit, 7);
            let header = batch::validate(&bytes, usize::MAX).expect("valid");
            assert!(header.is_control());
            assert!(header.is_transactional());
            assert_eq!(header.producer_id(), 1234);
            assert_eq!(header.producer_epoch(), 5);
            assert_eq!(header.base_sequence(), -1);
            assert_eq!(control_commit(&bytes), Some(commit));
            let value = parse_batch(&bytes).expect("parse")[0].value.expect("value");
            assert_eq!(value, &[0, 0, 0, 0, 0, 7]);
        }
        assert_eq!(control_commit(&build_batch(0, &[RecordIn { key: None, value: None }])), None);
    }

    #[test]
    fn records_survive_a_round_trip() {
        let records = [
            RecordIn { key: Some(b"k1"), value: Some(b"v1") },
            RecordIn { key: Some(b"k2"), value: None },
            RecordIn { key: None, value: Some(&[0u8; 300]) },
        ];
        let mut bytes = build_batch(1_234, &records);
        batch::assign_offset(&mut bytes, 40, 0);
        let header = batch::validate(&bytes, usize::MAX).expect("valid batch");
        assert_eq!(header.records_count(), 3);
        assert_eq!(header.last_offset(), 42);
        let read = parse_batch(&bytes).expect("parse");
        assert_eq!(read.len(), 3);
        for (i, (view, written)) in read.iter().zip(records.iter()).enumerate() {
            assert_eq!(view.offset, 40 + i as i64);
            assert_eq!(view.timestamp, 1_234);
            assert_eq!(view.key, written.key);
            assert_eq!(view.value, written.value);
        }
    }

    #[test]
    fn a_batch_from_the_test_builder_parses() {
        let bytes = batch::build_uncompressed(7, 4, 10, 99);
        let read = parse_batch(&bytes).expect("parse");
        assert_eq!(read.iter().map(|r| r.offset).collect::<Vec<_>>(), vec![7, 8, 9, 10]);
        assert!(read.iter().all(|r| r.key.is_none() && r.value == Some(&[b'v'; 10][..])));
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
    fn varints_match_kafka() {
        for (value, encoded) in
            [(0i64, vec![0u8]), (-1, vec![1]), (1, vec![2]), (63, vec![126]), (64, vec![128, 1])]
        {
            let mut out = Vec::new();
            put_varint(&mut out, value);
            assert_eq!(out, encoded, "{value}");
            let mut slice = &out[..];
            assert_eq!(take_varint(&mut slice).expect("decode"), value);
        }
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
