//! Set-up shared by the partition log's integration tests (`storage_log`,
//! `storage_idempotence`): a topic config, a temporary directory (under SPATE_TEST_DIR when it
//! is set, e.g. an NVMe mount), a glommio executor that has run the broker's O_DIRECT probe,
//! and a log of the one test partition. Each test binary includes it with `mod common;`.

// Not every test binary uses every helper.
#![allow(dead_code)]

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use glommio::LocalExecutorBuilder;
use spate::model::topic::{Durability, TimestampType, TopicConfig};
use spate::model::TopicPartition;
use spate::storage::log::Log;

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
    let (log, _) = Log::open(dir, tp(), config).await.expect("open");
    Rc::new(RefCell::new(log))
}
