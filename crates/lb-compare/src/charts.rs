//! SVG charts for `lb-compare report`, drawn with plotters' SVG backend (no fonts, no bitmaps: the
//! files are small text that diffs well and renders on GitHub).
//!
//! Four kinds, each a function that takes the report it draws and a path:
//! [`latency_percentiles`] (one marker per algorithm at p50, p90, p99, p99.9, log scale),
//! [`per_backend`] (requests each backend received: a dot plot, backends are categories, so no line
//! joins them), [`supermarket`] (mean time in system against load: the theory curve sampled densely,
//! simulated points on it, one colour per `d`), [`stale`] (mean time in system against the age of
//! the load information, one line per strategy) and [`cpu_per_request`] (stacked user + system bars per
//! balancer).
//!
//! Every algorithm has one colour and one marker of its own ([`algorithm_style`]), the same in every
//! chart, grouped by family: blues and filled markers for the algorithms blind to load, warm colours and
//! hollow markers for the load-aware ones, greens and purple with diamonds and crosses for hashing. The
//! legend sits in a panel right of the plot, never on the data.

use std::path::Path;

use plotters::coord::Shift;
use plotters::element::{ComposedElement, EmptyElement};
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

/// The whole picture; the legend panel takes [`LEGEND_WIDTH`] of it on the right.
const SIZE: (u32, u32) = (900, 440);
const LEGEND_WIDTH: u32 = 210;

fn err(path: &Path) -> impl Fn(&dyn std::fmt::Display) -> ChartError + '_ {
    move |e| ChartError { path: path.display().to_string(), reason: e.to_string() }
}

type Fail<'p> = dyn Fn(&dyn std::fmt::Display) -> ChartError + 'p;

/// The shape drawn at a data point. Ten, so that no two algorithms share one: a reader who cannot tell
/// two colours apart (or prints in grey) can still tell the series apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Marker {
    /// Filled circle.
    Circle,
    /// Filled square.
    Square,
    /// Filled triangle, point up.
    Triangle,
    /// Open circle.
    OpenCircle,
    /// Open square.
    OpenSquare,
    /// Open triangle, point up.
    OpenTriangle,
    /// Filled diamond.
    Diamond,
    /// Filled triangle, point down.
    TriangleDown,
    /// An x.
    Cross,
    /// A +.
    Plus,
}

/// Families of algorithms, which the legend groups and the colours follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// Decide without looking at load: round robin, weighted round robin, random.
    Blind,
    /// Read in-flight counts or latency: least connections, power of two, peak EWMA.
    LoadAware,
    /// Pick by the request's key: ring hash, Maglev, bounded load, rendezvous.
    Hashing,
}

impl Family {
    fn heading(self) -> &'static str {
        match self {
            Family::Blind => "blind to load",
            Family::LoadAware => "load-aware",
            Family::Hashing => "hashing",
        }
    }
}

/// How one series is drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Style {
    /// Line and marker colour.
    pub color: RGBColor,
    /// Marker.
    pub marker: Marker,
    /// Family, for the legend's grouping (`None` for a series that is not an algorithm).
    pub family: Option<Family>,
}

/// The style of each algorithm, by the name `lb-algorithms` gives it. Blues for the blind family,
/// red-orange-brown for the load-aware one, greens, teal and purple for hashing; within a family the
/// colours differ in lightness as well as hue, so they stay apart for most colour-blind readers too.
pub fn algorithm_style(name: &str) -> Option<Style> {
    use Family::*;
    use Marker::*;
    let (rgb, marker, family) = match name {
        "round-robin" => ((31, 78, 156), Circle, Blind),
        "weighted-round-robin" => ((86, 170, 230), Square, Blind),
        "random" => ((120, 120, 120), Triangle, Blind),
        "least-connections" => ((200, 30, 30), OpenCircle, LoadAware),
        "power-of-two" => ((240, 140, 0), OpenSquare, LoadAware),
        "peak-ewma" => ((140, 70, 20), OpenTriangle, LoadAware),
        "ring-hash" => ((27, 120, 55), Diamond, Hashing),
        "maglev" => ((127, 188, 65), TriangleDown, Hashing),
        "bounded-load" => ((40, 160, 150), Cross, Hashing),
        "rendezvous" => ((118, 42, 131), Plus, Hashing),
        _ => return None,
    };
    Some(Style { color: RGBColor(rgb.0, rgb.1, rgb.2), marker, family: Some(family) })
}

