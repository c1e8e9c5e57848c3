//! The server-side assignors of KIP-848 consumer groups: `uniform` (the default) and `range`.
//! Pure: members' subscriptions (topic ids) and the partition count of each subscribed topic
//! in, a target assignment per member out. The coordinator computes a new target whenever
//! the group epoch moves past the assignment epoch (`group::consumer`).
//!
//! - `uniform`: balanced and sticky, the properties of Kafka's `UniformAssignor`. Each member
//!   first keeps the partitions of its previous target that it still subscribes to (at most
//!   its fair share, rounded up), the partitions nobody keeps go one by one to the subscribed
//!   member holding the fewest, and then partitions move from a member holding more than one
//!   above another subscribed member to it until no such move is left. With identical
//!   subscriptions every member ends with floor(P/M) or ceil(P/M) partitions. It is not
//!   Kafka's exact algorithm (a member may keep other partitions than Kafka's would pick).
//! - `range`: per topic, the subscribed members sorted by member id get contiguous ranges,
//!   the first `P mod M` one partition more, as Kafka's `RangeAssignor`; not sticky.
//!
//! Cost: `uniform` is O(P log P) for the first two steps plus O(moves x M x P/M) for the
//! balancing, which only moves partitions when subscriptions differ or members come and go.

use std::collections::{BTreeMap, BTreeSet};

/// A topic's id, as the catalog and the wire carry it.
pub type TopicId = [u8; 16];

/// Partitions by topic id: a member's assigned, pending or target partitions.
pub type Assignment = BTreeMap<TopicId, BTreeSet<i32>>;

pub const UNIFORM: &str = "uniform";
pub const RANGE: &str = "range";

/// Whether `name` is an assignor this module implements.
pub fn known(name: &str) -> bool {
    crate::model::settings::CONSUMER_ASSIGNORS.contains(&name)
}

/// One member as an assignor sees it.
#[derive(Debug, Clone, Default)]
pub struct AssignMember {
    pub topics: BTreeSet<TopicId>,
    /// Its previous target (stickiness).
    pub previous: Assignment,
}

/// Computes a target assignment. `partitions` has the partition count of every topic some
/// member subscribes to and that exists; topics missing from it are skipped.
pub fn assign(
    assignor: &str,
    members: &BTreeMap<String, AssignMember>,
    partitions: &BTreeMap<TopicId, i32>,
) -> BTreeMap<String, Assignment> {
    if assignor == RANGE {
        range(members, partitions)
    } else {
        uniform(members, partitions)
    }
}

fn range(
    members: &BTreeMap<String, AssignMember>,
    partitions: &BTreeMap<TopicId, i32>,
) -> BTreeMap<String, Assignment> {
    let mut out: BTreeMap<String, Assignment> =
        members.keys().map(|m| (m.clone(), Assignment::new())).collect();
    for (topic, &count) in partitions {
        let subscribed: Vec<&String> =
            members.iter().filter(|(_, m)| m.topics.contains(topic)).map(|(id, _)| id).collect();
        if subscribed.is_empty() || count <= 0 {
            continue;
        }
        let share = count as usize / subscribed.len();
        let extra = count as usize % subscribed.len();
        let mut next = 0i32;
        for (i, member) in subscribed.iter().enumerate() {
            let take = share + usize::from(i < extra);
            if take == 0 {
                continue;
            }
            let set: BTreeSet<i32> = (next..next + take as i32).collect();
            next += take as i32;
            if let Some(assignment) = out.get_mut(*member) {
                assignment.insert(*topic, set);
            }
        }
    }
    out
}

