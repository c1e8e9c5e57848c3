//! TCP between controller listeners, on shard 0: a listener that reads frames from peers
//! and hands their messages (Raft's, and broker heartbeats) to the Raft driver, and one
//! sender task per peer that keeps a connection open (reconnecting with back-off) and
//! writes the driver's frames to it.
//!
//! Between voters connections go one way: a node sends on the connection it dialled and
//! reads on those it accepted, so two nodes hold two connections. A broker-only node (a
//! Raft learner with no listener of its own) dials every voter, sends a join frame first,
//! and reads the voter's frames for it back on the same connection; the voter hands the
//! driver a queue that writes to that connection (`Event::Observer`), so the leader's
//! appends, heartbeats and snapshot chunks reach the learner however leadership moves. A
//! bad frame closes the connection it came on (`frame`); a failed write drops the message
//! and reconnects (Raft resends what still matters), and so does a learner whose voter
//! closed the connection. Warnings about a peer that stays unreachable are throttled.
//!
//! Lifecycle: started by the driver, runs until the process ends. Concurrency: shard 0 only.

use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_lite::io::{ReadHalf, WriteHalf};
use futures_lite::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use glommio::net::{TcpListener, TcpStream};
use raft::prelude::Message;

use super::frame::{self, Incoming, LENGTH_BYTES};
use super::liveness::{Arrivals, BrokerHeartbeat};
use super::Event;
use crate::constants::{
    RAFT_FRAME_SIZE_BYTES_MAX, RAFT_PEER_CONNECT_TIMEOUT_MS, RAFT_PEER_MESSAGES_QUEUED_MAX,
    RAFT_PEER_RETRY_MS_MAX, RAFT_PEER_RETRY_MS_MIN, REPEATED_WARNING_INTERVAL_MS,
};
use crate::model::quorum::{QuorumVoters, Voter};
use crate::throttle::Failures;

/// The queues of the peer sender tasks (encoded frames), by Raft id.
pub struct Peers {
    queues: HashMap<u64, LocalSender<Vec<u8>>>,
}

impl Peers {
    /// Starts a sender task for every voter but `me`. A broker-only node (`learner`: its
    /// driver's queue) joins on each connection and reads the voter's frames back from it.
    pub fn start(voters: &QuorumVoters, me: u64, learner: Option<Rc<LocalSender<Event>>>) -> Peers {
        let mut queues = HashMap::new();
        let ids: Rc<Vec<u64>> = Rc::new(voters.ids().map(|id| id.0 as u64).collect());
        for voter in voters.voters().iter().filter(|voter| voter.id.0 as u64 != me) {
            let (sender, receiver) = local_channel::new_bounded(RAFT_PEER_MESSAGES_QUEUED_MAX);
            queues.insert(voter.id.0 as u64, sender);
            let back = learner.clone().map(|events| Back { me, voters: ids.clone(), events });
            glommio::spawn_local(send_loop(voter.clone(), receiver, back)).detach();
        }
        Peers { queues }
    }

    /// A broker-only node joined on a connection this voter accepted: its frames go there
    /// from now on (replacing an older connection's).
    pub fn attach(&mut self, node_id: u64, queue: LocalSender<Vec<u8>>) {
        self.queues.insert(node_id, queue);
    }

    /// Queues `message` for its peer; whether it was queued (a full queue or a message
    /// larger than a frame drops it: Raft resends, and a snapshot dropped is reported so).
    pub fn send(&self, message: Message) -> bool {
        let Some(queue) = self.queues.get(&message.to) else { return false };
        let bytes = frame::encode(&message);
        if bytes.len() - frame::LENGTH_BYTES > RAFT_FRAME_SIZE_BYTES_MAX {
            tracing::error!(
                to = message.to,
                size = bytes.len(),
                limit = RAFT_FRAME_SIZE_BYTES_MAX,
                "a raft message is larger than a controller frame; not sent"
            );
            return false;
        }
        queue.try_send(bytes).is_ok()
    }

    /// Queues an encoded frame of Spate's own (a snapshot transfer's) for the peer `to`;
    /// whether it was queued (dropped like a message: the follower asks again).
    pub fn send_frame(&self, to: u64, bytes: Vec<u8>) -> bool {
        assert!(bytes.len() - frame::LENGTH_BYTES <= RAFT_FRAME_SIZE_BYTES_MAX);
        self.queues.get(&to).is_some_and(|queue| queue.try_send(bytes).is_ok())
    }

    /// Queues a heartbeat for the peer `to` (the active controller); dropped like a message.
    pub fn send_heartbeat(&self, to: u64, heartbeat: &BrokerHeartbeat) {
        if let Some(queue) = self.queues.get(&to) {
            let _ = queue.try_send(frame::encode_heartbeat(heartbeat));
        }
    }
}

