//! Requests from this node to another broker's client listener, as Kafka's brokers send
//! them to each other: the follower fetchers' Fetch (`replication::fetcher`) and the
//! transaction coordinator's WriteTxnMarkers (`txn::coordinator`). A connection to a
//! registered broker (its advertised host, resolved off the executor when it is a name),
//! and Kafka frames out and in with a bound on the response size.
//!
//! With `--sasl-mechanism-inter-broker-protocol` (Kafka's sasl.mechanism.inter.broker.protocol)
//! every connection logs in first, as a Kafka broker's inter-broker client does
//! (SaslHandshake, then SaslAuthenticate: PLAIN's one message, or SCRAM's two with the
//! server's signature checked), so the other broker's authorizer sees the brokers' user
//! rather than User:ANONYMOUS.

use std::cell::RefCell;
use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use kafka_protocol::messages::{
    ApiKey, RequestHeader, ResponseHeader, SaslAuthenticateRequest, SaslAuthenticateResponse,
    SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

use super::Cluster;
use crate::constants::PEER_IDLE_CONNECTIONS_MAX;
use crate::model::NodeId;
use crate::security::scram::ScramClient;
use crate::security::{nonce, InterBroker, SaslMechanism};

/// Idle connections to other brokers' client listeners, kept for the next request of the
/// same kind (one shard's; each connection carries one request at a time).
#[derive(Default)]
pub struct Pool {
    idle: RefCell<HashMap<NodeId, Vec<TcpStream>>>,
}

impl Pool {
    /// An idle connection to `node`, if one is kept.
    pub fn take(&self, node: NodeId) -> Option<TcpStream> {
        self.idle.borrow_mut().get_mut(&node)?.pop()
    }

    /// Keeps `stream` (after a complete exchange) for the next request to `node`, unless
    /// `PEER_IDLE_CONNECTIONS_MAX` are kept already.
    pub fn give_back(&self, node: NodeId, stream: TcpStream) {
        let mut idle = self.idle.borrow_mut();
        let kept = idle.entry(node).or_default();
        if kept.len() < PEER_IDLE_CONNECTIONS_MAX {
            kept.push(stream);
        }
    }
}

/// Connects to `node`'s client listener (the address it registered) within `timeout`.
pub async fn connect(
    cluster: &Cluster,
    node: NodeId,
    timeout: Duration,
) -> std::io::Result<TcpStream> {
    let view = cluster.view();
    let broker = view.as_ref().and_then(|view| view.broker(node));
    let Some(broker) = broker else {
        return Err(std::io::Error::other(format!("broker {node} is not registered")));
    };
    let ip: std::net::IpAddr = match broker.host.parse() {
        Ok(ip) => ip,
        Err(_) => {
            let text = format!("{}:{}", broker.host, broker.port);
            let resolved = glommio::executor()
                .spawn_blocking(move || {
                    std::net::ToSocketAddrs::to_socket_addrs(&text)?
                        .next()
                        .ok_or_else(|| std::io::Error::other("no address"))
                })
                .await?;
            resolved.ip()
        }
    };
    let address = std::net::SocketAddr::new(ip, broker.port);
    let mut stream = TcpStream::connect_timeout(address, timeout).await?;
    stream.set_nodelay(true)?;
    let login =
        InterBroker::from_config(&cluster.shard.config.security).map_err(std::io::Error::other)?;
    if let Some(login) = login {
        authenticate(&mut stream, &login, timeout).await.map_err(|e| {
            std::io::Error::other(format!("inter-broker login on broker {node} failed: {e}"))
        })?;
    }
    Ok(stream)
}

const SASL_HANDSHAKE_VERSION: i16 = 1;
const SASL_AUTHENTICATE_VERSION: i16 = 2;

/// Logs in on a fresh connection as `login` says (see the module doc).
async fn authenticate(
    stream: &mut TcpStream,
    login: &InterBroker,
    timeout: Duration,
) -> std::io::Result<()> {
    let client_id = || "spate-inter-broker".to_string();
    let mut handshake = SaslHandshakeRequest::default();
    handshake.mechanism = StrBytes::from_string(login.mechanism.name().to_string());
    let answer: SaslHandshakeResponse = exchange(
        stream,
        ApiKey::SaslHandshake,
        SASL_HANDSHAKE_VERSION,
        1,
        client_id(),
        &handshake,
        timeout,
    )
    .await?;
    if answer.error_code != 0 {
        return Err(std::io::Error::other(format!(
            "{} refused (error {}); the broker offers {:?}",
            login.mechanism.name(),
            answer.error_code,
            answer.mechanisms.iter().map(|m| m.to_string()).collect::<Vec<_>>()
        )));
    }
    let mut correlation_id = 1;
    let mut send = |bytes: Vec<u8>| {
        correlation_id += 1;
        let mut request = SaslAuthenticateRequest::default();
        request.auth_bytes = Bytes::from(bytes);
        (correlation_id, request)
    };
    async fn step(
        stream: &mut TcpStream,
        (correlation_id, request): (i32, SaslAuthenticateRequest),
        timeout: Duration,
    ) -> std::io::Result<Bytes> {
        let answer: SaslAuthenticateResponse = exchange(
            stream,
            ApiKey::SaslAuthenticate,
            SASL_AUTHENTICATE_VERSION,
            correlation_id,
            "spate-inter-broker".to_string(),
            &request,
            timeout,
        )
        .await?;
        if answer.error_code != 0 {
            let message = answer.error_message.map(|m| m.to_string()).unwrap_or_default();
            return Err(std::io::Error::other(format!(
                "authentication failed (error {}): {message}",
                answer.error_code
            )));
        }
        Ok(answer.auth_bytes)
    }
    match login.mechanism {
        SaslMechanism::Plain => {
            let message = format!("\0{}\0{}", login.username, login.password).into_bytes();
            step(stream, send(message), timeout).await?;
        }
        SaslMechanism::Scram(mechanism) => {
            let mut client =
                ScramClient::new(mechanism, &login.username, &login.password, &nonce());
            let server_first = step(stream, send(client.first()), timeout).await?;
            let last = client.last(&server_first).map_err(|e| std::io::Error::other(e.0))?;
            let server_final = step(stream, send(last), timeout).await?;
            client.verify(&server_final).map_err(|e| std::io::Error::other(e.0))?;
        }
    }
    Ok(())
}

/// One request frame: length, header v1/v2 for `api_key` at `version`, body.
pub fn encode_request<R: Encodable>(
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    client_id: String,
    request: &R,
) -> std::io::Result<BytesMut> {
    let header = RequestFrame {
        api_key: api_key as i16,
        version,
        header_version: api_key.request_header_version(version),
        correlation_id,
        client_id,
    };
    header.frame(|frame| request.encode(frame, version).map_err(std::io::Error::other))
}

/// A request frame's header fields, for a body that is not one of the codec's messages
/// (Spate's private share call) as much as for one that is (`encode_request`).
pub struct RequestFrame {
    pub api_key: i16,
    pub version: i16,
    /// Kafka's request header version: 1 (client id) or 2 (and tagged fields).
    pub header_version: i16,
    pub correlation_id: i32,
    pub client_id: String,
}

impl RequestFrame {
    /// The frame: its length, the header, then what `body` writes.
    pub fn frame(
        self,
        body: impl FnOnce(&mut BytesMut) -> std::io::Result<()>,
    ) -> std::io::Result<BytesMut> {
        let mut header = RequestHeader::default();
        header.request_api_key = self.api_key;
        header.request_api_version = self.version;
        header.correlation_id = self.correlation_id;
        header.client_id = Some(StrBytes::from_string(self.client_id));
        let mut frame = BytesMut::with_capacity(256);
        frame.put_i32(0);
        header.encode(&mut frame, self.header_version).map_err(std::io::Error::other)?;
        body(&mut frame)?;
        let length = (frame.len() - 4) as i32;
        frame[..4].copy_from_slice(&length.to_be_bytes());
        Ok(frame)
    }
}

/// Reads one response frame of at most `max_bytes`.
pub async fn read_frame(stream: &mut TcpStream, max_bytes: usize) -> std::io::Result<Bytes> {
    let mut length = [0u8; 4];
    stream.read_exact(&mut length).await?;
    let length = i32::from_be_bytes(length);
    let length = usize::try_from(length)
        .ok()
        .filter(|length| *length <= max_bytes)
        .ok_or_else(|| std::io::Error::other(format!("bad response length {length}")))?;
    let mut body = BytesMut::with_capacity(length);
    read_unzeroed(stream, &mut body, length).await?;
    Ok(body.freeze())
}

/// Reads exactly `length` bytes into `buffer` (empty, with room for them), into memory that
/// is not zeroed first: by non-blocking recv(2) straight into its spare capacity, glommio's
/// peek waiting while the socket has nothing (the stream is unbuffered: glommio holds no
/// received bytes of its own that this would pass over).
///
/// Why: a follower's fetch answers carry up to megabytes, and zeroing each buffer before
/// `recv` overwrote it was 5-8% of an RF3 node's CPU (perf). The kernel then faults the
/// fresh pages in inside `recv` (mimalloc returns memory freed a second ago to the system,
/// and the batch cache keeps each answer's batches alive for the shard's last 128 MiB of
/// writes, so no buffer can be reused sooner); what is left saved 3.5% of RF3's broker CPU
/// per record on one machine and 1% on another (ARCHITECTURE, Replication).
async fn read_unzeroed(
    stream: &mut TcpStream,
    buffer: &mut BytesMut,
    length: usize,
) -> std::io::Result<()> {
    debug_assert!(buffer.is_empty() && buffer.capacity() >= length);
    let fd = stream.as_raw_fd();
    while buffer.len() < length {
        let missing = length - buffer.len();
        let spare = &mut buffer.spare_capacity_mut()[..missing];
        // SAFETY: recv writes at most `spare.len()` bytes into `spare`, memory the buffer
        // owns; nothing reads it before `set_len` below counts only what recv wrote.
        let received =
            unsafe { libc::recv(fd, spare.as_mut_ptr().cast(), spare.len(), libc::MSG_DONTWAIT) };
        match received {
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            n if n > 0 => {
                // SAFETY: the first `n` bytes of the spare capacity were just written.
                unsafe { buffer.set_len(buffer.len() + n as usize) };
            }
            _ => {
                let e = std::io::Error::last_os_error();
                match e.kind() {
                    std::io::ErrorKind::WouldBlock => {
                        let mut one = [0u8; 1];
                        let peeked = stream.peek(&mut one).await.map_err(std::io::Error::from)?;
                        if peeked == 0 {
                            return Err(std::io::ErrorKind::UnexpectedEof.into());
                        }
                    }
                    std::io::ErrorKind::Interrupted => {}
                    _ => return Err(e),
                }
            }
        }
    }
    Ok(())
}

/// Decodes a response frame's body: the header must carry `correlation_id`, and nothing may
/// follow the response.
pub fn decode_response<R: Decodable>(
    body: Bytes,
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
) -> std::io::Result<R> {
    let header_version = api_key.response_header_version(version);
    let mut body = response_body(body, header_version, correlation_id)?;
    let response = R::decode(&mut body, version).map_err(std::io::Error::other)?;
    if body.has_remaining() {
        return Err(std::io::Error::other(format!("bytes after the {api_key:?} response")));
    }
    Ok(response)
}

/// A response frame's body after its header (Kafka's response header `header_version`),
/// which must carry `correlation_id`.
pub fn response_body(
    mut body: Bytes,
    header_version: i16,
    correlation_id: i32,
) -> std::io::Result<Bytes> {
    let header =
        ResponseHeader::decode(&mut body, header_version).map_err(std::io::Error::other)?;
    if header.correlation_id != correlation_id {
        return Err(std::io::Error::other(format!(
            "response {} to request {correlation_id}",
            header.correlation_id
        )));
    }
    Ok(body)
}

/// The largest response `exchange` takes (the fetchers read theirs with their own bound).
const RESPONSE_BYTES_MAX: usize = 16 << 20;

/// Sends one request on `stream` and reads its response within `timeout`.
pub async fn exchange<Q: Encodable, R: Decodable>(
    stream: &mut TcpStream,
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    client_id: String,
    request: &Q,
    timeout: Duration,
) -> std::io::Result<R> {
    let frame = encode_request(api_key, version, correlation_id, client_id, request)?;
    let body = send_and_read(stream, &frame, timeout, RESPONSE_BYTES_MAX).await?;
    decode_response(body, api_key, version, correlation_id)
}

/// Writes `frame` (length prefix included) and reads the response frame's body, of at most
/// `max_bytes`, within `timeout`.
async fn send_and_read(
    stream: &mut TcpStream,
    frame: &[u8],
    timeout: Duration,
    max_bytes: usize,
) -> std::io::Result<Bytes> {
    stream.write_all(frame).await?;
    glommio::timer::timeout(timeout, async {
        read_frame(stream, max_bytes).await.map_err(glommio::GlommioError::from)
    })
    .await
    .map_err(|e| std::io::Error::other(e.to_string()))
}

/// One request to `node` and its response within `timeout`, on a connection the shard keeps
/// (`round_trip`).
pub async fn call<Q: Encodable, R: Decodable>(
    cluster: &Cluster,
    node: NodeId,
    api_key: ApiKey,
    version: i16,
    request: &Q,
    timeout: Duration,
) -> std::io::Result<R> {
    let client_id = format!("spate-broker-{}", cluster.shard.config.node_id.0);
    let correlation_id = 1;
    let frame = encode_request(api_key, version, correlation_id, client_id, request)?;
    let body = round_trip(cluster, node, &frame, timeout, timeout, RESPONSE_BYTES_MAX).await?;
    decode_response(body, api_key, version, correlation_id)
}

/// One request frame (`frame`, length prefix included) to `node` and the body of its
/// response frame (at most `max_bytes`, within `timeout`), on a connection the shard keeps
/// (`Cluster::peers`), or a new one connected within `connect_timeout`. A kept connection
/// that fails is replaced once: the other broker may have closed it while it was idle.
pub async fn round_trip(
    cluster: &Cluster,
    node: NodeId,
    frame: &[u8],
    connect_timeout: Duration,
    timeout: Duration,
    max_bytes: usize,
) -> std::io::Result<Bytes> {
    let mut failure = std::io::Error::other("no connection");
    for kept in [true, false] {
        let mut stream = match kept {
            true => match cluster.peers.take(node) {
                Some(stream) => stream,
                None => continue,
            },
            false => connect(cluster, node, connect_timeout).await?,
        };
        match send_and_read(&mut stream, frame, timeout, max_bytes).await {
            Ok(body) => {
                cluster.peers.give_back(node, stream);
                return Ok(body);
            }
            Err(e) => failure = e,
        }
    }
    Err(failure)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::{WriteTxnMarkersRequest, WriteTxnMarkersResponse};

    #[test]
    fn a_request_frame_carries_its_length_and_header() {
        let request = WriteTxnMarkersRequest::default();
        let frame = encode_request(ApiKey::WriteTxnMarkers, 1, 7, "me".into(), &request).unwrap();
        let length = i32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
        assert_eq!(length, frame.len() - 4);
        let mut body = Bytes::copy_from_slice(&frame[4..]);
        let header =
            RequestHeader::decode(&mut body, ApiKey::WriteTxnMarkers.request_header_version(1))
                .unwrap();
        assert_eq!((header.request_api_key, header.correlation_id), (27, 7));
        assert_eq!(WriteTxnMarkersRequest::decode(&mut body, 1).unwrap(), request);
    }

    /// Frames arrive whole, in pieces with pauses, and cut short (an error, not a short
    /// frame); an announced length over the bound is refused.
    #[test]
    fn a_frame_is_read_whole_whatever_pieces_it_comes_in() {
        let body: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let expected = body.clone();
        let outcomes = glommio::LocalExecutorBuilder::default()
            .spawn(move || async move {
                let listener = glommio::net::TcpListener::bind("127.0.0.1:0").expect("bind");
                let address = listener.local_addr().expect("address");
                let writer = std::thread::spawn(move || {
                    use std::io::Write;
                    let pause = || std::thread::sleep(Duration::from_millis(20));
                    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
                    frame.extend_from_slice(&body);
                    let mut socket = std::net::TcpStream::connect(address).expect("connect");
                    socket.write_all(&frame).expect("whole");
                    for piece in frame.chunks(70_001) {
                        pause();
                        socket.write_all(piece).expect("piece");
                    }
                    socket.write_all(&(1u32 << 30).to_be_bytes()).expect("oversized");
                    let mut second = std::net::TcpStream::connect(address).expect("connect");
                    second.write_all(&frame[..frame.len() / 2]).expect("half");
                });
                let mut first = listener.accept().await.expect("accept");
                let whole = read_frame(&mut first, 1 << 20).await.map(|b| b.to_vec());
                let pieces = read_frame(&mut first, 1 << 20).await.map(|b| b.to_vec());
                let oversized = read_frame(&mut first, 1 << 20).await.is_err();
                let mut second = listener.accept().await.expect("accept");
                // The writer's end closes when its thread ends: the read then meets EOF.
                let cut = read_frame(&mut second, 1 << 20).await.map_err(|e| e.kind());
                writer.join().expect("writer");
                (whole.expect("whole"), pieces.expect("pieces"), oversized, cut)
            })
            .expect("executor")
            .join()
            .expect("join");
        assert!(outcomes.0 == expected && outcomes.1 == expected);
        assert!(outcomes.2, "a length over the bound is refused");
        assert_eq!(outcomes.3.map(|b| b.len()), Err(std::io::ErrorKind::UnexpectedEof));
    }

    #[test]
    fn a_response_must_answer_this_request_and_end_where_it_ends() {
        let mut header = ResponseHeader::default();
        header.correlation_id = 5;
        let version = ApiKey::WriteTxnMarkers.response_header_version(1);
        let mut frame = BytesMut::new();
        header.encode(&mut frame, version).unwrap();
        WriteTxnMarkersResponse::default().encode(&mut frame, 1).unwrap();
        let body = frame.freeze();
        let decode = |body: Bytes, id| {
            decode_response::<WriteTxnMarkersResponse>(body, ApiKey::WriteTxnMarkers, 1, id)
        };
        assert!(decode(body.clone(), 5).is_ok());
        assert!(decode(body.clone(), 6).is_err());
        let mut longer = BytesMut::from(&body[..]);
        longer.put_u8(0);
        assert!(decode(longer.freeze(), 5).is_err());
    }
}
