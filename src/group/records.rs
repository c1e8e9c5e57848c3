//! The records of the committed-offsets log, in Kafka's own `__consumer_offsets` formats, so
//! that Kafka's tools can read our files and the formats need no design of their own.
//!
//! ```text
//!  key                                   value (null = tombstone)
//!  OffsetCommitKey v1                    OffsetCommitValue v3 (v1 when it expires)
//!    version   int16 = 1                   version           int16 = 3 | 1
//!    group     string                      offset            int64
//!    topic     string                      leader_epoch      int32   (v3 only)
//!    partition int32                       metadata          string
//!                                          commit_timestamp  int64
//!                                          expire_timestamp  int64   (v1 only)
//!  GroupMetadataKey v2                   GroupMetadataValue v3
//!    version   int16 = 2                   version int16 = 3, protocol_type string,
//!    group     string                      generation int32, protocol string?, leader
//!                                          string?, current_state_timestamp int64,
//!                                          members [member_id, group_instance_id?,
//!                                          client_id, client_host, rebalance_timeout int32,
//!                                          session_timeout int32, subscription bytes,
//!                                          assignment bytes]
//!
//!  ConsumerGroupKey (Spate's own)        ConsumerGroupValue v0 (Spate's own): a KIP-848 group
//!    version   int16 = 0x5350 ("SP")       whole, rewritten when it changes
//!    group     string                      version int16 = 0, group_epoch int32,
//!                                          assignment_epoch int32, state_timestamp int64,
//!                                          subscribed [name string, id uuid, partitions
//!                                          int32], members [member_id, instance_id?,
//!                                          rack_id?, client_id, client_host, topic names
//!                                          [string], regex string?, server_assignor string?,
//!                                          rebalance_timeout int32, member_epoch int32,
//!                                          previous_member_epoch int32, state int8,
//!                                          assigned, pending_revocation, target: each
//!                                          [topic uuid, partitions [int32]], v1: classic
//!                                          int8 (1: a classic member, then
//!                                          session_timeout int32, protocols [name
//!                                          string, metadata bytes])]
//!  SharePartitionKey (Spate's own)       SharePartitionValue v2 (Spate's own): a share
//!    version   int16 = 0x5353 ("SS")       partition's state (KIP-932), rewritten whole
//!    group     string                      version int16 = 2, start_offset int64,
//!    topic     string                      end_offset int64, in-flight records as runs
//!    partition int32                       [first int64, last int64, delivery_count int16],
//!                                          dead letters to write (KIP-1191) [offset int64,
//!                                          delivery_count int16, reason int8, sequence
//!                                          int32], next_letter int32, their producer:
//!                                          producer_id int64 (-1: none, and nothing
//!                                          follows), next_sequence int32, topic string,
//!                                          partition int32, v2: redelivery back-offs
//!                                          [first int64, last int64, until_ms int64 (wall
//!                                          clock)]. v0 ends after the runs.
//! ```
//!
//! A share partition's record replaces Kafka's share coordinator (`__share_group_state`,
//! ShareSnapshot/ShareUpdate records): one record with the whole state of one (group, topic,
//! partition), written before an acknowledgement is answered and before acquired records are
//! handed out, so that nothing accepted is redelivered and nothing handed out is lost.
//!
//! Kafka spreads a consumer group over six record types (key versions 3-8: group epoch,
//! subscription metadata, member subscription, target assignment epoch, target assignment per
//! member, current assignment per member). Spate writes one record per group with all of it,
//! under a key version Kafka does not use, so Kafka's tools skip it. A group's records are
//! written behind, like classic group records: a crash may lose the last change, which costs
//! the members a rejoin (UNKNOWN_MEMBER_ID or FENCED_MEMBER_EPOCH), never a committed offset.
//!
//! Strings are an int16 length and UTF-8 (-1 for null), bytes an int32 length, arrays an
//! int32 count. One deviation: Spate reads a group tombstone as "forget the group and its
//! offsets" (Kafka always writes offset tombstones first, so replaying Kafka's own records
//! gives the same state); snapshots use it to reset a group before restating it.
//!
//! Pure: bytes in, values out.

use bytes::Bytes;

