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
//! after the proposal retry interval once the state has applied the index its previous
//! proposal went in at (`liveness::InFlight`), until it no longer differs.
//!
//! Snapshots (`snapshot`): every `--metadata-snapshot-interval-records` applied entries
//! the driver writes the state at its applied index S as a snapshot and drops the entries
//! up to S, in this order, each step durable before the next:
//!
//! ```text
//!   1. <S>.snapshot written (temp, fsync, rename, dir fsync)
//!   2. raft storage compacted: first index P + 1 (P the previous snapshot this process
//!      took or loaded, else S), S offered to followers and P still served
//!   3. journal rewritten: conf state, hard state, entries after S (temp, fsync, rename,
//!      dir fsync)
//!   4. snapshots older than the previous one removed
//! ```
//!
//! A crash before 1 completes leaves the old files (a temporary file is removed at start);
//! between 1 and 3 the start loads snapshot S and replays the old journal, dropping its
//! entries up to S (`journal::after_snapshot`) and rewriting it; after 3 it finds both.
//! Each way the committed state is the same: the snapshot holds only applied (committed)
//! entries, and the journal keeps the hard state and every entry after S. Start-up loads
//! the newest snapshot that decodes, replays the journal's entries after it, and hands the
//! controller the snapshot's topics once the replay reached the commit index (so its
//! first catalog is at least what it had before the stop). A journal with no snapshot
//! (an older version's) replays whole, as before.
//!
//! A follower whose next index is below the leader's first index is offered the snapshot
//! by raft-rs (`Storage::snapshot`, MsgSnapshot): `send` strips its bytes, and the follower
//! fetches them in chunks of `METADATA_SNAPSHOT_CHUNK_BYTES` (`snapshot_fetch`, KRaft's
//! FetchSnapshot, frames of Spate's own on the transport; a snapshot may be far larger than
//! a frame) into `<index>.snapshot.download`, then fsyncs it, checks it whole (CRC, fields,
//! index and term) and steps the offer with the bytes into raft-rs. It comes back in a
//! `Ready`: the follower renames the file into place (directory fsync), installs the
//! snapshot in the raft storage, rewrites its journal to the conf and hard states alone,
//! replaces its state with the snapshot's and hands the controller its topics, exactly as
//! after a replay. raft-rs is told the snapshot was sent once the offer is queued; until
//! the follower has it, its appends are refused and raft-rs offers the same snapshot again
//! every heartbeat round, which the fetch keeps going through (`snapshot_fetch`).
//!
//! Broker-only nodes (`--process-roles broker`, Kafka's observers) run this same driver as
//! Raft learners, raft-rs's non-voting members: the leader appends to them, offers them
//! snapshots and heartbeats them like a follower, but they never vote, never campaign and
//! never count for a commit. Why a learner and not a fetcher of committed entries of our
//! own: everything a broker does on the log already goes through the `RawNode` (its
//! registration and topic requests are proposals raft-rs forwards to the leader, snapshot
//! offers and their chunked fetch, the applied state handed to the controller), and a
//! learner gets all of it unchanged; only its membership is new. A learner has no listener:
//! it dials every voter and joins (`transport`); the voter that takes the join proposes a
//! conf change adding it as a learner (raft-rs forwards it to the leader) until its
//! configuration has it, and every node applies committed conf changes
//! (`apply_conf_change`), writes the new configuration to its journal and keeps it in its
//! snapshots. A learner counts itself a learner from its first start (its configuration
//! at index 0 has it), so the snapshot it fetches, which may predate its conf change, is
//! taken as having it too (raft-rs refuses a snapshot whose configuration lacks the node).
//! Learners are never removed: a stopped broker-only node stays in the configuration, its
//! messages dropped until it joins again.
//!
//! Lifecycle: started after the shards are ready (`Cluster::start`), runs until the process
//! ends. Concurrency: shard 0 only; the events queue is its only input.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use glommio::channels::local_channel::{self, LocalReceiver, LocalSender};
use protobuf::Message as _;
use raft::prelude::{
    ConfChange, ConfChangeType, ConfState, Entry, EntryType, Message, MessageType, Snapshot,
};
use raft::storage::MemStorage;
use raft::{GetEntriesContext, RaftState, RawNode, SnapshotStatus, StateRole, Storage};

