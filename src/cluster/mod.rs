//! The cluster: a controller quorum of `--controller-quorum-voters` nodes that keep the
//! cluster's metadata in a replicated log on tikv's `raft` crate (raft-rs), never a
//! home-made consensus.
//!
//! ```text
//!   shard 0                                              every shard
//!   +--------------------------------------------+      +----------------------------+
//!   | node: RawNode driver (ticks, peer messages, |      | Cluster: the latest        |
//!   |   proposals) -> journal (fdatasync) ->      | ---> |   ClusterView, read by     |
//!   |   MetadataState (pure apply)                | mesh |   Metadata, DescribeCluster|
//!   | transport: controller listener, one sender  |      |   and DescribeQuorum       |
//!   |   task per peer (frames of raft Messages)   |      +----------------------------+
//!   +--------------------------------------------+
//! ```
//!
//! What exists: leader election, the durable log (`journal`), the records (`records`:
//! leader changes, broker registrations with their epochs, fencing and unfencing, partition
//! leader changes, the cluster id, topic creation, deletion, growth and config changes, the
//! internal topics' placements that say which node coordinates a group or transactional
//! id, leader elections and partition reassignments clients ask for) applied in order
//! (`state`), broker heartbeats to the active controller, which fences
//! a broker it has not heard from for the session timeout and unfences it when it is heard
//! again (`liveness`), a controlled shutdown on SIGTERM (`shut_down_controlled`), the view
//! every shard answers clients from, and the hand-off of committed topic changes to the
//! controller (`Committed`, which applies them to the catalog and the partition logs on
//! every shard). Proposals come from the controller on any node (`propose`); raft-rs
//! forwards a follower's to the leader. Snapshots of the state (`snapshot`) reach a
//! follower far behind in chunks (`snapshot_fetch`); replicas are placed rack-aware
//! (`placement`). Broker-only nodes (`--process-roles broker`) follow the log as Raft
//! learners: they dial the voters and are added to the configuration by a conf change
//! when they first join (`node`, `transport`).
//! Without
//! `--controller-quorum-voters` the service exists on every shard but starts nothing and its
//! view is None: the broker is the single node it always was.
//!
//! Lifecycle: built on every shard at start; `start` on shard 0 runs the driver when
//! clustered. Concurrency: shard-local; shard 0 posts each new view to the others.

pub mod broker_client;
pub mod frame;
pub mod identity;
pub mod journal;
pub mod liveness;
pub mod node;
pub mod placement;
pub mod records;
pub mod snapshot;
pub mod snapshot_fetch;
pub mod state;
pub mod transport;

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use raft::prelude::Message;

use crate::constants::{
    BROKER_CONTROLLED_SHUTDOWN_WAIT_MS_MAX, BROKER_HEARTBEAT_POLL_MS, BROKER_RESIGN_RETRY_MS,
    CLUSTER_COMMITTED_QUEUED_MAX,
};
use crate::model::dynamic_config::DynamicConfigs;
use crate::model::quorum::Voter;
use crate::model::{NodeId, ShardId};
use crate::shard::mesh::{Mesh, Served, Service};
pub use crate::shard::table::coordinator_partition;
use crate::shard::{Shard, CONTROLLER};
pub use liveness::BrokerHeartbeat;
pub use records::{MetadataRecord, RequestId};
pub use state::{
    BrokerRegistration, PartitionState, Refusal, TopicOutcome, TopicState, TopicSummary,
};

#[cfg(test)]
mod tests {
    use super::coordinator_partition;

    #[test]
    fn coordinator_partitions_are_kafkas() {
        // Java: "my-group".hashCode() = -1906497762, "".hashCode() = 0,
        // "polygenelubricants".hashCode() = Integer.MIN_VALUE (Utils.abs gives 0).
        assert_eq!(coordinator_partition("my-group", 50), 1906497762 % 50);
        assert_eq!(coordinator_partition("", 50), 0);
        assert_eq!(coordinator_partition("polygenelubricants", 50), 0);
        // A non-ASCII unit ('é' is U+00E9): Java's hashCode is 103094734.
        assert_eq!(coordinator_partition("h\u{e9}llo", 50), 103094734 % 50);
        assert_eq!(coordinator_partition("a", 0), 0);
    }
}

