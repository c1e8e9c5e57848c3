//! A shard: everything one core owns. Its partitions' logs, its copy of the catalog, its
//! fetch waiters, and its end of the cross-core mesh.
//!
//! Lifecycle: built on its executor thread at start (`Shard::new`), opens the logs it owns,
//! serves until shutdown, then closes every log. Lives in an `Rc` on that thread only; all
//! state is in `RefCell`s borrowed briefly and never across an `.await`. Other cores reach
//! it only through `Envelope`s on the mesh.

pub mod catalog;
pub mod delayed;
pub mod internal_log;
pub mod mesh;
pub mod producers;
pub mod purgatory;
pub mod table;

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

use bytes::Bytes;
use futures::channel::oneshot;
use futures::future::{join_all, Either};
use glommio::channels::channel_mesh::{Receivers, Senders};

use crate::config::Config;
use crate::constants;
use crate::group::coordinator::Coordinator;
use crate::model::topic::validate_topic_name;
use crate::model::{now_ms, ShardId, TopicPartition};
use crate::protocol::errors;
use crate::shard::catalog::{Catalog, TopicMeta};
use crate::shard::delayed::Delayed;
use crate::shard::internal_log::INTERNAL_TOPICS;
use crate::shard::mesh::{
    CreateTopic, Envelope, OffsetResult, ProduceResult, ReadResult, ReadSpec, ShardRequest,
    ShardResponse, TopicError,
};
use crate::storage::cache::CacheBudget;
use crate::storage::log::{self, Log, RecoveryReport};
use crate::storage::Error as StorageError;
use crate::txn::coordinator::TxnCoordinator;

pub const CONTROLLER: ShardId = ShardId(0);

type LogRef = Rc<RefCell<Log>>;

pub struct Shard {
    pub id: ShardId,
    pub config: Config,
    pub catalog: RefCell<Catalog>,
    logs: RefCell<HashMap<TopicPartition, LogRef>>,
    senders: Senders<Envelope>,
    pending: RefCell<HashMap<u64, oneshot::Sender<ShardResponse>>>,
    next_id: Cell<u64>,
    /// Remote and local fetches waiting for data on partitions this shard owns.
    watchers: RefCell<HashMap<TopicPartition, Vec<(usize, u64)>>>,
    /// Fetches on this shard waiting for a notification or their deadline.
    pub delayed: Rc<Delayed>,
    /// The consumer groups this shard coordinates and its committed-offsets log.
    pub groups: Rc<Coordinator>,
    /// Used on the controller only.
    producer_ids: producers::ProducerIdAllocator,
    /// The transactions this shard coordinates and its transaction log.
    pub txns: Rc<TxnCoordinator>,
    /// The memory the batch caches of this shard's partitions share.
    cache: Rc<CacheBudget>,
    /// Held while the controller writes the catalog file: one write at a time, each of the
    /// catalog as it is when its turn comes.
    catalog_writes: futures::lock::Mutex<()>,
}

impl Shard {
    pub fn new(id: ShardId, config: Config, catalog: Catalog, senders: Senders<Envelope>) -> Shard {
        let groups = Rc::new(Coordinator::new(id, &config));
        let txns = Rc::new(TxnCoordinator::new(id, &config));
        let cache = CacheBudget::new(config.batch_cache_bytes as usize);
        Shard {
            id,
            config,
            catalog: RefCell::new(catalog),
            logs: RefCell::new(HashMap::new()),
            senders,
            pending: RefCell::new(HashMap::new()),
            next_id: Cell::new(1),
            watchers: RefCell::new(HashMap::new()),
            delayed: Rc::new(Delayed::new()),
            groups,
            producer_ids: producers::ProducerIdAllocator::new(),
            txns,
            cache,
            catalog_writes: futures::lock::Mutex::new(()),
        }
    }

    pub fn shards(&self) -> usize {
        self.config.cores
    }

    pub fn owner(&self, tp: &TopicPartition) -> ShardId {
        table::shard_for(&tp.topic, tp.partition, self.shards())
    }

    /// Opens every log this shard owns according to the catalog (recovering each).
    pub async fn open_owned_logs(&self) -> Result<RecoveryReport, StorageError> {
        let metas: Vec<TopicMeta> = self.catalog.borrow().topics.values().cloned().collect();
        let mut total = RecoveryReport::default();
        for meta in metas {
            let report = self.open_topic(&meta).await?;
            total.segments += report.segments;
            total.truncated_segments += report.truncated_segments;
        }
        Ok(total)
    }

