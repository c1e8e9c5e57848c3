//! Plain types with no I/O: topic-partitions, topic configs and the record batch header.

pub mod batch;
pub mod delay;
pub mod dynamic_config;
pub mod error_code;
pub mod ids;
pub mod quorum;
pub mod record_scan;
pub mod records;
pub mod settings;
pub mod topic;

use std::fmt;
use std::sync::Arc;

pub use error_code::ErrorCode;
pub use ids::{LeaderEpoch, NodeId, Offset, PartitionEpoch, ProducerEpoch, ProducerId};

/// A partition of a topic. Cheap to clone and to send to another core (the name is shared).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    pub topic: Arc<str>,
    pub partition: i32,
}

impl TopicPartition {
    pub fn new(topic: Arc<str>, partition: i32) -> TopicPartition {
        TopicPartition { topic, partition }
    }

    /// The directory name Kafka uses for this partition's log: `<topic>-<partition>`.
    pub fn dir_name(&self) -> String {
        format!("{}-{}", self.topic, self.partition)
    }
}

impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.topic, self.partition)
    }
}

/// Index of a shard (one per core). Shards are numbered 0..cores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShardId(pub u16);

impl ShardId {
    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

/// Which records a read may return: a consumer's isolation level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    /// Everything below the high watermark (read_uncommitted, isolation level 0).
    ReadUncommitted,
    /// Only what lies below the last stable offset, with the aborted transactions in that
    /// range listed (read_committed, isolation level 1).
    ReadCommitted,
}

impl Isolation {
    /// From a Fetch or ListOffsets request's isolation_level.
    pub fn from_wire(level: i8) -> Isolation {
        if level == 1 {
            Isolation::ReadCommitted
        } else {
            Isolation::ReadUncommitted
        }
    }
}

/// Which replica a partition's leader names to a consumer as the one to fetch from (Kafka's
/// `replica.selector.class`, KIP-392).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplicaSelector {
    /// Always the leader: no preferred read replica is named (Kafka's default,
    /// `LeaderSelector`).
    LeaderOnly,
    /// A live in-sync replica in the consumer's rack (`client.rack`) when the leader is not
    /// in it (Kafka's `RackAwareReplicaSelector`).
    RackAware,
}

/// What a read does with a first batch larger than its size limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstBatch {
    /// Returns it whole (KIP-74: a consumer must always make progress).
    Whole,
    /// Stops before it: the size limit is strict.
    WithinLimit,
}

/// How a transaction ends: what EndTxn asks for, what the transaction coordinator writes in
/// its Prepare and Complete states, which marker the partitions get and whether the groups
/// take the transaction's offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxnOutcome {
    /// The transaction's records become visible to read_committed consumers and its offsets
    /// become the groups' committed offsets (a COMMIT marker, control type 1).
    Commit,
    /// The transaction's records are listed as aborted and its offsets dropped (an ABORT
    /// marker, control type 0).
    Abort,
}

impl TxnOutcome {
    /// From EndTxn's `committed`.
    pub fn from_committed(committed: bool) -> TxnOutcome {
        if committed {
            TxnOutcome::Commit
        } else {
            TxnOutcome::Abort
        }
    }

    /// The type a transaction marker's key carries (Kafka's `ControlRecordType`).
    pub fn control_type(self) -> i16 {
        match self {
            TxnOutcome::Abort => 0,
            TxnOutcome::Commit => 1,
        }
    }

    /// The outcome a marker's control type names; None for any other control record.
    pub fn from_control_type(control_type: i16) -> Option<TxnOutcome> {
        match control_type {
            0 => Some(TxnOutcome::Abort),
            1 => Some(TxnOutcome::Commit),
            _ => None,
        }
    }
}

/// Milliseconds since the Unix epoch, as Kafka timestamps are.
pub fn now_ms() -> i64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    since.map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// The seed of a randomized test: `SPATE_TEST_SEED` if set, else from the clock. Printed so
/// that any failure can be replayed.
#[cfg(test)]
pub(crate) fn test_seed(test_name: &str) -> u64 {
    let seed = match std::env::var("SPATE_TEST_SEED") {
        Ok(text) => text.trim().parse().expect("SPATE_TEST_SEED must be a u64"),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_nanos() as u64),
    };
    println!("{test_name}: seed {seed} (replay with SPATE_TEST_SEED={seed})");
    seed
}

/// A xorshift64 generator for randomized tests: cheap, and one sequence per seed, so that a
/// printed seed replays the run.
#[cfg(test)]
pub(crate) struct TestRng(u64);

#[cfg(test)]
impl TestRng {
    pub(crate) fn new(seed: u64) -> TestRng {
        TestRng(seed | 1)
    }

    /// A number below `bound`.
    pub(crate) fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound
    }
}

/// Prints the seed of the case that was running when a test panics. A randomized test that
/// derives one seed per case from `test_seed` holds one for the length of each case, so that
/// the failing case can be replayed alone.
#[cfg(test)]
pub(crate) struct CaseSeed(pub(crate) u64);

#[cfg(test)]
impl Drop for CaseSeed {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("failing case: replay with SPATE_TEST_SEED={}", self.0);
        }
    }
}
