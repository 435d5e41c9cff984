use super::*;
use crate::testing::{kv_str, sample_request, span};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use prost::Message;

fn encode(req: &ExportTraceServiceRequest) -> Bytes {
    Bytes::from(req.encode_to_vec())
}

#[test]
fn scan_then_encode_round_trips_every_field() {
    let req = sample_request();
    let body = encode(&req);
    let scanned = scan_export_request(&body).expect("valid request");
    assert_eq!(scanned.spans.len(), 3);
    assert_eq!(scanned.rejected_count(), 0);
    let mut b = ExportBuilder::new();
    for (_, s) in &scanned.spans {
        b.push(s, Bytes::new());
    }
    let out = ExportTraceServiceRequest::decode(b.finish()).expect("decodes");
    assert_eq!(out, req);
}

#[test]
fn index_fields_are_read() {
    let body = encode(&sample_request());
    let scanned = scan_export_request(&body).expect("valid");
    let (tid, s) = &scanned.spans[0];
    assert_eq!(*tid, 0x0102030405060708090a0b0c0d0e0f10);
    assert_eq!(s.span_id, 0x1111111111111111);
    assert!(s.is_root());
    assert_eq!(s.name(), "GET /checkout");
    assert_eq!(s.origin.service_name.as_ref(), "frontend");
    assert_eq!(s.status, StatusCode::Unset);
    assert_eq!(scanned.spans[2].1.status, StatusCode::Error);
    let attrs: Vec<_> = s
        .attributes()
        .map(|kv| (kv.key.to_owned(), kv.value.as_str().map(str::to_owned)))
        .collect();
    assert_eq!(attrs[0], ("http.method".to_owned(), Some("GET".to_owned())));
    let res: Vec<_> = resource_attributes(&s.origin.resource_fields)
        .map(|kv| kv.key)
        .collect();
    assert_eq!(res, vec!["service.name"]);
}

#[test]
fn patch_appends_attribute_and_overrides_trace_state() {
    let body = encode(&sample_request());
    let scanned = scan_export_request(&body).expect("valid");
    let mut p = SpanPatch::new();
    p.string_attribute("tailgate.rule", "errors")
        .int_attribute("n", -5)
        .trace_state("ot=th:0");
    let mut b = ExportBuilder::new();
    b.push(&scanned.spans[0].1, Bytes::copy_from_slice(p.as_bytes()));
    let out = ExportTraceServiceRequest::decode(b.finish()).expect("decodes");
    let s = &out.resource_spans[0].scope_spans[0].spans[0];
    assert_eq!(s.trace_state, "ot=th:0");
    let last2 = &s.attributes[s.attributes.len() - 2..];
    assert_eq!(last2[0], kv_str("tailgate.rule", "errors"));
    assert_eq!(
        last2[1].value.as_ref().and_then(|v| v.value.clone()),
        Some(any_value::Value::IntValue(-5))
    );
}

#[test]
fn bad_ids_are_rejected_per_span() {
    let mut req = sample_request();
    let spans = &mut req.resource_spans[0].scope_spans[0].spans;
    spans[0].trace_id = vec![0; 16];
    spans[1].trace_id = vec![1; 8];
    spans.push(span(7, 0, "no span id"));
    spans[3].span_id.clear();
    let scanned = scan_export_request(&encode(&req)).expect("well-formed");
    assert_eq!(scanned.spans.len(), 1);
    assert_eq!(
        scanned.rejected,
        vec![
            (SpanRejection::InvalidTraceId, 2),
            (SpanRejection::InvalidSpanId, 1)
        ]
    );
    let msg = scanned.rejection_message().expect("message");
    assert!(msg.contains("2 span(s) with invalid trace id"), "{msg}");
}

