//! `cargo run` in a lesson runs the binary that is already built, instead of cargo.
//!
//! A learner types `cargo run -q -p toy-backend -- --listen 127.0.0.1:8080`. The docs test must run
//! the same program, but not through cargo: cargo would take the build lock (held by other tests, or
//! by the `cargo nextest` that started us) and might rebuild in the middle of a timed command. So the
//! command is rewritten to the binary cargo would run:
//!
//! ```text
//! cargo run [-q|--quiet] [--release] -p PKG [--bin NAME | --example NAME] [-- ARGS...]
//!   => target/{debug|release}/NAME ARGS...            (NAME defaults to PKG)
//!   => target/{debug|release}/examples/NAME ARGS...   (with --example)
//! ```
//!
//! `ARGS...` (and anything after them: `| head`, `2>&1`) is kept exactly as written, so quoting and
//! pipes mean what they mean in the lesson. `VAR=value` assignments in front are kept too. Any other
//! cargo option is an error, so the rewrite never silently runs something different from what the
//! learner would (`--features` would need a different build).
//!
//! If the binary is missing, [`crate::runner`] builds it once with the matching `cargo build`, with one
//! exception: a `--release` command whose release binary is missing runs the debug binary when that one
//! is built ([`CargoRun::prefer_built`]). The programs lessons run with `--release` (the simulator) print
//! the same output in both profiles, only slower in debug; building a fat-LTO release tree inside the
//! docs test would take longer than all the lessons together on a 2-core CI machine.

use std::path::{Path, PathBuf};

/// A `cargo run` command, understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CargoRun {
    /// `VAR=value` words written before `cargo`.
    pub env: Vec<String>,
    pub package: String,
    pub release: bool,
    pub example: bool,
    /// The binary or example name: `--bin`/`--example`, else the package name.
    pub name: String,
    /// Everything after the cargo options, verbatim (arguments, pipes, redirections).
    pub rest: String,
}

impl CargoRun {
    /// Where cargo puts the binary, under `target_dir`.
    pub fn binary(&self, target_dir: &Path) -> PathBuf {
        let profile = target_dir.join(if self.release { "release" } else { "debug" });
        if self.example { profile.join("examples").join(&self.name) } else { profile.join(&self.name) }
    }

    /// The same command in the debug profile when the release binary is missing and the debug one is
    /// built (see the module docs); otherwise unchanged.
    pub fn prefer_built(self, target_dir: &Path) -> CargoRun {
        if !self.release || self.binary(target_dir).is_file() {
            return self;
        }
        let debug = CargoRun { release: false, ..self.clone() };
        if debug.binary(target_dir).is_file() { debug } else { self }
    }

    /// The arguments of the `cargo build` that makes [`CargoRun::binary`].
    pub fn build_args(&self) -> Vec<String> {
        let mut args = vec!["build".to_string()];
        if self.release {
            args.push("--release".to_string());
        }
        args.extend(["-p".to_string(), self.package.clone()]);
        if self.example {
            args.extend(["--example".to_string(), self.name.clone()]);
        } else if self.name != self.package {
            args.extend(["--bin".to_string(), self.name.clone()]);
        }
        args
    }

    /// The command for `bash -c` that runs the built binary instead of cargo.
    pub fn shell_command(&self, target_dir: &Path) -> String {
        let mut words: Vec<String> = self.env.clone();
        words.push(shell_quote(&self.binary(target_dir).to_string_lossy()));
        if !self.rest.is_empty() {
            words.push(self.rest.clone());
        }
        words.join(" ")
    }
}

