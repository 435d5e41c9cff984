//! Tests of edit application, the strict scrub and the fail-closed paths (with the hostile
//! `test-bad-redactor` component), and a property test: arbitrary edits never panic and never change
//! ids or timestamps.

// Masks of one range are the common case here, not a mistaken `vec![a..b]`.
#![allow(clippy::single_range_in_vec_init)]

use super::*;
use crate::metrics::Metrics;
use crate::otlp::scan_export_request;
use crate::plugin::{EditAction, FieldKind, PluginRuntime, PluginSpec, RuntimeSettings, pack};
use crate::testing::sample_request;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span as ProtoSpan;
use proptest::prelude::*;
use prost::Message;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

fn spans() -> Vec<SpanRecord> {
    let body = bytes::Bytes::from(sample_request().encode_to_vec());
    scan_export_request(&body)
        .expect("valid")
        .spans
        .into_iter()
        .map(|(_, s)| s)
        .collect()
}

fn hasher() -> KeyedHasher {
    KeyedHasher::new(b"0123456789abcdef0123", "k1")
}

fn edit(
    spans: &[SpanRecord],
    pick: impl Fn(&FieldRef) -> bool,
    action: EditAction,
) -> RedactionEdit {
    let packed = pack(spans);
    let field = packed
        .fields
        .iter()
        .find(|f| pick(f))
        .expect("field")
        .clone();
    RedactionEdit {
        field,
        action,
        reason: Some("test".into()),
    }
}

fn decoded(spans: &[SpanRecord]) -> Vec<ProtoSpan> {
    spans
        .iter()
        .map(|s| ProtoSpan::decode(&s.raw[..]).expect("span"))
        .collect()
}

fn ids(spans: &[SpanRecord]) -> Vec<(u64, u64, u64, u64, Vec<u8>)> {
    let mut v: Vec<_> = spans
        .iter()
        .map(|s| {
            let p = ProtoSpan::decode(&s.raw[..]).unwrap_or_default();
            (
                s.span_id,
                s.parent_span_id,
                s.start_unix_nano,
                s.end_unix_nano,
                p.trace_id,
            )
        })
        .collect();
    v.sort();
    v
}

/// Spans decoded and sorted by span id (the two apply paths may order spans differently).
fn by_id(spans: &[SpanRecord]) -> Vec<ProtoSpan> {
    let mut v = decoded(spans);
    v.sort_by(|a, b| a.span_id.cmp(&b.span_id));
    v
}

/// Span attribute edits of every action, several on one attribute, applied in the encoded bytes: the
/// same spans as decoding, editing and re-encoding them; untouched spans keep their bytes; a span that
/// already carries the audit attributes (a second rule) is updated the same way.
#[test]
fn byte_level_edits_equal_the_decoded_path() {
    use crate::testing::{kv_int, kv_str, request, span_in};
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
    let list: Vec<ProtoSpan> = (0..3u64)
        .map(|i| {
            let mut sp = span_in(7, i + 1, if i == 0 { 0 } else { 1 }, "op", 10, 20);
            sp.attributes = vec![
                kv_str("user.email", "ada@example.org"),
                kv_int("http.response.status_code", 200 + i as i64),
                kv_str("db.query.text", "SELECT 1 WHERE x = 'y'"),
                KeyValue {
                    key: "blob".into(),
                    value: Some(AnyValue {
                        value: Some(Value::BytesValue(vec![0xff, b'a', b'b', 0])),
                    }),
                    ..Default::default()
                },
                kv_str("note", "card 4111 1111 1111 1111 héllo"),
                kv_str("plain", "nothing"),
            ];
            sp.status = Some(opentelemetry_proto::tonic::trace::v1::Status {
                code: 2,
                message: "failed".into(),
            });
            sp
        })
        .collect();
    let body = bytes::Bytes::from(request("svc", list).encode_to_vec());
    let s: Vec<SpanRecord> = scan_export_request(&body)
        .expect("valid")
        .spans
        .into_iter()
        .map(|(_, s)| s)
        .collect();
    let packed = pack(&s);
    let attrs: Vec<&FieldRef> = packed
        .fields
        .iter()
        .filter(|f| f.kind == FieldKind::SpanAttribute)
        .collect();
    assert!(attrs.len() >= 4, "the sample has too few span attributes");
    let actions = [
        EditAction::Hash,
        EditAction::Replace("[REDACTED]".into()),
        EditAction::Mask(vec![0..1]),
        EditAction::RenameKey("renamed".into()),
        EditAction::Remove,
    ];
    let mut edits = Vec::new();
    for (i, f) in attrs.iter().enumerate() {
        edits.push(RedactionEdit {
            field: (*f).clone(),
            action: actions[i % actions.len()].clone(),
            reason: None,
        });
    }
    // A second edit of the first attribute, and an edit after a removal (a no-op).
    edits.push(RedactionEdit {
        field: attrs[0].clone(),
        action: EditAction::Replace("again".into()),
        reason: None,
    });
    if let Some(f) = attrs.get(4) {
        edits.push(RedactionEdit {
            field: (*f).clone(),
            action: EditAction::Hash,
            reason: None,
        });
    }
    let a = spliced(&s, &edits, "one").expect("spliced");
    let b = apply_without_splicing(&s, &edits, "one", &hasher()).expect("decoded");
    assert_eq!(by_id(&a.spans), by_id(&b.spans));
    assert!(!a.edited_span_ids.is_empty());
    // The byte-level path did run: it appends the audit attributes after the span's last field, where
    // prost writes them among the attributes, before the status.
    let raw = |out: &[SpanRecord], id: u64| {
        out.iter()
            .find(|r| r.span_id == id)
            .expect("span")
            .raw
            .clone()
    };
    let id = a.edited_span_ids[0];
    // The spliced bytes keep the sender's field order, so they differ from prost's.
    assert_ne!(raw(&a.spans, id), raw(&b.spans, id));
    for r in &a.spans {
        if !a.edited_span_ids.contains(&r.span_id) {
            let orig = s.iter().find(|o| o.span_id == r.span_id).expect("span");
            assert_eq!(r.raw, orig.raw);
        }
    }
    // A second rule over the result: the audit attributes exist now (the general path updates them).
    let packed2 = pack(&a.spans);
    let f = packed2
        .fields
        .iter()
        .find(|f| f.kind == FieldKind::SpanAttribute)
        .expect("attribute")
        .clone();
    let second = [RedactionEdit {
        field: f,
        action: EditAction::Replace("x".into()),
        reason: None,
    }];
    let a2 = spliced(&a.spans, &second, "two").expect("spliced");
    let b2 = apply_without_splicing(&a.spans, &second, "two", &hasher()).expect("decoded");
    assert_eq!(by_id(&a2.spans), by_id(&b2.spans));
    // An attribute index past the span's last: refused by both.
    let mut bad = attrs[0].clone();
    bad.attribute_index = 1000;
    let bad = [RedactionEdit {
        field: bad,
        action: EditAction::Hash,
        reason: None,
    }];
    assert!(matches!(
        spliced(&s, &bad, "one"),
        Err(ApplyError::NoSuchField(_))
    ));
    assert!(apply_without_splicing(&s, &bad, "one", &hasher()).is_err());
}

