//! Broker liveness on the active controller (Kafka's BrokerHeartbeatManager): who heartbeat
//! when, and which FenceBroker and UnfenceBroker records are due. Pure (STYLE.md R6): time
//! comes in as `now_ms` from the Raft driver's monotonic clock, records go out for the
//! driver to propose; nothing here reads a clock or touches the network.
//!
//! ```text
//!   broker (every node)              active controller (the Raft leader, shard 0)
//!   every heartbeat interval  ---->  heard(now, heartbeat): kept if its epoch is the
//!   {node, broker epoch,             broker's current registration's
//!    want_shut_down}                 due(now): unfenced and not heard for the session
//!                                    timeout -> FenceBroker (session expired);
//!                                    wants to shut down -> FenceBroker (controlled);
//!                                    fenced but heard within the timeout -> UnfenceBroker
//! ```
//!
//! Sessions start when this node becomes the active controller (`activate`): a broker
//! neither this controller nor any other heard lately is given a full session timeout from
//! then, so a failover never fences live brokers whose heartbeats went to the old leader.
//! A record is proposed again only after `retry_ms` (it may be lost with a leader); once it
//! is applied the state no longer asks for it. Heartbeats are not written to the log: only
//! the changes they cause are (as in Kafka).
//!
//! Heartbeats are also stamped as they arrive (`Arrivals`, written by the controller
//! transport and the local heartbeat task before the heartbeat waits in the driver's event
//! queue, as Kafka's `BrokerHeartbeatTracker` takes contact times outside its controller's
//! queue): `due` counts a broker alive from the later of the two, so a driver that is behind
//! (each applied batch waits for an fdatasync; a restarted broker's partitions bring a burst
//! of ISR changes) never fences brokers whose heartbeats are only waiting in its queue. A
//! controlled shutdown and an unfencing still go by the heartbeats the driver took.
//!
//! Lifecycle: one per node, in the Raft driver; active only while the node is the leader
//! and has applied its own LeaderChange record (then it has applied the whole log before
//! its term). Concurrency: shard 0 only.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use super::records::{FenceReason, MetadataRecord};
use super::state::MetadataState;
use crate::model::NodeId;

/// A broker's heartbeat (Kafka's BrokerHeartbeatRequest, what this version needs of it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BrokerHeartbeat {
    pub node_id: NodeId,
    /// The epoch of the registration the broker saw committed for its own process.
    pub broker_epoch: u64,
    /// The broker is shutting down: fence it now (Kafka's WantShutDown).
    pub want_shut_down: bool,
}

/// The sessions of the registered brokers, as the active controller sees them.
#[derive(Debug)]
pub struct Sessions {
    session_timeout_ms: u64,
    retry_ms: u64,
    /// Since when this node is the active controller; None while it is not.
    active_since_ms: Option<u64>,
    /// The last heartbeat kept from each broker.
    heard: BTreeMap<NodeId, Heard>,
    /// The last fence or unfence proposed for each broker.
    proposed: Throttle<(NodeId, u64, bool)>,
    /// Heartbeats as they arrived, before the driver took them.
    arrivals: Arrivals,
}

/// The last heartbeat of each broker stamped when it arrived (see the module doc); shared
/// by the driver's `Sessions` and what receives heartbeats, on the same shard.
#[derive(Debug, Clone, Default)]
pub struct Arrivals(Rc<RefCell<BTreeMap<NodeId, Heard>>>);

impl Arrivals {
    /// A heartbeat arrived at `at_ms` (the driver's clock).
    pub fn record(&self, at_ms: u64, heartbeat: &BrokerHeartbeat) {
        let heard = Heard {
            broker_epoch: heartbeat.broker_epoch,
            at_ms,
            want_shut_down: heartbeat.want_shut_down,
        };
        self.0.borrow_mut().insert(heartbeat.node_id, heard);
    }

    /// When a heartbeat of `node_id`'s registration `broker_epoch` last arrived.
    fn last_ms(&self, node_id: NodeId, broker_epoch: u64) -> Option<u64> {
        let arrivals = self.0.borrow();
        arrivals.get(&node_id).filter(|h| h.broker_epoch == broker_epoch).map(|h| h.at_ms)
    }
}

