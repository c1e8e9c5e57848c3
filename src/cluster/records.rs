//! The metadata log's records: what the leader appends and every node applies
//! (`state::MetadataState::apply`). Pure: encode and decode only.
//!
//! Each record is one Raft entry's data, byte by byte (big-endian):
//!
//! ```text
//!   0      1      2 ..
//!   +------+------+------------------------------------------------+
//!   | ver  | type | fields of the type                             |
//!   +------+------+------------------------------------------------+
//!   ver 0
//!   type 1 LeaderChange    leader_id: i32, term: u64
//!   type 2 RegisterBroker  node_id: i32, host: string, port: u16
//!   type 3 ClusterId       cluster_id: string
//!   type 4 CreateTopic     request, name: string, topic_id: 16 bytes, leaders, overrides
//!   type 5 DeleteTopic     request, name: string
//!   type 6 CreatePartitions request, name: string, count: i32, leaders (of the new ones)
//!   type 7 AlterTopicConfig request, name: string, overrides
//!   type 8 InternalTopic   name: string, leaders
//!   type 9 RegisterBroker  node_id: i32, host: string, port: u16, incarnation: u64
//!   type 10 FenceBroker    node_id: i32, broker_epoch: u64, reason: u8
//!   type 11 UnfenceBroker  node_id: i32, broker_epoch: u64
//!   type 12 PartitionChange topic_id: 16 bytes, partition: i32, leader: i32,
//!                          leader_epoch: i32, isr
//!   type 13 CreateTopic    request, name: string, topic_id: 16 bytes, replicas, overrides
//!   type 14 CreatePartitions request, name: string, count: i32, replicas (of the new ones)
//!   type 15 RegisterBroker node_id: i32, host: string, port: u16, incarnation: u64,
//!                          rack: string
//!   type 16 AlterReassignment request, name: string, partition: i32,
//!                          allow_factor_change: u8, target: u8 present + isr
//!   type 17 ElectLeader    request, name: string, partition: i32, election: u8
//!   type 18 CompleteReassignment topic_id: 16 bytes, partition: i32, leader_epoch: i32
//!   type 19 AlterConfigs   request, resource_type: i8, name: string, overrides (the
//!                          resource's whole dynamic config set; Kafka's ConfigRecord)
//!   type 20 PartitionChange topic_id: 16 bytes, partition: i32, leader: i32,
//!                          leader_epoch: i32, partition_epoch: i32, isr (the new epochs)
//!   type 21 AlterPartition topic_id: 16 bytes, partition: i32, leader: i32,
//!                          leader_epoch: i32, partition_epoch: i32, isr (the epochs the
//!                          leader saw; Kafka's AlterPartition request)
//!   type 22 ProducerIds    request, legacy_end: i64, block_size: i32 (a block of producer
//!                          ids for the proposing node; Kafka's AllocateProducerIds and
//!                          ProducerIdsRecord)
//!   type 23 UnregisterBroker request, node_id: i32 (Kafka's UnregisterBroker request and
//!                          UnregisterBrokerRecord)
//!   type 24 ScramCredential request, user: string, mechanism: u8, iterations: u32,
//!                          salt: bytes, stored_key: bytes, server_key: bytes,
//!                          if_absent: u8 (Kafka's UserScramCredentialRecord: salted keys,
//!                          never a password)
//!   type 25 RemoveScramCredential request, user: string, mechanism: u8 (Kafka's
//!                          RemoveUserScramCredentialRecord)
//!   type 26 AccessControlEntry request, acl (Kafka's AccessControlEntryRecord)
//!   type 27 RemoveAccessControlEntry request, acl (Kafka's RemoveAccessControlEntryRecord)
//!
//!   ver 1: as ver 0, with every config value of `overrides` a `long string` (written only
//!   for a record with a value longer than a string holds; ver 0 otherwise, so a cluster
//!   without such values writes only what the previous version reads)
//!
//!   string    u16 length + UTF-8
//!   long string u32 length + UTF-8
//!   request   node_id: i32, serial: u64 (the proposer's RequestId)
//!   leaders   u32 count + i32 node id per partition, in partition order
//!   overrides u32 count + (name: string, value: string) per config, sorted by name
//!   isr       u32 count + i32 node id per in-sync replica
//!   replicas  u32 count + per partition (in partition order) its replicas as `isr`, the
//!             preferred leader first
//!   reason    0 the session expired, 1 a controlled shutdown
//!   election  0 preferred, 1 unclean (Kafka's ElectionType)
//!   mechanism 1 SCRAM-SHA-256, 2 SCRAM-SHA-512 (the type ids of AlterUserScramCredentials)
//!   bytes     u16 length + bytes
//!   acl       resource_type: u8, name: string, pattern_type: u8, principal: string,
//!             host: string, operation: u8, permission: u8 (Kafka's wire values)
//! ```
//!
//! Type 2 is the registration of the first version, without an incarnation: it is still
//! read (journals written before broker epochs replay) as a registration of incarnation 0,
//! and a registration is written as type 9 without a rack, or as type 15 with one (so that
//! a cluster whose brokers have no `--rack` still writes only records the previous version
//! reads). Types 4 and 6 (one replica per
//! partition, before replication) are read as partitions of one replica; topics are now
//! written as types 13 and 14. Type 12 (before partition epochs, when every change of a
//! partition moved its leader epoch) is read as a PartitionChange whose partition epoch is
//! its leader epoch, which it was then; changes are now written as type 20, and a leader's
//! ISR changes as type 21. Types never change their meaning; a new field is a new type.
//! Version 1 changes only how config values are written (Kafka has no bound on a config
//! value; a u16 length held 64 KiB), for the types that have `overrides` (7, 13, 19, and
//! 4 when read); a previous version refuses such a record as one of an unknown version.
//!
//! Topic records carry everything their apply needs (the placement and the topic id are
//! decided by the proposer), so that applying them is deterministic on every node; whether
//! they take effect (the name is free, the topic exists) is decided at apply time
//! (`state`), and the outcome answers the request named by `request`.
//!
//! An entry with no data is Raft's own no-op, appended by every new leader (raft-rs does it
//! on becoming leader); it is applied as nothing. A record of an unknown version or type is
//! an error: a node must never skip a committed record it does not understand silently.

use std::collections::BTreeMap;

use crate::model::{LeaderEpoch, NodeId, PartitionEpoch};
use crate::security::acl::{AclBinding, Operation, PatternType, Permission, ResourceType};
use crate::security::scram::{Credential, Mechanism};

/// The record format, and the one whose config values have u32 lengths (written only
/// when one is longer than `STRING_BYTES_MAX`).
const RECORD_VERSION: u8 = 0;
const RECORD_VERSION_LONG_VALUES: u8 = 1;
const TYPE_LEADER_CHANGE: u8 = 1;
const TYPE_REGISTER_BROKER: u8 = 2;
const TYPE_CLUSTER_ID: u8 = 3;
const TYPE_CREATE_TOPIC: u8 = 4;
const TYPE_DELETE_TOPIC: u8 = 5;
const TYPE_CREATE_PARTITIONS: u8 = 6;
const TYPE_ALTER_TOPIC_CONFIG: u8 = 7;
const TYPE_INTERNAL_TOPIC: u8 = 8;
const TYPE_REGISTER_BROKER_INCARNATION: u8 = 9;
const TYPE_FENCE_BROKER: u8 = 10;
const TYPE_UNFENCE_BROKER: u8 = 11;
const TYPE_PARTITION_CHANGE: u8 = 12;
const TYPE_CREATE_TOPIC_REPLICAS: u8 = 13;
const TYPE_CREATE_PARTITIONS_REPLICAS: u8 = 14;
const TYPE_REGISTER_BROKER_RACK: u8 = 15;
const TYPE_ALTER_REASSIGNMENT: u8 = 16;
const TYPE_ELECT_LEADER: u8 = 17;
const TYPE_COMPLETE_REASSIGNMENT: u8 = 18;
const TYPE_ALTER_CONFIGS: u8 = 19;
const TYPE_PARTITION_CHANGE_EPOCHS: u8 = 20;
const TYPE_ALTER_PARTITION: u8 = 21;
const TYPE_PRODUCER_IDS: u8 = 22;
const TYPE_UNREGISTER_BROKER: u8 = 23;
const TYPE_SCRAM_CREDENTIAL: u8 = 24;
const TYPE_REMOVE_SCRAM_CREDENTIAL: u8 = 25;
const TYPE_ACCESS_CONTROL_ENTRY: u8 = 26;
const TYPE_REMOVE_ACCESS_CONTROL_ENTRY: u8 = 27;

