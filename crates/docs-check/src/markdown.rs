//! What the checks need from a lesson: fenced code blocks, headings (and their GitHub anchors),
//! relative links and inline code spans, each with the line it is on.
//!
//! The file is read by `pulldown-cmark`, a CommonMark parser, with the GitHub extensions GitHub
//! renders (tables, strikethrough, task lists, footnotes), so the checker sees the structure a reader
//! sees on GitHub: a link whose text or target goes over two lines, a link inside a list item or a
//! table, a fence indented inside a list item, a block quote, an HTML block. A line-by-line reader
//! gets each of those wrong somewhere; a parser does not, and it gives the byte offset of every
//! element, which [`LineIndex`] turns into the line numbers the reports print.
//!
//! - **Fenced blocks** (```` ``` ```` or `~~~`, three or more) close at a fence of the same character
//!   that is at least as long as the opening one, which is what lets `docs/writing-lessons.md` show a
//!   ```` ```console ```` block inside a ````` ```` ````` block without the inner one being run. A
//!   fence inside a list item loses the item's indentation. Indented code blocks are not fences:
//!   only fences carry an info string such as `console`.
//! - **Headings** (ATX `#` and setext `===`/`---`) become anchors with GitHub's rules, see [`slug`].
//!   `<a name="..">` and `id=".."` in HTML count too.
//! - **Links**: inline links and images are checked where their target is written; a reference
//!   link (`[text][label]`) is checked once, at its definition (`[label]: target`), defined or not
//!   used. `href=".."` and `src=".."` in HTML are links too. Autolinks (`<https://..>`) and other
//!   external targets are left out: they are never fetched.
//! - **Code spans** are the text of every inline `` `code` ``, trimmed, outside code blocks; a link
//!   written inside backticks is an example, not a link.
//!
//! The cost is one pass over the file; nothing is kept but the lists [`Document`] holds.

use std::ops::Range;

use pulldown_cmark::{CodeBlockKind, Event, LinkType, Options, Parser, RefDefs, Tag, TagEnd};

/// One line of a fenced block's content: its 1-based line number in the file and its text, without
/// the indentation the fence had (inside a list item) or a block quote's `>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub number: usize,
    pub text: String,
}

/// A fenced code block: its info string (`console,exit=1`), the line of its opening fence (1-based)
/// and its content lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub info: String,
    pub line: usize,
    pub content: Vec<Line>,
}

/// A relative or same-file link target (`path`, `path#anchor`, `#anchor`) and the line it is
/// written on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub line: usize,
    pub target: String,
}

/// The text of an inline code span and the line it starts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeSpan {
    pub line: usize,
    pub text: String,
}

/// A heading: its level (1 for `#`), its rendered text and the line it starts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heading {
    pub level: usize,
    pub text: String,
    pub line: usize,
}

/// What the checks need from one Markdown file.
#[derive(Debug, Clone, Default)]
pub struct Document {
    pub fences: Vec<Fence>,
    pub headings: Vec<Heading>,
    anchors: Vec<String>,
    links: Vec<Link>,
    code_spans: Vec<CodeSpan>,
}

impl Document {
    pub fn parse(text: &str) -> Document {
        let mut reader = Reader::new(text);
        let mut events = Parser::new_ext(text, github_options()).into_offset_iter();
        for (event, range) in events.by_ref() {
            reader.event(event, range);
        }
        reader.reference_definitions(events.reference_definitions());
        reader.finish()
    }

    /// Every anchor a link can point at in this file, in order: heading slugs (deduplicated GitHub's
    /// way, with `-1`, `-2`, ... suffixes) and explicit HTML anchors.
    pub fn anchors(&self) -> &[String] {
        &self.anchors
    }

    /// Relative and same-file link targets, in the order they are written. External links (`http:`,
    /// `https:`, `mailto:`, ...) are left out: they are never fetched.
    pub fn links(&self) -> &[Link] {
        &self.links
    }

    /// Every inline code span outside code blocks.
    pub fn code_spans(&self) -> &[CodeSpan] {
        &self.code_spans
    }
}

/// The Markdown GitHub renders: CommonMark and the GitHub extensions that change what is a link or
/// a code span (a table cell is inline text; a footnote reference is not a link).
fn github_options() -> Options {
    Options::ENABLE_TABLES
        | Options::ENABLE_STRIKETHROUGH
        | Options::ENABLE_TASKLISTS
        | Options::ENABLE_FOOTNOTES
}

/// GitHub's heading anchor: the heading's text as rendered (code spans keep their text, link targets
/// and HTML tags go), lowercased; every character that is not a letter, a digit, `-`, `_` or a space
/// removed; each space turned into `-`. Letters of every script are kept, so `## 명령 두 개` becomes
/// `명령-두-개`. `heading` is the Markdown after the `#`s.
pub fn slug(heading: &str) -> String {
    Document::parse(&format!("# {heading}")).anchors.into_iter().next().unwrap_or_default()
}

