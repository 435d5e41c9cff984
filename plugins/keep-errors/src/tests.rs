use super::*;
use tailgate_plugin_sdk::testing::{span_attr, summary};
use tailgate_plugin_sdk::{AttributeValue, Verdict};

#[test]
fn keeps_error_traces_and_abstains_otherwise() {
    let (p, interest) = KeepErrors::from_config("{}").unwrap();
    assert!(
        interest.span_attributes.is_empty(),
        "status-only config needs no attributes"
    );
    let mut s = summary();
    assert_eq!(p.decide_on(&s, &[]).verdict, Verdict::Abstain);
    s.error_span_count = 1;
    assert_eq!(p.decide_on(&s, &[]), Decision::keep("error"));
}

#[test]
fn http_classes_and_codes() {
    let (p, interest) =
        KeepErrors::from_config(r#"{"status_error": false, "http_status": ["5xx", 429]}"#).unwrap();
    assert_eq!(interest.span_attributes, STATUS_KEYS);
    let mut s = summary();
    s.error_span_count = 3;
    assert_eq!(
        p.decide_on(&s, &[]).verdict,
        Verdict::Abstain,
        "status_error off"
    );
    let keep = |v| p.decide_on(&s, &[span_attr(0, 0, v)]).verdict;
    assert_eq!(keep(AttributeValue::Int(503)), Verdict::Keep);
    assert_eq!(keep(AttributeValue::Str("500".into())), Verdict::Keep);
    assert_eq!(keep(AttributeValue::Int(429)), Verdict::Keep);
    assert_eq!(keep(AttributeValue::Int(404)), Verdict::Abstain);
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
