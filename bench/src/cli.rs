//! Command line: one subcommand per workload, plus `compare`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::payload::PayloadKind;
use crate::spec::{
    parse_bytes, parse_duration, parse_key_value, parse_rate, Acks, Arrival, Client, Compression,
    KeySpec, RateLadder, RecordSize, StartFrom,
};

#[derive(Parser, Debug)]
#[command(
    name = "spate-bench",
    version,
    about = "Load generator for any Kafka-compatible broker: open- or closed-loop, latency in \
             microseconds corrected for coordinated omission",
    after_help = "Examples:\n  \
        spate-bench produce -b 127.0.0.1:9092 --rate 10000 --duration 30s --json run.json\n  \
        spate-bench e2e --compression lz4 --acks all --rate 5k --plot run.svg\n  \
        spate-bench consume --from earliest --records 1000000\n  \
        spate-bench compare spate.json kafka.json --plot both.svg"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Producers only: throughput and publish latency (send to acknowledgement).
    Produce(RunArgs),
    /// Consumers only, from the earliest offset or from the tail: consume throughput.
    Consume(RunArgs),
    /// Producers and consumers together: publish latency and end-to-end latency (consume time
    /// minus the send time carried in each record).
    #[command(name = "e2e", visible_alias = "end-to-end")]
    EndToEnd(RunArgs),
    /// Print saved runs (--json files) side by side with ratios to the first, and plot them
    /// on one chart.
    Compare(CompareArgs),
    /// Open loop at a ladder of rates against one or more brokers, alternating between them at
    /// each rate: latency against offered load, until a broker no longer keeps up.
    Sweep(SweepArgs),
}

/// One run: one broker, at most one open-loop rate, and its outputs; the workload itself is
/// `WorkloadArgs`, which `sweep` shares.
#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Bootstrap address of the broker (any Kafka-compatible broker).
    #[arg(short, long, default_value = "127.0.0.1:9092")]
    pub bootstrap: String,

    /// Open loop: total records per second over all producers (e.g. 5000, 20k, 1.5m).
    /// Without it the producers send as fast as they can (closed loop).
    #[arg(short, long, value_parser = parse_rate)]
    pub rate: Option<f64>,

    /// Stop after this many measured records (produced, or consumed for `consume`) instead of
    /// after --duration.
    #[arg(short = 'n', long)]
    pub records: Option<u64>,

    /// `consume`: start at the earliest offset or at the current end of each partition.
    #[arg(long, value_enum, default_value_t = StartFrom::Earliest)]
    pub from: StartFrom,

    #[command(flatten)]
    pub workload: WorkloadArgs,

    /// Write the results as JSON (the input of `compare`).
    #[arg(long)]
    pub json: Option<PathBuf>,

    /// Write each latency series in HdrHistogram's percentile distribution format, to
    /// FILE-stem.<series>.hgrm (values in milliseconds).
    #[arg(long)]
    pub hgrm: Option<PathBuf>,

    /// Write an SVG latency-by-percentile plot.
    #[arg(long)]
    pub plot: Option<PathBuf>,

    /// Name of this run in tables and plots (default: broker address).
    #[arg(short, long)]
    pub label: Option<String>,

    /// Also report the CPU seconds that this process (the broker) used during the run.
    #[arg(long)]
    pub broker_pid: Vec<u32>,

    /// Delete the topic when the run is over (a closed-loop run can write gigabytes).
    #[arg(long)]
    pub delete_topic: bool,
}

/// What every producer and consumer of a run does, whichever broker and rate it runs against.
#[derive(Args, Debug, Clone)]
pub struct WorkloadArgs {
    /// Topic to use; created through the Admin API if it does not exist.
    #[arg(short, long, default_value = "spate-bench")]
    pub topic: String,

    /// Partitions of the topic when the bench creates it.
    #[arg(long, default_value_t = 4)]
    pub partitions: i32,

    /// Replication factor of the topic when the bench creates it.
    #[arg(long, default_value_t = 1)]
    pub replication_factor: i32,

