//! Idempotent producers in the partition log on a real glommio executor and real O_DIRECT
//! files: duplicates answered with their original offsets and never written twice, sequence
//! and epoch errors, and producer state that survives a clean restart (snapshot), a crash
//! without close (rebuilt from batch headers), segment rolls, damaged or stale snapshots, and
//! expiry of idle producers. Set SPATE_TEST_DIR to run on a specific device.

mod common;

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::Bytes;
use common::{config, on_executor, open, temp_dir, tp};
use spate::model::batch::{build_uncompressed, set_producer};
use spate::model::{Offset, ProducerEpoch, ProducerId};
use spate::storage::log::{self, Log};
use spate::storage::producer_state::ProducerError;
use spate::storage::snapshot::{self, Flush};
use spate::storage::Error;

const PID: i64 = 4242;
const DAY_MS: i64 = 24 * 60 * 60 * 1000;

fn partition_dir(dir: &Path) -> PathBuf {
    dir.join("orders-0")
}

/// An idempotent batch of `count` records of `size` bytes.
fn idempotent(epoch: i16, sequence: i32, count: i32, size: usize) -> Bytes {
    let mut bytes = build_uncompressed(Offset(0), count, size, 1_000);
    set_producer(&mut bytes, ProducerId(PID), ProducerEpoch(epoch), sequence);
    Bytes::from(bytes)
}

fn plain(count: i32) -> Bytes {
    Bytes::from(build_uncompressed(Offset(0), count, 20, 1_000))
}

async fn append(log: &Rc<RefCell<Log>>, batch: Bytes) -> Result<i64, Error> {
    log::append(log, vec![batch]).await.map(|info| info.base_offset.0)
}

fn producer_error(outcome: Result<i64, Error>) -> Option<ProducerError> {
    match outcome {
        Err(Error::Producer(e)) => Some(e),
        _ => None,
    }
}

/// Appends `batches` idempotent batches of 3 records (sequences 0, 3, 6, ...) with a plain
/// batch of 2 records after each, so producer offsets and sequences differ. Returns the
/// base offset of each idempotent batch.
async fn fill(log: &Rc<RefCell<Log>>, batches: i32, size: usize) -> Vec<i64> {
    let mut offsets = Vec::new();
    for i in 0..batches {
        offsets.push(append(log, idempotent(0, i * 3, 3, size)).await.expect("append"));
        append(log, plain(2)).await.expect("plain");
    }
    offsets
}

/// The last five batches are duplicates with their original offsets; nothing is written.
async fn assert_duplicates(log: &Rc<RefCell<Log>>, offsets: &[i64], size: usize) {
    let end = log.borrow().high_watermark.0;
    let count = offsets.len() as i32;
    for i in (count - 5).max(0)..count {
        let again = append(log, idempotent(0, i * 3, 3, size)).await.expect("duplicate");
        assert_eq!(again, offsets[i as usize], "batch {i} answered with its original offset");
    }
    assert_eq!(log.borrow().high_watermark.0, end, "duplicates are not written");
}

#[test]
fn duplicates_get_their_original_offsets_and_errors_leave_the_log_alone() {
    let dir = temp_dir();
    on_executor(dir.path().to_path_buf(), |dir| async move {
        let log = open(&dir, config(1 << 20)).await;
        let offsets = fill(&log, 8, 50).await;
        assert_eq!(offsets, (0..8).map(|i| i * 5).collect::<Vec<_>>());
        assert_duplicates(&log, &offsets, 50).await;
        let end = log.borrow().high_watermark.0;
        // A gap, a step back, an old epoch, a new epoch not at 0.
        let gap = append(&log, idempotent(0, 25, 1, 50)).await;
        assert_eq!(producer_error(gap), Some(ProducerError::OutOfOrderSequence));
        let back = append(&log, idempotent(0, 20, 1, 50)).await;
        assert_eq!(producer_error(back), Some(ProducerError::OutOfOrderSequence));
        let new_epoch = append(&log, idempotent(1, 5, 1, 50)).await;
        assert_eq!(producer_error(new_epoch), Some(ProducerError::OutOfOrderSequence));
        assert_eq!(log.borrow().high_watermark.0, end, "refused batches are not written");
        // The next sequence goes on; a bumped epoch at 0 fences the old one.
        assert_eq!(append(&log, idempotent(0, 24, 1, 50)).await.expect("next"), end);
        assert_eq!(append(&log, idempotent(1, 0, 1, 50)).await.expect("bump"), end + 1);
        let zombie = append(&log, idempotent(0, 25, 1, 50)).await;
        assert_eq!(producer_error(zombie), Some(ProducerError::InvalidProducerEpoch));
    });
}

