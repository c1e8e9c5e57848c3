//! The coordinators' settings, with Kafka's defaults (broker options override them): plain
//! data, so that the configuration and the pure state machines share them without importing
//! each other.

use std::collections::HashMap;
use std::net::IpAddr;

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
    /// group.consumer.migration.policy: whether a classic group may become a consumer group
    /// (upgrade) and back (downgrade) while it has members.
    pub migration_policy: MigrationPolicy,
    /// group.consumer.max.size: members of a consumer group at most (a new one beyond is
    /// GROUP_MAX_SIZE_REACHED)
    pub consumer_max_size: usize,
    /// group.max.size: members of a classic group at most (a new one beyond is
    /// GROUP_MAX_SIZE_REACHED)
    pub classic_max_size: usize,
    /// group.share.max.size: members of a share group at most
    pub share_max_size: usize,
    /// group.share.session.timeout.ms (KIP-932 share groups)
    pub share_session_timeout_ms: i32,
    /// group.share.heartbeat.interval.ms
    pub share_heartbeat_interval_ms: i32,
    /// group.share.assignment.interval.ms: a share group's assignment is computed again at
    /// most this often (0: at every change)
    pub share_assignment_interval_ms: i32,
    /// group.share.record.lock.duration.ms: how long an acquired record stays locked
    pub share_record_lock_duration_ms: i32,
    /// group.share.delivery.count.limit: deliveries before a record is archived
    pub share_delivery_count_limit: i32,
    /// group.share.partition.max.record.locks: in-flight records of one share partition
    pub share_partition_max_record_locks: i32,
    /// How often a waiting ShareFetch asks its coordinator again (Spate's own; it is also
    /// woken when records come free)
    pub share_fetch_recheck_ms: i32,
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
            migration_policy: MigrationPolicy::Bidirectional,
            consumer_max_size: i32::MAX as usize,
            classic_max_size: i32::MAX as usize,
            share_max_size: 200,
            share_session_timeout_ms: 45_000,
            share_heartbeat_interval_ms: 5_000,
            share_assignment_interval_ms: 1_000,
            share_record_lock_duration_ms: 30_000,
            share_delivery_count_limit: 5,
            share_partition_max_record_locks: 2_000,
            share_fetch_recheck_ms: 50,
        }
    }
}

/// Kafka's `group.consumer.migration.policy` (`ConsumerGroupMigrationPolicy`): which online
/// conversions between a classic group and a KIP-848 consumer group are allowed while the
/// group has members. An empty group converts either way under every policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MigrationPolicy {
    /// Both upgrade and downgrade (Kafka 4's default).
    #[default]
    Bidirectional,
    Upgrade,
    Downgrade,
    Disabled,
}

impl MigrationPolicy {
    /// Kafka's names, matched case-insensitively as Kafka parses them.
    pub fn parse(name: &str) -> Option<MigrationPolicy> {
        match name.to_ascii_lowercase().as_str() {
            "bidirectional" => Some(MigrationPolicy::Bidirectional),
            "upgrade" => Some(MigrationPolicy::Upgrade),
            "downgrade" => Some(MigrationPolicy::Downgrade),
            "disabled" => Some(MigrationPolicy::Disabled),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            MigrationPolicy::Bidirectional => "bidirectional",
            MigrationPolicy::Upgrade => "upgrade",
            MigrationPolicy::Downgrade => "downgrade",
            MigrationPolicy::Disabled => "disabled",
        }
    }

    /// A ConsumerGroupHeartbeat may convert a classic group with members.
    pub fn is_upgrade_enabled(self) -> bool {
        matches!(self, MigrationPolicy::Bidirectional | MigrationPolicy::Upgrade)
    }

    /// A consumer group whose last consumer-protocol member goes becomes classic again.
    pub fn is_downgrade_enabled(self) -> bool {
        matches!(self, MigrationPolicy::Bidirectional | MigrationPolicy::Downgrade)
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

/// Kafka's `max.connections.per.ip` and `max.connections.per.ip.overrides`: a default per
/// client address and overrides for some addresses (0 refuses the address); `net::caps`
/// counts connections against them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConnectionCaps {
    /// None: no cap (Kafka's default, `Int.MaxValue`), unless an override names the address.
    pub per_ip: Option<u32>,
    pub overrides: HashMap<IpAddr, u32>,
}

impl ConnectionCaps {
    pub fn is_capped(&self) -> bool {
        self.per_ip.is_some() || !self.overrides.is_empty()
    }

    /// The cap for `ip`, if it has one.
    pub fn cap_of(&self, ip: IpAddr) -> Option<u32> {
        self.overrides.get(&canonical(ip)).copied().or(self.per_ip)
    }

    /// Parses Kafka's override list, `address:count,address:count` (IPv6 addresses in
    /// brackets or bare: the count follows the last colon).
    pub fn parse_overrides(text: &str) -> Result<HashMap<IpAddr, u32>, String> {
        let mut overrides = HashMap::new();
        for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (address, count) = entry.rsplit_once(':').ok_or_else(|| {
                format!(
                    "--max-connections-per-ip-overrides entry '{entry}' is not address:count \
                     (for example 10.0.0.7:200)."
                )
            })?;
            let address = address.trim().trim_start_matches('[').trim_end_matches(']');
            let ip: IpAddr = address.parse().map_err(|_| {
                format!(
                    "--max-connections-per-ip-overrides: '{address}' is not an IP address; \
                     give addresses, not host names (for example 10.0.0.7:200)."
                )
            })?;
            let count: u32 = count.trim().parse().map_err(|_| {
                format!(
                    "--max-connections-per-ip-overrides: '{count}' in '{entry}' is not a \
                     connection count (0 or more)."
                )
            })?;
            if overrides.insert(canonical(ip), count).is_some() {
                return Err(format!(
                    "--max-connections-per-ip-overrides names {ip} twice; keep one entry."
                ));
            }
        }
        Ok(overrides)
    }
}

/// An IPv4 client on a dual-stack socket arrives as `::ffff:a.b.c.d`: counted as `a.b.c.d`.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}
