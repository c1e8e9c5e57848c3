//! Counters and latency histograms that worker threads write and the reporter reads.
//!
//! Each producer and consumer owns its own `WorkerStats`; nothing is shared between workers on
//! the hot path. Counters are relaxed atomics (the reporter needs totals, not ordering). Each
//! histogram sits behind its own mutex, taken by its one writer per record and by the reporter
//! once a second, so it is practically never contended.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use hdrhistogram::Histogram;

use crate::steal::{self, SpanFilter};

/// Latencies above one hour are recorded as one hour: a run that long has failed anyway, and the
/// bound keeps every histogram at a fixed, small size (about 200 KiB).
pub const LATENCY_US_MAX: u64 = 3_600_000_000;
/// Three significant digits: a value is known to within 0.1 %, e.g. 1.234 ms +- 1 us.
pub const SIGNIFICANT_DIGITS: u8 = 3;

pub fn new_histogram() -> Histogram<u64> {
    // The bounds are constants that hdrhistogram accepts; a failure here is a bug.
    Histogram::new_with_bounds(1, LATENCY_US_MAX, SIGNIFICANT_DIGITS)
        .expect("constant histogram bounds are valid")
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking worker aborts the process (panic = "abort"), so poisoning cannot be observed;
    // taking the data anyway is the right thing if that ever changes.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One latency series of one worker, in microseconds.
pub struct LatencyRecorder {
    histogram: Mutex<Histogram<u64>>,
    /// The same series without the records host steal touched (`steal`), when the steal
    /// monitor runs.
    steal_free: Mutex<StealFree>,
}

struct StealFree {
    histogram: Histogram<u64>,
    filter: SpanFilter,
}

impl LatencyRecorder {
    pub fn new() -> LatencyRecorder {
        LatencyRecorder {
            histogram: Mutex::new(new_histogram()),
            steal_free: Mutex::new(StealFree {
                histogram: new_histogram(),
                filter: SpanFilter::default(),
            }),
        }
    }

    pub fn record_ns(&self, latency_ns: u64) {
        lock(&self.histogram).saturating_record(latency_ns / 1_000);
    }

    /// Records the latency from `start_ns` to `end_ns` (wall ns of the run's clock), and, once
    /// the steal monitor has seen past it, in the steal-free series unless host steal touched
    /// it.
    pub fn record_span(&self, start_ns: u64, end_ns: u64) {
        self.record_ns(end_ns.saturating_sub(start_ns));
        if let Some(monitor) = steal::monitor() {
            let mut steal_free = lock(&self.steal_free);
            let StealFree { histogram, filter } = &mut *steal_free;
            for latency_ns in filter.push(start_ns, end_ns, monitor) {
                histogram.saturating_record(latency_ns / 1_000);
            }
        }
    }

    /// Adds this worker's latencies into `total`.
    pub fn add_to(&self, total: &mut Histogram<u64>) {
        // Same bounds on both sides, so the addition cannot fail.
        let _ = total.add(&*lock(&self.histogram));
    }

    /// Adds this worker's steal-free latencies into `total` and returns how many records host
    /// steal touched; classifies what is still queued first (call `StealMonitor::settle`
    /// before, so that the monitor has seen the end of the run).
    pub fn add_steal_free_to(&self, total: &mut Histogram<u64>) -> u64 {
        let mut steal_free = lock(&self.steal_free);
        let StealFree { histogram, filter } = &mut *steal_free;
        if let Some(monitor) = steal::monitor() {
            for latency_ns in filter.drain(u64::MAX, monitor) {
                histogram.saturating_record(latency_ns / 1_000);
            }
        }
        let _ = total.add(&*histogram);
        filter.touched
    }
}

/// Errors by kind, e.g. "delivery: Message timed out" -> 3.
#[derive(Default)]
pub struct ErrorCounts {
    counts: Mutex<BTreeMap<String, u64>>,
}

impl ErrorCounts {
    pub fn add(&self, kind: String) {
        *lock(&self.counts).entry(kind).or_insert(0) += 1;
    }

    pub fn snapshot(&self) -> BTreeMap<String, u64> {
        lock(&self.counts).clone()
    }

    pub fn total(&self) -> u64 {
        lock(&self.counts).values().sum()
    }
}

/// Written by one producer thread (and its client's delivery callbacks).
#[derive(Default)]
pub struct ProducerStats {
    /// Records handed to the client, warm-up included.
    pub sent_total: AtomicU64,
    /// Records handed to the client whose intended send time is in the measured window.
    pub sent_measured: AtomicU64,
    /// Records due in the measured window that an open-loop sender never got to send before the
    /// run ended; counted so that "kept up" cannot hide them.
    pub missed_measured: AtomicU64,
    /// Open loop: measured records handed to the client more than `LATE_SEND_NS` after their
    /// intended time.
    pub late_measured: AtomicU64,
    pub acked_total: AtomicU64,
    pub acked_bytes_total: AtomicU64,
    pub acked_measured: AtomicU64,
    pub acked_bytes_measured: AtomicU64,
    pub failed_total: AtomicU64,
    /// How often the client's queue was full and the sender had to wait for room.
    pub queue_full_waits: AtomicU64,
    pub done_sending: AtomicBool,
    /// When this producer stopped sending (wall ns); 0 while it runs.
    pub send_end_ns: AtomicU64,
    pub publish: LatencyRecorderCell,
    pub publish_uncorrected: LatencyRecorderCell,
    pub send_lag: LatencyRecorderCell,
}

/// Written by one consumer thread.
#[derive(Default)]
pub struct ConsumerStats {
    pub consumed_total: AtomicU64,
    pub consumed_bytes_total: AtomicU64,
    pub consumed_measured: AtomicU64,
    pub consumed_bytes_measured: AtomicU64,
    /// End to end: records that carry this run's id (warm-up included).
    pub run_records: AtomicU64,
    /// End to end: records from other runs or other tools, not measured.
    pub foreign_records: AtomicU64,
    pub end_to_end: LatencyRecorderCell,
    pub end_to_end_uncorrected: LatencyRecorderCell,
}

/// `LatencyRecorder` with a `Default`, so that the stats structs can derive theirs.
pub struct LatencyRecorderCell(pub LatencyRecorder);

impl Default for LatencyRecorderCell {
    fn default() -> Self {
        LatencyRecorderCell(LatencyRecorder::new())
    }
}

impl std::ops::Deref for LatencyRecorderCell {
    type Target = LatencyRecorder;

    fn deref(&self) -> &LatencyRecorder {
        &self.0
    }
}

pub fn load(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

pub fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

/// Sums one counter over workers.
pub fn sum<T>(workers: &[std::sync::Arc<T>], counter: impl Fn(&T) -> &AtomicU64) -> u64 {
    workers.iter().map(|w| load(counter(w))).sum()
}

/// Merges one latency series over workers.
pub fn merge<T>(
    workers: &[std::sync::Arc<T>],
    series: impl Fn(&T) -> &LatencyRecorder,
) -> Histogram<u64> {
    let mut total = new_histogram();
    for worker in workers {
        series(worker).add_to(&mut total);
    }
    total
}

/// Merges the steal-free half of one latency series over workers; with the records host
/// steal touched.
pub fn merge_steal_free<T>(
    workers: &[std::sync::Arc<T>],
    series: impl Fn(&T) -> &LatencyRecorder,
) -> (Histogram<u64>, u64) {
    let mut total = new_histogram();
    let touched = workers.iter().map(|worker| series(worker).add_steal_free_to(&mut total)).sum();
    (total, touched)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorder_keeps_microseconds_and_saturates() {
        let recorder = LatencyRecorder::new();
        recorder.record_ns(1_234_567);
        recorder.record_ns(u64::MAX);
        let mut total = new_histogram();
        recorder.add_to(&mut total);
        assert_eq!(total.len(), 2);
        assert_eq!(total.min(), 1_234);
        assert!(total.max() >= LATENCY_US_MAX);
    }
}
