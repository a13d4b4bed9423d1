//! Just enough Markdown to check a lesson: fenced code blocks, headings (and their GitHub anchors),
//! relative links and inline code spans.
//!
//! This is not a Markdown parser and does not try to be one. A lesson is checked for three things, and
//! each needs only a line-level view of the file:
//!
//! - **Fenced blocks** (```` ``` ```` or `~~~`, three or more) are found by CommonMark's rule: a block
//!   closes at a fence of the same character that is at least as long as the opening one. That is what
//!   lets `docs/writing-lessons.md` show a ```` ```console ```` block inside a ````` ```` ````` block
//!   without the inner one being run. A fence may be indented (inside a list item); its content loses
//!   the same indentation.
//! - **Headings** (`#` ATX headings and `===`/`---` setext headings) become anchors with GitHub's rules,
//!   see [`slug`]. Anchors from `<a name="..">` and `id=".."` count too.
//! - **Links and code spans** are read from the lines outside fenced blocks, after code spans are taken
//!   out, so a link written inside backticks is an example and not a link.
//!
//! The cost is O(length of the file); nothing is kept but the lists this module returns.

/// A fenced code block: its info string (`console,exit=1`), the line of its opening fence (1-based) and
/// its content lines with their line numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub info: String,
    pub line: usize,
    pub content: Vec<(usize, String)>,
}

/// What the checks need from one Markdown file.
#[derive(Debug, Clone, Default)]
pub struct Document {
    pub fences: Vec<Fence>,
    /// Lines outside fenced blocks, with their line numbers.
    pub prose: Vec<(usize, String)>,
}

impl Document {
    pub fn parse(text: &str) -> Document {
        let mut doc = Document::default();
        // (fence char, fence length, indentation, fence being filled)
        let mut open: Option<(char, usize, usize, Fence)> = None;
        for (index, line) in text.lines().enumerate() {
            let number = index + 1;
            match open.take() {
                Some((ch, len, indent, mut fence)) => {
                    if is_closing_fence(line, ch, len) {
                        doc.fences.push(fence);
                    } else {
                        fence.content.push((number, strip_indent(line, indent).to_string()));
                        open = Some((ch, len, indent, fence));
                    }
                }
                None => match opening_fence(line) {
                    Some((ch, len, indent, info)) => {
                        open = Some((ch, len, indent, Fence { info, line: number, content: Vec::new() }));
                    }
                    None => doc.prose.push((number, line.to_string())),
                },
            }
        }
        // An unclosed fence runs to the end of the file, as CommonMark says.
        if let Some((_, _, _, fence)) = open {
            doc.fences.push(fence);
        }
        doc
    }

    /// Every anchor a link can point at in this file: heading slugs (deduplicated GitHub's way, with
    /// `-1`, `-2`, ... suffixes) and explicit HTML anchors.
    pub fn anchors(&self) -> Vec<String> {
        let mut anchors: Vec<String> = Vec::new();
        let mut previous: Option<&str> = None;
        for (_, line) in &self.prose {
            let heading = atx_heading(line).or_else(|| {
                let underline = line.trim();
                let is_setext = !underline.is_empty()
                    && (underline.chars().all(|c| c == '=') || underline.chars().all(|c| c == '-'));
                match previous {
                    Some(text) if is_setext && !text.trim().is_empty() && !line.starts_with("    ") => {
                        Some(text.trim().to_string())
                    }
                    _ => None,
                }
            });
            if let Some(text) = heading {
                let base = slug(&text);
                let mut candidate = base.clone();
                let mut n = 0;
                while anchors.contains(&candidate) {
                    n += 1;
                    candidate = format!("{base}-{n}");
                }
                anchors.push(candidate);
            }
            anchors.extend(html_anchors(line));
            previous = Some(line.as_str());
        }
        anchors
    }

    /// Relative and same-file link targets (`path`, `path#anchor`, `#anchor`) with their line numbers.
    /// External links (`http:`, `https:`, `mailto:`, ...) are left out: they are never fetched.
    pub fn links(&self) -> Vec<(usize, String)> {
        let mut links = Vec::new();
        for (number, line) in &self.prose {
            let (without_code, _) = split_code_spans(line);
            for target in inline_link_targets(&without_code).into_iter().chain(reference_definition(line)) {
                if !is_external(&target) && !target.is_empty() {
                    links.push((*number, target));
                }
            }
        }
        links
    }

    /// The text of every inline code span outside fenced blocks, with its line number.
    pub fn code_spans(&self) -> Vec<(usize, String)> {
        let mut spans = Vec::new();
        for (number, line) in &self.prose {
            let (_, found) = split_code_spans(line);
            spans.extend(found.into_iter().map(|span| (*number, span)));
        }
        spans
    }
}

