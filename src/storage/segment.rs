//! One segment of a partition log: `<base offset>.log` plus its indexes.
//!
//! Lifecycle: created empty (preallocated) or opened and recovered at start; the last segment
//! of a log is active and takes appends; a roll closes it (truncated to its true length,
//! indexes written) and it stays read-only until retention deletes it. Lives on the shard that
//! owns the partition; only that shard's flusher task writes to it, one write at a time.
//!
//! Appends go through O_DIRECT. A write must cover whole aligned blocks, so the partial block
//! at the end of the log (`tail`, starting at the aligned `tail_position`) is kept in memory
//! and written again, with the new bytes after it, by the next append:
//!
//! ```text
//!   |<----------- size (bytes of complete batches) ---------->|
//!   | block | block | block |  tail block: tail bytes  | zeros |
//!   0                       ^ tail_position            ^ size  ^ aligned end on disk
//! ```
//!
//! Bytes below `tail_position` are never rewritten: readers may use the page cache there
//! (sendfile). The zeros after `size` (the padding of the tail block, and the preallocated
//! space, which counts in the file's size: see `reserve`) are cut off at a roll; a clean
//! stop leaves them, and the next start resumes after them (`clean_stop.rs`); after a crash,
//! recovery stops at the first bytes that are not a valid batch (zeros included) and
//! truncates there.

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;

use glommio::io::{DmaFile, OpenOptions};

use crate::constants::{
    CLEANER_WRITE_BYTES, INDEX_INTERVAL_BYTES, PREALLOCATE_STEP_BYTES, PREALLOCATE_STEP_BYTES_MIN,
    RECOVERY_READ_BYTES,
};
use crate::model::batch::{self, ScannedBatch};
use crate::model::Offset;
use crate::storage::clean_stop::{LastBatch, LogState};
use crate::storage::files::{self, Buffered, Direct, OpenFiles, SegmentId};
use crate::storage::index::SegmentIndex;
use crate::storage::{count_fdatasync, io_error, Error};

/// Where a segment is in its lifecycle, for what a reader may take from the page cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SegmentRole {
    /// The last segment of its log: takes appends.
    Active,
    /// Rolled: read-only until retention deletes it.
    Sealed,
}

/// What recovery changed in a segment it opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repairs {
    /// Bytes after the last whole batch were cut off (a torn write, or preallocated zeros).
    pub torn: bool,
    /// The indexes on disk were missing, stale or incomplete, and were rebuilt in memory.
    pub index_rebuilt: bool,
    /// The segment was opened from the state a clean stop left (`clean_stop.rs`), not from
    /// its own files.
    pub resumed: bool,
}

/// Where recovery starts scanning a segment, and what it knows of the batches before that.
struct Start {
    index: SegmentIndex,
    position: u64,
    next_offset: Offset,
    max_timestamp: i64,
    bytes_since_index: u64,
    /// The first scanned batch is re-read (the one at the last index entry), so it is not
    /// checked against `next_offset`.
    first: bool,
}

impl Start {
    /// From the last entry of the indexes read from disk (or the segment's start).
    fn indexed(index: SegmentIndex, base_offset: Offset) -> Start {
        let position = index.offsets.last().map_or(0, |entry| u64::from(entry.position));
        let max_timestamp = index.times.last().map_or(-1, |t| t.timestamp);
        Start {
            index,
            position,
            next_offset: base_offset,
            max_timestamp,
            bytes_since_index: 0,
            first: true,
        }
    }
}

pub struct Segment {
    pub base_offset: Offset,
    pub log_path: PathBuf,
    /// The segment's descriptors live in the shard's cache of open files, under `id`:
    /// `direct()` for O_DIRECT appends and reads, `buffered()` for `sendfile`.
    id: SegmentId,
    files: Rc<OpenFiles>,
    /// Bytes of complete, written batches. Readers never go past it.
    pub size: u64,
    /// Offset after the last batch of this segment.
    pub next_offset: Offset,
    /// Largest batch max_timestamp in the segment, -1 when empty.
    pub max_timestamp: i64,
    pub index: SegmentIndex,
    /// Log bytes appended since the last index entry.
    bytes_since_index: u64,
    pub created_ms: i64,
    pub tail_position: u64,
    pub tail: Vec<u8>,
    pub alignment: u64,
    /// Bytes of the file that are preallocated (or written); appends past it grow it first.
    pub allocated: u64,
    /// Bytes of the file known written, with data or with the zeros written ahead of the
    /// data under `--durability fsync` (`log::zero_ahead`); the rest of `allocated` may be
    /// unwritten extents.
    pub zeroed: u64,
    /// The segment's size limit (its topic's segment.bytes when it was created or opened).
    pub size_max: u64,
}

