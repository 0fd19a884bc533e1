//! Design rules of the source tree that the compiler does not enforce.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn rust_files(folder: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(folder).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

/// Which top-level modules of `src/` each one refers to (`crate::<module>`),
/// test code left out: a test may reach anywhere.
fn module_graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let relative = file.strip_prefix(&src).unwrap();
        let first = relative.components().next().unwrap().as_os_str().to_string_lossy().into_owned();
        let module = first.trim_end_matches(".rs").to_owned();
        if ["lib", "main"].contains(&module.as_str()) || relative.ends_with("tests.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        let code = without_test_modules(&text);
        // How many `super::` reach the crate root from this file: 1 from
        // `src/x.rs` or `src/x/mod.rs`, 2 from `src/x/y.rs`, and so on.
        let depth = relative.components().count() - usize::from(relative.ends_with("mod.rs"));
        let uses = graph.entry(module.clone()).or_default();
        for name in crate_paths(&code, depth) {
            if name != module {
                uses.insert(name);
            }
        }
    }
    graph
}

/// The top-level modules a file's code names from the crate root:
/// `crate::a::...` (`$crate::` in a macro too), each module of a group
/// `crate::{a::x, b}`, and `super::` chains long enough (`depth`) to reach
/// the root.
fn crate_paths(code: &str, depth: usize) -> BTreeSet<String> {
    let word = |text: &str| -> String { text.chars().take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_').collect() };
    let mut names = BTreeSet::new();
    let mut roots: Vec<usize> = code.match_indices("crate::").map(|(at, _)| at + "crate::".len()).collect();
    let root_by_super = "super::".repeat(depth);
    roots.extend(code.match_indices(&root_by_super).map(|(at, _)| at + root_by_super.len()));
    for at in roots {
        let rest = &code[at..];
        if let Some(group) = rest.strip_prefix('{') {
            // The group's own members: split at commas outside nested braces.
            let mut nesting = 0usize;
            let mut member_start = true;
            for (offset, c) in group.char_indices() {
                match c {
                    '{' => nesting += 1,
                    '}' if nesting == 0 => break,
                    '}' => nesting -= 1,
                    ',' if nesting == 0 => member_start = true,
                    c if member_start && !c.is_whitespace() => {
                        member_start = false;
                        names.insert(word(&group[offset..]));
                    }
                    _ => {}
                }
            }
        } else {
            names.insert(word(rest));
        }
    }
    names.retain(|name| !name.is_empty() && name != "super" && name != "self");
    names
}

/// `text` without its `#[cfg(test)] mod ... { ... }` blocks (braces
/// matched; the gateway's sources keep braces in strings balanced).
fn without_test_modules(text: &str) -> String {
    let mut code = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("#[cfg(test)]\nmod ") {
        code.push_str(&rest[..at]);
        let after = &rest[at..];
        let Some(open) = after.find(['{', ';']) else { break };
        if after.as_bytes()[open] == b';' {
            // `mod tests;`: a file of its own, skipped by name.
            rest = &after[open + 1..];
            continue;
        }
        let mut depth = 0usize;
        let mut end = after.len();
        for (offset, byte) in after.bytes().enumerate().skip(open) {
            match byte {
                b'{' => depth += 1,
                b'}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = offset + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        rest = &after[end..];
    }
    code.push_str(rest);
    code
}

/// A cycle through `start`, if there is one: the modules on it, in order.
fn cycle_through(graph: &BTreeMap<String, BTreeSet<String>>, start: &str) -> Option<Vec<String>> {
    let mut stack = vec![vec![start.to_owned()]];
    let mut seen = BTreeSet::new();
    while let Some(path) = stack.pop() {
        let last = path.last().unwrap();
        for next in graph.get(last).into_iter().flatten() {
            if next == start {
                return Some([path.clone(), vec![start.to_owned()]].concat());
            }
            if seen.insert(next.clone()) {
                stack.push([path.clone(), vec![next.clone()]].concat());
            }
        }
    }
    None
}

#[test]
fn no_two_modules_depend_on_each_other() {
    let graph = module_graph();
    assert!(graph.len() > 10, "the source tree was not found: {graph:?}");
    assert!(graph["app"].contains("store") && graph["federation"].contains("app"), "the scan finds no dependencies: {graph:?}");
    let cycles: Vec<String> = graph.keys().filter_map(|module| cycle_through(&graph, module)).map(|cycle| cycle.join(" -> ")).collect();
    assert!(cycles.is_empty(), "import cycles between modules:\n{}", cycles.join("\n"));
}

#[test]
fn grouped_and_relative_paths_count() {
    let found = crate_paths("use crate::{policy_files, schemas::x};\nuse super::super::store::Store;\nlet y = super::local;", 2);
    assert_eq!(found, BTreeSet::from(["policy_files".to_owned(), "schemas".to_owned(), "store".to_owned()]));
    assert!(module_graph()["cli"].contains("policy_files"), "cli names policy_files in a group");
}

#[test]
fn the_domain_core_depends_on_nothing_else_of_the_gateway() {
    let graph = module_graph();
    assert_eq!(graph["domain"], BTreeSet::new(), "the domain core must stay pure");
}
