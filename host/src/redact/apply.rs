//! Applies one redactor's edits to a trace: decodes only what is edited (spans, resources, scopes) with
//! prost, changes it and re-encodes it. Spans whose resource or scope changed are re-scanned into
//! [`SpanRecord`]s (their origin and its `service.name` are read again); spans where only their own
//! strings changed keep their record's indexed fields ([`SpanRecord::reencoded`]); untouched spans keep
//! their records as they are.

use super::{AUDIT_COUNT_KEY, AUDIT_RULES_KEY, KeyedHasher, describe, splice};
use crate::otlp::{ExportBuilder, Origin, SpanRecord, scan_export_request};
use crate::plugin::{EditAction, FieldKind, FieldRef, RedactionEdit, TraceLayout, layout};
use bytes::Bytes;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span as ProtoSpan};
use prost::Message;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

/// Longest replacement value or key accepted from a redactor.
const MAX_REPLACEMENT: usize = 16 << 10;

/// Why a redactor's edits could not be applied. Any of these fails the redactor (fail closed).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ApplyError {
    #[error("edit of {0}: no such field in the trace")]
    NoSuchField(String),
    #[error("edit of {0}: {1} is only allowed on attributes")]
    NotAnAttribute(String, &'static str),
    #[error("edit of {0}: mask {1}..{2} is outside the value or splits a character")]
    BadMask(String, u32, u32),
    #[error("edit of {0}: mask ranges overlap or are not sorted")]
    UnsortedMask(String),
    #[error("edit of {0}: replacement longer than {MAX_REPLACEMENT} bytes")]
    TooLong(String),
    #[error("edit of {0}: rename-key to {1:?}, a key the host reserves for its redaction audit")]
    ReservedKey(String, String),
    #[error("redacted spans did not re-scan as valid OTLP: {0}")]
    Rescan(String),
}

/// The result of applying edits.
#[derive(Debug)]
pub struct Applied {
    /// The trace's spans (re-encoded where edited; the order may differ from the input's).
    pub spans: Vec<SpanRecord>,
    /// Span ids of the spans whose content changed (their own fields, resource or scope).
    pub edited_span_ids: Vec<u64>,
}

/// A decoded attribute list with tombstones, so indexes stay stable while edits remove attributes.
struct Attrs<'a> {
    list: &'a mut Vec<KeyValue>,
}

/// Applies `edits` (from the rule named `rule`) to `spans`. Edits to one field apply in order; an edit
/// of an attribute an earlier edit removed is a no-op. Returns the spans unchanged (same records) when
/// `edits` is empty.
///
/// Spans with only span attribute edits are edited in their encoded bytes (`redact/splice.rs`, see
/// [`SPLICE_SPAN_EDITS`]); other edited spans are decoded, edited and re-encoded with `prost`.
pub fn apply(
    spans: &[SpanRecord],
    edits: &[RedactionEdit],
    rule: &str,
    hasher: &KeyedHasher,
) -> Result<Applied, ApplyError> {
    apply_with(spans, edits, rule, hasher, SPLICE_SPAN_EDITS)
}

/// Whether [`apply`] edits span attributes in the encoded span (`redact/splice.rs`) instead of decoding
/// and re-encoding it (about 45 % fewer instructions to apply the edits of a 10-span trace). It was off
/// for a while: the `redactor_edits` fuzz target found the two paths disagreeing on an attribute renamed
/// into an audit key (the decoded path's audit updated it, the spliced one added its own); such a rename
/// is refused now ([`ApplyError::ReservedKey`]), and the input is kept as
/// `fuzz/corpus/redactor_edits/seed-splice-disagrees-with-decoded`.
pub const SPLICE_SPAN_EDITS: bool = true;

/// [`apply`] with every edited span decoded and re-encoded by `prost`: the reference the byte-level
/// path is tested against (unit tests, the `redactor_edits` fuzz target).
pub fn apply_without_splicing(
    spans: &[SpanRecord],
    edits: &[RedactionEdit],
    rule: &str,
    hasher: &KeyedHasher,
) -> Result<Applied, ApplyError> {
    apply_with(spans, edits, rule, hasher, false)
}

