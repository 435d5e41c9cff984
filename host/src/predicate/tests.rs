use super::*;
use crate::otlp::{AnyValueRef, SpanRecord, scan_export_request_with};
use crate::testing::{kv_int, kv_str, request, span_in};
use bytes::Bytes;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue, any_value,
};
use prost::Message;

fn kv(key: &str, v: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    }
}

fn p(level: Level, key: &str, test: Test) -> Predicate {
    Predicate::new(level, key.into(), test).expect("valid predicate")
}

/// Encodes a value the way it sits in a span, and reads it back as the scan and the walk see it.
fn value_of(v: any_value::Value) -> Vec<u8> {
    AnyValue { value: Some(v) }.encode_to_vec()
}

fn holds(test: &Test, v: any_value::Value) -> bool {
    let bytes = value_of(v);
    test_value(test, AnyValueRef::decode(&bytes))
}

#[test]
fn span_record_keeps_its_size() {
    // pred_bits + pred_gen fill what was padding: the buffer's per-span overhead does not grow.
    assert_eq!(std::mem::size_of::<SpanRecord>(), 88);
}

#[test]
fn value_tests_follow_the_documented_semantics() {
    use any_value::Value as V;
    let s = |x: &str| V::StringValue(x.into());
    let strs = |xs: &[&str]| {
        V::ArrayValue(ArrayValue {
            values: xs
                .iter()
                .map(|x| AnyValue {
                    value: Some(V::StringValue((*x).into())),
                })
                .collect(),
        })
    };
    let one_of = Test::StrIn(vec!["gold".into(), "platinum".into()]);
    assert!(holds(&one_of, s("gold")));
    assert!(!holds(&one_of, s("Gold")));
    assert!(holds(&one_of, strs(&["bronze", "platinum"])), "array item");
    assert!(!holds(&one_of, V::IntValue(1)));
    assert!(!holds(&Test::StrIn(vec![]), s("")));

    let prefix = Test::StrPrefix("/admin".into());
    assert!(holds(&prefix, s("/admin/users")));
    assert!(!holds(&prefix, s("/users/admin")));
    let re = Predicate::regex("^/a.*n$").expect("valid");
    assert!(holds(&re, s("/admin")));
    assert!(!holds(&re, s("x/admin")));
    assert!(
        holds(&Predicate::regex("dmi").expect("valid"), s("/admin")),
        "unanchored"
    );

    let http5 = Test::IntRange(500, 599);
    assert!(holds(&http5, V::IntValue(503)));
    assert!(holds(&http5, s("599")), "decimal strings count");
    assert!(holds(&http5, s("+500")));
    assert!(!holds(&http5, s("503.0")));
    assert!(!holds(&http5, s(" 503")));
    assert!(!holds(&http5, V::DoubleValue(503.0)), "doubles never");
    assert!(!holds(&http5, V::IntValue(600)));

    let range = Test::DoubleRange(499.5, f64::INFINITY);
    assert!(holds(&range, V::DoubleValue(499.5)));
    assert!(holds(&range, V::IntValue(500)));
    assert!(!holds(&range, V::IntValue(499)));
    assert!(!holds(&range, V::DoubleValue(f64::NAN)));
    assert!(!holds(&range, s("500")), "strings never");

    assert!(holds(&Test::BoolIs(true), V::BoolValue(true)));
    assert!(!holds(&Test::BoolIs(true), V::BoolValue(false)));
    assert!(!holds(&Test::BoolIs(false), V::IntValue(0)));
    assert!(holds(&Test::Exists, V::IntValue(0)));
    assert!(test_value(&Test::Exists, AnyValueRef::Empty));
}

#[test]
fn bad_predicates_and_too_many_are_refused_with_a_reason() {
    let e = Predicate::new(Level::Span, "a".into(), Test::IntRange(5, 1)).expect_err("min > max");
    assert!(e.contains("min 5 is greater than max 1"), "{e}");
    let e =
        Predicate::new(Level::Span, "a".into(), Test::DoubleRange(f64::NAN, 1.0)).expect_err("NaN");
    assert!(e.contains("NaN"), "{e}");
    let e = Predicate::regex("(").expect_err("bad regex");
    assert!(e.contains("invalid regex \"(\""), "{e}");

    let many: Vec<Predicate> = (0..33)
        .map(|i| p(Level::Span, &format!("k{i}"), Test::Exists))
        .collect();
    let e = PredicateSet::for_policy([&many[..]]).expect_err("33 predicates");
    assert!(
        e.contains("33 distinct predicates") && e.contains("32"),
        "{e}"
    );
    // Duplicates across rules count once.
    let set = PredicateSet::for_policy([&many[..32], &many[..32]]).expect("32 distinct");
    assert_eq!(set.predicates().len(), 32);
    assert_ne!(set.generation(), 0);
}