/// The style of series `i` that is not an algorithm (a `d` of the supermarket model, a balancer).
fn plain_style(i: usize) -> Style {
    // Okabe-Ito, colour-blind-safe.
    const C: [(u8, u8, u8); 6] =
        [(0, 114, 178), (213, 94, 0), (0, 158, 115), (204, 121, 167), (230, 159, 0), (86, 180, 233)];
    const M: [Marker; 6] = [
        Marker::Circle,
        Marker::Square,
        Marker::Triangle,
        Marker::Diamond,
        Marker::TriangleDown,
        Marker::Cross,
    ];
    let (r, g, b) = C[i % C.len()];
    Style { color: RGBColor(r, g, b), marker: M[i % M.len()], family: None }
}

/// Style of result `i` of a list of algorithm results: its own, else a plain one.
fn style_of(name: &str, i: usize) -> Style {
    algorithm_style(name).unwrap_or_else(|| plain_style(i))
}

/// A marker: its fill and its outline, in pixels around a point of coordinate type `C`.
type MarkerElement<C, DB> = ComposedElement<C, DB, Polygon<(i32, i32)>, PathElement<(i32, i32)>>;

/// A drawing area in pixels.
type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

/// A marker of `size` pixels' half-width at `at`: a polygon (the fill) and its outline, in pixels around
/// the point, so that every shape is the same element type.
fn marker<C, DB: DrawingBackend>(at: C, m: Marker, color: RGBColor, size: i32) -> MarkerElement<C, DB> {
    let s = size;
    let circle = || -> Vec<(i32, i32)> {
        (0..16)
            .map(|k| {
                let a = k as f64 * std::f64::consts::TAU / 16.0;
                ((a.cos() * s as f64).round() as i32, (a.sin() * s as f64).round() as i32)
            })
            .collect()
    };
    let square = vec![(-s + 1, -s + 1), (s - 1, -s + 1), (s - 1, s - 1), (-s + 1, s - 1)];
    let triangle = vec![(0, -s - 1), (s + 1, s - 1), (-s - 1, s - 1)];
    let (outline, filled): (Vec<(i32, i32)>, Option<bool>) = match m {
        Marker::Circle => (circle(), Some(true)),
        Marker::Square => (square, Some(true)),
        Marker::Triangle => (triangle, Some(true)),
        Marker::OpenCircle => (circle(), Some(false)),
        Marker::OpenSquare => (square, Some(false)),
        Marker::OpenTriangle => (triangle, Some(false)),
        Marker::Diamond => (vec![(0, -s - 1), (s + 1, 0), (0, s + 1), (-s - 1, 0)], Some(true)),
        Marker::TriangleDown => (vec![(0, s + 1), (s + 1, -s + 1), (-s - 1, -s + 1)], Some(true)),
        // Strokes only: the path doubles back through the centre to draw both bars in one element.
        Marker::Cross => (vec![(-s, -s), (s, s), (0, 0), (s, -s), (-s, s)], None),
        Marker::Plus => (vec![(-s - 1, 0), (s + 1, 0), (0, 0), (0, -s - 1), (0, s + 1)], None),
    };
    let fill: ShapeStyle = match filled {
        Some(true) => color.filled(),
        Some(false) => WHITE.filled(),
        None => TRANSPARENT.filled(),
    };
    let mut path = outline.clone();
    if filled.is_some() {
        path.push(outline[0]);
    }
    EmptyElement::at(at) + Polygon::new(outline, fill) + PathElement::new(path, color.stroke_width(2))
}

/// What a legend row shows left of its label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Swatch {
    /// Nothing: the label is a heading, in bold.
    Heading,
    /// The series' marker.
    Marker,
    /// A line through the series' marker.
    LineMarker,
    /// A filled box.
    Bar,
    /// A dashed grey line (a reference, not a series).
    Dashed,
}

