//! The operator's architecture as a checked fact rather than a convention:
//!
//! - no two modules depend on each other, directly or through others (a cycle
//!   would let a pure step reach I/O through its neighbour);
//! - the pure steps (`validate`, `decide`, `build`, the status computation, the
//!   rollout machine and the autoscaling formula, and the same steps of the
//!   BatchInference pipeline) name no API client, no Prometheus client and
//!   await nothing.
//!
//! Dependencies are read from the source: every `crate::` and `super::` path outside
//! `#[cfg(test)]` code, resolved to the deepest module it names.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Modules that must stay pure.
const PURE: &[&str] = &[
    "autoscale::decision",
    "batch::build",
    "batch::cron",
    "batch::decide",
    "batch::observe",
    "batch::status",
    "batch::summary",
    "batch::validate",
    "build",
    "build::fetch",
    "build::init",
    "build::optimize",
    "build::placement",
    "build::pod",
    "crd",
    "crd::autoscaling",
    "crd::batch",
    "crd::monitoring",
    "crd::optimize",
    "crd::placement",
    "crd::policy",
    "crd::rollout",
    "drift::decision",
    "drift::job",
    "names",
    "optimization",
    "policy",
    "reconcile::decide",
    "reconcile::validate",
    "reconcile::validate::autoscaling",
    "reconcile::validate::monitoring",
    "reconcile::validate::optimize",
    "reconcile::validate::placement",
    "reconcile::validate::rollout",
    "resources",
    "rollout::analysis",
    "rollout::comparison",
    "rollout::control",
    "rollout::machine",
    "rollout::quality",
    "rollout::traffic",
    "security",
    "status",
    "workload",
];

/// What a pure module must not contain.
const IMPURE: &[&str] = &[
    "kube::api",
    "Client",
    "prometheus_http_query",
    "reqwest",
    ".await",
    "tokio::",
];

