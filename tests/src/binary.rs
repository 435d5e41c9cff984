//! The `tailgate` executable, for tests of the command line itself, and [`Binary`]: the real process on
//! free loopback ports, for tests that signal it or measure it.
//!
//! `$TAILGATE_BIN` when set (scripts/test.sh builds it first); otherwise this runs `cargo build -p tailgate
//! --bin tailgate` once (a no-op when it is up to date) and uses the result in this test's target
//! directory, so a plain `cargo test` never runs a stale binary.

use crate::WAIT;
use crate::free_port;
use crate::proxy::TestConfig;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

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

/// The final counts the binary logs as it exits (the `tailgate stopped` line, JSON).
#[derive(Debug)]
pub struct Summary {
    pub fields: Value,
}

impl Summary {
    pub fn get(&self, name: &str) -> u64 {
        self.fields[name]
            .as_u64()
            .unwrap_or_else(|| panic!("`{name}` missing in the final log line: {}", self.fields))
    }

    /// The identity of docs/operations.md from the logged counts, and nothing left in memory.
    pub fn assert_balanced(&self, accepted: u64, recovered: u64) {
        let f = |n| self.get(n);
        assert_eq!(
            f("spans_received"),
            accepted,
            "every accepted span counted: {}",
            self.fields
        );
        assert_eq!(f("spans_recovered"), recovered, "{}", self.fields);
        assert_eq!(
            f("spans_received") + f("spans_recovered"),
            f("spans_exported")
                + f("spans_sampled_out")
                + f("spans_lost")
                + f("persistent_queue_spans"),
            "the accounting identity holds exactly at exit: {}",
            self.fields
        );
        assert_eq!(
            f("spans_in_flight"),
            0,
            "nothing is left in memory: {}",
            self.fields
        );
        assert_eq!(self.fields["accounting_identity_holds"], true);
    }
}

/// The real binary on free loopback ports, logging JSON to a file in `dir`.
pub struct Binary {
    pub child: Child,
    pub log: PathBuf,
    pub grpc: u16,
    pub http: u16,
    pub admin: u16,
}

impl Binary {
    /// Writes `config` (on fixed free ports) to `dir/tailgate.yaml` and starts the binary on it; returns
    /// once it listens.
    pub async fn start(config: &TestConfig, dir: &Path) -> anyhow::Result<Binary> {
        Self::start_in(config, dir, None).await
    }

    /// As [`Binary::start`]; with `cgroup_procs`, the process first moves itself into that cgroup
    /// (writes its pid to the `cgroup.procs` file given), then becomes tailgate.
    pub async fn start_in(
        config: &TestConfig,
        dir: &Path,
        cgroup_procs: Option<&Path>,
    ) -> anyhow::Result<Binary> {
        let (grpc, http, admin) = (free_port()?, free_port()?, free_port()?);
        let yaml = config
            .yaml()
            .replacen("127.0.0.1:0", &format!("127.0.0.1:{grpc}"), 1)
            .replacen("127.0.0.1:0", &format!("127.0.0.1:{http}"), 1)
            .replacen("127.0.0.1:0", &format!("127.0.0.1:{admin}"), 1)
            // `service:` is the last section.
            + "  log_format: json\n";
        std::fs::create_dir_all(dir)?;
        let file = dir.join("tailgate.yaml");
        std::fs::write(&file, yaml)?;
        let log = dir.join("tailgate.log");
        let mut command = match cgroup_procs {
            None => Command::new(tailgate_bin()?),
            Some(procs) => {
                let mut c = Command::new("sh");
                c.arg("-c")
                    .arg(r#"echo $$ > "$0" && exec "$@""#)
                    .arg(procs)
                    .arg(tailgate_bin()?);
                c
            }
        };
        let child = command
            .arg("--config")
            .arg(&file)
            // The final counts are logged at info.
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&log)?,
            ))
            .spawn()?;
        let mut binary = Binary {
            child,
            log,
            grpc,
            http,
            admin,
        };
        let listening = crate::poll_until("the binary to listen", WAIT, || {
            std::net::TcpStream::connect(("127.0.0.1", grpc)).ok()
        })
        .await;
        if let Err(e) = listening {
            let _ = binary.child.kill();
            anyhow::bail!("{e}; log:\n{}", binary.log_text());
        }
        Ok(binary)
    }

    /// `http://127.0.0.1:PORT` of the OTLP/gRPC receiver.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.grpc)
    }

    /// `http://127.0.0.1:PORT` of the admin server.
    pub fn admin_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.admin)
    }

    /// A line of the process's `/proc/PID/status`, in bytes (`VmHWM`: peak resident memory, `VmRSS`).
    pub fn status_bytes(&self, key: &str) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        let line = status
            .lines()
            .find(|l| l.starts_with(&format!("{key}:")))
            .ok_or_else(|| anyhow::anyhow!("no {key} in /proc/PID/status"))?;
        let kib: u64 = line
            .split_whitespace()
            .nth(1)
            .ok_or_else(|| anyhow::anyhow!("bad line {line}"))?
            .parse()?;
        Ok(kib * 1024)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM and waits for the exit; returns the exit status and the time from the signal.
    pub async fn sigterm(&mut self) -> anyhow::Result<(ExitStatus, Duration)> {
        let started = Instant::now();
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok((status, started.elapsed()));
            }
            if started.elapsed() > WAIT {
                let _ = self.child.kill();
                anyhow::bail!(
                    "tailgate was still running {WAIT:?} after SIGTERM; log:\n{}",
                    self.log_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The fields of the last `tailgate stopped` line of a JSON log.
pub fn last_summary(log: &str) -> Option<Summary> {
    log.lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["fields"]["message"] == "tailgate stopped")
        .map(|v| Summary {
            fields: v["fields"].clone(),
        })
}
