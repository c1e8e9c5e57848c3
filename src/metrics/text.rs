//! The merge of every shard's report and its Prometheus text exposition (format 0.0.4: a
//! `# HELP` and a `# TYPE` line per family, then its samples; histograms as cumulative
//! `_bucket{le=..}` lines, `_sum` and `_count`).
//!
//! Written here rather than with the `prometheus-client` crate: that crate's metrics are
//! registered once and shared (`Arc`s of atomics that every core would write), which is
//! the shared state this design keeps off the request path; its custom collectors would
//! still need every partition's series turned into its types on the scraping core. The
//! format is small, and `tests/clients/test_metrics.py` parses this output with
//! Prometheus's own Python parser.
//!
//! Cost: one pass over the reports per family; the per-partition families dominate (eight
//! lines per partition, about 70 bytes each).

use std::collections::{BTreeMap, HashMap};
use std::fmt::{Display, Write};

use kafka_protocol::messages::ApiKey;
use kafka_protocol::ResponseError;

use crate::constants::API_LATENCY_BUCKETS_US;
use crate::metrics::{HistogramReport, PartitionReport, ShardReport};

/// Prometheus metric types used here.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// A text exposition being written.
#[derive(Default)]
pub struct Exposition {
    out: String,
}

impl Exposition {
    pub fn with_capacity(bytes: usize) -> Exposition {
        Exposition { out: String::with_capacity(bytes) }
    }

    pub fn finish(self) -> String {
        self.out
    }

    /// Starts a family: every sample of `name` must follow before the next family.
    pub fn family(&mut self, name: &str, kind: Kind, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {}", escape_help(help));
        let _ = writeln!(self.out, "# TYPE {name} {}", kind.name());
    }

    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl Display) {
        self.out.push_str(name);
        self.labels(labels, None);
        let _ = writeln!(self.out, " {value}");
    }

    /// A histogram's samples (latencies in microseconds, exposed in seconds).
    pub fn histogram(&mut self, name: &str, labels: &[(&str, &str)], h: &HistogramReport) {
        let mut cumulative = 0;
        for (i, count) in h.buckets.iter().enumerate() {
            cumulative += count;
            let le = match API_LATENCY_BUCKETS_US.get(i) {
                Some(&bound_us) => seconds(bound_us),
                None => "+Inf".to_string(),
            };
            let _ = write!(self.out, "{name}_bucket");
            self.labels(labels, Some(&le));
            let _ = writeln!(self.out, " {cumulative}");
        }
        let _ = write!(self.out, "{name}_sum");
        self.labels(labels, None);
        let _ = writeln!(self.out, " {}", seconds(h.sum_us));
        let _ = write!(self.out, "{name}_count");
        self.labels(labels, None);
        let _ = writeln!(self.out, " {cumulative}");
    }

    fn labels(&mut self, labels: &[(&str, &str)], le: Option<&str>) {
        if labels.is_empty() && le.is_none() {
            return;
        }
        self.out.push('{');
        let le = le.map(|le| ("le", le));
        for (i, (key, value)) in labels.iter().copied().chain(le).enumerate() {
            if i > 0 {
                self.out.push(',');
            }
            self.out.push_str(key);
            self.out.push_str("=\"");
            escape_label_into(&mut self.out, value);
            self.out.push('"');
        }
        self.out.push('}');
    }
}

fn seconds(us: u64) -> String {
    format!("{}", us as f64 / 1e6)
}

