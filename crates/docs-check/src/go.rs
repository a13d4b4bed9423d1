//! The Go sidebars: a lesson may show readers coming from Go the same idea as a complete Go program, in
//! a ```` ```go ```` block that starts with its `package` clause (after any comment). Such a block is
//! checked like the code it is: `gofmt -l` must list nothing and `go vet` must pass, in a throwaway
//! module. Fragments (a ```` ```go ```` block with no `package` clause, such as the seed's handler
//! quoted in the first lesson) are quotations and are not checked.
//!
//! `tests/go_sidebars.rs` runs this over every lesson when Go is installed and skips, saying how to
//! install it, when it is not (`LB_REQUIRE_EXTERNAL=1` makes that a failure).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::Error;
use crate::markdown::Document;

/// A complete Go program shown in a lesson.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoProgram {
    /// The lesson, relative to the repository root.
    pub file: String,
    /// The line of the opening fence.
    pub line: usize,
    pub source: String,
}

/// The complete Go programs in `files` (paths inside `root`), in file order.
pub fn programs(root: &Path, files: &[PathBuf]) -> Result<Vec<GoProgram>, Error> {
    let mut found = Vec::new();
    for file in files {
        let text = fs::read_to_string(file).map_err(|source| Error::Read { path: file.clone(), source })?;
        let name = file.strip_prefix(root).unwrap_or(file).display().to_string();
        found.extend(programs_in(&name, &text));
    }
    Ok(found)
}

/// The complete Go programs in one Markdown text.
pub fn programs_in(file: &str, markdown: &str) -> Vec<GoProgram> {
    Document::parse(markdown)
        .fences
        .into_iter()
        .filter(|fence| fence.info.split([',', ' ']).next() == Some("go"))
        .filter_map(|fence| {
            let lines: Vec<&str> = fence.content.iter().map(|line| line.text.as_str()).collect();
            let first_code =
                lines.iter().map(|l| l.trim()).find(|l| !l.is_empty() && !l.starts_with("//"))?;
            first_code.starts_with("package ").then(|| GoProgram {
                file: file.to_string(),
                line: fence.line,
                source: lines.join("\n") + "\n",
            })
        })
        .collect()
}

/// Runs `gofmt -l` and `go vet` on `program` in a temporary module; `Err` says what they reported.
pub fn check(go: &Path, gofmt: &Path, program: &GoProgram) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| format!("temporary module: {e}"))?;
    // `go 1.19`: the oldest Go the lessons promise to work with (Debian 12's golang-go).
    fs::write(dir.path().join("go.mod"), "module sidebar\n\ngo 1.19\n")
        .and_then(|()| fs::write(dir.path().join("main.go"), &program.source))
        .map_err(|e| format!("writing the temporary module: {e}"))?;
    let run = |program: &Path, args: &[&str]| {
        Command::new(program)
            .args(args)
            .current_dir(dir.path())
            // Offline and with the installed toolchain only: the program uses the standard library.
            .env("GOTOOLCHAIN", "local")
            .env("GOFLAGS", "-mod=mod")
            .env("GOPROXY", "off")
            .output()
            .map_err(|e| format!("running {}: {e}", program.display()))
    };
    let format = run(gofmt, &["-l", "-d", "main.go"])?;
    let unformatted = String::from_utf8_lossy(&format.stdout);
    if !format.status.success() || !unformatted.trim().is_empty() {
        return Err(format!(
            "gofmt would change it:\n{}{}",
            unformatted,
            String::from_utf8_lossy(&format.stderr)
        ));
    }
    let vet = run(go, &["vet", "."])?;
    if !vet.status.success() {
        return Err(format!("go vet failed:\n{}", String::from_utf8_lossy(&vet.stderr)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_complete_programs_are_checked() {
        let text = "# Go\n\n```go\nvar counter uint64\n```\n\n```go\n// A program.\npackage main\n\nfunc main() {}\n```\n\n\
                    ```rust\nfn main() {}\n```\n";
        let found = programs_in("docs/go.md", text);
        assert_eq!(
            found,
            [GoProgram {
                file: "docs/go.md".to_string(),
                line: 7,
                source: "// A program.\npackage main\n\nfunc main() {}\n".to_string()
            }]
        );
    }
}
