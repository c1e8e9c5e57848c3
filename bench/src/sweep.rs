//! `spate-bench sweep`: latency against offered load. Each broker climbs a ladder of open-loop
//! rates; every step is an ordinary `produce` (or `e2e`) run through `run::run` on a topic of
//! its own, so a step measures exactly what `spate-bench produce --rate R` would.
//!
//! ```text
//!   rate      1k        2k        5k        10k  ...
//!   broker A  step 1    step 3    step 5    step 7 (could not keep up: A stops here)
//!   broker B  step 2    step 4    step 6    step 8    step 9 ...
//! ```
//!
//! The brokers alternate at every rate instead of running one ladder after the other, so that a
//! disturbance of the shared machine (another build, a noisy neighbour, thermal throttling)
//! lands in one step of each broker rather than in one broker's whole ladder, and both ladders
//! are measured over the same span of time. `--settle` idles between steps so that one broker's
//! leftover work (log flushes, topic deletion, garbage collection) does not run during the
//! other's measurement.
//!
//! With `--pause-idle-brokers` the brokers not being loaded are stopped (SIGSTOP) for the
//! length of the step: on a small machine the brokers share a CPU, and an idle JVM's compiler,
//! collector and timers otherwise run inside the other broker's measurement (seen: Spate's
//! p99.9 at 1,000 records/s 12 ms beside an idle Kafka, 0.7 ms alone).
//!
//! A broker's ladder stops after its first step that did not keep up (the open-loop verdict:
//! more than 1 % of the records sent late or never) or that had errors, unless `--keep-going`:
//! beyond that point the offered load is no longer what the row says.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use clap::ArgMatches;
use serde::{Deserialize, Serialize};

use crate::admin;
use crate::cli::{RunArgs, SweepArgs, WorkloadArgs};
use crate::compare;
use crate::plot::{self, RatePoint, RateSeries, Stroke};
use crate::report::{client_summary, RunResult};
use crate::run::{self, Workload};
use crate::spec::StartFrom;

/// Version of the sweep JSON document; it goes up if a field ever changes meaning.
pub const SWEEP_FORMAT_VERSION: u32 = 1;
/// A step whose bench used at least this share of the CPUs it may run on gets a note: the bench,
/// not the broker, may have been the limit there.
const BENCH_BUSY_PERCENT_OF_CPUS: f64 = 90.0;
/// Kafka's limit on topic names.
const TOPIC_NAME_BYTES_MAX: usize = 249;
/// The percentiles a sweep reports and draws, with the line style of each on the chart.
const PERCENTILES: [(&str, Stroke); 3] =
    [("p50", Stroke::Solid), ("p99", Stroke::Dashed), ("p99.9", Stroke::Dotted)];

/// One broker of a sweep, as the command line named it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Target {
    pub label: String,
    pub bootstrap: String,
    pub pid: Option<u32>,
}

/// The JSON document of a sweep: the ladder, the brokers, and every step in the order it ran.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct SweepResult {
    pub format_version: u32,
    /// "produce" or "end-to-end".
    pub workload: String,
    /// The series the chart shows: "publish", or "end_to_end" for `--e2e`.
    pub series: String,
    /// Offered rates in records/s, ascending; brokers that stopped early have fewer points.
    pub rates: Vec<f64>,
    /// "alternate": at each rate every broker runs once, in command-line order.
    pub order: String,
    pub brokers: Vec<SweepBroker>,
    pub points: Vec<SweepPoint>,
    /// The sweep was ended by Ctrl-C.
    pub interrupted: bool,
    /// CPUs the bench could run on (its affinity): a step whose bench CPU nears all of them
    /// may have measured the bench rather than the broker.
    pub bench_cpus: usize,
}

#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct SweepBroker {
    #[serde(flatten)]
    pub target: Target,
    /// Why its ladder ended before the last rate, if it did.
    pub stopped: Option<String>,
}

