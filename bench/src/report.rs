//! Results: the JSON document a run writes, the summary table, and .hgrm files.
//!
//! The JSON document is the interface between `spate-bench <workload> --json` and
//! `spate-bench compare`, and scripts read it too: fields are only ever added, and
//! `format_version` goes up if one ever changes meaning.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

pub const FORMAT_VERSION: u32 = 1;
/// Points per halving of the remaining tail in percentile curves and .hgrm files; 5 is what
/// HdrHistogram's own tools print.
const QUANTILE_TICKS_PER_HALF: u32 = 5;
/// .hgrm values are in milliseconds (HdrHistogram's plotter expects that); histograms hold us.
const HGRM_SCALE_US_PER_UNIT: f64 = 1_000.0;
const BYTES_PER_MB: f64 = 1_000_000.0;

/// Latency series names, in the order tables list them.
pub const SERIES_ORDER: [&str; 4] =
    ["publish", "publish_uncorrected", "end_to_end", "end_to_end_uncorrected"];

#[derive(Serialize, Deserialize, Debug, Clone, Default)]
pub struct RunResult {
    pub format_version: u32,
    pub label: String,
    pub bootstrap: String,
    /// "produce", "consume" or "end-to-end".
    pub workload: String,
    pub started_at_unix_ms: u64,
    pub interrupted: bool,
    pub config: RunConfig,
    /// Length of the measured window (after warm-up), in seconds.
    pub measured_seconds: f64,
    pub produce: Option<ProduceResult>,
    pub consume: Option<ConsumeResult>,
    pub open_loop: Option<OpenLoopResult>,
    /// Keyed by series name: publish, publish_uncorrected (open loop), end_to_end,
    /// end_to_end_uncorrected (open loop).
    pub latency: BTreeMap<String, LatencySummary>,
    /// What the host took from the machine's CPUs during the measured window, and the
    /// latency series without the records it touched. Absent where /proc/stat has no steal,
    /// and from results written before it was added.
    #[serde(default)]
    pub host_steal: Option<HostSteal>,
    /// Errors by kind over the whole run, warm-up included.
    pub errors: BTreeMap<String, u64>,
    pub cpu: CpuResult,
}

#[derive(Serialize, Deserialize, Debug, Clone, Default)]
pub struct RunConfig {
    /// The producers' client: "librdkafka" or "native" (`--client`). Results written before
    /// the native client existed are librdkafka's.
    #[serde(default = "librdkafka")]
    pub client: String,
    /// `--client native`: what its producers used.
    #[serde(default)]
    pub native: Option<NativeClientConfig>,
    pub topic: String,
    pub partitions: i32,
    pub producers: usize,
    pub consumers: usize,
    pub record_size: String,
    pub payload: String,
    pub keys: String,
    pub compression: String,
    pub acks: String,
    pub linger_ms: Option<u32>,
    pub batch_size: Option<usize>,
    pub idempotence: bool,
    pub duration_seconds: f64,
    pub records: Option<u64>,
    pub warmup_seconds: f64,
    /// Target records per second over all producers; `None` means closed loop.
    pub rate: Option<f64>,
    pub arrival: String,
    pub from: Option<String>,
    pub seed: u64,
    /// Every librdkafka property the bench set on its producers and consumers.
    pub producer_config: BTreeMap<String, String>,
    pub consumer_config: BTreeMap<String, String>,
}

fn librdkafka() -> String {
    "librdkafka".to_string()
}

/// The native client's settings, as the producers found them when they connected.
#[derive(Serialize, Deserialize, Debug, Clone, Default)]
pub struct NativeClientConfig {
    /// The Produce version both sides serve (the highest in 3..12).
    pub produce_version: i16,
    /// The partitions' leader that every producer connected to, "host:port (node N)".
    pub leader: String,
    /// Produce requests each producer may have unanswered.
    pub max_in_flight: usize,
}

/// One line naming the client that drove a run, for tables and chart subtitles.
pub fn client_summary(config: &RunConfig) -> String {
    match &config.native {
        Some(native) => format!(
            "native (Kafka protocol: one record per request, Produce v{} to {}, at most {} in \
             flight per producer)",
            native.produce_version, native.leader, native.max_in_flight
        ),
        None => config.client.clone(),
    }
}

