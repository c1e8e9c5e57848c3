//! Broker configuration: command line, TOML file and defaults, validated once at start.
//!
//! Precedence is command line, then the file given with `--config`, then the defaults in
//! `constants.rs`. The TOML keys are the long option names (`data-dir = "/var/lib/spate"`), so
//! a user never has to learn two vocabularies.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::path::{Path, PathBuf};

use clap::Parser;
use serde::Deserialize;

use crate::constants;
use crate::model::quorum::QuorumVoters;
use crate::model::settings::{
    ConnectionCaps, GroupConfig, MigrationPolicy, TxnConfig, CONSUMER_ASSIGNORS,
};
use crate::model::topic::{Durability, TimestampType, TopicConfig};
use crate::model::{NodeId, ReplicaSelector};

/// The command line. Every option can also be set in the TOML file under the same name.
#[derive(Debug, Parser, Default)]
#[command(name = "spate", version, about = "A thread-per-core, Kafka-compatible broker")]
pub struct Args {
    /// TOML file with any of the options below (keys are the long option names).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to accept Kafka clients on [default: 0.0.0.0:9092].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// host:port that clients are told to connect to [default: the listen address, or this
    /// host's primary IPv4 address when listening on 0.0.0.0].
    #[arg(long, value_name = "HOST:PORT")]
    pub advertised_listener: Option<String>,
    /// Listeners, Kafka style: `PLAINTEXT://127.0.0.1:9092,SASL_SSL://0.0.0.0:9094` (names:
    /// PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL; one of each at most). Replaces --listen.
    #[arg(long, value_name = "LISTENERS")]
    pub listeners: Option<String>,
    /// What clients are told per listener, `SASL_SSL://broker1.example:9094,...`; a listener
    /// not named here advertises its own address [default: as --advertised-listener].
    #[arg(long, value_name = "LISTENERS")]
    pub advertised_listeners: Option<String>,
    /// PEM certificate chain of the SSL and SASL_SSL listeners (reloaded on SIGHUP).
    #[arg(long, value_name = "FILE")]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of --tls-cert-file's first certificate (reloaded on SIGHUP).
    #[arg(long, value_name = "FILE")]
    pub tls_key_file: Option<PathBuf>,
    /// PEM CA certificates that client certificates must chain to: with it, TLS listeners
    /// require a client certificate (mTLS) and an SSL listener's principal is its subject.
    #[arg(long, value_name = "FILE")]
    pub tls_client_ca_file: Option<PathBuf>,
    /// SASL PLAIN users, one `name:pbkdf2-sha256:<iterations>:<salt b64>:<hash b64>` a line;
    /// without it PLAIN is not offered.
    #[arg(long, value_name = "FILE")]
    pub sasl_plain_users_file: Option<PathBuf>,
    /// A SCRAM credential to create at start-up if the user has none yet, as kafka-storage's
    /// --add-scram: `SCRAM-SHA-256=[name=admin,password=admin-secret]` (repeatable).
    #[arg(long, value_name = "CREDENTIAL")]
    pub scram_bootstrap: Vec<String>,
    /// Longest SASL session before the client must re-authenticate (KIP-368, Kafka's
    /// connections.max.reauth.ms); 0: sessions do not expire [default: 0].
    #[arg(long, value_name = "MS")]
    pub connections_max_reauth_ms: Option<u64>,
    /// `acl` turns on Kafka's ACL authorizer (CreateAcls, DescribeAcls, DeleteAcls; every
    /// request checked); without it every client may do everything, as Kafka without
    /// authorizer.class.name [default: none].
    #[arg(long, value_name = "NAME")]
    pub authorizer: Option<String>,
    /// Principals the authorizer always allows, Kafka's super.users:
    /// `User:admin,User:CN=ops` (`;` separates too). Only with --authorizer acl.
    #[arg(long, value_name = "PRINCIPALS")]
    pub super_users: Option<String>,
    /// Allow a request on a resource no ACL names (Kafka's allow.everyone.if.no.acl.found)
    /// [default: false].
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub allow_everyone_if_no_acl_found: Option<bool>,
    /// The SASL mechanism this broker's own clients (follower fetchers, transaction
    /// markers) log in with on the other brokers' SASL_PLAINTEXT listener, Kafka's
    /// sasl.mechanism.inter.broker.protocol: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512; needs
    /// --inter-broker-sasl-username and --inter-broker-sasl-password [default: none, the
    /// brokers connect as User:ANONYMOUS].
    #[arg(long, value_name = "MECHANISM")]
    pub sasl_mechanism_inter_broker_protocol: Option<String>,
    /// The user the brokers log in as (Kafka's username in the inter-broker listener's
    /// sasl.jaas.config); with --authorizer acl it needs CLUSTER_ACTION on the cluster
    /// (or --super-users).
    #[arg(long, value_name = "NAME")]
    pub inter_broker_sasl_username: Option<String>,
    /// That user's password (better in the TOML file than on a command line others see).
    #[arg(long, value_name = "PASSWORD")]
    pub inter_broker_sasl_password: Option<String>,
    /// Serve Prometheus metrics at http://HOST:PORT/metrics (per shard, partition, API,
    /// group and listener; one shard answers) [default: off].
    #[arg(long, value_name = "HOST:PORT")]
    pub metrics_listen: Option<String>,
    /// Directory that holds the partition logs [default: ./spate-data].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Number of cores (one pinned executor and one shard each) [default: all cores].
    #[arg(long, value_name = "N")]
    pub cores: Option<usize>,
    /// This node's id: the broker id in Metadata responses and, in a cluster, its id in
    /// --controller-quorum-voters (required there) [default: 1].
    #[arg(long, value_name = "N")]
    pub node_id: Option<i32>,
    /// Address this node's controller accepts its quorum peers on (Raft messages); its port
    /// must be the one --controller-quorum-voters gives this node. Only with
    /// --controller-quorum-voters [default: 0.0.0.0 and that port].
    #[arg(long, value_name = "HOST:PORT")]
    pub controller_listen: Option<String>,
    /// The controller quorum, `id@host:port` per voter, comma-separated
    /// (1@10.0.0.1:9093,2@10.0.0.2:9093,3@10.0.0.3:9093): every listed node is a broker and
    /// a voter of the Raft metadata log, and must be started with the same list. Without it
    /// Spate runs as a single node. The data dir remembers the list and the node id of its
    /// first start and refuses others.
    #[arg(long, value_name = "VOTERS")]
    pub controller_quorum_voters: Option<String>,
    /// What this node is in a cluster (Kafka's process.roles): `broker,controller` (a broker
    /// and a voter of the quorum) or `broker` (a broker only: it follows the metadata log
    /// from the voters of --controller-quorum-voters as a Raft learner, never votes and has
    /// no --controller-listen; its --node-id is not a voter's) [default: broker,controller].
    #[arg(long, value_name = "ROLES")]
    pub process_roles: Option<String>,
    /// Clustered: how often this node heartbeats to the active controller (Kafka's
    /// broker.heartbeat.interval.ms) [default: 2000].
    #[arg(long, value_name = "MS")]
    pub broker_heartbeat_interval_ms: Option<u64>,
    /// Clustered: how long the active controller waits without a heartbeat before it fences
    /// a broker (no placements, not listed in Metadata, its partitions without a leader until
    /// it heartbeats again; Kafka's broker.session.timeout.ms) [default: 9000].
    #[arg(long, value_name = "MS")]
    pub broker_session_timeout_ms: Option<u64>,
    /// Clustered: the active controller moves each partition's leadership back to its
    /// preferred replica (the first) once that one is in sync again (Kafka's
    /// auto.leader.rebalance.enable) [default: true].
    #[arg(long, value_name = "BOOL")]
    pub auto_leader_rebalance_enable: Option<bool>,
    /// Clustered: how often the active controller looks for partitions not led by their
    /// preferred replica (Kafka's leader.imbalance.check.interval.seconds, in ms here)
    /// [default: 300000].
    #[arg(long, value_name = "MS")]
    pub leader_imbalance_check_interval_ms: Option<u64>,
    /// Clustered: every this many applied entries of the metadata log, the node writes a
    /// snapshot of the metadata state and drops the entries it covers from its journal (the
    /// count-of-records analogue of Kafka's metadata.log.max.record.bytes.between.snapshots)
    /// [default: 10000].
    #[arg(long, value_name = "RECORDS")]
    pub metadata_snapshot_interval_records: Option<u64>,
    /// Create topics on first use by Metadata, Produce or Fetch [default: true].
    #[arg(long, value_name = "BOOL")]
    pub auto_create_topics: Option<bool>,
    /// Partitions of an auto-created topic, and of CreateTopics with -1 [default: 1].
    #[arg(long, value_name = "N")]
    pub default_partitions: Option<i32>,
    /// Largest record batch a producer may send, in bytes [default: 1048588].
    #[arg(long, value_name = "BYTES")]
    pub message_max_bytes: Option<u32>,
    /// Largest request frame, in bytes; bigger frames close the connection [default: 100 MiB].
    #[arg(long, value_name = "BYTES")]
    pub frame_max_bytes: Option<u32>,
    /// Close a connection that sent no whole request for this long (Kafka's
    /// connections.max.idle.ms; a frame trickled in slowly does not count) [default: 10 min].
    #[arg(long, value_name = "MS")]
    pub connections_max_idle_ms: Option<u64>,
    /// Keep polling for this long when a shard runs out of work before it sleeps in the
    /// kernel (Seastar's and Redpanda's --idle-poll-time-us): lower latency at low rates,
    /// for a core that stays busy up to that long after each burst [default: 0, sleep at once].
    #[arg(long, value_name = "US")]
    pub idle_poll_time_us: Option<u64>,
    /// Most connections one client address may hold open, over all listeners (Kafka's
    /// max.connections.per.ip; a connection over it is closed at once) [default: no cap].
    #[arg(long, value_name = "N")]
    pub max_connections_per_ip: Option<u32>,
    /// Caps for some addresses instead of --max-connections-per-ip, as
    /// `address:count,...` (Kafka's max.connections.per.ip.overrides; 0 refuses).
    #[arg(long, value_name = "LIST")]
    pub max_connections_per_ip_overrides: Option<String>,
    /// Clustered: a follower that has not caught up with its leader for this long leaves
    /// the in-sync replicas (Kafka's replica.lag.time.max.ms) [default: 30000].
    #[arg(long, value_name = "MS")]
    pub replica_lag_time_max_ms: Option<u64>,
    /// Clustered: how long a follower's fetch waits at its leader for new data (Kafka's
    /// replica.fetch.wait.max.ms; at most --replica-lag-time-max-ms) [default: 500].
    #[arg(long, value_name = "MS")]
    pub replica_fetch_wait_max_ms: Option<u64>,
    /// The rack (or zone) this broker is in (Kafka's broker.rack): registered on the
    /// metadata log, reported in Metadata and DescribeCluster, used to place each
    /// partition's replicas on distinct racks, and matched against consumers' client.rack
    /// by --replica-selector rack-aware [default: none].
    #[arg(long, value_name = "ID")]
    pub rack: Option<String>,
    /// Which replica a partition's leader tells a consumer (Fetch v11+) to fetch from
    /// (Kafka's replica.selector.class): `leader` (always the leader, Kafka's default) or
    /// `rack-aware` (an in-sync replica in the consumer's client.rack when the leader is not
    /// in that rack, KIP-392) [default: leader].
    #[arg(long, value_name = "SELECTOR")]
    pub replica_selector: Option<String>,
    /// Default segment size before a roll (topic config segment.bytes) [default: 1 GiB].
    #[arg(long, value_name = "BYTES")]
    pub segment_bytes: Option<u64>,
    /// Default segment age before a roll (topic config segment.ms) [default: 7 days].
    #[arg(long, value_name = "MS")]
    pub segment_ms: Option<i64>,
    /// Default retention time, -1 for forever (topic config retention.ms) [default: 7 days].
    #[arg(long, value_name = "MS")]
    pub retention_ms: Option<i64>,
    /// Default retention size per partition, -1 for unlimited (retention.bytes) [default: -1].
    #[arg(long, value_name = "BYTES")]
    pub retention_bytes: Option<i64>,
    /// How often each shard looks for segments past their retention and for segments to roll
    /// by age (Kafka's log.retention.check.interval.ms, whose default is 300000)
    /// [default: 5000].
    #[arg(long, value_name = "MS")]
    pub log_retention_check_interval_ms: Option<u64>,
    /// Delayed delivery (topics with spate.delivery.delay.ms): how far ahead each
    /// partition's schedule keeps delayed records in memory; records due later wait only in
    /// its delay log on disk and are loaded as their time approaches [default: 600000].
    #[arg(long, value_name = "MS")]
    pub delivery_horizon_ms: Option<u64>,
    /// How often each shard's cleaner looks for a compacted log to clean when it found none
    /// (Kafka's log.cleaner.backoff.ms) [default: 15000].
    #[arg(long, value_name = "MS")]
    pub log_cleaner_backoff_ms: Option<u64>,
    /// Memory of the cleaners' offset maps (key -> last offset), shared by the shards: a clean
    /// covers as many dirty keys as fit (Kafka's log.cleaner.dedupe.buffer.size, 24 bytes a
    /// key) [default: 134217728, 128 MiB].
    #[arg(long, value_name = "BYTES")]
    pub log_cleaner_dedupe_buffer_size: Option<u64>,
    /// Bytes each shard's cleaner reads and writes per second, at most (Kafka's
    /// log.cleaner.io.max.bytes.per.second) [default: no limit].
    #[arg(long, value_name = "BYTES")]
    pub log_cleaner_io_max_bytes_per_second: Option<u64>,
    /// Default in-sync replicas an acks=all write needs on a replicated partition; fewer
    /// answer NOT_ENOUGH_REPLICAS (topic config min.insync.replicas) [default: 1].
    #[arg(long, value_name = "COUNT")]
    pub min_insync_replicas: Option<i32>,
    /// When a produce is acknowledged: `write` once the O_DIRECT write completed (survives a
    /// process crash), `fsync` after fdatasync with group commit (survives power loss)
    /// [default: write].
    #[arg(long, value_name = "POLICY")]
    pub durability: Option<String>,
    /// Memory each shard keeps for the batches it wrote last, shared by its partitions, so
    /// that consumers at the tail read no disk [default: 134217728, 128 MiB]. 0 turns the
    /// cache off.
    #[arg(long, value_name = "BYTES")]
    pub batch_cache_bytes: Option<u64>,
    /// Free space to keep on the data dir's file system: below it, produce, offset commits,
    /// transactions and topic creation are refused with a retriable error (reads and
    /// retention go on) until space is freed; 0 keeps no reserve [default: the smaller of
    /// 1 GiB and 5% of the file system].
    #[arg(long, value_name = "BYTES")]
    pub min_free_bytes: Option<u64>,
    /// Log format: `text` or `json` [default: text]. Filter with RUST_LOG.
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<String>,
    /// How long a new consumer group waits for more members before its first generation
    /// (Kafka's group.initial.rebalance.delay.ms) [default: 3000].
    #[arg(long, value_name = "MS")]
    pub group_initial_rebalance_delay_ms: Option<i32>,
    /// Smallest session timeout a group member may ask for (group.min.session.timeout.ms)
    /// [default: 6000].
    #[arg(long, value_name = "MS")]
    pub group_min_session_timeout_ms: Option<i32>,
    /// Largest session timeout a group member may ask for (group.max.session.timeout.ms)
    /// [default: 1800000].
    #[arg(long, value_name = "MS")]
    pub group_max_session_timeout_ms: Option<i32>,
    /// Session timeout of KIP-848 consumer group members (group.consumer.session.timeout.ms)
    /// [default: 45000].
    #[arg(long, value_name = "MS")]
    pub group_consumer_session_timeout_ms: Option<i32>,
    /// Heartbeat interval KIP-848 consumer group members are told
    /// (group.consumer.heartbeat.interval.ms) [default: 5000].
    #[arg(long, value_name = "MS")]
    pub group_consumer_heartbeat_interval_ms: Option<i32>,
    /// Server-side assignors of consumer groups, comma-separated, the first the default
    /// (group.consumer.assignors; `uniform`, `range`) [default: uniform,range].
    #[arg(long, value_name = "LIST")]
    pub group_consumer_assignors: Option<String>,
    /// Online conversion of groups with members between the classic and the consumer
    /// protocol (group.consumer.migration.policy: bidirectional, upgrade, downgrade,
    /// disabled) [default: bidirectional].
    #[arg(long, value_name = "POLICY")]
    pub group_consumer_migration_policy: Option<String>,
    /// Members of a KIP-848 consumer group at most; a new one beyond is refused
    /// GROUP_MAX_SIZE_REACHED (group.consumer.max.size) [default: 2147483647].
    #[arg(long, value_name = "N")]
    pub group_consumer_max_size: Option<i32>,
    /// Members of a classic group at most; a new one beyond is refused
    /// GROUP_MAX_SIZE_REACHED (group.max.size) [default: 2147483647].
    #[arg(long, value_name = "N")]
    pub group_max_size: Option<i32>,
    /// Members of a share group at most, 1 to 1000 (group.share.max.size) [default: 200].
    #[arg(long, value_name = "N")]
    pub group_share_max_size: Option<i32>,
    /// Session timeout of share group members (group.share.session.timeout.ms)
    /// [default: 45000].
    #[arg(long, value_name = "MS")]
    pub group_share_session_timeout_ms: Option<i32>,
    /// Heartbeat interval share group members are told (group.share.heartbeat.interval.ms)
    /// [default: 5000].
    #[arg(long, value_name = "MS")]
    pub group_share_heartbeat_interval_ms: Option<i32>,
    /// How often at most a share group's assignment is computed again, so that members
    /// joining together are assigned together (group.share.assignment.interval.ms; 0: at
    /// every change) [default: 1000].
    #[arg(long, value_name = "MS")]
    pub group_share_assignment_interval_ms: Option<i32>,
    /// How long a share consumer holds the records it was given before they are offered to
    /// others again (group.share.record.lock.duration.ms) [default: 30000].
    #[arg(long, value_name = "MS")]
    pub group_share_record_lock_duration_ms: Option<i32>,
    /// Deliveries of a record to share consumers before it is archived
    /// (group.share.delivery.count.limit) [default: 5].
    #[arg(long, value_name = "N")]
    pub group_share_delivery_count_limit: Option<i32>,
    /// Records of one share partition in flight at most (acquired or waiting to be
    /// redelivered; group.share.partition.max.record.locks) [default: 2000].
    #[arg(long, value_name = "N")]
    pub group_share_partition_max_record_locks: Option<i32>,
    /// How often a waiting ShareFetch asks its group's coordinator again whether records
    /// came free, beside being woken when they do (Spate's own; a safety net: higher means
    /// fewer calls between brokers while share consumers wait) [default: 50].
    #[arg(long, value_name = "MS")]
    pub group_share_fetch_recheck_ms: Option<i32>,
    /// How long committed offsets of an empty group are kept (offsets.retention.minutes)
    /// [default: 10080, 7 days].
    #[arg(long, value_name = "MINUTES")]
    pub offsets_retention_minutes: Option<i64>,
    /// Segment size of each shard's committed-offsets log (offsets.topic.segment.bytes); the
    /// log is compacted when it spans four segments [default: 16 MiB].
    #[arg(long, value_name = "BYTES")]
    pub offsets_topic_segment_bytes: Option<u64>,
    /// Segment size of each shard's transaction log (transaction.state.log.segment.bytes);
    /// the log is compacted when it spans four segments [default: 16 MiB].
    #[arg(long, value_name = "BYTES")]
    pub transaction_state_log_segment_bytes: Option<u64>,
    /// How long a transactional id with no transaction open is remembered after its last use
    /// (transactional.id.expiration.ms) [default: 604800000, 7 days].
    #[arg(long, value_name = "MS")]
    pub transactional_id_expiration_ms: Option<i64>,
}

