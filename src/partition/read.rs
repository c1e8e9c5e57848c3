//! Reads, offsets, DeleteRecords and DescribeProducers on the partitions' owner.

use futures::future::join_all;

use super::{OffsetResult, Partitions, ProducerInfo, ReadResult, ReadSpec};
use crate::model::FirstBatch::Whole;
use crate::model::{ErrorCode, Isolation, LeaderEpoch, Offset, TopicPartition};
use crate::storage::log;
use crate::storage::Error as StorageError;

impl Partitions {
    pub(super) async fn read(&self, partitions: Vec<ReadSpec>) -> Vec<ReadResult> {
        let reads = partitions.into_iter().map(|spec| async move {
            let empty = |tp: TopicPartition, code: ErrorCode| ReadResult {
                tp,
                error_code: code,
                high_watermark: Offset::NONE,
                last_stable_offset: Offset::NONE,
                log_start_offset: Offset::NONE,
                aborted: Vec::new(),
                chunks: Vec::new(),
                size_bytes: 0,
                log_end: Offset::NONE,
                diverging: None,
                preferred_read_replica: None,
            };
            let Some(log) = self.log(&spec.tp) else {
                return empty(spec.tp, ErrorCode::UnknownTopicOrPartition);
            };
            // An answer with the log's offsets and nothing read (a diverged follower, a
            // consumer sent to another replica).
            let offsets_only = |tp: &TopicPartition| {
                let l = log.borrow();
                ReadResult {
                    high_watermark: l.high_watermark,
                    last_stable_offset: l.producers.txns.last_stable_offset(l.high_watermark),
                    log_start_offset: l.log_start_offset,
                    log_end: log::log_end(&log),
                    ..empty(tp.clone(), ErrorCode::None)
                }
            };
            // Before the read: an append queued meanwhile wakes a follower's watch.
            let log_end = log::log_end(&log);
            let read = match spec.follower {
                Some(follower) => {
                    let last_epoch = follower.last_epoch;
                    let diverged = diverging(&log.borrow(), log_end, spec.offset, last_epoch);
                    if let Some(diverging) = diverged {
                        return ReadResult { diverging: Some(diverging), ..offsets_only(&spec.tp) };
                    }
                    let resumed =
                        self.resumed_divergence(&spec.tp, follower.node, last_epoch, spec.offset);
                    if let Some(diverging) = resumed {
                        return ReadResult { diverging: Some(diverging), ..offsets_only(&spec.tp) };
                    }
                    self.on_follower_fetch(&spec.tp, follower, spec.offset).await;
                    log::read_for_follower(&log, spec.offset, spec.size_bytes_max).await
                }
                None => {
                    // Leading: another replica may serve this consumer (KIP-392); then
                    // nothing is read, and the answer carries this leader's offsets.
                    let offset = spec.offset;
                    let preferred = spec.client_rack.as_ref().and_then(|client| {
                        let leader_end = log::log_end(&log);
                        self.preferred_read_replica(&spec.tp, client, leader_end, offset)
                    });
                    if preferred.is_some() {
                        return ReadResult {
                            preferred_read_replica: preferred,
                            ..offsets_only(&spec.tp)
                        };
                    }
                    if !self.serves_consumers(&spec.tp) {
                        return empty(spec.tp, ErrorCode::NotLeaderOrFollower);
                    }
                    log::read_below(&log, offset, spec.size_bytes_max, Whole, spec.isolation).await
                }
            };
            match read {
                Ok(outcome) => ReadResult {
                    tp: spec.tp,
                    error_code: ErrorCode::None,
                    high_watermark: outcome.high_watermark,
                    last_stable_offset: outcome.last_stable_offset,
                    aborted: outcome.aborted,
                    log_start_offset: outcome.log_start_offset,
                    chunks: outcome.chunks,
                    size_bytes: outcome.size_bytes,
                    log_end,
                    diverging: None,
                    preferred_read_replica: None,
                },
                Err(StorageError::OffsetOutOfRange) => {
                    let l = log.borrow();
                    ReadResult {
                        high_watermark: l.high_watermark,
                        last_stable_offset: l.producers.txns.last_stable_offset(l.high_watermark),
                        log_start_offset: l.log_start_offset,
                        log_end: l.written_end,
                        ..empty(spec.tp.clone(), ErrorCode::OffsetOutOfRange)
                    }
                }
                Err(StorageError::Deleted) => empty(spec.tp, ErrorCode::UnknownTopicOrPartition),
                // Kafka's answer to a log that does not parse where a fetch starts; the client
                // reports it to the application instead of fetching nothing for ever.
                Err(e @ StorageError::Corrupt { .. }) => {
                    let now_ms = self.started.elapsed().as_millis() as u64;
                    if let Some(held) = self.corrupt_reads.borrow_mut().admit(now_ms) {
                        let since_last_line = held + 1;
                        tracing::error!(tp = %spec.tp, since_last_line, "read failed: {e}");
                    }
                    empty(spec.tp, ErrorCode::CorruptMessage)
                }
                Err(e) => {
                    tracing::warn!(tp = %spec.tp, "read failed: {e}");
                    empty(spec.tp, ErrorCode::UnknownServerError)
                }
            }
        });
        join_all(reads).await
    }

