//! The controller: topic creation, deletion, partition growth and config changes, leader
//! elections and partition reassignments (ElectLeaders, AlterPartitionReassignments), and
//! producer ids. It lives on every shard but serves on shard 0 (`CONTROLLER`) only: other
//! shards reach it through its mesh. A topic change is applied to the controller's catalog,
//! written to the catalog file, then applied on every shard (`PartitionRequest::ApplyTopic`
//! and `RemovePartitions`) before it is answered.
//!
//! Clustered (`--controller-quorum-voters`), topic changes go through the metadata log
//! instead (`quorum`): shard 0 of the node the client asked checks the request, places the
//! partitions, proposes a record to the log and answers with the outcome its apply decided,
//! once this node has applied it; and it applies every committed topic change to its catalog
//! and to every shard (the same `ApplyTopic` and `RemovePartitions`), opening only the logs
//! of partitions this node leads. The catalog file is not written then: the log is the
//! source of truth, replayed at every start.
//!
//! Lifecycle: built on every shard at start; nothing to open or close (the catalog file is
//! read by the broker before the shards start); `start` runs the clustered apply task on
//! shard 0. Concurrency: shard-local; catalog writes are serialized by `catalog_writes`.

pub mod producer_ids;
mod quorum;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

use crate::cluster::records::Election;
use crate::cluster::state::MetadataState;
use crate::cluster::{Cluster, MetadataRecord, RequestId};
use crate::constants;
use crate::model::dynamic_config::DynamicConfigs;
use crate::model::topic::{validate_topic_name, TopicConfig};
use crate::model::{ErrorCode, NodeId, ProducerId, ShardId};
use crate::partition::{PartitionRequest, PartitionResponse, Partitions};
use crate::security::acl::{AclBinding, AclFilter};
use crate::security::credentials::{Change as ScramChange, ChangeError};
use crate::security::Security;
use crate::shard::catalog::{self, TopicMeta};
use crate::shard::internal_log::INTERNAL_TOPICS;
use crate::shard::mesh::{Mesh, Served, Service};
use crate::shard::{Shard, CONTROLLER};

#[derive(Debug)]
pub enum ControllerRequest {
    CreateTopic(CreateTopic),
    DeleteTopic {
        name: String,
        /// Clustered: how long to wait for the change to be applied (<= 0: the default).
        timeout_ms: i32,
    },
    CreatePartitions {
        name: String,
        count: i32,
        /// The new partitions' replicas (a list each), if the request assigned them: Kafka
        /// wants one per new partition.
        assignments: Option<Vec<Vec<NodeId>>>,
        validate_only: bool,
        timeout_ms: i32,
    },
    /// Replace a topic's config overrides (AlterConfigs and IncrementalAlterConfigs compute
    /// the new set).
    AlterTopicConfig {
        name: String,
        overrides: BTreeMap<String, String>,
        validate_only: bool,
    },
    /// Replace the dynamic configs of a broker or group resource (checked by the caller;
    /// `model::dynamic_config`); the topics take the new defaults.
    AlterConfigs {
        resource_type: i8,
        name: String,
        configs: BTreeMap<String, String>,
    },
    /// A producer id never handed out before (InitProducerId).
    AllocateProducerId,
    /// ElectLeaders of one partition (the answer's topic is of no use to the caller).
    ElectLeader {
        name: String,
        partition: i32,
        election: Election,
        timeout_ms: i32,
    },
    /// UnregisterBroker (clustered only: a single node does not serve it).
    UnregisterBroker {
        node_id: NodeId,
    },
    /// Clustered: SCRAM credential and ACL changes, each a record on the metadata log
    /// (`quorum`), answered one by one.
    Security(Vec<SecurityChange>),
    /// AlterPartitionReassignments of one partition: a new target, or a cancel (None).
    AlterReassignment {
        name: String,
        partition: i32,
        target: Option<Vec<NodeId>>,
        allow_factor_change: bool,
        timeout_ms: i32,
    },
}

