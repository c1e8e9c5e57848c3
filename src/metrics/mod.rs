//! Metrics: each shard's own counters, the snapshots a scrape collects from every shard, and
//! their merge into Prometheus's text exposition format (`text`).
//!
//! Collection adds no lock and no cross-core message to a request: every counter is a plain
//! `Cell` on the shard that counts it (`ShardMetrics`, held by `shard::Shard`; a log's
//! traffic on the log; the batch cache's hits on the shard's cache budget). A scrape asks
//! each shard once, over a mesh, for a `ShardReport` (a copy of its counters, plus the
//! gauges of what it owns computed at that moment from the logs and groups it already
//! keeps), and merges the reports on the scraping shard: sums for counters and histograms,
//! the union for per-partition and per-group series (each is owned by one shard).
//!
//! ```text
//!  request path (shard s)          scrape (GET /metrics on the metrics shard)
//!  ───────────────────────         ──────────────────────────────────────────
//!  counters.set(get() + 1)         one Collect per shard ──▶ each builds its ShardReport
//!  histogram bucket += 1                                     (counters copied, partition
//!  (Cell, this core only)                                     gauges read off its logs)
//!                                  merge + render (text) ◀── one answer per shard
//! ```
//!
//! Lifecycle: `ShardMetrics` is built with its shard and lives as long as it. Concurrency:
//! shard-local (`Cell`s and `RefCell`s borrowed briefly, never across an `.await`); the
//! reports are plain data that cross cores by value.

pub mod text;

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::sync::Arc;

use crate::constants::{API_KEY_MAX, API_LATENCY_BUCKETS_US};

/// One shard's request counters: per API (requests, errors by code, latency), per listener
/// (connections, failed authentications). Lives in `shard::Shard`.
pub struct ShardMetrics {
    /// Indexed by API key (`0..=API_KEY_MAX`).
    apis: Box<[ApiMetrics]>,
    /// (API key, error code) -> responses or partitions that carried it; only non-zero codes.
    errors: RefCell<BTreeMap<(i16, i16), u64>>,
    /// Indexed by the listener's index in `config.listeners`.
    listeners: Box<[ListenerMetrics]>,
}

#[derive(Default)]
struct ApiMetrics {
    requests: Cell<u64>,
    latency: Histogram,
}

#[derive(Default)]
struct ListenerMetrics {
    accepted: Cell<u64>,
    /// Closed at once: over their address's connection cap (`net::caps`).
    refused: Cell<u64>,
    open: Cell<u64>,
    /// Failed authentications by mechanism ("PLAIN", "SCRAM-SHA-256", "TLS", ...).
    authentication_failures: RefCell<BTreeMap<&'static str, u64>>,
}

impl ShardMetrics {
    /// Counters for a shard with `listeners` listeners.
    pub fn new(listeners: usize) -> ShardMetrics {
        ShardMetrics {
            apis: (0..=API_KEY_MAX).map(|_| ApiMetrics::default()).collect(),
            errors: RefCell::new(BTreeMap::new()),
            listeners: (0..listeners).map(|_| ListenerMetrics::default()).collect(),
        }
    }

    /// A request of API `api_key` was answered (or dropped with its connection) `elapsed_us`
    /// after its frame arrived.
    pub fn request_done(&self, api_key: i16, elapsed_us: u64) {
        let Some(api) = usize::try_from(api_key).ok().and_then(|key| self.apis.get(key)) else {
            return;
        };
        api.requests.set(api.requests.get() + 1);
        api.latency.record(elapsed_us);
    }

    /// A response of API `api_key` carried `error_code` (once per place it appears: a
    /// partition, a group, the request). Code 0 (no error) is not counted.
    pub fn error(&self, api_key: i16, error_code: i16) {
        if error_code != 0 {
            *self.errors.borrow_mut().entry((api_key, error_code)).or_insert(0) += 1;
        }
    }

    pub fn connection_opened(&self, listener: usize) {
        if let Some(l) = self.listeners.get(listener) {
            l.accepted.set(l.accepted.get() + 1);
            l.open.set(l.open.get() + 1);
        }
    }

    pub fn connection_refused(&self, listener: usize) {
        if let Some(l) = self.listeners.get(listener) {
            l.refused.set(l.refused.get() + 1);
        }
    }

    pub fn connection_closed(&self, listener: usize) {
        if let Some(l) = self.listeners.get(listener) {
            assert!(l.open.get() > 0, "a connection closed twice");
            l.open.set(l.open.get() - 1);
        }
    }

