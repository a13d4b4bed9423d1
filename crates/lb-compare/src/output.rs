//! Plain-text tables, as every experiment prints its results.
//!
//! Tables are written by hand (a few lines) rather than with a table crate: the columns are known, and a
//! learner can read the formatting next to the numbers it prints.

/// Render rows as a left-aligned table with a header; columns as wide as their widest cell.
pub(crate) fn table(header: &[&str], rows: &[Vec<String>]) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns() {
        let t = table(&["name", "n"], &[vec!["a".into(), "10".into()], vec!["longer".into(), "2".into()]]);
        assert_eq!(t, "name     n\na       10\nlonger   2\n");
    }
}
