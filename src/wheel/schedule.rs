//! # Delivery schedule: delayed records on a timing wheel, with a horizon
//!
//! The pure core of delayed delivery (`partition::delay` is the glue with the delay log and
//! the partition). One schedule per partition that has delayed records. Times are epoch
//! milliseconds (a due time survives a restart), used directly as the wheel's ticks.
//!
//! ```text
//!        now                         window_end = (last load) + horizon
//!   ------|------------------------------|------------------------------------------> time
//!         [ near: in the wheel, with      )[ far: only counted; their batches stay in the
//!           their batches in memory        )  delay log on disk, loaded when the window
//!                                          )  moves over them                          ]
//! ```
//!
//! Invariant: every pending entry due before `window_end` is in the wheel; the others are
//! `far` (a count). `admit` puts an entry on its side of the line. The window moves when
//! now passes `window_end - horizon / 2` (or at once when nothing is far): the caller then
//! reads the entries due in `[window_end, new end)` from disk (`reload_due` says which
//! range) and hands them to `loaded`. So memory holds only what is due within one horizon,
//! and a record due next month costs a count until its window comes.
//!
//! Order: `due` gives every entry whose due time is at or before now, sorted by due time
//! and, among equal due times, by the entry's value (the glue uses the delay-log offset,
//! which is the order of admission). Never early: an entry comes out at the first `due`
//! whose now reaches its due time (the wheel is exact), given that the caller loads what
//! `reload_due` asks for first.
//!
//! Costs: `admit` O(1) (a wheel insert); `due` O(1) per entry amortised plus the sort of
//! what comes out; a reload reads the delay log once per half horizon while far entries
//! exist. Memory: a wheel entry (40 bytes with a `u64`/`i64` value) per near entry, plus
//! the ~2.9 KiB of the wheel itself.

use super::TimingWheel;

/// Where `admit` put an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// In the wheel: the caller keeps its batch in memory until it is due.
    Near,
    /// Beyond the window: counted only; the caller keeps nothing (it is on disk).
    Far,
}

/// The delayed entries of one partition.
///
/// Lifecycle: built when the partition's delay log is opened (at start-up, or at its first
/// delayed produce), lives as long as that log. Concurrency: owned by the partition's
/// shard; every method returns without waiting. Time only moves forward: an older now is
/// taken as the last one.
pub struct DeliverySchedule<T> {
    wheel: TimingWheel<T>,
    /// Every pending entry due before this is in the wheel.
    window_end_ms: i64,
    horizon_ms: i64,
    /// Pending entries due at or after `window_end_ms`, not in memory.
    far: usize,
}

impl<T: Ord + Copy> DeliverySchedule<T> {
    /// An empty schedule at `now_ms` whose window reaches `horizon_ms` ahead.
    pub fn new(now_ms: i64, horizon_ms: i64) -> Self {
        assert!(now_ms >= 0);
        assert!(horizon_ms >= 2);
        DeliverySchedule {
            wheel: TimingWheel::new(now_ms as u64),
            window_end_ms: now_ms + horizon_ms,
            horizon_ms,
            far: 0,
        }
    }

    /// Takes a pending entry due at `due_ms` (any time, past ones are due at once).
    pub fn admit(&mut self, due_ms: i64, value: T) -> Placement {
        if due_ms < self.window_end_ms {
            self.wheel.insert(due_ms.max(0) as u64, value);
            Placement::Near
        } else {
            self.far += 1;
            Placement::Far
        }
    }

    /// The range of due times `[from, to)` the caller must read from disk and hand to
    /// `loaded` before the next `due` at `now_ms`; None when no load is needed.
    pub fn reload_due(&self, now_ms: i64) -> Option<(i64, i64)> {
        let to = now_ms.saturating_add(self.horizon_ms);
        let moves = now_ms.saturating_add(self.horizon_ms / 2) >= self.window_end_ms;
        (self.far > 0 && moves && to > self.window_end_ms).then_some((self.window_end_ms, to))
    }

