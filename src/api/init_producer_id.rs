//! InitProducerId (API 22): gives an idempotent producer its producer id and epoch.
//!
//! - No producer id in the request: a fresh id from the controller (shard 0), epoch 0.
//! - A producer id and epoch (v3+, KIP-360, sent by a producer that must reset its
//!   sequences): the same id with the epoch bumped, which fences the older epoch in every
//!   partition (INVALID_PRODUCER_EPOCH). When the epoch is exhausted, a fresh id, epoch 0.
//!   Kafka's transaction coordinator answers an idempotent (non-transactional) producer
//!   with a fresh id either way; both are valid for clients, and a bump keeps the number
//!   of producer ids the partitions must remember down. The bump needs no stored state:
//!   the partitions hold the epochs, so it is answered on the connection's shard.
//! - A transactional id: the transaction coordinator of the shard that owns it answers
//!   (`txn::coordinator`): a fresh id at epoch 0 the first time, the epoch bumped on every
//!   later call (fencing the previous producer), an open transaction aborted first. An empty
//!   transactional id is INVALID_REQUEST, as in Kafka, and so is one longer than the
//!   transaction log's strings hold (32767 bytes).

use bytes::Bytes;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse};

use super::txn_common::{call, fenced};
use super::{Context, Outcome};
use crate::model::records::SHORT_STRING_BYTES_MAX;
use crate::model::{ErrorCode, ProducerEpoch, ProducerId};
use crate::security::acl::{Operation, ResourceType};
use crate::txn::coordinator::{TxnRequest, TxnResponse};
use crate::txn::state::Producer;

pub async fn handle(ctx: &Context, body: Bytes) -> Outcome {
    let request: InitProducerIdRequest = match ctx.decode(body) {
        Ok(r) => r,
        Err(close) => return close,
    };
    let transactional_id = request.transactional_id.as_ref().map(|id| &*id.0);
    let producer = Producer {
        producer_id: request.producer_id.into(),
        producer_epoch: ProducerEpoch(request.producer_epoch),
    };
    // Kafka: a transactional id needs WRITE on it; an idempotent producer IDEMPOTENT_WRITE
    // on the cluster or WRITE on some topic (Kafka 3+'s relaxation).
    let plan = match transactional_id {
        Some(id) if !ctx.txn_allowed(id) => {
            Plan::Refuse(ErrorCode::TransactionalIdAuthorizationFailed)
        }
        None if !ctx.cluster_allowed(Operation::IdempotentWrite)
            && !ctx.services.security.authorize_any(
                &ctx.session,
                Operation::Write,
                ResourceType::Topic,
            ) =>
        {
            Plan::Refuse(ErrorCode::ClusterAuthorizationFailed)
        }
        _ => plan(transactional_id, producer),
    };
    let answer = match plan {
        Plan::Refuse(code) => Err(code),
        Plan::Transactional => {
            let id = transactional_id.unwrap_or_default();
            let timeout_ms = request.transaction_timeout_ms;
            init_transactional(ctx, id, timeout_ms, producer)
                .await
                .map(|p| (p.producer_id, p.producer_epoch))
        }
        Plan::Bump { producer_id, producer_epoch } => Ok((producer_id, producer_epoch)),
        Plan::Allocate => {
            let allocated = ctx.controller().producer_id().await;
            allocated.map(|producer_id| (producer_id, ProducerEpoch::FIRST))
        }
    };
    let mut response = InitProducerIdResponse::default();
    match answer {
        Ok((producer_id, producer_epoch)) => {
            response.producer_id = producer_id.into();
            response.producer_epoch = producer_epoch.0;
        }
        Err(code) => {
            response.error_code = code.code();
            response.producer_id = ProducerId::NONE.into();
            response.producer_epoch = ProducerEpoch::NONE.0;
        }
    }
    ctx.reply(&response)
}