#[test]
fn a_duplicate_of_a_batch_still_being_written_waits_for_it() {
    let dir = temp_dir();
    on_executor(dir.path().to_path_buf(), |dir| async move {
        let log = open(&dir, config(1 << 20)).await;
        // Both appends run before the flusher writes anything: the second one finds the
        // first in the producer state while it is still queued.
        let first = glommio::spawn_local({
            let log = log.clone();
            async move { append(&log, idempotent(0, 0, 4, 100)).await }
        });
        let second = glommio::spawn_local({
            let log = log.clone();
            async move {
                let offset = append(&log, idempotent(0, 0, 4, 100)).await;
                // When the duplicate answers, its original must be readable (durable).
                (offset, log.borrow().high_watermark.0)
            }
        });
        assert_eq!(first.await.expect("first"), 0);
        let (offset, high_watermark) = second.await;
        assert_eq!(offset.expect("duplicate"), 0);
        assert_eq!(high_watermark, 4);
        assert_eq!(log.borrow().high_watermark.0, 4, "written once");
    });
}

#[test]
fn producer_state_survives_a_clean_restart_through_its_clean_stop_record() {
    let dir = temp_dir();
    on_executor(dir.path().to_path_buf(), |dir| async move {
        let log = open(&dir, config(1 << 20)).await;
        let offsets = fill(&log, 7, 50).await;
        let state = log::close(&log).await;
        let end = log.borrow().high_watermark.0;
        drop(log);
        assert!(snapshot::list(&partition_dir(&dir)).is_empty(), "the record holds the state");
        let reopened = Log::open(&dir, tp(), config(1 << 20), Some(&state)).await;
        let (log, report) = reopened.expect("reopen");
        assert_eq!(report.resumed, 1);
        assert_eq!(report.producers, 1);
        assert_eq!(report.replayed_batches, 0, "the record covers the whole log");
        let log = Rc::new(RefCell::new(log));
        assert_duplicates(&log, &offsets, 50).await;
        assert_eq!(append(&log, idempotent(0, 21, 1, 50)).await.expect("next"), end);
        let gap = append(&log, idempotent(0, 30, 1, 50)).await;
        assert_eq!(producer_error(gap), Some(ProducerError::OutOfOrderSequence));
    });
}

#[test]
fn producer_state_survives_a_crash_without_close() {
    let dir = temp_dir();
    on_executor(dir.path().to_path_buf(), |dir| async move {
        let log = open(&dir, config(1 << 20)).await;
        let offsets = fill(&log, 9, 50).await;
        // No close: no snapshot; the state is rebuilt from the batch headers.
        drop(log);
        assert!(snapshot::list(&partition_dir(&dir)).is_empty());
        let (log, report) = Log::open(&dir, tp(), config(1 << 20), None).await.expect("reopen");
        assert_eq!(report.replayed_batches, 18);
        assert_eq!(report.producers, 1);
        let log = Rc::new(RefCell::new(log));
        assert_duplicates(&log, &offsets, 50).await;
        let stale = append(&log, idempotent(0, 0, 3, 50)).await;
        assert_eq!(producer_error(stale), Some(ProducerError::OutOfOrderSequence));
        let end = log.borrow().high_watermark.0;
        assert_eq!(append(&log, idempotent(0, 27, 1, 50)).await.expect("next"), end);
    });
}

