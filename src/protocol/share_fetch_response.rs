//! ShareFetch response framing (v1, the version served), written by hand so that record
//! data is never copied, as `fetch_response` does for Fetch: small encoded runs
//! (`Part::Encoded`) between the record data of each partition (`Part::Records`, cached
//! `Bytes` or file regions for sendfile). Layout (every version is flexible):
//!
//! ```text
//! throttle_time_ms i32 | error_code i16 | error_message compact nullable string
//! acquisition_lock_timeout_ms i32
//! responses: [ topic_id uuid
//!              partitions: [ partition_index i32, error_code i16,
//!                            error_message compact nullable string,
//!                            acknowledge_error_code i16,
//!                            acknowledge_error_message compact nullable string,
//!                            current_leader [leader_id i32, leader_epoch i32, tagged fields],
//!                            records compact nullable bytes,
//!                            acquired_records: [first_offset i64, last_offset i64,
//!                                               delivery_count i16, tagged fields],
//!                            tagged fields ]
//!              tagged fields ]
//! node_endpoints: [node_id i32, host string, port i32, rack nullable string, tagged fields]
//! tagged fields
//! ```
//!
//! The messages are always null. The node endpoints are those of the leaders the partitions
//! name that are other brokers (a clustered node's NOT_LEADER_OR_FOLLOWER, KIP-951).

use bytes::{BufMut, BytesMut};

use super::fetch_response::{put_node_endpoints, NodeEndpoint, Part};
use super::put_unsigned_varint;

/// The one ShareFetch version this framing writes.
pub const VERSION: i16 = 1;

/// One partition of the answer.
#[derive(Debug)]
pub struct PartitionData<R> {
    pub partition_index: i32,
    pub error_code: i16,
    pub acknowledge_error_code: i16,
    pub leader_id: i32,
    pub leader_epoch: i32,
    /// The record data (none: empty records, as the reference codec writes a partition
    /// without any) and its total size in bytes.
    pub records: Vec<R>,
    pub records_size: usize,
    /// (first offset, last offset, delivery count) of each acquired run.
    pub acquired: Vec<(i64, i64, i16)>,
}

#[derive(Debug)]
pub struct TopicData<R> {
    pub topic_id: [u8; 16],
    pub partitions: Vec<PartitionData<R>>,
}

