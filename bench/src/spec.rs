//! Workload knobs that take a small language on the command line (sizes, key distributions,
//! durations), parsed once into plain values that the hot loops sample from.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use rand::Rng;
use rand_distr::{Distribution, Normal, Zipf};
use serde::{Deserialize, Serialize};

use crate::payload::HEADER_BYTES;

/// The largest record the bench generates. librdkafka's own default limit (message.max.bytes)
/// is 1 MB; anything larger than this is a typo rather than a workload.
pub const RECORD_BYTES_MAX: usize = 16 * 1024 * 1024;

/// Record value size: `1024`, `uniform:MIN:MAX` or `normal:MEAN:STDDEV`, in bytes.
///
/// Every record starts with the bench header (`HEADER_BYTES`), so no size may be smaller.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RecordSize {
    Fixed(usize),
    Uniform { min: usize, max: usize },
    Normal { mean: f64, stddev: f64 },
}

impl RecordSize {
    pub fn max_bytes(&self) -> usize {
        match *self {
            RecordSize::Fixed(size) => size,
            RecordSize::Uniform { max, .. } => max,
            // Samples are clamped to this bound: six standard deviations cover every sample a
            // run will draw, and the clamp keeps a wild stddev from allocating gigabytes.
            RecordSize::Normal { mean, stddev } => {
                ((mean + 6.0 * stddev).ceil() as usize).clamp(HEADER_BYTES, RECORD_BYTES_MAX)
            }
        }
    }

    pub fn sample<R: Rng>(&self, rng: &mut R, normal: Option<&Normal<f64>>) -> usize {
        match *self {
            RecordSize::Fixed(size) => size,
            RecordSize::Uniform { min, max } => rng.gen_range(min..=max),
            RecordSize::Normal { .. } => {
                let value = normal.map(|n| n.sample(rng)).unwrap_or(HEADER_BYTES as f64);
                (value.round().max(0.0) as usize).clamp(HEADER_BYTES, self.max_bytes())
            }
        }
    }

    /// The distribution to pass to `sample` (built once per thread, not per record).
    pub fn normal(&self) -> Option<Normal<f64>> {
        match *self {
            RecordSize::Normal { mean, stddev } => Normal::new(mean, stddev).ok(),
            _ => None,
        }
    }
}

impl FromStr for RecordSize {
    type Err = String;

    fn from_str(text: &str) -> Result<RecordSize, String> {
        let parts: Vec<&str> = text.split(':').collect();
        let size = match parts.as_slice() {
            [n] => RecordSize::Fixed(parse_bytes(n)?),
            ["uniform", min, max] => {
                let (min, max) = (parse_bytes(min)?, parse_bytes(max)?);
                if min > max {
                    return Err(format!("uniform:{min}:{max}: MIN is larger than MAX"));
                }
                RecordSize::Uniform { min, max }
            }
            ["normal", mean, stddev] => {
                let mean = parse_bytes(mean)? as f64;
                let stddev = parse_bytes(stddev)? as f64;
                RecordSize::Normal { mean, stddev }
            }
            _ => {
                return Err(format!(
                    "'{text}': expected BYTES, uniform:MIN:MAX or normal:MEAN:STDDEV"
                ))
            }
        };
        let smallest = match size {
            RecordSize::Fixed(n) => n,
            RecordSize::Uniform { min, .. } => min,
            RecordSize::Normal { mean, .. } => mean as usize,
        };
        if smallest < HEADER_BYTES {
            return Err(format!(
                "'{text}': records must be at least {HEADER_BYTES} bytes, the size of the \
                 timestamp header the bench writes into each record"
            ));
        }
        if size.max_bytes() > RECORD_BYTES_MAX {
            return Err(format!("'{text}': records are limited to {RECORD_BYTES_MAX} bytes"));
        }
        Ok(size)
    }
}

impl fmt::Display for RecordSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            RecordSize::Fixed(size) => write!(f, "{size}"),
            RecordSize::Uniform { min, max } => write!(f, "uniform:{min}:{max}"),
            RecordSize::Normal { mean, stddev } => write!(f, "normal:{mean}:{stddev}"),
        }
    }
}

/// `1024`, `1k`/`1KiB` (1024), `1m`/`1MiB` (1048576).
pub fn parse_bytes(text: &str) -> Result<usize, String> {
    let lower = text.trim().to_ascii_lowercase();
    let (digits, multiplier) =
        if let Some(d) = lower.strip_suffix("kib").or(lower.strip_suffix('k')) {
            (d, 1024)
        } else if let Some(d) = lower.strip_suffix("mib").or(lower.strip_suffix('m')) {
            (d, 1024 * 1024)
        } else {
            (lower.as_str(), 1)
        };
    digits
        .parse::<usize>()
        .map(|n| n * multiplier)
        .map_err(|_| format!("'{text}' is not a size in bytes (examples: 100, 1k, 1MiB)"))
}

