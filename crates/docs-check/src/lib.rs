//! The docs test: what a lesson tells a learner to run is run, and what it links to exists.
//!
//! A lesson that shows `$ cargo run -p toy-backend -- ...` and the output it prints makes a promise.
//! This crate keeps it: it reads `README.md`, `README.ko.md` and every `docs/**/*.md`, runs each
//! command of each `console` block in the repository root, compares what it prints with what the page
//! shows, and checks every relative link, anchor and backticked repository path. The format lesson
//! authors write to is in `docs/writing-lessons.md`.
//!
//! # Layout
//!
//! - [`markdown`]: fenced blocks, headings and their GitHub anchors, links, code spans.
//! - [`console`]: a `console` block's options and its `$ ` commands with their expected output.
//! - [`matcher`]: expected against actual output, with `...` and `[..]`; the short diff on failure.
//! - [`cargo_run`]: `cargo run -p PKG -- ARGS` rewritten to the built binary.
//! - [`runner`]: `bash -c` with a timeout, process groups, background services, waiting for ports.
//! - [`links`]: relative links, anchors, repository paths in backticks.
//! - [`external`]: programs a test needs from outside the workspace (`mdbook`, `go`), or a skip.
//! - [`ports`]: the TCP ports still listening below the checker, for the one-sitting check.
//! - [`go`]: the Go sidebars, complete programs checked with `gofmt -l` and `go vet`.
//! - [`book`]: the chapters of a book's `SUMMARY.md`, and the book's rewrite of links that leave it.
//! - [`translation`]: the Korean core track against the English one, console block for console block.
//! - this file: the walk over the files and the report ([`check_files`], [`Report`]).
//!
//! `src/main.rs` is the `docs-check` command; `tests/lessons.rs` runs the same check over the
//! repository under `cargo nextest run --workspace`.

pub mod book;
pub mod cargo_run;
pub mod console;
pub mod external;
pub mod go;
pub mod links;
pub mod markdown;
pub mod matcher;
pub mod ports;
pub mod runner;
pub mod translation;

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal};
use thiserror::Error;

use crate::console::{Command, ConsoleBlock};
use crate::markdown::Document;
use crate::runner::{Background, Environment};

/// How many lines of a failed command's stderr a report shows.
const STDERR_LINES: usize = 20;

#[derive(Debug, Error)]
pub enum Error {
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Format { path: PathBuf, message: String },
}

/// Set to `1` (CI does), a block's `requires=` program that is missing fails the file instead of
/// skipping it: CI installs nginx, HAProxy and Envoy, so a lesson quietly skipped there would be a
/// lesson nobody checks.
pub const REQUIRE_EXTERNAL_VAR: &str = "LB_REQUIRE_EXTERNAL";

/// Programs `requires=` may name that `scripts/install-balancers.sh` installs, so the skip line can say
/// how to get them.
const FROM_INSTALL_SCRIPT: &[&str] = &["nginx", "haproxy", "envoy", "wrk", "strace"];

/// What to check and for how long.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Check links and paths only; run no command.
    pub links_only: bool,
    /// Stop starting commands after this instant; files not reached are reported as not checked.
    pub deadline: Option<Instant>,
    /// Print each command to stderr before running it.
    pub verbose: bool,
    /// A program named by `requires=` that is not on `PATH` is a failure, not a skip.
    pub require_external: bool,
    /// Check the files as one learner following them in one shell (the one-sitting check): background
    /// services live on from one file to the next until the lesson's [`STOP_JOBS`] stops them, and a
    /// port still listening below the checker when a file ends is a failure of that file.
    pub session: bool,
}

/// The command a lesson ends with to stop the services it started with ` &`: in a learner's shell it
/// signals every background job. Commands run in separate shells here, with no job table, so the checker
/// does the same to the services it started.
pub const STOP_JOBS: &str = "kill $(jobs -p)";

impl Options {
    /// The defaults, with [`Options::require_external`] from [`REQUIRE_EXTERNAL_VAR`].
    pub fn from_env() -> Options {
        Options {
            require_external: std::env::var(REQUIRE_EXTERNAL_VAR).is_ok_and(|v| v == "1"),
            ..Options::default()
        }
    }
}

