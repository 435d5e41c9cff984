//! The `tailgate` executable, for tests of the command line itself.
//!
//! `$TAILGATE_BIN` when set (scripts/test.sh builds it first); otherwise this runs `cargo build -p tailgate
//! --bin tailgate` once (a no-op when it is up to date) and uses the result in this test's target
//! directory, so a plain `cargo test` never runs a stale binary.

use std::path::PathBuf;
use std::sync::OnceLock;

/// Path of a built, up-to-date `tailgate` binary.
pub fn tailgate_bin() -> anyhow::Result<PathBuf> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(|| locate().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow::anyhow!(e))
}

fn locate() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("TAILGATE_BIN") {
        let p = PathBuf::from(p);
        anyhow::ensure!(p.exists(), "TAILGATE_BIN={} does not exist", p.display());
        return Ok(p);
    }
    // This test executable is target/<profile>/deps/<name>; the binary is target/<profile>/tailgate.
    let exe = std::env::current_exe()?;
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .ok_or_else(|| anyhow::anyhow!("unexpected test executable path {}", exe.display()))?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let target_dir = profile_dir
        .parent()
        .ok_or_else(|| anyhow::anyhow!("no target directory"))?;
    let mut cmd = std::process::Command::new(cargo);
    cmd.current_dir(crate::repo_root())
        .args(["build", "--quiet", "-p", "tailgate", "--bin", "tailgate"]);
    // The Kafka tests run replicas as processes: the binary needs the feature the tests were built with.
    if cfg!(feature = "kafka") {
        cmd.args(["--features", "kafka"]);
    }
    cmd.env("CARGO_TARGET_DIR", target_dir);
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    let status = cmd.status()?;
    anyhow::ensure!(
        status.success(),
        "cargo build -p tailgate failed ({status})"
    );
    let bin = profile_dir.join("tailgate");
    anyhow::ensure!(
        bin.exists(),
        "built tailgate but found no binary at {}",
        bin.display()
    );
    Ok(bin)
}