/// [`apply`] with splicing on or off whatever [`SPLICE_SPAN_EDITS`] says (the tests compare both).
///
/// Three phases: each edit is checked and applied to what it edits (decoded resources, scopes and spans,
/// or queued for the byte-level splice), removed attributes are dropped, and what changed is re-encoded
/// (and re-scanned where a span's origin changed).
pub(super) fn apply_with(
    spans: &[SpanRecord],
    edits: &[RedactionEdit],
    rule: &str,
    hasher: &KeyedHasher,
    splicing: bool,
) -> Result<Applied, ApplyError> {
    if edits.is_empty() {
        return Ok(Applied {
            spans: spans.to_vec(),
            edited_span_ids: Vec::new(),
        });
    }
    let l = layout(spans);
    let mut work = Work::new(edits, splicing);
    for e in edits {
        check_edit(e)?;
        work.edit(spans, &l, e, hasher)?;
    }
    work.drop_removed();
    work.reencode(spans, &l, rule, hasher)
}

/// The removal mark of an attribute, see [`tombstone`].
type Tomb = (FieldKind, u32, u32, u32);

/// Refuses an edit its field kind does not allow (remove and rename-key on non-attributes) or a
/// replacement past [`MAX_REPLACEMENT`].
fn check_edit(e: &RedactionEdit) -> Result<(), ApplyError> {
    let f = &e.field;
    if matches!(e.action, EditAction::Remove | EditAction::RenameKey(_)) && !f.kind.is_attribute() {
        let name = if e.action == EditAction::Remove {
            "remove"
        } else {
            "rename-key"
        };
        return Err(ApplyError::NotAnAttribute(describe(f), name));
    }
    if let EditAction::Replace(s) | EditAction::RenameKey(s) = &e.action
        && s.len() > MAX_REPLACEMENT
    {
        return Err(ApplyError::TooLong(describe(f)));
    }
    Ok(())
}

/// What the edits of one redactor changed so far: the decoded resources, scopes and spans (by index in
/// the trace layout), the attributes marked removed, the span attribute edits left to the byte-level
/// splice, and the edit counts for the audit attributes.
struct Work<'e> {
    splicing: bool,
    resources: BTreeMap<u32, ResourceSpans>,
    scopes: BTreeMap<u32, ScopeSpans>,
    decoded: BTreeMap<u32, ProtoSpan>,
    removed: HashSet<Tomb>,
    span_edits: HashMap<u32, i64>,
    resource_edits: HashMap<u32, i64>,
    scope_edits: HashMap<u32, i64>,
    /// Spans edited in their bytes take only span attribute edits; spans with any other edit of their
    /// own are decoded (their span attribute edits with them).
    not_spliced: HashSet<u32>,
    /// The splice's edits per span, in order; applied when the span is re-encoded (decoded after all
    /// if the byte-level path declines, e.g. for a span that carries audit attributes already).
    spliced: BTreeMap<u32, Vec<&'e RedactionEdit>>,
}

impl<'e> Work<'e> {
    fn new(edits: &[RedactionEdit], splicing: bool) -> Self {
        let not_spliced = if splicing {
            edits
                .iter()
                .filter(|e| !e.field.kind.is_attribute() || is_span_item_attribute(e.field.kind))
                .map(|e| e.field.owner)
                .collect()
        } else {
            HashSet::new()
        };
        Work {
            splicing,
            resources: BTreeMap::new(),
            scopes: BTreeMap::new(),
            decoded: BTreeMap::new(),
            removed: HashSet::new(),
            span_edits: HashMap::new(),
            resource_edits: HashMap::new(),
            scope_edits: HashMap::new(),
            not_spliced,
            spliced: BTreeMap::new(),
        }
    }

