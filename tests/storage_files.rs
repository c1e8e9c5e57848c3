//! The shard's cache of open segment files on a real glommio executor: many logs under a
//! budget far below their count keep appending, reading (from disk, not the batch cache) and
//! recovering, with the process holding no more descriptors than the budget allows.

mod common;

use std::cell::RefCell;
use std::rc::Rc;

use bytes::Bytes;
use common::{config, on_executor, read_batches, temp_dir};
use spate::model::batch::build_uncompressed;
use spate::model::{FirstBatch, Offset, TopicPartition};
use spate::storage::cache::CacheBudget;
use spate::storage::files::{self, OpenFiles};
use spate::storage::log::{self, Log};
use spate::storage::Error;

const LOGS: i32 = 64;
const BUDGET: usize = 8;

fn open_descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd").expect("/proc/self/fd").count()
}

/// How many of this process's descriptors refer to `path` (removed or not).
fn descriptors_of(path: &std::path::Path) -> usize {
    let entries = std::fs::read_dir("/proc/self/fd").expect("/proc/self/fd");
    let links = entries.filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok());
    let name = path.to_string_lossy().into_owned();
    links.filter(|link| link.to_string_lossy().trim_end_matches(" (deleted)") == name).count()
}

fn batch(count: i32) -> Bytes {
    Bytes::from(build_uncompressed(Offset::ZERO, count, 100, 1_700_000_000_000))
}

/// The last offset of every batch from `offset` (the batch cache is off, so this is the disk).
async fn last_offsets(log: &Rc<RefCell<Log>>, offset: Offset) -> Vec<i64> {
    read_batches(log, offset).await.iter().map(|batch| batch.last_offset.0).collect()
}

async fn open_all(dir: &std::path::Path, files: &Rc<OpenFiles>) -> Vec<Rc<RefCell<Log>>> {
    let mut logs = Vec::new();
    for partition in 0..LOGS {
        let tp = TopicPartition::new("many".into(), partition);
        // Small segments: every log rolls, so sealed segments compete for the budget too.
        let opened =
            Log::open_in(dir, tp, config(64 * 1024), CacheBudget::new(0), files, None).await;
        logs.push(Rc::new(RefCell::new(opened.expect("open").0)));
    }
    logs
}

#[test]
fn many_logs_work_within_a_budget_far_below_their_files() {
    let dir = temp_dir();
    on_executor(dir.path().to_path_buf(), |dir| async move {
        let before = open_descriptors();
        let files = OpenFiles::new(BUDGET);
        let logs = open_all(&dir, &files).await;
        // Round after round over every log: each append finds its file closed by the others.
        for round in 0..12 {
            for log in &logs {
                let appended = log::append(log, vec![batch(50)]).await.expect("append");
                assert_eq!(appended.base_offset, Offset(round * 50));
            }
            assert!(files.stats().open <= BUDGET, "{:?}", files.stats());
            assert!(open_descriptors() <= before + BUDGET + 2, "descriptors leak");
        }
        let stats = files.stats();
        assert!(stats.evicted > 0 && stats.opened > LOGS as u64 * 2, "{stats:?}");
        for log in &logs {
            assert!(log.borrow().segment_count() > 1, "segments did not roll");
            let expected: Vec<i64> = (1..=12).map(|round| round * 50 - 1).collect();
            assert_eq!(last_offsets(log, Offset::ZERO).await, expected);
        }
        for log in &logs {
            log::close(log).await;
        }
        drop(logs);
        assert_eq!(files.stats().open, 0, "closed logs keep descriptors");

        // Recovery within the same budget finds everything.
        let files = OpenFiles::new(BUDGET);
        let logs = open_all(&dir, &files).await;
        assert!(files.stats().open <= BUDGET);
        for log in &logs {
            assert_eq!(last_offsets(log, Offset::ZERO).await.len(), 12);
            let appended = log::append(log, vec![batch(1)]).await.expect("append");
            assert_eq!(appended.base_offset, Offset(600));
        }
    });
}

