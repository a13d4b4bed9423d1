//! Finding the repository root, where `nginx/`, `haproxy/`, `envoy/` and `docker-compose.yml` live.

use std::path::{Path, PathBuf};

/// True if `dir` looks like this repository's root.
fn is_root(dir: &Path) -> bool {
    dir.join("Cargo.toml").is_file() && dir.join("nginx").is_dir() && dir.join("haproxy").is_dir()
}

/// The repository root: the first folder from `start` upwards that has `Cargo.toml`, `nginx/` and
/// `haproxy/`; else the root this crate was built in (so `cargo run -p lab` works from anywhere).
pub fn find_root(start: &Path) -> Option<PathBuf> {
    if let Some(found) = start.ancestors().find(|d| is_root(d)) {
        return Some(found.to_path_buf());
    }
    let built = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    is_root(&built).then(|| built.canonicalize().unwrap_or(built))
}

/// The root this crate was built in (tests use it).
pub fn source_root() -> PathBuf {
    let built = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    built.canonicalize().unwrap_or(built)
}
