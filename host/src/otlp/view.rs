//! Read access to attributes inside encoded (already validated) OTLP messages, without allocating.

use super::wire::{Reader, WIRE_FIXED64, WIRE_LEN, WIRE_VARINT, next_field};

/// A borrowed `AnyValue`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AnyValueRef<'a> {
    Empty,
    String(&'a str),
    Bool(bool),
    Int(i64),
    Double(f64),
    Bytes(&'a [u8]),
    /// Encoded `ArrayValue`; iterate with [`AnyValueRef::array_items`].
    Array(&'a [u8]),
    /// Encoded `KeyValueList`; iterate with [`AnyValueRef::kvlist_items`].
    KvList(&'a [u8]),
}

impl<'a> AnyValueRef<'a> {
    /// Reads an encoded `AnyValue`. Malformed input yields `Empty` (input was validated at scan time).
    pub fn decode(buf: &'a [u8]) -> Self {
        let mut r = Reader::new(buf, 0);
        let mut v = AnyValueRef::Empty;
        while let Ok(Some((field, wire))) = r.key() {
            let next = match (field, wire) {
                (1, WIRE_LEN) => r
                    .bytes()
                    .ok()
                    .map(|b| AnyValueRef::String(std::str::from_utf8(b).unwrap_or(""))),
                (2, WIRE_VARINT) => r.varint().ok().map(|x| AnyValueRef::Bool(x != 0)),
                (3, WIRE_VARINT) => r.varint().ok().map(|x| AnyValueRef::Int(x as i64)),
                (4, WIRE_FIXED64) => r
                    .fixed64()
                    .ok()
                    .map(|x| AnyValueRef::Double(f64::from_bits(x))),
                (5, WIRE_LEN) => r.bytes().ok().map(AnyValueRef::Array),
                (6, WIRE_LEN) => r.bytes().ok().map(AnyValueRef::KvList),
                (7, WIRE_LEN) => r.bytes().ok().map(AnyValueRef::Bytes),
                _ => r.skip(wire).ok().map(|_| v),
            };
            match next {
                Some(n) => v = n,
                None => break,
            }
        }
        v
    }

    /// Items of an `Array` value (empty for other kinds).
    pub fn array_items(&self) -> impl Iterator<Item = AnyValueRef<'a>> + 'a {
        let buf = match self {
            AnyValueRef::Array(b) => *b,
            _ => &[],
        };
        FieldIter {
            r: Reader::new(buf, 0),
            field: 1,
        }
        .map(AnyValueRef::decode)
    }

    /// Entries of a `KvList` value (empty for other kinds).
    pub fn kvlist_items(&self) -> AttrIter<'a> {
        let buf = match self {
            AnyValueRef::KvList(b) => *b,
            _ => &[],
        };
        AttrIter {
            inner: FieldIter {
                r: Reader::new(buf, 0),
                field: 1,
            },
        }
    }

    /// The string, when this is a string value.
    pub fn as_str(&self) -> Option<&'a str> {
        match self {
            AnyValueRef::String(s) => Some(s),
            _ => None,
        }
    }

    /// The integer, when this is an int value.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            AnyValueRef::Int(i) => Some(*i),
            _ => None,
        }
    }
}

/// A borrowed `KeyValue`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KeyValueRef<'a> {
    pub key: &'a str,
    pub value: AnyValueRef<'a>,
}

/// Iterates the payloads of one length-delimited field number inside a message.
struct FieldIter<'a> {
    r: Reader<'a>,
    field: u32,
}

impl<'a> Iterator for FieldIter<'a> {
    type Item = &'a [u8];
    fn next(&mut self) -> Option<&'a [u8]> {
        loop {
            let (field, wire) = self.r.key().ok()??;
            if field == self.field && wire == WIRE_LEN {
                return self.r.bytes().ok();
            }
            self.r.skip(wire).ok()?;
        }
    }
}

/// Iterator over the `KeyValue`s of a message's attributes field.
pub struct AttrIter<'a> {
    inner: FieldIter<'a>,
}

impl<'a> Iterator for AttrIter<'a> {
    type Item = KeyValueRef<'a>;
    fn next(&mut self) -> Option<KeyValueRef<'a>> {
        let kv = self.inner.next()?;
        let mut r = Reader::new(kv, 0);
        let mut out = KeyValueRef {
            key: "",
            value: AnyValueRef::Empty,
        };
        while let Ok(Some((field, wire))) = r.key() {
            match (field, wire) {
                (1, WIRE_LEN) => {
                    out.key = r
                        .bytes()
                        .ok()
                        .and_then(|b| std::str::from_utf8(b).ok())
                        .unwrap_or("")
                }
                (2, WIRE_LEN) => {
                    out.value = r
                        .bytes()
                        .map(AnyValueRef::decode)
                        .unwrap_or(AnyValueRef::Empty)
                }
                _ => {
                    if r.skip(wire).is_err() {
                        break;
                    }
                }
            }
        }
        Some(out)
    }
}

