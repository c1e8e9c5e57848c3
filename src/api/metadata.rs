//! Metadata: brokers (this node, or clustered every registered broker), topics and their
//! partitions with their leaders (this node on a single node; clustered, the node the
//! metadata log placed each partition on, its only replica and in-sync replica).
//! Unknown topics are auto-created through the controller when the broker allows it and the
//! client asks for it (`allow_auto_topic_creation`, v4+; always for older versions).

use bytes::Bytes;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{MetadataRequest, MetadataResponse, TopicName};

use super::{str_bytes, Context, Outcome};
use crate::model::topic::validate_topic_name;
use crate::model::{ErrorCode, LeaderEpoch, NodeId};
use crate::shard::catalog::TopicMeta;

pub async fn handle(ctx: &Context, body: Bytes) -> Outcome {
    let request: MetadataRequest = match ctx.decode(body) {
        Ok(r) => r,
        Err(close) => return close,
    };
    let shard = ctx.shard();
    let config = &shard.config;
    let node_id = config.node_id;
    let mut response = MetadataResponse::default();
    let view = ctx.cluster().view();
    let broker = |node_id: NodeId, host: &str, port: u16| {
        let mut broker = MetadataResponseBroker::default();
        broker.node_id = node_id.into();
        broker.host = str_bytes(host);
        broker.port = i32::from(port);
        broker
    };
    response.brokers = match view.as_ref().filter(|view| !view.brokers.is_empty()) {
        Some(view) => view.brokers.iter().map(|b| broker(b.node_id, &b.host, b.port)).collect(),
        None => vec![broker(node_id, &config.advertised_host, config.advertised_port)],
    };
    // Clustered: the id committed on the metadata log (none before the first leader's).
    response.cluster_id = match (&view, ctx.cluster().clustered()) {
        (Some(view), true) => view.cluster_id.as_deref().map(str_bytes),
        (None, true) => None,
        (_, false) => Some(str_bytes(&shard.catalog.borrow().cluster_id)),
    };
    // Clustered: this node once its registration is committed, as a KRaft broker names a
    // live broker rather than the active controller (KIP-590): any node takes admin
    // requests and proposes them to the metadata log, so a client's CreateTopics goes to
    // the node it asked. DescribeCluster and DescribeQuorum name the Raft leader.
    response.controller_id = match &view {
        Some(view) if view.brokers.iter().any(|b| b.node_id == node_id) => node_id.into(),
        Some(_) => NodeId::NONE.into(),
        None if ctx.cluster().clustered() => NodeId::NONE.into(),
        None => node_id.into(),
    };
    let auto_create =
        config.auto_create_topics && (ctx.version < 4 || request.allow_auto_topic_creation);
    match request.topics {
        None => {
            let metas: Vec<TopicMeta> = shard.catalog.borrow().topics.values().cloned().collect();
            response.topics = metas.iter().map(|m| topic_entry(m, node_id)).collect();
        }
        Some(topics) => {
            for requested in topics {
                let name = match (&requested.name, requested.topic_id.is_nil()) {
                    (Some(name), _) => name.0.to_string(),
                    (None, false) => {
                        let found = shard.catalog.borrow().name_of(requested.topic_id.as_bytes());
                        match found {
                            Some(name) => name.to_string(),
                            None => {
                                let mut entry = MetadataResponseTopic::default();
                                entry.error_code = ErrorCode::UnknownTopicId.code();
                                entry.topic_id = requested.topic_id;
                                response.topics.push(entry);
                                continue;
                            }
                        }
                    }
                    (None, true) => String::new(),
                };
                response.topics.push(resolve(ctx, &name, auto_create, node_id).await);
            }
        }
    }
    ctx.reply(&response)
}

async fn resolve(
    ctx: &Context,
    name: &str,
    auto_create: bool,
    node_id: NodeId,
) -> MetadataResponseTopic {
    let existing = ctx.shard().catalog.borrow().get(name).cloned();
    if let Some(meta) = existing {
        return topic_entry(&meta, node_id);
    }
    let mut entry = MetadataResponseTopic::default();
    entry.name = Some(TopicName(str_bytes(name)));
    if validate_topic_name(name).is_err() {
        entry.error_code = ErrorCode::InvalidTopicException.code();
        return entry;
    }
    if !auto_create {
        entry.error_code = ErrorCode::UnknownTopicOrPartition.code();
        return entry;
    }
    match ctx.controller().ensure_topic(name).await {
        Ok(Some(meta)) => topic_entry(&meta, node_id),
        Ok(None) => {
            entry.error_code = ErrorCode::LeaderNotAvailable.code();
            entry
        }
        Err(e) => {
            entry.error_code = e.code.code();
            entry
        }
    }
}

fn topic_entry(meta: &TopicMeta, node_id: NodeId) -> MetadataResponseTopic {
    let mut entry = MetadataResponseTopic::default();
    entry.name = Some(TopicName(str_bytes(&meta.name)));
    entry.topic_id = uuid::Uuid::from_bytes(meta.id);
    entry.partitions = (0..meta.partitions)
        .map(|index| {
            let leader = meta.leader(index).unwrap_or(node_id);
            let mut p = MetadataResponsePartition::default();
            p.partition_index = index;
            p.leader_id = leader.into();
            p.leader_epoch = LeaderEpoch::INITIAL.0;
            p.replica_nodes = vec![leader.into()];
            p.isr_nodes = vec![leader.into()];
            p
        })
        .collect();
    entry
}
