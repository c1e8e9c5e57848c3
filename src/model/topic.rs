//! Topic names and topic-level configs (the subset of Kafka's that Spate honours).

use std::collections::BTreeMap;

use crate::constants;

/// When a produce is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// After the O_DIRECT write completed: the bytes are on the device's queue and survive a
    /// process crash, not necessarily a power loss.
    Write,
    /// After fdatasync; every produce waiting on the same flush shares it (group commit).
    Fsync,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimestampType {
    CreateTime,
    LogAppendTime,
}

/// The topic configs Spate honours. Names mirror Kafka's (`segment.bytes` is `segment_bytes`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicConfig {
    pub segment_bytes: u64,
    pub segment_ms: i64,
    pub retention_ms: i64,
    pub retention_bytes: i64,
    pub max_message_bytes: u32,
    pub timestamp_type: TimestampType,
    pub durability: Durability,
    /// acks=all writes to a replicated partition need this many in-sync replicas.
    pub min_insync_replicas: i32,
    /// `cleanup.policy` and the compaction configs.
    pub cleanup: Cleanup,
    /// `spate.delivery.delay.ms` (`model::delay`): -1 off (batches are never opened), 0
    /// records with a delivery header are delayed, above 0 also every record without one.
    pub delivery_delay_ms: i64,
    /// `errors.deadletterqueue.group.enable` (KIP-1191): whether share groups may write their
    /// dead letters to this topic.
    pub dead_letter_group_enable: bool,
}

/// KIP-1191's topic config: a topic takes share groups' dead letters only with it `true`.
pub const DLQ_GROUP_ENABLE: &str = "errors.deadletterqueue.group.enable";

/// `cleanup.policy` (a list of `delete` and `compact`) and Kafka's compaction configs, with
/// Kafka's defaults. With `delete` in the policy, retention deletes old segments; with
/// `compact`, the shard's cleaner keeps the latest record of each key (`storage::compaction`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cleanup {
    pub delete: bool,
    pub compact: bool,
    /// `min.cleanable.dirty.ratio`: the cleaner takes a log once the dirty part (written
    /// since its last clean) is at least this share of the cleanable bytes.
    pub min_cleanable_dirty_ratio: DirtyRatio,
    /// `min.compaction.lag.ms`: records younger than this are not compacted.
    pub min_compaction_lag_ms: i64,
    /// `max.compaction.lag.ms`: a log with a dirty record older than this is cleaned
    /// whatever its dirty ratio.
    pub max_compaction_lag_ms: i64,
    /// `delete.retention.ms`: a tombstone (and a marker of a transaction with no records
    /// left) stays this long after the clean that first kept it.
    pub delete_retention_ms: i64,
}

impl Default for Cleanup {
    fn default() -> Cleanup {
        Cleanup {
            delete: true,
            compact: false,
            min_cleanable_dirty_ratio: DirtyRatio::from_f64(0.5),
            min_compaction_lag_ms: 0,
            max_compaction_lag_ms: i64::MAX,
            delete_retention_ms: 24 * 60 * 60 * 1000,
        }
    }
}

impl Cleanup {
    /// The policy as Kafka writes it (`delete`, `compact`, `compact,delete`, or empty).
    pub fn policy(&self) -> String {
        match (self.compact, self.delete) {
            (true, true) => "compact,delete".into(),
            (true, false) => "compact".into(),
            (false, true) => "delete".into(),
            (false, false) => String::new(),
        }
    }
}

/// A ratio between 0 and 1 kept as its f64 bits, so that configs compare as equal values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirtyRatio(u64);

impl DirtyRatio {
    pub fn from_f64(value: f64) -> DirtyRatio {
        DirtyRatio(value.to_bits())
    }

    pub fn get(self) -> f64 {
        f64::from_bits(self.0)
    }
}

/// A double as Java's `Double.toString` writes the usual values (`0.5`, `1.0`).
fn java_double(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e7 {
        format!("{value:.1}")
    } else {
        format!("{value}")
    }
}

