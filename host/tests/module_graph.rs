//! The host's import graph follows the data flow (see `lib.rs`'s layout): no two top-level modules
//! import each other, directly or around a loop, and the only imports that run against the flow (a stage
//! naming a later one) are the hand-offs listed in [`HANDOFFS`].
//!
//! The graph is read from the sources: a module's files are `src/<m>.rs` and `src/<m>/**.rs`, minus its
//! unit tests (`tests.rs`, `*_tests.rs` and a trailing `#[cfg(test)] mod tests { .. }`), which may import
//! anything; an edge is any `crate::<other>` path outside comments.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The stages in flow order, with their modules (as `lib.rs` groups them). `operate` is cross-cutting
/// (configuration, metrics, the admin API) and not ranked.
const STAGES: &[(&str, &[&str])] = &[
    ("wire", &["otlp", "predicate"]),
    (
        "intake",
        &["tls", "auth", "security", "receiver", "kafka", "ingest"],
    ),
    (
        "decide",
        &[
            "buffer",
            "inbox",
            "decisions",
            "pipeline",
            "rescue",
            "plugin",
            "policy",
            "reload",
        ],
    ),
    ("redact", &["redact"]),
    ("export", &["export"]),
];

const OPERATE: &[&str] = &[
    "config", "cli", "app", "metrics", "health", "topology", "admin", "status", "explain",
    "record", "replay", "fuzzing", "testing",
];

/// Imports of a later stage that are the hand-off itself, with why.
const HANDOFFS: &[(&str, &str, &str)] = &[
    (
        "pipeline",
        "redact",
        "the redaction stage (pipeline/redaction.rs) runs the policy's redactors",
    ),
    (
        "pipeline",
        "export",
        "the redaction stage sends kept spans to the exporter's queue (ExportHandle)",
    ),
    (
        "policy",
        "redact",
        "the policy builds its Redactors from the configuration",
    ),
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn top_modules() -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for entry in std::fs::read_dir(src()).expect("read host/src") {
        let entry = entry.expect("dir entry");
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.path().is_dir() {
            out.insert(name);
        } else if let Some(m) = name.strip_suffix(".rs")
            && m != "lib"
            && m != "main"
        {
            out.insert(m.to_owned());
        }
    }
    out
}

fn files_of(module: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let file = src().join(format!("{module}.rs"));
    if file.exists() {
        out.push(file);
    }
    let mut dirs = vec![src().join(module)];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("dir entry").path();
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if path.is_dir() {
                dirs.push(path);
            } else if name.ends_with(".rs") && name != "tests.rs" && !name.ends_with("_tests.rs") {
                out.push(path);
            }
        }
    }
    out
}

/// The source without comments and without a trailing unit-test module.
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests {") {
        Some(i) => &text[..i],
        None => text,
    };
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn ident_at(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// The top-level names a file's `crate::` paths start with, including each name of a
/// `crate::{a, b::c}` group.
fn crate_paths(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        let after = &rest[i + "crate::".len()..];
        if let Some(group) = after.strip_prefix('{') {
            let mut depth = 0usize;
            let mut start = true;
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => start = true,
                    c if start && depth == 0 && (c.is_ascii_alphabetic() || c == '_') => {
                        out.insert(ident_at(&group[j..]).to_owned());
                        start = false;
                    }
                    _ => {}
                }
            }
        } else {
            out.insert(ident_at(after).to_owned());
        }
        rest = after;
    }
    out
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let modules = top_modules();
    modules
        .iter()
        .map(|m| {
            let mut deps = BTreeSet::new();
            for f in files_of(m) {
                let text = std::fs::read_to_string(&f).expect("read source");
                deps.extend(crate_paths(&code(&text)));
            }
            deps.retain(|d| d != m && modules.contains(d));
            (m.clone(), deps)
        })
        .collect()
}

/// A loop through `start`, if there is one (depth-first search back to it).
fn cycle_through(g: &BTreeMap<String, BTreeSet<String>>, start: &str) -> Option<Vec<String>> {
    fn walk(
        g: &BTreeMap<String, BTreeSet<String>>,
        start: &str,
        at: &str,
        path: &mut Vec<String>,
        seen: &mut BTreeSet<String>,
    ) -> bool {
        for next in g.get(at).into_iter().flatten() {
            if next == start {
                return true;
            }
            if seen.insert(next.clone()) {
                path.push(next.clone());
                if walk(g, start, next, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let mut path = vec![start.to_owned()];
    let mut seen = BTreeSet::new();
    walk(g, start, start, &mut path, &mut seen).then(|| {
        path.push(start.to_owned());
        path
    })
}

fn stage_of(module: &str) -> Option<usize> {
    STAGES.iter().position(|(_, ms)| ms.contains(&module))
}

#[test]
fn the_parser_reads_paths_and_groups() {
    let src = "use crate::a::B;\nuse crate::{c, d::{E, F}, g};\n// crate::commented\nlet x = crate::h(1);";
    let got: Vec<String> = crate_paths(&code(src)).into_iter().collect();
    assert_eq!(got, ["a", "c", "d", "g", "h"]);
}

#[test]
fn every_module_has_a_place_in_the_flow() {
    let g = graph();
    // The graph is read for real: the pipeline decides over the wire layer's spans.
    assert!(g["pipeline"].contains("otlp"), "{:?}", g["pipeline"]);
    let unplaced: Vec<&String> = g
        .keys()
        .filter(|m| stage_of(m).is_none() && !OPERATE.contains(&m.as_str()))
        .collect();
    assert!(
        unplaced.is_empty(),
        "modules missing from this test's STAGES or OPERATE (and from lib.rs's layout?): {unplaced:?}"
    );
}

#[test]
fn no_module_imports_itself_around_a_loop() {
    let g = graph();
    let loops: Vec<String> = g
        .keys()
        .filter_map(|m| cycle_through(&g, m))
        .map(|c| c.join(" -> "))
        .collect();
    assert!(loops.is_empty(), "import loops:\n{}", loops.join("\n"));
}

#[test]
fn only_the_handoffs_run_against_the_flow() {
    let g = graph();
    let mut against = Vec::new();
    for (m, deps) in &g {
        let Some(from) = stage_of(m) else { continue };
        for d in deps {
            if stage_of(d).is_some_and(|to| to > from) {
                against.push((m.as_str(), d.as_str()));
            }
        }
    }
    let unexpected: Vec<&(&str, &str)> = against
        .iter()
        .filter(|(a, b)| !HANDOFFS.iter().any(|(x, y, _)| x == a && y == b))
        .collect();
    assert!(
        unexpected.is_empty(),
        "imports of a later stage that are not hand-offs: {unexpected:?}"
    );
    // A hand-off that no longer exists should leave the list too.
    let stale: Vec<&(&str, &str, &str)> = HANDOFFS
        .iter()
        .filter(|(a, b, _)| !against.contains(&(*a, *b)))
        .collect();
    assert!(stale.is_empty(), "hand-offs listed but gone: {stale:?}");
}
