//! Frames between controller listeners: an encoded raft `Message`, or a broker heartbeat.
//! Pure: encoding and checks only (`transport` does the socket I/O).
//!
//! ```text
//!   +-------------+------------------------------------------+
//!   | length u32  | eraftpb::Message, protobuf               |
//!   +-------------+------------------------------------------+
//!    big-endian, of the body; 1 ..= RAFT_FRAME_SIZE_BYTES_MAX
//!
//!   heartbeat body (15 bytes, big-endian):
//!   +------+------+-------------+-------------------+----------------+
//!   | 0x00 | 0x01 | node_id i32 | broker_epoch u64  | want_shut_down |
//!   +------+------+-------------+-------------------+----------------+
//!
//!   snapshot fetch body (34 bytes, big-endian; a follower to the node that offered it):
//!   +------+------+---------+-----------+----------+--------------+---------------+
//!   | 0x00 | 0x02 | from i32| index u64 | term u64 | position u64 | max_bytes u32 |
//!   +------+------+---------+-----------+----------+--------------+---------------+
//!
//!   snapshot chunk body (39 bytes + the chunk, big-endian; the answer):
//!   +------+------+---------+-----------+----------+-----------+----------+--------------+
//!   | 0x00 | 0x03 | from i32| index u64 | term u64 | status u8 | size u64 | position u64 |
//!   +------+------+---------+-----------+----------+-----------+----------+--------------+
//!   followed by the snapshot's bytes from position (status 0: ok, 1: not found,
//!   2: position out of range; see `snapshot_fetch`)
//!
//!   join body (6 bytes, big-endian; a broker-only node's first frame on each connection it
//!   dials to a voter, which answers on that connection from then on):
//!   +------+------+-------------+
//!   | 0x00 | 0x04 | node_id i32 |
//!   +------+------+-------------+
//! ```
//!
//! A protobuf message never starts with a zero byte (field number 0 does not exist, and a
//! raft message is never empty: it names its receiver), so a leading 0x00 marks a frame of
//! Spate's own; the second byte says which (1: a heartbeat, 2 and 3: a snapshot's chunked
//! transfer). Heartbeats travel here rather
//! than through the log: the controller needs them only in memory, and only the fencing
//! they cause is committed (see `liveness`).
//!
//! A frame that breaks the rules (a bad length, a message that does not decode, one that is
//! not from a voter or not for this node) closes the connection: the peer reconnects and
//! Raft resends what matters. On the connections a voter accepts, a broker-only node (a
//! Raft learner, not a voter) may also send its join, heartbeats, snapshot fetch requests
//! and the Raft messages a learner sends (append and heartbeat responses, proposals it
//! forwards to the leader): `decode_accepted`.

use bytes::Bytes;
use protobuf::Message as _;
use raft::prelude::{Message, MessageType};

use super::liveness::BrokerHeartbeat;
use super::snapshot_fetch::{ChunkStatus, FetchSnapshot, SnapshotChunk, SnapshotKey};
use crate::constants::RAFT_FRAME_SIZE_BYTES_MAX;
use crate::model::NodeId;

pub const LENGTH_BYTES: usize = 4;
/// The first body byte of Spate's own frames, and their kinds.
const OWN_FRAME: u8 = 0x00;
const KIND_HEARTBEAT: u8 = 0x01;
const KIND_FETCH_SNAPSHOT: u8 = 0x02;
const KIND_SNAPSHOT_CHUNK: u8 = 0x03;
const KIND_JOIN: u8 = 0x04;
const HEARTBEAT_BYTES: usize = 15;
const JOIN_BYTES: usize = 6;
const FETCH_SNAPSHOT_BYTES: usize = 34;
/// A chunk's body before its bytes.
pub const SNAPSHOT_CHUNK_HEADER_BYTES: usize = 39;
/// The most snapshot bytes one chunk frame holds.
pub const SNAPSHOT_CHUNK_BYTES_MAX: usize = RAFT_FRAME_SIZE_BYTES_MAX - SNAPSHOT_CHUNK_HEADER_BYTES;

