//! What a clean stop leaves for the next start: one file per shard with the state of every
//! log it closed, in place of per-log files.
//!
//! A log's active segment used to be sealed at a clean stop with its own files: the log cut
//! to its length, an offset index, a time index and a producer snapshot (written to a
//! temporary file and renamed). With 100,000 partitions that is 300,000 files created and
//! 100,000 truncations, and ext4's inode allocation and the discards made a clean stop take
//! 30 s. Instead each shard writes one `clean-stop-<shard>` file in the meta directory (one
//! sequential write and one fsync, after the `syncfs` that makes the logs themselves durable)
//! holding, per log: its directory, the active segment's length, next offset, largest
//! timestamp and sparse indexes, the header of its last batch, and the producer state.
//! Kafka keeps its recovery points in one checkpoint file per data directory for the same
//! reason.
//!
//! The next start reads every such file (a change of `--cores` moves logs between shards),
//! deletes them and fsyncs the directory before any log is opened, so a file never describes
//! logs that were written after it: a crash at any later moment recovers from the logs
//! themselves, as after any crash. A log uses its entry only when it still matches (`Segment::
//! resume`: the file is at least that long and the last batch is where and what the entry
//! says); otherwise it is recovered from its files. The preallocated zeros after the last
//! batch are left in place at the stop: the next append writes over them, and recovery after
//! a crash cuts them like a torn tail.
//!
//! Format (big endian): magic `SPATECLS`, version u16, entry count u32, the entries, then
//! CRC-32C of everything before it. An entry: directory name (u16 length + UTF-8), active
//! segment base offset i64, size u64, next offset i64, largest timestamp i64, bytes since the
//! last index entry u64, a last-batch flag u8 (1: position u64, base offset i64, CRC u32),
//! then the offset index, the time index and the producer snapshot, each a u32 length and the
//! bytes in their own formats (`index.rs`, `producer_state.rs`). A file that fails any check
//! is ignored whole.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::model::Offset;
use crate::storage::index::SegmentIndex;

const MAGIC: &[u8; 8] = b"SPATECLS";
const VERSION: u16 = 1;
const FILE_PREFIX: &str = "clean-stop-";

/// The last batch of an active segment, as a clean stop left it: `Segment::resume` checks
/// that the file still holds it before it trusts the rest of the entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LastBatch {
    pub position: u64,
    pub base_offset: Offset,
    pub crc: u32,
}

/// One log at a clean stop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogState {
    /// The log's directory name in the data dir (`topic-partition`).
    pub dir: String,
    /// The active segment's base offset.
    pub base_offset: Offset,
    /// Bytes of whole batches in the active segment.
    pub size: u64,
    pub next_offset: Offset,
    pub max_timestamp: i64,
    pub bytes_since_index: u64,
    /// None when the active segment is empty.
    pub last_batch: Option<LastBatch>,
    pub index: SegmentIndex,
    /// The producer state at `next_offset`, encoded as a snapshot (`producer_state.rs`).
    pub producers: Vec<u8>,
}

/// The entries that the last clean stop left, by directory name.
#[derive(Debug, Default)]
pub struct CleanStop {
    logs: HashMap<String, LogState>,
}

impl CleanStop {
    pub fn get(&self, dir: &str) -> Option<&LogState> {
        self.logs.get(dir)
    }

    /// Takes the entry of the log in `dir`: each is used by one open at most.
    pub fn take(&mut self, dir: &str) -> Option<LogState> {
        self.logs.remove(dir)
    }

    /// Forgets the entries no log took (their topics are gone).
    pub fn clear(&mut self) {
        self.logs = HashMap::new();
    }

    pub fn len(&self) -> usize {
        self.logs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.logs.is_empty()
    }
}

/// Writes shard `shard`'s entries durably to `meta_dir` (temporary file, fsync, rename, fsync
/// of the directory). Blocking: run it on a helper thread, after the logs themselves are
/// durable.
pub fn write(meta_dir: &Path, shard: usize, logs: &[LogState]) -> std::io::Result<()> {
    use std::io::Write;
    let path = meta_dir.join(format!("{FILE_PREFIX}{shard}"));
    let temporary = meta_dir.join(format!("{FILE_PREFIX}{shard}.tmp"));
    let mut file = std::fs::File::create(&temporary)?;
    file.write_all(&encode(logs))?;
    file.sync_all()?;
    std::fs::rename(&temporary, &path)?;
    std::fs::File::open(meta_dir)?.sync_all()
}

