use super::*;
use tailgate_plugin_sdk::testing::summary;
use tailgate_plugin_sdk::v0_2::Verdict;

#[test]
fn keeps_error_traces_and_abstains_otherwise() {
    let (p, interest) = KeepErrors::from_config("{}").unwrap();
    assert!(
        interest.predicates.is_empty() && interest.projection.span_attributes.is_empty(),
        "status-only config needs no attributes"
    );
    let mut s = summary();
    assert_eq!(p.decide_on(&s, &[]).verdict, Verdict::Abstain);
    s.error_span_count = 1;
    assert_eq!(p.decide_on(&s, &[]), Decision::keep("error"));
}

#[test]
fn http_classes_and_codes_are_integer_range_predicates() {
    let (p, interest) =
        KeepErrors::from_config(r#"{"status_error": false, "http_status": ["5xx", 429]}"#).unwrap();
    let expected: Vec<Predicate> = STATUS_KEYS
        .iter()
        .flat_map(|k| {
            [
                Predicate::span(k, ValueTest::int_range(500, 599)),
                Predicate::span(k, ValueTest::int_range(429, 429)),
            ]
        })
        .collect();
    assert_eq!(interest.predicates, expected);
    assert!(interest.projection.span_attributes.is_empty());
    let mut s = summary();
    s.error_span_count = 3;
    assert_eq!(
        p.decide_on(&s, &[0, 0, 0, 0]).verdict,
        Verdict::Abstain,
        "status_error off"
    );
    for hit in 0..4 {
        let mut m = [0; 4];
        m[hit] = 2;
        assert_eq!(p.decide_on(&s, &m), Decision::keep("http_status"));
    }
}

#[test]
fn bad_config_names_the_key() {
    let e = KeepErrors::from_config(r#"{"http_statuses": ["5xx"]}"#)
        .err()
        .unwrap();
    assert!(e.contains("http_statuses"), "{e}");
    let e = KeepErrors::from_config(r#"{"http_status": ["5yy"]}"#)
        .err()
        .unwrap();
    assert!(e.contains("5yy"), "{e}");
}
