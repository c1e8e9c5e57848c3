//! The metadata state machine: committed records applied in log order. Pure (STYLE.md R6):
//! `apply(index, record)` changes the state and nothing else, so every node that applies
//! the same log holds the same state, and tests need no cluster.
//!
//! Topic records are validated here, at apply time, against the state they meet (the name
//! is free, the topic exists, the leaders are registered brokers, the partition count
//! grows): the proposer checked them against its own view, but another change may have
//! committed in between. The decision is the request's outcome, the same on every node;
//! the node that proposed answers its client with it. A request proposed twice (a retry
//! after a lost leader) takes effect once: the ids of the last `REQUESTS_REMEMBERED_MAX`
//! requests are remembered, and a repeat is applied as nothing.
//!
//! Lifecycle: built empty when the node starts, then fed every committed entry from index 1
//! on (the log is replayed after a restart; snapshots will shorten that later). Lives on
//! shard 0 inside the Raft driver; other shards see copies (`ClusterView`), the controller
//! the topics (`Committed`).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::records::{MetadataRecord, RequestId};
use crate::constants::CLUSTER_REQUESTS_REMEMBERED_MAX;
use crate::model::{ErrorCode, NodeId};

/// A registered broker and where clients reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerRegistration {
    pub node_id: NodeId,
    pub host: String,
    pub port: u16,
}

/// A topic as the log says: its id, each partition's leader (its one replica), and its
/// config overrides (effective configs are the overrides on each node's defaults).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicState {
    pub topic_id: [u8; 16],
    /// By partition index.
    pub leaders: Vec<NodeId>,
    pub overrides: BTreeMap<String, String>,
}

/// What a topic request's record did: the topic as it is after it (as it was, for a
/// deletion), or why nothing changed.
pub type TopicOutcome = Result<TopicSummary, Refusal>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSummary {
    pub name: String,
    pub topic_id: [u8; 16],
    pub partitions: i32,
    pub overrides: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: ErrorCode,
    pub message: String,
}

/// What applying one entry did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// The state changed beyond the applied index.
    pub changed: bool,
    /// The topics or the cluster id changed (the controller applies them).
    pub catalog_changed: bool,
    /// A topic request's outcome, for the node that proposed it.
    pub outcome: Option<(RequestId, TopicOutcome)>,
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
    /// The first ClusterId record's id.
    pub cluster_id: Option<String>,
    /// By name.
    pub topics: BTreeMap<String, TopicState>,
    /// The internal topics' placements (leader by partition), by name: where groups and
    /// transactional ids are coordinated.
    pub internal: BTreeMap<String, Vec<NodeId>>,
    /// The requests applied lately (a set, and the same ids oldest first to forget them).
    requests_seen: BTreeSet<RequestId>,
    requests_order: VecDeque<RequestId>,
}

impl MetadataState {
    /// Applies the entry at `index` (`None`: an entry with no record, Raft's no-op). Indexes
    /// must come in order, each once.
    pub fn apply(&mut self, index: u64, record: Option<&MetadataRecord>) -> Applied {
        assert!(index > self.applied_index, "entry {index} applied after {}", self.applied_index);
        self.applied_index = index;
        let Some(record) = record else { return Applied::default() };
        if let Some(request) = record.request() {
            if self.requests_seen.contains(&request) {
                return Applied::default();
            }
            self.remember(request);
            let outcome = self.apply_topic_record(record);
            let changed = outcome.is_ok();
            return Applied {
                changed,
                catalog_changed: changed,
                outcome: Some((request, outcome)),
            };
        }
        let changed = match record {
            MetadataRecord::LeaderChange { leader_id, term } => {
                // A record of an older term can only be committed before a newer one, but
                // keep the newest anyway: the state never goes back in terms.
                if *term < self.leader_term {
                    return Applied::default();
                }
                let changed = self.leader_id != Some(*leader_id) || self.leader_term != *term;
                self.leader_id = Some(*leader_id);
                self.leader_term = *term;
                changed
            }
            MetadataRecord::RegisterBroker { node_id, host, port } => {
                let registration =
                    BrokerRegistration { node_id: *node_id, host: host.clone(), port: *port };
                self.brokers.insert(*node_id, registration.clone()) != Some(registration)
            }
            MetadataRecord::ClusterId { cluster_id } => {
                if self.cluster_id.is_some() {
                    return Applied::default();
                }
                self.cluster_id = Some(cluster_id.clone());
                return Applied { changed: true, catalog_changed: true, outcome: None };
            }
            MetadataRecord::InternalTopic { name, leaders } => {
                if self.internal.contains_key(name) || leaders.is_empty() {
                    return Applied::default();
                }
                self.internal.insert(name.clone(), leaders.clone());
                true
            }
            _ => unreachable!("topic records carry a request id"),
        };
        Applied { changed, catalog_changed: false, outcome: None }
    }

