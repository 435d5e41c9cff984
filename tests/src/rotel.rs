//! rotel, a real OpenTelemetry collector written in Rust, shipped as a binary inside the `rotel` PyPI
//! package. It stands in for Jaeger's OTLP receiver: tailgate exports to it, it forwards to a capture
//! server, so the tests see whether another implementation accepts what tailgate sends.

use crate::python::{SETUP_HINT, python};
use crate::{WAIT, free_port, poll_until};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

/// The `rotel-agent` binary: `$TAILGATE_ROTEL`, else the one in the test virtualenv.
pub fn rotel_binary() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("TAILGATE_ROTEL") {
        let p = PathBuf::from(p);
        anyhow::ensure!(
            p.exists(),
            "TAILGATE_ROTEL={} does not exist: {SETUP_HINT}",
            p.display()
        );
        return Ok(p);
    }
    let out = std::process::Command::new(python()?)
        .args([
            "-c",
            "import os, rotel; print(os.path.join(os.path.dirname(rotel.__file__), 'rotel-agent'))",
        ])
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "the rotel package is not installed in the test virtualenv: {SETUP_HINT}"
    );
    let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    anyhow::ensure!(
        p.exists(),
        "rotel agent binary not found at {}: {SETUP_HINT}",
        p.display()
    );
    Ok(p)
}

/// A running rotel collector; killed when dropped.
pub struct Rotel {
    /// `http://127.0.0.1:PORT` of its OTLP/gRPC receiver.
    pub grpc_endpoint: String,
    dir: PathBuf,
    child: tokio::process::Child,
}

impl Rotel {
    /// Starts rotel receiving OTLP/gRPC on a free port and exporting OTLP/gRPC to `export_to`
    /// (`http://host:port`); returns once its receiver accepts connections.
    pub async fn start(export_to: &str) -> anyhow::Result<Rotel> {
        let binary = rotel_binary()?;
        let grpc_port = free_port()?;
        let http_port = free_port()?;
        let dir = std::env::temp_dir().join(format!(
            "tailgate-e2e-rotel-{}-{grpc_port}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir)?;
        // Output goes to files, never to a pipe nobody reads (a full pipe would stall rotel).
        let stdout = std::fs::File::create(dir.join("stdout.log"))?;
        let stderr = std::fs::File::create(dir.join("stderr.log"))?;
        let child = tokio::process::Command::new(&binary)
            .arg("start")
            .args(["--otlp-grpc-endpoint", &format!("127.0.0.1:{grpc_port}")])
            .args(["--otlp-http-endpoint", &format!("127.0.0.1:{http_port}")])
            .args(["--exporter", "otlp"])
            .args(["--otlp-exporter-endpoint", export_to])
            .args(["--otlp-exporter-protocol", "grpc"])
            .args(["--batch-timeout", "50ms"])
            .args(["--otlp-exporter-retry-initial-backoff", "100ms"])
            .arg("--pid-file")
            .arg(dir.join("rotel.pid"))
            .arg("--log-file")
            .arg(dir.join("rotel.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::from(stdout))
            .stderr(Stdio::from(stderr))
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| anyhow::anyhow!("cannot start {}: {e}", binary.display()))?;
        let mut rotel = Rotel {
            grpc_endpoint: format!("http://127.0.0.1:{grpc_port}"),
            dir,
            child,
        };
        let addr = format!("127.0.0.1:{grpc_port}");
        let ready = poll_until("rotel to listen", WAIT, || {
            if let Ok(Some(status)) = rotel.child.try_wait() {
                return Some(Err(anyhow::anyhow!("rotel exited early ({status})")));
            }
            let sock = addr.parse().ok()?;
            std::net::TcpStream::connect_timeout(&sock, Duration::from_millis(100))
                .ok()
                .map(|_| Ok(()))
        })
        .await;
        match ready {
            Ok(Ok(())) => Ok(rotel),
            Ok(Err(e)) | Err(e) => Err(e.context(rotel.logs())),
        }
    }

    /// rotel's log file, for failure messages.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.dir.join("rotel.log"))
            .unwrap_or_else(|_| "(no rotel log)".into())
    }
}

impl Drop for Rotel {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
