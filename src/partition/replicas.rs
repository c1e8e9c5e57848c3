//! What a leader knows of its followers (Kafka's `Partition` replica state): each
//! follower's log end as its last fetch said, when it was last caught up, and from that the
//! high watermark bound (the smallest log end in the ISR) and the ISR changes to ask the
//! controller for (AlterPartition): a follower that has not caught up for
//! `replica.lag.time.max.ms` leaves, one out of the ISR that reached the high watermark
//! comes back; and the replica a consumer should read from (KIP-392: Kafka's
//! `RackAwareReplicaSelector` within `ReplicaManager.findPreferredReadReplica`). Pure:
//! fetches and clocks in, decisions out.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::model::{LeaderEpoch, NodeId, Offset, PartitionEpoch};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Progress {
    /// The follower's log end (its last fetch offset); NONE before its first fetch.
    log_end: Offset,
    /// When it last fetched from at least the leader's log end of the fetch before.
    caught_up_ms: i64,
    /// The leader's log end at its last fetch.
    leader_end_at_last_fetch: Offset,
    /// The follower's log start as its last fetch said (NONE before its first fetch).
    log_start: Offset,
}

/// A replica as the read-replica choice sees it (Kafka's `ReplicaView`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaView<'a> {
    pub node: NodeId,
    /// Its broker's rack; None without one, or when the broker is not live (Kafka sees a
    /// fenced broker as `Node.noNode()`, which has no rack).
    pub rack: Option<&'a str>,
    pub log_end: Offset,
    /// How long ago it was last caught up (0 for the leader).
    pub since_caught_up_ms: i64,
}

/// Kafka's `RackAwareReplicaSelector.select`, then `findPreferredReadReplica`'s rule that
/// the leader is never named: the consumer's rack empty, no replica in it, or the leader in
/// it: the leader (None). Otherwise the replica of that rack that is most caught up (the
/// largest log end, then the shortest time since it was caught up; Kafka's
/// `ReplicaView.comparator`), the smaller node id on a full tie (Kafka picks one from a hash
/// set). `replicas` are the followers that may serve (in sync, holding the fetch offset).
pub fn rack_aware_read_replica(
    client_rack: &str,
    leader: &ReplicaView,
    replicas: &[ReplicaView],
) -> Option<NodeId> {
    if client_rack.is_empty() || leader.rack == Some(client_rack) {
        return None;
    }
    replicas
        .iter()
        .filter(|replica| replica.node != leader.node && replica.rack == Some(client_rack))
        .max_by(|a, b| {
            let by_end = a.log_end.cmp(&b.log_end);
            let by_lag = b.since_caught_up_ms.cmp(&a.since_caught_up_ms);
            by_end.then(by_lag).then(b.node.cmp(&a.node))
        })
        .map(|replica| replica.node)
}

/// One replicated partition this node leads, in one leader epoch.
#[derive(Debug, Clone)]
pub struct Followers {
    pub me: NodeId,
    pub leader_epoch: LeaderEpoch,
    /// The partition epoch of the ISR this leader knows (its ISR changes are based on it).
    pub partition_epoch: PartitionEpoch,
    pub replicas: Vec<NodeId>,
    pub isr: Vec<NodeId>,
    /// The leader's log end when it took office: a follower holds this epoch's batches
    /// once its log end reaches it.
    pub epoch_start: Offset,
    progress: BTreeMap<NodeId, Progress>,
    /// Followers out of `isr` that an ISR change asked for in this partition epoch would
    /// add (Kafka's pending AlterPartition and its "maximal ISR"). Such a change may still
    /// be applied at any moment while the partition epoch is this one, and then the
    /// controller may elect any of them leader; so from the moment it is asked, they hold
    /// the high watermark as if they were in, and nothing is acknowledged that they lack.
    /// Cleared when the partition epoch moves (the change was applied, or refused, or
    /// another one was: see `MetadataState::alter_partition`).
    pending: Vec<NodeId>,
    /// Set when this leader took office in an epoch its log already had batches of (this
    /// process resumed it after a restart): that epoch and the log end then. Followers are
    /// served batches before this log writes them (`log::read_for_follower`), so one may
    /// hold batches of that epoch past that end which this log never wrote and now assigns
    /// to other records: a divergence that epochs alone cannot show.
    pub resumed: Option<(LeaderEpoch, Offset)>,
    /// Followers whose fetch showed they hold nothing past `resumed`'s end in its epoch.
    resumed_checked: Vec<NodeId>,
}

