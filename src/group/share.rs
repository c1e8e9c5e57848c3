//! Share groups (KIP-932): membership, the server-side assignment of partitions to members
//! (several members may share a partition), each member's share session, and the share
//! partitions (`share_partition`) whose records the group hands out and takes
//! acknowledgements for. Kafka's names: `shareGroupHeartbeat`, `ShareGroup`, the
//! `SimpleAssignor`, `ShareSessionCache`, `SharePartitionManager`.
//!
//! Kafka splits this over the group coordinator (membership), the partition leaders
//! (`SharePartition`, where ShareFetch goes) and the share coordinator (`__share_group_state`).
//! Spate keeps all of a group's share state on the group's coordinator shard, beside its
//! membership, and persists each share partition as one record of the group's offsets log
//! (`records::Record::Share`; clustered, the group's replicated `__consumer_offsets`
//! partition); the ShareFetch handler, on the partitions' leader, reads the data partitions
//! and asks this state which records to hand out (`share_call`, across nodes in a cluster).
//! A member has one share session per broker it fetches from (`SessionKey`).
//!
//! Membership: a member joins with epoch 0 and its subscribed topic names; every join, leave,
//! session timeout, subscription change or partition count change moves the group epoch, and
//! the next heartbeat computes the assignment (assignment epoch = group epoch). Share groups
//! have no revocation: a member is told its new partitions on its next heartbeat, with the
//! new epoch. Members are not persisted: after a restart they rejoin (UNKNOWN_MEMBER_ID),
//! as consumer group members do after a lost record.
//!
//! Time: session timeouts and each share partition's earliest acquisition lock sit on the
//! keyed timers (`group::timers`, the timing wheel); the coordinator's tick calls `advance`.
//!
//! Pure: time (ms) in, records out (`take_records`); no I/O.

use std::collections::{BTreeMap, BTreeSet};

use crate::group::assignor::{Assignment, TopicId};
use crate::group::consumer::{HeartbeatResponse, TopicView};
use crate::group::records::Record;
use crate::group::share_partition::{
    AckBatch, AcquireLimits, Acquired, Acquisition, Archived, DeadLetterProducer, Letter, Release,
    SharePartition, Stored,
};
use crate::group::state::ListedGroup;
use crate::group::timers::Timers;
use crate::model::dynamic_config::RedeliveryBackoff;
use crate::model::settings::GroupConfig;
use crate::model::{ErrorCode, NodeId, TopicPartition};

/// The protocol type and group type share groups are listed with.
pub const SHARE_PROTOCOL_TYPE: &str = "share";
/// The one assignor share groups have (Kafka's `SimpleAssignor`).
pub const SHARE_ASSIGNOR: &str = "simple";
/// ShareGroupHeartbeat's leave epoch.
pub const LEAVE_GROUP_MEMBER_EPOCH: i32 = -1;
/// Share session epochs: 0 opens a session, -1 closes it.
pub const INITIAL_SESSION_EPOCH: i32 = 0;
pub const FINAL_SESSION_EPOCH: i32 = -1;

/// A started share partition's offsets, what DescribeShareGroupOffsets reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShareOffset {
    /// The share-partition start offset (SPSO).
    pub start: i64,
    /// The first offset never handed out (SPEO).
    pub end: i64,
    /// The records between start and end whose delivery is not complete (Available or
    /// Acquired; a record accepted or archived is complete, one waiting for its dead letter
    /// too).
    pub incomplete: i64,
}

impl ShareOffset {
    /// KIP-1226's lag: the records below `high_watermark` whose delivery is not complete
    /// (Kafka's high watermark - start - delivery-complete count).
    pub fn lag(&self, high_watermark: i64) -> i64 {
        (high_watermark - self.end).max(0) + self.incomplete
    }
}

/// Each started share partition of a group and its offsets.
pub type StartOffsets = Vec<(TopicPartition, ShareOffset)>;

/// A group's settings: the broker's, with the group's configs over them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShareSettings {
    /// `share.auto.offset.reset`: earliest (true) or latest.
    pub reset_earliest: bool,
    /// `share.isolation.level`: read_committed (true) or read_uncommitted.
    pub read_committed: bool,
    /// `share.record.lock.duration.ms`
    pub lock_ms: i64,
    pub session_timeout_ms: i32,
    pub heartbeat_interval_ms: i32,
    /// `group.share.assignment.interval.ms`
    pub assignment_interval_ms: i64,
    pub delivery_limit: i16,
    pub max_locks: i64,
    /// `group.share.max.size`: members at most.
    pub max_size: usize,
    /// The group names a dead-letter topic (`errors.deadletterqueue.topic.name`, KIP-1191):
    /// records archived without being accepted wait for their dead letters.
    pub dead_letters: bool,
    /// `spate.share.redelivery.backoff.ms`: how long a released record waits.
    pub backoff: RedeliveryBackoff,
    /// When the call these settings were taken for is made (ms): where back-offs start and
    /// which have passed.
    pub now_ms: i64,
}

impl ShareSettings {
    pub fn of(config: &GroupConfig) -> ShareSettings {
        ShareSettings {
            reset_earliest: false,
            read_committed: false,
            lock_ms: i64::from(config.share_record_lock_duration_ms),
            session_timeout_ms: config.share_session_timeout_ms,
            heartbeat_interval_ms: config.share_heartbeat_interval_ms,
            assignment_interval_ms: i64::from(config.share_assignment_interval_ms),
            delivery_limit: config.share_delivery_count_limit as i16,
            max_locks: i64::from(config.share_partition_max_record_locks),
            max_size: config.share_max_size,
            dead_letters: false,
            backoff: RedeliveryBackoff::default(),
            now_ms: 0,
        }
    }

    /// What releasing a record does under these settings.
    pub fn release(&self) -> Release {
        Release { delivery_limit: self.delivery_limit, backoff: self.backoff, now_ms: self.now_ms }
    }
}

#[derive(Debug, Clone, Default)]
pub struct ShareHeartbeat {
    pub group_id: String,
    pub member_id: String,
    pub member_epoch: i32,
    pub rack_id: Option<String>,
    pub subscribed_topic_names: Option<Vec<String>>,
    pub client_id: String,
    pub client_host: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DescribedShareGroup {
    pub group_id: String,
    pub error_code: ErrorCode,
    pub error_message: Option<String>,
    pub state: &'static str,
    pub group_epoch: i32,
    pub assignment_epoch: i32,
    pub members: Vec<DescribedShareMember>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DescribedShareMember {
    pub member_id: String,
    pub rack_id: Option<String>,
    pub member_epoch: i32,
    pub client_id: String,
    pub client_host: String,
    pub subscribed_topic_names: Vec<String>,
    pub assignment: Assignment,
}

/// One partition named by a ShareFetch or ShareAcknowledge, with its acknowledgements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionPartition {
    pub tp: TopicPartition,
    pub topic_id: TopicId,
    pub acks: Vec<AckBatch>,
}

/// The first half of a ShareFetch: the share session, the acknowledgements it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchOpen {
    pub group_id: String,
    pub member_id: String,
    /// The broker the member fetches from (`SessionKey`).
    pub node: NodeId,
    pub session_epoch: i32,
    pub partitions: Vec<SessionPartition>,
    pub forgotten: Vec<TopicPartition>,
}

/// Where to read one partition of the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchPlan {
    pub tp: TopicPartition,
    pub topic_id: TopicId,
    /// None: the share partition starts now, at the log start (reset earliest) or the high
    /// watermark (latest); the reader looks that offset up.
    pub fetch_offset: Option<i64>,
    pub reset_earliest: bool,
    /// `share.isolation.level=read_committed`: read below the last stable offset, and the
    /// records of aborted transactions are never handed out.
    pub read_committed: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FetchOpened {
    /// The request's error (share session errors); nothing else applies when set.
    pub error_code: ErrorCode,
    /// Each acknowledged partition's outcome.
    pub acks: Vec<(TopicPartition, ErrorCode)>,
    /// The partitions to read (none for a closing request).
    pub plan: Vec<FetchPlan>,
    pub lock_ms: i64,
}

/// What the reader found in one partition, for the second half of a ShareFetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareRead {
    pub tp: TopicPartition,
    /// The share partition's start when the plan said to initialize it.
    pub init_offset: Option<i64>,
    /// The log start (a share partition below it moves up).
    pub log_start: i64,
    /// Where the read began: a read that began past the share partition's end (another
    /// fetch started it meanwhile at an earlier offset) hands nothing out, so that no offset
    /// between is taken for a gap in the log.
    pub read_from: i64,
    /// The offset ranges of the batches read, in order, and whether each is a control batch
    /// (transaction markers are never handed out: the share partition moves past them).
    pub batches: Vec<(i64, i64, bool)>,
}

/// A record whose dead letter is to be written next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub group_id: String,
    pub tp: TopicPartition,
    pub letter: Letter,
    /// The producer of the share partition's dead letters so far (None: none yet).
    pub producer: Option<DeadLetterProducer>,
}

/// A ShareAcknowledge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckRequest {
    pub group_id: String,
    pub member_id: String,
    /// The broker the member acknowledges at (`SessionKey`).
    pub node: NodeId,
    pub session_epoch: i32,
    pub partitions: Vec<SessionPartition>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum TimerKind {
    Session,
    Locks,
}

