//! A request frame as the broker reads it off a connection (after the 4-byte length): the
//! prefix, the version check, the header, then the body of every API the broker serves,
//! decoded with the same codec and version as its handler does (`api::Context::decode`),
//! and Spate's private share call between brokers (`group::share_call`).
//! Anything may be refused; nothing may panic, hang or allocate beyond the frame's size
//! many times over (libFuzzer's `-rss_limit_mb` and `-malloc_limit_mb` catch that).

#![no_main]

use bytes::Bytes;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::Decodable;
use libfuzzer_sys::fuzz_target;
use spate::group::share_call::{ShareAnswer, ShareCall, SHARE_CALL_API_KEY};
use spate::model::batch;
use spate::protocol::versions;
use spate::protocol::RequestPrefix;
use spate::security::acl::{AclBinding, AclFilter, WireAcl};

fuzz_target!(|data: &[u8]| {
    let frame = Bytes::copy_from_slice(data);
    let Some(prefix) = RequestPrefix::parse(&frame) else { return };
    if prefix.api_key == SHARE_CALL_API_KEY {
        // Spate's private request between brokers: a share call after the prefix and the
        // client id. A leader decodes the other broker's answer with the same rules, so
        // the same bytes go to the answer's decoder too.
        let body = frame.slice(8.min(frame.len())..);
        let _ = ShareCall::decode(body.clone());
        let _ = ShareAnswer::decode(body);
        return;
    }
    let Ok(api_key) = ApiKey::try_from(prefix.api_key) else { return };
    // Both modes: the clustered broker serves a few more APIs.
    if !versions::serves(prefix.api_key, prefix.api_version, true) {
        return;
    }
    let mut body = frame.clone();
    let header_version = api_key.request_header_version(prefix.api_version);
    if RequestHeader::decode(&mut body, header_version).is_err() {
        return;
    }
    let _ = decode_body(api_key, prefix.api_version, body);
});

fn decode<T: Decodable>(mut body: Bytes, version: i16) -> bool {
    T::decode(&mut body, version).is_ok()
}

/// Produce goes on as its handler does: each partition's records split into batches, each
/// validated (`api::produce`).
fn produce(mut body: Bytes, version: i16) -> bool {
    let Ok(request) = ProduceRequest::decode(&mut body, version) else { return false };
    for topic in &request.topic_data {
        for partition in &topic.partition_data {
            if let Some(records) = &partition.records {
                let _ = batch::split_batches(records, 1 << 20);
            }
        }
    }
    true
}

