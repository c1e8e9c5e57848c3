//! What the config handlers share: Kafka's resource types and config sources, and for
//! AlterConfigs and IncrementalAlterConfigs the check of the resource, the entry of the
//! response and the call to the controller, which validates, persists and applies the new
//! overrides on every shard before answering.
//!
//! Broker resources ("" the cluster default, "<node id>" this broker) and group resources
//! hold Kafka's dynamic configs (`model::dynamic_config`): the new set is computed and checked
//! here (`alter_dynamic`), then the controller stores it and applies it.

use std::collections::BTreeMap;

use super::Context;
use crate::controller::{ControllerRequest, TopicError};
use crate::model::dynamic_config::{
    self, apply_ops, check_broker_configs, check_group_configs, BrokerCheck, ConfigOp,
    ConfigRefusal,
};
pub(super) use crate::model::dynamic_config::{
    RESOURCE_BROKER, RESOURCE_GROUP, RESOURCE_TOPIC, SOURCE_DEFAULT, SOURCE_DYNAMIC_BROKER,
    SOURCE_DYNAMIC_DEFAULT_BROKER, SOURCE_GROUP, SOURCE_STATIC_BROKER, SOURCE_TOPIC,
};
use crate::model::ErrorCode;
use crate::security::acl::Operation;

/// A resource's entry in either response: its type and name, and the error if `outcome` is
/// one. AlterConfigs and IncrementalAlterConfigs answer with two distinct types that have the
/// same fields, so this is a macro rather than a function.
macro_rules! resource_result {
    ($result:ty, $resource:expr, $outcome:expr) => {{
        let mut result = <$result>::default();
        result.resource_type = $resource.resource_type;
        result.resource_name = $resource.resource_name;
        if let Err(e) = $outcome {
            result.error_code = e.code.code();
            result.error_message = Some($crate::api::str_bytes(&e.message));
        }
        result
    }};
}
pub(super) use resource_result;

/// The authorization error of `operation` (DESCRIBE_CONFIGS or ALTER_CONFIGS) on a config
/// resource, as Kafka answers it: a topic needs it on the topic, a broker on the cluster, a
/// group on the group.
pub(super) fn config_denied(
    ctx: &Context,
    resource_type: i8,
    name: &str,
    operation: Operation,
) -> Option<TopicError> {
    let (allowed, code) = match resource_type {
        RESOURCE_TOPIC => (ctx.topic_allowed(operation, name), ErrorCode::TopicAuthorizationFailed),
        RESOURCE_BROKER => (ctx.cluster_allowed(operation), ErrorCode::ClusterAuthorizationFailed),
        RESOURCE_GROUP => (ctx.group_allowed(operation, name), ErrorCode::GroupAuthorizationFailed),
        _ => (true, ErrorCode::None),
    };
    (!allowed).then(|| TopicError { code, message: "Authorization failed.".into() })
}

/// The resource types whose configs may be altered: topics, brokers and groups; any other
/// is Kafka's "Unknown resource type" (INVALID_REQUEST).
pub(super) fn check_resource(resource_type: i8) -> Result<(), TopicError> {
    match resource_type {
        RESOURCE_TOPIC | RESOURCE_BROKER | RESOURCE_GROUP => Ok(()),
        other => Err(TopicError {
            code: ErrorCode::InvalidRequest,
            message: format!("Unknown resource type {other}"),
        }),
    }
}

/// A new config set of a broker or group resource: the whole set (AlterConfigs) or
/// operations on the stored one (IncrementalAlterConfigs).
pub(super) enum Change {
    Replace(BTreeMap<String, String>),
    Ops(Vec<(String, ConfigOp, Option<String>)>),
}

/// Alters a broker or group resource's dynamic configs: the new set is computed from the
/// stored one, checked as Kafka checks it (the broker's name, dynamic names, types, the
/// topic defaults they make; the group configs' bounds), and unless `validate_only` handed
/// to the controller, which stores and applies it.
pub(super) async fn alter_dynamic(
    ctx: &Context,
    resource_type: i8,
    name: &str,
    change: Change,
    validate_only: bool,
) -> Result<(), TopicError> {
    let shard = ctx.shard();
    let config = &shard.config;
    let current = shard.catalog.borrow().configs.clone();
    let stored = current.of(resource_type, name);
    let kind = match resource_type {
        RESOURCE_BROKER => dynamic_config::broker_kind,
        _ => dynamic_config::group_kind,
    };
    let next = match change {
        Change::Replace(configs) => configs,
        Change::Ops(ops) => apply_ops(stored, &ops, kind).map_err(refused)?,
    };
    if resource_type == RESOURCE_BROKER {
        let cluster_default = name.is_empty();
        if !cluster_default {
            check_broker_name(name, config.node_id.0)?;
        }
        let check = BrokerCheck {
            cluster_default,
            static_defaults: &config.topic_defaults,
            frame_max_bytes: config.frame_max_bytes,
            current: &current,
            node: config.node_id,
        };
        check_broker_configs(&next, &check).map_err(refused)?;
    } else {
        if name.is_empty() {
            return Err(invalid_request("Default group resources are not allowed.".into()));
        }
        check_group_configs(&next, &config.groups).map_err(refused)?;
    }
    if validate_only {
        return Ok(());
    }
    ctx.controller().change_configs(resource_type, name.to_string(), next).await
}

/// A broker resource's name must be this node's id (Kafka's
/// `ConfigAdminManager.validateResourceNameIsCurrentNodeId`).
fn check_broker_name(name: &str, node_id: i32) -> Result<(), TopicError> {
    let Ok(id) = name.parse::<i32>() else {
        return Err(invalid_request(format!("Node id must be an integer, but it is: {name}")));
    };
    if id != node_id {
        return Err(invalid_request(format!(
            "Unexpected broker id, expected {node_id}, but received {name}"
        )));
    }
    Ok(())
}

fn refused(refusal: ConfigRefusal) -> TopicError {
    TopicError { code: refusal.code, message: refusal.message }
}

pub(super) fn invalid_request(message: String) -> TopicError {
    TopicError { code: ErrorCode::InvalidRequest, message }
}

pub(super) async fn alter(
    ctx: &Context,
    name: String,
    overrides: BTreeMap<String, String>,
    validate_only: bool,
) -> Result<(), TopicError> {
    let call = ControllerRequest::AlterTopicConfig { name, overrides, validate_only };
    ctx.controller().change_topic(call).await.map(|_| ())
}

pub(super) fn invalid_config(message: String) -> TopicError {
    TopicError { code: ErrorCode::InvalidConfig, message }
}
