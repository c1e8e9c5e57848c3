//! The shard's open segment files: a least-recently-used set of descriptors within a budget,
//! so that the number of partitions is limited by disk and memory, not by `ulimit -n`.
//!
//! A segment holds no descriptor of its own. It asks this cache for its O_DIRECT file (for
//! appends, recovery and reads of the unstable tail) or its buffered file (for `sendfile`),
//! which opens it on a miss (through io_uring for the O_DIRECT one) and closes the least
//! recently used beyond the budget, as Kafka's and Redpanda's caches of open segments do.
//! Closing is dropping the cache's reference: an append or a `sendfile` that still holds the
//! file finishes first, so the budget can be exceeded by the operations in flight, never by
//! idle files. A file opened again is opened without `O_CREAT`: a segment that retention
//! removed in the meantime reads as gone (`NotFound`), never as a new empty file.
//!
//! Removing a file: the last close of an unlinked file frees its blocks, inside `close(2)`
//! or in the closing thread's return to user space (ext4 truncates it there and, on a file
//! system mounted with `discard`, waits for the device to discard every extent: tens of
//! milliseconds for a segment, measured). glommio closes its descriptors with an io_uring
//! close whose final `fput` runs on the shard's own thread, so a removed segment's
//! descriptors are closed by `close_removed`: the shard's O_DIRECT descriptor is closed
//! while a duplicate keeps the file, and the duplicate and the buffered descriptor are
//! closed last, on glommio's blocking pool.
//!
//! Lifecycle: one per shard, built by the service that owns the shard's logs (or one per log
//! in tests, `OpenFiles::unbounded`), shared by its logs through an `Rc`.

use std::cell::{Cell, RefCell};
use std::num::NonZeroUsize;
use std::ops::Deref;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::Path;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use glommio::io::{DmaFile, OpenOptions};
use lru::LruCache;

use crate::storage::{io_error, Error};

/// A segment's identity in the cache: unique on its shard for the life of the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SegmentId(u64);

/// A segment's O_DIRECT descriptor (read-write, through io_uring). Counted while it lives,
/// whether the cache still holds it or only an operation in flight does.
pub struct Direct {
    file: DmaFile,
    _live: DirectLive,
}

/// One count of `OpenFiles::direct_live`, given back when the descriptor goes.
struct DirectLive(Rc<Cell<usize>>);

impl DirectLive {
    fn new(live: &Rc<Cell<usize>>) -> DirectLive {
        live.set(live.get() + 1);
        DirectLive(live.clone())
    }
}

impl Drop for DirectLive {
    fn drop(&mut self) {
        self.0.set(self.0.get() - 1);
    }
}

impl Deref for Direct {
    type Target = DmaFile;
    fn deref(&self) -> &DmaFile {
        &self.file
    }
}

/// A segment's buffered, read-only descriptor, for `sendfile` on a reader thread (where it
/// may be dropped, hence the atomic count).
#[derive(Debug)]
pub struct Buffered {
    file: std::fs::File,
    live: Arc<AtomicUsize>,
}

impl Deref for Buffered {
    type Target = std::fs::File;
    fn deref(&self) -> &std::fs::File {
        &self.file
    }
}

impl Drop for Buffered {
    fn drop(&mut self) {
        self.live.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Turns the kernel's readahead off for a buffered descriptor (`POSIX_FADV_RANDOM`): a
/// `sendfile` then reads from the disk what it sends and no more, at most
/// `SENDFILE_CALL_BYTES_MAX` at a time per reader thread. With the device's readahead (8 MiB
/// windows on this machine's disk, `read_ahead_kb`) a catch-up consumer kept the device's
/// queue full of large reads, and produce's O_DIRECT writes waited behind them: beside a
/// consumer reading a cold 3 GiB backlog, 5% of a 1,000/s producer's requests took over 1 ms
/// inside the broker, against 0.05% alone; without readahead 0.07%, while the backlog was
/// read at about the same speed (3 GiB in 8.1-8.4 s, against 5.4-9.7 s). Best effort: a
/// refusal only leaves readahead on.
fn no_readahead(file: &std::fs::File) {
    use std::os::fd::AsRawFd;
    // SAFETY: an advice on a descriptor `file` keeps open; no pointers.
    let advised = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_RANDOM) };
    if advised != 0 {
        tracing::debug!("posix_fadvise(POSIX_FADV_RANDOM) refused: error {advised}");
    }
}

/// What the cache did since start, for the shutdown line and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FileStats {
    /// Descriptors open now (held by the cache or by operations in flight).
    pub open: usize,
    /// The budget for them.
    pub capacity: usize,
    /// Opens on a miss (the first open of a segment included).
    pub opened: u64,
    /// Idle descriptors closed to stay within the budget.
    pub evicted: u64,
    /// Reads answered from memory because every buffered descriptor was lent out.
    pub declined: u64,
}

