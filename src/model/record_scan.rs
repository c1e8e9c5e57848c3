//! The first record of a stored batch whose timestamp is at least a given one (ListOffsets by
//! time), found by streaming: the records section is decompressed a little at a time and
//! parsed as it comes, the scan stops at the first match, and at most `decompressed_max`
//! bytes are ever produced. The produce path never decompresses (batches pass through), so a
//! producer may store a batch that decompresses to gigabytes; decompressing it whole, as this
//! used to, cost the shard that memory and the CPU time of all of it.
//!
//! Pure: bytes in, answer out (decompression is computation), so it is tested without a
//! broker. The caller runs it off the shard's executor thread.
//!
//! ```text
//!  batch header (model::batch): base_offset, ..., attributes (codec: bits 0-2, LogAppendTime:
//!    bit 3), ..., base_timestamp, ..., records_count; the records follow at byte 61,
//!    compressed as a whole with the codec (snappy: Kafka's xerial framing, or raw)
//!  record (all varints zigzag):
//!    length varint | attributes int8 | timestamp_delta varlong | offset_delta varint | ...
//! ```

use std::io::{self, Read};

use crate::constants::BATCH_HEADER_BYTES;
use crate::model::batch::BatchHeader;
use crate::model::Offset;

/// Attributes bit of a batch whose timestamps the broker set (LogAppendTime): every record
/// then has the batch's max timestamp.
const LOG_APPEND_TIME: i16 = 0x08;

/// Kafka's snappy framing (snappy-java's "xerial" stream): this magic, then blocks of
/// `[compressed length u32 BE][raw snappy block]`.
const XERIAL_MAGIC: &[u8] = b"\x82SNAPPY\x00";
const XERIAL_HEADER_BYTES: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// The first record at or after the timestamp: its offset and timestamp.
    At(Offset, i64),
    /// Every record is earlier.
    None,
    /// The records decompress to more than the bound before the answer: unknown.
    Bounded,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScanError {
    #[error("not a stored record batch")]
    Header,
    #[error("unknown compression codec {0}")]
    Codec(i16),
    #[error("damaged records: {0}")]
    Records(String),
    #[error("the records decompress beyond the bound")]
    Bounded,
}

/// Finds the first record of `batch` (one whole stored batch) with a timestamp at least
/// `timestamp`, decompressing at most `decompressed_max` bytes of its records.
pub fn first_at_or_after(
    batch: &[u8],
    timestamp: i64,
    decompressed_max: u64,
) -> Result<Found, ScanError> {
    let header = BatchHeader::parse(batch).map_err(|_| ScanError::Header)?;
    let end = header.size_bytes();
    if batch.len() < end || end < BATCH_HEADER_BYTES {
        return Err(ScanError::Header);
    }
    let attributes = header.attributes();
    if attributes & LOG_APPEND_TIME != 0 {
        let max = header.max_timestamp();
        return Ok(if max >= timestamp {
            Found::At(header.base_offset(), max)
        } else {
            Found::None
        });
    }
    let records = &batch[BATCH_HEADER_BYTES..end];
    let budget = Budget::new(decompressed_max);
    let scanned = match attributes & 0x07 {
        0 => scan(records, &header, timestamp, &budget),
        1 => scan(flate2::read::GzDecoder::new(records), &header, timestamp, &budget),
        2 => scan(Snappy::new(records, &budget), &header, timestamp, &budget),
        3 => {
            let decoder = lz4::Decoder::new(records).map_err(damaged)?;
            scan(decoder, &header, timestamp, &budget)
        }
        4 => {
            let decoder = zstd::stream::read::Decoder::with_buffer(records).map_err(damaged)?;
            scan(decoder, &header, timestamp, &budget)
        }
        codec => return Err(ScanError::Codec(codec)),
    };
    match scanned {
        Err(_) if budget.spent() => Ok(Found::Bounded),
        Err(e) => Err(damaged(e)),
        Ok(found) => Ok(found),
    }
}