    pub fn owned_partition_count(&self) -> usize {
        self.logs.borrow().len()
    }

    async fn open_topic(&self, meta: &TopicMeta) -> Result<RecoveryReport, StorageError> {
        let mut total = RecoveryReport::default();
        for partition in 0..meta.partitions {
            let tp = TopicPartition::new(meta.name.clone(), partition);
            if self.owner(&tp) != self.id || self.logs.borrow().contains_key(&tp) {
                continue;
            }
            let (log, report) = Log::open_in(
                &self.config.data_dir,
                tp.clone(),
                meta.config.clone(),
                self.cache.clone(),
            )
            .await?;
            total.segments += report.segments;
            total.truncated_segments += report.truncated_segments;
            self.logs.borrow_mut().insert(tp, Rc::new(RefCell::new(log)));
        }
        Ok(total)
    }

    /// Seals every log: called once at shutdown, after the listener stopped.
    pub async fn close_all(&self) {
        let logs: Vec<LogRef> = self.logs.borrow().values().cloned().collect();
        for log in logs {
            if let Err(e) = log::close(&log).await {
                tracing::warn!(tp = %log.borrow().tp, "closing log failed: {e}");
            }
        }
        self.groups.close().await;
        self.txns.close().await;
    }

    /// Periodic housekeeping: retention and time-based rolls.
    pub async fn enforce_retention(&self) {
        let logs: Vec<LogRef> = self.logs.borrow().values().cloned().collect();
        let now = now_ms();
        for log in logs {
            if let Err(e) = log::enforce_retention(&log, now).await {
                tracing::warn!(tp = %log.borrow().tp, "retention failed: {e}");
            }
            glommio::yield_if_needed().await;
        }
    }

    // ----- the mesh -----------------------------------------------------------------------

    /// Sends a request to `target` (or runs it here) and waits for the answer.
    pub fn call(
        self: &Rc<Self>,
        target: ShardId,
        body: ShardRequest,
    ) -> Pin<Box<dyn Future<Output = ShardResponse>>> {
        let shard = self.clone();
        Box::pin(async move {
            if target == shard.id {
                return shard.handle(body).await;
            }
            match shard.post(target, body).await {
                Some(answer) => answer.await.unwrap_or(ShardResponse::Done),
                None => ShardResponse::Done,
            }
        })
    }

    /// Puts a request for another shard on the mesh; the receiver gets its answer. `None`
    /// when the mesh is closed (shutting down).
    async fn post(
        &self,
        target: ShardId,
        body: ShardRequest,
    ) -> Option<oneshot::Receiver<ShardResponse>> {
        assert!(target != self.id);
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        let (tx, rx) = oneshot::channel();
        self.pending.borrow_mut().insert(id, tx);
        let envelope = Envelope::Request { from: self.id.index(), id, body };
        if self.senders.send_to(target.index(), envelope).await.is_err() {
            self.pending.borrow_mut().remove(&id);
            return None;
        }
        Some(rx)
    }

    /// Sends the same request to every shard and waits for all of them.
    pub async fn broadcast(self: &Rc<Self>, make: impl Fn() -> ShardRequest) -> Vec<ShardResponse> {
        let calls = (0..self.shards()).map(|s| self.call(ShardId(s as u16), make()));
        join_all(calls).await
    }

    async fn send(&self, target: usize, envelope: Envelope) {
        if self.senders.send_to(target, envelope).await.is_err() {
            tracing::debug!(target, "mesh send failed (shutting down?)");
        }
    }

    /// Runs the receive side of the mesh: one task per peer.
    pub fn spawn_receivers(self: &Rc<Self>, mut receivers: Receivers<Envelope>) {
        for (peer, receiver) in receivers.streams() {
            let shard = self.clone();
            glommio::spawn_local(async move {
                while let Some(envelope) = receiver.recv().await {
                    shard.clone().receive(peer, envelope);
                }
            })
            .detach();
        }
    }

