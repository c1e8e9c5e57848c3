//! The partition log on a real glommio executor and real O_DIRECT files: appends, reads from
//! the cache and from disk, segment rolls, crash recovery, torn tails, retention and lookups
//! by timestamp. Each test uses its own temporary directory (set SPATE_TEST_DIR to put them
//! on a specific device, e.g. an NVMe mount).

mod common;

use std::cell::RefCell;
use std::rc::Rc;

use bytes::Bytes;
use common::{config, on_executor, open, read_batches, temp_dir, tp};
use spate::model::batch::build_uncompressed;
use spate::model::topic::TimestampType;
use spate::model::{FirstBatch, LeaderEpoch, Offset};
use spate::storage::clean_stop;
use spate::storage::log::{self, Log, ReadChunk};

/// Reads everything from `offset` and returns the batches' (base offset, last offset).
async fn read_all(log: &Rc<RefCell<Log>>, offset: i64) -> Vec<(i64, i64)> {
    let batches = read_batches(log, Offset(offset)).await;
    batches.iter().map(|batch| (batch.base_offset.0, batch.last_offset.0)).collect()
}

fn batch(count: i32, size: usize, timestamp: i64) -> Bytes {
    Bytes::from(build_uncompressed(Offset(0), count, size, timestamp))
}

#[test]
fn the_first_o_direct_file_may_be_empty_after_the_probe() {
    // glommio 0.9 turns on IOPOLL when the first O_DIRECT file it opens is empty, and then
    // every DMA read fails with EOPNOTSUPP. The broker's probe opens a non-empty file first;
    // here the very next file is a new, empty segment, and reads of it must work.
    let dir = temp_dir();
    on_executor(dir.path().to_path_buf(), |dir| async move {
        let log = open(&dir, config(1 << 20)).await;
        log::append(&log, vec![batch(3, 100, 1)]).await.expect("append");
        drop(log);
        let log = open(&dir, config(1 << 20)).await;
        assert_eq!(read_all(&log, 0).await, vec![(0, 2)]);
    });
}

#[test]
fn appends_get_consecutive_offsets_and_read_back_across_segment_rolls() {
    let dir = temp_dir();
    on_executor(dir.path().to_path_buf(), |dir| async move {
        let log = open(&dir, config(64 * 1024)).await;
        let mut expected = Vec::new();
        let mut next = 0;
        for i in 0..200 {
            let count = 1 + i % 5;
            let info = log::append(&log, vec![batch(count, 900, i64::from(i))]).await.expect("ok");
            assert_eq!(info.base_offset.0, next);
            expected.push((next, next + i64::from(count) - 1));
            next += i64::from(count);
        }
        assert!(log.borrow().segment_count() > 2, "200 KB in 64 KiB segments must roll");
        assert_eq!(log.borrow().high_watermark.0, next);
        assert_eq!(read_all(&log, 0).await, expected);
        // From the middle of a batch: the batch holding the offset comes first.
        let middle = expected[57].0 + 1;
        let from_middle = read_all(&log, middle).await;
        assert_eq!(from_middle[0].0, expected[57].0.min(middle));
        log::close(&log).await;
        // After a restart the cache is empty: every read goes to the files.
        let log = open(&dir, config(64 * 1024)).await;
        assert_eq!(log.borrow().high_watermark.0, next);
        assert_eq!(read_all(&log, 0).await, expected);
        let info = log::append(&log, vec![batch(1, 10, 1)]).await.expect("append");
        assert_eq!(info.base_offset.0, next);
    });
}

