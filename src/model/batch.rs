//! The magic v2 record batch header: parse, validate and rewrite in place, without ever
//! decompressing the records that follow it. Only the records of an uncompressed batch are
//! walked, on produce, to check that they are as many as its header says (`split_batches`).
//!
//! ```text
//!  offset  size  field                  covered by CRC
//!       0     8  base_offset            no  (the broker rewrites it)
//!       8     4  batch_length           no  (bytes after this field)
//!      12     4  partition_leader_epoch no  (the broker rewrites it)
//!      16     1  magic (= 2)            no
//!      17     4  crc (CRC-32C)          no
//!      21     2  attributes             yes  bits 0-2 codec, 3 timestamp type,
//!                                             4 transactional, 5 control
//!      23     4  last_offset_delta      yes
//!      27     8  base_timestamp         yes
//!      35     8  max_timestamp          yes
//!      43     8  producer_id            yes
//!      51     2  producer_epoch         yes
//!      53     4  base_sequence          yes
//!      57     4  records_count          yes
//!      61     .  records                yes
//! ```

use crate::constants::{BATCH_HEADER_BYTES, BATCH_LOG_OVERHEAD_BYTES};
use crate::model::records::{build_batch, RecordIn};
use crate::model::{LeaderEpoch, Offset, ProducerEpoch, ProducerId};

pub const MAGIC_V2: i8 = 2;
const CRC_START: usize = 21;
const ATTRIBUTE_TIMESTAMP_TYPE: i16 = 1 << 3;
pub const ATTRIBUTE_TRANSACTIONAL: i16 = 1 << 4;
pub const ATTRIBUTE_CONTROL: i16 = 1 << 5;
/// Smallest `batch_length`: the header after the length field, with no records.
pub const BATCH_LENGTH_MIN: i32 = (BATCH_HEADER_BYTES - BATCH_LOG_OVERHEAD_BYTES) as i32;

/// Why a batch was refused. Each maps to one Kafka error code in `api::produce`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchError {
    /// Fewer bytes than a header, or a length that points past the buffer.
    Truncated,
    /// A length below the header size or inconsistent counts.
    Malformed,
    /// Magic byte is not 2; the old message formats are not accepted.
    UnsupportedMagic,
    /// The CRC-32C over attributes..end does not match.
    CorruptCrc,
    /// Bigger than the topic's max.message.bytes.
    TooLarge,
    /// An uncompressed batch whose records are not as many as its records count and last
    /// offset delta say, or do not fill it exactly (Kafka: INVALID_RECORD).
    RecordsMismatch,
}

/// A view of one batch header at the start of a byte slice.
#[derive(Debug, Clone, Copy)]
pub struct BatchHeader<'a> {
    bytes: &'a [u8],
}

