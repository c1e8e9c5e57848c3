//! The shard's cleaner of compacted logs (Kafka's `LogCleaner`, one per shard): a task in a
//! task queue of its own with low shares (`CLEANER_SHARES`), so that produce and fetch go
//! first whenever both have work, and its I/O paced by `--log-cleaner-io-max-bytes-per-second`.
//!
//! A pass takes the compacted logs whose dirty ratio reached `min.cleanable.dirty.ratio`
//! (or whose dirty part is older than `max.compaction.lag.ms`), dirtiest first, and cleans
//! each (`storage::cleaner`); with none, it sleeps `--log-cleaner-backoff-ms`. A log whose
//! clean failed (damaged bytes) is left alone until the next start, as Kafka marks a
//! partition uncleanable. Shutdown sets `stop` and waits for the task: a clean stops before
//! its next swap.

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::{LogRef, Partitions};
use crate::config::CleanerConfig;
use crate::model::{now_ms, TopicPartition};
use crate::storage::cleaner::{self, CleanSettings, Cleanable};

/// What the shard's cleaner did since start, for metrics and tests.
#[derive(Debug, Clone, Copy, Default)]
pub struct CleanerStats {
    pub cleans: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub failures: u64,
}

/// The shard's cleaner state kept on `Partitions`.
#[derive(Debug, Default)]
pub struct CleanerState {
    pub stats: Cell<CleanerStats>,
    /// Logs whose clean failed: not cleaned again until the next start.
    failed: RefCell<HashSet<TopicPartition>>,
}

impl Partitions {
    /// Runs the shard's cleaner until `stop` is set. `shards`: how many share the offset
    /// maps' memory.
    pub async fn run_cleaner(
        self: Rc<Self>,
        config: CleanerConfig,
        shards: usize,
        stop: Rc<Cell<bool>>,
    ) {
        let settings = CleanSettings {
            map_memory_bytes: config.dedupe_buffer_bytes / shards.max(1) as u64,
            io_bytes_per_second: config.io_bytes_per_second,
            stop: stop.clone(),
        };
        while !stop.get() {
            let cleaned = self.clean_dirtiest(&settings).await;
            if cleaned {
                continue;
            }
            // Sleep in short steps, so that shutdown never waits a whole backoff.
            let until = Instant::now() + Duration::from_millis(config.backoff_ms);
            while !stop.get() && Instant::now() < until {
                let left = until.saturating_duration_since(Instant::now());
                glommio::timer::sleep(left.min(Duration::from_millis(50))).await;
            }
        }
    }

    /// Cleans the dirtiest log that is due; false when none is.
    async fn clean_dirtiest(&self, settings: &CleanSettings) -> bool {
        let Some((tp, log, plan)) = self.dirtiest() else { return false };
        let started = Instant::now();
        let ratio = plan.dirty_ratio();
        match cleaner::clean(&log, plan, settings).await {
            Ok(Some(report)) => {
                let mut stats = self.cleaner.stats.get();
                stats.cleans += 1;
                stats.bytes_read += report.bytes_read;
                stats.bytes_written += report.bytes_written;
                self.cleaner.stats.set(stats);
                tracing::info!(
                    %tp,
                    dirty_ratio = format!("{ratio:.2}"),
                    read_bytes = report.bytes_read,
                    written_bytes = report.bytes_written,
                    segments_before = report.segments_before,
                    segments_after = report.segments_after,
                    keys = report.keys,
                    cleaned_to = report.cleaned_to.0,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "cleaned a compacted log"
                );
                true
            }
            // Stopped, or the log changed under it: the next pass looks again.
            Ok(None) => {
                glommio::timer::sleep(Duration::from_millis(10)).await;
                false
            }
            Err(e) => {
                let mut stats = self.cleaner.stats.get();
                stats.failures += 1;
                self.cleaner.stats.set(stats);
                tracing::warn!(%tp, "cannot clean the log: {e}; leaving it until the next start");
                self.cleaner.failed.borrow_mut().insert(tp);
                false
            }
        }
    }

    /// The compacted log with the highest dirty ratio among those due.
    fn dirtiest(&self) -> Option<(TopicPartition, LogRef, Cleanable)> {
        let now = now_ms();
        let failed = self.cleaner.failed.borrow();
        let logs = self.logs.borrow();
        let mut best: Option<(TopicPartition, LogRef, Cleanable)> = None;
        for (tp, log) in logs.iter() {
            let l = log.borrow();
            if !l.config.cleanup.compact || failed.contains(tp) {
                continue;
            }
            let Some(plan) = cleaner::cleanable(&l, now) else { continue };
            let wanted = l.config.cleanup.min_cleanable_dirty_ratio.get();
            if !(plan.overdue || plan.dirty_ratio() >= wanted) {
                continue;
            }
            if best.as_ref().is_none_or(|(_, _, b)| plan.dirty_ratio() > b.dirty_ratio()) {
                best = Some((tp.clone(), log.clone(), plan));
            }
        }
        best
    }
}