#[derive(Debug, Clone, Copy)]
struct Heard {
    broker_epoch: u64,
    at_ms: u64,
    want_shut_down: bool,
}

impl Sessions {
    pub fn new(session_timeout_ms: u64, retry_ms: u64) -> Sessions {
        assert!(session_timeout_ms > 0);
        Sessions {
            session_timeout_ms,
            retry_ms,
            active_since_ms: None,
            heard: BTreeMap::new(),
            proposed: Throttle::new(retry_ms),
            arrivals: Arrivals::default(),
        }
    }

    /// Where heartbeats are stamped as they arrive.
    pub fn arrivals(&self) -> Arrivals {
        self.arrivals.clone()
    }

    pub fn is_active(&self) -> bool {
        self.active_since_ms.is_some()
    }

    /// This node became the active controller at `now_ms`: every session starts afresh.
    pub fn activate(&mut self, now_ms: u64) {
        self.active_since_ms = Some(now_ms);
        self.heard.clear();
        self.proposed = Throttle::new(self.retry_ms);
    }

    /// This node is no longer the active controller.
    pub fn deactivate(&mut self) {
        self.active_since_ms = None;
        self.heard.clear();
    }

    /// Takes a heartbeat; kept (true) if this node is active and the heartbeat names the
    /// broker's current registration (an older epoch is a previous process of the broker,
    /// a newer one a registration this node has not applied yet: both ignored).
    pub fn heard(
        &mut self,
        now_ms: u64,
        heartbeat: &BrokerHeartbeat,
        state: &MetadataState,
    ) -> bool {
        if !self.is_active() {
            return false;
        }
        let current = state.brokers.get(&heartbeat.node_id).map(|b| b.epoch);
        if current != Some(heartbeat.broker_epoch) {
            return false;
        }
        let heard = Heard {
            broker_epoch: heartbeat.broker_epoch,
            at_ms: now_ms,
            want_shut_down: heartbeat.want_shut_down,
        };
        self.heard.insert(heartbeat.node_id, heard);
        true
    }

    /// The fence and unfence records due at `now_ms`, by node id; none while inactive.
    pub fn due(&mut self, now_ms: u64, state: &MetadataState) -> Vec<MetadataRecord> {
        let Some(since_ms) = self.active_since_ms else { return Vec::new() };
        let mut records = Vec::new();
        for broker in state.brokers.values() {
            let heard = self.heard.get(&broker.node_id).filter(|h| h.broker_epoch == broker.epoch);
            let (node_id, broker_epoch) = (broker.node_id, broker.epoch);
            let record = if !broker.fenced {
                let arrived_ms = self.arrivals.last_ms(node_id, broker_epoch).unwrap_or(0);
                let last_ms = heard.map_or(since_ms, |h| h.at_ms).max(since_ms).max(arrived_ms);
                if heard.is_some_and(|h| h.want_shut_down) {
                    let reason = FenceReason::ControlledShutdown;
                    Some(MetadataRecord::FenceBroker { node_id, broker_epoch, reason })
                } else if now_ms >= last_ms + self.session_timeout_ms {
                    let reason = FenceReason::SessionExpired;
                    Some(MetadataRecord::FenceBroker { node_id, broker_epoch, reason })
                } else {
                    None
                }
            } else {
                let alive = heard.is_some_and(|h| {
                    !h.want_shut_down && now_ms < h.at_ms + self.session_timeout_ms
                });
                alive.then_some(MetadataRecord::UnfenceBroker { node_id, broker_epoch })
            };
            if let Some(record) = record {
                let fence = matches!(record, MetadataRecord::FenceBroker { .. });
                if self.proposed.due((node_id, broker_epoch, fence), now_ms) {
                    records.push(record);
                }
            }
        }
        records
    }
}

/// Remembers when each key was last proposed, so that a record is proposed again only
/// after `retry_ms` (until it is applied and no longer asked for).
#[derive(Debug)]
pub struct Throttle<K> {
    retry_ms: u64,
    proposed: BTreeMap<K, u64>,
}

