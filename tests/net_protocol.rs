//! The wire edge of the real `spate` binary, driven with raw sockets: pipelined requests are
//! answered in order, broken framing closes only the offending connection, the KIP-511
//! ApiVersions fallback works, and a frame at the size limit that claims a huge array costs
//! no more memory than the frame. Every socket has a timeout, so no test can hang.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, MetadataRequest, MetadataResponse,
    RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

const IO_TIMEOUT: Duration = Duration::from_secs(10);

struct Broker {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Broker {
    fn start() -> Broker {
        Broker::start_with(&[])
    }

    /// Starts the broker with `args` added to the defaults.
    fn start_with(args: &[&str]) -> Broker {
        let dir = tempfile::tempdir().expect("tempdir");
        let port =
            TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        let child = Command::new(env!("CARGO_BIN_EXE_spate"))
            .args(["--listen", &addr.to_string(), "--cores", "2"])
            .arg("--data-dir")
            .arg(dir.path())
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn spate");
        // An answered request, not an accepted connection: the start-up check of the listen
        // address may hold the port for a moment before the shards listen on it.
        let deadline = Instant::now() + Duration::from_secs(30);
        while !answers_api_versions(&addr) {
            assert!(Instant::now() < deadline, "broker did not start answering");
            std::thread::sleep(Duration::from_millis(50));
        }
        Broker { child, addr, _dir: dir }
    }

    fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect_timeout(&self.addr, IO_TIMEOUT).expect("connect");
        stream.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
        stream.set_write_timeout(Some(IO_TIMEOUT)).expect("timeout");
        stream
    }

