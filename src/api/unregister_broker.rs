//! UnregisterBroker (API 64, v0; `Admin.unregisterBroker`, `kafka-cluster.sh unregister`):
//! removes a broker's registration from the metadata log, as Kafka's controller does
//! (`ReplicationControlManager.unregisterBroker`: BROKER_ID_NOT_REGISTERED for a node id
//! with none; a registered broker goes whether fenced or not, its partitions' leaderships
//! and ISR places moving as for a fenced broker). A broker-only node also leaves the Raft
//! configuration (the leader proposes its removal), so DescribeQuorum no longer lists it as
//! an observer; started again, it joins and registers anew. Any node takes the request and
//! proposes the record (Kafka's brokers forward it to the active controller). Needs ALTER
//! on the cluster. Clustered nodes only (`versions::CLUSTER_ONLY`).

use bytes::Bytes;
use kafka_protocol::messages::{UnregisterBrokerRequest, UnregisterBrokerResponse};

use super::{str_bytes, Context, Outcome};
use crate::controller::ControllerRequest;
use crate::model::{ErrorCode, NodeId};
use crate::security::acl::Operation;

pub async fn handle(ctx: &Context, body: Bytes) -> Outcome {
    let request: UnregisterBrokerRequest = match ctx.decode(body) {
        Ok(r) => r,
        Err(close) => return close,
    };
    let mut response = UnregisterBrokerResponse::default();
    if !ctx.cluster_allowed(Operation::Alter) {
        response.error_code = ErrorCode::ClusterAuthorizationFailed.code();
        return ctx.reply(&response);
    }
    let node_id = NodeId(request.broker_id.0);
    let call = ControllerRequest::UnregisterBroker { node_id };
    match ctx.controller().change_topic(call).await {
        Ok(_) => tracing::info!(%node_id, "unregistered a broker"),
        Err(e) => {
            response.error_code = e.code.code();
            response.error_message = Some(str_bytes(&e.message));
        }
    }
    ctx.reply(&response)
}
