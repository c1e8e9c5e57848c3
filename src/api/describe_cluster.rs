//! DescribeCluster (API 60): on a single node, this broker as the whole cluster and its
//! controller; in a cluster, the Raft leader as the controller and every unfenced broker
//! whose registration is committed in the metadata log (`cluster::ClusterView`; Kafka lists
//! fenced brokers only when asked to, v2's include_fenced_brokers), and the cluster id
//! committed there.

use bytes::Bytes;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{DescribeClusterRequest, DescribeClusterResponse};

use super::{str_bytes, Context, Outcome};
use crate::model::NodeId;

pub fn handle(ctx: &Context, body: Bytes) -> Outcome {
    let request: DescribeClusterRequest = match ctx.decode(body) {
        Ok(r) => r,
        Err(close) => return close,
    };
    let shard = ctx.shard();
    let mut response = DescribeClusterResponse::default();
    if request.include_cluster_authorized_operations {
        response.cluster_authorized_operations = super::metadata::cluster_operations(ctx);
    }
    response.cluster_id = str_bytes(&shard.catalog.borrow().cluster_id);
    response.endpoint_type = 1;
    let broker = |node_id: NodeId, host: &str, port: u16, rack: Option<&str>| {
        let mut broker = DescribeClusterBroker::default();
        broker.broker_id = node_id.into();
        broker.host = str_bytes(host);
        broker.port = i32::from(port);
        broker.rack = rack.map(str_bytes);
        broker
    };
    if !ctx.cluster().clustered() {
        response.controller_id = shard.config.node_id.into();
        let listener = ctx.listener();
        let (host, port) = (&listener.advertised_host, listener.advertised_port);
        let rack = shard.config.rack.as_deref();
        response.brokers = vec![broker(shard.config.node_id, host, port, rack)];
        return ctx.reply(&response);
    }
    // Before the first view (the log still opening) there is no leader and no broker yet,
    // and before the first leader's record is applied no cluster id (empty here).
    let view = ctx.cluster().view();
    let cluster_id = view.as_ref().and_then(|v| v.cluster_id.clone()).unwrap_or_default();
    response.cluster_id = str_bytes(&cluster_id);
    response.controller_id = view.as_ref().and_then(|v| v.leader_id).unwrap_or(NodeId::NONE).into();
    response.brokers = view
        .iter()
        .flat_map(|view| view.live_brokers())
        .map(|b| broker(b.node_id, &b.host, b.port, b.rack.as_deref()))
        .collect();
    ctx.reply(&response)
}