/// The config names Spate accepts in CreateTopics and reports in DescribeConfigs.
pub const TOPIC_CONFIG_NAMES: [&str; 15] = [
    "cleanup.policy",
    "min.cleanable.dirty.ratio",
    "min.compaction.lag.ms",
    "max.compaction.lag.ms",
    "delete.retention.ms",
    "segment.bytes",
    "segment.ms",
    "retention.ms",
    "retention.bytes",
    "max.message.bytes",
    "message.timestamp.type",
    "flush.messages",
    "min.insync.replicas",
    crate::model::delay::DELIVERY_DELAY_CONFIG,
    DLQ_GROUP_ENABLE,
];

/// Kafka topic configs that Spate accepts, stores and reports but does not act on yet
/// (clients and tools set them at creation, e.g. librdkafka's admin tests set
/// compression.type). Any other name is INVALID_CONFIG, as in Kafka.
pub const PASSIVE_TOPIC_CONFIG_NAMES: [&str; 17] = [
    "compression.type",
    "file.delete.delay.ms",
    "flush.ms",
    "follower.replication.throttled.replicas",
    "index.interval.bytes",
    "leader.replication.throttled.replicas",
    "local.retention.bytes",
    "local.retention.ms",
    "message.timestamp.after.max.ms",
    "message.timestamp.before.max.ms",
    "preallocate",
    "remote.storage.enable",
    "segment.index.bytes",
    "segment.jitter.ms",
    "unclean.leader.election.enable",
    "remote.log.copy.disable",
    "remote.log.delete.on.disable",
];

impl TopicConfig {
    /// The built-in topic defaults, before the command line, the file and the dynamic
    /// broker configs (what DescribeConfigs reports as DEFAULT_CONFIG).
    pub fn spate_defaults() -> TopicConfig {
        TopicConfig {
            segment_bytes: constants::SEGMENT_SIZE_BYTES_DEFAULT,
            segment_ms: constants::SEGMENT_MS_DEFAULT,
            retention_ms: constants::RETENTION_MS_DEFAULT,
            retention_bytes: constants::RETENTION_BYTES_DEFAULT,
            max_message_bytes: constants::MESSAGE_SIZE_BYTES_MAX_DEFAULT,
            timestamp_type: TimestampType::CreateTime,
            durability: Durability::Write,
            min_insync_replicas: constants::MIN_INSYNC_REPLICAS_DEFAULT,
            cleanup: Cleanup::default(),
            delivery_delay_ms: -1,
            dead_letter_group_enable: false,
        }
    }

    /// Applies Kafka-named overrides on top of `self`. The error names the bad entry.
    pub fn with_overrides(&self, overrides: &BTreeMap<String, String>) -> Result<Self, String> {
        let mut config = self.clone();
        for (name, value) in overrides {
            config.set(name, value)?;
        }
        config.validate()?;
        Ok(config)
    }

