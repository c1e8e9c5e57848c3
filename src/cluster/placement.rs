//! Where the replicas of new partitions go (CreateTopics and CreatePartitions without
//! explicit assignments, and the replicated internal topics): Kafka's
//! `AdminUtils.assignReplicasToBrokers`, rack-aware form, which `kafka-reassign-partitions
//! --generate` also computes. Pure: the proposer computes the placement over the unfenced
//! brokers of its view, and the record carries the result.
//!
//! ```text
//!   brokers 1:a 2:a 3:b 4:c  --rack-alternated list-->  [1, 3, 4, 2]
//!                                                        (racks in name order, each
//!                                                         rack's brokers by node id)
//!   partition p: leader = list[(p + start.index) % n]             (round-robin: leaders
//!                                                                  per broker differ by
//!                                                                  at most one)
//!                followers: list[leader + 1 + (shift * racks + k) % (n - 1)], k = 0, 1, ..
//!                skipping a broker whose rack already has a replica while a rack has
//!                none, and a broker already chosen while a broker is not
//!                (shift grows by one every n partitions, so that the same replica sets
//!                do not repeat)
//! ```
//!
//! So a partition's replicas are distinct brokers on min(factor, racks) racks. Without
//! racks (every broker's rack None) this is Kafka's rack-unaware assignment, the same
//! numbers. Kafka's CreateTopics draws `start` at random (its AdminUtils' `RAND`), and
//! CreatePartitions continues from the leader of the topic's partition 0 (`Start::after`,
//! Kafka's `AdminZkClient.createPartitionsMetadata`).
//!
//! Brokers with and without a rack together: Kafka 4's controller (`StripedReplicaPlacer`)
//! places over them, the brokers without a rack counting as one more rack; AdminUtils
//! refuses ("Not all brokers have rack information"). Spate places, as the controller does
//! (the brokers without a rack are the group named None, first in the order), so that a
//! cluster whose nodes get `--rack` one restart at a time keeps creating topics, and its
//! internal topics are placed at all.
//!
//! Why AdminUtils' algorithm and not the controller's `StripedReplicaPlacer`: both put a
//! partition's replicas on distinct racks while racks remain, but the striped placer
//! reshuffles its rack and broker lists at random every `brokers` partitions, so its
//! leaders are balanced only while every rack has one broker; the rack-alternated
//! round-robin keeps leaders within one per broker with racks of any size.

use std::collections::BTreeMap;

use crate::model::NodeId;

/// A broker partitions may be placed on (an unfenced one), with its rack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub node_id: NodeId,
    pub rack: Option<String>,
}

/// Where the round-robin starts: Kafka's `startIndex` (the first partition's place in the
/// rack-alternated list) and `nextReplicaShift` (how far its first follower is from it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Start {
    pub index: usize,
    pub shift: usize,
}

impl Start {
    /// A start drawn from `random` bits (a new topic: Kafka draws both at random).
    pub fn random(random: u128, brokers: usize) -> Start {
        let brokers = brokers.max(1) as u128;
        let index = (random % brokers) as usize;
        let shift = ((random >> 64) % brokers) as usize;
        Start { index, shift }
    }

    /// New partitions of a topic whose partition 0 has `first_replica` first: the place of
    /// the first broker (by node id) at or above it, for both (Kafka's
    /// `createPartitionsMetadata`: `indexWhere(_.id >= existing(0).head)`, else 0).
    pub fn after(first_replica: NodeId, brokers: &[Candidate]) -> Start {
        let mut ids: Vec<NodeId> = brokers.iter().map(|broker| broker.node_id).collect();
        ids.sort_unstable();
        let index = ids.iter().position(|id| *id >= first_replica).unwrap_or(0);
        Start { index, shift: index }
    }
}

/// Replicas for partitions `first..first + count`, `factor` each (cut to 1..=brokers), the
/// leader first; empty without brokers. Node ids must be distinct.
pub fn assign(
    brokers: &[Candidate],
    first: usize,
    count: usize,
    factor: usize,
    start: Start,
) -> Vec<Vec<NodeId>> {
    if brokers.is_empty() {
        return Vec::new();
    }
    let (list, racks) = rack_alternated(brokers);
    let n = list.len();
    let rack_count = racks.iter().collect::<std::collections::BTreeSet<_>>().len();
    let factor = factor.clamp(1, n);
    let mut shift = start.shift;
    let mut placed = Vec::with_capacity(count);
    for partition in first..first + count {
        if partition > 0 && partition % n == 0 {
            shift += 1;
        }
        let leader = (partition + start.index) % n;
        let mut replicas = vec![leader];
        let mut k = 0;
        while replicas.len() < factor {
            let candidate = follower_index(leader, shift * rack_count, k, n);
            let racks_with: std::collections::BTreeSet<_> =
                replicas.iter().map(|&i| &racks[i]).collect();
            let rack_free =
                !racks_with.contains(&racks[candidate]) || racks_with.len() == rack_count;
            let broker_free = !replicas.contains(&candidate) || replicas.len() == n;
            if rack_free && broker_free {
                replicas.push(candidate);
            }
            k += 1;
            // Each pass over the n - 1 other brokers meets a missing rack and a free broker.
            debug_assert!(k <= factor * n, "placement does not terminate");
        }
        placed.push(replicas.into_iter().map(|i| list[i]).collect());
    }
    placed
}

