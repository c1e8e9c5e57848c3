//! ListGroups (API 16): every shard's groups, sorted by id, filtered by state (v4+) and by
//! type (v5+: "classic" or "consumer", KIP-848), as Kafka lists them.

use bytes::Bytes;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{GroupId, ListGroupsRequest, ListGroupsResponse};

use super::{str_bytes, Context, Outcome};
use crate::group::coordinator::{GroupRequest, GroupResponse};
use crate::security::acl::Operation;

pub async fn handle(ctx: &Context, body: Bytes) -> Outcome {
    let request: ListGroupsRequest = match ctx.decode(body) {
        Ok(r) => r,
        Err(close) => return close,
    };
    let states: Vec<String> = request.states_filter.iter().map(|s| s.trim().to_string()).collect();
    let types: Vec<String> = request.types_filter.iter().map(|t| t.trim().to_string()).collect();
    let mut listed = Vec::new();
    let answers = ctx.groups().broadcast(|| GroupRequest::List { states: states.clone() });
    for answer in answers.await {
        if let Some(GroupResponse::List(groups)) = answer {
            listed.extend(groups.into_iter().filter(|g| {
                types.is_empty() || types.iter().any(|t| t.eq_ignore_ascii_case(g.group_type))
            }));
        }
    }
    // Kafka: DESCRIBE on the cluster lists every group, else those the principal may
    // describe.
    if !ctx.cluster_allowed(Operation::Describe) {
        listed.retain(|g| ctx.group_allowed(Operation::Describe, &g.group_id));
    }
    listed.sort_by(|a, b| a.group_id.cmp(&b.group_id));
    let mut response = ListGroupsResponse::default();
    response.groups = listed
        .into_iter()
        .map(|g| {
            let mut group = ListedGroup::default();
            group.group_id = GroupId(str_bytes(&g.group_id));
            group.protocol_type = str_bytes(&g.protocol_type);
            if ctx.version >= 4 {
                group.group_state = str_bytes(g.state);
            }
            if ctx.version >= 5 {
                group.group_type = str_bytes(g.group_type);
            }
            group
        })
        .collect();
    ctx.reply(&response)
}
