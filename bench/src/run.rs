//! One benchmark run: set up the topic and clients, start the workers at a common start time,
//! report progress every second, stop, drain, and assemble the results.
//!
//! ```text
//!   start ----- warm-up ----- warmup_end ------ measured window ------ end -- drain --
//!   records sent here are     records whose (intended) send time       acks and consumers
//!   left out of all results   falls here are the results               catch up, not timed
//! ```

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use hdrhistogram::Histogram;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};

use crate::admin::{self, REQUEST_TIMEOUT};
use crate::cli::RunArgs;
use crate::clock::{duration_ns, Clock};
use crate::consumer::{self, ConsumerCtx, ConsumerSetup};
use crate::cpu::{cpu_seconds, process_cpu_seconds};
use crate::native::{self, NativeProducer, MAX_IN_FLIGHT_DEFAULT};
use crate::payload::PayloadPool;
use crate::producer::{self, ProducerCtx, ProducerSetup, Timeline, LATE_SEND_NS};
use crate::report::{
    mb_per_sec, ms, per_sec, BrokerCpu, ConsumeResult, CpuResult, HostSteal, LatencySummary,
    NativeClientConfig, OpenLoopResult, ProduceResult, RunConfig, RunResult, FORMAT_VERSION,
};
use crate::spec::{Acks, Arrival, Client, StartFrom};
use crate::stats::{
    load, merge, merge_steal_free, sum, ConsumerStats, ErrorCounts, LatencyRecorder, ProducerStats,
};
use crate::steal;
use crate::wire;

/// How often the monitor wakes up to check for the end of the run.
const TICK: Duration = Duration::from_millis(10);
const PROGRESS_INTERVAL_NS: u64 = 1_000_000_000;
/// An open-loop run kept up when at most this fraction of the due records were sent late or
/// not at all.
const LATE_FRACTION_MAX: f64 = 0.01;
/// Producer and consumer threads a run may start; more would only measure context switches.
const WORKERS_MAX: usize = 256;
/// Exit code when a second SIGINT/SIGTERM arrives while a run is being wound down.
const EXIT_SECOND_SIGNAL: i32 = 130;
/// The largest `--max-in-flight`: more only queues requests in the broker's socket buffer.
const MAX_IN_FLIGHT_MAX: usize = 65_536;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    Produce,
    Consume,
    EndToEnd,
}

impl Workload {
    pub fn name(&self) -> &'static str {
        match self {
            Workload::Produce => "produce",
            Workload::Consume => "consume",
            Workload::EndToEnd => "end-to-end",
        }
    }

    fn produces(&self) -> bool {
        matches!(self, Workload::Produce | Workload::EndToEnd)
    }

    fn consumes(&self) -> bool {
        matches!(self, Workload::Consume | Workload::EndToEnd)
    }
}

/// The outcome of a run: the results and the merged histograms behind them (by series name).
pub struct RunOutput {
    pub result: RunResult,
    pub histograms: Vec<(String, Histogram<u64>)>,
}