/// How records are keyed, which decides how they spread over partitions.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum KeySpec {
    /// No key: librdkafka's default partitioner spreads records (sticky per batch).
    None,
    /// No key, partitions chosen in turn by the bench (record i goes to partition i mod P).
    RoundRobin,
    /// Keys `key-0`..`key-(N-1)`, each equally likely.
    Uniform { keys: u64 },
    /// Keys `key-0`..`key-(N-1)`, key k with probability proportional to 1/(k+1)^exponent.
    Zipf { keys: u64, exponent: f64 },
}

/// The exponent of `zipf:N` when none is given: the classic Zipf law.
pub const ZIPF_EXPONENT_DEFAULT: f64 = 1.0;

impl FromStr for KeySpec {
    type Err = String;

    fn from_str(text: &str) -> Result<KeySpec, String> {
        let parts: Vec<&str> = text.split(':').collect();
        let parse_keys = |n: &str| -> Result<u64, String> {
            match n.parse::<u64>() {
                Ok(keys) if keys > 0 => Ok(keys),
                _ => Err(format!("'{text}': the number of keys must be a positive integer")),
            }
        };
        match parts.as_slice() {
            ["none"] => Ok(KeySpec::None),
            ["round-robin"] => Ok(KeySpec::RoundRobin),
            ["uniform", n] => Ok(KeySpec::Uniform { keys: parse_keys(n)? }),
            ["zipf", n] => {
                Ok(KeySpec::Zipf { keys: parse_keys(n)?, exponent: ZIPF_EXPONENT_DEFAULT })
            }
            ["zipf", n, s] => {
                let exponent = s
                    .parse::<f64>()
                    .ok()
                    .filter(|s| *s > 0.0)
                    .ok_or_else(|| format!("'{text}': the zipf exponent must be positive"))?;
                Ok(KeySpec::Zipf { keys: parse_keys(n)?, exponent })
            }
            _ => {
                Err(format!("'{text}': expected none, round-robin, uniform:N or zipf:N[:EXPONENT]"))
            }
        }
    }
}

impl fmt::Display for KeySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            KeySpec::None => write!(f, "none"),
            KeySpec::RoundRobin => write!(f, "round-robin"),
            KeySpec::Uniform { keys } => write!(f, "uniform:{keys}"),
            KeySpec::Zipf { keys, exponent } => write!(f, "zipf:{keys}:{exponent}"),
        }
    }
}

/// Draws keys for one producer thread.
pub enum KeySampler {
    None,
    RoundRobin { next: u64 },
    Uniform { keys: u64 },
    Zipf(Zipf<f64>),
}

/// What one record is sent with: a key, an explicit partition, or neither.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Routing {
    Unkeyed,
    Partition(i32),
    Key(u64),
}

impl KeySampler {
    pub fn new(spec: KeySpec) -> Result<KeySampler, String> {
        Ok(match spec {
            KeySpec::None => KeySampler::None,
            KeySpec::RoundRobin => KeySampler::RoundRobin { next: 0 },
            KeySpec::Uniform { keys } => KeySampler::Uniform { keys },
            KeySpec::Zipf { keys, exponent } => KeySampler::Zipf(
                Zipf::new(keys, exponent).map_err(|e| format!("zipf:{keys}:{exponent}: {e}"))?,
            ),
        })
    }

    pub fn next<R: Rng>(&mut self, rng: &mut R, partitions: i32) -> Routing {
        match self {
            KeySampler::None => Routing::Unkeyed,
            KeySampler::RoundRobin { next } => {
                let partition = (*next % partitions.max(1) as u64) as i32;
                *next += 1;
                Routing::Partition(partition)
            }
            KeySampler::Uniform { keys } => Routing::Key(rng.gen_range(0..*keys)),
            // Zipf samples are in 1..=N; key 0 is the most popular.
            KeySampler::Zipf(zipf) => Routing::Key(zipf.sample(rng) as u64 - 1),
        }
    }
}

/// How open-loop arrivals are spaced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Arrival {
    /// Exactly 1/rate apart.
    Constant,
    /// Exponentially distributed gaps with mean 1/rate (a Poisson process), as independent
    /// clients would produce.
    Poisson,
}

/// Where a consume-only workload starts reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum StartFrom {
    Earliest,
    Tail,
}

/// The client the producers use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Client {
    /// librdkafka (the rdkafka crate): batching, retries, idempotence, transactions, any -X.
    Librdkafka,
    /// The bench's own Kafka protocol client, for producers: one record per Produce request
    /// (linger 0), pipelined on one connection per producer; far cheaper per request.
    Native,
}

