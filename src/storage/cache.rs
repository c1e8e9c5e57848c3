//! Recent batches of one partition kept in memory, so that consumers at the tail are served
//! with no disk read and no copy: a fetch hands out `Bytes` clones of what was just written.
//!
//! Lifecycle: filled after each durable write, trimmed from the front to a byte budget,
//! cleared when the log is truncated or deleted. Owned by the partition's shard only.

use std::collections::VecDeque;

use bytes::Bytes;

#[derive(Debug, Clone)]
pub struct CachedBatch {
    pub base_offset: i64,
    pub last_offset: i64,
    pub bytes: Bytes,
}

#[derive(Debug)]
pub struct BatchCache {
    batches: VecDeque<CachedBatch>,
    size_bytes: usize,
    size_bytes_max: usize,
}

impl BatchCache {
    pub fn new(size_bytes_max: usize) -> BatchCache {
        BatchCache { batches: VecDeque::new(), size_bytes: 0, size_bytes_max }
    }

    /// Adds the batch that follows the last cached one. Always keeps at least one batch.
    pub fn push(&mut self, batch: CachedBatch) {
        if let Some(last) = self.batches.back() {
            assert_eq!(batch.base_offset, last.last_offset + 1);
        }
        self.size_bytes += batch.bytes.len();
        self.batches.push_back(batch);
        while self.size_bytes > self.size_bytes_max && self.batches.len() > 1 {
            if let Some(evicted) = self.batches.pop_front() {
                self.size_bytes -= evicted.bytes.len();
            }
        }
    }

    /// Batches from the one holding `offset`, up to `size_bytes_max` bytes (but at least one
    /// batch when `first_whole` is set). None when `offset` is older than the cache.
    pub fn read(
        &self,
        offset: i64,
        size_bytes_max: usize,
        first_whole: bool,
    ) -> Option<Vec<Bytes>> {
        self.read_below(offset, size_bytes_max, first_whole, i64::MAX)
    }

    /// `read`, but only batches that start below `bound` (the last stable offset for
    /// read_committed consumers).
    pub fn read_below(
        &self,
        offset: i64,
        size_bytes_max: usize,
        first_whole: bool,
        bound: i64,
    ) -> Option<Vec<Bytes>> {
        let first = self.batches.front()?;
        if offset < first.base_offset {
            return None;
        }
        let start = self.batches.partition_point(|b| b.last_offset < offset);
        let mut out = Vec::new();
        let mut size = 0;
        for batch in self.batches.range(start..) {
            if batch.base_offset >= bound {
                break;
            }
            let fits = size + batch.bytes.len() <= size_bytes_max;
            if !(fits || (out.is_empty() && first_whole)) {
                break;
            }
            size += batch.bytes.len();
            out.push(batch.bytes.clone());
        }
        Some(out)
    }

    pub fn clear(&mut self) {
        self.batches.clear();
        self.size_bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(base: i64, count: i64, size: usize) -> CachedBatch {
        CachedBatch {
            base_offset: base,
            last_offset: base + count - 1,
            bytes: vec![0; size].into(),
        }
    }

    #[test]
    fn reads_start_at_the_batch_holding_the_offset_and_respect_the_budget() {
        let mut cache = BatchCache::new(1000);
        cache.push(batch(0, 5, 100));
        cache.push(batch(5, 5, 100));
        cache.push(batch(10, 5, 100));
        assert_eq!(cache.read(7, 1000, true).map(|v| v.len()), Some(2));
        assert_eq!(cache.read(7, 150, true).map(|v| v.len()), Some(1));
        assert_eq!(cache.read(7, 50, true).map(|v| v.len()), Some(1));
        assert_eq!(cache.read(7, 50, false).map(|v| v.len()), Some(0));
        assert_eq!(cache.read(15, 1000, true).map(|v| v.len()), Some(0));
    }

    #[test]
    fn eviction_keeps_the_newest_batches_within_budget() {
        let mut cache = BatchCache::new(250);
        for i in 0..10 {
            cache.push(batch(i * 2, 2, 100));
        }
        // 250 bytes hold two 100-byte batches: offsets 16..=19.
        assert_eq!(cache.read(17, 1000, true).map(|v| v.len()), Some(2));
        assert!(cache.read(15, 1000, true).is_none());
        assert!(cache.read(0, 1000, true).is_none());
        let mut tiny = BatchCache::new(10);
        tiny.push(batch(0, 1, 100));
        assert_eq!(tiny.read(0, 1000, true).map(|v| v.len()), Some(1));
    }
}