impl Followers {
    /// A leader taking office at `now_ms`: every follower counts as caught up now (a grace
    /// of one lag time before it can be dropped, as Kafka gives), its log end unknown.
    pub fn new(
        me: NodeId,
        leader_epoch: LeaderEpoch,
        replicas: &[NodeId],
        isr: &[NodeId],
        now_ms: i64,
    ) -> Followers {
        let progress = replicas
            .iter()
            .filter(|id| **id != me)
            .map(|id| {
                let progress = Progress {
                    log_end: Offset::NONE,
                    caught_up_ms: now_ms,
                    leader_end_at_last_fetch: Offset::NONE,
                    log_start: Offset::NONE,
                };
                (*id, progress)
            })
            .collect();
        Followers {
            me,
            leader_epoch,
            partition_epoch: PartitionEpoch::INITIAL,
            replicas: replicas.to_vec(),
            isr: isr.to_vec(),
            epoch_start: Offset::ZERO,
            progress,
            pending: Vec::new(),
            resumed: None,
            resumed_checked: Vec::new(),
        }
    }

    /// A follower's fetch (`node`, whose last batch is of `last_epoch`, at `fetch_offset`)
    /// after this leader resumed an epoch (`resumed`): the diverging epoch to answer, so that
    /// it truncates to where this log ended then, while its fetch is in that epoch past that
    /// end and it has not yet fetched at or below it; its progress does not count meanwhile.
    /// None once it has (and for a leader that did not resume).
    pub fn resumed_divergence(
        &mut self,
        node: NodeId,
        last_epoch: LeaderEpoch,
        fetch_offset: Offset,
    ) -> Option<(LeaderEpoch, Offset)> {
        let (epoch, end) = self.resumed?;
        if self.resumed_checked.contains(&node) {
            return None;
        }
        if last_epoch == epoch && fetch_offset > end {
            return Some((epoch, end));
        }
        self.resumed_checked.push(node);
        None
    }

    /// The metadata log's ISR and partition epoch (changed, or ours confirmed). A new
    /// partition epoch ends every change asked in the one before.
    pub fn set_isr(&mut self, isr: &[NodeId], partition_epoch: PartitionEpoch) {
        if partition_epoch != self.partition_epoch {
            self.pending.clear();
            self.partition_epoch = partition_epoch;
        }
        self.isr = isr.to_vec();
        self.pending.retain(|id| !isr.contains(id));
    }

    /// An ISR change was asked for (proposed to the metadata log) based on
    /// `partition_epoch`: its additions hold the high watermark from now on.
    pub fn asked(&mut self, partition_epoch: PartitionEpoch, isr: &[NodeId]) {
        if partition_epoch != self.partition_epoch {
            return;
        }
        for id in isr {
            if !self.isr.contains(id) && !self.pending.contains(id) && *id != self.me {
                self.pending.push(*id);
            }
        }
    }

    /// The ISR as the high watermark must see it: the metadata log's, and the followers
    /// that a change asked in this partition epoch would add (Kafka's maximal ISR).
    fn maximal_isr(&self) -> impl Iterator<Item = &NodeId> {
        self.isr.iter().chain(self.pending.iter())
    }

