//! Partition logs on disk: segments written with O_DIRECT through io_uring, Kafka's file
//! layout, recovery of torn tails, retention, and the in-memory cache of recent batches.
//!
//! Everything here runs on the shard that owns the partition; nothing is shared across
//! cores but the two I/O counters below. See `log.rs` for the append and read paths.

pub mod cache;
pub mod clean_stop;
pub mod cleaner;
pub mod compaction;
pub mod files;
pub mod high_watermarks;
pub mod index;
pub mod leader_epochs;
pub mod log;
pub mod producer_state;
pub mod segment;
pub mod snapshot;
pub mod space;
pub mod txn_index;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

/// Storage failures that a caller can act on. Write and flush failures are not here: a full
/// file system is retried until space is freed (`space`), any other failure poisons the log
/// and ends the process (`fatal`).
#[derive(Debug)]
pub enum Error {
    Io(std::io::Error),
    /// The offset is below the log start or above the high watermark.
    OffsetOutOfRange,
    /// The log was deleted (topic deletion) while the operation waited.
    Deleted,
    /// An idempotent producer's batch failed its sequence or epoch check.
    Producer(producer_state::ProducerError),
    /// The bytes where a batch must start are not a batch (damaged on disk in a part that
    /// start-up does not check: before the last index entry of a segment).
    Corrupt {
        path: std::path::PathBuf,
        position: u64,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(e) => write!(f, "I/O error: {e}"),
            Error::OffsetOutOfRange => write!(f, "offset out of range"),
            Error::Deleted => write!(f, "log deleted"),
            Error::Producer(e) => write!(f, "producer check failed: {e:?}"),
            Error::Corrupt { path, position } => {
                write!(f, "no valid batch at byte {position} of {}", path.display())
            }
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Io(e)
    }
}

/// `GlommioError<T>` is Send but not Sync, so it does not convert into most error types;
/// turn it into a plain `std::io::Error` first.
/// The OS error number is kept, so that `space::is_no_space` can tell a full disk.
pub fn io_error<T>(e: glommio::GlommioError<T>) -> Error {
    Error::Io(glommio_io_error(e))
}

/// A glommio error as a `std::io::Error`: the kind of its OS error kept when it has one
/// (ENOSPC is `StorageFull`), with the operation and path in the message.
pub fn glommio_io_error<T>(e: glommio::GlommioError<T>) -> std::io::Error {
    match e.raw_os_error() {
        Some(code) => {
            std::io::Error::new(std::io::Error::from_raw_os_error(code).kind(), e.to_string())
        }
        None => std::io::Error::other(e.to_string()),
    }
}

/// What the partition logs asked of the disk since the process started, over all shards.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IoTotals {
    /// Runs of batches written by a log's flusher (one or two O_DIRECT writes each): with
    /// group commit, fewer than the appends.
    pub writes: u64,
    /// fdatasyncs of segment files: one per write under `--durability fsync`, plus one per
    /// segment sealed (a clean stop ends with one `syncfs` instead of one per log).
    pub fdatasyncs: u64,
    /// fsyncs of directories under `--durability fsync`: a partition directory after a new
    /// segment file appears in it, the data dir after a partition directory appears in it
    /// (`sync_new_entry`).
    pub dir_syncs: u64,
    /// Steps of zeros written (and fdatasynced) ahead of the data under `--durability fsync`
    /// (`log::zero_ahead_due`); not counted in `writes` nor `fdatasyncs`.
    pub zero_writes: u64,
}

// Process-wide, so that one line at shutdown can sum every shard without asking each one.
// Relaxed adds: one per write or fdatasync, each of which costs microseconds of I/O; nothing
// reads them until shutdown.
static WRITES: AtomicU64 = AtomicU64::new(0);
static FDATASYNCS: AtomicU64 = AtomicU64::new(0);
static DIR_SYNCS: AtomicU64 = AtomicU64::new(0);
static ZERO_WRITES: AtomicU64 = AtomicU64::new(0);

pub(crate) fn count_write() {
    WRITES.fetch_add(1, Ordering::Relaxed);
}

pub(crate) fn count_fdatasync() {
    FDATASYNCS.fetch_add(1, Ordering::Relaxed);
}

pub(crate) fn count_zero_write() {
    ZERO_WRITES.fetch_add(1, Ordering::Relaxed);
}

pub fn io_totals() -> IoTotals {
    IoTotals {
        writes: WRITES.load(Ordering::Relaxed),
        fdatasyncs: FDATASYNCS.load(Ordering::Relaxed),
        dir_syncs: DIR_SYNCS.load(Ordering::Relaxed),
        zero_writes: ZERO_WRITES.load(Ordering::Relaxed),
    }
}

/// Makes the entry of a file or directory just created in `dir` durable: fsyncs `dir` (on
/// glommio's blocking pool). fdatasync of a new segment file makes its bytes and size durable
/// but not its name: after a power loss the file could be gone, with acknowledged records in
/// it (ext4 happens to commit the name with the file's journal transaction; the POSIX
/// contract, XFS and others do not). Kafka flushes the directory likewise on a roll and when
/// it creates a log. A failure ends the process, as a failed fdatasync does: the durability
/// of what was acknowledged is unknown. A directory that is gone (its topic was deleted
/// meanwhile) has nothing left to make durable.
pub(crate) async fn sync_new_entry(dir: &std::path::Path) {
    let path = dir.to_path_buf();
    let synced = glommio::executor()
        .spawn_blocking(move || std::fs::File::open(&path).and_then(|d| d.sync_all()))
        .await;
    if let Err(e) = synced {
        if e.kind() == std::io::ErrorKind::NotFound {
            return;
        }
        crate::fatal::fatal(
            crate::fatal::FatalReason::StorageIo,
            format!("cannot fsync the directory {}: {e}; check the disk", dir.display()),
        );
    }
    DIR_SYNCS.fetch_add(1, Ordering::Relaxed);
}

/// Logs `io_totals` in one line, for a clean shutdown: what the durability policy cost
/// (tests/clients/test_durability.py reads it; glommio's fdatasync goes through io_uring,
/// where strace cannot count it).
pub fn log_io_totals() {
    let totals = io_totals();
    tracing::info!(
        writes = totals.writes,
        fdatasyncs = totals.fdatasyncs,
        dir_syncs = totals.dir_syncs,
        zero_writes = totals.zero_writes,
        "partition log I/O since start"
    );
}
