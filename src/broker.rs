//! Start-up and shutdown: check the machine, start one pinned executor per core, open the
//! logs each shard owns, serve, and on SIGTERM/SIGINT stop accepting, answer what is in
//! flight, and seal every log.
//!
//! Every start-up problem ends in `fatal` with one sentence that says how to fix it.

use std::fs::File;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use glommio::channels::channel_mesh::MeshBuilder;
use glommio::io::DmaFile;
use glommio::net::TcpListener;
use glommio::{CpuSet, LocalExecutorPoolBuilder, PoolPlacement};

use crate::api::Services;
use crate::cluster::identity::{self, Identity};
use crate::cluster::Cluster;
use crate::config::Config;
use crate::constants::{
    BLOCKING_THREADS_PER_SHARD, BROKER_CONTROLLED_SHUTDOWN_WAIT_MS_MAX,
    MEMLOCK_BYTES_PER_SHARD_MIN, MESH_CHANNEL_CAPACITY, READER_THREADS_PER_SHARD, SHARD_NUDGE_MS,
    SHARD_RING_DEPTH,
};
use crate::controller::Controller;
use crate::fatal::{fatal, FatalReason};
use crate::group::coordinator::Coordinator as GroupCoordinator;
use crate::model::ShardId;
use crate::net::caps::PerIp;
use crate::net::readers::Readers;
use crate::net::{self, InFlight};
use crate::partition::Partitions;
use crate::replication::Replication;
use crate::scrape::{self, Scraper};
use crate::security::{Security, ShardSecurity};
use crate::shard::catalog::{self, Catalog, META_DIR};
use crate::shard::internal_log;
use crate::shard::mesh::{Envelope, Mesh, Service};
use crate::shard::Shard;
use crate::storage;
use crate::storage::clean_stop::{self, CleanStop};
use crate::storage::files::DescriptorBudget;
use crate::txn::coordinator::{TxnCoordinator, TxnPeers};

static SHUTDOWN: AtomicBool = AtomicBool::new(false);
/// Set by shard 0 once its controlled shutdown is over (at once on a single node): the
/// other shards keep serving until then, since shard 0 may still forward them requests.
static CONTROLLED_SHUTDOWN_DONE: AtomicBool = AtomicBool::new(false);
/// Shards that finished start-up and run their serve loop (the one that watches `SHUTDOWN`).
/// While none does, a stop signal ends the process at once; while some do, it waits a
/// bounded time for the others (see `install_signal_handlers`).
static SHARDS_SERVING: AtomicUsize = AtomicUsize::new(0);

/// The shard that serves `--metrics-listen` (any would do; the scrape asks every shard).
const METRICS_SHARD: ShardId = ShardId(0);

/// How long a stop signal that came while some shards served and others still started
/// waits for those to serve (and stop cleanly) before the process exits as after a crash.
const START_STOP_WAIT_MS: u64 = 20_000;

/// How long shutdown waits for in-flight requests before sealing the logs anyway.
const SHUTDOWN_DRAIN_MS: u64 = 5_000;

/// The descriptor limit asked for when the process may raise it (Kafka's operations guide
/// suggests 100,000 and more), or more when the partitions want it.
const OPEN_FILES_WANTED_MIN: u64 = 65_536;
/// How long a listener that still answers on our port may take to go away before start-up
/// calls the port taken (see `check_listen_address`).
const LISTEN_SETTLE: Duration = Duration::from_secs(3);

/// Opts the process out of transparent huge pages (`PR_SET_THP_DISABLE`): no huge page at
/// fault time and no khugepaged collapse of its memory, whatever its allocator madvised.
///
/// mimalloc marks its arenas `MADV_HUGEPAGE`, so with the common THP setting `madvise`
/// khugepaged collapsed the shards' memory while they ran. On a kernel without preemption it
/// held a core for up to 5.6 ms at a time (perf sched: khugepaged running while a shard and
/// the bench's producer waited), and the shard took the page-table lock behind it. Measured at
/// 20,000 one-record produces/s (broker on one core, same run): publish p99 5.2-6.7 ms with
/// THP, 0.85-1.0 ms without; p99.9 25-29 ms against 7-8.5 ms. The allocator loses nothing it
/// needs: its hot working set is small and reused. Best effort: a kernel without the call
/// leaves THP as it was, which is only slower; the error is for the caller to log once
/// logging is set up.
pub fn disable_transparent_huge_pages() -> std::io::Result<()> {
    // SAFETY: prctl with PR_SET_THP_DISABLE takes plain integers and touches no memory of ours.
    match unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) } {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}