/// The budget is split in two: O_DIRECT descriptors (appends, recovery, header scans) and
/// buffered ones (lent to fetch answers until they are sent). A fetch of many partitions can
/// only ever hold the buffered half, so O_DIRECT opens, which wait for room, always get it
/// back from operations that finish on their own: no fetch can wait on itself.
pub struct OpenFiles {
    direct: RefCell<LruCache<SegmentId, Rc<Direct>>>,
    buffered: RefCell<LruCache<SegmentId, Arc<Buffered>>>,
    direct_live: Rc<Cell<usize>>,
    buffered_live: Arc<AtomicUsize>,
    direct_max: usize,
    buffered_max: usize,
    next_id: Cell<u64>,
    opened: Cell<u64>,
    evicted: Cell<u64>,
    declined: Cell<u64>,
}

/// How often an O_DIRECT open that found the budget taken by operations in flight looks
/// again (they finish within an I/O; this is an overload path).
const DIRECT_RETRY: Duration = Duration::from_millis(1);

impl OpenFiles {
    /// A cache that holds at most `capacity` descriptors (at least 2 of each kind).
    pub fn new(capacity: usize) -> Rc<OpenFiles> {
        let direct_max = (capacity / 2).max(2);
        let buffered_max = (capacity - capacity / 2).max(2);
        // Sparse: the tables grow with the files open, not with the budget.
        let cap = |max: usize| NonZeroUsize::new(max).unwrap_or(NonZeroUsize::MIN);
        Rc::new(OpenFiles {
            direct: RefCell::new(LruCache::sparse(cap(direct_max))),
            buffered: RefCell::new(LruCache::sparse(cap(buffered_max))),
            direct_live: Rc::new(Cell::new(0)),
            buffered_live: Arc::new(AtomicUsize::new(0)),
            direct_max,
            buffered_max,
            next_id: Cell::new(0),
            opened: Cell::new(0),
            evicted: Cell::new(0),
            declined: Cell::new(0),
        })
    }

    /// A cache without a budget, for a log on its own (tests, tools).
    pub fn unbounded() -> Rc<OpenFiles> {
        OpenFiles::new(usize::MAX)
    }

    /// A new segment's identity.
    pub fn new_segment(&self) -> SegmentId {
        self.next_id.set(self.next_id.get() + 1);
        SegmentId(self.next_id.get())
    }

    /// The segment's O_DIRECT file if it is open (and now the most recently used).
    pub fn cached_direct(&self, segment: SegmentId) -> Option<Rc<Direct>> {
        self.direct.borrow_mut().get(&segment).cloned()
    }

    /// The segment's O_DIRECT file, opened (read-write, never created) on a miss, once the
    /// budget has room: idle descriptors are closed for it, and when operations in flight
    /// hold them all, the open waits for one to finish.
    pub async fn direct(&self, segment: SegmentId, path: &Path) -> Result<Rc<Direct>, Error> {
        loop {
            if let Some(file) = self.cached_direct(segment) {
                return Ok(file);
            }
            if self.make_room_direct() {
                break;
            }
            glommio::timer::sleep(DIRECT_RETRY).await;
        }
        // Counted before the open, so that concurrent opens see each other.
        let live = DirectLive::new(&self.direct_live);
        let opened = OpenOptions::new().read(true).write(true).dma_open(path).await;
        let file = Rc::new(Direct { file: opened.map_err(io_error)?, _live: live });
        self.opened.set(self.opened.get() + 1);
        self.direct.borrow_mut().put(segment, file.clone());
        Ok(file)
    }

    /// Puts a file just created in the cache (a new segment: created files are not refused,
    /// and there is at most one per log at a time).
    pub fn insert_direct(&self, segment: SegmentId, file: DmaFile) -> Rc<Direct> {
        self.make_room_direct();
        let file = Rc::new(Direct { file, _live: DirectLive::new(&self.direct_live) });
        self.opened.set(self.opened.get() + 1);
        self.direct.borrow_mut().put(segment, file.clone());
        file
    }

