//! Produce and transaction markers on the partitions' owner.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::{join_all, Either};

use super::{LogRef, PartitionRequest, PartitionResponse, Partitions, ProduceResult};
use crate::constants::{PRODUCE_KEY_CHECK_DECOMPRESSED_MAX, TXN_MARKER_REPLICATION_TIMEOUT_MS};
use crate::model::record_scan;
use crate::model::{ErrorCode, Offset, ShardId, TopicPartition};
use crate::storage::log::{self, Marker};
use crate::storage::Error as StorageError;

/// A partition whose delayed-delivery headers were refused: the message and record errors.
type Refused = (TopicPartition, String, Vec<(i32, String)>);

impl Partitions {
    /// Admits a produce on this shard, without an await: each partition's batches get their
    /// offsets and are queued for writing before this returns, so produces admitted one after
    /// another are ordered as they were admitted. The future it gives answers each partition
    /// once its write is durable (with acks=all on a replicated partition, once its high
    /// watermark passed it: every in-sync replica has it), or with REQUEST_TIMED_OUT at
    /// `timeout_ms` (a delayed produce; the write itself goes on, as in Kafka). One delayed
    /// operation covers the whole request. Below the free-space reserve (`storage::space`)
    /// nothing is admitted: every partition answers KAFKA_STORAGE_ERROR (retriable) with
    /// the numbers. acks=all to a replicated partition with fewer in-sync replicas than its
    /// `min.insync.replicas` is refused with NOT_ENOUGH_REPLICAS before it is written, and
    /// answered NOT_ENOUGH_REPLICAS_AFTER_APPEND when the ISR shrank below it meanwhile.
    pub fn admit_produce(
        self: &Rc<Self>,
        partitions: Vec<(TopicPartition, Vec<Bytes>)>,
        timeout_ms: i32,
        acks: i16,
    ) -> impl Future<Output = Vec<ProduceResult>> + 'static {
        let bytes: usize =
            partitions.iter().flat_map(|(_, batches)| batches.iter().map(Bytes::len)).sum();
        let refused = self.shard.space.admit(bytes as u64).err().map(|refusal| refusal.to_string());
        let mut replicated = Vec::new();
        let mut keyless = Vec::new();
        // Refusals of delayed delivery (a bad header): their message and record errors.
        let mut refusals: Vec<Refused> = Vec::new();
        let mut admitted: Vec<(TopicPartition, Result<log::Appending, ErrorCode>)> = partitions
            .into_iter()
            .map(|(tp, batches)| {
                let appending = match self.log(&tp) {
                    Some(_) if refused.is_some() => Err(ErrorCode::KafkaStorageError),
                    Some(log) if log.borrow().config.cleanup.compact => {
                        match keyless_of(&batches) {
                            Some(records) => {
                                keyless.push((tp.clone(), records));
                                Err(ErrorCode::InvalidRecord)
                            }
                            None => self.enqueue_or_delay(
                                &tp,
                                &log,
                                batches,
                                acks,
                                &mut replicated,
                                &mut refusals,
                            ),
                        }
                    }
                    Some(log) if acks == -1 && self.too_few_in_sync(&tp, &log) => {
                        Err(ErrorCode::NotEnoughReplicas)
                    }
                    Some(log) => self.enqueue_or_delay(
                        &tp,
                        &log,
                        batches,
                        acks,
                        &mut replicated,
                        &mut refusals,
                    ),
                    None => Err(ErrorCode::UnknownTopicOrPartition),
                };
                (tp, appending)
            })
            .collect();
        let this = self.clone();
        let timeout = std::time::Duration::from_millis(timeout_ms.max(1) as u64);
        let expiry = self.shard.delayed.wait([], timeout);
        async move {
            // Queued: followers read the batches now, while they are written here.
            for (tp, appending) in &admitted {
                if appending.is_ok() && this.has_followers(tp) {
                    this.notify_replicas(tp).await;
                }
            }
            let mut unreplicated = Vec::new();
            {
                let writes = admitted.iter_mut().filter_map(|(_, a)| a.as_mut().ok());
                let durable = join_all(writes.map(|a| a.wait()));
                let written: Vec<TopicPartition> =
                    replicated.iter().map(|(tp, _)| tp.clone()).collect();
                let waits = replicated.iter_mut().map(|(tp, wait)| async move {
                    let passed = match wait.as_mut() {
                        Some(wait) => wait.await.is_ok(),
                        None => true,
                    };
                    *wait = None;
                    (tp.clone(), passed)
                });
                let this = &this;
                let all = async move {
                    durable.await;
                    // Written here: the followers waiting in a fetch read it now.
                    for tp in &written {
                        this.notify_partition(tp).await;
                    }
                    join_all(waits).await
                };
                futures::pin_mut!(all);
                match futures::future::select(all, expiry.done).await {
                    Either::Left((passed, _)) => {
                        // Every write landed first: retire the timeout operation now.
                        this.shard.delayed.cancel(expiry.id);
                        unreplicated.extend(passed.into_iter().filter(|(_, ok)| !ok));
                    }
                    Either::Right(_) => {}
                }
            }
            // Still waiting for followers: timed out, as Kafka's delayed produce.
            let late_replication: Vec<TopicPartition> = replicated
                .iter()
                .filter(|(_, wait)| wait.is_some())
                .map(|(tp, _)| tp.clone())
                .collect();
            let mut results = Vec::with_capacity(admitted.len());
            let mut late = Vec::new();
            for (tp, appending) in admitted {
                let failed = |tp: TopicPartition, error_code| {
                    let delayed = refusals.iter().find(|(refused, ..)| *refused == tp);
                    if let Some((_, message, records)) = delayed {
                        return ProduceResult {
                            error_message: (!message.is_empty()).then(|| message.clone()),
                            record_errors: records.clone(),
                            tp,
                            error_code,
                            base_offset: Offset::NONE,
                            log_append_time: -1,
                            log_start_offset: Offset::NONE,
                        };
                    }
                    let record_errors = match keyless.iter().find(|(keyless, _)| *keyless == tp) {
                        Some((_, records)) if error_code == ErrorCode::InvalidRecord => records
                            .iter()
                            .map(|index| {
                                let message = format!(
                                    "Compacted topic cannot accept message without key in \
                                     topic partition {tp}."
                                );
                                (*index, message)
                            })
                            .collect(),
                        _ => Vec::new(),
                    };
                    let error_message = match error_code {
                        ErrorCode::KafkaStorageError => refused.clone(),
                        // Kafka's RecordValidationException text.
                        ErrorCode::InvalidRecord if !record_errors.is_empty() => Some(format!(
                            "One or more records have been rejected due to {} record errors \
                             in total, and only showing the first three errors at most: [{}]",
                            record_errors.len(),
                            record_errors
                                .iter()
                                .take(3)
                                .map(|(index, message)| format!(
                                    "RecordError(batchIndex={index}, message='{message}')"
                                ))
                                .collect::<Vec<_>>()
                                .join(", ")
                        )),
                        _ => None,
                    };
                    ProduceResult {
                        error_message,
                        record_errors,
                        tp,
                        error_code,
                        base_offset: Offset::NONE,
                        log_append_time: -1,
                        log_start_offset: Offset::NONE,
                    }
                };
                let mut appending = match appending {
                    Ok(appending) => appending,
                    Err(code) => {
                        results.push(failed(tp, code));
                        continue;
                    }
                };
                match appending.outcome() {
                    Some(Ok(_)) if late_replication.contains(&tp) => {
                        this.notify_partition(&tp).await;
                        results.push(failed(tp, ErrorCode::RequestTimedOut));
                    }
                    // This node stopped leading before the followers had the records.
                    Some(Ok(_)) if unreplicated.iter().any(|(lost, _)| *lost == tp) => {
                        results.push(failed(tp, ErrorCode::NotLeaderOrFollower));
                    }
                    Some(Ok(_)) if acks == -1 && this.below_min_in_sync(&tp) => {
                        this.notify_partition(&tp).await;
                        results.push(failed(tp, ErrorCode::NotEnoughReplicasAfterAppend));
                    }
                    Some(Ok(info)) => {
                        this.notify_partition(&tp).await;
                        results.push(ProduceResult {
                            tp,
                            error_code: ErrorCode::None,
                            error_message: None,
                            record_errors: Vec::new(),
                            base_offset: info.base_offset,
                            log_append_time: info.log_append_time,
                            log_start_offset: info.log_start_offset,
                        });
                    }
                    Some(Err(_)) => results.push(failed(tp, ErrorCode::UnknownTopicOrPartition)),
                    None => {
                        late.push((tp.clone(), appending));
                        results.push(failed(tp, ErrorCode::RequestTimedOut));
                    }
                }
            }
            if !late.is_empty() {
                // Timed out but still being written: fetches waiting on these partitions
                // hear of the data when it lands.
                glommio::spawn_local(async move {
                    for (tp, mut appending) in late {
                        appending.wait().await;
                        this.notify_partition(&tp).await;
                    }
                })
                .detach();
            }
            results
        }
    }

    /// On a topic with delayed delivery, batches due later go to the partition's delay log
    /// (`delay.rs`; a refusal's message and record errors go to `refusals`); everything
    /// else is appended as usual.
    #[allow(clippy::type_complexity)]
    fn enqueue_or_delay(
        &self,
        tp: &TopicPartition,
        log: &super::LogRef,
        batches: Vec<Bytes>,
        acks: i16,
        replicated: &mut Vec<(TopicPartition, Option<futures::channel::oneshot::Receiver<()>>)>,
        refusals: &mut Vec<Refused>,
    ) -> Result<log::Appending, ErrorCode> {
        match self.admit_delayed(tp, log, &batches) {
            None => self.enqueue_produce(tp, log, batches, acks, replicated),
            Some(Ok(appending)) => Ok(appending),
            Some(Err((code, message, records))) => {
                refusals.push((tp.clone(), message, records));
                Err(code)
            }
        }
    }

    /// The first stage of one partition's produce: offsets assigned, write queued.
    fn enqueue_produce(
        &self,
        tp: &TopicPartition,
        log: &super::LogRef,
        batches: Vec<Bytes>,
        acks: i16,
        replicated: &mut Vec<(TopicPartition, Option<futures::channel::oneshot::Receiver<()>>)>,
    ) -> Result<log::Appending, ErrorCode> {
        self.mark_for_retention(tp);
        let appending = log::enqueue(log, batches).map_err(|e| match e {
            StorageError::Producer(e) => e.error_code(),
            _ => ErrorCode::UnknownTopicOrPartition,
        });
        if appending.is_ok() && acks == -1 && self.isr_len(tp).is_some() {
            let last = Offset(log::log_end(log).0 - 1);
            replicated.push((tp.clone(), log::wait_high_watermark(log, last)));
        }
        appending
    }

    /// acks=all needs `min.insync.replicas` in-sync replicas of a replicated partition led
    /// here.
    fn too_few_in_sync(&self, tp: &TopicPartition, log: &super::LogRef) -> bool {
        let wanted = usize::try_from(log.borrow().config.min_insync_replicas).unwrap_or(1);
        self.isr_len(tp).is_some_and(|in_sync| in_sync < wanted)
    }

    fn below_min_in_sync(&self, tp: &TopicPartition) -> bool {
        self.log(tp).is_some_and(|log| self.too_few_in_sync(tp, &log))
    }

    /// Admits a produce on `owner` and gives the future of its results. On this shard it is
    /// admitted before this returns; on another, the request is on the mesh before this
    /// returns, and a shard serves the requests of one peer in the order they were sent.
    /// Either way, produces admitted in turn by one connection keep their order.
    pub async fn admit_produce_on(
        self: &Rc<Self>,
        owner: ShardId,
        partitions: Vec<(TopicPartition, Vec<Bytes>)>,
        timeout_ms: i32,
        acks: i16,
    ) -> Pin<Box<dyn Future<Output = Vec<ProduceResult>>>> {
        if owner == self.shard.id {
            return Box::pin(self.admit_produce(partitions, timeout_ms, acks));
        }
        let request = PartitionRequest::Produce { partitions, timeout_ms, acks };
        let answer = self.mesh.send(owner, request).await;
        Box::pin(async move {
            match answer {
                Some(answer) => match answer.await {
                    Ok(PartitionResponse::Produce(results)) => results,
                    _ => Vec::new(),
                },
                None => Vec::new(),
            }
        })
    }

    /// Appends transaction markers, one per partition, as Kafka's WriteTxnMarkers does:
    /// only where this node leads the partition (NOT_LEADER_OR_FOLLOWER elsewhere: a
    /// follower's log takes only what its leader wrote), and on a replicated partition
    /// answered once the high watermark passed the marker (acks=all), so that a marker
    /// acknowledged to the coordinator survives a change of leader. A marker whose
    /// replication does not finish (the leader changed, or not within
    /// `TXN_MARKER_REPLICATION_TIMEOUT_MS`) is NOT_LEADER_OR_FOLLOWER or
    /// REQUEST_TIMED_OUT, and the coordinator writes it again: a second marker for a
    /// transaction already ended changes nothing.
    pub(super) async fn write_markers(
        &self,
        markers: Vec<(TopicPartition, Marker)>,
    ) -> Vec<(TopicPartition, ErrorCode)> {
        let writes = markers.into_iter().map(|(tp, marker)| async move {
            let led = {
                let catalog = self.shard.catalog.borrow();
                catalog.get(&tp.topic).map(|meta| {
                    (0..meta.partitions).contains(&tp.partition)
                        && meta.is_led_by(tp.partition, self.shard.config.node_id)
                })
            };
            match (led, self.log(&tp)) {
                (Some(true), Some(log)) => {
                    let code = self.write_marker(&tp, &log, marker).await;
                    (tp, code)
                }
                (Some(false), _) => (tp, ErrorCode::NotLeaderOrFollower),
                _ => (tp, ErrorCode::UnknownTopicOrPartition),
            }
        });
        join_all(writes).await
    }

    async fn write_marker(&self, tp: &TopicPartition, log: &LogRef, marker: Marker) -> ErrorCode {
        self.mark_for_retention(tp);
        // Delayed batches of the transaction are scheduled or dropped first (`delay.rs`).
        if !self.end_delayed_txn(tp, marker.producer_id, marker.outcome).await {
            return ErrorCode::KafkaStorageError;
        }
        let offset = match log::append_marker(log, marker).await {
            Ok(offset) => offset,
            Err(StorageError::Producer(e)) => return e.error_code(),
            Err(_) => return ErrorCode::UnknownTopicOrPartition,
        };
        // Written here: followers waiting in a fetch read it now.
        self.notify_partition(tp).await;
        if self.isr_len(tp).is_none() {
            return ErrorCode::None;
        }
        let Some(wait) = log::wait_high_watermark(log, offset) else {
            return ErrorCode::None;
        };
        let timeout = Duration::from_millis(TXN_MARKER_REPLICATION_TIMEOUT_MS);
        match glommio::timer::timeout(timeout, async { Ok(wait.await) }).await {
            Ok(Ok(())) => ErrorCode::None,
            // This node stopped leading before the followers had the marker.
            Ok(Err(_)) => ErrorCode::NotLeaderOrFollower,
            Err(_) => ErrorCode::RequestTimedOut,
        }
    }
}

/// The records without a key, by index in their batch (Produce v3+ sends one batch per
/// partition; with several, indexes run on across them), or None when every record has one:
/// a compacted topic refuses a produce with a keyless record (or records that cannot be
/// read, reported as index 0) with INVALID_RECORD, as Kafka does. The only place produce
/// reads records, and only for compacted topics.
fn keyless_of(batches: &[Bytes]) -> Option<Vec<i32>> {
    let mut keyless = Vec::new();
    let mut first = 0i32;
    for batch in batches {
        match record_scan::keyless_records(batch, PRODUCE_KEY_CHECK_DECOMPRESSED_MAX) {
            Ok(indexes) => keyless.extend(indexes.into_iter().map(|i| first + i)),
            Err(_) => keyless.push(first),
        }
        first += crate::model::batch::BatchHeader::parse(batch).map_or(0, |h| h.records_count());
    }
    (!keyless.is_empty()).then_some(keyless)
}
