//! The Raft driver: one task on shard 0 that owns the `RawNode` and feeds it ticks (a
//! glommio timer), peer messages and proposals, all through one bounded queue of `Event`s,
//! then handles each `Ready` the raft-rs way:
//!
//! ```text
//!   event -> tick / step / propose -> has_ready?
//!     ready: send messages --> journal (write + fdatasync, blocking pool) --> MemStorage
//!            --> apply committed entries --> send persisted messages --> advance
//!     light ready: commit index (journal: hard state + fdatasync), messages, committed
//!            entries --> advance_apply
//!   --> publish the view to every shard if it changed
//! ```
//!
//! Nothing that needs the entries or hard state of a `Ready` on disk (votes, append
//! acknowledgements: raft-rs's persisted messages) leaves before the fdatasync returned.
//! Committed entries are decoded (`records`) and applied to `MetadataState` in order, and
//! only once the journal's commit index covers them: after a restart the first `Ready`
//! then hands over at least everything applied before the stop, so the controller's first
//! catalog is what the partition logs on disk were last made to match (a topic deleted
//! and created again under its name is never taken for its older self).
//! Changes to the topics and the outcomes of topic requests go to the controller
//! (`Committed`) after each batch of entries.
//!
//! A new leader proposes a `LeaderChange` record, the cluster id if the log has none, and
//! once every voter is registered and unfenced the internal topics' placements if the log
//! has none; every node proposes its own broker registration (with this process's random
//! incarnation) until it sees it committed (raft-rs forwards a follower's proposal to the
//! leader, and a lost one is proposed again).
//!
//! Liveness: every node heartbeats to the leader it knows every heartbeat interval (a
//! frame on the controller transport; its own heartbeat when it is the leader). Once the
//! leader has applied its own LeaderChange record (the whole log before its term) it is the
//! active controller: `liveness::Sessions` takes heartbeats on the driver's monotonic
//! clock and, checked on every event (the 100 ms tick at least), asks for FenceBroker and
//! UnfenceBroker records; the partition leader changes that fencing calls for
//! (`MetadataState::partition_changes`) are proposed after each applied batch, each again
//! after the proposal retry interval until applied.
//!
//! Lifecycle: started after the shards are ready (`Cluster::start`), runs until the process
//! ends. Concurrency: shard 0 only; the events queue is its only input.

use std::rc::Rc;
use std::time::{Duration, Instant};

use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use raft::prelude::{ConfState, Entry, EntryType, Message};
use raft::storage::MemStorage;
use raft::{RawNode, StateRole};

use super::journal::{self, Journal};
use super::liveness::{BrokerHeartbeat, Sessions, Throttle};
use super::records::MetadataRecord;
use super::state::{place, MetadataState};
use super::transport::{self, Peers};
use super::{Cluster, ClusterView, Committed, Event, VoterState};
use crate::config::{ClusterConfig, Config};
use crate::constants::{
    BROKER_HEARTBEAT_POLL_MS, BROKER_REGISTRATION_RETRY_MS, CLUSTER_INTERNAL_TOPIC_PARTITIONS,
    CLUSTER_PROPOSAL_RETRY_MS, RAFT_ELECTION_TICKS, RAFT_EVENTS_QUEUED_MAX, RAFT_HEARTBEAT_TICKS,
    RAFT_INFLIGHT_MESSAGES_MAX, RAFT_MESSAGE_SIZE_BYTES_MAX, RAFT_TICK_MS,
};
use crate::fatal::{fatal, FatalReason};
use crate::model::NodeId;
use crate::shard::catalog::new_cluster_id;
use crate::shard::internal_log::INTERNAL_TOPICS;

