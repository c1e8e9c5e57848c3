//! Producer-state snapshots on disk and the recovery of producer state.
//!
//! A snapshot is `<offset>.snapshot` (20 digits, like the segments beside it; the format is in
//! `producer_state.rs`): the producer state of the partition when its next offset was
//! `offset`. One is written when a segment is sealed (a roll) and one at clean shutdown, so
//! recovery reads the newest snapshot and then only the batch headers after it, usually just
//! the active segment. Written with buffered I/O on a helper thread: temporary file, fsync,
//! rename, fsync of the directory; a torn or damaged file fails its CRC and is skipped.
//!
//! A snapshot is usable only if `log start <= offset <= log end`:
//! - above the log end it counts batches that a crash lost before they were written (a roll
//!   snapshots batches that are still queued), so it is deleted before new appends can reuse
//!   those offsets;
//! - below the log start it misses batches that retention deleted while later ones of the
//!   same producers survive, and a stale last sequence would refuse their next batch; it is
//!   deleted too. Rebuilding from the log start instead only forgets producers whose batches
//!   are all gone, and a forgotten producer may continue at any sequence (Kafka's rule).

use std::path::Path;

use crate::constants::{BATCH_HEADER_BYTES, PRODUCER_SNAPSHOTS_RETAINED, RECOVERY_READ_BYTES};
use crate::model::batch::BatchHeader;
use crate::model::{records, Offset};
use crate::storage::producer_state::{ProducerBatch, ProducerStateTable};
use crate::storage::segment::{self, Segment};
use crate::storage::{io_error, Error};

const EXTENSION: &str = "snapshot";

/// Offsets of the snapshot files in a partition directory, ascending.
pub fn list(dir: &Path) -> Vec<Offset> {
    let mut offsets = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return offsets };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if let Some(stem) = name.strip_suffix(".snapshot") {
            if let (20, Ok(offset)) = (stem.len(), stem.parse::<i64>()) {
                offsets.push(Offset(offset));
            }
        }
    }
    offsets.sort_unstable();
    offsets
}

/// When a snapshot reaches the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flush {
    /// Before `write` returns (file and directory fsynced): at a roll.
    Now,
    /// With the caller's one `syncfs` of the file system (a clean stop of many logs). A crash
    /// before it can leave a damaged or missing snapshot, which `load` skips: recovery then
    /// replays from the one before, as after any crash.
    Deferred,
}

/// Writes a snapshot durably, then deletes all but the newest `PRODUCER_SNAPSHOTS_RETAINED`.
/// Blocking: run it on a helper thread.
pub fn write(dir: &Path, offset: Offset, bytes: &[u8], flush: Flush) -> std::io::Result<()> {
    use std::io::Write;
    let path = dir.join(segment::file_name(offset, EXTENSION));
    // A name of its own per write: a roll's snapshot and one asked for by delayed delivery's
    // trim (`log::snapshot_producers`) may be written at the same offset at the same time.
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let write = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = segment::file_name(offset, EXTENSION);
    let temporary = dir.join(format!("{name}.{write}.tmp"));
    let mut file = std::fs::File::create(&temporary)?;
    file.write_all(bytes)?;
    if flush == Flush::Now {
        file.sync_all()?;
    }
    std::fs::rename(&temporary, &path)?;
    if flush == Flush::Now {
        std::fs::File::open(dir)?.sync_all()?;
    }
    let offsets = list(dir);
    let keep_from = offsets.len().saturating_sub(PRODUCER_SNAPSHOTS_RETAINED);
    for old in &offsets[..keep_from] {
        let _ = std::fs::remove_file(dir.join(segment::file_name(*old, EXTENSION)));
    }
    Ok(())
}

