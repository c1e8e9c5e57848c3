//! The free-space reserve of the data dir's file system: disk full is a state the broker
//! serves through, not a crash.
//!
//! Each shard has a `SpaceGate` (on its `shard::Shard`). Writes that clients ask for (Produce,
//! offset commits, transactions, topic creation) ask the gate first; below the reserve
//! (`--min-free-bytes`, default the smaller of 1 GiB and 5% of the file system) they are
//! refused with a retriable error, while reads, retention, DeleteRecords and the writes
//! already admitted go on. Nothing needs a restart: the gate opens again by itself once the
//! file system has the reserve plus a margin free (`reopen_margin_bytes`, so that a gate at
//! the edge does not flap with every segment retention deletes).
//!
//! Cost on the produce path: the gate looks at the file system (`statvfs`, about a
//! microsecond, no I/O) at most every `SPACE_CHECK_INTERVAL_MS`, lazily on an admission; in
//! between, every admission counts its bytes off the free space last seen, so a shard that
//! fills the disk by itself closes its own gate at once, and the writes of other shards and
//! processes are seen at the next look. The admission itself is a few comparisons and one
//! relaxed atomic load.
//!
//! The reserve is a promise kept loosely (other shards, other processes, preallocation and
//! the writes already admitted all eat into it). A write that meets a full file system anyway
//! is not an error: offsets were assigned at admission and the bytes are still in memory, so
//! `log` keeps the batches and rewrites the same bytes at the same position (idempotent)
//! until the write goes through, and it calls `note_no_space`, which closes every shard's
//! gate at its next admission. Any other failed write stays fatal (`fatal.rs`).
//!
//! Logging: one warning with the numbers when the first shard's gate closes, one info line
//! when the last one opens again, process-wide (`CLOSED_GATES`), not one line per request.

use std::cell::RefCell;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use crate::constants::{
    MIN_FREE_BYTES_CAP_DEFAULT, MIN_FREE_PERCENT_DEFAULT, PREALLOCATE_STEP_BYTES,
    SPACE_CHECK_INTERVAL_MS,
};
use crate::model::now_ms;

/// What `statvfs` says about a file system, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Free to an unprivileged writer (`f_bavail`): what is left before ENOSPC, not counting
    /// ext4's blocks reserved for root, which a broker running as root may still use.
    pub free_bytes: u64,
    pub total_bytes: u64,
}

/// The reserve: `configured`, or the smaller of `MIN_FREE_BYTES_CAP_DEFAULT` (1 GiB) and
/// `MIN_FREE_PERCENT_DEFAULT` (5%) of the file system. 5% alone would hold back 50 GiB of a
/// 1 TiB disk; 1 GiB alone would be a third of a 3 GiB one.
pub fn reserve_bytes(configured: Option<u64>, total_bytes: u64) -> u64 {
    configured.unwrap_or_else(|| {
        let share = u128::from(total_bytes) * u128::from(MIN_FREE_PERCENT_DEFAULT) / 100;
        (share as u64).min(MIN_FREE_BYTES_CAP_DEFAULT)
    })
}

/// How far above the reserve a closed gate wants the free space before it opens: a tenth of
/// the reserve, at least one preallocation step (what one segment grows by next).
pub fn reopen_margin_bytes(reserve_bytes: u64) -> u64 {
    (reserve_bytes / 10).max(PREALLOCATE_STEP_BYTES)
}

/// Whether a shard admits new writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    Open,
    Closed,
}

/// The gate after a look at the file system, given the gate before it. `no_space`: a write
/// met ENOSPC since the last look (the free space seen is then not to be trusted: the write
/// that failed wanted more). Closed at the reserve, open again only at the reserve plus the
/// margin.
pub fn decide(gate: Gate, free_bytes: u64, reserve_bytes: u64, no_space: bool) -> Gate {
    if no_space {
        return Gate::Closed;
    }
    let needed_bytes = match gate {
        Gate::Open => reserve_bytes,
        Gate::Closed => reserve_bytes.saturating_add(reopen_margin_bytes(reserve_bytes)),
    };
    if free_bytes >= needed_bytes {
        Gate::Open
    } else {
        Gate::Closed
    }
}