/// The records section of `batch` (one whole stored batch), decompressed with the batch's
/// codec, refused beyond `decompressed_max` bytes (`ScanError::Bounded`). For the few places
/// that need every record: compaction, and produce to a compacted topic (keys checked).
pub fn decompress_records(batch: &[u8], decompressed_max: u64) -> Result<Vec<u8>, ScanError> {
    let header = BatchHeader::parse(batch).map_err(|_| ScanError::Header)?;
    let end = header.size_bytes();
    if batch.len() < end || end < BATCH_HEADER_BYTES {
        return Err(ScanError::Header);
    }
    let records = &batch[BATCH_HEADER_BYTES..end];
    let budget = Budget::new(decompressed_max);
    let mut out = Vec::new();
    let read = match header.attributes() & 0x07 {
        0 => {
            if records.len() as u64 > decompressed_max {
                return Err(ScanError::Bounded);
            }
            out.extend_from_slice(records);
            Ok(out.len())
        }
        1 => read_all(flate2::read::GzDecoder::new(records), &budget, &mut out),
        2 => read_all(Snappy::new(records, &budget), &budget, &mut out),
        3 => {
            let decoder = lz4::Decoder::new(records).map_err(damaged)?;
            read_all(decoder, &budget, &mut out)
        }
        4 => {
            let decoder = zstd::stream::read::Decoder::with_buffer(records).map_err(damaged)?;
            read_all(decoder, &budget, &mut out)
        }
        codec => return Err(ScanError::Codec(codec)),
    };
    match read {
        Err(_) if budget.spent() => Err(ScanError::Bounded),
        Err(e) => Err(damaged(e)),
        Ok(_) => Ok(out),
    }
}

fn read_all(input: impl Read, budget: &Budget, out: &mut Vec<u8>) -> io::Result<usize> {
    Metered { inner: input, budget }.read_to_end(out)
}

/// One record of a decompressed records section, as `records` finds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordView<'a> {
    /// The whole record, its length varint included.
    pub bytes: &'a [u8],
    pub timestamp_delta: i64,
    pub offset_delta: i64,
    pub key: Option<&'a [u8]>,
    /// None: a tombstone (null value).
    pub value: Option<&'a [u8]>,
    /// The record from its offset delta to its end (offset delta, key, value, headers): what
    /// a record rewritten with another timestamp delta keeps as it was.
    pub after_timestamp: &'a [u8],
    /// The record's headers section (count, then each key and value).
    pub headers: &'a [u8],
}

/// The `count` records of a decompressed records section, in order; an error for bytes that
/// are not exactly `count` records.
pub fn records(section: &[u8], count: i32) -> Result<Vec<RecordView<'_>>, ScanError> {
    let bad = |why: &str| ScanError::Records(why.to_string());
    let mut out = Vec::with_capacity(usize::try_from(count).unwrap_or(0).min(section.len()));
    let mut at = 0usize;
    for _ in 0..count.max(0) {
        let mut cursor = &section[at..];
        let length = read_varlong(&mut cursor).map_err(damaged)?;
        let header_bytes = section.len() - at - cursor.len();
        let length = usize::try_from(length).map_err(|_| bad("negative record length"))?;
        if length > cursor.len() || length < 1 {
            return Err(bad("record length past the records"));
        }
        let whole = &section[at..at + header_bytes + length];
        let mut body = &cursor[1..length];
        let timestamp_delta = read_varlong(&mut body).map_err(damaged)?;
        let after_timestamp = body;
        let offset_delta = read_varlong(&mut body).map_err(damaged)?;
        let key = read_bytes(&mut body)?;
        let value = read_bytes(&mut body)?;
        out.push(RecordView {
            bytes: whole,
            timestamp_delta,
            offset_delta,
            key,
            value,
            after_timestamp,
            headers: body,
        });
        at += header_bytes + length;
    }
    if at != section.len() {
        return Err(bad("bytes after the last record"));
    }
    Ok(out)
}