pub fn run(workload: Workload, args: &RunArgs) -> Result<RunOutput, String> {
    validate(workload, args)?;
    let clock = Clock::new();
    let seed = args.workload.seed.unwrap_or_else(rand::random);
    let run_id: u32 = rand::random();
    let started_at_unix_ms = clock.wall_ns() / 1_000_000;
    let partitions = admin::ensure_topic(
        &args.bootstrap,
        &args.workload.topic,
        args.workload.partitions,
        args.workload.replication_factor,
    )?;
    let open_loop = workload.produces() && args.rate.is_some();
    let errors = Arc::new(ErrorCounts::default());
    let timeline = Arc::new(Timeline::default());
    steal::start(clock);
    let stop_producers = Arc::new(AtomicBool::new(false));
    let stop_consumers = Arc::new(AtomicBool::new(false));
    let interrupted = interrupt_flag()?;
    if interrupted.load(Ordering::Relaxed) {
        return Err("interrupted".to_string());
    }

    let producer_config = producer_config(args);
    let consumer_config = consumer_config(args, run_id);
    let producer_count = if workload.produces() { args.workload.producers } else { 0 };
    let consumer_count = if workload.consumes() { args.workload.consumers } else { 0 };
    let mut producers = Vec::new();
    let mut producer_stats = Vec::new();
    let mut native_config = None;
    for index in 0..producer_count {
        let stats = Arc::new(ProducerStats::default());
        if args.workload.client == Client::Native {
            // Connects, negotiates versions and finds the leader before the clock starts.
            let session = wire::connect(&args.bootstrap, &args.workload.topic, REQUEST_TIMEOUT)
                .map_err(|e| format!("native producer cannot set up: {e}"))?;
            let max_in_flight = args.workload.max_in_flight.unwrap_or(MAX_IN_FLIGHT_DEFAULT);
            native_config = Some(NativeClientConfig {
                produce_version: session.produce_version,
                leader: session.leader.clone(),
                max_in_flight,
            });
            producers.push(ProducerClient::Native(NativeProducer {
                session,
                topic: args.workload.topic.clone(),
                acks: args.workload.acks,
                compression: args.workload.compression,
                max_in_flight,
                stats: Arc::clone(&stats),
                errors: Arc::clone(&errors),
                open_loop,
            }));
            producer_stats.push(stats);
            continue;
        }
        let ctx = ProducerCtx {
            clock,
            stats: Arc::clone(&stats),
            errors: Arc::clone(&errors),
            timeline: Arc::clone(&timeline),
            open_loop,
        };
        let mut config = admin::base_config(&args.bootstrap);
        for (key, value) in &producer_config {
            config.set(key, value);
        }
        if let Some(prefix) = &args.workload.transactional_id {
            config.set("transactional.id", format!("{prefix}-{index}"));
        }
        let producer: ThreadedProducer<ProducerCtx> = config
            .create_with_context(ctx)
            .map_err(|e| format!("cannot create a producer: {e}"))?;
        // Connect before the clock starts, so that connection set-up is not the first
        // records' latency even without a warm-up.
        producer
            .client()
            .fetch_metadata(Some(&args.workload.topic), REQUEST_TIMEOUT)
            .map_err(|e| format!("producer cannot reach {}: {e}", args.bootstrap))?;
        if args.workload.transactional_id.is_some() {
            producer
                .init_transactions(REQUEST_TIMEOUT)
                .map_err(|e| format!("producer cannot init transactions: {e}"))?;
        }
        producers.push(ProducerClient::Librdkafka(producer));
        producer_stats.push(stats);
    }

    let mut consumers = Vec::new();
    let mut consumer_stats = Vec::new();
    if consumer_count > partitions as usize {
        eprintln!(
            "note: {consumer_count} consumers for {partitions} partitions; \
             {} will have nothing to read",
            consumer_count - partitions as usize
        );
    }
    for index in 0..consumer_count {
        let mut config = admin::base_config(&args.bootstrap);
        for (key, value) in &consumer_config {
            config.set(key, value);
        }
        let consumer: BaseConsumer<ConsumerCtx> = config
            .create_with_context(ConsumerCtx { errors: Arc::clone(&errors) })
            .map_err(|e| format!("cannot create a consumer: {e}"))?;
        let mine: Vec<i32> =
            (0..partitions).filter(|p| *p as usize % consumer_count == index).collect();
        let from_tail = workload == Workload::EndToEnd || args.from == StartFrom::Tail;
        let mut assignment = TopicPartitionList::new();
        if from_tail {
            let marks = admin::watermarks(&consumer, &args.workload.topic, partitions)?;
            for partition in &mine {
                let (_, high) = marks[*partition as usize];
                assignment
                    .add_partition_offset(&args.workload.topic, *partition, Offset::Offset(high))
                    .map_err(|e| format!("cannot build the assignment: {e}"))?;
            }
        } else {
            for partition in &mine {
                assignment
                    .add_partition_offset(&args.workload.topic, *partition, Offset::Beginning)
                    .map_err(|e| format!("cannot build the assignment: {e}"))?;
            }
        }
        consumer.assign(&assignment).map_err(|e| format!("cannot assign partitions: {e}"))?;
        consumers.push(consumer);
        consumer_stats.push(Arc::new(ConsumerStats::default()));
    }

    let broker_cpu_start: Vec<Option<f64>> =
        args.broker_pid.iter().map(|pid| cpu_seconds(Some(*pid))).collect();
    let bench_cpu_start = process_cpu_seconds();
    let pool = Arc::new(PayloadPool::new(
        args.workload.payload,
        args.workload.record_size.max_bytes(),
        &mut rand::thread_rng(),
    ));

    let start_ns = clock.wall_ns();
    let warmup_end_ns = start_ns + duration_ns(args.workload.warmup);
    let counted = args.records.is_some();
    let end_ns =
        if counted { u64::MAX } else { warmup_end_ns + duration_ns(args.workload.duration) };
    timeline.set(start_ns, warmup_end_ns, end_ns);

    let mut producer_threads: Vec<JoinHandle<()>> = Vec::new();
    let rate_each = args.rate.map(|rate| rate / producer_count.max(1) as f64);
    for (index, producer) in producers.into_iter().enumerate() {
        let quota = args.records.filter(|_| workload.produces()).map(|records| {
            let base = records / producer_count as u64;
            base + u64::from((index as u64) < records % producer_count as u64)
        });
        // Spread constant-rate producers evenly over one period instead of sending together.
        let phase_ns = match (rate_each, args.workload.arrival) {
            (Some(rate), Arrival::Constant) => {
                (1e9 / rate * index as f64 / producer_count as f64) as u64
            }
            _ => 0,
        };
        let setup = ProducerSetup {
            clock,
            topic: args.workload.topic.clone(),
            partitions,
            record_size: args.workload.record_size,
            keys: args.workload.keys,
            rate: rate_each,
            arrival: args.workload.arrival,
            phase_ns,
            quota,
            run_id,
            seed: seed.wrapping_add(index as u64),
            pool: Arc::clone(&pool),
            drain_timeout: args.workload.drain_timeout,
            txn_interval: args
                .workload
                .transactional_id
                .is_some()
                .then(|| Duration::from_millis(args.workload.txn_interval_ms)),
        };
        let (timeline, stop) = (Arc::clone(&timeline), Arc::clone(&stop_producers));
        producer_threads.push(
            std::thread::Builder::new()
                .name(format!("producer-{index}"))
                .spawn(move || match producer {
                    ProducerClient::Librdkafka(producer) => {
                        producer::run(setup, producer, timeline, stop)
                    }
                    ProducerClient::Native(producer) => {
                        native::run(setup, producer, timeline, stop)
                    }
                })
                .map_err(|e| format!("cannot start a producer thread: {e}"))?,
        );
    }
    let mut consumer_threads: Vec<JoinHandle<()>> = Vec::new();
    for (index, consumer) in consumers.into_iter().enumerate() {
        let setup =
            ConsumerSetup { clock, end_to_end: workload == Workload::EndToEnd, open_loop, run_id };
        let stats = Arc::clone(&consumer_stats[index]);
        let (timeline, stop) = (Arc::clone(&timeline), Arc::clone(&stop_consumers));
        consumer_threads.push(
            std::thread::Builder::new()
                .name(format!("consumer-{index}"))
                .spawn(move || consumer::run(setup, consumer, stats, timeline, stop))
                .map_err(|e| format!("cannot start a consumer thread: {e}"))?,
        );
    }

    // Monitor: progress once a second, CPU samples at the window's edges, end of the window.
    let mut progress = Progress::new(clock, start_ns, warmup_end_ns, args);
    let mut broker_cpu_window_start: Option<Vec<Option<f64>>> = None;
    let mut bench_cpu_window_start: Option<f64> = None;
    let mut steal_window_start: Option<u64> = None;
    let measure_end_ns;
    let (mut consumed_before, mut last_progress_ns) = (0u64, start_ns.max(warmup_end_ns));
    loop {
        std::thread::sleep(TICK);
        let now_ns = clock.wall_ns();
        if interrupted.load(Ordering::Relaxed) {
            stop_producers.store(true, Ordering::Relaxed);
        }
        if broker_cpu_window_start.is_none() && now_ns >= warmup_end_ns {
            broker_cpu_window_start = Some(sample_brokers(&args.broker_pid));
            bench_cpu_window_start = Some(process_cpu_seconds());
            steal_window_start = steal::total_ms();
        }
        progress.maybe_print(now_ns, "", &producer_stats, &consumer_stats, &errors);
        let done = if workload.produces() {
            producer_stats.iter().all(|s| s.done_sending.load(Ordering::Acquire))
        } else {
            let consumed = sum(&consumer_stats, |s| &s.consumed_measured);
            if consumed != consumed_before {
                (consumed_before, last_progress_ns) = (consumed, now_ns);
            }
            // A topic that holds fewer records than --records must not hang the run.
            let starved = args.records.is_some()
                && now_ns.saturating_sub(last_progress_ns)
                    > duration_ns(args.workload.drain_timeout);
            if starved {
                errors.add(format!(
                    "consume: no new record for {:.0} s (the drain timeout) after {consumed} of \
                     the {} asked for",
                    args.workload.drain_timeout.as_secs_f64(),
                    args.records.unwrap_or(0)
                ));
            }
            starved
                || interrupted.load(Ordering::Relaxed)
                || args.records.map_or(now_ns >= end_ns, |records| consumed >= records)
        };
        if done {
            measure_end_ns = if workload.produces() {
                producer_stats.iter().map(|s| load(&s.send_end_ns)).max().unwrap_or(now_ns)
            } else {
                now_ns
            };
            break;
        }
    }
    let broker_cpu_window_end = sample_brokers(&args.broker_pid);
    let bench_cpu_window_end = process_cpu_seconds();
    let steal_window_end = steal::total_ms();
    let bench_cpu_measured_seconds =
        bench_cpu_window_end - bench_cpu_window_start.unwrap_or(bench_cpu_window_end);
    let broker_cpu_window_start =
        broker_cpu_window_start.unwrap_or_else(|| broker_cpu_window_end.clone());
    // Counters of a consume-only run freeze at the end of its window.
    let consume_window_snapshot = (
        sum(&consumer_stats, |s| &s.consumed_measured),
        sum(&consumer_stats, |s| &s.consumed_bytes_measured),
    );

    // Drain: producers flush, then end-to-end consumers catch up with what was acknowledged.
    while producer_threads.iter().any(|t| !t.is_finished()) {
        std::thread::sleep(TICK);
        progress.maybe_print(
            clock.wall_ns(),
            "draining",
            &producer_stats,
            &consumer_stats,
            &errors,
        );
    }
    for thread in producer_threads {
        let _ = thread.join();
    }
    if workload == Workload::EndToEnd {
        let acked = sum(&producer_stats, |s| &s.acked_total);
        let drain_deadline_ns = clock.wall_ns() + duration_ns(args.workload.drain_timeout);
        loop {
            let seen = sum(&consumer_stats, |s| &s.run_records);
            let now_ns = clock.wall_ns();
            if seen >= acked {
                break;
            }
            if now_ns >= drain_deadline_ns {
                errors.add(format!(
                    "drain: {} acknowledged records not consumed within {:.0} s",
                    acked - seen,
                    args.workload.drain_timeout.as_secs_f64()
                ));
                break;
            }
            std::thread::sleep(TICK);
            progress.maybe_print(now_ns, "draining", &producer_stats, &consumer_stats, &errors);
        }
    }
    stop_consumers.store(true, Ordering::Relaxed);
    for thread in consumer_threads {
        let _ = thread.join();
    }
    let broker_cpu_end = sample_brokers(&args.broker_pid);
    let bench_cpu_seconds = process_cpu_seconds() - bench_cpu_start;

    let measured_seconds = measure_end_ns.saturating_sub(warmup_end_ns) as f64 / 1e9;
    let monitor = steal::monitor();
    if let Some(monitor) = monitor {
        monitor.settle();
    }
    let mut latency = BTreeMap::new();
    let mut histograms = Vec::new();
    let mut host_steal = monitor.map(|monitor| {
        // Through the drain too: the last measured records complete after the window.
        let episodes = monitor.episodes_within(warmup_end_ns, clock.wall_ns());
        HostSteal {
            stolen_ms: steal_window_end
                .zip(steal_window_start)
                .map_or(0, |(end, start)| end.saturating_sub(start)),
            episodes: episodes.len(),
            longest_ms: episodes.iter().map(|e| e.stolen_ms).max().unwrap_or(0),
            ..HostSteal::default()
        }
    });
    let mut add_series = |name: &str, series: Series, corrected: bool| {
        latency.insert(name.to_string(), LatencySummary::from_histogram(&series.all, corrected));
        histograms.push((name.to_string(), series.all));
        if let Some(host_steal) = host_steal.as_mut() {
            let (steal_free, touched) = series.steal_free;
            host_steal.touched.insert(name.to_string(), touched);
            host_steal
                .steal_free
                .insert(name.to_string(), LatencySummary::from_histogram(&steal_free, corrected));
        }
    };
    let produce = workload.produces().then(|| {
        add_series("publish", Series::merge(&producer_stats, |s| &s.publish), open_loop);
        if open_loop {
            add_series(
                "publish_uncorrected",
                Series::merge(&producer_stats, |s| &s.publish_uncorrected),
                false,
            );
        }
        let acked = sum(&producer_stats, |s| &s.acked_measured);
        let bytes = sum(&producer_stats, |s| &s.acked_bytes_measured);
        ProduceResult {
            sent_total: sum(&producer_stats, |s| &s.sent_total),
            acked_total: sum(&producer_stats, |s| &s.acked_total),
            failed_total: sum(&producer_stats, |s| &s.failed_total),
            sent: sum(&producer_stats, |s| &s.sent_measured),
            acked,
            bytes,
            records_per_sec: per_sec(acked, measured_seconds),
            mb_per_sec: mb_per_sec(bytes, measured_seconds),
            queue_full_waits: sum(&producer_stats, |s| &s.queue_full_waits),
        }
    });
    let consume = workload.consumes().then(|| {
        let (consumed, bytes) = if workload == Workload::EndToEnd {
            (
                sum(&consumer_stats, |s| &s.consumed_measured),
                sum(&consumer_stats, |s| &s.consumed_bytes_measured),
            )
        } else {
            consume_window_snapshot
        };
        if workload == Workload::EndToEnd {
            add_series("end_to_end", Series::merge(&consumer_stats, |s| &s.end_to_end), open_loop);
            if open_loop {
                add_series(
                    "end_to_end_uncorrected",
                    Series::merge(&consumer_stats, |s| &s.end_to_end_uncorrected),
                    false,
                );
            }
        }
        ConsumeResult {
            consumed_total: sum(&consumer_stats, |s| &s.consumed_total),
            consumed,
            bytes,
            records_per_sec: per_sec(consumed, measured_seconds),
            mb_per_sec: mb_per_sec(bytes, measured_seconds),
            foreign_records: sum(&consumer_stats, |s| &s.foreign_records),
        }
    });
    let open_loop_result = match (open_loop, args.rate) {
        (true, Some(rate)) => {
            Some(open_loop_result(rate, args.workload.arrival, &producer_stats, measured_seconds))
        }
        _ => None,
    };
    let brokers = args
        .broker_pid
        .iter()
        .enumerate()
        .map(|(i, pid)| BrokerCpu {
            pid: *pid,
            run_seconds: delta(broker_cpu_start[i], broker_cpu_end[i]),
            measured_seconds: delta(broker_cpu_window_start[i], broker_cpu_window_end[i]),
        })
        .collect();
    let result = RunResult {
        format_version: FORMAT_VERSION,
        label: args.label.clone().unwrap_or_else(|| args.bootstrap.clone()),
        bootstrap: args.bootstrap.clone(),
        workload: workload.name().to_string(),
        started_at_unix_ms,
        interrupted: interrupted.load(Ordering::Relaxed),
        config: RunConfig {
            native: native_config,
            ..run_config(workload, args, partitions, seed, producer_config, consumer_config)
        },
        measured_seconds,
        produce,
        consume,
        open_loop: open_loop_result,
        latency,
        host_steal,
        errors: errors.snapshot(),
        cpu: CpuResult {
            bench_seconds: bench_cpu_seconds,
            bench_measured_seconds: bench_cpu_measured_seconds,
            brokers,
        },
    };
    Ok(RunOutput { result, histograms })
}