/// The slug of a heading's rendered text (see [`slug`]).
fn slug_text(text: &str) -> String {
    text.trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | ' '))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// Byte offsets to 1-based line numbers.
#[derive(Debug, Clone)]
pub struct LineIndex {
    /// The offset at which each line starts.
    starts: Vec<usize>,
}

impl LineIndex {
    pub fn new(text: &str) -> LineIndex {
        let starts = std::iter::once(0).chain(text.match_indices('\n').map(|(i, _)| i + 1)).collect();
        LineIndex { starts }
    }

    /// The line that byte `offset` is on.
    pub fn line(&self, offset: usize) -> usize {
        self.starts.partition_point(|&start| start <= offset)
    }
}

/// A fenced block being read: its text arrives in pieces.
#[derive(Debug)]
struct OpenFence {
    info: String,
    line: usize,
    text: String,
}

/// A heading being read: its rendered text, and HTML anchors inside it (listed after the heading's
/// own anchor, as they come after it on GitHub's page).
#[derive(Debug, Default)]
struct OpenHeading {
    level: usize,
    line: usize,
    text: String,
    html_anchors: Vec<String>,
}

/// An HTML block being read.
#[derive(Debug)]
struct OpenHtml {
    start: usize,
    text: String,
}

/// Turns the parser's events into a [`Document`].
struct Reader<'a> {
    source: &'a str,
    lines: LineIndex,
    doc: Document,
    fence: Option<OpenFence>,
    heading: Option<OpenHeading>,
    html_block: Option<OpenHtml>,
    /// Links with the offset they are written at: reference definitions arrive after every event and
    /// are put in place by it.
    links: Vec<(usize, Link)>,
}