    /// A client failed to authenticate on `listener` with `mechanism`.
    pub fn authentication_failed(&self, listener: usize, mechanism: &'static str) {
        if let Some(l) = self.listeners.get(listener) {
            *l.authentication_failures.borrow_mut().entry(mechanism).or_insert(0) += 1;
        }
    }

    /// A copy of the counters for a scrape (APIs never used are left out).
    pub fn snapshot(&self) -> RequestReport {
        let apis = self
            .apis
            .iter()
            .enumerate()
            .filter(|(_, api)| api.requests.get() > 0)
            .map(|(key, api)| ApiReport {
                api_key: key as i16,
                requests: api.requests.get(),
                latency: api.latency.snapshot(),
            })
            .collect();
        let errors = self.errors.borrow().iter().map(|(&(a, c), &n)| (a, c, n)).collect();
        let listeners = self
            .listeners
            .iter()
            .map(|l| ListenerReport {
                accepted: l.accepted.get(),
                refused: l.refused.get(),
                open: l.open.get(),
                authentication_failures: l
                    .authentication_failures
                    .borrow()
                    .iter()
                    .map(|(m, n)| (*m, *n))
                    .collect(),
            })
            .collect();
        RequestReport { apis, errors, listeners }
    }
}

/// A latency histogram with fixed bucket bounds (`API_LATENCY_BUCKETS_US`, then +Inf), in
/// plain cells: recording is a scan of 17 bounds and two additions.
pub struct Histogram {
    /// Not cumulative: `buckets[i]` counts values in (bound[i-1], bound[i]]; the last is +Inf.
    buckets: [Cell<u64>; API_LATENCY_BUCKETS_US.len() + 1],
    sum_us: Cell<u64>,
}

impl Default for Histogram {
    fn default() -> Histogram {
        Histogram { buckets: std::array::from_fn(|_| Cell::new(0)), sum_us: Cell::new(0) }
    }
}

impl Histogram {
    pub fn record(&self, value_us: u64) {
        let at = API_LATENCY_BUCKETS_US.iter().position(|&bound| value_us <= bound);
        let bucket = &self.buckets[at.unwrap_or(API_LATENCY_BUCKETS_US.len())];
        bucket.set(bucket.get() + 1);
        self.sum_us.set(self.sum_us.get().saturating_add(value_us));
    }

    pub fn snapshot(&self) -> HistogramReport {
        HistogramReport {
            buckets: self.buckets.iter().map(Cell::get).collect(),
            sum_us: self.sum_us.get(),
        }
    }
}

/// A histogram's counts as sent to the scrape (see `Histogram`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistogramReport {
    pub buckets: Vec<u64>,
    pub sum_us: u64,
}

impl HistogramReport {
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// Adds another shard's counts (the bounds are the same constants everywhere).
    pub fn merge(&mut self, other: &HistogramReport) {
        if self.buckets.is_empty() {
            self.buckets = vec![0; other.buckets.len()];
        }
        assert_eq!(self.buckets.len(), other.buckets.len());
        for (mine, theirs) in self.buckets.iter_mut().zip(&other.buckets) {
            *mine += theirs;
        }
        self.sum_us += other.sum_us;
    }
}

/// The request counters of one shard, copied.
#[derive(Debug, Clone, Default)]
pub struct RequestReport {
    pub apis: Vec<ApiReport>,
    /// (API key, error code, count).
    pub errors: Vec<(i16, i16, u64)>,
    /// Indexed like `config.listeners`.
    pub listeners: Vec<ListenerReport>,
}

#[derive(Debug, Clone)]
pub struct ApiReport {
    pub api_key: i16,
    pub requests: u64,
    pub latency: HistogramReport,
}

