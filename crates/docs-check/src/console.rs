//! `console` blocks: the commands a lesson tells a learner to run, with the output they print.
//!
//! A block is a transcript, the way it looks in a terminal:
//!
//! ````text
//! ```console,timeout=120,wait=127.0.0.1:8080
//! $ toy-backend --listen 127.0.0.1:8080 &
//! $ curl -s 127.0.0.1:8080/ \
//!     -H 'x-delay-ms: 5'
//! hello from 127.0.0.1:8080
//! ```
//! ````
//!
//! - A line starting with `$ ` is a command; a line ending in `\` continues it on the next line (the
//!   shell joins them, so the text goes to `bash -c` as written).
//! - The lines after a command, up to the next `$ `, are its expected standard output.
//! - A command ending in ` &` is a background service: started, left running until the end of the file,
//!   its output not checked.
//! - Options after commas: `ignore` (not run, counted as skipped), `exit=N` (the exit status of the
//!   block's last command; all others must exit 0), `timeout=SECONDS` (per command, default 60),
//!   `wait=HOST:PORT[+HOST:PORT...]` (after the block's last background command, wait until each port
//!   accepts a TCP connection), `requires=PROGRAM[+PROGRAM...]` (programs from outside the workspace,
//!   such as `nginx`, that must be on `PATH`; without them the rest of the file is skipped, see
//!   [`crate::check_files`]).
//!
//! Anything else is an error reported at its line, so a typo in an option cannot silently turn a
//! checked block into an unchecked one.

use std::time::Duration;

use thiserror::Error;

use crate::markdown::{Fence, Line};

/// The per-command timeout when a block does not set one.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("line {line}: {message}")]
pub struct ParseError {
    pub line: usize,
    pub message: String,
}

/// The options of a console block, from its info string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockOptions {
    pub ignore: bool,
    pub exit: i32,
    pub timeout: Duration,
    pub wait: Vec<String>,
    /// Programs that must be on the commands' `PATH` for this block to run.
    pub requires: Vec<String>,
}

impl Default for BlockOptions {
    fn default() -> Self {
        BlockOptions {
            ignore: false,
            exit: 0,
            timeout: DEFAULT_TIMEOUT,
            wait: Vec::new(),
            requires: Vec::new(),
        }
    }
}

/// One `$ ` command and the output expected from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// The line of the `$ `, 1-based, in the Markdown file.
    pub line: usize,
    /// The command for `bash -c`, without `$ ` and without a trailing ` &`; continuation lines are kept
    /// with their backslash-newline, which bash removes.
    pub text: String,
    pub background: bool,
    pub expected: Vec<String>,
}

/// A parsed console block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleBlock {
    pub line: usize,
    pub options: BlockOptions,
    pub commands: Vec<Command>,
}

