//! Does a command's real output match what the lesson says it prints?
//!
//! Lessons show real output, trimmed. Two wildcards make that possible without making the check loose:
//!
//! - a line `...` matches any number of lines, zero included (the middle of a long listing);
//! - `[..]` inside a line matches any text within that line (a timing, a port, an id).
//!
//! Everything else must be equal line by line, after trailing whitespace is trimmed and trailing blank
//! lines are dropped (a terminal shows neither). The search backtracks over `...` lines like a glob
//! over lines; with the few `...` a lesson has, that is fast.
//!
//! When they do not match, [`diff`] shows where, as a short line diff.

/// The marker line that matches any number of lines.
pub const ANY_LINES: &str = "...";
/// The marker that matches any text within one line.
pub const ANY_TEXT: &str = "[..]";

/// Whether `actual` (a command's whole output) matches the `expected` lines.
pub fn output_matches(expected: &[String], actual: &str) -> bool {
    let expected = normalize(expected.iter().map(String::as_str));
    let actual = normalize(actual.lines());
    lines_match(&expected, &actual)
}

/// Whether one actual line matches one expected line (which may contain `[..]`).
pub fn line_matches(pattern: &str, actual: &str) -> bool {
    let pattern = pattern.trim_end();
    let actual = actual.trim_end();
    let mut parts = pattern.split(ANY_TEXT);
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = actual.strip_prefix(first) else { return false };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else { return rest.is_empty() };
    // Leftmost match of each middle piece is always safe: taking the earliest leaves the most room
    // for the pieces after it.
    for piece in middle {
        match rest.find(piece) {
            Some(at) => rest = &rest[at + piece.len()..],
            None => return false,
        }
    }
    rest.ends_with(last)
}

fn normalize<'a>(lines: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut out: Vec<&str> = lines.map(str::trim_end).collect();
    while out.last().is_some_and(|l| l.is_empty()) {
        out.pop();
    }
    out
}

fn is_any_lines(line: &str) -> bool {
    line.trim() == ANY_LINES
}

fn lines_match(expected: &[&str], actual: &[&str]) -> bool {
    match expected.split_first() {
        None => actual.is_empty(),
        Some((first, rest)) if is_any_lines(first) => {
            (0..=actual.len()).any(|skip| lines_match(rest, &actual[skip..]))
        }
        Some((first, rest)) => match actual.split_first() {
            Some((line, actual_rest)) => line_matches(first, line) && lines_match(rest, actual_rest),
            None => false,
        },
    }
}

