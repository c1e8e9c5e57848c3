//! What the ACL APIs (CreateAcls, DescribeAcls, DeleteAcls) share: the answer without an
//! authorizer or without the cluster permission, and the filter fields off the wire.

use kafka_protocol::protocol::StrBytes;

use super::Context;
use crate::model::ErrorCode;
use crate::security::acl::{AclFilter, Operation, WireAcl};

/// Why the request is refused as a whole: no authorizer (SECURITY_DISABLED, Kafka's answer
/// without one), or the principal lacks `operation` on the cluster.
pub fn refusal(ctx: &Context, operation: Operation) -> Option<(ErrorCode, String)> {
    if !ctx.services.security.authorizer() {
        return Some((ErrorCode::SecurityDisabled, "No Authorizer is configured.".into()));
    }
    if !ctx.cluster_allowed(operation) {
        return Some((
            ErrorCode::ClusterAuthorizationFailed,
            "Cluster authorization failed.".into(),
        ));
    }
    None
}

pub fn wire_text(text: &StrBytes) -> String {
    text.as_str().to_string()
}

/// A filter's fields as DescribeAcls and DeleteAcls carry them.
pub struct FilterFields<'a> {
    pub resource_type: i8,
    pub name: Option<&'a StrBytes>,
    pub pattern: i8,
    pub principal: Option<&'a StrBytes>,
    pub host: Option<&'a StrBytes>,
    pub operation: i8,
    pub permission: i8,
}

pub fn filter(fields: FilterFields<'_>) -> Result<AclFilter, String> {
    AclFilter::from_wire(WireAcl {
        resource_type: fields.resource_type,
        name: fields.name.map(wire_text),
        pattern: fields.pattern,
        principal: fields.principal.map(wire_text),
        host: fields.host.map(wire_text),
        operation: fields.operation,
        permission: fields.permission,
    })
}
