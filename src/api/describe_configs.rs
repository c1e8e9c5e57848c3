//! DescribeConfigs (API 32), from the shard's catalog copy: a topic's configs with their
//! source (its override, else the broker config it defaults to: dynamic, static or built in);
//! a broker's configs (the static ones Spate honours and Kafka's dynamic ones, each from its
//! first synonym: this broker's dynamic value, the cluster default, the static value, the
//! default), or the cluster default's dynamic configs (name ""); a group's configs (its own
//! or the broker's). Synonyms when asked, as Kafka's `ConfigHelper` lists them.

use bytes::Bytes;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult, DescribeConfigsSynonym,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};

use super::config_common::{
    config_denied, RESOURCE_BROKER, RESOURCE_GROUP, RESOURCE_TOPIC, SOURCE_DEFAULT,
    SOURCE_DYNAMIC_BROKER, SOURCE_DYNAMIC_DEFAULT_BROKER, SOURCE_GROUP, SOURCE_STATIC_BROKER,
    SOURCE_TOPIC,
};
use super::{str_bytes, Context, Outcome};
use crate::model::dynamic_config::{
    self, broker_def, broker_def_of, broker_synonym, ConfigType, DYNAMIC_BROKER_CONFIGS,
    GROUP_CONFIG_NAMES,
};
use crate::model::topic::{TopicConfig, PASSIVE_TOPIC_CONFIG_NAMES, TOPIC_CONFIG_NAMES};
use crate::model::ErrorCode;
use crate::security::acl::Operation;
use crate::shard::Shard;
use crate::txn::state::TRANSACTION_TIMEOUT_MS_MAX;

/// One synonym of a config: a name, its value (None: null) and where it comes from, in
/// Kafka's order of precedence.
type Synonym = (String, Option<String>, i8);

