//! The plugin author's walkthrough of `docs/plugins.md` ("From an empty folder to a tested sampler"),
//! run exactly as written: the blocks tagged `walkthrough-python` (and `walkthrough-javascript`) are
//! turned into one bash script - `sh` blocks as they are, file blocks (`file=NAME`) as heredocs writing
//! that file - and run in an empty directory with the `tailgate` binary on `PATH` and `TAILGATE_SRC` set to
//! this checkout. The script must succeed, and every `trace ...` line and the summary of the block tagged
//! `output` must appear in what it printed (timings, after ` [` or `; call`, aside). The tools
//! (componentize-py from PyPI, componentize-js and jco from npm) are installed by the walkthrough itself,
//! into its directory, from the package managers' caches after the first run.

use std::path::Path;
use std::process::{Command, Stdio};
use tailgate_e2e::binary::tailgate_bin;
use tailgate_e2e::repo_root;

/// One fenced block of the guide.
struct Block {
    lang: String,
    tags: Vec<String>,
    text: String,
}

fn blocks(markdown: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut lines = markdown.lines();
    while let Some(line) = lines.next() {
        let Some(info) = line.strip_prefix("```") else {
            continue;
        };
        let mut words = info.split_whitespace();
        let lang = words.next().unwrap_or_default().to_owned();
        let tags = words.map(str::to_owned).collect();
        let mut text = String::new();
        for l in lines.by_ref() {
            if l.starts_with("```") {
                break;
            }
            text.push_str(l);
            text.push('\n');
        }
        out.push(Block { lang, tags, text });
    }
    out
}

/// The script and the expected output lines of one walkthrough.
fn walkthrough(name: &str) -> (String, Vec<String>) {
    let guide =
        std::fs::read_to_string(repo_root().join("docs/plugins.md")).expect("docs/plugins.md");
    let tag = format!("walkthrough-{name}");
    let mut script = String::from("set -euo pipefail\n");
    let mut expected = Vec::new();
    for b in blocks(&guide).into_iter().filter(|b| b.tags.contains(&tag)) {
        let file = b.tags.iter().find_map(|t| t.strip_prefix("file="));
        if b.tags.iter().any(|t| t == "output") {
            for line in b.text.lines() {
                let line = line.split(" [").next().unwrap_or(line);
                let line = line.split("; call").next().unwrap_or(line);
                if line.starts_with("trace ") || line.contains(" traces: ") {
                    expected.push(line.to_owned());
                }
            }
        } else if let Some(file) = file {
            assert!(
                !b.text.contains("WALKTHROUGH_EOF"),
                "a file block contains the heredoc marker"
            );
            script.push_str(&format!(
                "cat > '{file}' <<'WALKTHROUGH_EOF'\n{}WALKTHROUGH_EOF\n",
                b.text
            ));
        } else {
            assert_eq!(b.lang, "sh", "a command block of `{tag}` that is not `sh`");
            script.push_str(&b.text);
        }
    }
    assert!(
        script.lines().count() > 5 && !expected.is_empty(),
        "docs/plugins.md has no `{tag}` walkthrough with an output block"
    );
    (script, expected)
}

fn run(name: &str) -> anyhow::Result<()> {
    let (script, expected) = walkthrough(name);
    let bin = tailgate_bin()?;
    let bin_dir = bin.parent().expect("the binary is in a directory");
    let dir = std::env::temp_dir().join(format!(
        "tailgate-walkthrough-{name}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(&dir)
        .env("PATH", path)
        .env("TAILGATE_SRC", repo_root())
        // The walkthrough's plugin cache is its own: the first load compiles, as a new author's would.
        .env("XDG_CACHE_HOME", dir.join(".cache"))
        .stdin(Stdio::null())
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let result = (|| {
        anyhow::ensure!(
            out.status.success(),
            "the {name} walkthrough failed ({}):\n--- script\n{script}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
            out.status
        );
        for want in &expected {
            anyhow::ensure!(
                stdout.contains(want.as_str()),
                "the {name} walkthrough's output lacks `{want}` (the guide's output block is out of date):\n{stdout}"
            );
        }
        Ok(())
    })();
    remove_quietly(&dir);
    result
}

/// node_modules and venvs are large: leave nothing behind, pass or fail.
fn remove_quietly(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn python_walkthrough_runs_as_written() -> anyhow::Result<()> {
    run("python")
}

#[test]
fn javascript_walkthrough_runs_as_written() -> anyhow::Result<()> {
    run("javascript")
}

#[test]
fn the_guide_parser_finds_both_walkthroughs() {
    for name in ["python", "javascript"] {
        let (script, expected) = walkthrough(name);
        assert!(script.contains("tailgate plugin test"), "{name}: {script}");
        assert!(script.contains("tailgate plugin wit"), "{name}: {script}");
        assert!(
            expected.iter().any(|l| l.contains("keep \"2 services\"")),
            "{name}: {expected:?}"
        );
    }
}