/// A timer: a member's session (partition None) or a share partition's earliest lock.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct TimerKey {
    kind: TimerKind,
    group: String,
    member: String,
    tp: Option<TopicPartition>,
}

#[derive(Debug, Clone, Default)]
struct ShareMember {
    member_epoch: i32,
    previous_member_epoch: i32,
    rack_id: Option<String>,
    client_id: String,
    client_host: String,
    topics: Vec<String>,
    assignment: Assignment,
    /// The assignment changed since the member was last told.
    assignment_unsent: bool,
}

/// A share session: a member's with one broker. A client keeps one share session per broker
/// it fetches from (the leader of the partitions it reads there), each with its own epochs,
/// as Kafka's `ShareSessionCache` does on each broker; a single node's members have one.
type SessionKey = (String, NodeId);

#[derive(Debug, Clone, Default)]
struct Session {
    next_epoch: i32,
    partitions: BTreeMap<TopicPartition, TopicId>,
}

#[derive(Debug, Clone, Default)]
struct ShareGroup {
    group_epoch: i32,
    assignment_epoch: i32,
    members: BTreeMap<String, ShareMember>,
    /// The subscribed topics' ids and partition counts the assignment was computed for.
    subscribed: BTreeMap<String, (TopicId, i32)>,
    partitions: BTreeMap<TopicPartition, SharePartition>,
    sessions: BTreeMap<SessionKey, Session>,
    /// Subscribed partitions initialized for the group though not started yet (Kafka's
    /// initialized share partitions; a started one, in `partitions`, is initialized too):
    /// only these are assigned.
    initialized: BTreeSet<TopicPartition>,
    /// When the assignment was last computed (ms; None: never).
    assigned_at: Option<i64>,
}

impl ShareGroup {
    fn has_session(&self, member_id: &str) -> bool {
        self.sessions.keys().any(|(member, _)| member == member_id)
    }

    fn is_initialized(&self, tp: &TopicPartition) -> bool {
        self.partitions.contains_key(tp) || self.initialized.contains(tp)
    }

    /// Initializes the subscribed partitions that are not yet (Kafka's
    /// `InitializeShareGroupState`; here nothing waits for it): they are assigned from the
    /// next assignment on. Whether there were any.
    fn initialize_subscribed(&mut self) -> bool {
        let mut new = Vec::new();
        for (name, (_, partitions)) in &self.subscribed {
            for partition in 0..(*partitions).max(0) {
                let tp = TopicPartition::new(name.as_str().into(), partition);
                if !self.is_initialized(&tp) {
                    new.push(tp);
                }
            }
        }
        let any = !new.is_empty();
        self.initialized.extend(new);
        any
    }
}

impl ShareGroup {
    /// Takes the share partitions of `topic` out of the group: their names.
    fn take_partitions_of(&mut self, topic: &str) -> Vec<TopicPartition> {
        self.initialized.retain(|tp| tp.topic.as_ref() != topic);
        let tps: Vec<TopicPartition> =
            self.partitions.keys().filter(|tp| tp.topic.as_ref() == topic).cloned().collect();
        for tp in &tps {
            self.partitions.remove(tp);
        }
        tps
    }
}

/// Every share group a shard coordinates.
pub struct Shares {
    config: GroupConfig,
    groups: BTreeMap<String, ShareGroup>,
    timers: Timers<TimerKey, TimerKey>,
    records: Vec<Record>,
    /// Records archived without being accepted, for the dead-letter writer (`take_archived`).
    archived: Vec<(String, TopicPartition, Archived)>,
    /// Partitions with records made available again (released, locks ended), whose waiting
    /// ShareFetches are woken (`take_freed`).
    freed: Vec<TopicPartition>,
}

impl Shares {
    pub fn new(config: GroupConfig) -> Shares {
        Shares {
            config,
            groups: BTreeMap::new(),
            timers: Timers::default(),
            records: Vec::new(),
            archived: Vec::new(),
            freed: Vec::new(),
        }
    }

    pub fn config(&self) -> &GroupConfig {
        &self.config
    }

    pub fn contains(&self, group_id: &str) -> bool {
        self.groups.contains_key(group_id)
    }

    /// The topics some share group holds share state of.
    pub fn topic_names(&self) -> BTreeSet<String> {
        let tps = self.groups.values().flat_map(|g| g.partitions.keys());
        tps.map(|tp| tp.topic.to_string()).collect()
    }

    pub fn group_count(&self) -> usize {
        self.groups.len()
    }

    pub fn take_records(&mut self) -> Vec<Record> {
        std::mem::take(&mut self.records)
    }

    pub fn take_archived(&mut self) -> Vec<(String, TopicPartition, Archived)> {
        std::mem::take(&mut self.archived)
    }

    pub fn take_freed(&mut self) -> Vec<TopicPartition> {
        let mut freed = std::mem::take(&mut self.freed);
        freed.sort();
        freed.dedup();
        freed
    }

    pub fn next_deadline(&self) -> Option<i64> {
        self.timers.next_deadline()
    }

    // ----- membership -------------------------------------------------------------------

    /// ShareGroupHeartbeat, after the handler's checks (Kafka's `shareGroupHeartbeat`).
    pub fn heartbeat(
        &mut self,
        now: i64,
        req: ShareHeartbeat,
        view: &dyn TopicView,
        settings: ShareSettings,
    ) -> HeartbeatResponse {
        let group_id = req.group_id.clone();
        let known = self.groups.get(&group_id).and_then(|g| g.members.get(&req.member_id));
        let known_epochs = known.map(|member| (member.member_epoch, member.previous_member_epoch));
        if req.member_epoch != 0 {
            let Some((known_epoch, previous_epoch)) = known_epochs else {
                return HeartbeatResponse::error(
                    ErrorCode::UnknownMemberId,
                    format!("Member {} is not a member of group {group_id}.", req.member_id),
                );
            };
            // Kafka's `throwIfShareGroupMemberEpochIsInvalid`: the previous epoch is taken too
            // (the answer that moved it may have been lost).
            let received = req.member_epoch;
            let relation = if received > known_epoch {
                Some("greater")
            } else if received < known_epoch && received != previous_epoch {
                Some("smaller")
            } else {
                None
            };
            if let Some(relation) = relation.filter(|_| received != LEAVE_GROUP_MEMBER_EPOCH) {
                return HeartbeatResponse::error(
                    ErrorCode::FencedMemberEpoch,
                    format!(
                        "The share group member has a {relation} member epoch ({received}) than \
                         the one known by the group coordinator ({known_epoch}). The member must \
                         abandon all its partitions and rejoin."
                    ),
                );
            }
        }
        if req.member_epoch == LEAVE_GROUP_MEMBER_EPOCH {
            self.leave(now, &group_id, &req.member_id, settings);
            return HeartbeatResponse {
                member_id: req.member_id,
                member_epoch: LEAVE_GROUP_MEMBER_EPOCH,
                ..HeartbeatResponse::default()
            };
        }
        // Kafka's `throwIfShareGroupIsFull`: a member the group does not have is refused
        // once the group has `group.share.max.size` members.
        let size = self.groups.get(&group_id).map_or(0, |g| g.members.len());
        if known_epochs.is_none() && size >= settings.max_size {
            return HeartbeatResponse::error(
                ErrorCode::GroupMaxSizeReached,
                format!(
                    "The share group has reached its maximum capacity of {} members.",
                    settings.max_size
                ),
            );
        }
        let full = req.member_epoch == 0 || req.subscribed_topic_names.is_some();
        {
            let group = self.groups.entry(group_id.clone()).or_default();
            let joining = !group.members.contains_key(&req.member_id);
            let member = group.members.entry(req.member_id.clone()).or_default();
            if joining {
                group.group_epoch += 1;
            }
            if let Some(names) = &req.subscribed_topic_names {
                let mut names = names.clone();
                names.sort();
                names.dedup();
                if names != member.topics {
                    member.topics = names;
                    group.group_epoch += if joining { 0 } else { 1 };
                }
            }
            if let Some(rack) = req.rack_id {
                member.rack_id = Some(rack);
            }
            member.client_id = req.client_id;
            member.client_host = req.client_host;
            // A change in the subscribed topics' partitions moves the epoch too.
            let wanted: BTreeSet<&String> =
                group.members.values().flat_map(|m| &m.topics).collect();
            let metadata: BTreeMap<String, (TopicId, i32)> = wanted
                .into_iter()
                .filter_map(|name| view.lookup(name).map(|found| (name.clone(), found)))
                .collect();
            if metadata != group.subscribed {
                group.subscribed = metadata;
                group.group_epoch += 1;
            }
            // Kafka's assignment of a share group: computed at most once per
            // `group.share.assignment.interval.ms` (members joining together are assigned
            // together), and of initialized partitions only. Partitions new to the group are
            // initialized once an assignment was computed without them, and assigned by the
            // next one: a new group's first members get nothing on their first heartbeat and
            // their partitions a heartbeat later, as in Kafka.
            let due = group.assigned_at.is_none_or(|at| {
                settings.assignment_interval_ms == 0
                    || now.saturating_sub(at) >= settings.assignment_interval_ms
            });
            if group.assignment_epoch != group.group_epoch && due {
                assign(group);
                group.assignment_epoch = group.group_epoch;
                group.assigned_at = Some(now);
                if group.initialize_subscribed() {
                    group.group_epoch += 1;
                }
            }
        }
        let group = self.groups.get_mut(&group_id).expect("group just used");
        let member = group.members.get_mut(&req.member_id).expect("member just used");
        if member.member_epoch != group.assignment_epoch {
            member.previous_member_epoch = member.member_epoch;
            member.member_epoch = group.assignment_epoch;
        }
        let assignment = (full || member.assignment_unsent).then(|| member.assignment.clone());
        member.assignment_unsent = false;
        let member_epoch = member.member_epoch;
        let key = session_key(&group_id, &req.member_id);
        let deadline = now.saturating_add(i64::from(settings.session_timeout_ms));
        self.timers.schedule(key.clone(), deadline, key);
        HeartbeatResponse {
            error_code: ErrorCode::None,
            error_message: None,
            member_id: req.member_id,
            member_epoch,
            heartbeat_interval_ms: settings.heartbeat_interval_ms,
            assignment,
        }
    }