    pub(super) async fn list_offsets(
        &self,
        partitions: Vec<(TopicPartition, i64)>,
        isolation: Isolation,
    ) -> Vec<OffsetResult> {
        let mut out = Vec::with_capacity(partitions.len());
        for (tp, timestamp) in partitions {
            let failed = |tp, error_code| OffsetResult {
                tp,
                error_code,
                offset: Offset::NONE,
                timestamp: -1,
            };
            let Some(log) = self.log(&tp) else {
                out.push(failed(tp, ErrorCode::UnknownTopicOrPartition));
                continue;
            };
            let (start, end) = {
                let l = log.borrow();
                let end = match isolation {
                    Isolation::ReadCommitted => {
                        l.producers.txns.last_stable_offset(l.high_watermark)
                    }
                    Isolation::ReadUncommitted => l.high_watermark,
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
                    OffsetResult { tp, error_code: ErrorCode::None, offset, timestamp: ts }
                }
                Ok(None) if timestamp < -4 => failed(tp, ErrorCode::InvalidRequest),
                Ok(None) => failed(tp, ErrorCode::None),
                Err(e) => {
                    tracing::warn!(%tp, "list offsets failed: {e}");
                    failed(tp, ErrorCode::UnknownServerError)
                }
            };
            out.push(result);
        }
        out
    }

    pub(super) async fn delete_records(
        &self,
        partitions: Vec<(TopicPartition, Offset)>,
    ) -> Vec<OffsetResult> {
        let mut out = Vec::with_capacity(partitions.len());
        for (tp, offset) in partitions {
            let result = match self.log(&tp) {
                None => Err(ErrorCode::UnknownTopicOrPartition),
                Some(log) => log::delete_records(&log, offset).await.map_err(|e| match e {
                    StorageError::OffsetOutOfRange => ErrorCode::OffsetOutOfRange,
                    StorageError::Deleted => ErrorCode::UnknownTopicOrPartition,
                    e => {
                        tracing::warn!(%tp, "delete records failed: {e}");
                        ErrorCode::UnknownServerError
                    }
                }),
            };
            let (error_code, offset) = match result {
                Ok(start) => (ErrorCode::None, start),
                Err(code) => (code, Offset::NONE),
            };
            out.push(OffsetResult { tp, error_code, offset, timestamp: -1 });
        }
        out
    }

    pub(super) fn describe_producers(
        &self,
        partitions: Vec<TopicPartition>,
    ) -> Vec<(TopicPartition, Result<Vec<ProducerInfo>, ErrorCode>)> {
        partitions
            .into_iter()
            .map(|tp| {
                let Some(log) = self.log(&tp) else {
                    return (tp, Err(ErrorCode::UnknownTopicOrPartition));
                };
                let l = log.borrow();
                let infos = l
                    .producers
                    .entries()
                    .map(|(producer_id, entry)| {
                        let last = entry.batches.back();
                        ProducerInfo {
                            producer_id,
                            producer_epoch: entry.epoch,
                            last_sequence: last.map_or(-1, |b| b.last_sequence),
                            last_timestamp: last.map_or(-1, |b| b.timestamp),
                            current_txn_start_offset: l
                                .producers
                                .txns
                                .open_transaction(producer_id)
                                .unwrap_or(Offset::NONE),
                        }
                    })
                    .collect();
                (tp, Ok(infos))
            })
            .collect()
    }
}

/// Where a follower's log diverges from this leader's (KIP-279, Kafka's
/// `Partition.fetchRecords`): the follower's last epoch ends here before its fetch offset,
/// or this log never had that epoch. None when it does not diverge (or it has no epochs).
/// `log_end` counts the batches still being written: followers are served them.
fn diverging(
    l: &crate::storage::log::Log,
    log_end: Offset,
    fetch_offset: Offset,
    last_epoch: LeaderEpoch,
) -> Option<(LeaderEpoch, Offset)> {
    if last_epoch.0 < 0 {
        return None;
    }
    let (epoch, end) = l.epochs.end_offset_for(last_epoch, log_end)?;
    (end < fetch_offset || epoch != last_epoch).then_some((epoch, end))
}