/// One step: one broker at one offered rate.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct SweepPoint {
    pub label: String,
    /// Offered records/s (the open-loop target).
    pub rate: f64,
    /// Records/s the broker acknowledged, of those due in the measured window.
    pub achieved_rate: f64,
    pub kept_up: bool,
    /// Errors of the step, all kinds.
    pub errors: u64,
    pub publish_ms: PercentilesMs,
    /// `--e2e` only.
    pub end_to_end_ms: Option<PercentilesMs>,
    /// CPU of the bench during the measured window, in percent of one core.
    pub bench_cpu_percent: f64,
    pub bench_cpu_us_per_record: Option<f64>,
    /// With --broker-pid: the broker's CPU during the measured window.
    pub broker_cpu_percent: Option<f64>,
    pub broker_cpu_us_per_record: Option<f64>,
    /// The step's complete result, as `produce --json` writes it.
    pub result: RunResult,
}

#[derive(Serialize, Deserialize, Debug, Clone, Copy, Default, PartialEq)]
pub struct PercentilesMs {
    pub p50: f64,
    pub p99: f64,
    pub p99_9: f64,
}

impl PercentilesMs {
    fn of(result: &RunResult, series: &str) -> Option<PercentilesMs> {
        let summary = result.latency.get(series).filter(|s| s.count > 0)?;
        let in_ms = |us: u64| us as f64 / 1_000.0;
        Some(PercentilesMs {
            p50: in_ms(summary.p50_us),
            p99: in_ms(summary.p99_us),
            p99_9: in_ms(summary.p99_9_us),
        })
    }

    fn values(&self) -> [f64; 3] {
        [self.p50, self.p99, self.p99_9]
    }
}

impl SweepPoint {
    fn new(label: &str, rate: f64, result: RunResult) -> SweepPoint {
        let seconds = result.measured_seconds;
        let records = result.produce.as_ref().map_or(0, |p| p.acked);
        let percent = |cpu_seconds: f64| {
            if seconds > 0.0 {
                100.0 * cpu_seconds / seconds
            } else {
                0.0
            }
        };
        let per_record =
            |cpu_seconds: f64| (records > 0).then(|| cpu_seconds * 1e6 / records as f64);
        let broker_cpu = result.cpu.brokers.first().map(|b| b.measured_seconds);
        SweepPoint {
            label: label.to_string(),
            rate,
            achieved_rate: result.produce.as_ref().map_or(0.0, |p| p.records_per_sec),
            kept_up: result.open_loop.as_ref().is_some_and(|o| o.kept_up),
            errors: result.errors.values().sum(),
            publish_ms: PercentilesMs::of(&result, "publish").unwrap_or_default(),
            end_to_end_ms: PercentilesMs::of(&result, "end_to_end"),
            bench_cpu_percent: percent(result.cpu.bench_measured_seconds),
            bench_cpu_us_per_record: per_record(result.cpu.bench_measured_seconds),
            broker_cpu_percent: broker_cpu.map(percent),
            broker_cpu_us_per_record: broker_cpu.and_then(per_record),
            result,
        }
    }

    /// The latency the chart draws for this step.
    fn charted(&self, series: &str) -> PercentilesMs {
        match (series, &self.end_to_end_ms) {
            ("end_to_end", Some(end_to_end)) => *end_to_end,
            _ => self.publish_ms,
        }
    }
}

