//! The Kafka wire protocol as the native producer (`--client native`) speaks it: request frames,
//! response frames, the set-up exchange (ApiVersions, then Metadata to find the partitions'
//! leader), record batches, and key partitioning. Encoding and decoding are kafka-protocol's;
//! what is here is the framing around them and the buffers the producer reuses.
//!
//! ```text
//!   request:  | size i32 | header (api key, version, correlation id, client id) | body |
//!   response: | size i32 | header (correlation id)                               | body |
//! ```
//!
//! Record batches are v2 (magic 2, CRC-32C), made by kafka-protocol's `RecordBatchEncoder`. Its
//! own lz4 and zstd codecs build a new compression context for every batch (for lz4 an LZ4HC
//! one, level 4, hundreds of KiB to allocate and clear per batch: 5.4 us for a batch of 1 KiB
//! of text, against 0.4 us with a context kept), which costs more than the rest of a
//! one-record request together; the encoder takes a compressor instead, and
//! `BatchEncoder` gives it one whose context lives as long as the producer: lz4 frames at
//! level 0 (lz4's fast mode, librdkafka's default), independent 64 KiB blocks, no checksums
//! beyond the frame header's; zstd at level 3 (zstd's and librdkafka's default). gzip and
//! snappy use the crate's codecs.

use std::cell::RefCell;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::api_versions_request::ApiVersionsRequest;
use kafka_protocol::messages::api_versions_response::ApiVersionsResponse;
use kafka_protocol::messages::metadata_request::{MetadataRequest, MetadataRequestTopic};
use kafka_protocol::messages::metadata_response::MetadataResponse;
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader, TopicName};
use kafka_protocol::protocol::{
    Decodable, Encodable, HeaderVersion, Request, StrBytes, VersionRange,
};
use kafka_protocol::records::{
    Compression as BatchCompression, Record, RecordBatchEncoder, RecordEncodeOptions,
    TimestampType, IEEE, NO_PARTITION_LEADER_EPOCH, NO_PRODUCER_EPOCH, NO_PRODUCER_ID, NO_SEQUENCE,
};

use crate::spec::Compression;

/// Produce v3 is the first with record batches v2; v13 names topics by id instead of by name.
pub const PRODUCE_VERSIONS: VersionRange = VersionRange { min: 3, max: 12 };
/// Metadata v1 is the first that names each partition's leader by node id and lists the
/// brokers with theirs; v13 is the last one kafka-protocol and Spate share.
const METADATA_VERSIONS: VersionRange = VersionRange { min: 1, max: 12 };
/// ApiVersions v3 carries the client's name; a broker that does not know it answers
/// UNSUPPORTED_VERSION in v0's format, and the client asks again in v0.
const API_VERSIONS_VERSION: i16 = 3;
const API_VERSIONS_VERSION_FALLBACK: i16 = 0;
const UNSUPPORTED_VERSION: i16 = 35;
/// The client id every request carries (as librdkafka's `client.id` in `admin::base_config`).
pub const CLIENT_ID: &str = "spate-bench";
/// The largest response frame the client accepts; a Produce response for one partition is
/// under 100 bytes, and a Metadata response for one topic a few KiB.
pub const RESPONSE_FRAME_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Bytes a `FrameReader` asks the socket for at least in one read.
const READ_CHUNK_BYTES_MIN: usize = 16 * 1024;
const FRAME_SIZE_BYTES: usize = 4;
/// lz4 frame header: magic, FLG, BD, up to 8 bytes of content size, 4 of dictionary id, and
/// the header checksum (lz4frame.h's LZ4F_HEADER_SIZE_MAX).
const LZ4_FRAME_HEADER_BYTES_MAX: usize = 19;
/// zstd's default level and librdkafka's (compression.level -1 means the codec's default).
const ZSTD_LEVEL: i32 = 3;

/// A version of an API that both sides serve: the highest in both ranges, if they meet.
pub fn pick_version(ours: VersionRange, broker: Option<VersionRange>) -> Option<i16> {
    let common = ours.intersect(&broker?);
    (!common.is_empty()).then_some(common.max)
}

