//! # Hierarchical timing wheel
//!
//! A pure data structure that holds timers and tells which ones are due. Time comes in as ticks
//! (`u64`; the shard picks the tick length, 1 ms by default). There is no clock, no I/O, no
//! async and no glommio in here: the shard's executor calls [`TimingWheel::advance`] with the
//! current tick, and sleeps until [`TimingWheel::next_deadline`] between calls. One wheel lives
//! on each shard and is used only by that shard's thread, so it needs no locks.
//!
//! ```
//! use spate::wheel::TimingWheel;
//!
//! let mut wheel = TimingWheel::new(1_000); // the shard's current tick
//! let fetch = wheel.insert(1_500, "fetch 7 max_wait");
//! let session = wheel.insert(46_000, "session of member 3");
//! assert!(wheel.reschedule(session, 47_000)); // a heartbeat came in
//! assert_eq!(wheel.cancel(fetch), Some("fetch 7 max_wait")); // data arrived first
//!
//! // The shard sleeps until next_deadline(), then advances to the tick it woke at.
//! let mut expired = Vec::new();
//! while let Some(wake_tick) = wheel.next_deadline() {
//!     wheel.advance(wake_tick, |deadline_tick, value| expired.push((deadline_tick, value)));
//! }
//! assert_eq!(expired, [(47_000, "session of member 3")]);
//! ```
//!
//! ## Layout
//!
//! Eleven levels of 64 slots each (tokio's geometry, with enough levels to cover every `u64`
//! deadline). A slot at level `L` covers `64^L` ticks, so a level spans `64^(L+1)` ticks:
//!
//! ```text
//!   level  slot width     level span     slots (each one intrusive list)   occupancy
//!   0      1 tick         64 ticks       [0][1][2] ... [63]                u64 bitmap
//!   1      64             4096           [0][1][2] ... [63]                u64 bitmap
//!   2      4096           ~262 thousand  [0][1][2] ... [63]                u64 bitmap
//!   ...
//!   9      2^54           2^60           [0][1][2] ... [63]                u64 bitmap
//!   10     2^60           all of u64     [0] ... [15]  (16 slots used)    u64 bitmap
//!   due    -              -              one list: deadline <= current tick
//!                                        + a u16 bitmap of the levels that hold entries
//! ```
//!
//! An entry goes to the highest bit group (6 bits per level) in which its deadline differs from
//! the wheel's current tick, in the slot that the deadline's bits name at that level (see
//! `level.rs`). Every occupied slot of a level therefore lies strictly after the current tick's
//! slot, so the lowest set bit of the lowest occupied level is the slot to process next: no
//! scanning, no wrap-around. A deadline 3 hours away at 1 ms ticks (about 2^23 ticks) goes to
//! level 3 (or 4, when adding it carries into bit 24) and moves down one level at a time, at
//! most once per level, before it expires.
//!
//! ## Advancing
//!
//! `advance(now_tick)` first expires the due list, then repeats: find the next occupied slot
//! through the bitmaps (O(levels) bit operations); if that slot starts after `now_tick`, stop;
//! otherwise set the current tick to the slot's start, unlink the whole slot, expire the entries
//! whose deadline is that tick and put the rest back, where they fall into a lower level. Empty
//! ticks and empty slots are never visited, however far the jump: the cost is proportional to
//! the slots that hold entries, and each entry is moved at most once per level.
//!
//! Precision is exact: an entry expires at the first `advance` whose `now_tick` reaches its
//! deadline, never earlier and never later. Within one `advance`, entries come out in
//! nondecreasing deadline order, except that entries which were already due when inserted come
//! first, in no particular order (their deadlines are all at or before the previous tick).
//! Order among equal deadlines is unspecified.
//!
//! ## Range
//!
//! Every `u64` tick is a valid deadline, up to and including `u64::MAX` (584 million years at
//! 1 ms): there is no overflow list and no clamping. A deadline at or before the current tick is
//! due and expires on the next `advance`.
//!
//! ## Entries and handles
//!
//! Entries live in a slab (a `Vec` with a free list) and link into their slot's list through
//! `prev`/`next` indices, so cancel unlinks in O(1) and returns the slab entry to the free list
//! at once. A [`TimerHandle`] is the slab index plus the entry's generation, which is bumped
//! every time the entry is freed: a stale handle cannot cancel or reschedule whatever timer
//! reuses the entry later (unless that one entry is reused 2^32 times while the handle is held).
//!
//! ## Costs
//!
//! | operation        | cost                                                               |
//! |------------------|--------------------------------------------------------------------|
//! | `insert`         | O(1): a few bit operations and a list push                         |
//! | `cancel`         | O(1): unlink, free                                                 |
//! | `reschedule`     | O(1): unlink, relink                                               |
//! | `next_deadline`  | O(1): two `trailing_zeros`                                         |
//! | `advance`        | O(1) per processed slot plus O(levels) moves per entry, in total;  |
//! |                  | nothing per empty tick or empty slot                               |
//!
//! Memory: `size_of::<Entry<T>>()` bytes per pending timer in the slab, that is 24 bytes plus
//! an `Option<T>` rounded up to alignment: 32 bytes when `T` is a `u32` (the purgatory stores a
//! `u32` op index) and 40 bytes when `T` is a `u64`. The slab reuses freed entries and never
//! shrinks; it doubles when full unless it was sized with [`TimingWheel::with_capacity`]. Fixed
//! per wheel: 705 list heads of 4 bytes plus 90 bytes of bitmaps, about 2.9 KiB.

