//! # Purgatory: operations that wait for a condition or a deadline
//!
//! A Fetch long-poll waiting for `min_bytes`, a Produce with acks=all waiting for a flush or
//! for replicas, a group waiting out a session timeout: each is an operation that completes
//! early when its condition holds and otherwise times out. The purgatory holds them on one
//! shard, with no locks, no threads and no I/O: it only decides *which* operations complete.
//! The caller gets them back and does the answering.
//!
//! ```text
//!   watch(op, keys, deadline) ──> op slab ──────> one timer in the shard's TimingWheel
//!                                   │
//!                                   └─ one watch per key, linked into that key's list:
//!
//!   watch_lists: HashMap<K, WatchList>
//!     "orders-0"  head ─> [op 3] <─> [op 7] <─> [op 9] <─ tail     (watch order, FIFO)
//!     "orders-1"  head ─> [op 7] <─ tail
//!                           │
//!                           └─ op 7's watches are also chained to each other, so completing
//!                              op 7 through either key unlinks it from both in O(keys)
//!
//!   check(key, condition)   walks the key's list; every op whose condition holds completes
//!   advance(now_tick)       every op whose deadline has come completes with a timeout
//!   cancel(id)              the op completes as cancelled
//! ```
//!
//! Each operation completes exactly once: whichever of `check`, `advance` or `cancel` comes
//! first removes it from every key's list, from the wheel and from the slab before handing it
//! back, and bumps the slot's generation so that its `OpId` never matches again. Because the
//! shard is one thread, there is no race between the check and the watch as in Kafka's
//! `tryCompleteElseWatch`: the caller tries the condition once, and watches only if it fails;
//! nothing can change in between.
//!
//! ## Costs
//!
//! `watch` is O(keys) (one hash lookup per key, one key clone per key that nobody watched yet);
//! completing an op by any path is O(its keys) with a hash lookup only where its watch was at
//! the head or tail of a list; `check(key)` is O(ops watching that key); `advance` is the
//! wheel's cost plus O(keys) per expired op; `cancel` is O(keys). A key's list is removed from
//! the map as soon as it empties, so memory is exactly: per op one `OpSlot<Op>` and one 32-byte
//! wheel entry; per watched key of an op one `Watch<K>`; per distinct watched key one map
//! entry. The slabs reuse freed slots and never shrink.

use crate::wheel::{TimerHandle, TimingWheel};
use std::collections::HashMap;
use std::hash::Hash;

/// Most operations one purgatory holds: op indices are `u32` and `u32::MAX` means "none".
pub const OPS_MAX: usize = NIL as usize;

/// Most (operation, key) watches one purgatory holds, for the same reason.
pub const WATCHES_MAX: usize = NIL as usize;

/// Identifies one waiting operation. Goes stale once the operation completes, and a stale id
/// never matches a later operation (unless one slot is reused 2^32 times while it is held).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct OpId {
    index: u32,
    generation: u32,
}

/// Operations of type `Op` waiting on keys of type `K` (a topic-partition, a group id) and on
/// a deadline tick.
///
/// Lifecycle: created by the shard at start-up with the current tick; operations enter through
/// `watch` and leave exactly once through `check`, `advance` or `cancel`. Concurrency: owned by
/// one shard and never shared; no method waits. The shard drives `advance` from the single
/// timer it sleeps on (`next_deadline`), and calls `check(key)` whenever something a key's
/// waiters care about changes (data appended, high watermark moved, a member joined).
pub struct Purgatory<K, Op> {
    ops: Vec<OpSlot<Op>>,
    ops_vacant_head: u32,
    ops_len: usize,
    watches: WatchSlab<K>,
    watch_lists: HashMap<K, WatchList>,
    /// Each waiting op has one timer carrying its slab index.
    wheel: TimingWheel<u32>,
    /// Reused by `advance` to collect expired op indices without allocating.
    expired_scratch: Vec<u32>,
}

/// One slot of the op slab.
struct OpSlot<Op> {
    generation: u32,
    waiting: Option<WaitingOp<Op>>,
    /// Next vacant slot while this one is vacant.
    next_vacant: u32,
}

struct WaitingOp<Op> {
    op: Op,
    timer: TimerHandle,
    /// First of this op's watches; the rest follow through `Watch::op_next`.
    watch_head: u32,
}