    /// Whether `node_id` is registered with exactly this address.
    pub fn is_registered(&self, node_id: NodeId, host: &str, port: u16) -> bool {
        self.brokers.get(&node_id).is_some_and(|b| b.host == host && b.port == port)
    }

    fn remember(&mut self, request: RequestId) {
        self.requests_seen.insert(request);
        self.requests_order.push_back(request);
        while self.requests_order.len() > CLUSTER_REQUESTS_REMEMBERED_MAX {
            if let Some(oldest) = self.requests_order.pop_front() {
                self.requests_seen.remove(&oldest);
            }
        }
    }

    fn apply_topic_record(&mut self, record: &MetadataRecord) -> TopicOutcome {
        match record {
            MetadataRecord::CreateTopic { name, topic_id, leaders, overrides, .. } => {
                if self.topics.contains_key(name) {
                    return refuse(ErrorCode::TopicAlreadyExists, format!("topic {name} exists"));
                }
                if self.topics.values().any(|topic| topic.topic_id == *topic_id) {
                    let message = format!("topic id of {name} is taken; try again");
                    return refuse(ErrorCode::TopicAlreadyExists, message);
                }
                if leaders.is_empty() {
                    return refuse(ErrorCode::InvalidPartitions, "no partitions".into());
                }
                self.check_leaders(leaders)?;
                let topic = TopicState {
                    topic_id: *topic_id,
                    leaders: leaders.clone(),
                    overrides: overrides.clone(),
                };
                self.topics.insert(name.clone(), topic);
                Ok(self.summary(name))
            }
            MetadataRecord::DeleteTopic { name, .. } => {
                self.existing(name)?;
                let summary = self.summary(name);
                self.topics.remove(name);
                Ok(summary)
            }
            MetadataRecord::CreatePartitions { name, count, leaders, .. } => {
                let current = self.existing(name)?.leaders.len();
                let count = usize::try_from(*count).unwrap_or(0);
                if count <= current {
                    let message = format!(
                        "topic {name} has {current} partitions; the new count must be larger"
                    );
                    return refuse(ErrorCode::InvalidPartitions, message);
                }
                if leaders.len() != count - current {
                    let message = format!(
                        "topic {name} changed meanwhile: {current} partitions, {} new leaders \
                         for a count of {count}",
                        leaders.len()
                    );
                    return refuse(ErrorCode::InvalidPartitions, message);
                }
                self.check_leaders(leaders)?;
                if let Some(topic) = self.topics.get_mut(name) {
                    topic.leaders.extend_from_slice(leaders);
                }
                Ok(self.summary(name))
            }
            MetadataRecord::AlterTopicConfig { name, overrides, .. } => {
                self.existing(name)?;
                if let Some(topic) = self.topics.get_mut(name) {
                    topic.overrides = overrides.clone();
                }
                Ok(self.summary(name))
            }
            _ => unreachable!("not a topic record"),
        }
    }

    fn existing(&self, name: &str) -> Result<&TopicState, Refusal> {
        self.topics.get(name).ok_or_else(|| Refusal {
            code: ErrorCode::UnknownTopicOrPartition,
            message: format!("no topic {name}"),
        })
    }

    fn check_leaders(&self, leaders: &[NodeId]) -> Result<(), Refusal> {
        match leaders.iter().find(|leader| !self.brokers.contains_key(leader)) {
            Some(leader) => refuse(
                ErrorCode::InvalidReplicaAssignment,
                format!("broker {leader} is not registered"),
            ),
            None => Ok(()),
        }
    }