mod level;
pub mod schedule;

use level::{level_for, slot_for, slot_start, LEVELS, SLOTS_PER_LEVEL};

/// Most timers one wheel can hold: slab indices are `u32` and `u32::MAX` means "no entry".
pub const TIMERS_MAX: usize = NIL as usize;

/// Identifies one pending timer. `Copy`, 8 bytes; it goes stale once the timer expires or is
/// cancelled, and a stale handle never matches a later timer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TimerHandle {
    index: u32,
    generation: u32,
}

/// A hierarchical timing wheel of timers carrying a `T`.
///
/// Lifecycle: created by the shard at start-up with the current tick, lives as long as the
/// shard. Concurrency: owned by one shard and never shared; every method takes `&self` or
/// `&mut self` and returns without waiting. Time only moves forward: `advance` with a tick
/// before the current one is a bug and panics.
pub struct TimingWheel<T> {
    /// The tick of the last `advance` (or the start tick). Deadlines at or before it are due.
    elapsed_tick: u64,
    /// The slab. Indices are `u32`; a vacant entry has `list == LIST_VACANT`.
    entries: Vec<Entry<T>>,
    /// First vacant entry, chained through `Entry::next`.
    vacant_head: u32,
    /// Pending timers.
    len: usize,
    /// Head of every list: `level * SLOTS_PER_LEVEL + slot`, then the due list.
    list_heads: Box<[u32]>,
    /// Per level, bit `s` set when slot `s` holds entries.
    slots_occupied: [u64; LEVELS],
    /// Bit `L` set when level `L` holds entries.
    levels_occupied: u16,
}

/// One slab entry: a pending timer, or a vacant entry on the free list.
struct Entry<T> {
    deadline_tick: u64,
    /// `Some` exactly while the timer is pending.
    value: Option<T>,
    /// Previous entry in the same list, or `NIL` for the head. Unused while vacant.
    prev: u32,
    /// Next entry in the same list (or on the free list), or `NIL`.
    next: u32,
    /// Bumped each time the entry is freed, so that old handles stop matching.
    generation: u32,
    /// The list the entry is in (`level * SLOTS_PER_LEVEL + slot`, or `LIST_DUE`), or
    /// `LIST_VACANT`.
    list: u16,
}

/// "No entry" in every `u32` link.
const NIL: u32 = u32::MAX;

/// One list per slot of every level, plus the due list.
const LISTS: usize = LEVELS * SLOTS_PER_LEVEL + 1;
const LIST_DUE: u16 = (LISTS - 1) as u16;
const LIST_VACANT: u16 = u16::MAX;

const _: () = assert!(LISTS < LIST_VACANT as usize);
// The memory figure in the module docs; the purgatory stores a `u32` in every timer.
const _: () = assert!(std::mem::size_of::<Entry<u32>>() == 32);
const _: () = assert!(std::mem::size_of::<Entry<u64>>() == 40);
const _: () = assert!(std::mem::size_of::<TimerHandle>() == 8);

impl<T> TimingWheel<T> {
    /// An empty wheel whose current tick is `start_tick`.
    pub fn new(start_tick: u64) -> Self {
        Self::with_capacity(start_tick, 0)
    }

    /// An empty wheel with room for `capacity` timers before the slab grows, so that a shard
    /// can size it once at start-up instead of reallocating on the hot path.
    pub fn with_capacity(start_tick: u64, capacity: usize) -> Self {
        assert!(capacity <= TIMERS_MAX);
        Self {
            elapsed_tick: start_tick,
            entries: Vec::with_capacity(capacity),
            vacant_head: NIL,
            len: 0,
            list_heads: vec![NIL; LISTS].into_boxed_slice(),
            slots_occupied: [0; LEVELS],
            levels_occupied: 0,
        }
    }

    /// The tick of the last `advance`, or the start tick.
    pub fn current_tick(&self) -> u64 {
        self.elapsed_tick
    }