use crate::group::share_partition::{ArchiveReason, DeadLetterProducer, Letter, Stored};
use crate::model::{LeaderEpoch, Offset, ProducerEpoch, ProducerId, TxnOutcome};

const OFFSET_KEY_VERSION: i16 = 1;
const GROUP_KEY_VERSION: i16 = 2;
const OFFSET_VALUE_VERSION: i16 = 3;
const OFFSET_VALUE_VERSION_EXPIRING: i16 = 1;
const GROUP_VALUE_VERSION: i16 = 3;
const CONSUMER_GROUP_KEY_VERSION: i16 = 0x5350;
/// v1 adds each member's classic metadata (members that speak the classic protocol inside a
/// consumer group, KIP-848's online migration); v0 is still read.
const CONSUMER_GROUP_VALUE_VERSION: i16 = 1;
const SHARE_PARTITION_KEY_VERSION: i16 = 0x5353;
const SHARE_PARTITION_VALUE_VERSION: i16 = 2;

/// Longest string the formats can hold (int16 length).
pub const STRING_LENGTH_MAX: usize = crate::model::records::SHORT_STRING_BYTES_MAX;

/// A committed offset as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetValue {
    pub offset: Offset,
    pub leader_epoch: LeaderEpoch,
    pub metadata: String,
    pub commit_timestamp: i64,
    /// Set only by OffsetCommit v2-v4 with a retention time (then stored as value v1).
    pub expire_timestamp: Option<i64>,
}

/// A classic group as stored: written when it stabilises, empties or changes static members.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GroupValue {
    pub protocol_type: String,
    pub generation: i32,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub current_state_timestamp: i64,
    pub members: Vec<MemberValue>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MemberValue {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout: i32,
    pub session_timeout: i32,
    pub subscription: Bytes,
    pub assignment: Bytes,
}

/// Partitions by topic id, as stored.
pub type StoredAssignment = Vec<([u8; 16], Vec<i32>)>;

/// A KIP-848 consumer group as stored (Spate's own format, see the module doc).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConsumerGroupValue {
    pub group_epoch: i32,
    pub assignment_epoch: i32,
    pub state_timestamp: i64,
    /// The topics the target assignment was computed for: name, id, partition count.
    pub subscribed: Vec<(String, [u8; 16], i32)>,
    pub members: Vec<ConsumerMemberValue>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConsumerMemberValue {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub topic_names: Vec<String>,
    pub regex: Option<String>,
    pub server_assignor: Option<String>,
    pub rebalance_timeout: i32,
    pub member_epoch: i32,
    pub previous_member_epoch: i32,
    pub state: i8,
    pub assigned: StoredAssignment,
    pub pending_revocation: StoredAssignment,
    pub target: StoredAssignment,
    /// Some: the member speaks the classic protocol (Kafka's `ClassicMemberMetadata`).
    pub classic: Option<ClassicMemberValue>,
}

/// A classic member's JoinGroup data inside a consumer group.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClassicMemberValue {
    pub session_timeout: i32,
    /// Protocol names and metadata, in the member's order.
    pub protocols: Vec<(String, Bytes)>,
}

/// One record of the log, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    Offset {
        group: String,
        topic: String,
        partition: i32,
        value: Option<OffsetValue>,
    },
    Group {
        group: String,
        value: Option<GroupValue>,
    },
    Consumer {
        group: String,
        value: Option<ConsumerGroupValue>,
    },
    /// A share partition's state (KIP-932; None: the group forgot it).
    Share {
        group: String,
        topic: String,
        partition: i32,
        value: Option<Stored>,
    },
    /// Clustered: an offset of a transaction (TxnOffsetCommit), the same key and value as
    /// `Offset` in a transactional batch of the producer (Kafka's format); pending until
    /// the transaction's marker reaches the partition (`group::txn_offsets`).
    TxnOffset {
        producer_id: ProducerId,
        producer_epoch: ProducerEpoch,
        group: String,
        topic: String,
        partition: i32,
        value: OffsetValue,
    },
    /// Clustered: a transaction marker in a partition of `__consumer_offsets` (a control
    /// batch, as in a data partition). It belongs to the partition, not to a group.
    Marker {
        partition: i32,
        producer_id: ProducerId,
        producer_epoch: ProducerEpoch,
        outcome: TxnOutcome,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    Truncated,
    UnknownVersion(i16),
    NegativeLength,
}

