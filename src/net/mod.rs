//! The network edge: one listener per shard (SO_REUSEPORT spreads connections over cores),
//! and per connection a reader and a writer, answers strictly in request order.
//!
//! Requests are pipelined, in two stages (see `api`):
//!
//! ```text
//!  socket ──▶ reader ── admit in arrival order ──▶ answer queue ──▶ writer ──▶ socket
//!               │        (produce: offsets,          (in request     (awaits the front
//!               │         writes queued)              order)          answer, gathers
//!               │                                                     those ready behind
//!               └─ waits while the window is full                     it into one write)
//! ```
//!
//! The reader keeps reading while earlier requests are in flight, so one connection can
//! have many produces waiting on the disk at once and the log's group commit writes them
//! together. A produce or fetch is admitted at once and its answer runs as a task of its
//! own; any other request runs whole in its turn, once every earlier answer is written
//! (what Kafka's one-request-at-a-time channel gives). The window bounds a connection to
//! `CONNECTION_REQUESTS_IN_FLIGHT_MAX` requests and `CONNECTION_BYTES_IN_FLIGHT_MAX` request
//! bytes not yet answered, and all of a shard's connections to
//! `SHARD_REQUEST_BYTES_IN_FLIGHT_MAX`; when it is full the reader stops reading the socket,
//! and TCP slows the client down (backpressure), so fast producers cannot exhaust the
//! broker's memory. An acks=0 produce holds its place until its write is done, unanswered.
//!
//! The reader and the writer each hold a handle to the connection's one socket
//! (`socket::Socket`, one descriptor), so neither waits for the other. Whoever ends first
//! shuts the socket down, which ends the other.
//!
//! Hostile or broken clients cost what they send, not what they announce: a frame's buffer
//! grows with the bytes that arrived (a frame announced at 50 MiB and trickled in a byte at a
//! time holds kilobytes), and a connection that sent no whole request for
//! `--connections-max-idle-ms` (Kafka's connections.max.idle.ms) is shut down by the shard's
//! idle sweep (`Connections`), whether it sent nothing or a frame too slowly.

pub mod caps;
pub mod readers;
pub mod socket;
pub mod tls;
pub mod zero_copy;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures::channel::mpsc;
use futures::{FutureExt, StreamExt};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};
use glommio::sync::{Semaphore, StaticPermit};

use crate::api::{self, Admitted, Outcome, Services};
use crate::config::SecurityProtocol;
use crate::constants::{
    ACCEPT_RETRY_MS_MAX, ACCEPT_RETRY_MS_MIN, CONNECTIONS_IDLE_SWEEP_MS,
    CONNECTION_BYTES_IN_FLIGHT_MAX, CONNECTION_REQUESTS_IN_FLIGHT_MAX, FRAME_READ_STEP_BYTES_MAX,
    FRAME_READ_STEP_BYTES_MIN, REPEATED_WARNING_INTERVAL_MS, SHARD_REQUEST_BYTES_IN_FLIGHT_MAX,
    SOCKET_SEND_TIMEOUT_MS,
};
use crate::metrics::ShardMetrics;
use crate::model::ShardId;
use crate::net::caps::PerIp;
use crate::net::readers::Readers;
use crate::net::socket::{FrameInput, Socket};
use crate::net::tls::TlsShared;
use crate::security::{now_ms, Session};
use crate::storage::log::ReadChunk;
use crate::throttle::{Failures, Throttle};

/// Counts requests admitted and not yet answered, so shutdown can wait for them.
#[derive(Default)]
pub struct InFlight {
    pub requests: Cell<usize>,
    pub closing: Cell<bool>,
}

/// Accepts connections on the shard's listeners (`(index in config.listeners, socket)`)
/// until the task is cancelled. `readers` are the shard's threads for catch-up reads.
pub async fn accept_loop(
    services: Rc<Services>,
    listeners: Vec<(usize, TcpListener)>,
    in_flight: Rc<InFlight>,
    readers: Readers,
    per_ip: Option<Arc<PerIp>>,
) {
    let edge = Rc::new(Edge {
        shard_bytes: Rc::new(Semaphore::new(SHARD_REQUEST_BYTES_IN_FLIGHT_MAX as u64)),
        connections: Rc::new(Connections::default()),
        per_ip,
        refused: RefCell::new(Throttle::new(REPEATED_WARNING_INTERVAL_MS)),
    });
    // Cancelled with this loop (a glommio task ends when its handle is dropped).
    let _sweep = glommio::spawn_local(sweep_idle(
        edge.connections.clone(),
        services.shard.config.connections_max_idle_ms,
    ));
    let accepting: Vec<glommio::Task<()>> = listeners
        .into_iter()
        .map(|(index, listener)| {
            glommio::spawn_local(accept_on(
                services.clone(),
                edge.clone(),
                index,
                listener,
                in_flight.clone(),
                readers.clone(),
            ))
        })
        .collect();
    futures::future::join_all(accepting).await;
}

