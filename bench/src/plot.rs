//! SVG charts, drawn with `plotters` (its SVG backend only):
//!
//! - `percentile_svg`: latency by percentile, in the style of HdrHistogram's plotter. The x axis
//!   stretches the tail (0 %, 90 %, 99 %, 99.9 %, ... equally spaced), the y axis is
//!   logarithmic, one line per series.
//! - `rate_svg`: latency against offered rate for `sweep`, both axes logarithmic, one colour
//!   per broker and one line style per percentile.
//!
//! Both have a title, a one-line subtitle with the workload, axis titles with units, and a
//! legend below the chart (so it never hides a curve).
//!
//! plotters is built without its `ttf` feature, so it needs no system fonts: the SVG backend
//! writes `<text>` elements and leaves the glyphs to whatever displays the file. Without fonts
//! plotters can only estimate text extents (about 0.45 em per character), which is why the label
//! areas below have fixed sizes instead of being fitted to the labels.

use plotters::chart::MeshStyle;
use plotters::coord::Shift;
use plotters::element::{Cross, DashedPathElement};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

const WIDTH: u32 = 960;
/// Title and subtitle above the chart.
const HEADER_HEIGHT: u32 = 64;
/// The chart with its axes and axis titles.
const CHART_HEIGHT: u32 = 540;
const LEGEND_ROW_HEIGHT: u32 = 18;
const LEGEND_PADDING: u32 = 10;
/// The line sample left of a legend entry's name, in pixels.
const LEGEND_SAMPLE_WIDTH: i32 = 40;
/// Left of the plotting area: tick labels and the rotated y-axis title.
const Y_LABEL_AREA: u32 = 80;
/// Below the plotting area: tick labels and the x-axis title.
const X_LABEL_AREA: u32 = 50;
const CHART_MARGIN: u32 = 20;
/// Room for half of the last x label ("99.9999%"), which is centred on the right edge.
const CHART_MARGIN_RIGHT: u32 = 44;
const FONT: &str = "sans-serif";
const TITLE_FONT_SIZE: f64 = 22.0;
const TEXT_FONT_SIZE: f64 = 15.0;
/// The x axis ends at 99.9999 % at most: beyond that, a run of realistic length has no samples.
const NINES_MAX: i32 = 6;
/// The x axis shows at least 90 % .. 99.9 % so short runs still read as a percentile plot.
const NINES_MIN: i32 = 3;
/// Tableau 10, the palette of matplotlib and HdrHistogram's plotter.
const PALETTE: [RGBColor; 8] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
    RGBColor(0xe3, 0x77, 0xc2),
    RGBColor(0x7f, 0x7f, 0x7f),
];
const LINE_WIDTH: u32 = 2;
/// Dash and gap lengths in pixels: (dash, gap).
const DASHED: (u32, u32) = (9, 5);
const DOTTED: (u32, u32) = (2, 4);
const MARKER_SIZE: u32 = 4;
/// The decade grid gets lines at 1, 2, ..., 9 of each decade; plotters draws at most this many.
const LIGHT_LINES_MAX: usize = 9;
/// The legend entry for crosses.
const COULD_NOT_KEEP_UP: &str = "could not keep up (the broker was offered less than the rate)";
/// Pixels between the bottom of the plotting area and a rate label.
const TICK_LABEL_GAP: i32 = 8;
/// The rate axis reaches this factor beyond the lowest and highest rate, so that the first and
/// last markers are not cut.
const RATE_AXIS_PADDING: f64 = 1.25;
/// The latency axis ends this factor above its top decade, so that floating-point rounding in
/// plotters' log axis keeps that decade's label.
const DECADE_TOP_SLACK: f64 = 1.0 + 1e-9;
const GRID_BOLD: RGBColor = RGBColor(0xbb, 0xbb, 0xbb);
const GRID_LIGHT: RGBColor = RGBColor(0xee, 0xee, 0xee);

/// How a series is stroked: publish latency (or p50) solid, end-to-end (or p99) dashed,
/// uncorrected (or p99.9) dotted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stroke {
    Solid,
    Dashed,
    Dotted,
}

impl Stroke {
    pub fn for_series(series: &str) -> Stroke {
        if series.ends_with("uncorrected") {
            Stroke::Dotted
        } else if series.starts_with("end_to_end") {
            Stroke::Dashed
        } else {
            Stroke::Solid
        }
    }
}

/// One line of a percentile chart.
pub struct Series {
    pub name: String,
    /// (percentile 0..100, latency us), ascending in percentile.
    pub points: Vec<[f64; 2]>,
    pub color: usize,
    pub stroke: Stroke,
}

