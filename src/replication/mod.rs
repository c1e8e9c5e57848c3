//! Replication on a clustered node (Kafka's ReplicaManager and ReplicaFetcherManager), one
//! per shard: a fetcher per leader node this shard follows partitions of (`fetcher.rs`:
//! Fetch with this node's replica id from the leader's client listener, whole batches
//! appended as the leader wrote them, diverging logs truncated), and the ISR changes the
//! partitions this shard leads call for, proposed to the metadata log as `AlterPartition`
//! records (Kafka's AlterPartition request: based on the partition epoch, which they move;
//! the leader epoch stays).
//!
//! ```text
//!   leader node                                 follower node, shard owning the partition
//!   Fetch(replica_id) ─▶ partition::read:       fetcher(leader) ─▶ Partitions::
//!     follower's log end ─▶ Followers ─▶ hw       fetch_positions / append_replica /
//!     read up to the log end ──────────────────▶  truncate_replica (the log's bound: the
//!   manager tick: Partitions::isr_changes          leader's high watermark)
//!     ─▶ AlterPartition ─▶ metadata log ─▶ every node's catalog ─▶ roles
//! ```
//!
//! The manager also checkpoints the shard's high watermarks every
//! `HIGH_WATERMARK_CHECKPOINT_MS` (`storage::high_watermarks`).
//!
//! Lifecycle: started on every shard of a clustered node after the logs are open; runs
//! until the process ends (fetchers end when their leader leads nothing this shard follows).
//! Concurrency: shard-local; a fetcher awaits its appends before it fetches again, so a
//! partition's batches arrive in order.

mod fetcher;

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::cluster::{Cluster, MetadataRecord};
use crate::constants::{
    HIGH_WATERMARK_CHECKPOINT_MS, REPLICA_ISR_CHANGE_RETRY_MS, REPLICA_ISR_CHANGE_RETRY_MS_MAX,
    REPLICA_MANAGER_TICK_MS,
};
use crate::model::{NodeId, PartitionEpoch, TopicPartition};
use crate::partition::Partitions;
use crate::shard::Shard;

pub struct Replication {
    shard: Rc<Shard>,
    partitions: Rc<Partitions>,
    cluster: Rc<Cluster>,
    /// The running fetchers, by leader: each clears its flag when it ends.
    fetchers: RefCell<HashMap<NodeId, Rc<std::cell::Cell<bool>>>>,
    /// The last ISR change asked for each partition, so that it is asked again only after
    /// a while, longer each time.
    asked: RefCell<HashMap<TopicPartition, Asked>>,
}

/// An ISR change asked for (Kafka's pending AlterPartition). The metadata log takes it or
/// refuses it at apply time, and both are final for the epoch it was based on; it is asked
/// again only in case the proposal was lost (a controller election drops proposals), after
/// `REPLICA_ISR_CHANGE_RETRY_MS`, doubling each time up to `REPLICA_ISR_CHANGE_RETRY_MS_MAX`,
/// so that a change the controller keeps refusing costs a record every few seconds, not
/// two a second per partition.
struct Asked {
    isr: Vec<NodeId>,
    /// The partition epoch the change was based on.
    partition_epoch: PartitionEpoch,
    at: Instant,
    /// How many times this change was asked in this epoch.
    times: u32,
}

impl Asked {
    /// How long after the last ask the same change may be asked again.
    fn retry_after(&self) -> Duration {
        let doubled = REPLICA_ISR_CHANGE_RETRY_MS << self.times.saturating_sub(1).min(16);
        Duration::from_millis(doubled.min(REPLICA_ISR_CHANGE_RETRY_MS_MAX))
    }
}

impl Replication {
    pub fn new(shard: Rc<Shard>, partitions: Rc<Partitions>, cluster: Rc<Cluster>) -> Self {
        Replication {
            shard,
            partitions,
            cluster,
            fetchers: RefCell::new(HashMap::new()),
            asked: RefCell::new(HashMap::new()),
        }
    }

    /// Starts the manager on a clustered node; nothing on a single node.
    pub fn start(self: &Rc<Self>) {
        if !self.cluster.clustered() {
            return;
        }
        glommio::spawn_local(self.clone().manage()).detach();
    }

    async fn manage(self: Rc<Self>) {
        let tick = Duration::from_millis(REPLICA_MANAGER_TICK_MS);
        let checkpoint_every = Duration::from_millis(HIGH_WATERMARK_CHECKPOINT_MS);
        let mut checkpointed = Instant::now();
        loop {
            glommio::timer::sleep(tick).await;
            self.start_fetchers();
            self.ask_for_isr_changes().await;
            if checkpointed.elapsed() >= checkpoint_every {
                checkpointed = Instant::now();
                self.partitions.checkpoint_high_watermarks().await;
            }
        }
    }