use super::journal::{self, Journal};
use super::liveness::{BrokerHeartbeat, InFlight, Sessions, Throttle};
use super::placement::{self, Start};
use super::records::{MetadataRecord, RequestId};
use super::snapshot::{self, SnapshotMeta};
use super::snapshot_fetch::{self, Fetcher, SnapshotChunk, SnapshotKey};
use super::state::{place, MetadataState};
use super::transport::{self, Peers};
use super::{Cluster, ClusterView, Committed, Event, VoterState};
use crate::config::{ClusterConfig, Config};
use crate::constants::{
    BROKER_HEARTBEAT_POLL_MS, BROKER_REGISTRATION_RETRY_MS, CLUSTER_INTERNAL_TOPIC_PARTITIONS,
    CLUSTER_INTERNAL_TOPIC_REPLICATION_FACTOR, CLUSTER_PROPOSAL_RETRY_MS,
    METADATA_SNAPSHOT_CHUNK_BYTES, METADATA_SNAPSHOT_FETCH_IDLE_MS,
    METADATA_SNAPSHOT_FETCH_RETRY_MS, METADATA_SNAPSHOT_SIZE_BYTES_MAX, RAFT_ELECTION_TICKS,
    RAFT_EVENTS_QUEUED_MAX, RAFT_HEARTBEAT_TICKS, RAFT_INFLIGHT_MESSAGES_MAX,
    RAFT_MESSAGE_SIZE_BYTES_MAX, RAFT_TICK_MS,
};
use crate::fatal::{fatal, FatalReason};
use crate::model::NodeId;
use crate::shard::catalog::new_cluster_id;
use crate::shard::internal_log::{self, INTERNAL_TOPICS};

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
    let opened = glommio::executor()
        .spawn_blocking(move || {
            let (journal, replayed) = Journal::open(&data_dir)?;
            let (loaded, skipped) = snapshot::load_newest(journal.dir())?;
            Ok::<_, journal::JournalError>((journal, replayed, loaded, skipped))
        })
        .await;
    let (mut journal, mut replayed, loaded, skipped) = opened.unwrap_or_else(|e| {
        fatal(
            FatalReason::DataDir,
            format!(
                "cannot open the metadata log in {}: {e}; restore it or use another --data-dir",
                config.data_dir.join(journal::CLUSTER_DIR).display()
            ),
        )
    });
    for (path, reason) in &skipped {
        tracing::warn!(path = %path.display(), "skipping a metadata snapshot: {reason}");
    }
    let voter_ids: Vec<u64> = quorum.voters.ids().map(|id| id.0 as u64).collect();
    // A broker-only node: a Raft learner, with no controller listener.
    let learner = quorum.controller_listen.is_none();
    let storage = MetadataStorage::default();
    let mut state = MetadataState::default();
    let mut snapshot_index = 0;
    let mut catalog_due_at = None;
    if let Some(loaded) = loaded {
        let (index, term) = (loaded.meta.index, loaded.meta.term);
        let journal_entries = replayed.entries.len();
        let fits = replayed.entries.first().is_none_or(|e| e.index == index + 1);
        let entries = std::mem::take(&mut replayed.entries);
        replayed.entries = journal::after_snapshot(entries, index, term).unwrap_or_else(|e| {
            fatal(
                FatalReason::DataDir,
                format!(
                    "the metadata journal does not continue snapshot {index}: {e}; restore \
                     {} or use another --data-dir",
                    journal.dir().display()
                ),
            )
        });
        let hard_state = &mut replayed.hard_state;
        hard_state.commit = hard_state.commit.max(index);
        hard_state.term = hard_state.term.max(term);
        let mut conf_state = loaded.meta.conf_state.clone();
        if learner {
            add_learner(&mut conf_state, me);
        }
        replayed.conf_state = Some(conf_state.clone());
        if !fits {
            // A crash between a snapshot and the journal's rewrite (see the module doc).
            let bytes = journal::encode_batch(
                &replayed.entries,
                Some(&replayed.hard_state),
                replayed.conf_state.as_ref(),
            );
            if let Err(e) = journal.rewrite(bytes).await {
                fatal(FatalReason::StorageIo, format!("cannot rewrite the metadata log: {e}"));
            }
        }
        tracing::info!(
            index,
            term,
            bytes = loaded.bytes.len(),
            journal_entries,
            entries_after = replayed.entries.len(),
            "loaded the metadata snapshot"
        );
        let meta = SnapshotMeta { conf_state, ..loaded.meta.clone() };
        storage.install(raft_snapshot(&meta, loaded.bytes));
        state = loaded.state;
        snapshot_index = index;
        catalog_due_at = Some(replayed.hard_state.commit);
    }
    let conf_state = match replayed.conf_state.clone() {
        Some(conf_state) => conf_state,
        None => {
            // First start: every voter starts from the same configuration at index 0 (the
            // static voter set; the data dir's identity record keeps it from changing).
            // A broker-only node is a learner in its own configuration from the start.
            let learners = if learner { vec![me] } else { vec![] };
            let conf_state = ConfState::from((voter_ids.clone(), learners));
            let bytes = journal::encode_batch(&[], None, Some(&conf_state));
            persist(&journal, bytes).await;
            conf_state
        }
    };
    if snapshot_index == 0 {
        storage.mem.initialize_with_conf_state(conf_state);
    }
    if let Err(e) = storage.mem.wl().append(&replayed.entries) {
        fatal(FatalReason::DataDir, format!("the metadata log does not fit together: {e}"));
    }
    storage.mem.wl().set_hardstate(replayed.hard_state.clone());
    tracing::info!(
        node_id = me,
        entries = replayed.entries.len(),
        term = replayed.hard_state.term,
        commit = replayed.hard_state.commit,
        torn_bytes = replayed.torn_bytes,
        snapshot_index,
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
        applied: snapshot_index,
        ..raft::Config::default()
    };
    let logger = slog::Logger::root(TracingDrain, slog::o!());
    let node = RawNode::new(&raft_config, storage, &logger).unwrap_or_else(|e| {
        fatal(FatalReason::Runtime, format!("cannot start the Raft node: {e}"))
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
    let sessions = Sessions::new(quorum.broker_session_timeout_ms, CLUSTER_PROPOSAL_RETRY_MS);
    let stamps = transport::Stamps { clock: Instant::now(), arrivals: sessions.arrivals() };
    if let Some(listen) = quorum.controller_listen {
        let listener = glommio::net::TcpListener::bind(listen).unwrap_or_else(|e| {
            fatal(
                FatalReason::Listen,
                format!(
                    "cannot listen on {listen}: {e}; choose another --controller-listen \
                     address"
                ),
            )
        });
        let accepting =
            transport::accept_loop(listener, sender.clone(), me, voters, stamps.clone());
        glommio::spawn_local(accepting).detach();
        tracing::info!(%listen, "controller accepting peers");
    } else {
        tracing::info!("a broker-only node: following the metadata log as a Raft learner");
    }
    glommio::spawn_local(ticker(sender.clone())).detach();
    glommio::spawn_local(register(cluster.clone(), sender.clone(), config.clone())).detach();
    let beating = heartbeat(cluster.clone(), sender.clone(), quorum.clone(), stamps.clone());
    glommio::spawn_local(beating).detach();
    tracing::info!(
        heartbeat_interval_ms = quorum.broker_heartbeat_interval_ms,
        session_timeout_ms = quorum.broker_session_timeout_ms,
        "broker heartbeats"
    );
    let peers = Peers::start(&quorum.voters, me, learner.then(|| sender.clone()));
    let quorum_snapshot_interval = quorum.metadata_snapshot_interval_records;
    let driver = Driver {
        node,
        journal,
        peers,
        state,
        cluster,
        quorum,
        me,
        leader_change_proposed_term: 0,
        committed,
        internal_proposed_term: 0,
        clock: stamps.clock,
        sessions,
        partition_changes: InFlight::new(CLUSTER_PROPOSAL_RETRY_MS),
        partition_changes_checked: None,
        preferred_checked_ms: 0,
        snapshot_index,
        snapshot_interval: quorum_snapshot_interval,
        catalog_due_at,
        snapshots_sent: Vec::new(),
        snapshots_offered: HashMap::new(),
        fetcher: Fetcher::new(me, fetch_limits()),
        downloaded: None,
        learner,
        joined: HashMap::new(),
        learner_proposals: Throttle::new(CLUSTER_PROPOSAL_RETRY_MS),
        removal_proposals: Throttle::new(CLUSTER_PROPOSAL_RETRY_MS),
    };
    driver.run(events).await;
}

/// How a follower fetches a snapshot (`snapshot_fetch`).
fn fetch_limits() -> snapshot_fetch::Limits {
    snapshot_fetch::Limits {
        chunk_bytes: METADATA_SNAPSHOT_CHUNK_BYTES,
        size_bytes_max: METADATA_SNAPSHOT_SIZE_BYTES_MAX,
        retry_ms: METADATA_SNAPSHOT_FETCH_RETRY_MS,
        idle_ms: METADATA_SNAPSHOT_FETCH_IDLE_MS,
    }
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
/// Stamped as it leaves (this node's own session, if it is the active controller), before
/// it waits in the driver's queue.
async fn heartbeat(
    cluster: Rc<Cluster>,
    events: Rc<LocalSender<Event>>,
    quorum: ClusterConfig,
    stamps: transport::Stamps,
) {
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
                stamps.record(&heartbeat);
                if events.send(Event::Heartbeat(heartbeat)).await.is_err() {
                    return;
                }
            }
        }
        glommio::timer::sleep(Duration::from_millis(BROKER_HEARTBEAT_POLL_MS)).await;
    }
}

