//! The share group calls of a ShareFetch or ShareAcknowledge (open the session, plan the
//! reads, acquire what was read, acknowledge) and their answers, and their bytes between
//! brokers.
//!
//! The handler runs where the client sent the request: on the leader of the partitions it
//! reads. The share state lives with the group's coordinator (`share`). On a single node, or
//! when this node coordinates the group, a call goes to the coordinator's shard over the
//! mesh; otherwise to the coordinator's node, encoded here, in Spate's private
//! `SHARE_CALL_API_KEY` request between brokers. The encoding is Spate's own (big-endian
//! fixed-width integers, length-prefixed strings and lists) and versioned by the request's
//! API version; a decoder refuses anything malformed, and checks every length against the
//! bytes left before it allocates.
//!
//! One call goes the other way: `Wake`, from a coordinator to a node that leads partitions
//! whose records it made available again (released, or their locks ended), so that the
//! ShareFetches waiting there look again at once rather than at their next recheck.
//!
//! Pure: no I/O.

use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::group::share::ShareRead;
use crate::group::share::{AckRequest, FetchOpen, FetchOpened, FetchPlan, SessionPartition};
use crate::group::share_partition::{AckBatch, Acquired};
use crate::model::{ErrorCode, NodeId, TopicPartition};

/// The API key of the private request between brokers that carries a `ShareCall` (outside
/// Kafka's range, so that no Kafka request is ever taken for it).
pub const SHARE_CALL_API_KEY: i16 = 32_000;
/// The highest version of its encoding served here: 0 carries the calls of a ShareFetch or
/// ShareAcknowledge, 1 adds `Wake`. A call goes at the lowest version that has it
/// (`ShareCall::version`), so that a node not upgraded yet still serves the others.
pub const SHARE_CALL_VERSION: i16 = 1;

/// One call to a share group's coordinator.
#[derive(Debug, Clone, PartialEq)]
pub enum ShareCall {
    /// The first half of a ShareFetch: the share session and its acknowledgements.
    Open(FetchOpen),
    /// A waiting ShareFetch asks again where to read.
    Plan { group_id: String, member_id: String, node: NodeId },
    /// The second half of a ShareFetch: what was read, to hand out.
    Acquire { group_id: String, member_id: String, reads: Vec<ShareRead>, max_records: usize },
    /// ShareAcknowledge.
    Acknowledge(AckRequest),
    /// From a coordinator to a leader: records of `partitions` are available again (in
    /// whichever groups); wake the ShareFetches waiting on them. Served by the node, not by
    /// a coordinator.
    Wake { partitions: Vec<TopicPartition> },
}

/// The coordinator's answer to a `ShareCall`, variant for variant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShareAnswer {
    Opened(FetchOpened),
    Plan(Vec<FetchPlan>),
    Acquired(Vec<(TopicPartition, Vec<Acquired>)>),
    Acknowledged(Result<Vec<(TopicPartition, ErrorCode)>, ErrorCode>),
    Woken,
}

impl ShareCall {
    /// The group the call is about ("" for a `Wake`, which is about partitions).
    pub fn group_id(&self) -> &str {
        match self {
            ShareCall::Open(open) => &open.group_id,
            ShareCall::Plan { group_id, .. } | ShareCall::Acquire { group_id, .. } => group_id,
            ShareCall::Acknowledge(ack) => &ack.group_id,
            ShareCall::Wake { .. } => "",
        }
    }

    /// The version of the private request this call goes in (see `SHARE_CALL_VERSION`).
    pub fn version(&self) -> i16 {
        match self {
            ShareCall::Wake { .. } => 1,
            _ => 0,
        }
    }

    /// The answer when the call cannot be served (`code`: NOT_COORDINATOR,
    /// COORDINATOR_LOAD_IN_PROGRESS, COORDINATOR_NOT_AVAILABLE): nothing read, acquired or
    /// acknowledged.
    pub fn refused(&self, code: ErrorCode) -> ShareAnswer {
        match self {
            ShareCall::Open(_) => {
                ShareAnswer::Opened(FetchOpened { error_code: code, ..FetchOpened::default() })
            }
            ShareCall::Plan { .. } => ShareAnswer::Plan(Vec::new()),
            ShareCall::Acquire { .. } => ShareAnswer::Acquired(Vec::new()),
            ShareCall::Acknowledge(_) => ShareAnswer::Acknowledged(Err(code)),
            ShareCall::Wake { .. } => ShareAnswer::Woken,
        }
    }

