//! Recent batches kept in memory, so that consumers at the tail are served with no disk read
//! and no copy: a fetch hands out `Bytes` clones of what was just written.
//!
//! Each partition has its own `BatchCache` (a run of consecutive batches, newest last); the
//! caches of one shard share one `CacheBudget`. When they hold more than the budget, the
//! batches written longest ago go first, whichever partition holds them: the cache is "the
//! last N bytes this shard wrote", so a hot partition may use all of it and an idle one
//! gives its memory up. A partition only ever loses batches from its front, so what it keeps
//! stays a run that reads can start anywhere in.
//!
//! Lifecycle: filled after each durable write, trimmed by the budget, cleared when the log is
//! truncated or deleted. Owned by the partition's shard only (`Rc`, no locks).
//!
//! Accounting: the budget keeps a queue of every cached batch in write order, each named by
//! its partition's cache (a `Weak`) and a sequence number. Eviction pops that queue; a batch
//! that left its cache another way (a clear) leaves a stale entry, skipped when reached and
//! swept when stale entries outnumber live ones, so the queue stays proportional to what is
//! cached. Cost: O(1) amortised per batch.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::{Rc, Weak};

use bytes::Bytes;

use crate::model::{FirstBatch, Offset};

#[derive(Debug, Clone)]
pub struct CachedBatch {
    pub base_offset: Offset,
    pub last_offset: Offset,
    pub bytes: Bytes,
}

/// One partition's cached run.
#[derive(Debug, Default)]
struct Run {
    /// (sequence number, batch), oldest first; sequence numbers increase.
    batches: VecDeque<(u64, CachedBatch)>,
}

impl Run {
    fn holds(&self, seq: u64) -> bool {
        let at = self.batches.partition_point(|(s, _)| *s < seq);
        self.batches.get(at).is_some_and(|(s, _)| *s == seq)
    }
}

/// The byte budget shared by the batch caches of one shard.
#[derive(Debug)]
pub struct CacheBudget {
    bytes_max: usize,
    bytes: Cell<usize>,
    next_seq: Cell<u64>,
    /// Every batch cached under this budget, in write order (some stale, see `stale`).
    order: RefCell<VecDeque<Entry>>,
    /// Entries of `order` whose batch is no longer cached.
    stale: Cell<usize>,
    /// Reads of the shard's logs (for `metrics`): found in a cache or not, and their bytes.
    reads: Cell<CacheReads>,
}

/// How a shard's log reads went, counted since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheReads {
    pub hits: u64,
    pub misses: u64,
    /// Bytes served from the caches.
    pub hit_bytes: u64,
    /// Bytes served from segment files (what missed).
    pub file_bytes: u64,
}

#[derive(Debug)]
struct Entry {
    run: Weak<RefCell<Run>>,
    seq: u64,
}

impl CacheBudget {
    pub fn new(bytes_max: usize) -> Rc<CacheBudget> {
        Rc::new(CacheBudget {
            bytes_max,
            bytes: Cell::new(0),
            next_seq: Cell::new(0),
            order: RefCell::new(VecDeque::new()),
            stale: Cell::new(0),
            reads: Cell::new(CacheReads::default()),
        })
    }

    /// The reads counted so far, and the bytes cached now (for a scrape).
    pub fn stats(&self) -> (CacheReads, usize, usize) {
        (self.reads.get(), self.bytes.get(), self.bytes_max)
    }

    /// A read that missed the cache sent `bytes` from a segment file.
    pub fn file_read(&self, bytes: usize) {
        let mut reads = self.reads.get();
        reads.file_bytes += bytes as u64;
        self.reads.set(reads);
    }

    /// Bytes cached under this budget now.
    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.bytes.get()
    }

    /// Batches in the eviction queue, stale ones included (for tests of the bound).
    #[cfg(test)]
    fn queued(&self) -> usize {
        self.order.borrow().len()
    }

    /// Evicts the oldest batches until the caches fit. Call with no cache borrowed.
    fn enforce(&self) {
        let mut order = self.order.borrow_mut();
        while self.bytes.get() > self.bytes_max {
            let Some(entry) = order.pop_front() else { break };
            let Some(run) = entry.run.upgrade() else {
                self.stale.set(self.stale.get().saturating_sub(1));
                continue;
            };
            let mut run = run.borrow_mut();
            match run.batches.front() {
                Some((seq, batch)) if *seq == entry.seq => {
                    self.bytes.set(self.bytes.get() - batch.bytes.len());
                    run.batches.pop_front();
                }
                _ => self.stale.set(self.stale.get().saturating_sub(1)),
            }
        }
        let stale = self.stale.get();
        if stale > 64 && stale * 2 > order.len() {
            order.retain(|entry| {
                entry.run.upgrade().is_some_and(|run| run.borrow().holds(entry.seq))
            });
            self.stale.set(0);
        }
    }
}

/// One partition's cache of recent batches, drawing on its shard's `CacheBudget`.
#[derive(Debug)]
pub struct BatchCache {
    run: Rc<RefCell<Run>>,
    budget: Rc<CacheBudget>,
}