    /// Pending timers.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no timer is pending.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Adds a timer that expires at the first `advance` whose tick reaches `deadline_tick`. A
    /// deadline at or before the current tick expires on the next `advance`. O(1).
    pub fn insert(&mut self, deadline_tick: u64, value: T) -> TimerHandle {
        let index = self.allocate(deadline_tick, value);
        self.link(index);
        TimerHandle { index, generation: self.entries[index as usize].generation }
    }

    /// Removes a pending timer and returns its value, or `None` if the handle is stale (the
    /// timer expired or was cancelled). The entry is freed at once. O(1).
    pub fn cancel(&mut self, handle: TimerHandle) -> Option<T> {
        let index = self.pending_index(handle)?;
        self.unlink(index);
        let (_, value) = self.release(index);
        Some(value)
    }

    /// Moves a pending timer to `deadline_tick` (earlier or later), keeping its handle.
    /// Returns false if the handle is stale. O(1).
    pub fn reschedule(&mut self, handle: TimerHandle, deadline_tick: u64) -> bool {
        let Some(index) = self.pending_index(handle) else {
            return false;
        };
        self.unlink(index);
        self.entries[index as usize].deadline_tick = deadline_tick;
        self.link(index);
        true
    }

    /// The deadline of a pending timer, or `None` if the handle is stale.
    pub fn deadline(&self, handle: TimerHandle) -> Option<u64> {
        let index = self.pending_index(handle)?;
        Some(self.entries[index as usize].deadline_tick)
    }

    /// The value of a pending timer, or `None` if the handle is stale.
    pub fn get(&self, handle: TimerHandle) -> Option<&T> {
        let index = self.pending_index(handle)?;
        self.entries[index as usize].value.as_ref()
    }

    /// The value of a pending timer, mutably, or `None` if the handle is stale.
    pub fn get_mut(&mut self, handle: TimerHandle) -> Option<&mut T> {
        let index = self.pending_index(handle)?;
        self.entries[index as usize].value.as_mut()
    }

    /// The tick at which `advance` next has work to do, or `None` when no timer is pending.
    /// O(1); meant for the shard to sleep until.
    ///
    /// No timer expires before this tick, and advancing to it always makes progress. It is the
    /// earliest deadline itself when that deadline is within the current level-0 span (at most
    /// 64 ticks ahead) or already due (then it is the current tick). Otherwise it is the start
    /// of the slot holding the earliest deadline, a lower bound: advancing there moves the
    /// slot's entries down a level and the next call is more precise. A timer far away costs
    /// the sleeper at most `LEVELS - 1` early wake-ups over its whole life.
    pub fn next_deadline(&self) -> Option<u64> {
        if self.list_heads[LIST_DUE as usize] != NIL {
            return Some(self.elapsed_tick);
        }
        let (level, slot) = self.next_occupied_slot()?;
        Some(slot_start(self.elapsed_tick, level, slot))
    }

    /// Moves the current tick to `now_tick` and hands every timer whose deadline is at or
    /// before it to `on_expired(deadline_tick, value)`. Returns how many expired.
    ///
    /// Costs nothing per empty tick: the loop visits only occupied slots, found through the
    /// occupancy bitmaps, however far `now_tick` jumps. `on_expired` cannot reach the wheel;
    /// to re-arm a timer, collect the values and insert them after `advance` returns.
    ///
    /// Panics if `now_tick` is before the current tick: time going backwards is a bug in the
    /// caller's clock. If `on_expired` panics, the slot being processed is lost and the wheel
    /// must not be used again (the broker aborts on panic anyway).
    pub fn advance(&mut self, now_tick: u64, mut on_expired: impl FnMut(u64, T)) -> usize {
        assert!(now_tick >= self.elapsed_tick, "time went backwards");
        let len_before = self.len;
        let mut expired_count = 0;

        // Timers that were due when inserted or rescheduled. Their deadlines are at or before
        // the current tick, so they come before everything in the levels.
        let mut index = self.take_list(LIST_DUE);
        while index != NIL {
            let next = self.entries[index as usize].next;
            let (deadline_tick, value) = self.release(index);
            on_expired(deadline_tick, value);
            expired_count += 1;
            index = next;
        }

        while let Some((level, slot)) = self.next_occupied_slot() {
            let start_tick = slot_start(self.elapsed_tick, level, slot);
            if start_tick > now_tick {
                break;
            }
            // Stepping to the slot's start keeps every other entry where it belongs: all lower
            // levels are empty, and the slots after this one still lie ahead (level.rs).
            assert!(start_tick > self.elapsed_tick);
            self.elapsed_tick = start_tick;
            let mut index = self.take_list(Self::list_of(level, slot));
            while index != NIL {
                let next = self.entries[index as usize].next;
                let deadline_tick = self.entries[index as usize].deadline_tick;
                if deadline_tick <= self.elapsed_tick {
                    // Only the slot's first tick can be due here; the rest move down.
                    assert!(deadline_tick == self.elapsed_tick);
                    let (_, value) = self.release(index);
                    on_expired(deadline_tick, value);
                    expired_count += 1;
                } else {
                    self.link(index);
                    let list = usize::from(self.entries[index as usize].list);
                    assert!(list < level * SLOTS_PER_LEVEL, "an entry moves down a level");
                }
                index = next;
            }
        }
        // Nothing is due between the last processed slot and `now_tick`, and every remaining
        // slot starts after `now_tick`, so the jump keeps all entries in place (level.rs).
        self.elapsed_tick = now_tick;
        assert!(self.len + expired_count == len_before);
        expired_count
    }