#[test]
fn malformed_input_names_the_place() {
    let body = encode(&sample_request());
    let cut = body.slice(..body.len() - 3);
    let e = scan_export_request(&cut).expect_err("truncated");
    assert!(e.to_string().contains("resource_spans[0]"), "{e}");

    let mut req = sample_request();
    req.resource_spans[0].scope_spans[0].spans[1].name = "x".into();
    let mut raw = encode(&req).to_vec();
    let at = raw.windows(1).rposition(|w| w == b"x").expect("name byte");
    raw[at] = 0xff;
    let e = scan_export_request(&Bytes::from(raw)).expect_err("bad utf8");
    assert!(e.to_string().contains("spans[1].name"), "{e}");
    assert!(e.to_string().contains("UTF-8"), "{e}");
}

#[test]
fn deep_nesting_is_refused() {
    let mut v = AnyValue {
        value: Some(any_value::Value::StringValue("leaf".into())),
    };
    for _ in 0..40 {
        v = AnyValue {
            value: Some(any_value::Value::ArrayValue(
                opentelemetry_proto::tonic::common::v1::ArrayValue { values: vec![v] },
            )),
        };
    }
    let mut req = sample_request();
    req.resource_spans[0].scope_spans[0].spans[0]
        .attributes
        .push(KeyValue {
            key: "deep".into(),
            value: Some(v),
            ..Default::default()
        });
    let e = scan_export_request(&encode(&req)).expect_err("too deep");
    assert!(e.to_string().contains("nested deeper"), "{e}");
}

#[test]
fn garbage_never_panics() {
    let body = encode(&sample_request()).to_vec();
    for i in 0..body.len() {
        for flip in [0x01u8, 0x80, 0xff] {
            let mut b = body.clone();
            b[i] ^= flip;
            let _ = scan_export_request(&Bytes::from(b));
        }
    }
}