/// Who asked for a change: the proposing node and its serial number, unique per node (the
/// serials of one process start at a random point, so a restarted node does not reuse the
/// ids of proposals of its previous run that may still commit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId {
    pub node_id: NodeId,
    pub serial: u64,
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.node_id, self.serial)
    }
}

/// One committed change to the cluster's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetadataRecord {
    /// A leader took office in `term` (Kafka's LeaderChangeMessage): written by the new
    /// leader after raft-rs's empty entry, so that every node's log names its leaders.
    LeaderChange {
        leader_id: NodeId,
        term: u64,
    },
    /// A broker announces itself and the address clients reach it at (Kafka's
    /// RegisterBrokerRecord): once per process start, told apart by its random
    /// `incarnation` (Kafka's incarnation id; 0 in the first version's records). The
    /// record's index is the broker epoch; a new registration comes in fenced. `rack`:
    /// Kafka's broker.rack (None in records without one).
    RegisterBroker {
        node_id: NodeId,
        host: String,
        port: u16,
        incarnation: u64,
        rack: Option<String>,
    },
    /// The cluster's id (Kafka's cluster.id), proposed by the first leader; the first one
    /// committed wins and every node answers with it.
    ClusterId {
        cluster_id: String,
    },
    /// The active controller stops counting on a broker (Kafka's BrokerRegistrationChange
    /// with fenced set): its session expired, or it asked to shut down. Only the
    /// registration of `broker_epoch` is fenced (a newer one is left alone).
    FenceBroker {
        node_id: NodeId,
        broker_epoch: u64,
        reason: FenceReason,
    },
    /// A fenced broker heartbeats again (with the epoch of its registration).
    UnfenceBroker {
        node_id: NodeId,
        broker_epoch: u64,
    },
    /// The active controller changes a partition's leader or ISR (Kafka's
    /// PartitionChangeRecord): `leader` (NONE: no leader) in `leader_epoch` (the
    /// partition's, one more when the leader changes) with `isr`, in `partition_epoch`,
    /// which must be the partition's + 1, so that a change committed twice, or proposed by
    /// a controller that had not applied the whole log, takes effect once.
    PartitionChange {
        topic_id: [u8; 16],
        partition: i32,
        leader: NodeId,
        leader_epoch: LeaderEpoch,
        partition_epoch: PartitionEpoch,
        isr: Vec<NodeId>,
    },
    /// A partition's leader asks for a new ISR (Kafka's AlterPartition request): `leader`
    /// in `leader_epoch` saw the partition at `partition_epoch`. Applied only if both are
    /// still the partition's (else FENCED_LEADER_EPOCH or INVALID_UPDATE_VERSION, as
    /// Kafka's controller answers), and then moves the partition epoch only.
    AlterPartition {
        topic_id: [u8; 16],
        partition: i32,
        leader: NodeId,
        leader_epoch: LeaderEpoch,
        partition_epoch: PartitionEpoch,
        isr: Vec<NodeId>,
    },
    /// A new topic: each partition's replicas, the preferred leader first.
    CreateTopic {
        request: RequestId,
        name: String,
        topic_id: [u8; 16],
        replicas: Vec<Vec<NodeId>>,
        overrides: BTreeMap<String, String>,
    },
    DeleteTopic {
        request: RequestId,
        name: String,
    },
    /// The topic grows to `count` partitions; `replicas` are the new partitions' replicas.
    CreatePartitions {
        request: RequestId,
        name: String,
        count: i32,
        replicas: Vec<Vec<NodeId>>,
    },
    /// The topic's config overrides are replaced by `overrides`.
    AlterTopicConfig {
        request: RequestId,
        name: String,
        overrides: BTreeMap<String, String>,
    },
    /// The dynamic configs of a broker resource (name "": the cluster default; "<id>": one
    /// broker) or a group resource are replaced by `configs` (Kafka's ConfigRecord, one
    /// resource's whole set; `model::dynamic_config`).
    AlterConfigs {
        request: RequestId,
        resource_type: i8,
        name: String,
        configs: BTreeMap<String, String>,
    },
    /// The placement of an internal topic (`__consumer_offsets`, `__transaction_state`):
    /// the leader of each partition coordinates the groups (transactional ids) that hash to
    /// it. Proposed by the leader once every voter is registered; the first one wins.
    InternalTopic {
        name: String,
        leaders: Vec<NodeId>,
    },
    /// AlterPartitionReassignments of one partition: move it to `target` (Kafka's
    /// reassignment: the new replicas are added, catch up and join the ISR, then the ones
    /// not in `target` leave, `CompleteReassignment`), or cancel the one in progress (None:
    /// back to the replicas it had). Whether and how it applies is decided at apply time.
    AlterReassignment {
        request: RequestId,
        name: String,
        partition: i32,
        /// Kafka's allow_replication_factor_change (AlterPartitionReassignments v1).
        allow_factor_change: bool,
        target: Option<Vec<NodeId>>,
    },
    /// ElectLeaders of one partition, decided at apply time against the partition's state.
    ElectLeader {
        request: RequestId,
        name: String,
        partition: i32,
        election: Election,
    },
    /// A node asks for the next block of `block_size` producer ids (Kafka's
    /// AllocateProducerIds; the block is decided at apply time, where Kafka's controller
    /// writes it into its ProducerIdsRecord: the same on every node, so the state's next
    /// producer id is Kafka's). `legacy_end`: every id this node handed out before blocks
    /// were on the log (interleaved by node id) is below it; the first block of the
    /// cluster starts above every node's (`state::ProducerIds`).
    ProducerIds {
        request: RequestId,
        legacy_end: i64,
        block_size: i32,
    },
    /// UnregisterBroker (Kafka's, `kafka-cluster.sh unregister`): the broker's registration
    /// goes (its partitions move as for a fenced broker) and, a broker-only node, it leaves
    /// the Raft configuration; decided at apply time (BROKER_ID_NOT_REGISTERED).
    UnregisterBroker {
        request: RequestId,
        node_id: NodeId,
    },
    /// The active controller ends a reassignment whose added replicas all joined the ISR:
    /// the replicas being removed leave (Kafka's second PartitionChangeRecord), in
    /// `leader_epoch`, which must be the partition's epoch + 1.
    /// A user's SCRAM credential for one mechanism is set (Kafka's
    /// UserScramCredentialRecord): salted keys only. `if_absent`: only when the user has
    /// none for the mechanism yet (the bootstrap credentials, and a node's credentials file
    /// from before the log carried them), decided at apply time.
    ScramCredential {
        request: RequestId,
        user: String,
        mechanism: Mechanism,
        credential: Credential,
        if_absent: bool,
    },
    /// A user's SCRAM credential for one mechanism is removed (RESOURCE_NOT_FOUND when it
    /// has none).
    RemoveScramCredential {
        request: RequestId,
        user: String,
        mechanism: Mechanism,
    },
    /// An ACL is added (nothing when it is there already, as in Kafka).
    AccessControlEntry {
        request: RequestId,
        acl: AclBinding,
    },
    /// An ACL is removed (nothing when it is not there).
    RemoveAccessControlEntry {
        request: RequestId,
        acl: AclBinding,
    },
    CompleteReassignment {
        topic_id: [u8; 16],
        partition: i32,
        leader_epoch: LeaderEpoch,
    },
}

/// Kafka's ElectionType.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Election {
    /// The first replica leads, if it is live and in sync.
    Preferred,
    /// A leaderless partition gets a live in-sync replica, or else any live replica (what
    /// only the ISR had may be lost).
    Unclean,
}