/// What a frame carries.
#[derive(Debug, PartialEq)]
pub enum Incoming {
    Raft(Message),
    Heartbeat(BrokerHeartbeat),
    FetchSnapshot(FetchSnapshot),
    SnapshotChunk(SnapshotChunk),
    /// A broker-only node's first frame on a connection: answer it on this connection.
    Join(u64),
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame length {0} is outside 1..={RAFT_FRAME_SIZE_BYTES_MAX}")]
    Length(u32),
    #[error("frame does not decode as a raft message: {0}")]
    Decode(String),
    #[error("message from {from} to {to} is not from a peer voter to this node ({me})")]
    Address { from: u64, to: u64, me: u64 },
    #[error("frame of kind {kind} and {size} bytes is not one of Spate's own")]
    Own { kind: u8, size: usize },
    #[error("heartbeat from {0}, which is not a peer voter")]
    Heartbeat(NodeId),
    #[error("snapshot transfer frame from {0}, which is not a peer voter")]
    SnapshotPeer(i32),
    #[error("join from {0}, which is a voter or this node, or not on a voter's listener")]
    Join(i32),
}

/// The frame of `message`, length prefix included.
pub fn encode(message: &Message) -> Vec<u8> {
    let mut out = vec![0; LENGTH_BYTES];
    if let Err(e) = message.write_to_vec(&mut out) {
        panic!("cannot encode a raft message: {e}");
    }
    let length = (out.len() - LENGTH_BYTES) as u32;
    out[..LENGTH_BYTES].copy_from_slice(&length.to_be_bytes());
    out
}

/// The frame of a heartbeat, length prefix included.
pub fn encode_heartbeat(heartbeat: &BrokerHeartbeat) -> Vec<u8> {
    let mut out = Vec::with_capacity(LENGTH_BYTES + HEARTBEAT_BYTES);
    out.extend_from_slice(&(HEARTBEAT_BYTES as u32).to_be_bytes());
    out.extend_from_slice(&[OWN_FRAME, KIND_HEARTBEAT]);
    out.extend_from_slice(&heartbeat.node_id.0.to_be_bytes());
    out.extend_from_slice(&heartbeat.broker_epoch.to_be_bytes());
    out.push(u8::from(heartbeat.want_shut_down));
    assert_eq!(out.len(), LENGTH_BYTES + HEARTBEAT_BYTES);
    out
}

/// The frame of a broker-only node's join, length prefix included.
pub fn encode_join(node_id: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(LENGTH_BYTES + JOIN_BYTES);
    out.extend_from_slice(&(JOIN_BYTES as u32).to_be_bytes());
    out.extend_from_slice(&[OWN_FRAME, KIND_JOIN]);
    out.extend_from_slice(&(node_id as i32).to_be_bytes());
    out
}

/// The frame of a snapshot fetch request, length prefix included.
pub fn encode_fetch_snapshot(request: &FetchSnapshot) -> Vec<u8> {
    let mut out = Vec::with_capacity(LENGTH_BYTES + FETCH_SNAPSHOT_BYTES);
    out.extend_from_slice(&(FETCH_SNAPSHOT_BYTES as u32).to_be_bytes());
    out.extend_from_slice(&[OWN_FRAME, KIND_FETCH_SNAPSHOT]);
    out.extend_from_slice(&(request.from as i32).to_be_bytes());
    out.extend_from_slice(&request.key.index.to_be_bytes());
    out.extend_from_slice(&request.key.term.to_be_bytes());
    out.extend_from_slice(&request.position.to_be_bytes());
    out.extend_from_slice(&request.max_bytes.to_be_bytes());
    assert_eq!(out.len(), LENGTH_BYTES + FETCH_SNAPSHOT_BYTES);
    out
}

