//! The lessons as mdBooks: the chapter list in a `SUMMARY.md`, and the rewrite of links that leave the
//! book.
//!
//! There are two books: the English one in `docs/` and the Korean one in `docs/ko/`, each with its
//! `book.toml` and `SUMMARY.md`. A lesson links to the code it explains:
//! `[`crates/round-robin/src/lib.rs`](../../crates/round-robin/src/lib.rs)`. On GitHub and in an editor
//! that link opens the file. In a book it would not: `mdbook` renders only the chapters its
//! `SUMMARY.md` lists, from its source folder, so a link that climbs out of that folder, or to a Markdown
//! file the book does not list (the English book's link to the Korean path, the Korean book's links to
//! the English deep dives), points at nothing on `mdbook serve`. The `book-links` preprocessor
//! (`src/bin/book-links.rs`, named in each `book.toml`) calls [`rewrite_repository_links`] on every
//! chapter before it is rendered: such a link becomes a link to `files-url` when the book sets one (a
//! repository browser), and otherwise plain text that names the path, which the reader finds in their
//! checkout. Links to the book's own chapters are left for `mdbook`, which turns `.md` into `.html`.

use std::collections::HashSet;
use std::fs;
use std::path::{Component, Path, PathBuf};

use crate::Error;

/// The book being rendered, as the link rewrite needs it.
#[derive(Debug, Clone, Default)]
pub struct Book {
    /// Its source folder relative to the repository root, with `/`: `docs`, `docs/ko`.
    pub source: String,
    /// The chapters it renders, relative to `source` (`lessons/weights.md`). A link to another Markdown
    /// file leaves the book, even when that file is inside `source`.
    pub chapters: HashSet<String>,
    /// A repository browser's base URL: links that leave the book point there instead of becoming text.
    pub files_url: Option<String>,
    /// The repository root on disk, where an image from outside the book is read to be inlined.
    pub repository: Option<PathBuf>,
}

/// The source folder `src` of the book whose `book.toml` is in `book_root`, relative to the repository
/// root (the nearest folder above with a `Cargo.toml` that has a `[workspace]`): `docs/ko` for the
/// Korean book. `docs` if there is no such folder.
pub fn source_in_repository(book_root: &Path, src: &str) -> String {
    let source = book_root.join(src);
    let source = source.canonicalize().unwrap_or(source);
    let Some(root) = repository_root(&source) else { return "docs".to_string() };
    let relative = source.strip_prefix(root).unwrap_or(&source);
    let parts: Vec<String> =
        relative.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
    parts.join("/")
}

/// The nearest folder at or above `path` with a `Cargo.toml` that has a `[workspace]`.
pub fn repository_root(path: &Path) -> Option<PathBuf> {
    path.ancestors()
        .find(|dir| fs::read_to_string(dir.join("Cargo.toml")).is_ok_and(|t| t.contains("[workspace]")))
        .map(Path::to_path_buf)
}

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
    summary_of(root, "docs")
}

/// The chapters of the `SUMMARY.md` in `folder` (relative to `root`), in reading order.
pub fn summary_of(root: &Path, folder: &str) -> Result<Vec<Chapter>, Error> {
    let path = root.join(folder).join("SUMMARY.md");
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

/// Rewrites, in the Markdown of the chapter at `chapter` (relative to the book's source folder), every
/// inline link whose target is not in the book ([`outside_book`]). With the book's `files_url`, the link
/// points to `{files_url}/{path from the repository root}`; without, the link becomes its text, followed
/// by the path in backticks unless the text already shows it. Fenced blocks, code spans and images are
/// left alone.
pub fn rewrite_repository_links(markdown: &str, book: &Book, chapter: &str) -> String {
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
            None => out.push_str(&rewrite_line(line, book, chapter)),
        }
    }
    out
}