/// The last close of a removed file frees its blocks (on ext4 with `discard`, waiting for the
/// device): it must happen on the blocking pool, never on the shard's thread, which glommio's
/// io_uring close of its O_DIRECT descriptor would make it.
#[test]
fn a_removed_files_last_descriptor_is_closed_off_the_shard() {
    let dir = temp_dir();
    on_executor(dir.path().to_path_buf(), |dir| async move {
        let files = OpenFiles::new(16);
        let path = dir.join("00000000000000000000.log");
        std::fs::write(&path, vec![7u8; 1 << 20]).expect("write");
        let segment = files.new_segment();
        let direct = files.direct(segment, &path).await.expect("open");
        let buffered = files.buffered(segment, &path).expect("open").expect("room");
        assert_eq!(descriptors_of(&path), 2);
        drop((direct, buffered));
        let shard = std::thread::current().id();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(None));
        let seen_in_work = seen.clone();
        let unlinked = path.clone();
        files::close_removed(vec![files.forget(segment)], move || {
            std::fs::remove_file(&unlinked).expect("unlink");
            // The shard's O_DIRECT descriptor is closed already; the duplicate that keeps the
            // file and the buffered descriptor are this thread's to close.
            let state = (std::thread::current().id(), descriptors_of(&unlinked));
            *seen_in_work.lock().expect("lock") = Some(state);
        })
        .await;
        let (thread, open_then) = seen.lock().expect("lock").take().expect("the work ran");
        assert_ne!(thread, shard, "the unlink and the last closes ran on the shard");
        assert_eq!(open_then, 2, "the duplicate and the buffered descriptor, nothing else");
        assert_eq!(descriptors_of(&path), 0, "every descriptor of the file is closed");
        assert_eq!(files.stats().open, 0);
    });
}

#[test]
fn a_segment_removed_while_its_file_was_closed_reads_as_out_of_range() {
    let dir = temp_dir();
    on_executor(dir.path().to_path_buf(), |dir| async move {
        let files = OpenFiles::new(2);
        let tp = TopicPartition::new("gone".into(), 0);
        let opened =
            Log::open_in(&dir, tp, config(64 * 1024), CacheBudget::new(0), &files, None).await;
        let log = Rc::new(RefCell::new(opened.expect("open").0));
        for _ in 0..40 {
            log::append(&log, vec![batch(50)]).await.expect("append");
        }
        assert!(log.borrow().segment_count() > 2);
        // Another log takes the budget, so the first segment's files are closed ...
        let other = TopicPartition::new("other".into(), 0);
        let other = Log::open_in(&dir, other, config(64 * 1024), CacheBudget::new(0), &files, None);
        let other = Rc::new(RefCell::new(other.await.expect("open").0));
        log::append(&other, vec![batch(1)]).await.expect("append");
        // ... and its file disappears behind the log's back: a read must not create it anew.
        let first = log.borrow().dir().join(format!("{:020}.log", 0));
        std::fs::remove_file(&first).expect("remove");
        match log::read(&log, Offset::ZERO, 1 << 20, FirstBatch::Whole).await {
            Err(Error::OffsetOutOfRange) => {}
            other => panic!("expected OffsetOutOfRange, got {:?}", other.map(|o| o.size_bytes)),
        }
        assert!(!first.exists(), "a read created the removed segment again");
    });
}

#[test]
fn a_partition_with_a_few_records_holds_a_few_blocks_of_disk() {
    // 10,000 partitions with one record each once took 16 MiB of preallocated disk apiece.
    let dir = temp_dir();
    on_executor(dir.path().to_path_buf(), |dir| async move {
        let files = OpenFiles::new(BUDGET);
        let tp = TopicPartition::new("small".into(), 0);
        let opened =
            Log::open_in(&dir, tp, config(1 << 30), CacheBudget::new(0), &files, None).await;
        let log = Rc::new(RefCell::new(opened.expect("open").0));
        log::append(&log, vec![batch(1)]).await.expect("append");
        let path = log.borrow().dir().join(format!("{:020}.log", 0));
        let on_disk = |path: &std::path::Path| {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata(path).expect("metadata").blocks() * 512
        };
        assert!(on_disk(&path) <= 64 * 1024, "{} bytes for one record", on_disk(&path));
        // A busy partition still preallocates ahead of its writes, doubling to 16 MiB steps.
        for _ in 0..200 {
            log::append(&log, vec![batch(1000)]).await.expect("append");
        }
        let written = log.borrow().size_bytes();
        let allocated = std::fs::metadata(&path).expect("metadata").len();
        assert!(allocated > written, "nothing preallocated ahead of {written} bytes");
        assert!(allocated <= 2 * written + 64 * 1024, "{allocated} allocated for {written}");
    });
}