#[test]
fn no_module_depends_on_itself_through_others() {
    let modules = modules();
    let graph = graph(&modules);
    let cycles = cycles(&graph);
    assert!(
        cycles.is_empty(),
        "module cycles (each line is one strongly connected set):\n{}",
        cycles
            .iter()
            .map(|c| c.join(" <-> "))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn pure_steps_do_no_io() {
    let modules = modules();
    for name in PURE {
        let source = modules
            .get(*name)
            .unwrap_or_else(|| panic!("pure module {name} not found"));
        for word in IMPURE {
            assert!(
                !contains_word(&source.code, word),
                "{name} is meant to be pure but mentions {word:?}"
            );
        }
    }
}

#[test]
fn the_graph_sees_known_edges() {
    // Guards the parser itself: a reader that found no edges would pass the cycle test.
    let graph = graph(&modules());
    let edges = |from: &str| graph.get(from).cloned().unwrap_or_default();
    assert!(edges("reconcile").contains("reconcile::decide"));
    assert!(edges("reconcile::decide").contains("rollout::machine"));
    assert!(edges("build").contains("names"));
    assert!(edges("rollout::machine").contains("crd::rollout"));
    assert!(edges("batch::reconcile").contains("batch::decide"));
    assert!(edges("batch::build").contains("build::init"));
}

/// One source file: its module path and its code without comments and tests.
struct Module {
    code: String,
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every module of the library, by path (`reconcile::apply`), without the crate
/// root, the binaries and `#[cfg(test)]` code.
fn modules() -> BTreeMap<String, Module> {
    let mut files = Vec::new();
    collect(&src(), &mut files);
    let mut modules = BTreeMap::new();
    for file in files {
        let relative = file.strip_prefix(src()).unwrap().with_extension("");
        let parts: Vec<String> = relative
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        if parts[0] == "bin" || parts == ["lib"] || parts == ["main"] {
            continue;
        }
        let parts: Vec<&str> = parts
            .iter()
            .map(String::as_str)
            .filter(|p| *p != "mod")
            .collect();
        let text = std::fs::read_to_string(&file).unwrap();
        modules.insert(parts.join("::"), Module { code: code(&text) });
    }
    modules
}

fn collect(dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
}

/// The code of a file: comment lines dropped, and everything from its test module on.
fn code(text: &str) -> String {
    let end = text.find("#[cfg(test)]\nmod tests").unwrap_or(text.len());
    text[..end]
        .lines()
        .filter(|line| !line.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn contains_word(code: &str, word: &str) -> bool {
    code.match_indices(word).any(|(at, _)| {
        let before = code[..at].chars().next_back();
        let after = code[at + word.len()..].chars().next();
        let ident = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
        (word.starts_with('.') || !ident(before)) && !ident(after)
    })
}

/// Module -> the modules it refers to.
fn graph(modules: &BTreeMap<String, Module>) -> BTreeMap<String, BTreeSet<String>> {
    let known: BTreeSet<&str> = modules.keys().map(String::as_str).collect();
    let mut graph = BTreeMap::new();
    for (name, module) in modules {
        let mut targets = BTreeSet::new();
        for path in paths(&module.code) {
            let absolute = if let Some(child) = path.strip_prefix("self::") {
                format!("{name}::{child}")
            } else if let Some(rest) = path.strip_prefix("super::") {
                match name.rsplit_once("::") {
                    Some((parent, _)) => format!("{parent}::{rest}"),
                    None => rest.to_string(),
                }
            } else {
                path.trim_start_matches("crate::").to_string()
            };
            if let Some(target) = deepest_module(&absolute, &known)
                && target != name
            {
                targets.insert(target.to_string());
            }
        }
        graph.insert(name.clone(), targets);
    }
    graph
}

/// Every `crate::…` and `super::…` path in `code`, and every other `use` path as
/// `self::…` (a child module, or an outside crate that names no module here), with
/// `{a, b::c}` groups expanded.
fn paths(code: &str) -> Vec<String> {
    let mut found = Vec::new();
    for line in code.lines() {
        let line = line.trim_start();
        let Some(path) = line.strip_prefix("use ").or(line.strip_prefix("pub use ")) else {
            continue;
        };
        if !(path.starts_with("crate::") || path.starts_with("super::")) {
            expand("self::", path, &mut found);
        }
    }
    for prefix in ["crate::", "super::"] {
        for (at, _) in code.match_indices(prefix) {
            let before = code[..at].chars().next_back();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            expand(prefix, &code[at + prefix.len()..], &mut found);
        }
    }
    found
}

/// Reads one path (or brace group) at the start of `rest` and pushes each full path.
fn expand(prefix: &str, rest: &str, found: &mut Vec<String>) {
    if let Some(group) = rest.strip_prefix('{') {
        let mut depth = 0;
        let mut item = String::new();
        for c in group.chars() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => break,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    expand(prefix, item.trim(), found);
                    item.clear();
                    continue;
                }
                _ => {}
            }
            item.push(c);
        }
        expand(prefix, item.trim(), found);
        return;
    }
    let path: String = rest
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
        .collect();
    let path = path.trim_end_matches(':');
    let after = &rest[path.len()..];
    if let Some(group) = after.strip_prefix("::{") {
        expand(&format!("{prefix}{path}::"), &format!("{{{group}"), found);
    } else if !path.is_empty() {
        found.push(format!("{prefix}{path}"));
    }
}

/// The longest prefix of `path` that names a module.
fn deepest_module<'a>(path: &str, known: &BTreeSet<&'a str>) -> Option<&'a str> {
    let parts: Vec<&str> = path.split("::").collect();
    (1..=parts.len())
        .rev()
        .find_map(|n| known.get(parts[..n].join("::").as_str()).copied())
}

/// The strongly connected sets of more than one module (Tarjan's algorithm).
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct State<'g> {
        graph: &'g BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'g str, usize>,
        low: BTreeMap<&'g str, usize>,
        stack: Vec<&'g str>,
        on_stack: BTreeSet<&'g str>,
        sets: Vec<Vec<String>>,
    }
    fn visit<'g>(s: &mut State<'g>, node: &'g str) {
        let n = s.index.len();
        s.index.insert(node, n);
        s.low.insert(node, n);
        s.stack.push(node);
        s.on_stack.insert(node);
        for next in s.graph.get(node).into_iter().flatten() {
            let next = next.as_str();
            if !s.index.contains_key(next) {
                visit(s, next);
                let low = s.low[node].min(s.low[next]);
                s.low.insert(node, low);
            } else if s.on_stack.contains(next) {
                let low = s.low[node].min(s.index[next]);
                s.low.insert(node, low);
            }
        }
        if s.low[node] == s.index[node] {
            let mut set = Vec::new();
            while let Some(top) = s.stack.pop() {
                s.on_stack.remove(top);
                set.push(top.to_string());
                if top == node {
                    break;
                }
            }
            if set.len() > 1 {
                set.sort();
                s.sets.push(set);
            }
        }
    }
    let mut state = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        sets: Vec::new(),
    };
    for node in graph.keys() {
        if !state.index.contains_key(node.as_str()) {
            visit(&mut state, node);
        }
    }
    state.sets
}