    fn receive(self: Rc<Self>, peer: usize, envelope: Envelope) {
        match envelope {
            Envelope::Request {
                from,
                id,
                body: ShardRequest::Produce { partitions, timeout_ms },
            } => {
                // Admitted here, before the next envelope is taken, so that a connection's
                // pipelined produces get offsets in the order it sent them.
                let results = self.admit_produce(partitions, timeout_ms);
                glommio::spawn_local(async move {
                    let body = ShardResponse::Produce(results.await);
                    self.send(from, Envelope::Response { id, body }).await;
                })
                .detach();
            }
            Envelope::Request { from, id, body } => {
                glommio::spawn_local(async move {
                    let response = self.clone().handle(body).await;
                    self.send(from, Envelope::Response { id, body: response }).await;
                })
                .detach();
            }
            Envelope::Response { id, body } => {
                if let Some(tx) = self.pending.borrow_mut().remove(&id) {
                    let _ = tx.send(body);
                }
            }
            Envelope::Watch { from, waiter, partitions } => {
                glommio::spawn_local(async move { self.watch(from, waiter, partitions).await })
                    .detach();
            }
            Envelope::Unwatch { from, waiter, partitions } => {
                self.unwatch(from, waiter, &partitions)
            }
            Envelope::Notify { waiter } => self.wake(waiter),
        }
        let _ = peer;
    }

    // ----- fetch long-poll ----------------------------------------------------------------

    /// A new id for a waiting operation on this shard (unique per shard).
    pub fn new_waiter_id(&self) -> u64 {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        id
    }

    fn wake(&self, waiter: u64) {
        self.delayed.notify(waiter);
    }

    /// Asks the owners of `partitions` to notify `waiter` (on this shard) on new data.
    pub async fn watch_remote(
        self: &Rc<Self>,
        waiter: u64,
        partitions: Vec<(TopicPartition, i64)>,
    ) {
        let mut by_shard: BTreeMap<ShardId, Vec<(TopicPartition, i64)>> = BTreeMap::new();
        for (tp, seen) in partitions {
            by_shard.entry(self.owner(&tp)).or_default().push((tp, seen));
        }
        for (owner, partitions) in by_shard {
            if owner == self.id {
                self.watch(self.id.index(), waiter, partitions).await;
            } else {
                let envelope = Envelope::Watch { from: self.id.index(), waiter, partitions };
                self.send(owner.index(), envelope).await;
            }
        }
    }

    pub async fn unwatch_remote(self: &Rc<Self>, waiter: u64, partitions: Vec<TopicPartition>) {
        let mut by_shard: BTreeMap<ShardId, Vec<TopicPartition>> = BTreeMap::new();
        for tp in partitions {
            by_shard.entry(self.owner(&tp)).or_default().push(tp);
        }
        for (owner, partitions) in by_shard {
            if owner == self.id {
                self.unwatch(self.id.index(), waiter, &partitions);
            } else {
                let envelope = Envelope::Unwatch { from: self.id.index(), waiter, partitions };
                self.send(owner.index(), envelope).await;
            }
        }
    }

    async fn watch(&self, from: usize, waiter: u64, partitions: Vec<(TopicPartition, i64)>) {
        let mut already = false;
        {
            let logs = self.logs.borrow();
            let mut watchers = self.watchers.borrow_mut();
            for (tp, seen) in partitions {
                if let Some(log) = logs.get(&tp) {
                    if log.borrow().high_watermark > seen {
                        already = true;
                    }
                }
                let list = watchers.entry(tp).or_default();
                if !list.contains(&(from, waiter)) {
                    list.push((from, waiter));
                }
            }
        }
        if already {
            self.notify(from, waiter).await;
        }
    }

    fn unwatch(&self, from: usize, waiter: u64, partitions: &[TopicPartition]) {
        let mut watchers = self.watchers.borrow_mut();
        for tp in partitions {
            if let Some(list) = watchers.get_mut(tp) {
                list.retain(|w| *w != (from, waiter));
                if list.is_empty() {
                    watchers.remove(tp);
                }
            }
        }
    }

    async fn notify(&self, shard: usize, waiter: u64) {
        if shard == self.id.index() {
            self.wake(waiter);
        } else {
            self.send(shard, Envelope::Notify { waiter }).await;
        }
    }

    async fn notify_watchers(&self, tp: &TopicPartition) {
        let list = self.watchers.borrow_mut().remove(tp);
        for (shard, waiter) in list.unwrap_or_default() {
            self.notify(shard, waiter).await;
        }
    }

