//! Delayed operations of one shard: a purgatory on the shard's timing wheel, driven by one
//! timer task, never one executor timer per operation.
//!
//! Lifecycle: created with the shard; `run` is spawned once on the shard's executor and lives
//! until shutdown. Concurrency: shard-local (`RefCell`s borrowed briefly, never across an
//! `.await`).
//!
//! An operation is a oneshot sender that gets `true` when its key is notified and `false` when
//! its deadline passes; it completes exactly once (the purgatory guarantees it). Time is in
//! ticks of `TICK_MS` since the shard started. The driver sleeps until the wheel's next deadline
//! and is poked awake when an operation with an earlier deadline arrives, so an idle shard
//! with thousands of waiting fetches wakes only when one of them is due.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures::channel::{mpsc, oneshot};
use futures::future::{select, Either};
use futures::StreamExt;

use crate::shard::purgatory::Purgatory;

/// One tick of the wheel (Kafka's purgatory uses 1 ms too).
pub const TICK_MS: u64 = 1;

/// How long the driver sleeps when nothing waits (it is poked when something arrives).
const IDLE_SLEEP_MS: u64 = 1_000;

type Waiter = oneshot::Sender<bool>;

pub struct Delayed {
    purgatory: RefCell<Purgatory<u64, Waiter>>,
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

    /// Waits for `key` to be notified (true) or for `timeout` to pass (false).
    pub fn wait(&self, key: u64, timeout: Duration) -> oneshot::Receiver<bool> {
        let (tx, rx) = oneshot::channel();
        let timeout_ticks = (timeout.as_millis() as u64).div_ceil(TICK_MS).max(1);
        let deadline = {
            let mut purgatory = self.purgatory.borrow_mut();
            let deadline = purgatory.current_tick().max(self.now_tick()) + timeout_ticks;
            purgatory.watch(tx, [key], deadline);
            deadline
        };
        if deadline < self.planned_wake_tick.get() {
            self.planned_wake_tick.set(deadline);
            let _ = self.poke_tx.unbounded_send(());
        }
        rx
    }

    /// Completes every operation waiting on `key` with `true`.
    pub fn notify(&self, key: u64) {
        let mut completed = Vec::new();
        self.purgatory.borrow_mut().check(&key, |_| true, &mut completed);
        for (_, waiter) in completed {
            let _ = waiter.send(true);
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
            for (_, waiter) in expired.drain(..) {
                let _ = waiter.send(false);
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