/// [`apply`] with span attribute edits spliced into the encoded span, whatever `SPLICE_SPAN_EDITS` says.
fn spliced(
    spans: &[SpanRecord],
    edits: &[RedactionEdit],
    rule: &str,
) -> Result<apply::Applied, ApplyError> {
    apply::apply_with(spans, edits, rule, &hasher(), true)
}

#[test]
fn renaming_a_key_to_an_audit_key_is_refused_spliced_or_decoded() {
    // Found by the `redactor_edits` fuzz target: renamed into an audit key, an attribute was updated by
    // the decoded path's audit and duplicated by the spliced one. Neither may happen: the audit is the
    // host's.
    let s = spans();
    for key in [AUDIT_COUNT_KEY, AUDIT_RULES_KEY] {
        let edits = [edit(
            &s,
            |f| f.kind == FieldKind::SpanAttribute,
            EditAction::RenameKey(key.into()),
        )];
        for out in [
            spliced(&s, &edits, "one"),
            apply_without_splicing(&s, &edits, "one", &hasher()),
        ] {
            match out {
                Err(ApplyError::ReservedKey(_, k)) => assert_eq!(k, key),
                other => panic!("{key}: {other:?}"),
            }
        }
    }
}

#[test]
fn removals_remove_exactly_the_attributes_named() {
    // Found by the `redactor_edits` fuzz target comparing the spliced and decoded paths: two removals in
    // one attribute list removed more than two attributes, and a removal named with a stray `item`
    // counted as a second removal.
    let s = spans();
    let packed = pack(&s);
    let owner = packed
        .fields
        .iter()
        .filter(|f| f.kind == FieldKind::SpanAttribute)
        .map(|f| f.owner)
        .max_by_key(|o| {
            packed
                .fields
                .iter()
                .filter(|f| f.kind == FieldKind::SpanAttribute && f.owner == *o)
                .count()
        })
        .expect("a span with attributes");
    let attrs: Vec<&FieldRef> = packed
        .fields
        .iter()
        .filter(|f| f.kind == FieldKind::SpanAttribute && f.owner == owner)
        .collect();
    assert!(attrs.len() >= 3, "the sample's span has too few attributes");
    let remove = |f: &FieldRef, item: u32| RedactionEdit {
        field: FieldRef { item, ..f.clone() },
        action: EditAction::Remove,
        reason: None,
    };
    let edits = [
        remove(attrs[0], 0),
        remove(attrs[2], 0),
        remove(attrs[2], 1),
        // After its removal, an edit that would fail is a no-op, whatever its item.
        RedactionEdit {
            field: FieldRef {
                item: 3,
                ..attrs[2].clone()
            },
            action: EditAction::Mask(vec![0..100_000]),
            reason: None,
        },
    ];
    let keys = |out: &[SpanRecord]| -> Vec<String> {
        let id = s[owner as usize].span_id;
        let r = out.iter().find(|r| r.span_id == id).expect("span");
        ProtoSpan::decode(&r.raw[..])
            .expect("span")
            .attributes
            .into_iter()
            .map(|kv| kv.key)
            .filter(|k| !k.starts_with("tailgate.redacted"))
            .collect()
    };
    let want: Vec<String> = attrs
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 0 && *i != 2)
        .map(|(_, f)| f.key.clone())
        .collect();
    let a = spliced(&s, &edits, "one").expect("spliced");
    let b = apply_without_splicing(&s, &edits, "one", &hasher()).expect("decoded");
    assert_eq!(keys(&a.spans), want);
    assert_eq!(keys(&b.spans), want);
    assert_eq!(by_id(&a.spans), by_id(&b.spans));
}

