//! SVG charts for `lb-compare report`, drawn with plotters' SVG backend (no fonts, no bitmaps: the
//! files are small text that diffs well and renders on GitHub).
//!
//! Four kinds, each a function that takes the report it draws and a path:
//! [`latency_percentiles`] (one line per algorithm over p50..p99.9, log scale), [`per_backend`]
//! (requests each backend received, one line per algorithm), [`supermarket`] (mean time in system
//! against load, simulated points over the theory curve, one colour per `d`) and [`cpu_per_request`]
//! (stacked user + system bars per balancer).

use std::path::Path;

use plotters::prelude::*;

use crate::balancers::TargetResult;
use crate::sim::AlgorithmReport;

/// Drawing failed (plotters' errors, as text: they are generic over the backend).
#[derive(Debug, thiserror::Error)]
#[error("chart {path}: {reason}")]
pub struct ChartError {
    /// The file.
    pub path: String,
    /// What plotters said.
    pub reason: String,
}

const SIZE: (u32, u32) = (760, 420);

fn err(path: &Path) -> impl Fn(&dyn std::fmt::Display) -> ChartError + '_ {
    move |e| ChartError { path: path.display().to_string(), reason: e.to_string() }
}

fn color(i: usize) -> RGBColor {
    // Colour-blind-safe (Okabe-Ito), then repeated.
    const C: [(u8, u8, u8); 8] = [
        (0, 114, 178),
        (213, 94, 0),
        (0, 158, 115),
        (204, 121, 167),
        (230, 159, 0),
        (86, 180, 233),
        (0, 0, 0),
        (240, 228, 66),
    ];
    let (r, g, b) = C[i % C.len()];
    RGBColor(r, g, b)
}

type Fail<'p> = dyn Fn(&dyn std::fmt::Display) -> ChartError + 'p;

/// One series in colour `i`: a line through `line` with its legend entry, and dots of `radius` at `dots`.
fn series<'a, CT>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, CT>,
    i: usize,
    label: String,
    line: Vec<(f64, f64)>,
    (dots, radius): (impl IntoIterator<Item = (f64, f64)>, i32),
    e: &Fail<'_>,
) -> Result<(), ChartError>
where
    CT: CoordTranslate<From = (f64, f64)>,
{
    let c = color(i);
    chart
        .draw_series(LineSeries::new(line, c.stroke_width(2)))
        .map_err(|x| e(&x))?
        .label(label)
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2)));
    chart.draw_series(dots.into_iter().map(|p| Circle::new(p, radius, c.filled()))).map_err(|x| e(&x))?;
    Ok(())
}

/// The legend box at `position`, then the file written.
fn finish<'a, CT>(
    mut chart: ChartContext<'a, SVGBackend<'a>, CT>,
    position: SeriesLabelPosition,
    e: &Fail<'_>,
) -> Result<(), ChartError>
where
    CT: CoordTranslate,
{
    chart
        .configure_series_labels()
        .position(position)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|x| e(&x))?;
    chart.plotting_area().present().map_err(|x| e(&x))
}

/// p50, p90, p99, p99.9 of each algorithm, milliseconds on a log scale.
pub fn latency_percentiles(path: &Path, title: &str, results: &[AlgorithmReport]) -> Result<(), ChartError> {
    let e = err(path);
    let labels = ["p50", "p90", "p99", "p99.9"];
    let values = |a: &AlgorithmReport| [a.p50_ms, a.p90_ms, a.p99_ms, a.p999_ms];
    let all: Vec<f64> = results.iter().flat_map(values).filter(|v| *v > 0.0).collect();
    let lo = all.iter().copied().fold(f64::INFINITY, f64::min).clamp(0.01, 1.0) * 0.8;
    let hi = all.iter().copied().fold(0.0, f64::max).max(lo * 10.0) * 1.3;
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(60)
        .build_cartesian_2d(-0.2f64..3.2f64, (lo..hi).log_scale())
        .map_err(|x| e(&x))?;
    chart
        .configure_mesh()
        .x_labels(4)
        .x_label_formatter(&|x| labels.get(x.round() as usize).map_or_else(String::new, |s| s.to_string()))
        .y_desc("latency, ms (log)")
        .draw()
        .map_err(|x| e(&x))?;
    for (i, a) in results.iter().enumerate() {
        let points: Vec<(f64, f64)> =
            values(a).iter().enumerate().map(|(x, &y)| (x as f64, y.max(lo))).collect();
        series(&mut chart, i, a.algorithm.clone(), points.clone(), (points, 3), &e)?;
    }
    finish(chart, SeriesLabelPosition::UpperLeft, &e)
}