/// A producer's client, created before the run starts.
enum ProducerClient {
    Librdkafka(ThreadedProducer<ProducerCtx>),
    Native(NativeProducer),
}

/// The process's Ctrl-C flag, installed on first use. The first SIGINT or SIGTERM sets it: a
/// run in progress ends early and still reports, and a sweep stops after that step. A second
/// signal, while the flag is set, exits at once. One flag for the whole process, rather than one
/// per run, so that a sweep of many runs does not stack up signal handlers.
pub fn interrupt_flag() -> Result<Arc<AtomicBool>, String> {
    static FLAG: OnceLock<Arc<AtomicBool>> = OnceLock::new();
    if let Some(flag) = FLAG.get() {
        return Ok(Arc::clone(flag));
    }
    let flag = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(
            signal,
            EXIT_SECOND_SIGNAL,
            Arc::clone(&flag),
        )
        .and_then(|_| signal_hook::flag::register(signal, Arc::clone(&flag)))
        .map_err(|e| format!("cannot install a signal handler: {e}"))?;
    }
    // Only the main thread runs benchmarks, so nobody else can have set FLAG in between.
    Ok(Arc::clone(FLAG.get_or_init(|| flag)))
}

pub fn validate(workload: Workload, args: &RunArgs) -> Result<(), String> {
    if args.workload.partitions < 1 {
        return Err("--partitions must be at least 1".to_string());
    }
    if workload.produces() && !(1..=WORKERS_MAX).contains(&args.workload.producers) {
        return Err(format!("--producers must be between 1 and {WORKERS_MAX}"));
    }
    if workload.consumes() && !(1..=WORKERS_MAX).contains(&args.workload.consumers) {
        return Err(format!("--consumers must be between 1 and {WORKERS_MAX}"));
    }
    if args.workload.transactional_id.is_some() && args.workload.acks != Acks::All {
        return Err("--transactional-id needs --acks all (as librdkafka requires)".to_string());
    }
    if args.workload.transactional_id.is_some() && args.workload.txn_interval_ms == 0 {
        return Err("--txn-interval-ms must be at least 1".to_string());
    }
    if args.workload.idempotence && args.workload.acks != Acks::All {
        return Err("--idempotence needs --acks all (as librdkafka requires)".to_string());
    }
    if args.records == Some(0) {
        return Err("--records must be at least 1".to_string());
    }
    if args.records.is_none() && args.workload.duration.is_zero() {
        return Err("--duration must be longer than zero".to_string());
    }
    if workload == Workload::Consume && args.rate.is_some() {
        return Err("--rate applies to producers; `consume` reads as fast as it can".to_string());
    }
    match args.workload.client {
        Client::Native => validate_native(workload, args),
        Client::Librdkafka if args.workload.max_in_flight.is_some() => {
            Err("--max-in-flight applies to --client native; librdkafka takes -X max.in.flight=N"
                .to_string())
        }
        Client::Librdkafka => Ok(()),
    }
}