    /// Applies one (checked) edit to what it targets, decoding that on first use.
    fn edit(
        &mut self,
        spans: &[SpanRecord],
        l: &TraceLayout,
        e: &'e RedactionEdit,
        hasher: &KeyedHasher,
    ) -> Result<(), ApplyError> {
        let f = &e.field;
        let what = || describe(f);
        let tomb = tombstone(f);
        match f.kind {
            FieldKind::ResourceAttribute => {
                let first = *l
                    .resource_first_span
                    .get(f.owner as usize)
                    .ok_or_else(|| ApplyError::NoSuchField(what()))?;
                let r = self
                    .resources
                    .entry(f.owner)
                    .or_insert_with(|| decode_resource(&spans[first as usize].origin));
                let list = &mut r.resource.get_or_insert_with(Default::default).attributes;
                edit_attribute(
                    Attrs { list },
                    f,
                    &e.action,
                    &mut self.removed,
                    tomb,
                    hasher,
                )?;
                *self.resource_edits.entry(f.owner).or_default() += 1;
            }
            FieldKind::ScopeAttribute => {
                let first = *l
                    .scope_first_span
                    .get(f.owner as usize)
                    .ok_or_else(|| ApplyError::NoSuchField(what()))?;
                let s = self
                    .scopes
                    .entry(f.owner)
                    .or_insert_with(|| decode_scope(&spans[first as usize].origin));
                let list = &mut s.scope.get_or_insert_with(Default::default).attributes;
                edit_attribute(
                    Attrs { list },
                    f,
                    &e.action,
                    &mut self.removed,
                    tomb,
                    hasher,
                )?;
                *self.scope_edits.entry(f.owner).or_default() += 1;
            }
            _ => {
                let record = spans
                    .get(f.owner as usize)
                    .ok_or_else(|| ApplyError::NoSuchField(what()))?;
                *self.span_edits.entry(f.owner).or_default() += 1;
                if self.splicing
                    && f.kind == FieldKind::SpanAttribute
                    && !self.not_spliced.contains(&f.owner)
                {
                    self.spliced.entry(f.owner).or_default().push(e);
                    return Ok(());
                }
                self.not_spliced.insert(f.owner);
                let span = self
                    .decoded
                    .entry(f.owner)
                    .or_insert_with(|| decode_span(record));
                edit_span_field(span, f, &e.action, &mut self.removed, tomb, hasher)?;
            }
        }
        Ok(())
    }

    /// Drops removed attributes (indexes were stable until now): one pass per list, which drops all of
    /// its marked indexes at once. (A pass per mark, as this once was, shifted the second mark of a
    /// list onto a neighbour: removing two attributes of a span removed three or four.)
    fn drop_removed(&mut self) {
        let lists: HashSet<(FieldKind, u32, u32)> =
            self.removed.iter().map(|&(k, o, i, _)| (k, o, i)).collect();
        let removed = &self.removed;
        for (kind, owner, item) in lists {
            let keep = |list: &mut Vec<KeyValue>| {
                let mut i = 0u32;
                list.retain(|_| {
                    let gone = removed.contains(&(kind, owner, item, i));
                    i += 1;
                    !gone
                });
            };
            let list = match kind {
                FieldKind::ResourceAttribute => self
                    .resources
                    .get_mut(&owner)
                    .and_then(|r| r.resource.as_mut())
                    .map(|r| &mut r.attributes),
                FieldKind::ScopeAttribute => self
                    .scopes
                    .get_mut(&owner)
                    .and_then(|s| s.scope.as_mut())
                    .map(|s| &mut s.attributes),
                FieldKind::SpanAttribute => self.decoded.get_mut(&owner).map(|s| &mut s.attributes),
                FieldKind::EventAttribute => self
                    .decoded
                    .get_mut(&owner)
                    .and_then(|s| s.events.get_mut(item as usize))
                    .map(|ev| &mut ev.attributes),
                FieldKind::LinkAttribute => self
                    .decoded
                    .get_mut(&owner)
                    .and_then(|s| s.links.get_mut(item as usize))
                    .map(|k| &mut k.attributes),
                FieldKind::SpanName | FieldKind::StatusMessage | FieldKind::EventName => None,
            };
            if let Some(list) = list {
                keep(list);
            }
        }
    }