/// GitHub's heading anchor: lowercase; markup taken out (code backticks, emphasis, link targets);
/// every character that is not a letter, a digit, `-`, `_` or a space removed; each space turned into
/// `-`. Letters of every script are kept, so `## 명령 두 개` becomes `명령-두-개`.
pub fn slug(heading: &str) -> String {
    let text = strip_inline_markup(heading);
    text.trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | ' '))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// `[text](url)` becomes `text` and HTML tags go, as in the rendered heading GitHub slugs.
fn strip_inline_markup(text: &str) -> String {
    let mut out = String::new();
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            ']' if chars.get(i + 1) == Some(&'(') => {
                // Skip the link target up to its closing parenthesis.
                match chars[i + 2..].iter().position(|&c| c == ')') {
                    Some(end) => i += end + 3,
                    None => i += 1,
                }
            }
            '<' => match chars[i..].iter().position(|&c| c == '>') {
                Some(end) if chars.get(i + 1).is_some_and(|c| c.is_ascii_alphabetic() || *c == '/') => {
                    i += end + 1
                }
                _ => {
                    out.push('<');
                    i += 1;
                }
            },
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

fn opening_fence(line: &str) -> Option<(char, usize, usize, String)> {
    let indent = line.len() - line.trim_start_matches(' ').len();
    let rest = &line[indent..];
    let ch = rest.chars().next().filter(|c| *c == '`' || *c == '~')?;
    let len = rest.chars().take_while(|c| *c == ch).count();
    if len < 3 {
        return None;
    }
    let info = rest[len..].trim();
    // CommonMark: a backtick fence's info string cannot contain a backtick (that is inline code).
    if ch == '`' && info.contains('`') {
        return None;
    }
    Some((ch, len, indent, info.to_string()))
}

fn is_closing_fence(line: &str, ch: char, len: usize) -> bool {
    let rest = line.trim();
    let run = rest.chars().take_while(|c| *c == ch).count();
    run >= len && rest.chars().all(|c| c == ch)
}

fn strip_indent(line: &str, indent: usize) -> &str {
    let spaces = line.len() - line.trim_start_matches(' ').len();
    &line[spaces.min(indent)..]
}

fn atx_heading(line: &str) -> Option<String> {
    let indent = line.len() - line.trim_start_matches(' ').len();
    if indent > 3 {
        return None;
    }
    let rest = &line[indent..];
    let hashes = rest.chars().take_while(|c| *c == '#').count();
    if !(1..=6).contains(&hashes) {
        return None;
    }
    let after = &rest[hashes..];
    if !after.is_empty() && !after.starts_with(' ') && !after.starts_with('\t') {
        return None;
    }
    // A closing run of `#` is not part of the heading.
    let text = after.trim().trim_end_matches('#').trim_end();
    Some(text.to_string())
}

fn html_anchors(line: &str) -> Vec<String> {
    let mut found = Vec::new();
    for attribute in ["name=\"", "id=\""] {
        let mut rest = line;
        while let Some(start) = rest.find(attribute) {
            let value = &rest[start + attribute.len()..];
            let Some(end) = value.find('"') else { break };
            // Only inside a tag: `<a name="x">`, not prose that happens to say id="x".
            if rest[..start].rfind('<') > rest[..start].rfind('>') {
                found.push(value[..end].to_string());
            }
            rest = &value[end..];
        }
    }
    found
}

/// Splits a line into its text with code spans blanked out, and the code spans' contents. A span opens
/// with a run of backticks and closes with a run of the same length; an unclosed run is plain text.
fn split_code_spans(line: &str) -> (String, Vec<String>) {
    let chars: Vec<char> = line.chars().collect();
    let mut text = String::new();
    let mut spans = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] != '`' {
            text.push(chars[i]);
            i += 1;
            continue;
        }
        let run = chars[i..].iter().take_while(|c| **c == '`').count();
        let mut j = i + run;
        let mut close = None;
        while j < chars.len() {
            if chars[j] == '`' {
                let other = chars[j..].iter().take_while(|c| **c == '`').count();
                if other == run {
                    close = Some(j);
                    break;
                }
                j += other;
            } else {
                j += 1;
            }
        }
        match close {
            Some(end) => {
                let content: String = chars[i + run..end].iter().collect();
                spans.push(content.trim().to_string());
                text.push_str(&" ".repeat(end + run - i));
                i = end + run;
            }
            None => {
                text.extend(&chars[i..i + run]);
                i += run;
            }
        }
    }
    (text, spans)
}