#[test]
fn edits_apply_and_are_audited() {
    let s = spans();
    let edits = vec![
        edit(
            &s,
            |f| f.kind == FieldKind::SpanName && f.owner == 2,
            EditAction::Replace("charge".into()),
        ),
        edit(&s, |f| f.key == "http.method", EditAction::Hash),
        edit(
            &s,
            |f| f.kind == FieldKind::StatusMessage,
            EditAction::Mask(vec![0..4]),
        ),
        edit(&s, |f| f.key == "attempt", EditAction::Remove),
        edit(
            &s,
            |f| f.key == "link.kind",
            EditAction::RenameKey("link.type".into()),
        ),
        edit(
            &s,
            |f| f.key == "service.name",
            EditAction::Replace("svc".into()),
        ),
    ];
    let out = apply(&s, &edits, "pii", &hasher()).expect("applies");
    assert_eq!(ids(&s), ids(&out.spans));
    let by_id = |id: u64| {
        let r = out.spans.iter().find(|r| r.span_id == id).expect("span");
        (r, ProtoSpan::decode(&r.raw[..]).expect("span"))
    };
    let (r3, p3) = by_id(0x3333_3333_3333_3333);
    assert_eq!(r3.name(), "charge");
    assert_eq!(
        p3.status.as_ref().map(|s| s.message.as_str()),
        Some("**** declined")
    );
    let (r1, p1) = by_id(0x1111_1111_1111_1111);
    let method = p1
        .attributes
        .iter()
        .find(|kv| kv.key == "http.method")
        .expect("kept");
    assert_eq!(
        method.value.as_ref().and_then(|v| v.value.clone()),
        Some(Value::StringValue(hasher().token(b"GET")))
    );
    assert!(hasher().token(b"GET").starts_with("hmac:k1:"));
    // Resource edits reach every span of the resource, and the origin's service name follows.
    assert_eq!(&*r1.origin.service_name, "svc");
    let audit = |p: &ProtoSpan| {
        p.attributes
            .iter()
            .find(|kv| kv.key == AUDIT_COUNT_KEY)
            .and_then(|kv| kv.value.as_ref().and_then(|v| v.value.clone()))
    };
    // root: the hash + the resource edit.
    assert_eq!(audit(&p1), Some(Value::IntValue(2)));
    let (_, p2) = by_id(0x2222_2222_2222_2222);
    assert!(p2.events[0].attributes.is_empty(), "attempt removed");
    assert_eq!(p2.links[0].attributes[0].key, "link.type");
    assert_eq!(p2.trace_state, "", "untouched fields stay");
    assert_eq!(out.edited_span_ids.len(), 3);
}

#[test]
fn a_mask_inside_an_array_keeps_the_array_and_a_masked_scalar_becomes_a_string() {
    use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue};
    let s = spans();
    // `tags` is `[true,1.5,"AAEC"]` to the redactor; 1..5 is the `true`.
    let tags = edit(&s, |f| f.key == "tags", EditAction::Mask(vec![1..5]));
    let out = apply(&s, &[tags], "r", &hasher()).expect("applies");
    let p = decoded(&out.spans);
    let root = p.iter().find(|p| p.name == "GET /checkout").expect("root");
    let v = root
        .attributes
        .iter()
        .find(|kv| kv.key == "tags")
        .and_then(|kv| kv.value.clone());
    let av = |v| AnyValue { value: Some(v) };
    assert_eq!(
        v.and_then(|v| v.value),
        Some(Value::ArrayValue(ArrayValue {
            values: vec![
                av(Value::StringValue("****".into())),
                av(Value::DoubleValue(1.5)),
                av(Value::BytesValue(vec![0, 1, 2])),
            ]
        }))
    );
}

// ---- type preservation: masks inside arrays and kvlists ----

fn any(v: Value) -> opentelemetry_proto::tonic::common::v1::AnyValue {
    opentelemetry_proto::tonic::common::v1::AnyValue { value: Some(v) }
}

