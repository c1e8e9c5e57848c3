//! The Kafka wire protocol: request prefixes, the table of supported versions, and the
//! hand-written Fetch and ShareFetch response framing. Message bodies use the
//! `kafka-protocol` crate; the Fetch and ShareFetch responses are framed by hand so that
//! record bytes are never copied into a buffer.
//!
//! Pure: no sockets, no files. `net` does the reading and writing.

pub mod fetch_response;
pub mod share_fetch_response;
pub mod versions;

use bytes::{BufMut, BytesMut};

/// The fixed start of every request header (all header versions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestPrefix {
    pub api_key: i16,
    pub api_version: i16,
    pub correlation_id: i32,
}

impl RequestPrefix {
    pub fn parse(frame: &[u8]) -> Option<RequestPrefix> {
        if frame.len() < 8 {
            return None;
        }
        Some(RequestPrefix {
            api_key: i16::from_be_bytes([frame[0], frame[1]]),
            api_version: i16::from_be_bytes([frame[2], frame[3]]),
            correlation_id: i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]),
        })
    }
}

/// Writes a response header: the correlation id, and an empty tagged-field section for
/// response header v1 (flexible versions).
pub fn put_response_header(out: &mut BytesMut, correlation_id: i32, header_version: i16) {
    out.put_i32(correlation_id);
    if header_version >= 1 {
        out.put_u8(0);
    }
}

/// Unsigned varint, as used for compact lengths in flexible versions. Spate's one varint
/// writer: records are encoded by kafka-protocol (`model::records`), whose varint types are
/// no help here because their `Encoder` trait is crate-private in 0.18.
pub fn put_unsigned_varint(out: &mut BytesMut, mut value: u64) {
    while value >= 0x80 {
        out.put_u8((value as u8) | 0x80);
        value >>= 7;
    }
    out.put_u8(value as u8);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_needs_eight_bytes() {
        assert_eq!(RequestPrefix::parse(&[0, 18, 0, 3, 0, 0, 0]), None);
        let prefix = RequestPrefix::parse(&[0, 18, 0, 3, 0, 0, 1, 2, 9]).expect("prefix");
        assert_eq!(prefix, RequestPrefix { api_key: 18, api_version: 3, correlation_id: 258 });
    }

    #[test]
    fn varints_match_the_spec() {
        for (value, bytes) in
            [(0u64, vec![0u8]), (127, vec![127]), (128, vec![0x80, 1]), (300, vec![0xac, 2])]
        {
            let mut out = BytesMut::new();
            put_unsigned_varint(&mut out, value);
            assert_eq!(&out[..], &bytes[..], "{value}");
        }
    }
}
