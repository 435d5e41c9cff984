//! tailgate has one audited `unsafe`: loading compiled plugins from its own cache
//! (`src/plugin/cache.rs`, `deserialize`). The workspace denies `unsafe_code`; this test keeps the one
//! allowance where it is and the only one, in every crate of the workspace.
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("readable source directory") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n == "target") {
                continue;
            }
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn the_only_unsafe_is_the_audited_cache_load() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    for dir in [
        "host/src",
        "host/tests",
        "host/benches",
        "tests",
        "bench",
        "fuzz",
    ] {
        if root.join(dir).exists() {
            rust_files(&root.join(dir), &mut files);
        }
    }
    let mut allowances = Vec::new();
    let mut blocks = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("readable source");
        let rel = file
            .strip_prefix(&root)
            .unwrap_or(file)
            .display()
            .to_string();
        if rel.ends_with("unsafe_audit.rs") {
            continue;
        }
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            if code.contains("allow(unsafe_code)") {
                allowances.push(format!("{rel}:{}", n + 1));
            }
            if code.contains("unsafe {")
                || code.contains("unsafe fn")
                || code.contains("unsafe impl")
            {
                blocks.push(format!("{rel}:{}", n + 1));
            }
        }
    }
    assert_eq!(allowances.len(), 1, "allow(unsafe_code) at {allowances:?}");
    assert!(
        allowances[0].starts_with("host/src/plugin/cache.rs"),
        "{allowances:?}"
    );
    assert_eq!(blocks.len(), 1, "unsafe at {blocks:?}");
    assert!(
        blocks[0].starts_with("host/src/plugin/cache.rs"),
        "{blocks:?}"
    );
}