/// The same options as read from the TOML file.
#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    advertised_listener: Option<String>,
    listeners: Option<String>,
    advertised_listeners: Option<String>,
    tls_cert_file: Option<PathBuf>,
    tls_key_file: Option<PathBuf>,
    tls_client_ca_file: Option<PathBuf>,
    sasl_plain_users_file: Option<PathBuf>,
    scram_bootstrap: Option<Vec<String>>,
    connections_max_reauth_ms: Option<u64>,
    authorizer: Option<String>,
    super_users: Option<String>,
    allow_everyone_if_no_acl_found: Option<bool>,
    sasl_mechanism_inter_broker_protocol: Option<String>,
    inter_broker_sasl_username: Option<String>,
    inter_broker_sasl_password: Option<String>,
    metrics_listen: Option<String>,
    data_dir: Option<PathBuf>,
    cores: Option<usize>,
    node_id: Option<i32>,
    controller_listen: Option<String>,
    controller_quorum_voters: Option<String>,
    process_roles: Option<String>,
    broker_heartbeat_interval_ms: Option<u64>,
    broker_session_timeout_ms: Option<u64>,
    auto_leader_rebalance_enable: Option<bool>,
    leader_imbalance_check_interval_ms: Option<u64>,
    metadata_snapshot_interval_records: Option<u64>,
    auto_create_topics: Option<bool>,
    default_partitions: Option<i32>,
    message_max_bytes: Option<u32>,
    frame_max_bytes: Option<u32>,
    connections_max_idle_ms: Option<u64>,
    idle_poll_time_us: Option<u64>,
    max_connections_per_ip: Option<u32>,
    max_connections_per_ip_overrides: Option<String>,
    replica_lag_time_max_ms: Option<u64>,
    replica_fetch_wait_max_ms: Option<u64>,
    rack: Option<String>,
    replica_selector: Option<String>,
    segment_bytes: Option<u64>,
    segment_ms: Option<i64>,
    retention_ms: Option<i64>,
    retention_bytes: Option<i64>,
    log_retention_check_interval_ms: Option<u64>,
    delivery_horizon_ms: Option<u64>,
    log_cleaner_backoff_ms: Option<u64>,
    log_cleaner_dedupe_buffer_size: Option<u64>,
    log_cleaner_io_max_bytes_per_second: Option<u64>,
    min_insync_replicas: Option<i32>,
    durability: Option<String>,
    batch_cache_bytes: Option<u64>,
    min_free_bytes: Option<u64>,
    log_format: Option<String>,
    group_initial_rebalance_delay_ms: Option<i32>,
    group_min_session_timeout_ms: Option<i32>,
    group_max_session_timeout_ms: Option<i32>,
    group_consumer_session_timeout_ms: Option<i32>,
    group_consumer_heartbeat_interval_ms: Option<i32>,
    group_consumer_assignors: Option<String>,
    group_consumer_migration_policy: Option<String>,
    group_consumer_max_size: Option<i32>,
    group_max_size: Option<i32>,
    group_share_max_size: Option<i32>,
    group_share_session_timeout_ms: Option<i32>,
    group_share_heartbeat_interval_ms: Option<i32>,
    group_share_assignment_interval_ms: Option<i32>,
    group_share_record_lock_duration_ms: Option<i32>,
    group_share_delivery_count_limit: Option<i32>,
    group_share_partition_max_record_locks: Option<i32>,
    group_share_fetch_recheck_ms: Option<i32>,
    offsets_retention_minutes: Option<i64>,
    offsets_topic_segment_bytes: Option<u64>,
    transaction_state_log_segment_bytes: Option<u64>,
    transactional_id_expiration_ms: Option<i64>,
}

