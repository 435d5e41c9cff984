//! The validating scan of an `ExportTraceServiceRequest` into span records (see the module header of
//! `otlp` for why this is not a `prost` decode).

use super::predicate::PredicateSet;
use super::wire::{Reader, WIRE_FIXED32, WIRE_FIXED64, WIRE_LEN, WIRE_VARINT};
use super::{Origin, SpanRecord, StatusCode, TraceId};
use bytes::Bytes;
use std::sync::Arc;

/// Deepest `AnyValue` nesting (arrays / key-value lists inside each other) that is accepted.
pub const MAX_VALUE_DEPTH: usize = 32;

/// Why a request body could not be read at all. The message names the place in the message.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("malformed OTLP trace request at {path}: {problem}")]
pub struct ScanError {
    /// Where in the message, e.g. `resource_spans[0].scope_spans[1].spans[3].name`.
    pub path: String,
    pub problem: String,
}

/// Why a single span was refused while the rest of its request was accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SpanRejection {
    /// Trace id missing, not 16 bytes, or all zero.
    InvalidTraceId,
    /// Span id missing, not 8 bytes, or all zero.
    InvalidSpanId,
    /// Parent span id present but not 8 bytes.
    InvalidParentSpanId,
}

impl SpanRejection {
    /// Label used in metrics and in `partial_success.error_message`.
    pub fn as_str(self) -> &'static str {
        match self {
            SpanRejection::InvalidTraceId => "invalid_trace_id",
            SpanRejection::InvalidSpanId => "invalid_span_id",
            SpanRejection::InvalidParentSpanId => "invalid_parent_span_id",
        }
    }
}

/// The accepted spans of a request, and what was refused.
#[derive(Debug, Default)]
pub struct ScannedRequest {
    pub spans: Vec<(TraceId, SpanRecord)>,
    /// Refused spans, by reason (each reason at most once, with its count).
    pub rejected: Vec<(SpanRejection, u64)>,
}

impl ScannedRequest {
    /// Total refused spans.
    pub fn rejected_count(&self) -> u64 {
        self.rejected.iter().map(|(_, n)| n).sum()
    }

    /// A human message for OTLP `partial_success.error_message`, or `None` when nothing was refused.
    pub fn rejection_message(&self) -> Option<String> {
        if self.rejected.is_empty() {
            return None;
        }
        let parts: Vec<String> = self
            .rejected
            .iter()
            .map(|(r, n)| format!("{n} span(s) with {}", r.as_str().replace('_', " ")))
            .collect();
        Some(format!("rejected {}", parts.join(", ")))
    }

    fn reject(&mut self, why: SpanRejection) {
        match self.rejected.iter_mut().find(|(r, _)| *r == why) {
            Some((_, n)) => *n += 1,
            None => self.rejected.push((why, 1)),
        }
    }
}

/// Scans and validates a protobuf `ExportTraceServiceRequest`. Span bytes are zero-copy slices of `body`.
/// Evaluates no predicates (every span's `pred_gen` is 0, so samplers walk them); ingest scans with the
/// policy's set ([`scan_export_request_with`]).
pub fn scan_export_request(body: &Bytes) -> Result<ScannedRequest, ScanError> {
    static NONE: std::sync::LazyLock<PredicateSet> =
        std::sync::LazyLock::new(PredicateSet::default);
    scan_export_request_with(body, &NONE)
}

/// [`scan_export_request`] evaluating the predicates of `preds`: each span's `pred_bits` get the bits of
/// the predicates that hold for it, its resource or its scope, and `pred_gen` the set's generation.
pub fn scan_export_request_with(
    body: &Bytes,
    preds: &PredicateSet,
) -> Result<ScannedRequest, ScanError> {
    let mut out = ScannedRequest::default();
    let mut path = Path::default();
    let mut r = Reader::new(body, 0);
    let mut rs_index = 0usize;
    while let Some((field, wire)) = r.key().map_err(|p| path.err(p))? {
        match (field, wire) {
            (1, WIRE_LEN) => {
                path.push("resource_spans", rs_index);
                let (start, end) = r.len_delimited().map_err(|p| path.err(p))?;
                scan_resource_spans(body, start, end, preds, &mut out, &mut path)?;
                path.pop();
                rs_index += 1;
            }
            _ => skip_field(&mut r, REQUEST_FIELDS, field, wire).map_err(|p| path.err(p))?,
        }
    }
    Ok(out)
}