/// Why a broker was fenced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FenceReason {
    /// No heartbeat within the session timeout.
    SessionExpired,
    /// The broker is shutting down (its heartbeat said `want_shut_down`).
    ControlledShutdown,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("record is {0} bytes, shorter than its fields")]
    Truncated(usize),
    #[error("record version {0} is unknown (written by a newer spate?)")]
    Version(u8),
    #[error("record type {0} is unknown (written by a newer spate?)")]
    Type(u8),
    #[error("record has a host that is not UTF-8")]
    Host,
    #[error("record has {0} bytes after its fields")]
    Trailing(usize),
    #[error("record has a string that is not UTF-8")]
    Text,
    #[error("record has a fence reason {0} that is unknown")]
    Reason(u8),
    #[error("record has an election type {0} that is unknown")]
    Election(u8),
    #[error("record has a SCRAM mechanism or ACL field {0} that is unknown")]
    Security(u8),
}

impl MetadataRecord {
    pub fn encode(&self) -> Vec<u8> {
        let long = self.overrides().is_some_and(has_long_values);
        let mut out = vec![if long { RECORD_VERSION_LONG_VALUES } else { RECORD_VERSION }];
        let put_overrides = |out: &mut Vec<u8>, overrides: &BTreeMap<String, String>| {
            put_overrides(out, overrides, long)
        };
        match self {
            MetadataRecord::LeaderChange { leader_id, term } => {
                out.push(TYPE_LEADER_CHANGE);
                out.extend_from_slice(&leader_id.0.to_be_bytes());
                out.extend_from_slice(&term.to_be_bytes());
            }
            MetadataRecord::RegisterBroker { node_id, host, port, incarnation, rack } => {
                out.push(match rack {
                    None => TYPE_REGISTER_BROKER_INCARNATION,
                    Some(_) => TYPE_REGISTER_BROKER_RACK,
                });
                out.extend_from_slice(&node_id.0.to_be_bytes());
                put_string(&mut out, host);
                out.extend_from_slice(&port.to_be_bytes());
                out.extend_from_slice(&incarnation.to_be_bytes());
                if let Some(rack) = rack {
                    put_string(&mut out, rack);
                }
            }
            MetadataRecord::FenceBroker { node_id, broker_epoch, reason } => {
                out.push(TYPE_FENCE_BROKER);
                out.extend_from_slice(&node_id.0.to_be_bytes());
                out.extend_from_slice(&broker_epoch.to_be_bytes());
                out.push(match reason {
                    FenceReason::SessionExpired => 0,
                    FenceReason::ControlledShutdown => 1,
                });
            }
            MetadataRecord::UnfenceBroker { node_id, broker_epoch } => {
                out.push(TYPE_UNFENCE_BROKER);
                out.extend_from_slice(&node_id.0.to_be_bytes());
                out.extend_from_slice(&broker_epoch.to_be_bytes());
            }
            MetadataRecord::PartitionChange {
                topic_id,
                partition,
                leader,
                leader_epoch,
                partition_epoch,
                isr,
            }
            | MetadataRecord::AlterPartition {
                topic_id,
                partition,
                leader,
                leader_epoch,
                partition_epoch,
                isr,
            } => {
                out.push(match self {
                    MetadataRecord::PartitionChange { .. } => TYPE_PARTITION_CHANGE_EPOCHS,
                    _ => TYPE_ALTER_PARTITION,
                });
                out.extend_from_slice(topic_id);
                out.extend_from_slice(&partition.to_be_bytes());
                out.extend_from_slice(&leader.0.to_be_bytes());
                out.extend_from_slice(&leader_epoch.0.to_be_bytes());
                out.extend_from_slice(&partition_epoch.0.to_be_bytes());
                put_leaders(&mut out, isr);
            }
            MetadataRecord::ClusterId { cluster_id } => {
                out.push(TYPE_CLUSTER_ID);
                put_string(&mut out, cluster_id);
            }
            MetadataRecord::CreateTopic { request, name, topic_id, replicas, overrides } => {
                out.push(TYPE_CREATE_TOPIC_REPLICAS);
                put_request(&mut out, request);
                put_string(&mut out, name);
                out.extend_from_slice(topic_id);
                put_replicas(&mut out, replicas);
                put_overrides(&mut out, overrides);
            }
            MetadataRecord::DeleteTopic { request, name } => {
                out.push(TYPE_DELETE_TOPIC);
                put_request(&mut out, request);
                put_string(&mut out, name);
            }
            MetadataRecord::CreatePartitions { request, name, count, replicas } => {
                out.push(TYPE_CREATE_PARTITIONS_REPLICAS);
                put_request(&mut out, request);
                put_string(&mut out, name);
                out.extend_from_slice(&count.to_be_bytes());
                put_replicas(&mut out, replicas);
            }
            MetadataRecord::AlterTopicConfig { request, name, overrides } => {
                out.push(TYPE_ALTER_TOPIC_CONFIG);
                put_request(&mut out, request);
                put_string(&mut out, name);
                put_overrides(&mut out, overrides);
            }
            MetadataRecord::AlterConfigs { request, resource_type, name, configs } => {
                out.push(TYPE_ALTER_CONFIGS);
                put_request(&mut out, request);
                out.push(*resource_type as u8);
                put_string(&mut out, name);
                put_overrides(&mut out, configs);
            }
            MetadataRecord::InternalTopic { name, leaders } => {
                out.push(TYPE_INTERNAL_TOPIC);
                put_string(&mut out, name);
                put_leaders(&mut out, leaders);
            }
            MetadataRecord::AlterReassignment {
                request,
                name,
                partition,
                allow_factor_change,
                target,
            } => {
                out.push(TYPE_ALTER_REASSIGNMENT);
                put_request(&mut out, request);
                put_string(&mut out, name);
                out.extend_from_slice(&partition.to_be_bytes());
                out.push(u8::from(*allow_factor_change));
                match target {
                    Some(target) => {
                        out.push(1);
                        put_leaders(&mut out, target);
                    }
                    None => out.push(0),
                }
            }
            MetadataRecord::ElectLeader { request, name, partition, election } => {
                out.push(TYPE_ELECT_LEADER);
                put_request(&mut out, request);
                put_string(&mut out, name);
                out.extend_from_slice(&partition.to_be_bytes());
                out.push(match election {
                    Election::Preferred => 0,
                    Election::Unclean => 1,
                });
            }
            MetadataRecord::ProducerIds { request, legacy_end, block_size } => {
                out.push(TYPE_PRODUCER_IDS);
                put_request(&mut out, request);
                out.extend_from_slice(&legacy_end.to_be_bytes());
                out.extend_from_slice(&block_size.to_be_bytes());
            }
            MetadataRecord::UnregisterBroker { request, node_id } => {
                out.push(TYPE_UNREGISTER_BROKER);
                put_request(&mut out, request);
                out.extend_from_slice(&node_id.0.to_be_bytes());
            }
            MetadataRecord::ScramCredential { request, user, mechanism, credential, if_absent } => {
                out.push(TYPE_SCRAM_CREDENTIAL);
                put_request(&mut out, request);
                put_string(&mut out, user);
                out.push(mechanism.type_id() as u8);
                out.extend_from_slice(&credential.iterations.to_be_bytes());
                for bytes in [&credential.salt, &credential.stored_key, &credential.server_key] {
                    put_bytes(&mut out, bytes);
                }
                out.push(u8::from(*if_absent));
            }
            MetadataRecord::RemoveScramCredential { request, user, mechanism } => {
                out.push(TYPE_REMOVE_SCRAM_CREDENTIAL);
                put_request(&mut out, request);
                put_string(&mut out, user);
                out.push(mechanism.type_id() as u8);
            }
            MetadataRecord::AccessControlEntry { request, acl }
            | MetadataRecord::RemoveAccessControlEntry { request, acl } => {
                out.push(match self {
                    MetadataRecord::AccessControlEntry { .. } => TYPE_ACCESS_CONTROL_ENTRY,
                    _ => TYPE_REMOVE_ACCESS_CONTROL_ENTRY,
                });
                put_request(&mut out, request);
                put_acl(&mut out, acl);
            }
            MetadataRecord::CompleteReassignment { topic_id, partition, leader_epoch } => {
                out.push(TYPE_COMPLETE_REASSIGNMENT);
                out.extend_from_slice(topic_id);
                out.extend_from_slice(&partition.to_be_bytes());
                out.extend_from_slice(&leader_epoch.0.to_be_bytes());
            }
        }
        out
    }

