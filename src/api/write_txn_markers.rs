//! WriteTxnMarkers (API 27, v1; clustered only): the transaction coordinator of another node
//! ends a transaction in the partitions this node leads, as Kafka's coordinator asks each
//! partition leader. Each partition appends the control batch on its owning shard
//! (`Partitions::write_markers`: only as leader, and on a replicated partition answered once
//! its high watermark passed the marker), one message per owning shard for the whole
//! request; a partition of `__consumer_offsets` goes to its group coordinator instead,
//! which writes the marker and then settles the producer's pending offsets there. Errors are
//! per partition; the coordinator sends the failed ones again. Needs
//! CLUSTER_ACTION on the cluster when the authorizer is on, as in Kafka.

use std::collections::BTreeMap;

use bytes::Bytes;
use futures::future::join_all;
use kafka_protocol::messages::write_txn_markers_response::{
    WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
};
use kafka_protocol::messages::{WriteTxnMarkersRequest, WriteTxnMarkersResponse};

use super::{Context, Outcome};
use crate::group::coordinator::{GroupRequest, GroupResponse, OFFSETS_TOPIC};
use crate::model::{ErrorCode, ProducerEpoch, ProducerId, ShardId, TopicPartition, TxnOutcome};
use crate::partition::{PartitionRequest, PartitionResponse};
use crate::security::acl::Operation;
use crate::storage::log::Marker;

/// Where a partition's answer goes: (marker, topic, partition) indexes of the response.
type Slot = (usize, usize, usize);

pub async fn handle(ctx: &Context, body: Bytes) -> Outcome {
    let request: WriteTxnMarkersRequest = match ctx.decode(body) {
        Ok(r) => r,
        Err(close) => return close,
    };
    // Kafka: only brokers (CLUSTER_ACTION on the cluster) write markers.
    let allowed = ctx.cluster_allowed(Operation::ClusterAction);
    let node_id = ctx.shard().config.node_id;
    let mut by_shard: BTreeMap<ShardId, Vec<(TopicPartition, Marker)>> = BTreeMap::new();
    let mut slots: BTreeMap<ShardId, Vec<Slot>> = BTreeMap::new();
    // Partitions of `__consumer_offsets`: their group coordinators write the markers.
    let mut offsets: Vec<(Slot, TopicPartition, Marker)> = Vec::new();
    let mut response = WriteTxnMarkersResponse::default();
    for (index, marker) in request.markers.iter().enumerate() {
        let mut result = WritableTxnMarkerResult::default();
        result.producer_id = marker.producer_id;
        // The producer state asserts a valid id: refuse what no coordinator sends.
        let valid = marker.producer_id.0 >= 0 && marker.producer_epoch >= 0;
        let outcome =
            if marker.transaction_result { TxnOutcome::Commit } else { TxnOutcome::Abort };
        let written = Marker {
            producer_id: ProducerId(marker.producer_id.0),
            producer_epoch: ProducerEpoch(marker.producer_epoch),
            outcome,
            coordinator_epoch: marker.coordinator_epoch,
        };
        for (t, topic) in marker.topics.iter().enumerate() {
            let meta = ctx.shard().catalog.borrow().get(&topic.name.0).cloned();
            let mut topic_result = WritableTxnMarkerTopicResult::default();
            topic_result.name = topic.name.clone();
            for (p, &partition) in topic.partition_indexes.iter().enumerate() {
                let mut answer = WritableTxnMarkerPartitionResult::default();
                answer.partition_index = partition;
                let code = match &meta {
                    _ if !allowed => ErrorCode::ClusterAuthorizationFailed,
                    _ if !valid => ErrorCode::InvalidProducerIdMapping,
                    Some(m) if m.led_elsewhere(partition, node_id) => {
                        ErrorCode::NotLeaderOrFollower
                    }
                    Some(m)
                        if (0..m.partitions).contains(&partition) && &*m.name == OFFSETS_TOPIC =>
                    {
                        let tp = TopicPartition::new(m.name.clone(), partition);
                        offsets.push(((index, t, p), tp, written));
                        ErrorCode::None
                    }
                    Some(m) if (0..m.partitions).contains(&partition) => {
                        let tp = TopicPartition::new(m.name.clone(), partition);
                        let owner = ctx.shard().owner(&tp);
                        by_shard.entry(owner).or_default().push((tp, written));
                        slots.entry(owner).or_default().push((index, t, p));
                        ErrorCode::None
                    }
                    _ => ErrorCode::UnknownTopicOrPartition,
                };
                answer.error_code = code.code();
                topic_result.partitions.push(answer);
            }
            result.topics.push(topic_result);
        }
        response.markers.push(result);
    }
    let calls = by_shard.into_iter().map(|(owner, markers)| async move {
        let answer = ctx.partitions().call(owner, PartitionRequest::WriteMarkers { markers });
        (owner, answer.await)
    });
    let settles = offsets.into_iter().map(|(slot, tp, marker)| async move {
        let request = GroupRequest::TxnMarker {
            partition: tp.partition,
            producer_id: marker.producer_id,
            producer_epoch: marker.producer_epoch,
            outcome: marker.outcome,
        };
        let code = match ctx.groups().call(ctx.shard().owner(&tp), request).await {
            Some(GroupResponse::Marker(code)) => code,
            _ => ErrorCode::NotLeaderOrFollower,
        };
        (slot, code)
    });
    let (answers, settled) = futures::join!(join_all(calls), join_all(settles));
    for ((m, t, p), code) in settled {
        response.markers[m].topics[t].partitions[p].error_code = code.code();
    }
    for (owner, answer) in answers {
        let codes = match answer {
            Some(PartitionResponse::Markers(codes)) => codes,
            _ => Vec::new(),
        };
        for (index, &(m, t, p)) in slots[&owner].iter().enumerate() {
            let code = codes.get(index).map_or(ErrorCode::UnknownServerError, |(_, code)| *code);
            response.markers[m].topics[t].partitions[p].error_code = code.code();
        }
    }
    ctx.reply(&response)
}