/// Opens the journal, builds the node and its transport, and runs the driver. Start-up
/// problems are fatal (one sentence).
pub async fn run(
    cluster: Rc<Cluster>,
    config: Config,
    quorum: ClusterConfig,
    committed: LocalSender<Committed>,
) {
    let me = config.node_id.0 as u64;
    let data_dir = config.data_dir.clone();
    let opened = glommio::executor().spawn_blocking(move || Journal::open(&data_dir)).await;
    let (journal, replayed) = opened.unwrap_or_else(|e| {
        fatal(
            FatalReason::DataDir,
            format!(
                "cannot open the metadata log in {}: {e}; restore it or use another --data-dir",
                config.data_dir.join(journal::CLUSTER_DIR).display()
            ),
        )
    });
    let voter_ids: Vec<u64> = quorum.voters.ids().map(|id| id.0 as u64).collect();
    let storage = MemStorage::new();
    let conf_state = match replayed.conf_state.clone() {
        Some(conf_state) => conf_state,
        None => {
            // First start: every voter starts from the same configuration at index 0 (the
            // static voter set; the data dir's identity record keeps it from changing).
            let conf_state = ConfState::from((voter_ids.clone(), vec![]));
            let bytes = journal::encode_batch(&[], None, Some(&conf_state));
            persist(&journal, bytes).await;
            conf_state
        }
    };
    storage.initialize_with_conf_state(conf_state);
    if let Err(e) = storage.wl().append(&replayed.entries) {
        fatal(FatalReason::DataDir, format!("the metadata log does not fit together: {e}"));
    }
    storage.wl().set_hardstate(replayed.hard_state.clone());
    tracing::info!(
        node_id = me,
        entries = replayed.entries.len(),
        term = replayed.hard_state.term,
        commit = replayed.hard_state.commit,
        torn_bytes = replayed.torn_bytes,
        voters = %quorum.voters,
        "opened the metadata log"
    );
    let raft_config = raft::Config {
        id: me,
        election_tick: RAFT_ELECTION_TICKS,
        heartbeat_tick: RAFT_HEARTBEAT_TICKS,
        max_size_per_msg: RAFT_MESSAGE_SIZE_BYTES_MAX,
        max_inflight_msgs: RAFT_INFLIGHT_MESSAGES_MAX,
        pre_vote: true,
        check_quorum: true,
        applied: 0,
        ..raft::Config::default()
    };
    let logger = slog::Logger::root(TracingDrain, slog::o!());
    let node = RawNode::new(&raft_config, storage, &logger).unwrap_or_else(|e| {
        fatal(FatalReason::Runtime, format!("cannot start the Raft node: {e}"))
    });
    let listener = glommio::net::TcpListener::bind(quorum.controller_listen).unwrap_or_else(|e| {
        fatal(
            FatalReason::Listen,
            format!(
                "cannot listen on {}: {e}; choose another --controller-listen address",
                quorum.controller_listen
            ),
        )
    });
    let (sender, events) = local_channel::new_bounded(RAFT_EVENTS_QUEUED_MAX);
    let sender = Rc::new(sender);
    *cluster.events.borrow_mut() = Some(sender.clone());
    let voters = Rc::new(voter_ids);
    // This process's registration id: never 0 (a first-version registration's), random so
    // that a restart registers anew (a new broker epoch).
    let incarnation =
        u64::from_be_bytes(*uuid::Uuid::new_v4().as_bytes().first_chunk().unwrap_or(&[1; 8])) | 1;
    cluster.incarnation.set(incarnation);
    glommio::spawn_local(transport::accept_loop(listener, sender.clone(), me, voters)).detach();
    glommio::spawn_local(ticker(sender.clone())).detach();
    glommio::spawn_local(register(cluster.clone(), sender.clone(), config.clone())).detach();
    glommio::spawn_local(heartbeat(cluster.clone(), sender.clone(), quorum.clone())).detach();
    tracing::info!(
        listen = %quorum.controller_listen,
        heartbeat_interval_ms = quorum.broker_heartbeat_interval_ms,
        session_timeout_ms = quorum.broker_session_timeout_ms,
        "controller accepting peers"
    );
    let peers = Peers::start(&quorum.voters, me);
    let sessions = Sessions::new(quorum.broker_session_timeout_ms, CLUSTER_PROPOSAL_RETRY_MS);
    let driver = Driver {
        node,
        journal,
        peers,
        state: MetadataState::default(),
        cluster,
        quorum,
        me,
        leader_change_proposed_term: 0,
        committed,
        internal_proposed_term: 0,
        clock: Instant::now(),
        sessions,
        partition_changes: Throttle::new(CLUSTER_PROPOSAL_RETRY_MS),
        partition_changes_checked: None,
        preferred_checked_ms: 0,
    };
    driver.run(events).await;
}

/// Ticks the node every `RAFT_TICK_MS`.
async fn ticker(events: Rc<LocalSender<Event>>) {
    loop {
        glommio::timer::sleep(Duration::from_millis(RAFT_TICK_MS)).await;
        if events.send(Event::Tick).await.is_err() {
            return;
        }
    }
}