/// One legend row.
struct Entry {
    label: String,
    style: Style,
    swatch: Swatch,
}

impl Entry {
    fn new(label: &str, style: Style, swatch: Swatch) -> Self {
        Entry { label: label.to_string(), style, swatch }
    }

    fn heading(label: &str) -> Self {
        Entry::new(label, plain_style(0), Swatch::Heading)
    }
}

/// The title across the top, then the plot area on the left and the legend panel on the right.
fn frame<'a>(path: &'a Path, title: &str, e: &Fail<'_>) -> Result<(Area<'a>, Area<'a>), ChartError> {
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let root = root.titled(title, ("sans-serif", 18)).map_err(|x| e(&x))?;
    Ok(root.split_horizontally(SIZE.0 - LEGEND_WIDTH))
}

/// The legend panel: one row per entry, headings in bold.
fn legend(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    entries: &[Entry],
    e: &Fail<'_>,
) -> Result<(), ChartError> {
    let text = ("sans-serif", 13).into_font();
    let bold = ("sans-serif", 13).into_font().style(FontStyle::Bold);
    for (row, entry) in entries.iter().enumerate() {
        let y = 24 + 19 * row as i32;
        let (x, c) = (14, entry.style.color);
        let label = (x + 34, y - 7);
        match entry.swatch {
            Swatch::Heading => {
                area.draw(&Text::new(entry.label.clone(), (x - 6, y - 7), bold.clone()))
                    .map_err(|x| e(&x))?;
                continue;
            }
            Swatch::Marker => area.draw(&marker((x + 13, y), entry.style.marker, c, 4)),
            Swatch::LineMarker => area
                .draw(&PathElement::new(vec![(x, y), (x + 26, y)], c.stroke_width(2)))
                .and_then(|()| area.draw(&marker((x + 13, y), entry.style.marker, c, 4))),
            Swatch::Bar => area.draw(&Rectangle::new([(x + 4, y - 6), (x + 22, y + 6)], c.filled())),
            Swatch::Dashed => [(0, 6), (10, 16), (20, 26)].into_iter().try_for_each(|(a, b)| {
                area.draw(&PathElement::new(vec![(x + a, y), (x + b, y)], BLACK.mix(0.45).stroke_width(1)))
            }),
        }
        .map_err(|x| e(&x))?;
        area.draw(&Text::new(entry.label.clone(), label, text.clone())).map_err(|x| e(&x))?;
    }
    Ok(())
}

/// Legend entries for a list of algorithm results, under a heading per family, in the order given.
fn algorithm_entries(results: &[AlgorithmReport]) -> Vec<Entry> {
    let mut entries = Vec::new();
    let mut last: Option<Option<Family>> = None;
    for (i, a) in results.iter().enumerate() {
        let style = style_of(&a.algorithm, i);
        if last != Some(style.family) {
            if let Some(f) = style.family {
                entries.push(Entry::heading(f.heading()));
            }
            last = Some(style.family);
        }
        entries.push(Entry::new(&a.algorithm, style, Swatch::Marker));
    }
    entries
}

/// Where algorithm `k` of `m` sits inside its category, so that equal values do not hide each other.
fn dodge(k: usize, m: usize, width: f64) -> f64 {
    if m <= 1 { 0.0 } else { (k as f64 - (m as f64 - 1.0) / 2.0) * width / m as f64 }
}

/// Thin grey lines between categories (backends, percentiles), at `x = i + 0.5`.
fn separators<'a, CT>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, CT>,
    n: usize,
    lo: f64,
    hi: f64,
    e: &Fail<'_>,
) -> Result<(), ChartError>
where
    CT: CoordTranslate<From = (f64, f64)>,
{
    let grey = RGBColor(210, 210, 210);
    chart
        .draw_series((0..n.saturating_sub(1)).map(|i| {
            let x = i as f64 + 0.5;
            PathElement::new(vec![(x, lo), (x, hi)], grey.stroke_width(1))
        }))
        .map_err(|x| e(&x))?;
    Ok(())
}