fn scan_resource_spans(
    body: &Bytes,
    start: usize,
    end: usize,
    preds: &PredicateSet,
    out: &mut ScannedRequest,
    path: &mut Path,
) -> Result<(), ScanError> {
    // First pass: everything but scope_spans makes up the resource fields.
    let mut r = Reader::new(&body[..end], start);
    let mut resource_fields = Vec::new();
    let mut service_name = String::new();
    let mut scopes = Vec::new();
    loop {
        let field_start = r.pos;
        let Some((field, wire)) = r.key().map_err(|p| path.err(p))? else {
            break;
        };
        match (field, wire) {
            (2, WIRE_LEN) => scopes.push(r.len_delimited().map_err(|p| path.err(p))?),
            (1, WIRE_LEN) => {
                let (s, e) = r.len_delimited().map_err(|p| path.err(p))?;
                path.push("resource", NO_INDEX);
                service_name = validate_resource(&body[..e], s, path)?;
                path.pop();
                resource_fields.extend_from_slice(&body[field_start..e]);
            }
            (3, WIRE_LEN) => {
                let (s, e) = r.len_delimited().map_err(|p| path.err(p))?;
                check_utf8(&body[s..e]).map_err(|p| path.err_at("schema_url", p))?;
                resource_fields.extend_from_slice(&body[field_start..e]);
            }
            _ => {
                skip_field(&mut r, RESOURCE_SPANS_FIELDS, field, wire).map_err(|p| path.err(p))?;
                resource_fields.extend_from_slice(&body[field_start..r.pos]);
            }
        }
    }
    let resource_fields = Bytes::from(resource_fields);
    for (i, (s, e)) in scopes.into_iter().enumerate() {
        path.push("scope_spans", i);
        scan_scope_spans(
            body,
            s,
            e,
            &resource_fields,
            &service_name,
            preds,
            out,
            path,
        )?;
        path.pop();
    }
    Ok(())
}

// The scan's state travels as arguments (no per-call struct on this hot path).
#[allow(clippy::too_many_arguments)]
fn scan_scope_spans(
    body: &Bytes,
    start: usize,
    end: usize,
    resource_fields: &Bytes,
    service_name: &str,
    preds: &PredicateSet,
    out: &mut ScannedRequest,
    path: &mut Path,
) -> Result<(), ScanError> {
    let mut r = Reader::new(&body[..end], start);
    let mut scope_fields = Vec::new();
    let mut spans = Vec::new();
    loop {
        let field_start = r.pos;
        let Some((field, wire)) = r.key().map_err(|p| path.err(p))? else {
            break;
        };
        match (field, wire) {
            (2, WIRE_LEN) => spans.push(r.len_delimited().map_err(|p| path.err(p))?),
            (1, WIRE_LEN) => {
                let (s, e) = r.len_delimited().map_err(|p| path.err(p))?;
                path.push("scope", NO_INDEX);
                validate_scope(&body[..e], s, path)?;
                path.pop();
                scope_fields.extend_from_slice(&body[field_start..e]);
            }
            (3, WIRE_LEN) => {
                let (s, e) = r.len_delimited().map_err(|p| path.err(p))?;
                check_utf8(&body[s..e]).map_err(|p| path.err_at("schema_url", p))?;
                scope_fields.extend_from_slice(&body[field_start..e]);
            }
            _ => {
                skip_field(&mut r, SCOPE_SPANS_FIELDS, field, wire).map_err(|p| path.err(p))?;
                scope_fields.extend_from_slice(&body[field_start..r.pos]);
            }
        }
    }
    if spans.is_empty() {
        return Ok(());
    }
    let origin = Arc::new(Origin {
        resource_fields: resource_fields.clone(),
        scope_fields: Bytes::from(scope_fields),
        service_name: service_name.into(),
    });
    // Resource and scope predicates are evaluated once per origin; their bits go into every span.
    let origin_bits = if preds.is_empty() {
        0
    } else {
        preds.origin_bits(&origin)
    };
    out.spans.reserve(spans.len());
    for (i, (s, e)) in spans.into_iter().enumerate() {
        path.push("spans", i);
        match scan_span(body, s, e, preds, path)? {
            Ok((trace_id, mut rec)) => {
                rec.origin = origin.clone();
                rec.pred_bits |= origin_bits;
                out.spans.push((trace_id, rec));
            }
            Err(why) => out.reject(why),
        }
        path.pop();
    }
    Ok(())
}

