use super::*;
use crate::otlp::scan_export_request;
use crate::plugin::{EditAction, FieldKind, FieldRef, PluginFailure, RedactionEdit};
use crate::redact::{RedactionSettings, RedactorRule, Redactors, TraceRedactor};
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
        m.topology.observe(&checkout_trace(), &Redactors::none());
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

/// `i` in base 26 with the letters a-z: a distinct name that no template touches.
fn letters(mut i: u64) -> String {
    let mut s = String::new();
    loop {
        s.push((b'a' + (i % 26) as u8) as char);
        i /= 26;
        if i == 0 {
            return s;
        }
    }
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
                &format!("GET /item/{}", letters(i)),
                SpanKind::Server,
                1,
                false,
            )],
        )]);
        m.topology.observe(&trace, &Redactors::none());
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
            r#"tailgate_span_calls_total{service="__overflow__",operation="__overflow__",span_kind="server"}"#
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
    m.topology.observe(&checkout_trace(), &Redactors::none());
    assert!(!m.encode().contains("tailgate_span_calls_total{"));
    assert!(m.topology.graph().edges.is_empty());
}

#[test]
fn ids_and_emails_in_span_names_become_one_templated_series() {
    let m = crate::metrics::Metrics::new();
    for i in 0..200u64 {
        let name = match i % 2 {
            0 => format!("GET /api/users/user{i}@example.com"),
            _ => format!("GET /api/orders/{}", 100_000 + i),
        };
        let trace = records(vec![(
            "svc",
            vec![sp(1, 0, &name, SpanKind::Server, 1, false)],
        )]);
        m.topology.observe(&trace, &Redactors::none());
    }
    let text = m.encode();
    assert!(!text.contains("@example.com"), "{text}");
    assert_eq!(
        line_value(
            &text,
            r#"tailgate_span_calls_total{service="svc",operation="GET /api/users/{email}",span_kind="server"}"#
        ),
        Some(100.0)
    );
    assert_eq!(
        line_value(
            &text,
            r#"tailgate_span_calls_total{service="svc",operation="GET /api/orders/{n}",span_kind="server"}"#
        ),
        Some(100.0)
    );
    assert!(line_value(&text, "tailgate_topology_overflow_total").is_none());
    // Two series, two templates and one service checked once each, never per span.
    assert_eq!(
        line_value(
            &text,
            r#"tailgate_topology_label_checks_total{outcome="unchanged"}"#
        ),
        Some(3.0)
    );
}

/// A redactor that replaces every name, service name and peer attribute containing `secret` with
/// `[hidden]`, and fails when one contains `boom`; it counts its calls.
struct HideSecrets(std::sync::atomic::AtomicUsize);

impl TraceRedactor for HideSecrets {
    fn redact(
        &self,
        _: crate::otlp::TraceId,
        spans: &[SpanRecord],
    ) -> Result<Vec<RedactionEdit>, PluginFailure> {
        self.0.fetch_add(1, Ordering::Relaxed);
        let layout = crate::plugin::layout(spans);
        let mut edits = Vec::new();
        let mut hide = |kind, owner: usize, index: usize, key: &str, value: &str| {
            if value.contains("boom") {
                return Err(PluginFailure::Trap("boom".into()));
            }
            if value.contains("secret") {
                edits.push(RedactionEdit {
                    field: FieldRef {
                        kind,
                        owner: owner as u32,
                        item: 0,
                        attribute_index: index as u32,
                        key: key.into(),
                        is_string: true,
                        value_len: value.len() as u32,
                    },
                    action: EditAction::Replace("[hidden]".into()),
                    reason: Some("secret".into()),
                });
            }
            Ok(())
        };
        let mut resources_done = std::collections::HashSet::new();
        for (i, s) in spans.iter().enumerate() {
            hide(FieldKind::SpanName, i, 0, "", s.name())?;
            for (j, a) in s.attributes().enumerate() {
                hide(
                    FieldKind::SpanAttribute,
                    i,
                    j,
                    a.key,
                    a.value.as_str().unwrap_or(""),
                )?;
            }
            let r = layout.span_resource[i] as usize;
            if resources_done.insert(r) {
                for (j, a) in
                    crate::otlp::resource_attributes(&s.origin.resource_fields).enumerate()
                {
                    hide(
                        FieldKind::ResourceAttribute,
                        r,
                        j,
                        a.key,
                        a.value.as_str().unwrap_or(""),
                    )?;
                }
            }
        }
        Ok(edits)
    }
}

