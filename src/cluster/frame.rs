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
//! Raft resends what matters.

use bytes::Bytes;
use protobuf::Message as _;
use raft::prelude::Message;

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
const HEARTBEAT_BYTES: usize = 15;
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
    if body.first() == Some(&OWN_FRAME) {
        return match body.get(1).copied().unwrap_or(0) {
            KIND_FETCH_SNAPSHOT => decode_fetch_snapshot(body, me, voters),
            KIND_SNAPSHOT_CHUNK => decode_snapshot_chunk(body, me, voters),
            _ => decode_heartbeat(body, me, voters).map(Incoming::Heartbeat),
        };
    }
    let message = Message::parse_from_bytes(body).map_err(|e| FrameError::Decode(e.to_string()))?;
    if message.to != me || message.from == me || !voters.contains(&message.from) {
        return Err(FrameError::Address { from: message.from, to: message.to, me });
    }
    Ok(Incoming::Raft(message))
}

fn decode_heartbeat(body: &[u8], me: u64, voters: &[u64]) -> Result<BrokerHeartbeat, FrameError> {
    let kind = body.get(1).copied().unwrap_or(0);
    if kind != KIND_HEARTBEAT || body.len() != HEARTBEAT_BYTES || body[14] > 1 {
        return Err(FrameError::Own { kind, size: body.len() });
    }
    let node_id = NodeId(i32::from_be_bytes([body[2], body[3], body[4], body[5]]));
    let mut epoch = [0; 8];
    epoch.copy_from_slice(&body[6..14]);
    let from = u64::try_from(node_id.0).unwrap_or(0);
    if from == me || !voters.contains(&from) {
        return Err(FrameError::Heartbeat(node_id));
    }
    let broker_epoch = u64::from_be_bytes(epoch);
    Ok(BrokerHeartbeat { node_id, broker_epoch, want_shut_down: body[14] == 1 })
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

fn decode_fetch_snapshot(body: &[u8], me: u64, voters: &[u64]) -> Result<Incoming, FrameError> {
    if body.len() != FETCH_SNAPSHOT_BYTES {
        return Err(FrameError::Own { kind: KIND_FETCH_SNAPSHOT, size: body.len() });
    }
    let from = snapshot_peer(be_i32(body, 2), me, voters)?;
    Ok(Incoming::FetchSnapshot(FetchSnapshot {
        from,
        to: me,
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