impl Segment {
    /// Creates an empty segment file whose size limit is `preallocate_bytes`. Space is
    /// preallocated in steps as it fills (`reserve`).
    pub async fn create(
        dir: &Path,
        base_offset: Offset,
        preallocate_bytes: u64,
        now_ms: i64,
        files: &Rc<OpenFiles>,
    ) -> Result<Segment, Error> {
        let log_path = dir.join(file_name(base_offset, "log"));
        let file = open_dma(&log_path).await?;
        file.truncate(0).await.map_err(io_error)?;
        let alignment = write_alignment(&file, &log_path);
        let id = files.new_segment();
        files.insert_direct(id, file);
        Ok(Segment {
            base_offset,
            log_path,
            id,
            files: files.clone(),
            size: 0,
            next_offset: base_offset,
            max_timestamp: -1,
            index: SegmentIndex::default(),
            bytes_since_index: 0,
            created_ms: now_ms,
            tail_position: 0,
            tail: Vec::new(),
            alignment,
            allocated: 0,
            zeroed: 0,
            size_max: preallocate_bytes,
        })
    }

    /// Makes sure the file has space preallocated up to `end`, growing it by a step, and
    /// returns the new preallocated end. Preallocation is an optimisation: a file system
    /// without fallocate still works (the step counts as done), and a file system too full
    /// for a whole step leaves `allocated` as it was: the write allocates what it needs
    /// itself, and only a write that finds no space at all is a full disk (`log::write_run`).
    ///
    /// The file's size grows with the preallocation (fallocate without KEEP_SIZE), so that
    /// appends write inside the file. An O_DIRECT write past the end of an ext4 file must
    /// update the size and cannot be issued without blocking: io_uring then hands every
    /// append to a kernel worker thread (measured with fio on this machine's ext4: all 16,384
    /// 4 KiB appends punted with KEEP_SIZE, none without; a third of the context switches,
    /// average write latency 89 -> 68 us). The price is that a crashed active segment looks
    /// longer than its data: recovery cuts the zeros as it cuts a torn tail, and a roll or a
    /// clean close truncates to the true length.
    pub async fn reserve(file: &DmaFile, allocated: u64, end: u64, size_max: u64) -> u64 {
        if end <= allocated {
            return allocated;
        }
        let target = (allocated + preallocate_step(allocated)).max(end).min(size_max.max(end));
        match file.pre_allocate(target, false).await {
            Err(e) if e.raw_os_error().is_some_and(|code| code == libc::ENOSPC) => allocated,
            _ => target,
        }
    }

