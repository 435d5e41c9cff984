//! The OpenTelemetry Python SDK sends rich traces to tailgate over OTLP/gRPC and OTLP/HTTP; tailgate
//! (keeping everything) forwards them, and every span arrives as the SDK encoded it.

use crate::support::parse_report;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use tailgate_e2e::capture::CaptureServer;
use tailgate_e2e::otlp::{FlatSpan, assert_same_spans, string_attr};
use tailgate_e2e::proxy::{RunningAppExt, TestConfig};
use tailgate_e2e::python::run_script;

/// Guards against the script losing its richness: the comparison below only means something if the
/// SDK really sent every kind of field.
fn assert_script_is_rich(expected: &[FlatSpan]) {
    let spans: Vec<_> = expected.iter().map(|f| &f.span).collect();
    assert!(
        spans.len() >= 6,
        "expected at least 6 spans, got {}",
        spans.len()
    );
    assert!(
        spans.iter().any(|s| s.parent_span_id.is_empty()),
        "a root span"
    );
    assert!(
        spans.iter().any(|s| !s.parent_span_id.is_empty()),
        "nested spans"
    );
    assert!(spans.iter().any(|s| !s.events.is_empty()), "events");
    assert!(spans.iter().any(|s| s.links.len() >= 2), "links");
    assert!(
        spans.iter().any(|s| {
            s.status.as_ref().is_some_and(|st| {
                st.code == StatusCode::Error as i32 && st.message == "card declined"
            })
        }),
        "an error status with a message"
    );
    let kinds: std::collections::BTreeSet<i32> = spans.iter().map(|s| s.kind).collect();
    assert!(kinds.len() >= 5, "all five span kinds, got {kinds:?}");
    let values: Vec<&Value> = spans
        .iter()
        .flat_map(|s| s.attributes.iter())
        .filter_map(|kv| kv.value.as_ref().and_then(|v| v.value.as_ref()))
        .collect();
    assert!(
        values.iter().any(|v| matches!(v, Value::StringValue(_))),
        "string attributes"
    );
    assert!(
        values.iter().any(|v| matches!(v, Value::IntValue(_))),
        "int attributes"
    );
    assert!(
        values.iter().any(|v| matches!(v, Value::DoubleValue(_))),
        "double attributes"
    );
    assert!(
        values.iter().any(|v| matches!(v, Value::BoolValue(_))),
        "bool attributes"
    );
    assert!(
        values.iter().any(|v| matches!(v, Value::ArrayValue(_))),
        "array attributes"
    );
    let resource = expected[0]
        .resource
        .as_ref()
        .map(|r| r.attributes.len())
        .unwrap_or(0);
    assert!(resource >= 7, "resource attributes, got {resource}");
}

async fn roundtrip(protocol: &str, gzip: bool) -> anyhow::Result<()> {
    let capture = CaptureServer::start().await?;
    let app = TestConfig::passthrough_to(capture.grpc_endpoint())
        .start()
        .await?;
    let endpoint = if protocol == "grpc" {
        app.grpc_endpoint()
    } else {
        app.http_endpoint()
    };
    let mut args = vec!["--protocol", protocol, "--endpoint", &endpoint];
    if gzip {
        args.push("--gzip");
    }
    let report = parse_report(&run_script("send_rich.py", &args).await?)?;
    assert_script_is_rich(&report.expected);
    assert_eq!(report.trace_ids.len(), 2);

    capture.wait_for_spans(report.expected.len()).await?;
    app.shutdown().await;
    let arrived = capture.spans();
    assert_same_spans(&report.expected, &arrived);
    for s in &arrived {
        let rule = string_attr(&s.span.attributes, "tailgate.rule");
        assert_eq!(
            rule.as_deref(),
            Some("default"),
            "kept span `{}` names the rule that kept it",
            s.span.name
        );
    }
    Ok(())
}

#[tokio::test]
async fn grpc_sdk_roundtrip() -> anyhow::Result<()> {
    roundtrip("grpc", false).await
}

#[tokio::test]
async fn http_sdk_roundtrip() -> anyhow::Result<()> {
    roundtrip("http", false).await
}

/// The SDKs' own gzip (`OTEL_EXPORTER_OTLP_COMPRESSION=gzip`) on both protocols.
#[tokio::test]
async fn gzip_sdk_roundtrip() -> anyhow::Result<()> {
    roundtrip("grpc", true).await?;
    roundtrip("http", true).await
}
