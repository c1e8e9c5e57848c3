//! The metrics scrape, as a service on every shard: a scrape asks each shard once, over
//! this service's mesh, for its `ShardReport`, and merges them (`metrics::text`). The
//! endpoint that starts a scrape (`http`, `--metrics-listen`) runs on one shard.
//!
//! A shard builds its report from what it keeps anyway: its request counters
//! (`Shard::metrics`), glommio's statistics of its executor and io_uring rings, its batch
//! cache, its logs (each partition's offsets, size and traffic, read at this moment) and
//! its groups. Nothing is kept per partition for metrics beyond a log's traffic counters;
//! the cost of a scrape grows with the partitions (see docs/ARCHITECTURE.md, Metrics), and
//! is spread over the shards that own them, each yielding to its requests as it goes.
//!
//! Lifecycle: built on every shard at start, once its services and its connections'
//! in-flight count exist; serves its peers until shutdown. Concurrency: shard-local.

pub mod http;

use std::cell::Cell;
use std::rc::Rc;

use crate::group::coordinator::Coordinator as GroupCoordinator;
use crate::metrics::{ExecutorReport, ShardReport};
use crate::model::ShardId;
use crate::net::InFlight;
use crate::partition::Partitions;
use crate::shard::mesh::{Mesh, Served, Service};
use crate::shard::Shard;

/// What a scrape asks a shard.
#[derive(Debug)]
pub enum ScrapeRequest {
    /// Its report, now.
    Collect,
}

pub struct Scraper {
    shard: Rc<Shard>,
    mesh: Mesh<Scraper>,
    partitions: Rc<Partitions>,
    groups: Rc<GroupCoordinator>,
    in_flight: Rc<InFlight>,
    /// glommio hands its statistics out as the change since they were last taken: the
    /// totals since start are kept here.
    executor: Cell<ExecutorReport>,
}

impl Service for Scraper {
    type Request = ScrapeRequest;
    type Response = Box<ShardReport>;

    fn mesh(&self) -> &Mesh<Scraper> {
        &self.mesh
    }

    fn serve(self: &Rc<Self>, _from: ShardId, request: ScrapeRequest) -> Served<Self::Response> {
        let ScrapeRequest::Collect = request;
        let this = self.clone();
        Served::Later(Box::pin(async move { Box::new(this.report().await) }))
    }
}

impl Scraper {
    pub fn new(
        shard: Rc<Shard>,
        mesh: Mesh<Scraper>,
        partitions: Rc<Partitions>,
        groups: Rc<GroupCoordinator>,
        in_flight: Rc<InFlight>,
    ) -> Scraper {
        Scraper {
            shard,
            mesh,
            partitions,
            groups,
            in_flight,
            executor: Cell::new(ExecutorReport::default()),
        }
    }

    /// Every shard's report (this one's included), in shard order; `None` for a shard that
    /// did not answer (shutting down).
    pub async fn collect(&self) -> Vec<Option<Box<ShardReport>>> {
        self.mesh.broadcast(|| ScrapeRequest::Collect).await
    }

    /// The listeners' names, in `config.listeners` order.
    pub fn listener_names(&self) -> Vec<&'static str> {
        self.shard.config.listeners.iter().map(|l| l.protocol.name()).collect()
    }

    /// This shard's report.
    async fn report(&self) -> ShardReport {
        let executor = self.executor_totals();
        let (partitions, cache, fetch_bytes) = self.partitions.metrics_report().await;
        ShardReport {
            shard: self.shard.id.0,
            requests: self.shard.metrics.snapshot(),
            executor,
            cache,
            fetch_bytes,
            partitions,
            groups: self.groups.metrics_report(),
        }
    }

    /// glommio's executor and io_uring statistics, added to the totals so far.
    fn executor_totals(&self) -> ExecutorReport {
        let proxy = glommio::executor();
        let stats = proxy.executor_stats();
        let io = proxy.io_stats();
        let mut totals = self.executor.get();
        totals.busy_ns += stats.executor_runtime().as_nanos() as u64;
        totals.tasks_executed += stats.tasks_executed();
        totals.scheduler_runs += stats.scheduler_runs();
        for ring in [&io.main_ring, &io.latency_ring, &io.poll_ring] {
            let (reads, read_bytes) = ring.file_reads();
            let (buffered_reads, buffered_read_bytes) = ring.file_buffered_reads();
            let (writes, write_bytes) = ring.file_writes();
            let (buffered_writes, buffered_write_bytes) = ring.file_buffered_writes();
            totals.file_reads += reads + buffered_reads;
            totals.file_read_bytes += read_bytes + buffered_read_bytes;
            totals.file_writes += writes + buffered_writes;
            totals.file_write_bytes += write_bytes + buffered_write_bytes;
        }
        self.executor.set(totals);
        ExecutorReport { requests_in_flight: self.in_flight.requests.get() as u64, ..totals }
    }
}
