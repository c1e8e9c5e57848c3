//! Which logs the retention pass visits: those written or reconfigured since the last pass,
//! and those whose next deadline has come. Pure: no I/O, no clock of its own.
//!
//! A pass used to visit every log every 5 s; with 100,000 partitions that is 100,000 borrows
//! and config clones per shard per pass for logs that mostly have nothing to do. Between two
//! writes, a log's retention work can only come from time: its oldest sealed segment expiring,
//! its active segment expiring or ageing past `segment.ms` (a roll), an idle producer id
//! expiring. The log computes the earliest of those (`log::retention_due`) after each visit
//! and the schedule keeps it; a write, a config change or an open marks the log for the next
//! pass whatever its deadline. Size-based retention only changes with a write.
//!
//! Deadlines sit in a binary heap with lazy removal: a log rescheduled or forgotten leaves its
//! old entry behind, and an entry counts only while it matches the log's current deadline.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};

use crate::model::TopicPartition;

#[derive(Debug, Default)]
pub struct RetentionSchedule {
    /// Logs to visit in the next pass whatever their deadline.
    marked: HashSet<TopicPartition>,
    /// Each scheduled log's current deadline (ms since the epoch).
    deadlines: HashMap<TopicPartition, i64>,
    heap: BinaryHeap<Reverse<(i64, TopicPartition)>>,
}

impl RetentionSchedule {
    /// The log was written, reconfigured or opened: visit it in the next pass.
    pub fn mark(&mut self, tp: &TopicPartition) {
        if !self.marked.contains(tp) {
            self.marked.insert(tp.clone());
        }
    }

    /// After a visit: the log's next deadline, or None when only a write can give it work.
    pub fn schedule(&mut self, tp: TopicPartition, due_ms: Option<i64>) {
        match due_ms {
            None => {
                self.deadlines.remove(&tp);
            }
            Some(due) => {
                if self.deadlines.insert(tp.clone(), due) != Some(due) {
                    self.heap.push(Reverse((due, tp)));
                }
            }
        }
        // Stale entries never outnumber live ones by much: rebuild when they would.
        if self.heap.len() > 2 * self.deadlines.len() + 64 {
            self.heap =
                self.deadlines.iter().map(|(tp, due)| Reverse((*due, tp.clone()))).collect();
        }
    }

    /// The log is gone (topic deleted, partitions removed).
    pub fn forget(&mut self, tp: &TopicPartition) {
        self.marked.remove(tp);
        self.deadlines.remove(tp);
    }

    /// Takes the logs a pass at `now_ms` visits: every marked one and every one whose
    /// deadline is at or before `now_ms`, each once. Their deadlines are cleared; the pass
    /// schedules each again after its visit.
    pub fn take_due(&mut self, now_ms: i64) -> Vec<TopicPartition> {
        let mut due: Vec<TopicPartition> = self.marked.drain().collect();
        for tp in &due {
            self.deadlines.remove(tp);
        }
        while let Some(Reverse((deadline, _))) = self.heap.peek() {
            if *deadline > now_ms {
                break;
            }
            let Some(Reverse((deadline, tp))) = self.heap.pop() else { break };
            if self.deadlines.get(&tp) == Some(&deadline) {
                self.deadlines.remove(&tp);
                due.push(tp);
            }
        }
        due
    }

    /// Logs with a deadline (for tests and the shard's stats).
    pub fn scheduled(&self) -> usize {
        self.deadlines.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{test_seed, TestRng};

    fn tp(partition: i32) -> TopicPartition {
        TopicPartition::new("t".into(), partition)
    }

    #[test]
    fn marked_logs_come_once_and_deadlines_when_due() {
        let mut schedule = RetentionSchedule::default();
        schedule.mark(&tp(1));
        schedule.mark(&tp(1));
        schedule.schedule(tp(2), Some(100));
        schedule.schedule(tp(3), Some(50));
        schedule.schedule(tp(4), None);
        assert_eq!(schedule.take_due(10), vec![tp(1)]);
        assert_eq!(schedule.take_due(10), vec![]);
        assert_eq!(schedule.take_due(50), vec![tp(3)]);
        // Rescheduled later: the old entry no longer counts.
        schedule.schedule(tp(2), Some(300));
        assert_eq!(schedule.take_due(200), vec![]);
        // A marked log with a deadline comes once, and its deadline is cleared.
        schedule.mark(&tp(2));
        assert_eq!(schedule.take_due(1000), vec![tp(2)]);
        assert_eq!(schedule.take_due(1000), vec![]);
        schedule.schedule(tp(5), Some(7));
        schedule.forget(&tp(5));
        assert_eq!(schedule.take_due(1000), vec![]);
    }

    /// Against a model that keeps every log's state in a map and scans it: the same logs come
    /// due at the same passes, over random marks, reschedules and forgets.
    #[test]
    fn matches_a_full_scan() {
        let mut rng = TestRng::new(test_seed("retention_schedule_matches_a_full_scan"));
        let mut schedule = RetentionSchedule::default();
        let mut marked: HashSet<i32> = HashSet::new();
        let mut deadlines: HashMap<i32, i64> = HashMap::new();
        let mut now = 0i64;
        for _ in 0..20_000 {
            let partition = (rng.below(50)) as i32;
            match rng.below(5) {
                0 => {
                    schedule.mark(&tp(partition));
                    marked.insert(partition);
                }
                1 | 2 => {
                    let due = (rng.below(3) != 0).then(|| now + (rng.below(100)) as i64);
                    schedule.schedule(tp(partition), due);
                    match due {
                        Some(due) => deadlines.insert(partition, due),
                        None => deadlines.remove(&partition),
                    };
                }
                3 => {
                    schedule.forget(&tp(partition));
                    marked.remove(&partition);
                    deadlines.remove(&partition);
                }
                _ => {
                    now += (rng.below(30)) as i64;
                    let mut got: Vec<i32> =
                        schedule.take_due(now).into_iter().map(|tp| tp.partition).collect();
                    got.sort_unstable();
                    let mut want: Vec<i32> = marked.drain().collect();
                    want.extend(deadlines.iter().filter(|(_, d)| **d <= now).map(|(p, _)| *p));
                    want.sort_unstable();
                    want.dedup();
                    for p in &want {
                        deadlines.remove(p);
                    }
                    assert_eq!(got, want, "at {now}");
                }
            }
            assert!(schedule.heap.len() <= 2 * schedule.deadlines.len() + 65);
        }
    }
}