impl Record {
    pub fn group_id(&self) -> &str {
        match self {
            Record::Offset { group, .. }
            | Record::Group { group, .. }
            | Record::Consumer { group, .. }
            | Record::Share { group, .. }
            | Record::TxnOffset { group, .. } => group,
            // A marker belongs to its partition, never to a group (see `Record::Marker`).
            Record::Marker { .. } => "",
        }
    }

    /// Key and value bytes (value `None` for a tombstone).
    pub fn encode(&self) -> (Vec<u8>, Option<Vec<u8>>) {
        match self {
            Record::Offset { group, topic, partition, value } => {
                (offset_key(group, topic, *partition), value.as_ref().map(encode_offset))
            }
            Record::TxnOffset { group, topic, partition, value, .. } => {
                (offset_key(group, topic, *partition), Some(encode_offset(value)))
            }
            Record::Marker { outcome, .. } => {
                // Kafka's EndTransactionMarker: key version 0 and type, value version 0 and
                // the coordinator epoch (0 here, as the data partitions' markers).
                let mut key = vec![0u8; 4];
                key[2..4].copy_from_slice(&outcome.control_type().to_be_bytes());
                (key, Some(vec![0u8; 6]))
            }
            Record::Group { group, value } => {
                let mut key = Vec::with_capacity(4 + group.len());
                key.extend(GROUP_KEY_VERSION.to_be_bytes());
                put_string(&mut key, group);
                (key, value.as_ref().map(encode_group))
            }
            Record::Consumer { group, value } => {
                let mut key = Vec::with_capacity(4 + group.len());
                key.extend(CONSUMER_GROUP_KEY_VERSION.to_be_bytes());
                put_string(&mut key, group);
                (key, value.as_ref().map(encode_consumer_group))
            }
            Record::Share { group, topic, partition, value } => {
                let mut key = Vec::with_capacity(8 + group.len() + topic.len());
                key.extend(SHARE_PARTITION_KEY_VERSION.to_be_bytes());
                put_string(&mut key, group);
                put_string(&mut key, topic);
                key.extend(partition.to_be_bytes());
                (key, value.as_ref().map(encode_share_partition))
            }
        }
    }

    pub fn decode(key: &[u8], value: Option<&[u8]>) -> Result<Record, DecodeError> {
        let mut k = Reader(key);
        match k.i16()? {
            0 | 1 => {
                let group = k.string()?;
                let topic = k.string()?;
                let partition = k.i32()?;
                let value = value.map(decode_offset).transpose()?;
                Ok(Record::Offset { group, topic, partition, value })
            }
            2 => {
                let group = k.string()?;
                let value = value.map(decode_group).transpose()?;
                Ok(Record::Group { group, value })
            }
            CONSUMER_GROUP_KEY_VERSION => {
                let group = k.string()?;
                let value = value.map(decode_consumer_group).transpose()?;
                Ok(Record::Consumer { group, value })
            }
            SHARE_PARTITION_KEY_VERSION => {
                let group = k.string()?;
                let topic = k.string()?;
                let partition = k.i32()?;
                let value = value.map(decode_share_partition).transpose()?;
                Ok(Record::Share { group, topic, partition, value })
            }
            other => Err(DecodeError::UnknownVersion(other)),
        }
    }
}

