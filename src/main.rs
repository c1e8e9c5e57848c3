//! The `spate` command: parse the command line, check the machine, run the broker.

use clap::Parser;

use spate::config::{Args, Config};
use spate::fatal::{fatal, FatalReason};

fn main() {
    let args = Args::parse();
    let config =
        Config::from_args(args).unwrap_or_else(|message| fatal(FatalReason::Config, message));
    spate::broker::init_logging(config.log_json);
    spate::broker::run(config);
    spate::storage::log_io_totals();
}
