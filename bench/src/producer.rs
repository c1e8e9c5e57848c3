//! One producer thread: generates records on schedule and records publish latency.
//!
//! The sender loop runs on its own thread; librdkafka's delivery reports are served by the
//! `ThreadedProducer`'s polling thread, which blocks in librdkafka until a report arrives. Keeping
//! the two apart means an acknowledgement is timestamped when it arrives, not when the sender
//! next wakes up from waiting for its next intended send time.
//!
//! Open loop: record k of this producer is due at `start + offset + k * gap` (constant) or after
//! exponential gaps (Poisson). When the sender falls behind (the client's queue is full, the
//! thread was descheduled) it sends the overdue records as fast as it can, and their latency
//! still counts from when they were due: that is the coordinated-omission correction.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::SeedableRng;
use rand_distr::{Distribution, Exp};
use rdkafka::client::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};

use crate::clock::{init_thread_timer_slack, Clock};
use crate::payload::{write_key, Header, PayloadPool, KEY_BYTES_MAX};
use crate::spec::{Arrival, KeySampler, KeySpec, RecordSize, Routing};
use crate::stats::{bump, ErrorCounts, ProducerStats};

/// How long the sender waits before retrying when librdkafka's queue is full. Short, because
/// the wait is part of the measured latency in open loop and idle time in closed loop.
const QUEUE_FULL_BACKOFF: Duration = Duration::from_micros(200);
/// An open-loop record handed to the client later than this after its intended time counts as
/// late; more than `LATE_FRACTION_MAX` of them means the bench did not keep up.
pub const LATE_SEND_NS: u64 = 10_000_000;

/// Start and end of the run, in wall ns; written once by the orchestrator before any record is
/// sent, read by the senders and the delivery callbacks.
#[derive(Default)]
pub struct Timeline {
    start_ns: AtomicU64,
    warmup_end_ns: AtomicU64,
    /// `u64::MAX` when the run ends after a record count rather than a duration.
    end_ns: AtomicU64,
}

impl Timeline {
    pub fn set(&self, start_ns: u64, warmup_end_ns: u64, end_ns: u64) {
        assert!(start_ns <= warmup_end_ns);
        assert!(warmup_end_ns <= end_ns);
        self.start_ns.store(start_ns, Ordering::Release);
        self.warmup_end_ns.store(warmup_end_ns, Ordering::Release);
        self.end_ns.store(end_ns, Ordering::Release);
    }

    pub fn start_ns(&self) -> u64 {
        self.start_ns.load(Ordering::Acquire)
    }

    pub fn warmup_end_ns(&self) -> u64 {
        self.warmup_end_ns.load(Ordering::Acquire)
    }

    pub fn end_ns(&self) -> u64 {
        self.end_ns.load(Ordering::Acquire)
    }
}

/// The client context: where librdkafka's delivery reports and client errors land.
pub struct ProducerCtx {
    pub clock: Clock,
    pub stats: Arc<ProducerStats>,
    pub errors: Arc<ErrorCounts>,
    pub timeline: Arc<Timeline>,
    pub open_loop: bool,
}

impl ClientContext for ProducerCtx {
    fn error(&self, error: KafkaError, _reason: &str) {
        self.errors.add(format!("producer client: {}", error_kind(&error)));
    }
}

impl ProducerContext for ProducerCtx {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _opaque: ()) {
        let now_ns = self.clock.wall_ns();
        match result {
            Ok(message) => {
                let payload = message.payload().unwrap_or(&[]);
                let bytes = (payload.len() + message.key().map_or(0, <[u8]>::len)) as u64;
                let Some(header) = Header::read(payload) else {
                    bump(&self.stats.acked_total, 1);
                    bump(&self.stats.acked_bytes_total, bytes);
                    return;
                };
                let warmup_end_ns = self.timeline.warmup_end_ns();
                count_acked(&self.stats, now_ns, &header, bytes, warmup_end_ns, self.open_loop);
            }
            Err((error, _message)) => {
                bump(&self.stats.failed_total, 1);
                self.errors.add(format!("delivery: {}", error_kind(error)));
            }
        }
    }
}

