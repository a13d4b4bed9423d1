//! The lessons as an mdBook: the chapter list in `docs/SUMMARY.md`, and the rewrite of links that leave
//! `docs/`.
//!
//! A lesson links to the code it explains: `[`crates/round-robin/src/lib.rs`](../../crates/round-robin/src/lib.rs)`.
//! On GitHub and in an editor that link opens the file. In the book it would not: `mdbook` renders only
//! `docs/`, so a link that climbs out of it points at nothing on `mdbook serve`. The `book-links`
//! preprocessor (`src/bin/book-links.rs`, named in `docs/book.toml`) calls [`rewrite_repository_links`] on
//! every chapter before it is rendered: such a link becomes a link to `files-url` when the book sets one
//! (a repository browser), and otherwise plain text that names the path, which the reader finds in their
//! checkout. Links that stay inside `docs/` are left for `mdbook`, which turns `.md` into `.html`.

use std::fs;
use std::path::{Component, Path, PathBuf};

use crate::Error;

/// One chapter of `SUMMARY.md`: its title, its file relative to `docs/`, and the part (`# The core
/// track`) it is listed under, empty before the first part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chapter {
    pub title: String,
    pub path: String,
    pub part: String,
}

/// The chapters of `docs/SUMMARY.md` in reading order.
pub fn summary(root: &Path) -> Result<Vec<Chapter>, Error> {
    let path = root.join("docs/SUMMARY.md");
    let text = fs::read_to_string(&path).map_err(|source| Error::Read { path, source })?;
    Ok(parse_summary(&text))
}

/// The chapters of a `SUMMARY.md`: every `[title](file.md)` line, with the `# ` part heading above it
/// (the `# Summary` title itself is not a part).
pub fn parse_summary(text: &str) -> Vec<Chapter> {
    let mut part = String::new();
    let mut seen_title = false;
    let mut chapters = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if let Some(heading) = line.strip_prefix("# ") {
            if seen_title {
                part = heading.trim().to_string();
            }
            seen_title = true;
            continue;
        }
        let item = line.trim_start_matches(['-', '*']).trim_start();
        let Some(rest) = item.strip_prefix('[') else { continue };
        let Some((title, rest)) = rest.split_once("](") else { continue };
        let Some((path, _)) = rest.split_once(')') else { continue };
        if !path.is_empty() {
            chapters.push(Chapter { title: title.to_string(), path: path.to_string(), part: part.clone() });
        }
    }
    chapters
}

/// Rewrites, in the Markdown of the chapter at `chapter` (relative to `docs/`), every inline link whose
/// target lies outside `docs/`. With `files_url`, the link points to `{files_url}/{path from the
/// repository root}`; without, the link becomes its text, followed by the path in backticks unless the
/// text already shows it. Fenced blocks, code spans and images are left alone.
pub fn rewrite_repository_links(markdown: &str, chapter: &str, files_url: Option<&str>) -> String {
    let mut out = String::with_capacity(markdown.len());
    let mut fence: Option<String> = None;
    for line in markdown.split_inclusive('\n') {
        let trimmed = line.trim_start();
        let marker: String = trimmed.chars().take_while(|&c| c == '`' || c == '~').collect();
        match &fence {
            Some(open) => {
                if marker.len() >= open.len()
                    && marker.starts_with(&open[..1])
                    && trimmed[marker.len()..].trim().is_empty()
                {
                    fence = None;
                }
                out.push_str(line);
            }
            None if marker.len() >= 3 && marker.chars().all(|c| c == marker.as_bytes()[0] as char) => {
                fence = Some(marker);
                out.push_str(line);
            }
            None => out.push_str(&rewrite_line(line, chapter, files_url)),
        }
    }
    out
}