impl<'a> Reader<'a> {
    fn new(source: &'a str) -> Reader<'a> {
        Reader {
            source,
            lines: LineIndex::new(source),
            doc: Document::default(),
            fence: None,
            heading: None,
            html_block: None,
            links: Vec::new(),
        }
    }

    fn event(&mut self, event: Event<'_>, range: Range<usize>) {
        match event {
            Event::Start(Tag::CodeBlock(CodeBlockKind::Fenced(info))) => {
                let line = self.lines.line(range.start);
                self.fence = Some(OpenFence { info: info.trim().to_string(), line, text: String::new() });
            }
            Event::End(TagEnd::CodeBlock) => self.close_fence(),
            Event::Start(Tag::Heading { level, .. }) => {
                let line = self.lines.line(range.start);
                self.heading = Some(OpenHeading { level: level as usize, line, ..OpenHeading::default() })
            }
            Event::End(TagEnd::Heading(_)) => self.close_heading(),
            // Reference links are checked at their definition; autolinks are always external.
            Event::Start(
                Tag::Link { link_type: LinkType::Inline, dest_url, .. }
                | Tag::Image { link_type: LinkType::Inline, dest_url, .. },
            ) => {
                let at = self.destination_offset(range);
                self.add_link(at, &dest_url);
            }
            Event::Text(text) => {
                if let Some(fence) = &mut self.fence {
                    fence.text.push_str(&text);
                } else if let Some(heading) = &mut self.heading {
                    heading.text.push_str(&text);
                }
            }
            Event::SoftBreak | Event::HardBreak => {
                if let Some(heading) = &mut self.heading {
                    heading.text.push(' ');
                }
            }
            Event::Code(code) => {
                if let Some(heading) = &mut self.heading {
                    heading.text.push_str(&code);
                }
                let line = self.lines.line(range.start);
                self.doc.code_spans.push(CodeSpan { line, text: code.trim().to_string() });
            }
            // An HTML block arrives a line at a time; a tag may span lines, so read it whole.
            Event::Start(Tag::HtmlBlock) => {
                self.html_block = Some(OpenHtml { start: range.start, text: String::new() })
            }
            Event::Html(html) => match &mut self.html_block {
                Some(block) => block.text.push_str(&html),
                None => self.html(&html, range.start),
            },
            Event::End(TagEnd::HtmlBlock) => {
                if let Some(block) = self.html_block.take() {
                    self.html(&block.text, block.start);
                }
            }
            Event::InlineHtml(html) => self.html(&html, range.start),
            _ => {}
        }
    }

    fn close_fence(&mut self) {
        // Only fenced blocks were opened; an indented block's end finds nothing to close.
        let Some(fence) = self.fence.take() else { return };
        // A fenced block's content lines are the source lines after the fence, one for one.
        let content = fence
            .text
            .lines()
            .enumerate()
            .map(|(i, text)| Line { number: fence.line + 1 + i, text: text.to_string() })
            .collect();
        self.doc.fences.push(Fence { info: fence.info, line: fence.line, content });
    }

    fn close_heading(&mut self) {
        let Some(heading) = self.heading.take() else { return };
        let base = slug_text(&heading.text);
        let mut candidate = base.clone();
        let mut n = 0;
        while self.doc.anchors.contains(&candidate) {
            n += 1;
            candidate = format!("{base}-{n}");
        }
        self.doc.anchors.push(candidate);
        self.doc.anchors.extend(heading.html_anchors);
        let text = heading.text.trim().to_string();
        self.doc.headings.push(Heading { level: heading.level, text, line: heading.line });
    }

    /// Where an inline link's target starts: after the `](` that ends its text, and any line break
    /// after that, so a target on the line below its text is reported on its own line.
    fn destination_offset(&self, range: Range<usize>) -> usize {
        let written = &self.source[range.clone()];
        let Some(open) = written.rfind("](") else { return range.start };
        let after = &written[open + 2..];
        range.start + open + 2 + (after.len() - after.trim_start().len())
    }

    fn add_link(&mut self, offset: usize, target: &str) {
        if target.is_empty() || is_external(target) {
            return;
        }
        self.links.push((offset, Link { line: self.lines.line(offset), target: target.to_string() }));
    }

    /// HTML, a block or inline: anchors it defines and links it makes. `start` is the offset of its
    /// first line.
    fn html(&mut self, html: &str, start: usize) {
        let line_of = |index: usize| self.lines.line(start) + html[..index].matches('\n').count();
        let anchors = ["name", "id"].iter().flat_map(|a| attributes(html, a)).map(|a| a.value);
        match &mut self.heading {
            Some(heading) => heading.html_anchors.extend(anchors),
            None => self.doc.anchors.extend(anchors),
        }
        let mut targets: Vec<Attribute> = ["href", "src"].iter().flat_map(|a| attributes(html, a)).collect();
        targets.sort_by_key(|a| a.index);
        for Attribute { index, value: target } in targets {
            if !target.is_empty() && !is_external(&target) {
                self.links.push((start + index, Link { line: line_of(index), target }));
            }
        }
    }

    /// `[label]: target` definitions, used or not: each is checked once, where it is written.
    fn reference_definitions(&mut self, definitions: &RefDefs<'_>) {
        for (_, definition) in definitions.iter() {
            self.add_link(definition.span.start, &definition.dest);
        }
    }

    fn finish(mut self) -> Document {
        self.links.sort_by_key(|(offset, _)| *offset);
        self.doc.links = self.links.into_iter().map(|(_, link)| link).collect();
        self.doc
    }
}

/// An attribute's value in some HTML, and the byte index where the value starts.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Attribute {
    index: usize,
    value: String,
}

