//! KIP-848 consumer groups (the "consumer" group protocol) as a pure state machine: one
//! `ConsumerGroup` per group id, driven by ConsumerGroupHeartbeat, the session and revocation
//! timeouts, and read by ConsumerGroupDescribe, OffsetCommit and OffsetFetch. No I/O, no
//! clock: every call takes `now`; timers come out as commands (`TimerCmd`) that `state`
//! puts on its timing wheel, and a change sets `dirty` so that `state` writes the group's
//! record. This is a port of Kafka 4's `GroupMetadataManager.consumerGroupHeartbeat`,
//! `ConsumerGroup` and `CurrentAssignmentBuilder`; names follow Kafka's.
//!
//! Epochs. The group epoch moves when membership or subscriptions change (a member joins,
//! leaves or is fenced, a subscription or the subscribed topics' partition counts change).
//! When it passes the assignment epoch, the next heartbeat computes a new target assignment
//! (`assignor`) and the assignment epoch takes the group epoch. Each member then converges on
//! its target on its own heartbeats (reconciliation), one member at a time:
//!
//! ```text
//!                     target epoch moved                     owned no longer has the
//!   STABLE ───────────────────────────────▶ UNREVOKED ──────────────────────────────┐
//!     ▲  │ (partitions to revoke: the member keeps  (member epoch unchanged;         │
//!     │  │  only what it may keep, at its epoch)     rebalance timeout: fenced)      │
//!     │  │ (nothing to revoke, some partition                                        │
//!     │  │  still owned by another member)                                           ▼
//!     │  └──────────────────────────────────────▶ UNRELEASED ──(all released)──▶ recompute
//!     └──────────────── nothing to revoke, nothing unreleased: epoch = target epoch ──┘
//! ```
//!
//! A partition is owned by the member that has it assigned or pending revocation; it is given
//! to another member only once its owner's heartbeat reports it revoked (or the owner is gone).
//! So no partition is ever assigned to two members at once, which the tests check on every
//! step.
//!
//! Static members (`group.instance.id`): a leave with epoch -2 keeps the member, its epoch and
//! assignment until the session timeout; a new member with the same instance id at epoch 0
//! takes its place, its assignment and its target without moving the group epoch. A second
//! live member with the same instance id gets UNRELEASED_INSTANCE_ID.
//!
//! Regular expressions (SubscribedTopicRegex) are Kafka's RE2/J; Spate uses the `regex` crate,
//! which has the same syntax for what topic names need (classes, alternation, repetition,
//! anchors) and the same linear-time guarantee. It differs in: `\Q..\E` quoting (RE2/J has it,
//! `regex` does not), possessive quantifiers (neither), and `\pN`-style classes and flags
//! in a few spellings. A regex must match the whole topic name (Java's `matches()`). Regexes
//! are resolved when a member subscribes and again at most once per
//! `CONSUMER_REGEX_REFRESH_INTERVAL_MS` on a heartbeat, so a new matching topic is picked up
//! within that interval plus a heartbeat interval.
//!
//! Cost: a heartbeat that changes nothing is O(members' partitions) (the owner map is built
//! per reconciliation); a target assignment is computed once per group epoch.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use bytes::Bytes;

use crate::group::assignor::{self, AssignMember, Assignment, TopicId};
use crate::group::consumer_protocol::{self, NamedPartitions};
use crate::group::records::{
    ClassicMemberValue, ConsumerGroupValue, ConsumerMemberValue, StoredAssignment,
};
use crate::group::state::{Protocol, CONSUMER_PROTOCOL_TYPE};
use crate::model::settings::GroupConfig;
use crate::model::ErrorCode;

/// Member epoch of a member leaving the group for good.
pub const LEAVE_GROUP_MEMBER_EPOCH: i32 = -1;
/// Member epoch of a static member leaving for now (it may come back with its assignment).
pub const LEAVE_GROUP_STATIC_MEMBER_EPOCH: i32 = -2;

/// How often a heartbeat may re-resolve the group's regular expressions.
pub const CONSUMER_REGEX_REFRESH_INTERVAL_MS: i64 = 1_000;

/// What the pure machine needs of the topic catalog.
pub trait TopicView {
    /// The topic's id and partition count.
    fn lookup(&self, name: &str) -> Option<(TopicId, i32)>;
    /// The name of the topic with this id.
    fn name_of(&self, id: &TopicId) -> Option<String>;
    /// Every topic name (to resolve regular expressions).
    fn names(&self) -> Vec<String>;
}

/// A ConsumerGroupHeartbeat, as plain data.
#[derive(Debug, Clone, Default)]
pub struct ConsumerHeartbeat {
    pub group_id: String,
    pub member_id: String,
    pub member_epoch: i32,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    /// -1: unchanged.
    pub rebalance_timeout_ms: i32,
    /// None: unchanged.
    pub subscribed_topic_names: Option<Vec<String>>,
    /// None: unchanged; Some(""): no regex.
    pub subscribed_topic_regex: Option<String>,
    pub server_assignor: Option<String>,
    /// The partitions the member owns now; None: unchanged since the last heartbeat.
    pub owned: Option<Assignment>,
    pub client_id: String,
    pub client_host: String,
}

/// The answer to a ConsumerGroupHeartbeat (KIP-848) or a ShareGroupHeartbeat (KIP-932): the
/// two carry the same fields.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HeartbeatResponse {
    pub error_code: ErrorCode,
    pub error_message: Option<String>,
    pub member_id: String,
    pub member_epoch: i32,
    pub heartbeat_interval_ms: i32,
    /// The member's assignment, when it changed or the request was a full one.
    pub assignment: Option<Assignment>,
}

impl HeartbeatResponse {
    pub fn error(code: ErrorCode, message: impl Into<String>) -> HeartbeatResponse {
        HeartbeatResponse {
            error_code: code,
            error_message: Some(message.into()),
            ..HeartbeatResponse::default()
        }
    }
}

/// A consumer group as ConsumerGroupDescribe reports it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DescribedConsumerGroup {
    pub group_id: String,
    pub error_code: ErrorCode,
    pub error_message: Option<String>,
    pub state: &'static str,
    pub group_epoch: i32,
    pub assignment_epoch: i32,
    pub assignor: String,
    pub members: Vec<DescribedConsumerMember>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DescribedConsumerMember {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub member_epoch: i32,
    pub client_id: String,
    pub client_host: String,
    pub subscribed_topic_names: Vec<String>,
    pub subscribed_topic_regex: Option<String>,
    pub assignment: Assignment,
    pub target: Assignment,
    /// The member speaks the classic protocol (JoinGroup/SyncGroup) inside this group.
    pub classic: bool,
}

/// Reconciliation state of a member (Kafka's `MemberState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MemberState {
    #[default]
    Stable = 0,
    UnrevokedPartitions = 1,
    UnreleasedPartitions = 2,
}

impl MemberState {
    fn from_stored(code: i8) -> MemberState {
        match code {
            1 => MemberState::UnrevokedPartitions,
            2 => MemberState::UnreleasedPartitions,
            _ => MemberState::Stable,
        }
    }
}

/// A timer the group wants set or dropped; `state` keys it by (group, member, kind).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimerCmd {
    /// Fence the member if it sends no heartbeat until `deadline`.
    Session {
        member: String,
        deadline: i64,
    },
    /// Fence the member if it has not revoked its partitions by `deadline`.
    Revoke {
        member: String,
        deadline: i64,
    },
    CancelSession {
        member: String,
    },
    CancelRevoke {
        member: String,
    },
    /// A classic member told to rejoin must send JoinGroup by `deadline` (Kafka's
    /// consumer-group join timeout), else it is fenced.
    ClassicJoin {
        member: String,
        deadline: i64,
    },
    /// A classic member that joined must send SyncGroup by `deadline`, else it is fenced.
    ClassicSync {
        member: String,
        deadline: i64,
    },
    CancelClassicJoin {
        member: String,
    },
    CancelClassicSync {
        member: String,
    },
}

/// What a call did besides its answer.
#[derive(Debug, Default)]
pub struct Effects {
    pub timers: Vec<TimerCmd>,
    /// The group changed: its record must be written.
    pub dirty: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConsumerMember {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub rack_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub subscribed_topic_names: Vec<String>,
    pub subscribed_topic_regex: Option<String>,
    pub server_assignor: Option<String>,
    pub rebalance_timeout_ms: i32,
    pub member_epoch: i32,
    pub previous_member_epoch: i32,
    pub state: MemberState,
    pub assigned: Assignment,
    pub pending_revocation: Assignment,
    /// When the member must have revoked `pending_revocation` (UNREVOKED only).
    revoke_deadline_ms: Option<i64>,
    /// Some: the member speaks the classic protocol (Kafka's `ClassicMemberMetadata`).
    pub classic: Option<ClassicMetadata>,
    /// A classic member's pending join deadline (scheduled once, until it rejoins).
    join_deadline_ms: Option<i64>,
}

/// What a classic member of a consumer group sent in its last JoinGroup.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClassicMetadata {
    pub session_timeout_ms: i32,
    /// Its protocols (assignor names and subscription bytes), in its order of preference.
    pub protocols: Vec<Protocol>,
}

impl ClassicMetadata {
    /// The protocol Kafka names in the member's JoinGroup answer: its first.
    pub fn protocol_name(&self) -> &str {
        self.protocols.first().map(|p| p.name.as_str()).unwrap_or("")
    }

    /// The consumer protocol version the member's subscription uses.
    fn version(&self) -> i16 {
        self.protocols.first().and_then(|p| consumer_protocol::version(&p.metadata)).unwrap_or(0)
    }
}

/// A JoinGroup from a classic member, as plain data.
#[derive(Debug, Clone)]
pub struct ClassicJoin {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<Protocol>,
    pub require_known_member_id: bool,
}

/// What a classic JoinGroup to a consumer group is answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassicJoined {
    pub member_id: String,
    pub generation_id: i32,
    pub protocol_name: String,
}

/// A classic member of a consumer group as it was when the group converts back to classic.
#[derive(Debug, Clone)]
pub struct ClassicSeed {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    pub protocols: Vec<Protocol>,
    /// Its target assignment, named.
    pub target: NamedPartitions,
}

/// A classic group member as an online upgrade reads it (Kafka's `fromClassicGroup`).
#[derive(Debug, Clone)]
pub struct ClassicMemberState {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    pub protocols: Vec<Protocol>,
    /// Its subscription in the group's selected protocol.
    pub metadata: Bytes,
    /// Its assignment bytes of the current generation.
    pub assignment: Bytes,
}

#[derive(Debug, Clone, Default)]
pub struct ConsumerGroup {
    pub group_id: String,
    pub group_epoch: i32,
    pub assignment_epoch: i32,
    pub members: BTreeMap<String, ConsumerMember>,
    /// The target assignment, by member id.
    pub target: BTreeMap<String, Assignment>,
    /// The subscribed topics the group epoch last saw: name -> (id, partitions).
    subscribed: BTreeMap<String, (TopicId, i32)>,
    /// Resolved regular expressions: regex -> matching topic names.
    regex_topics: BTreeMap<String, BTreeSet<String>>,
    regex_refreshed_ms: i64,
    /// When the group last became empty (offset retention counts from there).
    pub state_timestamp_ms: i64,
}

impl ConsumerGroup {
    pub fn new(group_id: &str, now: i64) -> ConsumerGroup {
        ConsumerGroup {
            group_id: group_id.to_string(),
            state_timestamp_ms: now,
            regex_refreshed_ms: i64::MIN,
            ..ConsumerGroup::default()
        }
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Kafka's `ConsumerGroupState` names.
    pub fn state_name(&self) -> &'static str {
        if self.members.is_empty() {
            "Empty"
        } else if self.group_epoch > self.assignment_epoch {
            "Assigning"
        } else if self
            .members
            .values()
            .any(|m| m.member_epoch != self.assignment_epoch || m.state != MemberState::Stable)
        {
            "Reconciling"
        } else {
            "Stable"
        }
    }

    /// Topics some member subscribes to (names and resolved regexes).
    pub fn subscribed_topic_names(&self) -> BTreeSet<String> {
        let mut names: BTreeSet<String> = BTreeSet::new();
        for m in self.members.values() {
            names.extend(m.subscribed_topic_names.iter().cloned());
            if let Some(topics) =
                m.subscribed_topic_regex.as_ref().and_then(|r| self.regex_topics.get(r))
            {
                names.extend(topics.iter().cloned());
            }
        }
        names
    }