pub fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Runs the broker until SIGTERM or SIGINT. Exits the process on fatal start-up problems.
pub fn run(config: Config) {
    let started = Instant::now();
    let lock = prepare_data_dir(&config.data_dir);
    let loaded = Catalog::load(&config.data_dir, &config.topic_defaults, config.node_id);
    let catalog = loaded.unwrap_or_else(|e| {
        fatal(
            FatalReason::DataDir,
            format!("cannot read the topic catalog: {e}; restore it or use an empty --data-dir"),
        )
    });
    // Checked before the quorum identity is recorded. Clustered, the metadata log is the
    // catalog (replayed once the driver runs). A data dir with single-node topics is refused
    // rather than ignored: its partition directories are named by topic, so a cluster topic
    // created later under one of those names would take over that topic's old records.
    if config.cluster.is_some() && !catalog.topics.is_empty() {
        fatal(
            FatalReason::DataDir,
            format!(
                "data dir {} holds {} single-node topics, which a cluster cannot take over; \
                 start it without --controller-quorum-voters or use an empty --data-dir",
                config.data_dir.display(),
                catalog.topics.len()
            ),
        );
    }
    check_quorum_identity(&config);
    for listener in &config.listeners {
        let flag = match config.listeners.len() {
            1 if listener.protocol == crate::config::SecurityProtocol::Plaintext => {
                "--listen".to_string()
            }
            _ => format!("--listeners {}", listener.protocol.name()),
        };
        check_listen_address(listener.address, &flag);
    }
    // After the data dir is locked (the SCRAM credentials live there), before any shard.
    let security = Security::load(&config, &config.data_dir.join(META_DIR))
        .unwrap_or_else(|e| fatal(FatalReason::Config, e));
    let security = Arc::new(security);
    if let Some(controller_listen) = config.cluster.as_ref().and_then(|c| c.controller_listen) {
        check_listen_address(controller_listen, "--controller-listen");
    }
    if let Some(metrics) = config.metrics_listen {
        check_listen_address(metrics, "--metrics-listen");
    }
    check_memlock(config.cores);
    install_signal_handlers(security.clone(), config.cores);
    for warning in crate::host_check::host_warnings(Path::new("/"), &config.data_dir) {
        tracing::warn!("{warning}");
    }
    if !catalog::catalog_path(&config.data_dir).exists() {
        catalog::write_file(&config.data_dir, catalog.to_file_text()).unwrap_or_else(|e| {
            fatal(
                FatalReason::DataDir,
                format!("cannot write the topic catalog: {e}; check the data dir"),
            )
        });
    }
    // Before any log is opened: the record is gone from the disk before anything can change
    // the logs it describes (`storage::clean_stop`).
    let clean_stop = clean_stop::take_all(&config.data_dir.join(META_DIR)).unwrap_or_else(|e| {
        let dir = config.data_dir.display();
        fatal(
            FatalReason::DataDir,
            format!(
                "cannot read and remove the clean-stop record in {dir}: {e}; check the data dir"
            ),
        )
    });
    let clean_stop = Arc::new(Mutex::new(clean_stop));
    let partitions: u64 = catalog.topics.values().map(|meta| meta.partitions.max(0) as u64).sum();
    let descriptors = raise_open_files(partitions, config.cores);
    tracing::info!(
        cores = config.cores,
        data_dir = %config.data_dir.display(),
        listeners = %listeners_text(&config),
        cluster_id = %if config.cluster.is_some() { "(metadata log)" } else { &catalog.cluster_id },
        topics = catalog.topics.len(),
        "starting spate"
    );
    // The builders hold an `Rc` inside: clone them here, on one thread, once per shard, and
    // hand each executor its own copies (cloning them on the executor threads races).
    let nudges = Arc::new(Mutex::new(start_nudger(config.cores)));
    let per_ip = PerIp::new(config.connection_caps.clone());
    let meshes =
        Arc::new(std::sync::Mutex::new(vec![MeshBuilders::new(config.cores); config.cores]));
    let ready = Arc::new(AtomicUsize::new(0));
    // Started here, on the unpinned main thread, so that the reader threads are not pinned
    // to their shard's core (they would compete with it for the CPU).
    let readers: Vec<Readers> = (0..config.cores)
        .map(|shard| {
            Readers::start(shard, READER_THREADS_PER_SHARD).unwrap_or_else(|e| {
                fatal(FatalReason::Runtime, format!("cannot start the reader threads: {e}"))
            })
        })
        .collect();
    let readers = Arc::new(readers);
    let mut builder =
        LocalExecutorPoolBuilder::new(PoolPlacement::MaxSpread(config.cores, allowed_cpus()));
    if config.idle_poll_time_us > 0 {
        builder = builder.spin_before_park(Duration::from_micros(config.idle_poll_time_us));
    }
    let pool = builder
        .name("spate-shard")
        // Not `preempt_timer(1 ms)` as DESIGN.md suggests: on this kernel (6.18) glommio 0.9
        // then hangs at start-up in about one start in ten (an executor never wakes from its
        // first io_uring wait; 0 hangs in 40 starts without it). Long loops call
        // `yield_if_needed` instead.
        .blocking_thread_pool_placement(PoolPlacement::Unbound(BLOCKING_THREADS_PER_SHARD))
        .ring_depth(SHARD_RING_DEPTH)
        .on_all_shards(move || {
            let config = config.clone();
            let catalog = catalog.clone();
            let mesh = meshes.lock().ok().and_then(|mut m| m.pop());
            let mesh =
                mesh.unwrap_or_else(|| fatal(FatalReason::Runtime, "more executors than shards"));
            let ready = ready.clone();
            let readers = readers.clone();
            let files = descriptors.files_per_shard as usize;
            let clean_stop = clean_stop.clone();
            let nudged = nudges.lock().ok().and_then(|mut n| n.pop());
            let nudged =
                nudged.unwrap_or_else(|| fatal(FatalReason::Runtime, "more executors than shards"));
            let security = security.clone();
            let per_ip = per_ip.clone();
            async move {
                let start = Start {
                    readers,
                    ready,
                    started,
                    open_files: files,
                    clean_stop,
                    security,
                    nudged,
                    per_ip,
                };
                shard_main(config, catalog, mesh, start).await
            }
        });
    let handles = pool.unwrap_or_else(|e| {
        fatal(
            FatalReason::Runtime,
            format!(
                "cannot start the executors ({e}); spate needs Linux 5.8+ with io_uring enabled \
                 (check /proc/sys/kernel/io_uring_disabled) and RLIMIT_MEMLOCK of at least \
                 512 KiB (ulimit -l)"
            ),
        )
    });
    for result in handles.join_all() {
        if let Err(e) = result {
            fatal(FatalReason::Runtime, format!("a shard failed: {e}"));
        }
    }
    drop(lock);
    tracing::info!("spate stopped cleanly");
}

