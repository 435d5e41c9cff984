use super::*;
use crate::otlp::scan_export_request;
use crate::testing::{kv_str, span_in};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::{Span, Status, span::SpanKind, status};
use prost::Message;

const MS: u64 = 1_000_000;

fn sp(id: u64, parent: u64, name: &str, kind: SpanKind, ms: u64, error: bool) -> Span {
    let mut s = span_in(7, id, parent, name, 1_000 * MS, 1_000 * MS + ms * MS);
    s.kind = kind as i32;
    if error {
        s.status = Some(Status {
            message: "boom".into(),
            code: status::StatusCode::Error as i32,
        });
    }
    s
}

/// Encodes spans per service (one request each) and scans them back into records.
fn records(parts: Vec<(&str, Vec<Span>)>) -> Vec<SpanRecord> {
    let mut out = Vec::new();
    for (service, spans) in parts {
        let mut req: ExportTraceServiceRequest = crate::testing::request(service, spans);
        req.resource_spans[0].scope_spans[0].scope = None;
        let body = bytes::Bytes::from(req.encode_to_vec());
        out.extend(
            scan_export_request(&body)
                .expect("valid")
                .spans
                .into_iter()
                .map(|(_, s)| s),
        );
    }
    out
}

/// frontend GET /checkout (server, 120 ms)
///   -> frontend POST /pay (client, 80 ms) -> payments POST /pay (server, 70 ms, error)
///        -> payments SELECT cards (client, 30 ms, db.system.name=postgresql, no instrumented child)
///   -> frontend render (internal, 5 ms)
fn checkout_trace() -> Vec<SpanRecord> {
    let mut select = sp(4, 3, "SELECT cards", SpanKind::Client, 30, false);
    select
        .attributes
        .push(kv_str("db.system.name", "postgresql"));
    records(vec![
        (
            "frontend",
            vec![
                sp(1, 0, "GET /checkout", SpanKind::Server, 120, false),
                sp(2, 1, "POST /pay", SpanKind::Client, 80, false),
                sp(5, 1, "render", SpanKind::Internal, 5, false),
            ],
        ),
        (
            "payments",
            vec![sp(3, 2, "POST /pay", SpanKind::Server, 70, true), select],
        ),
    ])
}

fn line_value(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[test]
fn red_metrics_and_edges_match_a_hand_count() {
    let m = crate::metrics::Metrics::new();
    for _ in 0..3 {
        m.topology.observe(&checkout_trace());
    }
    let text = m.encode();
    let get = |p: &str| line_value(&text, p).unwrap_or_else(|| panic!("no `{p}` in\n{text}"));
    assert_eq!(
        get(
            r#"tailgate_span_calls_total{service="frontend",operation="GET /checkout",span_kind="server"}"#
        ),
        3.0
    );
    assert_eq!(
        get(
            r#"tailgate_span_calls_total{service="payments",operation="POST /pay",span_kind="server"}"#
        ),
        3.0
    );
    assert_eq!(
        get(
            r#"tailgate_span_errors_total{service="payments",operation="POST /pay",span_kind="server"}"#
        ),
        3.0
    );
    assert!(
        line_value(&text, r#"tailgate_span_errors_total{service="frontend""#).is_none(),
        "no errors in frontend"
    );
    // 120 ms falls in the 0.25 s bucket, not the 0.1 s one.
    assert_eq!(
        get(
            r#"tailgate_span_duration_seconds_bucket{le="0.1",service="frontend",operation="GET /checkout",span_kind="server"}"#
        ),
        0.0
    );
    assert_eq!(
        get(
            r#"tailgate_span_duration_seconds_bucket{le="0.25",service="frontend",operation="GET /checkout",span_kind="server"}"#
        ),
        3.0
    );
    assert_eq!(
        get(
            r#"traces_service_graph_request_total{client="frontend",server="payments",connection_type=""}"#
        ),
        3.0
    );
    assert_eq!(
        get(
            r#"traces_service_graph_request_failed_total{client="frontend",server="payments",connection_type=""}"#
        ),
        3.0
    );
    assert_eq!(
        get(
            r#"traces_service_graph_request_total{client="payments",server="postgresql",connection_type="database"}"#
        ),
        3.0
    );
    assert!(
        line_value(
            &text,
            r#"traces_service_graph_request_failed_total{client="payments",server="postgresql""#
        )
        .is_none()
    );
    assert_eq!(
        get(
            r#"traces_service_graph_request_server_seconds_bucket{le="0.1",client="frontend",server="payments",connection_type=""}"#
        ),
        3.0,
        "server side took 70 ms"
    );
    let g = m.topology.graph();
    assert_eq!(g.nodes, vec!["frontend", "payments", "postgresql"]);
    assert_eq!(g.edges.len(), 2);
    assert_eq!((g.edges[0].requests, g.edges[0].failed), (3, 3));
    assert!((g.edges[0].mean_server_seconds - 0.07).abs() < 1e-9);
    // Same-service parent/child pairs are not edges; internal spans are not edges.
    assert!(!text.contains(r#"client="frontend",server="frontend""#));
}

#[test]
fn cardinality_is_bounded_under_a_flood_of_span_names() {
    let m = crate::metrics::Metrics::with_topology(&TopologyConfig {
        max_series: 50,
        ..TopologyConfig::default()
    });
    for i in 0..500u64 {
        let trace = records(vec![(
            "svc",
            vec![sp(
                1,
                0,
                &format!("GET /item/{i}"),
                SpanKind::Server,
                1,
                false,
            )],
        )]);
        m.topology.observe(&trace);
    }
    let text = m.encode();
    let series = text
        .lines()
        .filter(|l| l.starts_with("tailgate_span_calls_total{"))
        .count();
    assert_eq!(series, 51, "50 series plus the overflow one");
    assert_eq!(
        line_value(
            &text,
            r#"tailgate_span_calls_total{service="svc",operation="__overflow__",span_kind="server"}"#
        ),
        Some(450.0)
    );
    assert_eq!(
        line_value(&text, r#"tailgate_topology_overflow_total{kind="series"}"#),
        Some(450.0)
    );
}

#[test]
fn disabled_computes_nothing() {
    let m = crate::metrics::Metrics::with_topology(&TopologyConfig {
        enabled: false,
        ..TopologyConfig::default()
    });
    m.topology.observe(&checkout_trace());
    assert!(!m.encode().contains("tailgate_span_calls_total{"));
    assert!(m.topology.graph().edges.is_empty());
}