/// What a shard's listeners share: the shard's request window, its open connections and
/// the process's per-address connection counts (`caps`).
struct Edge {
    shard_bytes: Rc<Semaphore>,
    connections: Rc<Connections>,
    per_ip: Option<Arc<PerIp>>,
    /// Refused connections are logged at most once per interval, with a count.
    refused: RefCell<Throttle>,
}

impl Edge {
    /// The connection's place in its address's count, or None when it is over the cap
    /// (logged, throttled: a client looping on reconnects must not flood the log).
    fn admit(
        &self,
        peer: Option<std::net::SocketAddr>,
        shard: ShardId,
    ) -> Option<Option<caps::Slot>> {
        let (Some(per_ip), Some(peer)) = (&self.per_ip, peer) else { return Some(None) };
        match per_ip.admit(peer.ip()) {
            Ok(slot) => Some(Some(slot)),
            Err(cap) => {
                if let Some(held) = self.refused.borrow_mut().admit(now_ms()) {
                    tracing::info!(
                        shard = shard.0,
                        refused_since_last_line = held + 1,
                        "refused a connection from {}: it already has the {cap} connections \
                         --max-connections-per-ip allows it",
                        peer.ip()
                    );
                }
                None
            }
        }
    }
}

async fn accept_on(
    services: Rc<Services>,
    edge: Rc<Edge>,
    index: usize,
    listener: TcpListener,
    in_flight: Rc<InFlight>,
    readers: Readers,
) {
    let protocol = services.shard.config.listeners[index].protocol;
    let started = std::time::Instant::now();
    let mut retries =
        Failures::new(ACCEPT_RETRY_MS_MIN, ACCEPT_RETRY_MS_MAX, REPEATED_WARNING_INTERVAL_MS);
    loop {
        // One descriptor per connection (`socket::Socket`): out of descriptors, the accept
        // fails and is retried below, the connection waiting in the listen queue.
        let accepted = listener.accept().await.map_err(std::io::Error::from);
        match accepted {
            Ok(stream) => {
                let peer = stream.peer_addr().ok();
                // Over its address's cap: closed at once (its descriptor dropped here).
                let Some(slot) = edge.admit(peer, services.shard.id) else {
                    services.shard.metrics.connection_refused(index);
                    continue;
                };
                let services = services.clone();
                let in_flight = in_flight.clone();
                let readers = readers.clone();
                let window = Rc::new(Window::new(edge.shard_bytes.clone()));
                let registered = Registered::new(&edge.connections, stream.as_raw_fd());
                let counted = Counted::new(&services.shard.metrics, index);
                glommio::spawn_local(async move {
                    let activity = registered.activity.clone();
                    let connection = Connection {
                        services: &services,
                        in_flight: &in_flight,
                        window,
                        readers,
                        activity: &activity,
                    };
                    let served = match protocol.tls() {
                        false => {
                            let session = Rc::new(Session::new(index, protocol, peer, None));
                            connection.serve(stream, session).await
                        }
                        true => connection.serve_tls(stream, index, protocol, peer).await,
                    };
                    // Out of the sweep's sight before anything else runs: the descriptor is
                    // closed now and may be reused.
                    drop(registered);
                    drop(counted);
                    drop(slot);
                    if let Err(reason) = served {
                        tracing::debug!(
                            ?peer,
                            listener = protocol.name(),
                            "connection closed: {reason}"
                        );
                    }
                })
                .detach();
            }
            Err(e) => {
                // Out of descriptors (EMFILE, ENFILE) or kernel memory (ENOBUFS, ENOMEM): the
                // connection waits in the listen queue until a retry succeeds. Retrying at
                // once would spin; logging each failure would flood the log.
                let (wait_ms, line) = retries.failed(started.elapsed().as_millis() as u64);
                if let Some(held) = line {
                    tracing::warn!(
                        shard = services.shard.id.0,
                        failed_since_last_line = held + 1,
                        retry_in_ms = wait_ms,
                        "cannot accept connections: {e}"
                    );
                }
                glommio::timer::sleep(Duration::from_millis(wait_ms)).await;
                continue;
            }
        }
        let failures = retries.succeeded();
        if failures > 0 {
            tracing::info!(shard = services.shard.id.0, failures, "accepting connections again");
        }
    }
}

