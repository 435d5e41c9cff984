//! The PII corpus: realistic spans with known personal data planted in every field kind a span can carry
//! (resource, scope, span and event and link attributes, span names, status messages, event names) and
//! in every value type (string, int, bytes, array, map, nested map), plus near-misses that must survive.
//! The corpus itself is `tailgate::testing::pii_corpus` (the benchmark's `leaks` measurement sends the
//! same one). Runs the standard `pii` plugin (`target/plugins/pii.wasm`, built by `scripts/build-plugins.sh`)
//! through the real host and asserts zero leaks and zero false positives.

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tailgate::config::RedactorFailurePolicy;
use tailgate::metrics::Metrics;
use tailgate::otlp::{SpanRecord, scan_export_request};
use tailgate::plugin::{PluginRuntime, PluginSpec, RuntimeSettings};
use tailgate::redact::{KeyedHasher, Outcome, RedactionSettings, RedactorRule, Redactors};
use tailgate::testing::pii_corpus::{NEAR_MISSES, PLANTED, TRACE_ID, corpus};

fn plugin(name: &str) -> PathBuf {
    tailgate::testing::built_plugin(name)
}

fn records(req: &ExportTraceServiceRequest) -> Vec<SpanRecord> {
    let body = Bytes::from(req.encode_to_vec());
    scan_export_request(&body)
        .expect("valid")
        .spans
        .into_iter()
        .map(|(_, s)| s)
        .collect()
}

/// Every piece of text the output carries, as lines (values of every type rendered as text).
fn flatten(spans: &[SpanRecord]) -> String {
    fn value(out: &mut String, v: Option<&AnyValue>) {
        match v.and_then(|v| v.value.as_ref()) {
            None | Some(Value::StringValueStrindex(_)) => {}
            Some(Value::StringValue(s)) => out.push_str(s),
            Some(Value::BoolValue(b)) => out.push_str(&b.to_string()),
            Some(Value::IntValue(i)) => out.push_str(&i.to_string()),
            Some(Value::DoubleValue(d)) => out.push_str(&d.to_string()),
            Some(Value::BytesValue(b)) => out.push_str(&String::from_utf8_lossy(b)),
            Some(Value::ArrayValue(a)) => a.values.iter().for_each(|i| {
                value(out, Some(i));
                out.push('\n');
            }),
            Some(Value::KvlistValue(l)) => attrs(out, &l.values),
        }
    }
    fn attrs(out: &mut String, kvs: &[KeyValue]) {
        for kv in kvs {
            out.push_str(&kv.key);
            out.push('=');
            value(out, kv.value.as_ref());
            out.push('\n');
        }
    }
    let mut out = String::new();
    for r in spans {
        let rs = ResourceSpans::decode(&r.origin.resource_fields[..]).expect("resource");
        attrs(&mut out, &rs.resource.unwrap_or_default().attributes);
        let ss = ScopeSpans::decode(&r.origin.scope_fields[..]).expect("scope");
        attrs(&mut out, &ss.scope.unwrap_or_default().attributes);
        let sp = Span::decode(&r.raw[..]).expect("span");
        out.push_str(&sp.name);
        out.push('\n');
        out.push_str(&sp.status.unwrap_or_default().message);
        out.push('\n');
        attrs(&mut out, &sp.attributes);
        for e in &sp.events {
            out.push_str(&e.name);
            out.push('\n');
            attrs(&mut out, &e.attributes);
        }
        for l in &sp.links {
            attrs(&mut out, &l.attributes);
        }
    }
    out
}

fn pii_redactors(config: &str, settings: RedactionSettings) -> Redactors {
    let runtime = PluginRuntime::new(RuntimeSettings {
        cache_dir: Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/plugin-test-cache")),
        default_deadline: Duration::from_secs(2),
        init_deadline: Duration::from_secs(20),
        ..Default::default()
    })
    .expect("runtime");
    let p = runtime
        .load_redactor(&PluginSpec::new("pii", plugin("pii"), config))
        .expect("pii loads");
    Redactors::new(
        vec![RedactorRule {
            name: "pii".into(),
            redactor: Arc::new(p),
        }],
        settings,
        RedactorFailurePolicy::StrictScrub,
    )
}

