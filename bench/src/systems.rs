//! The systems under test and how each one is started: tailgate (several configurations), rotel and the
//! OpenTelemetry Collector, each listening on free loopback ports and exporting to the harness's sink.

use anyhow::{Context, bail};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Where each system's binary and configuration files are.
#[derive(Clone)]
pub struct Binaries {
    pub tailgate: PathBuf,
    /// The seed policy (`tailgate`).
    pub seed_config: PathBuf,
    /// Keep everything, redact with the PII plugin (`redact`).
    pub redact_config: PathBuf,
    pub rotel: Option<PathBuf>,
    pub rotel_processor: PathBuf,
    /// The Collector of `bench/collector/` (`scripts/peers.sh collector`).
    pub collector: Option<PathBuf>,
    /// Directory with the collector-*.yaml files and the other bench configs.
    pub configs: PathBuf,
    /// The tail_sampling processor's `decision_wait`.
    pub collector_decision_wait: Duration,
    /// Its `decision_wait_after_root_received` (zero: off).
    pub collector_after_root: Duration,
}

/// Where a started system publishes its metrics.
pub enum MetricsAt {
    /// tailgate's admin `/metrics`.
    Tailgate(String),
    /// The Collector's own Prometheus endpoint.
    Collector(String),
}

/// A started system.
pub struct Started {
    pub child: Child,
    /// `http://127.0.0.1:PORT` of its OTLP/gRPC receiver.
    pub target: String,
    pub metrics: Option<MetricsAt>,
}

/// Kills the child when dropped.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn spawn(mut cmd: Command) -> anyhow::Result<Child> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    cmd.spawn()
        .with_context(|| format!("starting {:?}", cmd.get_program()))
}

fn tailgate(b: &Binaries, config: Option<&Path>, sink: &str) -> anyhow::Result<Started> {
    let (port, http, admin) = (free_port()?, free_port()?, free_port()?);
    let mut cmd = Command::new(&b.tailgate);
    if let Some(c) = config {
        cmd.arg("--config").arg(c);
    }
    cmd.args(["--otlp-grpc-endpoint", &format!("127.0.0.1:{port}")])
        .args(["--otlp-http-endpoint", &format!("127.0.0.1:{http}")])
        .args(["--admin-endpoint", &format!("127.0.0.1:{admin}")])
        .args(["--exporter-endpoint", &format!("http://{sink}")])
        .args(["--exporter-protocol", "grpc"])
        .env("RUST_LOG", "warn");
    Ok(Started {
        child: spawn(cmd)?,
        target: format!("http://127.0.0.1:{port}"),
        metrics: Some(MetricsAt::Tailgate(format!(
            "http://127.0.0.1:{admin}/metrics"
        ))),
    })
}

/// The Collector with `collector-base.yaml`, the extra config files `extra` and the pipeline's
/// `processors`; `hold` makes its decision wait 10 minutes (the `hold` measurement).
fn collector(
    b: &Binaries,
    extra: &[&str],
    processors: &str,
    sink: &str,
    hold: bool,
) -> anyhow::Result<Started> {
    let Some(bin) = &b.collector else {
        bail!(
            "no Collector binary: pass --collector (scripts/peers.sh collector prints TAILGATE_COLLECTOR=...)"
        );
    };
    let (port, metrics) = (free_port()?, free_port()?);
    let mut cmd = Command::new(bin);
    cmd.arg("--config")
        .arg(b.configs.join("collector-base.yaml"));
    for e in extra {
        cmd.arg("--config").arg(b.configs.join(e));
    }
    cmd.arg("--config").arg(format!(
        "yaml:service::pipelines::traces::processors: [{processors}]"
    ));
    let (wait, after_root, num_traces) = if hold {
        (Duration::from_secs(600), Duration::ZERO, 2_000_000)
    } else {
        (b.collector_decision_wait, b.collector_after_root, 200_000)
    };
    cmd.env("TG_BENCH_GRPC_ENDPOINT", format!("127.0.0.1:{port}"))
        .env("TG_BENCH_SINK", sink)
        .env("TG_BENCH_METRICS_PORT", metrics.to_string())
        .env("TG_BENCH_DECISION_WAIT", format!("{}ms", wait.as_millis()))
        .env(
            "TG_BENCH_AFTER_ROOT",
            format!("{}ms", after_root.as_millis()),
        )
        .env("TG_BENCH_NUM_TRACES", num_traces.to_string());
    Ok(Started {
        child: spawn(cmd)?,
        target: format!("http://127.0.0.1:{port}"),
        metrics: Some(MetricsAt::Collector(format!(
            "http://127.0.0.1:{metrics}/metrics"
        ))),
    })
}

