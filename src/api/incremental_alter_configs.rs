//! IncrementalAlterConfigs (API 44, KIP-339): sets, deletes, appends to or subtracts from
//! single topic configs, then the controller applies the result as for AlterConfigs.

use bytes::Bytes;
use kafka_protocol::messages::incremental_alter_configs_response as incremental;
use kafka_protocol::messages::{IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse};

use super::config_common::{alter, check_resource, config_denied, invalid_config, resource_result};
use super::{Context, Outcome};
use crate::controller::TopicError;
use crate::model::topic::{apply_config_ops, ConfigOp};
use crate::model::ErrorCode;
use crate::security::acl::Operation;

pub async fn handle(ctx: &Context, body: Bytes) -> Outcome {
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
        let denied = config_denied(ctx, resource.resource_type, &name, Operation::AlterConfigs);
        let checked = denied.map_or_else(|| check_resource(resource.resource_type), Err);
        let outcome = match (checked, ops) {
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

fn unknown_topic(name: &str) -> TopicError {
    TopicError { code: ErrorCode::UnknownTopicOrPartition, message: format!("no topic {name}") }
}
