//! AlterConfigs (API 33): replaces all of a topic's config overrides with the request's, as
//! Kafka does; the controller applies them on every shard before answering, so logs act on the
//! new retention, segment and size limits at once.

use std::collections::BTreeMap;

use bytes::Bytes;
use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{AlterConfigsRequest, AlterConfigsResponse};

use super::config_common::{alter, check_resource, config_denied, invalid_config, resource_result};
use super::{Context, Outcome};
use crate::security::acl::Operation;

pub async fn handle(ctx: &Context, body: Bytes) -> Outcome {
    let request: AlterConfigsRequest = match ctx.decode(body) {
        Ok(r) => r,
        Err(close) => return close,
    };
    let mut response = AlterConfigsResponse::default();
    for resource in request.resources {
        let name = resource.resource_name.to_string();
        let denied = config_denied(ctx, resource.resource_type, &name, Operation::AlterConfigs);
        let outcome = match denied.map_or_else(|| check_resource(resource.resource_type), Err) {
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
