//! The coordinators' settings, with Kafka's defaults (broker options override them): plain
//! data, so that the configuration and the pure state machines share them without importing
//! each other.

/// The server-side assignors Spate implements for KIP-848 consumer groups (`group::assignor`).
pub const CONSUMER_ASSIGNORS: [&str; 2] = ["uniform", "range"];

/// Limits and timeouts, with Kafka's defaults (broker options override them).
#[derive(Debug, Clone)]
pub struct GroupConfig {
    /// group.initial.rebalance.delay.ms
    pub initial_rebalance_delay_ms: i32,
    /// group.classic.new.member.join.timeout.ms (internal in Kafka)
    pub new_member_join_timeout_ms: i32,
    /// group.min.session.timeout.ms
    pub session_timeout_ms_min: i32,
    /// group.max.session.timeout.ms
    pub session_timeout_ms_max: i32,
    /// offsets.retention.minutes, in ms
    pub offsets_retention_ms: i64,
    /// offset.metadata.max.bytes
    pub offset_metadata_bytes_max: usize,
    /// offsets.topic.segment.bytes (for the coordinator's log; the state machine ignores it)
    pub offsets_segment_bytes: u64,
    /// group.consumer.session.timeout.ms (KIP-848 consumer groups)
    pub consumer_session_timeout_ms: i32,
    /// group.consumer.heartbeat.interval.ms
    pub consumer_heartbeat_interval_ms: i32,
    /// group.consumer.assignors: the server-side assignors a member may name; the first is
    /// the default.
    pub consumer_assignors: Vec<String>,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            initial_rebalance_delay_ms: 3_000,
            new_member_join_timeout_ms: 5 * 60 * 1000,
            session_timeout_ms_min: 6_000,
            session_timeout_ms_max: 30 * 60 * 1000,
            offsets_retention_ms: 7 * 24 * 60 * 60 * 1000,
            offset_metadata_bytes_max: 4096,
            offsets_segment_bytes: crate::constants::OFFSETS_SEGMENT_BYTES_DEFAULT,
            consumer_session_timeout_ms: 45_000,
            consumer_heartbeat_interval_ms: 5_000,
            consumer_assignors: CONSUMER_ASSIGNORS.iter().map(|a| a.to_string()).collect(),
        }
    }
}

/// The transaction coordinator's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnConfig {
    /// Segment size of each shard's transaction log (transaction.state.log.segment.bytes).
    pub log_segment_bytes: u64,
    /// transactional.id.expiration.ms: see `Transactions::expire_ids`.
    pub id_expiration_ms: i64,
}

impl Default for TxnConfig {
    fn default() -> TxnConfig {
        TxnConfig {
            log_segment_bytes: crate::constants::TXN_LOG_SEGMENT_BYTES_DEFAULT,
            id_expiration_ms: crate::constants::TRANSACTIONAL_ID_EXPIRATION_MS_DEFAULT,
        }
    }
}