/// Proposes this process's broker registration until the committed state has it.
async fn register(cluster: Rc<Cluster>, events: Rc<LocalSender<Event>>, config: Config) {
    let record = MetadataRecord::RegisterBroker {
        node_id: config.node_id,
        host: config.advertised_host.clone(),
        port: config.advertised_port,
        incarnation: cluster.incarnation.get(),
        rack: config.rack.clone(),
    };
    loop {
        let view = cluster.view();
        let registered = cluster.own_registration().is_some();
        let leader_known = view.as_ref().is_some_and(|view| view.leader_id.is_some());
        if !registered && leader_known {
            tracing::debug!(node_id = %config.node_id, "proposing the broker registration");
            if events.send(Event::Propose(record.encode())).await.is_err() {
                return;
            }
        }
        glommio::timer::sleep(Duration::from_millis(BROKER_REGISTRATION_RETRY_MS)).await;
    }
}

/// Heartbeats this process's registration (once committed) every heartbeat interval, at
/// once when its epoch changes or a shutdown begins, and every `BROKER_HEARTBEAT_POLL_MS`
/// x 4 while shutting down (so a lost one does not hold the shutdown for an interval).
async fn heartbeat(cluster: Rc<Cluster>, events: Rc<LocalSender<Event>>, quorum: ClusterConfig) {
    let interval = Duration::from_millis(quorum.broker_heartbeat_interval_ms);
    let shutting_down_interval = Duration::from_millis(BROKER_HEARTBEAT_POLL_MS * 4);
    let mut last: Option<(Instant, BrokerHeartbeat)> = None;
    loop {
        if let Some(own) = cluster.own_registration() {
            let heartbeat = BrokerHeartbeat {
                node_id: own.node_id,
                broker_epoch: own.epoch,
                want_shut_down: cluster.want_shut_down.get(),
            };
            let wait = if heartbeat.want_shut_down { shutting_down_interval } else { interval };
            let due = last.is_none_or(|(at, sent)| sent != heartbeat || at.elapsed() >= wait);
            if due {
                last = Some((Instant::now(), heartbeat));
                if events.send(Event::Heartbeat(heartbeat)).await.is_err() {
                    return;
                }
            }
        }
        glommio::timer::sleep(Duration::from_millis(BROKER_HEARTBEAT_POLL_MS)).await;
    }
}

struct Driver {
    node: RawNode<MemStorage>,
    journal: Journal,
    peers: Peers,
    state: MetadataState,
    cluster: Rc<Cluster>,
    quorum: ClusterConfig,
    me: u64,
    /// The term this node last proposed its LeaderChange record in.
    leader_change_proposed_term: u64,
    /// Where committed topic changes go (the controller on shard 0).
    committed: LocalSender<Committed>,
    /// The term this node last proposed the internal topics' placements in.
    internal_proposed_term: u64,
    /// The driver's monotonic clock (liveness runs on its milliseconds).
    clock: Instant,
    /// Broker sessions, while this node is the active controller.
    sessions: Sessions,
    /// The partition changes proposed lately, by (topic id, partition, leader epoch).
    partition_changes: Throttle<([u8; 16], i32, i32)>,
    /// The applied index and time of the last look for partition changes.
    partition_changes_checked: Option<(u64, u64)>,
    /// When the active controller last looked for partitions not led by their preferred
    /// replica (see `propose_preferred_leaders`).
    preferred_checked_ms: u64,
}

/// What a batch of applied entries has for the controller.
#[derive(Default)]
struct Pending {
    catalog_changed: bool,
    outcomes: Vec<(super::RequestId, super::TopicOutcome)>,
}

impl Driver {
    async fn run(mut self, events: LocalReceiver<Event>) {
        while let Some(event) = events.recv().await {
            match event {
                Event::Tick => {
                    self.node.tick();
                }
                Event::Message(message) => {
                    // A stale or unexpected message is Raft's business to ignore.
                    if let Err(e) = self.node.step(message) {
                        tracing::debug!("raft step: {e}");
                    }
                }
                Event::Propose(data) => {
                    // Dropped when there is no leader to forward to; the proposer retries.
                    if let Err(e) = self.node.propose(vec![], data) {
                        tracing::debug!("raft propose: {e}");
                    }
                }
                Event::Heartbeat(heartbeat) => self.heartbeat(heartbeat),
                Event::Resign => self.resign(),
            }
            self.propose_leader_change();
            self.propose_internal_topics();
            self.update_active();
            self.propose_liveness();
            self.propose_preferred_leaders();
            if self.node.has_ready() {
                self.handle_ready().await;
            }
            self.publish();
        }
    }

