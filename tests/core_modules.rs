//! The core's modules form layers: none imports one that imports it back,
//! directly or through others. A name imported from `super` is followed to
//! the module that defines it (through `src/core/mod.rs`'s re-exports);
//! what `mod.rs` itself defines (the `Proxy` the submodules extend) is the
//! top layer and not counted.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

fn core_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/src/core"))
}

/// The code of a file without its comments and its test module.
fn code(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap();
    let text = text.split("#[cfg(test)]\nmod tests").next().unwrap();
    text.lines()
        .map(|l| l.split("//").next().unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The `use super::...;` items of a file, each as written after `super::`.
fn uses(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("use super::") {
        let after = &rest[at + "use super::".len()..];
        let end = after.find(';').unwrap_or(after.len());
        out.push(after[..end].split_whitespace().collect::<String>());
        rest = &after[end..];
    }
    out
}

/// Names in a use tree's braces, or its one path.
fn names(tree: &str) -> Vec<String> {
    let inner = tree
        .strip_prefix('{')
        .and_then(|t| t.strip_suffix('}'))
        .unwrap_or(tree);
    inner
        .split(',')
        .filter(|n| !n.is_empty())
        .map(|n| n.split("as").next().unwrap().to_string())
        .collect()
}

#[test]
fn no_module_of_the_core_imports_one_that_imports_it_back() {
    let modules: BTreeSet<String> = fs::read_dir(core_dir())
        .unwrap()
        .filter_map(|e| {
            let path = e.unwrap().path();
            let stem = path.file_stem()?.to_str()?.to_string();
            (path.extension()? == "rs" && stem != "mod").then_some(stem)
        })
        .collect();
    // Where each re-exported name is defined.
    let mut defined_in: BTreeMap<String, String> = BTreeMap::new();
    for tree in code(&core_dir().join("mod.rs"))
        .split("pub use ")
        .skip(1)
        .map(|t| {
            t.split(';')
                .next()
                .unwrap()
                .split_whitespace()
                .collect::<String>()
        })
    {
        let Some((module, rest)) = tree.split_once("::") else {
            continue;
        };
        for name in names(rest) {
            defined_in.insert(name, module.to_string());
        }
    }
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for module in &modules {
        let deps = edges.entry(module.clone()).or_default();
        for tree in uses(&code(&core_dir().join(format!("{module}.rs")))) {
            match tree.split_once("::") {
                Some((first, _)) if modules.contains(first) => {
                    deps.insert(first.to_string());
                }
                _ => {
                    for name in names(&tree) {
                        let name = name.split("::").next().unwrap().to_string();
                        if let Some(m) = defined_in.get(&name).filter(|m| modules.contains(*m)) {
                            deps.insert(m.clone());
                        }
                    }
                }
            }
        }
        deps.remove(module);
    }
    // Depth-first search for a cycle.
    fn visit(
        m: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| p == m) {
            let mut cycle = path[at..].to_vec();
            cycle.push(m.to_string());
            return Some(cycle);
        }
        if done.contains(m) {
            return None;
        }
        path.push(m.to_string());
        for dep in edges.get(m).into_iter().flatten() {
            if let Some(cycle) = visit(dep, edges, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        done.insert(m.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for m in &modules {
        let cycle = visit(m, &edges, &mut Vec::new(), &mut done);
        assert!(
            cycle.is_none(),
            "src/core imports in a cycle: {:?}",
            cycle.unwrap()
        );
    }
    // The check sees the imports it is meant to: resources uses balance.
    assert!(edges["resources"].contains("balance"), "{edges:?}");
}