    /// Re-encodes what changed: new resource and scope bytes, then every span that changed (its own
    /// fields or its origin). Spans with no edit of their own, resource or scope keep their record as
    /// it is; spans whose origin changed are re-scanned (their `service.name` may have changed).
    fn reencode(
        mut self,
        spans: &[SpanRecord],
        l: &TraceLayout,
        rule: &str,
        hasher: &KeyedHasher,
    ) -> Result<Applied, ApplyError> {
        let new_resources: HashMap<u32, Bytes> = self
            .resources
            .iter()
            .map(|(i, r)| (*i, Bytes::from(r.encode_to_vec())))
            .collect();
        let new_scopes: HashMap<u32, Bytes> = self
            .scopes
            .iter()
            .map(|(i, s)| (*i, Bytes::from(s.encode_to_vec())))
            .collect();
        let mut origins: HashMap<(u32, u32), Arc<Origin>> = HashMap::new();
        let mut builder = ExportBuilder::new();
        let mut edited_span_ids = Vec::new();
        let mut unchanged = Vec::new();
        let mut rescanned = 0;
        for (i, record) in spans.iter().enumerate() {
            let (ri, si) = (l.span_resource[i], l.span_scope[i]);
            let count = self.span_edits.get(&(i as u32)).copied().unwrap_or(0)
                + self.resource_edits.get(&ri).copied().unwrap_or(0)
                + self.scope_edits.get(&si).copied().unwrap_or(0);
            let origin_changed = new_resources.contains_key(&ri) || new_scopes.contains_key(&si);
            if count == 0 && !origin_changed {
                unchanged.push(record.clone());
                continue;
            }
            let raw = if count == 0 {
                record.raw.clone()
            } else {
                edited_span_ids.push(record.span_id);
                self.encode_span(i as u32, record, count, rule, hasher)?
            };
            if !origin_changed {
                // Only strings of the span changed, and it was encoded whole: no need to re-scan it.
                unchanged.push(record.reencoded(raw));
                continue;
            }
            let origin = origins.entry((ri, si)).or_insert_with(|| {
                Arc::new(Origin {
                    resource_fields: new_resources
                        .get(&ri)
                        .cloned()
                        .unwrap_or_else(|| record.origin.resource_fields.clone()),
                    scope_fields: new_scopes
                        .get(&si)
                        .cloned()
                        .unwrap_or_else(|| record.origin.scope_fields.clone()),
                    // Recomputed by the re-scan below.
                    service_name: "".into(),
                })
            });
            builder.push_raw(origin, raw, Bytes::new());
            rescanned += 1;
        }
        let mut spans = if rescanned > 0 {
            rescan(builder, rescanned)?
        } else {
            Vec::new()
        };
        spans.extend(unchanged);
        Ok(Applied {
            spans,
            edited_span_ids,
        })
    }

    /// The new bytes of span `i`, which `count` edits (its own, its resource's and scope's) touched:
    /// spliced when only its attributes were edited and the byte-level path takes it, otherwise
    /// decoded, edited, given its audit attributes and encoded by `prost`.
    fn encode_span(
        &mut self,
        i: u32,
        record: &SpanRecord,
        count: i64,
        rule: &str,
        hasher: &KeyedHasher,
    ) -> Result<Bytes, ApplyError> {
        let own = self.spliced.remove(&i);
        if let Some(own) = &own
            && let Some(raw) = splice::splice_span(&record.raw, own, count, rule, hasher)?
        {
            return Ok(Bytes::from(raw));
        }
        let mut span = match self.decoded.remove(&i) {
            Some(span) => span,
            // The byte-level path declined: the same edits, decoded.
            None => decode_and_edit(record, own.iter().flatten().copied(), hasher)?,
        };
        add_audit(&mut span.attributes, count, rule);
        Ok(Bytes::from(span.encode_to_vec()))
    }
}

/// Event and link attributes belong to a span's items: the splice edits only the span's own list.
fn is_span_item_attribute(kind: FieldKind) -> bool {
    matches!(kind, FieldKind::EventAttribute | FieldKind::LinkAttribute)
}

