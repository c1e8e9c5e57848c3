//! Topic administration: CreateTopics, DeleteTopics, CreatePartitions, DescribeConfigs and
//! DescribeCluster. Changes go to the controller shard, which persists the catalog and tells
//! every shard before answering, so the next request on any connection sees the change.

use std::collections::BTreeMap;

use bytes::Bytes;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::{
    BrokerId, CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest,
    CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse, DescribeClusterResponse,
    DescribeConfigsRequest, DescribeConfigsResponse, TopicName,
};

use super::{str_bytes, Context, Outcome};
use crate::controller::{ControllerRequest, CreateTopic, TopicError};
use crate::model::topic::{PASSIVE_TOPIC_CONFIG_NAMES, TOPIC_CONFIG_NAMES};
use crate::protocol::errors;
use crate::txn::state::TRANSACTION_TIMEOUT_MS_MAX;

pub(super) const RESOURCE_TOPIC: i8 = 2;
pub(super) const RESOURCE_BROKER: i8 = 4;
/// DescribeConfigs config sources (Kafka's `ConfigSource`).
const SOURCE_TOPIC: i8 = 1;
const SOURCE_STATIC_BROKER: i8 = 4;
const SOURCE_DEFAULT: i8 = 5;

pub async fn create_topics(ctx: &Context, body: Bytes) -> Outcome {
    let request: CreateTopicsRequest = match ctx.decode(body) {
        Ok(r) => r,
        Err(close) => return close,
    };
    let mut response = CreateTopicsResponse::default();
    let mut seen = BTreeMap::new();
    for topic in &request.topics {
        *seen.entry(topic.name.0.to_string()).or_insert(0) += 1;
    }
    for topic in request.topics {
        let name = topic.name.0.to_string();
        let mut result = CreatableTopicResult::default();
        result.name = topic.name.clone();
        result.num_partitions = -1;
        result.replication_factor = -1;
        let outcome = if seen.get(&name).copied().unwrap_or(0) > 1 {
            Err(TopicError {
                code: errors::INVALID_REQUEST,
                message: "topic named twice in one request".into(),
            })
        } else if topic.replication_factor != -1 && topic.replication_factor != 1 {
            Err(TopicError {
                code: errors::INVALID_REPLICATION_FACTOR,
                message: format!(
                    "replication factor {} is larger than the 1 available broker",
                    topic.replication_factor
                ),
            })
        } else if let Err(message) = check_assignments(&topic, ctx.shard().config.node_id) {
            Err(TopicError { code: errors::INVALID_REPLICA_ASSIGNMENT, message })
        } else {
            let mut overrides = BTreeMap::new();
            let mut bad = None;
            for config in &topic.configs {
                match &config.value {
                    Some(value) => {
                        overrides.insert(config.name.to_string(), value.to_string());
                    }
                    None => bad = Some(config.name.to_string()),
                }
            }
            match bad {
                Some(key) => Err(TopicError {
                    code: errors::INVALID_CONFIG,
                    message: format!("config {key} has no value"),
                }),
                None => {
                    let create = CreateTopic {
                        name: name.clone(),
                        partitions: if topic.assignments.is_empty() {
                            topic.num_partitions
                        } else {
                            topic.assignments.len() as i32
                        },
                        overrides,
                        validate_only: request.validate_only,
                    };
                    let create = ControllerRequest::CreateTopic(create);
                    ctx.controller().change_topic(create).await
                }
            }
        };
        match outcome {
            Ok(meta) => {
                result.topic_id = uuid::Uuid::from_bytes(meta.id);
                result.num_partitions = meta.partitions;
                result.replication_factor = 1;
                if ctx.version >= 5 {
                    result.configs = Some(
                        TOPIC_CONFIG_NAMES
                            .iter()
                            .filter_map(|key| {
                                let value = meta.config.value_of(key)?;
                                let mut c = CreatableTopicConfigs::default();
                                c.name = str_bytes(key);
                                c.value = Some(str_bytes(&value));
                                c.config_source = if meta.overrides.contains_key(*key) {
                                    SOURCE_TOPIC
                                } else {
                                    SOURCE_DEFAULT
                                };
                                Some(c)
                            })
                            .chain(meta.overrides.iter().filter_map(|(key, value)| {
                                if !PASSIVE_TOPIC_CONFIG_NAMES.contains(&key.as_str()) {
                                    return None;
                                }
                                let mut c = CreatableTopicConfigs::default();
                                c.name = str_bytes(key);
                                c.value = Some(str_bytes(value));
                                c.config_source = SOURCE_TOPIC;
                                Some(c)
                            }))
                            .collect(),
                    );
                }
            }
            Err(e) => {
                result.error_code = e.code;
                result.error_message = Some(str_bytes(&e.message));
            }
        }
        response.topics.push(result);
    }
    ctx.reply(&response)
}