/// What a broker-only node reads back on the connections it dials.
struct Back {
    me: u64,
    voters: Rc<Vec<u64>>,
    events: Rc<LocalSender<Event>>,
}

/// What the sender task waits for next.
enum Next {
    Frame(Option<Vec<u8>>),
    /// The connection's reader ended (the voter closed it): dial again.
    Closed,
}

/// Keeps one connection to `voter` and writes the queued frames to it; a broker-only node
/// (`back`) joins first and reads the voter's frames from the same connection.
async fn send_loop(voter: Voter, queue: LocalReceiver<Vec<u8>>, back: Option<Back>) {
    let started = Instant::now();
    let warning_interval_ms = REPEATED_WARNING_INTERVAL_MS * 10;
    let mut retries =
        Failures::new(RAFT_PEER_RETRY_MS_MIN, RAFT_PEER_RETRY_MS_MAX, warning_interval_ms);
    loop {
        let mut stream = match connect(&voter).await {
            Ok(stream) => {
                let failures = retries.succeeded();
                if failures > 0 {
                    tracing::info!(peer = %voter, failures, "connected to controller peer");
                }
                stream
            }
            Err(e) => {
                let (wait_ms, line) = retries.failed(started.elapsed().as_millis() as u64);
                if let Some(held) = line {
                    tracing::warn!(
                        peer = %voter,
                        failed_since_last_line = held + 1,
                        "cannot reach controller peer: {e}; retrying"
                    );
                }
                glommio::timer::sleep(Duration::from_millis(wait_ms)).await;
                continue;
            }
        };
        let Some(back) = &back else {
            loop {
                let Some(frame) = queue.recv().await else { return };
                if let Err(e) = stream.write_all(&frame).await {
                    tracing::debug!(peer = %voter, "controller peer connection lost: {e}");
                    break;
                }
            }
            continue;
        };
        if let Err(e) = stream.write_all(&frame::encode_join(back.me)).await {
            tracing::debug!(peer = %voter, "controller peer connection lost: {e}");
            glommio::timer::sleep(Duration::from_millis(RAFT_PEER_RETRY_MS_MIN)).await;
            continue;
        }
        let (reader, mut writer) = futures_lite::io::split(stream);
        let (closed_sender, closed) = local_channel::new_bounded::<()>(1);
        let (events, voters, me) = (back.events.clone(), back.voters.clone(), back.me);
        // Not detached: dropped (cancelled) when this connection is given up.
        let _reader = glommio::spawn_local(async move {
            let _closed_sender = closed_sender;
            if let Err(reason) = read_loop(reader, &events, me, &voters, None, None).await {
                tracing::debug!("controller connection closed: {reason}");
            }
        });
        loop {
            let next = futures_lite::future::or(async { Next::Frame(queue.recv().await) }, async {
                let _ = closed.recv().await;
                Next::Closed
            })
            .await;
            let frame = match next {
                Next::Frame(Some(frame)) => frame,
                Next::Frame(None) => return,
                Next::Closed => {
                    tracing::debug!(peer = %voter, "controller peer closed the connection");
                    break;
                }
            };
            if let Err(e) = writer.write_all(&frame).await {
                tracing::debug!(peer = %voter, "controller peer connection lost: {e}");
                break;
            }
        }
        // A voter that closed at once (a restart) is dialled again after the back-off.
        glommio::timer::sleep(Duration::from_millis(RAFT_PEER_RETRY_MS_MIN)).await;
    }
}

async fn connect(voter: &Voter) -> std::io::Result<TcpStream> {
    let address = resolve(voter).await?;
    let timeout = Duration::from_millis(RAFT_PEER_CONNECT_TIMEOUT_MS);
    let stream =
        TcpStream::connect_timeout(address, timeout).await.map_err(std::io::Error::from)?;
    stream.set_nodelay(true).map_err(std::io::Error::from)?;
    Ok(stream)
}

/// An IP address as is; a host name through the resolver, on the blocking pool (it may wait
/// for DNS).
async fn resolve(voter: &Voter) -> std::io::Result<SocketAddr> {
    if let Ok(ip) = voter.host.parse::<std::net::IpAddr>() {
        return Ok(SocketAddr::new(ip, voter.port));
    }
    let text = format!("{}:{}", voter.host, voter.port);
    glommio::executor()
        .spawn_blocking(move || {
            text.to_socket_addrs()?.next().ok_or_else(|| std::io::Error::other("no address"))
        })
        .await
}

/// Stamps heartbeats as they arrive, on the Raft driver's clock, before they wait in its
/// event queue (`liveness::Arrivals`).
#[derive(Clone)]
pub struct Stamps {
    pub clock: Instant,
    pub arrivals: Arrivals,
}

impl Stamps {
    pub fn record(&self, heartbeat: &BrokerHeartbeat) {
        self.arrivals.record(self.clock.elapsed().as_millis() as u64, heartbeat);
    }
}