/// The bench's CPU in the measured window per record of that window (acknowledged, or
/// consumed for `consume`), in microseconds.
pub fn bench_cpu_us_per_record(result: &RunResult) -> Option<f64> {
    let records =
        result.produce.as_ref().map(|p| p.acked).or(result.consume.as_ref().map(|c| c.consumed))?;
    // Results written before the bench measured its own window have 0 here.
    (records > 0 && result.cpu.bench_measured_seconds > 0.0)
        .then(|| result.cpu.bench_measured_seconds * 1e6 / records as f64)
}

#[derive(Serialize, Deserialize, Debug, Clone, Default)]
pub struct ProduceResult {
    /// Handed to the client over the whole run, warm-up included.
    pub sent_total: u64,
    /// Acknowledged by the broker over the whole run: what the topic holds afterwards.
    pub acked_total: u64,
    pub failed_total: u64,
    /// Measured window: records whose (intended) send time is in it.
    pub sent: u64,
    pub acked: u64,
    pub bytes: u64,
    pub records_per_sec: f64,
    pub mb_per_sec: f64,
    pub queue_full_waits: u64,
}

#[derive(Serialize, Deserialize, Debug, Clone, Default)]
pub struct ConsumeResult {
    pub consumed_total: u64,
    pub consumed: u64,
    pub bytes: u64,
    pub records_per_sec: f64,
    pub mb_per_sec: f64,
    /// End to end: records of other runs found in the topic (not measured).
    pub foreign_records: u64,
}

#[derive(Serialize, Deserialize, Debug, Clone, Default)]
pub struct OpenLoopResult {
    pub target_rate: f64,
    pub arrival: String,
    /// Records due in the measured window.
    pub scheduled: u64,
    pub sent: u64,
    /// Due in the window, never sent because the run ended first.
    pub missed: u64,
    pub achieved_rate: f64,
    /// Sent more than `late_threshold_ms` after their intended time.
    pub late: u64,
    pub late_threshold_ms: f64,
    /// Delay from intended to actual send time.
    pub send_lag: Option<LatencySummary>,
    /// False when the bench itself could not generate the intended rate: then the broker was
    /// not offered the load the run claims, whatever its latencies look like.
    pub kept_up: bool,
    pub verdict: String,
}

/// One latency series, in microseconds.
#[derive(Serialize, Deserialize, Debug, Clone, Default)]
pub struct LatencySummary {
    pub count: u64,
    pub min_us: u64,
    pub mean_us: f64,
    pub p50_us: u64,
    pub p90_us: u64,
    pub p99_us: u64,
    pub p99_9_us: u64,
    pub p99_99_us: u64,
    pub max_us: u64,
    /// Measured from each record's intended send time (open loop).
    pub corrected: bool,
    /// (percentile 0..100, latency us) points for plots.
    pub curve: Vec<[f64; 2]>,
}

/// Host steal during the measured window (see bench/src/steal.rs): on a virtual machine the
/// host stops a CPU now and then, and every thread on it stops too.
#[derive(Serialize, Deserialize, Debug, Clone, Default)]
pub struct HostSteal {
    /// Steal of all CPUs over the window, in ms (the kernel counts 10 ms ticks).
    pub stolen_ms: u64,
    /// Episodes (20 ms or more of steal on one CPU) that overlap the window or the drain
    /// after it (when its last records complete).
    pub episodes: usize,
    /// The longest of them, in ms.
    pub longest_ms: u64,
    /// Per series: the records whose intended send to completion spans an episode.
    pub touched: BTreeMap<String, u64>,
    /// Per series: the latencies of all other records. Shown beside `latency`, never
    /// instead of it: a user's machine may be stopped by its host too.
    pub steal_free: BTreeMap<String, LatencySummary>,
}

#[derive(Serialize, Deserialize, Debug, Clone, Default)]
pub struct CpuResult {
    /// CPU seconds (user + system) of the bench process over the whole run.
    pub bench_seconds: f64,
    /// CPU seconds of the bench process during the measured window: divided by the records of
    /// the window, what the bench spends per record. Absent from results written before it was
    /// added.
    #[serde(default)]
    pub bench_measured_seconds: f64,
    pub brokers: Vec<BrokerCpu>,
}