/// One connection's share of the shard: what its reader and writer use.
struct Connection<'a> {
    services: &'a Rc<Services>,
    in_flight: &'a Rc<InFlight>,
    window: Rc<Window>,
    readers: Readers,
    activity: &'a Rc<Activity>,
}

impl Connection<'_> {
    async fn serve(self, stream: TcpStream, session: Rc<Session>) -> Result<(), String> {
        let (input, output) = Socket::pair(stream, true);
        prepare(&output);
        zero_copy::prepare_socket(&output);
        self.run(input, Output::Plain(output), session).await
    }

    /// A TLS listener's connection: the handshake, then the same reader and writer over
    /// `tls` (the plaintext path is untouched: `read_requests` is generic over its input).
    async fn serve_tls(
        self,
        stream: TcpStream,
        index: usize,
        protocol: SecurityProtocol,
        peer: Option<std::net::SocketAddr>,
    ) -> Result<(), String> {
        // No read buffer: the TLS reader reads ciphertext in large pieces of its own.
        let (input, output) = Socket::pair(stream, false);
        prepare(&output);
        let Some(tls) = &self.services.security.shared.tls else {
            unreachable!("a TLS listener without TLS settings (checked at start-up)");
        };
        let (input, shared, certificate) = match tls::accept(tls.config(), input, output).await {
            Ok(accepted) => accepted,
            Err(reason) => {
                self.services.shard.metrics.authentication_failed(index, "TLS");
                tracing::info!(?peer, listener = protocol.name(), "TLS handshake failed: {reason}");
                return Err(reason);
            }
        };
        let principal = certificate.as_deref().and_then(crate::security::tls::principal_of);
        if let Some(principal) = &principal {
            tracing::info!(
                ?peer,
                principal = %format!("User:{principal}"),
                listener = protocol.name(),
                "authenticated by client certificate"
            );
        }
        let session = Rc::new(Session::new(index, protocol, peer, principal));
        self.run(input, Output::Tls(shared), session).await
    }

    async fn run<R: FrameInput>(
        self,
        input: R,
        output: Output,
        session: Rc<Session>,
    ) -> Result<(), String> {
        let (answers_tx, answers_rx) = mpsc::unbounded();
        let writer = glommio::spawn_local(write_answers(output, answers_rx, self.readers));
        let read = read_requests(
            self.services,
            input,
            &self.window,
            answers_tx,
            self.in_flight,
            &session,
            self.activity,
        )
        .await;
        // The writer drains what was admitted (answers to requests the client sent before it
        // stopped or before a bad frame, as Kafka answers them), then ends.
        let write = writer.await;
        read.and(write)
    }
}

/// Where the writer's answers go.
enum Output {
    Plain(Socket),
    Tls(Rc<TlsShared>),
}

/// The reader: frames off the socket, admitted one at a time in arrival order.
async fn read_requests<R: FrameInput>(
    services: &Rc<Services>,
    mut input: R,
    window: &Rc<Window>,
    answers: mpsc::UnboundedSender<Slot>,
    in_flight: &Rc<InFlight>,
    session: &Rc<Session>,
    activity: &Rc<Activity>,
) -> Result<(), String> {
    let frame_max = services.shard.config.frame_max_bytes as usize;
    loop {
        let mut size = [0u8; 4];
        if let Err(e) = input.read_exact(&mut size).await {
            return match e.kind() {
                std::io::ErrorKind::UnexpectedEof => Ok(()),
                _ => Err(format!("read: {e}")),
            };
        }
        let size = i32::from_be_bytes(size);
        // Refuse before buffering: a huge or negative length never allocates.
        if size < 8 || size as usize > frame_max {
            return Err(format!("frame size {size} outside 8..={frame_max}"));
        }
        // Backpressure: no more reading until the connection's window has room for this
        // request, and no admission until the shard's has.
        let connection_share = window.enter(size as usize).await;
        let frame = match read_body(&mut input, size as usize).await {
            Ok(frame) => frame,
            Err(e) => return Err(format!("read body: {e}")),
        };
        let received = Instant::now();
        activity.last_request_ms.set(now_ms());
        activity.answering.set(activity.answering.get() + 1);
        // Taken once the body is here: a client that announces large frames and never sends
        // them holds only its own connection's window, not the shard's.
        let share = window.enter_shard(connection_share, size as usize).await;
        if in_flight.closing.get() {
            return Err("broker shutting down".into());
        }
        // Counted from here (shutdown waits for it, handler included); the slot that carries
        // the answer gives the count back when it is dropped.
        in_flight.requests.set(in_flight.requests.get() + 1);
        // The size was checked (at least 8 bytes): the API key is the frame's first two.
        let api_key = i16::from_be_bytes([frame[0], frame[1]]);
        let answer = match api::admit(services, frame.freeze(), session).await {
            Admitted::Now(outcome) => Answer::Ready(outcome),
            Admitted::Later(later) => Answer::Running(Some(glommio::spawn_local(later))),
            Admitted::InTurn(request) => {
                window.drain().await;
                Answer::Ready(request.run().await)
            }
        };
        let closes =
            matches!(answer, Answer::Ready(Outcome::Close(_) | Outcome::ReplyAndClose(..)));
        let timing = Timing { api_key, received, metrics: services.shard.metrics.clone() };
        let slot = Slot::new(answer, share, in_flight.clone(), activity.clone(), timing);
        if answers.unbounded_send(slot).is_err() {
            return Err("the writer stopped".into());
        }
        if closes {
            return Ok(());
        }
    }
}