impl BatchCache {
    pub fn new(budget: Rc<CacheBudget>) -> BatchCache {
        BatchCache { run: Rc::new(RefCell::new(Run::default())), budget }
    }

    /// The shard's budget this cache draws on.
    pub fn budget(&self) -> Rc<CacheBudget> {
        self.budget.clone()
    }

    /// Adds the batch that follows the last cached one, then evicts the shard's oldest
    /// batches (maybe this one) while the budget is exceeded.
    pub fn push(&mut self, batch: CachedBatch) {
        let seq = self.budget.next_seq.get();
        self.budget.next_seq.set(seq + 1);
        {
            let mut run = self.run.borrow_mut();
            if let Some((_, last)) = run.batches.back() {
                assert_eq!(batch.base_offset, last.last_offset + 1);
            }
            self.budget.bytes.set(self.budget.bytes.get() + batch.bytes.len());
            run.batches.push_back((seq, batch));
        }
        self.budget.order.borrow_mut().push_back(Entry { run: Rc::downgrade(&self.run), seq });
        self.budget.enforce();
    }

    /// Batches from the one holding `offset`, up to `size_bytes_max` bytes (but at least one
    /// batch with `FirstBatch::Whole`). None when `offset` is older than the cache.
    pub fn read(
        &self,
        offset: Offset,
        size_bytes_max: usize,
        first: FirstBatch,
    ) -> Option<Vec<Bytes>> {
        self.read_below(offset, size_bytes_max, first, Offset::MAX)
    }

    /// `read`, but only batches that start below `bound` (the last stable offset for
    /// read_committed consumers).
    pub fn read_below(
        &self,
        offset: Offset,
        size_bytes_max: usize,
        first_batch: FirstBatch,
        bound: Offset,
    ) -> Option<Vec<Bytes>> {
        let run = self.run.borrow();
        let mut reads = self.budget.reads.get();
        let found = run.batches.front().filter(|(_, first)| offset >= first.base_offset);
        if found.is_none() {
            reads.misses += 1;
            self.budget.reads.set(reads);
            return None;
        }
        let start = run.batches.partition_point(|(_, b)| b.last_offset < offset);
        let mut out = Vec::new();
        let mut size = 0;
        for (_, batch) in run.batches.range(start..) {
            if batch.base_offset >= bound {
                break;
            }
            let fits = size + batch.bytes.len() <= size_bytes_max;
            if !(fits || (out.is_empty() && first_batch == FirstBatch::Whole)) {
                break;
            }
            size += batch.bytes.len();
            out.push(batch.bytes.clone());
        }
        reads.hits += 1;
        reads.hit_bytes += size as u64;
        self.budget.reads.set(reads);
        Some(out)
    }

    /// A read this cache missed sent `bytes` from a segment file (counted on the budget).
    pub fn file_read(&self, bytes: usize) {
        self.budget.file_read(bytes);
    }

    /// Drops every batch (truncation, retention, deletion); the budget gets their bytes back.
    pub fn clear(&mut self) {
        let mut run = self.run.borrow_mut();
        let freed: usize = run.batches.iter().map(|(_, b)| b.bytes.len()).sum();
        self.budget.bytes.set(self.budget.bytes.get() - freed);
        self.budget.stale.set(self.budget.stale.get() + run.batches.len());
        run.batches.clear();
    }

    /// Drops the batches that end below `end` (the cleaner rewrote them on disk): a read
    /// from there on goes to the cleaned segment. What stays is still a run from its front.
    pub fn drop_below(&mut self, end: Offset) {
        let mut run = self.run.borrow_mut();
        let mut freed = 0;
        let mut count = 0;
        while run.batches.front().is_some_and(|(_, b)| b.last_offset < end) {
            let Some((_, batch)) = run.batches.pop_front() else { break };
            freed += batch.bytes.len();
            count += 1;
        }
        self.budget.bytes.set(self.budget.bytes.get() - freed);
        self.budget.stale.set(self.budget.stale.get() + count);
    }

    /// Bytes this partition has cached.
    #[cfg(test)]
    fn size_bytes(&self) -> usize {
        self.run.borrow().batches.iter().map(|(_, b)| b.bytes.len()).sum()
    }
}

