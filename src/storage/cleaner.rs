//! Log compaction's I/O for one log: which part is cleanable and how dirty it is, then a
//! clean (read the dirty part into an offset map, rewrite the sealed segments up to the map's
//! end with what `compaction.rs` keeps, swap the rewritten segments in). The shard's
//! cleaner task (`partition::cleaner`) picks the log and paces the bytes.
//!
//! Swapping a group of sealed segments `[B, E)` (B the first one's base offset, E the next
//! segment's) for the one segment written from them, so that a crash at any moment leaves
//! either the old segments or the new one, never both and never neither:
//!
//! ```text
//!   1. write B.log.cleaned (O_DIRECT, cut to its length, fdatasync)
//!   2. rename B.log.cleaned -> B.E.swap, fsync the directory       <- the commit point
//!   3. remove the group's segment files (B.log and the rest, their indexes)
//!   4. rename B.E.swap -> B.log, fsync the directory; write B's indexes
//! ```
//!
//! `recover_swaps`, before `Log::open` lists the segments: a `.cleaned` file is a clean that
//! did not commit and is removed; a `B.E.swap` is one that did, and steps 3-4 are done again
//! (the segments in `[B, E)` removed, the swap renamed). The new segment ends where the old
//! group did (its last batch is kept, at least empty), so the log stays contiguous.
//!
//! Readers: a read that overlapped a swap reads again (`log::read_up_to`); retention,
//! DeleteRecords, truncations and closes wait for a swap or skip that pass, and a swap never
//! starts while one of them holds the log or once its segments changed.

use std::cell::RefCell;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::constants::{BATCH_HEADER_BYTES, CLEANER_PAUSE, CLEANER_READ_BYTES, CLEANER_TURN};
use crate::model::batch::BatchHeader;
use crate::model::{now_ms, Offset};
use crate::storage::compaction::{Cleaner, Filled, MapBuilder, OffsetMap, Retained};
use crate::storage::files::{Direct, SegmentId};
use crate::storage::log::Log;
use crate::storage::segment::{self, Segment, SegmentWriter};
use crate::storage::{io_error, Error};

const CHECKPOINT_FILE: &str = "cleaner-offset-checkpoint";

/// What a log offers the cleaner now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cleanable {
    /// The first offset not yet cleaned.
    pub first_dirty: Offset,
    /// The end of the sealed segments a clean may take (below the active segment, the last
    /// stable offset, the high watermark and `min.compaction.lag.ms`).
    pub end: Offset,
    pub clean_bytes: u64,
    pub dirty_bytes: u64,
    /// `max.compaction.lag.ms` has passed for the dirty part: clean whatever the ratio.
    pub overdue: bool,
}

impl Cleanable {
    /// The dirty share of the cleanable bytes (Kafka's `cleanableRatio`).
    pub fn dirty_ratio(&self) -> f64 {
        let total = self.clean_bytes + self.dirty_bytes;
        if total == 0 {
            0.0
        } else {
            self.dirty_bytes as f64 / total as f64
        }
    }
}

/// The cleanable part of a compacted log at `now_ms`; None for a log that is not compacted
/// or has nothing dirty below its active segment.
pub fn cleanable(log: &Log, now_ms: i64) -> Option<Cleanable> {
    let config = &log.config;
    if !config.cleanup.compact || log.deleted || log.segments.len() < 2 {
        return None;
    }
    let active = log.segments.last()?;
    let stable = log.producers.txns.last_stable_offset(log.high_watermark);
    let mut uncleanable = active.base_offset.min(stable).min(log.high_watermark);
    let lag = config.cleanup.min_compaction_lag_ms;
    if lag > 0 {
        let young = log.segments.iter().find(|s| s.max_timestamp > now_ms.saturating_sub(lag));
        if let Some(young) = young {
            uncleanable = uncleanable.min(young.base_offset);
        }
    }
    let sealed = &log.segments[..log.segments.len() - 1];
    let count = sealed.iter().take_while(|s| s.next_offset <= uncleanable).count();
    if count == 0 {
        return None;
    }
    let end = sealed[count - 1].next_offset;
    let first_dirty = log.cleaned_to.max(log.log_start_offset).max(sealed[0].base_offset);
    if first_dirty >= end {
        return None;
    }
    let (mut clean_bytes, mut dirty_bytes) = (0, 0);
    let mut overdue = false;
    let max_lag = config.cleanup.max_compaction_lag_ms;
    for segment in &sealed[..count] {
        if segment.next_offset <= first_dirty {
            clean_bytes += segment.size;
        } else {
            dirty_bytes += segment.size;
            let ts = segment.max_timestamp;
            overdue |= ts >= 0 && max_lag < i64::MAX && ts < now_ms.saturating_sub(max_lag);
        }
    }
    Some(Cleanable { first_dirty, end, clean_bytes, dirty_bytes, overdue })
}