/// Runs the sweep and writes its outputs; `Ok(true)` when every step that was due ran (ladders
/// that stopped because a broker could not keep up count as complete).
pub fn sweep(args: &SweepArgs, matches: &ArgMatches) -> Result<bool, String> {
    let targets = targets(args, matches)?;
    let rates = args.rates.rates(args.steps)?;
    let workload = if args.e2e { Workload::EndToEnd } else { Workload::Produce };
    // Bad workload options would fail every step; say so once, before the first.
    if let (Some(target), Some(rate)) = (targets.first(), rates.first()) {
        run::validate(workload, &step_args(args, target, *rate, &args.workload.topic))?;
    }
    let series = if args.e2e { "end_to_end" } else { "publish" };
    let interrupted = run::interrupt_flag()?;
    // Topics of this sweep carry its id, so that a rerun never finds an earlier sweep's data.
    let sweep_id: u32 = rand::random();
    if args.pause_idle_brokers {
        if let Some(target) = targets.iter().find(|target| target.pid.is_none()) {
            return Err(format!(
                "--pause-idle-brokers needs the pid of every broker; give {} a --broker-pid",
                target.label
            ));
        }
    }
    let pids: Vec<u32> = targets.iter().filter_map(|target| target.pid).collect();
    let others = |target: &Target| -> Vec<u32> {
        let chosen = args.pause_idle_brokers;
        pids.iter().copied().filter(|pid| chosen && Some(*pid) != target.pid).collect()
    };
    let mut brokers: Vec<SweepBroker> =
        targets.into_iter().map(|target| SweepBroker { target, stopped: None }).collect();
    if let (false, Some(rate)) = (args.warm_up_brokers.is_zero(), rates.first()) {
        for broker in &brokers {
            let _paused = Paused::stop(others(&broker.target))?;
            let label = &broker.target.label;
            let seconds = args.warm_up_brokers.as_secs_f64();
            eprintln!("sweep: warming {label} up at {rate:.0} records/s for {seconds:.0} s");
            let topic =
                step_topic(&args.workload.topic, &format!("{label}-warm-up"), *rate, sweep_id);
            let mut warm_up = step_args(args, &broker.target, *rate, &topic);
            warm_up.workload.duration = args.warm_up_brokers;
            warm_up.workload.quiet = true;
            if let Err(message) = run::run(workload, &warm_up) {
                eprintln!("sweep: warming {label} up failed: {message}");
            }
            if !args.keep_topics {
                if let Err(message) = admin::delete_topic(&broker.target.bootstrap, &topic) {
                    eprintln!("note: {message}");
                }
            }
        }
    }
    let mut points = Vec::new();
    let mut complete = true;
    let step_count = rates.len() * brokers.len();
    let mut step = 0;
    'ladder: for rate in &rates {
        for broker in brokers.iter_mut() {
            if broker.stopped.is_some() {
                continue;
            }
            if interrupted.load(Ordering::Relaxed) {
                // Ctrl-C between two steps: the next run would refuse to start anyway.
                complete = false;
                break 'ladder;
            }
            step += 1;
            if step > 1 && !args.settle.is_zero() {
                std::thread::sleep(args.settle);
            }
            let label = &broker.target.label;
            eprintln!("sweep: step {step} of at most {step_count}: {label} at {rate:.0} records/s");
            let paused = Paused::stop(others(&broker.target))?;
            let result = run_step(args, workload, &broker.target, *rate, sweep_id);
            drop(paused);
            let result = match result {
                Ok(result) => result,
                Err(message) => {
                    eprintln!("sweep: {label} at {rate:.0} records/s could not run: {message}");
                    broker.stopped = Some(format!("could not run at {rate:.0}/s: {message}"));
                    complete = false;
                    continue;
                }
            };
            let point = SweepPoint::new(label, *rate, result);
            eprintln!("sweep: {}", step_line(&point));
            if point.result.interrupted || interrupted.load(Ordering::Relaxed) {
                points.push(point);
                complete = false;
                break 'ladder;
            }
            if !args.keep_going && !point.kept_up {
                broker.stopped = Some(format!("could not keep up at {rate:.0} records/s"));
            } else if !args.keep_going && point.errors > 0 {
                broker.stopped = Some(format!("errors at {rate:.0} records/s"));
            }
            points.push(point);
        }
        if brokers.iter().all(|b| b.stopped.is_some()) {
            break;
        }
    }
    let result = SweepResult {
        format_version: SWEEP_FORMAT_VERSION,
        workload: workload.name().to_string(),
        series: series.to_string(),
        rates,
        order: "alternate".to_string(),
        brokers,
        points,
        interrupted: interrupted.load(Ordering::Relaxed),
        // Linux: the CPUs of this process's affinity mask (taskset), not of the machine.
        bench_cpus: std::thread::available_parallelism().map_or(1, usize::from),
    };
    print!("{}", table(&result, false));
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&result)
            .map_err(|e| format!("cannot encode the results: {e}"))?;
        crate::write(path, &text)?;
    }
    if let Some(path) = &args.table {
        crate::write(path, &table(&result, true))?;
    }
    if let Some(path) = &args.plot {
        crate::write(path, &chart(&result, args.title.as_deref())?)?;
    }
    Ok(complete)
}

