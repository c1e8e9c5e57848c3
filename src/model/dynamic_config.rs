//! Kafka's dynamic configs of broker and group resources (pure: tables, checks, the
//! IncrementalAlterConfigs operations and what the values mean for topics and groups).
//!
//! Broker resources (`ConfigResource.Type.BROKER`, 4): the name "" is the cluster-wide
//! default (Kafka's DYNAMIC_DEFAULT_BROKER_CONFIG), the name "<node id>" one broker
//! (DYNAMIC_BROKER_CONFIG). Precedence, as in Kafka's `DynamicBrokerConfig`: this broker's
//! dynamic value, then the cluster default, then the static value (command line or TOML
//! file), then the built-in default. Which names may change at runtime follows Kafka's
//! `DynamicBrokerConfig.AllDynamicConfigs` (the log configs of `ServerTopicConfigSynonyms`,
//! the thread pools, the cleaner, listener security, connection limits, remote log and
//! replication quotas); a known non-dynamic name is refused with Kafka's "Cannot update these
//! configs dynamically" (INVALID_REQUEST), an unknown one with INVALID_CONFIG.
//!
//! What takes effect in Spate: the log configs that have a topic counterpart Spate honours
//! (`log.segment.bytes`, `log.roll.ms`, `log.retention.ms`, `log.retention.bytes`,
//! `message.max.bytes`, `log.cleanup.policy`, the cleaner's compaction lags and dirty ratio,
//! `log.cleaner.delete.retention.ms`, `log.flush.interval.messages`, `min.insync.replicas`,
//! `log.message.timestamp.type`) become the defaults of every topic that does not override
//! them (`topic_defaults`). The other dynamic configs are checked by type, stored and
//! described, and have no effect.
//!
//! Group resources (`GROUP`, 32; Kafka 4's KIP-848 group configs): `consumer.session.timeout.ms`
//! and `consumer.heartbeat.interval.ms`, checked as Kafka's `GroupConfig.validate` does and
//! used by the group's coordinator for that group's members (`consumer_timeouts`).

use std::collections::BTreeMap;

use crate::model::settings::GroupConfig;
use crate::model::topic::{list_op, TopicConfig};
use crate::model::{ErrorCode, NodeId};

/// Resource types (Kafka's `ConfigResource.Type`).
pub const RESOURCE_TOPIC: i8 = 2;
pub const RESOURCE_BROKER: i8 = 4;
pub const RESOURCE_GROUP: i8 = 32;

/// Config sources, as DescribeConfigs reports them (Kafka's `ConfigSource`).
pub const SOURCE_TOPIC: i8 = 1;
pub const SOURCE_DYNAMIC_BROKER: i8 = 2;
pub const SOURCE_DYNAMIC_DEFAULT_BROKER: i8 = 3;
pub const SOURCE_STATIC_BROKER: i8 = 4;
pub const SOURCE_DEFAULT: i8 = 5;
pub const SOURCE_GROUP: i8 = 8;

/// The group configs (Kafka's `GroupConfig`).
pub const GROUP_SESSION_TIMEOUT: &str = "consumer.session.timeout.ms";
pub const GROUP_HEARTBEAT_INTERVAL: &str = "consumer.heartbeat.interval.ms";
/// KIP-932 share group configs.
pub const SHARE_SESSION_TIMEOUT: &str = "share.session.timeout.ms";
pub const SHARE_HEARTBEAT_INTERVAL: &str = "share.heartbeat.interval.ms";
pub const SHARE_RECORD_LOCK_DURATION: &str = "share.record.lock.duration.ms";
pub const SHARE_DELIVERY_COUNT_LIMIT: &str = "share.delivery.count.limit";
pub const SHARE_PARTITION_MAX_RECORD_LOCKS: &str = "share.partition.max.record.locks";
pub const SHARE_AUTO_OFFSET_RESET: &str = "share.auto.offset.reset";
pub const SHARE_ISOLATION_LEVEL: &str = "share.isolation.level";
/// KIP-1191 share group configs: the group's dead-letter topic (empty: none), and whether a
/// dead letter carries the record's key and value (else only the context headers).
pub const DLQ_TOPIC_NAME: &str = "errors.deadletterqueue.topic.name";
pub const DLQ_COPY_RECORD: &str = "errors.deadletterqueue.copy.record.enable";
/// Spate's share group config: the redelivery back-off, a comma list of milliseconds
/// (`RedeliveryBackoff`).
pub const SHARE_REDELIVERY_BACKOFF: &str = "spate.share.redelivery.backoff.ms";
pub const GROUP_CONFIG_NAMES: [&str; 12] = [
    GROUP_SESSION_TIMEOUT,
    GROUP_HEARTBEAT_INTERVAL,
    SHARE_SESSION_TIMEOUT,
    SHARE_HEARTBEAT_INTERVAL,
    SHARE_RECORD_LOCK_DURATION,
    SHARE_DELIVERY_COUNT_LIMIT,
    SHARE_PARTITION_MAX_RECORD_LOCKS,
    SHARE_AUTO_OFFSET_RESET,
    DLQ_TOPIC_NAME,
    DLQ_COPY_RECORD,
    SHARE_REDELIVERY_BACKOFF,
    SHARE_ISOLATION_LEVEL,
];

/// Most values `spate.share.redelivery.backoff.ms` takes: a record is delivered at most
/// `share.delivery.count.limit` (10 at most) times.
pub const REDELIVERY_BACKOFF_STEPS_MAX: usize = 10;
/// Longest back-off step (ms): one hour, `share.record.lock.duration.ms`'s bound.
pub const REDELIVERY_BACKOFF_MS_MAX: u32 = 3_600_000;

/// The redelivery back-off of a share group (`spate.share.redelivery.backoff.ms`, e.g.
/// `1000,10000,60000`): a record released (RELEASE, a lock that ended, a member that left)
/// after its n-th delivery is not handed out again for the n-th value (ms), the last value
/// repeating; empty: at once, as Kafka.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RedeliveryBackoff {
    steps: [u32; REDELIVERY_BACKOFF_STEPS_MAX],
    len: u8,
}

impl RedeliveryBackoff {
    /// Parses the config's value: comma-separated milliseconds (0 to one hour), at most
    /// `REDELIVERY_BACKOFF_STEPS_MAX` of them; blank is none.
    pub fn parse(text: &str) -> Result<RedeliveryBackoff, String> {
        let mut out = RedeliveryBackoff::default();
        if text.trim().is_empty() {
            return Ok(out);
        }
        for part in text.split(',').map(str::trim) {
            let value: u32 = match part.parse() {
                Ok(value) if value <= REDELIVERY_BACKOFF_MS_MAX => value,
                _ => {
                    return Err(format!(
                        "Invalid value {text} for configuration {SHARE_REDELIVERY_BACKOFF}: \
                         {part} is not a number of milliseconds from 0 to \
                         {REDELIVERY_BACKOFF_MS_MAX}"
                    ))
                }
            };
            let Some(slot) = out.steps.get_mut(usize::from(out.len)) else {
                return Err(format!(
                    "Invalid value {text} for configuration {SHARE_REDELIVERY_BACKOFF}: \
                     at most {REDELIVERY_BACKOFF_STEPS_MAX} values"
                ));
            };
            *slot = value;
            out.len += 1;
        }
        Ok(out)
    }

