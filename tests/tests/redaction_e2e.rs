//! PII redaction end to end: the OpenTelemetry Python and Node.js SDKs send spans full of personal data
//! through tailgate with the standard PII plugin; nothing planted arrives downstream, in any field.

use prost::Message;
use std::path::PathBuf;
use tailgate_e2e::capture::CaptureServer;
use tailgate_e2e::proxy::{RunningAppExt, TestConfig};
use tailgate_e2e::{python, repo_root};

fn pii_policy() -> String {
    let p = repo_root().join("target/plugins/pii.wasm");
    assert!(
        p.exists(),
        "{} is missing: run scripts/build-plugins.sh (scripts/test.sh does)",
        p.display()
    );
    format!(
        "  default: keep\n  redactors:\n    - name: pii\n      plugin: {}\n      call_timeout: 1s\n  redaction:\n    hash_key: e2e-test-key-0123456789\n",
        p.display()
    )
}

fn planted(report: &serde_json::Value) -> Vec<String> {
    report["planted"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(String::from))
        .collect()
}

/// Every captured request, re-encoded, as text (lossy): a planted value anywhere in it is a leak.
fn arrived_text(capture: &CaptureServer) -> String {
    capture
        .requests()
        .iter()
        .map(|r| String::from_utf8_lossy(&r.request.encode_to_vec()).into_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

async fn run_through_tailgate(
    send: impl AsyncFnOnce(&tailgate::app::RunningApp) -> anyhow::Result<serde_json::Value>,
) -> anyhow::Result<(Vec<String>, usize, String)> {
    let capture = CaptureServer::start().await?;
    let mut cfg = TestConfig::passthrough_to(capture.grpc_endpoint());
    cfg.policy = pii_policy();
    let app = cfg.start().await?;
    let report = send(&app).await?;
    let spans = report["span_count"].as_u64().unwrap_or(0) as usize;
    capture.wait_for_spans(spans).await?;
    app.shutdown().await;
    Ok((
        planted(&report),
        capture.spans().len(),
        arrived_text(&capture),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_spans_arrive_without_pii() -> anyhow::Result<()> {
    let (planted, arrived, text) = run_through_tailgate(async |app| {
        python::run_script("send_pii.py", &["--endpoint", &app.grpc_endpoint()]).await
    })
    .await?;
    assert_eq!(arrived, 2);
    assert!(planted.len() >= 10);
    let leaked: Vec<&String> = planted
        .iter()
        .filter(|v| text.contains(v.as_str()))
        .collect();
    assert!(leaked.is_empty(), "leaked: {leaked:?}");
    assert!(
        text.contains("tailgate.redacted.count"),
        "redacted spans carry the audit count"
    );
    assert!(text.contains("py-bank"), "non-PII data still arrives");
    Ok(())
}

fn node() -> anyhow::Result<(PathBuf, PathBuf)> {
    let dir = repo_root().join("tests/node");
    anyhow::ensure!(
        dir.join("node_modules/@opentelemetry/sdk-node").exists(),
        "tests/node/node_modules is missing: run ./scripts/test.sh (it runs `npm ci` in tests/node)"
    );
    Ok((PathBuf::from("node"), dir))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_sdk_spans_arrive_without_pii() -> anyhow::Result<()> {
    let (node, dir) = node()?;
    let (planted, arrived, text) = run_through_tailgate(async |app| {
        let out = tokio::process::Command::new(&node)
            .arg(dir.join("send_pii.mjs"))
            .arg(app.http_endpoint())
            .current_dir(&dir)
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("OTEL_SERVICE_NAME")
            .env_remove("OTEL_RESOURCE_ATTRIBUTES")
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(tailgate_e2e::WAIT, out).await??;
        anyhow::ensure!(
            out.status.success(),
            "node failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        let last = stdout.lines().last().unwrap_or("");
        Ok(serde_json::from_str(last)?)
    })
    .await?;
    assert_eq!(arrived, 2);
    let leaked: Vec<&String> = planted
        .iter()
        .filter(|v| text.contains(v.as_str()))
        .collect();
    assert!(leaked.is_empty(), "leaked: {leaked:?}");
    assert!(text.contains("node-shop"), "non-PII data still arrives");
    Ok(())
}
