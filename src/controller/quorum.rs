//! Topic changes in a cluster: through the metadata log, from any node.
//!
//! ```text
//!   any node, shard 0                         every node, shard 0
//!   request -> checks, placement -> record    Raft driver applies committed records
//!     (RequestId) -> Cluster::propose --log--> (cluster::state decides the outcome)
//!     wait; no outcome after 500 ms or a new    -> Committed { topics, outcomes }
//!     leader: propose again, until the timeout  -> apply_committed: catalog and every shard
//!     (then REQUEST_TIMED_OUT)                     (ApplyTopic / RemovePartitions), then
//!   <- outcome, as this node applied it  <------   answer the waiting requests of this node
//! ```
//!
//! Why a follower proposes through raft-rs (which forwards a follower's proposal to the
//! leader it knows) rather than forwarding the client's request to the leader over the
//! controller transport: the records are self-contained (the proposer picks the topic id
//! and the placement) and their apply decides whether they take effect, so the leader has
//! nothing to decide and the answer must wait for this node's own apply anyway (a client
//! that created a topic through this node then finds it here). A second request protocol
//! would add a way to fail (a leader that took the request and died) without removing one:
//! raft-rs drops a proposal when no leader is known and a forwarded one can die with its
//! leader, which the retry covers in both designs; the state remembers request ids so that
//! a proposal committed twice takes effect once. Clients never see NOT_CONTROLLER.
//!
//! The checks that need no metadata (names, counts, configs against this node's defaults)
//! answer at once; placement uses the unfenced brokers in this node's view and their racks
//! (Kafka's rack-aware round-robin from a random start, `cluster::placement`; a fenced
//! broker is down or shutting down and would serve nothing). `validate_only` requests are
//! answered from the checks, never proposed.
//!
//! Lifecycle: the waiting requests live in the controller of shard 0; `apply_committed`
//! runs there from start to the end of the process. Concurrency: shard 0 only; one batch
//! of committed changes is applied at a time, in log order.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::channel::oneshot;
use futures::future::Either;
use glommio::channels::local_channel::LocalReceiver;

use super::TopicError;
use super::{
    partitions_added, producer_ids, Controller, ControllerRequest, CreateTopic, SecurityChange,
};
use crate::cluster::placement::{self, Candidate, Start};
use crate::cluster::TopicSummary;
use crate::cluster::{Committed, MetadataRecord, RequestId, TopicOutcome, TopicState};
use crate::constants::{
    CLUSTER_LIVE_BROKER_WAIT_MS_MAX, CLUSTER_PROPOSAL_POLL_MS, CLUSTER_PROPOSAL_RETRY_MS,
    CLUSTER_RECORD_CONFIG_BYTES_MAX, CLUSTER_REQUEST_TIMEOUT_MS_DEFAULT, PRODUCER_ID_BLOCK_SIZE,
    PRODUCER_ID_BLOCK_WAIT_MS,
};
use crate::model::{ErrorCode, LeaderEpoch, NodeId, PartitionEpoch, ProducerId};
use crate::partition::{PartitionRequest, PartitionResponse};
use crate::security::ToLog;
use crate::shard::catalog::{PartitionLeader, TopicMeta};
use crate::shard::internal_log::{self, INTERNAL_TOPICS};

/// The requests of this node waiting for their records, by request id.
pub(super) struct Proposals {
    next_serial: Cell<u64>,
    waiting: RefCell<HashMap<RequestId, oneshot::Sender<TopicOutcome>>>,
}

impl Proposals {
    pub(super) fn new() -> Proposals {
        // A random start (see `RequestId`), with room below u64::MAX for any run.
        let random =
            u64::from_be_bytes(uuid::Uuid::new_v4().as_bytes()[..8].try_into().unwrap_or_default());
        Proposals { next_serial: Cell::new(random >> 1), waiting: RefCell::new(HashMap::new()) }
    }
}