/// Brokers stopped with SIGSTOP for the length of a step; continued (SIGCONT) when dropped.
struct Paused(Vec<u32>);

impl Paused {
    fn stop(pids: Vec<u32>) -> Result<Paused, String> {
        let mut paused = Paused(Vec::with_capacity(pids.len()));
        for pid in pids {
            signal(pid, libc::SIGSTOP)
                .map_err(|e| format!("cannot stop broker pid {pid} (--pause-idle-brokers): {e}"))?;
            paused.0.push(pid);
        }
        Ok(paused)
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        for pid in &self.0 {
            if let Err(e) = signal(*pid, libc::SIGCONT) {
                eprintln!("sweep: cannot continue broker pid {pid}: {e}; run kill -CONT {pid}");
            }
        }
    }
}

fn signal(pid: u32, signal: libc::c_int) -> std::io::Result<()> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| std::io::ErrorKind::InvalidInput)?;
    // SAFETY: kill(2) has no memory effects; a wrong pid is an error return.
    if unsafe { libc::kill(pid, signal) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// One step: a run on a topic of its own, which is deleted afterwards unless `--keep-topics`.
fn run_step(
    args: &SweepArgs,
    workload: Workload,
    target: &Target,
    rate: f64,
    sweep_id: u32,
) -> Result<RunResult, String> {
    let topic = step_topic(&args.workload.topic, &target.label, rate, sweep_id);
    let result = run::run(workload, &step_args(args, target, rate, &topic))?.result;
    // A step that could not run leaves nothing worth a DeleteTopics (whose wait for an
    // unreachable broker would only delay the error).
    if !args.keep_topics {
        // Not an error of the step: the results stand whether or not the broker deletes.
        if let Err(message) = admin::delete_topic(&target.bootstrap, &topic) {
            eprintln!("note: {message}");
        }
    }
    Ok(result)
}

/// Pairs each `--label` and `--broker-pid` with the `-b` before it on the command line.
fn targets(args: &SweepArgs, matches: &ArgMatches) -> Result<Vec<Target>, String> {
    let positions = |id: &str| -> Vec<usize> {
        matches.indices_of(id).map(Iterator::collect).unwrap_or_default()
    };
    let brokers = positions("bootstrap");
    let label_owners = owners(&brokers, &positions("label"), "--label")?;
    let pid_owners = owners(&brokers, &positions("broker_pid"), "--broker-pid")?;
    let mut targets: Vec<Target> = args
        .bootstrap
        .iter()
        .map(|bootstrap| Target {
            label: bootstrap.clone(),
            bootstrap: bootstrap.clone(),
            pid: None,
        })
        .collect();
    for (label, owner) in args.label.iter().zip(label_owners) {
        targets[owner].label = label.clone();
    }
    for (pid, owner) in args.broker_pid.iter().zip(pid_owners) {
        targets[owner].pid = Some(*pid);
    }
    for (index, target) in targets.iter().enumerate() {
        if targets[..index].iter().any(|t| t.label == target.label) {
            return Err(format!(
                "two brokers are labelled '{}'; give each its own --label",
                target.label
            ));
        }
    }
    Ok(targets)
}

/// For each occurrence of an option (by its position among all arguments), the index of the
/// broker whose `-b` comes last before it. Each broker takes each option at most once.
fn owners(brokers: &[usize], options: &[usize], name: &str) -> Result<Vec<usize>, String> {
    let mut taken = vec![false; brokers.len()];
    let mut owners = Vec::with_capacity(options.len());
    for position in options {
        let Some(owner) = brokers.iter().rposition(|broker| broker < position) else {
            return Err(format!("{name} must come after the -b of the broker it belongs to"));
        };
        if std::mem::replace(&mut taken[owner], true) {
            return Err(format!("two {name} for one -b; give each broker its own -b"));
        }
        owners.push(owner);
    }
    Ok(owners)
}

/// `<prefix>-<label>-<rate>-<sweep id>`, with the label cut down to the characters Kafka allows
/// in a topic name.
fn step_topic(prefix: &str, label: &str, rate: f64, sweep_id: u32) -> String {
    let label: String = label
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '-' })
        .collect();
    let mut topic = format!("{prefix}-{label}-{rate:.0}-{sweep_id:08x}");
    topic.truncate(TOPIC_NAME_BYTES_MAX);
    topic
}