    /// A fresh connection can still do a full ApiVersions round trip.
    fn still_serves(&self) {
        let mut stream = self.connect();
        send(&mut stream, ApiKey::ApiVersions, 3, 1, &ApiVersionsRequest::default());
        let (correlation_id, mut body) = receive(&mut stream, 0);
        assert_eq!(correlation_id, 1);
        let response = ApiVersionsResponse::decode(&mut body, 3).expect("decode");
        assert_eq!(response.error_code, 0);
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// True when a new connection to `addr` gets an ApiVersions answer.
fn answers_api_versions(addr: &SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = frame(ApiKey::ApiVersions, 3, 1, &ApiVersionsRequest::default());
    if stream.write_all(&request).is_err() {
        return false;
    }
    let mut size = [0u8; 4];
    stream.read_exact(&mut size).is_ok() && i32::from_be_bytes(size) > 0
}

fn frame<T: Encodable>(key: ApiKey, version: i16, correlation_id: i32, body: &T) -> BytesMut {
    let mut header = RequestHeader::default();
    header.request_api_key = key as i16;
    header.request_api_version = version;
    header.correlation_id = correlation_id;
    header.client_id = Some(StrBytes::from_static_str("spate-test"));
    let mut out = BytesMut::new();
    out.put_i32(0);
    header.encode(&mut out, key.request_header_version(version)).expect("header");
    body.encode(&mut out, version).expect("body");
    let size = (out.len() - 4) as i32;
    out[0..4].copy_from_slice(&size.to_be_bytes());
    out
}

fn send<T: Encodable>(stream: &mut TcpStream, key: ApiKey, version: i16, id: i32, body: &T) {
    stream.write_all(&frame(key, version, id, body)).expect("write");
}

/// Reads one response; returns the correlation id and the body after the header.
fn receive(stream: &mut TcpStream, header_version: i16) -> (i32, Bytes) {
    let mut size = [0u8; 4];
    stream.read_exact(&mut size).expect("response size");
    let mut body = vec![0u8; i32::from_be_bytes(size) as usize];
    stream.read_exact(&mut body).expect("response body");
    let mut body = Bytes::from(body);
    let header = ResponseHeader::decode(&mut body, header_version).expect("response header");
    (header.correlation_id, body)
}

/// True when the broker closed the connection (EOF or reset) within the timeout.
fn closed(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 64];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let broker = Broker::start();
    let mut stream = broker.connect();
    let mut burst = BytesMut::new();
    for id in 0..20 {
        if id % 2 == 0 {
            burst.extend_from_slice(&frame(
                ApiKey::ApiVersions,
                3,
                id,
                &ApiVersionsRequest::default(),
            ));
        } else {
            let mut metadata = MetadataRequest::default();
            metadata.topics = Some(Vec::new());
            burst.extend_from_slice(&frame(ApiKey::Metadata, 12, id, &metadata));
        }
    }
    // All twenty in one write: the broker reads them back to back.
    stream.write_all(&burst).expect("write burst");
    for id in 0..20 {
        let header_version = if id % 2 == 0 { 0 } else { 1 };
        let (correlation_id, mut body) = receive(&mut stream, header_version);
        assert_eq!(correlation_id, id, "responses out of order");
        if id % 2 == 1 {
            let metadata = MetadataResponse::decode(&mut body, 12).expect("metadata");
            assert_eq!(metadata.brokers.len(), 1);
        }
    }
}

#[test]
fn an_unknown_api_versions_version_gets_the_v0_fallback() {
    let broker = Broker::start();
    let mut stream = broker.connect();
    // A future client asks ApiVersions v99 with a body we cannot parse.
    let mut request = BytesMut::new();
    request.put_i32(0);
    request.put_i16(ApiKey::ApiVersions as i16);
    request.put_i16(99);
    request.put_i32(7);
    request.put_slice(&[0xde, 0xad, 0xbe, 0xef]);
    let size = (request.len() - 4) as i32;
    request[0..4].copy_from_slice(&size.to_be_bytes());
    stream.write_all(&request).expect("write");
    let (correlation_id, mut body) = receive(&mut stream, 0);
    assert_eq!(correlation_id, 7);
    assert_eq!(body.get_i16(), 35, "UNSUPPORTED_VERSION");
    assert_eq!(body.get_i32(), 1, "one entry: ApiVersions itself");
    assert_eq!((body.get_i16(), body.get_i16(), body.get_i16()), (18, 0, 4));
    // The client retries with a version inside the range, on the same connection.
    send(&mut stream, ApiKey::ApiVersions, 3, 8, &ApiVersionsRequest::default());
    let (correlation_id, mut body) = receive(&mut stream, 0);
    assert_eq!(correlation_id, 8);
    let response = ApiVersionsResponse::decode(&mut body, 3).expect("decode");
    let produce = response.api_keys.iter().find(|k| k.api_key == 0).expect("produce");
    assert_eq!((produce.min_version, produce.max_version), (0, 12));
    // No default-valued tagged fields: librdkafka 2.0 cannot parse them.
    assert!(response.unknown_tagged_fields.is_empty());
    assert_eq!(response.finalized_features_epoch, -1);
    assert!(response.supported_features.is_empty());
}

#[test]
fn an_oversized_frame_closes_the_connection_before_it_is_read() {
    let broker = Broker::start();
    let mut stream = broker.connect();
    // Claims 2 GiB - 1 and sends only the length: the broker must close at once rather than
    // wait for (or allocate) the body.
    stream.write_all(&i32::MAX.to_be_bytes()).expect("write");
    let started = Instant::now();
    assert!(closed(&mut stream), "connection left open");
    assert!(started.elapsed() < IO_TIMEOUT);
    let mut negative = broker.connect();
    negative.write_all(&(-5i32).to_be_bytes()).expect("write");
    assert!(closed(&mut negative));
    broker.still_serves();
}

#[test]
fn garbage_unknown_keys_and_truncated_frames_harm_nobody_else() {
    let broker = Broker::start();
    // A healthy client stays connected through all of it.
    let mut healthy = broker.connect();
    send(&mut healthy, ApiKey::ApiVersions, 3, 1, &ApiVersionsRequest::default());
    receive(&mut healthy, 0);

    let mut garbage = broker.connect();
    garbage.write_all(b"GET / HTTP/1.1\r\nHost: spate\r\n\r\n").expect("write");
    assert!(closed(&mut garbage), "an HTTP request is not a Kafka frame");

    let mut unknown = broker.connect();
    let mut request = BytesMut::new();
    request.put_i32(10);
    request.put_i16(9999);
    request.put_i16(0);
    request.put_i32(1);
    request.put_i16(-1);
    unknown.write_all(&request).expect("write");
    assert!(closed(&mut unknown), "unknown API key");

    let mut unsupported = broker.connect();
    let metadata = MetadataRequest::default();
    send(&mut unsupported, ApiKey::Metadata, 13, 3, &metadata);
    assert!(closed(&mut unsupported), "Metadata v13 is not served");

    let mut truncated = broker.connect();
    let whole = frame(ApiKey::ApiVersions, 3, 4, &ApiVersionsRequest::default());
    truncated.write_all(&whole[..whole.len() - 3]).expect("write");
    drop(truncated);

    let mut short = broker.connect();
    short.write_all(&[0, 0, 0, 3, 1, 2, 3]).expect("write");
    assert!(closed(&mut short), "a frame shorter than a header");

    send(&mut healthy, ApiKey::ApiVersions, 3, 2, &ApiVersionsRequest::default());
    let (correlation_id, _) = receive(&mut healthy, 0);
    assert_eq!(correlation_id, 2);
    broker.still_serves();
}

/// The broker's peak virtual memory and resident set, in bytes (/proc/<pid>/status).
fn memory_bytes(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let field = |name: &str| -> u64 {
        let line = status.lines().find(|l| l.starts_with(name)).expect("field");
        let kib: u64 = line.split_whitespace().nth(1).expect("value").parse().expect("kB");
        kib * 1024
    };
    (field("VmPeak:"), field("VmRSS:"))
}

#[test]
fn a_huge_array_count_in_a_frame_at_the_limit_reserves_no_more_than_the_frame() {
    // A Metadata v1 request of exactly --frame-max-bytes that claims 2^31 - 1 topics, then
    // 0xfe bytes: a negative name length, so no topic decodes (0xffff would be a null name,
    // which the codec takes). kafka-protocol reserved capacity for min(count, bytes left)
    // topics, 32 Mi topics of tens of bytes each here: gigabytes (an abort where they cannot
    // be had). Untouched, they show in the peak virtual size rather than the resident set;
    // both are checked.
    const FRAME_BYTES: usize = 32 * 1024 * 1024;
    const GROWTH_BYTES_MAX: u64 = FRAME_BYTES as u64 + 128 * 1024 * 1024;
    let broker = Broker::start_with(&["--frame-max-bytes", &FRAME_BYTES.to_string()]);
    let send_claiming = |count: i32| {
        let mut request = BytesMut::with_capacity(4 + FRAME_BYTES);
        request.put_i32(FRAME_BYTES as i32);
        request.put_i16(ApiKey::Metadata as i16);
        request.put_i16(1);
        request.put_i32(5);
        request.put_i16(-1); // client_id: null
        request.put_i32(count);
        request.put_bytes(0xfe, 4 + FRAME_BYTES - request.len());
        let mut stream = broker.connect();
        stream.write_all(&request).expect("write");
        assert!(closed(&mut stream), "an undecodable request is closed");
    };
    // The same frame with a count of one first: the frame's own buffers set the baseline.
    send_claiming(1);
    let (peak_before, resident_before) = memory_bytes(broker.child.id());
    send_claiming(i32::MAX);
    let (peak_after, resident_after) = memory_bytes(broker.child.id());
    broker.still_serves();
    let peak_growth = peak_after.saturating_sub(peak_before);
    let resident_growth = resident_after.saturating_sub(resident_before);
    assert!(peak_growth <= GROWTH_BYTES_MAX, "peak virtual size grew by {peak_growth} bytes");
    assert!(resident_growth <= GROWTH_BYTES_MAX, "resident set grew by {resident_growth} bytes");
}
