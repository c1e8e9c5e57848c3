//! What the config handlers share: Kafka's resource types and config sources, and for
//! AlterConfigs and IncrementalAlterConfigs the check of the resource, the entry of the
//! response and the call to the controller, which validates, persists and applies the new
//! overrides on every shard before answering.
//!
//! Broker configs are static in Spate (command line or file): altering one is refused with
//! INVALID_REQUEST and says so.

use std::collections::BTreeMap;

use super::Context;
use crate::controller::{ControllerRequest, TopicError};
use crate::model::ErrorCode;
use crate::security::acl::Operation;

/// Resource types (Kafka's `ConfigResource.Type`).
pub(super) const RESOURCE_TOPIC: i8 = 2;
pub(super) const RESOURCE_BROKER: i8 = 4;
/// Config sources, as DescribeConfigs and CreateTopics (v5+) report them (Kafka's
/// `ConfigSource`).
pub(super) const SOURCE_TOPIC: i8 = 1;
pub(super) const SOURCE_STATIC_BROKER: i8 = 4;
pub(super) const SOURCE_DEFAULT: i8 = 5;

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
/// resource, as Kafka answers it: a topic needs it on the topic, a broker on the cluster.
pub(super) fn config_denied(
    ctx: &Context,
    resource_type: i8,
    name: &str,
    operation: Operation,
) -> Option<TopicError> {
    let (allowed, code) = match resource_type {
        RESOURCE_TOPIC => (ctx.topic_allowed(operation, name), ErrorCode::TopicAuthorizationFailed),
        RESOURCE_BROKER => (ctx.cluster_allowed(operation), ErrorCode::ClusterAuthorizationFailed),
        _ => (true, ErrorCode::None),
    };
    (!allowed).then(|| TopicError { code, message: "Authorization failed.".into() })
}

pub(super) fn check_resource(resource_type: i8) -> Result<(), TopicError> {
    match resource_type {
        RESOURCE_TOPIC => Ok(()),
        RESOURCE_BROKER => Err(TopicError {
            code: ErrorCode::InvalidRequest,
            message: "broker configs are static in Spate; set them on the command line or in \
                      the config file and restart"
                .into(),
        }),
        other => Err(TopicError {
            code: ErrorCode::InvalidRequest,
            message: format!("resource type {other} has no alterable configs"),
        }),
    }
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