/// The slab of watches: one per (op, key) pair.
struct WatchSlab<K> {
    nodes: Vec<Watch<K>>,
    vacant_head: u32,
}

/// One op watching one key: a node in the key's list and in the op's chain.
struct Watch<K> {
    /// The watched key, `None` while vacant. Kept here to find the key's list on removal.
    key: Option<K>,
    op_index: u32,
    key_prev: u32,
    /// Next watch of the same key, or the next vacant node while vacant.
    key_next: u32,
    /// Next watch of the same op.
    op_next: u32,
}

/// Ends of one key's list of watches, oldest first.
#[derive(Clone, Copy)]
struct WatchList {
    head: u32,
    tail: u32,
}

/// How an op leaves: its timer already fired, or it must still be taken off the wheel.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Timer {
    Fired,
    Pending,
}

const NIL: u32 = u32::MAX;

impl<K: Hash + Eq + Clone, Op> Purgatory<K, Op> {
    /// An empty purgatory whose current tick is `start_tick`.
    pub fn new(start_tick: u64) -> Self {
        Self::with_capacity(start_tick, 0)
    }

    /// An empty purgatory with room for `ops_capacity` operations (and as many timers and
    /// watches) before its slabs grow, so that a shard can size it once at start-up.
    pub fn with_capacity(start_tick: u64, ops_capacity: usize) -> Self {
        assert!(ops_capacity <= OPS_MAX);
        Self {
            ops: Vec::with_capacity(ops_capacity),
            ops_vacant_head: NIL,
            ops_len: 0,
            watches: WatchSlab { nodes: Vec::with_capacity(ops_capacity), vacant_head: NIL },
            watch_lists: HashMap::with_capacity(ops_capacity),
            wheel: TimingWheel::with_capacity(start_tick, ops_capacity),
            expired_scratch: Vec::new(),
        }
    }

    /// Waiting operations.
    pub fn len(&self) -> usize {
        self.ops_len
    }

    /// True when no operation is waiting.
    pub fn is_empty(&self) -> bool {
        self.ops_len == 0
    }

    /// Distinct keys that at least one operation watches.
    pub fn watched_keys_len(&self) -> usize {
        self.watch_lists.len()
    }

    /// The tick of the last `advance`, or the start tick.
    pub fn current_tick(&self) -> u64 {
        self.wheel.current_tick()
    }

    /// When the shard should next call `advance`; see [`TimingWheel::next_deadline`].
    pub fn next_deadline(&self) -> Option<u64> {
        self.wheel.next_deadline()
    }

    /// Parks `op` until a `check` of one of `keys` finds its condition true, or until
    /// `deadline_tick`, whichever comes first. A key listed twice is watched once. An op with
    /// no keys completes only by deadline or `cancel`. A deadline at or before the current
    /// tick expires on the next `advance`.
    pub fn watch(&mut self, op: Op, keys: impl IntoIterator<Item = K>, deadline_tick: u64) -> OpId {
        let index = self.allocate_op();
        let timer = self.wheel.insert(deadline_tick, index);
        let mut watch_head = NIL;
        for key in keys {
            let watch = match self.watch_lists.get_mut(&key) {
                Some(list) => {
                    // This op's watches are appended one after another, so if it already
                    // watches this key, that watch is the list's tail.
                    if self.watches.nodes[list.tail as usize].op_index == index {
                        continue;
                    }
                    let watch = self.watches.allocate(key, index, watch_head);
                    self.watches.nodes[list.tail as usize].key_next = watch;
                    self.watches.nodes[watch as usize].key_prev = list.tail;
                    list.tail = watch;
                    watch
                }
                None => {
                    let key_copy = key.clone();
                    let watch = self.watches.allocate(key, index, watch_head);
                    let list = WatchList { head: watch, tail: watch };
                    self.watch_lists.insert(key_copy, list);
                    watch
                }
            };
            watch_head = watch;
        }
        let slot = &mut self.ops[index as usize];
        assert!(slot.waiting.is_none());
        slot.waiting = Some(WaitingOp { op, timer, watch_head });
        self.ops_len += 1;
        OpId { index, generation: slot.generation }
    }

