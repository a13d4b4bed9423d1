//! The core track in one sitting: its lessons, in the book's order, as one learner in one shell follows
//! them. Services a lesson starts with ` &` stay up into the next lesson unless the lesson stops them
//! (`kill $(jobs -p)`), and after each lesson no process it started may still be listening on a port.
//! That is what breaks a learner's evening: a lesson that leaves `lb` on 9580 and a later one that
//! binds 9580 again.
//!
//! The lessons need the workspace's binaries built (`cargo build --workspace --bins --examples`), as the
//! docs test does; the nginx, HAProxy and Envoy lessons need those programs, or are skipped (failed with
//! `LB_REQUIRE_EXTERNAL=1`), like in `tests/lessons.rs`. This binary holds one test on purpose: the port
//! check looks at every process below this one.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use docs_check::book::summary;
use docs_check::{Options, check_files};

use common::repository_root;

const CORE_TRACK: &str = "The core track";
const TIME_LIMIT: Duration = Duration::from_secs(8 * 60);

#[test]
fn the_core_track_in_one_sitting() {
    let root = repository_root();
    let chapters = summary(&root).expect("docs/SUMMARY.md");
    let files: Vec<PathBuf> =
        chapters.iter().filter(|c| c.part == CORE_TRACK).map(|c| root.join("docs").join(&c.path)).collect();
    assert!(files.len() >= 10, "the core track in docs/SUMMARY.md has only {} lessons", files.len());
    let options =
        Options { session: true, deadline: Some(Instant::now() + TIME_LIMIT), ..Options::from_env() };
    let report = check_files(&root, &files, &options, |file| eprintln!("{}", file.summary()));
    let mut text = String::new();
    for failure in report.failures() {
        text.push_str(&format!("\n{failure}\n"));
    }
    if let Some(limit) = &report.time_limit {
        text.push_str(&format!("\n{limit}\n"));
    }
    assert!(report.ok(), "the core track does not work in one sitting:\n{text}\n{}", report.final_line());
}
