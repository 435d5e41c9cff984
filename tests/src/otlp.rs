//! OTLP helpers for assertions: flatten requests to spans with their resource and scope, strip what
//! tailgate adds on purpose, and compare what arrived with what the client sent.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use std::collections::{BTreeMap, BTreeSet};

/// One span with the resource and scope it was sent under.
#[derive(Debug, Clone, PartialEq)]
pub struct FlatSpan {
    pub resource: Option<Resource>,
    pub resource_schema_url: String,
    pub scope: Option<InstrumentationScope>,
    pub scope_schema_url: String,
    pub span: Span,
}

impl FlatSpan {
    /// The span's `service.name` resource attribute, or "".
    pub fn service(&self) -> String {
        self.resource
            .as_ref()
            .and_then(|r| string_attr(&r.attributes, "service.name"))
            .unwrap_or_default()
    }
}

/// Every span of a request, in order.
pub fn flatten(request: &ExportTraceServiceRequest) -> Vec<FlatSpan> {
    let mut out = Vec::new();
    for rs in &request.resource_spans {
        for ss in &rs.scope_spans {
            for span in &ss.spans {
                out.push(FlatSpan {
                    resource: rs.resource.clone(),
                    resource_schema_url: rs.schema_url.clone(),
                    scope: ss.scope.clone(),
                    scope_schema_url: ss.schema_url.clone(),
                    span: span.clone(),
                });
            }
        }
    }
    out
}

/// Lower-case hex of some bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses lower- or upper-case hex.
pub fn from_hex(s: &str) -> anyhow::Result<Vec<u8>> {
    let s = s.trim();
    anyhow::ensure!(s.len().is_multiple_of(2), "odd-length hex string");
    (0..s.len())
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(&s[i..i + 2], 16).map_err(|e| anyhow::anyhow!("bad hex at {i}: {e}"))
        })
        .collect()
}

/// Decodes a hex-encoded protobuf `ExportTraceServiceRequest` (as the Python scripts print it).
pub fn decode_hex_request(s: &str) -> anyhow::Result<ExportTraceServiceRequest> {
    Ok(ExportTraceServiceRequest::decode(&from_hex(s)?[..])?)
}

/// The value of a string attribute.
pub fn string_attr(attrs: &[KeyValue], key: &str) -> Option<String> {
    attrs.iter().find(|kv| kv.key == key).and_then(|kv| {
        match kv.value.as_ref()?.value.as_ref()? {
            any_value::Value::StringValue(s) => Some(s.clone()),
            _ => None,
        }
    })
}

/// The span as the client sent it: without the attributes tailgate adds to kept spans (`tailgate.*`)
/// and without the OpenTelemetry `ot` member of the tracestate (tailgate maintains the sampling
/// threshold there).
pub fn without_tailgate_annotations(span: &Span) -> Span {
    let mut s = span.clone();
    s.attributes.retain(|kv| !kv.key.starts_with("tailgate."));
    s.trace_state = s
        .trace_state
        .split(',')
        .map(str::trim)
        .filter(|m| !m.is_empty() && !m.starts_with("ot="))
        .collect::<Vec<_>>()
        .join(",");
    s
}

/// Resource attributes as a sorted map of key to debug-printed value (order-insensitive comparison).
pub fn resource_map(resource: Option<&Resource>) -> BTreeMap<String, String> {
    resource
        .map(|r| {
            r.attributes
                .iter()
                .map(|kv| (kv.key.clone(), format!("{:?}", kv.value)))
                .collect()
        })
        .unwrap_or_default()
}

/// Asserts that `arrived` holds every span of `expected` exactly once and nothing else, each span
/// identical to what the client sent (apart from tailgate's annotations), under the same resource and
/// scope.
pub fn assert_same_spans(expected: &[FlatSpan], arrived: &[FlatSpan]) {
    let ids = |spans: &[FlatSpan]| -> Vec<(Vec<u8>, Vec<u8>)> {
        spans
            .iter()
            .map(|s| (s.span.trace_id.clone(), s.span.span_id.clone()))
            .collect()
    };
    assert_unique(arrived);
    let want: BTreeSet<_> = ids(expected).into_iter().collect();
    let got: BTreeSet<_> = ids(arrived).into_iter().collect();
    let missing: Vec<String> = want
        .difference(&got)
        .map(|(t, s)| format!("{}/{}", hex(t), hex(s)))
        .collect();
    let extra: Vec<String> = got
        .difference(&want)
        .map(|(t, s)| format!("{}/{}", hex(t), hex(s)))
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing spans {missing:?}, unexpected spans {extra:?}"
    );

    for e in expected {
        let a = arrived
            .iter()
            .find(|a| a.span.trace_id == e.span.trace_id && a.span.span_id == e.span.span_id)
            .expect("checked above");
        let name = &e.span.name;
        assert_eq!(
            without_tailgate_annotations(&a.span),
            e.span,
            "span `{name}` changed on the way"
        );
        assert_eq!(
            resource_map(a.resource.as_ref()),
            resource_map(e.resource.as_ref()),
            "resource of span `{name}` changed on the way"
        );
        assert_eq!(
            a.scope, e.scope,
            "instrumentation scope of span `{name}` changed on the way"
        );
    }
}

/// Asserts that no (trace id, span id) arrived twice.
pub fn assert_unique(arrived: &[FlatSpan]) {
    let mut seen = BTreeMap::new();
    for s in arrived {
        *seen
            .entry((s.span.trace_id.clone(), s.span.span_id.clone()))
            .or_insert(0usize) += 1;
    }
    let dups: Vec<String> = seen
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|((t, s), n)| format!("{}/{} x{n}", hex(t), hex(s)))
        .collect();
    assert!(dups.is_empty(), "spans delivered more than once: {dups:?}");
}

/// Sums every sample of a Prometheus metric family (`name` with or without labels) in a text
/// exposition.
pub fn metric_sum(exposition: &str, name: &str) -> f64 {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let metric = series.split('{').next()?;
            (metric == name)
                .then(|| value.parse::<f64>().ok())
                .flatten()
        })
        .sum()
}
