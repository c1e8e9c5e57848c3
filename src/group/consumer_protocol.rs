//! Kafka's embedded consumer protocol (`ConsumerProtocolSubscription` v0-3 and
//! `ConsumerProtocolAssignment` v0-3), the bytes classic consumers put in JoinGroup's protocol
//! metadata and SyncGroup's assignments. The coordinator reads them only to move a group
//! between the classic and the KIP-848 protocol (`group.consumer.migration.policy`) and to
//! serve classic members of a consumer group, as Kafka's `ConsumerProtocol` does.
//!
//! Both start with an int16 version; Kafka serializes a classic member's assignment at the
//! version of the member's own subscription, so an old client reads what it can.

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::consumer_protocol_assignment::{
    ConsumerProtocolAssignment, TopicPartition as AssignedTopic,
};
use kafka_protocol::messages::consumer_protocol_subscription::ConsumerProtocolSubscription;
use kafka_protocol::messages::TopicName;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

/// Topic names and partition indexes, in a protocol's order.
pub type NamedPartitions = Vec<(String, Vec<i32>)>;

/// A classic consumer's subscription, as the coordinator uses it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Subscription {
    pub version: i16,
    pub topics: Vec<String>,
    /// v1+: the partitions the member owns (cooperative rebalancing); empty before.
    pub owned: NamedPartitions,
    /// v3+.
    pub rack_id: Option<String>,
}

/// The highest version Kafka's client writes and Spate reads.
const VERSION_MAX: i16 = 3;

/// The version a protocol's metadata starts with (Kafka's `ConsumerProtocol.deserializeVersion`),
/// capped at what Spate writes; None if there is no version.
pub fn version(metadata: &[u8]) -> Option<i16> {
    let version = i16::from_be_bytes(metadata.get(0..2)?.try_into().ok()?);
    (version >= 0).then_some(version.min(VERSION_MAX))
}

/// Reads a subscription (Kafka's `deserializeConsumerProtocolSubscription`: a version above
/// the highest known is read as the highest, whose fields come first); None if malformed.
pub fn decode_subscription(metadata: &[u8]) -> Option<Subscription> {
    let version = version(metadata)?;
    let mut buf = Bytes::copy_from_slice(&metadata[2..]);
    let s = ConsumerProtocolSubscription::decode(&mut buf, version).ok()?;
    Some(Subscription {
        version,
        topics: s.topics.iter().map(|t| t.to_string()).collect(),
        owned: s
            .owned_partitions
            .iter()
            .map(|tp| (tp.topic.0.to_string(), tp.partitions.clone()))
            .collect(),
        rack_id: s.rack_id.as_ref().map(|r| r.to_string()),
    })
}

/// Reads an assignment; None if malformed.
pub fn decode_assignment(bytes: &[u8]) -> Option<NamedPartitions> {
    if bytes.is_empty() {
        return Some(Vec::new());
    }
    let version = version(bytes)?;
    let mut buf = Bytes::copy_from_slice(&bytes[2..]);
    let a = ConsumerProtocolAssignment::decode(&mut buf, version).ok()?;
    let named =
        a.assigned_partitions.iter().map(|tp| (tp.topic.0.to_string(), tp.partitions.clone()));
    Some(named.collect())
}

/// Writes an assignment at `version` (without user data, as Kafka's coordinator does).
pub fn encode_assignment(version: i16, partitions: &NamedPartitions) -> Bytes {
    let version = version.clamp(0, VERSION_MAX);
    let mut assignment = ConsumerProtocolAssignment::default();
    assignment.assigned_partitions = partitions
        .iter()
        .map(|(topic, parts)| {
            let mut tp = AssignedTopic::default();
            tp.topic = TopicName(StrBytes::from_string(topic.clone()));
            tp.partitions = parts.clone();
            tp
        })
        .collect();
    let mut out = BytesMut::new();
    out.extend_from_slice(&version.to_be_bytes());
    // Encoding plain data cannot fail (no field is out of its version's range).
    if assignment.encode(&mut out, version).is_err() {
        out.truncate(2);
    }
    out.freeze()
}

/// A subscription's bytes, as a classic consumer sends them (tests only).
#[cfg(test)]
pub fn subscription_bytes(version: i16, topics: &[&str], owned: &[(&str, &[i32])]) -> Bytes {
    use kafka_protocol::messages::consumer_protocol_subscription::TopicPartition;
    let mut s = ConsumerProtocolSubscription::default();
    s.topics = topics.iter().map(|t| StrBytes::from_string(t.to_string())).collect();
    if version >= 1 {
        s.owned_partitions = owned
            .iter()
            .map(|(t, p)| {
                let mut tp = TopicPartition::default();
                tp.topic = TopicName(StrBytes::from_string(t.to_string()));
                tp.partitions = p.to_vec();
                tp
            })
            .collect();
    }
    let mut out = BytesMut::new();
    out.extend_from_slice(&version.to_be_bytes());
    s.encode(&mut out, version).expect("encodes");
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscriptions_of_every_version_are_read() {
        for version in 0..=3 {
            let bytes = subscription_bytes(version, &["a", "b"], &[("a", &[0, 2])]);
            let s = decode_subscription(&bytes).expect("readable");
            assert_eq!(s.version, version);
            assert_eq!(s.topics, ["a", "b"]);
            let owned: NamedPartitions =
                if version >= 1 { vec![("a".into(), vec![0, 2])] } else { Vec::new() };
            assert_eq!(s.owned, owned);
        }
        assert!(decode_subscription(&[0]).is_none());
        assert!(decode_subscription(&[0, 1, 0, 0, 0, 9]).is_none());
    }

    #[test]
    fn assignments_round_trip_at_each_version() {
        let named: NamedPartitions = vec![("t".into(), vec![1, 3]), ("u".into(), vec![0])];
        for version in 0..=3 {
            let bytes = encode_assignment(version, &named);
            assert_eq!(version_of(&bytes), version);
            assert_eq!(decode_assignment(&bytes), Some(named.clone()));
        }
        assert_eq!(decode_assignment(&[]), Some(Vec::new()));
    }

    fn version_of(bytes: &[u8]) -> i16 {
        i16::from_be_bytes([bytes[0], bytes[1]])
    }
}