/// Reads a frame body of `size` bytes. A frame that has all arrived in the socket's buffer
/// is taken from it as it is. Otherwise the buffer grows as the bytes arrive, so that a frame
/// announced but not sent costs no more memory than what was sent: each growth is what
/// already arrived (in the socket's buffer and its receive queue), or what came so far
/// (`FRAME_READ_STEP_BYTES_MIN` at first, at most `FRAME_READ_STEP_BYTES_MAX`), whichever is
/// more; the buffer is at most about twice what arrived plus `FRAME_READ_STEP_BYTES_MIN`. (It
/// grew in 1 MiB steps before: 1,000 connections that each announced 50 MiB and sent 100
/// bytes held 1 GiB.) A frame that is all there is read into one buffer of its size.
async fn read_body<R: FrameInput>(input: &mut R, size: usize) -> std::io::Result<BytesMut> {
    if let Some(frame) = input.take_received(size) {
        return Ok(frame);
    }
    if input.receives_uninit() {
        return read_body_unzeroed(input, size).await;
    }
    let mut frame = BytesMut::new();
    let mut filled = 0;
    while filled < size {
        if filled == frame.len() {
            frame.resize(filled + read_step(input, filled, size), 0);
        }
        match input.read(&mut frame[filled..]).await {
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => filled += n,
            Err(e) => return Err(e),
        }
    }
    Ok(frame)
}

/// How much the buffer of a frame body grows by, with `filled` of `size` bytes read (see
/// `read_body`).
fn read_step<R: FrameInput>(input: &R, filled: usize, size: usize) -> usize {
    let step =
        filled.clamp(FRAME_READ_STEP_BYTES_MIN, FRAME_READ_STEP_BYTES_MAX).max(input.received());
    (size - filled).min(step)
}

/// `read_body` for an input that receives into memory not zeroed first (a plain socket):
/// the same growth, without the zeroing, which cost about as much as the receive's own copy
/// (perf: 4% of a node's CPU in an RF3 closed loop, whose produce frames of up to a megabyte
/// mostly arrive in pieces). While nothing has arrived it waits with a read of at most
/// `WAIT_READ_BYTES` into a small buffer (the socket's scratch buffer keeps what else that
/// receive brought, for the next `receive_now`).
async fn read_body_unzeroed<R: FrameInput>(
    input: &mut R,
    size: usize,
) -> std::io::Result<BytesMut> {
    const WAIT_READ_BYTES: usize = 1024;
    let mut frame: Vec<u8> = Vec::new();
    while frame.len() < size {
        if frame.len() == frame.capacity() {
            let step = read_step(input, frame.len(), size);
            frame.reserve_exact(step);
        }
        let room = frame.capacity().min(size) - frame.len();
        match input.receive_now(&mut frame.spare_capacity_mut()[..room]) {
            Some(Ok(0)) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Some(Ok(n)) => {
                debug_assert!(n <= room);
                // SAFETY: `receive_now` wrote the first `n` bytes of the spare capacity.
                unsafe { frame.set_len(frame.len() + n) };
            }
            Some(Err(e)) => return Err(e),
            None => {
                let mut small = [0u8; WAIT_READ_BYTES];
                let want = room.min(WAIT_READ_BYTES);
                match input.read(&mut small[..want]).await {
                    Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                    Ok(n) => frame.extend_from_slice(&small[..n]),
                    Err(e) => return Err(e),
                }
            }
        }
    }
    // Not a copy: the vector is the bytes' only owner.
    Ok(BytesMut::from(bytes::Bytes::from(frame)))
}

/// A shard's open client connections, for the idle sweep.
#[derive(Default)]
struct Connections {
    next_id: Cell<u64>,
    open: RefCell<HashMap<u64, Rc<Activity>>>,
}