impl<'a> AttrIter<'a> {
    /// The attributes whose key is one of `keys`, as `(index in keys, value)`. Only matching values are
    /// decoded and keys are compared as bytes, so this is several times faster than filtering the
    /// iterator when a few keys are wanted out of many (the plugin attribute projection).
    pub fn matching<'k>(
        self,
        keys: &'k [String],
    ) -> impl Iterator<Item = (usize, AnyValueRef<'a>)> + 'k
    where
        'a: 'k,
    {
        self.inner.filter_map(move |kv| {
            let mut r = Reader::new(kv, 0);
            // Encoders write the key first: reject a non-matching attribute without reading its value.
            if let Ok(Some((1, WIRE_LEN))) = r.key() {
                let key = r.bytes().ok()?;
                keys.iter().position(|k| k.as_bytes() == key)?;
            }
            let mut r = Reader::new(kv, 0);
            let (mut key, mut value): (Option<&[u8]>, &[u8]) = (None, &[]);
            while let Ok(Some((field, wire))) = r.key() {
                match (field, wire) {
                    (1, WIRE_LEN) => key = r.bytes().ok(),
                    (2, WIRE_LEN) => value = r.bytes().unwrap_or(&[]),
                    _ => r.skip(wire).ok()?,
                }
            }
            let key = key?;
            let at = keys.iter().position(|k| k.as_bytes() == key)?;
            Some((at, AnyValueRef::decode(value)))
        })
    }
}

/// Finds the attributes with given keys in encoded spans, for the plugin attribute projection. It walks
/// the span's top-level fields with a tight varint loop (the bytes passed the receivers' validating scan,
/// so nothing is re-validated; malformed bytes end the walk early, never panic) and compares a key only
/// when its length matches one of the wanted keys, decoding just the matching values. The result is
/// exactly what [`AttrIter::matching`] returns, at a fraction of the instructions.
#[derive(Debug, Clone, Default)]
pub struct KeyFinder {
    keys: Vec<String>,
    /// Bit `n` is set when a key is `n` bytes long (keys of 64 bytes or more set bit 63), so most
    /// attributes are rejected on their key's length byte alone.
    lengths: u64,
}

impl KeyFinder {
    /// A finder for `keys`.
    pub fn new(keys: &[String]) -> KeyFinder {
        let lengths = keys.iter().fold(0u64, |m, k| m | 1 << k.len().min(63));
        KeyFinder {
            keys: keys.to_vec(),
            lengths,
        }
    }

    /// True when there are no keys.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// True when one of the keys is `len` bytes long (keys of 63 bytes or more share one bit, so this
    /// can be true for a length no key has; never false for one that some key has).
    #[inline(always)]
    pub fn length_hit(&self, len: usize) -> bool {
        self.lengths & (1 << len.min(63)) != 0
    }

    /// The key index and value of one encoded `KeyValue` when its key is one of the keys. Used per
    /// attribute by the ingest scan (predicate pushdown) and by [`KeyFinder::span_attributes`].
    #[inline]
    pub fn attribute<'a>(&self, kv: &'a [u8]) -> Option<(usize, AnyValueRef<'a>)> {
        // Encoders write the key first (tag 0x0a, then its length): reject a non-matching attribute on
        // the key's length byte, then on its bytes, without reading further.
        if let [0x0a, len, rest @ ..] = kv
            && *len < 0x80
        {
            let len = usize::from(*len);
            if self.lengths & (1 << len.min(63)) == 0 {
                return None;
            }
            let key = rest.get(..len)?;
            if !self.keys.iter().any(|k| k.as_bytes() == key) {
                return None;
            }
        }
        // Read the whole attribute as protobuf does (the last key and value win).
        let mut at = 0;
        let (mut key, mut value): (Option<&[u8]>, &[u8]) = (None, &[]);
        while let Some((field, wire, s, e)) = next_field(kv, &mut at) {
            match (field, wire) {
                (1, WIRE_LEN) => key = Some(&kv[s..e]),
                (2, WIRE_LEN) => value = &kv[s..e],
                _ => {}
            }
        }
        let k = key.and_then(|k| self.keys.iter().position(|x| x.as_bytes() == k))?;
        Some((k, AnyValueRef::decode(value)))
    }

    /// Calls `f(index in keys, value)` for each attribute (field 9) of the encoded `span` whose key is one
    /// of the keys, in attribute order.
    pub fn span_attributes<'a>(&self, span: &'a [u8], mut f: impl FnMut(usize, AnyValueRef<'a>)) {
        let mut pos = 0;
        while let Some((field, wire, start, end)) = next_field(span, &mut pos) {
            if field != 9 || wire != WIRE_LEN {
                continue;
            }
            if let Some((k, v)) = self.attribute(&span[start..end]) {
                f(k, v);
            }
        }
    }
}