    /// The config values the record carries, if it is of a type that has them.
    fn overrides(&self) -> Option<&BTreeMap<String, String>> {
        match self {
            MetadataRecord::CreateTopic { overrides, .. }
            | MetadataRecord::AlterTopicConfig { overrides, .. }
            | MetadataRecord::AlterConfigs { configs: overrides, .. } => Some(overrides),
            _ => None,
        }
    }

    /// The request a topic record answers, if it is one.
    pub fn request(&self) -> Option<RequestId> {
        match self {
            MetadataRecord::CreateTopic { request, .. }
            | MetadataRecord::DeleteTopic { request, .. }
            | MetadataRecord::CreatePartitions { request, .. }
            | MetadataRecord::AlterTopicConfig { request, .. }
            | MetadataRecord::AlterConfigs { request, .. }
            | MetadataRecord::AlterReassignment { request, .. }
            | MetadataRecord::ElectLeader { request, .. }
            | MetadataRecord::ProducerIds { request, .. }
            | MetadataRecord::UnregisterBroker { request, .. }
            | MetadataRecord::ScramCredential { request, .. }
            | MetadataRecord::RemoveScramCredential { request, .. }
            | MetadataRecord::AccessControlEntry { request, .. }
            | MetadataRecord::RemoveAccessControlEntry { request, .. } => Some(*request),
            _ => None,
        }
    }

    /// The partition (topic id, index) and the epoch a change of one partition names
    /// (PartitionChange and AlterPartition their partition epoch, CompleteReassignment its
    /// leader epoch): what the active controller's proposals are throttled by.
    pub fn partition_epoch(&self) -> Option<([u8; 16], i32, i32)> {
        match self {
            MetadataRecord::PartitionChange { topic_id, partition, partition_epoch, .. }
            | MetadataRecord::AlterPartition { topic_id, partition, partition_epoch, .. } => {
                Some((*topic_id, *partition, partition_epoch.0))
            }
            MetadataRecord::CompleteReassignment { topic_id, partition, leader_epoch } => {
                Some((*topic_id, *partition, leader_epoch.0))
            }
            _ => None,
        }
    }

    pub fn decode(data: &[u8]) -> Result<MetadataRecord, RecordError> {
        let mut reader = Reader::new(data);
        let version = reader.u8()?;
        if version != RECORD_VERSION && version != RECORD_VERSION_LONG_VALUES {
            return Err(RecordError::Version(version));
        }
        reader.long_values = version == RECORD_VERSION_LONG_VALUES;
        let record = match reader.u8()? {
            TYPE_LEADER_CHANGE => {
                let leader_id = NodeId(reader.i32()?);
                let term = reader.u64()?;
                MetadataRecord::LeaderChange { leader_id, term }
            }
            kind @ (TYPE_REGISTER_BROKER
            | TYPE_REGISTER_BROKER_INCARNATION
            | TYPE_REGISTER_BROKER_RACK) => {
                let node_id = NodeId(reader.i32()?);
                let host = reader.string().map_err(|e| match e {
                    RecordError::Text => RecordError::Host,
                    e => e,
                })?;
                let port = reader.u16()?;
                let incarnation = if kind == TYPE_REGISTER_BROKER { 0 } else { reader.u64()? };
                let rack =
                    if kind == TYPE_REGISTER_BROKER_RACK { Some(reader.string()?) } else { None };
                MetadataRecord::RegisterBroker { node_id, host, port, incarnation, rack }
            }
            TYPE_FENCE_BROKER => {
                let node_id = NodeId(reader.i32()?);
                let broker_epoch = reader.u64()?;
                let reason = match reader.u8()? {
                    0 => FenceReason::SessionExpired,
                    1 => FenceReason::ControlledShutdown,
                    other => return Err(RecordError::Reason(other)),
                };
                MetadataRecord::FenceBroker { node_id, broker_epoch, reason }
            }
            TYPE_UNFENCE_BROKER => {
                let node_id = NodeId(reader.i32()?);
                MetadataRecord::UnfenceBroker { node_id, broker_epoch: reader.u64()? }
            }
            kind
            @ (TYPE_PARTITION_CHANGE | TYPE_PARTITION_CHANGE_EPOCHS | TYPE_ALTER_PARTITION) => {
                let topic_id = reader.array::<16>()?;
                let partition = reader.i32()?;
                let leader = NodeId(reader.i32()?);
                let leader_epoch = LeaderEpoch(reader.i32()?);
                let partition_epoch = match kind {
                    TYPE_PARTITION_CHANGE => PartitionEpoch(leader_epoch.0),
                    _ => PartitionEpoch(reader.i32()?),
                };
                let isr = reader.leaders()?;
                if kind == TYPE_ALTER_PARTITION {
                    MetadataRecord::AlterPartition {
                        topic_id,
                        partition,
                        leader,
                        leader_epoch,
                        partition_epoch,
                        isr,
                    }
                } else {
                    MetadataRecord::PartitionChange {
                        topic_id,
                        partition,
                        leader,
                        leader_epoch,
                        partition_epoch,
                        isr,
                    }
                }
            }
            TYPE_CLUSTER_ID => MetadataRecord::ClusterId { cluster_id: reader.string()? },
            kind @ (TYPE_CREATE_TOPIC | TYPE_CREATE_TOPIC_REPLICAS) => {
                let request = reader.request()?;
                let name = reader.string()?;
                let topic_id = reader.array::<16>()?;
                let replicas = if kind == TYPE_CREATE_TOPIC {
                    reader.leaders()?.into_iter().map(|leader| vec![leader]).collect()
                } else {
                    reader.replicas()?
                };
                let overrides = reader.overrides()?;
                MetadataRecord::CreateTopic { request, name, topic_id, replicas, overrides }
            }
            TYPE_DELETE_TOPIC => {
                let request = reader.request()?;
                MetadataRecord::DeleteTopic { request, name: reader.string()? }
            }
            kind @ (TYPE_CREATE_PARTITIONS | TYPE_CREATE_PARTITIONS_REPLICAS) => {
                let request = reader.request()?;
                let name = reader.string()?;
                let count = reader.i32()?;
                let replicas = if kind == TYPE_CREATE_PARTITIONS {
                    reader.leaders()?.into_iter().map(|leader| vec![leader]).collect()
                } else {
                    reader.replicas()?
                };
                MetadataRecord::CreatePartitions { request, name, count, replicas }
            }
            TYPE_ALTER_TOPIC_CONFIG => {
                let request = reader.request()?;
                let name = reader.string()?;
                let overrides = reader.overrides()?;
                MetadataRecord::AlterTopicConfig { request, name, overrides }
            }
            TYPE_ALTER_CONFIGS => {
                let request = reader.request()?;
                let resource_type = reader.u8()? as i8;
                let name = reader.string()?;
                let configs = reader.overrides()?;
                MetadataRecord::AlterConfigs { request, resource_type, name, configs }
            }
            TYPE_INTERNAL_TOPIC => {
                let name = reader.string()?;
                MetadataRecord::InternalTopic { name, leaders: reader.leaders()? }
            }
            TYPE_ALTER_REASSIGNMENT => {
                let request = reader.request()?;
                let name = reader.string()?;
                let partition = reader.i32()?;
                let allow_factor_change = reader.u8()? != 0;
                let target = if reader.u8()? != 0 { Some(reader.leaders()?) } else { None };
                MetadataRecord::AlterReassignment {
                    request,
                    name,
                    partition,
                    allow_factor_change,
                    target,
                }
            }
            TYPE_ELECT_LEADER => {
                let request = reader.request()?;
                let name = reader.string()?;
                let partition = reader.i32()?;
                let election = match reader.u8()? {
                    0 => Election::Preferred,
                    1 => Election::Unclean,
                    other => return Err(RecordError::Election(other)),
                };
                MetadataRecord::ElectLeader { request, name, partition, election }
            }
            TYPE_PRODUCER_IDS => {
                let request = reader.request()?;
                let legacy_end = reader.u64()? as i64;
                let block_size = reader.i32()?;
                MetadataRecord::ProducerIds { request, legacy_end, block_size }
            }
            TYPE_UNREGISTER_BROKER => {
                let request = reader.request()?;
                MetadataRecord::UnregisterBroker { request, node_id: NodeId(reader.i32()?) }
            }
            TYPE_SCRAM_CREDENTIAL => {
                let request = reader.request()?;
                let user = reader.string()?;
                let mechanism = reader.mechanism()?;
                let credential = reader.credential()?;
                let if_absent = reader.u8()? != 0;
                MetadataRecord::ScramCredential { request, user, mechanism, credential, if_absent }
            }
            TYPE_REMOVE_SCRAM_CREDENTIAL => {
                let request = reader.request()?;
                let user = reader.string()?;
                MetadataRecord::RemoveScramCredential {
                    request,
                    user,
                    mechanism: reader.mechanism()?,
                }
            }
            TYPE_ACCESS_CONTROL_ENTRY => {
                let request = reader.request()?;
                MetadataRecord::AccessControlEntry { request, acl: reader.acl()? }
            }
            TYPE_REMOVE_ACCESS_CONTROL_ENTRY => {
                let request = reader.request()?;
                MetadataRecord::RemoveAccessControlEntry { request, acl: reader.acl()? }
            }
            TYPE_COMPLETE_REASSIGNMENT => {
                let topic_id = reader.array::<16>()?;
                let partition = reader.i32()?;
                let leader_epoch = LeaderEpoch(reader.i32()?);
                MetadataRecord::CompleteReassignment { topic_id, partition, leader_epoch }
            }
            other => return Err(RecordError::Type(other)),
        };
        let left = data.len() - reader.position;
        if left > 0 {
            return Err(RecordError::Trailing(left));
        }
        Ok(record)
    }
}