/// p50, p90, p99, p99.9 of each algorithm, milliseconds on a log scale: one column per percentile, the
/// algorithms side by side in it, a thin line joining each algorithm's four.
pub fn latency_percentiles(path: &Path, title: &str, results: &[AlgorithmReport]) -> Result<(), ChartError> {
    let e = err(path);
    let labels = ["p50", "p90", "p99", "p99.9"];
    let values = |a: &AlgorithmReport| [a.p50_ms, a.p90_ms, a.p99_ms, a.p999_ms];
    let all: Vec<f64> = results.iter().flat_map(values).filter(|v| *v > 0.0).collect();
    let lo = all.iter().copied().fold(f64::INFINITY, f64::min).clamp(0.01, 1.0) * 0.8;
    let hi = all.iter().copied().fold(0.0, f64::max).max(lo * 10.0) * 1.3;
    let (plot, side) = frame(path, title, &e)?;
    let mut chart = ChartBuilder::on(&plot)
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(60)
        .build_cartesian_2d(-0.5f64..3.5f64, (lo..hi).log_scale())
        .map_err(|x| e(&x))?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(4)
        .x_label_formatter(&|x| labels.get(x.round() as usize).map_or_else(String::new, |s| s.to_string()))
        .x_desc("percentile")
        .y_desc("latency, ms (log)")
        .draw()
        .map_err(|x| e(&x))?;
    separators(&mut chart, labels.len(), lo, hi, &e)?;
    let m = results.len();
    for (k, a) in results.iter().enumerate() {
        let style = style_of(&a.algorithm, k);
        let off = dodge(k, m, 0.8);
        let points: Vec<(f64, f64)> =
            values(a).iter().enumerate().map(|(x, &y)| (x as f64 + off, y.max(lo))).collect();
        chart
            .draw_series(LineSeries::new(points.clone(), style.color.mix(0.5).stroke_width(1)))
            .map_err(|x| e(&x))?;
        chart
            .draw_series(points.into_iter().map(|p| marker(p, style.marker, style.color, 4)))
            .map_err(|x| e(&x))?;
    }
    legend(&side, &algorithm_entries(results), &e)?;
    plot.present().map_err(|x| e(&x))
}

/// Requests (attempts) each backend received: a dot plot, one column per backend with the algorithms
/// side by side in it, and a grey line at the even share.
pub fn per_backend(path: &Path, title: &str, results: &[AlgorithmReport]) -> Result<(), ChartError> {
    let e = err(path);
    let n = results.iter().map(|a| a.per_backend.len()).max().unwrap_or(1).max(1);
    let hi =
        results.iter().flat_map(|a| a.per_backend.iter().copied()).max().unwrap_or(1).max(1) as f64 * 1.15;
    let (plot, side) = frame(path, title, &e)?;
    let mut chart = ChartBuilder::on(&plot)
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(70)
        .build_cartesian_2d(-0.5f64..(n as f64 - 0.5), 0f64..hi)
        .map_err(|x| e(&x))?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n.min(20))
        .x_label_formatter(&|x| {
            if (x - x.round()).abs() < 1e-6 { format!("{}", x.round() as i64) } else { String::new() }
        })
        .x_desc("backend")
        .y_desc("requests")
        .draw()
        .map_err(|x| e(&x))?;
    separators(&mut chart, n, 0.0, hi, &e)?;
    if !results.is_empty() {
        // Attempts differ a little between algorithms (retries): the line is their mean spread evenly.
        let total: u64 = results.iter().flat_map(|a| a.per_backend.iter()).sum();
        let even = total as f64 / results.len() as f64 / n as f64;
        chart
            .draw_series(DashedLineSeries::new(
                vec![(-0.5, even), (n as f64 - 0.5, even)],
                6,
                4,
                BLACK.mix(0.45).stroke_width(1),
            ))
            .map_err(|x| e(&x))?;
    }
    let m = results.len();
    for (k, a) in results.iter().enumerate() {
        let style = style_of(&a.algorithm, k);
        let off = dodge(k, m, 0.8);
        chart
            .draw_series(
                a.per_backend
                    .iter()
                    .enumerate()
                    .map(|(x, &y)| marker((x as f64 + off, y as f64), style.marker, style.color, 3)),
            )
            .map_err(|x| e(&x))?;
    }
    let mut entries = algorithm_entries(results);
    entries.push(Entry::heading(""));
    entries.push(Entry::new("even share", plain_style(0), Swatch::Dashed));
    legend(&side, &entries, &e)?;
    plot.present().map_err(|x| e(&x))
}

