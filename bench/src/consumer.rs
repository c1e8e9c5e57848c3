//! One consumer thread: reads its share of the partitions and records end-to-end latency.
//!
//! Consumers are assigned partitions directly (no consumer group): the bench measures the
//! broker's produce and fetch paths, not group rebalancing, and a group join would delay the
//! start by seconds. Each consumer starts at explicit offsets that the orchestrator looked up
//! before the producers started, so an end-to-end run cannot miss its first records.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;

use crate::clock::Clock;
use crate::payload::Header;
use crate::producer::{error_kind, Timeline};
use crate::stats::{bump, ConsumerStats, ErrorCounts};

/// How long one poll may block; bounds how late a consumer notices the stop flag.
const POLL_TIMEOUT: Duration = Duration::from_millis(100);

pub struct ConsumerCtx {
    pub errors: Arc<ErrorCounts>,
}

impl ClientContext for ConsumerCtx {
    fn error(&self, error: KafkaError, _reason: &str) {
        self.errors.add(format!("consumer client: {}", error_kind(&error)));
    }
}

impl ConsumerContext for ConsumerCtx {}

pub struct ConsumerSetup {
    pub clock: Clock,
    /// End to end: only records carrying `run_id` count, and their latency is recorded.
    pub end_to_end: bool,
    pub open_loop: bool,
    pub run_id: u32,
}

pub fn run(
    setup: ConsumerSetup,
    consumer: BaseConsumer<ConsumerCtx>,
    stats: Arc<ConsumerStats>,
    timeline: Arc<Timeline>,
    stop: Arc<AtomicBool>,
) {
    let errors = Arc::clone(&consumer.context().errors);
    let warmup_end_ns = timeline.warmup_end_ns();
    while !stop.load(Ordering::Relaxed) {
        let message = match consumer.poll(POLL_TIMEOUT) {
            None => continue,
            Some(Err(error)) => {
                errors.add(format!("consume: {}", error_kind(&error)));
                continue;
            }
            Some(Ok(message)) => message,
        };
        let now_ns = setup.clock.wall_ns();
        let payload = message.payload().unwrap_or(&[]);
        let bytes = (payload.len() + message.key().map_or(0, <[u8]>::len)) as u64;
        bump(&stats.consumed_total, 1);
        bump(&stats.consumed_bytes_total, bytes);
        if !setup.end_to_end {
            if now_ns >= warmup_end_ns {
                bump(&stats.consumed_measured, 1);
                bump(&stats.consumed_bytes_measured, bytes);
            }
            continue;
        }
        let header = match Header::read(payload) {
            Some(header) if header.run_id == setup.run_id => header,
            _ => {
                bump(&stats.foreign_records, 1);
                continue;
            }
        };
        bump(&stats.run_records, 1);
        if header.intended_ns < warmup_end_ns {
            continue;
        }
        bump(&stats.consumed_measured, 1);
        bump(&stats.consumed_bytes_measured, bytes);
        stats.end_to_end.record_span(header.intended_ns, now_ns);
        if setup.open_loop {
            stats.end_to_end_uncorrected.record_span(header.sent_ns, now_ns);
        }
    }
}