/// The frame of a snapshot chunk, length prefix included (the bytes are copied in once).
pub fn encode_snapshot_chunk(chunk: &SnapshotChunk) -> Vec<u8> {
    assert!(chunk.bytes.len() <= SNAPSHOT_CHUNK_BYTES_MAX);
    let body = SNAPSHOT_CHUNK_HEADER_BYTES + chunk.bytes.len();
    let mut out = Vec::with_capacity(LENGTH_BYTES + body);
    out.extend_from_slice(&(body as u32).to_be_bytes());
    out.extend_from_slice(&[OWN_FRAME, KIND_SNAPSHOT_CHUNK]);
    out.extend_from_slice(&(chunk.from as i32).to_be_bytes());
    out.extend_from_slice(&chunk.key.index.to_be_bytes());
    out.extend_from_slice(&chunk.key.term.to_be_bytes());
    out.push(chunk.status as u8);
    out.extend_from_slice(&chunk.size.to_be_bytes());
    out.extend_from_slice(&chunk.position.to_be_bytes());
    out.extend_from_slice(&chunk.bytes);
    assert_eq!(out.len(), LENGTH_BYTES + body);
    out
}

/// The body length a frame header announces, if acceptable.
pub fn body_length(header: [u8; LENGTH_BYTES]) -> Result<usize, FrameError> {
    let length = u32::from_be_bytes(header);
    if length == 0 || length as usize > RAFT_FRAME_SIZE_BYTES_MAX {
        return Err(FrameError::Length(length));
    }
    Ok(length as usize)
}

/// Decodes a body and checks it comes from another voter and is meant for `me`. The body
/// of a chunk is kept (`bytes` is a slice of it, no copy).
pub fn decode(body: &Bytes, me: u64, voters: &[u64]) -> Result<Incoming, FrameError> {
    decode_from(body, me, voters, false)
}

/// `decode` on a voter's listener: from another voter, or from a broker-only node what a
/// Raft learner sends (see the module doc).
pub fn decode_accepted(body: &Bytes, me: u64, voters: &[u64]) -> Result<Incoming, FrameError> {
    decode_from(body, me, voters, true)
}

fn decode_from(
    body: &Bytes,
    me: u64,
    voters: &[u64],
    observers: bool,
) -> Result<Incoming, FrameError> {
    let senders = Senders { me, voters, observers };
    if body.first() == Some(&OWN_FRAME) {
        return match body.get(1).copied().unwrap_or(0) {
            KIND_FETCH_SNAPSHOT => decode_fetch_snapshot(body, &senders),
            KIND_SNAPSHOT_CHUNK => decode_snapshot_chunk(body, me, voters),
            KIND_JOIN => decode_join(body, &senders),
            _ => decode_heartbeat(body, &senders).map(Incoming::Heartbeat),
        };
    }
    let message = Message::parse_from_bytes(body).map_err(|e| FrameError::Decode(e.to_string()))?;
    let from_voter = voters.contains(&message.from);
    let learner_sends = matches!(
        message.get_msg_type(),
        MessageType::MsgAppendResponse
            | MessageType::MsgHeartbeatResponse
            | MessageType::MsgPropose
            | MessageType::MsgReadIndex
    );
    let from_learner = observers && message.from != 0 && learner_sends;
    if message.to != me || message.from == me || !(from_voter || from_learner) {
        return Err(FrameError::Address { from: message.from, to: message.to, me });
    }
    Ok(Incoming::Raft(message))
}

/// Who may send a frame: another voter, and on a voter's listener a broker-only node too.
struct Senders<'a> {
    me: u64,
    voters: &'a [u64],
    observers: bool,
}

impl Senders<'_> {
    fn allows(&self, node_id: i32) -> Option<u64> {
        let from = u64::try_from(node_id).ok().filter(|from| *from != 0 && *from != self.me)?;
        (self.voters.contains(&from) || self.observers).then_some(from)
    }
}

fn decode_heartbeat(body: &[u8], senders: &Senders) -> Result<BrokerHeartbeat, FrameError> {
    let kind = body.get(1).copied().unwrap_or(0);
    if kind != KIND_HEARTBEAT || body.len() != HEARTBEAT_BYTES || body[14] > 1 {
        return Err(FrameError::Own { kind, size: body.len() });
    }
    let node_id = NodeId(i32::from_be_bytes([body[2], body[3], body[4], body[5]]));
    let mut epoch = [0; 8];
    epoch.copy_from_slice(&body[6..14]);
    if senders.allows(node_id.0).is_none() {
        return Err(FrameError::Heartbeat(node_id));
    }
    let broker_epoch = u64::from_be_bytes(epoch);
    Ok(BrokerHeartbeat { node_id, broker_epoch, want_shut_down: body[14] == 1 })
}