/// One line of a sweep chart.
pub struct RateSeries {
    pub name: String,
    /// Ascending in rate.
    pub points: Vec<RatePoint>,
    pub color: usize,
    pub stroke: Stroke,
}

#[derive(Clone, Copy, Debug)]
pub struct RatePoint {
    /// Offered records/s.
    pub rate: f64,
    pub latency_ms: f64,
    /// Drawn as a cross when false: the broker was offered less than `rate`.
    pub kept_up: bool,
}

/// Renders a latency-by-percentile chart; `subtitle` is a one-line description of the workload.
pub fn percentile_svg(title: &str, subtitle: &str, series: &[Series]) -> Result<String, String> {
    let points = || series.iter().flat_map(|s| s.points.iter());
    // The finite x extent comes from the highest percentile below 100.
    let top_percentile = points().map(|p| p[0]).filter(|p| *p < 100.0).fold(0.0, f64::max);
    let nines = (nines_of(top_percentile).ceil() as i32).clamp(NINES_MIN, NINES_MAX);
    let (low, high) = decades(points().map(|p| p[1]));
    let legend: Vec<(&str, Mark)> =
        series.iter().map(|s| (s.name.as_str(), Mark::Line(s.color, s.stroke))).collect();
    let mut svg = String::new();
    {
        let (root, chart_area) = layout(&mut svg, title, subtitle, &legend)?;
        let x_range = 0.0..f64::from(nines);
        let y_range = (10f64.powi(low)..10f64.powi(high) * DECADE_TOP_SLACK).log_scale();
        let mut chart =
            chart_builder(&chart_area).build_cartesian_2d(x_range, y_range).map_err(draw_error)?;
        let y_label = |us: &f64| latency_label(us.log10().round() as i32);
        let x_label = |x: &f64| percentile_label(x.round() as i32);
        let mut mesh = chart.configure_mesh();
        mesh.x_labels(nines as usize + 1)
            .x_label_formatter(&x_label)
            .x_max_light_lines(0)
            .x_desc("percentile (tail stretched: 1/(1-p) on a log scale)");
        latency_axis(&mut mesh, high - low, &y_label).draw().map_err(draw_error)?;
        for s in series {
            let line: Vec<(f64, f64)> = s
                .points
                .iter()
                .map(|p| {
                    let x = if p[0] >= 100.0 { f64::from(nines) } else { nines_of(p[0]) };
                    (x.min(f64::from(nines)), p[1].max(1.0))
                })
                .collect();
            draw_line(&mut chart, line, s.color, s.stroke)?;
        }
        root.present().map_err(draw_error)?;
    }
    Ok(svg)
}

/// The latency (y) axis and the grid and text styles both charts share: `decades` decade
/// labels from `label`.
fn latency_axis<'m, 'a, 'b, X: Ranged, Y: Ranged, DB: DrawingBackend>(
    mesh: &'m mut MeshStyle<'a, 'b, X, Y, DB>,
    decades: i32,
    label: &'b dyn Fn(&Y::ValueType) -> String,
) -> &'m mut MeshStyle<'a, 'b, X, Y, DB> {
    mesh.y_labels(decades as usize + 1)
        .y_label_formatter(label)
        .y_max_light_lines(LIGHT_LINES_MAX)
        .y_desc("latency (log scale)")
        .bold_line_style(GRID_BOLD)
        .light_line_style(GRID_LIGHT)
        .label_style((FONT, TEXT_FONT_SIZE))
        .axis_desc_style((FONT, TEXT_FONT_SIZE))
}