/// Validates one span and extracts its index fields. The outer `Result` is a malformed message; the inner
/// one a well-formed span that is refused (bad ids).
#[allow(clippy::type_complexity)]
fn scan_span(
    body: &Bytes,
    start: usize,
    end: usize,
    preds: &PredicateSet,
    path: &mut Path,
) -> Result<Result<(TraceId, SpanRecord), SpanRejection>, ScanError> {
    let span_preds = preds.has_span_level();
    let mut pred_bits = 0u32;
    let mut r = Reader::new(&body[..end], start);
    let mut trace_id: Option<&[u8]> = None;
    let mut span_id: Option<&[u8]> = None;
    let mut parent: Option<&[u8]> = None;
    let mut name_at = (0u32, 0u32);
    let mut kind = 0u8;
    let mut status = StatusCode::Unset;
    let (mut start_ns, mut end_ns) = (0u64, 0u64);
    let (mut attr_i, mut event_i, mut link_i) = (0usize, 0usize, 0usize);
    while let Some((field, wire)) = r.key().map_err(|p| path.err(p))? {
        match (field, wire) {
            (1, WIRE_LEN) => trace_id = Some(r.bytes().map_err(|p| path.err_at("trace_id", p))?),
            (2, WIRE_LEN) => span_id = Some(r.bytes().map_err(|p| path.err_at("span_id", p))?),
            (3, WIRE_LEN) => {
                let b = r.bytes().map_err(|p| path.err_at("trace_state", p))?;
                check_utf8(b).map_err(|p| path.err_at("trace_state", p))?;
            }
            (4, WIRE_LEN) => {
                parent = Some(r.bytes().map_err(|p| path.err_at("parent_span_id", p))?)
            }
            (5, WIRE_LEN) => {
                let (s, e) = r.len_delimited().map_err(|p| path.err_at("name", p))?;
                check_utf8(&body[s..e]).map_err(|p| path.err_at("name", p))?;
                // Spans are capped far below 4 GiB by the body limit; the casts cannot truncate.
                name_at = ((s - start) as u32, (e - s) as u32);
            }
            (6, WIRE_VARINT) => {
                kind = r.varint().map_err(|p| path.err_at("kind", p))?.min(255) as u8
            }
            (7, WIRE_FIXED64) => {
                start_ns = r
                    .fixed64()
                    .map_err(|p| path.err_at("start_time_unix_nano", p))?
            }
            (8, WIRE_FIXED64) => {
                end_ns = r
                    .fixed64()
                    .map_err(|p| path.err_at("end_time_unix_nano", p))?
            }
            (9, WIRE_LEN) => {
                path.push("attributes", attr_i);
                let (s, e) = r.len_delimited().map_err(|p| path.err(p))?;
                let kv = validate_key_value(&body[..e], s, 0, path)?;
                // Predicate pushdown: the key was just read; most keys are rejected on their length.
                if span_preds
                    && let Some((key, _)) = kv
                    && preds.span_key_length_hit(key)
                {
                    pred_bits |= preds.span_attribute_bits(&body[s..e]);
                }
                path.pop();
                attr_i += 1;
            }
            (11, WIRE_LEN) => {
                path.push("events", event_i);
                let (s, e) = r.len_delimited().map_err(|p| path.err(p))?;
                validate_event(&body[..e], s, path)?;
                path.pop();
                event_i += 1;
            }
            (13, WIRE_LEN) => {
                path.push("links", link_i);
                let (s, e) = r.len_delimited().map_err(|p| path.err(p))?;
                validate_link(&body[..e], s, path)?;
                path.pop();
                link_i += 1;
            }
            (15, WIRE_LEN) => {
                let (s, e) = r.len_delimited().map_err(|p| path.err_at("status", p))?;
                path.push("status", NO_INDEX);
                status = validate_status(&body[..e], s, path)?;
                path.pop();
            }
            _ => skip_field(&mut r, SPAN_FIELDS, field, wire).map_err(|p| path.err(p))?,
        }
    }
    let Some(trace_id) = trace_id.and_then(id16).filter(|t| *t != 0) else {
        return Ok(Err(SpanRejection::InvalidTraceId));
    };
    let Some(span_id) = span_id.and_then(id8).filter(|s| *s != 0) else {
        return Ok(Err(SpanRejection::InvalidSpanId));
    };
    let parent_span_id = match parent {
        None | Some([]) => 0,
        Some(p) => match id8(p) {
            Some(p) => p,
            None => return Ok(Err(SpanRejection::InvalidParentSpanId)),
        },
    };
    Ok(Ok((
        trace_id,
        SpanRecord {
            raw: body.slice(start..end),
            origin: Origin::empty(),
            span_id,
            parent_span_id,
            start_unix_nano: start_ns,
            end_unix_nano: end_ns,
            name_at,
            kind,
            status,
            pred_bits,
            pred_gen: preds.generation(),
        },
    )))
}