    /// Producer threads, each with its own client; an open-loop rate is split evenly.
    #[arg(short = 'P', long, default_value_t = 1)]
    pub producers: usize,

    /// Consumer threads, each with its own client; partitions are split among them.
    #[arg(short = 'C', long, default_value_t = 1)]
    pub consumers: usize,

    /// Record value size in bytes: N, uniform:MIN:MAX or normal:MEAN:STDDEV (at least 24).
    #[arg(short = 's', long, default_value = "1024")]
    pub record_size: RecordSize,

    /// What fills record values: random (incompressible) or text (compresses like logs).
    #[arg(long, value_enum, default_value_t = PayloadKind::Text)]
    pub payload: PayloadKind,

    /// Keys: none, round-robin (no key, partitions in turn), uniform:N, zipf:N[:EXPONENT].
    #[arg(short, long, default_value = "none")]
    pub keys: KeySpec,

    /// Producer client: librdkafka, or native (the bench's own Kafka protocol client: every
    /// record in its own Produce request, pipelined on one connection per producer, much
    /// cheaper per request; no idempotence, transactions or -X). Consumers use librdkafka.
    #[arg(long, value_enum, default_value_t = Client::Librdkafka)]
    pub client: Client,

    /// --client native: Produce requests a producer may have unanswered before it waits for an
    /// answer (the wait counts in open-loop latency) [default: 256].
    #[arg(long)]
    pub max_in_flight: Option<usize>,

    /// Compression codec of the producers.
    #[arg(short = 'z', long, value_enum, default_value_t = Compression::None)]
    pub compression: Compression,

    /// Acknowledgements the producers ask for: 0, 1 or all.
    #[arg(short, long, default_value = "all")]
    pub acks: Acks,

    /// Producer linger.ms (librdkafka's default when not given: 5).
    #[arg(long)]
    pub linger_ms: Option<u32>,

    /// Producer batch.size in bytes, e.g. 16k or 1MiB (librdkafka's default: 1000000).
    #[arg(long, value_parser = parse_bytes)]
    pub batch_size: Option<usize>,

    /// Idempotent producers (needs --acks all).
    #[arg(long)]
    pub idempotence: bool,

    /// Transactional producers: producer i uses the transactional.id `<ID>-<i>` and commits a
    /// transaction every --txn-interval-ms (implies idempotence and --acks all).
    #[arg(long)]
    pub transactional_id: Option<String>,

    /// With --transactional-id: how often each producer commits its transaction.
    #[arg(long, default_value_t = 100)]
    pub txn_interval_ms: u64,

    /// Measured time after the warm-up, e.g. 30, 30s, 500ms, 2m. Ignored with --records.
    #[arg(short, long, value_parser = parse_duration, default_value = "10s")]
    pub duration: Duration,

    /// Time at the start whose records are sent but left out of every result.
    #[arg(short, long, value_parser = parse_duration, default_value = "2s")]
    pub warmup: Duration,

    /// Open loop: how arrivals are spaced.
    #[arg(long, value_enum, default_value_t = Arrival::Constant)]
    pub arrival: Arrival,

    /// Extra librdkafka producer property, KEY=VALUE (repeatable); applied last.
    #[arg(short = 'X', long = "producer-config", value_parser = parse_key_value)]
    pub producer_config: Vec<(String, String)>,

    /// Extra librdkafka consumer property, KEY=VALUE (repeatable); applied last.
    #[arg(long = "consumer-config", value_parser = parse_key_value)]
    pub consumer_config: Vec<(String, String)>,

    /// Seed for sizes, keys and arrivals (default: random, printed in the results).
    #[arg(long)]
    pub seed: Option<u64>,

    /// After sending stops, how long to wait for outstanding acknowledgements and for
    /// consumers to catch up.
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    pub drain_timeout: Duration,

    /// No progress line.
    #[arg(short, long)]
    pub quiet: bool,
}