    fn set(&mut self, name: &str, value: &str) -> Result<(), String> {
        let bad = || format!("invalid value {value:?} for config {name}");
        // Kafka's ConfigException text: "Invalid value <v> for configuration <name>: <why>".
        let kafka = |why: &str| format!("Invalid value {value} for configuration {name}: {why}");
        let long_at_least = |min: i64| -> Result<i64, String> {
            let parsed: i64 =
                value.trim().parse().map_err(|_| kafka("Not a number of type LONG"))?;
            if parsed < min {
                return Err(kafka(&format!("Value must be at least {min}")));
            }
            Ok(parsed)
        };
        match name {
            "cleanup.policy" => {
                let (mut delete, mut compact) = (false, false);
                for item in split_list(value) {
                    match item.as_str() {
                        "delete" => delete = true,
                        "compact" => compact = true,
                        _ => return Err(kafka("String must be one of: compact, delete")),
                    }
                }
                self.cleanup.delete = delete;
                self.cleanup.compact = compact;
            }
            "min.cleanable.dirty.ratio" => {
                let parsed: f64 =
                    value.trim().parse().map_err(|_| kafka("Not a number of type DOUBLE"))?;
                if parsed.is_nan() || parsed < 0.0 {
                    return Err(kafka("Value must be at least 0"));
                }
                if parsed > 1.0 {
                    return Err(kafka("Value must be no more than 1"));
                }
                self.cleanup.min_cleanable_dirty_ratio = DirtyRatio::from_f64(parsed);
            }
            "min.compaction.lag.ms" => self.cleanup.min_compaction_lag_ms = long_at_least(0)?,
            "max.compaction.lag.ms" => self.cleanup.max_compaction_lag_ms = long_at_least(1)?,
            "delete.retention.ms" => self.cleanup.delete_retention_ms = long_at_least(0)?,
            "segment.bytes" => self.segment_bytes = value.parse().map_err(|_| bad())?,
            "segment.ms" => self.segment_ms = value.parse().map_err(|_| bad())?,
            "retention.ms" => self.retention_ms = value.parse().map_err(|_| bad())?,
            "retention.bytes" => self.retention_bytes = value.parse().map_err(|_| bad())?,
            "max.message.bytes" => self.max_message_bytes = value.parse().map_err(|_| bad())?,
            "message.timestamp.type" => {
                self.timestamp_type = match value {
                    "CreateTime" => TimestampType::CreateTime,
                    "LogAppendTime" => TimestampType::LogAppendTime,
                    _ => return Err(bad()),
                }
            }
            "flush.messages" => {
                let messages: i64 = value.parse().map_err(|_| bad())?;
                if messages < 1 {
                    return Err(bad());
                }
                self.durability = if messages == 1 { Durability::Fsync } else { Durability::Write };
            }
            "min.insync.replicas" => {
                self.min_insync_replicas = value.parse().map_err(|_| bad())?;
            }
            crate::model::delay::DELIVERY_DELAY_CONFIG => {
                let parsed = long_at_least(-1)?;
                if parsed > constants::DELIVERY_DELAY_MS_MAX {
                    return Err(kafka(&format!(
                        "Value must be no more than {}",
                        constants::DELIVERY_DELAY_MS_MAX
                    )));
                }
                self.delivery_delay_ms = parsed;
            }
            DLQ_GROUP_ENABLE => {
                self.dead_letter_group_enable = match value.trim().to_ascii_lowercase().as_str() {
                    "true" => true,
                    "false" => false,
                    _ => return Err(kafka("Expected value to be either true or false")),
                }
            }
            _ if PASSIVE_TOPIC_CONFIG_NAMES.contains(&name) => {}
            _ => return Err(format!("unknown topic config {name}")),
        }
        Ok(())
    }

    /// Checks the relations between values. The error is a phrase naming the bad value.
    pub fn validate(&self) -> Result<(), String> {
        if self.segment_bytes < constants::SEGMENT_SIZE_BYTES_MIN {
            return Err(format!(
                "segment.bytes {} is below the minimum {}",
                self.segment_bytes,
                constants::SEGMENT_SIZE_BYTES_MIN
            ));
        }
        if self.segment_bytes > u64::from(u32::MAX) {
            return Err(format!("segment.bytes {} is above 4 GiB", self.segment_bytes));
        }
        if self.segment_ms < 1 {
            return Err(format!("segment.ms {} must be positive", self.segment_ms));
        }
        if self.retention_ms < -1 {
            return Err(format!("retention.ms {} must be -1 or more", self.retention_ms));
        }
        if self.min_insync_replicas < 1 {
            return Err(format!(
                "min.insync.replicas {} must be 1 or more",
                self.min_insync_replicas
            ));
        }
        if self.retention_bytes < -1 {
            return Err(format!("retention.bytes {} must be -1 or more", self.retention_bytes));
        }
        let (min_lag, max_lag) =
            (self.cleanup.min_compaction_lag_ms, self.cleanup.max_compaction_lag_ms);
        if min_lag > max_lag {
            // Kafka's LogConfig.validateValues, word for word.
            return Err(format!(
                "conflict topic config setting min.compaction.lag.ms ({min_lag}) > \
                 max.compaction.lag.ms ({max_lag})"
            ));
        }
        Ok(())
    }

