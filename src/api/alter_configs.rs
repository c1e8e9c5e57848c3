//! AlterConfigs (API 33): replaces all of a resource's configs with the request's, as Kafka
//! does. A topic's overrides: the controller applies them on every shard before answering, so
//! logs act on the new retention, segment and size limits at once. A broker's or group's
//! dynamic configs (`config_common::alter_dynamic`): checked here, stored and applied by the
//! controller.

use std::collections::BTreeMap;

use bytes::Bytes;
use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{AlterConfigsRequest, AlterConfigsResponse};

use super::config_common::{
    alter, alter_dynamic, check_resource, config_denied, invalid_config, invalid_request,
    resource_result, Change, RESOURCE_TOPIC,
};
use super::{Context, Outcome};
use crate::controller::TopicError;
use crate::security::acl::Operation;

pub async fn handle(ctx: &Context, body: Bytes) -> Outcome {
    let request: AlterConfigsRequest = match ctx.decode(body) {
        Ok(r) => r,
        Err(close) => return close,
    };
    let mut response = AlterConfigsResponse::default();
    for resource in request.resources {
        let name = resource.resource_name.to_string();
        let resource_type = resource.resource_type;
        let denied = config_denied(ctx, resource_type, &name, Operation::AlterConfigs);
        let entries: Vec<(String, Option<String>)> = resource
            .configs
            .iter()
            .map(|config| (config.name.to_string(), config.value.as_ref().map(|v| v.to_string())))
            .collect();
        let outcome = match denied.map_or_else(|| check_resource(resource_type), Err) {
            Err(e) => Err(e),
            Ok(()) if resource_type == RESOURCE_TOPIC => {
                let mut overrides = BTreeMap::new();
                let mut duplicate = None;
                for (key, value) in entries {
                    if overrides.insert(key.clone(), value.unwrap_or_default()).is_some() {
                        duplicate = Some(key);
                    }
                }
                match duplicate {
                    Some(key) => Err(invalid_config(format!("config {key} appears twice"))),
                    None => alter(ctx, name, overrides, request.validate_only).await,
                }
            }
            Ok(()) => match whole_set(entries) {
                Err(e) => Err(e),
                Ok(configs) => {
                    let change = Change::Replace(configs);
                    alter_dynamic(ctx, resource_type, &name, change, request.validate_only).await
                }
            },
        };
        response.responses.push(resource_result!(AlterConfigsResourceResponse, resource, outcome));
    }
    ctx.reply(&response)
}

/// A broker's or group's new set, refused as Kafka's `ConfigAdminManager.preprocess` does:
/// a name twice, or a null value.
fn whole_set(
    entries: Vec<(String, Option<String>)>,
) -> Result<BTreeMap<String, String>, TopicError> {
    let mut configs = BTreeMap::new();
    let mut nulls = Vec::new();
    for (key, value) in entries {
        match value {
            None => nulls.push(key),
            Some(value) => {
                if configs.insert(key, value).is_some() {
                    return Err(invalid_request("Error due to duplicate config keys".into()));
                }
            }
        }
    }
    if !nulls.is_empty() {
        return Err(invalid_request(format!(
            "Null value not supported for : {}",
            nulls.join(", ")
        )));
    }
    Ok(configs)
}
