//! Request handlers, one file per API. `admit` turns one request frame into one response
//! (or none, for acks=0 produce), or tells the connection to close when the frame cannot be
//! trusted: unknown API key, unsupported version, undecodable header or body. This mirrors
//! Kafka, which closes a connection it cannot parse rather than guess.
//!
//! Two stages. A connection admits its requests one at a time, in arrival order, and may
//! admit the next before an earlier one is answered (`net`). Produce and Fetch are split:
//! admission does what must follow arrival order (a produce's offsets are assigned and its
//! writes queued), and the rest (waiting for the write, a fetch's read and long-poll) is a
//! `Later` future that runs concurrently with later requests. Every other API runs whole at
//! admission, after every earlier request of its connection was answered: a connection sees
//! them exactly as Kafka's one-request-at-a-time channel would (a ListOffsets after a
//! produce sees the produce, a produce after CreateTopics sees the topic).

mod acl_common;
mod add_offsets_to_txn;
mod add_partitions_to_txn;
mod alter_configs;
mod alter_partition_reassignments;
mod alter_share_group_offsets;
mod alter_user_scram_credentials;
mod api_versions;
mod config_common;
mod consumer_group_describe;
mod consumer_group_heartbeat;
mod create_acls;
mod create_partitions;
mod create_topics;
mod delete_acls;
mod delete_groups;
mod delete_records;
mod delete_share_group_offsets;
mod delete_topics;
mod describe_acls;
mod describe_cluster;
mod describe_configs;
mod describe_groups;
mod describe_producers;
mod describe_quorum;
mod describe_share_group_offsets;
mod describe_topic_partitions;
mod describe_transactions;
mod describe_user_scram_credentials;
mod elect_leaders;
mod end_txn;
mod error_counts;
mod fetch;
mod find_coordinator;
mod group_common;
mod heartbeat;
mod incremental_alter_configs;
mod init_producer_id;
mod join_group;
mod leave_group;
mod list_groups;
mod list_offsets;
mod list_partition_reassignments;
mod list_transactions;
mod metadata;
mod offset_commit;
mod offset_delete;
mod offset_fetch;
mod produce;
mod sasl_authenticate;
mod sasl_handshake;
mod share_acknowledge;
mod share_call;
mod share_common;
mod share_fetch;
mod share_group_describe;
mod share_group_heartbeat;
mod sync_group;
mod txn_common;
mod txn_offset_commit;
mod unregister_broker;
mod write_txn_markers;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader};
use kafka_protocol::protocol::{Decodable, Encodable};

use crate::cluster::Cluster;
use crate::controller::Controller;
use crate::group::coordinator::Coordinator as GroupCoordinator;
use crate::group::share_call::SHARE_CALL_API_KEY;
use crate::partition::Partitions;
use crate::protocol::{put_response_header, versions, RequestPrefix};
use crate::security::acl::{operations_bitfield, Operation, ResourceType, CLUSTER_NAME};
use crate::security::{now_ms, Admission, Session, ShardSecurity};
use crate::shard::Shard;
use crate::storage::log::ReadChunk;
use crate::txn::coordinator::TxnCoordinator;
use error_counts::ErrorCodes;

/// What a handler reaches on its connection's shard: the shard's plumbing and the services
/// that live on it. One per shard, built at start-up.
pub struct Services {
    pub shard: Rc<Shard>,
    pub partitions: Rc<Partitions>,
    pub controller: Rc<Controller>,
    pub groups: Rc<GroupCoordinator>,
    pub txns: Rc<TxnCoordinator>,
    pub cluster: Rc<Cluster>,
    pub security: Rc<ShardSecurity>,
}

/// What the connection does with a request.
pub enum Outcome {
    /// Send this frame (length prefix included), in order.
    Reply(Vec<ReadChunk>),
    /// Send nothing (acks=0 produce).
    NoReply,
    /// Close the connection; the reason is logged at debug level.
    Close(String),
    /// Send this frame, then close the connection (a failed SASL login, as Kafka answers
    /// it before closing).
    ReplyAndClose(Vec<ReadChunk>, String),
}