/// Reads a fence's info string: `None` if the block is not a console block (`sh`, `toml`, ...), else
/// its options. `console` must stand alone or be followed by a comma: `console title` is not one, since
/// GitHub would read it as the language `console` with other words and a reader could not tell.
pub fn parse_info(info: &str, line: usize) -> Option<Result<BlockOptions, ParseError>> {
    let info = info.trim();
    let rest = match info.strip_prefix("console") {
        Some("") => return Some(Ok(BlockOptions::default())),
        Some(rest) => rest.strip_prefix(',')?,
        None => return None,
    };
    let mut options = BlockOptions::default();
    let error = |message: String| Some(Err(ParseError { line, message }));
    for option in rest.split(',').map(str::trim) {
        let (key, value) = option.split_once('=').unwrap_or((option, ""));
        match (key, value) {
            ("ignore", "") => options.ignore = true,
            ("exit", v) => match v.parse() {
                Ok(code) => options.exit = code,
                Err(_) => return error(format!("`exit={v}`: the exit status must be a number")),
            },
            ("timeout", v) => match v.parse::<u64>() {
                Ok(seconds) if seconds > 0 => options.timeout = Duration::from_secs(seconds),
                _ => return error(format!("`timeout={v}`: the timeout must be a whole number of seconds")),
            },
            ("wait", v) if !v.is_empty() => {
                for address in v.split('+') {
                    if !address.contains(':') {
                        return error(format!("`wait={v}`: each address must be HOST:PORT"));
                    }
                    options.wait.push(address.to_string());
                }
            }
            ("requires", v) if !v.is_empty() => {
                for program in v.split('+') {
                    // A name, not a path or a shell word: it is looked up in each `PATH` folder.
                    let plain = !program.is_empty()
                        && program.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
                    if !plain {
                        return error(format!(
                            "`requires={v}`: each program must be a plain name such as `nginx` \
                             (letters, digits, `-`, `_`, `.`), several joined by `+`"
                        ));
                    }
                    options.requires.push(program.to_string());
                }
            }
            _ => {
                return error(format!(
                    "unknown console option `{option}` (known: ignore, exit=N, timeout=SECONDS, \
                     wait=HOST:PORT[+HOST:PORT], requires=PROGRAM[+PROGRAM])"
                ));
            }
        }
    }
    Some(Ok(options))
}

/// Parses a fence whose info string is a console one. `None` if it is not a console block.
pub fn parse_block(fence: &Fence) -> Option<Result<ConsoleBlock, ParseError>> {
    let options = match parse_info(&fence.info, fence.line)? {
        Ok(options) => options,
        Err(error) => return Some(Err(error)),
    };
    Some(parse_commands(&fence.content).map(|commands| ConsoleBlock { line: fence.line, options, commands }))
}