/// Renders latency against offered rate (both logarithmic); a step that did not keep up is a
/// cross instead of a dot.
pub fn rate_svg(title: &str, subtitle: &str, series: &[RateSeries]) -> Result<String, String> {
    let points = || series.iter().flat_map(|s| s.points.iter());
    let rate_min = points().map(|p| p.rate).fold(f64::INFINITY, f64::min);
    let rate_max = points().map(|p| p.rate).fold(0.0, f64::max);
    let (rate_low, rate_high) = if rate_min.is_finite() && rate_max > 0.0 {
        (rate_min / RATE_AXIS_PADDING, rate_max * RATE_AXIS_PADDING)
    } else {
        (1.0, 10.0)
    };
    // Latency in us for the decade labels, as in the percentile chart.
    let (low, high) = decades(points().map(|p| p.latency_ms * 1_000.0));
    let mut legend: Vec<(&str, Mark)> =
        series.iter().map(|s| (s.name.as_str(), Mark::Line(s.color, s.stroke))).collect();
    if points().any(|p| !p.kept_up) {
        legend.push((COULD_NOT_KEEP_UP, Mark::Cross));
    }
    let mut svg = String::new();
    {
        let (root, chart_area) = layout(&mut svg, title, subtitle, &legend)?;
        let y_range = (10f64.powi(low)..10f64.powi(high) * DECADE_TOP_SLACK).log_scale();
        let mut chart = chart_builder(&chart_area)
            .build_cartesian_2d((rate_low..rate_high).log_scale(), y_range)
            .map_err(draw_error)?;
        let y_label = |us: &f64| latency_label(us.log10().round() as i32);
        // The x ticks are the offered rates themselves (plotters' log axis would label 1..9 of a
        // decade or the decades only), so that each column of markers has its rate below it.
        let mut mesh = chart.configure_mesh();
        mesh.disable_x_mesh()
            .x_label_formatter(&|_| String::new())
            .set_tick_mark_size(LabelAreaPosition::Bottom, 0)
            .x_desc("offered load (records/s, log scale)");
        latency_axis(&mut mesh, high - low, &y_label).draw().map_err(draw_error)?;
        let mut rates: Vec<f64> = points().map(|p| p.rate).collect();
        rates.sort_by(f64::total_cmp);
        rates.dedup();
        draw_rate_ticks(&root, &chart, &rates, (10f64.powi(low), 10f64.powi(high)))?;
        for s in series {
            let line: Vec<(f64, f64)> =
                s.points.iter().map(|p| (p.rate, (p.latency_ms * 1_000.0).max(1.0))).collect();
            draw_line(&mut chart, line, s.color, s.stroke)?;
            let color = palette(s.color);
            for point in &s.points {
                let at = (point.rate, (point.latency_ms * 1_000.0).max(1.0));
                if point.kept_up {
                    chart.plotting_area().draw(&Circle::new(at, MARKER_SIZE, color.filled()))
                } else {
                    let style = color.stroke_width(LINE_WIDTH);
                    chart.plotting_area().draw(&Cross::new(at, MARKER_SIZE * 2, style))
                }
                .map_err(draw_error)?;
            }
        }
        root.present().map_err(draw_error)?;
    }
    Ok(svg)
}

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

/// What a legend row shows left of its name.
#[derive(Clone, Copy)]
enum Mark {
    /// A sample of a series' line: palette index and stroke.
    Line(usize, Stroke),
    /// The marker of a sweep step that did not keep up.
    Cross,
}
type Chart<'a, 'b, X> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<X, LogCoord<f64>>>;

/// Splits the picture into header (title, subtitle), chart and legend, and draws the header and
/// the legend; returns the root (to present) and the chart's area.
fn layout<'a>(
    svg: &'a mut String,
    title: &str,
    subtitle: &str,
    legend: &[(&str, Mark)],
) -> Result<(Area<'a>, Area<'a>), String> {
    let legend_height = LEGEND_ROW_HEIGHT * legend.len() as u32 + 2 * LEGEND_PADDING;
    let height = HEADER_HEIGHT + CHART_HEIGHT + legend_height;
    let root = SVGBackend::with_string(svg, (WIDTH, height)).into_drawing_area();
    root.fill(&WHITE).map_err(draw_error)?;
    let (header, rest) = root.split_vertically(HEADER_HEIGHT);
    let (chart_area, legend_area) = rest.split_vertically(CHART_HEIGHT);
    let center = (WIDTH / 2) as i32;
    let centered = Pos::new(HPos::Center, VPos::Center);
    let title_font =
        (FONT, TITLE_FONT_SIZE).into_font().style(FontStyle::Bold).color(&BLACK).pos(centered);
    header.draw(&Text::new(title, (center, 24), title_font)).map_err(draw_error)?;
    let subtitle_font = (FONT, TEXT_FONT_SIZE).into_font().color(&BLACK).pos(centered);
    header.draw(&Text::new(subtitle, (center, 50), subtitle_font)).map_err(draw_error)?;
    draw_legend(&legend_area, legend)?;
    Ok((root, chart_area))
}

fn chart_builder<'a, 'b>(area: &'a Area<'b>) -> ChartBuilder<'a, 'b, SVGBackend<'b>> {
    let mut builder = ChartBuilder::on(area);
    builder
        .margin(CHART_MARGIN)
        .margin_right(CHART_MARGIN_RIGHT)
        .x_label_area_size(X_LABEL_AREA)
        .y_label_area_size(Y_LABEL_AREA);
    builder
}