    #[inline]
    fn list_of(level: usize, slot: usize) -> u16 {
        assert!(level < LEVELS);
        assert!(slot < SLOTS_PER_LEVEL);
        (level * SLOTS_PER_LEVEL + slot) as u16
    }

    /// The slab index of a pending timer, if the handle still names it.
    #[inline]
    fn pending_index(&self, handle: TimerHandle) -> Option<u32> {
        let entry = self.entries.get(handle.index as usize)?;
        if entry.generation != handle.generation || entry.list == LIST_VACANT {
            return None;
        }
        assert!(entry.value.is_some());
        Some(handle.index)
    }

    /// Takes a vacant entry (or grows the slab) and fills it; the entry is not linked yet.
    #[inline]
    fn allocate(&mut self, deadline_tick: u64, value: T) -> u32 {
        let index = if self.vacant_head != NIL {
            let index = self.vacant_head;
            let entry = &mut self.entries[index as usize];
            assert!(entry.list == LIST_VACANT);
            assert!(entry.value.is_none());
            self.vacant_head = entry.next;
            entry.deadline_tick = deadline_tick;
            entry.value = Some(value);
            index
        } else {
            assert!(self.entries.len() < TIMERS_MAX, "timing wheel is full");
            self.entries.push(Entry {
                deadline_tick,
                value: Some(value),
                prev: NIL,
                next: NIL,
                generation: 0,
                list: LIST_VACANT,
            });
            (self.entries.len() - 1) as u32
        };
        self.len += 1;
        index
    }

    /// Frees an unlinked entry at once and returns its deadline and value.
    #[inline]
    fn release(&mut self, index: u32) -> (u64, T) {
        let entry = &mut self.entries[index as usize];
        entry.list = LIST_VACANT;
        entry.generation = entry.generation.wrapping_add(1);
        entry.prev = NIL;
        entry.next = self.vacant_head;
        self.vacant_head = index;
        self.len -= 1;
        let Some(value) = entry.value.take() else {
            panic!("released a timer that held no value");
        };
        (entry.deadline_tick, value)
    }

    /// Puts an allocated, unlinked entry into the list its deadline belongs to.
    #[inline]
    fn link(&mut self, index: u32) {
        let deadline_tick = self.entries[index as usize].deadline_tick;
        let list = if deadline_tick <= self.elapsed_tick {
            LIST_DUE
        } else {
            let level = level_for(self.elapsed_tick, deadline_tick);
            Self::list_of(level, slot_for(deadline_tick, level))
        };
        let head = self.list_heads[usize::from(list)];
        let entry = &mut self.entries[index as usize];
        entry.list = list;
        entry.prev = NIL;
        entry.next = head;
        if head == NIL {
            self.mark_occupied(list);
        } else {
            self.entries[head as usize].prev = index;
        }
        self.list_heads[usize::from(list)] = index;
    }

    /// Takes an entry out of its list; the entry stays allocated.
    #[inline]
    fn unlink(&mut self, index: u32) {
        let entry = &self.entries[index as usize];
        let (list, prev, next) = (entry.list, entry.prev, entry.next);
        assert!(usize::from(list) < LISTS);
        if prev == NIL {
            assert!(self.list_heads[usize::from(list)] == index);
            self.list_heads[usize::from(list)] = next;
            if next == NIL {
                self.mark_empty(list);
            }
        } else {
            self.entries[prev as usize].next = next;
        }
        if next != NIL {
            self.entries[next as usize].prev = prev;
        }
        let entry = &mut self.entries[index as usize];
        entry.prev = NIL;
        entry.next = NIL;
    }

    /// Detaches a whole list and returns its head; the entries keep their `next` links.
    fn take_list(&mut self, list: u16) -> u32 {
        let head = std::mem::replace(&mut self.list_heads[usize::from(list)], NIL);
        if head != NIL {
            self.mark_empty(list);
        }
        head
    }

    #[inline]
    fn mark_occupied(&mut self, list: u16) {
        if list == LIST_DUE {
            return;
        }
        let (level, slot) = Self::level_and_slot(list);
        self.slots_occupied[level] |= 1 << slot;
        self.levels_occupied |= 1 << level;
    }

