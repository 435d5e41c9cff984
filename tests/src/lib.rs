//! Harness for tailgate's end-to-end tests: real clients on one side, a recording OTLP server on the
//! other, and tailgate (started in-process on port 0) in between.
//!
//! # Layout
//!
//! ```text
//!  python::run_script ──► tailgate (proxy::TestConfig::start) ──► capture::CaptureServer
//!  (OpenTelemetry SDK)          │                                       ▲
//!                               └──────► rotel::Rotel (real collector) ─┘   (optional hop)
//! ```
//!
//! - [`binary`]: the built `tailgate` executable, for command-line tests.
//! - [`capture`]: an OTLP/gRPC + OTLP/HTTP server that records every request and can refuse the first N.
//! - [`collector`]: the OpenTelemetry Collector (`$TAILGATE_COLLECTOR`), the decision oracle.
//! - [`demo`]: the demo stack of `examples/demo/` (tailgate binary, Python user-service, Node.js
//!   api-service) as local processes.
//! - [`jaeger`]: a real Jaeger v2 (memory storage, free loopback ports) and a client of its query API.
//! - [`proxy`]: tailgate configurations with short timings, started through `tailgate::app`.
//! - [`python`]: runs the scripts in `tests/python/` with the project's virtualenv.
//! - [`rotel`]: runs the rotel collector shipped in the `rotel` Python package.
//! - [`otlp`]: flattening, normalising and comparing OTLP spans.
//! - [`tls`]: certificates made at test time and a TLS (mutual TLS) capture server.
//!
//! Everything listens on 127.0.0.1 and every wait is bounded by [`WAIT`].

pub mod binary;
pub mod capture;
pub mod collector;
pub mod demo;
pub mod jaeger;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod otlp;
pub mod proxy;
pub mod python;
pub mod rotel;
pub mod tls;

use std::path::PathBuf;
use std::time::Duration;

/// The longest any test waits for something to happen (spans to arrive, a process to answer).
pub const WAIT: Duration = Duration::from_secs(30);

/// The repository root (the tests crate lives in `tests/`).
pub fn repo_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// Sets up logging once for the test binary: `RUST_LOG` (default `warn`) to the captured test output.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// A free loopback port, for programs that cannot report the port they bound (rotel, the binary).
/// The port is released before returning, so another process could take it in between; on loopback in
/// a test run that is rare enough.
pub fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// A free loopback port below the kernel's ephemeral range, for a third-party server (a Kafka broker)
/// that binds it seconds later. A [`free_port`] can be handed out again in between, to another
/// `bind(0)` or to an outgoing connection of a parallel test (seen: a broker failing with "Address
/// already in use"); the kernel never assigns ports below the ephemeral range, so only another caller
/// of this function could take it, and they walk disjoint ports (per process and per call).
pub fn reserved_port() -> anyhow::Result<u16> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768);
    const FIRST: u32 = 10_000;
    anyhow::ensure!(
        low > FIRST + 1000,
        "the ephemeral port range starts at {low}"
    );
    let span = low - FIRST;
    // Processes start at different offsets (their pid), calls within one process walk on from there.
    let base = (std::process::id() * 97) % span;
    for _ in 0..span {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = FIRST + (base + n) % span;
        if std::net::TcpListener::bind(("127.0.0.1", port as u16)).is_ok() {
            return Ok(port as u16);
        }
    }
    anyhow::bail!("no free loopback port in {FIRST}..{low}")
}

/// Polls `check` every 20 ms until it returns `Some`, or fails after `timeout` with `what`.
pub async fn poll_until<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Option<T>,
) -> anyhow::Result<T> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return Ok(v);
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