/// `sweep`: the ladder, the brokers, and the outputs; each step is one `produce` (or `e2e`) run.
#[derive(Args, Debug)]
#[command(after_help = "Each --label and --broker-pid belongs to the -b before it:\n  \
    spate-bench sweep -b 127.0.0.1:9092 --label spate --broker-pid 123 \\\n    \
    -b 127.0.0.1:19092 --label kafka --rates 1k..50k --plot sweep.svg")]
pub struct SweepArgs {
    /// Bootstrap address of a broker to sweep (repeatable, one ladder per broker).
    #[arg(short, long = "bootstrap", required = true)]
    pub bootstrap: Vec<String>,

    /// Name of the broker given by the -b before it (default: its address).
    #[arg(short, long)]
    pub label: Vec<String>,

    /// Pid of the broker given by the -b before it, to report the CPU it used.
    #[arg(long)]
    pub broker_pid: Vec<u32>,

    /// Offered rates in records/s: a list (1k,2k,5k) or a range MIN..MAX, which steps 1-2-5
    /// per decade (1k..100k: 1k,2k,5k,10k,...,100k) or geometrically with --steps.
    #[arg(long, default_value = "1k..100k")]
    pub rates: RateLadder,

    /// With a range in --rates: this many rates, evenly spaced on a log scale.
    #[arg(long)]
    pub steps: Option<usize>,

    /// Producers and consumers (e2e) instead of producers only; the chart then shows
    /// end-to-end latency, the table both.
    #[arg(long)]
    pub e2e: bool,

    /// Keep climbing after a broker could not keep up (by default its ladder stops there).
    #[arg(long)]
    pub keep_going: bool,

    /// Idle time between two steps, so that one step's leftover work (flushes, deletes, garbage
    /// collection) does not land in the next.
    #[arg(long, value_parser = parse_duration, default_value = "1s")]
    pub settle: Duration,

    /// Keep each step's topic (by default it is deleted after the step).
    #[arg(long)]
    pub keep_topics: bool,

    /// Stop the other brokers (SIGSTOP) while one is loaded, warm-up included, and continue
    /// them (SIGCONT) after: brokers pinned to the same CPU then do not run their background
    /// work (a JVM's compiler and collector, timers) inside each other's measurements. Needs
    /// every broker's --broker-pid. A bench killed in a step leaves the others stopped
    /// (`kill -CONT <pid>`).
    #[arg(long)]
    pub pause_idle_brokers: bool,

    /// Before the ladder, load each broker this long at the first rate, unmeasured: a JVM
    /// broker compiles its hot paths in its first tens of seconds under load, and its first
    /// step would otherwise measure the compiler (Kafka 4.3: p99 150 ms at 1,000/s cold).
    #[arg(long, value_parser = parse_duration, default_value = "0s")]
    pub warm_up_brokers: Duration,

    #[command(flatten)]
    pub workload: WorkloadArgs,

    /// Write every step's results as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,

    /// Write the table as Markdown.
    #[arg(long)]
    pub table: Option<PathBuf>,

    /// Write an SVG chart: latency percentiles against offered rate, one colour per broker.
    #[arg(long)]
    pub plot: Option<PathBuf>,

    /// Title of the chart.
    #[arg(long)]
    pub title: Option<String>,
}

#[derive(Args, Debug)]
pub struct CompareArgs {
    /// Result files written by --json; the first is the baseline of the ratios.
    #[arg(required = true, num_args = 1..)]
    pub results: Vec<PathBuf>,

    /// Write one SVG plot with every run.
    #[arg(long)]
    pub plot: Option<PathBuf>,

    /// Title of the plot.
    #[arg(long)]
    pub title: Option<String>,

    /// Print the table as Markdown.
    #[arg(long)]
    pub markdown: bool,

    /// Also show the uncorrected latencies of open-loop runs (measured from the actual send
    /// time rather than the intended one).
    #[arg(long)]
    pub uncorrected: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }
}
