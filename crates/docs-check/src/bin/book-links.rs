//! `book-links`: the mdBook preprocessor that keeps the book's links to repository files from breaking.
//!
//! Run by `mdbook build docs` and `mdbook serve docs`, which read `docs/book.toml`:
//!
//! ```toml
//! [preprocessor.repo-links]
//! command = "cargo run -q -p docs-check --bin book-links --"
//! # files-url = "https://github.com/OWNER/balance-lab/blob/main"
//! ```
//!
//! mdbook first asks `book-links supports <renderer>` (every renderer is supported: the rewrite is plain
//! Markdown), then pipes `[context, book]` as JSON to `book-links` and reads the book back. Every
//! chapter's Markdown goes through `docs_check::book::rewrite_repository_links`. The walk over the JSON
//! looks for chapter objects (`content` with a `path`) wherever they sit, so it does not depend on how
//! a given mdbook version nests its sections.

use std::io::{Read, Write};

use anyhow::{Context, bail};
use docs_check::book::rewrite_repository_links;
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
    rewrite_chapters(&mut book, files_url.as_deref());
    let mut stdout = std::io::stdout().lock();
    serde_json::to_writer(&mut stdout, &book).context("writing the book")?;
    stdout.flush().context("writing the book")?;
    Ok(())
}

fn rewrite_chapters(value: &mut Value, files_url: Option<&str>) {
    match value {
        Value::Object(map) => {
            let path = ["source_path", "path"]
                .iter()
                .find_map(|key| map.get(*key).and_then(Value::as_str))
                .map(str::to_string);
            if let (Some(path), Some(Value::String(content))) = (path, map.get_mut("content")) {
                *content = rewrite_repository_links(content, &path, files_url);
            }
            for child in map.values_mut() {
                rewrite_chapters(child, files_url);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|item| rewrite_chapters(item, files_url)),
        _ => {}
    }
}
