//! The shard's timing wheel against one glommio timer per delayed operation, inside a real
//! glommio executor, at 10k, 100k and 1M pending operations.
//!
//! `benches/wheel.rs` compares the wheel with a binary heap as pure data structures under
//! virtual time. This one answers the design question instead: what would the broker pay if
//! each parked fetch or produce awaited its own executor timer (glommio keeps them in a
//! `BTreeMap` plus a hash map, O(log n) per insert and cancel) rather than sitting in the
//! shard's wheel driven by one executor timer?
//!
//! - `insert+cancel`: `pending` operations are parked; each step cancels a random one (it
//!   completed early, the common case) and parks a new one. For glommio that is dropping a
//!   registered `Timer` and creating and polling a new one; for the wheel, `cancel` + `insert`.
//! - `insert+expire`: `pending` tasks each wait for a deadline 1..=2H ms away (H = pending/16
//!   ms, so about 8 expire per millisecond at the start, as in `benches/wheel.rs`), and park
//!   again when woken. glommio: each task awaits its own `Timer`. Wheel: each task awaits a
//!   oneshot that the wheel holds; one driver task wakes every millisecond, advances the wheel
//!   and fires what expired. Both wake one task per expiry, as the purgatory does.
//!
//! Cost is this thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`) per operation, so time spent
//! descheduled on a shared machine does not count. Memory is the growth of the resident set
//! per pending operation (tasks included in `insert+expire`).
//!
//! Run: `cargo bench --bench executor_timers` (`-- 10000 100000` for chosen counts).

use std::cell::{Cell, RefCell};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Waker};
use std::time::{Duration, Instant};

use futures::channel::oneshot;
use futures::Future;
use glommio::timer::Timer;
use glommio::LocalExecutorBuilder;
use spate::wheel::{TimerHandle, TimingWheel};

const DEFAULT_PENDING: [usize; 3] = [10_000, 100_000, 1_000_000];
/// Steps measured in `insert+cancel`.
const CANCEL_STEPS: usize = 1_000_000;
/// Expiries per millisecond at the start of `insert+expire` (half the steady state).
const EXPIRIES_PER_MS: usize = 8;
const EXPIRE_WARMUP: Duration = Duration::from_secs(1);
const EXPIRE_MEASURE: Duration = Duration::from_secs(3);

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, workload, side, pending] = args.as_slice() {
        if flag == "--one" {
            let pending: usize = pending.parse().expect("pending count");
            let cost = run_one(workload, side, pending);
            println!("{} {}", cost.ns_per_op, cost.bytes_per_pending);
            return;
        }
    }
    let counts: Vec<usize> = args
        .iter()
        .filter(|arg| !arg.starts_with('-'))
        .filter_map(|arg| arg.parse().ok())
        .collect();
    let counts = if counts.is_empty() { DEFAULT_PENDING.to_vec() } else { counts };
    println!(
        "{:<14} {:>9} {:>12} {:>12} {:>8} {:>11} {:>11}",
        "workload", "pending", "wheel ns/op", "timer ns/op", "ratio", "wheel B/op", "timer B/op"
    );
    for workload in ["insert+cancel", "insert+expire"] {
        for &pending in &counts {
            let wheel = run_in_child(workload, "wheel", pending);
            let timer = run_in_child(workload, "timer", pending);
            print_row(workload, pending, wheel, timer);
        }
    }
}

/// Each measurement runs in a process of its own, so that neither side inherits the other's
/// heap (the resident-set growth would be wrong) or timers.
fn run_in_child(workload: &str, side: &str, pending: usize) -> Cost {
    let me = std::env::current_exe().expect("own path");
    let output = std::process::Command::new(me)
        .args(["--one", workload, side, &pending.to_string()])
        .output()
        .expect("cannot run the benchmark child");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let text = String::from_utf8_lossy(&output.stdout);
    let mut fields = text.split_whitespace().map(|f| f.parse::<f64>().expect("child output"));
    Cost {
        ns_per_op: fields.next().expect("ns per op"),
        bytes_per_pending: fields.next().expect("bytes per pending"),
    }
}

fn run_one(workload: &str, side: &str, pending: usize) -> Cost {
    let workload = workload.to_string();
    let side = side.to_string();
    LocalExecutorBuilder::default()
        .name("timers")
        .spawn(move || async move {
            match (workload.as_str(), side.as_str()) {
                ("insert+cancel", "wheel") => insert_cancel_wheel(pending).await,
                ("insert+cancel", "timer") => insert_cancel_glommio(pending).await,
                ("insert+expire", "wheel") => insert_expire_wheel(pending).await,
                ("insert+expire", "timer") => insert_expire_glommio(pending).await,
                _ => panic!("unknown workload {workload} or side {side}"),
            }
        })
        .expect("cannot start a glommio executor (RLIMIT_MEMLOCK?)")
        .join()
        .expect("benchmark executor failed")
}

/// What one side of a comparison cost.
#[derive(Clone, Copy)]
struct Cost {
    ns_per_op: f64,
    bytes_per_pending: f64,
}

fn print_row(workload: &str, pending: usize, wheel: Cost, timer: Cost) {
    println!(
        "{workload:<14} {pending:>9} {:>12.1} {:>12.1} {:>7.2}x {:>11.0} {:>11.0}",
        wheel.ns_per_op,
        timer.ns_per_op,
        timer.ns_per_op / wheel.ns_per_op,
        wheel.bytes_per_pending,
        timer.bytes_per_pending,
    );
}