/// One line for the log: topic records by name, counts and request, not every leader.
impl std::fmt::Display for MetadataRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MetadataRecord::CreateTopic { request, name, topic_id, replicas, overrides } => {
                let id = uuid::Uuid::from_bytes(*topic_id);
                let partitions = replicas.len();
                write!(f, "CreateTopic {name} id {id}, {partitions} partitions, ")?;
                write!(f, "{} overrides, request {request}", overrides.len())
            }
            MetadataRecord::DeleteTopic { request, name } => {
                write!(f, "DeleteTopic {name}, request {request}")
            }
            MetadataRecord::CreatePartitions { request, name, count, .. } => {
                write!(f, "CreatePartitions {name} to {count}, request {request}")
            }
            MetadataRecord::AlterTopicConfig { request, name, overrides } => {
                let overrides = Shortened(overrides);
                write!(f, "AlterTopicConfig {name} {overrides}, request {request}")
            }
            MetadataRecord::AlterConfigs { request, resource_type, name, configs } => {
                let configs = Shortened(configs);
                write!(f, "AlterConfigs {resource_type}/{name:?} {configs}, request {request}")
            }
            MetadataRecord::InternalTopic { name, leaders } => {
                write!(f, "InternalTopic {name}, {} partitions", leaders.len())
            }
            MetadataRecord::PartitionChange {
                topic_id,
                partition,
                leader,
                leader_epoch,
                partition_epoch,
                isr,
            } => {
                let id = uuid::Uuid::from_bytes(*topic_id);
                write!(f, "PartitionChange {id}-{partition} leader {leader} epoch {leader_epoch}")?;
                write!(f, " partition epoch {partition_epoch} isr {isr:?}")
            }
            MetadataRecord::AlterPartition {
                topic_id,
                partition,
                leader,
                leader_epoch,
                partition_epoch,
                isr,
            } => {
                let id = uuid::Uuid::from_bytes(*topic_id);
                write!(f, "AlterPartition {id}-{partition} by {leader} in epoch {leader_epoch}")?;
                write!(f, " at partition epoch {partition_epoch} isr {isr:?}")
            }
            MetadataRecord::CompleteReassignment { topic_id, partition, leader_epoch } => {
                let id = uuid::Uuid::from_bytes(*topic_id);
                write!(f, "CompleteReassignment {id}-{partition} epoch {}", leader_epoch.0)
            }
            // The salted keys stay out of the log.
            MetadataRecord::ScramCredential { request, user, mechanism, credential, if_absent } => {
                write!(f, "ScramCredential {user:?} {} ", mechanism.name())?;
                write!(f, "iterations {}", credential.iterations)?;
                let absent = if *if_absent { " if absent" } else { "" };
                write!(f, "{absent}, request {request}")
            }
            MetadataRecord::RemoveScramCredential { request, user, mechanism } => {
                write!(f, "RemoveScramCredential {user:?} {}, request {request}", mechanism.name())
            }
            MetadataRecord::AccessControlEntry { request, acl } => {
                write!(f, "AccessControlEntry {}, request {request}", acl_text(acl))
            }
            MetadataRecord::RemoveAccessControlEntry { request, acl } => {
                write!(f, "RemoveAccessControlEntry {}, request {request}", acl_text(acl))
            }
            other => write!(f, "{other:?}"),
        }
    }
}

/// An ACL for a log line, as kafka-acls prints one.
fn acl_text(acl: &AclBinding) -> String {
    format!(
        "{} {}:{:?} {} from {} {} {}",
        acl.resource_type.name(),
        acl.pattern.name(),
        acl.name,
        acl.principal,
        acl.host,
        acl.permission.name(),
        acl.operation.name()
    )
}

/// Configs for a log line: each value as its first `SHORTENED_VALUE_CHARS` characters and
/// its length when longer (a value may be megabytes).
struct Shortened<'a>(&'a BTreeMap<String, String>);

const SHORTENED_VALUE_CHARS: usize = 64;

impl std::fmt::Display for Shortened<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut map = f.debug_map();
        for (name, value) in self.0 {
            match value.char_indices().nth(SHORTENED_VALUE_CHARS) {
                Some((end, _)) => {
                    let shortened = format!("{}... ({} bytes)", &value[..end], value.len());
                    map.entry(name, &shortened)
                }
                None => map.entry(name, value),
            };
        }
        map.finish()
    }
}

/// The longest string a record holds (a u16 length); longer config values are written as
/// long strings (record version 1, snapshot version 6).
pub const STRING_BYTES_MAX: usize = u16::MAX as usize;

/// Whether a config value is too long for a string (so needs a long string).
pub(super) fn has_long_values(overrides: &BTreeMap<String, String>) -> bool {
    overrides.values().any(|value| value.len() > STRING_BYTES_MAX)
}

/// Strings longer than a u16 length are cut (names are at most 249 bytes, config values
/// are checked by the proposer, `controller::quorum`; a host name is at most 253).
pub(super) fn put_string(out: &mut Vec<u8>, text: &str) {
    let mut length = text.len().min(STRING_BYTES_MAX);
    while !text.is_char_boundary(length) {
        length -= 1;
    }
    out.extend_from_slice(&(length as u16).to_be_bytes());
    out.extend_from_slice(&text.as_bytes()[..length]);
}

/// Bytes of at most a u16 length (a SCRAM salt or key: 64 bytes at most from a client's
/// hash, a salt as the client chose it, bounded by the proposer).
pub(super) fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    let length = bytes.len().min(STRING_BYTES_MAX);
    out.extend_from_slice(&(length as u16).to_be_bytes());
    out.extend_from_slice(&bytes[..length]);
}

pub(super) fn put_acl(out: &mut Vec<u8>, acl: &AclBinding) {
    out.push(acl.resource_type as u8);
    put_string(out, &acl.name);
    out.push(acl.pattern as u8);
    put_string(out, &acl.principal);
    put_string(out, &acl.host);
    out.push(acl.operation as u8);
    out.push(acl.permission as u8);
}

pub(super) fn put_request(out: &mut Vec<u8>, request: &RequestId) {
    out.extend_from_slice(&request.node_id.0.to_be_bytes());
    out.extend_from_slice(&request.serial.to_be_bytes());
}