/// `None` if `command` is not a `cargo run`; `Some(Err(reason))` if it is one the docs test cannot
/// translate faithfully.
pub fn parse(command: &str) -> Option<Result<CargoRun, String>> {
    // bash removes backslash-newline before it splits words; do the same so a `cargo run` spread over
    // lines is read like one line.
    let command = command.replace("\\\n", "");
    let words = split_words(&command);
    let mut index = 0;
    let mut env = Vec::new();
    while let Some(Word { text: word, .. }) = words.get(index) {
        if is_assignment(word) {
            env.push(word.to_string());
            index += 1;
        } else {
            break;
        }
    }
    let text = |i: usize| words.get(i).map(|w| w.text);
    if text(index) != Some("cargo") || text(index + 1) != Some("run") {
        return None;
    }
    index += 2;
    let mut package = None;
    let mut release = false;
    let mut bin = None;
    let mut example = None;
    let mut rest = String::new();
    while let Some(&Word { start, text: word }) = words.get(index) {
        // `--flag value` takes two words, `--flag=value` (and `-pNAME`) one.
        let value = |inline: Option<&str>| -> Result<OptionValue, String> {
            match inline {
                Some(v) => Ok(OptionValue { value: v.to_string(), words: 1 }),
                None => words
                    .get(index + 1)
                    .map(|w| OptionValue { value: w.text.to_string(), words: 2 })
                    .ok_or_else(|| format!("`{word}` needs a value")),
            }
        };
        let taken = match word {
            "-q" | "--quiet" => Ok(1),
            "--release" => {
                release = true;
                Ok(1)
            }
            "--" => {
                rest = command[start + 2..].trim().to_string();
                break;
            }
            "-p" | "--package" => set(&mut package, value(None)),
            "--bin" => set(&mut bin, value(None)),
            "--example" => set(&mut example, value(None)),
            w if w.starts_with("--package=") => set(&mut package, value(w.strip_prefix("--package="))),
            w if w.starts_with("--bin=") => set(&mut bin, value(w.strip_prefix("--bin="))),
            w if w.starts_with("--example=") => set(&mut example, value(w.strip_prefix("--example="))),
            w if w.starts_with("-p") => set(&mut package, value(w.strip_prefix("-p"))),
            w if w.starts_with(['|', '>', '<', '&', ';']) || w.starts_with("2>") || w.starts_with("1>") => {
                rest = command[start..].trim().to_string();
                break;
            }
            other => Err(format!(
                "`cargo run {other}`: the docs test runs the built binary and understands only \
                 -q, --release, -p PKG, --bin NAME, --example NAME and `--`"
            )),
        };
        match taken {
            Ok(n) => index += n,
            Err(reason) => return Some(Err(reason)),
        }
    }
    let Some(package) = package else {
        return Some(Err("`cargo run` in a lesson must name its package with `-p PKG`".to_string()));
    };
    if bin.is_some() && example.is_some() {
        return Some(Err("`cargo run` with both --bin and --example".to_string()));
    }
    let name = example.clone().or(bin).unwrap_or_else(|| package.clone());
    Some(Ok(CargoRun { env, package, release, example: example.is_some(), name, rest }))
}

/// A word of a command line and the byte offset it starts at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Word<'a> {
    start: usize,
    text: &'a str,
}

/// Splits on whitespace, keeping each word's byte offset so the tail can be sliced out verbatim.
/// Quotes are not interpreted: cargo's own options never need them, and the arguments after `--` are
/// passed on untouched.
fn split_words(command: &str) -> Vec<Word<'_>> {
    let mut words = Vec::new();
    let mut start = None;
    for (i, c) in command.char_indices() {
        match (c.is_whitespace(), start) {
            (true, Some(s)) => {
                words.push(Word { start: s, text: &command[s..i] });
                start = None;
            }
            (false, None) => start = Some(i),
            _ => {}
        }
    }
    if let Some(s) = start {
        words.push(Word { start: s, text: &command[s..] });
    }
    words
}

/// An option's value, and how many words of the command line it took (`-p lb` two, `-plb` one).
#[derive(Debug)]
struct OptionValue {
    value: String,
    words: usize,
}

/// Stores an option's value and passes on how many words it took.
fn set(slot: &mut Option<String>, value: Result<OptionValue, String>) -> Result<usize, String> {
    value.map(|OptionValue { value, words }| {
        *slot = Some(value);
        words
    })
}

fn is_assignment(word: &str) -> bool {
    match word.split_once('=') {
        Some((name, _)) => {
            !name.is_empty()
                && !name.starts_with(|c: char| c.is_ascii_digit())
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        }
        None => false,
    }
}

