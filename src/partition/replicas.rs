//! What a leader knows of its followers (Kafka's `Partition` replica state): each
//! follower's log end as its last fetch said, when it was last caught up, and from that the
//! high watermark bound (the smallest log end in the ISR) and the ISR changes to ask the
//! controller for (AlterPartition): a follower that has not caught up for
//! `replica.lag.time.max.ms` leaves, one out of the ISR that reached the high watermark
//! comes back. Pure: fetches and clocks in, decisions out.

use std::collections::BTreeMap;

use crate::model::{LeaderEpoch, NodeId, Offset};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Progress {
    /// The follower's log end (its last fetch offset); NONE before its first fetch.
    log_end: Offset,
    /// When it last fetched from at least the leader's log end of the fetch before.
    caught_up_ms: i64,
    /// The leader's log end at its last fetch.
    leader_end_at_last_fetch: Offset,
}

/// One replicated partition this node leads, in one leader epoch.
#[derive(Debug, Clone)]
pub struct Followers {
    pub me: NodeId,
    pub leader_epoch: LeaderEpoch,
    pub replicas: Vec<NodeId>,
    pub isr: Vec<NodeId>,
    /// The leader's log end when it took office: a follower holds this epoch's batches
    /// once its log end reaches it.
    pub epoch_start: Offset,
    progress: BTreeMap<NodeId, Progress>,
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
                };
                (*id, progress)
            })
            .collect();
        Followers {
            me,
            leader_epoch,
            replicas: replicas.to_vec(),
            isr: isr.to_vec(),
            epoch_start: Offset::ZERO,
            progress,
        }
    }

    /// The metadata log changed the ISR (or confirmed ours).
    pub fn set_isr(&mut self, isr: &[NodeId]) {
        self.isr = isr.to_vec();
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
        let followers = self.isr.iter().filter(|id| **id != self.me);
        let ends = followers.map(|id| self.progress.get(id).map_or(Offset::NONE, |p| p.log_end));
        ends.min().unwrap_or(Offset(i64::MAX))
    }

    /// The ISR this leader should ask for, if it differs from the current one: in-sync
    /// followers not caught up within `lag_ms` leave; followers out of it whose log end
    /// reached `high_watermark` (and the start of this leader's epoch, so they hold its
    /// first batch) come back. The leader always stays.
    pub fn wanted_isr(
        &self,
        now_ms: i64,
        lag_ms: i64,
        high_watermark: Offset,
        epoch_start: Offset,
    ) -> Option<Vec<NodeId>> {
        let keep = |id: &NodeId| {
            *id == self.me
                || match self.progress.get(id) {
                    Some(p) if self.isr.contains(id) => now_ms - p.caught_up_ms <= lag_ms,
                    Some(p) => p.log_end >= high_watermark && p.log_end >= epoch_start,
                    None => false,
                }
        };
        let wanted: Vec<NodeId> = self.replicas.iter().copied().filter(|id| keep(id)).collect();
        let mut current = self.isr.clone();
        current.sort_unstable();
        let mut sorted = wanted.clone();
        sorted.sort_unstable();
        (sorted != current).then_some(wanted)
    }

    /// How many replicas are in sync (for min.insync.replicas).
    pub fn isr_len(&self) -> usize {
        self.isr.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        f.set_isr(&[NodeId(1), NodeId(3)]);
        assert_eq!(f.high_watermark_bound(), Offset(12));
        f.set_isr(&[NodeId(1)]);
        assert_eq!(f.high_watermark_bound(), Offset(i64::MAX));
    }

    #[test]
    fn a_follower_that_stops_catching_up_leaves_after_the_lag_time() {
        let mut f = three();
        let lag = 500;
        f.on_fetch(NodeId(2), Offset(0), Offset(0), 1_000);
        f.on_fetch(NodeId(3), Offset(0), Offset(0), 1_000);
        assert_eq!(f.wanted_isr(1_400, lag, Offset(0), Offset(0)), None);
        // The leader grows; 2 keeps fetching what was there at its last fetch, 3 stalls
        // (caught up last at 1,100, when it fetched all there was at its fetch before).
        f.on_fetch(NodeId(2), Offset(0), Offset(50), 1_200);
        f.on_fetch(NodeId(3), Offset(0), Offset(50), 1_100);
        f.on_fetch(NodeId(2), Offset(50), Offset(90), 1_400);
        f.on_fetch(NodeId(3), Offset(0), Offset(90), 1_400);
        assert_eq!(f.wanted_isr(1_600, lag, Offset(0), Offset(0)), None, "within the lag");
        let without_3 = Some(vec![NodeId(1), NodeId(2)]);
        assert_eq!(f.wanted_isr(1_601, lag, Offset(0), Offset(0)), without_3);
        // A stalled follower never holds the high watermark once it is out.
        f.set_isr(&[NodeId(1), NodeId(2)]);
        assert_eq!(f.high_watermark_bound(), Offset(50));
    }

    #[test]
    fn a_follower_rejoins_at_the_high_watermark_and_the_epoch_start() {
        let ids = [1, 2, 3].map(NodeId);
        let mut f = Followers::new(NodeId(1), LeaderEpoch(4), &ids, &[NodeId(1)], 0);
        f.on_fetch(NodeId(2), Offset(30), Offset(40), 10);
        assert_eq!(f.wanted_isr(20, 500, Offset(35), Offset(0)), None, "below the hw");
        assert_eq!(f.wanted_isr(20, 500, Offset(30), Offset(31)), None, "below the epoch");
        assert_eq!(f.wanted_isr(20, 500, Offset(30), Offset(30)), Some(vec![NodeId(1), NodeId(2)]));
        // Replica order is kept, whatever order the ISR had.
        f.on_fetch(NodeId(3), Offset(40), Offset(40), 10);
        f.set_isr(&[NodeId(2), NodeId(1)]);
        assert_eq!(f.wanted_isr(20, 500, Offset(40), Offset(0)), Some(ids.to_vec()));
        assert_eq!(f.isr_len(), 2);
    }
}