/// A change of the gate that `GateState` reports, for the caller to log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Unchanged,
    Closed,
    Opened,
}

/// The gate's bookkeeping, pure: the clock, the file system's numbers and the count of
/// ENOSPC events come in as arguments.
#[derive(Debug, Clone)]
pub struct GateState {
    gate: Gate,
    configured: Option<u64>,
    usage: Usage,
    reserve_bytes: u64,
    /// Bytes admitted since the last look, counted off `usage.free_bytes`.
    admitted_bytes: u64,
    /// When the last look was (ms; `i64::MIN`: never).
    looked_ms: i64,
    /// `no_space_events()` at the last look: a different count means a write met ENOSPC.
    no_space_seen: u64,
}

impl GateState {
    /// An open gate that has not looked yet (the first admission looks).
    pub fn new(configured: Option<u64>) -> GateState {
        GateState {
            gate: Gate::Open,
            configured,
            usage: Usage { free_bytes: u64::MAX, total_bytes: 0 },
            reserve_bytes: configured.unwrap_or(0),
            admitted_bytes: 0,
            looked_ms: i64::MIN,
            no_space_seen: 0,
        }
    }

    pub fn is_open(&self) -> bool {
        self.gate == Gate::Open
    }

    pub fn reserve_bytes(&self) -> u64 {
        self.reserve_bytes
    }

    /// Free bytes as the gate believes them: the last look minus what it admitted since.
    pub fn free_bytes(&self) -> u64 {
        self.usage.free_bytes.saturating_sub(self.admitted_bytes)
    }

    pub fn total_bytes(&self) -> u64 {
        self.usage.total_bytes
    }

    /// True when a look at the file system is due at `now_ms` (or the clock went back).
    pub fn look_due(&self, now_ms: i64) -> bool {
        self.looked_ms == i64::MIN
            || now_ms < self.looked_ms
            || now_ms - self.looked_ms >= SPACE_CHECK_INTERVAL_MS as i64
    }

    /// Takes in a look at the file system.
    pub fn looked(&mut self, now_ms: i64, usage: Usage, no_space_events: u64) -> Change {
        let no_space = no_space_events != self.no_space_seen;
        self.no_space_seen = no_space_events;
        self.usage = usage;
        self.admitted_bytes = 0;
        self.looked_ms = now_ms;
        self.reserve_bytes = reserve_bytes(self.configured, usage.total_bytes);
        self.set(decide(self.gate, usage.free_bytes, self.reserve_bytes, no_space))
    }

    /// A look that could not be made: the next is due an interval later.
    pub fn look_failed(&mut self, now_ms: i64) {
        self.looked_ms = now_ms;
    }

    /// Admits `bytes` of new writes unless that would take the free space below the reserve,
    /// or a write met ENOSPC since the last look (`no_space_events` changed): either closes
    /// the gate until the next look says otherwise.
    pub fn admit(&mut self, bytes: u64, no_space_events: u64) -> (bool, Change) {
        if self.gate == Gate::Closed {
            return (false, Change::Unchanged);
        }
        let no_space = no_space_events != self.no_space_seen;
        let left = self.free_bytes().saturating_sub(bytes);
        if no_space || left < self.reserve_bytes {
            return (false, self.set(Gate::Closed));
        }
        self.admitted_bytes = self.admitted_bytes.saturating_add(bytes);
        (true, Change::Unchanged)
    }

    fn set(&mut self, gate: Gate) -> Change {
        let change = match (self.gate, gate) {
            (Gate::Open, Gate::Closed) => Change::Closed,
            (Gate::Closed, Gate::Open) => Change::Opened,
            _ => Change::Unchanged,
        };
        self.gate = gate;
        change
    }
}

