//! FindCoordinator (API 10): names the coordinator of a group or a transactional id, for one
//! key (v0-3) or a batch of keys (v4+, KIP-699), as Kafka answers: this broker on a single
//! node; in a cluster the leader of the key's partition of `__consumer_offsets` or
//! `__transaction_state` as the metadata log placed them (COORDINATOR_NOT_AVAILABLE before
//! the placement is committed).

use bytes::Bytes;
use kafka_protocol::messages::find_coordinator_response::Coordinator as CoordinatorEntry;
use kafka_protocol::messages::{FindCoordinatorRequest, FindCoordinatorResponse};

use super::{str_bytes, Context, Outcome};
use crate::model::{ErrorCode, NodeId};
use crate::security::acl::{Operation, ResourceType};
use crate::shard::internal_log::{OFFSETS_TOPIC, TRANSACTION_TOPIC};

const KEY_TYPE_GROUP: i8 = 0;
const KEY_TYPE_TRANSACTION: i8 = 1;

/// Every group (and transaction) key is coordinated by this broker: a single node owns every
/// partition of `__consumer_offsets`. The shard behind it is found per request.
pub fn handle(ctx: &Context, body: Bytes) -> Outcome {
    let request: FindCoordinatorRequest = match ctx.decode(body) {
        Ok(r) => r,
        Err(close) => return close,
    };
    let known_type = matches!(request.key_type, KEY_TYPE_GROUP | KEY_TYPE_TRANSACTION);
    let (code, message) = if known_type {
        (ErrorCode::None, None)
    } else {
        (ErrorCode::InvalidRequest, Some(str_bytes("unsupported coordinator key type")))
    };
    let mut response = FindCoordinatorResponse::default();
    let keys: Vec<_> =
        if ctx.version < 4 { vec![request.key.clone()] } else { request.coordinator_keys.clone() };
    let answers: Vec<_> = keys.iter().map(|key| find(ctx, request.key_type, key, code)).collect();
    if ctx.version < 4 {
        let (code, node_id, host, port) = answers[0].clone();
        response.error_code = code.code();
        if ctx.version >= 1 {
            response.error_message = if code == ErrorCode::CoordinatorNotAvailable {
                Some(str_bytes("the cluster has not placed its coordinators yet"))
            } else {
                message
            };
        }
        response.node_id = node_id.into();
        response.host = str_bytes(&host);
        response.port = port;
    } else {
        response.coordinators = keys
            .into_iter()
            .zip(answers)
            .map(|(key, (code, node_id, host, port))| {
                let mut entry = CoordinatorEntry::default();
                entry.key = key;
                entry.error_code = code.code();
                entry.error_message = message.clone();
                entry.node_id = node_id.into();
                entry.host = str_bytes(&host);
                entry.port = port;
                entry
            })
            .collect();
    }
    ctx.reply(&response)
}

/// (error, node, host, port) of one key: this broker on a single node, the owner of the
/// key's internal partition in a cluster.
fn find(
    ctx: &Context,
    key_type: i8,
    key: &str,
    code: ErrorCode,
) -> (ErrorCode, NodeId, String, i32) {
    let none = |code| (code, NodeId::NONE, String::new(), -1);
    if code != ErrorCode::None {
        return none(code);
    }
    // Kafka: DESCRIBE on the group or the transactional id.
    if key_type == KEY_TYPE_GROUP && !ctx.group_allowed(Operation::Describe, key) {
        return none(ErrorCode::GroupAuthorizationFailed);
    }
    let txn_kind = ResourceType::TransactionalId;
    if key_type == KEY_TYPE_TRANSACTION && !ctx.allowed(Operation::Describe, txn_kind, key) {
        return none(ErrorCode::TransactionalIdAuthorizationFailed);
    }
    let config = &ctx.shard().config;
    if !ctx.cluster().clustered() {
        let listener = ctx.listener();
        let port = i32::from(listener.advertised_port);
        return (code, config.node_id, listener.advertised_host.clone(), port);
    }
    let topic = if key_type == KEY_TYPE_GROUP { OFFSETS_TOPIC } else { TRANSACTION_TOPIC };
    let view = ctx.cluster().view();
    let owner = view.as_ref().and_then(|view| {
        let node_id = view.coordinator(topic, key)?;
        // A fenced owner serves nothing: COORDINATOR_NOT_AVAILABLE, which clients retry.
        let broker = view.live_broker(node_id)?;
        Some((ErrorCode::None, node_id, broker.host.clone(), i32::from(broker.port)))
    });
    owner.unwrap_or_else(|| none(ErrorCode::CoordinatorNotAvailable))
}