    pub fn encode(&self, out: &mut BytesMut) {
        match self {
            ShareCall::Open(open) => {
                out.put_u8(0);
                put_str(out, &open.group_id);
                put_str(out, &open.member_id);
                out.put_i32(open.node.0);
                out.put_i32(open.session_epoch);
                put_list(out, &open.partitions, put_session_partition);
                put_list(out, &open.forgotten, put_tp);
            }
            ShareCall::Plan { group_id, member_id, node } => {
                out.put_u8(1);
                put_str(out, group_id);
                put_str(out, member_id);
                out.put_i32(node.0);
            }
            ShareCall::Acquire { group_id, member_id, reads, max_records } => {
                out.put_u8(2);
                put_str(out, group_id);
                put_str(out, member_id);
                out.put_u32(u32::try_from(*max_records).unwrap_or(u32::MAX));
                put_list(out, reads, put_read);
            }
            ShareCall::Acknowledge(ack) => {
                out.put_u8(3);
                put_str(out, &ack.group_id);
                put_str(out, &ack.member_id);
                out.put_i32(ack.node.0);
                out.put_i32(ack.session_epoch);
                put_list(out, &ack.partitions, put_session_partition);
            }
            ShareCall::Wake { partitions } => {
                out.put_u8(4);
                put_list(out, partitions, put_tp);
            }
        }
    }

    /// Decodes one call, which must take every byte of `buf`.
    pub fn decode(mut buf: Bytes) -> Result<ShareCall, WireError> {
        let buf = &mut buf;
        let call = match get_u8(buf)? {
            0 => ShareCall::Open(FetchOpen {
                group_id: get_str(buf)?,
                member_id: get_str(buf)?,
                node: NodeId(get_i32(buf)?),
                session_epoch: get_i32(buf)?,
                partitions: get_list(buf, get_session_partition)?,
                forgotten: get_list(buf, get_tp)?,
            }),
            1 => ShareCall::Plan {
                group_id: get_str(buf)?,
                member_id: get_str(buf)?,
                node: NodeId(get_i32(buf)?),
            },
            2 => ShareCall::Acquire {
                group_id: get_str(buf)?,
                member_id: get_str(buf)?,
                max_records: get_u32(buf)? as usize,
                reads: get_list(buf, get_read)?,
            },
            3 => ShareCall::Acknowledge(AckRequest {
                group_id: get_str(buf)?,
                member_id: get_str(buf)?,
                node: NodeId(get_i32(buf)?),
                session_epoch: get_i32(buf)?,
                partitions: get_list(buf, get_session_partition)?,
            }),
            4 => ShareCall::Wake { partitions: get_list(buf, get_tp)? },
            other => return Err(WireError(format!("unknown share call {other}"))),
        };
        finish(buf)?;
        Ok(call)
    }
}

impl ShareAnswer {
    pub fn encode(&self, out: &mut BytesMut) {
        match self {
            ShareAnswer::Opened(opened) => {
                out.put_u8(0);
                out.put_i16(opened.error_code.code());
                put_list(out, &opened.acks, put_tp_code);
                put_list(out, &opened.plan, put_plan);
                out.put_i64(opened.lock_ms);
            }
            ShareAnswer::Plan(plan) => {
                out.put_u8(1);
                put_list(out, plan, put_plan);
            }
            ShareAnswer::Acquired(acquired) => {
                out.put_u8(2);
                put_list(out, acquired, |out, (tp, runs)| {
                    put_tp(out, tp);
                    put_list(out, runs, |out, run| {
                        out.put_i64(run.first_offset);
                        out.put_i64(run.last_offset);
                        out.put_i16(run.delivery_count);
                    });
                });
            }
            ShareAnswer::Acknowledged(Ok(codes)) => {
                out.put_u8(3);
                put_list(out, codes, put_tp_code);
            }
            ShareAnswer::Acknowledged(Err(code)) => {
                out.put_u8(4);
                out.put_i16(code.code());
            }
            ShareAnswer::Woken => out.put_u8(5),
        }
    }

    /// Decodes one answer, which must take every byte of `buf`.
    pub fn decode(mut buf: Bytes) -> Result<ShareAnswer, WireError> {
        let buf = &mut buf;
        let answer = match get_u8(buf)? {
            0 => ShareAnswer::Opened(FetchOpened {
                error_code: get_code(buf)?,
                acks: get_list(buf, get_tp_code)?,
                plan: get_list(buf, get_plan)?,
                lock_ms: get_i64(buf)?,
            }),
            1 => ShareAnswer::Plan(get_list(buf, get_plan)?),
            2 => ShareAnswer::Acquired(get_list(buf, |buf| {
                let tp = get_tp(buf)?;
                let runs = get_list(buf, |buf| {
                    Ok(Acquired {
                        first_offset: get_i64(buf)?,
                        last_offset: get_i64(buf)?,
                        delivery_count: get_i16(buf)?,
                    })
                })?;
                Ok((tp, runs))
            })?),
            3 => ShareAnswer::Acknowledged(Ok(get_list(buf, get_tp_code)?)),
            4 => ShareAnswer::Acknowledged(Err(get_code(buf)?)),
            5 => ShareAnswer::Woken,
            other => return Err(WireError(format!("unknown share answer {other}"))),
        };
        finish(buf)?;
        Ok(answer)
    }
}

