//! The Korean learning path follows the English core track, command for command.
//!
//! The core track is the table under `## The core track` in `docs/README.md`: its links to
//! `lessons/<name>.md` are the lessons, in order ([`core_track`]). Each has a Korean counterpart,
//! `docs/ko/<name>.md`, whose prose is Korean and whose `console` blocks are the English file's: the same
//! fence info string (`console,wait=127.0.0.1:9001`) and the same body, line for line, in the same order
//! ([`compare`]). The replay ([`crate::check_files`]) then proves the commands still print what both
//! files show; this check proves the two files show the same thing, so a fix to an English lesson that
//! is not carried to the Korean one fails here rather than drifting silently.
//!
//! A Korean lesson that links to another core-track lesson links to its Korean counterpart
//! (`weights.md`), not to the English one (`../lessons/weights.md`): a reader who chose Korean stays in
//! Korean for the whole track.
//!
//! What is compared is the parsed fence ([`crate::markdown::Fence`]): its trimmed info string and its
//! content lines, so a block indented in a list item compares equal to the same block at the margin,
//! as both render the same.

use std::fs;
use std::path::Path;

use crate::console;
use crate::markdown::{Document, Fence};
use crate::{Error, Failure};

/// The heading of the core-track table in the learning path.
pub const CORE_TRACK_HEADING: &str = "The core track";
/// The learning path, which lists the core track.
pub const LEARNING_PATH: &str = "docs/README.md";
/// Where the English lessons are, relative to the repository root.
pub const ENGLISH_DIR: &str = "docs/lessons";
/// Where their Korean counterparts are.
pub const KOREAN_DIR: &str = "docs/ko";

/// The file names (`why-load-balancing.md`) of the core-track lessons of the learning path at
/// `docs/README.md` under `root`, in order.
pub fn core_track(root: &Path) -> Result<Vec<String>, Error> {
    let path = root.join(LEARNING_PATH);
    let text = fs::read_to_string(&path).map_err(|source| Error::Read { path: path.clone(), source })?;
    let lessons = core_track_in(&Document::parse(&text));
    if lessons.is_empty() {
        return Err(Error::Format {
            path,
            message: format!("no `## {CORE_TRACK_HEADING}` heading with links to lessons/*.md under it"),
        });
    }
    Ok(lessons)
}

/// The `lessons/<name>.md` links between the `The core track` heading and the next heading of the same
/// level or above, as file names, each once, in order.
pub fn core_track_in(doc: &Document) -> Vec<String> {
    let Some(start) = doc.headings.iter().position(|h| h.text == CORE_TRACK_HEADING) else {
        return Vec::new();
    };
    let heading = &doc.headings[start];
    let end =
        doc.headings[start + 1..].iter().find(|h| h.level <= heading.level).map_or(usize::MAX, |h| h.line);
    let mut lessons: Vec<String> = Vec::new();
    for link in doc.links().iter().filter(|l| l.line > heading.line && l.line < end) {
        let file = link.target.split('#').next().unwrap_or_default();
        let Some(name) = file.strip_prefix("lessons/").filter(|n| n.ends_with(".md") && !n.contains('/'))
        else {
            continue;
        };
        if !lessons.iter().any(|l| l == name) {
            lessons.push(name.to_string());
        }
    }
    lessons
}

/// What [`check`] found: how much it compared, and what differs.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Core-track lessons that have a Korean counterpart.
    pub pairs: usize,
    /// Console blocks compared, summed over the pairs.
    pub blocks: usize,
    pub failures: Vec<Failure>,
}