/// Encodes the response body (after the response header). Returns the parts and the total
/// body size in bytes.
pub fn encode<R>(
    error_code: i16,
    acquisition_lock_timeout_ms: i32,
    topics: Vec<TopicData<R>>,
    node_endpoints: &[NodeEndpoint],
) -> (Vec<Part<R>>, usize) {
    let mut parts = Vec::new();
    let mut size = 0usize;
    let mut out = BytesMut::with_capacity(256);
    out.put_i32(0); // throttle_time_ms
    out.put_i16(error_code);
    put_unsigned_varint(&mut out, 0); // error_message: null
    out.put_i32(acquisition_lock_timeout_ms);
    put_unsigned_varint(&mut out, topics.len() as u64 + 1);
    for topic in topics {
        out.put_slice(&topic.topic_id);
        put_unsigned_varint(&mut out, topic.partitions.len() as u64 + 1);
        for partition in topic.partitions {
            out.put_i32(partition.partition_index);
            out.put_i16(partition.error_code);
            put_unsigned_varint(&mut out, 0);
            out.put_i16(partition.acknowledge_error_code);
            put_unsigned_varint(&mut out, 0);
            out.put_i32(partition.leader_id);
            out.put_i32(partition.leader_epoch);
            out.put_u8(0);
            put_unsigned_varint(&mut out, partition.records_size as u64 + 1);
            if !partition.records.is_empty() {
                size += out.len();
                parts.push(Part::Encoded(out.split().freeze()));
                size += partition.records_size;
                parts.extend(partition.records.into_iter().map(Part::Records));
            }
            put_unsigned_varint(&mut out, partition.acquired.len() as u64 + 1);
            for (first_offset, last_offset, delivery_count) in partition.acquired {
                out.put_i64(first_offset);
                out.put_i64(last_offset);
                out.put_i16(delivery_count);
                out.put_u8(0);
            }
            out.put_u8(0);
        }
        out.put_u8(0);
    }
    put_node_endpoints(&mut out, node_endpoints);
    out.put_u8(0);
    size += out.len();
    parts.push(Part::Encoded(out.freeze()));
    (parts, size)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use kafka_protocol::messages::share_fetch_response::{
        AcquiredRecords, LeaderIdAndEpoch, PartitionData as RefPartition,
        ShareFetchableTopicResponse,
    };
    use kafka_protocol::messages::ShareFetchResponse;
    use kafka_protocol::protocol::Encodable;

    /// The hand framing writes exactly what the reference codec writes for the same answer.
    #[test]
    fn the_framing_matches_the_reference_codec_byte_for_byte() {
        let records = vec![Bytes::from_static(b"abc"), Bytes::from_static(b"defgh")];
        let topics = vec![
            TopicData {
                topic_id: [7; 16],
                partitions: vec![
                    PartitionData {
                        partition_index: 3,
                        error_code: 0,
                        acknowledge_error_code: 0,
                        leader_id: 1,
                        leader_epoch: -1,
                        records,
                        records_size: 8,
                        acquired: vec![(10, 19, 1), (25, 25, 3)],
                    },
                    PartitionData {
                        partition_index: 4,
                        error_code: 0,
                        acknowledge_error_code: 84,
                        leader_id: 1,
                        leader_epoch: -1,
                        records: vec![],
                        records_size: 0,
                        acquired: vec![],
                    },
                ],
            },
            TopicData { topic_id: [9; 16], partitions: vec![] },
        ];
        let endpoints = [
            NodeEndpoint { node_id: 2, host: "10.0.0.2".into(), port: 9092, rack: None },
            NodeEndpoint { node_id: 3, host: "b3".into(), port: 19092, rack: Some("r1".into()) },
        ];
        let (parts, size) = encode(0, 30_000, topics, &endpoints);
        let mut ours = Vec::new();
        for part in parts {
            match part {
                Part::Encoded(bytes) | Part::Records(bytes) => ours.extend_from_slice(&bytes),
            }
        }
        assert_eq!(ours.len(), size);

        let mut reference = ShareFetchResponse::default();
        reference.acquisition_lock_timeout_ms = 30_000;
        let mut leader = LeaderIdAndEpoch::default();
        leader.leader_id = 1;
        leader.leader_epoch = -1;
        let mut first = RefPartition::default();
        first.partition_index = 3;
        first.current_leader = leader.clone();
        first.records = Some(Bytes::from_static(b"abcdefgh"));
        first.acquired_records = [(10, 19, 1), (25, 25, 3)]
            .into_iter()
            .map(|(first_offset, last_offset, delivery_count)| {
                let mut run = AcquiredRecords::default();
                run.first_offset = first_offset;
                run.last_offset = last_offset;
                run.delivery_count = delivery_count;
                run
            })
            .collect();
        let mut second = RefPartition::default();
        second.partition_index = 4;
        second.acknowledge_error_code = 84;
        second.current_leader = leader;
        let mut topic = ShareFetchableTopicResponse::default();
        topic.topic_id = uuid::Uuid::from_bytes([7; 16]);
        topic.partitions = vec![first, second];
        let mut empty = ShareFetchableTopicResponse::default();
        empty.topic_id = uuid::Uuid::from_bytes([9; 16]);
        reference.responses = vec![topic, empty];
        reference.node_endpoints = endpoints
            .iter()
            .map(|e| {
                let mut node =
                    kafka_protocol::messages::share_fetch_response::NodeEndpoint::default();
                node.node_id = e.node_id.into();
                node.host = kafka_protocol::protocol::StrBytes::from_string(e.host.clone());
                node.port = e.port;
                node.rack = e.rack.clone().map(kafka_protocol::protocol::StrBytes::from_string);
                node
            })
            .collect();
        let mut theirs = BytesMut::new();
        reference.encode(&mut theirs, VERSION).expect("encodes");
        assert_eq!(ours, theirs.to_vec());
    }
}