    /// How long a record released after `delivery_count` deliveries waits before it may be
    /// handed out again (ms).
    pub fn wait_ms(&self, delivery_count: i16) -> i64 {
        if self.len == 0 {
            return 0;
        }
        let nth = usize::try_from(delivery_count).unwrap_or(0).clamp(1, usize::from(self.len));
        i64::from(self.steps[nth - 1])
    }
}

/// Kafka's bounds of the group configs (`group.consumer.min.session.timeout.ms` and the
/// others), widened to take in the broker's own `--group-consumer-*` values.
const GROUP_SESSION_TIMEOUT_MS_MIN: i32 = 45_000;
const GROUP_SESSION_TIMEOUT_MS_MAX: i32 = 60_000;
const GROUP_HEARTBEAT_INTERVAL_MS_MIN: i32 = 5_000;
const GROUP_HEARTBEAT_INTERVAL_MS_MAX: i32 = 15_000;

/// Every stored dynamic config, by resource (type, name): the whole set of each resource
/// (an empty set is removed). Every shard keeps a copy with its catalog.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DynamicConfigs {
    pub resources: BTreeMap<(i8, String), BTreeMap<String, String>>,
}

impl DynamicConfigs {
    /// The configs set on a resource (empty when none).
    pub fn of(&self, resource_type: i8, name: &str) -> &BTreeMap<String, String> {
        static EMPTY: BTreeMap<String, String> = BTreeMap::new();
        self.resources.get(&(resource_type, name.to_string())).unwrap_or(&EMPTY)
    }

    /// Replaces a resource's configs (none: forgets the resource).
    pub fn set(&mut self, resource_type: i8, name: &str, configs: BTreeMap<String, String>) {
        let key = (resource_type, name.to_string());
        if configs.is_empty() {
            self.resources.remove(&key);
        } else {
            self.resources.insert(key, configs);
        }
    }

    /// The dynamic value of a broker config for `node`, and its source: this broker's, else
    /// the cluster default.
    pub fn broker_value(&self, node: NodeId, name: &str) -> Option<(&str, i8)> {
        let mine = self.of(RESOURCE_BROKER, &node.to_string()).get(name);
        let default = self.of(RESOURCE_BROKER, "").get(name);
        mine.map(|v| (v.as_str(), SOURCE_DYNAMIC_BROKER))
            .or(default.map(|v| (v.as_str(), SOURCE_DYNAMIC_DEFAULT_BROKER)))
    }
}

/// A config's type (Kafka's `ConfigDef.Type`), with DescribeConfigs' code (v3+).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigType {
    Boolean,
    String,
    Int,
    Short,
    Long,
    Double,
    List,
    Class,
    Password,
}

impl ConfigType {
    pub fn code(self) -> i8 {
        match self {
            ConfigType::Boolean => 1,
            ConfigType::String => 2,
            ConfigType::Int => 3,
            ConfigType::Short => 4,
            ConfigType::Long => 5,
            ConfigType::Double => 6,
            ConfigType::List => 7,
            ConfigType::Class => 8,
            ConfigType::Password => 9,
        }
    }

    /// Kafka's `ConfigDef.parseType` check; the error is Kafka's ConfigException text.
    fn check(self, name: &str, value: &str) -> Result<(), String> {
        let trimmed = value.trim();
        let bad = |why: &str| -> Result<(), String> {
            Err(format!("Invalid value {value} for configuration {name}: {why}"))
        };
        match self {
            ConfigType::Boolean => match trimmed.to_ascii_lowercase().as_str() {
                "true" | "false" => Ok(()),
                _ => bad("Expected value to be either true or false"),
            },
            ConfigType::Int if trimmed.parse::<i32>().is_err() => bad("Not a number of type INT"),
            ConfigType::Short if trimmed.parse::<i16>().is_err() => {
                bad("Not a number of type SHORT")
            }
            ConfigType::Long if trimmed.parse::<i64>().is_err() => bad("Not a number of type LONG"),
            ConfigType::Double if trimmed.parse::<f64>().is_err() => {
                bad("Not a number of type DOUBLE")
            }
            ConfigType::Class if trimmed.is_empty() => bad("Class name is empty"),
            _ => Ok(()),
        }
    }
}

/// One dynamic broker config: Kafka's name, type and default, the topic config it is the
/// default of (Kafka's `ServerTopicConfigSynonyms`), and where it may be set.
#[derive(Debug, Clone, Copy)]
pub struct BrokerConfigDef {
    pub name: &'static str,
    pub kind: ConfigType,
    /// Kafka's default as DescribeConfigs writes it (None: no default, a null value).
    pub default: Option<&'static str>,
    /// The topic config whose default this is; None: no topic counterpart.
    pub topic: Option<&'static str>,
    pub scope: Scope,
}

/// Where a dynamic config may be set (Kafka's `PerBrokerConfigs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// On a broker or as the cluster default.
    ClusterWide,
    /// Only on a broker ("Cannot update these configs at default cluster level").
    PerBroker,
    /// Kafka's security configs that change only with a listener prefix.
    ListenerPrefixed,
    /// A thread pool: at least 1, at least half and at most double the current size.
    ThreadPool,
}

const fn def(
    name: &'static str,
    kind: ConfigType,
    default: Option<&'static str>,
    topic: Option<&'static str>,
    scope: Scope,
) -> BrokerConfigDef {
    BrokerConfigDef { name, kind, default, topic, scope }
}

use ConfigType as T;
use Scope::{ClusterWide as C, ListenerPrefixed as L, PerBroker as P, ThreadPool as TP};

const LONG_MAX: &str = "9223372036854775807";
const INT_MAX: &str = "2147483647";

