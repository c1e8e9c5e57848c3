//! The share group calls of ShareFetch and ShareAcknowledge (`group::share_call`) on their
//! way to the group's coordinator, and Spate's private request between brokers that carries
//! them in a cluster.
//!
//! A client sends ShareFetch and ShareAcknowledge to the leader of the partitions it reads,
//! which reads them; the group's share state is kept by the group's coordinator, which is
//! usually on another node (the leader of the group's `__consumer_offsets` partition, where
//! that state is written and replicated). So the leader asks the coordinator: over the mesh
//! when the coordinator is this node, else with a `SHARE_CALL_API_KEY` request on a kept
//! connection to the coordinator's client listener (the brokers' own login when SASL is on;
//! CLUSTER_ACTION on the cluster when the authorizer is on, as Kafka's requests between
//! brokers need). Kafka splits it otherwise (share partitions at the leader, their state sent
//! to a share coordinator); here one place keeps a share partition's records in flight, so a
//! leader change moves nothing, at the cost of one round trip to the coordinator per call.
//! The coordinator in turn wakes the leader's waiting ShareFetches when it makes records
//! available again (`ShareCall::Wake`, which the node serves itself). The bytes on the wire:
//! `group::share_remote`.

use std::rc::Rc;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::RequestHeader;
use kafka_protocol::protocol::Decodable;

use super::{Context, Outcome, Services};
use crate::group::coordinator::{GroupRequest, GroupResponse};
use crate::group::share_call::{ShareAnswer, ShareCall, SHARE_CALL_VERSION};
use crate::group::share_remote;
use crate::model::{ErrorCode, NodeId};
use crate::security::acl::{Operation, ResourceType, CLUSTER_NAME};
use crate::security::Session;
use crate::shard::internal_log::OFFSETS_TOPIC;
use crate::storage::log::ReadChunk;

/// Asks the group's coordinator: on this node over the mesh, else on its node.
pub(super) async fn call(ctx: &Context, call: ShareCall) -> ShareAnswer {
    let group_id = call.group_id().to_string();
    if ctx.cluster().clustered() {
        let view = ctx.cluster().view();
        let coordinator = view.as_ref().and_then(|view| view.coordinator(OFFSETS_TOPIC, &group_id));
        match coordinator {
            None => return call.refused(ErrorCode::CoordinatorNotAvailable),
            Some(node) if node != ctx.shard().config.node_id => {
                return remote(ctx, node, call).await;
            }
            Some(_) => {}
        }
    }
    local(&ctx.services, call).await
}

async fn local(services: &Services, call: ShareCall) -> ShareAnswer {
    let owner = services.groups.owner(call.group_id());
    let refused = call.refused(ErrorCode::CoordinatorNotAvailable);
    match services.groups.call(owner, GroupRequest::Share(call)).await {
        Some(GroupResponse::Share(answer)) => answer,
        _ => refused,
    }
}

/// The call on `node` (`group::share_remote`, on a kept connection):
/// COORDINATOR_NOT_AVAILABLE when it cannot be asked (clients retry, and look the
/// coordinator up again).
async fn remote(ctx: &Context, node: NodeId, call: ShareCall) -> ShareAnswer {
    match share_remote::send(ctx.cluster(), node, &call).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(code)) => call.refused(code),
        Err(e) => {
            tracing::debug!(%node, group = call.group_id(), "share call failed: {e}");
            call.refused(ErrorCode::CoordinatorNotAvailable)
        }
    }
}

/// Serves another broker's share call (`frame`: the request after its length). A frame
/// that is not one closes the connection, as a broken Kafka request does.
pub(super) async fn serve(services: Rc<Services>, session: Rc<Session>, frame: Bytes) -> Outcome {
    let mut buf = frame;
    let header = match RequestHeader::decode(&mut buf, share_remote::HEADER_VERSION) {
        Ok(header) => header,
        Err(e) => return Outcome::Close(format!("bad share call header: {e}")),
    };
    let (version, correlation_id) = (header.request_api_version, header.correlation_id);
    if !(0..=SHARE_CALL_VERSION).contains(&version) {
        return Outcome::Close(format!("unsupported share call version {version}"));
    }
    if !services.cluster.clustered() {
        return Outcome::Close("a share call to a single node".into());
    }
    let mut out = BytesMut::with_capacity(256);
    out.put_i32(0);
    out.put_i32(correlation_id);
    let allowed = services.security.authorize(
        &session,
        Operation::ClusterAction,
        ResourceType::Cluster,
        CLUSTER_NAME,
    );
    if allowed {
        let call = match ShareCall::decode(buf) {
            Ok(call) => call,
            Err(e) => return Outcome::Close(format!("bad share call: {e}")),
        };
        let answer = match call {
            // A coordinator freed records of partitions this node leads: the ShareFetches
            // waiting on them look again.
            ShareCall::Wake { partitions } => {
                services.partitions.wake(partitions).await;
                ShareAnswer::Woken
            }
            call => local(&services, call).await,
        };
        out.put_i16(ErrorCode::None.code());
        answer.encode(&mut out);
    } else {
        out.put_i16(ErrorCode::ClusterAuthorizationFailed.code());
    }
    let size = (out.len() - 4) as i32;
    out[..4].copy_from_slice(&size.to_be_bytes());
    Outcome::Reply(vec![ReadChunk::Memory(out.freeze())])
}