/// The values of attribute `name` (`name="value"` or `name='value'`) inside the tags of `html`.
fn attributes(html: &str, name: &str) -> Vec<Attribute> {
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(at) = html[from..].find(name).map(|i| from + i) {
        from = at + name.len();
        let before = html[..at].chars().next_back();
        let Some(quote) = html[from..].strip_prefix('=').and_then(|v| v.chars().next()) else { continue };
        // A whole attribute name (`src`, not `data-src`), with a quoted value, inside a tag.
        let in_tag = html[..at].rfind('<') > html[..at].rfind('>');
        if !before.is_some_and(char::is_whitespace) || !matches!(quote, '"' | '\'') || !in_tag {
            continue;
        }
        let index = from + 2;
        let Some(length) = html[index..].find(quote) else { break };
        found.push(Attribute { index, value: html[index..index + length].to_string() });
        from = index + length;
    }
    found
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

    fn targets(doc: &Document) -> Vec<(usize, &str)> {
        doc.links().iter().map(|l| (l.line, l.target.as_str())).collect()
    }

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
        // A heading that starts like a list item is still a heading.
        assert_eq!(slug("1. Setup"), "1-setup");
    }

    #[test]
    fn duplicate_headings_get_numbered_anchors() {
        let doc = Document::parse("# Answer\n\ntext\n\n## Answer\n\nSetext\n------\n<a name=\"here\"></a>\n");
        assert_eq!(doc.anchors(), vec!["answer", "answer-1", "setext", "here"]);
        let headings: Vec<(usize, &str, usize)> =
            doc.headings.iter().map(|h| (h.level, h.text.as_str(), h.line)).collect();
        assert_eq!(headings, vec![(1, "Answer", 1), (2, "Answer", 5), (2, "Setext", 7)]);
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
        assert_eq!(doc.fences[1].content, vec![Line { number: 9, text: "$ false".to_string() }]);
    }

    #[test]
    fn indented_fence_in_a_list_loses_its_indent() {
        let doc = Document::parse("1. Run:\n\n   ```console\n   $ echo hi\n   hi\n   ```\n");
        assert_eq!(
            doc.fences[0].content,
            vec![
                Line { number: 4, text: "$ echo hi".to_string() },
                Line { number: 5, text: "hi".to_string() }
            ]
        );
    }

    #[test]
    fn blank_lines_and_an_unclosed_fence_keep_their_line_numbers() {
        let doc = Document::parse("```console\n$ echo a\n\na\n```\n\n- item\n\n  ```sh\n  one\n\n  two\n");
        let lines = |f: &Fence| f.content.iter().map(|l| (l.number, l.text.clone())).collect::<Vec<_>>();
        assert_eq!(lines(&doc.fences[0]), vec![(2, "$ echo a".into()), (3, String::new()), (4, "a".into())]);
        assert_eq!(doc.fences[1].line, 9);
        assert_eq!(lines(&doc.fences[1]), vec![(10, "one".into()), (11, String::new()), (12, "two".into())]);
    }

    #[test]
    fn links_skip_code_spans_and_external_targets() {
        // A reference definition cannot interrupt a paragraph (CommonMark), hence the blank line.
        let doc = Document::parse(
            "See [a](a.md#x), ![img](img/p.png \"title\"), [web](https://x.io), `[not](a link)`.\n\n\
             [ref]: ../b.md\n[same](#top) and [mail](mailto:a@b.c) and [<x>](<c d.md>)\n",
        );
        let targets: Vec<String> = doc.links().iter().map(|l| l.target.clone()).collect();
        assert_eq!(targets, vec!["a.md#x", "img/p.png", "../b.md", "#top", "c d.md"]);
    }

    #[test]
    fn code_spans_are_found_with_double_backticks() {
        let doc = Document::parse("Read `crates/lb/src/main.rs` and ``a ` b`` but not `unclosed\n");
        let spans: Vec<String> = doc.code_spans().iter().map(|s| s.text.clone()).collect();
        assert_eq!(spans, vec!["crates/lb/src/main.rs", "a ` b"]);
    }

    #[test]
    fn a_link_split_over_two_lines_is_found_where_its_target_is() {
        // Text over two lines, then a target on the line after its text: both are one link each.
        let doc = Document::parse("Read [the weights\nlesson](lessons/weights.md) and [this](\nother.md).\n");
        assert_eq!(targets(&doc), vec![(2, "lessons/weights.md"), (3, "other.md")]);
    }

    #[test]
    fn links_in_list_items_tables_and_quotes_are_found() {
        let text = "- one [a](a.md)\n  - nested [b](b.md#x)\n\n| k | v |\n|---|---|\n| c | [c](c.md) |\n\n\
                    > [d](d.md)\n\n1. [e\n   more](e.md)\n";
        let doc = Document::parse(text);
        assert_eq!(targets(&doc), vec![(1, "a.md"), (2, "b.md#x"), (6, "c.md"), (8, "d.md"), (11, "e.md")]);
    }

    #[test]
    fn reference_links_are_checked_at_their_definition() {
        let doc =
            Document::parse("See [the lesson][l] and [l] again.\n\n[l]: lessons/l.md\n[unused]: u.md\n");
        assert_eq!(targets(&doc), vec![(3, "lessons/l.md"), (4, "u.md")]);
    }

    #[test]
    fn html_blocks_give_anchors_and_links() {
        let text = "<p align=\"center\">\n  <img alt=\"logo\"\n    src=\"docs/logo.svg\" data-src=\"no.svg\">\n  \
                    <a href=\"https://x.io\">x</a> <a href=\"#top\" id=\"top\">top</a>\n</p>\n\n\
                    ## Title <a name=\"t\"></a>\n\nText with <a href=\"inline.md\">html</a>.\n";
        let doc = Document::parse(text);
        // The `src` of a tag that spans two lines is on the second.
        assert_eq!(targets(&doc), vec![(3, "docs/logo.svg"), (4, "#top"), (9, "inline.md")]);
        assert_eq!(doc.anchors(), vec!["top", "title", "t"]);
    }

    #[test]
    fn indented_code_is_not_a_fence_and_its_links_are_not_links() {
        let doc = Document::parse("Text:\n\n    ```console\n    [x](nowhere.md)\n");
        assert!(doc.fences.is_empty());
        assert!(doc.links().is_empty());
    }

    #[test]
    fn line_index() {
        let lines = LineIndex::new("a\nbc\n\nd");
        assert_eq!([0, 1, 2, 4, 5, 6].map(|o| lines.line(o)), [1, 1, 2, 2, 3, 4]);
    }
}
