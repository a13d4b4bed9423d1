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

/// `path` relative to `root` when it is inside it (`nginx/round-robin.conf`), else as it is: what the
/// lab prints, so its output is the same on every checkout.
pub fn relative<'a>(root: &Path, path: &'a Path) -> &'a Path {
    path.strip_prefix(root).unwrap_or(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_inside_the_root_are_shown_relative() {
        let root = Path::new("/src/balance-lab");
        let inside = root.join("nginx/round-robin.conf");
        assert_eq!(relative(root, &inside), Path::new("nginx/round-robin.conf"));
        assert_eq!(
            relative(Path::new("."), Path::new("./envoy/maglev.yaml")),
            Path::new("envoy/maglev.yaml")
        );
        assert_eq!(
            relative(root, Path::new("/tmp/lab-nginx-x/nginx.conf")),
            Path::new("/tmp/lab-nginx-x/nginx.conf")
        );
    }
}