fn uniform(
    members: &BTreeMap<String, AssignMember>,
    partitions: &BTreeMap<TopicId, i32>,
) -> BTreeMap<String, Assignment> {
    let mut held: BTreeMap<&str, BTreeSet<(TopicId, i32)>> =
        members.keys().map(|m| (m.as_str(), BTreeSet::new())).collect();
    let all: Vec<(TopicId, i32)> = partitions
        .iter()
        .filter(|(topic, _)| members.values().any(|m| m.topics.contains(*topic)))
        .flat_map(|(topic, &count)| (0..count.max(0)).map(move |p| (*topic, p)))
        .collect();
    let subscribers = members.values().filter(|m| !m.topics.is_empty()).count().max(1);
    let quota = all.len().div_ceil(subscribers);
    // 1. Keep what the previous target gave, up to the fair share rounded up.
    let mut taken: BTreeSet<(TopicId, i32)> = BTreeSet::new();
    for (id, member) in members {
        let mut kept = 0;
        for (topic, set) in &member.previous {
            let Some(&count) = partitions.get(topic) else { continue };
            if !member.topics.contains(topic) {
                continue;
            }
            for &p in set {
                if p < count && kept < quota && taken.insert((*topic, p)) {
                    held.entry(id.as_str()).or_default().insert((*topic, p));
                    kept += 1;
                }
            }
        }
    }
    // 2. The rest, each to the subscribed member holding the fewest (ties: member id).
    for tp in all {
        if taken.contains(&tp) {
            continue;
        }
        let fewest = members
            .iter()
            .filter(|(_, m)| m.topics.contains(&tp.0))
            .min_by_key(|(id, _)| (held.get(id.as_str()).map_or(0, |h| h.len()), *id));
        if let Some((id, _)) = fewest {
            held.entry(id.as_str()).or_default().insert(tp);
            taken.insert(tp);
        }
    }
    // 3. Balance: move from a member over one above a subscribed member to it.
    loop {
        let mut by_count: Vec<(&str, usize)> = held.iter().map(|(m, h)| (*m, h.len())).collect();
        by_count.sort_by_key(|(m, n)| (std::cmp::Reverse(*n), *m));
        let mut movement = None;
        'search: for (from, n) in &by_count {
            let Some(from_held) = held.get(from) else { continue };
            for tp in from_held {
                let target = members
                    .iter()
                    .filter(|(id, m)| id.as_str() != *from && m.topics.contains(&tp.0))
                    .map(|(id, _)| (id.as_str(), held.get(id.as_str()).map_or(0, |h| h.len())))
                    .filter(|(_, count)| count + 1 < *n)
                    .min_by_key(|(id, count)| (*count, *id));
                if let Some((to, _)) = target {
                    movement = Some((*from, to, *tp));
                    break 'search;
                }
            }
        }
        let Some((from, to, tp)) = movement else { break };
        if let Some(h) = held.get_mut(from) {
            h.remove(&tp);
        }
        held.entry(to).or_default().insert(tp);
    }
    let mut out: BTreeMap<String, Assignment> = BTreeMap::new();
    for id in members.keys() {
        let mut assignment = Assignment::new();
        for (topic, p) in held.get(id.as_str()).into_iter().flatten() {
            assignment.entry(*topic).or_default().insert(*p);
        }
        out.insert(id.clone(), assignment);
    }
    out
}