fn encode_share_partition(v: &Stored) -> Vec<u8> {
    let mut out = Vec::with_capacity(24 + 18 * v.runs.len());
    out.extend(SHARE_PARTITION_VALUE_VERSION.to_be_bytes());
    out.extend(v.start_offset.to_be_bytes());
    out.extend(v.end_offset.to_be_bytes());
    out.extend((v.runs.len() as i32).to_be_bytes());
    for (first, last, count) in &v.runs {
        out.extend(first.to_be_bytes());
        out.extend(last.to_be_bytes());
        out.extend(count.to_be_bytes());
    }
    out.extend((v.letters.len() as i32).to_be_bytes());
    for letter in &v.letters {
        out.extend(letter.offset.to_be_bytes());
        out.extend(letter.delivery_count.to_be_bytes());
        out.push(letter.reason.code() as u8);
        out.extend(letter.sequence.to_be_bytes());
    }
    out.extend(v.next_letter.to_be_bytes());
    match &v.producer {
        None => out.extend((-1i64).to_be_bytes()),
        Some(producer) => {
            out.extend(producer.producer_id.to_be_bytes());
            out.extend(producer.next_sequence.to_be_bytes());
            put_string(&mut out, &producer.topic);
            out.extend(producer.partition.to_be_bytes());
        }
    }
    out.extend((v.backoffs.len() as i32).to_be_bytes());
    for (first, last, until_ms) in &v.backoffs {
        out.extend(first.to_be_bytes());
        out.extend(last.to_be_bytes());
        out.extend(until_ms.to_be_bytes());
    }
    out
}

fn decode_share_partition(bytes: &[u8]) -> Result<Stored, DecodeError> {
    let mut r = Reader(bytes);
    let version = r.i16()?;
    if !(0..=SHARE_PARTITION_VALUE_VERSION).contains(&version) {
        return Err(DecodeError::UnknownVersion(version));
    }
    let start_offset = r.i64()?;
    let end_offset = r.i64()?;
    let count = r.i32()?;
    if count < 0 {
        return Err(DecodeError::NegativeLength);
    }
    let mut runs = Vec::with_capacity((count as usize).min(bytes.len() / 18));
    for _ in 0..count {
        runs.push((r.i64()?, r.i64()?, r.i16()?));
    }
    let mut stored = Stored { start_offset, end_offset, runs, ..Stored::default() };
    if version == 0 {
        return Ok(stored);
    }
    let count = r.i32()?;
    if count < 0 {
        return Err(DecodeError::NegativeLength);
    }
    for _ in 0..count {
        let (offset, delivery_count) = (r.i64()?, r.i16()?);
        let reason = ArchiveReason::from_code(r.take(1)?[0] as i8);
        let sequence = r.i32()?;
        stored.letters.push(Letter { offset, delivery_count, reason, sequence });
    }
    stored.next_letter = r.i32()?;
    let producer_id = r.i64()?;
    if producer_id >= 0 {
        stored.producer = Some(DeadLetterProducer {
            producer_id,
            next_sequence: r.i32()?,
            topic: r.string()?,
            partition: r.i32()?,
        });
    }
    if version == 1 {
        return Ok(stored);
    }
    let count = r.i32()?;
    if count < 0 {
        return Err(DecodeError::NegativeLength);
    }
    stored.backoffs = Vec::with_capacity((count as usize).min(bytes.len() / 24));
    for _ in 0..count {
        stored.backoffs.push((r.i64()?, r.i64()?, r.i64()?));
    }
    Ok(stored)
}

fn offset_key(group: &str, topic: &str, partition: i32) -> Vec<u8> {
    let mut key = Vec::with_capacity(8 + group.len() + topic.len());
    key.extend(OFFSET_KEY_VERSION.to_be_bytes());
    put_string(&mut key, group);
    put_string(&mut key, topic);
    key.extend(partition.to_be_bytes());
    key
}

fn encode_offset(v: &OffsetValue) -> Vec<u8> {
    let mut out = Vec::with_capacity(32 + v.metadata.len());
    match v.expire_timestamp {
        None => {
            out.extend(OFFSET_VALUE_VERSION.to_be_bytes());
            out.extend(v.offset.0.to_be_bytes());
            out.extend(v.leader_epoch.0.to_be_bytes());
            put_string(&mut out, &v.metadata);
            out.extend(v.commit_timestamp.to_be_bytes());
        }
        Some(expire) => {
            out.extend(OFFSET_VALUE_VERSION_EXPIRING.to_be_bytes());
            out.extend(v.offset.0.to_be_bytes());
            put_string(&mut out, &v.metadata);
            out.extend(v.commit_timestamp.to_be_bytes());
            out.extend(expire.to_be_bytes());
        }
    }
    out
}