impl Controller {
    /// A topic change of a clustered node: checked, proposed, answered once applied here.
    pub(super) async fn change_through_log(
        &self,
        request: ControllerRequest,
    ) -> Result<TopicMeta, TopicError> {
        // The replicated internal topics are on the log but not the clients' to change:
        // as on a single node, where they are no topics at all.
        let internal = match &request {
            ControllerRequest::DeleteTopic { name, .. }
            | ControllerRequest::CreatePartitions { name, .. }
            | ControllerRequest::AlterTopicConfig { name, .. } => {
                INTERNAL_TOPICS.contains(&&**name)
            }
            _ => false,
        };
        if internal {
            return Err(TopicError {
                code: ErrorCode::UnknownTopicOrPartition,
                message: "no topic of that name".into(),
            });
        }
        match request {
            ControllerRequest::CreateTopic(create) => self.create_topic_through_log(create).await,
            ControllerRequest::DeleteTopic { name, timeout_ms } => {
                let record = |request| MetadataRecord::DeleteTopic { request, name };
                let summary = self.propose_and_wait(record, deadline(timeout_ms)).await?;
                Ok(self.meta_of(summary))
            }
            ControllerRequest::CreatePartitions {
                name,
                count,
                assignments,
                validate_only,
                timeout_ms,
            } => {
                let deadline = deadline(timeout_ms);
                let mut meta = self.existing_topic(&name)?;
                let current = meta.partitions;
                let added =
                    partitions_added(&name, current, count, assignments.as_ref().map(Vec::len))?;
                let brokers = self.live_brokers(deadline).await?;
                // New partitions get as many replicas as the topic's first one has.
                let factor = meta.placement(0).map_or(1, |placement| placement.replicas.len());
                let replicas = match assignments {
                    Some(given) => brokers.check_assigned(given)?,
                    None => {
                        brokers.check_factor(factor)?;
                        // Kafka continues from partition 0's first replica.
                        let first = meta.placement(0).and_then(|p| p.replicas.first().copied());
                        let start = first.map_or(Start { index: 0, shift: 0 }, |first| {
                            Start::after(first, &brokers.candidates)
                        });
                        let first_new = current as usize;
                        placement::assign(&brokers.candidates, first_new, added, factor, start)
                    }
                };
                let mut all = meta.leaders.to_vec();
                all.extend(replicas.iter().map(|set| new_placement(set)));
                meta.partitions = count;
                meta.leaders = all.into();
                if validate_only {
                    return Ok(meta);
                }
                self.check_space()?;
                let record =
                    |request| MetadataRecord::CreatePartitions { request, name, count, replicas };
                let summary = self.propose_and_wait(record, deadline).await?;
                Ok(self.meta_of(summary))
            }
            ControllerRequest::AlterTopicConfig { name, overrides, validate_only } => {
                if let Err(message) = self.topic_defaults().with_overrides(&overrides) {
                    return Err(TopicError { code: ErrorCode::InvalidConfig, message });
                }
                check_value_lengths(&overrides)?;
                if validate_only {
                    return self.existing_topic(&name);
                }
                let record =
                    |request| MetadataRecord::AlterTopicConfig { request, name, overrides };
                let summary = self.propose_and_wait(record, deadline(0)).await?;
                Ok(self.meta_of(summary))
            }
            ControllerRequest::ElectLeader { name, partition, election, timeout_ms } => {
                let record =
                    |request| MetadataRecord::ElectLeader { request, name, partition, election };
                let summary = self.propose_and_wait(record, deadline(timeout_ms)).await?;
                Ok(self.meta_of(summary))
            }
            ControllerRequest::AlterReassignment {
                name,
                partition,
                target,
                allow_factor_change,
                timeout_ms,
            } => {
                let record = |request| MetadataRecord::AlterReassignment {
                    request,
                    name,
                    partition,
                    allow_factor_change,
                    target,
                };
                let summary = self.propose_and_wait(record, deadline(timeout_ms)).await?;
                Ok(self.meta_of(summary))
            }
            ControllerRequest::UnregisterBroker { node_id } => {
                let record = |request| MetadataRecord::UnregisterBroker { request, node_id };
                let summary = self.propose_and_wait(record, deadline(0)).await?;
                Ok(self.meta_of(summary))
            }
            ControllerRequest::AllocateProducerId
            | ControllerRequest::AlterConfigs { .. }
            | ControllerRequest::Security(_) => unreachable!("not a topic change"),
        }
    }