/// Appends one request frame (size, header, body) to `out`; on an error, appends nothing.
pub fn encode_request<R: Request>(
    out: &mut Vec<u8>,
    header: &RequestHeader,
    body: &R,
    version: i16,
) -> Result<(), String> {
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_SIZE_BYTES]);
    let encoded = header
        .encode(out, R::header_version(version))
        .and_then(|()| body.encode(out, version))
        .map_err(|e| format!("cannot encode a request (API key {}): {e}", R::KEY))
        .and_then(|()| {
            i32::try_from(out.len() - start - FRAME_SIZE_BYTES)
                .map_err(|_| "a request is larger than 2 GiB".to_string())
        });
    match encoded {
        Ok(size) => {
            out[start..start + FRAME_SIZE_BYTES].copy_from_slice(&size.to_be_bytes());
            Ok(())
        }
        Err(message) => {
            // No half frame may stay behind: the stream would be out of step.
            out.truncate(start);
            Err(message)
        }
    }
}

/// A request header for `R` at `version`; the caller sets the correlation id.
pub fn request_header<R: Request>(version: i16) -> RequestHeader {
    let mut header = RequestHeader::default();
    header.request_api_key = R::KEY;
    header.request_api_version = version;
    header.client_id = Some(StrBytes::from_static_str(CLIENT_ID));
    header
}

/// Decodes a response frame's header; returns its correlation id and leaves `frame` at the body.
pub fn response_correlation_id<R: Request>(frame: &mut &[u8], version: i16) -> Result<i32, String> {
    ResponseHeader::decode(frame, R::Response::header_version(version))
        .map(|header| header.correlation_id)
        .map_err(|e| format!("malformed response header: {e}"))
}

/// Cuts response frames out of the bytes read from a socket, in one buffer that is reused:
/// bytes are read to its end, frames are taken from its start, and what is left of a frame
/// moves back to the start when the end runs out of room.
pub struct FrameReader {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl FrameReader {
    pub fn new(capacity: usize) -> FrameReader {
        FrameReader { buf: vec![0; capacity.max(READ_CHUNK_BYTES_MIN)], start: 0, end: 0 }
    }

    /// Where the next read goes: at least `READ_CHUNK_BYTES_MIN` bytes, and room for all of a
    /// frame whose size is known.
    pub fn spare(&mut self) -> &mut [u8] {
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
        }
        let pending = self.end - self.start;
        // An oversized frame is an error for `next_frame`, not a reason to allocate it.
        let frame_bytes = self
            .pending_frame_bytes()
            .unwrap_or(0)
            .min(FRAME_SIZE_BYTES + RESPONSE_FRAME_BYTES_MAX);
        let wanted = frame_bytes.max(pending + READ_CHUNK_BYTES_MIN);
        if self.buf.len() - self.start < wanted {
            self.buf.copy_within(self.start..self.end, 0);
            (self.start, self.end) = (0, pending);
            if self.buf.len() < wanted {
                self.buf.resize(wanted, 0);
            }
        }
        &mut self.buf[self.end..]
    }

    /// Takes `read` bytes that were read into `spare()`.
    pub fn filled(&mut self, read: usize) {
        assert!(self.end + read <= self.buf.len(), "read past the spare room");
        self.end += read;
    }

    /// The next complete frame without its size, or `None` until more bytes arrive.
    pub fn next_frame(&mut self) -> Result<Option<&[u8]>, String> {
        let Some(frame_bytes) = self.pending_frame_bytes() else {
            return Ok(None);
        };
        if frame_bytes > FRAME_SIZE_BYTES + RESPONSE_FRAME_BYTES_MAX {
            return Err(format!(
                "a response frame of {} bytes (more than {RESPONSE_FRAME_BYTES_MAX}): the \
                 stream is out of step",
                frame_bytes - FRAME_SIZE_BYTES
            ));
        }
        if self.end - self.start < frame_bytes {
            return Ok(None);
        }
        let frame = self.start + FRAME_SIZE_BYTES..self.start + frame_bytes;
        self.start += frame_bytes;
        Ok(Some(&self.buf[frame]))
    }

    /// Size prefix plus body of the frame at the start, once its size prefix is in.
    fn pending_frame_bytes(&self) -> Option<usize> {
        let prefix = self.buf.get(self.start..self.start + FRAME_SIZE_BYTES)?;
        if self.end - self.start < FRAME_SIZE_BYTES {
            return None;
        }
        let size = i32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
        // A negative size is out of step too; as usize it is above every limit.
        Some(FRAME_SIZE_BYTES + usize::try_from(size).unwrap_or(usize::MAX - FRAME_SIZE_BYTES))
    }
}

/// A connection during set-up: blocking requests, one at a time.
struct SetupConnection {
    stream: TcpStream,
    peer: SocketAddr,
    reader: FrameReader,
    next_correlation_id: i32,
}