/// What every shard knows of the quorum: a copy of shard 0's, replaced on each change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterView {
    /// The Raft leader as this node knows it (None during an election).
    pub leader_id: Option<NodeId>,
    /// This node's current term (Kafka's leader epoch).
    pub term: u64,
    /// This node's commit index (Kafka's high watermark of the metadata log).
    pub commit_index: u64,
    /// The committed broker registrations, by node id, fenced ones included.
    pub brokers: Vec<BrokerRegistration>,
    /// Every voter's log end as far as this node knows (the leader knows them all).
    pub voters: Vec<VoterState>,
    /// The broker-only nodes that follow the log (Raft learners, Kafka's observers), with
    /// their log ends as far as this node knows.
    pub observers: Vec<VoterState>,
    /// Every voter's controller address.
    pub voter_addresses: Vec<Voter>,
    /// The cluster id committed on the log (None until the first leader's is applied).
    pub cluster_id: Option<String>,
    /// The internal topics' placements (leader by partition), by topic name; empty until
    /// the leader committed them once every voter registered.
    pub coordinators: BTreeMap<String, Vec<NodeId>>,
}

impl ClusterView {
    /// The node that coordinates `key` (a group id in `__consumer_offsets`, a transactional
    /// id in `__transaction_state`): the leader of the key's partition of the internal
    /// topic, as Kafka finds it. None before the placement is committed.
    pub fn coordinator(&self, internal_topic: &str, key: &str) -> Option<NodeId> {
        let leaders = self.coordinators.get(internal_topic)?;
        leaders.get(coordinator_partition(key, leaders.len())).copied()
    }

    /// A registered broker's address, fenced or not.
    pub fn broker(&self, node_id: NodeId) -> Option<&BrokerRegistration> {
        self.brokers.iter().find(|broker| broker.node_id == node_id)
    }

    /// An unfenced broker's registration (None: fenced or unknown).
    pub fn live_broker(&self, node_id: NodeId) -> Option<&BrokerRegistration> {
        self.broker(node_id).filter(|broker| !broker.fenced)
    }

    /// The unfenced brokers, by node id: what Metadata and DescribeCluster list and where
    /// partitions are placed (Kafka's unfenced brokers).
    pub fn live_brokers(&self) -> impl Iterator<Item = &BrokerRegistration> {
        self.brokers.iter().filter(|broker| !broker.fenced)
    }
}