fn rewrite_line(line: &str, chapter: &str, files_url: Option<&str>) -> String {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    loop {
        // The next `[` outside a code span.
        let Some(open) = next_bracket(rest) else {
            out.push_str(rest);
            return out;
        };
        let (before, from_bracket) = rest.split_at(open);
        out.push_str(before);
        let image = before.ends_with('!');
        match parse_link(from_bracket) {
            Some((text, target, length)) if !image => {
                match outside_docs(chapter, target) {
                    Some(path) => out.push_str(&replacement(text, &path, target, files_url)),
                    None => match readme_as_index(target) {
                        Some(index) => out.push_str(&format!("[{text}]({index})")),
                        None => out.push_str(&from_bracket[..length]),
                    },
                }
                rest = &from_bracket[length..];
            }
            _ => {
                out.push('[');
                rest = &from_bracket[1..];
            }
        }
    }
}

/// The byte offset of the first `[` in `text` that is not inside a code span.
fn next_bracket(text: &str) -> Option<usize> {
    let mut in_code = false;
    for (i, c) in text.char_indices() {
        match c {
            '`' => in_code = !in_code,
            '[' if !in_code => return Some(i),
            _ => {}
        }
    }
    None
}

/// `[text](target)` at the start of `text`: the link text, the target, and the length of the whole link.
fn parse_link(text: &str) -> Option<(&str, &str, usize)> {
    let mut depth = 0usize;
    let mut in_code = false;
    let mut close = None;
    for (i, c) in text.char_indices() {
        match c {
            '`' => in_code = !in_code,
            '[' if !in_code => depth += 1,
            ']' if !in_code => {
                depth -= 1;
                if depth == 0 {
                    close = Some(i);
                    break;
                }
            }
            _ => {}
        }
    }
    let close = close?;
    let after = text[close + 1..].strip_prefix('(')?;
    let end = after.find(')')?;
    let target = &after[..end];
    if target.contains(char::is_whitespace) {
        return None;
    }
    Some((&text[1..close], target, close + 2 + end + 1))
}

/// The repository path (`crates/round-robin/src/lib.rs`) a relative `target` in the chapter at `chapter`
/// points to, when it points outside `docs/`; `None` for URLs, anchors, and targets inside `docs/`.
pub fn outside_docs(chapter: &str, target: &str) -> Option<String> {
    if target.is_empty() || target.starts_with('#') || target.starts_with('/') || target.contains("://") {
        return None;
    }
    if target.starts_with("mailto:") {
        return None;
    }
    let file = target.split('#').next().unwrap_or(target);
    // Resolve against `docs/<chapter's folder>`, with `docs/` as one real folder so `..` can leave it.
    let mut path = PathBuf::from("docs");
    if let Some(folder) = Path::new(chapter).parent() {
        path.push(folder);
    }
    let mut parts: Vec<String> =
        path.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
    for component in Path::new(file).components() {
        match component {
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::Normal(name) => parts.push(name.to_string_lossy().into_owned()),
            _ => {}
        }
    }
    if parts.first().is_some_and(|first| first == "docs") {
        return None;
    }
    let mut joined = parts.join("/");
    if file.ends_with('/') {
        joined.push('/');
    }
    Some(joined)
}

/// mdbook renders a chapter `README.md` as `index.html` but leaves links to `README.md` alone, so
/// they would point at a `README.html` that is never written: `../report/README.md#x` becomes
/// `../report/index.md#x`, which mdbook then turns into `index.html`.
fn readme_as_index(target: &str) -> Option<String> {
    if target.contains("://") {
        return None;
    }
    let (file, anchor) = target.split_once('#').map_or((target, None), |(f, a)| (f, Some(a)));
    let folder = match file {
        "README.md" => "",
        _ => file.strip_suffix("/README.md").map(|f| &file[..f.len() + 1])?,
    };
    Some(match anchor {
        Some(anchor) => format!("{folder}index.md#{anchor}"),
        None => format!("{folder}index.md"),
    })
}