/// A short, stable name for an error kind, e.g. "MessageTimedOut".
pub fn error_kind(error: &KafkaError) -> String {
    match error.rdkafka_error_code() {
        Some(code) => format!("{code:?}"),
        None => error.to_string(),
    }
}

/// What one producer thread needs; built by the orchestrator.
pub struct ProducerSetup {
    pub clock: Clock,
    pub topic: String,
    pub partitions: i32,
    pub record_size: RecordSize,
    pub keys: KeySpec,
    /// Records per second for this producer; `None` is closed loop.
    pub rate: Option<f64>,
    pub arrival: Arrival,
    /// This producer's first intended send time is `start + phase_ns` so that producers with
    /// constant arrivals do not all send at the same instant.
    pub phase_ns: u64,
    /// Measured records this producer sends before it stops, instead of a duration.
    pub quota: Option<u64>,
    pub run_id: u32,
    pub seed: u64,
    pub pool: Arc<PayloadPool>,
    pub drain_timeout: Duration,
    /// Transactional producers: commit a transaction this often.
    pub txn_interval: Option<Duration>,
}

/// Runs the sender loop until the timeline's end, the quota, or `stop`; then waits up to the
/// drain timeout for outstanding acknowledgements.
pub fn run(
    setup: ProducerSetup,
    producer: ThreadedProducer<ProducerCtx>,
    timeline: Arc<Timeline>,
    stop: Arc<AtomicBool>,
) {
    init_thread_timer_slack();
    let ctx = Arc::clone(producer.context());
    let stats = &ctx.stats;
    let clock = setup.clock;
    let mut rng = SmallRng::seed_from_u64(setup.seed);
    let normal = setup.record_size.normal();
    // The spec was validated when parsed, so building the sampler cannot fail here.
    let Ok(mut keys) = KeySampler::new(setup.keys) else {
        return;
    };
    let mut buf = vec![0u8; setup.record_size.max_bytes()];
    let mut key_buf = [0u8; KEY_BYTES_MAX];
    let start_ns = timeline.start_ns();
    let warmup_end_ns = timeline.warmup_end_ns();
    let end_ns = timeline.end_ns();
    let mut gaps = setup.rate.map(|rate| Gaps::new(rate, setup.arrival));
    let mut next_intended_ns = start_ns + setup.phase_ns;
    let mut measured_attempts = 0u64;
    let mut fatal_reported = false;
    let mut quota_reached = false;
    let mut txn_started = std::time::Instant::now();
    if setup.txn_interval.is_some() {
        if let Err(e) = producer.begin_transaction() {
            ctx.errors.add(format!("begin transaction: {e}"));
        }
    }

    'records: loop {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let now_ns = clock.wall_ns();
        let intended_ns = if gaps.is_some() { next_intended_ns } else { now_ns };
        // An open-loop sender that is behind still stops at the end: the backlog it could not
        // send is counted as missed below rather than stretching the run.
        let past_end = now_ns >= end_ns || intended_ns >= end_ns;
        if past_end {
            break;
        }
        if setup.quota.is_some_and(|quota| measured_attempts >= quota) {
            quota_reached = true;
            break;
        }
        if intended_ns > now_ns {
            // A sleep per record is the sender's largest cost at high rates (arming the timer
            // and taking its interrupt: about 10 us of CPU on a virtual machine). Yielding the
            // CPU in a loop instead was cheaper below about 40,000 records/s per core, but made
            // sends late once the core was busy (p50 send lag 60 us instead of 24 us), and
            // timing is what this loop is for.
            clock.sleep_until_wall(intended_ns);
            continue;
        }
        if setup.txn_interval.is_some_and(|interval| txn_started.elapsed() >= interval) {
            // Commit (which flushes the transaction's records) and start the next one.
            if let Err(e) = producer.commit_transaction(setup.drain_timeout) {
                ctx.errors.add(format!("commit transaction: {e}"));
                break 'records;
            }
            if let Err(e) = producer.begin_transaction() {
                ctx.errors.add(format!("begin transaction: {e}"));
                break 'records;
            }
            txn_started = std::time::Instant::now();
        }
        let size = setup.record_size.sample(&mut rng, normal.as_ref());
        setup.pool.fill(&mut buf[..size], &mut rng);
        let routing = keys.next(&mut rng, setup.partitions);
        let key_len = match routing {
            Routing::Key(index) => write_key(&mut key_buf, index),
            Routing::Unkeyed | Routing::Partition(_) => 0,
        };
        let mut header = Header { run_id: setup.run_id, intended_ns, sent_ns: now_ns };
        header.write(&mut buf[..size]);
        let accepted = loop {
            let mut record = BaseRecord::to(&setup.topic).payload(&buf[..size]);
            match routing {
                Routing::Key(_) => record = record.key(&key_buf[..key_len]),
                Routing::Partition(partition) => record = record.partition(partition),
                Routing::Unkeyed => {}
            }
            match producer.send(record) {
                Ok(()) => break true,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                    bump(&stats.queue_full_waits, 1);
                    std::thread::sleep(QUEUE_FULL_BACKOFF);
                    if stop.load(Ordering::Relaxed) {
                        break 'records;
                    }
                    header.sent_ns = clock.wall_ns();
                    if gaps.is_none() {
                        // Closed loop measures from when the client took the record.
                        header.intended_ns = header.sent_ns;
                    }
                    header.write(&mut buf[..size]);
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::Fatal), _)) => {
                    // The client is unusable after a fatal error (for example an idempotent
                    // producer against a broker without InitProducerId); say why and stop.
                    bump(&stats.failed_total, 1);
                    let reason = producer
                        .client()
                        .fatal_error()
                        .map_or("unknown".to_string(), |(code, text)| format!("{code:?}: {text}"));
                    ctx.errors.add(format!("fatal producer error: {reason}"));
                    fatal_reported = true;
                    break 'records;
                }
                Err((error, _)) => {
                    bump(&stats.failed_total, 1);
                    ctx.errors.add(format!("send: {}", error_kind(&error)));
                    break false;
                }
            }
        };
        let measured = header.intended_ns >= warmup_end_ns;
        if measured {
            // A record that failed to send still uses up its place in --records, so that a
            // broker that rejects everything ends the run instead of stalling it.
            measured_attempts += 1;
        }
        if accepted {
            count_sent(stats, &header, warmup_end_ns, gaps.is_some());
        } else if measured && gaps.is_some() {
            // Due but never handed to the client: it counts against keeping up.
            bump(&stats.missed_measured, 1);
        }
        if let Some(gaps) = gaps.as_mut() {
            next_intended_ns = start_ns + setup.phase_ns + gaps.next_offset_ns(&mut rng);
        }
    }

    let stopped_ns = clock.wall_ns();
    // A sender that sent its whole --records quota missed nothing, however late it was.
    if let (Some(gaps), false) = (gaps.as_mut(), quota_reached) {
        let origin_ns = start_ns + setup.phase_ns;
        let cutoff_ns = end_ns.min(stopped_ns);
        let missed =
            count_missed(gaps, &mut rng, next_intended_ns, origin_ns, warmup_end_ns, cutoff_ns);
        bump(&stats.missed_measured, missed);
    }
    stats.send_end_ns.store(stopped_ns, Ordering::Release);
    stats.done_sending.store(true, Ordering::Release);
    if setup.txn_interval.is_some() {
        if let Err(e) = producer.commit_transaction(setup.drain_timeout) {
            ctx.errors.add(format!("commit transaction: {e}"));
        }
    }
    if let Err(error) = producer.flush(setup.drain_timeout) {
        ctx.errors.add(format!(
            "flush: {} ({} records unacknowledged after the drain timeout)",
            error_kind(&error),
            producer.in_flight_count()
        ));
    }
    // A fatal error raised by librdkafka itself (not by a send) shows up only as failed
    // deliveries; name its cause once so the summary says why.
    if let Some((code, reason)) = producer.client().fatal_error() {
        if !fatal_reported {
            ctx.errors.add(format!("fatal producer error: {code:?}: {reason}"));
        }
    }
}

