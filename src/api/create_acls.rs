//! CreateAcls (v1-3, Kafka 4's range): each creation validated as Kafka's controller does
//! (INVALID_REQUEST with its message), the valid ones written to the ACL file in one go
//! (`security::acl::AclStore`). Needs ALTER on the cluster; without `--authorizer acl` every
//! creation is SECURITY_DISABLED, as Kafka answers without an authorizer.

use bytes::Bytes;
use kafka_protocol::messages::create_acls_response::AclCreationResult;
use kafka_protocol::messages::{CreateAclsRequest, CreateAclsResponse};

use super::acl_common::{refusal, wire_text};
use super::{str_bytes, Context, Outcome};
use crate::model::ErrorCode;
use crate::security::acl::{AclBinding, Operation, WireAcl};

pub async fn handle(ctx: &Context, body: Bytes) -> Outcome {
    let request: CreateAclsRequest = match ctx.decode(body) {
        Ok(r) => r,
        Err(close) => return close,
    };
    let result = |code: ErrorCode, message: Option<String>| {
        let mut result = AclCreationResult::default();
        result.error_code = code.code();
        result.error_message = message.map(|m| str_bytes(&m));
        result
    };
    let mut response = CreateAclsResponse::default();
    if let Some((code, message)) = refusal(ctx, Operation::Alter) {
        response.results =
            request.creations.iter().map(|_| result(code, Some(message.clone()))).collect();
        return ctx.reply(&response);
    }
    let checked: Vec<Result<AclBinding, String>> = request
        .creations
        .into_iter()
        .map(|c| {
            AclBinding::from_wire(WireAcl {
                resource_type: c.resource_type,
                name: Some(wire_text(&c.resource_name)),
                pattern: c.resource_pattern_type,
                principal: Some(wire_text(&c.principal)),
                host: Some(wire_text(&c.host)),
                operation: c.operation,
                permission: c.permission_type,
            })
        })
        .collect();
    let valid: Vec<AclBinding> = checked.iter().filter_map(|c| c.as_ref().ok()).cloned().collect();
    let store = ctx.services.security.acls.store.clone();
    let count = valid.len();
    let written = match valid.is_empty() {
        true => Ok(()),
        false => {
            glommio::executor().spawn_blocking(move || store.create(&valid)).await.map_err(|e| e.0)
        }
    };
    match &written {
        Ok(()) if count > 0 => {
            tracing::info!(principal = ctx.session.principal(), count, "ACLs created")
        }
        Ok(()) => {}
        Err(message) => tracing::error!("CreateAcls: {message}"),
    }
    response.results = checked
        .into_iter()
        .map(|c| match (c, &written) {
            (Err(message), _) => result(ErrorCode::InvalidRequest, Some(message)),
            (Ok(_), Ok(())) => result(ErrorCode::None, None),
            (Ok(_), Err(message)) => result(ErrorCode::UnknownServerError, Some(message.clone())),
        })
        .collect();
    ctx.reply(&response)
}
