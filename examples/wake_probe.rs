//! How late this machine wakes threads, and whether the host's steal explains it.
//!
//!     cargo run --release --example wake_probe -- [SECONDS (30)] [SHARDS (the CPU count)]
//!
//! On each CPU, side by side for SECONDS:
//! - a glommio executor, configured as the broker's shards are (pinned, ring depth, blocking
//!   pool), running a task that sleeps 1 ms in a loop and a task woken from another thread
//!   every 1 ms through a channel (how a shard learns of work from other threads);
//! - a plain thread pinned to the same CPU that sleeps 1 ms in a loop (`nanosleep`).
//!
//! A sampler reads /proc/stat's per-CPU steal every 10 ms. Every wake more than `STALL_MS`
//! late is a stall; the output lists each with the steal its CPU had around it. Lateness that
//! only the executors show is theirs (a lost wake-up); lateness that the plain thread on the
//! same CPU shows at the same moment, with steal, is the host stopping that CPU.
//!
//! Measured on the development VM (2026-12-06, docs/ARCHITECTURE.md, Replication): stops of
//! 100-110 ms, each on one CPU at a time, hit executor and plain thread together, with 10-11
//! ticks of steal; without steal both woke within 5-12 ms under build load.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

const STALL_MS: u64 = 20;
const STEAL_SAMPLE_MS: u64 = 10;

struct Stall {
    cpu: usize,
    what: &'static str,
    at_ms: u64,
    late_ms: u64,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn steal_ticks() -> Vec<u64> {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    stat.lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .map(|l| l.split_whitespace().nth(8).and_then(|v| v.parse().ok()).unwrap_or(0))
        .collect()
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    sorted.get(((sorted.len().max(1) - 1) as f64 * p) as usize).copied().unwrap_or(0)
}

fn summary(mut late_us: Vec<u64>) -> String {
    late_us.sort_unstable();
    format!(
        "p50 {} us, p99 {} us, p99.9 {} us, max {} ms ({} wakes)",
        percentile(&late_us, 0.5),
        percentile(&late_us, 0.99),
        percentile(&late_us, 0.999),
        late_us.last().copied().unwrap_or(0) / 1000,
        late_us.len()
    )
}

fn pin(cpu: usize) {
    // SAFETY: the set lives on this stack frame; sched_setaffinity only reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let seconds: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(30);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let shards: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(cpus);
    let start = Instant::now();
    let end = start + Duration::from_secs(seconds);
    let stalls = Arc::new(Mutex::new(Vec::<Stall>::new()));
    // (ms since start, per-CPU steal ticks), one sample every STEAL_SAMPLE_MS.
    let steal = Arc::new(Mutex::new(Vec::<(u64, Vec<u64>)>::new()));

    let sampler = {
        let steal = Arc::clone(&steal);
        std::thread::spawn(move || {
            while Instant::now() < end + Duration::from_millis(500) {
                let at = start.elapsed().as_millis() as u64;
                lock(&steal).push((at, steal_ticks()));
                std::thread::sleep(Duration::from_millis(STEAL_SAMPLE_MS));
            }
        })
    };

    let plain: Vec<_> = (0..cpus)
        .map(|cpu| {
            let stalls = Arc::clone(&stalls);
            std::thread::spawn(move || {
                pin(cpu);
                let mut late = Vec::new();
                while Instant::now() < end {
                    let t = Instant::now();
                    std::thread::sleep(Duration::from_millis(1));
                    let late_us = (t.elapsed().as_micros() as u64).saturating_sub(1000);
                    if late_us / 1000 > STALL_MS {
                        let at_ms = start.elapsed().as_millis() as u64;
                        let stall =
                            Stall { cpu, what: "plain sleep", at_ms, late_ms: late_us / 1000 };
                        lock(&stalls).push(stall);
                    }
                    late.push(late_us);
                }
                (cpu, late)
            })
        })
        .collect();

    let (senders, receivers): (Vec<_>, Vec<_>) =
        (0..shards).map(|_| futures::channel::mpsc::channel::<Instant>(4096)).unzip();
    let feeder = std::thread::spawn(move || {
        let mut senders = senders;
        while Instant::now() < end {
            std::thread::sleep(Duration::from_millis(1));
            for sender in &mut senders {
                let _ = sender.try_send(Instant::now());
            }
        }
    });
    let receivers = Arc::new(Mutex::new(receivers));
    let results = Arc::new(Mutex::new(Vec::new()));
    let pool = glommio::LocalExecutorPoolBuilder::new(glommio::PoolPlacement::MaxSpread(
        shards,
        glommio::CpuSet::online().ok(),
    ))
    .name("probe-shard")
    .ring_depth(4096)
    .blocking_thread_pool_placement(glommio::PoolPlacement::Unbound(2))
    .on_all_shards({
        let stalls = Arc::clone(&stalls);
        let results = Arc::clone(&results);
        move || {
            let receiver = lock(&receivers).pop();
            let (stalls, results) = (Arc::clone(&stalls), Arc::clone(&results));
            async move {
                // SAFETY: sched_getcpu takes no arguments; the executor is pinned.
                let cpu = unsafe { libc::sched_getcpu() }.max(0) as usize;
                let record = std::rc::Rc::new(move |what: &'static str, late_us: u64| {
                    if late_us / 1000 > STALL_MS {
                        let at_ms = start.elapsed().as_millis() as u64;
                        let stall = Stall { cpu, what, at_ms, late_ms: late_us / 1000 };
                        lock(&stalls).push(stall);
                    }
                });
                let record_timer = std::rc::Rc::clone(&record);
                let timers = glommio::spawn_local(async move {
                    let mut late = Vec::new();
                    while Instant::now() < end {
                        let t = Instant::now();
                        glommio::timer::sleep(Duration::from_millis(1)).await;
                        let late_us = (t.elapsed().as_micros() as u64).saturating_sub(1000);
                        record_timer("executor timer", late_us);
                        late.push(late_us);
                    }
                    late
                });
                let mut late_wakes = Vec::new();
                let started = Instant::now();
                // A stop leaves a queue of messages, each later than the next: one stall.
                let mut stalled_until = started;
                if let Some(mut receiver) = receiver {
                    while Instant::now() < end {
                        let Some(sent) = futures::StreamExt::next(&mut receiver).await else {
                            break;
                        };
                        if sent < started {
                            continue; // sent while the executors were still starting
                        }
                        let late_us = sent.elapsed().as_micros() as u64;
                        if sent >= stalled_until {
                            record("executor wake", late_us);
                        }
                        if late_us / 1000 > STALL_MS {
                            stalled_until = stalled_until.max(Instant::now());
                        }
                        late_wakes.push(late_us);
                    }
                }
                let late_timers = timers.await;
                lock(&results).push((cpu, late_timers, late_wakes));
            }
        }
    })
    .expect("glommio executors start (io_uring, RLIMIT_MEMLOCK)");
    pool.join_all();
    let _ = feeder.join();
    let mut plain: Vec<_> = plain.into_iter().filter_map(|t| t.join().ok()).collect();
    let _ = sampler.join();

