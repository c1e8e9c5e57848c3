//! The metadata state machine: committed records applied in log order. Pure (STYLE.md R6):
//! `apply(index, record)` changes the state and nothing else, so every node that applies
//! the same log holds the same state, and tests need no cluster.
//!
//! Topic records are validated here, at apply time, against the state they meet (the name
//! is free, the topic exists, the leaders are registered brokers, the partition count
//! grows): the proposer checked them against its own view, but another change may have
//! committed in between. The decision is the request's outcome, the same on every node;
//! the node that proposed answers its client with it. A request proposed twice (a retry
//! after a lost leader) takes effect once: the ids of the last `REQUESTS_REMEMBERED_MAX`
//! requests are remembered, and a repeat is applied as nothing.
//!
//! Brokers (Kafka's KRaft model): a registration's index is its broker epoch, and a new
//! registration comes in fenced; `FenceBroker` and `UnfenceBroker` name the epoch they are
//! for, so a record meant for an earlier incarnation of a broker leaves a newer one alone.
//! A registration committed twice (the same incarnation) takes effect once. Fencing does not
//! move leaders by itself: the active controller proposes `PartitionChange` records for
//! what `partition_changes` finds (a partition led by a fenced broker loses its leader; a
//! leaderless one whose replica is unfenced gets it back), each naming the next partition
//! epoch, so that a change committed twice or proposed from a stale state is skipped.
//! Partition leaders change their ISRs with `AlterPartition` records (Kafka's request of
//! that name), checked here against the leader and partition epochs they saw. The leader
//! epoch moves only with the leader (and with reassignments and requested elections).
//!
//! Lifecycle: built empty when the node starts, then fed every committed entry from index 1
//! on (the log is replayed after a restart), or decoded from a snapshot (`snapshot`) and
//! fed the entries after it. Lives on
//! shard 0 inside the Raft driver; other shards see copies (`ClusterView`), the controller
//! the topics (`Committed`).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::placement::Candidate;
use super::records::{Election, MetadataRecord, RequestId};
use crate::constants::{CLUSTER_PRODUCER_ID_BLOCKS_START, CLUSTER_REQUESTS_REMEMBERED_MAX};
use crate::model::dynamic_config::DynamicConfigs;
use crate::model::{ErrorCode, LeaderEpoch, NodeId, PartitionEpoch};
use crate::security::acl::AclBinding;
use crate::security::scram::{Credential, Mechanism};
use crate::shard::internal_log::{self, INTERNAL_TOPICS};

/// A registered broker and where clients reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerRegistration {
    pub node_id: NodeId,
    pub host: String,
    pub port: u16,
    /// The random id of the process that registered (0: a first-version record).
    pub incarnation: u64,
    /// Kafka's broker.rack (`--rack`), if it has one.
    pub rack: Option<String>,
    /// Kafka's broker epoch: the index of the registration record.
    pub epoch: u64,
    /// Not counted on: no placements, not listed to clients, leads nothing.
    pub fenced: bool,
}

/// One partition as the log says (Kafka's PartitionRecord, with what PartitionChange
/// records changed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionState {
    /// The replicas in preference order (the preferred leader first).
    pub replicas: Vec<NodeId>,
    /// The in-sync replicas: every replica when created; a fenced one leaves (unless it is
    /// the last), and the leader adds back one that caught up.
    pub isr: Vec<NodeId>,
    /// NONE: no leader (no in-sync replica is unfenced).
    pub leader: NodeId,
    /// Moves when the leader changes (and when a reassignment starts or ends, or a leader
    /// is elected by request), not when only the ISR does: a client's fetch in the
    /// current leader epoch is not fenced by an ISR change.
    pub leader_epoch: LeaderEpoch,
    /// Moves with every change (KIP-497's partition epoch).
    pub partition_epoch: PartitionEpoch,
    /// A reassignment in progress (Kafka's addingReplicas and removingReplicas): the
    /// replicas it adds (in `replicas`, catching up) and the ones it removes once they have
    /// (still in `replicas`). Both empty: none.
    pub adding: Vec<NodeId>,
    pub removing: Vec<NodeId>,
}

impl PartitionState {
    /// The epochs of a change to `leader`: the leader epoch one more if the leader
    /// changes, the partition epoch one more always.
    pub fn next_epochs(&self, leader: NodeId) -> (LeaderEpoch, PartitionEpoch) {
        let bump = i32::from(leader != self.leader);
        (LeaderEpoch(self.leader_epoch.0 + bump), self.partition_epoch.next())
    }

    /// Whether a reassignment is in progress.
    pub fn reassigning(&self) -> bool {
        !self.adding.is_empty() || !self.removing.is_empty()
    }

    /// Whether the reassignment in progress can end (Kafka's
    /// `PartitionReassignmentReplicas.maybeCompleteReassignment`): every added replica is
    /// in sync, and some in-sync replica stays.
    fn reassignment_done(&self) -> bool {
        self.reassigning()
            && self.adding.iter().all(|id| self.isr.contains(id))
            && self.isr.iter().any(|id| !self.removing.contains(id))
    }

    /// Ends the reassignment in progress: the removed replicas leave the replicas and ISR.
    fn finish_reassignment(&mut self) {
        let removing = std::mem::take(&mut self.removing);
        self.replicas.retain(|id| !removing.contains(id));
        self.isr.retain(|id| !removing.contains(id));
        self.adding.clear();
    }
}

/// What a leader's AlterPartition record asks (`MetadataState::alter_partition`).
struct AlterPartition<'a> {
    leader: NodeId,
    leader_epoch: LeaderEpoch,
    partition_epoch: PartitionEpoch,
    isr: &'a [NodeId],
}

/// A topic as the log says: its id, its partitions, and its config overrides (effective
/// configs are the overrides on each node's defaults).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicState {
    pub topic_id: [u8; 16],
    /// By partition index.
    pub partitions: Vec<PartitionState>,
    pub overrides: BTreeMap<String, String>,
}

impl TopicState {
    /// Each partition's first replica (where it was placed), by partition index.
    pub fn replicas(&self) -> Vec<NodeId> {
        self.partitions
            .iter()
            .map(|p| p.replicas.first().copied().unwrap_or(NodeId::NONE))
            .collect()
    }

    /// Each partition's leader (NONE: none), by partition index.
    pub fn leaders(&self) -> Vec<NodeId> {
        self.partitions.iter().map(|p| p.leader).collect()
    }
}

/// What a topic request's record did: the topic as it is after it (as it was, for a
/// deletion), or why nothing changed.
pub type TopicOutcome = Result<TopicSummary, Refusal>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSummary {
    pub name: String,
    pub topic_id: [u8; 16],
    pub partitions: i32,
    pub overrides: BTreeMap<String, String>,
    /// A ProducerIds record's outcome: the block the proposer got (no topic then: the name
    /// is empty).
    pub producer_ids: Option<ProducerIdBlock>,
}

/// A block of producer ids given to one node (Kafka's ProducerIdsBlock): `first` to
/// `first + size - 1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerIdBlock {
    pub first: i64,
    pub size: i32,
}

/// The producer id blocks given out so far (Kafka's ProducerIdControlManager): each
/// ProducerIds record gets the next block at once, whoever else is registered, live or not
/// (Kafka's controller allocates on demand).
///
/// Upgrade from the interleaved ids: before blocks were on the log, each node handed out
/// ids from its own file, interleaved by node id (`local * 1024 + node_id mod 1024`), and
/// those ids live on in the partitions' producer states; a node of that version may still
/// be running beside upgraded ones, handing out more. Blocks start at
/// `CLUSTER_PRODUCER_ID_BLOCKS_START` (2^50) or above, out of their reach: a node's
/// interleaved ids stay below it until it has handed out 2^40 of them. Every ProducerIds
/// record also carries its node's `legacy_end` (all ids that node handed out are below it;
/// 0 for a node that never did), which `next` rises to, so a node past that many still
/// gets blocks above its own ids. The previous rule (the first block waited until every
/// registered broker had reported its legacy end, so a registered broker that never
/// started again held producer ids up) is gone; `started` and `reported` are still read
/// from snapshots of it. Replaying that version's records with this rule gives every block
/// at or above where that version gave it (a block is never refused now, and `next` only
/// rises), so blocks given now never meet one given then; and a node of that version still
/// running gives blocks below 2^50 from its own apply, which blocks given now never reach.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProducerIds {
    /// The first id of the next block (Kafka's nextProducerId): every id below it is in a
    /// block given out or below a node's legacy end.
    pub next: i64,
    /// A block was given out.
    pub started: bool,
    /// The previous version's reports before its first block (read from its snapshots;
    /// cleared by the first block given).
    pub reported: BTreeSet<NodeId>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: ErrorCode,
    pub message: String,
}

/// What applying one entry did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// The state changed beyond the applied index.
    pub changed: bool,
    /// The topics (their partitions' leaders included) or the cluster id changed (the
    /// controller applies them).
    pub catalog_changed: bool,
    /// A topic request's outcome, for the node that proposed it.
    pub outcome: Option<(RequestId, TopicOutcome)>,
    /// The SCRAM credentials or the ACLs changed (every node's authenticator and
    /// authorizer take them).
    pub security_changed: bool,
}

impl Applied {
    fn changed(changed: bool) -> Applied {
        Applied { changed, ..Applied::default() }
    }
}

/// What the committed log says so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetadataState {
    /// By node id.
    pub brokers: BTreeMap<NodeId, BrokerRegistration>,
    /// The leader named by the last LeaderChange record (NONE before the first).
    pub leader_id: Option<NodeId>,
    /// That leader's term.
    pub leader_term: u64,
    /// The last index applied (entries with no record count too).
    pub applied_index: u64,
    /// The first ClusterId record's id.
    pub cluster_id: Option<String>,
    /// By name.
    pub topics: BTreeMap<String, TopicState>,
    /// The names of `topics` by topic id (PartitionChange records name topics by id).
    pub(super) topic_names: BTreeMap<[u8; 16], String>,
    /// The internal topics' placements (leader by partition), by name: where groups and
    /// transactional ids are coordinated.
    pub internal: BTreeMap<String, Vec<NodeId>>,
    /// The dynamic configs of broker and group resources (AlterConfigs records).
    pub configs: DynamicConfigs,
    /// The producer id blocks given out (ProducerIds records).
    pub producer_ids: ProducerIds,
    /// Nodes unregistered (UnregisterBroker) and not back since, with the index of the
    /// record: a broker-only one leaves the Raft configuration (the active controller
    /// proposes its removal), and comes back by joining again (a learner added after that
    /// index: `learner_added`) or registering again.
    pub unregistered: BTreeMap<NodeId, u64>,
    /// The SCRAM credentials (ScramCredential records: salted keys), by user and mechanism.
    pub scram: BTreeMap<(String, Mechanism), Credential>,
    /// The ACLs (AccessControlEntry records).
    pub acls: BTreeSet<AclBinding>,
    /// The requests applied lately (a set, and the same ids oldest first to forget them).
    pub(super) requests_seen: BTreeSet<RequestId>,
    pub(super) requests_order: VecDeque<RequestId>,
}