/// One problem, where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub file: String,
    pub line: usize,
    pub message: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.message.replace('\n', "\n    "))
    }
}

/// Where a file stopped being run because a block needs a program that is not on `PATH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skip {
    /// The line of the block that needs it.
    pub line: usize,
    /// What it needs and how to get it.
    pub why: String,
}

/// The result for one Markdown file.
#[derive(Debug, Clone, Default)]
pub struct FileReport {
    /// The path relative to the repository root.
    pub file: String,
    pub passed: usize,
    pub failed: usize,
    /// Commands after a failure (their state is unknown, running them would only add noise) or past
    /// the time limit.
    pub not_run: usize,
    /// Commands in `console,ignore` blocks, and every command from a block whose `requires=` program
    /// is missing to the end of the file.
    pub skipped: usize,
    /// Why the rest of the file was skipped, when a block needed a missing program.
    pub skipped_from: Option<Skip>,
    pub broken_links: usize,
    pub links_only: bool,
    pub failures: Vec<Failure>,
}

impl FileReport {
    pub fn ok(&self) -> bool {
        self.failures.is_empty()
    }

    /// `docs/lessons/weights.md: 4 commands passed, 1 skipped, links ok`, and a second line when a
    /// missing program skipped part of the file:
    /// `    skipped: needs nginx; install with bash scripts/install-balancers.sh (line 30 to the end of the file)`.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        if self.links_only {
            parts.push(format!(
                "{} commands not run (--links-only)",
                self.passed + self.not_run + self.skipped
            ));
        } else {
            parts.push(format!("{} commands passed", self.passed));
            if self.failed > 0 {
                parts.push(format!("{} failed", self.failed));
            }
            if self.not_run > 0 {
                parts.push(format!("{} not run", self.not_run));
            }
            parts.push(format!("{} skipped", self.skipped));
        }
        parts.push(match self.broken_links {
            0 => "links ok".to_string(),
            1 => "1 broken link".to_string(),
            n => format!("{n} broken links"),
        });
        let mut line = format!("{}: {}", self.file, parts.join(", "));
        if let Some(Skip { line: from, why }) = &self.skipped_from {
            line.push_str(&format!("\n    skipped: {why} (line {from} to the end of the file)"));
        }
        line
    }
}

/// The result for a set of files.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub files: Vec<FileReport>,
    /// Set when the deadline stopped the check: what was cut short.
    pub time_limit: Option<String>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.time_limit.is_none() && self.files.iter().all(FileReport::ok)
    }

    pub fn failures(&self) -> impl Iterator<Item = &Failure> {
        self.files.iter().flat_map(|f| &f.failures)
    }

    /// `N passed, M failed`, counting files.
    pub fn final_line(&self) -> String {
        let passed = self.files.iter().filter(|f| f.ok()).count();
        format!("{passed} passed, {} failed", self.files.len() - passed)
    }
}

/// The files the docs test reads: `README.md`, `README.ko.md` (when present) and `docs/**/*.md`,
/// in that order, the docs sorted by path.
pub fn lesson_files(root: &Path) -> Result<Vec<PathBuf>, Error> {
    let mut files: Vec<PathBuf> =
        ["README.md", "README.ko.md"].iter().map(|name| root.join(name)).filter(|p| p.is_file()).collect();
    let mut docs = Vec::new();
    collect_markdown(&root.join("docs"), &mut docs)?;
    docs.sort();
    files.extend(docs);
    Ok(files)
}