/// The processors of the Collector's PII work, in order (bench/configs/collector-pii.yaml).
const COLLECTOR_PII: &str = "redaction/identity, redaction/pii, transform/pii";

/// Starts `system` exporting to the sink at `sink` (`host:port`).
pub fn start(system: &str, b: &Binaries, sink: &str) -> anyhow::Result<Option<Started>> {
    Ok(Some(match system {
        "tailgate" => tailgate(b, Some(&b.seed_config), sink)?,
        "sampling" => tailgate(
            b,
            Some(&b.configs.join("seed-without-redaction.yaml")),
            sink,
        )?,
        "passthrough" => tailgate(b, None, sink)?,
        "redact" => tailgate(b, Some(&b.redact_config), sink)?,
        "tailgate-hold" => tailgate(b, Some(&b.configs.join("hold.yaml")), sink)?,
        "collector" => collector(
            b,
            &["collector-tail-sampling.yaml"],
            "tail_sampling, batch",
            sink,
            false,
        )?,
        "collector-seed" => collector(
            b,
            &["collector-tail-sampling.yaml", "collector-pii.yaml"],
            &format!("tail_sampling, {COLLECTOR_PII}, batch"),
            sink,
            false,
        )?,
        "collector-redact" => collector(
            b,
            &["collector-pii.yaml"],
            &format!("{COLLECTOR_PII}, batch"),
            sink,
            false,
        )?,
        "collector-hold" => collector(
            b,
            &["collector-tail-sampling.yaml"],
            "tail_sampling, batch",
            sink,
            true,
        )?,
        "rotel" | "rotel-redact" => {
            let Some(rotel) = &b.rotel else {
                eprintln!("{system}: skipped (no --rotel binary given)");
                return Ok(None);
            };
            let (port, http) = (free_port()?, free_port()?);
            let mut cmd = Command::new(rotel);
            cmd.arg("start")
                .args(["--otlp-grpc-endpoint", &format!("127.0.0.1:{port}")])
                .args(["--otlp-http-endpoint", &format!("127.0.0.1:{http}")])
                .args(["--exporter", "otlp"])
                .args(["--otlp-exporter-endpoint", &format!("http://{sink}")])
                .args(["--otlp-exporter-protocol", "grpc"]);
            if system == "rotel-redact" {
                cmd.arg("--otlp-with-trace-processor")
                    .arg(&b.rotel_processor);
            }
            Started {
                child: spawn(cmd)?,
                target: format!("http://127.0.0.1:{port}"),
                metrics: None,
            }
        }
        other => bail!(
            "unknown system `{other}` (tailgate, sampling, passthrough, redact, rotel, rotel-redact, collector, collector-seed, collector-redact)"
        ),
    }))
}

/// How long `system` may hold a trace before anything of it reaches the sink: the Collector's
/// tail_sampling decides `decision_wait` after a trace's first span, on a one-second tick; tailgate's
/// settle (2 s) is shorter than the harness's quiet period anyway.
pub fn longest_hold(system: &str, b: &Binaries) -> Duration {
    match system {
        "collector" | "collector-seed" => b.collector_decision_wait + Duration::from_secs(1),
        _ => Duration::ZERO,
    }
}

/// CPU seconds (user + system) the process has used.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// A `VmXXX:` line of `/proc/<pid>/status`, in KiB (`VmHWM` peak RSS, `VmRSS` current).
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
