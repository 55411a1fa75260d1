//! SVG charts of the fan-out reports: delivery latency and server CPU per
//! delivered event against the offered write rate, one line per server and
//! percentile, on logarithmic axes. Steps that were not sustained are drawn as
//! hollow markers.

use std::fmt::Write;
use std::path::Path;

use crate::report::Report;
use crate::scenario::fanout::StepResult;

const WIDTH: f64 = 760.0;
const PANEL_HEIGHT: f64 = 330.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 190.0;
const TOP: f64 = 50.0;
const BOTTOM: f64 = 50.0;

/// One line of a chart.
struct Series {
    label: String,
    color: &'static str,
    dashed: bool,
    /// (offered rate, value, sustained)
    points: Vec<(f64, f64, bool)>,
}

/// One chart with its own y axis.
struct Panel {
    title: String,
    y_label: &'static str,
    series: Vec<Series>,
}

/// Reads `fanout-nightjar[-<label>].json` and, when present,
/// `fanout-reference[-<label>].json` from `results`, and writes the SVG chart to
/// `output`.
pub fn write_fanout_chart(
    results: &Path,
    label: Option<&str>,
    output: &Path,
) -> Result<(), String> {
    let suffix = label.map(|label| format!("-{label}")).unwrap_or_default();
    let mut reports = Vec::new();
    for (target, color) in [("nightjar", "#1f6fb4"), ("reference", "#d9720b")] {
        let path = results.join(format!("fanout-{target}{suffix}.json"));
        if path.exists() {
            reports.push((Report::read(&path)?, color));
        }
    }
    if reports.is_empty() {
        return Err(format!(
            "{} holds no fanout-<target>{suffix}.json: run the fanout scenario first",
            results.display()
        ));
    }

    let mut latency = Panel {
        title: String::new(),
        y_label: "delivery latency (ms)",
        series: Vec::new(),
    };
    let mut cpu = Panel {
        title: "Server CPU per delivered event".to_string(),
        y_label: "CPU time per event (µs)",
        series: Vec::new(),
    };
    let mut subscribers = 0;
    for (report, color) in &reports {
        subscribers = report.parameters["subscribers"].as_u64().unwrap_or(0);
        let steps: Vec<StepResult> = serde_json::from_value(report.results["steps"].clone())
            .map_err(|err| format!("fanout-{} steps unreadable: {err}", report.target))?;
        let point = |step: &StepResult, value: f64| (step.rate, value, step.sustained);
        for (percentile, dashed) in [("p50", false), ("p99", true)] {
            latency.series.push(Series {
                label: format!("{} {percentile}", report.target),
                color,
                dashed,
                points: steps
                    .iter()
                    .map(|s| {
                        let value = if dashed {
                            s.deliveries.latency.p99_ms
                        } else {
                            s.deliveries.latency.p50_ms
                        };
                        point(s, value)
                    })
                    .collect(),
            });
        }
        cpu.series.push(Series {
            label: report.target.clone(),
            color,
            dashed: false,
            points: steps
                .iter()
                .map(|s| point(s, s.server_cpu_us_per_event))
                .collect(),
        });
    }
    latency.title = format!("Fan-out to {subscribers} subscribers: delivery latency");

    let svg = render(&[latency, cpu], &reports[0].0);
    std::fs::write(output, svg).map_err(|err| format!("cannot write {}: {err}", output.display()))
}

fn render(panels: &[Panel], first: &Report) -> String {
    let height = PANEL_HEIGHT * panels.len() as f64 + 30.0;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    for (index, panel) in panels.iter().enumerate() {
        draw_panel(&mut svg, panel, index as f64 * PANEL_HEIGHT);
    }
    let _ = writeln!(
        svg,
        r##"<text x="{LEFT}" y="{}" fill="#555">nightjar-bench, {} cores ({}), {}. Hollow markers: step not sustained.</text>"##,
        height - 10.0,
        first.machine.cores,
        escape(&first.machine.cpu_model),
        &first.date[..10.min(first.date.len())],
    );
    svg.push_str("</svg>\n");
    svg
}

