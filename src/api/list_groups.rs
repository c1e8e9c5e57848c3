//! ListGroups (API 16): every shard's groups, sorted by id, filtered by state (v4+) and by
//! type (v5+, KIP-848: all groups here are classic), as Kafka lists them.

use bytes::Bytes;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{GroupId, ListGroupsRequest, ListGroupsResponse};

use super::{str_bytes, Context, Outcome};
use crate::group::coordinator::{GroupRequest, GroupResponse};

pub async fn handle(ctx: &Context, body: Bytes) -> Outcome {
    let request: ListGroupsRequest = match ctx.decode(body) {
        Ok(r) => r,
        Err(close) => return close,
    };
    let states: Vec<String> = request.states_filter.iter().map(|s| s.trim().to_string()).collect();
    let classic_wanted = request.types_filter.is_empty()
        || request.types_filter.iter().any(|t| t.trim().eq_ignore_ascii_case("classic"));
    let mut listed = Vec::new();
    if classic_wanted {
        let answers = ctx.groups().broadcast(|| GroupRequest::List { states: states.clone() });
        for answer in answers.await {
            if let Some(GroupResponse::List(groups)) = answer {
                listed.extend(groups);
            }
        }
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
                group.group_state = str_bytes(g.state.name());
            }
            if ctx.version >= 5 {
                group.group_type = str_bytes("classic");
            }
            group
        })
        .collect();
    ctx.reply(&response)
}