    /// The entries the caller read from disk for the range `reload_due` gave (every pending
    /// entry due in it, none other): they join the wheel and the window ends at `to`.
    pub fn loaded(&mut self, (from, to): (i64, i64), entries: impl IntoIterator<Item = (i64, T)>) {
        assert_eq!(from, self.window_end_ms, "a load continues the window");
        assert!(to > from);
        for (due_ms, value) in entries {
            assert!((from..to).contains(&due_ms), "a loaded entry is due inside its range");
            assert!(self.far > 0, "only far entries are loaded");
            self.far -= 1;
            self.wheel.insert(due_ms as u64, value);
        }
        self.window_end_ms = to;
    }

    /// Moves to `now_ms` and appends every entry due at or before it to `out`, sorted by
    /// due time then value. With nothing far, the window follows now without a load.
    pub fn due(&mut self, now_ms: i64, out: &mut Vec<(i64, T)>) {
        debug_assert!(self.reload_due(now_ms).is_none(), "load before taking what is due");
        let now = (now_ms.max(0) as u64).max(self.wheel.current_tick());
        let start = out.len();
        self.wheel.advance(now, |deadline, value| out.push((deadline as i64, value)));
        out[start..].sort_unstable();
        if self.far == 0 {
            self.window_end_ms = self.window_end_ms.max(now_ms.saturating_add(self.horizon_ms));
        }
    }

    /// When the caller should next call `due` (or load): the wheel's next deadline (at or
    /// before its earliest entry), or the moment the window must move.
    pub fn next_wake_ms(&self) -> Option<i64> {
        let wheel = self.wheel.next_deadline().map(|tick| tick.min(i64::MAX as u64) as i64);
        let reload = (self.far > 0).then(|| self.window_end_ms - self.horizon_ms / 2);
        match (wheel, reload) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Pending entries, near and far.
    pub fn pending(&self) -> usize {
        self.wheel.len() + self.far
    }

    /// Pending entries in memory.
    pub fn near(&self) -> usize {
        self.wheel.len()
    }

    /// Where the window ends (entries due from here on are far).
    pub fn window_end_ms(&self) -> i64 {
        self.window_end_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small deterministic generator (xorshift), so that a failure replays by its seed.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n.max(1)
        }
    }

    #[test]
    fn near_entries_come_out_in_due_then_admission_order_never_early() {
        let mut schedule = DeliverySchedule::new(1_000, 100);
        assert_eq!(schedule.admit(1_050, 3u64), Placement::Near);
        assert_eq!(schedule.admit(1_010, 2), Placement::Near);
        assert_eq!(schedule.admit(1_050, 1), Placement::Near);
        assert_eq!(schedule.admit(500, 9), Placement::Near); // overdue: due at once
        let mut out = Vec::new();
        schedule.due(1_009, &mut out);
        assert_eq!(out, [(500, 9)]);
        out.clear();
        schedule.due(1_049, &mut out);
        assert_eq!(out, [(1_010, 2)]);
        out.clear();
        schedule.due(1_050, &mut out);
        assert_eq!(out, [(1_050, 1), (1_050, 3)]);
        assert_eq!(schedule.pending(), 0);
    }

    #[test]
    fn far_entries_wait_on_disk_until_the_window_reaches_them() {
        let mut schedule = DeliverySchedule::new(0, 1_000);
        assert_eq!(schedule.admit(5_000, 1u64), Placement::Far);
        assert_eq!((schedule.pending(), schedule.near()), (1, 0));
        assert_eq!(schedule.reload_due(0), None);
        assert_eq!(schedule.next_wake_ms(), Some(500));
        assert_eq!(schedule.reload_due(500), Some((1_000, 1_500)));
        schedule.loaded((1_000, 1_500), []);
        assert_eq!(schedule.reload_due(4_600), Some((1_500, 5_600)));
        schedule.loaded((1_500, 5_600), [(5_000, 1)]);
        assert_eq!((schedule.pending(), schedule.near()), (1, 1));
        let mut out = Vec::new();
        schedule.due(4_999, &mut out);
        assert!(out.is_empty());
        schedule.due(5_000, &mut out);
        assert_eq!(out, [(5_000, 1)]);
    }