#[test]
fn rolls_snapshot_the_state_and_a_crash_replays_only_the_rest() {
    let dir = temp_dir();
    on_executor(dir.path().to_path_buf(), |dir| async move {
        let log = open(&dir, config(64 * 1024)).await;
        // About 3 KiB per round: 70 rounds roll 64 KiB segments a few times.
        let offsets = fill(&log, 70, 900).await;
        let segments = log.borrow().segment_count();
        assert!(segments > 2);
        let snapshots = snapshot::list(&partition_dir(&dir));
        assert_eq!(snapshots.len(), 2, "only the newest snapshots are kept: {snapshots:?}");
        drop(log);
        let (log, report) = Log::open(&dir, tp(), config(64 * 1024), None).await.expect("reopen");
        assert!(report.replayed_batches > 0);
        assert!(report.replayed_batches < 140, "only the batches after the newest snapshot");
        let log = Rc::new(RefCell::new(log));
        assert_duplicates(&log, &offsets, 900).await;
        let end = log.borrow().high_watermark.0;
        assert_eq!(append(&log, idempotent(0, 210, 1, 900)).await.expect("next"), end);
        drop(log);
        // Once more, with the newest snapshot damaged: the older one and a longer replay.
        let newest = *snapshot::list(&partition_dir(&dir)).last().expect("a snapshot");
        let path = partition_dir(&dir).join(format!("{newest:020}.snapshot"));
        let mut bytes = std::fs::read(&path).expect("read snapshot");
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&path, bytes).expect("damage snapshot");
        let (log, longer) = Log::open(&dir, tp(), config(64 * 1024), None).await.expect("reopen");
        assert!(longer.replayed_batches > report.replayed_batches);
        let log = Rc::new(RefCell::new(log));
        let again = append(&log, idempotent(0, 210, 1, 900)).await.expect("duplicate");
        assert_eq!(again, end);
        let older = append(&log, idempotent(0, 69 * 3, 3, 900)).await.expect("duplicate");
        assert_eq!(older, offsets[69]);
        assert_eq!(append(&log, idempotent(0, 211, 1, 900)).await.expect("next"), end + 1);
    });
}

#[test]
fn a_snapshot_beyond_the_log_end_is_dropped() {
    let dir = temp_dir();
    on_executor(dir.path().to_path_buf(), |dir| async move {
        let log = open(&dir, config(1 << 20)).await;
        let offsets = fill(&log, 3, 50).await;
        log::close(&log).await;
        let end = log.borrow().high_watermark.0;
        drop(log);
        // A snapshot that claims batches the log does not hold (as after a crash that lost
        // queued batches) must not be used, and must go before new appends reuse offsets.
        let mut bogus = spate::storage::producer_state::ProducerStateTable::default();
        let mut fake = build_uncompressed(Offset(0), 1, 10, 1);
        set_producer(&mut fake, ProducerId(PID), ProducerEpoch(0), 500);
        let header = spate::model::batch::BatchHeader::parse(&fake).expect("header");
        let batch = spate::storage::producer_state::ProducerBatch::from_header(&header, 1);
        bogus.replay(&batch, Offset(end + 10), 0);
        let path = partition_dir(&dir);
        snapshot::write(
            &path,
            Offset(end + 11),
            &bogus.encode_snapshot(Offset(end + 11)),
            Flush::Now,
        )
        .expect("write");
        let (log, _) = Log::open(&dir, tp(), config(1 << 20), None).await.expect("reopen");
        assert!(snapshot::list(&path).is_empty(), "the snapshot past the end is gone");
        let log = Rc::new(RefCell::new(log));
        assert_duplicates(&log, &offsets, 50).await;
        assert_eq!(append(&log, idempotent(0, 9, 1, 50)).await.expect("next"), end);
    });
}

#[test]
fn idle_producers_expire_in_the_retention_pass() {
    let dir = temp_dir();
    on_executor(dir.path().to_path_buf(), |dir| async move {
        let log = open(&dir, config(1 << 20)).await;
        fill(&log, 2, 50).await;
        let now = spate::model::now_ms();
        log::enforce_retention(&log, now + DAY_MS - 60_000).await.expect("retention");
        assert_eq!(log.borrow().producers.len(), 1, "not idle for a day yet");
        log::enforce_retention(&log, now + DAY_MS + 60_000).await.expect("retention");
        assert!(log.borrow().producers.is_empty());
        // A forgotten producer may continue at any sequence.
        let end = log.borrow().high_watermark.0;
        assert_eq!(append(&log, idempotent(0, 77, 1, 50)).await.expect("any sequence"), end);
    });
}
