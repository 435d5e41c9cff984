//! The OpenTelemetry Collector of `bench/collector/` (contrib v0.161.0: otlp receiver, tail_sampling,
//! redaction, transform, batch, otlp exporter), built and cached by `scripts/peers.sh collector`, which
//! prints its path as `TAILGATE_COLLECTOR=...`. The decision oracle test runs it beside tailgate.

use crate::{WAIT, poll_until};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

/// How to get the binary, for failure messages.
pub const SETUP_HINT: &str = "build it with `scripts/peers.sh collector` (a few minutes the first time, \
     cached afterwards) and set TAILGATE_COLLECTOR to the path it prints, e.g. \
     `eval \"$(scripts/peers.sh collector | grep ^TAILGATE_)\"`; scripts/test.sh does both";

/// The Collector binary from `$TAILGATE_COLLECTOR`; an error naming scripts/peers.sh when it is unset or
/// missing (the tests that need it fail, they never skip).
pub fn collector_binary() -> anyhow::Result<PathBuf> {
    let Some(p) = std::env::var_os("TAILGATE_COLLECTOR") else {
        anyhow::bail!("TAILGATE_COLLECTOR is not set: {SETUP_HINT}");
    };
    let p = PathBuf::from(p);
    anyhow::ensure!(
        p.is_file(),
        "TAILGATE_COLLECTOR={} does not exist: {SETUP_HINT}",
        p.display()
    );
    Ok(p)
}

/// A running Collector; killed when dropped.
pub struct Collector {
    dir: PathBuf,
    child: tokio::process::Child,
}

impl Collector {
    /// Starts the Collector on the configuration `yaml` and returns once every port in `listens_on`
    /// (its receivers, on 127.0.0.1) accepts connections.
    pub async fn start(yaml: &str, listens_on: &[u16]) -> anyhow::Result<Collector> {
        let binary = collector_binary()?;
        let dir = std::env::temp_dir().join(format!(
            "tailgate-e2e-collector-{}-{}",
            std::process::id(),
            listens_on.first().copied().unwrap_or(0)
        ));
        std::fs::create_dir_all(&dir)?;
        let config = dir.join("config.yaml");
        std::fs::write(&config, yaml)?;
        // Output goes to a file, never to a pipe nobody reads (a full pipe would stall the Collector).
        let log = std::fs::File::create(dir.join("collector.log"))?;
        let child = tokio::process::Command::new(&binary)
            .arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| anyhow::anyhow!("cannot start {}: {e}", binary.display()))?;
        let mut collector = Collector { dir, child };
        for &port in listens_on {
            let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
            let ready = poll_until("the Collector to listen", WAIT, || {
                if let Ok(Some(status)) = collector.child.try_wait() {
                    return Some(Err(anyhow::anyhow!(
                        "the Collector exited early ({status})"
                    )));
                }
                std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(100))
                    .ok()
                    .map(|_| Ok(()))
            })
            .await;
            match ready {
                Ok(Ok(())) => {}
                Ok(Err(e)) | Err(e) => return Err(e.context(collector.logs())),
            }
        }
        Ok(collector)
    }

    /// What the Collector logged, for failure messages.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.dir.join("collector.log"))
            .unwrap_or_else(|_| "(no Collector log)".into())
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
