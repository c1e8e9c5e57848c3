//! What the request decoders reserve for an element count read off the wire. kafka-protocol
//! (vendor/kafka-protocol, patched: see its README) reserves a Vec's capacity before it
//! decodes one element; the patch bounds the bytes reserved by the bytes left to decode.
//!
//! This test binary has a global allocator that records the largest single allocation of the
//! current thread. Each case decodes a body that claims 2^31 - 1 elements, followed by
//! `PADDING_BYTES` bytes that cannot start an element (0xfe: a negative string length, an
//! over-long varint; not 0xff, as 0xffff is a null string, which the codec takes), and checks
//! that no allocation was larger than the body. Before the patch, a Metadata body of 64 KiB
//! reserved 64 KiB times the size of a topic (several MB); before the first fix, 2^31 - 1
//! topics (an abort). tests/net_protocol.rs sends such a request to the broker at the
//! frame-size limit.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    CreateTopicsRequest, FetchRequest, MetadataRequest, OffsetFetchRequest, ProduceRequest,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::records::RecordBatchDecoder;

const PADDING_BYTES: usize = 64 * 1024;
const HUGE_COUNT: i32 = i32::MAX;
/// 2^31 - 1 elements as a compact array count (an unsigned varint of count + 1).
const HUGE_COMPACT_COUNT: [u8; 5] = [0xff, 0xff, 0xff, 0xff, 0x07];

struct LargestAllocation;

thread_local! {
    static LARGEST_BYTES: Cell<usize> = const { Cell::new(0) };
}

fn record(size: usize) {
    // `try_with`: the allocator also runs while thread-locals are being torn down.
    let _ = LARGEST_BYTES.try_with(|largest| largest.set(largest.get().max(size)));
}