impl MetadataState {
    /// Applies the entry at `index` (`None`: an entry with no record, Raft's no-op). Indexes
    /// must come in order, each once.
    pub fn apply(&mut self, index: u64, record: Option<&MetadataRecord>) -> Applied {
        assert!(index > self.applied_index, "entry {index} applied after {}", self.applied_index);
        self.applied_index = index;
        let Some(record) = record else { return Applied::default() };
        if let Some(request) = record.request() {
            if self.requests_seen.contains(&request) {
                // Committed twice (a retry): it takes effect once. Its proposer may not have
                // seen the first outcome (that entry reached its node inside a snapshot), so
                // the outcome again where the state still shows it.
                let outcome = self.repeated_outcome(record).map(|outcome| (request, outcome));
                return Applied { outcome, ..Applied::default() };
            }
            self.remember(request);
            if let MetadataRecord::UnregisterBroker { node_id, .. } = record {
                let outcome = self.unregister(*node_id, index);
                let changed = outcome.is_ok();
                return Applied {
                    changed,
                    catalog_changed: false,
                    outcome: Some((request, outcome)),
                    security_changed: false,
                };
            }
            if let Some((changed, outcome)) = self.apply_security_record(record) {
                return Applied {
                    changed,
                    security_changed: changed,
                    outcome: Some((request, outcome)),
                    ..Applied::default()
                };
            }
            if let MetadataRecord::ProducerIds { legacy_end, block_size, .. } = record {
                // Changes no topic; a refusal may still record the node's report.
                let outcome = self.give_producer_ids(*legacy_end, *block_size);
                return Applied {
                    changed: true,
                    catalog_changed: false,
                    outcome: Some((request, outcome)),
                    security_changed: false,
                };
            }
            let outcome = self.apply_topic_record(record);
            let changed = outcome.is_ok();
            return Applied {
                changed,
                catalog_changed: changed,
                outcome: Some((request, outcome)),
                security_changed: false,
            };
        }
        match record {
            MetadataRecord::LeaderChange { leader_id, term } => {
                // A record of an older term can only be committed before a newer one, but
                // keep the newest anyway: the state never goes back in terms.
                if *term < self.leader_term {
                    return Applied::default();
                }
                let changed = self.leader_id != Some(*leader_id) || self.leader_term != *term;
                self.leader_id = Some(*leader_id);
                self.leader_term = *term;
                Applied::changed(changed)
            }
            MetadataRecord::RegisterBroker { node_id, host, port, incarnation, rack } => {
                let known = self.brokers.get(node_id);
                // The same incarnation again (a retry committed twice), or a first-version
                // record repeating the address it has: nothing new.
                let repeated = known.is_some_and(|b| {
                    b.incarnation == *incarnation
                        && (*incarnation != 0 || (b.host == *host && b.port == *port))
                });
                if repeated {
                    return Applied::default();
                }
                let registration = BrokerRegistration {
                    node_id: *node_id,
                    host: host.clone(),
                    port: *port,
                    incarnation: *incarnation,
                    rack: rack.clone(),
                    epoch: index,
                    fenced: true,
                };
                self.brokers.insert(*node_id, registration);
                self.unregistered.remove(node_id);
                Applied::changed(true)
            }
            MetadataRecord::FenceBroker { node_id, broker_epoch, .. } => {
                self.set_fenced(*node_id, *broker_epoch, true)
            }
            MetadataRecord::UnfenceBroker { node_id, broker_epoch } => {
                self.set_fenced(*node_id, *broker_epoch, false)
            }
            MetadataRecord::PartitionChange {
                topic_id,
                partition,
                leader,
                leader_epoch,
                partition_epoch,
                isr,
            } => {
                let epochs = (*leader_epoch, *partition_epoch);
                let changed = self.change_partition(topic_id, *partition, *leader, epochs, isr);
                Applied {
                    changed,
                    catalog_changed: changed,
                    outcome: None,
                    security_changed: false,
                }
            }
            MetadataRecord::AlterPartition {
                topic_id,
                partition,
                leader,
                leader_epoch,
                partition_epoch,
                isr,
            } => {
                let asked = AlterPartition {
                    leader: *leader,
                    leader_epoch: *leader_epoch,
                    partition_epoch: *partition_epoch,
                    isr,
                };
                // Taken (the ISR changed or not) or refused as invalid, the partition
                // epoch moved (`alter_partition`); refused as stale, nothing did.
                let changed = alter_partition_moves_epoch(
                    &self.alter_partition(topic_id, *partition, &asked),
                );
                Applied {
                    changed,
                    catalog_changed: changed,
                    outcome: None,
                    security_changed: false,
                }
            }
            MetadataRecord::ClusterId { cluster_id } => {
                if self.cluster_id.is_some() {
                    return Applied::default();
                }
                self.cluster_id = Some(cluster_id.clone());
                Applied {
                    changed: true,
                    catalog_changed: true,
                    outcome: None,
                    security_changed: false,
                }
            }
            MetadataRecord::InternalTopic { name, leaders } => {
                if self.internal.contains_key(name) || leaders.is_empty() {
                    return Applied::default();
                }
                self.internal.insert(name.clone(), leaders.clone());
                Applied::changed(true)
            }
            MetadataRecord::CompleteReassignment { topic_id, partition, leader_epoch } => {
                let changed = self.complete_reassignment(topic_id, *partition, *leader_epoch);
                Applied {
                    changed,
                    catalog_changed: changed,
                    outcome: None,
                    security_changed: false,
                }
            }
            _ => unreachable!("topic records carry a request id"),
        }
    }

    /// The outcome of a request committed before, for its proposer, where the state still
    /// shows it: a credential or ACL change (never refused but for the removal of a
    /// credential that is gone: gone either way), a topic created with the record's id
    /// that still exists. None for the others: their first outcome cannot be told from the
    /// state, and their proposer answers REQUEST_TIMED_OUT ("it may still take effect").
    fn repeated_outcome(&self, record: &MetadataRecord) -> Option<TopicOutcome> {
        match record {
            MetadataRecord::ScramCredential { user, .. }
            | MetadataRecord::RemoveScramCredential { user, .. } => Some(Ok(done(user))),
            MetadataRecord::AccessControlEntry { acl, .. }
            | MetadataRecord::RemoveAccessControlEntry { acl, .. } => Some(Ok(done(&acl.name))),
            MetadataRecord::CreateTopic { name, topic_id, .. } => self
                .topics
                .get(name)
                .filter(|topic| topic.topic_id == *topic_id)
                .map(|_| Ok(self.summary(name))),
            _ => None,
        }
    }

    /// Applies a SCRAM credential or ACL record (None for other records): whether the state
    /// changed, and the outcome for the proposer. Every node applies them alike, so every
    /// node authenticates and authorizes from the same credentials and ACLs.
    fn apply_security_record(&mut self, record: &MetadataRecord) -> Option<(bool, TopicOutcome)> {
        Some(match record {
            MetadataRecord::ScramCredential { user, mechanism, credential, if_absent, .. } => {
                let key = (user.clone(), *mechanism);
                if *if_absent && self.scram.contains_key(&key) {
                    return Some((false, Ok(done(user))));
                }
                let changed = self.scram.get(&key) != Some(credential);
                self.scram.insert(key, credential.clone());
                (changed, Ok(done(user)))
            }
            MetadataRecord::RemoveScramCredential { user, mechanism, .. } => {
                match self.scram.remove(&(user.clone(), *mechanism)) {
                    Some(_) => (true, Ok(done(user))),
                    None => (
                        false,
                        Err(Refusal {
                            code: ErrorCode::ResourceNotFound,
                            message: "Attempt to delete a user credential that does not exist"
                                .into(),
                        }),
                    ),
                }
            }
            MetadataRecord::AccessControlEntry { acl, .. } => {
                (self.acls.insert(acl.clone()), Ok(done(&acl.name)))
            }
            MetadataRecord::RemoveAccessControlEntry { acl, .. } => {
                (self.acls.remove(acl), Ok(done(&acl.name)))
            }
            _ => return None,
        })
    }

    /// Where each internal topic's keys are coordinated: the leader of each partition (NONE
    /// while it has none), of a replicated one from its topic, of the others from their
    /// static placement. Empty until they are placed.
    pub fn coordinators(&self) -> BTreeMap<String, Vec<NodeId>> {
        let mut out = BTreeMap::new();
        for name in INTERNAL_TOPICS {
            let leaders = if internal_log::replicated(name) {
                let topic = self.topics.get(name);
                topic.map(|topic| topic.partitions.iter().map(|p| p.leader).collect())
            } else {
                self.internal.get(name).cloned()
            };
            if let Some(leaders) = leaders {
                out.insert(name.to_string(), leaders);
            }
        }
        out
    }

    /// The state of a cluster of one live broker, `me`, with topic `name` of `partitions`
    /// partitions (None: no such topic) each led by it alone: how a single node answers the
    /// requests a cluster decides at apply time (ElectLeaders, reassignments).
    pub fn one_broker(me: NodeId, name: &str, partitions: Option<i32>) -> MetadataState {
        let mut state = MetadataState::default();
        let registration = BrokerRegistration {
            node_id: me,
            host: String::new(),
            port: 0,
            incarnation: 0,
            rack: None,
            epoch: 0,
            fenced: false,
        };
        state.brokers.insert(me, registration);
        if let Some(partitions) = partitions {
            let count = usize::try_from(partitions).unwrap_or(0);
            let topic = TopicState {
                topic_id: [0; 16],
                partitions: state.new_partitions(&vec![vec![me]; count]),
                overrides: BTreeMap::new(),
            };
            state.topics.insert(name.to_string(), topic);
            state.topic_names.insert([0; 16], name.to_string());
        }
        state
    }

    /// The registration of `node_id` by the process `incarnation`, if it is the current one.
    pub fn registration(&self, node_id: NodeId, incarnation: u64) -> Option<&BrokerRegistration> {
        self.brokers.get(&node_id).filter(|b| b.incarnation == incarnation)
    }

    /// The unfenced brokers, by node id: where partitions may be placed and led.
    pub fn live_brokers(&self) -> Vec<NodeId> {
        self.brokers.values().filter(|b| !b.fenced).map(|b| b.node_id).collect()
    }

    /// The unfenced brokers with their racks: where new replicas may be placed.
    pub fn placement_candidates(&self) -> Vec<Candidate> {
        let live = self.brokers.values().filter(|b| !b.fenced);
        live.map(|b| Candidate { node_id: b.node_id, rack: b.rack.clone() }).collect()
    }

    fn is_live(&self, node_id: NodeId) -> bool {
        self.brokers.get(&node_id).is_some_and(|b| !b.fenced)
    }

    /// The changes the partitions need, in topic and partition order: fenced brokers leave
    /// the ISR (the last in-sync replica stays in it, so that the partition waits for it
    /// rather than lose what only it has: unclean election is off); a partition whose
    /// leader is not a live broker gets its first live in-sync replica, or none. Each names
    /// the next partition epoch, and the next leader epoch where the leader changes (an ISR
    /// that only shrinks keeps the leader epoch, as Kafka's since 3.6). A partition that
    /// needs none of these and whose reassignment can end (its added replicas joined the
    /// ISR) gets `CompleteReassignment`. The active
    /// controller proposes them (Kafka's controller writes them with the fencing, and ends a
    /// reassignment with the ISR change that makes it complete).
    pub fn partition_changes(&self) -> Vec<MetadataRecord> {
        let mut changes = Vec::new();
        for topic in self.topics.values() {
            for (index, partition) in topic.partitions.iter().enumerate() {
                let live: Vec<NodeId> =
                    partition.isr.iter().copied().filter(|id| self.is_live(*id)).collect();
                let isr = if live.is_empty() { partition.isr.clone() } else { live };
                let wanted = self.elected_leader(partition, &isr);
                if wanted == partition.leader && isr == partition.isr {
                    if partition.reassignment_done() {
                        changes.push(MetadataRecord::CompleteReassignment {
                            topic_id: topic.topic_id,
                            partition: index as i32,
                            leader_epoch: LeaderEpoch(partition.leader_epoch.0 + 1),
                        });
                    }
                    continue;
                }
                let (leader_epoch, partition_epoch) = partition.next_epochs(wanted);
                changes.push(MetadataRecord::PartitionChange {
                    topic_id: topic.topic_id,
                    partition: index as i32,
                    leader: wanted,
                    leader_epoch,
                    partition_epoch,
                    isr,
                });
            }
        }
        changes
    }

    /// Preferred leader election (Kafka's auto leader rebalance): each partition led by
    /// another replica than its preferred one (the first) while the preferred one is live
    /// and in sync gets it back, one leader epoch higher, its ISR unchanged. Only where no
    /// fencing change is due (`partition_changes` empty for it), so the two never race.
    pub fn preferred_leader_changes(&self) -> Vec<MetadataRecord> {
        let mut changes = Vec::new();
        for topic in self.topics.values() {
            for (index, partition) in topic.partitions.iter().enumerate() {
                let Some(&preferred) = partition.replicas.first() else { continue };
                if preferred == partition.leader
                    || !partition.isr.contains(&preferred)
                    || !self.is_live(preferred)
                    || partition.isr.iter().any(|id| !self.is_live(*id))
                {
                    continue;
                }
                let (leader_epoch, partition_epoch) = partition.next_epochs(preferred);
                changes.push(MetadataRecord::PartitionChange {
                    topic_id: topic.topic_id,
                    partition: index as i32,
                    leader: preferred,
                    leader_epoch,
                    partition_epoch,
                    isr: partition.isr.clone(),
                });
            }
        }
        changes
    }

    /// The leader a partition with in-sync replicas `isr` should have: a live leader in
    /// the ISR keeps office, else the first replica that is in sync and live, NONE when
    /// there is none.
    fn elected_leader(&self, partition: &PartitionState, isr: &[NodeId]) -> NodeId {
        clean_leader(partition, isr, |id| self.is_live(id))
    }

    /// The partition `partition` of the topic with id `topic_id`, if both exist.
    pub fn partition(&self, topic_id: &[u8; 16], partition: i32) -> Option<&PartitionState> {
        let topic = self.topics.get(self.topic_names.get(topic_id)?)?;
        topic.partitions.get(usize::try_from(partition).ok()?)
    }

    fn set_fenced(&mut self, node_id: NodeId, broker_epoch: u64, fenced: bool) -> Applied {
        match self.brokers.get_mut(&node_id) {
            Some(broker) if broker.epoch == broker_epoch && broker.fenced != fenced => {
                broker.fenced = fenced;
                Applied::changed(true)
            }
            _ => Applied::default(),
        }
    }