/// One legend row per entry: a sample of the line (or the marker), then its name.
fn draw_legend(area: &Area<'_>, entries: &[(&str, Mark)]) -> Result<(), String> {
    // Aligned with the left edge of the plotting area.
    let sample_left = (Y_LABEL_AREA + CHART_MARGIN) as i32;
    let sample_x = (sample_left, sample_left + LEGEND_SAMPLE_WIDTH);
    let font = (FONT, TEXT_FONT_SIZE).into_font().color(&BLACK);
    let font = font.pos(Pos::new(HPos::Left, VPos::Center));
    for (row, (name, mark)) in entries.iter().enumerate() {
        let y = (LEGEND_PADDING + LEGEND_ROW_HEIGHT * row as u32 + LEGEND_ROW_HEIGHT / 2) as i32;
        let sample = vec![(sample_x.0, y), (sample_x.1, y)];
        match *mark {
            Mark::Cross => {
                let middle = (sample_x.0 + sample_x.1) / 2;
                let style = BLACK.stroke_width(LINE_WIDTH);
                area.draw(&Cross::new((middle, y), MARKER_SIZE * 2, style))
            }
            Mark::Line(color, stroke) => {
                let style = palette(color).stroke_width(LINE_WIDTH);
                match stroke_pattern(stroke) {
                    None => area.draw(&PathElement::new(sample, style)),
                    Some((dash, gap)) => {
                        area.draw(&DashedPathElement::new(sample, dash, gap, style))
                    }
                }
            }
        }
        .map_err(draw_error)?;
        area.draw(&Text::new(name.to_string(), (sample_x.1 + 8, y), font.clone()))
            .map_err(draw_error)?;
    }
    Ok(())
}

/// A vertical grid line at each rate, and the rate below the axis. The labels sit outside the
/// plotting area, so they are drawn on `root` at the chart's pixel coordinates.
fn draw_rate_ticks(
    root: &Area<'_>,
    chart: &Chart<'_, '_, LogCoord<f64>>,
    rates: &[f64],
    (latency_bottom, latency_top): (f64, f64),
) -> Result<(), String> {
    let font = (FONT, TEXT_FONT_SIZE).into_font().color(&BLACK);
    let font = font.pos(Pos::new(HPos::Center, VPos::Top));
    for rate in rates {
        let grid = PathElement::new(vec![(*rate, latency_bottom), (*rate, latency_top)], GRID_BOLD);
        chart.plotting_area().draw(&grid).map_err(draw_error)?;
        let (x, y) = chart.backend_coord(&(*rate, latency_bottom));
        let at = (x, y + TICK_LABEL_GAP);
        root.draw(&Text::new(rate_label(*rate), at, font.clone())).map_err(draw_error)?;
    }
    Ok(())
}

fn draw_line<X>(
    chart: &mut Chart<'_, '_, X>,
    line: Vec<(f64, f64)>,
    color: usize,
    stroke: Stroke,
) -> Result<(), String>
where
    X: Ranged<ValueType = f64>,
{
    let style = palette(color).stroke_width(LINE_WIDTH);
    match stroke_pattern(stroke) {
        None => chart.draw_series(LineSeries::new(line, style)).map(|_| ()),
        Some((dash, gap)) => {
            chart.draw_series(DashedLineSeries::new(line, dash, gap, style)).map(|_| ())
        }
    }
    .map_err(draw_error)
}

fn stroke_pattern(stroke: Stroke) -> Option<(u32, u32)> {
    match stroke {
        Stroke::Solid => None,
        Stroke::Dashed => Some(DASHED),
        Stroke::Dotted => Some(DOTTED),
    }
}

fn palette(color: usize) -> RGBColor {
    PALETTE[color % PALETTE.len()]
}

fn draw_error(error: impl std::fmt::Display) -> String {
    format!("cannot draw the chart: {error}")
}

/// The decades (powers of ten, in us) that hold every positive value: at least one decade.
fn decades(values: impl Iterator<Item = f64>) -> (i32, i32) {
    let (mut min, mut max) = (f64::INFINITY, 0.0f64);
    for value in values.filter(|v| *v > 0.0 && v.is_finite()) {
        min = min.min(value);
        max = max.max(value);
    }
    if !min.is_finite() {
        return (0, 3);
    }
    let low = min.max(1.0).log10().floor() as i32;
    let high = (max.max(1.0).log10().ceil() as i32).max(low + 1);
    (low, high)
}

