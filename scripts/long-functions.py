#!/usr/bin/env python3
"""List Rust functions longer than a limit (default 80 lines), outside tests.

    python3 scripts/long-functions.py                    # every crate, limit 80
    python3 scripts/long-functions.py crates/lb-compare  # some folders or files
    python3 scripts/long-functions.py --limit 60 crates/loadgen

A function's length is its line count from the `fn` line to its closing brace, blank lines and comments
included (what a reader scrolls through); doc comments and attributes above it are not counted. Test code
is skipped: files under a `tests/` folder and `#[cfg(test)]` modules. Prints `LINES path:line name`,
longest first, and exits 1 if any function is over the limit.

The scan is a small lexer, not a parser: it skips strings (raw ones too), char literals and comments,
then matches braces. That is enough for this workspace's code; a macro that builds functions out of
tokens would be missed.
"""

import argparse
import os
import re
import sys


def blank_out(src):
    """`src` with the insides of comments, strings and char literals replaced by spaces (newlines kept),
    so braces and `fn` inside them are not seen."""
    out = list(src)
    i, n = 0, len(src)

    def blank(a, b):
        for k in range(a, b):
            if out[k] != "\n":
                out[k] = " "

    while i < n:
        c = src[i]
        if src.startswith("//", i):
            j = src.find("\n", i)
            j = n if j < 0 else j
            blank(i, j)
            i = j
        elif src.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if src.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif src.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            blank(i, j)
            i = j
        elif (m := re.compile(r'b?r(#*)"').match(src, i)) and (i == 0 or not (src[i - 1].isalnum() or src[i - 1] == "_")):
            end = '"' + m.group(1)
            j = src.find(end, m.end())
            j = n if j < 0 else j + len(end)
            blank(m.end(), j - len(end))
            i = j
        elif c == '"':
            j = i + 1
            while j < n and src[j] != '"':
                j += 2 if src[j] == "\\" else 1
            blank(i + 1, j)
            i = j + 1
        elif c == "'":
            # A char literal ('a', '\n', '\u{1F600}', '{') or a lifetime ('a, 'static).
            m = re.compile(r"'(\\u\{[0-9a-fA-F]+\}|\\.|[^\\'])'").match(src, i)
            if m:
                blank(i + 1, m.end() - 1)
                i = m.end()
            else:
                i += 1
        else:
            i += 1
    return "".join(out)


def matching_brace(text, open_at):
    depth = 0
    for k in range(open_at, len(text)):
        if text[k] == "{":
            depth += 1
        elif text[k] == "}":
            depth -= 1
            if depth == 0:
                return k
    return len(text) - 1


FN = re.compile(r"\bfn\s+([A-Za-z_][A-Za-z0-9_]*)")
TEST_MOD = re.compile(r"#\[cfg\(test\)\]\s*(pub(\([^)]*\))?\s+)?mod\s+\w+\s*\{")


def functions(path):
    """(name, first line, line count) of every function outside `#[cfg(test)]` modules."""
    with open(path, encoding="utf-8") as f:
        text = blank_out(f.read())
    test_ranges = [(m.start(), matching_brace(text, m.end() - 1)) for m in TEST_MOD.finditer(text)]
    for m in FN.finditer(text):
        if any(a <= m.start() <= b for a, b in test_ranges):
            continue
        # The body opens at the first `{` after the signature; a `;` first means a declaration.
        k, parens = m.end(), 0
        while k < len(text):
            ch = text[k]
            if ch in "([":
                parens += 1
            elif ch in ")]":
                parens -= 1
            elif parens == 0 and ch in "{;":
                break
            k += 1
        if k >= len(text) or text[k] == ";":
            continue
        end = matching_brace(text, k)
        first = text.count("\n", 0, m.start()) + 1
        last = text.count("\n", 0, end) + 1
        yield m.group(1), first, last - first + 1


def rust_files(paths):
    for p in paths:
        if os.path.isfile(p):
            yield p
            continue
        for root, dirs, files in os.walk(p):
            dirs[:] = sorted(d for d in dirs if d not in ("target", "tests", ".git"))
            for name in sorted(files):
                if name.endswith(".rs"):
                    yield os.path.join(root, name)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("paths", nargs="*", default=["crates"], help="folders or files (default: crates)")
    parser.add_argument("--limit", type=int, default=80, help="longest allowed function (default 80)")
    args = parser.parse_args()
    long = []
    for path in rust_files(args.paths):
        if f"{os.sep}tests{os.sep}" in path:
            continue
        for name, line, count in functions(path):
            if count > args.limit:
                long.append((count, f"{path}:{line}", name))
    for count, where, name in sorted(long, key=lambda x: (-x[0], x[1])):
        print(f"{count:5} {where} {name}")
    sys.exit(1 if long else 0)


if __name__ == "__main__":
    main()