/// What the idle sweep knows of one connection.
struct Activity {
    /// `coarse_now_ms` when its last whole request arrived or its last answer was written
    /// (or when it was accepted).
    last_request_ms: Cell<u64>,
    /// Requests received and not yet answered: a connection waiting for an answer (a group
    /// join, a long poll) is not idle, however long it waits.
    answering: Cell<usize>,
    /// The socket's descriptor: shutting it down ends the reader and the writer.
    fd: RawFd,
}

/// A connection's entry in `Connections`, removed when dropped.
struct Registered {
    connections: Rc<Connections>,
    id: u64,
    activity: Rc<Activity>,
}

impl Registered {
    fn new(connections: &Rc<Connections>, fd: RawFd) -> Registered {
        let id = connections.next_id.get();
        connections.next_id.set(id + 1);
        let activity =
            Rc::new(Activity { last_request_ms: Cell::new(now_ms()), answering: Cell::new(0), fd });
        connections.open.borrow_mut().insert(id, activity.clone());
        Registered { connections: connections.clone(), id, activity }
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.connections.open.borrow_mut().remove(&self.id);
    }
}

/// Shuts down connections that sent no whole request for `idle_ms`, checking a few times per
/// `idle_ms` (at least every `CONNECTIONS_IDLE_SWEEP_MS`). O(connections) per sweep, nothing
/// on the request path but one clock read and store per request.
async fn sweep_idle(connections: Rc<Connections>, idle_ms: u64) {
    let every = Duration::from_millis((idle_ms / 4).clamp(1, CONNECTIONS_IDLE_SWEEP_MS));
    loop {
        glommio::timer::sleep(every).await;
        let now = now_ms();
        let mut closed = 0usize;
        for activity in connections.open.borrow().values() {
            let idle = now.saturating_sub(activity.last_request_ms.get());
            if activity.answering.get() == 0 && idle >= idle_ms {
                // The reader's pending read ends (EOF), the writer drains and stops; the
                // entry goes when the connection's task ends. A repeat is harmless.
                // SAFETY: the descriptor is open: an entry leaves `open` right after its
                // socket closes, with no await in between, and this loop does not await.
                unsafe { libc::shutdown(activity.fd, libc::SHUT_RDWR) };
                activity.last_request_ms.set(now);
                closed += 1;
            }
        }
        if closed > 0 {
            tracing::debug!(closed, idle_ms, "closed idle connections");
        }
    }
}