impl<'a> BatchHeader<'a> {
    /// Reads the header of the batch at the start of `bytes`; checks only that the header and
    /// the length field fit. The batch itself may extend past `bytes` (see `size_bytes`).
    pub fn parse(bytes: &'a [u8]) -> Result<BatchHeader<'a>, BatchError> {
        if bytes.len() < BATCH_HEADER_BYTES {
            return Err(BatchError::Truncated);
        }
        let header = BatchHeader { bytes };
        if header.batch_length() < BATCH_LENGTH_MIN {
            return Err(BatchError::Malformed);
        }
        Ok(header)
    }

    pub fn base_offset(&self) -> Offset {
        Offset(i64::from_be_bytes(array(self.bytes, 0)))
    }
    pub fn batch_length(&self) -> i32 {
        i32::from_be_bytes(array(self.bytes, 8))
    }
    pub fn partition_leader_epoch(&self) -> LeaderEpoch {
        LeaderEpoch(i32::from_be_bytes(array(self.bytes, 12)))
    }
    pub fn magic(&self) -> i8 {
        self.bytes[16] as i8
    }
    pub fn crc(&self) -> u32 {
        u32::from_be_bytes(array(self.bytes, 17))
    }
    pub fn attributes(&self) -> i16 {
        i16::from_be_bytes(array(self.bytes, 21))
    }
    pub fn last_offset_delta(&self) -> i32 {
        i32::from_be_bytes(array(self.bytes, 23))
    }
    pub fn base_timestamp(&self) -> i64 {
        i64::from_be_bytes(array(self.bytes, 27))
    }
    pub fn max_timestamp(&self) -> i64 {
        i64::from_be_bytes(array(self.bytes, 35))
    }
    pub fn producer_id(&self) -> ProducerId {
        ProducerId(i64::from_be_bytes(array(self.bytes, 43)))
    }
    pub fn producer_epoch(&self) -> ProducerEpoch {
        ProducerEpoch(i16::from_be_bytes(array(self.bytes, 51)))
    }
    pub fn base_sequence(&self) -> i32 {
        i32::from_be_bytes(array(self.bytes, 53))
    }
    pub fn records_count(&self) -> i32 {
        i32::from_be_bytes(array(self.bytes, 57))
    }
    pub fn is_transactional(&self) -> bool {
        self.attributes() & ATTRIBUTE_TRANSACTIONAL != 0
    }
    pub fn is_control(&self) -> bool {
        self.attributes() & ATTRIBUTE_CONTROL != 0
    }
    /// Saturates: the base offset is outside the CRC, so a producer (whose base offset the
    /// broker overwrites anyway) or a damaged disk block can put any value there.
    pub fn last_offset(&self) -> Offset {
        self.base_offset().saturating_add(i64::from(self.last_offset_delta()))
    }
    /// Total size of the batch on disk and on the wire, header included.
    pub fn size_bytes(&self) -> usize {
        BATCH_LOG_OVERHEAD_BYTES + self.batch_length() as usize
    }
}

/// Checks one complete batch as a producer sent it: sizes, magic, counts and CRC-32C.
/// `bytes` must hold exactly one batch. O(n) in the batch size (the CRC).
pub fn validate(bytes: &[u8], size_bytes_max: usize) -> Result<BatchHeader<'_>, BatchError> {
    let header = BatchHeader::parse(bytes)?;
    if header.size_bytes() != bytes.len() {
        return Err(if header.size_bytes() > bytes.len() {
            BatchError::Truncated
        } else {
            BatchError::Malformed
        });
    }
    if header.magic() != MAGIC_V2 {
        return Err(BatchError::UnsupportedMagic);
    }
    if bytes.len() > size_bytes_max {
        return Err(BatchError::TooLarge);
    }
    if header.last_offset_delta() < 0 || header.records_count() < 0 {
        return Err(BatchError::Malformed);
    }
    if crc32c::crc32c(&bytes[CRC_START..]) != header.crc() {
        return Err(BatchError::CorruptCrc);
    }
    Ok(header)
}

/// Splits a produce request's `records` into batches, validating each. Returns the end of
/// each batch. A trailing partial batch is an error: producers never send one.
pub fn split_batches(bytes: &[u8], size_bytes_max: usize) -> Result<Vec<usize>, BatchError> {
    let mut ends = Vec::with_capacity(1);
    let mut position = 0;
    while position < bytes.len() {
        let header = BatchHeader::parse(&bytes[position..])?;
        let end = position.checked_add(header.size_bytes()).ok_or(BatchError::Malformed)?;
        if end > bytes.len() {
            return Err(BatchError::Truncated);
        }
        let header = validate(&bytes[position..end], size_bytes_max)?;
        check_uncompressed_records(&header, &bytes[position..end])?;
        ends.push(end);
        position = end;
    }
    if ends.is_empty() {
        return Err(BatchError::Malformed);
    }
    Ok(ends)
}