fn rewrite_line(line: &str, book: &Book, chapter: &str) -> String {
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
            // An image from outside the book (the Korean lessons show the English lessons' diagrams)
            // would not be copied into it: it goes into the page itself, as a data URL.
            Some((text, target, length)) if image => {
                match outside_book(book, chapter, target).and_then(|path| inline_image(book, &path)) {
                    Some(url) => out.push_str(&format!("[{text}]({url})")),
                    None => out.push_str(&from_bracket[..length]),
                }
                rest = &from_bracket[length..];
            }
            Some((text, target, length)) => {
                match outside_book(book, chapter, target) {
                    Some(path) => out.push_str(&replacement(text, &path, target, book.files_url.as_deref())),
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

/// The image at `path` (from the repository root) as a `data:` URL, if it is an image that can be read.
fn inline_image(book: &Book, path: &str) -> Option<String> {
    let mime = match Path::new(path).extension()?.to_str()? {
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        _ => return None,
    };
    let bytes = fs::read(book.repository.as_ref()?.join(path)).ok()?;
    Some(format!("data:{mime};base64,{}", base64(&bytes)))
}

/// Standard base64 (RFC 4648, with padding).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
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
/// points to, when it points out of the book: outside its source folder, or to a Markdown file in it
/// that is not one of its chapters. `None` for URLs, anchors, the book's chapters and the other files
/// of its source folder (which mdbook copies into the book).
pub fn outside_book(book: &Book, chapter: &str, target: &str) -> Option<String> {
    if target.is_empty() || target.starts_with('#') || target.starts_with('/') || target.contains("://") {
        return None;
    }
    if target.starts_with("mailto:") {
        return None;
    }
    let file = target.split('#').next().unwrap_or(target);
    // Resolve against `<source>/<chapter's folder>`, with the source as real folders so `..` can leave it.
    let mut path = PathBuf::from(&book.source);
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
    let source: Vec<&str> = book.source.split('/').collect();
    if parts.len() >= source.len() && parts.iter().zip(&source).all(|(a, b)| a == b) {
        let in_book = parts[source.len()..].join("/");
        if !in_book.ends_with(".md") || book.chapters.contains(&in_book) {
            return None;
        }
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

    /// The English book, with the chapters the tests link to.
    fn english() -> Book {
        let chapters = ["README.md", "lessons/a.md", "lessons/weights.md", "report/README.md"];
        Book { source: "docs".to_string(), chapters: chapters.map(String::from).into(), ..Book::default() }
    }

    /// The Korean book in `docs/ko`.
    fn korean() -> Book {
        let chapters = ["README.md", "weights.md", "용어집.md"];
        Book { source: "docs/ko".to_string(), chapters: chapters.map(String::from).into(), ..Book::default() }
    }

    #[test]
    fn only_targets_outside_the_book_are_repository_paths() {
        let book = english();
        assert_eq!(
            outside_book(&book, "lessons/a.md", "../../crates/x/src/lib.rs").as_deref(),
            Some("crates/x/src/lib.rs")
        );
        assert_eq!(
            outside_book(&book, "lessons/a.md", "../../crates/x/tests/").as_deref(),
            Some("crates/x/tests/")
        );
        assert_eq!(
            outside_book(&book, "README.md", "../crates/docs-check").as_deref(),
            Some("crates/docs-check")
        );
        assert_eq!(outside_book(&book, "lessons/a.md", "../report/README.md"), None);
        assert_eq!(outside_book(&book, "lessons/a.md", "weights.md#anchor"), None);
        assert_eq!(outside_book(&book, "README.md", "lessons/a.md"), None);
        assert_eq!(outside_book(&book, "lessons/a.md", "https://example.com/x"), None);
        assert_eq!(outside_book(&book, "lessons/a.md", "#options"), None);
        // Files mdbook copies (not Markdown) and the book's own folders stay links.
        assert_eq!(outside_book(&book, "lessons/a.md", "diagrams/ring.svg"), None);
        assert_eq!(outside_book(&book, "lessons/a.md", "../"), None);
        // A Markdown file in docs/ that the book does not render is outside it.
        assert_eq!(outside_book(&book, "README.md", "ko/README.md").as_deref(), Some("docs/ko/README.md"));
        // Above the repository root is not a path in it.
        assert_eq!(outside_book(&book, "README.md", "../../x"), None);
    }

    #[test]
    fn the_korean_book_leaves_at_docs_ko() {
        let book = korean();
        assert_eq!(outside_book(&book, "weights.md", "용어집.md#표"), None);
        assert_eq!(outside_book(&book, "weights.md", "README.md"), None);
        // The English deep dives and the code are outside the Korean book.
        assert_eq!(
            outside_book(&book, "weights.md", "../lessons/tls.md#sni").as_deref(),
            Some("docs/lessons/tls.md")
        );
        assert_eq!(outside_book(&book, "README.md", "../README.md").as_deref(), Some("docs/README.md"));
        assert_eq!(
            outside_book(&book, "weights.md", "../../crates/lb/src/lib.rs").as_deref(),
            Some("crates/lb/src/lib.rs")
        );
        // A Korean lesson not (yet) in the Korean SUMMARY.md.
        assert_eq!(outside_book(&book, "README.md", "tls.md").as_deref(), Some("docs/ko/tls.md"));
        assert_eq!(
            rewrite_repository_links(
                "[TLS](../lessons/tls.md)와 [가중치](weights.md#답)\n",
                &book,
                "README.md"
            ),
            "TLS (`docs/lessons/tls.md`)와 [가중치](weights.md#답)\n"
        );
    }

    #[test]
    fn links_out_of_docs_become_text_or_urls() {
        let text = "Read [`crates/rr/src/lib.rs`](../../crates/rr/src/lib.rs) and [the tests](../../crates/rr/tests/), \
                    then [weights](weights.md#answer).\n";
        let book = english();
        // A chapter README is rendered as index.html: links to it follow.
        assert_eq!(
            rewrite_repository_links(
                "[a](../report/README.md#x) [b](../README.md) [c](weights.md)\n",
                &book,
                "lessons/a.md"
            ),
            "[a](../report/index.md#x) [b](../index.md) [c](weights.md)\n"
        );
        assert_eq!(
            rewrite_repository_links(text, &book, "lessons/a.md"),
            "Read `crates/rr/src/lib.rs` and the tests (`crates/rr/tests/`), then [weights](weights.md#answer).\n"
        );
        let linked = Book { files_url: Some("https://example.com/repo/blob/main/".to_string()), ..book };
        assert_eq!(
            rewrite_repository_links(text, &linked, "lessons/a.md"),
            "Read [`crates/rr/src/lib.rs`](https://example.com/repo/blob/main/crates/rr/src/lib.rs) and \
             [the tests](https://example.com/repo/blob/main/crates/rr/tests/), then [weights](weights.md#answer).\n"
        );
    }

    #[test]
    fn images_from_outside_the_book_are_inlined() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).ancestors().nth(2).expect("repository root");
        let book = Book { repository: Some(root.to_path_buf()), ..korean() };
        let svg = fs::read(root.join("docs/lessons/diagrams/hash-ring.svg")).expect("the English diagram");
        let page =
            rewrite_repository_links("그림: ![해시 링](../lessons/diagrams/hash-ring.svg)\n", &book, "x.md");
        assert_eq!(page, format!("그림: ![해시 링](data:image/svg+xml;base64,{})\n", base64(&svg)));
        // An image in the book, or one that is not there, is left for mdbook (and the book test).
        for text in ["![a](diagrams/own.svg)\n", "![b](../lessons/diagrams/absent.svg)\n"] {
            assert_eq!(rewrite_repository_links(text, &book, "x.md"), text);
        }
    }

    #[test]
    fn base64_follows_rfc_4648() {
        let encoded: Vec<String> =
            ["", "f", "fo", "foo", "foob", "fooba", "foobar"].iter().map(|t| base64(t.as_bytes())).collect();
        assert_eq!(encoded, ["", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"]);
        assert_eq!(base64(&[0xff, 0xfe, 0x00]), "//4A");
    }

    #[test]
    fn the_source_folder_is_found_from_the_workspace_root() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).ancestors().nth(2).expect("repository root");
        assert_eq!(source_in_repository(&root.join("docs"), "."), "docs");
        assert_eq!(source_in_repository(&root.join("docs/ko"), "."), "docs/ko");
    }

    #[test]
    fn code_and_images_are_left_alone() {
        let text = "```markdown\n[a](../../crates/a.rs)\n```\n`[b](../../crates/b.rs)` ![c](../../crates/c.svg)\n\
                    [d [nested]](../../crates/d.rs)\n";
        assert_eq!(
            rewrite_repository_links(text, &english(), "lessons/a.md"),
            "```markdown\n[a](../../crates/a.rs)\n```\n`[b](../../crates/b.rs)` ![c](../../crates/c.svg)\n\
             d [nested] (`crates/d.rs`)\n"
        );
    }
}