#[test]
fn concurrent_appends_share_writes_and_keep_their_order() {
    const APPENDS: usize = 64;
    // Each append's batch carries its id in its timestamp, to be recognised on disk.
    const TIMESTAMP_BASE: i64 = 1_700_000_000_000;
    let dir = temp_dir();
    on_executor(dir.path().to_path_buf(), |dir| async move {
        let log = open(&dir, config(1 << 20)).await;
        // A task notes its id in `issued` and calls `append` in the same poll: `append`
        // assigns offsets before its first await, so `issued` is the order the log saw.
        let issued = Rc::new(RefCell::new(Vec::new()));
        let tasks: Vec<_> = (0..APPENDS)
            .map(|id| {
                let log = log.clone();
                let issued = issued.clone();
                glommio::spawn_local(async move {
                    issued.borrow_mut().push(id);
                    let batch = batch(2, 50, TIMESTAMP_BASE + id as i64);
                    (id, log::append(&log, vec![batch]).await.expect("append").base_offset.0)
                })
            })
            .collect();
        let mut base_offsets = vec![-1; APPENDS];
        for task in tasks {
            let (id, base_offset) = task.await;
            base_offsets[id] = base_offset;
        }
        let issued = issued.borrow().clone();
        let in_issue_order: Vec<i64> = issued.iter().map(|&id| base_offsets[id]).collect();
        assert_eq!(in_issue_order, (0..APPENDS as i64).map(|i| i * 2).collect::<Vec<_>>());
        // The log holds the batches in that order too.
        let stored = read_batches(&log, Offset(0)).await;
        let stored_ids: Vec<usize> =
            stored.iter().map(|batch| (batch.max_timestamp - TIMESTAMP_BASE) as usize).collect();
        assert_eq!(stored_ids, issued);
        // Group commit: the appends queued while a write was in flight shared the next one.
        let writes = log.borrow().writes;
        assert!(writes >= 1);
        assert!(writes * 4 <= APPENDS as u64, "{APPENDS} appends took {writes} writes");
    });
}

#[test]
fn a_crash_without_close_loses_nothing_that_was_acknowledged() {
    let dir = temp_dir();
    on_executor(dir.path().to_path_buf(), |dir| async move {
        let log = open(&dir, config(64 * 1024)).await;
        for i in 0..50 {
            log::append(&log, vec![batch(3, 1000, i)]).await.expect("append");
        }
        // No close: the active segment keeps its zero padding and has no index files.
        drop(log);
        let (log, report) = Log::open(&dir, tp(), config(64 * 1024), None).await.expect("reopen");
        let log = Rc::new(RefCell::new(log));
        assert!(report.truncated_segments <= 1, "only the padding of the active segment");
        assert_eq!(log.borrow().high_watermark.0, 150);
        assert_eq!(read_all(&log, 0).await.len(), 50);
    });
}

#[test]
fn a_torn_tail_is_cut_at_the_last_whole_batch() {
    for damage in ["cut", "garbage", "zeros"] {
        let dir = temp_dir();
        on_executor(dir.path().to_path_buf(), move |dir| async move {
            let log = open(&dir, config(1 << 20)).await;
            for i in 0..10 {
                log::append(&log, vec![batch(2, 300, i)]).await.expect("append");
            }
            let data = log.borrow().size_bytes() as usize;
            log::close(&log).await;
            drop(log);
            let path = dir.join("orders-0").join("00000000000000000000.log");
            let mut bytes = std::fs::read(&path).expect("read log");
            // A clean stop leaves the preallocated zeros after the batches.
            assert!(bytes.len() >= data && bytes[data..].iter().all(|b| *b == 0));
            bytes.truncate(data);
            let whole = bytes.len();
            match damage {
                "cut" => bytes.truncate(whole - 7),
                "garbage" => bytes.extend_from_slice(b"this is not a record batch at all......"),
                _ => bytes.extend_from_slice(&[0u8; 5000]),
            }
            std::fs::write(&path, &bytes).expect("damage");
            let (log, report) = Log::open(&dir, tp(), config(1 << 20), None).await.expect("reopen");
            let log = Rc::new(RefCell::new(log));
            assert_eq!(report.truncated_segments, 1, "{damage}");
            let expected_end = if damage == "cut" { 18 } else { 20 };
            assert_eq!(log.borrow().high_watermark.0, expected_end, "{damage}");
            assert_eq!(read_all(&log, 0).await.len() as i64, expected_end / 2, "{damage}");
            let size = std::fs::metadata(&path).expect("stat").len();
            assert!(size <= whole as u64, "{damage}: the garbage is gone");
            let info = log::append(&log, vec![batch(1, 10, 1)]).await.expect("append");
            assert_eq!(info.base_offset.0, expected_end, "{damage}");
        });
    }
}

