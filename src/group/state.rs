//! The classic group protocol as a pure state machine: every group one shard coordinates,
//! their members, generations and committed offsets. No I/O, no clock, no async: every call
//! takes `now_ms`, and what must happen outside (answer a parked JoinGroup or SyncGroup,
//! persist a record) is queued and taken by the caller (`take_replies`, `take_records`).
//!
//! This is a port of Kafka's classic group coordinator (`GroupMetadataManager` and
//! `ClassicGroup` in Kafka 4's group-coordinator module); method names follow Kafka's so the
//! two can be read side by side. Group states:
//!
//! ```text
//!            join (first member)              all joined / rebalance timeout
//!   Empty ─────────────────────▶ PreparingRebalance ─────────────────▶ CompletingRebalance
//!     ▲                               ▲   ▲                                  │ leader's
//!     │ last member gone               │   └── join, leave, member failure ───┤ SyncGroup
//!     └───────────────────────────────┘                                      ▼
//!                                     └────── join, leave, failure ───── Stable
//! ```
//!
//! Lifecycle: one `Groups` per shard, owned by the shard's coordinator; single-threaded.
//! Replies for parked requests are identified by a `ReplyId` the caller chose.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use bytes::Bytes;
use indexmap::IndexMap;

use crate::group::consumer::{
    self, ClassicJoin, ClassicMemberState, ConsumerGroup, ConsumerHeartbeat,
    DescribedConsumerGroup, HeartbeatResponse, TimerCmd, TopicView,
};
use crate::group::consumer_protocol;
use crate::group::records::{GroupValue, MemberValue, OffsetValue, Record};
use crate::group::timers::Timers;
use crate::group::txn_offsets::{PendingKey, PendingOffsets, Restated};
use crate::metrics::GroupReport;
use crate::model::dynamic_config::ConsumerTimeouts;
use crate::model::{ErrorCode, LeaderEpoch, Offset, ProducerEpoch, ProducerId, TxnOutcome};

/// Topics and their partition indexes, as requests name them.
pub type TopicPartitions = Vec<(String, Vec<i32>)>;

/// Per-topic, per-partition error codes.
pub type PartitionCodes = Vec<(String, Vec<(i32, ErrorCode)>)>;

/// Identifies a parked request (JoinGroup or SyncGroup) whose answer comes later.
pub type ReplyId = u64;

/// The member id a new member sends.
pub const UNKNOWN_MEMBER_ID: &str = "";

/// Protocol type of Kafka consumers (their subscriptions name topics we can read).
pub const CONSUMER_PROTOCOL_TYPE: &str = "consumer";

pub use crate::model::settings::GroupConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
    Dead,
}