/// How a clean runs: the memory of its offset map, its I/O pace, and a stop flag that ends
/// it before its next commit (shutdown).
pub struct CleanSettings {
    pub map_memory_bytes: u64,
    /// Bytes read and written per second, at most (None: no limit).
    pub io_bytes_per_second: Option<u64>,
    pub stop: Rc<std::cell::Cell<bool>>,
}

/// What a clean did.
#[derive(Debug, Clone, Copy, Default)]
pub struct CleanReport {
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub segments_before: usize,
    pub segments_after: usize,
    /// Keys in the offset map.
    pub keys: usize,
    /// The new first dirty offset.
    pub cleaned_to: Offset,
}

/// One segment as the clean saw it when it began.
struct Taken {
    base_offset: Offset,
    id: SegmentId,
    size: u64,
    next_offset: Offset,
    file: Rc<Direct>,
}

/// Cleans `log` up to what `plan` found cleanable. None when it stopped early (shutdown,
/// or the log changed under it: deleted, truncated, its segments removed).
pub async fn clean(
    log: &Rc<RefCell<Log>>,
    plan: Cleanable,
    settings: &CleanSettings,
) -> Result<Option<CleanReport>, Error> {
    let mut pace = Pace::new(settings.io_bytes_per_second);
    let mut turns = Turns::new();
    let (dir, files, aborted, producers_last, delete_retention_ms, segment_bytes, openings) = {
        let l = log.borrow();
        let openings: Vec<_> = l
            .segments
            .iter()
            .take_while(|s| s.next_offset <= plan.end)
            .map(|s| (s.base_offset, s.id(), s.size, s.next_offset, s.direct()))
            .collect();
        let aborted = l.producers.txns.aborted_between(Offset::ZERO, plan.end);
        let producers_last: HashSet<Offset> = l
            .producers
            .entries()
            .filter_map(|(_, entry)| entry.batches.back().map(|b| b.last_offset))
            .collect();
        let config = &l.config;
        (
            l.dir().to_path_buf(),
            l.files.clone(),
            aborted,
            producers_last,
            config.cleanup.delete_retention_ms,
            config.segment_bytes,
            openings,
        )
    };
    let mut taken = Vec::with_capacity(openings.len());
    for (base_offset, id, size, next_offset, opening) in openings {
        let Ok(file) = opening.await else { return Ok(None) };
        taken.push(Taken { base_offset, id, size, next_offset, file });
    }
    let mut report = CleanReport { segments_before: taken.len(), ..CleanReport::default() };
    // Pass 1: the offset map of the dirty part.
    let mut map = OffsetMap::with_memory(settings.map_memory_bytes);
    {
        let mut builder = MapBuilder::new(&mut map, plan.first_dirty, &aborted);
        'segments: for segment in taken.iter().filter(|s| s.next_offset > plan.first_dirty) {
            let mut reader = BatchReader::new(&segment.file, segment.size);
            while let Some(batch) = reader.next(&mut pace, &mut report).await? {
                if settings.stop.get() {
                    return Ok(None);
                }
                if builder.add(&batch).map_err(clean_error)? == Filled::Full {
                    break 'segments;
                }
                turns.take().await;
            }
        }
    }
    let latest = map.latest_offset();
    report.keys = map.len();
    if latest < plan.first_dirty {
        return Ok(None);
    }
    // Pass 2: every segment up to the one holding the map's end, in groups that fit one
    // segment.
    let cleaned: Vec<&Taken> = taken.iter().filter(|s| s.base_offset <= latest).collect();
    let mut cleaner = Cleaner::new(&map, &aborted, now_ms(), delete_retention_ms);
    let mut at = 0;
    while at < cleaned.len() {
        let mut end = at + 1;
        let mut size = cleaned[at].size;
        while end < cleaned.len()
            && size + cleaned[end].size <= segment_bytes
            && cleaned[end].next_offset.0 - cleaned[at].base_offset.0 <= i64::from(u32::MAX)
        {
            size += cleaned[end].size;
            end += 1;
        }
        let group = &cleaned[at..end];
        at = end;
        let base = group[0].base_offset;
        let cleaned_path = dir.join(segment::file_name(base, "log.cleaned"));
        let mut writer = SegmentWriter::create(&cleaned_path, base).await?;
        let mut changed = group.len() > 1;
        for (i, segment) in group.iter().enumerate() {
            let last_segment = i + 1 == group.len();
            let mut reader = BatchReader::new(&segment.file, segment.size);
            let mut next = reader.next(&mut pace, &mut report).await?;
            while let Some(batch) = next {
                if settings.stop.get() {
                    writer.abandon().await;
                    remove_cleaned(cleaned_path).await;
                    return Ok(None);
                }
                next = reader.next(&mut pace, &mut report).await?;
                let header = BatchHeader::parse(&batch).map_err(|_| corrupt(&cleaned_path))?;
                let keep_empty = (last_segment && next.is_none())
                    || (header.producer_id().is_valid()
                        && producers_last.contains(&header.last_offset()));
                let kept = match cleaner.clean(&batch, keep_empty).map_err(clean_error)? {
                    Retained::Whole => Some(batch),
                    Retained::Rewritten(bytes) => {
                        changed = true;
                        Some(bytes)
                    }
                    Retained::Dropped => {
                        changed = true;
                        None
                    }
                };
                if let Some(bytes) = kept {
                    let wrote = writer.append(&bytes).await?;
                    pace.charge(wrote).await;
                }
                turns.take().await;
            }
        }
        if !changed {
            writer.abandon().await;
            remove_cleaned(cleaned_path).await;
            continue;
        }
        let written = writer.finish().await?;
        report.bytes_written += written.size;
        let group_end = group[group.len() - 1].next_offset;
        if written.next_offset != group_end {
            // The group's last batch is always kept (at least empty), so this is a segment
            // that changed under the clean: give the clean up rather than leave a gap.
            remove_cleaned(cleaned_path).await;
            return Ok(None);
        }
        let ids: Vec<(Offset, SegmentId)> = group.iter().map(|s| (s.base_offset, s.id)).collect();
        if !swap(log, &dir, &ids, group_end, written, &files).await? {
            remove_cleaned(cleaned_path).await;
            return Ok(None);
        }
    }
    let cleaned_to = Offset(latest.0 + 1);
    {
        let mut l = log.borrow_mut();
        l.cleaned_to = l.cleaned_to.max(cleaned_to);
        report.segments_after = l.segments.len() - 1;
    }
    report.cleaned_to = cleaned_to;
    let checkpoint_dir = dir.clone();
    glommio::executor()
        .spawn_blocking(move || write_checkpoint(&checkpoint_dir, cleaned_to))
        .await?;
    Ok(Some(report))
}

