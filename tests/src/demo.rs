//! The demo stack of `examples/demo/`, run locally for the end-to-end tests (no Docker): the `tailgate`
//! binary on a copy of the seed policy (`examples/tailgate.yaml`), the Python `user-service` (Flask) and
//! the Node.js `api-service` (Express), each a real process on free loopback ports, with the standard
//! `OTEL_*` environment pointing the services at tailgate.
//!
//! The services' own environments are set up by `scripts/test.sh`: `examples/demo/user-service/.venv`
//! (`scripts/setup-python.sh`) and `examples/demo/api-service/node_modules` (`npm ci`). Without them the
//! tests fail and say what to run; they never skip.

use crate::{WAIT, free_port, repo_root};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

/// What to run when a service's environment is missing.
pub const SETUP_HINT: &str = "run ./scripts/test.sh (or ./scripts/setup-python.sh and `npm ci` in examples/demo/api-service)";

/// `examples/demo/`.
pub fn demo_dir() -> PathBuf {
    repo_root().join("examples/demo")
}

/// The user-service's interpreter: `$TAILGATE_DEMO_PYTHON`, else its virtualenv.
pub fn user_service_python() -> anyhow::Result<PathBuf> {
    let path = match std::env::var_os("TAILGATE_DEMO_PYTHON") {
        Some(p) => PathBuf::from(p),
        None => demo_dir().join("user-service/.venv/bin/python"),
    };
    anyhow::ensure!(
        path.exists(),
        "the demo user-service's Python is missing at {}: {SETUP_HINT}",
        path.display()
    );
    Ok(path)
}

/// The api-service's directory, checked to have its packages installed.
pub fn api_service_dir() -> anyhow::Result<PathBuf> {
    let dir = demo_dir().join("api-service");
    anyhow::ensure!(
        dir.join("node_modules/@opentelemetry/auto-instrumentations-node")
            .exists(),
        "{}/node_modules is missing: {SETUP_HINT}",
        dir.display()
    );
    Ok(dir)
}

/// The seed policy (`examples/tailgate.yaml`, built-in plugins) with
/// its buffer timings shortened for a test (`settle`, `idle_timeout`). Everything else, the rules, the
/// redactor and the exporter settings, is the file's. Fails if the file no longer has what is replaced,
/// so the test cannot silently drift from the example.
pub fn seed_policy_yaml(settle: &str, idle_timeout: &str) -> anyhow::Result<String> {
    let path = repo_root().join("examples/tailgate.yaml");
    let mut text = std::fs::read_to_string(&path)?;
    for (from, to) in [
        ("  settle: 2s\n", format!("  settle: {settle}\n")),
        (
            "  idle_timeout: 10s\n",
            format!("  idle_timeout: {idle_timeout}\n"),
        ),
    ] {
        anyhow::ensure!(
            text.contains(from),
            "{} no longer contains {from:?}: update tailgate_e2e::demo",
            path.display()
        );
        text = text.replace(from, &to);
    }
    Ok(text)
}

/// One child process of the stack, its output in a log file; killed when dropped.
pub struct Process {
    pub name: &'static str,
    child: tokio::process::Child,
    log: PathBuf,
}

