//! Relative links, anchors and backticked repository paths must point at something that exists.
//!
//! A learner who clicks a link to `../../crates/lb/src/forward/mod.rs` and gets a 404, or reads "open
//! `crates/lb-algorithms/src/maglev.rs`" for a file that was renamed, loses trust in the rest of the
//! page. Code moves faster than prose, so this is checked on every test run:
//!
//! - `[text](path)` and `[text](path#anchor)`: `path` exists relative to the linking file (a leading
//!   `/` means the repository root, as on GitHub); if it is a Markdown file, `anchor` is one of its
//!   heading slugs ([`crate::markdown::slug`]). `[text](#anchor)` checks the file itself. The same
//!   goes for a reference definition `[label]: path` and for `href="path"` and `src="path"` in HTML.
//! - `` `crates/...` ``, `` `docs/...` `` and the other top-level folders, in backticks: the path exists
//!   relative to the repository root, when it looks like a path (contains a `.` or ends with `/`), so
//!   `` `crates/lb` `` in a sentence about the package is left alone. A `:42` line suffix is allowed;
//!   globs (`*.rs`) and placeholders (`<name>`) are not checked.
//! - External links are never fetched: a docs test that depends on the network is a flaky one.

use std::collections::HashMap;
use std::fs;
use std::path::{Component, Path, PathBuf};

use crate::markdown::Document;

/// Folders whose paths are checked when they appear in backticks.
pub const PATH_PREFIXES: [&str; 7] =
    ["crates/", "docs/", "nginx/", "haproxy/", "envoy/", "scripts/", "monitoring/"];

/// One broken link or path: the line it is on and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokenLink {
    pub line: usize,
    pub message: String,
}

/// Checks every link and code path of `doc`, which is the file `file` inside `root`. `anchors` caches
/// the anchors of Markdown files already read.
pub fn check(
    root: &Path,
    file: &Path,
    doc: &Document,
    anchors: &mut HashMap<PathBuf, Vec<String>>,
) -> Vec<BrokenLink> {
    let mut broken = Vec::new();
    let dir = file.parent().unwrap_or(root);
    for link in doc.links() {
        let (line, target) = (link.line, &link.target);
        let (path, anchor) = match target.split_once('#') {
            Some((path, anchor)) => (path, Some(anchor)),
            None => (target.as_str(), None),
        };
        let path = percent_decode(path.split('?').next().unwrap_or_default());
        let resolved = if path.is_empty() {
            file.to_path_buf()
        } else if let Some(from_root) = path.strip_prefix('/') {
            root.join(from_root)
        } else {
            dir.join(&path)
        };
        let resolved = normalize(&resolved);
        if !resolved.exists() {
            broken.push(BrokenLink {
                line,
                message: format!("link `{target}`: {} does not exist", display(root, &resolved)),
            });
            continue;
        }
        let Some(anchor) = anchor.filter(|a| !a.is_empty()) else { continue };
        if resolved.extension().is_none_or(|e| e != "md") || !resolved.is_file() {
            // `src/lib.rs#L10` and the like: GitHub line anchors, not headings.
            continue;
        }
        let known = anchors.entry(resolved.clone()).or_insert_with(|| {
            if resolved == file {
                doc.anchors().to_vec()
            } else {
                fs::read_to_string(&resolved)
                    .map(|text| Document::parse(&text).anchors().to_vec())
                    .unwrap_or_default()
            }
        });
        let anchor = percent_decode(anchor);
        if !known.contains(&anchor) {
            // A short list of what is there makes the typo obvious; a long one would bury the message.
            let there = if known.len() <= 8 {
                let list: Vec<String> = known.iter().map(|a| format!("#{a}")).collect();
                format!(" (its anchors: {})", list.join(" "))
            } else {
                String::new()
            };
            broken.push(BrokenLink {
                line,
                message: format!(
                    "link `{target}`: {} has no heading with anchor `#{anchor}`{there}",
                    display(root, &resolved)
                ),
            });
        }
    }
    for span in doc.code_spans() {
        let Some(path) = repository_path(&span.text) else { continue };
        if !root.join(path).exists() {
            broken.push(BrokenLink {
                line: span.line,
                message: format!("path `{}` does not exist in the repository", span.text),
            });
        }
    }
    broken
}

/// The repository path a code span names, if it looks like one (see the module docs).
pub fn repository_path(span: &str) -> Option<&str> {
    let span = span.trim();
    if !PATH_PREFIXES.iter().any(|p| span.starts_with(p)) {
        return None;
    }
    if span.contains(|c: char| c.is_whitespace() || "*?{}<>[]|$`\"'".contains(c)) {
        return None;
    }
    // `crates/lb/src/main.rs:42` and `...:42:7`: a line (and column) reference.
    let mut path = span;
    while let Some((head, tail)) = path.rsplit_once(':') {
        if tail.is_empty() || !tail.chars().all(|c| c.is_ascii_digit()) {
            break;
        }
        path = head;
    }
    if path.contains(':') {
        return None;
    }
    (path.ends_with('/') || path.contains('.')).then_some(path)
}