/// What `--client native` does not do, refused before anything starts.
fn validate_native(workload: Workload, args: &RunArgs) -> Result<(), String> {
    let workload_args = &args.workload;
    let refuse = |what: &str| {
        Err(format!("--client native {what}; use --client librdkafka (the default) for that"))
    };
    if !workload.produces() {
        return refuse(
            "only produces (`e2e` runs native producers with librdkafka consumers); \
             `consume` reads with librdkafka, without --client",
        );
    }
    if workload_args.transactional_id.is_some() {
        return refuse("has no transactions (--transactional-id)");
    }
    if workload_args.idempotence {
        return refuse("has no idempotence (no producer id, no sequence numbers)");
    }
    if let Some(linger_ms) = workload_args.linger_ms.filter(|l| *l != 0) {
        return refuse(&format!(
            "sends every record in a request of its own (linger 0), not --linger-ms {linger_ms}"
        ));
    }
    if workload_args.batch_size.is_some() {
        return refuse("puts one record in each batch; --batch-size is librdkafka's");
    }
    if !workload_args.producer_config.is_empty() {
        return refuse(
            "takes no librdkafka properties (-X/--producer-config); its own options are \
             --acks, --compression and --max-in-flight",
        );
    }
    if workload_args.max_in_flight.is_some_and(|n| !(1..=MAX_IN_FLIGHT_MAX).contains(&n)) {
        return Err(format!("--max-in-flight must be between 1 and {MAX_IN_FLIGHT_MAX}"));
    }
    Ok(())
}