/// Removes a cleaned file that is not swapped in, on the blocking pool: unlinking a closed
/// file frees its blocks inside the call (see `storage::files`), which must not stall the
/// shard.
async fn remove_cleaned(path: PathBuf) {
    let _ = glommio::executor().spawn_blocking(move || std::fs::remove_file(path)).await;
}

/// Steps 2-4 of the swap (module doc) and the log's segments replaced in memory. False when
/// the log changed since the clean began (nothing swapped).
async fn swap(
    log: &Rc<RefCell<Log>>,
    dir: &Path,
    group: &[(Offset, SegmentId)],
    group_end: Offset,
    written: segment::Written,
    files: &Rc<crate::storage::files::OpenFiles>,
) -> Result<bool, Error> {
    let base = group[0].0;
    {
        let mut l = log.borrow_mut();
        let still_there = l.segments.iter().position(|s| s.base_offset == base).is_some_and(|at| {
            let segments = &l.segments;
            // The group, and a segment after it (the active one is never in a group).
            at + group.len() < segments.len()
                && group.iter().zip(&segments[at..]).all(|((_, id), s)| s.id() == *id)
        });
        if l.deleted || l.held || l.swapping || !still_there {
            return Ok(false);
        }
        l.swapping = true;
        l.swap_generation += 1;
    }
    let bases: Vec<Offset> = group.iter().map(|(base, _)| *base).collect();
    let swap_dir = dir.to_path_buf();
    let index = written.index.clone();
    let renamed = glommio::executor()
        .spawn_blocking(move || -> std::io::Result<()> {
            let cleaned = swap_dir.join(segment::file_name(base, "log.cleaned"));
            let swap = swap_dir.join(swap_name(base, group_end));
            std::fs::rename(&cleaned, &swap)?;
            std::fs::File::open(&swap_dir)?.sync_all()?;
            crash_point("CLEANER_CRASH_AFTER_COMMIT");
            finish_swap(&swap_dir, &swap, base, &bases)?;
            std::fs::write(
                swap_dir.join(segment::file_name(base, "index")),
                index.encode_offsets(),
            )?;
            std::fs::write(
                swap_dir.join(segment::file_name(base, "timeindex")),
                index.encode_times(),
            )
        })
        .await;
    let released = {
        let mut l = log.borrow_mut();
        let released = match renamed {
            Err(_) if l.deleted => Vec::new(),
            Err(e) => {
                l.swapping = false;
                l.swap_generation += 1;
                return Err(Error::Io(e));
            }
            Ok(()) if l.deleted => Vec::new(),
            Ok(()) => {
                let at = l.segments.iter().position(|s| s.base_offset == base);
                let at = at.unwrap_or_else(|| unreachable!("a swapping group stays"));
                let adopted = Segment::adopt(dir, base, written, now_ms(), files);
                // Cached batches of the group are its old bytes: reads go to the new file.
                l.cache.drop_below(group_end);
                l.segments.splice(at..at + group.len(), [adopted]).collect()
            }
        };
        l.swapping = false;
        l.swap_generation += 1;
        released
    };
    segment::release(released).await;
    Ok(true)
}