/// Kafka's dynamic broker configs (`DynamicBrokerConfig.AllDynamicConfigs` and the broker
/// quotas of `DynamicConfig.Broker`), as of Kafka 4. The listener, advertised-listener and
/// io-thread configs are left out: Spate cannot change them while it runs (they are
/// refused as non-dynamic ones are).
pub const DYNAMIC_BROKER_CONFIGS: &[BrokerConfigDef] = &[
    // DynamicLogConfig: the topic defaults.
    def("log.segment.bytes", T::Int, Some("1073741824"), Some("segment.bytes"), C),
    def("log.roll.ms", T::Long, None, Some("segment.ms"), C),
    def("log.roll.jitter.ms", T::Long, None, Some("segment.jitter.ms"), C),
    def("log.index.size.max.bytes", T::Int, Some("10485760"), Some("segment.index.bytes"), C),
    def("log.flush.interval.messages", T::Long, Some(LONG_MAX), Some("flush.messages"), C),
    def("log.flush.interval.ms", T::Long, None, Some("flush.ms"), C),
    def("log.retention.bytes", T::Long, Some("-1"), Some("retention.bytes"), C),
    def("log.retention.ms", T::Long, None, Some("retention.ms"), C),
    def("message.max.bytes", T::Int, Some("1048588"), Some("max.message.bytes"), C),
    def("log.index.interval.bytes", T::Int, Some("4096"), Some("index.interval.bytes"), C),
    def(
        "log.cleaner.delete.retention.ms",
        T::Long,
        Some("86400000"),
        Some("delete.retention.ms"),
        C,
    ),
    def("log.cleaner.min.compaction.lag.ms", T::Long, Some("0"), Some("min.compaction.lag.ms"), C),
    def(
        "log.cleaner.max.compaction.lag.ms",
        T::Long,
        Some(LONG_MAX),
        Some("max.compaction.lag.ms"),
        C,
    ),
    def("log.segment.delete.delay.ms", T::Long, Some("60000"), Some("file.delete.delay.ms"), C),
    def(
        "log.cleaner.min.cleanable.ratio",
        T::Double,
        Some("0.5"),
        Some("min.cleanable.dirty.ratio"),
        C,
    ),
    def("log.cleanup.policy", T::List, Some("delete"), Some("cleanup.policy"), C),
    def(
        "unclean.leader.election.enable",
        T::Boolean,
        Some("false"),
        Some("unclean.leader.election.enable"),
        C,
    ),
    def("min.insync.replicas", T::Int, Some("1"), Some("min.insync.replicas"), C),
    def("compression.type", T::String, Some("producer"), Some("compression.type"), C),
    def("compression.gzip.level", T::Int, Some("-1"), None, C),
    def("compression.lz4.level", T::Int, Some("9"), None, C),
    def("compression.zstd.level", T::Int, Some("3"), None, C),
    def("log.preallocate", T::Boolean, Some("false"), Some("preallocate"), C),
    def(
        "log.message.timestamp.type",
        T::String,
        Some("CreateTime"),
        Some("message.timestamp.type"),
        C,
    ),
    def(
        "log.message.timestamp.before.max.ms",
        T::Long,
        Some(LONG_MAX),
        Some("message.timestamp.before.max.ms"),
        C,
    ),
    def(
        "log.message.timestamp.after.max.ms",
        T::Long,
        Some("3600000"),
        Some("message.timestamp.after.max.ms"),
        C,
    ),
    def("log.local.retention.ms", T::Long, Some("-2"), Some("local.retention.ms"), C),
    def("log.local.retention.bytes", T::Long, Some("-2"), Some("local.retention.bytes"), C),
    // LogCleaner.
    def("log.cleaner.threads", T::Int, Some("1"), None, C),
    def("log.cleaner.dedupe.buffer.size", T::Long, Some("134217728"), None, C),
    def("log.cleaner.io.buffer.load.factor", T::Double, Some("0.9"), None, C),
    def("log.cleaner.io.buffer.size", T::Int, Some("524288"), None, C),
    def("log.cleaner.io.max.bytes.per.second", T::Double, Some("1.7976931348623157E308"), None, C),
    def("log.cleaner.backoff.ms", T::Long, Some("15000"), None, C),
    // DynamicThreadPool (num.io.threads is Spate's core count: not changed at runtime).
    def("num.replica.fetchers", T::Int, Some("1"), None, TP),
    def("num.recovery.threads.per.data.dir", T::Int, Some("2"), None, TP),
    def("background.threads", T::Int, Some("10"), None, TP),
    // SocketServer and the cluster-level listener configs.
    def("max.connections.per.ip", T::Int, Some(INT_MAX), None, C),
    def("max.connections.per.ip.overrides", T::String, Some(""), None, C),
    def("max.connections", T::Int, Some(INT_MAX), None, C),
    def("max.connection.creation.rate", T::Int, Some(INT_MAX), None, C),
    def("num.network.threads", T::Int, Some("3"), None, C),
    // Metrics, producer state, remote log, replication quotas.
    def("metric.reporters", T::List, Some(""), None, C),
    def("producer.id.expiration.ms", T::Int, Some("86400000"), None, C),
    def("transaction.partition.verification.enable", T::Boolean, Some("true"), None, C),
    def("remote.log.index.file.cache.total.size.bytes", T::Long, Some("1073741824"), None, C),
    def("remote.fetch.max.wait.ms", T::Int, Some("500"), None, C),
    def("remote.log.manager.copy.max.bytes.per.second", T::Long, Some(LONG_MAX), None, C),
    def("remote.log.manager.fetch.max.bytes.per.second", T::Long, Some(LONG_MAX), None, C),
    def("remote.list.offsets.request.timeout.ms", T::Long, Some("30000"), None, C),
    def("leader.replication.throttled.rate", T::Long, Some(LONG_MAX), None, C),
    def("follower.replication.throttled.rate", T::Long, Some(LONG_MAX), None, C),
    def("replica.alter.log.dirs.io.max.bytes.per.second", T::Long, Some(LONG_MAX), None, C),
    // DynamicListenerConfig: listener security, per broker.
    def("principal.builder.class", T::Class, None, None, P),
    def("ssl.protocol", T::String, Some("TLSv1.3"), None, P),
    def("ssl.provider", T::String, None, None, P),
    def("ssl.cipher.suites", T::List, Some(""), None, P),
    def("ssl.enabled.protocols", T::List, Some("TLSv1.2,TLSv1.3"), None, P),
    def("ssl.keymanager.algorithm", T::String, Some("SunX509"), None, P),
    def("ssl.trustmanager.algorithm", T::String, Some("PKIX"), None, P),
    def("ssl.endpoint.identification.algorithm", T::String, Some("https"), None, P),
    def("ssl.secure.random.implementation", T::String, None, None, P),
    def("ssl.client.auth", T::String, Some("none"), None, P),
    def("ssl.engine.factory.class", T::Class, None, None, P),
    def("ssl.keystore.type", T::String, Some("JKS"), None, L),
    def("ssl.keystore.location", T::String, None, None, L),
    def("ssl.keystore.password", T::Password, None, None, L),
    def("ssl.key.password", T::Password, None, None, L),
    def("ssl.keystore.certificate.chain", T::Password, None, None, L),
    def("ssl.keystore.key", T::Password, None, None, L),
    def("ssl.truststore.type", T::String, Some("JKS"), None, L),
    def("ssl.truststore.location", T::String, None, None, L),
    def("ssl.truststore.password", T::Password, None, None, L),
    def("ssl.truststore.certificates", T::Password, None, None, L),
    def("sasl.mechanism.inter.broker.protocol", T::String, Some("GSSAPI"), None, P),
    def("sasl.jaas.config", T::Password, None, None, P),
    def("sasl.enabled.mechanisms", T::List, Some("GSSAPI"), None, P),
    def("sasl.kerberos.service.name", T::String, None, None, P),
    def("sasl.kerberos.kinit.cmd", T::String, Some("/usr/bin/kinit"), None, P),
    def("sasl.kerberos.ticket.renew.window.factor", T::Double, Some("0.8"), None, P),
    def("sasl.kerberos.ticket.renew.jitter", T::Double, Some("0.05"), None, P),
    def("sasl.kerberos.min.time.before.relogin", T::Long, Some("60000"), None, P),
    def("sasl.kerberos.principal.to.local.rules", T::List, Some("DEFAULT"), None, P),
    def("sasl.login.refresh.window.factor", T::Double, Some("0.8"), None, P),
    def("sasl.login.refresh.window.jitter", T::Double, Some("0.05"), None, P),
    def("sasl.login.refresh.min.period.seconds", T::Short, Some("60"), None, P),
    def("sasl.login.refresh.buffer.seconds", T::Short, Some("300"), None, P),
    // KIP-1191: share groups' dead-letter topics (`DLQ_TOPIC_NAME_PREFIX`, `DLQ_AUTO_CREATE`).
    def(DLQ_TOPIC_NAME_PREFIX, T::String, Some(DLQ_TOPIC_NAME_PREFIX_DEFAULT), None, C),
    def(DLQ_AUTO_CREATE, T::Boolean, Some("false"), None, C),
];