fn parse_commands(content: &[Line]) -> Result<Vec<Command>, ParseError> {
    let mut commands: Vec<Command> = Vec::new();
    let mut lines = content.iter();
    while let Some(Line { number, text: line }) = lines.next() {
        if let Some(first) = line.strip_prefix("$ ") {
            let mut text = first.to_string();
            while text.ends_with('\\') {
                let Some(Line { text: next, .. }) = lines.next() else {
                    return Err(ParseError {
                        line: *number,
                        message: "the command's last line ends in `\\` but nothing follows".to_string(),
                    });
                };
                text.push('\n');
                text.push_str(next);
            }
            let trimmed = text.trim_end();
            let background = trimmed.ends_with(" &") && !trimmed.ends_with("&&");
            let text = if background { trimmed[..trimmed.len() - 2].trim_end() } else { trimmed };
            if text.trim().is_empty() {
                return Err(ParseError { line: *number, message: "empty command".to_string() });
            }
            commands.push(Command {
                line: *number,
                text: text.to_string(),
                background,
                expected: Vec::new(),
            });
        } else {
            match commands.last_mut() {
                Some(command) => command.expected.push(line.clone()),
                // A blank line before the first command is harmless; text is not: it would be output
                // that no command prints, and the checker cannot tell what the author meant.
                None if line.trim().is_empty() => {}
                None => {
                    return Err(ParseError {
                        line: *number,
                        message: format!(
                            "`{line}` comes before the first `$ ` command; a console block starts with \
                             a command (use a `text` block for other transcripts)"
                        ),
                    });
                }
            }
        }
    }
    Ok(commands)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fence(info: &str, lines: &[&str]) -> Fence {
        Fence {
            info: info.to_string(),
            line: 10,
            content: lines
                .iter()
                .enumerate()
                .map(|(i, l)| Line { number: 11 + i, text: l.to_string() })
                .collect(),
        }
    }

    #[test]
    fn info_strings() {
        assert_eq!(parse_info("console", 1), Some(Ok(BlockOptions::default())));
        assert_eq!(parse_info("sh", 1), None);
        assert_eq!(parse_info("consoles", 1), None);
        assert_eq!(parse_info("console title", 1), None);
        let options = parse_info("console,exit=1, timeout=120,wait=127.0.0.1:8080+127.0.0.1:9900", 1);
        assert_eq!(
            options,
            Some(Ok(BlockOptions {
                ignore: false,
                exit: 1,
                timeout: Duration::from_secs(120),
                wait: vec!["127.0.0.1:8080".to_string(), "127.0.0.1:9900".to_string()],
                requires: vec![],
            }))
        );
        assert!(matches!(parse_info("console,ignore", 1), Some(Ok(BlockOptions { ignore: true, .. }))));
        // A typo must be an error, not a silently unchecked block.
        assert!(matches!(parse_info("console,ignroe", 3), Some(Err(ParseError { line: 3, .. }))));
        assert!(matches!(parse_info("console,timeout=0", 3), Some(Err(_))));
        assert!(matches!(parse_info("console,wait=8080", 3), Some(Err(_))));
    }

    #[test]
    fn requires_lists_programs() {
        let Some(Ok(options)) = parse_info("console,requires=envoy,wait=127.0.0.1:18083", 1) else {
            panic!("requires=envoy should parse")
        };
        assert_eq!(options.requires, vec!["envoy"]);
        assert_eq!(options.wait, vec!["127.0.0.1:18083"]);
        let Some(Ok(options)) = parse_info("console,requires=nginx+wrk+envoy-1.40", 1) else {
            panic!("several programs should parse")
        };
        assert_eq!(options.requires, vec!["nginx", "wrk", "envoy-1.40"]);
        // Empty names, paths and shell words are errors at the block's line, not a check that can
        // never pass (or one that runs something).
        for bad in
            ["requires=", "requires=nginx+", "requires=+nginx", "requires=/usr/sbin/nginx", "requires=a b"]
        {
            let info = format!("console,{bad}");
            assert!(matches!(parse_info(&info, 7), Some(Err(ParseError { line: 7, .. }))), "{bad}");
        }
        // `requires` alone, without `=`, is a typo of the option, not a block with no requirement.
        assert!(matches!(parse_info("console,requires", 7), Some(Err(_))));
    }

    #[test]
    fn commands_outputs_continuations_and_background() {
        let block = fence(
            "console,wait=127.0.0.1:8080",
            &[
                "$ toy-backend --listen 127.0.0.1:8080 &",
                "$ curl -s 127.0.0.1:8080/ \\",
                "    -H 'x: 1'",
                "hello",
                "",
                "...",
                "$ echo a && echo b",
                "a",
                "b",
            ],
        );
        let Some(Ok(parsed)) = parse_block(&block) else { panic!("not parsed: {block:?}") };
        assert_eq!(parsed.line, 10);
        assert_eq!(
            parsed.commands,
            vec![
                Command {
                    line: 11,
                    text: "toy-backend --listen 127.0.0.1:8080".to_string(),
                    background: true,
                    expected: vec![],
                },
                Command {
                    line: 12,
                    text: "curl -s 127.0.0.1:8080/ \\\n    -H 'x: 1'".to_string(),
                    background: false,
                    expected: vec!["hello".to_string(), String::new(), "...".to_string()],
                },
                Command {
                    line: 17,
                    text: "echo a && echo b".to_string(),
                    background: false,
                    expected: vec!["a".to_string(), "b".to_string()],
                },
            ]
        );
    }

    #[test]
    fn output_before_any_command_is_an_error() {
        let block = fence("console", &["", "hello", "$ echo hello"]);
        assert!(matches!(parse_block(&block), Some(Err(ParseError { line: 12, .. }))));
        let dangling = fence("console", &["$ echo \\"]);
        assert!(matches!(parse_block(&dangling), Some(Err(ParseError { line: 11, .. }))));
    }

    #[test]
    fn dollar_without_space_is_output() {
        let block = fence("console", &["$ echo '$HOME'", "$HOME"]);
        let Some(Ok(parsed)) = parse_block(&block) else { panic!() };
        assert_eq!(parsed.commands[0].expected, vec!["$HOME"]);
    }
}