    /// The segment's buffered file for `sendfile`, opened on a miss; `None` when every
    /// buffered descriptor of the budget is lent to answers not yet sent (read the bytes
    /// into memory instead).
    ///
    /// `open(2)` of a file whose directory entry is cached takes microseconds and is done
    /// inline: a hop to a helper thread would cost more than the call.
    pub fn buffered(
        &self,
        segment: SegmentId,
        path: &Path,
    ) -> Result<Option<Arc<Buffered>>, Error> {
        if let Some(file) = self.buffered.borrow_mut().get(&segment) {
            return Ok(Some(file.clone()));
        }
        if !self.make_room_buffered() {
            self.declined.set(self.declined.get() + 1);
            return Ok(None);
        }
        let file = std::fs::File::open(path)?;
        no_readahead(&file);
        self.buffered_live.fetch_add(1, Ordering::Relaxed);
        let file = Arc::new(Buffered { file, live: self.buffered_live.clone() });
        self.opened.set(self.opened.get() + 1);
        self.buffered.borrow_mut().put(segment, file.clone());
        Ok(Some(file))
    }

    /// Takes the segment's descriptors out of the cache (it is being removed), for
    /// `close_removed`.
    pub fn forget(&self, segment: SegmentId) -> Forgotten {
        Forgotten {
            direct: self.direct.borrow_mut().pop(&segment),
            buffered: self.buffered.borrow_mut().pop(&segment),
        }
    }

    pub fn stats(&self) -> FileStats {
        FileStats {
            open: self.direct_live.get() + self.buffered_live.load(Ordering::Relaxed),
            capacity: self.direct_max.saturating_add(self.buffered_max),
            opened: self.opened.get(),
            evicted: self.evicted.get(),
            declined: self.declined.get(),
        }
    }

    /// Closes least recently used O_DIRECT descriptors until one more fits; false when the
    /// ones left are all in use by operations in flight.
    fn make_room_direct(&self) -> bool {
        let live = || self.direct_live.get();
        make_room(&mut self.direct.borrow_mut(), live, self.direct_max, &self.evicted)
    }

    fn make_room_buffered(&self) -> bool {
        let live = || self.buffered_live.load(Ordering::Relaxed);
        make_room(&mut self.buffered.borrow_mut(), live, self.buffered_max, &self.evicted)
    }
}

/// A removed segment's descriptors, taken out of the cache (see the module doc).
pub struct Forgotten {
    direct: Option<Rc<Direct>>,
    buffered: Option<Arc<Buffered>>,
}

/// How long a removed segment's O_DIRECT file may stay shared (an operation in flight, a
/// clean that still holds its input) before its close is left to whoever drops it last.
const REMOVED_IN_FLIGHT_WAIT: Duration = Duration::from_secs(600);

/// Closes removed segments' descriptors so that no last close of a file runs on the shard's
/// thread (module doc): `work` (the unlinks) and then the last closes run on the blocking
/// pool; returns when the unlinks are done. An O_DIRECT file still shared is closed later,
/// by a task that waits until it is the file's only holder.
pub async fn close_removed(forgotten: Vec<Forgotten>, work: impl FnOnce() + Send + 'static) {
    let mut last = Vec::with_capacity(forgotten.len());
    let mut buffered = Vec::with_capacity(forgotten.len());
    for Forgotten { direct, buffered: read } in forgotten {
        buffered.extend(read);
        let Some(direct) = direct else { continue };
        // SAFETY: `direct` owns the descriptor and keeps it open for this call.
        let raw = unsafe { BorrowedFd::borrow_raw(direct.file.as_raw_fd()) };
        let Ok(duplicate) = raw.try_clone_to_owned() else { continue };
        match Rc::try_unwrap(direct) {
            Ok(Direct { file, _live }) => {
                // Not the file's last reference: the duplicate holds it.
                let _ = file.close().await;
                last.push(duplicate);
            }
            Err(shared) => {
                glommio::spawn_local(close_when_unshared(shared, duplicate)).detach();
            }
        }
    }
    glommio::executor()
        .spawn_blocking(move || {
            work();
            drop(last);
            drop(buffered);
        })
        .await;
}

/// Closes a removed segment's O_DIRECT file once nothing else holds it, then its duplicate
/// on the blocking pool (see `close_removed`).
async fn close_when_unshared(mut direct: Rc<Direct>, duplicate: std::os::fd::OwnedFd) {
    let waited = std::time::Instant::now();
    loop {
        match Rc::try_unwrap(direct) {
            Ok(Direct { file, _live }) => {
                let _ = file.close().await;
                break;
            }
            Err(shared) if waited.elapsed() >= REMOVED_IN_FLIGHT_WAIT => {
                drop(shared);
                break;
            }
            Err(shared) => direct = shared,
        }
        glommio::timer::sleep(REMOVED_POLL).await;
    }
    glommio::executor().spawn_blocking(move || drop(duplicate)).await;
}

/// How often `close_when_unshared` looks again.
const REMOVED_POLL: Duration = Duration::from_millis(10);

