//! Fetch response framing, written by hand so that record data is never copied.
//!
//! The encoder produces a list of parts: small encoded byte runs (`Part::Encoded`) between
//! the record data of each partition (`Part::Records`, whatever the caller uses to carry
//! record bytes: cached `Bytes` or file regions for sendfile). The connection writes the
//! parts in order. Layout per version (v4..v17):
//!
//! ```text
//! throttle_time_ms i32 | error_code i16 (v7+) | session_id i32 (v7+)
//! responses: [ topic (v4-12: name string; v13+: topic_id uuid)
//!              partitions: [ partition_index i32, error_code i16, high_watermark i64,
//!                            last_stable_offset i64, log_start_offset i64 (v5+),
//!                            aborted_transactions nullable array of
//!                              [producer_id i64, first_offset i64, tagged fields (v12+)],
//!                            preferred_read_replica i32 (v11+),
//!                            records nullable bytes, tagged fields (v12+: tag 0
//!                            diverging_epoch [epoch i32, end_offset i64, tagged fields];
//!                            tag 1 current_leader [leader_id i32, leader_epoch i32,
//!                            tagged fields] (KIP-951, filled in from v16)) ]
//!              tagged fields (v12+) ]
//! tagged fields (v12+: tag 0 node_endpoints (v16+, KIP-951) [node_id i32, host string,
//!                port i32, rack nullable string, tagged fields])
//! ```
//! v12+ ("flexible") writes arrays, strings and bytes with compact (varint) lengths.

use bytes::{BufMut, Bytes, BytesMut};

use super::put_unsigned_varint;

pub const FLEXIBLE_FROM: i16 = 12;
pub const TOPIC_ID_FROM: i16 = 13;

#[derive(Debug)]
pub enum Part<R> {
    Encoded(Bytes),
    Records(R),
}

#[derive(Debug)]
pub struct PartitionData<R> {
    pub partition_index: i32,
    pub error_code: i16,
    pub high_watermark: i64,
    pub last_stable_offset: i64,
    pub log_start_offset: i64,
    /// read_committed: (producer id, first offset) of the aborted transactions in range;
    /// None (null) for read_uncommitted.
    pub aborted: Option<Vec<(i64, i64)>>,
    /// Record data, and its total size in bytes.
    pub records: Vec<R>,
    pub records_size: usize,
    /// A follower's diverging epoch and its end offset (v12+, a tagged field).
    pub diverging_epoch: Option<(i32, i64)>,
    /// The replica the consumer should fetch from instead (v11+, KIP-392); -1: none.
    pub preferred_read_replica: i32,
    /// The partition's leader and leader epoch (v12+, a tagged field; KIP-951).
    pub current_leader: Option<(i32, i32)>,
}

/// A broker a response names (KIP-951's node endpoints).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeEndpoint {
    pub node_id: i32,
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
}

#[derive(Debug)]
pub struct TopicData<R> {
    pub name: String,
    pub topic_id: [u8; 16],
    pub partitions: Vec<PartitionData<R>>,
}

pub struct FetchResponseHead {
    pub throttle_time_ms: i32,
    pub error_code: i16,
    pub session_id: i32,
    /// The leaders the partitions' `current_leader` name (v16+, a tagged field at the end).
    pub node_endpoints: Vec<NodeEndpoint>,
}

/// The first version with node endpoints.
pub const NODE_ENDPOINTS_FROM: i16 = 16;

