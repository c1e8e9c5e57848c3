//! Produce and transaction markers on the partitions' owner.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

use bytes::Bytes;
use futures::future::{join_all, Either};

use super::{PartitionRequest, PartitionResponse, Partitions, ProduceResult};
use crate::model::{ErrorCode, Offset, ShardId, TopicPartition};
use crate::storage::log::{self, Marker};
use crate::storage::Error as StorageError;

impl Partitions {
    /// Admits a produce on this shard, without an await: each partition's batches get their
    /// offsets and are queued for writing before this returns, so produces admitted one after
    /// another are ordered as they were admitted. The future it gives answers each partition
    /// once its write is durable, or with REQUEST_TIMED_OUT at `timeout_ms` (a delayed
    /// produce; the write itself goes on, as in Kafka). One delayed operation covers the
    /// whole request. Below the free-space reserve (`storage::space`) nothing is admitted:
    /// every partition answers KAFKA_STORAGE_ERROR (retriable) with the numbers.
    pub fn admit_produce(
        self: &Rc<Self>,
        partitions: Vec<(TopicPartition, Vec<Bytes>)>,
        timeout_ms: i32,
    ) -> impl Future<Output = Vec<ProduceResult>> + 'static {
        let bytes: usize =
            partitions.iter().flat_map(|(_, batches)| batches.iter().map(Bytes::len)).sum();
        let refused = self.shard.space.admit(bytes as u64).err().map(|refusal| refusal.to_string());
        let mut admitted: Vec<(TopicPartition, Result<log::Appending, ErrorCode>)> = partitions
            .into_iter()
            .map(|(tp, batches)| {
                let appending = match self.log(&tp) {
                    Some(_) if refused.is_some() => Err(ErrorCode::KafkaStorageError),
                    Some(log) => {
                        self.mark_for_retention(&tp);
                        log::enqueue(&log, batches).map_err(|e| match e {
                            StorageError::Producer(e) => e.error_code(),
                            _ => ErrorCode::UnknownTopicOrPartition,
                        })
                    }
                    None => Err(ErrorCode::UnknownTopicOrPartition),
                };
                (tp, appending)
            })
            .collect();
        let this = self.clone();
        let timeout = std::time::Duration::from_millis(timeout_ms.max(1) as u64);
        let expiry = self.shard.delayed.wait([], timeout);
        async move {
            {
                let writes = admitted.iter_mut().filter_map(|(_, a)| a.as_mut().ok());
                let durable = join_all(writes.map(|a| a.wait()));
                futures::pin_mut!(durable);
                if let Either::Left(_) = futures::future::select(durable, expiry.done).await {
                    // Every write landed first: retire the timeout operation now.
                    this.shard.delayed.cancel(expiry.id);
                }
            }
            let mut results = Vec::with_capacity(admitted.len());
            let mut late = Vec::new();
            for (tp, appending) in admitted {
                let failed = |tp, error_code| ProduceResult {
                    tp,
                    error_code,
                    error_message: (error_code == ErrorCode::KafkaStorageError)
                        .then(|| refused.clone())
                        .flatten(),
                    base_offset: Offset::NONE,
                    log_append_time: -1,
                    log_start_offset: Offset::NONE,
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
                        this.notify_partition(&tp).await;
                        results.push(ProduceResult {
                            tp,
                            error_code: ErrorCode::None,
                            error_message: None,
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

    /// Admits a produce on `owner` and gives the future of its results. On this shard it is
    /// admitted before this returns; on another, the request is on the mesh before this
    /// returns, and a shard serves the requests of one peer in the order they were sent.
    /// Either way, produces admitted in turn by one connection keep their order.
    pub async fn admit_produce_on(
        self: &Rc<Self>,
        owner: ShardId,
        partitions: Vec<(TopicPartition, Vec<Bytes>)>,
        timeout_ms: i32,
    ) -> Pin<Box<dyn Future<Output = Vec<ProduceResult>>>> {
        if owner == self.shard.id {
            return Box::pin(self.admit_produce(partitions, timeout_ms));
        }
        let request = PartitionRequest::Produce { partitions, timeout_ms };
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

    /// Appends transaction markers, one per partition.
    pub(super) async fn write_markers(
        &self,
        markers: Vec<(TopicPartition, Marker)>,
    ) -> Vec<(TopicPartition, ErrorCode)> {
        let writes = markers.into_iter().map(|(tp, marker)| async move {
            let Some(log) = self.log(&tp) else {
                return (tp, ErrorCode::UnknownTopicOrPartition);
            };
            self.mark_for_retention(&tp);
            let code = match log::append_marker(&log, marker).await {
                Ok(_) => {
                    self.notify_partition(&tp).await;
                    ErrorCode::None
                }
                Err(StorageError::Producer(e)) => e.error_code(),
                Err(_) => ErrorCode::UnknownTopicOrPartition,
            };
            (tp, code)
        });
        join_all(writes).await
    }
}
