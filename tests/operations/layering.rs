//! The crate's top-level modules import each other without a circle, so that src/ reads
//! top-down: pure data and algorithms at the bottom, threads and I/O above. The test reads the
//! sources, collects every `crate::module` a module names, and fails on a circle, printing it;
//! with `--nocapture` it prints the layers, lowest first.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Items the crate root re-exports, and the module each comes from.
const ROOT_ITEMS: &[(&str, &str)] = &[
    ("Config", "config"),
    ("ConfigLoader", "state"),
    ("Balancer", "start"),
    ("Running", "start"),
    ("Shared", "state"),
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Adds the module that `path` (text after `crate::`) starts with to `uses`, unless it is `own`.
fn note(uses: &mut BTreeSet<String>, own: &str, path: &str) {
    let word: String = path
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    let target = ROOT_ITEMS
        .iter()
        .find(|(item, _)| *item == word)
        .map_or(word.clone(), |(_, module)| module.to_string());
    if !target.is_empty() && target != own && target != "self" {
        uses.insert(target);
    }
}

/// Every top-level module (a file or a folder under src/) and the modules it names.
fn imports() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut modules: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for entry in std::fs::read_dir(&src).unwrap().flatten() {
        let path = entry.path();
        let name = path.file_stem().unwrap().to_string_lossy().to_string();
        if matches!(name.as_str(), "lib" | "main")
            || (path.is_file() && path.extension().is_none_or(|e| e != "rs"))
        {
            continue;
        }
        let mut files = Vec::new();
        if path.is_dir() {
            rust_files(&path, &mut files);
        } else {
            files.push(path.clone());
        }
        let uses = modules.entry(name.clone()).or_default();
        for file in files {
            // Unit tests may start a whole balancer: what they import is no layering.
            if file.file_name().is_some_and(|f| f == "tests.rs") {
                continue;
            }
            let text = std::fs::read_to_string(&file).unwrap();
            let text = match text.find("#[cfg(test)]\nmod tests {") {
                Some(at) => text[..at].to_string(),
                None => text,
            };
            for (at, _) in text.match_indices("crate::") {
                let rest = &text[at + "crate::".len()..];
                match rest.strip_prefix('{') {
                    // `use crate::{a, b::c}` names several modules at once.
                    Some(inside) => {
                        let inside = &inside[..inside.find('}').unwrap_or(inside.len())];
                        for part in inside.split(',') {
                            note(uses, &name, part.trim());
                        }
                    }
                    None => note(uses, &name, rest),
                }
            }
        }
    }
    let known: BTreeSet<String> = modules.keys().cloned().collect();
    for uses in modules.values_mut() {
        uses.retain(|m| known.contains(m));
    }
    modules
}

/// A circle through `from`, if there is one.
fn circle(
    graph: &BTreeMap<String, BTreeSet<String>>,
    node: &str,
    path: &mut Vec<String>,
    done: &mut BTreeSet<String>,
) -> Option<Vec<String>> {
    if let Some(at) = path.iter().position(|p| p == node) {
        let mut found = path[at..].to_vec();
        found.push(node.to_string());
        return Some(found);
    }
    if done.contains(node) {
        return None;
    }
    path.push(node.to_string());
    for next in &graph[node] {
        if let Some(found) = circle(graph, next, path, done) {
            return Some(found);
        }
    }
    path.pop();
    done.insert(node.to_string());
    None
}

#[test]
fn top_level_modules_import_each_other_without_a_circle() {
    let graph = imports();
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        if let Some(found) = circle(&graph, node, &mut Vec::new(), &mut done) {
            panic!("import circle: {}", found.join(" -> "));
        }
    }
    // The layers, lowest first: each module only imports modules of lower layers.
    let mut layer: BTreeMap<&str, usize> = BTreeMap::new();
    while layer.len() < graph.len() {
        for (module, uses) in &graph {
            if layer.contains_key(module.as_str()) {
                continue;
            }
            if uses.iter().all(|u| layer.contains_key(u.as_str())) {
                let l = uses
                    .iter()
                    .map(|u| layer[u.as_str()] + 1)
                    .max()
                    .unwrap_or(0);
                layer.insert(module, l);
            }
        }
    }
    let top = layer.values().max().copied().unwrap_or(0);
    for l in 0..=top {
        let names: Vec<&str> = layer
            .iter()
            .filter(|(_, n)| **n == l)
            .map(|(m, _)| *m)
            .collect();
        println!("layer {l}: {}", names.join(", "));
    }
}

/// The poller never waits on Redis: the `redis` crate is named only by the files whose code runs
/// on the shared store's own threads (store.rs, subscriber.rs through connect.rs) or at start
/// (connect.rs's probe), and by filter/shared/mod.rs for the script's hash (no I/O). A Redis call
/// anywhere else, in the filter the poller runs above all, fails this test.
#[test]
fn only_the_shared_stores_threads_name_the_redis_crate() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let allowed = ["store.rs", "connect.rs", "subscriber.rs", "mod.rs"]
        .map(|f| src.join("filter/shared").join(f));
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let naming: Vec<_> = files
        .iter()
        .filter(|f| !allowed.contains(f))
        .filter(|f| std::fs::read_to_string(f).unwrap().contains("redis::"))
        .collect();
    assert!(naming.is_empty(), "the redis crate named in {naming:?}");
    // The script's hash is the only use in mod.rs.
    let text = std::fs::read_to_string(&allowed[3]).unwrap();
    let uses: Vec<_> = text.lines().filter(|l| l.contains("redis::")).collect();
    assert_eq!(
        uses,
        ["    redis::Script::new(SCRIPT).get_hash().to_string()"]
    );
}