    /// The member id of the static member with `instance_id`, if any.
    pub fn static_member(&self, instance_id: &str) -> Option<&str> {
        self.members
            .values()
            .find(|m| m.instance_id.as_deref() == Some(instance_id))
            .map(|m| m.member_id.as_str())
    }

    // ----- ConsumerGroupHeartbeat ---------------------------------------------------------

    /// One heartbeat; the caller validated the request's shape (Kafka's
    /// `throwIfConsumerGroupHeartbeatRequestIsInvalid`).
    pub fn heartbeat(
        &mut self,
        now: i64,
        req: ConsumerHeartbeat,
        topics: &dyn TopicView,
        cfg: &GroupConfig,
        fx: &mut Effects,
    ) -> HeartbeatResponse {
        if req.member_epoch == LEAVE_GROUP_MEMBER_EPOCH
            || req.member_epoch == LEAVE_GROUP_STATIC_MEMBER_EPOCH
        {
            return self.leave(now, &req, cfg, fx);
        }
        if let Err(response) = self.check_size(&req.member_id, cfg) {
            return response;
        }
        if let Some(assignor) = req.server_assignor.as_deref().filter(|a| !a.is_empty()) {
            if !cfg.consumer_assignors.iter().any(|a| a == assignor) || !assignor::known(assignor) {
                return HeartbeatResponse::error(
                    ErrorCode::UnsupportedAssignor,
                    format!("Assignor {assignor} is not supported."),
                );
            }
        }
        if let Some(regex) = req.subscribed_topic_regex.as_deref().filter(|r| !r.is_empty()) {
            if let Err(e) = compile(regex) {
                return HeartbeatResponse::error(
                    ErrorCode::InvalidRegularExpression,
                    format!(
                        "SubscribedTopicRegex `{regex}` is not a valid regular expression: {e}."
                    ),
                );
            }
        }
        let mut bump = false;
        let member_id = match self.find_or_create_member(now, &req, fx) {
            Ok((member_id, created)) => {
                bump |= created;
                member_id
            }
            Err(response) => return response,
        };
        let full_request = req.member_epoch == 0
            || (req.rebalance_timeout_ms != -1
                && req.subscribed_topic_names.is_some()
                && req.owned.is_some());
        let before = self.members.get(&member_id).cloned().unwrap_or_default();
        bump |= self.update_member(&member_id, &req, fx);
        bump |= self.refresh_subscriptions(now, topics, fx);
        self.advance_epochs(bump, cfg, fx);
        self.reconcile(now, &member_id, req.owned.as_ref(), fx);
        fx.timers.push(TimerCmd::Session {
            member: member_id.clone(),
            deadline: now.saturating_add(cfg.consumer_session_timeout_ms as i64),
        });
        let Some(member) = self.members.get(&member_id) else {
            return HeartbeatResponse::error(ErrorCode::UnknownServerError, "member lost");
        };
        let changed = member.assigned != before.assigned;
        if member.member_epoch != before.member_epoch
            || member.state != before.state
            || member.pending_revocation != before.pending_revocation
        {
            fx.dirty = true;
        }
        HeartbeatResponse {
            error_code: ErrorCode::None,
            error_message: None,
            member_id: member_id.clone(),
            member_epoch: member.member_epoch,
            heartbeat_interval_ms: cfg.consumer_heartbeat_interval_ms,
            assignment: (full_request || changed).then(|| member.assigned.clone()),
        }
    }

    /// Kafka's `throwIfConsumerGroupIsFull`: a member the group does not have is refused once
    /// the group has `group.consumer.max.size` members.
    fn check_size(&self, member_id: &str, cfg: &GroupConfig) -> Result<(), HeartbeatResponse> {
        if self.members.len() < cfg.consumer_max_size || self.members.contains_key(member_id) {
            return Ok(());
        }
        Err(HeartbeatResponse::error(
            ErrorCode::GroupMaxSizeReached,
            format!(
                "The consumer group has reached its maximum capacity of {} members.",
                cfg.consumer_max_size
            ),
        ))
    }

    /// The member a heartbeat is for: an existing one whose epoch checks out, a new one (epoch
    /// 0), or a static member replacing its departed self. Returns whether one was created.
    fn find_or_create_member(
        &mut self,
        now: i64,
        req: &ConsumerHeartbeat,
        fx: &mut Effects,
    ) -> Result<(String, bool), HeartbeatResponse> {
        let requested_id = if req.member_id.is_empty() {
            uuid::Uuid::new_v4().to_string()
        } else {
            req.member_id.clone()
        };
        if let Some(instance_id) = req.instance_id.as_deref() {
            let existing = self.static_member(instance_id).map(str::to_string);
            if req.member_epoch == 0 {
                let Some(old_id) = existing else {
                    return Ok((self.add_member(now, &requested_id, req), true));
                };
                let old = self.members.get(&old_id).cloned().unwrap_or_default();
                if old.member_epoch != LEAVE_GROUP_STATIC_MEMBER_EPOCH {
                    return Err(HeartbeatResponse::error(
                        ErrorCode::UnreleasedInstanceId,
                        format!(
                            "Static member {old_id} with instance id {instance_id} is present \
                             in the consumer group."
                        ),
                    ));
                }
                // The new incarnation takes the departed one's place and assignment; the
                // group epoch does not move (Kafka's static member replacement).
                self.members.remove(&old_id);
                let target = self.target.remove(&old_id).unwrap_or_default();
                fx.timers.push(TimerCmd::CancelSession { member: old_id.clone() });
                fx.timers.push(TimerCmd::CancelRevoke { member: old_id });
                let mut member = ConsumerMember {
                    member_id: requested_id.clone(),
                    member_epoch: 0,
                    previous_member_epoch: 0,
                    assigned: old.assigned,
                    ..old
                };
                member.pending_revocation.clear();
                member.state = MemberState::Stable;
                member.revoke_deadline_ms = None;
                self.members.insert(requested_id.clone(), member);
                self.target.insert(requested_id.clone(), target);
                fx.dirty = true;
                return Ok((requested_id, false));
            }
            return match existing {
                None => Err(HeartbeatResponse::error(
                    ErrorCode::UnknownMemberId,
                    format!("Instance id {instance_id} is unknown."),
                )),
                Some(id) if id != req.member_id => Err(HeartbeatResponse::error(
                    ErrorCode::FencedInstanceId,
                    format!("Instance id {instance_id} belongs to another member."),
                )),
                Some(id) => self.check_epoch(&id, req).map(|()| (id, false)),
            };
        }
        if req.member_epoch == 0 {
            if let Some(member) = self.members.get_mut(&requested_id) {
                // A member that lost its assignment (fenced) rejoins under its id: it keeps
                // only what it still reports owning.
                let owned = req.owned.clone().unwrap_or_default();
                member.assigned = intersect(&member.assigned, &owned);
                member.pending_revocation.clear();
                member.state = MemberState::Stable;
                member.member_epoch = 0;
                member.previous_member_epoch = 0;
                if member.revoke_deadline_ms.take().is_some() {
                    fx.timers.push(TimerCmd::CancelRevoke { member: requested_id.clone() });
                }
                fx.dirty = true;
                return Ok((requested_id, false));
            }
            return Ok((self.add_member(now, &requested_id, req), true));
        }
        if !self.members.contains_key(&req.member_id) {
            return Err(HeartbeatResponse::error(
                ErrorCode::UnknownMemberId,
                format!("Member {} is not a member of group {}.", req.member_id, self.group_id),
            ));
        }
        self.check_epoch(&req.member_id, req).map(|()| (req.member_id.clone(), false))
    }

    /// Kafka's `throwIfMemberEpochIsInvalid`: an epoch ahead of the member's is fenced; one
    /// behind is accepted only if it is the previous epoch and the member owns a subset of
    /// its assignment (the answer that bumped it was lost).
    fn check_epoch(
        &self,
        member_id: &str,
        req: &ConsumerHeartbeat,
    ) -> Result<(), HeartbeatResponse> {
        let Some(member) = self.members.get(member_id) else {
            return Err(HeartbeatResponse::error(ErrorCode::UnknownMemberId, "unknown"));
        };
        let fenced = || {
            Err(HeartbeatResponse::error(
                ErrorCode::FencedMemberEpoch,
                format!(
                    "The consumer group member has a greater or smaller epoch ({}) than the one \
                     known by the group coordinator ({}). The member must abandon all its \
                     partitions and rejoin.",
                    req.member_epoch, member.member_epoch
                ),
            ))
        };
        if req.member_epoch > member.member_epoch {
            return fenced();
        }
        if req.member_epoch < member.member_epoch {
            let subset = req.owned.as_ref().is_some_and(|owned| is_subset(owned, &member.assigned));
            if req.member_epoch != member.previous_member_epoch || !subset {
                return fenced();
            }
        }
        Ok(())
    }

    fn add_member(&mut self, now: i64, member_id: &str, req: &ConsumerHeartbeat) -> String {
        let _ = now;
        let member = ConsumerMember {
            member_id: member_id.to_string(),
            instance_id: req.instance_id.clone(),
            ..ConsumerMember::default()
        };
        self.members.insert(member_id.to_string(), member);
        member_id.to_string()
    }

    /// Applies the request's fields; true when the subscription changed.
    fn update_member(
        &mut self,
        member_id: &str,
        req: &ConsumerHeartbeat,
        fx: &mut Effects,
    ) -> bool {
        let Some(m) = self.members.get_mut(member_id) else { return false };
        let mut changed = false;
        let mut touched = false;
        if let Some(names) = &req.subscribed_topic_names {
            let mut names = names.clone();
            names.sort();
            names.dedup();
            if names != m.subscribed_topic_names {
                m.subscribed_topic_names = names;
                changed = true;
            }
        }
        if let Some(regex) = &req.subscribed_topic_regex {
            let regex = (!regex.is_empty()).then(|| regex.clone());
            if regex != m.subscribed_topic_regex {
                m.subscribed_topic_regex = regex;
                changed = true;
            }
        }
        if let Some(assignor) = &req.server_assignor {
            let assignor = (!assignor.is_empty()).then(|| assignor.clone());
            touched |= assignor != m.server_assignor;
            m.server_assignor = assignor;
        }
        if req.rebalance_timeout_ms != -1 && req.rebalance_timeout_ms != m.rebalance_timeout_ms {
            m.rebalance_timeout_ms = req.rebalance_timeout_ms;
            touched = true;
        }
        if req.rack_id.is_some() && req.rack_id != m.rack_id {
            m.rack_id = req.rack_id.clone();
            touched = true;
        }
        if m.client_id != req.client_id || m.client_host != req.client_host {
            m.client_id = req.client_id.clone();
            m.client_host = req.client_host.clone();
            touched = true;
        }
        if m.classic.take().is_some() {
            // Kafka's `setClassicMemberMetadata(null)`: it now speaks the consumer protocol.
            touched = true;
            if m.join_deadline_ms.take().is_some() {
                fx.timers.push(TimerCmd::CancelClassicJoin { member: member_id.to_string() });
            }
            fx.timers.push(TimerCmd::CancelClassicSync { member: member_id.to_string() });
        }
        if changed || touched {
            fx.dirty = true;
        }
        changed
    }

    /// Resolves regexes (a new one at once, all of them at most once per refresh interval)
    /// and compares the subscribed topics' ids and partition counts with what the group epoch
    /// last saw; true when they differ.
    fn refresh_subscriptions(
        &mut self,
        now: i64,
        topics: &dyn TopicView,
        fx: &mut Effects,
    ) -> bool {
        let regexes: BTreeSet<String> =
            self.members.values().filter_map(|m| m.subscribed_topic_regex.clone()).collect();
        let due = now.saturating_sub(self.regex_refreshed_ms) >= CONSUMER_REGEX_REFRESH_INTERVAL_MS;
        let unresolved = regexes.iter().any(|r| !self.regex_topics.contains_key(r));
        if !regexes.is_empty() && (due || unresolved) {
            let names = topics.names();
            self.regex_topics = regexes
                .iter()
                .map(|r| {
                    let matching = match compile(r) {
                        Ok(re) => names.iter().filter(|n| re.is_match(n)).cloned().collect(),
                        Err(_) => BTreeSet::new(),
                    };
                    (r.clone(), matching)
                })
                .collect();
            self.regex_refreshed_ms = now;
        } else if regexes.is_empty() {
            self.regex_topics.clear();
        }
        let metadata: BTreeMap<String, (TopicId, i32)> = self
            .subscribed_topic_names()
            .into_iter()
            .filter_map(|name| topics.lookup(&name).map(|found| (name, found)))
            .collect();
        if metadata != self.subscribed {
            self.subscribed = metadata;
            fx.dirty = true;
            return true;
        }
        false
    }

