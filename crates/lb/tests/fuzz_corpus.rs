//! The fuzz targets' seed corpus, replayed as an ordinary test on stable Rust.
//!
//! Run with `cargo nextest run -p lb --test fuzz_corpus`.
//!
//! `crates/lb/fuzz` runs these checks under libFuzzer, which needs nightly and `cargo fuzz`; this file
//! runs the *same* functions (it includes `crates/lb/fuzz/src/lib.rs`) over every file in
//! `crates/lb/fuzz/corpus/<target>/`, so the valid configs, the broken ones and every input a fuzzing
//! run found worth keeping are checked by `cargo test` on every change. Inputs that still crash are
//! kept apart in `crates/lb/fuzz/known_crashes/<target>/` and replayed by an ignored test until fixed.

#[path = "../fuzz/src/lib.rs"]
mod lb_fuzz;

use std::panic::catch_unwind;
use std::path::{Path, PathBuf};

/// The files of one corpus folder, sorted so failures read the same on every machine.
fn files(dir: &Path) -> Vec<PathBuf> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => panic!("cannot read {}: {e}", dir.display()),
    };
    let mut files: Vec<PathBuf> =
        entries.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_file()).collect();
    files.sort();
    files
}

fn fuzz_dir(kind: &str, target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz").join(kind).join(target)
}

/// Run `check` over every file of a folder; the names of the files it panicked on.
fn replay(dir: &Path, check: fn(&[u8])) -> Vec<String> {
    let mut panicked = Vec::new();
    for file in files(dir) {
        let data = match std::fs::read(&file) {
            Ok(d) => d,
            Err(e) => panic!("cannot read {}: {e}", file.display()),
        };
        if catch_unwind(|| check(&data)).is_err() {
            panicked.push(file.display().to_string());
        }
    }
    panicked
}

#[test]
fn config_corpus_never_panics_and_every_error_has_a_position() {
    let dir = fuzz_dir("corpus", "config_parse");
    let panicked = replay(&dir, lb_fuzz::config_parse);
    assert!(panicked.is_empty(), "config_parse panicked on:\n{}", panicked.join("\n"));

    // The corpus must keep exercising both branches: configs that load and configs that do not.
    let (mut good, mut bad) = (0, 0);
    for file in files(&dir) {
        let text = String::from_utf8_lossy(&std::fs::read(&file).unwrap_or_default()).into_owned();
        match lb::Config::parse(&text, "seed.toml") {
            Ok(_) => good += 1,
            Err(_) => bad += 1,
        }
    }
    assert!(good >= 5 && bad >= 10, "{good} valid and {bad} broken seeds; the corpus lost its variety");
}

#[test]
fn a_config_error_names_the_line_and_column_of_the_offending_value() {
    // Line 6 of this seed is `hosts = ["앱.example"]; path_prefix = "/"`: the stray `;` is its 22nd
    // character but its 24th byte (앱 is three bytes in UTF-8), and editors count characters.
    let path = fuzz_dir("corpus", "config_parse").join("broken_after_multibyte.toml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let errors = match lb::Config::parse(&text, "seed.toml") {
        Ok(c) => panic!("a broken seed parsed: {}", c.summary()),
        Err(e) => e,
    };
    assert_eq!((errors.0[0].line, errors.0[0].column), (6, 22), "{errors}");
}

#[test]
fn hash_key_corpus_never_panics() {
    let panicked = replay(&fuzz_dir("corpus", "hash_key"), lb_fuzz::hash_key);
    assert!(panicked.is_empty(), "hash_key panicked on:\n{}", panicked.join("\n"));
}

#[test]
#[ignore = "known crashes: inputs the fuzzer found that still panic or abort; see crates/lb/fuzz/README.md"]
fn known_crashes_are_fixed() {
    let mut panicked = Vec::new();
    for (target, check) in
        [("config_parse", lb_fuzz::config_parse as fn(&[u8])), ("hash_key", lb_fuzz::hash_key)]
    {
        // A target with no open crash has no folder (git keeps no empty ones).
        let dir = fuzz_dir("known_crashes", target);
        if dir.exists() {
            panicked.extend(replay(&dir, check));
        }
    }
    assert!(panicked.is_empty(), "still crashing:\n{}", panicked.join("\n"));
}