fn validate_resource(buf: &[u8], start: usize, path: &mut Path) -> Result<String, ScanError> {
    let mut r = Reader::new(buf, start);
    let mut service = String::new();
    let mut i = 0;
    while let Some((field, wire)) = r.key().map_err(|p| path.err(p))? {
        match (field, wire) {
            (1, WIRE_LEN) => {
                path.push("attributes", i);
                let (s, e) = r.len_delimited().map_err(|p| path.err(p))?;
                if let Some(name) = validate_key_value(&buf[..e], s, 0, path)?
                    .filter(|(k, _)| *k == "service.name")
                    .and_then(|(_, v)| v)
                {
                    service = name.to_owned();
                }
                path.pop();
                i += 1;
            }
            (3, WIRE_LEN) => {
                // EntityRef { schema_url = 1; type = 2; repeated id_keys = 3; repeated description_keys = 4 }
                let (s, e) = r.len_delimited().map_err(|p| path.err(p))?;
                let mut er = Reader::new(&buf[..e], s);
                while let Some((f, w)) = er.key().map_err(|p| path.err(p))? {
                    if (1..=4).contains(&f) && w == WIRE_LEN {
                        let b = er.bytes().map_err(|p| path.err(p))?;
                        check_utf8(b).map_err(|p| path.err_at("entity_refs", p))?;
                    } else {
                        skip_field(&mut er, ENTITY_REF_FIELDS, f, w).map_err(|p| path.err(p))?;
                    }
                }
            }
            _ => skip_field(&mut r, RESOURCE_FIELDS, field, wire).map_err(|p| path.err(p))?,
        }
    }
    Ok(service)
}

