//! The layer map of ARCHITECTURE.md, enforced: every `crate::<module>` path
//! in `src/` must point to a module of a lower layer, or be one of the
//! known exceptions listed below (each to be removed; the test fails when
//! one is gone so the list only shrinks).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Layers, lowest first. A module may use modules of lower layers only.
const LAYERS: &[&[&str]] = &[
    &["domain", "net"],
    &["change", "dedup", "normalize", "rules", "cmdb"],
    &["correlate"],
    &["store"],
    &["telemetry"],
    &["slo"],
    &["incident", "kpi"],
    &["outbound"],
    &["ingest"],
    &["api", "config"],
    // The web board: pages over the API's state.
    &["ui"],
    // Loading rules, CMDB and changes from files; replay on event time.
    &["offline"],
    // Rule tests (`incidentd test`): drive the pipeline offline.
    &["ruletest"],
    // The client of a running daemon (`incidentd incidents`, …): HTTP only.
    &["client"],
    // Wiring: builds the pieces from configuration and runs them.
    &["app", "main", "bin"],
];

/// Imports that still run against the layers, each to be removed (none
/// now: add one only with its reason in ARCHITECTURE.md).
const KNOWN: &[(&str, &str)] = &[];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module a file of `src/` belongs to: `src/store/sqlite.rs` → store.
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).expect("under src");
    let first = rel.components().next().expect("a component");
    first
        .as_os_str()
        .to_string_lossy()
        .trim_end_matches(".rs")
        .to_string()
}

/// Every `crate::name` in `text` (comments included: a doc link upward is
/// a dependency of the reader's understanding too).
fn crate_paths(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("crate::") {
        let after = &rest[i + "crate::".len()..];
        let name: String = after
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        // `$crate::` in macros and `incidentd::crate::` never occur; a
        // preceding identifier character means another word (`mycrate::`).
        let before = rest[..i].chars().next_back();
        if !name.is_empty()
            && !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$')
        {
            out.insert(name);
        }
        rest = after;
    }
    out
}

#[test]
fn imports_follow_the_layer_map() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut edges: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    let mut unknown = Vec::new();
    for file in &files {
        let from = module_of(&src, file);
        if from == "lib" {
            continue;
        }
        let text = std::fs::read_to_string(file).expect("read source");
        for to in crate_paths(&text) {
            if to == from {
                continue;
            }
            if layer_of(&from).is_none() {
                unknown.push(from.clone());
            }
            if layer_of(&to).is_none() {
                unknown.push(to.clone());
            }
            edges.entry((from.clone(), to)).or_default().push(
                file.strip_prefix(&src)
                    .expect("under src")
                    .display()
                    .to_string(),
            );
        }
    }
    unknown.sort();
    unknown.dedup();
    assert!(
        unknown.is_empty(),
        "modules missing from the layer map (tests/layers.rs and ARCHITECTURE.md): {unknown:?}"
    );
    let mut against = Vec::new();
    let mut known_seen = BTreeSet::new();
    for ((from, to), files) in &edges {
        let (lf, lt) = (layer_of(from), layer_of(to));
        if lt < lf {
            continue;
        }
        if KNOWN.contains(&(from.as_str(), to.as_str())) {
            known_seen.insert((from.as_str(), to.as_str()));
            continue;
        }
        against.push(format!("{from} -> {to} ({})", files.join(", ")));
    }
    assert!(
        against.is_empty(),
        "imports against the layer map (ARCHITECTURE.md):\n{}",
        against.join("\n")
    );
    let gone: Vec<_> = KNOWN
        .iter()
        .filter(|k| !known_seen.contains(&(k.0, k.1)))
        .collect();
    assert!(
        gone.is_empty(),
        "these known exceptions no longer occur; remove them from KNOWN: {gone:?}"
    );
}

#[test]
fn the_scanner_sees_paths_and_ignores_other_words() {
    let found =
        crate_paths("use crate::store::Store; x = crate::domain::Alert; $crate::m; mycrate::x");
    assert_eq!(found.into_iter().collect::<Vec<_>>(), ["domain", "store"]);
}
