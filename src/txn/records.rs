//! The transaction log's records: Kafka's `__transaction_state` formats (version 0), plus the
//! groups of a transaction, which Spate appends after Kafka's fields (Kafka keeps them as
//! partitions of `__consumer_offsets`; Spate has no such partitions). Big-endian:
//!
//! ```text
//!   key:   version int16 (0) | transactional_id string (int16 length)
//!   value: version int16 (0) | producer_id int64 | producer_epoch int16
//!          | transaction_timeout_ms int32 | transaction_status int8
//!          | partitions: int32 count, [topic string, int32 count, [partition int32]]
//!          | last_update_timestamp_ms int64 | start_timestamp_ms int64
//!          | groups (Spate): int32 count, [group string]
//!          | offsets (Spate): int32 count, [group string, topic string, partition int32,
//!                                          offset int64, leader_epoch int32, metadata string]
//! ```

use std::collections::BTreeMap;

use crate::model::{LeaderEpoch, Offset, ProducerEpoch, ProducerId};
use crate::txn::state::{TxnMeta, TxnOffset, TxnRecord, TxnState};

fn encode_key(transactional_id: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + transactional_id.len());
    out.extend(0i16.to_be_bytes());
    put_string(&mut out, transactional_id);
    out
}

fn encode_value(meta: &TxnMeta) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.extend(0i16.to_be_bytes());
    out.extend(meta.producer_id.0.to_be_bytes());
    out.extend(meta.producer_epoch.0.to_be_bytes());
    out.extend(meta.timeout_ms.to_be_bytes());
    out.push(meta.state.code() as u8);
    let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (topic, partition) in &meta.partitions {
        topics.entry(topic).or_default().push(*partition);
    }
    out.extend((topics.len() as i32).to_be_bytes());
    for (topic, partitions) in topics {
        put_string(&mut out, topic);
        out.extend((partitions.len() as i32).to_be_bytes());
        for p in partitions {
            out.extend(p.to_be_bytes());
        }
    }
    out.extend(meta.update_ms.to_be_bytes());
    out.extend(meta.start_ms.to_be_bytes());
    out.extend((meta.groups.len() as i32).to_be_bytes());
    for group in &meta.groups {
        put_string(&mut out, group);
    }
    out.extend((meta.offsets.len() as i32).to_be_bytes());
    for ((group, topic, partition), o) in &meta.offsets {
        put_string(&mut out, group);
        put_string(&mut out, topic);
        out.extend(partition.to_be_bytes());
        out.extend(o.offset.0.to_be_bytes());
        out.extend(o.leader_epoch.0.to_be_bytes());
        put_string(&mut out, &o.metadata);
    }
    out
}

/// A record's key and value (None: a tombstone, the id expired).
pub fn encode(record: &TxnRecord) -> (Vec<u8>, Option<Vec<u8>>) {
    let key = encode_key(record.transactional_id());
    (key, record.meta().map(encode_value))
}

/// Reads a record back (a null value is a tombstone); None when it is damaged or of an
/// unknown version.
pub fn decode(key: &[u8], value: Option<&[u8]>) -> Option<TxnRecord> {
    let mut k = Reader(key);
    if k.i16()? != 0 {
        return None;
    }
    let transactional_id = k.string()?;
    let Some(value) = value else {
        return Some(TxnRecord::Remove(transactional_id));
    };
    decode_value(transactional_id, value).map(TxnRecord::Put)
}

fn decode_value(transactional_id: String, value: &[u8]) -> Option<TxnMeta> {
    let mut v = Reader(value);
    if v.i16()? != 0 {
        return None;
    }
    let producer_id = ProducerId(v.i64()?);
    let producer_epoch = ProducerEpoch(v.i16()?);
    let timeout_ms = v.i32()?;
    let state = TxnState::from_code(v.take(1)?[0] as i8)?;
    let mut partitions = std::collections::BTreeSet::new();
    for _ in 0..v.count()? {
        let topic = v.string()?;
        for _ in 0..v.count()? {
            partitions.insert((topic.clone(), v.i32()?));
        }
    }
    let update_ms = v.i64()?;
    let start_ms = v.i64()?;
    let mut groups = std::collections::BTreeSet::new();
    let mut offsets = std::collections::BTreeMap::new();
    if !v.0.is_empty() {
        for _ in 0..v.count()? {
            groups.insert(v.string()?);
        }
        for _ in 0..v.count()? {
            let key = (v.string()?, v.string()?, v.i32()?);
            let offset = TxnOffset {
                offset: Offset(v.i64()?),
                leader_epoch: LeaderEpoch(v.i32()?),
                metadata: v.string()?,
            };
            offsets.insert(key, offset);
        }
    }
    Some(TxnMeta {
        transactional_id,
        producer_id,
        producer_epoch,
        timeout_ms,
        state,
        partitions,
        groups,
        offsets,
        start_ms,
        update_ms,
    })
}

fn put_string(out: &mut Vec<u8>, text: &str) {
    crate::model::records::put_short_string(out, text);
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn i16(&mut self) -> Option<i16> {
        Some(i16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }
    fn i32(&mut self) -> Option<i32> {
        Some(i32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
    fn i64(&mut self) -> Option<i64> {
        Some(i64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }
    fn count(&mut self) -> Option<usize> {
        usize::try_from(self.i32()?).ok()
    }
    fn string(&mut self) -> Option<String> {
        let len = usize::try_from(self.i16()?).ok()?;
        String::from_utf8(self.take(len)?.to_vec()).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_damage_is_caught() {
        let meta = TxnMeta {
            transactional_id: "app-1".into(),
            producer_id: ProducerId(42),
            producer_epoch: ProducerEpoch(3),
            timeout_ms: 60_000,
            state: TxnState::PrepareCommit,
            partitions: [("a".to_string(), 0), ("a".to_string(), 2), ("b".to_string(), 1)]
                .into_iter()
                .collect(),
            groups: ["g1".to_string()].into_iter().collect(),
            offsets: [(
                ("g1".to_string(), "in".to_string(), 3),
                TxnOffset {
                    offset: Offset(77),
                    leader_epoch: LeaderEpoch(2),
                    metadata: "m".into(),
                },
            )]
            .into_iter()
            .collect(),
            start_ms: 10,
            update_ms: 20,
        };
        let (key, value) = encode(&TxnRecord::Put(meta.clone()));
        let value = value.expect("a put has a value");
        assert_eq!(decode(&key, Some(&value)), Some(TxnRecord::Put(meta.clone())));
        let (tomb_key, tomb_value) = encode(&TxnRecord::Remove("app-1".into()));
        assert_eq!((tomb_key.as_slice(), tomb_value), (key.as_slice(), None));
        assert_eq!(decode(&key, None), Some(TxnRecord::Remove("app-1".into())));
        for cut in 0..value.len() {
            // Cut right after Kafka's fields: a plain Kafka v0 value, no groups or offsets.
            let spate_extension = 4 + 2 + 2 + 4 + (2 + 2) + (2 + 2) + 4 + 8 + 4 + (2 + 1);
            if cut != value.len() - spate_extension {
                assert_eq!(decode(&key, Some(&value[..cut])), None, "cut at {cut}");
            }
        }
        let mut bad = value.clone();
        bad[0] = 9;
        assert_eq!(decode(&key, Some(&bad)), None);
        assert_eq!(decode(&key[..3], None), None, "a cut key");
    }
}