    /// Offers every op watching `key`, oldest first, to `condition`; each op for which it
    /// returns true completes: it leaves all its keys and the wheel and is appended to
    /// `completed`. `condition` may update the op (e.g. count the bytes seen so far). Returns
    /// how many completed.
    pub fn check(
        &mut self,
        key: &K,
        mut condition: impl FnMut(&mut Op) -> bool,
        completed: &mut Vec<(OpId, Op)>,
    ) -> usize {
        let Some(list) = self.watch_lists.get(key) else {
            return 0;
        };
        let mut completed_count = 0;
        let mut watch = list.head;
        while watch != NIL {
            // Completing this op frees only its own watches; the next watch of this key belongs
            // to another op (keys are never watched twice by one op), so it stays valid.
            let node = &self.watches.nodes[watch as usize];
            let (watch_next, op_index) = (node.key_next, node.op_index);
            let Some(waiting) = self.ops[op_index as usize].waiting.as_mut() else {
                panic!("a watch points at a vacant op");
            };
            if condition(&mut waiting.op) {
                completed.push(self.remove(op_index, Timer::Pending));
                completed_count += 1;
            }
            watch = watch_next;
        }
        completed_count
    }

    /// Moves the clock to `now_tick` and appends every op whose deadline has come to
    /// `expired`, removed from all its keys: the caller answers them with their timeout
    /// result. Returns how many expired. Panics if `now_tick` is before the current tick.
    pub fn advance(&mut self, now_tick: u64, expired: &mut Vec<(OpId, Op)>) -> usize {
        let mut fired = std::mem::take(&mut self.expired_scratch);
        assert!(fired.is_empty());
        self.wheel.advance(now_tick, |_, index| fired.push(index));
        for &index in &fired {
            expired.push(self.remove(index, Timer::Fired));
        }
        let expired_count = fired.len();
        assert!(self.wheel.len() == self.ops_len);
        fired.clear();
        self.expired_scratch = fired;
        expired_count
    }

    /// Completes a waiting op without its condition or deadline and returns it, or `None` if
    /// it already completed.
    pub fn cancel(&mut self, id: OpId) -> Option<Op> {
        let index = self.waiting_index(id)?;
        let (_, op) = self.remove(index, Timer::Pending);
        Some(op)
    }

    /// Moves a waiting op's deadline (e.g. a heartbeat extends a session). Returns false if it
    /// already completed.
    pub fn reschedule(&mut self, id: OpId, deadline_tick: u64) -> bool {
        let Some(index) = self.waiting_index(id) else {
            return false;
        };
        let Some(waiting) = self.ops[index as usize].waiting.as_ref() else {
            panic!("a waiting index points at a vacant op");
        };
        let rescheduled = self.wheel.reschedule(waiting.timer, deadline_tick);
        assert!(rescheduled);
        true
    }

    /// True while the op waits.
    pub fn contains(&self, id: OpId) -> bool {
        self.waiting_index(id).is_some()
    }

    /// The waiting op, or `None` if it already completed.
    pub fn get(&self, id: OpId) -> Option<&Op> {
        let index = self.waiting_index(id)?;
        self.ops[index as usize].waiting.as_ref().map(|waiting| &waiting.op)
    }

    /// The waiting op, mutably, or `None` if it already completed.
    pub fn get_mut(&mut self, id: OpId) -> Option<&mut Op> {
        let index = self.waiting_index(id)?;
        self.ops[index as usize].waiting.as_mut().map(|waiting| &mut waiting.op)
    }

    fn waiting_index(&self, id: OpId) -> Option<u32> {
        let slot = self.ops.get(id.index as usize)?;
        if slot.generation != id.generation || slot.waiting.is_none() {
            return None;
        }
        Some(id.index)
    }

    /// A vacant op slot (the slab grows if none is free); filled by `watch`.
    fn allocate_op(&mut self) -> u32 {
        if self.ops_vacant_head != NIL {
            let index = self.ops_vacant_head;
            let slot = &mut self.ops[index as usize];
            assert!(slot.waiting.is_none());
            self.ops_vacant_head = slot.next_vacant;
            slot.next_vacant = NIL;
            index
        } else {
            assert!(self.ops.len() < OPS_MAX, "purgatory is full");
            self.ops.push(OpSlot { generation: 0, waiting: None, next_vacant: NIL });
            (self.ops.len() - 1) as u32
        }
    }

