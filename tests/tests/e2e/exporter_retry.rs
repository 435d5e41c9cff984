//! The downstream refuses the first requests with UNAVAILABLE (gRPC) or 503 (HTTP); tailgate's exporter
//! retries with backoff and every span still arrives exactly once.

use crate::support::{grpc_send, sample_request_in};
use tailgate_e2e::capture::CaptureServer;
use tailgate_e2e::otlp::{assert_same_spans, flatten};
use tailgate_e2e::proxy::{RunningAppExt, TestConfig};

const REFUSALS: usize = 3;

async fn retry(http: bool, trace_id: u128) -> anyhow::Result<()> {
    let capture = CaptureServer::refusing_first(REFUSALS).await?;
    let config = if http {
        TestConfig::passthrough_to("").http_exporter(capture.http_endpoint())
    } else {
        TestConfig::passthrough_to(capture.grpc_endpoint())
    };
    let app = config.start().await?;
    let request = sample_request_in(trace_id);
    let expected = flatten(&request);
    grpc_send(&app.grpc_endpoint(), request, false).await?;

    capture.wait_for_spans(expected.len()).await?;
    assert_eq!(
        capture.refused(),
        REFUSALS,
        "the downstream refused the first {REFUSALS} attempts"
    );
    app.shutdown().await;
    assert_same_spans(&expected, &capture.spans());
    Ok(())
}

#[tokio::test]
async fn exporter_retry_grpc() -> anyhow::Result<()> {
    retry(false, 0x7e7e_0001_0000_0000_0000_0000_0000_0001).await
}

#[tokio::test]
async fn exporter_retry_http() -> anyhow::Result<()> {
    retry(true, 0x7e7e_0002_0000_0000_0000_0000_0000_0002).await
}
