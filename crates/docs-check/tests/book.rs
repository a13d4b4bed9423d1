//! The lessons as books: `docs/SUMMARY.md` lists every lesson, `docs/ko/SUMMARY.md` every Korean page
//! with the core track in the order of `docs/README.md`, and `mdbook build docs` and `mdbook build
//! docs/ko` succeed with no link in the rendered books pointing at a file that is not there.
//!
//! The build needs `mdbook` (`cargo install mdbook --locked`); without it the build test is skipped,
//! unless `LB_REQUIRE_EXTERNAL=1` (CI), which makes it fail.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use docs_check::book::{summary, summary_of};
use docs_check::external;
use docs_check::translation::{KOREAN_DIR, core_track};

use common::repository_root;

#[test]
fn every_lesson_is_in_the_summary() {
    let root = repository_root();
    let chapters = summary(&root).expect("docs/SUMMARY.md");
    let listed: BTreeSet<&str> = chapters.iter().map(|c| c.path.as_str()).collect();
    let mut missing = Vec::new();
    for entry in fs::read_dir(root.join("docs/lessons")).expect("docs/lessons") {
        let name = entry.expect("entry").file_name().to_string_lossy().into_owned();
        if name.ends_with(".md") && !listed.contains(format!("lessons/{name}").as_str()) {
            missing.push(name);
        }
    }
    assert!(missing.is_empty(), "lessons not in docs/SUMMARY.md, so not in the book: {missing:?}");
    for chapter in &chapters {
        assert!(
            root.join("docs").join(&chapter.path).is_file(),
            "SUMMARY.md lists a missing file: {chapter:?}"
        );
    }
    // The path has two tracks; the core track comes first, in the order docs/README.md teaches it.
    let parts: Vec<&str> = chapters.iter().map(|c| c.part.as_str()).collect();
    assert_eq!(parts.iter().position(|p| *p == "The core track"), Some(1), "{parts:?}");
    assert!(parts.contains(&"Deep dives"), "{parts:?}");
}

#[test]
fn the_korean_summary_follows_the_core_track() {
    let root = repository_root();
    let chapters = summary_of(&root, KOREAN_DIR).expect("docs/ko/SUMMARY.md");
    let listed: Vec<&str> = chapters.iter().map(|c| c.path.as_str()).collect();
    // The Korean learning path first, then the core track in the English order, then the glossary.
    let core = core_track(&root).expect("the core track in docs/README.md");
    let mut expected = vec!["README.md"];
    expected.extend(core.iter().map(String::as_str));
    expected.push("용어집.md");
    assert_eq!(listed, expected, "docs/ko/SUMMARY.md against the core track of docs/README.md");
    // Every Korean page is in the Korean book, and every chapter it lists is there.
    let mut missing = Vec::new();
    for entry in fs::read_dir(root.join(KOREAN_DIR)).expect("docs/ko") {
        let name = entry.expect("entry").file_name().to_string_lossy().into_owned();
        if name.ends_with(".md") && name != "SUMMARY.md" && !listed.contains(&name.as_str()) {
            missing.push(name);
        }
    }
    assert!(missing.is_empty(), "Korean pages not in docs/ko/SUMMARY.md, so not in the book: {missing:?}");
    let absent: Vec<&str> =
        listed.iter().copied().filter(|path| !root.join(KOREAN_DIR).join(path).is_file()).collect();
    assert!(absent.is_empty(), "docs/ko/SUMMARY.md lists files that are not there yet: {absent:?}");
}

#[test]
fn the_book_builds_without_broken_links() {
    build_without_broken_links("docs", 25);
}

#[test]
fn the_korean_book_builds_without_broken_links() {
    // The Korean learning path, the 17 lessons of the core track and the glossary.
    build_without_broken_links(KOREAN_DIR, 18);
}

/// Builds the book in `folder` with `mdbook` into a temp dir, and fails on a build error or warning, on
/// fewer than `min_pages` pages, or on a link in the rendered pages that points at nothing.
fn build_without_broken_links(folder: &str, min_pages: usize) {
    let Some(mdbook) = external::require("mdbook", "cargo install mdbook --locked", "the book test") else {
        return;
    };
    let root = repository_root();
    let out = tempfile::tempdir().expect("temp dir");
    // The preprocessor runs from the binary cargo built for this test, not through the `cargo run` that
    // book.toml names: a nested cargo would wait for the build lock this `cargo test` holds.
    let output = Command::new(mdbook)
        .arg("build")
        .arg(root.join(folder))
        .arg("--dest-dir")
        .arg(out.path())
        .env("MDBOOK_PREPROCESSOR__REPO_LINKS__COMMAND", env!("CARGO_BIN_EXE_book-links"))
        .output()
        .expect("running mdbook");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "mdbook build {folder} failed:\n{stderr}");
    assert!(
        !stderr.contains("ERROR") && !stderr.contains("WARN"),
        "mdbook build {folder} complained:\n{stderr}"
    );
    let mut pages = Vec::new();
    html_files(out.path(), &mut pages);
    assert!(pages.len() > min_pages, "only {} pages rendered from {folder}", pages.len());
    let mut broken = Vec::new();
    for page in &pages {
        let html = fs::read_to_string(page).expect("read page");
        for target in relative_targets(&html) {
            let file = percent_decode(target.split(['#', '?']).next().unwrap_or_default());
            if file.is_empty() {
                continue;
            }
            let resolved = normalize(&page.parent().expect("page folder").join(&file));
            if !resolved.starts_with(out.path()) || !resolved.exists() {
                broken.push(format!("{}: {target}", page.strip_prefix(out.path()).unwrap_or(page).display()));
            }
        }
    }
    assert!(broken.is_empty(), "broken links in the book {folder}:\n{}", broken.join("\n"));
}

/// `%EC%9A%A9` as the bytes it stands for: a browser decodes a link to `용어집.html` before it asks for
/// the file, so the check does too.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn html_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            html_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "html") {
            out.push(path);
        }
    }
}

/// Every `href="..."` and `src="..."` value that is a relative path (no scheme, not absolute, not only
/// an anchor).
fn relative_targets(html: &str) -> Vec<String> {
    let mut targets = Vec::new();
    for attribute in ["href=\"", "src=\""] {
        for (start, _) in html.match_indices(attribute) {
            let value = &html[start + attribute.len()..];
            let Some(end) = value.find('"') else { continue };
            let value = &value[..end];
            let scheme = value.split_once(':').is_some_and(|(s, _)| !s.contains('/'));
            // `/...` is relative to wherever the book is served (mdbook's 404 page uses it), not a file.
            if !value.is_empty() && !value.starts_with('#') && !value.starts_with('/') && !scheme {
                targets.push(value.replace("&amp;", "&"));
            }
        }
    }
    targets
}

/// `a/b/../c` as `a/c`, without touching the file system.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}
