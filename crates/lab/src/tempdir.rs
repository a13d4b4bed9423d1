//! A scratch folder per run, removed when dropped: where the rendered config, nginx's prefix
//! (pid file, temp paths) and the balancer's log go.
//!
//! The folder comes from the `tempfile` crate, which creates it with a random name and fails rather
//! than reuse one that exists: a predictable name in a shared `/tmp` could be created first by another
//! user (who would then own the folder nginx writes its pid file into), and deleting whatever sits
//! there could remove someone else's files. This type only adds the `lab-<label>-` prefix, so a
//! leftover folder says which balancer it was for.

use std::io;
use std::path::Path;

/// A folder under the system temp dir (`$TMPDIR/lab-<label>-XXXXXX`), deleted with everything in it
/// on drop.
#[derive(Debug)]
pub struct TempDir {
    dir: tempfile::TempDir,
}

impl TempDir {
    /// Creates a new, empty folder named `lab-<label>-` and a random suffix.
    pub fn new(label: &str) -> io::Result<TempDir> {
        let dir = tempfile::Builder::new().prefix(&format!("lab-{label}-")).tempdir()?;
        Ok(TempDir { dir })
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn each_folder_is_new_labelled_and_removed_on_drop() {
        let a = TempDir::new("nginx").unwrap();
        let b = TempDir::new("nginx").unwrap();
        assert_ne!(a.path(), b.path());
        let name = a.path().file_name().unwrap().to_string_lossy().into_owned();
        assert!(name.starts_with("lab-nginx-"), "{name}");
        assert!(a.path().is_dir());
        std::fs::write(a.path().join("nginx.pid"), "1").unwrap();
        let path = a.path().to_path_buf();
        drop(a);
        assert!(!path.exists(), "{} survived the drop", path.display());
        assert!(b.path().is_dir(), "dropping one folder touched another");
    }
}