/// Fills three or more 64 KiB segments with 400 records, closes the log and applies
/// `damage` to the first segment's file; returns where the first segment ended.
fn sealed_segments_then(dir: &std::path::Path, damage: fn(&mut Vec<u8>)) -> i64 {
    on_executor(dir.to_path_buf(), move |dir| async move {
        let log = open(&dir, config(64 * 1024)).await;
        for i in 0..200 {
            log::append(&log, vec![batch(2, 900, i)]).await.expect("append");
        }
        assert!(log.borrow().segment_count() > 2, "must roll");
        log::close(&log).await;
        drop(log);
        let path = dir.join("orders-0").join("00000000000000000000.log");
        let mut bytes = std::fs::read(&path).expect("read");
        damage(&mut bytes);
        std::fs::write(&path, &bytes).expect("damage");
    });
    let bases = spate::storage::segment::list_segments(&dir.join("orders-0")).expect("list");
    bases[1].0
}

#[test]
fn zeros_after_a_sealed_segment_keep_the_segments_after_it() {
    // A roll truncates the sealed segment to its true length; a power loss can undo that
    // truncation and leave the block's zero padding (the power-loss trials found recovery
    // then dropped every later segment: acknowledged, fsynced records lost).
    let dir = temp_dir();
    sealed_segments_then(dir.path(), |bytes| {
        let padded = bytes.len().next_multiple_of(4096) + 4096;
        bytes.resize(padded, 0);
    });
    on_executor(dir.path().to_path_buf(), move |dir| async move {
        let (log, report) = Log::open(&dir, tp(), config(64 * 1024), None).await.expect("reopen");
        let log = Rc::new(RefCell::new(log));
        // The sealed segment's padding, and the active one's preallocated zeros (no clean-stop
        // record is given here).
        assert_eq!(report.truncated_segments, 2, "the padding is cut");
        assert_eq!(log.borrow().high_watermark.0, 400, "no segment after it dropped");
        assert_eq!(read_all(&log, 0).await.len(), 200);
    });
}

#[test]
fn a_sealed_segment_that_lost_records_drops_the_segments_after_it() {
    let dir = temp_dir();
    let first_end = sealed_segments_then(dir.path(), |bytes| bytes.truncate(bytes.len() - 7));
    on_executor(dir.path().to_path_buf(), move |dir| async move {
        let (log, _) = Log::open(&dir, tp(), config(64 * 1024), None).await.expect("reopen");
        let log = Rc::new(RefCell::new(log));
        // Its last batch (two records) is gone, and the log stays contiguous.
        assert_eq!(log.borrow().high_watermark.0, first_end - 2);
        assert_eq!(log.borrow().segment_count(), 1);
    });
}

#[test]
fn a_damaged_index_is_rebuilt() {
    let dir = temp_dir();
    on_executor(dir.path().to_path_buf(), |dir| async move {
        let log = open(&dir, config(64 * 1024)).await;
        for i in 0..100 {
            log::append(&log, vec![batch(1, 2000, i)]).await.expect("append");
        }
        log::close(&log).await;
        drop(log);
        let index = dir.join("orders-0").join("00000000000000000000.index");
        std::fs::write(&index, b"\xff\xff\xff\xff\x00\x00\x00\x01garbage").expect("damage");
        let log = open(&dir, config(64 * 1024)).await;
        assert_eq!(read_all(&log, 0).await.len(), 100);
        assert_eq!(read_all(&log, 42).await[0], (42, 42));
    });
}

