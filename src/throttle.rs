//! Warnings that repeat, logged at most once per interval with a count, and the exponential
//! back-off of a loop that keeps failing (an `accept` that meets EMFILE). Pure: the caller
//! passes the time, so both are tested without clocks.

/// Lets a repeating message through at most once per `interval_ms`, counting the ones it held
/// back so the next line can say how many there were.
#[derive(Debug)]
pub struct Throttle {
    interval_ms: u64,
    last_ms: Option<u64>,
    held: u64,
}

impl Throttle {
    pub const fn new(interval_ms: u64) -> Throttle {
        Throttle { interval_ms, last_ms: None, held: 0 }
    }

    /// Called each time the event happens. `Some(n)` means log it now, saying that `n` more
    /// happened since the last line; `None` means stay quiet (it is counted).
    pub fn admit(&mut self, now_ms: u64) -> Option<u64> {
        match self.last_ms {
            Some(last) if now_ms.saturating_sub(last) < self.interval_ms => {
                self.held += 1;
                None
            }
            _ => {
                self.last_ms = Some(now_ms);
                Some(std::mem::take(&mut self.held))
            }
        }
    }

    /// Events held back since the last line logged (to report when the condition ends).
    pub fn held(&self) -> u64 {
        self.held
    }

    /// The condition is over: the next event logs at once.
    pub fn reset(&mut self) {
        self.last_ms = None;
        self.held = 0;
    }
}

/// Exponential back-off between `first_ms` and `max_ms`, doubling on each failure and back
/// to nothing on a success.
#[derive(Debug)]
pub struct Backoff {
    first_ms: u64,
    max_ms: u64,
    next_ms: u64,
    failures: u64,
}

impl Backoff {
    pub const fn new(first_ms: u64, max_ms: u64) -> Backoff {
        Backoff { first_ms, max_ms, next_ms: first_ms, failures: 0 }
    }

    /// One more failure: how long to wait before trying again.
    pub fn failed(&mut self) -> u64 {
        let wait = self.next_ms;
        self.next_ms = (self.next_ms * 2).min(self.max_ms);
        self.failures += 1;
        wait
    }

    /// A success after failures: returns how many failures there were in a row.
    pub fn succeeded(&mut self) -> u64 {
        self.next_ms = self.first_ms;
        std::mem::take(&mut self.failures)
    }
}

/// A loop's failures in a row, its back-off and its throttled warning together: what both
/// accept loops (clients, controller peers) keep. A success resets both, so the next failure
/// waits the shortest time and is logged at once.
#[derive(Debug)]
pub struct Failures {
    backoff: Backoff,
    warnings: Throttle,
}

impl Failures {
    pub const fn new(first_ms: u64, max_ms: u64, interval_ms: u64) -> Failures {
        Failures { backoff: Backoff::new(first_ms, max_ms), warnings: Throttle::new(interval_ms) }
    }

    /// One more failure at `now_ms`: how long to wait, and `Some(n)` when a line is due
    /// (saying that `n` more failed since the last one).
    pub fn failed(&mut self, now_ms: u64) -> (u64, Option<u64>) {
        (self.backoff.failed(), self.warnings.admit(now_ms))
    }

    /// A success: how many failures there were in a row.
    pub fn succeeded(&mut self) -> u64 {
        let failures = self.backoff.succeeded();
        if failures > 0 {
            self.warnings.reset();
        }
        failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_throttle_logs_once_per_interval_and_counts_the_rest() {
        let mut throttle = Throttle::new(1000);
        assert_eq!(throttle.admit(5000), Some(0));
        // 4,185 failures in the next 40 s: one line a second, each with the count before it.
        let mut lines = 1;
        let mut counted = 0;
        for i in 1..4185u64 {
            if let Some(held) = throttle.admit(5000 + i * 40_000 / 4185) {
                lines += 1;
                counted += held + 1;
            }
        }
        assert_eq!(lines, 40);
        assert_eq!(counted + throttle.held(), 4184);
        throttle.reset();
        assert_eq!(throttle.admit(45_001), Some(0));
    }

    #[test]
    fn a_throttle_lets_the_first_event_through_at_any_time() {
        let mut throttle = Throttle::new(1000);
        assert_eq!(throttle.admit(0), Some(0));
        assert_eq!(throttle.admit(999), None);
        assert_eq!(throttle.admit(1000), Some(1));
    }

    #[test]
    fn backoff_doubles_up_to_its_ceiling_and_resets_on_success() {
        let mut backoff = Backoff::new(10, 1000);
        let waits: Vec<u64> = (0..9).map(|_| backoff.failed()).collect();
        assert_eq!(waits, [10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        assert_eq!(backoff.succeeded(), 9);
        assert_eq!(backoff.failed(), 10);
        assert_eq!(backoff.succeeded(), 1);
        assert_eq!(backoff.succeeded(), 0);
    }

    #[test]
    fn failures_back_off_and_log_together_and_a_success_resets_both() {
        let mut failures = Failures::new(10, 1000, 1000);
        assert_eq!(failures.failed(0), (10, Some(0)));
        assert_eq!(failures.failed(5), (20, None));
        assert_eq!(failures.failed(9), (40, None));
        assert_eq!(failures.succeeded(), 3);
        assert_eq!(failures.succeeded(), 0);
        // Right after the success: the shortest wait, and a line at once.
        assert_eq!(failures.failed(12), (10, Some(0)));
    }
}