/// A record's key and value, copied (either may be null).
pub type KeyValue = (Option<Vec<u8>>, Option<Vec<u8>>);

/// The key and value of the record at `offset` in `batches` (whole stored batches, as a read
/// returns them), each copied; None when no batch holds it (compacted away, or a read that
/// did not reach it). Decompresses at most `decompressed_max` bytes of its batch.
pub fn key_value_at(batches: &[u8], offset: i64, decompressed_max: u64) -> Option<KeyValue> {
    let mut at = 0usize;
    while at < batches.len() {
        let header = BatchHeader::parse(&batches[at..]).ok()?;
        let size = header.size_bytes();
        if size < BATCH_HEADER_BYTES || at + size > batches.len() {
            return None;
        }
        let base = header.base_offset().0;
        if !header.is_control() && (base..=header.last_offset().0).contains(&offset) {
            let section = decompress_records(&batches[at..at + size], decompressed_max).ok()?;
            let found = records(&section, header.records_count()).ok()?;
            let record = found.iter().find(|r| base.saturating_add(r.offset_delta) == offset)?;
            return Some((record.key.map(<[u8]>::to_vec), record.value.map(<[u8]>::to_vec)));
        }
        at += size;
    }
    None
}

/// A record header: its key and value (None: a null value).
pub type Header<'a> = (&'a [u8], Option<&'a [u8]>);

/// The headers of a record (`RecordView::headers`): each key and value (None: a null value),
/// in order; an error for bytes that are not exactly the headers they announce.
pub fn record_headers(section: &[u8]) -> Result<Vec<Header<'_>>, ScanError> {
    let mut input = section;
    let count = read_varlong(&mut input).map_err(damaged)?;
    let count = usize::try_from(count).map_err(|_| ScanError::Records("negative count".into()))?;
    let mut out = Vec::with_capacity(count.min(section.len()));
    for _ in 0..count {
        let Some(key) = read_bytes(&mut input)? else {
            return Err(ScanError::Records("a header with a null key".into()));
        };
        let value = read_bytes(&mut input)?;
        out.push((key, value));
    }
    if !input.is_empty() {
        return Err(ScanError::Records("bytes after the last header".into()));
    }
    Ok(out)
}

/// A varint-length byte string (-1: null) at the start of `input`, which moves past it.
fn read_bytes<'a>(input: &mut &'a [u8]) -> Result<Option<&'a [u8]>, ScanError> {
    let length = read_varlong(input).map_err(damaged)?;
    if length < 0 {
        return Ok(None);
    }
    let length = length as usize;
    if length > input.len() {
        return Err(ScanError::Records("field length past the record".into()));
    }
    let (field, rest) = input.split_at(length);
    *input = rest;
    Ok(Some(field))
}

/// Appends `value` as a zigzag varint (Kafka's record fields).
pub fn put_varlong(out: &mut Vec<u8>, value: i64) {
    let mut zigzag = ((value << 1) ^ (value >> 63)) as u64;
    while zigzag >= 0x80 {
        out.push((zigzag as u8) | 0x80);
        zigzag >>= 7;
    }
    out.push(zigzag as u8);
}

/// The indexes in `batch` of its records without a key (a compacted topic refuses the batch
/// when there is one, as Kafka does, naming them). Err for records that cannot be read
/// within the bound.
pub fn keyless_records(batch: &[u8], decompressed_max: u64) -> Result<Vec<i32>, ScanError> {
    let header = BatchHeader::parse(batch).map_err(|_| ScanError::Header)?;
    let section = decompress_records(batch, decompressed_max)?;
    let records = records(&section, header.records_count())?;
    Ok((0..records.len() as i32).filter(|i| records[*i as usize].key.is_none()).collect())
}

fn damaged(e: io::Error) -> ScanError {
    ScanError::Records(e.to_string())
}

