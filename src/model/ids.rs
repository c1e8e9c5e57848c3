//! The numbers that name things in Kafka, each its own type so that two of them cannot be
//! swapped at a call site (STYLE.md R4, Redpanda's `model/fundamental.h`). Each is a `Copy`
//! newtype over its wire type with a public field: free to build and to take apart, so the
//! conversion at the edges (the `kafka-protocol` structs, on-disk formats) stays a `.0`.
//!
//! Arithmetic is only what means something: an offset plus a count of records is an offset,
//! and two offsets are a distance apart; an offset plus an offset is nothing.

use std::fmt;
use std::ops::{Add, AddAssign, Sub};

/// A Kafka offset: the position of a record in a partition's log (not a byte position in a
/// file, which is a `position`). Offsets of records start at 0; -1 (`Offset::NONE`) is the
/// wire's "no offset".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Offset(pub i64);

impl Offset {
    pub const ZERO: Offset = Offset(0);
    /// No offset: a failed result, an unknown start, a committed offset that is not there.
    pub const NONE: Offset = Offset(-1);
    pub const MIN: Offset = Offset(i64::MIN);
    pub const MAX: Offset = Offset(i64::MAX);

    /// The offset after this one.
    pub fn next(self) -> Offset {
        Offset(self.0 + 1)
    }

    /// `self + count`, stopping at `i64::MAX` (a client's batch header may claim any base
    /// offset).
    pub fn saturating_add(self, count: i64) -> Offset {
        Offset(self.0.saturating_add(count))
    }
}

/// An offset `delta` records further on.
impl Add<i64> for Offset {
    type Output = Offset;

    fn add(self, delta: i64) -> Offset {
        Offset(self.0 + delta)
    }
}

impl AddAssign<i64> for Offset {
    fn add_assign(&mut self, delta: i64) {
        self.0 += delta;
    }
}

/// How many offsets lie between two offsets.
impl Sub for Offset {
    type Output = i64;

    fn sub(self, earlier: Offset) -> i64 {
        self.0 - earlier.0
    }
}

impl fmt::Display for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// An idempotent or transactional producer's id, handed out by the controller. -1
/// (`ProducerId::NONE`) in a batch header means the batch has no producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProducerId(pub i64);

impl ProducerId {
    /// No producer (Kafka's `NO_PRODUCER_ID`).
    pub const NONE: ProducerId = ProducerId(-1);

    /// True for an id the controller hands out (Kafka's `hasProducerId`: not negative).
    pub fn is_valid(self) -> bool {
        self.0 >= 0
    }
}

impl From<kafka_protocol::messages::ProducerId> for ProducerId {
    fn from(wire: kafka_protocol::messages::ProducerId) -> ProducerId {
        ProducerId(wire.0)
    }
}

impl From<ProducerId> for kafka_protocol::messages::ProducerId {
    fn from(id: ProducerId) -> kafka_protocol::messages::ProducerId {
        kafka_protocol::messages::ProducerId(id.0)
    }
}

impl fmt::Display for ProducerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The epoch of a producer id: bumped to fence an older instance of the same producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProducerEpoch(pub i16);

impl ProducerEpoch {
    /// No epoch known (Kafka's `NO_PRODUCER_EPOCH`).
    pub const NONE: ProducerEpoch = ProducerEpoch(-1);
    /// The epoch of a freshly allocated producer id.
    pub const FIRST: ProducerEpoch = ProducerEpoch(0);

    /// True when the epoch cannot be bumped any more: Kafka keeps `i16::MAX` out of use and
    /// starts over with a new producer id before reaching it (`isEpochExhausted`).
    pub fn is_exhausted(self) -> bool {
        self.0 >= i16::MAX - 1
    }

    /// The epoch after this one. The caller checks `is_exhausted` first.
    pub fn bumped(self) -> ProducerEpoch {
        assert!(self.0 < i16::MAX);
        ProducerEpoch(self.0 + 1)
    }
}

impl fmt::Display for ProducerEpoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A partition's leader epoch: bumped each time the partition gets a new leader, written into
/// every batch header the leader appends, and kept with a committed offset so that a consumer
/// can tell whether the log it resumes on was truncated. -1 (`LeaderEpoch::NONE`) is the
/// wire's "no epoch".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LeaderEpoch(pub i32);

impl LeaderEpoch {
    /// No epoch known (Kafka's `NO_PARTITION_LEADER_EPOCH`): a committed offset without one,
    /// a ListOffsets answer below v4.
    pub const NONE: LeaderEpoch = LeaderEpoch(-1);
    /// The epoch of a partition's first leader (Kafka's `InitialLeaderEpoch`). A single node
    /// is the only leader a partition ever has, so every partition stays at this epoch.
    pub const INITIAL: LeaderEpoch = LeaderEpoch(0);
}

impl fmt::Display for LeaderEpoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A partition's epoch (Kafka's `partitionEpoch`, KIP-497): bumped by every change of the
/// partition's state on the metadata log (ISR, leader, replicas), where the leader epoch
/// moves only with the leader. A leader's ISR change names the one it saw, so that a change
/// based on a stale state is refused (INVALID_UPDATE_VERSION) rather than undo a newer one.
/// Never on the wire to clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PartitionEpoch(pub i32);

impl PartitionEpoch {
    /// A new partition's epoch.
    pub const INITIAL: PartitionEpoch = PartitionEpoch(0);

    pub fn next(self) -> PartitionEpoch {
        PartitionEpoch(self.0 + 1)
    }
}

impl fmt::Display for PartitionEpoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A broker's node id (`node.id`): what Metadata, FindCoordinator and DescribeCluster name as
/// the leader, the coordinator and the controller. -1 (`NodeId::NONE`) is the wire's "no
/// node".
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub i32);

impl NodeId {
    /// No node: a coordinator that cannot be named, no preferred read replica.
    pub const NONE: NodeId = NodeId(-1);
}

impl From<kafka_protocol::messages::BrokerId> for NodeId {
    fn from(wire: kafka_protocol::messages::BrokerId) -> NodeId {
        NodeId(wire.0)
    }
}

impl From<NodeId> for kafka_protocol::messages::BrokerId {
    fn from(id: NodeId) -> kafka_protocol::messages::BrokerId {
        kafka_protocol::messages::BrokerId(id.0)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}