    /// Opens an existing segment and recovers it: loads its indexes when they are sound,
    /// scans every batch after the last index entry (CRC included) and truncates a torn tail.
    /// Returns the segment and what recovery had to repair.
    ///
    /// With `resume`, the state a clean stop left for it (`clean_stop.rs`), an active segment
    /// whose file still matches that state takes its indexes from there instead of the index
    /// files, and the scan stops shortly after the last batch instead of reading on through
    /// the preallocated zeros, which stay.
    pub async fn open(
        dir: &Path,
        base_offset: Offset,
        now_ms: i64,
        files: &Rc<OpenFiles>,
        resume: Option<&LogState>,
    ) -> Result<(Segment, Repairs), Error> {
        let log_path = dir.join(file_name(base_offset, "log"));
        let id = files.new_segment();
        let file = files.direct(id, &log_path).await?;
        let file_size = file.file_size().await.map_err(io_error)?;
        let resume = resume.filter(|state| state.base_offset == base_offset);
        let resumed = match resume {
            Some(state) => Self::resume(&file, state, file_size).await?,
            None => None,
        };
        let resumed_here = resumed.is_some();
        let (loaded, start, mut scanned) = match resumed {
            Some(resumed) => resumed,
            None => {
                let offsets = std::fs::read(dir.join(file_name(base_offset, "index")));
                let times = std::fs::read(dir.join(file_name(base_offset, "timeindex")));
                let (offsets, times) = (offsets.unwrap_or_default(), times.unwrap_or_default());
                let loaded = SegmentIndex::decode(&offsets, &times, file_size);
                let start = Start::indexed(loaded.clone().unwrap_or_default(), base_offset);
                let scanned = scan(&file, start.position, file_size).await?;
                (loaded, start, scanned)
            }
        };
        let Start {
            mut index,
            mut position,
            mut next_offset,
            mut max_timestamp,
            mut bytes_since_index,
            mut first,
        } = start;
        // The batch at the last index entry must be where the index says; otherwise the index
        // is stale or damaged and we rebuild it from the start of the segment.
        if position > 0 && first {
            let matches = scanned.first().is_some_and(|(_, b)| {
                b.last_offset - base_offset
                    == i64::from(index.offsets.last().map_or(0, |e| e.relative_offset))
            });
            if !matches {
                index = SegmentIndex::default();
                position = 0;
                max_timestamp = -1;
                scanned = scan(&file, 0, file_size).await?;
            }
        }
        for (batch_position, scanned_batch) in &scanned {
            let ScannedBatch {
                base_offset: batch_base,
                last_offset,
                max_timestamp: ts,
                size_bytes,
                crc: _,
            } = *scanned_batch;
            // Offsets only go up: a compacted segment has holes between batches (and may not
            // start at its base offset), so continuity is not asked for here; the CRC is what
            // tells a batch from garbage.
            if !first && batch_base < next_offset {
                break;
            }
            if batch_base < base_offset || last_offset - base_offset > i64::from(u32::MAX) {
                break;
            }
            let indexed =
                index.offsets.last().is_some_and(|e| u64::from(e.position) == *batch_position);
            if !indexed && (index.offsets.is_empty() || bytes_since_index >= INDEX_INTERVAL_BYTES) {
                index.add(
                    (last_offset - base_offset) as u32,
                    *batch_position as u32,
                    ts.max(max_timestamp),
                );
                bytes_since_index = 0;
            }
            bytes_since_index += size_bytes as u64;
            max_timestamp = max_timestamp.max(ts);
            next_offset = last_offset + 1;
            position = batch_position + size_bytes as u64;
            first = false;
        }
        if first && index.offsets.is_empty() {
            position = 0;
        }
        // Bytes after the last whole batch: a torn write, or the zeros of preallocation. A
        // resumed segment's are the zeros its clean stop left; they stay preallocated.
        let torn = position < file_size && !resumed_here;
        if torn {
            file.truncate(position).await.map_err(io_error)?;
            index.truncate_to_position(position as u32);
        }
        let alignment = write_alignment(&file, &log_path);
        let tail_position = position - position % alignment;
        let tail = if position > tail_position {
            let read = file.read_at(tail_position, (position - tail_position) as usize).await;
            read.map_err(io_error)?.to_vec()
        } else {
            Vec::new()
        };
        let segment = Segment {
            base_offset,
            log_path,
            id,
            files: files.clone(),
            size: position,
            next_offset,
            max_timestamp,
            index,
            bytes_since_index,
            created_ms: now_ms,
            tail_position,
            tail,
            alignment,
            allocated: if torn { position } else { file_size },
            zeroed: position.next_multiple_of(alignment),
            size_max: u64::MAX,
        };
        let index_rebuilt = loaded.as_ref() != Some(&segment.index);
        Ok((segment, Repairs { torn, index_rebuilt, resumed: resumed_here }))
    }

    /// The starting point that a clean stop's `state` gives, with the batches scanned from
    /// its last index entry, or None when the file no longer matches the state: the batches
    /// from that entry on (CRCs checked, as recovery checks them) must end with the state's
    /// last batch, at the state's length. The look past that end is short (a clean stop left
    /// zeros there); batches found there (none, unless something wrote the log without
    /// consuming the record) are scanned to the end and kept like any others.
    #[allow(clippy::type_complexity)]
    async fn resume(
        file: &DmaFile,
        state: &LogState,
        file_size: u64,
    ) -> Result<Option<(Option<SegmentIndex>, Start, Vec<(u64, ScannedBatch)>)>, Error> {
        if file_size < state.size {
            return Ok(None);
        }
        let start = Start::indexed(state.index.clone(), state.base_offset);
        let probe_end = file_size.min(state.size + RESUME_PROBE_BYTES);
        let mut scanned = scan(file, start.position, probe_end).await?;
        let matches = match state.last_batch {
            Some(last) => scanned.iter().any(|(position, batch)| {
                *position == last.position
                    && batch.base_offset == last.base_offset
                    && batch.crc == last.crc
                    && batch.last_offset + 1 == state.next_offset
                    && position + batch.size_bytes as u64 == state.size
            }),
            None => state.size == 0 && state.next_offset == state.base_offset,
        };
        if !matches {
            return Ok(None);
        }
        let past_end = scanned.last().is_some_and(|(position, _)| *position >= state.size);
        if past_end && probe_end < file_size {
            scanned = scan(file, start.position, file_size).await?;
        }
        Ok(Some((Some(state.index.clone()), start, scanned)))
    }