fn validate_scope(buf: &[u8], start: usize, path: &mut Path) -> Result<(), ScanError> {
    let mut r = Reader::new(buf, start);
    let mut i = 0;
    while let Some((field, wire)) = r.key().map_err(|p| path.err(p))? {
        match (field, wire) {
            (1 | 2, WIRE_LEN) => {
                let b = r.bytes().map_err(|p| path.err(p))?;
                check_utf8(b)
                    .map_err(|p| path.err_at(if field == 1 { "name" } else { "version" }, p))?;
            }
            (3, WIRE_LEN) => {
                path.push("attributes", i);
                let (s, e) = r.len_delimited().map_err(|p| path.err(p))?;
                validate_key_value(&buf[..e], s, 0, path)?;
                path.pop();
                i += 1;
            }
            _ => skip_field(&mut r, SCOPE_FIELDS, field, wire).map_err(|p| path.err(p))?,
        }
    }
    Ok(())
}

fn validate_event(buf: &[u8], start: usize, path: &mut Path) -> Result<(), ScanError> {
    let mut r = Reader::new(buf, start);
    let mut i = 0;
    while let Some((field, wire)) = r.key().map_err(|p| path.err(p))? {
        match (field, wire) {
            (2, WIRE_LEN) => {
                let b = r.bytes().map_err(|p| path.err(p))?;
                check_utf8(b).map_err(|p| path.err_at("name", p))?;
            }
            (3, WIRE_LEN) => {
                path.push("attributes", i);
                let (s, e) = r.len_delimited().map_err(|p| path.err(p))?;
                validate_key_value(&buf[..e], s, 0, path)?;
                path.pop();
                i += 1;
            }
            _ => skip_field(&mut r, EVENT_FIELDS, field, wire).map_err(|p| path.err(p))?,
        }
    }
    Ok(())
}

fn validate_link(buf: &[u8], start: usize, path: &mut Path) -> Result<(), ScanError> {
    let mut r = Reader::new(buf, start);
    let mut i = 0;
    while let Some((field, wire)) = r.key().map_err(|p| path.err(p))? {
        match (field, wire) {
            (3, WIRE_LEN) => {
                let b = r.bytes().map_err(|p| path.err(p))?;
                check_utf8(b).map_err(|p| path.err_at("trace_state", p))?;
            }
            (4, WIRE_LEN) => {
                path.push("attributes", i);
                let (s, e) = r.len_delimited().map_err(|p| path.err(p))?;
                validate_key_value(&buf[..e], s, 0, path)?;
                path.pop();
                i += 1;
            }
            _ => skip_field(&mut r, LINK_FIELDS, field, wire).map_err(|p| path.err(p))?,
        }
    }
    Ok(())
}

fn validate_status(buf: &[u8], start: usize, path: &mut Path) -> Result<StatusCode, ScanError> {
    let mut r = Reader::new(buf, start);
    let mut code = StatusCode::Unset;
    while let Some((field, wire)) = r.key().map_err(|p| path.err(p))? {
        match (field, wire) {
            (2, WIRE_LEN) => {
                let b = r.bytes().map_err(|p| path.err(p))?;
                check_utf8(b).map_err(|p| path.err_at("message", p))?;
            }
            (3, WIRE_VARINT) => code = StatusCode::from_wire(r.varint().map_err(|p| path.err(p))?),
            _ => skip_field(&mut r, STATUS_FIELDS, field, wire).map_err(|p| path.err(p))?,
        }
    }
    Ok(code)
}

/// Validates a `KeyValue`; returns its key and, when the value is a string, the string (used to find
/// `service.name`).
fn validate_key_value<'a>(
    buf: &'a [u8],
    start: usize,
    depth: usize,
    path: &mut Path,
) -> Result<Option<(&'a str, Option<&'a str>)>, ScanError> {
    let mut r = Reader::new(buf, start);
    let mut key: &str = "";
    let mut string_value = None;
    while let Some((field, wire)) = r.key().map_err(|p| path.err(p))? {
        match (field, wire) {
            (1, WIRE_LEN) => {
                let b = r.bytes().map_err(|p| path.err(p))?;
                key = std::str::from_utf8(b)
                    .map_err(|_| path.err_at("key", "invalid UTF-8".into()))?;
            }
            (2, WIRE_LEN) => {
                let (s, e) = r.len_delimited().map_err(|p| path.err(p))?;
                string_value = validate_any_value(&buf[..e], s, depth + 1, path)?;
            }
            _ => skip_field(&mut r, KEY_VALUE_FIELDS, field, wire).map_err(|p| path.err(p))?,
        }
    }
    Ok(Some((key, string_value)))
}

