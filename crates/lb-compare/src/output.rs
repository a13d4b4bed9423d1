//! Plain-text tables and the progress bar.
//!
//! Tables are written by hand (a few lines) rather than with a table crate: the columns are known, and a
//! learner can read the formatting next to the numbers it prints.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::sim::ScenarioReport;

/// A progress bar on stderr of `len` steps, or a hidden one when `hidden` (with `--json`); indicatif also
/// hides it by itself when stderr is not a terminal, so piped output and tests stay clean.
pub fn progress(len: u64, message: &str, hidden: bool) -> ProgressBar {
    if hidden {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    if let Ok(style) =
        ProgressStyle::with_template("{msg:>20} [{bar:40}] {percent:>3}% {elapsed_precise} eta {eta}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(message.to_string());
    bar
}

/// Render rows as a left-aligned table with a header; columns as wide as their widest cell.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let is_number = |cell: &str| cell.chars().next().is_some_and(|c| c.is_ascii_digit() || c == '-');
    // Right-align columns of numbers (header included) so that digits line up; left-align words.
    let right: Vec<bool> = (0..header.len())
        .map(|i| i > 0 && !rows.is_empty() && rows.iter().all(|r| r.get(i).is_some_and(|c| is_number(c))))
        .collect();
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i > 0 {
                out.push_str("  ");
            }
            if right[i] {
                out.push_str(&format!("{cell:>w$}", w = *w));
            } else {
                out.push_str(&format!("{cell:<w$}", w = *w));
            }
        }
        out.trim_end().to_string() + "\n"
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// The tables of a scenario report (simulated or live): latency per algorithm, then requests per
/// backend. `lb-compare scenario`, `live` and `report` all print this.
pub fn scenario_text(r: &ScenarioReport) -> String {
    let mut out = format!("seed {}, threshold {} ms; latencies in ms\n", r.seed, r.threshold_ms);
    let rows: Vec<Vec<String>> = r
        .results
        .iter()
        .map(|a| {
            vec![
                a.algorithm.clone(),
                a.requests.to_string(),
                a.errors.to_string(),
                format!("{:.1}", a.p50_ms),
                format!("{:.1}", a.p90_ms),
                format!("{:.1}", a.p99_ms),
                format!("{:.1}", a.p999_ms),
                format!("{:.1}", a.max_ms),
                format!("{:.2}%", a.above_threshold * 100.0),
                format!("{:.2}", a.imbalance),
            ]
        })
        .collect();
    out += &table(
        &["algorithm", "requests", "errors", "p50", "p90", "p99", "p99.9", "max", "above", "imbalance"],
        &rows,
    );
    out += "requests per backend:\n";
    for a in &r.results {
        let counts: Vec<String> = a.per_backend.iter().map(u64::to_string).collect();
        out += &format!("  {:<22} {}\n", a.algorithm, counts.join(" "));
    }
    for s in &r.skipped {
        out += &format!("skipped {}: {}\n", s.algorithm, s.reason);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns() {
        let t = table(&["name", "n"], &[vec!["a".into(), "10".into()], vec!["longer".into(), "2".into()]]);
        assert_eq!(t, "name     n\na       10\nlonger   2\n");
    }
}