/// One simulated point of the supermarket chart.
#[derive(Debug, Clone, Copy)]
pub struct SojournPoint {
    /// Queues sampled per arrival.
    pub choices: usize,
    /// Load per server.
    pub lambda: f64,
    /// Simulated mean time in system.
    pub simulated: f64,
}

/// Mean time in system against load: `theory(λ, d)` drawn as a smooth curve (sampled every 0.002 of λ),
/// the simulated points as markers on it, one colour and marker per `d`.
pub fn supermarket(
    path: &Path,
    points: &[SojournPoint],
    theory: impl Fn(f64, usize) -> f64,
) -> Result<(), ChartError> {
    let e = err(path);
    let lo_l = points.iter().map(|p| p.lambda).fold(1.0, f64::min) - 0.05;
    let hi_l = points.iter().map(|p| p.lambda).fold(0.0, f64::max) + 0.01;
    let mut ds: Vec<usize> = points.iter().map(|p| p.choices).collect();
    ds.sort_unstable();
    ds.dedup();
    let steps = ((hi_l - lo_l) / 0.002).ceil() as usize;
    let curves: Vec<Vec<(f64, f64)>> = ds
        .iter()
        .map(|&d| {
            (0..=steps)
                .map(|k| lo_l + (hi_l - lo_l) * k as f64 / steps as f64)
                .map(|l| (l, theory(l, d)))
                .collect()
        })
        .collect();
    let hi =
        points.iter().map(|p| p.simulated).chain(curves.iter().flatten().map(|p| p.1)).fold(1.0, f64::max)
            * 1.08;
    let (plot, side) = frame(path, "Supermarket model: mean time in system against load", &e)?;
    let mut chart = ChartBuilder::on(&plot)
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(lo_l..hi_l, 0f64..hi)
        .map_err(|x| e(&x))?;
    chart
        .configure_mesh()
        .light_line_style(WHITE)
        .x_desc("load per server, λ")
        .y_desc("mean time in system (1 = one service time)")
        .draw()
        .map_err(|x| e(&x))?;
    let mut entries = vec![Entry::heading("line: theory, marks: simulated")];
    for (i, (d, curve)) in ds.iter().zip(curves).enumerate() {
        let style = plain_style(i);
        chart.draw_series(LineSeries::new(curve, style.color.stroke_width(2))).map_err(|x| e(&x))?;
        let mine = points.iter().filter(|p| p.choices == *d);
        chart
            .draw_series(mine.map(|p| marker((p.lambda, p.simulated), style.marker, style.color, 5)))
            .map_err(|x| e(&x))?;
        entries.push(Entry::new(&format!("d = {d}"), style, Swatch::LineMarker));
    }
    legend(&side, &entries, &e)?;
    plot.present().map_err(|x| e(&x))
}