/// Checks that an uncompressed batch holds exactly `records_count` records, one per offset
/// delta, filling it to its end, by walking the records' length prefixes (not their fields).
/// A compressed batch passes as it is: the broker never decompresses on produce (Kafka does,
/// and so also refuses a compressed batch whose count disagrees). O(records).
fn check_uncompressed_records(header: &BatchHeader<'_>, bytes: &[u8]) -> Result<(), BatchError> {
    const CODEC_MASK: i16 = 0x07;
    if header.attributes() & CODEC_MASK != 0 {
        return Ok(());
    }
    let count = header.records_count();
    if count != header.last_offset_delta().saturating_add(1) {
        return Err(BatchError::RecordsMismatch);
    }
    let mut at = BATCH_HEADER_BYTES;
    for _ in 0..count {
        let (length, used) = read_varint(&bytes[at.min(bytes.len())..])?;
        let length = usize::try_from(length).map_err(|_| BatchError::RecordsMismatch)?;
        at = at
            .checked_add(used)
            .and_then(|at| at.checked_add(length))
            .filter(|end| *end <= bytes.len())
            .ok_or(BatchError::RecordsMismatch)?;
    }
    if at != bytes.len() {
        return Err(BatchError::RecordsMismatch);
    }
    Ok(())
}

/// A zigzag varint (at most 5 bytes, an i32) and the bytes it took.
fn read_varint(bytes: &[u8]) -> Result<(i64, usize), BatchError> {
    let mut raw: u64 = 0;
    for (i, byte) in bytes.iter().take(5).enumerate() {
        raw |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            let value = (raw >> 1) as i64 ^ -((raw & 1) as i64);
            return Ok((value, i + 1));
        }
    }
    Err(BatchError::RecordsMismatch)
}

/// Gives a validated batch its place in the log. The CRC does not cover these fields.
pub fn assign_offset(bytes: &mut [u8], base_offset: Offset, leader_epoch: LeaderEpoch) {
    assert!(bytes.len() >= BATCH_HEADER_BYTES);
    assert!(base_offset >= Offset::ZERO);
    bytes[0..8].copy_from_slice(&base_offset.0.to_be_bytes());
    bytes[12..16].copy_from_slice(&leader_epoch.0.to_be_bytes());
}

/// Stamps LogAppendTime: sets the timestamp-type attribute and max_timestamp, then recomputes
/// the CRC because both fields are covered by it. Kafka does exactly this for magic v2.
pub fn set_log_append_time(bytes: &mut [u8], timestamp_ms: i64) {
    assert!(bytes.len() >= BATCH_HEADER_BYTES);
    let attributes = i16::from_be_bytes(array(bytes, 21)) | ATTRIBUTE_TIMESTAMP_TYPE;
    bytes[21..23].copy_from_slice(&attributes.to_be_bytes());
    bytes[35..43].copy_from_slice(&timestamp_ms.to_be_bytes());
    let crc = crc32c::crc32c(&bytes[CRC_START..]);
    bytes[17..21].copy_from_slice(&crc.to_be_bytes());
}

/// Outcome of scanning stored log bytes, used by recovery and by readers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScannedBatch {
    pub base_offset: Offset,
    pub last_offset: Offset,
    pub max_timestamp: i64,
    pub size_bytes: usize,
    pub crc: u32,
}

/// Checks a batch read back from disk: the same checks as on produce, no size cap.
/// Returns None for anything that is not a complete, intact batch (a torn tail).
pub fn scan_stored(bytes: &[u8]) -> Option<ScannedBatch> {
    let header = BatchHeader::parse(bytes).ok()?;
    if header.size_bytes() > bytes.len() {
        return None;
    }
    let header = validate(&bytes[..header.size_bytes()], usize::MAX).ok()?;
    if header.base_offset() < Offset::ZERO {
        return None;
    }
    Some(ScannedBatch {
        base_offset: header.base_offset(),
        last_offset: header.last_offset(),
        max_timestamp: header.max_timestamp(),
        size_bytes: header.size_bytes(),
        crc: header.crc(),
    })
}

fn array<const N: usize>(bytes: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&bytes[at..at + N]);
    out
}