    /// Applies a PartitionChange if it is the partition's next partition epoch, its leader
    /// epoch is the partition's (one more when the leader changes; a record of the
    /// previous version also moved it for an ISR change) and it names a leader among its
    /// replicas (or none); whether anything changed.
    fn change_partition(
        &mut self,
        topic_id: &[u8; 16],
        partition: i32,
        leader: NodeId,
        (leader_epoch, partition_epoch): (LeaderEpoch, PartitionEpoch),
        isr: &[NodeId],
    ) -> bool {
        let Some(name) = self.topic_names.get(topic_id) else { return false };
        let Some(topic) = self.topics.get_mut(name) else { return false };
        let Some(state) = usize::try_from(partition).ok().and_then(|p| topic.partitions.get_mut(p))
        else {
            return false;
        };
        if partition_epoch != state.partition_epoch.next() {
            return false;
        }
        let bumped = leader_epoch.0 == state.leader_epoch.0 + 1;
        if !bumped && (leader != state.leader || leader_epoch != state.leader_epoch) {
            return false;
        }
        if leader != NodeId::NONE && !state.replicas.contains(&leader) {
            return false;
        }
        if isr.is_empty() || isr.iter().any(|id| !state.replicas.contains(id)) {
            return false;
        }
        // A fenced broker never joins the ISR (Kafka answers INELIGIBLE_REPLICA); one in it
        // already may stay (the last in-sync replica of a partition waiting for it).
        let brokers = &self.brokers;
        let live = |id: &NodeId| brokers.get(id).is_some_and(|b| !b.fenced);
        if isr.iter().any(|id| !state.isr.contains(id) && !live(id)) {
            return false;
        }
        state.leader = leader;
        state.leader_epoch = leader_epoch;
        state.partition_epoch = partition_epoch;
        state.isr = isr.to_vec();
        true
    }

    /// Kafka's `ReplicationControlManager.alterPartition` for one partition, at apply time:
    /// the leader's ISR change takes effect if it comes from the partition's leader in its
    /// leader epoch (FENCED_LEADER_EPOCH otherwise; NOT_LEADER_OR_FOLLOWER from another
    /// broker), based on its partition epoch (INVALID_UPDATE_VERSION otherwise), and names
    /// an ISR of replicas, the leader in it (INVALID_REQUEST otherwise) and no fenced broker
    /// joining (INELIGIBLE_REPLICA). Ok(false): the ISR it asks for is the partition's
    /// already (nothing changes, as Kafka's controller writes no record then).
    fn alter_partition(
        &mut self,
        topic_id: &[u8; 16],
        partition: i32,
        asked: &AlterPartition,
    ) -> Result<bool, ErrorCode> {
        let checked = self.check_alter_partition(topic_id, partition, asked);
        if alter_partition_moves_epoch(&checked) {
            // Based on the partition as it is (its leader, leader epoch and partition
            // epoch): the partition epoch moves whether the ISR changes, stays or the
            // change is refused, so that the leader learns from the metadata log alone
            // that its change is over (it holds the high watermark for the followers a
            // pending change would add: `partition::replicas`).
            let name = self.topic_names.get(topic_id).ok_or(ErrorCode::UnknownTopicId)?;
            let state = partition_mut(&mut self.topics, name, partition)
                .map_err(|_| ErrorCode::UnknownTopicOrPartition)?;
            if checked == Ok(true) {
                state.isr = asked.isr.to_vec();
            }
            state.partition_epoch = state.partition_epoch.next();
        }
        checked
    }

    /// Why the AlterPartition `record` would be refused if it were applied now (None: it
    /// would not be, or it is no AlterPartition), for the driver's log.
    pub fn alter_partition_refusal(&self, record: &MetadataRecord) -> Option<ErrorCode> {
        let MetadataRecord::AlterPartition {
            topic_id,
            partition,
            leader,
            leader_epoch,
            partition_epoch,
            isr,
        } = record
        else {
            return None;
        };
        let asked = AlterPartition {
            leader: *leader,
            leader_epoch: *leader_epoch,
            partition_epoch: *partition_epoch,
            isr,
        };
        self.check_alter_partition(topic_id, *partition, &asked).err()
    }

    /// `alter_partition`'s checks: Ok(true) when it changes the ISR.
    fn check_alter_partition(
        &self,
        topic_id: &[u8; 16],
        partition: i32,
        asked: &AlterPartition,
    ) -> Result<bool, ErrorCode> {
        let live = |id: &NodeId| self.is_live(*id);
        let name = self.topic_names.get(topic_id).ok_or(ErrorCode::UnknownTopicId)?;
        let topic = self.topics.get(name).ok_or(ErrorCode::UnknownTopicId)?;
        let index = usize::try_from(partition).ok();
        let state = index
            .and_then(|index| topic.partitions.get(index))
            .ok_or(ErrorCode::UnknownTopicOrPartition)?;
        if asked.leader != state.leader {
            return Err(ErrorCode::NotLeaderOrFollower);
        }
        if asked.leader_epoch != state.leader_epoch {
            return Err(ErrorCode::FencedLeaderEpoch);
        }
        if asked.partition_epoch != state.partition_epoch {
            return Err(ErrorCode::InvalidUpdateVersion);
        }
        let isr = asked.isr;
        let in_replicas = isr.iter().all(|id| state.replicas.contains(id));
        if !in_replicas || !isr.contains(&asked.leader) {
            return Err(ErrorCode::InvalidRequest);
        }
        if isr.iter().any(|id| !state.isr.contains(id) && !live(id)) {
            return Err(ErrorCode::IneligibleReplica);
        }
        Ok(*isr != state.isr[..])
    }

    /// A ProducerIds record: the next block of `block_size` ids, at or above
    /// `CLUSTER_PRODUCER_ID_BLOCKS_START` and the proposer's `legacy_end` (see
    /// `ProducerIds`), given at once (Kafka's controller does not wait for other brokers).
    fn give_producer_ids(&mut self, legacy_end: i64, block_size: i32) -> TopicOutcome {
        if block_size <= 0 {
            return refuse(ErrorCode::InvalidRequest, format!("a block of {block_size} ids"));
        }
        let ids = &mut self.producer_ids;
        ids.next = ids.next.max(legacy_end).max(CLUSTER_PRODUCER_ID_BLOCKS_START);
        let first = ids.next;
        let Some(next) = first.checked_add(i64::from(block_size)) else {
            return refuse(ErrorCode::UnknownServerError, "producer ids are exhausted".into());
        };
        ids.next = next;
        ids.started = true;
        ids.reported.clear();
        Ok(TopicSummary {
            name: String::new(),
            topic_id: [0; 16],
            partitions: 0,
            overrides: BTreeMap::new(),
            producer_ids: Some(ProducerIdBlock { first, size: block_size }),
        })
    }

    /// UnregisterBroker of `node_id` (Kafka's `ReplicationControlManager.unregisterBroker`):
    /// its registration goes, so it is no longer live (the active controller's partition
    /// changes move its leaderships and ISR places as for a fenced broker) and no longer
    /// waited for; BROKER_ID_NOT_REGISTERED when it has none.
    fn unregister(&mut self, node_id: NodeId, index: u64) -> TopicOutcome {
        if self.brokers.remove(&node_id).is_none() {
            let message = format!("Broker ID {node_id} is not currently registered");
            return refuse(ErrorCode::BrokerIdNotRegistered, message);
        }
        self.unregistered.insert(node_id, index);
        Ok(TopicSummary {
            name: String::new(),
            topic_id: [0; 16],
            partitions: 0,
            overrides: BTreeMap::new(),
            producer_ids: None,
        })
    }

    /// A conf change made `node_id` a learner (it was not one): a broker-only node joined
    /// again, so an earlier unregistration no longer removes it.
    pub fn learner_added(&mut self, node_id: NodeId) {
        self.unregistered.remove(&node_id);
    }

    fn remember(&mut self, request: RequestId) {
        self.requests_seen.insert(request);
        self.requests_order.push_back(request);
        while self.requests_order.len() > CLUSTER_REQUESTS_REMEMBERED_MAX {
            if let Some(oldest) = self.requests_order.pop_front() {
                self.requests_seen.remove(&oldest);
            }
        }
    }

    /// New partitions placed on `replicas` (a set each), all in sync: led by their first
    /// live replica, leaderless when none is (brokers fenced after the proposer placed
    /// them).
    fn new_partitions(&self, replicas: &[Vec<NodeId>]) -> Vec<PartitionState> {
        replicas
            .iter()
            .map(|set| PartitionState {
                replicas: set.clone(),
                isr: set.clone(),
                leader: set.iter().copied().find(|id| self.is_live(*id)).unwrap_or(NodeId::NONE),
                leader_epoch: LeaderEpoch::INITIAL,
                partition_epoch: PartitionEpoch::INITIAL,
                adding: Vec::new(),
                removing: Vec::new(),
            })
            .collect()
    }

    fn apply_topic_record(&mut self, record: &MetadataRecord) -> TopicOutcome {
        match record {
            MetadataRecord::CreateTopic { name, topic_id, replicas, overrides, .. } => {
                if self.topics.contains_key(name) {
                    return refuse(ErrorCode::TopicAlreadyExists, format!("topic {name} exists"));
                }
                if self.topic_names.contains_key(topic_id) {
                    let message = format!("topic id of {name} is taken; try again");
                    return refuse(ErrorCode::TopicAlreadyExists, message);
                }
                if replicas.is_empty() {
                    return refuse(ErrorCode::InvalidPartitions, "no partitions".into());
                }
                self.check_replicas(replicas)?;
                let topic = TopicState {
                    topic_id: *topic_id,
                    partitions: self.new_partitions(replicas),
                    overrides: overrides.clone(),
                };
                self.topics.insert(name.clone(), topic);
                self.topic_names.insert(*topic_id, name.clone());
                Ok(self.summary(name))
            }
            MetadataRecord::DeleteTopic { name, .. } => {
                let topic_id = self.existing(name)?.topic_id;
                let summary = self.summary(name);
                self.topics.remove(name);
                self.topic_names.remove(&topic_id);
                Ok(summary)
            }
            MetadataRecord::CreatePartitions { name, count, replicas, .. } => {
                let current = self.existing(name)?.partitions.len();
                let count = usize::try_from(*count).unwrap_or(0);
                if count <= current {
                    let message = format!(
                        "topic {name} has {current} partitions; the new count must be larger"
                    );
                    return refuse(ErrorCode::InvalidPartitions, message);
                }
                if replicas.len() != count - current {
                    let message = format!(
                        "topic {name} changed meanwhile: {current} partitions, {} new ones \
                         for a count of {count}",
                        replicas.len()
                    );
                    return refuse(ErrorCode::InvalidPartitions, message);
                }
                self.check_replicas(replicas)?;
                let added = self.new_partitions(replicas);
                if let Some(topic) = self.topics.get_mut(name) {
                    topic.partitions.extend(added);
                }
                Ok(self.summary(name))
            }
            MetadataRecord::AlterTopicConfig { name, overrides, .. } => {
                self.existing(name)?;
                if let Some(topic) = self.topics.get_mut(name) {
                    topic.overrides = overrides.clone();
                }
                Ok(self.summary(name))
            }
            MetadataRecord::AlterReassignment {
                name,
                partition,
                allow_factor_change,
                target,
                ..
            } => {
                if let Some(target) = target {
                    self.check_target(target)?;
                }
                self.alter_reassignment(name, *partition, *allow_factor_change, target.as_deref())?;
                Ok(self.summary(name))
            }
            MetadataRecord::ElectLeader { name, partition, election, .. } => {
                self.elect_leader(name, *partition, *election)?;
                Ok(self.summary(name))
            }
            MetadataRecord::AlterConfigs { resource_type, name, configs, .. } => {
                // Checked by the proposer (names, types, bounds), as Kafka's controller
                // takes what its broker validated; the outcome names the resource.
                self.configs.set(*resource_type, name, configs.clone());
                Ok(TopicSummary {
                    name: name.clone(),
                    topic_id: [0; 16],
                    partitions: 0,
                    overrides: configs.clone(),
                    producer_ids: None,
                })
            }
            _ => unreachable!("not a topic record"),
        }
    }

    /// Kafka's `changePartitionReassignment` and `cancelPartitionReassignment` for one
    /// partition. A new target: the replicas become the target followed by the current ones
    /// not in it; `adding` the target's replicas the partition did not have before the
    /// reassignment in progress (if any), `removing` the current ones not in the target.
    /// With nothing to add (only removals, or a new order) it ends at once where an in-sync
    /// replica stays. Cancelling (no target): the added replicas leave the replicas and the
    /// ISR, refused when that would leave no in-sync replica (an unclean election, which
    /// Kafka allows only with `unclean.leader.election.enable`). Either way the leader
    /// stays if it is still a live in-sync replica, else the first one that is leads, and
    /// the leader epoch goes up; a target equal to what the partition has changes nothing.
    fn alter_reassignment(
        &mut self,
        name: &str,
        partition: i32,
        allow_factor_change: bool,
        target: Option<&[NodeId]>,
    ) -> Result<(), Refusal> {
        let brokers = &self.brokers;
        let live = |id: NodeId| brokers.get(&id).is_some_and(|b| !b.fenced);
        let state = partition_mut(&mut self.topics, name, partition)?;
        match target {
            None => {
                if !state.reassigning() {
                    let message = format!(
                        "No partition reassignment is in progress for the topic '{name}' \
                         partition {partition}."
                    );
                    return refuse(ErrorCode::NoReassignmentInProgress, message);
                }
                let adding = std::mem::take(&mut state.adding);
                let isr: Vec<NodeId> =
                    state.isr.iter().copied().filter(|id| !adding.contains(id)).collect();
                if isr.is_empty() {
                    state.adding = adding;
                    let message = format!(
                        "Unable to revert partition assignment for {name}:{partition} because \
                         it would require an unclean leader election."
                    );
                    return refuse(ErrorCode::InvalidReplicaAssignment, message);
                }
                state.replicas.retain(|id| !adding.contains(id));
                state.isr = isr;
                state.removing.clear();
            }
            Some(target) => {
                let factor = state.replicas.len() - state.removing.len();
                if !allow_factor_change && target.len() != factor {
                    let message = format!(
                        "The replication factor is changed from {factor} to {}",
                        target.len()
                    );
                    return refuse(ErrorCode::InvalidReplicationFactor, message);
                }
                let original: Vec<NodeId> = state
                    .replicas
                    .iter()
                    .copied()
                    .filter(|id| !state.adding.contains(id))
                    .collect();
                let mut replicas = target.to_vec();
                replicas.extend(state.replicas.iter().filter(|id| !target.contains(id)));
                let adding: Vec<NodeId> =
                    target.iter().copied().filter(|id| !original.contains(id)).collect();
                let removing: Vec<NodeId> =
                    state.replicas.iter().copied().filter(|id| !target.contains(id)).collect();
                if replicas == state.replicas
                    && adding == state.adding
                    && removing == state.removing
                {
                    return Ok(());
                }
                state.replicas = replicas;
                state.adding = adding;
                state.removing = removing;
                if state.reassignment_done() {
                    state.finish_reassignment();
                }
            }
        }
        state.leader = clean_leader(state, &state.isr, live);
        state.leader_epoch = LeaderEpoch(state.leader_epoch.0 + 1);
        state.partition_epoch = state.partition_epoch.next();
        Ok(())
    }

