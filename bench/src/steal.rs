//! Time the host took from this machine's CPUs ("steal"), and which latencies it touched.
//!
//! On a virtual machine the host can stop a virtual CPU, and everything on it (the broker's
//! shard, the bench's threads, the kernel's timers) stops with it. Measured on the two-core
//! VM Spate is developed on: episodes of about 100 ms, 93 in 132 loaded minutes, seen in
//! /proc/stat's steal column at the same moment as a plain thread's `nanosleep(1 ms)` woke
//! 100 ms late on that CPU. No broker can answer during one, so latencies that span one say
//! nothing about the broker; but they decide p99.9 of a short run, and which of two brokers
//! an episode happens to hit decides a comparison.
//!
//! A sampler thread reads the per-CPU steal ticks every `SAMPLE_MS` and keeps the episodes:
//! runs of steal on one CPU whose ticks are `EPISODE_MIN_TICKS` or more, with no gap longer
//! than `EPISODE_GAP_MS`. The kernel counts steal in 10 ms ticks and accounts it when the
//! virtual CPU runs again, so an episode's interval is widened backwards by what it stole
//! plus one sample: an overestimate, never a miss. Each latency series also keeps a
//! histogram of only the records whose [intended send, completion] spans no episode
//! (`SpanRecorder`); the report shows both, the steal-free one beside the plain one, never
//! instead of it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use crate::clock::Clock;

const SAMPLE_MS: u64 = 10;
/// Steal ticks (10 ms each) that make an episode: 20 ms or more. A single tick is the kernel's
/// rounding of small, steady steal as often as a real stop.
pub const EPISODE_MIN_TICKS: u64 = 2;
/// Steal on one CPU less than this apart belongs to one episode.
const EPISODE_GAP_MS: u64 = 50;
/// A record completed this long before the sampler's last sample can be classified: any
/// episode that overlaps it has been seen by then (the stopped CPU accounts its steal when it
/// runs again, and an episode ends at most `EPISODE_GAP_MS` after its last steal).
pub const SETTLE_MS: u64 = 300;
/// A recorder classifies its queued spans in batches, once the oldest settled this long ago:
/// each batch scans the queue once.
const DRAIN_BATCH_MS: u64 = 100;
const NS_PER_MS: u64 = 1_000_000;

/// One episode of steal on one CPU, in the run's wall-clock nanoseconds (`Clock::wall_ns`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Episode {
    pub cpu: usize,
    pub start_ns: u64,
    pub end_ns: u64,
    pub stolen_ms: u64,
}

/// Per-CPU steal ticks from the text of /proc/stat (the `cpuN` lines, in order); `None` if the
/// text has none (not Linux, or a kernel without steal accounting).
pub fn parse_steal_ticks(stat: &str) -> Option<Vec<u64>> {
    let mut ticks = Vec::new();
    for line in stat.lines() {
        let Some(rest) = line.strip_prefix("cpu") else {
            continue;
        };
        if !rest.starts_with(|c: char| c.is_ascii_digit()) {
            continue; // the "cpu " total line
        }
        // cpuN user nice system idle iowait irq softirq steal ...: steal is the 8th value.
        ticks.push(rest.split_whitespace().nth(8)?.parse().ok()?);
    }
    (!ticks.is_empty()).then_some(ticks)
}

/// Turns samples of per-CPU steal ticks into episodes. Pure: the sampler thread feeds it.
pub struct EpisodeTracker {
    tick_ns: u64,
    last: Vec<u64>,
    last_ns: u64,
    /// Per CPU: the open run of steal (start, last steal seen, ticks).
    open: Vec<Option<(u64, u64, u64)>>,
}

impl EpisodeTracker {
    pub fn new(first: Vec<u64>, now_ns: u64, tick_ns: u64) -> EpisodeTracker {
        let open = vec![None; first.len()];
        EpisodeTracker { tick_ns, last: first, last_ns: now_ns, open }
    }

    /// Takes one sample; returns the episodes it closed.
    pub fn sample(&mut self, ticks: &[u64], now_ns: u64) -> Vec<Episode> {
        let mut closed = Vec::new();
        for (cpu, &value) in ticks.iter().enumerate().take(self.last.len()) {
            let delta = value.saturating_sub(self.last[cpu]);
            self.last[cpu] = value;
            let open = &mut self.open[cpu];
            if delta > 0 {
                // The stolen time lies before this sample: back to the previous sample, less
                // what it stole.
                let start = self.last_ns.saturating_sub(delta * self.tick_ns);
                *open = match *open {
                    Some((first, _, sum)) => Some((first.min(start), now_ns, sum + delta)),
                    None => Some((start, now_ns, delta)),
                };
            } else if let Some((first, last, sum)) = *open {
                if now_ns.saturating_sub(last) > EPISODE_GAP_MS * NS_PER_MS {
                    if sum >= EPISODE_MIN_TICKS {
                        let stolen_ms = sum * self.tick_ns / NS_PER_MS;
                        closed.push(Episode { cpu, start_ns: first, end_ns: last, stolen_ms });
                    }
                    *open = None;
                }
            }
        }
        self.last_ns = now_ns;
        closed
    }
}