/// Counts a record the client accepted: sent, and in the measured window (its intended time
/// at or after `warmup_end_ns`) also its send lag and whether it was late (open loop).
pub fn count_sent(stats: &ProducerStats, header: &Header, warmup_end_ns: u64, open_loop: bool) {
    bump(&stats.sent_total, 1);
    if header.intended_ns < warmup_end_ns {
        return;
    }
    bump(&stats.sent_measured, 1);
    if open_loop {
        let lag_ns = header.sent_ns.saturating_sub(header.intended_ns);
        stats.send_lag.record_ns(lag_ns);
        if lag_ns > LATE_SEND_NS {
            bump(&stats.late_measured, 1);
        }
    }
}

/// Counts a record the broker acknowledged at `now_ns`: acknowledged, and in the measured
/// window also its publish latency from the intended send time (and in open loop from the
/// actual one, uncorrected).
pub fn count_acked(
    stats: &ProducerStats,
    now_ns: u64,
    header: &Header,
    bytes: u64,
    warmup_end_ns: u64,
    open_loop: bool,
) {
    bump(&stats.acked_total, 1);
    bump(&stats.acked_bytes_total, bytes);
    if header.intended_ns < warmup_end_ns {
        return;
    }
    bump(&stats.acked_measured, 1);
    bump(&stats.acked_bytes_measured, bytes);
    stats.publish.record_span(header.intended_ns, now_ns);
    if open_loop {
        stats.publish_uncorrected.record_span(header.sent_ns, now_ns);
    }
}

