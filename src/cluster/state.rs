//! The metadata state machine: committed records applied in log order. Pure (STYLE.md R6):
//! `apply(index, record)` changes the state and nothing else, so every node that applies
//! the same log holds the same state, and tests need no cluster.
//!
//! Lifecycle: built empty when the node starts, then fed every committed entry from index 1
//! on (the log is replayed after a restart; snapshots will shorten that later). Lives on
//! shard 0 inside the Raft driver; other shards see copies (`ClusterView`).

use std::collections::BTreeMap;

use super::records::MetadataRecord;
use crate::model::NodeId;

/// A registered broker and where clients reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerRegistration {
    pub node_id: NodeId,
    pub host: String,
    pub port: u16,
}

/// What the committed log says so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetadataState {
    /// By node id.
    pub brokers: BTreeMap<NodeId, BrokerRegistration>,
    /// The leader named by the last LeaderChange record (NONE before the first).
    pub leader_id: Option<NodeId>,
    /// That leader's term.
    pub leader_term: u64,
    /// The last index applied (entries with no record count too).
    pub applied_index: u64,
}

impl MetadataState {
    /// Applies the entry at `index` (`None`: an entry with no record, Raft's no-op). Indexes
    /// must come in order, each once. Returns whether the state changed beyond the index.
    pub fn apply(&mut self, index: u64, record: Option<&MetadataRecord>) -> bool {
        assert!(index > self.applied_index, "entry {index} applied after {}", self.applied_index);
        self.applied_index = index;
        match record {
            None => false,
            Some(MetadataRecord::LeaderChange { leader_id, term }) => {
                // A record of an older term can only be committed before a newer one, but
                // keep the newest anyway: the state never goes back in terms.
                if *term < self.leader_term {
                    return false;
                }
                let changed = self.leader_id != Some(*leader_id) || self.leader_term != *term;
                self.leader_id = Some(*leader_id);
                self.leader_term = *term;
                changed
            }
            Some(MetadataRecord::RegisterBroker { node_id, host, port }) => {
                let registration =
                    BrokerRegistration { node_id: *node_id, host: host.clone(), port: *port };
                self.brokers.insert(*node_id, registration.clone()) != Some(registration)
            }
        }
    }

    /// Whether `node_id` is registered with exactly this address.
    pub fn is_registered(&self, node_id: NodeId, host: &str, port: u16) -> bool {
        self.brokers.get(&node_id).is_some_and(|b| b.host == host && b.port == port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn register(id: i32, port: u16) -> MetadataRecord {
        MetadataRecord::RegisterBroker { node_id: NodeId(id), host: "h".into(), port }
    }

    #[test]
    fn registrations_and_leaders_apply_in_order() {
        let mut state = MetadataState::default();
        assert!(!state.apply(1, None));
        let change = MetadataRecord::LeaderChange { leader_id: NodeId(2), term: 1 };
        assert!(state.apply(2, Some(&change)));
        assert_eq!((state.leader_id, state.leader_term), (Some(NodeId(2)), 1));
        assert!(state.apply(3, Some(&register(1, 9092))));
        assert!(state.apply(4, Some(&register(2, 9192))));
        // The same registration again changes nothing; a new address replaces the old one.
        assert!(!state.apply(5, Some(&register(1, 9092))));
        assert!(state.apply(6, Some(&register(1, 9099))));
        assert!(state.is_registered(NodeId(1), "h", 9099));
        assert!(!state.is_registered(NodeId(1), "h", 9092));
        assert!(!state.is_registered(NodeId(3), "h", 9092));
        assert_eq!(state.brokers.len(), 2);
        assert_eq!(state.applied_index, 6);
        let older = MetadataRecord::LeaderChange { leader_id: NodeId(1), term: 0 };
        assert!(!state.apply(7, Some(&older)));
        assert_eq!(state.leader_id, Some(NodeId(2)));
    }

    #[test]
    fn two_nodes_applying_the_same_log_agree() {
        let log: Vec<Option<MetadataRecord>> = vec![
            None,
            Some(MetadataRecord::LeaderChange { leader_id: NodeId(1), term: 1 }),
            Some(register(3, 1)),
            Some(register(1, 2)),
            None,
            Some(MetadataRecord::LeaderChange { leader_id: NodeId(3), term: 2 }),
            Some(register(1, 3)),
        ];
        let mut first = MetadataState::default();
        let mut second = MetadataState::default();
        for (i, record) in log.iter().enumerate() {
            first.apply(i as u64 + 1, record.as_ref());
        }
        for (i, record) in log.iter().enumerate() {
            second.apply(i as u64 + 1, record.as_ref());
        }
        assert_eq!(first, second);
        assert_eq!(first.leader_id, Some(NodeId(3)));
    }

    #[test]
    #[should_panic(expected = "applied after")]
    fn an_index_applied_twice_is_a_bug() {
        let mut state = MetadataState::default();
        state.apply(1, None);
        state.apply(1, None);
    }
}