/// The librdkafka properties of the producers (none for `--client native`).
fn producer_config(args: &RunArgs) -> BTreeMap<String, String> {
    let mut config = BTreeMap::new();
    if args.workload.client == Client::Native {
        return config;
    }
    let mut set = |key: &str, value: String| {
        config.insert(key.to_string(), value);
    };
    set("acks", args.workload.acks.librdkafka_value().to_string());
    set("compression.type", args.workload.compression.librdkafka_name().to_string());
    let idempotence = args.workload.idempotence || args.workload.transactional_id.is_some();
    set("enable.idempotence", idempotence.to_string());
    if let Some(linger_ms) = args.workload.linger_ms {
        set("linger.ms", linger_ms.to_string());
    }
    if let Some(batch_size) = args.workload.batch_size {
        set("batch.size", batch_size.to_string());
    }
    for (key, value) in &args.workload.producer_config {
        set(key, value.clone());
    }
    config
}

fn consumer_config(args: &RunArgs, run_id: u32) -> BTreeMap<String, String> {
    let mut config = BTreeMap::new();
    let mut set = |key: &str, value: &str| {
        config.insert(key.to_string(), value.to_string());
    };
    // librdkafka needs a group id to assign partitions, but the bench never joins the group
    // (no subscribe) and never commits, so the group does not exist on the broker.
    set("group.id", &format!("spate-bench-{run_id:08x}"));
    set("enable.auto.commit", "false");
    set("enable.auto.offset.store", "false");
    set("auto.offset.reset", "earliest");
    for (key, value) in &args.workload.consumer_config {
        set(key, value);
    }
    config
}