    /// The assignor the group uses: the one most members name, else the default.
    pub fn assignor_name(&self, cfg: &GroupConfig) -> String {
        let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
        for m in self.members.values() {
            if let Some(a) = m.server_assignor.as_deref() {
                *votes.entry(a).or_default() += 1;
            }
        }
        let chosen = votes.into_iter().max_by_key(|(name, n)| (*n, std::cmp::Reverse(*name)));
        match chosen {
            Some((name, _)) => name.to_string(),
            None => {
                cfg.consumer_assignors.first().cloned().unwrap_or_else(|| assignor::UNIFORM.into())
            }
        }
    }

    /// After a member's request changed the group (`bump`: a member, subscription or
    /// subscribed topic changed): moves the group epoch, and computes a new target assignment
    /// when the group epoch is past the last one's.
    fn advance_epochs(&mut self, bump: bool, cfg: &GroupConfig, fx: &mut Effects) {
        if bump {
            self.group_epoch += 1;
            fx.dirty = true;
        }
        if self.group_epoch > self.assignment_epoch {
            self.compute_target(cfg);
            fx.dirty = true;
        }
    }

    fn compute_target(&mut self, cfg: &GroupConfig) {
        let assignor_name = self.assignor_name(cfg);
        let partitions: BTreeMap<TopicId, i32> = self.subscribed.values().copied().collect();
        let members: BTreeMap<String, AssignMember> = self
            .members
            .iter()
            .map(|(id, m)| {
                let mut names: BTreeSet<&String> = m.subscribed_topic_names.iter().collect();
                if let Some(t) =
                    m.subscribed_topic_regex.as_ref().and_then(|r| self.regex_topics.get(r))
                {
                    names.extend(t.iter());
                }
                let topics = names
                    .into_iter()
                    .filter_map(|n| self.subscribed.get(n).map(|(topic, _)| *topic))
                    .collect();
                let previous = self.target.get(id).cloned().unwrap_or_default();
                (id.clone(), AssignMember { topics, previous })
            })
            .collect();
        self.target = assignor::assign(&assignor_name, &members, &partitions);
        self.assignment_epoch = self.group_epoch;
    }

    /// Kafka's `CurrentAssignmentBuilder`: moves the member towards its target.
    fn reconcile(
        &mut self,
        now: i64,
        member_id: &str,
        owned: Option<&Assignment>,
        fx: &mut Effects,
    ) {
        let target_epoch = self.assignment_epoch;
        let Some(member) = self.members.get(member_id) else { return };
        let recompute = match member.state {
            MemberState::Stable => member.member_epoch != target_epoch,
            MemberState::UnrevokedPartitions => {
                // Still owned (or not told): wait for the member to revoke.
                owned.is_some_and(|owned| !intersects(owned, &member.pending_revocation))
            }
            MemberState::UnreleasedPartitions => true,
        };
        if recompute {
            let owners = self.owners(member_id);
            let target = self.target.get(member_id).cloned().unwrap_or_default();
            let Some(member) = self.members.get_mut(member_id) else { return };
            compute_next_assignment(member, target_epoch, &target, &owners);
        }
        let Some(member) = self.members.get_mut(member_id) else { return };
        if member.classic.is_some() {
            // Classic members have join and sync timeouts instead (Kafka's `maybeReconcile`).
            return;
        }
        match (member.state, member.revoke_deadline_ms) {
            (MemberState::UnrevokedPartitions, None) => {
                let timeout = member.rebalance_timeout_ms.max(0) as i64;
                let deadline = now.saturating_add(timeout);
                member.revoke_deadline_ms = Some(deadline);
                fx.timers.push(TimerCmd::Revoke { member: member_id.to_string(), deadline });
            }
            (MemberState::UnrevokedPartitions, Some(_)) => {}
            (_, Some(_)) => {
                member.revoke_deadline_ms = None;
                fx.timers.push(TimerCmd::CancelRevoke { member: member_id.to_string() });
            }
            (_, None) => {}
        }
    }

    /// The partitions other members than `except` own (assigned or pending revocation).
    fn owners(&self, except: &str) -> HashSet<(TopicId, i32)> {
        let mut owners = HashSet::new();
        for (id, m) in &self.members {
            if id == except {
                continue;
            }
            for (topic, set) in m.assigned.iter().chain(&m.pending_revocation) {
                owners.extend(set.iter().map(|p| (*topic, *p)));
            }
        }
        owners
    }

    // ----- leaving and fencing ------------------------------------------------------------

    fn leave(
        &mut self,
        now: i64,
        req: &ConsumerHeartbeat,
        cfg: &GroupConfig,
        fx: &mut Effects,
    ) -> HeartbeatResponse {
        let member_id = match req.instance_id.as_deref() {
            Some(instance_id) => match self.static_member(instance_id) {
                None => {
                    return HeartbeatResponse::error(
                        ErrorCode::UnknownMemberId,
                        format!("Instance id {instance_id} is unknown."),
                    )
                }
                Some(id) if id != req.member_id => {
                    return HeartbeatResponse::error(
                        ErrorCode::FencedInstanceId,
                        format!("Instance id {instance_id} belongs to another member."),
                    )
                }
                Some(id) => id.to_string(),
            },
            None => {
                if !self.members.contains_key(&req.member_id) {
                    return HeartbeatResponse::error(
                        ErrorCode::UnknownMemberId,
                        format!(
                            "Member {} is not a member of group {}.",
                            req.member_id, self.group_id
                        ),
                    );
                }
                req.member_id.clone()
            }
        };
        let static_leave =
            req.member_epoch == LEAVE_GROUP_STATIC_MEMBER_EPOCH && req.instance_id.is_some();
        if static_leave {
            // Kept, with its assignment, until it comes back or its session expires.
            if let Some(m) = self.members.get_mut(&member_id) {
                m.member_epoch = LEAVE_GROUP_STATIC_MEMBER_EPOCH;
            }
            fx.timers.push(TimerCmd::Session {
                member: member_id.clone(),
                deadline: now.saturating_add(cfg.consumer_session_timeout_ms as i64),
            });
            fx.dirty = true;
        } else {
            self.remove_member(now, &member_id, fx);
        }
        HeartbeatResponse {
            member_id,
            member_epoch: req.member_epoch,
            heartbeat_interval_ms: 0,
            ..HeartbeatResponse::default()
        }
    }

    /// Removes a member (left, session expired, did not revoke in time) and moves the group
    /// epoch, so the next heartbeat computes a target without it.
    pub fn remove_member(&mut self, now: i64, member_id: &str, fx: &mut Effects) -> bool {
        if self.members.remove(member_id).is_none() {
            return false;
        }
        self.target.remove(member_id);
        self.cancel_member_timers(member_id, fx);
        self.group_epoch += 1;
        if self.members.is_empty() {
            self.state_timestamp_ms = now;
        }
        fx.dirty = true;
        true
    }

    /// The session timer fired (the caller checked it is the member's current timer).
    pub fn expire_session(&mut self, now: i64, member_id: &str, fx: &mut Effects) -> bool {
        self.remove_member(now, member_id, fx)
    }

    /// The revocation timer fired: a member still holding partitions it was told to revoke
    /// is fenced, so that they can move.
    pub fn expire_revocation(&mut self, now: i64, member_id: &str, fx: &mut Effects) -> bool {
        let late = self.members.get(member_id).is_some_and(|m| {
            m.state == MemberState::UnrevokedPartitions
                && m.revoke_deadline_ms.is_some_and(|d| d <= now)
        });
        late && self.remove_member(now, member_id, fx)
    }

    // ----- classic members (KIP-848's online migration) ------------------------------------

    /// Kafka's `ConsumerGroup.fromClassicGroup`: the classic group's generation becomes the
    /// group, assignment and member epochs; each member keeps its subscription (read from its
    /// metadata in the selected protocol) and its current assignment, which is also its
    /// target, and stays a classic member. None if some member's bytes are malformed.
    pub fn from_classic(
        group_id: &str,
        generation_id: i32,
        members: Vec<ClassicMemberState>,
        topics: &dyn TopicView,
        now: i64,
    ) -> Option<ConsumerGroup> {
        let mut group = ConsumerGroup::new(group_id, now);
        group.group_epoch = generation_id;
        group.assignment_epoch = generation_id;
        for m in members {
            let subscription = consumer_protocol::decode_subscription(&m.metadata)?;
            let assigned = to_ids(&consumer_protocol::decode_assignment(&m.assignment)?, topics);
            let member = ConsumerMember {
                member_id: m.member_id.clone(),
                instance_id: m.instance_id,
                rack_id: subscription.rack_id,
                client_id: m.client_id,
                client_host: m.client_host,
                subscribed_topic_names: sorted(subscription.topics),
                rebalance_timeout_ms: m.rebalance_timeout_ms,
                member_epoch: generation_id,
                previous_member_epoch: generation_id,
                assigned: assigned.clone(),
                classic: Some(ClassicMetadata {
                    session_timeout_ms: m.session_timeout_ms,
                    protocols: m.protocols,
                }),
                ..ConsumerMember::default()
            };
            group.target.insert(m.member_id.clone(), assigned);
            group.members.insert(m.member_id, member);
        }
        // The subscribed topics as the classic members left them; the heartbeat that made
        // the group moves its epoch anyway.
        let mut ignored = Effects::default();
        group.refresh_subscriptions(now, topics, &mut ignored);
        Some(group)
    }

    /// The classic members as a classic group takes them back (Kafka's
    /// `ClassicGroup.fromConsumerGroup`), without `leaving`; each with its target assignment.
    pub fn classic_seeds(&self, leaving: &str) -> Vec<ClassicSeed> {
        self.members
            .values()
            .filter(|m| m.member_id != leaving)
            .filter_map(|m| {
                let classic = m.classic.as_ref()?;
                let target = self.target.get(&m.member_id).cloned().unwrap_or_default();
                Some(ClassicSeed {
                    member_id: m.member_id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    session_timeout_ms: classic.session_timeout_ms,
                    protocols: classic.protocols.clone(),
                    target: self.to_names(&target),
                })
            })
            .collect()
    }

    /// Kafka's `allMembersUseClassicProtocolExcept`: `member_id` speaks the consumer protocol
    /// and every other member the classic one.
    pub fn all_classic_except(&self, member_id: &str) -> bool {
        self.members.get(member_id).is_some_and(|m| m.classic.is_none())
            && self
                .members
                .values()
                .filter(|m| m.member_id != member_id)
                .all(|m| m.classic.is_some())
    }

    /// Kafka's `allMembersUseClassicProtocolExcept` for a static member about to be replaced
    /// (`validateOnlineDowngradeWithReplacedMemberId`): the member holding `instance_id`
    /// speaks the consumer protocol and every other member the classic one.
    pub fn all_classic_except_instance(&self, instance_id: &str) -> bool {
        self.static_member(instance_id).is_some_and(|id| self.all_classic_except(id))
    }

    /// Every member id with its timers' kinds, for cancelling them all.
    pub fn member_ids(&self) -> Vec<String> {
        self.members.keys().cloned().collect()
    }

    /// Kafka's `supportsClassicProtocols`: the consumer protocol type, and a protocol every
    /// classic member supports (any, when there is no classic member yet).
    fn supports_classic_protocols(&self, protocol_type: &str, protocols: &[Protocol]) -> bool {
        if protocol_type != CONSUMER_PROTOCOL_TYPE {
            return false;
        }
        if self.members.is_empty() {
            return !protocols.is_empty();
        }
        let classic: Vec<&ClassicMetadata> =
            self.members.values().filter_map(|m| m.classic.as_ref()).collect();
        protocols
            .iter()
            .any(|p| classic.iter().all(|c| c.protocols.iter().any(|theirs| theirs.name == p.name)))
    }

