//! Programs from outside the workspace that a test needs (`mdbook`, `go`): found on `PATH`, or the test
//! is skipped with a line saying how to install them, or it fails when [`REQUIRE_EXTERNAL_VAR`] is `1`
//! (CI installs them, so a test skipped there would be a test nobody runs).

use std::path::PathBuf;

use crate::REQUIRE_EXTERNAL_VAR;

/// Where `name` is on `PATH`: the first folder holding an executable file of that name.
pub fn find(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|candidate| {
        candidate.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

/// `name` on `PATH` for the test `test`; `None` (after printing `SKIPPED: ...` with `install`, the way
/// to get it) when it is missing. Panics instead when [`REQUIRE_EXTERNAL_VAR`] is `1`.
pub fn require(name: &str, install: &str, test: &str) -> Option<PathBuf> {
    if let Some(found) = find(name) {
        return Some(found);
    }
    let line = format!("SKIPPED: {test} needs {name}, which is not on PATH; install it with {install}");
    let required = std::env::var(REQUIRE_EXTERNAL_VAR).is_ok_and(|v| v == "1");
    assert!(!required, "{line} ({REQUIRE_EXTERNAL_VAR}=1 makes a missing program a failure)");
    eprintln!("{line}");
    None
}