pub async fn handle(ctx: &Context, body: Bytes) -> Outcome {
    let request: DescribeConfigsRequest = match ctx.decode(body) {
        Ok(r) => r,
        Err(close) => return close,
    };
    let shard = ctx.shard();
    let mut response = DescribeConfigsResponse::default();
    let include_synonyms = request.include_synonyms;
    for resource in request.resources {
        let mut result = DescribeConfigsResult::default();
        result.resource_type = resource.resource_type;
        result.resource_name = resource.resource_name.clone();
        let keys: Option<Vec<String>> =
            resource.configuration_keys.as_ref().map(|k| k.iter().map(|s| s.to_string()).collect());
        let wanted = |name: &str| keys.as_ref().is_none_or(|k| k.iter().any(|x| x == name));
        let denied = config_denied(
            ctx,
            resource.resource_type,
            &resource.resource_name,
            Operation::DescribeConfigs,
        );
        match (resource.resource_type, denied) {
            (_, Some(denied)) => {
                result.error_code = denied.code.code();
                result.error_message = Some(str_bytes(&denied.message));
            }
            (RESOURCE_TOPIC, None) => {
                let meta = shard.catalog.borrow().get(&resource.resource_name).cloned();
                match meta {
                    None => {
                        result.error_code = ErrorCode::UnknownTopicOrPartition.code();
                        result.error_message = Some(str_bytes("unknown topic"));
                    }
                    Some(meta) => {
                        for key in TOPIC_CONFIG_NAMES.iter().filter(|k| wanted(k)) {
                            let Some(value) = meta.config.value_of(key) else { continue };
                            let mut chain = topic_chain(shard, key);
                            if meta.overrides.contains_key(*key) {
                                chain.insert(
                                    0,
                                    (key.to_string(), Some(value.clone()), SOURCE_TOPIC),
                                );
                            }
                            let source = source_of(&chain);
                            let mut e = entry(key, Some(value.as_str()), source, false);
                            if include_synonyms {
                                e.synonyms = synonyms(chain);
                            }
                            result.configs.push(e);
                        }
                        for (key, value) in meta.overrides.iter() {
                            let passive = PASSIVE_TOPIC_CONFIG_NAMES.contains(&key.as_str());
                            if passive && wanted(key) {
                                result.configs.push(entry(
                                    key,
                                    Some(value.as_str()),
                                    SOURCE_TOPIC,
                                    false,
                                ));
                            }
                        }
                    }
                }
            }
            (RESOURCE_BROKER, None) => {
                let name: &str = &resource.resource_name;
                let node = shard.config.node_id;
                let include = include_synonyms;
                if name.is_empty() {
                    // The cluster default lists its dynamic configs only, as in Kafka.
                    let configs = shard.catalog.borrow().configs.clone();
                    let stored = configs.of(RESOURCE_BROKER, "");
                    for (key, value) in stored.iter().filter(|(k, _)| wanted(k)) {
                        let chain =
                            vec![(key.clone(), Some(value.clone()), SOURCE_DYNAMIC_DEFAULT_BROKER)];
                        result.configs.push(broker_entry(key, chain, include));
                    }
                } else if name.parse().ok() == Some(node.0) {
                    for (key, chain) in broker_configs(shard).into_iter().filter(|(k, _)| wanted(k))
                    {
                        result.configs.push(broker_entry(&key, chain, include));
                    }
                } else {
                    result.error_code = ErrorCode::InvalidRequest.code();
                    result.error_message = Some(str_bytes(&format!(
                        "Unexpected broker id, expected {node} or empty string, but received \
                         {name}"
                    )));
                }
            }
            (RESOURCE_GROUP, None) if resource.resource_name.is_empty() => {
                result.error_code = ErrorCode::InvalidRequest.code();
                result.error_message = Some(str_bytes("Group name must not be empty"));
            }
            (RESOURCE_GROUP, None) => {
                let configs = shard.catalog.borrow().configs.clone();
                let stored = configs.of(RESOURCE_GROUP, &resource.resource_name);
                for key in GROUP_CONFIG_NAMES.iter().filter(|k| wanted(k)) {
                    let value = dynamic_config::group_value(stored, key, &shard.config.groups);
                    let set = stored.contains_key(*key);
                    let source = if set { SOURCE_GROUP } else { SOURCE_DEFAULT };
                    let mut e = entry(key, Some(value.as_str()), source, false);
                    let kind = dynamic_config::group_kind(key).map(|(kind, _)| kind);
                    e.config_type = kind.unwrap_or(ConfigType::Int).code();
                    if set && include_synonyms {
                        e.synonyms = synonyms(vec![(key.to_string(), Some(value), SOURCE_GROUP)]);
                    }
                    result.configs.push(e);
                }
            }
            (_, None) => {
                result.error_code = ErrorCode::InvalidRequest.code();
                result.error_message = Some(str_bytes(&format!(
                    "Unsupported resource type {}",
                    resource.resource_type
                )));
            }
        }
        response.results.push(result);
    }
    ctx.reply(&response)
}

fn entry(
    name: &str,
    value: Option<&str>,
    source: i8,
    read_only: bool,
) -> DescribeConfigsResourceResult {
    let mut e = DescribeConfigsResourceResult::default();
    e.name = str_bytes(name);
    e.value = value.map(str_bytes);
    e.read_only = read_only;
    e.config_source = source;
    e
}

fn synonyms(chain: Vec<Synonym>) -> Vec<DescribeConfigsSynonym> {
    chain
        .into_iter()
        .map(|(name, value, source)| {
            let mut s = DescribeConfigsSynonym::default();
            s.name = str_bytes(&name);
            s.value = value.as_deref().map(str_bytes);
            s.source = source;
            s
        })
        .collect()
}

