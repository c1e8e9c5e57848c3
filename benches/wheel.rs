//! Timing wheel against `std::collections::BinaryHeap` with lazy deletion, at 10k, 100k and 1M
//! pending timers.
//!
//! - `insert_cancel_random` and `insert_cancel_oldest`: cancel a pending timer and insert a new
//!   one, the common case of a delayed operation that completes before its deadline. One
//!   iteration = 1 insert + 1 cancel. The victim is either any pending timer (uniformly random:
//!   every cancel touches cold memory, so this measures cache misses as much as work) or the
//!   oldest one (operations answered in the order they were parked).
//! - `insert_expire`: insert a timer with a random delay and advance the clock one tick every
//!   `INSERTS_PER_TICK` inserts, expiring whatever is due. One iteration = 1 insert + its share
//!   of advancing and expiring; in the steady state one timer expires per insert.
//!
//! Both keep `pending` timers in flight: delays are uniform in `1..=2 * horizon` ticks with
//! `horizon = pending / INSERTS_PER_TICK`, so that 1M pending timers at 1 ms ticks is 16k
//! inserts per second with deadlines up to about two minutes away. The state is built once per
//! benchmark and carried across samples, so the measurement sees the steady state.
//!
//! What to expect: the wheel's work per operation does not depend on the pending count
//! (cachegrind: 198 instructions per insert+cancel, harness included, at 10k, 100k and 1M
//! alike), but its slab is 32 bytes per timer, so at 1M pending (32 MiB) a random cancel or a
//! cascade misses the cache, and the time per op grows with memory latency, not with work. The
//! heap's instructions per expire grow with log n on top of the same misses.
//!
//! Time is the benchmark thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`), not wall time: the
//! machine is shared with builds and tests, and wall time would count the time this thread
//! spends descheduled. Other processes still share the caches, so expect some noise.
//!
//! Run: `cargo bench --bench wheel` (short settings are built in; pass criterion options after
//! `--` to change them).

use criterion::measurement::{Measurement, ValueFormatter};
use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use spate::wheel::{TimerHandle, TimingWheel};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

/// Pending timer counts to measure.
const PENDING_COUNTS: [usize; 3] = [10_000, 100_000, 1_000_000];

/// Inserts between two clock ticks in `insert_expire`.
const INSERTS_PER_TICK: usize = 16;

const _: () = assert!(PENDING_COUNTS[0].is_multiple_of(INSERTS_PER_TICK));

criterion_group! {
    name = benches;
    config = Criterion::default()
        .with_measurement(ThreadCpuTime)
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = insert_cancel_random, insert_cancel_oldest, insert_expire
}
criterion_main!(benches);

fn insert_cancel_random(criterion: &mut Criterion<ThreadCpuTime>) {
    insert_cancel(criterion, Victim::Random);
}

fn insert_cancel_oldest(criterion: &mut Criterion<ThreadCpuTime>) {
    insert_cancel(criterion, Victim::Oldest);
}

/// Which pending timer each iteration cancels.
#[derive(Clone, Copy)]
enum Victim {
    /// Any pending timer, uniformly: every cancel touches cold memory (the worst case).
    Random,
    /// The one inserted longest ago: operations answered in the order they were parked.
    Oldest,
}

fn insert_cancel(criterion: &mut Criterion<ThreadCpuTime>, victim_pattern: Victim) {
    let group_name = match victim_pattern {
        Victim::Random => "insert_cancel_random",
        Victim::Oldest => "insert_cancel_oldest",
    };
    let mut group = criterion.benchmark_group(group_name);
    group.throughput(Throughput::Elements(1));
    for pending in PENDING_COUNTS {
        let delay_max_ticks = delay_max_ticks(pending);
        let mut random = Random::new(pending as u64);
        let mut victims = Victims::new(victim_pattern, pending);
        let mut wheel = TimingWheel::with_capacity(0, pending);
        let mut handles: Vec<TimerHandle> = (0..pending)
            .map(|value| wheel.insert(random.below(delay_max_ticks) + 1, value as u32))
            .collect();
        group.bench_function(BenchmarkId::new("wheel", pending), |bencher| {
            bencher.iter(|| {
                let victim = victims.next(&mut random);
                let value = wheel.cancel(handles[victim]);
                assert!(value.is_some());
                handles[victim] = wheel.insert(random.below(delay_max_ticks) + 1, victim as u32);
            })
        });
        assert_eq!(wheel.len(), pending);
        drop((wheel, handles));

        let mut random = Random::new(pending as u64);
        let mut victims = Victims::new(victim_pattern, pending);
        let mut heap = LazyHeap::with_capacity(pending);
        let mut handles: Vec<HeapHandle> =
            (0..pending).map(|_| heap.insert(random.below(delay_max_ticks) + 1)).collect();
        group.bench_function(BenchmarkId::new("heap", pending), |bencher| {
            bencher.iter(|| {
                let victim = victims.next(&mut random);
                assert!(heap.cancel(handles[victim]));
                handles[victim] = heap.insert(random.below(delay_max_ticks) + 1);
            })
        });
        assert_eq!(heap.len(), pending);
    }
    group.finish();
}