/// Steps 3-4: the group's files removed, the swap file renamed to the group's first log,
/// the directory fsynced. Done again by recovery after a crash past the commit point.
fn finish_swap(dir: &Path, swap: &Path, base: Offset, bases: &[Offset]) -> std::io::Result<()> {
    for old in bases {
        for extension in ["log", "index", "timeindex"] {
            match std::fs::remove_file(dir.join(segment::file_name(*old, extension))) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
    }
    crash_point("CLEANER_CRASH_BEFORE_RENAME");
    std::fs::rename(swap, dir.join(segment::file_name(base, "log")))?;
    std::fs::File::open(dir)?.sync_all()
}

/// `B.E.swap`: the cleaned segment replacing the segments in `[B, E)`.
fn swap_name(base: Offset, end: Offset) -> String {
    format!("{:020}.{:020}.swap", base.0, end.0)
}

/// Finishes or forgets the cleans a crash interrupted in the partition directory `dir`
/// (module doc). Runs before the segments are listed.
pub fn recover_swaps(dir: &Path) -> Result<(), Error> {
    let mut changed = false;
    let mut swaps = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name.ends_with(".log.cleaned") {
            std::fs::remove_file(dir.join(&name))?;
            changed = true;
        } else if let Some(stem) = name.strip_suffix(".swap") {
            let parsed = stem.split_once('.').and_then(|(base, end)| {
                Some((Offset(base.parse().ok()?), Offset(end.parse().ok()?)))
            });
            if let Some((base, end)) = parsed {
                swaps.push((base, end, dir.join(&name)));
            }
        }
    }
    for (base, end, swap) in swaps {
        let bases: Vec<Offset> =
            segment::list_segments(dir)?.into_iter().filter(|b| (base..end).contains(b)).collect();
        finish_swap(dir, &swap, base, &bases)?;
        tracing::info!(dir = %dir.display(), base = base.0, "finished a clean's swap");
        changed = true;
    }
    if changed {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// The first dirty offset a clean left in `dir` (0 when none did).
pub fn read_checkpoint(dir: &Path) -> Offset {
    std::fs::read_to_string(dir.join(CHECKPOINT_FILE))
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .map_or(Offset::ZERO, Offset)
}

/// Written without an fsync: a lost checkpoint only makes the next clean read more.
fn write_checkpoint(dir: &Path, offset: Offset) -> std::io::Result<()> {
    let temporary: PathBuf = dir.join(format!("{CHECKPOINT_FILE}.tmp"));
    std::fs::write(&temporary, format!("{}\n", offset.0))?;
    std::fs::rename(&temporary, dir.join(CHECKPOINT_FILE))
}

/// Test hook for the crash tests: with `SPATE_TEST_CLEANER_CRASH=<point>`, the process
/// aborts at that point of a swap (after the commit, or before the last rename).
fn crash_point(point: &str) {
    if std::env::var("SPATE_TEST_CLEANER_CRASH").is_ok_and(|wanted| wanted == point) {
        tracing::warn!(point, "test hook: aborting inside a clean's swap");
        std::process::abort();
    }
}

fn clean_error(e: crate::storage::compaction::CleanError) -> Error {
    Error::Io(std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))
}

fn corrupt(path: &Path) -> Error {
    Error::Io(std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("a batch the cleaner wrote to {} does not parse", path.display()),
    ))
}