/// Mean time in system against the age of the load information (a board refreshed every `period`),
/// one line per strategy, with `random` as the reference every other line is read against.
pub fn stale(path: &Path, rows: &[crate::stale::SweepRow]) -> Result<(), ChartError> {
    let e = err(path);
    let points: Vec<(f64, &crate::stale::StaleResult)> = rows
        .iter()
        .filter_map(|r| match r.view {
            crate::stale::View::Board { period } => Some(r.results.iter().map(move |x| (period, x))),
            crate::stale::View::Own { .. } => None,
        })
        .flatten()
        .collect();
    let hi_x = points.iter().map(|p| p.0).fold(1.0, f64::max) * 1.04;
    let hi_y = points.iter().map(|p| p.1.mean_sojourn).fold(1.0, f64::max) * 1.08;
    let (plot, side) = frame(path, "Stale load information: mean time in system against its age", &e)?;
    let mut chart = ChartBuilder::on(&plot)
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..hi_x, 0f64..hi_y)
        .map_err(|x| e(&x))?;
    chart
        .configure_mesh()
        .light_line_style(WHITE)
        .x_desc("board refreshed every ... service times (0: current)")
        .y_desc("mean time in system (1 = one service time)")
        .draw()
        .map_err(|x| e(&x))?;
    let mut entries = vec![Entry::heading("strategy")];
    for (i, strategy) in crate::stale::Strategy::ALL.iter().enumerate() {
        let style = style_of(strategy.name(), i);
        let line: Vec<(f64, f64)> =
            points.iter().filter(|p| p.1.strategy == *strategy).map(|p| (p.0, p.1.mean_sojourn)).collect();
        chart.draw_series(LineSeries::new(line.clone(), style.color.stroke_width(2))).map_err(|x| e(&x))?;
        chart
            .draw_series(line.iter().map(|&p| marker(p, style.marker, style.color, 5)))
            .map_err(|x| e(&x))?;
        entries.push(Entry::new(strategy.name(), style, Swatch::LineMarker));
    }
    legend(&side, &entries, &e)?;
    plot.present().map_err(|x| e(&x))
}

/// User and system CPU microseconds per request, stacked, one bar per balancer.
pub fn cpu_per_request(path: &Path, results: &[TargetResult]) -> Result<(), ChartError> {
    let e = err(path);
    let rows: Vec<&TargetResult> = results.iter().filter(|r| r.name != "direct").collect();
    let n = rows.len().max(1);
    let hi =
        rows.iter().map(|r| r.user_us_per_req.median + r.sys_us_per_req.median).fold(1.0, f64::max) * 1.15;
    let (plot, side) = frame(path, "CPU per request on one core (median): user, then system", &e)?;
    let mut chart = ChartBuilder::on(&plot)
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
    let (user, sys) = (plain_style(0), plain_style(5));
    chart
        .draw_series(rows.iter().enumerate().map(|(i, r)| {
            let x = i as f64;
            Rectangle::new([(x - 0.3, 0.0), (x + 0.3, r.user_us_per_req.median)], user.color.filled())
        }))
        .map_err(|x| e(&x))?;
    chart
        .draw_series(rows.iter().enumerate().map(|(i, r)| {
            let x = i as f64;
            let u = r.user_us_per_req.median;
            Rectangle::new([(x - 0.3, u), (x + 0.3, u + r.sys_us_per_req.median)], sys.color.filled())
        }))
        .map_err(|x| e(&x))?;
    let entries = [Entry::new("system (kernel)", sys, Swatch::Bar), Entry::new("user", user, Swatch::Bar)];
    legend(&side, &entries, &e)?;
    plot.present().map_err(|x| e(&x))
}

#[cfg(test)]
mod tests {
    use super::*;
    use lb_algorithms::Algorithm;

    #[test]
    fn every_algorithm_has_its_own_colour_and_marker() {
        let styles: Vec<Style> = Algorithm::ALL
            .iter()
            .map(|a| algorithm_style(a.name()).unwrap_or_else(|| panic!("{a}")))
            .collect();
        for (i, a) in styles.iter().enumerate() {
            for (j, b) in styles.iter().enumerate().skip(i + 1) {
                let (x, y) = (Algorithm::ALL[i], Algorithm::ALL[j]);
                assert_ne!(a.color, b.color, "{x} and {y} share a colour");
                assert_ne!(a.marker, b.marker, "{x} and {y} share a marker");
            }
        }
    }

    #[test]
    fn dodge_centres_the_group() {
        // Three algorithms in a column 0.9 wide: 0.3 apart, the middle one on the category.
        assert_eq!(dodge(1, 3, 0.9), 0.0);
        assert!((dodge(0, 3, 0.9) + 0.3).abs() < 1e-12);
        assert!((dodge(2, 3, 0.9) - 0.3).abs() < 1e-12);
        assert_eq!(dodge(0, 1, 0.9), 0.0);
    }
}