/// Why a write was refused: the numbers, for the client's error message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    pub free_bytes: u64,
    pub reserve_bytes: u64,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the broker's disk is full: {} bytes free, below the reserve of {} bytes \
             (--min-free-bytes); retry once space is freed",
            self.free_bytes, self.reserve_bytes
        )
    }
}

/// A shard's gate: `GateState` plus the file system it looks at. Lives on its shard, in
/// `shard::Shard`; borrowed only inside a call, never across an await.
#[derive(Debug)]
pub struct SpaceGate {
    data_dir: PathBuf,
    state: RefCell<GateState>,
}

impl SpaceGate {
    /// A gate for the file system of `data_dir`, with `min_free_bytes` as the reserve
    /// (None: the default share of the file system). Looks at the file system at once, so a
    /// disk that is already full is reported at start-up.
    pub fn new(data_dir: &Path, min_free_bytes: Option<u64>) -> SpaceGate {
        let gate = SpaceGate {
            data_dir: data_dir.to_path_buf(),
            state: RefCell::new(GateState::new(min_free_bytes)),
        };
        gate.look_if_due(now_ms());
        gate
    }

    /// Admits `bytes` of writes a client asked for, or refuses them (the client's error
    /// message in the `Refusal`). Looks at the file system when the last look is old.
    pub fn admit(&self, bytes: u64) -> Result<(), Refusal> {
        self.look_if_due(now_ms());
        let mut state = self.state.borrow_mut();
        let (admitted, change) = state.admit(bytes, no_space_events());
        report(change, &state, &self.data_dir);
        if admitted {
            Ok(())
        } else {
            Err(Refusal { free_bytes: state.free_bytes(), reserve_bytes: state.reserve_bytes() })
        }
    }

    /// Whether a small write (an offset commit, a transaction record) may go ahead.
    pub fn check(&self) -> Result<(), Refusal> {
        self.admit(0)
    }

    /// The reserve and the file system's size, as of the last look.
    pub fn reserve(&self) -> (u64, u64) {
        let state = self.state.borrow();
        (state.reserve_bytes(), state.total_bytes())
    }

    fn look_if_due(&self, now_ms: i64) {
        if !self.state.borrow().look_due(now_ms) {
            return;
        }
        let usage = match statvfs(&self.data_dir) {
            Ok(usage) => usage,
            Err(e) => {
                // Keep the last numbers (and the count admitted since); try again later.
                tracing::debug!(dir = %self.data_dir.display(), "statvfs failed: {e}");
                self.state.borrow_mut().look_failed(now_ms);
                return;
            }
        };
        let mut state = self.state.borrow_mut();
        let change = state.looked(now_ms, usage, no_space_events());
        report(change, &state, &self.data_dir);
    }
}

/// Logs a gate's change once for the whole process: the first gate to close warns, the last
/// to open says so.
fn report(change: Change, state: &GateState, data_dir: &Path) {
    match change {
        Change::Unchanged => {}
        Change::Closed => {
            if CLOSED_GATES.fetch_add(1, Ordering::Relaxed) == 0 {
                tracing::warn!(
                    dir = %data_dir.display(),
                    free_bytes = state.free_bytes(),
                    reserve_bytes = state.reserve_bytes(),
                    total_bytes = state.total_bytes(),
                    "disk full or almost full: free space is below the reserve \
                     (--min-free-bytes) or a write met ENOSPC; produce, offset commits, \
                     transactions and topic creation are refused with a retriable error until \
                     space is freed; reads and retention go on"
                );
            }
        }
        Change::Opened => {
            if CLOSED_GATES.fetch_sub(1, Ordering::Relaxed) == 1 {
                NO_SPACE_REPORTED.store(false, Ordering::Relaxed);
                tracing::info!(
                    dir = %data_dir.display(),
                    free_bytes = state.free_bytes(),
                    reserve_bytes = state.reserve_bytes(),
                    "free space is back above the reserve; writes are accepted again"
                );
            }
        }
    }
}

