//! Metadata: brokers (this node, or clustered every unfenced broker, as Kafka lists only
//! those), topics and their partitions with their leaders (this node on a single node;
//! clustered, the leader and leader epoch the metadata log gives each partition, its only
//! replica and in-sync replica; a partition whose replica is fenced has no leader:
//! LEADER_NOT_AVAILABLE, leader -1, the replica listed as offline).
//! Unknown topics are auto-created through the controller when the broker allows it and the
//! client asks for it (`allow_auto_topic_creation`, v4+; always for older versions).
//! With an authorizer, topics the principal may not DESCRIBE are hidden from the all-topics
//! answer and TOPIC_AUTHORIZATION_FAILED when named; auto-creation needs CREATE.

use bytes::Bytes;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};

use super::{str_bytes, Context, Outcome};
use crate::model::topic::validate_topic_name;
use crate::model::{ErrorCode, LeaderEpoch, NodeId};
use crate::security::acl::{Operation, ResourceType, CLUSTER_NAME};
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
    // v1+: each broker's rack (Kafka's broker.rack; null without one).
    let broker = |node_id: NodeId, host: &str, port: u16, rack: Option<&str>| {
        let mut broker = MetadataResponseBroker::default();
        broker.node_id = node_id.into();
        broker.host = str_bytes(host);
        broker.port = i32::from(port);
        broker.rack = rack.map(str_bytes);
        broker
    };
    // Clustered, with no unfenced broker in this node's view (just started, or cut off from
    // the controller), the node asked stands in, as a single node does: a client needs one
    // broker to ask again.
    let live: Vec<MetadataResponseBroker> = view
        .iter()
        .flat_map(|view| view.live_brokers())
        .map(|b| broker(b.node_id, &b.host, b.port, b.rack.as_deref()))
        .collect();
    response.brokers = match live.is_empty() {
        false => live,
        true => {
            // The address of the listener the request came in on, as Kafka answers.
            let listener = ctx.listener();
            let (host, port) = (&listener.advertised_host, listener.advertised_port);
            vec![broker(node_id, host, port, config.rack.as_deref())]
        }
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
    // Before any broker is live here, this node, as the brokers above: never -1, which
    // librdkafka's admin client takes as "no controller" and then waits for a broker to
    // change state, not for a new Metadata (an AlterUserScramCredentials sent right after
    // a cluster formed waited out its whole timeout).
    response.controller_id = match &view {
        Some(view) if view.live_broker(node_id).is_some() => node_id.into(),
        Some(view) => view.live_brokers().next().map_or(node_id, |b| b.node_id).into(),
        None => node_id.into(),
    };
    let auto_create =
        config.auto_create_topics && (ctx.version < 4 || request.allow_auto_topic_creation);
    // v8+: the authorized-operations bitfields when asked (v8-10 for the cluster).
    let topic_operations = ctx.version >= 8 && request.include_topic_authorized_operations;
    if ctx.version >= 8 && request.include_cluster_authorized_operations {
        response.cluster_authorized_operations = cluster_operations(ctx);
    }
    match request.topics {
        None => {
            // Topics the principal may not describe are left out, as Kafka leaves them.
            let metas: Vec<TopicMeta> = shard
                .catalog
                .borrow()
                .topics
                .values()
                .filter(|m| !m.is_internal() && ctx.topic_allowed(Operation::Describe, &m.name))
                .cloned()
                .collect();
            let live = live_check(ctx);
            response.topics = metas.iter().map(|m| topic_entry(m, node_id, &live)).collect();
        }
        Some(topics) => {
            for requested in topics {
                let name = match (&requested.name, requested.topic_id.is_nil()) {
                    (Some(name), _) => name.0.to_string(),
                    (None, false) => {
                        let found = shard.catalog.borrow().name_of(requested.topic_id.as_bytes());
                        match found {
                            Some(name) if !ctx.topic_allowed(Operation::Describe, &name) => {
                                let mut entry = MetadataResponseTopic::default();
                                entry.error_code = ErrorCode::TopicAuthorizationFailed.code();
                                entry.topic_id = requested.topic_id;
                                response.topics.push(entry);
                                continue;
                            }
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
    if topic_operations {
        for topic in response.topics.iter_mut().filter(|t| t.error_code == 0) {
            let name = topic.name.as_ref().map(|n| n.0.to_string()).unwrap_or_default();
            topic.topic_authorized_operations =
                ctx.authorized_operations(ResourceType::Topic, &name);
        }
    }
    ctx.reply(&response)
}

/// The cluster's authorized-operations bitfield: 0 without DESCRIBE on it, as Kafka answers.
pub(super) fn cluster_operations(ctx: &Context) -> i32 {
    match ctx.cluster_allowed(Operation::Describe) {
        true => ctx.authorized_operations(ResourceType::Cluster, CLUSTER_NAME),
        false => 0,
    }
}

async fn resolve(
    ctx: &Context,
    name: &str,
    auto_create: bool,
    node_id: NodeId,
) -> MetadataResponseTopic {
    let mut entry = MetadataResponseTopic::default();
    entry.name = Some(TopicName(str_bytes(name)));
    // Kafka: a topic the principal may not describe is TOPIC_AUTHORIZATION_FAILED whether
    // it exists or not (so its existence is not told), and so is an auto-creation without
    // CREATE on the cluster or the topic.
    if !ctx.topic_allowed(Operation::Describe, name) {
        entry.error_code = ErrorCode::TopicAuthorizationFailed.code();
        return entry;
    }
    let existing = ctx.shard().catalog.borrow().get(name).filter(|m| !m.is_internal()).cloned();
    if let Some(meta) = existing {
        return topic_entry(&meta, node_id, &live_check(ctx));
    }
    if validate_topic_name(name).is_err() {
        entry.error_code = ErrorCode::InvalidTopicException.code();
        return entry;
    }
    if !auto_create {
        entry.error_code = ErrorCode::UnknownTopicOrPartition.code();
        return entry;
    }
    if !ctx.may_create_topic(name) {
        entry.error_code = ErrorCode::TopicAuthorizationFailed.code();
        return entry;
    }
    match ctx.controller().ensure_topic(name).await {
        Ok(Some(meta)) => topic_entry(&meta, node_id, &live_check(ctx)),
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

/// Whether a node is an unfenced broker in this node's view (every node on a single node).
pub(super) fn live_check(ctx: &Context) -> impl Fn(NodeId) -> bool {
    let view = ctx.cluster().view();
    move |node_id| view.as_ref().is_none_or(|view| view.live_broker(node_id).is_some())
}

fn topic_entry(
    meta: &TopicMeta,
    node_id: NodeId,
    live: &impl Fn(NodeId) -> bool,
) -> MetadataResponseTopic {
    let mut entry = MetadataResponseTopic::default();
    entry.name = Some(TopicName(str_bytes(&meta.name)));
    entry.topic_id = uuid::Uuid::from_bytes(meta.id);
    entry.partitions = (0..meta.partitions)
        .map(|index| {
            let view = partition_view(meta, index, node_id, live);
            let mut p = MetadataResponsePartition::default();
            p.partition_index = index;
            p.error_code = view.error.code();
            p.leader_id = view.leader.into();
            p.leader_epoch = view.leader_epoch.0;
            p.replica_nodes = view.replicas;
            p.isr_nodes = view.isr;
            p.offline_replicas = view.offline;
            p
        })
        .collect();
    entry
}

/// One partition as a client sees it (Metadata, DescribeTopicPartitions), from Kafka's KRaft
/// metadata cache's point of view.
pub(super) struct PartitionView {
    pub error: ErrorCode,
    pub leader: NodeId,
    pub leader_epoch: LeaderEpoch,
    pub replicas: Vec<BrokerId>,
    pub isr: Vec<BrokerId>,
    pub offline: Vec<BrokerId>,
}

pub(super) fn partition_view(
    meta: &TopicMeta,
    index: i32,
    node_id: NodeId,
    live: &impl Fn(NodeId) -> bool,
) -> PartitionView {
    let Some(placement) = meta.placement(index) else {
        // A single node leads every partition, in the first epoch.
        return PartitionView {
            error: ErrorCode::None,
            leader: node_id,
            leader_epoch: LeaderEpoch::INITIAL,
            replicas: vec![node_id.into()],
            isr: vec![node_id.into()],
            offline: Vec::new(),
        };
    };
    // A leader the view no longer counts on (its fencing applied, the partition's change not
    // yet) is reported as none too, as Kafka's offline leader is.
    let leader = match placement.leader {
        leader if leader != NodeId::NONE && live(leader) => leader,
        _ => NodeId::NONE,
    };
    PartitionView {
        error: if leader == NodeId::NONE { ErrorCode::LeaderNotAvailable } else { ErrorCode::None },
        leader,
        leader_epoch: placement.leader_epoch,
        replicas: placement.replicas.iter().map(|id| (*id).into()).collect(),
        isr: placement.isr.iter().map(|id| (*id).into()).collect(),
        offline: placement
            .replicas
            .iter()
            .filter(|id| !live(**id))
            .map(|id| (*id).into())
            .collect(),
    }
}