/// The episodes seen so far, shared by the sampler thread and the recorders.
pub struct StealMonitor {
    episodes: Mutex<Vec<Episode>>,
    /// Wall ns of the sampler's last sample.
    sampled_ns: AtomicU64,
    clock: Clock,
}

static MONITOR: OnceLock<Option<Arc<StealMonitor>>> = OnceLock::new();

/// Starts the process's one sampler (once; later calls return the same monitor). `None` where
/// /proc/stat has no per-CPU steal.
pub fn start(clock: Clock) -> Option<Arc<StealMonitor>> {
    MONITOR.get_or_init(|| StealMonitor::spawn(clock)).clone()
}

/// The running monitor, if `start` started one.
pub fn monitor() -> Option<&'static Arc<StealMonitor>> {
    MONITOR.get().and_then(Option::as_ref)
}

/// Steal of all CPUs so far, in ms (10 ms ticks); `None` where /proc/stat has none.
pub fn total_ms() -> Option<u64> {
    Some(read_ticks()?.iter().sum::<u64>() * tick_ns() / NS_PER_MS)
}

fn read_ticks() -> Option<Vec<u64>> {
    parse_steal_ticks(&std::fs::read_to_string("/proc/stat").ok()?)
}

fn tick_ns() -> u64 {
    // SAFETY: sysconf reads a constant of the C library and touches no memory of ours.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    1_000_000_000 / u64::try_from(per_second).ok().filter(|&t| t > 0).unwrap_or(100)
}

