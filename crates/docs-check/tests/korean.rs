//! The Korean learning path mirrors the English core track: every lesson in the core-track table of
//! `docs/README.md` has a `docs/ko/` counterpart with the same console blocks, in the same order, and
//! the Korean lessons link to each other rather than to the English ones (`src/translation.rs`). The
//! replay of those blocks is `tests/lessons.rs`, which reads `docs/ko/` like every other folder.
//!
//! Below the repository test, the checker itself on small fixture repositories: a missing translation,
//! a changed block, a block too many, a link to the English sibling, and a pair that passes.

mod common;

use docs_check::translation::{self, core_track};

use common::{fixture, repository_root};

#[test]
fn every_core_track_lesson_has_a_korean_counterpart_with_the_same_commands() {
    let root = repository_root();
    let lessons = core_track(&root).expect("the core track in docs/README.md");
    // The core track runs from "why load balancing" to "scaling out"; a heading renamed away would
    // leave nothing to compare.
    assert!(lessons.len() >= 15, "the core track of docs/README.md lists only {lessons:?}");
    assert_eq!(lessons.first().map(String::as_str), Some("why-load-balancing.md"), "{lessons:?}");
    let report = translation::check(&root, &lessons);
    let failures: Vec<String> = report.failures.iter().map(ToString::to_string).collect();
    assert!(
        failures.is_empty(),
        "the Korean core track does not match the English one ({} of {} lessons translated):\n\n{}",
        report.pairs,
        lessons.len(),
        failures.join("\n\n")
    );
    assert_eq!(report.pairs, lessons.len());
}

/// A learning path whose core track is `one.md` then `two.md` (`one.md` twice, with an anchor: listed
/// once); `deep.md` is a deep dive, under a heading of the same level.
const LEARNING_PATH: &str = "# The learning path\n\n## The core track\n\n| # | lesson |\n|---|---|\n\
    | 1 | [One](lessons/one.md) |\n| 2 | [Two](lessons/two.md), after [one](lessons/one.md#setup) |\n\n\
    ### A note\n\nSee [elsewhere](writing-lessons.md).\n\n## The deep dives\n\n| 3 | [Deep](lessons/deep.md) |\n";

const ONE: &str = "# One\n\n```console\n$ echo one\none\n```\n\nNext: [Two](two.md)\n";
const TWO: &str = "# Two\n\n```sh\nnot compared\n```\n\n```console,wait=127.0.0.1:9001\n$ server &\n\
    $ curl -s http://127.0.0.1:9001/\nhello\n```\n\n1. Then:\n\n   ```console\n   $ kill $(jobs -p)\n   ```\n";
const ONE_KO: &str = "# 하나\n\n```console\n$ echo one\none\n```\n\n다음: [둘](two.md)\n";
const TWO_KO: &str = "# 둘\n\n```console,wait=127.0.0.1:9001\n$ server &\n$ curl -s http://127.0.0.1:9001/\n\
    hello\n```\n\n```console\n$ kill $(jobs -p)\n```\n";

fn base<'a>() -> Vec<(&'a str, &'a str)> {
    vec![
        ("docs/README.md", LEARNING_PATH),
        ("docs/lessons/one.md", ONE),
        ("docs/lessons/two.md", TWO),
        ("docs/lessons/deep.md", "# Deep\n\n```console\n$ echo deep\ndeep\n```\n"),
    ]
}

fn failures(files: &[(&str, &str)]) -> (translation::Report, Vec<String>) {
    let dir = fixture(files);
    let lessons = core_track(dir.path()).expect("fixture core track");
    assert_eq!(lessons, ["one.md", "two.md"]);
    let report = translation::check(dir.path(), &lessons);
    let shown = report.failures.iter().map(ToString::to_string).collect();
    (report, shown)
}

#[test]
fn a_faithful_translation_passes() {
    let mut files = base();
    files.extend([("docs/ko/one.md", ONE_KO), ("docs/ko/two.md", TWO_KO)]);
    let (report, shown) = failures(&files);
    assert!(shown.is_empty(), "{shown:#?}");
    // Both pairs were compared, block by block: the `sh` block is not a console block, and the one
    // indented in a list item equals the same block at the margin.
    assert_eq!((report.pairs, report.blocks), (2, 3));
}