/// The body types of the APIs a node serves (`versions::advertised`, clustered). An API
/// served without a decoder here stops the target at once, so the list cannot fall behind
/// the broker.
fn decode_body(api_key: ApiKey, version: i16, body: Bytes) -> bool {
    match api_key {
        ApiKey::Produce => produce(body, version),
        ApiKey::Fetch => decode::<FetchRequest>(body, version),
        ApiKey::ListOffsets => decode::<ListOffsetsRequest>(body, version),
        ApiKey::Metadata => decode::<MetadataRequest>(body, version),
        ApiKey::ApiVersions => decode::<ApiVersionsRequest>(body, version),
        ApiKey::CreateTopics => decode::<CreateTopicsRequest>(body, version),
        ApiKey::DeleteTopics => decode::<DeleteTopicsRequest>(body, version),
        ApiKey::DescribeConfigs => decode::<DescribeConfigsRequest>(body, version),
        ApiKey::CreatePartitions => decode::<CreatePartitionsRequest>(body, version),
        ApiKey::DeleteRecords => decode::<DeleteRecordsRequest>(body, version),
        ApiKey::DescribeCluster => decode::<DescribeClusterRequest>(body, version),
        ApiKey::DescribeQuorum => decode::<DescribeQuorumRequest>(body, version),
        ApiKey::DescribeTopicPartitions => decode::<DescribeTopicPartitionsRequest>(body, version),
        ApiKey::ElectLeaders => decode::<ElectLeadersRequest>(body, version),
        ApiKey::AlterPartitionReassignments => {
            decode::<AlterPartitionReassignmentsRequest>(body, version)
        }
        ApiKey::ListPartitionReassignments => {
            decode::<ListPartitionReassignmentsRequest>(body, version)
        }
        ApiKey::AlterConfigs => decode::<AlterConfigsRequest>(body, version),
        ApiKey::IncrementalAlterConfigs => decode::<IncrementalAlterConfigsRequest>(body, version),
        ApiKey::FindCoordinator => decode::<FindCoordinatorRequest>(body, version),
        ApiKey::JoinGroup => decode::<JoinGroupRequest>(body, version),
        ApiKey::SyncGroup => decode::<SyncGroupRequest>(body, version),
        ApiKey::Heartbeat => decode::<HeartbeatRequest>(body, version),
        ApiKey::LeaveGroup => decode::<LeaveGroupRequest>(body, version),
        ApiKey::OffsetCommit => decode::<OffsetCommitRequest>(body, version),
        ApiKey::OffsetFetch => decode::<OffsetFetchRequest>(body, version),
        ApiKey::DescribeGroups => decode::<DescribeGroupsRequest>(body, version),
        ApiKey::ListGroups => decode::<ListGroupsRequest>(body, version),
        ApiKey::DeleteGroups => decode::<DeleteGroupsRequest>(body, version),
        ApiKey::OffsetDelete => decode::<OffsetDeleteRequest>(body, version),
        ApiKey::InitProducerId => decode::<InitProducerIdRequest>(body, version),
        ApiKey::AddPartitionsToTxn => decode::<AddPartitionsToTxnRequest>(body, version),
        ApiKey::AddOffsetsToTxn => decode::<AddOffsetsToTxnRequest>(body, version),
        ApiKey::TxnOffsetCommit => decode::<TxnOffsetCommitRequest>(body, version),
        ApiKey::EndTxn => decode::<EndTxnRequest>(body, version),
        ApiKey::DescribeTransactions => decode::<DescribeTransactionsRequest>(body, version),
        ApiKey::ListTransactions => decode::<ListTransactionsRequest>(body, version),
        ApiKey::DescribeProducers => decode::<DescribeProducersRequest>(body, version),
        ApiKey::SaslHandshake => decode::<SaslHandshakeRequest>(body, version),
        ApiKey::SaslAuthenticate => decode::<SaslAuthenticateRequest>(body, version),
        ApiKey::DescribeUserScramCredentials => {
            decode::<DescribeUserScramCredentialsRequest>(body, version)
        }
        ApiKey::AlterUserScramCredentials => {
            decode::<AlterUserScramCredentialsRequest>(body, version)
        }
        ApiKey::CreateAcls => create_acls(body, version),
        ApiKey::DescribeAcls => describe_acls(body, version),
        ApiKey::DeleteAcls => delete_acls(body, version),
        ApiKey::ConsumerGroupHeartbeat => decode::<ConsumerGroupHeartbeatRequest>(body, version),
        ApiKey::ConsumerGroupDescribe => decode::<ConsumerGroupDescribeRequest>(body, version),
        ApiKey::ShareGroupHeartbeat => decode::<ShareGroupHeartbeatRequest>(body, version),
        ApiKey::ShareGroupDescribe => decode::<ShareGroupDescribeRequest>(body, version),
        ApiKey::ShareFetch => decode::<ShareFetchRequest>(body, version),
        ApiKey::ShareAcknowledge => decode::<ShareAcknowledgeRequest>(body, version),
        ApiKey::DescribeShareGroupOffsets => {
            decode::<DescribeShareGroupOffsetsRequest>(body, version)
        }
        ApiKey::AlterShareGroupOffsets => decode::<AlterShareGroupOffsetsRequest>(body, version),
        ApiKey::DeleteShareGroupOffsets => decode::<DeleteShareGroupOffsetsRequest>(body, version),
        ApiKey::WriteTxnMarkers => decode::<WriteTxnMarkersRequest>(body, version),
        ApiKey::UnregisterBroker => decode::<UnregisterBrokerRequest>(body, version),
        other => {
            let served = versions::advertised(true).any(|s| s.key == other);
            assert!(!served, "{other:?} is served but the fuzz target has no decoder for it");
            false
        }
    }
}

/// CreateAcls goes on as its handler does: each creation validated (`security::acl`).
fn create_acls(mut body: Bytes, version: i16) -> bool {
    let Ok(request) = CreateAclsRequest::decode(&mut body, version) else { return false };
    for c in request.creations {
        let _ = AclBinding::from_wire(WireAcl {
            resource_type: c.resource_type,
            name: Some(c.resource_name.to_string()),
            pattern: c.resource_pattern_type,
            principal: Some(c.principal.to_string()),
            host: Some(c.host.to_string()),
            operation: c.operation,
            permission: c.permission_type,
        });
    }
    true
}

/// DescribeAcls: the filter read as its handler reads it.
fn describe_acls(mut body: Bytes, version: i16) -> bool {
    let Ok(r) = DescribeAclsRequest::decode(&mut body, version) else { return false };
    let _ = AclFilter::from_wire(WireAcl {
        resource_type: r.resource_type_filter,
        name: r.resource_name_filter.map(|s| s.to_string()),
        pattern: r.pattern_type_filter,
        principal: r.principal_filter.map(|s| s.to_string()),
        host: r.host_filter.map(|s| s.to_string()),
        operation: r.operation,
        permission: r.permission_type,
    });
    true
}

/// DeleteAcls: each filter read as its handler reads it.
fn delete_acls(mut body: Bytes, version: i16) -> bool {
    let Ok(request) = DeleteAclsRequest::decode(&mut body, version) else { return false };
    for f in request.filters {
        let _ = AclFilter::from_wire(WireAcl {
            resource_type: f.resource_type_filter,
            name: f.resource_name_filter.map(|s| s.to_string()),
            pattern: f.pattern_type_filter,
            principal: f.principal_filter.map(|s| s.to_string()),
            host: f.host_filter.map(|s| s.to_string()),
            operation: f.operation,
            permission: f.permission_type,
        });
    }
    true
}