/// A clustered node's quorum settings (`--controller-quorum-voters`).
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// Where this node's controller accepts its peers; None: a broker-only node
    /// (`--process-roles broker`), a Raft learner that dials the voters.
    pub controller_listen: Option<SocketAddr>,
    /// Every voter, this node among them.
    pub voters: QuorumVoters,
    pub broker_heartbeat_interval_ms: u64,
    pub broker_session_timeout_ms: u64,
    /// How often the active controller elects preferred leaders; None: never.
    pub leader_imbalance_check_interval_ms: Option<u64>,
    /// Applied entries between two metadata snapshots (at least 1).
    pub metadata_snapshot_interval_records: u64,
}

/// Kafka's security protocols, which are also the listener names Spate accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SecurityProtocol {
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    pub fn name(self) -> &'static str {
        match self {
            SecurityProtocol::Plaintext => "PLAINTEXT",
            SecurityProtocol::Ssl => "SSL",
            SecurityProtocol::SaslPlaintext => "SASL_PLAINTEXT",
            SecurityProtocol::SaslSsl => "SASL_SSL",
        }
    }

    fn from_name(name: &str) -> Option<SecurityProtocol> {
        [
            SecurityProtocol::Plaintext,
            SecurityProtocol::Ssl,
            SecurityProtocol::SaslPlaintext,
            SecurityProtocol::SaslSsl,
        ]
        .into_iter()
        .find(|p| p.name().eq_ignore_ascii_case(name))
    }

    /// Whether the connection is TLS.
    pub fn tls(self) -> bool {
        matches!(self, SecurityProtocol::Ssl | SecurityProtocol::SaslSsl)
    }

    /// Whether a client must authenticate with SASL before anything but ApiVersions.
    pub fn sasl(self) -> bool {
        matches!(self, SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl)
    }
}

/// One listener: where it accepts, what it speaks, what clients are told.
#[derive(Debug, Clone)]
pub struct Listener {
    pub protocol: SecurityProtocol,
    pub address: SocketAddr,
    pub advertised_host: String,
    pub advertised_port: u16,
}

/// TLS files and SASL settings, checked for presence here and loaded by `security`.
#[derive(Debug, Clone, Default)]
pub struct SecurityConfig {
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    pub tls_client_ca_file: Option<PathBuf>,
    pub sasl_plain_users_file: Option<PathBuf>,
    /// `--scram-bootstrap` values as given (parsed by `security`, which knows SCRAM).
    pub scram_bootstrap: Vec<String>,
    /// 0: sessions do not expire.
    pub connections_max_reauth_ms: u64,
    /// `--authorizer acl`.
    pub authorizer: bool,
    /// `--super-users`, each `Type:name`.
    pub super_users: Vec<String>,
    pub allow_everyone_if_no_acl_found: bool,
    /// Kafka's sasl.mechanism.inter.broker.protocol (checked by `security`).
    pub sasl_mechanism_inter_broker_protocol: Option<String>,
    pub inter_broker_sasl_username: Option<String>,
    pub inter_broker_sasl_password: Option<String>,
}

/// The shards' cleaners of compacted topics (Kafka's `log.cleaner.*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CleanerConfig {
    /// How often a cleaner with nothing to do looks again.
    pub backoff_ms: u64,
    /// The offset maps' memory, all shards together.
    pub dedupe_buffer_bytes: u64,
    /// Each shard's cleaner's I/O pace (None: no limit).
    pub io_bytes_per_second: Option<u64>,
}

/// The validated configuration every shard gets a copy of.
#[derive(Debug, Clone)]
pub struct Config {
    /// The first listener's address and advertised address (what a cluster registers).
    pub listen: SocketAddr,
    pub advertised_host: String,
    pub advertised_port: u16,
    /// Every listener; a connection's index into it says which one it came in on.
    pub listeners: Vec<Listener>,
    pub security: SecurityConfig,
    /// Where the Prometheus endpoint listens (`scrape::http`); None: no endpoint.
    pub metrics_listen: Option<SocketAddr>,
    pub data_dir: PathBuf,
    pub cores: usize,
    pub node_id: NodeId,
    /// The controller quorum this node votes in; None: a single node.
    pub cluster: Option<ClusterConfig>,
    pub auto_create_topics: bool,
    pub default_partitions: i32,
    pub frame_max_bytes: u32,
    /// A connection with no whole request for this long is closed (`net`).
    pub connections_max_idle_ms: u64,
    /// How long an idle shard polls before it sleeps (`broker`; 0: it sleeps at once).
    pub idle_poll_time_us: u64,
    /// How often each shard runs its retention pass (`broker::housekeeping`).
    pub log_retention_check_interval_ms: u64,
    /// Delayed delivery: the window of each partition's schedule (`wheel::schedule`).
    pub delivery_horizon_ms: u64,
    /// The shards' cleaners (`partition::cleaner`).
    pub cleaner: CleanerConfig,
    /// Connections per client address (`net::caps`).
    pub connection_caps: ConnectionCaps,
    /// A follower not caught up for this long leaves the ISR (`partition::replicas`).
    pub replica_lag_time_max_ms: u64,
    /// How long a follower's fetch waits at its leader (`replication::fetcher`).
    pub replica_fetch_wait_max_ms: u64,
    /// This broker's rack (Kafka's broker.rack), registered on the metadata log.
    pub rack: Option<String>,
    /// Which replica a leader names to consumers as their preferred read replica.
    pub replica_selector: ReplicaSelector,
    /// Per shard: see `storage::cache`.
    pub batch_cache_bytes: u64,
    /// The free-space reserve (None: the default share of the file system); see
    /// `storage::space`.
    pub min_free_bytes: Option<u64>,
    pub log_json: bool,
    /// Topic configs a topic gets unless it overrides them.
    pub topic_defaults: TopicConfig,
    /// Consumer group timeouts and limits.
    pub groups: GroupConfig,
    /// The transaction coordinator's log and expiration.
    pub txns: TxnConfig,
    /// The Kafka names of the broker configs given on the command line or in the file
    /// (DescribeConfigs reports them as STATIC_BROKER_CONFIG, the others as defaults).
    pub static_given: BTreeSet<&'static str>,
}

