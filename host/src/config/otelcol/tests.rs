use super::*;
use crate::config::{Combinator, Config, RuleAction};

/// Every policy type of the Collector's tail_sampling processor (its README's example, plus the rest).
const COLLECTOR: &str = r#"
receivers: {otlp: {protocols: {grpc: {}}}}
processors:
  batch: {}
  tail_sampling:
    decision_wait: 10s
    num_traces: 100
    expected_new_traces_per_sec: 10
    decision_cache: {sampled_cache_size: 100000, non_sampled_cache_size: 0}
    policies:
      - {name: always, type: always_sample}
      - {name: slow, type: latency, latency: {threshold_ms: 5000, upper_threshold_ms: 10000}}
      - {name: numeric, type: numeric_attribute, numeric_attribute: {key: key1, min_value: 50, max_value: 100}}
      - {name: sample, type: probabilistic, probabilistic: {sampling_percentage: 10}}
      - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}
      - {name: ok-too, type: status_code, status_code: {status_codes: [ERROR, UNSET]}}
      - {name: strings, type: string_attribute, string_attribute: {key: key2, values: [value1, value2]}}
      - {name: regexes, type: string_attribute, string_attribute: {key: key2, values: ["val.*"], enabled_regex_matching: true}}
      - {name: not-debug, type: string_attribute, string_attribute: {key: env, values: [debug], invert_match: true}}
      - {name: limit, type: rate_limiting, rate_limiting: {spans_per_second: 35}}
      - {name: bytes, type: bytes_limiting, bytes_limiting: {bytes_per_second: 1024}}
      - {name: sizes, type: span_count, span_count: {min_spans: 2, max_spans: 20}}
      - {name: state, type: trace_state, trace_state: {key: key3, values: [value1]}}
      - {name: flag, type: boolean_attribute, boolean_attribute: {key: key4, value: true}}
      - {name: ottl, type: ottl_condition, ottl_condition: {span: ['attributes["a"] == "b"']}}
      - name: and-policy
        type: and
        and:
          and_sub_policy:
            - {name: and-numeric, type: numeric_attribute, numeric_attribute: {key: key1, min_value: 50, max_value: 100}}
            - {name: and-strings, type: string_attribute, string_attribute: {key: key2, values: [value1]}}
      - name: drop-health
        type: drop
        drop:
          drop_sub_policy:
            - {name: health, type: string_attribute, string_attribute: {key: url.path, values: ["/health"]}}
      - name: composite
        type: composite
        composite:
          max_total_spans_per_second: 1000
          composite_sub_policy:
            - {name: c-errors, type: status_code, status_code: {status_codes: [ERROR]}}
            - {name: c-sample, type: probabilistic, probabilistic: {sampling_percentage: 1}}
service: {pipelines: {traces: {receivers: [otlp], processors: [tail_sampling], exporters: []}}}
"#;

#[test]
fn every_policy_type_migrates_or_is_named_and_the_result_is_a_valid_config() {
    let m = migrate(COLLECTOR, "otelcol.yaml").expect("migrates");
    let c = Config::parse(&m.yaml, "migrated").expect("the migration is a valid tailgate config");
    assert_eq!(
        c.policy.default,
        crate::config::DefaultDecision::Keep,
        "always_sample"
    );
    assert_eq!(c.buffer.max_wait, std::time::Duration::from_secs(10));
    assert_eq!(c.buffer.decision_cache.kept_traces, Some(100_000));
    let names: Vec<&str> = c.policy.rules.iter().map(|r| r.name.as_str()).collect();
    // Drops first, then the keeping rules in the Collector's order; the unmigratable ones left out.
    assert_eq!(
        names,
        [
            "not-debug",
            "drop-health",
            "slow",
            "numeric",
            "sample",
            "errors",
            "strings",
            "regexes",
            "not-debug-rest",
            "limit",
            "sizes",
            "flag",
            "and-policy",
            "composite"
        ]
    );
    let rule = |n: &str| c.policy.rules.iter().find(|r| r.name == n).expect(n);
    assert_eq!(rule("not-debug").action, RuleAction::Drop);
    let rest = rule("not-debug-rest").combinator().expect("not");
    assert_eq!(
        (rest.0, rest.1[0].plugin.is_some()),
        (Combinator::Not, true)
    );
    assert_eq!(rule("drop-health").action, RuleAction::Drop);
    assert_eq!(
        rule("drop-health").plugin.as_deref(),
        Some(std::path::Path::new("builtin:attribute-match"))
    );
    assert_eq!(rule("sample").config["otherwise"], "abstain");
    assert_eq!(rule("limit").config["spans_per_second"], 35.0);
    assert_eq!(rule("slow").config["threshold"], "5000ms");
    assert_eq!(rule("slow").config["upper_threshold"], "10000ms");
    assert_eq!(rule("sizes").config, json!({"min": 2, "max": 20}));
    let and = rule("and-policy").combinator().expect("a combinator");
    assert_eq!((and.0, and.1.len()), (Combinator::All, 2));
    assert_eq!(and.1[0].name, "and-numeric");
    let any = rule("composite").combinator().expect("a combinator");
    assert_eq!(any.0, Combinator::Any);
    // Each approximation and each policy left out is named.
    for needle in [
        "`always` (always_sample)",
        "`slow` (latency): with upper_threshold_ms",
        "`sample` (probabilistic)",
        "`ok-too`: NOT migrated",
        "`not-debug` (string_attribute, invert_match)",
        "`limit` (rate_limiting)",
        "`bytes`: NOT migrated",
        "`state`: NOT migrated",
        "`ottl`: NOT migrated",
        "`composite` (composite)",
        "decision_wait 10s",
        "num_traces",
    ] {
        assert!(
            m.notes.iter().any(|n| n.contains(needle)),
            "no note on {needle}: {:#?}",
            m.notes
        );
        assert!(m.yaml.contains(needle), "the header lacks {needle}");
    }
}