    #[inline]
    fn mark_empty(&mut self, list: u16) {
        if list == LIST_DUE {
            return;
        }
        let (level, slot) = Self::level_and_slot(list);
        self.slots_occupied[level] &= !(1 << slot);
        if self.slots_occupied[level] == 0 {
            self.levels_occupied &= !(1 << level);
        }
    }

    #[inline]
    fn level_and_slot(list: u16) -> (usize, usize) {
        assert!(list < LIST_DUE);
        let list = usize::from(list);
        (list / SLOTS_PER_LEVEL, list % SLOTS_PER_LEVEL)
    }

    /// The occupied slot that holds the earliest deadlines: the lowest set slot of the lowest
    /// occupied level, since every entry of a lower level is due before any of a higher one
    /// and no level wraps around.
    fn next_occupied_slot(&self) -> Option<(usize, usize)> {
        if self.levels_occupied == 0 {
            return None;
        }
        let level = self.levels_occupied.trailing_zeros() as usize;
        let slots = self.slots_occupied[level];
        assert!(slots != 0);
        Some((level, slots.trailing_zeros() as usize))
    }

    /// Checks every structural invariant. O(timers + lists); for tests.
    #[cfg(test)]
    pub(crate) fn assert_invariants(&self) {
        let mut pending = 0;
        for list in 0..LISTS as u16 {
            let mut prev = NIL;
            let mut index = self.list_heads[usize::from(list)];
            if list != LIST_DUE {
                let (level, slot) = Self::level_and_slot(list);
                let occupied = self.slots_occupied[level] & (1 << slot) != 0;
                assert_eq!(occupied, index != NIL, "occupancy of level {level} slot {slot}");
            }
            while index != NIL {
                let entry = &self.entries[index as usize];
                assert_eq!(entry.list, list);
                assert_eq!(entry.prev, prev);
                assert!(entry.value.is_some());
                if list == LIST_DUE {
                    assert!(entry.deadline_tick <= self.elapsed_tick);
                } else {
                    // Each entry sits exactly where an insert at the current tick would put it.
                    let (level, slot) = Self::level_and_slot(list);
                    assert!(entry.deadline_tick > self.elapsed_tick);
                    assert_eq!(level_for(self.elapsed_tick, entry.deadline_tick), level);
                    assert_eq!(slot_for(entry.deadline_tick, level), slot);
                }
                pending += 1;
                prev = index;
                index = entry.next;
            }
        }
        for level in 0..LEVELS {
            let occupied = self.levels_occupied & (1 << level) != 0;
            assert_eq!(occupied, self.slots_occupied[level] != 0, "occupancy of level {level}");
        }
        let mut vacant = 0;
        let mut index = self.vacant_head;
        while index != NIL {
            let entry = &self.entries[index as usize];
            assert_eq!(entry.list, LIST_VACANT);
            assert!(entry.value.is_none());
            vacant += 1;
            index = entry.next;
        }
        assert_eq!(pending, self.len);
        assert_eq!(pending + vacant, self.entries.len());
    }
}

impl<T> std::fmt::Debug for TimingWheel<T> {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("TimingWheel")
            .field("current_tick", &self.elapsed_tick)
            .field("len", &self.len)
            .field("next_deadline", &self.next_deadline())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::level::LEVEL_BITS;
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use std::collections::BTreeMap;

    use crate::model::{test_seed, CaseSeed};

    fn expire_all(wheel: &mut TimingWheel<u64>, now_tick: u64) -> Vec<(u64, u64)> {
        let mut expired = Vec::new();
        wheel.advance(now_tick, |deadline_tick, value| expired.push((deadline_tick, value)));
        wheel.assert_invariants();
        expired
    }

    fn level_width_ticks(level: usize) -> u64 {
        1 << (level * LEVEL_BITS)
    }

    #[test]
    fn empty_wheel() {
        let mut wheel = TimingWheel::<u64>::new(7);
        assert!(wheel.is_empty());
        assert_eq!(wheel.next_deadline(), None);
        assert_eq!(expire_all(&mut wheel, u64::MAX), vec![]);
        assert_eq!(wheel.current_tick(), u64::MAX);
    }

    #[test]
    fn expires_at_the_deadline_tick_and_not_before() {
        let mut wheel = TimingWheel::new(0);
        wheel.insert(10, 1);
        assert_eq!(wheel.next_deadline(), Some(10));
        assert_eq!(expire_all(&mut wheel, 9), vec![]);
        assert_eq!(expire_all(&mut wheel, 10), vec![(10, 1)]);
        assert!(wheel.is_empty());
    }