/// Reads every shard's file from `meta_dir`, then deletes them all (and any temporary one a
/// crash left) and fsyncs the directory, so that no entry outlives the start that read it. A
/// damaged file is skipped with a warning: its logs recover from their own files.
pub fn take_all(meta_dir: &Path) -> std::io::Result<CleanStop> {
    let mut found = CleanStop::default();
    let mut taken: Vec<PathBuf> = Vec::new();
    let entries = match std::fs::read_dir(meta_dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(found),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let path = entry?.path();
        let is_ours = path
            .file_name()
            .and_then(|name| name.to_str())
            .is_some_and(|name| name.starts_with(FILE_PREFIX));
        if !is_ours {
            continue;
        }
        if path.extension().is_none_or(|extension| extension != "tmp") {
            match decode(&std::fs::read(&path)?) {
                Ok(logs) => {
                    for log in logs {
                        found.logs.insert(log.dir.clone(), log);
                    }
                }
                Err(why) => {
                    let path = path.display();
                    tracing::warn!(%path, "ignoring a damaged clean-stop file: {why}")
                }
            }
        }
        taken.push(path);
    }
    if !taken.is_empty() {
        for path in &taken {
            std::fs::remove_file(path)?;
        }
        std::fs::File::open(meta_dir)?.sync_all()?;
    }
    Ok(found)
}

pub fn encode(logs: &[LogState]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + logs.len() * 128);
    out.extend_from_slice(MAGIC);
    out.extend(VERSION.to_be_bytes());
    out.extend((logs.len() as u32).to_be_bytes());
    for log in logs {
        let dir = log.dir.as_bytes();
        assert!(dir.len() <= usize::from(u16::MAX), "a directory name fits a file name");
        out.extend((dir.len() as u16).to_be_bytes());
        out.extend_from_slice(dir);
        out.extend(log.base_offset.0.to_be_bytes());
        out.extend(log.size.to_be_bytes());
        out.extend(log.next_offset.0.to_be_bytes());
        out.extend(log.max_timestamp.to_be_bytes());
        out.extend(log.bytes_since_index.to_be_bytes());
        match log.last_batch {
            None => out.push(0),
            Some(last) => {
                out.push(1);
                out.extend(last.position.to_be_bytes());
                out.extend(last.base_offset.0.to_be_bytes());
                out.extend(last.crc.to_be_bytes());
            }
        }
        for part in [&log.index.encode_offsets(), &log.index.encode_times(), &log.producers] {
            out.extend((part.len() as u32).to_be_bytes());
            out.extend_from_slice(part);
        }
    }
    let crc = crc32c::crc32c(&out);
    out.extend(crc.to_be_bytes());
    out
}