fn replacement(text: &str, path: &str, target: &str, files_url: Option<&str>) -> String {
    match files_url {
        Some(base) => {
            let anchor = target.find('#').map(|i| &target[i..]).unwrap_or("");
            format!("[{text}]({}/{path}{anchor})", base.trim_end_matches('/'))
        }
        None if text.contains(path) || text.contains(path.trim_end_matches('/')) => text.to_string(),
        None => format!("{text} (`{path}`)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_lists_chapters_under_their_parts() {
        let text = "# Summary\n\n[Intro](README.md)\n\n# The core track\n\n- [One](lessons/one.md)\n\
                    - [Two](lessons/two.md)\n  - [Two, more](lessons/two-more.md)\n\n# Deep dives\n\n\
                    - [Three](lessons/three.md)\n- [Draft]()\n";
        let chapters = parse_summary(text);
        let listed: Vec<(&str, &str)> = chapters.iter().map(|c| (c.path.as_str(), c.part.as_str())).collect();
        assert_eq!(
            listed,
            [
                ("README.md", ""),
                ("lessons/one.md", "The core track"),
                ("lessons/two.md", "The core track"),
                ("lessons/two-more.md", "The core track"),
                ("lessons/three.md", "Deep dives"),
            ]
        );
        assert_eq!(chapters[1].title, "One");
    }

    #[test]
    fn only_targets_outside_docs_are_repository_paths() {
        assert_eq!(
            outside_docs("lessons/a.md", "../../crates/x/src/lib.rs").as_deref(),
            Some("crates/x/src/lib.rs")
        );
        assert_eq!(outside_docs("lessons/a.md", "../../crates/x/tests/").as_deref(), Some("crates/x/tests/"));
        assert_eq!(outside_docs("README.md", "../crates/docs-check").as_deref(), Some("crates/docs-check"));
        assert_eq!(outside_docs("lessons/a.md", "../report/README.md"), None);
        assert_eq!(outside_docs("lessons/a.md", "b.md#anchor"), None);
        assert_eq!(outside_docs("README.md", "lessons/a.md"), None);
        assert_eq!(outside_docs("lessons/a.md", "https://example.com/x"), None);
        assert_eq!(outside_docs("lessons/a.md", "#options"), None);
        // Above the repository root is not a path in it.
        assert_eq!(outside_docs("README.md", "../../x"), None);
    }

    #[test]
    fn links_out_of_docs_become_text_or_urls() {
        let text = "Read [`crates/rr/src/lib.rs`](../../crates/rr/src/lib.rs) and [the tests](../../crates/rr/tests/), \
                    then [weights](weights.md#answer).\n";
        // A chapter README is rendered as index.html: links to it follow.
        assert_eq!(
            rewrite_repository_links(
                "[a](../report/README.md#x) [b](README.md) [c](NOT-README.md)\n",
                "lessons/a.md",
                None
            ),
            "[a](../report/index.md#x) [b](index.md) [c](NOT-README.md)\n"
        );
        assert_eq!(
            rewrite_repository_links(text, "lessons/a.md", None),
            "Read `crates/rr/src/lib.rs` and the tests (`crates/rr/tests/`), then [weights](weights.md#answer).\n"
        );
        assert_eq!(
            rewrite_repository_links(text, "lessons/a.md", Some("https://example.com/repo/blob/main/")),
            "Read [`crates/rr/src/lib.rs`](https://example.com/repo/blob/main/crates/rr/src/lib.rs) and \
             [the tests](https://example.com/repo/blob/main/crates/rr/tests/), then [weights](weights.md#answer).\n"
        );
    }

    #[test]
    fn code_and_images_are_left_alone() {
        let text = "```markdown\n[a](../../crates/a.rs)\n```\n`[b](../../crates/b.rs)` ![c](../../crates/c.svg)\n\
                    [d [nested]](../../crates/d.rs)\n";
        assert_eq!(
            rewrite_repository_links(text, "lessons/a.md", None),
            "```markdown\n[a](../../crates/a.rs)\n```\n`[b](../../crates/b.rs)` ![c](../../crates/c.svg)\n\
             d [nested] (`crates/d.rs`)\n"
        );
    }
}
