//! Turns buffered spans into what crosses the plugin boundary for samplers: the trace summary, the
//! declared attribute projection and the full trace (for plugins that ask for it), with the value
//! conversions and the trace layout (resource and scope numbering) the redactor packing shares
//! ([`super::packing`]).
//!
//! The summary and projection read the encoded spans in place (no protobuf decode); the full trace
//! decodes each span with `prost`, which is fine because it is the slow path by design.

use super::bindings::types::{
    Attribute, AttributeLevel, AttributeValue, InstrumentationScope, MapEntry, ProjectedAttribute,
    RootSpan, ScalarValue, Span, SpanEvent, SpanKind, SpanLink, StatusCode as WitStatus, Trace,
    TraceId as WitTraceId, TraceSummary,
};
use crate::otlp::{self, AnyValueRef, KeyFinder, SpanRecord, StatusCode, TraceId};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span as ProtoSpan};
use prost::Message;
use std::fmt::Write as _;

/// The attribute keys a plugin declared in its `interest`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Projection {
    pub span_keys: Vec<String>,
    pub resource_keys: Vec<String>,
    pub scope_keys: Vec<String>,
}

impl Projection {
    /// True when nothing is projected (the call carries the summary only).
    pub fn is_empty(&self) -> bool {
        self.span_keys.is_empty() && self.resource_keys.is_empty() && self.scope_keys.is_empty()
    }
}

fn wit_trace_id(id: TraceId) -> WitTraceId {
    WitTraceId {
        hi: (id >> 64) as u64,
        lo: id as u64,
    }
}

fn wit_status(s: StatusCode) -> WitStatus {
    match s {
        StatusCode::Unset => WitStatus::Unset,
        StatusCode::Ok => WitStatus::Ok,
        StatusCode::Error => WitStatus::Error,
    }
}

fn wit_kind(k: i32) -> SpanKind {
    match k {
        1 => SpanKind::Internal,
        2 => SpanKind::Server,
        3 => SpanKind::Client,
        4 => SpanKind::Producer,
        5 => SpanKind::Consumer,
        _ => SpanKind::Unspecified,
    }
}

/// The low 56 bits of a trace id: its W3C randomness.
pub fn randomness(id: TraceId) -> u64 {
    (id as u64) & ((1 << 56) - 1)
}

/// A trace's randomness as the OpenTelemetry probability sampling specification defines it: the
/// explicit `rv` of its (first span's) `tracestate` when there is one, else the trace id's low 56 bits.
/// A head sampler that drew its decision on `rv` is then consistent with the samplers here.
pub fn trace_randomness(id: TraceId, spans: &[SpanRecord]) -> u64 {
    spans
        .first()
        .and_then(|s| explicit_randomness(crate::otlp::span_trace_state(&s.raw)))
        .unwrap_or_else(|| randomness(id))
}

/// The `rv` (14 hex digits) of a `tracestate`'s `ot` entry, if well formed.
pub fn explicit_randomness(tracestate: &str) -> Option<u64> {
    if !tracestate.contains("rv:") {
        return None;
    }
    let rv = tracestate
        .split(',')
        .map(str::trim)
        .find_map(|e| e.strip_prefix("ot="))?
        .split(';')
        .find_map(|s| s.strip_prefix("rv:"))?;
    if rv.len() != 14 || !rv.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(rv, 16).ok()
}