fn decode_join(body: &[u8], senders: &Senders) -> Result<Incoming, FrameError> {
    if body.len() != JOIN_BYTES {
        return Err(FrameError::Own { kind: KIND_JOIN, size: body.len() });
    }
    let node_id = be_i32(body, 2);
    match senders.allows(node_id) {
        Some(from) if senders.observers && !senders.voters.contains(&from) => {
            Ok(Incoming::Join(from))
        }
        _ => Err(FrameError::Join(node_id)),
    }
}

/// Big-endian fields read from a body whose length was checked.
fn be_u64(body: &[u8], at: usize) -> u64 {
    let mut bytes = [0; 8];
    bytes.copy_from_slice(&body[at..at + 8]);
    u64::from_be_bytes(bytes)
}

fn be_i32(body: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([body[at], body[at + 1], body[at + 2], body[at + 3]])
}

/// The sender of a snapshot transfer frame, as a Raft id, if it is a peer voter.
fn snapshot_peer(node_id: i32, me: u64, voters: &[u64]) -> Result<u64, FrameError> {
    let from = u64::try_from(node_id).unwrap_or(0);
    if from == me || !voters.contains(&from) {
        return Err(FrameError::SnapshotPeer(node_id));
    }
    Ok(from)
}

fn decode_fetch_snapshot(body: &[u8], senders: &Senders) -> Result<Incoming, FrameError> {
    if body.len() != FETCH_SNAPSHOT_BYTES {
        return Err(FrameError::Own { kind: KIND_FETCH_SNAPSHOT, size: body.len() });
    }
    let node_id = be_i32(body, 2);
    let from = senders.allows(node_id).ok_or(FrameError::SnapshotPeer(node_id))?;
    Ok(Incoming::FetchSnapshot(FetchSnapshot {
        from,
        to: senders.me,
        key: SnapshotKey { index: be_u64(body, 6), term: be_u64(body, 14) },
        position: be_u64(body, 22),
        max_bytes: u32::from_be_bytes([body[30], body[31], body[32], body[33]]),
    }))
}

fn decode_snapshot_chunk(body: &Bytes, me: u64, voters: &[u64]) -> Result<Incoming, FrameError> {
    let status = body.get(22).copied().and_then(ChunkStatus::from_code);
    let Some(status) = status.filter(|_| body.len() >= SNAPSHOT_CHUNK_HEADER_BYTES) else {
        return Err(FrameError::Own { kind: KIND_SNAPSHOT_CHUNK, size: body.len() });
    };
    let from = snapshot_peer(be_i32(body, 2), me, voters)?;
    Ok(Incoming::SnapshotChunk(SnapshotChunk {
        from,
        to: me,
        key: SnapshotKey { index: be_u64(body, 6), term: be_u64(body, 14) },
        status,
        size: be_u64(body, 23),
        position: be_u64(body, 31),
        bytes: body.slice(SNAPSHOT_CHUNK_HEADER_BYTES..),
    }))
}

#[cfg(test)]
mod tests {
    use raft::prelude::MessageType;

    use super::*;

    fn body_of(frame: &[u8]) -> Bytes {
        Bytes::copy_from_slice(&frame[LENGTH_BYTES..])
    }

    fn message(from: u64, to: u64) -> Message {
        let mut message = Message::default();
        message.set_msg_type(MessageType::MsgHeartbeat);
        message.from = from;
        message.to = to;
        message.term = 4;
        message
    }

    #[test]
    fn a_frame_round_trips() {
        let frame = encode(&message(2, 1));
        let length = body_length([frame[0], frame[1], frame[2], frame[3]]).unwrap();
        assert_eq!(length, frame.len() - LENGTH_BYTES);
        let decoded = decode(&body_of(&frame), 1, &[1, 2, 3]).unwrap();
        assert_eq!(decoded, Incoming::Raft(message(2, 1)));
    }

