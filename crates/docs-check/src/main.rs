//! `docs-check`: run every command the lessons show and check every link they make.
//!
//! Run with
//!
//! ```sh
//! cargo run -p docs-check                              # README.md, README.ko.md, docs/**/*.md
//! cargo run -p docs-check -- docs/lessons/weights.md   # some files
//! cargo run -p docs-check -- --links-only              # links and paths only
//! ```
//!
//! It prints one line per file (`docs/lessons/weights.md: 4 commands passed, 1 skipped, links ok`),
//! every failure with its file and line, then `N passed, M failed` (files), and exits 1 on any failure.
//! A block that `requires=` a program not on `PATH` is skipped with the rest of its file, unless
//! `LB_REQUIRE_EXTERNAL=1` is set, which makes it a failure.
//! `cargo run` commands in a lesson run the already-built binaries: build first (`cargo build
//! --workspace --bins --examples`) so they are current.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Parser;
use docs_check::{Options, check_files, lesson_files};

#[derive(Debug, Parser)]
#[command(about = "Run the commands shown in the lessons and check their links")]
struct Args {
    /// Check links and repository paths only; run no command.
    #[arg(long)]
    links_only: bool,
    /// Print each command before running it.
    #[arg(short, long)]
    verbose: bool,
    /// Markdown files to check (default: README.md, README.ko.md and docs/**/*.md).
    files: Vec<PathBuf>,
}

fn main() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    // Commands run in their own process groups, so the terminal's Ctrl-C does not reach them; catch it
    // here and let the checker stop them, background services included, before exiting.
    std::thread::spawn(|| {
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
        if runtime.block_on(tokio::signal::ctrl_c()).is_ok() {
            eprintln!("interrupted: stopping the commands that are running");
            docs_check::runner::interrupt();
        }
    });
    let root = repository_root()?;
    let files = if args.files.is_empty() {
        lesson_files(&root)?
    } else {
        let cwd = std::env::current_dir().context("current directory")?;
        let mut files = Vec::new();
        for file in &args.files {
            let path = cwd.join(file);
            let path = path.canonicalize().with_context(|| format!("{}", file.display()))?;
            if !path.starts_with(&root) {
                bail!("{} is outside the repository {}", file.display(), root.display());
            }
            files.push(path);
        }
        files
    };
    // LB_REQUIRE_EXTERNAL=1 (set in CI) turns a missing nginx/haproxy/envoy from a skip into a failure.
    let options = Options { links_only: args.links_only, verbose: args.verbose, ..Options::from_env() };
    let report = check_files(&root, &files, &options, |file| println!("{}", file.summary()));
    let failures: Vec<String> = report.failures().map(ToString::to_string).collect();
    if !failures.is_empty() {
        println!("\n{} failure{}:\n", failures.len(), if failures.len() == 1 { "" } else { "s" });
        for failure in &failures {
            println!("{failure}\n");
        }
    }
    if let Some(limit) = &report.time_limit {
        println!("{limit}");
    }
    println!("{}", report.final_line());
    if docs_check::runner::interrupted() {
        return Ok(ExitCode::from(130));
    }
    Ok(if report.ok() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// The repository root: the nearest ancestor of the current directory with a `Cargo.toml` that has a
/// `[workspace]`, so `docs-check` works from any folder of the checkout.
fn repository_root() -> anyhow::Result<PathBuf> {
    let cwd = std::env::current_dir().context("current directory")?.canonicalize()?;
    for dir in cwd.ancestors() {
        let manifest = dir.join("Cargo.toml");
        if std::fs::read_to_string(&manifest).is_ok_and(|text| text.contains("[workspace]")) {
            return Ok(dir.to_path_buf());
        }
    }
    bail!("no Cargo workspace found above {}", cwd.display())
}