/// What the Raft driver hands the controller (shard 0) after applying committed entries
/// that changed the topics or the cluster id, or answered topic requests: the topics as the
/// log now says (the controller applies the difference to its catalog and every shard),
/// then the outcomes (answered once the difference is applied).
#[derive(Debug)]
pub struct Committed {
    pub cluster_id: Option<String>,
    pub topics: BTreeMap<String, TopicState>,
    /// The dynamic configs of broker and group resources as the log has them.
    pub configs: DynamicConfigs,
    /// The SCRAM credentials and the ACLs as the log has them (the process's
    /// `security::Security` takes them when they differ from what it has).
    pub scram:
        BTreeMap<(String, crate::security::scram::Mechanism), crate::security::scram::Credential>,
    pub acls: std::collections::BTreeSet<crate::security::acl::AclBinding>,
    pub outcomes: Vec<(RequestId, TopicOutcome)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VoterState {
    pub node_id: NodeId,
    /// The index of its last log entry (None: unknown here).
    pub log_end_index: Option<u64>,
}

/// Requests between shards of the cluster service.
#[derive(Debug)]
pub enum ClusterRequest {
    /// Shard 0's new view (a post); `sequence` orders the posts, which travel in tasks of
    /// their own and may overtake each other.
    Publish { sequence: u64, view: ClusterView },
    /// A record another shard proposes (a post to shard 0, whose driver takes it).
    Propose(MetadataRecord),
}

/// What the Raft driver takes from its queue.
pub enum Event {
    Tick,
    /// A peer's message.
    Message(Message),
    /// A record to append (encoded `records::MetadataRecord`).
    Propose(Vec<u8>),
    /// A broker heartbeat: this node's own (sent to the active controller, or taken if this
    /// node is it) or a peer's (taken if this node is the active controller).
    Heartbeat(BrokerHeartbeat),
    /// A follower asks for bytes of this node's snapshot (`snapshot_fetch`).
    FetchSnapshot(snapshot_fetch::FetchSnapshot),
    /// Bytes of a snapshot this node is fetching.
    SnapshotChunk(snapshot_fetch::SnapshotChunk),
    /// A broker-only node joined on a connection this voter accepted: its frames go to
    /// `queue`, and it is made a learner of the quorum if it is not one yet.
    Observer {
        node_id: u64,
        queue: LocalSender<Vec<u8>>,
    },
    /// This node is shutting down: if it leads the quorum, hand leadership to the most
    /// caught-up voter (Kafka's controller resigns), rather than leave the others to find
    /// out by an election timeout.
    Resign,
}

/// The cluster service on one shard.
pub struct Cluster {
    pub(crate) shard: Rc<Shard>,
    mesh: Mesh<Cluster>,
    view: RefCell<Option<Rc<ClusterView>>>,
    /// The sequence of the view held (shard 0 counts its publications).
    sequence: Cell<u64>,
    /// The driver's events queue, once it runs (shard 0 of a clustered node).
    events: RefCell<Option<Rc<LocalSender<Event>>>>,
    /// The queue of committed changes: the driver takes the sender, the controller the
    /// receiver (both on shard 0).
    committed_sender: RefCell<Option<LocalSender<Committed>>>,
    committed_receiver: RefCell<Option<LocalReceiver<Committed>>>,
    /// This process's random registration id (Kafka's incarnation id), set by the driver.
    incarnation: Cell<u64>,
    /// SIGTERM: heartbeats say `want_shut_down` from now on.
    want_shut_down: Cell<bool>,
    /// Idle connections to the other brokers, for the share group calls a partition leader
    /// makes of a group's coordinator (`group::share_call`).
    pub peers: broker_client::Pool,
}

impl Cluster {
    pub fn new(shard: Rc<Shard>, mesh: Mesh<Cluster>) -> Cluster {
        let (sender, receiver) = local_channel::new_bounded(CLUSTER_COMMITTED_QUEUED_MAX);
        Cluster {
            shard,
            mesh,
            view: RefCell::new(None),
            sequence: Cell::new(0),
            events: RefCell::new(None),
            committed_sender: RefCell::new(Some(sender)),
            committed_receiver: RefCell::new(Some(receiver)),
            incarnation: Cell::new(0),
            want_shut_down: Cell::new(false),
            peers: broker_client::Pool::default(),
        }
    }

    /// This node's registration of this process, once committed and in the view.
    pub fn own_registration(&self) -> Option<BrokerRegistration> {
        let incarnation = self.incarnation.get();
        let view = self.view()?;
        let own = view.broker(self.shard.config.node_id)?;
        (incarnation != 0 && own.incarnation == incarnation).then(|| own.clone())
    }

    /// A controlled shutdown (Kafka's): on SIGTERM, before the listener stops, shard 0 of a
    /// clustered node heartbeats `want_shut_down` and waits until the active controller has
    /// fenced it (no new placements, gone from Metadata) and none of its partitions has it
    /// as leader any more (producers are sent elsewhere, or told there is no leader, rather
    /// than cut off); then, if it leads the quorum, until another voter does (`Resign`).
    /// Never waits longer than `BROKER_CONTROLLED_SHUTDOWN_WAIT_MS_MAX`: a node whose quorum
    /// is gone stops anyway. Nothing on a single node or another shard.
    pub async fn shut_down_controlled(&self) {
        if !self.clustered() || self.shard.id != CONTROLLER {
            return;
        }
        self.want_shut_down.set(true);
        if self.own_registration().is_none_or(|own| own.fenced) {
            tracing::info!("not an unfenced broker: no controlled shutdown to wait for");
            return;
        }
        let started = Instant::now();
        let wait_ms_max = BROKER_CONTROLLED_SHUTDOWN_WAIT_MS_MAX;
        let me = self.shard.config.node_id;
        let mut resigned_at: Option<Instant> = None;
        loop {
            let fenced = self.own_registration().is_none_or(|own| own.fenced);
            let led = self.partitions_led_here();
            let elapsed_ms = started.elapsed().as_millis() as u64;
            let leads_quorum = self.view().is_some_and(|view| view.leader_id == Some(me));
            if fenced && led == 0 && !leads_quorum {
                tracing::info!(elapsed_ms, "controlled shutdown: fenced, leading no partition");
                return;
            }
            // Asked again now and then: a transfer to a voter that was not caught up lapses.
            let resign_due = resigned_at
                .is_none_or(|at| at.elapsed() >= Duration::from_millis(BROKER_RESIGN_RETRY_MS));
            if fenced && led == 0 && leads_quorum && resign_due {
                resigned_at = Some(Instant::now());
                let events = self.events.borrow().clone();
                if let Some(events) = events {
                    let _ = events.try_send(Event::Resign);
                }
            }
            if elapsed_ms >= wait_ms_max {
                tracing::warn!(
                    elapsed_ms,
                    fenced,
                    partitions_led = led,
                    "controlled shutdown not confirmed by the controller in time; stopping anyway"
                );
                return;
            }
            glommio::timer::sleep(Duration::from_millis(BROKER_HEARTBEAT_POLL_MS)).await;
        }
    }

