//! The redactor packing: every string of a trace a redactor may edit (names, attribute values and keys,
//! event names, status messages, ...) packed into one buffer with a field table, read from the encoded
//! spans in place; what the redaction host maps edits back through ([`Packed::fields`]).

use super::bindings::redaction::{
    FieldKind as WitFieldKind, PackedTrace, TextField, TextRange, ValueType,
};
use super::marshal::*;
use crate::otlp::{self, AnyValueRef, KeyValueRef, SpanRecord};
use std::io::Write as _;

/// What a packed field is; mirrors the WIT `field-kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FieldKind {
    ResourceAttribute,
    ScopeAttribute,
    SpanAttribute,
    SpanName,
    StatusMessage,
    EventName,
    EventAttribute,
    LinkAttribute,
}

impl FieldKind {
    fn to_wit(self) -> WitFieldKind {
        match self {
            FieldKind::ResourceAttribute => WitFieldKind::ResourceAttribute,
            FieldKind::ScopeAttribute => WitFieldKind::ScopeAttribute,
            FieldKind::SpanAttribute => WitFieldKind::SpanAttribute,
            FieldKind::SpanName => WitFieldKind::SpanName,
            FieldKind::StatusMessage => WitFieldKind::StatusMessage,
            FieldKind::EventName => WitFieldKind::EventName,
            FieldKind::EventAttribute => WitFieldKind::EventAttribute,
            FieldKind::LinkAttribute => WitFieldKind::LinkAttribute,
        }
    }

    /// True for attribute fields (which can be removed or have their key renamed).
    pub fn is_attribute(self) -> bool {
        matches!(
            self,
            FieldKind::ResourceAttribute
                | FieldKind::ScopeAttribute
                | FieldKind::SpanAttribute
                | FieldKind::EventAttribute
                | FieldKind::LinkAttribute
        )
    }
}

/// Exactly which string of the trace an edit targets.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FieldRef {
    pub kind: FieldKind,
    /// Resource index (see [`TraceLayout`]), scope index, or span index, depending on `kind`.
    pub owner: u32,
    /// Event or link index within the span; 0 otherwise.
    pub item: u32,
    /// Position of the attribute in its attribute list (0 for names and messages). Keys may repeat in
    /// OTLP, so this, not the key, identifies the attribute.
    pub attribute_index: u32,
    /// The attribute key (empty for names and messages).
    pub key: String,
    /// True when the value is a string (or a name/message), so masks are on UTF-8 boundaries of it.
    pub is_string: bool,
    /// The value's length in bytes in the packed text, which bounds mask ranges.
    pub value_len: u32,
}

/// The packed trace handed to a redactor, with the host-side description of every field.
pub struct Packed {
    pub wit: PackedTrace,
    pub fields: Vec<FieldRef>,
}

struct Packer {
    text: Vec<u8>,
    fields: Vec<TextField>,
    refs: Vec<FieldRef>,
}

impl Packer {
    fn range(&mut self, bytes: &[u8]) -> TextRange {
        let offset = self.text.len() as u32;
        self.text.extend_from_slice(bytes);
        TextRange {
            offset,
            len: bytes.len() as u32,
        }
    }

    fn name(&mut self, kind: FieldKind, owner: u32, item: u32, text: &str) {
        let key = TextRange {
            offset: self.text.len() as u32,
            len: 0,
        };
        let value = self.range(text.as_bytes());
        self.fields.push(TextField {
            kind: kind.to_wit(),
            owner,
            item,
            key,
            value,
            value_type: ValueType::Name,
        });
        self.refs.push(FieldRef {
            kind,
            owner,
            item,
            attribute_index: 0,
            key: String::new(),
            is_string: true,
            value_len: value.len,
        });
    }

