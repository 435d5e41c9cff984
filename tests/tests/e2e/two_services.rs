//! One trace from two services (`frontend` over OTLP/gRPC, `payments` over OTLP/HTTP, the context
//! propagated through a `traceparent` header) arrives in five requests on two receivers. tailgate must
//! assemble it and export it complete, exactly once, as one decision.

use crate::support::parse_report;
use tailgate_e2e::capture::CaptureServer;
use tailgate_e2e::otlp::{assert_same_spans, hex, metric_sum};
use tailgate_e2e::proxy::{RunningAppExt, TestConfig};
use tailgate_e2e::python::run_script;

#[tokio::test]
async fn two_services_one_trace() -> anyhow::Result<()> {
    let capture = CaptureServer::start().await?;
    let mut config = TestConfig::passthrough_to(capture.grpc_endpoint());
    // Long enough that the payments spans (which arrive without their root) are never decided on their
    // own; the root arrives last and settles the trace.
    config.idle_timeout = "20s";
    config.max_wait = "25s";
    let app = config.start().await?;
    let metrics = app.metrics.clone();
    let (grpc, http) = (app.grpc_endpoint(), app.http_endpoint());
    let report = parse_report(
        &run_script(
            "two_services.py",
            &["--frontend-grpc", &grpc, "--payments-http", &http],
        )
        .await?,
    )?;

    // The script really produced one trace from two services, linked parent to child across them.
    assert_eq!(
        report.trace_ids.len(),
        1,
        "one trace: {:?}",
        report.trace_ids
    );
    assert_eq!(report.expected.len(), 6);
    assert!(
        report.exports >= 5,
        "the trace left the SDKs in {} requests, expected at least 5",
        report.exports
    );
    let services: std::collections::BTreeSet<String> =
        report.expected.iter().map(|s| s.service()).collect();
    assert_eq!(
        services.into_iter().collect::<Vec<_>>(),
        ["frontend", "payments"]
    );
    let by_name = |n: &str| {
        report
            .expected
            .iter()
            .find(|s| s.span.name == n)
            .map(|s| s.span.clone())
    };
    let (call, server) = (by_name("POST payments/charge"), by_name("POST /charge"));
    let (call, server) = (call.expect("client span"), server.expect("server span"));
    assert_eq!(
        server.parent_span_id, call.span_id,
        "payments' server span is a child of frontend's client span"
    );

    let arrived = capture.wait_for_spans(report.expected.len()).await?;
    let trace = &report.trace_ids[0];
    assert!(arrived.iter().all(|s| hex(&s.span.trace_id) == *trace));
    app.shutdown().await;
    // After shutdown nothing more can arrive: exactly once means exactly these.
    assert_same_spans(&report.expected, &capture.spans());

    let text = metrics.encode();
    assert_eq!(
        metric_sum(&text, "tailgate_decision_triggers_total"),
        1.0,
        "the trace was decided once, not piecemeal:\n{text}"
    );
    assert_eq!(
        metric_sum(&text, "tailgate_late_spans_total"),
        0.0,
        "no span arrived after the decision:\n{text}"
    );
    Ok(())
}