    /// Kafka's `ReplicationControlManager.electLeader` for one partition. Preferred: the
    /// first replica leads if it is live and in sync (ELECTION_NOT_NEEDED if it leads,
    /// PREFERRED_LEADER_NOT_AVAILABLE if it cannot). Unclean: only for a partition without a
    /// leader (ELECTION_NOT_NEEDED otherwise): the first live in-sync replica, else the
    /// first live replica that is not still being added, which becomes the whole ISR
    /// (ELIGIBLE_LEADERS_NOT_AVAILABLE when no replica is live). One leader epoch higher.
    fn elect_leader(
        &mut self,
        name: &str,
        partition: i32,
        election: Election,
    ) -> Result<(), Refusal> {
        let brokers = &self.brokers;
        let live = |id: NodeId| brokers.get(&id).is_some_and(|b| !b.fenced);
        let state = partition_mut(&mut self.topics, name, partition)?;
        let not_needed = || {
            refuse(
                ErrorCode::ElectionNotNeeded,
                "Leader election not needed for topic partition.".into(),
            )
        };
        match election {
            Election::Preferred => {
                let preferred = state.replicas.first().copied().unwrap_or(NodeId::NONE);
                if state.leader == preferred {
                    return not_needed();
                }
                if !state.isr.contains(&preferred) || !live(preferred) {
                    let message = format!(
                        "Failed to elect leader for partition {name}-{partition} under strategy \
                         PreferredReplicaPartitionLeaderElectionStrategy"
                    );
                    return refuse(ErrorCode::PreferredLeaderNotAvailable, message);
                }
                state.leader = preferred;
            }
            Election::Unclean => {
                if state.leader != NodeId::NONE {
                    return not_needed();
                }
                let clean = clean_leader(state, &state.isr, live);
                if clean != NodeId::NONE {
                    state.leader = clean;
                } else {
                    let settled = state.replicas.iter().filter(|id| !state.adding.contains(id));
                    let Some(chosen) = settled.copied().find(|id| live(*id)) else {
                        let message = format!(
                            "Failed to elect leader for partition {name}-{partition} under \
                             strategy UncleanLeaderElectionStrategy"
                        );
                        return refuse(ErrorCode::EligibleLeadersNotAvailable, message);
                    };
                    state.leader = chosen;
                    state.isr = vec![chosen];
                }
            }
        }
        state.leader_epoch = LeaderEpoch(state.leader_epoch.0 + 1);
        state.partition_epoch = state.partition_epoch.next();
        Ok(())
    }

    /// Applies a CompleteReassignment if it is the partition's next leader epoch and its
    /// reassignment can end; whether anything changed.
    fn complete_reassignment(
        &mut self,
        topic_id: &[u8; 16],
        partition: i32,
        leader_epoch: LeaderEpoch,
    ) -> bool {
        let brokers = &self.brokers;
        let live = |id: NodeId| brokers.get(&id).is_some_and(|b| !b.fenced);
        let Some(name) = self.topic_names.get(topic_id) else { return false };
        let Ok(state) = partition_mut(&mut self.topics, name, partition) else { return false };
        if leader_epoch.0 != state.leader_epoch.0 + 1 || !state.reassignment_done() {
            return false;
        }
        state.finish_reassignment();
        state.leader = clean_leader(state, &state.isr, live);
        state.leader_epoch = leader_epoch;
        state.partition_epoch = state.partition_epoch.next();
        true
    }

    /// A reassignment's target as Kafka's `validateManualPartitionAssignment` checks it:
    /// not empty, registered brokers, none twice (in node id order, as Kafka reports them).
    fn check_target(&self, target: &[NodeId]) -> Result<(), Refusal> {
        if target.is_empty() {
            let message = "The manual partition assignment includes an empty replica list.";
            return refuse(ErrorCode::InvalidReplicaAssignment, message.into());
        }
        let mut sorted = target.to_vec();
        sorted.sort_unstable();
        for (i, id) in sorted.iter().enumerate() {
            if !self.brokers.contains_key(id) {
                let message = format!(
                    "The manual partition assignment includes broker {id}, but no such broker \
                     is registered."
                );
                return refuse(ErrorCode::InvalidReplicaAssignment, message);
            }
            if i > 0 && sorted[i - 1] == *id {
                let message = format!(
                    "The manual partition assignment includes the broker {id} more than once."
                );
                return refuse(ErrorCode::InvalidReplicaAssignment, message);
            }
        }
        Ok(())
    }

    fn existing(&self, name: &str) -> Result<&TopicState, Refusal> {
        self.topics.get(name).ok_or_else(|| Refusal {
            code: ErrorCode::UnknownTopicOrPartition,
            message: format!("no topic {name}"),
        })
    }

    /// Every partition has replicas, each a registered broker, none twice.
    fn check_replicas(&self, replicas: &[Vec<NodeId>]) -> Result<(), Refusal> {
        for set in replicas {
            if set.is_empty() {
                return refuse(
                    ErrorCode::InvalidReplicaAssignment,
                    "a partition without replicas".into(),
                );
            }
            if let Some(replica) = set.iter().find(|id| !self.brokers.contains_key(id)) {
                let message = format!("broker {replica} is not registered");
                return refuse(ErrorCode::InvalidReplicaAssignment, message);
            }
            let mut sorted = set.clone();
            sorted.sort_unstable();
            sorted.dedup();
            if sorted.len() != set.len() {
                let message = format!("a partition's replicas name a broker twice: {set:?}");
                return refuse(ErrorCode::InvalidReplicaAssignment, message);
            }
        }
        Ok(())
    }

    /// The summary of topic `name`, which exists.
    fn summary(&self, name: &str) -> TopicSummary {
        let topic = &self.topics[name];
        TopicSummary {
            name: name.to_string(),
            topic_id: topic.topic_id,
            partitions: topic.partitions.len() as i32,
            overrides: topic.overrides.clone(),
            producer_ids: None,
        }
    }
}

/// The outcome of a credential or ACL change: done, naming the user or the resource.
fn done(name: &str) -> TopicSummary {
    TopicSummary {
        name: name.to_string(),
        topic_id: [0; 16],
        partitions: 0,
        overrides: BTreeMap::new(),
        producer_ids: None,
    }
}

fn refuse<T>(code: ErrorCode, message: String) -> Result<T, Refusal> {
    Err(Refusal { code, message })
}

/// The leader a partition with in-sync replicas `isr` should have: a live leader in the ISR
/// keeps office, else the first replica that is in sync and live, NONE when there is none.
fn clean_leader(
    partition: &PartitionState,
    isr: &[NodeId],
    live: impl Fn(NodeId) -> bool,
) -> NodeId {
    if isr.contains(&partition.leader) && live(partition.leader) {
        return partition.leader;
    }
    let candidates = partition.replicas.iter().filter(|id| isr.contains(id));
    candidates.copied().find(|id| live(*id)).unwrap_or(NodeId::NONE)
}

/// Partition `partition` of topic `name`, or UNKNOWN_TOPIC_OR_PARTITION in Kafka's words.
fn partition_mut<'a>(
    topics: &'a mut BTreeMap<String, TopicState>,
    name: &str,
    partition: i32,
) -> Result<&'a mut PartitionState, Refusal> {
    let Some(topic) = topics.get_mut(name) else {
        return refuse(
            ErrorCode::UnknownTopicOrPartition,
            format!("Unable to find a topic named {name}."),
        );
    };
    match usize::try_from(partition).ok().and_then(|index| topic.partitions.get_mut(index)) {
        Some(state) => Ok(state),
        None => {
            let message = format!("Unable to find partition {name}:{partition}.");
            refuse(ErrorCode::UnknownTopicOrPartition, message)
        }
    }
}

/// Leaders for partitions `first..first + count` of the previous version's static internal
/// topic placement (`InternalTopic`): round-robin over `brokers` (sorted by node id), from a
/// start set by the name (FNV-1a, as the shard table hashes). Replicas of topics are placed
/// by `placement::assign`.
pub fn place(name: &str, brokers: &[NodeId], first: usize, count: usize) -> Vec<NodeId> {
    if brokers.is_empty() {
        return Vec::new();
    }
    let mut sorted = brokers.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let start = crate::shard::table::shard_for_key(name, sorted.len()).index();
    (first..first + count).map(|partition| sorted[(start + partition) % sorted.len()]).collect()
}