impl Config {
    /// Builds the configuration from the command line (and the file it names).
    /// The error is one sentence that tells the user what to fix.
    pub fn from_args(args: Args) -> Result<Config, String> {
        let file = match &args.config {
            None => FileConfig::default(),
            Some(path) => read_file(path)?,
        };
        let static_given = given_broker_configs(&args, &file);
        let listen_text = args.listen.or(file.listen);
        let listeners_text = args.listeners.or(file.listeners);
        let advertised_text = args.advertised_listener.or(file.advertised_listener);
        let listeners = match (listen_text, listeners_text) {
            (Some(_), Some(_)) => {
                return Err("--listen and --listeners are both given; keep one (--listeners \
                            PLAINTEXT://host:port is --listen host:port)."
                    .into())
            }
            (None, Some(text)) => parse_listeners(
                &text,
                args.advertised_listeners.or(file.advertised_listeners).as_deref(),
                advertised_text.as_deref(),
            )?,
            (listen_text, None) => {
                if args.advertised_listeners.is_some() || file.advertised_listeners.is_some() {
                    return Err("--advertised-listeners needs --listeners; use \
                                --advertised-listener with --listen."
                        .into());
                }
                let listen_text = listen_text.unwrap_or_else(|| "0.0.0.0:9092".into());
                let listen = resolve(&listen_text).map_err(|e| {
                    format!("--listen {listen_text:?} is not a usable address ({e})")
                })?;
                let (advertised_host, advertised_port) = match advertised_text {
                    Some(text) => split_host_port(&text)?,
                    None => (default_advertised_host(listen.ip()), listen.port()),
                };
                vec![Listener {
                    protocol: SecurityProtocol::Plaintext,
                    address: listen,
                    advertised_host,
                    advertised_port,
                }]
            }
        };
        let listen = listeners[0].address;
        let (advertised_host, advertised_port) =
            (listeners[0].advertised_host.clone(), listeners[0].advertised_port);
        let security = SecurityConfig {
            tls_cert_file: args.tls_cert_file.or(file.tls_cert_file),
            tls_key_file: args.tls_key_file.or(file.tls_key_file),
            tls_client_ca_file: args.tls_client_ca_file.or(file.tls_client_ca_file),
            sasl_plain_users_file: args.sasl_plain_users_file.or(file.sasl_plain_users_file),
            scram_bootstrap: match args.scram_bootstrap.is_empty() {
                false => args.scram_bootstrap,
                true => file.scram_bootstrap.unwrap_or_default(),
            },
            connections_max_reauth_ms: args
                .connections_max_reauth_ms
                .or(file.connections_max_reauth_ms)
                .unwrap_or(0),
            authorizer: match args.authorizer.or(file.authorizer).as_deref() {
                None | Some("") | Some("none") => false,
                Some("acl") => true,
                Some(other) => {
                    return Err(format!(
                        "--authorizer {other:?} is not known; use --authorizer acl (or leave it \
                         out for no authorization)."
                    ))
                }
            },
            super_users: parse_super_users(args.super_users.or(file.super_users).as_deref())?,
            allow_everyone_if_no_acl_found: args
                .allow_everyone_if_no_acl_found
                .or(file.allow_everyone_if_no_acl_found)
                .unwrap_or(false),
            sasl_mechanism_inter_broker_protocol: args
                .sasl_mechanism_inter_broker_protocol
                .or(file.sasl_mechanism_inter_broker_protocol),
            inter_broker_sasl_username: args
                .inter_broker_sasl_username
                .or(file.inter_broker_sasl_username),
            inter_broker_sasl_password: args
                .inter_broker_sasl_password
                .or(file.inter_broker_sasl_password),
        };
        check_security(&listeners, &security)?;
        let available = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        let cores = args.cores.or(file.cores).unwrap_or(available);
        if cores == 0 || cores > available {
            return Err(format!(
                "--cores {cores} is out of range: this machine has {available} cores; \
                 use a value from 1 to {available}."
            ));
        }
        let default_partitions = args.default_partitions.or(file.default_partitions).unwrap_or(1);
        if !(1..=constants::PARTITIONS_PER_TOPIC_MAX).contains(&default_partitions) {
            return Err(format!(
                "--default-partitions {default_partitions} is out of range; use 1 to {}.",
                constants::PARTITIONS_PER_TOPIC_MAX
            ));
        }
        let durability = match args.durability.or(file.durability).as_deref() {
            None | Some("write") => Durability::Write,
            Some("fsync") => Durability::Fsync,
            Some(other) => {
                return Err(format!("--durability {other:?} is unknown; use write or fsync."))
            }
        };
        let replica_lag_time_max_ms = args
            .replica_lag_time_max_ms
            .or(file.replica_lag_time_max_ms)
            .unwrap_or(constants::REPLICA_LAG_TIME_MS_DEFAULT)
            .max(1);
        let replica_fetch_wait_max_ms = args
            .replica_fetch_wait_max_ms
            .or(file.replica_fetch_wait_max_ms)
            .unwrap_or(constants::REPLICA_FETCH_WAIT_MS_DEFAULT);
        // Kafka's check: a follower waiting longer than the lag time would leave the ISR.
        if replica_fetch_wait_max_ms == 0 || replica_fetch_wait_max_ms > replica_lag_time_max_ms {
            return Err(format!(
                "--replica-fetch-wait-max-ms {replica_fetch_wait_max_ms} must be positive and at \
                 most --replica-lag-time-max-ms ({replica_lag_time_max_ms})."
            ));
        }
        let rack = match args.rack.or(file.rack) {
            Some(rack) if rack.is_empty() || rack.len() > constants::RACK_ID_BYTES_MAX => {
                return Err(format!(
                    "--rack {rack:?} is not a rack id; give 1 to {} bytes.",
                    constants::RACK_ID_BYTES_MAX
                ))
            }
            rack => rack,
        };
        let replica_selector = match args.replica_selector.or(file.replica_selector).as_deref() {
            None | Some("leader") => ReplicaSelector::LeaderOnly,
            Some("rack-aware") => ReplicaSelector::RackAware,
            Some(other) => {
                return Err(format!(
                    "--replica-selector {other:?} is unknown; use leader or rack-aware."
                ))
            }
        };
        let log_json = match args.log_format.or(file.log_format).as_deref() {
            None | Some("text") => false,
            Some("json") => true,
            Some(other) => {
                return Err(format!("--log-format {other:?} is unknown; use text or json."))
            }
        };
        let frame_max_bytes = args
            .frame_max_bytes
            .or(file.frame_max_bytes)
            .unwrap_or(constants::FRAME_SIZE_BYTES_MAX_DEFAULT);
        let message_max_bytes = args
            .message_max_bytes
            .or(file.message_max_bytes)
            .unwrap_or(constants::MESSAGE_SIZE_BYTES_MAX_DEFAULT);
        if message_max_bytes < 1024 || message_max_bytes >= frame_max_bytes {
            return Err(format!(
                "--message-max-bytes {message_max_bytes} must be at least 1024 and below \
                 --frame-max-bytes ({frame_max_bytes})."
            ));
        }
        let connections_max_idle_ms = args
            .connections_max_idle_ms
            .or(file.connections_max_idle_ms)
            .unwrap_or(constants::CONNECTIONS_MAX_IDLE_MS_DEFAULT);
        if connections_max_idle_ms < constants::CONNECTIONS_MAX_IDLE_MS_MIN {
            return Err(format!(
                "--connections-max-idle-ms {connections_max_idle_ms} is too short; use at least \
                 {} (Kafka's default is 600000).",
                constants::CONNECTIONS_MAX_IDLE_MS_MIN
            ));
        }
        let idle_poll_time_us = args.idle_poll_time_us.or(file.idle_poll_time_us).unwrap_or(0);
        if idle_poll_time_us > constants::IDLE_POLL_TIME_US_MAX {
            return Err(format!(
                "--idle-poll-time-us {idle_poll_time_us} is too long; use at most {} (a shard \
                 that polls longer than that spends its core for nothing).",
                constants::IDLE_POLL_TIME_US_MAX
            ));
        }
        let log_retention_check_interval_ms = args
            .log_retention_check_interval_ms
            .or(file.log_retention_check_interval_ms)
            .unwrap_or(constants::RETENTION_CHECK_INTERVAL_MS);
        if log_retention_check_interval_ms == 0 {
            return Err("--log-retention-check-interval-ms must be at least 1 (Kafka's default \
                        is 300000)."
                .to_string());
        }
        let delivery_horizon_ms = args
            .delivery_horizon_ms
            .or(file.delivery_horizon_ms)
            .unwrap_or(constants::DELIVERY_HORIZON_MS);
        if delivery_horizon_ms < constants::DELIVERY_HORIZON_MS_MIN {
            return Err(format!(
                "--delivery-horizon-ms must be at least {}.",
                constants::DELIVERY_HORIZON_MS_MIN
            ));
        }
        let overrides = match args
            .max_connections_per_ip_overrides
            .as_deref()
            .or(file.max_connections_per_ip_overrides.as_deref())
        {
            Some(text) => ConnectionCaps::parse_overrides(text)?,
            None => HashMap::new(),
        };
        let per_ip = args.max_connections_per_ip.or(file.max_connections_per_ip);
        if per_ip == Some(0) && overrides.is_empty() {
            return Err("--max-connections-per-ip 0 refuses every client; give \
                        --max-connections-per-ip-overrides for the addresses that may connect, \
                        or a cap above 0."
                .to_string());
        }
        let connection_caps = ConnectionCaps { per_ip, overrides };
        let topic_defaults = TopicConfig {
            segment_bytes: args
                .segment_bytes
                .or(file.segment_bytes)
                .unwrap_or(constants::SEGMENT_SIZE_BYTES_DEFAULT),
            segment_ms: args
                .segment_ms
                .or(file.segment_ms)
                .unwrap_or(constants::SEGMENT_MS_DEFAULT),
            retention_ms: args
                .retention_ms
                .or(file.retention_ms)
                .unwrap_or(constants::RETENTION_MS_DEFAULT),
            retention_bytes: args
                .retention_bytes
                .or(file.retention_bytes)
                .unwrap_or(constants::RETENTION_BYTES_DEFAULT),
            max_message_bytes: message_max_bytes,
            timestamp_type: TimestampType::CreateTime,
            durability,
            min_insync_replicas: args
                .min_insync_replicas
                .or(file.min_insync_replicas)
                .unwrap_or(constants::MIN_INSYNC_REPLICAS_DEFAULT),
            cleanup: Default::default(),
            delivery_delay_ms: -1,
            dead_letter_group_enable: false,
        };
        topic_defaults.validate().map_err(|e| format!("{e}."))?;
        let groups = group_config(&GroupValues {
            initial_rebalance_delay_ms: args
                .group_initial_rebalance_delay_ms
                .or(file.group_initial_rebalance_delay_ms),
            session_timeout_ms_min: args
                .group_min_session_timeout_ms
                .or(file.group_min_session_timeout_ms),
            session_timeout_ms_max: args
                .group_max_session_timeout_ms
                .or(file.group_max_session_timeout_ms),
            offsets_retention_minutes: args
                .offsets_retention_minutes
                .or(file.offsets_retention_minutes),
            offsets_segment_bytes: args
                .offsets_topic_segment_bytes
                .or(file.offsets_topic_segment_bytes),
            consumer_session_timeout_ms: args
                .group_consumer_session_timeout_ms
                .or(file.group_consumer_session_timeout_ms),
            consumer_heartbeat_interval_ms: args
                .group_consumer_heartbeat_interval_ms
                .or(file.group_consumer_heartbeat_interval_ms),
            consumer_assignors: args
                .group_consumer_assignors
                .clone()
                .or(file.group_consumer_assignors.clone()),
            migration_policy: args
                .group_consumer_migration_policy
                .clone()
                .or(file.group_consumer_migration_policy.clone()),
            consumer_max_size: args.group_consumer_max_size.or(file.group_consumer_max_size),
            classic_max_size: args.group_max_size.or(file.group_max_size),
            share_max_size: args.group_share_max_size.or(file.group_share_max_size),
            share: [
                args.group_share_session_timeout_ms.or(file.group_share_session_timeout_ms),
                args.group_share_heartbeat_interval_ms.or(file.group_share_heartbeat_interval_ms),
                args.group_share_record_lock_duration_ms
                    .or(file.group_share_record_lock_duration_ms),
                args.group_share_delivery_count_limit.or(file.group_share_delivery_count_limit),
                args.group_share_partition_max_record_locks
                    .or(file.group_share_partition_max_record_locks),
                args.group_share_assignment_interval_ms.or(file.group_share_assignment_interval_ms),
                args.group_share_fetch_recheck_ms.or(file.group_share_fetch_recheck_ms),
            ],
        })?;
        let node_id = args.node_id.or(file.node_id);
        let liveness = liveness_config(
            args.broker_heartbeat_interval_ms.or(file.broker_heartbeat_interval_ms),
            args.broker_session_timeout_ms.or(file.broker_session_timeout_ms),
        )?;
        let mut cluster = cluster_config(
            node_id,
            args.controller_listen.or(file.controller_listen),
            args.controller_quorum_voters.or(file.controller_quorum_voters),
            args.process_roles.or(file.process_roles).as_deref(),
            liveness,
        )?;
        if let Some(cluster) = &mut cluster {
            let rebalance = args.auto_leader_rebalance_enable.or(file.auto_leader_rebalance_enable);
            let interval_ms = args
                .leader_imbalance_check_interval_ms
                .or(file.leader_imbalance_check_interval_ms)
                .unwrap_or(constants::LEADER_IMBALANCE_CHECK_INTERVAL_MS_DEFAULT)
                .max(1);
            cluster.leader_imbalance_check_interval_ms =
                rebalance.unwrap_or(true).then_some(interval_ms);
            let records = args
                .metadata_snapshot_interval_records
                .or(file.metadata_snapshot_interval_records)
                .unwrap_or(constants::METADATA_SNAPSHOT_INTERVAL_RECORDS_DEFAULT);
            if records == 0 {
                return Err("--metadata-snapshot-interval-records must be at least 1.".into());
            }
            cluster.metadata_snapshot_interval_records = records;
        }
        if let Some(cluster) = &cluster {
            if listeners.len() > 1 {
                return Err("a cluster node takes one listener for now (its address is what the \
                            metadata log registers); give --listeners a single entry."
                    .into());
            }
            if let Some(controller_listen) = cluster.controller_listen {
                if controller_listen.port() == listen.port() {
                    return Err(format!(
                        "--controller-listen {controller_listen} uses the port of --listen; give \
                         the controller a port of its own."
                    ));
                }
            }
        }
        let metrics_listen = match args.metrics_listen.or(file.metrics_listen) {
            None => None,
            Some(text) => Some(resolve(&text).map_err(|e| {
                format!("--metrics-listen {text:?} is not a usable address ({e}); give HOST:PORT.")
            })?),
        };
        if let Some(metrics) = metrics_listen {
            if listeners.iter().any(|l| l.address.port() == metrics.port()) {
                return Err(format!(
                    "--metrics-listen {metrics} uses the port of a Kafka listener; give the \
                     metrics endpoint a port of its own."
                ));
            }
        }
        let txns = txn_config(
            args.transaction_state_log_segment_bytes.or(file.transaction_state_log_segment_bytes),
            args.transactional_id_expiration_ms.or(file.transactional_id_expiration_ms),
        )?;
        Ok(Config {
            listen,
            advertised_host,
            advertised_port,
            listeners,
            security,
            metrics_listen,
            data_dir: args.data_dir.or(file.data_dir).unwrap_or_else(|| "spate-data".into()),
            cores,
            node_id: NodeId(node_id.unwrap_or(1)),
            cluster,
            auto_create_topics: args.auto_create_topics.or(file.auto_create_topics).unwrap_or(true),
            default_partitions,
            frame_max_bytes,
            connections_max_idle_ms,
            idle_poll_time_us,
            log_retention_check_interval_ms,
            delivery_horizon_ms,
            cleaner: CleanerConfig {
                backoff_ms: args
                    .log_cleaner_backoff_ms
                    .or(file.log_cleaner_backoff_ms)
                    .unwrap_or(constants::CLEANER_BACKOFF_MS_DEFAULT)
                    .max(1),
                dedupe_buffer_bytes: args
                    .log_cleaner_dedupe_buffer_size
                    .or(file.log_cleaner_dedupe_buffer_size)
                    .unwrap_or(constants::CLEANER_DEDUPE_BUFFER_BYTES_DEFAULT),
                io_bytes_per_second: args
                    .log_cleaner_io_max_bytes_per_second
                    .or(file.log_cleaner_io_max_bytes_per_second)
                    .filter(|rate| *rate > 0),
            },
            connection_caps,
            replica_lag_time_max_ms,
            replica_fetch_wait_max_ms,
            rack,
            replica_selector,
            batch_cache_bytes: args
                .batch_cache_bytes
                .or(file.batch_cache_bytes)
                .unwrap_or(constants::BATCH_CACHE_BYTES_PER_SHARD_DEFAULT),
            min_free_bytes: args.min_free_bytes.or(file.min_free_bytes),
            log_json,
            topic_defaults,
            groups,
            txns,
            static_given,
        })
    }
}

