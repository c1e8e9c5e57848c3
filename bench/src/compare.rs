//! `spate-bench compare`: saved runs side by side, with ratios to the first run, and one plot.

use std::path::Path;

use crate::cli::CompareArgs;
use crate::plot::{self, Series, Stroke};
use crate::report::{
    bench_cpu_us_per_record, client_summary, ms, series_title, RunResult, SERIES_ORDER,
};

pub fn load(path: &Path) -> Result<RunResult, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    serde_json::from_str(&text)
        .map_err(|e| format!("{} is not a spate-bench result: {e}", path.display()))
}

pub fn compare(args: &CompareArgs) -> Result<String, String> {
    let mut runs: Vec<RunResult> =
        args.results.iter().map(|p| load(p)).collect::<Result<_, _>>()?;
    make_labels_unique(&mut runs);
    let table = table(&runs, args.markdown, args.uncorrected);
    if let Some(path) = &args.plot {
        let title = args.title.clone().unwrap_or_else(|| {
            let labels: Vec<&str> = runs.iter().map(|r| r.label.as_str()).collect();
            format!("Latency by percentile: {}", labels.join(" vs "))
        });
        let mut series = Vec::new();
        for (index, run) in runs.iter().enumerate() {
            for name in SERIES_ORDER {
                if !args.uncorrected && name.ends_with("uncorrected") {
                    continue;
                }
                if let Some(summary) = run.latency.get(name) {
                    series.push(Series {
                        name: format!("{}: {}", run.label, series_title(name)),
                        points: summary.curve.clone(),
                        color: index,
                        stroke: Stroke::for_series(name),
                    });
                }
            }
        }
        let subtitle = runs.first().map(describe).unwrap_or_default();
        std::fs::write(path, plot::percentile_svg(&title, &subtitle, &series)?)
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(table)
}

/// One line describing a run's workload, for plot subtitles.
pub fn describe(run: &RunResult) -> String {
    let config = &run.config;
    let mode = match config.rate {
        Some(rate) => format!("open loop {rate:.0} records/s ({})", config.arrival),
        None => "closed loop".to_string(),
    };
    let client =
        if run.produce.is_some() { format!(", client {}", config.client) } else { String::new() };
    format!(
        "{}{client}, {} B records, compression {}, acks {}, {} partitions, {}, {:.1} s measured",
        run.workload,
        config.record_size,
        config.compression,
        config.acks,
        config.partitions,
        mode,
        run.measured_seconds
    )
}

fn make_labels_unique(runs: &mut [RunResult]) {
    for index in 0..runs.len() {
        let label = runs[index].label.clone();
        if runs[..index].iter().any(|r| r.label == label) {
            runs[index].label = format!("{label} #{}", index + 1);
        }
    }
}

/// A table row: a metric and one value per run (`None` when a run does not have it).
struct Row {
    metric: String,
    values: Vec<Option<f64>>,
    format: fn(f64) -> String,
    /// Whether a ratio to the first run means something for this row.
    ratio: bool,
}

fn table(runs: &[RunResult], markdown: bool, uncorrected: bool) -> String {
    let rows = rows(runs, uncorrected);
    let mut header = vec!["metric".to_string()];
    header.extend(runs.iter().map(|r| r.label.clone()));
    if let Some(first) = runs.first() {
        header.extend(runs.iter().skip(1).map(|r| format!("{}/{}", r.label, first.label)));
    }
    let mut cells: Vec<Vec<String>> = vec![header];
    for row in &rows {
        let mut line = vec![row.metric.clone()];
        line.extend(row.values.iter().map(|v| v.map_or("-".to_string(), row.format)));
        let base = row.values.first().copied().flatten();
        for value in row.values.iter().skip(1) {
            line.push(match (row.ratio, base, value) {
                (true, Some(base), Some(value)) if base != 0.0 => format!("{:.2}x", value / base),
                _ => "-".to_string(),
            });
        }
        cells.push(line);
    }
    // Text lines for the open-loop verdicts, which do not fit in cells.
    let mut notes = String::new();
    for run in runs {
        if run.produce.is_some() {
            notes += &format!("producer client ({}): {}\n", run.label, client_summary(&run.config));
        }
        if let Some(open_loop) = &run.open_loop {
            notes += &format!("{}: open loop {}\n", run.label, open_loop.verdict);
        }
        for (kind, count) in &run.errors {
            notes += &format!("{}: error {kind}: {count}\n", run.label);
        }
    }
    render(&cells, markdown) + &notes
}

fn rows(runs: &[RunResult], uncorrected: bool) -> Vec<Row> {
    let float1 = |v: f64| format!("{v:.1}");
    let float2 = |v: f64| format!("{v:.2}");
    let latency_ms = |v: f64| ms(v as u64);
    let integer = |v: f64| format!("{v:.0}");
    let mut rows = Vec::new();
    let mut add = |metric: &str,
                   format: fn(f64) -> String,
                   ratio: bool,
                   value: &dyn Fn(&RunResult) -> Option<f64>| {
        let values: Vec<Option<f64>> = runs.iter().map(value).collect();
        if values.iter().any(Option::is_some) {
            rows.push(Row { metric: metric.to_string(), values, format, ratio });
        }
    };
    add("target rate (records/s)", integer, false, &|r| r.config.rate);
    add("produced records/s", float1, true, &|r| r.produce.as_ref().map(|p| p.records_per_sec));
    add("produced MB/s", float2, true, &|r| r.produce.as_ref().map(|p| p.mb_per_sec));
    add("consumed records/s", float1, true, &|r| r.consume.as_ref().map(|c| c.records_per_sec));
    add("consumed MB/s", float2, true, &|r| r.consume.as_ref().map(|c| c.mb_per_sec));
    for series in SERIES_ORDER {
        if !uncorrected && series.ends_with("uncorrected") {
            continue;
        }
        let title = series_title(series);
        let percentile_names = ["p50", "p90", "p99", "p99.9", "p99.99", "max"];
        for (position, name) in percentile_names.iter().enumerate() {
            let metric = format!("{title} {name} (ms)");
            add(&metric, latency_ms, true, &|r| {
                r.latency
                    .get(series)
                    .filter(|s| s.count > 0)
                    .map(|s| s.percentiles()[position].1 as f64)
            });
        }
    }
    // Host steal (bench/README.md): the episodes each run met, and the publish percentiles
    // without the records they spanned. Rows only where some run met an episode.
    if runs.iter().any(|r| r.host_steal.as_ref().is_some_and(|h| h.episodes > 0)) {
        add("host steal episodes", integer, false, &|r| {
            r.host_steal.as_ref().map(|h| h.episodes as f64)
        });
        add("host steal ms", integer, false, &|r| {
            r.host_steal.as_ref().map(|h| h.stolen_ms as f64)
        });
        for (position, name) in ["p50", "p90", "p99", "p99.9"].iter().enumerate() {
            let metric = format!("publish steal-free {name} (ms)");
            add(&metric, latency_ms, true, &|r| {
                let summary = r.host_steal.as_ref()?.steal_free.get("publish")?;
                (summary.count > 0).then(|| summary.percentiles()[position].1 as f64)
            });
        }
    }
    add("errors", integer, false, &|r| Some(r.errors.values().sum::<u64>() as f64));
    add("bench CPU s", float2, true, &|r| Some(r.cpu.bench_seconds));
    add("bench CPU us per record", float2, true, &bench_cpu_us_per_record);
    add("broker CPU s (measured window)", float2, true, &|r| {
        r.cpu.brokers.first().map(|b| b.measured_seconds)
    });
    add("broker CPU s (whole run)", float2, true, &|r| {
        r.cpu.brokers.first().map(|b| b.run_seconds)
    });
    add("broker CPU us per record", float2, true, &|r| {
        let broker = r.cpu.brokers.first()?;
        let records = measured_records(r)?;
        (records > 0).then(|| broker.measured_seconds * 1e6 / records as f64)
    });
    rows
}

/// Records of the measured window: acknowledged ones, or consumed ones for `consume`.
fn measured_records(run: &RunResult) -> Option<u64> {
    run.produce.as_ref().map(|p| p.acked).or(run.consume.as_ref().map(|c| c.consumed))
}

pub fn render(cells: &[Vec<String>], markdown: bool) -> String {
    let columns = cells.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            cells.iter().filter_map(|row| row.get(c)).map(|s| s.chars().count()).max().unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for (index, row) in cells.iter().enumerate() {
        let padded: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(c, cell)| {
                if c == 0 {
                    format!("{cell:<width$}", width = widths[c])
                } else {
                    format!("{cell:>width$}", width = widths[c])
                }
            })
            .collect();
        if markdown {
            out += &format!("| {} |\n", padded.join(" | "));
            if index == 0 {
                let rule: Vec<String> =
                    widths
                        .iter()
                        .enumerate()
                        .map(|(c, w)| {
                            if c == 0 {
                                "-".repeat(*w)
                            } else {
                                format!("{}:", "-".repeat(w - 1))
                            }
                        })
                        .collect();
                out += &format!("| {} |\n", rule.join(" | "));
            }
        } else {
            out += &padded.join("  ");
            out += "\n";
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{HostSteal, LatencySummary};

    fn run(label: &str, p99_9_us: u64, steal: Option<(usize, u64)>) -> RunResult {
        let summary = LatencySummary { count: 1_000, p99_9_us, ..LatencySummary::default() };
        let mut run = RunResult { label: label.to_string(), ..RunResult::default() };
        run.latency.insert("publish".to_string(), summary.clone());
        run.host_steal = steal.map(|(episodes, steal_free_p99_9_us)| HostSteal {
            episodes,
            stolen_ms: 100 * episodes as u64,
            steal_free: [(
                "publish".to_string(),
                LatencySummary { p99_9_us: steal_free_p99_9_us, ..summary },
            )]
            .into(),
            ..HostSteal::default()
        });
        run
    }

    #[test]
    fn steal_free_rows_appear_only_when_a_run_met_steal() {
        let quiet = [run("a", 2_000, Some((0, 2_000))), run("b", 20_000, Some((0, 20_000)))];
        assert!(!table(&quiet, false, false).contains("steal"));
        let stolen = [run("a", 90_000, Some((1, 2_000))), run("b", 20_000, None)];
        let text = table(&stolen, false, false);
        let row = text.lines().find(|l| l.starts_with("publish steal-free p99.9")).expect("row");
        // a's steal-free value, and "-" for b, which has no steal figures.
        assert!(row.contains("2.000") && row.trim_end().ends_with('-'), "{row}");
        assert!(text.lines().any(|l| l.starts_with("host steal episodes")), "{text}");
    }
}