/// KIP-1191's broker configs: the prefix every dead-letter topic's name must have (empty: any
/// name), and whether a dead-letter topic that does not exist is created when a record is to
/// be written to it (with `errors.deadletterqueue.group.enable=true`).
pub const DLQ_TOPIC_NAME_PREFIX: &str = "errors.deadletterqueue.topic.name.prefix";
pub const DLQ_TOPIC_NAME_PREFIX_DEFAULT: &str = "dlq.";
pub const DLQ_AUTO_CREATE: &str = "errors.deadletterqueue.auto.create.topics.enable";

/// The dead-letter rules of the broker (KIP-1191), its dynamic configs over Kafka's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterRules {
    pub topic_name_prefix: String,
    pub auto_create: bool,
}

impl DeadLetterRules {
    pub fn of(configs: &DynamicConfigs, node: NodeId) -> DeadLetterRules {
        let prefix = configs.broker_value(node, DLQ_TOPIC_NAME_PREFIX).map(|(v, _)| v);
        let create = configs.broker_value(node, DLQ_AUTO_CREATE).map(|(v, _)| v);
        DeadLetterRules {
            topic_name_prefix: prefix.unwrap_or(DLQ_TOPIC_NAME_PREFIX_DEFAULT).trim().to_string(),
            auto_create: create.is_some_and(|v| v.trim().eq_ignore_ascii_case("true")),
        }
    }

    /// Why `topic` cannot be a share group's dead-letter topic by its name (Kafka's
    /// `ShareGroupDLQStateManager.validateDlqTopic`): a name of an internal topic (`__`), or
    /// one without the prefix.
    pub fn refuse_name(&self, group: &str, topic: &str) -> Option<String> {
        if topic.starts_with("__") {
            return Some(format!(
                "Configured DLQ topic name in share group: {group} cannot start with __, \
                 topic: {topic}."
            ));
        }
        let prefix = &self.topic_name_prefix;
        if !prefix.is_empty() && !topic.starts_with(prefix.as_str()) {
            return Some(format!(
                "Configured DLQ topic name does not comply with the DLQ topic prefix in share \
                 group: {group}, topic: {topic}, prefix: {prefix}."
            ));
        }
        None
    }
}

/// Kafka broker configs that are not dynamic (a subset of `KafkaConfig`'s names: those a
/// client is likely to try, and every static one Spate describes). Altering one is Kafka's
/// "Cannot update these configs dynamically" (INVALID_REQUEST).
pub const STATIC_BROKER_CONFIG_NAMES: &[&str] = &[
    "advertised.listeners",
    "allow.everyone.if.no.acl.found",
    "authorizer.class.name",
    "auto.create.topics.enable",
    "auto.leader.rebalance.enable",
    "broker.heartbeat.interval.ms",
    "broker.id",
    "broker.rack",
    "broker.session.timeout.ms",
    "connections.max.idle.ms",
    "connections.max.reauth.ms",
    "controller.listener.names",
    "controller.quorum.voters",
    "default.replication.factor",
    "delete.topic.enable",
    "group.consumer.assignors",
    "group.consumer.heartbeat.interval.ms",
    "group.consumer.max.heartbeat.interval.ms",
    "group.consumer.max.size",
    "group.consumer.migration.policy",
    "group.consumer.max.session.timeout.ms",
    "group.consumer.min.heartbeat.interval.ms",
    "group.consumer.min.session.timeout.ms",
    "group.consumer.session.timeout.ms",
    "group.initial.rebalance.delay.ms",
    "group.max.session.timeout.ms",
    "group.max.size",
    "group.min.session.timeout.ms",
    "group.share.max.size",
    "inter.broker.listener.name",
    "leader.imbalance.check.interval.ms",
    "listener.security.protocol.map",
    "listeners",
    "log.cleaner.enable",
    "log.dir",
    "log.dirs",
    "log.flush.scheduler.interval.ms",
    "log.retention.check.interval.ms",
    "log.retention.hours",
    "log.retention.minutes",
    "log.roll.hours",
    "log.roll.jitter.hours",
    "metadata.log.max.record.bytes.between.snapshots",
    "node.id",
    "num.io.threads",
    "num.partitions",
    "offset.metadata.max.bytes",
    "offsets.retention.minutes",
    "offsets.topic.num.partitions",
    "offsets.topic.replication.factor",
    "offsets.topic.segment.bytes",
    "process.roles",
    "replica.lag.time.max.ms",
    "replica.selector.class",
    "security.inter.broker.protocol",
    "socket.receive.buffer.bytes",
    "socket.request.max.bytes",
    "socket.send.buffer.bytes",
    "super.users",
    "transaction.max.timeout.ms",
    "transaction.state.log.segment.bytes",
    "transactional.id.expiration.ms",
];

/// The dynamic broker config `name`, if Kafka has one.
pub fn broker_def(name: &str) -> Option<&'static BrokerConfigDef> {
    DYNAMIC_BROKER_CONFIGS.iter().find(|d| d.name == name)
}

/// The config a listener-prefixed name sets: `ssl.keystore.location` for
/// `listener.name.sasl_ssl.ssl.keystore.location` (Kafka's `ListenerConfigRegex`,
/// `listener\.name\.[^.]*\.(.*)`).
pub fn listener_base(name: &str) -> Option<&str> {
    let rest = name.strip_prefix("listener.name.")?;
    let (_listener, base) = rest.split_once('.')?;
    Some(base)
}

/// The dynamic broker config `name` sets, itself or under a listener prefix.
pub fn broker_def_of(name: &str) -> Option<&'static BrokerConfigDef> {
    broker_def(name).or_else(|| listener_base(name).and_then(broker_def))
}

/// A refused config change: the Kafka error code and message to answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigRefusal {
    pub code: ErrorCode,
    pub message: String,
}

fn refuse(code: ErrorCode, message: String) -> ConfigRefusal {
    ConfigRefusal { code, message }
}

/// Scala's `Set(a, b)`, as Kafka's messages print a set of names.
fn scala_set(names: &[&str]) -> String {
    format!("Set({})", names.join(", "))
}

/// What the checks of a broker config set need besides the set.
pub struct BrokerCheck<'a> {
    /// The set is the cluster default (resource name ""), not one broker's.
    pub cluster_default: bool,
    /// The node's static topic defaults (command line, file, built-in).
    pub static_defaults: &'a TopicConfig,
    /// The largest request Spate reads (`message.max.bytes` must stay below it).
    pub frame_max_bytes: u32,
    /// The dynamic configs as they are, and this node's id: the set replaces
    /// `(BROKER, cluster_default ? "" : node)` in them for the combined checks.
    pub current: &'a DynamicConfigs,
    pub node: NodeId,
}