    fn now_ms(&self) -> u64 {
        self.clock.elapsed().as_millis() as u64
    }

    /// A heartbeat: taken if this node is the active controller; this node's own goes to
    /// the leader it knows otherwise (a peer's is dropped: it will find the leader).
    fn heartbeat(&mut self, heartbeat: BrokerHeartbeat) {
        if self.sessions.is_active() {
            let now_ms = self.now_ms();
            if !self.sessions.heard(now_ms, &heartbeat, &self.state) {
                tracing::debug!(?heartbeat, "heartbeat of another broker epoch ignored");
            }
            return;
        }
        let leader = self.node.raft.leader_id;
        let own = heartbeat.node_id.0 as u64 == self.me;
        if own && leader != raft::INVALID_ID && leader != self.me {
            self.peers.send_heartbeat(leader, &heartbeat);
        }
    }

    /// Hands Raft leadership to the voter with the most of the log (raft-rs sends it
    /// MsgTimeoutNow once it has caught up, and it wins the election at once).
    fn resign(&mut self) {
        let raft = &self.node.raft;
        if raft.state != StateRole::Leader {
            return;
        }
        let others = raft.prs().iter().filter(|(id, _)| **id != self.me);
        let Some((&target, _)) = others.max_by_key(|(_, progress)| progress.matched) else {
            return;
        };
        tracing::info!(node_id = self.me, to = target, "shutting down: handing over leadership");
        self.node.transfer_leader(target);
    }

    /// This node is the active controller while it leads and has applied its own
    /// LeaderChange record; sessions start afresh when it becomes it.
    fn update_active(&mut self) {
        let raft = &self.node.raft;
        let active = raft.state == StateRole::Leader
            && self.state.leader_id == Some(NodeId(self.me as i32))
            && self.state.leader_term == raft.term;
        if active && !self.sessions.is_active() {
            let now_ms = self.now_ms();
            self.sessions.activate(now_ms);
            self.partition_changes = Throttle::new(CLUSTER_PROPOSAL_RETRY_MS);
            self.partition_changes_checked = None;
            tracing::info!(
                node_id = self.me,
                term = raft.term,
                brokers = self.state.brokers.len(),
                session_timeout_ms = self.quorum.broker_session_timeout_ms,
                "active controller: every broker's session starts now"
            );
        } else if !active && self.sessions.is_active() {
            self.sessions.deactivate();
            tracing::info!(node_id = self.me, "no longer the active controller");
        }
    }

    /// The active controller proposes the fencing and unfencing that are due, and the
    /// partition leader changes the state calls for (looked for when the applied index
    /// moved, and again after the retry interval).
    fn propose_liveness(&mut self) {
        if !self.sessions.is_active() {
            return;
        }
        let now_ms = self.now_ms();
        for record in self.sessions.due(now_ms, &self.state) {
            tracing::info!(%record, "proposing a broker fencing change");
            if let Err(e) = self.node.propose(vec![], record.encode()) {
                tracing::debug!("raft propose of a fencing change: {e}");
            }
        }
        let applied = self.state.applied_index;
        let look = self.partition_changes_checked.is_none_or(|(index, at_ms)| {
            index != applied || now_ms >= at_ms + CLUSTER_PROPOSAL_RETRY_MS
        });
        if !look {
            return;
        }
        self.partition_changes_checked = Some((applied, now_ms));
        let mut proposed = 0;
        for record in self.state.partition_changes() {
            let MetadataRecord::PartitionChange { topic_id, partition, leader_epoch, .. } = &record
            else {
                continue;
            };
            if !self.partition_changes.due((*topic_id, *partition, leader_epoch.0), now_ms) {
                continue;
            }
            proposed += 1;
            if let Err(e) = self.node.propose(vec![], record.encode()) {
                tracing::debug!("raft propose of a partition change: {e}");
            }
        }
        if proposed > 0 {
            tracing::info!(partitions = proposed, "proposing partition leader changes");
        }
    }

