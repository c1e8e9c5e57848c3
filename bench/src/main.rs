//! spate-bench: an honest load generator for any Kafka-compatible broker.
//!
//! See bench/README.md for usage, outputs and how coordinated omission is corrected.

mod admin;
mod cli;
mod clock;
mod compare;
mod consumer;
mod cpu;
mod native;
mod payload;
mod plot;
mod producer;
mod report;
mod run;
mod spec;
mod stats;
mod steal;
mod sweep;
mod wire;

use std::path::Path;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};

use cli::{Cli, Command, RunArgs};
use plot::{Series, Stroke};
use report::{hgrm, hgrm_path, series_title, summary_table};
use run::{RunOutput, Workload};

/// Exit code of a run that completed but had errors (or could not keep up in open loop), so that
/// scripts notice without parsing the output. Bad usage exits with 2 (clap's convention), and a
/// run that could not start exits with 1. A sweep exits with it when a step could not run or the
/// sweep was interrupted; a ladder that ends because a broker no longer keeps up is its normal
/// end.
const EXIT_DEGRADED: u8 = 3;

fn main() -> ExitCode {
    // Parsed in two steps because `sweep` pairs each --label with the -b before it, which only
    // the matches' argument positions tell.
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|error| error.exit());
    let outcome = match &cli.command {
        Command::Produce(args) => run_workload(Workload::Produce, args),
        Command::Consume(args) => run_workload(Workload::Consume, args),
        Command::EndToEnd(args) => run_workload(Workload::EndToEnd, args),
        Command::Compare(args) => compare::compare(args).map(|table| {
            print!("{table}");
            ExitCode::SUCCESS
        }),
        Command::Sweep(args) => {
            let sweep_matches = matches.subcommand_matches("sweep").unwrap_or(&matches);
            sweep::sweep(args, sweep_matches).map(|complete| {
                if complete {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(EXIT_DEGRADED)
                }
            })
        }
    };
    match outcome {
        Ok(code) => code,
        Err(message) => {
            eprintln!("spate-bench: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run_workload(workload: Workload, args: &RunArgs) -> Result<ExitCode, String> {
    let RunOutput { result, histograms } = run::run(workload, args)?;
    if args.delete_topic {
        // Not an error of the run: the results stand whether or not the broker deletes.
        match admin::delete_topic(&args.bootstrap, &args.workload.topic) {
            Ok(()) => eprintln!("deleted topic {}", args.workload.topic),
            Err(message) => eprintln!("note: {message}"),
        }
    }
    print!("{}", summary_table(&result));
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&result)
            .map_err(|e| format!("cannot encode the results: {e}"))?;
        write(path, &text)?;
    }
    if let Some(base) = &args.hgrm {
        for (series, histogram) in &histograms {
            write(&hgrm_path(base, series), &hgrm(histogram))?;
        }
    }
    if let Some(path) = &args.plot {
        let series: Vec<Series> = histograms
            .iter()
            .enumerate()
            .filter_map(|(index, (name, _))| {
                let summary = result.latency.get(name)?;
                Some(Series {
                    name: series_title(name).to_string(),
                    points: summary.curve.clone(),
                    color: index,
                    stroke: Stroke::for_series(name),
                })
            })
            .collect();
        let title = format!("spate-bench: {}", result.label);
        write(path, &plot::percentile_svg(&title, &compare::describe(&result), &series)?)?;
    }
    let kept_up = result.open_loop.as_ref().is_none_or(|o| o.kept_up);
    if result.errors.is_empty() && kept_up {
        Ok(ExitCode::SUCCESS)
    } else {
        Ok(ExitCode::from(EXIT_DEGRADED))
    }
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    eprintln!("wrote {}", path.display());
    Ok(())
}