/// log10(1 / (1 - p)): 0 at 0 %, 1 at 90 %, 2 at 99 %, ...
fn nines_of(percentile: f64) -> f64 {
    let remaining = (1.0 - percentile / 100.0).max(1e-12);
    (1.0 / remaining).log10()
}

fn percentile_label(nines: i32) -> String {
    match nines {
        0 => "0%".to_string(),
        1 => "90%".to_string(),
        2 => "99%".to_string(),
        n => format!("99.{}%", "9".repeat((n - 2).max(0) as usize)),
    }
}

fn latency_label(decade: i32) -> String {
    match decade {
        0 => "1 us".to_string(),
        1 => "10 us".to_string(),
        2 => "100 us".to_string(),
        3 => "1 ms".to_string(),
        4 => "10 ms".to_string(),
        5 => "100 ms".to_string(),
        6 => "1 s".to_string(),
        d => format!("{} s", 10u64.pow((d - 6).max(0) as u32)),
    }
}

/// 500, 1k, 20k, 1.5M records/s.
fn rate_label(rate: f64) -> String {
    let (value, suffix) = if rate >= 1e6 {
        (rate / 1e6, "M")
    } else if rate >= 1e3 {
        (rate / 1e3, "k")
    } else {
        (rate, "")
    };
    let text = format!("{value:.1}");
    format!("{}{suffix}", text.strip_suffix(".0").unwrap_or(&text))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(svg: &str) -> Vec<String> {
        svg.split("<text")
            .skip(1)
            .filter_map(|rest| Some(rest.split_once('>')?.1.split_once("</text>")?.0.trim()))
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn labels() {
        assert_eq!(percentile_label(0), "0%");
        assert_eq!(percentile_label(1), "90%");
        assert_eq!(percentile_label(2), "99%");
        assert_eq!(percentile_label(4), "99.99%");
        assert_eq!(latency_label(3), "1 ms");
        assert_eq!(latency_label(8), "100 s");
        assert_eq!(rate_label(500.0), "500");
        assert_eq!(rate_label(20_000.0), "20k");
        assert_eq!(rate_label(1_500_000.0), "1.5M");
    }

    #[test]
    fn percentile_chart_has_labels_legend_and_escaped_names() {
        let series = vec![
            Series {
                name: "a <spate>: publish".to_string(),
                points: vec![[0.0, 100.0], [50.0, 200.0], [99.9, 5_000.0], [100.0, 9_000.0]],
                color: 0,
                stroke: Stroke::Solid,
            },
            Series {
                name: "kafka: end-to-end".to_string(),
                points: vec![[0.0, 300.0], [99.0, 900.0], [100.0, 1_000.0]],
                color: 1,
                stroke: Stroke::Dashed,
            },
        ];
        let svg = percentile_svg("title & more", "subtitle", &series).expect("draws");
        let texts = texts(&svg);
        for expected in [
            "title &amp; more",
            "subtitle",
            "a &lt;spate&gt;: publish",
            "kafka: end-to-end",
            "latency (log scale)",
            "99.9%",
            "1 ms",
            "100 us",
        ] {
            assert!(texts.iter().any(|t| t == expected), "no text {expected:?} in {texts:?}");
        }
        assert!(svg.matches("<polyline").count() >= 2);
        assert!(!svg.contains("NaN"));
        assert!(!svg.contains("inf"));
    }

    #[test]
    fn empty_charts_still_render() {
        for svg in [percentile_svg("nothing", "", &[]), rate_svg("nothing", "", &[])] {
            let svg = svg.expect("draws");
            assert!(svg.starts_with("<svg"));
            assert!(svg.trim_end().ends_with("</svg>"));
        }
    }

    #[test]
    fn rate_chart_marks_steps_that_did_not_keep_up() {
        let point = |rate, latency_ms, kept_up| RatePoint { rate, latency_ms, kept_up };
        let series = vec![RateSeries {
            name: "spate p99".to_string(),
            points: vec![point(1e3, 0.4, true), point(2e3, 0.5, true), point(5e3, 80.0, false)],
            color: 0,
            stroke: Stroke::Dashed,
        }];
        let svg = rate_svg("sweep", "workload", &series).expect("draws");
        let texts = texts(&svg);
        assert!(texts.iter().any(|t| t == "spate p99"));
        assert!(texts.iter().any(|t| t == COULD_NOT_KEEP_UP));
        assert!(texts.iter().any(|t| t == "1k"), "rate labels: {texts:?}");
        assert!(texts.iter().any(|t| t == "100 ms"));
        assert_eq!(svg.matches("<circle").count(), 2);
    }
}