#[test]
fn retention_by_size_deletes_whole_old_segments() {
    let dir = temp_dir();
    on_executor(dir.path().to_path_buf(), |dir| async move {
        let mut retained = config(64 * 1024);
        retained.retention_bytes = 128 * 1024;
        let log = open(&dir, retained).await;
        for i in 0..200 {
            log::append(&log, vec![batch(1, 2000, i)]).await.expect("append");
        }
        let before = log.borrow().segment_count();
        let removed = log::enforce_retention(&log, 0).await.expect("retention");
        assert!(removed > 0 && log.borrow().segment_count() == before - removed);
        let start = log.borrow().log_start_offset;
        assert!(start > Offset(0));
        assert!(log.borrow().size_bytes() < 128 * 1024 + 64 * 1024);
        let batches = read_all(&log, start.0).await;
        assert_eq!(batches.first().map(|b| b.0), Some(start.0));
        assert!(
            log::read(&log, Offset(0), 1000, FirstBatch::Whole).await.is_err(),
            "below the log start"
        );
    });
}

#[test]
fn lookup_by_timestamp_finds_the_first_record_at_or_after() {
    let dir = temp_dir();
    on_executor(dir.path().to_path_buf(), |dir| async move {
        let log = open(&dir, config(64 * 1024)).await;
        for i in 0..100i64 {
            // Batch i holds offsets 2i and 2i+1, both at timestamp 1000 + 10 i.
            log::append(&log, vec![batch(2, 1500, 1000 + 10 * i)]).await.expect("append");
        }
        for (target, offset) in [(0, 0), (1000, 0), (1001, 2), (1500, 100), (1990, 198)] {
            let found = log::offset_for_timestamp(&log, target).await.expect("lookup");
            assert_eq!(found.map(|f| f.0), Some(Offset(offset)), "timestamp {target}");
        }
        assert_eq!(log::offset_for_timestamp(&log, 5000).await.expect("lookup"), None);
        let max = log::offset_of_max_timestamp(&log).await.expect("lookup");
        assert_eq!(max, Some((Offset(198), 1990)));
    });
}

#[test]
fn retention_by_time_rolls_and_deletes_expired_segments() {
    let dir = temp_dir();
    on_executor(dir.path().to_path_buf(), |dir| async move {
        let mut retained = config(64 * 1024);
        retained.retention_ms = 1_000;
        let log = open(&dir, retained).await;
        for i in 0..40 {
            // Old records: timestamps 10 000 + i ms.
            log::append(&log, vec![batch(1, 3000, 10_000 + i)]).await.expect("append");
        }
        assert!(log.borrow().segment_count() >= 2);
        // The first sealed segment is due first: when its newest record expires.
        let due = log::retention_due(&log.borrow(), 0).expect("due");
        assert!((10_000 + 1_001..10_039 + 1_001).contains(&due), "{due}");
        // "Now" is long after every record: the first pass deletes the sealed segments and
        // rolls the expired active one, the second deletes that too.
        let now = 1_000_000;
        log::enforce_retention(&log, now).await.expect("retention");
        log::enforce_retention(&log, now).await.expect("retention");
        assert_eq!(log.borrow().segment_count(), 1, "only a fresh, empty active segment");
        assert_eq!(log::retention_due(&log.borrow(), now), None, "only a write gives it work");
        assert_eq!(log.borrow().log_start_offset.0, 40);
        assert_eq!(log.borrow().high_watermark.0, 40);
        let info = log::append(&log, vec![batch(1, 10, now)]).await.expect("append");
        assert_eq!(info.base_offset.0, 40);
        assert_eq!(read_all(&log, 40).await, vec![(40, 40)]);
        // Records inside the retention window are kept, until they expire.
        assert_eq!(log::retention_due(&log.borrow(), now), Some(now + 1_000 + 1));
        log::enforce_retention(&log, now + 500).await.expect("retention");
        assert_eq!(read_all(&log, 40).await, vec![(40, 40)]);
    });
}