/// One channel mesh per service that lives on every shard.
#[derive(Clone)]
struct MeshBuilders {
    partitions: Builder<Partitions>,
    controller: Builder<Controller>,
    groups: Builder<GroupCoordinator>,
    txns: Builder<TxnCoordinator>,
    cluster: Builder<Cluster>,
    scrape: Builder<Scraper>,
}

type Builder<S> = MeshBuilder<
    Envelope<<S as Service>::Request, <S as Service>::Response>,
    glommio::channels::channel_mesh::Full,
>;

impl MeshBuilders {
    fn new(cores: usize) -> MeshBuilders {
        MeshBuilders {
            partitions: MeshBuilder::full(cores, MESH_CHANNEL_CAPACITY),
            controller: MeshBuilder::full(cores, MESH_CHANNEL_CAPACITY),
            groups: MeshBuilder::full(cores, MESH_CHANNEL_CAPACITY),
            txns: MeshBuilder::full(cores, MESH_CHANNEL_CAPACITY),
            cluster: MeshBuilder::full(cores, MESH_CHANNEL_CAPACITY),
            scrape: MeshBuilder::full(cores, MESH_CHANNEL_CAPACITY),
        }
    }
}

/// Joins one service's mesh: this shard's end, and the receivers to serve once ready.
async fn join<S: Service>(
    builder: Builder<S>,
) -> (Mesh<S>, glommio::channels::channel_mesh::Receivers<Envelope<S::Request, S::Response>>) {
    let (senders, receivers) = builder.join().await.unwrap_or_else(|_| {
        fatal(FatalReason::Runtime, "the shards could not connect to each other")
    });
    (Mesh::new(senders), receivers)
}

/// What every shard starts from, besides its config, catalog and meshes.
struct Start {
    readers: Arc<Vec<Readers>>,
    /// The start-up and shutdown gate (see `shard_main`).
    ready: Arc<AtomicUsize>,
    started: Instant,
    open_files: usize,
    /// What the last clean stop recorded of the logs; each shard takes its own.
    clean_stop: Arc<Mutex<CleanStop>>,
    /// TLS and SASL, shared by the shards (read without locks).
    security: Arc<Security>,
    /// Connections per client address, counted over every shard (`net::caps`).
    per_ip: Option<Arc<PerIp>>,
    /// This shard's end of the nudger (see `start_nudger`).
    nudged: futures::channel::mpsc::Receiver<()>,
}

