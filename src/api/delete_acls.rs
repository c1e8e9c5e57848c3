//! DeleteAcls (v1-3): every ACL matching any filter is removed in one write of the ACL file;
//! each filter's result lists what it matched (an ACL matched by two filters under both, as
//! Kafka reports it). An invalid filter is INVALID_REQUEST for that filter alone. Needs ALTER
//! on the cluster; SECURITY_DISABLED without an authorizer. Clustered, each ACL matched is a
//! removal record on the metadata log (`controller::Controller::delete_acls`).

use bytes::Bytes;
use kafka_protocol::messages::delete_acls_response::{
    DeleteAclsFilterResult, DeleteAclsMatchingAcl,
};
use kafka_protocol::messages::{DeleteAclsRequest, DeleteAclsResponse};

use super::acl_common::{filter, refusal, FilterFields};
use super::{str_bytes, Context, Outcome};
use crate::model::ErrorCode;
use crate::security::acl::{AclFilter, Operation};

pub async fn handle(ctx: &Context, body: Bytes) -> Outcome {
    let request: DeleteAclsRequest = match ctx.decode(body) {
        Ok(r) => r,
        Err(close) => return close,
    };
    let failed = |code: ErrorCode, message: &str| {
        let mut result = DeleteAclsFilterResult::default();
        result.error_code = code.code();
        result.error_message = Some(str_bytes(message));
        result
    };
    let mut response = DeleteAclsResponse::default();
    if let Some((code, message)) = refusal(ctx, Operation::Alter) {
        response.filter_results = request.filters.iter().map(|_| failed(code, &message)).collect();
        return ctx.reply(&response);
    }
    let checked: Vec<Result<AclFilter, String>> = request
        .filters
        .iter()
        .map(|f| {
            filter(FilterFields {
                resource_type: f.resource_type_filter,
                name: f.resource_name_filter.as_ref(),
                pattern: f.pattern_type_filter,
                principal: f.principal_filter.as_ref(),
                host: f.host_filter.as_ref(),
                operation: f.operation,
                permission: f.permission_type,
            })
        })
        .collect();
    let valid: Vec<AclFilter> = checked.iter().filter_map(|c| c.as_ref().ok()).cloned().collect();
    let removed = match valid.is_empty() {
        true => Ok(Vec::new()),
        false => ctx.services.controller.delete_acls(valid).await,
    };
    let mut removed = match removed {
        Ok(removed) => {
            let count: usize = removed.iter().map(Vec::len).sum();
            if count > 0 {
                tracing::info!(principal = ctx.session.principal(), count, "ACLs deleted");
            }
            removed.into_iter()
        }
        Err(error) => {
            tracing::error!("DeleteAcls: {}", error.message);
            response.filter_results = checked
                .iter()
                .map(|c| match c {
                    Err(invalid) => failed(ErrorCode::InvalidRequest, invalid),
                    Ok(_) => failed(error.code, &error.message),
                })
                .collect();
            return ctx.reply(&response);
        }
    };
    response.filter_results = checked
        .iter()
        .map(|c| match c {
            Err(invalid) => failed(ErrorCode::InvalidRequest, invalid),
            Ok(_) => {
                let mut result = DeleteAclsFilterResult::default();
                result.matching_acls = removed
                    .next()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|acl| {
                        let mut matching = DeleteAclsMatchingAcl::default();
                        matching.resource_type = acl.resource_type as i8;
                        matching.resource_name = str_bytes(&acl.name);
                        matching.pattern_type = acl.pattern as i8;
                        matching.principal = str_bytes(&acl.principal);
                        matching.host = str_bytes(&acl.host);
                        matching.operation = acl.operation as i8;
                        matching.permission_type = acl.permission as i8;
                        matching
                    })
                    .collect();
                result
            }
        })
        .collect();
    ctx.reply(&response)
}