impl GroupState {
    /// The name Kafka reports (DescribeGroups, ListGroups).
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
            GroupState::Dead => "Dead",
        }
    }

    fn may_follow(self, from: GroupState) -> bool {
        use GroupState::*;
        match self {
            Empty => from == PreparingRebalance,
            PreparingRebalance => matches!(from, Stable | CompletingRebalance | Empty),
            CompletingRebalance => from == PreparingRebalance,
            Stable => from == CompletingRebalance,
            Dead => true,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Protocol {
    pub name: String,
    pub metadata: Bytes,
}

// ----- requests and responses (plain data; `api` converts from and to the wire) ----------

#[derive(Debug, Clone)]
pub struct JoinRequest {
    pub group_id: String,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<Protocol>,
    /// JoinGroup v4+: a new dynamic member first gets MEMBER_ID_REQUIRED and its id.
    pub require_known_member_id: bool,
    /// JoinGroup v9+: a rejoining static leader may skip computing the assignment.
    pub supports_skip_assignment: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub metadata: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinResponse {
    pub error_code: ErrorCode,
    pub generation_id: i32,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub leader: String,
    pub skip_assignment: bool,
    pub member_id: String,
    pub members: Vec<JoinMember>,
}

impl JoinResponse {
    pub fn error(member_id: &str, error_code: ErrorCode) -> JoinResponse {
        JoinResponse {
            error_code,
            generation_id: -1,
            protocol_type: None,
            protocol_name: None,
            leader: String::new(),
            skip_assignment: false,
            member_id: member_id.to_string(),
            members: Vec::new(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct SyncRequest {
    pub group_id: String,
    pub generation_id: i32,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignments: Vec<(String, Bytes)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SyncResponse {
    pub error_code: ErrorCode,
    pub protocol_type: Option<String>,
    pub protocol_name: Option<String>,
    pub assignment: Bytes,
}

impl SyncResponse {
    pub fn error(error_code: ErrorCode) -> SyncResponse {
        SyncResponse { error_code, ..SyncResponse::default() }
    }
}

/// The answer to a parked request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Join(JoinResponse),
    Sync(SyncResponse),
}

#[derive(Debug, Clone)]
pub struct HeartbeatRequest {
    pub group_id: String,
    pub generation_id: i32,
    pub member_id: String,
    pub group_instance_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaveMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaveResponse {
    pub error_code: ErrorCode,
    pub members: Vec<(LeaveMember, ErrorCode)>,
}

#[derive(Debug, Clone)]
pub struct CommitPartition {
    pub topic: String,
    pub partition: i32,
    pub offset: Offset,
    pub leader_epoch: LeaderEpoch,
    pub metadata: Option<String>,
}

/// What a commit of `p` stores (its metadata taken out of it), or OFFSET_METADATA_TOO_LARGE
/// past `metadata_max` bytes.
fn offset_value(
    p: &mut CommitPartition,
    metadata_max: usize,
    now: i64,
    expire_timestamp: Option<i64>,
) -> Result<OffsetValue, ErrorCode> {
    let metadata = p.metadata.take().unwrap_or_default();
    if metadata.len() > metadata_max {
        return Err(ErrorCode::OffsetMetadataTooLarge);
    }
    Ok(OffsetValue {
        offset: p.offset,
        leader_epoch: p.leader_epoch,
        metadata,
        commit_timestamp: now,
        expire_timestamp,
    })
}

#[derive(Debug, Clone)]
pub struct CommitRequest {
    pub group_id: String,
    pub generation_id: i32,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    /// -1: keep until the group's retention; otherwise expire that long after the commit.
    pub retention_time_ms: i64,
    /// OffsetCommit v9+ says GROUP_ID_NOT_FOUND where older versions say ILLEGAL_GENERATION.
    pub api_version: i16,
    pub partitions: Vec<CommitPartition>,
}

/// Clustered: TxnOffsetCommit at the group's coordinator (Kafka's way): the offsets of a
/// producer's transaction, pending until its marker reaches the group's partition.
#[derive(Debug, Clone)]
pub struct TxnCommitRequest {
    pub group_id: String,
    pub producer_id: ProducerId,
    pub producer_epoch: ProducerEpoch,
    pub generation_id: i32,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub partitions: Vec<CommitPartition>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedOffset {
    pub topic: String,
    pub partition: i32,
    pub offset: Offset,
    pub leader_epoch: LeaderEpoch,
    pub metadata: String,
    /// UNSTABLE_OFFSET_COMMIT when the fetch asked for stable offsets and a transaction
    /// still holds one of this partition (`Groups::mark_unstable`); NONE otherwise.
    pub error_code: ErrorCode,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribedMember {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribedGroup {
    pub group_id: String,
    /// Dead for a consumer (KIP-848) group too, which DescribeGroups does not describe.
    pub state: GroupState,
    /// A consumer group: DescribeGroups v6 says GROUP_ID_NOT_FOUND, "not a classic group".
    pub is_consumer_group: bool,
    pub protocol_type: String,
    pub protocol_data: String,
    pub members: Vec<DescribedMember>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedGroup {
    pub group_id: String,
    pub protocol_type: String,
    /// Kafka's state name (classic or consumer group states).
    pub state: &'static str,
    /// "classic" or "consumer" (ListGroups v5).
    pub group_type: &'static str,
}

// ----- the state ---------------------------------------------------------------------------

/// Every group a shard coordinates.
#[derive(Default)]
pub struct Groups {
    config: GroupConfig,
    groups: HashMap<String, Group>,
    /// Clustered: transactional offsets waiting for their transaction's marker.
    txn_offsets: PendingOffsets,
    fx: Effects,
}

#[derive(Default)]
struct Effects {
    timers: Timers<TimerKey, TimerOp>,
    replies: Vec<(ReplyId, Reply)>,
    records: Vec<Record>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum TimerKey {
    Heartbeat(String, String),
    /// A consumer group member's session (group, member).
    ConsumerSession(String, String),
    /// A consumer group member's revocation deadline (group, member).
    ConsumerRevoke(String, String),
    /// A classic member of a consumer group told to rejoin (group, member).
    ConsumerJoin(String, String),
    /// A classic member of a consumer group that joined and must sync (group, member).
    ConsumerSync(String, String),
    Join(String),
    Sync(String),
}

#[derive(Debug, Clone)]
enum TimerOp {
    ExpireHeartbeat {
        group: String,
        member: String,
    },
    CompleteJoin {
        group: String,
    },
    InitialJoin {
        group: String,
        delay_ms: i32,
        remaining_ms: i32,
    },
    ExpireSync {
        group: String,
        generation: i32,
    },
    ExpireConsumerSession {
        group: String,
        member: String,
    },
    ExpireConsumerRevoke {
        group: String,
        member: String,
    },
    /// A classic member of a consumer group missed its join or sync deadline.
    ExpireConsumerClassic {
        group: String,
        member: String,
    },
}

struct Group {
    group_id: String,
    state: GroupState,
    previous_state: GroupState,
    state_timestamp_ms: Option<i64>,
    protocol_type: Option<String>,
    protocol_name: Option<String>,
    generation_id: i32,
    leader_id: Option<String>,
    /// Insertion order, so a new leader is chosen deterministically.
    members: IndexMap<String, Member>,
    /// group.instance.id -> member id
    static_members: HashMap<String, String>,
    /// Dynamic members told MEMBER_ID_REQUIRED that have not joined with their id yet.
    pending_join_members: HashSet<String>,
    num_awaiting_join: usize,
    /// Protocol name -> number of members supporting it.
    supported_protocols: HashMap<String, usize>,
    pending_sync_members: HashSet<String>,
    new_member_added: bool,
    /// Topics the members subscribe to (consumer protocol only), for offset expiry and
    /// OffsetDelete; None when unknown.
    subscribed_topics: Option<HashSet<String>>,
    offsets: BTreeMap<(String, i32), OffsetValue>,
    /// The last group record written or replayed: what a snapshot restates. (The live state
    /// in the middle of a rebalance is not a state to restore.)
    persisted: Option<GroupValue>,
    /// Some: a KIP-848 consumer group (the classic fields above stay empty); its offsets are
    /// `offsets`, like a classic group's.
    consumer: Option<ConsumerGroup>,
}

struct Member {
    member_id: String,
    group_instance_id: Option<String>,
    client_id: String,
    client_host: String,
    rebalance_timeout_ms: i32,
    session_timeout_ms: i32,
    protocol_type: String,
    protocols: Vec<Protocol>,
    assignment: Bytes,
    awaiting_join: Option<ReplyId>,
    awaiting_sync: Option<ReplyId>,
    is_new: bool,
}

impl Member {
    fn metadata(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|p| p.name == protocol)
            .map(|p| p.metadata.clone())
            .unwrap_or_default()
    }

    fn vote(&self, candidates: &HashSet<&str>) -> Option<String> {
        self.protocols.iter().find(|p| candidates.contains(p.name.as_str())).map(|p| p.name.clone())
    }

    fn matches(&self, protocols: &[Protocol]) -> bool {
        self.protocols == protocols
    }

    fn has_satisfied_heartbeat(&self) -> bool {
        !self.is_new && (self.awaiting_join.is_some() || self.awaiting_sync.is_some())
    }
}

/// Whether a member's protocols join or leave the group's count of supported protocols
/// (Kafka's `incSupportedProtocols` and `decSupportedProtocols`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tally {
    Add,
    Remove,
}

/// Whether a JoinGroup answer lists the group's members: only the leader's does, since the
/// leader computes the assignment (and not even the leader's when it may skip that).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MemberList {
    Included,
    Omitted,
}

impl MemberList {
    fn for_leader(is_leader: bool) -> MemberList {
        if is_leader {
            MemberList::Included
        } else {
            MemberList::Omitted
        }
    }
}

impl Group {
    fn new(group_id: &str, now: i64) -> Group {
        Group {
            group_id: group_id.to_string(),
            state: GroupState::Empty,
            previous_state: GroupState::Dead,
            state_timestamp_ms: Some(now),
            protocol_type: None,
            protocol_name: None,
            generation_id: 0,
            leader_id: None,
            members: IndexMap::new(),
            static_members: HashMap::new(),
            pending_join_members: HashSet::new(),
            num_awaiting_join: 0,
            supported_protocols: HashMap::new(),
            pending_sync_members: HashSet::new(),
            new_member_added: false,
            subscribed_topics: None,
            offsets: BTreeMap::new(),
            persisted: None,
            consumer: None,
        }
    }

    /// A non-empty consumer group.
    fn has_consumer_members(&self) -> bool {
        self.consumer.as_ref().is_some_and(|c| !c.is_empty())
    }

    fn consumer_record(&self) -> Record {
        Record::Consumer {
            group: self.group_id.clone(),
            value: self.consumer.as_ref().map(ConsumerGroup::to_value),
        }
    }

    fn is(&self, state: GroupState) -> bool {
        self.state == state
    }

    fn is_leader(&self, member_id: &str) -> bool {
        self.leader_id.as_deref() == Some(member_id)
    }

    fn transition_to(&mut self, state: GroupState, now: i64) {
        assert!(
            state.may_follow(self.state),
            "group {}: {:?} -> {:?}",
            self.group_id,
            self.state,
            state
        );
        self.previous_state = self.state;
        self.state = state;
        self.state_timestamp_ms = Some(now);
    }

    fn rebalance_timeout_ms(&self) -> i32 {
        self.members.values().map(|m| m.rebalance_timeout_ms).max().unwrap_or(0)
    }

    /// Kafka's `acceptJoiningMember` (`group.max.size`): an empty group takes anyone; during
    /// a rebalance a member already rejoined is taken, others while fewer than `max_size`
    /// have rejoined (so that a group above a size lowered since keeps the first to rejoin);
    /// otherwise a member of the group is taken, a new one while it has fewer than
    /// `max_size` members.
    fn accepts_joining(&self, member_id: &str, max_size: usize) -> bool {
        match self.state {
            GroupState::Empty | GroupState::Dead => true,
            GroupState::PreparingRebalance => {
                self.members.get(member_id).is_some_and(|m| m.awaiting_join.is_some())
                    || self.num_awaiting_join < max_size
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                self.members.contains_key(member_id) || self.members.len() < max_size
            }
        }
    }

    fn has_all_members_joined(&self) -> bool {
        self.members.len() == self.num_awaiting_join && self.pending_join_members.is_empty()
    }

    fn can_rebalance(&self) -> bool {
        GroupState::PreparingRebalance.may_follow(self.state)
    }

    fn add(&mut self, mut member: Member, reply: Option<ReplyId>) {
        if let Some(instance) = &member.group_instance_id {
            assert!(!self.static_members.contains_key(instance), "static member added twice");
            self.static_members.insert(instance.clone(), member.member_id.clone());
        }
        if self.members.is_empty() {
            self.protocol_type = Some(member.protocol_type.clone());
        }
        if self.leader_id.is_none() {
            self.leader_id = Some(member.member_id.clone());
        }
        self.count_protocols(&member.protocols, Tally::Add);
        member.awaiting_join = reply;
        if reply.is_some() {
            self.num_awaiting_join += 1;
        }
        self.pending_join_members.remove(&member.member_id);
        self.members.insert(member.member_id.clone(), member);
    }

    /// Removes a member; a request of it still parked is answered UNKNOWN_MEMBER_ID (it is
    /// no longer a member), so that no request waits forever.
    fn remove(&mut self, member_id: &str, fx: &mut Effects) -> Option<Member> {
        let removed = self.members.shift_remove(member_id);
        if let Some(member) = &removed {
            if let Some(parked) = member.awaiting_join {
                let gone = JoinResponse::error(UNKNOWN_MEMBER_ID, ErrorCode::UnknownMemberId);
                fx.replies.push((parked, Reply::Join(gone)));
            }
            if let Some(parked) = member.awaiting_sync {
                fx.replies
                    .push((parked, Reply::Sync(SyncResponse::error(ErrorCode::UnknownMemberId))));
            }
            self.count_protocols(&member.protocols, Tally::Remove);
            if member.awaiting_join.is_some() {
                self.num_awaiting_join -= 1;
            }
            if let Some(instance) = &member.group_instance_id {
                self.static_members.remove(instance);
            }
        }
        if self.is_leader(member_id) {
            self.leader_id = self.members.keys().next().cloned();
        }
        self.pending_join_members.remove(member_id);
        self.pending_sync_members.remove(member_id);
        removed
    }

    fn count_protocols(&mut self, protocols: &[Protocol], tally: Tally) {
        for protocol in protocols {
            let count = self.supported_protocols.entry(protocol.name.clone()).or_insert(0);
            match tally {
                Tally::Add => *count += 1,
                Tally::Remove => *count = count.saturating_sub(1),
            }
        }
        self.supported_protocols.retain(|_, count| *count > 0);
    }

    fn supports_protocols(&self, protocol_type: &str, protocols: &[Protocol]) -> bool {
        if self.is(GroupState::Empty) {
            return !protocol_type.is_empty() && !protocols.is_empty();
        }
        self.protocol_type.as_deref() == Some(protocol_type)
            && protocols.iter().any(|p| {
                self.supported_protocols.get(&p.name).copied().unwrap_or(0) == self.members.len()
            })
    }

    /// The protocol the most members prefer among those every member supports.
    fn select_protocol(&self) -> Option<String> {
        let everyone = self.members.len();
        let candidates: HashSet<&str> = self
            .supported_protocols
            .iter()
            .filter(|(_, count)| **count == everyone)
            .map(|(name, _)| name.as_str())
            .collect();
        let mut votes: IndexMap<String, usize> = IndexMap::new();
        for member in self.members.values() {
            if let Some(choice) = member.vote(&candidates) {
                *votes.entry(choice).or_insert(0) += 1;
            }
        }
        // Ties go to the protocol voted for first, so the result does not depend on hashing.
        let mut best: Option<(String, usize)> = None;
        for (name, count) in votes {
            if best.as_ref().is_none_or(|(_, top)| count > *top) {
                best = Some((name, count));
            }
        }
        best.map(|(name, _)| name)
    }

    fn validate_member(
        &self,
        member_id: &str,
        group_instance_id: Option<&str>,
    ) -> Result<(), ErrorCode> {
        if let Some(instance) = group_instance_id {
            match self.static_members.get(instance) {
                None => return Err(ErrorCode::UnknownMemberId),
                Some(existing) if existing != member_id => return Err(ErrorCode::FencedInstanceId),
                Some(_) => {}
            }
        }
        if !self.members.contains_key(member_id) {
            return Err(ErrorCode::UnknownMemberId);
        }
        Ok(())
    }

    fn not_yet_rejoined_dynamic(&self) -> Vec<String> {
        self.members
            .values()
            .filter(|m| m.awaiting_join.is_none() && m.group_instance_id.is_none())
            .map(|m| m.member_id.clone())
            .collect()
    }

    /// If the leader did not rejoin, the first member that did becomes leader. False when
    /// nobody rejoined.
    fn maybe_elect_new_joined_leader(&mut self) -> bool {
        let Some(leader) = self.leader_id.clone() else { return false };
        let leader_joined = self.members.get(&leader).is_some_and(|m| m.awaiting_join.is_some());
        if leader_joined {
            return true;
        }
        match self.members.values().find(|m| m.awaiting_join.is_some()) {
            Some(member) => {
                self.leader_id = Some(member.member_id.clone());
                true
            }
            None => false,
        }
    }

    fn init_next_generation(&mut self, now: i64) {
        self.generation_id += 1;
        if !self.members.is_empty() {
            self.protocol_name = self.select_protocol();
            self.subscribed_topics = self.compute_subscribed_topics();
            self.transition_to(GroupState::CompletingRebalance, now);
        } else {
            self.protocol_name = None;
            self.subscribed_topics = self.compute_subscribed_topics();
            self.transition_to(GroupState::Empty, now);
        }
        self.pending_sync_members.clear();
    }

    fn compute_subscribed_topics(&self) -> Option<HashSet<String>> {
        if self.protocol_type.as_deref() != Some(CONSUMER_PROTOCOL_TYPE) {
            return None;
        }
        if self.members.is_empty() {
            return Some(HashSet::new());
        }
        let protocol = self.protocol_name.as_deref()?;
        let mut topics = HashSet::new();
        for member in self.members.values() {
            topics.extend(subscription_topics(&member.metadata(protocol))?);
        }
        Some(topics)
    }

    fn is_subscribed_to(&self, topic: &str) -> bool {
        match &self.subscribed_topics {
            Some(topics) => topics.contains(topic),
            None => self.protocol_type.as_deref() == Some(CONSUMER_PROTOCOL_TYPE),
        }
    }

    fn join_members(&self) -> Vec<JoinMember> {
        let protocol = self.protocol_name.clone().unwrap_or_default();
        self.members
            .values()
            .map(|m| JoinMember {
                member_id: m.member_id.clone(),
                group_instance_id: m.group_instance_id.clone(),
                metadata: m.metadata(&protocol),
            })
            .collect()
    }

    fn join_response(&self, member_id: &str, members: MemberList) -> JoinResponse {
        JoinResponse {
            error_code: ErrorCode::None,
            generation_id: self.generation_id,
            protocol_type: self.protocol_type.clone(),
            protocol_name: self.protocol_name.clone(),
            leader: self.leader_id.clone().unwrap_or_default(),
            skip_assignment: false,
            member_id: member_id.to_string(),
            members: match members {
                MemberList::Included => self.join_members(),
                MemberList::Omitted => Vec::new(),
            },
        }
    }

    fn complete_join(&mut self, member_id: &str, response: JoinResponse, fx: &mut Effects) -> bool {
        let Some(member) = self.members.get_mut(member_id) else { return false };
        let Some(reply) = member.awaiting_join.take() else { return false };
        self.num_awaiting_join -= 1;
        fx.replies.push((reply, Reply::Join(response)));
        true
    }

    fn complete_sync(&mut self, member_id: &str, response: SyncResponse, fx: &mut Effects) -> bool {
        let Some(member) = self.members.get_mut(member_id) else { return false };
        let Some(reply) = member.awaiting_sync.take() else { return false };
        fx.replies.push((reply, Reply::Sync(response)));
        true
    }

    /// Parks a JoinGroup for an existing member with new protocols and timeouts. A JoinGroup
    /// already parked for it (a client that gave up and retried) is answered at once.
    fn update_member(
        &mut self,
        member_id: &str,
        req: &JoinRequest,
        reply: Option<ReplyId>,
        fx: &mut Effects,
    ) {
        let Some(member) = self.members.get_mut(member_id) else { return };
        let old = std::mem::replace(&mut member.protocols, req.protocols.clone());
        member.rebalance_timeout_ms = req.rebalance_timeout_ms;
        member.session_timeout_ms = req.session_timeout_ms;
        let previous = std::mem::replace(&mut member.awaiting_join, reply);
        match (previous, reply) {
            (None, Some(_)) => self.num_awaiting_join += 1,
            (Some(_), None) => self.num_awaiting_join -= 1,
            _ => {}
        }
        if let Some(previous) = previous {
            if reply.is_some() && Some(previous) != reply {
                let retry = JoinResponse::error(member_id, ErrorCode::RebalanceInProgress);
                fx.replies.push((previous, Reply::Join(retry)));
            }
        }
        self.count_protocols(&old, Tally::Remove);
        self.count_protocols(&req.protocols, Tally::Add);
    }

    fn to_record(&self, now: i64) -> Record {
        let protocol = self.protocol_name.clone().unwrap_or_default();
        let members = self
            .members
            .values()
            .map(|m| MemberValue {
                member_id: m.member_id.clone(),
                group_instance_id: m.group_instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                rebalance_timeout: m.rebalance_timeout_ms,
                session_timeout: m.session_timeout_ms,
                subscription: m.metadata(&protocol),
                assignment: m.assignment.clone(),
            })
            .collect();
        Record::Group {
            group: self.group_id.clone(),
            value: Some(GroupValue {
                protocol_type: self.protocol_type.clone().unwrap_or_default(),
                generation: self.generation_id,
                protocol: self.protocol_name.clone(),
                leader: self.leader_id.clone(),
                current_state_timestamp: self.state_timestamp_ms.unwrap_or(now),
                members,
            }),
        }
    }

    fn describe(&self) -> DescribedGroup {
        let stable = self.is(GroupState::Stable);
        let protocol = self.protocol_name.clone().unwrap_or_default();
        DescribedGroup {
            group_id: self.group_id.clone(),
            state: self.state,
            is_consumer_group: false,
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            protocol_data: if stable { protocol.clone() } else { String::new() },
            members: self
                .members
                .values()
                .map(|m| DescribedMember {
                    member_id: m.member_id.clone(),
                    group_instance_id: m.group_instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    metadata: if stable { m.metadata(&protocol) } else { Bytes::new() },
                    assignment: m.assignment.clone(),
                })
                .collect(),
        }
    }
}

/// The topics of a consumer-protocol subscription (ConsumerProtocolSubscription v0-v3:
/// version int16, then an int32 count of int16-length topic names); None if unreadable.
pub fn subscription_topics(metadata: &[u8]) -> Option<Vec<String>> {
    let count = i32::from_be_bytes(metadata.get(2..6)?.try_into().ok()?);
    let mut at = 6usize;
    let mut topics = Vec::with_capacity(usize::try_from(count).ok()?.min(metadata.len()));
    for _ in 0..count {
        let len = i16::from_be_bytes(metadata.get(at..at + 2)?.try_into().ok()?);
        let len = usize::try_from(len).ok()?;
        let name = metadata.get(at + 2..at + 2 + len)?;
        topics.push(String::from_utf8_lossy(name).into_owned());
        at += 2 + len;
    }
    Some(topics)
}

/// Generates a member id as Kafka does: the client id (or instance id) and a UUID.
fn new_member_id(client_id: &str, group_instance_id: Option<&str>) -> String {
    let prefix = group_instance_id.unwrap_or(client_id);
    // A client id can be 32 KiB; the id must stay storable (int16 strings) with the UUID.
    let mut cut = prefix.len().min(crate::constants::MEMBER_ID_PREFIX_BYTES_MAX);
    while !prefix.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}-{}", &prefix[..cut], uuid::Uuid::new_v4())
}

// ----- the operations ----------------------------------------------------------------------

impl Groups {
    pub fn new(config: GroupConfig) -> Groups {
        Groups {
            config,
            groups: HashMap::new(),
            txn_offsets: PendingOffsets::default(),
            fx: Effects::default(),
        }
    }

    pub fn config(&self) -> &GroupConfig {
        &self.config
    }

    /// For tests: a config changed under groups that exist (as a restart with other
    /// options finds them).
    #[cfg(test)]
    pub fn config_mut(&mut self) -> &mut GroupConfig {
        &mut self.config
    }

    /// Answers for parked requests produced since the last call.
    /// When `advance` next has something to do (session, rebalance, join or sync deadline),
    /// in milliseconds; None when no timeout is pending.
    pub fn next_deadline(&self) -> Option<i64> {
        self.fx.timers.next_deadline()
    }

    pub fn take_replies(&mut self) -> Vec<(ReplyId, Reply)> {
        std::mem::take(&mut self.fx.replies)
    }

    /// Records to persist (in this order) produced since the last call.
    pub fn take_records(&mut self) -> Vec<Record> {
        std::mem::take(&mut self.fx.records)
    }

    pub fn group_count(&self) -> usize {
        self.groups.len()
    }

    /// The topics some group holds a committed or pending offset of.
    pub fn topic_names(&self) -> BTreeSet<String> {
        let committed = self.groups.values().flat_map(|g| g.offsets.keys().map(|(t, _)| t));
        let mut names: BTreeSet<String> = committed.cloned().collect();
        names.extend(self.txn_offsets.topic_names());
        names
    }

    pub fn contains(&self, group_id: &str) -> bool {
        self.groups.contains_key(group_id)
    }

    pub fn state_of(&self, group_id: &str) -> Option<GroupState> {
        self.groups.get(group_id).map(|g| g.state)
    }

    pub fn pending_timers(&self) -> usize {
        self.fx.timers.len()
    }

    /// ConsumerGroupHeartbeat (KIP-848). A new group id makes a consumer group; an empty
    /// classic group (or a "simple" one that only has offsets) becomes one, keeping its
    /// offsets; a classic group with members is GROUP_ID_NOT_FOUND, as in Kafka with
    /// `group.consumer.migration.policy=disabled` (Spate has no online upgrade).
    pub fn consumer_heartbeat(
        &mut self,
        now: i64,
        req: ConsumerHeartbeat,
        topics: &dyn TopicView,
    ) -> HeartbeatResponse {
        self.consumer_heartbeat_with(now, req, topics, ConsumerTimeouts::default())
    }

    /// `consumer_heartbeat` for a group whose configs (`consumer.session.timeout.ms`,
    /// `consumer.heartbeat.interval.ms`, set with IncrementalAlterConfigs) replace the
    /// broker's: the answer carries the group's interval and the member's session timer
    /// uses the group's timeout.
    pub fn consumer_heartbeat_with(
        &mut self,
        now: i64,
        req: ConsumerHeartbeat,
        topics: &dyn TopicView,
        timeouts: ConsumerTimeouts,
    ) -> HeartbeatResponse {
        let Groups { config, groups, fx, .. } = self;
        let group_config;
        let config = if timeouts.is_empty() {
            &*config
        } else {
            group_config = timeouts.applied_to(config);
            &group_config
        };
        let joining = req.member_epoch == 0;
        let group = match groups.get_mut(&req.group_id) {
            Some(group) => group,
            None if joining => {
                let group = Group::new(&req.group_id, now);
                groups.entry(req.group_id.clone()).or_insert(group)
            }
            None => {
                return HeartbeatResponse::error(
                    ErrorCode::UnknownMemberId,
                    format!("Group {} not found.", req.group_id),
                )
            }
        };
        if group.consumer.is_none() {
            let empty_classic = group.members.is_empty()
                && group.pending_join_members.is_empty()
                && matches!(group.state, GroupState::Empty | GroupState::Dead);
            // Kafka's `validateOnlineUpgrade`, with its size check: a classic group larger
            // than `group.consumer.max.size` stays classic.
            let upgrade = joining
                && !empty_classic
                && config.migration_policy.is_upgrade_enabled()
                && group.protocol_type.as_deref() == Some(CONSUMER_PROTOCOL_TYPE)
                && group.members.len() <= config.consumer_max_size;
            if upgrade {
                if let Err(response) = convert_to_consumer_group(fx, group, topics, now, config) {
                    return response;
                }
            } else if !(joining && empty_classic) {
                return HeartbeatResponse::error(
                    ErrorCode::GroupIdNotFound,
                    format!("Group {} is not a consumer group.", req.group_id),
                );
            } else {
                // Converted; the classic group's last record is superseded by the consumer
                // group's (replay keeps the offsets).
                group.persisted = None;
                group.consumer = Some(ConsumerGroup::new(&req.group_id, now));
            }
        }
        // A leave with epoch -1 fences the member, a static one too (Kafka's
        // `consumerGroupLeave`: the instance id must name this member, else the heartbeat
        // below answers the error), which may downgrade the group.
        let leaving = req.member_epoch == consumer::LEAVE_GROUP_MEMBER_EPOCH
            && group.consumer.as_ref().is_some_and(|c| {
                let named = match req.instance_id.as_deref() {
                    None => true,
                    Some(instance_id) => c.static_member(instance_id) == Some(&req.member_id),
                };
                named && c.all_classic_except(&req.member_id)
            });
        if leaving {
            let mut cx = Ctx { cfg: config, fx: &mut *fx, now };
            if cx.maybe_downgrade(group, &req.member_id) {
                return HeartbeatResponse {
                    member_id: req.member_id,
                    member_epoch: req.member_epoch,
                    ..HeartbeatResponse::default()
                };
            }
        }
        let Some(consumer) = group.consumer.as_mut() else {
            return HeartbeatResponse::error(ErrorCode::UnknownServerError, "no group");
        };
        let mut effects = consumer::Effects::default();
        let response = consumer.heartbeat(now, req, topics, config, &mut effects);
        apply_timers(fx, &group.group_id, effects.timers);
        if effects.dirty {
            fx.records.push(group.consumer_record());
        }
        response
    }

    /// ConsumerGroupDescribe for one group.
    pub fn consumer_describe(&self, group_id: &str) -> DescribedConsumerGroup {
        match self.groups.get(group_id).map(|g| g.consumer.as_ref()) {
            Some(Some(consumer)) => consumer.describe(&self.config),
            Some(None) => DescribedConsumerGroup {
                group_id: group_id.to_string(),
                error_code: ErrorCode::GroupIdNotFound,
                error_message: Some(format!("Group {group_id} is not a consumer group.")),
                state: "Dead",
                ..DescribedConsumerGroup::default()
            },
            None => DescribedConsumerGroup {
                group_id: group_id.to_string(),
                error_code: ErrorCode::GroupIdNotFound,
                error_message: Some(format!("Group {group_id} not found.")),
                state: "Dead",
                ..DescribedConsumerGroup::default()
            },
        }
    }

    /// JoinGroup. The answer comes as a `Reply::Join` for `reply`, now or later. `topics`
    /// serves a classic member of a consumer group (its subscription names topics).
    pub fn join(&mut self, now: i64, reply: ReplyId, req: JoinRequest, topics: &dyn TopicView) {
        let Groups { config, groups, fx, .. } = self;
        let mut cx = Ctx { cfg: config, fx, now };
        let unknown = req.member_id == UNKNOWN_MEMBER_ID;
        if !groups.contains_key(&req.group_id) {
            if !unknown {
                let answer = JoinResponse::error(&req.member_id, ErrorCode::UnknownMemberId);
                cx.fx.replies.push((reply, Reply::Join(answer)));
                return;
            }
            groups.insert(req.group_id.clone(), Group::new(&req.group_id, now));
        }
        let Some(group) = groups.get_mut(&req.group_id) else { return };
        if group.has_consumer_members() {
            // Kafka's `classicGroupJoinToConsumerGroup` (under every migration policy).
            let answer = cx.join_consumer_group(group, req, topics);
            cx.fx.replies.push((reply, Reply::Join(answer)));
            return;
        }
        if group.consumer.take().is_some() {
            // An empty consumer group becomes a classic group (Kafka converts it too).
            cx.fx.records.push(Record::Consumer { group: group.group_id.clone(), value: None });
        }
        if !group.accepts_joining(&req.member_id, cx.cfg.classic_max_size) {
            // Kafka's `classicGroupJoin` with `acceptJoiningMember` false: the member is
            // removed (a member of a rebalance beyond the size that had not rejoined yet) and
            // told the group is full.
            if group.members.contains_key(&req.member_id) {
                cx.fx.timers.cancel(&Ctx::heartbeat_key(group, &req.member_id));
                cx.remove_member(group, &req.member_id);
            }
            group.pending_join_members.remove(&req.member_id);
            let answer = JoinResponse::error(UNKNOWN_MEMBER_ID, ErrorCode::GroupMaxSizeReached);
            cx.fx.replies.push((reply, Reply::Join(answer)));
            return;
        }
        if unknown {
            cx.join_new_member(group, reply, req);
        } else {
            cx.join_existing_member(group, reply, req);
        }
    }

    /// SyncGroup. The answer comes as a `Reply::Sync` for `reply`, now or later.
    pub fn sync(&mut self, now: i64, reply: ReplyId, req: SyncRequest) {
        let Groups { config, groups, fx, .. } = self;
        let mut cx = Ctx { cfg: config, fx, now };
        match groups.get_mut(&req.group_id) {
            Some(group) if group.has_consumer_members() => {
                let answer = cx.sync_consumer_group(group, req);
                cx.fx.replies.push((reply, Reply::Sync(answer)));
            }
            Some(group) if !group.is(GroupState::Empty) => cx.sync(group, reply, req),
            _ => cx
                .fx
                .replies
                .push((reply, Reply::Sync(SyncResponse::error(ErrorCode::UnknownMemberId)))),
        }
    }

    pub fn heartbeat(&mut self, now: i64, req: HeartbeatRequest) -> ErrorCode {
        let Groups { config, groups, fx, .. } = self;
        let mut cx = Ctx { cfg: config, fx, now };
        let Some(group) = groups.get_mut(&req.group_id) else { return ErrorCode::UnknownMemberId };
        if let Some(consumer) = group.consumer.as_mut() {
            let mut effects = consumer::Effects::default();
            let code = consumer.classic_heartbeat(
                now,
                &req.member_id,
                req.group_instance_id.as_deref(),
                req.generation_id,
                &mut effects,
            );
            apply_timers(cx.fx, &group.group_id, effects.timers);
            return code;
        }
        if let Err(code) = group.validate_member(&req.member_id, req.group_instance_id.as_deref()) {
            return code;
        }
        if req.generation_id != group.generation_id {
            return ErrorCode::IllegalGeneration;
        }
        match group.state {
            GroupState::Empty => ErrorCode::UnknownMemberId,
            GroupState::PreparingRebalance => {
                cx.reschedule_heartbeat(group, &req.member_id);
                ErrorCode::RebalanceInProgress
            }
            GroupState::CompletingRebalance | GroupState::Stable => {
                cx.reschedule_heartbeat(group, &req.member_id);
                ErrorCode::None
            }
            GroupState::Dead => ErrorCode::CoordinatorNotAvailable,
        }
    }

    /// LeaveGroup for a batch of members (one member for v0-v2).
    pub fn leave(&mut self, now: i64, group_id: &str, leaving: Vec<LeaveMember>) -> LeaveResponse {
        let Groups { config, groups, fx, .. } = self;
        let mut cx = Ctx { cfg: config, fx, now };
        let Some(group) = groups.get_mut(group_id) else {
            return LeaveResponse { error_code: ErrorCode::UnknownMemberId, members: Vec::new() };
        };
        if let Some(consumer) = group.consumer.as_mut() {
            // Kafka's `classicGroupLeaveToConsumerGroup`.
            let mut effects = consumer::Effects::default();
            let mut answers = Vec::with_capacity(leaving.len());
            for who in leaving {
                let left = consumer.classic_leave(
                    now,
                    &who.member_id,
                    who.group_instance_id.as_deref(),
                    &mut effects,
                );
                answers.push((who, left.err().unwrap_or(ErrorCode::None)));
            }
            if answers.iter().any(|(_, code)| *code == ErrorCode::None) {
                consumer.members_left(&mut effects);
            }
            apply_timers(cx.fx, &group.group_id, effects.timers);
            if effects.dirty {
                cx.fx.records.push(group.consumer_record());
            }
            return LeaveResponse { error_code: ErrorCode::None, members: answers };
        }
        let mut answers = Vec::with_capacity(leaving.len());
        let mut any_left = false;
        for who in leaving {
            let code = if who.member_id == UNKNOWN_MEMBER_ID {
                // Administrative removal of a static member by instance id alone.
                let existing = who
                    .group_instance_id
                    .as_ref()
                    .and_then(|i| group.static_members.get(i))
                    .cloned();
                match existing {
                    Some(member_id) => {
                        cx.remove_current_member(group, &member_id);
                        ErrorCode::None
                    }
                    None => ErrorCode::UnknownMemberId,
                }
            } else if group.pending_join_members.contains(&who.member_id) {
                group.remove(&who.member_id, cx.fx);
                cx.fx
                    .timers
                    .cancel(&TimerKey::Heartbeat(group.group_id.clone(), who.member_id.clone()));
                ErrorCode::None
            } else {
                match group.validate_member(&who.member_id, who.group_instance_id.as_deref()) {
                    Ok(()) => {
                        cx.remove_current_member(group, &who.member_id);
                        ErrorCode::None
                    }
                    Err(code) => code,
                }
            };
            any_left |= code == ErrorCode::None;
            answers.push((who, code));
        }
        if any_left {
            match group.state {
                GroupState::Stable | GroupState::CompletingRebalance => {
                    cx.maybe_prepare_rebalance_or_complete_join(group)
                }
                GroupState::PreparingRebalance => cx.maybe_complete_join_phase(group),
                _ => {}
            }
        }
        LeaveResponse { error_code: ErrorCode::None, members: answers }
    }

    /// OffsetCommit: per-partition error codes in request order, or one code for all.
    /// Accepted offsets are in memory at once and queued as records; the caller answers
    /// after the records are durable.
    pub fn commit_offsets(
        &mut self,
        now: i64,
        req: CommitRequest,
    ) -> Result<Vec<ErrorCode>, ErrorCode> {
        let Groups { config, groups, fx, txn_offsets, .. } = self;
        let mut cx = Ctx { cfg: config, fx, now };
        if !groups.contains_key(&req.group_id) {
            if req.generation_id >= 0 {
                return Err(if req.api_version >= 9 {
                    ErrorCode::GroupIdNotFound
                } else {
                    ErrorCode::IllegalGeneration
                });
            }
            // A consumer without group management (or an admin client): a "simple group".
            groups.insert(req.group_id.clone(), Group::new(&req.group_id, now));
        }
        let Some(group) = groups.get_mut(&req.group_id) else {
            return Err(ErrorCode::UnknownServerError);
        };
        match &group.consumer {
            Some(consumer) => consumer.validate_offset_commit(
                &req.member_id,
                req.generation_id,
                req.api_version,
            )?,
            None => validate_offset_commit(group, &req)?,
        }
        if group.is(GroupState::Stable) || group.is(GroupState::PreparingRebalance) {
            cx.reschedule_heartbeat(group, &req.member_id);
        }
        let expire_timestamp =
            (req.retention_time_ms >= 0).then(|| now.saturating_add(req.retention_time_ms));
        let mut codes = Vec::with_capacity(req.partitions.len());
        for mut p in req.partitions {
            let max = cx.cfg.offset_metadata_bytes_max;
            let value = match offset_value(&mut p, max, now, expire_timestamp) {
                Ok(value) => value,
                Err(code) => {
                    codes.push(code);
                    continue;
                }
            };
            cx.fx.records.push(Record::Offset {
                group: group.group_id.clone(),
                topic: p.topic.clone(),
                partition: p.partition,
                value: Some(value.clone()),
            });
            // Written after any offset a transaction holds for it: a commit keeps this one.
            txn_offsets.supersede(&(req.group_id.clone(), p.topic.clone(), p.partition));
            group.offsets.insert((p.topic, p.partition), value);
            codes.push(ErrorCode::None);
        }
        Ok(codes)
    }

    /// The offsets of a committed transaction (TxnOffsetCommit, then EndTxn commit): they
    /// become the group's committed offsets now. Membership is not checked here: it was when
    /// the offsets were sent, and a transaction's outcome may not depend on a rebalance.
    pub fn commit_transactional_offsets(
        &mut self,
        now: i64,
        group_id: &str,
        partitions: Vec<CommitPartition>,
    ) {
        let group =
            self.groups.entry(group_id.to_string()).or_insert_with(|| Group::new(group_id, now));
        for p in partitions {
            let value = OffsetValue {
                offset: p.offset,
                leader_epoch: p.leader_epoch,
                metadata: p.metadata.unwrap_or_default(),
                commit_timestamp: now,
                expire_timestamp: None,
            };
            self.fx.records.push(Record::Offset {
                group: group.group_id.clone(),
                topic: p.topic.clone(),
                partition: p.partition,
                value: Some(value.clone()),
            });
            group.offsets.insert((p.topic, p.partition), value);
        }
    }

    /// TxnOffsetCommit (Kafka's `commitTransactionalOffset`): checks the producer
    /// epoch against the offsets it has pending, then the member and generation (Kafka's
    /// `validateTransactionalOffsetCommit`: an unknown group is created as a simple group for
    /// generation -1, else ILLEGAL_GENERATION; a consumer group's stale epoch is
    /// ILLEGAL_GENERATION too). Accepted offsets are queued as transactional records and kept
    /// pending; the caller answers once the records are replicated.
    pub fn txn_commit_offsets(
        &mut self,
        now: i64,
        req: TxnCommitRequest,
    ) -> Result<Vec<ErrorCode>, ErrorCode> {
        self.txn_offsets.check(req.producer_id, req.producer_epoch)?;
        if !self.groups.contains_key(&req.group_id) {
            if req.generation_id >= 0 {
                return Err(ErrorCode::IllegalGeneration);
            }
            self.groups.insert(req.group_id.clone(), Group::new(&req.group_id, now));
        }
        let Some(group) = self.groups.get(&req.group_id) else {
            return Err(ErrorCode::UnknownServerError);
        };
        match &group.consumer {
            Some(consumer) => consumer
                .validate_offset_commit(&req.member_id, req.generation_id, 9)
                .map_err(|code| match code {
                    ErrorCode::StaleMemberEpoch => ErrorCode::IllegalGeneration,
                    code => code,
                })?,
            None => validate_txn_offset_commit(group, &req)?,
        }
        let mut codes = Vec::with_capacity(req.partitions.len());
        for mut p in req.partitions {
            let max = self.config.offset_metadata_bytes_max;
            let value = match offset_value(&mut p, max, now, None) {
                Ok(value) => value,
                Err(code) => {
                    codes.push(code);
                    continue;
                }
            };
            self.fx.records.push(Record::TxnOffset {
                producer_id: req.producer_id,
                producer_epoch: req.producer_epoch,
                group: req.group_id.clone(),
                topic: p.topic.clone(),
                partition: p.partition,
                value: value.clone(),
            });
            let key = (req.group_id.clone(), p.topic, p.partition);
            self.txn_offsets.add(req.producer_id, req.producer_epoch, key, value);
            codes.push(ErrorCode::None);
        }
        Ok(codes)
    }

    /// A transaction marker of `producer_id` is in the partition of the groups `owned`
    /// names (written and replicated, or replayed): a commit makes their pending offsets
    /// committed offsets (no record: the marker in the log is what makes them so on
    /// replay), an abort drops them. Returns how many offsets were committed.
    pub fn complete_txn(
        &mut self,
        now: i64,
        producer_id: ProducerId,
        outcome: TxnOutcome,
        owned: impl Fn(&str) -> bool,
    ) -> usize {
        let settled = self.txn_offsets.complete(producer_id, outcome, owned);
        let count = settled.len();
        for s in settled {
            let group =
                self.groups.entry(s.group.clone()).or_insert_with(|| Group::new(&s.group, now));
            group.offsets.insert((s.topic, s.partition), s.value);
        }
        count
    }

    /// OffsetFetch with require_stable (Kafka's `fetchOffsets`): an offset a transaction
    /// still holds for the group's partition is UNSTABLE_OFFSET_COMMIT (offset -1), which
    /// clients ask again for, so a consumer never starts from an offset that the open
    /// transaction is about to replace.
    pub fn mark_unstable(&self, group_id: &str, offsets: &mut [FetchedOffset]) {
        for fetched in offsets {
            if self.txn_offsets.is_pending(group_id, &fetched.topic, fetched.partition) {
                fetched.error_code = ErrorCode::UnstableOffsetCommit;
                fetched.offset = Offset::NONE;
            }
        }
    }

    /// How many transactional offsets wait for their transaction's end.
    pub fn pending_txn_offsets(&self) -> usize {
        self.txn_offsets.len()
    }

    /// OffsetFetch for one group: the requested partitions (-1 where nothing is committed),
    /// or every committed offset when `partitions` is None.
    /// OffsetFetch v9+ for a consumer group: the member and epoch are checked first (Kafka's
    /// `validateOffsetFetch`); other groups take any.
    pub fn fetch_member_offsets(
        &self,
        group_id: &str,
        member: Option<(&str, i32)>,
        partitions: Option<TopicPartitions>,
    ) -> Result<Vec<FetchedOffset>, ErrorCode> {
        if let Some(consumer) = self.groups.get(group_id).and_then(|g| g.consumer.as_ref()) {
            let (member_id, epoch) = member.map_or((None, -1), |(id, epoch)| (Some(id), epoch));
            consumer.validate_offset_fetch(member_id, epoch)?;
        }
        Ok(self.fetch_offsets(group_id, partitions))
    }

    pub fn fetch_offsets(
        &self,
        group_id: &str,
        partitions: Option<TopicPartitions>,
    ) -> Vec<FetchedOffset> {
        let group = self.groups.get(group_id);
        let found = |topic: &str, partition: i32| {
            group.and_then(|g| g.offsets.get(&(topic.to_string(), partition)))
        };
        match partitions {
            Some(wanted) => wanted
                .into_iter()
                .flat_map(|(topic, partitions)| {
                    partitions.into_iter().map(move |p| (topic.clone(), p))
                })
                .map(|(topic, partition)| match found(&topic, partition) {
                    Some(v) => FetchedOffset {
                        offset: v.offset,
                        leader_epoch: v.leader_epoch,
                        metadata: v.metadata.clone(),
                        topic,
                        partition,
                        error_code: ErrorCode::None,
                    },
                    None => FetchedOffset {
                        topic,
                        partition,
                        offset: Offset::NONE,
                        leader_epoch: LeaderEpoch::NONE,
                        metadata: String::new(),
                        error_code: ErrorCode::None,
                    },
                })
                .collect(),
            None => group
                .map(|g| {
                    g.offsets
                        .iter()
                        .map(|((topic, partition), v)| FetchedOffset {
                            topic: topic.clone(),
                            partition: *partition,
                            offset: v.offset,
                            leader_epoch: v.leader_epoch,
                            metadata: v.metadata.clone(),
                            error_code: ErrorCode::None,
                        })
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    pub fn describe(&self, group_id: &str) -> DescribedGroup {
        match self.groups.get(group_id) {
            Some(group) if group.consumer.is_none() => group.describe(),
            found => DescribedGroup {
                group_id: group_id.to_string(),
                state: GroupState::Dead,
                is_consumer_group: found.is_some(),
                protocol_type: String::new(),
                protocol_data: String::new(),
                members: Vec::new(),
            },
        }
    }

    /// Every group with its member count and committed offsets, for a metrics scrape.
    pub fn metrics_report(&self) -> Vec<GroupReport> {
        self.groups
            .values()
            .map(|g| GroupReport {
                group: g.group_id.clone(),
                members: match &g.consumer {
                    Some(c) => c.members.len() as u64,
                    None => g.members.len() as u64,
                },
                offsets: g
                    .offsets
                    .iter()
                    .map(|((topic, partition), value)| (topic.clone(), *partition, value.offset.0))
                    .collect(),
            })
            .collect()
    }

    /// ListGroups; `states` are lower-case state names (empty: all). Sorted by group id.
    pub fn list(&self, states: &[String]) -> Vec<ListedGroup> {
        let mut listed: Vec<ListedGroup> = self
            .groups
            .values()
            .map(|g| match &g.consumer {
                Some(c) => ListedGroup {
                    group_id: g.group_id.clone(),
                    protocol_type: CONSUMER_PROTOCOL_TYPE.to_string(),
                    state: c.state_name(),
                    group_type: "consumer",
                },
                None => ListedGroup {
                    group_id: g.group_id.clone(),
                    protocol_type: g.protocol_type.clone().unwrap_or_default(),
                    state: g.state.name(),
                    group_type: "classic",
                },
            })
            .filter(|g| states.is_empty() || states.iter().any(|s| s.eq_ignore_ascii_case(g.state)))
            .collect();
        listed.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        listed
    }

    /// DeleteGroups for one group: only an empty group can go; its offsets go with it.
    pub fn delete_group(&mut self, group_id: &str) -> ErrorCode {
        let Some(group) = self.groups.get(group_id) else { return ErrorCode::GroupIdNotFound };
        if group.has_consumer_members() {
            return ErrorCode::NonEmptyGroup;
        }
        match group.state {
            GroupState::Dead => return ErrorCode::GroupIdNotFound,
            GroupState::Empty => {}
            _ => return ErrorCode::NonEmptyGroup,
        }
        self.remove_group(group_id);
        ErrorCode::None
    }

    /// OffsetDelete: per-partition codes, or one code for the request.
    pub fn delete_offsets(
        &mut self,
        group_id: &str,
        topics: TopicPartitions,
    ) -> Result<PartitionCodes, ErrorCode> {
        let Groups { groups, fx, txn_offsets, .. } = self;
        let Some(group) = groups.get_mut(group_id) else { return Err(ErrorCode::GroupIdNotFound) };
        match group.state {
            GroupState::Dead => return Err(ErrorCode::GroupIdNotFound),
            GroupState::Empty => {}
            _ if group.protocol_type.as_deref() != Some(CONSUMER_PROTOCOL_TYPE) => {
                return Err(ErrorCode::NonEmptyGroup)
            }
            _ => {}
        }
        let mut out = Vec::with_capacity(topics.len());
        let consumer_topics = group
            .consumer
            .as_ref()
            .filter(|c| !c.is_empty())
            .map(ConsumerGroup::subscribed_topic_names);
        for (topic, partitions) in topics {
            let subscribed = match &consumer_topics {
                Some(names) => names.contains(&topic),
                None => !group.is(GroupState::Empty) && group.is_subscribed_to(&topic),
            };
            let results = partitions
                .into_iter()
                .map(|partition| {
                    if subscribed {
                        return (partition, ErrorCode::GroupSubscribedToTopic);
                    }
                    // A tombstone where an offset is committed or pending (Kafka's
                    // `deleteOffsets`); it drops the pending ones too.
                    let committed = group.offsets.remove(&(topic.clone(), partition)).is_some();
                    let key = (group_id.to_string(), topic.clone(), partition);
                    if txn_offsets.remove(&key) || committed {
                        fx.records.push(Record::Offset {
                            group: group_id.to_string(),
                            topic: topic.clone(),
                            partition,
                            value: None,
                        });
                    }
                    (partition, ErrorCode::None)
                })
                .collect();
            out.push((topic, results));
        }
        Ok(out)
    }

    /// A topic was deleted (Kafka's `onTopicsDeleted`): every group's committed offsets of
    /// its partitions go, and transactions' pending ones too, each with a tombstone, so that
    /// a topic created again under the name starts without them. Returns how many went.
    pub fn forget_topic(&mut self, topic: &str) -> usize {
        let Groups { groups, fx, txn_offsets, .. } = self;
        let mut doomed: BTreeSet<PendingKey> = txn_offsets.keys_of_topic(topic);
        for (group_id, group) in groups.iter_mut() {
            group.offsets.retain(|(t, partition), _| {
                let keep = t != topic;
                if !keep {
                    doomed.insert((group_id.clone(), t.clone(), *partition));
                }
                keep
            });
        }
        for key in &doomed {
            txn_offsets.remove(key);
            let (group, topic, partition) = key.clone();
            fx.records.push(Record::Offset { group, topic, partition, value: None });
        }
        doomed.len()
    }

    /// Runs every timeout due at `now`: session expiry, rebalance and join delays, sync
    /// expiry. Called by the shard's periodic tick.
    pub fn advance(&mut self, now: i64) {
        let Groups { config, groups, fx, .. } = self;
        // Operations scheduled while expiring wait for the next tick, even when already due:
        // a member's rebalance timeout may be zero or negative (JoinGroup takes any int32),
        // and "nobody rejoined, wait another rebalance timeout" would otherwise loop forever.
        let mark = fx.timers.mark();
        while let Some(op) = fx.timers.pop_expired_scheduled_before(now, mark) {
            let mut cx = Ctx { cfg: config, fx: &mut *fx, now };
            match op {
                TimerOp::ExpireHeartbeat { group, member } => {
                    if let Some(g) = groups.get_mut(&group) {
                        cx.expire_heartbeat(g, &member);
                    }
                }
                TimerOp::CompleteJoin { group } => {
                    if let Some(g) = groups.get_mut(&group) {
                        cx.complete_join(g);
                    }
                }
                TimerOp::InitialJoin { group, delay_ms, remaining_ms } => {
                    if let Some(g) = groups.get_mut(&group) {
                        cx.initial_join(g, delay_ms, remaining_ms);
                    }
                }
                TimerOp::ExpireSync { group, generation } => {
                    if let Some(g) = groups.get_mut(&group) {
                        cx.expire_pending_sync(g, generation);
                    }
                }
                TimerOp::ExpireConsumerSession { group, member } => {
                    if let Some(g) = groups.get_mut(&group) {
                        cx.expire_consumer(g, &member, false);
                    }
                }
                TimerOp::ExpireConsumerRevoke { group, member } => {
                    if let Some(g) = groups.get_mut(&group) {
                        cx.expire_consumer(g, &member, true);
                    }
                }
                TimerOp::ExpireConsumerClassic { group, member } => {
                    if let Some(g) = groups.get_mut(&group) {
                        cx.fence_consumer_member(g, &member);
                    }
                }
            }
        }
    }

    /// Offset retention: drops expired offsets of empty groups (and of topics a stable
    /// consumer group no longer subscribes to), and empty groups left without offsets.
    /// Returns how many offsets expired.
    pub fn expire_offsets(&mut self, now: i64) -> usize {
        let retention = self.config.offsets_retention_ms;
        let mut expired = 0;
        let mut doomed = Vec::new();
        for group in self.groups.values_mut() {
            if group.has_consumer_members() {
                // A live consumer group keeps its offsets (Kafka expires only offsets of
                // topics it no longer subscribes to; Spate keeps those too, a known gap).
                continue;
            }
            let base: Option<Option<i64>> = if let Some(c) = &group.consumer {
                Some(Some(c.state_timestamp_ms))
            } else if group.protocol_type.is_none() {
                Some(None) // simple group: from each commit's timestamp
            } else if group.is(GroupState::Empty) {
                Some(group.state_timestamp_ms)
            } else if group.protocol_type.as_deref() == Some(CONSUMER_PROTOCOL_TYPE)
                && group.subscribed_topics.is_some()
                && group.is(GroupState::Stable)
            {
                Some(None)
            } else {
                None
            };
            let Some(base) = base else { continue };
            let keys: Vec<(String, i32)> = group
                .offsets
                .iter()
                .filter(|((topic, _), _)| {
                    !group.is_subscribed_to(topic) || group.is(GroupState::Empty)
                })
                .filter(|(_, v)| match v.expire_timestamp {
                    Some(at) => now >= at,
                    None => now >= base.unwrap_or(v.commit_timestamp) + retention,
                })
                // Not while a transaction holds an offset for it (Kafka's
                // `cleanupExpiredOffsets`).
                .filter(|((topic, partition), _)| {
                    !self.txn_offsets.is_pending(&group.group_id, topic, *partition)
                })
                .map(|(key, _)| key.clone())
                .collect();
            for key in keys {
                group.offsets.remove(&key);
                self.fx.records.push(Record::Offset {
                    group: group.group_id.clone(),
                    topic: key.0,
                    partition: key.1,
                    value: None,
                });
                expired += 1;
            }
            // Nor the group while a transaction holds one of its offsets (KAFKA-19163).
            if group.is(GroupState::Empty)
                && group.offsets.is_empty()
                && !self.txn_offsets.has_group(&group.group_id)
            {
                doomed.push(group.group_id.clone());
            }
        }
        for group_id in doomed {
            self.remove_group(&group_id);
        }
        expired
    }

    /// Removes a group with a tombstone for each offset it has committed or pending (Kafka's
    /// `deleteAllOffsets`: a transaction that commits later leaves nothing of it).
    fn remove_group(&mut self, group_id: &str) {
        let Some(group) = self.groups.remove(group_id) else { return };
        let mut partitions: BTreeSet<(String, i32)> = group.offsets.keys().cloned().collect();
        partitions.extend(self.txn_offsets.partitions_of(group_id));
        for (topic, partition) in partitions {
            self.txn_offsets.remove(&(group_id.to_string(), topic.clone(), partition));
            self.fx.records.push(Record::Offset {
                group: group_id.to_string(),
                topic,
                partition,
                value: None,
            });
        }
        self.fx.records.push(Record::Group { group: group_id.to_string(), value: None });
        self.cancel_timers(group_id, &group);
    }

    /// Forgets the groups `owned` names without writing anything (Kafka's
    /// `removeGroupsForPartition`: this coordinator no longer leads their partition of
    /// `__consumer_offsets`, and the new leader has their records). Their parked JoinGroup
    /// and SyncGroup requests are answered NOT_COORDINATOR, so that the members look the
    /// coordinator up again. Returns how many groups went.
    pub fn unload(&mut self, owned: impl Fn(&str) -> bool) -> usize {
        self.txn_offsets.unload(&owned);
        let doomed: Vec<String> = self.groups.keys().filter(|id| owned(id)).cloned().collect();
        for group_id in &doomed {
            let Some(group) = self.groups.remove(group_id) else { continue };
            for member in group.members.values() {
                if let Some(parked) = member.awaiting_join {
                    let error = JoinResponse::error(&member.member_id, ErrorCode::NotCoordinator);
                    self.fx.replies.push((parked, Reply::Join(error)));
                }
                if let Some(parked) = member.awaiting_sync {
                    let error = SyncResponse::error(ErrorCode::NotCoordinator);
                    self.fx.replies.push((parked, Reply::Sync(error)));
                }
            }
            self.cancel_timers(group_id, &group);
        }
        doomed.len()
    }

    fn cancel_timers(&mut self, group_id: &str, group: &Group) {
        for member_id in group.members.keys() {
            self.fx.timers.cancel(&TimerKey::Heartbeat(group_id.to_string(), member_id.clone()));
        }
        for member_id in &group.pending_join_members {
            self.fx.timers.cancel(&TimerKey::Heartbeat(group_id.to_string(), member_id.clone()));
        }
        self.fx.timers.cancel(&TimerKey::Join(group_id.to_string()));
        self.fx.timers.cancel(&TimerKey::Sync(group_id.to_string()));
        for member_id in group.consumer.iter().flat_map(|c| c.members.keys()) {
            cancel_consumer_timers(&mut self.fx, group_id, member_id);
        }
    }

    // ----- persistence -------------------------------------------------------------------

    /// Applies one record read back from the log at start-up. Later records win.
    pub fn replay(&mut self, now: i64, record: Record) {
        match record {
            Record::TxnOffset { producer_id, producer_epoch, group, topic, partition, value } => {
                self.txn_offsets.add(producer_id, producer_epoch, (group, topic, partition), value);
            }
            // The coordinator replays a partition's markers with `complete_txn` for that
            // partition's groups; a marker alone applies to every group.
            Record::Marker { producer_id, outcome, .. } => {
                self.complete_txn(now, producer_id, outcome, |_| true);
            }
            // Share groups' records are the coordinator's `group::share` state.
            Record::Share { .. } => {}
            // As Kafka replays them: a plain commit is after the pending offsets of its
            // partition (a later commit keeps it), a tombstone drops them.
            Record::Offset { group, topic, partition, value } => match value {
                Some(value) => {
                    self.txn_offsets.supersede(&(group.clone(), topic.clone(), partition));
                    let g =
                        self.groups.entry(group.clone()).or_insert_with(|| Group::new(&group, now));
                    g.offsets.insert((topic, partition), value);
                }
                None => {
                    self.txn_offsets.remove(&(group.clone(), topic.clone(), partition));
                    if let Some(g) = self.groups.get_mut(&group) {
                        g.offsets.remove(&(topic, partition));
                    }
                }
            },
            Record::Group { group, value: None } => {
                self.groups.remove(&group);
            }
            Record::Consumer { group, value: None } => {
                if let Some(g) = self.groups.get_mut(&group) {
                    g.consumer = None;
                }
            }
            Record::Consumer { group, value: Some(value) } => {
                let consumer = ConsumerGroup::from_value(&group, value);
                let g = self.groups.entry(group.clone()).or_insert_with(|| Group::new(&group, now));
                // Whatever classic state came before was converted; the offsets stay.
                let offsets = std::mem::take(&mut g.offsets);
                *g = Group::new(&group, now);
                g.offsets = offsets;
                g.consumer = Some(consumer);
            }
            Record::Group { group, value: Some(value) } => {
                let offsets = self.groups.remove(&group).map(|g| g.offsets).unwrap_or_default();
                let mut g = Group::new(&group, now);
                g.offsets = offsets;
                g.persisted = Some(value.clone());
                g.generation_id = value.generation;
                g.protocol_type = (!value.protocol_type.is_empty()).then_some(value.protocol_type);
                g.protocol_name = value.protocol.clone();
                g.leader_id = value.leader;
                g.state_timestamp_ms =
                    (value.current_state_timestamp >= 0).then_some(value.current_state_timestamp);
                let protocol = value.protocol.unwrap_or_default();
                for m in value.members {
                    let member = Member {
                        member_id: m.member_id,
                        group_instance_id: m.group_instance_id,
                        client_id: m.client_id,
                        client_host: m.client_host,
                        rebalance_timeout_ms: if m.rebalance_timeout < 0 {
                            m.session_timeout
                        } else {
                            m.rebalance_timeout
                        },
                        session_timeout_ms: m.session_timeout,
                        protocol_type: g.protocol_type.clone().unwrap_or_default(),
                        protocols: vec![Protocol {
                            name: protocol.clone(),
                            metadata: m.subscription,
                        }],
                        assignment: m.assignment,
                        awaiting_join: None,
                        awaiting_sync: None,
                        is_new: false,
                    };
                    g.add(member, None);
                }
                if !g.members.is_empty() {
                    g.state = GroupState::Stable;
                    g.previous_state = GroupState::CompletingRebalance;
                }
                g.subscribed_topics = g.compute_subscribed_topics();
                self.groups.insert(group, g);
            }
        }
    }

    /// After replay: members of loaded groups must heartbeat within their session timeout,
    /// as after a coordinator failover in Kafka.
    pub fn finish_load(&mut self, now: i64) {
        self.finish_load_of(now, |_| true, |_| ConsumerTimeouts::default());
    }

    /// `finish_load` for the groups `loaded` names (those of one partition of
    /// `__consumer_offsets` this coordinator just loaded); a consumer group's members get
    /// the session timeout its configs set (`timeouts`), else the broker's.
    pub fn finish_load_of(
        &mut self,
        now: i64,
        loaded: impl Fn(&str) -> bool,
        timeouts: impl Fn(&str) -> ConsumerTimeouts,
    ) {
        let Groups { config, groups, fx, .. } = self;
        let mut cx = Ctx { cfg: config, fx, now };
        for group in groups.values_mut().filter(|group| loaded(&group.group_id)) {
            let members: Vec<String> = group.members.keys().cloned().collect();
            for member in members {
                cx.reschedule_heartbeat(group, &member);
            }
            if group.consumer.is_none()
                && group.members.len() > cx.cfg.classic_max_size
                && group.can_rebalance()
            {
                // Kafka's load of a classic group over `group.max.size` (lowered since): a
                // rebalance, in which the members that rejoin last are refused.
                tracing::info!(
                    group = %group.group_id,
                    members = group.members.len(),
                    max = cx.cfg.classic_max_size,
                    "a loaded group is over group.max.size: rebalancing"
                );
                cx.prepare_rebalance(group);
            }
            if let Some(consumer) = group.consumer.as_mut() {
                let mut effects = consumer::Effects::default();
                let group_config = timeouts(&group.group_id).applied_to(cx.cfg);
                consumer.loaded(now, &group_config, &mut effects);
                apply_timers(cx.fx, &group.group_id, effects.timers);
            }
        }
    }

    /// Every record needed to rebuild the current state, each group reset first (so that
    /// older records of the same group, in this log or elsewhere, cannot leak through).
    pub fn snapshot(&self) -> Vec<Record> {
        self.snapshot_of(|_| true)
    }

    /// `snapshot` of the groups `owned` names (one partition's of `__consumer_offsets`).
    pub fn snapshot_of(&self, owned: impl Fn(&str) -> bool) -> Vec<Record> {
        let mut ids: Vec<&String> = self.groups.keys().filter(|id| owned(id)).collect();
        ids.sort();
        let mut out = Vec::new();
        let (superseded, pending): (Vec<Restated>, Vec<Restated>) =
            self.txn_offsets.snapshot_of(&owned).into_iter().partition(|r| r.superseded);
        let restate = |r: Restated| Record::TxnOffset {
            producer_id: r.producer_id,
            producer_epoch: r.producer_epoch,
            group: r.key.0,
            topic: r.key.1,
            partition: r.key.2,
            value: r.value,
        };
        for id in ids {
            let Some(group) = self.groups.get(id) else { continue };
            out.push(Record::Group { group: id.clone(), value: None });
            if let Some(value) = &group.persisted {
                out.push(Record::Group { group: id.clone(), value: Some(value.clone()) });
            }
            if group.consumer.is_some() {
                out.push(group.consumer_record());
            }
            // Pending offsets a plain commit superseded go before the group's commits, so
            // that replaying the commit supersedes them again.
            let before = superseded.iter().filter(|r| r.key.0 == **id).cloned();
            out.extend(before.map(restate));
            for ((topic, partition), value) in &group.offsets {
                out.push(Record::Offset {
                    group: id.clone(),
                    topic: topic.clone(),
                    partition: *partition,
                    value: Some(value.clone()),
                });
            }
        }
        // After the groups' resets: the offsets still pending, as their transactions wrote
        // them (the markers that end them come later in the log).
        out.extend(pending.into_iter().map(restate));
        out
    }
}

/// Drops every timer of a consumer group's member.
fn cancel_consumer_timers(fx: &mut Effects, group_id: &str, member_id: &str) {
    let (group, member) = (group_id.to_string(), member_id.to_string());
    fx.timers.cancel(&TimerKey::ConsumerSession(group.clone(), member.clone()));
    fx.timers.cancel(&TimerKey::ConsumerRevoke(group.clone(), member.clone()));
    fx.timers.cancel(&TimerKey::ConsumerJoin(group.clone(), member.clone()));
    fx.timers.cancel(&TimerKey::ConsumerSync(group, member));
}

/// Kafka's `convertToConsumerGroup`: a classic group with members becomes a consumer group
/// (a ConsumerGroupHeartbeat joins it under an upgrade policy). Parked JoinGroup and
/// SyncGroup requests are answered REBALANCE_IN_PROGRESS (those members rejoin), the classic
/// timers go, and each member keeps its subscription and assignment as a classic member of
/// the consumer group, with a session timer at its own session timeout.
fn convert_to_consumer_group(
    fx: &mut Effects,
    group: &mut Group,
    topics: &dyn TopicView,
    now: i64,
    config: &GroupConfig,
) -> Result<(), HeartbeatResponse> {
    let protocol = group.protocol_name.clone().unwrap_or_default();
    let members: Vec<ClassicMemberState> = group
        .members
        .values()
        .map(|m| ClassicMemberState {
            member_id: m.member_id.clone(),
            instance_id: m.group_instance_id.clone(),
            client_id: m.client_id.clone(),
            client_host: m.client_host.clone(),
            rebalance_timeout_ms: m.rebalance_timeout_ms,
            session_timeout_ms: m.session_timeout_ms,
            protocols: m.protocols.clone(),
            metadata: m.metadata(&protocol),
            assignment: m.assignment.clone(),
        })
        .collect();
    let Some(consumer) =
        ConsumerGroup::from_classic(&group.group_id, group.generation_id, members, topics, now)
    else {
        return Err(HeartbeatResponse::error(
            ErrorCode::GroupIdNotFound,
            format!(
                "Cannot upgrade the classic group {} to consumer group because the embedded \
                 consumer protocol is malformed.",
                group.group_id
            ),
        ));
    };
    for member in group.members.values_mut() {
        if let Some(parked) = member.awaiting_join.take() {
            let answer = JoinResponse::error(&member.member_id, ErrorCode::RebalanceInProgress);
            fx.replies.push((parked, Reply::Join(answer)));
        }
        if let Some(parked) = member.awaiting_sync.take() {
            let answer = SyncResponse::error(ErrorCode::RebalanceInProgress);
            fx.replies.push((parked, Reply::Sync(answer)));
        }
    }
    let ids: Vec<String> =
        group.members.keys().chain(&group.pending_join_members).cloned().collect();
    for member_id in ids {
        fx.timers.cancel(&TimerKey::Heartbeat(group.group_id.clone(), member_id));
    }
    fx.timers.cancel(&TimerKey::Join(group.group_id.clone()));
    fx.timers.cancel(&TimerKey::Sync(group.group_id.clone()));
    let mut effects = consumer::Effects::default();
    let mut consumer = consumer;
    consumer.loaded(now, config, &mut effects);
    apply_timers(fx, &group.group_id, effects.timers);
    let offsets = std::mem::take(&mut group.offsets);
    *group = Group::new(&group.group_id, now);
    group.offsets = offsets;
    group.consumer = Some(consumer);
    // The consumer group's record (written by the heartbeat that follows) supersedes the
    // classic one; replay keeps the offsets.
    fx.records.push(group.consumer_record());
    Ok(())
}

/// Puts a consumer group's timer commands on the timing wheel.
fn apply_timers(fx: &mut Effects, group_id: &str, timers: Vec<TimerCmd>) {
    let key = |member: &str| (group_id.to_string(), member.to_string());
    for timer in timers {
        match timer {
            TimerCmd::Session { member, deadline } => {
                let (group, member) = key(&member);
                let op =
                    TimerOp::ExpireConsumerSession { group: group.clone(), member: member.clone() };
                fx.timers.schedule(TimerKey::ConsumerSession(group, member), deadline, op);
            }
            TimerCmd::Revoke { member, deadline } => {
                let (group, member) = key(&member);
                let op =
                    TimerOp::ExpireConsumerRevoke { group: group.clone(), member: member.clone() };
                fx.timers.schedule(TimerKey::ConsumerRevoke(group, member), deadline, op);
            }
            TimerCmd::CancelSession { member } => {
                let (group, member) = key(&member);
                fx.timers.cancel(&TimerKey::ConsumerSession(group, member));
            }
            TimerCmd::CancelRevoke { member } => {
                let (group, member) = key(&member);
                fx.timers.cancel(&TimerKey::ConsumerRevoke(group, member));
            }
            TimerCmd::ClassicJoin { member, deadline } => {
                let (group, member) = key(&member);
                let op =
                    TimerOp::ExpireConsumerClassic { group: group.clone(), member: member.clone() };
                fx.timers.schedule(TimerKey::ConsumerJoin(group, member), deadline, op);
            }
            TimerCmd::ClassicSync { member, deadline } => {
                let (group, member) = key(&member);
                let op =
                    TimerOp::ExpireConsumerClassic { group: group.clone(), member: member.clone() };
                fx.timers.schedule(TimerKey::ConsumerSync(group, member), deadline, op);
            }
            TimerCmd::CancelClassicJoin { member } => {
                let (group, member) = key(&member);
                fx.timers.cancel(&TimerKey::ConsumerJoin(group, member));
            }
            TimerCmd::CancelClassicSync { member } => {
                let (group, member) = key(&member);
                fx.timers.cancel(&TimerKey::ConsumerSync(group, member));
            }
        }
    }
}

/// Kafka's `ClassicGroup.validateOffsetCommit` for a transactional commit: no member and
/// generation -1 is taken whatever the state (older TxnOffsetCommit versions carry neither),
/// and a rebalance in progress does not refuse it.
fn validate_txn_offset_commit(group: &Group, req: &TxnCommitRequest) -> Result<(), ErrorCode> {
    if group.is(GroupState::Dead) {
        return Err(ErrorCode::CoordinatorNotAvailable);
    }
    if req.generation_id < 0 && group.is(GroupState::Empty) {
        return Ok(());
    }
    if req.generation_id >= 0 || !req.member_id.is_empty() || req.group_instance_id.is_some() {
        group.validate_member(&req.member_id, req.group_instance_id.as_deref())?;
        if req.generation_id != group.generation_id {
            return Err(ErrorCode::IllegalGeneration);
        }
    }
    Ok(())
}

fn validate_offset_commit(group: &Group, req: &CommitRequest) -> Result<(), ErrorCode> {
    if group.is(GroupState::Dead) {
        return Err(ErrorCode::CoordinatorNotAvailable);
    }
    if req.generation_id < 0 && group.is(GroupState::Empty) {
        return Ok(());
    }
    if req.generation_id >= 0 || !req.member_id.is_empty() || req.group_instance_id.is_some() {
        group.validate_member(&req.member_id, req.group_instance_id.as_deref())?;
        if req.generation_id != group.generation_id {
            return Err(ErrorCode::IllegalGeneration);
        }
    } else if !group.is(GroupState::Empty) {
        return Err(ErrorCode::UnknownMemberId);
    }
    if group.is(GroupState::CompletingRebalance) {
        return Err(ErrorCode::RebalanceInProgress);
    }
    Ok(())
}

/// The operations that need the group, the timers and the outbox at once.
struct Ctx<'a> {
    cfg: &'a GroupConfig,
    fx: &'a mut Effects,
    now: i64,
}

impl Ctx<'_> {
    fn reply_join(&mut self, reply: ReplyId, response: JoinResponse) {
        self.fx.replies.push((reply, Reply::Join(response)));
    }

    fn reply_sync(&mut self, reply: ReplyId, response: SyncResponse) {
        self.fx.replies.push((reply, Reply::Sync(response)));
    }

    /// Queues the group's record (Kafka writes it when a generation is assigned, the group
    /// empties, or a static member is replaced) and remembers it for snapshots.
    fn persist(&mut self, group: &mut Group) {
        let record = group.to_record(self.now);
        if let Record::Group { value, .. } = &record {
            group.persisted = value.clone();
        }
        self.fx.records.push(record);
    }

    fn heartbeat_key(group: &Group, member_id: &str) -> TimerKey {
        TimerKey::Heartbeat(group.group_id.clone(), member_id.to_string())
    }

    fn reschedule_heartbeat(&mut self, group: &Group, member_id: &str) {
        let Some(member) = group.members.get(member_id) else { return };
        self.schedule_heartbeat(group, member_id, member.session_timeout_ms);
    }

    fn schedule_heartbeat(&mut self, group: &Group, member_id: &str, timeout_ms: i32) {
        let op = TimerOp::ExpireHeartbeat {
            group: group.group_id.clone(),
            member: member_id.to_string(),
        };
        self.fx.timers.schedule(
            Self::heartbeat_key(group, member_id),
            self.now + i64::from(timeout_ms),
            op,
        );
    }

    fn join_new_member(&mut self, group: &mut Group, reply: ReplyId, req: JoinRequest) {
        if group.is(GroupState::Dead) {
            self.reply_join(
                reply,
                JoinResponse::error(UNKNOWN_MEMBER_ID, ErrorCode::CoordinatorNotAvailable),
            );
            return;
        }
        if !group.supports_protocols(&req.protocol_type, &req.protocols) {
            self.reply_join(
                reply,
                JoinResponse::error(UNKNOWN_MEMBER_ID, ErrorCode::InconsistentGroupProtocol),
            );
            return;
        }
        let new_member_id = new_member_id(&req.client_id, req.group_instance_id.as_deref());
        if let Some(instance) = req.group_instance_id.clone() {
            match group.static_members.get(&instance).cloned() {
                Some(existing) => {
                    self.update_static_member(group, reply, req, &existing, &new_member_id)
                }
                None => self.add_member_then_rebalance(group, reply, req, new_member_id),
            }
        } else if req.require_known_member_id {
            group.pending_join_members.insert(new_member_id.clone());
            self.schedule_heartbeat(group, &new_member_id, req.session_timeout_ms);
            self.reply_join(
                reply,
                JoinResponse::error(&new_member_id, ErrorCode::MemberIdRequired),
            );
        } else {
            self.add_member_then_rebalance(group, reply, req, new_member_id);
        }
    }

    fn join_existing_member(&mut self, group: &mut Group, reply: ReplyId, req: JoinRequest) {
        let member_id = req.member_id.clone();
        if group.is(GroupState::Dead) {
            self.reply_join(
                reply,
                JoinResponse::error(&member_id, ErrorCode::CoordinatorNotAvailable),
            );
            return;
        }
        if !group.supports_protocols(&req.protocol_type, &req.protocols) {
            self.reply_join(
                reply,
                JoinResponse::error(&member_id, ErrorCode::InconsistentGroupProtocol),
            );
            return;
        }
        if group.pending_join_members.contains(&member_id) {
            // A pending member is always dynamic; a static one never gets MEMBER_ID_REQUIRED.
            // A request that names an instance id with a pending member id was not sent by
            // that member: adding it would register the instance twice. Kafka throws an
            // IllegalStateException here, which its clients see as UNKNOWN_SERVER_ERROR.
            if req.group_instance_id.is_some() {
                let answer = JoinResponse::error(&member_id, ErrorCode::UnknownServerError);
                self.reply_join(reply, answer);
                return;
            }
            self.add_member_then_rebalance(group, reply, req, member_id);
            return;
        }
        if let Err(code) = group.validate_member(&member_id, req.group_instance_id.as_deref()) {
            self.reply_join(reply, JoinResponse::error(&member_id, code));
            return;
        }
        let Some(member) = group.members.get(&member_id) else { return };
        let same_metadata = member.matches(&req.protocols);
        match group.state {
            GroupState::PreparingRebalance => {
                group.update_member(&member_id, &req, Some(reply), self.fx);
                self.maybe_prepare_rebalance_or_complete_join(group);
            }
            GroupState::CompletingRebalance => {
                if same_metadata {
                    // It missed the JoinGroup answer: send the current generation again.
                    let members = MemberList::for_leader(group.is_leader(&member_id));
                    let response = group.join_response(&member_id, members);
                    self.reply_join(reply, response);
                } else {
                    group.update_member(&member_id, &req, Some(reply), self.fx);
                    self.maybe_prepare_rebalance_or_complete_join(group);
                }
            }
            GroupState::Stable => {
                if group.is_leader(&member_id) || !same_metadata {
                    // The leader rejoining forces a rebalance (e.g. topic metadata changed).
                    group.update_member(&member_id, &req, Some(reply), self.fx);
                    self.maybe_prepare_rebalance_or_complete_join(group);
                } else {
                    let response = group.join_response(&member_id, MemberList::Omitted);
                    self.reply_join(reply, response);
                }
            }
            GroupState::Empty | GroupState::Dead => {
                self.reply_join(reply, JoinResponse::error(&member_id, ErrorCode::UnknownMemberId));
            }
        }
    }

    fn add_member_then_rebalance(
        &mut self,
        group: &mut Group,
        reply: ReplyId,
        req: JoinRequest,
        member_id: String,
    ) {
        let member = Member {
            member_id: member_id.clone(),
            group_instance_id: req.group_instance_id,
            client_id: req.client_id,
            client_host: req.client_host,
            rebalance_timeout_ms: req.rebalance_timeout_ms,
            session_timeout_ms: req.session_timeout_ms,
            protocol_type: req.protocol_type,
            protocols: req.protocols,
            assignment: Bytes::new(),
            awaiting_join: None,
            awaiting_sync: None,
            is_new: true,
        };
        if group.is(GroupState::PreparingRebalance) && group.previous_state == GroupState::Empty {
            group.new_member_added = true;
        }
        group.add(member, Some(reply));
        // A new member cannot heartbeat while its JoinGroup is parked, and a client that gave
        // up would leave a ghost; so the join itself times out (Kafka: 5 minutes).
        let timeout = self.cfg.new_member_join_timeout_ms;
        self.schedule_heartbeat(group, &member_id, timeout);
        self.maybe_prepare_rebalance_or_complete_join(group);
    }

    fn update_static_member(
        &mut self,
        group: &mut Group,
        reply: ReplyId,
        req: JoinRequest,
        old_id: &str,
        new_id: &str,
    ) {
        // Fence the old incarnation: its parked requests fail with FENCED_INSTANCE_ID.
        let leader_before = group.leader_id.clone().unwrap_or_default();
        let Some(mut member) = group.members.shift_remove(old_id) else { return };
        if let Some(parked) = member.awaiting_join.take() {
            group.num_awaiting_join -= 1;
            let mut fenced = JoinResponse::error(old_id, ErrorCode::FencedInstanceId);
            fenced.leader = String::new();
            self.reply_join(parked, fenced);
        }
        if let Some(parked) = member.awaiting_sync.take() {
            self.reply_sync(parked, SyncResponse::error(ErrorCode::FencedInstanceId));
        }
        self.fx.timers.cancel(&Self::heartbeat_key(group, old_id));
        group.pending_sync_members.remove(old_id);
        member.member_id = new_id.to_string();
        group.members.insert(new_id.to_string(), member);
        if group.is_leader(old_id) {
            group.leader_id = Some(new_id.to_string());
        }
        if let Some(instance) = &req.group_instance_id {
            group.static_members.insert(instance.clone(), new_id.to_string());
        }
        self.reschedule_heartbeat(group, new_id);
        group.update_member(new_id, &req, Some(reply), self.fx);
        match group.state {
            GroupState::Stable => {
                let selected = group.select_protocol();
                if group.protocol_name.is_some() && group.protocol_name == selected {
                    // Same protocol: no rebalance. Persist the new member id and answer with
                    // the current generation (the member keeps its assignment).
                    self.persist(group);
                    let leader = group.is_leader(new_id);
                    let members = MemberList::for_leader(leader && req.supports_skip_assignment);
                    let mut response = group.join_response(new_id, members);
                    if req.supports_skip_assignment {
                        response.skip_assignment = leader;
                    } else {
                        // An old client must not think it leads (it would compute a new
                        // assignment); it names the old member id, as Kafka does.
                        response.leader = leader_before;
                    }
                    group.complete_join(new_id, response, self.fx);
                } else {
                    self.maybe_prepare_rebalance_or_complete_join(group);
                }
            }
            GroupState::CompletingRebalance => self.prepare_rebalance(group),
            _ => self.maybe_complete_join_phase(group),
        }
    }

    fn sync(&mut self, group: &mut Group, reply: ReplyId, req: SyncRequest) {
        if group.is(GroupState::Dead) {
            self.reply_sync(reply, SyncResponse::error(ErrorCode::CoordinatorNotAvailable));
            return;
        }
        if let Err(code) = group.validate_member(&req.member_id, req.group_instance_id.as_deref()) {
            self.reply_sync(reply, SyncResponse::error(code));
            return;
        }
        if req.generation_id != group.generation_id {
            self.reply_sync(reply, SyncResponse::error(ErrorCode::IllegalGeneration));
            return;
        }
        // A protocol the request names must be the group's (no name means "no opinion").
        let inconsistent = |asked: &Option<String>, ours: &Option<String>| {
            let (Some(asked), Some(ours)) = (asked, ours) else { return false };
            asked != ours
        };
        if inconsistent(&req.protocol_type, &group.protocol_type)
            || inconsistent(&req.protocol_name, &group.protocol_name)
        {
            self.reply_sync(reply, SyncResponse::error(ErrorCode::InconsistentGroupProtocol));
            return;
        }
        match group.state {
            GroupState::PreparingRebalance => {
                self.reply_sync(reply, SyncResponse::error(ErrorCode::RebalanceInProgress));
            }
            GroupState::CompletingRebalance => {
                if let Some(member) = group.members.get_mut(&req.member_id) {
                    if let Some(previous) = member.awaiting_sync.replace(reply) {
                        self.reply_sync(
                            previous,
                            SyncResponse::error(ErrorCode::RebalanceInProgress),
                        );
                    }
                }
                self.remove_pending_sync_member(group, &req.member_id);
                if group.is_leader(&req.member_id) {
                    // Only the leader's assignments count; a follower's are ignored.
                    let mut assignment: HashMap<String, Bytes> =
                        req.assignments.into_iter().collect();
                    for member in group.members.values_mut() {
                        member.assignment =
                            assignment.remove(&member.member_id).unwrap_or_default();
                    }
                    self.persist(group);
                    self.propagate_assignment(group, ErrorCode::None);
                    group.transition_to(GroupState::Stable, self.now);
                }
            }
            GroupState::Stable => {
                self.remove_pending_sync_member(group, &req.member_id);
                let assignment = group
                    .members
                    .get(&req.member_id)
                    .map(|m| m.assignment.clone())
                    .unwrap_or_default();
                self.reply_sync(
                    reply,
                    SyncResponse {
                        error_code: ErrorCode::None,
                        protocol_type: group.protocol_type.clone(),
                        protocol_name: group.protocol_name.clone(),
                        assignment,
                    },
                );
            }
            GroupState::Empty | GroupState::Dead => {
                self.reply_sync(reply, SyncResponse::error(ErrorCode::UnknownMemberId));
            }
        }
    }

    fn remove_pending_sync_member(&mut self, group: &mut Group, member_id: &str) {
        group.pending_sync_members.remove(member_id);
        let done = match group.state {
            GroupState::CompletingRebalance | GroupState::Stable => {
                group.pending_sync_members.is_empty()
            }
            _ => true,
        };
        if done {
            self.fx.timers.cancel(&TimerKey::Sync(group.group_id.clone()));
        }
    }

    fn propagate_assignment(&mut self, group: &mut Group, error_code: ErrorCode) {
        let (protocol_type, protocol_name) = if error_code == ErrorCode::None {
            (group.protocol_type.clone(), group.protocol_name.clone())
        } else {
            (None, None)
        };
        let ids: Vec<String> = group.members.keys().cloned().collect();
        for id in ids {
            let assignment =
                group.members.get(&id).map(|m| m.assignment.clone()).unwrap_or_default();
            let response = SyncResponse {
                error_code,
                protocol_type: protocol_type.clone(),
                protocol_name: protocol_name.clone(),
                assignment,
            };
            if group.complete_sync(&id, response, self.fx) {
                self.reschedule_heartbeat(group, &id);
            }
        }
    }

    fn maybe_prepare_rebalance_or_complete_join(&mut self, group: &mut Group) {
        if group.can_rebalance() {
            self.prepare_rebalance(group);
        } else {
            self.maybe_complete_join_phase(group);
        }
    }

    fn maybe_complete_join_phase(&mut self, group: &mut Group) {
        if group.is(GroupState::PreparingRebalance)
            && group.previous_state != GroupState::Empty
            && group.has_all_members_joined()
        {
            self.complete_join(group);
        }
    }

    fn prepare_rebalance(&mut self, group: &mut Group) {
        if group.is(GroupState::CompletingRebalance) {
            // Members waiting in SyncGroup must rejoin.
            for member in group.members.values_mut() {
                member.assignment = Bytes::new();
            }
            self.propagate_assignment(group, ErrorCode::RebalanceInProgress);
        }
        group.pending_sync_members.clear();
        self.fx.timers.cancel(&TimerKey::Sync(group.group_id.clone()));
        let initial = group.is(GroupState::Empty);
        if initial {
            // A new group waits a little for more members before the first generation.
            let delay_ms = self.cfg.initial_rebalance_delay_ms;
            // Saturating: JoinGroup's rebalance timeout is any int32 a client sends.
            let remaining_ms = group.rebalance_timeout_ms().saturating_sub(delay_ms).max(0);
            let op = TimerOp::InitialJoin { group: group.group_id.clone(), delay_ms, remaining_ms };
            let key = TimerKey::Join(group.group_id.clone());
            self.fx.timers.schedule(key, self.now + i64::from(delay_ms), op);
        }
        group.transition_to(GroupState::PreparingRebalance, self.now);
        if !initial {
            if group.has_all_members_joined() {
                self.complete_join(group);
            } else {
                let op = TimerOp::CompleteJoin { group: group.group_id.clone() };
                let deadline = self.now + i64::from(group.rebalance_timeout_ms());
                self.fx.timers.schedule(TimerKey::Join(group.group_id.clone()), deadline, op);
            }
        }
    }

    fn initial_join(&mut self, group: &mut Group, delay_ms: i32, remaining_ms: i32) {
        if group.new_member_added && remaining_ms != 0 {
            group.new_member_added = false;
            let next_delay = self.cfg.initial_rebalance_delay_ms.min(remaining_ms);
            let next_remaining = remaining_ms.saturating_sub(delay_ms).max(0);
            let op = TimerOp::InitialJoin {
                group: group.group_id.clone(),
                delay_ms: next_delay,
                remaining_ms: next_remaining,
            };
            let key = TimerKey::Join(group.group_id.clone());
            self.fx.timers.schedule(key, self.now + i64::from(next_delay), op);
        } else {
            self.complete_join(group);
        }
    }

    /// Ends the join phase: members that did not rejoin are dropped (static ones stay), the
    /// generation moves on, and every parked JoinGroup is answered (the leader's with the
    /// member list).
    fn complete_join(&mut self, group: &mut Group) {
        self.fx.timers.cancel(&TimerKey::Join(group.group_id.clone()));
        if !group.is(GroupState::PreparingRebalance) {
            return;
        }
        for member_id in group.not_yet_rejoined_dynamic() {
            group.remove(&member_id, self.fx);
            self.fx.timers.cancel(&Self::heartbeat_key(group, &member_id));
        }
        if !group.maybe_elect_new_joined_leader() && !group.members.is_empty() {
            // Nobody rejoined: wait another rebalance timeout for session expiry to act.
            let op = TimerOp::CompleteJoin { group: group.group_id.clone() };
            let deadline = self.now + i64::from(group.rebalance_timeout_ms());
            self.fx.timers.schedule(TimerKey::Join(group.group_id.clone()), deadline, op);
            return;
        }
        group.init_next_generation(self.now);
        if group.is(GroupState::Empty) {
            self.persist(group);
            return;
        }
        let ids: Vec<String> = group.members.keys().cloned().collect();
        for id in ids {
            let members = MemberList::for_leader(group.is_leader(&id));
            let response = group.join_response(&id, members);
            group.complete_join(&id, response, self.fx);
            self.reschedule_heartbeat(group, &id);
            if let Some(member) = group.members.get_mut(&id) {
                member.is_new = false;
            }
            group.pending_sync_members.insert(id);
        }
        let op =
            TimerOp::ExpireSync { group: group.group_id.clone(), generation: group.generation_id };
        let deadline = self.now + i64::from(group.rebalance_timeout_ms());
        self.fx.timers.schedule(TimerKey::Sync(group.group_id.clone()), deadline, op);
    }

    fn expire_heartbeat(&mut self, group: &mut Group, member_id: &str) {
        if group.pending_join_members.contains(member_id) {
            group.remove(member_id, self.fx);
            if group.is(GroupState::PreparingRebalance) && group.has_all_members_joined() {
                self.complete_join(group);
            }
            return;
        }
        let Some(member) = group.members.get(member_id) else { return };
        if member.has_satisfied_heartbeat() {
            return;
        }
        self.remove_member(group, member_id);
    }

    /// Removes a failed member; a parked JoinGroup of it gets UNKNOWN_MEMBER_ID.
    fn remove_member(&mut self, group: &mut Group, member_id: &str) {
        group.remove(member_id, self.fx);
        match group.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                self.maybe_prepare_rebalance_or_complete_join(group)
            }
            GroupState::PreparingRebalance if group.has_all_members_joined() => {
                self.complete_join(group)
            }
            _ => {}
        }
    }

    fn remove_current_member(&mut self, group: &mut Group, member_id: &str) {
        self.fx.timers.cancel(&Self::heartbeat_key(group, member_id));
        group.remove(member_id, self.fx);
    }

    /// A consumer group member's session or revocation deadline passed.
    fn expire_consumer(&mut self, group: &mut Group, member_id: &str, revocation: bool) {
        let Some(consumer) = group.consumer.as_mut() else { return };
        let due = consumer
            .members
            .get(member_id)
            .is_some_and(|m| !revocation || m.state == consumer::MemberState::UnrevokedPartitions);
        if due && self.maybe_downgrade(group, member_id) {
            return;
        }
        let Some(consumer) = group.consumer.as_mut() else { return };
        let mut effects = consumer::Effects::default();
        let fenced = if revocation {
            consumer.expire_revocation(self.now, member_id, &mut effects)
        } else {
            consumer.expire_session(self.now, member_id, &mut effects)
        };
        apply_timers(self.fx, &group.group_id, effects.timers);
        if fenced || effects.dirty {
            self.fx.records.push(group.consumer_record());
        }
    }

    /// JoinGroup from a classic member to a consumer group with members.
    fn join_consumer_group(
        &mut self,
        group: &mut Group,
        req: JoinRequest,
        topics: &dyn TopicView,
    ) -> JoinResponse {
        let Some(consumer) = group.consumer.as_mut() else {
            return JoinResponse::error(&req.member_id, ErrorCode::UnknownServerError);
        };
        let join = ClassicJoin {
            member_id: req.member_id.clone(),
            instance_id: req.group_instance_id.clone(),
            client_id: req.client_id,
            client_host: req.client_host,
            session_timeout_ms: req.session_timeout_ms,
            rebalance_timeout_ms: req.rebalance_timeout_ms,
            protocol_type: req.protocol_type,
            protocols: req.protocols,
            require_known_member_id: req.require_known_member_id,
        };
        // Kafka's `validateOnlineDowngradeWithReplacedMemberId`: a classic static member
        // replacing the last member that speaks the consumer protocol downgrades the group.
        let replaces_last = req
            .group_instance_id
            .as_deref()
            .is_some_and(|instance_id| consumer.all_classic_except_instance(instance_id))
            && consumer.members.len() <= self.cfg.classic_max_size;
        let mut effects = consumer::Effects::default();
        let joined = consumer.classic_join(self.now, join, topics, self.cfg, &mut effects);
        apply_timers(self.fx, &group.group_id, effects.timers);
        if effects.dirty {
            self.fx.records.push(group.consumer_record());
        }
        if joined.is_ok() && replaces_last && self.cfg.migration_policy.is_downgrade_enabled() {
            // The joining member is in the group in its predecessor's place: every member is
            // classic now, and the group becomes a classic group of them, Stable, without a
            // rebalance (Kafka's `convertToClassicGroup` with a joining member). The member
            // syncs next and gets its predecessor's assignment.
            self.downgrade(group, None);
        }
        match joined {
            Ok(joined) => JoinResponse {
                error_code: ErrorCode::None,
                generation_id: joined.generation_id,
                protocol_type: Some(CONSUMER_PROTOCOL_TYPE.to_string()),
                protocol_name: Some(joined.protocol_name),
                leader: String::new(),
                skip_assignment: false,
                member_id: joined.member_id,
                members: Vec::new(),
            },
            Err((code, member_id)) => JoinResponse::error(&member_id, code),
        }
    }

    /// SyncGroup from a classic member of a consumer group: its assignment, at once.
    fn sync_consumer_group(&mut self, group: &mut Group, req: SyncRequest) -> SyncResponse {
        let Some(consumer) = group.consumer.as_mut() else {
            return SyncResponse::error(ErrorCode::UnknownMemberId);
        };
        let mut effects = consumer::Effects::default();
        let synced = consumer.classic_sync(
            self.now,
            &req.member_id,
            req.group_instance_id.as_deref(),
            req.generation_id,
            (req.protocol_type.as_deref(), req.protocol_name.as_deref()),
            &mut effects,
        );
        apply_timers(self.fx, &group.group_id, effects.timers);
        match synced {
            Ok(assignment) => SyncResponse {
                error_code: ErrorCode::None,
                protocol_type: req.protocol_type,
                protocol_name: req.protocol_name,
                assignment,
            },
            Err(code) => SyncResponse::error(code),
        }
    }

    /// Kafka's `consumerGroupFenceMember`: removes a member from a consumer group, or, when
    /// it is the last one speaking the consumer protocol and the policy allows a downgrade,
    /// makes the group classic again without it.
    fn fence_consumer_member(&mut self, group: &mut Group, member_id: &str) {
        let Some(consumer) = group.consumer.as_mut() else { return };
        if !consumer.members.contains_key(member_id) {
            return;
        }
        if self.maybe_downgrade(group, member_id) {
            return;
        }
        let Some(consumer) = group.consumer.as_mut() else { return };
        let mut effects = consumer::Effects::default();
        consumer.remove_member(self.now, member_id, &mut effects);
        apply_timers(self.fx, &group.group_id, effects.timers);
        self.fx.records.push(group.consumer_record());
    }

    /// Kafka's `validateOnlineDowngradeWithFencedMember` and `convertToClassicGroup`: when
    /// `leaving` is the last member speaking the consumer protocol, others remain, and the
    /// policy allows it, the group becomes a classic group of the remaining members (their
    /// assignments are their targets), Stable at the group epoch, and a rebalance starts so
    /// that they rejoin. True if it did.
    fn maybe_downgrade(&mut self, group: &mut Group, leaving: &str) -> bool {
        let Some(consumer) = group.consumer.as_ref() else { return false };
        // Kafka's size check: a group that would be larger than `group.max.size` as a
        // classic group stays a consumer group.
        if !consumer.all_classic_except(leaving)
            || consumer.members.len() <= 1
            || !self.cfg.migration_policy.is_downgrade_enabled()
            || consumer.members.len() - 1 > self.cfg.classic_max_size
        {
            return false;
        }
        self.downgrade(group, Some(leaving));
        true
    }

    /// Kafka's `convertToClassicGroup`: the consumer group becomes a classic group of its
    /// classic members but `leaving`. A member leaving starts a rebalance; without one (a
    /// static member replaced its predecessor) the group stays Stable.
    fn downgrade(&mut self, group: &mut Group, leaving: Option<&str>) {
        let Some(consumer) = group.consumer.as_ref() else { return };
        let seeds = consumer.classic_seeds(leaving.unwrap_or_default());
        let generation = consumer.group_epoch;
        for member_id in consumer.member_ids() {
            cancel_consumer_timers(self.fx, &group.group_id, &member_id);
        }
        group.consumer = None;
        self.fx.records.push(Record::Consumer { group: group.group_id.clone(), value: None });
        let offsets = std::mem::take(&mut group.offsets);
        *group = Group::new(&group.group_id, self.now);
        group.offsets = offsets;
        group.generation_id = generation;
        group.state = GroupState::Stable;
        group.previous_state = GroupState::CompletingRebalance;
        let mut targets = Vec::with_capacity(seeds.len());
        for seed in seeds {
            targets.push((seed.member_id.clone(), seed.target));
            let member = Member {
                member_id: seed.member_id,
                group_instance_id: seed.instance_id,
                client_id: seed.client_id,
                client_host: seed.client_host,
                rebalance_timeout_ms: seed.rebalance_timeout_ms,
                session_timeout_ms: seed.session_timeout_ms,
                protocol_type: CONSUMER_PROTOCOL_TYPE.to_string(),
                protocols: seed.protocols,
                assignment: Bytes::new(),
                awaiting_join: None,
                awaiting_sync: None,
                is_new: false,
            };
            group.add(member, None);
        }
        group.protocol_name = group.select_protocol();
        group.subscribed_topics = group.compute_subscribed_topics();
        let protocol = group.protocol_name.clone().unwrap_or_default();
        for (member_id, target) in targets {
            if let Some(member) = group.members.get_mut(&member_id) {
                let version = consumer_protocol::version(&member.metadata(&protocol)).unwrap_or(0);
                member.assignment = consumer_protocol::encode_assignment(version, &target);
            }
        }
        self.persist(group);
        let members: Vec<String> = group.members.keys().cloned().collect();
        for member_id in members {
            self.reschedule_heartbeat(group, &member_id);
        }
        if leaving.is_some() {
            self.prepare_rebalance(group);
        }
    }

    fn expire_pending_sync(&mut self, group: &mut Group, generation: i32) {
        if generation != group.generation_id {
            return;
        }
        if !(group.is(GroupState::CompletingRebalance) || group.is(GroupState::Stable)) {
            return;
        }
        if group.pending_sync_members.is_empty() {
            return;
        }
        let late: Vec<String> = group.pending_sync_members.iter().cloned().collect();
        for member_id in late {
            group.remove(&member_id, self.fx);
            self.fx.timers.cancel(&Self::heartbeat_key(group, &member_id));
        }
        self.prepare_rebalance(group);
    }
}

#[cfg(test)]
mod txn_tests {
    use super::*;

    #[test]
    fn transactional_offsets_become_committed_offsets_even_in_a_busy_group() {
        let mut groups = Groups::new(GroupConfig::default());
        let offset = |topic: &str, offset| CommitPartition {
            topic: topic.into(),
            partition: 0,
            offset,
            leader_epoch: LeaderEpoch::NONE,
            metadata: None,
        };
        groups.commit_transactional_offsets(
            5,
            "g",
            vec![offset("a", Offset(10)), offset("b", Offset(3))],
        );
        assert_eq!(groups.take_records().len(), 2);
        let fetched = groups.fetch_offsets("g", None);
        assert_eq!(fetched.len(), 2);
        assert!(fetched.iter().any(|f| f.topic == "a" && f.offset == Offset(10)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A catalog without topics: classic groups never look topics up.
    struct NoTopics;

    impl TopicView for NoTopics {
        fn lookup(&self, _: &str) -> Option<(consumer_assignor::TopicId, i32)> {
            None
        }
        fn name_of(&self, _: &consumer_assignor::TopicId) -> Option<String> {
            None
        }
        fn names(&self) -> Vec<String> {
            Vec::new()
        }
    }
    use crate::group::assignor as consumer_assignor;

    const SESSION_MS: i32 = 10_000;
    const REBALANCE_MS: i32 = 30_000;
    const DELAY_MS: i32 = 100;

    /// Drives `Groups` with an explicit clock and collects the answers to parked requests.
    struct Harness {
        groups: Groups,
        now: i64,
        next_reply: ReplyId,
        replies: HashMap<ReplyId, Reply>,
    }

    impl Harness {
        fn new() -> Harness {
            let config =
                GroupConfig { initial_rebalance_delay_ms: DELAY_MS, ..GroupConfig::default() };
            Harness {
                groups: Groups::new(config),
                now: 1_000,
                next_reply: 1,
                replies: HashMap::new(),
            }
        }

        fn collect(&mut self) {
            for (id, reply) in self.groups.take_replies() {
                assert!(self.replies.insert(id, reply).is_none(), "reply {id} answered twice");
            }
        }

        fn advance(&mut self, ms: i64) {
            self.now += ms;
            self.groups.advance(self.now);
            self.collect();
        }

        fn join(&mut self, req: JoinRequest) -> ReplyId {
            let id = self.next_reply;
            self.next_reply += 1;
            self.groups.join(self.now, id, req, &NoTopics);
            self.collect();
            id
        }

        fn sync(&mut self, req: SyncRequest) -> ReplyId {
            let id = self.next_reply;
            self.next_reply += 1;
            self.groups.sync(self.now, id, req);
            self.collect();
            id
        }

        fn joined(&mut self, id: ReplyId) -> JoinResponse {
            match self.replies.remove(&id) {
                Some(Reply::Join(response)) => response,
                other => panic!("no join answer for {id}: {other:?}"),
            }
        }

        fn synced(&mut self, id: ReplyId) -> SyncResponse {
            match self.replies.remove(&id) {
                Some(Reply::Sync(response)) => response,
                other => panic!("no sync answer for {id}: {other:?}"),
            }
        }

        fn parked(&self, id: ReplyId) -> bool {
            !self.replies.contains_key(&id)
        }

        fn heartbeat(&mut self, group: &str, generation: i32, member: &str) -> ErrorCode {
            let req = HeartbeatRequest {
                group_id: group.into(),
                generation_id: generation,
                member_id: member.into(),
                group_instance_id: None,
            };
            self.groups.heartbeat(self.now, req)
        }

        /// A member joins a new group (v4+ handshake) and waits out the initial delay.
        fn join_dynamic(&mut self, group: &str, client: &str) -> String {
            let first = self.join(join_request(group, "", client, &["range"]));
            let answer = self.joined(first);
            assert_eq!(answer.error_code, ErrorCode::MemberIdRequired);
            assert!(answer.member_id.starts_with(client));
            answer.member_id
        }

        fn commit(
            &mut self,
            group: &str,
            generation: i32,
            member: &str,
            offset: i64,
        ) -> Result<Vec<ErrorCode>, ErrorCode> {
            let req = CommitRequest {
                group_id: group.into(),
                generation_id: generation,
                member_id: member.into(),
                group_instance_id: None,
                retention_time_ms: -1,
                api_version: 9,
                partitions: vec![CommitPartition {
                    topic: "t".into(),
                    partition: 0,
                    offset: Offset(offset),
                    leader_epoch: LeaderEpoch(3),
                    metadata: Some("meta".into()),
                }],
            };
            self.groups.commit_offsets(self.now, req)
        }
    }

    fn join_request(group: &str, member: &str, client: &str, protocols: &[&str]) -> JoinRequest {
        JoinRequest {
            group_id: group.into(),
            member_id: member.into(),
            group_instance_id: None,
            client_id: client.into(),
            client_host: "/127.0.0.1".into(),
            session_timeout_ms: SESSION_MS,
            rebalance_timeout_ms: REBALANCE_MS,
            protocol_type: CONSUMER_PROTOCOL_TYPE.into(),
            protocols: protocols
                .iter()
                .map(|name| Protocol { name: name.to_string(), metadata: subscription(&["t"]) })
                .collect(),
            require_known_member_id: true,
            supports_skip_assignment: false,
        }
    }

    fn sync_request(
        group: &str,
        generation: i32,
        member: &str,
        assignments: &[(&str, &[u8])],
    ) -> SyncRequest {
        SyncRequest {
            group_id: group.into(),
            generation_id: generation,
            member_id: member.into(),
            group_instance_id: None,
            protocol_type: Some(CONSUMER_PROTOCOL_TYPE.into()),
            protocol_name: None,
            assignments: assignments
                .iter()
                .map(|(m, a)| (m.to_string(), Bytes::copy_from_slice(a)))
                .collect(),
        }
    }

    /// A consumer-protocol subscription (v0) to `topics`.
    fn subscription(topics: &[&str]) -> Bytes {
        let mut out = vec![0u8, 0];
        out.extend((topics.len() as i32).to_be_bytes());
        for t in topics {
            out.extend((t.len() as i16).to_be_bytes());
            out.extend(t.as_bytes());
        }
        out.extend(0i32.to_be_bytes()); // no user data
        Bytes::from(out)
    }

    /// Two members in a stable group "g"; returns (harness, leader, follower, generation).
    fn stable_pair() -> (Harness, String, String, i32) {
        let mut h = Harness::new();
        let a = h.join_dynamic("g", "a");
        let b = h.join_dynamic("g", "b");
        let ja = h.join(join_request("g", &a, "a", &["range"]));
        let jb = h.join(join_request("g", &b, "b", &["range"]));
        assert!(h.parked(ja) && h.parked(jb), "the initial delay holds the first generation");
        h.advance(i64::from(DELAY_MS));
        assert!(h.parked(ja), "b arrived during the delay: it is extended once");
        h.advance(i64::from(DELAY_MS));
        let (ra, rb) = (h.joined(ja), h.joined(jb));
        assert_eq!(ra.generation_id, 1);
        assert_eq!(ra.leader, a);
        assert_eq!(rb.leader, a);
        assert_eq!(ra.members.len(), 2, "the leader gets every member's metadata");
        assert!(rb.members.is_empty());
        assert_eq!(ra.protocol_name.as_deref(), Some("range"));
        let sb = h.sync(sync_request("g", 1, &b, &[]));
        assert!(h.parked(sb), "a follower waits for the leader's assignment");
        let sa = h.sync(sync_request("g", 1, &a, &[(&a, b"A"), (&b, b"B")]));
        assert_eq!(&h.synced(sa).assignment[..], b"A");
        assert_eq!(&h.synced(sb).assignment[..], b"B");
        assert_eq!(h.groups.state_of("g"), Some(GroupState::Stable));
        (h, a, b, 1)
    }

    #[test]
    fn two_members_form_a_generation_after_the_initial_delay() {
        let (mut h, a, b, generation) = stable_pair();
        assert_eq!(h.heartbeat("g", generation, &a), ErrorCode::None);
        assert_eq!(h.heartbeat("g", generation, &b), ErrorCode::None);
        let described = h.groups.describe("g");
        assert_eq!(described.state, GroupState::Stable);
        assert_eq!(described.protocol_data, "range");
        assert_eq!(described.members.len(), 2);
        let records = h.groups.take_records();
        let last = records.last();
        assert!(matches!(last, Some(Record::Group { value: Some(v), .. }) if v.generation == 1));
    }

    #[test]
    fn a_classic_group_at_its_max_size_refuses_a_new_member_and_drops_a_late_one() {
        let (mut h, a, b, generation) = stable_pair();
        h.groups.config_mut().classic_max_size = 2;
        // Stable with 2 members: a new member is refused, and nothing changes.
        let c = h.join(join_request("g", "", "c", &["range"]));
        let refused = h.joined(c);
        assert_eq!(refused.error_code, ErrorCode::GroupMaxSizeReached);
        assert_eq!(refused.member_id, UNKNOWN_MEMBER_ID);
        assert_eq!(h.groups.state_of("g"), Some(GroupState::Stable));
        assert_eq!(h.heartbeat("g", generation, &b), ErrorCode::None);
        // A member's rejoin starts a rebalance; while fewer than 2 have rejoined, a new
        // member is taken, and then the member that had not rejoined yet is the one too many.
        let ja = h.join(join_request("g", &a, "a", &["range"]));
        assert_eq!(h.groups.state_of("g"), Some(GroupState::PreparingRebalance));
        let c = h.join_dynamic("g", "c");
        let jc = h.join(join_request("g", &c, "c", &["range"]));
        let jb = h.join(join_request("g", &b, "b", &["range"]));
        let late = h.joined(jb);
        assert_eq!(late.error_code, ErrorCode::GroupMaxSizeReached);
        // Everyone left has rejoined: the generation completes with a and c.
        let ra = h.joined(ja);
        assert_eq!(ra.generation_id, generation + 1);
        assert_eq!(ra.members.len(), 2);
        assert_eq!(h.joined(jc).generation_id, generation + 1);
        assert_eq!(h.heartbeat("g", generation + 1, &b), ErrorCode::UnknownMemberId);
        // Below the size again (b is gone, a leaves), a new member is taken.
        h.groups.leave(h.now, "g", vec![LeaveMember { member_id: a, group_instance_id: None }]);
        let d = h.join(join_request("g", "", "d", &["range"]));
        assert_eq!(h.joined(d).error_code, ErrorCode::MemberIdRequired);
    }

    #[test]
    fn a_group_loaded_over_a_lowered_max_size_rebalances_down_to_it() {
        let (mut h, a, b, generation) = stable_pair();
        let records = h.groups.snapshot();
        // A restart with group.max.size 1.
        let config = GroupConfig { classic_max_size: 1, ..h.groups.config().clone() };
        h.groups = Groups::new(config);
        for record in records {
            h.groups.replay(h.now, record);
        }
        h.groups.finish_load(h.now);
        assert_eq!(h.groups.state_of("g"), Some(GroupState::PreparingRebalance));
        assert_eq!(h.heartbeat("g", generation, &b), ErrorCode::RebalanceInProgress);
        let ja = h.join(join_request("g", &a, "a", &["range"]));
        let jb = h.join(join_request("g", &b, "b", &["range"]));
        assert_eq!(h.joined(jb).error_code, ErrorCode::GroupMaxSizeReached);
        let ra = h.joined(ja);
        assert_eq!((ra.generation_id, ra.members.len()), (generation + 1, 1));
    }

    #[test]
    fn the_initial_delay_extends_while_members_keep_arriving() {
        let mut h = Harness::new();
        let a = h.join_dynamic("g", "a");
        let ja = h.join(join_request("g", &a, "a", &["range"]));
        h.advance(i64::from(DELAY_MS) - 10);
        let b = h.join_dynamic("g", "b");
        let jb = h.join(join_request("g", &b, "b", &["range"]));
        h.advance(10);
        assert!(h.parked(ja) && h.parked(jb), "a member arrived during the delay: wait again");
        h.advance(i64::from(DELAY_MS));
        assert_eq!(h.joined(ja).generation_id, 1);
        assert_eq!(h.joined(jb).generation_id, 1);
    }

    #[test]
    fn the_protocol_is_one_every_member_supports() {
        let mut h = Harness::new();
        let a = h.join_dynamic("g", "a");
        let b = h.join_dynamic("g", "b");
        let ja = h.join(join_request("g", &a, "a", &["range", "roundrobin"]));
        let jb = h.join(join_request("g", &b, "b", &["roundrobin"]));
        let c = h.join(join_request("g", "", "c", &["sticky"]));
        assert_eq!(h.joined(c).error_code, ErrorCode::InconsistentGroupProtocol);
        h.advance(i64::from(DELAY_MS));
        h.advance(i64::from(DELAY_MS));
        assert_eq!(h.joined(ja).protocol_name.as_deref(), Some("roundrobin"));
        assert_eq!(h.joined(jb).protocol_name.as_deref(), Some("roundrobin"));
        let mut empty_type = join_request("other", "", "x", &["range"]);
        empty_type.protocol_type = String::new();
        let x = h.join(empty_type);
        assert_eq!(h.joined(x).error_code, ErrorCode::InconsistentGroupProtocol);
    }

    #[test]
    fn a_silent_member_is_removed_after_its_session_timeout() {
        let (mut h, a, b, generation) = stable_pair();
        h.advance(i64::from(SESSION_MS) / 2);
        assert_eq!(h.heartbeat("g", generation, &a), ErrorCode::None);
        h.advance(i64::from(SESSION_MS) / 2 - 1);
        assert_eq!(h.groups.state_of("g"), Some(GroupState::Stable), "b still within its session");
        h.advance(1);
        assert_eq!(h.groups.state_of("g"), Some(GroupState::PreparingRebalance));
        assert_eq!(h.heartbeat("g", generation, &b), ErrorCode::UnknownMemberId);
        assert_eq!(h.heartbeat("g", generation, &a), ErrorCode::RebalanceInProgress);
        let ja = h.join(join_request("g", &a, "a", &["range"]));
        let answer = h.joined(ja);
        assert_eq!(answer.generation_id, generation + 1, "the only member rejoined: done");
        assert_eq!(answer.members.len(), 1);
    }

    #[test]
    fn a_member_that_does_not_rejoin_is_dropped_at_the_rebalance_timeout() {
        let (mut h, a, b, generation) = stable_pair();
        let c = h.join_dynamic("g", "c");
        let jc = h.join(join_request("g", &c, "c", &["range"]));
        assert_eq!(h.heartbeat("g", generation, &a), ErrorCode::RebalanceInProgress);
        let ja = h.join(join_request("g", &a, "a", &["range"]));
        // b keeps heartbeating but never rejoins.
        for _ in 0..(REBALANCE_MS / 5_000) {
            h.advance(5_000);
            if h.parked(ja) {
                assert_eq!(h.heartbeat("g", generation, &b), ErrorCode::RebalanceInProgress);
            }
        }
        let answer = h.joined(ja);
        assert_eq!(answer.generation_id, generation + 1);
        assert_eq!(answer.members.len(), 2, "a and c, not b");
        assert_eq!(h.joined(jc).leader, a);
        assert_eq!(h.heartbeat("g", generation + 1, &b), ErrorCode::UnknownMemberId);
    }

    #[test]
    fn members_that_never_sync_are_removed_at_the_rebalance_timeout() {
        let (mut h, a, b, generation) = stable_pair();
        let ja = h.join(join_request("g", &a, "a", &["range"]));
        let jb = h.join(join_request("g", &b, "b", &["range"]));
        assert_eq!(h.joined(ja).generation_id, generation + 1);
        assert_eq!(h.joined(jb).generation_id, generation + 1);
        let sa = h.sync(sync_request("g", generation + 1, &a, &[(&a, b"A"), (&b, b"B")]));
        assert_eq!(&h.synced(sa).assignment[..], b"A");
        // Both stay alive, but b never sends its SyncGroup.
        for _ in 0..(REBALANCE_MS / 5_000) {
            assert_eq!(h.groups.state_of("g"), Some(GroupState::Stable));
            assert_eq!(h.heartbeat("g", generation + 1, &a), ErrorCode::None);
            assert_eq!(h.heartbeat("g", generation + 1, &b), ErrorCode::None);
            h.advance(5_000);
        }
        assert_eq!(h.groups.state_of("g"), Some(GroupState::PreparingRebalance), "b never synced");
        assert_eq!(h.heartbeat("g", generation + 1, &b), ErrorCode::UnknownMemberId);
        assert_eq!(h.heartbeat("g", generation + 1, &a), ErrorCode::RebalanceInProgress);
    }

    #[test]
    fn stale_generations_and_strangers_get_kafkas_errors() {
        let (mut h, a, b, generation) = stable_pair();
        assert_eq!(h.heartbeat("g", generation + 5, &a), ErrorCode::IllegalGeneration);
        assert_eq!(h.heartbeat("g", generation, "nobody"), ErrorCode::UnknownMemberId);
        assert_eq!(h.heartbeat("nogroup", generation, &a), ErrorCode::UnknownMemberId);
        let s = h.sync(sync_request("g", generation + 1, &b, &[]));
        assert_eq!(h.synced(s).error_code, ErrorCode::IllegalGeneration);
        let s = h.sync(sync_request("nogroup", 1, &b, &[]));
        assert_eq!(h.synced(s).error_code, ErrorCode::UnknownMemberId);
        assert_eq!(h.commit("g", generation, "nobody", 5), Err(ErrorCode::UnknownMemberId));
        assert_eq!(h.commit("g", generation + 1, &a, 5), Err(ErrorCode::IllegalGeneration));
        assert_eq!(h.commit("g", -1, "", 5), Err(ErrorCode::UnknownMemberId), "group not empty");
        assert_eq!(h.commit("nogroup", 1, &a, 5), Err(ErrorCode::GroupIdNotFound));
        let j = h.join(join_request("g", "made-up", "z", &["range"]));
        assert_eq!(h.joined(j).error_code, ErrorCode::UnknownMemberId);
        assert_eq!(h.commit("g", generation, &a, 5), Ok(vec![ErrorCode::None]));
        assert_eq!(h.groups.state_of("g"), Some(GroupState::Stable), "nothing changed");
    }

    #[test]
    fn old_offset_commit_versions_say_illegal_generation_for_an_unknown_group() {
        let mut h = Harness::new();
        let req = CommitRequest {
            group_id: "nogroup".into(),
            generation_id: 3,
            member_id: "m".into(),
            group_instance_id: None,
            retention_time_ms: -1,
            api_version: 8,
            partitions: Vec::new(),
        };
        assert_eq!(h.groups.commit_offsets(h.now, req), Err(ErrorCode::IllegalGeneration));
        assert!(!h.groups.contains("nogroup"));
    }

    #[test]
    fn commits_during_completing_rebalance_are_refused() {
        let (mut h, a, b, generation) = stable_pair();
        let ja = h.join(join_request("g", &a, "a", &["range"]));
        let jb = h.join(join_request("g", &b, "b", &["range"]));
        let next = h.joined(ja).generation_id;
        h.joined(jb);
        assert_eq!(next, generation + 1);
        assert_eq!(h.commit("g", next, &a, 1), Err(ErrorCode::RebalanceInProgress));
    }

    fn txn_commit(
        group: &str,
        producer_epoch: i16,
        generation: i32,
        member: &str,
        offset: i64,
    ) -> TxnCommitRequest {
        TxnCommitRequest {
            group_id: group.into(),
            producer_id: ProducerId(7),
            producer_epoch: ProducerEpoch(producer_epoch),
            generation_id: generation,
            member_id: member.into(),
            group_instance_id: None,
            partitions: vec![CommitPartition {
                topic: "t".into(),
                partition: 0,
                offset: Offset(offset),
                leader_epoch: LeaderEpoch::NONE,
                metadata: None,
            }],
        }
    }

    fn committed(groups: &Groups, group: &str) -> Offset {
        let wanted = Some(vec![("t".to_string(), vec![0])]);
        groups.fetch_offsets(group, wanted)[0].offset
    }

    #[test]
    fn transactional_offsets_wait_for_the_marker_and_an_abort_drops_them() {
        let (mut h, a, b, generation) = stable_pair();
        let _ = h.groups.take_records();
        let now = h.now;
        let codes = h.groups.txn_commit_offsets(now, txn_commit("g", 0, generation, &a, 10));
        assert_eq!(codes, Ok(vec![ErrorCode::None]));
        let records = h.groups.take_records();
        assert!(matches!(&records[..], [Record::TxnOffset { producer_id: ProducerId(7), .. }]));
        assert_eq!(committed(&h.groups, "g"), Offset::NONE, "pending, not committed");
        assert_eq!(h.groups.pending_txn_offsets(), 1);
        let mut stable = h.groups.fetch_offsets("g", Some(vec![("t".to_string(), vec![0, 1])]));
        h.groups.mark_unstable("g", &mut stable);
        assert_eq!(stable[0].error_code, ErrorCode::UnstableOffsetCommit);
        assert_eq!(stable[1].error_code, ErrorCode::None, "no transaction holds partition 1");
        assert_eq!(h.groups.complete_txn(now, ProducerId(7), TxnOutcome::Commit, |g| g == "g"), 1);
        assert_eq!(committed(&h.groups, "g"), Offset(10));
        assert!(h.groups.take_records().is_empty(), "the marker is the record");
        let mut stable = h.groups.fetch_offsets("g", None);
        h.groups.mark_unstable("g", &mut stable);
        assert_eq!(stable[0].error_code, ErrorCode::None);
        // The next transaction of the producer aborts: its offset never counts.
        let codes = h.groups.txn_commit_offsets(now, txn_commit("g", 0, generation, &b, 20));
        assert_eq!(codes, Ok(vec![ErrorCode::None]));
        assert_eq!(h.groups.complete_txn(now, ProducerId(7), TxnOutcome::Abort, |_| true), 0);
        assert_eq!(committed(&h.groups, "g"), Offset(10));
        assert_eq!(h.groups.pending_txn_offsets(), 0);
    }

    #[test]
    fn transactional_commits_are_checked_as_kafka_checks_them() {
        let (mut h, a, _b, generation) = stable_pair();
        let now = h.now;
        let check = |h: &mut Harness, req| h.groups.txn_commit_offsets(now, req);
        assert_eq!(
            check(&mut h, txn_commit("g", 0, generation + 1, &a, 1)),
            Err(ErrorCode::IllegalGeneration)
        );
        assert_eq!(
            check(&mut h, txn_commit("g", 0, generation, "stranger", 1)),
            Err(ErrorCode::UnknownMemberId)
        );
        assert_eq!(
            check(&mut h, txn_commit("nothing", 0, 3, "", 1)),
            Err(ErrorCode::IllegalGeneration),
            "an unknown group with a generation"
        );
        assert_eq!(check(&mut h, txn_commit("simple", 0, -1, "", 1)), Ok(vec![ErrorCode::None]));
        // A newer epoch of the producer is taken; the older one is fenced from then on.
        assert_eq!(check(&mut h, txn_commit("g", 2, generation, &a, 5)), Ok(vec![ErrorCode::None]));
        assert_eq!(
            check(&mut h, txn_commit("g", 1, generation, &a, 6)),
            Err(ErrorCode::InvalidProducerEpoch)
        );
        // During a rebalance a transactional commit of the current generation is still taken.
        let ja = h.join(join_request("g", &a, "a", &["range"]));
        assert!(h.parked(ja));
        assert_eq!(check(&mut h, txn_commit("g", 2, generation, &a, 7)), Ok(vec![ErrorCode::None]));
    }

    #[test]
    fn replay_and_snapshots_restore_pending_transactional_offsets() {
        let (mut h, a, _b, generation) = stable_pair();
        let now = h.now;
        let mut log = h.groups.snapshot();
        h.groups.txn_commit_offsets(now, txn_commit("g", 0, generation, &a, 10)).ok();
        log.extend(h.groups.take_records());
        // Replayed up to here: pending, not committed.
        let mut replayed = Groups::new(GroupConfig::default());
        for record in log.clone() {
            replayed.replay(now, record);
        }
        assert_eq!(replayed.pending_txn_offsets(), 1);
        assert_eq!(committed(&replayed, "g"), Offset::NONE);
        // A snapshot restates the pending offset after the group's reset.
        let snapshot = replayed.snapshot();
        assert!(matches!(snapshot.last(), Some(Record::TxnOffset { .. })));
        let mut again = Groups::new(GroupConfig::default());
        for record in snapshot {
            again.replay(now, record);
        }
        assert_eq!(again.pending_txn_offsets(), 1);
        // The marker, in log order, commits it.
        let marker = Record::Marker {
            partition: 0,
            producer_id: ProducerId(7),
            producer_epoch: ProducerEpoch(0),
            outcome: TxnOutcome::Commit,
        };
        again.replay(now, marker);
        assert_eq!(committed(&again, "g"), Offset(10));
        assert_eq!(again.pending_txn_offsets(), 0);
        // Unloading the partition forgets what is pending there.
        replayed.unload(|g| g == "g");
        assert_eq!(replayed.pending_txn_offsets(), 0);
    }

    fn commit_marker() -> Record {
        Record::Marker {
            partition: 0,
            producer_id: ProducerId(7),
            producer_epoch: ProducerEpoch(0),
            outcome: TxnOutcome::Commit,
        }
    }

    #[test]
    fn a_plain_commit_after_a_transactions_offset_stays_when_the_transaction_commits() {
        let (mut h, _a, _b, _generation) = stable_pair();
        let now = h.now;
        let mut log = h.groups.snapshot();
        let txn = h.groups.txn_commit_offsets(now, txn_commit("s", 0, -1, "", 5));
        assert_eq!(txn, Ok(vec![ErrorCode::None]));
        assert_eq!(h.commit("s", -1, "", 9), Ok(vec![ErrorCode::None]));
        log.extend(h.groups.take_records());
        let mut replayed = Groups::new(GroupConfig::default());
        for record in log {
            replayed.replay(now, record);
        }
        // A snapshot taken while the transaction is open keeps the two in log order.
        let mut again = Groups::new(GroupConfig::default());
        for record in replayed.snapshot() {
            again.replay(now, record);
        }
        assert_eq!(h.groups.complete_txn(now, ProducerId(7), TxnOutcome::Commit, |_| true), 0);
        assert_eq!(committed(&h.groups, "s"), Offset(9), "the later plain commit stays");
        for groups in [&mut replayed, &mut again] {
            assert_eq!(groups.pending_txn_offsets(), 1);
            groups.replay(now, commit_marker());
            assert_eq!(committed(groups, "s"), Offset(9));
            assert_eq!(groups.pending_txn_offsets(), 0);
        }
        // The other order: the transaction's offset is the later record, and wins.
        assert_eq!(h.commit("s", -1, "", 11), Ok(vec![ErrorCode::None]));
        let txn = h.groups.txn_commit_offsets(now, txn_commit("s", 0, -1, "", 12));
        assert_eq!(txn, Ok(vec![ErrorCode::None]));
        assert_eq!(h.groups.complete_txn(now, ProducerId(7), TxnOutcome::Commit, |_| true), 1);
        assert_eq!(committed(&h.groups, "s"), Offset(12));
    }

    #[test]
    fn deleting_a_group_drops_its_pending_offsets_and_expiry_waits_for_them() {
        let (mut h, _a, _b, _generation) = stable_pair();
        let now = h.now;
        // DeleteGroups of a group whose only offset is pending: a tombstone for it, and a
        // later commit of the transaction brings nothing back (Kafka's deleteAllOffsets).
        let txn = h.groups.txn_commit_offsets(now, txn_commit("s", 0, -1, "", 5));
        assert_eq!(txn, Ok(vec![ErrorCode::None]));
        let mut log = h.groups.take_records();
        assert_eq!(h.groups.delete_group("s"), ErrorCode::None);
        let records = h.groups.take_records();
        assert!(
            matches!(
                &records[..],
                [
                    Record::Offset { value: None, partition: 0, .. },
                    Record::Group { value: None, .. }
                ]
            ),
            "{records:?}"
        );
        log.extend(records);
        assert_eq!(h.groups.complete_txn(now, ProducerId(7), TxnOutcome::Commit, |_| true), 0);
        assert_eq!(committed(&h.groups, "s"), Offset::NONE);
        let mut replayed = Groups::new(GroupConfig::default());
        for record in log {
            replayed.replay(now, record);
        }
        replayed.replay(now, commit_marker());
        assert_eq!(committed(&replayed, "s"), Offset::NONE);
        // Expiry: an expired offset stays while a transaction holds its partition, and a
        // group whose only offset is pending stays too (Kafka's cleanupExpiredOffsets).
        assert_eq!(h.commit("e", -1, "", 3), Ok(vec![ErrorCode::None]));
        let txn = h.groups.txn_commit_offsets(now, txn_commit("e", 0, -1, "", 4));
        assert_eq!(txn, Ok(vec![ErrorCode::None]));
        let mut pending_only = txn_commit("p", 0, -1, "", 8);
        pending_only.partitions[0].partition = 1;
        assert_eq!(h.groups.txn_commit_offsets(now, pending_only), Ok(vec![ErrorCode::None]));
        let later = now + h.groups.config.offsets_retention_ms + 1;
        assert_eq!(h.groups.expire_offsets(later), 0);
        assert_eq!(committed(&h.groups, "e"), Offset(3));
        assert!(h.groups.groups.contains_key("p"));
        assert_eq!(h.groups.complete_txn(now, ProducerId(7), TxnOutcome::Abort, |_| true), 0);
        assert_eq!(h.groups.expire_offsets(later), 1);
        assert_eq!(committed(&h.groups, "e"), Offset::NONE);
        assert!(!h.groups.groups.contains_key("p"));
    }

    #[test]
    fn only_the_leaders_assignment_counts() {
        let (mut h, a, b, generation) = stable_pair();
        let ja = h.join(join_request("g", &a, "a", &["range"]));
        let jb = h.join(join_request("g", &b, "b", &["range"]));
        h.joined(ja);
        h.joined(jb);
        let next = generation + 1;
        let sb = h.sync(sync_request("g", next, &b, &[(&a, b"bogus"), (&b, b"bogus")]));
        assert!(h.parked(sb));
        let sa = h.sync(sync_request("g", next, &a, &[(&a, b"A2"), (&b, b"B2")]));
        assert_eq!(&h.synced(sa).assignment[..], b"A2");
        assert_eq!(&h.synced(sb).assignment[..], b"B2");
    }

    #[test]
    fn a_static_member_rejoins_without_a_rebalance_and_fences_its_old_self() {
        let mut h = Harness::new();
        let mut req = join_request("g", "", "a", &["range"]);
        req.group_instance_id = Some("instance-1".into());
        let j = h.join(req.clone());
        assert!(h.parked(j), "static members need no MEMBER_ID_REQUIRED round");
        h.advance(i64::from(DELAY_MS));
        let first = h.joined(j);
        let s = h.sync(SyncRequest {
            group_instance_id: Some("instance-1".into()),
            ..sync_request("g", 1, &first.member_id, &[(&first.member_id, b"A")])
        });
        assert_eq!(&h.synced(s).assignment[..], b"A");
        // The process restarts: same instance id, no member id.
        let j = h.join(req.clone());
        let second = h.joined(j);
        assert_eq!(second.error_code, ErrorCode::None);
        assert_eq!(second.generation_id, 1, "no new generation");
        assert_ne!(second.member_id, first.member_id);
        assert_eq!(second.leader, first.member_id, "old clients must not think they lead");
        assert_eq!(h.groups.state_of("g"), Some(GroupState::Stable));
        let s = h.sync(SyncRequest {
            group_instance_id: Some("instance-1".into()),
            ..sync_request("g", 1, &second.member_id, &[])
        });
        assert_eq!(&h.synced(s).assignment[..], b"A", "it keeps its assignment");
        let old = HeartbeatRequest {
            group_id: "g".into(),
            generation_id: 1,
            member_id: first.member_id.clone(),
            group_instance_id: Some("instance-1".into()),
        };
        assert_eq!(h.groups.heartbeat(h.now, old), ErrorCode::FencedInstanceId);
        // With JoinGroup v9 the leader is told it may skip the assignment.
        req.supports_skip_assignment = true;
        let j = h.join(req);
        let third = h.joined(j);
        assert!(third.skip_assignment);
        assert_eq!(third.leader, third.member_id);
    }

    #[test]
    fn a_static_member_survives_a_rebalance_it_misses() {
        let (mut h, a, _b, generation) = stable_pair();
        let mut req = join_request("g", "", "s", &["range"]);
        req.group_instance_id = Some("s1".into());
        let js = h.join(req);
        let ja = h.join(join_request("g", &a, "a", &["range"]));
        h.advance(i64::from(REBALANCE_MS));
        let s = h.joined(js);
        assert_eq!(h.joined(ja).generation_id, generation + 1);
        assert_eq!(s.generation_id, generation + 1);
        // Next rebalance: the static member does not rejoin in time but is not dropped.
        let ja = h.join(join_request("g", &a, "a", &["range"]));
        h.advance(i64::from(REBALANCE_MS));
        let answer = h.joined(ja);
        assert_eq!(answer.members.len(), 2, "static member kept: {answer:?}");
    }

    #[test]
    fn a_pending_member_that_never_returns_expires() {
        let mut h = Harness::new();
        let a = h.join_dynamic("g", "a");
        h.advance(i64::from(SESSION_MS));
        let j = h.join(join_request("g", &a, "a", &["range"]));
        let answer = h.joined(j);
        assert_eq!(answer.error_code, ErrorCode::UnknownMemberId);
    }

    #[test]
    fn leave_removes_members_one_by_one_and_rebalances() {
        let (mut h, a, b, generation) = stable_pair();
        let leaving = vec![
            LeaveMember { member_id: b.clone(), group_instance_id: None },
            LeaveMember { member_id: "stranger".into(), group_instance_id: None },
        ];
        let answer = h.groups.leave(h.now, "g", leaving);
        assert_eq!(answer.error_code, ErrorCode::None);
        assert_eq!(answer.members[0].1, ErrorCode::None);
        assert_eq!(answer.members[1].1, ErrorCode::UnknownMemberId);
        assert_eq!(h.groups.state_of("g"), Some(GroupState::PreparingRebalance));
        let ja = h.join(join_request("g", &a, "a", &["range"]));
        assert_eq!(h.joined(ja).generation_id, generation + 1);
        let answer = h.groups.leave(h.now, "nogroup", vec![]);
        assert_eq!(answer.error_code, ErrorCode::UnknownMemberId);
        // The last member leaves: the group is empty and says so in a record.
        let answer =
            h.groups.leave(h.now, "g", vec![LeaveMember { member_id: a, group_instance_id: None }]);
        assert_eq!(answer.members[0].1, ErrorCode::None);
        assert_eq!(h.groups.state_of("g"), Some(GroupState::Empty));
    }

    #[test]
    fn offsets_commit_fetch_and_survive_a_replay() {
        let (mut h, a, _b, generation) = stable_pair();
        assert_eq!(h.commit("g", generation, &a, 42), Ok(vec![ErrorCode::None]));
        assert_eq!(h.commit("simple", -1, "", 7), Ok(vec![ErrorCode::None]));
        let fetched = h.groups.fetch_offsets("g", Some(vec![("t".into(), vec![0, 1])]));
        assert_eq!(fetched[0].offset, Offset(42));
        assert_eq!(fetched[0].leader_epoch, LeaderEpoch(3));
        assert_eq!(fetched[0].metadata, "meta");
        assert_eq!(fetched[1].offset, Offset::NONE);
        assert_eq!(h.groups.fetch_offsets("simple", None).len(), 1);
        assert!(h.groups.fetch_offsets("none", None).is_empty());
        // Replaying every record written so far rebuilds the same state.
        let records = h.groups.take_records();
        let mut copy = Groups::new(GroupConfig::default());
        for record in records {
            copy.replay(h.now, record);
        }
        copy.finish_load(h.now);
        assert_eq!(copy.fetch_offsets("g", None), h.groups.fetch_offsets("g", None));
        assert_eq!(copy.fetch_offsets("simple", None), h.groups.fetch_offsets("simple", None));
        assert_eq!(copy.describe("g"), h.groups.describe("g"));
        // The loaded members must heartbeat, or they expire.
        assert_eq!(copy.pending_timers(), 2);
        // A snapshot restates it all.
        let mut again = Groups::new(GroupConfig::default());
        for record in copy.snapshot() {
            again.replay(h.now, record);
        }
        assert_eq!(again.fetch_offsets("g", None), h.groups.fetch_offsets("g", None));
        assert_eq!(again.list(&[]), copy.list(&[]));
    }

    #[test]
    fn metadata_over_the_limit_is_refused_per_partition() {
        let mut h = Harness::new();
        let req = CommitRequest {
            group_id: "g".into(),
            generation_id: -1,
            member_id: String::new(),
            group_instance_id: None,
            retention_time_ms: -1,
            api_version: 9,
            partitions: vec![
                CommitPartition {
                    topic: "t".into(),
                    partition: 0,
                    offset: Offset(1),
                    leader_epoch: LeaderEpoch::NONE,
                    metadata: Some("x".repeat(4097)),
                },
                CommitPartition {
                    topic: "t".into(),
                    partition: 1,
                    offset: Offset(1),
                    leader_epoch: LeaderEpoch::NONE,
                    metadata: None,
                },
            ],
        };
        let codes = h.groups.commit_offsets(h.now, req).expect("accepted");
        assert_eq!(codes, vec![ErrorCode::OffsetMetadataTooLarge, ErrorCode::None]);
        assert_eq!(h.groups.take_records().len(), 1);
    }

    #[test]
    fn only_empty_groups_can_be_deleted_and_heartbeats_then_fail() {
        let (mut h, a, b, generation) = stable_pair();
        assert_eq!(h.groups.delete_group("g"), ErrorCode::NonEmptyGroup);
        assert_eq!(h.groups.delete_group("nogroup"), ErrorCode::GroupIdNotFound);
        h.commit("g", generation, &a, 9).expect("commit");
        let everyone = vec![
            LeaveMember { member_id: a.clone(), group_instance_id: None },
            LeaveMember { member_id: b, group_instance_id: None },
        ];
        h.groups.leave(h.now, "g", everyone);
        assert_eq!(h.groups.state_of("g"), Some(GroupState::Empty));
        h.groups.take_records();
        assert_eq!(h.groups.delete_group("g"), ErrorCode::None);
        let records = h.groups.take_records();
        assert_eq!(records.len(), 2, "an offset tombstone and a group tombstone: {records:?}");
        assert!(!h.groups.contains("g"));
        assert_eq!(h.heartbeat("g", generation, &a), ErrorCode::UnknownMemberId);
        assert_eq!(h.groups.describe("g").state, GroupState::Dead);
    }

    #[test]
    fn a_deleted_topics_offsets_leave_every_group_pending_ones_too() {
        let (mut h, a, _b, generation) = stable_pair();
        h.commit("g", generation, &a, 9).expect("commit");
        h.commit("simple", -1, "", 7).expect("commit");
        let other_topic = CommitRequest {
            group_id: "simple".into(),
            generation_id: -1,
            member_id: String::new(),
            group_instance_id: None,
            retention_time_ms: -1,
            api_version: 9,
            partitions: vec![CommitPartition {
                topic: "u".into(),
                partition: 3,
                offset: Offset(5),
                leader_epoch: LeaderEpoch::NONE,
                metadata: None,
            }],
        };
        h.groups.commit_offsets(h.now, other_topic).expect("accepted");
        let pending = h.groups.txn_commit_offsets(h.now, txn_commit("txn", 0, -1, "", 4));
        assert_eq!(pending, Ok(vec![ErrorCode::None]));
        let _ = h.groups.take_records();

        assert_eq!(h.groups.forget_topic("t"), 3, "two committed, one pending");
        let records = h.groups.take_records();
        assert_eq!(records.len(), 3);
        assert!(records.iter().all(|r| matches!(r,
            Record::Offset { topic, partition: 0, value: None, .. } if topic == "t")));
        assert_eq!(committed(&h.groups, "g"), Offset::NONE);
        assert_eq!(committed(&h.groups, "simple"), Offset::NONE);
        let kept = h.groups.fetch_offsets("simple", Some(vec![("u".to_string(), vec![3])]));
        assert_eq!(kept[0].offset, Offset(5), "another topic's offset stays");
        assert_eq!(h.groups.pending_txn_offsets(), 0);
        // The transaction commits later: its offset of the deleted topic does not come back.
        h.groups.complete_txn(h.now, ProducerId(7), TxnOutcome::Commit, |_| true);
        assert_eq!(committed(&h.groups, "txn"), Offset::NONE);
        assert_eq!(h.groups.forget_topic("t"), 0, "nothing left to forget");
        assert!(h.groups.take_records().is_empty());
    }

    #[test]
    fn offset_delete_refuses_topics_a_live_group_reads() {
        let (mut h, a, _b, generation) = stable_pair();
        h.commit("g", generation, &a, 9).expect("commit");
        let answer =
            h.groups.delete_offsets("g", vec![("t".into(), vec![0]), ("u".into(), vec![0])]);
        let answer = answer.expect("consumer group");
        assert_eq!(answer[0].1, vec![(0, ErrorCode::GroupSubscribedToTopic)]);
        assert_eq!(answer[1].1, vec![(0, ErrorCode::None)]);
        assert_eq!(h.groups.delete_offsets("nogroup", vec![]), Err(ErrorCode::GroupIdNotFound));
    }

    #[test]
    fn retention_expires_offsets_of_empty_groups_only() {
        let (mut h, a, _b, generation) = stable_pair();
        h.commit("g", generation, &a, 1).expect("commit");
        h.commit("simple", -1, "", 1).expect("commit");
        let retention = h.groups.config().offsets_retention_ms;
        h.now += retention;
        // Keep "g" alive (its members heartbeat): only the simple group's offset expires.
        let expired = h.groups.expire_offsets(h.now);
        assert_eq!(expired, 1);
        assert!(!h.groups.contains("simple"));
        assert!(h.groups.contains("g"));
        assert_eq!(h.groups.fetch_offsets("g", None).len(), 1);
    }

    #[test]
    fn list_filters_by_state_case_insensitively() {
        let (mut h, _a, _b, _generation) = stable_pair();
        h.commit("simple", -1, "", 1).expect("commit");
        let all = h.groups.list(&[]);
        assert_eq!(
            all.iter().map(|g| g.group_id.as_str()).collect::<Vec<_>>(),
            vec!["g", "simple"]
        );
        let stable = h.groups.list(&["stable".into()]);
        assert_eq!(stable.len(), 1);
        assert_eq!(stable[0].protocol_type, "consumer");
        assert_eq!(h.groups.list(&["Empty".into()])[0].group_id, "simple");
        assert!(h.groups.list(&["Dead".into()]).is_empty());
    }

    #[test]
    fn subscriptions_are_read_from_consumer_metadata() {
        assert_eq!(
            subscription_topics(&subscription(&["a", "bc"])),
            Some(vec!["a".into(), "bc".into()])
        );
        assert_eq!(subscription_topics(&[0, 1, 0]), None);
        assert_eq!(subscription_topics(&[0, 0, 0, 0, 0, 1, 0, 9, b'x']), None);
    }

    /// A rebalance nobody rejoins waits "another rebalance timeout"; with a negative one
    /// (JoinGroup takes any int32) that deadline is already past. The tick once looped on it
    /// forever, stalling the shard; now it comes back at the next tick.
    #[test]
    fn a_negative_rebalance_timeout_does_not_loop_the_tick() {
        let mut h = Harness::new();
        let static_join = |instance: &str, member: &str, rebalance_ms: i32| JoinRequest {
            group_instance_id: Some(instance.into()),
            rebalance_timeout_ms: rebalance_ms,
            ..join_request("g", member, instance, &["range"])
        };
        let static_sync =
            |instance: &str, generation: i32, member: &str, assign: &[(&str, &[u8])]| SyncRequest {
                group_instance_id: Some(instance.into()),
                ..sync_request("g", generation, member, assign)
            };
        let ja = h.join(static_join("ia", "", REBALANCE_MS));
        h.advance(i64::from(DELAY_MS));
        let a = h.joined(ja).member_id;
        let sa = h.sync(static_sync("ia", 1, &a, &[(&a, b"A")]));
        assert_eq!(h.synced(sa).error_code, ErrorCode::None);
        let jb = h.join(static_join("ib", "", -1));
        let ja = h.join(static_join("ia", &a, -1));
        let b = h.joined(jb).member_id;
        assert_eq!(h.joined(ja).generation_id, 2);
        let sb = h.sync(static_sync("ib", 2, &b, &[]));
        let sa = h.sync(static_sync("ia", 2, &a, &[(&a, b"A"), (&b, b"B")]));
        assert_eq!(h.synced(sa).error_code, ErrorCode::None);
        assert_eq!(h.synced(sb).error_code, ErrorCode::None);
        let leaving = LeaveMember { member_id: b, group_instance_id: Some("ib".into()) };
        assert_eq!(h.groups.leave(h.now, "g", vec![leaving]).members[0].1, ErrorCode::None);
        for _ in 0..3 {
            h.advance(100); // each returns: the past deadline waits for the next tick
        }
        assert_eq!(h.groups.state_of("g"), Some(GroupState::PreparingRebalance));
        let ja = h.join(static_join("ia", &a, -1));
        assert_eq!(h.joined(ja).generation_id, 3);
    }

    /// Random sequences of every request, with members, instance ids and protocols drawn
    /// from small pools so that they collide: nothing panics, every parked request is
    /// answered in the end, and a snapshot replays into the same offsets.
    #[test]
    fn random_requests_never_panic_and_every_parked_request_is_answered() {
        use rand::rngs::StdRng;
        use rand::{Rng, SeedableRng};

        let seed: u64 = std::env::var("SPATE_TEST_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(rand::random);
        let rounds: u32 =
            std::env::var("SPATE_TEST_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(200);
        println!("seed {seed}, {rounds} rounds (SPATE_TEST_SEED, SPATE_TEST_ROUNDS)");
        let mut rng = StdRng::seed_from_u64(seed);
        for _round in 0..rounds {
            let mut h = Harness::new();
            let mut known: Vec<String> = vec!["".into(), "ghost".into()];
            let mut parked: Vec<ReplyId> = Vec::new();
            let groups = ["g", "h"];
            let instances = [None, Some("i1"), Some("i2")];
            for _ in 0..60 {
                let group = groups[rng.gen_range(0..groups.len())];
                let member = known[rng.gen_range(0..known.len())].clone();
                let instance = instances[rng.gen_range(0..instances.len())].map(String::from);
                let generation = rng.gen_range(-1..4);
                match rng.gen_range(0..10) {
                    0..=2 => {
                        let names: &[&str] = match rng.gen_range(0..4) {
                            0 => &["range"],
                            1 => &["roundrobin", "range"],
                            2 => &["range", "range"],
                            _ => &[],
                        };
                        let mut req = join_request(group, &member, "c", names);
                        req.group_instance_id = instance;
                        req.require_known_member_id = rng.gen_bool(0.7);
                        req.supports_skip_assignment = rng.gen_bool(0.5);
                        if rng.gen_bool(0.1) {
                            req.protocol_type = "other".into();
                        }
                        req.rebalance_timeout_ms = match rng.gen_range(0..8) {
                            0 => i32::MIN,
                            1 => i32::MAX,
                            2 => -1,
                            _ => rng.gen_range(0..2 * REBALANCE_MS),
                        };
                        parked.push(h.join(req));
                    }
                    3..=4 => {
                        let others: Vec<(String, Bytes)> = known
                            .iter()
                            .filter(|_| rng.gen_bool(0.5))
                            .map(|m| (m.clone(), Bytes::from_static(b"A")))
                            .collect();
                        let mut req = sync_request(group, generation, &member, &[]);
                        req.assignments = others;
                        req.group_instance_id = instance;
                        parked.push(h.sync(req));
                    }
                    5 => {
                        let req = HeartbeatRequest {
                            group_id: group.into(),
                            generation_id: generation,
                            member_id: member,
                            group_instance_id: instance,
                        };
                        h.groups.heartbeat(h.now, req);
                    }
                    6 => {
                        let who = LeaveMember { member_id: member, group_instance_id: instance };
                        let again = who.clone();
                        h.groups.leave(h.now, group, vec![who, again]);
                    }
                    7 => {
                        let mut req = CommitRequest {
                            group_id: group.into(),
                            generation_id: generation,
                            member_id: member,
                            group_instance_id: instance,
                            retention_time_ms: [-1, 0, i64::MAX][rng.gen_range(0..3)],
                            api_version: rng.gen_range(0..10),
                            partitions: Vec::new(),
                        };
                        req.partitions.push(CommitPartition {
                            topic: "t".into(),
                            partition: rng.gen_range(0..3),
                            offset: Offset(rng.gen_range(-1..100)),
                            leader_epoch: LeaderEpoch::NONE,
                            metadata: None,
                        });
                        let _ = h.groups.commit_offsets(h.now, req);
                    }
                    8 => match rng.gen_range(0..5) {
                        4 => {
                            // A restart: the snapshot is replayed; parked requests are gone
                            // with their connections.
                            let records = h.groups.snapshot();
                            h.groups = Groups::new(h.groups.config().clone());
                            for record in records {
                                h.groups.replay(h.now, record);
                            }
                            h.groups.finish_load(h.now);
                            parked.clear();
                        }
                        0 => {
                            h.groups.delete_group(group);
                        }
                        1 => {
                            let _ = h.groups.delete_offsets(group, vec![("t".into(), vec![0])]);
                        }
                        2 => {
                            h.groups.expire_offsets(h.now + i64::from(rng.gen_range(0..2)));
                        }
                        _ => {
                            let _ = h.groups.describe(group);
                            let _ = h.groups.list(&[]);
                        }
                    },
                    _ => h.advance(rng.gen_range(0..i64::from(SESSION_MS))),
                }
                h.collect();
                for reply in h.replies.values() {
                    let id = match reply {
                        Reply::Join(join) => &join.member_id,
                        Reply::Sync(_) => continue,
                    };
                    if !id.is_empty() && !known.contains(id) {
                        known.push(id.clone());
                    }
                }
            }
            // Nobody talks any more: within the longest timeouts every request is answered.
            h.advance(i64::from(h.groups.config().new_member_join_timeout_ms));
            h.advance(i64::from(2 * REBALANCE_MS));
            h.advance(i64::from(2 * REBALANCE_MS));
            for id in &parked {
                assert!(!h.parked(*id), "seed {seed}: request {id} was never answered");
            }
            let mut replayed = Groups::new(GroupConfig::default());
            for record in h.groups.snapshot() {
                replayed.replay(h.now, record);
            }
            for group in groups {
                assert_eq!(
                    replayed.fetch_offsets(group, None),
                    h.groups.fetch_offsets(group, None),
                    "seed {seed}"
                );
            }
        }
    }
}
