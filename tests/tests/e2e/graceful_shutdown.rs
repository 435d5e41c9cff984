//! Spans accepted just before shutdown are delivered by the shutdown flush: the buffer's timers are far
//! longer than the test, so nothing but an orderly shutdown (stop receivers, decide what is buffered,
//! drain the exporter) can get them downstream.

use crate::support::{grpc_send, sample_request_in};
use tailgate_e2e::capture::CaptureServer;
use tailgate_e2e::otlp::{assert_same_spans, flatten};
use tailgate_e2e::proxy::{RunningAppExt, TestConfig};

#[tokio::test]
async fn graceful_shutdown_delivers_everything_accepted() -> anyhow::Result<()> {
    let capture = CaptureServer::start().await?;
    let mut config = TestConfig::passthrough_to(capture.grpc_endpoint());
    config.settle = "60s";
    config.idle_timeout = "120s";
    config.max_wait = "300s";
    config.batch_timeout = "60s";
    let app = config.start().await?;

    let mut expected = Vec::new();
    for i in 0..5u128 {
        let request = sample_request_in(0x5d5d_0000_0000_0000_0000_0000_0000_0000 + i);
        expected.extend(flatten(&request));
        grpc_send(&app.grpc_endpoint(), request, false).await?;
    }
    assert!(capture.spans().is_empty(), "nothing is due before shutdown");

    tokio::time::timeout(tailgate_e2e::WAIT, app.shutdown())
        .await
        .map_err(|_| anyhow::anyhow!("shutdown took longer than 30 s"))?;
    assert_same_spans(&expected, &capture.spans());
    Ok(())
}
