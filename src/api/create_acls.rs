//! CreateAcls (v1-3, Kafka 4's range): each creation validated as Kafka's controller does
//! (INVALID_REQUEST with its message), the valid ones written to the ACL file in one go
//! (`security::acl::AclStore`), or clustered each a record on the metadata log that every
//! node applies (`controller::Controller::create_acls`). Needs ALTER on the cluster;
//! without `--authorizer acl` every creation is SECURITY_DISABLED, as Kafka answers without
//! an authorizer.

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
    let count = valid.len();
    let mut written = match valid.is_empty() {
        true => Vec::new().into_iter(),
        false => ctx.services.controller.create_acls(valid).await.into_iter(),
    };
    let created = written.as_slice().iter().filter(|w| w.is_ok()).count();
    if created > 0 {
        tracing::info!(principal = ctx.session.principal(), count = created, "ACLs created");
    }
    if let Some(Err(e)) = written.as_slice().iter().find(|w| w.is_err()) {
        tracing::error!(failed = count - created, "CreateAcls: {}", e.message);
    }
    response.results = checked
        .into_iter()
        .map(|c| match c {
            Err(message) => result(ErrorCode::InvalidRequest, Some(message)),
            Ok(_) => match written.next() {
                Some(Ok(())) => result(ErrorCode::None, None),
                Some(Err(e)) => result(e.code, Some(e.message)),
                None => unreachable!("one outcome per valid creation"),
            },
        })
        .collect();
    ctx.reply(&response)
}