    /// Completes the op at `index`: off the wheel (unless its timer fired), out of every key's
    /// list, and out of the slab with a new generation. The one exit every path goes through.
    fn remove(&mut self, index: u32, timer: Timer) -> (OpId, Op) {
        let slot = &mut self.ops[index as usize];
        let Some(waiting) = slot.waiting.take() else {
            panic!("completed an op that was not waiting");
        };
        let id = OpId { index, generation: slot.generation };
        slot.generation = slot.generation.wrapping_add(1);
        slot.next_vacant = self.ops_vacant_head;
        self.ops_vacant_head = index;
        self.ops_len -= 1;

        if timer == Timer::Pending {
            let timer_value = self.wheel.cancel(waiting.timer);
            assert!(timer_value == Some(index));
            assert!(self.wheel.len() == self.ops_len);
        }

        let mut watch = waiting.watch_head;
        while watch != NIL {
            let node = &self.watches.nodes[watch as usize];
            assert!(node.op_index == index);
            let (key_prev, key_next, op_next) = (node.key_prev, node.key_next, node.op_next);
            if key_prev != NIL {
                self.watches.nodes[key_prev as usize].key_next = key_next;
            }
            if key_next != NIL {
                self.watches.nodes[key_next as usize].key_prev = key_prev;
            }
            let key = self.watches.release(watch);
            // Only a watch at an end of its list changes the list's entry in the map.
            if key_prev == NIL && key_next == NIL {
                let list = self.watch_lists.remove(&key);
                assert!(list.is_some_and(|list| list.head == watch && list.tail == watch));
            } else if key_prev == NIL || key_next == NIL {
                let Some(list) = self.watch_lists.get_mut(&key) else {
                    panic!("a watched key has no list");
                };
                if key_prev == NIL {
                    assert!(list.head == watch);
                    list.head = key_next;
                } else {
                    assert!(list.tail == watch);
                    list.tail = key_prev;
                }
            }
            watch = op_next;
        }
        (id, waiting.op)
    }

    /// Checks every structural invariant. O(ops + watches); for tests.
    #[cfg(test)]
    fn assert_invariants(&self) {
        self.wheel.assert_invariants();
        assert_eq!(self.wheel.len(), self.ops_len);
        let mut watches_in_lists = 0;
        for (key, list) in &self.watch_lists {
            assert!(list.head != NIL);
            let mut prev = NIL;
            let mut watch = list.head;
            while watch != NIL {
                let node = &self.watches.nodes[watch as usize];
                assert!(node.key.as_ref() == Some(key));
                assert_eq!(node.key_prev, prev);
                let waiting = self.ops[node.op_index as usize].waiting.as_ref();
                assert!(waiting.is_some(), "a watch of a vacant op");
                watches_in_lists += 1;
                prev = watch;
                watch = node.key_next;
            }
            assert_eq!(list.tail, prev);
        }
        let mut watches_of_ops = 0;
        let mut waiting_count = 0;
        for (index, slot) in self.ops.iter().enumerate() {
            let Some(waiting) = slot.waiting.as_ref() else {
                continue;
            };
            waiting_count += 1;
            assert_eq!(self.wheel.get(waiting.timer), Some(&(index as u32)));
            let mut watch = waiting.watch_head;
            while watch != NIL {
                let node = &self.watches.nodes[watch as usize];
                assert_eq!(node.op_index as usize, index);
                watches_of_ops += 1;
                watch = node.op_next;
            }
        }
        assert_eq!(waiting_count, self.ops_len);
        assert_eq!(watches_in_lists, watches_of_ops);
        let mut vacant_watches = 0;
        let mut watch = self.watches.vacant_head;
        while watch != NIL {
            assert!(self.watches.nodes[watch as usize].key.is_none());
            vacant_watches += 1;
            watch = self.watches.nodes[watch as usize].key_next;
        }
        assert_eq!(watches_in_lists + vacant_watches, self.watches.nodes.len());
    }
}