// Process-wide: the data dir is one file system for every shard. Relaxed: each is a signal
// looked at again within `SPACE_CHECK_INTERVAL_MS`, ordering nothing else.
static NO_SPACE_EVENTS: AtomicU64 = AtomicU64::new(0);
static NO_SPACE_REPORTED: AtomicBool = AtomicBool::new(false);
static CLOSED_GATES: AtomicUsize = AtomicUsize::new(0);

/// How many times a write met a full file system since start.
pub fn no_space_events() -> u64 {
    NO_SPACE_EVENTS.load(Ordering::Relaxed)
}

/// A write met ENOSPC (or EDQUOT): closes every shard's gate at its next admission, and
/// warns once per episode (until the gates open again).
pub fn note_no_space(what: &str, error: &dyn fmt::Display) {
    NO_SPACE_EVENTS.fetch_add(1, Ordering::Relaxed);
    if !NO_SPACE_REPORTED.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            "{what} met a full disk ({error}); retrying it until space is freed, and \
             refusing new writes meanwhile"
        );
    }
}

/// True for the errors of a full file system: ENOSPC, and EDQUOT (a quota, full all the same).
pub fn is_no_space(error: &std::io::Error) -> bool {
    matches!(error.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
        || matches!(
            error.kind(),
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
        )
}

/// `statvfs` of `path`: free bytes for an unprivileged writer and the size.
pub fn statvfs(path: &Path) -> std::io::Result<Usage> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::other("data dir path holds a NUL byte"))?;
    // SAFETY: `c_path` is a NUL-terminated string that outlives the call, and `stat` is a
    // plain-old-data struct that statvfs fills in whole when it returns 0.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let fragment = stat.f_frsize as u64;
    Ok(Usage {
        free_bytes: (stat.f_bavail as u64).saturating_mul(fragment),
        total_bytes: (stat.f_blocks as u64).saturating_mul(fragment),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;
    const GIB: u64 = 1024 * MIB;

    #[test]
    fn default_reserve_is_the_smaller_of_one_gib_and_five_percent() {
        assert_eq!(reserve_bytes(None, 0), 0);
        assert_eq!(reserve_bytes(None, 300 * MIB), 15 * MIB);
        assert_eq!(reserve_bytes(None, 20 * GIB), GIB);
        assert_eq!(reserve_bytes(None, 10 * GIB), 512 * MIB);
        assert_eq!(reserve_bytes(None, 1 << 50), GIB);
        assert_eq!(reserve_bytes(None, u64::MAX), GIB);
        // What the user says wins, 0 included (no reserve: only ENOSPC closes the gate).
        assert_eq!(reserve_bytes(Some(0), 20 * GIB), 0);
        assert_eq!(reserve_bytes(Some(40 * MIB), 20 * GIB), 40 * MIB);
    }

    #[test]
    fn decide_closes_at_the_reserve_and_opens_above_the_margin() {
        let reserve = 100 * MIB;
        let margin = reopen_margin_bytes(reserve);
        assert_eq!(margin, PREALLOCATE_STEP_BYTES);
        assert_eq!(reopen_margin_bytes(10 * GIB), GIB);
        // Open: stays open down to the reserve, closes below it.
        assert_eq!(decide(Gate::Open, reserve, reserve, false), Gate::Open);
        assert_eq!(decide(Gate::Open, reserve - 1, reserve, false), Gate::Closed);
        // Closed: stays closed up to the reserve plus the margin.
        assert_eq!(decide(Gate::Closed, reserve, reserve, false), Gate::Closed);
        assert_eq!(decide(Gate::Closed, reserve + margin - 1, reserve, false), Gate::Closed);
        assert_eq!(decide(Gate::Closed, reserve + margin, reserve, false), Gate::Open);
        // An ENOSPC since the last look closes it whatever the numbers say.
        assert_eq!(decide(Gate::Open, 10 * GIB, reserve, true), Gate::Closed);
        assert_eq!(decide(Gate::Closed, 10 * GIB, reserve, true), Gate::Closed);
        // No reserve: never closed by the numbers alone, reopened after ENOSPC only with a
        // preallocation step free.
        assert_eq!(decide(Gate::Open, 0, 0, false), Gate::Open);
        assert_eq!(decide(Gate::Closed, PREALLOCATE_STEP_BYTES - 1, 0, false), Gate::Closed);
        assert_eq!(decide(Gate::Closed, PREALLOCATE_STEP_BYTES, 0, false), Gate::Open);
        assert_eq!(decide(Gate::Closed, u64::MAX - 1, u64::MAX, false), Gate::Closed);
    }

    fn usage(free_bytes: u64) -> Usage {
        Usage { free_bytes, total_bytes: 300 * MIB }
    }

    #[test]
    fn admissions_count_off_the_free_space_between_looks() {
        let mut gate = GateState::new(Some(40 * MIB));
        assert!(gate.look_due(0));
        assert_eq!(gate.looked(0, usage(50 * MIB), 0), Change::Unchanged);
        assert!(!gate.look_due(SPACE_CHECK_INTERVAL_MS as i64 - 1));
        assert!(gate.look_due(SPACE_CHECK_INTERVAL_MS as i64));
        assert!(gate.look_due(-1), "a clock that went back looks again");
        assert_eq!(gate.admit(6 * MIB, 0), (true, Change::Unchanged));
        assert_eq!(gate.admit(4 * MIB, 0), (true, Change::Unchanged));
        assert_eq!(gate.free_bytes(), 40 * MIB);
        // One byte more would go below the reserve: refused, and the gate closes.
        assert_eq!(gate.admit(1, 0), (false, Change::Closed));
        assert_eq!(gate.admit(0, 0), (false, Change::Unchanged));
        // A look with the same space keeps it closed; freed space opens it.
        assert_eq!(gate.looked(100, usage(50 * MIB), 0), Change::Unchanged);
        assert!(!gate.is_open());
        assert_eq!(gate.looked(200, usage(40 * MIB + PREALLOCATE_STEP_BYTES), 0), Change::Opened);
        assert_eq!(gate.admit(MIB, 0), (true, Change::Unchanged));
    }

    #[test]
    fn a_write_that_met_enospc_closes_the_gate_until_a_look_sees_space() {
        let mut gate = GateState::new(Some(0));
        assert_eq!(gate.looked(0, usage(10 * MIB), 0), Change::Unchanged);
        assert_eq!(gate.admit(20 * MIB, 0), (true, Change::Unchanged), "no reserve");
        // A write met ENOSPC (the events count moved): the next admission closes.
        assert_eq!(gate.admit(1, 1), (false, Change::Closed));
        // The next look still sees little space: closed.
        assert_eq!(gate.looked(100, usage(MIB), 1), Change::Unchanged);
        assert!(!gate.is_open());
        // Space freed, but a write failed again since: still closed.
        assert_eq!(gate.looked(200, usage(GIB), 2), Change::Unchanged);
        // Space freed and no new failure: open.
        assert_eq!(gate.looked(300, usage(GIB), 2), Change::Opened);
        assert_eq!(gate.admit(MIB, 2), (true, Change::Unchanged));
    }

    #[test]
    fn the_default_reserve_follows_the_file_system_size() {
        let mut gate = GateState::new(None);
        gate.looked(0, Usage { free_bytes: 20 * MIB, total_bytes: 300 * MIB }, 0);
        assert_eq!(gate.reserve_bytes(), 15 * MIB);
        assert!(gate.is_open());
        assert_eq!(gate.admit(5 * MIB + 1, 0), (false, Change::Closed));
    }

    #[test]
    fn statvfs_reads_a_real_file_system() {
        let dir = tempfile::tempdir().expect("tempdir");
        let usage = statvfs(dir.path()).expect("statvfs");
        assert!(usage.total_bytes > 0);
        assert!(usage.free_bytes <= usage.total_bytes);
        assert!(statvfs(&dir.path().join("missing")).is_err());
        let mut full = std::io::Error::from_raw_os_error(libc::ENOSPC);
        assert!(is_no_space(&full));
        full = std::io::Error::from_raw_os_error(libc::EIO);
        assert!(!is_no_space(&full));
    }
}