fn run_config(
    workload: Workload,
    args: &RunArgs,
    partitions: i32,
    seed: u64,
    producer_config: BTreeMap<String, String>,
    consumer_config: BTreeMap<String, String>,
) -> RunConfig {
    let native = args.workload.client == Client::Native;
    RunConfig {
        client: args.workload.client.name().to_string(),
        native: None,
        topic: args.workload.topic.clone(),
        partitions,
        producers: if workload.produces() { args.workload.producers } else { 0 },
        consumers: if workload.consumes() { args.workload.consumers } else { 0 },
        record_size: args.workload.record_size.to_string(),
        payload: format!("{:?}", args.workload.payload).to_lowercase(),
        keys: args.workload.keys.to_string(),
        compression: args.workload.compression.librdkafka_name().to_string(),
        acks: args.workload.acks.librdkafka_value().to_string(),
        // The native client's requests hold one record each: linger 0 whatever was asked.
        linger_ms: if native { Some(0) } else { args.workload.linger_ms },
        batch_size: args.workload.batch_size,
        idempotence: args.workload.idempotence,
        duration_seconds: args.workload.duration.as_secs_f64(),
        records: args.records,
        warmup_seconds: args.workload.warmup.as_secs_f64(),
        rate: args.rate.filter(|_| workload.produces()),
        arrival: format!("{:?}", args.workload.arrival).to_lowercase(),
        from: (workload == Workload::Consume).then(|| format!("{:?}", args.from).to_lowercase()),
        seed,
        producer_config: if workload.produces() { producer_config } else { BTreeMap::new() },
        consumer_config: if workload.consumes() { consumer_config } else { BTreeMap::new() },
    }
}