    /// How many partitions this node's catalog has it lead.
    fn partitions_led_here(&self) -> usize {
        let me = self.shard.config.node_id;
        let catalog = self.shard.catalog.borrow();
        let topics = catalog.topics.values();
        topics.map(|meta| meta.leaders.iter().filter(|p| p.leader == me).count()).sum()
    }

    /// The committed changes, for the controller on shard 0 (once; None afterwards).
    pub fn take_committed(&self) -> Option<LocalReceiver<Committed>> {
        self.committed_receiver.borrow_mut().take()
    }

    /// Proposes `record` to the metadata log (shard 0 of a clustered node). False when the
    /// driver is not running or its queue is full; a proposal may also be dropped later (no
    /// leader) or lost with a leader, so the proposer waits for its outcome and proposes
    /// again (`constants::CLUSTER_PROPOSAL_RETRY_MS`).
    pub fn propose(&self, record: &MetadataRecord) -> bool {
        let events = self.events.borrow().clone();
        events.is_some_and(|events| events.try_send(Event::Propose(record.encode())).is_ok())
    }

    /// `propose` from any shard: shard 0 proposes it, another shard posts it there. The
    /// proposer learns the outcome from the view, and proposes again if it must.
    pub async fn propose_from_any_shard(&self, record: MetadataRecord) {
        if self.shard.id == CONTROLLER {
            self.propose(&record);
        } else {
            self.mesh.post(CONTROLLER, ClusterRequest::Propose(record)).await;
        }
    }

    /// The latest view; None on a single node (and on a clustered node before its first).
    pub fn view(&self) -> Option<Rc<ClusterView>> {
        self.view.borrow().clone()
    }

    /// Whether this node is part of a quorum (`--controller-quorum-voters`).
    pub fn clustered(&self) -> bool {
        self.shard.config.cluster.is_some()
    }

    /// Starts the Raft driver on shard 0 of a clustered node; nothing otherwise.
    pub fn start(self: &Rc<Self>) {
        let Some(quorum) = self.shard.config.cluster.clone() else { return };
        if self.shard.id != CONTROLLER {
            return;
        }
        let config = self.shard.config.clone();
        let Some(committed) = self.committed_sender.borrow_mut().take() else { return };
        glommio::spawn_local(node::run(self.clone(), config, quorum, committed)).detach();
    }

    /// Sets this shard's view and posts it to the others (shard 0 only).
    fn publish(self: &Rc<Self>, view: ClusterView) {
        *self.view.borrow_mut() = Some(Rc::new(view.clone()));
        let sequence = self.sequence.get() + 1;
        self.sequence.set(sequence);
        let cluster = self.clone();
        glommio::spawn_local(async move {
            for shard in 0..cluster.shard.config.cores {
                let target = ShardId(shard as u16);
                if target != cluster.mesh.me() {
                    let request = ClusterRequest::Publish { sequence, view: view.clone() };
                    cluster.mesh.post(target, request).await;
                }
            }
        })
        .detach();
    }
}

impl Service for Cluster {
    type Request = ClusterRequest;
    type Response = ();

    fn mesh(&self) -> &Mesh<Self> {
        &self.mesh
    }

    fn serve(self: &Rc<Self>, _from: ShardId, request: ClusterRequest) -> Served<()> {
        match request {
            ClusterRequest::Publish { sequence, view } => {
                if sequence > self.sequence.get() {
                    self.sequence.set(sequence);
                    *self.view.borrow_mut() = Some(Rc::new(view));
                }
            }
            ClusterRequest::Propose(record) => {
                self.propose(&record);
            }
        }
        Served::Now(())
    }
}