    /// JoinGroup from a classic member (Kafka's `classicGroupJoinToConsumerGroup`): the
    /// member is created or updated from its subscription, the group epoch moves if the
    /// subscription changed, and the member reconciles towards its target with the partitions
    /// its subscription says it owns. Answered at once: the generation is the member epoch.
    pub fn classic_join(
        &mut self,
        now: i64,
        req: ClassicJoin,
        topics: &dyn TopicView,
        cfg: &GroupConfig,
        fx: &mut Effects,
    ) -> Result<ClassicJoined, (ErrorCode, String)> {
        let unknown = req.member_id.is_empty();
        let member_id =
            if unknown { uuid::Uuid::new_v4().to_string() } else { req.member_id.clone() };
        if !self.supports_classic_protocols(&req.protocol_type, &req.protocols) {
            return Err((ErrorCode::InconsistentGroupProtocol, req.member_id.clone()));
        }
        if self.check_size(&req.member_id, cfg).is_err() {
            return Err((ErrorCode::GroupMaxSizeReached, req.member_id.clone()));
        }
        if unknown && req.require_known_member_id && req.instance_id.is_none() {
            return Err((ErrorCode::MemberIdRequired, member_id));
        }
        let Some(subscription) =
            req.protocols.first().and_then(|p| consumer_protocol::decode_subscription(&p.metadata))
        else {
            return Err((ErrorCode::InconsistentGroupProtocol, req.member_id.clone()));
        };
        let mut bump = false;
        match req.instance_id.as_deref() {
            None => {
                if !self.members.contains_key(&member_id) {
                    self.add_member(now, &member_id, &ConsumerHeartbeat::default());
                    bump = true;
                }
            }
            Some(instance_id) => {
                let existing = self.static_member(instance_id).map(str::to_string);
                match existing {
                    None if unknown => {
                        let join = ConsumerHeartbeat {
                            instance_id: Some(instance_id.to_string()),
                            ..ConsumerHeartbeat::default()
                        };
                        self.add_member(now, &member_id, &join);
                        bump = true;
                    }
                    None => return Err((ErrorCode::UnknownMemberId, req.member_id.clone())),
                    Some(old_id) if unknown => {
                        // The new incarnation takes the old one's place and assignment.
                        let mut member = self.members.remove(&old_id).unwrap_or_default();
                        let target = self.target.remove(&old_id).unwrap_or_default();
                        self.cancel_member_timers(&old_id, fx);
                        member.member_id = member_id.clone();
                        member.member_epoch = 0;
                        member.previous_member_epoch = 0;
                        member.revoke_deadline_ms = None;
                        member.join_deadline_ms = None;
                        self.members.insert(member_id.clone(), member);
                        self.target.insert(member_id.clone(), target);
                        fx.dirty = true;
                    }
                    Some(old_id) if old_id != member_id => {
                        return Err((ErrorCode::FencedInstanceId, req.member_id.clone()));
                    }
                    Some(_) => {}
                }
            }
        }
        let Some(m) = self.members.get_mut(&member_id) else {
            return Err((ErrorCode::UnknownServerError, req.member_id.clone()));
        };
        let before = m.clone();
        if req.instance_id.is_some() {
            m.instance_id = req.instance_id.clone();
        }
        if subscription.rack_id.is_some() {
            m.rack_id = subscription.rack_id.clone();
        }
        if req.rebalance_timeout_ms != -1 {
            m.rebalance_timeout_ms = req.rebalance_timeout_ms;
        }
        let names = sorted(subscription.topics.clone());
        if names != m.subscribed_topic_names {
            m.subscribed_topic_names = names;
            bump = true;
        }
        m.client_id = req.client_id.clone();
        m.client_host = req.client_host.clone();
        m.classic = Some(ClassicMetadata {
            session_timeout_ms: req.session_timeout_ms,
            protocols: req.protocols.clone(),
        });
        let protocol_name = req.protocols.first().map(|p| p.name.clone()).unwrap_or_default();
        if *m != before {
            fx.dirty = true;
        }
        bump |= self.refresh_subscriptions(now, topics, fx);
        self.advance_epochs(bump, cfg, fx);
        let owned = to_ids(&subscription.owned, topics);
        let before = self.members.get(&member_id).cloned().unwrap_or_default();
        self.reconcile(now, &member_id, Some(&owned), fx);
        let Some(member) = self.members.get_mut(&member_id) else {
            return Err((ErrorCode::UnknownServerError, req.member_id.clone()));
        };
        if *member != before {
            fx.dirty = true;
        }
        if member.join_deadline_ms.take().is_some() {
            fx.timers.push(TimerCmd::CancelClassicJoin { member: member_id.clone() });
        }
        fx.timers.push(TimerCmd::Session {
            member: member_id.clone(),
            deadline: now.saturating_add(i64::from(req.session_timeout_ms)),
        });
        fx.timers.push(TimerCmd::ClassicSync {
            member: member_id.clone(),
            deadline: now.saturating_add(i64::from(req.rebalance_timeout_ms.max(0))),
        });
        Ok(ClassicJoined { member_id, generation_id: member.member_epoch, protocol_name })
    }

    /// Kafka's `validateConsumerGroupMember` and `throwIfMemberDoesNotUseClassicProtocol`.
    fn classic_member(
        &self,
        member_id: &str,
        instance_id: Option<&str>,
    ) -> Result<&ConsumerMember, ErrorCode> {
        let member = match instance_id {
            None => self.members.get(member_id).ok_or(ErrorCode::UnknownMemberId)?,
            Some(instance_id) => {
                let id = self.static_member(instance_id).ok_or(ErrorCode::UnknownMemberId)?;
                if id != member_id {
                    return Err(ErrorCode::FencedInstanceId);
                }
                self.members.get(id).ok_or(ErrorCode::UnknownMemberId)?
            }
        };
        if member.classic.is_none() {
            return Err(ErrorCode::UnknownMemberId);
        }
        Ok(member)
    }

    /// Asks a classic member to rejoin: its join deadline is set once (Kafka's
    /// `scheduleConsumerGroupJoinTimeoutIfAbsent`).
    fn schedule_join_if_absent(&mut self, now: i64, member_id: &str, fx: &mut Effects) {
        let Some(m) = self.members.get_mut(member_id) else { return };
        if m.join_deadline_ms.is_none() {
            let deadline = now.saturating_add(i64::from(m.rebalance_timeout_ms.max(0)));
            m.join_deadline_ms = Some(deadline);
            fx.timers.push(TimerCmd::ClassicJoin { member: member_id.to_string(), deadline });
        }
    }

    /// SyncGroup from a classic member (Kafka's `classicGroupSyncToConsumerGroup`): its
    /// current assignment in the consumer protocol's bytes, at its subscription's version.
    pub fn classic_sync(
        &mut self,
        now: i64,
        member_id: &str,
        instance_id: Option<&str>,
        generation_id: i32,
        protocol: (Option<&str>, Option<&str>),
        fx: &mut Effects,
    ) -> Result<Bytes, ErrorCode> {
        let member = self.classic_member(member_id, instance_id)?;
        if member.member_epoch != generation_id {
            return Err(ErrorCode::IllegalGeneration);
        }
        let classic = member.classic.clone().unwrap_or_default();
        let (protocol_type, protocol_name) = protocol;
        if protocol_type.is_some_and(|t| t != CONSUMER_PROTOCOL_TYPE)
            || protocol_name.is_some_and(|n| n != classic.protocol_name())
        {
            return Err(ErrorCode::InconsistentGroupProtocol);
        }
        let member_id = member.member_id.clone();
        if self.group_epoch > member.member_epoch
            && member.state != MemberState::UnrevokedPartitions
        {
            self.schedule_join_if_absent(now, &member_id, fx);
            return Err(ErrorCode::RebalanceInProgress);
        }
        let assigned = self.members.get(&member_id).map(|m| m.assigned.clone()).unwrap_or_default();
        fx.timers.push(TimerCmd::CancelClassicSync { member: member_id.clone() });
        fx.timers.push(TimerCmd::Session {
            member: member_id,
            deadline: now.saturating_add(i64::from(classic.session_timeout_ms)),
        });
        Ok(consumer_protocol::encode_assignment(classic.version(), &self.to_names(&assigned)))
    }

    /// Heartbeat from a classic member (Kafka's `classicGroupHeartbeatToConsumerGroup`):
    /// REBALANCE_IN_PROGRESS when it must rejoin: the group epoch moved past it, it has
    /// partitions to revoke, or the partitions it waits for are free now.
    pub fn classic_heartbeat(
        &mut self,
        now: i64,
        member_id: &str,
        instance_id: Option<&str>,
        generation_id: i32,
        fx: &mut Effects,
    ) -> ErrorCode {
        let member = match self.classic_member(member_id, instance_id) {
            Ok(member) => member,
            Err(code) => return code,
        };
        if member.member_epoch != generation_id {
            return ErrorCode::IllegalGeneration;
        }
        let session_ms = member.classic.as_ref().map_or(0, |c| c.session_timeout_ms);
        let member_id = member.member_id.clone();
        let rejoin = member.member_epoch < self.group_epoch
            || member.state == MemberState::UnrevokedPartitions
            || (member.state == MemberState::UnreleasedPartitions
                && !self.waiting_on_unreleased_partition(&member_id));
        fx.timers.push(TimerCmd::Session {
            member: member_id.clone(),
            deadline: now.saturating_add(i64::from(session_ms)),
        });
        if rejoin {
            self.schedule_join_if_absent(now, &member_id, fx);
            return ErrorCode::RebalanceInProgress;
        }
        ErrorCode::None
    }

    /// Kafka's `waitingOnUnreleasedPartition`: some partition of the member's target that it
    /// does not have yet is still owned by another member.
    fn waiting_on_unreleased_partition(&self, member_id: &str) -> bool {
        let Some(member) = self.members.get(member_id) else { return false };
        let target = self.target.get(member_id).cloned().unwrap_or_default();
        let owners = self.owners(member_id);
        target.iter().any(|(topic, partitions)| {
            partitions.iter().any(|p| {
                !member.assigned.get(topic).is_some_and(|a| a.contains(p))
                    && owners.contains(&(*topic, *p))
            })
        })
    }

    /// LeaveGroup for one classic member (Kafka's `classicGroupLeaveToConsumerGroup`); an
    /// empty member id with an instance id removes that static member (administrative).
    /// Returns the removed member's id. The group epoch moves once per request: the caller
    /// calls `members_left` after the batch.
    pub fn classic_leave(
        &mut self,
        now: i64,
        member_id: &str,
        instance_id: Option<&str>,
        fx: &mut Effects,
    ) -> Result<String, ErrorCode> {
        let id = match instance_id {
            None => {
                let m = self.members.get(member_id).ok_or(ErrorCode::UnknownMemberId)?;
                if m.classic.is_none() {
                    return Err(ErrorCode::UnknownMemberId);
                }
                member_id.to_string()
            }
            Some(instance_id) => {
                let id = self.static_member(instance_id).ok_or(ErrorCode::UnknownMemberId)?;
                if !member_id.is_empty() && id != member_id {
                    return Err(ErrorCode::FencedInstanceId);
                }
                if self.members.get(id).is_some_and(|m| m.classic.is_none()) {
                    return Err(ErrorCode::UnknownMemberId);
                }
                id.to_string()
            }
        };
        self.members.remove(&id);
        self.target.remove(&id);
        self.cancel_member_timers(&id, fx);
        if self.members.is_empty() {
            self.state_timestamp_ms = now;
        }
        fx.dirty = true;
        Ok(id)
    }

    /// After `classic_leave` removed members: the group epoch moves once.
    pub fn members_left(&mut self, fx: &mut Effects) {
        self.group_epoch += 1;
        fx.dirty = true;
    }

    /// A classic member's join or sync deadline passed: it is fenced.
    pub fn expire_classic(&mut self, now: i64, member_id: &str, fx: &mut Effects) -> bool {
        self.remove_member(now, member_id, fx)
    }

    fn cancel_member_timers(&mut self, member_id: &str, fx: &mut Effects) {
        let member = member_id.to_string();
        fx.timers.push(TimerCmd::CancelSession { member: member.clone() });
        fx.timers.push(TimerCmd::CancelRevoke { member: member.clone() });
        fx.timers.push(TimerCmd::CancelClassicJoin { member: member.clone() });
        fx.timers.push(TimerCmd::CancelClassicSync { member });
    }

