//! Messages between shards. One request goes to each shard a client request touches
//! (never one per partition); replies come back on the same mesh, matched by id.

use bytes::Bytes;

use crate::group::coordinator::{GroupRequest, GroupResponse};
use crate::model::TopicPartition;
use crate::shard::catalog::TopicMeta;
use crate::storage::log::Marker;
use crate::storage::log::ReadChunk;
use crate::storage::txn_index::AbortedTxn;
use crate::txn::coordinator::{TxnRequest, TxnResponse};

#[derive(Debug)]
pub enum Envelope {
    Request {
        from: usize,
        id: u64,
        body: ShardRequest,
    },
    Response {
        id: u64,
        body: ShardResponse,
    },
    /// Register interest in appends to these partitions (fetch long-poll). The owner
    /// notifies at once if a partition's high watermark already passed what the waiter saw.
    Watch {
        from: usize,
        waiter: u64,
        partitions: Vec<(TopicPartition, i64)>,
    },
    Unwatch {
        from: usize,
        waiter: u64,
        partitions: Vec<TopicPartition>,
    },
    /// New data arrived on a watched partition.
    Notify {
        waiter: u64,
    },
}

#[derive(Debug)]
pub enum ShardRequest {
    /// `timeout_ms`: how long the producer waits for the write (its request timeout); past
    /// it the partition answers REQUEST_TIMED_OUT (the write itself still completes).
    Produce {
        partitions: Vec<(TopicPartition, Vec<Bytes>)>,
        timeout_ms: i32,
    },
    Read {
        partitions: Vec<ReadSpec>,
    },
    /// `committed`: isolation level read_committed (latest is the last stable offset).
    ListOffsets {
        partitions: Vec<(TopicPartition, i64)>,
        committed: bool,
    },
    /// Controller (shard 0) only.
    CreateTopic(CreateTopic),
    /// Controller only.
    DeleteTopic {
        name: String,
    },
    /// Controller only.
    CreatePartitions {
        name: String,
        count: i32,
        /// How many replica assignments the request carried, if it carried any: Kafka wants
        /// one per new partition.
        assignments: Option<usize>,
        validate_only: bool,
    },
    /// Controller only: replace a topic's config overrides (AlterConfigs and
    /// IncrementalAlterConfigs compute the new set).
    AlterTopicConfig {
        name: String,
        overrides: std::collections::BTreeMap<String, String>,
        validate_only: bool,
    },
    /// Every shard: adopt this topic and open the logs it owns.
    ApplyTopic(TopicMeta),
    /// Every shard: forget this topic and delete the logs it owns.
    RemoveTopic {
        name: String,
    },
    /// To the shard that owns the group(s): see `group::coordinator`.
    Group(GroupRequest),
    /// Controller only: a producer id never handed out before (InitProducerId).
    AllocateProducerId,
    /// To the shard that owns the transactional id: see `txn::coordinator`.
    Txn(TxnRequest),
    /// To a partition's owner: append these transaction markers.
    WriteMarkers {
        markers: Vec<(TopicPartition, Marker)>,
    },
    /// To the partitions' owner: move their log start (DeleteRecords).
    DeleteRecords {
        partitions: Vec<(TopicPartition, i64)>,
    },
    /// To a partition's owner: its producers (DescribeProducers).
    DescribeProducers {
        partitions: Vec<TopicPartition>,
    },
}

/// One producer of a partition, as DescribeProducers reports it.
#[derive(Debug, Clone)]
pub struct ProducerInfo {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub last_sequence: i32,
    pub last_timestamp: i64,
    pub current_txn_start_offset: i64,
}

#[derive(Debug, Clone)]
pub struct CreateTopic {
    pub name: String,
    pub partitions: i32,
    pub overrides: std::collections::BTreeMap<String, String>,
    pub validate_only: bool,
}

#[derive(Debug, Clone)]
pub struct ReadSpec {
    pub tp: TopicPartition,
    pub offset: i64,
    pub size_bytes_max: usize,
    /// read_committed: stop at the last stable offset, report aborted transactions.
    pub committed: bool,
}

#[derive(Debug)]
pub enum ShardResponse {
    Produce(Vec<ProduceResult>),
    Read(Vec<ReadResult>),
    ListOffsets(Vec<OffsetResult>),
    Topic(Result<TopicMeta, TopicError>),
    Group(GroupResponse),
    /// A producer id, or the Kafka error code to answer.
    ProducerId(Result<i64, i16>),
    Txn(TxnResponse),
    Markers(Vec<(TopicPartition, i16)>),
    Producers(Vec<(TopicPartition, Result<Vec<ProducerInfo>, i16>)>),
    Done,
}

#[derive(Debug, Clone)]
pub struct TopicError {
    pub code: i16,
    pub message: String,
}

#[derive(Debug, Clone)]
pub struct ProduceResult {
    pub tp: TopicPartition,
    pub error_code: i16,
    pub base_offset: i64,
    pub log_append_time: i64,
    pub log_start_offset: i64,
}

#[derive(Debug)]
pub struct ReadResult {
    pub tp: TopicPartition,
    pub error_code: i16,
    pub high_watermark: i64,
    pub last_stable_offset: i64,
    pub log_start_offset: i64,
    pub aborted: Vec<AbortedTxn>,
    pub chunks: Vec<ReadChunk>,
    pub size_bytes: usize,
}

#[derive(Debug, Clone)]
pub struct OffsetResult {
    pub tp: TopicPartition,
    pub error_code: i16,
    pub offset: i64,
    pub timestamp: i64,
}
