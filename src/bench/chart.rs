//! The cold-start chart: per language (python-sci too), sandlot's paths next
//! to spawning the native interpreter, median milliseconds on a log scale.

use std::path::Path;

use plotters::prelude::*;

use super::{BenchResult, Report};

const SERIES: [(&str, RGBColor); 5] = [
    ("sandlot library (warm instance)", RGBColor(31, 119, 180)),
    ("sandlot WebSocket EXEC (warm instance)", RGBColor(44, 160, 44)),
    ("sandlot WebSocket EXEC (none ready: cold)", RGBColor(152, 223, 138)),
    ("sandlot POST /v1/exec (warm instance)", RGBColor(255, 127, 14)),
    ("native interpreter spawn", RGBColor(214, 39, 40)),
];
const BAR: f64 = 0.8 / SERIES.len() as f64;

pub(super) fn cold_start(report: &Report, path: &Path) -> BenchResult<()> {
    let mut groups: Vec<(String, [f64; 5])> = report
        .languages
        .iter()
        .map(|l| {
            let baseline = l.baseline.as_ref().map_or(f64::NAN, |b| b.spawn.median_ms);
            let paths =
                [&l.warm_start.total, &l.websocket_exec, &l.websocket_exec_cold, &l.rest_exec].map(|s| s.median_ms);
            (l.language.clone(), [paths[0], paths[1], paths[2], paths[3], baseline])
        })
        .collect();
    // python-sci: EXEC → first output with pandas and scikit-learn imported.
    let sci = [report.python_sci_first_output.median_ms, report.python_sci_first_output_cold.median_ms];
    groups.push(("python-sci (first output)".into(), [f64::NAN, sci[0], sci[1], f64::NAN, f64::NAN]));
    let finite = groups.iter().flat_map(|(_, v)| v.iter().copied()).filter(|v| v.is_finite() && *v > 0.0);
    let (low, high) = finite.fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (low, high) = if low <= high { (low / 2.0, high) } else { (0.01, 1000.0) };
    // The tallest bar ends at 70% of the height: the legend, drawn in the
    // top right corner, takes less than a quarter of it and hides no bar.
    let high = low * (high / low).powf(1.0 / 0.7);

    let root = SVGBackend::new(path, (900, 520)).into_drawing_area();
    root.fill(&WHITE)?;
    let title =
        format!("A session's hello world: median ms (log scale), {} CPUs, {}", report.machine.cpus, report.date);
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(20)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..groups.len() as f64, (low..high).log_scale())?;
    let names: Vec<String> = groups.iter().map(|(n, _)| n.clone()).collect();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(groups.len() * 2 + 1)
        .x_label_formatter(&|x| {
            let i = x.floor() as usize;
            if (x - x.floor() - 0.5).abs() < 0.01 { names.get(i).cloned().unwrap_or_default() } else { String::new() }
        })
        .y_desc("milliseconds")
        .draw()?;
    for (series, (label, color)) in SERIES.iter().enumerate() {
        let bars = groups.iter().enumerate().filter(|(_, (_, v))| v[series].is_finite()).map(|(g, (_, v))| {
            let x0 = g as f64 + 0.1 + series as f64 * BAR;
            Rectangle::new([(x0, low), (x0 + BAR * 0.9, v[series])], color.filled())
        });
        chart
            .draw_series(bars)?
            .label(*label)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