fn settings() -> RedactionSettings {
    RedactionSettings {
        hasher: KeyedHasher::new(b"corpus-test-key-0123456789", "k1"),
        ..Default::default()
    }
}

#[test]
fn pii_corpus_has_no_leaks_and_no_false_positives() {
    let req = corpus();
    let input = records(&req);
    let before = flatten(&input);
    for p in PLANTED.iter().chain(NEAR_MISSES) {
        assert!(before.contains(p), "corpus bug: {p:?} is not in the input");
    }
    let metrics = Metrics::new();
    let out = match pii_redactors("{}", settings()).redact(TRACE_ID, input.clone(), &metrics) {
        Outcome::Export(s) => s,
        Outcome::Dropped => panic!("dropped"),
    };
    let after = flatten(&out);
    let leaked: Vec<&str> = PLANTED
        .iter()
        .copied()
        .filter(|p| after.contains(p))
        .collect();
    let false_positives: Vec<&str> = NEAR_MISSES
        .iter()
        .copied()
        .filter(|p| !after.contains(p))
        .collect();
    println!(
        "pii corpus: planted {} values, leaked {}, near-misses {}, false positives {}",
        PLANTED.len(),
        leaked.len(),
        NEAR_MISSES.len(),
        false_positives.len()
    );
    assert!(
        leaked.is_empty(),
        "leaked: {leaked:?}\n--- output ---\n{after}"
    );
    assert!(
        false_positives.is_empty(),
        "false positives: {false_positives:?}\n--- output ---\n{after}"
    );

    // Ids and timestamps untouched; every span audited; identity keys pseudonymized with the key id.
    let ids = |s: &[SpanRecord]| {
        let mut v: Vec<_> = s
            .iter()
            .map(|r| {
                (
                    r.span_id,
                    r.parent_span_id,
                    r.start_unix_nano,
                    r.end_unix_nano,
                )
            })
            .collect();
        v.sort();
        v
    };
    assert_eq!(ids(&input), ids(&out));
    assert!(after.contains("hmac:k1:"), "{after}");
    assert!(
        after.contains("https://REDACTED:REDACTED@shop.example.com/cart?session=REDACTED&item=42"),
        "{after}"
    );
    assert!(
        after.contains("SELECT * FROM orders WHERE email = ? AND card = ? AND total > ?"),
        "{after}"
    );
    assert!(
        after.contains("************4444") || after.contains("**** **** **** 4444"),
        "{after}"
    );
    for r in &out {
        let sp = Span::decode(&r.raw[..]).expect("span");
        assert!(
            sp.attributes
                .iter()
                .any(|kv| kv.key == "tailgate.redacted.count"),
            "span {} not audited",
            sp.name
        );
        assert!(
            sp.attributes
                .iter()
                .any(|kv| kv.key == "tailgate.redacted.rules"
                    && kv.value.as_ref().and_then(|v| v.value.as_ref())
                        == Some(&Value::StringValue("pii".into())))
        );
    }
    let text = metrics.encode();
    assert!(
        text.contains("tailgate_redactions_total{rule=\"pii\",reason=\"email\",mode=\"applied\"}"),
        "{text}"
    );
}

#[test]
fn dry_run_changes_nothing_and_counts() {
    let input = records(&corpus());
    let metrics = Metrics::new();
    let settings = RedactionSettings {
        dry_run: true,
        ..settings()
    };
    let out = match pii_redactors("{}", settings).redact(TRACE_ID, input.clone(), &metrics) {
        Outcome::Export(s) => s,
        Outcome::Dropped => panic!("dropped"),
    };
    assert_eq!(out.len(), input.len());
    for (a, b) in input.iter().zip(&out) {
        assert_eq!(a.raw, b.raw, "dry run changed a span");
        assert!(Arc::ptr_eq(&a.origin, &b.origin));
    }
    let text = metrics.encode();
    assert!(text.contains("mode=\"dry_run\""), "{text}");
    assert!(!text.contains("mode=\"applied\""), "{text}");
}

