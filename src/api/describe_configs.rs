//! DescribeConfigs (API 32): a topic's configs with their source (override or default), or the
//! static broker configs Spate honours, under Kafka's names, from the shard's catalog copy.

use bytes::Bytes;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};

use super::config_common::{
    config_denied, RESOURCE_BROKER, RESOURCE_TOPIC, SOURCE_DEFAULT, SOURCE_STATIC_BROKER,
    SOURCE_TOPIC,
};
use super::{str_bytes, Context, Outcome};
use crate::model::topic::{PASSIVE_TOPIC_CONFIG_NAMES, TOPIC_CONFIG_NAMES};
use crate::model::{ErrorCode, NodeId};
use crate::security::acl::Operation;
use crate::txn::state::TRANSACTION_TIMEOUT_MS_MAX;

pub async fn handle(ctx: &Context, body: Bytes) -> Outcome {
    let request: DescribeConfigsRequest = match ctx.decode(body) {
        Ok(r) => r,
        Err(close) => return close,
    };
    let shard = ctx.shard();
    let mut response = DescribeConfigsResponse::default();
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
                            let source = if meta.overrides.contains_key(*key) {
                                SOURCE_TOPIC
                            } else {
                                SOURCE_DEFAULT
                            };
                            result.configs.push(entry(key, &value, source, false));
                        }
                        for (key, value) in meta.overrides.iter() {
                            let passive = PASSIVE_TOPIC_CONFIG_NAMES.contains(&key.as_str());
                            if passive && wanted(key) {
                                result.configs.push(entry(key, value, SOURCE_TOPIC, false));
                            }
                        }
                    }
                }
            }
            (RESOURCE_BROKER, None) => {
                let ours = resource.resource_name.is_empty()
                    || resource.resource_name.parse().ok().map(NodeId)
                        == Some(shard.config.node_id);
                if !ours {
                    result.error_code = ErrorCode::InvalidRequest.code();
                    result.error_message = Some(str_bytes("unknown broker id"));
                } else {
                    for (key, value) in broker_configs(shard).into_iter().filter(|(k, _)| wanted(k))
                    {
                        result.configs.push(entry(&key, &value, SOURCE_STATIC_BROKER, true));
                    }
                }
            }
            (_, None) => {
                result.error_code = ErrorCode::InvalidRequest.code();
                result.error_message =
                    Some(str_bytes("only topic and broker resources are supported"));
            }
        }
        response.results.push(result);
    }
    ctx.reply(&response)
}

fn entry(name: &str, value: &str, source: i8, read_only: bool) -> DescribeConfigsResourceResult {
    let mut e = DescribeConfigsResourceResult::default();
    e.name = str_bytes(name);
    e.value = Some(str_bytes(value));
    e.read_only = read_only;
    e.config_source = source;
    e
}

/// The broker configs we honour, under Kafka's names.
fn broker_configs(shard: &crate::shard::Shard) -> Vec<(String, String)> {
    let c = &shard.config;
    let d = &c.topic_defaults;
    let g = &c.groups;
    let t = &c.txns;
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
        ("message.max.bytes".into(), d.max_message_bytes.to_string()),
        ("log.segment.bytes".into(), d.segment_bytes.to_string()),
        ("log.roll.ms".into(), d.segment_ms.to_string()),
        ("log.retention.ms".into(), d.retention_ms.to_string()),
        ("log.retention.bytes".into(), d.retention_bytes.to_string()),
        ("num.io.threads".into(), c.cores.to_string()),
        ("group.initial.rebalance.delay.ms".into(), g.initial_rebalance_delay_ms.to_string()),
        ("group.min.session.timeout.ms".into(), g.session_timeout_ms_min.to_string()),
        ("group.max.session.timeout.ms".into(), g.session_timeout_ms_max.to_string()),
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
