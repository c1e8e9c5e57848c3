//! Transactional offsets a group coordinator holds until their transaction ends (Kafka's
//! `pendingTransactionalOffsetCommits`): clustered, TxnOffsetCommit goes to the group's
//! coordinator, which writes the offsets to the group's partition of `__consumer_offsets` in
//! a transactional batch of the producer and keeps them here, invisible to OffsetFetch,
//! until the transaction coordinator's marker reaches that partition: a COMMIT makes them
//! the groups' committed offsets, an ABORT drops them. Replaying the partition's log (its
//! transactional batches and markers, in order) rebuilds the same state.
//!
//! Pure: no I/O, no clock. Keyed by producer id, as a marker names only the producer; a
//! marker applies to the groups of one partition (`owned`), since one shard coordinates
//! several partitions and one transaction may span groups of several.
//!
//! Kafka's rules beside the commit (`OffsetMetadataManager`): a commit keeps, for each
//! partition, the offset whose record is last in the log, so a plain OffsetCommit written
//! after the transaction's offset stays (`supersede`: the pending offset is then skipped
//! at the commit, as Kafka compares the two records' log offsets; a later TxnOffsetCommit
//! of the transaction takes over again); a tombstone of a group's partition (OffsetDelete,
//! DeleteGroups) drops what every transaction has pending for it (`remove`); expiry leaves
//! a partition with pending offsets, and a group with any, alone (`is_pending`,
//! `has_group`).

use std::collections::{BTreeMap, BTreeSet};

use crate::group::records::OffsetValue;
use crate::model::{ErrorCode, ProducerEpoch, ProducerId, TxnOutcome};

/// One pending offset: group, topic, partition.
pub type PendingKey = (String, String, i32);

/// The pending transactional offsets of one shard's groups.
#[derive(Debug, Default)]
pub struct PendingOffsets {
    producers: BTreeMap<ProducerId, Pending>,
}

/// One producer's open transaction, as far as this coordinator has seen it.
#[derive(Debug)]
struct Pending {
    producer_epoch: ProducerEpoch,
    offsets: BTreeMap<PendingKey, OffsetValue>,
    /// The keys of `offsets` a plain OffsetCommit wrote after (skipped at the commit).
    superseded: BTreeSet<PendingKey>,
}

/// A pending offset as a snapshot restates it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restated {
    pub producer_id: ProducerId,
    pub producer_epoch: ProducerEpoch,
    pub key: PendingKey,
    pub value: OffsetValue,
    pub superseded: bool,
}

/// An offset a transaction's end settled: what it became.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settled {
    pub group: String,
    pub topic: String,
    pub partition: i32,
    pub value: OffsetValue,
}

impl PendingOffsets {
    /// Whether a TxnOffsetCommit of `producer_id` at `producer_epoch` may add offsets: an
    /// epoch below the one its pending offsets were written with is a fenced producer
    /// (Kafka's log refuses its transactional batch with INVALID_PRODUCER_EPOCH).
    pub fn check(
        &self,
        producer_id: ProducerId,
        producer_epoch: ProducerEpoch,
    ) -> Result<(), ErrorCode> {
        match self.producers.get(&producer_id) {
            Some(pending) if producer_epoch.0 < pending.producer_epoch.0 => {
                Err(ErrorCode::InvalidProducerEpoch)
            }
            _ => Ok(()),
        }
    }

    /// Adds (or replaces) one pending offset of `producer_id`'s transaction; a newer epoch
    /// is remembered.
    pub fn add(
        &mut self,
        producer_id: ProducerId,
        producer_epoch: ProducerEpoch,
        key: PendingKey,
        value: OffsetValue,
    ) {
        let pending = self.producers.entry(producer_id).or_insert_with(|| Pending {
            producer_epoch,
            offsets: BTreeMap::new(),
            superseded: BTreeSet::new(),
        });
        if producer_epoch.0 > pending.producer_epoch.0 {
            pending.producer_epoch = producer_epoch;
        }
        pending.superseded.remove(&key);
        pending.offsets.insert(key, value);
    }