/// The answer of a request in the making.
pub type Later = Pin<Box<dyn Future<Output = Outcome>>>;

/// What admission made of a request.
pub enum Admitted {
    /// Answered already.
    Now(Outcome),
    /// Admitted; the answer comes when this completes. It may run while later requests of
    /// the connection are admitted.
    Later(Later),
    /// Not run yet: it runs whole once every earlier request of the connection is answered
    /// (Kafka's one-request-at-a-time order), then gives the answer.
    InTurn(Request),
}

/// A request whose header is decoded, for a handler that runs in its turn.
pub struct Request {
    ctx: Context,
    body: Bytes,
}

impl Request {
    /// Runs the handler.
    pub async fn run(self) -> Outcome {
        let Request { ctx, body } = self;
        handle(&ctx, body).await
    }
}

/// First stage of a request; see the module doc. `session` is the connection's: its
/// listener, its client's address (group members report it as their host) and where it
/// stands with SASL (a SASL listener takes only ApiVersions and the SASL requests before
/// authentication, and closes the connection on anything else, as Kafka does).
pub async fn admit(services: &Rc<Services>, frame: Bytes, session: &Rc<Session>) -> Admitted {
    let Some(prefix) = RequestPrefix::parse(&frame) else {
        return Admitted::Now(Outcome::Close("frame shorter than a request header".into()));
    };
    if session.protocol.sasl() {
        if let Admission::Close(reason) = session.admits(prefix.api_key, now_ms()) {
            return Admitted::Now(Outcome::Close(reason));
        }
    }
    if prefix.api_key == SHARE_CALL_API_KEY {
        let (services, session) = (services.clone(), session.clone());
        return Admitted::Later(Box::pin(share_call::serve(services, session, frame)));
    }
    let Ok(api_key) = ApiKey::try_from(prefix.api_key) else {
        return Admitted::Now(Outcome::Close(format!("unknown API key {}", prefix.api_key)));
    };
    let clustered = services.cluster.clustered();
    if !versions::serves(prefix.api_key, prefix.api_version, clustered) {
        if api_key == ApiKey::ApiVersions {
            return Admitted::Now(api_versions::unsupported_version(prefix.correlation_id));
        }
        return Admitted::Now(Outcome::Close(format!(
            "unsupported version {} of {:?}",
            prefix.api_version, api_key
        )));
    }
    let mut body = frame.clone();
    let header_version = api_key.request_header_version(prefix.api_version);
    let header = match RequestHeader::decode(&mut body, header_version) {
        Ok(header) => header,
        Err(e) => return Admitted::Now(Outcome::Close(format!("bad request header: {e}"))),
    };
    let services = services.clone();
    let peer = session.peer;
    let session = session.clone();
    let ctx = Context { services, header, api_key, version: prefix.api_version, peer, session };
    match api_key {
        ApiKey::Produce => produce::admit(ctx, body).await,
        ApiKey::Fetch => Admitted::Later(Box::pin(async move { fetch::handle(&ctx, body).await })),
        _ => Admitted::InTurn(Request { ctx, body }),
    }
}

