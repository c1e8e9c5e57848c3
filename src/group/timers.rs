//! Keyed deadlines for the group state machine: `schedule(key, deadline, op)` replaces any
//! deadline the key had, `cancel(key)` drops it, `expired(now)` hands back every due
//! operation in deadline order. This mirrors the keyed timer Kafka's group coordinator uses
//! (`timer.schedule(key, ...)`), so the state machine reads like Kafka's.
//!
//! Pure: time is an argument. One periodic task per shard calls `expired(now)` (every
//! `GROUP_TICK_MS`); when the shard's timing wheel is wired in, this is the one piece to swap.
//! Costs: schedule and cancel O(log n), expiry O(log n) per due operation.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

pub struct Timers<K, Op> {
    by_deadline: BTreeMap<(i64, u64), K>,
    by_key: HashMap<K, (i64, u64, Op)>,
    next_seq: u64,
}

impl<K: Clone + Eq + Hash, Op> Default for Timers<K, Op> {
    fn default() -> Self {
        Timers { by_deadline: BTreeMap::new(), by_key: HashMap::new(), next_seq: 0 }
    }
}

impl<K: Clone + Eq + Hash, Op> Timers<K, Op> {
    pub fn schedule(&mut self, key: K, deadline_ms: i64, op: Op) {
        self.cancel(&key);
        let seq = self.next_seq;
        self.next_seq += 1;
        self.by_deadline.insert((deadline_ms, seq), key.clone());
        self.by_key.insert(key, (deadline_ms, seq, op));
    }

    pub fn cancel(&mut self, key: &K) {
        if let Some((deadline, seq, _)) = self.by_key.remove(key) {
            self.by_deadline.remove(&(deadline, seq));
        }
    }

    pub fn deadline(&self, key: &K) -> Option<i64> {
        self.by_key.get(key).map(|(deadline, _, _)| *deadline)
    }

    /// Removes and returns the earliest operation due at `now_ms`, if any. Callers loop, so
    /// an operation may schedule new (even already due) deadlines while expiring.
    pub fn pop_expired(&mut self, now_ms: i64) -> Option<Op> {
        let (&(deadline, seq), _) = self.by_deadline.first_key_value()?;
        if deadline > now_ms {
            return None;
        }
        let key = self.by_deadline.remove(&(deadline, seq))?;
        let (_, stored_seq, op) = self.by_key.remove(&key)?;
        debug_assert_eq!(stored_seq, seq);
        Some(op)
    }

    /// A mark for `pop_expired_scheduled_before`: operations scheduled from now on are after it.
    pub fn mark(&self) -> u64 {
        self.next_seq
    }

    /// Like `pop_expired`, but only operations scheduled before `mark` (from `mark()`): an
    /// operation that keeps rescheduling itself at a deadline already due (a zero or negative
    /// timeout from a client) waits for the next call instead of looping forever.
    pub fn pop_expired_scheduled_before(&mut self, now_ms: i64, mark: u64) -> Option<Op> {
        let (&(deadline, seq), _) = self
            .by_deadline
            .iter()
            .find(|((deadline, seq), _)| *deadline > now_ms || *seq < mark)?;
        if deadline > now_ms {
            return None;
        }
        let key = self.by_deadline.remove(&(deadline, seq))?;
        let (_, stored_seq, op) = self.by_key.remove(&key)?;
        debug_assert_eq!(stored_seq, seq);
        Some(op)
    }

    pub fn len(&self) -> usize {
        debug_assert_eq!(self.by_key.len(), self.by_deadline.len());
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
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
}