/// Bytes that are not a share call or answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireError(pub String);

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

// ----- writing ---------------------------------------------------------------------------

fn put_str(out: &mut BytesMut, text: &str) {
    out.put_u32(text.len() as u32);
    out.put_slice(text.as_bytes());
}

fn put_list<T>(out: &mut BytesMut, items: &[T], mut put: impl FnMut(&mut BytesMut, &T)) {
    out.put_u32(items.len() as u32);
    for item in items {
        put(out, item);
    }
}

fn put_tp(out: &mut BytesMut, tp: &TopicPartition) {
    put_str(out, &tp.topic);
    out.put_i32(tp.partition);
}

fn put_tp_code(out: &mut BytesMut, (tp, code): &(TopicPartition, ErrorCode)) {
    put_tp(out, tp);
    out.put_i16(code.code());
}

fn put_session_partition(out: &mut BytesMut, p: &SessionPartition) {
    put_tp(out, &p.tp);
    out.put_slice(&p.topic_id);
    put_list(out, &p.acks, |out, ack| {
        out.put_i64(ack.first_offset);
        out.put_i64(ack.last_offset);
        out.put_u32(ack.types.len() as u32);
        for kind in &ack.types {
            out.put_i8(*kind);
        }
    });
}

fn put_read(out: &mut BytesMut, read: &ShareRead) {
    put_tp(out, &read.tp);
    match read.init_offset {
        Some(offset) => {
            out.put_u8(1);
            out.put_i64(offset);
        }
        None => out.put_u8(0),
    }
    out.put_i64(read.log_start);
    out.put_i64(read.read_from);
    put_list(out, &read.batches, |out, &(first, last, control)| {
        out.put_i64(first);
        out.put_i64(last);
        out.put_u8(u8::from(control));
    });
}

fn put_plan(out: &mut BytesMut, plan: &FetchPlan) {
    put_tp(out, &plan.tp);
    out.put_slice(&plan.topic_id);
    match plan.fetch_offset {
        Some(offset) => {
            out.put_u8(1);
            out.put_i64(offset);
        }
        None => out.put_u8(0),
    }
    out.put_u8(u8::from(plan.reset_earliest));
    out.put_u8(u8::from(plan.read_committed));
}

// ----- reading ---------------------------------------------------------------------------

fn need(buf: &Bytes, bytes: usize) -> Result<(), WireError> {
    if buf.remaining() < bytes {
        return Err(WireError(format!("{bytes} bytes wanted, {} left", buf.remaining())));
    }
    Ok(())
}

fn finish(buf: &Bytes) -> Result<(), WireError> {
    match buf.remaining() {
        0 => Ok(()),
        left => Err(WireError(format!("{left} bytes after the end"))),
    }
}

fn get_u8(buf: &mut Bytes) -> Result<u8, WireError> {
    need(buf, 1)?;
    Ok(buf.get_u8())
}

fn get_bool(buf: &mut Bytes) -> Result<bool, WireError> {
    match get_u8(buf)? {
        0 => Ok(false),
        1 => Ok(true),
        other => Err(WireError(format!("{other} is not a boolean"))),
    }
}

fn get_i16(buf: &mut Bytes) -> Result<i16, WireError> {
    need(buf, 2)?;
    Ok(buf.get_i16())
}

fn get_i32(buf: &mut Bytes) -> Result<i32, WireError> {
    need(buf, 4)?;
    Ok(buf.get_i32())
}

fn get_u32(buf: &mut Bytes) -> Result<u32, WireError> {
    need(buf, 4)?;
    Ok(buf.get_u32())
}

fn get_i64(buf: &mut Bytes) -> Result<i64, WireError> {
    need(buf, 8)?;
    Ok(buf.get_i64())
}

fn get_code(buf: &mut Bytes) -> Result<ErrorCode, WireError> {
    let code = get_i16(buf)?;
    ErrorCode::from_code(code).ok_or_else(|| WireError(format!("unknown error code {code}")))
}