/// Accepts peers on `listener` until the process ends; each connection's messages go to
/// `events`, its heartbeats stamped by `stamps` first.
pub async fn accept_loop(
    listener: TcpListener,
    events: Rc<LocalSender<Event>>,
    me: u64,
    voters: Rc<Vec<u64>>,
    stamps: Stamps,
) {
    let started = Instant::now();
    let mut retries =
        Failures::new(RAFT_PEER_RETRY_MS_MIN, RAFT_PEER_RETRY_MS_MAX, REPEATED_WARNING_INTERVAL_MS);
    loop {
        match listener.accept().await {
            Ok(stream) => {
                let failures = retries.succeeded();
                if failures > 0 {
                    tracing::info!(failures, "accepting controller connections again");
                }
                let events = events.clone();
                let voters = voters.clone();
                let stamps = stamps.clone();
                glommio::spawn_local(async move {
                    let peer = stream.peer_addr().ok();
                    let (reader, writer) = futures_lite::io::split(stream);
                    let (writer, stamps) = (Some(writer), Some(&stamps));
                    let read = read_loop(reader, &events, me, &voters, writer, stamps).await;
                    if let Err(reason) = read {
                        tracing::debug!(?peer, "controller connection closed: {reason}");
                    }
                })
                .detach();
            }
            Err(e) => {
                let (wait_ms, line) = retries.failed(started.elapsed().as_millis() as u64);
                if let Some(held) = line {
                    tracing::warn!(
                        failed_since_last_line = held + 1,
                        retry_in_ms = wait_ms,
                        "cannot accept controller connections: {e}"
                    );
                }
                glommio::timer::sleep(Duration::from_millis(wait_ms)).await;
            }
        }
    }
}

/// Reads frames until the peer closes or sends a bad one. On a voter's listener
/// (`writer`: the connection's write half) a broker-only node may join, and the frames for
/// it are written there (`Event::Observer`); on a broker-only node's own connections
/// (`None`) only voters' frames are taken. Heartbeats are stamped by `stamps` on arrival.
async fn read_loop<S>(
    mut stream: ReadHalf<S>,
    events: &LocalSender<Event>,
    me: u64,
    voters: &[u64],
    mut writer: Option<WriteHalf<S>>,
    stamps: Option<&Stamps>,
) -> Result<(), String>
where
    S: AsyncRead + futures_lite::AsyncWrite + Unpin + 'static,
{
    let accepted = writer.is_some();
    loop {
        let mut header = [0u8; LENGTH_BYTES];
        if let Err(e) = stream.read_exact(&mut header).await {
            return match e.kind() {
                std::io::ErrorKind::UnexpectedEof => Ok(()),
                _ => Err(e.to_string()),
            };
        }
        let length = frame::body_length(header).map_err(|e| e.to_string())?;
        // A buffer per frame: a snapshot chunk keeps its bytes (`Bytes`) until written.
        let mut body = vec![0; length];
        stream.read_exact(&mut body).await.map_err(|e| e.to_string())?;
        let body = bytes::Bytes::from(body);
        let incoming = match accepted {
            true => frame::decode_accepted(&body, me, voters),
            false => frame::decode(&body, me, voters),
        };
        let event = match incoming.map_err(|e| e.to_string())? {
            Incoming::Raft(message) => Event::Message(message),
            Incoming::Heartbeat(heartbeat) => {
                if let Some(stamps) = stamps {
                    stamps.record(&heartbeat);
                }
                Event::Heartbeat(heartbeat)
            }
            Incoming::FetchSnapshot(request) => Event::FetchSnapshot(request),
            Incoming::SnapshotChunk(chunk) => Event::SnapshotChunk(chunk),
            Incoming::Join(node_id) => {
                let Some(writer) = writer.take() else {
                    return Err(format!("a second join from {node_id} on one connection"));
                };
                let (queue, frames) = local_channel::new_bounded(RAFT_PEER_MESSAGES_QUEUED_MAX);
                glommio::spawn_local(write_loop(node_id, writer, frames)).detach();
                tracing::info!(node_id, "broker-only node joined on a controller connection");
                Event::Observer { node_id, queue }
            }
        };
        if events.send(event).await.is_err() {
            return Ok(());
        }
    }
}

/// Writes a broker-only node's frames to the connection it joined on, until the queue is
/// replaced (a newer connection) or a write fails.
async fn write_loop<S>(node_id: u64, mut writer: WriteHalf<S>, frames: LocalReceiver<Vec<u8>>)
where
    S: AsyncRead + futures_lite::AsyncWrite + Unpin,
{
    while let Some(frame) = frames.recv().await {
        if let Err(e) = writer.write_all(&frame).await {
            tracing::debug!(node_id, "broker-only node's connection lost: {e}");
            return;
        }
    }
}