/// Label values escape `\`, `"` and newlines.
fn escape_label_into(out: &mut String, value: &str) {
    if !value.contains(['\\', '"', '\n']) {
        out.push_str(value);
        return;
    }
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// HELP text escapes `\` and newlines.
fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

/// Kafka's name of an API key ("Produce"), or its number.
pub fn api_name(api_key: i16) -> String {
    match ApiKey::try_from(api_key) {
        Ok(key) => format!("{key:?}"),
        Err(_) => api_key.to_string(),
    }
}

/// Kafka's name of an error code (`UNKNOWN_TOPIC_OR_PARTITION`), or its number.
pub fn error_name(code: i16) -> String {
    match ResponseError::try_from_code(code) {
        Some(error) => upper_snake(&format!("{error:?}")),
        None if code == -1 => "UNKNOWN_SERVER_ERROR".to_string(),
        None => code.to_string(),
    }
}

fn upper_snake(camel: &str) -> String {
    let mut out = String::with_capacity(camel.len() + 8);
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

/// Merges every shard's report into the text of one scrape. `listeners` names the
/// listeners in `config.listeners` order.
pub fn render(reports: &[ShardReport], listeners: &[&str]) -> String {
    let partitions: usize = reports.iter().map(|r| r.partitions.len()).sum();
    let mut out = Exposition::with_capacity(4096 + partitions * 8 * 80);
    render_shards(&mut out, reports);
    render_requests(&mut out, reports);
    render_listeners(&mut out, reports, listeners);
    render_partitions(&mut out, reports);
    render_groups(&mut out, reports);
    out.finish()
}

fn render_shards(out: &mut Exposition, reports: &[ShardReport]) {
    type Field = fn(&ShardReport) -> String;
    let families: [(&str, Kind, &str, Field); 9] = [
        (
            "spate_shard_busy_seconds_total",
            Kind::Counter,
            "Time the shard's executor spent running tasks (rate() is its busy fraction).",
            |r| seconds(r.executor.busy_ns / 1000),
        ),
        (
            "spate_shard_tasks_executed_total",
            Kind::Counter,
            "Tasks the shard's executor ran.",
            |r| r.executor.tasks_executed.to_string(),
        ),
        (
            "spate_shard_scheduler_runs_total",
            Kind::Counter,
            "Times the shard's executor picked a task queue to run.",
            |r| r.executor.scheduler_runs.to_string(),
        ),
        (
            "spate_shard_requests_in_flight",
            Kind::Gauge,
            "Requests admitted on the shard's connections and not answered yet.",
            |r| r.executor.requests_in_flight.to_string(),
        ),
        ("spate_shard_partitions", Kind::Gauge, "Partitions whose log the shard owns.", |r| {
            r.partitions.len().to_string()
        }),
        (
            "spate_shard_batch_cache_bytes",
            Kind::Gauge,
            "Bytes held by the shard's batch cache of recent batches.",
            |r| r.cache.bytes.to_string(),
        ),
        (
            "spate_shard_batch_cache_bytes_max",
            Kind::Gauge,
            "The shard's batch cache budget (--batch-cache-bytes).",
            |r| r.cache.bytes_max.to_string(),
        ),
        (
            "spate_shard_batch_cache_hit_ratio",
            Kind::Gauge,
            "Share of log reads served from the batch cache since start (NaN before any).",
            |r| match r.cache.hits + r.cache.misses {
                0 => "NaN".to_string(),
                reads => format!("{}", r.cache.hits as f64 / reads as f64),
            },
        ),
        ("spate_shard_groups", Kind::Gauge, "Consumer groups the shard coordinates.", |r| {
            r.groups.len().to_string()
        }),
    ];
    for (name, kind, help, field) in families {
        out.family(name, kind, help);
        for r in reports {
            out.sample(name, &[("shard", &r.shard.to_string())], field(r));
        }
    }
    type Pair = fn(&ShardReport) -> (u64, u64);
    let pairs: [(&str, &str, &str, [&str; 2], Pair); 4] = [
        (
            "spate_shard_batch_cache_reads_total",
            "Log reads by whether the batch cache held their offset.",
            "result",
            ["hit", "miss"],
            |r| (r.cache.hits, r.cache.misses),
        ),
        (
            "spate_shard_fetch_bytes_total",
            "Bytes read from the shard's logs for fetches, by where they came from.",
            "source",
            ["cache", "file"],
            |r| r.fetch_bytes,
        ),
        (
            "spate_shard_io_uring_operations_total",
            "File reads and writes the shard submitted to its io_uring rings.",
            "op",
            ["read", "write"],
            |r| (r.executor.file_reads, r.executor.file_writes),
        ),
        (
            "spate_shard_io_uring_bytes_total",
            "Bytes of the file reads and writes the shard submitted to its io_uring rings.",
            "op",
            ["read", "write"],
            |r| (r.executor.file_read_bytes, r.executor.file_write_bytes),
        ),
    ];
    for (name, help, label, values, pair) in pairs {
        out.family(name, Kind::Counter, help);
        for r in reports {
            let shard = r.shard.to_string();
            let (first, second) = pair(r);
            out.sample(name, &[("shard", &shard), (label, values[0])], first);
            out.sample(name, &[("shard", &shard), (label, values[1])], second);
        }
    }
}

fn render_requests(out: &mut Exposition, reports: &[ShardReport]) {
    let mut apis: BTreeMap<i16, (u64, HistogramReport)> = BTreeMap::new();
    let mut errors: BTreeMap<(i16, i16), u64> = BTreeMap::new();
    for r in reports {
        for api in &r.requests.apis {
            let entry = apis.entry(api.api_key).or_default();
            entry.0 += api.requests;
            entry.1.merge(&api.latency);
        }
        for &(api, code, count) in &r.requests.errors {
            *errors.entry((api, code)).or_insert(0) += count;
        }
    }
    let name = "spate_api_requests_total";
    out.family(name, Kind::Counter, "Requests answered, by API.");
    for (key, (requests, _)) in &apis {
        out.sample(name, &[("api", &api_name(*key))], requests);
    }
    let name = "spate_api_errors_total";
    let help = "Error codes in responses, by API and code (each partition, group or request \
                that carried one).";
    out.family(name, Kind::Counter, help);
    for ((key, code), count) in &errors {
        let labels = [("api", &*api_name(*key)), ("error", &*error_name(*code))];
        out.sample(name, &labels, count);
    }
    let name = "spate_api_request_latency_seconds";
    let help = "Time from a request's last byte received to its answer written, by API.";
    out.family(name, Kind::Histogram, help);
    for (key, (_, latency)) in &apis {
        out.histogram(name, &[("api", &api_name(*key))], latency);
    }
}

fn render_listeners(out: &mut Exposition, reports: &[ShardReport], listeners: &[&str]) {
    let mut accepted = vec![0u64; listeners.len()];
    let mut refused = vec![0u64; listeners.len()];
    let mut open = vec![0u64; listeners.len()];
    let mut failures: BTreeMap<(usize, &str), u64> = BTreeMap::new();
    for r in reports {
        for (i, l) in r.requests.listeners.iter().enumerate().take(listeners.len()) {
            accepted[i] += l.accepted;
            refused[i] += l.refused;
            open[i] += l.open;
            for &(mechanism, count) in &l.authentication_failures {
                *failures.entry((i, mechanism)).or_insert(0) += count;
            }
        }
    }
    let name = "spate_connections";
    out.family(name, Kind::Gauge, "Open client connections, by listener.");
    for (i, listener) in listeners.iter().enumerate() {
        out.sample(name, &[("listener", listener)], open[i]);
    }
    let name = "spate_connections_accepted_total";
    out.family(name, Kind::Counter, "Client connections accepted, by listener.");
    for (i, listener) in listeners.iter().enumerate() {
        out.sample(name, &[("listener", listener)], accepted[i]);
    }
    let name = "spate_connections_refused_total";
    let help = "Connections closed as accepted: over their address's --max-connections-per-ip.";
    out.family(name, Kind::Counter, help);
    for (i, listener) in listeners.iter().enumerate() {
        out.sample(name, &[("listener", listener)], refused[i]);
    }
    let name = "spate_authentication_failures_total";
    let help = "Failed authentications (SASL logins, TLS handshakes), by listener and mechanism.";
    out.family(name, Kind::Counter, help);
    for ((i, mechanism), count) in failures {
        out.sample(name, &[("listener", listeners[i]), ("mechanism", mechanism)], count);
    }
}

fn render_partitions(out: &mut Exposition, reports: &[ShardReport]) {
    type Field = fn(&PartitionReport) -> u64;
    let families: [(&str, Kind, &str, Field); 12] = [
        ("spate_partition_log_end_offset", Kind::Gauge, "The next offset the log assigns.", |p| {
            p.log_end_offset as u64
        }),
        (
            "spate_partition_high_watermark",
            Kind::Gauge,
            "Consumers read below it (every in-sync replica has the records before it).",
            |p| p.high_watermark as u64,
        ),
        (
            "spate_partition_log_start_offset",
            Kind::Gauge,
            "The first offset still in the log.",
            |p| p.log_start_offset as u64,
        ),
        ("spate_partition_size_bytes", Kind::Gauge, "Bytes of the log's segments.", |p| {
            p.size_bytes
        }),
        (
            "spate_partition_records_in_total",
            Kind::Counter,
            "Records appended to the log since it was opened.",
            |p| p.traffic.records_in,
        ),
        (
            "spate_partition_bytes_in_total",
            Kind::Counter,
            "Bytes of record batches appended to the log since it was opened.",
            |p| p.traffic.bytes_in,
        ),
        (
            "spate_partition_records_out_total",
            Kind::Counter,
            "Records of the batches read from the batch cache since the log was opened \
             (reads from segment files count in bytes only).",
            |p| p.traffic.records_out,
        ),
        (
            "spate_partition_bytes_out_total",
            Kind::Counter,
            "Bytes read from the log for fetches (consumers and followers) since it was opened.",
            |p| p.traffic.bytes_out,
        ),
        (
            "spate_partition_cleaner_dirty_bytes",
            Kind::Gauge,
            "A compacted log's cleanable bytes not cleaned yet (0 for other logs).",
            |p| p.dirty_bytes,
        ),
        (
            "spate_partition_cleaner_cleanable_bytes",
            Kind::Gauge,
            "A compacted log's cleanable bytes (sealed, below the last stable offset); the \
             dirty ratio is dirty / cleanable.",
            |p| p.cleanable_bytes,
        ),
        (
            "spate_partition_delayed_batches",
            Kind::Gauge,
            "Delayed delivery: produced batches waiting in the partition's delay log.",
            |p| p.delayed_batches,
        ),
        (
            "spate_partition_delayed_next_due_ms",
            Kind::Gauge,
            "Delayed delivery: when the partition's schedule next wakes (epoch ms, at or \
             before its earliest due batch); 0 when nothing waits.",
            |p| p.delayed_next_due_ms,
        ),
    ];
    for (name, kind, help, field) in families {
        out.family(name, kind, help);
        let mut number = String::new();
        for p in reports.iter().flat_map(|r| &r.partitions) {
            number.clear();
            let _ = write!(number, "{}", p.partition);
            out.sample(name, &[("topic", &p.topic), ("partition", &number)], field(p));
        }
    }
}

fn render_groups(out: &mut Exposition, reports: &[ShardReport]) {
    let groups: Vec<_> = reports.iter().flat_map(|r| &r.groups).collect();
    let name = "spate_group_members";
    out.family(name, Kind::Gauge, "Members of a consumer group (classic or KIP-848).");
    for g in &groups {
        out.sample(name, &[("group", &g.group)], g.members);
    }
    // High watermarks of the partitions some group committed to, looked up once each.
    let mut high_watermarks: HashMap<(&str, i32), i64> = HashMap::new();
    if groups.iter().any(|g| !g.offsets.is_empty()) {
        for p in reports.iter().flat_map(|r| &r.partitions) {
            high_watermarks.insert((&*p.topic, p.partition), p.high_watermark);
        }
    }
    let mut lags: Vec<(&str, BTreeMap<&str, i64>)> = Vec::with_capacity(groups.len());
    for g in &groups {
        let mut by_topic: BTreeMap<&str, i64> = BTreeMap::new();
        for (topic, partition, offset) in &g.offsets {
            let Some(hw) = high_watermarks.get(&(topic.as_str(), *partition)) else { continue };
            *by_topic.entry(topic).or_insert(0) += (hw - offset).max(0);
        }
        lags.push((&g.group, by_topic));
    }
    let name = "spate_group_lag";
    let help = "Records between a group's committed offsets and the high watermarks, summed \
                over the partitions it committed to.";
    out.family(name, Kind::Gauge, help);
    for (group, by_topic) in &lags {
        out.sample(name, &[("group", group)], by_topic.values().sum::<i64>());
    }
    let name = "spate_group_topic_lag";
    out.family(name, Kind::Gauge, "A group's lag on one topic (see spate_group_lag).");
    for (group, by_topic) in &lags {
        for (topic, lag) in by_topic {
            out.sample(name, &[("group", group), ("topic", topic)], lag);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{
        ApiReport, GroupReport, Histogram, ListenerReport, RequestReport, Traffic,
    };

    fn shard(id: u16, partitions: Vec<PartitionReport>, groups: Vec<GroupReport>) -> ShardReport {
        let latency = Histogram::default();
        latency.record(150);
        ShardReport {
            shard: id,
            requests: RequestReport {
                apis: vec![ApiReport { api_key: 0, requests: 1, latency: latency.snapshot() }],
                errors: vec![(0, 3, 1)],
                listeners: vec![ListenerReport {
                    accepted: 2,
                    refused: 3,
                    open: 1,
                    authentication_failures: vec![("PLAIN", 1)],
                }],
            },
            partitions,
            groups,
            ..ShardReport::default()
        }
    }

    fn partition(topic: &str, partition: i32, high_watermark: i64) -> PartitionReport {
        PartitionReport {
            topic: topic.into(),
            partition,
            log_end_offset: high_watermark,
            high_watermark,
            traffic: Traffic { records_in: 7, ..Traffic::default() },
            ..PartitionReport::default()
        }
    }

    #[test]
    fn merges_counters_and_histograms_over_shards() {
        let reports = [shard(0, vec![], vec![]), shard(1, vec![], vec![])];
        let text = render(&reports, &["PLAINTEXT"]);
        assert!(text.contains("spate_api_requests_total{api=\"Produce\"} 2\n"), "{text}");
        assert!(text.contains(
            "spate_api_errors_total{api=\"Produce\",error=\"UNKNOWN_TOPIC_OR_PARTITION\"} 2\n"
        ));
        assert!(text.contains(
            "spate_api_request_latency_seconds_bucket{api=\"Produce\",le=\"0.0001\"} 0\n"
        ));
        assert!(text.contains(
            "spate_api_request_latency_seconds_bucket{api=\"Produce\",le=\"0.00025\"} 2\n"
        ));
        assert!(text
            .contains("spate_api_request_latency_seconds_bucket{api=\"Produce\",le=\"+Inf\"} 2\n"));
        assert!(text.contains("spate_api_request_latency_seconds_count{api=\"Produce\"} 2\n"));
        assert!(text.contains("spate_api_request_latency_seconds_sum{api=\"Produce\"} 0.0003\n"));
        assert!(text.contains("spate_connections{listener=\"PLAINTEXT\"} 2\n"));
        assert!(text.contains("spate_connections_accepted_total{listener=\"PLAINTEXT\"} 4\n"));
        assert!(text.contains("spate_connections_refused_total{listener=\"PLAINTEXT\"} 6\n"));
        assert!(text.contains(
            "spate_authentication_failures_total{listener=\"PLAINTEXT\",mechanism=\"PLAIN\"} 2\n"
        ));
        assert!(text.contains("spate_shard_busy_seconds_total{shard=\"1\"} 0\n"));
    }

    #[test]
    fn group_lag_reads_high_watermarks_of_every_shard() {
        let group = GroupReport {
            group: "g\"1".into(),
            members: 2,
            offsets: vec![("a".into(), 0, 4), ("b".into(), 0, 10), ("gone".into(), 0, 1)],
        };
        let reports = [
            shard(0, vec![partition("a", 0, 10)], vec![group]),
            shard(1, vec![partition("b", 0, 8)], vec![]),
        ];
        let text = render(&reports, &["PLAINTEXT"]);
        assert!(text.contains("spate_group_members{group=\"g\\\"1\"} 2\n"), "{text}");
        assert!(text.contains("spate_group_lag{group=\"g\\\"1\"} 6\n"));
        assert!(text.contains("spate_group_topic_lag{group=\"g\\\"1\",topic=\"a\"} 6\n"));
        assert!(text.contains("spate_group_topic_lag{group=\"g\\\"1\",topic=\"b\"} 0\n"));
        assert!(text.contains("spate_partition_records_in_total{topic=\"b\",partition=\"0\"} 7\n"));
    }

    #[test]
    fn every_family_is_declared_once_before_its_samples() {
        let reports = [shard(0, vec![partition("a", 0, 1), partition("a", 1, 1)], vec![])];
        let text = render(&reports, &["PLAINTEXT", "SASL_PLAINTEXT"]);
        let mut declared = std::collections::HashSet::new();
        let mut current = String::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let name = rest.split(' ').next().unwrap_or_default().to_string();
                assert!(declared.insert(name.clone()), "{name} declared twice");
                current = name;
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap_or_default();
                assert!(name.starts_with(&current), "{name} outside its family {current}");
            }
        }
    }

    #[test]
    fn error_and_api_names() {
        assert_eq!(error_name(3), "UNKNOWN_TOPIC_OR_PARTITION");
        assert_eq!(error_name(58), "SASL_AUTHENTICATION_FAILED");
        assert_eq!(error_name(-1), "UNKNOWN_SERVER_ERROR");
        assert_eq!(api_name(1), "Fetch");
        assert_eq!(api_name(-5), "-5");
    }
}
