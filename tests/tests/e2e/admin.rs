//! The admin server: `/healthz` answers 200 while tailgate runs, `/metrics` is Prometheus text that counts
//! what was received and exported.

use crate::support::{grpc_send, sample_request_in};
use tailgate_e2e::capture::CaptureServer;
use tailgate_e2e::otlp::{flatten, metric_sum};
use tailgate_e2e::proxy::{RunningAppExt, TestConfig};

async fn get(url: &str) -> anyhow::Result<(reqwest::StatusCode, String, String)> {
    let response = tokio::time::timeout(tailgate_e2e::WAIT, reqwest::get(url))
        .await
        .map_err(|_| anyhow::anyhow!("GET {url}: no answer within 30 s"))??;
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    Ok((status, content_type, response.text().await?))
}

#[tokio::test]
async fn metrics_endpoint() -> anyhow::Result<()> {
    let capture = CaptureServer::start().await?;
    let app = TestConfig::passthrough_to(capture.grpc_endpoint())
        .start()
        .await?;
    let admin = app.admin_endpoint();

    let (status, _, body) = get(&format!("{admin}/healthz")).await?;
    assert_eq!(status, 200, "healthz: {body}");

    let request = sample_request_in(0xad_0000_0000_0000_0000_0000_0000_0001);
    let n = flatten(&request).len();
    grpc_send(&app.grpc_endpoint(), request, false).await?;
    capture.wait_for_spans(n).await?;

    let (status, content_type, text) = get(&format!("{admin}/metrics")).await?;
    assert_eq!(status, 200);
    assert!(
        content_type.contains("text"),
        "Prometheus text exposition, got content-type {content_type}"
    );
    for family in [
        "tailgate_spans_received",
        "tailgate_spans_exported",
        "tailgate_buffer_bytes",
    ] {
        assert!(
            text.contains(&format!("# TYPE {family} ")),
            "/metrics has no {family}:\n{text}"
        );
    }
    assert_eq!(
        metric_sum(&text, "tailgate_spans_received_total"),
        n as f64,
        "{text}"
    );
    // The exporter counts after the downstream acknowledged, which may be just after the capture server
    // recorded the request.
    let url = format!("{admin}/metrics");
    let deadline = tokio::time::Instant::now() + tailgate_e2e::WAIT;
    let mut last = text;
    while metric_sum(&last, "tailgate_spans_exported_total") < n as f64 {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "spans_exported never reached {n}:\n{last}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        last = get(&url).await?.2;
    }

    app.shutdown().await;
    Ok(())
}