#[derive(Serialize, Deserialize, Debug, Clone, Default)]
pub struct BrokerCpu {
    pub pid: u32,
    /// User + system CPU seconds over the whole run (warm-up and drain included).
    pub run_seconds: f64,
    /// User + system CPU seconds during the measured window.
    pub measured_seconds: f64,
}

impl LatencySummary {
    pub fn from_histogram(histogram: &Histogram<u64>, corrected: bool) -> LatencySummary {
        if histogram.is_empty() {
            return LatencySummary { corrected, ..LatencySummary::default() };
        }
        let curve = histogram
            .iter_quantiles(QUANTILE_TICKS_PER_HALF)
            .map(|v| [percent(v.quantile_iterated_to()), v.value_iterated_to() as f64])
            .collect();
        LatencySummary {
            count: histogram.len(),
            min_us: histogram.min(),
            mean_us: histogram.mean(),
            p50_us: histogram.value_at_quantile(0.50),
            p90_us: histogram.value_at_quantile(0.90),
            p99_us: histogram.value_at_quantile(0.99),
            p99_9_us: histogram.value_at_quantile(0.999),
            p99_99_us: histogram.value_at_quantile(0.9999),
            max_us: histogram.max(),
            corrected,
            curve,
        }
    }

    /// (name, value) of the percentiles that tables show.
    pub fn percentiles(&self) -> [(&'static str, u64); 6] {
        [
            ("p50", self.p50_us),
            ("p90", self.p90_us),
            ("p99", self.p99_us),
            ("p99.9", self.p99_9_us),
            ("p99.99", self.p99_99_us),
            ("max", self.max_us),
        ]
    }
}

/// A quantile as a percentage, rounded to 1e-9 so that the JSON shows 30.0, not
/// 30.000000000000004.
fn percent(quantile: f64) -> f64 {
    const PERCENT_DIGITS_SCALE: f64 = 1e9;
    (quantile * 100.0 * PERCENT_DIGITS_SCALE).round() / PERCENT_DIGITS_SCALE
}

pub fn series_title(series: &str) -> &str {
    match series {
        "publish" => "publish",
        "publish_uncorrected" => "publish (uncorrected)",
        "end_to_end" => "end-to-end",
        "end_to_end_uncorrected" => "end-to-end (uncorrected)",
        other => other,
    }
}

pub fn mb_per_sec(bytes: u64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        bytes as f64 / BYTES_PER_MB / seconds
    } else {
        0.0
    }
}

pub fn per_sec(count: u64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        count as f64 / seconds
    } else {
        0.0
    }
}

/// Microseconds as milliseconds with microsecond resolution.
pub fn ms(us: u64) -> String {
    format!("{:.3}", us as f64 / 1_000.0)
}