impl Client {
    pub fn name(&self) -> &'static str {
        match self {
            Client::Librdkafka => "librdkafka",
            Client::Native => "native",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
    /// librdkafka's name for the codec (`compression.type`).
    pub fn librdkafka_name(&self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Acks {
    None,
    Leader,
    All,
}

impl Acks {
    pub fn librdkafka_value(&self) -> &'static str {
        match self {
            Acks::None => "0",
            Acks::Leader => "1",
            Acks::All => "all",
        }
    }
}

impl FromStr for Acks {
    type Err = String;

    fn from_str(text: &str) -> Result<Acks, String> {
        match text {
            "0" => Ok(Acks::None),
            "1" => Ok(Acks::Leader),
            "all" | "-1" => Ok(Acks::All),
            _ => Err(format!("'{text}': acks is 0, 1 or all")),
        }
    }
}

/// `10` (seconds), `2.5s`, `500ms`, `2m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let lower = text.trim().to_ascii_lowercase();
    let (number, scale) = if let Some(n) = lower.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = lower.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = lower.strip_suffix('m') {
        (n, 60.0)
    } else {
        (lower.as_str(), 1.0)
    };
    match number.parse::<f64>() {
        Ok(value) if value >= 0.0 && value.is_finite() => {
            Ok(Duration::from_secs_f64(value * scale))
        }
        _ => Err(format!("'{text}' is not a duration (examples: 10, 2.5s, 500ms, 2m)")),
    }
}

/// `KEY=VALUE`, passed through to librdkafka.
pub fn parse_key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(format!("'{text}': expected KEY=VALUE")),
    }
}

/// `5000`, `20k`, `1.5m` records per second.
pub fn parse_rate(text: &str) -> Result<f64, String> {
    let lower = text.trim().to_ascii_lowercase();
    let (number, scale) = if let Some(n) = lower.strip_suffix('k') {
        (n, 1e3)
    } else if let Some(n) = lower.strip_suffix('m') {
        (n, 1e6)
    } else {
        (lower.as_str(), 1.0)
    };
    match number.parse::<f64>() {
        Ok(rate) if rate > 0.0 && rate.is_finite() => Ok(rate * scale),
        _ => Err(format!("'{text}' is not a positive rate (examples: 5000, 20k, 1.5m)")),
    }
}

/// Rates per decade of a `MIN..MAX` ladder without `--steps`: the 1-2-5 series that reads well
/// on a log axis (1k, 2k, 5k, 10k, ...).
const LADDER_MANTISSAS: [f64; 3] = [1.0, 2.0, 5.0];
/// A ladder longer than this is a typo (a sweep of 10 s steps would run for hours).
pub const LADDER_STEPS_MAX: usize = 100;
/// Relative slack when comparing rates of a ladder to its bounds, so that 10^k computed in
/// floating point still counts as inside `MIN..MAX`.
const LADDER_EPSILON: f64 = 1e-9;

/// The offered rates of a sweep: `1k,2k,5k` (a list, in that order) or `1k..100k` (a range).
#[derive(Clone, Debug, PartialEq)]
pub enum RateLadder {
    List(Vec<f64>),
    Range { min: f64, max: f64 },
}

impl RateLadder {
    /// The rates in ascending order: the list as given (sorted), or the range stepped 1-2-5 per
    /// decade (its bounds included), or in `steps` log-spaced steps rounded to whole records/s.
    pub fn rates(&self, steps: Option<usize>) -> Result<Vec<f64>, String> {
        let mut rates = match (self, steps) {
            (RateLadder::List(_), Some(_)) => {
                return Err("--steps applies to a range of rates (MIN..MAX), not a list".into())
            }
            (RateLadder::List(rates), None) => rates.clone(),
            (RateLadder::Range { min, max }, Some(steps)) => {
                if !(2..=LADDER_STEPS_MAX).contains(&steps) {
                    return Err(format!("--steps must be between 2 and {LADDER_STEPS_MAX}"));
                }
                let ratio = max / min;
                (0..steps)
                    .map(|i| (min * ratio.powf(i as f64 / (steps - 1) as f64)).round())
                    .collect()
            }
            (RateLadder::Range { min, max }, None) => {
                let mut rates = vec![*min];
                let first_decade = min.log10().floor() as i32;
                let last_decade = max.log10().ceil() as i32;
                for decade in first_decade..=last_decade {
                    for mantissa in LADDER_MANTISSAS {
                        let rate = mantissa * 10f64.powi(decade);
                        let inside = rate > min * (1.0 + LADDER_EPSILON)
                            && rate < max * (1.0 - LADDER_EPSILON);
                        if inside {
                            rates.push(rate);
                        }
                    }
                }
                rates.push(*max);
                rates
            }
        };
        rates.sort_by(f64::total_cmp);
        rates.dedup();
        if rates.len() > LADDER_STEPS_MAX {
            return Err(format!("{} rates; a sweep takes at most {LADDER_STEPS_MAX}", rates.len()));
        }
        Ok(rates)
    }
}