    /// Topic ids to names through the subscribed topics (a partition of a topic the group no
    /// longer knows is left out, as Kafka leaves out topics missing from its image).
    fn to_names(&self, assignment: &Assignment) -> NamedPartitions {
        assignment
            .iter()
            .filter_map(|(id, partitions)| {
                let name = self.subscribed.iter().find(|(_, (t, _))| t == id)?.0.clone();
                Some((name, partitions.iter().copied().collect()))
            })
            .collect()
    }

    // ----- offsets --------------------------------------------------------------------------

    /// Kafka's `ConsumerGroup.validateOffsetCommit` for OffsetCommit (not transactional).
    pub fn validate_offset_commit(
        &self,
        member_id: &str,
        member_epoch: i32,
        api_version: i16,
    ) -> Result<(), ErrorCode> {
        if member_epoch < 0 && self.members.is_empty() {
            return Ok(()); // an admin commit to an empty group
        }
        let Some(member) = self.members.get(member_id) else {
            return Err(ErrorCode::UnknownMemberId);
        };
        if api_version < 9 && member.classic.is_none() {
            return Err(ErrorCode::UnsupportedVersion);
        }
        member.validate_epoch(member_epoch)
    }

    /// Kafka's `ConsumerGroup.validateOffsetFetch`: no member id and a negative epoch is an
    /// admin (or old client) fetch and always allowed.
    pub fn validate_offset_fetch(
        &self,
        member_id: Option<&str>,
        member_epoch: i32,
    ) -> Result<(), ErrorCode> {
        let Some(member_id) = member_id else {
            return if member_epoch < 0 { Ok(()) } else { Err(ErrorCode::UnknownMemberId) };
        };
        if member_id.is_empty() && member_epoch < 0 {
            return Ok(());
        }
        let Some(member) = self.members.get(member_id) else {
            return Err(ErrorCode::UnknownMemberId);
        };
        member.validate_epoch(member_epoch)
    }

    // ----- describe, persist, replay ---------------------------------------------------------

    pub fn describe(&self, cfg: &GroupConfig) -> DescribedConsumerGroup {
        DescribedConsumerGroup {
            group_id: self.group_id.clone(),
            error_code: ErrorCode::None,
            error_message: None,
            state: self.state_name(),
            group_epoch: self.group_epoch,
            assignment_epoch: self.assignment_epoch,
            assignor: self.assignor_name(cfg),
            members: self
                .members
                .values()
                .map(|m| DescribedConsumerMember {
                    member_id: m.member_id.clone(),
                    instance_id: m.instance_id.clone(),
                    rack_id: m.rack_id.clone(),
                    member_epoch: m.member_epoch,
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    subscribed_topic_names: m.subscribed_topic_names.clone(),
                    subscribed_topic_regex: m.subscribed_topic_regex.clone(),
                    assignment: m.assigned.clone(),
                    target: self.target.get(&m.member_id).cloned().unwrap_or_default(),
                    classic: m.classic.is_some(),
                })
                .collect(),
        }
    }

    pub fn to_value(&self) -> ConsumerGroupValue {
        ConsumerGroupValue {
            group_epoch: self.group_epoch,
            assignment_epoch: self.assignment_epoch,
            state_timestamp: self.state_timestamp_ms,
            subscribed: self
                .subscribed
                .iter()
                .map(|(name, (id, partitions))| (name.clone(), *id, *partitions))
                .collect(),
            members: self
                .members
                .values()
                .map(|m| ConsumerMemberValue {
                    member_id: m.member_id.clone(),
                    instance_id: m.instance_id.clone(),
                    rack_id: m.rack_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    topic_names: m.subscribed_topic_names.clone(),
                    regex: m.subscribed_topic_regex.clone(),
                    server_assignor: m.server_assignor.clone(),
                    rebalance_timeout: m.rebalance_timeout_ms,
                    member_epoch: m.member_epoch,
                    previous_member_epoch: m.previous_member_epoch,
                    state: m.state as i8,
                    assigned: to_stored(&m.assigned),
                    pending_revocation: to_stored(&m.pending_revocation),
                    target: to_stored(&self.target.get(&m.member_id).cloned().unwrap_or_default()),
                    classic: m.classic.as_ref().map(|c| ClassicMemberValue {
                        session_timeout: c.session_timeout_ms,
                        protocols: c
                            .protocols
                            .iter()
                            .map(|p| (p.name.clone(), p.metadata.clone()))
                            .collect(),
                    }),
                })
                .collect(),
        }
    }

    pub fn from_value(group_id: &str, value: ConsumerGroupValue) -> ConsumerGroup {
        let mut group = ConsumerGroup::new(group_id, value.state_timestamp);
        group.group_epoch = value.group_epoch;
        group.assignment_epoch = value.assignment_epoch;
        group.subscribed = value
            .subscribed
            .into_iter()
            .map(|(name, id, partitions)| (name, (id, partitions)))
            .collect();
        for m in value.members {
            group.target.insert(m.member_id.clone(), from_stored(&m.target));
            let member = ConsumerMember {
                member_id: m.member_id.clone(),
                instance_id: m.instance_id,
                rack_id: m.rack_id,
                client_id: m.client_id,
                client_host: m.client_host,
                subscribed_topic_names: m.topic_names,
                subscribed_topic_regex: m.regex,
                server_assignor: m.server_assignor,
                rebalance_timeout_ms: m.rebalance_timeout,
                member_epoch: m.member_epoch,
                previous_member_epoch: m.previous_member_epoch,
                state: MemberState::from_stored(m.state),
                assigned: from_stored(&m.assigned),
                pending_revocation: from_stored(&m.pending_revocation),
                revoke_deadline_ms: None,
                classic: m.classic.map(|c| ClassicMetadata {
                    session_timeout_ms: c.session_timeout,
                    protocols: c
                        .protocols
                        .into_iter()
                        .map(|(name, metadata)| Protocol { name, metadata })
                        .collect(),
                }),
                join_deadline_ms: None,
            };
            group.members.insert(m.member_id, member);
        }
        group
    }

    /// After a replay: every member must heartbeat within its session (as after a Kafka
    /// coordinator failover); a member that was revoking gets a fresh revocation deadline.
    pub fn loaded(&mut self, now: i64, cfg: &GroupConfig, fx: &mut Effects) {
        for (id, m) in self.members.iter_mut() {
            let session_ms = m
                .classic
                .as_ref()
                .map_or(cfg.consumer_session_timeout_ms, |c| c.session_timeout_ms);
            fx.timers.push(TimerCmd::Session {
                member: id.clone(),
                deadline: now.saturating_add(i64::from(session_ms)),
            });
            if m.state == MemberState::UnrevokedPartitions && m.classic.is_none() {
                let deadline = now.saturating_add(m.rebalance_timeout_ms.max(0) as i64);
                m.revoke_deadline_ms = Some(deadline);
                fx.timers.push(TimerCmd::Revoke { member: id.clone(), deadline });
            }
        }
    }
}

impl ConsumerMember {
    /// Kafka's `validateMemberEpoch`: a consumer-protocol member's stale epoch is
    /// STALE_MEMBER_EPOCH, a classic member's ILLEGAL_GENERATION.
    fn validate_epoch(&self, epoch: i32) -> Result<(), ErrorCode> {
        if epoch == self.member_epoch {
            Ok(())
        } else if self.classic.is_some() {
            Err(ErrorCode::IllegalGeneration)
        } else {
            Err(ErrorCode::StaleMemberEpoch)
        }
    }
}

fn sorted(mut names: Vec<String>) -> Vec<String> {
    names.sort();
    names.dedup();
    names
}

/// Named partitions to topic ids (topics the catalog does not know are left out).
fn to_ids(named: &NamedPartitions, topics: &dyn TopicView) -> Assignment {
    let mut out = Assignment::new();
    for (name, partitions) in named {
        if let Some((id, count)) = topics.lookup(name) {
            let valid = partitions.iter().copied().filter(|p| (0..count).contains(p));
            out.entry(id).or_default().extend(valid);
        }
    }
    out.retain(|_, set| !set.is_empty());
    out
}

/// Kafka's `CurrentAssignmentBuilder.computeNextAssignment`.
fn compute_next_assignment(
    member: &mut ConsumerMember,
    target_epoch: i32,
    target: &Assignment,
    owners: &HashSet<(TopicId, i32)>,
) {
    let mut kept = Assignment::new();
    let mut revoking = Assignment::new();
    let mut assignable = Assignment::new();
    let mut unreleased = false;
    let topics: BTreeSet<TopicId> = member.assigned.keys().chain(target.keys()).copied().collect();
    for topic in topics {
        let empty = BTreeSet::new();
        let current = member.assigned.get(&topic).unwrap_or(&empty);
        let wanted = target.get(&topic).unwrap_or(&empty);
        for p in current {
            if wanted.contains(p) {
                kept.entry(topic).or_default().insert(*p);
            } else {
                revoking.entry(topic).or_default().insert(*p);
            }
        }
        for p in wanted.difference(current) {
            if owners.contains(&(topic, *p)) {
                unreleased = true;
            } else {
                assignable.entry(topic).or_default().insert(*p);
            }
        }
    }
    if !revoking.is_empty() {
        // Revoke first: the member keeps only what it may keep, at its current epoch.
        member.assigned = kept;
        member.pending_revocation = revoking;
        member.state = MemberState::UnrevokedPartitions;
        return;
    }
    let mut assigned = kept;
    for (topic, set) in assignable {
        assigned.entry(topic).or_default().extend(set);
    }
    member.assigned = assigned;
    member.pending_revocation.clear();
    member.previous_member_epoch = member.member_epoch;
    member.member_epoch = target_epoch;
    member.state = if unreleased { MemberState::UnreleasedPartitions } else { MemberState::Stable };
}

/// Compiles a subscription regex so that it must match the whole topic name, as Java's
/// `Matcher.matches()` does.
fn compile(regex: &str) -> Result<regex::Regex, regex::Error> {
    regex::Regex::new(&format!("^(?:{regex})$"))
}

fn intersect(a: &Assignment, b: &Assignment) -> Assignment {
    let mut out = Assignment::new();
    for (topic, set) in a {
        if let Some(other) = b.get(topic) {
            let common: BTreeSet<i32> = set.intersection(other).copied().collect();
            if !common.is_empty() {
                out.insert(*topic, common);
            }
        }
    }
    out
}

fn intersects(a: &Assignment, b: &Assignment) -> bool {
    a.iter().any(|(topic, set)| b.get(topic).is_some_and(|other| !set.is_disjoint(other)))
}

fn is_subset(a: &Assignment, b: &Assignment) -> bool {
    a.iter().all(|(topic, set)| set.is_empty() || b.get(topic).is_some_and(|o| set.is_subset(o)))
}

fn to_stored(assignment: &Assignment) -> StoredAssignment {
    assignment.iter().map(|(topic, set)| (*topic, set.iter().copied().collect())).collect()
}