    /// The schedule against a model: a list of every admitted entry, and a "disk" from which
    /// the driver loads what `reload_due` asks for. Random admissions (overdue, near, far,
    /// beyond several horizons), random steps of time (small ticks, jumps past the horizon:
    /// downtime), always the driver's order (load, then due). Checks: every entry comes out
    /// exactly once, at the first `due` whose now reaches it, in due-then-admission order;
    /// memory holds only entries inside the window. Replay a failure with its seed.
    #[test]
    fn schedule_matches_a_model() {
        let seeds = std::env::var("SPATE_SCHEDULE_SEED")
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .map_or_else(|| (1..=200).collect::<Vec<u64>>(), |seed| vec![seed]);
        for seed in seeds {
            run_model(seed);
        }
    }

    fn run_model(seed: u64) {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let horizon = 1 + rng.below(500) as i64 * 2 + 2;
        let mut now: i64 = 1_000 + rng.below(10_000) as i64;
        let mut schedule: DeliverySchedule<u64> = DeliverySchedule::new(now, horizon);
        // (due, id, delivered, in memory)
        let mut model: Vec<(i64, u64, bool, bool)> = Vec::new();
        let mut next_id = 0u64;
        let mut out = Vec::new();
        for step in 0..2_000 {
            match rng.below(10) {
                0..=4 => {
                    let due = match rng.below(5) {
                        0 => now - rng.below(50) as i64,
                        1 => now + rng.below(horizon as u64) as i64,
                        2 => now + rng.below(5 * horizon as u64) as i64,
                        3 => now + rng.below(20) as i64,
                        _ => now + rng.below(100 * horizon as u64) as i64,
                    };
                    let placement = schedule.admit(due, next_id);
                    model.push((due, next_id, false, placement == Placement::Near));
                    next_id += 1;
                }
                _ => {
                    now += match rng.below(8) {
                        0 => 0,
                        1 => 3 * horizon + rng.below(10 * horizon as u64) as i64,
                        _ => rng.below(horizon as u64 / 2 + 1) as i64,
                    };
                }
            }
            while let Some((from, to)) = schedule.reload_due(now) {
                let loaded: Vec<(i64, u64)> = model
                    .iter_mut()
                    .filter(|(due, _, delivered, near)| !delivered && !near && *due >= from)
                    .filter(|(due, ..)| *due < to)
                    .map(|entry| {
                        entry.3 = true;
                        (entry.0, entry.1)
                    })
                    .collect();
                schedule.loaded((from, to), loaded);
            }
            out.clear();
            schedule.due(now, &mut out);
            let mut expected: Vec<(i64, u64)> = model
                .iter()
                .filter(|(due, _, delivered, _)| !delivered && *due <= now)
                .map(|(due, id, ..)| (*due, *id))
                .collect();
            expected.sort_unstable();
            assert_eq!(out, expected, "seed {seed} step {step} now {now}");
            for (_, id) in &out {
                model[*id as usize].2 = true;
            }
            let pending = model.iter().filter(|(_, _, delivered, _)| !delivered).count();
            assert_eq!(schedule.pending(), pending, "seed {seed} step {step}");
            let window_end = schedule.window_end_ms();
            for (due, id, delivered, near) in &model {
                if !delivered {
                    assert_eq!(*near, *due < window_end, "seed {seed} step {step} entry {id}");
                }
            }
            assert!(window_end <= now + horizon.max(1) * 2, "seed {seed}: the window is bounded");
        }
    }
}
