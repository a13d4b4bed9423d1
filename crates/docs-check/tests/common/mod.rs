//! Helpers the docs-check test files share.

#![allow(dead_code)] // each test file uses a different subset

use std::fs;
use std::path::{Path, PathBuf};

/// The repository root: crates/docs-check -> crates -> the root.
pub fn repository_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).ancestors().nth(2).map(Path::to_path_buf).unwrap_or_default()
}

/// A fixture repository in a temp dir with the given files.
pub fn fixture(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    for (path, text) in files {
        let path = dir.path().join(path);
        fs::create_dir_all(path.parent().expect("fixture paths have a folder")).expect("mkdir");
        fs::write(path, text).expect("write fixture");
    }
    dir
}