fn validate_any_value<'a>(
    buf: &'a [u8],
    start: usize,
    depth: usize,
    path: &mut Path,
) -> Result<Option<&'a str>, ScanError> {
    if depth > MAX_VALUE_DEPTH {
        return Err(path.err(format!(
            "attribute value nested deeper than {MAX_VALUE_DEPTH} levels"
        )));
    }
    let mut r = Reader::new(buf, start);
    let mut string_value = None;
    while let Some((field, wire)) = r.key().map_err(|p| path.err(p))? {
        match (field, wire) {
            (1, WIRE_LEN) => {
                let b = r.bytes().map_err(|p| path.err(p))?;
                string_value = Some(
                    std::str::from_utf8(b)
                        .map_err(|_| path.err_at("value", "invalid UTF-8".into()))?,
                );
            }
            (5, WIRE_LEN) => {
                // ArrayValue { repeated AnyValue values = 1; }
                let (s, e) = r.len_delimited().map_err(|p| path.err(p))?;
                let mut a = Reader::new(&buf[..e], s);
                while let Some((f, w)) = a.key().map_err(|p| path.err(p))? {
                    if (f, w) == (1, WIRE_LEN) {
                        let (vs, ve) = a.len_delimited().map_err(|p| path.err(p))?;
                        validate_any_value(&buf[..ve], vs, depth + 1, path)?;
                    } else {
                        skip_field(&mut a, LIST_FIELDS, f, w).map_err(|p| path.err(p))?;
                    }
                }
            }
            (6, WIRE_LEN) => {
                // KeyValueList { repeated KeyValue values = 1; }
                let (s, e) = r.len_delimited().map_err(|p| path.err(p))?;
                let mut a = Reader::new(&buf[..e], s);
                while let Some((f, w)) = a.key().map_err(|p| path.err(p))? {
                    if (f, w) == (1, WIRE_LEN) {
                        let (vs, ve) = a.len_delimited().map_err(|p| path.err(p))?;
                        validate_key_value(&buf[..ve], vs, depth + 1, path)?;
                    } else {
                        skip_field(&mut a, LIST_FIELDS, f, w).map_err(|p| path.err(p))?;
                    }
                }
            }
            _ => skip_field(&mut r, ANY_VALUE_FIELDS, field, wire).map_err(|p| path.err(p))?,
        }
    }
    Ok(string_value)
}

// The fields each message of this OTLP version defines, with their wire types (from the .proto files).
const REQUEST_FIELDS: &[(u32, u8)] = &[(1, WIRE_LEN)];
const RESOURCE_SPANS_FIELDS: &[(u32, u8)] = &[(1, WIRE_LEN), (2, WIRE_LEN), (3, WIRE_LEN)];
const SCOPE_SPANS_FIELDS: &[(u32, u8)] = RESOURCE_SPANS_FIELDS;
const RESOURCE_FIELDS: &[(u32, u8)] = &[(1, WIRE_LEN), (2, WIRE_VARINT), (3, WIRE_LEN)];
const ENTITY_REF_FIELDS: &[(u32, u8)] =
    &[(1, WIRE_LEN), (2, WIRE_LEN), (3, WIRE_LEN), (4, WIRE_LEN)];