    /// A member leaves the group (a heartbeat with epoch -1): the group epoch moves, and
    /// its share session, if it has one, stays open for its final acknowledgements (a
    /// client may leave before it closes its sessions: librdkafka's close does), as Kafka
    /// keeps it until the session closes or its connection drops. What the member holds
    /// goes back to the others when the session closes, or after the session timeout when
    /// it never does; at once when it has no session.
    fn leave(&mut self, now: i64, group_id: &str, member_id: &str, settings: ShareSettings) {
        let has_session = self.groups.get(group_id).is_some_and(|group| {
            group.members.contains_key(member_id) && group.has_session(member_id)
        });
        if !has_session {
            self.remove_member(group_id, member_id, settings);
            return;
        }
        let Some(group) = self.groups.get_mut(group_id) else { return };
        group.members.remove(member_id);
        group.group_epoch += 1;
        let key = session_key(group_id, member_id);
        let deadline = now.saturating_add(i64::from(settings.session_timeout_ms));
        self.timers.schedule(key.clone(), deadline, key);
    }

    /// A member leaves without a share session, or its session timed out: the group epoch
    /// moves, its acquired records go back to the others, its share session ends.
    fn remove_member(&mut self, group_id: &str, member_id: &str, settings: ShareSettings) {
        let Some(group) = self.groups.get_mut(group_id) else { return };
        if group.members.remove(member_id).is_none() {
            return;
        }
        group.group_epoch += 1;
        group.sessions.retain(|(member, _), _| member != member_id);
        self.timers.cancel(&session_key(group_id, member_id));
        self.release_member_records(group_id, member_id, settings);
    }

    /// What `member_id` holds goes back to the others, but for the partitions of its share
    /// sessions that are still open (with other brokers).
    fn release_member_records(&mut self, group_id: &str, member_id: &str, settings: ShareSettings) {
        let Some(group) = self.groups.get_mut(group_id) else { return };
        let kept: BTreeSet<TopicPartition> = group
            .sessions
            .iter()
            .filter(|((member, _), _)| member == member_id)
            .flat_map(|(_, session)| session.partitions.keys().cloned())
            .collect();
        let mut changed = Vec::new();
        for (tp, partition) in group.partitions.iter_mut() {
            if partition.acquired_by(member_id) == 0 || kept.contains(tp) {
                continue;
            }
            partition.set_dead_letters(settings.dead_letters);
            let was_full = window_full(partition, settings.max_locks);
            let archived = partition.release_member(member_id, settings.release());
            if frees(partition, was_full, settings.max_locks, settings.now_ms) {
                self.freed.push(tp.clone());
            }
            for gone in archived {
                self.archived.push((group_id.to_string(), tp.clone(), gone));
            }
            changed.push(tp.clone());
        }
        for tp in changed {
            self.persist_partition(group_id, &tp);
            self.schedule_locks(group_id, &tp);
        }
    }

