//! One time base for every thread of a run.
//!
//! Latencies are differences of two readings of this clock. Within the process the readings come
//! from the monotonic clock (`CLOCK_MONOTONIC`, which `Instant` reads too), so an NTP step in
//! the middle of a run cannot produce negative or inflated latencies. Records carry their
//! timestamps as wall-clock nanoseconds (`epoch_wall_ns` plus the monotonic offset), so that a
//! consumer in another process on the same machine can still compute end-to-end latency from
//! them.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Shared by all threads of a run (it is `Copy`); created once before any thread starts.
///
/// Readings are raw `CLOCK_MONOTONIC` nanoseconds, the clock `Instant` reads, taken directly so
/// that a sender can sleep until an absolute time (`sleep_until_wall`) without reading the clock
/// again to turn the deadline into a relative sleep: one clock read and one `Instant`
/// subtraction fewer per open-loop record, and no drift between the reading and the sleep.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    epoch_monotonic_ns: u64,
    epoch_wall_ns: u64,
}

impl Clock {
    pub fn new() -> Clock {
        let epoch_monotonic_ns = monotonic_ns();
        let epoch_wall_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        Clock { epoch_monotonic_ns, epoch_wall_ns }
    }

    /// Wall-clock nanoseconds since the Unix epoch, advancing with the monotonic clock.
    pub fn wall_ns(&self) -> u64 {
        self.epoch_wall_ns + monotonic_ns().saturating_sub(self.epoch_monotonic_ns)
    }

    /// Sleeps until `wall_ns()` reads `wall_ns` (returns at once if it already does). The kernel's
    /// default timer slack (50 us) would make every sleep of an open-loop sender late by that
    /// much; `init_thread_timer_slack` lowers it for the calling thread.
    pub fn sleep_until_wall(&self, wall_ns: u64) {
        let deadline_ns = wall_ns.saturating_sub(self.epoch_wall_ns) + self.epoch_monotonic_ns;
        let deadline = libc::timespec {
            tv_sec: (deadline_ns / NANOS_PER_SECOND) as libc::time_t,
            tv_nsec: (deadline_ns % NANOS_PER_SECOND) as libc::c_long,
        };
        loop {
            // SAFETY: clock_nanosleep reads one timespec that lives on this stack frame; with
            // TIMER_ABSTIME it writes nothing back.
            let status = unsafe {
                libc::clock_nanosleep(
                    libc::CLOCK_MONOTONIC,
                    libc::TIMER_ABSTIME,
                    &deadline,
                    std::ptr::null_mut(),
                )
            };
            // A signal (Ctrl-C) interrupts the sleep; the deadline is absolute, so sleep on.
            if status != libc::EINTR {
                return;
            }
        }
    }
}

const NANOS_PER_SECOND: u64 = 1_000_000_000;

/// `CLOCK_MONOTONIC` in nanoseconds (what `Instant::now` reads, through the vDSO: no syscall).
fn monotonic_ns() -> u64 {
    let mut time = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec, which lives on this stack frame; it cannot fail
    // for CLOCK_MONOTONIC with a valid pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut time) };
    time.tv_sec as u64 * NANOS_PER_SECOND + time.tv_nsec as u64
}

pub fn duration_ns(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
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
    use std::time::Instant;

    #[test]
    fn wall_advances_with_instant() {
        let clock = Clock::new();
        let wall = clock.wall_ns();
        let now = Instant::now();
        std::thread::sleep(Duration::from_millis(20));
        let instant_elapsed = duration_ns(now.elapsed());
        // Both read CLOCK_MONOTONIC, the wall reading first and last: it spans the other.
        assert!(clock.wall_ns() - wall >= instant_elapsed);
    }

    #[test]
    fn sleeps_until_an_absolute_time() {
        let clock = Clock::new();
        let deadline = clock.wall_ns() + 10_000_000;
        clock.sleep_until_wall(deadline);
        assert!(clock.wall_ns() >= deadline);
        // A deadline in the past returns at once.
        clock.sleep_until_wall(0);
    }
}