    /// Automatic leader rebalance (Kafka's `auto.leader.rebalance.enable`): every
    /// `--leader-imbalance-check-interval-ms` the active controller proposes each preferred
    /// replica that is live and in sync as its partition's leader again (after a restart a
    /// broker comes back as a follower, so without this the survivors keep its leadership
    /// for ever). Never while fencing changes wait to be applied.
    fn propose_preferred_leaders(&mut self) {
        let Some(interval_ms) = self.quorum.leader_imbalance_check_interval_ms else { return };
        if !self.sessions.is_active() {
            return;
        }
        let now_ms = self.now_ms();
        if now_ms < self.preferred_checked_ms + interval_ms {
            return;
        }
        self.preferred_checked_ms = now_ms;
        if !self.state.partition_changes().is_empty() {
            return;
        }
        let mut proposed = 0;
        for record in self.state.preferred_leader_changes() {
            let MetadataRecord::PartitionChange { topic_id, partition, leader_epoch, .. } = &record
            else {
                continue;
            };
            if !self.partition_changes.due((*topic_id, *partition, leader_epoch.0), now_ms) {
                continue;
            }
            proposed += 1;
            if let Err(e) = self.node.propose(vec![], record.encode()) {
                tracing::debug!("raft propose of a preferred leader: {e}");
            }
        }
        if proposed > 0 {
            tracing::info!(partitions = proposed, "proposing preferred replicas as leaders");
        }
    }

    /// A new leader names itself in the log (after raft-rs's own empty entry).
    fn propose_leader_change(&mut self) {
        let raft = &self.node.raft;
        if raft.state != StateRole::Leader || self.leader_change_proposed_term == raft.term {
            return;
        }
        let term = raft.term;
        self.leader_change_proposed_term = term;
        tracing::info!(node_id = self.me, term, "elected controller leader");
        let record = MetadataRecord::LeaderChange { leader_id: NodeId(self.me as i32), term };
        if let Err(e) = self.node.propose(vec![], record.encode()) {
            tracing::debug!("raft propose of the leader change: {e}");
        }
        // The first leader names the cluster; a leader that has not applied the whole log
        // yet may propose a second id, and the first one committed wins (`state`).
        if self.state.cluster_id.is_none() {
            let record = MetadataRecord::ClusterId { cluster_id: new_cluster_id() };
            if let Err(e) = self.node.propose(vec![], record.encode()) {
                tracing::debug!("raft propose of the cluster id: {e}");
            }
        }
    }

    /// The leader places the internal topics once, when every voter is registered (the
    /// cluster has formed): round-robin over the brokers like any topic. Proposed once per
    /// term; a later leader proposes again if they are still missing.
    fn propose_internal_topics(&mut self) {
        let raft = &self.node.raft;
        if raft.state != StateRole::Leader || self.internal_proposed_term == raft.term {
            return;
        }
        let live = self.state.live_brokers();
        let formed = self.quorum.voters.ids().all(|id| live.contains(&id));
        let missing: Vec<&str> = INTERNAL_TOPICS
            .into_iter()
            .filter(|name| !self.state.internal.contains_key(*name))
            .collect();
        if !formed || missing.is_empty() {
            return;
        }
        self.internal_proposed_term = raft.term;
        for name in missing {
            let leaders = place(name, &live, 0, CLUSTER_INTERNAL_TOPIC_PARTITIONS);
            let record = MetadataRecord::InternalTopic { name: name.to_string(), leaders };
            if let Err(e) = self.node.propose(vec![], record.encode()) {
                tracing::debug!("raft propose of an internal topic: {e}");
            }
        }
    }

    async fn handle_ready(&mut self) {
        let mut ready = self.node.ready();
        self.send(ready.take_messages());
        if !ready.snapshot().is_empty() {
            // Nobody sends snapshots yet (no compaction): a leader never lacks an entry.
            fatal(
                FatalReason::Runtime,
                "a metadata snapshot arrived, which this version cannot apply",
            );
        }
        let committed = ready.take_committed_entries();
        let hard_state = ready.hs().cloned();
        if !ready.entries().is_empty() || hard_state.is_some() {
            let bytes = journal::encode_batch(ready.entries(), hard_state.as_ref(), None);
            persist(&self.journal, bytes).await;
            let storage = self.node.store().clone();
            if let Err(e) = storage.wl().append(ready.entries()) {
                fatal(FatalReason::Runtime, format!("the metadata log refused entries: {e}"));
            }
            if let Some(hard_state) = hard_state {
                storage.wl().set_hardstate(hard_state);
            }
        }
        // After the hard state with their commit index is on disk (see the module doc).
        self.apply(committed).await;
        self.send(ready.take_persisted_messages());
        let mut light = self.node.advance(ready);
        if let Some(commit) = light.commit_index() {
            let hard_state = {
                let storage = self.node.store();
                let mut core = storage.wl();
                core.mut_hard_state().set_commit(commit);
                core.hard_state().clone()
            };
            persist(&self.journal, journal::encode_batch(&[], Some(&hard_state), None)).await;
        }
        self.send(light.take_messages());
        self.apply(light.take_committed_entries()).await;
        self.node.advance_apply();
    }

