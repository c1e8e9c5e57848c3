//! Consumer groups and committed offsets: the classic group protocol (JoinGroup, SyncGroup,
//! Heartbeat, LeaveGroup) and the offsets store (OffsetCommit, OffsetFetch, OffsetDelete),
//! plus DescribeGroups, ListGroups and DeleteGroups.
//!
//! Each group is owned by one shard, `shard::table::shard_for_key(group_id, shards)`, as
//! Kafka hashes a group onto a partition of `__consumer_offsets`. Connections on any shard
//! forward group requests there (one mesh message per request and owning shard).
//!
//! - `state`: the pure state machine (Kafka's classic group coordinator), time injected; it
//!   holds KIP-848 consumer groups too, in the same namespace.
//! - `consumer`: a KIP-848 consumer group (ConsumerGroupHeartbeat, epochs, reconciliation).
//! - `share`: KIP-932 share groups (membership, assignment, share sessions), and
//!   `share_partition`: one share partition's records in flight (acquisition locks,
//!   acknowledgements, delivery counts). `share_call`: the calls a ShareFetch or
//!   ShareAcknowledge makes of the group's coordinator, and their bytes between brokers.
//! - `consumer_protocol`: the consumer protocol's subscription and assignment bytes that
//!   classic consumers send (read to convert groups and to serve classic members of a
//!   consumer group).
//! - `assignor`: the server-side assignors of consumer groups (`uniform`, `range`).
//! - `timers`: keyed deadlines the state machine schedules; driven by a periodic tick.
//! - `txn_offsets`: transactional offsets pending until their transaction's marker
//!   (clustered: TxnOffsetCommit goes to the group's coordinator, as in Kafka).
//! - `records`: Kafka's `__consumer_offsets` record formats (keys and values).
//! - `coordinator`: the glue on the owning shard: parks requests, runs the tick, and persists
//!   records in the shard's internal log `__consumer_offsets-<shard>`, which it replays at
//!   start-up before the shard serves.

pub mod assignor;
pub mod consumer;
pub mod consumer_protocol;
pub mod coordinator;
pub mod records;
pub mod share;
pub mod share_call;
pub mod share_partition;
pub mod share_remote;
pub mod state;
pub mod timers;
pub mod txn_offsets;