fn collect_markdown(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), Error> {
    if !dir.is_dir() {
        return Ok(());
    }
    let entries = fs::read_dir(dir).map_err(|source| Error::Read { path: dir.to_path_buf(), source })?;
    for entry in entries {
        let path = entry.map_err(|source| Error::Read { path: dir.to_path_buf(), source })?.path();
        if path.is_dir() {
            collect_markdown(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "md") {
            out.push(path);
        }
    }
    Ok(())
}

/// Checks `files` (paths inside `root`) one after another, calling `on_file` as each one finishes.
/// Files run in sequence because lessons share ports such as 8080; a file's background services are
/// stopped before the next file starts.
pub fn check_files(
    root: &Path,
    files: &[PathBuf],
    options: &Options,
    mut on_file: impl FnMut(&FileReport),
) -> Report {
    let env = Environment::new(root);
    let mut anchors = HashMap::new();
    let mut report = Report::default();
    let mut services: Vec<Background> = Vec::new();
    for (index, file) in files.iter().enumerate() {
        if runner::interrupted() {
            break;
        }
        if options.deadline.is_some_and(|d| Instant::now() >= d) {
            let rest: Vec<String> = files[index..].iter().map(|f| relative(root, f)).collect();
            report.time_limit = Some(format!("time limit reached; not checked: {}", rest.join(", ")));
            break;
        }
        let mut file_report = check_file(&env, file, options, &mut anchors, &mut services);
        if options.session {
            left_listening(&mut file_report, &services);
        }
        if !options.session || !file_report.ok() {
            // The next file starts clean, so one lesson's leftovers are reported once, by that lesson.
            services.drain(..).for_each(Background::stop);
        } else {
            // Services the lesson stopped its own way (`fuser -k PORT/tcp`) are gone: forget them, or
            // the next lesson's wait for a port would report their exit as its own service failing.
            services.retain_mut(|s| s.exited().is_none());
        }
        on_file(&file_report);
        let cut_short = file_report.not_run > 0 && options.deadline.is_some_and(|d| Instant::now() >= d);
        report.files.push(file_report);
        if cut_short {
            let rest: Vec<String> = files[index..].iter().map(|f| relative(root, f)).collect();
            report.time_limit = Some(format!("time limit reached in {}", rest.join(", ")));
            break;
        }
    }
    services.into_iter().for_each(Background::stop);
    report
}

/// In a session, the ports a file left listening: its commands' processes should all be gone.
fn left_listening(report: &mut FileReport, services: &[Background]) {
    let own = ports::own_process_group();
    let left: Vec<_> = ports::listening_below(std::process::id())
        .into_iter()
        .filter(|l| Some(l.process_group) != own)
        .collect();
    if left.is_empty() {
        return;
    }
    let mut line = 0;
    let mut held = Vec::new();
    for listener in &left {
        match services.iter().find(|s| s.process_group() == listener.process_group) {
            Some(service) => {
                line = line.max(service.line);
                held.push(format!("{listener}, started at line {}: `{}`", service.line, service.text));
            }
            None => {
                // Not one of the lesson's jobs: a process that moved to a group of its own. Nobody else
                // will stop it, so stop it here.
                held.push(format!("{listener}, outside the lesson's jobs"));
                if let Some(group) = i32::try_from(listener.process_group).ok().and_then(Pid::from_raw) {
                    let _ = rustix::process::kill_process_group(group, Signal::TERM);
                }
            }
        }
    }
    report.failed += 1;
    report.failures.push(Failure {
        file: report.file.clone(),
        line,
        message: format!(
            "the lesson ends with ports still listening, which the next lesson may need; end it with \
             `{STOP_JOBS}`:\n{}",
            held.join("\n")
        ),
    });
}

fn check_file(
    env: &Environment,
    file: &Path,
    options: &Options,
    anchors: &mut HashMap<PathBuf, Vec<String>>,
    services: &mut Vec<Background>,
) -> FileReport {
    let mut report = FileReport {
        file: relative(&env.root, file),
        links_only: options.links_only,
        ..FileReport::default()
    };
    let text = match fs::read_to_string(file) {
        Ok(text) => text,
        Err(e) => {
            report.fail(0, format!("cannot read: {e}"));
            return report;
        }
    };
    let doc = Document::parse(&text);
    for broken in links::check(&env.root, file, &doc, anchors) {
        report.broken_links += 1;
        report.fail(broken.line, broken.message);
    }
    let mut blocks = Vec::new();
    let mut malformed = false;
    for parsed in doc.fences.iter().filter_map(console::parse_block) {
        match parsed {
            Ok(block) => blocks.push(block),
            Err(error) => {
                malformed = true;
                report.failed += 1;
                report.fail(error.line, format!("malformed console block: {}", error.message));
            }
        }
    }
    report.skipped = blocks.iter().filter(|b| b.options.ignore).map(|b| b.commands.len()).sum();
    let runnable: Vec<&ConsoleBlock> = blocks.iter().filter(|b| !b.options.ignore).collect();
    if options.links_only || malformed {
        report.not_run = runnable.iter().map(|b| b.commands.len()).sum();
        return report;
    }
    run_blocks(env, &runnable, options, &mut report, services);
    report
}

impl FileReport {
    fn fail(&mut self, line: usize, message: String) {
        self.failures.push(Failure { file: self.file.clone(), line, message });
    }
}

/// Runs a file's blocks in order, counting into `report`. The services they start join `services`,
/// which the caller stops (at the end of the file, or of the session).
fn run_blocks(
    env: &Environment,
    blocks: &[&ConsoleBlock],
    options: &Options,
    report: &mut FileReport,
    services: &mut Vec<Background>,
) {
    let mut stopped = false;
    for block in blocks {
        let count = block.commands.len();
        if stopped || runner::interrupted() {
            report.not_run += count;
            continue;
        }
        if report.skipped_from.is_some() {
            report.skipped += count;
            continue;
        }
        let missing: Vec<&str> = block
            .options
            .requires
            .iter()
            .map(String::as_str)
            .filter(|program| env.find_program(program).is_none())
            .collect();
        if !missing.is_empty() {
            // The rest of the file goes too: later blocks talk to the services this one starts.
            let why = missing_programs(&missing);
            if options.require_external {
                report.failed += 1;
                report.not_run += count.saturating_sub(1);
                report.fail(
                    block.line,
                    format!(
                        "{why}\n({REQUIRE_EXTERNAL_VAR}=1 makes a missing program a failure, not a skip)"
                    ),
                );
                stopped = true;
            } else {
                report.skipped += count;
                report.skipped_from = Some(Skip { line: block.line, why });
            }
            continue;
        }
        match run_block(env, block, options, services) {
            Ok(passed) => report.passed += passed,
            Err(failure) => {
                report.passed += failure.passed;
                report.failed += 1;
                report.not_run += count.saturating_sub(failure.passed + 1);
                report.fail(failure.line, failure.message);
                stopped = true;
            }
        }
    }
}

/// How a block failed: the commands that passed before, and the line and reason of the one that did
/// not.
#[derive(Debug)]
struct BlockFailure {
    passed: usize,
    line: usize,
    message: String,
}

/// Runs one block; the number of commands passed, or how it failed at its first failing command.
fn run_block(
    env: &Environment,
    block: &ConsoleBlock,
    options: &Options,
    services: &mut Vec<Background>,
) -> Result<usize, BlockFailure> {
    let last_background = block.commands.iter().rposition(|c| c.background);
    let wait = |services: &mut Vec<Background>| -> Result<(), String> {
        if block.options.wait.is_empty() {
            return Ok(());
        }
        let deadline = options.deadline.unwrap_or_else(|| Instant::now() + runner::PORT_WAIT);
        runner::wait_for_ports(&block.options.wait, services, deadline).map(|_| ())
    };
    if last_background.is_none() {
        wait(services).map_err(|message| BlockFailure { passed: 0, line: block.line, message })?;
    }
    for (index, command) in block.commands.iter().enumerate() {
        let at_failure = |message: String| BlockFailure {
            passed: index,
            line: command.line,
            message: format!("`$ {}`\n{message}", command.text),
        };
        if options.verbose {
            eprintln!("  line {}: $ {}", command.line, command.text);
        }
        let mut timeout = block.options.timeout;
        if let Some(deadline) = options.deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(at_failure("not run: the time limit was reached".to_string()));
            }
            timeout = timeout.min(left);
        }
        if command.text.trim() == STOP_JOBS {
            if services.is_empty() {
                return Err(at_failure(
                    "there is no background job to stop (in a shell, `kill` with no job fails)".to_string(),
                ));
            }
            services.drain(..).for_each(Background::stop);
            if !command.expected.is_empty() {
                return Err(at_failure("it prints nothing, but the lesson shows output".to_string()));
            }
            continue;
        }
        if command.background {
            services.push(Background::start(env, &command.text, command.line).map_err(at_failure)?);
            if Some(index) == last_background {
                wait(services).map_err(at_failure)?;
            }
            continue;
        }
        let expected_status = if index + 1 == block.commands.len() { block.options.exit } else { 0 };
        let outcome = runner::run(env, &command.text, timeout).map_err(at_failure)?;
        if let Some(problem) = judge(command, &outcome, expected_status, timeout) {
            return Err(at_failure(explain(problem, &outcome, services)));
        }
    }
    Ok(block.commands.len())
}