    /// The value of a named config, as DescribeConfigs reports it.
    pub fn value_of(&self, name: &str) -> Option<String> {
        Some(match name {
            "cleanup.policy" => self.cleanup.policy(),
            "min.cleanable.dirty.ratio" => {
                java_double(self.cleanup.min_cleanable_dirty_ratio.get())
            }
            "min.compaction.lag.ms" => self.cleanup.min_compaction_lag_ms.to_string(),
            "max.compaction.lag.ms" => self.cleanup.max_compaction_lag_ms.to_string(),
            "delete.retention.ms" => self.cleanup.delete_retention_ms.to_string(),
            "segment.bytes" => self.segment_bytes.to_string(),
            "segment.ms" => self.segment_ms.to_string(),
            "retention.ms" => self.retention_ms.to_string(),
            "retention.bytes" => self.retention_bytes.to_string(),
            "max.message.bytes" => self.max_message_bytes.to_string(),
            "message.timestamp.type" => match self.timestamp_type {
                TimestampType::CreateTime => "CreateTime".into(),
                TimestampType::LogAppendTime => "LogAppendTime".into(),
            },
            "flush.messages" => match self.durability {
                Durability::Fsync => "1".into(),
                Durability::Write => i64::MAX.to_string(),
            },
            "min.insync.replicas" => self.min_insync_replicas.to_string(),
            crate::model::delay::DELIVERY_DELAY_CONFIG => self.delivery_delay_ms.to_string(),
            DLQ_GROUP_ENABLE => self.dead_letter_group_enable.to_string(),
            _ => return None,
        })
    }
}

/// One change of IncrementalAlterConfigs (Kafka's `AlterConfigOp.OpType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigOp {
    Set,
    Delete,
    Append,
    Subtract,
}

impl ConfigOp {
    pub fn from_code(code: i8) -> Option<ConfigOp> {
        Some(match code {
            0 => ConfigOp::Set,
            1 => ConfigOp::Delete,
            2 => ConfigOp::Append,
            3 => ConfigOp::Subtract,
            _ => return None,
        })
    }
}

/// Topic configs whose values are comma-separated lists, the only ones APPEND and SUBTRACT
/// apply to (as in Kafka).
const LIST_TOPIC_CONFIG_NAMES: [&str; 3] = [
    "cleanup.policy",
    "follower.replication.throttled.replicas",
    "leader.replication.throttled.replicas",
];

/// Applies IncrementalAlterConfigs operations to a topic's overrides (the configs set for it
/// explicitly). `effective` gives a config's current value, the starting point of APPEND and
/// SUBTRACT when the topic has no override for it. Validating the values is the caller's
/// next step (`TopicConfig::with_overrides`); this checks names and operations. The error is
/// a phrase naming the bad entry.
pub fn apply_config_ops(
    overrides: &BTreeMap<String, String>,
    ops: &[(String, ConfigOp, Option<String>)],
    effective: impl Fn(&str) -> Option<String>,
) -> Result<BTreeMap<String, String>, String> {
    let mut out = overrides.clone();
    let mut seen = std::collections::BTreeSet::new();
    for (name, op, value) in ops {
        if !seen.insert(name.as_str()) {
            return Err(format!("config {name} appears more than once"));
        }
        if !TOPIC_CONFIG_NAMES.contains(&name.as_str())
            && !PASSIVE_TOPIC_CONFIG_NAMES.contains(&name.as_str())
        {
            return Err(format!("unknown topic config {name}"));
        }
        let is_list = LIST_TOPIC_CONFIG_NAMES.contains(&name.as_str());
        match op {
            ConfigOp::Set => {
                let Some(value) = value else {
                    return Err(format!("config {name} needs a value to be set"));
                };
                out.insert(name.clone(), value.clone());
            }
            ConfigOp::Delete => {
                out.remove(name);
            }
            ConfigOp::Append | ConfigOp::Subtract if !is_list => {
                return Err(format!("config {name} is not a list; APPEND and SUBTRACT need one"));
            }
            ConfigOp::Append | ConfigOp::Subtract => {
                let current =
                    out.get(name).cloned().or_else(|| effective(name)).unwrap_or_default();
                let changed = list_op(&current, value.as_deref().unwrap_or(""), *op);
                out.insert(name.clone(), changed);
            }
        }
    }
    Ok(out)
}

/// A list config after an APPEND (items of `changes` not in it yet, at the end) or a SUBTRACT
/// (every item of `changes` removed) of `changes` to `current`; both comma-separated.
pub fn list_op(current: &str, changes: &str, op: ConfigOp) -> String {
    let mut items = split_list(current);
    let changes = split_list(changes);
    if op == ConfigOp::Append {
        for item in changes {
            if !items.contains(&item) {
                items.push(item);
            }
        }
    } else {
        items.retain(|item| !changes.contains(item));
    }
    items.join(",")
}

