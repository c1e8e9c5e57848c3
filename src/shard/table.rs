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

    #[test]
    fn routing_is_stable() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(shard_for("t", 0, 4), shard_for("t", 0, 4));
        assert_eq!(shard_for_key("g", 1), ShardId(0));
    }
}