/// Byte range (offset, length) of the name (field 5; the last occurrence, as protobuf reads it) of an
/// encoded `Span`; (0, 0) when it has none.
pub(super) fn span_name_range(span: &[u8]) -> (u32, u32) {
    let mut at = (0, 0);
    let mut r = Reader::new(span, 0);
    while let Ok(Some((field, wire))) = r.key() {
        if field == 5 && wire == WIRE_LEN {
            match r.len_delimited() {
                // Spans are far below 4 GiB (the receivers' body limit); the casts cannot truncate.
                Ok((s, e)) => at = (s as u32, (e - s) as u32),
                Err(_) => break,
            }
        } else if r.skip(wire).is_err() {
            break;
        }
    }
    at
}

/// Attributes (field 9) of an encoded `Span`.
pub fn span_attributes(span: &[u8]) -> AttrIter<'_> {
    AttrIter {
        inner: FieldIter {
            r: Reader::new(span, 0),
            field: 9,
        },
    }
}

/// Attributes (field 1) of an encoded `Resource`, given the encoded `ResourceSpans` fields of an origin.
pub fn resource_attributes(resource_fields: &[u8]) -> AttrIter<'_> {
    let resource = FieldIter {
        r: Reader::new(resource_fields, 0),
        field: 1,
    }
    .next()
    .unwrap_or(&[]);
    AttrIter {
        inner: FieldIter {
            r: Reader::new(resource, 0),
            field: 1,
        },
    }
}

/// Attributes (field 3) of an `InstrumentationScope`, given the encoded `ScopeSpans` fields of an origin.
pub fn scope_attributes(scope_fields: &[u8]) -> AttrIter<'_> {
    let scope = FieldIter {
        r: Reader::new(scope_fields, 0),
        field: 1,
    }
    .next()
    .unwrap_or(&[]);
    AttrIter {
        inner: FieldIter {
            r: Reader::new(scope, 0),
            field: 3,
        },
    }
}

/// `trace_state` (field 3) of an encoded `Span`; the last occurrence wins, as in protobuf.
pub fn span_trace_state(span: &[u8]) -> &str {
    FieldIter {
        r: Reader::new(span, 0),
        field: 3,
    }
    .last()
    .and_then(|b| std::str::from_utf8(b).ok())
    .unwrap_or("")
}

/// The payloads of every occurrence of a length-delimited `field` in an encoded message, in order.
pub fn len_fields(msg: &[u8], field: u32) -> impl Iterator<Item = &[u8]> {
    FieldIter {
        r: Reader::new(msg, 0),
        field,
    }
}

/// The attributes stored in `field` of an encoded message (a repeated `KeyValue` field), in order.
pub fn attributes_in(msg: &[u8], field: u32) -> AttrIter<'_> {
    AttrIter {
        inner: FieldIter {
            r: Reader::new(msg, 0),
            field,
        },
    }
}

/// The last occurrence of string `field` in an encoded message, as protobuf decodes it ("" when absent).
fn last_str(msg: &[u8], field: u32) -> &str {
    len_fields(msg, field)
        .last()
        .and_then(|b| std::str::from_utf8(b).ok())
        .unwrap_or("")
}

/// The encoded `Span.Event`s (field 11) of an encoded `Span`.
pub fn span_events(span: &[u8]) -> impl Iterator<Item = &[u8]> {
    len_fields(span, 11)
}

/// The name (field 2) of an encoded `Span.Event`.
pub fn event_name(event: &[u8]) -> &str {
    last_str(event, 2)
}

/// The attributes (field 3) of an encoded `Span.Event`.
pub fn event_attributes(event: &[u8]) -> AttrIter<'_> {
    attributes_in(event, 3)
}

/// The encoded `Span.Link`s (field 13) of an encoded `Span`.
pub fn span_links(span: &[u8]) -> impl Iterator<Item = &[u8]> {
    len_fields(span, 13)
}

/// The attributes (field 4) of an encoded `Span.Link`.
pub fn link_attributes(link: &[u8]) -> AttrIter<'_> {
    attributes_in(link, 4)
}

/// The status message of an encoded `Span` (field 15, its field 2). Repeated status fields merge as in
/// protobuf: the last occurrence that sets a message wins.
pub fn span_status_message(span: &[u8]) -> &str {
    let mut message = "";
    for status in len_fields(span, 15) {
        if let Some(m) = len_fields(status, 2).last() {
            message = std::str::from_utf8(m).unwrap_or("");
        }
    }
    message
}

/// Every attribute of the `Resource` in an origin's encoded `ResourceSpans` fields. Unlike
/// [`resource_attributes`], repeated `resource` fields merge as protobuf merges them (their attributes
/// concatenate), so nothing a decoder would see is missed.
pub fn merged_resource_attributes(resource_fields: &[u8]) -> impl Iterator<Item = KeyValueRef<'_>> {
    len_fields(resource_fields, 1).flat_map(|r| attributes_in(r, 1))
}

/// Every attribute of the `InstrumentationScope` in an origin's encoded `ScopeSpans` fields, merged like
/// [`merged_resource_attributes`].
pub fn merged_scope_attributes(scope_fields: &[u8]) -> impl Iterator<Item = KeyValueRef<'_>> {
    len_fields(scope_fields, 1).flat_map(|s| attributes_in(s, 3))
}