struct Driver {
    node: RawNode<MetadataStorage>,
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
    partition_changes: InFlight<([u8; 16], i32, i32)>,
    /// The applied index and time of the last look for partition changes.
    partition_changes_checked: Option<(u64, u64)>,
    /// When the active controller last looked for partitions not led by their preferred
    /// replica (see `propose_preferred_leaders`).
    preferred_checked_ms: u64,
    /// The index of the newest snapshot (0: none).
    snapshot_index: u64,
    /// Applied entries between two snapshots.
    snapshot_interval: u64,
    /// Started from a snapshot: the commit index at start, once applied the controller gets
    /// the whole catalog (it has seen none of the snapshot's topics).
    catalog_due_at: Option<u64>,
    /// The peers a snapshot was handed to in this `Ready` and whether it was queued.
    snapshots_sent: Vec<(u64, bool)>,
    /// The snapshot index last offered to each peer (logged once per snapshot: raft-rs
    /// offers it again every heartbeat round while the peer fetches it).
    snapshots_offered: HashMap<u64, u64>,
    /// The snapshot this node fetches from the leader, if any (`snapshot_fetch`).
    fetcher: Fetcher,
    /// A fetched snapshot checked whole, stepped into raft-rs and not yet installed.
    downloaded: Option<snapshot::Downloaded>,
    /// This node is broker-only: a Raft learner.
    learner: bool,
    /// The broker-only nodes that joined on this voter's listener, with this node's applied
    /// index when they last did (a join after a node's unregistration brings it back).
    joined: HashMap<u64, u64>,
    /// The learners this node proposed to add lately.
    learner_proposals: Throttle<u64>,
    /// The unregistered learners the leader proposed to remove lately.
    removal_proposals: Throttle<u64>,
}

/// What a batch of applied entries has for the controller.
#[derive(Default)]
struct Pending {
    catalog_changed: bool,
    security_changed: bool,
    outcomes: Vec<(super::RequestId, super::TopicOutcome)>,
}

impl Driver {
    async fn run(mut self, events: LocalReceiver<Event>) {
        while let Some(event) = events.recv().await {
            match event {
                Event::Tick => {
                    self.node.tick();
                    let step = self.fetcher.tick(self.now_ms());
                    self.fetch_step(step).await;
                }
                Event::Message(message) if self.is_snapshot_offer(&message) => {
                    let step = self.fetcher.offer(self.now_ms(), message);
                    if let Some(request) = &step.request {
                        tracing::info!(
                            leader = request.to,
                            index = request.key.index,
                            term = request.key.term,
                            "fetching the metadata snapshot from the leader"
                        );
                    }
                    self.fetch_step(step).await;
                }
                Event::Message(message) => self.step(message),
                Event::FetchSnapshot(request) => self.serve_snapshot(&request),
                Event::SnapshotChunk(chunk) => self.take_chunk(chunk).await,
                Event::Propose(data) => {
                    // Dropped when there is no leader to forward to; the proposer retries.
                    if let Err(e) = self.node.propose(vec![], data) {
                        tracing::debug!("raft propose: {e}");
                    }
                }
                Event::Heartbeat(heartbeat) => self.heartbeat(heartbeat),
                Event::Resign => self.resign(),
                Event::Observer { node_id, queue } => {
                    self.peers.attach(node_id, queue);
                    self.joined.insert(node_id, self.state.applied_index);
                }
            }
            self.propose_learners();
            self.propose_learner_removals();
            self.propose_leader_change();
            self.propose_internal_topics();
            self.update_active();
            self.propose_liveness();
            self.propose_preferred_leaders();
            if self.node.has_ready() {
                self.handle_ready().await;
            }
            if let Some(downloaded) = self.downloaded.take() {
                // raft-rs did not take it (this node got that far meanwhile): drop the file.
                tracing::info!(index = downloaded.meta.index, "fetched snapshot not needed");
                self.remove_downloads().await;
            }
            self.publish();
        }
    }

    fn step(&mut self, mut message: Message) {
        if self.learner && message.get_msg_type() == MessageType::MsgSnapshot {
            // A snapshot taken before this node's conf change (see the module doc).
            let conf_state = message.mut_snapshot().mut_metadata().mut_conf_state();
            add_learner(conf_state, self.me);
        }
        // A stale or unexpected message is Raft's business to ignore.
        if let Err(e) = self.node.step(message) {
            tracing::debug!("raft step: {e}");
        }
    }

