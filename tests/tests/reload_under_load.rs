//! Reload under load: two OpenTelemetry SDK clients (Python, OTLP/gRPC and OTLP/HTTP) send at a steady pace
//! through tailgate, started from a config file, with a keep-everything policy, while the test reloads ten
//! times, alternately swapping a plugin file and editing a rule's config. Every span sent must arrive
//! downstream exactly once, unchanged, and no client may see an error.
//!
//! Needs `.venv` (scripts/test.sh) and `target/plugins/` (scripts/build-plugins.sh); fails when missing.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tailgate::config::Overrides;
use tailgate_e2e::capture::CaptureServer;
use tailgate_e2e::otlp::{assert_same_spans, flatten, metric_sum};
use tailgate_e2e::proxy::{RunningAppExt, TestConfig};
use tailgate_e2e::{WAIT, python, repo_root};

const RELOADS: usize = 10;
const TRACES_PER_CLIENT: &str = "600";
const SECONDS_PER_CLIENT: &str = "8";

fn plugin(name: &str) -> anyhow::Result<PathBuf> {
    let p = repo_root()
        .join("target/plugins")
        .join(format!("{name}.wasm"));
    anyhow::ensure!(
        p.exists(),
        "{} is missing: run scripts/build-plugins.sh first",
        p.display()
    );
    Ok(p)
}

/// `component` with a custom section appended: the same plugin, different bytes (a new file hash).
fn with_custom_section(component: &[u8], payload: &[u8]) -> Vec<u8> {
    let name = b"tailgate-test";
    let mut body = vec![name.len() as u8];
    body.extend_from_slice(name);
    body.extend_from_slice(payload);
    let mut out = component.to_vec();
    out.push(0);
    let mut n = body.len();
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            break;
        }
        out.push(byte | 0x80);
    }
    out.extend_from_slice(&body);
    out
}

/// Keep everything: error traces by `errors`, the rest by `sample` at 100 %; `slow` only in shadow.
fn policy(errors: &Path, sample_config: &str) -> anyhow::Result<String> {
    Ok(format!(
        "  default: keep\n  rules:\n\
         \x20   - name: errors\n      plugin: {}\n\
         \x20   - name: sample\n      plugin: {}\n      config: {sample_config}\n\
         \x20   - name: slow\n      plugin: {}\n      config: {{threshold: 1ms}}\n      shadow: true\n",
        errors.display(),
        plugin("probabilistic")?.display(),
        plugin("keep-slow")?.display(),
    ))
}

fn config_file(tc: &TestConfig) -> String {
    let cache = repo_root().join("target/plugin-test-cache");
    format!(
        "{}plugins:\n  cache_dir: {}\n  call_timeout: 2s\n",
        tc.yaml(),
        cache.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_load_loses_nothing() -> anyhow::Result<()> {
    python::python()?;
    let dir = repo_root()
        .join("target/reload-tests")
        .join(format!("under-load-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let errors_wasm = dir.join("errors.wasm");
    let original = std::fs::read(plugin("keep-errors")?)?;
    let variant = with_custom_section(&original, b"variant");
    std::fs::write(&errors_wasm, &original)?;

    let capture = CaptureServer::start().await?;
    let mut tc = TestConfig::passthrough_to(capture.grpc_endpoint());
    tc.policy = policy(&errors_wasm, "{probability: 1.0}")?;
    let cfg = dir.join("tailgate.yaml");
    std::fs::write(&cfg, config_file(&tc))?;
    tailgate_e2e::init_logging();
    let app = tailgate::app::start_from_file(&cfg, &Overrides::default()).await?;

    let clients = [
        ("grpc", app.grpc_endpoint(), "load-grpc"),
        ("http", app.http_endpoint(), "load-http"),
    ]
    .map(|(protocol, endpoint, service)| {
        tokio::spawn(async move {
            python::run_script(
                "load.py",
                &[
                    "--protocol",
                    protocol,
                    "--endpoint",
                    &endpoint,
                    "--traces",
                    TRACES_PER_CLIENT,
                    "--seconds",
                    SECONDS_PER_CLIENT,
                    "--service",
                    service,
                ],
            )
            .await
        })
    });

    // Reload while the clients send: odd reloads swap the plugin file, even ones edit `sample`'s config
    // (same behaviour, different text, so the rule is loaded anew).
    let http = reqwest::Client::new();
    let reload_url = format!("{}/reload", app.admin_endpoint());
    let mut reload_ms = Vec::new();
    for i in 0..RELOADS {
        tokio::time::sleep(Duration::from_millis(400)).await;
        if i % 2 == 1 {
            let bytes = if i % 4 == 1 { &variant } else { &original };
            std::fs::write(&errors_wasm, bytes)?;
        } else {
            let sample = if i % 4 == 0 {
                "{percentage: 100}"
            } else {
                "{probability: 1.0}"
            };
            tc.policy = policy(&errors_wasm, sample)?;
            std::fs::write(&cfg, config_file(&tc))?;
        }
        let started = Instant::now();
        let resp = http.post(&reload_url).send().await?;
        let status = resp.status();
        let body = resp.text().await?;
        reload_ms.push(started.elapsed().as_secs_f64() * 1e3);
        anyhow::ensure!(status == 200, "reload {i} answered {status}: {body}");
    }

    let mut expected = Vec::new();
    for c in clients {
        let report = c.await??;
        let hex = report["expected"]
            .as_str()
            .ok_or_else(|| anyhow::anyhow!("no `expected` in report"))?;
        expected.extend(flatten(&tailgate_e2e::otlp::decode_hex_request(hex)?));
    }
    let arrived = capture.wait_for_spans_within(expected.len(), WAIT).await?;
    // Anything extra (a duplicate) would have had time to arrive too.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let arrived_all = capture.spans();
    eprintln!(
        "reload under load: {} spans sent, {} received ({} reloads over POST /reload, {:.0?} ms each)",
        expected.len(),
        arrived_all.len(),
        RELOADS,
        reload_ms
    );
    assert!(arrived.len() <= arrived_all.len());
    assert_same_spans(&expected, &arrived_all);

    let metrics = http
        .get(format!("{}/metrics", app.admin_endpoint()))
        .send()
        .await?
        .text()
        .await?;
    anyhow::ensure!(
        metric_sum(&metrics, "tailgate_reload_failures_total") == 0.0,
        "a reload failed:\n{metrics}"
    );
    anyhow::ensure!(
        metric_sum(&metrics, "tailgate_reloads_total") >= RELOADS as f64,
        "fewer reloads than requested:\n{metrics}"
    );
    // The shadow rule saw every trace; it never decided one.
    anyhow::ensure!(
        metric_sum(&metrics, "tailgate_shadow_decisions_total") > 0.0,
        "the shadow rule was not evaluated:\n{metrics}"
    );
    app.shutdown().await;
    Ok(())
}