    /// A fetcher for every leader this shard follows partitions of and has none running.
    fn start_fetchers(&self) {
        let me = self.shard.config.node_id;
        let mut fetchers = self.fetchers.borrow_mut();
        fetchers.retain(|_, running| running.get());
        for leader in self.partitions.followed_leaders() {
            if fetchers.contains_key(&leader) || leader == me {
                continue;
            }
            let running = Rc::new(std::cell::Cell::new(true));
            fetchers.insert(leader, running.clone());
            let fetcher = fetcher::Fetcher {
                me,
                leader,
                shard: self.shard.id,
                partitions: self.partitions.clone(),
                cluster: self.cluster.clone(),
            };
            glommio::spawn_local(async move {
                fetcher.run().await;
                running.set(false);
            })
            .detach();
        }
    }

    /// Proposes the ISR changes of the partitions this shard leads (Kafka's AlterPartition:
    /// this leader in its leader epoch, the partition epoch it saw, the new ISR; applied
    /// only if both epochs are still the partition's, so a stale change is skipped, and
    /// then only the partition epoch moves: consumers and followers in the leader epoch
    /// are not fenced by it). A replica may join only while this node's view has its
    /// broker unfenced.
    async fn ask_for_isr_changes(&self) {
        let lag_ms = i64::try_from(self.shard.config.replica_lag_time_max_ms).unwrap_or(i64::MAX);
        let view = self.cluster.view();
        let eligible = |id: NodeId| view.as_ref().is_some_and(|v| v.live_broker(id).is_some());
        let changes = self.partitions.isr_changes(lag_ms, &eligible);
        let forget = Duration::from_millis(REPLICA_ISR_CHANGE_RETRY_MS_MAX * 2);
        let me = self.shard.config.node_id;
        let mut records = Vec::new();
        let mut first = None;
        {
            let mut asked = self.asked.borrow_mut();
            asked.retain(|_, last| last.at.elapsed() < forget);
            for change in changes {
                let again = asked.get(&change.tp).filter(|last| {
                    last.isr == change.isr && last.partition_epoch == change.partition_epoch
                });
                if again.is_some_and(|last| last.at.elapsed() < last.retry_after()) {
                    continue;
                }
                let times = again.map_or(1, |last| last.times + 1);
                let catalog = self.shard.catalog.borrow();
                let Some(meta) = catalog.get(&change.tp.topic) else { continue };
                tracing::debug!(
                    tp = %change.tp,
                    isr = ?change.isr,
                    leader_epoch = change.leader_epoch.0,
                    partition_epoch = change.partition_epoch.0,
                    times,
                    "asking the controller for an ISR change"
                );
                let last = Asked {
                    isr: change.isr.clone(),
                    partition_epoch: change.partition_epoch,
                    at: Instant::now(),
                    times,
                };
                asked.insert(change.tp.clone(), last);
                // Before it can be applied: what it adds holds the high watermark.
                self.partitions.isr_asked(&change);
                first.get_or_insert_with(|| format!("{} to {:?}", change.tp, change.isr));
                records.push(MetadataRecord::AlterPartition {
                    topic_id: meta.id,
                    partition: change.tp.partition,
                    leader: me,
                    leader_epoch: change.leader_epoch,
                    partition_epoch: change.partition_epoch,
                    isr: change.isr,
                });
            }
        }
        if let Some(first) = first {
            // One line a round (a start with thousands of partitions asks for thousands at
            // once); each change is at debug level.
            let count = records.len();
            tracing::info!("asking the controller for {count} ISR changes (the first: {first})");
        }
        for record in records {
            self.cluster.propose_from_any_shard(record).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_isr_change_is_asked_again_ever_later() {
        let asked = |times| Asked {
            isr: vec![NodeId(1)],
            partition_epoch: PartitionEpoch(3),
            at: Instant::now(),
            times,
        };
        let after = |times| asked(times).retry_after().as_millis() as u64;
        assert_eq!(after(1), REPLICA_ISR_CHANGE_RETRY_MS);
        assert_eq!(after(2), REPLICA_ISR_CHANGE_RETRY_MS * 2);
        assert_eq!(after(3), REPLICA_ISR_CHANGE_RETRY_MS * 4);
        assert_eq!(after(40), REPLICA_ISR_CHANGE_RETRY_MS_MAX);
        assert_eq!(after(u32::MAX), REPLICA_ISR_CHANGE_RETRY_MS_MAX);
    }
}