    /// A plain OffsetCommit of `key` was written (after every pending offset of it): a
    /// transaction that commits later leaves it in place.
    pub fn supersede(&mut self, key: &PendingKey) {
        for pending in self.producers.values_mut() {
            if pending.offsets.contains_key(key) {
                pending.superseded.insert(key.clone());
            }
        }
    }

    /// A tombstone of `key` was written: no transaction's offset for it stays pending.
    /// Returns whether one was.
    pub fn remove(&mut self, key: &PendingKey) -> bool {
        let mut removed = false;
        for pending in self.producers.values_mut() {
            removed |= pending.offsets.remove(key).is_some();
            pending.superseded.remove(key);
        }
        self.producers.retain(|_, pending| !pending.offsets.is_empty());
        removed
    }

    /// The pending offsets of `topic`'s partitions, of every group and transaction.
    pub fn keys_of_topic(&self, topic: &str) -> BTreeSet<PendingKey> {
        let keys = self.producers.values().flat_map(|pending| pending.offsets.keys());
        keys.filter(|(_, t, _)| t == topic).cloned().collect()
    }

    /// The topics some transaction holds an offset of.
    pub fn topic_names(&self) -> BTreeSet<String> {
        let keys = self.producers.values().flat_map(|pending| pending.offsets.keys());
        keys.map(|(_, topic, _)| topic.clone()).collect()
    }

    /// Whether a transaction holds an offset of `group`.
    pub fn has_group(&self, group: &str) -> bool {
        self.producers.values().any(|p| p.offsets.keys().any(|(g, _, _)| g == group))
    }

    /// The partitions (topic, partition) of `group` some transaction holds an offset for.
    pub fn partitions_of(&self, group: &str) -> BTreeSet<(String, i32)> {
        let keys = self.producers.values().flat_map(|pending| pending.offsets.keys());
        keys.filter(|(g, _, _)| g == group).map(|(_, t, p)| (t.clone(), *p)).collect()
    }

    /// A marker of `producer_id` reached the partition holding the groups `owned` names:
    /// their pending offsets leave. A commit returns them, to become committed offsets;
    /// an abort returns nothing. A marker with nothing pending (sent again after a
    /// failover, or for a transaction that committed no offsets here) changes nothing.
    pub fn complete(
        &mut self,
        producer_id: ProducerId,
        outcome: TxnOutcome,
        owned: impl Fn(&str) -> bool,
    ) -> Vec<Settled> {
        let Some(pending) = self.producers.get_mut(&producer_id) else { return Vec::new() };
        let keys: Vec<PendingKey> =
            pending.offsets.keys().filter(|(group, _, _)| owned(group)).cloned().collect();
        let mut settled = Vec::new();
        for key in keys {
            let Some(value) = pending.offsets.remove(&key) else { continue };
            let superseded = pending.superseded.remove(&key);
            if outcome == TxnOutcome::Commit && !superseded {
                let (group, topic, partition) = key;
                settled.push(Settled { group, topic, partition, value });
            }
        }
        if pending.offsets.is_empty() {
            self.producers.remove(&producer_id);
        }
        settled
    }

    /// Whether a transaction still holds an offset for this group's partition (an
    /// OffsetFetch that asks for stable offsets is told UNSTABLE_OFFSET_COMMIT).
    pub fn is_pending(&self, group: &str, topic: &str, partition: i32) -> bool {
        let key = (group.to_string(), topic.to_string(), partition);
        self.producers.values().any(|pending| pending.offsets.contains_key(&key))
    }

    /// Forgets the pending offsets of the groups `owned` names (their partition is no
    /// longer coordinated here; the new coordinator replays them from the log).
    pub fn unload(&mut self, owned: impl Fn(&str) -> bool) {
        for pending in self.producers.values_mut() {
            pending.offsets.retain(|(group, _, _), _| !owned(group));
            pending.superseded.retain(|(group, _, _)| !owned(group));
        }
        self.producers.retain(|_, pending| !pending.offsets.is_empty());
    }

