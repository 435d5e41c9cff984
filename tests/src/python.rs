//! Runs the OpenTelemetry SDK client scripts in `tests/python/` with the project's virtualenv.
//!
//! The interpreter is `$TAILGATE_PYTHON`, else `.venv/bin/python` at the repository root. Both are set up
//! by `scripts/test.sh`; when neither exists the tests fail (they never skip) and say so.

use crate::{WAIT, repo_root};
use std::path::PathBuf;
use std::process::Stdio;

/// What to do when the Python environment is missing.
pub const SETUP_HINT: &str = "run ./scripts/test.sh (or ./scripts/setup-python.sh) to create .venv with the pinned test packages";

/// The Python interpreter of the test virtualenv.
pub fn python() -> anyhow::Result<PathBuf> {
    let path = match std::env::var_os("TAILGATE_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => repo_root().join(".venv/bin/python"),
    };
    anyhow::ensure!(
        path.exists(),
        "Python for the end-to-end tests not found at {}: {SETUP_HINT}",
        path.display()
    );
    Ok(path)
}

/// Path of a script in `tests/python/`.
pub fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("python")
        .join(name)
}

/// Runs `tests/python/<name> <args>` (at most [`WAIT`]) and parses the last line of its standard output
/// as JSON. Fails with the script's standard error when it exits non-zero.
pub async fn run_script(name: &str, args: &[&str]) -> anyhow::Result<serde_json::Value> {
    let python = python()?;
    let child = tokio::process::Command::new(&python)
        .arg(script(name))
        .args(args)
        .env("PYTHONUNBUFFERED", "1")
        // The SDK must not pick up an endpoint or sampler from the developer's environment.
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .env_remove("OTEL_TRACES_SAMPLER")
        .env_remove("OTEL_RESOURCE_ATTRIBUTES")
        .env_remove("OTEL_SERVICE_NAME")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| anyhow::anyhow!("cannot run {}: {e}; {SETUP_HINT}", python.display()))?;
    let out = tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .map_err(|_| anyhow::anyhow!("{name} did not finish within {WAIT:?}"))??;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        let hint = if stderr.contains("ModuleNotFoundError") {
            format!("\n{SETUP_HINT}")
        } else {
            String::new()
        };
        anyhow::bail!("{name} {args:?} failed ({}):\n{stderr}{hint}", out.status);
    }
    let last = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    serde_json::from_str(last)
        .map_err(|e| anyhow::anyhow!("{name} printed no JSON result ({e}):\n{stdout}\n{stderr}"))
}