impl SetupConnection {
    fn open(address: &str, timeout: Duration) -> Result<SetupConnection, String> {
        let peer = resolve(address)?;
        let stream = TcpStream::connect_timeout(&peer, timeout)
            .map_err(|e| format!("cannot connect to {address} ({peer}): {e}"))?;
        stream
            .set_nodelay(true)
            .and_then(|()| stream.set_read_timeout(Some(timeout)))
            .and_then(|()| stream.set_write_timeout(Some(timeout)))
            .map_err(|e| format!("cannot set up the connection to {address}: {e}"))?;
        Ok(SetupConnection {
            stream,
            peer,
            reader: FrameReader::new(READ_CHUNK_BYTES_MIN),
            next_correlation_id: 0,
        })
    }

    /// Sends one request and returns the correlation id and the raw body of its response.
    fn call<R: Request>(&mut self, body: &R, version: i16) -> Result<Vec<u8>, String> {
        let mut header = request_header::<R>(version);
        header.correlation_id = self.next_correlation_id;
        self.next_correlation_id += 1;
        let mut out = Vec::new();
        encode_request(&mut out, &header, body, version)?;
        let api = api_name(R::KEY);
        self.stream.write_all(&out).map_err(|e| format!("{api} request to {}: {e}", self.peer))?;
        loop {
            if let Some(frame) = self.reader.next_frame()? {
                let mut frame = frame;
                let correlation_id = response_correlation_id::<R>(&mut frame, version)?;
                if correlation_id != header.correlation_id {
                    return Err(format!(
                        "{api} response from {} has correlation id {correlation_id}, not {}",
                        self.peer, header.correlation_id
                    ));
                }
                return Ok(frame.to_vec());
            }
            let read = self
                .stream
                .read(self.reader.spare())
                .map_err(|e| format!("{api} response from {}: {e}", self.peer))?;
            if read == 0 {
                return Err(format!("{} closed the connection before answering {api}", self.peer));
            }
            self.reader.filled(read);
        }
    }

    /// The broker's supported range of every API it names.
    fn api_versions(&mut self) -> Result<Vec<(i16, VersionRange)>, String> {
        let mut request = ApiVersionsRequest::default();
        request.client_software_name = StrBytes::from_static_str(CLIENT_ID);
        request.client_software_version = StrBytes::from_static_str(env!("CARGO_PKG_VERSION"));
        let mut version = API_VERSIONS_VERSION;
        let mut body = self.call(&request, version)?;
        // The error code comes first in every version; UNSUPPORTED_VERSION is written in v0.
        if body.get(..2) == Some(&UNSUPPORTED_VERSION.to_be_bytes()[..]) {
            version = API_VERSIONS_VERSION_FALLBACK;
            body = self.call(&request, version)?;
        }
        let response = ApiVersionsResponse::decode(&mut body.as_slice(), version)
            .map_err(|e| format!("malformed ApiVersions response from {}: {e}", self.peer))?;
        if let Some(error) = ResponseError::try_from_code(response.error_code) {
            return Err(format!("ApiVersions to {}: {error}", self.peer));
        }
        Ok(response
            .api_keys
            .iter()
            .map(|api| (api.api_key, VersionRange { min: api.min_version, max: api.max_version }))
            .collect())
    }

    fn metadata(&mut self, topic: &str, version: i16) -> Result<MetadataResponse, String> {
        let mut wanted = MetadataRequestTopic::default();
        wanted.name = Some(TopicName(StrBytes::from_string(topic.to_string())));
        let mut request = MetadataRequest::default();
        request.topics = Some(vec![wanted]);
        // The bench created the topic (or found it) before; a typo must not create another.
        request.allow_auto_topic_creation = false;
        let body = self.call(&request, version)?;
        MetadataResponse::decode(&mut body.as_slice(), version)
            .map_err(|e| format!("malformed Metadata response from {}: {e}", self.peer))
    }
}

fn api_name(key: i16) -> String {
    ApiKey::try_from(key).map_or_else(|()| format!("API {key}"), |api| format!("{api:?}"))
}

fn broker_range(versions: &[(i16, VersionRange)], key: ApiKey) -> Option<VersionRange> {
    versions.iter().find(|(api, _)| *api == key as i16).map(|(_, range)| *range)
}

/// An IPv4 address of `address` if it has one (as `broker.address.family=v4` makes librdkafka
/// do: a broker may advertise `localhost`), else the first one.
fn resolve(address: &str) -> Result<SocketAddr, String> {
    let addresses: Vec<SocketAddr> =
        address.to_socket_addrs().map_err(|e| format!("cannot resolve {address}: {e}"))?.collect();
    addresses
        .iter()
        .find(|a| a.is_ipv4())
        .or(addresses.first())
        .copied()
        .ok_or_else(|| format!("{address} resolves to no address"))
}