#[test]
fn log_append_time_topics_get_the_broker_timestamp() {
    let dir = temp_dir();
    on_executor(dir.path().to_path_buf(), |dir| async move {
        let mut append_time = config(1 << 20);
        append_time.timestamp_type = TimestampType::LogAppendTime;
        let log = open(&dir, append_time).await;
        let before = spate::model::now_ms();
        let info = log::append(&log, vec![batch(2, 10, 5)]).await.expect("append");
        assert!(info.log_append_time >= before);
        let outcome = log::read(&log, Offset(0), 1 << 20, FirstBatch::Whole).await.expect("read");
        let ReadChunk::Memory(bytes) = &outcome.chunks[0] else { panic!("tail read from cache") };
        let header = spate::model::batch::validate(bytes, usize::MAX).expect("CRC still valid");
        assert_eq!(header.max_timestamp(), info.log_append_time);
    });
}

#[test]
fn appends_enqueued_in_turn_get_offsets_in_turn_and_land_together() {
    // The first stage of a pipelined produce: `enqueue` assigns offsets without an await, so
    // appends enqueued one after another are ordered as enqueued, and none is durable before
    // the flusher ran. Waiting for the last one finds every earlier one durable too, and the
    // log reads them back in order after a reopen (they were really written).
    let dir = temp_dir();
    on_executor(dir.path().to_path_buf(), |dir| async move {
        let log = open(&dir, config(1 << 20)).await;
        let mut pending: Vec<log::Appending> = (0..20)
            .map(|i| log::enqueue(&log, vec![batch(1 + i % 3, 100, 1)]).expect("enqueue"))
            .collect();
        assert!(pending.iter_mut().all(|a| a.outcome().is_none()), "durable before a write");
        assert_eq!(log.borrow().high_watermark.0, 0);
        pending.last_mut().expect("twenty").wait().await;
        let mut expected_base = 0;
        for (i, appending) in pending.iter_mut().enumerate() {
            let info = appending.outcome().expect("durable").expect("appended");
            assert_eq!(info.base_offset.0, expected_base, "append {i}");
            expected_base += 1 + i as i64 % 3;
        }
        log::close(&log).await;
        drop(log);
        let log = open(&dir, config(1 << 20)).await;
        let batches = read_all(&log, 0).await;
        assert_eq!(batches.len(), 20);
        assert_eq!(batches.last().map(|b| b.1), Some(expected_base - 1));
    });
}

/// The active segment's length on disk and whether everything after `data` bytes is zeros.
fn active_file(dir: &std::path::Path, data: u64) -> (u64, bool) {
    let path = dir.join("orders-0").join("00000000000000000000.log");
    let bytes = std::fs::read(path).expect("read log");
    let zeros = bytes.len() as u64 >= data && bytes[data as usize..].iter().all(|b| *b == 0);
    (bytes.len() as u64, zeros)
}