/// A failed command's problem, with its stderr and any background service that has died (the usual
/// reason a command cannot reach what it talks to).
fn explain(problem: String, outcome: &runner::Outcome, services: &mut [Background]) -> String {
    let mut message = problem;
    let stderr = outcome.stderr.trim_end();
    if !stderr.is_empty() {
        message.push_str(&format!("\nstderr:\n{}", runner::tail(stderr, STDERR_LINES)));
    }
    for service in services.iter_mut() {
        if let Some(how) = service.exited() {
            message.push_str(&format!(
                "\nnote: the background command at line {} (`{}`) {how}",
                service.line, service.text
            ));
        }
    }
    message
}

/// `None` if the command did what the lesson says, else what differs.
fn judge(
    command: &Command,
    outcome: &runner::Outcome,
    expected_status: i32,
    timeout: Duration,
) -> Option<String> {
    let mut problems = Vec::new();
    if outcome.timed_out {
        problems.push(format!(
            "timed out after {} s and was killed (a slow command can say `console,timeout=SECONDS`; \
             a service must end with ` &`)",
            timeout.as_secs_f32()
        ));
    } else if outcome.status != expected_status {
        problems.push(format!("exit status {} (expected {expected_status})", outcome.status));
    }
    if !matcher::output_matches(&command.expected, &outcome.stdout) {
        problems.push(format!(
            "output differs (- in the lesson, + printed):\n{}",
            matcher::diff(&command.expected, &outcome.stdout)
        ));
    }
    (!problems.is_empty()).then(|| problems.join("\n"))
}