fn array(values: Vec<opentelemetry_proto::tonic::common::v1::AnyValue>) -> Value {
    Value::ArrayValue(opentelemetry_proto::tonic::common::v1::ArrayValue { values })
}

fn kvlist(entries: Vec<(&str, opentelemetry_proto::tonic::common::v1::AnyValue)>) -> Value {
    use opentelemetry_proto::tonic::common::v1::{KeyValue, KeyValueList};
    Value::KvlistValue(KeyValueList {
        values: entries
            .into_iter()
            .map(|(k, v)| KeyValue {
                key: k.into(),
                value: Some(v),
                ..Default::default()
            })
            .collect(),
    })
}

fn kv_any(key: &str, v: Value) -> opentelemetry_proto::tonic::common::v1::KeyValue {
    opentelemetry_proto::tonic::common::v1::KeyValue {
        key: key.into(),
        value: Some(any(v)),
        ..Default::default()
    }
}

/// One span (id 1) with attribute `v` = `value` among others, and one event carrying `v` too.
fn span_with_value(value: Value) -> Vec<SpanRecord> {
    use crate::testing::{kv_str, request, span_in};
    use opentelemetry_proto::tonic::trace::v1::span::Event;
    let mut sp = span_in(9, 1, 0, "op", 10, 20);
    sp.attributes = vec![
        kv_str("before", "plain"),
        kv_any("v", value.clone()),
        kv_str("after", "plain"),
    ];
    sp.events = vec![Event {
        time_unix_nano: 15,
        name: "ev".into(),
        attributes: vec![kv_any("v", value)],
        ..Default::default()
    }];
    let body = bytes::Bytes::from(request("svc", vec![sp]).encode_to_vec());
    scan_export_request(&body)
        .expect("valid")
        .spans
        .into_iter()
        .map(|(_, s)| s)
        .collect()
}

/// The packed fields with key `v` (span attribute, event attribute) and the text the redactor sees.
fn packed_v(s: &[SpanRecord]) -> Vec<(FieldRef, String)> {
    let packed = pack(s);
    packed
        .fields
        .iter()
        .zip(&packed.wit.fields)
        .filter(|(f, _)| f.key == "v")
        .map(|(f, w)| {
            let r = w.value.offset as usize..(w.value.offset + w.value.len) as usize;
            (
                f.clone(),
                String::from_utf8(packed.wit.text[r].to_vec()).expect("json is UTF-8"),
            )
        })
        .collect()
}

/// Masks `ranges` of `v` as a span attribute and as an event attribute, by both apply paths (which
/// must agree); returns the two edited values.
fn mask_both_paths(
    value: Value,
    ranges: impl Fn(&str) -> Vec<std::ops::Range<u32>>,
) -> Vec<Option<Value>> {
    let s = span_with_value(value);
    let edits: Vec<RedactionEdit> = packed_v(&s)
        .into_iter()
        .map(|(field, json)| RedactionEdit {
            field,
            action: EditAction::Mask(ranges(&json)),
            reason: None,
        })
        .collect();
    assert_eq!(edits.len(), 2);
    let a = spliced(&s, &edits, "r").expect("spliced");
    let b = apply_without_splicing(&s, &edits, "r", &hasher()).expect("decoded");
    assert_eq!(by_id(&a.spans), by_id(&b.spans), "the two paths agree");
    let p = &by_id(&a.spans)[0];
    let get = |list: &[opentelemetry_proto::tonic::common::v1::KeyValue]| {
        list.iter()
            .find(|kv| kv.key == "v")
            .and_then(|kv| kv.value.clone())
            .and_then(|v| v.value)
    };
    vec![get(&p.attributes), get(&p.events[0].attributes)]
}

/// The range of the first `needle` in `json`.
fn range_of(json: &str, needle: &str) -> std::ops::Range<u32> {
    let at = json.find(needle).expect("needle in the text") as u32;
    at..at + needle.len() as u32
}

#[test]
fn a_mask_inside_a_string_array_masks_only_that_element() {
    let value = array(vec![
        any(Value::StringValue("admin".into())),
        any(Value::StringValue("mail jane@example.com now".into())),
        any(Value::StringValue("x\"y".into())),
    ]);
    let out = mask_both_paths(value, |json| vec![range_of(json, "jane@example.com")]);
    let want = array(vec![
        any(Value::StringValue("admin".into())),
        any(Value::StringValue("mail **************** now".into())),
        any(Value::StringValue("x\"y".into())),
    ]);
    assert_eq!(out, vec![Some(want.clone()), Some(want)]);
}