/// Open loop, once sending stopped: the records that were due in the measured window before
/// `cutoff_ns` (the end, or an interrupt) but never sent, from `next_intended_ns` on. They
/// count against keeping up; otherwise a sender that fell far behind would look on time.
pub fn count_missed(
    gaps: &mut Gaps,
    rng: &mut SmallRng,
    mut next_intended_ns: u64,
    origin_ns: u64,
    warmup_end_ns: u64,
    cutoff_ns: u64,
) -> u64 {
    let mut missed = 0u64;
    while next_intended_ns < cutoff_ns {
        if next_intended_ns >= warmup_end_ns {
            missed += 1;
        }
        next_intended_ns = origin_ns + gaps.next_offset_ns(rng);
    }
    missed
}

/// Open-loop send times relative to the start, in ns. Offsets are accumulated in f64 from the
/// start rather than added as rounded integer gaps, so a long run does not drift off its rate.
pub struct Gaps {
    arrival: Arrival,
    period_ns: f64,
    exp: Option<Exp<f64>>,
    offset_ns: f64,
}

impl Gaps {
    pub fn new(rate: f64, arrival: Arrival) -> Gaps {
        assert!(rate > 0.0);
        let period_ns = 1e9 / rate;
        let exp = match arrival {
            Arrival::Poisson => Exp::new(1.0 / period_ns).ok(),
            Arrival::Constant => None,
        };
        Gaps { arrival, period_ns, exp, offset_ns: 0.0 }
    }

    pub fn next_offset_ns(&mut self, rng: &mut SmallRng) -> u64 {
        self.offset_ns += match (self.arrival, &self.exp) {
            (Arrival::Poisson, Some(exp)) => exp.sample(rng),
            _ => self.period_ns,
        };
        self.offset_ns as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constant_gaps_do_not_drift() {
        let mut rng = SmallRng::seed_from_u64(1);
        let mut gaps = Gaps::new(3.0, Arrival::Constant);
        let mut last = 0;
        for _ in 0..3_000 {
            last = gaps.next_offset_ns(&mut rng);
        }
        // 3000 records at 3/s end at 1000 s, to the nanosecond.
        assert!(last.abs_diff(1_000_000_000_000) <= 1, "last offset {last}");
    }

    #[test]
    fn poisson_gaps_average_to_the_rate() {
        let mut rng = SmallRng::seed_from_u64(2);
        let mut gaps = Gaps::new(1000.0, Arrival::Poisson);
        let count = 100_000;
        let mut last = 0;
        for _ in 0..count {
            last = gaps.next_offset_ns(&mut rng);
        }
        let seconds = last as f64 / 1e9;
        assert!((seconds - 100.0).abs() < 2.0, "100000 arrivals at 1000/s took {seconds} s");
    }
}