/// What the set-up learnt, and the connection to the leader, ready for Produce requests.
pub struct Session {
    pub stream: TcpStream,
    /// "host:port (node N)", as the Metadata response named the leader.
    pub leader: String,
    pub produce_version: i16,
    pub partitions: i32,
    /// Correlation ids the set-up used on this connection; Produce requests go on from here.
    pub next_correlation_id: i32,
}

/// Connects to `bootstrap`, finds the leader of `topic`'s partitions through Metadata, and
/// returns a connection to that leader with the Produce version both sides serve. All
/// partitions must have one leader: the native producer keeps one connection.
pub fn connect(bootstrap: &str, topic: &str, timeout: Duration) -> Result<Session, String> {
    let mut connection = SetupConnection::open(bootstrap, timeout)?;
    let versions = connection.api_versions()?;
    let metadata_version =
        pick_version(METADATA_VERSIONS, broker_range(&versions, ApiKey::Metadata)).ok_or_else(
            || format!("{bootstrap} serves no Metadata version in {METADATA_VERSIONS}"),
        )?;
    let metadata = connection.metadata(topic, metadata_version)?;
    let (leader_id, partitions) = single_leader(&metadata, topic)?;
    let broker = metadata.brokers.iter().find(|b| b.node_id.0 == leader_id).ok_or_else(|| {
        format!(
            "Metadata names node {leader_id} as leader of {topic} but not \
                                its address"
        )
    })?;
    let address = format!("{}:{}", broker.host.as_str(), broker.port);
    let (connection, versions) = if resolve(&address)? == connection.peer {
        (connection, versions)
    } else {
        let mut leader = SetupConnection::open(&address, timeout)?;
        let versions = leader.api_versions()?;
        (leader, versions)
    };
    let produce_version = pick_version(PRODUCE_VERSIONS, broker_range(&versions, ApiKey::Produce))
        .ok_or_else(|| {
            format!(
                "{address} serves no Produce version in {PRODUCE_VERSIONS} (record batches v2 \
                 need Produce v3)"
            )
        })?;
    connection.stream.set_read_timeout(None).map_err(|e| format!("{address}: {e}"))?;
    connection.stream.set_write_timeout(None).map_err(|e| format!("{address}: {e}"))?;
    Ok(Session {
        stream: connection.stream,
        leader: format!("{address} (node {leader_id})"),
        produce_version,
        partitions,
        next_correlation_id: connection.next_correlation_id,
    })
}

/// The node id that leads every partition of `topic`, and the partition count.
fn single_leader(metadata: &MetadataResponse, topic: &str) -> Result<(i32, i32), String> {
    let found = metadata
        .topics
        .iter()
        .find(|t| t.name.as_ref().is_some_and(|name| name.0.as_str() == topic))
        .ok_or_else(|| format!("Metadata has no topic {topic}"))?;
    if let Some(error) = ResponseError::try_from_code(found.error_code) {
        return Err(format!("Metadata for {topic}: {error}"));
    }
    if found.partitions.is_empty() {
        return Err(format!("Metadata for {topic}: no partitions"));
    }
    let mut leaders: Vec<i32> = Vec::new();
    for partition in &found.partitions {
        if let Some(error) = ResponseError::try_from_code(partition.error_code) {
            return Err(format!("Metadata for {topic}/{}: {error}", partition.partition_index));
        }
        if partition.leader_id.0 < 0 {
            return Err(format!("{topic}/{} has no leader", partition.partition_index));
        }
        if !leaders.contains(&partition.leader_id.0) {
            leaders.push(partition.leader_id.0);
        }
    }
    // Partition indexes are 0..n; a gap would leave records with nowhere to go.
    let count = found.partitions.len() as i32;
    if (0..count).any(|p| !found.partitions.iter().any(|q| q.partition_index == p)) {
        return Err(format!("Metadata for {topic}: partition indexes are not 0..{count}"));
    }
    match leaders.as_slice() {
        [leader] => Ok((*leader, count)),
        _ => Err(format!(
            "the partitions of {topic} are led by {} brokers (nodes {leaders:?}); --client \
             native keeps one connection, to one leader: use --client librdkafka",
            leaders.len()
        )),
    }
}

/// The partition of a keyed record: CRC-32 of the key modulo the partitions, as librdkafka's
/// default partitioner (`consistent_random`) does, so that both clients put a key in the same
/// partition.
pub fn partition_for_key(key: &[u8], partitions: i32) -> i32 {
    assert!(partitions > 0);
    (IEEE.checksum(key) % partitions as u32) as i32
}