async fn shard_main(config: Config, catalog: Catalog, meshes: MeshBuilders, start: Start) {
    let Start { readers, ready, started, open_files, clean_stop, security, nudged, per_ip } = start;
    glommio::spawn_local(async move {
        let mut nudged = nudged;
        while futures::StreamExt::next(&mut nudged).await.is_some() {}
    })
    .detach();
    let (partitions_mesh, partitions_peers) = join(meshes.partitions).await;
    let (controller_mesh, controller_peers) = join(meshes.controller).await;
    let (groups_mesh, groups_peers) = join(meshes.groups).await;
    let (txns_mesh, txns_peers) = join(meshes.txns).await;
    let (cluster_mesh, cluster_peers) = join(meshes.cluster).await;
    let (scrape_mesh, scrape_peers) = join(meshes.scrape).await;
    let id = partitions_mesh.me();
    tracing::debug!(shard = id.0, "joined the meshes");
    probe_direct_io(&config.data_dir, id).await;
    tracing::debug!(shard = id.0, "O_DIRECT probe passed");
    let shard = Rc::new(Shard::new(id, config.clone(), catalog));
    let partitions = Rc::new(Partitions::new(shard.clone(), partitions_mesh, open_files));
    let cluster = Rc::new(Cluster::new(shard.clone(), cluster_mesh));
    let controller = Rc::new(Controller::new(
        shard.clone(),
        controller_mesh,
        partitions.clone(),
        cluster.clone(),
        security.clone(),
    ));
    let groups = Rc::new(GroupCoordinator::new(
        shard.clone(),
        groups_mesh,
        partitions.clone(),
        controller.clone(),
        cluster.clone(),
    ));
    let peers = TxnPeers {
        partitions: partitions.clone(),
        groups: groups.clone(),
        controller: controller.clone(),
        cluster: cluster.clone(),
    };
    let txns = Rc::new(TxnCoordinator::new(shard.clone(), txns_mesh, peers));
    if id.0 == 0 {
        let (reserve_bytes, total_bytes) = shard.space.reserve();
        tracing::info!(
            dir = %config.data_dir.display(),
            reserve_bytes,
            total_bytes,
            "free-space reserve (--min-free-bytes): client writes are refused below it"
        );
    }
    let report = partitions.open_owned_logs(&clean_stop).await.unwrap_or_else(|e| {
        fatal(
            FatalReason::DataDir,
            format!(
                "cannot recover the log of {} in {}: {}; check the data dir",
                e.0,
                config.data_dir.display(),
                e.1
            ),
        )
    });
    tracing::info!(
        shard = id.0,
        partitions = partitions.owned_partition_count(),
        segments = report.segments,
        truncated_segments = report.truncated_segments,
        resumed = report.resumed,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "recovered partitions"
    );
    let loaded = groups.load(&clean_stop).await.unwrap_or_else(|e| {
        fatal(
            FatalReason::DataDir,
            format!("cannot recover the committed offsets in {}: {e}", config.data_dir.display()),
        )
    });
    tracing::info!(
        shard = id.0,
        groups = loaded.groups,
        records = loaded.records,
        migrated = loaded.migrated,
        "recovered consumer groups"
    );
    let transactions = txns.load(&clean_stop).await.unwrap_or_else(|e| {
        fatal(
            FatalReason::DataDir,
            format!("cannot recover the transaction log in {}: {e}", config.data_dir.display()),
        )
    });
    tracing::info!(
        shard = id.0,
        transactions = txns.transaction_count(),
        records = transactions.records,
        migrated = transactions.migrated,
        "recovered transactions"
    );
    // Nobody may send a request before every shard has its logs open. The wait must not
    // block the thread: a peer may still need this executor to finish joining the mesh.
    // The last shard to arrive records the internal logs' layout (see shard::internal_log)
    // before it opens the gate (a count of cores + 1).
    if ready.fetch_add(1, Ordering::AcqRel) + 1 == config.cores {
        if let Err(e) =
            internal_log::commit_layout(&config.data_dir, config.cores, config.cluster.is_some())
        {
            fatal(FatalReason::DataDir, format!("cannot record the internal logs' layout: {e}"));
        }
        // Entries no log took belong to topics that are gone.
        clean_stop.lock().unwrap_or_else(|e| e.into_inner()).clear();
        ready.fetch_add(1, Ordering::AcqRel);
    }
    while ready.load(Ordering::Acquire) <= config.cores {
        glommio::timer::sleep(Duration::from_millis(1)).await;
    }
    partitions.mesh().serve_peers(&partitions, partitions_peers);
    controller.mesh().serve_peers(&controller, controller_peers);
    groups.mesh().serve_peers(&groups, groups_peers);
    txns.mesh().serve_peers(&txns, txns_peers);
    cluster.mesh().serve_peers(&cluster, cluster_peers);
    controller.start();
    cluster.start();
    let replication = Rc::new(Replication::new(shard.clone(), partitions.clone(), cluster.clone()));
    replication.start();
    let listeners: Vec<(usize, TcpListener)> = config
        .listeners
        .iter()
        .enumerate()
        .map(|(index, listener)| {
            let bound = TcpListener::bind(listener.address).unwrap_or_else(|e| {
                fatal(
                    FatalReason::Listen,
                    format!(
                        "cannot listen on {} ({}): {e}; choose another address",
                        listener.address,
                        listener.protocol.name()
                    ),
                )
            });
            (index, bound)
        })
        .collect();
    if id.0 == 0 {
        let elapsed_ms = started.elapsed().as_millis() as u64;
        tracing::info!(listeners = %listeners_text(&config), elapsed_ms, "accepting clients");
    }
    let in_flight = Rc::new(InFlight::default());
    let scraper = Rc::new(Scraper::new(
        shard.clone(),
        scrape_mesh,
        partitions.clone(),
        groups.clone(),
        in_flight.clone(),
    ));
    scraper.mesh().serve_peers(&scraper, scrape_peers);
    // One shard answers scrapes; it asks the others over the scrape mesh.
    let metrics_endpoint = match config.metrics_listen {
        Some(address) if id == METRICS_SHARD => {
            let bound = TcpListener::bind(address).unwrap_or_else(|e| {
                fatal(
                    FatalReason::Listen,
                    format!(
                        "cannot listen on {address} for metrics: {e}; choose another \
                         --metrics-listen address"
                    ),
                )
            });
            tracing::info!(%address, "serving Prometheus metrics at /metrics");
            Some(scrape::http::start(scraper.clone(), bound))
        }
        _ => None,
    };
    let services = Rc::new(Services {
        shard: shard.clone(),
        partitions: partitions.clone(),
        controller,
        groups: groups.clone(),
        txns: txns.clone(),
        cluster: cluster.clone(),
        security: Rc::new(ShardSecurity::new(security)),
    });
    let acceptor = glommio::spawn_local(net::accept_loop(
        services,
        listeners,
        in_flight.clone(),
        readers[id.index()].clone(),
        per_ip,
    ));
    let housekeeping = glommio::spawn_local(housekeeping(
        partitions.clone(),
        Duration::from_millis(config.log_retention_check_interval_ms),
    ));
    let cleaner_stop = Rc::new(std::cell::Cell::new(false));
    let cleaner_queue = glommio::executor().create_task_queue(
        glommio::Shares::Static(crate::constants::CLEANER_SHARES),
        glommio::Latency::NotImportant,
        "cleaner",
    );
    let cleaner = glommio::spawn_local_into(
        partitions.clone().run_cleaner(config.cleaner.clone(), config.cores, cleaner_stop.clone()),
        cleaner_queue,
    )
    .unwrap_or_else(|e| unreachable!("cleaner task queue: {e}"));
    let delayed = glommio::spawn_local(shard.delayed.clone().run());
    let deliveries = glommio::spawn_local(partitions.clone().run_deliveries());
    txns.start();
    SHARDS_SERVING.fetch_add(1, Ordering::AcqRel);
    while !SHUTDOWN.load(Ordering::Relaxed) {
        glommio::timer::sleep(Duration::from_millis(20)).await;
    }
    // Clustered, a controlled shutdown first, still serving: the controller fences this
    // node and moves its partitions' leadership (bounded; nothing on a single node).
    if id.0 == 0 {
        cluster.shut_down_controlled().await;
        CONTROLLED_SHUTDOWN_DONE.store(true, Ordering::Release);
    }
    let wait_ms_max = BROKER_CONTROLLED_SHUTDOWN_WAIT_MS_MAX + SHUTDOWN_DRAIN_MS;
    let controlled_deadline = Instant::now() + Duration::from_millis(wait_ms_max);
    while !CONTROLLED_SHUTDOWN_DONE.load(Ordering::Acquire) && Instant::now() < controlled_deadline
    {
        glommio::timer::sleep(Duration::from_millis(5)).await;
    }
    in_flight.closing.set(true);
    acceptor.cancel().await;
    if let Some(endpoint) = metrics_endpoint {
        endpoint.cancel().await;
    }
    housekeeping.cancel().await;
    // A clean stops before its next swap; one under way finishes first.
    cleaner_stop.set(true);
    cleaner.await;
    let deadline = Instant::now() + Duration::from_millis(SHUTDOWN_DRAIN_MS);
    while in_flight.requests.get() > 0 && Instant::now() < deadline {
        glommio::timer::sleep(Duration::from_millis(5)).await;
    }
    // A request drained here may still wait on a peer shard (the remote half of a produce),
    // so no shard closes its logs and stops serving its peers before every shard has drained
    // (the start-up gate's count goes on: cores + 1 open, 2 * cores + 1 all drained). Seen
    // before: one shard closed in 2 ms and the other waited out the whole drain for it.
    ready.fetch_add(1, Ordering::AcqRel);
    while ready.load(Ordering::Acquire) < 2 * config.cores + 1 && Instant::now() < deadline {
        glommio::timer::sleep(Duration::from_millis(5)).await;
    }
    if in_flight.requests.get() > 0 {
        // Seen in tests now and then (an idempotent producer running through SIGTERM): a
        // request that never finishes holds a clean stop for the whole drain.
        tracing::warn!(
            shard = id.0,
            requests = in_flight.requests.get(),
            drain_ms = SHUTDOWN_DRAIN_MS,
            "requests still in flight after the shutdown drain; closing anyway"
        );
    }
    deliveries.cancel().await;
    delayed.cancel().await;
    if config.cluster.is_some() {
        partitions.checkpoint_high_watermarks().await;
    }
    let mut closed = partitions.close_all().await;
    closed.extend(groups.close().await);
    closed.extend(txns.close().await);
    // The record of the closed logs is only written once what it describes is durable; a
    // stop that cannot write it leaves the next start to recover the logs from their files.
    let meta_dir = config.data_dir.join(META_DIR);
    match storage::log::sync_file_system(&config.data_dir).await {
        Ok(()) => {
            let logs = closed.len();
            let written = glommio::executor()
                .spawn_blocking(move || clean_stop::write(&meta_dir, id.index(), &closed))
                .await;
            match written {
                Ok(()) => tracing::debug!(shard = id.0, logs, "recorded the clean stop"),
                Err(e) => tracing::warn!(shard = id.0, "cannot record the clean stop: {e}"),
            }
        }
        Err(e) => tracing::warn!("cannot sync the data dir's file system at shutdown: {e}"),
    }
    let files = partitions.open_files();
    tracing::info!(
        shard = id.0,
        files_opened = files.opened,
        files_evicted = files.evicted,
        reads_from_memory = files.declined,
        "shard closed"
    );
}