    /// What a clean stop records of this segment as the active one of `dir`'s log, with the
    /// log's producer state at its end. The future holds no borrow of the segment.
    pub fn clean_stop_state(
        &self,
        dir: String,
        producers: Vec<u8>,
    ) -> impl std::future::Future<Output = LogState> {
        let mut state = LogState {
            dir,
            base_offset: self.base_offset,
            size: self.size,
            next_offset: self.next_offset,
            max_timestamp: self.max_timestamp,
            bytes_since_index: self.bytes_since_index,
            last_batch: None,
            index: self.index.clone(),
            producers,
        };
        let from = self.index.offsets.last().map(|entry| u64::from(entry.position));
        let file = self.direct();
        async move {
            if let Some(from) = from {
                state.last_batch = match file.await {
                    Ok(file) => last_batch(&file, from, state.size).await,
                    Err(_) => None,
                };
            }
            state
        }
    }

    /// The O_DIRECT file, from the shard's cache or opened again if it was closed. The
    /// future owns what it needs, so no borrow of the log is held across the open; a hit
    /// costs one lookup and no allocation.
    pub fn direct(&self) -> impl std::future::Future<Output = Result<Rc<Direct>, Error>> {
        let found = match self.files.cached_direct(self.id) {
            Some(file) => Ok(file),
            None => Err((self.files.clone(), self.id, self.log_path.clone())),
        };
        async move {
            match found {
                Ok(file) => Ok(file),
                Err((files, id, path)) => files.direct(id, &path).await,
            }
        }
    }

    /// A buffered descriptor of the same file, for zero-copy `sendfile` reads on a helper
    /// thread. Only bytes below `stable_end()` are read through it. `None` when the shard's
    /// buffered descriptors are all lent out (see `files.rs`).
    pub fn buffered(&self) -> Result<Option<Arc<Buffered>>, Error> {
        self.files.buffered(self.id, &self.log_path)
    }

    /// End of the bytes that will never be rewritten; safe to read through the page cache.
    /// The active segment's tail block is written again by the next append, so its stable
    /// bytes end at `tail_position`; a sealed segment's at `size`.
    pub fn stable_end(&self, role: SegmentRole) -> u64 {
        match role {
            SegmentRole::Active => self.tail_position,
            SegmentRole::Sealed => self.size,
        }
    }

    /// Records a batch that has been written at `position`.
    pub fn record_batch(
        &mut self,
        position: u64,
        last_offset: Offset,
        max_timestamp: i64,
        size: u64,
    ) {
        assert_eq!(position, self.size);
        assert!(last_offset >= self.next_offset);
        let relative = last_offset - self.base_offset;
        assert!(relative >= 0 && relative <= i64::from(u32::MAX));
        self.max_timestamp = self.max_timestamp.max(max_timestamp);
        if self.index.offsets.is_empty() || self.bytes_since_index >= INDEX_INTERVAL_BYTES {
            self.index.add(relative as u32, position as u32, self.max_timestamp);
            self.bytes_since_index = 0;
        }
        self.bytes_since_index += size;
        self.size += size;
        self.next_offset = last_offset + 1;
    }

    /// Writes the indexes next to the log (buffered I/O on a helper thread; they are small and
    /// rebuilt by recovery if lost).
    pub async fn write_indexes(&self) -> Result<(), Error> {
        let dir = self.log_path.parent().map(Path::to_path_buf).unwrap_or_default();
        let offsets = self.index.encode_offsets();
        let times = self.index.encode_times();
        let base = self.base_offset;
        glommio::executor()
            .spawn_blocking(move || -> std::io::Result<()> {
                std::fs::write(dir.join(file_name(base, "index")), offsets)?;
                std::fs::write(dir.join(file_name(base, "timeindex")), times)
            })
            .await?;
        Ok(())
    }