    fn send(&self, messages: Vec<Message>) {
        for message in messages {
            self.peers.send(message);
        }
    }

    /// Applies committed entries in order and hands what changed to the controller.
    async fn apply(&mut self, entries: Vec<Entry>) {
        let mut pending = Pending::default();
        for entry in entries {
            if entry.get_entry_type() != EntryType::EntryNormal || entry.data.is_empty() {
                self.state.apply(entry.index, None);
                continue;
            }
            match MetadataRecord::decode(&entry.data) {
                Ok(record) => {
                    let applied = self.state.apply(entry.index, Some(&record));
                    let partition_change = matches!(record, MetadataRecord::PartitionChange { .. });
                    if applied.changed && partition_change {
                        // One per partition: a fenced broker's many would flood the log.
                        tracing::debug!(index = entry.index, %record, "applied metadata record");
                    } else if applied.changed {
                        tracing::info!(index = entry.index, %record, "applied metadata record");
                    }
                    pending.catalog_changed |= applied.catalog_changed;
                    pending.outcomes.extend(applied.outcome);
                }
                Err(e) => {
                    // Committed everywhere, so every node skips it alike; a newer version's
                    // record this one cannot read must not stop the quorum.
                    tracing::error!(index = entry.index, "skipping a metadata record: {e}");
                    self.state.apply(entry.index, None);
                }
            }
        }
        if !pending.catalog_changed && pending.outcomes.is_empty() {
            return;
        }
        let committed = Committed {
            cluster_id: self.state.cluster_id.clone(),
            topics: self.state.topics.clone(),
            outcomes: pending.outcomes,
        };
        if self.committed.send(committed).await.is_err() {
            tracing::debug!("the controller no longer takes committed changes");
        }
    }

    /// Hands the view to every shard when it changed.
    fn publish(&self) {
        let raft = &self.node.raft;
        let leader = raft.state == StateRole::Leader;
        let voters = self
            .quorum
            .voters
            .ids()
            .map(|id| {
                let raft_id = id.0 as u64;
                let log_end = if raft_id == self.me {
                    Some(raft.raft_log.last_index())
                } else if leader {
                    raft.prs().get(raft_id).map(|progress| progress.matched)
                } else {
                    None
                };
                VoterState { node_id: id, log_end_index: log_end }
            })
            .collect();
        let view = ClusterView {
            leader_id: (raft.leader_id != raft::INVALID_ID).then(|| NodeId(raft.leader_id as i32)),
            term: raft.term,
            commit_index: raft.raft_log.committed,
            brokers: self.state.brokers.values().cloned().collect(),
            voters,
            voter_addresses: self.quorum.voters.voters().to_vec(),
            cluster_id: self.state.cluster_id.clone(),
            coordinators: self.state.internal.clone(),
        };
        if self.cluster.view().as_deref() != Some(&view) {
            self.cluster.publish(view);
        }
    }
}

/// Writes and fdatasyncs journal bytes; a failure ends the process (`fatal.rs`: never retry
/// an fsync).
async fn persist(journal: &Journal, bytes: Vec<u8>) {
    if let Err(e) = journal.append(bytes).await {
        fatal(FatalReason::StorageIo, format!("cannot write the metadata log: {e}"));
    }
}

/// raft-rs logs through slog; this sends its lines to `tracing` (target `raft`), at debug
/// for its info lines (every vote and campaign), so the driver's own lines tell the story.
struct TracingDrain;

impl slog::Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &slog::Record, _: &slog::OwnedKVList) -> Result<(), slog::Never> {
        match record.level() {
            slog::Level::Critical | slog::Level::Error => {
                tracing::error!(target: "raft", "{}", record.msg())
            }
            slog::Level::Warning => tracing::warn!(target: "raft", "{}", record.msg()),
            slog::Level::Info => tracing::debug!(target: "raft", "{}", record.msg()),
            _ => tracing::trace!(target: "raft", "{}", record.msg()),
        }
        Ok(())
    }
}
