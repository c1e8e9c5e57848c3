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
//! ```
//!
//! A protobuf message never starts with a zero byte (field number 0 does not exist, and a
//! raft message is never empty: it names its receiver), so a leading 0x00 marks a frame of
//! Spate's own; the second byte says which (1: a heartbeat). Heartbeats travel here rather
//! than through the log: the controller needs them only in memory, and only the fencing
//! they cause is committed (see `liveness`).
//!
//! A frame that breaks the rules (a bad length, a message that does not decode, one that is
//! not from a voter or not for this node) closes the connection: the peer reconnects and
//! Raft resends what matters.

use protobuf::Message as _;
use raft::prelude::Message;

use super::liveness::BrokerHeartbeat;
use crate::constants::RAFT_FRAME_SIZE_BYTES_MAX;
use crate::model::NodeId;

pub const LENGTH_BYTES: usize = 4;
/// The first body byte of Spate's own frames, and the kind of a heartbeat.
const OWN_FRAME: u8 = 0x00;
const KIND_HEARTBEAT: u8 = 0x01;
const HEARTBEAT_BYTES: usize = 15;

/// What a frame carries.
#[derive(Debug, PartialEq)]
pub enum Incoming {
    Raft(Message),
    Heartbeat(BrokerHeartbeat),
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame length {0} is outside 1..={RAFT_FRAME_SIZE_BYTES_MAX}")]
    Length(u32),
    #[error("frame does not decode as a raft message: {0}")]
    Decode(String),
    #[error("message from {from} to {to} is not from a peer voter to this node ({me})")]
    Address { from: u64, to: u64, me: u64 },
    #[error("frame of kind {kind} and {size} bytes is not a heartbeat")]
    Own { kind: u8, size: usize },
    #[error("heartbeat from {0}, which is not a peer voter")]
    Heartbeat(NodeId),
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

/// The body length a frame header announces, if acceptable.
pub fn body_length(header: [u8; LENGTH_BYTES]) -> Result<usize, FrameError> {
    let length = u32::from_be_bytes(header);
    if length == 0 || length as usize > RAFT_FRAME_SIZE_BYTES_MAX {
        return Err(FrameError::Length(length));
    }
    Ok(length as usize)
}

/// Decodes a body and checks it comes from another voter and is meant for `me`.
pub fn decode(body: &[u8], me: u64, voters: &[u64]) -> Result<Incoming, FrameError> {
    if body.first() == Some(&OWN_FRAME) {
        return decode_heartbeat(body, me, voters).map(Incoming::Heartbeat);
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

#[cfg(test)]
mod tests {
    use raft::prelude::MessageType;

    use super::*;

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
        let decoded = decode(&frame[LENGTH_BYTES..], 1, &[1, 2, 3]).unwrap();
        assert_eq!(decoded, Incoming::Raft(message(2, 1)));
    }

    #[test]
    fn a_heartbeat_frame_round_trips_and_is_checked() {
        let heartbeat =
            BrokerHeartbeat { node_id: NodeId(2), broker_epoch: 0x0102, want_shut_down: true };
        let frame = encode_heartbeat(&heartbeat);
        let expected = [0, 0, 0, 15, 0, 1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 1, 2, 1];
        assert_eq!(frame, expected);
        let body = &frame[LENGTH_BYTES..];
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
                assert!(matches!(decode(&other, 1, &[1, 2]), Err(FrameError::Own { .. })));
            }
        }
        let mut kind = body.to_vec();
        kind[1] = 2;
        assert_eq!(decode(&kind, 1, &[1, 2]), Err(FrameError::Own { kind: 2, size: 15 }));
        let mut flag = body.to_vec();
        flag[14] = 2;
        assert!(decode(&flag, 1, &[1, 2]).is_err());
    }

    #[test]
    fn bad_frames_are_errors() {
        assert_eq!(body_length([0; 4]), Err(FrameError::Length(0)));
        assert!(body_length(u32::MAX.to_be_bytes()).is_err());
        assert!(body_length((RAFT_FRAME_SIZE_BYTES_MAX as u32).to_be_bytes()).is_ok());
        let frame = encode(&message(2, 1));
        assert!(matches!(
            decode(&frame[LENGTH_BYTES..], 3, &[1, 2, 3]),
            Err(FrameError::Address { .. })
        ));
        assert!(matches!(
            decode(&frame[LENGTH_BYTES..], 1, &[1, 3]),
            Err(FrameError::Address { .. })
        ));
        let own = encode(&message(1, 1));
        assert!(decode(&own[LENGTH_BYTES..], 1, &[1, 2]).is_err());
        assert!(matches!(decode(&[0xff, 0xff, 0xff], 1, &[1, 2]), Err(FrameError::Decode(_))));
    }
}