fn step_args(args: &SweepArgs, target: &Target, rate: f64, topic: &str) -> RunArgs {
    RunArgs {
        bootstrap: target.bootstrap.clone(),
        rate: Some(rate),
        records: None,
        from: StartFrom::Tail,
        workload: WorkloadArgs { topic: topic.to_string(), ..args.workload.clone() },
        json: None,
        hgrm: None,
        plot: None,
        label: Some(target.label.clone()),
        broker_pid: target.pid.into_iter().collect(),
        delete_topic: false,
    }
}

fn step_line(point: &SweepPoint) -> String {
    let latency = point.publish_ms;
    format!(
        "{} at {:.0}/s: acked {:.0}/s, publish p50 {:.3} p99 {:.3} p99.9 {:.3} ms, {}",
        point.label,
        point.rate,
        point.achieved_rate,
        latency.p50,
        latency.p99,
        latency.p99_9,
        if point.kept_up { "kept up" } else { "COULD NOT KEEP UP" }
    )
}

/// The table: one row per step, grouped by broker, in rate order; notes say why ladders ended.
pub fn table(result: &SweepResult, markdown: bool) -> String {
    let e2e = result.points.iter().any(|p| p.end_to_end_ms.is_some());
    let mut header: Vec<String> =
        ["broker", "rate/s", "achieved/s"].iter().map(|s| s.to_string()).collect();
    let prefixes: &[&str] = if e2e { &["publish", "e2e"] } else { &["publish"] };
    for prefix in prefixes {
        for (name, _) in PERCENTILES {
            header.push(format!("{prefix} {name} ms"));
        }
    }
    // Host steal (bench/README.md): the step's episodes, and publish p99.9 without the records
    // they spanned.
    for name in ["steal episodes", "steal-free p99.9 ms"] {
        header.push(name.to_string());
    }
    for name in ["kept up", "errors", "bench CPU %", "bench us/rec", "broker CPU %"] {
        header.push(name.to_string());
    }
    header.push("broker us/rec".to_string());
    let mut cells = vec![header];
    let optional = |value: Option<f64>, digits: usize| {
        value.map_or("-".to_string(), |v| format!("{v:.digits$}"))
    };
    for broker in &result.brokers {
        for point in result.points.iter().filter(|p| p.label == broker.target.label) {
            let mut row = vec![
                point.label.clone(),
                format!("{:.0}", point.rate),
                format!("{:.0}", point.achieved_rate),
            ];
            let mut latencies = vec![point.publish_ms];
            if e2e {
                latencies.push(point.end_to_end_ms.unwrap_or_default());
            }
            for latency in latencies {
                row.extend(latency.values().iter().map(|v| format!("{v:.3}")));
            }
            let steal = point.result.host_steal.as_ref();
            row.push(steal.map_or("-".to_string(), |s| s.episodes.to_string()));
            let steal_free =
                steal.and_then(|s| s.steal_free.get("publish")).filter(|s| s.count > 0);
            row.push(
                steal_free.map_or("-".to_string(), |s| format!("{:.3}", s.p99_9_us as f64 / 1e3)),
            );
            row.push(if point.kept_up { "yes" } else { "no" }.to_string());
            row.push(point.errors.to_string());
            row.push(format!("{:.1}", point.bench_cpu_percent));
            row.push(optional(point.bench_cpu_us_per_record, 2));
            row.push(optional(point.broker_cpu_percent, 1));
            row.push(optional(point.broker_cpu_us_per_record, 2));
            cells.push(row);
        }
    }
    let mut notes = String::new();
    for broker in &result.brokers {
        let label = &broker.target.label;
        if let Some(point) = result.points.iter().find(|p| &p.label == label) {
            notes +=
                &format!("producer client ({label}): {}\n", client_summary(&point.result.config));
        }
        if let Some(reason) = &broker.stopped {
            notes += &format!("{label}: ladder ended: {reason}\n");
        }
        for (kind, count) in errors_by_kind(result.points.iter().filter(|p| &p.label == label)) {
            notes += &format!("{label}: error {kind}: {count}\n");
        }
    }
    for point in &result.points {
        let busy_percent = point.bench_cpu_percent / result.bench_cpus.max(1) as f64;
        if busy_percent >= BENCH_BUSY_PERCENT_OF_CPUS {
            notes += &format!(
                "{} at {:.0}/s: the bench used {busy_percent:.0} % of its {} CPU(s); there the \
                 bench, not the broker, may be the limit\n",
                point.label, point.rate, result.bench_cpus
            );
        }
    }
    if result.interrupted {
        notes += "the sweep was interrupted\n";
    }
    if markdown && !notes.is_empty() {
        notes = format!("\n{}", notes.replace('\n', "  \n"));
    }
    compare::render(&cells, markdown) + &notes
}