/// The newest usable snapshot of a log that holds `[log_start, log_end)`: its offset and
/// state, or the log start and an empty state when there is none. Deletes the snapshots that
/// are outside the log (see the module doc) and skips damaged ones.
pub fn load(dir: &Path, log_start: Offset, log_end: Offset) -> (Offset, ProducerStateTable) {
    assert!(log_start <= log_end);
    let mut found = None;
    for offset in list(dir).into_iter().rev() {
        let path = dir.join(segment::file_name(offset, EXTENSION));
        if offset > log_end || offset < log_start {
            let path = path.display();
            let (log_start, log_end) = (log_start.0, log_end.0);
            tracing::info!(%path, log_start, log_end, "dropping a snapshot outside the log");
            let _ = std::fs::remove_file(dir.join(segment::file_name(offset, EXTENSION)));
            continue;
        }
        if found.is_some() {
            continue;
        }
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) => {
                tracing::warn!(path = %path.display(), "cannot read a snapshot: {e}");
                continue;
            }
        };
        match ProducerStateTable::decode_snapshot(&bytes) {
            Ok((stored, table)) if stored == offset => found = Some((offset, table)),
            Ok((stored, _)) => {
                let stored = stored.0;
                tracing::warn!(path = %path.display(), stored, "snapshot names another offset");
            }
            Err(e) => tracing::warn!(path = %path.display(), "skipping a damaged snapshot: {e:?}"),
        }
    }
    found.unwrap_or((log_start, ProducerStateTable::default()))
}

/// Replays the headers of every batch at or after `from` into `table`. Reads the segments in
/// large chunks and looks only at headers (records are never parsed). Returns the number of
/// batches read. The segments were recovered already, so every header up to `size` is sound.
pub async fn replay(
    segments: &[Segment],
    from: Offset,
    table: &mut ProducerStateTable,
    now_ms: i64,
) -> Result<usize, Error> {
    let mut replayed = 0;
    for segment in segments {
        if segment.next_offset <= from || segment.size == 0 {
            continue;
        }
        let mut position = if from > segment.base_offset {
            let relative = (from - segment.base_offset).min(i64::from(u32::MAX)) as u32;
            u64::from(segment.index.position_before(relative))
        } else {
            0
        };
        let file = segment.direct().await?;
        while position < segment.size {
            let want = (segment.size - position).min(RECOVERY_READ_BYTES as u64) as usize;
            let chunk = file.read_at(position, want).await.map_err(io_error)?;
            let bytes: &[u8] = &chunk;
            let mut at = 0usize;
            // A batch may run past the chunk; the next read starts at the header after it.
            while at + BATCH_HEADER_BYTES <= bytes.len() {
                let Ok(header) = BatchHeader::parse(&bytes[at..]) else { break };
                if header.base_offset() >= from {
                    let base_offset = header.base_offset();
                    let producer_id = header.producer_id();
                    if header.is_control() && producer_id.is_valid() {
                        let size = header.size_bytes();
                        let outcome = if at + size <= bytes.len() {
                            records::control_outcome(&bytes[at..at + size])
                        } else {
                            let whole =
                                file.read_at(position + at as u64, size).await.map_err(io_error)?;
                            records::control_outcome(&whole)
                        };
                        let epoch = header.producer_epoch();
                        let _ = table.on_marker(producer_id, epoch, now_ms);
                        match outcome {
                            Some(outcome) => {
                                table.txns.on_marker(producer_id, base_offset, outcome)
                            }
                            // An empty control batch: a marker the cleaner removed.
                            None if header.records_count() == 0 => {}
                            None => {
                                let base_offset = base_offset.0;
                                tracing::warn!(base_offset, "unreadable transaction marker")
                            }
                        }
                    } else {
                        let batch = ProducerBatch::from_header(&header, header.max_timestamp());
                        table.replay(&batch, base_offset, now_ms);
                        if header.is_transactional() && producer_id.is_valid() {
                            table.txns.on_data(producer_id, base_offset);
                        }
                    }
                    replayed += 1;
                }
                at += header.size_bytes();
            }
            if at == 0 {
                let path = segment.log_path.display();
                tracing::warn!(%path, position, "unreadable batch header");
                break;
            }
            position += at as u64;
            glommio::yield_if_needed().await;
        }
    }
    Ok(replayed)
}
