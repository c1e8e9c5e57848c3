//! One follower fetcher: the partitions a shard follows from one leader node, fetched over
//! one connection to the leader's client listener with Kafka's Fetch v12 as a broker sends
//! it (replica id = this node, the epoch of each partition's last batch for KIP-279
//! divergence checks, no fetch session). Each response's whole batches are appended as the
//! leader wrote them; a diverging epoch truncates the log to its end offset; the leader's
//! high watermark becomes the log's bound. The next fetch goes out once every append of
//! the last one is written, so its fetch offsets are the log ends the leader needs to move
//! its high watermark.
//!
//! Failures (leader unreachable, connection lost, a response that does not decode, no
//! response within `REPLICA_FETCH_TIMEOUT_MS` past the fetch's wait) reconnect after a
//! back-off; errors of one partition (not the leader any more, unknown) leave it to the next
//! metadata change.

use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_lite::AsyncWriteExt;
use glommio::net::TcpStream;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{ApiKey, FetchRequest, FetchResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use crate::cluster::{broker_client, Cluster};
use crate::constants::{
    REPEATED_WARNING_INTERVAL_MS, REPLICA_FETCH_BACKOFF_MS_MAX, REPLICA_FETCH_BACKOFF_MS_MIN,
    REPLICA_FETCH_BYTES_MAX, REPLICA_FETCH_PARTITION_BYTES_MAX, REPLICA_FETCH_RESPONSE_BYTES_MAX,
    REPLICA_FETCH_TIMEOUT_MS,
};
use crate::model::batch::BatchHeader;
use crate::model::{ErrorCode, NodeId, Offset, ShardId, TopicPartition};
use crate::partition::{FetchPosition, Partitions};
use crate::throttle::Failures;

const FETCH_VERSION: i16 = 12;

pub(super) struct Fetcher {
    pub me: NodeId,
    pub leader: NodeId,
    pub shard: ShardId,
    pub partitions: Rc<Partitions>,
    pub cluster: Rc<Cluster>,
}

impl Fetcher {
    /// Fetches until this shard follows nothing from the leader.
    pub async fn run(self) {
        let started = Instant::now();
        let mut failures = Failures::new(
            REPLICA_FETCH_BACKOFF_MS_MIN,
            REPLICA_FETCH_BACKOFF_MS_MAX,
            REPEATED_WARNING_INTERVAL_MS * 10,
        );
        tracing::debug!(leader = %self.leader, shard = self.shard.0, "follower fetcher started");
        loop {
            if self.partitions.fetch_positions(self.leader).is_empty() {
                return;
            }
            let outcome = match self.connect().await {
                Ok(stream) => self.fetch_on(stream, &mut failures).await,
                Err(e) => Err(e),
            };
            if let Err(e) = outcome {
                let (wait_ms, line) = failures.failed(started.elapsed().as_millis() as u64);
                if let Some(held) = line {
                    tracing::warn!(
                        leader = %self.leader,
                        failed_since_last_line = held + 1,
                        "follower fetch failed: {e}; retrying"
                    );
                }
                glommio::timer::sleep(Duration::from_millis(wait_ms)).await;
            }
        }
    }

    async fn connect(&self) -> std::io::Result<TcpStream> {
        let timeout = Duration::from_millis(REPLICA_FETCH_BACKOFF_MS_MAX);
        broker_client::connect(&self.cluster, self.leader, timeout).await
    }

    /// Fetches on one connection until it fails or nothing is followed from the leader.
    async fn fetch_on(
        &self,
        mut stream: TcpStream,
        failures: &mut Failures,
    ) -> std::io::Result<()> {
        let mut correlation_id = 0i32;
        loop {
            let positions = self.partitions.fetch_positions(self.leader);
            if positions.is_empty() {
                return Ok(());
            }
            correlation_id = correlation_id.wrapping_add(1);
            let request = self.encode_request(correlation_id, &positions)?;
            stream.write_all(&request).await?;
            let wait_ms = self.cluster.shard.config.replica_fetch_wait_max_ms;
            let timeout = Duration::from_millis(REPLICA_FETCH_TIMEOUT_MS + wait_ms);
            let body = glommio::timer::timeout(timeout, async {
                broker_client::read_frame(&mut stream, REPLICA_FETCH_RESPONSE_BYTES_MAX)
                    .await
                    .map_err(glommio::GlommioError::from)
            })
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?;
            let response = decode_response(body, correlation_id)?;
            let waited = self.apply(&positions, response).await;
            failures.succeeded();
            if waited {
                // Every partition answered an error: give the metadata time to move.
                glommio::timer::sleep(Duration::from_millis(REPLICA_FETCH_BACKOFF_MS_MIN * 2))
                    .await;
            }
        }
    }

    fn encode_request(
        &self,
        correlation_id: i32,
        positions: &[FetchPosition],
    ) -> std::io::Result<BytesMut> {
        let mut topics: Vec<FetchTopic> = Vec::new();
        for position in positions {
            let name = &*position.tp.topic;
            if topics.last().is_none_or(|t| t.topic.0.as_str() != name) {
                let mut topic = FetchTopic::default();
                topic.topic = TopicName(StrBytes::from_string(name.to_string()));
                topics.push(topic);
            }
            let mut partition = FetchPartition::default();
            partition.partition = position.tp.partition;
            // No fencing on the leader's side: the metadata log decides who leads.
            partition.current_leader_epoch = -1;
            partition.fetch_offset = position.log_end.0;
            partition.last_fetched_epoch = position.last_epoch.0;
            partition.log_start_offset = position.log_start.0;
            partition.partition_max_bytes = REPLICA_FETCH_PARTITION_BYTES_MAX;
            if let Some(topic) = topics.last_mut() {
                topic.partitions.push(partition);
            }
        }
        let mut request = FetchRequest::default();
        request.replica_id = self.me.0.into();
        let wait_ms = self.cluster.shard.config.replica_fetch_wait_max_ms;
        request.max_wait_ms = i32::try_from(wait_ms).unwrap_or(i32::MAX);
        request.min_bytes = 1;
        request.max_bytes = REPLICA_FETCH_BYTES_MAX;
        request.isolation_level = 0;
        request.session_id = 0;
        request.session_epoch = -1;
        request.topics = topics;
        let client_id = format!("spate-replica-{}-shard-{}", self.me.0, self.shard.0);
        broker_client::encode_request(
            ApiKey::Fetch,
            FETCH_VERSION,
            correlation_id,
            client_id,
            &request,
        )
    }

    /// Applies one response: appends, truncations, high watermarks. True when no partition
    /// got anything but errors (the caller backs off a little).
    async fn apply(&self, positions: &[FetchPosition], response: FetchResponse) -> bool {
        let mut answered = 0usize;
        let mut errors = 0usize;
        let mut work = Vec::new();
        for topic in response.responses {
            let name = topic.topic.0.as_str().to_string();
            for partition in topic.partitions {
                answered += 1;
                let tp = TopicPartition::new(name.as_str().into(), partition.partition_index);
                let Some(position) = positions.iter().find(|p| p.tp == tp) else { continue };
                let error = ErrorCode::from_code(partition.error_code);
                let high_watermark = Offset(partition.high_watermark);
                match error {
                    Some(ErrorCode::None) => {}
                    Some(ErrorCode::OffsetOutOfRange)
                        if position.log_end < Offset(partition.log_start_offset) =>
                    {
                        // Below the leader's log start (retention or DeleteRecords there
                        // while this replica was away): what it misses is gone, so it starts
                        // again where the leader's log starts.
                        work.push(Work::Restart(tp, Offset(partition.log_start_offset)));
                        continue;
                    }
                    Some(ErrorCode::OffsetOutOfRange) if position.log_end > high_watermark => {
                        // Past the leader's log (a follower without epochs that missed a
                        // leader change): what is above the high watermark is fetched again.
                        work.push(Work::Truncate(tp, high_watermark));
                        continue;
                    }
                    _ => {
                        errors += 1;
                        tracing::debug!(%tp, code = partition.error_code, "follower fetch error");
                        continue;
                    }
                }
                let diverging = &partition.diverging_epoch;
                if diverging.epoch >= 0 && diverging.end_offset >= 0 {
                    work.push(Work::Truncate(tp, Offset(diverging.end_offset)));
                    continue;
                }
                let batches = partition.records.map(whole_batches).unwrap_or_default();
                let log_start = Offset(partition.log_start_offset);
                work.push(Work::Append(tp, batches, high_watermark, log_start));
            }
        }
        let applied = work.into_iter().map(|work| async move {
            match work {
                Work::Append(tp, batches, high_watermark, log_start) => {
                    let partitions = &self.partitions;
                    partitions
                        .append_replica(&tp, self.leader, batches, high_watermark, log_start)
                        .await;
                }
                Work::Truncate(tp, offset) => {
                    tracing::info!(%tp, offset = offset.0, leader = %self.leader, "log diverged");
                    self.partitions.truncate_replica(&tp, offset).await;
                }
                Work::Restart(tp, offset) => {
                    let (log_start, leader) = (offset.0, self.leader);
                    tracing::info!(%tp, log_start, %leader, "behind the leader's log start");
                    self.partitions.restart_replica(&tp, leader, offset).await;
                }
            }
        });
        futures::future::join_all(applied).await;
        answered > 0 && errors == answered
    }
}

enum Work {
    /// Batches, the leader's high watermark and log start.
    Append(TopicPartition, Vec<Bytes>, Offset, Offset),
    Truncate(TopicPartition, Offset),
    /// Empty the log and start at the leader's log start.
    Restart(TopicPartition, Offset),
}

/// The whole batches of a fetch response's records (a last batch cut by the size limit is
/// left for the next fetch), each a slice of the same buffer.
fn whole_batches(records: Bytes) -> Vec<Bytes> {
    let mut batches = Vec::new();
    let mut position = 0;
    while position < records.len() {
        let Ok(header) = BatchHeader::parse(&records[position..]) else { break };
        let end = position + header.size_bytes();
        if header.size_bytes() == 0 || end > records.len() {
            break;
        }
        batches.push(records.slice(position..end));
        position = end;
    }
    batches
}

fn decode_response(body: Bytes, correlation_id: i32) -> std::io::Result<FetchResponse> {
    let response: FetchResponse =
        broker_client::decode_response(body, ApiKey::Fetch, FETCH_VERSION, correlation_id)?;
    if response.error_code != 0 {
        return Err(std::io::Error::other(format!("fetch error {}", response.error_code)));
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::records::build_control_batch;
    use crate::model::{ProducerEpoch, ProducerId, TxnOutcome};

    #[test]
    fn only_whole_batches_are_taken() {
        let one = build_control_batch(1, ProducerId(3), ProducerEpoch(0), TxnOutcome::Commit, 0);
        let mut two = one.clone();
        two.extend_from_slice(&one);
        let records = Bytes::from(two.clone());
        assert_eq!(whole_batches(records.clone()).len(), 2);
        for cut in 1..one.len() {
            let cut_short = records.slice(..one.len() + cut);
            assert_eq!(whole_batches(cut_short), vec![records.slice(..one.len())]);
        }
        assert!(whole_batches(Bytes::new()).is_empty());
        assert!(whole_batches(Bytes::from_static(&[0; 61])).is_empty());
    }
}