    // ----- request handling on the owning shard -------------------------------------------

    pub async fn handle(self: Rc<Self>, request: ShardRequest) -> ShardResponse {
        match request {
            ShardRequest::Produce { partitions, timeout_ms } => {
                ShardResponse::Produce(self.admit_produce(partitions, timeout_ms).await)
            }
            ShardRequest::Read { partitions } => ShardResponse::Read(self.read(partitions).await),
            ShardRequest::ListOffsets { partitions, committed } => {
                ShardResponse::ListOffsets(self.list_offsets(partitions, committed).await)
            }
            ShardRequest::CreateTopic(create) => {
                ShardResponse::Topic(self.create_topic(create).await)
            }
            ShardRequest::DeleteTopic { name } => {
                ShardResponse::Topic(self.delete_topic(name).await)
            }
            ShardRequest::CreatePartitions { name, count, assignments, validate_only } => {
                let created = self.create_partitions(name, count, assignments, validate_only);
                ShardResponse::Topic(created.await)
            }
            ShardRequest::AlterTopicConfig { name, overrides, validate_only } => {
                ShardResponse::Topic(self.alter_topic_config(name, overrides, validate_only).await)
            }
            ShardRequest::ApplyTopic(meta) => {
                let name = meta.name.clone();
                self.catalog.borrow_mut().apply(meta.clone());
                // Logs already open take the topic's new configs (AlterConfigs).
                for partition in 0..meta.partitions {
                    let tp = TopicPartition::new(meta.name.clone(), partition);
                    if let Some(log) = self.logs.borrow().get(&tp) {
                        log.borrow_mut().config = meta.config.clone();
                    }
                }
                if let Err(e) = self.open_topic(&meta).await {
                    tracing::error!(topic = %name, "cannot open partition logs: {e}");
                }
                ShardResponse::Done
            }
            ShardRequest::RemoveTopic { name } => {
                self.catalog.borrow_mut().remove(&name);
                let doomed: Vec<(TopicPartition, LogRef)> = {
                    let mut logs = self.logs.borrow_mut();
                    let keys: Vec<TopicPartition> =
                        logs.keys().filter(|tp| &*tp.topic == name.as_str()).cloned().collect();
                    keys.into_iter()
                        .filter_map(|tp| logs.remove(&tp).map(|log| (tp, log)))
                        .collect()
                };
                for (tp, log) in doomed {
                    log::delete(&log).await;
                    self.notify_watchers(&tp).await;
                }
                ShardResponse::Done
            }
            ShardRequest::Group(request) => ShardResponse::Group(self.groups.handle(request).await),
            ShardRequest::AllocateProducerId => {
                ShardResponse::ProducerId(self.allocate_producer_id().await)
            }
            ShardRequest::Txn(request) => ShardResponse::Txn(self.handle_txn(request).await),
            ShardRequest::WriteMarkers { markers } => {
                ShardResponse::Markers(self.write_markers(markers).await)
            }
            ShardRequest::DeleteRecords { partitions } => {
                ShardResponse::ListOffsets(self.delete_records(partitions).await)
            }
            ShardRequest::DescribeProducers { partitions } => {
                ShardResponse::Producers(self.describe_producers(partitions))
            }
        }
    }

    fn log(&self, tp: &TopicPartition) -> Option<LogRef> {
        self.logs.borrow().get(tp).cloned()
    }

    async fn delete_records(&self, partitions: Vec<(TopicPartition, i64)>) -> Vec<OffsetResult> {
        let mut out = Vec::with_capacity(partitions.len());
        for (tp, offset) in partitions {
            let result = match self.log(&tp) {
                None => Err(errors::UNKNOWN_TOPIC_OR_PARTITION),
                Some(log) => log::delete_records(&log, offset).await.map_err(|e| match e {
                    StorageError::OffsetOutOfRange => errors::OFFSET_OUT_OF_RANGE,
                    StorageError::Deleted => errors::UNKNOWN_TOPIC_OR_PARTITION,
                    e => {
                        tracing::warn!(%tp, "delete records failed: {e}");
                        errors::UNKNOWN_SERVER_ERROR
                    }
                }),
            };
            let (error_code, offset) = match result {
                Ok(start) => (errors::NONE, start),
                Err(code) => (code, -1),
            };
            out.push(OffsetResult { tp, error_code, offset, timestamp: -1 });
        }
        out
    }