impl<K: Ord> Throttle<K> {
    pub fn new(retry_ms: u64) -> Throttle<K> {
        Throttle { retry_ms, proposed: BTreeMap::new() }
    }

    /// Whether `key` may be proposed at `now_ms` (then it counts as proposed now). Keys
    /// older than the retry interval are forgotten, so the map holds only recent ones.
    pub fn due(&mut self, key: K, now_ms: u64) -> bool {
        let retry_ms = self.retry_ms;
        self.proposed.retain(|_, at_ms| now_ms < *at_ms + retry_ms);
        if self.proposed.contains_key(&key) {
            return false;
        }
        self.proposed.insert(key, now_ms);
        true
    }
}

/// Partition changes the active controller proposed and the log index each went in at: one
/// is proposed again only once the state has applied that index (so the proposal was
/// committed and applied, refused as stale, or lost with a leadership change) and
/// `retry_ms` has passed. `Throttle` alone re-proposed a change every `retry_ms` while its
/// first proposal still waited in the log: with 10,000 partitions changing at once (every
/// broker back after a stop of the cluster) a round takes longer than that to commit, so
/// each retry appended another 10,000 entries that applied as stale, and the log grew
/// faster than it committed (a clustered start that never ended). Forgetting is done once
/// a round (`forget_settled`), not on each look-up: rounds of 10,000 keys stay linear.
#[derive(Debug)]
pub struct InFlight<K> {
    retry_ms: u64,
    proposed: BTreeMap<K, (u64, u64)>,
}

impl<K: Ord> InFlight<K> {
    pub fn new(retry_ms: u64) -> InFlight<K> {
        InFlight { retry_ms, proposed: BTreeMap::new() }
    }

    /// Whether `key` may be proposed at `now_ms` with `applied` the state's applied index.
    pub fn due(&self, key: &K, now_ms: u64, applied: u64) -> bool {
        let retry_ms = self.retry_ms;
        self.proposed.get(key).is_none_or(|&proposal| settled(retry_ms, proposal, now_ms, applied))
    }

    /// `key` was proposed at `now_ms`; the log's last index after it is `index`.
    pub fn proposed(&mut self, key: K, now_ms: u64, index: u64) {
        self.proposed.insert(key, (now_ms, index));
    }

    /// Drops the keys that are due again (what is still asked for is proposed anew).
    pub fn forget_settled(&mut self, now_ms: u64, applied: u64) {
        let retry_ms = self.retry_ms;
        self.proposed.retain(|_, &mut proposal| !settled(retry_ms, proposal, now_ms, applied));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.proposed.len()
    }
}