/// Number of partitions in an assignment.
pub fn size(assignment: &Assignment) -> usize {
    assignment.values().map(BTreeSet::len).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn topic(n: u8) -> TopicId {
        [n; 16]
    }

    fn members(specs: &[(&str, &[u8])]) -> BTreeMap<String, AssignMember> {
        specs
            .iter()
            .map(|(id, topics)| {
                let topics = topics.iter().map(|t| topic(*t)).collect();
                (id.to_string(), AssignMember { topics, previous: Assignment::new() })
            })
            .collect()
    }

    /// Every partition of a subscribed topic goes to exactly one member that subscribes to it.
    fn check_complete(
        members: &BTreeMap<String, AssignMember>,
        partitions: &BTreeMap<TopicId, i32>,
        out: &BTreeMap<String, Assignment>,
    ) {
        let mut seen = BTreeSet::new();
        for (id, assignment) in out {
            for (t, set) in assignment {
                assert!(members[id].topics.contains(t), "{id} got a topic it does not read");
                for p in set {
                    assert!(*p < partitions[t]);
                    assert!(seen.insert((*t, *p)), "partition given twice");
                }
            }
        }
        let expected: usize = partitions
            .iter()
            .filter(|(t, _)| members.values().any(|m| m.topics.contains(*t)))
            .map(|(_, n)| *n as usize)
            .sum();
        assert_eq!(seen.len(), expected);
    }

    #[test]
    fn uniform_balances_identical_subscriptions_and_is_sticky() {
        let partitions: BTreeMap<_, _> = [(topic(1), 7), (topic(2), 5)].into();
        let mut m = members(&[("a", &[1, 2]), ("b", &[1, 2])]);
        let first = assign(UNIFORM, &m, &partitions);
        check_complete(&m, &partitions, &first);
        assert_eq!(size(&first["a"]), 6);
        assert_eq!(size(&first["b"]), 6);
        // A third member: everyone keeps what they can, the newcomer gets a fair share.
        for (id, a) in &first {
            m.get_mut(id).unwrap().previous = a.clone();
        }
        m.insert(
            "c".into(),
            AssignMember { topics: [topic(1), topic(2)].into(), ..Default::default() },
        );
        let second = assign(UNIFORM, &m, &partitions);
        check_complete(&m, &partitions, &second);
        for id in ["a", "b", "c"] {
            assert_eq!(size(&second[id]), 4, "{id}");
        }
        for id in ["a", "b"] {
            for (t, set) in &second[id] {
                assert!(set.is_subset(&first[id][t]), "{id} lost a partition it could keep");
            }
        }
    }

    #[test]
    fn range_gives_contiguous_ranges_by_member_id() {
        let partitions: BTreeMap<_, _> = [(topic(1), 5)].into();
        let m = members(&[("b", &[1]), ("a", &[1])]);
        let out = assign(RANGE, &m, &partitions);
        assert_eq!(out["a"][&topic(1)], [0, 1, 2].into());
        assert_eq!(out["b"][&topic(1)], [3, 4].into());
    }

    #[test]
    fn random_subscriptions_are_complete_and_uniform_is_balanced_when_identical() {
        let seed = crate::model::test_seed(
            "random_subscriptions_are_complete_and_uniform_is_balanced_when_identical",
        );
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        for _ in 0..300 {
            let topics = rng.gen_range(1..5u8);
            let partitions: BTreeMap<_, _> =
                (0..topics).map(|t| (topic(t), rng.gen_range(0..12))).collect();
            let count = rng.gen_range(1..7);
            let identical = rng.gen_bool(0.5);
            let mut m = BTreeMap::new();
            let mut previous_target: BTreeMap<String, Assignment> = BTreeMap::new();
            for round in 0..3 {
                m.clear();
                for i in 0..count + round {
                    let subs: BTreeSet<TopicId> = if identical {
                        (0..topics).map(topic).collect()
                    } else {
                        (0..topics).filter(|_| rng.gen_bool(0.6)).map(topic).collect()
                    };
                    let id = format!("m{i}");
                    let previous = previous_target.get(&id).cloned().unwrap_or_default();
                    m.insert(id, AssignMember { topics: subs, previous });
                }
                for name in [UNIFORM, RANGE] {
                    let out = assign(name, &m, &partitions);
                    check_complete(&m, &partitions, &out);
                    if name == UNIFORM && identical {
                        let sizes: Vec<usize> = out.values().map(size).collect();
                        let (lo, hi) = (sizes.iter().min(), sizes.iter().max());
                        assert!(hi.unwrap() - lo.unwrap() <= 1, "unbalanced {sizes:?}");
                    }
                    if name == UNIFORM {
                        previous_target = out;
                    }
                }
            }
        }
    }

    /// Every subscription pattern of up to 3 members over 2 topics, any subset each.
    fn patterns(count: usize) -> Vec<Vec<BTreeSet<TopicId>>> {
        let subsets: Vec<BTreeSet<TopicId>> =
            vec![[].into(), [topic(1)].into(), [topic(2)].into(), [topic(1), topic(2)].into()];
        let mut out: Vec<Vec<BTreeSet<TopicId>>> = vec![Vec::new()];
        for _ in 0..count {
            out = out
                .into_iter()
                .flat_map(|prefix| {
                    subsets.iter().map(move |s| {
                        let mut next = prefix.clone();
                        next.push(s.clone());
                        next
                    })
                })
                .collect();
        }
        out
    }

    fn group(subs: &[BTreeSet<TopicId>], previous: &BTreeMap<String, Assignment>) -> Members {
        subs.iter()
            .enumerate()
            .map(|(i, topics)| {
                let id = format!("m{i}");
                let previous = previous.get(&id).cloned().unwrap_or_default();
                (id, AssignMember { topics: topics.clone(), previous })
            })
            .collect()
    }

    type Members = BTreeMap<String, AssignMember>;

    /// No partition could move to another subscriber of its topic holding two fewer.
    fn check_locally_balanced(members: &Members, out: &BTreeMap<String, Assignment>) {
        for (from, assignment) in out {
            for t in assignment.keys() {
                for (to, m) in members {
                    if to != from && m.topics.contains(t) {
                        assert!(
                            size(&out[to]) + 1 >= size(assignment),
                            "{from} holds {} and {to} {}: {out:?}",
                            size(assignment),
                            size(&out[to])
                        );
                    }
                }
            }
        }
    }

    /// Range: per topic, the subscribers in member id order get contiguous ranges from 0, the
    /// first `P mod M` of them one more.
    fn check_range(members: &Members, partitions: &BTreeMap<TopicId, i32>, out: &Outcome) {
        for (t, &count) in partitions {
            let subscribed: Vec<&String> =
                members.iter().filter(|(_, m)| m.topics.contains(t)).map(|(id, _)| id).collect();
            let mut next = 0;
            for (i, id) in subscribed.iter().enumerate() {
                let n = subscribed.len() as i32;
                let take = count / n + i32::from((i as i32) < count % n);
                let got = out[*id].get(t).cloned().unwrap_or_default();
                assert_eq!(got, (next..next + take).collect(), "{id} of {count}: {out:?}");
                next += take;
            }
        }
    }

    type Outcome = BTreeMap<String, Assignment>;

    /// Partitions each member keeps of its previous target, at most what a balanced
    /// assignment of `total` partitions over the members allows (the `total mod members`
    /// larger shares go to those that held the most).
    fn best_retention(members: &Members, total: usize) -> usize {
        let mut held: Vec<usize> = members.values().map(|m| size(&m.previous)).collect();
        held.sort_unstable_by(|a, b| b.cmp(a));
        let (share, extra) = (total / held.len(), total % held.len());
        held.iter().enumerate().map(|(i, &h)| h.min(share + usize::from(i < extra))).sum()
    }

    fn retained(members: &Members, out: &Outcome) -> usize {
        members
            .iter()
            .map(|(id, m)| {
                m.previous
                    .iter()
                    .map(|(t, set)| out[id].get(t).map_or(0, |now| set.intersection(now).count()))
                    .sum::<usize>()
            })
            .sum()
    }

    #[test]
    fn exhaustive_small_cases() {
        let mut cases = 0;
        for (p1, p2) in (0..=3).flat_map(|a| (0..=3).map(move |b| (a, b))) {
            let partitions: BTreeMap<_, _> = [(topic(1), p1), (topic(2), p2)].into();
            for count in 1..=3 {
                for subs in patterns(count) {
                    let fresh = group(&subs, &BTreeMap::new());
                    check_range(&fresh, &partitions, &assign(RANGE, &fresh, &partitions));
                    let first = assign(UNIFORM, &fresh, &partitions);
                    check_complete(&fresh, &partitions, &first);
                    check_locally_balanced(&fresh, &first);
                    // Then every change of subscriptions, and a member more or less, with
                    // the first target as the previous one.
                    let mut next: Vec<Vec<BTreeSet<TopicId>>> = patterns(count);
                    next.extend(patterns(count + 1).into_iter().filter(|n| n[..count] == subs));
                    if count > 1 {
                        next.push(subs[..count - 1].to_vec());
                    }
                    for later in next {
                        let members = group(&later, &first);
                        let out = assign(UNIFORM, &members, &partitions);
                        check_complete(&members, &partitions, &out);
                        check_locally_balanced(&members, &out);
                        let all: BTreeSet<&BTreeSet<TopicId>> = later.iter().collect();
                        if all.len() == 1 && later[0] == [topic(1), topic(2)].into() {
                            let sizes: Vec<usize> = out.values().map(size).collect();
                            let (lo, hi) = (sizes.iter().min(), sizes.iter().max());
                            assert!(hi.unwrap() - lo.unwrap() <= 1, "unbalanced {sizes:?}");
                            let total = (p1 + p2) as usize;
                            assert_eq!(
                                retained(&members, &out),
                                best_retention(&members, total),
                                "not sticky: {members:?} -> {out:?}"
                            );
                        }
                        cases += 1;
                    }
                }
            }
        }
        assert!(cases > 10_000, "{cases}");
    }
}