fn get_optional_offset(buf: &mut Bytes) -> Result<Option<i64>, WireError> {
    match get_bool(buf)? {
        true => Ok(Some(get_i64(buf)?)),
        false => Ok(None),
    }
}

fn get_str(buf: &mut Bytes) -> Result<String, WireError> {
    let length = get_u32(buf)? as usize;
    need(buf, length)?;
    let bytes = buf.split_to(length);
    String::from_utf8(bytes.to_vec()).map_err(|_| WireError("a string is not UTF-8".into()))
}

/// A list: its count, then each item. Every item takes at least one byte, so a count beyond
/// the bytes left is refused before anything is allocated for it.
fn get_list<T>(
    buf: &mut Bytes,
    mut get: impl FnMut(&mut Bytes) -> Result<T, WireError>,
) -> Result<Vec<T>, WireError> {
    let count = get_u32(buf)? as usize;
    need(buf, count)?;
    let mut items = Vec::with_capacity(count);
    for _ in 0..count {
        items.push(get(buf)?);
    }
    Ok(items)
}

fn get_topic_id(buf: &mut Bytes) -> Result<[u8; 16], WireError> {
    need(buf, 16)?;
    let mut id = [0u8; 16];
    buf.copy_to_slice(&mut id);
    Ok(id)
}

fn get_tp(buf: &mut Bytes) -> Result<TopicPartition, WireError> {
    let topic: Arc<str> = get_str(buf)?.into();
    Ok(TopicPartition::new(topic, get_i32(buf)?))
}

fn get_tp_code(buf: &mut Bytes) -> Result<(TopicPartition, ErrorCode), WireError> {
    Ok((get_tp(buf)?, get_code(buf)?))
}

fn get_session_partition(buf: &mut Bytes) -> Result<SessionPartition, WireError> {
    let tp = get_tp(buf)?;
    let topic_id = get_topic_id(buf)?;
    let acks = get_list(buf, |buf| {
        let first_offset = get_i64(buf)?;
        let last_offset = get_i64(buf)?;
        let count = get_u32(buf)? as usize;
        need(buf, count)?;
        let types = (0..count).map(|_| buf.get_i8()).collect();
        Ok(AckBatch { first_offset, last_offset, types })
    })?;
    Ok(SessionPartition { tp, topic_id, acks })
}

fn get_read(buf: &mut Bytes) -> Result<ShareRead, WireError> {
    Ok(ShareRead {
        tp: get_tp(buf)?,
        init_offset: get_optional_offset(buf)?,
        log_start: get_i64(buf)?,
        read_from: get_i64(buf)?,
        batches: get_list(buf, |buf| Ok((get_i64(buf)?, get_i64(buf)?, get_bool(buf)?)))?,
    })
}