impl StealMonitor {
    fn spawn(clock: Clock) -> Option<Arc<StealMonitor>> {
        let first = read_ticks()?;
        let now = clock.wall_ns();
        let monitor = Arc::new(StealMonitor {
            episodes: Mutex::new(Vec::new()),
            sampled_ns: AtomicU64::new(now),
            clock,
        });
        let mut tracker = EpisodeTracker::new(first, now, tick_ns());
        let shared = Arc::clone(&monitor);
        std::thread::Builder::new()
            .name("steal-monitor".into())
            .spawn(move || loop {
                std::thread::sleep(Duration::from_millis(SAMPLE_MS));
                let Some(ticks) = read_ticks() else {
                    return;
                };
                let now = shared.clock.wall_ns();
                let closed = tracker.sample(&ticks, now);
                if !closed.is_empty() {
                    shared.lock().extend(closed);
                }
                shared.sampled_ns.store(now, Ordering::Release);
            })
            .ok()?;
        Some(monitor)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Episode>> {
        self.episodes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records that completed before this are classifiable (see `SETTLE_MS`).
    pub fn settled_ns(&self) -> u64 {
        self.sampled_ns.load(Ordering::Acquire).saturating_sub(SETTLE_MS * NS_PER_MS)
    }

    /// Waits until every record completed by now is classifiable (a run's report does this
    /// once, before reading the steal-free histograms). Bounded: a sampler that stopped
    /// (the stat file became unreadable) is waited for at most twice the settle time.
    pub fn settle(&self) {
        let now = self.clock.wall_ns();
        for _ in 0..(2 * SETTLE_MS / SAMPLE_MS) {
            if self.settled_ns() >= now {
                return;
            }
            std::thread::sleep(Duration::from_millis(SAMPLE_MS));
        }
    }

    /// Episodes that overlap [start_ns, end_ns].
    pub fn episodes_within(&self, start_ns: u64, end_ns: u64) -> Vec<Episode> {
        self.lock()
            .iter()
            .filter(|e| e.start_ns <= end_ns && e.end_ns >= start_ns)
            .copied()
            .collect()
    }
}

/// The steal-free half of a latency series: spans wait in `pending` until the monitor has
/// seen past them, then count if no episode touches them.
#[derive(Default)]
pub struct SpanFilter {
    pending: VecDeque<(u64, u64)>,
    /// Classified spans an episode touched.
    pub touched: u64,
}

impl SpanFilter {
    /// Queues [start_ns, end_ns]; returns the latencies (ns) of queued spans that are now
    /// classified clean (a batch at a time), and counts the touched ones.
    pub fn push(&mut self, start_ns: u64, end_ns: u64, monitor: &StealMonitor) -> Vec<u64> {
        self.pending.push_back((start_ns, end_ns));
        let settled = monitor.settled_ns();
        let batch = settled.saturating_sub(DRAIN_BATCH_MS * NS_PER_MS);
        if self.pending.front().is_some_and(|&(_, end)| end < batch) {
            self.drain(settled, monitor)
        } else {
            Vec::new()
        }
    }

    /// Classifies every queued span that ended before `until_ns`.
    pub fn drain(&mut self, until_ns: u64, monitor: &StealMonitor) -> Vec<u64> {
        // Spans are queued in completion order; their starts can be in any order.
        let Some(earliest) = self.pending.iter().map(|&(start, _)| start).min() else {
            return Vec::new();
        };
        let episodes = monitor.episodes_within(earliest, until_ns);
        let mut clean = Vec::new();
        while let Some(&(start, end)) = self.pending.front() {
            if end >= until_ns {
                break;
            }
            self.pending.pop_front();
            if episodes.iter().any(|e| e.start_ns <= end && e.end_ns >= start) {
                self.touched += 1;
            } else {
                clean.push(end.saturating_sub(start));
            }
        }
        clean
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = NS_PER_MS;

    #[test]
    fn parses_steal_of_each_cpu() {
        let stat = "cpu  598695 1411979 163309 191711 180472 0 9197 3850 0 0\n\
                    cpu0 300000 700000 80000 95000 90000 0 4500 1975 0 0\n\
                    cpu1 298695 711979 83309 96711 90472 0 4697 1875 0 0\n\
                    intr 12345\nctxt 999\n";
        assert_eq!(parse_steal_ticks(stat), Some(vec![1975, 1875]));
        assert_eq!(parse_steal_ticks("intr 1\n"), None);
        assert_eq!(parse_steal_ticks("cpu0 1 2 3\n"), None);
    }

    fn run(tracker: &mut EpisodeTracker, samples: &[(u64, [u64; 2])]) -> Vec<Episode> {
        samples.iter().flat_map(|(ms, ticks)| tracker.sample(ticks, ms * MS)).collect()
    }

    #[test]
    fn a_stop_becomes_one_episode_reaching_back_over_what_it_stole() {
        let mut tracker = EpisodeTracker::new(vec![100, 50], 0, 10 * MS);
        // CPU 1 stopped for about 100 ms before the sample at 120 ms; nothing after it.
        let mut samples = vec![(10, [100, 50]), (20, [100, 50]), (120, [100, 60])];
        samples.extend((13..30).map(|i| (i * 10, [100, 60])));
        let episodes = run(&mut tracker, &samples);
        assert_eq!(
            episodes,
            vec![Episode { cpu: 1, start_ns: 0, end_ns: 120 * MS, stolen_ms: 100 }]
        );
    }

    #[test]
    fn single_ticks_apart_are_rounding_not_episodes() {
        let mut tracker = EpisodeTracker::new(vec![0, 0], 0, 10 * MS);
        // +1 tick every 200 ms.
        let samples: Vec<(u64, [u64; 2])> = (1..=100).map(|i| (i * 10, [i / 20, 0])).collect();
        assert!(run(&mut tracker, &samples).is_empty());
    }

    #[test]
    fn ticks_close_together_join_and_an_open_run_waits_for_its_gap() {
        let mut tracker = EpisodeTracker::new(vec![0, 0], 0, 10 * MS);
        let episodes = run(&mut tracker, &[(10, [1, 0]), (40, [2, 0]), (60, [2, 0])]);
        assert!(episodes.is_empty(), "still open: {episodes:?}");
        let episodes = run(&mut tracker, &[(100, [2, 0])]);
        assert_eq!(episodes, vec![Episode { cpu: 0, start_ns: 0, end_ns: 40 * MS, stolen_ms: 20 }]);
    }

    fn monitor_with(episodes: Vec<Episode>, sampled_ms: u64) -> StealMonitor {
        StealMonitor {
            episodes: Mutex::new(episodes),
            sampled_ns: AtomicU64::new(sampled_ms * MS),
            clock: Clock::new(),
        }
    }

    #[test]
    fn spans_wait_until_settled_and_those_an_episode_touched_are_left_out() {
        let episode = Episode { cpu: 0, start_ns: 1_000 * MS, end_ns: 1_100 * MS, stolen_ms: 100 };
        let monitor = monitor_with(vec![episode], 1_200);
        let mut filter = SpanFilter::default();
        // Settled up to 900 ms (1,200 - SETTLE_MS); a batch waits until its oldest span
        // settled DRAIN_BATCH_MS ago.
        assert!(filter.push(950 * MS, 960 * MS, &monitor).is_empty());
        assert!(filter.push(990 * MS, 1_001 * MS, &monitor).is_empty());
        assert!(filter.push(1_050 * MS, 1_150 * MS, &monitor).is_empty());
        assert!(filter.push(1_101 * MS, 1_102 * MS, &monitor).is_empty());
        assert_eq!(filter.touched, 0);
        monitor.sampled_ns.store(1_800 * MS, Ordering::Release);
        // Settled up to 1,500 ms: the batch is classified; the two spans that overlap the
        // episode are left out and counted.
        assert_eq!(filter.push(1_600 * MS, 1_605 * MS, &monitor), vec![10 * MS, MS]);
        assert_eq!(filter.touched, 2);
        // The last span is not settled yet: it stays queued until drained to its end.
        assert_eq!(filter.drain(u64::MAX, &monitor), vec![5 * MS]);
        assert_eq!(filter.touched, 2);
    }
}