/// Whether an AlterPartition with this outcome moved the partition epoch: taken (with a new
/// ISR or the same) or refused as invalid, based on the partition as it is; a stale one
/// (another leader, leader epoch or partition epoch) moves nothing.
fn alter_partition_moves_epoch(checked: &Result<bool, ErrorCode>) -> bool {
    matches!(checked, Ok(_) | Err(ErrorCode::InvalidRequest | ErrorCode::IneligibleReplica))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A registration whose incarnation is its port (a new port: a new process).
    fn register(id: i32, port: u16) -> MetadataRecord {
        let incarnation = u64::from(port);
        let host = "h".into();
        MetadataRecord::RegisterBroker { node_id: NodeId(id), host, port, incarnation, rack: None }
    }

    #[test]
    fn registrations_and_leaders_apply_in_order() {
        let mut state = MetadataState::default();
        assert!(!state.apply(1, None).changed);
        let change = MetadataRecord::LeaderChange { leader_id: NodeId(2), term: 1 };
        assert!(state.apply(2, Some(&change)).changed);
        assert_eq!((state.leader_id, state.leader_term), (Some(NodeId(2)), 1));
        assert!(state.apply(3, Some(&register(1, 9092))).changed);
        assert!(state.apply(4, Some(&register(2, 9192))).changed);
        // The same registration again changes nothing; a new incarnation replaces the old one.
        assert!(!state.apply(5, Some(&register(1, 9092))).changed);
        assert!(state.apply(6, Some(&register(1, 9099))).changed);
        assert_eq!(state.registration(NodeId(1), 9099).map(|b| b.epoch), Some(6));
        assert!(state.registration(NodeId(1), 9092).is_none());
        assert!(state.registration(NodeId(3), 9092).is_none());
        assert_eq!(state.brokers.len(), 2);
        assert_eq!(state.applied_index, 6);
        let older = MetadataRecord::LeaderChange { leader_id: NodeId(1), term: 0 };
        assert!(!state.apply(7, Some(&older)).changed);
        assert_eq!(state.leader_id, Some(NodeId(2)));
    }

    #[test]
    fn two_nodes_applying_the_same_log_agree() {
        let log: Vec<Option<MetadataRecord>> = vec![
            None,
            Some(MetadataRecord::LeaderChange { leader_id: NodeId(1), term: 1 }),
            Some(register(3, 1)),
            Some(register(1, 2)),
            None,
            Some(MetadataRecord::LeaderChange { leader_id: NodeId(3), term: 2 }),
            Some(register(1, 3)),
        ];
        let mut first = MetadataState::default();
        let mut second = MetadataState::default();
        for (i, record) in log.iter().enumerate() {
            first.apply(i as u64 + 1, record.as_ref());
        }
        for (i, record) in log.iter().enumerate() {
            second.apply(i as u64 + 1, record.as_ref());
        }
        assert_eq!(first, second);
        assert_eq!(first.leader_id, Some(NodeId(3)));
    }

    fn request(serial: u64) -> RequestId {
        RequestId { node_id: NodeId(1), serial }
    }

    fn create(serial: u64, name: &str, leaders: &[i32]) -> MetadataRecord {
        MetadataRecord::CreateTopic {
            request: request(serial),
            name: name.into(),
            topic_id: [serial as u8; 16],
            replicas: leaders.iter().map(|id| vec![NodeId(*id)]).collect(),
            overrides: BTreeMap::from([("retention.ms".into(), "5".into())]),
        }
    }

    /// A state with brokers 1, 2 and 3 registered and unfenced (as if their unfence records
    /// had been applied), at index 3.
    fn three_brokers() -> MetadataState {
        let mut state = MetadataState::default();
        for id in 1..=3 {
            state.apply(id as u64, Some(&register(id, 9000 + id as u16)));
        }
        for broker in state.brokers.values_mut() {
            broker.fenced = false;
        }
        state
    }

    fn outcome_code(applied: &Applied) -> ErrorCode {
        match &applied.outcome {
            Some((_, Ok(_))) => ErrorCode::None,
            Some((_, Err(refusal))) => refusal.code,
            None => panic!("no outcome: {applied:?}"),
        }
    }

    fn producer_ids(node: i32, serial: u64, legacy_end: i64) -> MetadataRecord {
        let request = RequestId { node_id: NodeId(node), serial };
        MetadataRecord::ProducerIds { request, legacy_end, block_size: 1000 }
    }

    fn block(applied: &Applied) -> Result<ProducerIdBlock, ErrorCode> {
        match &applied.outcome {
            Some((_, Ok(summary))) => Ok(summary.producer_ids.expect("a block")),
            Some((_, Err(refusal))) => Err(refusal.code),
            None => panic!("no outcome: {applied:?}"),
        }
    }

    #[test]
    fn producer_id_blocks_are_given_at_once_above_every_interleaved_id() {
        const START: i64 = CLUSTER_PRODUCER_ID_BLOCKS_START;
        let mut state = three_brokers();
        // Brokers 2 and 3 are registered and never ask (dead, or an earlier version still
        // handing out interleaved ids): node 1's first block is given at once, at 2^50.
        let first = state.apply(4, Some(&producer_ids(1, 1, 0)));
        assert_eq!(block(&first), Ok(ProducerIdBlock { first: START, size: 1000 }));
        assert!(!first.catalog_changed);
        // The next blocks follow, whoever asks; a repeated record takes effect once.
        let second = state.apply(5, Some(&producer_ids(2, 1, 5 * 1024)));
        assert_eq!(block(&second), Ok(ProducerIdBlock { first: START + 1000, size: 1000 }));
        assert_eq!(state.apply(6, Some(&producer_ids(2, 1, 5 * 1024))).outcome, None);
        // A node whose interleaved ids went past 2^50 gets its block above its own ids.
        state.apply(7, Some(&register(4, 9004)));
        let late = state.apply(8, Some(&producer_ids(4, 1, START + 100_000)));
        assert_eq!(block(&late), Ok(ProducerIdBlock { first: START + 100_000, size: 1000 }));
        assert_eq!(state.producer_ids.next, START + 101_000);
        let bad =
            MetadataRecord::ProducerIds { request: request(77), legacy_end: 0, block_size: 0 };
        assert_eq!(block(&state.apply(9, Some(&bad))), Err(ErrorCode::InvalidRequest));
        state.producer_ids.next = i64::MAX - 10;
        let exhausted = state.apply(10, Some(&producer_ids(2, 9, 0)));
        assert_eq!(block(&exhausted), Err(ErrorCode::UnknownServerError));
    }

    /// A state of the previous version (its snapshot: no block yet, some reports, `next`
    /// at a legacy end) or one where that version already gave blocks below 2^50: the next
    /// block starts at 2^50, above all of them, and clears the old reports.
    #[test]
    fn blocks_after_the_previous_rule_start_above_what_it_gave() {
        let mut waiting = three_brokers();
        waiting.producer_ids.next = 9 * 1024;
        waiting.producer_ids.reported = BTreeSet::from([NodeId(1)]);
        let first = waiting.apply(4, Some(&producer_ids(2, 1, 0)));
        let start = CLUSTER_PRODUCER_ID_BLOCKS_START;
        assert_eq!(block(&first), Ok(ProducerIdBlock { first: start, size: 1000 }));
        assert!(waiting.producer_ids.started && waiting.producer_ids.reported.is_empty());
        let mut started = three_brokers();
        started.producer_ids.next = 2_048_000 + 3000;
        started.producer_ids.started = true;
        let next = started.apply(4, Some(&producer_ids(3, 1, 0)));
        assert_eq!(block(&next), Ok(ProducerIdBlock { first: start, size: 1000 }));
    }

    #[test]
    fn an_unregistered_broker_is_gone_until_it_registers_or_joins_again() {
        let mut state = three_brokers();
        let unregister = |serial, id| MetadataRecord::UnregisterBroker {
            request: request(serial),
            node_id: NodeId(id),
        };
        state.apply(4, Some(&create(10, "t", &[3, 1])));
        let applied = state.apply(5, Some(&unregister(11, 3)));
        assert_eq!(outcome_code(&applied), ErrorCode::None);
        assert!(!state.brokers.contains_key(&NodeId(3)));
        assert_eq!(state.unregistered.get(&NodeId(3)), Some(&5));
        // Its partition loses its leader as for a fenced broker.
        let changes = state.partition_changes();
        assert!(
            matches!(&changes[..], [MetadataRecord::PartitionChange { leader: NodeId::NONE, .. }]),
            "{changes:?}"
        );
        let again = state.apply(6, Some(&unregister(12, 3)));
        assert_eq!(outcome_code(&again), ErrorCode::BrokerIdNotRegistered);
        // Registering again brings it back; a learner added again forgets it too.
        state.apply(9, Some(&register(3, 9013)));
        assert!(state.brokers.contains_key(&NodeId(3)) && state.unregistered.is_empty());
        state.apply(10, Some(&unregister(13, 3)));
        state.learner_added(NodeId(3));
        assert!(state.unregistered.is_empty());
    }

    #[test]
    fn create_topic_then_the_same_name_again_is_already_exists() {
        let mut state = three_brokers();
        let applied = state.apply(4, Some(&create(10, "t", &[2, 3, 1])));
        assert!(applied.changed && applied.catalog_changed);
        let (id, outcome) = applied.outcome.clone().unwrap();
        assert_eq!(id, request(10));
        let summary = outcome.unwrap();
        assert_eq!((summary.name.as_str(), summary.partitions), ("t", 3));
        assert_eq!(summary.overrides["retention.ms"], "5");
        assert_eq!(state.topics["t"].replicas(), [NodeId(2), NodeId(3), NodeId(1)]);
        assert_eq!(state.topics["t"].leaders(), [NodeId(2), NodeId(3), NodeId(1)]);
        let again = state.apply(5, Some(&create(11, "t", &[1])));
        assert_eq!(outcome_code(&again), ErrorCode::TopicAlreadyExists);
        assert!(!again.changed && !again.catalog_changed);
        // Same topic id under another name: refused too (ids name topics in Fetch v13+).
        let mut same_id = create(10, "u", &[1]);
        if let MetadataRecord::CreateTopic { request, .. } = &mut same_id {
            request.serial = 12;
        }
        assert_eq!(outcome_code(&state.apply(6, Some(&same_id))), ErrorCode::TopicAlreadyExists);
        assert_eq!(state.topics.len(), 1);
    }

    #[test]
    fn create_topic_with_an_unregistered_or_no_leader_is_refused() {
        let mut state = three_brokers();
        let unknown = state.apply(4, Some(&create(1, "t", &[1, 4])));
        assert_eq!(outcome_code(&unknown), ErrorCode::InvalidReplicaAssignment);
        let empty = state.apply(5, Some(&create(2, "t", &[])));
        assert_eq!(outcome_code(&empty), ErrorCode::InvalidPartitions);
        assert!(state.topics.is_empty());
    }

    #[test]
    fn a_request_applied_twice_takes_effect_once() {
        let mut state = three_brokers();
        assert_eq!(outcome_code(&state.apply(4, Some(&create(1, "t", &[1])))), ErrorCode::None);
        let delete = MetadataRecord::DeleteTopic { request: request(2), name: "t".into() };
        assert_eq!(outcome_code(&state.apply(5, Some(&delete))), ErrorCode::None);
        // The create's retry commits after the delete: it is not a new topic.
        assert_eq!(state.apply(6, Some(&create(1, "t", &[1]))), Applied::default());
        assert!(state.topics.is_empty());
    }

    #[test]
    fn remembered_requests_are_bounded() {
        let mut state = three_brokers();
        let total = CLUSTER_REQUESTS_REMEMBERED_MAX as u64 + 5;
        for serial in 0..total {
            let alter = MetadataRecord::AlterTopicConfig {
                request: request(serial),
                name: "none".into(),
                overrides: BTreeMap::new(),
            };
            state.apply(4 + serial, Some(&alter));
        }
        assert_eq!(state.requests_seen.len(), CLUSTER_REQUESTS_REMEMBERED_MAX);
        assert!(!state.requests_seen.contains(&request(4)));
        assert!(state.requests_seen.contains(&request(5)));
    }

    #[test]
    fn a_repeated_create_answers_again_while_its_topic_stands() {
        let mut state = three_brokers();
        let first = state.apply(4, Some(&create(2, "t", &[3])));
        let again = state.apply(5, Some(&create(2, "t", &[3])));
        assert!(!again.changed && !again.catalog_changed);
        assert_eq!(again.outcome, first.outcome);
        assert_eq!(state.topics.len(), 1);
        // Deleted since (or created again under another id): nothing to tell.
        let delete = MetadataRecord::DeleteTopic { request: request(3), name: "t".into() };
        state.apply(6, Some(&delete));
        assert_eq!(state.apply(7, Some(&create(2, "t", &[3]))).outcome, None);
        assert_eq!(state.apply(8, Some(&delete)), Applied::default());
    }

    #[test]
    fn delete_topic_of_an_unknown_name_is_unknown_topic() {
        let mut state = three_brokers();
        let delete = MetadataRecord::DeleteTopic { request: request(1), name: "t".into() };
        let applied = state.apply(4, Some(&delete));
        assert_eq!(outcome_code(&applied), ErrorCode::UnknownTopicOrPartition);
        state.apply(5, Some(&create(2, "t", &[3])));
        let delete = MetadataRecord::DeleteTopic { request: request(3), name: "t".into() };
        let applied = state.apply(6, Some(&delete));
        let (_, outcome) = applied.outcome.unwrap();
        assert_eq!(outcome.unwrap().topic_id, [2; 16]);
        assert!(applied.catalog_changed && state.topics.is_empty());
    }

    #[test]
    fn create_partitions_grows_only_from_the_count_it_was_proposed_against() {
        let mut state = three_brokers();
        state.apply(4, Some(&create(1, "t", &[1, 2])));
        let grow = |serial, count, leaders: &[i32]| MetadataRecord::CreatePartitions {
            request: request(serial),
            name: "t".into(),
            count,
            replicas: leaders.iter().map(|id| vec![NodeId(*id)]).collect(),
        };
        assert_eq!(
            outcome_code(&state.apply(5, Some(&grow(2, 2, &[])))),
            ErrorCode::InvalidPartitions
        );
        // Proposed against 2 partitions, but another growth to 3 committed first.
        assert_eq!(outcome_code(&state.apply(6, Some(&grow(3, 3, &[3])))), ErrorCode::None);
        let stale = state.apply(7, Some(&grow(4, 4, &[1, 2])));
        assert_eq!(outcome_code(&stale), ErrorCode::InvalidPartitions);
        let unknown_broker = state.apply(8, Some(&grow(5, 4, &[9])));
        assert_eq!(outcome_code(&unknown_broker), ErrorCode::InvalidReplicaAssignment);
        let applied = state.apply(9, Some(&grow(6, 5, &[1, 2])));
        assert_eq!(applied.outcome.unwrap().1.unwrap().partitions, 5);
        let leaders = [1, 2, 3, 1, 2].map(NodeId);
        assert_eq!(state.topics["t"].replicas(), leaders);
        let missing = MetadataRecord::CreatePartitions {
            request: request(7),
            name: "u".into(),
            count: 2,
            replicas: vec![vec![NodeId(1)]],
        };
        let applied = state.apply(10, Some(&missing));
        assert_eq!(outcome_code(&applied), ErrorCode::UnknownTopicOrPartition);
    }

    #[test]
    fn alter_topic_config_replaces_the_overrides() {
        let mut state = three_brokers();
        state.apply(4, Some(&create(1, "t", &[1])));
        let overrides = BTreeMap::from([("segment.ms".to_string(), "9".to_string())]);
        let alter = |serial, name: &str| MetadataRecord::AlterTopicConfig {
            request: request(serial),
            name: name.into(),
            overrides: overrides.clone(),
        };
        assert_eq!(outcome_code(&state.apply(5, Some(&alter(2, "t")))), ErrorCode::None);
        assert_eq!(state.topics["t"].overrides, overrides);
        let unknown = state.apply(6, Some(&alter(3, "u")));
        assert_eq!(outcome_code(&unknown), ErrorCode::UnknownTopicOrPartition);
    }

    #[test]
    fn the_first_internal_topic_placement_wins() {
        let mut state = three_brokers();
        let first = MetadataRecord::InternalTopic {
            name: "__consumer_offsets".into(),
            leaders: vec![NodeId(2), NodeId(3)],
        };
        let second = MetadataRecord::InternalTopic {
            name: "__consumer_offsets".into(),
            leaders: vec![NodeId(1)],
        };
        let applied = state.apply(4, Some(&first));
        assert!(applied.changed && !applied.catalog_changed && applied.outcome.is_none());
        assert_eq!(state.apply(5, Some(&second)), Applied::default());
        assert_eq!(state.internal["__consumer_offsets"], [NodeId(2), NodeId(3)]);
        assert!(state.topics.is_empty());
    }

    #[test]
    fn the_first_cluster_id_wins() {
        let mut state = MetadataState::default();
        let first = MetadataRecord::ClusterId { cluster_id: "first".into() };
        let second = MetadataRecord::ClusterId { cluster_id: "second".into() };
        assert!(state.apply(1, Some(&first)).catalog_changed);
        assert_eq!(state.apply(2, Some(&second)), Applied::default());
        assert_eq!(state.cluster_id.as_deref(), Some("first"));
    }

    #[test]
    fn placement_is_round_robin_over_sorted_brokers_from_a_start_set_by_the_name() {
        let brokers = [NodeId(3), NodeId(1), NodeId(2)];
        for name in ["a", "orders", "payments", "t"] {
            let leaders = place(name, &brokers, 0, 6);
            let start = leaders[0].0 as usize - 1;
            let expected: Vec<NodeId> =
                (0..6).map(|i| NodeId(((start + i) % 3) as i32 + 1)).collect();
            assert_eq!(leaders, expected, "{name}");
            // Later partitions continue where the first ones left off.
            assert_eq!(place(name, &brokers, 4, 2), leaders[4..]);
        }
        let starts: BTreeSet<NodeId> =
            (0..30).map(|i| place(&format!("topic-{i}"), &brokers, 0, 1)[0]).collect();
        assert_eq!(starts.len(), 3, "the first partitions of many topics spread");
        assert!(place("t", &[], 0, 3).is_empty());
    }

    fn fence(id: i32, broker_epoch: u64) -> MetadataRecord {
        let reason = crate::cluster::records::FenceReason::SessionExpired;
        MetadataRecord::FenceBroker { node_id: NodeId(id), broker_epoch, reason }
    }

    fn unfence(id: i32, broker_epoch: u64) -> MetadataRecord {
        MetadataRecord::UnfenceBroker { node_id: NodeId(id), broker_epoch }
    }

    #[test]
    fn credentials_and_acls_apply_alike_everywhere() {
        use crate::security::acl::{Operation, PatternType, Permission, ResourceType};
        let mut state = MetadataState::default();
        let mut serial = 0;
        let mut request = || {
            serial += 1;
            RequestId { node_id: NodeId(1), serial }
        };
        let credential = |byte: u8| Credential {
            salt: vec![byte],
            stored_key: vec![byte; 32],
            server_key: vec![byte; 32],
            iterations: 4096,
        };
        let upsert = |request, byte, if_absent| MetadataRecord::ScramCredential {
            request,
            user: "alice".into(),
            mechanism: Mechanism::Sha256,
            credential: credential(byte),
            if_absent,
        };
        let key = ("alice".to_string(), Mechanism::Sha256);
        assert!(next(&mut state, &upsert(request(), 1, true)).security_changed);
        // A bootstrap (if absent) keeps what is there; a change replaces it.
        assert!(!next(&mut state, &upsert(request(), 2, true)).security_changed);
        assert_eq!(state.scram[&key], credential(1));
        let changed = upsert(request(), 3, false);
        assert!(next(&mut state, &changed).security_changed);
        assert_eq!(state.scram[&key], credential(3));
        // The same request committed twice takes effect once, and answers its proposer
        // again (it may have missed the first outcome inside a snapshot).
        let again = next(&mut state, &changed);
        assert!(!again.changed && !again.security_changed);
        assert_eq!(
            again.outcome.map(|(_, outcome)| outcome.map(|s| s.name)),
            Some(Ok("alice".into()))
        );
        let remove = |request| MetadataRecord::RemoveScramCredential {
            request,
            user: "alice".into(),
            mechanism: Mechanism::Sha256,
        };
        let applied = next(&mut state, &remove(request()));
        assert!(applied.security_changed && applied.outcome.unwrap().1.is_ok());
        let applied = next(&mut state, &remove(request()));
        let refusal = applied.outcome.unwrap().1.unwrap_err();
        assert_eq!(refusal.code, ErrorCode::ResourceNotFound);
        let acl = AclBinding {
            resource_type: ResourceType::Group,
            name: "g".into(),
            pattern: PatternType::Literal,
            principal: "User:bob".into(),
            host: "*".into(),
            operation: Operation::Read,
            permission: Permission::Deny,
        };
        let add = |request| MetadataRecord::AccessControlEntry { request, acl: acl.clone() };
        assert!(next(&mut state, &add(request())).security_changed);
        assert!(!next(&mut state, &add(request())).security_changed);
        assert_eq!(state.acls.len(), 1);
        let drop = MetadataRecord::RemoveAccessControlEntry { request: request(), acl };
        assert!(next(&mut state, &drop).security_changed);
        assert!(state.acls.is_empty());
    }

    /// Applies `record` at the next index.
    fn next(state: &mut MetadataState, record: &MetadataRecord) -> Applied {
        state.apply(state.applied_index + 1, Some(record))
    }

    /// Applies every change `partition_changes` asks for; how many there were.
    fn settle(state: &mut MetadataState) -> usize {
        let changes = state.partition_changes();
        for change in &changes {
            assert!(next(state, change).catalog_changed, "{change:?}");
        }
        assert!(state.partition_changes().is_empty());
        changes.len()
    }

    fn leader_and_epoch(state: &MetadataState, name: &str, partition: usize) -> (NodeId, i32) {
        let p = &state.topics[name].partitions[partition];
        (p.leader, p.leader_epoch.0)
    }

    fn create_replicated(serial: u64, name: &str, sets: &[&[i32]]) -> MetadataRecord {
        MetadataRecord::CreateTopic {
            request: request(serial),
            name: name.into(),
            topic_id: [serial as u8; 16],
            replicas: sets.iter().map(|set| set.iter().map(|id| NodeId(*id)).collect()).collect(),
            overrides: BTreeMap::new(),
        }
    }

    #[test]
    fn replica_sets_are_checked_when_applied() {
        let mut state = three_brokers();
        let twice = next(&mut state, &create_replicated(1, "t", &[&[1, 2, 1]]));
        assert_eq!(outcome_code(&twice), ErrorCode::InvalidReplicaAssignment);
        let empty = next(&mut state, &create_replicated(2, "t", &[&[1], &[]]));
        assert_eq!(outcome_code(&empty), ErrorCode::InvalidReplicaAssignment);
        let unknown = next(&mut state, &create_replicated(3, "t", &[&[1, 9]]));
        assert_eq!(outcome_code(&unknown), ErrorCode::InvalidReplicaAssignment);
        let created = next(&mut state, &create_replicated(4, "t", &[&[2, 3, 1]]));
        assert_eq!(outcome_code(&created), ErrorCode::None);
        let partition = &state.topics["t"].partitions[0];
        assert_eq!(partition.replicas, [2, 3, 1].map(NodeId));
        assert_eq!(partition.isr, partition.replicas, "every replica starts in sync");
        assert_eq!((partition.leader, partition.leader_epoch), (NodeId(2), LeaderEpoch::INITIAL));
    }

    /// Fencing takes brokers out of the ISR and the leadership to the next in-sync replica;
    /// the last in-sync replica stays in the ISR, so the partition waits for it (no
    /// unclean election) and it leads again when it comes back.
    #[test]
    fn fencing_shrinks_the_isr_and_moves_leadership_within_it() {
        let mut state = three_brokers();
        next(&mut state, &create_replicated(1, "t", &[&[1, 2, 3]]));
        let epoch = |state: &MetadataState, id| state.brokers[&NodeId(id)].epoch;
        let isr = |state: &MetadataState| state.topics["t"].partitions[0].isr.clone();
        let (one, two, three) = (epoch(&state, 1), epoch(&state, 2), epoch(&state, 3));
        next(&mut state, &fence(2, two));
        assert_eq!(settle(&mut state), 1);
        assert_eq!(isr(&state), [1, 3].map(NodeId));
        // A follower left: a new partition epoch, the same leader epoch.
        assert_eq!(leader_and_epoch(&state, "t", 0), (NodeId(1), 0), "a follower left");
        assert_eq!(state.topics["t"].partitions[0].partition_epoch, PartitionEpoch(1));
        next(&mut state, &fence(1, one));
        assert_eq!(settle(&mut state), 1);
        assert_eq!(isr(&state), [NodeId(3)]);
        assert_eq!(leader_and_epoch(&state, "t", 0), (NodeId(3), 1));
        next(&mut state, &fence(3, three));
        assert_eq!(settle(&mut state), 1);
        assert_eq!(isr(&state), [NodeId(3)], "the last in-sync replica stays");
        assert_eq!(leader_and_epoch(&state, "t", 0), (NodeId::NONE, 2));
        // Replicas out of sync coming back do not lead: what only 3 has would be lost.
        next(&mut state, &unfence(1, one));
        next(&mut state, &unfence(2, two));
        assert_eq!(settle(&mut state), 0);
        assert_eq!(leader_and_epoch(&state, "t", 0), (NodeId::NONE, 2));
        next(&mut state, &unfence(3, three));
        assert_eq!(settle(&mut state), 1);
        assert_eq!(leader_and_epoch(&state, "t", 0), (NodeId(3), 3));
        assert_eq!(state.topics["t"].partitions[0].partition_epoch, PartitionEpoch(4));
        assert_eq!(isr(&state), [NodeId(3)], "the leader adds caught-up followers back");
    }

    /// A preferred replica that comes back leads again once it is in sync, and not before;
    /// nothing is elected while a fencing change is due.
    #[test]
    fn the_preferred_replica_leads_again_once_it_is_back_in_sync() {
        let mut state = three_brokers();
        next(&mut state, &create_replicated(1, "t", &[&[1, 2, 3], &[2, 3, 1]]));
        assert!(state.preferred_leader_changes().is_empty(), "every preferred leader leads");
        let one = state.brokers[&NodeId(1)].epoch;
        next(&mut state, &fence(1, one));
        assert!(state.preferred_leader_changes().is_empty(), "a fencing change is due first");
        assert_eq!(settle(&mut state), 2);
        assert_eq!(leader_and_epoch(&state, "t", 0), (NodeId(2), 1));
        next(&mut state, &unfence(1, one));
        assert_eq!(settle(&mut state), 0);
        assert!(state.preferred_leader_changes().is_empty(), "1 is not in sync yet");
        // Its leader adds it back to the ISR (as `replication` proposes it).
        let caught_up = MetadataRecord::AlterPartition {
            topic_id: [1; 16],
            partition: 0,
            leader: NodeId(2),
            leader_epoch: LeaderEpoch(1),
            partition_epoch: PartitionEpoch(1),
            isr: [2, 3, 1].map(NodeId).to_vec(),
        };
        assert!(next(&mut state, &caught_up).catalog_changed);
        assert_eq!(leader_and_epoch(&state, "t", 0), (NodeId(2), 1), "the ISR only");
        let changes = state.preferred_leader_changes();
        assert_eq!(
            changes,
            [MetadataRecord::PartitionChange {
                topic_id: [1; 16],
                partition: 0,
                leader: NodeId(1),
                leader_epoch: LeaderEpoch(2),
                partition_epoch: PartitionEpoch(3),
                isr: [2, 3, 1].map(NodeId).to_vec(),
            }]
        );
        assert!(next(&mut state, &changes[0]).catalog_changed);
        assert_eq!(leader_and_epoch(&state, "t", 0), (NodeId(1), 2));
        // 1 left its ISR in a new partition epoch, the leader epoch stayed.
        assert_eq!(leader_and_epoch(&state, "t", 1), (NodeId(2), 0), "led by its preferred");
        assert!(state.preferred_leader_changes().is_empty());
        assert!(state.partition_changes().is_empty());
    }

    #[test]
    fn a_registration_is_fenced_and_its_epoch_is_its_index() {
        let mut state = MetadataState::default();
        state.apply(1, Some(&register(2, 9)));
        let broker = &state.brokers[&NodeId(2)];
        assert_eq!((broker.epoch, broker.fenced, broker.incarnation), (1, true, 9));
        assert!(state.live_brokers().is_empty());
        // Unfenced only by a record of its epoch; a second copy changes nothing.
        assert_eq!(state.apply(2, Some(&unfence(2, 7))), Applied::default());
        assert!(state.apply(3, Some(&unfence(2, 1))).changed);
        assert_eq!(state.apply(4, Some(&unfence(2, 1))), Applied::default());
        assert_eq!(state.live_brokers(), [NodeId(2)]);
        // Fenced likewise; a fence of another epoch or of an unknown broker is nothing.
        assert_eq!(state.apply(5, Some(&fence(2, 4))), Applied::default());
        assert_eq!(state.apply(6, Some(&fence(9, 1))), Applied::default());
        let fenced = state.apply(7, Some(&fence(2, 1)));
        assert!(fenced.changed && !fenced.catalog_changed);
        assert_eq!(state.apply(8, Some(&fence(2, 1))), Applied::default());
        assert!(state.live_brokers().is_empty());
        // A new incarnation: a new epoch, fenced; records of the old epoch leave it alone.
        state.apply(9, Some(&register(2, 10)));
        assert_eq!(state.brokers[&NodeId(2)].epoch, 9);
        assert_eq!(state.apply(10, Some(&unfence(2, 1))), Applied::default());
        assert!(state.apply(11, Some(&unfence(2, 9))).changed);
        assert_eq!(state.apply(12, Some(&fence(2, 1))), Applied::default());
        assert_eq!(state.live_brokers(), [NodeId(2)]);
        // The same incarnation committed again (a retried proposal): still epoch 9, live.
        assert_eq!(state.apply(13, Some(&register(2, 10))), Applied::default());
        assert_eq!(state.brokers[&NodeId(2)].epoch, 9);
        assert!(!state.brokers[&NodeId(2)].fenced);
    }

    #[test]
    fn a_registration_keeps_its_rack_and_a_new_one_replaces_it() {
        let mut state = MetadataState::default();
        let with_rack = |incarnation, rack: Option<&str>| MetadataRecord::RegisterBroker {
            node_id: NodeId(1),
            host: "h".into(),
            port: 1,
            incarnation,
            rack: rack.map(str::to_string),
        };
        assert!(state.apply(1, Some(&with_rack(5, Some("a")))).changed);
        assert_eq!(state.brokers[&NodeId(1)].rack.as_deref(), Some("a"));
        assert!(state.apply(2, Some(&with_rack(6, None))).changed);
        assert_eq!(state.brokers[&NodeId(1)].rack, None);
    }

    #[test]
    fn first_version_registrations_replay_as_before() {
        let old = |port| MetadataRecord::RegisterBroker {
            node_id: NodeId(1),
            host: "h".into(),
            port,
            incarnation: 0,
            rack: None,
        };
        let mut state = MetadataState::default();
        assert!(state.apply(1, Some(&old(1))).changed);
        assert_eq!(state.apply(2, Some(&old(1))), Applied::default());
        assert!(state.apply(3, Some(&old(2))).changed);
        assert_eq!(state.brokers[&NodeId(1)].epoch, 3);
        // A registration of this version replaces it.
        assert!(state.apply(4, Some(&register(1, 2))).changed);
        assert_eq!(state.brokers[&NodeId(1)].incarnation, 2);
    }

    #[test]
    fn a_fenced_leader_loses_its_partitions_and_gets_them_back_with_a_new_epoch() {
        let mut state = three_brokers();
        next(&mut state, &create(1, "t", &[1, 2, 3, 2]));
        next(&mut state, &create(2, "u", &[3]));
        assert_eq!(settle(&mut state), 0);
        assert_eq!(leader_and_epoch(&state, "t", 1), (NodeId(2), 0));
        let epoch_2 = state.brokers[&NodeId(2)].epoch;
        next(&mut state, &fence(2, epoch_2));
        // Fencing alone moves no leader; the changes do, in topic and partition order.
        assert_eq!(leader_and_epoch(&state, "t", 1), (NodeId(2), 0));
        let changes = state.partition_changes();
        let expected: Vec<MetadataRecord> = [1, 3]
            .map(|partition| MetadataRecord::PartitionChange {
                topic_id: [1; 16],
                partition,
                leader: NodeId::NONE,
                leader_epoch: LeaderEpoch(1),
                partition_epoch: PartitionEpoch(1),
                isr: vec![NodeId(2)],
            })
            .to_vec();
        assert_eq!(changes, expected);
        // Each committed twice: the second copy is not the next epoch and is skipped.
        for change in &changes {
            assert!(next(&mut state, change).catalog_changed);
            assert_eq!(next(&mut state, change), Applied::default());
        }
        assert!(state.partition_changes().is_empty());
        assert_eq!(leader_and_epoch(&state, "t", 1), (NodeId::NONE, 1));
        assert_eq!(leader_and_epoch(&state, "t", 0), (NodeId(1), 0));
        assert_eq!(state.topics["t"].partitions[1].isr, [NodeId(2)], "the isr stays");
        // Unfenced: its partitions come back, one epoch higher.
        next(&mut state, &unfence(2, epoch_2));
        assert_eq!(settle(&mut state), 2);
        assert_eq!(leader_and_epoch(&state, "t", 1), (NodeId(2), 2));
        assert_eq!(leader_and_epoch(&state, "t", 3), (NodeId(2), 2));
        assert_eq!(leader_and_epoch(&state, "u", 0), (NodeId(3), 0));
    }

    #[test]
    fn a_restart_before_the_session_expired_takes_leadership_away_and_back() {
        let mut state = three_brokers();
        next(&mut state, &create(1, "t", &[3]));
        // Broker 3 restarts: its new registration is fenced, so its partition has no leader
        // until its first heartbeat unfences it; each change bumps the epoch.
        next(&mut state, &register(3, 1234));
        assert_eq!(settle(&mut state), 1);
        assert_eq!(leader_and_epoch(&state, "t", 0), (NodeId::NONE, 1));
        let epoch = state.brokers[&NodeId(3)].epoch;
        next(&mut state, &unfence(3, epoch));
        assert_eq!(settle(&mut state), 1);
        assert_eq!(leader_and_epoch(&state, "t", 0), (NodeId(3), 2));
    }

    #[test]
    fn stale_or_wrong_partition_changes_are_skipped() {
        let mut state = three_brokers();
        next(&mut state, &create(1, "t", &[1, 2]));
        let change = |partition, leader: i32, epoch, isr: &[i32]| MetadataRecord::PartitionChange {
            topic_id: [1; 16],
            partition,
            leader: NodeId(leader),
            leader_epoch: LeaderEpoch(epoch),
            partition_epoch: PartitionEpoch(epoch),
            isr: isr.iter().map(|id| NodeId(*id)).collect(),
        };
        let mut leader_skips = change(0, -1, 1, &[1]);
        if let MetadataRecord::PartitionChange { leader_epoch, .. } = &mut leader_skips {
            *leader_epoch = LeaderEpoch(2);
        }
        let mut same_epoch_new_leader = change(0, -1, 1, &[1]);
        if let MetadataRecord::PartitionChange { leader_epoch, .. } = &mut same_epoch_new_leader {
            *leader_epoch = LeaderEpoch(0);
        }
        for stale in [
            change(0, -1, 0, &[1]),  // not the next epoch
            change(0, -1, 2, &[1]),  // skips one
            leader_skips,            // the next partition epoch, a leader epoch skipped
            same_epoch_new_leader,   // another leader in the same leader epoch
            change(0, 2, 1, &[1]),   // a leader that is no replica
            change(0, -1, 1, &[]),   // an empty isr
            change(0, -1, 1, &[3]),  // an isr that is no replica
            change(2, -1, 1, &[1]),  // no such partition
            change(-1, -1, 1, &[1]), // no such partition
        ] {
            assert_eq!(next(&mut state, &stale), Applied::default(), "{stale:?}");
        }
        let mut unknown = change(0, -1, 1, &[1]);
        if let MetadataRecord::PartitionChange { topic_id, .. } = &mut unknown {
            *topic_id = [9; 16];
        }
        assert_eq!(next(&mut state, &unknown), Applied::default());
        assert!(next(&mut state, &change(0, -1, 1, &[1])).catalog_changed);
        // A change for a topic deleted meanwhile: skipped.
        let delete = MetadataRecord::DeleteTopic { request: request(5), name: "t".into() };
        next(&mut state, &delete);
        assert_eq!(next(&mut state, &change(1, -1, 1, &[2])), Applied::default());
        assert!(state.partition_changes().is_empty());
    }

    #[test]
    fn partitions_placed_on_a_broker_fenced_meanwhile_are_created_leaderless() {
        let mut state = three_brokers();
        let epoch = state.brokers[&NodeId(3)].epoch;
        next(&mut state, &fence(3, epoch));
        next(&mut state, &create(1, "t", &[3, 1]));
        assert_eq!(state.topics["t"].leaders(), [NodeId::NONE, NodeId(1)]);
        let grow = MetadataRecord::CreatePartitions {
            request: request(2),
            name: "t".into(),
            count: 3,
            replicas: vec![vec![NodeId(3)]],
        };
        next(&mut state, &grow);
        assert_eq!(state.topics["t"].leaders(), [NodeId::NONE, NodeId(1), NodeId::NONE]);
        assert!(state.partition_changes().is_empty());
        next(&mut state, &unfence(3, epoch));
        assert_eq!(settle(&mut state), 2);
        assert_eq!(state.topics["t"].leaders(), [NodeId(3), NodeId(1), NodeId(3)]);
    }

    /// Every sequence of up to four records from a small alphabet (registrations, fences,
    /// unfences of current and old epochs, topic records, partition changes), each applied
    /// once and, from the same state, twice in a row: the second copy never changes the
    /// state (a record committed twice takes effect once), and two nodes applying the same
    /// sequence agree.
    #[test]
    fn every_record_committed_twice_takes_effect_once() {
        let mut alphabet = vec![
            register(1, 7),
            register(1, 8),
            register(2, 7),
            fence(1, 2),
            unfence(1, 2),
            unfence(1, 4),
            fence(1, 4),
            unfence(2, 2),
            create(1, "t", &[1, 2]),
            create(2, "u", &[2]),
            MetadataRecord::DeleteTopic { request: request(3), name: "t".into() },
            MetadataRecord::CreatePartitions {
                request: request(4),
                name: "t".into(),
                count: 3,
                replicas: vec![vec![NodeId(1)]],
            },
        ];
        for leader in [NodeId::NONE, NodeId(1)] {
            alphabet.push(MetadataRecord::PartitionChange {
                topic_id: [1; 16],
                partition: 0,
                leader,
                leader_epoch: LeaderEpoch(1),
                partition_epoch: PartitionEpoch(1),
                isr: vec![NodeId(1)],
            });
        }
        alphabet.push(MetadataRecord::AlterPartition {
            topic_id: [1; 16],
            partition: 0,
            leader: NodeId(1),
            leader_epoch: LeaderEpoch(0),
            partition_epoch: PartitionEpoch(0),
            isr: vec![NodeId(1)],
        });
        let n = alphabet.len();
        let mut sequences = 0;
        for length in 1..=4u32 {
            for code in 0..n.pow(length) {
                let picks: Vec<usize> = (0..length).map(|i| code / n.pow(i) % n).collect();
                let mut once = MetadataState::default();
                let mut twice = MetadataState::default();
                for (i, pick) in picks.iter().enumerate() {
                    let record = &alphabet[*pick];
                    // Same indexes on both sides, so epochs agree: the copy goes between.
                    let index = 2 * i as u64 + 2;
                    once.apply(index, Some(record));
                    twice.apply(index, Some(record));
                    let repeated = twice.apply(index + 1, Some(record));
                    // Nothing changes; a repeated request may answer its proposer again.
                    let unchanged = Applied { outcome: None, ..repeated };
                    assert_eq!(unchanged, Applied::default(), "{picks:?} at {i}");
                    once.applied_index = index + 1;
                    // The controller's changes applied on both keep them equal.
                    assert_eq!(once.partition_changes(), twice.partition_changes());
                }
                assert_eq!(once, twice, "{picks:?}");
                sequences += 1;
            }
        }
        assert_eq!(sequences, n + n * n + n.pow(3) + n.pow(4));
    }

    fn ids(list: &[i32]) -> Vec<NodeId> {
        list.iter().map(|id| NodeId(*id)).collect()
    }

    fn four_brokers() -> MetadataState {
        let mut state = three_brokers();
        next(&mut state, &register(4, 9004));
        state.brokers.get_mut(&NodeId(4)).unwrap().fenced = false;
        state
    }

    fn reassign(serial: u64, partition: i32, target: Option<&[i32]>) -> MetadataRecord {
        MetadataRecord::AlterReassignment {
            request: request(serial),
            name: "t".into(),
            partition,
            allow_factor_change: true,
            target: target.map(ids),
        }
    }

    fn elect(serial: u64, partition: i32, election: Election) -> MetadataRecord {
        MetadataRecord::ElectLeader {
            request: request(serial),
            name: "t".into(),
            partition,
            election,
        }
    }

    /// (replicas, isr, adding, removing) of t-`partition`.
    fn assignment(state: &MetadataState, partition: usize) -> [Vec<NodeId>; 4] {
        let p = &state.topics["t"].partitions[partition];
        [p.replicas.clone(), p.isr.clone(), p.adding.clone(), p.removing.clone()]
    }

    /// The leader's ISR change (as `replication` proposes it) adding `id`.
    fn joins_isr(state: &mut MetadataState, partition: i32, id: i32) {
        let p = &state.topics["t"].partitions[partition as usize];
        let mut isr = p.isr.clone();
        isr.push(NodeId(id));
        let change = MetadataRecord::AlterPartition {
            topic_id: state.topics["t"].topic_id,
            partition,
            leader: p.leader,
            leader_epoch: p.leader_epoch,
            partition_epoch: p.partition_epoch,
            isr,
        };
        assert!(next(state, &change).catalog_changed);
    }

    /// Kafka's reassignment: the new replicas are added, the reassignment ends once they
    /// are in sync (the active controller's CompleteReassignment), the leader moves when it
    /// is removed, and each step is one leader epoch.
    #[test]
    fn a_reassignment_adds_then_removes_and_moves_the_leader() {
        let mut state = four_brokers();
        next(&mut state, &create_replicated(1, "t", &[&[1, 2, 3]]));
        assert!(!state.topics["t"].partitions[0].reassigning());
        let started = next(&mut state, &reassign(2, 0, Some(&[4, 2, 3])));
        assert_eq!(outcome_code(&started), ErrorCode::None);
        assert!(started.catalog_changed);
        let [replicas, isr, adding, removing] = assignment(&state, 0);
        assert_eq!((replicas, isr), (ids(&[4, 2, 3, 1]), ids(&[1, 2, 3])));
        assert_eq!((adding, removing), (ids(&[4]), ids(&[1])));
        assert_eq!(leader_and_epoch(&state, "t", 0), (NodeId(1), 1), "1 leads until done");
        assert!(state.partition_changes().is_empty(), "4 is not in sync yet");
        joins_isr(&mut state, 0, 4);
        let changes = state.partition_changes();
        let complete = MetadataRecord::CompleteReassignment {
            topic_id: [1; 16],
            partition: 0,
            leader_epoch: LeaderEpoch(2),
        };
        assert_eq!(changes, std::slice::from_ref(&complete));
        assert!(next(&mut state, &complete).catalog_changed);
        assert_eq!(next(&mut state, &complete), Applied::default(), "applied once");
        let [replicas, isr, adding, removing] = assignment(&state, 0);
        assert_eq!((replicas, isr), (ids(&[4, 2, 3]), ids(&[2, 3, 4])));
        assert!(adding.is_empty() && removing.is_empty());
        // Kafka's electAnyLeader: the first live in-sync replica in the target's order.
        assert_eq!(leader_and_epoch(&state, "t", 0), (NodeId(4), 2), "the first in-sync target");
        assert!(state.partition_changes().is_empty());
        let not_needed = next(&mut state, &elect(3, 0, Election::Preferred));
        assert_eq!(outcome_code(&not_needed), ErrorCode::ElectionNotNeeded);
        // A new order names another preferred replica; a preferred election makes it lead.
        next(&mut state, &reassign(4, 0, Some(&[2, 4, 3])));
        assert_eq!(leader_and_epoch(&state, "t", 0), (NodeId(4), 3), "a new order moves nobody");
        let elected = next(&mut state, &elect(5, 0, Election::Preferred));
        assert_eq!(outcome_code(&elected), ErrorCode::None);
        assert_eq!(leader_and_epoch(&state, "t", 0), (NodeId(2), 4));
        // Every change moved the partition epoch: start, join, end, new order, election.
        assert_eq!(state.topics["t"].partitions[0].partition_epoch, PartitionEpoch(5));
    }

    #[test]
    fn removals_and_new_orders_end_at_once_and_a_same_target_changes_nothing() {
        let mut state = three_brokers();
        next(&mut state, &create_replicated(1, "t", &[&[1, 2, 3], &[1, 2]]));
        // Only a removal: done in the same record (Kafka combines the two steps).
        assert_eq!(
            outcome_code(&next(&mut state, &reassign(2, 0, Some(&[2, 3])))),
            ErrorCode::None
        );
        let [replicas, isr, adding, removing] = assignment(&state, 0);
        assert_eq!((replicas, isr), (ids(&[2, 3]), ids(&[2, 3])));
        assert!(adding.is_empty() && removing.is_empty());
        assert_eq!(leader_and_epoch(&state, "t", 0), (NodeId(2), 1));
        // A new order: the replicas change, the leader stays.
        assert_eq!(
            outcome_code(&next(&mut state, &reassign(3, 1, Some(&[2, 1])))),
            ErrorCode::None
        );
        assert_eq!(assignment(&state, 1)[0], ids(&[2, 1]));
        assert_eq!(leader_and_epoch(&state, "t", 1), (NodeId(1), 1));
        // The same target again: nothing happens, not even a new epoch.
        assert_eq!(
            outcome_code(&next(&mut state, &reassign(4, 1, Some(&[2, 1])))),
            ErrorCode::None
        );
        assert_eq!(leader_and_epoch(&state, "t", 1), (NodeId(1), 1));
    }

    #[test]
    fn a_cancelled_reassignment_goes_back_to_the_replicas_it_had() {
        let mut state = four_brokers();
        next(&mut state, &create_replicated(1, "t", &[&[1, 2]]));
        let cancel = next(&mut state, &reassign(2, 0, None));
        assert_eq!(outcome_code(&cancel), ErrorCode::NoReassignmentInProgress);
        next(&mut state, &reassign(3, 0, Some(&[3, 4])));
        let [replicas, _, adding, removing] = assignment(&state, 0);
        assert_eq!((replicas, adding, removing), (ids(&[3, 4, 1, 2]), ids(&[3, 4]), ids(&[1, 2])));
        joins_isr(&mut state, 0, 3);
        assert_eq!(outcome_code(&next(&mut state, &reassign(4, 0, None))), ErrorCode::None);
        let [replicas, isr, adding, removing] = assignment(&state, 0);
        assert_eq!((replicas, isr), (ids(&[1, 2]), ids(&[1, 2])));
        assert!(adding.is_empty() && removing.is_empty());
        assert_eq!(leader_and_epoch(&state, "t", 0), (NodeId(1), 2));
        // A new target while one is in progress: counted from the replicas before it.
        next(&mut state, &reassign(5, 0, Some(&[3, 4])));
        next(&mut state, &reassign(6, 0, Some(&[1, 3])));
        let [replicas, _, adding, removing] = assignment(&state, 0);
        assert_eq!(replicas, ids(&[1, 3, 4, 2]));
        assert_eq!((adding, removing), (ids(&[3]), ids(&[4, 2])));
    }

    #[test]
    fn reassignments_are_refused_in_kafkas_words() {
        let mut state = three_brokers();
        next(&mut state, &create_replicated(1, "t", &[&[1, 2]]));
        let code = |state: &mut MetadataState, record| outcome_code(&next(state, &record));
        assert_eq!(
            code(&mut state, reassign(2, 0, Some(&[]))),
            ErrorCode::InvalidReplicaAssignment
        );
        assert_eq!(
            code(&mut state, reassign(3, 0, Some(&[1, 1]))),
            ErrorCode::InvalidReplicaAssignment
        );
        assert_eq!(
            code(&mut state, reassign(4, 0, Some(&[1, 9]))),
            ErrorCode::InvalidReplicaAssignment
        );
        assert_eq!(
            code(&mut state, reassign(5, 1, Some(&[1]))),
            ErrorCode::UnknownTopicOrPartition
        );
        assert_eq!(code(&mut state, reassign(6, -1, None)), ErrorCode::UnknownTopicOrPartition);
        let mut fixed = reassign(7, 0, Some(&[1, 2, 3]));
        if let MetadataRecord::AlterReassignment { allow_factor_change, .. } = &mut fixed {
            *allow_factor_change = false;
        }
        assert_eq!(code(&mut state, fixed), ErrorCode::InvalidReplicationFactor);
        // A cancel that would leave no in-sync replica (only added replicas are in sync).
        next(&mut state, &reassign(8, 0, Some(&[3])));
        let p = &mut state.topics.get_mut("t").unwrap().partitions[0];
        p.isr = ids(&[3]);
        assert_eq!(code(&mut state, reassign(9, 0, None)), ErrorCode::InvalidReplicaAssignment);
        assert_eq!(assignment(&state, 0)[2], ids(&[3]), "refused: unchanged");
    }

    #[test]
    fn elections_answer_as_kafkas_controller() {
        let mut state = three_brokers();
        next(&mut state, &create_replicated(1, "t", &[&[1, 2, 3]]));
        let code = |state: &mut MetadataState, record| outcome_code(&next(state, &record));
        assert_eq!(
            code(&mut state, elect(2, 0, Election::Preferred)),
            ErrorCode::ElectionNotNeeded
        );
        assert_eq!(
            code(&mut state, elect(3, 5, Election::Preferred)),
            ErrorCode::UnknownTopicOrPartition
        );
        let one = state.brokers[&NodeId(1)].epoch;
        next(&mut state, &fence(1, one));
        settle(&mut state);
        assert_eq!(leader_and_epoch(&state, "t", 0), (NodeId(2), 1));
        assert_eq!(code(&mut state, elect(4, 0, Election::Unclean)), ErrorCode::ElectionNotNeeded);
        assert_eq!(
            code(&mut state, elect(5, 0, Election::Preferred)),
            ErrorCode::PreferredLeaderNotAvailable
        );
        // Everybody but 3 fenced, and 3 out of the ISR: only an unclean election helps.
        let two = state.brokers[&NodeId(2)].epoch;
        let three = state.brokers[&NodeId(3)].epoch;
        next(&mut state, &fence(3, three));
        settle(&mut state);
        next(&mut state, &fence(2, two));
        settle(&mut state);
        assert_eq!(state.topics["t"].partitions[0].isr, ids(&[2]));
        assert_eq!(
            code(&mut state, elect(6, 0, Election::Unclean)),
            ErrorCode::EligibleLeadersNotAvailable
        );
        next(&mut state, &unfence(3, three));
        assert_eq!(settle(&mut state), 0, "3 is not in sync: no clean election");
        assert_eq!(code(&mut state, elect(7, 0, Election::Unclean)), ErrorCode::None);
        assert_eq!(leader_and_epoch(&state, "t", 0), (NodeId(3), 3));
        assert_eq!(state.topics["t"].partitions[0].isr, ids(&[3]));
    }

    /// Kafka's AlterPartition checks, at apply time: the leader in its leader epoch, based
    /// on the partition epoch, replicas only, the leader in it, no fenced broker joining;
    /// taken, it moves the partition epoch and leaves the leader epoch.
    #[test]
    fn alter_partition_answers_as_kafkas_controller() {
        let mut state = three_brokers();
        next(&mut state, &create_replicated(1, "t", &[&[1, 2, 3]]));
        let topic_id = state.topics["t"].topic_id;
        // (leader, its leader epoch, the partition epoch it saw, the ISR it asks for)
        type Asked<'a> = (i32, i32, i32, &'a [i32]);
        let alter = |state: &mut MetadataState, asked: Asked<'_>| {
            let (leader, leader_epoch, partition_epoch, isr) = asked;
            let isr = ids(isr);
            let asked = AlterPartition {
                leader: NodeId(leader),
                leader_epoch: LeaderEpoch(leader_epoch),
                partition_epoch: PartitionEpoch(partition_epoch),
                isr: &isr,
            };
            state.alter_partition(&topic_id, 0, &asked)
        };
        assert_eq!(alter(&mut state, (2, 0, 0, &[1, 2])), Err(ErrorCode::NotLeaderOrFollower));
        assert_eq!(alter(&mut state, (1, 1, 0, &[1, 2])), Err(ErrorCode::FencedLeaderEpoch));
        assert_eq!(alter(&mut state, (1, 0, 1, &[1, 2])), Err(ErrorCode::InvalidUpdateVersion));
        let epochs = |state: &MetadataState| {
            let p = &state.topics["t"].partitions[0];
            (p.leader_epoch, p.partition_epoch, p.isr.clone())
        };
        let at = |epoch: i32, isr: &[i32]| (LeaderEpoch(0), PartitionEpoch(epoch), ids(isr));
        // Stale: nothing moves.
        assert_eq!(epochs(&state), at(0, &[1, 2, 3]));
        // Based on the partition as it is, refused as invalid or taken with the ISR it has:
        // the partition epoch moves (so that the leader learns its change is over).
        assert_eq!(alter(&mut state, (1, 0, 0, &[1, 4])), Err(ErrorCode::InvalidRequest));
        assert_eq!(epochs(&state), at(1, &[1, 2, 3]));
        assert_eq!(alter(&mut state, (1, 0, 1, &[2, 3])), Err(ErrorCode::InvalidRequest));
        assert_eq!(alter(&mut state, (1, 0, 2, &[1, 2, 3])), Ok(false), "the same ISR");
        assert_eq!(epochs(&state), at(3, &[1, 2, 3]));
        assert_eq!(alter(&mut state, (1, 0, 3, &[1, 2])), Ok(true));
        assert_eq!(epochs(&state), at(4, &[1, 2]));
        // The same change again is based on an old partition epoch.
        assert_eq!(alter(&mut state, (1, 0, 3, &[1, 2])), Err(ErrorCode::InvalidUpdateVersion));
        assert_eq!(epochs(&state), at(4, &[1, 2]));
        // A fenced broker does not join; the ISR may keep one (it only shrinks here).
        let three = state.brokers[&NodeId(3)].epoch;
        next(&mut state, &fence(3, three));
        assert_eq!(alter(&mut state, (1, 0, 4, &[1, 2, 3])), Err(ErrorCode::IneligibleReplica));
        assert_eq!(epochs(&state), at(5, &[1, 2]));
        next(&mut state, &unfence(3, three));
        assert_eq!(alter(&mut state, (1, 0, 5, &[1, 2, 3])), Ok(true));
        assert_eq!(epochs(&state), at(6, &[1, 2, 3]));
        // As a record: applied once, a copy refused.
        let record = MetadataRecord::AlterPartition {
            topic_id,
            partition: 0,
            leader: NodeId(1),
            leader_epoch: LeaderEpoch(0),
            partition_epoch: PartitionEpoch(6),
            isr: ids(&[1, 3]),
        };
        assert!(next(&mut state, &record).catalog_changed);
        assert_eq!(next(&mut state, &record), Applied::default());
    }

    #[test]
    #[should_panic(expected = "applied after")]
    fn an_index_applied_twice_is_a_bug() {
        let mut state = MetadataState::default();
        state.apply(1, None);
        state.apply(1, None);
    }
}