    /// In-sync followers (of the maximal ISR) whose last fetch said they lack records
    /// below `high_watermark`. Always empty while the high watermark is bounded by them:
    /// a name here means an acknowledged record that a replica the controller may elect
    /// does not have (logged as a broken invariant by the caller).
    pub fn behind(&self, high_watermark: Offset) -> Vec<(NodeId, Offset)> {
        self.maximal_isr()
            .filter(|id| **id != self.me)
            .filter_map(|id| self.progress.get(id).map(|p| (*id, p.log_end)))
            .filter(|(_, end)| *end != Offset::NONE && *end < high_watermark)
            .collect()
    }

    /// The metadata log changed the replicas (a reassignment): a new follower is tracked
    /// from `now_ms` as a leader taking office tracks each (its log end unknown until its
    /// first fetch; out of the ISR, so it holds nothing back), a removed one is forgotten.
    pub fn set_replicas(&mut self, replicas: &[NodeId], now_ms: i64) {
        self.progress.retain(|id, _| replicas.contains(id));
        for id in replicas.iter().filter(|id| **id != self.me) {
            self.progress.entry(*id).or_insert(Progress {
                log_end: Offset::NONE,
                caught_up_ms: now_ms,
                leader_end_at_last_fetch: Offset::NONE,
                log_start: Offset::NONE,
            });
        }
        self.replicas = replicas.to_vec();
    }

    /// A fetch of `follower` from `fetch_offset` (its log end) while the leader's log end
    /// is `leader_end`. False when `follower` is not a replica.
    pub fn on_fetch(
        &mut self,
        follower: NodeId,
        fetch_offset: Offset,
        leader_end: Offset,
        now_ms: i64,
    ) -> bool {
        let Some(progress) = self.progress.get_mut(&follower) else { return false };
        progress.log_end = fetch_offset;
        if fetch_offset >= leader_end || fetch_offset >= progress.leader_end_at_last_fetch {
            progress.caught_up_ms = now_ms;
        }
        progress.leader_end_at_last_fetch = leader_end;
        true
    }

    /// The high watermark's bound: the smallest log end of the in-sync followers (MAX when
    /// the leader is the only one in sync; NONE while one has not fetched yet, which holds
    /// the high watermark where it is).
    pub fn high_watermark_bound(&self) -> Offset {
        let followers = self.maximal_isr().filter(|id| **id != self.me);
        let ends = followers.map(|id| self.progress.get(id).map_or(Offset::NONE, |p| p.log_end));
        ends.min().unwrap_or(Offset(i64::MAX))
    }

    /// The ISR this leader should ask for, if it differs from the current one: in-sync
    /// followers not caught up within `lag_ms` leave; followers out of it come back when
    /// their log end reached `high_watermark` (and the start of this leader's epoch, so
    /// they hold its first batch), they were caught up within `lag_ms` (so they would not
    /// leave again at the next look: Kafka adds a follower on its fetch) and `eligible`
    /// says their broker may join (Kafka's `isReplicaIsrEligible`: not fenced; the
    /// controller refuses a fenced one). Without the last two, a dead follower that had
    /// everything was asked back in again and again (the controller refusing each, or
    /// taking it before the fencing and then losing it to the lag), hundreds of metadata
    /// records a second. The leader always stays. Followers a pending change would add
    /// count as in sync; while one is pending, the ISR wanted is returned even when it is
    /// the metadata log's (asking for it again moves the partition epoch, which ends the
    /// pending change: a follower that stopped fetching meanwhile holds the high watermark
    /// no longer than that).
    pub fn wanted_isr(
        &self,
        now_ms: i64,
        lag_ms: i64,
        high_watermark: Offset,
        epoch_start: Offset,
        eligible: &dyn Fn(NodeId) -> bool,
    ) -> Option<Vec<NodeId>> {
        let keep = |id: &NodeId| {
            *id == self.me
                || match self.progress.get(id) {
                    Some(p) if self.isr.contains(id) || self.pending.contains(id) => {
                        now_ms - p.caught_up_ms <= lag_ms
                    }
                    Some(p) => {
                        p.log_end >= high_watermark
                            && p.log_end >= epoch_start
                            && now_ms - p.caught_up_ms <= lag_ms
                            && eligible(*id)
                    }
                    None => false,
                }
        };
        let wanted: Vec<NodeId> = self.replicas.iter().copied().filter(|id| keep(id)).collect();
        let mut current = self.isr.clone();
        current.sort_unstable();
        let mut sorted = wanted.clone();
        sorted.sort_unstable();
        (sorted != current || !self.pending.is_empty()).then_some(wanted)
    }