/// Picks the index (into the handle array) of the timer to cancel next.
struct Victims {
    pattern: Victim,
    pending: usize,
    /// For `Oldest`: handles are replaced in place, so the oldest is the next one round.
    cursor: usize,
}

impl Victims {
    fn new(pattern: Victim, pending: usize) -> Self {
        Self { pattern, pending, cursor: 0 }
    }

    fn next(&mut self, random: &mut Random) -> usize {
        match self.pattern {
            Victim::Random => random.below(self.pending as u64) as usize,
            Victim::Oldest => {
                let victim = self.cursor;
                self.cursor = if victim + 1 == self.pending { 0 } else { victim + 1 };
                victim
            }
        }
    }
}

fn insert_expire(criterion: &mut Criterion<ThreadCpuTime>) {
    let mut group = criterion.benchmark_group("insert_expire");
    group.throughput(Throughput::Elements(1));
    for pending in PENDING_COUNTS {
        let delay_max_ticks = delay_max_ticks(pending);
        let mut random = Random::new(pending as u64);
        let mut wheel = TimingWheel::with_capacity(0, pending * 2);
        for value in 0..pending {
            wheel.insert(random.below(delay_max_ticks) + 1, value as u32);
        }
        let mut inserts = 0_usize;
        group.bench_function(BenchmarkId::new("wheel", pending), |bencher| {
            bencher.iter(|| {
                let now_tick = wheel.current_tick();
                wheel.insert(now_tick + random.below(delay_max_ticks) + 1, inserts as u32);
                inserts += 1;
                if inserts.is_multiple_of(INSERTS_PER_TICK) {
                    wheel.advance(now_tick + 1, |_, value| {
                        black_box(value);
                    });
                }
            })
        });
        report_pending("wheel", pending, wheel.len());
        drop(wheel);

        let mut random = Random::new(pending as u64);
        let mut heap = LazyHeap::with_capacity(pending * 2);
        for _ in 0..pending {
            heap.insert(random.below(delay_max_ticks) + 1);
        }
        let mut inserts = 0_usize;
        group.bench_function(BenchmarkId::new("heap", pending), |bencher| {
            bencher.iter(|| {
                let now_tick = heap.now_tick;
                heap.insert(now_tick + random.below(delay_max_ticks) + 1);
                inserts += 1;
                if inserts.is_multiple_of(INSERTS_PER_TICK) {
                    heap.advance(now_tick + 1, |index| {
                        black_box(index);
                    });
                }
            })
        });
        report_pending("heap", pending, heap.len());
    }
    group.finish();
}

/// Delays are uniform in `1..=2 * horizon`, so that `INSERTS_PER_TICK` inserts per tick keep
/// `pending` timers in flight on average.
fn delay_max_ticks(pending: usize) -> u64 {
    (2 * pending / INSERTS_PER_TICK) as u64
}

/// The steady state should hold about as many timers as asked for; say so if it does not.
fn report_pending(name: &str, pending_target: usize, pending: usize) {
    if pending < pending_target / 2 || pending > pending_target * 2 {
        eprintln!("{name}: {pending} timers pending at the end, target {pending_target}");
    }
}

/// xorshift64*: cheap, deterministic, and the same cost on both sides of the comparison.
struct Random(u64);

impl Random {
    fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    /// A number in `0..bound`.
    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 32) % bound
    }
}