/// InitProducerId for a transactional producer: the id, epoch, or the error code.
async fn init_transactional(
    ctx: &Context,
    transactional_id: &str,
    timeout_ms: i32,
    producer: Producer,
) -> Result<Producer, ErrorCode> {
    let request =
        TxnRequest::Init { transactional_id: transactional_id.to_string(), timeout_ms, producer };
    match call(ctx, transactional_id, request).await {
        Some(TxnResponse::Init(result)) => result.map_err(|code| fenced(code, ctx.version, 4)),
        _ => Err(ErrorCode::CoordinatorNotAvailable),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plan {
    Refuse(ErrorCode),
    /// To the transaction coordinator.
    Transactional,
    Bump {
        producer_id: ProducerId,
        producer_epoch: ProducerEpoch,
    },
    Allocate,
}

/// What to answer, from the request alone.
fn plan(transactional_id: Option<&str>, producer: Producer) -> Plan {
    match transactional_id {
        Some("") => return Plan::Refuse(ErrorCode::InvalidRequest),
        // The transaction log keeps ids in int16-length strings.
        Some(id) if id.len() > SHORT_STRING_BYTES_MAX => {
            return Plan::Refuse(ErrorCode::InvalidRequest)
        }
        Some(_) => return Plan::Transactional,
        None => {}
    }
    match (producer.producer_id, producer.producer_epoch) {
        (ProducerId::NONE, ProducerEpoch::NONE) => Plan::Allocate,
        (id, epoch) if !id.is_valid() || epoch < ProducerEpoch::FIRST => {
            Plan::Refuse(ErrorCode::InvalidRequest)
        }
        // Kafka keeps i16::MAX out of use and starts over with a new id before reaching it.
        (_, epoch) if epoch.is_exhausted() => Plan::Allocate,
        (id, epoch) => Plan::Bump { producer_id: id, producer_epoch: epoch.bumped() },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan_of(transactional_id: Option<&str>, producer_id: i64, producer_epoch: i16) -> Plan {
        let producer = Producer {
            producer_id: ProducerId(producer_id),
            producer_epoch: ProducerEpoch(producer_epoch),
        };
        plan(transactional_id, producer)
    }

    fn bump(producer_id: i64, producer_epoch: i16) -> Plan {
        Plan::Bump {
            producer_id: ProducerId(producer_id),
            producer_epoch: ProducerEpoch(producer_epoch),
        }
    }

    #[test]
    fn every_request_shape_gets_kafkas_answer() {
        assert_eq!(plan_of(None, -1, -1), Plan::Allocate);
        assert_eq!(plan_of(None, 7, 0), bump(7, 1));
        assert_eq!(plan_of(None, 7, 41), bump(7, 42));
        assert_eq!(plan_of(None, 7, i16::MAX - 2), bump(7, i16::MAX - 1));
        assert_eq!(plan_of(None, 7, i16::MAX - 1), Plan::Allocate);
        assert_eq!(plan_of(None, 7, i16::MAX), Plan::Allocate);
        for (id, epoch) in [(-1, 0), (5, -1), (-2, -1), (-1, -2), (3, -7)] {
            assert_eq!(
                plan_of(None, id, epoch),
                Plan::Refuse(ErrorCode::InvalidRequest),
                "{id} {epoch}"
            );
        }
        assert_eq!(plan_of(Some(""), -1, -1), Plan::Refuse(ErrorCode::InvalidRequest));
        let long = "t".repeat(SHORT_STRING_BYTES_MAX + 1);
        assert_eq!(plan_of(Some(&long), -1, -1), Plan::Refuse(ErrorCode::InvalidRequest));
        assert_eq!(plan_of(Some(&long[1..]), -1, -1), Plan::Transactional);
        assert_eq!(plan_of(Some("txn-1"), -1, -1), Plan::Transactional);
        assert_eq!(plan_of(Some("txn-1"), 7, 0), Plan::Transactional);
    }
}