    /// A follower's fetch said its log starts at `log_start`.
    pub fn set_log_start(&mut self, follower: NodeId, log_start: Offset) {
        if let Some(progress) = self.progress.get_mut(&follower) {
            progress.log_start = log_start;
        }
    }

    /// The replica a consumer in `client_rack` fetching from `fetch_offset` should read
    /// from instead of this leader (Kafka's `findPreferredReadReplica`): only in-sync
    /// followers whose log holds `fetch_offset` (log start <= it <= log end) are candidates,
    /// `racks` names the rack of each live broker that has one, `leader_end` is this
    /// leader's log end. None: read here.
    pub fn preferred_read_replica(
        &self,
        client_rack: &str,
        racks: &BTreeMap<NodeId, Arc<str>>,
        leader_end: Offset,
        fetch_offset: Offset,
        now_ms: i64,
    ) -> Option<NodeId> {
        let rack_of = |node: &NodeId| racks.get(node).map(|rack| &**rack);
        let leader = ReplicaView {
            node: self.me,
            rack: rack_of(&self.me),
            log_end: leader_end,
            since_caught_up_ms: 0,
        };
        let candidates: Vec<ReplicaView> = self
            .isr
            .iter()
            .filter(|node| **node != self.me)
            .filter_map(|node| {
                let progress = self.progress.get(node)?;
                let holds = progress.log_start <= fetch_offset && fetch_offset <= progress.log_end;
                holds.then(|| ReplicaView {
                    node: *node,
                    rack: rack_of(node),
                    log_end: progress.log_end,
                    since_caught_up_ms: now_ms - progress.caught_up_ms,
                })
            })
            .collect();
        rack_aware_read_replica(client_rack, &leader, &candidates)
    }