/// The handlers that run whole, in their turn.
async fn handle(ctx: &Context, body: Bytes) -> Outcome {
    match ctx.api_key {
        ApiKey::ApiVersions => api_versions::handle(ctx, body),
        ApiKey::Metadata => metadata::handle(ctx, body).await,
        ApiKey::ListOffsets => list_offsets::handle(ctx, body).await,
        ApiKey::CreateTopics => create_topics::handle(ctx, body).await,
        ApiKey::DeleteTopics => delete_topics::handle(ctx, body).await,
        ApiKey::CreatePartitions => create_partitions::handle(ctx, body).await,
        ApiKey::DescribeConfigs => describe_configs::handle(ctx, body).await,
        ApiKey::AlterConfigs => alter_configs::handle(ctx, body).await,
        ApiKey::IncrementalAlterConfigs => incremental_alter_configs::handle(ctx, body).await,
        ApiKey::DescribeCluster => describe_cluster::handle(ctx, body),
        ApiKey::DescribeQuorum => describe_quorum::handle(ctx, body),
        ApiKey::FindCoordinator => find_coordinator::handle(ctx, body),
        ApiKey::JoinGroup => join_group::handle(ctx, body).await,
        ApiKey::SyncGroup => sync_group::handle(ctx, body).await,
        ApiKey::Heartbeat => heartbeat::handle(ctx, body).await,
        ApiKey::LeaveGroup => leave_group::handle(ctx, body).await,
        ApiKey::OffsetCommit => offset_commit::handle(ctx, body).await,
        ApiKey::OffsetFetch => offset_fetch::handle(ctx, body).await,
        ApiKey::OffsetDelete => offset_delete::handle(ctx, body).await,
        ApiKey::DescribeGroups => describe_groups::handle(ctx, body).await,
        ApiKey::ListGroups => list_groups::handle(ctx, body).await,
        ApiKey::DeleteGroups => delete_groups::handle(ctx, body).await,
        ApiKey::ConsumerGroupHeartbeat => consumer_group_heartbeat::handle(ctx, body).await,
        ApiKey::ConsumerGroupDescribe => consumer_group_describe::handle(ctx, body).await,
        ApiKey::ShareGroupHeartbeat => share_group_heartbeat::handle(ctx, body).await,
        ApiKey::ShareGroupDescribe => share_group_describe::handle(ctx, body).await,
        ApiKey::ShareFetch => share_fetch::handle(ctx, body).await,
        ApiKey::ShareAcknowledge => share_acknowledge::handle(ctx, body).await,
        ApiKey::DescribeShareGroupOffsets => describe_share_group_offsets::handle(ctx, body).await,
        ApiKey::AlterShareGroupOffsets => alter_share_group_offsets::handle(ctx, body).await,
        ApiKey::DeleteShareGroupOffsets => delete_share_group_offsets::handle(ctx, body).await,
        ApiKey::InitProducerId => init_producer_id::handle(ctx, body).await,
        ApiKey::DeleteRecords => delete_records::handle(ctx, body).await,
        ApiKey::AddPartitionsToTxn => add_partitions_to_txn::handle(ctx, body).await,
        ApiKey::AddOffsetsToTxn => add_offsets_to_txn::handle(ctx, body).await,
        ApiKey::TxnOffsetCommit => txn_offset_commit::handle(ctx, body).await,
        ApiKey::EndTxn => end_txn::handle(ctx, body).await,
        ApiKey::DescribeTransactions => describe_transactions::handle(ctx, body).await,
        ApiKey::ListTransactions => list_transactions::handle(ctx, body).await,
        ApiKey::DescribeProducers => describe_producers::handle(ctx, body).await,
        ApiKey::SaslHandshake => sasl_handshake::handle(ctx, body),
        ApiKey::SaslAuthenticate => sasl_authenticate::handle(ctx, body).await,
        ApiKey::AlterUserScramCredentials => alter_user_scram_credentials::handle(ctx, body).await,
        ApiKey::DescribeUserScramCredentials => describe_user_scram_credentials::handle(ctx, body),
        ApiKey::WriteTxnMarkers => write_txn_markers::handle(ctx, body).await,
        ApiKey::CreateAcls => create_acls::handle(ctx, body).await,
        ApiKey::DescribeAcls => describe_acls::handle(ctx, body),
        ApiKey::DeleteAcls => delete_acls::handle(ctx, body).await,
        ApiKey::DescribeTopicPartitions => describe_topic_partitions::handle(ctx, body),
        ApiKey::ElectLeaders => elect_leaders::handle(ctx, body).await,
        ApiKey::AlterPartitionReassignments => {
            alter_partition_reassignments::handle(ctx, body).await
        }
        ApiKey::ListPartitionReassignments => list_partition_reassignments::handle(ctx, body),
        ApiKey::UnregisterBroker => unregister_broker::handle(ctx, body).await,
        other => Outcome::Close(format!("{other:?} is not implemented")),
    }
}

/// A request's services, header and version, owned so that a handler's second stage can keep
/// them after admission returned.
pub(crate) struct Context {
    pub services: Rc<Services>,
    pub header: RequestHeader,
    pub api_key: ApiKey,
    pub version: i16,
    pub peer: Option<SocketAddr>,
    /// The connection's listener and authentication.
    pub session: Rc<Session>,
}