    /// The summary of topic `name`, which exists.
    fn summary(&self, name: &str) -> TopicSummary {
        let topic = &self.topics[name];
        TopicSummary {
            name: name.to_string(),
            topic_id: topic.topic_id,
            partitions: topic.leaders.len() as i32,
            overrides: topic.overrides.clone(),
        }
    }
}

fn refuse<T>(code: ErrorCode, message: String) -> Result<T, Refusal> {
    Err(Refusal { code, message })
}

/// Leaders for partitions `first..first + count` of topic `name`: round-robin over
/// `brokers` (sorted by node id), starting at a point that depends on the name (FNV-1a, as
/// the shard table hashes), so that the first partitions of many topics do not all land on
/// the lowest node id. Pure: the proposer computes it, the record carries the result.
pub fn place(name: &str, brokers: &[NodeId], first: usize, count: usize) -> Vec<NodeId> {
    if brokers.is_empty() {
        return Vec::new();
    }
    let mut sorted = brokers.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let start = crate::shard::table::shard_for_key(name, sorted.len()).index();
    (first..first + count).map(|partition| sorted[(start + partition) % sorted.len()]).collect()
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
        assert!(!state.apply(1, None).changed);
        let change = MetadataRecord::LeaderChange { leader_id: NodeId(2), term: 1 };
        assert!(state.apply(2, Some(&change)).changed);
        assert_eq!((state.leader_id, state.leader_term), (Some(NodeId(2)), 1));
        assert!(state.apply(3, Some(&register(1, 9092))).changed);
        assert!(state.apply(4, Some(&register(2, 9192))).changed);
        // The same registration again changes nothing; a new address replaces the old one.
        assert!(!state.apply(5, Some(&register(1, 9092))).changed);
        assert!(state.apply(6, Some(&register(1, 9099))).changed);
        assert!(state.is_registered(NodeId(1), "h", 9099));
        assert!(!state.is_registered(NodeId(1), "h", 9092));
        assert!(!state.is_registered(NodeId(3), "h", 9092));
        assert_eq!(state.brokers.len(), 2);
        assert_eq!(state.applied_index, 6);
        let older = MetadataRecord::LeaderChange { leader_id: NodeId(1), term: 0 };
        assert!(!state.apply(7, Some(&older)).changed);
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

    fn request(serial: u64) -> RequestId {
        RequestId { node_id: NodeId(1), serial }
    }

    fn create(serial: u64, name: &str, leaders: &[i32]) -> MetadataRecord {
        MetadataRecord::CreateTopic {
            request: request(serial),
            name: name.into(),
            topic_id: [serial as u8; 16],
            leaders: leaders.iter().map(|id| NodeId(*id)).collect(),
            overrides: BTreeMap::from([("retention.ms".into(), "5".into())]),
        }
    }

    /// A state with brokers 1, 2 and 3 registered, at index 3.
    fn three_brokers() -> MetadataState {
        let mut state = MetadataState::default();
        for id in 1..=3 {
            state.apply(id as u64, Some(&register(id, 9000 + id as u16)));
        }
        state
    }

    fn outcome_code(applied: &Applied) -> ErrorCode {
        match &applied.outcome {
            Some((_, Ok(_))) => ErrorCode::None,
            Some((_, Err(refusal))) => refusal.code,
            None => panic!("no outcome: {applied:?}"),
        }
    }

    #[test]
    fn create_topic_then_the_same_name_again_is_already_exists() {
        let mut state = three_brokers();
        let applied = state.apply(4, Some(&create(10, "t", &[2, 3, 1])));
        assert!(applied.changed && applied.catalog_changed);
        let (id, outcome) = applied.outcome.clone().unwrap();
        assert_eq!(id, request(10));
        let summary = outcome.unwrap();
        assert_eq!((summary.name.as_str(), summary.partitions), ("t", 3));
        assert_eq!(summary.overrides["retention.ms"], "5");
        assert_eq!(state.topics["t"].leaders, [NodeId(2), NodeId(3), NodeId(1)]);
        let again = state.apply(5, Some(&create(11, "t", &[1])));
        assert_eq!(outcome_code(&again), ErrorCode::TopicAlreadyExists);
        assert!(!again.changed && !again.catalog_changed);
        // Same topic id under another name: refused too (ids name topics in Fetch v13+).
        let mut same_id = create(10, "u", &[1]);
        if let MetadataRecord::CreateTopic { request, .. } = &mut same_id {
            request.serial = 12;
        }
        assert_eq!(outcome_code(&state.apply(6, Some(&same_id))), ErrorCode::TopicAlreadyExists);
        assert_eq!(state.topics.len(), 1);
    }

    #[test]
    fn create_topic_with_an_unregistered_or_no_leader_is_refused() {
        let mut state = three_brokers();
        let unknown = state.apply(4, Some(&create(1, "t", &[1, 4])));
        assert_eq!(outcome_code(&unknown), ErrorCode::InvalidReplicaAssignment);
        let empty = state.apply(5, Some(&create(2, "t", &[])));
        assert_eq!(outcome_code(&empty), ErrorCode::InvalidPartitions);
        assert!(state.topics.is_empty());
    }

    #[test]
    fn a_request_applied_twice_takes_effect_once() {
        let mut state = three_brokers();
        assert_eq!(outcome_code(&state.apply(4, Some(&create(1, "t", &[1])))), ErrorCode::None);
        let delete = MetadataRecord::DeleteTopic { request: request(2), name: "t".into() };
        assert_eq!(outcome_code(&state.apply(5, Some(&delete))), ErrorCode::None);
        // The create's retry commits after the delete: it is not a new topic.
        assert_eq!(state.apply(6, Some(&create(1, "t", &[1]))), Applied::default());
        assert!(state.topics.is_empty());
    }

    #[test]
    fn remembered_requests_are_bounded() {
        let mut state = three_brokers();
        let total = CLUSTER_REQUESTS_REMEMBERED_MAX as u64 + 5;
        for serial in 0..total {
            let alter = MetadataRecord::AlterTopicConfig {
                request: request(serial),
                name: "none".into(),
                overrides: BTreeMap::new(),
            };
            state.apply(4 + serial, Some(&alter));
        }
        assert_eq!(state.requests_seen.len(), CLUSTER_REQUESTS_REMEMBERED_MAX);
        assert!(!state.requests_seen.contains(&request(4)));
        assert!(state.requests_seen.contains(&request(5)));
    }

    #[test]
    fn delete_topic_of_an_unknown_name_is_unknown_topic() {
        let mut state = three_brokers();
        let delete = MetadataRecord::DeleteTopic { request: request(1), name: "t".into() };
        let applied = state.apply(4, Some(&delete));
        assert_eq!(outcome_code(&applied), ErrorCode::UnknownTopicOrPartition);
        state.apply(5, Some(&create(2, "t", &[3])));
        let delete = MetadataRecord::DeleteTopic { request: request(3), name: "t".into() };
        let applied = state.apply(6, Some(&delete));
        let (_, outcome) = applied.outcome.unwrap();
        assert_eq!(outcome.unwrap().topic_id, [2; 16]);
        assert!(applied.catalog_changed && state.topics.is_empty());
    }

    #[test]
    fn create_partitions_grows_only_from_the_count_it_was_proposed_against() {
        let mut state = three_brokers();
        state.apply(4, Some(&create(1, "t", &[1, 2])));
        let grow = |serial, count, leaders: &[i32]| MetadataRecord::CreatePartitions {
            request: request(serial),
            name: "t".into(),
            count,
            leaders: leaders.iter().map(|id| NodeId(*id)).collect(),
        };
        assert_eq!(
            outcome_code(&state.apply(5, Some(&grow(2, 2, &[])))),
            ErrorCode::InvalidPartitions
        );
        // Proposed against 2 partitions, but another growth to 3 committed first.
        assert_eq!(outcome_code(&state.apply(6, Some(&grow(3, 3, &[3])))), ErrorCode::None);
        let stale = state.apply(7, Some(&grow(4, 4, &[1, 2])));
        assert_eq!(outcome_code(&stale), ErrorCode::InvalidPartitions);
        let unknown_broker = state.apply(8, Some(&grow(5, 4, &[9])));
        assert_eq!(outcome_code(&unknown_broker), ErrorCode::InvalidReplicaAssignment);
        let applied = state.apply(9, Some(&grow(6, 5, &[1, 2])));
        assert_eq!(applied.outcome.unwrap().1.unwrap().partitions, 5);
        let leaders = [1, 2, 3, 1, 2].map(NodeId);
        assert_eq!(state.topics["t"].leaders, leaders);
        let missing = MetadataRecord::CreatePartitions {
            request: request(7),
            name: "u".into(),
            count: 2,
            leaders: vec![NodeId(1)],
        };
        let applied = state.apply(10, Some(&missing));
        assert_eq!(outcome_code(&applied), ErrorCode::UnknownTopicOrPartition);
    }

    #[test]
    fn alter_topic_config_replaces_the_overrides() {
        let mut state = three_brokers();
        state.apply(4, Some(&create(1, "t", &[1])));
        let overrides = BTreeMap::from([("segment.ms".to_string(), "9".to_string())]);
        let alter = |serial, name: &str| MetadataRecord::AlterTopicConfig {
            request: request(serial),
            name: name.into(),
            overrides: overrides.clone(),
        };
        assert_eq!(outcome_code(&state.apply(5, Some(&alter(2, "t")))), ErrorCode::None);
        assert_eq!(state.topics["t"].overrides, overrides);
        let unknown = state.apply(6, Some(&alter(3, "u")));
        assert_eq!(outcome_code(&unknown), ErrorCode::UnknownTopicOrPartition);
    }

    #[test]
    fn the_first_internal_topic_placement_wins() {
        let mut state = three_brokers();
        let first = MetadataRecord::InternalTopic {
            name: "__consumer_offsets".into(),
            leaders: vec![NodeId(2), NodeId(3)],
        };
        let second = MetadataRecord::InternalTopic {
            name: "__consumer_offsets".into(),
            leaders: vec![NodeId(1)],
        };
        let applied = state.apply(4, Some(&first));
        assert!(applied.changed && !applied.catalog_changed && applied.outcome.is_none());
        assert_eq!(state.apply(5, Some(&second)), Applied::default());
        assert_eq!(state.internal["__consumer_offsets"], [NodeId(2), NodeId(3)]);
        assert!(state.topics.is_empty());
    }

    #[test]
    fn the_first_cluster_id_wins() {
        let mut state = MetadataState::default();
        let first = MetadataRecord::ClusterId { cluster_id: "first".into() };
        let second = MetadataRecord::ClusterId { cluster_id: "second".into() };
        assert!(state.apply(1, Some(&first)).catalog_changed);
        assert_eq!(state.apply(2, Some(&second)), Applied::default());
        assert_eq!(state.cluster_id.as_deref(), Some("first"));
    }

    #[test]
    fn placement_is_round_robin_over_sorted_brokers_from_a_start_set_by_the_name() {
        let brokers = [NodeId(3), NodeId(1), NodeId(2)];
        for name in ["a", "orders", "payments", "t"] {
            let leaders = place(name, &brokers, 0, 6);
            let start = leaders[0].0 as usize - 1;
            let expected: Vec<NodeId> =
                (0..6).map(|i| NodeId(((start + i) % 3) as i32 + 1)).collect();
            assert_eq!(leaders, expected, "{name}");
            // Later partitions continue where the first ones left off.
            assert_eq!(place(name, &brokers, 4, 2), leaders[4..]);
        }
        let starts: BTreeSet<NodeId> =
            (0..30).map(|i| place(&format!("topic-{i}"), &brokers, 0, 1)[0]).collect();
        assert_eq!(starts.len(), 3, "the first partitions of many topics spread");
        assert!(place("t", &[], 0, 3).is_empty());
    }

    #[test]
    #[should_panic(expected = "applied after")]
    fn an_index_applied_twice_is_a_bug() {
        let mut state = MetadataState::default();
        state.apply(1, None);
        state.apply(1, None);
    }
}
