//! A shard: what one core owns, as plumbing. Its identity and settings, its copy of the
//! catalog, the routing of partitions and keys to shards, its delayed operations, and the
//! typed cross-core mesh the services use. The services that live on a shard (partition
//! logs in `partition`, the controller, the group and transaction coordinators) sit above
//! it: `shard` imports none of them.
//!
//! Lifecycle: built on its executor thread at start (`Shard::new`), serves until shutdown.
//! Lives in an `Rc` on that thread only; all state is in `RefCell`s borrowed briefly and
//! never across an `.await`. Other cores reach a shard's services only through their meshes.

pub mod catalog;
pub mod delayed;
pub mod internal_log;
pub mod mesh;
pub mod purgatory;
pub mod table;

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use crate::config::Config;
use crate::constants::CLUSTER_INTERNAL_TOPIC_PARTITIONS;
use crate::metrics::ShardMetrics;
use crate::model::{ShardId, TopicPartition};
use crate::shard::catalog::Catalog;
use crate::shard::delayed::Delayed;
use crate::shard::internal_log::InternalRoles;
use crate::storage::space::SpaceGate;

/// The shard that runs the controller: topic changes and producer ids.
pub const CONTROLLER: ShardId = ShardId(0);

pub struct Shard {
    pub id: ShardId,
    pub config: Config,
    /// This shard's copy of the topics; the controller changes every copy (`partition`'s
    /// ApplyTopic and RemovePartitions).
    pub catalog: RefCell<Catalog>,
    /// Everything on this shard that waits for an event or a deadline.
    pub delayed: Rc<Delayed>,
    /// The free-space reserve: asked before a write that a client wants (produce, offset
    /// commits, transactions, topic creation).
    pub space: SpaceGate,
    /// This shard's request counters (`metrics`): per API, per listener.
    pub metrics: Rc<ShardMetrics>,
    /// Clustered: the internal topics' partitions this shard owns and this node's part in
    /// each (set by `partition`, read by the coordinators).
    pub internal: InternalRoles,
    next_waiter: Cell<u64>,
}

impl Shard {
    pub fn new(id: ShardId, config: Config, catalog: Catalog) -> Shard {
        Shard {
            id,
            space: SpaceGate::new(&config.data_dir, config.min_free_bytes),
            metrics: Rc::new(ShardMetrics::new(config.listeners.len())),
            config,
            catalog: RefCell::new(catalog),
            delayed: Rc::new(Delayed::new()),
            internal: InternalRoles::default(),
            next_waiter: Cell::new(1),
        }
    }

    pub fn shards(&self) -> usize {
        self.config.cores
    }

    /// The shard that owns partition `tp`.
    pub fn owner(&self, tp: &TopicPartition) -> ShardId {
        table::shard_for(&tp.topic, tp.partition, self.shards())
    }

    /// The shard that coordinates `key` (a group id, a transactional id) of `internal_topic`:
    /// on a single node by the key's hash; clustered, the owner of the key's partition of the
    /// internal topic, whose log holds the key's records (`internal_log`).
    pub fn coordinator_of(&self, internal_topic: &str, key: &str) -> ShardId {
        if self.config.cluster.is_none() || !internal_log::replicated(internal_topic) {
            return table::shard_for_key(key, self.shards());
        }
        let partition = table::coordinator_partition(key, CLUSTER_INTERNAL_TOPIC_PARTITIONS);
        table::shard_for(internal_topic, partition as i32, self.shards())
    }

    /// A new id for a waiting operation on this shard (unique per shard).
    pub fn new_waiter_id(&self) -> u64 {
        let id = self.next_waiter.get();
        self.next_waiter.set(id + 1);
        id
    }
}
