//! Fixtures for tests in this crate and the end-to-end crate: small OTLP requests built with the
//! `opentelemetry-proto` types. Not part of the stable API.

pub mod pii_corpus;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue, any_value,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    ResourceSpans, ScopeSpans, Span, Status, span, status,
};

/// A string attribute.
pub fn kv_str(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

/// An integer attribute.
pub fn kv_int(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(value)),
        }),
        ..Default::default()
    }
}

/// A span of trace `0x0102..10` with the given span id (as repeated bytes), parent (0 = root) and name.
pub fn span(id: u8, parent: u8, name: &str) -> Span {
    Span {
        trace_id: (1..=16).collect(),
        span_id: vec![id; 8],
        parent_span_id: if parent == 0 { vec![] } else { vec![parent; 8] },
        name: name.into(),
        kind: span::SpanKind::Server as i32,
        start_time_unix_nano: 1_700_000_000_000_000_000 + u64::from(id) * 1000,
        end_time_unix_nano: 1_700_000_000_000_500_000 + u64::from(id) * 1000,
        ..Default::default()
    }
}

/// A span with an explicit trace id.
pub fn span_in(trace_id: u128, id: u64, parent: u64, name: &str, start: u64, end: u64) -> Span {
    Span {
        trace_id: trace_id.to_be_bytes().to_vec(),
        span_id: id.to_be_bytes().to_vec(),
        parent_span_id: if parent == 0 {
            vec![]
        } else {
            parent.to_be_bytes().to_vec()
        },
        name: name.into(),
        kind: span::SpanKind::Server as i32,
        start_time_unix_nano: start,
        end_time_unix_nano: end,
        ..Default::default()
    }
}

/// Wraps spans in one resource (with `service.name`) and one scope.
pub fn request(service: &str, spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv_str("service.name", service)],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "test".into(),
                    version: "1.0".into(),
                    ..Default::default()
                }),
                spans,
                schema_url: String::new(),
            }],
            schema_url: "https://opentelemetry.io/schemas/1.26.0".into(),
        }],
    }
}

/// A three-span request exercising every field: attributes of all kinds, an event, a link, an error
/// status.
pub fn sample_request() -> ExportTraceServiceRequest {
    let mut root = span(0x11, 0, "GET /checkout");
    root.attributes = vec![
        kv_str("http.method", "GET"),
        kv_int("http.response.status_code", 200),
        KeyValue {
            key: "tags".into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::ArrayValue(ArrayValue {
                    values: vec![
                        AnyValue {
                            value: Some(any_value::Value::BoolValue(true)),
                        },
                        AnyValue {
                            value: Some(any_value::Value::DoubleValue(1.5)),
                        },
                        AnyValue {
                            value: Some(any_value::Value::BytesValue(vec![0, 1, 2])),
                        },
                    ],
                })),
            }),
            ..Default::default()
        },
    ];
    root.trace_state = "vendor=abc".into();
    let mut child = span(0x22, 0x11, "SELECT orders");
    child.kind = span::SpanKind::Client as i32;
    child.events = vec![span::Event {
        time_unix_nano: 1_700_000_000_000_100_000,
        name: "retry".into(),
        attributes: vec![kv_int("attempt", 2)],
        dropped_attributes_count: 0,
    }];
    child.links = vec![span::Link {
        trace_id: vec![9; 16],
        span_id: vec![8; 8],
        trace_state: String::new(),
        attributes: vec![kv_str("link.kind", "follows")],
        dropped_attributes_count: 0,
        flags: 1,
    }];
    child.flags = 0x101;
    let mut failed = span(0x33, 0x11, "charge card");
    failed.status = Some(Status {
        message: "card declined".into(),
        code: status::StatusCode::Error as i32,
    });
    request("frontend", vec![root, child, failed])
}

/// A plugin component built by `scripts/build-plugins.sh` into `target/plugins/<name>.wasm`. Panics with
/// what to run when it is missing: the plugins are part of the build, so a test never skips them.
pub fn built_plugin(name: &str) -> std::path::PathBuf {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/plugins")
        .join(format!("{name}.wasm"));
    assert!(
        p.exists(),
        "{} is missing: run scripts/build-plugins.sh first",
        p.display()
    );
    p
}