#[test]
fn the_migrated_policy_loads_and_decides_like_the_collector() {
    use crate::metrics::Metrics;
    use crate::otlp::{SpanRecord, scan_export_request};
    use crate::testing::{kv_str, request, span_in};
    use prost::Message;
    let collector = r#"
processors:
  tail_sampling/main:
    policies:
      - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}
      - {name: vip, type: string_attribute, string_attribute: {key: tier, values: [gold]}}
      - name: drop-health
        type: drop
        drop: {drop_sub_policy: [{name: h, type: string_attribute, string_attribute: {key: url.path, values: [/health]}}]}
"#;
    let m = migrate(collector, "c.yaml").expect("migrates");
    assert!(m.notes.is_empty(), "{:?}", m.notes);
    assert!(m.yaml.contains("Every policy maps exactly"));
    let mut c = Config::parse(&m.yaml, "migrated").expect("valid");
    // A generous call deadline: the machine running the tests is shared.
    c.plugins.call_timeout = std::time::Duration::from_secs(10);
    let policy = crate::policy::load(&c).expect("loads");
    let decide = |attrs: &[(&str, &str)], error: bool| {
        let mut s = span_in(5, 1, 0, "GET", 1_000, 2_000);
        for (k, v) in attrs {
            s.attributes.push(kv_str(k, v));
        }
        if error {
            s.status = Some(opentelemetry_proto::tonic::trace::v1::Status {
                code: 2,
                message: String::new(),
            });
        }
        let body = bytes::Bytes::from(request("svc", vec![s]).encode_to_vec());
        let spans: Vec<SpanRecord> = scan_export_request(&body)
            .expect("valid")
            .spans
            .into_iter()
            .map(|(_, s)| s)
            .collect();
        policy.decide(5, &spans, &Metrics::new()).keep
    };
    // What the Collector would do: any policy samples, a drop wins over all.
    assert!(decide(&[], true));
    assert!(decide(&[("tier", "gold")], false));
    assert!(!decide(&[("tier", "silver")], false));
    assert!(!decide(&[("url.path", "/health"), ("tier", "gold")], true));
}

#[test]
fn configurations_without_tail_sampling_are_refused_with_the_reason() {
    let e = migrate("receivers: {}\n", "a.yaml").expect_err("no processors");
    assert_eq!(e, "a.yaml: no `processors` section");
    let e = migrate("processors: {batch: {}}\n", "a.yaml").expect_err("none");
    assert!(e.contains("no `tail_sampling` processor"), "{e}");
    let e = migrate("processors: {tail_sampling: {}}\n", "a.yaml").expect_err("no policies");
    assert!(e.contains("has no `policies` list"), "{e}");
    let e = migrate(":\n  - [", "a.yaml").expect_err("not YAML");
    assert!(
        e.starts_with("a.yaml: not a Collector configuration"),
        "{e}"
    );
}