/// The CPUs this process may run on (`taskset`, a cpuset cgroup), for the shards' placement:
/// glommio otherwise spreads them over every online CPU, so `taskset -c 1 spate --cores 1`
/// ran its shard on CPU 0. None (every online CPU) when the mask cannot be read.
fn allowed_cpus() -> Option<CpuSet> {
    // SAFETY: `mask` is a plain bitmap that sched_getaffinity fills for this process.
    let mask = unsafe {
        let mut mask: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut mask) != 0 {
            return None;
        }
        mask
    };
    // SAFETY: CPU_ISSET reads the bitmap, with `cpu` below its size (CPU_SETSIZE).
    let allowed =
        |cpu: usize| cpu < libc::CPU_SETSIZE as usize && unsafe { libc::CPU_ISSET(cpu, &mask) };
    let cpus = CpuSet::online().ok()?.filter(|location| allowed(location.cpu));
    (!cpus.is_empty()).then_some(cpus)
}

async fn housekeeping(partitions: Rc<Partitions>, interval: Duration) {
    loop {
        glommio::timer::sleep(interval).await;
        partitions.enforce_retention().await;
    }
}

/// Creates the data dir, checks it is writable, and locks it against a second broker.
fn prepare_data_dir(dir: &Path) -> File {
    let fix = "create it or choose another --data-dir";
    if let Err(e) = create_dirs_durably(&dir.join(META_DIR)) {
        fatal(
            FatalReason::DataDir,
            format!("data dir {} is not usable ({e}); {fix}", dir.display()),
        );
    }
    let probe = dir.join(META_DIR).join("write-probe");
    if let Err(e) = std::fs::write(&probe, b"spate").and_then(|_| std::fs::remove_file(&probe)) {
        let message = format!(
            "data dir {} is not writable ({e}); fix its permissions or choose another --data-dir",
            dir.display()
        );
        fatal(FatalReason::DataDir, message);
    }
    let lock_path = dir.join(META_DIR).join("lock");
    let lock = File::create(&lock_path).unwrap_or_else(|e| {
        fatal(FatalReason::DataDir, format!("cannot create {} ({e}); {fix}", lock_path.display()))
    });
    // SAFETY: flock on a descriptor we own.
    let locked = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if locked != 0 {
        let message = format!(
            "data dir {} is in use by another spate process; stop it or choose another --data-dir",
            dir.display()
        );
        fatal(FatalReason::DataDir, message);
    }
    lock
}