pub async fn delete_topics(ctx: &Context, body: Bytes) -> Outcome {
    let request: DeleteTopicsRequest = match ctx.decode(body) {
        Ok(r) => r,
        Err(close) => return close,
    };
    // v6+ names topics by name or id in `topics`; older versions list names.
    let mut targets: Vec<(Option<String>, uuid::Uuid)> =
        request.topic_names.iter().map(|n| (Some(n.0.to_string()), uuid::Uuid::nil())).collect();
    targets.extend(
        request.topics.iter().map(|t| (t.name.as_ref().map(|n| n.0.to_string()), t.topic_id)),
    );
    let mut response = DeleteTopicsResponse::default();
    for (name, id) in targets {
        let mut result = DeletableTopicResult::default();
        result.topic_id = id;
        let resolved = match &name {
            Some(name) => Some(name.clone()),
            None => ctx.shard().catalog.borrow().name_of(id.as_bytes()).map(|n| n.to_string()),
        };
        result.name = name.as_ref().map(|n| TopicName(str_bytes(n)));
        let Some(resolved) = resolved else {
            result.error_code = errors::UNKNOWN_TOPIC_ID;
            response.responses.push(result);
            continue;
        };
        let delete = ControllerRequest::DeleteTopic { name: resolved.clone() };
        match ctx.controller().change_topic(delete).await {
            Ok(meta) => {
                result.topic_id = uuid::Uuid::from_bytes(meta.id);
                result.name = Some(TopicName(str_bytes(&resolved)));
            }
            Err(e) => {
                result.error_code = e.code;
                result.error_message = Some(str_bytes(&e.message));
            }
        }
        response.responses.push(result);
    }
    ctx.reply(&response)
}

pub async fn create_partitions(ctx: &Context, body: Bytes) -> Outcome {
    let request: CreatePartitionsRequest = match ctx.decode(body) {
        Ok(r) => r,
        Err(close) => return close,
    };
    let mut response = CreatePartitionsResponse::default();
    for topic in request.topics {
        let mut result = CreatePartitionsTopicResult::default();
        result.name = topic.name.clone();
        let assignments = topic.assignments.as_ref().filter(|a| !a.is_empty());
        let node_id = ctx.shard().config.node_id;
        let foreign = assignments.and_then(|a| {
            a.iter().position(|a| a.broker_ids.len() != 1 || a.broker_ids[0].0 != node_id)
        });
        if let Some(index) = foreign {
            result.error_code = errors::INVALID_REPLICA_ASSIGNMENT;
            let message =
                format!("new partition {index} must be assigned to broker {node_id} only");
            result.error_message = Some(str_bytes(&message));
            response.results.push(result);
            continue;
        }
        let call = ControllerRequest::CreatePartitions {
            name: topic.name.0.to_string(),
            count: topic.count,
            assignments: assignments.map(Vec::len),
            validate_only: request.validate_only,
        };
        if let Err(e) = ctx.controller().change_topic(call).await {
            result.error_code = e.code;
            result.error_message = Some(str_bytes(&e.message));
        }
        response.results.push(result);
    }
    ctx.reply(&response)
}

pub async fn describe_configs(ctx: &Context, body: Bytes) -> Outcome {
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
        match resource.resource_type {
            RESOURCE_TOPIC => {
                let meta = shard.catalog.borrow().get(&resource.resource_name).cloned();
                match meta {
                    None => {
                        result.error_code = errors::UNKNOWN_TOPIC_OR_PARTITION;
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
            RESOURCE_BROKER => {
                let ours = resource.resource_name.is_empty()
                    || resource.resource_name.parse::<i32>().ok() == Some(shard.config.node_id);
                if !ours {
                    result.error_code = errors::INVALID_REQUEST;
                    result.error_message = Some(str_bytes("unknown broker id"));
                } else {
                    for (key, value) in broker_configs(shard).into_iter().filter(|(k, _)| wanted(k))
                    {
                        result.configs.push(entry(&key, &value, SOURCE_STATIC_BROKER, true));
                    }
                }
            }
            _ => {
                result.error_code = errors::INVALID_REQUEST;
                result.error_message =
                    Some(str_bytes("only topic and broker resources are supported"));
            }
        }
        response.results.push(result);
    }
    ctx.reply(&response)
}

/// With explicit assignments Kafka wants num_partitions and replication_factor at -1 and
/// one replica list per partition; on a single node every list must name only this broker.
fn check_assignments(
    topic: &kafka_protocol::messages::create_topics_request::CreatableTopic,
    node_id: i32,
) -> Result<(), String> {
    if topic.assignments.is_empty() {
        return Ok(());
    }
    if topic.num_partitions != -1 || topic.replication_factor != -1 {
        return Err("with replica assignments, partitions and replication factor must be -1".into());
    }
    let mut indexes: Vec<i32> = topic.assignments.iter().map(|a| a.partition_index).collect();
    indexes.sort_unstable();
    if indexes.iter().enumerate().any(|(i, index)| *index != i as i32) {
        return Err("assignments must cover partitions 0..n once each".into());
    }
    for assignment in &topic.assignments {
        if assignment.broker_ids.len() != 1 || assignment.broker_ids[0].0 != node_id {
            let index = assignment.partition_index;
            return Err(format!("partition {index} must be assigned to broker {node_id} only"));
        }
    }
    Ok(())
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
        ("listeners".into(), format!("PLAINTEXT://{}", c.listen)),
        (
            "advertised.listeners".into(),
            format!("PLAINTEXT://{}:{}", c.advertised_host, c.advertised_port),
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

pub fn describe_cluster(ctx: &Context, _body: Bytes) -> Outcome {
    let shard = ctx.shard();
    let mut response = DescribeClusterResponse::default();
    response.cluster_id = str_bytes(&shard.catalog.borrow().cluster_id);
    response.controller_id = BrokerId(shard.config.node_id);
    response.endpoint_type = 1;
    let mut broker = DescribeClusterBroker::default();
    broker.broker_id = BrokerId(shard.config.node_id);
    broker.host = str_bytes(&shard.config.advertised_host);
    broker.port = i32::from(shard.config.advertised_port);
    response.brokers = vec![broker];
    ctx.reply(&response)
}