/// The chart: p50, p99 and p99.9 against offered rate, one colour per broker.
pub fn chart(result: &SweepResult, title: Option<&str>) -> Result<String, String> {
    let mut series = Vec::new();
    for (color, broker) in result.brokers.iter().enumerate() {
        let points: Vec<&SweepPoint> =
            result.points.iter().filter(|p| p.label == broker.target.label).collect();
        for (position, (name, stroke)) in PERCENTILES.iter().enumerate() {
            series.push(RateSeries {
                name: format!("{} {name}", broker.target.label),
                points: points
                    .iter()
                    .map(|p| RatePoint {
                        rate: p.rate,
                        latency_ms: p.charted(&result.series).values()[position],
                        kept_up: p.kept_up,
                    })
                    .collect(),
                color,
                stroke: *stroke,
            });
        }
    }
    let labels: Vec<&str> = result.brokers.iter().map(|b| b.target.label.as_str()).collect();
    let what = if result.series == "end_to_end" { "End-to-end" } else { "Publish" };
    let title = title.map_or_else(
        || format!("{what} latency against offered load: {}", labels.join(" vs ")),
        str::to_string,
    );
    let subtitle = result.points.first().map(|p| describe_workload(&p.result)).unwrap_or_default();
    plot::rate_svg(&title, &subtitle, &series)
}

/// One line for the chart: what every step ran (the rate is on the x axis).
fn describe_workload(run: &RunResult) -> String {
    let config = &run.config;
    let linger = config.linger_ms.map_or("default".to_string(), |l| format!("{l} ms"));
    format!(
        "{}, client {}, {} B records, {}, acks {}, linger {linger}, {} partitions, \
         {} producer(s), {:.0} s per step",
        run.workload,
        config.client,
        config.record_size,
        config.compression,
        config.acks,
        config.partitions,
        config.producers,
        config.duration_seconds
    )
}

