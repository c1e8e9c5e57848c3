//! Set-up shared by the partition log's integration tests (`storage_log`,
//! `storage_idempotence`, `storage_files`): a topic config, a temporary directory (under
//! SPATE_TEST_DIR when it is set, e.g. an NVMe mount), a glommio executor that has run the
//! broker's O_DIRECT probe, a log of the one test partition, and a reader of every batch.
//! Each test binary includes it with `mod common;`.

// Not every test binary uses every helper.
#![allow(dead_code)]

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use glommio::LocalExecutorBuilder;
use spate::model::batch::{scan_stored, ScannedBatch};
use spate::model::topic::{Durability, TimestampType, TopicConfig};
use spate::model::TopicPartition;
use spate::model::{FirstBatch, Offset};
use spate::storage::log::{self, Log, ReadChunk};

/// A topic config with segments of `segment_bytes`, no time-based roll and no retention.
pub fn config(segment_bytes: u64) -> TopicConfig {
    TopicConfig {
        segment_bytes,
        segment_ms: i64::MAX / 2,
        retention_ms: -1,
        retention_bytes: -1,
        max_message_bytes: 1 << 20,
        timestamp_type: TimestampType::CreateTime,
        durability: Durability::Write,
        min_insync_replicas: 1,
        cleanup: Default::default(),
        delivery_delay_ms: -1,
        dead_letter_group_enable: false,
    }
}

/// A fresh temporary directory, under SPATE_TEST_DIR when it is set.
pub fn temp_dir() -> tempfile::TempDir {
    match std::env::var_os("SPATE_TEST_DIR") {
        Some(root) => tempfile::tempdir_in(root).expect("tempdir"),
        None => tempfile::tempdir().expect("tempdir"),
    }
}

/// Runs `body` on a fresh glommio executor after the O_DIRECT probe the broker runs.
pub fn on_executor<F, Fut>(dir: PathBuf, body: F)
where
    F: FnOnce(PathBuf) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    LocalExecutorBuilder::default()
        .spawn(move || async move {
            std::fs::create_dir_all(dir.join("__spate_meta")).expect("meta dir");
            spate::broker::probe_direct_io(&dir, spate::model::ShardId(0)).await;
            body(dir).await;
        })
        .expect("executor")
        .join()
        .expect("join");
}

/// The one partition the tests write to.
pub fn tp() -> TopicPartition {
    TopicPartition::new("orders".into(), 0)
}

/// Opens (or recovers) the log of `tp()` under `dir`.
pub async fn open(dir: &Path, config: TopicConfig) -> Rc<RefCell<Log>> {
    let (log, _) = Log::open(dir, tp(), config, None).await.expect("open");
    Rc::new(RefCell::new(log))
}

/// Reads everything from `offset` and returns the batches in the order read.
pub async fn read_batches(log: &Rc<RefCell<Log>>, mut offset: Offset) -> Vec<ScannedBatch> {
    let mut out = Vec::new();
    loop {
        let outcome = log::read(log, offset, 1 << 20, FirstBatch::Whole).await.expect("read");
        if outcome.size_bytes == 0 {
            return out;
        }
        let mut bytes = Vec::new();
        for chunk in outcome.chunks {
            match chunk {
                ReadChunk::Memory(b) => bytes.extend_from_slice(&b),
                ReadChunk::File { file, position, len } => {
                    use std::os::unix::fs::FileExt;
                    let mut buf = vec![0; len as usize];
                    file.read_exact_at(&mut buf, position).expect("pread");
                    bytes.extend_from_slice(&buf);
                }
            }
        }
        let mut at = 0;
        while let Some(batch) = scan_stored(&bytes[at..]) {
            out.push(batch);
            offset = batch.last_offset + 1;
            at += batch.size_bytes;
        }
        assert!(at > 0, "a read returned no complete batch");
    }
}