#[test]
fn a_mask_inside_a_nested_kvlist_masks_values_and_keys_in_place() {
    let value = kvlist(vec![
        ("id", any(Value::IntValue(42))),
        (
            "user",
            any(kvlist(vec![
                ("email", any(Value::StringValue("ada@example.org".into()))),
                ("ada@example.org", any(Value::BoolValue(true))),
                (
                    "tags",
                    any(array(vec![any(Value::StringValue("ok".into()))])),
                ),
            ])),
        ),
        ("pin", any(Value::IntValue(123456))),
        ("raw", any(Value::BytesValue(b"abcdef".to_vec()))),
    ]);
    let out = mask_both_paths(value, |json| {
        let first = range_of(json, "ada@example.org");
        let second_at = json[first.end as usize..]
            .find("ada@example.org")
            .expect("second") as u32
            + first.end;
        // The value, the key, the pin's middle digits, the first base64 digit of `raw` (bytes 0).
        let pin = range_of(json, "123456");
        let raw = range_of(json, "YWJjZGVm");
        vec![
            first,
            second_at..second_at + 15,
            pin.start + 2..pin.start + 4,
            raw.start..raw.start + 1,
        ]
    });
    let want = kvlist(vec![
        ("id", any(Value::IntValue(42))),
        (
            "user",
            any(kvlist(vec![
                ("email", any(Value::StringValue("*".repeat(15)))),
                ("***************", any(Value::BoolValue(true))),
                (
                    "tags",
                    any(array(vec![any(Value::StringValue("ok".into()))])),
                ),
            ])),
        ),
        ("pin", any(Value::StringValue("12**56".into()))),
        ("raw", any(Value::BytesValue(b"*bcdef".to_vec()))),
    ]);
    assert_eq!(out, vec![Some(want.clone()), Some(want)]);
}

#[test]
fn hash_and_replace_of_an_array_replace_the_whole_value_with_a_string() {
    let value = array(vec![any(Value::StringValue("jane@example.com".into()))]);
    let s = span_with_value(value);
    for action in [EditAction::Hash, EditAction::Replace("[gone]".into())] {
        let edits: Vec<RedactionEdit> = packed_v(&s)
            .into_iter()
            .map(|(field, _)| RedactionEdit {
                field,
                action: action.clone(),
                reason: None,
            })
            .collect();
        let a = spliced(&s, &edits, "r").expect("spliced");
        let b = apply_without_splicing(&s, &edits, "r", &hasher()).expect("decoded");
        assert_eq!(by_id(&a.spans), by_id(&b.spans));
        let p = &by_id(&a.spans)[0];
        let v = p.attributes[1].value.clone().and_then(|v| v.value);
        match (&action, v) {
            (EditAction::Hash, Some(Value::StringValue(t))) => assert!(t.starts_with("hmac:k1:")),
            (EditAction::Replace(r), Some(Value::StringValue(t))) => assert_eq!(&t, r),
            (a, v) => panic!("{a:?}: {v:?}"),
        }
    }
}

/// Arbitrary leaves: strings with escapes and multi-byte characters, every scalar type (finite and
/// infinite doubles; no NaN, which no comparison could check), bytes, empty values.
fn arb_leaf() -> impl Strategy<Value = opentelemetry_proto::tonic::common::v1::AnyValue> {
    prop_oneof![
        "[a-zé@.\"\\\n\u{1}€ ]{0,8}".prop_map(|s| any(Value::StringValue(s))),
        any_bool().prop_map(|b| any(Value::BoolValue(b))),
        (i64::MIN..i64::MAX).prop_map(|n| any(Value::IntValue(n))),
        prop_oneof![-1e9f64..1e9, Just(f64::INFINITY), Just(f64::NEG_INFINITY)]
            .prop_map(|d| any(Value::DoubleValue(d))),
        proptest::collection::vec(0u8..=255, 0..7).prop_map(|b| any(Value::BytesValue(b))),
        Just(opentelemetry_proto::tonic::common::v1::AnyValue { value: None }),
    ]
}

fn any_bool() -> impl Strategy<Value = bool> {
    prop_oneof![Just(true), Just(false)]
}

/// An array or kvlist of arbitrary (nested) values.
fn arb_container() -> impl Strategy<Value = Value> {
    let nested = arb_leaf().prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(|v| any(array(v))),
            proptest::collection::vec(("[a-z@\"é]{0,4}", inner), 0..4).prop_map(|kvs| {
                any(kvlist(
                    kvs.iter().map(|(k, v)| (k.as_str(), v.clone())).collect(),
                ))
            }),
        ]
    });
    prop_oneof![
        proptest::collection::vec(nested.clone(), 0..5).prop_map(array),
        proptest::collection::vec(("[a-z@é]{0,4}", nested), 0..5)
            .prop_map(|kvs| { kvlist(kvs.iter().map(|(k, v)| (k.as_str(), v.clone())).collect()) }),
    ]
}