/// A request with two resources (one with a scope attribute), spans with a mix of keys and values.
fn mixed_request() -> Bytes {
    let mut a = request("shop", vec![]);
    let mut b = request("billing", vec![]);
    let mut spans_a = Vec::new();
    for i in 0..6u64 {
        let mut sp = span_in(7, i + 1, i, &format!("s{i}"), 1, 2);
        sp.attributes = vec![
            kv_str("http.route", if i % 2 == 0 { "/admin/x" } else { "/u" }),
            kv_int("http.response.status_code", 200 + 100 * (i as i64 % 4)),
            kv_str("padding.key.of.the.same.len", "x"),
            kv_str("http.rout", "/admin"), // one byte shorter: never a hit
        ];
        spans_a.push(sp);
    }
    let mut sp = span_in(7, 100, 1, "b", 1, 2);
    sp.attributes = vec![
        kv_str("http.status_code", "503"),
        kv("debug", any_value::Value::BoolValue(true)),
    ];
    a.resource_spans[0].scope_spans[0].spans = spans_a;
    b.resource_spans[0].scope_spans[0].spans = vec![sp];
    b.resource_spans[0].scope_spans[0].scope = Some(InstrumentationScope {
        name: "lib".into(),
        attributes: vec![kv_str("lib.tier", "gold")],
        ..Default::default()
    });
    a.resource_spans.extend(b.resource_spans);
    Bytes::from(a.encode_to_vec())
}

fn mixed_predicates() -> Vec<Predicate> {
    vec![
        p(Level::Span, "http.route", Test::StrPrefix("/admin".into())),
        p(
            Level::Span,
            "http.response.status_code",
            Test::IntRange(500, 599),
        ),
        p(Level::Span, "http.status_code", Test::IntRange(500, 599)),
        p(Level::Span, "http.route", Test::Exists),
        p(Level::Span, "debug", Test::BoolIs(true)),
        p(
            Level::Resource,
            "service.name",
            Test::StrIn(vec!["billing".into()]),
        ),
        p(Level::Scope, "lib.tier", Test::Exists),
        p(Level::Span, "missing", Test::Exists),
    ]
}

#[test]
fn scan_bits_equal_the_walk() {
    let set = PredicateSet::for_policy([&mixed_predicates()[..]]).expect("set");
    let body = mixed_request();
    let scanned = scan_export_request_with(&body, &set).expect("valid");
    assert_eq!(scanned.spans.len(), 7);
    for (_, s) in &scanned.spans {
        assert_eq!(s.pred_gen(), set.generation());
        assert_eq!(s.pred_bits(), set.walk(s), "span {}", s.name());
    }
    let bits: Vec<u32> = scanned.spans.iter().map(|(_, s)| s.pred_bits()).collect();
    // s0: /admin (0), 200, exists (3). s3: /u, 500 (1), exists. b: 503 string (2), debug (4), billing
    // (5), scope (6).
    assert_eq!(bits[0], 0b1001);
    assert_eq!(bits[3], 0b1010);
    assert_eq!(bits[6], 0b111_0100);
    // Without a set the scan stores nothing.
    let plain = scan_export_request_with(&body, &PredicateSet::default()).expect("valid");
    assert!(
        plain
            .spans
            .iter()
            .all(|(_, s)| s.pred_gen() == 0 && s.pred_bits() == 0)
    );
}

#[test]
fn counts_come_from_bits_when_the_generation_matches_and_from_the_walk_otherwise() {
    let mine = mixed_predicates();
    let own = PredicateSet::new(mine.clone()).expect("own");
    // The policy set has another rule's predicate first, so bit numbers differ from the sampler's own.
    let other = [p(Level::Span, "other", Test::Exists)];
    let policy = PredicateSet::for_policy([&other[..], &mine[..]]).expect("policy");
    let binding = Binding::new(&mine, &policy).expect("bound");
    let body = mixed_request();
    let spans: Vec<SpanRecord> = scan_export_request_with(&body, &policy)
        .expect("valid")
        .spans
        .into_iter()
        .map(|(_, s)| s)
        .collect();
    let expected = vec![3, 1, 1, 6, 1, 1, 1, 0];
    assert_eq!(count_matches(&own, &binding, &spans), expected);

    // Spans scanned under another generation (before a reload) are walked: same counts.
    let old = PredicateSet::for_policy([&other[..]]).expect("old policy");
    let before: Vec<SpanRecord> = scan_export_request_with(&body, &old)
        .expect("valid")
        .spans
        .into_iter()
        .map(|(_, s)| s)
        .collect();
    assert_eq!(count_matches(&own, &binding, &before), expected);
    assert_eq!(count_matches(&own, &Binding::default(), &spans), expected);

    // The bits really are what is read when the generation matches: a binding that (wrongly) maps every
    // predicate to the "other" bit, which no span has, counts nothing.
    let wrong = Binding {
        generation: policy.generation(),
        bits: vec![0; mine.len()],
    };
    assert_eq!(count_matches(&own, &wrong, &spans), vec![0; mine.len()]);
    // A predicate missing from the policy set cannot be bound.
    assert!(Binding::new(&mine, &old).is_none());
}