    /// How many replicas are in sync (for min.insync.replicas).
    pub fn isr_len(&self) -> usize {
        self.isr.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every broker live (unfenced): any replica may join the ISR.
    fn live(_: NodeId) -> bool {
        true
    }

    fn three() -> Followers {
        let ids = [1, 2, 3].map(NodeId);
        Followers::new(NodeId(1), LeaderEpoch(4), &ids, &ids, 1_000)
    }

    #[test]
    fn the_bound_is_the_smallest_in_sync_log_end() {
        let mut f = three();
        assert_eq!(f.high_watermark_bound(), Offset::NONE, "no follower fetched yet");
        assert!(f.on_fetch(NodeId(2), Offset(10), Offset(12), 1_100));
        assert_eq!(f.high_watermark_bound(), Offset::NONE);
        assert!(f.on_fetch(NodeId(3), Offset(12), Offset(12), 1_100));
        assert_eq!(f.high_watermark_bound(), Offset(10));
        assert!(!f.on_fetch(NodeId(9), Offset(12), Offset(12), 1_100), "not a replica");
        // A follower out of the ISR no longer holds it back.
        f.set_isr(&[NodeId(1), NodeId(3)], PartitionEpoch(1));
        assert_eq!(f.high_watermark_bound(), Offset(12));
        f.set_isr(&[NodeId(1)], PartitionEpoch(2));
        assert_eq!(f.high_watermark_bound(), Offset(i64::MAX));
    }

    #[test]
    fn a_follower_that_stops_catching_up_leaves_after_the_lag_time() {
        let mut f = three();
        let lag = 500;
        f.on_fetch(NodeId(2), Offset(0), Offset(0), 1_000);
        f.on_fetch(NodeId(3), Offset(0), Offset(0), 1_000);
        assert_eq!(f.wanted_isr(1_400, lag, Offset(0), Offset(0), &live), None);
        // The leader grows; 2 keeps fetching what was there at its last fetch, 3 stalls
        // (caught up last at 1,100, when it fetched all there was at its fetch before).
        f.on_fetch(NodeId(2), Offset(0), Offset(50), 1_200);
        f.on_fetch(NodeId(3), Offset(0), Offset(50), 1_100);
        f.on_fetch(NodeId(2), Offset(50), Offset(90), 1_400);
        f.on_fetch(NodeId(3), Offset(0), Offset(90), 1_400);
        assert_eq!(f.wanted_isr(1_600, lag, Offset(0), Offset(0), &live), None, "within the lag");
        let without_3 = Some(vec![NodeId(1), NodeId(2)]);
        assert_eq!(f.wanted_isr(1_601, lag, Offset(0), Offset(0), &live), without_3);
        // A stalled follower never holds the high watermark once it is out.
        f.set_isr(&[NodeId(1), NodeId(2)], PartitionEpoch(1));
        assert_eq!(f.high_watermark_bound(), Offset(50));
    }

    /// A reassignment adds replica 4 and removes 3: 4 holds nothing back until it is in
    /// sync, joins the ISR once it reached the high watermark, and 3 is forgotten.
    #[test]
    fn an_added_replica_joins_once_caught_up_and_a_removed_one_is_forgotten() {
        let mut f = three();
        f.on_fetch(NodeId(2), Offset(40), Offset(40), 1_000);
        f.on_fetch(NodeId(3), Offset(40), Offset(40), 1_000);
        f.set_replicas(&[4, 2, 3, 1].map(NodeId), 1_100);
        assert_eq!(f.high_watermark_bound(), Offset(40), "4 is not in sync");
        assert_eq!(
            f.wanted_isr(1_200, 500, Offset(40), Offset(0), &live),
            None,
            "4 has not fetched"
        );
        f.on_fetch(NodeId(4), Offset(10), Offset(40), 1_200);
        assert_eq!(f.wanted_isr(1_300, 500, Offset(40), Offset(0), &live), None, "4 is behind");
        f.on_fetch(NodeId(4), Offset(40), Offset(40), 1_300);
        let with_4 = Some([2, 3, 1, 4].map(NodeId).to_vec());
        // Wanted in replica order: 4 first as the target has it.
        let wanted = f.wanted_isr(1_400, 500, Offset(40), Offset(0), &live);
        assert_eq!(
            wanted.map(|mut isr| {
                isr.sort();
                isr
            }),
            with_4.map(|mut isr| {
                isr.sort();
                isr
            })
        );
        f.set_replicas(&[4, 2, 1].map(NodeId), 1_500);
        f.set_isr(&[1, 2, 4].map(NodeId), PartitionEpoch(1));
        assert!(!f.on_fetch(NodeId(3), Offset(40), Offset(40), 1_600), "no longer a replica");
        assert_eq!(f.high_watermark_bound(), Offset(40));
    }

    fn view(
        node: i32,
        rack: Option<&str>,
        log_end: i64,
        since_caught_up_ms: i64,
    ) -> ReplicaView<'_> {
        ReplicaView { node: NodeId(node), rack, log_end: Offset(log_end), since_caught_up_ms }
    }