    /// Packs attributes, rendering non-string values as text straight into the buffer.
    fn attributes<'a>(
        &mut self,
        kind: FieldKind,
        owner: u32,
        item: u32,
        kvs: impl Iterator<Item = KeyValueRef<'a>>,
    ) {
        for (i, kv) in kvs.enumerate() {
            let key = self.range(kv.key.as_bytes());
            let offset = self.text.len() as u32;
            let value_type = match kv.value {
                AnyValueRef::Empty => ValueType::Empty,
                AnyValueRef::String(s) => {
                    self.text.extend_from_slice(s.as_bytes());
                    ValueType::Str
                }
                AnyValueRef::Bool(b) => {
                    self.text
                        .extend_from_slice(if b { b"true" } else { b"false" });
                    ValueType::Boolean
                }
                AnyValueRef::Int(n) => {
                    // Writing into a Vec cannot fail.
                    let _ = write!(self.text, "{n}");
                    ValueType::Int
                }
                AnyValueRef::Double(d) => {
                    let _ = write!(self.text, "{d}");
                    ValueType::Double
                }
                AnyValueRef::Bytes(b) => {
                    self.text.extend_from_slice(b);
                    ValueType::Bytes
                }
                AnyValueRef::Array(_) => {
                    self.text
                        .extend_from_slice(json_of_ref(kv.value).as_bytes());
                    ValueType::Array
                }
                AnyValueRef::KvList(_) => {
                    self.text
                        .extend_from_slice(json_of_ref(kv.value).as_bytes());
                    ValueType::Kvlist
                }
            };
            let value = TextRange {
                offset,
                len: self.text.len() as u32 - offset,
            };
            self.fields.push(TextField {
                kind: kind.to_wit(),
                owner,
                item,
                key,
                value,
                value_type,
            });
            self.refs.push(FieldRef {
                kind,
                owner,
                item,
                attribute_index: i as u32,
                key: kv.key.to_owned(),
                is_string: value_type == ValueType::Str,
                value_len: value.len,
            });
        }
    }
}

/// Packs every string of a trace into one buffer, in the order the WIT documents: resources, scopes,
/// then per span its name, status message, attributes, events (name, attributes) and link attributes.
pub fn pack(spans: &[SpanRecord]) -> Packed {
    let l = layout(spans);
    let mut p = Packer {
        text: Vec::with_capacity(spans.iter().map(|s| s.raw.len()).sum::<usize>() + 64),
        fields: Vec::with_capacity(spans.len() * 24),
        refs: Vec::with_capacity(spans.len() * 24),
    };
    // The encoded bytes are read in place (they passed the receiver's validating scan); repeated
    // singular messages merge as protobuf merges them, so the indexes match what `apply` decodes.
    for (ri, &first) in l.resource_first_span.iter().enumerate() {
        let fields = &spans[first as usize].origin.resource_fields;
        p.attributes(
            FieldKind::ResourceAttribute,
            ri as u32,
            0,
            otlp::merged_resource_attributes(fields),
        );
    }
    for (si, &first) in l.scope_first_span.iter().enumerate() {
        let fields = &spans[first as usize].origin.scope_fields;
        p.attributes(
            FieldKind::ScopeAttribute,
            si as u32,
            0,
            otlp::merged_scope_attributes(fields),
        );
    }
    for (i, s) in spans.iter().enumerate() {
        let owner = i as u32;
        let raw = &s.raw[..];
        p.name(FieldKind::SpanName, owner, 0, s.name());
        let message = otlp::span_status_message(raw);
        if !message.is_empty() {
            p.name(FieldKind::StatusMessage, owner, 0, message);
        }
        p.attributes(
            FieldKind::SpanAttribute,
            owner,
            0,
            otlp::span_attributes(raw),
        );
        for (ei, e) in otlp::span_events(raw).enumerate() {
            p.name(FieldKind::EventName, owner, ei as u32, otlp::event_name(e));
            p.attributes(
                FieldKind::EventAttribute,
                owner,
                ei as u32,
                otlp::event_attributes(e),
            );
        }
        for (li, k) in otlp::span_links(raw).enumerate() {
            p.attributes(
                FieldKind::LinkAttribute,
                owner,
                li as u32,
                otlp::link_attributes(k),
            );
        }
    }
    let wit = PackedTrace {
        text: p.text,
        fields: p.fields,
        span_count: spans.len() as u32,
        resource_count: l.resource_first_span.len() as u32,
        scope_count: l.scope_first_span.len() as u32,
    };
    Packed {
        wit,
        fields: p.refs,
    }
}