/// Computes the summary of a trace. `now_unix_nano` is the host's clock at call time.
pub fn summary(trace_id: TraceId, spans: &[SpanRecord], now_unix_nano: u64) -> TraceSummary {
    let mut start = u64::MAX;
    let mut end = 0u64;
    let mut errors = 0u32;
    let mut root: Option<&SpanRecord> = None;
    let mut earliest: Option<&SpanRecord> = None;
    // Distinct service names; traces touch a handful of services, so a linear scan beats hashing.
    let mut services: Vec<&str> = Vec::new();
    for s in spans {
        start = start.min(s.start_unix_nano);
        end = end.max(s.end_unix_nano);
        if s.status == StatusCode::Error {
            errors += 1;
        }
        if s.is_root() && root.is_none_or(|r| s.start_unix_nano < r.start_unix_nano) {
            root = Some(s);
        }
        if earliest.is_none_or(|e| s.start_unix_nano < e.start_unix_nano) {
            earliest = Some(s);
        }
        let svc: &str = &s.origin.service_name;
        if !services.contains(&svc) {
            services.push(svc);
        }
    }
    if spans.is_empty() {
        start = 0;
    }
    let service_name = root
        .or(earliest)
        .map(|s| s.origin.service_name.to_string())
        .unwrap_or_default();
    TraceSummary {
        trace_id: wit_trace_id(trace_id),
        randomness: trace_randomness(trace_id, spans),
        span_count: u32::try_from(spans.len()).unwrap_or(u32::MAX),
        error_span_count: errors,
        start_unix_nano: start,
        end_unix_nano: end,
        duration_nanos: end.saturating_sub(start),
        root: root.map(|r| RootSpan {
            name: r.name().to_owned(),
            kind: wit_kind(i32::from(r.kind)),
            status: wit_status(r.status),
            duration_nanos: r.duration_nanos(),
        }),
        service_name,
        service_count: services.iter().filter(|s| !s.is_empty()).count() as u32,
        now_unix_nano,
    }
}

/// The values of the projected keys present in the trace, in span order. Resource and scope values are
/// reported once per distinct resource/scope, on the first span carrying it.
#[cfg(test)]
pub fn project(p: &Projection, spans: &[SpanRecord]) -> Vec<ProjectedAttribute> {
    project_with(p, &KeyFinder::new(&p.span_keys), spans)
}

/// [`project`] with the span keys' finder built once (at plugin load) rather than per call.
pub fn project_with(
    p: &Projection,
    span_finder: &KeyFinder,
    spans: &[SpanRecord],
) -> Vec<ProjectedAttribute> {
    let mut out = Vec::new();
    if p.is_empty() {
        return out;
    }
    let mut seen_resources: Vec<(*const u8, usize)> = Vec::new();
    let mut seen_scopes: Vec<(*const u8, usize)> = Vec::new();
    for (i, s) in spans.iter().enumerate() {
        let span_index = i as u32;
        if !span_finder.is_empty() {
            // Looks for the keys' bytes first: most spans carry none of them and are not walked.
            span_finder.span_attributes(&s.raw, |k, value| {
                out.push(ProjectedAttribute {
                    span_index,
                    level: AttributeLevel::Span,
                    key_index: k as u32,
                    value: value_from_ref(value),
                })
            });
        }
        if !p.resource_keys.is_empty() {
            let r = &s.origin.resource_fields;
            let id = (r.as_ptr(), r.len());
            if !seen_resources.contains(&id) {
                seen_resources.push(id);
                for (k, value) in otlp::resource_attributes(r).matching(&p.resource_keys) {
                    out.push(ProjectedAttribute {
                        span_index,
                        level: AttributeLevel::Resource,
                        key_index: k as u32,
                        value: value_from_ref(value),
                    });
                }
            }
        }
        if !p.scope_keys.is_empty() {
            let sc = &s.origin.scope_fields;
            let id = (sc.as_ptr(), sc.len());
            if !seen_scopes.contains(&id) {
                seen_scopes.push(id);
                for (k, value) in otlp::scope_attributes(sc).matching(&p.scope_keys) {
                    out.push(ProjectedAttribute {
                        span_index,
                        level: AttributeLevel::Scope,
                        key_index: k as u32,
                        value: value_from_ref(value),
                    });
                }
            }
        }
    }
    out
}