impl FromStr for RateLadder {
    type Err = String;

    fn from_str(text: &str) -> Result<RateLadder, String> {
        if let Some((min, max)) = text.split_once("..") {
            let (min, max) = (parse_rate(min)?, parse_rate(max)?);
            if min >= max {
                return Err(format!("'{text}': the range must go up (MIN..MAX)"));
            }
            return Ok(RateLadder::Range { min, max });
        }
        let rates: Vec<f64> = text.split(',').map(parse_rate).collect::<Result<_, _>>()?;
        Ok(RateLadder::List(rates))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    #[test]
    fn record_sizes_parse_and_stay_in_bounds() {
        assert_eq!("1024".parse::<RecordSize>(), Ok(RecordSize::Fixed(1024)));
        assert_eq!("1k".parse::<RecordSize>(), Ok(RecordSize::Fixed(1024)));
        assert_eq!(
            "uniform:100:200".parse::<RecordSize>(),
            Ok(RecordSize::Uniform { min: 100, max: 200 })
        );
        assert!("10".parse::<RecordSize>().is_err(), "smaller than the header");
        assert!("uniform:300:200".parse::<RecordSize>().is_err());
        assert!("lognormal:1:2".parse::<RecordSize>().is_err());

        let size: RecordSize = "normal:512:256".parse().expect("valid spec");
        let normal = size.normal();
        let mut rng = SmallRng::seed_from_u64(7);
        for _ in 0..10_000 {
            let n = size.sample(&mut rng, normal.as_ref());
            assert!(n >= HEADER_BYTES);
            assert!(n <= size.max_bytes());
        }
    }

    #[test]
    fn keys_parse_and_round_robin_cycles() {
        assert_eq!("none".parse::<KeySpec>(), Ok(KeySpec::None));
        assert_eq!("uniform:10".parse::<KeySpec>(), Ok(KeySpec::Uniform { keys: 10 }));
        assert_eq!(
            "zipf:100:1.2".parse::<KeySpec>(),
            Ok(KeySpec::Zipf { keys: 100, exponent: 1.2 })
        );
        assert!("uniform:0".parse::<KeySpec>().is_err());
        let mut sampler = KeySampler::new(KeySpec::RoundRobin).expect("valid");
        let mut rng = SmallRng::seed_from_u64(1);
        let seen: Vec<Routing> = (0..5).map(|_| sampler.next(&mut rng, 3)).collect();
        assert_eq!(seen, [0, 1, 2, 0, 1].map(Routing::Partition).to_vec(),);
    }

    #[test]
    fn zipf_prefers_the_first_keys() {
        let mut sampler =
            KeySampler::new(KeySpec::Zipf { keys: 1000, exponent: 1.0 }).expect("valid");
        let mut rng = SmallRng::seed_from_u64(3);
        let mut first = 0;
        let draws = 10_000;
        for _ in 0..draws {
            match sampler.next(&mut rng, 4) {
                Routing::Key(k) => {
                    assert!(k < 1000);
                    if k == 0 {
                        first += 1;
                    }
                }
                other => panic!("zipf must give keys, got {other:?}"),
            }
        }
        // P(key 0) = 1 / H(1000) ~ 0.134.
        assert!(first > draws / 10, "key 0 drawn {first} times");
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("2.5s"), Ok(Duration::from_millis(2500)));
        assert!(parse_duration("-1").is_err());
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn rates_parse() {
        assert_eq!(parse_rate("5000"), Ok(5000.0));
        assert_eq!(parse_rate("20k"), Ok(20_000.0));
        assert_eq!(parse_rate("1.5m"), Ok(1_500_000.0));
        assert!(parse_rate("0").is_err());
    }

    #[test]
    fn ladders() {
        let ladder = |text: &str, steps| text.parse::<RateLadder>()?.rates(steps);
        assert_eq!(
            ladder("1k..100k", None),
            Ok(vec![1e3, 2e3, 5e3, 1e4, 2e4, 5e4, 1e5]),
            "1-2-5 per decade, bounds included"
        );
        assert_eq!(ladder("3k..20k", None), Ok(vec![3e3, 5e3, 1e4, 2e4]));
        assert_eq!(ladder("1k..100k", Some(3)), Ok(vec![1e3, 1e4, 1e5]));
        assert_eq!(ladder("5k,1k,2k,1k", None), Ok(vec![1e3, 2e3, 5e3]), "sorted, no repeats");
        assert!(ladder("1k,2k", Some(3)).is_err(), "--steps needs a range");
        assert!(ladder("1k..100k", Some(1)).is_err());
        assert!(ladder("2k..1k", None).is_err());
        assert!(ladder("1k,x", None).is_err());
        assert!(ladder("1..1m", Some(LADDER_STEPS_MAX + 1)).is_err());
    }
}