/// Compression contexts that outlive one batch.
enum Codec {
    /// The crate's codec: none, gzip, snappy.
    Builtin,
    Lz4(Lz4Frames),
    Zstd(ZstdFrames),
}

impl Codec {
    fn compress(&mut self, src: &[u8], out: &mut BytesMut) -> Result<(), String> {
        match self {
            Codec::Builtin => Err("no codec of ours for this compression".to_string()),
            Codec::Lz4(lz4) => lz4.compress(src, out),
            Codec::Zstd(zstd) => zstd.compress(src, out),
        }
    }
}

/// Makes one record batch v2 holding one record at a time, reusing its buffers: the record's
/// value and key are written in place (`value_mut`), frozen into `Bytes` for the encoder, and
/// their memory comes back when the batch is dropped.
pub struct BatchEncoder {
    options: RecordEncodeOptions,
    codec: RefCell<Codec>,
    record: Record,
    value: BytesMut,
    key: BytesMut,
    batch: BytesMut,
}

impl BatchEncoder {
    pub fn new(compression: Compression, value_bytes_max: usize) -> Result<BatchEncoder, String> {
        let (batch_compression, codec) = match compression {
            Compression::None => (BatchCompression::None, Codec::Builtin),
            Compression::Gzip => (BatchCompression::Gzip, Codec::Builtin),
            Compression::Snappy => (BatchCompression::Snappy, Codec::Builtin),
            Compression::Lz4 => (BatchCompression::Lz4, Codec::Lz4(Lz4Frames::new()?)),
            Compression::Zstd => (BatchCompression::Zstd, Codec::Zstd(ZstdFrames::new()?)),
        };
        let record = Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: NO_PARTITION_LEADER_EPOCH,
            producer_id: NO_PRODUCER_ID,
            producer_epoch: NO_PRODUCER_EPOCH,
            timestamp_type: TimestampType::Creation,
            offset: 0,
            sequence: NO_SEQUENCE,
            timestamp: 0,
            key: None,
            value: None,
            headers: Default::default(),
        };
        Ok(BatchEncoder {
            options: RecordEncodeOptions { version: 2, compression: batch_compression },
            codec: RefCell::new(codec),
            record,
            value: BytesMut::with_capacity(value_bytes_max),
            key: BytesMut::new(),
            batch: BytesMut::with_capacity(value_bytes_max + 256),
        })
    }

    /// The next record's value, `size` bytes to fill in.
    pub fn value_mut(&mut self, size: usize) -> &mut [u8] {
        self.value.clear();
        self.value.resize(size, 0);
        &mut self.value[..]
    }

    /// A batch of one record: the value last filled in through `value_mut`, this key (none for
    /// an empty one) and this timestamp (ms). Drop the batch before the next call, so that the
    /// buffers are reused.
    pub fn encode(&mut self, key: &[u8], timestamp_ms: i64) -> Result<Bytes, String> {
        self.record.value = Some(self.value.split().freeze());
        self.record.key = (!key.is_empty()).then(|| {
            self.key.clear();
            self.key.extend_from_slice(key);
            self.key.split().freeze()
        });
        self.record.timestamp = timestamp_ms;
        self.batch.clear();
        let records = std::slice::from_ref(&self.record);
        let encoded = if matches!(*self.codec.borrow(), Codec::Builtin) {
            RecordBatchEncoder::encode(&mut self.batch, records, &self.options)
        } else {
            let codec = &self.codec;
            let compress = |src: &mut BytesMut, out: &mut BytesMut, _: BatchCompression| {
                codec.borrow_mut().compress(src, out).map_err(anyhow::Error::msg)
            };
            RecordBatchEncoder::encode_with_custom_compression(
                &mut self.batch,
                records,
                &self.options,
                Some(compress),
            )
        };
        // Give the value and key back, so that their buffers are unique again.
        self.record.value = None;
        self.record.key = None;
        encoded.map_err(|e| format!("cannot encode a record batch: {e}"))?;
        Ok(self.batch.split().freeze())
    }
}

/// One lz4 compression context (`LZ4F_cctx`) for every frame of a producer.
struct Lz4Frames {
    context: lz4_sys::LZ4FCompressionContext,
    scratch: Vec<u8>,
}