    pub fn describe(&self, group_id: &str) -> DescribedShareGroup {
        let Some(group) = self.groups.get(group_id) else {
            return DescribedShareGroup {
                group_id: group_id.to_string(),
                error_code: ErrorCode::GroupIdNotFound,
                error_message: Some(format!("Group {group_id} not found.")),
                state: "Dead",
                ..DescribedShareGroup::default()
            };
        };
        DescribedShareGroup {
            group_id: group_id.to_string(),
            error_code: ErrorCode::None,
            error_message: None,
            state: state_name(group),
            group_epoch: group.group_epoch,
            assignment_epoch: group.assignment_epoch,
            members: group
                .members
                .iter()
                .map(|(id, m)| DescribedShareMember {
                    member_id: id.clone(),
                    rack_id: m.rack_id.clone(),
                    member_epoch: m.member_epoch,
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    subscribed_topic_names: m.topics.clone(),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        }
    }

    pub fn list(&self, states: &[String]) -> Vec<ListedGroup> {
        let listed = self.groups.iter().map(|(id, group)| ListedGroup {
            group_id: id.clone(),
            protocol_type: SHARE_PROTOCOL_TYPE.to_string(),
            state: state_name(group),
            group_type: SHARE_PROTOCOL_TYPE,
        });
        let wanted = |g: &ListedGroup| {
            states.is_empty() || states.iter().any(|s| s.eq_ignore_ascii_case(g.state))
        };
        listed.filter(wanted).collect()
    }

    /// The offsets of each initialized share partition of a group
    /// (DescribeShareGroupOffsets).
    pub fn start_offsets(&self, group_id: &str) -> Option<StartOffsets> {
        let group = self.groups.get(group_id)?;
        let offset = |p: &SharePartition| ShareOffset {
            start: p.start_offset(),
            end: p.end_offset(),
            incomplete: p.incomplete() as i64,
        };
        Some(group.partitions.iter().map(|(tp, p)| (tp.clone(), offset(p))).collect())
    }

    /// DeleteGroups of a share group: only without members; its share state goes too.
    pub fn delete_group(&mut self, group_id: &str) -> ErrorCode {
        let Some(group) = self.groups.get(group_id) else { return ErrorCode::GroupIdNotFound };
        if !group.members.is_empty() {
            return ErrorCode::NonEmptyGroup;
        }
        let group = self.groups.remove(group_id).expect("checked above");
        for tp in group.partitions.keys() {
            self.records.push(Record::Share {
                group: group_id.to_string(),
                topic: tp.topic.to_string(),
                partition: tp.partition,
                value: None,
            });
            self.timers.cancel(&locks_key(group_id, tp));
        }
        ErrorCode::None
    }

    /// AlterShareGroupOffsets (Kafka's `alterShareGroupOffsets`, which since Kafka 4.2 creates
    /// a group that does not exist yet, so that its offsets can be set before first use):
    /// only without members (NON_EMPTY_GROUP). Each share partition named starts again at
    /// its offset with nothing in flight: what was acquired, available or waiting for its
    /// dead letter is forgotten, as Kafka's share coordinator initializes the partition's
    /// state anew. The caller checked the topics and partitions.
    pub fn alter_offsets(
        &mut self,
        group_id: &str,
        offsets: &[(TopicPartition, i64)],
    ) -> Result<(), ErrorCode> {
        // A group is made only with state to keep: one named with no partition that passed
        // (every topic unknown) would live in memory only, and a restart would forget it.
        if offsets.is_empty() && !self.groups.contains_key(group_id) {
            return Ok(());
        }
        let group = self.groups.entry(group_id.to_string()).or_default();
        if !group.members.is_empty() {
            return Err(ErrorCode::NonEmptyGroup);
        }
        for (tp, start) in offsets {
            group.partitions.insert(tp.clone(), SharePartition::new(*start));
        }
        for (tp, _) in offsets {
            self.timers.cancel(&locks_key(group_id, tp));
            self.persist_partition(group_id, tp);
            self.freed.push(tp.clone());
        }
        Ok(())
    }

    /// DeleteShareGroupOffsets (Kafka's `deleteShareGroupOffsets`): only for a share group
    /// (GROUP_ID_NOT_FOUND) without members (NON_EMPTY_GROUP). Per topic: its share
    /// partitions' state goes, so the next member starts by `share.auto.offset.reset`; a
    /// topic the group has no state for is UNKNOWN_TOPIC_OR_PARTITION ("There is no offset
    /// information to delete.", Kafka's answer).
    pub fn delete_offsets(
        &mut self,
        group_id: &str,
        topics: &[String],
    ) -> Result<Vec<(String, ErrorCode)>, ErrorCode> {
        let Some(group) = self.groups.get_mut(group_id) else {
            return Err(ErrorCode::GroupIdNotFound);
        };
        if !group.members.is_empty() {
            return Err(ErrorCode::NonEmptyGroup);
        }
        let mut out = Vec::new();
        let mut gone = Vec::new();
        for topic in topics {
            let tps = group.take_partitions_of(topic);
            let code =
                if tps.is_empty() { ErrorCode::UnknownTopicOrPartition } else { ErrorCode::None };
            gone.extend(tps);
            out.push((topic.clone(), code));
        }
        for tp in gone {
            self.timers.cancel(&locks_key(group_id, &tp));
            self.persist_partition(group_id, &tp);
        }
        Ok(out)
    }

    /// A topic was deleted (Kafka's `maybeCleanupShareGroupState`): every share group's state
    /// of its partitions goes (a tombstone each), with the records in flight, the dead
    /// letters still to write and the sessions' references to them, so that a topic created
    /// again under the name starts by `share.auto.offset.reset` and nothing its members still
    /// held comes back. Returns how many share partitions went.
    pub fn forget_topic(&mut self, topic: &str) -> usize {
        let of_topic = |tp: &TopicPartition| tp.topic.as_ref() == topic;
        let mut gone: Vec<(String, TopicPartition)> = Vec::new();
        for (group_id, group) in &mut self.groups {
            let tps = group.take_partitions_of(topic);
            gone.extend(tps.into_iter().map(|tp| (group_id.clone(), tp)));
            for session in group.sessions.values_mut() {
                session.partitions.retain(|tp, _| !of_topic(tp));
            }
        }
        self.archived.retain(|(_, tp, _)| !of_topic(tp));
        self.freed.retain(|tp| !of_topic(tp));
        for (group_id, tp) in &gone {
            self.timers.cancel(&locks_key(group_id, tp));
            self.persist_partition(group_id, tp);
        }
        gone.len()
    }

    // ----- share sessions, fetches and acknowledgements ---------------------------------

    /// The first half of a ShareFetch: checks and moves the member's share session, applies
    /// the acknowledgements it carries, and says where to read each partition of the
    /// session.
    pub fn open_fetch(&mut self, now: i64, req: FetchOpen, settings: ShareSettings) -> FetchOpened {
        let group = self.groups.entry(req.group_id.clone()).or_default();
        let epoch = req.session_epoch;
        let has_acks = req.partitions.iter().any(|p| !p.acks.is_empty());
        match epoch {
            INITIAL_SESSION_EPOCH => {
                if has_acks {
                    return FetchOpened {
                        error_code: ErrorCode::InvalidRequest,
                        ..FetchOpened::default()
                    };
                }
                let partitions = req.partitions.iter().map(|p| (p.tp.clone(), p.topic_id));
                let session = Session { next_epoch: 1, partitions: partitions.collect() };
                group.sessions.insert((req.member_id.clone(), req.node), session);
                // A session of a member id the group does not have (it never heartbeated, or
                // not since a restart) ends after the session timeout unless the member
                // joins, whose heartbeats then keep the same timer.
                if !group.members.contains_key(&req.member_id) {
                    let key = session_key(&req.group_id, &req.member_id);
                    let deadline = now.saturating_add(i64::from(settings.session_timeout_ms));
                    self.timers.schedule(key.clone(), deadline, key);
                }
            }
            FINAL_SESSION_EPOCH => {}
            _ => {
                let Some(session) = group.sessions.get_mut(&(req.member_id.clone(), req.node))
                else {
                    return FetchOpened {
                        error_code: ErrorCode::ShareSessionNotFound,
                        ..FetchOpened::default()
                    };
                };
                if session.next_epoch != epoch {
                    return FetchOpened {
                        error_code: ErrorCode::InvalidShareSessionEpoch,
                        ..FetchOpened::default()
                    };
                }
                session.next_epoch = epoch.wrapping_add(1).max(1);
                for p in &req.partitions {
                    session.partitions.insert(p.tp.clone(), p.topic_id);
                }
                for tp in &req.forgotten {
                    session.partitions.remove(tp);
                }
            }
        }
        let mut acks = Vec::new();
        for p in req.partitions.iter().filter(|p| !p.acks.is_empty()) {
            let code = self.acknowledge_partition(&req.group_id, &req.member_id, p, settings);
            acks.push((p.tp.clone(), code));
        }
        if epoch == FINAL_SESSION_EPOCH {
            self.close_session(&req.group_id, &req.member_id, req.node, settings);
            return FetchOpened { acks, lock_ms: settings.lock_ms, ..FetchOpened::default() };
        }
        let plan = self.plan(&req.group_id, &req.member_id, req.node, settings);
        FetchOpened { error_code: ErrorCode::None, acks, plan, lock_ms: settings.lock_ms }
    }

    /// Where to read each partition of a member's share session now (a waiting ShareFetch
    /// asks again after each wait).
    pub fn plan(
        &self,
        group_id: &str,
        member_id: &str,
        node: NodeId,
        settings: ShareSettings,
    ) -> Vec<FetchPlan> {
        let Some(group) = self.groups.get(group_id) else { return Vec::new() };
        let Some(session) = group.sessions.get(&(member_id.to_string(), node)) else {
            return Vec::new();
        };
        session
            .partitions
            .iter()
            .map(|(tp, topic_id)| FetchPlan {
                tp: tp.clone(),
                topic_id: *topic_id,
                fetch_offset: group.partitions.get(tp).map(|p| p.fetch_offset(settings.now_ms)),
                reset_earliest: settings.reset_earliest,
                read_committed: settings.read_committed,
            })
            .collect()
    }

    /// The second half of a ShareFetch: hands the member the records of what was read that
    /// it may have, at most `max_records` in all.
    pub fn acquire(
        &mut self,
        now: i64,
        group_id: &str,
        member_id: &str,
        reads: Vec<ShareRead>,
        max_records: usize,
        settings: ShareSettings,
    ) -> Vec<(TopicPartition, Vec<Acquired>)> {
        let mut out = Vec::new();
        let mut left = max_records;
        for read in reads {
            let Some(group) = self.groups.get_mut(group_id) else { break };
            // A share partition starts here: its start is written even with nothing handed
            // out, so that a restart does not start it again at a later offset.
            let created = !group.partitions.contains_key(&read.tp);
            if created {
                let Some(start) = read.init_offset else { continue };
                let partition = SharePartition::new(start.max(read.log_start));
                group.partitions.insert(read.tp.clone(), partition);
            }
            let partition = group.partitions.get_mut(&read.tp).expect("inserted above");
            partition.set_dead_letters(settings.dead_letters);
            let before = partition.stored();
            partition.move_start(read.log_start);
            let mut got = Acquisition::default();
            let covers_end = read.read_from <= partition.end_offset();
            for &(first, last, control) in read.batches.iter().filter(|_| covers_end) {
                if control {
                    partition.skip_control(first, last);
                    continue;
                }
                let limits = AcquireLimits {
                    max_records: left,
                    lock_ms: settings.lock_ms,
                    max_locks: settings.max_locks,
                    delivery_limit: settings.delivery_limit,
                };
                let batch = partition.acquire(now, member_id, &[(first, last)], limits);
                let count: i64 =
                    batch.acquired.iter().map(|a| a.last_offset - a.first_offset + 1).sum();
                left = left.saturating_sub(count as usize);
                got.archived.extend(batch.archived);
                for run in batch.acquired {
                    match got.acquired.last_mut() {
                        Some(prev)
                            if prev.last_offset + 1 == run.first_offset
                                && prev.delivery_count == run.delivery_count =>
                        {
                            prev.last_offset = run.last_offset
                        }
                        _ => got.acquired.push(run),
                    }
                }
                // Stopped inside this batch (records or locks limit): nothing after it.
                if left == 0 || partition.end_offset() <= last {
                    break;
                }
            }
            let changed = created || partition.stored() != before || !got.acquired.is_empty();
            for gone in got.archived {
                self.archived.push((group_id.to_string(), read.tp.clone(), gone));
            }
            if changed {
                self.persist_partition(group_id, &read.tp);
                self.schedule_locks(group_id, &read.tp);
            }
            if !got.acquired.is_empty() {
                out.push((read.tp, got.acquired));
            }
            if left == 0 {
                break;
            }
        }
        out
    }

    /// Whether a waiting ShareFetch could get records of `tp` below `high_watermark` at
    /// `now_ms`.
    pub fn has_acquirable(
        &self,
        group_id: &str,
        tp: &TopicPartition,
        high_watermark: i64,
        max_locks: i64,
        now_ms: i64,
    ) -> bool {
        let partition = self.groups.get(group_id).and_then(|g| g.partitions.get(tp));
        partition.is_none_or(|p| p.has_acquirable(high_watermark, max_locks, now_ms))
    }

    /// ShareAcknowledge: the session's epoch is checked and moved (0 is not a valid epoch
    /// here), each partition's acknowledgements applied; -1 closes the session after.
    pub fn acknowledge(
        &mut self,
        req: AckRequest,
        settings: ShareSettings,
    ) -> Result<Vec<(TopicPartition, ErrorCode)>, ErrorCode> {
        let group = self.groups.entry(req.group_id.clone()).or_default();
        match req.session_epoch {
            INITIAL_SESSION_EPOCH => return Err(ErrorCode::InvalidShareSessionEpoch),
            FINAL_SESSION_EPOCH => {}
            epoch => {
                let Some(session) = group.sessions.get_mut(&(req.member_id.clone(), req.node))
                else {
                    return Err(ErrorCode::ShareSessionNotFound);
                };
                if session.next_epoch != epoch {
                    return Err(ErrorCode::InvalidShareSessionEpoch);
                }
                session.next_epoch = epoch.wrapping_add(1).max(1);
            }
        }
        let mut out = Vec::new();
        for p in &req.partitions {
            let code = self.acknowledge_partition(&req.group_id, &req.member_id, p, settings);
            out.push((p.tp.clone(), code));
        }
        if req.session_epoch == FINAL_SESSION_EPOCH {
            self.close_session(&req.group_id, &req.member_id, req.node, settings);
        }
        Ok(out)
    }

    fn acknowledge_partition(
        &mut self,
        group_id: &str,
        member_id: &str,
        p: &SessionPartition,
        settings: ShareSettings,
    ) -> ErrorCode {
        let group = self.groups.get_mut(group_id);
        let Some(partition) = group.and_then(|g| g.partitions.get_mut(&p.tp)) else {
            return ErrorCode::InvalidRecordState;
        };
        partition.set_dead_letters(settings.dead_letters);
        let was_full = window_full(partition, settings.max_locks);
        match partition.acknowledge(member_id, &p.acks, settings.release()) {
            Ok(archived) => {
                if frees(partition, was_full, settings.max_locks, settings.now_ms) {
                    self.freed.push(p.tp.clone());
                }
                for gone in archived {
                    self.archived.push((group_id.to_string(), p.tp.clone(), gone));
                }
                self.persist_partition(group_id, &p.tp);
                self.schedule_locks(group_id, &p.tp);
                ErrorCode::None
            }
            Err(code) => code,
        }
    }

    /// A member's share session with `node` ends (a final ShareFetch or ShareAcknowledge):
    /// what it still holds goes back to the others, but for the partitions of its sessions
    /// with other brokers.
    fn close_session(
        &mut self,
        group_id: &str,
        member_id: &str,
        node: NodeId,
        settings: ShareSettings,
    ) {
        if let Some(group) = self.groups.get_mut(group_id) {
            group.sessions.remove(&(member_id.to_string(), node));
        }
        self.release_member_records(group_id, member_id, settings);
    }

    /// Every share session of `member_id` ends (a member id that never joined, after the
    /// session timeout): what it holds goes back to the others.
    fn close_sessions_of(&mut self, group_id: &str, member_id: &str, settings: ShareSettings) {
        if let Some(group) = self.groups.get_mut(group_id) {
            group.sessions.retain(|(member, _), _| member != member_id);
        }
        self.release_member_records(group_id, member_id, settings);
    }

    // ----- dead letters (KIP-1191) -------------------------------------------------------

    /// The first record of this shard's share partitions that waits for its dead letter, with
    /// the producer its share partition writes dead letters with.
    pub fn next_dead_letter(&self) -> Option<DeadLetter> {
        self.groups.iter().find_map(|(group_id, group)| {
            group.partitions.iter().find_map(|(tp, partition)| {
                Some(DeadLetter {
                    group_id: group_id.clone(),
                    tp: tp.clone(),
                    letter: partition.next_dead_letter()?,
                    producer: partition.dead_letter_producer().cloned(),
                })
            })
        })
    }

    /// A share partition writes its dead letters with a new producer (a new target): stored
    /// before the first write with it.
    pub fn set_dead_letter_producer(
        &mut self,
        group_id: &str,
        tp: &TopicPartition,
        producer: DeadLetterProducer,
    ) {
        let group = self.groups.get_mut(group_id);
        let Some(partition) = group.and_then(|g| g.partitions.get_mut(tp)) else { return };
        partition.set_dead_letter_producer(producer);
        self.persist_partition(group_id, tp);
    }

    /// The dead letter of `offset` was written (or given up, `written` false): the record
    /// is done, and the share partition's start may move.
    pub fn dead_lettered(
        &mut self,
        group_id: &str,
        tp: &TopicPartition,
        offset: i64,
        written: bool,
    ) {
        let group = self.groups.get_mut(group_id);
        let Some(partition) = group.and_then(|g| g.partitions.get_mut(tp)) else { return };
        if partition.dead_lettered(offset, written) {
            self.persist_partition(group_id, tp);
        }
    }

    // ----- time -------------------------------------------------------------------------

    /// Runs every timer due at `now`: sessions that expired fence their members, acquisition
    /// locks that ended release their records.
    pub fn advance(&mut self, now: i64, settings: impl Fn(&str) -> ShareSettings) {
        let mark = self.timers.mark();
        while let Some(key) = self.timers.pop_expired_scheduled_before(now, mark) {
            let settings = settings(&key.group);
            match (key.kind, &key.tp) {
                (TimerKind::Session, _) => {
                    let group = self.groups.get(&key.group);
                    if group.is_some_and(|g| g.members.contains_key(&key.member)) {
                        tracing::info!(group = %key.group, member = %key.member,
                            "share group member's session timed out");
                        self.remove_member(&key.group, &key.member, settings);
                    } else {
                        // A share session of a member id that never joined: it ends, and
                        // what it holds goes back to the others.
                        self.close_sessions_of(&key.group, &key.member, settings);
                    }
                }
                (TimerKind::Locks, Some(tp)) => {
                    let group = self.groups.get_mut(&key.group);
                    let Some(partition) = group.and_then(|g| g.partitions.get_mut(tp)) else {
                        continue;
                    };
                    partition.set_dead_letters(settings.dead_letters);
                    let release = Release { now_ms: now, ..settings.release() };
                    let was_full = window_full(partition, settings.max_locks);
                    let (archived, changed) = partition.expire_locks(release);
                    if changed && frees(partition, was_full, settings.max_locks, now) {
                        self.freed.push(tp.clone());
                    }
                    for gone in archived {
                        self.archived.push((key.group.clone(), tp.clone(), gone));
                    }
                    if changed {
                        self.persist_partition(&key.group, tp);
                    }
                    self.schedule_locks(&key.group, tp);
                }
                (TimerKind::Locks, None) => {}
            }
        }
    }

    fn schedule_locks(&mut self, group_id: &str, tp: &TopicPartition) {
        let key = locks_key(group_id, tp);
        let deadline = self
            .groups
            .get(group_id)
            .and_then(|g| g.partitions.get(tp))
            .and_then(SharePartition::next_lock_deadline);
        match deadline {
            Some(deadline) => self.timers.schedule(key.clone(), deadline, key),
            None => self.timers.cancel(&key),
        }
    }

    // ----- persistence ------------------------------------------------------------------

    fn persist_partition(&mut self, group_id: &str, tp: &TopicPartition) {
        let stored =
            self.groups.get(group_id).and_then(|g| g.partitions.get(tp)).map(|p| p.stored());
        self.records.push(Record::Share {
            group: group_id.to_string(),
            topic: tp.topic.to_string(),
            partition: tp.partition,
            value: stored,
        });
    }

    /// Start-up: a share partition's state as it was last written.
    pub fn replay(&mut self, group_id: String, tp: TopicPartition, value: Option<Stored>) {
        match value {
            Some(stored) => {
                let group = self.groups.entry(group_id.clone()).or_default();
                group.partitions.insert(tp.clone(), SharePartition::from_stored(&stored));
                // Redelivery back-offs survive a restart: their ends wake the fetches.
                self.schedule_locks(&group_id, &tp);
            }
            None => {
                self.timers.cancel(&locks_key(&group_id, &tp));
                if let Some(group) = self.groups.get_mut(&group_id) {
                    group.partitions.remove(&tp);
                    if group.partitions.is_empty() && group.members.is_empty() {
                        self.groups.remove(&group_id);
                    }
                }
            }
        }
    }

    /// Clustered: forgets the share groups of a `__consumer_offsets` partition this node no
    /// longer leads (`owned`), with their timers; the new coordinator replays them. Their
    /// records queued and not yet written are dropped by the coordinator. How many went.
    pub fn unload(&mut self, owned: impl Fn(&str) -> bool) -> usize {
        let doomed: Vec<String> = self.groups.keys().filter(|id| owned(id)).cloned().collect();
        for group_id in &doomed {
            let Some(group) = self.groups.remove(group_id) else { continue };
            let members = group.members.keys().chain(group.sessions.keys().map(|(m, _)| m));
            for member_id in members {
                self.timers.cancel(&session_key(group_id, member_id));
            }
            for tp in group.partitions.keys() {
                self.timers.cancel(&locks_key(group_id, tp));
            }
        }
        self.archived.retain(|(group_id, _, _)| !owned(group_id));
        doomed.len()
    }

    /// Every share partition's state, for a snapshot of the log (`owned` groups only).
    pub fn snapshot_of(&self, owned: impl Fn(&str) -> bool) -> Vec<Record> {
        let mut out = Vec::new();
        for (group_id, group) in self.groups.iter().filter(|(id, _)| owned(id)) {
            for (tp, partition) in &group.partitions {
                out.push(Record::Share {
                    group: group_id.clone(),
                    topic: tp.topic.to_string(),
                    partition: tp.partition,
                    value: Some(partition.stored()),
                });
            }
        }
        out
    }

    /// Records in flight of each share partition, for tests and metrics.
    pub fn in_flight(&self, group_id: &str, tp: &TopicPartition) -> Option<usize> {
        self.groups.get(group_id)?.partitions.get(tp).map(SharePartition::in_flight)
    }

    /// How many records of `tp` `member` holds.
    #[cfg(test)]
    pub fn acquired_by(&self, group_id: &str, tp: &TopicPartition, member: &str) -> usize {
        let partition = self.groups.get(group_id).and_then(|g| g.partitions.get(tp));
        partition.map_or(0, |p| p.acquired_by(member))
    }
}

/// Whether `partition` holds as many records in flight as it may (`max_locks`): no fetch can
/// take a new record from its end until the start moves.
fn window_full(partition: &SharePartition, max_locks: i64) -> bool {
    partition.end_offset() - partition.start_offset() >= max_locks
}

/// Whether a change to `partition` (full before it when `was_full`) lets a waiting ShareFetch
/// take something: a record Available again, or room in the in-flight window again (the
/// start moved), so that records past the end may be taken. Without the second, fetches
/// waiting while four members held the whole window of a topic that already had every
/// record slept until their recheck (`--group-share-fetch-recheck-ms`) after each acknowledgement.
fn frees(partition: &SharePartition, was_full: bool, max_locks: i64, now_ms: i64) -> bool {
    partition.fetch_offset(now_ms) < partition.end_offset()
        || (was_full && !window_full(partition, max_locks))
}

/// The timer of a member's session (its heartbeats', or its share session's when the group
/// does not have it).
fn session_key(group_id: &str, member_id: &str) -> TimerKey {
    TimerKey {
        kind: TimerKind::Session,
        group: group_id.to_string(),
        member: member_id.to_string(),
        tp: None,
    }
}

fn locks_key(group_id: &str, tp: &TopicPartition) -> TimerKey {
    TimerKey {
        kind: TimerKind::Locks,
        group: group_id.to_string(),
        member: String::new(),
        tp: Some(tp.clone()),
    }
}

fn state_name(group: &ShareGroup) -> &'static str {
    if group.members.is_empty() {
        "Empty"
    } else {
        "Stable"
    }
}

/// Kafka's `SimpleAssignor` in spirit: per topic, the members subscribed to it in member id
/// order and its initialized partitions; with at least as many partitions as members each
/// partition goes to one member (round robin), with more members than partitions each member
/// gets one partition and partitions are shared (member i reads partition i mod P).
fn assign(group: &mut ShareGroup) {
    let mut target: BTreeMap<String, Assignment> = BTreeMap::new();
    for (name, (topic_id, partitions)) in &group.subscribed {
        let members: Vec<&String> = group
            .members
            .iter()
            .filter(|(_, m)| m.topics.contains(name))
            .map(|(id, _)| id)
            .collect();
        let count = members.len();
        let assignable: Vec<i32> = (0..(*partitions).max(0))
            .filter(|p| group.is_initialized(&TopicPartition::new(name.as_str().into(), *p)))
            .collect();
        if count == 0 || assignable.is_empty() {
            continue;
        }
        if count <= assignable.len() {
            for (index, partition) in assignable.iter().enumerate() {
                let member = members[index % count];
                let entry = target.entry(member.clone()).or_default();
                entry.entry(*topic_id).or_default().insert(*partition);
            }
        } else {
            for (index, member) in members.iter().enumerate() {
                let entry = target.entry((*member).clone()).or_default();
                let partition = assignable[index % assignable.len()];
                entry.entry(*topic_id).or_default().insert(partition);
            }
        }
    }
    for (id, member) in group.members.iter_mut() {
        let assignment = target.remove(id).unwrap_or_default();
        if assignment != member.assignment {
            member.assignment = assignment;
            member.assignment_unsent = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::group::share_partition::ACK_ACCEPT;

    struct Topics(Vec<(&'static str, TopicId, i32)>);

    impl TopicView for Topics {
        fn lookup(&self, name: &str) -> Option<(TopicId, i32)> {
            self.0.iter().find(|t| t.0 == name).map(|t| (t.1, t.2))
        }
        fn name_of(&self, id: &TopicId) -> Option<String> {
            self.0.iter().find(|t| &t.1 == id).map(|t| t.0.to_string())
        }
        fn names(&self) -> Vec<String> {
            self.0.iter().map(|t| t.0.to_string()).collect()
        }
    }

    fn settings() -> ShareSettings {
        ShareSettings::of(&GroupConfig::default())
    }

    fn beat(member: &str, epoch: i32, topics: Option<&[&str]>) -> ShareHeartbeat {
        ShareHeartbeat {
            group_id: "g".into(),
            member_id: member.into(),
            member_epoch: epoch,
            subscribed_topic_names: topics.map(|t| t.iter().map(|n| n.to_string()).collect()),
            ..ShareHeartbeat::default()
        }
    }

    #[test]
    fn a_share_group_at_its_max_size_refuses_a_new_member() {
        let topics = Topics(vec![("t", [1; 16], 1)]);
        let mut shares = Shares::new(GroupConfig::default());
        let one = ShareSettings { max_size: 1, ..settings() };
        let a = shares.heartbeat(0, beat("a", 0, Some(&["t"])), &topics, one);
        assert_eq!(a.error_code, ErrorCode::None);
        let b = shares.heartbeat(0, beat("b", 0, Some(&["t"])), &topics, one);
        assert_eq!(b.error_code, ErrorCode::GroupMaxSizeReached);
        let again = shares.heartbeat(0, beat("a", a.member_epoch, None), &topics, one);
        assert_eq!(again.error_code, ErrorCode::None);
        shares.heartbeat(0, beat("a", LEAVE_GROUP_MEMBER_EPOCH, None), &topics, one);
        let b = shares.heartbeat(0, beat("b", 0, Some(&["t"])), &topics, one);
        assert_eq!(b.error_code, ErrorCode::None);
    }

    #[test]
    fn members_share_a_partition_and_leave() {
        let topics = Topics(vec![("t", [1; 16], 1)]);
        let mut shares = Shares::new(GroupConfig::default());
        // The first member's first heartbeat: the partition is not initialized yet, so
        // nothing is assigned; it is initialized then (group epoch 3).
        let none = Some(Assignment::default());
        let a = shares.heartbeat(0, beat("a", 0, Some(&["t"])), &topics, settings());
        assert_eq!((a.error_code, a.member_epoch, &a.assignment), (ErrorCode::None, 2, &none));
        // A member joining within the assignment interval is not assigned yet either.
        let b = shares.heartbeat(10, beat("b", 0, Some(&["t"])), &topics, settings());
        assert_eq!((b.member_epoch, &b.assignment), (2, &none));
        let a = shares.heartbeat(999, beat("a", 2, None), &topics, settings());
        assert_eq!((a.member_epoch, a.assignment), (2, None));
        // Past the interval, the next heartbeat assigns the initialized partition to both
        // (a shared partition), each told on its own next heartbeat.
        let one: Assignment = [([1; 16], [0].into())].into();
        let a = shares.heartbeat(1_000, beat("a", 2, None), &topics, settings());
        assert_eq!((a.member_epoch, a.assignment), (4, Some(one.clone())));
        let b = shares.heartbeat(1_001, beat("b", 2, None), &topics, settings());
        assert_eq!((b.member_epoch, b.assignment), (4, Some(one.clone())));
        let a = shares.heartbeat(1_002, beat("a", 4, None), &topics, settings());
        assert_eq!((a.member_epoch, a.assignment), (4, None));
        // The previous epoch is taken (its answer may have been lost), others are fenced.
        let previous = shares.heartbeat(1_003, beat("a", 2, None), &topics, settings());
        assert_eq!((previous.error_code, previous.member_epoch), (ErrorCode::None, 4));
        for epoch in [1, 3, 5] {
            let stale = shares.heartbeat(1_003, beat("a", epoch, None), &topics, settings());
            assert_eq!(stale.error_code, ErrorCode::FencedMemberEpoch);
        }
        // With an interval of 0 (Kafka's escape hatch), a change is assigned at once, here
        // a member leaving: the other keeps the partition.
        let at_once = ShareSettings { assignment_interval_ms: 0, ..settings() };
        let left = shares.heartbeat(1_004, beat("b", -1, None), &topics, at_once);
        assert_eq!(left.member_epoch, -1);
        assert_eq!(shares.describe("g").members.len(), 1);
        let unknown = shares.heartbeat(2, beat("c", 4, None), &topics, settings());
        assert_eq!(unknown.error_code, ErrorCode::UnknownMemberId);
        let a = shares.heartbeat(1_005, beat("a", 4, None), &topics, at_once);
        assert_eq!((a.member_epoch, a.assignment), (5, None), "the same partition");
    }

    #[test]
    fn an_acknowledgement_that_reopens_a_full_window_wakes_the_waiting_fetches() {
        let tp = TopicPartition::new("t".into(), 0);
        let mut shares = Shares::new(GroupConfig::default());
        let window = ShareSettings { max_locks: 4, ..settings() };
        let open = |epoch, acks: Vec<AckBatch>| fetch_open("a", &tp, epoch, acks);
        shares.open_fetch(0, open(0, vec![]), window);
        // The log holds 0..=9, a batch per record; the window lets 4 be in flight.
        let read = ShareRead {
            batches: (0..=9).map(|offset| (offset, offset, false)).collect(),
            ..read_from_start(&tp, 9)
        };
        let got = shares.acquire(0, "g", "a", vec![read], 10, window);
        assert_eq!(got[0].1[0].last_offset, 3);
        assert!(shares.take_freed().is_empty());
        // Accepting offset 1 leaves the start at 0: still full, nothing to wake for.
        let middle = AckBatch { first_offset: 1, last_offset: 1, types: vec![ACK_ACCEPT] };
        shares.open_fetch(0, open(1, vec![middle]), window);
        assert!(shares.take_freed().is_empty());
        // Accepting offset 0 moves the start past 1: two more may be taken from the end,
        // though no record is Available.
        let first = AckBatch { first_offset: 0, last_offset: 0, types: vec![ACK_ACCEPT] };
        let opened = shares.open_fetch(0, open(2, vec![first]), window);
        assert_eq!(opened.plan[0].fetch_offset, Some(4));
        assert_eq!(shares.take_freed(), vec![tp.clone()]);
        // The window is not full now: accepting more wakes nobody (nothing was waiting on it).
        let more = AckBatch { first_offset: 2, last_offset: 2, types: vec![ACK_ACCEPT] };
        shares.open_fetch(0, open(3, vec![more]), window);
        assert!(shares.take_freed().is_empty());
    }

    #[test]
    fn sessions_fetches_acknowledgements_and_timeouts() {
        let tp = TopicPartition::new("t".into(), 0);
        let mut shares = Shares::new(GroupConfig::default());
        let open = |epoch, acks: Vec<AckBatch>| fetch_open("a", &tp, epoch, acks);
        let opened = shares.open_fetch(0, open(0, vec![]), settings());
        assert_eq!(opened.plan[0].fetch_offset, None);
        let read = ShareRead {
            tp: tp.clone(),
            init_offset: Some(5),
            log_start: 0,
            batches: vec![(5, 7, false), (8, 9, false)],
            read_from: 5,
        };
        let got = shares.acquire(0, "g", "a", vec![read], 3, settings());
        assert_eq!(got[0].1[0].last_offset, 7);
        assert_eq!(shares.take_records().len(), 1);
        let stale = shares.open_fetch(0, open(5, vec![]), settings());
        assert_eq!(stale.error_code, ErrorCode::InvalidShareSessionEpoch);
        let ack = AckBatch { first_offset: 5, last_offset: 6, types: vec![ACK_ACCEPT] };
        let opened = shares.open_fetch(0, open(1, vec![ack]), settings());
        assert_eq!(opened.acks, vec![(tp.clone(), ErrorCode::None)]);
        assert_eq!(opened.plan[0].fetch_offset, Some(8));
        // 5 and 6 done, 7 held, 8 and 9 (of a log ending at 10) never handed out: a lag of 3.
        let offsets = shares.start_offsets("g").expect("a share group");
        assert_eq!(offsets[0].1, ShareOffset { start: 7, end: 8, incomplete: 1 });
        assert_eq!(offsets[0].1.lag(10), 3);
        // Offset 7's lock ends: the next fetch starts there again.
        shares.advance(30_000, |_| settings());
        let opened = shares.open_fetch(30_000, open(2, vec![]), settings());
        assert_eq!(opened.plan[0].fetch_offset, Some(7));
        let missing = shares.acknowledge(
            AckRequest {
                group_id: "g".into(),
                member_id: "b".into(),
                node: NODE,
                session_epoch: 1,
                partitions: vec![],
            },
            settings(),
        );
        assert_eq!(missing, Err(ErrorCode::ShareSessionNotFound));
        let snapshot = shares.snapshot_of(|_| true);
        let mut restored = Shares::new(GroupConfig::default());
        for record in snapshot {
            if let Record::Share { group, topic, partition, value } = record {
                restored.replay(group, TopicPartition::new(topic.into(), partition), value);
            }
        }
        assert_eq!(restored.in_flight("g", &tp), Some(1));
    }

    /// The broker the tests' members fetch from.
    const NODE: NodeId = NodeId(1);

    /// A ShareFetch of `member` in group "g" on `tp` at `epoch`, with `acks`.
    fn fetch_open(member: &str, tp: &TopicPartition, epoch: i32, acks: Vec<AckBatch>) -> FetchOpen {
        FetchOpen {
            group_id: "g".into(),
            member_id: member.into(),
            node: NODE,
            session_epoch: epoch,
            partitions: vec![SessionPartition { tp: tp.clone(), topic_id: [1; 16], acks }],
            forgotten: vec![],
        }
    }

    fn open_session(shares: &mut Shares, member: &str, tp: &TopicPartition) {
        shares.open_fetch(0, fetch_open(member, tp, 0, vec![]), settings());
    }

    /// A read of `tp` from offset 0: one data batch of offsets 0..=`last`.
    fn read_from_start(tp: &TopicPartition, last: i64) -> ShareRead {
        ShareRead {
            tp: tp.clone(),
            init_offset: Some(0),
            log_start: 0,
            batches: vec![(0, last, false)],
            read_from: 0,
        }
    }

    #[test]
    fn a_member_keeps_one_share_session_per_broker() {
        let t = TopicPartition::new("t".into(), 0);
        let u = TopicPartition::new("u".into(), 0);
        let mut shares = Shares::new(GroupConfig::default());
        let on = |node, tp: &TopicPartition, epoch| FetchOpen {
            node: NodeId(node),
            ..fetch_open("a", tp, epoch, vec![])
        };
        // One session with broker 1 (leader of t), one with broker 2 (leader of u), each
        // with its own epochs.
        assert_eq!(shares.open_fetch(0, on(1, &t, 0), settings()).plan[0].tp, t);
        assert_eq!(shares.open_fetch(0, on(2, &u, 0), settings()).plan[0].tp, u);
        let plan = |shares: &Shares, node| {
            let plan = shares.plan("g", "a", NodeId(node), settings());
            plan.into_iter().map(|p| p.tp).collect::<Vec<_>>()
        };
        assert_eq!((plan(&shares, 1), plan(&shares, 2)), (vec![t.clone()], vec![u.clone()]));
        assert_eq!(shares.open_fetch(0, on(1, &t, 1), settings()).error_code, ErrorCode::None);
        assert_eq!(shares.open_fetch(0, on(2, &u, 1), settings()).error_code, ErrorCode::None);
        let stale = shares.open_fetch(0, on(2, &u, 1), settings());
        assert_eq!(stale.error_code, ErrorCode::InvalidShareSessionEpoch);
        let unknown = shares.open_fetch(0, on(3, &u, 1), settings());
        assert_eq!(unknown.error_code, ErrorCode::ShareSessionNotFound);
        let reads = vec![read_from_start(&t, 4), read_from_start(&u, 4)];
        assert_eq!(shares.acquire(0, "g", "a", reads, 100, settings()).len(), 2);
        // Closing the session with broker 1 gives back what it held of t; u stays held by
        // the session with broker 2, whose acknowledgements still count.
        let closed = shares.open_fetch(0, on(1, &t, FINAL_SESSION_EPOCH), settings());
        assert_eq!(closed.error_code, ErrorCode::None);
        assert_eq!(shares.acquired_by("g", &t, "a"), 0);
        assert_eq!(shares.acquired_by("g", &u, "a"), 5);
        let ack = AckRequest {
            group_id: "g".into(),
            member_id: "a".into(),
            node: NodeId(2),
            session_epoch: 2,
            partitions: vec![SessionPartition {
                tp: u.clone(),
                topic_id: [1; 16],
                acks: vec![AckBatch { first_offset: 0, last_offset: 4, types: vec![ACK_ACCEPT] }],
            }],
        };
        assert_eq!(shares.acknowledge(ack, settings()), Ok(vec![(u.clone(), ErrorCode::None)]));
        assert_eq!(shares.acquired_by("g", &u, "a"), 0);
        assert!(plan(&shares, 1).is_empty(), "the session with broker 1 is gone");
    }

    #[test]
    fn unloading_a_partitions_groups_forgets_them_and_their_timers() {
        let tp = TopicPartition::new("t".into(), 0);
        let topics = Topics(vec![("t", [1; 16], 1)]);
        let mut shares = Shares::new(GroupConfig::default());
        for group in ["g", "h"] {
            let mut beat = beat("a", 0, Some(&["t"]));
            beat.group_id = group.into();
            shares.heartbeat(0, beat, &topics, settings());
        }
        open_session(&mut shares, "a", &tp);
        assert_eq!(
            shares.acquire(0, "g", "a", vec![read_from_start(&tp, 4)], 9, settings()).len(),
            1
        );
        assert!(shares.next_deadline().is_some());
        assert_eq!(shares.unload(|group| group == "g"), 1);
        assert!(!shares.contains("g") && shares.contains("h"));
        assert_eq!(shares.unload(|group| group == "h"), 1);
        assert_eq!(shares.next_deadline(), None, "no timer of an unloaded group is left");
    }

    #[test]
    fn a_member_that_leaves_before_closing_its_session_still_acknowledges() {
        let tp = TopicPartition::new("t".into(), 0);
        let topics = Topics(vec![("t", [1; 16], 1)]);
        let mut shares = Shares::new(GroupConfig::default());
        let joined = shares.heartbeat(0, beat("a", 0, Some(&["t"])), &topics, settings());
        assert_eq!(joined.error_code, ErrorCode::None);
        open_session(&mut shares, "a", &tp);
        let got = shares.acquire(0, "g", "a", vec![read_from_start(&tp, 9)], 100, settings());
        assert_eq!(got[0].1[0].last_offset, 9);
        // librdkafka's close leaves the group first, then sends its last acknowledgements
        // with the session's final epoch: they are taken, the rest goes back.
        let left = shares.heartbeat(1, beat("a", -1, None), &topics, settings());
        assert_eq!(left.member_epoch, -1);
        assert!(shares.describe("g").members.is_empty());
        assert_eq!(shares.acquired_by("g", &tp, "a"), 10, "still held by its session");
        let last = AckRequest {
            group_id: "g".into(),
            member_id: "a".into(),
            node: NODE,
            session_epoch: FINAL_SESSION_EPOCH,
            partitions: vec![SessionPartition {
                tp: tp.clone(),
                topic_id: [1; 16],
                acks: vec![AckBatch { first_offset: 0, last_offset: 4, types: vec![ACK_ACCEPT] }],
            }],
        };
        let acked = shares.acknowledge(last, settings());
        assert_eq!(acked, Ok(vec![(tp.clone(), ErrorCode::None)]));
        let offsets = shares.start_offsets("g").expect("a share group");
        assert_eq!(offsets[0].1.start, 5, "0-4 accepted");
        assert_eq!(shares.acquired_by("g", &tp, "a"), 0, "5-9 released at the close");

        // A member that leaves and never closes its session: what it holds goes back after
        // the session timeout.
        shares.heartbeat(2, beat("b", 0, Some(&["t"])), &topics, settings());
        open_session(&mut shares, "b", &tp);
        let read = ShareRead { init_offset: None, ..read_from_start(&tp, 9) };
        assert!(!shares.acquire(2, "g", "b", vec![read], 100, settings()).is_empty());
        shares.heartbeat(3, beat("b", -1, None), &topics, settings());
        assert_eq!(shares.acquired_by("g", &tp, "b"), 5);
        shares.advance(3 + i64::from(settings().session_timeout_ms) + 1, |_| settings());
        assert_eq!(shares.acquired_by("g", &tp, "b"), 0);
    }

    #[test]
    fn a_deleted_topics_share_state_goes_with_what_members_held() {
        let t = TopicPartition::new("t".into(), 0);
        let u = TopicPartition::new("u".into(), 0);
        let mut shares = Shares::new(GroupConfig::default());
        let session = |tp: &TopicPartition, topic_id| SessionPartition {
            tp: tp.clone(),
            topic_id,
            acks: vec![],
        };
        let open = FetchOpen {
            partitions: vec![session(&t, [1; 16]), session(&u, [2; 16])],
            ..fetch_open("a", &t, 0, vec![])
        };
        shares.open_fetch(0, open, settings());
        let reads = vec![read_from_start(&t, 9), read_from_start(&u, 4)];
        assert_eq!(shares.acquire(0, "g", "a", reads, 100, settings()).len(), 2);
        let _ = shares.take_records();

        assert_eq!(shares.forget_topic("t"), 1);
        let records = shares.take_records();
        assert!(
            matches!(&records[..], [Record::Share { topic, value: None, .. }] if topic == "t"),
            "one tombstone: {records:?}"
        );
        let plan = shares.plan("g", "a", NODE, settings());
        assert_eq!(plan.iter().map(|p| p.tp.clone()).collect::<Vec<_>>(), vec![u.clone()]);
        assert_eq!(shares.start_offsets("g").map(|s| s.len()), Some(1));
        // The held records' locks end: only u's come back.
        shares.advance(settings().lock_ms + 1, |_| settings());
        assert_eq!(shares.take_freed(), vec![u.clone()]);
        // The topic created again starts anew, by share.auto.offset.reset.
        let again =
            FetchOpen { partitions: vec![session(&t, [3; 16])], ..fetch_open("a", &t, 1, vec![]) };
        let opened = shares.open_fetch(0, again, settings());
        let t_plan = opened.plan.iter().find(|p| p.tp == t).expect("t is read again");
        assert_eq!((t_plan.topic_id, t_plan.fetch_offset), ([3; 16], None));
        assert_eq!(shares.forget_topic("none"), 0);
    }

    #[test]
    fn a_share_session_of_a_member_that_never_joins_ends_after_the_session_timeout() {
        let tp = TopicPartition::new("t".into(), 0);
        let mut shares = Shares::new(GroupConfig::default());
        open_session(&mut shares, "stranger", &tp);
        let read = read_from_start(&tp, 4);
        let mut long_locks = settings();
        long_locks.lock_ms = 3_600_000;
        assert_eq!(shares.acquire(0, "g", "stranger", vec![read], 5, long_locks).len(), 1);
        let timeout = i64::from(settings().session_timeout_ms);
        shares.advance(timeout - 1, |_| settings());
        assert!(!shares.plan("g", "stranger", NODE, settings()).is_empty());
        shares.advance(timeout, |_| settings());
        assert!(shares.plan("g", "stranger", NODE, settings()).is_empty(), "the session ended");
        // Its records are available again, long before their locks would end.
        assert_eq!(shares.take_freed(), vec![tp.clone()]);
        assert_eq!(shares.in_flight("g", &tp), Some(5));
    }

    #[test]
    fn offsets_are_altered_and_deleted_only_in_an_empty_share_group() {
        let tp = TopicPartition::new("t".into(), 0);
        let mut shares = Shares::new(GroupConfig::default());
        let topics = Topics(vec![("t", [1; 16], 1)]);
        shares.heartbeat(0, beat("a", 0, Some(&["t"])), &topics, settings());
        assert_eq!(shares.alter_offsets("g", &[(tp.clone(), 3)]), Err(ErrorCode::NonEmptyGroup));
        assert_eq!(shares.delete_offsets("g", &["t".into()]), Err(ErrorCode::NonEmptyGroup));
        shares.heartbeat(0, beat("a", LEAVE_GROUP_MEMBER_EPOCH, None), &topics, settings());
        shares.take_records();
        // A stranger's session holds records: altering forgets them and starts at 3.
        open_session(&mut shares, "s", &tp);
        let read = read_from_start(&tp, 9);
        assert_eq!(shares.acquire(0, "g", "s", vec![read], 10, settings()).len(), 1);
        shares.take_records();
        assert_eq!(shares.alter_offsets("g", &[(tp.clone(), 3)]), Ok(()));
        let at = |n| ShareOffset { start: n, end: n, incomplete: 0 };
        assert_eq!(shares.start_offsets("g"), Some(vec![(tp.clone(), at(3))]));
        assert_eq!(shares.in_flight("g", &tp), Some(0));
        // The locks' timer (30 s) is gone; the stranger's session timer (45 s) is left.
        assert!(shares.next_deadline() > Some(settings().lock_ms), "{:?}", shares.next_deadline());
        assert_eq!(shares.take_freed(), vec![tp.clone()]);
        let written = shares.take_records();
        assert!(
            matches!(&written[..], [Record::Share { value: Some(v), .. }] if v.start_offset == 3)
        );
        // A group that does not exist is created with its offsets.
        assert_eq!(shares.alter_offsets("new", &[(tp.clone(), 5)]), Ok(()));
        assert_eq!(shares.start_offsets("new"), Some(vec![(tp.clone(), at(5))]));
        // Not when nothing passed (every topic unknown): there is no state to keep, and a
        // group in memory only would be gone after a restart.
        assert_eq!(shares.alter_offsets("unknown-only", &[]), Ok(()));
        assert!(!shares.contains("unknown-only"));
        // Delete: the topic's state goes (a tombstone); a topic without state is refused.
        let deleted = shares.delete_offsets("g", &["t".into(), "u".into()]);
        let codes =
            vec![("t".into(), ErrorCode::None), ("u".into(), ErrorCode::UnknownTopicOrPartition)];
        assert_eq!(deleted, Ok(codes));
        assert_eq!(shares.start_offsets("g"), Some(vec![]));
        let written = shares.take_records();
        assert!(matches!(&written[..], [_, Record::Share { value: None, .. }]), "{written:?}");
        assert_eq!(shares.delete_offsets("none", &[]), Err(ErrorCode::GroupIdNotFound));
    }

    #[test]
    fn control_batches_are_passed_and_a_read_past_the_end_takes_nothing() {
        let tp = TopicPartition::new("t".into(), 0);
        let mut shares = Shares::new(GroupConfig::default());
        open_session(&mut shares, "a", &tp);
        let read = |from: i64, batches: Vec<(i64, i64, bool)>| ShareRead {
            tp: tp.clone(),
            init_offset: Some(0),
            log_start: 0,
            batches,
            read_from: from,
        };
        let got = shares.acquire(
            0,
            "g",
            "a",
            vec![read(0, vec![(0, 0, true), (1, 2, false)])],
            9,
            settings(),
        );
        let runs = vec![Acquired { first_offset: 1, last_offset: 2, delivery_count: 1 }];
        assert_eq!(got, vec![(tp.clone(), runs)]);
        // Another fetch that read from later than the end (it started the partition anew
        // at a later offset) must not take the offsets between for a gap.
        let late =
            shares.acquire(0, "g", "b", vec![read(10, vec![(10, 12, false)])], 9, settings());
        assert!(late.is_empty());
        let end = |shares: &Shares| shares.groups["g"].partitions[&tp].end_offset();
        assert_eq!(end(&shares), 3);
        // A marker at the end moves the end past it.
        shares.acquire(0, "g", "b", vec![read(3, vec![(3, 3, true)])], 9, settings());
        assert_eq!(end(&shares), 4);
        assert_eq!(shares.take_records().len(), 2, "the start, then the marker passed");
    }
}
