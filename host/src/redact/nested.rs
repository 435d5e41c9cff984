//! Masks inside array and kvlist attribute values. A redactor reads such a value as its JSON text
//! (`value-type.array` / `kvlist` in the WIT), so a mask's ranges are byte ranges of that text; here each
//! range is mapped back to the elements (and kvlist keys) whose text it covers, and only those change.
//! The value keeps its shape and the types of its other elements:
//!
//! - a string element (or a kvlist key) has each character whose JSON text (escapes included) overlaps
//!   a range replaced by `*`, as a masked string attribute does;
//! - a bytes element (base64 in the JSON) has each byte whose base64 digits overlap a range replaced by
//!   `*`, and stays bytes;
//! - a bool, int or double element with a digit or letter in a range becomes a string: its text with the
//!   covered characters as `*` (a masked number is no number), the one type change a mask makes;
//! - `null` (an empty value) and the JSON punctuation (`[`, `,`, `:`, quotes) carry nothing to mask.
//!
//! Ranges are checked by the caller against the JSON text (in bounds, on character boundaries, sorted).

use crate::plugin::marshal::{base64, push_json_escaped};
use opentelemetry_proto::tonic::common::v1::{AnyValue, any_value::Value};
use std::ops::Range;

/// `v` (an array or kvlist value) with the parts of its JSON text `json` inside `ranges` masked in the
/// elements they fall in. `None` when the rendering here does not reproduce `json` byte for byte (it
/// mirrors `plugin::json_of_ref`; a difference would be a bug, and the caller then masks the JSON text
/// itself, as before this existed: the value becomes a string, but nothing in a range survives).
pub(super) fn mask_nested(v: &AnyValue, json: &str, ranges: &[Range<u32>]) -> Option<AnyValue> {
    let mut m = Masker {
        out: String::with_capacity(json.len()),
        ranges: ranges.iter().filter(|r| r.start < r.end).cloned().collect(),
        next: 0,
    };
    let mut v = v.clone();
    m.value(&mut v);
    (m.out == json).then_some(v)
}

/// Renders a value as JSON (as `json_of_ref` does) while masking what the ranges cover.
struct Masker {
    /// The JSON text rendered so far: positions in it are positions in the redactor's text.
    out: String,
    /// The non-empty mask ranges, sorted.
    ranges: Vec<Range<u32>>,
    /// The first range that may still overlap what comes next.
    next: usize,
}

impl Masker {
    /// Whether JSON bytes `start..end` overlap a range. Called with non-decreasing `start`.
    fn hit(&mut self, start: usize, end: usize) -> bool {
        while self
            .ranges
            .get(self.next)
            .is_some_and(|r| r.end as usize <= start)
        {
            self.next += 1;
        }
        self.ranges
            .get(self.next)
            .is_some_and(|r| (r.start as usize) < end)
    }

    fn value(&mut self, v: &mut AnyValue) {
        let new = match &mut v.value {
            None | Some(Value::StringValueStrindex(_)) => {
                self.out.push_str("null");
                None
            }
            Some(Value::StringValue(s)) => {
                if let Some(masked) = self.string(s) {
                    *s = masked;
                }
                None
            }
            Some(Value::BoolValue(b)) => self.scalar(if *b { "true" } else { "false" }, false),
            Some(Value::IntValue(n)) => self.scalar(&n.to_string(), false),
            Some(Value::DoubleValue(d)) => self.scalar(&d.to_string(), !d.is_finite()),
            Some(Value::BytesValue(b)) => {
                self.bytes(b);
                None
            }
            Some(Value::ArrayValue(a)) => {
                self.out.push('[');
                for (i, item) in a.values.iter_mut().enumerate() {
                    if i > 0 {
                        self.out.push(',');
                    }
                    self.value(item);
                }
                self.out.push(']');
                None
            }
            Some(Value::KvlistValue(l)) => {
                self.out.push('{');
                for (i, kv) in l.values.iter_mut().enumerate() {
                    if i > 0 {
                        self.out.push(',');
                    }
                    if let Some(masked) = self.string(&kv.key) {
                        kv.key = masked;
                    }
                    self.out.push(':');
                    match kv.value.as_mut() {
                        Some(v) => self.value(v),
                        None => self.out.push_str("null"),
                    }
                }
                self.out.push('}');
                None
            }
        };
        if let Some(masked) = new {
            v.value = Some(Value::StringValue(masked));
        }
    }

    /// Writes `s` as a JSON string; the masked string when a range covers part of it.
    fn string(&mut self, s: &str) -> Option<String> {
        self.out.push('"');
        let mut masked: Option<String> = None;
        for (i, c) in s.char_indices() {
            let start = self.out.len();
            push_json_escaped(&mut self.out, c);
            if self.hit(start, self.out.len()) {
                masked.get_or_insert_with(|| s[..i].to_owned()).push('*');
            } else if let Some(m) = masked.as_mut() {
                m.push(c);
            }
        }
        self.out.push('"');
        masked
    }

    /// Writes a bool, int or double literal (quoted for a non-finite double, as OTLP/JSON writes it);
    /// its text with the covered characters as `*` when a range covers part of it.
    fn scalar(&mut self, text: &str, quoted: bool) -> Option<String> {
        if quoted {
            self.out.push('"');
        }
        let base = self.out.len();
        self.out.push_str(text);
        if quoted {
            self.out.push('"');
        }
        let mut masked: Option<String> = None;
        // Literals are ASCII: a character is a byte.
        for (i, c) in text.char_indices() {
            let at = base + i;
            if self.hit(at, at + c.len_utf8()) {
                masked.get_or_insert_with(|| text[..i].to_owned()).push('*');
            } else if let Some(m) = masked.as_mut() {
                m.push(c);
            }
        }
        masked
    }

    /// Writes bytes as quoted base64 and masks each byte one of whose base64 digits a range covers.
    fn bytes(&mut self, b: &mut [u8]) {
        self.out.push('"');
        let base = self.out.len();
        base64(&mut self.out, b);
        let digits = self.out.len() - base;
        self.out.push('"');
        for p in 0..digits {
            if !self.hit(base + p, base + p + 1) {
                continue;
            }
            // Digit k of group g carries bits of bytes 3g..3g+2: k=0 of byte 0, k=1 of bytes 0-1, k=2 of
            // bytes 1-2, k=3 of byte 2 (padding `=` digits carry none: their bytes are past the end).
            let (g, k) = (p / 4, p % 4);
            let covered = match k {
                0 => 0..1,
                1 => 0..2,
                2 => 1..3,
                _ => 2..3,
            };
            for j in covered {
                if let Some(byte) = b.get_mut(3 * g + j) {
                    *byte = b'*';
                }
            }
        }
    }
}
