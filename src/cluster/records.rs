//! The metadata log's records: what the leader appends and every node applies
//! (`state::MetadataState::apply`). Pure: encode and decode only.
//!
//! Each record is one Raft entry's data, byte by byte (big-endian):
//!
//! ```text
//!   0      1      2 ..
//!   +------+------+------------------------------------------------+
//!   | ver  | type | fields of the type                             |
//!   +------+------+------------------------------------------------+
//!   ver 0
//!   type 1 LeaderChange    leader_id: i32, term: u64
//!   type 2 RegisterBroker  node_id: i32, host: u16 length + UTF-8, port: u16
//! ```
//!
//! An entry with no data is Raft's own no-op, appended by every new leader (raft-rs does it
//! on becoming leader); it is applied as nothing. A record of an unknown version or type is
//! an error: a node must never skip a committed record it does not understand silently.

use crate::model::NodeId;

/// The only record format so far.
const RECORD_VERSION: u8 = 0;
const TYPE_LEADER_CHANGE: u8 = 1;
const TYPE_REGISTER_BROKER: u8 = 2;

/// One committed change to the cluster's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetadataRecord {
    /// A leader took office in `term` (Kafka's LeaderChangeMessage): written by the new
    /// leader after raft-rs's empty entry, so that every node's log names its leaders.
    LeaderChange { leader_id: NodeId, term: u64 },
    /// A broker announces itself and the address clients reach it at (Kafka's
    /// RegisterBrokerRecord, without epochs and fencing yet).
    RegisterBroker { node_id: NodeId, host: String, port: u16 },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("record is {0} bytes, shorter than its fields")]
    Truncated(usize),
    #[error("record version {0} is unknown (written by a newer spate?)")]
    Version(u8),
    #[error("record type {0} is unknown (written by a newer spate?)")]
    Type(u8),
    #[error("record has a host that is not UTF-8")]
    Host,
    #[error("record has {0} bytes after its fields")]
    Trailing(usize),
}

impl MetadataRecord {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![RECORD_VERSION];
        match self {
            MetadataRecord::LeaderChange { leader_id, term } => {
                out.push(TYPE_LEADER_CHANGE);
                out.extend_from_slice(&leader_id.0.to_be_bytes());
                out.extend_from_slice(&term.to_be_bytes());
            }
            MetadataRecord::RegisterBroker { node_id, host, port } => {
                out.push(TYPE_REGISTER_BROKER);
                out.extend_from_slice(&node_id.0.to_be_bytes());
                let host = host.as_bytes();
                let length = u16::try_from(host.len()).unwrap_or(u16::MAX);
                out.extend_from_slice(&length.to_be_bytes());
                out.extend_from_slice(&host[..usize::from(length)]);
                out.extend_from_slice(&port.to_be_bytes());
            }
        }
        out
    }

    pub fn decode(data: &[u8]) -> Result<MetadataRecord, RecordError> {
        let mut reader = Reader { data, position: 0 };
        let version = reader.u8()?;
        if version != RECORD_VERSION {
            return Err(RecordError::Version(version));
        }
        let record = match reader.u8()? {
            TYPE_LEADER_CHANGE => {
                let leader_id = NodeId(reader.i32()?);
                let term = reader.u64()?;
                MetadataRecord::LeaderChange { leader_id, term }
            }
            TYPE_REGISTER_BROKER => {
                let node_id = NodeId(reader.i32()?);
                let length = usize::from(reader.u16()?);
                let host = reader.take(length)?;
                let host = String::from_utf8(host.to_vec()).map_err(|_| RecordError::Host)?;
                let port = reader.u16()?;
                MetadataRecord::RegisterBroker { node_id, host, port }
            }
            other => return Err(RecordError::Type(other)),
        };
        let left = data.len() - reader.position;
        if left > 0 {
            return Err(RecordError::Trailing(left));
        }
        Ok(record)
    }
}

struct Reader<'a> {
    data: &'a [u8],
    position: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, size: usize) -> Result<&'a [u8], RecordError> {
        let end = self.position + size;
        let bytes =
            self.data.get(self.position..end).ok_or(RecordError::Truncated(self.data.len()))?;
        self.position = end;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], RecordError> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, RecordError> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, RecordError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    fn i32(&mut self) -> Result<i32, RecordError> {
        Ok(i32::from_be_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, RecordError> {
        Ok(u64::from_be_bytes(self.array()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_byte_for_byte() {
        let change = MetadataRecord::LeaderChange { leader_id: NodeId(3), term: 7 };
        let encoded = change.encode();
        assert_eq!(encoded, [0, 1, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 7]);
        assert_eq!(MetadataRecord::decode(&encoded), Ok(change));
        let register = MetadataRecord::RegisterBroker {
            node_id: NodeId(2),
            host: "10.0.0.2".into(),
            port: 9092,
        };
        let encoded = register.encode();
        assert_eq!(&encoded[..8], [0, 2, 0, 0, 0, 2, 0, 8]);
        assert_eq!(MetadataRecord::decode(&encoded), Ok(register));
    }

    #[test]
    fn every_truncation_and_garbage_is_an_error_not_a_panic() {
        let register =
            MetadataRecord::RegisterBroker { node_id: NodeId(1), host: "h".into(), port: 1 };
        let encoded = register.encode();
        for size in 0..encoded.len() {
            assert!(MetadataRecord::decode(&encoded[..size]).is_err(), "size {size}");
        }
        let mut longer = encoded.clone();
        longer.push(0);
        assert_eq!(MetadataRecord::decode(&longer), Err(RecordError::Trailing(1)));
        assert_eq!(MetadataRecord::decode(&[1, 1]), Err(RecordError::Version(1)));
        assert_eq!(MetadataRecord::decode(&[0, 9]), Err(RecordError::Type(9)));
        let mut bad_host = encoded;
        bad_host[8] = 0xff;
        assert_eq!(MetadataRecord::decode(&bad_host), Err(RecordError::Host));
    }
}