impl Drop for BatchCache {
    fn drop(&mut self) {
        self.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::FirstBatch::{Whole, WithinLimit};

    fn batch(base: i64, count: i64, size: usize) -> CachedBatch {
        CachedBatch {
            base_offset: Offset(base),
            last_offset: Offset(base + count - 1),
            bytes: vec![0; size].into(),
        }
    }

    #[test]
    fn reads_start_at_the_batch_holding_the_offset_and_respect_the_budget() {
        let mut cache = BatchCache::new(CacheBudget::new(1000));
        cache.push(batch(0, 5, 100));
        cache.push(batch(5, 5, 100));
        cache.push(batch(10, 5, 100));
        assert_eq!(cache.read(Offset(7), 1000, Whole).map(|v| v.len()), Some(2));
        assert_eq!(cache.read(Offset(7), 150, Whole).map(|v| v.len()), Some(1));
        assert_eq!(cache.read(Offset(7), 50, Whole).map(|v| v.len()), Some(1));
        assert_eq!(cache.read(Offset(7), 50, WithinLimit).map(|v| v.len()), Some(0));
        assert_eq!(cache.read(Offset(15), 1000, Whole).map(|v| v.len()), Some(0));
        assert_eq!(cache.read_below(Offset(0), 1000, Whole, Offset(5)).map(|v| v.len()), Some(1));
    }

    #[test]
    fn eviction_keeps_the_newest_batches_within_budget() {
        let budget = CacheBudget::new(250);
        let mut cache = BatchCache::new(budget.clone());
        for i in 0..10 {
            cache.push(batch(i * 2, 2, 100));
        }
        // 250 bytes hold two 100-byte batches: offsets 16..=19.
        assert_eq!(cache.read(Offset(17), 1000, Whole).map(|v| v.len()), Some(2));
        assert!(cache.read(Offset(15), 1000, Whole).is_none());
        assert!(cache.read(Offset(0), 1000, Whole).is_none());
        assert_eq!(budget.bytes(), 200);
        // A batch larger than the whole budget is not kept: reads go to the disk.
        let mut tiny = BatchCache::new(CacheBudget::new(10));
        tiny.push(batch(0, 1, 100));
        assert!(tiny.read(Offset(0), 1000, Whole).is_none());
    }

    #[test]
    fn partitions_share_the_budget_and_the_oldest_writes_go_first() {
        let budget = CacheBudget::new(500);
        let mut hot = BatchCache::new(budget.clone());
        let mut idle = BatchCache::new(budget.clone());
        idle.push(batch(0, 1, 100));
        idle.push(batch(1, 1, 100));
        hot.push(batch(0, 1, 100));
        hot.push(batch(1, 1, 100));
        hot.push(batch(2, 1, 100));
        assert_eq!((idle.size_bytes(), hot.size_bytes(), budget.bytes()), (200, 300, 500));
        // The idle partition's batches are the oldest: they go before any of the hot one's.
        hot.push(batch(3, 1, 100));
        assert!(idle.read(Offset(0), 1000, Whole).is_none());
        assert_eq!(idle.read(Offset(1), 1000, Whole).map(|v| v.len()), Some(1));
        hot.push(batch(4, 1, 100));
        assert_eq!(idle.size_bytes(), 0);
        assert_eq!(
            hot.read(Offset(0), 1000, Whole).map(|v| v.len()),
            Some(5),
            "all of the hot one"
        );
        // A dropped partition gives its bytes back.
        drop(hot);
        assert_eq!(budget.bytes(), 0);
        idle.push(batch(2, 1, 100));
        assert_eq!(idle.read(Offset(2), 1000, Whole).map(|v| v.len()), Some(1));
    }

    /// Random pushes, clears and drops over several partitions, against a model of "the
    /// newest batches that fit": the budget holds exactly them, its count of bytes is
    /// exact, and its queue stays proportional to what is cached.
    #[test]
    fn the_budget_keeps_exactly_the_newest_batches_that_fit() {
        let seed = crate::model::test_seed("the_budget_keeps_exactly_the_newest_batches_that_fit");
        let mut rng = crate::model::TestRng::new(seed);
        let mut next = move |n: u64| rng.below(n);
        let budget = CacheBudget::new(10_000);
        let mut caches: Vec<(BatchCache, i64)> =
            (0..4).map(|_| (BatchCache::new(budget.clone()), 0)).collect();
        // The model: every batch still cached, as (write order, partition, base, size).
        let mut model: VecDeque<(usize, i64, usize)> = VecDeque::new();
        for _ in 0..20_000 {
            let p = next(4) as usize;
            match next(100) {
                0 => {
                    caches[p].0.clear();
                    model.retain(|(q, _, _)| *q != p);
                }
                1 => {
                    caches[p] = (BatchCache::new(budget.clone()), 0);
                    model.retain(|(q, _, _)| *q != p);
                }
                _ => {
                    let size = 1 + next(3000) as usize;
                    let base = caches[p].1;
                    caches[p].0.push(batch(base, 1, size));
                    caches[p].1 += 1;
                    model.push_back((p, base, size));
                    while model.iter().map(|(_, _, s)| s).sum::<usize>() > 10_000 {
                        model.pop_front();
                    }
                }
            }
            let expected: usize = model.iter().map(|(_, _, s)| s).sum();
            assert_eq!(budget.bytes(), expected, "seed {seed}");
            for (q, (cache, _)) in caches.iter().enumerate() {
                let oldest = model.iter().find(|(m, _, _)| *m == q).map(|(_, base, _)| *base);
                let held = oldest.and_then(|base| cache.read(Offset(base), usize::MAX, Whole));
                let count = model.iter().filter(|(m, _, _)| *m == q).count();
                assert_eq!(held.map_or(0, |v| v.len()), count, "seed {seed} partition {q}");
                assert_eq!(cache.size_bytes() == 0, count == 0, "seed {seed}");
            }
            assert!(budget.queued() <= 2 * model.len() + 130, "seed {seed}: queue unbounded");
        }
    }
}
