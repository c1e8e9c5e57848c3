//! CreateTopics (API 19): topics are created by the controller (shard 0), which persists the
//! catalog and tells every shard before answering, so the next request on any connection sees
//! the topic; clustered, through the metadata log (`controller::quorum`). A single node
//! takes replication factor 1 and assignments to itself; a cluster takes a replication factor
//! up to its unfenced brokers and assignments of distinct registered brokers per partition
//! (the controller checks them). v5+ return the configs. With an authorizer a topic needs
//! CREATE on the cluster or on the topic (TOPIC_AUTHORIZATION_FAILED).

use std::collections::BTreeMap;

use bytes::Bytes;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};

use super::config_common::SOURCE_TOPIC;
use super::describe_configs::topic_config_source;
use super::{str_bytes, Context, Outcome};
use crate::controller::{ControllerRequest, CreateTopic, TopicError};
use crate::model::topic::{PASSIVE_TOPIC_CONFIG_NAMES, TOPIC_CONFIG_NAMES};
use crate::model::{ErrorCode, NodeId};

pub async fn handle(ctx: &Context, body: Bytes) -> Outcome {
    let request: CreateTopicsRequest = match ctx.decode(body) {
        Ok(r) => r,
        Err(close) => return close,
    };
    let mut response = CreateTopicsResponse::default();
    let clustered = ctx.cluster().clustered();
    let node_id = ctx.shard().config.node_id;
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
                code: ErrorCode::InvalidRequest,
                message: "topic named twice in one request".into(),
            })
        } else if !ctx.may_create_topic(&name) {
            Err(TopicError {
                code: ErrorCode::TopicAuthorizationFailed,
                message: "Authorization failed.".into(),
            })
        } else if !clustered && topic.replication_factor != -1 && topic.replication_factor != 1 {
            let factor = topic.replication_factor;
            let message =
                format!("replication factor {factor} is larger than the 1 available broker");
            Err(TopicError { code: ErrorCode::InvalidReplicationFactor, message })
        } else if topic.replication_factor == 0 || topic.replication_factor < -1 {
            let factor = topic.replication_factor;
            let message = format!("replication factor {factor} must be larger than 0");
            Err(TopicError { code: ErrorCode::InvalidReplicationFactor, message })
        } else if let Err(message) = check_assignments(&topic, node_id, clustered) {
            Err(TopicError { code: ErrorCode::InvalidReplicaAssignment, message })
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
                    code: ErrorCode::InvalidConfig,
                    message: format!("config {key} has no value"),
                }),
                None => {
                    let mut assignments: Vec<_> = topic
                        .assignments
                        .iter()
                        .map(|a| {
                            let replicas = a.broker_ids.iter().map(|id| NodeId::from(*id));
                            (a.partition_index, replicas.collect::<Vec<_>>())
                        })
                        .collect();
                    assignments.sort_unstable();
                    let create = CreateTopic {
                        name: name.clone(),
                        partitions: if topic.assignments.is_empty() {
                            topic.num_partitions
                        } else {
                            topic.assignments.len() as i32
                        },
                        overrides,
                        validate_only: request.validate_only,
                        assignments: assignments.into_iter().map(|(_, set)| set).collect(),
                        replication_factor: topic.replication_factor,
                        timeout_ms: request.timeout_ms,
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
                result.replication_factor =
                    meta.placement(0).map_or(1, |placement| placement.replicas.len() as i16);
                if ctx.version >= 5 {
                    result.configs = Some(
                        TOPIC_CONFIG_NAMES
                            .iter()
                            .filter_map(|key| {
                                let value = meta.config.value_of(key)?;
                                let mut c = CreatableTopicConfigs::default();
                                c.name = str_bytes(key);
                                c.value = Some(str_bytes(&value));
                                let overridden = meta.overrides.contains_key(*key);
                                c.config_source = topic_config_source(ctx.shard(), key, overridden);
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
                result.error_code = e.code.code();
                result.error_message = Some(str_bytes(&e.message));
            }
        }
        response.topics.push(result);
    }
    ctx.reply(&response)
}

/// With explicit assignments Kafka wants num_partitions and replication_factor at -1 and
/// one replica list per partition; on a single node every list must name only this broker,
/// in a cluster distinct brokers (the controller checks that they are registered and
/// unfenced).
fn check_assignments(
    topic: &kafka_protocol::messages::create_topics_request::CreatableTopic,
    node_id: NodeId,
    clustered: bool,
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
        if clustered {
            let mut ids = assignment.broker_ids.clone();
            ids.sort_unstable();
            ids.dedup();
            if ids.is_empty() || ids.len() != assignment.broker_ids.len() {
                let index = assignment.partition_index;
                return Err(format!("partition {index} must be assigned to distinct brokers"));
            }
            continue;
        }
        if assignment.broker_ids.len() != 1 || NodeId::from(assignment.broker_ids[0]) != node_id {
            let index = assignment.partition_index;
            return Err(format!("partition {index} must be assigned to broker {node_id} only"));
        }
    }
    Ok(())
}