fn get_plan(buf: &mut Bytes) -> Result<FetchPlan, WireError> {
    Ok(FetchPlan {
        tp: get_tp(buf)?,
        topic_id: get_topic_id(buf)?,
        fetch_offset: get_optional_offset(buf)?,
        reset_earliest: get_bool(buf)?,
        read_committed: get_bool(buf)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(topic: &str, partition: i32) -> TopicPartition {
        TopicPartition::new(topic.into(), partition)
    }

    fn calls() -> Vec<ShareCall> {
        let acks = vec![
            AckBatch { first_offset: 3, last_offset: 5, types: vec![1] },
            AckBatch { first_offset: 7, last_offset: 8, types: vec![2, 3] },
        ];
        let partition = SessionPartition { tp: tp("orders", 2), topic_id: [7; 16], acks };
        let empty = SessionPartition { tp: tp("é", 0), topic_id: [0; 16], acks: Vec::new() };
        vec![
            ShareCall::Open(FetchOpen {
                group_id: "g".into(),
                member_id: "m-1".into(),
                node: NodeId(3),
                session_epoch: 7,
                partitions: vec![partition.clone(), empty],
                forgotten: vec![tp("old", 4)],
            }),
            ShareCall::Plan { group_id: "g".into(), member_id: String::new(), node: NodeId(-1) },
            ShareCall::Acquire {
                group_id: "g".into(),
                member_id: "m".into(),
                reads: vec![
                    ShareRead {
                        tp: tp("a", 0),
                        init_offset: Some(12),
                        log_start: 10,
                        read_from: 12,
                        batches: vec![(12, 20, false), (21, 21, true)],
                    },
                    ShareRead {
                        tp: tp("b", 1),
                        init_offset: None,
                        log_start: 0,
                        read_from: -1,
                        batches: Vec::new(),
                    },
                ],
                max_records: 500,
            },
            ShareCall::Acknowledge(AckRequest {
                group_id: "g".into(),
                member_id: "m".into(),
                node: NodeId(2),
                session_epoch: -1,
                partitions: vec![partition],
            }),
            ShareCall::Wake { partitions: vec![tp("a", 0), tp("b", 3)] },
        ]
    }

    fn answers() -> Vec<ShareAnswer> {
        let plan = FetchPlan {
            tp: tp("a", 0),
            topic_id: [9; 16],
            fetch_offset: Some(40),
            reset_earliest: true,
            read_committed: false,
        };
        let fresh = FetchPlan { fetch_offset: None, read_committed: true, ..plan.clone() };
        vec![
            ShareAnswer::Opened(FetchOpened {
                error_code: ErrorCode::None,
                acks: vec![(tp("a", 0), ErrorCode::InvalidRecordState)],
                plan: vec![plan.clone(), fresh],
                lock_ms: 30_000,
            }),
            ShareAnswer::Opened(FetchOpened {
                error_code: ErrorCode::InvalidShareSessionEpoch,
                ..FetchOpened::default()
            }),
            ShareAnswer::Plan(vec![plan]),
            ShareAnswer::Acquired(vec![(
                tp("a", 0),
                vec![
                    Acquired { first_offset: 1, last_offset: 4, delivery_count: 1 },
                    Acquired { first_offset: 5, last_offset: 5, delivery_count: 3 },
                ],
            )]),
            ShareAnswer::Acknowledged(Ok(vec![(tp("a", 0), ErrorCode::None)])),
            ShareAnswer::Acknowledged(Err(ErrorCode::ShareSessionNotFound)),
            ShareAnswer::Woken,
        ]
    }

    #[test]
    fn calls_and_answers_come_back_as_they_went() {
        for call in calls() {
            let mut out = BytesMut::new();
            call.encode(&mut out);
            assert_eq!(ShareCall::decode(out.freeze()), Ok(call));
        }
        for answer in answers() {
            let mut out = BytesMut::new();
            answer.encode(&mut out);
            assert_eq!(ShareAnswer::decode(out.freeze()), Ok(answer));
        }
    }

    #[test]
    fn every_cut_and_every_extra_byte_is_refused() {
        let mut encoded = Vec::new();
        for call in calls() {
            let mut out = BytesMut::new();
            call.encode(&mut out);
            encoded.push((out.freeze(), true));
        }
        for answer in answers() {
            let mut out = BytesMut::new();
            answer.encode(&mut out);
            encoded.push((out.freeze(), false));
        }
        for (bytes, is_call) in encoded {
            let decode = |b: Bytes| match is_call {
                true => ShareCall::decode(b).map(|_| ()),
                false => ShareAnswer::decode(b).map(|_| ()),
            };
            for cut in 0..bytes.len() {
                assert!(decode(bytes.slice(..cut)).is_err(), "cut at {cut} of {bytes:?}");
            }
            let mut longer = BytesMut::from(&bytes[..]);
            longer.put_u8(0);
            assert!(decode(longer.freeze()).is_err());
        }
    }

    #[test]
    fn a_huge_count_is_refused_before_anything_is_allocated() {
        let mut out = BytesMut::new();
        out.put_u8(1); // Plan
        out.put_u32(u32::MAX); // a string "length"
        assert!(ShareCall::decode(out.freeze()).is_err());
        let mut out = BytesMut::new();
        out.put_u8(1); // an answer's plan list
        out.put_u32(u32::MAX);
        assert!(ShareAnswer::decode(out.freeze()).is_err());
    }

    #[test]
    fn a_call_goes_at_the_lowest_version_that_has_it() {
        for call in calls() {
            let wanted = if matches!(call, ShareCall::Wake { .. }) { 1 } else { 0 };
            assert_eq!(call.version(), wanted, "{call:?}");
            assert!(call.version() <= SHARE_CALL_VERSION);
        }
    }

    #[test]
    fn a_refused_call_hands_nothing_out() {
        for call in calls() {
            match call.refused(ErrorCode::NotCoordinator) {
                ShareAnswer::Opened(opened) => {
                    assert_eq!(opened.error_code, ErrorCode::NotCoordinator);
                    assert!(opened.plan.is_empty() && opened.acks.is_empty());
                }
                ShareAnswer::Plan(plan) => assert!(plan.is_empty()),
                ShareAnswer::Acquired(acquired) => assert!(acquired.is_empty()),
                ShareAnswer::Acknowledged(result) => {
                    assert_eq!(result, Err(ErrorCode::NotCoordinator))
                }
                ShareAnswer::Woken => assert!(matches!(call, ShareCall::Wake { .. })),
            }
        }
    }
}