/// Decodes a span and applies span attribute edits to it (the fallback when splicing declines).
fn decode_and_edit<'e>(
    record: &SpanRecord,
    edits: impl Iterator<Item = &'e RedactionEdit>,
    hasher: &KeyedHasher,
) -> Result<ProtoSpan, ApplyError> {
    let mut span = decode_span(record);
    let mut removed = HashSet::new();
    for e in edits {
        let f = &e.field;
        edit_span_field(&mut span, f, &e.action, &mut removed, tombstone(f), hasher)?;
    }
    let mut n = 0u32;
    span.attributes.retain(|_| {
        n += 1;
        !removed.iter().any(|t: &Tomb| t.3 == n - 1)
    });
    Ok(span)
}

/// The removal mark of an attribute: which list (kind, owner, and for event and link attributes the
/// event or link) and which index. `item` means nothing for span, resource and scope attributes: a
/// reference carrying one anyway names the same attribute (the fuzzer found two such removals of one
/// attribute counted as two removals, the second shifting onto its neighbour).
fn tombstone(f: &FieldRef) -> (FieldKind, u32, u32, u32) {
    let item = match f.kind {
        FieldKind::EventAttribute | FieldKind::LinkAttribute => f.item,
        _ => 0,
    };
    (f.kind, f.owner, item, f.attribute_index)
}

/// Encodes spans under their origins and scans them back into records, checking none was refused.
pub(super) fn rescan(
    builder: ExportBuilder,
    expected: usize,
) -> Result<Vec<SpanRecord>, ApplyError> {
    let body = builder.finish();
    let scanned = scan_export_request(&body).map_err(|e| ApplyError::Rescan(e.to_string()))?;
    if scanned.rejected_count() > 0 || scanned.spans.len() != expected {
        return Err(ApplyError::Rescan(
            scanned
                .rejection_message()
                .unwrap_or_else(|| format!("{} spans in, {} out", expected, scanned.spans.len())),
        ));
    }
    Ok(scanned.spans.into_iter().map(|(_, s)| s).collect())
}

/// Adds (or updates) the audit attributes of a span.
pub(super) fn add_audit(attrs: &mut Vec<KeyValue>, count: i64, rule: &str) {
    let mut have_count = false;
    let mut have_rules = false;
    for kv in attrs.iter_mut() {
        match (
            kv.key.as_str(),
            kv.value.as_mut().and_then(|v| v.value.as_mut()),
        ) {
            (AUDIT_COUNT_KEY, Some(any_value::Value::IntValue(n))) if !have_count => {
                *n = n.saturating_add(count);
                have_count = true;
            }
            (AUDIT_RULES_KEY, Some(any_value::Value::StringValue(s))) if !have_rules => {
                if !s.split(',').any(|r| r == rule) {
                    s.push(',');
                    s.push_str(rule);
                }
                have_rules = true;
            }
            _ => {}
        }
    }
    if !have_count {
        attrs.push(KeyValue {
            key: AUDIT_COUNT_KEY.into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::IntValue(count)),
            }),
            ..Default::default()
        });
    }
    if !have_rules {
        attrs.push(string_kv(AUDIT_RULES_KEY, rule.to_owned()));
    }
}

fn string_kv(key: &str, value: String) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value)),
        }),
        ..Default::default()
    }
}

pub(super) fn decode_span(r: &SpanRecord) -> ProtoSpan {
    // The bytes passed the receiver's validating scan; a decode failure would be a scan bug, and an empty
    // span (which the re-scan then refuses, failing closed) is the safe answer.
    ProtoSpan::decode(&r.raw[..]).unwrap_or_default()
}

pub(super) fn decode_resource(o: &Origin) -> ResourceSpans {
    ResourceSpans::decode(&o.resource_fields[..]).unwrap_or_default()
}

pub(super) fn decode_scope(o: &Origin) -> ScopeSpans {
    ScopeSpans::decode(&o.scope_fields[..]).unwrap_or_default()
}