/// The whole batches of a sealed segment's `[0, size)`, read in O_DIRECT reads of
/// `CLEANER_READ_BYTES` (or the rest of a batch at once when it is larger).
struct BatchReader<'a> {
    file: &'a Direct,
    position: u64,
    end: u64,
    buffer: Vec<u8>,
    at: usize,
}

impl<'a> BatchReader<'a> {
    fn new(file: &'a Direct, size: u64) -> BatchReader<'a> {
        BatchReader { file, position: 0, end: size, buffer: Vec::new(), at: 0 }
    }

    async fn next(
        &mut self,
        pace: &mut Pace,
        report: &mut CleanReport,
    ) -> Result<Option<Vec<u8>>, Error> {
        loop {
            let rest = &self.buffer[self.at..];
            let mut want = CLEANER_READ_BYTES;
            if rest.len() >= BATCH_HEADER_BYTES {
                let header = BatchHeader::parse(rest).map_err(|_| self.damaged())?;
                let size = header.size_bytes();
                if size <= rest.len() {
                    let batch = rest[..size].to_vec();
                    self.at += size;
                    return Ok(Some(batch));
                }
                want = want.max(size - rest.len());
            }
            if self.position >= self.end {
                if rest.is_empty() {
                    return Ok(None);
                }
                return Err(self.damaged());
            }
            let want = (want as u64).min(self.end - self.position) as usize;
            let chunk = self.file.read_at(self.position, want).await.map_err(io_error)?;
            if chunk.is_empty() {
                return Err(self.damaged());
            }
            self.buffer.drain(..self.at);
            self.at = 0;
            self.buffer.extend_from_slice(&chunk);
            self.position += chunk.len() as u64;
            report.bytes_read += chunk.len() as u64;
            pace.charge(chunk.len() as u64).await;
        }
    }

    fn damaged(&self) -> Error {
        let path = self.file.path().map(|p| p.to_path_buf()).unwrap_or_default();
        Error::Corrupt { path, position: self.position }
    }
}

/// The cleaner's turns on the shard's CPU. Shares decide between task queues that are both
/// runnable, but a request that arrives while the cleaner runs is not runnable yet: glommio
/// reaps network completions only between task-queue runs, and preempts a queue only on its
/// preempt timer (100 ms: see `broker`) or on latency-ring I/O. Between two of its own reads
/// or writes the cleaner decompresses, hashes and recompresses a read's worth of batches
/// (a megabyte took milliseconds), and produce's p99 rose with it
/// (`scripts/measure-compaction.py`). So after
/// `CLEANER_TURN` of work it sleeps for `CLEANER_PAUSE`: its queue goes idle, the executor
/// reaps what arrived, and the requests run before the cleaner's next turn.
struct Turns {
    since: Instant,
}

impl Turns {
    fn new() -> Turns {
        Turns { since: Instant::now() }
    }

    async fn take(&mut self) {
        if self.since.elapsed() >= CLEANER_TURN {
            glommio::timer::sleep(CLEANER_PAUSE).await;
            self.since = Instant::now();
        } else {
            glommio::yield_if_needed().await;
        }
    }
}

/// Paces a clean's I/O to a rate: after each read or write, it sleeps as long as the bytes
/// so far are ahead of the rate.
struct Pace {
    bytes_per_second: Option<u64>,
    started: Instant,
    bytes: u64,
}

impl Pace {
    fn new(bytes_per_second: Option<u64>) -> Pace {
        Pace { bytes_per_second, started: Instant::now(), bytes: 0 }
    }

    async fn charge(&mut self, bytes: u64) {
        self.bytes += bytes;
        let Some(rate) = self.bytes_per_second.filter(|rate| *rate > 0) else { return };
        let due = Duration::from_secs_f64(self.bytes as f64 / rate as f64);
        let elapsed = self.started.elapsed();
        if due > elapsed {
            glommio::timer::sleep(due - elapsed).await;
        }
    }
}