    #[test]
    fn a_heartbeat_frame_round_trips_and_is_checked() {
        let heartbeat =
            BrokerHeartbeat { node_id: NodeId(2), broker_epoch: 0x0102, want_shut_down: true };
        let frame = encode_heartbeat(&heartbeat);
        let expected = [0, 0, 0, 15, 0, 1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 1, 2, 1];
        assert_eq!(frame, expected);
        let body = &body_of(&frame);
        assert_eq!(body_length([frame[0], frame[1], frame[2], frame[3]]), Ok(body.len()));
        assert_eq!(decode(body, 1, &[1, 2, 3]), Ok(Incoming::Heartbeat(heartbeat)));
        // Not from a peer voter: its own id, or one outside the quorum.
        assert_eq!(decode(body, 2, &[1, 2, 3]), Err(FrameError::Heartbeat(NodeId(2))));
        assert_eq!(decode(body, 1, &[1, 3]), Err(FrameError::Heartbeat(NodeId(2))));
        // Every other size, an unknown kind, a bad flag.
        for size in 1..body.len() + 3 {
            let mut other = body.to_vec();
            other.resize(size, 0);
            if size != body.len() {
                assert!(matches!(decode(&other.into(), 1, &[1, 2]), Err(FrameError::Own { .. })));
            }
        }
        let mut kind = body.to_vec();
        kind[1] = 2;
        assert_eq!(decode(&kind.into(), 1, &[1, 2]), Err(FrameError::Own { kind: 2, size: 15 }));
        let mut flag = body.to_vec();
        flag[14] = 2;
        assert!(decode(&flag.into(), 1, &[1, 2]).is_err());
    }

    #[test]
    fn bad_frames_are_errors() {
        assert_eq!(body_length([0; 4]), Err(FrameError::Length(0)));
        assert!(body_length(u32::MAX.to_be_bytes()).is_err());
        assert!(body_length((RAFT_FRAME_SIZE_BYTES_MAX as u32).to_be_bytes()).is_ok());
        let frame = encode(&message(2, 1));
        assert!(matches!(decode(&body_of(&frame), 3, &[1, 2, 3]), Err(FrameError::Address { .. })));
        assert!(matches!(decode(&body_of(&frame), 1, &[1, 3]), Err(FrameError::Address { .. })));
        let own = encode(&message(1, 1));
        assert!(decode(&body_of(&own), 1, &[1, 2]).is_err());
        assert!(matches!(
            decode(&Bytes::from_static(&[0xff, 0xff, 0xff]), 1, &[1, 2]),
            Err(FrameError::Decode(_))
        ));
    }

    #[test]
    fn a_broker_only_node_is_heard_on_a_voters_listener_only_as_a_learner() {
        let voters = [1, 2, 3];
        let join = body_of(&encode_join(4));
        assert_eq!(join.len(), JOIN_BYTES);
        assert_eq!(decode_accepted(&join, 1, &voters), Ok(Incoming::Join(4)));
        // Not on a learner's own connections, not from a voter, not from this node.
        assert_eq!(decode(&join, 1, &voters), Err(FrameError::Join(4)));
        let from_voter = body_of(&encode_join(2));
        assert_eq!(decode_accepted(&from_voter, 1, &voters), Err(FrameError::Join(2)));
        assert_eq!(decode_accepted(&join, 4, &voters), Err(FrameError::Join(4)));
        let mut short = join.to_vec();
        short.pop();
        let short = Bytes::from(short);
        assert!(matches!(decode_accepted(&short, 1, &voters), Err(FrameError::Own { .. })));
        // What a learner sends is taken from it; a vote or an append is not.
        for (kind, taken) in [
            (MessageType::MsgAppendResponse, true),
            (MessageType::MsgHeartbeatResponse, true),
            (MessageType::MsgPropose, true),
            (MessageType::MsgRequestVote, false),
            (MessageType::MsgRequestPreVote, false),
            (MessageType::MsgAppend, false),
            (MessageType::MsgTimeoutNow, false),
        ] {
            let mut sent = message(4, 1);
            sent.set_msg_type(kind);
            let body = body_of(&encode(&sent));
            assert_eq!(decode_accepted(&body, 1, &voters).is_ok(), taken, "{kind:?}");
            assert!(decode(&body, 1, &voters).is_err(), "{kind:?}");
        }
        let heartbeat =
            BrokerHeartbeat { node_id: NodeId(4), broker_epoch: 9, want_shut_down: false };
        let body = body_of(&encode_heartbeat(&heartbeat));
        assert_eq!(decode_accepted(&body, 1, &voters), Ok(Incoming::Heartbeat(heartbeat)));
        assert_eq!(decode(&body, 1, &voters), Err(FrameError::Heartbeat(NodeId(4))));
        let key = SnapshotKey { index: 10, term: 2 };
        let request = FetchSnapshot { from: 4, to: 1, key, position: 0, max_bytes: 9 };
        let body = body_of(&encode_fetch_snapshot(&request));
        assert_eq!(decode_accepted(&body, 1, &voters), Ok(Incoming::FetchSnapshot(request)));
        assert_eq!(decode(&body, 1, &voters), Err(FrameError::SnapshotPeer(4)));
        // Chunks come from voters only.
        let bytes = Bytes::from_static(b"x");
        let status = ChunkStatus::Ok;
        let chunk = SnapshotChunk { from: 4, to: 1, key, status, size: 1, position: 0, bytes };
        let body = body_of(&encode_snapshot_chunk(&chunk));
        assert_eq!(decode_accepted(&body, 1, &voters), Err(FrameError::SnapshotPeer(4)));
    }