    /// Closes the segment for writing: cut the zero padding and persist the indexes.
    pub async fn seal(&self) -> Result<(), Error> {
        let file = self.direct().await?;
        file.truncate(self.size).await.map_err(io_error)?;
        file.fdatasync().await.map_err(io_error)?;
        count_fdatasync();
        self.write_indexes().await
    }

    /// A sealed segment the cleaner wrote (`SegmentWriter`) and swapped in at `base_offset`
    /// of `dir`; its descriptors are opened on first use.
    pub fn adopt(
        dir: &Path,
        base_offset: Offset,
        written: Written,
        now_ms: i64,
        files: &Rc<OpenFiles>,
    ) -> Segment {
        Segment {
            base_offset,
            log_path: dir.join(file_name(base_offset, "log")),
            id: files.new_segment(),
            files: files.clone(),
            size: written.size,
            next_offset: written.next_offset,
            max_timestamp: written.max_timestamp,
            index: written.index,
            bytes_since_index: written.bytes_since_index,
            created_ms: now_ms,
            tail_position: written.size,
            tail: Vec::new(),
            alignment: written.alignment,
            allocated: written.size,
            zeroed: written.size.next_multiple_of(written.alignment),
            size_max: u64::MAX,
        }
    }

    /// The segment's identity in the shard's file cache: unique for the life of the process,
    /// so a segment replaced by another with the same base offset is told apart.
    pub fn id(&self) -> SegmentId {
        self.id
    }

    /// The paths of the segment's files: log, offset index, time index.
    pub fn file_paths(&self) -> [PathBuf; 3] {
        let dir = self.log_path.parent().map(Path::to_path_buf).unwrap_or_default();
        ["log", "index", "timeindex"]
            .map(|extension| dir.join(file_name(self.base_offset, extension)))
    }
}

impl Drop for Segment {
    /// A segment that goes (retention, deletion, a log closed) gives its descriptors back.
    fn drop(&mut self) {
        self.files.forget(self.id);
    }
}

/// Writes a sealed segment from whole batches in offset order (the cleaner's output), with
/// O_DIRECT writes of whole aligned blocks as the log's appends, its indexes built as
/// `Segment::record_batch` builds them. `finish` cuts the file to its true length and
/// fdatasyncs it. Lives on one shard, one write at a time.
pub struct SegmentWriter {
    file: DmaFile,
    base_offset: Offset,
    alignment: u64,
    /// Bytes written to the file (a multiple of `alignment`).
    written: u64,
    /// Bytes after `written`, not yet written.
    pending: Vec<u8>,
    index: SegmentIndex,
    size: u64,
    next_offset: Offset,
    max_timestamp: i64,
    bytes_since_index: u64,
}

/// What a `SegmentWriter` wrote, for `Segment::adopt`.
#[derive(Debug, Clone)]
pub struct Written {
    pub size: u64,
    pub next_offset: Offset,
    pub max_timestamp: i64,
    pub index: SegmentIndex,
    pub bytes_since_index: u64,
    pub alignment: u64,
}

