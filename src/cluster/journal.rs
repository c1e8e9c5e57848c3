//! The Raft log's durable storage: one append-only journal file,
//! `<data-dir>/__cluster_metadata/journal`, of the entries, hard states and conf states
//! raft-rs asks to persist, in the order it asked.
//!
//! ```text
//!   record: +-----------+-----------+------+---------------------------------+
//!           | length u32| crc32c u32| kind | protobuf (eraftpb) of the kind  |
//!           +-----------+-----------+------+---------------------------------+
//!            of kind+protobuf; crc32c over kind+protobuf; big-endian
//!   kind 1 Entry, 2 HardState, 3 ConfState
//! ```
//!
//! Replaying the journal in order rebuilds what raft-rs last persisted: an entry at an index
//! at or below the last one replaces it and everything after (Raft overwrote a conflicting
//! suffix), the last hard state and conf state win. A torn tail (a crash inside a write: a
//! short record or a bad CRC) is cut off; nothing in it was acknowledged, because the driver
//! acts on a `Ready` only after its write and fdatasync returned.
//!
//! After a snapshot (`snapshot`) the journal is rewritten to start after the snapshot's
//! index (`Journal::rewrite`: `journal.tmp`, fsync, rename over `journal`, directory fsync),
//! so it holds the conf state, the hard state and the entries after the snapshot. A start
//! replays it on top of the newest snapshot (`after_snapshot`): entries the snapshot covers
//! are dropped, and those after it are kept only if they continue the snapshot's log (the
//! journal holds the snapshot's entry with its term, or starts right after it). A journal
//! written before snapshots existed replays as before, whole, with no snapshot.
//!
//! The format and replay (`encode_*`, `replay`, `splice`) are pure; `Journal` does the I/O on
//! the executor's blocking pool so that the shard never waits on the disk.
//!
//! Lifecycle: opened by the Raft driver on shard 0 at start, appended to on each `Ready`,
//! closed when the process ends. Concurrency: one append in flight (the driver awaits it).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use protobuf::Message as _;
use raft::prelude::{ConfState, Entry, HardState};

/// The journal's directory under the data dir (Kafka's metadata log is `__cluster_metadata-0`
/// there; this is not a partition log of ours, so no partition suffix).
pub const CLUSTER_DIR: &str = "__cluster_metadata";
const JOURNAL_FILE: &str = "journal";
const JOURNAL_TEMP_FILE: &str = "journal.tmp";
const HEADER_BYTES: usize = 8;
/// Larger records are corruption (an entry is one metadata record, a few hundred bytes).
const RECORD_SIZE_BYTES_MAX: usize = 64 << 20;

const KIND_ENTRY: u8 = 1;
const KIND_HARD_STATE: u8 = 2;
const KIND_CONF_STATE: u8 = 3;

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal record at byte {position} does not decode: {reason}")]
    Corrupt { position: u64, reason: String },
    #[error("journal entry {index} does not follow entries {first}..={last}")]
    Gap { index: u64, first: u64, last: u64 },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// What the journal holds, replayed.
#[derive(Debug, Default)]
pub struct Replayed {
    pub entries: Vec<Entry>,
    pub hard_state: HardState,
    pub conf_state: Option<ConfState>,
    /// Bytes of whole, valid records; a torn tail starts here.
    pub valid_bytes: u64,
    /// Bytes cut off at the tail.
    pub torn_bytes: u64,
}

/// Appends one write's records: the entries in order, then the hard and conf states.
pub fn encode_batch(
    entries: &[Entry],
    hard_state: Option<&HardState>,
    conf_state: Option<&ConfState>,
) -> Vec<u8> {
    let mut out = Vec::new();
    for entry in entries {
        put_record(&mut out, KIND_ENTRY, entry);
    }
    if let Some(hard_state) = hard_state {
        put_record(&mut out, KIND_HARD_STATE, hard_state);
    }
    if let Some(conf_state) = conf_state {
        put_record(&mut out, KIND_CONF_STATE, conf_state);
    }
    out
}

fn put_record(out: &mut Vec<u8>, kind: u8, message: &dyn protobuf::Message) {
    let mut body = vec![kind];
    // Writing a protobuf message into a Vec cannot fail (no I/O, no size limit reached by
    // these messages); an error here is a bug in the codec.
    if let Err(e) = message.write_to_vec(&mut body) {
        panic!("cannot encode a raft message: {e}");
    }
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
    out.extend_from_slice(&body);
}

