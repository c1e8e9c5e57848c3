//! Frames between controller listeners: one encoded raft `Message` each. Pure: encoding and
//! checks only (`transport` does the socket I/O).
//!
//! ```text
//!   +-------------+------------------------------------------+
//!   | length u32  | eraftpb::Message, protobuf               |
//!   +-------------+------------------------------------------+
//!    big-endian, of the message; 1 ..= RAFT_FRAME_SIZE_BYTES_MAX
//! ```
//!
//! A frame that breaks the rules (a bad length, a message that does not decode, one that is
//! not from a voter or not for this node) closes the connection: the peer reconnects and
//! Raft resends what matters.

use protobuf::Message as _;
use raft::prelude::Message;

use crate::constants::RAFT_FRAME_SIZE_BYTES_MAX;

pub const LENGTH_BYTES: usize = 4;

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame length {0} is outside 1..={RAFT_FRAME_SIZE_BYTES_MAX}")]
    Length(u32),
    #[error("frame does not decode as a raft message: {0}")]
    Decode(String),
    #[error("message from {from} to {to} is not from a peer voter to this node ({me})")]
    Address { from: u64, to: u64, me: u64 },
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

/// The body length a frame header announces, if acceptable.
pub fn body_length(header: [u8; LENGTH_BYTES]) -> Result<usize, FrameError> {
    let length = u32::from_be_bytes(header);
    if length == 0 || length as usize > RAFT_FRAME_SIZE_BYTES_MAX {
        return Err(FrameError::Length(length));
    }
    Ok(length as usize)
}

/// Decodes a body and checks it comes from another voter and is meant for `me`.
pub fn decode(body: &[u8], me: u64, voters: &[u64]) -> Result<Message, FrameError> {
    let message = Message::parse_from_bytes(body).map_err(|e| FrameError::Decode(e.to_string()))?;
    if message.to != me || message.from == me || !voters.contains(&message.from) {
        return Err(FrameError::Address { from: message.from, to: message.to, me });
    }
    Ok(message)
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
        assert_eq!(decoded, message(2, 1));
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