#[derive(Debug, Clone, Default)]
pub struct ListenerReport {
    pub accepted: u64,
    pub refused: u64,
    pub open: u64,
    pub authentication_failures: Vec<(&'static str, u64)>,
}

/// Everything one shard reports to a scrape.
#[derive(Debug, Clone, Default)]
pub struct ShardReport {
    pub shard: u16,
    pub requests: RequestReport,
    pub executor: ExecutorReport,
    pub cache: CacheReport,
    /// Bytes fetched from this shard's logs: (from the batch cache, from segment files).
    pub fetch_bytes: (u64, u64),
    pub partitions: Vec<PartitionReport>,
    pub groups: Vec<GroupReport>,
}

/// The shard's executor, from glommio's own statistics (accumulated across scrapes).
#[derive(Debug, Clone, Copy, Default)]
pub struct ExecutorReport {
    /// Time spent running tasks (glommio's executor runtime; sleeping is not counted).
    pub busy_ns: u64,
    pub tasks_executed: u64,
    pub scheduler_runs: u64,
    /// Requests admitted on this shard's connections and not answered yet.
    pub requests_in_flight: u64,
    /// File reads and writes submitted to the shard's io_uring rings, and their bytes.
    pub file_reads: u64,
    pub file_read_bytes: u64,
    pub file_writes: u64,
    pub file_write_bytes: u64,
}

/// The shard's batch cache (`storage::cache`).
#[derive(Debug, Clone, Copy, Default)]
pub struct CacheReport {
    pub hits: u64,
    pub misses: u64,
    pub bytes: u64,
    pub bytes_max: u64,
}

/// One partition a shard owns, read off its log at scrape time.
#[derive(Debug, Clone, Default)]
pub struct PartitionReport {
    pub topic: Arc<str>,
    pub partition: i32,
    pub log_end_offset: i64,
    pub high_watermark: i64,
    pub log_start_offset: i64,
    pub size_bytes: u64,
    pub traffic: Traffic,
    /// A compacted log's cleaner progress: bytes of its cleanable sealed segments not cleaned
    /// yet, and of all of them (their ratio is what `min.cleanable.dirty.ratio` is compared
    /// with); 0 for other logs.
    pub dirty_bytes: u64,
    pub cleanable_bytes: u64,
    /// Delayed delivery: batches waiting in the partition's delay log, and the next time its
    /// schedule wakes (epoch ms, at or before the earliest due time; 0 when none waits).
    pub delayed_batches: u64,
    pub delayed_next_due_ms: u64,
}

/// What went in and out of a log since it was opened: counted by the log as it appends and
/// reads (no per-request state elsewhere).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Records appended (offsets assigned: produce and replication).
    pub records_in: u64,
    pub bytes_in: u64,
    /// Records in the batches served from memory (the batch cache): a catch-up read sent
    /// from the segment file is never parsed, so it counts in `bytes_out` only.
    pub records_out: u64,
    pub bytes_out: u64,
}

/// One group a shard coordinates.
#[derive(Debug, Clone, Default)]
pub struct GroupReport {
    pub group: String,
    pub members: u64,
    /// Committed offsets: (topic, partition, offset).
    pub offsets: Vec<(String, i32, i64)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_upper_bounds() {
        let h = Histogram::default();
        h.record(0);
        h.record(API_LATENCY_BUCKETS_US[0]);
        h.record(API_LATENCY_BUCKETS_US[0] + 1);
        h.record(u64::MAX / 2);
        let report = h.snapshot();
        assert_eq!(report.buckets.len(), API_LATENCY_BUCKETS_US.len() + 1);
        assert_eq!(report.buckets[0], 2);
        assert_eq!(report.buckets[1], 1);
        assert_eq!(report.buckets[API_LATENCY_BUCKETS_US.len()], 1);
        assert_eq!(report.count(), 4);
    }

    #[test]
    fn histogram_merge_adds_bucket_by_bucket() {
        let (a, b) = (Histogram::default(), Histogram::default());
        a.record(50);
        b.record(50);
        b.record(3_000_000);
        let mut merged = HistogramReport::default();
        merged.merge(&a.snapshot());
        merged.merge(&b.snapshot());
        assert_eq!(merged.count(), 3);
        assert_eq!(merged.sum_us, 3_000_100);
        assert_eq!(merged.buckets[0], 2);
    }

    #[test]
    fn counters_by_api_error_and_listener() {
        let m = ShardMetrics::new(2);
        m.request_done(0, 120);
        m.request_done(0, 80);
        m.request_done(-1, 80);
        m.request_done(i16::MAX, 80);
        m.error(0, 3);
        m.error(0, 3);
        m.error(0, 0);
        m.connection_opened(1);
        m.connection_opened(1);
        m.connection_closed(1);
        m.authentication_failed(1, "PLAIN");
        let report = m.snapshot();
        assert_eq!(report.apis.len(), 1);
        assert_eq!(report.apis[0].requests, 2);
        assert_eq!(report.errors, vec![(0, 3, 2)]);
        assert_eq!(report.listeners[1].accepted, 2);
        assert_eq!(report.listeners[1].open, 1);
        assert_eq!(report.listeners[1].authentication_failures, vec![("PLAIN", 1)]);
        assert_eq!(report.listeners[0].accepted, 0);
    }
}