fn hiding() -> (Arc<HideSecrets>, Redactors) {
    let r = Arc::new(HideSecrets(Default::default()));
    let redactors = Redactors::new(
        vec![RedactorRule {
            name: "hide".into(),
            redactor: r.clone(),
        }],
        RedactionSettings::default(),
        crate::config::RedactorFailurePolicy::StrictScrub,
    );
    (r, redactors)
}

#[test]
fn labels_and_graph_nodes_pass_the_redactors_once_per_value() {
    let m = crate::metrics::Metrics::new();
    let (calls, redactors) = hiding();
    let trace = || {
        let call = sp(2, 1, "POST /pay", SpanKind::Client, 3, false);
        let mut admin = sp(5, 1, "GET /secret-admin", SpanKind::Client, 3, false);
        admin
            .attributes
            .push(kv_str("server.address", "secret.internal"));
        let mut db = sp(4, 3, "SELECT", SpanKind::Client, 1, false);
        db.attributes.push(kv_str("db.system.name", "boom-db"));
        records(vec![
            (
                "secret-service",
                vec![
                    sp(1, 0, "GET /secret/reports", SpanKind::Server, 5, false),
                    call,
                    admin,
                ],
            ),
            (
                "payments",
                vec![sp(3, 2, "POST /pay", SpanKind::Server, 2, false), db],
            ),
        ])
    };
    for _ in 0..5 {
        m.topology.observe(&trace(), &redactors);
    }
    let text = m.encode();
    let graph = serde_json::to_string(&m.topology.graph()).expect("json");
    for out in [&text, &graph] {
        assert!(!out.contains("secret"), "{out}");
        assert!(!out.contains("boom"), "{out}");
    }
    assert_eq!(
        line_value(
            &text,
            r#"tailgate_span_calls_total{service="[hidden]",operation="[hidden]",span_kind="server"}"#
        ),
        Some(5.0)
    );
    assert_eq!(
        line_value(
            &text,
            r#"traces_service_graph_request_total{client="[hidden]",server="payments",connection_type=""}"#
        ),
        Some(5.0)
    );
    // The redactor failed on the database's name: the node fails closed.
    assert_eq!(
        line_value(
            &text,
            r#"traces_service_graph_request_total{client="payments",server="{redacted}",connection_type="database"}"#
        ),
        Some(5.0)
    );
    assert!(
        line_value(
            &text,
            r#"tailgate_topology_label_checks_total{outcome="failed"}"#
        )
        .is_some_and(|n| n >= 1.0)
    );
    assert!(
        line_value(
            &text,
            r#"tailgate_topology_label_checks_total{outcome="redacted"}"#
        )
        .is_some_and(|n| n >= 3.0)
    );
    // Checked when the series were created, not per trace.
    let after_first = calls.0.load(Ordering::Relaxed);
    m.topology.observe(&trace(), &redactors);
    assert_eq!(calls.0.load(Ordering::Relaxed), after_first);
    assert!(after_first <= 8, "{after_first} redactor calls");
    let g = m.topology.graph();
    assert_eq!(g.nodes, vec!["[hidden]", "payments", "{redacted}"]);
    assert_eq!(g.edges.len(), 3, "{g:?}");
    assert_eq!(
        m.topology.service_label("secret-service").as_deref(),
        Some("[hidden]")
    );
    assert_eq!(m.topology.service_label("never-seen"), None);
}

#[test]
fn overflowing_operations_are_neither_cached_nor_checked() {
    let m = crate::metrics::Metrics::with_topology(&TopologyConfig {
        max_series: 3,
        ..TopologyConfig::default()
    });
    let (calls, redactors) = hiding();
    for i in 0..50u64 {
        let trace = records(vec![(
            "svc",
            vec![sp(
                1,
                0,
                &format!("op {}", letters(i)),
                SpanKind::Server,
                1,
                false,
            )],
        )]);
        m.topology.observe(&trace, &redactors);
    }
    let text = m.encode();
    assert_eq!(
        line_value(&text, r#"tailgate_topology_overflow_total{kind="series"}"#),
        Some(47.0)
    );
    assert!(calls.0.load(Ordering::Relaxed) <= 3, "one call per series");
}