/// The reference: a min-heap of (deadline, slot, generation) with lazy deletion. Cancel bumps
/// the slot's generation in O(1) and leaves the heap entry behind as garbage, which `advance`
/// skips when it surfaces; the heap is rebuilt without garbage once garbage outnumbers live
/// entries, so that it stays within twice the pending count.
struct LazyHeap {
    heap: BinaryHeap<Reverse<(u64, u32, u32)>>,
    generations: Vec<u32>,
    vacant: Vec<u32>,
    garbage_count: usize,
    now_tick: u64,
}

#[derive(Clone, Copy)]
struct HeapHandle {
    index: u32,
    generation: u32,
}

impl LazyHeap {
    fn with_capacity(capacity: usize) -> Self {
        Self {
            heap: BinaryHeap::with_capacity(capacity * 2),
            generations: Vec::with_capacity(capacity),
            vacant: Vec::new(),
            garbage_count: 0,
            now_tick: 0,
        }
    }

    fn len(&self) -> usize {
        self.heap.len() - self.garbage_count
    }

    fn insert(&mut self, deadline_tick: u64) -> HeapHandle {
        let index = self.vacant.pop().unwrap_or_else(|| {
            self.generations.push(0);
            (self.generations.len() - 1) as u32
        });
        let generation = self.generations[index as usize];
        self.heap.push(Reverse((deadline_tick, index, generation)));
        HeapHandle { index, generation }
    }

    fn cancel(&mut self, handle: HeapHandle) -> bool {
        if self.generations[handle.index as usize] != handle.generation {
            return false;
        }
        self.release(handle.index);
        self.garbage_count += 1;
        if self.garbage_count > self.len() {
            let generations = &self.generations;
            self.heap.retain(|Reverse((_, index, generation))| {
                generations[*index as usize] == *generation
            });
            self.garbage_count = 0;
        }
        true
    }

    fn advance(&mut self, now_tick: u64, mut on_expired: impl FnMut(u32)) {
        self.now_tick = now_tick;
        while let Some(&Reverse((deadline_tick, index, generation))) = self.heap.peek() {
            if deadline_tick > now_tick {
                break;
            }
            self.heap.pop();
            if self.generations[index as usize] == generation {
                self.release(index);
                on_expired(index);
            } else {
                self.garbage_count -= 1;
            }
        }
    }

    fn release(&mut self, index: u32) {
        self.generations[index as usize] = self.generations[index as usize].wrapping_add(1);
        self.vacant.push(index);
    }
}

/// Criterion measurement of the calling thread's CPU time, in nanoseconds.
struct ThreadCpuTime;

impl Measurement for ThreadCpuTime {
    type Intermediate = Duration;
    type Value = Duration;

    fn start(&self) -> Duration {
        thread_cpu_time()
    }

    fn end(&self, start: Duration) -> Duration {
        thread_cpu_time().saturating_sub(start)
    }

    fn add(&self, first: &Duration, second: &Duration) -> Duration {
        *first + *second
    }

    fn zero(&self) -> Duration {
        Duration::ZERO
    }

    fn to_f64(&self, value: &Duration) -> f64 {
        value.as_nanos() as f64
    }

    fn formatter(&self) -> &dyn ValueFormatter {
        &NanosecondFormatter
    }
}

fn thread_cpu_time() -> Duration {
    let mut time = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `time` is a valid, writable timespec that outlives the call, and
    // CLOCK_THREAD_CPUTIME_ID is supported by every Linux the broker runs on.
    let result = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut time) };
    assert!(result == 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed");
    Duration::new(time.tv_sec as u64, time.tv_nsec as u32)
}

/// Shows every value in nanoseconds (per iteration) and throughput in million elements per
/// second, so that all rows of the report compare at a glance.
struct NanosecondFormatter;

impl ValueFormatter for NanosecondFormatter {
    fn scale_values(&self, _typical_value: f64, _values: &mut [f64]) -> &'static str {
        "ns"
    }

    fn scale_throughputs(
        &self,
        _typical_value: f64,
        throughput: &Throughput,
        values: &mut [f64],
    ) -> &'static str {
        let per_iteration = match *throughput {
            Throughput::Bytes(count) | Throughput::BytesDecimal(count) => count,
            Throughput::Elements(count) => count,
        } as f64;
        for value in values {
            *value = per_iteration * 1e3 / *value;
        }
        "M/s"
    }

    fn scale_for_machines(&self, _values: &mut [f64]) -> &'static str {
        "ns"
    }
}
