//! Delayed operations of one shard: one keyed purgatory on the shard's timing wheel, driven
//! by one timer task, never one executor timer per operation. Everything on the shard that
//! waits for an event or a deadline waits here, keyed by what it waits for:
//!
//! - a fetch long-poll on the partitions it reads (`Key::Partition`), and on its own id
//!   (`Key::Waiter`) so that the owners of its other partitions can wake it from their
//!   shards;
//! - on a partition's owner, the watch of a fetch on another shard (`Waiting::There`): when
//!   the partition's key is notified, `notify` hands back the (shard, waiter) to wake;
//! - a produce's timeout (no key: it leaves by deadline or `cancel`);
//! - a transaction's timeout (`Key::Transaction`), an ended transaction notifies it away;
//! - the group coordinator's next deadline (`Key::Groups`).
//!
//! Lifecycle: created with the shard; `run` is spawned once on the shard's executor and lives
//! until shutdown. Concurrency: shard-local (`RefCell`s borrowed briefly, never across an
//! `.await`).
//!
//! An operation completes exactly once (the purgatory guarantees it): a local one gets
//! `true` when a key is notified and `false` when its deadline passes or it is cancelled.
//! Time is in ticks of `TICK_MS` since the shard started. The driver sleeps until the wheel's
//! next deadline and is poked awake when an operation with an earlier deadline arrives, so an
//! idle shard with thousands of waiting fetches wakes only when one of them is due.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::channel::{mpsc, oneshot};
use futures::future::{select, Either};
use futures::StreamExt;

use crate::model::{ShardId, TopicPartition};
use crate::shard::purgatory::{OpId, Purgatory};

/// One tick of the wheel (Kafka's purgatory uses 1 ms too).
pub const TICK_MS: u64 = 1;

/// How long the driver sleeps when nothing waits (it is poked when something arrives).
const IDLE_SLEEP_MS: u64 = 1_000;

/// What an operation waits for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    /// An append, a marker or a deletion on a partition this shard owns.
    Partition(TopicPartition),
    /// Followers' fetches of a partition this shard leads: also woken when batches are queued,
    /// before they are written (`log::read_for_follower` reads them from memory).
    Replicas(TopicPartition),
    /// A waiting operation of this shard, by its id (`Shard::new_waiter_id`).
    Waiter(u64),
    /// The end of a transaction this shard coordinates, by transactional id.
    Transaction(Arc<str>),
    /// An earlier deadline of the group coordinator's timers.
    Groups,
    /// Clustered: this node's part in an internal topic's partitions owned by this shard
    /// changed (`internal_log::InternalRoles`); its coordinator loads or unloads them.
    InternalRoles(&'static str),
}

/// Who a completed operation tells.
pub enum Waiting {
    /// A task of this shard.
    Here(oneshot::Sender<bool>),
    /// A waiter on another shard, told only when notified (it has its own deadline there).
    There { shard: ShardId, waiter: u64 },
}

/// A local operation: its id, to cancel it, and the answer.
pub struct Wait {
    pub id: OpId,
    /// `true` when notified; `false` at the deadline or when cancelled.
    pub done: oneshot::Receiver<bool>,
}

/// Waiters on other shards that a notification woke: (their shard, their waiter id).
pub type RemoteWakes = Vec<(ShardId, u64)>;

pub struct Delayed {
    purgatory: RefCell<Purgatory<Key, Waiting>>,
    epoch: Instant,
    /// The tick the driver will wake at on its own; an earlier deadline pokes it.
    planned_wake_tick: Cell<u64>,
    poke_tx: mpsc::UnboundedSender<()>,
    poke_rx: RefCell<Option<mpsc::UnboundedReceiver<()>>>,
}

impl Delayed {
    pub fn new() -> Delayed {
        let (poke_tx, poke_rx) = mpsc::unbounded();
        Delayed {
            purgatory: RefCell::new(Purgatory::new(0)),
            epoch: Instant::now(),
            planned_wake_tick: Cell::new(u64::MAX),
            poke_tx,
            poke_rx: RefCell::new(Some(poke_rx)),
        }
    }

