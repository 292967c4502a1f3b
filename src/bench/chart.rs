//! The cold-start chart: per language, sandlot's paths next to spawning the
//! native interpreter, median milliseconds on a log scale.

use std::path::Path;

use plotters::prelude::*;

use super::{BenchResult, Report};

const SERIES: [(&str, RGBColor); 4] = [
    ("sandlot library", RGBColor(31, 119, 180)),
    ("sandlot WebSocket EXEC", RGBColor(44, 160, 44)),
    ("sandlot POST /v1/exec", RGBColor(255, 127, 14)),
    ("native interpreter spawn", RGBColor(214, 39, 40)),
];

pub(super) fn cold_start(report: &Report, path: &Path) -> BenchResult<()> {
    let groups: Vec<(String, [f64; 4])> = report
        .languages
        .iter()
        .map(|l| {
            let baseline = l.baseline.as_ref().map_or(f64::NAN, |b| b.spawn.median_ms);
            (
                l.language.clone(),
                [l.cold_start.total.median_ms, l.websocket_exec.median_ms, l.rest_exec.median_ms, baseline],
            )
        })
        .collect();
    let finite = groups.iter().flat_map(|(_, v)| v.iter().copied()).filter(|v| v.is_finite() && *v > 0.0);
    let (low, high) = finite.fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (low, high) = if low <= high { (low / 2.0, high * 2.0) } else { (0.01, 1000.0) };

    let root = SVGBackend::new(path, (900, 520)).into_drawing_area();
    root.fill(&WHITE)?;
    let title =
        format!("Cold start, hello world: median ms (log scale), {} CPUs, {}", report.machine.cpus, report.date);
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
            let x0 = g as f64 + 0.1 + series as f64 * 0.2;
            Rectangle::new([(x0, low), (x0 + 0.18, v[series])], color.filled())
        });
        chart
            .draw_series(bars)?
            .label(*label)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
    }
    chart.configure_series_labels().background_style(WHITE.mix(0.9)).border_style(BLACK).draw()?;
    root.present()?;
    Ok(())
}