/// Targets of `[text](target)` and `![alt](target)`: the part before any title, without `<...>`.
fn inline_link_targets(line: &str) -> Vec<String> {
    let mut targets = Vec::new();
    let mut rest = line;
    while let Some(start) = rest.find("](") {
        let after = &rest[start + 2..];
        // The target ends at the parenthesis that balances the opening one.
        let mut depth = 1;
        let mut end = None;
        for (i, c) in after.char_indices() {
            match c {
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if depth == 0 {
                        end = Some(i);
                        break;
                    }
                }
                _ => {}
            }
        }
        let Some(end) = end else { break };
        targets.push(clean_target(&after[..end]));
        rest = &after[end..];
    }
    targets
}

/// `[label]: target "title"` on a line of its own.
fn reference_definition(line: &str) -> Option<String> {
    let trimmed = line.trim_start();
    if line.len() - trimmed.len() > 3 || !trimmed.starts_with('[') {
        return None;
    }
    let close = trimmed.find("]:")?;
    if trimmed[1..close].contains('[') || trimmed[1..close].is_empty() {
        return None;
    }
    Some(clean_target(&trimmed[close + 2..]))
}

fn clean_target(raw: &str) -> String {
    let raw = raw.trim();
    if let Some(inner) = raw.strip_prefix('<') {
        return inner.split('>').next().unwrap_or_default().to_string();
    }
    raw.split_whitespace().next().unwrap_or_default().to_string()
}

fn is_external(target: &str) -> bool {
    let scheme_end = target.find(':');
    let path_start = target.find(['/', '#']).unwrap_or(target.len());
    // `http://x`, `mailto:x`: a scheme is letters before a colon that comes before any `/` or `#`.
    matches!(scheme_end, Some(i) if i < path_start && i > 0
        && target[..i].chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.')))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slug_follows_github() {
        assert_eq!(slug("The learning path"), "the-learning-path");
        assert_eq!(slug("Running `lb`"), "running-lb");
        // Punctuation goes, each space becomes a dash (two spaces around a removed `&` give two dashes).
        assert_eq!(slug("Retries, timeouts & budgets"), "retries-timeouts--budgets");
        assert_eq!(slug("Least connections, P2C and EWMA!"), "least-connections-p2c-and-ewma");
        // Korean letters are letters: kept as they are.
        assert_eq!(slug("명령 두 개"), "명령-두-개");
        assert_eq!(slug("한국어: 로드 밸런싱?"), "한국어-로드-밸런싱");
        // Underscores and dashes stay; link targets and tags do not count.
        assert_eq!(slug("max_width and p-99"), "max_width-and-p-99");
        assert_eq!(slug("See [the docs](docs/README.md)<br/>"), "see-the-docs");
        assert_eq!(slug("**Bold** step 1.2"), "bold-step-12");
    }

    #[test]
    fn duplicate_headings_get_numbered_anchors() {
        let doc = Document::parse("# Answer\n\ntext\n\n## Answer\n\nSetext\n------\n<a name=\"here\"></a>\n");
        assert_eq!(doc.anchors(), vec!["answer", "answer-1", "setext", "here"]);
    }

    #[test]
    fn longer_fence_hides_inner_fences() {
        let text =
            "intro\n````markdown\n```console\n$ echo hi\nhi\n```\n````\n```console,exit=1\n$ false\n```\n";
        let doc = Document::parse(text);
        assert_eq!(doc.fences.len(), 2);
        assert_eq!(doc.fences[0].info, "markdown");
        assert_eq!(doc.fences[0].content.len(), 4);
        assert_eq!(doc.fences[1].info, "console,exit=1");
        assert_eq!(doc.fences[1].line, 8);
        assert_eq!(doc.fences[1].content, vec![(9, "$ false".to_string())]);
    }

    #[test]
    fn indented_fence_in_a_list_loses_its_indent() {
        let doc = Document::parse("1. Run:\n\n   ```console\n   $ echo hi\n   hi\n   ```\n");
        assert_eq!(doc.fences[0].content, vec![(4, "$ echo hi".to_string()), (5, "hi".to_string())]);
    }

    #[test]
    fn links_skip_code_spans_and_external_targets() {
        let doc = Document::parse(
            "See [a](a.md#x), ![img](img/p.png \"title\"), [web](https://x.io), `[not](a link)`.\n\
             [ref]: ../b.md\n[same](#top) and [mail](mailto:a@b.c) and [<x>](<c d.md>)\n",
        );
        let targets: Vec<String> = doc.links().into_iter().map(|(_, t)| t).collect();
        assert_eq!(targets, vec!["a.md#x", "img/p.png", "../b.md", "#top", "c d.md"]);
    }

    #[test]
    fn code_spans_are_found_with_double_backticks() {
        let doc = Document::parse("Read `crates/lb/src/main.rs` and ``a ` b`` but not `unclosed\n");
        let spans: Vec<String> = doc.code_spans().into_iter().map(|(_, s)| s).collect();
        assert_eq!(spans, vec!["crates/lb/src/main.rs", "a ` b"]);
    }
}