/// Checks a broker resource's whole new config set, in Kafka's order
/// (`DynamicBrokerConfig.validateConfigs`): names that are not dynamic, security configs
/// without a listener prefix, types, per-broker configs at the cluster level, then the
/// values as the topics' defaults would be (Kafka's `DynamicLogConfig` validation).
///
/// Names Kafka does not know (custom configs, for plugins) are stored as Kafka stores them, as
/// are listener-prefixed ones (`listener.name.<listener>.<config>`, typed as their config);
/// neither has an effect here.
pub fn check_broker_configs(
    configs: &BTreeMap<String, String>,
    check: &BrokerCheck,
) -> Result<(), ConfigRefusal> {
    let invalid = |message: String| refuse(ErrorCode::InvalidRequest, message);
    let fixed: Vec<&str> = configs
        .keys()
        .map(String::as_str)
        .filter(|n| STATIC_BROKER_CONFIG_NAMES.contains(n))
        .collect();
    if !fixed.is_empty() {
        let message = format!("Cannot update these configs dynamically: {}", scala_set(&fixed));
        return Err(invalid(message));
    }
    let prefixed = names_where(configs, Scope::ListenerPrefixed);
    if !prefixed.is_empty() {
        return Err(invalid(format!(
            "These security configs can be dynamically updated only per-listener using the \
             listener prefix: {}",
            scala_set(&prefixed)
        )));
    }
    for (name, value) in configs {
        // Under its own name, as Kafka checks a prefixed config's base.
        if let Some(def) = broker_def_of(name) {
            def.kind.check(def.name, value).map_err(invalid)?;
        }
    }
    if check.cluster_default {
        // Kafka's `perBrokerListenerConfig`: a prefixed security config is one broker's
        // (its key stores), except a JAAS config.
        let per_broker_listener = |name: &&str| {
            listener_base(name).is_some_and(|base| {
                !base.ends_with(".jaas.config")
                    && broker_def(base).is_some_and(|d| matches!(d.scope, Scope::PerBroker | L))
            })
        };
        let mut per_broker = names_where(configs, Scope::PerBroker);
        per_broker.extend(configs.keys().map(String::as_str).filter(per_broker_listener));
        if !per_broker.is_empty() {
            return Err(invalid(format!(
                "Cannot update these configs at default cluster level, broker id must be \
                 specified: {}",
                scala_set(&per_broker)
            )));
        }
    }
    let mut after = check.current.clone();
    let name = if check.cluster_default { String::new() } else { check.node.to_string() };
    after.set(RESOURCE_BROKER, &name, configs.clone());
    for (name, value) in configs {
        let Some(def) = broker_def(name).filter(|d| d.scope == Scope::ThreadPool) else {
            continue;
        };
        let new: i64 = value.trim().parse().unwrap_or(0);
        let old: i64 = match check.current.broker_value(check.node, name) {
            Some((old, _)) => old.trim().parse().unwrap_or(0),
            None => def.default.and_then(|d| d.parse().ok()).unwrap_or(1),
        };
        let failed = format!("Dynamic thread count update validation failed for {name}={value}");
        if new != old && new <= 0 {
            return Err(invalid(format!("{failed}, value should be at least 1")));
        }
        if new != old && new < old / 2 {
            return Err(invalid(format!(
                "{failed}, value should be at least half the current value {old}"
            )));
        }
        if new != old && new > old * 2 {
            return Err(invalid(format!(
                "{failed}, value should not be greater than double the current value {old}"
            )));
        }
    }
    let defaults =
        try_topic_defaults(check.static_defaults, &after, check.node).map_err(invalid)?;
    if defaults.max_message_bytes >= check.frame_max_bytes {
        return Err(invalid(format!(
            "Invalid value {} for configuration message.max.bytes: must be below \
             socket.request.max.bytes ({})",
            defaults.max_message_bytes, check.frame_max_bytes
        )));
    }
    Ok(())
}

/// The names in `configs` of dynamic configs of `scope`.
fn names_where(configs: &BTreeMap<String, String>, scope: Scope) -> Vec<&str> {
    let of_scope = |name: &&str| broker_def(name).is_some_and(|d| d.scope == scope);
    configs.keys().map(String::as_str).filter(of_scope).collect()
}

/// The topic defaults of `node`: its static defaults under the dynamic log configs (the
/// cluster default, then this broker's). A set that does not apply (it was checked when it
/// was stored, so only a changed static default can make it fail) leaves the static
/// defaults.
pub fn topic_defaults(
    static_defaults: &TopicConfig,
    configs: &DynamicConfigs,
    node: NodeId,
) -> TopicConfig {
    try_topic_defaults(static_defaults, configs, node).unwrap_or_else(|_| static_defaults.clone())
}

fn try_topic_defaults(
    static_defaults: &TopicConfig,
    configs: &DynamicConfigs,
    node: NodeId,
) -> Result<TopicConfig, String> {
    let mut overrides = BTreeMap::new();
    let me = node.to_string();
    for name in ["", me.as_str()] {
        for (key, value) in configs.of(RESOURCE_BROKER, name) {
            if let Some(topic) = broker_def(key).and_then(|d| d.topic) {
                overrides.insert(topic.to_string(), value.clone());
            }
        }
    }
    if overrides.is_empty() {
        return Ok(static_defaults.clone());
    }
    static_defaults.with_overrides(&overrides).map_err(|e| {
        // The message names the broker config the client set, not its topic synonym.
        let named = DYNAMIC_BROKER_CONFIGS.iter().find_map(|d| {
            let topic = d.topic?;
            let names = e.contains(&format!("configuration {topic}:"))
                || e.starts_with(&format!("{topic} "));
            names.then_some((topic, d.name))
        });
        match named {
            Some((topic, broker)) => e.replacen(topic, broker, 1),
            None => e,
        }
    })
}

/// The topic config's broker synonym (its default's name): `retention.ms` has
/// `log.retention.ms`.
pub fn broker_synonym(topic_config: &str) -> Option<&'static str> {
    DYNAMIC_BROKER_CONFIGS.iter().find(|d| d.topic == Some(topic_config)).map(|d| d.name)
}

/// One IncrementalAlterConfigs operation (Kafka's `AlterConfigOp.OpType`).
pub use crate::model::topic::ConfigOp;