/// Errors by kind over all steps of one broker.
fn errors_by_kind<'a>(points: impl Iterator<Item = &'a SweepPoint>) -> BTreeMap<String, u64> {
    let mut errors = BTreeMap::new();
    for point in points {
        for (kind, count) in &point.result.errors {
            *errors.entry(kind.clone()).or_insert(0) += count;
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_belong_to_the_broker_before_them() {
        // -b A --label a -b B --broker-pid 7 --label b
        assert_eq!(owners(&[1, 5], &[3, 9], "--label"), Ok(vec![0, 1]));
        assert_eq!(owners(&[1, 5], &[7], "--broker-pid"), Ok(vec![1]));
        assert!(owners(&[3], &[1], "--label").is_err(), "before any -b");
        assert!(owners(&[1, 5], &[3, 4], "--label").is_err(), "twice for one broker");
    }

    #[test]
    fn step_topics_are_valid_names() {
        let topic = step_topic("bench", "kafka 4.1/ref", 5000.0, 0xab);
        assert_eq!(topic, "bench-kafka-4-1-ref-5000-000000ab");
        assert!(step_topic(&"x".repeat(300), "a", 1.0, 1).len() <= TOPIC_NAME_BYTES_MAX);
    }

    fn point(rate: f64, kept_up: bool, bench_cpu_percent: f64) -> SweepPoint {
        SweepPoint {
            label: "a".to_string(),
            rate,
            achieved_rate: rate,
            kept_up,
            errors: 0,
            publish_ms: PercentilesMs { p50: 0.25, p99: 1.5, p99_9: 3.0 },
            end_to_end_ms: None,
            bench_cpu_percent,
            bench_cpu_us_per_record: Some(40.0),
            broker_cpu_percent: None,
            broker_cpu_us_per_record: None,
            result: RunResult::default(),
        }
    }

    fn two_step_sweep() -> SweepResult {
        let target = Target { label: "a".to_string(), bootstrap: "b:1".to_string(), pid: None };
        SweepResult {
            format_version: SWEEP_FORMAT_VERSION,
            workload: "produce".to_string(),
            series: "publish".to_string(),
            rates: vec![1_000.0, 2_000.0, 5_000.0],
            order: "alternate".to_string(),
            brokers: vec![SweepBroker {
                target,
                stopped: Some("could not keep up at 2000 records/s".to_string()),
            }],
            points: vec![point(1_000.0, true, 20.0), point(2_000.0, false, 99.0)],
            interrupted: false,
            bench_cpus: 1,
        }
    }

    #[test]
    fn table_has_a_row_per_step_and_says_why_a_ladder_ended() {
        let result = two_step_sweep();
        let text = table(&result, false);
        let is_row = |line: &&str| {
            let mut cells = line.split_whitespace();
            cells.next() == Some("a") && cells.next().is_some_and(|r| r.parse::<f64>().is_ok())
        };
        let rows: Vec<&str> = text.lines().filter(is_row).collect();
        assert_eq!(rows.len(), 2, "{text}");
        assert!(rows[1].contains(" no "), "{}", rows[1]);
        assert!(text.contains("a: ladder ended: could not keep up at 2000 records/s"));
        assert!(text.contains("producer client (a): "), "{text}");
        assert!(text.contains("a at 2000/s: the bench used 99 %"), "{text}");
        assert!(!text.contains("a at 1000/s: the bench"), "20 % of a CPU is not busy");
        let markdown = table(&result, true);
        assert!(markdown.starts_with("| broker"));
        assert!(markdown.contains("| a      |   1000 |"), "{markdown}");
    }

    #[test]
    fn chart_has_a_line_per_percentile() {
        let svg = chart(&two_step_sweep(), None).expect("draws");
        for name in ["a p50", "a p99", "a p99.9", "Publish latency against offered load: a"] {
            assert!(svg.contains(&format!(">\n{name}\n<")), "no {name:?}");
        }
    }
}