fn split_list(value: &str) -> Vec<String> {
    value.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect()
}

/// Kafka's topic name rules: 1 to 249 characters from `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn validate_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("topic name is empty".into());
    }
    if name == "." || name == ".." {
        return Err(format!("topic name {name:?} is not allowed"));
    }
    if name.len() > constants::TOPIC_NAME_LENGTH_MAX {
        return Err(format!(
            "topic name is {} characters; the maximum is {}",
            name.len(),
            constants::TOPIC_NAME_LENGTH_MAX
        ));
    }
    if let Some(bad) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || "._-".contains(*c))) {
        return Err(format!("topic name {name:?} has the illegal character {bad:?}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> TopicConfig {
        TopicConfig {
            segment_bytes: constants::SEGMENT_SIZE_BYTES_DEFAULT,
            segment_ms: constants::SEGMENT_MS_DEFAULT,
            retention_ms: constants::RETENTION_MS_DEFAULT,
            retention_bytes: -1,
            max_message_bytes: constants::MESSAGE_SIZE_BYTES_MAX_DEFAULT,
            timestamp_type: TimestampType::CreateTime,
            durability: Durability::Write,
            min_insync_replicas: 1,
            cleanup: Cleanup::default(),
            delivery_delay_ms: -1,
            dead_letter_group_enable: false,
        }
    }

    #[test]
    fn overrides_apply_and_round_trip_through_value_of() {
        let mut overrides = BTreeMap::new();
        overrides.insert("retention.ms".to_string(), "1000".to_string());
        overrides.insert("message.timestamp.type".to_string(), "LogAppendTime".to_string());
        overrides.insert("flush.messages".to_string(), "1".to_string());
        let config = defaults().with_overrides(&overrides).expect("valid");
        for (name, value) in &overrides {
            assert_eq!(config.value_of(name).as_deref(), Some(value.as_str()));
        }
        assert_eq!(config.durability, Durability::Fsync);
    }

    #[test]
    fn bad_overrides_are_refused() {
        for (name, value) in [
            ("segment.bytes", "12"),
            ("retention.ms", "-5"),
            ("cleanup.policy", "compact,squash"),
            ("min.cleanable.dirty.ratio", "1.5"),
            ("min.cleanable.dirty.ratio", "-0.1"),
            ("min.cleanable.dirty.ratio", "half"),
            ("min.compaction.lag.ms", "-1"),
            ("max.compaction.lag.ms", "0"),
            ("delete.retention.ms", "-1"),
            ("no.such.config", "1"),
            ("segment.bytes", "lots"),
        ] {
            let overrides = BTreeMap::from([(name.to_string(), value.to_string())]);
            assert!(defaults().with_overrides(&overrides).is_err(), "{name}={value}");
        }
    }

    #[test]
    fn cleanup_policy_and_compaction_configs_parse_as_kafka_does() {
        for (policy, delete, compact) in [
            ("delete", true, false),
            ("compact", false, true),
            ("compact,delete", true, true),
            ("delete, compact", true, true),
        ] {
            let overrides = BTreeMap::from([("cleanup.policy".to_string(), policy.to_string())]);
            let config = defaults().with_overrides(&overrides).expect("valid");
            assert_eq!((config.cleanup.delete, config.cleanup.compact), (delete, compact));
        }
        let overrides = BTreeMap::from([
            ("cleanup.policy".to_string(), "compact".to_string()),
            ("min.cleanable.dirty.ratio".to_string(), "0.01".to_string()),
            ("min.compaction.lag.ms".to_string(), "100".to_string()),
            ("max.compaction.lag.ms".to_string(), "1000".to_string()),
            ("delete.retention.ms".to_string(), "0".to_string()),
        ]);
        let config = defaults().with_overrides(&overrides).expect("valid");
        for (name, value) in &overrides {
            assert_eq!(config.value_of(name).as_deref(), Some(value.as_str()), "{name}");
        }
        assert_eq!(defaults().value_of("min.cleanable.dirty.ratio").as_deref(), Some("0.5"));
        let one = BTreeMap::from([("min.cleanable.dirty.ratio".to_string(), "1".to_string())]);
        let config = defaults().with_overrides(&one).expect("valid");
        assert_eq!(config.value_of("min.cleanable.dirty.ratio").as_deref(), Some("1.0"));
        let bad = BTreeMap::from([("cleanup.policy".to_string(), "compact,squash".to_string())]);
        assert_eq!(
            defaults().with_overrides(&bad).unwrap_err(),
            "Invalid value compact,squash for configuration cleanup.policy: String must be one \
             of: compact, delete"
        );
        let conflict = BTreeMap::from([
            ("min.compaction.lag.ms".to_string(), "10".to_string()),
            ("max.compaction.lag.ms".to_string(), "5".to_string()),
        ]);
        assert!(defaults().with_overrides(&conflict).unwrap_err().starts_with("conflict topic"));
    }

    #[test]
    fn topic_names_follow_kafka_rules() {
        assert!(validate_topic_name("orders.v1_EU-2").is_ok());
        for bad in ["", ".", "..", "a b", "a/b", "ü"] {
            assert!(validate_topic_name(bad).is_err(), "{bad:?}");
        }
        assert!(validate_topic_name(&"a".repeat(249)).is_ok());
        assert!(validate_topic_name(&"a".repeat(250)).is_err());
    }

    fn ops(list: &[(&str, ConfigOp, Option<&str>)]) -> Vec<(String, ConfigOp, Option<String>)> {
        list.iter().map(|(n, op, v)| (n.to_string(), *op, v.map(String::from))).collect()
    }

    #[test]
    fn incremental_ops_set_delete_and_edit_lists() {
        let mut overrides = BTreeMap::new();
        overrides.insert("retention.ms".to_string(), "1000".to_string());
        overrides.insert("segment.ms".to_string(), "5000".to_string());
        let effective = |name: &str| defaults().value_of(name);
        let changed = apply_config_ops(
            &overrides,
            &ops(&[
                ("retention.ms", ConfigOp::Set, Some("2000")),
                ("segment.ms", ConfigOp::Delete, None),
                ("max.message.bytes", ConfigOp::Set, Some("4096")),
                ("leader.replication.throttled.replicas", ConfigOp::Append, Some("0:1,1:1")),
            ]),
            effective,
        )
        .unwrap();
        assert_eq!(changed.get("retention.ms").map(String::as_str), Some("2000"));
        assert_eq!(changed.get("segment.ms"), None);
        assert_eq!(changed.get("max.message.bytes").map(String::as_str), Some("4096"));
        let list = "leader.replication.throttled.replicas";
        assert_eq!(changed.get(list).map(String::as_str), Some("0:1,1:1"));
        let again = apply_config_ops(
            &changed,
            &ops(&[(list, ConfigOp::Append, Some("1:1,2:1"))]),
            effective,
        )
        .unwrap();
        assert_eq!(again.get(list).map(String::as_str), Some("0:1,1:1,2:1"));
        let less =
            apply_config_ops(&again, &ops(&[(list, ConfigOp::Subtract, Some("0:1"))]), effective)
                .unwrap();
        assert_eq!(less.get(list).map(String::as_str), Some("1:1,2:1"));
        // APPEND to a list the topic does not override starts from the effective value.
        let policy = apply_config_ops(
            &BTreeMap::new(),
            &ops(&[("cleanup.policy", ConfigOp::Append, Some("delete"))]),
            effective,
        )
        .unwrap();
        assert_eq!(policy.get("cleanup.policy").map(String::as_str), Some("delete"));
    }

    #[test]
    fn incremental_ops_refuse_bad_names_and_operations() {
        let none = BTreeMap::new();
        let effective = |name: &str| defaults().value_of(name);
        for bad in [
            ops(&[("no.such.config", ConfigOp::Set, Some("1"))]),
            ops(&[("retention.ms", ConfigOp::Append, Some("1"))]),
            ops(&[("retention.ms", ConfigOp::Set, None)]),
            ops(&[
                ("retention.ms", ConfigOp::Set, Some("1")),
                ("retention.ms", ConfigOp::Delete, None),
            ]),
        ] {
            assert!(apply_config_ops(&none, &bad, effective).is_err(), "{bad:?}");
        }
        assert_eq!(ConfigOp::from_code(4), None);
        assert_eq!(ConfigOp::from_code(3), Some(ConfigOp::Subtract));
    }
}