    /// A snapshot offered without its bytes (`send` strips them) that this node may need:
    /// at or past its commit index. One below it is stepped as is (raft-rs refuses it from
    /// the metadata alone, before looking at the bytes), and one with its bytes (a previous
    /// version's leader) too.
    fn is_snapshot_offer(&self, message: &Message) -> bool {
        message.get_msg_type() == MessageType::MsgSnapshot
            && message.get_snapshot().data.is_empty()
            && message.get_snapshot().get_metadata().index >= self.node.raft.raft_log.committed
    }

    /// Does what the fetcher asks: drop partial files, write a chunk, ask the leader, or
    /// check the whole snapshot and step it into raft-rs.
    async fn fetch_step(&mut self, step: snapshot_fetch::Step) {
        if step.discard {
            self.remove_downloads().await;
        }
        if let Some(write) = step.write {
            let dir = self.journal.dir().to_path_buf();
            let snapshot_fetch::Write { key, position, bytes } = write;
            let written = glommio::executor()
                .spawn_blocking(move || snapshot::write_chunk(&dir, key.index, position, &bytes))
                .await;
            if let Err(e) = written {
                fatal(FatalReason::StorageIo, format!("cannot write the metadata snapshot: {e}"));
            }
        }
        if let Some(request) = step.request {
            let frame = super::frame::encode_fetch_snapshot(&request);
            if !self.peers.send_frame(request.to, frame) {
                tracing::debug!(to = request.to, "snapshot fetch request not queued; asked again");
            }
        }
        if let Some(complete) = step.complete {
            self.complete_download(complete).await;
        }
    }

    /// Every byte of a fetched snapshot is written: fsync and check it whole, then step the
    /// leader's offer with its bytes into raft-rs (which installs it in the next `Ready`:
    /// `install_snapshot`). A snapshot that does not check is dropped; the leader offers it
    /// again.
    async fn complete_download(&mut self, complete: snapshot_fetch::Completed) {
        let dir = self.journal.dir().to_path_buf();
        let snapshot_fetch::Completed { key, size, mut offer } = complete;
        let checked = glommio::executor()
            .spawn_blocking(move || snapshot::finish_download(&dir, key.index, key.term, size))
            .await;
        match checked {
            Ok(mut downloaded) => {
                tracing::info!(
                    index = key.index,
                    term = key.term,
                    bytes = size,
                    "fetched the metadata snapshot"
                );
                offer.mut_snapshot().data = std::mem::take(&mut downloaded.bytes).into();
                self.downloaded = Some(downloaded);
                self.step(offer);
            }
            Err(e) => {
                tracing::warn!(index = key.index, "fetched metadata snapshot refused: {e}");
                self.remove_downloads().await;
            }
        }
    }

    /// A chunk of the snapshot this node fetches.
    async fn take_chunk(&mut self, chunk: SnapshotChunk) {
        let step = self.fetcher.chunk(self.now_ms(), chunk);
        self.fetch_step(step).await;
    }

    /// Answers a follower's request with bytes of this node's newest snapshot (the one
    /// raft-rs offered it) or of the previous one (a fetch that outlasted a snapshot), or
    /// SNAPSHOT_NOT_FOUND for an older one.
    fn serve_snapshot(&self, request: &snapshot_fetch::FetchSnapshot) {
        let chunk = {
            let storage = self.node.store();
            let (newest, previous) = (storage.snapshot.borrow(), storage.previous.borrow());
            let have = [&*newest, &*previous].into_iter().filter(|s| !s.data.is_empty()).map(|s| {
                let metadata = s.get_metadata();
                (SnapshotKey { index: metadata.index, term: metadata.term }, &s.data)
            });
            snapshot_fetch::serve(request, have, super::frame::SNAPSHOT_CHUNK_BYTES_MAX)
        };
        if !self.peers.send_frame(chunk.to, super::frame::encode_snapshot_chunk(&chunk)) {
            tracing::debug!(to = chunk.to, "snapshot chunk not queued; the follower asks again");
        }
    }

