//! CreatePartitions (API 37): the controller adds partitions to a topic and opens them on every
//! shard before answering (clustered: through the metadata log); explicit assignments must
//! name only this broker (clustered: distinct registered brokers per new partition).

use bytes::Bytes;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};

use super::{str_bytes, Context, Outcome};
use crate::controller::ControllerRequest;
use crate::model::{ErrorCode, NodeId};
use crate::security::acl::Operation;

pub async fn handle(ctx: &Context, body: Bytes) -> Outcome {
    let request: CreatePartitionsRequest = match ctx.decode(body) {
        Ok(r) => r,
        Err(close) => return close,
    };
    let mut response = CreatePartitionsResponse::default();
    for topic in request.topics {
        let mut result = CreatePartitionsTopicResult::default();
        result.name = topic.name.clone();
        if !ctx.topic_allowed(Operation::Alter, &topic.name.0) {
            result.error_code = ErrorCode::TopicAuthorizationFailed.code();
            result.error_message = Some(str_bytes("Authorization failed."));
            response.results.push(result);
            continue;
        }
        let assignments = topic.assignments.as_ref().filter(|a| !a.is_empty());
        let node_id = ctx.shard().config.node_id;
        let clustered = ctx.cluster().clustered();
        let foreign = assignments.and_then(|a| {
            a.iter().position(|a| {
                let mut ids = a.broker_ids.clone();
                ids.sort_unstable();
                ids.dedup();
                ids.is_empty()
                    || ids.len() != a.broker_ids.len()
                    || (!clustered && (ids.len() != 1 || NodeId::from(ids[0]) != node_id))
            })
        });
        if let Some(index) = foreign {
            result.error_code = ErrorCode::InvalidReplicaAssignment.code();
            let message = if clustered {
                format!("new partition {index} must be assigned to distinct brokers")
            } else {
                format!("new partition {index} must be assigned to broker {node_id} only")
            };
            result.error_message = Some(str_bytes(&message));
            response.results.push(result);
            continue;
        }
        let call = ControllerRequest::CreatePartitions {
            name: topic.name.0.to_string(),
            count: topic.count,
            assignments: assignments.map(|a| {
                a.iter().map(|a| a.broker_ids.iter().map(|id| (*id).into()).collect()).collect()
            }),
            validate_only: request.validate_only,
            timeout_ms: request.timeout_ms,
        };
        if let Err(e) = ctx.controller().change_topic(call).await {
            result.error_code = e.code.code();
            result.error_message = Some(str_bytes(&e.message));
        }
        response.results.push(result);
    }
    ctx.reply(&response)
}