/// Creates `path` and the directories above it that are missing, each made durable by an
/// fsync of its parent before the next is created: a data dir created on a first start must
/// not vanish at a power loss while the topics and records in it were acknowledged as
/// durable (the power-loss trials found it: the whole data dir was gone after the cut).
fn create_dirs_durably(path: &Path) -> std::io::Result<()> {
    let mut missing = Vec::new();
    let mut at = Some(path);
    while let Some(dir) = at.filter(|dir| !dir.as_os_str().is_empty() && !dir.exists()) {
        missing.push(dir);
        at = dir.parent();
    }
    for dir in missing.into_iter().rev() {
        match std::fs::create_dir(dir) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(e),
            _ => {}
        }
        let parent = dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        File::open(parent)?.sync_all()?;
    }
    Ok(())
}

/// Compares the quorum identity the data dir recorded with this start's, and records it on a
/// first clustered start (`cluster::identity`).
fn check_quorum_identity(config: &Config) {
    let meta_dir = config.data_dir.join(META_DIR);
    let recorded = identity::load(&meta_dir).unwrap_or_else(|e| fatal(FatalReason::DataDir, e));
    let given =
        config.cluster.as_ref().map(|cluster| Identity::new(config.node_id, &cluster.voters));
    let decision = identity::check(&config.data_dir, recorded.as_ref(), given.as_ref())
        .unwrap_or_else(|e| fatal(FatalReason::DataDir, e));
    if let (identity::Decision::Record, Some(given)) = (decision, given) {
        identity::record(&meta_dir, &given).unwrap_or_else(|e| {
            fatal(
                FatalReason::DataDir,
                format!("cannot record the quorum identity in {}: {e}", meta_dir.display()),
            )
        });
    }
}