/// Checks that every lesson of `lessons` (file names in `docs/lessons/`) has a counterpart in
/// `docs/ko/` with the same console blocks, and that the Korean files link to their Korean siblings.
pub fn check(root: &Path, lessons: &[String]) -> Report {
    let mut report = Report::default();
    for name in lessons {
        let english_name = format!("{ENGLISH_DIR}/{name}");
        let korean_name = format!("{KOREAN_DIR}/{name}");
        let english = match fs::read_to_string(root.join(&english_name)) {
            Ok(text) => Document::parse(&text),
            Err(e) => {
                report.failures.push(failure(
                    &english_name,
                    0,
                    format!("cannot read the English lesson: {e}"),
                ));
                continue;
            }
        };
        let korean = match fs::read_to_string(root.join(&korean_name)) {
            Ok(text) => Document::parse(&text),
            Err(e) => {
                let why =
                    if e.kind() == std::io::ErrorKind::NotFound { String::new() } else { format!(" ({e})") };
                let message = format!(
                    "the core-track lesson {english_name} has no Korean counterpart{why}; translate it \
                     into {korean_name}, keeping its console blocks as they are"
                );
                report.failures.push(failure(&korean_name, 0, message));
                continue;
            }
        };
        report.pairs += 1;
        report.blocks += console_blocks(&english).len();
        report.failures.extend(compare(&english, &english_name, &korean, &korean_name));
        report.failures.extend(english_links(&korean, &korean_name, lessons));
    }
    report
}

/// The console blocks of a document: every fence whose info string is a console one, well formed or
/// not (a typo in an option must be copied too).
pub fn console_blocks(doc: &Document) -> Vec<&Fence> {
    doc.fences.iter().filter(|f| console::parse_info(&f.info, f.line).is_some()).collect()
}

/// The ways the Korean file's console blocks differ from the English file's, reported at the Korean
/// file's lines: each block that differs (info string or body), and blocks one file has and the other
/// has not.
pub fn compare(english: &Document, english_name: &str, korean: &Document, korean_name: &str) -> Vec<Failure> {
    let (en, ko) = (console_blocks(english), console_blocks(korean));
    let mut failures = Vec::new();
    for (index, (e, k)) in en.iter().zip(&ko).enumerate() {
        if let Some(difference) = difference(e, k) {
            let message = format!(
                "console block {} differs from the one at {english_name}:{} (copy it unchanged):\n{difference}",
                index + 1,
                e.line
            );
            failures.push(failure(korean_name, k.line, message));
        }
    }
    if en.len() != ko.len() {
        let (line, what) = match (en.get(ko.len()), ko.get(en.len())) {
            (Some(first_missing), _) => (
                ko.last().map_or(0, |k| k.line),
                format!("the first missing one is at {english_name}:{}", first_missing.line),
            ),
            (None, Some(first_extra)) => (first_extra.line, "the first extra one is here".to_string()),
            (None, None) => (0, String::new()),
        };
        let message = format!("{} console blocks here, {} in {english_name}; {what}", ko.len(), en.len());
        failures.push(failure(korean_name, line, message));
    }
    failures
}

/// `None` if the two fences are the same console block, else the first line that differs.
fn difference(english: &Fence, korean: &Fence) -> Option<String> {
    if english.info != korean.info {
        return Some(format!("- ```{}\n+ ```{}", english.info, korean.info));
    }
    let (e, k): (Vec<&str>, Vec<&str>) = (
        english.content.iter().map(|l| l.text.as_str()).collect(),
        korean.content.iter().map(|l| l.text.as_str()).collect(),
    );
    if e == k {
        return None;
    }
    let at = e.iter().zip(&k).take_while(|(a, b)| a == b).count();
    let shown = |lines: &[&str], sign: char| match lines.get(at) {
        Some(text) => format!("{sign} {text}"),
        None => format!("{sign} (end of block)"),
    };
    Some(format!("  (line {} of the block)\n{}\n{}", at + 1, shown(&e, '-'), shown(&k, '+')))
}

/// Links from a Korean lesson to the English version of a core-track lesson, which has a Korean one.
fn english_links(korean: &Document, korean_name: &str, lessons: &[String]) -> Vec<Failure> {
    korean
        .links()
        .iter()
        .filter_map(|link| {
            let file = link.target.split('#').next().unwrap_or_default();
            let name = file.strip_prefix("../lessons/")?;
            lessons.iter().any(|l| l == name).then(|| {
                failure(
                    korean_name,
                    link.line,
                    format!(
                        "link `{}` leads to the English lesson; link the Korean one, `{name}` (with the \
                         Korean heading's anchor, if any)",
                        link.target
                    ),
                )
            })
        })
        .collect()
}

fn failure(file: &str, line: usize, message: String) -> Failure {
    Failure { file: file.to_string(), line, message }
}
