//! `book-links`: the mdBook preprocessor that keeps the book's links to repository files from breaking.
//!
//! Run by `mdbook build docs` and `mdbook serve docs` (the English book, `docs/book.toml`), and by
//! `mdbook build docs/ko` and `mdbook serve docs/ko` (the Korean one, `docs/ko/book.toml`):
//!
//! ```toml
//! [preprocessor.repo-links]
//! command = "cargo run -q -p docs-check --bin book-links --"
//! # files-url = "https://github.com/OWNER/balance-lab/blob/main"
//! ```
//!
//! mdbook first asks `book-links supports <renderer>` (every renderer is supported: the rewrite is plain
//! Markdown), then pipes `[context, book]` as JSON to `book-links` and reads the book back. Every
//! chapter's Markdown goes through `docs_check::book::rewrite_repository_links`, which needs to know
//! where the book's source folder is in the repository (from the context's `root` and `book.src`) and
//! which chapters the book renders. The walk over the JSON looks for chapter objects (`content` with a
//! `path`) wherever they sit, so it does not depend on how a given mdbook version nests its sections.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::path::Path;

use anyhow::{Context, bail};
use docs_check::book::{Book, repository_root, rewrite_repository_links, source_in_repository};
use serde_json::Value;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().is_some_and(|a| a == "supports") {
        return Ok(());
    }
    let mut input = String::new();
    std::io::stdin().read_to_string(&mut input).context("reading the book from stdin")?;
    let Value::Array(mut pair) = serde_json::from_str(&input).context("parsing the book JSON")? else {
        bail!("expected [context, book] on stdin");
    };
    if pair.len() != 2 {
        bail!("expected [context, book] on stdin, got {} items", pair.len());
    }
    let mut book = pair.pop().unwrap_or_default();
    let context = pair.pop().unwrap_or_default();
    let files_url = context
        .pointer("/config/preprocessor/repo-links/files-url")
        .and_then(Value::as_str)
        .map(str::to_string);
    let root = context.pointer("/root").and_then(Value::as_str).context("no `root` in the book's context")?;
    let src = context.pointer("/config/book/src").and_then(Value::as_str).unwrap_or("src");
    let mut chapters = HashSet::new();
    chapter_paths(&book, &mut chapters);
    let book_info = Book {
        source: source_in_repository(Path::new(root), src),
        chapters,
        files_url,
        repository: repository_root(Path::new(root)),
    };
    rewrite_chapters(&mut book, &book_info);
    let mut stdout = std::io::stdout().lock();
    serde_json::to_writer(&mut stdout, &book).context("writing the book")?;
    stdout.flush().context("writing the book")?;
    Ok(())
}

/// A chapter object's file, relative to the book's source folder.
fn chapter_path(map: &serde_json::Map<String, Value>) -> Option<String> {
    if !map.contains_key("content") {
        return None;
    }
    ["source_path", "path"].iter().find_map(|key| map.get(*key).and_then(Value::as_str)).map(str::to_string)
}

fn chapter_paths(value: &Value, out: &mut HashSet<String>) {
    match value {
        Value::Object(map) => {
            out.extend(chapter_path(map));
            map.values().for_each(|child| chapter_paths(child, out));
        }
        Value::Array(items) => items.iter().for_each(|item| chapter_paths(item, out)),
        _ => {}
    }
}

fn rewrite_chapters(value: &mut Value, book: &Book) {
    match value {
        Value::Object(map) => {
            if let (Some(path), Some(Value::String(content))) = (chapter_path(map), map.get_mut("content")) {
                *content = rewrite_repository_links(content, book, &path);
            }
            for child in map.values_mut() {
                rewrite_chapters(child, book);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|item| rewrite_chapters(item, book)),
        _ => {}
    }
}