impl SegmentWriter {
    /// Creates (or empties) the file at `path` for a segment whose base offset is
    /// `base_offset`.
    pub async fn create(path: &Path, base_offset: Offset) -> Result<SegmentWriter, Error> {
        let file = open_dma(path).await?;
        file.truncate(0).await.map_err(io_error)?;
        let alignment = write_alignment(&file, path);
        Ok(SegmentWriter {
            file,
            base_offset,
            alignment,
            written: 0,
            pending: Vec::new(),
            index: SegmentIndex::default(),
            size: 0,
            next_offset: base_offset,
            max_timestamp: -1,
            bytes_since_index: 0,
        })
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends one whole batch (`base_offset` at or after the end so far, within the
    /// segment's relative offsets). Returns the bytes written to the file by this call.
    pub async fn append(&mut self, batch: &[u8]) -> Result<u64, Error> {
        let header = batch::BatchHeader::parse(batch).map_err(|_| bad_batch())?;
        assert!(header.base_offset() >= self.next_offset);
        let relative = header.last_offset() - self.base_offset;
        assert!(relative >= 0 && relative <= i64::from(u32::MAX));
        let position = self.size;
        self.max_timestamp = self.max_timestamp.max(header.max_timestamp());
        if self.index.offsets.is_empty() || self.bytes_since_index >= INDEX_INTERVAL_BYTES {
            self.index.add(relative as u32, position as u32, self.max_timestamp);
            self.bytes_since_index = 0;
        }
        self.bytes_since_index += batch.len() as u64;
        self.size += batch.len() as u64;
        self.next_offset = header.last_offset() + 1;
        self.pending.extend_from_slice(batch);
        if self.pending.len() < CLEANER_WRITE_BYTES {
            return Ok(0);
        }
        let whole = self.pending.len() - self.pending.len() % self.alignment as usize;
        self.write(whole).await?;
        Ok(whole as u64)
    }

    /// Writes the first `len` pending bytes (a multiple of the alignment, or all of them
    /// padded with zeros to one).
    async fn write(&mut self, len: usize) -> Result<(), Error> {
        let aligned = len.next_multiple_of(self.alignment as usize);
        let mut buffer = self.file.alloc_dma_buffer(aligned);
        let out = buffer.as_bytes_mut();
        out[..len].copy_from_slice(&self.pending[..len]);
        out[len..].fill(0);
        let wrote = self.file.write_at(buffer, self.written).await.map_err(io_error)?;
        if wrote != aligned {
            return Err(Error::Io(std::io::Error::new(
                std::io::ErrorKind::StorageFull,
                format!("short O_DIRECT write ({wrote} of {aligned} bytes)"),
            )));
        }
        self.pending.drain(..len);
        self.written += len as u64;
        Ok(())
    }

    /// Closes the file unfinished (the clean gave up; its caller removes it), so that the
    /// removal is not left with a close still in flight on the shard (`files` module doc).
    pub async fn abandon(self) {
        let _ = self.file.close().await;
    }

    /// Writes what is pending, cuts the file to the batches' length and fdatasyncs it.
    pub async fn finish(mut self) -> Result<Written, Error> {
        if !self.pending.is_empty() {
            let len = self.pending.len();
            self.write(len).await?;
        }
        self.file.truncate(self.size).await.map_err(io_error)?;
        self.file.fdatasync().await.map_err(io_error)?;
        count_fdatasync();
        self.file.close().await.map_err(io_error)?;
        Ok(Written {
            size: self.size,
            next_offset: self.next_offset,
            max_timestamp: self.max_timestamp,
            index: self.index,
            bytes_since_index: self.bytes_since_index,
            alignment: self.alignment,
        })
    }
}

fn bad_batch() -> Error {
    Error::Io(std::io::Error::new(std::io::ErrorKind::InvalidData, "not a record batch"))
}

/// Deletes segments' files on glommio's blocking pool: removing a large file frees its blocks
/// inside the call (on ext4, milliseconds per GiB), which must not stall the shard. Readers
/// that still hold a descriptor can finish; the last descriptor is closed on the helper
/// thread too, since closing the last one is what frees the blocks (`files::close_removed`).
pub async fn remove(segments: Vec<Segment>) {
    if segments.is_empty() {
        return;
    }
    let paths: Vec<PathBuf> = segments.iter().flat_map(Segment::file_paths).collect();
    let forgotten = segments.iter().map(|segment| segment.files.forget(segment.id)).collect();
    drop(segments);
    files::close_removed(forgotten, move || {
        for path in paths {
            let _ = std::fs::remove_file(path);
        }
    })
    .await;
}

/// Gives back the descriptors of segments whose files the cleaner already removed or
/// replaced (a swap): like `remove`, the last descriptor of a removed file is closed on the
/// blocking pool, since that close frees its blocks; no file is touched.
pub async fn release(segments: Vec<Segment>) {
    if segments.is_empty() {
        return;
    }
    let forgotten = segments.iter().map(|segment| segment.files.forget(segment.id)).collect();
    drop(segments);
    files::close_removed(forgotten, || {}).await;
}

/// The next preallocation step of a segment with `allocated` bytes: as much again, within
/// `PREALLOCATE_STEP_BYTES_MIN..=PREALLOCATE_STEP_BYTES`.
pub fn preallocate_step(allocated: u64) -> u64 {
    allocated.clamp(PREALLOCATE_STEP_BYTES_MIN, PREALLOCATE_STEP_BYTES)
}

/// Kafka's file name: the base offset as 20 zero-padded digits.
pub fn file_name(base_offset: Offset, extension: &str) -> String {
    format!("{:020}.{extension}", base_offset.0)
}

/// Base offsets of the `.log` files in a partition directory, sorted.
pub fn list_segments(dir: &Path) -> Result<Vec<Offset>, Error> {
    let mut bases = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if let Some(stem) = name.strip_suffix(".log") {
            if stem.len() == 20 {
                if let Ok(base) = stem.parse::<i64>() {
                    bases.push(Offset(base));
                }
            }
        }
    }
    bases.sort_unstable();
    Ok(bases)
}

/// The unit of a segment's O_DIRECT writes: whole file-system blocks, not only whole device
/// sectors (glommio's `alignment`, 512 bytes on this machine's virtio disk). ext4 treats a
/// write that is sector-aligned but not block-aligned as unaligned, and an unaligned write
/// into preallocated (unwritten) space needs the inode lock exclusively and zeroing of the
/// partial blocks, so it cannot be issued without blocking and io_uring hands it to a kernel
/// worker thread: measured, every such append at 50,000 produces/s.
fn write_alignment(file: &DmaFile, path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let block = std::fs::metadata(path).map_or(FILE_SYSTEM_BLOCK_BYTES_DEFAULT, |m| m.blksize());
    file.alignment().max(block)
}

/// The last batch of a segment of `size` bytes, found by reading headers from `from` (its
/// last index entry, at most an index interval and one batch before the end). None if it
/// cannot be read, which only costs the next start its resume.
async fn last_batch(file: &DmaFile, from: u64, size: u64) -> Option<LastBatch> {
    let bytes = file.read_at(from, (size - from) as usize).await.ok()?;
    let mut at = 0usize;
    let mut last = None;
    while let Ok(header) = batch::BatchHeader::parse(&bytes[at..]) {
        last = Some(LastBatch {
            position: from + at as u64,
            base_offset: header.base_offset(),
            crc: header.crc(),
        });
        match at.checked_add(header.size_bytes()) {
            Some(end) if end < bytes.len() => at = end,
            _ => break,
        }
    }
    last
}

/// How far past a resumed segment's end the first look goes: the clean stop left zeros
/// there, and reading the rest of a large preallocation would only read zeros.
const RESUME_PROBE_BYTES: u64 = 4096;

/// The block size assumed when the file system does not say (ext4's and XFS's default).
const FILE_SYSTEM_BLOCK_BYTES_DEFAULT: u64 = 4096;

pub async fn open_dma(path: &Path) -> Result<DmaFile, Error> {
    OpenOptions::new().read(true).write(true).create(true).dma_open(path).await.map_err(io_error)
}

/// Reads the segment from `position` to `end` in large DMA reads and returns every intact
/// batch with its position, stopping at the first torn or invalid one.
async fn scan(
    file: &DmaFile,
    mut position: u64,
    end: u64,
) -> Result<Vec<(u64, ScannedBatch)>, Error> {
    let mut out = Vec::new();
    while position < end {
        let want = (end - position).min(RECOVERY_READ_BYTES as u64) as usize;
        let chunk = file.read_at(position, want).await.map_err(io_error)?;
        let bytes: &[u8] = &chunk;
        let mut at = 0usize;
        while at < bytes.len() {
            let rest = &bytes[at..];
            match batch::BatchHeader::parse(rest) {
                Ok(header) if header.size_bytes() > rest.len() => {
                    if at == 0 {
                        // One batch bigger than the read: fetch exactly it.
                        let whole = file.read_at(position, header.size_bytes()).await;
                        let whole = whole.map_err(io_error)?;
                        match batch::scan_stored(&whole) {
                            Some(b) if (whole.len() == header.size_bytes()) => {
                                out.push((position, b));
                                at = b.size_bytes;
                            }
                            _ => return Ok(out),
                        }
                    }
                    break;
                }
                Ok(_) => match batch::scan_stored(rest) {
                    Some(b) => {
                        out.push((position + at as u64, b));
                        at += b.size_bytes;
                    }
                    None => return Ok(out),
                },
                Err(_)
                    if rest.len() < crate::constants::BATCH_HEADER_BYTES
                        && position + (bytes.len() as u64) < end =>
                {
                    break
                }
                Err(_) => return Ok(out),
            }
        }
        if at == 0 {
            return Ok(out);
        }
        position += at as u64;
        glommio::yield_if_needed().await;
    }
    Ok(out)
}