fn decode_offset(bytes: &[u8]) -> Result<OffsetValue, DecodeError> {
    let mut r = Reader(bytes);
    let version = r.i16()?;
    if !(0..=3).contains(&version) {
        return Err(DecodeError::UnknownVersion(version));
    }
    let offset = Offset(r.i64()?);
    let leader_epoch = if version >= 3 { LeaderEpoch(r.i32()?) } else { LeaderEpoch::NONE };
    let metadata = r.string()?;
    let commit_timestamp = r.i64()?;
    let expire_timestamp = if version == 1 { Some(r.i64()?) } else { None };
    Ok(OffsetValue { offset, leader_epoch, metadata, commit_timestamp, expire_timestamp })
}

fn encode_group(v: &GroupValue) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.extend(GROUP_VALUE_VERSION.to_be_bytes());
    put_string(&mut out, &v.protocol_type);
    out.extend(v.generation.to_be_bytes());
    put_nullable_string(&mut out, v.protocol.as_deref());
    put_nullable_string(&mut out, v.leader.as_deref());
    out.extend(v.current_state_timestamp.to_be_bytes());
    out.extend((v.members.len() as i32).to_be_bytes());
    for m in &v.members {
        put_string(&mut out, &m.member_id);
        put_nullable_string(&mut out, m.group_instance_id.as_deref());
        put_string(&mut out, &m.client_id);
        put_string(&mut out, &m.client_host);
        out.extend(m.rebalance_timeout.to_be_bytes());
        out.extend(m.session_timeout.to_be_bytes());
        put_bytes(&mut out, &m.subscription);
        put_bytes(&mut out, &m.assignment);
    }
    out
}

fn decode_group(bytes: &[u8]) -> Result<GroupValue, DecodeError> {
    let mut r = Reader(bytes);
    let version = r.i16()?;
    if !(0..=3).contains(&version) {
        return Err(DecodeError::UnknownVersion(version));
    }
    let protocol_type = r.string()?;
    let generation = r.i32()?;
    let protocol = r.nullable_string()?;
    let leader = r.nullable_string()?;
    let current_state_timestamp = if version >= 2 { r.i64()? } else { -1 };
    let count = r.i32()?;
    if count < 0 {
        return Err(DecodeError::NegativeLength);
    }
    let mut members = Vec::with_capacity((count as usize).min(bytes.len()));
    for _ in 0..count {
        let member_id = r.string()?;
        let group_instance_id = if version >= 3 { r.nullable_string()? } else { None };
        let client_id = r.string()?;
        let client_host = r.string()?;
        let session_or_rebalance = r.i32()?;
        let (rebalance_timeout, session_timeout) = if version >= 1 {
            (session_or_rebalance, r.i32()?)
        } else {
            (session_or_rebalance, session_or_rebalance)
        };
        let subscription = r.bytes()?;
        let assignment = r.bytes()?;
        members.push(MemberValue {
            member_id,
            group_instance_id,
            client_id,
            client_host,
            rebalance_timeout,
            session_timeout,
            subscription,
            assignment,
        });
    }
    Ok(GroupValue { protocol_type, generation, protocol, leader, current_state_timestamp, members })
}

