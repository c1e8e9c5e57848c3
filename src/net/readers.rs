//! Threads that read segment files for catch-up consumers, off the executor.
//!
//! A `sendfile` of data that is not in the page cache waits for the disk inside the call
//! (measured 7-16 ms for 1 MiB written with O_DIRECT), and Linux has no non-blocking mode for
//! the file side, so these calls cannot run on a shard's executor. They used to run on
//! glommio's blocking pool, with a blocking socket: a consumer that stopped reading held a
//! thread until the 30 s send timeout, two such consumers held both, and every other catch-up
//! read and every segment roll of the shard (which uses the same pool) waited behind them.
//!
//! Here each call is bounded by the disk and never by a client: the socket is non-blocking,
//! a call sends at most `SENDFILE_CALL_BYTES_MAX` and returns when the socket is full, and
//! the connection then waits for room on its executor (`zero_copy`). The threads are the
//! shard's own, so rolls and deletions (glommio's blocking pool) never queue behind reads, and
//! they run at the lowest best-effort I/O priority and under SCHED_IDLE, so that a backlog
//! read yields the disk and the CPU to produce writes: a shard's thread that wakes on a core
//! where a reader runs takes the core at once (under nice 10 it waited for the scheduler's
//! wake-up granularity, milliseconds, each time).
//!
//! Lifecycle: started once per shard by the broker, before the executors start (so the
//! threads are not pinned to the shard's core); the threads end when the last handle is
//! dropped.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use futures::channel::oneshot;

/// Best-effort class, lowest level: `IOPRIO_PRIO_VALUE(IOPRIO_CLASS_BE, 7)`. Not the idle
/// class, which a steady producer could starve for ever.
const IOPRIO_BEST_EFFORT_LOWEST: libc::c_int = (2 << 13) | 7;
const IOPRIO_WHO_PROCESS: libc::c_int = 1;

/// The CPU niceness of the reader threads where SCHED_IDLE is refused (the shards run at 0).
const READER_NICE: libc::c_int = 10;

type Job = Box<dyn FnOnce() + Send>;

/// A handle to one shard's reader threads; cheap to clone.
#[derive(Clone)]
pub struct Readers {
    jobs: mpsc::Sender<Job>,
}

impl Readers {
    /// Starts `threads` reader threads for shard `shard`.
    pub fn start(shard: usize, threads: usize) -> std::io::Result<Readers> {
        assert!(threads > 0);
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for index in 0..threads {
            let queue = queue.clone();
            std::thread::Builder::new().name(format!("spate-read-{shard}-{index}")).spawn(
                move || {
                    lower_priority();
                    loop {
                        // The lock is held only while taking a job, never while running one.
                        let job = match queue.lock() {
                            Ok(queue) => queue.recv(),
                            Err(_) => return,
                        };
                        match job {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                },
            )?;
        }
        Ok(Readers { jobs })
    }

    /// Runs `job` on a reader thread and waits for its result without blocking the
    /// executor. `None` if the threads are gone (shutting down).
    pub async fn run<R: Send + 'static>(
        &self,
        job: impl FnOnce() -> R + Send + 'static,
    ) -> Option<R> {
        let (done, result) = oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = done.send(job());
        });
        self.jobs.send(job).ok()?;
        result.await.ok()
    }
}

/// Lowers the calling thread's I/O and CPU priority. Best effort: on a kernel or scheduler
/// without I/O priorities the reads simply compete as equals. SCHED_IDLE still gets a small
/// share of a busy core (CFS weight 3 against 1,024), so a catch-up read slows down under a
/// saturated shard but does not stop.
fn lower_priority() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: plain syscalls on the calling thread (`0` and `gettid` name it); `param` lives
    // across the call that reads it.
    unsafe {
        libc::syscall(libc::SYS_ioprio_set, IOPRIO_WHO_PROCESS, 0, IOPRIO_BEST_EFFORT_LOWEST);
        if libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) != 0 {
            let tid = libc::gettid() as libc::id_t;
            libc::setpriority(libc::PRIO_PROCESS, tid, READER_NICE);
        }
    }
}