// SAFETY: every call is forwarded unchanged to the system allocator; `record` only writes a
// const-initialized thread-local Cell, which allocates nothing.
unsafe impl GlobalAlloc for LargestAllocation {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        record(layout.size());
        System.alloc(layout)
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        record(layout.size());
        System.alloc_zeroed(layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        record(new_size);
        System.realloc(ptr, layout, new_size)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static ALLOCATOR: LargestAllocation = LargestAllocation;

/// Runs `decode` and returns its result with the largest allocation it made.
fn largest_allocation_of<T>(decode: impl FnOnce() -> T) -> (T, usize) {
    LARGEST_BYTES.with(|largest| largest.set(0));
    let out = decode();
    (out, LARGEST_BYTES.with(Cell::get))
}

/// `prefix`, then PADDING_BYTES bytes of 0xfe.
fn padded(prefix: &[u8]) -> Bytes {
    let mut body = BytesMut::with_capacity(prefix.len() + PADDING_BYTES);
    body.put_slice(prefix);
    body.put_bytes(0xfe, PADDING_BYTES);
    body.freeze()
}

fn assert_refused_within_the_body<T: Decodable + std::fmt::Debug>(name: &str, prefix: &[u8]) {
    let (version, prefix) = prefix.split_at(2);
    let version = i16::from_be_bytes([version[0], version[1]]);
    let body = padded(prefix);
    let body_bytes = body.len();
    let (decoded, largest) = largest_allocation_of(|| T::decode(&mut body.clone(), version));
    assert!(decoded.is_err(), "{name}: decoded {decoded:?}");
    assert!(largest <= body_bytes, "{name}: reserved {largest} bytes for a body of {body_bytes}");
}

/// A version (2 bytes, big-endian) followed by the body's fields before the huge count.
fn prefix(version: i16, fields: &[&[u8]], count: &[u8]) -> Vec<u8> {
    let mut out = version.to_be_bytes().to_vec();
    for field in fields {
        out.extend_from_slice(field);
    }
    out.extend_from_slice(count);
    out
}

#[test]
fn a_huge_array_count_reserves_no_more_than_the_body() {
    let count = HUGE_COUNT.to_be_bytes();
    // Metadata v1: topics.
    assert_refused_within_the_body::<MetadataRequest>("Metadata v1", &prefix(1, &[], &count));
    // CreateTopics v2: topics (the largest elements of the requests served).
    let create = prefix(2, &[], &count);
    assert_refused_within_the_body::<CreateTopicsRequest>("CreateTopics v2", &create);
    // OffsetFetch v1: group_id "g", then topics.
    let group: &[u8] = &[0, 1, b'g'];
    let offset_fetch = prefix(1, &[group], &count);
    assert_refused_within_the_body::<OffsetFetchRequest>("OffsetFetch v1", &offset_fetch);
    // OffsetFetch v8 (flexible): groups, a compact array.
    let compact = prefix(8, &[], &HUGE_COMPACT_COUNT);
    assert_refused_within_the_body::<OffsetFetchRequest>("OffsetFetch v8", &compact);
    // Fetch v4: replica_id, max_wait_ms, min_bytes, max_bytes, isolation_level, then topics.
    let fetch_fields: &[u8] = &[0xff, 0xff, 0xff, 0xff, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 1, 0, 0];
    let fetch = prefix(4, &[fetch_fields], &count);
    assert_refused_within_the_body::<FetchRequest>("Fetch v4", &fetch);
    // Produce v3: transactional_id null, acks -1, timeout_ms, then topic_data.
    let produce_fields: &[u8] = &[0xff, 0xff, 0xff, 0xff, 0, 0, 0x27, 0x10];
    let produce = prefix(3, &[produce_fields], &count);
    assert_refused_within_the_body::<ProduceRequest>("Produce v3", &produce);
}

/// A magic v2 record batch, uncompressed, with a valid CRC: `records_count` and the bytes of
/// its records are given.
fn record_batch(records_count: i32, records: &[u8]) -> Bytes {
    let mut after_crc = BytesMut::new();
    after_crc.put_i16(0); // attributes
    after_crc.put_i32(0); // last_offset_delta
    after_crc.put_i64(1_700_000_000_000); // base_timestamp
    after_crc.put_i64(1_700_000_000_000); // max_timestamp
    after_crc.put_i64(-1); // producer_id
    after_crc.put_i16(-1); // producer_epoch
    after_crc.put_i32(-1); // base_sequence
    after_crc.put_i32(records_count);
    after_crc.put_slice(records);
    let mut batch = BytesMut::new();
    batch.put_i64(0); // base_offset
    batch.put_i32((4 + 1 + 4 + after_crc.len()) as i32); // batch_length
    batch.put_i32(0); // partition_leader_epoch
    batch.put_i8(2); // magic
    batch.put_u32(crc32c::crc32c(&after_crc));
    batch.put_slice(&after_crc);
    batch.freeze()
}

/// Zigzag varint, as records encode their lengths and counts.
fn varint(value: i32, out: &mut Vec<u8>) {
    let mut zigzag = ((value << 1) ^ (value >> 31)) as u32;
    while zigzag >= 0x80 {
        out.push((zigzag as u8 & 0x7f) | 0x80);
        zigzag >>= 7;
    }
    out.push(zigzag as u8);
}

#[test]
fn a_huge_record_or_header_count_reserves_no_more_than_the_batch() {
    // ListOffsets by timestamp decodes stored batches with RecordBatchDecoder
    // (storage::log::offset_for_timestamp); their counts are the producer's.
    let batch = record_batch(HUGE_COUNT, &[0xfe; PADDING_BYTES]);
    let batch_bytes = batch.len();
    let (decoded, largest) =
        largest_allocation_of(|| RecordBatchDecoder::decode(&mut batch.clone()));
    assert!(decoded.is_err());
    assert!(largest <= batch_bytes, "records: reserved {largest} of {batch_bytes} bytes");

    // One record: attributes, timestamp and offset deltas, null key and value, then 2^31 - 1
    // headers and bytes that cannot start one.
    let mut body = vec![0u8];
    for field in [0, 0, -1, -1, HUGE_COUNT] {
        varint(field, &mut body);
    }
    body.extend_from_slice(&[0xfe; PADDING_BYTES]);
    let mut record = Vec::new();
    varint(body.len() as i32, &mut record);
    record.extend_from_slice(&body);
    let batch = record_batch(1, &record);
    let batch_bytes = batch.len();
    let (decoded, largest) =
        largest_allocation_of(|| RecordBatchDecoder::decode(&mut batch.clone()));
    assert!(decoded.is_err());
    assert!(largest <= batch_bytes, "headers: reserved {largest} of {batch_bytes} bytes");
}

#[test]
fn honest_arrays_still_decode_whole() {
    // Ten thousand topics with empty names: 2 bytes each on the wire, far more in memory, so
    // the Vec starts below the count and grows as the topics decode.
    let mut request = MetadataRequest::default();
    let topic = kafka_protocol::messages::metadata_request::MetadataRequestTopic::default()
        .with_name(Some(StrBytes::from_static_str("").into()));
    request.topics = Some(vec![topic; 10_000]);
    for version in [1, 12] {
        let mut encoded = BytesMut::new();
        request.encode(&mut encoded, version).expect("encode");
        let decoded = MetadataRequest::decode(&mut encoded.freeze(), version).expect("decode");
        assert_eq!(decoded.topics.map(|topics| topics.len()), Some(10_000), "v{version}");
    }
}