    /// The log of a partition this shard owns.
    pub(crate) fn log_of(&self, tp: &TopicPartition) -> Option<LogRef> {
        self.log(tp)
    }

    /// Wakes the fetches waiting on `tp` (after a marker moved its last stable offset).
    pub(crate) async fn notify_partition(&self, tp: &TopicPartition) {
        self.notify_watchers(tp).await;
    }

    fn describe_producers(
        &self,
        partitions: Vec<TopicPartition>,
    ) -> Vec<(TopicPartition, Result<Vec<mesh::ProducerInfo>, i16>)> {
        partitions
            .into_iter()
            .map(|tp| {
                let Some(log) = self.log(&tp) else {
                    return (tp, Err(errors::UNKNOWN_TOPIC_OR_PARTITION));
                };
                let l = log.borrow();
                let infos = l
                    .producers
                    .entries()
                    .map(|(producer_id, entry)| {
                        let last = entry.batches.back();
                        mesh::ProducerInfo {
                            producer_id,
                            producer_epoch: entry.epoch,
                            last_sequence: last.map_or(-1, |b| b.last_sequence),
                            last_timestamp: last.map_or(-1, |b| b.timestamp),
                            current_txn_start_offset: l
                                .producers
                                .txns
                                .open_transaction(producer_id)
                                .unwrap_or(-1),
                        }
                    })
                    .collect();
                (tp, Ok(infos))
            })
            .collect()
    }

