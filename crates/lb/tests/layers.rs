//! The layering of `lb`'s source stays true: no two top-level modules of `src/` import each other, even
//! through others. A module's imports are the `crate::name` paths in its code (comments and doc
//! comments are left out, so an intra-doc link to a higher layer is fine).
//!
//! `lib.rs` lists the layers bottom to top; this test does not hold each import to that order, only to
//! the absence of a cycle, which is what keeps the layers layers: with no cycle, some order exists in
//! which every import points down.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level module name -> the top-level modules it imports.
type Graph = BTreeMap<String, BTreeSet<String>>;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.unwrap_or_else(|e| panic!("{e}")).path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file belongs to: `net/tls.rs` -> `net`, `cli.rs` -> `cli`; `None` for the
/// crate root and the binary.
fn top_module(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (name != "lib" && name != "main").then(|| name.to_string())
}

/// The code of a file without comments or the `#[cfg(test)]` module at its end (tests may reach
/// anywhere).
fn code_of(text: &str) -> String {
    let text = text.split("\n#[cfg(test)]\nmod tests").next().unwrap_or(text);
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The top-level names a piece of code reaches through `crate::`: `crate::net::tls::X` gives `net`,
/// and `use crate::{a::b, c}` gives `a` and `c`.
fn imports(code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        let after = &rest[i + "crate::".len()..];
        if let Some(group) = after.strip_prefix('{') {
            // A group: every item at depth zero names a module (or a root item such as `Config`).
            let mut depth = 0;
            let mut item = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        found.insert(first_segment(&item));
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
            found.insert(first_segment(&item));
        } else {
            found.insert(first_segment(after));
        }
        rest = after;
    }
    found.remove("");
    found
}

fn first_segment(path: &str) -> String {
    path.trim().chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect()
}

fn graph_of(src: &Path) -> Graph {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let modules: BTreeSet<String> = files.iter().filter_map(|f| top_module(src, f)).collect();
    let mut graph = Graph::new();
    for file in &files {
        let Some(module) = top_module(src, file) else { continue };
        let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let deps = graph.entry(module.clone()).or_default();
        for dep in imports(&code_of(&text)) {
            if dep != module && modules.contains(&dep) {
                deps.insert(dep);
            }
        }
    }
    graph
}

/// A cycle in `graph`, as the path that closes it (`a -> b -> a`), if there is one.
fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit(node: &str, graph: &Graph, marks: &mut BTreeMap<String, Mark>, path: &mut Vec<String>) -> bool {
        match marks.get(node) {
            Some(Mark::Done) => return false,
            Some(Mark::Open) => {
                path.push(node.to_string());
                return true;
            }
            None => {}
        }
        marks.insert(node.to_string(), Mark::Open);
        path.push(node.to_string());
        for dep in graph.get(node).into_iter().flatten() {
            if visit(dep, graph, marks, path) {
                return true;
            }
        }
        path.pop();
        marks.insert(node.to_string(), Mark::Done);
        false
    }
    let mut marks = BTreeMap::new();
    for node in graph.keys() {
        let mut path = Vec::new();
        if visit(node, graph, &mut marks, &mut path) {
            // Keep only the loop itself: from the first visit of the node that closed it.
            let last = path.last().cloned().unwrap_or_default();
            let start = path.iter().position(|n| *n == last).unwrap_or(0);
            return Some(path[start..].to_vec());
        }
    }
    None
}

#[test]
fn no_cycle_between_the_top_level_modules_of_lb() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let graph = graph_of(&src);
    for layer in
        ["config", "net", "http", "client", "upstream", "observe", "control", "forward", "server", "cli"]
    {
        assert!(
            graph.contains_key(layer),
            "no module {layer} in src/: {:?}",
            graph.keys().collect::<Vec<_>>()
        );
    }
    if let Some(cycle) = find_cycle(&graph) {
        panic!("the modules of lb import each other in a circle: {}", cycle.join(" -> "));
    }
}

#[test]
fn the_bottom_layers_import_nothing_above_them() {
    let graph = graph_of(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    let deps = |m: &str| graph.get(m).cloned().unwrap_or_default();
    assert_eq!(deps("config"), BTreeSet::new(), "config is the bottom layer");
    let net: Vec<_> = deps("net").into_iter().collect();
    assert_eq!(net, ["config"], "net may import only config");
    let http: BTreeSet<_> = deps("http");
    assert!(http.is_subset(&["config".to_string(), "net".to_string()].into()), "http imports {http:?}");
}

#[test]
fn the_checker_finds_imports_and_cycles() {
    let code = code_of(
        "use crate::net::tls::X;\nuse crate::{config::A, http::{h1, B}};\n// crate::server in a comment\n\
         fn f() { crate::observe::metrics::g(); }\n#[cfg(test)]\nmod tests {\n use crate::cli;\n}\n",
    );
    let found: Vec<_> = imports(&code).into_iter().collect();
    assert_eq!(found, ["config", "http", "net", "observe"]);

    let graph = |edges: &[(&str, &str)]| {
        let mut g = Graph::new();
        for (a, b) in edges {
            g.entry(a.to_string()).or_default().insert(b.to_string());
            g.entry(b.to_string()).or_default();
        }
        g
    };
    assert_eq!(find_cycle(&graph(&[("a", "b"), ("b", "c"), ("a", "c")])), None);
    assert_eq!(
        find_cycle(&graph(&[("a", "b"), ("b", "c"), ("c", "a")])),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
    assert_eq!(find_cycle(&graph(&[("x", "y"), ("y", "y2"), ("y2", "y")])).map(|c| c.len()), Some(3));
}
