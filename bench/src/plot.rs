//! A self-contained SVG plot of latency by percentile, in the style of HdrHistogram's plotter:
//! the x axis stretches the tail (90%, 99%, 99.9%, ... are equally spaced), both axes are
//! logarithmic, and every series is one line with a legend entry.

use std::fmt::Write as _;

const WIDTH: f64 = 960.0;
const HEIGHT: f64 = 600.0;
const MARGIN_LEFT: f64 = 90.0;
const MARGIN_RIGHT: f64 = 30.0;
const MARGIN_TOP: f64 = 70.0;
const MARGIN_BOTTOM: f64 = 70.0;
/// The x axis ends at 99.9999 % at most: beyond that, a run of realistic length has no samples.
const NINES_MAX: i32 = 6;
/// The x axis shows at least 90 % .. 99.9 % so short runs still read as a percentile plot.
const NINES_MIN: i32 = 3;
const PALETTE: [&str; 8] =
    ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"];
const LEGEND_ROW_HEIGHT: f64 = 18.0;
/// Room for the line sample left of a legend entry's name.
const LEGEND_SAMPLE_WIDTH: f64 = 52.0;
/// A generous average glyph width at font size 12, so that names fit inside the legend box.
const LEGEND_CHAR_WIDTH: f64 = 7.0;

/// How a series is stroked: publish latency solid, end-to-end dashed, uncorrected dotted.
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

    fn dasharray(&self) -> &'static str {
        match self {
            Stroke::Solid => "none",
            Stroke::Dashed => "9 5",
            Stroke::Dotted => "2 4",
        }
    }
}

pub struct Series {
    pub name: String,
    /// (percentile 0..100, latency us), ascending in percentile.
    pub points: Vec<[f64; 2]>,
    pub color: usize,
    pub stroke: Stroke,
}