/// Builds a valid uncompressed batch with `count` records of `value_size` bytes each (null
/// keys, no headers, all records at `timestamp`), as a producer would send it. For tests and
/// benchmarks: the broker builds only its internal batches (`model::records`, whose encoder
/// this borrows).
pub fn build_uncompressed(
    base_offset: Offset,
    count: i32,
    value_size: usize,
    timestamp: i64,
) -> Vec<u8> {
    assert!(count > 0);
    let value = vec![b'v'; value_size];
    let records = vec![RecordIn { key: None, value: Some(&value) }; count as usize];
    let mut batch = build_batch(timestamp, &records);
    batch[0..8].copy_from_slice(&base_offset.0.to_be_bytes()); // outside the CRC
    batch
}

/// Makes a built batch idempotent: sets producer id, epoch and base sequence, then the CRC
/// (all three are covered by it). For tests and benchmarks, like `build_uncompressed`.
pub fn set_producer(
    bytes: &mut [u8],
    producer_id: ProducerId,
    producer_epoch: ProducerEpoch,
    base_sequence: i32,
) {
    assert!(bytes.len() >= BATCH_HEADER_BYTES);
    bytes[43..51].copy_from_slice(&producer_id.0.to_be_bytes());
    bytes[51..53].copy_from_slice(&producer_epoch.0.to_be_bytes());
    bytes[53..57].copy_from_slice(&base_sequence.to_be_bytes());
    let crc = crc32c::crc32c(&bytes[CRC_START..]);
    bytes[17..21].copy_from_slice(&crc.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn make_batch(base: i64, count: i32, size: usize, ts: i64) -> Vec<u8> {
        build_uncompressed(Offset(base), count, size, ts)
    }

    /// Sets the CRC of a batch changed in its CRC-covered part.
    fn recrc(batch: &mut [u8]) {
        let crc = crc32c::crc32c(&batch[CRC_START..]);
        batch[17..21].copy_from_slice(&crc.to_be_bytes());
    }

    #[test]
    fn produce_checks_the_records_of_an_uncompressed_batch_against_its_count() {
        let good = make_batch(0, 3, 10, 1_000);
        assert_eq!(split_batches(&good, 1 << 20), Ok(vec![good.len()]));
        // A count of 5 over three records (the last offset delta agreeing): too few records.
        let mut more = good.clone();
        more[57..61].copy_from_slice(&5i32.to_be_bytes());
        more[23..27].copy_from_slice(&4i32.to_be_bytes());
        recrc(&mut more);
        assert_eq!(split_batches(&more, 1 << 20), Err(BatchError::RecordsMismatch));
        // A count of 2: a record left over at the end.
        let mut fewer = good.clone();
        fewer[57..61].copy_from_slice(&2i32.to_be_bytes());
        fewer[23..27].copy_from_slice(&1i32.to_be_bytes());
        recrc(&mut fewer);
        assert_eq!(split_batches(&fewer, 1 << 20), Err(BatchError::RecordsMismatch));
        // Count and last offset delta that disagree.
        let mut delta = good.clone();
        delta[23..27].copy_from_slice(&7i32.to_be_bytes());
        recrc(&mut delta);
        assert_eq!(split_batches(&delta, 1 << 20), Err(BatchError::RecordsMismatch));
        // A record length that runs past the batch, and one that is negative.
        for length in [0x7e_u8, 0x01] {
            let mut long = good.clone();
            long[BATCH_HEADER_BYTES] = length;
            recrc(&mut long);
            assert_eq!(split_batches(&long, 1 << 20), Err(BatchError::RecordsMismatch));
        }
        // A compressed batch is not looked into: the same wrong count passes.
        let mut compressed = more.clone();
        compressed[21..23].copy_from_slice(&4i16.to_be_bytes()); // zstd
        recrc(&mut compressed);
        assert_eq!(split_batches(&compressed, 1 << 20), Ok(vec![compressed.len()]));
    }

    #[test]
    fn a_valid_batch_passes_and_reports_its_fields() {
        let batch = make_batch(0, 3, 10, 1_000);
        let header = validate(&batch, 1 << 20).expect("valid");
        assert_eq!(header.records_count(), 3);
        assert_eq!(header.last_offset_delta(), 2);
        assert_eq!(header.size_bytes(), batch.len());
        assert_eq!(header.max_timestamp(), 1_000);
    }

    #[test]
    fn every_single_bit_flip_after_the_crc_is_caught() {
        let batch = make_batch(0, 2, 5, 1);
        for byte in CRC_START..batch.len() {
            for bit in 0..8 {
                let mut corrupt = batch.clone();
                corrupt[byte] ^= 1 << bit;
                assert!(validate(&corrupt, 1 << 20).is_err(), "byte {byte} bit {bit}");
            }
        }
    }

    #[test]
    fn offsets_and_epoch_are_rewritten_without_breaking_the_crc() {
        let mut batch = make_batch(0, 1, 5, 1);
        assign_offset(&mut batch, Offset(12_345), LeaderEpoch(7));
        let header = validate(&batch, 1 << 20).expect("still valid");
        assert_eq!(header.base_offset(), Offset(12_345));
        assert_eq!(header.partition_leader_epoch(), LeaderEpoch(7));
        set_log_append_time(&mut batch, 99);
        let header = validate(&batch, 1 << 20).expect("still valid");
        assert_eq!(header.max_timestamp(), 99);
        assert_eq!(header.attributes() & ATTRIBUTE_TIMESTAMP_TYPE, ATTRIBUTE_TIMESTAMP_TYPE);
    }

    #[test]
    fn producer_fields_are_read_where_kafka_puts_them() {
        let mut batch = make_batch(0, 3, 5, 1);
        let header = validate(&batch, 1 << 20).expect("valid");
        assert_eq!(
            (header.producer_id(), header.producer_epoch(), header.base_sequence()),
            (ProducerId::NONE, ProducerEpoch::NONE, -1)
        );
        set_producer(&mut batch, ProducerId(77), ProducerEpoch(3), 40);
        let header = validate(&batch, 1 << 20).expect("still valid");
        assert_eq!(
            (header.producer_id(), header.producer_epoch(), header.base_sequence()),
            (ProducerId(77), ProducerEpoch(3), 40)
        );
        assert_eq!(&batch[51..53], &[0, 3]);
        assert_eq!(&batch[53..57], &[0, 0, 0, 40]);
    }

    #[test]
    fn bad_shapes_get_the_right_error() {
        let batch = make_batch(0, 1, 5, 1);
        assert_eq!(validate(&batch[..30], 1 << 20).err(), Some(BatchError::Truncated));
        assert_eq!(validate(&batch[..batch.len() - 1], 1 << 20).err(), Some(BatchError::Truncated));
        assert_eq!(validate(&batch, 10).err(), Some(BatchError::TooLarge));
        let mut old = batch.clone();
        old[16] = 1;
        assert_eq!(validate(&old, 1 << 20).err(), Some(BatchError::UnsupportedMagic));
        let mut short = batch.clone();
        short[8..12].copy_from_slice(&3i32.to_be_bytes());
        assert_eq!(validate(&short, 1 << 20).err(), Some(BatchError::Malformed));
    }

    #[test]
    fn split_finds_every_batch_and_rejects_a_partial_one() {
        let mut two = make_batch(0, 1, 5, 1);
        let first = two.len();
        two.extend(make_batch(0, 2, 7, 1));
        assert_eq!(split_batches(&two, 1 << 20).expect("two"), vec![first, two.len()]);
        assert!(split_batches(&two[..two.len() - 3], 1 << 20).is_err());
        assert!(split_batches(&[], 1 << 20).is_err());
    }

    #[test]
    fn scan_stored_stops_at_zeros_and_garbage() {
        let batch = make_batch(5, 2, 5, 1);
        assert_eq!(scan_stored(&batch).map(|b| b.last_offset), Some(Offset(6)));
        assert_eq!(scan_stored(&[0u8; 128]), None);
        assert_eq!(scan_stored(&batch[..batch.len() - 1]), None);
    }
}
