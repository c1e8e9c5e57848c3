//! Which shard owns a partition. The same pure function on every core, so routing needs no
//! shared state: hash the topic name (FNV-1a, stable across builds and restarts) and spread
//! its partitions round-robin from there.

use crate::model::ShardId;

pub fn shard_for(topic: &str, partition: i32, shards: usize) -> ShardId {
    assert!(shards > 0 && shards <= usize::from(u16::MAX));
    let hash = fnv1a(topic.as_bytes());
    let slot = (hash % shards as u64 + partition as u64) % shards as u64;
    ShardId(slot as u16)
}

/// The shard that coordinates a key such as a group id, for later issues (FindCoordinator).
pub fn shard_for_key(key: &str, shards: usize) -> ShardId {
    ShardId((fnv1a(key.as_bytes()) % shards as u64) as u16)
}

/// The internal topic's partition of `key`, Kafka's `Utils.abs(key.hashCode()) % partitions`
/// (Java's String hash over UTF-16 code units), so that a key lands where Kafka would put it.
pub fn coordinator_partition(key: &str, partitions: usize) -> usize {
    if partitions == 0 {
        return 0;
    }
    let hash = key
        .encode_utf16()
        .fold(0i32, |hash, unit| hash.wrapping_mul(31).wrapping_add(i32::from(unit)));
    let positive = if hash == i32::MIN { 0 } else { hash.abs() };
    positive as usize % partitions
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_of_a_topic_spread_over_every_shard() {
        for shards in 1..=8 {
            let mut seen = vec![0; shards];
            for partition in 0..(shards as i32 * 4) {
                seen[shard_for("orders", partition, shards).index()] += 1;
            }
            assert!(seen.iter().all(|&n| n == 4), "{shards}: {seen:?}");
        }
    }

    /// Routing is pinned: the values below were computed once, so changing the hash or the
    /// spreading (which moves partitions and coordinators between shards) fails here and has
    /// to be deliberate.
    #[test]
    fn routing_is_stable() {
        // FNV-1a 64's published test vectors: the standard hash, not merely our own.
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
        // (topic, shard of partition 0 with 2, 3, 4 and 8 shards)
        let pinned = [
            ("orders", [0, 1, 0, 4]),
            ("payments", [0, 1, 2, 6]),
            ("__consumer_offsets", [0, 2, 0, 4]),
            ("t", [1, 2, 3, 3]),
            ("clicks", [0, 1, 0, 4]),
        ];
        for (topic, expected) in pinned {
            let shards = [2, 3, 4, 8].map(|shards| shard_for(topic, 0, shards).0);
            assert_eq!(shards, expected, "{topic}");
        }
        // Later partitions continue round-robin from partition 0's shard.
        assert_eq!(shard_for("payments", 5, 4), ShardId(3));
        assert_eq!(shard_for("t", 1, 4), ShardId(0));
        assert_eq!(shard_for("orders", 7, 8), ShardId(3));
        // (group id, shard with 1, 2, 3, 4 and 8 shards)
        let pinned = [
            ("g", [0, 0, 2, 2, 6]),
            ("consumers", [0, 0, 0, 2, 6]),
            ("my-app", [0, 1, 2, 1, 1]),
            ("billing", [0, 0, 1, 0, 4]),
        ];
        for (key, expected) in pinned {
            let shards = [1, 2, 3, 4, 8].map(|shards| shard_for_key(key, shards).0);
            assert_eq!(shards, expected, "{key}");
        }
    }

    /// Topics (their partition 0) and group ids spread evenly: 1000 names of the form
    /// `topic-<i>` (and `group-<i>`) land within 15% of the even share on every shard count
    /// up to 8.
    #[test]
    fn topics_and_keys_spread_over_every_shard() {
        for shards in 2..=8 {
            let mut topics = vec![0usize; shards];
            let mut keys = vec![0usize; shards];
            for i in 0..1000 {
                topics[shard_for(&format!("topic-{i}"), 0, shards).index()] += 1;
                keys[shard_for_key(&format!("group-{i}"), shards).index()] += 1;
            }
            let share = 1000.0 / shards as f64;
            let even = |n: &usize| (*n as f64 - share).abs() <= share * 0.15;
            assert!(topics.iter().all(even), "{shards} shards: topics {topics:?}");
            assert!(keys.iter().all(even), "{shards} shards: keys {keys:?}");
        }
    }
}
