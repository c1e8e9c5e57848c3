//! Keyed deadlines for the group state machine: `schedule(key, deadline, op)` replaces any
//! deadline the key had, `cancel(key)` drops it, `pop_expired(now)` hands back every due
//! operation in deadline order. This mirrors the keyed timer Kafka's group coordinator uses
//! (`timer.schedule(key, ...)`), so the state machine reads like Kafka's.
//!
//! Pure: time (milliseconds) is an argument. Deadlines sit on the shard-style hierarchical
//! timing wheel (`crate::wheel`, one tick per millisecond): schedule and cancel are O(1),
//! expiry O(1) amortised per due operation and nothing per empty millisecond; a key map finds
//! a key's timer. The coordinator's one task sleeps until `next_deadline()`.
//!
//! The clock may step backwards (wall time); the wheel never does: an earlier `now` than the
//! wheel's current tick expires nothing new.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

use crate::wheel::{TimerHandle, TimingWheel};

pub struct Timers<K, Op> {
    wheel: TimingWheel<K>,
    by_key: HashMap<K, (TimerHandle, u64, Op)>,
    /// Expired from the wheel and not popped yet, in deadline order: (deadline, key,
    /// scheduling sequence number, operation).
    due: VecDeque<(i64, K, u64, Op)>,
    next_seq: u64,
}

impl<K: Clone + Eq + Hash, Op> Default for Timers<K, Op> {
    fn default() -> Self {
        Timers {
            wheel: TimingWheel::new(0),
            by_key: HashMap::new(),
            due: VecDeque::new(),
            next_seq: 0,
        }
    }
}

/// Milliseconds to wheel ticks; deadlines before the epoch are simply due.
fn tick(ms: i64) -> u64 {
    ms.max(0) as u64
}

impl<K: Clone + Eq + Hash, Op> Timers<K, Op> {
    pub fn schedule(&mut self, key: K, deadline_ms: i64, op: Op) {
        self.cancel(&key);
        let seq = self.next_seq;
        self.next_seq += 1;
        let handle = self.wheel.insert(tick(deadline_ms), key.clone());
        self.by_key.insert(key, (handle, seq, op));
    }

    pub fn cancel(&mut self, key: &K) {
        match self.by_key.remove(key) {
            Some((handle, _, _)) => {
                self.wheel.cancel(handle);
            }
            None if !self.due.is_empty() => self.due.retain(|(_, due_key, _, _)| due_key != key),
            None => {}
        }
    }

    pub fn deadline(&self, key: &K) -> Option<i64> {
        match self.by_key.get(key) {
            Some((handle, _, _)) => self.wheel.deadline(*handle).map(|tick| tick as i64),
            None => self.due.iter().find(|due| &due.1 == key).map(|due| due.0),
        }
    }

    /// Removes and returns the earliest operation due at `now_ms`, if any. Callers loop, so
    /// an operation may schedule new (even already due) deadlines while expiring.
    pub fn pop_expired(&mut self, now_ms: i64) -> Option<Op> {
        self.pop_expired_scheduled_before(now_ms, u64::MAX)
    }

    /// A mark for `pop_expired_scheduled_before`: operations scheduled from now on are after
    /// it.
    pub fn mark(&self) -> u64 {
        self.next_seq
    }

    /// Like `pop_expired`, but only operations scheduled before `mark` (from `mark()`): an
    /// operation that keeps rescheduling itself at a deadline already due (a zero or negative
    /// timeout from a client) waits for the next call instead of looping forever.
    pub fn pop_expired_scheduled_before(&mut self, now_ms: i64, mark: u64) -> Option<Op> {
        let eligible = |due: &VecDeque<(i64, K, u64, Op)>| due.iter().position(|d| d.2 < mark);
        let at = match eligible(&self.due) {
            Some(at) => at,
            None => {
                self.advance(now_ms);
                eligible(&self.due)?
            }
        };
        self.due.remove(at).map(|(_, _, _, op)| op)
    }