/// The Kafka names of the broker configs that the command line or the file sets.
fn given_broker_configs(args: &Args, file: &FileConfig) -> BTreeSet<&'static str> {
    let (a, f) = (args, file);
    let given = [
        (
            "listeners",
            a.listen.is_some()
                || f.listen.is_some()
                || a.listeners.is_some()
                || f.listeners.is_some(),
        ),
        (
            "advertised.listeners",
            a.advertised_listener.is_some()
                || f.advertised_listener.is_some()
                || a.advertised_listeners.is_some()
                || f.advertised_listeners.is_some(),
        ),
        ("log.dirs", a.data_dir.is_some() || f.data_dir.is_some()),
        ("node.id", a.node_id.or(f.node_id).is_some()),
        ("num.partitions", a.default_partitions.or(f.default_partitions).is_some()),
        ("auto.create.topics.enable", a.auto_create_topics.or(f.auto_create_topics).is_some()),
        ("socket.request.max.bytes", a.frame_max_bytes.or(f.frame_max_bytes).is_some()),
        ("message.max.bytes", a.message_max_bytes.or(f.message_max_bytes).is_some()),
        ("log.segment.bytes", a.segment_bytes.or(f.segment_bytes).is_some()),
        ("log.roll.ms", a.segment_ms.or(f.segment_ms).is_some()),
        ("log.retention.ms", a.retention_ms.or(f.retention_ms).is_some()),
        ("log.retention.bytes", a.retention_bytes.or(f.retention_bytes).is_some()),
        ("num.io.threads", a.cores.or(f.cores).is_some()),
        ("min.insync.replicas", a.min_insync_replicas.or(f.min_insync_replicas).is_some()),
        ("log.flush.interval.messages", a.durability.is_some() || f.durability.is_some()),
        (
            "group.initial.rebalance.delay.ms",
            a.group_initial_rebalance_delay_ms.or(f.group_initial_rebalance_delay_ms).is_some(),
        ),
        (
            "group.min.session.timeout.ms",
            a.group_min_session_timeout_ms.or(f.group_min_session_timeout_ms).is_some(),
        ),
        (
            "group.max.session.timeout.ms",
            a.group_max_session_timeout_ms.or(f.group_max_session_timeout_ms).is_some(),
        ),
        (
            "group.consumer.session.timeout.ms",
            a.group_consumer_session_timeout_ms.or(f.group_consumer_session_timeout_ms).is_some(),
        ),
        (
            "group.consumer.heartbeat.interval.ms",
            a.group_consumer_heartbeat_interval_ms
                .or(f.group_consumer_heartbeat_interval_ms)
                .is_some(),
        ),
        (
            "group.consumer.migration.policy",
            a.group_consumer_migration_policy
                .as_ref()
                .or(f.group_consumer_migration_policy.as_ref())
                .is_some(),
        ),
        (
            "group.consumer.max.size",
            a.group_consumer_max_size.or(f.group_consumer_max_size).is_some(),
        ),
        ("group.max.size", a.group_max_size.or(f.group_max_size).is_some()),
        ("group.share.max.size", a.group_share_max_size.or(f.group_share_max_size).is_some()),
        (
            "offsets.retention.minutes",
            a.offsets_retention_minutes.or(f.offsets_retention_minutes).is_some(),
        ),
        (
            "offsets.topic.segment.bytes",
            a.offsets_topic_segment_bytes.or(f.offsets_topic_segment_bytes).is_some(),
        ),
        (
            "transaction.state.log.segment.bytes",
            a.transaction_state_log_segment_bytes
                .or(f.transaction_state_log_segment_bytes)
                .is_some(),
        ),
        (
            "transactional.id.expiration.ms",
            a.transactional_id_expiration_ms.or(f.transactional_id_expiration_ms).is_some(),
        ),
        ("log.cleaner.backoff.ms", a.log_cleaner_backoff_ms.or(f.log_cleaner_backoff_ms).is_some()),
        (
            "log.cleaner.dedupe.buffer.size",
            a.log_cleaner_dedupe_buffer_size.or(f.log_cleaner_dedupe_buffer_size).is_some(),
        ),
        (
            "log.cleaner.io.max.bytes.per.second",
            a.log_cleaner_io_max_bytes_per_second
                .or(f.log_cleaner_io_max_bytes_per_second)
                .is_some(),
        ),
        ("max.connections.per.ip", a.max_connections_per_ip.or(f.max_connections_per_ip).is_some()),
        (
            "max.connections.per.ip.overrides",
            a.max_connections_per_ip_overrides.is_some()
                || f.max_connections_per_ip_overrides.is_some(),
        ),
        (
            "connections.max.idle.ms",
            a.connections_max_idle_ms.or(f.connections_max_idle_ms).is_some(),
        ),
        (
            "log.retention.check.interval.ms",
            a.log_retention_check_interval_ms.or(f.log_retention_check_interval_ms).is_some(),
        ),
        ("broker.rack", a.rack.is_some() || f.rack.is_some()),
    ];
    given.into_iter().filter(|(_, given)| *given).map(|(name, _)| name).collect()
}

/// The quorum settings: all three options or none (`--controller-listen` may be left out and
/// defaults to every interface at the voter's port). A broker-only node (`--process-roles
/// broker`) has an id that is no voter's and no controller listener.
fn cluster_config(
    node_id: Option<i32>,
    listen: Option<String>,
    voters: Option<String>,
    roles: Option<&str>,
    (broker_heartbeat_interval_ms, broker_session_timeout_ms): (u64, u64),
) -> Result<Option<ClusterConfig>, String> {
    let broker_only = roles.map(process_roles).transpose()?.unwrap_or(false);
    let Some(voters) = voters else {
        if let Some(listen) = listen {
            return Err(format!(
                "--controller-listen {listen} needs --controller-quorum-voters; give both or \
                 neither."
            ));
        }
        if broker_only {
            return Err("--process-roles broker needs --controller-quorum-voters, the quorum \
                        whose metadata log it follows."
                .into());
        }
        return Ok(None);
    };
    let voters = QuorumVoters::parse(&voters)?;
    let Some(node_id) = node_id else {
        return Err(format!(
            "--controller-quorum-voters needs --node-id, one of the voters' ids ({}).",
            ids_text(&voters)
        ));
    };
    let liveness = (broker_heartbeat_interval_ms, broker_session_timeout_ms);
    if broker_only {
        return broker_only_config(node_id, listen, voters, liveness).map(Some);
    }
    let Some(voter) = voters.get(NodeId(node_id)) else {
        return Err(format!(
            "--node-id {node_id} is not in --controller-quorum-voters ({voters}); use one of \
             {}, or start a broker-only node with --process-roles broker.",
            ids_text(&voters)
        ));
    };
    let controller_listen = match listen {
        None => SocketAddr::from((Ipv4Addr::UNSPECIFIED, voter.port)),
        Some(text) => resolve(&text)
            .map_err(|e| format!("--controller-listen {text:?} is not a usable address ({e})"))?,
    };
    if controller_listen.port() != voter.port {
        return Err(format!(
            "--controller-listen {controller_listen} does not match this node's voter address \
             {voter}; use port {}.",
            voter.port
        ));
    }
    Ok(Some(ClusterConfig {
        controller_listen: Some(controller_listen),
        voters,
        broker_heartbeat_interval_ms,
        broker_session_timeout_ms,
        leader_imbalance_check_interval_ms: None,
        metadata_snapshot_interval_records: constants::METADATA_SNAPSHOT_INTERVAL_RECORDS_DEFAULT,
    }))
}