#[test]
fn a_clean_stop_record_resumes_the_log_and_leaves_the_files_alone() {
    let dir = temp_dir();
    on_executor(dir.path().to_path_buf(), |dir| async move {
        let log = open(&dir, config(1 << 20)).await;
        let mut expected = Vec::new();
        for i in 0..40 {
            let info = log::append(&log, vec![batch(3, 700, 1_000 + i)]).await.expect("append");
            expected.push((info.base_offset.0, info.base_offset.0 + 2));
        }
        let size = log.borrow().size_bytes();
        let state = log::close(&log).await;
        drop(log);
        let last = expected.last().expect("forty").0;
        assert_eq!((state.size, state.next_offset.0), (size, last + 3));
        assert_eq!(state.last_batch.map(|b| b.base_offset.0), Some(last));
        assert!(state.index.offsets.len() > 1, "several index entries over 84 KB");
        let names: Vec<String> = std::fs::read_dir(dir.join("orders-0"))
            .expect("dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["00000000000000000000.log"], "a clean stop writes no files");
        let (length, zeros) = active_file(&dir, size);
        assert!(length > size && zeros, "the preallocated zeros stay ({length} > {size})");

        let (log, report) = Log::open(&dir, tp(), config(1 << 20), Some(&state)).await.expect("r");
        assert_eq!((report.resumed, report.truncated_segments), (1, 0));
        let log = Rc::new(RefCell::new(log));
        assert_eq!(log.borrow().high_watermark.0, last + 3);
        assert_eq!(read_all(&log, 0).await, expected);
        assert_eq!(read_all(&log, 61).await[0], (60, 62), "the index came from the record");
        let found = log::offset_for_timestamp(&log, 1_020).await.expect("lookup");
        assert_eq!(found.map(|f| f.0), Some(Offset(60)), "the time index came from the record");
        // Appends write over the zeros; a crash after them recovers from the files.
        let info = log::append(&log, vec![batch(2, 10, 5)]).await.expect("append");
        assert_eq!(info.base_offset.0, last + 3);
        drop(log);
        let (log, report) = Log::open(&dir, tp(), config(1 << 20), None).await.expect("crash");
        assert_eq!(report.resumed, 0);
        let log = Rc::new(RefCell::new(log));
        expected.push((last + 3, last + 4));
        assert_eq!(read_all(&log, 0).await, expected);
    });
}

#[test]
fn a_clean_stop_record_that_no_longer_matches_the_files_is_not_used() {
    let dir = temp_dir();
    on_executor(dir.path().to_path_buf(), |dir| async move {
        let log = open(&dir, config(1 << 20)).await;
        for i in 0..10 {
            log::append(&log, vec![batch(2, 300, i)]).await.expect("append");
        }
        let state = log::close(&log).await;
        drop(log);
        let reopen = |state: clean_stop::LogState| {
            let dir = dir.clone();
            async move {
                let opened = Log::open(&dir, tp(), config(1 << 20), Some(&state)).await;
                let (log, report) = opened.expect("open");
                let log = Rc::new(RefCell::new(log));
                let end = log.borrow().high_watermark.0;
                (report.resumed, end, read_all(&log, 0).await.len())
            }
        };
        // Another last batch, or another place or length for it: recovered from the files.
        let mut wrong_crc = state.clone();
        wrong_crc.last_batch.as_mut().expect("last").crc ^= 1;
        assert_eq!(reopen(wrong_crc).await, (0, 20, 10));
        let mut longer = state.clone();
        longer.size += 1;
        assert_eq!(reopen(longer).await, (0, 20, 10));
        let mut further = state.clone();
        further.next_offset.0 += 1;
        assert_eq!(reopen(further).await, (0, 20, 10));
        // Batches written after the record was taken (by a start that did not consume it)
        // are found after its end and kept.
        let (log, _) = Log::open(&dir, tp(), config(1 << 20), None).await.expect("open");
        let log = Rc::new(RefCell::new(log));
        for i in 0..3 {
            log::append(&log, vec![batch(1, 50, i)]).await.expect("append");
        }
        drop(log);
        assert_eq!(reopen(state.clone()).await, (1, 23, 13));
        // A file cut inside the recorded batches, or a damaged last batch.
        let path = dir.join("orders-0").join("00000000000000000000.log");
        let mut bytes = std::fs::read(&path).expect("read");
        let last = state.last_batch.expect("last").position as usize;
        bytes[last + 70] ^= 0xff;
        std::fs::write(&path, &bytes).expect("damage");
        assert_eq!(reopen(state.clone()).await, (0, 18, 9));
    });
}

#[test]
fn a_log_deleted_while_its_flusher_writes_the_epochs_file_fails_its_waiters() {
    // A reassignment deleted a follower's log while its flusher awaited the write of the
    // leader epochs file; the flusher then looked for the active segment of a log that had
    // none, and the shard panicked (a CI run, 2026-12-06).
    let dir = temp_dir();
    on_executor(dir.path().to_path_buf(), |dir| async move {
        let log = open(&dir, config(1 << 20)).await;
        log::set_replication(&log, LeaderEpoch(3), false);
        let mut appending = log::enqueue(&log, vec![batch(2, 100, 1)]).expect("queued");
        // The flusher starts and awaits the epochs file's write; the log goes meanwhile.
        futures_lite::future::yield_now().await;
        log::delete(&log).await;
        appending.wait().await;
        assert!(matches!(appending.outcome(), Some(Err(_))), "the append cannot succeed");
        // A later append is refused as deleted, and nothing panicked.
        assert!(log::enqueue(&log, vec![batch(1, 100, 2)]).is_err());
    });
}