    pub fn now_tick(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 / TICK_MS
    }

    /// The first tick boundary at or after now.
    fn next_tick(&self) -> u64 {
        (self.epoch.elapsed().as_micros() as u64).div_ceil(TICK_MS * 1_000)
    }

    /// Waits for one of `keys` to be notified (true) or for `timeout` to pass (false).
    pub fn wait(&self, keys: impl IntoIterator<Item = Key>, timeout: Duration) -> Wait {
        let (tx, done) = oneshot::channel();
        let id = self.watch(Waiting::Here(tx), keys, timeout);
        Wait { id, done }
    }

    /// On a partition's owner: wakes `waiter` on `shard` when one of `keys` is notified
    /// before `timeout` (see `notify`); forgotten silently at the deadline.
    pub fn wait_there(
        &self,
        shard: ShardId,
        waiter: u64,
        keys: impl IntoIterator<Item = Key>,
        timeout: Duration,
    ) -> OpId {
        self.watch(Waiting::There { shard, waiter }, keys, timeout)
    }

    fn watch(&self, op: Waiting, keys: impl IntoIterator<Item = Key>, timeout: Duration) -> OpId {
        let timeout_ticks = (timeout.as_millis() as u64).div_ceil(TICK_MS).max(1);
        let (id, deadline) = {
            let mut purgatory = self.purgatory.borrow_mut();
            // From the next tick boundary: the wheel expires at whole ticks, so counting from
            // the current (floored) tick would expire up to a tick early.
            let deadline = purgatory.current_tick().max(self.next_tick()) + timeout_ticks;
            (purgatory.watch(op, keys, deadline), deadline)
        };
        if deadline < self.planned_wake_tick.get() {
            self.planned_wake_tick.set(deadline);
            let _ = self.poke_tx.unbounded_send(());
        }
        id
    }

    /// Completes every operation waiting on `key`: local ones get `true`; the waiters of
    /// other shards come back, for the caller to wake through its mesh.
    #[must_use]
    pub fn notify(&self, key: &Key) -> RemoteWakes {
        let mut completed = Vec::new();
        self.purgatory.borrow_mut().check(key, |_| true, &mut completed);
        let mut remote = RemoteWakes::new();
        for (_, waiting) in completed {
            match waiting {
                Waiting::Here(tx) => {
                    let _ = tx.send(true);
                }
                Waiting::There { shard, waiter } => remote.push((shard, waiter)),
            }
        }
        remote
    }

    /// Completes an operation early, as if its deadline had passed (a local one gets
    /// `false`). Does nothing if it already completed.
    pub fn cancel(&self, id: OpId) {
        let cancelled = self.purgatory.borrow_mut().cancel(id);
        if let Some(Waiting::Here(tx)) = cancelled {
            let _ = tx.send(false);
        }
    }

    pub fn waiting(&self) -> usize {
        self.purgatory.borrow().len()
    }

    /// The driver: expire what is due, sleep until the next deadline or a poke. Runs forever.
    pub async fn run(self: Rc<Self>) {
        let Some(mut pokes) = self.poke_rx.borrow_mut().take() else {
            return;
        };
        let mut expired = Vec::new();
        loop {
            let now = self.now_tick();
            self.purgatory.borrow_mut().advance(now, &mut expired);
            for (_, waiting) in expired.drain(..) {
                if let Waiting::Here(tx) = waiting {
                    let _ = tx.send(false);
                }
            }
            let next = self.purgatory.borrow().next_deadline();
            let sleep_ticks = match next {
                Some(deadline) => deadline.saturating_sub(now).max(1),
                None => IDLE_SLEEP_MS / TICK_MS,
            };
            self.planned_wake_tick.set(now + sleep_ticks);
            let sleep = glommio::timer::sleep(Duration::from_millis(sleep_ticks * TICK_MS));
            match select(Box::pin(sleep), pokes.next()).await {
                Either::Left(_) => {}
                Either::Right((Some(()), _)) => {}
                Either::Right((None, _)) => return,
            }
        }
    }
}

impl Default for Delayed {
    fn default() -> Self {
        Delayed::new()
    }
}