    /// A producer id from this node's blocks (Kafka's RPCProducerIdManager), asking the
    /// log for the next block first when due. With no id left it waits for the block asked
    /// for, up to `PRODUCER_ID_BLOCK_WAIT_MS`, then answers COORDINATOR_LOAD_IN_PROGRESS
    /// (Kafka's answer while its block has not come; clients retry).
    pub(super) async fn producer_id_from_blocks(self: &Rc<Self>) -> Result<ProducerId, ErrorCode> {
        let deadline = Instant::now() + Duration::from_millis(PRODUCER_ID_BLOCK_WAIT_MS);
        loop {
            let id = self.producer_id_blocks.borrow_mut().take();
            self.ask_for_producer_ids();
            if let Some(id) = id {
                return Ok(id);
            }
            if Instant::now() >= deadline {
                return Err(ErrorCode::CoordinatorLoadInProgress);
            }
            glommio::timer::sleep(Duration::from_millis(CLUSTER_PROPOSAL_POLL_MS)).await;
        }
    }

    /// Starts a request for the next producer id block when one is due (`Blocks`).
    pub(super) fn ask_for_producer_ids(self: &Rc<Self>) {
        if !self.producer_id_blocks.borrow().wants_block() {
            return;
        }
        self.producer_id_blocks.borrow_mut().set_asking(true);
        glommio::spawn_local(self.clone().ask_producer_ids()).detach();
    }

    /// Proposes a ProducerIds record until it is applied here (again after a timeout), and
    /// keeps the block it gives (at once: the state gives blocks on demand). A refusal (ids
    /// exhausted) is asked again by the next InitProducerId, not before
    /// `CLUSTER_PROPOSAL_RETRY_MS`.
    async fn ask_producer_ids(self: Rc<Self>) {
        let data_dir = self.shard.config.data_dir.clone();
        let legacy_end =
            glommio::executor().spawn_blocking(move || producer_ids::legacy_end(&data_dir)).await;
        let legacy_end = match legacy_end {
            Ok(end) => end,
            Err(e) => {
                // Never guess: an unreadable file could hide ids this node handed out.
                tracing::error!("cannot ask for producer ids: {e}");
                glommio::timer::sleep(Duration::from_millis(CLUSTER_PROPOSAL_RETRY_MS)).await;
                self.producer_id_blocks.borrow_mut().set_asking(false);
                return;
            }
        };
        let block_size = PRODUCER_ID_BLOCK_SIZE as i32;
        loop {
            let record = |request| MetadataRecord::ProducerIds { request, legacy_end, block_size };
            match self.propose_and_wait(record, deadline(0)).await {
                Ok(TopicSummary { producer_ids: Some(block), .. }) => {
                    tracing::info!(first = block.first, size = block.size, "got producer ids");
                    self.producer_id_blocks.borrow_mut().add(block);
                }
                Ok(summary) => unreachable!("a ProducerIds record gives a block: {summary:?}"),
                Err(e) if e.code == ErrorCode::RequestTimedOut => continue,
                Err(e) => {
                    tracing::warn!(code = ?e.code, "no producer id block yet: {}", e.message);
                    glommio::timer::sleep(Duration::from_millis(CLUSTER_PROPOSAL_RETRY_MS)).await;
                }
            }
            break;
        }
        self.producer_id_blocks.borrow_mut().set_asking(false);
    }

    /// Dynamic configs of a broker or group resource in a cluster: a record on the metadata
    /// log (Kafka's ConfigRecord), applied by every node (`apply_committed`).
    pub(super) async fn alter_configs_through_log(
        &self,
        resource_type: i8,
        name: String,
        configs: BTreeMap<String, String>,
    ) -> Result<(), TopicError> {
        check_config_bytes(&configs)?;
        let record =
            |request| MetadataRecord::AlterConfigs { request, resource_type, name, configs };
        self.propose_and_wait(record, deadline(0)).await.map(|_| ())
    }