    #[test]
    fn deadline_at_or_before_now_expires_on_the_next_advance() {
        let mut wheel = TimingWheel::new(100);
        wheel.insert(50, 1);
        wheel.insert(100, 2);
        wheel.insert(0, 3);
        assert_eq!(wheel.len(), 3);
        assert_eq!(wheel.next_deadline(), Some(100));
        let mut expired = expire_all(&mut wheel, 100);
        expired.sort_unstable();
        assert_eq!(expired, vec![(0, 3), (50, 1), (100, 2)]);
    }

    #[test]
    fn cancel_frees_at_once_and_stale_handles_miss() {
        let mut wheel = TimingWheel::new(0);
        let first = wheel.insert(1_000, 1);
        assert_eq!(wheel.get(first), Some(&1));
        assert_eq!(wheel.cancel(first), Some(1));
        assert_eq!(wheel.len(), 0);
        assert_eq!(wheel.next_deadline(), None);
        assert_eq!(wheel.cancel(first), None);
        // The freed entry is reused at once; the old handle must not reach the new timer.
        let second = wheel.insert(2_000, 2);
        assert_eq!(second.index, first.index);
        assert_ne!(second.generation, first.generation);
        assert_eq!(wheel.cancel(first), None);
        assert!(!wheel.reschedule(first, 5));
        assert_eq!(wheel.deadline(first), None);
        assert_eq!(wheel.get(first), None);
        assert_eq!(wheel.deadline(second), Some(2_000));
        wheel.assert_invariants();
        // An expired timer's handle is stale too.
        assert_eq!(expire_all(&mut wheel, 2_000), vec![(2_000, 2)]);
        assert_eq!(wheel.cancel(second), None);
    }

    #[test]
    fn reschedule_earlier_later_and_into_the_past() {
        let mut wheel = TimingWheel::new(0);
        let handle = wheel.insert(1 << 30, 1);
        assert!(wheel.reschedule(handle, 70));
        *wheel.get_mut(handle).expect("pending") = 2;
        assert_eq!(expire_all(&mut wheel, 69), vec![]);
        assert!(wheel.reschedule(handle, 1 << 40));
        assert_eq!(expire_all(&mut wheel, 1 << 39), vec![]);
        assert!(wheel.reschedule(handle, 0));
        assert_eq!(wheel.next_deadline(), Some(1 << 39));
        assert_eq!(expire_all(&mut wheel, 1 << 39), vec![(0, 2)]);
        assert!(!wheel.reschedule(handle, 1));
    }

