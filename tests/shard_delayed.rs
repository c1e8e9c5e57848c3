//! The shard's delayed operations on a real glommio executor: an operation completes with
//! `true` when notified and `false` at its deadline, never before it, exactly once; thousands
//! of them share the one driver task.

use std::rc::Rc;
use std::time::{Duration, Instant};

use glommio::LocalExecutorBuilder;
use spate::shard::delayed::Delayed;

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

#[test]
fn notify_completes_early_and_the_deadline_completes_the_rest() {
    on_executor(|| async {
        let delayed = Rc::new(Delayed::new());
        let driver = glommio::spawn_local(delayed.clone().run());
        let started = Instant::now();
        let notified = delayed.wait(1, Duration::from_secs(10));
        let expires = delayed.wait(2, Duration::from_millis(30));
        glommio::timer::sleep(Duration::from_millis(5)).await;
        delayed.notify(1);
        assert_eq!(notified.await, Ok(true));
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(expires.await, Ok(false));
        assert!(started.elapsed() >= Duration::from_millis(30), "expired before its deadline");
        // A late notification finds nothing and harms nothing.
        delayed.notify(2);
        assert_eq!(delayed.waiting(), 0);
        driver.cancel().await;
    });
}

#[test]
fn ten_thousand_waiters_expire_in_deadline_order_on_one_driver() {
    on_executor(|| async {
        let delayed = Rc::new(Delayed::new());
        let driver = glommio::spawn_local(delayed.clone().run());
        let started = Instant::now();
        let mut waits = Vec::new();
        for key in 0..10_000u64 {
            let timeout = Duration::from_millis(20 + key % 80);
            waits.push((timeout, delayed.wait(key, timeout)));
        }
        // Every tenth one is notified instead.
        for key in (0..10_000u64).step_by(10) {
            delayed.notify(key);
        }
        for (key, (timeout, wait)) in waits.into_iter().enumerate() {
            let outcome = wait.await.expect("completed");
            assert_eq!(outcome, key % 10 == 0, "key {key}");
            if !outcome {
                assert!(started.elapsed() >= timeout, "key {key} expired early");
            }
        }
        assert_eq!(delayed.waiting(), 0);
        driver.cancel().await;
    });
}