    #[test]
    fn snapshot_transfer_frames_round_trip_and_are_checked() {
        let key = SnapshotKey { index: 0x0102_0304, term: 7 };
        let request = FetchSnapshot { from: 2, to: 1, key, position: 1 << 33, max_bytes: 9 };
        let frame = encode_fetch_snapshot(&request);
        assert_eq!(body_length([frame[0], frame[1], frame[2], frame[3]]), Ok(34));
        let body = body_of(&frame);
        assert_eq!(decode(&body, 1, &[1, 2, 3]), Ok(Incoming::FetchSnapshot(request)));
        assert_eq!(decode(&body, 2, &[1, 2, 3]), Err(FrameError::SnapshotPeer(2)));
        assert_eq!(decode(&body, 1, &[1, 3]), Err(FrameError::SnapshotPeer(2)));
        for size in 2..40 {
            let mut other = body.to_vec();
            other.resize(size, 0);
            if size != body.len() {
                assert!(matches!(decode(&other.into(), 1, &[1, 2]), Err(FrameError::Own { .. })));
            }
        }
        for status in [ChunkStatus::Ok, ChunkStatus::NotFound, ChunkStatus::OutOfRange] {
            let bytes = Bytes::from_static(b"spms-bytes");
            let chunk =
                SnapshotChunk { from: 1, to: 2, key, status, size: 99, position: 40, bytes };
            let frame = encode_snapshot_chunk(&chunk);
            let body = body_of(&frame);
            assert_eq!(body.len(), SNAPSHOT_CHUNK_HEADER_BYTES + 10);
            assert_eq!(decode(&body, 2, &[1, 2]), Ok(Incoming::SnapshotChunk(chunk.clone())));
            assert_eq!(decode(&body, 1, &[1, 2]), Err(FrameError::SnapshotPeer(1)));
            // Every truncation of the header, and an unknown status, are errors.
            for size in 2..SNAPSHOT_CHUNK_HEADER_BYTES {
                assert!(decode(&body.slice(..size), 2, &[1, 2]).is_err(), "{size}");
            }
            let mut bad = body.to_vec();
            bad[22] = 3;
            assert!(matches!(decode(&bad.into(), 2, &[1, 2]), Err(FrameError::Own { .. })));
        }
        // An empty chunk (the end) decodes too.
        let end = SnapshotChunk {
            from: 1,
            to: 2,
            key,
            status: ChunkStatus::Ok,
            size: 40,
            position: 40,
            bytes: Bytes::new(),
        };
        let body = body_of(&encode_snapshot_chunk(&end));
        assert_eq!(decode(&body, 2, &[1, 2]), Ok(Incoming::SnapshotChunk(end)));
    }
}