/// The brokers alternated by rack (Kafka's `getRackAlternatedBrokerList`): racks in name
/// order (None first), each rack's brokers by node id, one from each rack in turn; and the
/// rack of each.
fn rack_alternated(brokers: &[Candidate]) -> (Vec<NodeId>, Vec<Option<&str>>) {
    let mut by_rack: BTreeMap<Option<&str>, Vec<NodeId>> = BTreeMap::new();
    for broker in brokers {
        by_rack.entry(broker.rack.as_deref()).or_default().push(broker.node_id);
    }
    for ids in by_rack.values_mut() {
        ids.sort_unstable();
    }
    let mut list = Vec::with_capacity(brokers.len());
    let mut racks = Vec::with_capacity(brokers.len());
    for round in 0.. {
        if list.len() == brokers.len() {
            break;
        }
        for (rack, ids) in &by_rack {
            if let Some(id) = ids.get(round) {
                list.push(*id);
                racks.push(*rack);
            }
        }
    }
    (list, racks)
}

/// Kafka's `replicaIndex`: the k-th follower candidate of the leader at `leader`, never the
/// leader itself. `n` is at least 2 (one broker has no followers to place).
fn follower_index(leader: usize, shift: usize, k: usize, n: usize) -> usize {
    let offset = 1 + (shift + k) % (n - 1);
    (leader + offset) % n
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn candidates(racks: &[(i32, Option<&str>)]) -> Vec<Candidate> {
        racks
            .iter()
            .map(|(id, rack)| Candidate { node_id: NodeId(*id), rack: rack.map(str::to_string) })
            .collect()
    }

    fn ids(sets: &[&[i32]]) -> Vec<Vec<NodeId>> {
        sets.iter().map(|set| set.iter().copied().map(NodeId).collect()).collect()
    }

    #[test]
    fn kafkas_rack_unaware_example() {
        // AdminUtils' Javadoc: five brokers, ten partitions, three replicas, both starts 0.
        let brokers = candidates(&[(0, None), (1, None), (2, None), (3, None), (4, None)]);
        let placed = assign(&brokers, 0, 10, 3, Start { index: 0, shift: 0 });
        let expected = ids(&[
            &[0, 1, 2],
            &[1, 2, 3],
            &[2, 3, 4],
            &[3, 4, 0],
            &[4, 0, 1],
            &[0, 2, 3],
            &[1, 3, 4],
            &[2, 4, 0],
            &[3, 0, 1],
            &[4, 1, 2],
        ]);
        assert_eq!(placed, expected);
    }

    #[test]
    fn kafkas_rack_aware_example() {
        // AdminUtils' Javadoc: 0 -> rack1, 1 -> rack3, 2 -> rack3, 3 -> rack2, 4 -> rack2,
        // 5 -> rack1 alternate as 0, 3, 1, 5, 4, 2; the seventh partition shifts.
        let brokers = candidates(&[
            (0, Some("rack1")),
            (1, Some("rack3")),
            (2, Some("rack3")),
            (3, Some("rack2")),
            (4, Some("rack2")),
            (5, Some("rack1")),
        ]);
        let (list, _) = rack_alternated(&brokers);
        assert_eq!(list, [0, 3, 1, 5, 4, 2].map(NodeId));
        let placed = assign(&brokers, 0, 7, 3, Start { index: 0, shift: 0 });
        let expected = ids(&[
            &[0, 3, 1],
            &[3, 1, 5],
            &[1, 5, 4],
            &[5, 4, 2],
            &[4, 2, 0],
            &[2, 0, 3],
            &[0, 4, 2],
        ]);
        assert_eq!(placed, expected);
        // Later partitions continue where the first ones left off.
        let later = assign(&brokers, 4, 3, 3, Start { index: 0, shift: 0 });
        assert_eq!(later, expected[4..]);
    }

    #[test]
    fn new_partitions_start_after_partition_zeros_first_replica() {
        let brokers = candidates(&[(1, None), (3, None), (5, None)]);
        assert_eq!(Start::after(NodeId(3), &brokers), Start { index: 1, shift: 1 });
        assert_eq!(Start::after(NodeId(2), &brokers), Start { index: 1, shift: 1 });
        assert_eq!(Start::after(NodeId(1), &brokers), Start { index: 0, shift: 0 });
        // A first replica above every live broker (gone since): from the start.
        assert_eq!(Start::after(NodeId(9), &brokers), Start { index: 0, shift: 0 });
        for random in [0u128, 7, u128::MAX, (5 << 64) | 4] {
            let start = Start::random(random, 3);
            assert!(start.index < 3 && start.shift < 3);
        }
        assert_eq!(Start::random(5, 0), Start { index: 0, shift: 0 });
    }

    #[test]
    fn one_broker_or_none() {
        let one = candidates(&[(7, Some("a"))]);
        assert_eq!(assign(&one, 0, 3, 3, Start { index: 0, shift: 0 }), ids(&[&[7], &[7], &[7]]));
        assert!(assign(&[], 0, 3, 1, Start { index: 0, shift: 0 }).is_empty());
        // A factor below one is raised to one, above the brokers cut to them.
        let two = candidates(&[(1, None), (2, None)]);
        assert_eq!(assign(&two, 0, 1, 0, Start { index: 0, shift: 0 })[0].len(), 1);
        assert_eq!(assign(&two, 0, 1, 5, Start { index: 0, shift: 0 })[0].len(), 2);
    }

    /// Every rack labelling of up to six brokers over None, a, b and c (labels in order of
    /// first use, so that renamings are not repeated), every factor, start and some shifts.
    #[test]
    fn every_placement_spreads_replicas_over_racks_and_leaders_over_brokers() {
        let labels = [None, Some("a"), Some("b"), Some("c")];
        let mut checked = 0usize;
        for n in 1..=6usize {
            for code in 0..4usize.pow(n as u32) {
                let digits: Vec<usize> = (0..n).map(|i| code / 4usize.pow(i as u32) % 4).collect();
                // Canonical labelling: each label's first use comes in label order.
                let firsts: Vec<usize> =
                    (0..4).filter_map(|label| digits.iter().position(|d| *d == label)).collect();
                if firsts.windows(2).any(|w| w[0] > w[1]) {
                    continue;
                }
                let brokers: Vec<Candidate> = digits
                    .iter()
                    .enumerate()
                    .map(|(i, d)| Candidate {
                        node_id: NodeId(10 + i as i32 * 3),
                        rack: labels[*d].map(str::to_string),
                    })
                    .collect();
                let rack_of: BTreeMap<NodeId, Option<String>> =
                    brokers.iter().map(|b| (b.node_id, b.rack.clone())).collect();
                let racks = rack_of.values().collect::<BTreeSet<_>>().len();
                for factor in 1..=n {
                    for index in 0..n {
                        for shift in [0, 1, n.saturating_sub(1), n + 3] {
                            for first in [0, n.saturating_sub(1), 2 * n] {
                                let count = 2 * n + 1;
                                let start = Start { index, shift };
                                let placed = assign(&brokers, first, count, factor, start);
                                check(&placed, &rack_of, factor, racks, count);
                                checked += 1;
                            }
                        }
                    }
                }
            }
        }
        assert!(checked > 100_000, "{checked}");
    }

    fn check(
        placed: &[Vec<NodeId>],
        rack_of: &BTreeMap<NodeId, Option<String>>,
        factor: usize,
        racks: usize,
        count: usize,
    ) {
        assert_eq!(placed.len(), count);
        let mut leaders: BTreeMap<NodeId, usize> = rack_of.keys().map(|id| (*id, 0)).collect();
        for replicas in placed {
            assert_eq!(replicas.len(), factor, "{placed:?}");
            let distinct: BTreeSet<_> = replicas.iter().collect();
            assert_eq!(distinct.len(), factor, "replicas distinct: {placed:?}");
            let spanned: BTreeSet<_> = replicas.iter().map(|id| &rack_of[id]).collect();
            assert_eq!(spanned.len(), factor.min(racks), "racks spanned: {replicas:?} {rack_of:?}");
            *leaders.get_mut(&replicas[0]).expect("a candidate leads") += 1;
        }
        let most = leaders.values().max().copied().unwrap_or(0);
        let least = leaders.values().min().copied().unwrap_or(0);
        assert!(most - least <= 1, "leaders per broker {leaders:?}");
    }

    #[test]
    fn equal_racks_with_one_replica_each_spread_replicas_evenly() {
        // Kafka's promise: factor = racks, racks of equal size: every broker gets as many
        // replicas as the others over each run of `brokers` partitions.
        for per_rack in 1..=3 {
            for rack_count in 1..=3 {
                let mut brokers = Vec::new();
                for rack in 0..rack_count {
                    for i in 0..per_rack {
                        let name = Some(format!("r{rack}"));
                        brokers.push(Candidate { node_id: NodeId(rack * 10 + i), rack: name });
                    }
                }
                let n = brokers.len();
                for index in 0..n {
                    for shift in 0..n {
                        let start = Start { index, shift };
                        let placed = assign(&brokers, 0, n, rack_count as usize, start);
                        let mut replicas: BTreeMap<NodeId, usize> = BTreeMap::new();
                        for id in placed.iter().flatten() {
                            *replicas.entry(*id).or_default() += 1;
                        }
                        assert_eq!(replicas.len(), n, "{placed:?}");
                        assert!(
                            replicas.values().all(|c| *c == rack_count as usize),
                            "{replicas:?}"
                        );
                    }
                }
            }
        }
    }
}