fn scalar_from_ref(v: AnyValueRef<'_>) -> Option<ScalarValue> {
    Some(match v {
        AnyValueRef::Empty => ScalarValue::Empty,
        AnyValueRef::String(s) => ScalarValue::Str(s.to_owned()),
        AnyValueRef::Bool(b) => ScalarValue::Boolean(b),
        AnyValueRef::Int(i) => ScalarValue::Int(i),
        AnyValueRef::Double(d) => ScalarValue::Double(d),
        AnyValueRef::Bytes(b) => ScalarValue::Bytes(b.to_vec()),
        AnyValueRef::Array(_) | AnyValueRef::KvList(_) => return None,
    })
}

/// Converts a borrowed OTLP value into the WIT value.
pub fn value_from_ref(v: AnyValueRef<'_>) -> AttributeValue {
    match v {
        AnyValueRef::Empty => AttributeValue::Empty,
        AnyValueRef::String(s) => AttributeValue::Str(s.to_owned()),
        AnyValueRef::Bool(b) => AttributeValue::Boolean(b),
        AnyValueRef::Int(i) => AttributeValue::Int(i),
        AnyValueRef::Double(d) => AttributeValue::Double(d),
        AnyValueRef::Bytes(b) => AttributeValue::Bytes(b.to_vec()),
        AnyValueRef::Array(_) => match v
            .array_items()
            .map(scalar_from_ref)
            .collect::<Option<Vec<_>>>()
        {
            Some(items) => AttributeValue::Array(items),
            None => AttributeValue::NestedJson(json_of_ref(v)),
        },
        AnyValueRef::KvList(_) => {
            let entries = v
                .kvlist_items()
                .map(|kv| {
                    scalar_from_ref(kv.value).map(|value| MapEntry {
                        key: kv.key.to_owned(),
                        value,
                    })
                })
                .collect::<Option<Vec<_>>>();
            match entries {
                Some(e) => AttributeValue::Kvlist(e),
                None => AttributeValue::NestedJson(json_of_ref(v)),
            }
        }
    }
}

/// JSON text of a borrowed value (see `attribute-value.nested-json` in the WIT).
pub fn json_of_ref(v: AnyValueRef<'_>) -> String {
    let mut out = String::new();
    write_json_ref(&mut out, v);
    out
}

fn write_json_ref(out: &mut String, v: AnyValueRef<'_>) {
    match v {
        AnyValueRef::Empty => out.push_str("null"),
        AnyValueRef::String(s) => write_json_str(out, s),
        AnyValueRef::Bool(b) => out.push_str(if b { "true" } else { "false" }),
        AnyValueRef::Int(i) => {
            let _ = write!(out, "{i}");
        }
        AnyValueRef::Double(d) => write_json_f64(out, d),
        AnyValueRef::Bytes(b) => {
            out.push('"');
            base64(out, b);
            out.push('"');
        }
        AnyValueRef::Array(_) => {
            out.push('[');
            for (i, item) in v.array_items().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json_ref(out, item);
            }
            out.push(']');
        }
        AnyValueRef::KvList(_) => {
            out.push('{');
            for (i, kv) in v.kvlist_items().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json_str(out, kv.key);
                out.push(':');
                write_json_ref(out, kv.value);
            }
            out.push('}');
        }
    }
}

fn write_json_f64(out: &mut String, d: f64) {
    if d.is_finite() {
        let _ = write!(out, "{d}");
    } else {
        // JSON has no NaN/infinity; OTLP/JSON writes them as strings.
        let _ = write!(out, "\"{d}\"");
    }
}

fn write_json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        push_json_escaped(out, c);
    }
    out.push('"');
}

/// One character as [`json_of_ref`] writes it inside a JSON string.
pub(crate) fn push_json_escaped(out: &mut String, c: char) {
    match c {
        '"' => out.push_str("\\\""),
        '\\' => out.push_str("\\\\"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        c if (c as u32) < 0x20 => {
            let _ = write!(out, "\\u{:04x}", c as u32);
        }
        c => out.push(c),
    }
}

/// Standard padded base64, as [`json_of_ref`] writes bytes.
pub(crate) fn base64(out: &mut String, bytes: &[u8]) {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> shift) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
}

