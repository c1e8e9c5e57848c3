//! CPU time of a process, so that results can say what the broker and the bench itself spent per
//! record: another process's from /proc/<pid>/stat (10 ms ticks), the bench's own from the
//! kernel's per-process CPU clock (nanoseconds), so that a short sweep step still measures it.

/// User + system CPU seconds of `pid` (or of this process for `None`); `None` if it is gone.
pub fn cpu_seconds(pid: Option<u32>) -> Option<f64> {
    let path = match pid {
        Some(pid) => format!("/proc/{pid}/stat"),
        None => "/proc/self/stat".to_string(),
    };
    let stat = std::fs::read_to_string(path).ok()?;
    parse_stat(&stat, clock_ticks_per_second())
}

/// User + system CPU seconds of this process, all threads, to the nanosecond.
pub fn process_cpu_seconds() -> f64 {
    let mut time = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec, which lives on this stack frame.
    let status = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut time) };
    if status != 0 {
        // Cannot fail for this clock on Linux; fall back to the coarse /proc figure anyway.
        return cpu_seconds(None).unwrap_or(0.0);
    }
    time.tv_sec as f64 + time.tv_nsec as f64 / 1e9
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf reads a constant of the C library and touches no memory of ours.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        // The value on every Linux architecture; sysconf cannot really fail here.
        100.0
    }
}

/// utime and stime are fields 14 and 15 of /proc/<pid>/stat. The command name (field 2) is in
/// parentheses and may itself contain spaces and parentheses, so fields are counted from the
/// last ')'.
fn parse_stat(stat: &str, ticks_per_second: f64) -> Option<f64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // after_name starts at field 3 (state), so field n is at index n - 3.
    let utime: u64 = fields.get(14 - 3)?.parse().ok()?;
    let stime: u64 = fields.get(15 - 3)?.parse().ok()?;
    Some((utime + stime) as f64 / ticks_per_second)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_name_with_spaces_and_parentheses() {
        let stat = "1234 (my (odd) name) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0";
        assert_eq!(parse_stat(stat, 100.0), Some(3.0));
    }

    #[test]
    fn reads_this_process() {
        assert!(cpu_seconds(None).is_some());
        let before = process_cpu_seconds();
        let mut spin = 0u64;
        for i in 0..1_000_000u64 {
            spin = std::hint::black_box(spin.wrapping_add(i));
        }
        assert!(process_cpu_seconds() > before);
    }
}