fn from_stored(stored: &StoredAssignment) -> Assignment {
    stored
        .iter()
        .filter(|(_, partitions)| !partitions.is_empty())
        .map(|(topic, partitions)| (*topic, partitions.iter().copied().collect()))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::group::state::{
        CommitPartition, CommitRequest, Groups, JoinRequest, Protocol, Reply,
    };
    use crate::model::dynamic_config::ConsumerTimeouts;
    use crate::model::{LeaderEpoch, Offset};

    const SESSION_MS: i64 = 45_000;

    struct Topics(BTreeMap<String, (TopicId, i32)>);

    impl TopicView for Topics {
        fn lookup(&self, name: &str) -> Option<(TopicId, i32)> {
            self.0.get(name).copied()
        }
        fn name_of(&self, id: &TopicId) -> Option<String> {
            self.0.iter().find(|(_, (t, _))| t == id).map(|(n, _)| n.clone())
        }
        fn names(&self) -> Vec<String> {
            self.0.keys().cloned().collect()
        }
    }

    fn topics(specs: &[(&str, u8, i32)]) -> Topics {
        Topics(specs.iter().map(|(n, id, p)| (n.to_string(), ([*id; 16], *p))).collect())
    }

    fn join(member: &str, topics: &[&str]) -> ConsumerHeartbeat {
        ConsumerHeartbeat {
            group_id: "g".into(),
            member_id: member.into(),
            member_epoch: 0,
            rebalance_timeout_ms: 60_000,
            subscribed_topic_names: Some(topics.iter().map(|t| t.to_string()).collect()),
            owned: Some(Assignment::new()),
            client_id: "c".into(),
            ..ConsumerHeartbeat::default()
        }
    }

    fn beat(member: &str, epoch: i32, owned: &Assignment) -> ConsumerHeartbeat {
        ConsumerHeartbeat {
            group_id: "g".into(),
            member_id: member.into(),
            member_epoch: epoch,
            rebalance_timeout_ms: -1,
            owned: Some(owned.clone()),
            client_id: "c".into(),
            ..ConsumerHeartbeat::default()
        }
    }

    fn parts(topic: u8, partitions: &[i32]) -> Assignment {
        let mut a = Assignment::new();
        if !partitions.is_empty() {
            a.insert([topic; 16], partitions.iter().copied().collect());
        }
        a
    }

    #[test]
    fn a_member_joins_and_gets_every_partition() {
        let mut g = Groups::default();
        let t = topics(&[("t", 1, 4)]);
        let r = g.consumer_heartbeat(0, join("a", &["t"]), &t);
        assert_eq!(r.error_code, ErrorCode::None);
        assert_eq!(r.member_epoch, 1);
        assert_eq!(r.assignment, Some(parts(1, &[0, 1, 2, 3])));
        let d = g.consumer_describe("g");
        assert_eq!((d.state, d.group_epoch, d.assignment_epoch), ("Stable", 1, 1));
        assert_eq!(d.assignor, "uniform");
    }

    #[test]
    fn a_partition_moves_only_after_its_owner_revoked_it() {
        let mut g = Groups::default();
        let t = topics(&[("t", 1, 4)]);
        let all = parts(1, &[0, 1, 2, 3]);
        g.consumer_heartbeat(0, join("a", &["t"]), &t);
        // b joins: the group epoch moves, b gets nothing a still owns.
        let b = g.consumer_heartbeat(1, join("b", &["t"]), &t);
        assert_eq!((b.member_epoch, b.assignment.clone()), (2, Some(Assignment::new())));
        assert_eq!(g.consumer_describe("g").state, "Reconciling");
        // a is told to keep half; its epoch stays until it revokes.
        let a = g.consumer_heartbeat(2, beat("a", 1, &all), &t);
        let kept = a.assignment.clone().expect("a new assignment");
        assert_eq!(assignor::size(&kept), 2);
        assert_eq!(a.member_epoch, 1);
        // b still gets nothing: a has not revoked.
        let b = g.consumer_heartbeat(3, beat("b", 2, &Assignment::new()), &t);
        assert_eq!(b.assignment, None);
        // a revoked; now at epoch 2, and b gets the other half.
        let a = g.consumer_heartbeat(4, beat("a", 1, &kept), &t);
        assert_eq!(a.member_epoch, 2);
        let b = g.consumer_heartbeat(5, beat("b", 2, &Assignment::new()), &t);
        let got = b.assignment.expect("b's partitions");
        assert_eq!(assignor::size(&got), 2);
        assert!(!intersects(&got, &kept));
        assert_eq!(g.consumer_describe("g").state, "Stable");
    }

    #[test]
    fn epochs_are_checked_like_kafka() {
        let mut g = Groups::default();
        let t = topics(&[("t", 1, 2)]);
        g.consumer_heartbeat(0, join("a", &["t"]), &t);
        let ahead = g.consumer_heartbeat(1, beat("a", 5, &Assignment::new()), &t);
        assert_eq!(ahead.error_code, ErrorCode::FencedMemberEpoch);
        let stranger = g.consumer_heartbeat(1, beat("x", 1, &Assignment::new()), &t);
        assert_eq!(stranger.error_code, ErrorCode::UnknownMemberId);
        let commit = |epoch, version| CommitRequest {
            group_id: "g".into(),
            generation_id: epoch,
            member_id: "a".into(),
            group_instance_id: None,
            retention_time_ms: -1,
            api_version: version,
            partitions: vec![CommitPartition {
                topic: "t".into(),
                partition: 0,
                offset: Offset(5),
                leader_epoch: LeaderEpoch::NONE,
                metadata: None,
            }],
        };
        assert_eq!(g.commit_offsets(2, commit(0, 9)), Err(ErrorCode::StaleMemberEpoch));
        assert_eq!(g.commit_offsets(2, commit(1, 8)), Err(ErrorCode::UnsupportedVersion));
        assert_eq!(g.commit_offsets(2, commit(1, 9)), Ok(vec![ErrorCode::None]));
        let fetched = g.fetch_member_offsets("g", Some(("a", 0)), None);
        assert_eq!(fetched, Err(ErrorCode::StaleMemberEpoch));
        let fetched = g.fetch_member_offsets("g", Some(("zz", 1)), None);
        assert_eq!(fetched, Err(ErrorCode::UnknownMemberId));
        let fetched = g.fetch_member_offsets("g", Some(("a", 1)), None).expect("fetch");
        assert_eq!(fetched[0].offset, Offset(5));
        assert!(g.fetch_member_offsets("g", None, None).is_ok(), "an admin fetch");
    }

    #[test]
    fn a_silent_member_is_fenced_at_its_session_timeout_and_its_partitions_move() {
        let mut g = Groups::default();
        let t = topics(&[("t", 1, 2)]);
        g.consumer_heartbeat(0, join("a", &["t"]), &t);
        g.consumer_heartbeat(0, join("b", &["t"]), &t);
        let a = g.consumer_heartbeat(1, beat("a", 1, &parts(1, &[0, 1])), &t);
        let kept = a.assignment.expect("a keeps one");
        g.consumer_heartbeat(2, beat("a", 1, &kept), &t);
        // b stays, a goes silent.
        for now in [10_000, 20_000, 30_000, 40_000] {
            g.consumer_heartbeat(now, beat("b", 2, &Assignment::new()), &t);
        }
        g.advance(SESSION_MS + 3);
        assert_eq!(g.consumer_describe("g").members.len(), 1);
        let b = g.consumer_heartbeat(SESSION_MS + 4, beat("b", 2, &Assignment::new()), &t);
        assert_eq!(b.assignment, Some(parts(1, &[0, 1])));
        assert_eq!(b.member_epoch, 3, "a joined (1), b joined (2), a was fenced (3)");
    }

    #[test]
    fn leave_moves_partitions_and_a_static_member_returns_to_its_assignment() {
        let mut g = Groups::default();
        let t = topics(&[("t", 1, 4)]);
        let mut s = join("s1", &["t"]);
        s.instance_id = Some("i".into());
        let first = g.consumer_heartbeat(0, s.clone(), &t).assignment.expect("all");
        // Static leave (-2): kept with its assignment.
        let mut leave = beat("s1", LEAVE_GROUP_STATIC_MEMBER_EPOCH, &first);
        leave.instance_id = Some("i".into());
        assert_eq!(g.consumer_heartbeat(1, leave, &t).member_epoch, -2);
        assert_eq!(g.consumer_describe("g").members.len(), 1);
        // The same instance id while it is still present is refused.
        let mut other = s.clone();
        other.member_id = "s0".into();
        other.instance_id = Some("i".into());
        // It comes back under a new member id and gets the same partitions at once.
        let mut back = s.clone();
        back.member_id = "s2".into();
        let again = g.consumer_heartbeat(2, back.clone(), &t);
        assert_eq!(again.assignment, Some(first.clone()));
        assert_eq!(g.consumer_describe("g").group_epoch, 1, "no rebalance");
        let dup = g.consumer_heartbeat(3, other, &t);
        assert_eq!(dup.error_code, ErrorCode::UnreleasedInstanceId);
        // A dynamic member joins, the static one leaves for good: all partitions move.
        g.consumer_heartbeat(4, join("d", &["t"]), &t);
        let mut gone = beat("s2", LEAVE_GROUP_MEMBER_EPOCH, &first);
        gone.instance_id = Some("i".into());
        assert_eq!(g.consumer_heartbeat(5, gone, &t).member_epoch, -1);
        let d = g.consumer_heartbeat(6, beat("d", 2, &Assignment::new()), &t);
        assert_eq!(d.assignment, Some(parts(1, &[0, 1, 2, 3])));
    }

    #[test]
    fn regex_subscriptions_follow_new_topics() {
        let mut g = Groups::default();
        let mut t = topics(&[("orders-eu", 1, 1), ("payments", 2, 1)]);
        let mut r = join("a", &[]);
        r.subscribed_topic_names = None;
        r.subscribed_topic_regex = Some("orders-.*".into());
        let got = g.consumer_heartbeat(0, r, &t).assignment.expect("assignment");
        assert_eq!(got, parts(1, &[0]));
        t.0.insert("orders-us".into(), ([3; 16], 1));
        let later = CONSUMER_REGEX_REFRESH_INTERVAL_MS + 1;
        let got = g.consumer_heartbeat(later, beat("a", 1, &got), &t);
        let mut both = parts(1, &[0]);
        both.extend(parts(3, &[0]));
        assert_eq!(got.assignment, Some(both));
        let mut bad = join("b", &[]);
        bad.subscribed_topic_regex = Some("(".into());
        let answer = g.consumer_heartbeat(later, bad, &t);
        assert_eq!(answer.error_code, ErrorCode::InvalidRegularExpression);
    }

    fn classic_join(group: &str, member: &str, owned: &[(&str, &[i32])]) -> JoinRequest {
        let metadata = consumer_protocol::subscription_bytes(1, &["t"], owned);
        JoinRequest {
            group_id: group.into(),
            member_id: member.into(),
            group_instance_id: None,
            client_id: "c".into(),
            client_host: "h".into(),
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 10_000,
            protocol_type: "consumer".into(),
            protocols: vec![Protocol { name: "range".into(), metadata }],
            require_known_member_id: false,
            supports_skip_assignment: false,
        }
    }

    fn joined(g: &mut Groups, reply: u64) -> crate::group::state::JoinResponse {
        joined_of(&mut g.take_replies(), reply)
    }

    fn joined_of(replies: &mut Vec<(u64, Reply)>, reply: u64) -> crate::group::state::JoinResponse {
        let at = replies.iter().position(|(id, _)| *id == reply);
        match at.map(|at| replies.remove(at)) {
            Some((_, Reply::Join(r))) => r,
            other => panic!("{other:?}"),
        }
    }

    fn synced(g: &mut Groups, reply: u64) -> crate::group::state::SyncResponse {
        match g.take_replies().into_iter().find(|(id, _)| *id == reply) {
            Some((_, Reply::Sync(r))) => r,
            other => panic!("{other:?}"),
        }
    }

    fn sync_request(member: &str, generation: i32) -> crate::group::state::SyncRequest {
        crate::group::state::SyncRequest {
            group_id: "g".into(),
            generation_id: generation,
            member_id: member.into(),
            group_instance_id: None,
            protocol_type: Some("consumer".into()),
            protocol_name: Some("range".into()),
            assignments: Vec::new(),
        }
    }

    fn classic_beat(member: &str, generation: i32) -> crate::group::state::HeartbeatRequest {
        crate::group::state::HeartbeatRequest {
            group_id: "g".into(),
            generation_id: generation,
            member_id: member.into(),
            group_instance_id: None,
        }
    }

    fn partitions_of(assignment: &bytes::Bytes) -> Vec<i32> {
        let named = consumer_protocol::decode_assignment(assignment).expect("readable");
        named.into_iter().flat_map(|(_, p)| p).collect()
    }

    /// Two classic members in a Stable generation of group "g" holding t's 4 partitions.
    fn stable_classic_pair(g: &mut Groups, t: &Topics) -> (String, String) {
        // (v0-3 JoinGroup: no MEMBER_ID_REQUIRED; both wait for the initial delay.)
        g.join(0, 1, classic_join("g", "", &[]), t);
        g.join(1, 2, classic_join("g", "", &[]), t);
        for now in (1..=10).map(|s| s * 1_000) {
            g.advance(now); // the initial delay, extended while members arrive
        }
        let mut replies = g.take_replies();
        let (a, b) = (joined_of(&mut replies, 1), joined_of(&mut replies, 2));
        assert_eq!((a.error_code, b.error_code), (ErrorCode::None, ErrorCode::None));
        assert_eq!(a.leader, a.member_id, "the first member leads");
        let (a, b) = (a.member_id, b.member_id);
        let mut leader = sync_request(&a, 1);
        let half = |ps: &[i32]| {
            consumer_protocol::encode_assignment(1, &vec![("t".to_string(), ps.to_vec())])
        };
        leader.assignments = vec![(a.clone(), half(&[0, 1])), (b.clone(), half(&[2, 3]))];
        g.sync(10_001, 3, leader);
        assert_eq!(partitions_of(&synced(g, 3).assignment), [0, 1]);
        g.sync(10_002, 4, sync_request(&b, 1));
        assert_eq!(partitions_of(&synced(g, 4).assignment), [2, 3]);
        (a, b)
    }

    #[test]
    fn an_online_upgrade_keeps_classic_members_and_a_downgrade_brings_them_back() {
        let mut g = Groups::default();
        let t = topics(&[("t", 1, 4)]);
        let (a, b) = stable_classic_pair(&mut g, &t);
        // Stand-in for the client's join: one member at a time is restarted with
        // group.protocol=consumer.
        let n = g.consumer_heartbeat(20_000, join("n", &["t"]), &t);
        assert_eq!(n.error_code, ErrorCode::None, "{n:?}");
        assert_eq!((n.member_epoch, n.assignment.clone()), (2, Some(Assignment::new())));
        let d = g.consumer_describe("g");
        assert_eq!(d.error_code, ErrorCode::None);
        assert_eq!(d.members.iter().filter(|m| m.classic).count(), 2);
        assert!(g.describe("g").is_consumer_group);
        // The classic members hear of the rebalance from their heartbeats.
        assert_eq!(g.heartbeat(20_001, classic_beat(&a, 1)), ErrorCode::RebalanceInProgress);
        // Each rejoins owning what it has (cooperative): while it has partitions to give up
        // it keeps what it may keep, at generation 1, and is told to rejoin again; once it
        // reports only those it moves to generation 2.
        let mut held = Vec::new();
        for (member, owned, reply) in [(&a, [0, 1], 5), (&b, [2, 3], 9)] {
            assert_eq!(
                g.heartbeat(20_001, classic_beat(member, 1)),
                ErrorCode::RebalanceInProgress
            );
            g.join(20_002, reply, classic_join("g", member, &[("t", &owned)]), &t);
            let j = joined(&mut g, reply);
            assert_eq!(j.error_code, ErrorCode::None, "{j:?}");
            assert_eq!(j.protocol_name.as_deref(), Some("range"));
            assert!(j.members.is_empty() && j.leader.is_empty());
            g.sync(20_003, reply + 1, sync_request(member, j.generation_id));
            let mut kept = partitions_of(&synced(&mut g, reply + 1).assignment);
            if j.generation_id == 1 {
                assert!(kept.len() < 2, "{member} gives something up: {kept:?}");
                let beat = g.heartbeat(20_004, classic_beat(member, 1));
                assert_eq!(beat, ErrorCode::RebalanceInProgress);
                g.join(20_005, reply + 2, classic_join("g", member, &[("t", &kept)]), &t);
                let j = joined(&mut g, reply + 2);
                assert_eq!(j.generation_id, 2, "{j:?}");
                g.sync(20_006, reply + 3, sync_request(member, 2));
                kept = partitions_of(&synced(&mut g, reply + 3).assignment);
            } else {
                assert_eq!(j.generation_id, 2, "{j:?}");
            }
            held.push(kept);
        }
        let (a_now, kept_b) = (held[0].clone(), held[1].clone());
        // n gets the rest; every partition is held once.
        let n = g.consumer_heartbeat(20_012, beat("n", 2, &Assignment::new()), &t);
        let n_parts: Vec<i32> =
            n.assignment.clone().unwrap_or_default().values().flatten().copied().collect();
        let mut all: Vec<i32> = a_now.iter().chain(&kept_b).chain(&n_parts).copied().collect();
        all.sort();
        assert_eq!(all, [0, 1, 2, 3], "a {a_now:?} b {kept_b:?} n {n_parts:?}");
        // An old-version commit from a classic member is fine; a stale generation is not.
        let commit = |member: &str, generation| CommitRequest {
            group_id: "g".into(),
            generation_id: generation,
            member_id: member.into(),
            group_instance_id: None,
            retention_time_ms: -1,
            api_version: 2,
            partitions: vec![CommitPartition {
                topic: "t".into(),
                partition: 0,
                offset: Offset(5),
                leader_epoch: LeaderEpoch(-1),
                metadata: None,
            }],
        };
        assert!(g.commit_offsets(20_013, commit(&a, 2)).is_ok());
        assert_eq!(g.commit_offsets(20_013, commit(&a, 1)), Err(ErrorCode::IllegalGeneration));
        // The group survives a restart with its classic members.
        let mut replayed = Groups::default();
        for record in g.snapshot() {
            replayed.replay(30_000, record);
        }
        replayed.finish_load(30_000);
        let d = replayed.consumer_describe("g");
        assert_eq!(d.members.iter().filter(|m| m.classic).count(), 2);
        // n leaves: the last consumer-protocol member, so the group is classic again, its
        // members asked to rejoin.
        let left = g.consumer_heartbeat(20_014, beat("n", -1, &Assignment::new()), &t);
        assert_eq!(left.error_code, ErrorCode::None);
        assert_eq!(g.consumer_describe("g").error_code, ErrorCode::GroupIdNotFound);
        assert_eq!(g.state_of("g"), Some(crate::group::state::GroupState::PreparingRebalance));
        assert_eq!(g.heartbeat(20_015, classic_beat(&a, 2)), ErrorCode::RebalanceInProgress);
        let listed = g.list(&[]);
        assert_eq!(listed[0].group_type, "classic");
        g.join(20_016, 12, classic_join("g", &a, &[]), &t);
        g.join(20_017, 13, classic_join("g", &b, &[]), &t);
        let ja = joined(&mut g, 12);
        assert_eq!((ja.error_code, ja.generation_id), (ErrorCode::None, 3));
    }

    #[test]
    fn no_downgrade_to_a_classic_group_beyond_its_max_size() {
        // Kafka's validateOnlineDowngradeWithFencedMembers: two classic members would be more
        // than group.max.size 1, so the group stays a consumer group when n leaves (with
        // room for both, the same leave downgrades: the test above).
        let mut g = Groups::default();
        let t = topics(&[("t", 1, 4)]);
        stable_classic_pair(&mut g, &t);
        let n = g.consumer_heartbeat(20_000, join("n", &["t"]), &t);
        assert_eq!(n.error_code, ErrorCode::None, "{n:?}");
        g.config_mut().classic_max_size = 1;
        let left = g.consumer_heartbeat(20_001, beat("n", -1, &Assignment::new()), &t);
        assert_eq!(left.error_code, ErrorCode::None);
        let d = g.consumer_describe("g");
        assert_eq!(d.error_code, ErrorCode::None, "still a consumer group");
        assert_eq!(d.members.iter().filter(|m| m.classic).count(), 2);
    }

    #[test]
    fn a_classic_static_member_replacing_the_last_consumer_member_downgrades_at_once() {
        let mut g = Groups::default();
        let t = topics(&[("t", 1, 4)]);
        stable_classic_pair(&mut g, &t);
        let mut n = join("n", &["t"]);
        n.instance_id = Some("i".into());
        assert_eq!(g.consumer_heartbeat(20_000, n, &t).error_code, ErrorCode::None);
        assert!(g.describe("g").is_consumer_group);
        // Kafka's validateOnlineDowngradeWithReplacedMemberId: a classic member takes the
        // instance id's place, and the group is classic at once, Stable, no rebalance.
        let replacing =
            JoinRequest { group_instance_id: Some("i".into()), ..classic_join("g", "", &[]) };
        g.join(20_001, 7, replacing, &t);
        let j = joined(&mut g, 7);
        assert_eq!(j.error_code, ErrorCode::None, "{j:?}");
        assert!(!g.describe("g").is_consumer_group);
        assert_eq!(g.state_of("g"), Some(crate::group::state::GroupState::Stable));
        assert_eq!(g.list(&[])[0].group_type, "classic");
    }

    #[test]
    fn a_static_member_leaving_with_epoch_minus_one_downgrades_the_group() {
        let mut g = Groups::default();
        let t = topics(&[("t", 1, 4)]);
        stable_classic_pair(&mut g, &t);
        let mut n = join("n", &["t"]);
        n.instance_id = Some("i".into());
        assert_eq!(g.consumer_heartbeat(20_000, n, &t).error_code, ErrorCode::None);
        let leave = |member: &str| ConsumerHeartbeat {
            instance_id: Some("i".into()),
            ..beat(member, -1, &Assignment::new())
        };
        // The instance id must name the member (Kafka's throwIfInstanceIdIsFenced).
        let wrong = g.consumer_heartbeat(20_001, leave("x"), &t);
        assert_eq!(wrong.error_code, ErrorCode::FencedInstanceId);
        assert!(g.describe("g").is_consumer_group);
        // Kafka's consumerGroupLeave: fenced as a dynamic member is, so the group of the two
        // classic members is classic again, rebalancing.
        assert_eq!(g.consumer_heartbeat(20_002, leave("n"), &t).error_code, ErrorCode::None);
        assert_eq!(g.consumer_describe("g").error_code, ErrorCode::GroupIdNotFound);
        assert_eq!(g.state_of("g"), Some(crate::group::state::GroupState::PreparingRebalance));
    }

    #[test]
    fn migration_policy_disabled_refuses_the_upgrade_and_the_downgrade() {
        let config = GroupConfig {
            migration_policy: crate::model::settings::MigrationPolicy::Disabled,
            ..GroupConfig::default()
        };
        let mut g = Groups::new(config);
        let t = topics(&[("t", 1, 4)]);
        stable_classic_pair(&mut g, &t);
        let n = g.consumer_heartbeat(20_000, join("n", &["t"]), &t);
        assert_eq!(n.error_code, ErrorCode::GroupIdNotFound);
        assert_eq!(n.error_message.as_deref(), Some("Group g is not a consumer group."));
        // A classic member of another protocol type is refused by a consumer group.
        let x = ConsumerHeartbeat { group_id: "h".into(), ..join("x", &["t"]) };
        assert_eq!(g.consumer_heartbeat(0, x, &t).error_code, ErrorCode::None);
        let mut other = classic_join("h", "", &[]);
        other.protocol_type = "connect".into();
        g.join(1, 7, other, &t);
        assert_eq!(joined(&mut g, 7).error_code, ErrorCode::InconsistentGroupProtocol);
        // Under `disabled`, a classic member still joins a consumer group (Kafka admits it
        // under every policy), but the group stays a consumer group when the last
        // consumer-protocol member leaves.
        g.join(2, 8, classic_join("h", "k", &[]), &t);
        assert_eq!(joined(&mut g, 8).error_code, ErrorCode::None);
        let mut leave = beat("x", -1, &Assignment::new());
        leave.group_id = "h".into();
        g.consumer_heartbeat(3, leave, &t);
        let d = g.consumer_describe("h");
        assert_eq!((d.error_code, d.members.len()), (ErrorCode::None, 1));
        let listed = g.list(&[]);
        let types: Vec<_> = listed.iter().map(|l| (l.group_id.as_str(), l.group_type)).collect();
        assert_eq!(types, [("g", "classic"), ("h", "consumer")]);
    }

    #[test]
    fn a_snapshot_replays_to_the_same_groups_and_offsets() {
        let mut g = Groups::default();
        let t = topics(&[("t", 1, 3)]);
        g.consumer_heartbeat(0, join("a", &["t"]), &t);
        g.consumer_heartbeat(1, join("b", &["t"]), &t);
        g.consumer_heartbeat(2, beat("a", 1, &parts(1, &[0, 1, 2])), &t);
        let commit = CommitRequest {
            group_id: "g".into(),
            generation_id: 1,
            member_id: "a".into(),
            group_instance_id: None,
            retention_time_ms: -1,
            api_version: 9,
            partitions: vec![CommitPartition {
                topic: "t".into(),
                partition: 1,
                offset: Offset(9),
                leader_epoch: LeaderEpoch::NONE,
                metadata: None,
            }],
        };
        assert!(g.commit_offsets(3, commit).is_ok());
        // Both ways back: the records as written, and a snapshot.
        let written = g.take_records();
        for records in [written, g.snapshot()] {
            let mut back = Groups::default();
            for record in records {
                back.replay(10, record);
            }
            back.finish_load(10);
            assert_eq!(back.consumer_describe("g"), g.consumer_describe("g"));
            assert_eq!(back.fetch_offsets("g", None), g.fetch_offsets("g", None));
            assert!(back.pending_timers() >= 2, "sessions restart after a load");
        }
    }

    /// A restored member's session is the one its group's configs set (here 2 s, the
    /// broker's is 45 s): it is fenced 2 s after the load, not 45 s.
    #[test]
    fn a_restored_member_gets_its_groups_session_timeout() {
        let mut g = Groups::default();
        let t = topics(&[("t", 1, 3)]);
        g.consumer_heartbeat(0, join("a", &["t"]), &t);
        for (session, fenced) in [(Some(2_000), true), (None, false)] {
            let mut back = Groups::default();
            for record in g.snapshot() {
                back.replay(10, record);
            }
            let timeouts = ConsumerTimeouts { session_timeout_ms: session, ..Default::default() };
            back.finish_load_of(10, |_| true, |_| timeouts);
            back.advance(2_011);
            assert_eq!(back.consumer_describe("g").members.is_empty(), fenced, "{session:?}");
        }
    }

    /// Random joins, heartbeats (each client reporting what it owns and taking what it is
    /// given at once), leaves, crashes and static returns: no partition is ever held by two
    /// clients, and once everyone heartbeats the group settles with every partition held.
    #[test]
    fn random_membership_never_gives_a_partition_to_two_members() {
        let seed =
            crate::model::test_seed("random_membership_never_gives_a_partition_to_two_members");
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        for _ in 0..40 {
            let t = topics(&[("t", 1, rng.gen_range(1..9)), ("u", 2, rng.gen_range(0..5))]);
            let mut g = Groups::default();
            // client id -> (member id, epoch, owned, static instance)
            let mut clients: BTreeMap<u32, (String, i32, Assignment, Option<String>)> =
                BTreeMap::new();
            let mut now = 0i64;
            let mut next = 0u32;
            for _ in 0..200 {
                now += rng.gen_range(0..3_000);
                match rng.gen_range(0..10) {
                    0 | 1 if clients.len() < 5 => {
                        next += 1;
                        let instance = rng.gen_bool(0.3).then(|| format!("i{next}"));
                        let mut r = join(
                            &format!("m{next}"),
                            if rng.gen_bool(0.5) { &["t", "u"] } else { &["t"] },
                        );
                        r.instance_id = instance.clone();
                        let answer = g.consumer_heartbeat(now, r, &t);
                        if answer.error_code == ErrorCode::None {
                            let owned = answer.assignment.unwrap_or_default();
                            clients.insert(
                                next,
                                (answer.member_id, answer.member_epoch, owned, instance),
                            );
                        }
                    }
                    2 if !clients.is_empty() => {
                        let id = *clients.keys().nth(rng.gen_range(0..clients.len())).unwrap();
                        let (member, _, owned, instance) = clients.remove(&id).unwrap();
                        let epoch = if instance.is_some() && rng.gen_bool(0.5) { -2 } else { -1 };
                        let mut r = beat(&member, epoch, &owned);
                        r.instance_id = instance;
                        g.consumer_heartbeat(now, r, &t);
                    }
                    3 if !clients.is_empty() => {
                        // A crash: the client is gone, the coordinator finds out later.
                        let id = *clients.keys().nth(rng.gen_range(0..clients.len())).unwrap();
                        clients.remove(&id);
                    }
                    _ if !clients.is_empty() => {
                        let id = *clients.keys().nth(rng.gen_range(0..clients.len())).unwrap();
                        let (member, epoch, owned, instance) = clients[&id].clone();
                        let mut r = beat(&member, epoch, &owned);
                        r.instance_id = instance;
                        let answer = g.consumer_heartbeat(now, r, &t);
                        if answer.error_code != ErrorCode::None {
                            clients.remove(&id); // fenced: it drops everything
                        } else if let Some(entry) = clients.get_mut(&id) {
                            entry.1 = answer.member_epoch;
                            if let Some(a) = answer.assignment {
                                entry.2 = a;
                            }
                        }
                    }
                    _ => {}
                }
                g.advance(now);
                // Clients whose member was fenced by a timeout still think they own things
                // until their next heartbeat; a fenced member's partitions may move only
                // after its session expired, which a live client would have noticed.
                let live: BTreeSet<String> =
                    g.consumer_describe("g").members.iter().map(|m| m.member_id.clone()).collect();
                clients.retain(|_, c| live.contains(&c.0));
                let mut seen = BTreeSet::new();
                for (member, _, owned, _) in clients.values() {
                    for (topic, set) in owned {
                        for p in set {
                            assert!(seen.insert((*topic, *p)), "{member} shares {p} (seed {seed})");
                        }
                    }
                }
            }
            // Settle: every client heartbeats until nothing changes.
            for _ in 0..10 {
                for c in clients.values_mut() {
                    now += 1;
                    let mut r = beat(&c.0, c.1, &c.2);
                    r.instance_id = c.3.clone();
                    let answer = g.consumer_heartbeat(now, r, &t);
                    assert_eq!(answer.error_code, ErrorCode::None, "seed {seed}");
                    c.1 = answer.member_epoch;
                    if let Some(a) = answer.assignment {
                        c.2 = a;
                    }
                }
            }
            let d = g.consumer_describe("g");
            if d.members.len() == clients.len() && !clients.is_empty() {
                assert_eq!(d.state, "Stable", "seed {seed}");
            }
        }
    }

    /// A client in the exhaustive model: what it holds, and the last assignment it was sent
    /// and has not applied yet (a real client revokes and adds between heartbeats).
    #[derive(Debug, Clone, Default)]
    struct Client {
        joined: bool,
        gone: bool,
        epoch: i32,
        owned: Assignment,
        pending: Option<Assignment>,
    }

    #[derive(Debug, Clone, Copy)]
    enum Step {
        Join(usize),
        Beat(usize),
        Apply(usize),
        Leave(usize),
    }

    struct Model {
        topics: Topics,
        subscriptions: Vec<Vec<&'static str>>,
        cfg: GroupConfig,
        leaves: usize,
    }

    impl Model {
        fn steps(&self, clients: &[Client]) -> Vec<Step> {
            let mut out = Vec::new();
            for (i, c) in clients.iter().enumerate() {
                if !c.joined {
                    // Clients join in order (the others are the same cases renamed).
                    if i == 0 || clients[i - 1].joined {
                        out.push(Step::Join(i));
                    }
                } else if !c.gone {
                    out.push(Step::Beat(i));
                    if c.pending.as_ref().is_some_and(|p| *p != c.owned) {
                        out.push(Step::Apply(i));
                    }
                    out.push(Step::Leave(i));
                }
            }
            out
        }

        fn run(&self, g: &mut ConsumerGroup, clients: &mut [Client], step: Step, now: i64) {
            let mut fx = Effects::default();
            let name = |i: usize| format!("m{i}");
            match step {
                Step::Join(i) => {
                    let r = g.heartbeat(
                        now,
                        join(&name(i), &self.subscriptions[i]),
                        &self.topics,
                        &self.cfg,
                        &mut fx,
                    );
                    assert_eq!(r.error_code, ErrorCode::None, "{r:?}");
                    clients[i].joined = true;
                    clients[i].epoch = r.member_epoch;
                    clients[i].pending = r.assignment;
                }
                Step::Beat(i) => {
                    let c = &mut clients[i];
                    let r = g.heartbeat(
                        now,
                        beat(&name(i), c.epoch, &c.owned),
                        &self.topics,
                        &self.cfg,
                        &mut fx,
                    );
                    assert_eq!(r.error_code, ErrorCode::None, "{r:?}");
                    c.epoch = r.member_epoch;
                    if r.assignment.is_some() {
                        c.pending = r.assignment;
                    }
                }
                Step::Apply(i) => {
                    let c = &mut clients[i];
                    c.owned = c.pending.take().unwrap_or_default();
                }
                Step::Leave(i) => {
                    let c = &mut clients[i];
                    // A leaving client revokes everything first.
                    c.owned.clear();
                    c.pending = None;
                    c.gone = true;
                    let r = g.heartbeat(
                        now,
                        beat(&name(i), LEAVE_GROUP_MEMBER_EPOCH, &Assignment::new()),
                        &self.topics,
                        &self.cfg,
                        &mut fx,
                    );
                    assert_eq!(r.error_code, ErrorCode::None, "{r:?}");
                }
            }
        }

        /// No partition is held by two clients.
        fn check_disjoint(clients: &[Client], trace: &[Step]) {
            let mut seen = BTreeSet::new();
            for c in clients {
                for (t, set) in &c.owned {
                    for p in set {
                        assert!(seen.insert((*t, *p)), "{p} held twice after {trace:?}");
                    }
                }
            }
        }

        /// Every client applies and heartbeats until nothing changes: the group is Stable,
        /// each client holds its target, and every subscribed partition is held once.
        fn check_settles(&self, mut g: ConsumerGroup, mut clients: Vec<Client>, trace: &[Step]) {
            let mut now = 1_000;
            for round in 0..12 {
                let mut changed = false;
                for i in 0..clients.len() {
                    if clients[i].joined && !clients[i].gone {
                        if clients[i].pending.is_some() {
                            self.run(&mut g, &mut clients, Step::Apply(i), now);
                            Self::check_disjoint(&clients, trace);
                            changed = true;
                        }
                        let epoch = clients[i].epoch;
                        self.run(&mut g, &mut clients, Step::Beat(i), now);
                        changed |= epoch != clients[i].epoch || clients[i].pending.is_some();
                        now += 1;
                    }
                }
                if !changed && round > 0 {
                    break;
                }
            }
            let live: Vec<&Client> = clients.iter().filter(|c| c.joined && !c.gone).collect();
            if live.is_empty() {
                assert_eq!(g.state_name(), "Empty", "after {trace:?}");
                return;
            }
            assert_eq!(g.state_name(), "Stable", "after {trace:?}: {g:?}");
            let held: usize = live.iter().map(|c| assignor::size(&c.owned)).sum();
            let subscribed: usize = g
                .subscribed_topic_names()
                .iter()
                .filter_map(|n| self.topics.lookup(n))
                .map(|(_, p)| p as usize)
                .sum();
            assert_eq!(held, subscribed, "after {trace:?}: {clients:?}");
            for (i, c) in clients.iter().enumerate() {
                if c.joined && !c.gone {
                    assert_eq!(c.owned, g.target[&format!("m{i}")], "after {trace:?}");
                }
            }
        }

        fn explore(
            &mut self,
            g: &ConsumerGroup,
            clients: &[Client],
            depth: usize,
            trace: &mut Vec<Step>,
        ) {
            Self::check_disjoint(clients, trace);
            let steps = self.steps(clients);
            if depth == 0 || steps.is_empty() {
                self.leaves += 1;
                self.check_settles(g.clone(), clients.to_vec(), trace);
                return;
            }
            for step in steps {
                let (mut g, mut clients) = (g.clone(), clients.to_vec());
                self.run(&mut g, &mut clients, step, trace.len() as i64);
                trace.push(step);
                self.explore(&g, &clients, depth - 1, trace);
                trace.pop();
            }
        }
    }

    /// Exhaustive small cases of the incremental protocol: every sequence of up to `depth`
    /// steps (a client joins, heartbeats reporting what it holds, applies the last
    /// assignment it was sent, or leaves) never has a partition held by two clients, and
    /// from every end state the group settles to Stable with every partition held once.
    #[test]
    fn exhaustive_small_cases_never_share_a_partition_and_settle() {
        for (subscriptions, depth) in
            [(vec![vec!["t"], vec!["t"]], 9), (vec![vec!["t"], vec!["t", "u"], vec!["u"]], 6)]
        {
            let mut model = Model {
                topics: topics(&[("t", 1, 3), ("u", 2, 2)]),
                subscriptions,
                cfg: GroupConfig::default(),
                leaves: 0,
            };
            let clients = vec![Client::default(); model.subscriptions.len()];
            model.explore(&ConsumerGroup::new("g", 0), &clients, depth, &mut Vec::new());
            assert!(model.leaves > 1_000, "{}", model.leaves);
        }
    }
}