/// Sorted, non-overlapping ranges on character boundaries of `text`, from arbitrary (start, len)s.
fn snap(text: &str, raw: &[(u16, u8)]) -> Vec<std::ops::Range<u32>> {
    let len = text.len();
    let floor = |mut i: usize| {
        i = i.min(len);
        while !text.is_char_boundary(i) {
            i -= 1;
        }
        i
    };
    let mut starts: Vec<(usize, usize)> = raw
        .iter()
        .map(|&(s, l)| {
            let s = floor(s as usize % (len + 1));
            (s, floor(s + l as usize))
        })
        .collect();
    starts.sort_unstable();
    let mut out = Vec::new();
    let mut at = 0;
    for (s, e) in starts {
        if s >= at {
            out.push(s as u32..e as u32);
            at = e;
        }
    }
    out
}

/// Same containers with the same lengths and keys' count; a leaf keeps its type, or is a bool, int or
/// double turned into a string.
fn same_shape(a: Option<&Value>, b: Option<&Value>) -> bool {
    match (a, b) {
        (Some(Value::ArrayValue(x)), Some(Value::ArrayValue(y))) => {
            x.values.len() == y.values.len()
                && x.values
                    .iter()
                    .zip(&y.values)
                    .all(|(x, y)| same_shape(x.value.as_ref(), y.value.as_ref()))
        }
        (Some(Value::KvlistValue(x)), Some(Value::KvlistValue(y))) => {
            x.values.len() == y.values.len()
                && x.values.iter().zip(&y.values).all(|(x, y)| {
                    same_shape(
                        x.value.as_ref().and_then(|v| v.value.as_ref()),
                        y.value.as_ref().and_then(|v| v.value.as_ref()),
                    )
                })
        }
        (
            Some(Value::BoolValue(_) | Value::IntValue(_) | Value::DoubleValue(_)),
            Some(Value::StringValue(_)),
        ) => true,
        (a, b) => {
            std::mem::discriminant(&a) == std::mem::discriminant(&b)
                && a.map(std::mem::discriminant) == b.map(std::mem::discriminant)
        }
    }
}

/// Every string, key and byte is `*`, every scalar a string of `*`; containers and empty values stay.
fn fully_masked(v: Option<&Value>) -> bool {
    let stars = |s: &str| s.chars().all(|c| c == '*');
    match v {
        None => true,
        Some(Value::StringValue(s)) => stars(s),
        Some(Value::BytesValue(b)) => b.iter().all(|&c| c == b'*'),
        Some(Value::ArrayValue(a)) => a.values.iter().all(|v| fully_masked(v.value.as_ref())),
        Some(Value::KvlistValue(l)) => l.values.iter().all(|kv| {
            stars(&kv.key) && fully_masked(kv.value.as_ref().and_then(|v| v.value.as_ref()))
        }),
        Some(_) => false,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Masks of arbitrary ranges of an arbitrary array or kvlist: the redactor's text is what the mask
    /// mapping renders, the value keeps its shape (only masked scalars become strings), a mask of the
    /// whole text masks every element, and the spliced and decoded paths give the same spans.
    #[test]
    fn masks_inside_arrays_and_kvlists_keep_their_shape(
        value in arb_container(),
        raw in proptest::collection::vec((0u16..400, 0u8..24), 0..5),
    ) {
        let av = any(value.clone());
        let json = apply::value_text(Some(&av));
        for (_, seen) in packed_v(&span_with_value(value.clone())) {
            prop_assert_eq!(&seen, &json, "the packed text is the text masks are mapped on");
        }
        prop_assert_eq!(nested::mask_nested(&av, &json, &[]), Some(av.clone()));
        let ranges = snap(&json, &raw);
        let masked = nested::mask_nested(&av, &json, &ranges).expect("renders the redactor's text");
        prop_assert!(same_shape(Some(&value), masked.value.as_ref()), "{:?} -> {:?}", value, masked);
        let all = nested::mask_nested(&av, &json, &[0..json.len() as u32]).expect("renders");
        prop_assert!(same_shape(Some(&value), all.value.as_ref()));
        prop_assert!(fully_masked(all.value.as_ref()), "{:?}", all);
        let r = ranges.clone();
        let out = mask_both_paths(value, move |_| r.clone());
        prop_assert_eq!(out, vec![masked.value.clone(), masked.value]);
    }
}

#[test]
fn invalid_edits_are_errors() {
    let s = spans();
    let mut bad = edit(&s, |f| f.kind == FieldKind::SpanName, EditAction::Remove);
    assert!(matches!(
        apply(&s, &[bad.clone()], "r", &hasher()),
        Err(ApplyError::NotAnAttribute(..))
    ));
    bad.action = EditAction::Mask(vec![0..1000]);
    assert!(matches!(
        apply(&s, &[bad.clone()], "r", &hasher()),
        Err(ApplyError::BadMask(..))
    ));
    bad.action = EditAction::Mask(vec![3..5, 1..2]);
    assert!(matches!(
        apply(&s, &[bad.clone()], "r", &hasher()),
        Err(ApplyError::UnsortedMask(..))
    ));
    bad.field.owner = 99;
    bad.action = EditAction::Hash;
    assert!(matches!(
        apply(&s, &[bad], "r", &hasher()),
        Err(ApplyError::NoSuchField(..))
    ));
}

#[test]
fn strict_scrub_keeps_only_the_allow_list() {
    let s = spans();
    let out = strict_scrub(&s, &RedactionSettings::default()).expect("scrubs");
    assert_eq!(ids(&s), ids(&out));
    for (r, p) in out.iter().zip(decoded(&out)) {
        for kv in &p.attributes {
            assert!(
                DEFAULT_STRICT_ALLOW_LIST.contains(&kv.key.as_str()),
                "{} kept",
                kv.key
            );
        }
        assert!(p.status.as_ref().is_none_or(|s| s.message.is_empty()));
        assert!(p.events.iter().all(|e| e.attributes.is_empty()));
        assert!(p.links.iter().all(|l| l.attributes.is_empty()));
        assert_eq!(
            &*r.origin.service_name, "frontend",
            "service.name is allow-listed"
        );
    }
    let named = RedactionSettings {
        strict_scrub_names: true,
        ..Default::default()
    };
    let out = strict_scrub(&s, &named).expect("scrubs");
    assert!(out.iter().all(|r| r.name() == "redacted"));
}

// ---- fail closed, with the real hostile component ----

fn runtime() -> &'static PluginRuntime {
    static RT: OnceLock<PluginRuntime> = OnceLock::new();
    RT.get_or_init(|| {
        PluginRuntime::new(RuntimeSettings {
            cache_dir: Some(
                Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/plugin-test-cache"),
            ),
            default_deadline: Duration::from_secs(2),
            init_deadline: Duration::from_secs(20),
            ..Default::default()
        })
        .expect("runtime")
    })
}