/// Kafka's process.roles: whether this node is a broker only (true) or a broker and a
/// controller (false). Spate has no controller-only nodes.
fn process_roles(text: &str) -> Result<bool, String> {
    let mut roles: Vec<&str> = text.split(',').map(str::trim).collect();
    roles.sort_unstable();
    match roles.as_slice() {
        ["broker"] => Ok(true),
        ["broker", "controller"] => Ok(false),
        _ => Err(format!(
            "--process-roles {text:?} is not supported; use broker,controller (a broker and a \
             voter) or broker (a broker only)."
        )),
    }
}

/// A broker-only node's quorum settings: a node id of its own, no controller listener.
fn broker_only_config(
    node_id: i32,
    listen: Option<String>,
    voters: QuorumVoters,
    (broker_heartbeat_interval_ms, broker_session_timeout_ms): (u64, u64),
) -> Result<ClusterConfig, String> {
    if let Some(listen) = listen {
        return Err(format!(
            "--controller-listen {listen} is for voters: a broker-only node (--process-roles \
             broker) takes no controller connections; leave it out."
        ));
    }
    if voters.get(NodeId(node_id)).is_some() {
        return Err(format!(
            "--node-id {node_id} is a voter in --controller-quorum-voters ({voters}); give the \
             broker-only node an id of its own, or start it with --process-roles \
             broker,controller."
        ));
    }
    Ok(ClusterConfig {
        controller_listen: None,
        voters,
        broker_heartbeat_interval_ms,
        broker_session_timeout_ms,
        leader_imbalance_check_interval_ms: None,
        metadata_snapshot_interval_records: constants::METADATA_SNAPSHOT_INTERVAL_RECORDS_DEFAULT,
    })
}

/// The heartbeat interval and session timeout (read on a single node too, where they are
/// not used, so that one file serves both): the interval must be shorter than the timeout,
/// or every broker would be fenced between two heartbeats.
fn liveness_config(
    interval_ms: Option<u64>,
    timeout_ms: Option<u64>,
) -> Result<(u64, u64), String> {
    let interval_ms = interval_ms.unwrap_or(constants::BROKER_HEARTBEAT_INTERVAL_MS_DEFAULT);
    let timeout_ms = timeout_ms.unwrap_or(constants::BROKER_SESSION_TIMEOUT_MS_DEFAULT);
    if interval_ms < constants::BROKER_HEARTBEAT_INTERVAL_MS_MIN || interval_ms >= timeout_ms {
        return Err(format!(
            "--broker-heartbeat-interval-ms {interval_ms} must be at least {} and below \
             --broker-session-timeout-ms ({timeout_ms}).",
            constants::BROKER_HEARTBEAT_INTERVAL_MS_MIN
        ));
    }
    Ok((interval_ms, timeout_ms))
}

fn ids_text(voters: &QuorumVoters) -> String {
    voters.ids().map(|id| id.to_string()).collect::<Vec<_>>().join(", ")
}

/// The group options as given (None: the default).
struct GroupValues {
    initial_rebalance_delay_ms: Option<i32>,
    session_timeout_ms_min: Option<i32>,
    session_timeout_ms_max: Option<i32>,
    offsets_retention_minutes: Option<i64>,
    offsets_segment_bytes: Option<u64>,
    consumer_session_timeout_ms: Option<i32>,
    consumer_heartbeat_interval_ms: Option<i32>,
    consumer_assignors: Option<String>,
    migration_policy: Option<String>,
    consumer_max_size: Option<i32>,
    classic_max_size: Option<i32>,
    share_max_size: Option<i32>,
    /// The share group options, in `--group-share-*` order: session timeout, heartbeat
    /// interval, record lock duration, delivery count limit, max record locks, assignment
    /// interval, fetch recheck.
    share: [Option<i32>; 7],
}

fn group_config(values: &GroupValues) -> Result<GroupConfig, String> {
    let defaults = GroupConfig::default();
    let delay = values.initial_rebalance_delay_ms.unwrap_or(defaults.initial_rebalance_delay_ms);
    let min = values.session_timeout_ms_min.unwrap_or(defaults.session_timeout_ms_min);
    let max = values.session_timeout_ms_max.unwrap_or(defaults.session_timeout_ms_max);
    let retention_minutes =
        values.offsets_retention_minutes.unwrap_or(defaults.offsets_retention_ms / 60_000);
    if delay < 0 {
        return Err(format!("--group-initial-rebalance-delay-ms {delay} must not be negative."));
    }
    if min <= 0 || max < min {
        return Err(format!(
            "--group-min-session-timeout-ms ({min}) must be positive and at most \
             --group-max-session-timeout-ms ({max})."
        ));
    }
    if !(1..=i64::MAX / 60_000).contains(&retention_minutes) {
        return Err(format!("--offsets-retention-minutes {retention_minutes} must be positive."));
    }
    let segment_bytes = values.offsets_segment_bytes.unwrap_or(defaults.offsets_segment_bytes);
    check_internal_segment_bytes("--offsets-topic-segment-bytes", segment_bytes)?;
    let session =
        values.consumer_session_timeout_ms.unwrap_or(defaults.consumer_session_timeout_ms);
    let interval =
        values.consumer_heartbeat_interval_ms.unwrap_or(defaults.consumer_heartbeat_interval_ms);
    if interval <= 0 || session <= interval {
        return Err(format!(
            "--group-consumer-heartbeat-interval-ms ({interval}) must be positive and below \
             --group-consumer-session-timeout-ms ({session})."
        ));
    }
    let assignors = match &values.consumer_assignors {
        None => defaults.consumer_assignors.clone(),
        Some(list) => {
            let names: Vec<String> =
                list.split(',').map(|n| n.trim().to_string()).filter(|n| !n.is_empty()).collect();
            if names.is_empty() || names.iter().any(|n| !CONSUMER_ASSIGNORS.contains(&n.as_str())) {
                return Err(format!(
                    "--group-consumer-assignors {list:?} must name one or more of uniform, range."
                ));
            }
            names
        }
    };
    let migration_policy = match &values.migration_policy {
        None => defaults.migration_policy,
        Some(name) => MigrationPolicy::parse(name.trim()).ok_or_else(|| {
            format!(
                "--group-consumer-migration-policy {name:?} must be one of bidirectional, \
                 upgrade, downgrade, disabled."
            )
        })?,
    };
    let consumer_max_size = values.consumer_max_size.unwrap_or(i32::MAX);
    if consumer_max_size < 1 {
        return Err(format!("--group-consumer-max-size {consumer_max_size} must be positive."));
    }
    let classic_max_size = values.classic_max_size.unwrap_or(i32::MAX);
    if classic_max_size < 1 {
        return Err(format!("--group-max-size {classic_max_size} must be positive."));
    }
    let share_max_size = values.share_max_size.unwrap_or(defaults.share_max_size as i32);
    // Kafka's bounds for group.share.max.size.
    if !(1..=1000).contains(&share_max_size) {
        return Err(format!("--group-share-max-size {share_max_size} must be between 1 and 1000."));
    }
    let [share_session, share_interval, lock, limit, locks, assignment, recheck] = values.share;
    let recheck = recheck.unwrap_or(defaults.share_fetch_recheck_ms);
    if !(1..=3_600_000).contains(&recheck) {
        return Err(format!(
            "--group-share-fetch-recheck-ms {recheck} must be between 1 and 3600000."
        ));
    }
    let assignment = assignment.unwrap_or(defaults.share_assignment_interval_ms);
    if assignment < 0 {
        return Err(format!(
            "--group-share-assignment-interval-ms {assignment} must not be negative."
        ));
    }
    let share_session = share_session.unwrap_or(defaults.share_session_timeout_ms);
    let share_interval = share_interval.unwrap_or(defaults.share_heartbeat_interval_ms);
    if share_interval <= 0 || share_session <= share_interval {
        return Err(format!(
            "--group-share-heartbeat-interval-ms ({share_interval}) must be positive and below \
             --group-share-session-timeout-ms ({share_session})."
        ));
    }
    let lock = lock.unwrap_or(defaults.share_record_lock_duration_ms);
    let limit = limit.unwrap_or(defaults.share_delivery_count_limit);
    let locks = locks.unwrap_or(defaults.share_partition_max_record_locks);
    // Kafka's bounds: lock duration 1000..=3600000, delivery count 2..=10, locks 100..=10000.
    if !(1_000..=3_600_000).contains(&lock) {
        return Err(format!(
            "--group-share-record-lock-duration-ms {lock} must be between 1000 and 3600000."
        ));
    }
    if !(2..=10).contains(&limit) {
        return Err(format!(
            "--group-share-delivery-count-limit {limit} must be between 2 and 10."
        ));
    }
    if !(100..=10_000).contains(&locks) {
        return Err(format!(
            "--group-share-partition-max-record-locks {locks} must be between 100 and 10000."
        ));
    }
    Ok(GroupConfig {
        share_session_timeout_ms: share_session,
        share_heartbeat_interval_ms: share_interval,
        share_assignment_interval_ms: assignment,
        share_record_lock_duration_ms: lock,
        share_delivery_count_limit: limit,
        share_partition_max_record_locks: locks,
        share_fetch_recheck_ms: recheck,
        consumer_session_timeout_ms: session,
        consumer_heartbeat_interval_ms: interval,
        consumer_assignors: assignors,
        migration_policy,
        consumer_max_size: consumer_max_size as usize,
        classic_max_size: classic_max_size as usize,
        share_max_size: share_max_size as usize,
        initial_rebalance_delay_ms: delay,
        session_timeout_ms_min: min,
        session_timeout_ms_max: max,
        offsets_retention_ms: retention_minutes * 60_000,
        offsets_segment_bytes: segment_bytes,
        ..defaults
    })
}