    #[test]
    fn the_rack_aware_choice_is_kafkas() {
        let leader = view(1, Some("a"), 100, 0);
        let b2 = view(2, Some("b"), 90, 10);
        let b3 = view(3, Some("b"), 95, 500);
        let c4 = view(4, Some("c"), 100, 0);
        let replicas = [b2, b3, c4];
        // No client rack, or one no replica is in: the leader (nothing named).
        assert_eq!(rack_aware_read_replica("", &leader, &replicas), None);
        assert_eq!(rack_aware_read_replica("z", &leader, &replicas), None);
        // The leader's own rack: the leader, even with a follower there too.
        let a5 = view(5, Some("a"), 100, 0);
        assert_eq!(rack_aware_read_replica("a", &leader, &[a5, b2]), None);
        // The one replica of the rack.
        assert_eq!(rack_aware_read_replica("c", &leader, &replicas), Some(NodeId(4)));
        // The most caught-up of the rack: the largest log end first...
        assert_eq!(rack_aware_read_replica("b", &leader, &replicas), Some(NodeId(3)));
        // ...then the shortest time since it was caught up, then the smaller node id.
        let b6 = view(6, Some("b"), 95, 20);
        assert_eq!(rack_aware_read_replica("b", &leader, &[b3, b6]), Some(NodeId(6)));
        let b7 = view(7, Some("b"), 95, 20);
        assert_eq!(rack_aware_read_replica("b", &leader, &[b7, b6]), Some(NodeId(6)));
        // A replica without a rack (or not live) never matches; a leader without one is
        // not in any rack.
        let none8 = view(8, None, 100, 0);
        assert_eq!(rack_aware_read_replica("b", &leader, &[none8]), None);
        let rackless_leader = view(1, None, 100, 0);
        assert_eq!(rack_aware_read_replica("b", &rackless_leader, &[b2]), Some(NodeId(2)));
    }

    #[test]
    fn only_live_in_sync_followers_holding_the_offset_are_preferred() {
        let mut f = three();
        let racks: BTreeMap<NodeId, Arc<str>> =
            [(1, "a"), (2, "b"), (3, "c")].map(|(id, r)| (NodeId(id), Arc::from(r))).into();
        let prefer = |f: &Followers, rack: &str, racks: &BTreeMap<NodeId, Arc<str>>, at| {
            f.preferred_read_replica(rack, racks, Offset(100), Offset(at), 2_000)
        };
        // Before a follower fetched its log end is unknown: not a candidate.
        assert_eq!(prefer(&f, "b", &racks, 0), None);
        f.on_fetch(NodeId(2), Offset(80), Offset(100), 1_500);
        f.set_log_start(NodeId(2), Offset(10));
        f.on_fetch(NodeId(3), Offset(100), Offset(100), 1_500);
        f.set_log_start(NodeId(3), Offset(0));
        assert_eq!(prefer(&f, "b", &racks, 80), Some(NodeId(2)));
        assert_eq!(prefer(&f, "b", &racks, 81), None, "past its log end");
        assert_eq!(prefer(&f, "b", &racks, 9), None, "below its log start");
        assert_eq!(prefer(&f, "c", &racks, 100), Some(NodeId(3)));
        assert_eq!(prefer(&f, "a", &racks, 50), None, "the leader's rack");
        assert_eq!(prefer(&f, "", &racks, 50), None, "no client rack");
        // Out of the ISR: not a candidate; nor when its broker is not live (no rack known).
        f.set_isr(&[NodeId(1), NodeId(3)], PartitionEpoch(1));
        assert_eq!(prefer(&f, "b", &racks, 50), None);
        let mut fenced = racks.clone();
        fenced.remove(&NodeId(3));
        assert_eq!(prefer(&f, "c", &fenced, 50), None);
    }

    #[test]
    fn a_follower_rejoins_at_the_high_watermark_and_the_epoch_start() {
        let ids = [1, 2, 3].map(NodeId);
        let mut f = Followers::new(NodeId(1), LeaderEpoch(4), &ids, &[NodeId(1)], 0);
        f.on_fetch(NodeId(2), Offset(30), Offset(40), 10);
        assert_eq!(f.wanted_isr(20, 500, Offset(35), Offset(0), &live), None, "below the hw");
        assert_eq!(f.wanted_isr(20, 500, Offset(30), Offset(31), &live), None, "below the epoch");
        assert_eq!(
            f.wanted_isr(20, 500, Offset(30), Offset(30), &live),
            Some(vec![NodeId(1), NodeId(2)])
        );
        // Replica order is kept, whatever order the ISR had.
        f.on_fetch(NodeId(3), Offset(40), Offset(40), 10);
        f.set_isr(&[NodeId(2), NodeId(1)], PartitionEpoch(1));
        assert_eq!(f.wanted_isr(20, 500, Offset(40), Offset(0), &live), Some(ids.to_vec()));
        assert_eq!(f.isr_len(), 2);
    }

