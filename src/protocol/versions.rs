//! The one place that lists which APIs and versions Spate supports.
//!
//! Maxima follow what Apache Kafka 4.0 advertises (clients pin versions to what they were
//! built for; advertising old maxima breaks them). Produce is advertised from v0 although
//! only v3+ is served: librdkafka decides from the advertised range whether it may use the
//! v2 message format with compression (KAFKA-18659), and Kafka 4 does the same.

use kafka_protocol::messages::ApiKey;

#[derive(Debug, Clone, Copy)]
pub struct Supported {
    pub key: ApiKey,
    /// Lowest version we advertise.
    pub advertised_min: i16,
    /// Lowest version we serve; below it the request is refused.
    pub min: i16,
    pub max: i16,
}

const fn api(key: ApiKey, min: i16, max: i16) -> Supported {
    Supported { key, advertised_min: min, min, max }
}

pub const SUPPORTED: [Supported; 52] = [
    Supported { key: ApiKey::Produce, advertised_min: 0, min: 3, max: 12 },
    api(ApiKey::Fetch, 4, 17),
    api(ApiKey::ListOffsets, 1, 9),
    api(ApiKey::Metadata, 0, 12),
    api(ApiKey::ApiVersions, 0, 4),
    api(ApiKey::CreateTopics, 2, 7),
    api(ApiKey::DeleteTopics, 1, 6),
    api(ApiKey::DescribeConfigs, 1, 4),
    api(ApiKey::CreatePartitions, 0, 3),
    api(ApiKey::DeleteRecords, 0, 2),
    api(ApiKey::DescribeCluster, 0, 1),
    api(ApiKey::AlterConfigs, 0, 2),
    api(ApiKey::IncrementalAlterConfigs, 0, 1),
    // Cluster admin at Kafka 4.0's ranges; a single node answers them as a cluster of one
    // broker (every election unneeded, no replica to move to).
    api(ApiKey::DescribeTopicPartitions, 0, 0),
    api(ApiKey::ElectLeaders, 0, 2),
    api(ApiKey::AlterPartitionReassignments, 0, 1),
    api(ApiKey::ListPartitionReassignments, 0, 0),
    // Consumer groups (classic protocol) at Kafka 4.0's ranges.
    api(ApiKey::FindCoordinator, 0, 6),
    api(ApiKey::JoinGroup, 0, 9),
    api(ApiKey::SyncGroup, 0, 5),
    api(ApiKey::Heartbeat, 0, 4),
    api(ApiKey::LeaveGroup, 0, 5),
    // OffsetCommit/OffsetFetch v10 name topics by id (KIP-848, Kafka 4.1).
    api(ApiKey::OffsetCommit, 2, 10),
    api(ApiKey::OffsetFetch, 1, 10),
    api(ApiKey::DescribeGroups, 0, 6),
    api(ApiKey::ListGroups, 0, 5),
    api(ApiKey::DeleteGroups, 0, 2),
    api(ApiKey::OffsetDelete, 0, 0),
    // KIP-848 consumer groups at Kafka 4's ranges (OffsetCommit/OffsetFetch v9+ above carry
    // the member epoch).
    api(ApiKey::ConsumerGroupHeartbeat, 0, 1),
    api(ApiKey::ConsumerGroupDescribe, 0, 1),
    // Share groups (KIP-932) at Kafka 4.1's stable versions, on a single node and clustered.
    api(ApiKey::ShareGroupHeartbeat, 1, 1),
    api(ApiKey::ShareGroupDescribe, 1, 1),
    api(ApiKey::ShareFetch, 1, 1),
    api(ApiKey::ShareAcknowledge, 1, 1),
    // v1: each partition's lag (Kafka 4.2, KIP-1226).
    api(ApiKey::DescribeShareGroupOffsets, 0, 1),
    api(ApiKey::AlterShareGroupOffsets, 0, 0),
    api(ApiKey::DeleteShareGroupOffsets, 0, 0),
    api(ApiKey::InitProducerId, 0, 5),
    // Transactions at Kafka 4.0's ranges (transaction version 1: the `transaction.version`
    // feature is not advertised, so clients do not use KIP-890's flows).
    api(ApiKey::AddPartitionsToTxn, 0, 5),
    api(ApiKey::AddOffsetsToTxn, 0, 4),
    api(ApiKey::TxnOffsetCommit, 0, 5),
    api(ApiKey::EndTxn, 0, 5),
    api(ApiKey::DescribeTransactions, 0, 0),
    api(ApiKey::ListTransactions, 0, 1),
    api(ApiKey::DescribeProducers, 0, 0),
    // SASL (KIP-43, KIP-152): v0 of SaslHandshake is followed by raw tokens outside the
    // Kafka framing, which no current client sends; v1 wraps them in SaslAuthenticate.
    Supported { key: ApiKey::SaslHandshake, advertised_min: 0, min: 1, max: 1 },
    api(ApiKey::SaslAuthenticate, 0, 2),
    api(ApiKey::AlterUserScramCredentials, 0, 0),
    api(ApiKey::DescribeUserScramCredentials, 0, 0),
    // ACLs at Kafka 4.0's ranges, advertised with or without an authorizer as Kafka does
    // (without one they answer SECURITY_DISABLED).
    api(ApiKey::CreateAcls, 1, 3),
    api(ApiKey::DescribeAcls, 1, 3),
    api(ApiKey::DeleteAcls, 1, 3),
];