/// Applies IncrementalAlterConfigs operations to a resource's stored set, as Kafka's
/// `ConfigAdminManager.prepareIncrementalConfigs` (brokers) and
/// `ConfigurationControlManager` (groups) do: APPEND and SUBTRACT only on list configs,
/// starting from the stored value or else the config's default. `kind` gives a known
/// config's type and default (None: unknown name). Names are checked by the caller's
/// check of the result.
pub fn apply_ops(
    stored: &BTreeMap<String, String>,
    ops: &[(String, ConfigOp, Option<String>)],
    kind: impl Fn(&str) -> Option<(ConfigType, Option<&'static str>)>,
) -> Result<BTreeMap<String, String>, ConfigRefusal> {
    let mut out = stored.clone();
    for (name, op, value) in ops {
        if *op != ConfigOp::Delete && value.is_none() {
            let message = format!("Null value not supported for : {name}");
            return Err(refuse(ErrorCode::InvalidRequest, message));
        }
        let value = value.clone().unwrap_or_default();
        match op {
            ConfigOp::Set => {
                out.insert(name.clone(), value);
            }
            ConfigOp::Delete => {
                out.remove(name);
            }
            ConfigOp::Append | ConfigOp::Subtract => {
                let Some((config_type, default)) = kind(name) else {
                    let message = format!("Unknown config name: {name}");
                    return Err(refuse(ErrorCode::InvalidConfig, message));
                };
                if config_type != ConfigType::List {
                    let verb = if *op == ConfigOp::Append { "append" } else { "subtract" };
                    return Err(refuse(
                        ErrorCode::InvalidConfig,
                        format!("Config value {verb} is not allowed for config key: {name}"),
                    ));
                }
                let current = out.get(name).cloned().or(default.map(String::from));
                let changed = list_op(current.as_deref().unwrap_or(""), &value, *op);
                out.insert(name.clone(), changed);
            }
        }
    }
    Ok(out)
}

/// A broker config's type and default, for `apply_ops`.
pub fn broker_kind(name: &str) -> Option<(ConfigType, Option<&'static str>)> {
    broker_def_of(name).map(|d| (d.kind, d.default))
}

/// A group config's type and default, for `apply_ops`.
pub fn group_kind(name: &str) -> Option<(ConfigType, Option<&'static str>)> {
    let strings =
        [SHARE_AUTO_OFFSET_RESET, SHARE_ISOLATION_LEVEL, DLQ_TOPIC_NAME, SHARE_REDELIVERY_BACKOFF];
    if strings.contains(&name) {
        return Some((ConfigType::String, None));
    }
    if name == DLQ_COPY_RECORD {
        return Some((ConfigType::Boolean, None));
    }
    GROUP_CONFIG_NAMES.contains(&name).then_some((ConfigType::Int, None))
}

/// A group's session timeout and heartbeat interval where its configs set them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConsumerTimeouts {
    pub session_timeout_ms: Option<i32>,
    pub heartbeat_interval_ms: Option<i32>,
}

impl ConsumerTimeouts {
    pub fn is_empty(&self) -> bool {
        self.session_timeout_ms.is_none() && self.heartbeat_interval_ms.is_none()
    }

    /// `base` with these values in place of the broker's.
    pub fn applied_to(&self, base: &GroupConfig) -> GroupConfig {
        let mut config = base.clone();
        if let Some(session) = self.session_timeout_ms {
            config.consumer_session_timeout_ms = session;
        }
        if let Some(interval) = self.heartbeat_interval_ms {
            config.consumer_heartbeat_interval_ms = interval;
        }
        config
    }
}

/// The timeouts a group's stored configs set (stored configs were checked).
pub fn consumer_timeouts(configs: &BTreeMap<String, String>) -> ConsumerTimeouts {
    let get = |name: &str| configs.get(name).and_then(|v| v.trim().parse().ok());
    ConsumerTimeouts {
        session_timeout_ms: get(GROUP_SESSION_TIMEOUT),
        heartbeat_interval_ms: get(GROUP_HEARTBEAT_INTERVAL),
    }
}

/// The value of a group config: the group's, else the broker's.
pub fn group_value(configs: &BTreeMap<String, String>, name: &str, base: &GroupConfig) -> String {
    match configs.get(name) {
        Some(value) => value.clone(),
        None if name == GROUP_SESSION_TIMEOUT => base.consumer_session_timeout_ms.to_string(),
        None if name == SHARE_SESSION_TIMEOUT => base.share_session_timeout_ms.to_string(),
        None if name == SHARE_HEARTBEAT_INTERVAL => base.share_heartbeat_interval_ms.to_string(),
        None if name == SHARE_RECORD_LOCK_DURATION => {
            base.share_record_lock_duration_ms.to_string()
        }
        None if name == SHARE_DELIVERY_COUNT_LIMIT => base.share_delivery_count_limit.to_string(),
        None if name == SHARE_PARTITION_MAX_RECORD_LOCKS => {
            base.share_partition_max_record_locks.to_string()
        }
        None if name == SHARE_AUTO_OFFSET_RESET => "latest".to_string(),
        None if name == SHARE_ISOLATION_LEVEL => "read_uncommitted".to_string(),
        None if name == DLQ_TOPIC_NAME => String::new(),
        None if name == DLQ_COPY_RECORD => "false".to_string(),
        None if name == SHARE_REDELIVERY_BACKOFF => String::new(),
        None => base.consumer_heartbeat_interval_ms.to_string(),
    }
}

/// Checks a group's whole new config set as Kafka's `GroupConfig.validate` does (names, INT
/// values of at least 1, the broker's bounds, the session longer than the heartbeat). Every
/// refusal is INVALID_CONFIG with Kafka's message.
pub fn check_group_configs(
    configs: &BTreeMap<String, String>,
    base: &GroupConfig,
) -> Result<(), ConfigRefusal> {
    let invalid = |message: String| refuse(ErrorCode::InvalidConfig, message);
    if let Some(name) = configs.keys().find(|n| !GROUP_CONFIG_NAMES.contains(&n.as_str())) {
        return Err(invalid(format!("Unknown group config name: {name}")));
    }
    check_share_configs(configs, base)?;
    let mut values = [base.consumer_session_timeout_ms, base.consumer_heartbeat_interval_ms];
    positive_ints(configs, &GROUP_CONFIG_NAMES[..2], &mut values)?;
    let [session, interval] = values;
    let session_min = GROUP_SESSION_TIMEOUT_MS_MIN.min(base.consumer_session_timeout_ms);
    let session_max = GROUP_SESSION_TIMEOUT_MS_MAX.max(base.consumer_session_timeout_ms);
    let interval_min = GROUP_HEARTBEAT_INTERVAL_MS_MIN.min(base.consumer_heartbeat_interval_ms);
    let interval_max = GROUP_HEARTBEAT_INTERVAL_MS_MAX.max(base.consumer_heartbeat_interval_ms);
    let bound = |name: &str, relation: &str, broker: &str| -> Result<(), ConfigRefusal> {
        Err(invalid(format!("{name} must be {relation} group.consumer.{broker}")))
    };
    if interval < interval_min {
        return bound(
            GROUP_HEARTBEAT_INTERVAL,
            "greater than or equal to",
            "min.heartbeat.interval.ms",
        );
    }
    if interval > interval_max {
        return bound(
            GROUP_HEARTBEAT_INTERVAL,
            "less than or equal to",
            "max.heartbeat.interval.ms",
        );
    }
    if session < session_min {
        return bound(GROUP_SESSION_TIMEOUT, "greater than or equal to", "min.session.timeout.ms");
    }
    if session > session_max {
        return bound(GROUP_SESSION_TIMEOUT, "less than or equal to", "max.session.timeout.ms");
    }
    if session <= interval {
        return Err(invalid(format!(
            "{GROUP_SESSION_TIMEOUT} must be greater than {GROUP_HEARTBEAT_INTERVAL}"
        )));
    }
    Ok(())
}