fn bad_redactor_path() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/plugins/test-bad-redactor.wasm");
    assert!(
        p.exists(),
        "{} is missing: run scripts/build-plugins.sh first",
        p.display()
    );
    p
}

fn bad(mode: &str, on_failure: RedactorFailurePolicy) -> Redactors {
    let mut spec = PluginSpec::new(
        mode,
        bad_redactor_path(),
        format!("{{\"mode\":\"{mode}\"}}"),
    );
    spec.deadline = Some(Duration::from_millis(50));
    let plugin = runtime().load_redactor(&spec).expect("loads");
    Redactors::new(
        vec![RedactorRule {
            name: mode.into(),
            redactor: Arc::new(plugin),
        }],
        RedactionSettings::default(),
        on_failure,
    )
}

#[test]
fn failing_redactors_scrub_by_default() {
    for mode in [
        "trap",
        "loop",
        "out_of_range",
        "split_char",
        "remove_name",
        "huge_output",
    ] {
        let metrics = Metrics::new();
        let s = spans();
        let Outcome::Export(out) =
            bad(mode, RedactorFailurePolicy::StrictScrub).redact(1, s.clone(), &metrics)
        else {
            panic!("{mode}: dropped under strict_scrub");
        };
        assert_eq!(ids(&s), ids(&out), "{mode}");
        for p in decoded(&out) {
            assert!(
                p.attributes
                    .iter()
                    .all(|kv| DEFAULT_STRICT_ALLOW_LIST.contains(&kv.key.as_str())),
                "{mode}"
            );
            let rules = p
                .attributes
                .iter()
                .find(|kv| kv.key == AUDIT_RULES_KEY)
                .and_then(|kv| kv.value.clone());
            assert_eq!(
                rules.and_then(|v| v.value),
                Some(Value::StringValue(STRICT_SCRUB_RULE.into())),
                "{mode}"
            );
        }
        let text = metrics.encode();
        assert!(
            text.contains(&format!(
                "tailgate_redaction_fallbacks_total{{rule=\"{mode}\",action=\"strict_scrub\"}} 1"
            )),
            "{mode}: {text}"
        );
        assert!(
            text.contains("tailgate_redaction_scrubbed_spans_total 3"),
            "{mode}: {text}"
        );
    }
}

#[test]
fn failing_redactors_drop_when_configured() {
    for mode in ["trap", "loop", "out_of_range"] {
        let metrics = Metrics::new();
        let out = bad(mode, RedactorFailurePolicy::Drop).redact(1, spans(), &metrics);
        assert!(matches!(out, Outcome::Dropped), "{mode}");
        let text = metrics.encode();
        assert!(
            text.contains("tailgate_spans_lost_total{reason=\"redactor_failed\"} 3"),
            "{mode}: {text}"
        );
        assert!(
            text.contains(&format!(
                "tailgate_redaction_fallbacks_total{{rule=\"{mode}\",action=\"drop\"}} 1"
            )),
            "{mode}"
        );
    }
}

#[test]
fn a_healthy_redactor_with_no_edits_leaves_spans_alone() {
    let s = spans();
    let Outcome::Export(out) =
        bad("ok", RedactorFailurePolicy::Drop).redact(1, s.clone(), &Metrics::new())
    else {
        panic!("dropped");
    };
    assert!(s.iter().zip(&out).all(|(a, b)| a.raw == b.raw));
}

// ---- property: arbitrary edits ----

