//! The `spate` command: parse the command line, check the machine, run the broker.

use clap::Parser;

use spate::config::{Args, Config};
use spate::fatal::{fatal, FatalReason};

/// mimalloc instead of glibc's malloc: at 50,000 one-record produces/s on one shard, glibc's
/// allocator took a fifth of the shard's CPU (`_int_malloc`, `malloc_consolidate`: most of the
/// broker's buffers are over 1 KiB, glibc's "large" requests).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    // First, before the shards fault in their memory: mimalloc asks for transparent huge
    // pages (MADV_HUGEPAGE on its arenas), and with THP `madvise` khugepaged then collapses
    // them under running shards (see `disable_transparent_huge_pages`).
    let thp = spate::broker::disable_transparent_huge_pages();
    let args = Args::parse();
    let config =
        Config::from_args(args).unwrap_or_else(|message| fatal(FatalReason::Config, message));
    spate::broker::init_logging(config.log_json);
    if let Err(e) = thp {
        tracing::warn!("cannot opt out of transparent huge pages (PR_SET_THP_DISABLE): {e}");
    }
    spate::broker::run(config);
    spate::storage::log_io_totals();
}