    /// Moves what the wheel holds due at `now_ms` to `due`, in deadline order (one advance can
    /// cross many milliseconds).
    fn advance(&mut self, now_ms: i64) {
        let now = tick(now_ms).max(self.wheel.current_tick());
        let mut expired = Vec::new();
        self.wheel.advance(now, |deadline, key| expired.push((deadline as i64, key)));
        let mut moved: Vec<(i64, K, u64, Op)> = expired
            .into_iter()
            .filter_map(|(deadline, key)| {
                let (_, seq, op) = self.by_key.remove(&key)?;
                Some((deadline, key, seq, op))
            })
            .collect();
        moved.sort_by_key(|due| (due.0, due.2));
        self.due.extend(moved);
    }

    /// The earliest deadline, in milliseconds; at most a tick late for far deadlines (see
    /// `TimingWheel::next_deadline`), so a sleeper wakes early rather than late.
    pub fn next_deadline(&self) -> Option<i64> {
        if !self.due.is_empty() {
            return Some(self.wheel.current_tick() as i64);
        }
        self.wheel.next_deadline().map(|tick| tick as i64)
    }

    pub fn len(&self) -> usize {
        debug_assert_eq!(self.by_key.len(), self.wheel.len());
        self.by_key.len() + self.due.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(timers: &mut Timers<&'static str, u32>, now: i64) -> Vec<u32> {
        std::iter::from_fn(|| timers.pop_expired(now)).collect()
    }

    #[test]
    fn due_operations_come_out_in_deadline_order() {
        let mut timers = Timers::default();
        timers.schedule("c", 30, 3);
        timers.schedule("a", 10, 1);
        timers.schedule("b", 20, 2);
        assert_eq!(drain(&mut timers, 5), Vec::<u32>::new());
        assert_eq!(drain(&mut timers, 20), vec![1, 2]);
        assert_eq!(timers.len(), 1);
        assert_eq!(drain(&mut timers, 100), vec![3]);
        assert!(timers.is_empty());
    }

    #[test]
    fn rescheduling_a_key_replaces_its_deadline_and_operation() {
        let mut timers = Timers::default();
        timers.schedule("hb", 10, 1);
        timers.schedule("hb", 50, 2);
        assert_eq!(timers.deadline(&"hb"), Some(50));
        assert_eq!(drain(&mut timers, 49), Vec::<u32>::new());
        assert_eq!(drain(&mut timers, 50), vec![2]);
    }

    #[test]
    fn cancel_forgets_the_key() {
        let mut timers = Timers::default();
        timers.schedule("a", 10, 1);
        timers.schedule("b", 10, 2);
        timers.cancel(&"a");
        timers.cancel(&"missing");
        assert_eq!(drain(&mut timers, 10), vec![2]);
        assert!(timers.is_empty());
    }

    #[test]
    fn operations_scheduled_after_the_mark_wait_for_the_next_call() {
        let mut timers = Timers::default();
        timers.schedule("a", 10, 1);
        let mark = timers.mark();
        timers.schedule("b", 5, 2);
        timers.schedule("c", 10, 3);
        assert_eq!(timers.pop_expired_scheduled_before(10, mark), Some(1));
        assert_eq!(timers.pop_expired_scheduled_before(10, mark), None);
        let mark = timers.mark();
        assert_eq!(timers.pop_expired_scheduled_before(10, mark), Some(2));
        assert_eq!(timers.pop_expired_scheduled_before(10, mark), Some(3));
        assert!(timers.is_empty());
    }

    #[test]
    fn far_deadlines_and_wall_clock_epochs_expire_exactly_on_time() {
        // Deadlines are wall-clock milliseconds: the first advance jumps from 0 to now.
        let now = 1_795_512_582_307_i64;
        let mut timers = Timers::default();
        timers.schedule("session", now + 45_000, 1);
        timers.schedule("join", now + 3_000, 2);
        assert_eq!(drain(&mut timers, now), Vec::<u32>::new());
        assert_eq!(timers.next_deadline().map(|d| d <= now + 3_000), Some(true));
        assert_eq!(drain(&mut timers, now + 2_999), Vec::<u32>::new());
        assert_eq!(drain(&mut timers, now + 3_000), vec![2]);
        assert_eq!(drain(&mut timers, now + 44_999), Vec::<u32>::new());
        assert_eq!(drain(&mut timers, now + 45_000), vec![1]);
        assert_eq!(timers.next_deadline(), None);
    }

    #[test]
    fn a_clock_that_steps_back_expires_nothing_new() {
        let mut timers = Timers::default();
        timers.schedule("a", 100, 1);
        assert_eq!(drain(&mut timers, 50), Vec::<u32>::new());
        timers.schedule("b", 60, 2);
        assert_eq!(drain(&mut timers, 40), Vec::<u32>::new());
        assert_eq!(drain(&mut timers, 60), vec![2]);
    }

    #[test]
    fn an_expiring_operation_may_cancel_or_reschedule_one_that_is_also_due() {
        let mut timers = Timers::default();
        timers.schedule("a", 10, 1);
        timers.schedule("b", 11, 2);
        timers.schedule("c", 12, 3);
        assert_eq!(timers.pop_expired(20), Some(1));
        // While handling "a", the state machine cancels "b" and moves "c" later.
        timers.cancel(&"b");
        timers.schedule("c", 30, 4);
        assert_eq!(timers.deadline(&"c"), Some(30));
        assert_eq!(timers.pop_expired(20), None);
        assert_eq!(drain(&mut timers, 30), vec![4]);
    }

    /// Against a reference model (an ordered list), random schedules, cancels and clock moves
    /// (forwards, far forwards, backwards) give the same operations at the same time.
    #[test]
    fn matches_a_reference_model() {
        let seed = crate::model::test_seed("matches_a_reference_model");
        let mut rng = crate::model::TestRng::new(seed);
        let mut random = move |bound: u64| rng.below(bound);
        let mut timers: Timers<u64, u64> = Timers::default();
        let mut model: Vec<(i64, u64, u64, u64)> = Vec::new(); // deadline, order, key, op
        let (mut now, mut order, mut op) = (1_000_i64, 0_u64, 0_u64);
        let mut high_water = now;
        for _ in 0..20_000 {
            match random(10) {
                0..=4 => {
                    let key = random(64);
                    let deadline = now + random(5_000) as i64 - 10;
                    op += 1;
                    order += 1;
                    timers.schedule(key, deadline, op);
                    model.retain(|entry| entry.2 != key);
                    model.push((deadline, order, key, op));
                }
                5 => {
                    let key = random(64);
                    timers.cancel(&key);
                    model.retain(|entry| entry.2 != key);
                }
                6 => now -= random(100) as i64,
                7 => now += random(100_000) as i64,
                _ => now += random(50) as i64,
            }
            high_water = high_water.max(now);
            let mut got = Vec::new();
            while let Some(op) = timers.pop_expired(now) {
                got.push(op);
            }
            // The wheel never goes back: what is due is due at the highest time seen.
            let mut due: Vec<_> = model.iter().filter(|e| e.0 <= high_water).cloned().collect();
            due.sort_by_key(|e| (e.0, e.1));
            model.retain(|e| e.0 > high_water);
            let want: Vec<u64> = due.iter().map(|e| e.3).collect();
            let mut got_sorted = got.clone();
            got_sorted.sort_unstable();
            let mut want_sorted = want.clone();
            want_sorted.sort_unstable();
            assert_eq!(got_sorted, want_sorted, "seed {seed}");
            assert_eq!(timers.len(), model.len(), "seed {seed}");
        }
    }
}