/// Single-quotes a word for bash (a target dir may contain spaces).
pub fn shell_quote(word: &str) -> String {
    if !word.is_empty() && word.chars().all(|c| c.is_ascii_alphanumeric() || "/._-+=:,".contains(c)) {
        return word.to_string();
    }
    format!("'{}'", word.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(command: &str) -> CargoRun {
        match parse(command) {
            Some(Ok(run)) => run,
            other => panic!("{command}: {other:?}"),
        }
    }

    #[test]
    fn plain_package_runs_its_namesake_binary() {
        let r = run("cargo run -q -p toy-backend -- --listen 127.0.0.1:8080 --name 'a b'");
        assert_eq!(r.binary(Path::new("/t")), PathBuf::from("/t/debug/toy-backend"));
        assert_eq!(r.rest, "--listen 127.0.0.1:8080 --name 'a b'");
        assert_eq!(
            r.shell_command(Path::new("/t")),
            "/t/debug/toy-backend --listen 127.0.0.1:8080 --name 'a b'"
        );
        assert_eq!(r.build_args(), vec!["build", "-p", "toy-backend"]);
    }

    #[test]
    fn release_falls_back_to_a_built_debug_binary_only() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let r = run("cargo run --release -q -p lb-compare -- balls");
        assert!(r.clone().prefer_built(dir.path()).release, "nothing built: keep --release (and build it)");
        std::fs::create_dir_all(dir.path().join("debug")).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(dir.path().join("debug/lb-compare"), "").unwrap_or_else(|e| panic!("{e}"));
        assert!(!r.clone().prefer_built(dir.path()).release, "only debug built: run it");
        std::fs::create_dir_all(dir.path().join("release")).unwrap_or_else(|e| panic!("{e}"));
        std::fs::write(dir.path().join("release/lb-compare"), "").unwrap_or_else(|e| panic!("{e}"));
        assert!(r.prefer_built(dir.path()).release, "release built: run it");
    }

    #[test]
    fn release_bin_and_example() {
        let r = run("cargo run --release --package=lb-compare --bin sim");
        assert_eq!(r.binary(Path::new("target")), PathBuf::from("target/release/sim"));
        assert_eq!(r.build_args(), vec!["build", "--release", "-p", "lb-compare", "--bin", "sim"]);
        assert_eq!(r.rest, "");

        let r = run("cargo run --quiet -p lb-algorithms --example=trace -- --seed 7");
        assert_eq!(r.binary(Path::new("target")), PathBuf::from("target/debug/examples/trace"));
        assert_eq!(r.build_args(), vec!["build", "-p", "lb-algorithms", "--example", "trace"]);
        assert_eq!(r.shell_command(Path::new("target")), "target/debug/examples/trace --seed 7");
    }

    #[test]
    fn env_continuations_and_pipes_are_kept() {
        let r = run("RUST_LOG=info cargo run -p lb \\\n  -- check bad.toml 2>&1 | head -3");
        assert_eq!(
            r.shell_command(Path::new("/my target")),
            "RUST_LOG=info '/my target/debug/lb' check bad.toml 2>&1 | head -3"
        );
        // A pipe straight after the cargo options applies to the binary's output.
        let r = run("cargo run -q -pfoo | wc -l");
        assert_eq!(r.shell_command(Path::new("t")), "t/debug/foo | wc -l");
    }

    #[test]
    fn other_commands_are_not_translated() {
        assert_eq!(parse("cargo build -p lb"), None);
        assert_eq!(parse("curl -s 127.0.0.1:8080"), None);
        assert_eq!(parse("echo cargo run -p x"), None);
    }

    #[test]
    fn options_that_change_the_build_are_refused() {
        assert!(matches!(parse("cargo run -p lb --features tls"), Some(Err(_))));
        assert!(matches!(parse("cargo run -- --help"), Some(Err(_))));
        assert!(matches!(parse("cargo run -p"), Some(Err(_))));
    }
}