/// Whether a proposal made at `at_ms`, whose log index was `index`, is applied and at least
/// `retry_ms` old, so that it may be made again.
fn settled(retry_ms: u64, (at_ms, index): (u64, u64), now_ms: u64, applied: u64) -> bool {
    applied >= index && now_ms >= at_ms + retry_ms
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proposal_in_flight_is_not_proposed_again_until_applied() {
        let mut in_flight = InFlight::new(500);
        assert!(in_flight.due(&7, 0, 10));
        in_flight.proposed(7, 0, 20);
        // Not before the retry interval, and not while its index is not applied, however
        // long that takes.
        assert!(!in_flight.due(&7, 100, 10));
        assert!(!in_flight.due(&7, 60_000, 19));
        // Applied (committed, or refused as stale): due again after the interval.
        assert!(!in_flight.due(&7, 499, 20));
        assert!(in_flight.due(&7, 500, 20));
        // Other keys are independent.
        assert!(in_flight.due(&8, 100, 10));
        in_flight.proposed(8, 100, 21);
        in_flight.forget_settled(500, 20);
        assert_eq!(in_flight.len(), 1);
        assert!(!in_flight.due(&8, 600, 20));
        in_flight.forget_settled(600, 21);
        assert_eq!(in_flight.len(), 0);
        assert!(in_flight.due(&8, 600, 21));
    }

    const TIMEOUT_MS: u64 = 1000;
    const RETRY_MS: u64 = 300;

    /// Brokers 1 and 2 registered (epochs 1 and 2) and unfenced.
    fn state() -> MetadataState {
        let mut state = MetadataState::default();
        for id in 1..=2 {
            let record = MetadataRecord::RegisterBroker {
                node_id: NodeId(id),
                host: "h".into(),
                port: 1,
                incarnation: id as u64,
                rack: None,
            };
            state.apply(id as u64, Some(&record));
        }
        for id in 1..=2 {
            let unfence =
                MetadataRecord::UnfenceBroker { node_id: NodeId(id), broker_epoch: id as u64 };
            state.apply(id as u64 + 2, Some(&unfence));
        }
        assert_eq!(state.live_brokers(), [NodeId(1), NodeId(2)]);
        state
    }

    fn beat(id: i32, broker_epoch: u64) -> BrokerHeartbeat {
        BrokerHeartbeat { node_id: NodeId(id), broker_epoch, want_shut_down: false }
    }

    fn fence(id: i32, reason: FenceReason) -> MetadataRecord {
        MetadataRecord::FenceBroker { node_id: NodeId(id), broker_epoch: id as u64, reason }
    }

    fn apply(state: &mut MetadataState, records: &[MetadataRecord]) {
        for record in records {
            state.apply(state.applied_index + 1, Some(record));
        }
    }

    #[test]
    fn an_inactive_controller_takes_no_heartbeat_and_fences_nobody() {
        let state = state();
        let mut sessions = Sessions::new(TIMEOUT_MS, RETRY_MS);
        assert!(!sessions.heard(0, &beat(1, 1), &state));
        assert!(sessions.due(1_000_000, &state).is_empty());
    }

    #[test]
    fn a_broker_is_fenced_a_full_timeout_after_activation_or_its_last_heartbeat() {
        let mut state = state();
        let mut sessions = Sessions::new(TIMEOUT_MS, RETRY_MS);
        sessions.activate(5000);
        // No heartbeat at all: a full session from activation (no mass fencing after a
        // failover, whatever happened before).
        assert!(sessions.due(5999, &state).is_empty());
        assert!(sessions.heard(5500, &beat(2, 2), &state));
        let due = sessions.due(6000, &state);
        assert_eq!(due, [fence(1, FenceReason::SessionExpired)]);
        apply(&mut state, &due);
        // Broker 2 was heard at 5500: fenced at 6500, not a millisecond before.
        assert!(sessions.due(6499, &state).is_empty());
        assert_eq!(sessions.due(6500, &state), [fence(2, FenceReason::SessionExpired)]);
    }

    #[test]
    fn a_heartbeat_waiting_in_the_drivers_queue_keeps_its_broker_alive() {
        let mut state = state();
        let mut sessions = Sessions::new(TIMEOUT_MS, RETRY_MS);
        let arrivals = sessions.arrivals();
        sessions.activate(0);
        assert!(sessions.heard(100, &beat(1, 1), &state));
        assert!(sessions.heard(100, &beat(2, 2), &state));
        // Broker 1's next heartbeat arrived at 900 but the driver, behind, has not taken
        // it at 1100; broker 2's arrived too, of an old registration.
        arrivals.record(900, &beat(1, 1));
        arrivals.record(900, &beat(2, 7));
        let due = sessions.due(1100, &state);
        assert_eq!(due, [fence(2, FenceReason::SessionExpired)]);
        apply(&mut state, &due);
        assert!(sessions.due(1899, &state).is_empty());
        assert_eq!(sessions.due(1900, &state), [fence(1, FenceReason::SessionExpired)]);
    }

    #[test]
    fn heartbeats_of_another_epoch_or_broker_do_not_count() {
        let state = state();
        let mut sessions = Sessions::new(TIMEOUT_MS, RETRY_MS);
        sessions.activate(0);
        assert!(!sessions.heard(900, &beat(1, 7), &state), "an older or unapplied epoch");
        assert!(!sessions.heard(900, &beat(3, 3), &state), "not registered");
        assert_eq!(sessions.due(1000, &state).len(), 2);
    }

    #[test]
    fn a_proposal_is_repeated_only_after_the_retry_interval() {
        let mut state = state();
        let mut sessions = Sessions::new(TIMEOUT_MS, RETRY_MS);
        sessions.activate(0);
        sessions.heard(0, &beat(2, 2), &state);
        assert_eq!(sessions.due(1000, &state).len(), 2);
        assert!(sessions.due(1000 + RETRY_MS - 1, &state).is_empty());
        assert_eq!(sessions.due(1000 + RETRY_MS, &state).len(), 2);
        // Once applied, nothing is due any more.
        apply(&mut state, &[fence(1, FenceReason::SessionExpired)]);
        apply(&mut state, &[fence(2, FenceReason::SessionExpired)]);
        assert!(sessions.due(5000, &state).is_empty());
    }

    #[test]
    fn a_fenced_broker_that_heartbeats_again_is_unfenced() {
        let mut state = state();
        let mut sessions = Sessions::new(TIMEOUT_MS, RETRY_MS);
        sessions.activate(0);
        sessions.heard(100, &beat(1, 1), &state);
        sessions.heard(100, &beat(2, 2), &state);
        let due = sessions.due(1100, &state);
        apply(&mut state, &due);
        assert!(state.live_brokers().is_empty());
        // The heartbeat heard before the fence does not unfence it.
        assert!(sessions.due(1500, &state).is_empty());
        sessions.heard(1600, &beat(1, 1), &state);
        let unfence = MetadataRecord::UnfenceBroker { node_id: NodeId(1), broker_epoch: 1 };
        assert_eq!(sessions.due(1600, &state), std::slice::from_ref(&unfence));
        apply(&mut state, &[unfence]);
        assert_eq!(state.live_brokers(), [NodeId(1)]);
        assert!(sessions.due(2599, &state).is_empty());
    }

    #[test]
    fn a_broker_that_wants_to_shut_down_is_fenced_at_once_and_stays_fenced() {
        let mut state = state();
        let mut sessions = Sessions::new(TIMEOUT_MS, RETRY_MS);
        sessions.activate(0);
        let going = BrokerHeartbeat { want_shut_down: true, ..beat(2, 2) };
        assert!(sessions.heard(10, &going, &state));
        let due = sessions.due(10, &state);
        assert_eq!(due, [fence(2, FenceReason::ControlledShutdown)]);
        apply(&mut state, &due);
        sessions.heard(20, &going, &state);
        assert!(sessions.due(30, &state).is_empty());
        // Its next process registers anew (a new epoch) and heartbeats: unfenced.
        let register = MetadataRecord::RegisterBroker {
            node_id: NodeId(2),
            host: "h".into(),
            port: 1,
            incarnation: 99,
            rack: None,
        };
        apply(&mut state, &[register]);
        let epoch = state.brokers[&NodeId(2)].epoch;
        assert!(!sessions.heard(40, &going, &state), "the old epoch");
        assert!(sessions.heard(40, &beat(2, epoch), &state));
        let unfence = MetadataRecord::UnfenceBroker { node_id: NodeId(2), broker_epoch: epoch };
        assert!(sessions.due(40, &state).contains(&unfence));
    }

    #[test]
    fn deactivation_forgets_the_sessions() {
        let state = state();
        let mut sessions = Sessions::new(TIMEOUT_MS, RETRY_MS);
        sessions.activate(0);
        sessions.heard(0, &beat(1, 1), &state);
        sessions.deactivate();
        assert!(sessions.due(10_000, &state).is_empty());
        sessions.activate(20_000);
        assert!(sessions.due(20_999, &state).is_empty());
        assert_eq!(sessions.due(21_000, &state).len(), 2);
    }

    #[test]
    fn the_throttle_forgets_old_keys() {
        let mut throttle = Throttle::new(10);
        assert!(throttle.due(1, 0));
        assert!(!throttle.due(1, 9));
        assert!(throttle.due(2, 9));
        assert!(throttle.due(1, 10));
        assert_eq!(throttle.proposed.len(), 2);
        assert!(throttle.due(3, 100));
        assert_eq!(throttle.proposed.len(), 1);
    }
}