/// A broker config's entry: the first synonym's value and source (DEFAULT_CONFIG with no
/// value when it has none), read-only unless Kafka may change it at runtime, a password's
/// value hidden, as Kafka's `ConfigHelper.createBrokerConfigEntry` answers.
fn broker_entry(name: &str, chain: Vec<Synonym>, include: bool) -> DescribeConfigsResourceResult {
    let def = broker_def_of(name);
    let sensitive = def.is_some_and(|d| d.kind == ConfigType::Password);
    let (value, source) = match chain.first() {
        Some((_, value, source)) => (value.clone(), *source),
        None => (None, SOURCE_DEFAULT),
    };
    let value = if sensitive { None } else { value };
    let mut e = entry(name, value.as_deref(), source, def.is_none());
    e.is_sensitive = sensitive;
    if let Some(def) = def {
        e.config_type = def.kind.code();
    }
    if include {
        let hidden = |(n, v, s): Synonym| (n, if sensitive { None } else { v }, s);
        e.synonyms = synonyms(chain.into_iter().map(hidden).collect());
    }
    e
}

/// A broker config's synonyms in Kafka's order: this broker's dynamic value, the cluster
/// default, the static value (given on the command line or in the file), the default.
fn broker_chain(
    shard: &Shard,
    name: &str,
    static_value: Option<String>,
    default_value: Option<String>,
) -> Vec<Synonym> {
    let node = shard.config.node_id;
    let catalog = shard.catalog.borrow();
    let mut chain = Vec::new();
    let mine = catalog.configs.of(RESOURCE_BROKER, &node.to_string()).get(name);
    if let Some(value) = mine {
        chain.push((name.to_string(), Some(value.clone()), SOURCE_DYNAMIC_BROKER));
    }
    if let Some(value) = catalog.configs.of(RESOURCE_BROKER, "").get(name) {
        chain.push((name.to_string(), Some(value.clone()), SOURCE_DYNAMIC_DEFAULT_BROKER));
    }
    if shard.config.static_given.contains(name) {
        if let Some(value) = static_value {
            chain.push((name.to_string(), Some(value), SOURCE_STATIC_BROKER));
        }
    }
    if let Some(value) = default_value {
        chain.push((name.to_string(), Some(value), SOURCE_DEFAULT));
    }
    chain
}

/// Where a config's value comes from: its first synonym's source, DEFAULT_CONFIG without one.
fn source_of(chain: &[Synonym]) -> i8 {
    chain.first().map_or(SOURCE_DEFAULT, |synonym| synonym.2)
}

/// Where topic config `key`'s value comes from: the topic (`overridden`), else the broker
/// config it falls back to (`log.retention.ms` set on the command line: STATIC_BROKER_CONFIG),
/// as DescribeConfigs and CreateTopics (v5+) both answer.
pub fn topic_config_source(shard: &Shard, key: &str, overridden: bool) -> i8 {
    if overridden {
        SOURCE_TOPIC
    } else {
        source_of(&topic_chain(shard, key))
    }
}

/// The broker synonyms of a topic config (`retention.ms`: `log.retention.ms` at each level).
fn topic_chain(shard: &Shard, topic_config: &str) -> Vec<Synonym> {
    let Some(broker) = broker_synonym(topic_config) else { return Vec::new() };
    let static_value = shard.config.topic_defaults.value_of(topic_config);
    let default_value = TopicConfig::spate_defaults().value_of(topic_config);
    broker_chain(shard, broker, static_value, default_value)
}

/// Every broker config this broker describes, under Kafka's names, with its synonyms: the
/// static ones it honours, then Kafka's dynamic ones.
fn broker_configs(shard: &Shard) -> Vec<(String, Vec<Synonym>)> {
    let builtin = TopicConfig::spate_defaults();
    let mut out = Vec::new();
    let honoured = honoured_configs(shard);
    for (name, value) in &honoured {
        // The default under a static value: the built-in topic default where there is one.
        let topic = broker_def(name).and_then(|d| d.topic);
        let default = match shard.config.static_given.contains(name.as_str()) {
            false => Some(value.clone()),
            true => topic.and_then(|t| builtin.value_of(t)),
        };
        out.push((name.clone(), broker_chain(shard, name, Some(value.clone()), default)));
    }
    for def in DYNAMIC_BROKER_CONFIGS {
        if honoured.iter().any(|(name, _)| name == def.name) {
            continue;
        }
        let default = def.topic.and_then(|t| builtin.value_of(t)).or(def.default.map(String::from));
        out.push((def.name.to_string(), broker_chain(shard, def.name, None, default)));
    }
    // Stored names Kafka has no config of (custom ones) and listener-prefixed ones.
    let stored: Vec<String> = {
        let catalog = shard.catalog.borrow();
        let mine = catalog.configs.of(RESOURCE_BROKER, &shard.config.node_id.to_string());
        let cluster = catalog.configs.of(RESOURCE_BROKER, "");
        mine.keys().chain(cluster.keys()).cloned().collect()
    };
    for name in stored {
        if !out.iter().any(|(listed, _)| *listed == name) {
            let chain = broker_chain(shard, &name, None, None);
            out.push((name, chain));
        }
    }
    out
}

