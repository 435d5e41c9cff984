//! Python SDK -> tailgate -> rotel (a real OTLP collector, standing in for Jaeger's OTLP receiver) ->
//! capture server: another implementation accepts what tailgate exports, and every span gets through.

use crate::support::parse_report;
use tailgate_e2e::capture::CaptureServer;
use tailgate_e2e::otlp::assert_same_spans;
use tailgate_e2e::proxy::{RunningAppExt, TestConfig};
use tailgate_e2e::python::run_script;
use tailgate_e2e::rotel::Rotel;

#[tokio::test]
async fn through_rotel() -> anyhow::Result<()> {
    let capture = CaptureServer::start().await?;
    let rotel = Rotel::start(&capture.grpc_endpoint()).await?;
    let app = TestConfig::passthrough_to(rotel.grpc_endpoint.clone())
        .start()
        .await?;
    let endpoint = app.grpc_endpoint();
    let report = parse_report(
        &run_script(
            "send_rich.py",
            &["--protocol", "grpc", "--endpoint", &endpoint],
        )
        .await?,
    )?;

    if let Err(e) = capture.wait_for_spans(report.expected.len()).await {
        anyhow::bail!("{e}\nrotel log:\n{}", rotel.logs());
    }
    app.shutdown().await;
    assert_same_spans(&report.expected, &capture.spans());
    Ok(())
}