fn encode_consumer_group(v: &ConsumerGroupValue) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    out.extend(CONSUMER_GROUP_VALUE_VERSION.to_be_bytes());
    out.extend(v.group_epoch.to_be_bytes());
    out.extend(v.assignment_epoch.to_be_bytes());
    out.extend(v.state_timestamp.to_be_bytes());
    out.extend((v.subscribed.len() as i32).to_be_bytes());
    for (name, id, partitions) in &v.subscribed {
        put_string(&mut out, name);
        out.extend_from_slice(id);
        out.extend(partitions.to_be_bytes());
    }
    out.extend((v.members.len() as i32).to_be_bytes());
    for m in &v.members {
        put_string(&mut out, &m.member_id);
        put_nullable_string(&mut out, m.instance_id.as_deref());
        put_nullable_string(&mut out, m.rack_id.as_deref());
        put_string(&mut out, &m.client_id);
        put_string(&mut out, &m.client_host);
        out.extend((m.topic_names.len() as i32).to_be_bytes());
        for name in &m.topic_names {
            put_string(&mut out, name);
        }
        put_nullable_string(&mut out, m.regex.as_deref());
        put_nullable_string(&mut out, m.server_assignor.as_deref());
        out.extend(m.rebalance_timeout.to_be_bytes());
        out.extend(m.member_epoch.to_be_bytes());
        out.extend(m.previous_member_epoch.to_be_bytes());
        out.push(m.state as u8);
        for assignment in [&m.assigned, &m.pending_revocation, &m.target] {
            put_assignment(&mut out, assignment);
        }
        match &m.classic {
            None => out.push(0),
            Some(classic) => {
                out.push(1);
                out.extend(classic.session_timeout.to_be_bytes());
                out.extend((classic.protocols.len() as i32).to_be_bytes());
                for (name, metadata) in &classic.protocols {
                    put_string(&mut out, name);
                    put_bytes(&mut out, metadata);
                }
            }
        }
    }
    out
}

fn put_assignment(out: &mut Vec<u8>, assignment: &StoredAssignment) {
    out.extend((assignment.len() as i32).to_be_bytes());
    for (id, partitions) in assignment {
        out.extend_from_slice(id);
        out.extend((partitions.len() as i32).to_be_bytes());
        for p in partitions {
            out.extend(p.to_be_bytes());
        }
    }
}

fn decode_consumer_group(bytes: &[u8]) -> Result<ConsumerGroupValue, DecodeError> {
    let mut r = Reader(bytes);
    let version = r.i16()?;
    if !(0..=CONSUMER_GROUP_VALUE_VERSION).contains(&version) {
        return Err(DecodeError::UnknownVersion(version));
    }
    let group_epoch = r.i32()?;
    let assignment_epoch = r.i32()?;
    let state_timestamp = r.i64()?;
    let count = r.count(bytes.len())?;
    let mut subscribed = Vec::with_capacity(count);
    for _ in 0..count {
        let name = r.string()?;
        let id = r.uuid()?;
        subscribed.push((name, id, r.i32()?));
    }
    let count = r.count(bytes.len())?;
    let mut members = Vec::with_capacity(count);
    for _ in 0..count {
        let member_id = r.string()?;
        let instance_id = r.nullable_string()?;
        let rack_id = r.nullable_string()?;
        let client_id = r.string()?;
        let client_host = r.string()?;
        let names = r.count(bytes.len())?;
        let mut topic_names = Vec::with_capacity(names);
        for _ in 0..names {
            topic_names.push(r.string()?);
        }
        let regex = r.nullable_string()?;
        let server_assignor = r.nullable_string()?;
        let rebalance_timeout = r.i32()?;
        let member_epoch = r.i32()?;
        let previous_member_epoch = r.i32()?;
        let state = r.take(1)?[0] as i8;
        let assigned = r.assignment(bytes.len())?;
        let pending_revocation = r.assignment(bytes.len())?;
        let target = r.assignment(bytes.len())?;
        let classic = if version >= 1 && r.take(1)?[0] == 1 {
            let session_timeout = r.i32()?;
            let count = r.count(bytes.len())?;
            let mut protocols = Vec::with_capacity(count);
            for _ in 0..count {
                protocols.push((r.string()?, r.bytes()?));
            }
            Some(ClassicMemberValue { session_timeout, protocols })
        } else {
            None
        };
        members.push(ConsumerMemberValue {
            member_id,
            instance_id,
            rack_id,
            client_id,
            client_host,
            topic_names,
            regex,
            server_assignor,
            rebalance_timeout,
            member_epoch,
            previous_member_epoch,
            state,
            assigned,
            pending_revocation,
            target,
            classic,
        });
    }
    Ok(ConsumerGroupValue { group_epoch, assignment_epoch, state_timestamp, subscribed, members })
}

/// Writes an int16-length string. Callers validate lengths; an over-long string is cut at
/// the limit (so the record stays well formed) rather than corrupting the log.
fn put_string(out: &mut Vec<u8>, text: &str) {
    crate::model::records::put_short_string(out, text);
}