/// glommio binds with SO_REUSEPORT, which would let us share a port with another process
/// and silently take half its connections. So a plain bind must succeed first. A plain bind
/// also fails while connections of a previous run of ours linger on the port (FIN_WAIT after
/// a restart); then a connect tells the two apart: only a live listener answers.
///
/// Right after a kill -9 the dead process's listener can still answer for a moment: its
/// io_uring instance is torn down by a kernel worker after the process is reaped, and an
/// accept still in flight keeps the socket listening until then. Binding next to it with
/// SO_REUSEPORT would send some clients into that dying queue, so we wait for it to go, and
/// call the port taken only if it is still answering after `LISTEN_SETTLE`. The controller
/// listener (`--controller-listen`, on shard 0 only) is checked the same way.
fn check_listen_address(listen: SocketAddr, flag: &str) {
    if listen.port() == 0 {
        fatal(
            FatalReason::Listen,
            format!("{flag} needs an explicit port (0 would give each core a different one)"),
        );
    }
    let deadline = Instant::now() + LISTEN_SETTLE;
    let mut probe = listen;
    if probe.ip().is_unspecified() {
        probe.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    loop {
        let in_use = match std::net::TcpListener::bind(listen) {
            Ok(listener) => {
                drop(listener);
                return;
            }
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => e,
            Err(e) => {
                let message =
                    format!("cannot listen on {listen} ({e}); choose another {flag} address");
                fatal(FatalReason::Listen, message)
            }
        };
        let answered = std::net::TcpStream::connect_timeout(&probe, Duration::from_millis(500));
        if answered.is_err() {
            tracing::debug!("the listen port has leftover connections ({in_use}); nobody listens");
            return;
        }
        drop(answered);
        if Instant::now() >= deadline {
            fatal(
                FatalReason::Listen,
                format!(
                    "port {} is already in use; stop the other process or choose another \
                     {flag} address",
                    listen.port()
                ),
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// glommio's io_uring rings need locked memory. Raise the soft limit if the hard one allows;
/// otherwise say how to raise it.
fn check_memlock(cores: usize) {
    let needed = MEMLOCK_BYTES_PER_SHARD_MIN * cores as u64;
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: valid pointer to an rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut limit) } != 0 {
        return;
    }
    if limit.rlim_cur == libc::RLIM_INFINITY || limit.rlim_cur >= needed {
        return;
    }
    let raised =
        libc::rlimit { rlim_cur: needed.max(limit.rlim_cur), rlim_max: limit.rlim_max.max(needed) };
    // SAFETY: valid pointer to an rlimit. Raising the hard limit works only as root.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &raised) } == 0 {
        tracing::info!(bytes = needed, "raised RLIMIT_MEMLOCK");
        return;
    }
    fatal(
        FatalReason::Runtime,
        format!(
            "RLIMIT_MEMLOCK is {} KiB but spate needs {} KiB for {cores} cores; raise it with \
             `ulimit -l {}` or LimitMEMLOCK= in the systemd unit",
            limit.rlim_cur / 1024,
            needed / 1024,
            needed / 1024
        ),
    );
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and, when the hard limit is below what
/// keeps every partition's active segment open and the process may raise it (root), the hard
/// limit too, within `fs.nr_open`. Says in one line what it has and what the partitions would
/// like, and returns how the descriptors are shared out: segments beyond the budget are
/// opened again on demand (`storage::files`), so a low limit costs opens, not failures.
fn raise_open_files(partitions: u64, cores: usize) -> DescriptorBudget {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: valid pointer to an rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        limit = libc::rlimit { rlim_cur: 1024, rlim_max: 1024 };
    }
    let before = limit.rlim_cur;
    let wanted = DescriptorBudget::wanted(partitions, cores).max(OPEN_FILES_WANTED_MIN);
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|text| text.trim().parse::<u64>().ok())
        .unwrap_or(1 << 20);
    if limit.rlim_max != libc::RLIM_INFINITY && limit.rlim_max < wanted {
        let raised = libc::rlimit { rlim_cur: wanted.min(nr_open), rlim_max: wanted.min(nr_open) };
        // SAFETY: valid pointer to an rlimit. Raising the hard limit needs CAP_SYS_RESOURCE;
        // without it this fails and the soft limit is raised to the hard one below.
        if raised.rlim_max > limit.rlim_max
            && unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0
        {
            limit = raised;
        }
    }
    if limit.rlim_cur < limit.rlim_max {
        let target = limit.rlim_max.min(nr_open.max(limit.rlim_cur));
        let raised = libc::rlimit { rlim_cur: target, rlim_max: limit.rlim_max };
        // SAFETY: valid pointer to an rlimit; a soft limit up to the hard one is always allowed.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit = raised;
        }
    }
    let budget = DescriptorBudget::plan(limit.rlim_cur, cores);
    let message = if limit.rlim_cur >= wanted {
        "open files: every partition's active segment can stay open"
    } else {
        "open files: fewer descriptors than partitions would keep open; idle segments are \
         closed and opened again on demand (raise `ulimit -n` or LimitNOFILE= to avoid it)"
    };
    tracing::info!(
        limit = limit.rlim_cur,
        raised_from = before,
        partitions,
        wanted,
        connections_reserve = budget.connections,
        files_per_shard = budget.files_per_shard,
        "{message}"
    );
    budget
}

/// Starts the nudger: a thread that wakes every shard's executor every `SHARD_NUDGE_MS`,
/// through a channel whose receiver a task on the shard awaits (a wake from another thread
/// goes through the executor's eventfd, which its main io_uring always watches). Returns
/// the receivers, one per shard.
///
/// Why: on this kernel (6.18) a glommio executor parked in its main ring sometimes stays
/// parked although a timer of its is due (glommio arms timers on its latency ring and
/// links the two rings with a poll) or a blocking-pool job of its finished: caught with
/// gdb, a cluster node's only shard slept 20 s in `link_rings_and_sleep` with heartbeats
/// due every 200 ms and its blocking threads idle, was fenced, and lost its Raft
/// leadership; starts stalled the same way in the mesh joins. A nudge bounds any such
/// stall to `SHARD_NUDGE_MS`.
fn start_nudger(cores: usize) -> Vec<futures::channel::mpsc::Receiver<()>> {
    let (senders, receivers): (Vec<_>, Vec<_>) =
        (0..cores).map(|_| futures::channel::mpsc::channel::<()>(1)).unzip();
    std::thread::Builder::new()
        .name("spate-nudge".into())
        .spawn(move || {
            let mut senders = senders;
            loop {
                std::thread::sleep(Duration::from_millis(SHARD_NUDGE_MS));
                // A full channel is a nudge not taken yet: it still wakes the shard.
                senders.retain_mut(|sender| match sender.try_send(()) {
                    Ok(()) => true,
                    Err(e) => e.is_full(),
                });
                if senders.is_empty() {
                    return;
                }
            }
        })
        .unwrap_or_else(|e| {
            fatal(FatalReason::Runtime, format!("cannot start the nudge thread: {e}"))
        });
    receivers
}

