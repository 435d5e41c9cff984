//! The second chance through the running proxy: with `buffer.second_chance` on and a policy that keeps
//! only traces with an error (`builtin:keep-errors`), a trace dropped after its settle comes back whole
//! when its error span arrives late, and another comes back on `POST /rescue`; both reach the downstream
//! once, every span marked `tailgate.rescued_by`. Bad rescue requests are refused with 400 naming the
//! problem, and a proxy without the ring answers 409.

use crate::support::{grpc_send, sample_request_in};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use tailgate_e2e::capture::CaptureServer;
use tailgate_e2e::otlp::{FlatSpan, metric_sum};
use tailgate_e2e::proxy::{RunningAppExt, TestConfig};

/// The sample request of trace `id` without its error span, and the error span alone.
fn split(id: u128) -> (ExportTraceServiceRequest, ExportTraceServiceRequest) {
    let mut early = sample_request_in(id);
    let mut late = early.clone();
    let spans = &mut early.resource_spans[0].scope_spans[0].spans;
    let failed = spans.pop().expect("the error span is last");
    assert!(failed.status.is_some());
    late.resource_spans[0].scope_spans[0].spans = vec![failed];
    (early, late)
}

fn rescued_by(s: &FlatSpan) -> Option<String> {
    s.span
        .attributes
        .iter()
        .find(|kv| kv.key == "tailgate.rescued_by")
        .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
            opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(v) => {
                Some(v.clone())
            }
            _ => None,
        })
}

async fn metric(admin: &str, name: &str) -> anyhow::Result<f64> {
    let text = reqwest::get(format!("{admin}/metrics"))
        .await?
        .text()
        .await?;
    Ok(metric_sum(&text, name))
}

async fn post(admin: &str, body: &str) -> anyhow::Result<(u16, serde_json::Value)> {
    let r = reqwest::Client::new()
        .post(format!("{admin}/rescue"))
        .body(body.to_owned())
        .send()
        .await?;
    let code = r.status().as_u16();
    Ok((code, serde_json::from_str(&r.text().await?)?))
}

fn config(endpoint: String) -> TestConfig {
    let mut c = TestConfig::passthrough_to(endpoint);
    c.policy =
        "  default: drop\n  rules:\n    - name: errors\n      plugin: builtin:keep-errors\n".into();
    c.buffer_extra = "  second_chance:\n    grace: 60s\n".into();
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_traces_come_back_on_a_late_error_and_on_request() -> anyhow::Result<()> {
    let capture = CaptureServer::start().await?;
    let app = config(capture.grpc_endpoint()).start().await?;
    let (grpc, admin) = (app.grpc_endpoint(), app.admin_endpoint());
    let (a, b) = (
        0x5c0d_0000_0000_0000_0000_0000_0000_0001u128,
        0x5c0d_0000_0000_0000_0000_0000_0000_0002u128,
    );
    let (a_early, a_late) = split(a);
    let (b_early, _) = split(b);
    grpc_send(&grpc, a_early, false).await?;
    grpc_send(&grpc, b_early, false).await?;
    let deadline = tokio::time::Instant::now() + tailgate_e2e::WAIT;
    while metric(&admin, "tailgate_rescue_ring_traces").await? < 2.0 {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the two traces were not dropped and held"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(capture.spans().is_empty(), "nothing kept yet");

    // The late error span brings trace `a` back whole.
    grpc_send(&grpc, a_late, false).await?;
    let got = capture.wait_for_spans(3).await?;
    assert!(
        got.iter()
            .all(|s| rescued_by(s).as_deref() == Some("errors")),
        "{got:?}"
    );

    // Bad requests name the problem; nothing is rescued by them.
    let (code, body) = post(&admin, r#"{"trace_ids": ["zz"]}"#).await?;
    assert_eq!(code, 400, "{body}");
    let (code, body) = post(&admin, r#"{"servce": "frontend"}"#).await?;
    assert_eq!(code, 400, "an unknown key: {body}");
    let (code, body) = post(&admin, "{}").await?;
    assert_eq!(code, 400, "neither ids nor a condition: {body}");

    // Trace `b` on request, by condition.
    let (code, body) = post(&admin, r#"{"service": "frontend", "reason": "e2e alert"}"#).await?;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        body["trace_ids"],
        serde_json::json!([format!("{b:032x}")]),
        "{body}"
    );
    assert_eq!(body["rescued_by"], "request:e2e_alert");
    let got = capture.wait_for_spans(5).await?;
    let from_b: Vec<&FlatSpan> = got
        .iter()
        .filter(|s| s.span.trace_id == b.to_be_bytes())
        .collect();
    assert_eq!(from_b.len(), 2);
    assert!(
        from_b
            .iter()
            .all(|s| rescued_by(s).as_deref() == Some("request:e2e_alert"))
    );

    // Asked again: nothing left to rescue, nothing sent twice.
    let (code, body) = post(&admin, &format!(r#"{{"trace_ids": ["{b:032x}"]}}"#)).await?;
    assert_eq!((code, body["rescued"].as_u64()), (200, Some(0)), "{body}");
    assert_eq!(metric(&admin, "tailgate_spans_rescued_total").await?, 4.0);
    app.shutdown().await;
    assert_eq!(capture.spans().len(), 5, "every span once");
    Ok(())
}

#[tokio::test]
async fn without_the_ring_rescue_is_refused_with_409() -> anyhow::Result<()> {
    let capture = CaptureServer::start().await?;
    let app = TestConfig::passthrough_to(capture.grpc_endpoint())
        .start()
        .await?;
    let (code, body) = post(&app.admin_endpoint(), r#"{"trace_ids": ["1"]}"#).await?;
    assert_eq!(code, 409, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or("")
            .contains("second_chance"),
        "{body}"
    );
    app.shutdown().await;
    Ok(())
}