/// Encodes the response body (after the response header). Returns the parts and the total
/// body size in bytes.
pub fn encode<R>(
    version: i16,
    head: &FetchResponseHead,
    topics: Vec<TopicData<R>>,
) -> (Vec<Part<R>>, usize) {
    assert!((4..=17).contains(&version));
    let flexible = version >= FLEXIBLE_FROM;
    let mut parts = Vec::new();
    let mut size = 0usize;
    let mut out = BytesMut::with_capacity(256);
    out.put_i32(head.throttle_time_ms);
    if version >= 7 {
        out.put_i16(head.error_code);
        out.put_i32(head.session_id);
    }
    put_array_len(&mut out, topics.len(), flexible);
    for topic in topics {
        if version >= TOPIC_ID_FROM {
            out.put_slice(&topic.topic_id);
        } else {
            put_string(&mut out, &topic.name, flexible);
        }
        put_array_len(&mut out, topic.partitions.len(), flexible);
        for partition in topic.partitions {
            out.put_i32(partition.partition_index);
            out.put_i16(partition.error_code);
            out.put_i64(partition.high_watermark);
            out.put_i64(partition.last_stable_offset);
            if version >= 5 {
                out.put_i64(partition.log_start_offset);
            }
            match &partition.aborted {
                None if flexible => put_unsigned_varint(&mut out, 0),
                None => out.put_i32(-1),
                Some(aborted) => {
                    put_array_len(&mut out, aborted.len(), flexible);
                    for (producer_id, first_offset) in aborted {
                        out.put_i64(*producer_id);
                        out.put_i64(*first_offset);
                        if flexible {
                            out.put_u8(0);
                        }
                    }
                }
            }
            if version >= 11 {
                out.put_i32(partition.preferred_read_replica);
            }
            if flexible {
                put_unsigned_varint(&mut out, partition.records_size as u64 + 1);
            } else {
                out.put_i32(partition.records_size as i32);
            }
            if !partition.records.is_empty() {
                size += out.len();
                parts.push(Part::Encoded(out.split().freeze()));
                size += partition.records_size;
                parts.extend(partition.records.into_iter().map(Part::Records));
            }
            if flexible {
                let diverging = partition.diverging_epoch;
                let leader = partition.current_leader;
                out.put_u8(u8::from(diverging.is_some()) + u8::from(leader.is_some()));
                if let Some((epoch, end_offset)) = diverging {
                    // Tag 0, of 13 bytes: the struct and its own (empty) tagged fields.
                    out.put_slice(&[0, 13]);
                    out.put_i32(epoch);
                    out.put_i64(end_offset);
                    out.put_u8(0);
                }
                if let Some((leader_id, leader_epoch)) = leader {
                    // Tag 1, of 9 bytes.
                    out.put_slice(&[1, 9]);
                    out.put_i32(leader_id);
                    out.put_i32(leader_epoch);
                    out.put_u8(0);
                }
            }
        }
        if flexible {
            out.put_u8(0);
        }
    }
    if version >= NODE_ENDPOINTS_FROM && !head.node_endpoints.is_empty() {
        let mut field = BytesMut::new();
        put_node_endpoints(&mut field, &head.node_endpoints);
        out.put_u8(1); // one tagged field: tag 0
        out.put_u8(0);
        put_unsigned_varint(&mut out, field.len() as u64);
        out.put_slice(&field);
    } else if flexible {
        out.put_u8(0);
    }
    size += out.len();
    parts.push(Part::Encoded(out.freeze()));
    (parts, size)
}

fn put_array_len(out: &mut BytesMut, len: usize, flexible: bool) {
    if flexible {
        put_unsigned_varint(out, len as u64 + 1);
    } else {
        out.put_i32(len as i32);
    }
}

/// Node endpoints as the flexible versions write them (Fetch's tagged field, ShareFetch's
/// last field): a compact array of node id, host, port, nullable rack and tagged fields.
pub(super) fn put_node_endpoints(out: &mut BytesMut, endpoints: &[NodeEndpoint]) {
    put_array_len(out, endpoints.len(), true);
    for endpoint in endpoints {
        out.put_i32(endpoint.node_id);
        put_string(out, &endpoint.host, true);
        out.put_i32(endpoint.port);
        match &endpoint.rack {
            Some(rack) => put_string(out, rack, true),
            None => put_unsigned_varint(out, 0),
        }
        out.put_u8(0);
    }
}