#[test]
fn a_missing_translation_fails() {
    let mut files = base();
    files.push(("docs/ko/one.md", ONE_KO));
    let (report, shown) = failures(&files);
    assert_eq!(report.pairs, 1);
    assert_eq!(shown.len(), 1, "{shown:#?}");
    assert!(
        shown[0].starts_with(
            "docs/ko/two.md:0: the core-track lesson docs/lessons/two.md has no Korean counterpart"
        ),
        "{shown:#?}"
    );
}

#[test]
fn a_changed_block_fails_at_its_line() {
    // The output translated, and the wait option dropped: two blocks differ, each reported.
    let changed = TWO_KO.replace("\nhello\n", "\n안녕\n").replace("console,wait=127.0.0.1:9001", "console");
    let one = ONE_KO.replace("$ echo one", "$ echo  one");
    let mut files = base();
    files.extend([("docs/ko/one.md", one.as_str()), ("docs/ko/two.md", changed.as_str())]);
    let (_, shown) = failures(&files);
    assert_eq!(
        shown,
        [
            "docs/ko/one.md:3: console block 1 differs from the one at docs/lessons/one.md:3 (copy it \
             unchanged):\n      (line 1 of the block)\n    - $ echo one\n    + $ echo  one",
            "docs/ko/two.md:3: console block 1 differs from the one at docs/lessons/two.md:7 (copy it \
             unchanged):\n    - ```console,wait=127.0.0.1:9001\n    + ```console",
        ]
    );
    let only_output = TWO_KO.replace("\nhello\n", "\n안녕\n");
    let mut files = base();
    files.extend([("docs/ko/one.md", ONE_KO), ("docs/ko/two.md", only_output.as_str())]);
    let (_, shown) = failures(&files);
    assert_eq!(shown.len(), 1, "{shown:#?}");
    assert!(shown[0].ends_with("(line 3 of the block)\n    - hello\n    + 안녕"), "{shown:#?}");
}

#[test]
fn a_block_too_many_or_too_few_fails() {
    let extra = format!("{ONE_KO}\n```console\n$ echo 추가\n추가\n```\n");
    let fewer = TWO_KO.replace("```console\n$ kill $(jobs -p)\n```\n", "");
    let mut files = base();
    files.extend([("docs/ko/one.md", extra.as_str()), ("docs/ko/two.md", fewer.as_str())]);
    let (_, shown) = failures(&files);
    assert_eq!(
        shown,
        [
            "docs/ko/one.md:10: 2 console blocks here, 1 in docs/lessons/one.md; the first extra one is here",
            "docs/ko/two.md:3: 1 console blocks here, 2 in docs/lessons/two.md; the first missing one is at \
             docs/lessons/two.md:15",
        ]
    );
}

#[test]
fn a_link_to_the_english_sibling_fails() {
    // The deep dive has no Korean counterpart: linking the English one is right.
    let one = ONE_KO.replace("[둘](two.md)", "[둘](../lessons/two.md#two), [심화](../lessons/deep.md)");
    let mut files = base();
    files.extend([("docs/ko/one.md", one.as_str()), ("docs/ko/two.md", TWO_KO)]);
    let (_, shown) = failures(&files);
    assert_eq!(shown.len(), 1, "{shown:#?}");
    assert!(
        shown[0].starts_with(
            "docs/ko/one.md:8: link `../lessons/two.md#two` leads to the English lesson; link the Korean \
             one, `two.md`"
        ),
        "{shown:#?}"
    );
}

#[test]
fn a_learning_path_without_a_core_track_is_an_error() {
    let dir = fixture(&[("docs/README.md", "# The learning path\n\n## Lessons\n\n[One](lessons/one.md)\n")]);
    let error = core_track(dir.path()).expect_err("no core track heading").to_string();
    assert!(error.contains("no `## The core track` heading"), "{error}");
}
