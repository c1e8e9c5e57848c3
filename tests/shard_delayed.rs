//! The shard's delayed operations on a real glommio executor: an operation completes with
//! `true` when one of its keys is notified and `false` at its deadline or when cancelled,
//! never before, exactly once; the watches of other shards' waiters come back from
//! `notify` to be forwarded; thousands of operations share the one driver task.

use std::rc::Rc;
use std::time::{Duration, Instant};

use glommio::LocalExecutorBuilder;
use spate::model::{ShardId, TopicPartition};
use spate::shard::delayed::{Delayed, Key};

fn on_executor<F, Fut>(body: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    LocalExecutorBuilder::default()
        .spawn(move || async move { body().await })
        .expect("executor")
        .join()
        .expect("join");
}

fn partition(n: i32) -> Key {
    Key::Partition(TopicPartition::new("orders".into(), n))
}

#[test]
fn notify_completes_early_and_the_deadline_completes_the_rest() {
    on_executor(|| async {
        let delayed = Rc::new(Delayed::new());
        let driver = glommio::spawn_local(delayed.clone().run());
        let started = Instant::now();
        let notified = delayed.wait([Key::Waiter(1)], Duration::from_secs(10));
        let expires = delayed.wait([Key::Waiter(2)], Duration::from_millis(30));
        glommio::timer::sleep(Duration::from_millis(5)).await;
        assert!(delayed.notify(&Key::Waiter(1)).is_empty());
        assert_eq!(notified.done.await, Ok(true));
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(expires.done.await, Ok(false));
        assert!(started.elapsed() >= Duration::from_millis(30), "expired before its deadline");
        // A late notification finds nothing and harms nothing.
        assert!(delayed.notify(&Key::Waiter(2)).is_empty());
        assert_eq!(delayed.waiting(), 0);
        driver.cancel().await;
    });
}

#[test]
fn an_operation_on_several_keys_completes_once_through_any_of_them() {
    on_executor(|| async {
        let delayed = Rc::new(Delayed::new());
        let driver = glommio::spawn_local(delayed.clone().run());
        let keys = [partition(0), partition(1), Key::Waiter(7)];
        let fetch = delayed.wait(keys, Duration::from_secs(10));
        let other = delayed.wait([partition(1)], Duration::from_secs(10));
        assert_eq!(delayed.waiting(), 2);
        assert!(delayed.notify(&partition(0)).is_empty());
        assert_eq!(fetch.done.await, Ok(true));
        // Gone from its other keys: notifying them reaches only the other operation.
        assert_eq!(delayed.waiting(), 1);
        assert!(delayed.notify(&Key::Waiter(7)).is_empty());
        assert_eq!(delayed.waiting(), 1);
        assert!(delayed.notify(&partition(1)).is_empty());
        assert_eq!(other.done.await, Ok(true));
        assert_eq!(delayed.waiting(), 0);
        driver.cancel().await;
    });
}

#[test]
fn cancel_completes_with_false_at_once_and_only_once() {
    on_executor(|| async {
        let delayed = Rc::new(Delayed::new());
        let driver = glommio::spawn_local(delayed.clone().run());
        let started = Instant::now();
        let produce = delayed.wait([], Duration::from_secs(30));
        delayed.cancel(produce.id);
        assert_eq!(produce.done.await, Ok(false));
        assert!(started.elapsed() < Duration::from_secs(10), "cancel waited for the deadline");
        delayed.cancel(produce.id);
        assert_eq!(delayed.waiting(), 0);
        driver.cancel().await;
    });
}

#[test]
fn the_waiters_of_other_shards_come_back_from_notify_and_expire_silently() {
    on_executor(|| async {
        let delayed = Rc::new(Delayed::new());
        let driver = glommio::spawn_local(delayed.clone().run());
        delayed.wait_there(ShardId(1), 41, [partition(0), partition(1)], Duration::from_secs(10));
        delayed.wait_there(ShardId(2), 42, [partition(1)], Duration::from_secs(10));
        delayed.wait_there(ShardId(1), 43, [partition(2)], Duration::from_millis(20));
        let mut woken = delayed.notify(&partition(1));
        woken.sort();
        assert_eq!(woken, vec![(ShardId(1), 41), (ShardId(2), 42)]);
        assert!(delayed.notify(&partition(0)).is_empty(), "41 was woken once already");
        glommio::timer::sleep(Duration::from_millis(60)).await;
        assert_eq!(delayed.waiting(), 0, "43 expired");
        assert!(delayed.notify(&partition(2)).is_empty());
        driver.cancel().await;
    });
}

#[test]
fn ten_thousand_waiters_expire_in_deadline_order_on_one_driver() {
    on_executor(|| async {
        let delayed = Rc::new(Delayed::new());
        let driver = glommio::spawn_local(delayed.clone().run());
        let mut waits = Vec::new();
        for key in 0..10_000u64 {
            let timeout = Duration::from_millis(20 + key % 80);
            // Each measured from its own registration: most fall inside a tick, where a
            // deadline counted from the tick's start would come up to a tick early.
            waits.push((Instant::now(), timeout, delayed.wait([Key::Waiter(key)], timeout)));
        }
        // Every tenth one is notified instead.
        for key in (0..10_000u64).step_by(10) {
            assert!(delayed.notify(&Key::Waiter(key)).is_empty());
        }
        for (key, (registered, timeout, wait)) in waits.into_iter().enumerate() {
            let outcome = wait.done.await.expect("completed");
            assert_eq!(outcome, key % 10 == 0, "key {key}");
            if !outcome {
                let waited = registered.elapsed();
                assert!(waited >= timeout, "key {key} expired early: {waited:?} of {timeout:?}");
            }
        }
        assert_eq!(delayed.waiting(), 0);
        driver.cancel().await;
    });
}