fn put_string(out: &mut BytesMut, value: &str, flexible: bool) {
    if flexible {
        put_unsigned_varint(out, value.len() as u64 + 1);
    } else {
        out.put_i16(value.len() as i16);
    }
    out.put_slice(value.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::FetchResponse;
    use kafka_protocol::protocol::Decodable;

    /// Our framing must decode with the reference codec at every version, records intact.
    #[test]
    fn every_version_decodes_with_the_reference_codec() {
        for version in 4..=17i16 {
            let records = vec![Bytes::from_static(b"abc"), Bytes::from_static(b"defg")];
            let topics = vec![TopicData {
                name: "orders".into(),
                topic_id: [7; 16],
                partitions: vec![
                    PartitionData {
                        partition_index: 3,
                        error_code: 0,
                        high_watermark: 42,
                        last_stable_offset: 40,
                        log_start_offset: 5,
                        aborted: Some(vec![(9, 30), (11, 35)]),
                        records,
                        records_size: 7,
                        diverging_epoch: None,
                        preferred_read_replica: -1,
                        current_leader: None,
                    },
                    PartitionData {
                        partition_index: 4,
                        error_code: 1,
                        high_watermark: -1,
                        last_stable_offset: -1,
                        log_start_offset: -1,
                        aborted: None,
                        records: Vec::new(),
                        records_size: 0,
                        diverging_epoch: Some((6, 120)),
                        preferred_read_replica: 2,
                        current_leader: Some((3, 8)),
                    },
                ],
            }];
            let endpoint = |node_id, rack: Option<&str>| NodeEndpoint {
                node_id,
                host: "10.0.0.3".into(),
                port: 9092,
                rack: rack.map(str::to_string),
            };
            let head = FetchResponseHead {
                throttle_time_ms: 0,
                error_code: 0,
                session_id: 0,
                node_endpoints: vec![endpoint(3, Some("r1")), endpoint(4, None)],
            };
            let (parts, size) = encode(version, &head, topics);
            let mut flat = BytesMut::new();
            for part in parts {
                match part {
                    Part::Encoded(b) | Part::Records(b) => flat.extend_from_slice(&b),
                }
            }
            assert_eq!(flat.len(), size, "v{version}");
            let mut buf = flat.freeze();
            let decoded = FetchResponse::decode(&mut buf, version).expect("decodes");
            assert_eq!(buf.len(), 0, "v{version} left bytes");
            let topic = &decoded.responses[0];
            if version >= TOPIC_ID_FROM {
                assert_eq!(topic.topic_id.as_bytes(), &[7; 16]);
            } else {
                assert_eq!(topic.topic.as_str(), "orders");
            }
            let p = &topic.partitions[0];
            assert_eq!(p.partition_index, 3);
            assert_eq!(p.high_watermark, 42);
            assert_eq!(p.last_stable_offset, 40);
            let aborted = p.aborted_transactions.as_ref().expect("aborted list");
            assert_eq!(aborted.len(), 2);
            assert_eq!((aborted[1].producer_id.0, aborted[1].first_offset), (11, 35));
            assert!(topic.partitions[1].aborted_transactions.is_none());
            assert_eq!(p.records.as_deref(), Some(&b"abcdefg"[..]));
            assert_eq!(topic.partitions[1].error_code, 1);
            let diverging = &topic.partitions[1].diverging_epoch;
            let expected = if version >= FLEXIBLE_FROM { (6, 120) } else { (-1, -1) };
            assert_eq!((diverging.epoch, diverging.end_offset), expected, "v{version}");
            assert_eq!(p.diverging_epoch.epoch, -1);
            assert_eq!(p.preferred_read_replica.0, -1);
            let preferred = topic.partitions[1].preferred_read_replica.0;
            assert_eq!(preferred, if version >= 11 { 2 } else { -1 }, "v{version}");
            let leader = &topic.partitions[1].current_leader;
            let expected = if version >= FLEXIBLE_FROM { (3, 8) } else { (-1, -1) };
            assert_eq!((leader.leader_id.0, leader.leader_epoch), expected, "v{version}");
            assert_eq!(p.current_leader.leader_id.0, -1);
            let endpoints: Vec<(i32, &str, i32, Option<&str>)> = decoded
                .node_endpoints
                .iter()
                .map(|e| (e.node_id.0, &*e.host, e.port, e.rack.as_deref()))
                .collect();
            if version >= NODE_ENDPOINTS_FROM {
                let expected = [(3, "10.0.0.3", 9092, Some("r1")), (4, "10.0.0.3", 9092, None)];
                assert_eq!(endpoints, expected, "v{version}");
            } else {
                assert!(endpoints.is_empty(), "v{version}");
            }
        }
    }
}