impl Lz4Frames {
    fn new() -> Result<Lz4Frames, String> {
        let mut context = lz4_sys::LZ4FCompressionContext(std::ptr::null_mut());
        // SAFETY: creates a context and writes its pointer into `context`; freed in Drop.
        let code =
            unsafe { lz4_sys::LZ4F_createCompressionContext(&mut context, lz4_sys::LZ4F_VERSION) };
        lz4_check(code, "LZ4F_createCompressionContext")?;
        Ok(Lz4Frames { context, scratch: Vec::new() })
    }

    fn preferences() -> lz4_sys::LZ4FPreferences {
        lz4_sys::LZ4FPreferences {
            frame_info: lz4_sys::LZ4FFrameInfo {
                block_size_id: lz4_sys::BlockSize::Max64KB,
                block_mode: lz4_sys::BlockMode::Independent,
                content_checksum_flag: lz4_sys::ContentChecksum::NoChecksum,
                frame_type: lz4_sys::FrameType::Frame,
                content_size: 0,
                dict_id: 0,
                block_checksum_flag: lz4_sys::BlockChecksum::NoBlockChecksum,
            },
            compression_level: 0,
            // Compress each update straight into the output, without lz4's block buffer.
            auto_flush: 1,
            favor_dec_speed: 0,
            reserved: [0; 3],
        }
    }

    /// Appends one lz4 frame of `src` to `out`.
    fn compress(&mut self, src: &[u8], out: &mut BytesMut) -> Result<(), String> {
        let preferences = Lz4Frames::preferences();
        // SAFETY: reads the preferences only.
        let bound = unsafe { lz4_sys::LZ4F_compressBound(src.len(), &preferences) };
        lz4_check(bound, "LZ4F_compressBound")?;
        let capacity = bound + LZ4_FRAME_HEADER_BYTES_MAX;
        if self.scratch.len() < capacity {
            self.scratch.resize(capacity, 0);
        }
        let dst = self.scratch.as_mut_ptr();
        let mut written = 0;
        // SAFETY: each call writes at most the capacity it is given, from dst + written, inside
        // `scratch` (capacity bytes long); src is read only; the context is ours alone.
        unsafe {
            let header = lz4_sys::LZ4F_compressBegin(self.context, dst, capacity, &preferences);
            written += lz4_check(header, "LZ4F_compressBegin")?;
            let body = lz4_sys::LZ4F_compressUpdate(
                self.context,
                dst.add(written),
                capacity - written,
                src.as_ptr(),
                src.len(),
                std::ptr::null(),
            );
            written += lz4_check(body, "LZ4F_compressUpdate")?;
            let end = lz4_sys::LZ4F_compressEnd(
                self.context,
                dst.add(written),
                capacity - written,
                std::ptr::null(),
            );
            written += lz4_check(end, "LZ4F_compressEnd")?;
        }
        out.put_slice(&self.scratch[..written]);
        Ok(())
    }
}

impl Drop for Lz4Frames {
    fn drop(&mut self) {
        // SAFETY: the context was created in `new` and is freed once, here.
        unsafe { lz4_sys::LZ4F_freeCompressionContext(self.context) };
    }
}

fn lz4_check(code: usize, call: &str) -> Result<usize, String> {
    // SAFETY: LZ4F_isError and LZ4F_getErrorName read a code; the name is a static C string.
    unsafe {
        if lz4_sys::LZ4F_isError(code) == 0 {
            return Ok(code);
        }
        let name = std::ffi::CStr::from_ptr(lz4_sys::LZ4F_getErrorName(code));
        Err(format!("{call}: {}", name.to_string_lossy()))
    }
}

/// One zstd compression context for every frame of a producer.
struct ZstdFrames {
    compressor: zstd::bulk::Compressor<'static>,
    scratch: Vec<u8>,
}

impl ZstdFrames {
    fn new() -> Result<ZstdFrames, String> {
        let compressor = zstd::bulk::Compressor::new(ZSTD_LEVEL)
            .map_err(|e| format!("cannot create a zstd context: {e}"))?;
        Ok(ZstdFrames { compressor, scratch: Vec::new() })
    }

