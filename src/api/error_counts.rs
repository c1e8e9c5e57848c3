//! The error codes a response carries, for the per-API error counters (`metrics`): Kafka's
//! `AbstractResponse.errorCounts()`, one code per place it appears (the request, each
//! topic, partition, group, resource or filter), walked before the response is encoded.
//! `Context::reply` counts every response through it; the hand-framed Fetch response
//! counts its partitions in `fetch.rs`.

use kafka_protocol::messages::*;

/// A response's error codes, each passed to `each` (code 0, no error, included).
pub(crate) trait ErrorCodes {
    fn error_codes(&self, each: &mut dyn FnMut(i16));
}

macro_rules! error_codes {
    ($($t:ty => |$r:ident, $f:ident| $body:block)*) => {
        $(impl ErrorCodes for $t {
            fn error_codes(&self, $f: &mut dyn FnMut(i16)) {
                let $r = self;
                $body
            }
        })*
    };
}

error_codes! {
    ProduceResponse => |r, f| {
        r.responses.iter().flat_map(|t| &t.partition_responses).for_each(|p| f(p.error_code));
    }
    MetadataResponse => |r, f| {
        for t in &r.topics {
            f(t.error_code);
            t.partitions.iter().for_each(|p| f(p.error_code));
        }
    }
    ListOffsetsResponse => |r, f| {
        r.topics.iter().flat_map(|t| &t.partitions).for_each(|p| f(p.error_code));
    }
    CreateTopicsResponse => |r, f| { r.topics.iter().for_each(|t| f(t.error_code)); }
    DeleteTopicsResponse => |r, f| { r.responses.iter().for_each(|t| f(t.error_code)); }
    CreatePartitionsResponse => |r, f| { r.results.iter().for_each(|t| f(t.error_code)); }
    DescribeConfigsResponse => |r, f| { r.results.iter().for_each(|t| f(t.error_code)); }
    AlterConfigsResponse => |r, f| { r.responses.iter().for_each(|t| f(t.error_code)); }
    IncrementalAlterConfigsResponse => |r, f| {
        r.responses.iter().for_each(|t| f(t.error_code));
    }
    DescribeClusterResponse => |r, f| { f(r.error_code); }
    DescribeTopicPartitionsResponse => |r, f| {
        for t in &r.topics {
            f(t.error_code);
            t.partitions.iter().for_each(|p| f(p.error_code));
        }
    }
    ElectLeadersResponse => |r, f| {
        f(r.error_code);
        r.replica_election_results
            .iter()
            .flat_map(|t| &t.partition_result)
            .for_each(|p| f(p.error_code));
    }
    AlterPartitionReassignmentsResponse => |r, f| {
        f(r.error_code);
        r.responses.iter().flat_map(|t| &t.partitions).for_each(|p| f(p.error_code));
    }
    ListPartitionReassignmentsResponse => |r, f| { f(r.error_code); }
    UnregisterBrokerResponse => |r, f| { f(r.error_code); }
    DescribeQuorumResponse => |r, f| {
        f(r.error_code);
        for t in &r.topics {
            t.partitions.iter().for_each(|p| f(p.error_code));
        }
    }
    FindCoordinatorResponse => |r, f| {
        match r.coordinators.is_empty() {
            true => f(r.error_code),
            false => r.coordinators.iter().for_each(|c| f(c.error_code)),
        }
    }
    JoinGroupResponse => |r, f| { f(r.error_code); }
    SyncGroupResponse => |r, f| { f(r.error_code); }
    HeartbeatResponse => |r, f| { f(r.error_code); }
    LeaveGroupResponse => |r, f| {
        f(r.error_code);
        r.members.iter().for_each(|m| f(m.error_code));
    }
    OffsetCommitResponse => |r, f| {
        r.topics.iter().flat_map(|t| &t.partitions).for_each(|p| f(p.error_code));
    }
    OffsetFetchResponse => |r, f| {
        if r.groups.is_empty() {
            f(r.error_code);
            r.topics.iter().flat_map(|t| &t.partitions).for_each(|p| f(p.error_code));
        }
        for g in &r.groups {
            f(g.error_code);
            g.topics.iter().flat_map(|t| &t.partitions).for_each(|p| f(p.error_code));
        }
    }
    OffsetDeleteResponse => |r, f| {
        f(r.error_code);
        r.topics.iter().flat_map(|t| &t.partitions).for_each(|p| f(p.error_code));
    }
    DescribeGroupsResponse => |r, f| { r.groups.iter().for_each(|g| f(g.error_code)); }
    ListGroupsResponse => |r, f| { f(r.error_code); }
    DeleteGroupsResponse => |r, f| { r.results.iter().for_each(|g| f(g.error_code)); }
    ConsumerGroupHeartbeatResponse => |r, f| { f(r.error_code); }
    ConsumerGroupDescribeResponse => |r, f| { r.groups.iter().for_each(|g| f(g.error_code)); }
    ShareGroupHeartbeatResponse => |r, f| { f(r.error_code); }
    ShareGroupDescribeResponse => |r, f| { r.groups.iter().for_each(|g| f(g.error_code)); }
    ShareFetchResponse => |r, f| {
        f(r.error_code);
        r.responses.iter().flat_map(|t| &t.partitions).for_each(|p| f(p.error_code));
    }
    DescribeShareGroupOffsetsResponse => |r, f| {
        for g in &r.groups {
            f(g.error_code);
            g.topics.iter().flat_map(|t| &t.partitions).for_each(|p| f(p.error_code));
        }
    }
    AlterShareGroupOffsetsResponse => |r, f| {
        f(r.error_code);
        r.responses.iter().flat_map(|t| &t.partitions).for_each(|p| f(p.error_code));
    }
    DeleteShareGroupOffsetsResponse => |r, f| {
        f(r.error_code);
        r.responses.iter().for_each(|t| f(t.error_code));
    }
    ShareAcknowledgeResponse => |r, f| {
        f(r.error_code);
        r.responses.iter().flat_map(|t| &t.partitions).for_each(|p| f(p.error_code));
    }
    InitProducerIdResponse => |r, f| { f(r.error_code); }
    DeleteRecordsResponse => |r, f| {
        r.topics.iter().flat_map(|t| &t.partitions).for_each(|p| f(p.error_code));
    }
    AddPartitionsToTxnResponse => |r, f| {
        f(r.error_code);
        let old = r.results_by_topic_v3_and_below.iter();
        old.flat_map(|t| &t.results_by_partition).for_each(|p| f(p.partition_error_code));
        for txn in &r.results_by_transaction {
            let topics = txn.topic_results.iter();
            topics.flat_map(|t| &t.results_by_partition).for_each(|p| f(p.partition_error_code));
        }
    }
    AddOffsetsToTxnResponse => |r, f| { f(r.error_code); }
    TxnOffsetCommitResponse => |r, f| {
        r.topics.iter().flat_map(|t| &t.partitions).for_each(|p| f(p.error_code));
    }
    EndTxnResponse => |r, f| { f(r.error_code); }
    WriteTxnMarkersResponse => |r, f| {
        let topics = r.markers.iter().flat_map(|m| &m.topics);
        topics.flat_map(|t| &t.partitions).for_each(|p| f(p.error_code));
    }
    DescribeTransactionsResponse => |r, f| {
        r.transaction_states.iter().for_each(|t| f(t.error_code));
    }
    ListTransactionsResponse => |r, f| { f(r.error_code); }
    DescribeProducersResponse => |r, f| {
        r.topics.iter().flat_map(|t| &t.partitions).for_each(|p| f(p.error_code));
    }
    SaslHandshakeResponse => |r, f| { f(r.error_code); }
    SaslAuthenticateResponse => |r, f| { f(r.error_code); }
    AlterUserScramCredentialsResponse => |r, f| {
        r.results.iter().for_each(|u| f(u.error_code));
    }
    DescribeUserScramCredentialsResponse => |r, f| {
        f(r.error_code);
        r.results.iter().for_each(|u| f(u.error_code));
    }
    CreateAclsResponse => |r, f| { r.results.iter().for_each(|a| f(a.error_code)); }
    DescribeAclsResponse => |r, f| { f(r.error_code); }
    DeleteAclsResponse => |r, f| {
        for filter in &r.filter_results {
            f(filter.error_code);
            filter.matching_acls.iter().for_each(|a| f(a.error_code));
        }
    }
    ApiVersionsResponse => |r, f| { f(r.error_code); }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codes<T: ErrorCodes>(response: &T) -> Vec<i16> {
        let mut out = Vec::new();
        response.error_codes(&mut |code| out.push(code));
        out
    }

    #[test]
    fn produce_counts_each_partition() {
        let mut response = ProduceResponse::default();
        let mut topic = produce_response::TopicProduceResponse::default();
        for code in [0, 3, 3] {
            let mut partition = produce_response::PartitionProduceResponse::default();
            partition.error_code = code;
            topic.partition_responses.push(partition);
        }
        response.responses.push(topic);
        assert_eq!(codes(&response), vec![0, 3, 3]);
    }

    #[test]
    fn offset_fetch_counts_groups_or_the_old_layout() {
        let mut response = OffsetFetchResponse::default();
        response.error_code = 16;
        assert_eq!(codes(&response), vec![16]);
        let mut group = offset_fetch_response::OffsetFetchResponseGroup::default();
        group.error_code = 15;
        response.groups.push(group);
        assert_eq!(codes(&response), vec![15]);
    }
}