pub(super) fn put_leaders(out: &mut Vec<u8>, leaders: &[NodeId]) {
    out.extend_from_slice(&(leaders.len() as u32).to_be_bytes());
    for leader in leaders {
        out.extend_from_slice(&leader.0.to_be_bytes());
    }
}

pub(super) fn put_replicas(out: &mut Vec<u8>, replicas: &[Vec<NodeId>]) {
    out.extend_from_slice(&(replicas.len() as u32).to_be_bytes());
    for set in replicas {
        put_leaders(out, set);
    }
}

/// `long`: values as long strings (u32 lengths, never cut); else as strings, which must
/// then hold them (`has_long_values` is false).
pub(super) fn put_overrides(out: &mut Vec<u8>, overrides: &BTreeMap<String, String>, long: bool) {
    assert!(long || !has_long_values(overrides), "a config value longer than a string");
    out.extend_from_slice(&(overrides.len() as u32).to_be_bytes());
    for (name, value) in overrides {
        put_string(out, name);
        if long {
            let length = u32::try_from(value.len()).expect("a config value below 4 GiB");
            out.extend_from_slice(&length.to_be_bytes());
            out.extend_from_slice(value.as_bytes());
        } else {
            put_string(out, value);
        }
    }
}

pub(super) struct Reader<'a> {
    data: &'a [u8],
    position: usize,
    /// Config values are long strings (record version 1, snapshot version 6).
    pub(super) long_values: bool,
}

impl<'a> Reader<'a> {
    pub(super) fn new(data: &'a [u8]) -> Reader<'a> {
        Reader { data, position: 0, long_values: false }
    }

    /// Bytes not read yet.
    pub(super) fn left(&self) -> usize {
        self.data.len() - self.position
    }
}

impl<'a> Reader<'a> {
    pub(super) fn take(&mut self, size: usize) -> Result<&'a [u8], RecordError> {
        let end = self.position + size;
        let bytes =
            self.data.get(self.position..end).ok_or(RecordError::Truncated(self.data.len()))?;
        self.position = end;
        Ok(bytes)
    }

    pub(super) fn array<const N: usize>(&mut self) -> Result<[u8; N], RecordError> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    pub(super) fn u8(&mut self) -> Result<u8, RecordError> {
        Ok(self.array::<1>()?[0])
    }

    pub(super) fn u16(&mut self) -> Result<u16, RecordError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    pub(super) fn i32(&mut self) -> Result<i32, RecordError> {
        Ok(i32::from_be_bytes(self.array()?))
    }