impl Process {
    /// Starts `cmd`, its standard output and error into `dir/<name>.log` (never a pipe nobody reads).
    pub fn spawn(
        name: &'static str,
        mut cmd: tokio::process::Command,
        dir: &Path,
    ) -> anyhow::Result<Process> {
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log)?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::from(out.try_clone()?))
            .stderr(Stdio::from(out))
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| anyhow::anyhow!("cannot start {name}: {e}; {SETUP_HINT}"))?;
        Ok(Process { name, child, log })
    }

    /// The process's output so far, for failure messages.
    pub fn logs(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        format!("--- {} ({}) ---\n{text}", self.name, self.log.display())
    }

    /// Polls `GET url` until it answers 200, failing early if the process exits.
    pub async fn wait_healthy(&mut self, url: &str) -> anyhow::Result<()> {
        let client = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait()? {
                anyhow::bail!("{} exited early ({status})\n{}", self.name, self.logs());
            }
            if let Ok(r) = client.get(url).send().await
                && r.status().is_success()
            {
                return Ok(());
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "{} did not answer {url} within {WAIT:?}\n{}",
                self.name,
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends SIGTERM and waits (at most [`WAIT`]) for a clean exit: the services flush their SDKs, tailgate
    /// decides what it buffers and drains its exporter.
    pub async fn terminate(&mut self) -> anyhow::Result<()> {
        if let Some(pid) = self.child.id() {
            let status = tokio::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await?;
            anyhow::ensure!(status.success(), "kill -TERM {pid} failed");
        }
        let status = tokio::time::timeout(WAIT, self.child.wait())
            .await
            .map_err(|_| {
                anyhow::anyhow!("{} did not exit within {WAIT:?} of SIGTERM", self.name)
            })??;
        anyhow::ensure!(
            status.success(),
            "{} exited with {status} after SIGTERM\n{}",
            self.name,
            self.logs()
        );
        Ok(())
    }
}

/// tailgate, the user-service and the api-service, running.
pub struct DemoStack {
    /// `http://127.0.0.1:PORT` of the api-service.
    pub api_url: String,
    /// `http://127.0.0.1:PORT` of tailgate's admin server.
    pub admin_url: String,
    pub tailgate: Process,
    pub user_service: Process,
    pub api_service: Process,
    dir: PathBuf,
}

/// Settings of [`DemoStack::start`].
pub struct DemoOptions {
    /// The tailgate configuration file's text (its endpoints are overridden by flags).
    pub config_yaml: String,
    /// Where tailgate exports (`--exporter-endpoint`, OTLP/gRPC).
    pub exporter_endpoint: String,
    /// `DEMO_SLOW_MS` of both services.
    pub slow_ms: u64,
}

impl DemoStack {
    /// Starts tailgate, then the user-service (OTLP/HTTP to tailgate), then the api-service (OTLP/gRPC to
    /// tailgate, calling the user-service), and returns once all three answer their health checks. The
    /// services' random failures and slowness are off (`DEMO_*_RATE=0`): tests ask for them explicitly.
    pub async fn start(opts: DemoOptions) -> anyhow::Result<DemoStack> {
        let [grpc, http, admin, user_port, api_port] = [
            free_port()?,
            free_port()?,
            free_port()?,
            free_port()?,
            free_port()?,
        ];
        let dir = std::env::temp_dir().join(format!(
            "tailgate-e2e-demo-{}-{api_port}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir)?;
        let config = dir.join("tailgate.yaml");
        std::fs::write(&config, &opts.config_yaml)?;

        let mut cmd = tokio::process::Command::new(crate::binary::tailgate_bin()?);
        cmd.arg("--config")
            .arg(&config)
            .args(["--otlp-grpc-endpoint", &format!("127.0.0.1:{grpc}")])
            .args(["--otlp-http-endpoint", &format!("127.0.0.1:{http}")])
            .args(["--admin-endpoint", &format!("127.0.0.1:{admin}")])
            .args(["--exporter-endpoint", &opts.exporter_endpoint])
            .env("RUST_LOG", "tailgate=info");
        let mut tailgate = Process::spawn("tailgate", cmd, &dir)?;
        let admin_url = format!("http://127.0.0.1:{admin}");
        tailgate
            .wait_healthy(&format!("{admin_url}/healthz"))
            .await?;

        let common = |cmd: &mut tokio::process::Command, service: &str, port: u16| {
            // Nothing from the developer's environment: only what the demo's README tells users to set.
            for (k, _) in std::env::vars_os() {
                if k.to_string_lossy().starts_with("OTEL_") {
                    cmd.env_remove(k);
                }
            }
            cmd.env("HOST", "127.0.0.1")
                .env("PORT", port.to_string())
                .env("OTEL_SERVICE_NAME", service)
                .env(
                    "OTEL_RESOURCE_ATTRIBUTES",
                    "deployment.environment.name=e2e",
                )
                // Export within 100 ms instead of the SDKs' default 5 s.
                .env("OTEL_BSP_SCHEDULE_DELAY", "100")
                .env("DEMO_ERROR_RATE", "0")
                .env("DEMO_SLOW_RATE", "0")
                .env("DEMO_SLOW_MS", opts.slow_ms.to_string());
        };

        let mut cmd = tokio::process::Command::new(user_service_python()?);
        cmd.arg("app.py")
            .current_dir(demo_dir().join("user-service"))
            .env("PYTHONUNBUFFERED", "1")
            .env(
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                format!("http://127.0.0.1:{http}"),
            );
        common(&mut cmd, "user-service", user_port);
        let mut user_service = Process::spawn("user-service", cmd, &dir)?;
        user_service
            .wait_healthy(&format!("http://127.0.0.1:{user_port}/healthz"))
            .await?;

        let mut cmd = tokio::process::Command::new("node");
        cmd.args(["--require", "./tracing.js", "server.js"])
            .current_dir(api_service_dir()?)
            .env("USER_SERVICE_URL", format!("http://127.0.0.1:{user_port}"))
            .env(
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                format!("http://127.0.0.1:{grpc}"),
            )
            .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc");
        common(&mut cmd, "api-service", api_port);
        let mut api_service = Process::spawn("api-service", cmd, &dir)?;
        let api_url = format!("http://127.0.0.1:{api_port}");
        api_service
            .wait_healthy(&format!("{api_url}/healthz"))
            .await?;

        Ok(DemoStack {
            api_url,
            admin_url,
            tailgate,
            user_service,
            api_service,
            dir,
        })
    }

    /// Every process's output, for failure messages.
    pub fn logs(&self) -> String {
        [&self.tailgate, &self.user_service, &self.api_service]
            .iter()
            .map(|p| p.logs())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Waits until tailgate's `/metrics` shows at least `n` decisions.
    pub async fn wait_for_decisions(&self, n: f64) -> anyhow::Result<()> {
        let url = format!("{}/metrics", self.admin_url);
        let client = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let text = client.get(&url).send().await?.text().await?;
            let last = crate::otlp::metric_sum(&text, "tailgate_decisions_total");
            if last >= n {
                return Ok(());
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "{last} of {n} traces decided within {WAIT:?}\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for DemoStack {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