/// How many decompressed bytes the scan may still read. Shared by the snappy reader (whose
/// blocks say their length before they are decompressed) and the record parser.
struct Budget {
    left: std::cell::Cell<u64>,
    spent: std::cell::Cell<bool>,
}

impl Budget {
    fn new(bytes: u64) -> Budget {
        Budget { left: std::cell::Cell::new(bytes), spent: std::cell::Cell::new(false) }
    }

    /// Takes `bytes` from the budget, or marks it spent and says no.
    fn take(&self, bytes: u64) -> bool {
        match self.left.get().checked_sub(bytes) {
            Some(left) => {
                self.left.set(left);
                true
            }
            None => {
                self.spent.set(true);
                false
            }
        }
    }

    fn spent(&self) -> bool {
        self.spent.get()
    }
}

/// Parses records from `input` until one is at or after `timestamp`.
fn scan(
    input: impl Read,
    header: &BatchHeader<'_>,
    timestamp: i64,
    budget: &Budget,
) -> io::Result<Found> {
    let mut input = Metered { inner: input, budget };
    let base_timestamp = header.base_timestamp();
    for _ in 0..header.records_count().max(0) {
        let length = read_varlong(&mut input)?;
        let before = input.budget.left.get();
        let mut attributes = [0u8; 1];
        input.read_exact(&mut attributes)?;
        let record_timestamp = base_timestamp.wrapping_add(read_varlong(&mut input)?);
        let offset_delta = read_varlong(&mut input)?;
        if record_timestamp >= timestamp {
            return Ok(Found::At(Offset(header.base_offset().0 + offset_delta), record_timestamp));
        }
        let read = before - input.budget.left.get();
        let rest = u64::try_from(length)
            .ok()
            .and_then(|length| length.checked_sub(read))
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad record length"))?;
        let skipped = io::copy(&mut (&mut input).take(rest), &mut io::sink())?;
        if skipped < rest {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
    Ok(Found::None)
}

/// A reader that charges every byte it returns to the budget, and ends (an error) when the
/// budget is spent.
struct Metered<'a, R> {
    inner: R,
    budget: &'a Budget,
}

impl<R: Read> Read for Metered<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let room = buf.len().min(usize::try_from(self.budget.left.get()).unwrap_or(usize::MAX));
        if room == 0 && !buf.is_empty() {
            self.budget.spent.set(true);
            return Err(io::Error::other("decompression bound reached"));
        }
        let read = self.inner.read(&mut buf[..room])?;
        self.budget.take(read as u64);
        Ok(read)
    }
}

/// A zigzag varint (up to 64 bits), as Kafka's records use them.
fn read_varlong(input: &mut impl Read) -> io::Result<i64> {
    let mut value: u64 = 0;
    for shift in (0..64).step_by(7) {
        let mut byte = [0u8; 1];
        input.read_exact(&mut byte)?;
        value |= u64::from(byte[0] & 0x7f) << shift;
        if byte[0] & 0x80 == 0 {
            return Ok((value >> 1) as i64 ^ -((value & 1) as i64));
        }
    }
    Err(io::Error::new(io::ErrorKind::InvalidData, "varint longer than 10 bytes"))
}

/// Kafka's snappy: xerial-framed blocks, or one raw snappy block (some clients). Each block
/// says how long it decompresses before it is decompressed; one longer than the budget left
/// is not decompressed at all.
struct Snappy<'a> {
    /// What is left of the compressed input.
    input: &'a [u8],
    framed: bool,
    block: Vec<u8>,
    at: usize,
    budget: &'a Budget,
}