    /// Admits a produce on this shard, without an await: each partition's batches get their
    /// offsets and are queued for writing before this returns, so produces admitted one after
    /// another are ordered as they were admitted. The future it gives answers each partition
    /// once its write is durable, or with REQUEST_TIMED_OUT at `timeout_ms` (a delayed
    /// produce; the write itself goes on, as in Kafka). One timing-wheel operation covers the
    /// whole request.
    pub fn admit_produce(
        self: &Rc<Self>,
        partitions: Vec<(TopicPartition, Vec<Bytes>)>,
        timeout_ms: i32,
    ) -> impl Future<Output = Vec<ProduceResult>> + 'static {
        let mut admitted: Vec<(TopicPartition, Result<log::Appending, i16>)> = partitions
            .into_iter()
            .map(|(tp, batches)| {
                let appending = match self.log(&tp) {
                    Some(log) => log::enqueue(&log, batches).map_err(|e| match e {
                        StorageError::Producer(e) => producers::error_code(e),
                        _ => errors::UNKNOWN_TOPIC_OR_PARTITION,
                    }),
                    None => Err(errors::UNKNOWN_TOPIC_OR_PARTITION),
                };
                (tp, appending)
            })
            .collect();
        let shard = self.clone();
        let waiter = self.new_waiter_id();
        let timeout = std::time::Duration::from_millis(timeout_ms.max(1) as u64);
        let expired = self.delayed.wait(waiter, timeout);
        async move {
            {
                let writes = admitted.iter_mut().filter_map(|(_, a)| a.as_mut().ok());
                let durable = join_all(writes.map(|a| a.wait()));
                futures::pin_mut!(durable);
                if let Either::Left(_) = futures::future::select(durable, expired).await {
                    // Every write landed first: retire the timeout operation now.
                    shard.delayed.notify(waiter);
                }
            }
            let mut results = Vec::with_capacity(admitted.len());
            let mut late = Vec::new();
            for (tp, appending) in admitted {
                let failed = |tp, error_code| ProduceResult {
                    tp,
                    error_code,
                    base_offset: -1,
                    log_append_time: -1,
                    log_start_offset: -1,
                };
                let mut appending = match appending {
                    Ok(appending) => appending,
                    Err(code) => {
                        results.push(failed(tp, code));
                        continue;
                    }
                };
                match appending.outcome() {
                    Some(Ok(info)) => {
                        shard.notify_watchers(&tp).await;
                        results.push(ProduceResult {
                            tp,
                            error_code: errors::NONE,
                            base_offset: info.base_offset,
                            log_append_time: info.log_append_time,
                            log_start_offset: info.log_start_offset,
                        });
                    }
                    Some(Err(_)) => results.push(failed(tp, errors::UNKNOWN_TOPIC_OR_PARTITION)),
                    None => {
                        late.push((tp.clone(), appending));
                        results.push(failed(tp, errors::REQUEST_TIMED_OUT));
                    }
                }
            }
            if !late.is_empty() {
                // Timed out but still being written: fetches waiting on these partitions
                // hear of the data when it lands.
                glommio::spawn_local(async move {
                    for (tp, mut appending) in late {
                        appending.wait().await;
                        shard.notify_watchers(&tp).await;
                    }
                })
                .detach();
            }
            results
        }
    }

    /// Admits a produce on `owner` and gives the future of its results. On this shard it is
    /// admitted before this returns; on another, the request is on the mesh before this
    /// returns, and a shard admits the requests of one peer in the order they were sent
    /// (`receive`). Either way, produces admitted in turn by one connection keep their order.
    pub async fn admit_produce_on(
        self: &Rc<Self>,
        owner: ShardId,
        partitions: Vec<(TopicPartition, Vec<Bytes>)>,
        timeout_ms: i32,
    ) -> Pin<Box<dyn Future<Output = Vec<ProduceResult>>>> {
        if owner == self.id {
            return Box::pin(self.admit_produce(partitions, timeout_ms));
        }
        let answer = self.post(owner, ShardRequest::Produce { partitions, timeout_ms }).await;
        Box::pin(async move {
            match answer {
                Some(answer) => match answer.await {
                    Ok(ShardResponse::Produce(results)) => results,
                    _ => Vec::new(),
                },
                None => Vec::new(),
            }
        })
    }

    async fn read(&self, partitions: Vec<ReadSpec>) -> Vec<ReadResult> {
        let reads = partitions.into_iter().map(|spec| async move {
            let empty = |tp: TopicPartition, code: i16| ReadResult {
                tp,
                error_code: code,
                high_watermark: -1,
                last_stable_offset: -1,
                log_start_offset: -1,
                aborted: Vec::new(),
                chunks: Vec::new(),
                size_bytes: 0,
            };
            let Some(log) = self.log(&spec.tp) else {
                return empty(spec.tp, errors::UNKNOWN_TOPIC_OR_PARTITION);
            };
            let read =
                log::read_below(&log, spec.offset, spec.size_bytes_max, true, spec.committed);
            match read.await {
                Ok(outcome) => ReadResult {
                    tp: spec.tp,
                    error_code: errors::NONE,
                    high_watermark: outcome.high_watermark,
                    last_stable_offset: outcome.last_stable_offset,
                    aborted: outcome.aborted,
                    log_start_offset: outcome.log_start_offset,
                    chunks: outcome.chunks,
                    size_bytes: outcome.size_bytes,
                },
                Err(StorageError::OffsetOutOfRange) => {
                    let l = log.borrow();
                    ReadResult {
                        high_watermark: l.high_watermark,
                        last_stable_offset: l.producers.txns.last_stable_offset(l.high_watermark),
                        log_start_offset: l.log_start_offset,
                        ..empty(spec.tp.clone(), errors::OFFSET_OUT_OF_RANGE)
                    }
                }
                Err(StorageError::Deleted) => empty(spec.tp, errors::UNKNOWN_TOPIC_OR_PARTITION),
                Err(e) => {
                    tracing::warn!(tp = %spec.tp, "read failed: {e}");
                    empty(spec.tp, errors::UNKNOWN_SERVER_ERROR)
                }
            }
        });
        join_all(reads).await
    }

    async fn list_offsets(
        &self,
        partitions: Vec<(TopicPartition, i64)>,
        committed: bool,
    ) -> Vec<OffsetResult> {
        let mut out = Vec::with_capacity(partitions.len());
        for (tp, timestamp) in partitions {
            let Some(log) = self.log(&tp) else {
                out.push(OffsetResult {
                    tp,
                    error_code: errors::UNKNOWN_TOPIC_OR_PARTITION,
                    offset: -1,
                    timestamp: -1,
                });
                continue;
            };
            let (start, end) = {
                let l = log.borrow();
                let end = if committed {
                    l.producers.txns.last_stable_offset(l.high_watermark)
                } else {
                    l.high_watermark
                };
                (l.log_start_offset, end)
            };
            let found = match timestamp {
                -1 => Ok(Some((end, -1))),
                -2 | -4 => Ok(Some((start, -1))),
                -3 => log::offset_of_max_timestamp(&log).await,
                t if t >= 0 => log::offset_for_timestamp(&log, t).await,
                _ => Ok(None),
            };
            let result = match found {
                Ok(Some((offset, ts))) => {
                    OffsetResult { tp, error_code: errors::NONE, offset, timestamp: ts }
                }
                Ok(None) if timestamp < -4 => OffsetResult {
                    tp,
                    error_code: errors::INVALID_REQUEST,
                    offset: -1,
                    timestamp: -1,
                },
                Ok(None) => {
                    OffsetResult { tp, error_code: errors::NONE, offset: -1, timestamp: -1 }
                }
                Err(e) => {
                    tracing::warn!(%tp, "list offsets failed: {e}");
                    OffsetResult {
                        tp,
                        error_code: errors::UNKNOWN_SERVER_ERROR,
                        offset: -1,
                        timestamp: -1,
                    }
                }
            };
            out.push(result);
        }
        out
    }

    // ----- controller (shard 0) -----------------------------------------------------------

    async fn create_topic(self: &Rc<Self>, create: CreateTopic) -> Result<TopicMeta, TopicError> {
        assert_eq!(self.id, CONTROLLER);
        let fail = |code: i16, message: String| Err(TopicError { code, message });
        if let Err(message) = validate_topic_name(&create.name) {
            return fail(errors::INVALID_TOPIC_EXCEPTION, message);
        }
        if create.name.starts_with("__spate") {
            return fail(errors::INVALID_TOPIC_EXCEPTION, "the __spate prefix is reserved".into());
        }
        if INTERNAL_TOPICS.contains(&create.name.as_str()) {
            return fail(errors::INVALID_TOPIC_EXCEPTION, format!("{} is internal", create.name));
        }
        let partitions = if create.partitions == -1 {
            self.config.default_partitions
        } else {
            create.partitions
        };
        if !(1..=constants::PARTITIONS_PER_TOPIC_MAX).contains(&partitions) {
            return fail(
                errors::INVALID_PARTITIONS,
                format!("partitions must be between 1 and {}", constants::PARTITIONS_PER_TOPIC_MAX),
            );
        }
        let config = match self.config.topic_defaults.with_overrides(&create.overrides) {
            Ok(config) => config,
            Err(message) => return fail(errors::INVALID_CONFIG, message),
        };
        if self.catalog.borrow().get(&create.name).is_some() {
            return fail(
                errors::TOPIC_ALREADY_EXISTS,
                format!("topic {} already exists", create.name),
            );
        }
        let meta = TopicMeta {
            name: create.name.as_str().into(),
            id: *uuid::Uuid::new_v4().as_bytes(),
            partitions,
            overrides: create.overrides,
            config,
        };
        if create.validate_only {
            return Ok(meta);
        }
        // commit_topic claims the name before its first await, so a concurrent create sees it.
        self.commit_topic(&meta).await?;
        tracing::info!(topic = %meta.name, partitions, "created topic");
        Ok(meta)
    }

    async fn delete_topic(self: &Rc<Self>, name: String) -> Result<TopicMeta, TopicError> {
        assert_eq!(self.id, CONTROLLER);
        let removed = self.catalog.borrow_mut().remove(&name);
        let Some(meta) = removed else {
            return Err(TopicError {
                code: errors::UNKNOWN_TOPIC_OR_PARTITION,
                message: format!("no topic {name}"),
            });
        };
        self.persist_catalog().await?;
        self.broadcast(|| ShardRequest::RemoveTopic { name: name.clone() }).await;
        tracing::info!(topic = %name, "deleted topic");
        Ok(meta)
    }

    async fn create_partitions(
        self: &Rc<Self>,
        name: String,
        count: i32,
        assignments: Option<usize>,
        validate_only: bool,
    ) -> Result<TopicMeta, TopicError> {
        assert_eq!(self.id, CONTROLLER);
        let mut meta = self.existing_topic(&name)?;
        if count <= meta.partitions {
            return Err(TopicError {
                code: errors::INVALID_PARTITIONS,
                message: format!(
                    "topic {name} has {} partitions; the new count must be larger",
                    meta.partitions
                ),
            });
        }
        if count > constants::PARTITIONS_PER_TOPIC_MAX {
            return Err(TopicError {
                code: errors::INVALID_PARTITIONS,
                message: format!("at most {} partitions", constants::PARTITIONS_PER_TOPIC_MAX),
            });
        }
        let added = (count - meta.partitions) as usize;
        if let Some(given) = assignments.filter(|given| *given != added) {
            return Err(TopicError {
                code: errors::INVALID_REPLICA_ASSIGNMENT,
                message: format!(
                    "increasing the number of partitions by {added} but {given} assignments \
                     provided"
                ),
            });
        }
        meta.partitions = count;
        if validate_only {
            return Ok(meta);
        }
        self.commit_topic(&meta).await?;
        Ok(meta)
    }

    async fn alter_topic_config(
        self: &Rc<Self>,
        name: String,
        overrides: BTreeMap<String, String>,
        validate_only: bool,
    ) -> Result<TopicMeta, TopicError> {
        assert_eq!(self.id, CONTROLLER);
        let mut meta = self.existing_topic(&name)?;
        meta.config = self
            .config
            .topic_defaults
            .with_overrides(&overrides)
            .map_err(|message| TopicError { code: errors::INVALID_CONFIG, message })?;
        meta.overrides = overrides;
        if validate_only {
            return Ok(meta);
        }
        self.commit_topic(&meta).await?;
        tracing::info!(topic = %meta.name, overrides = ?meta.overrides, "altered topic configs");
        Ok(meta)
    }

    /// Applies `meta` to the controller's catalog, persists the catalog and sends `ApplyTopic`
    /// to every shard; returns once every shard applied it. The catalog is updated before the
    /// first await, so a concurrent request on the controller already sees `meta`.
    /// If the catalog cannot be written, the change is undone and the error returned.
    async fn commit_topic(self: &Rc<Self>, meta: &TopicMeta) -> Result<(), TopicError> {
        let previous = self.catalog.borrow().get(&meta.name).cloned();
        self.catalog.borrow_mut().apply(meta.clone());
        if let Err(e) = self.persist_catalog().await {
            // Not on disk and not on the other shards: forget it, so that a retry can succeed.
            let mut catalog = self.catalog.borrow_mut();
            match previous {
                Some(previous) => catalog.apply(previous),
                None => {
                    catalog.remove(&meta.name);
                }
            }
            return Err(e);
        }
        let copy = meta.clone();
        self.broadcast(move || ShardRequest::ApplyTopic(copy.clone())).await;
        Ok(())
    }

    /// The controller's entry for topic `name`, or UNKNOWN_TOPIC_OR_PARTITION.
    fn existing_topic(&self, name: &str) -> Result<TopicMeta, TopicError> {
        self.catalog.borrow().get(name).cloned().ok_or_else(|| TopicError {
            code: errors::UNKNOWN_TOPIC_OR_PARTITION,
            message: format!("no topic {name}"),
        })
    }

    /// Writes the catalog file. Concurrent changes (two auto-creations at once) queue here:
    /// two writers of the one temporary file would lose one change or mix their bytes.
    async fn persist_catalog(&self) -> Result<(), TopicError> {
        let _turn = self.catalog_writes.lock().await;
        let text = self.catalog.borrow().to_file_text();
        let dir = self.config.data_dir.clone();
        glommio::executor().spawn_blocking(move || catalog::write_file(&dir, text)).await.map_err(
            |e| TopicError {
                code: errors::UNKNOWN_SERVER_ERROR,
                message: format!("cannot persist the catalog: {e}"),
            },
        )
    }

    /// Creates a topic through the controller, as auto-creation does. Returns the topic when
    /// it exists on this shard afterwards.
    pub async fn ensure_topic(
        self: &Rc<Self>,
        name: &str,
    ) -> Result<Option<TopicMeta>, TopicError> {
        if let Some(meta) = self.catalog.borrow().get(name) {
            return Ok(Some(meta.clone()));
        }
        let create = CreateTopic {
            name: name.to_string(),
            partitions: -1,
            overrides: BTreeMap::new(),
            validate_only: false,
        };
        match self.call(CONTROLLER, ShardRequest::CreateTopic(create)).await {
            ShardResponse::Topic(Ok(_)) => Ok(self.catalog.borrow().get(name).cloned()),
            ShardResponse::Topic(Err(e)) if e.code == errors::TOPIC_ALREADY_EXISTS => {
                Ok(self.catalog.borrow().get(name).cloned())
            }
            ShardResponse::Topic(Err(e)) => Err(e),
            _ => Ok(None),
        }
    }
}
