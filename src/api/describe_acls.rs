//! DescribeAcls (v1-3): the ACLs matching one filter (Kafka's `AclBindingFilter`: ANY and
//! MATCH pattern types, null name, principal and host for any), grouped by resource
//! pattern. Needs DESCRIBE on the cluster; SECURITY_DISABLED without an authorizer.

use std::collections::BTreeMap;

use bytes::Bytes;
use kafka_protocol::messages::describe_acls_response::{AclDescription, DescribeAclsResource};
use kafka_protocol::messages::{DescribeAclsRequest, DescribeAclsResponse};

use super::acl_common::{filter, refusal, FilterFields};
use super::{str_bytes, Context, Outcome};
use crate::model::ErrorCode;
use crate::security::acl::Operation;

pub fn handle(ctx: &Context, body: Bytes) -> Outcome {
    let request: DescribeAclsRequest = match ctx.decode(body) {
        Ok(r) => r,
        Err(close) => return close,
    };
    let mut response = DescribeAclsResponse::default();
    if let Some((code, message)) = refusal(ctx, Operation::Describe) {
        response.error_code = code.code();
        response.error_message = Some(str_bytes(&message));
        return ctx.reply(&response);
    }
    let filter = match filter(FilterFields {
        resource_type: request.resource_type_filter,
        name: request.resource_name_filter.as_ref(),
        pattern: request.pattern_type_filter,
        principal: request.principal_filter.as_ref(),
        host: request.host_filter.as_ref(),
        operation: request.operation,
        permission: request.permission_type,
    }) {
        Ok(filter) => filter,
        Err(message) => {
            response.error_code = ErrorCode::InvalidRequest.code();
            response.error_message = Some(str_bytes(&message));
            return ctx.reply(&response);
        }
    };
    let acls = ctx.services.security.acls.store.load();
    let mut resources: BTreeMap<(i8, String, i8), Vec<AclDescription>> = BTreeMap::new();
    for acl in acls.acls().iter().filter(|acl| filter.matches(acl)) {
        let mut description = AclDescription::default();
        description.principal = str_bytes(&acl.principal);
        description.host = str_bytes(&acl.host);
        description.operation = acl.operation as i8;
        description.permission_type = acl.permission as i8;
        let key = (acl.resource_type as i8, acl.name.clone(), acl.pattern as i8);
        resources.entry(key).or_default().push(description);
    }
    response.resources = resources
        .into_iter()
        .map(|((resource_type, name, pattern), acls)| {
            let mut resource = DescribeAclsResource::default();
            resource.resource_type = resource_type;
            resource.resource_name = str_bytes(&name);
            resource.pattern_type = pattern;
            resource.acls = acls;
            resource
        })
        .collect();
    ctx.reply(&response)
}