    pub(super) fn u64(&mut self) -> Result<u64, RecordError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    pub(super) fn u32(&mut self) -> Result<u32, RecordError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    pub(super) fn string(&mut self) -> Result<String, RecordError> {
        let length = usize::from(self.u16()?);
        let bytes = self.take(length)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| RecordError::Text)
    }

    pub(super) fn long_string(&mut self) -> Result<String, RecordError> {
        let length = self.u32()? as usize;
        let bytes = self.take(length)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| RecordError::Text)
    }

    pub(super) fn bytes(&mut self) -> Result<Vec<u8>, RecordError> {
        let length = usize::from(self.u16()?);
        Ok(self.take(length)?.to_vec())
    }

    /// A SCRAM credential as `Writer` puts it: iterations, salt, stored key, server key.
    pub(super) fn credential(&mut self) -> Result<Credential, RecordError> {
        let iterations = self.u32()?;
        let salt = self.bytes()?;
        let stored_key = self.bytes()?;
        let server_key = self.bytes()?;
        Ok(Credential { salt, stored_key, server_key, iterations })
    }

    pub(super) fn mechanism(&mut self) -> Result<Mechanism, RecordError> {
        let id = self.u8()?;
        Mechanism::from_type_id(id as i8).ok_or(RecordError::Security(id))
    }

    pub(super) fn acl(&mut self) -> Result<AclBinding, RecordError> {
        let resource_type = self.u8()?;
        let resource = ResourceType::from_wire(resource_type as i8)
            .ok_or(RecordError::Security(resource_type))?;
        let name = self.string()?;
        let pattern_type = self.u8()?;
        let pattern = PatternType::from_wire(pattern_type as i8)
            .ok_or(RecordError::Security(pattern_type))?;
        let principal = self.string()?;
        let host = self.string()?;
        let operation_type = self.u8()?;
        let operation = Operation::from_wire(operation_type as i8)
            .ok_or(RecordError::Security(operation_type))?;
        let permission_type = self.u8()?;
        let permission = Permission::from_wire(permission_type as i8)
            .ok_or(RecordError::Security(permission_type))?;
        Ok(AclBinding {
            resource_type: resource,
            name,
            pattern,
            principal,
            host,
            operation,
            permission,
        })
    }

    pub(super) fn request(&mut self) -> Result<RequestId, RecordError> {
        Ok(RequestId { node_id: NodeId(self.i32()?), serial: self.u64()? })
    }

    /// A count is checked against the bytes left before anything is reserved.
    pub(super) fn count(&mut self, element_bytes_min: usize) -> Result<usize, RecordError> {
        let count = self.u32()? as usize;
        if count.saturating_mul(element_bytes_min) > self.data.len() - self.position {
            return Err(RecordError::Truncated(self.data.len()));
        }
        Ok(count)
    }

    pub(super) fn leaders(&mut self) -> Result<Vec<NodeId>, RecordError> {
        let count = self.count(4)?;
        (0..count).map(|_| Ok(NodeId(self.i32()?))).collect()
    }

    pub(super) fn replicas(&mut self) -> Result<Vec<Vec<NodeId>>, RecordError> {
        let count = self.count(4)?;
        (0..count).map(|_| self.leaders()).collect()
    }

    pub(super) fn overrides(&mut self) -> Result<BTreeMap<String, String>, RecordError> {
        let count = self.count(4)?;
        let mut overrides = BTreeMap::new();
        for _ in 0..count {
            let name = self.string()?;
            let value = if self.long_values { self.long_string()? } else { self.string()? };
            overrides.insert(name, value);
        }
        Ok(overrides)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_byte_for_byte() {
        let change = MetadataRecord::LeaderChange { leader_id: NodeId(3), term: 7 };
        let encoded = change.encode();
        assert_eq!(encoded, [0, 1, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 7]);
        assert_eq!(MetadataRecord::decode(&encoded), Ok(change));
        let register = MetadataRecord::RegisterBroker {
            node_id: NodeId(2),
            host: "10.0.0.2".into(),
            port: 9092,
            incarnation: 0x0102,
            rack: None,
        };
        let encoded = register.encode();
        assert_eq!(&encoded[..8], [0, 9, 0, 0, 0, 2, 0, 8]);
        assert_eq!(&encoded[16..], [0x23, 0x84, 0, 0, 0, 0, 0, 0, 1, 2]);
        assert_eq!(MetadataRecord::decode(&encoded), Ok(register));
    }

    #[test]
    fn a_registration_with_a_rack_is_type_15_and_one_without_stays_type_9() {
        let register = MetadataRecord::RegisterBroker {
            node_id: NodeId(2),
            host: "h".into(),
            port: 9092,
            incarnation: 3,
            rack: Some("eu-1a".into()),
        };
        let encoded = register.encode();
        assert_eq!(&encoded[..9], [0, 15, 0, 0, 0, 2, 0, 1, b'h']);
        assert_eq!(&encoded[9..19], [0x23, 0x84, 0, 0, 0, 0, 0, 0, 0, 3]);
        assert_eq!(&encoded[19..], [0, 5, b'e', b'u', b'-', b'1', b'a']);
        assert_eq!(MetadataRecord::decode(&encoded), Ok(register));
        for size in 0..encoded.len() {
            assert!(MetadataRecord::decode(&encoded[..size]).is_err(), "size {size}");
        }
        // Type 9 as the previous version wrote it still replays, without a rack.
        let old = [0, 9, 0, 0, 0, 2, 0, 1, b'h', 0x23, 0x84, 0, 0, 0, 0, 0, 0, 0, 3];
        let expected = MetadataRecord::RegisterBroker {
            node_id: NodeId(2),
            host: "h".into(),
            port: 9092,
            incarnation: 3,
            rack: None,
        };
        assert_eq!(MetadataRecord::decode(&old), Ok(expected));
    }

    #[test]
    fn a_first_version_registration_still_decodes_with_incarnation_0() {
        // Type 2 as the first version wrote it: node 2, "h", port 9092.
        let old = [0, 2, 0, 0, 0, 2, 0, 1, b'h', 0x23, 0x84];
        let expected = MetadataRecord::RegisterBroker {
            node_id: NodeId(2),
            host: "h".into(),
            port: 9092,
            incarnation: 0,
            rack: None,
        };
        assert_eq!(MetadataRecord::decode(&old), Ok(expected));
    }

    fn liveness_records() -> Vec<MetadataRecord> {
        vec![
            MetadataRecord::FenceBroker {
                node_id: NodeId(3),
                broker_epoch: 17,
                reason: FenceReason::SessionExpired,
            },
            MetadataRecord::FenceBroker {
                node_id: NodeId(3),
                broker_epoch: 17,
                reason: FenceReason::ControlledShutdown,
            },
            MetadataRecord::UnfenceBroker { node_id: NodeId(3), broker_epoch: 18 },
            MetadataRecord::PartitionChange {
                topic_id: [5; 16],
                partition: 4,
                leader: NodeId::NONE,
                leader_epoch: LeaderEpoch(2),
                partition_epoch: PartitionEpoch(9),
                isr: vec![NodeId(3)],
            },
            MetadataRecord::AlterPartition {
                topic_id: [5; 16],
                partition: 4,
                leader: NodeId(1),
                leader_epoch: LeaderEpoch(2),
                partition_epoch: PartitionEpoch(9),
                isr: vec![NodeId(1), NodeId(3)],
            },
        ]
    }

    #[test]
    fn liveness_records_round_trip_and_every_truncation_is_an_error() {
        for record in liveness_records() {
            let encoded = record.encode();
            assert_eq!(MetadataRecord::decode(&encoded), Ok(record.clone()));
            assert_eq!(record.request(), None);
            for size in 0..encoded.len() {
                assert!(MetadataRecord::decode(&encoded[..size]).is_err(), "{record:?} {size}");
            }
        }
        let fence = [0, 10, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 17, 1];
        assert_eq!(liveness_records()[1].encode(), fence);
        let mut bad = fence;
        bad[14] = 2;
        assert_eq!(MetadataRecord::decode(&bad), Err(RecordError::Reason(2)));
        let change = liveness_records()[3].encode();
        assert_eq!(change[1], 20);
        assert_eq!(&change[18..30], [0, 0, 0, 4, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 2]);
        assert_eq!(&change[30..38], [0, 0, 0, 9, 0, 0, 0, 1]);
        assert_eq!(liveness_records()[4].encode()[1], 21);
    }

    /// Type 12, as versions before partition epochs wrote it, replays with the partition
    /// epoch equal to the leader epoch (every change moved both then).
    #[test]
    fn a_partition_change_without_a_partition_epoch_reads_its_leader_epoch() {
        let mut old = vec![0, 12];
        old.extend([5; 16]);
        old.extend([0, 0, 0, 4, 0, 0, 0, 2, 0, 0, 0, 7, 0, 0, 0, 1, 0, 0, 0, 3]);
        let expected = MetadataRecord::PartitionChange {
            topic_id: [5; 16],
            partition: 4,
            leader: NodeId(2),
            leader_epoch: LeaderEpoch(7),
            partition_epoch: PartitionEpoch(7),
            isr: vec![NodeId(3)],
        };
        assert_eq!(MetadataRecord::decode(&old), Ok(expected));
        for size in 0..old.len() {
            assert!(MetadataRecord::decode(&old[..size]).is_err(), "size {size}");
        }
    }

    fn request() -> RequestId {
        RequestId { node_id: NodeId(2), serial: 0x0102 }
    }

    fn admin_records() -> Vec<MetadataRecord> {
        let alter = |allow_factor_change, target| MetadataRecord::AlterReassignment {
            request: request(),
            name: "t".into(),
            partition: 3,
            allow_factor_change,
            target,
        };
        let elect = |election| MetadataRecord::ElectLeader {
            request: request(),
            name: "t".into(),
            partition: 1,
            election,
        };
        vec![
            alter(true, Some(vec![NodeId(4), NodeId(5)])),
            alter(false, Some(vec![])),
            alter(true, None),
            elect(Election::Preferred),
            elect(Election::Unclean),
            MetadataRecord::ProducerIds {
                request: request(),
                legacy_end: 7 * 1024,
                block_size: 1000,
            },
            MetadataRecord::UnregisterBroker { request: request(), node_id: NodeId(4) },
            MetadataRecord::CompleteReassignment {
                topic_id: [9; 16],
                partition: 2,
                leader_epoch: LeaderEpoch(6),
            },
        ]
    }

    #[test]
    fn admin_records_round_trip_and_every_truncation_is_an_error() {
        for record in admin_records() {
            let encoded = record.encode();
            assert_eq!(MetadataRecord::decode(&encoded), Ok(record.clone()));
            let proposed_by_a_client =
                !matches!(record, MetadataRecord::CompleteReassignment { .. });
            assert_eq!(record.request().is_some(), proposed_by_a_client);
            for size in 0..encoded.len() {
                assert!(MetadataRecord::decode(&encoded[..size]).is_err(), "{record:?} {size}");
            }
        }
        // Cancel: request, "t", partition 3, allowed, no target.
        let cancel = [0, 16, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 1, 2, 0, 1, b't', 0, 0, 0, 3, 1, 0];
        assert_eq!(admin_records()[2].encode(), cancel);
        let producer_ids = [0, 22, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 0, 0, 0x1c, 0];
        assert_eq!(&admin_records()[5].encode()[..22], producer_ids);
        assert_eq!(&admin_records()[5].encode()[22..], [0, 0, 0x03, 0xe8]);
        let mut bad = admin_records()[4].encode();
        assert_eq!(bad.last(), Some(&1));
        *bad.last_mut().unwrap() = 2;
        assert_eq!(MetadataRecord::decode(&bad), Err(RecordError::Election(2)));
    }

    fn topic_records() -> Vec<MetadataRecord> {
        let overrides = BTreeMap::from([
            ("cleanup.policy".to_string(), "delete".to_string()),
            ("retention.ms".to_string(), "1000".to_string()),
        ]);
        vec![
            MetadataRecord::ClusterId { cluster_id: "abcdefghijklmnopqrstuv".into() },
            MetadataRecord::CreateTopic {
                request: request(),
                name: "orders".into(),
                topic_id: [7; 16],
                replicas: vec![vec![NodeId(1), NodeId(2)], vec![NodeId(2), NodeId(3)], vec![]],
                overrides: overrides.clone(),
            },
            MetadataRecord::DeleteTopic { request: request(), name: "orders".into() },
            MetadataRecord::CreatePartitions {
                request: request(),
                name: "orders".into(),
                count: 5,
                replicas: vec![vec![NodeId(1)], vec![NodeId(2), NodeId(3), NodeId(1)]],
            },
            MetadataRecord::AlterTopicConfig { request: request(), name: "o".into(), overrides },
            MetadataRecord::AlterConfigs {
                request: request(),
                resource_type: 4,
                name: String::new(),
                configs: BTreeMap::from([("log.retention.ms".into(), "1000".into())]),
            },
            MetadataRecord::AlterConfigs {
                request: request(),
                resource_type: 32,
                name: "g".into(),
                configs: BTreeMap::new(),
            },
            MetadataRecord::InternalTopic {
                name: "__consumer_offsets".into(),
                leaders: vec![NodeId(3), NodeId(1)],
            },
        ]
    }

    #[test]
    fn topic_records_round_trip() {
        for record in topic_records() {
            let encoded = record.encode();
            assert_eq!(MetadataRecord::decode(&encoded), Ok(record.clone()));
            let is_topic = !matches!(
                record,
                MetadataRecord::ClusterId { .. } | MetadataRecord::InternalTopic { .. }
            );
            assert_eq!(record.request().is_some(), is_topic);
        }
        let delete = MetadataRecord::DeleteTopic { request: request(), name: "t".into() };
        assert_eq!(delete.to_string(), "DeleteTopic t, request 2/258");
        let expected = [0, 5, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 1, 2, 0, 1, b't'];
        assert_eq!(delete.encode(), expected);
    }

    #[test]
    fn topic_records_of_one_replica_per_partition_read_as_such() {
        // Type 4 CreateTopic "t" (request 2/258, id [7; 16]) led by 1 and 3, no overrides.
        let mut create = vec![0, 4, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 1, 2, 0, 1, b't'];
        create.extend([7; 16]);
        create.extend([0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 3, 0, 0, 0, 0]);
        let one_each = vec![vec![NodeId(1)], vec![NodeId(3)]];
        let expected = MetadataRecord::CreateTopic {
            request: request(),
            name: "t".into(),
            topic_id: [7; 16],
            replicas: one_each.clone(),
            overrides: BTreeMap::new(),
        };
        assert_eq!(MetadataRecord::decode(&create), Ok(expected));
        // Type 6 CreatePartitions "t" to 4, the new ones led by 1 and 3.
        let mut grow = vec![0, 6, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 1, 2, 0, 1, b't', 0, 0, 0, 4];
        grow.extend([0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 3]);
        let expected = MetadataRecord::CreatePartitions {
            request: request(),
            name: "t".into(),
            count: 4,
            replicas: one_each,
        };
        assert_eq!(MetadataRecord::decode(&grow), Ok(expected));
    }

    #[test]
    fn security_records_round_trip_and_keep_their_keys_out_of_the_log() {
        use crate::security::acl::{Operation, PatternType, Permission, ResourceType};
        let request = RequestId { node_id: NodeId(2), serial: 9 };
        let credential = Credential {
            salt: b"salt".to_vec(),
            stored_key: vec![0xAB; 32],
            server_key: vec![0xCD; 32],
            iterations: 8192,
        };
        let acl = AclBinding {
            resource_type: ResourceType::Topic,
            name: "orders".into(),
            pattern: PatternType::Prefixed,
            principal: "User:alice".into(),
            host: "*".into(),
            operation: Operation::Write,
            permission: Permission::Allow,
        };
        let records = [
            MetadataRecord::ScramCredential {
                request,
                user: "al,ice".into(),
                mechanism: Mechanism::Sha512,
                credential,
                if_absent: true,
            },
            MetadataRecord::RemoveScramCredential {
                request,
                user: "bob".into(),
                mechanism: Mechanism::Sha256,
            },
            MetadataRecord::AccessControlEntry { request, acl: acl.clone() },
            MetadataRecord::RemoveAccessControlEntry { request, acl },
        ];
        for record in records {
            let encoded = record.encode();
            assert_eq!(encoded[0], RECORD_VERSION, "{record}");
            assert_eq!(MetadataRecord::decode(&encoded), Ok(record.clone()));
            for size in 0..encoded.len() {
                assert!(MetadataRecord::decode(&encoded[..size]).is_err(), "size {size}");
            }
            let line = record.to_string();
            assert!(!line.contains("171") && !line.contains("205"), "{line}");
        }
        // An unknown mechanism or ACL operation is an error, not a guess.
        let mut encoded = MetadataRecord::RemoveScramCredential {
            request,
            user: "bob".into(),
            mechanism: Mechanism::Sha256,
        }
        .encode();
        *encoded.last_mut().unwrap() = 9;
        assert_eq!(MetadataRecord::decode(&encoded), Err(RecordError::Security(9)));
    }

    #[test]
    fn topic_records_truncated_or_lying_about_counts_are_errors() {
        for record in topic_records() {
            let encoded = record.encode();
            for size in 0..encoded.len() {
                assert!(MetadataRecord::decode(&encoded[..size]).is_err(), "{record:?} {size}");
            }
        }
        // A count of 2^32 - 1 leaders in a short record: an error, not an allocation.
        let mut lying = vec![0, 6, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1, b't', 0, 0, 0, 2];
        lying.extend_from_slice(&[0xff; 4]);
        assert_eq!(MetadataRecord::decode(&lying), Err(RecordError::Truncated(lying.len())));
        let bad = [0, 3, 0, 1, 0xff];
        assert_eq!(MetadataRecord::decode(&bad), Err(RecordError::Text));
    }

    #[test]
    fn every_truncation_and_garbage_is_an_error_not_a_panic() {
        let register = MetadataRecord::RegisterBroker {
            node_id: NodeId(1),
            host: "h".into(),
            port: 1,
            incarnation: 7,
            rack: None,
        };
        let encoded = register.encode();
        for size in 0..encoded.len() {
            assert!(MetadataRecord::decode(&encoded[..size]).is_err(), "size {size}");
        }
        let mut longer = encoded.clone();
        longer.push(0);
        assert_eq!(MetadataRecord::decode(&longer), Err(RecordError::Trailing(1)));
        assert_eq!(MetadataRecord::decode(&[2, 1]), Err(RecordError::Version(2)));
        assert_eq!(MetadataRecord::decode(&[0, 99]), Err(RecordError::Type(99)));
        let mut bad_host = encoded;
        bad_host[8] = 0xff;
        assert_eq!(MetadataRecord::decode(&bad_host), Err(RecordError::Host));
    }

    /// Config values longer than a u16 string (Kafka has no bound) are written in record
    /// version 1 as u32-length strings, whole; records without one stay version 0, byte for
    /// byte what the previous version wrote and reads.
    #[test]
    fn config_values_longer_than_a_string_are_written_whole_in_version_1() {
        let long = "x".repeat(STRING_BYTES_MAX + 1);
        let configs = |value: &str| BTreeMap::from([("a.b".into(), value.to_string())]);
        let records = |value: &str| {
            vec![
                MetadataRecord::AlterConfigs {
                    request: request(),
                    resource_type: 4,
                    name: String::new(),
                    configs: configs(value),
                },
                MetadataRecord::AlterTopicConfig {
                    request: request(),
                    name: "t".into(),
                    overrides: configs(value),
                },
                MetadataRecord::CreateTopic {
                    request: request(),
                    name: "t".into(),
                    topic_id: [7; 16],
                    replicas: vec![vec![NodeId(1)]],
                    overrides: configs(value),
                },
            ]
        };
        for (short, whole) in records("v").into_iter().zip(records(&long)) {
            let encoded = short.encode();
            assert_eq!(encoded[0], RECORD_VERSION, "{short:?}");
            // The value as a u16-length string, as the previous version wrote it.
            assert!(encoded.ends_with(&[0, 3, b'a', b'.', b'b', 0, 1, b'v']), "{encoded:?}");
            assert_eq!(MetadataRecord::decode(&encoded), Ok(short));
            let encoded = whole.encode();
            assert_eq!(encoded[0], RECORD_VERSION_LONG_VALUES);
            let length = (STRING_BYTES_MAX as u32 + 1).to_be_bytes();
            let value_at = encoded.len() - STRING_BYTES_MAX - 1;
            assert_eq!(encoded[value_at - 4..value_at], length);
            assert_eq!(MetadataRecord::decode(&encoded), Ok(whole));
            for size in [0, 1, 2, value_at - 1, value_at, value_at + 1, encoded.len() - 1] {
                assert!(MetadataRecord::decode(&encoded[..size]).is_err(), "size {size}");
            }
            // Version 0 bytes are not read as version 1 (nor the other way round).
            let mut as_short = encoded.clone();
            as_short[0] = RECORD_VERSION;
            assert!(MetadataRecord::decode(&as_short).is_err());
        }
        // Its log line holds the value's start and length, not the value.
        let line = records(&long)[0].to_string();
        assert!(line.len() < 300 && line.contains("(65536 bytes)"), "{line}");
        assert!(records("v")[1].to_string().contains(r#"{"a.b": "v"}"#));
        // A type without configs is never version 1.
        assert_eq!(MetadataRecord::DeleteTopic { request: request(), name: long }.encode()[0], 0);
    }
}