fn edit_span_field(
    span: &mut ProtoSpan,
    f: &FieldRef,
    action: &EditAction,
    removed: &mut HashSet<(FieldKind, u32, u32, u32)>,
    tomb: (FieldKind, u32, u32, u32),
    hasher: &KeyedHasher,
) -> Result<(), ApplyError> {
    let what = || describe(f);
    match f.kind {
        FieldKind::SpanName => edit_text(&mut span.name, f, action, hasher),
        FieldKind::StatusMessage => {
            let st = span
                .status
                .as_mut()
                .filter(|s| !s.message.is_empty())
                .ok_or_else(|| ApplyError::NoSuchField(what()))?;
            edit_text(&mut st.message, f, action, hasher)
        }
        FieldKind::EventName => {
            let ev = span
                .events
                .get_mut(f.item as usize)
                .ok_or_else(|| ApplyError::NoSuchField(what()))?;
            edit_text(&mut ev.name, f, action, hasher)
        }
        FieldKind::SpanAttribute => edit_attribute(
            Attrs {
                list: &mut span.attributes,
            },
            f,
            action,
            removed,
            tomb,
            hasher,
        ),
        FieldKind::EventAttribute => {
            let ev = span
                .events
                .get_mut(f.item as usize)
                .ok_or_else(|| ApplyError::NoSuchField(what()))?;
            edit_attribute(
                Attrs {
                    list: &mut ev.attributes,
                },
                f,
                action,
                removed,
                tomb,
                hasher,
            )
        }
        FieldKind::LinkAttribute => {
            let k = span
                .links
                .get_mut(f.item as usize)
                .ok_or_else(|| ApplyError::NoSuchField(what()))?;
            edit_attribute(
                Attrs {
                    list: &mut k.attributes,
                },
                f,
                action,
                removed,
                tomb,
                hasher,
            )
        }
        FieldKind::ResourceAttribute | FieldKind::ScopeAttribute => {
            Err(ApplyError::NoSuchField(what()))
        }
    }
}

/// Edits a name or message.
fn edit_text(
    text: &mut String,
    f: &FieldRef,
    action: &EditAction,
    hasher: &KeyedHasher,
) -> Result<(), ApplyError> {
    match action {
        EditAction::Replace(s) => *text = s.clone(),
        EditAction::Hash => *text = hasher.token(text.as_bytes()),
        EditAction::Mask(ranges) => *text = mask_str(text, ranges, f)?,
        EditAction::Remove => return Err(ApplyError::NotAnAttribute(describe(f), "remove")),
        EditAction::RenameKey(_) => {
            return Err(ApplyError::NotAnAttribute(describe(f), "rename-key"));
        }
    }
    Ok(())
}

fn edit_attribute(
    attrs: Attrs<'_>,
    f: &FieldRef,
    action: &EditAction,
    removed: &mut HashSet<(FieldKind, u32, u32, u32)>,
    tomb: (FieldKind, u32, u32, u32),
    hasher: &KeyedHasher,
) -> Result<(), ApplyError> {
    let kv = attrs
        .list
        .get_mut(f.attribute_index as usize)
        .ok_or_else(|| ApplyError::NoSuchField(describe(f)))?;
    if removed.contains(&tomb) {
        return Ok(());
    }
    if edit_kv(kv, f, action, hasher)? {
        removed.insert(tomb);
    }
    Ok(())
}

/// Applies one edit to an attribute; `Ok(true)` when the edit removes it.
pub(super) fn edit_kv(
    kv: &mut KeyValue,
    f: &FieldRef,
    action: &EditAction,
    hasher: &KeyedHasher,
) -> Result<bool, ApplyError> {
    match action {
        EditAction::Remove => return Ok(true),
        // A redactor cannot write the audit attributes: the host would count its edits into them.
        EditAction::RenameKey(k) if k == AUDIT_COUNT_KEY || k == AUDIT_RULES_KEY => {
            return Err(ApplyError::ReservedKey(describe(f), k.clone()));
        }
        EditAction::RenameKey(k) => kv.key = k.clone(),
        EditAction::Replace(s) => {
            kv.value = Some(AnyValue {
                value: Some(any_value::Value::StringValue(s.clone())),
            })
        }
        EditAction::Hash => {
            let token = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(any_value::Value::BytesValue(b)) => hasher.token(b),
                _ => hasher.token(value_text(kv.value.as_ref()).as_bytes()),
            };
            kv.value = Some(AnyValue {
                value: Some(any_value::Value::StringValue(token)),
            });
        }
        EditAction::Mask(ranges) => {
            let new = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(any_value::Value::BytesValue(b)) => {
                    any_value::Value::BytesValue(mask_bytes(b, ranges, f)?)
                }
                Some(any_value::Value::ArrayValue(_) | any_value::Value::KvlistValue(_)) => {
                    return mask_container(kv, ranges, f).map(|()| false);
                }
                _ => any_value::Value::StringValue(mask_str(
                    &value_text(kv.value.as_ref()),
                    ranges,
                    f,
                )?),
            };
            kv.value = Some(AnyValue { value: Some(new) });
        }
    }
    Ok(false)
}