fn open_loop_result(
    rate: f64,
    arrival: Arrival,
    producer_stats: &[Arc<ProducerStats>],
    measured_seconds: f64,
) -> OpenLoopResult {
    let sent = sum(producer_stats, |s| &s.sent_measured);
    let missed = sum(producer_stats, |s| &s.missed_measured);
    let late = sum(producer_stats, |s| &s.late_measured);
    let scheduled = sent + missed;
    let achieved_rate = per_sec(sent, measured_seconds);
    let send_lag = merge(producer_stats, |s| &s.send_lag);
    let send_lag = (!send_lag.is_empty()).then(|| LatencySummary::from_histogram(&send_lag, false));
    let allowed = (scheduled as f64 * LATE_FRACTION_MAX).floor() as u64;
    let kept_up = missed <= allowed && late <= allowed;
    let lag_text = send_lag.as_ref().map_or(String::new(), |lag| {
        format!("; send lag p99 {} ms, max {} ms", ms(lag.p99_us), ms(lag.max_us))
    });
    let late_threshold_ms = LATE_SEND_NS as f64 / 1e6;
    let verdict = if kept_up {
        format!("kept up: target {rate:.0} records/s, sent {achieved_rate:.1} records/s{lag_text}")
    } else {
        format!(
            "COULD NOT KEEP UP: target {rate:.0} records/s, sent {achieved_rate:.1} records/s; \
             {missed} of {scheduled} due records never sent, {late} sent more than \
             {late_threshold_ms:.0} ms late{lag_text}. The broker was offered less load than \
             asked: lower --rate, add --producers, or look at the bench's CPU"
        )
    };
    OpenLoopResult {
        target_rate: rate,
        arrival: format!("{arrival:?}").to_lowercase(),
        scheduled,
        sent,
        missed,
        achieved_rate,
        late,
        late_threshold_ms,
        send_lag,
        kept_up,
        verdict,
    }
}

/// One latency series merged over workers: every record, and the steal-free half with the
/// count of records host steal touched.
struct Series {
    all: Histogram<u64>,
    steal_free: (Histogram<u64>, u64),
}

impl Series {
    fn merge<T>(workers: &[Arc<T>], series: impl Fn(&T) -> &LatencyRecorder + Copy) -> Series {
        Series { all: merge(workers, series), steal_free: merge_steal_free(workers, series) }
    }
}

fn sample_brokers(pids: &[u32]) -> Vec<Option<f64>> {
    pids.iter().map(|pid| cpu_seconds(Some(*pid))).collect()
}

fn delta(before: Option<f64>, after: Option<f64>) -> f64 {
    match (before, after) {
        (Some(before), Some(after)) => after - before,
        _ => 0.0,
    }
}

/// The live progress line on stderr: rates over the last second, latency so far.
struct Progress {
    clock: Clock,
    quiet: bool,
    start_ns: u64,
    warmup_end_ns: u64,
    next_ns: u64,
    last_ns: u64,
    last: [u64; 4],
    last_consumed_bytes: u64,
    rate: Option<f64>,
}

impl Progress {
    fn new(clock: Clock, start_ns: u64, warmup_end_ns: u64, args: &RunArgs) -> Progress {
        Progress {
            clock,
            quiet: args.workload.quiet,
            start_ns,
            warmup_end_ns,
            next_ns: start_ns + PROGRESS_INTERVAL_NS,
            last_ns: start_ns,
            last: [0; 4],
            last_consumed_bytes: 0,
            rate: args.rate,
        }
    }

