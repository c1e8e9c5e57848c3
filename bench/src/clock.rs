//! One time base for every thread of a run.
//!
//! Latencies are differences of two readings of this clock. Within the process the readings come
//! from the monotonic clock (`Instant`), so an NTP step in the middle of a run cannot produce
//! negative or inflated latencies. Records carry their timestamps as wall-clock nanoseconds
//! (`epoch_wall_ns` plus the monotonic offset), so that a consumer in another process on the same
//! machine can still compute end-to-end latency from them.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Shared by all threads of a run (it is `Copy`); created once before any thread starts.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    epoch: Instant,
    epoch_wall_ns: u64,
}

impl Clock {
    pub fn new() -> Clock {
        let epoch = Instant::now();
        let epoch_wall_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        Clock { epoch, epoch_wall_ns }
    }

    /// Wall-clock nanoseconds since the Unix epoch, advancing with the monotonic clock.
    pub fn wall_ns(&self) -> u64 {
        self.epoch_wall_ns + duration_ns(self.epoch.elapsed())
    }

    /// The `Instant` at which `wall_ns()` reads `wall_ns`.
    pub fn instant_at(&self, wall_ns: u64) -> Instant {
        self.epoch + Duration::from_nanos(wall_ns.saturating_sub(self.epoch_wall_ns))
    }
}

pub fn duration_ns(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// Sleeps until `deadline`. The kernel's default timer slack (50 us) would make every sleep of an
/// open-loop sender late by that much; `init_thread_timer_slack` lowers it for the calling thread.
pub fn sleep_until(deadline: Instant) {
    let now = Instant::now();
    if deadline > now {
        std::thread::sleep(deadline - now);
    }
}

/// Asks the kernel to wake this thread within `TIMER_SLACK_NS` of the requested time.
pub fn init_thread_timer_slack() {
    const TIMER_SLACK_NS: libc::c_ulong = 1_000;
    // SAFETY: PR_SET_TIMERSLACK takes one integer argument and touches no memory of ours.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, TIMER_SLACK_NS, 0, 0, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wall_and_instant_agree() {
        let clock = Clock::new();
        let wall = clock.wall_ns();
        let now = Instant::now();
        let back = clock.instant_at(wall);
        assert!(back <= now);
        assert!(now - back < Duration::from_millis(10));
    }
}
