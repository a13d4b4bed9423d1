//! The docs test itself: every lesson's commands run and every link resolves, plus the checker's own
//! behaviour on small fixture repositories (a passing lesson, a wrong expectation, a broken link).
//!
//! `whole_repository` runs alone under nextest (see `.config/nextest.toml`): lessons start services on
//! fixed ports such as 8080, which must not collide with other tests.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use docs_check::{FileReport, Options, Report, check_files, lesson_files};

use common::{fixture, repository_root};

/// The whole-repository check gives up after this, listing what it did not reach. Eight minutes for the
/// English lessons, and as much again for the Korean core track in `docs/ko/`, which replays the same
/// commands as the English core track (`tests/korean.rs` keeps them identical) and so takes as long.
/// It is there to stop a hanging command, not to time the lessons.
const TIME_LIMIT: Duration = Duration::from_secs(16 * 60);

fn describe(report: &Report) -> String {
    let mut text = String::new();
    for file in &report.files {
        text.push_str(&format!("{}\n", file.summary()));
    }
    for failure in report.failures() {
        text.push_str(&format!("\n{failure}\n"));
    }
    if let Some(limit) = &report.time_limit {
        text.push_str(&format!("\n{limit}\n"));
    }
    text.push_str(&report.final_line());
    text
}

#[test]
fn whole_repository() {
    let root = repository_root();
    let files = match lesson_files(&root) {
        Ok(files) => files,
        Err(e) => panic!("listing the lessons under {}: {e}", root.display()),
    };
    assert!(!files.is_empty(), "no README.md or docs/**/*.md under {}", root.display());
    let started = Instant::now();
    // CI sets LB_REQUIRE_EXTERNAL=1, so the nginx/HAProxy/Envoy lessons fail there rather than skip.
    let options = Options { deadline: Some(started + TIME_LIMIT), ..Options::from_env() };
    let report = check_files(&root, &files, &options, |file| eprintln!("{}", file.summary()));
    assert!(
        report.time_limit.is_none(),
        "the docs test stopped at its {} s limit (lessons should run in well under that; is a command \
         hanging or waiting on a port?):\n{}",
        TIME_LIMIT.as_secs(),
        describe(&report)
    );
    assert!(report.ok(), "the docs do not do what they say:\n{}", describe(&report));
}

fn check(dir: &Path) -> Report {
    let files = lesson_files(dir).expect("list fixture");
    check_files(dir, &files, &Options::default(), |_| {})
}

fn file<'a>(report: &'a Report, name: &str) -> &'a FileReport {
    report.files.iter().find(|f| f.file == name).unwrap_or_else(|| panic!("{name} not checked: {report:?}"))
}

#[test]
fn fixture_lessons_pass_fail_and_skip() {
    let dir = fixture(&[
        ("README.md", "# Fixture\n\nStart at [the lessons](docs/lessons/hello.md#hello).\n"),
        (
            "docs/lessons/hello.md",
            "# Hello\n\n```console\n$ echo hello\nhello\n```\n\n\
             ```console,exit=1\n$ echo 'took 12 ms'; echo more; echo tail\ntook [..] ms\n...\n$ false\n```\n\n\
             ```console,ignore\n$ docker compose up\n```\n",
        ),
        ("docs/lessons/wrong.md", "# Wrong\n\n```console\n$ echo hello\ngoodbye\n$ echo never run\n```\n"),
        ("docs/lessons/link.md", "# Link\n\nSee [nothing](missing.md) and `docs/lessons/absent.md`.\n"),
    ]);
    let report = check(dir.path());
    assert_eq!(
        report.files.iter().map(FileReport::summary).collect::<Vec<_>>(),
        vec![
            "README.md: 0 commands passed, 0 skipped, links ok",
            "docs/lessons/hello.md: 3 commands passed, 1 skipped, links ok",
            "docs/lessons/link.md: 0 commands passed, 0 skipped, 2 broken links",
            "docs/lessons/wrong.md: 0 commands passed, 1 failed, 1 not run, 0 skipped, links ok",
        ],
        "{}",
        describe(&report)
    );
    assert_eq!(report.final_line(), "2 passed, 2 failed");
    assert!(!report.ok());

    let wrong = &file(&report, "docs/lessons/wrong.md").failures;
    assert_eq!(wrong.len(), 1);
    // The failure names the file, the command's line, the command and the diff.
    let shown = wrong[0].to_string();
    assert!(shown.starts_with("docs/lessons/wrong.md:4: `$ echo hello`"), "{shown}");
    assert!(shown.contains("- goodbye") && shown.contains("+ hello"), "{shown}");

    let link = &file(&report, "docs/lessons/link.md").failures;
    assert!(link.iter().all(|f| f.line == 3), "{link:?}");
    assert!(link[0].message.contains("missing.md"), "{link:?}");
    assert!(link[1].message.contains("docs/lessons/absent.md"), "{link:?}");
}

#[test]
fn background_service_and_port_wait() {
    // The port is held by this test rather than by the background command, so the fixture needs no
    // server program; what is under test is the start, the wait, and the stop at the end of the file.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("loopback bind");
    let address = listener.local_addr().expect("bound").to_string();
    let lesson = format!(
        "# Service\n\n```console,wait={address}\n$ sleep 300 &\n$ echo up\nup\n```\n\n\
         ```console\n$ echo still\nstill\n```\n"
    );
    let dir = fixture(&[("docs/service.md", &lesson)]);
    let started = Instant::now();
    let report = check(dir.path());
    assert!(report.ok(), "{}", describe(&report));
    assert_eq!(file(&report, "docs/service.md").passed, 3);
    // `sleep 300` was stopped at the end of the file, by SIGTERM, not waited out.
    assert!(started.elapsed() < Duration::from_secs(30), "took {:?}", started.elapsed());
}

#[test]
fn timeouts_and_exit_statuses_are_failures() {
    let dir = fixture(&[
        ("docs/slow.md", "# Slow\n\n```console,timeout=1\n$ sleep 20\n```\n"),
        ("docs/status.md", "# Status\n\n```console\n$ echo out; echo why >&2; exit 2\nout\n```\n"),
    ]);
    let started = Instant::now();
    let report = check(dir.path());
    assert!(started.elapsed() < Duration::from_secs(15), "took {:?}", started.elapsed());
    let slow = file(&report, "docs/slow.md").failures[0].to_string();
    assert!(slow.contains("timed out after 1 s"), "{slow}");
    let status = file(&report, "docs/status.md").failures[0].to_string();
    // Stderr is shown on failure only, under the exit status.
    assert!(status.contains("exit status 2 (expected 0)") && status.contains("stderr:\n    why"), "{status}");
}

#[test]
fn malformed_blocks_are_reported_not_skipped() {
    let dir = fixture(&[("docs/typo.md", "# Typo\n\n```console,ignroe\n$ echo hi\n```\n")]);
    let report = check(dir.path());
    let typo = file(&report, "docs/typo.md");
    assert_eq!((typo.passed, typo.failed, typo.not_run), (0, 1, 0), "{}", describe(&report));
    assert!(typo.failures[0].message.contains("unknown console option `ignroe`"), "{typo:?}");
}