    /// A follower that died holding everything (its last log end at the high watermark) is
    /// not asked back in: not once its broker is fenced, and not while it is live but no
    /// longer caught up (it would leave again at the next look, a flip-flop of records).
    #[test]
    fn a_dead_follower_at_the_high_watermark_is_not_asked_back() {
        let ids = [1, 2, 3].map(NodeId);
        let mut f = Followers::new(NodeId(1), LeaderEpoch(4), &ids, &ids, 0);
        let lag = 500;
        f.on_fetch(NodeId(2), Offset(10), Offset(10), 100);
        f.on_fetch(NodeId(3), Offset(10), Offset(10), 100);
        // 3 dies; 2 keeps fetching; the fencing took 3 out of the ISR.
        f.on_fetch(NodeId(2), Offset(10), Offset(10), 400);
        f.set_isr(&[NodeId(1), NodeId(2)], PartitionEpoch(1));
        let fenced = |id: NodeId| id != NodeId(3);
        assert_eq!(f.wanted_isr(450, lag, Offset(10), Offset(0), &fenced), None, "fenced");
        // Live (not fenced yet) but silent for longer than the lag time: stays out.
        assert_eq!(f.wanted_isr(601, lag, Offset(10), Offset(0), &live), None, "silent");
        assert_eq!(f.wanted_isr(450, lag, Offset(10), Offset(0), &live), Some(ids.to_vec()));
        // Back and fetching: it joins.
        f.on_fetch(NodeId(2), Offset(10), Offset(10), 1_000);
        f.on_fetch(NodeId(3), Offset(10), Offset(10), 1_000);
        assert_eq!(f.wanted_isr(1_050, lag, Offset(10), Offset(0), &live), Some(ids.to_vec()));
    }

    /// The lost records of a cluster crash trial: a follower back from a restart caught
    /// up, the leader asked to add it, and went on acknowledging with the old ISR while the
    /// change was being committed; the controller then elected the added follower, which
    /// lacked the last acknowledged records. With Kafka's maximal ISR, an addition holds
    /// the high watermark from the moment it is asked.
    #[test]
    fn a_follower_being_added_holds_the_high_watermark_from_the_ask() {
        let ids = [1, 2, 3].map(NodeId);
        let mut f = Followers::new(NodeId(2), LeaderEpoch(7), &ids, &[NodeId(2), NodeId(3)], 0);
        f.set_isr(&[NodeId(2), NodeId(3)], PartitionEpoch(3));
        f.on_fetch(NodeId(3), Offset(1470), Offset(1470), 10);
        f.on_fetch(NodeId(1), Offset(1470), Offset(1470), 10);
        assert_eq!(f.high_watermark_bound(), Offset(1470));
        let wanted = f.wanted_isr(20, 500, Offset(1470), Offset(0), &live);
        assert_eq!(wanted.as_deref(), Some(&ids[..]));
        f.asked(PartitionEpoch(3), &ids);
        // 3 fetches on; 1 is slower: the high watermark waits for it.
        f.on_fetch(NodeId(3), Offset(1476), Offset(1476), 30);
        assert_eq!(f.high_watermark_bound(), Offset(1470));
        assert!(f.behind(Offset(1470)).is_empty());
        assert_eq!(f.behind(Offset(1476)), vec![(NodeId(1), Offset(1470))], "what was lost");
        // Asked again (in case the proposal was lost) while pending and caught up.
        assert_eq!(
            f.wanted_isr(40, 500, Offset(1470), Offset(0), &live).as_deref(),
            Some(&ids[..])
        );
        // Applied: 1 is in the ISR, nothing pending.
        f.set_isr(&ids, PartitionEpoch(4));
        assert_eq!(f.high_watermark_bound(), Offset(1470));
        f.on_fetch(NodeId(1), Offset(1476), Offset(1476), 50);
        assert_eq!(f.high_watermark_bound(), Offset(1476));
        assert_eq!(f.wanted_isr(60, 500, Offset(1476), Offset(0), &live), None);
        // An ask based on an old partition epoch can never be applied: it holds nothing.
        f.set_isr(&[NodeId(2), NodeId(1)], PartitionEpoch(5));
        f.asked(PartitionEpoch(4), &ids);
        assert_eq!(f.high_watermark_bound(), Offset(1476));
        assert_eq!(
            f.wanted_isr(60, 500, Offset(1476), Offset(0), &live).as_deref(),
            Some(&ids[..])
        );
    }