    plain.sort_by_key(|(cpu, _)| *cpu);
    for (cpu, late) in plain {
        println!("cpu {cpu} plain sleep 1 ms: late {}", summary(late));
    }
    let mut results = std::mem::take(&mut *lock(&results));
    results.sort_by_key(|(cpu, _, _)| *cpu);
    for (cpu, timers, wakes) in results {
        println!("cpu {cpu} executor timer 1 ms: late {}", summary(timers));
        println!("cpu {cpu} executor wake from a thread: late {}", summary(wakes));
    }
    let steal = lock(&steal);
    let mut stalls = std::mem::take(&mut *lock(&stalls));
    stalls.sort_by_key(|s| (s.at_ms, s.cpu));
    let (mut with_steal, mut without) = (0, 0);
    for stall in &stalls {
        // The stall's CPU's steal from its start until a sample after its end.
        let from = stall.at_ms.saturating_sub(stall.late_ms + STEAL_SAMPLE_MS);
        let until = stall.at_ms + 3 * STEAL_SAMPLE_MS;
        let ticks = |at: u64| {
            steal
                .iter()
                .find(|(t, _)| *t >= at)
                .or(steal.last())
                .and_then(|(_, v)| v.get(stall.cpu).copied())
                .unwrap_or(0)
        };
        let stolen_ms = ticks(until).saturating_sub(ticks(from)) * 10;
        if stolen_ms >= STALL_MS {
            with_steal += 1;
        } else {
            without += 1;
        }
        println!(
            "stall at {:.3} s: cpu {} {} {} ms late; the host stole {stolen_ms} ms of cpu {} then",
            stall.at_ms as f64 / 1000.0,
            stall.cpu,
            stall.what,
            stall.late_ms,
            stall.cpu
        );
    }
    println!(
        "{} stalls over {STALL_MS} ms: {with_steal} with host steal of {STALL_MS} ms or more on \
         their CPU, {without} without",
        stalls.len()
    );
}