#[test]
fn same_value_same_token_across_traces() {
    let r = pii_redactors("{}", settings());
    let metrics = Metrics::new();
    let tokens = |spans: Vec<SpanRecord>| -> String {
        let Outcome::Export(out) = r.redact(TRACE_ID, spans, &metrics) else {
            panic!("dropped")
        };
        let f = flatten(&out);
        f.lines()
            .find(|l| l.starts_with("user.email="))
            .expect("user.email kept")
            .to_owned()
    };
    let a = tokens(records(&corpus()));
    let b = tokens(records(&corpus()));
    assert_eq!(a, b);
    assert!(a.starts_with("user.email=hmac:k1:"), "{a}");
}

/// A trace that puts `value` where the topology reads label values from: the resource's `service.name`,
/// the root span's name, a client span's `server.address` and another's `peer.service`.
fn label_trace(i: u64, value: &str) -> Vec<SpanRecord> {
    use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
    let t0 = 1_700_000_000_000_000_000u64;
    let span = |id: u64, parent: u64, name: &str, kind: SpanKind, peer: Option<(&str, &str)>| {
        let mut s = tailgate::testing::span_in(u128::from(i) + 1, id, parent, name, t0, t0 + 1000);
        s.kind = kind as i32;
        if let Some((k, v)) = peer {
            s.attributes.push(tailgate::testing::kv_str(k, v));
        }
        s
    };
    records(&tailgate::testing::request(
        value,
        vec![
            span(1, 0, value, SpanKind::Server, None),
            span(
                2,
                1,
                "GET /x",
                SpanKind::Client,
                Some(("server.address", value)),
            ),
            span(
                3,
                1,
                "call",
                SpanKind::Client,
                Some(("peer.service", value)),
            ),
        ],
    ))
}

/// The topology's labels (`/metrics`) and service graph (`/api/service-graph`) are computed from every
/// trace, so they must carry no more than the export does: every planted value that the policy strips
/// from a span name, a service name or a peer attribute is absent from both.
#[test]
fn topology_labels_carry_no_more_than_the_export() {
    let redactors = pii_redactors("{}", settings());
    let metrics = Metrics::new();
    let mut exported = Vec::new();
    for (i, p) in PLANTED.iter().enumerate() {
        let spans = label_trace(i as u64, p);
        metrics.topology.observe(&spans, &redactors);
        let Outcome::Export(out) = redactors.redact(TRACE_ID, spans, &Metrics::new()) else {
            panic!("dropped")
        };
        exported.push(flatten(&out));
    }
    let labels = format!(
        "{}\n{}",
        metrics.encode(),
        serde_json::to_string(&metrics.topology.graph()).expect("json")
    );
    let in_labels: Vec<&str> = PLANTED
        .iter()
        .copied()
        .filter(|p| labels.contains(p))
        .collect();
    let in_export: Vec<&str> = PLANTED
        .iter()
        .zip(&exported)
        .filter(|(p, e)| e.contains(**p))
        .map(|(p, _)| *p)
        .collect();
    println!(
        "topology labels: planted {} values as service, span and peer names; the export keeps {} of them \
         there ({in_export:?}), the labels {}",
        PLANTED.len(),
        in_export.len(),
        in_labels.len()
    );
    let more: Vec<&&str> = in_labels
        .iter()
        .filter(|p| !in_export.contains(p))
        .collect();
    assert!(
        more.is_empty(),
        "labels carry what the export does not: {more:?}\n{labels}"
    );
    // What the export keeps there is what the detectors cannot tell by the value alone (passwords and
    // user names are found by their attribute key, and a service or span name has none).
    assert!(in_export.len() <= 9, "{in_export:?}");
    assert!(labels.contains("tailgate_topology_label_checks_total{outcome=\"redacted\"}"));
}