    /// A follower being added that stops fetching holds the high watermark only until the
    /// lag time: the leader then asks for the ISR the metadata log has, which moves the
    /// partition epoch (taken or refused, the pending change is over).
    #[test]
    fn a_follower_being_added_that_stops_fetching_is_let_go() {
        let ids = [1, 2, 3].map(NodeId);
        let mut f = Followers::new(NodeId(2), LeaderEpoch(7), &ids, &[NodeId(2), NodeId(3)], 0);
        f.set_isr(&[NodeId(2), NodeId(3)], PartitionEpoch(3));
        f.on_fetch(NodeId(3), Offset(100), Offset(100), 10);
        f.on_fetch(NodeId(1), Offset(100), Offset(100), 10);
        f.asked(PartitionEpoch(3), &ids);
        f.on_fetch(NodeId(3), Offset(150), Offset(150), 400);
        assert_eq!(f.high_watermark_bound(), Offset(100), "1 is being added");
        let lag = 500;
        assert_eq!(
            f.wanted_isr(510, lag, Offset(100), Offset(0), &live).as_deref(),
            Some(&ids[..])
        );
        // 1 silent for longer than the lag: the ISR the log has is asked for again.
        let without_1 = [NodeId(2), NodeId(3)];
        let wanted = f.wanted_isr(511, lag, Offset(100), Offset(0), &live);
        assert_eq!(wanted.as_deref(), Some(&without_1[..]));
        // Still pending until the partition epoch moves.
        assert_eq!(f.high_watermark_bound(), Offset(100));
        f.set_isr(&without_1, PartitionEpoch(4));
        assert_eq!(f.high_watermark_bound(), Offset(150));
        assert_eq!(f.wanted_isr(520, lag, Offset(150), Offset(0), &live), None);
    }

    #[test]
    fn a_resumed_leader_truncates_followers_past_its_end_once() {
        let (a, b) = (NodeId(2), NodeId(3));
        let mut f = Followers::new(NodeId(1), LeaderEpoch(4), &[NodeId(1), a, b], &[], 0);
        // Not resumed: nothing to say.
        assert_eq!(f.resumed_divergence(a, LeaderEpoch(4), Offset(90)), None);
        let mut f = Followers::new(NodeId(1), LeaderEpoch(4), &[NodeId(1), a, b], &[], 0);
        f.resumed = Some((LeaderEpoch(4), Offset(50)));
        // a holds epoch 4 past 50: truncate to 50, as often as it asks before it did.
        assert_eq!(
            f.resumed_divergence(a, LeaderEpoch(4), Offset(60)),
            Some((LeaderEpoch(4), Offset(50)))
        );
        assert_eq!(
            f.resumed_divergence(a, LeaderEpoch(4), Offset(60)),
            Some((LeaderEpoch(4), Offset(50)))
        );
        // Truncated: from 50 on, anything it fetches came from this process.
        assert_eq!(f.resumed_divergence(a, LeaderEpoch(4), Offset(50)), None);
        assert_eq!(f.resumed_divergence(a, LeaderEpoch(4), Offset(70)), None);
        // b's last batch is of an earlier epoch (the plain epoch check covers it): checked.
        assert_eq!(f.resumed_divergence(b, LeaderEpoch(3), Offset(55)), None);
        assert_eq!(f.resumed_divergence(b, LeaderEpoch(4), Offset(80)), None);
    }
}