impl<'a> Snappy<'a> {
    fn new(input: &'a [u8], budget: &'a Budget) -> Snappy<'a> {
        let framed = input.len() >= XERIAL_HEADER_BYTES && input.starts_with(XERIAL_MAGIC);
        let input = if framed { &input[XERIAL_HEADER_BYTES..] } else { input };
        Snappy { input, framed, block: Vec::new(), at: 0, budget }
    }

    /// Decompresses the next block into `block`; false at the end of the input.
    fn next_block(&mut self) -> io::Result<bool> {
        if self.input.is_empty() {
            return Ok(false);
        }
        let compressed = if self.framed {
            let Some((length, rest)) = self.input.split_first_chunk::<4>() else {
                return Err(io::ErrorKind::UnexpectedEof.into());
            };
            let length = u32::from_be_bytes(*length) as usize;
            if rest.len() < length {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            let (block, rest) = rest.split_at(length);
            self.input = rest;
            block
        } else {
            std::mem::take(&mut self.input)
        };
        let length = snap::raw::decompress_len(compressed).map_err(io::Error::other)?;
        // The block's bytes are charged when the parser reads them; checking against what is
        // left here only keeps a block that claims gigabytes from being allocated.
        if length as u64 > self.budget.left.get() {
            self.budget.spent.set(true);
            return Err(io::Error::other("decompression bound reached"));
        }
        self.block.resize(length, 0);
        snap::raw::Decoder::new()
            .decompress(compressed, &mut self.block)
            .map_err(io::Error::other)?;
        self.at = 0;
        Ok(true)
    }
}