/// Renders the plot; `subtitle` is a one-line description of the workload.
pub fn svg(title: &str, subtitle: &str, series: &[Series]) -> String {
    let points = || series.iter().flat_map(|s| s.points.iter());
    // The finite x extent comes from the highest percentile below 100.
    let top_percentile = points().map(|p| p[0]).filter(|p| *p < 100.0).fold(0.0, f64::max);
    let nines = (nines_of(top_percentile).ceil() as i32).clamp(NINES_MIN, NINES_MAX);
    let latency_min = points().map(|p| p[1]).filter(|v| *v > 0.0).fold(f64::INFINITY, f64::min);
    let latency_max = points().map(|p| p[1]).fold(0.0, f64::max);
    let (decade_low, decade_high) = if latency_min.is_finite() && latency_max > 0.0 {
        let low = latency_min.max(1.0).log10().floor() as i32;
        let high = (latency_max.max(1.0).log10().ceil() as i32).max(low + 1);
        (low, high)
    } else {
        (0, 3)
    };
    let plot_width = WIDTH - MARGIN_LEFT - MARGIN_RIGHT;
    let plot_height = HEIGHT - MARGIN_TOP - MARGIN_BOTTOM;
    let x_of = |percentile: f64| {
        let nines_here = if percentile >= 100.0 { f64::from(nines) } else { nines_of(percentile) };
        MARGIN_LEFT + plot_width * nines_here.min(f64::from(nines)) / f64::from(nines)
    };
    let y_of = |latency_us: f64| {
        let decade = latency_us.max(1.0).log10();
        let span = f64::from(decade_high - decade_low);
        MARGIN_TOP + plot_height * (1.0 - (decade - f64::from(decade_low)) / span)
    };

    // The legend sits below the plot, growing the picture, so it never hides a curve.
    let legend_height = LEGEND_ROW_HEIGHT * series.len() as f64 + 8.0;
    let total_height = HEIGHT + legend_height + 10.0;
    let mut out = String::new();
    let mut svg = Svg { out: &mut out };
    svg.open(
        "svg",
        &[
            ("xmlns", "http://www.w3.org/2000/svg".to_string()),
            ("width", WIDTH.to_string()),
            ("height", total_height.to_string()),
            ("viewBox", format!("0 0 {WIDTH} {total_height}")),
            ("font-family", "sans-serif".to_string()),
            ("font-size", "12".to_string()),
        ],
    );
    svg.text_element("title", &[], title);
    svg.empty(
        "rect",
        &[("width", WIDTH.to_string()), ("height", total_height.to_string()), fill("white")],
    );
    let center = (WIDTH / 2.0).to_string();
    svg.text_element(
        "text",
        &[
            ("x", center.clone()),
            ("y", "28".to_string()),
            ("text-anchor", "middle".to_string()),
            ("font-size", "18".to_string()),
            ("font-weight", "bold".to_string()),
        ],
        title,
    );
    svg.text_element(
        "text",
        &[("x", center), ("y", "48".to_string()), ("text-anchor", "middle".to_string())],
        subtitle,
    );

    // Grid: a vertical line per nine, horizontal lines at 1, 2 and 5 of each decade.
    let right = MARGIN_LEFT + plot_width;
    let bottom = MARGIN_TOP + plot_height;
    svg.open("g", &[("class", "grid".to_string()), ("stroke-width", "1".to_string())]);
    for nine in 0..=nines {
        let x = MARGIN_LEFT + plot_width * f64::from(nine) / f64::from(nines);
        svg.line((x, MARGIN_TOP), (x, bottom), "#ddd", None);
    }
    for decade in decade_low..=decade_high {
        for step in [1.0, 2.0, 5.0] {
            if decade == decade_high && step > 1.0 {
                continue;
            }
            let y = y_of(step * 10f64.powi(decade));
            let shade = if step == 1.0 { "#bbb" } else { "#eee" };
            svg.line((MARGIN_LEFT, y), (right, y), shade, None);
        }
    }
    svg.close("g");
    svg.open("g", &[("class", "ticks".to_string()), fill("#222")]);
    for nine in 0..=nines {
        let x = MARGIN_LEFT + plot_width * f64::from(nine) / f64::from(nines);
        svg.label(x, bottom + 18.0, "middle", &percentile_label(nine));
    }
    for decade in decade_low..=decade_high {
        let y = y_of(10f64.powi(decade));
        svg.label(MARGIN_LEFT - 8.0, y + 4.0, "end", &latency_label(decade));
    }
    svg.close("g");
    svg.empty(
        "rect",
        &[
            ("x", MARGIN_LEFT.to_string()),
            ("y", MARGIN_TOP.to_string()),
            ("width", plot_width.to_string()),
            ("height", plot_height.to_string()),
            fill("none"),
            ("stroke", "#444".to_string()),
        ],
    );
    svg.label(
        MARGIN_LEFT + plot_width / 2.0,
        HEIGHT - 22.0,
        "middle",
        "percentile (tail stretched: 1/(1-p) on a log scale)",
    );
    svg.text_element(
        "text",
        &[
            (
                "transform",
                format!("translate(22 {:.1}) rotate(-90)", MARGIN_TOP + plot_height / 2.0),
            ),
            ("text-anchor", "middle".to_string()),
        ],
        "latency (log scale)",
    );

    // One polyline per series; the <title> child shows the name on hover.
    for s in series {
        let mut path = String::new();
        for point in &s.points {
            let _ = write!(path, "{:.1},{:.1} ", x_of(point[0]), y_of(point[1]));
        }
        svg.open(
            "polyline",
            &[
                ("class", "series".to_string()),
                ("data-series", s.name.clone()),
                fill("none"),
                ("stroke", PALETTE[s.color % PALETTE.len()].to_string()),
                ("stroke-width", "2".to_string()),
                ("stroke-dasharray", s.stroke.dasharray().to_string()),
                ("points", path.trim_end().to_string()),
            ],
        );
        svg.text_element("title", &[], &s.name);
        svg.close("polyline");
    }

    let longest_name = series.iter().map(|s| s.name.chars().count()).max().unwrap_or(0);
    let legend_width = LEGEND_SAMPLE_WIDTH + LEGEND_CHAR_WIDTH * longest_name as f64;
    let (legend_x, legend_y) = (MARGIN_LEFT, HEIGHT);
    svg.open("g", &[("class", "legend".to_string())]);
    svg.empty(
        "rect",
        &[
            ("x", legend_x.to_string()),
            ("y", legend_y.to_string()),
            ("width", format!("{legend_width:.1}")),
            ("height", format!("{legend_height:.1}")),
            fill("white"),
            ("fill-opacity", "0.85".to_string()),
            ("stroke", "#999".to_string()),
        ],
    );
    for (row, s) in series.iter().enumerate() {
        let y = legend_y + 4.0 + LEGEND_ROW_HEIGHT * (row as f64 + 0.5);
        let color = PALETTE[s.color % PALETTE.len()];
        svg.line((legend_x + 8.0, y), (legend_x + 36.0, y), color, Some(s.stroke));
        svg.label(legend_x + 42.0, y + 4.0, "start", &s.name);
    }
    svg.close("g");
    svg.close("svg");
    out
}