/// The static broker configs Spate honours, under Kafka's names, with their values.
fn honoured_configs(shard: &Shard) -> Vec<(String, String)> {
    let c = &shard.config;
    let d = &c.topic_defaults;
    let g = &c.groups;
    let t = &c.txns;
    let topic = |name: &str| d.value_of(name).unwrap_or_default();
    vec![
        ("node.id".into(), c.node_id.to_string()),
        ("listeners".into(), listeners_text(c, |l| l.address.to_string())),
        (
            "advertised.listeners".into(),
            listeners_text(c, |l| format!("{}:{}", l.advertised_host, l.advertised_port)),
        ),
        ("log.dirs".into(), c.data_dir.display().to_string()),
        ("num.partitions".into(), c.default_partitions.to_string()),
        ("auto.create.topics.enable".into(), c.auto_create_topics.to_string()),
        ("socket.request.max.bytes".into(), c.frame_max_bytes.to_string()),
        ("message.max.bytes".into(), topic("max.message.bytes")),
        ("log.segment.bytes".into(), topic("segment.bytes")),
        ("log.roll.ms".into(), topic("segment.ms")),
        ("log.retention.ms".into(), topic("retention.ms")),
        ("log.retention.bytes".into(), topic("retention.bytes")),
        ("log.cleanup.policy".into(), topic("cleanup.policy")),
        ("log.flush.interval.messages".into(), topic("flush.messages")),
        ("min.insync.replicas".into(), topic("min.insync.replicas")),
        ("num.io.threads".into(), c.cores.to_string()),
        ("group.initial.rebalance.delay.ms".into(), g.initial_rebalance_delay_ms.to_string()),
        ("group.min.session.timeout.ms".into(), g.session_timeout_ms_min.to_string()),
        ("group.max.session.timeout.ms".into(), g.session_timeout_ms_max.to_string()),
        ("group.consumer.session.timeout.ms".into(), g.consumer_session_timeout_ms.to_string()),
        (
            "group.consumer.heartbeat.interval.ms".into(),
            g.consumer_heartbeat_interval_ms.to_string(),
        ),
        ("group.consumer.migration.policy".into(), g.migration_policy.name().to_string()),
        ("group.consumer.max.size".into(), g.consumer_max_size.to_string()),
        ("group.max.size".into(), g.classic_max_size.to_string()),
        ("group.share.max.size".into(), g.share_max_size.to_string()),
        ("offsets.retention.minutes".into(), (g.offsets_retention_ms / 60_000).to_string()),
        ("offset.metadata.max.bytes".into(), g.offset_metadata_bytes_max.to_string()),
        ("offsets.topic.segment.bytes".into(), g.offsets_segment_bytes.to_string()),
        ("transaction.state.log.segment.bytes".into(), t.log_segment_bytes.to_string()),
        ("transactional.id.expiration.ms".into(), t.id_expiration_ms.to_string()),
        ("transaction.max.timeout.ms".into(), TRANSACTION_TIMEOUT_MS_MAX.to_string()),
    ]
}

/// `NAME://address,...` over the listeners.
fn listeners_text(
    config: &crate::config::Config,
    address: impl Fn(&crate::config::Listener) -> String,
) -> String {
    let entries: Vec<String> = config
        .listeners
        .iter()
        .map(|l| format!("{}://{}", l.protocol.name(), address(l)))
        .collect();
    entries.join(",")
}