    /// SCRAM credential and ACL changes in a cluster: one record each, proposed together
    /// and answered once this node applied them (its authenticator and authorizer have
    /// them then).
    pub(super) async fn change_security_through_log(
        &self,
        changes: Vec<SecurityChange>,
    ) -> Vec<Result<(), TopicError>> {
        let proposals = changes.into_iter().map(|change| {
            let record = move |request| change.record(request);
            async move { self.propose_and_wait(record, deadline(0)).await.map(|_| ()) }
        });
        futures::future::join_all(proposals).await
    }

    /// Carries this node's credentials and ACLs files (from before the log held them) and
    /// the bootstrap credentials to the log (`security::ToLog`), retrying until each is
    /// applied; then renames the files `*.migrated`, so they are carried once.
    pub(super) async fn carry_security_to_log(self: Rc<Self>, to_log: ToLog) {
        let ToLog { scram, acls, bootstrap, files } = to_log;
        let mut records: Vec<Box<dyn Fn(RequestId) -> MetadataRecord>> = Vec::new();
        let credentials = scram.into_iter();
        let bootstrapped = bootstrap.iter().map(|c| ((c.user.clone(), c.mechanism), c.salted()));
        for ((user, mechanism), credential) in credentials.chain(bootstrapped) {
            records.push(Box::new(move |request| MetadataRecord::ScramCredential {
                request,
                user: user.clone(),
                mechanism,
                credential: credential.clone(),
                if_absent: true,
            }));
        }
        let acl_count = acls.len();
        for acl in acls {
            records.push(Box::new(move |request| MetadataRecord::AccessControlEntry {
                request,
                acl: acl.clone(),
            }));
        }
        if records.is_empty() && files.is_empty() {
            // Nothing of this node's own: logins open with the first applied batch.
            self.security_carried.set(true);
            return;
        }
        let count = records.len();
        for make in &records {
            loop {
                match self.propose_and_wait(make, deadline(0)).await {
                    Ok(_) => break,
                    Err(e) => {
                        let message = &e.message;
                        tracing::debug!(code = ?e.code, "carrying credentials and ACLs: {message}");
                        glommio::timer::sleep(Duration::from_millis(CLUSTER_PROPOSAL_RETRY_MS))
                            .await;
                    }
                }
            }
        }
        tracing::info!(
            records = count,
            acls = acl_count,
            bootstrap = bootstrap.len(),
            "SCRAM credentials and ACLs of this node are on the metadata log"
        );
        // Applied here too: `propose_and_wait` answers after this node's apply.
        self.security_carried.set(true);
        self.security.mark_scram_ready();
        let renamed = glommio::executor()
            .spawn_blocking(move || {
                for file in &files {
                    std::fs::rename(file, file.with_extension("migrated"))?;
                }
                Ok::<_, std::io::Error>(files)
            })
            .await;
        match renamed {
            Ok(files) if !files.is_empty() => {
                tracing::info!(?files, "renamed the node's credentials and ACL files (*.migrated)")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("cannot rename the carried credentials or ACL files: {e}"),
        }
    }

    async fn create_topic_through_log(&self, create: CreateTopic) -> Result<TopicMeta, TopicError> {
        let mut meta = self.check_new_topic(&create)?;
        check_value_lengths(&create.overrides)?;
        let deadline = deadline(create.timeout_ms);
        let brokers = self.live_brokers(deadline).await?;
        let replicas = if create.assignments.is_empty() {
            let factor = match create.replication_factor {
                -1 => 1,
                factor => usize::try_from(factor).unwrap_or(1),
            };
            brokers.check_factor(factor)?;
            // Kafka's AdminUtils draws the start at random.
            let start = Start::random(uuid::Uuid::new_v4().as_u128(), brokers.candidates.len());
            let count = meta.partitions as usize;
            placement::assign(&brokers.candidates, 0, count, factor, start)
        } else {
            brokers.check_assigned(create.assignments)?
        };
        meta.leaders = replicas.iter().map(|set| new_placement(set)).collect();
        if create.validate_only {
            self.check_name_free(&create.name)?;
            return Ok(meta);
        }
        self.check_space()?;
        let record = |request| MetadataRecord::CreateTopic {
            request,
            name: create.name,
            topic_id: meta.id,
            replicas,
            overrides: create.overrides,
        };
        let summary = self.propose_and_wait(record, deadline).await?;
        Ok(self.meta_of(summary))
    }

    /// The brokers as this node's view of the log has them, the unfenced ones sorted. While
    /// none is unfenced (a cluster forming, brokers still to send their first heartbeat)
    /// it waits, until `deadline` and at most `CLUSTER_LIVE_BROKER_WAIT_MS_MAX`; then, with
    /// brokers registered but all fenced, INVALID_REPLICATION_FACTOR as Kafka's replica
    /// placer answers ("All brokers are currently fenced"), and with none registered yet
    /// REQUEST_TIMED_OUT.
    async fn live_brokers(&self, deadline: Instant) -> Result<Brokers, TopicError> {
        let deadline =
            deadline.min(Instant::now() + Duration::from_millis(CLUSTER_LIVE_BROKER_WAIT_MS_MAX));
        loop {
            let view = self.cluster.view();
            let registered: Vec<NodeId> =
                view.iter().flat_map(|view| view.brokers.iter().map(|b| b.node_id)).collect();
            let candidates: Vec<Candidate> = view
                .iter()
                .flat_map(|view| view.live_brokers())
                .map(|b| Candidate { node_id: b.node_id, rack: b.rack.clone() })
                .collect();
            if !candidates.is_empty() {
                let live = candidates.iter().map(|c| c.node_id).collect();
                return Ok(Brokers { live, registered, candidates });
            }
            if Instant::now() >= deadline {
                return Err(match registered.len() {
                    0 => TopicError {
                        code: ErrorCode::RequestTimedOut,
                        message: "no broker is registered in the metadata log yet".into(),
                    },
                    count => TopicError {
                        code: ErrorCode::InvalidReplicationFactor,
                        message: format!(
                            "all {count} registered brokers are currently fenced (none \
                             heartbeats to the active controller); try again later"
                        ),
                    },
                });
            }
            glommio::timer::sleep(Duration::from_millis(CLUSTER_PROPOSAL_POLL_MS)).await;
        }
    }

    /// Proposes the record `make` builds for a new request id, again every
    /// `CLUSTER_PROPOSAL_RETRY_MS` or when a new leader is known, until this node applied
    /// it, and gives its outcome; at
    /// `deadline`, REQUEST_TIMED_OUT (the record may still commit later, as in Kafka).
    async fn propose_and_wait(
        &self,
        make: impl FnOnce(RequestId) -> MetadataRecord,
        deadline: Instant,
    ) -> Result<TopicSummary, TopicError> {
        let serial = self.proposals.next_serial.get();
        self.proposals.next_serial.set(serial.wrapping_add(1));
        let request = RequestId { node_id: self.shard.config.node_id, serial };
        let record = make(request);
        let (sender, mut outcome) = oneshot::channel();
        self.proposals.waiting.borrow_mut().insert(request, sender);
        let mut attempts = 0u32;
        let mut proposed_at: Option<(Instant, Option<NodeId>)> = None;
        loop {
            // Proposed again after the retry interval, and at once when a new leader is
            // known (the last proposal may have gone to a leader that died with it).
            let leader = self.cluster.view().and_then(|view| view.leader_id);
            let due = match proposed_at {
                None => true,
                Some((at, to)) => {
                    at.elapsed() >= Duration::from_millis(CLUSTER_PROPOSAL_RETRY_MS)
                        || (leader.is_some() && leader != to)
                }
            };
            if due {
                attempts += 1;
                proposed_at = Some((Instant::now(), leader));
                if !self.cluster.propose(&record) {
                    tracing::debug!(%request, "the Raft driver did not take the proposal");
                }
            }
            let wait = deadline.saturating_duration_since(Instant::now());
            let wait = wait.min(Duration::from_millis(CLUSTER_PROPOSAL_POLL_MS));
            let timer = Box::pin(glommio::timer::sleep(wait));
            match futures::future::select(&mut outcome, timer).await {
                Either::Left((Ok(outcome), _)) => {
                    tracing::debug!(%request, attempts, "topic request applied");
                    return outcome.map_err(|refusal| TopicError {
                        code: refusal.code,
                        message: refusal.message,
                    });
                }
                Either::Left((Err(_), _)) => {
                    return Err(TopicError {
                        code: ErrorCode::UnknownServerError,
                        message: "the controller stopped".into(),
                    })
                }
                Either::Right(_) if Instant::now() >= deadline => {
                    self.proposals.waiting.borrow_mut().remove(&request);
                    tracing::warn!(%request, attempts, "topic request not applied in time");
                    return Err(TopicError {
                        code: ErrorCode::RequestTimedOut,
                        message: "the metadata log did not commit the change in time (no \
                                  controller leader?); it may still take effect"
                            .into(),
                    });
                }
                Either::Right(_) => {}
            }
        }
    }

    /// The topic an outcome names, with this node's defaults under its overrides.
    fn meta_of(&self, summary: TopicSummary) -> TopicMeta {
        let leaders = match self.shard.catalog.borrow().get(&summary.name) {
            Some(meta) if meta.id == summary.topic_id => meta.leaders.clone(),
            _ => Arc::from([]),
        };
        let config = self.topic_config(&summary.name, &summary.overrides);
        TopicMeta {
            name: summary.name.into(),
            id: summary.topic_id,
            partitions: summary.partitions,
            overrides: summary.overrides,
            config,
            leaders,
        }
    }

    fn topic_config(
        &self,
        name: &str,
        overrides: &BTreeMap<String, String>,
    ) -> crate::model::topic::TopicConfig {
        let defaults = &self.topic_defaults();
        if INTERNAL_TOPICS.contains(&name) {
            // Kept until compaction cuts them, never by age or size, written in segments of
            // `--offsets-topic-segment-bytes` as on a single node; acks=all with the broker's
            // min.insync.replicas, as Kafka's coordinators write them.
            let segment_bytes = self.shard.config.groups.offsets_segment_bytes;
            let mut config = internal_log::log_config(segment_bytes, defaults.durability);
            config.min_insync_replicas = defaults.min_insync_replicas;
            return config;
        }
        defaults.with_overrides(overrides).unwrap_or_else(|e| {
            tracing::warn!(topic = name, "committed topic configs do not apply here ({e})");
            defaults.clone()
        })
    }

    /// Applies committed topic changes in log order, then answers this node's requests
    /// they decided. Runs on shard 0 of a clustered node until the process ends.
    pub(super) async fn apply_committed(self: Rc<Self>, committed: LocalReceiver<Committed>) {
        while let Some(batch) = committed.recv().await {
            // The credentials and the ACLs before the outcomes: a client told its change is
            // done finds it here.
            if self.security.scram.replace(&batch.scram) {
                tracing::debug!(
                    credentials = batch.scram.len(),
                    "SCRAM credentials (metadata log)"
                );
            }
            if self.security.acls.replace(&batch.acls) {
                tracing::debug!(acls = batch.acls.len(), "ACLs (metadata log)");
            }
            if self.security_carried.get() {
                self.security.mark_scram_ready();
            }
            // New dynamic configs first: the topics below take their defaults.
            if batch.configs != self.shard.catalog.borrow().configs {
                let changed = self.adopt_configs(batch.configs);
                self.broadcast_configs(changed).await;
            }
            let failed = self.apply_topics(&batch.topics).await;
            for (request, outcome) in batch.outcomes {
                let outcome = match outcome {
                    Ok(summary) if failed.contains(&summary.name) => Err(crate::cluster::Refusal {
                        code: ErrorCode::KafkaStorageError,
                        message: format!(
                            "committed, but this node cannot open the logs of {}",
                            summary.name
                        ),
                    }),
                    outcome => outcome,
                };
                let waiter = self.proposals.waiting.borrow_mut().remove(&request);
                if let Some(waiter) = waiter {
                    let _ = waiter.send(outcome);
                }
            }
        }
    }

    /// Makes the catalog and every shard match `topics` (the log's): topics gone (or
    /// created again under their name: another id) are removed with their logs first, then
    /// new and changed ones are applied. Returns the topics a shard could not apply (a log
    /// that would not open); they stay in the catalog, as the log says.
    async fn apply_topics(&self, topics: &BTreeMap<String, TopicState>) -> BTreeSet<String> {
        let current: Vec<(Arc<str>, [u8; 16])> =
            self.shard.catalog.borrow().topics.values().map(|m| (m.name.clone(), m.id)).collect();
        for (name, id) in current {
            if topics.get(&*name).is_some_and(|topic| topic.topic_id == id) {
                continue;
            }
            self.shard.catalog.borrow_mut().remove(&name);
            let name = name.to_string();
            self.partitions
                .broadcast(|| PartitionRequest::RemovePartitions { name: name.clone(), from: 0 })
                .await;
            tracing::info!(topic = %name, "removed topic (metadata log)");
        }
        let mut failed = BTreeSet::new();
        for (name, topic) in topics {
            let leaders = topic.partitions.iter().map(|partition| PartitionLeader {
                replicas: partition.replicas.as_slice().into(),
                isr: partition.isr.as_slice().into(),
                leader: partition.leader,
                leader_epoch: partition.leader_epoch,
                partition_epoch: partition.partition_epoch,
                adding: partition.adding.as_slice().into(),
                removing: partition.removing.as_slice().into(),
            });
            let meta = TopicMeta {
                name: name.as_str().into(),
                id: topic.topic_id,
                partitions: topic.partitions.len() as i32,
                overrides: topic.overrides.clone(),
                config: self.topic_config(name, &topic.overrides),
                leaders: leaders.collect(),
            };
            let unchanged = self.shard.catalog.borrow().get(name).is_some_and(|known| {
                known.partitions == meta.partitions
                    && known.overrides == meta.overrides
                    && known.config == meta.config
                    && known.leaders == meta.leaders
            });
            if unchanged {
                continue;
            }
            self.shard.catalog.borrow_mut().apply(meta.clone());
            let me = self.shard.config.node_id;
            let led = (0..meta.partitions).filter(|p| meta.is_led_by(*p, me)).count();
            let copy = meta.clone();
            let answers =
                self.partitions.broadcast(move || PartitionRequest::ApplyTopic(copy.clone())).await;
            for answer in answers {
                if let Some(PartitionResponse::Applied(Err(message))) = answer {
                    tracing::error!(topic = %name, "cannot apply a committed topic: {message}");
                    failed.insert(name.clone());
                }
            }
            let leaderless = meta.leaders.iter().filter(|p| p.leader == NodeId::NONE).count();
            tracing::info!(
                topic = %name,
                partitions = meta.partitions,
                led_here = led,
                leaderless,
                "applied topic (metadata log)"
            );
        }
        failed
    }
}

/// The brokers a placement chooses from.
struct Brokers {
    /// Unfenced, sorted by node id.
    live: Vec<NodeId>,
    registered: Vec<NodeId>,
    /// The unfenced ones with their racks, where new replicas go (`cluster::placement`).
    candidates: Vec<Candidate>,
}

impl Brokers {
    /// Explicit assignments of a cluster: unfenced brokers for each partition (Kafka
    /// refuses an assignment to a fenced broker too).
    fn check_assigned(&self, given: Vec<Vec<NodeId>>) -> Result<Vec<Vec<NodeId>>, TopicError> {
        let refuse =
            |message| Err(TopicError { code: ErrorCode::InvalidReplicaAssignment, message });
        let all = || given.iter().flatten();
        if let Some(broker) = all().find(|broker| !self.registered.contains(broker)) {
            return refuse(format!("broker {broker} is not registered in the cluster"));
        }
        if let Some(broker) = all().find(|broker| !self.live.contains(broker)) {
            return refuse(format!("broker {broker} is fenced (not heartbeating)"));
        }
        Ok(given)
    }