    #[test]
    fn deadlines_around_every_level_boundary_expire_at_their_exact_tick() {
        let starts = [0, 1, 63, 64, 4_095, 12_345_678, (1 << 36) - 1, u64::MAX - (1 << 61)];
        for start_tick in starts {
            for level in 0..LEVELS {
                for slots in [1_u64, 2, 63] {
                    for delta in [-1_i64, 0, 1] {
                        let distance = slots
                            .checked_mul(level_width_ticks(level))
                            .and_then(|d| d.checked_add_signed(delta))
                            .filter(|&d| d > 0);
                        let Some(deadline_tick) = distance.and_then(|d| start_tick.checked_add(d))
                        else {
                            continue;
                        };
                        let mut wheel = TimingWheel::new(start_tick);
                        wheel.insert(deadline_tick, deadline_tick);
                        wheel.assert_invariants();
                        assert_eq!(expire_all(&mut wheel, deadline_tick - 1), vec![]);
                        assert_eq!(
                            expire_all(&mut wheel, deadline_tick),
                            vec![(deadline_tick, deadline_tick)],
                            "start {start_tick} deadline {deadline_tick}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn sleeping_until_next_deadline_wakes_at_most_once_per_level() {
        for deadline_tick in [1, 64, 65, 4_096, 3 * 3_600 * 1_000, 1 << 50, u64::MAX] {
            let mut wheel = TimingWheel::new(0);
            wheel.insert(deadline_tick, 0);
            let mut wake_ups = 0;
            while let Some(wake_tick) = wheel.next_deadline() {
                assert!(wake_tick <= deadline_tick);
                wake_ups += 1;
                let expired = expire_all(&mut wheel, wake_tick);
                assert_eq!(expired.is_empty(), wake_tick < deadline_tick);
            }
            assert!(wake_ups <= LEVELS, "deadline {deadline_tick}: {wake_ups} wake-ups");
            assert_eq!(wheel.current_tick(), deadline_tick);
        }
    }

    #[test]
    fn next_deadline_is_exact_within_level_zero() {
        let mut wheel = TimingWheel::new(1_000);
        let far = wheel.insert(1_000 + (1 << 20), 0);
        // At level 3 the slot is 2^18 ticks wide and starts at 2^20: a lower bound.
        assert_eq!(wheel.next_deadline(), Some(1 << 20));
        wheel.insert(1_000 + 5_000, 0);
        // 6000 is at level 2 from 1000; its slot starts at 4096.
        assert_eq!(wheel.next_deadline(), Some(4_096));
        let near = wheel.insert(1_020, 0);
        assert_eq!(wheel.next_deadline(), Some(1_020));
        wheel.cancel(near);
        wheel.cancel(far);
        assert_eq!(wheel.next_deadline(), Some(4_096));
    }

    #[test]
    fn one_jump_to_the_end_of_time_expires_everything_in_order() {
        let mut rng = StdRng::seed_from_u64(test_seed("one_jump_to_the_end_of_time"));
        let mut wheel = TimingWheel::new(0);
        let mut deadlines: Vec<u64> = (0..10_000)
            .map(|_| match rng.gen_range(0..3) {
                0 => rng.gen_range(1..10_000),
                1 => rng.gen(),
                _ => 1_u64 << rng.gen_range(0..64),
            })
            .collect();
        deadlines.push(u64::MAX);
        for &deadline_tick in &deadlines {
            wheel.insert(deadline_tick, deadline_tick);
        }
        let expired = expire_all(&mut wheel, u64::MAX);
        deadlines.sort_unstable();
        let expired_deadlines: Vec<u64> = expired.iter().map(|&(deadline, _)| deadline).collect();
        assert_eq!(expired_deadlines, deadlines);
        assert!(expired.iter().all(|(deadline, value)| deadline == value));
        assert!(wheel.is_empty());
    }

    #[test]
    #[should_panic(expected = "time went backwards")]
    fn advancing_backwards_panics() {
        let mut wheel = TimingWheel::<u64>::new(10);
        wheel.advance(9, |_, _| {});
    }

    #[test]
    fn memory_per_timer() {
        println!("size_of::<Entry<u32>>() = {}", std::mem::size_of::<Entry<u32>>());
        println!("size_of::<Entry<u64>>() = {}", std::mem::size_of::<Entry<u64>>());
        println!("size_of::<TimingWheel<u32>>() = {}", std::mem::size_of::<TimingWheel<u32>>());
        assert_eq!(LISTS, 705);
    }

    /// A deadline for a new or rescheduled timer, mixing the cases that stress the wheel: due
    /// already, within level 0, a few levels up, on a power-of-two boundary, anywhere in u64.
    fn random_deadline(rng: &mut StdRng, now_tick: u64) -> u64 {
        match rng.gen_range(0..20) {
            0..=1 => rng.gen_range(0..=now_tick),
            2..=6 => now_tick.saturating_add(rng.gen_range(0..SLOTS_PER_LEVEL as u64)),
            7..=10 => now_tick.saturating_add(rng.gen_range(0..1 << 14)),
            11..=13 => now_tick.saturating_add(rng.gen_range(0..1 << 30)),
            14..=15 => {
                let boundary = 1_u64 << rng.gen_range(0..64);
                now_tick.saturating_add(boundary).saturating_add_signed(rng.gen_range(-1..=1))
            }
            16..=17 => rng.gen_range(now_tick..=u64::MAX),
            _ => u64::MAX - rng.gen_range(0..3),
        }
    }

    /// The next tick to advance to: stay, step, hop to the next deadline, or jump many spans.
    fn random_advance(rng: &mut StdRng, wheel: &TimingWheel<u64>) -> u64 {
        let now_tick = wheel.current_tick();
        match rng.gen_range(0..100) {
            0..=9 => now_tick,
            10..=39 => now_tick.saturating_add(rng.gen_range(1..SLOTS_PER_LEVEL as u64)),
            40..=59 => now_tick.saturating_add(rng.gen_range(1..1 << 18)),
            60..=79 => wheel.next_deadline().unwrap_or(now_tick),
            80..=97 => {
                // Several whole spans of a random level at once, plus a remainder.
                let level = rng.gen_range(1..LEVELS - 1);
                let spans = rng.gen_range(1..SLOTS_PER_LEVEL as u64 * 4);
                let jump = spans.saturating_mul(level_width_ticks(level));
                now_tick.saturating_add(jump).saturating_add(rng.gen_range(0..64))
            }
            _ => rng.gen_range(now_tick..=u64::MAX),
        }
    }

    /// Random insert, cancel, reschedule and advance against a map of deadlines: every advance
    /// must expire exactly the timers whose deadline it reaches, in deadline order.
    #[test]
    fn matches_an_ordered_map_model() {
        let base_seed = test_seed("matches_an_ordered_map_model");
        for case in 0..100_u64 {
            let case_seed = base_seed.wrapping_add(case);
            let _guard = CaseSeed(case_seed);
            run_model_case(&mut StdRng::seed_from_u64(case_seed));
        }
    }

    fn run_model_case(rng: &mut StdRng) {
        let start_tick = match rng.gen_range(0..4) {
            0 => 0,
            1 => rng.gen_range(0..1 << 20),
            2 => rng.gen(),
            _ => u64::MAX - rng.gen_range(0..1 << 20),
        };
        let mut wheel = TimingWheel::new(start_tick);
        // Timer id -> deadline. Ids are the wheel's values.
        let mut model: BTreeMap<u64, u64> = BTreeMap::new();
        let mut live_handles: Vec<(u64, TimerHandle)> = Vec::new();
        let mut stale_handles: Vec<TimerHandle> = Vec::new();
        let mut id_next = 0_u64;
        for _ in 0..1_000 {
            match rng.gen_range(0..100) {
                0..=39 => {
                    let deadline_tick = random_deadline(rng, wheel.current_tick());
                    let handle = wheel.insert(deadline_tick, id_next);
                    model.insert(id_next, deadline_tick);
                    live_handles.push((id_next, handle));
                    id_next += 1;
                }
                40..=54 if !live_handles.is_empty() => {
                    let (id, handle) =
                        live_handles.swap_remove(rng.gen_range(0..live_handles.len()));
                    assert_eq!(wheel.cancel(handle), Some(id));
                    assert!(model.remove(&id).is_some());
                    stale_handles.push(handle);
                }
                55..=64 if !live_handles.is_empty() => {
                    let (id, handle) = live_handles[rng.gen_range(0..live_handles.len())];
                    let deadline_tick = random_deadline(rng, wheel.current_tick());
                    assert!(wheel.reschedule(handle, deadline_tick));
                    model.insert(id, deadline_tick);
                }
                65..=69 if !stale_handles.is_empty() => {
                    let handle = stale_handles[rng.gen_range(0..stale_handles.len())];
                    assert_eq!(wheel.cancel(handle), None);
                    assert!(!wheel.reschedule(handle, wheel.current_tick()));
                    assert_eq!(wheel.deadline(handle), None);
                }
                _ => {
                    let elapsed_tick = wheel.current_tick();
                    let now_tick = random_advance(rng, &wheel);
                    let expired = expire_all(&mut wheel, now_tick);
                    check_expired(&model, &expired, elapsed_tick, now_tick);
                    for &(_, id) in &expired {
                        model.remove(&id);
                    }
                    live_handles.retain(|&(id, handle)| {
                        let pending = model.contains_key(&id);
                        if !pending {
                            stale_handles.push(handle);
                        }
                        pending
                    });
                }
            }
            check_pending(&wheel, &model, &live_handles);
        }
    }

    /// The expired timers are exactly the model's timers due at `now_tick`, with their model
    /// deadlines, and those not already due before the advance come out in deadline order.
    fn check_expired(
        model: &BTreeMap<u64, u64>,
        expired: &[(u64, u64)],
        elapsed_tick: u64,
        now_tick: u64,
    ) {
        let mut expired_ids: Vec<u64> = expired.iter().map(|&(_, id)| id).collect();
        expired_ids.sort_unstable();
        let due_ids: Vec<u64> = model
            .iter()
            .filter(|&(_, &deadline)| deadline <= now_tick)
            .map(|(&id, _)| id)
            .collect();
        assert_eq!(expired_ids, due_ids, "advance {elapsed_tick} -> {now_tick}");
        for &(deadline_tick, id) in expired {
            assert_eq!(model.get(&id), Some(&deadline_tick));
        }
        let later: Vec<u64> = expired
            .iter()
            .map(|&(deadline, _)| deadline)
            .filter(|&deadline| deadline > elapsed_tick)
            .collect();
        assert!(later.windows(2).all(|pair| pair[0] <= pair[1]), "deadline order");
        let early_count = expired.len() - later.len();
        assert!(expired[..early_count].iter().all(|&(deadline, _)| deadline <= elapsed_tick));
    }

    fn check_pending(
        wheel: &TimingWheel<u64>,
        model: &BTreeMap<u64, u64>,
        live_handles: &[(u64, TimerHandle)],
    ) {
        assert_eq!(wheel.len(), model.len());
        assert_eq!(live_handles.len(), model.len());
        let elapsed_tick = wheel.current_tick();
        let deadline_min = model.values().min().copied();
        match (deadline_min, wheel.next_deadline()) {
            (None, next) => assert_eq!(next, None),
            (Some(_), None) => panic!("timers pending but no next deadline"),
            (Some(min), Some(next)) if min <= elapsed_tick => assert_eq!(next, elapsed_tick),
            (Some(min), Some(next)) => {
                assert!(next > elapsed_tick);
                assert!(next <= min);
                if level_for(elapsed_tick, min) == 0 {
                    assert_eq!(next, min);
                }
            }
        }
        if live_handles.len() < 64 {
            for &(id, handle) in live_handles {
                assert_eq!(wheel.get(handle), Some(&id));
                assert_eq!(wheel.deadline(handle), model.get(&id).copied());
            }
        }
    }
}