/// The summary table printed at the end of a run.
pub fn summary_table(result: &RunResult) -> String {
    let mut out = String::new();
    let config = &result.config;
    let mode = match config.rate {
        Some(rate) => format!("open loop at {rate:.0} records/s ({})", config.arrival),
        None => "closed loop (as fast as possible)".to_string(),
    };
    let _ = writeln!(
        out,
        "\n{} | {} | {} | topic {} ({} partitions) | {}",
        result.label, result.workload, result.bootstrap, config.topic, config.partitions, mode
    );
    if result.produce.is_some() {
        let _ = writeln!(
            out,
            "records {} B ({} payload), keys {}, compression {}, acks {}, idempotence {}, \
             {} producer(s), {} consumer(s)",
            config.record_size,
            config.payload,
            config.keys,
            config.compression,
            config.acks,
            if config.idempotence { "on" } else { "off" },
            config.producers,
            config.consumers
        );
        let _ = writeln!(out, "producer client: {}", client_summary(config));
    } else {
        let from = config.from.as_deref().unwrap_or("earliest");
        let _ = writeln!(out, "{} consumer(s) reading from {from}", config.consumers);
    }
    let _ = writeln!(
        out,
        "measured {:.2} s after {:.2} s of warm-up{}\n",
        result.measured_seconds,
        config.warmup_seconds,
        if result.interrupted { " (interrupted)" } else { "" }
    );
    let _ =
        writeln!(out, "{:<26} {:>14} {:>10} {:>12}", "throughput", "records/s", "MB/s", "records");
    if let Some(produce) = &result.produce {
        let _ = writeln!(
            out,
            "{:<26} {:>14.1} {:>10.2} {:>12}",
            "produced (acknowledged)", produce.records_per_sec, produce.mb_per_sec, produce.acked
        );
    }
    if let Some(consume) = &result.consume {
        let _ = writeln!(
            out,
            "{:<26} {:>14.1} {:>10.2} {:>12}",
            "consumed", consume.records_per_sec, consume.mb_per_sec, consume.consumed
        );
    }
    if !result.latency.is_empty() {
        let _ = write!(out, "\n{:<26} {:>10}", "latency (ms)", "count");
        for name in ["p50", "p90", "p99", "p99.9", "p99.99", "max"] {
            let _ = write!(out, " {name:>9}");
        }
        let _ = writeln!(out);
        for series in SERIES_ORDER {
            let Some(summary) = result.latency.get(series) else {
                continue;
            };
            let _ = write!(out, "{:<26} {:>10}", series_title(series), summary.count);
            for (_, value) in summary.percentiles() {
                let _ = write!(out, " {:>9}", ms(value));
            }
            let _ = writeln!(out);
        }
        if let Some(host_steal) = result.host_steal.as_ref().filter(|h| h.episodes > 0) {
            for series in SERIES_ORDER {
                let Some(summary) = host_steal.steal_free.get(series) else {
                    continue;
                };
                let title = format!("{} steal-free", series_title(series));
                let _ = write!(out, "{title:<26} {:>10}", summary.count);
                for (_, value) in summary.percentiles() {
                    let _ = write!(out, " {:>9}", ms(value));
                }
                let _ = writeln!(out);
            }
        }
    }
    if let Some(host_steal) = &result.host_steal {
        let _ = writeln!(
            out,
            "\nhost steal: {} ms in the measured window, {} episode(s) of 20 ms or more on one \
             CPU (longest {} ms){}",
            host_steal.stolen_ms,
            host_steal.episodes,
            host_steal.longest_ms,
            if host_steal.episodes > 0 {
                "; the steal-free rows leave out the records an episode spanned"
            } else {
                ""
            }
        );
    }
    if let Some(open_loop) = &result.open_loop {
        let _ = writeln!(out, "\nopen loop: {}", open_loop.verdict);
    }
    if result.errors.is_empty() {
        let _ = writeln!(out, "errors: none");
    } else {
        let _ = writeln!(out, "errors:");
        for (kind, count) in &result.errors {
            let _ = writeln!(out, "  {count:>10}  {kind}");
        }
    }
    let cpu = &result.cpu;
    let _ = write!(
        out,
        "cpu: bench {:.2} s ({:.2} s measured",
        cpu.bench_seconds, cpu.bench_measured_seconds
    );
    if let Some(us) = bench_cpu_us_per_record(result) {
        let what = if result.produce.is_some() { "acknowledged" } else { "consumed" };
        let _ = write!(out, ", {us:.2} us per {what} record");
    }
    let _ = write!(out, ")");
    for broker in &cpu.brokers {
        let _ = write!(
            out,
            ", broker pid {} {:.2} s ({:.2} s measured)",
            broker.pid, broker.run_seconds, broker.measured_seconds
        );
    }
    let _ = writeln!(out);
    out
}

/// HdrHistogram's percentile distribution text (as `outputPercentileDistribution` prints it),
/// values in milliseconds.
pub fn hgrm(histogram: &Histogram<u64>) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:>12} {:>14} {:>10} {:>14}\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    let mut total = 0u64;
    for value in histogram.iter_quantiles(QUANTILE_TICKS_PER_HALF) {
        total += value.count_since_last_iteration();
        let quantile = value.quantile_iterated_to();
        let scaled = value.value_iterated_to() as f64 / HGRM_SCALE_US_PER_UNIT;
        if quantile < 1.0 {
            let _ = writeln!(
                out,
                "{scaled:>12.3} {quantile:>2.12} {total:>10} {:>14.2}",
                1.0 / (1.0 - quantile)
            );
        } else {
            let _ = writeln!(out, "{scaled:>12.3} {quantile:>2.12} {total:>10}");
        }
    }
    let scale = HGRM_SCALE_US_PER_UNIT;
    let mean = if histogram.is_empty() { 0.0 } else { histogram.mean() / scale };
    let stdev = if histogram.is_empty() { 0.0 } else { histogram.stdev() / scale };
    let max = histogram.max() as f64 / scale;
    let sub_buckets = (2 * 10u64.pow(u32::from(histogram.sigfig()))).next_power_of_two();
    let _ = writeln!(out, "#[Mean    = {mean:>12.3}, StdDeviation   = {stdev:>12.3}]");
    let _ = writeln!(out, "#[Max     = {max:>12.3}, Total count    = {:>12}]", histogram.len());
    let _ = writeln!(
        out,
        "#[Buckets = {:>12}, SubBuckets     = {sub_buckets:>12}]",
        histogram.buckets()
    );
    out
}