/// Reads each of `names` that `configs` sets into the same slot of `values`: an INT of at
/// least 1, INVALID_CONFIG with Kafka's message otherwise.
fn positive_ints(
    configs: &BTreeMap<String, String>,
    names: &[&str],
    values: &mut [i32],
) -> Result<(), ConfigRefusal> {
    let invalid = |message: String| refuse(ErrorCode::InvalidConfig, message);
    for (slot, name) in names.iter().enumerate() {
        let Some(value) = configs.get(*name) else { continue };
        ConfigType::Int.check(name, value).map_err(invalid)?;
        let parsed: i32 = value.trim().parse().unwrap_or(0);
        if parsed < 1 {
            return Err(invalid(format!(
                "Invalid value {value} for configuration {name}: Value must be at least 1"
            )));
        }
        values[slot] = parsed;
    }
    Ok(())
}

/// The share group configs (KIP-932), as Kafka's `GroupConfig.validate` checks them: INT
/// values of at least 1, the record lock duration within Kafka's widest bounds (1 s to
/// 1 h), the delivery count limit 2-10 and the record locks 100-10000 (Kafka's
/// `group.share.min/max.*` defaults), the session longer than the heartbeat, and
/// `share.auto.offset.reset` one of `latest` and `earliest` (Kafka's `by_duration:` is not
/// supported yet), `share.isolation.level` one of `read_committed` and `read_uncommitted`
/// (as Kafka's validator, case-sensitive).
fn check_share_configs(
    configs: &BTreeMap<String, String>,
    base: &GroupConfig,
) -> Result<(), ConfigRefusal> {
    let invalid = |message: String| refuse(ErrorCode::InvalidConfig, message);
    let mut values = [
        base.share_session_timeout_ms,
        base.share_heartbeat_interval_ms,
        base.share_record_lock_duration_ms,
        base.share_delivery_count_limit,
        base.share_partition_max_record_locks,
    ];
    positive_ints(configs, &GROUP_CONFIG_NAMES[2..7], &mut values)?;
    let [session, interval, lock, limit, locks] = values;
    if !(2..=10).contains(&limit) {
        return Err(invalid(format!("{SHARE_DELIVERY_COUNT_LIMIT} must be between 2 and 10")));
    }
    if !(100..=10_000).contains(&locks) {
        return Err(invalid(format!(
            "{SHARE_PARTITION_MAX_RECORD_LOCKS} must be between 100 and 10000"
        )));
    }
    if session <= interval {
        return Err(invalid(format!(
            "{SHARE_SESSION_TIMEOUT} must be greater than {SHARE_HEARTBEAT_INTERVAL}"
        )));
    }
    if !(1_000..=3_600_000).contains(&lock) {
        return Err(invalid(format!(
            "{SHARE_RECORD_LOCK_DURATION} must be between 1000 and 3600000"
        )));
    }
    if let Some(reset) = configs.get(SHARE_AUTO_OFFSET_RESET) {
        let reset = reset.trim();
        if !reset.eq_ignore_ascii_case("latest") && !reset.eq_ignore_ascii_case("earliest") {
            return Err(invalid(format!(
                "Invalid value {reset} for configuration {SHARE_AUTO_OFFSET_RESET}: \
                 String must be one of: latest, earliest"
            )));
        }
    }
    if let Some(level) = configs.get(SHARE_ISOLATION_LEVEL) {
        if level != "read_committed" && level != "read_uncommitted" {
            return Err(invalid(format!(
                "Invalid value {level} for configuration {SHARE_ISOLATION_LEVEL}: \
                 String must be one of: read_committed, read_uncommitted"
            )));
        }
    }
    // KIP-1191: Kafka's `GroupConfig.validateValues` refuses an internal topic's name; the
    // prefix and the topic itself are checked when a dead letter is written, as in Kafka.
    if let Some(topic) = configs.get(DLQ_TOPIC_NAME) {
        if topic.starts_with("__") {
            return Err(invalid(format!(
                "{DLQ_TOPIC_NAME}: DLQ topic name must not start with '__'"
            )));
        }
    }
    if let Some(copy) = configs.get(DLQ_COPY_RECORD) {
        ConfigType::Boolean.check(DLQ_COPY_RECORD, copy).map_err(invalid)?;
    }
    if let Some(backoff) = configs.get(SHARE_REDELIVERY_BACKOFF) {
        RedeliveryBackoff::parse(backoff).map_err(invalid)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_redelivery_backoff_parses_a_list_whose_last_value_repeats() {
        let backoff = RedeliveryBackoff::parse(" 1000, 10000,60000 ").expect("valid");
        let waits: Vec<i64> = (0..6).map(|n| backoff.wait_ms(n)).collect();
        assert_eq!(waits, [1000, 1000, 10000, 60000, 60000, 60000]);
        assert_eq!(RedeliveryBackoff::parse("").expect("none").wait_ms(3), 0);
        assert_eq!(RedeliveryBackoff::parse("0").expect("zero").wait_ms(1), 0);
        let ten = ["5"; REDELIVERY_BACKOFF_STEPS_MAX].join(",");
        assert!(RedeliveryBackoff::parse(&ten).is_ok());
        for bad in ["soon", "1000,-5", "1,,2", "3600001", &format!("{ten},5")] {
            assert!(RedeliveryBackoff::parse(bad).is_err(), "{bad}");
        }
        let base = GroupConfig::default();
        let refused = check_group_configs(&set(&[(SHARE_REDELIVERY_BACKOFF, "x")]), &base);
        assert!(refused.is_err());
        assert!(check_group_configs(&set(&[(SHARE_REDELIVERY_BACKOFF, "1,2")]), &base).is_ok());
    }

    fn set(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn check<'a>(
        defaults: &'a TopicConfig,
        current: &'a DynamicConfigs,
        cluster_default: bool,
    ) -> BrokerCheck<'a> {
        BrokerCheck {
            cluster_default,
            static_defaults: defaults,
            frame_max_bytes: 100 << 20,
            current,
            node: NodeId(1),
        }
    }

    #[test]
    fn broker_configs_are_checked_in_kafkas_order_with_kafkas_answers() {
        let defaults = TopicConfig::spate_defaults();
        let none = DynamicConfigs::default();
        let ok = |pairs: &[(&str, &str)], cluster| {
            check_broker_configs(&set(pairs), &check(&defaults, &none, cluster))
        };
        assert_eq!(
            ok(&[("background.threads", "9"), ("log.cleanup.policy", "delete")], false),
            Ok(())
        );
        assert_eq!(ok(&[("sasl.kerberos.min.time.before.relogin", "58000")], false), Ok(()));
        let refused = ok(&[("log.dirs", "/x"), ("node.id", "3")], false).unwrap_err();
        assert_eq!(refused.code, ErrorCode::InvalidRequest);
        assert_eq!(
            refused.message,
            "Cannot update these configs dynamically: Set(log.dirs, node.id)"
        );
        // Custom configs are stored, at either level, as Kafka stores them.
        assert_eq!(ok(&[("no.such.thing", "1")], false), Ok(()));
        assert_eq!(ok(&[("no.such.thing", "1")], true), Ok(()));
        // Listener-prefixed ones are typed as their config and belong to one broker, except
        // a JAAS config.
        let prefixed = "listener.name.sasl_ssl.ssl.keystore.location";
        assert_eq!(ok(&[(prefixed, "/k")], false), Ok(()));
        let at_default = ok(&[(prefixed, "/k")], true).unwrap_err();
        assert!(at_default.message.starts_with("Cannot update these configs at default"));
        assert!(at_default.message.contains(prefixed), "{at_default:?}");
        let jaas = "listener.name.sasl_ssl.sasl.jaas.config";
        assert_eq!(ok(&[(jaas, "x required;")], true), Ok(()));
        let relogin = "listener.name.sasl_ssl.sasl.kerberos.min.time.before.relogin";
        let typed = ok(&[(relogin, "soon")], false).unwrap_err();
        assert!(typed.message.contains("Not a number of type LONG"), "{typed:?}");
        let typed = ok(&[("background.threads", "many")], false).unwrap_err();
        assert_eq!(typed.code, ErrorCode::InvalidRequest);
        assert_eq!(
            typed.message,
            "Invalid value many for configuration background.threads: Not a number of type INT"
        );
        let per_broker = ok(&[("sasl.kerberos.min.time.before.relogin", "58000")], true);
        assert!(per_broker
            .unwrap_err()
            .message
            .starts_with("Cannot update these configs at default"));
        let halved = ok(&[("background.threads", "4")], false).unwrap_err();
        assert!(halved.message.contains("at least half the current value 10"), "{halved:?}");
        assert!(ok(&[("ssl.keystore.location", "/k")], false).is_err());
        let bad_policy = ok(&[("log.cleanup.policy", "squash")], true).unwrap_err();
        assert_eq!(bad_policy.code, ErrorCode::InvalidRequest);
        assert!(bad_policy.message.contains("log.cleanup.policy"), "{bad_policy:?}");
        assert!(ok(&[("message.max.bytes", (200 << 20).to_string().as_str())], true).is_err());
    }

    #[test]
    fn dynamic_log_configs_are_topic_defaults_per_broker_over_cluster_default() {
        let defaults = TopicConfig::spate_defaults();
        let mut configs = DynamicConfigs::default();
        configs.set(
            RESOURCE_BROKER,
            "",
            set(&[("log.retention.ms", "1000"), ("log.cleanup.policy", "compact")]),
        );
        configs.set(RESOURCE_BROKER, "1", set(&[("log.retention.ms", "2000")]));
        configs.set(RESOURCE_BROKER, "2", set(&[("log.retention.ms", "3000")]));
        let applied = topic_defaults(&defaults, &configs, NodeId(1));
        assert_eq!(applied.retention_ms, 2000);
        assert!(applied.cleanup.compact && !applied.cleanup.delete);
        assert_eq!(topic_defaults(&defaults, &configs, NodeId(3)).retention_ms, 1000);
        assert_eq!(
            configs.broker_value(NodeId(1), "log.retention.ms"),
            Some(("2000", SOURCE_DYNAMIC_BROKER))
        );
        assert_eq!(
            configs.broker_value(NodeId(3), "log.retention.ms"),
            Some(("1000", SOURCE_DYNAMIC_DEFAULT_BROKER))
        );
        configs.set(RESOURCE_BROKER, "", BTreeMap::new());
        assert_eq!(configs.resources.len(), 2);
        assert_eq!(broker_synonym("retention.ms"), Some("log.retention.ms"));
        assert_eq!(broker_synonym("max.message.bytes"), Some("message.max.bytes"));
    }

    #[test]
    fn incremental_ops_on_lists_start_from_the_default() {
        let none = BTreeMap::new();
        let op = |name: &str, op, value: Option<&str>| {
            vec![(name.to_string(), op, value.map(String::from))]
        };
        let appended = apply_ops(
            &none,
            &op("log.cleanup.policy", ConfigOp::Append, Some("compact")),
            broker_kind,
        )
        .unwrap();
        assert_eq!(appended.get("log.cleanup.policy").map(String::as_str), Some("delete,compact"));
        let subtracted = apply_ops(
            &appended,
            &op("log.cleanup.policy", ConfigOp::Subtract, Some("compact")),
            broker_kind,
        )
        .unwrap();
        assert_eq!(subtracted.get("log.cleanup.policy").map(String::as_str), Some("delete"));
        let set =
            apply_ops(&none, &op("background.threads", ConfigOp::Set, Some("9")), broker_kind)
                .unwrap();
        let deleted =
            apply_ops(&set, &op("background.threads", ConfigOp::Delete, Some("")), broker_kind)
                .unwrap();
        assert!(deleted.is_empty());
        let not_list =
            apply_ops(&none, &op("background.threads", ConfigOp::Append, Some("1")), broker_kind);
        assert_eq!(not_list.unwrap_err().code, ErrorCode::InvalidConfig);
        let null = apply_ops(&none, &op("background.threads", ConfigOp::Set, None), broker_kind);
        assert_eq!(null.unwrap_err().code, ErrorCode::InvalidRequest);
    }

    #[test]
    fn group_configs_follow_kafkas_group_config_validate() {
        let base = GroupConfig::default();
        let ok = |pairs: &[(&str, &str)]| check_group_configs(&set(pairs), &base);
        assert_eq!(ok(&[(GROUP_SESSION_TIMEOUT, "50000")]), Ok(()));
        assert_eq!(ok(&[(GROUP_HEARTBEAT_INTERVAL, "6000")]), Ok(()));
        assert_eq!(ok(&[(SHARE_AUTO_OFFSET_RESET, "earliest")]), Ok(()));
        assert_eq!(ok(&[(SHARE_ISOLATION_LEVEL, "read_committed")]), Ok(()));
        assert_eq!(ok(&[(SHARE_ISOLATION_LEVEL, "read_uncommitted")]), Ok(()));
        assert_eq!(ok(&[(SHARE_RECORD_LOCK_DURATION, "2000")]), Ok(()));
        assert_eq!(ok(&[(SHARE_DELIVERY_COUNT_LIMIT, "2")]), Ok(()));
        assert_eq!(ok(&[(DLQ_TOPIC_NAME, "dlq.orders"), (DLQ_COPY_RECORD, "TRUE")]), Ok(()));
        for bad in [
            [(GROUP_SESSION_TIMEOUT, "1000")],
            [(GROUP_SESSION_TIMEOUT, "70000")],
            [(GROUP_HEARTBEAT_INTERVAL, "100")],
            [(GROUP_HEARTBEAT_INTERVAL, "abc")],
            [("share.session.timeout.ms", "1000")],
            [(SHARE_AUTO_OFFSET_RESET, "by_duration:PT1H")],
            [(SHARE_ISOLATION_LEVEL, "READ_COMMITTED")],
            [(SHARE_ISOLATION_LEVEL, "serializable")],
            [(SHARE_RECORD_LOCK_DURATION, "10")],
            [(SHARE_DELIVERY_COUNT_LIMIT, "11")],
            [("share.unknown", "3")],
            [(DLQ_TOPIC_NAME, "__consumer_offsets")],
            [(DLQ_COPY_RECORD, "yes")],
        ] {
            assert_eq!(ok(&bad).unwrap_err().code, ErrorCode::InvalidConfig, "{bad:?}");
        }
        let timeouts = consumer_timeouts(&set(&[(GROUP_HEARTBEAT_INTERVAL, "6000")]));
        assert_eq!(timeouts.heartbeat_interval_ms, Some(6000));
        assert_eq!(timeouts.applied_to(&base).consumer_heartbeat_interval_ms, 6000);
        assert_eq!(timeouts.applied_to(&base).consumer_session_timeout_ms, 45_000);
    }
}
