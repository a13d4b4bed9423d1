//! The Go sidebars of the lessons (complete programs in ```` ```go ```` blocks) are `gofmt`-clean and pass
//! `go vet`. Without Go the check is skipped with a line saying how to install it (`apt-get install
//! golang-go`); `LB_REQUIRE_EXTERNAL=1` (CI) makes that a failure.

mod common;

use docs_check::{external, go, lesson_files};

use common::repository_root;

#[test]
fn go_sidebars_are_formatted_and_vetted() {
    let root = repository_root();
    let files = lesson_files(&root).expect("list the lessons");
    let programs = go::programs(&root, &files).expect("read the lessons");
    // Round robin from scratch and keep-alive each show one.
    let lessons: Vec<&str> = programs.iter().map(|p| p.file.as_str()).collect();
    for lesson in ["docs/lessons/round-robin-from-scratch.md", "docs/lessons/keep-alive-and-pools.md"] {
        assert!(lessons.contains(&lesson), "no complete Go program in {lesson}: {lessons:?}");
    }
    let install = "apt-get install golang-go";
    let Some(go_program) = external::require("go", install, "the Go sidebar test") else { return };
    let Some(gofmt) = external::require("gofmt", install, "the Go sidebar test") else { return };
    let failures: Vec<String> = programs
        .iter()
        .filter_map(|p| {
            go::check(&go_program, &gofmt, p).err().map(|e| format!("{}:{}: {e}", p.file, p.line))
        })
        .collect();
    assert!(failures.is_empty(), "Go sidebars that do not pass gofmt and go vet:\n{}", failures.join("\n"));
}