pub fn decode(bytes: &[u8]) -> Result<Vec<LogState>, &'static str> {
    let Some(body_len) = bytes.len().checked_sub(4) else { return Err("truncated") };
    let (body, crc) = bytes.split_at(body_len);
    if crc32c::crc32c(body) != u32::from_be_bytes([crc[0], crc[1], crc[2], crc[3]]) {
        return Err("bad CRC");
    }
    let mut reader = Reader { bytes: body, at: 0 };
    if reader.take(MAGIC.len())? != MAGIC {
        return Err("bad magic");
    }
    if reader.u16()? != VERSION {
        return Err("unsupported version");
    }
    let count = reader.u32()? as usize;
    // Each entry takes at least 53 bytes, so a count the file cannot hold reserves nothing.
    let mut logs = Vec::with_capacity(count.min(body.len() / 53));
    for _ in 0..count {
        let dir_len = usize::from(reader.u16()?);
        let dir = std::str::from_utf8(reader.take(dir_len)?).map_err(|_| "directory not UTF-8")?;
        let base_offset = Offset(reader.i64()?);
        let size = reader.u64()?;
        let next_offset = Offset(reader.i64()?);
        let max_timestamp = reader.i64()?;
        let bytes_since_index = reader.u64()?;
        let last_batch = match reader.take(1)?[0] {
            0 => None,
            1 => Some(LastBatch {
                position: reader.u64()?,
                base_offset: Offset(reader.i64()?),
                crc: reader.u32()?,
            }),
            _ => return Err("bad last-batch flag"),
        };
        let offsets = reader.part()?;
        let times = reader.part()?;
        let index = SegmentIndex::decode(offsets, times, size).ok_or("damaged index")?;
        let producers = reader.part()?.to_vec();
        if next_offset < base_offset || last_batch.is_some_and(|b| b.position >= size) {
            return Err("inconsistent entry");
        }
        logs.push(LogState {
            dir: dir.to_string(),
            base_offset,
            size,
            next_offset,
            max_timestamp,
            bytes_since_index,
            last_batch,
            index,
            producers,
        });
    }
    if reader.at != body.len() {
        return Err("trailing bytes");
    }
    Ok(logs)
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, count: usize) -> Result<&'a [u8], &'static str> {
        let end = self.at.checked_add(count).filter(|end| *end <= self.bytes.len());
        let end = end.ok_or("truncated")?;
        let taken = &self.bytes[self.at..end];
        self.at = end;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], &'static str> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u16(&mut self) -> Result<u16, &'static str> {
        self.array().map(u16::from_be_bytes)
    }

    fn u32(&mut self) -> Result<u32, &'static str> {
        self.array().map(u32::from_be_bytes)
    }

    fn u64(&mut self) -> Result<u64, &'static str> {
        self.array().map(u64::from_be_bytes)
    }

    fn i64(&mut self) -> Result<i64, &'static str> {
        self.array().map(i64::from_be_bytes)
    }

    fn part(&mut self) -> Result<&'a [u8], &'static str> {
        let len = self.u32()? as usize;
        self.take(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(dir: &str, records: u32) -> LogState {
        let mut index = SegmentIndex::default();
        for i in 0..records {
            index.add(i * 10 + 9, i * 5000, 1_700_000_000_000 + i64::from(i));
        }
        LogState {
            dir: dir.to_string(),
            base_offset: Offset(100),
            size: u64::from(records) * 5000 + 17,
            next_offset: Offset(100 + i64::from(records) * 10),
            max_timestamp: 1_700_000_000_000 + i64::from(records),
            bytes_since_index: 17,
            last_batch: (records > 0).then(|| LastBatch {
                position: u64::from(records) * 5000 - 300,
                base_offset: Offset(95 + i64::from(records) * 10),
                crc: 0xdead_beef,
            }),
            index,
            producers: vec![7; records as usize],
        }
    }

    #[test]
    fn entries_come_back_as_written() {
        let logs = vec![sample("orders-0", 0), sample("orders-1", 3), sample("é-12", 40)];
        assert_eq!(decode(&encode(&logs)), Ok(logs));
        assert_eq!(decode(&encode(&[])), Ok(Vec::new()));
    }

    #[test]
    fn any_damage_refuses_the_whole_file() {
        let bytes = encode(&[sample("a-0", 2), sample("b-1", 5)]);
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        for at in 0..bytes.len() {
            let mut flipped = bytes.clone();
            flipped[at] ^= 0x10;
            assert!(decode(&flipped).is_err(), "flip at {at}");
        }
    }

    #[test]
    fn take_reads_every_shard_once_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), 0, &[sample("a-0", 1)]).unwrap();
        write(dir.path(), 1, &[sample("a-1", 2), sample("b-0", 0)]).unwrap();
        std::fs::write(dir.path().join("clean-stop-3.tmp"), b"torn").unwrap();
        std::fs::write(dir.path().join("clean-stop-2"), b"damaged").unwrap();
        std::fs::write(dir.path().join("catalog"), b"not ours").unwrap();
        let taken = take_all(dir.path()).unwrap();
        assert_eq!(taken.len(), 3);
        assert_eq!(taken.get("a-1"), Some(&sample("a-1", 2)));
        assert_eq!(taken.get("c-0"), None);
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap()).collect();
        assert_eq!(left.len(), 1, "only the file that is not a clean-stop file stays");
        assert!(take_all(dir.path()).unwrap().is_empty());
    }
}