impl Read for Snappy<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.block.len() {
            if !self.next_block()? {
                return Ok(0);
            }
        }
        let n = buf.len().min(self.block.len() - self.at);
        buf[..n].copy_from_slice(&self.block[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::{Bytes, BytesMut};
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };

    const CODECS: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    fn record(offset: i64, timestamp: i64, value: Vec<u8>) -> Record {
        Record {
            transactional: false,
            control: false,
            partition_leader_epoch: 0,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset,
            // kafka-protocol starts a new batch where offset - sequence changes.
            sequence: offset as i32,
            timestamp,
            key: Some(Bytes::from_static(b"key")),
            value: Some(Bytes::from(value)),
            headers: Default::default(),
            delete_horizon: false,
        }
    }

    fn batch(records: &[Record], compression: Compression) -> Vec<u8> {
        let mut out = BytesMut::new();
        let options = RecordEncodeOptions { version: 2, compression };
        RecordBatchEncoder::encode(&mut out, records, &options).unwrap();
        out.to_vec()
    }

    /// Records at offsets 100.. with timestamps 1000, 1010, 1010, 1030, ... (not monotonic
    /// at the end: a producer's clock may step back).
    fn sample() -> Vec<Record> {
        let times = [1000, 1010, 1010, 1030, 1050, 1040, 1060];
        times
            .iter()
            .enumerate()
            .map(|(i, &t)| record(100 + i as i64, t, vec![b'x'; 10 + i * 100]))
            .collect()
    }

    #[test]
    fn finds_the_first_record_at_or_after_with_every_codec() {
        let expected = [
            (0, Found::At(Offset(100), 1000)),
            (1000, Found::At(Offset(100), 1000)),
            (1001, Found::At(Offset(101), 1010)),
            (1010, Found::At(Offset(101), 1010)),
            (1031, Found::At(Offset(104), 1050)),
            (1045, Found::At(Offset(104), 1050)),
            (1051, Found::At(Offset(106), 1060)),
            (1061, Found::None),
        ];
        for codec in CODECS {
            let bytes = batch(&sample(), codec);
            for (timestamp, answer) in expected {
                let found = first_at_or_after(&bytes, timestamp, 1 << 20);
                assert_eq!(found, Ok(answer), "{codec:?} at {timestamp}");
            }
        }
    }

    #[test]
    fn log_append_time_answers_the_first_record_at_the_max_timestamp() {
        let mut records = sample();
        for r in &mut records {
            r.timestamp_type = TimestampType::LogAppend;
            r.timestamp = 5000;
        }
        let bytes = batch(&records, Compression::Lz4);
        assert_eq!(first_at_or_after(&bytes, 4000, 1 << 20), Ok(Found::At(Offset(100), 5000)));
        assert_eq!(first_at_or_after(&bytes, 5001, 1 << 20), Ok(Found::None));
    }

    #[test]
    fn a_batch_that_decompresses_beyond_the_bound_is_not_decompressed_past_it() {
        // 8 MiB of zeros after an early record: a few KiB compressed.
        let records = vec![record(0, 10, vec![0; 8 << 20]), record(1, 20, vec![1])];
        for codec in CODECS {
            let bytes = batch(&records, codec);
            assert_eq!(first_at_or_after(&bytes, 15, 1 << 20), Ok(Found::Bounded), "{codec:?}");
            // The first record itself is read within the bound, whatever follows it.
            assert_eq!(first_at_or_after(&bytes, 5, 1 << 20), Ok(Found::At(Offset(0), 10)));
            let whole = first_at_or_after(&bytes, 15, 16 << 20);
            assert_eq!(whole, Ok(Found::At(Offset(1), 20)), "{codec:?}");
        }
    }

    #[test]
    fn raw_snappy_without_the_xerial_framing_is_read_too() {
        let plain = batch(&sample(), Compression::None);
        let raw = snap::raw::Encoder::new().compress_vec(&plain[BATCH_HEADER_BYTES..]).unwrap();
        let mut bytes = plain[..BATCH_HEADER_BYTES].to_vec();
        bytes.extend_from_slice(&raw);
        let length = (bytes.len() - 12) as i32;
        bytes[8..12].copy_from_slice(&length.to_be_bytes());
        bytes[22] |= 2; // attributes (low byte): snappy
        assert_eq!(first_at_or_after(&bytes, 1031, 1 << 20), Ok(Found::At(Offset(104), 1050)));
    }

    #[test]
    fn damaged_records_are_an_error_not_a_panic() {
        for codec in CODECS {
            let good = batch(&sample(), codec);
            for cut in [BATCH_HEADER_BYTES + 1, good.len() / 2, good.len() - 1] {
                let mut bytes = good.clone();
                for b in &mut bytes[cut..] {
                    *b = 0xff;
                }
                // Any answer but a panic; a wrong "found" is impossible to rule out for
                // uncompressed bytes, an error or None is what damage usually gives.
                let _ = first_at_or_after(&bytes, 1061, 1 << 20);
            }
            assert_eq!(first_at_or_after(&good[..20], 0, 1 << 20), Err(ScanError::Header));
        }
    }

    #[test]
    fn records_are_read_back_with_every_codec_and_keyless_ones_found() {
        for codec in CODECS {
            let mut records = sample();
            records[3].value = None;
            let bytes = batch(&records, codec);
            let section = decompress_records(&bytes, 1 << 20).unwrap();
            let views = super::records(&section, records.len() as i32).unwrap();
            assert_eq!(views.len(), records.len());
            for (view, record) in views.iter().zip(&records) {
                assert_eq!(view.offset_delta, record.offset - 100, "{codec:?}");
                assert_eq!(view.timestamp_delta, record.timestamp - 1000);
                assert_eq!(view.key, record.key.as_deref());
                assert_eq!(view.value, record.value.as_deref());
            }
            assert_eq!(keyless_records(&bytes, 1 << 20), Ok(vec![]));
            records[5].key = None;
            records[2].key = None;
            let keyless = batch(&records, codec);
            assert_eq!(keyless_records(&keyless, 1 << 20), Ok(vec![2, 5]), "{codec:?}");
            assert_eq!(decompress_records(&keyless, 100), Err(ScanError::Bounded));
        }
        let mut out = Vec::new();
        for value in [0i64, -1, 1, 63, -64, 64, 300, i64::MAX, i64::MIN] {
            out.clear();
            put_varlong(&mut out, value);
            assert_eq!(read_varlong(&mut &out[..]).unwrap(), value);
        }
    }
}