// ---- prost values (full trace, packing) ----

/// Re-encodes an owned value so the borrowed converters can be reused for the rare nested case.
fn nested_json_of(v: &AnyValue) -> String {
    let bytes = v.encode_to_vec();
    json_of_ref(AnyValueRef::decode(&bytes))
}

fn scalar_from_proto(v: &AnyValue) -> Option<ScalarValue> {
    use any_value::Value;
    Some(match &v.value {
        // `string_value_strindex` only appears in profiles dictionaries, never in spans.
        None | Some(Value::StringValueStrindex(_)) => ScalarValue::Empty,
        Some(Value::StringValue(s)) => ScalarValue::Str(s.clone()),
        Some(Value::BoolValue(b)) => ScalarValue::Boolean(*b),
        Some(Value::IntValue(i)) => ScalarValue::Int(*i),
        Some(Value::DoubleValue(d)) => ScalarValue::Double(*d),
        Some(Value::BytesValue(b)) => ScalarValue::Bytes(b.clone()),
        Some(Value::ArrayValue(_) | Value::KvlistValue(_)) => return None,
    })
}

/// Converts an owned OTLP value into the WIT value.
pub fn value_from_proto(v: &AnyValue) -> AttributeValue {
    use any_value::Value;
    match &v.value {
        None | Some(Value::StringValueStrindex(_)) => AttributeValue::Empty,
        Some(Value::StringValue(s)) => AttributeValue::Str(s.clone()),
        Some(Value::BoolValue(b)) => AttributeValue::Boolean(*b),
        Some(Value::IntValue(i)) => AttributeValue::Int(*i),
        Some(Value::DoubleValue(d)) => AttributeValue::Double(*d),
        Some(Value::BytesValue(b)) => AttributeValue::Bytes(b.clone()),
        Some(Value::ArrayValue(a)) => match a
            .values
            .iter()
            .map(scalar_from_proto)
            .collect::<Option<Vec<_>>>()
        {
            Some(items) => AttributeValue::Array(items),
            None => AttributeValue::NestedJson(nested_json_of(v)),
        },
        Some(Value::KvlistValue(l)) => {
            let entries = l
                .values
                .iter()
                .map(|kv| {
                    let value = match &kv.value {
                        Some(v) => scalar_from_proto(v)?,
                        None => ScalarValue::Empty,
                    };
                    Some(MapEntry {
                        key: kv.key.clone(),
                        value,
                    })
                })
                .collect::<Option<Vec<_>>>();
            match entries {
                Some(e) => AttributeValue::Kvlist(e),
                None => AttributeValue::NestedJson(nested_json_of(v)),
            }
        }
    }
}

fn attributes_from_proto(kvs: &[KeyValue]) -> Vec<Attribute> {
    kvs.iter()
        .map(|kv| Attribute {
            key: kv.key.clone(),
            value: kv
                .value
                .as_ref()
                .map(value_from_proto)
                .unwrap_or(AttributeValue::Empty),
        })
        .collect()
}

/// Which distinct resource and scope each span belongs to, by index. Resources are told apart by their
/// encoded bytes, scopes by their resource and encoded bytes, in order of first appearance.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TraceLayout {
    /// For each span, the index of its resource.
    pub span_resource: Vec<u32>,
    /// For each span, the index of its scope.
    pub span_scope: Vec<u32>,
    /// For each resource index, the first span carrying it.
    pub resource_first_span: Vec<u32>,
    /// For each scope index, the first span carrying it.
    pub scope_first_span: Vec<u32>,
}

