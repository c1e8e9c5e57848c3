//! FindCoordinator (API 10): names this broker as the coordinator of a group or a
//! transactional id, for one key (v0-3) or a batch of keys (v4+, KIP-699), as Kafka answers.

use bytes::Bytes;
use kafka_protocol::messages::find_coordinator_response::Coordinator as CoordinatorEntry;
use kafka_protocol::messages::{FindCoordinatorRequest, FindCoordinatorResponse};

use super::{str_bytes, Context, Outcome};
use crate::model::{ErrorCode, NodeId};

const KEY_TYPE_GROUP: i8 = 0;
const KEY_TYPE_TRANSACTION: i8 = 1;

/// Every group (and transaction) key is coordinated by this broker: a single node owns every
/// partition of `__consumer_offsets`. The shard behind it is found per request.
pub fn handle(ctx: &Context, body: Bytes) -> Outcome {
    let request: FindCoordinatorRequest = match ctx.decode(body) {
        Ok(r) => r,
        Err(close) => return close,
    };
    let config = &ctx.shard().config;
    let known_type = matches!(request.key_type, KEY_TYPE_GROUP | KEY_TYPE_TRANSACTION);
    let (code, message) = if known_type {
        (ErrorCode::None, None)
    } else {
        (ErrorCode::InvalidRequest, Some(str_bytes("unsupported coordinator key type")))
    };
    let mut response = FindCoordinatorResponse::default();
    if ctx.version < 4 {
        response.error_code = code.code();
        if ctx.version >= 1 {
            response.error_message = message;
        }
        if code == ErrorCode::None {
            response.node_id = config.node_id.into();
            response.host = str_bytes(&config.advertised_host);
            response.port = i32::from(config.advertised_port);
        } else {
            response.node_id = NodeId::NONE.into();
            response.port = -1;
        }
    } else {
        response.coordinators = request
            .coordinator_keys
            .iter()
            .map(|key| {
                let mut entry = CoordinatorEntry::default();
                entry.key = key.clone();
                entry.error_code = code.code();
                entry.error_message = message.clone();
                if code == ErrorCode::None {
                    entry.node_id = config.node_id.into();
                    entry.host = str_bytes(&config.advertised_host);
                    entry.port = i32::from(config.advertised_port);
                } else {
                    entry.node_id = NodeId::NONE.into();
                    entry.port = -1;
                }
                entry
            })
            .collect();
    }
    ctx.reply(&response)
}