impl Context {
    /// The connection's shard.
    pub fn shard(&self) -> &Rc<Shard> {
        &self.services.shard
    }

    pub fn partitions(&self) -> &Rc<Partitions> {
        &self.services.partitions
    }

    pub fn controller(&self) -> &Rc<Controller> {
        &self.services.controller
    }

    pub fn groups(&self) -> &Rc<GroupCoordinator> {
        &self.services.groups
    }

    pub fn txns(&self) -> &Rc<TxnCoordinator> {
        &self.services.txns
    }

    pub fn cluster(&self) -> &Rc<Cluster> {
        &self.services.cluster
    }

    /// Whether the connection's principal may do `operation` on `name` (always without an
    /// authorizer; see `security::acl`).
    pub fn allowed(&self, operation: Operation, resource_type: ResourceType, name: &str) -> bool {
        self.services.security.authorize(&self.session, operation, resource_type, name)
    }

    /// `allowed` on the cluster resource.
    pub fn cluster_allowed(&self, operation: Operation) -> bool {
        self.allowed(operation, ResourceType::Cluster, CLUSTER_NAME)
    }

    /// Kafka's authorized-operations bitfield of a resource for the principal: every
    /// supported operation it may do (all of them without an authorizer, as Kafka answers).
    pub fn authorized_operations(&self, resource_type: ResourceType, name: &str) -> i32 {
        let supported = resource_type.supported_operations().iter().copied();
        operations_bitfield(supported.filter(|op| self.allowed(*op, resource_type, name)))
    }

    pub fn topic_allowed(&self, operation: Operation, topic: &str) -> bool {
        self.allowed(operation, ResourceType::Topic, topic)
    }

    pub fn group_allowed(&self, operation: Operation, group: &str) -> bool {
        self.allowed(operation, ResourceType::Group, group)
    }

    /// Whether the principal may create `topic` (auto-creation): CREATE on the cluster or on
    /// the topic, as Kafka asks.
    pub fn may_create_topic(&self, topic: &str) -> bool {
        self.cluster_allowed(Operation::Create) || self.topic_allowed(Operation::Create, topic)
    }

    /// WRITE on the transactional id, what every transactional request needs.
    pub fn txn_allowed(&self, transactional_id: &str) -> bool {
        self.allowed(Operation::Write, ResourceType::TransactionalId, transactional_id)
    }

    /// The listener the request came in on.
    pub fn listener(&self) -> &crate::config::Listener {
        &self.services.shard.config.listeners[self.session.listener]
    }

    /// Decodes the request body, or gives the `Close` outcome to return.
    pub fn decode<T: Decodable>(&self, mut body: Bytes) -> Result<T, Outcome> {
        T::decode(&mut body, self.version).map_err(|e| {
            Outcome::Close(format!("cannot decode {:?} v{}: {e}", self.api_key, self.version))
        })
    }

    /// Encodes a whole response frame: length, header, body; counts its error codes.
    pub fn reply<T: Encodable + ErrorCodes>(&self, body: &T) -> Outcome {
        let metrics = &self.services.shard.metrics;
        let api_key = self.header.request_api_key;
        body.error_codes(&mut |code| metrics.error(api_key, code));
        let mut out = BytesMut::with_capacity(256);
        out.put_i32(0);
        let header_version = self.api_key.response_header_version(self.version);
        put_response_header(&mut out, self.header.correlation_id, header_version);
        if let Err(e) = body.encode(&mut out, self.version) {
            return Outcome::Close(format!(
                "cannot encode {:?} v{}: {e}",
                self.api_key, self.version
            ));
        }
        let size = (out.len() - 4) as i32;
        out[0..4].copy_from_slice(&size.to_be_bytes());
        Outcome::Reply(vec![ReadChunk::Memory(out.freeze())])
    }
}

pub(crate) fn str_bytes(text: &str) -> kafka_protocol::protocol::StrBytes {
    kafka_protocol::protocol::StrBytes::from_string(text.to_string())
}