/// Pops least recently used entries of `lru` while `live()` descriptors of its kind are at
/// `max` or more; false when the cache is empty and they still are. An entry in use (held
/// elsewhere too) closes when its operation ends; popping it still frees its slot in the
/// cache for idle ones to follow.
fn make_room<V>(
    lru: &mut LruCache<SegmentId, V>,
    live: impl Fn() -> usize,
    max: usize,
    evicted: &Cell<u64>,
) -> bool {
    while live() >= max {
        let Some((_, file)) = lru.pop_lru() else { return false };
        evicted.set(evicted.get() + 1);
        drop(file);
    }
    true
}

/// How a process's descriptors are shared out: a fixed part (executors' rings, eventfds,
/// listeners, the log), a reserve for connections (two descriptors each: reader and writer),
/// and the rest for the shards' caches of open segment files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DescriptorBudget {
    /// The process's limit (soft `RLIMIT_NOFILE`).
    pub limit: u64,
    pub fixed: u64,
    pub connections: u64,
    /// Each shard's cache of open segment files.
    pub files_per_shard: u64,
}

/// Descriptors the process uses besides segments and connections: standard streams, the log,
/// the lock, and per shard its io_uring rings, eventfds, listener and reader threads' pipes.
const FIXED_DESCRIPTORS: u64 = 64;
const FIXED_DESCRIPTORS_PER_SHARD: u64 = 32;
/// The share of the descriptors left after the fixed part that is kept for connections, and
/// its floor: a full file cache never refuses a client.
const CONNECTION_SHARE_DIVISOR: u64 = 4;
const CONNECTION_DESCRIPTORS_MIN: u64 = 128;
/// Each shard's file cache keeps at least this many descriptors, whatever the limit.
const FILES_PER_SHARD_MIN: u64 = 16;

impl DescriptorBudget {
    pub fn plan(limit: u64, shards: usize) -> DescriptorBudget {
        let fixed = fixed_descriptors(shards);
        let shards = shards.max(1) as u64;
        let rest = limit.saturating_sub(fixed);
        let connections = (rest / CONNECTION_SHARE_DIVISOR).max(CONNECTION_DESCRIPTORS_MIN);
        let files_per_shard = (rest.saturating_sub(connections) / shards).max(FILES_PER_SHARD_MIN);
        DescriptorBudget { limit, fixed, connections, files_per_shard }
    }

    /// Descriptors that keep every partition's active segment open (its two files) with the
    /// fixed part and the connection reserve beside them: what a limit should be for no
    /// partition to wait for an open on its first append after being idle.
    pub fn wanted(partitions: u64, shards: usize) -> u64 {
        let fixed = fixed_descriptors(shards);
        let shards = shards.max(1) as u64;
        let files = 2 * partitions + FILES_PER_SHARD_MIN * shards;
        // `plan` keeps a quarter of the rest for connections (at least the floor): the rest
        // must be files * 4/3, or files plus the floor, and a descriptor per shard more for
        // the rounding of the split.
        let share = (files * CONNECTION_SHARE_DIVISOR).div_ceil(CONNECTION_SHARE_DIVISOR - 1);
        fixed + share.max(files + CONNECTION_DESCRIPTORS_MIN) + shards
    }
}

fn fixed_descriptors(shards: usize) -> u64 {
    FIXED_DESCRIPTORS + FIXED_DESCRIPTORS_PER_SHARD * shards.max(1) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_keeps_a_connection_reserve_and_splits_the_rest_over_shards() {
        let budget = DescriptorBudget::plan(20_000, 2);
        assert_eq!(budget.fixed, 128);
        assert_eq!(budget.connections, (20_000 - 128) / 4);
        assert_eq!(budget.files_per_shard, (20_000 - 128 - 4968) / 2);
        assert!(budget.fixed + budget.connections + 2 * budget.files_per_shard <= 20_000);
    }

    #[test]
    fn a_tiny_limit_still_leaves_every_shard_a_working_cache() {
        let budget = DescriptorBudget::plan(256, 2);
        assert_eq!(budget.connections, CONNECTION_DESCRIPTORS_MIN);
        assert_eq!(budget.files_per_shard, FILES_PER_SHARD_MIN);
        let budget = DescriptorBudget::plan(1024, 2);
        assert_eq!(budget.connections, 224);
        assert_eq!(budget.files_per_shard, 336);
    }

    #[test]
    fn the_wanted_limit_gives_every_active_segment_its_pair() {
        for (partitions, shards) in [(0, 1), (100, 2), (100_000, 2), (1_000_000, 64)] {
            let wanted = DescriptorBudget::wanted(partitions, shards);
            let budget = DescriptorBudget::plan(wanted, shards);
            assert!(
                budget.files_per_shard * shards as u64 >= 2 * partitions,
                "{partitions} partitions on {shards} shards: {budget:?}"
            );
        }
    }
}