fn draw_panel(svg: &mut String, panel: &Panel, offset: f64) {
    let points: Vec<(f64, f64)> = panel
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|(x, y, _)| (*x, *y)))
        .filter(|(x, y)| *x > 0.0 && *y > 0.0)
        .collect();
    if points.is_empty() {
        return;
    }
    let (x_min, x_max) = decade_bounds(points.iter().map(|p| p.0));
    let (y_min, y_max) = decade_bounds(points.iter().map(|p| p.1));
    let plot_width = WIDTH - LEFT - RIGHT;
    let plot_height = PANEL_HEIGHT - TOP - BOTTOM;
    let x_of = |x: f64| LEFT + (x.log10() - x_min) / (x_max - x_min) * plot_width;
    let y_of =
        |y: f64| offset + TOP + plot_height - (y.log10() - y_min) / (y_max - y_min) * plot_height;

    // 1. Title, frame and axis labels.
    let _ = writeln!(
        svg,
        r#"<text x="{LEFT}" y="{}" font-size="15" font-weight="bold">{}</text>"#,
        offset + 28.0,
        escape(&panel.title)
    );
    let _ = writeln!(
        svg,
        r##"<rect x="{LEFT}" y="{}" width="{plot_width}" height="{plot_height}" fill="none" stroke="#888"/>"##,
        offset + TOP
    );
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="middle">offered writes per second</text>"#,
        LEFT + plot_width / 2.0,
        offset + PANEL_HEIGHT - 12.0
    );
    let _ = writeln!(
        svg,
        r#"<text transform="translate(22 {}) rotate(-90)" text-anchor="middle">{}</text>"#,
        offset + TOP + plot_height / 2.0,
        escape(panel.y_label)
    );

    // 2. Grid lines at every power of ten, and 2x and 5x between them on x.
    for decade in (x_min as i32)..=(x_max as i32) {
        for factor in [1.0, 2.0, 5.0] {
            let value = factor * 10f64.powi(decade);
            if value.log10() < x_min - 1e-9 || value.log10() > x_max + 1e-9 {
                continue;
            }
            let x = x_of(value);
            let _ = writeln!(
                svg,
                r##"<line x1="{x:.1}" y1="{}" x2="{x:.1}" y2="{}" stroke="#e4e4e4"/><text x="{x:.1}" y="{}" text-anchor="middle">{}</text>"##,
                offset + TOP,
                offset + TOP + plot_height,
                offset + TOP + plot_height + 16.0,
                tick_label(value)
            );
        }
    }
    for decade in (y_min as i32)..=(y_max as i32) {
        let value = 10f64.powi(decade);
        let y = y_of(value);
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#e4e4e4"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            LEFT + plot_width,
            LEFT - 6.0,
            y + 4.0,
            tick_label(value)
        );
    }

    // 3. The series and the legend.
    for (index, series) in panel.series.iter().enumerate() {
        let path: Vec<String> = series
            .points
            .iter()
            .filter(|(x, y, _)| *x > 0.0 && *y > 0.0)
            .map(|(x, y, _)| format!("{:.1},{:.1}", x_of(*x), y_of(*y)))
            .collect();
        let dash = if series.dashed {
            r#" stroke-dasharray="6 4""#
        } else {
            ""
        };
        let _ = writeln!(
            svg,
            r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="2"{dash}/>"#,
            path.join(" "),
            series.color
        );
        for (x, y, sustained) in series
            .points
            .iter()
            .filter(|(x, y, _)| *x > 0.0 && *y > 0.0)
        {
            let fill = if *sustained { series.color } else { "white" };
            let _ = writeln!(
                svg,
                r#"<circle cx="{:.1}" cy="{:.1}" r="4" fill="{fill}" stroke="{}" stroke-width="1.5"/>"#,
                x_of(*x),
                y_of(*y),
                series.color
            );
        }
        let legend_y = offset + TOP + 10.0 + index as f64 * 20.0;
        let legend_x = LEFT + plot_width + 20.0;
        let _ = writeln!(
            svg,
            r#"<line x1="{legend_x}" y1="{legend_y}" x2="{}" y2="{legend_y}" stroke="{}" stroke-width="2"{dash}/><text x="{}" y="{}">{}</text>"#,
            legend_x + 28.0,
            series.color,
            legend_x + 36.0,
            legend_y + 4.0,
            escape(&series.label)
        );
    }
}

/// Returns the powers of ten (as exponents) just below the smallest and just
/// above the largest value.
fn decade_bounds(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (low, high) = values.fold((f64::MAX, f64::MIN), |(low, high), v| {
        (low.min(v), high.max(v))
    });
    let low = low.log10().floor();
    let high = high.log10().ceil().max(low + 1.0);
    (low, high)
}

fn tick_label(value: f64) -> String {
    if value >= 1.0 {
        format!("{value:.0}")
    } else {
        let text = format!("{value:.3}");
        text.trim_end_matches('0').to_string()
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_cover_values() {
        assert_eq!(decade_bounds([50.0, 1000.0].into_iter()), (1.0, 3.0));
        assert_eq!(decade_bounds([0.4, 3.0].into_iter()), (-1.0, 1.0));
    }

    #[test]
    fn labels_drop_trailing_zeros() {
        assert_eq!(tick_label(0.1), "0.1");
        assert_eq!(tick_label(200.0), "200");
    }
}