/// Replays journal bytes (see the module doc). A record with a good CRC that does not decode,
/// or entries with a hole, are corruption: an error, not a silent cut.
pub fn replay(bytes: &[u8]) -> Result<Replayed, JournalError> {
    let mut replayed = Replayed::default();
    let mut position = 0usize;
    while bytes.len() - position >= HEADER_BYTES {
        let length = u32::from_be_bytes(array(&bytes[position..position + 4])) as usize;
        let crc = u32::from_be_bytes(array(&bytes[position + 4..position + 8]));
        let start = position + HEADER_BYTES;
        if length == 0 || length > RECORD_SIZE_BYTES_MAX || bytes.len() - start < length {
            break;
        }
        let body = &bytes[start..start + length];
        if crc32c::crc32c(body) != crc {
            break;
        }
        let corrupt = |reason: String| JournalError::Corrupt { position: position as u64, reason };
        match body[0] {
            KIND_ENTRY => {
                let entry =
                    Entry::parse_from_bytes(&body[1..]).map_err(|e| corrupt(e.to_string()))?;
                splice(&mut replayed.entries, entry)?;
            }
            KIND_HARD_STATE => {
                replayed.hard_state =
                    HardState::parse_from_bytes(&body[1..]).map_err(|e| corrupt(e.to_string()))?;
            }
            KIND_CONF_STATE => {
                let conf =
                    ConfState::parse_from_bytes(&body[1..]).map_err(|e| corrupt(e.to_string()))?;
                replayed.conf_state = Some(conf);
            }
            other => return Err(corrupt(format!("unknown record kind {other}"))),
        }
        position = start + length;
    }
    replayed.valid_bytes = position as u64;
    replayed.torn_bytes = (bytes.len() - position) as u64;
    Ok(replayed)
}

/// Puts `entry` into `entries` (contiguous by index): after the last one, or in place of the
/// entry at its index and everything after it.
///
/// ```text
///   entries  [5 6 7 8]      entry 7  ->  [5 6 7']       entry 9  ->  [5 6 7 8 9]
///   entry 4 or 10: a gap (error)
/// ```
pub fn splice(entries: &mut Vec<Entry>, entry: Entry) -> Result<(), JournalError> {
    if let (Some(first), Some(last)) = (entries.first(), entries.last()) {
        let (first, last) = (first.index, last.index);
        if entry.index < first || entry.index > last + 1 {
            return Err(JournalError::Gap { index: entry.index, first, last });
        }
        entries.truncate((entry.index - first) as usize);
    }
    entries.push(entry);
    Ok(())
}

/// The journal's entries that follow a snapshot at `index` of `term` (see the module doc):
/// those after it if the journal continues the snapshot's log, none otherwise (a follower
/// that crashed after persisting a snapshot sent by its leader, before resetting its
/// journal: its entries after the snapshot may be of another history; the leader sends
/// them again). A journal that starts after `index + 1` does not fit the snapshot: an error.
pub fn after_snapshot(
    entries: Vec<Entry>,
    index: u64,
    term: u64,
) -> Result<Vec<Entry>, JournalError> {
    let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
        return Ok(entries);
    };
    let (first, last) = (first.index, last.index);
    if first > index + 1 {
        return Err(JournalError::Gap { index: index + 1, first, last });
    }
    if last <= index {
        return Ok(Vec::new());
    }
    if first == index + 1 {
        return Ok(entries);
    }
    let at = (index - first) as usize;
    if entries[at].term != term {
        return Ok(Vec::new());
    }
    Ok(entries.into_iter().skip(at + 1).collect())
}

fn array(bytes: &[u8]) -> [u8; 4] {
    let mut out = [0; 4];
    out.copy_from_slice(bytes);
    out
}

/// The journal file, open for appending.
pub struct Journal {
    file: Arc<File>,
    dir: PathBuf,
}

impl Journal {
    /// Opens (creating) the journal under `data_dir`, replays it and cuts a torn tail.
    /// Blocking: call it on the blocking pool.
    pub fn open(data_dir: &Path) -> Result<(Journal, Replayed), JournalError> {
        let dir = data_dir.join(CLUSTER_DIR);
        let created = !dir.exists();
        std::fs::create_dir_all(&dir)?;
        let path: PathBuf = dir.join(JOURNAL_FILE);
        // A rewrite a crash cut short: the journal it was to replace is still whole.
        match std::fs::remove_file(dir.join(JOURNAL_TEMP_FILE)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        }
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        let replayed = replay(&bytes)?;
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        if replayed.torn_bytes > 0 {
            file.set_len(replayed.valid_bytes)?;
            file.sync_all()?;
        }
        if created {
            file.sync_all()?;
            File::open(&dir)?.sync_all()?;
            File::open(data_dir)?.sync_all()?;
        }
        Ok((Journal { file: Arc::new(file), dir }, replayed))
    }

    /// Replaces the journal with `bytes` (a whole journal: conf state, hard state, entries)
    /// atomically: written to a temporary file, fsynced, renamed over the journal, the
    /// directory fsynced; then appends go to the new file. A crash before the rename leaves
    /// the old journal, after it the new one. An error must end the process (`fatal`).
    pub async fn rewrite(&mut self, bytes: Vec<u8>) -> std::io::Result<()> {
        let dir = self.dir.clone();
        let file = glommio::executor().spawn_blocking(move || rewrite_file(&dir, &bytes)).await?;
        self.file = Arc::new(file);
        Ok(())
    }