fn fill(color: &str) -> (&'static str, String) {
    ("fill", color.to_string())
}

/// Writes SVG elements one per line, escaping every attribute value and text.
struct Svg<'a> {
    out: &'a mut String,
}

impl Svg<'_> {
    fn start_tag(&mut self, name: &str, attributes: &[(&str, String)]) {
        let _ = write!(self.out, "<{name}");
        for (key, value) in attributes {
            let _ = write!(self.out, r#" {key}="{}""#, escape(value));
        }
    }

    fn open(&mut self, name: &str, attributes: &[(&str, String)]) {
        self.start_tag(name, attributes);
        self.out.push_str(">\n");
    }

    fn close(&mut self, name: &str) {
        let _ = writeln!(self.out, "</{name}>");
    }

    fn empty(&mut self, name: &str, attributes: &[(&str, String)]) {
        self.start_tag(name, attributes);
        self.out.push_str("/>\n");
    }

    fn text_element(&mut self, name: &str, attributes: &[(&str, String)], text: &str) {
        self.start_tag(name, attributes);
        let _ = writeln!(self.out, ">{}</{name}>", escape(text));
    }

    fn label(&mut self, x: f64, y: f64, anchor: &str, text: &str) {
        let attributes = [
            ("x", format!("{x:.1}")),
            ("y", format!("{y:.1}")),
            ("text-anchor", anchor.to_string()),
        ];
        self.text_element("text", &attributes, text);
    }

    fn line(&mut self, from: (f64, f64), to: (f64, f64), color: &str, stroke: Option<Stroke>) {
        let mut attributes = vec![
            ("x1", format!("{:.1}", from.0)),
            ("y1", format!("{:.1}", from.1)),
            ("x2", format!("{:.1}", to.0)),
            ("y2", format!("{:.1}", to.1)),
            ("stroke", color.to_string()),
        ];
        if let Some(stroke) = stroke {
            attributes.push(("stroke-width", "2".to_string()));
            attributes.push(("stroke-dasharray", stroke.dasharray().to_string()));
        }
        self.empty("line", &attributes);
    }
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
        n => format!("99.{}%", "9".repeat((n - 2) as usize)),
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

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert_eq!(percentile_label(0), "0%");
        assert_eq!(percentile_label(1), "90%");
        assert_eq!(percentile_label(2), "99%");
        assert_eq!(percentile_label(4), "99.99%");
        assert_eq!(latency_label(3), "1 ms");
        assert_eq!(latency_label(8), "100 s");
    }

    #[test]
    fn plot_has_one_line_per_series_and_escapes_names() {
        let series = vec![
            Series {
                name: "a <spate>: publish".to_string(),
                points: vec![[0.0, 100.0], [50.0, 200.0], [99.9, 5_000.0], [100.0, 9_000.0]],
                color: 0,
                stroke: Stroke::Solid,
            },
            Series {
                name: "kafka: end_to_end".to_string(),
                points: vec![[0.0, 300.0], [99.0, 900.0], [100.0, 1_000.0]],
                color: 1,
                stroke: Stroke::Dashed,
            },
        ];
        let text = svg("title & more", "subtitle", &series);
        assert_eq!(text.matches("<polyline").count(), 2);
        assert!(text.contains("a &lt;spate&gt;: publish"));
        assert!(text.contains("title &amp; more"));
        assert!(!text.contains("NaN"));
        assert!(!text.contains("inf"));
    }

    #[test]
    fn empty_plot_still_renders() {
        let text = svg("nothing", "", &[]);
        assert!(text.starts_with("<svg"));
        assert!(text.trim_end().ends_with("</svg>"));
    }
}
