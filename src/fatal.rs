//! Environmental dead ends: print one sentence and exit with a code per cause.
//!
//! `exit`, not `panic!`: a failed fdatasync leaves the page cache and the device disagreeing
//! about what is durable, and retrying it can report success for data that was lost (the
//! "fsyncgate" lesson). The only safe answer is to stop and let recovery rebuild the truth.

use std::fmt;

#[derive(Debug, Clone, Copy)]
pub enum FatalReason {
    /// A bad configuration value or file.
    Config = 2,
    /// The data dir cannot be created, written or locked.
    DataDir = 3,
    /// The listen address is in use or cannot be bound.
    Listen = 4,
    /// The executors could not start (io_uring missing, memlock too low).
    Runtime = 5,
    /// A write or flush to the log failed for another reason than a full file system (which
    /// is retried: `storage::space`); the log is poisoned.
    StorageIo = 6,
}

/// Prints `message` (one sentence that says how to fix it) and exits the whole process.
pub fn fatal(reason: FatalReason, message: impl fmt::Display) -> ! {
    eprintln!("spate: {message}");
    tracing::error!(reason = ?reason, "fatal: {message}");
    std::process::exit(reason as i32)
}