    /// The directory of the journal and the snapshots.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes `bytes` at the end and fdatasyncs, on the blocking pool. An error must end the
    /// process (`fatal`): after a failed fdatasync nothing says what reached the disk.
    pub async fn append(&self, bytes: Vec<u8>) -> std::io::Result<()> {
        let file = self.file.clone();
        glommio::executor()
            .spawn_blocking(move || {
                (&*file).write_all(&bytes)?;
                file.sync_data()
            })
            .await
    }
}

/// `Journal::rewrite`'s I/O: the new journal in place, open for appending. Blocking.
pub fn rewrite_file(dir: &Path, bytes: &[u8]) -> std::io::Result<File> {
    let temp = dir.join(JOURNAL_TEMP_FILE);
    let mut file = File::create(&temp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    let path = dir.join(JOURNAL_FILE);
    std::fs::rename(&temp, &path)?;
    File::open(dir)?.sync_all()?;
    OpenOptions::new().append(true).open(&path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, term: u64) -> Entry {
        Entry { index, term, data: vec![index as u8; 3].into(), ..Default::default() }
    }

    fn indexes(entries: &[Entry]) -> Vec<(u64, u64)> {
        entries.iter().map(|e| (e.index, e.term)).collect()
    }

    #[test]
    fn splice_appends_overwrites_and_refuses_gaps() {
        let mut entries = Vec::new();
        for index in 5..=8 {
            splice(&mut entries, entry(index, 1)).unwrap();
        }
        splice(&mut entries, entry(7, 2)).unwrap();
        assert_eq!(indexes(&entries), [(5, 1), (6, 1), (7, 2)]);
        splice(&mut entries, entry(5, 3)).unwrap();
        assert_eq!(indexes(&entries), [(5, 3)]);
        assert!(matches!(splice(&mut entries, entry(4, 3)), Err(JournalError::Gap { .. })));
        assert!(matches!(splice(&mut entries, entry(7, 3)), Err(JournalError::Gap { .. })));
        splice(&mut entries, entry(6, 3)).unwrap();
        assert_eq!(indexes(&entries), [(5, 3), (6, 3)]);
    }

    #[test]
    fn replay_rebuilds_the_last_persisted_state() {
        let hard_state = HardState { term: 2, vote: 3, commit: 2, ..Default::default() };
        let conf = ConfState { voters: vec![1, 2, 3], ..Default::default() };
        let mut bytes = encode_batch(&[], None, Some(&conf));
        bytes.extend(encode_batch(&[entry(1, 1), entry(2, 1), entry(3, 1)], None, None));
        bytes.extend(encode_batch(&[entry(3, 2)], Some(&hard_state), None));
        let replayed = replay(&bytes).unwrap();
        assert_eq!(indexes(&replayed.entries), [(1, 1), (2, 1), (3, 2)]);
        assert_eq!(replayed.entries[2].data, vec![3u8; 3]);
        assert_eq!(replayed.hard_state, hard_state);
        assert_eq!(replayed.conf_state.unwrap().voters, vec![1, 2, 3]);
        assert_eq!(replayed.valid_bytes, bytes.len() as u64);
        assert_eq!(replayed.torn_bytes, 0);
    }

    #[test]
    fn a_torn_tail_is_cut_at_every_size() {
        let first = encode_batch(&[entry(1, 1)], None, None);
        let second = encode_batch(&[entry(2, 1)], None, None);
        let mut bytes = first.clone();
        bytes.extend(&second);
        for cut in first.len()..bytes.len() {
            let replayed = replay(&bytes[..cut]).unwrap();
            assert_eq!(indexes(&replayed.entries), [(1, 1)], "cut at {cut}");
            assert_eq!(replayed.valid_bytes, first.len() as u64);
        }
        let mut flipped = bytes.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert_eq!(replay(&flipped).unwrap().entries.len(), 1);
    }

    #[test]
    fn a_valid_record_that_does_not_decode_is_corruption() {
        let mut bytes = Vec::new();
        let body = [9u8, 1, 2];
        bytes.extend_from_slice(&(body.len() as u32).to_be_bytes());
        bytes.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
        bytes.extend_from_slice(&body);
        assert!(matches!(replay(&bytes), Err(JournalError::Corrupt { .. })));
        let mut gap = encode_batch(&[entry(1, 1)], None, None);
        gap.extend(encode_batch(&[entry(3, 1)], None, None));
        assert!(matches!(replay(&gap), Err(JournalError::Gap { .. })));
    }

    #[test]
    fn the_file_survives_a_reopen_and_loses_only_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let (_, replayed) = Journal::open(dir.path()).unwrap();
        assert!(replayed.entries.is_empty());
        let path = dir.path().join(CLUSTER_DIR).join(JOURNAL_FILE);
        let mut bytes = encode_batch(&[entry(1, 1), entry(2, 1)], None, None);
        let whole = bytes.len() as u64;
        bytes.extend_from_slice(&[0, 0, 0, 40, 1, 2]);
        std::fs::write(&path, &bytes).unwrap();
        let (_, replayed) = Journal::open(dir.path()).unwrap();
        assert_eq!(indexes(&replayed.entries), [(1, 1), (2, 1)]);
        assert_eq!(replayed.torn_bytes, 6);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), whole);
    }

    #[test]
    fn after_a_snapshot_only_the_entries_that_continue_it_are_kept() {
        let log = |first: u64, last: u64, term: u64| -> Vec<Entry> {
            (first..=last).map(|index| entry(index, term)).collect()
        };
        // No snapshot-era journal: nothing to keep or everything after.
        assert!(after_snapshot(vec![], 5, 1).unwrap().is_empty());
        assert_eq!(indexes(&after_snapshot(log(1, 8, 1), 5, 1).unwrap()), [(6, 1), (7, 1), (8, 1)]);
        // A rewritten journal starts right after the snapshot.
        assert_eq!(indexes(&after_snapshot(log(6, 7, 1), 5, 1).unwrap()), [(6, 1), (7, 1)]);
        // Everything covered by the snapshot.
        assert!(after_snapshot(log(1, 5, 1), 5, 1).unwrap().is_empty());
        assert!(after_snapshot(log(1, 3, 1), 5, 1).unwrap().is_empty());
        // Another history at the snapshot's index (a follower sent a snapshot): dropped.
        assert!(after_snapshot(log(1, 8, 2), 5, 1).unwrap().is_empty());
        // A journal that starts after the snapshot's next entry does not fit.
        assert!(matches!(after_snapshot(log(7, 8, 1), 5, 1), Err(JournalError::Gap { .. })));
    }

    /// The snapshot's crash points (node.rs module doc) over real files: before the snapshot
    /// file, between it and the journal's rewrite, inside the rewrite, after it; each start
    /// rebuilds the same entries after the snapshot and the same hard state.
    #[test]
    fn every_crash_point_of_a_snapshot_recovers_the_same_log() {
        let dir = tempfile::tempdir().unwrap();
        let (_, _) = Journal::open(dir.path()).unwrap();
        let cluster = dir.path().join(CLUSTER_DIR);
        let hard_state = HardState { term: 1, vote: 1, commit: 9, ..Default::default() };
        let conf = ConfState { voters: vec![1, 2, 3], ..Default::default() };
        let entries: Vec<Entry> = (1..=10).map(|index| entry(index, 1)).collect();
        let mut whole = encode_batch(&[], None, Some(&conf));
        whole.extend(encode_batch(&entries, Some(&hard_state), None));
        std::fs::write(cluster.join(JOURNAL_FILE), &whole).unwrap();
        let start = |snapshot: Option<u64>| {
            let (_, replayed) = Journal::open(dir.path()).unwrap();
            let kept = match snapshot {
                Some(index) => after_snapshot(replayed.entries, index, 1).unwrap(),
                None => replayed.entries,
            };
            (indexes(&kept), replayed.hard_state)
        };
        // 0. Before the snapshot file: the whole journal.
        assert_eq!(start(None).0.len(), 10);
        // 1. Inside the snapshot's write: only its temporary file, removed at load.
        std::fs::write(cluster.join("00000000000000000006.snapshot.tmp"), b"SPMS").unwrap();
        let expected: Vec<(u64, u64)> = (7..=10).map(|index| (index, 1)).collect();
        // 2. Snapshot 6 written, journal not rewritten yet.
        assert_eq!(start(Some(6)), (expected.clone(), hard_state.clone()));
        // 3. Inside the rewrite: a temporary journal, removed; the old one still whole.
        std::fs::write(cluster.join(JOURNAL_TEMP_FILE), b"partial").unwrap();
        assert_eq!(start(Some(6)), (expected.clone(), hard_state.clone()));
        assert!(!cluster.join(JOURNAL_TEMP_FILE).exists());
        // 4. After the rewrite: the new journal alone.
        let mut rewritten = encode_batch(&entries[6..], Some(&hard_state), Some(&conf));
        rewritten.extend(encode_batch(&[entry(11, 1)], None, None));
        rewrite_file(&cluster, &rewritten).unwrap();
        let (kept, replayed_hard_state) = start(Some(6));
        assert_eq!(kept[..4], expected[..]);
        assert_eq!(kept[4], (11, 1));
        assert_eq!(replayed_hard_state, hard_state);
    }
}
