//! DescribeCluster (API 60): this broker as the whole cluster and its controller, from the
//! shard's catalog copy.

use bytes::Bytes;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::DescribeClusterResponse;

use super::{str_bytes, Context, Outcome};

pub fn handle(ctx: &Context, _body: Bytes) -> Outcome {
    let shard = ctx.shard();
    let mut response = DescribeClusterResponse::default();
    response.cluster_id = str_bytes(&shard.catalog.borrow().cluster_id);
    response.controller_id = shard.config.node_id.into();
    response.endpoint_type = 1;
    let mut broker = DescribeClusterBroker::default();
    broker.broker_id = shard.config.node_id.into();
    broker.host = str_bytes(&shard.config.advertised_host);
    broker.port = i32::from(shard.config.advertised_port);
    response.brokers = vec![broker];
    ctx.reply(&response)
}