/// Computes the [`TraceLayout`] of a trace: the resource and scope numbering used by the full trace and
/// by the redactor's packed trace.
pub fn layout(spans: &[SpanRecord]) -> TraceLayout {
    let mut l = TraceLayout::default();
    let mut scope_keys: Vec<(u32, &[u8])> = Vec::new();
    for (i, s) in spans.iter().enumerate() {
        let r = &s.origin.resource_fields[..];
        let ri = match l
            .resource_first_span
            .iter()
            .position(|&f| &spans[f as usize].origin.resource_fields[..] == r)
        {
            Some(ri) => ri as u32,
            None => {
                l.resource_first_span.push(i as u32);
                (l.resource_first_span.len() - 1) as u32
            }
        };
        let sc = &s.origin.scope_fields[..];
        let si = match scope_keys.iter().position(|&(r2, b)| r2 == ri && b == sc) {
            Some(si) => si as u32,
            None => {
                scope_keys.push((ri, sc));
                l.scope_first_span.push(i as u32);
                (scope_keys.len() - 1) as u32
            }
        };
        l.span_resource.push(ri);
        l.span_scope.push(si);
    }
    l
}

fn decode_resource(fields: &[u8]) -> Vec<KeyValue> {
    ResourceSpans::decode(fields)
        .ok()
        .and_then(|r| r.resource)
        .map(|r| r.attributes)
        .unwrap_or_default()
}

fn decode_scope(fields: &[u8]) -> (String, String, Vec<KeyValue>) {
    ScopeSpans::decode(fields)
        .ok()
        .and_then(|s| s.scope)
        .map(|s| (s.name, s.version, s.attributes))
        .unwrap_or_default()
}

/// The whole trace as WIT records.
pub fn full_trace(spans: &[SpanRecord]) -> Trace {
    let l = layout(spans);
    let resources = l
        .resource_first_span
        .iter()
        .map(|&i| {
            attributes_from_proto(&decode_resource(&spans[i as usize].origin.resource_fields))
        })
        .collect();
    let scopes = l
        .scope_first_span
        .iter()
        .map(|&i| {
            let (name, version, attrs) = decode_scope(&spans[i as usize].origin.scope_fields);
            InstrumentationScope {
                name,
                version,
                attributes: attributes_from_proto(&attrs),
            }
        })
        .collect();
    let spans = spans
        .iter()
        .enumerate()
        .map(|(i, s)| {
            // Spans were validated by the scan; a decode failure here would be a scan bug, and an empty
            // span is the safe answer.
            let p = ProtoSpan::decode(&s.raw[..]).unwrap_or_default();
            let status = p.status.as_ref();
            Span {
                span_id: s.span_id,
                parent_span_id: s.parent_span_id,
                name: p.name,
                kind: wit_kind(p.kind),
                start_unix_nano: s.start_unix_nano,
                end_unix_nano: s.end_unix_nano,
                status: wit_status(s.status),
                status_message: status.map(|st| st.message.clone()).unwrap_or_default(),
                trace_state: p.trace_state,
                attributes: attributes_from_proto(&p.attributes),
                events: p
                    .events
                    .iter()
                    .map(|e| SpanEvent {
                        time_unix_nano: e.time_unix_nano,
                        name: e.name.clone(),
                        attributes: attributes_from_proto(&e.attributes),
                    })
                    .collect(),
                links: p
                    .links
                    .iter()
                    .map(|k| SpanLink {
                        trace_id: wit_trace_id(id_from_bytes(&k.trace_id)),
                        span_id: u64_from_bytes(&k.span_id),
                        trace_state: k.trace_state.clone(),
                        attributes: attributes_from_proto(&k.attributes),
                    })
                    .collect(),
                resource_index: l.span_resource[i],
                scope_index: l.span_scope[i],
            }
        })
        .collect();
    Trace {
        spans,
        resources,
        scopes,
    }
}

fn id_from_bytes(b: &[u8]) -> u128 {
    b.try_into().map(u128::from_be_bytes).unwrap_or(0)
}

fn u64_from_bytes(b: &[u8]) -> u64 {
    b.try_into().map(u64::from_be_bytes).unwrap_or(0)
}