async fn insert_cancel_wheel(pending: usize) -> Cost {
    let mut random = Random::new(pending as u64);
    let delay_max = delay_max_ms(pending);
    let rss_before = resident_bytes();
    let mut wheel = TimingWheel::with_capacity(0, pending);
    let mut handles: Vec<TimerHandle> =
        (0..pending).map(|i| wheel.insert(random.below(delay_max) + 1, i as u32)).collect();
    let bytes_per_pending = resident_growth(rss_before, pending);
    let started = thread_cpu_time();
    for _ in 0..CANCEL_STEPS {
        let victim = random.below(pending as u64) as usize;
        assert!(wheel.cancel(handles[victim]).is_some());
        handles[victim] = wheel.insert(random.below(delay_max) + 1, victim as u32);
    }
    let elapsed = thread_cpu_time() - started;
    Cost { ns_per_op: per_op(elapsed, CANCEL_STEPS), bytes_per_pending }
}

async fn insert_cancel_glommio(pending: usize) -> Cost {
    let mut random = Random::new(pending as u64);
    let delay_max = delay_max_ms(pending);
    let mut context = Context::from_waker(Waker::noop());
    let mut park = |random: &mut Random| {
        let mut timer = Timer::new(Duration::from_millis(random.below(delay_max) + 1));
        // The first poll registers the timer with the reactor, as awaiting it would.
        assert!(Pin::new(&mut timer).poll(&mut context).is_pending());
        timer
    };
    let rss_before = resident_bytes();
    let mut timers: Vec<Timer> = (0..pending).map(|_| park(&mut random)).collect();
    let bytes_per_pending = resident_growth(rss_before, pending);
    let started = thread_cpu_time();
    for _ in 0..CANCEL_STEPS {
        let victim = random.below(pending as u64) as usize;
        // Dropping the old timer deregisters it: the cancel.
        timers[victim] = park(&mut random);
    }
    let elapsed = thread_cpu_time() - started;
    drop(timers);
    Cost { ns_per_op: per_op(elapsed, CANCEL_STEPS), bytes_per_pending }
}

async fn insert_expire_glommio(pending: usize) -> Cost {
    let delay_max = delay_max_ms(pending);
    let expired = Rc::new(Cell::new(0_u64));
    let rss_before = resident_bytes();
    for task in 0..pending {
        let expired = expired.clone();
        glommio::spawn_local(async move {
            let mut random = Random::new(task as u64 + 1);
            loop {
                Timer::new(Duration::from_millis(random.below(delay_max) + 1)).await;
                expired.set(expired.get() + 1);
            }
        })
        .detach();
    }
    measure_expiries(&expired, rss_before, pending).await
}

type Parked = TimingWheel<oneshot::Sender<()>>;

async fn insert_expire_wheel(pending: usize) -> Cost {
    let delay_max = delay_max_ms(pending);
    let expired = Rc::new(Cell::new(0_u64));
    let start = Instant::now();
    let rss_before = resident_bytes();
    let wheel: Rc<RefCell<Parked>> = Rc::new(RefCell::new(TimingWheel::with_capacity(0, pending)));
    for task in 0..pending {
        let expired = expired.clone();
        let wheel = wheel.clone();
        glommio::spawn_local(async move {
            let mut random = Random::new(task as u64 + 1);
            loop {
                let (done, woken) = oneshot::channel();
                {
                    let mut wheel = wheel.borrow_mut();
                    let deadline = wheel.current_tick() + random.below(delay_max) + 1;
                    wheel.insert(deadline, done);
                }
                if woken.await.is_err() {
                    return;
                }
                expired.set(expired.get() + 1);
            }
        })
        .detach();
    }
    // The shard's driver: one executor timer, one tick per millisecond.
    let driver_wheel = wheel.clone();
    glommio::spawn_local(async move {
        let mut due = Vec::new();
        loop {
            let next_tick = driver_wheel.borrow().current_tick() + 1;
            let at = start + Duration::from_millis(next_tick);
            Timer::new(at.saturating_duration_since(Instant::now())).await;
            let now_tick = start.elapsed().as_millis() as u64;
            driver_wheel.borrow_mut().advance(now_tick, |_, done| due.push(done));
            for done in due.drain(..) {
                let _ = done.send(());
            }
        }
    })
    .detach();
    measure_expiries(&expired, rss_before, pending).await
}

/// CPU time per expiry over `EXPIRE_MEASURE`, after `EXPIRE_WARMUP` (by then every task has
/// parked once, so the resident set holds them all).
async fn measure_expiries(expired: &Cell<u64>, rss_before: u64, pending: usize) -> Cost {
    Timer::new(EXPIRE_WARMUP).await;
    let bytes_per_pending = resident_growth(rss_before, pending);
    let (cpu_before, count_before) = (thread_cpu_time(), expired.get());
    Timer::new(EXPIRE_MEASURE).await;
    let (cpu_after, count_after) = (thread_cpu_time(), expired.get());
    let expiries = (count_after - count_before) as usize;
    assert!(expiries > 0, "nothing expired in {EXPIRE_MEASURE:?}");
    Cost { ns_per_op: per_op(cpu_after - cpu_before, expiries), bytes_per_pending }
}

/// Delays are uniform in `1..=2H` ms, H = pending / (2 * EXPIRIES_PER_MS).
fn delay_max_ms(pending: usize) -> u64 {
    (pending / EXPIRIES_PER_MS).max(1) as u64
}

fn per_op(elapsed: Duration, ops: usize) -> f64 {
    elapsed.as_nanos() as f64 / ops as f64
}

fn thread_cpu_time() -> Duration {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid pointer to a timespec.
    let status = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    assert_eq!(status, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed");
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    pages * 4096
}

fn resident_growth(before: u64, pending: usize) -> f64 {
    resident_bytes().saturating_sub(before) as f64 / pending as f64
}

/// xorshift64*: deterministic, seeded per task, no dependency.
struct Random(u64);

impl Random {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % bound
    }
}