/// SIGTERM and SIGINT stop the broker (a second one at once); SIGHUP reloads the TLS
/// certificate and key (new connections get them; open ones keep theirs).
///
/// A stop signal before all `cores` shards serve ends the process at once: start-up may wait
/// for a quorum, a mesh join or log recovery for as long as it takes, and never looks at
/// `SHUTDOWN` meanwhile. That is as safe as kill -9 there (nothing was acknowledged yet; the
/// crash trials kill start-up recovery on purpose), and the next start recovers as after one.
fn install_signal_handlers(security: Arc<Security>, cores: usize) {
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGHUP,
    ])
    .unwrap_or_else(|e| {
        fatal(FatalReason::Runtime, format!("cannot install signal handlers: {e}"))
    });
    std::thread::Builder::new()
        .name("spate-signals".into())
        .spawn(move || {
            let mut stopping = false;
            for signal in signals.forever() {
                if signal == signal_hook::consts::SIGHUP {
                    match &security.tls {
                        None => tracing::info!("SIGHUP: no TLS listener, nothing to reload"),
                        Some(tls) => match tls.reload() {
                            Ok(()) => tracing::info!("SIGHUP: TLS certificate and key reloaded"),
                            Err(e) => tracing::warn!(
                                "SIGHUP: TLS reload failed, keeping the previous certificate: {e}"
                            ),
                        },
                    }
                    continue;
                }
                if stopping {
                    // A second signal while draining stops at once.
                    std::process::exit(130);
                }
                let serving = SHARDS_SERVING.load(Ordering::Acquire);
                if serving == 0 {
                    tracing::warn!(
                        signal,
                        "stopping during start-up: nothing is served yet, so the process exits \
                         now; the next start recovers the logs as after a crash"
                    );
                    std::process::exit(128 + signal);
                }
                tracing::info!(signal, "shutting down");
                SHUTDOWN.store(true, Ordering::Relaxed);
                stopping = true;
                if serving < cores {
                    // Some shards serve (clients may have written to them) and others still
                    // start: those stop cleanly as soon as they serve, but one whose start
                    // stalls must not hold the stop for ever.
                    stop_when_start_stalls(cores, signal);
                }
            }
        })
        .unwrap_or_else(|e| {
            fatal(FatalReason::Runtime, format!("cannot start the signal thread: {e}"))
        });
}

/// After a stop signal that came while some shards were still starting: ends the process
/// as after a crash if they do not all serve (and so stop cleanly) within
/// `START_STOP_WAIT_MS`.
fn stop_when_start_stalls(cores: usize, signal: i32) {
    let deadline = Instant::now() + Duration::from_millis(START_STOP_WAIT_MS);
    let watch = move || {
        while SHARDS_SERVING.load(Ordering::Acquire) < cores {
            if Instant::now() >= deadline {
                tracing::warn!(
                    signal,
                    "stopping during start-up: a shard did not finish starting within {} s \
                     of the signal, so the process exits now; the next start recovers the \
                     logs as after a crash",
                    START_STOP_WAIT_MS / 1000
                );
                std::process::exit(128 + signal);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    if let Err(e) = std::thread::Builder::new().name("spate-stop-watch".into()).spawn(watch) {
        tracing::warn!("cannot watch the stop during start-up, exiting now: {e}");
        std::process::exit(128 + signal);
    }
}

/// `NAME://address` of every listener, for the log.
fn listeners_text(config: &Config) -> String {
    let entries: Vec<String> = config
        .listeners
        .iter()
        .map(|l| {
            format!(
                "{}://{} (advertised {}:{})",
                l.protocol.name(),
                l.address,
                l.advertised_host,
                l.advertised_port
            )
        })
        .collect();
    entries.join(", ")
}

/// Works around a glommio 0.9 pitfall: if the first file a reactor opens with O_DIRECT is
/// empty, it turns on IOPOLL and every later DMA read fails with EOPNOTSUPP. Opening and
/// reading a non-empty file first keeps it off. Also proves the file system takes O_DIRECT.
pub async fn probe_direct_io(data_dir: &Path, id: ShardId) {
    let path = data_dir.join(META_DIR).join(format!("io-probe-{}", id.0));
    if let Err(e) = std::fs::write(&path, vec![0x5a; 8192]) {
        fatal(
            FatalReason::DataDir,
            format!("cannot write {} ({e}); check the data dir", path.display()),
        );
    }
    let opened = DmaFile::open(&path).await;
    let file = opened.unwrap_or_else(|e| {
        fatal(
            FatalReason::DataDir,
            format!(
                "the data dir's file system refuses O_DIRECT ({e}); put --data-dir on ext4 or xfs"
            ),
        )
    });
    match file.read_at_aligned(0, 4096).await {
        Ok(read) if read.len() == 4096 && read.iter().all(|b| *b == 0x5a) => {}
        Ok(_) => fatal(
            FatalReason::DataDir,
            "an O_DIRECT read returned wrong data; put --data-dir on ext4 or xfs",
        ),
        Err(e) => fatal(
            FatalReason::DataDir,
            format!("O_DIRECT reads fail on the data dir ({e}); put --data-dir on ext4 or xfs"),
        ),
    }
    let _ = file.close().await;
}
