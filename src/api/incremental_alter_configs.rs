//! IncrementalAlterConfigs (API 44, KIP-339): sets, deletes, appends to or subtracts from
//! single configs. A topic's new overrides go to the controller as for AlterConfigs; a
//! broker's or group's operations apply to its stored dynamic configs
//! (`config_common::alter_dynamic`).

use bytes::Bytes;
use kafka_protocol::messages::incremental_alter_configs_response as incremental;
use kafka_protocol::messages::{IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse};

use super::config_common::{
    alter, alter_dynamic, check_resource, config_denied, invalid_config, invalid_request,
    resource_result, Change, RESOURCE_TOPIC,
};
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
        let resource_type = resource.resource_type;
        let ops: Result<Vec<_>, TopicError> = resource
            .configs
            .iter()
            .map(|config| {
                let op = ConfigOp::from_code(config.config_operation).ok_or_else(|| {
                    let message = format!(
                        "unknown operation {} for config {}",
                        config.config_operation, config.name
                    );
                    if resource_type == RESOURCE_TOPIC {
                        invalid_config(message)
                    } else {
                        invalid_request(message)
                    }
                })?;
                Ok((config.name.to_string(), op, config.value.as_ref().map(|v| v.to_string())))
            })
            .collect();
        let ops = ops.and_then(|ops| {
            let mut seen = std::collections::BTreeSet::new();
            let twice = ops.iter().any(|(name, _, _)| !seen.insert(name.clone()));
            match twice && resource_type != RESOURCE_TOPIC {
                true => Err(invalid_request("Error due to duplicate config keys".into())),
                false => Ok(ops),
            }
        });
        let denied = config_denied(ctx, resource_type, &name, Operation::AlterConfigs);
        let checked = denied.map_or_else(|| check_resource(resource_type), Err);
        let outcome = match (checked, ops) {
            (Err(e), _) | (Ok(()), Err(e)) => Err(e),
            (Ok(()), Ok(ops)) if resource_type == RESOURCE_TOPIC => {
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
            (Ok(()), Ok(ops)) => {
                let change = Change::Ops(ops);
                alter_dynamic(ctx, resource_type, &name, change, request.validate_only).await
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