/// `a/./b/../c` to `a/c`, without touching the file system (the target may not exist).
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other),
        }
    }
    out
}

fn display(root: &Path, path: &Path) -> String {
    path.strip_prefix(root).unwrap_or(path).display().to_string()
}

/// `%20` and friends, as browsers decode link targets; invalid escapes are kept as written.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex)) {
            (b'%', Some(high), Some(low)) => {
                out.push((high * 16 + low) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_code_spans_are_paths() {
        assert_eq!(
            repository_path("crates/lb-algorithms/src/maglev.rs"),
            Some("crates/lb-algorithms/src/maglev.rs")
        );
        assert_eq!(repository_path("docs/"), Some("docs/"));
        assert_eq!(repository_path("crates/lb/src/main.rs:42"), Some("crates/lb/src/main.rs"));
        assert_eq!(repository_path("crates/lb/src/main.rs:42:7"), Some("crates/lb/src/main.rs"));
        assert_eq!(repository_path("nginx/.gitkeep"), Some("nginx/.gitkeep"));
        // A package name in prose, a glob, a placeholder, a command: not checked.
        assert_eq!(repository_path("crates/lb"), None);
        assert_eq!(repository_path("crates/lb-algorithms/src/*.rs"), None);
        assert_eq!(repository_path("crates/<name>/src/lib.rs"), None);
        assert_eq!(repository_path("ls crates/lb-algorithms/src"), None);
        assert_eq!(repository_path("src/lib.rs"), None);
    }

    #[test]
    fn links_anchors_and_paths_against_a_tree() {
        let root = tempfile::tempdir().expect("temp dir");
        let docs = root.path().join("docs");
        fs::create_dir_all(docs.join("lessons")).expect("mkdir");
        fs::create_dir_all(root.path().join("crates/x/src")).expect("mkdir");
        fs::write(root.path().join("crates/x/src/lib.rs"), "").expect("write");
        fs::write(docs.join("lessons/a.md"), "# Title\n\n## 두 번째 절\n").expect("write");
        let text = "# Here\n\
            [ok](lessons/a.md) [ok](lessons/a.md#title) [ok](lessons/a.md#두-번째-절) [ok](#here)\n\
            [ok](../crates/x/src/lib.rs#L3) [ok](/crates/x/) [ok](lessons/a%2Emd)\n\
            [bad](lessons/b.md) [bad](lessons/a.md#titel) [bad](#nowhere)\n\
            `crates/x/src/lib.rs` `crates/x/src/main.rs` `docs/lessons/` `docs/nothing/`\n";
        let file = docs.join("README.md");
        fs::write(&file, text).expect("write");
        let doc = Document::parse(text);
        let broken = check(root.path(), &file, &doc, &mut HashMap::new());
        let messages: Vec<&str> = broken.iter().map(|b| b.message.as_str()).collect();
        assert_eq!(
            messages,
            vec![
                "link `lessons/b.md`: docs/lessons/b.md does not exist",
                "link `lessons/a.md#titel`: docs/lessons/a.md has no heading with anchor `#titel` (its anchors: #title #두-번째-절)",
                "link `#nowhere`: docs/README.md has no heading with anchor `#nowhere` (its anchors: #here)",
                "path `crates/x/src/main.rs` does not exist in the repository",
                "path `docs/nothing/` does not exist in the repository",
            ]
        );
        assert!(broken.iter().all(|b| b.line == 4 || b.line == 5), "{broken:?}");
    }

    #[test]
    fn broken_links_over_two_lines_and_in_list_items_are_reported_at_their_line() {
        let root = tempfile::tempdir().expect("temp dir");
        fs::write(root.path().join("a.md"), "# Title\n").expect("write");
        // What a line-by-line reader missed: a target on the line after its `](` (line 4), and a
        // reference definition indented inside a nested list item (line 12). The link whose text
        // goes over two lines (lines 7-8) is reported where its target is.
        let text = "# Here\n\nSee [the missing lesson](\nmissing.md) and [fine](a.md).\n\n\
                    - one\n  - two, see [a\n    heading](a.md#no-such-heading)\n\n\
                    \x20   and [the third][third].\n\n\
                    \x20   [third]: nowhere.md\n";
        let file = root.path().join("README.md");
        fs::write(&file, text).expect("write");
        let broken = check(root.path(), &file, &Document::parse(text), &mut HashMap::new());
        let found: Vec<(usize, &str)> = broken.iter().map(|b| (b.line, b.message.as_str())).collect();
        assert_eq!(
            found,
            vec![
                (4, "link `missing.md`: missing.md does not exist"),
                (
                    8,
                    "link `a.md#no-such-heading`: a.md has no heading with anchor `#no-such-heading` (its anchors: #title)"
                ),
                (12, "link `nowhere.md`: nowhere.md does not exist"),
            ]
        );
    }
}