    /// A replication factor the unfenced brokers can place, in Kafka's words otherwise.
    fn check_factor(&self, factor: usize) -> Result<(), TopicError> {
        if factor <= self.live.len() {
            return Ok(());
        }
        Err(TopicError {
            code: ErrorCode::InvalidReplicationFactor,
            message: format!(
                "Unable to replicate the partition {factor} time(s): The target replication \
                 factor of {factor} cannot be reached because only {} broker(s) are registered \
                 and unfenced.",
                self.live.len()
            ),
        })
    }
}

/// Configs a metadata record can hold: more than `CLUSTER_RECORD_CONFIG_BYTES_MAX` of names
/// and values in one record (a topic's overrides, a resource's whole set) are refused with
/// INVALID_CONFIG, so that the record's entry fits a controller frame (appends are not
/// chunked). A single value may be longer than a record's u16 string (records then carry
/// it as a long string, `records`). Kafka bounds a controller's record batch (8 MiB), not
/// a value.
fn check_value_lengths(overrides: &BTreeMap<String, String>) -> Result<(), TopicError> {
    // Delayed delivery keeps its pending records in a per-partition delay log on the leader's
    // disk, which is not replicated: a cluster refuses to turn it on (Known gaps).
    let delayed = overrides.get(crate::model::delay::DELIVERY_DELAY_CONFIG);
    if delayed.is_some_and(|value| value.trim() != "-1") {
        return Err(TopicError {
            code: ErrorCode::InvalidConfig,
            message: format!(
                "{} is not available in clustered mode: the delay log is not replicated",
                crate::model::delay::DELIVERY_DELAY_CONFIG
            ),
        });
    }
    check_config_bytes(overrides)
}

/// INVALID_CONFIG when `configs` would not fit one record (see `check_value_lengths`).
fn check_config_bytes(overrides: &BTreeMap<String, String>) -> Result<(), TopicError> {
    let size: usize = overrides.iter().map(|(name, value)| name.len() + value.len()).sum();
    if size <= CLUSTER_RECORD_CONFIG_BYTES_MAX {
        return Ok(());
    }
    let longest = overrides.iter().max_by_key(|(_, value)| value.len());
    let longest = longest.map(|(name, value)| format!(" (the longest, {name}: {})", value.len()));
    Err(TopicError {
        code: ErrorCode::InvalidConfig,
        message: format!(
            "the configs are {size} bytes{}; a cluster stores at most {} per resource",
            longest.unwrap_or_default(),
            CLUSTER_RECORD_CONFIG_BYTES_MAX
        ),
    })
}

/// A new partition's placement as a proposer sees it (the record's apply decides).
fn new_placement(replicas: &[NodeId]) -> PartitionLeader {
    PartitionLeader {
        replicas: replicas.into(),
        isr: replicas.into(),
        leader: replicas.first().copied().unwrap_or(NodeId::NONE),
        leader_epoch: LeaderEpoch::INITIAL,
        partition_epoch: PartitionEpoch::INITIAL,
        adding: Arc::from([]),
        removing: Arc::from([]),
    }
}

/// When a request of `timeout_ms` gives up (<= 0: the default).
fn deadline(timeout_ms: i32) -> Instant {
    let timeout_ms = match u64::try_from(timeout_ms) {
        Ok(timeout_ms) if timeout_ms > 0 => timeout_ms,
        _ => CLUSTER_REQUEST_TIMEOUT_MS_DEFAULT,
    };
    Instant::now() + Duration::from_millis(timeout_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_beyond_a_record_are_refused_and_long_values_within_it_are_not() {
        let with = |length: usize| BTreeMap::from([("flush.ms".to_string(), "1".repeat(length))]);
        assert!(check_value_lengths(&BTreeMap::new()).is_ok());
        // Longer than a record's u16 string: kept whole (record version 1).
        let longer_than_a_string = crate::cluster::records::STRING_BYTES_MAX + 1;
        assert!(check_value_lengths(&with(longer_than_a_string)).is_ok());
        let name_bytes = "flush.ms".len();
        assert!(check_value_lengths(&with(CLUSTER_RECORD_CONFIG_BYTES_MAX - name_bytes)).is_ok());
        let too_long = with(CLUSTER_RECORD_CONFIG_BYTES_MAX - name_bytes + 1);
        let refused = check_value_lengths(&too_long).unwrap_err();
        assert_eq!(refused.code, ErrorCode::InvalidConfig);
        assert!(refused.message.contains("flush.ms"), "{}", refused.message);
    }
}
