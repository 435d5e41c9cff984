//! Span attribute edits applied to the encoded span in place: the span's top-level fields are copied as
//! they are, except the edited attributes (field 9), each decoded alone, edited and re-encoded (or
//! dropped), and the audit attributes, appended as two more field-9 entries. Equal in meaning to decoding
//! the whole span with `prost`, editing and re-encoding it (`apply`'s general path, which this replaces
//! for the common case; tested against it in `redact::tests` and by the `redactor_edits` fuzz target),
//! at a fraction of the cost: most of a span is a memcpy.
//!
//! Unknown fields and the encoder's field order are kept (`prost` would drop the first and reorder).
//! The result can keep the span's indexed fields (`SpanRecord::reencoded`) as prost's output can: the
//! copied fields passed the receiver's validating scan and the new ones are written by prost, and ids and
//! times are never among the edited fields.

use super::apply::{ApplyError, edit_kv};
use super::{AUDIT_COUNT_KEY, AUDIT_RULES_KEY, KeyedHasher, describe};
use crate::otlp::next_field;
use crate::plugin::RedactionEdit;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use prost::Message;

/// Field number of `Span.attributes`.
const ATTRIBUTES: u64 = 9;

/// Whether an encoded `KeyValue` has an audit key (any occurrence of its key field): such a span
/// already went through a rule, and updating its audit attributes is left to the general path.
fn is_audit(kv: &[u8]) -> bool {
    let mut pos = 0;
    while pos < kv.len() {
        match next_field(kv, &mut pos) {
            // Field 1, `key`.
            Some((1, 2, start, end)) => {
                let k = &kv[start..end];
                if k == AUDIT_COUNT_KEY.as_bytes() || k == AUDIT_RULES_KEY.as_bytes() {
                    return true;
                }
            }
            Some(_) => {}
            None => return true,
        }
    }
    false
}

/// The span `raw` with the span attribute `edits` (in the order given, all of this span) applied and
/// the audit attributes (`count` edits by `rule`) added. `Ok(None)` when the bytes are not what this
/// path handles (malformed, or an edited attribute that does not decode): the caller takes the general
/// path, which decides what such bytes mean, and when the span already carries an audit attribute (a
/// rule before this one edited it: the general path updates it). Errors are the general path's for
/// the same edits.
pub(super) fn splice_span(
    raw: &[u8],
    edits: &[&RedactionEdit],
    count: i64,
    rule: &str,
    hasher: &KeyedHasher,
) -> Result<Option<Vec<u8>>, ApplyError> {
    // Edits by attribute index, each index's edits in their order.
    let mut by_index: Vec<&RedactionEdit> = edits.to_vec();
    by_index.sort_by_key(|e| e.field.attribute_index);
    let mut next = by_index.iter().peekable();
    let mut out = Vec::with_capacity(raw.len() + 96);
    let (mut pos, mut index) = (0usize, 0u32);
    while pos < raw.len() {
        let start = pos;
        // Malformed bytes (the loop condition rules out the end): the general path decides.
        let Some((field, wire, p_start, p_end)) = next_field(raw, &mut pos) else {
            return Ok(None);
        };
        if (field, wire) != (ATTRIBUTES, 2) {
            out.extend_from_slice(&raw[start..pos]);
            continue;
        }
        let payload = &raw[p_start..p_end];
        if is_audit(payload) {
            return Ok(None);
        }
        let i = index;
        index += 1;
        if next.peek().is_none_or(|e| e.field.attribute_index != i) {
            out.extend_from_slice(&raw[start..pos]);
            continue;
        }
        let Ok(mut kv) = KeyValue::decode(payload) else {
            return Ok(None);
        };
        // As the general path's tombstones: a removal makes the attribute's later edits no-ops (whatever
        // `item` they carry: it means nothing for a span attribute).
        let mut removed = false;
        while let Some(e) = next.next_if(|e| e.field.attribute_index == i) {
            if !removed && edit_kv(&mut kv, &e.field, &e.action, hasher)? {
                removed = true;
            }
        }
        if !removed {
            prost::encoding::message::encode(ATTRIBUTES as u32, &kv, &mut out);
        }
    }
    // An edit past the last attribute names no field (as in the general path).
    if let Some(e) = next.next() {
        return Err(ApplyError::NoSuchField(describe(&e.field)));
    }
    let mut audit: Vec<KeyValue> = Vec::with_capacity(2);
    super::apply::add_audit(&mut audit, count, rule);
    for kv in &audit {
        prost::encoding::message::encode(ATTRIBUTES as u32, kv, &mut out);
    }
    Ok(Some(out))
}
