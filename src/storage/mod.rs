//! Partition logs on disk: segments written with O_DIRECT through io_uring, Kafka's file
//! layout, recovery of torn tails, retention, and the in-memory cache of recent batches.
//!
//! Everything here runs on the shard that owns the partition; nothing is shared across
//! cores. See `log.rs` for the append and read paths.

pub mod cache;
pub mod index;
pub mod log;
pub mod producer_state;
pub mod segment;
pub mod snapshot;
pub mod txn_index;

use std::fmt;

/// Storage failures that a caller can act on. Write and flush failures are not here: they
/// poison the log and end the process (`fatal`).
#[derive(Debug)]
pub enum Error {
    Io(std::io::Error),
    /// The offset is below the log start or above the high watermark.
    OffsetOutOfRange,
    /// The log was deleted (topic deletion) while the operation waited.
    Deleted,
    /// An idempotent producer's batch failed its sequence or epoch check.
    Producer(producer_state::ProducerError),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(e) => write!(f, "I/O error: {e}"),
            Error::OffsetOutOfRange => write!(f, "offset out of range"),
            Error::Deleted => write!(f, "log deleted"),
            Error::Producer(e) => write!(f, "producer check failed: {e:?}"),
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
pub fn io_error<T>(e: glommio::GlommioError<T>) -> Error {
    Error::Io(std::io::Error::other(e.to_string()))
}