    /// The pending offsets of the groups `owned` names, by producer, to restate in a
    /// snapshot (as transactional records of each producer), each with whether a plain
    /// commit superseded it (then restated before that commit, so that replay supersedes
    /// it again).
    pub fn snapshot_of(&self, owned: impl Fn(&str) -> bool) -> Vec<Restated> {
        let mut out = Vec::new();
        for (producer_id, pending) in &self.producers {
            for (key, value) in pending.offsets.iter().filter(|(key, _)| owned(&key.0)) {
                out.push(Restated {
                    producer_id: *producer_id,
                    producer_epoch: pending.producer_epoch,
                    key: key.clone(),
                    value: value.clone(),
                    superseded: pending.superseded.contains(key),
                });
            }
        }
        out
    }

    /// How many offsets are pending in all.
    pub fn len(&self) -> usize {
        self.producers.values().map(|pending| pending.offsets.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{LeaderEpoch, Offset};

    fn value(offset: i64) -> OffsetValue {
        OffsetValue {
            offset: Offset(offset),
            leader_epoch: LeaderEpoch::NONE,
            metadata: String::new(),
            commit_timestamp: 1,
            expire_timestamp: None,
        }
    }

    fn key(group: &str, partition: i32) -> PendingKey {
        (group.to_string(), "t".to_string(), partition)
    }

    const P1: ProducerId = ProducerId(1);
    const P2: ProducerId = ProducerId(2);

    #[test]
    fn a_commit_settles_the_last_offset_of_each_partition_and_an_abort_drops_them() {
        let mut pending = PendingOffsets::default();
        pending.add(P1, ProducerEpoch(0), key("g", 0), value(5));
        pending.add(P1, ProducerEpoch(0), key("g", 0), value(7));
        pending.add(P1, ProducerEpoch(0), key("g", 1), value(3));
        pending.add(P2, ProducerEpoch(4), key("g", 0), value(9));
        assert!(pending.is_pending("g", "t", 0));
        assert_eq!(pending.len(), 3);
        let settled = pending.complete(P1, TxnOutcome::Commit, |_| true);
        let offsets: Vec<_> = settled.iter().map(|s| (s.partition, s.value.offset.0)).collect();
        assert_eq!(offsets, vec![(0, 7), (1, 3)]);
        // The other producer's transaction is still open.
        assert!(pending.is_pending("g", "t", 0));
        assert!(!pending.is_pending("g", "t", 1));
        assert!(pending.complete(P2, TxnOutcome::Abort, |_| true).is_empty());
        assert!(pending.is_empty());
        assert!(!pending.is_pending("g", "t", 0));
    }

    #[test]
    fn a_marker_settles_only_its_partitions_groups_and_a_repeated_one_nothing() {
        let mut pending = PendingOffsets::default();
        pending.add(P1, ProducerEpoch(0), key("a", 0), value(1));
        pending.add(P1, ProducerEpoch(0), key("b", 0), value(2));
        let settled = pending.complete(P1, TxnOutcome::Commit, |group| group == "a");
        assert_eq!(settled.len(), 1);
        assert_eq!(settled[0].group, "a");
        assert!(pending.complete(P1, TxnOutcome::Commit, |group| group == "a").is_empty());
        assert!(pending.is_pending("b", "t", 0));
        let settled = pending.complete(P1, TxnOutcome::Commit, |group| group == "b");
        assert_eq!(settled[0].value.offset, Offset(2));
        assert!(pending.is_empty());
    }

    #[test]
    fn an_older_epoch_is_fenced_and_a_newer_one_takes_over() {
        let mut pending = PendingOffsets::default();
        assert_eq!(pending.check(P1, ProducerEpoch(0)), Ok(()));
        pending.add(P1, ProducerEpoch(3), key("g", 0), value(1));
        assert_eq!(pending.check(P1, ProducerEpoch(2)), Err(ErrorCode::InvalidProducerEpoch));
        assert_eq!(pending.check(P1, ProducerEpoch(3)), Ok(()));
        assert_eq!(pending.check(P1, ProducerEpoch(4)), Ok(()));
        assert_eq!(pending.check(P2, ProducerEpoch(0)), Ok(()));
        pending.add(P1, ProducerEpoch(4), key("g", 1), value(2));
        assert_eq!(pending.check(P1, ProducerEpoch(3)), Err(ErrorCode::InvalidProducerEpoch));
    }

    #[test]
    fn unload_and_snapshot_keep_to_the_groups_named() {
        let mut pending = PendingOffsets::default();
        pending.add(P1, ProducerEpoch(1), key("a", 0), value(1));
        pending.add(P2, ProducerEpoch(2), key("b", 0), value(2));
        let snapshot = pending.snapshot_of(|group| group == "b");
        assert_eq!(snapshot.len(), 1);
        assert_eq!((snapshot[0].producer_id, snapshot[0].producer_epoch), (P2, ProducerEpoch(2)));
        pending.unload(|group| group == "a");
        assert!(!pending.is_pending("a", "t", 0));
        assert!(pending.is_pending("b", "t", 0));
        // Replaying the snapshot restores what was pending.
        let mut replayed = PendingOffsets::default();
        for restated in snapshot {
            assert!(!restated.superseded);
            let Restated { producer_id, producer_epoch, key, value, .. } = restated;
            replayed.add(producer_id, producer_epoch, key, value);
        }
        assert!(replayed.is_pending("b", "t", 0));
        assert_eq!(replayed.check(P2, ProducerEpoch(1)), Err(ErrorCode::InvalidProducerEpoch));
    }

    #[test]
    fn a_plain_commit_after_the_transactions_offset_stays_and_a_later_one_takes_over() {
        let mut pending = PendingOffsets::default();
        pending.add(P1, ProducerEpoch(0), key("g", 0), value(5));
        pending.add(P1, ProducerEpoch(0), key("g", 1), value(6));
        pending.add(P2, ProducerEpoch(0), key("g", 1), value(8));
        // Plain commits of partition 0 (held by P1) and 1 (held by both) come after.
        pending.supersede(&key("g", 0));
        pending.supersede(&key("g", 1));
        assert!(pending.is_pending("g", "t", 0), "still pending for require_stable");
        // P2 writes partition 1 again after the plain commit: its offset is the last.
        pending.add(P2, ProducerEpoch(0), key("g", 1), value(9));
        let snapshot = pending.snapshot_of(|_| true);
        let flags: Vec<_> =
            snapshot.iter().map(|r| (r.producer_id, r.key.2, r.superseded)).collect();
        assert_eq!(flags, [(P1, 0, true), (P1, 1, true), (P2, 1, false)]);
        assert!(pending.complete(P1, TxnOutcome::Commit, |_| true).is_empty());
        let settled = pending.complete(P2, TxnOutcome::Commit, |_| true);
        assert_eq!(settled.len(), 1);
        assert_eq!((settled[0].partition, settled[0].value.offset), (1, Offset(9)));
        assert!(pending.is_empty());
    }

    #[test]
    fn a_tombstone_drops_every_transactions_offset_of_its_partition() {
        let mut pending = PendingOffsets::default();
        pending.add(P1, ProducerEpoch(0), key("g", 0), value(5));
        pending.add(P2, ProducerEpoch(0), key("g", 0), value(6));
        pending.add(P2, ProducerEpoch(0), key("g", 1), value(7));
        pending.add(P2, ProducerEpoch(0), key("h", 1), value(7));
        assert!(pending.has_group("g"));
        let partitions: Vec<_> = pending.partitions_of("g").into_iter().collect();
        assert_eq!(partitions, [("t".to_string(), 0), ("t".to_string(), 1)]);
        assert!(pending.remove(&key("g", 0)));
        assert!(!pending.remove(&key("g", 0)));
        assert!(!pending.is_pending("g", "t", 0));
        assert_eq!(pending.len(), 2, "P1 had only that one and is gone");
        assert!(pending.remove(&key("g", 1)));
        assert!(!pending.has_group("g"));
        assert!(pending.has_group("h"));
        let settled = pending.complete(P2, TxnOutcome::Commit, |_| true);
        assert_eq!(settled.len(), 1);
        assert_eq!(settled[0].group, "h");
    }
}