    fn maybe_print(
        &mut self,
        now_ns: u64,
        phase: &str,
        producers: &[Arc<ProducerStats>],
        consumers: &[Arc<ConsumerStats>],
        errors: &ErrorCounts,
    ) {
        if now_ns < self.next_ns {
            return;
        }
        self.next_ns += PROGRESS_INTERVAL_NS * ((now_ns - self.next_ns) / PROGRESS_INTERVAL_NS + 1);
        if self.quiet {
            return;
        }
        let counters = [
            sum(producers, |s| &s.sent_total),
            sum(producers, |s| &s.acked_total),
            sum(producers, |s| &s.acked_bytes_total),
            sum(consumers, |s| &s.consumed_total),
        ];
        let consumed_bytes = sum(consumers, |s| &s.consumed_bytes_total);
        let seconds = (now_ns - self.last_ns) as f64 / 1e9;
        let rate = |i: usize| per_sec(counters[i] - self.last[i], seconds);
        let phase = if !phase.is_empty() {
            phase
        } else if now_ns < self.warmup_end_ns {
            "warm-up"
        } else {
            "measuring"
        };
        let mut line = format!("[{:>6.1}s {phase:>9}]", (now_ns - self.start_ns) as f64 / 1e9);
        if !producers.is_empty() {
            line += &format!(
                " sent {:>9.0}/s acked {:>9.0}/s {:>7.2} MB/s",
                rate(0),
                rate(1),
                mb_per_sec(counters[2] - self.last[2], seconds)
            );
            line += &percentiles(" | publish", merge(producers, |s| &s.publish));
            if let Some(target) = self.rate {
                let due = target * (now_ns - self.start_ns) as f64 / 1e9;
                let behind = due - counters[0] as f64;
                if behind > (target * LATE_FRACTION_MAX).max(1.0) + producers.len() as f64 {
                    line += &format!(" | BEHIND by {behind:.0} records");
                }
            }
        }
        if !consumers.is_empty() {
            let bytes_rate = mb_per_sec(consumed_bytes - self.last_consumed_bytes, seconds);
            line += &format!(" | consumed {:>9.0}/s {bytes_rate:>7.2} MB/s", rate(3));
            if consumers.iter().any(|c| load(&c.run_records) > 0) {
                line += &percentiles(" | e2e", merge(consumers, |s| &s.end_to_end));
            }
        }
        line += &format!(" | errors {}", errors.total());
        eprintln!("{line}");
        self.last = counters;
        self.last_consumed_bytes = consumed_bytes;
        self.last_ns = self.clock.wall_ns().max(now_ns);
    }
}

fn percentiles(name: &str, histogram: Histogram<u64>) -> String {
    if histogram.is_empty() {
        return format!("{name} -");
    }
    format!(
        "{name} p50 {} ms p99 {} ms",
        ms(histogram.value_at_quantile(0.5)),
        ms(histogram.value_at_quantile(0.99))
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn validated(args: &[&str]) -> Result<(), String> {
        let cli = Cli::try_parse_from(["spate-bench"].iter().chain(args)).expect("parses");
        match &cli.command {
            Command::Produce(run) => validate(Workload::Produce, run),
            Command::Consume(run) => validate(Workload::Consume, run),
            Command::EndToEnd(run) => validate(Workload::EndToEnd, run),
            _ => unreachable!("a run command"),
        }
    }

    #[test]
    fn the_native_client_refuses_what_it_does_not_do() {
        assert_eq!(
            validated(&["produce", "--client", "native", "-z", "lz4", "--acks", "0"]),
            Ok(())
        );
        assert_eq!(validated(&["e2e", "--client", "native", "--linger-ms", "0"]), Ok(()));
        assert_eq!(validated(&["produce", "--client", "native", "--max-in-flight", "5"]), Ok(()));
        let refusals = [
            (&["produce", "--client", "native", "--idempotence"][..], "idempotence"),
            (&["produce", "--client", "native", "--transactional-id", "t"], "transactions"),
            (&["produce", "--client", "native", "--linger-ms", "5"], "--linger-ms 5"),
            (&["produce", "--client", "native", "--batch-size", "16k"], "--batch-size"),
            (&["produce", "--client", "native", "-X", "linger.ms=1"], "-X"),
            (&["consume", "--client", "native"], "only produces"),
            (&["produce", "--client", "native", "--max-in-flight", "0"], "--max-in-flight"),
            (&["produce", "--max-in-flight", "8"], "applies to --client native"),
        ];
        for (args, expected) in refusals {
            let message = validated(args).expect_err("refused");
            assert!(message.contains(expected), "{args:?}: {message}");
        }
    }
}
