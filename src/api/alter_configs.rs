//! AlterConfigs and IncrementalAlterConfigs for topics. The handler turns the request into
//! the topic's new set of overrides (AlterConfigs replaces them all, as Kafka does; the
//! incremental API sets, deletes, appends to or subtracts from single configs) and the
//! controller validates, persists and applies it on every shard before answering, so logs
//! act on the new retention, segment and size limits at once.
//!
//! Broker configs are static in Spate (command line or file): altering one is refused with
//! INVALID_REQUEST and says so.

use std::collections::BTreeMap;

use bytes::Bytes;
use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::incremental_alter_configs_response as incremental;
use kafka_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, IncrementalAlterConfigsRequest,
    IncrementalAlterConfigsResponse,
};

use super::admin::{RESOURCE_BROKER, RESOURCE_TOPIC};
use super::{str_bytes, Context, Outcome};
use crate::controller::{ControllerRequest, TopicError};
use crate::model::topic::{apply_config_ops, ConfigOp};
use crate::protocol::errors;

/// A resource's entry in either response: its type and name, and the error if `outcome` is
/// one. AlterConfigs and IncrementalAlterConfigs answer with two distinct types that have the
/// same fields, so this is a macro rather than a function; it stands above its callers because
/// a macro must be defined before it is used.
macro_rules! resource_result {
    ($result:ty, $resource:expr, $outcome:expr) => {{
        let mut result = <$result>::default();
        result.resource_type = $resource.resource_type;
        result.resource_name = $resource.resource_name;
        if let Err(e) = $outcome {
            result.error_code = e.code;
            result.error_message = Some(str_bytes(&e.message));
        }
        result
    }};
}

pub async fn alter_configs(ctx: &Context, body: Bytes) -> Outcome {
    let request: AlterConfigsRequest = match ctx.decode(body) {
        Ok(r) => r,
        Err(close) => return close,
    };
    let mut response = AlterConfigsResponse::default();
    for resource in request.resources {
        let name = resource.resource_name.to_string();
        let outcome = match check_resource(resource.resource_type) {
            Err(e) => Err(e),
            Ok(()) => {
                let mut overrides = BTreeMap::new();
                let mut duplicate = None;
                for config in resource.configs {
                    let key = config.name.to_string();
                    let value = config.value.map(|v| v.to_string()).unwrap_or_default();
                    if overrides.insert(key.clone(), value).is_some() {
                        duplicate = Some(key);
                    }
                }
                match duplicate {
                    Some(key) => Err(invalid_config(format!("config {key} appears twice"))),
                    None => alter(ctx, name, overrides, request.validate_only).await,
                }
            }
        };
        response.responses.push(resource_result!(AlterConfigsResourceResponse, resource, outcome));
    }
    ctx.reply(&response)
}

pub async fn incremental_alter_configs(ctx: &Context, body: Bytes) -> Outcome {
    let request: IncrementalAlterConfigsRequest = match ctx.decode(body) {
        Ok(r) => r,
        Err(close) => return close,
    };
    let mut response = IncrementalAlterConfigsResponse::default();
    for resource in request.resources {
        let name = resource.resource_name.to_string();
        let ops: Result<Vec<_>, TopicError> = resource
            .configs
            .iter()
            .map(|config| {
                let op = ConfigOp::from_code(config.config_operation).ok_or_else(|| {
                    invalid_config(format!(
                        "unknown operation {} for config {}",
                        config.config_operation, config.name
                    ))
                })?;
                Ok((config.name.to_string(), op, config.value.as_ref().map(|v| v.to_string())))
            })
            .collect();
        let outcome = match (check_resource(resource.resource_type), ops) {
            (Err(e), _) | (Ok(()), Err(e)) => Err(e),
            (Ok(()), Ok(ops)) => {
                let meta = ctx.shard().catalog.borrow().get(&name).cloned();
                match meta {
                    None => Err(unknown_topic(&name)),
                    Some(meta) => {
                        let effective = |config: &str| meta.config.value_of(config);
                        match apply_config_ops(&meta.overrides, &ops, effective) {
                            Err(message) => Err(invalid_config(message)),
                            Ok(overrides) => {
                                alter(ctx, name, overrides, request.validate_only).await
                            }
                        }
                    }
                }
            }
        };
        response.responses.push(resource_result!(
            incremental::AlterConfigsResourceResponse,
            resource,
            outcome
        ));
    }
    ctx.reply(&response)
}

fn check_resource(resource_type: i8) -> Result<(), TopicError> {
    match resource_type {
        RESOURCE_TOPIC => Ok(()),
        RESOURCE_BROKER => Err(TopicError {
            code: errors::INVALID_REQUEST,
            message: "broker configs are static in Spate; set them on the command line or in \
                      the config file and restart"
                .into(),
        }),
        other => Err(TopicError {
            code: errors::INVALID_REQUEST,
            message: format!("resource type {other} has no alterable configs"),
        }),
    }
}

async fn alter(
    ctx: &Context,
    name: String,
    overrides: BTreeMap<String, String>,
    validate_only: bool,
) -> Result<(), TopicError> {
    let call = ControllerRequest::AlterTopicConfig { name, overrides, validate_only };
    ctx.controller().change_topic(call).await.map(|_| ())
}

fn invalid_config(message: String) -> TopicError {
    TopicError { code: errors::INVALID_CONFIG, message }
}

fn unknown_topic(name: &str) -> TopicError {
    TopicError { code: errors::UNKNOWN_TOPIC_OR_PARTITION, message: format!("no topic {name}") }
}
