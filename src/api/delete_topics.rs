//! DeleteTopics (API 20): topics named by name or (v6+) by topic id are deleted by the
//! controller, which removes them from every shard before answering, as Kafka's controller
//! (clustered: through the metadata log, from every node).

use bytes::Bytes;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse, TopicName};

use super::{str_bytes, Context, Outcome};
use crate::controller::ControllerRequest;
use crate::model::ErrorCode;
use crate::security::acl::Operation;

pub async fn handle(ctx: &Context, body: Bytes) -> Outcome {
    let request: DeleteTopicsRequest = match ctx.decode(body) {
        Ok(r) => r,
        Err(close) => return close,
    };
    // v6+ names topics by name or id in `topics`; older versions list names.
    let mut targets: Vec<(Option<String>, uuid::Uuid)> =
        request.topic_names.iter().map(|n| (Some(n.0.to_string()), uuid::Uuid::nil())).collect();
    targets.extend(
        request.topics.iter().map(|t| (t.name.as_ref().map(|n| n.0.to_string()), t.topic_id)),
    );
    let mut response = DeleteTopicsResponse::default();
    for (name, id) in targets {
        let mut result = DeletableTopicResult::default();
        result.topic_id = id;
        let resolved = match &name {
            Some(name) => Some(name.clone()),
            None => ctx.shard().catalog.borrow().name_of(id.as_bytes()).map(|n| n.to_string()),
        };
        result.name = name.as_ref().map(|n| TopicName(str_bytes(n)));
        let Some(resolved) = resolved else {
            result.error_code = ErrorCode::UnknownTopicId.code();
            response.responses.push(result);
            continue;
        };
        if !ctx.topic_allowed(Operation::Delete, &resolved) {
            result.error_code = ErrorCode::TopicAuthorizationFailed.code();
            response.responses.push(result);
            continue;
        }
        let delete = ControllerRequest::DeleteTopic {
            name: resolved.clone(),
            timeout_ms: request.timeout_ms,
        };
        match ctx.controller().change_topic(delete).await {
            Ok(meta) => {
                result.topic_id = uuid::Uuid::from_bytes(meta.id);
                result.name = Some(TopicName(str_bytes(&resolved)));
            }
            Err(e) => {
                result.error_code = e.code.code();
                result.error_message = Some(str_bytes(&e.message));
            }
        }
        response.responses.push(result);
    }
    ctx.reply(&response)
}