/// `run.hgrm` + `publish` -> `run.publish.hgrm`.
pub fn hgrm_path(base: &Path, series: &str) -> PathBuf {
    let stem = match base.extension().and_then(|e| e.to_str()) {
        Some("hgrm") => base.with_extension(""),
        _ => base.to_path_buf(),
    };
    let mut name = stem.into_os_string();
    name.push(format!(".{series}.hgrm"));
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::new_histogram;

    #[test]
    fn hgrm_has_header_rows_and_footer() {
        let mut histogram = new_histogram();
        for us in 1..=10_000u64 {
            histogram.saturating_record(us);
        }
        let text = hgrm(&histogram);
        let rows: Vec<&str> = text
            .lines()
            .skip(2)
            .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
            .collect();
        assert!(rows.len() > 20);
        let last: Vec<&str> = rows[rows.len() - 1].split_whitespace().collect();
        assert_eq!(last.len(), 3, "the 100th percentile row has no 1/(1-p) column");
        assert_eq!(last[2], "10000");
        assert!(text.contains("Total count    =        10000]"));
        assert!(text.contains("SubBuckets     =         2048]"));
    }

    #[test]
    fn hgrm_paths_name_the_series() {
        assert_eq!(
            hgrm_path(Path::new("out/run.hgrm"), "publish"),
            Path::new("out/run.publish.hgrm")
        );
        assert_eq!(hgrm_path(Path::new("run"), "end_to_end"), Path::new("run.end_to_end.hgrm"));
    }

    #[test]
    fn the_summary_names_the_client_and_the_cpu_per_record() {
        let mut result = RunResult {
            workload: "produce".to_string(),
            produce: Some(ProduceResult { acked: 4_000, ..ProduceResult::default() }),
            ..RunResult::default()
        };
        result.config.client = "librdkafka".to_string();
        result.cpu.bench_measured_seconds = 0.1;
        let text = summary_table(&result);
        assert!(text.contains("producer client: librdkafka\n"), "{text}");
        assert!(text.contains("25.00 us per acknowledged record"), "{text}");
        result.config.client = "native".to_string();
        result.config.native = Some(NativeClientConfig {
            produce_version: 9,
            leader: "h:1 (node 1)".to_string(),
            max_in_flight: 256,
        });
        let text = summary_table(&result);
        assert!(text.contains("producer client: native (Kafka protocol"), "{text}");
        assert!(text.contains("Produce v9 to h:1 (node 1), at most 256 in flight"), "{text}");
        // Results written before the field existed were librdkafka's.
        let old: RunConfig = serde_json::from_str(
            &serde_json::to_string(&RunConfig::default())
                .expect("encodes")
                .replace("\"client\":\"\",", "")
                .replace("\"native\":null,", ""),
        )
        .expect("decodes");
        assert_eq!((old.client.as_str(), old.native.is_none()), ("librdkafka", true));
    }

    #[test]
    fn summary_of_known_values() {
        let mut histogram = new_histogram();
        for us in 1..=1_000u64 {
            histogram.saturating_record(us);
        }
        let summary = LatencySummary::from_histogram(&histogram, true);
        assert_eq!(summary.count, 1_000);
        assert_eq!(summary.p50_us, 500);
        assert_eq!(summary.p99_us, 990);
        assert_eq!(summary.max_us, 1_000);
        assert!(summary.curve.len() > 10);
        let last = summary.curve[summary.curve.len() - 1];
        assert_eq!(last, [100.0, 1_000.0]);
    }
}