/// Requests (attempts) each backend received, one line per algorithm.
pub fn per_backend(path: &Path, title: &str, results: &[AlgorithmReport]) -> Result<(), ChartError> {
    let e = err(path);
    let n = results.iter().map(|a| a.per_backend.len()).max().unwrap_or(1).max(1);
    let hi =
        results.iter().flat_map(|a| a.per_backend.iter().copied()).max().unwrap_or(1).max(1) as f64 * 1.15;
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(70)
        .build_cartesian_2d(-0.5f64..(n as f64 - 0.5), 0f64..hi)
        .map_err(|x| e(&x))?;
    chart
        .configure_mesh()
        .x_labels(n.min(20))
        .x_label_formatter(&|x| format!("{}", x.round() as i64))
        .x_desc("backend")
        .y_desc("requests")
        .draw()
        .map_err(|x| e(&x))?;
    for (i, a) in results.iter().enumerate() {
        let points: Vec<(f64, f64)> =
            a.per_backend.iter().enumerate().map(|(x, &y)| (x as f64, y as f64)).collect();
        series(&mut chart, i, a.algorithm.clone(), points.clone(), (points, 3), &e)?;
    }
    finish(chart, SeriesLabelPosition::LowerRight, &e)
}

/// One point of the supermarket chart.
#[derive(Debug, Clone, Copy)]
pub struct SojournPoint {
    /// Queues sampled per arrival.
    pub choices: usize,
    /// Load per server.
    pub lambda: f64,
    /// Simulated mean time in system.
    pub simulated: f64,
    /// The fixed point's mean time in system.
    pub theory: f64,
}

/// Mean time in system against load: theory as lines, simulation as dots, one colour per `d`.
pub fn supermarket(path: &Path, points: &[SojournPoint]) -> Result<(), ChartError> {
    let e = err(path);
    let hi = points.iter().map(|p| p.simulated.max(p.theory)).fold(1.0, f64::max) * 1.1;
    let lo_l = points.iter().map(|p| p.lambda).fold(1.0, f64::min) - 0.05;
    let hi_l = points.iter().map(|p| p.lambda).fold(0.0, f64::max) + 0.05;
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let mut chart = ChartBuilder::on(&root)
        .caption("Supermarket model: mean time in system vs load", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(60)
        .build_cartesian_2d(lo_l..hi_l, 0f64..hi)
        .map_err(|x| e(&x))?;
    chart
        .configure_mesh()
        .x_desc("load lambda")
        .y_desc("mean time in system (1 = service time)")
        .draw()
        .map_err(|x| e(&x))?;
    let mut ds: Vec<usize> = points.iter().map(|p| p.choices).collect();
    ds.sort_unstable();
    ds.dedup();
    for (i, d) in ds.iter().enumerate() {
        let mut mine: Vec<&SojournPoint> = points.iter().filter(|p| p.choices == *d).collect();
        mine.sort_by(|a, b| a.lambda.total_cmp(&b.lambda));
        let theory = mine.iter().map(|p| (p.lambda, p.theory)).collect();
        let simulated = mine.iter().map(|p| (p.lambda, p.simulated));
        let label = format!("d={d} theory (line), simulated (dots)");
        series(&mut chart, i, label, theory, (simulated, 4), &e)?;
    }
    finish(chart, SeriesLabelPosition::UpperLeft, &e)
}

/// User and system CPU microseconds per request, stacked, one bar per balancer.
pub fn cpu_per_request(path: &Path, results: &[TargetResult]) -> Result<(), ChartError> {
    let e = err(path);
    let rows: Vec<&TargetResult> = results.iter().filter(|r| r.name != "direct").collect();
    let n = rows.len().max(1);
    let hi =
        rows.iter().map(|r| r.user_us_per_req.median + r.sys_us_per_req.median).fold(1.0, f64::max) * 1.15;
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let mut chart = ChartBuilder::on(&root)
        .caption("CPU per request on one core (median): user, then system", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(60)
        .build_cartesian_2d(-0.5f64..(n as f64 - 0.5), 0f64..hi)
        .map_err(|x| e(&x))?;
    let names: Vec<String> = rows.iter().map(|r| r.name.clone()).collect();
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n)
        .x_label_formatter(&|x| names.get(x.round() as usize).cloned().unwrap_or_default())
        .y_desc("CPU microseconds per request")
        .draw()
        .map_err(|x| e(&x))?;
    let (user_c, sys_c) = (color(0), color(5));
    chart
        .draw_series(rows.iter().enumerate().map(|(i, r)| {
            let x = i as f64;
            Rectangle::new([(x - 0.3, 0.0), (x + 0.3, r.user_us_per_req.median)], user_c.filled())
        }))
        .map_err(|x| e(&x))?
        .label("user")
        .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], user_c.filled()));
    chart
        .draw_series(rows.iter().enumerate().map(|(i, r)| {
            let x = i as f64;
            let u = r.user_us_per_req.median;
            Rectangle::new([(x - 0.3, u), (x + 0.3, u + r.sys_us_per_req.median)], sys_c.filled())
        }))
        .map_err(|x| e(&x))?
        .label("system")
        .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], sys_c.filled()));
    finish(chart, SeriesLabelPosition::UpperRight, &e)
}