fn txn_config(segment_bytes: Option<u64>, expiration_ms: Option<i64>) -> Result<TxnConfig, String> {
    let defaults = TxnConfig::default();
    let segment_bytes = segment_bytes.unwrap_or(defaults.log_segment_bytes);
    check_internal_segment_bytes("--transaction-state-log-segment-bytes", segment_bytes)?;
    let expiration_ms = expiration_ms.unwrap_or(defaults.id_expiration_ms);
    if expiration_ms <= 0 {
        return Err(format!("--transactional-id-expiration-ms {expiration_ms} must be positive."));
    }
    Ok(TxnConfig { log_segment_bytes: segment_bytes, id_expiration_ms: expiration_ms })
}

/// The segment size of an internal log: at least the smallest segment, at most the default
/// topic segment.
fn check_internal_segment_bytes(flag: &str, bytes: u64) -> Result<(), String> {
    if !(constants::SEGMENT_SIZE_BYTES_MIN..=constants::SEGMENT_SIZE_BYTES_DEFAULT).contains(&bytes)
    {
        return Err(format!(
            "{flag} {bytes} is out of range; use {} to {}.",
            constants::SEGMENT_SIZE_BYTES_MIN,
            constants::SEGMENT_SIZE_BYTES_DEFAULT
        ));
    }
    Ok(())
}

fn read_file(path: &Path) -> Result<FileConfig, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read config file {}: {e}; check the path.", path.display()))?;
    parse_file(&text)
        .map_err(|e| format!("config file {} is invalid: {e}", path.display()).replace('\n', " "))
}

/// Parses the text of a config file (pure; the values are checked by `Config::from_args`).
/// Public for the fuzz target.
pub fn check_file_text(text: &str) -> Result<(), String> {
    parse_file(text).map(drop)
}

fn parse_file(text: &str) -> Result<FileConfig, String> {
    toml::from_str(text).map_err(|e: toml::de::Error| e.to_string())
}

fn resolve(text: &str) -> std::io::Result<SocketAddr> {
    text.to_socket_addrs()?.next().ok_or_else(|| std::io::Error::other("no address"))
}

/// Parses `--listeners` (and `--advertised-listeners`, which may name a subset; a
/// listener it does not name advertises its own address, or `--advertised-listener`'s host
/// for the first).
fn parse_listeners(
    text: &str,
    advertised: Option<&str>,
    advertised_listener: Option<&str>,
) -> Result<Vec<Listener>, String> {
    let entries = |flag: &str, text: &str| -> Result<Vec<(SecurityProtocol, String)>, String> {
        let mut out: Vec<(SecurityProtocol, String)> = Vec::new();
        for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let Some((name, address)) = entry.split_once("://") else {
                return Err(format!(
                    "{flag} entry {entry:?} must look like NAME://host:port (NAME one of \
                     PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL)."
                ));
            };
            let protocol = SecurityProtocol::from_name(name).ok_or_else(|| {
                format!(
                    "{flag} entry {entry:?} names the unknown listener {name:?}; use PLAINTEXT, \
                     SSL, SASL_PLAINTEXT or SASL_SSL."
                )
            })?;
            if out.iter().any(|(p, _)| *p == protocol) {
                return Err(format!("{flag} names {} twice; give each listener once.", name));
            }
            out.push((protocol, address.to_string()));
        }
        Ok(out)
    };
    let listed = entries("--listeners", text)?;
    if listed.is_empty() {
        return Err("--listeners is empty; give at least one NAME://host:port.".into());
    }
    let advertised = match advertised {
        Some(text) => entries("--advertised-listeners", text)?,
        None => Vec::new(),
    };
    for (protocol, _) in &advertised {
        if !listed.iter().any(|(p, _)| p == protocol) {
            return Err(format!(
                "--advertised-listeners names {} which --listeners does not have; advertise \
                 only listeners that exist.",
                protocol.name()
            ));
        }
    }
    let mut listeners: Vec<Listener> = Vec::with_capacity(listed.len());
    for (index, (protocol, address_text)) in listed.into_iter().enumerate() {
        let flag = format!("--listeners {}", protocol.name());
        let address = resolve(&address_text)
            .map_err(|e| format!("{flag} address {address_text:?} is not usable ({e})."))?;
        if listeners.iter().any(|l| l.address.port() == address.port()) {
            return Err(format!(
                "{flag} uses port {} twice; give each listener a port of its own.",
                address.port()
            ));
        }
        let (advertised_host, advertised_port) =
            match advertised.iter().find(|(p, _)| *p == protocol) {
                Some((_, text)) => split_host_port(text)?,
                None => match (index, advertised_listener) {
                    (0, Some(text)) => split_host_port(text)?,
                    _ => (default_advertised_host(address.ip()), address.port()),
                },
            };
        listeners.push(Listener { protocol, address, advertised_host, advertised_port });
    }
    Ok(listeners)
}

/// `--super-users`: principals separated by `,` or `;`, each `Type:name`.
fn parse_super_users(text: Option<&str>) -> Result<Vec<String>, String> {
    let Some(text) = text else {
        return Ok(Vec::new());
    };
    text.split([',', ';'])
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|principal| match principal.split_once(':') {
            Some((kind, name)) if !kind.is_empty() && !name.is_empty() => Ok(principal.to_string()),
            _ => Err(format!(
                "--super-users names {principal:?}; write principals as User:name, separated by \
                 commas."
            )),
        })
        .collect()
}

/// TLS listeners need a certificate and key; the TLS and SASL options need a listener that
/// uses them.
fn check_security(listeners: &[Listener], security: &SecurityConfig) -> Result<(), String> {
    let tls = listeners.iter().find(|l| l.protocol.tls());
    match (tls, &security.tls_cert_file, &security.tls_key_file) {
        (Some(l), None, _) | (Some(l), _, None) => {
            return Err(format!(
                "the {} listener needs --tls-cert-file and --tls-key-file (PEM chain and key).",
                l.protocol.name()
            ))
        }
        (None, Some(_), _) | (None, _, Some(_)) => {
            return Err("--tls-cert-file and --tls-key-file need an SSL or SASL_SSL listener in \
                        --listeners."
                .into())
        }
        _ => {}
    }
    if security.tls_client_ca_file.is_some() && tls.is_none() {
        return Err("--tls-client-ca-file needs an SSL or SASL_SSL listener in --listeners.".into());
    }
    if !security.authorizer
        && (!security.super_users.is_empty() || security.allow_everyone_if_no_acl_found)
    {
        return Err(
            "--super-users and --allow-everyone-if-no-acl-found need --authorizer acl.".into()
        );
    }
    let sasl = listeners.iter().any(|l| l.protocol.sasl());
    if !sasl && security.sasl_plain_users_file.is_some() {
        return Err("--sasl-plain-users-file needs a SASL_PLAINTEXT or SASL_SSL listener in \
                    --listeners."
            .into());
    }
    Ok(())
}

fn split_host_port(text: &str) -> Result<(String, u16), String> {
    let (host, port) = text
        .rsplit_once(':')
        .ok_or_else(|| format!("--advertised-listener {text:?} must look like host:port."))?;
    let port = port
        .parse::<u16>()
        .map_err(|_| format!("--advertised-listener {text:?} has a bad port; use host:port."))?;
    Ok((host.to_string(), port))
}