/// APIs a node serves only in a cluster (`--controller-quorum-voters`), at Kafka 4.0's
/// ranges. A single node does not advertise them, as a ZooKeeper-mode Kafka broker did not
/// advertise DescribeQuorum: clients then report it as unsupported without asking.
/// WriteTxnMarkers is what one node's transaction coordinator sends another's partitions;
/// UnregisterBroker removes a registration from the metadata log.
pub const CLUSTER_ONLY: [Supported; 3] = [
    api(ApiKey::DescribeQuorum, 0, 2),
    api(ApiKey::WriteTxnMarkers, 1, 1),
    api(ApiKey::UnregisterBroker, 0, 0),
];

/// What a node advertises: `SUPPORTED`, plus `CLUSTER_ONLY` when clustered.
pub fn advertised(clustered: bool) -> impl Iterator<Item = Supported> {
    let extra: &[Supported] = if clustered { &CLUSTER_ONLY } else { &[] };
    SUPPORTED.iter().chain(extra).copied()
}

/// The supported range of `api_key`, if we implement it.
pub fn supported(api_key: i16) -> Option<Supported> {
    SUPPORTED.iter().copied().find(|s| s.key as i16 == api_key)
}

/// Whether we serve this version of this API (on a clustered node or not).
pub fn serves(api_key: i16, api_version: i16, clustered: bool) -> bool {
    advertised(clustered)
        .find(|s| s.key as i16 == api_key)
        .is_some_and(|s| (s.min..=s.max).contains(&api_version))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::protocol::Message;

    #[test]
    fn every_served_range_is_inside_what_the_codec_supports() {
        for s in SUPPORTED.iter().chain(&CLUSTER_ONLY) {
            let codec = s.key.valid_versions();
            assert!(s.min >= codec.min, "{:?} min {} < codec {}", s.key, s.min, codec.min);
            assert!(s.max <= codec.max, "{:?} max {} > codec {}", s.key, s.max, codec.max);
            assert!(s.advertised_min <= s.min);
        }
        assert_eq!(kafka_protocol::messages::ApiVersionsRequest::VERSIONS.max, 4);
    }

    #[test]
    fn lookups() {
        assert!(serves(18, 3, false));
        assert!(!serves(18, 5, false));
        assert!(!serves(0, 2, false));
        assert!(serves(0, 3, true));
        assert!(!serves(55, 2, false));
        assert!(serves(55, 2, true));
        assert!(serves(64, 0, true) && !serves(64, 0, false) && !serves(64, 1, true));
        assert!(!serves(55, 3, true));
        assert!(supported(999).is_none());
    }
}