fn arb_action() -> impl Strategy<Value = EditAction> {
    prop_oneof![
        Just(EditAction::Remove),
        Just(EditAction::Hash),
        "[a-z@.*]{0,12}".prop_map(EditAction::Replace),
        "[a-z.]{0,12}".prop_map(EditAction::RenameKey),
        proptest::collection::vec((0u32..40, 0u32..8), 0..4)
            .prop_map(|r| { EditAction::Mask(r.into_iter().map(|(s, l)| s..s + l).collect()) }),
    ]
}

fn arb_kind() -> impl Strategy<Value = FieldKind> {
    prop_oneof![
        Just(FieldKind::ResourceAttribute),
        Just(FieldKind::ScopeAttribute),
        Just(FieldKind::SpanAttribute),
        Just(FieldKind::SpanName),
        Just(FieldKind::StatusMessage),
        Just(FieldKind::EventName),
        Just(FieldKind::EventAttribute),
        Just(FieldKind::LinkAttribute),
    ]
}

/// An edit of a real field (by index into the packing) or of a made-up one.
fn arb_edit(
    real: usize,
) -> impl Strategy<Value = (Option<usize>, FieldKind, u32, u32, u32, EditAction)> {
    (
        proptest::option::weighted(0.7, 0..real),
        arb_kind(),
        0u32..5,
        0u32..3,
        0u32..6,
        arb_action(),
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_edits_never_panic_or_touch_ids(raw in proptest::collection::vec(arb_edit(24), 0..12)) {
        let s = spans();
        let packed = pack(&s);
        let edits: Vec<RedactionEdit> = raw
            .into_iter()
            .map(|(real, kind, owner, item, attribute_index, action)| {
                let field = match real.and_then(|i| packed.fields.get(i)) {
                    Some(f) => f.clone(),
                    None => FieldRef { kind, owner, item, attribute_index, key: String::new(), is_string: true, value_len: 8 },
                };
                RedactionEdit { field, action, reason: None }
            })
            .collect();
        // The byte-level path and the decode/re-encode path agree: both refuse, or both give the same
        // spans (as decoded messages) and the same edited spans.
        let spliced = apply(&s, &edits, "prop", &hasher());
        let reference = apply_without_splicing(&s, &edits, "prop", &hasher());
        prop_assert_eq!(spliced.is_ok(), reference.is_ok(), "{:?} vs {:?}", spliced.as_ref().err(), reference.as_ref().err());
        if let (Ok(a), Ok(b)) = (&spliced, &reference) {
            prop_assert_eq!(by_id(&a.spans), by_id(&b.spans));
            let (mut x, mut y) = (a.edited_span_ids.clone(), b.edited_span_ids.clone());
            x.sort_unstable();
            y.sort_unstable();
            prop_assert_eq!(x, y);
        }
        if let Ok(out) = spliced {
            prop_assert_eq!(ids(&s), ids(&out.spans));
            for r in &out.spans {
                let p = ProtoSpan::decode(&r.raw[..]).expect("re-encoded spans decode");
                prop_assert_eq!(p.span_id, r.span_id.to_be_bytes().to_vec());
            }
        }
        // Whatever happened, the strict scrub of the same spans works and keeps the ids.
        let scrubbed = strict_scrub(&s, &RedactionSettings::default()).expect("scrub");
        prop_assert_eq!(ids(&s), ids(&scrubbed));
    }
}

#[test]
fn a_redactor_slow_only_sometimes_fails_closed_only_then() {
    let redactors = bad("slow_sometimes", RedactorFailurePolicy::StrictScrub);
    let metrics = Metrics::new();
    let normal = spans();
    let mut slow_request = sample_request();
    slow_request.resource_spans[0].scope_spans[0].spans[0].name = "slow".into();
    let body = bytes::Bytes::from(slow_request.encode_to_vec());
    let slow: Vec<SpanRecord> = scan_export_request(&body)
        .expect("valid")
        .spans
        .into_iter()
        .map(|(_, s)| s)
        .collect();
    for round in 0..3 {
        let Outcome::Export(out) = redactors.redact(1, normal.clone(), &metrics) else {
            panic!("a fast call exports");
        };
        assert_eq!(
            decoded(&out),
            decoded(&normal),
            "round {round}: unchanged when fast"
        );
        let Outcome::Export(out) = redactors.redact(2, slow.clone(), &metrics) else {
            panic!("strict scrub exports");
        };
        assert_ne!(
            decoded(&out),
            decoded(&slow),
            "round {round}: scrubbed when slow"
        );
    }
    let text = metrics.encode();
    assert!(
        text.contains(
            "tailgate_plugin_failures_total{plugin=\"slow_sometimes\",kind=\"timeout\"} 3"
        ),
        "{text}"
    );
    let health = metrics.plugin_health.snapshot();
    assert_eq!(
        (health[0].calls, health[0].failures, health[0].degraded),
        (6, 3, false),
        "{health:?}"
    );
}