/// Clients must be told an address they can reach. For a wildcard listen address we pick the
/// IPv4 address of the default route (no packet is sent: connecting a UDP socket only asks the
/// routing table) and fall back to loopback.
fn default_advertised_host(ip: IpAddr) -> String {
    if !ip.is_unspecified() {
        return ip.to_string();
    }
    let routed = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
        .and_then(|socket| socket.connect((Ipv4Addr::new(192, 0, 2, 1), 9)).map(|_| socket))
        .and_then(|socket| socket.local_addr());
    match routed {
        Ok(addr) if !addr.ip().is_unspecified() => addr.ip().to_string(),
        _ => Ipv4Addr::LOCALHOST.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_sensible() {
        let config = Config::from_args(Args::default()).expect("defaults are valid");
        assert_eq!(config.listen.port(), 9092);
        assert_eq!(config.data_dir, PathBuf::from("spate-data"));
        assert_eq!(config.default_partitions, 1);
        assert!(config.auto_create_topics);
        assert!(config.cores >= 1);
    }

    #[test]
    fn file_values_apply_and_the_command_line_wins() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("spate.toml");
        std::fs::write(&path, "listen = \"127.0.0.1:9999\"\ndefault-partitions = 3\n")
            .expect("write");
        let args = Args { config: Some(path), default_partitions: Some(5), ..Args::default() };
        let config = Config::from_args(args).expect("valid");
        assert_eq!(config.listen.port(), 9999);
        assert_eq!(config.default_partitions, 5);
        assert_eq!(config.advertised_host, "127.0.0.1");
    }

    #[test]
    fn min_free_bytes_comes_from_either_place() {
        assert_eq!(Config::from_args(Args::default()).expect("valid").min_free_bytes, None);
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("spate.toml");
        std::fs::write(&path, "min-free-bytes = 1048576\n").expect("write");
        let args = Args { config: Some(path.clone()), ..Args::default() };
        assert_eq!(Config::from_args(args).expect("valid").min_free_bytes, Some(1_048_576));
        let args = Args { config: Some(path), min_free_bytes: Some(0), ..Args::default() };
        assert_eq!(Config::from_args(args).expect("valid").min_free_bytes, Some(0));
    }

    #[test]
    fn bad_values_give_one_sentence() {
        let args = Args { durability: Some("sometimes".into()), ..Args::default() };
        let error = Config::from_args(args).expect_err("invalid");
        assert!(error.contains("write or fsync"), "{error}");
        let args = Args { cores: Some(100_000), ..Args::default() };
        assert!(Config::from_args(args).is_err());
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "no-such-option = 1\n").expect("write");
        let args = Args { config: Some(path), ..Args::default() };
        let error = Config::from_args(args).expect_err("unknown key");
        assert!(!error.contains('\n'), "{error}");
    }

    #[test]
    fn quorum_options_are_all_or_nothing_and_must_agree() {
        assert!(Config::from_args(Args::default()).expect("valid").cluster.is_none());
        let voters = || Some("1@127.0.0.1:9093,2@127.0.0.1:9193,3@127.0.0.1:9293".to_string());
        let args = Args {
            node_id: Some(2),
            controller_listen: Some("127.0.0.1:9193".into()),
            controller_quorum_voters: voters(),
            ..Args::default()
        };
        let cluster = Config::from_args(args).expect("valid").cluster.expect("clustered");
        assert_eq!(cluster.controller_listen.map(|a| a.port()), Some(9193));
        assert_eq!(cluster.voters.voters().len(), 3);
        let args = Args { node_id: Some(3), controller_quorum_voters: voters(), ..Args::default() };
        let cluster = Config::from_args(args).expect("valid").cluster.expect("clustered");
        assert_eq!(cluster.controller_listen.map(|a| a.port()), Some(9293));
        for (bad, expected) in [
            (Args { controller_quorum_voters: voters(), ..Args::default() }, "needs --node-id"),
            (
                Args { node_id: Some(4), controller_quorum_voters: voters(), ..Args::default() },
                "not in --controller-quorum-voters",
            ),
            (
                Args {
                    node_id: Some(1),
                    controller_listen: Some("127.0.0.1:9193".into()),
                    controller_quorum_voters: voters(),
                    ..Args::default()
                },
                "does not match",
            ),
            (
                Args { controller_listen: Some("127.0.0.1:9093".into()), ..Args::default() },
                "needs --controller-quorum-voters",
            ),
            (
                Args {
                    node_id: Some(1),
                    listen: Some("127.0.0.1:9093".into()),
                    controller_quorum_voters: voters(),
                    ..Args::default()
                },
                "port of its own",
            ),
        ] {
            let error = Config::from_args(bad).expect_err(expected);
            assert!(error.contains(expected), "{error}");
            assert!(!error.contains('\n'), "{error}");
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("spate.toml");
        let text = "node-id = 1\ncontroller-quorum-voters = \"1@127.0.0.1:9093\"\n\
                    controller-listen = \"127.0.0.1:9093\"\n";
        std::fs::write(&path, text).expect("write");
        let args = Args { config: Some(path), ..Args::default() };
        assert!(Config::from_args(args).expect("valid").cluster.is_some());
    }

    #[test]
    fn broker_only_nodes_have_an_id_of_their_own_and_no_controller_listener() {
        let voters = || Some("1@127.0.0.1:9093,2@127.0.0.1:9193".to_string());
        let roles = |roles: &str| Some(roles.to_string());
        let args = Args {
            node_id: Some(4),
            controller_quorum_voters: voters(),
            process_roles: roles("broker"),
            ..Args::default()
        };
        let cluster = Config::from_args(args).expect("valid").cluster.expect("clustered");
        assert_eq!(cluster.controller_listen, None);
        let args = Args {
            node_id: Some(2),
            controller_quorum_voters: voters(),
            process_roles: roles("controller, broker"),
            ..Args::default()
        };
        let cluster = Config::from_args(args).expect("valid").cluster.expect("clustered");
        assert_eq!(cluster.controller_listen.map(|a| a.port()), Some(9193));
        let single = Args { process_roles: roles("broker,controller"), ..Args::default() };
        assert!(Config::from_args(single).expect("valid").cluster.is_none());
        for (bad, expected) in [
            (
                Args {
                    node_id: Some(4),
                    controller_listen: Some("127.0.0.1:9393".into()),
                    controller_quorum_voters: voters(),
                    process_roles: roles("broker"),
                    ..Args::default()
                },
                "is for voters",
            ),
            (
                Args {
                    node_id: Some(1),
                    controller_quorum_voters: voters(),
                    process_roles: roles("broker"),
                    ..Args::default()
                },
                "is a voter",
            ),
            (
                Args { process_roles: roles("broker"), ..Args::default() },
                "needs --controller-quorum-voters",
            ),
            (
                Args {
                    node_id: Some(1),
                    controller_quorum_voters: voters(),
                    process_roles: roles("controller"),
                    ..Args::default()
                },
                "not supported",
            ),
        ] {
            let error = Config::from_args(bad).expect_err(expected);
            assert!(error.contains(expected), "{error}");
            assert!(!error.contains('\n'), "{error}");
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("spate.toml");
        let text = "node-id = 5\ncontroller-quorum-voters = \"1@127.0.0.1:9093\"\n\
                    process-roles = \"broker\"\n";
        std::fs::write(&path, text).expect("write");
        let args = Args { config: Some(path), ..Args::default() };
        let cluster = Config::from_args(args).expect("valid").cluster.expect("clustered");
        assert_eq!(cluster.controller_listen, None);
    }

    #[test]
    fn liveness_options_default_to_kafkas_and_the_interval_is_below_the_timeout() {
        let voters = || Some("1@127.0.0.1:9093".to_string());
        let clustered = |interval, timeout| Args {
            node_id: Some(1),
            controller_quorum_voters: voters(),
            broker_heartbeat_interval_ms: interval,
            broker_session_timeout_ms: timeout,
            ..Args::default()
        };
        let cluster = Config::from_args(clustered(None, None)).expect("valid").cluster;
        let cluster = cluster.expect("clustered");
        assert_eq!(cluster.broker_heartbeat_interval_ms, 2000);
        assert_eq!(cluster.broker_session_timeout_ms, 9000);
        let cluster = Config::from_args(clustered(Some(200), Some(1500))).expect("valid").cluster;
        let cluster = cluster.expect("clustered");
        assert_eq!(
            (cluster.broker_heartbeat_interval_ms, cluster.broker_session_timeout_ms),
            (200, 1500)
        );
        for (interval, timeout) in [(Some(9000), None), (Some(500), Some(500)), (Some(1), None)] {
            let error = Config::from_args(clustered(interval, timeout)).expect_err("invalid");
            assert!(error.starts_with("--broker-heartbeat-interval-ms"), "{error}");
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("spate.toml");
        let text = "node-id = 1\ncontroller-quorum-voters = \"1@127.0.0.1:9093\"\n\
                    broker-heartbeat-interval-ms = 300\nbroker-session-timeout-ms = 2000\n";
        std::fs::write(&path, text).expect("write");
        let args = Args { config: Some(path), ..Args::default() };
        let cluster = Config::from_args(args).expect("valid").cluster.expect("clustered");
        assert_eq!(cluster.broker_session_timeout_ms, 2000);
        assert_eq!(cluster.broker_heartbeat_interval_ms, 300);
    }

    #[test]
    fn authorizer_options() {
        let config = Config::from_args(Args::default()).expect("defaults are valid");
        assert!(!config.security.authorizer);
        let args = Args {
            authorizer: Some("acl".into()),
            super_users: Some("User:admin; User:CN=ops,User:bob".into()),
            allow_everyone_if_no_acl_found: Some(true),
            ..Args::default()
        };
        let security = Config::from_args(args).expect("valid").security;
        assert!(security.authorizer && security.allow_everyone_if_no_acl_found);
        assert_eq!(security.super_users, ["User:admin", "User:CN=ops", "User:bob"]);
        for bad in [
            Args { authorizer: Some("simple".into()), ..Args::default() },
            Args { super_users: Some("User:admin".into()), ..Args::default() },
            Args {
                authorizer: Some("acl".into()),
                super_users: Some("admin".into()),
                ..Args::default()
            },
            Args { allow_everyone_if_no_acl_found: Some(true), ..Args::default() },
        ] {
            let error = Config::from_args(bad).expect_err("invalid");
            assert!(error.starts_with("--"), "{error}");
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("spate.toml");
        let text = "authorizer = \"acl\"\nsuper-users = \"User:admin\"\n\
                    allow-everyone-if-no-acl-found = true\n";
        std::fs::write(&path, text).expect("write");
        let args = Args { config: Some(path), ..Args::default() };
        let security = Config::from_args(args).expect("valid").security;
        assert!(security.authorizer && security.allow_everyone_if_no_acl_found);
        assert_eq!(security.super_users, ["User:admin"]);
        let parsed = <Args as clap::Parser>::try_parse_from([
            "spate",
            "--authorizer",
            "acl",
            "--allow-everyone-if-no-acl-found",
        ])
        .expect("a bare flag");
        assert_eq!(parsed.allow_everyone_if_no_acl_found, Some(true));
    }

    #[test]
    fn group_options_default_to_kafkas_and_are_checked() {
        let config = Config::from_args(Args::default()).expect("defaults are valid");
        assert_eq!(config.groups.initial_rebalance_delay_ms, 3_000);
        assert_eq!(config.groups.session_timeout_ms_min, 6_000);
        assert_eq!(config.groups.session_timeout_ms_max, 1_800_000);
        assert_eq!(config.groups.offsets_retention_ms, 7 * 24 * 60 * 60 * 1000);
        assert_eq!(config.groups.consumer_session_timeout_ms, 45_000);
        assert_eq!(config.groups.consumer_heartbeat_interval_ms, 5_000);
        assert_eq!(config.groups.consumer_assignors, ["uniform", "range"]);
        assert_eq!(config.groups.migration_policy, MigrationPolicy::Bidirectional);
        let args =
            Args { group_consumer_migration_policy: Some("Disabled".into()), ..Args::default() };
        let policy = Config::from_args(args).expect("valid").groups.migration_policy;
        assert_eq!(policy, MigrationPolicy::Disabled);
        let args =
            Args { group_consumer_migration_policy: Some("sideways".into()), ..Args::default() };
        assert!(Config::from_args(args).is_err());
        let args =
            Args { group_consumer_assignors: Some("range, uniform".into()), ..Args::default() };
        assert_eq!(Config::from_args(args).expect("valid").groups.consumer_assignors[0], "range");
        let args = Args { group_initial_rebalance_delay_ms: Some(0), ..Args::default() };
        assert_eq!(Config::from_args(args).expect("valid").groups.initial_rebalance_delay_ms, 0);
        for bad in [
            Args { group_initial_rebalance_delay_ms: Some(-1), ..Args::default() },
            Args { group_min_session_timeout_ms: Some(0), ..Args::default() },
            Args { group_max_session_timeout_ms: Some(5_000), ..Args::default() },
            Args { offsets_retention_minutes: Some(0), ..Args::default() },
            Args { group_consumer_heartbeat_interval_ms: Some(0), ..Args::default() },
            Args { group_consumer_session_timeout_ms: Some(5_000), ..Args::default() },
            Args { group_consumer_assignors: Some("sticky".into()), ..Args::default() },
            Args { offsets_topic_segment_bytes: Some(1024), ..Args::default() },
            Args { transaction_state_log_segment_bytes: Some(1024), ..Args::default() },
            Args { transactional_id_expiration_ms: Some(0), ..Args::default() },
        ] {
            let error = Config::from_args(bad).expect_err("invalid");
            assert!(error.starts_with("--"), "{error}");
        }
    }

    #[test]
    fn the_retention_check_interval_defaults_to_5_s_and_takes_kafkas_setting() {
        let config = Config::from_args(Args::default()).expect("valid");
        assert_eq!(config.log_retention_check_interval_ms, 5_000);
        let args = Args { log_retention_check_interval_ms: Some(300_000), ..Args::default() };
        assert_eq!(
            Config::from_args(args).expect("valid").log_retention_check_interval_ms,
            300_000
        );
        let args = Args { log_retention_check_interval_ms: Some(0), ..Args::default() };
        let error = Config::from_args(args).expect_err("invalid");
        assert!(error.starts_with("--log-retention-check-interval-ms"), "{error}");
    }
}