/// `KeyFinder` (its own tight walk) finds exactly what walking every attribute with
/// `AttrIter::matching` finds, including when a key's bytes occur where they are not a span attribute's
/// key: inside a value, inside a map value, on an event or a link.
#[test]
fn key_finder_agrees_with_the_full_walk() {
    use opentelemetry_proto::tonic::common::v1::KeyValueList;
    use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
    let keys: Vec<String> = vec!["http.route".into(), "k".into(), "\n\u{1}k".into()];
    let map = AnyValue {
        value: Some(any_value::Value::KvlistValue(KeyValueList {
            values: vec![kv_str("http.route", "/inside-a-map")],
        })),
    };
    let variants: Vec<Vec<KeyValue>> = vec![
        vec![],
        vec![kv_str("other", "x")],
        vec![kv_str("http.route", "/a"), kv_str("other", "y")],
        vec![kv_str("other", "\n\nhttp.route"), kv_str("k", "v")],
        vec![
            KeyValue {
                key: "m".into(),
                value: Some(map),
                ..Default::default()
            },
            kv_str("http.route", "/b"),
            kv_str("http.route", "/dup"),
        ],
        vec![kv_str("\n\u{1}k", "overlap"), kv_str("k", "\n\u{1}k")],
    ];
    let finder = KeyFinder::new(&keys);
    for (i, attrs) in variants.into_iter().enumerate() {
        let mut s = span(1, 0, "s");
        s.attributes = attrs;
        s.events = vec![Event {
            name: "e".into(),
            attributes: vec![kv_str("http.route", "/event")],
            ..Default::default()
        }];
        s.links = vec![Link {
            trace_id: vec![1; 16],
            span_id: vec![2; 8],
            attributes: vec![kv_str("k", "link")],
            ..Default::default()
        }];
        let raw = s.encode_to_vec();
        let want: Vec<(usize, AnyValueRef<'_>)> = span_attributes(&raw).matching(&keys).collect();
        let mut got = Vec::new();
        finder.span_attributes(&raw, |k, v| got.push((k, v)));
        assert_eq!(got, want, "variant {i}");
    }
}

/// Appends a raw field to the encoded span `index` of `sample_request()` (fields merge in protobuf).
fn with_raw_field_in(extra: &[u8], wrap: impl Fn(&[u8]) -> Vec<u8>) -> Bytes {
    let mut req = sample_request();
    let spans = &mut req.resource_spans[0].scope_spans[0].spans;
    let victim = spans.remove(0);
    let mut raw = victim.encode_to_vec();
    raw.extend_from_slice(&wrap(extra));
    let mut body = encode(&req).to_vec();
    // A second resource_spans carrying the doctored span.
    let mut scope = vec![0x12];
    prost::encoding::encode_varint(raw.len() as u64, &mut scope);
    scope.extend_from_slice(&raw);
    let mut rs = vec![0x12];
    prost::encoding::encode_varint(scope.len() as u64, &mut rs);
    rs.extend_from_slice(&scope);
    body.push(0x0a);
    prost::encoding::encode_varint(rs.len() as u64, &mut body);
    body.extend_from_slice(&rs);
    Bytes::from(body)
}

fn len_field(field: u32, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    prost::encoding::encode_varint(u64::from(field << 3 | 2), &mut out);
    prost::encoding::encode_varint(body.len() as u64, &mut out);
    out.extend_from_slice(body);
    out
}

/// Found while writing the fuzz targets' oracle (what the scan accepts, prost must decode): the scan
/// skipped fields it does not read without checking their wire type, so it accepted (and would have
/// forwarded) spans a prost-based downstream refuses, failing the downstream's whole batch.
#[test]
fn known_fields_with_the_wrong_wire_type_are_refused_like_prost_does() {
    // (field key + value bytes inside the message, the span field it sits in, where the error points)
    let varint_time = [0x08, 0x01]; // field 1 as a varint where fixed64 is declared
    let cases: Vec<(Vec<u8>, &str)> = vec![
        // Event.time_unix_nano (fixed64) sent as a varint.
        (len_field(11, &varint_time), "events[0]"),
        // Status.code (enum) sent length-delimited.
        (len_field(15, &len_field(3, b"x")), "status"),
        // Link.flags (fixed32) sent as a varint.
        (len_field(13, &[0x30, 0x01]), "links[0]"),
        // KeyValue.value sent as a varint.
        (
            len_field(9, &[0x0a, 0x01, b'k', 0x10, 0x01]),
            "attributes[3]",
        ),
        // AnyValue.int_value sent as fixed64.
        (
            len_field(
                9,
                &[
                    [0x0a, 0x01, b'k'].as_slice(),
                    &len_field(2, &[0x19, 0, 0, 0, 0, 0, 0, 0, 0]),
                ]
                .concat(),
            ),
            "attributes[3]",
        ),
        // ArrayValue.values sent as a varint.
        (
            len_field(
                9,
                &[
                    [0x0a, 0x01, b'k'].as_slice(),
                    &len_field(2, &len_field(5, &[0x08, 0x01])),
                ]
                .concat(),
            ),
            "attributes[3]",
        ),
        // Span.dropped_attributes_count (uint32) sent as fixed32.
        (vec![0x55, 1, 0, 0, 0], "spans[0]"),
    ];
    for (field, place) in cases {
        let body = with_raw_field_in(&field, |f| f.to_vec());
        assert!(
            ExportTraceServiceRequest::decode(body.clone()).is_err(),
            "prost refuses {field:02x?}"
        );
        let e = scan_export_request(&body).expect_err("the scan refuses it too");
        assert!(
            e.to_string().contains(place) && e.problem.contains("wire type"),
            "{place}: {e}"
        );
    }
}

/// Found with the same oracle: a 10-byte varint whose last byte carries more than the 64th bit was
/// truncated silently; prost refuses it.
#[test]
fn varints_overflowing_64_bits_are_refused() {
    // Span.kind = a varint of ten bytes, the last one 0x02.
    let mut kind = vec![0x30];
    kind.extend_from_slice(&[0xff; 9]);
    kind.push(0x02);
    let body = with_raw_field_in(&kind, |f| f.to_vec());
    assert!(ExportTraceServiceRequest::decode(body.clone()).is_err());
    let e = scan_export_request(&body).expect_err("refused");
    assert!(e.problem.contains("overflows 64 bits"), "{e}");
    // The largest valid varint (u64::MAX) is still read.
    kind.pop();
    kind.push(0x01);
    let body = with_raw_field_in(&kind, |f| f.to_vec());
    assert!(scan_export_request(&body).is_ok());
}

#[test]
fn what_the_scan_accepts_prost_decodes() {
    // Every single-byte corruption of a rich request: the scan may refuse it, but when it accepts,
    // a prost decoder (what an OTLP downstream is) must accept the same bytes.
    let body = encode(&sample_request()).to_vec();
    for i in 0..body.len() {
        for flip in [0x01u8, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80, 0xff] {
            let mut b = body.clone();
            b[i] ^= flip;
            let b = Bytes::from(b);
            if scan_export_request(&b).is_ok()
                && let Err(e) = ExportTraceServiceRequest::decode(b.clone())
            {
                panic!("byte {i} ^ {flip:#x}: the scan accepts what prost refuses: {e}");
            }
        }
    }
}

/// An origin equal to one already grouped but in its own allocation, freed after its push, must not leave
/// its address behind as the fast path: a different origin allocated at that address (the allocator
/// reuses a freed block of the same size at once) would join the wrong group, and its spans would be
/// exported under another service's resource. Found by the Jaeger end-to-end test (a users span shown
/// under shop-frontend when redacted traces shared a batch).
#[test]
fn a_freed_equal_origin_does_not_route_a_different_origin_into_its_group() {
    let origin = |service: &str| {
        let resource = opentelemetry_proto::tonic::resource::v1::Resource {
            attributes: vec![kv_str("service.name", service)],
            ..Default::default()
        };
        // The `ResourceSpans` fields other than its spans: here only the resource (field 1).
        let fields = opentelemetry_proto::tonic::trace::v1::ResourceSpans {
            resource: Some(resource),
            ..Default::default()
        }
        .encode_to_vec();
        Arc::new(Origin {
            resource_fields: Bytes::from(fields),
            scope_fields: Bytes::new(),
            service_name: service.into(),
        })
    };
    let raw = |id: u8| Bytes::from(span(id, 0, &format!("span {id}")).encode_to_vec());
    let mut b = ExportBuilder::new();
    let users = origin("users");
    b.push_raw(&users, raw(1), Bytes::new());
    // Two rounds of "an equal copy pushed, then dropped; a different origin allocated and pushed".
    for round in 0..2u8 {
        let copy = origin("users");
        b.push_raw(&copy, raw(10 + round), Bytes::new());
        drop(copy);
        let frontend = origin("shop-frontend");
        b.push_raw(&frontend, raw(20 + round), Bytes::new());
    }
    let out = ExportTraceServiceRequest::decode(b.finish()).expect("decodes");
    let grouped: Vec<(String, Vec<String>)> = out
        .resource_spans
        .iter()
        .map(|rs| {
            let service = rs
                .resource
                .as_ref()
                .and_then(|r| r.attributes.first())
                .and_then(|kv| kv.value.as_ref())
                .and_then(|v| match &v.value {
                    Some(any_value::Value::StringValue(s)) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            let names = rs
                .scope_spans
                .iter()
                .flat_map(|ss| ss.spans.iter().map(|s| s.name.clone()))
                .collect();
            (service, names)
        })
        .collect();
    assert_eq!(
        grouped,
        vec![
            (
                "users".to_string(),
                vec!["span 1".into(), "span 10".into(), "span 11".into()]
            ),
            (
                "shop-frontend".to_string(),
                vec!["span 20".into(), "span 21".into()]
            ),
        ]
    );
}
