//! Finding the real programs (nginx, haproxy, envoy, lb) and saying clearly what to do when one is
//! missing.
//!
//! nginx and HAProxy come from Debian packages and live in `/usr/sbin`, which is not on every
//! user's `PATH`, so those folders are searched too. `lb` is built by this workspace: the one next
//! to the running executable (the same `target/<profile>/` folder) wins over one on `PATH`, so
//! `cargo build -p lb && cargo run -p lab -- up lb` runs the proxy just built.

use std::env;
use std::path::{Path, PathBuf};

use crate::balancer::Balancer;

/// The command that installs nginx, HAProxy, Envoy, wrk and strace on this machine.
pub const INSTALL_HINT: &str = "bash scripts/install-balancers.sh";

/// Environment variable that turns a missing program from a skip into a failure (CI sets it).
pub const REQUIRE_ENV: &str = "LB_REQUIRE_EXTERNAL";

/// Folders searched after `PATH`: Debian installs nginx and haproxy in `/usr/sbin`.
const EXTRA_DIRS: [&str; 3] = ["/usr/sbin", "/usr/local/sbin", "/sbin"];

/// Where the program that runs `balancer` is, if anywhere.
pub fn find(balancer: Balancer) -> Option<PathBuf> {
    if balancer == Balancer::Lb
        && let Some(found) = next_to_current_exe("lb")
    {
        return Some(found);
    }
    find_on_path(balancer.program())
}

/// `name` in a `PATH` folder or one of the sbin folders.
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH").unwrap_or_default();
    env::split_paths(&path)
        .chain(EXTRA_DIRS.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

/// `name` in the folder of the running executable, or its parent: a test binary runs from
/// `target/debug/deps/`, the binaries sit in `target/debug/`.
fn next_to_current_exe(name: &str) -> Option<PathBuf> {
    let exe = env::current_exe().ok()?;
    let dir = exe.parent()?;
    [Some(dir), dir.parent()].into_iter().flatten().map(|d| d.join(name)).find(|p| is_executable(p))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// What to tell a user when `balancer`'s program is missing.
pub fn missing_message(balancer: Balancer) -> String {
    match balancer {
        Balancer::Lb => "the lb binary is not built: run `cargo build -p lb` (lab looks next to its own executable, then on PATH)".to_string(),
        other => format!("{} is not installed: install it with `{INSTALL_HINT}`", other.program()),
    }
}

/// True when [`REQUIRE_ENV`] is set to `1`: a missing program must fail, not skip.
pub fn external_required() -> bool {
    env::var(REQUIRE_ENV).is_ok_and(|v| v == "1")
}