/// `needs nginx and wrk; install with bash scripts/install-balancers.sh`.
fn missing_programs(missing: &[&str]) -> String {
    let names = match missing {
        [one] => one.to_string(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
        [] => String::new(),
    };
    // Debian installs nginx and haproxy in /usr/sbin, which is not on a normal user's PATH; `lab`
    // looks there, but a lesson's commands see only PATH, so say what to add rather than to install.
    let in_sbin: Vec<&str> =
        missing.iter().copied().filter(|p| Path::new("/usr/sbin").join(p).is_file()).collect();
    if !in_sbin.is_empty() {
        format!(
            "needs {names}; {} is in /usr/sbin, not on PATH: export PATH=\"$PATH:/usr/sbin\"",
            in_sbin.join(", ")
        )
    } else if missing.iter().all(|p| FROM_INSTALL_SCRIPT.contains(p)) {
        format!("needs {names}; install with bash scripts/install-balancers.sh")
    } else {
        format!("needs {names}, which is not on PATH")
    }
}

fn relative(root: &Path, file: &Path) -> String {
    file.strip_prefix(root).unwrap_or(file).display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A repository in a temp dir with one lesson whose second block (at line 8) needs a program
    /// nobody has.
    fn lesson_needing_a_missing_program() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("temp dir");
        let lessons = dir.path().join("docs");
        fs::create_dir_all(&lessons).expect("mkdir");
        let text = "# Needs\n\n```console\n$ echo before\nbefore\n```\n\n\
                    ```console,requires=bash+definitely-not-installed-xyz\n$ definitely-not-installed-xyz &\n\
                    $ echo with it\nwith it\n```\n\n\
                    ```console\n$ echo after\nafter\n```\n\n\
                    ```console,ignore\n$ docker compose up\n```\n";
        fs::write(lessons.join("needs.md"), text).expect("write lesson");
        dir
    }

    fn check(dir: &Path, options: &Options) -> FileReport {
        let files = lesson_files(dir).expect("list fixture");
        let report = check_files(dir, &files, options, |_| {});
        assert_eq!(report.files.len(), 1, "{report:?}");
        report.files[0].clone()
    }

    #[test]
    fn a_missing_program_skips_the_rest_of_the_file() {
        let dir = lesson_needing_a_missing_program();
        let report = check(dir.path(), &Options::default());
        // The first block runs; the block with `requires=` (2 commands) and the one after it (1) are
        // skipped, with the ignored one (1): 4 skipped. Skipping is not failing.
        assert!(report.ok(), "{report:?}");
        assert_eq!((report.passed, report.skipped, report.not_run), (1, 4, 0));
        assert_eq!(
            report.summary(),
            "docs/needs.md: 1 commands passed, 4 skipped, links ok\n    skipped: needs \
             definitely-not-installed-xyz, which is not on PATH (line 8 to the end of the file)"
        );
    }

    #[test]
    fn a_missing_program_fails_when_external_programs_are_required() {
        let dir = lesson_needing_a_missing_program();
        let options = Options { require_external: true, ..Options::default() };
        let report = check(dir.path(), &options);
        assert!(!report.ok());
        // The requiring block counts as one failure, its other command and the next block's as not
        // run; only the `ignore` block is skipped.
        assert_eq!((report.passed, report.failed, report.not_run, report.skipped), (1, 1, 2, 1));
        let failure = report.failures[0].to_string();
        assert!(failure.starts_with("docs/needs.md:8: needs definitely-not-installed-xyz"), "{failure}");
        assert!(failure.contains("LB_REQUIRE_EXTERNAL=1"), "{failure}");
    }

    #[test]
    fn a_present_program_runs_the_block() {
        let dir = tempfile::tempdir().expect("temp dir");
        fs::create_dir_all(dir.path().join("docs")).expect("mkdir");
        let text = "# Has\n\n```console,requires=bash+sh\n$ echo ran\nran\n```\n";
        fs::write(dir.path().join("docs/has.md"), text).expect("write lesson");
        let options = Options { require_external: true, ..Options::default() };
        let report = check(dir.path(), &options);
        assert!(report.ok(), "{report:?}");
        assert_eq!((report.passed, report.skipped, report.skipped_from.clone()), (1, 0, None));
    }

    #[test]
    fn in_a_session_jobs_outlive_their_file_until_stopped() {
        // a.md starts a job and leaves it; b.md stops it, as a learner's next command in the same shell
        // could. In a session the job is still there for b.md; file by file, a.md's end stopped it, and
        // the `kill` in b.md has nothing to stop, as in a fresh shell.
        let dir = tempfile::tempdir().expect("temp dir");
        fs::create_dir_all(dir.path().join("docs")).expect("mkdir");
        fs::write(dir.path().join("docs/a.md"), "# A\n\n```console\n$ sleep 300 &\n```\n").expect("write");
        fs::write(dir.path().join("docs/b.md"), "# B\n\n```console\n$ kill $(jobs -p)\n```\n")
            .expect("write");
        let files = lesson_files(dir.path()).expect("list fixture");
        let started = Instant::now();
        let session =
            check_files(dir.path(), &files, &Options { session: true, ..Options::default() }, |_| {});
        assert!(session.ok(), "{session:?}");
        assert_eq!(session.files[1].passed, 1);
        let separate = check_files(dir.path(), &files, &Options::default(), |_| {});
        assert!(separate.files[0].ok(), "{separate:?}");
        let failure = separate.files[1].failures[0].to_string();
        assert!(failure.starts_with("docs/b.md:4: `$ kill $(jobs -p)`"), "{failure}");
        assert!(failure.contains("no background job to stop"), "{failure}");
        // `sleep` went at SIGTERM both times, without the 5 s grace.
        assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    }

    #[test]
    fn the_skip_line_says_how_to_get_the_program() {
        let hint = missing_programs(&["definitely-not-installed-xyz"]);
        assert_eq!(hint, "needs definitely-not-installed-xyz, which is not on PATH");
        let both = missing_programs(&["nginx", "wrk", "envoy"]);
        // Where /usr/sbin holds nginx (Debian), the hint is to add it to PATH instead.
        assert!(
            both == "needs nginx, wrk and envoy; install with bash scripts/install-balancers.sh"
                || both.starts_with("needs nginx, wrk and envoy; nginx"),
            "{both}"
        );
    }
}