#[derive(Debug)]
pub enum ControllerResponse {
    Topic(Result<TopicMeta, TopicError>),
    /// A producer id, or the Kafka error code to answer.
    ProducerId(Result<ProducerId, ErrorCode>),
    /// The outcome of AlterConfigs of a broker or group resource.
    Configs(Result<(), TopicError>),
    /// The outcome of each `SecurityChange`, in order.
    Security(Vec<Result<(), TopicError>>),
}

/// One change of the SCRAM credentials or the ACLs (AlterUserScramCredentials, CreateAcls,
/// DeleteAcls).
#[derive(Debug, Clone)]
pub enum SecurityChange {
    Scram(ScramChange),
    AddAcl(AclBinding),
    RemoveAcl(AclBinding),
}

impl SecurityChange {
    /// Its record on the metadata log (Kafka's UserScramCredentialRecord and
    /// RemoveUserScramCredentialRecord, AccessControlEntryRecord and
    /// RemoveAccessControlEntryRecord).
    fn record(self, request: RequestId) -> MetadataRecord {
        match self {
            SecurityChange::Scram(ScramChange::Upsert { user, mechanism, credential }) => {
                MetadataRecord::ScramCredential {
                    request,
                    user,
                    mechanism,
                    credential,
                    if_absent: false,
                }
            }
            SecurityChange::Scram(ScramChange::Delete { user, mechanism }) => {
                MetadataRecord::RemoveScramCredential { request, user, mechanism }
            }
            SecurityChange::AddAcl(acl) => MetadataRecord::AccessControlEntry { request, acl },
            SecurityChange::RemoveAcl(acl) => {
                MetadataRecord::RemoveAccessControlEntry { request, acl }
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct CreateTopic {
    pub name: String,
    pub partitions: i32,
    pub overrides: BTreeMap<String, String>,
    pub validate_only: bool,
    /// Each partition's replicas, when the request assigned them; empty: placed by the
    /// controller.
    pub assignments: Vec<Vec<NodeId>>,
    /// Replicas per partition when placed by the controller (-1: the default, 1).
    pub replication_factor: i16,
    /// Clustered: how long to wait for the change to be applied (<= 0: the default).
    pub timeout_ms: i32,
}

#[derive(Debug, Clone)]
pub struct TopicError {
    pub code: ErrorCode,
    pub message: String,
}

pub struct Controller {
    shard: Rc<Shard>,
    mesh: Mesh<Controller>,
    partitions: Rc<Partitions>,
    producer_ids: producer_ids::ProducerIdAllocator,
    /// Clustered: the producer id blocks from the metadata log (shard 0).
    producer_id_blocks: RefCell<producer_ids::Blocks>,
    /// Held while the controller writes the catalog file: one write at a time, each of the
    /// catalog as it is when its turn comes.
    catalog_writes: futures::lock::Mutex<()>,
    cluster: Rc<Cluster>,
    /// Clustered: the requests waiting for their records to be applied.
    proposals: quorum::Proposals,
    /// The credentials and ACLs of the process (clustered: set from the log on shard 0).
    security: Arc<Security>,
    /// Clustered: this start's credentials are on the metadata log (or there were none to
    /// carry), so SCRAM logins open once a committed batch is applied (`Security::scram_ready`).
    security_carried: std::cell::Cell<bool>,
}

impl Service for Controller {
    type Request = ControllerRequest;
    type Response = ControllerResponse;

    fn mesh(&self) -> &Mesh<Controller> {
        &self.mesh
    }

    fn serve(
        self: &Rc<Self>,
        _from: ShardId,
        request: ControllerRequest,
    ) -> Served<Self::Response> {
        use ControllerRequest as Q;
        use ControllerResponse as R;
        assert_eq!(self.shard.id, CONTROLLER, "controller requests go to shard 0");
        let this = self.clone();
        Served::Later(Box::pin(async move {
            if let Q::AlterConfigs { resource_type, name, configs } = request {
                return R::Configs(this.alter_configs(resource_type, name, configs).await);
            }
            if let Q::Security(changes) = request {
                return R::Security(this.change_security_through_log(changes).await);
            }
            if this.cluster.clustered() && !matches!(request, Q::AllocateProducerId) {
                return R::Topic(this.change_through_log(request).await);
            }
            match request {
                Q::CreateTopic(create) => R::Topic(this.create_topic(create).await),
                Q::DeleteTopic { name, .. } => R::Topic(this.delete_topic(name).await),
                Q::CreatePartitions { name, count, assignments, validate_only, .. } => {
                    let assignments = assignments.map(|a| a.len());
                    R::Topic(this.create_partitions(name, count, assignments, validate_only).await)
                }
                Q::AlterTopicConfig { name, overrides, validate_only } => {
                    R::Topic(this.alter_topic_config(name, overrides, validate_only).await)
                }
                Q::AllocateProducerId if this.cluster.clustered() => {
                    R::ProducerId(this.producer_id_from_blocks().await)
                }
                Q::AllocateProducerId => R::ProducerId(this.allocate_producer_id().await),
                Q::AlterConfigs { .. } | Q::Security(_) => unreachable!("answered above"),
                Q::UnregisterBroker { .. } => R::Topic(Err(TopicError {
                    code: ErrorCode::InvalidRequest,
                    message: "a single node has no broker registrations".into(),
                })),
                Q::ElectLeader { name, partition, election, .. } => {
                    let record = |request| MetadataRecord::ElectLeader {
                        request,
                        name: name.clone(),
                        partition,
                        election,
                    };
                    R::Topic(this.answer_as_one_broker(&name, record))
                }
                Q::AlterReassignment { name, partition, target, allow_factor_change, .. } => {
                    let record = |request| MetadataRecord::AlterReassignment {
                        request,
                        name: name.clone(),
                        partition,
                        allow_factor_change,
                        target,
                    };
                    R::Topic(this.answer_as_one_broker(&name, record))
                }
            }
        }))
    }
}

impl Controller {
    pub fn new(
        shard: Rc<Shard>,
        mesh: Mesh<Controller>,
        partitions: Rc<Partitions>,
        cluster: Rc<Cluster>,
        security: Arc<Security>,
    ) -> Self {
        Controller {
            shard,
            mesh,
            partitions,
            producer_ids: producer_ids::ProducerIdAllocator::new(),
            producer_id_blocks: RefCell::new(producer_ids::Blocks::default()),
            catalog_writes: futures::lock::Mutex::new(()),
            cluster,
            proposals: quorum::Proposals::new(),
            security,
            security_carried: std::cell::Cell::new(false),
        }
    }

    /// Clustered, on shard 0: starts applying the committed topic changes of the metadata
    /// log. Nothing otherwise.
    pub fn start(self: &Rc<Self>) {
        if self.shard.id != CONTROLLER || !self.cluster.clustered() {
            return;
        }
        if let Some(committed) = self.cluster.take_committed() {
            glommio::spawn_local(self.clone().apply_committed(committed)).detach();
        }
        // The first block at once: the first InitProducerId need not wait for a commit, and
        // the request reports this node's legacy ids (see `cluster::state::ProducerIds`).
        self.ask_for_producer_ids();
        let to_log = self.security.to_log.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(to_log) = to_log {
            glommio::spawn_local(self.clone().carry_security_to_log(to_log)).detach();
        }
    }

    /// AlterUserScramCredentials' changes: in the credentials file on a single node, as
    /// records on the metadata log in a cluster. The result of each, in order.
    pub async fn change_scram(&self, changes: Vec<ScramChange>) -> Vec<Result<(), ChangeError>> {
        if !self.security.clustered {
            let security = self.security.clone();
            return glommio::executor().spawn_blocking(move || security.scram.apply(changes)).await;
        }
        let changes = changes.into_iter().map(SecurityChange::Scram).collect();
        self.change_security(changes)
            .await
            .into_iter()
            .map(|outcome| match outcome {
                Ok(()) => Ok(()),
                Err(e) if e.code == ErrorCode::ResourceNotFound => Err(ChangeError::NotFound),
                Err(e) => Err(ChangeError::Refused(e.code, e.message)),
            })
            .collect()
    }

    /// CreateAcls' valid creations: in the ACL file on a single node (all or none), as
    /// records on the metadata log in a cluster. The result of each, in order.
    pub async fn create_acls(&self, acls: Vec<AclBinding>) -> Vec<Result<(), TopicError>> {
        if !self.security.clustered {
            let count = acls.len();
            let store = self.security.acls.clone();
            let written = glommio::executor().spawn_blocking(move || store.create(&acls)).await;
            return match written {
                Ok(()) => vec![Ok(()); count],
                Err(e) => {
                    let error = TopicError { code: ErrorCode::UnknownServerError, message: e.0 };
                    vec![Err(error); count]
                }
            };
        }
        self.change_security(acls.into_iter().map(SecurityChange::AddAcl).collect()).await
    }

    /// DeleteAcls' valid filters: the ACLs each removed. Clustered, the filters select from
    /// the ACLs this node has applied, and each one selected is a removal record on the
    /// metadata log (as Kafka's controller turns a filter into RemoveAccessControlEntry
    /// records); an ACL whose removal did not commit fails the whole request.
    pub async fn delete_acls(
        &self,
        filters: Vec<AclFilter>,
    ) -> Result<Vec<Vec<AclBinding>>, TopicError> {
        if !self.security.clustered {
            let store = self.security.acls.clone();
            let removed = glommio::executor().spawn_blocking(move || store.delete(&filters)).await;
            return removed
                .map_err(|e| TopicError { code: ErrorCode::UnknownServerError, message: e.0 });
        }
        let current = self.security.acls.load();
        let removed: Vec<Vec<AclBinding>> = filters
            .iter()
            .map(|filter| {
                current.acls().iter().filter(|acl| filter.matches(acl)).cloned().collect()
            })
            .collect();
        let distinct: std::collections::BTreeSet<AclBinding> =
            removed.iter().flatten().cloned().collect();
        let changes = distinct.into_iter().map(SecurityChange::RemoveAcl).collect();
        for outcome in self.change_security(changes).await {
            outcome?;
        }
        Ok(removed)
    }

    /// Clustered: the changes through the controller on shard 0, one record each.
    async fn change_security(&self, changes: Vec<SecurityChange>) -> Vec<Result<(), TopicError>> {
        let count = changes.len();
        if count == 0 {
            return Vec::new();
        }
        match self.call(ControllerRequest::Security(changes)).await {
            Some(ControllerResponse::Security(outcomes)) => outcomes,
            _ => {
                let error = TopicError {
                    code: ErrorCode::UnknownServerError,
                    message: "the controller is not available (shutting down)".into(),
                };
                vec![Err(error); count]
            }
        }
    }

    /// Sends a request to the controller and waits for the answer; `None` once the mesh is
    /// closed (shutting down).
    pub async fn call(&self, request: ControllerRequest) -> Option<ControllerResponse> {
        self.mesh.call(CONTROLLER, request).await
    }

    /// A topic change through the controller: its answer, or UNKNOWN_SERVER_ERROR when
    /// shutting down.
    pub async fn change_topic(&self, request: ControllerRequest) -> Result<TopicMeta, TopicError> {
        match self.call(request).await {
            Some(ControllerResponse::Topic(outcome)) => outcome,
            _ => Err(TopicError {
                code: ErrorCode::UnknownServerError,
                message: "the controller is not available (shutting down)".into(),
            }),
        }
    }

    /// A change of a broker or group resource's dynamic configs through the controller.
    pub async fn change_configs(
        &self,
        resource_type: i8,
        name: String,
        configs: BTreeMap<String, String>,
    ) -> Result<(), TopicError> {
        match self.call(ControllerRequest::AlterConfigs { resource_type, name, configs }).await {
            Some(ControllerResponse::Configs(outcome)) => outcome,
            _ => Err(TopicError {
                code: ErrorCode::UnknownServerError,
                message: "the controller is not available (shutting down)".into(),
            }),
        }
    }

    /// This node's topic defaults: the static ones under the dynamic broker configs.
    pub(crate) fn topic_defaults(&self) -> TopicConfig {
        let config = &self.shard.config;
        self.shard.catalog.borrow().topic_defaults(&config.topic_defaults, config.node_id)
    }

    /// A fresh producer id from the controller, or the Kafka error code to answer.
    pub async fn producer_id(&self) -> Result<ProducerId, ErrorCode> {
        match self.call(ControllerRequest::AllocateProducerId).await {
            Some(ControllerResponse::ProducerId(outcome)) => outcome,
            _ => Err(ErrorCode::CoordinatorNotAvailable),
        }
    }

    /// Creates a topic through the controller, as auto-creation does. Returns the topic when
    /// it exists on this shard afterwards.
    pub async fn ensure_topic(&self, name: &str) -> Result<Option<TopicMeta>, TopicError> {
        if let Some(meta) = self.shard.catalog.borrow().get(name) {
            return Ok(Some(meta.clone()));
        }
        let create = CreateTopic {
            name: name.to_string(),
            partitions: -1,
            overrides: BTreeMap::new(),
            validate_only: false,
            assignments: Vec::new(),
            replication_factor: -1,
            timeout_ms: 0,
        };
        match self.call(ControllerRequest::CreateTopic(create)).await {
            Some(ControllerResponse::Topic(Ok(_))) => {
                Ok(self.shard.catalog.borrow().get(name).cloned())
            }
            Some(ControllerResponse::Topic(Err(e))) if e.code == ErrorCode::TopicAlreadyExists => {
                Ok(self.shard.catalog.borrow().get(name).cloned())
            }
            Some(ControllerResponse::Topic(Err(e))) => Err(e),
            _ => Ok(None),
        }
    }

    /// A single node answers ElectLeaders and AlterPartitionReassignments as a cluster of
    /// this one broker would (every partition has this broker as its only replica and
    /// leader): the record `make` builds is applied to such a metadata state, which decides
    /// the outcome with the cluster's own rules (an election is never needed; a
    /// reassignment may only name this broker, and changes nothing).
    fn answer_as_one_broker(
        &self,
        name: &str,
        make: impl FnOnce(RequestId) -> MetadataRecord,
    ) -> Result<TopicMeta, TopicError> {
        let meta = self.shard.catalog.borrow().get(name).cloned();
        let me = self.shard.config.node_id;
        let partitions = meta.as_ref().map(|meta| meta.partitions);
        let mut state = MetadataState::one_broker(me, name, partitions);
        let index = state.applied_index + 1;
        let record = make(RequestId { node_id: me, serial: 0 });
        let outcome = state.apply(index, Some(&record)).outcome.map(|(_, outcome)| outcome);
        match (outcome, meta) {
            (Some(Ok(_)), Some(meta)) => Ok(meta),
            (Some(Err(refusal)), _) => {
                Err(TopicError { code: refusal.code, message: refusal.message })
            }
            _ => Err(TopicError {
                code: ErrorCode::UnknownTopicOrPartition,
                message: format!("Unable to find a topic named {name}."),
            }),
        }
    }

    /// A single node's producer id, from its own durable blocks.
    async fn allocate_producer_id(&self) -> Result<ProducerId, ErrorCode> {
        let allocated = self.producer_ids.allocate(&self.shard.config.data_dir).await;
        allocated.map_err(|e| {
            tracing::error!("producer id allocation failed: {e}");
            ErrorCode::UnknownServerError
        })
    }

    /// The checks of a new topic that need no catalog (name, partition count, configs), on a
    /// single node and clustered alike: the topic it would be.
    fn check_new_topic(&self, create: &CreateTopic) -> Result<TopicMeta, TopicError> {
        let fail = |code: ErrorCode, message: String| Err(TopicError { code, message });
        if let Err(message) = validate_topic_name(&create.name) {
            return fail(ErrorCode::InvalidTopicException, message);
        }
        if create.name.starts_with("__spate") {
            return fail(ErrorCode::InvalidTopicException, "the __spate prefix is reserved".into());
        }
        if INTERNAL_TOPICS.contains(&create.name.as_str()) {
            return fail(ErrorCode::InvalidTopicException, format!("{} is internal", create.name));
        }
        let config = &self.shard.config;
        let partitions =
            if create.partitions == -1 { config.default_partitions } else { create.partitions };
        if !(1..=constants::PARTITIONS_PER_TOPIC_MAX).contains(&partitions) {
            return fail(
                ErrorCode::InvalidPartitions,
                format!("partitions must be between 1 and {}", constants::PARTITIONS_PER_TOPIC_MAX),
            );
        }
        let topic_config = match self.topic_defaults().with_overrides(&create.overrides) {
            Ok(topic_config) => topic_config,
            Err(message) => return fail(ErrorCode::InvalidConfig, message),
        };
        Ok(TopicMeta {
            name: create.name.as_str().into(),
            id: *uuid::Uuid::new_v4().as_bytes(),
            partitions,
            overrides: create.overrides.clone(),
            config: topic_config,
            leaders: Arc::from([]),
        })
    }

    /// TOPIC_ALREADY_EXISTS when the catalog has a topic `name`.
    fn check_name_free(&self, name: &str) -> Result<(), TopicError> {
        match self.shard.catalog.borrow().get(name) {
            Some(_) => Err(TopicError {
                code: ErrorCode::TopicAlreadyExists,
                message: format!("topic {name} already exists"),
            }),
            None => Ok(()),
        }
    }

    async fn create_topic(&self, create: CreateTopic) -> Result<TopicMeta, TopicError> {
        let meta = self.check_new_topic(&create)?;
        let partitions = meta.partitions;
        self.check_name_free(&create.name)?;
        if create.validate_only {
            return Ok(meta);
        }
        self.check_space()?;
        // commit_topic claims the name before its first await, so a concurrent create sees it.
        self.commit_topic(&meta).await?;
        tracing::info!(topic = %meta.name, partitions, "created topic");
        Ok(meta)
    }

    async fn delete_topic(&self, name: String) -> Result<TopicMeta, TopicError> {
        let removed = self.shard.catalog.borrow_mut().remove(&name);
        let Some(meta) = removed else {
            return Err(TopicError {
                code: ErrorCode::UnknownTopicOrPartition,
                message: format!("no topic {name}"),
            });
        };
        self.persist_catalog().await?;
        self.partitions
            .broadcast(|| PartitionRequest::RemovePartitions { name: name.clone(), from: 0 })
            .await;
        tracing::info!(topic = %name, "deleted topic");
        Ok(meta)
    }

    async fn create_partitions(
        &self,
        name: String,
        count: i32,
        assignments: Option<usize>,
        validate_only: bool,
    ) -> Result<TopicMeta, TopicError> {
        let mut meta = self.existing_topic(&name)?;
        partitions_added(&name, meta.partitions, count, assignments)?;
        meta.partitions = count;
        if validate_only {
            return Ok(meta);
        }
        self.check_space()?;
        self.commit_topic(&meta).await?;
        Ok(meta)
    }

    async fn alter_topic_config(
        &self,
        name: String,
        overrides: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<TopicMeta, TopicError> {
        let mut meta = self.existing_topic(&name)?;
        meta.config = self
            .topic_defaults()
            .with_overrides(&overrides)
            .map_err(|message| TopicError { code: ErrorCode::InvalidConfig, message })?;
        meta.overrides = overrides;
        if validate_only {
            return Ok(meta);
        }
        self.commit_topic(&meta).await?;
        tracing::info!(topic = %meta.name, overrides = ?meta.overrides, "altered topic configs");
        Ok(meta)
    }

    /// Replaces a broker or group resource's dynamic configs: in the controller's catalog
    /// with every topic's config under the new defaults, then durably (the catalog file on a
    /// single node; clustered, a record on the metadata log, `quorum`), then on every shard,
    /// whose open logs take their topics' new configs. A catalog that cannot be written
    /// puts the configs back and answers the error.
    async fn alter_configs(
        &self,
        resource_type: i8,
        name: String,
        configs: BTreeMap<String, String>,
    ) -> Result<(), TopicError> {
        if self.cluster.clustered() {
            return self.alter_configs_through_log(resource_type, name, configs).await;
        }
        let previous = self.shard.catalog.borrow().configs.clone();
        let mut next = previous.clone();
        next.set(resource_type, &name, configs);
        let changed = self.adopt_configs(next);
        if let Err(e) = self.persist_catalog().await {
            self.adopt_configs(previous);
            return Err(e);
        }
        self.broadcast_configs(changed).await;
        tracing::info!(resource_type, resource = %name, "altered dynamic configs");
        Ok(())
    }

    /// Puts `configs` in the controller's catalog and gives every topic its config under
    /// the new defaults; returns the topics whose config changed.
    fn adopt_configs(&self, configs: DynamicConfigs) -> Vec<TopicMeta> {
        let mut catalog = self.shard.catalog.borrow_mut();
        catalog.configs = configs;
        let config = &self.shard.config;
        let defaults = catalog.topic_defaults(&config.topic_defaults, config.node_id);
        let mut changed = Vec::new();
        for meta in catalog.topics.values_mut().filter(|meta| !meta.is_internal()) {
            let topic_config = defaults.with_overrides(&meta.overrides).unwrap_or_else(|e| {
                tracing::warn!(topic = %meta.name, "topic configs do not apply ({e})");
                defaults.clone()
            });
            if topic_config != meta.config {
                meta.config = topic_config;
                changed.push(meta.clone());
            }
        }
        changed
    }

    /// Every shard takes the controller's dynamic configs and the `changed` topics.
    async fn broadcast_configs(&self, changed: Vec<TopicMeta>) {
        let configs = self.shard.catalog.borrow().configs.clone();
        let make = move || PartitionRequest::ApplyConfigs {
            configs: configs.clone(),
            topics: changed.clone(),
        };
        self.partitions.broadcast(make).await;
    }

    /// Applies `meta` to the controller's catalog, persists the catalog and sends `ApplyTopic`
    /// to every shard; returns once every shard applied it. The catalog is updated before the
    /// first await, so a concurrent request on the controller already sees `meta`.
    /// If the catalog cannot be written, or a shard cannot open one of the new logs, the change
    /// is undone (logs it opened are deleted) and the error returned: a topic that a client
    /// was told exists can always be written.
    async fn commit_topic(&self, meta: &TopicMeta) -> Result<(), TopicError> {
        let previous = self.shard.catalog.borrow().get(&meta.name).cloned();
        self.shard.catalog.borrow_mut().apply(meta.clone());
        if let Err(e) = self.persist_catalog().await {
            // Not on disk and not on the other shards: forget it, so that a retry can succeed.
            let mut catalog = self.shard.catalog.borrow_mut();
            match previous {
                Some(previous) => catalog.apply(previous),
                None => {
                    catalog.remove(&meta.name);
                }
            }
            return Err(e);
        }
        let copy = meta.clone();
        let answers =
            self.partitions.broadcast(move || PartitionRequest::ApplyTopic(copy.clone())).await;
        let failed = answers.into_iter().find_map(|answer| match answer {
            Some(PartitionResponse::Applied(Err(message))) => Some(message),
            _ => None,
        });
        let Some(message) = failed else {
            return Ok(());
        };
        self.undo_topic(meta, previous).await;
        Err(TopicError { code: ErrorCode::KafkaStorageError, message })
    }

    /// Puts topic `meta.name` back as `previous` (absent: no topic) after a change that some
    /// shard could not apply: the catalog first, then the logs the change opened.
    async fn undo_topic(&self, meta: &TopicMeta, previous: Option<TopicMeta>) {
        let name = meta.name.to_string();
        let kept = previous.as_ref().map_or(0, |previous| previous.partitions);
        match &previous {
            Some(previous) => self.shard.catalog.borrow_mut().apply(previous.clone()),
            None => {
                self.shard.catalog.borrow_mut().remove(&name);
            }
        }
        if let Err(e) = self.persist_catalog().await {
            tracing::error!(topic = %name, "cannot write the catalog back: {}", e.message);
        }
        if let Some(previous) = previous {
            self.partitions.broadcast(move || PartitionRequest::ApplyTopic(previous.clone())).await;
        }
        if kept < meta.partitions {
            let make = || PartitionRequest::RemovePartitions { name: name.clone(), from: kept };
            self.partitions.broadcast(make).await;
        }
        tracing::warn!(topic = %name, "undid a topic change that a shard could not apply");
    }

    /// The controller's entry for topic `name`, or UNKNOWN_TOPIC_OR_PARTITION.
    /// New logs are refused below the free-space reserve (`storage::space`), before anything
    /// is created, rather than half-created on a full disk.
    fn check_space(&self) -> Result<(), TopicError> {
        self.shard.space.check().map_err(|refusal| TopicError {
            code: ErrorCode::KafkaStorageError,
            message: refusal.to_string(),
        })
    }

    fn existing_topic(&self, name: &str) -> Result<TopicMeta, TopicError> {
        self.shard.catalog.borrow().get(name).cloned().ok_or_else(|| TopicError {
            code: ErrorCode::UnknownTopicOrPartition,
            message: format!("no topic {name}"),
        })
    }

    /// Writes the catalog file. Concurrent changes (two auto-creations at once) queue here:
    /// two writers of the one temporary file would lose one change or mix their bytes.
    async fn persist_catalog(&self) -> Result<(), TopicError> {
        let _turn = self.catalog_writes.lock().await;
        let text = self.shard.catalog.borrow().to_file_text();
        let dir = self.shard.config.data_dir.clone();
        glommio::executor().spawn_blocking(move || catalog::write_file(&dir, text)).await.map_err(
            |e| TopicError {
                code: ErrorCode::UnknownServerError,
                message: format!("cannot persist the catalog: {e}"),
            },
        )
    }
}

/// How many partitions a CreatePartitions adds to `name`'s `current`, or Kafka's error: the
/// count must grow and stay within `PARTITIONS_PER_TOPIC_MAX`, and explicit assignments (how
/// many were given) must cover exactly the new partitions. On a single node and clustered
/// alike.
fn partitions_added(
    name: &str,
    current: i32,
    count: i32,
    assignments: Option<usize>,
) -> Result<usize, TopicError> {
    if count <= current {
        return Err(TopicError {
            code: ErrorCode::InvalidPartitions,
            message: format!("topic {name} has {current} partitions; the new count must be larger"),
        });
    }
    if count > constants::PARTITIONS_PER_TOPIC_MAX {
        return Err(TopicError {
            code: ErrorCode::InvalidPartitions,
            message: format!("at most {} partitions", constants::PARTITIONS_PER_TOPIC_MAX),
        });
    }
    let added = (count - current) as usize;
    if let Some(given) = assignments.filter(|given| *given != added) {
        return Err(TopicError {
            code: ErrorCode::InvalidReplicaAssignment,
            message: format!(
                "increasing the number of partitions by {added} but {given} assignments provided"
            ),
        });
    }
    Ok(added)
}