const SCOPE_FIELDS: &[(u32, u8)] = &[
    (1, WIRE_LEN),
    (2, WIRE_LEN),
    (3, WIRE_LEN),
    (4, WIRE_VARINT),
];
const SPAN_FIELDS: &[(u32, u8)] = &[
    (1, WIRE_LEN),
    (2, WIRE_LEN),
    (3, WIRE_LEN),
    (4, WIRE_LEN),
    (5, WIRE_LEN),
    (6, WIRE_VARINT),
    (7, WIRE_FIXED64),
    (8, WIRE_FIXED64),
    (9, WIRE_LEN),
    (10, WIRE_VARINT),
    (11, WIRE_LEN),
    (12, WIRE_VARINT),
    (13, WIRE_LEN),
    (14, WIRE_VARINT),
    (15, WIRE_LEN),
    (16, WIRE_FIXED32),
];
const EVENT_FIELDS: &[(u32, u8)] = &[
    (1, WIRE_FIXED64),
    (2, WIRE_LEN),
    (3, WIRE_LEN),
    (4, WIRE_VARINT),
];
const LINK_FIELDS: &[(u32, u8)] = &[
    (1, WIRE_LEN),
    (2, WIRE_LEN),
    (3, WIRE_LEN),
    (4, WIRE_LEN),
    (5, WIRE_VARINT),
    (6, WIRE_FIXED32),
];
const STATUS_FIELDS: &[(u32, u8)] = &[(2, WIRE_LEN), (3, WIRE_VARINT)];
const KEY_VALUE_FIELDS: &[(u32, u8)] = &[(1, WIRE_LEN), (2, WIRE_LEN), (3, WIRE_VARINT)];
const ANY_VALUE_FIELDS: &[(u32, u8)] = &[
    (1, WIRE_LEN),
    (2, WIRE_VARINT),
    (3, WIRE_VARINT),
    (4, WIRE_FIXED64),
    (5, WIRE_LEN),
    (6, WIRE_LEN),
    (7, WIRE_LEN),
    (8, WIRE_VARINT),
];
/// `ArrayValue` and `KeyValueList`: `repeated ... values = 1`.
const LIST_FIELDS: &[(u32, u8)] = &[(1, WIRE_LEN)];

/// Skips a field the scan does not read, after checking that a field this OTLP version defines carries
/// its declared wire type. A known field with another wire type is corruption that downstream decoders
/// refuse (prost does), so accepting and forwarding it would fail the downstream's whole batch; unknown
/// fields may carry anything.
fn skip_field(r: &mut Reader<'_>, known: &[(u32, u8)], field: u32, wire: u8) -> Result<(), String> {
    if let Some(&(_, want)) = known.iter().find(|(f, _)| *f == field)
        && want != wire
    {
        return Err(format!(
            "field {field} has wire type {wire}, expected {want}"
        ));
    }
    r.skip(wire)
}

fn id16(b: &[u8]) -> Option<u128> {
    Some(u128::from_be_bytes(b.try_into().ok()?))
}

fn id8(b: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(b.try_into().ok()?))
}

fn check_utf8(b: &[u8]) -> Result<(), String> {
    std::str::from_utf8(b)
        .map(|_| ())
        .map_err(|_| "invalid UTF-8".to_owned())
}

/// The dotted location inside the message, kept only for error messages.
#[derive(Default)]
struct Path {
    /// (field name, index or `NO_INDEX`); rendered to text only when an error is reported.
    parts: Vec<(&'static str, usize)>,
}

const NO_INDEX: usize = usize::MAX;

impl Path {
    fn push(&mut self, field: &'static str, index: usize) {
        self.parts.push((field, index));
    }
    fn pop(&mut self) {
        self.parts.pop();
    }
    fn err(&self, problem: String) -> ScanError {
        ScanError {
            path: self.render(None),
            problem,
        }
    }
    fn err_at(&self, field: &str, problem: String) -> ScanError {
        ScanError {
            path: self.render(Some(field)),
            problem,
        }
    }
    fn render(&self, field: Option<&str>) -> String {
        let mut s = if self.parts.is_empty() {
            "request".to_owned()
        } else {
            let parts: Vec<String> = self
                .parts
                .iter()
                .map(|&(f, i)| {
                    if i == NO_INDEX {
                        f.to_owned()
                    } else {
                        format!("{f}[{i}]")
                    }
                })
                .collect();
            parts.join(".")
        };
        if let Some(f) = field {
            s.push('.');
            s.push_str(f);
        }
        s
    }
}