    async fn remove_downloads(&self) {
        let dir = self.journal.dir().to_path_buf();
        let removed =
            glommio::executor().spawn_blocking(move || snapshot::remove_downloads(&dir)).await;
        if let Err(e) = removed {
            tracing::warn!("cannot remove a partial metadata snapshot: {e}");
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

    /// A voter proposes each broker-only node that joined on its listener as a learner,
    /// until the configuration has it (raft-rs forwards a follower's proposal; a leader
    /// with a conf change pending drops another, so it is proposed again later).
    fn propose_learners(&mut self) {
        if self.joined.is_empty() || self.node.raft.leader_id == raft::INVALID_ID {
            return;
        }
        let now_ms = self.now_ms();
        let joined: Vec<(u64, u64)> = self.joined.iter().map(|(id, at)| (*id, *at)).collect();
        for (node_id, joined_at) in joined {
            let learner = self.node.raft.prs().conf().learners().contains(&node_id);
            // Unregistered since it last joined: it stays out until it joins again.
            let unregistered = self.state.unregistered.get(&NodeId(node_id as i32));
            let gone = unregistered.is_some_and(|index| joined_at < *index);
            if learner || gone || !self.learner_proposals.due(node_id, now_ms) {
                continue;
            }
            let change = ConfChange {
                change_type: ConfChangeType::AddLearnerNode,
                node_id,
                ..Default::default()
            };
            tracing::info!(node_id, "proposing a broker-only node as a learner");
            if let Err(e) = self.node.propose_conf_change(vec![], change) {
                tracing::debug!("raft propose of a learner: {e}");
            }
        }
    }

    /// The leader removes each learner the log unregistered (UnregisterBroker) from the
    /// configuration, until it is out (raft-rs takes one conf change at a time).
    fn propose_learner_removals(&mut self) {
        if self.node.raft.state != StateRole::Leader || self.state.unregistered.is_empty() {
            return;
        }
        let now_ms = self.now_ms();
        let learners: Vec<u64> = self.node.raft.prs().conf().learners().iter().copied().collect();
        for node_id in learners {
            let unregistered = self.state.unregistered.contains_key(&NodeId(node_id as i32));
            if !unregistered || !self.removal_proposals.due(node_id, now_ms) {
                continue;
            }
            let change = ConfChange {
                change_type: ConfChangeType::RemoveNode,
                node_id,
                ..Default::default()
            };
            tracing::info!(node_id, "proposing to remove an unregistered broker-only node");
            if let Err(e) = self.node.propose_conf_change(vec![], change) {
                tracing::debug!("raft propose of a learner's removal: {e}");
            }
        }
    }

    /// Applies a committed conf change (a learner added or removed) on every node, and keeps
    /// the new configuration in the raft storage (snapshots) and the journal (restarts).
    async fn apply_conf_change(&mut self, entry: &Entry) {
        let mut change = ConfChange::default();
        if let Err(e) = change.merge_from_bytes(&entry.data) {
            let index = entry.index;
            tracing::error!(index, "skipping a conf change that does not decode: {e}");
            return;
        }
        let was_learner = self.node.raft.prs().conf().learners().contains(&change.node_id);
        if change.change_type == ConfChangeType::AddLearnerNode && !was_learner {
            // Joined again: an earlier unregistration no longer removes it.
            self.state.learner_added(NodeId(change.node_id as i32));
        }
        let conf_state = match self.node.apply_conf_change(&change) {
            Ok(conf_state) => conf_state,
            Err(e) => {
                tracing::error!(index = entry.index, "skipping a conf change: {e}");
                return;
            }
        };
        self.node.store().mem.wl().set_conf_state(conf_state.clone());
        persist(&self.journal, journal::encode_batch(&[], None, Some(&conf_state))).await;
        tracing::info!(
            index = entry.index,
            node_id = change.node_id,
            learners = ?conf_state.learners,
            change = ?change.change_type,
            "applied a conf change of the broker-only nodes"
        );
    }

    /// Hands Raft leadership to the voter with the most of the log (raft-rs sends it
    /// MsgTimeoutNow once it has caught up, and it wins the election at once).
    fn resign(&mut self) {
        let raft = &self.node.raft;
        if raft.state != StateRole::Leader {
            return;
        }
        let voters = raft.prs().conf().voters();
        let others = raft.prs().iter().filter(|(id, _)| **id != self.me && voters.contains(**id));
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
            self.partition_changes = InFlight::new(CLUSTER_PROPOSAL_RETRY_MS);
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
        let changes = self.state.partition_changes();
        let proposed = self.propose_partition_changes(changes, now_ms, "a partition change");
        if proposed > 0 {
            tracing::info!(partitions = proposed, "proposing partition changes");
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
        let changes = self.state.preferred_leader_changes();
        let proposed = self.propose_partition_changes(changes, now_ms, "a preferred leader");
        if proposed > 0 {
            tracing::info!(partitions = proposed, "proposing preferred replicas as leaders");
        }
    }

    /// Proposes each of `records` (partition changes) that `partition_changes` says is due
    /// and records the log index it went in at; returns how many. `what` names them in the
    /// log line of a failed proposal.
    fn propose_partition_changes(
        &mut self,
        records: Vec<MetadataRecord>,
        now_ms: u64,
        what: &str,
    ) -> usize {
        let applied = self.state.applied_index;
        self.partition_changes.forget_settled(now_ms, applied);
        let mut proposed = 0;
        for record in records {
            let Some(key) = record.partition_epoch() else { continue };
            if !self.partition_changes.due(&key, now_ms, applied) {
                continue;
            }
            proposed += 1;
            if let Err(e) = self.node.propose(vec![], record.encode()) {
                tracing::debug!("raft propose of {what}: {e}");
            }
            let index = self.node.raft.raft_log.last_index();
            self.partition_changes.proposed(key, now_ms, index);
        }
        proposed
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
    /// cluster has formed): round-robin over the brokers like any topic. The replicated ones
    /// (`internal_log::REPLICATED_INTERNAL_TOPICS`) are topics on the log with
    /// min(3, brokers) replicas each (Kafka's offsets.topic.replication.factor, 3), led and
    /// replicated like any partition; the others get a static leader per partition.
    /// Proposed once per term; a later leader proposes again if they are still missing.
    fn propose_internal_topics(&mut self) {
        let raft = &self.node.raft;
        if raft.state != StateRole::Leader || self.internal_proposed_term == raft.term {
            return;
        }
        let live = self.state.live_brokers();
        let formed = self.quorum.voters.ids().all(|id| live.contains(&id));
        let missing: Vec<&str> = INTERNAL_TOPICS
            .into_iter()
            .filter(|name| match internal_log::replicated(name) {
                true => !self.state.topics.contains_key(*name),
                false => !self.state.internal.contains_key(*name),
            })
            .collect();
        if !formed || missing.is_empty() {
            return;
        }
        self.internal_proposed_term = raft.term;
        let partitions = CLUSTER_INTERNAL_TOPIC_PARTITIONS;
        for name in missing {
            let record = if internal_log::replicated(name) {
                let factor = CLUSTER_INTERNAL_TOPIC_REPLICATION_FACTOR.min(live.len());
                let (serial, _) = uuid::Uuid::new_v4().as_u64_pair();
                let candidates = self.state.placement_candidates();
                let start = Start::random(uuid::Uuid::new_v4().as_u128(), candidates.len());
                MetadataRecord::CreateTopic {
                    request: RequestId { node_id: NodeId(self.me as i32), serial },
                    name: name.to_string(),
                    topic_id: *uuid::Uuid::new_v4().as_bytes(),
                    replicas: placement::assign(&candidates, 0, partitions, factor, start),
                    overrides: std::collections::BTreeMap::new(),
                }
            } else {
                let leaders = place(name, &live, 0, partitions);
                MetadataRecord::InternalTopic { name: name.to_string(), leaders }
            };
            if let Err(e) = self.node.propose(vec![], record.encode()) {
                tracing::debug!("raft propose of an internal topic: {e}");
            }
        }
    }

    async fn handle_ready(&mut self) {
        let mut ready = self.node.ready();
        self.send(ready.take_messages());
        if !ready.snapshot().is_empty() {
            self.install_snapshot(ready.snapshot().clone()).await;
        }
        let committed = ready.take_committed_entries();
        let hard_state = ready.hs().cloned();
        if !ready.entries().is_empty() || hard_state.is_some() {
            let bytes = journal::encode_batch(ready.entries(), hard_state.as_ref(), None);
            persist(&self.journal, bytes).await;
            let storage = self.node.store().mem.clone();
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
                let mut core = storage.mem.wl();
                core.mut_hard_state().set_commit(commit);
                core.hard_state().clone()
            };
            persist(&self.journal, journal::encode_batch(&[], Some(&hard_state), None)).await;
        }
        self.send(light.take_messages());
        self.apply(light.take_committed_entries()).await;
        self.node.advance_apply();
        // raft-rs waits for word of each snapshot it sent: taken by the transport, the
        // follower gets it next (a follower that still lacks it rejects the entries after
        // it, and the leader sends it again); dropped, raft-rs tries again.
        for (to, queued) in std::mem::take(&mut self.snapshots_sent) {
            let status = if queued { SnapshotStatus::Finish } else { SnapshotStatus::Failure };
            self.node.report_snapshot(to, status);
        }
        let applied = self.state.applied_index;
        if applied >= self.snapshot_index + self.snapshot_interval {
            self.take_snapshot().await;
        }
    }

    fn send(&mut self, messages: Vec<Message>) {
        for mut message in messages {
            let snapshot = message.get_msg_type() == MessageType::MsgSnapshot;
            let to = message.to;
            if snapshot {
                // Offered without its bytes: the follower fetches them in chunks.
                let bytes = std::mem::take(&mut message.mut_snapshot().data).len();
                let index = message.get_snapshot().get_metadata().index;
                if self.snapshots_offered.insert(to, index) != Some(index) {
                    tracing::info!(
                        to,
                        index,
                        bytes,
                        "offering the metadata snapshot to a follower behind"
                    );
                }
            }
            let queued = self.peers.send(message);
            if snapshot {
                self.snapshots_sent.push((to, queued));
            }
        }
    }

    /// Writes the state at the applied index as a snapshot and drops the entries it covers
    /// (the order and its crash points are in the module doc).
    async fn take_snapshot(&mut self) {
        let began = Instant::now();
        let index = self.state.applied_index;
        let storage = self.node.store().clone();
        let term = storage.term(index).unwrap_or_else(|e| {
            fatal(FatalReason::Runtime, format!("no term for applied entry {index}: {e}"))
        });
        let RaftState { hard_state, conf_state } = storage.raft_state();
        let meta = SnapshotMeta { index, term, conf_state: conf_state.clone() };
        let bytes = snapshot::encode(&meta, &self.state);
        let size = bytes.len();
        let encoded = began.elapsed();
        self.write_snapshot_file(index, bytes.clone()).await;
        let last = storage.mem.last_index().unwrap_or(index);
        let entries = if last > index {
            let context = GetEntriesContext::empty(false);
            storage.mem.entries(index + 1, last + 1, None, context).unwrap_or_else(|e| {
                fatal(FatalReason::Runtime, format!("the metadata log lost entries: {e}"))
            })
        } else {
            Vec::new()
        };
        storage.compact(raft_snapshot(&meta, bytes), &entries, hard_state.clone());
        let journal = journal::encode_batch(&entries, Some(&hard_state), Some(&conf_state));
        if let Err(e) = self.journal.rewrite(journal).await {
            fatal(FatalReason::StorageIo, format!("cannot rewrite the metadata log: {e}"));
        }
        self.snapshot_index = index;
        self.remove_older_snapshots().await;
        tracing::info!(
            index,
            term,
            bytes = size,
            entries_kept = entries.len(),
            encode_us = encoded.as_micros() as u64,
            total_us = began.elapsed().as_micros() as u64,
            "took a metadata snapshot"
        );
    }

    /// A snapshot from the leader (this node was behind its first index): written as the
    /// newest snapshot, installed in the raft storage, the journal reset to the states
    /// alone, the state replaced and the controller given its topics.
    async fn install_snapshot(&mut self, incoming: Snapshot) {
        let index = incoming.get_metadata().index;
        let term = incoming.get_metadata().term;
        let fetched = self.downloaded.take();
        let (meta, state) = match fetched.map(|d| (d.meta, d.state)) {
            Some((meta, state)) if meta.index == index && meta.term == term => {
                let dir = self.journal.dir().to_path_buf();
                let installed = glommio::executor()
                    .spawn_blocking(move || snapshot::install_download(&dir, index))
                    .await;
                if let Err(e) = installed {
                    let message = format!("cannot install the metadata snapshot: {e}");
                    fatal(FatalReason::StorageIo, message);
                }
                (meta, state)
            }
            _ => self.decode_and_write(&incoming).await,
        };
        let storage = self.node.store().clone();
        storage.install(incoming);
        let RaftState { hard_state, conf_state } = storage.raft_state();
        let bytes = journal::encode_batch(&[], Some(&hard_state), Some(&conf_state));
        if let Err(e) = self.journal.rewrite(bytes).await {
            fatal(FatalReason::StorageIo, format!("cannot rewrite the metadata log: {e}"));
        }
        self.snapshot_index = index;
        self.remove_older_snapshots().await;
        tracing::info!(
            index,
            term,
            topics = state.topics.len(),
            brokers = state.brokers.len(),
            "installed the metadata snapshot from the leader"
        );
        assert_eq!(meta.index, state.applied_index);
        self.state = state;
        self.catalog_due_at = None;
        self.hand_over(Vec::new()).await;
    }

    /// A snapshot that came with its bytes in raft-rs's message (a leader of the previous
    /// version): decoded and written as the newest snapshot.
    async fn decode_and_write(&self, incoming: &Snapshot) -> (SnapshotMeta, MetadataState) {
        let index = incoming.get_metadata().index;
        let term = incoming.get_metadata().term;
        let decoded = match snapshot::decode(&incoming.data) {
            Ok((meta, state)) if meta.index == index && meta.term == term => (meta, state),
            Ok((meta, _)) => fatal(
                FatalReason::Runtime,
                format!(
                    "the leader's metadata snapshot at {index} (term {term}) holds {} (term {})",
                    meta.index, meta.term
                ),
            ),
            Err(e) => fatal(
                FatalReason::Runtime,
                format!("the leader's metadata snapshot at {index} does not decode: {e}"),
            ),
        };
        self.write_snapshot_file(index, incoming.data.to_vec()).await;
        decoded
    }

    async fn write_snapshot_file(&self, index: u64, bytes: Vec<u8>) {
        let dir = self.journal.dir().to_path_buf();
        let written =
            glommio::executor().spawn_blocking(move || snapshot::write(&dir, index, &bytes)).await;
        if let Err(e) = written {
            fatal(FatalReason::StorageIo, format!("cannot write the metadata snapshot: {e}"));
        }
    }

    /// Keeps the newest two snapshots (the previous one as a spare).
    async fn remove_older_snapshots(&self) {
        let dir = self.journal.dir().to_path_buf();
        let removed =
            glommio::executor().spawn_blocking(move || snapshot::remove_older(&dir, 2)).await;
        if let Err(e) = removed {
            tracing::warn!("cannot remove an older metadata snapshot: {e}");
        }
    }

    /// Applies committed entries in order and hands what changed to the controller.
    async fn apply(&mut self, entries: Vec<Entry>) {
        let mut pending = Pending::default();
        for entry in entries {
            if entry.get_entry_type() == EntryType::EntryConfChange && !entry.data.is_empty() {
                self.apply_conf_change(&entry).await;
            }
            if entry.get_entry_type() != EntryType::EntryNormal || entry.data.is_empty() {
                self.state.apply(entry.index, None);
                continue;
            }
            match MetadataRecord::decode(&entry.data) {
                Ok(record) => {
                    if let Some(code) = self.state.alter_partition_refusal(&record) {
                        tracing::debug!(index = entry.index, %record, ?code, "refused");
                    }
                    let applied = self.state.apply(entry.index, Some(&record));
                    let partition_change = record.partition_epoch().is_some();
                    if applied.changed && partition_change {
                        // One per partition: a fenced broker's many would flood the log.
                        tracing::debug!(index = entry.index, %record, "applied metadata record");
                    } else if applied.changed {
                        tracing::info!(index = entry.index, %record, "applied metadata record");
                    }
                    pending.catalog_changed |= applied.catalog_changed;
                    pending.security_changed |= applied.security_changed;
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
        if self.catalog_due_at.is_some_and(|at| self.state.applied_index >= at) {
            self.catalog_due_at = None;
            pending.catalog_changed = true;
        }
        if !pending.catalog_changed && !pending.security_changed && pending.outcomes.is_empty() {
            return;
        }
        self.hand_over(pending.outcomes).await;
    }

    /// Hands the controller the topics as the state has them, and the outcomes of a batch.
    async fn hand_over(&mut self, outcomes: Vec<(super::RequestId, super::TopicOutcome)>) {
        let committed = Committed {
            cluster_id: self.state.cluster_id.clone(),
            topics: self.state.topics.clone(),
            configs: self.state.configs.clone(),
            scram: self.state.scram.clone(),
            acls: self.state.acls.clone(),
            outcomes,
        };
        if self.committed.send(committed).await.is_err() {
            tracing::debug!("the controller no longer takes committed changes");
        }
    }

    /// Hands the view to every shard when it changed.
    fn publish(&self) {
        let raft = &self.node.raft;
        let leader = raft.state == StateRole::Leader;
        // A node's log end as this node knows it: its own last index, the leader's
        // `matched` for the others, else unknown.
        let log_end = |raft_id: u64| {
            if raft_id == self.me {
                Some(raft.raft_log.last_index())
            } else if leader {
                raft.prs().get(raft_id).map(|progress| progress.matched)
            } else {
                None
            }
        };
        let voters = self
            .quorum
            .voters
            .ids()
            .map(|id| VoterState { node_id: id, log_end_index: log_end(id.0 as u64) })
            .collect();
        let mut learners: Vec<u64> = raft.prs().conf().learners().iter().copied().collect();
        learners.sort_unstable();
        let observers = learners
            .into_iter()
            .map(|raft_id| VoterState {
                node_id: NodeId(raft_id as i32),
                log_end_index: log_end(raft_id),
            })
            .collect();
        let view = ClusterView {
            observers,
            leader_id: (raft.leader_id != raft::INVALID_ID).then(|| NodeId(raft.leader_id as i32)),
            term: raft.term,
            commit_index: raft.raft_log.committed,
            brokers: self.state.brokers.values().cloned().collect(),
            voters,
            voter_addresses: self.quorum.voters.voters().to_vec(),
            cluster_id: self.state.cluster_id.clone(),
            coordinators: self.state.coordinators(),
        };
        if self.cluster.view().as_deref() != Some(&view) {
            self.cluster.publish(view);
        }
    }
}

/// raft-rs's storage: `MemStorage` for the entries and states (filled from the journal and
/// each `Ready`), with the newest snapshot and its bytes, which raft-rs offers a follower
/// whose next entry was compacted away, and the previous one, still served to a follower
/// that began fetching it (`snapshot_fetch`): the entries after the previous snapshot stay
/// in `MemStorage`, so that follower catches up from the log once it has it. Shard 0 only
/// (`Rc`).
#[derive(Clone, Default)]
struct MetadataStorage {
    mem: MemStorage,
    snapshot: Rc<RefCell<Snapshot>>,
    previous: Rc<RefCell<Snapshot>>,
}

impl MetadataStorage {
    fn raft_state(&self) -> RaftState {
        // MemStorage's initial state is its current hard and conf states.
        self.mem.initial_state().unwrap_or_default()
    }

    /// Replaces the whole log with `snapshot` (at start, or a snapshot from the leader).
    fn install(&self, snapshot: Snapshot) {
        let index = snapshot.get_metadata().index;
        if let Err(e) = self.mem.wl().apply_snapshot(snapshot.clone()) {
            fatal(FatalReason::Runtime, format!("cannot install metadata snapshot {index}: {e}"));
        }
        *self.snapshot.borrow_mut() = snapshot;
        *self.previous.borrow_mut() = Snapshot::default();
    }

    /// A new snapshot taken: it is the one offered from now on, the one before it is still
    /// served, and the log keeps the entries after that previous one (after the new one when
    /// there is none: the first snapshot of this process that is not a start's). `entries`
    /// are those after the new snapshot; the hard state is kept (installing a snapshot
    /// resets the commit index to it).
    fn compact(&self, snapshot: Snapshot, entries: &[Entry], hard_state: raft::prelude::HardState) {
        let previous = self.snapshot.borrow().clone();
        if previous.data.is_empty() {
            self.install(snapshot);
            let mut core = self.mem.wl();
            if let Err(e) = core.append(entries) {
                fatal(FatalReason::Runtime, format!("the metadata log refused entries: {e}"));
            }
            core.set_hardstate(hard_state);
            return;
        }
        let kept_from = previous.get_metadata().index + 1;
        let first = self.mem.first_index().unwrap_or(kept_from);
        if first < kept_from {
            let conf_state = self.raft_state().conf_state;
            let last = self.mem.last_index().unwrap_or(kept_from - 1);
            let context = GetEntriesContext::empty(false);
            let kept = match last >= kept_from {
                true => self.mem.entries(kept_from, last + 1, None, context),
                false => Ok(Vec::new()),
            };
            let kept = kept.unwrap_or_else(|e| {
                fatal(FatalReason::Runtime, format!("the metadata log lost entries: {e}"))
            });
            let mut bare = Snapshot::default();
            bare.set_metadata(previous.get_metadata().clone());
            let mut core = self.mem.wl();
            if let Err(e) = core.apply_snapshot(bare) {
                fatal(FatalReason::Runtime, format!("cannot compact the metadata log: {e}"));
            }
            if let Err(e) = core.append(&kept) {
                fatal(FatalReason::Runtime, format!("the metadata log refused entries: {e}"));
            }
            core.set_conf_state(conf_state);
            core.set_hardstate(hard_state);
        }
        *self.snapshot.borrow_mut() = snapshot;
        *self.previous.borrow_mut() = previous;
    }
}

impl Storage for MetadataStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        self.mem.initial_state()
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        self.mem.entries(low, high, max_size, context)
    }

    fn term(&self, index: u64) -> raft::Result<u64> {
        self.mem.term(index)
    }

    fn first_index(&self) -> raft::Result<u64> {
        self.mem.first_index()
    }

    fn last_index(&self) -> raft::Result<u64> {
        self.mem.last_index()
    }

    /// The newest snapshot, with its data (raft-rs asks when a follower's next entry is
    /// before the first index; there is always one then, compaction follows a snapshot).
    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        let snapshot = self.snapshot.borrow();
        if snapshot.data.is_empty() || snapshot.get_metadata().index < request_index {
            let unavailable = raft::StorageError::SnapshotTemporarilyUnavailable;
            return Err(raft::Error::Store(unavailable));
        }
        Ok(snapshot.clone())
    }
}

/// Adds `node` to a configuration's learners (a broker-only node's own view of itself).
fn add_learner(conf_state: &mut ConfState, node: u64) {
    if !conf_state.learners.contains(&node) {
        conf_state.learners.push(node);
    }
}

/// raft-rs's snapshot of the file `bytes` at `meta`.
fn raft_snapshot(meta: &SnapshotMeta, bytes: Vec<u8>) -> Snapshot {
    let mut snapshot = Snapshot { data: bytes.into(), ..Default::default() };
    let metadata = snapshot.mut_metadata();
    metadata.index = meta.index;
    metadata.term = meta.term;
    metadata.set_conf_state(meta.conf_state.clone());
    snapshot
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

#[cfg(test)]
mod tests {
    use raft::prelude::HardState;

    use super::*;

    fn snapshot_at(index: u64) -> Snapshot {
        let mut snapshot = Snapshot { data: vec![1].into(), ..Default::default() };
        snapshot.mut_metadata().index = index;
        snapshot.mut_metadata().term = 1;
        snapshot
    }

    fn entries(from: u64, to: u64) -> Vec<Entry> {
        (from..=to).map(|index| Entry { index, term: 1, ..Default::default() }).collect()
    }

    fn hard_state(commit: u64) -> HardState {
        HardState { term: 1, commit, ..Default::default() }
    }

    fn first(storage: &MetadataStorage) -> u64 {
        storage.first_index().expect("first index")
    }

    #[test]
    fn compaction_keeps_the_entries_after_the_previous_snapshot_only() {
        // Taken snapshots, from a log replayed whole (no snapshot loaded at start).
        let storage = MetadataStorage::default();
        storage.mem.wl().append(&entries(1, 400)).expect("append");
        storage.compact(snapshot_at(100), &entries(101, 400), hard_state(400));
        assert_eq!(first(&storage), 101, "the first snapshot of the process: after it");
        storage.compact(snapshot_at(200), &entries(201, 400), hard_state(400));
        assert_eq!(first(&storage), 101, "after the previous snapshot, 100");
        storage.compact(snapshot_at(300), &entries(301, 400), hard_state(400));
        assert_eq!(first(&storage), 201, "after the previous snapshot, 200");
        assert_eq!(storage.last_index().expect("last"), 400);
        assert_eq!(storage.raft_state().hard_state.commit, 400);
        assert_eq!(storage.snapshot(0, 2).expect("offered").get_metadata().index, 300);
        assert_eq!(storage.previous.borrow().get_metadata().index, 200);

        // A snapshot loaded at start (or installed from the leader), then two taken: the
        // log starts after the loaded one, then after the first taken one.
        let storage = MetadataStorage::default();
        storage.install(snapshot_at(100));
        storage.mem.wl().append(&entries(101, 400)).expect("append");
        storage.compact(snapshot_at(200), &entries(201, 400), hard_state(400));
        assert_eq!(first(&storage), 101, "after the loaded snapshot, 100");
        storage.compact(snapshot_at(300), &entries(301, 400), hard_state(400));
        assert_eq!(first(&storage), 201, "after the previous snapshot, 200");
        assert_eq!(storage.last_index().expect("last"), 400);
    }
}