impl<K> WatchSlab<K> {
    /// A watch of `key` by op `op_index`, chained in front of that op's watch `op_next`, not
    /// yet linked into the key's list.
    fn allocate(&mut self, key: K, op_index: u32, op_next: u32) -> u32 {
        let watch = Watch { key: Some(key), op_index, key_prev: NIL, key_next: NIL, op_next };
        if self.vacant_head != NIL {
            let index = self.vacant_head;
            let node = &mut self.nodes[index as usize];
            assert!(node.key.is_none());
            self.vacant_head = node.key_next;
            *node = watch;
            index
        } else {
            assert!(self.nodes.len() < WATCHES_MAX, "purgatory has too many watches");
            self.nodes.push(watch);
            (self.nodes.len() - 1) as u32
        }
    }

    /// Frees an unlinked watch and returns its key.
    fn release(&mut self, index: u32) -> K {
        let node = &mut self.nodes[index as usize];
        let Some(key) = node.key.take() else {
            panic!("released a vacant watch");
        };
        node.op_index = NIL;
        node.key_prev = NIL;
        node.op_next = NIL;
        node.key_next = self.vacant_head;
        self.vacant_head = index;
        key
    }
}

impl<K, Op> std::fmt::Debug for Purgatory<K, Op> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Purgatory")
            .field("ops_len", &self.ops_len)
            .field("watched_keys_len", &self.watch_lists.len())
            .field("wheel", &self.wheel)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use std::collections::{BTreeMap, BTreeSet};

    use crate::model::{test_seed, CaseSeed};

    /// A stand-in for a delayed fetch: completes once `bytes_needed` bytes have arrived.
    #[derive(Debug, PartialEq, Eq)]
    struct Fetch {
        serial: u64,
        bytes_needed: u32,
        bytes_seen: u32,
    }

    fn fetch(serial: u64, bytes_needed: u32) -> Fetch {
        Fetch { serial, bytes_needed, bytes_seen: 0 }
    }

    /// Offers `bytes_arrived` to every fetch watching `key`.
    fn arrive(
        purgatory: &mut Purgatory<&'static str, Fetch>,
        key: &'static str,
        bytes_arrived: u32,
    ) -> Vec<u64> {
        let mut completed = Vec::new();
        let count = purgatory.check(
            &key,
            |fetch| {
                fetch.bytes_seen += bytes_arrived;
                fetch.bytes_seen >= fetch.bytes_needed
            },
            &mut completed,
        );
        assert_eq!(count, completed.len());
        purgatory.assert_invariants();
        completed.into_iter().map(|(_, fetch)| fetch.serial).collect()
    }

    fn expire(purgatory: &mut Purgatory<&'static str, Fetch>, now_tick: u64) -> Vec<u64> {
        let mut expired = Vec::new();
        let count = purgatory.advance(now_tick, &mut expired);
        assert_eq!(count, expired.len());
        purgatory.assert_invariants();
        expired.into_iter().map(|(_, fetch)| fetch.serial).collect()
    }

    #[test]
    fn completes_when_the_condition_holds_and_not_before() {
        let mut purgatory = Purgatory::new(0);
        let id = purgatory.watch(fetch(1, 100), ["p0"], 500);
        assert_eq!(arrive(&mut purgatory, "p0", 60), Vec::<u64>::new());
        assert_eq!(purgatory.get(id).map(|fetch| fetch.bytes_seen), Some(60));
        assert_eq!(arrive(&mut purgatory, "p1", 60), Vec::<u64>::new());
        assert_eq!(arrive(&mut purgatory, "p0", 60), vec![1]);
        assert!(!purgatory.contains(id));
        assert!(purgatory.is_empty());
        assert_eq!(purgatory.watched_keys_len(), 0);
        assert_eq!(purgatory.next_deadline(), None);
        assert_eq!(expire(&mut purgatory, 1_000), Vec::<u64>::new());
    }

    #[test]
    fn an_op_watching_two_keys_completes_once_through_either() {
        for first_key in ["p0", "p1"] {
            let second_key = if first_key == "p0" { "p1" } else { "p0" };
            let mut purgatory = Purgatory::new(0);
            let id = purgatory.watch(fetch(1, 10), ["p0", "p1"], 500);
            let other = purgatory.watch(fetch(2, 1_000), ["p1"], 500);
            assert_eq!(purgatory.watched_keys_len(), 2);
            assert_eq!(arrive(&mut purgatory, first_key, 10), vec![1]);
            assert_eq!(arrive(&mut purgatory, second_key, 10), Vec::<u64>::new());
            assert_eq!(arrive(&mut purgatory, first_key, 10), Vec::<u64>::new());
            assert_eq!(purgatory.cancel(id), None);
            assert_eq!(purgatory.watched_keys_len(), 1);
            assert_eq!(expire(&mut purgatory, 500), vec![2]);
            assert_eq!(purgatory.cancel(other), None);
        }
    }

    #[test]
    fn expiry_returns_the_op_and_removes_its_watches() {
        let mut purgatory = Purgatory::new(10);
        purgatory.watch(fetch(1, 10), ["p0", "p1"], 20);
        purgatory.watch(fetch(2, 10), ["p1"], 30);
        assert_eq!(purgatory.next_deadline(), Some(20));
        assert_eq!(expire(&mut purgatory, 19), Vec::<u64>::new());
        assert_eq!(expire(&mut purgatory, 25), vec![1]);
        assert_eq!(purgatory.watched_keys_len(), 1);
        assert_eq!(arrive(&mut purgatory, "p0", 10), Vec::<u64>::new());
        assert_eq!(arrive(&mut purgatory, "p1", 10), vec![2]);
        assert_eq!(expire(&mut purgatory, 30), Vec::<u64>::new());
    }

    #[test]
    fn cancel_removes_from_keys_and_wheel_and_ids_never_match_again() {
        let mut purgatory = Purgatory::new(0);
        let id = purgatory.watch(fetch(1, 10), ["p0", "p1"], 20);
        assert_eq!(purgatory.cancel(id).map(|fetch| fetch.serial), Some(1));
        purgatory.assert_invariants();
        assert_eq!(purgatory.watched_keys_len(), 0);
        assert_eq!(purgatory.next_deadline(), None);
        assert_eq!(purgatory.cancel(id), None);
        // The slot is reused at once; the old id must not reach the new op.
        let reused = purgatory.watch(fetch(2, 10), ["p0"], 20);
        assert_eq!(reused.index, id.index);
        assert_eq!(purgatory.cancel(id), None);
        assert!(!purgatory.reschedule(id, 5));
        assert_eq!(purgatory.get(id), None);
        assert_eq!(purgatory.get_mut(id), None);
        assert!(purgatory.contains(reused));
        assert_eq!(expire(&mut purgatory, 20), vec![2]);
    }

    #[test]
    fn duplicate_keys_are_watched_once() {
        let mut purgatory = Purgatory::new(0);
        purgatory.watch(fetch(1, 10), ["p0", "p0", "p1", "p0", "p1"], 20);
        purgatory.watch(fetch(2, 10), ["p1", "p1"], 20);
        purgatory.assert_invariants();
        assert_eq!(purgatory.watches.nodes.len(), 3);
        let mut offered = 0;
        let mut completed = Vec::new();
        purgatory.check(
            &"p0",
            |_| {
                offered += 1;
                false
            },
            &mut completed,
        );
        assert_eq!(offered, 1);
        assert_eq!(arrive(&mut purgatory, "p1", 10), vec![1, 2]);
    }

    #[test]
    fn check_offers_ops_oldest_first_and_keeps_those_that_fail() {
        let mut purgatory = Purgatory::new(0);
        for serial in 0..6 {
            purgatory.watch(fetch(serial, (serial as u32 % 3 + 1) * 10), ["p0"], 100);
        }
        let mut offered = Vec::new();
        let mut completed = Vec::new();
        purgatory.check(
            &"p0",
            |fetch| {
                offered.push(fetch.serial);
                fetch.bytes_needed <= 10
            },
            &mut completed,
        );
        assert_eq!(offered, vec![0, 1, 2, 3, 4, 5]);
        let serials: Vec<u64> = completed.iter().map(|(_, fetch)| fetch.serial).collect();
        assert_eq!(serials, vec![0, 3]);
        purgatory.assert_invariants();
        assert_eq!(arrive(&mut purgatory, "p0", 20), vec![1, 4]);
        assert_eq!(arrive(&mut purgatory, "p0", 10), vec![2, 5]);
    }

    #[test]
    fn an_op_without_keys_leaves_by_deadline_or_cancel() {
        let mut purgatory = Purgatory::<&'static str, Fetch>::new(0);
        let first = purgatory.watch(fetch(1, 10), [], 10);
        let second = purgatory.watch(fetch(2, 10), [], 10);
        assert_eq!(purgatory.watched_keys_len(), 0);
        assert!(purgatory.reschedule(second, 5));
        assert_eq!(expire(&mut purgatory, 5), vec![2]);
        assert!(purgatory.get_mut(first).is_some());
        assert_eq!(purgatory.cancel(first).map(|fetch| fetch.serial), Some(1));
        assert!(purgatory.is_empty());
    }

    #[test]
    fn memory_per_op() {
        println!("OpSlot<u64> = {} bytes", std::mem::size_of::<OpSlot<u64>>());
        println!("Watch<(u32, u32)> = {} bytes", std::mem::size_of::<Watch<(u32, u32)>>());
        println!("WatchList = {} bytes", std::mem::size_of::<WatchList>());
    }

    /// How an op left the purgatory in the model test.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Outcome {
        Completed,
        Expired,
        Cancelled,
    }

    struct ModelOp {
        id: OpId,
        keys: BTreeSet<u8>,
        deadline_tick: u64,
        bytes_needed: u32,
        bytes_seen: u32,
    }

    type TestPurgatory = Purgatory<u8, Fetch>;

    /// Random watch, check, cancel (of waiting and finished ops), reschedule and advance
    /// against a plain map: every op leaves exactly once, by the path the model predicts.
    #[test]
    fn every_op_completes_exactly_once_against_a_model() {
        let base_seed = test_seed("every_op_completes_exactly_once_against_a_model");
        for case in 0..200_u64 {
            let case_seed = base_seed.wrapping_add(case);
            let _guard = CaseSeed(case_seed);
            run_model_case(&mut StdRng::seed_from_u64(case_seed));
        }
    }

    fn run_model_case(rng: &mut StdRng) {
        let mut purgatory = TestPurgatory::new(rng.gen_range(0..1 << 40));
        let mut model: BTreeMap<u64, ModelOp> = BTreeMap::new();
        let mut outcomes: BTreeMap<u64, Outcome> = BTreeMap::new();
        let mut finished_ids: Vec<OpId> = Vec::new();
        let mut serial_next = 0_u64;
        for _ in 0..400 {
            match rng.gen_range(0..100) {
                0..=34 => {
                    let keys: Vec<u8> =
                        (0..rng.gen_range(0..4)).map(|_| rng.gen_range(0..6)).collect();
                    let now_tick = purgatory.current_tick();
                    let deadline_tick = match rng.gen_range(0..4) {
                        0 => rng.gen_range(0..=now_tick),
                        1 => now_tick.saturating_add(rng.gen_range(0..64)),
                        2 => now_tick.saturating_add(rng.gen_range(0..1 << 16)),
                        _ => now_tick.saturating_add(rng.gen()),
                    };
                    let bytes_needed = rng.gen_range(1..50);
                    let op = fetch(serial_next, bytes_needed);
                    let id = purgatory.watch(op, keys.iter().copied(), deadline_tick);
                    let model_op = ModelOp {
                        id,
                        keys: keys.into_iter().collect(),
                        deadline_tick,
                        bytes_needed,
                        bytes_seen: 0,
                    };
                    model.insert(serial_next, model_op);
                    serial_next += 1;
                }
                35..=64 => {
                    let key = rng.gen_range(0..6);
                    let bytes_arrived = rng.gen_range(0..20);
                    let completed =
                        check_against_model(&mut purgatory, &mut model, key, bytes_arrived);
                    for (serial, id) in completed {
                        assert_eq!(outcomes.insert(serial, Outcome::Completed), None);
                        finished_ids.push(id);
                    }
                }
                65..=74 => {
                    let waiting = !model.is_empty() && (finished_ids.is_empty() || rng.gen());
                    if waiting {
                        let serial =
                            *model.keys().nth(rng.gen_range(0..model.len())).expect("some");
                        let model_op = model.remove(&serial).expect("present");
                        let cancelled = purgatory.cancel(model_op.id).map(|fetch| fetch.serial);
                        assert_eq!(cancelled, Some(serial));
                        assert_eq!(outcomes.insert(serial, Outcome::Cancelled), None);
                        finished_ids.push(model_op.id);
                    } else if !finished_ids.is_empty() {
                        let id = finished_ids[rng.gen_range(0..finished_ids.len())];
                        assert_eq!(purgatory.cancel(id), None);
                        assert!(!purgatory.reschedule(id, 0));
                    }
                }
                75..=79 if !model.is_empty() => {
                    let serial = *model.keys().nth(rng.gen_range(0..model.len())).expect("some");
                    let now_tick = purgatory.current_tick();
                    let deadline_tick = now_tick.saturating_add(rng.gen_range(0..1 << 10));
                    let model_op = model.get_mut(&serial).expect("present");
                    assert!(purgatory.reschedule(model_op.id, deadline_tick));
                    model_op.deadline_tick = deadline_tick;
                }
                _ => {
                    let now_tick = purgatory.current_tick();
                    let now_tick = match rng.gen_range(0..4) {
                        0 => now_tick,
                        1 => now_tick.saturating_add(rng.gen_range(0..64)),
                        2 => purgatory.next_deadline().unwrap_or(now_tick),
                        _ => now_tick.saturating_add(rng.gen_range(0..1 << 20)),
                    };
                    let mut expired = Vec::new();
                    purgatory.advance(now_tick, &mut expired);
                    let mut expired_serials: Vec<u64> =
                        expired.iter().map(|(_, fetch)| fetch.serial).collect();
                    expired_serials.sort_unstable();
                    let due: Vec<u64> = model
                        .iter()
                        .filter(|(_, model_op)| model_op.deadline_tick <= now_tick)
                        .map(|(&serial, _)| serial)
                        .collect();
                    assert_eq!(expired_serials, due);
                    for (id, fetch) in expired {
                        let model_op = model.remove(&fetch.serial).expect("due op is waiting");
                        assert_eq!(model_op.id, id);
                        assert_eq!(fetch.bytes_seen, model_op.bytes_seen);
                        assert_eq!(outcomes.insert(fetch.serial, Outcome::Expired), None);
                        finished_ids.push(id);
                    }
                }
            }
            purgatory.assert_invariants();
            assert_eq!(purgatory.len(), model.len());
            let keys: BTreeSet<u8> =
                model.values().flat_map(|op| op.keys.iter().copied()).collect();
            assert_eq!(purgatory.watched_keys_len(), keys.len());
            for model_op in model.values() {
                assert!(purgatory.contains(model_op.id));
            }
        }
        // The end of time expires every op still waiting; then every op has left exactly once.
        let mut expired = Vec::new();
        purgatory.advance(u64::MAX, &mut expired);
        for (_, fetch) in expired {
            assert!(model.remove(&fetch.serial).is_some());
            assert_eq!(outcomes.insert(fetch.serial, Outcome::Expired), None);
        }
        assert!(model.is_empty());
        assert!(purgatory.is_empty());
        assert_eq!(purgatory.watched_keys_len(), 0);
        assert_eq!(outcomes.len() as u64, serial_next);
    }

    /// One `check(key)`: exactly the model's ops watching `key` whose bytes reach their need
    /// complete, oldest first; the rest have counted the bytes.
    fn check_against_model(
        purgatory: &mut TestPurgatory,
        model: &mut BTreeMap<u64, ModelOp>,
        key: u8,
        bytes_arrived: u32,
    ) -> Vec<(u64, OpId)> {
        let mut expected = Vec::new();
        for (&serial, model_op) in model.iter_mut().filter(|(_, op)| op.keys.contains(&key)) {
            model_op.bytes_seen += bytes_arrived;
            if model_op.bytes_seen >= model_op.bytes_needed {
                expected.push(serial);
            }
        }
        let mut completed = Vec::new();
        purgatory.check(
            &key,
            |fetch| {
                fetch.bytes_seen += bytes_arrived;
                fetch.bytes_seen >= fetch.bytes_needed
            },
            &mut completed,
        );
        let serials: Vec<u64> = completed.iter().map(|(_, fetch)| fetch.serial).collect();
        assert_eq!(serials, expected, "check of key {key}");
        completed
            .into_iter()
            .map(|(id, fetch)| {
                let model_op = model.remove(&fetch.serial).expect("completed op was waiting");
                assert_eq!(model_op.id, id);
                assert_eq!(fetch.bytes_seen, model_op.bytes_seen);
                (fetch.serial, id)
            })
            .collect()
    }
}