/// Masks an array or kvlist value in the elements the ranges (of its JSON text) cover, keeping its shape
/// (see `redact/nested.rs`).
fn mask_container(
    kv: &mut KeyValue,
    ranges: &[std::ops::Range<u32>],
    f: &FieldRef,
) -> Result<(), ApplyError> {
    let json = value_text(kv.value.as_ref());
    check_ranges(json.len(), ranges, f, |i| json.is_char_boundary(i))?;
    let Some(v) = kv.value.as_ref() else {
        return Ok(());
    };
    kv.value = Some(match super::nested::mask_nested(v, &json, ranges) {
        Some(masked) => masked,
        // The element mapping did not reproduce the redactor's text (a bug): mask the text itself, so
        // nothing in a range survives, at the cost of the value's type.
        None => AnyValue {
            value: Some(any_value::Value::StringValue(mask_str(&json, ranges, f)?)),
        },
    });
    Ok(())
}

/// A value's text exactly as the redactor saw it in the packed trace (see `value-type` in the WIT).
pub(super) fn value_text(v: Option<&AnyValue>) -> String {
    use any_value::Value;
    match v.and_then(|v| v.value.as_ref()) {
        None | Some(Value::StringValueStrindex(_)) => String::new(),
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::IntValue(n)) => n.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        Some(Value::BytesValue(b)) => String::from_utf8_lossy(b).into_owned(),
        Some(Value::ArrayValue(_) | Value::KvlistValue(_)) => {
            let bytes = v.map(|v| v.encode_to_vec()).unwrap_or_default();
            crate::plugin::json_of_ref(crate::otlp::AnyValueRef::decode(&bytes))
        }
    }
}

fn check_ranges(
    len: usize,
    ranges: &[std::ops::Range<u32>],
    f: &FieldRef,
    ok: impl Fn(usize) -> bool,
) -> Result<(), ApplyError> {
    let mut prev_end = 0u32;
    for (i, r) in ranges.iter().enumerate() {
        if r.start > r.end || r.end as usize > len || !ok(r.start as usize) || !ok(r.end as usize) {
            return Err(ApplyError::BadMask(describe(f), r.start, r.end));
        }
        if i > 0 && r.start < prev_end {
            return Err(ApplyError::UnsortedMask(describe(f)));
        }
        prev_end = r.end;
    }
    Ok(())
}

/// Replaces each character in `ranges` (byte offsets on character boundaries) with `*`.
fn mask_str(
    text: &str,
    ranges: &[std::ops::Range<u32>],
    f: &FieldRef,
) -> Result<String, ApplyError> {
    check_ranges(text.len(), ranges, f, |i| text.is_char_boundary(i))?;
    let mut out = String::with_capacity(text.len());
    let mut at = 0usize;
    for r in ranges {
        let (s, e) = (r.start as usize, r.end as usize);
        out.push_str(&text[at..s]);
        out.extend(std::iter::repeat_n('*', text[s..e].chars().count()));
        at = e;
    }
    out.push_str(&text[at..]);
    Ok(out)
}

fn mask_bytes(
    b: &[u8],
    ranges: &[std::ops::Range<u32>],
    f: &FieldRef,
) -> Result<Vec<u8>, ApplyError> {
    check_ranges(b.len(), ranges, f, |_| true)?;
    let mut out = b.to_vec();
    for r in ranges {
        out[r.start as usize..r.end as usize].fill(b'*');
    }
    Ok(out)
}