/// A short line diff of expected against actual: `-` lines the lesson shows but the command did not
/// print, `+` lines it printed that the lesson does not show. Long runs of agreeing lines are folded.
/// `...` lines are left out of the alignment: they are where the lesson elided output on purpose.
pub fn diff(expected: &[String], actual: &str) -> String {
    const MAX_LINES: usize = 40;
    let expected: Vec<&str> =
        normalize(expected.iter().map(String::as_str)).into_iter().filter(|l| !is_any_lines(l)).collect();
    let actual = normalize(actual.lines());
    // Longest common subsequence, with "common" meaning "the pattern line matches".
    let (n, m) = (expected.len(), actual.len());
    let mut lcs = vec![vec![0usize; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if line_matches(expected[i], actual[j]) {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let mut out: Vec<String> = Vec::new();
    let (mut i, mut j, mut same) = (0, 0, 0);
    let flush = |out: &mut Vec<String>, same: &mut usize| {
        if *same > 0 {
            out.push(format!("  ({same} matching line{})", if *same == 1 { "" } else { "s" }));
            *same = 0;
        }
    };
    while i < n || j < m {
        if i < n && j < m && line_matches(expected[i], actual[j]) {
            same += 1;
            i += 1;
            j += 1;
        } else if j < m && (i == n || lcs[i][j + 1] >= lcs[i + 1][j]) {
            flush(&mut out, &mut same);
            out.push(format!("+ {}", actual[j]));
            j += 1;
        } else {
            flush(&mut out, &mut same);
            out.push(format!("- {}", expected[i]));
            i += 1;
        }
    }
    flush(&mut out, &mut same);
    if out.len() > MAX_LINES {
        let hidden = out.len() - MAX_LINES;
        out.truncate(MAX_LINES);
        out.push(format!("  ... ({hidden} more diff lines)"));
    }
    out.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn lines(text: &str) -> Vec<String> {
        text.lines().map(str::to_string).collect()
    }

    #[test]
    fn exact_lines_with_trailing_whitespace_and_blank_lines_ignored() {
        assert!(output_matches(&lines("a\nb"), "a  \nb\n\n"));
        assert!(output_matches(&lines("a\nb\n"), "a\nb"));
        assert!(!output_matches(&lines("a\nb"), "a\nc\n"));
        assert!(!output_matches(&lines("a"), "a\nb\n"));
        // Leading whitespace counts: indentation is part of the output.
        assert!(!output_matches(&lines(" a"), "a\n"));
        // No expected lines means the command must print nothing.
        assert!(output_matches(&[], ""));
        assert!(!output_matches(&[], "noise\n"));
    }

    #[test]
    fn ellipsis_matches_zero_or_more_lines() {
        let expected = lines("head\n...\ntail");
        assert!(output_matches(&expected, "head\ntail\n"));
        assert!(output_matches(&expected, "head\n1\n2\n3\ntail\n"));
        assert!(!output_matches(&expected, "head\n1\n"));
        // Backtracking: the first `x` after `...` is not the right one to anchor on.
        assert!(output_matches(&lines("...\nx\ny"), "x\nz\nx\ny\n"));
        assert!(output_matches(&lines("..."), ""));
        assert!(output_matches(&lines("a\n...\n...\nb"), "a\nb\n"));
    }

    #[test]
    fn any_text_within_a_line() {
        assert!(line_matches("listening on 127.0.0.1:[..]", "listening on 127.0.0.1:43121"));
        assert!(line_matches("took [..] ms, p99 [..] ms", "took 12 ms, p99 40 ms"));
        assert!(line_matches("[..]", ""));
        assert!(line_matches("a[..]b[..]c", "abc"));
        assert!(!line_matches("a[..]b", "ab c"));
        assert!(!line_matches("took [..] ms", "took 12 s"));
        // `[..]` stays within its line: it does not swallow a line break.
        assert!(!output_matches(&lines("a[..]c"), "ab\nc\n"));
    }

    #[test]
    fn diff_points_at_the_difference() {
        let expected = lines("one\ntwo\nthree");
        assert_eq!(
            diff(&expected, "one\n2\nthree\n"),
            "  (1 matching line)\n+ 2\n- two\n  (1 matching line)"
        );
        assert_eq!(diff(&lines("a\n...\nz"), "a\nz\nextra\n"), "  (2 matching lines)\n+ extra");
    }

    proptest! {
        /// Any output matches itself, and a lone `...` matches anything.
        #[test]
        fn output_matches_itself(text in "([a-z :0-9]{0,12}\n){0,8}") {
            let expected: Vec<String> = text.lines().map(str::to_string).collect();
            prop_assert!(output_matches(&expected, &text));
            prop_assert!(output_matches(&lines("..."), &text));
        }

        /// Replacing any part of a line by `[..]` still matches the line.
        #[test]
        fn any_text_replaces_any_slice(
            line in "[a-z0-9]([a-z0-9 ]{0,18}[a-z0-9])?",
            a in 0usize..21,
            b in 0usize..21,
        ) {
            let (start, end) = (a.min(b).min(line.len()), a.max(b).min(line.len()));
            let pattern = format!("{}{ANY_TEXT}{}", &line[..start], &line[end..]);
            prop_assert!(line_matches(&pattern, &line));
        }
    }
}