/// The writer: answers in request order. Answers already complete behind the one it waited
/// for go out in the same write, so a pipelining producer costs fewer syscalls per request.
async fn write_answers(
    mut output: Output,
    mut answers: mpsc::UnboundedReceiver<Slot>,
    readers: Readers,
) -> Result<(), String> {
    let result = write_in_order(&mut output, &mut answers, &readers).await;
    // Ends the reader too when this ended first (an error, or a Close answer).
    match &output {
        Output::Plain(stream) => {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
        Output::Tls(shared) => tls::close(shared).await,
    }
    result
}

async fn write_in_order(
    output: &mut Output,
    answers: &mut mpsc::UnboundedReceiver<Slot>,
    readers: &Readers,
) -> Result<(), String> {
    let mut next: Option<Slot> = None;
    let mut chunks: Vec<ReadChunk> = Vec::new();
    let mut written: Vec<Slot> = Vec::new();
    loop {
        let mut slot = match next.take() {
            Some(slot) => slot,
            None => match answers.next().await {
                Some(slot) => slot,
                None => return Ok(()),
            },
        };
        let outcome = slot.wait().await;
        let mut close = push(&mut chunks, outcome, &mut written, slot);
        while close.is_none() && chunks.len() < GATHER_ANSWERS_MAX {
            let Ok(mut slot) = answers.try_recv() else { break };
            match slot.ready() {
                Some(outcome) => close = push(&mut chunks, outcome, &mut written, slot),
                None => {
                    next = Some(slot);
                    break;
                }
            }
        }
        if !chunks.is_empty() {
            let chunks = std::mem::take(&mut chunks);
            match output {
                Output::Plain(stream) => zero_copy::send(stream, chunks, readers).await?,
                Output::Tls(shared) => tls::send(shared, chunks, readers).await?,
            }
        }
        // The window shares go back only once the answers are on the socket.
        written.clear();
        if let Some(reason) = close {
            if let Output::Plain(stream) = output {
                stream.flush().await.map_err(|e| format!("flush: {e}"))?;
            }
            return Err(reason);
        }
    }
}

/// Answers written together at most (each is at least one chunk).
const GATHER_ANSWERS_MAX: usize = 64;

/// Adds an answer's chunks to the write; gives the reason when the answer closes.
fn push(
    chunks: &mut Vec<ReadChunk>,
    outcome: Outcome,
    written: &mut Vec<Slot>,
    slot: Slot,
) -> Option<String> {
    written.push(slot);
    match outcome {
        Outcome::Reply(reply) => {
            chunks.extend(reply);
            None
        }
        Outcome::NoReply => None,
        Outcome::Close(reason) => Some(reason),
        Outcome::ReplyAndClose(reply, reason) => {
            chunks.extend(reply);
            Some(reason)
        }
    }
}

/// The options every accepted socket gets: no Nagle delay, a bound on a blocked send.
fn prepare(socket: &Socket) {
    let _ = socket.set_nodelay(true);
    let _ = socket.set_write_timeout(Some(Duration::from_millis(SOCKET_SEND_TIMEOUT_MS as u64)));
}

/// The in-flight bound of one connection, in requests and in request bytes, and its part of
/// the shard's bound in request bytes (shared by the shard's connections).
struct Window {
    requests: Rc<Semaphore>,
    bytes: Rc<Semaphore>,
    shard_bytes: Rc<Semaphore>,
}

/// One request's share of its connection's window.
struct ConnectionShare {
    request: StaticPermit,
    bytes: StaticPermit,
}

/// One request's share of the windows, given back when its answer is written.
struct Share {
    _request: StaticPermit,
    _bytes: StaticPermit,
    _shard_bytes: StaticPermit,
}

impl Window {
    fn new(shard_bytes: Rc<Semaphore>) -> Window {
        Window {
            requests: Rc::new(Semaphore::new(CONNECTION_REQUESTS_IN_FLIGHT_MAX as u64)),
            bytes: Rc::new(Semaphore::new(CONNECTION_BYTES_IN_FLIGHT_MAX as u64)),
            shard_bytes,
        }
    }

    /// Waits until a request of `size_bytes` fits in the connection's window. A request
    /// larger than the whole window (up to the frame limit) is let in alone.
    async fn enter(&self, size_bytes: usize) -> ConnectionShare {
        let bytes = size_bytes.min(CONNECTION_BYTES_IN_FLIGHT_MAX) as u64;
        let request = self.requests.acquire_static_permit(1).await;
        let bytes = self.bytes.acquire_static_permit(bytes).await;
        // The semaphores are never closed: they live as long as the connection.
        match (request, bytes) {
            (Ok(request), Ok(bytes)) => ConnectionShare { request, bytes },
            _ => unreachable!("connection window closed"),
        }
    }

    /// Then waits until the request fits in the shard's window. Shares are taken in one
    /// order (connection, then shard), and every share comes back as its answer is written,
    /// which never waits for another connection.
    async fn enter_shard(&self, connection: ConnectionShare, size_bytes: usize) -> Share {
        let bytes = size_bytes.min(CONNECTION_BYTES_IN_FLIGHT_MAX) as u64;
        let shard = self.shard_bytes.acquire_static_permit(bytes).await;
        // The shard's semaphore is never closed: it lives as long as the shard.
        let Ok(shard) = shard else { unreachable!("shard window closed") };
        Share { _request: connection.request, _bytes: connection.bytes, _shard_bytes: shard }
    }

    /// Waits until every earlier request is answered (the caller holds its own share).
    async fn drain(&self) {
        let others = CONNECTION_REQUESTS_IN_FLIGHT_MAX as u64 - 1;
        if self.requests.acquire(others).await.is_ok() {
            self.requests.signal(others);
        }
    }
}

/// A request's place in the answer queue: its answer, and what it holds until written.
struct Slot {
    answer: Answer,
    _share: Share,
    in_flight: Rc<InFlight>,
    activity: Rc<Activity>,
    timing: Timing,
}

/// What a request's latency is counted with when its slot goes (its answer written, or
/// its connection gone): the API, when its frame was complete, the shard's counters.
struct Timing {
    api_key: i16,
    received: Instant,
    metrics: Rc<ShardMetrics>,
}

/// A connection in its shard's per-listener counts while it is open.
struct Counted {
    metrics: Rc<ShardMetrics>,
    listener: usize,
}

impl Counted {
    fn new(metrics: &Rc<ShardMetrics>, listener: usize) -> Counted {
        metrics.connection_opened(listener);
        Counted { metrics: metrics.clone(), listener }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.metrics.connection_closed(self.listener);
    }
}

enum Answer {
    Ready(Outcome),
    /// `Some` until taken; a task not awaited when the connection ends is detached, so that
    /// what it still does for others (waking fetches after a write) is not lost.
    Running(Option<glommio::Task<Outcome>>),
    Taken,
}

impl Slot {
    /// The request was counted in `in_flight` before it was admitted; the slot gives it back.
    /// Its connection's `answering` count was taken when the frame arrived; the slot gives
    /// it back too.
    fn new(
        answer: Answer,
        share: Share,
        in_flight: Rc<InFlight>,
        activity: Rc<Activity>,
        timing: Timing,
    ) -> Slot {
        Slot { answer, _share: share, in_flight, activity, timing }
    }

    /// The answer, waiting for it if need be.
    async fn wait(&mut self) -> Outcome {
        match std::mem::replace(&mut self.answer, Answer::Taken) {
            Answer::Ready(outcome) => outcome,
            Answer::Running(Some(task)) => task.await,
            Answer::Running(None) | Answer::Taken => unreachable!("answer taken twice"),
        }
    }

    /// The answer if it is complete, without waiting.
    fn ready(&mut self) -> Option<Outcome> {
        match &mut self.answer {
            Answer::Ready(_) => match std::mem::replace(&mut self.answer, Answer::Taken) {
                Answer::Ready(outcome) => Some(outcome),
                _ => unreachable!(),
            },
            Answer::Running(task) => {
                let outcome = task.as_mut().and_then(|task| task.now_or_never())?;
                self.answer = Answer::Taken;
                Some(outcome)
            }
            Answer::Taken => unreachable!("answer taken twice"),
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Answer::Running(task) = &mut self.answer {
            if let Some(task) = task.take() {
                task.detach();
            }
        }
        self.in_flight.requests.set(self.in_flight.requests.get() - 1);
        self.activity.answering.set(self.activity.answering.get() - 1);
        self.activity.last_request_ms.set(now_ms());
        let elapsed_us = self.timing.received.elapsed().as_micros() as u64;
        self.timing.metrics.request_done(self.timing.api_key, elapsed_us);
    }
}

#[cfg(test)]
mod tests {
    use std::pin::Pin;
    use std::task::{Context as TaskContext, Poll};

    use futures_lite::AsyncRead;

    use super::*;

    /// A stream that has `arrived` bytes of `data` and hands them out in pieces of at most
    /// `piece`; it records the space each read offered. With `uninit`, it receives into
    /// memory not zeroed (`receive_now`), with nothing to give at every third call (the
    /// reader then waits with a small read), and records that space in `received_into`.
    struct Arriving {
        data: Vec<u8>,
        arrived: usize,
        read: usize,
        piece: usize,
        held: Option<usize>,
        offered: Vec<(usize, usize)>,
        uninit: bool,
        calls: usize,
        received_into: Vec<(usize, usize)>,
    }

    impl AsyncRead for Arriving {
        fn poll_read(
            self: Pin<&mut Self>,
            _: &mut TaskContext<'_>,
            buf: &mut [u8],
        ) -> Poll<std::io::Result<usize>> {
            let this = self.get_mut();
            this.offered.push((this.read, buf.len()));
            let n = buf.len().min(this.piece).min(this.arrived - this.read);
            buf[..n].copy_from_slice(&this.data[this.read..this.read + n]);
            this.read += n;
            Poll::Ready(Ok(n))
        }
    }

    impl FrameInput for Arriving {
        fn take_received(&mut self, size: usize) -> Option<BytesMut> {
            let held = self.held?;
            (held >= size).then(|| {
                self.read += size;
                BytesMut::from(&self.data[..size])
            })
        }

        fn received(&self) -> usize {
            self.arrived - self.read
        }

        fn receives_uninit(&self) -> bool {
            self.uninit
        }

        fn receive_now(
            &mut self,
            spare: &mut [std::mem::MaybeUninit<u8>],
        ) -> Option<std::io::Result<usize>> {
            self.calls += 1;
            if self.calls.is_multiple_of(3) {
                return None;
            }
            self.received_into.push((self.read, spare.len()));
            let n = spare.len().min(self.piece).min(self.arrived - self.read);
            for (to, from) in spare[..n].iter_mut().zip(&self.data[self.read..]) {
                to.write(*from);
            }
            self.read += n;
            Some(Ok(n))
        }
    }

    fn read(input: &mut Arriving, size: usize) -> std::io::Result<BytesMut> {
        futures::executor::block_on(read_body(input, size))
    }

    fn arriving(data: &[u8], arrived: usize, piece: usize, uninit: bool) -> Arriving {
        let data = data.to_vec();
        Arriving {
            data,
            arrived,
            read: 0,
            piece,
            held: None,
            offered: Vec::new(),
            uninit,
            calls: 0,
            received_into: Vec::new(),
        }
    }

    /// A frame that has all arrived is read into one buffer of its size, whatever pieces
    /// the stream hands out; one held whole is taken as it is.
    #[test]
    fn a_frame_that_has_arrived_is_read_into_one_buffer_of_its_size() {
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        for piece in [1_000, 64 * 1024, 3_000_000] {
            let mut input = arriving(&data, data.len(), piece, false);
            assert_eq!(&read(&mut input, data.len()).unwrap()[..], &data[..]);
            assert!(input.offered.iter().all(|&(_, space)| space <= data.len()));
            // One buffer: every read offers the rest of it.
            assert!(input.offered.iter().all(|&(at, space)| at + space == data.len()));
            // Received into memory not zeroed: the same, waits aside.
            let mut input = arriving(&data, data.len(), piece, true);
            assert_eq!(&read(&mut input, data.len()).unwrap()[..], &data[..]);
            assert!(input.received_into.iter().all(|&(at, space)| at + space == data.len()));
            assert!(input.offered.iter().all(|&(_, space)| space <= 1024), "small waits");
            assert!(!input.offered.is_empty() || piece == data.len(), "the test waited");
        }
        let mut held = arriving(&data[..100], 100, 100, false);
        held.held = Some(100);
        assert_eq!(&read(&mut held, 100).unwrap()[..], &data[..100]);
        assert!(held.offered.is_empty(), "taken without a read");
    }

    /// On a real socket: frames that come whole, in pieces with pauses, behind each other
    /// in one write, and cut short by the peer's close, read into memory not zeroed.
    #[test]
    fn frames_are_read_from_a_socket_whatever_pieces_they_come_in() {
        let body: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let expected = body.clone();
        let outcomes = glommio::LocalExecutorBuilder::default()
            .spawn(move || async move {
                let listener = glommio::net::TcpListener::bind("127.0.0.1:0").expect("bind");
                let address = listener.local_addr().expect("address");
                let writer = std::thread::spawn(move || {
                    use std::io::Write;
                    let pause = || std::thread::sleep(Duration::from_millis(20));
                    let mut socket = std::net::TcpStream::connect(address).expect("connect");
                    socket.write_all(&body).expect("whole");
                    for piece in body.chunks(70_001) {
                        pause();
                        socket.write_all(piece).expect("piece");
                    }
                    pause();
                    let mut two = body[..500].to_vec();
                    two.extend_from_slice(&body[..200_000]);
                    socket.write_all(&two).expect("two");
                    pause();
                    socket.write_all(&body[..1000]).expect("cut");
                });
                let stream = listener.accept().await.expect("accept");
                let (mut input, _output) = Socket::pair(stream, true);
                let mut frames = Vec::new();
                for size in [300_000, 300_000, 500, 200_000, 300_000] {
                    frames.push(read_body(&mut input, size).await.map_err(|e| e.kind()));
                }
                writer.join().expect("writer");
                frames
            })
            .expect("executor")
            .join()
            .expect("join");
        let expected_sizes = [300_000, 300_000, 500, 200_000];
        for (frame, size) in outcomes.iter().zip(expected_sizes) {
            assert!(frame.as_ref().is_ok_and(|f| f[..] == expected[..size]), "{size}");
        }
        assert_eq!(outcomes[4].as_ref().map(|f| f.len()), Err(&std::io::ErrorKind::UnexpectedEof));
    }

    /// A frame announced large of which little arrived never gets a buffer much larger than
    /// what arrived: at most about twice that plus the first step, and the stream's end
    /// before the frame's is an error.
    #[test]
    fn a_frame_announced_but_not_sent_costs_what_was_sent() {
        let announced = 50 * 1024 * 1024;
        let data = vec![7u8; announced];
        let cases = [(100, 100), (300_000, 1_000), (3_000_000, 50_000)];
        for ((arrived, piece), uninit) in cases.into_iter().flat_map(|c| [(c, false), (c, true)]) {
            let mut input = arriving(&data, arrived, piece, uninit);
            let outcome = read(&mut input, announced).map_err(|e| e.kind());
            assert_eq!(outcome.map(|f| f.len()), Err(std::io::ErrorKind::UnexpectedEof));
            for &(at, space) in input.offered.iter().chain(&input.received_into) {
                assert!(
                    at + space <= 2 * arrived.max(at) + FRAME_READ_STEP_BYTES_MIN,
                    "{arrived} arrived, a read at {at} offered {space} ({uninit})"
                );
            }
        }
    }
}
