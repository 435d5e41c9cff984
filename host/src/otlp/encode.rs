//! Writes buffered spans back out as an encoded `ExportTraceServiceRequest`, grouped by resource and scope.

use super::{Origin, SpanRecord};
use bytes::{BufMut, Bytes, BytesMut};
use std::collections::HashMap;
use std::sync::Arc;

/// Encoded protobuf fields appended to a span when it is exported (e.g. a `tailgate.rule` attribute, a new
/// `trace_state`). Protobuf merges repeated fields and keeps the last value of scalar ones, so appending is
/// how a field is added or overridden without re-encoding the span.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpanPatch {
    bytes: Vec<u8>,
}

impl SpanPatch {
    /// An empty patch.
    pub fn new() -> Self {
        Self::default()
    }

    /// True when nothing would be appended.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Appends a string attribute (`Span.attributes`, field 9).
    pub fn string_attribute(&mut self, key: &str, value: &str) -> &mut Self {
        // AnyValue { string_value = 1 }
        let any_len = 1 + varint_len(value.len() as u64) + value.len();
        // KeyValue { key = 1, value = 2 }
        let kv_len =
            1 + varint_len(key.len() as u64) + key.len() + 1 + varint_len(any_len as u64) + any_len;
        let b = &mut self.bytes;
        put_key(b, 9, 2);
        put_varint(b, kv_len as u64);
        put_key(b, 1, 2);
        put_varint(b, key.len() as u64);
        b.extend_from_slice(key.as_bytes());
        put_key(b, 2, 2);
        put_varint(b, any_len as u64);
        put_key(b, 1, 2);
        put_varint(b, value.len() as u64);
        b.extend_from_slice(value.as_bytes());
        self
    }

    /// Appends an integer attribute.
    pub fn int_attribute(&mut self, key: &str, value: i64) -> &mut Self {
        let any_len = 1 + varint_len(value as u64);
        let kv_len =
            1 + varint_len(key.len() as u64) + key.len() + 1 + varint_len(any_len as u64) + any_len;
        let b = &mut self.bytes;
        put_key(b, 9, 2);
        put_varint(b, kv_len as u64);
        put_key(b, 1, 2);
        put_varint(b, key.len() as u64);
        b.extend_from_slice(key.as_bytes());
        put_key(b, 2, 2);
        put_varint(b, any_len as u64);
        put_key(b, 3, 0);
        put_varint(b, value as u64);
        self
    }

    /// Overrides `Span.trace_state` (field 3); the last occurrence wins when decoded.
    pub fn trace_state(&mut self, value: &str) -> &mut Self {
        put_key(&mut self.bytes, 3, 2);
        put_varint(&mut self.bytes, value.len() as u64);
        self.bytes.extend_from_slice(value.as_bytes());
        self
    }

    /// The encoded bytes to append.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// Collects spans and encodes them as one `ExportTraceServiceRequest`.
#[derive(Default)]
pub struct ExportBuilder {
    groups: Vec<Group>,
    by_origin: HashMap<Arc<Origin>, usize>,
    /// The origin of the previous push and its group: spans of a trace mostly share an origin.
    last: Option<(usize, usize)>,
    spans: usize,
    encoded_len: usize,
}

// `last` holds an origin's address only to compare it; the Arc it came from is kept alive in `by_origin`,
// so the address cannot be reused by another origin while the builder lives.

struct Group {
    origin: Arc<Origin>,
    spans: Vec<(Bytes, Bytes)>,
    spans_len: usize,
}

impl ExportBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a span, with encoded fields to append (see [`SpanPatch`]); `append` may be empty.
    pub fn push(&mut self, span: &SpanRecord, append: Bytes) {
        self.push_raw(&span.origin, span.raw.clone(), append);
    }

    /// Adds an encoded span under an origin.
    pub fn push_raw(&mut self, origin: &Arc<Origin>, raw: Bytes, append: Bytes) {
        let ptr = Arc::as_ptr(origin) as usize;
        let idx = match self.last {
            Some((p, i)) if p == ptr => i,
            _ => {
                let i = match self.by_origin.get(origin) {
                    Some(i) => *i,
                    None => {
                        self.groups.push(Group {
                            origin: origin.clone(),
                            spans: Vec::new(),
                            spans_len: 0,
                        });
                        self.by_origin.insert(origin.clone(), self.groups.len() - 1);
                        self.groups.len() - 1
                    }
                };
                // The address of the group's own Arc, which the builder keeps alive, not the caller's: an
                // equal origin in another allocation (a redacted trace's, say) may be freed after this push
                // and its address reused by a different origin, which would then land in this group.
                self.last = Some((Arc::as_ptr(&self.groups[i].origin) as usize, i));
                i
            }
        };
        let len = raw.len() + append.len();
        let g = &mut self.groups[idx];
        g.spans_len += 1 + varint_len(len as u64) + len;
        g.spans.push((raw, append));
        self.spans += 1;
        self.encoded_len += len + 8;
    }

    /// Number of spans pushed.
    pub fn span_count(&self) -> usize {
        self.spans
    }

    /// Approximate encoded size so far (for batch size limits).
    pub fn approx_encoded_len(&self) -> usize {
        self.encoded_len
    }

    /// True when nothing was pushed.
    pub fn is_empty(&self) -> bool {
        self.spans == 0
    }

    /// Encodes the request.
    pub fn finish(self) -> Bytes {
        let mut sizes = Vec::with_capacity(self.groups.len());
        let mut total = 0;
        for g in &self.groups {
            let scope_len = g.origin.scope_fields.len() + g.spans_len;
            let rs_len =
                g.origin.resource_fields.len() + 1 + varint_len(scope_len as u64) + scope_len;
            total += 1 + varint_len(rs_len as u64) + rs_len;
            sizes.push((rs_len, scope_len));
        }
        let mut out = BytesMut::with_capacity(total);
        for (g, (rs_len, scope_len)) in self.groups.iter().zip(sizes) {
            put_key(&mut out, 1, 2);
            put_varint(&mut out, rs_len as u64);
            out.put_slice(&g.origin.resource_fields);
            put_key(&mut out, 2, 2);
            put_varint(&mut out, scope_len as u64);
            out.put_slice(&g.origin.scope_fields);
            for (raw, append) in &g.spans {
                put_key(&mut out, 2, 2);
                put_varint(&mut out, (raw.len() + append.len()) as u64);
                out.put_slice(raw);
                out.put_slice(append);
            }
        }
        out.freeze()
    }
}

fn put_key(b: &mut impl BufMut, field: u32, wire: u8) {
    put_varint(b, u64::from(field << 3 | u32::from(wire)));
}

fn put_varint(b: &mut impl BufMut, mut v: u64) {
    while v >= 0x80 {
        b.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    b.put_u8(v as u8);
}

/// Bytes a varint takes on the wire.
pub(crate) fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}
