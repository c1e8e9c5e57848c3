//! Transactions: the transaction coordinator (InitProducerId with a transactional id,
//! AddPartitionsToTxn, AddOffsetsToTxn, EndTxn, timeouts, DescribeTransactions,
//! ListTransactions), at Kafka's transaction version 1 (markers written by the
//! coordinator; no KIP-890 partition verification).
//!
//! Each transactional id is owned by one shard, `shard::table::shard_for_key(id, shards)`,
//! as Kafka hashes it onto a partition of `__transaction_state`.
//!
//! - `state`: the pure state machine, time injected, every change queued as a record.
//! - `records`: the transaction log's record format (Kafka's, plus the groups).
//! - `coordinator`: the glue on the owning shard: the log `__transaction_state-<shard>`
//!   (replayed at start-up before the shard serves), markers over the mesh, timeouts on the
//!   shard's timing wheel.
//!
//! The partition side (open transactions, the last stable offset, the aborted index) is in
//! `storage::txn_index`. TxnOffsetCommit's offsets live in the transaction's metadata until
//! the commit hands them to the groups' coordinators.

pub mod coordinator;
pub mod records;
pub mod state;
