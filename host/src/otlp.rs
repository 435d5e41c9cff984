//! The OTLP trace wire format: a validating, zero-allocation scan of `ExportTraceServiceRequest` bodies into
//! [`SpanRecord`]s, read access to a span's fields and attributes without decoding it, and the encoder that
//! writes buffered spans back out as an `ExportTraceServiceRequest`.
//!
//! Why not `prost` all the way: decoding a request into `opentelemetry-proto` structs allocates every
//! string and attribute, and the buffer would then hold several hundred bytes of heap per span for data it
//! mostly never reads (most traces are dropped). Instead the scan walks the protobuf once, validates it
//! completely (wire types, lengths, UTF-8, nesting depth), and keeps each span as its own encoded bytes plus
//! the handful of scalars the engine needs. Kept spans are re-emitted byte for byte; the few fields tailgate
//! adds (`tailgate.rule`, `tracestate`) are appended, which protobuf defines as merge (repeated fields) and
//! last-wins (scalar fields). `prost` is still used for everything that is not hot: OTLP/JSON, redaction
//! edits, tests.

mod encode;
pub mod predicate;
pub mod rpc;
mod scan;
mod view;
mod wire;

pub use encode::{ExportBuilder, SpanPatch};
pub use scan::SpanRejection;
pub use scan::{ScanError, ScannedRequest, scan_export_request, scan_export_request_with};
pub use view::{
    AnyValueRef, AttrIter, KeyFinder, KeyValueRef, attributes_in, event_attributes, event_name,
    len_fields, link_attributes, merged_resource_attributes, merged_scope_attributes,
    resource_attributes, scope_attributes, span_attributes, span_events, span_links,
    span_status_message, span_trace_state,
};
pub(crate) use wire::next_field;

use bytes::Bytes;
use std::sync::Arc;

/// A 128-bit trace id, big-endian as on the wire (so the low 56 bits are the W3C "random" part).
pub type TraceId = u128;

/// OTLP status code of a span (`Status.code`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(u8)]
pub enum StatusCode {
    #[default]
    Unset = 0,
    Ok = 1,
    Error = 2,
}

impl StatusCode {
    fn from_wire(v: u64) -> Self {
        match v {
            1 => StatusCode::Ok,
            2 => StatusCode::Error,
            _ => StatusCode::Unset,
        }
    }
}

/// Where a span came from: its resource and instrumentation scope, kept as the encoded bytes of every
/// `ResourceSpans` / `ScopeSpans` field other than the spans themselves, so the export is faithful
/// (schema URLs and fields unknown to this version included). Shared by every span of one scope in one
/// request.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Origin {
    /// Encoded `ResourceSpans` fields except `scope_spans` (field 2).
    pub resource_fields: Bytes,
    /// Encoded `ScopeSpans` fields except `spans` (field 2).
    pub scope_fields: Bytes,
    /// The resource's `service.name` (empty when absent), read once at scan time for summaries and logs.
    pub service_name: Box<str>,
}

impl Origin {
    /// An origin with no resource and no scope; used by tests and synthetic spans.
    pub fn empty() -> Arc<Origin> {
        Arc::new(Origin {
            resource_fields: Bytes::new(),
            scope_fields: Bytes::new(),
            service_name: "".into(),
        })
    }
}

/// One span as the buffer keeps it: the encoded `Span` message plus the fields the engine reads often.
/// About 80 bytes of bookkeeping beside the encoded span.
#[derive(Debug, Clone)]
pub struct SpanRecord {
    /// The encoded `Span` message, exactly as received (validated).
    pub raw: Bytes,
    /// Resource and scope this span was sent under.
    pub origin: Arc<Origin>,
    /// Span id as a big-endian integer (never 0 for an accepted span).
    pub span_id: u64,
    /// Parent span id, 0 for a root span.
    pub parent_span_id: u64,
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
    /// Byte range of the span name inside `raw` (offset, length).
    name_at: (u32, u32),
    /// OTLP `SpanKind` as on the wire (0 unspecified .. 5 consumer).
    pub kind: u8,
    pub status: StatusCode,
    /// Predicate pushdown (`crate::predicate`): bit i is set when predicate i of the predicate set of
    /// generation `pred_gen` holds for this span (or its resource or scope). Fills what was padding:
    /// the record stays 88 bytes.
    pred_bits: u32,
    /// Generation of the predicate set `pred_bits` was computed with; 0 = none.
    pred_gen: u16,
}

impl SpanRecord {
    /// The span name (validated UTF-8 at scan time).
    pub fn name(&self) -> &str {
        let (off, len) = (self.name_at.0 as usize, self.name_at.1 as usize);
        // The range was produced by the scan over these very bytes and checked as UTF-8 there.
        std::str::from_utf8(&self.raw[off..off + len]).unwrap_or("")
    }

    /// The span name's bytes (UTF-8, checked at scan time), without checking them again: for hashing.
    pub fn name_bytes(&self) -> &[u8] {
        let (off, len) = (self.name_at.0 as usize, self.name_at.1 as usize);
        self.raw.get(off..off + len).unwrap_or_default()
    }

    /// This span with new encoded bytes that `prost` encoded from this span's decoded message after
    /// redaction changed only strings in it (attribute keys and values, names, messages): the ids, times,
    /// kind, status code and origin stay, and the name is located again. Exact without re-scanning,
    /// because `prost` writes only well-formed protobuf whose strings are UTF-8, and the fields the scan
    /// checks beyond that (ids, times) are the ones that did not change.
    pub fn reencoded(&self, raw: Bytes) -> SpanRecord {
        let name_at = view::span_name_range(&raw);
        SpanRecord {
            raw,
            name_at,
            ..self.clone()
        }
    }

    /// Predicate bits computed at scan time (see the field docs); meaningful only with [`Self::pred_gen`].
    pub fn pred_bits(&self) -> u32 {
        self.pred_bits
    }

    /// Generation of the predicate set [`Self::pred_bits`] belongs to (0: none).
    pub fn pred_gen(&self) -> u16 {
        self.pred_gen
    }

    /// The span's attributes, read lazily from the encoded bytes.
    pub fn attributes(&self) -> AttrIter<'_> {
        span_attributes(&self.raw)
    }

    /// True when the span is a root (no parent).
    pub fn is_root(&self) -> bool {
        self.parent_span_id == 0
    }

    /// Memory the buffer charges for this span: its encoded size plus the record itself.
    pub fn charged_bytes(&self) -> usize {
        self.raw.len() + std::mem::size_of::<SpanRecord>()
    }

    /// Duration in nanoseconds (0 when the end precedes the start).
    pub fn duration_nanos(&self) -> u64 {
        self.end_unix_nano.saturating_sub(self.start_unix_nano)
    }
}

#[cfg(test)]
mod tests;