fn put_nullable_string(out: &mut Vec<u8>, text: Option<&str>) {
    match text {
        None => out.extend((-1i16).to_be_bytes()),
        Some(text) => put_string(out, text),
    }
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend((bytes.len() as i32).to_be_bytes());
    out.extend_from_slice(bytes);
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.0.len() < n {
            return Err(DecodeError::Truncated);
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    /// An int32 element count, bounded by the bytes the value has (a count cannot promise
    /// more elements than there are bytes).
    fn count(&mut self, bound: usize) -> Result<usize, DecodeError> {
        let count = self.i32()?;
        if count < 0 {
            return Err(DecodeError::NegativeLength);
        }
        Ok((count as usize).min(bound))
    }

    fn uuid(&mut self) -> Result<[u8; 16], DecodeError> {
        let mut id = [0u8; 16];
        id.copy_from_slice(self.take(16)?);
        Ok(id)
    }

    fn assignment(&mut self, bound: usize) -> Result<StoredAssignment, DecodeError> {
        let topics = self.count(bound)?;
        let mut out = Vec::with_capacity(topics);
        for _ in 0..topics {
            let id = self.uuid()?;
            let partitions = self.count(bound)?;
            let mut list = Vec::with_capacity(partitions);
            for _ in 0..partitions {
                list.push(self.i32()?);
            }
            out.push((id, list));
        }
        Ok(out)
    }

    fn i16(&mut self) -> Result<i16, DecodeError> {
        let b = self.take(2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    fn i32(&mut self) -> Result<i32, DecodeError> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn i64(&mut self) -> Result<i64, DecodeError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(i64::from_be_bytes(a))
    }

    fn nullable_string(&mut self) -> Result<Option<String>, DecodeError> {
        let len = self.i16()?;
        if len < 0 {
            return Ok(None);
        }
        let bytes = self.take(len as usize)?;
        Ok(Some(String::from_utf8_lossy(bytes).into_owned()))
    }

    fn string(&mut self) -> Result<String, DecodeError> {
        Ok(self.nullable_string()?.unwrap_or_default())
    }

    fn bytes(&mut self) -> Result<Bytes, DecodeError> {
        let len = self.i32()?;
        if len < 0 {
            return Ok(Bytes::new());
        }
        Ok(Bytes::copy_from_slice(self.take(len as usize)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(record: Record) {
        let (key, value) = record.encode();
        let back = Record::decode(&key, value.as_deref()).expect("decode");
        assert_eq!(back, record);
    }

    #[test]
    fn offsets_round_trip_in_both_value_versions() {
        let mut value = OffsetValue {
            offset: Offset(42),
            leader_epoch: LeaderEpoch(7),
            metadata: "m".into(),
            commit_timestamp: 1_000,
            expire_timestamp: None,
        };
        let record = |value| Record::Offset {
            group: "g".into(),
            topic: "t".into(),
            partition: 3,
            value: Some(value),
        };
        round_trip(record(value.clone()));
        value.leader_epoch = LeaderEpoch::NONE; // v1 has no leader epoch
        value.expire_timestamp = Some(5_000);
        round_trip(record(value));
        round_trip(Record::Offset {
            group: "g".into(),
            topic: "t".into(),
            partition: 0,
            value: None,
        });
    }

    #[test]
    fn consumer_groups_round_trip_and_truncation_is_an_error() {
        let member = ConsumerMemberValue {
            member_id: "m".into(),
            instance_id: Some("i".into()),
            rack_id: None,
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            topic_names: vec!["a".into(), "b".into()],
            regex: Some("x.*".into()),
            server_assignor: Some("range".into()),
            rebalance_timeout: 300_000,
            member_epoch: 4,
            previous_member_epoch: 3,
            state: 1,
            assigned: vec![([1; 16], vec![0, 2])],
            pending_revocation: vec![([1; 16], vec![1])],
            target: vec![([1; 16], vec![0, 2]), ([2; 16], vec![])],
            classic: None,
        };
        let classic = ConsumerMemberValue {
            member_id: "k".into(),
            classic: Some(ClassicMemberValue {
                session_timeout: 10_000,
                protocols: vec![("range".into(), Bytes::from_static(b"\0\x01xyz"))],
            }),
            ..member.clone()
        };
        let value = ConsumerGroupValue {
            group_epoch: 5,
            assignment_epoch: 5,
            state_timestamp: 77,
            subscribed: vec![("a".into(), [1; 16], 3)],
            members: vec![member, classic],
        };
        let record = Record::Consumer { group: "g".into(), value: Some(value) };
        round_trip(record.clone());
        round_trip(Record::Consumer { group: "g".into(), value: None });
        let stored = Stored {
            start_offset: 5,
            end_offset: 9,
            runs: vec![(5, 6, 2), (8, 8, 1)],
            letters: vec![Letter {
                offset: 7,
                delivery_count: 3,
                reason: ArchiveReason::DeliveryCountExceeded,
                sequence: 4,
            }],
            next_letter: 5,
            producer: Some(DeadLetterProducer {
                producer_id: 41,
                next_sequence: 2,
                topic: "dlq.t".into(),
                partition: 1,
            }),
            backoffs: vec![(5, 5, 1_700_000_000_123), (6, 6, 1_700_000_004_000)],
        };
        let share =
            |value| Record::Share { group: "g".into(), topic: "t".into(), partition: 3, value };
        round_trip(share(Some(stored.clone())));
        round_trip(share(None));
        // A v1 value (before the back-offs) still reads, without back-offs.
        let (key, value) = share(Some(stored.clone())).encode();
        let mut v1 = value.expect("a value");
        v1.truncate(v1.len() - 4 - 24 * stored.backoffs.len());
        v1[..2].copy_from_slice(&1i16.to_be_bytes());
        let old = Stored { backoffs: vec![], ..stored };
        assert_eq!(Record::decode(&key, Some(&v1)).expect("v1"), share(Some(old)));
        let (key, value) = record.encode();
        let value = value.unwrap_or_default();
        for cut in 0..value.len() {
            assert!(Record::decode(&key, Some(&value[..cut])).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn groups_round_trip() {
        let value = GroupValue {
            protocol_type: "consumer".into(),
            generation: 9,
            protocol: Some("range".into()),
            leader: Some("a-1".into()),
            current_state_timestamp: 77,
            members: vec![MemberValue {
                member_id: "a-1".into(),
                group_instance_id: Some("i".into()),
                client_id: "a".into(),
                client_host: "/127.0.0.1".into(),
                rebalance_timeout: 300_000,
                session_timeout: 45_000,
                subscription: Bytes::from_static(b"sub"),
                assignment: Bytes::from_static(b"asg"),
            }],
        };
        round_trip(Record::Group { group: "g".into(), value: Some(value) });
        round_trip(Record::Group { group: "g".into(), value: None });
    }

    #[test]
    fn keys_match_kafkas_bytes() {
        // OffsetCommitKey v1 {group "g", topic "t", partition 1}, as Kafka writes it.
        let (key, _) =
            Record::Offset { group: "g".into(), topic: "t".into(), partition: 1, value: None }
                .encode();
        assert_eq!(key, vec![0, 1, 0, 1, b'g', 0, 1, b't', 0, 0, 0, 1]);
        let (key, _) = Record::Group { group: "g".into(), value: None }.encode();
        assert_eq!(key, vec![0, 2, 0, 1, b'g']);
    }

    #[test]
    fn damaged_records_are_errors() {
        let (key, value) = Record::Offset {
            group: "group".into(),
            topic: "topic".into(),
            partition: 1,
            value: Some(OffsetValue {
                offset: Offset(1),
                leader_epoch: LeaderEpoch(0),
                metadata: String::new(),
                commit_timestamp: 0,
                expire_timestamp: None,
            }),
        }
        .encode();
        let value = value.expect("value");
        for cut in 0..key.len() {
            assert!(Record::decode(&key[..cut], Some(&value)).is_err(), "key cut at {cut}");
        }
        for cut in 0..value.len() {
            assert!(Record::decode(&key, Some(&value[..cut])).is_err(), "value cut at {cut}");
        }
        assert_eq!(Record::decode(&[0, 9], None), Err(DecodeError::UnknownVersion(9)));
    }
}