    fn compress(&mut self, src: &[u8], out: &mut BytesMut) -> Result<(), String> {
        self.scratch.clear();
        self.scratch.reserve(zstd::zstd_safe::compress_bound(src.len()));
        self.compressor
            .compress_to_buffer(src, &mut self.scratch)
            .map_err(|e| format!("zstd: {e}"))?;
        out.put_slice(&self.scratch);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::metadata_response::{
        MetadataResponsePartition, MetadataResponseTopic,
    };
    use kafka_protocol::messages::{BrokerId, ProduceRequest};
    use kafka_protocol::protocol::decode_request_header_from_buffer;
    use kafka_protocol::records::RecordBatchDecoder;

    #[test]
    fn versions_are_the_highest_both_serve() {
        let range = |min, max| Some(VersionRange { min, max });
        assert_eq!(pick_version(PRODUCE_VERSIONS, range(0, 12)), Some(12));
        assert_eq!(pick_version(PRODUCE_VERSIONS, range(0, 13)), Some(12), "v13 needs ids");
        assert_eq!(pick_version(PRODUCE_VERSIONS, range(0, 7)), Some(7));
        assert_eq!(pick_version(PRODUCE_VERSIONS, range(0, 2)), None, "no batches v2");
        assert_eq!(pick_version(PRODUCE_VERSIONS, None), None, "no Produce at all");
    }

    #[test]
    fn request_frames_carry_their_size_and_header() {
        let mut request = ProduceRequest::default();
        request.acks = -1;
        request.timeout_ms = 1234;
        let mut out = vec![9, 9];
        for (correlation_id, version) in [(7, 3), (8, 9), (9, 12)] {
            let mut header = request_header::<ProduceRequest>(version);
            header.correlation_id = correlation_id;
            out.truncate(2);
            encode_request(&mut out, &header, &request, version).expect("encodes");
            assert_eq!(&out[..2], &[9, 9], "appends, leaves what was there");
            let frame = &out[2..];
            let size = i32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize;
            assert_eq!(size, frame.len() - 4);
            let mut body = Bytes::copy_from_slice(&frame[4..]);
            let decoded = decode_request_header_from_buffer(&mut body).expect("header");
            assert_eq!(decoded.request_api_key, ApiKey::Produce as i16);
            assert_eq!(decoded.request_api_version, version);
            assert_eq!(decoded.correlation_id, correlation_id);
            assert_eq!(decoded.client_id.as_ref().map(|c| c.as_str()), Some(CLIENT_ID));
            let back = ProduceRequest::decode(&mut body, version).expect("body");
            assert_eq!(back.acks, -1);
            assert_eq!(back.timeout_ms, 1234);
            assert!(body.is_empty(), "nothing after the body");
        }
    }

    fn frame(body: &[u8]) -> Vec<u8> {
        let mut out = (body.len() as i32).to_be_bytes().to_vec();
        out.extend_from_slice(body);
        out
    }

    /// Feeds `stream` to a reader `chunk` bytes at a time and returns the frames it cuts.
    fn cut(stream: &[u8], chunk: usize) -> Result<Vec<Vec<u8>>, String> {
        let mut reader = FrameReader::new(0);
        let mut frames = Vec::new();
        for mut piece in stream.chunks(chunk) {
            // As a read would: at most what fits in the spare room.
            while !piece.is_empty() {
                let spare = reader.spare();
                let count = piece.len().min(spare.len());
                spare[..count].copy_from_slice(&piece[..count]);
                reader.filled(count);
                piece = &piece[count..];
                while let Some(frame) = reader.next_frame()? {
                    frames.push(frame.to_vec());
                }
            }
        }
        Ok(frames)
    }

    #[test]
    fn frames_come_out_whole_however_the_bytes_arrive() {
        let bodies: Vec<Vec<u8>> = vec![b"one".to_vec(), vec![], vec![7; 40_000], b"last".to_vec()];
        let stream: Vec<u8> = bodies.iter().flat_map(|b| frame(b)).collect();
        for chunk in [1, 3, 4, 5, 1000, READ_CHUNK_BYTES_MIN, stream.len()] {
            assert_eq!(cut(&stream, chunk).expect("well-formed"), bodies, "chunk {chunk}");
        }
    }

    #[test]
    fn out_of_step_sizes_are_errors() {
        assert!(cut(&(-1i32).to_be_bytes(), 4).is_err());
        let mut reader = FrameReader::new(0);
        reader.spare()[..4].copy_from_slice(&i32::MAX.to_be_bytes());
        reader.filled(4);
        assert!(reader.spare().len() <= RESPONSE_FRAME_BYTES_MAX + 4, "no 2 GiB buffer");
        assert!(reader.next_frame().is_err());
        let too_big = (RESPONSE_FRAME_BYTES_MAX as i32 + 1).to_be_bytes();
        assert!(cut(&too_big, 4).is_err());
        assert_eq!(cut(&[0, 0], 2), Ok(vec![]), "half a size is not a frame yet");
    }

    /// Decodes one record batch and checks what every batch must be: magic 2, the CRC-32C of
    /// everything after the CRC, one record.
    fn check_batch(batch: &Bytes) -> Record {
        assert_eq!(batch[16], 2, "magic");
        let length = i32::from_be_bytes([batch[8], batch[9], batch[10], batch[11]]) as usize;
        assert_eq!(length + 12, batch.len(), "batch length covers the rest");
        let crc = u32::from_be_bytes([batch[17], batch[18], batch[19], batch[20]]);
        assert_eq!(crc, crc32c::crc32c(&batch[21..]), "CRC-32C");
        let mut buf = batch.clone();
        let set = RecordBatchDecoder::decode(&mut buf).expect("decodes");
        assert_eq!(set.version, 2);
        assert_eq!(set.records.len(), 1);
        set.records.into_iter().next().expect("one record")
    }

    #[test]
    fn batches_are_v2_with_one_record_and_a_valid_crc_in_every_codec() {
        let codecs = [
            (Compression::None, BatchCompression::None),
            (Compression::Gzip, BatchCompression::Gzip),
            (Compression::Snappy, BatchCompression::Snappy),
            (Compression::Lz4, BatchCompression::Lz4),
            (Compression::Zstd, BatchCompression::Zstd),
        ];
        for (compression, expected) in codecs {
            let mut encoder = BatchEncoder::new(compression, 1024).expect("codec");
            // Several batches: the reused buffers must not leak one record into the next.
            for (round, size) in [1024usize, 100, 1024].into_iter().enumerate() {
                let value: Vec<u8> = (0..size).map(|i| b"abcdefgh"[(i + round) % 8]).collect();
                encoder.value_mut(size).copy_from_slice(&value);
                let key = if round == 1 { &b"key-1"[..] } else { &b""[..] };
                let batch = encoder.encode(key, 1_700_000_000_000 + round as i64).expect("ok");
                let attributes = i16::from_be_bytes([batch[21], batch[22]]);
                assert_eq!(attributes & 7, expected as i16, "{compression:?}");
                let record = check_batch(&batch);
                assert_eq!(record.value.as_deref(), Some(&value[..]), "{compression:?}");
                assert_eq!(record.key.as_deref(), (!key.is_empty()).then_some(key));
                assert_eq!(record.timestamp, 1_700_000_000_000 + round as i64);
                assert_eq!(record.sequence, NO_SEQUENCE);
                assert_eq!(record.producer_id, NO_PRODUCER_ID);
            }
        }
    }

    #[test]
    fn lz4_compresses_text() {
        let mut encoder = BatchEncoder::new(Compression::Lz4, 1024).expect("codec");
        encoder.value_mut(1024).copy_from_slice(&b"spate bench ".repeat(86)[..1024]);
        let batch = encoder.encode(b"", 0).expect("encodes");
        assert!(batch.len() < 300, "1 KiB of repeated text took {} bytes", batch.len());
    }

    #[test]
    fn keys_go_where_librdkafka_puts_them() {
        // CRC-32 (zlib's) of "123456789" is 0xcbf43926, the check value of the algorithm.
        assert_eq!(IEEE.checksum(b"123456789"), 0xcbf4_3926);
        assert_eq!(partition_for_key(b"123456789", 1000), (0xcbf4_3926u32 % 1000) as i32);
        for partitions in 1..10 {
            assert!((0..partitions).contains(&partition_for_key(b"key-7", partitions)));
        }
    }

    fn topic_metadata(leaders: &[i32]) -> MetadataResponse {
        let mut topic = MetadataResponseTopic::default();
        topic.name = Some(TopicName(StrBytes::from_static_str("t")));
        for (index, leader) in leaders.iter().enumerate() {
            let mut partition = MetadataResponsePartition::default();
            partition.partition_index = index as i32;
            partition.leader_id = BrokerId(*leader);
            topic.partitions.push(partition);
        }
        let mut metadata = MetadataResponse::default();
        metadata.topics.push(topic);
        metadata
    }

    #[test]
    fn one_leader_for_all_partitions_or_a_clear_refusal() {
        assert_eq!(single_leader(&topic_metadata(&[3, 3, 3, 3]), "t"), Ok((3, 4)));
        let two = single_leader(&topic_metadata(&[1, 2]), "t").expect_err("two leaders");
        assert!(two.contains("led by 2 brokers") && two.contains("librdkafka"), "{two}");
        assert!(single_leader(&topic_metadata(&[1, -1]), "t").is_err(), "no leader");
        assert!(single_leader(&topic_metadata(&[1]), "other").is_err(), "no such topic");
        assert!(single_leader(&topic_metadata(&[]), "t").is_err(), "no partitions");
    }
}
