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
    // user names are found by their attribute key, credentials in text by the key before them, a PEM
    // block's body and footer by its header, and a service or span name has none of these).
    assert!(in_export.len() <= 16, "{in_export:?}");
    assert!(labels.contains("tailgate_topology_label_checks_total{outcome=\"redacted\"}"));
}

/// A writer for the test's log subscriber: every line tailgate logs, kept to be scanned.
#[derive(Clone, Default)]
struct Logs(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = Logs;
    fn make_writer(&'a self) -> Logs {
        self.clone()
    }
}

/// Every string in a JSON document (keys and values), one per line.
fn json_strings(v: &serde_json::Value, out: &mut String) {
    match v {
        serde_json::Value::String(s) => {
            out.push_str(s);
            out.push('\n');
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| json_strings(v, out)),
        serde_json::Value::Object(o) => o.iter().for_each(|(k, v)| {
            out.push_str(k);
            out.push('\n');
            json_strings(v, out);
        }),
        _ => {}
    }
}

/// The corpus with every trace id set to `trace_id`; without `error`, the error status becomes unset (so
/// `keep-errors` lets the trace fall to the default, drop) but keeps its message.
fn corpus_as(trace_id: u128, error: bool) -> ExportTraceServiceRequest {
    let mut req = corpus();
    for rs in &mut req.resource_spans {
        for ss in &mut rs.scope_spans {
            for s in &mut ss.spans {
                s.trace_id = trace_id.to_be_bytes().to_vec();
                if let (false, Some(st)) = (error, s.status.as_mut()) {
                    st.code = 0;
                }
            }
        }
    }
    req
}

/// Issue 22, item 1: the PII corpus (personal data in every field kind and value type) goes through the
/// running proxy twice - one trace kept (it has an error) and one dropped (default) - and then every way
/// out is scanned for every planted value: the export (the file exporter's output), `/metrics` (the
/// topology's labels, the redaction counters), `/api/service-graph`, `/api/status` (recent decisions),
/// `/debug/traces/{id}` for both traces, and everything tailgate logged (all of its levels). Recording
/// (`record:`) is the one way out that writes traffic as received: it is refused without
/// `record.unredacted` (config tests and the e2e replay test).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_output_surface_carries_a_planted_value() {
    let logs = Logs::default();
    tracing::subscriber::set_global_default(
        tracing_subscriber::fmt()
            .with_writer(logs.clone())
            .with_ansi(false)
            .with_env_filter(tracing_subscriber::EnvFilter::new("tailgate=trace,warn"))
            .finish(),
    )
    .expect("the only subscriber of this test binary");
    let dir = std::env::temp_dir().join(format!("tailgate-surfaces-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let exported = dir.join("export.jsonl");
    let yaml = format!(
        r#"receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:0
exporters:
  otlp:
    protocol: file
    endpoint: "{export}"
    batch:
      timeout: 50ms
buffer:
  settle: 100ms
  idle_timeout: 300ms
  max_wait: 5s
policy:
  default: drop
  rules:
    - name: errors
      plugin: "{errors}"
  redactors:
    - name: pii
      plugin: "{pii}"
      call_timeout: 2s
  on_redactor_failure: strict_scrub
  redaction:
    hash_key: corpus-test-key-0123456789
    hash_key_id: k1
admin:
  endpoint: 127.0.0.1:0
"#,
        export = exported.display(),
        errors = plugin("keep-errors").display(),
        pii = plugin("pii").display(),
    );
    let config = tailgate::config::Config::parse(&yaml, "surfaces test").expect("valid config");
    let app = tailgate::app::start(config).await.expect("starts");
    let (kept_id, dropped_id) = (TRACE_ID, TRACE_ID ^ 0xffff);
    let http = reqwest::Client::new();
    let otlp = format!("http://{}/v1/traces", app.http_addr.expect("http receiver"));
    for req in [corpus_as(kept_id, true), corpus_as(dropped_id, false)] {
        let r = http
            .post(&otlp)
            .header("content-type", "application/x-protobuf")
            .body(req.encode_to_vec())
            .send()
            .await
            .expect("sent");
        assert!(r.status().is_success(), "{}", r.status());
    }
    let admin = format!("http://{}", app.admin_addr);
    let get = |path: String| {
        let (http, admin) = (http.clone(), admin.clone());
        async move {
            let r = http
                .get(format!("{admin}{path}"))
                .send()
                .await
                .expect("admin answers");
            (r.status().as_u16(), r.text().await.expect("body"))
        }
    };
    // Both decided, the kept one exported (polled: the buffer settles and the exporter batches).
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut explanations = Vec::new();
    for id in [kept_id, dropped_id] {
        loop {
            let (status, body) = get(format!("/debug/traces/{id:032x}")).await;
            if status == 200 {
                explanations.push(body);
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{id:032x} never decided"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    while std::fs::read(&exported).map_or(0, |b| b.len()) == 0 {
        assert!(std::time::Instant::now() < deadline, "nothing exported");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let decisions: Vec<serde_json::Value> = explanations
        .iter()
        .map(|e| serde_json::from_str(e).expect("json"))
        .collect();
    assert_eq!(decisions[0]["decision"], "keep", "{}", decisions[0]);
    assert_eq!(decisions[1]["decision"], "drop", "{}", decisions[1]);

    let mut surfaces: Vec<(String, String)> = Vec::new();
    let (_, metrics) = get("/metrics".into()).await;
    // Span-derived text does reach the labels, as templates: the scan below is not vacuous.
    assert!(
        metrics.contains(r#"operation="GET /users/{email}""#),
        "the root's name, templated: {metrics}"
    );
    // Prometheus label values escape `\`, `"` and newlines.
    let unescaped = metrics
        .replace("\\n", "\n")
        .replace("\\\"", "\"")
        .replace("\\\\", "\\");
    surfaces.push(("/metrics".into(), unescaped));
    for path in ["/api/service-graph", "/api/status"] {
        let (status, body) = get(path.into()).await;
        assert_eq!(status, 200, "{path}: {body}");
        surfaces.push((path.into(), body));
    }
    for (id, body) in [kept_id, dropped_id].iter().zip(explanations) {
        surfaces.push((format!("/debug/traces/{id:032x}"), body));
    }
    // JSON surfaces: their strings as text (escapes undone).
    for (name, body) in surfaces.iter_mut() {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(body) {
            let mut text = String::new();
            json_strings(&v, &mut text);
            *body = text;
        } else {
            assert_eq!(name, "/metrics", "{name} is not JSON: {body}");
        }
    }
    app.shutdown().await;
    let mut export_text = String::new();
    let file = std::fs::read_to_string(&exported).expect("export file");
    for line in file.lines().filter(|l| !l.trim().is_empty()) {
        let req: ExportTraceServiceRequest = serde_json::from_str(line).expect("OTLP/JSON line");
        export_text.push_str(&flatten(&records(&req)));
    }
    assert!(
        export_text.contains("hmac:k1:"),
        "the kept trace was exported redacted: {export_text}"
    );
    surfaces.push(("export".into(), export_text));
    let logged =
        String::from_utf8_lossy(&logs.0.lock().unwrap_or_else(|p| p.into_inner())).into_owned();
    assert!(
        logged.contains("tailgate"),
        "the subscriber saw tailgate's logs: {logged}"
    );
    surfaces.push(("logs".into(), logged));

    let mut leaks = Vec::new();
    for (name, text) in &surfaces {
        for p in PLANTED.iter().filter(|p| text.contains(**p)) {
            leaks.push(format!("{name}: {p:?}"));
        }
    }
    println!(
        "output surfaces: {} scanned ({}) for {} planted values: {} leaks",
        surfaces.len(),
        surfaces
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        PLANTED.len(),
        leaks.len()
    );
    assert!(
        leaks.is_empty(),
        "leaks:\n{}\n{}",
        leaks.join("\n"),
        surfaces
            .iter()
            .map(|(n, t)| format!("--- {n} ---\n{t}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let _ = std::fs::remove_dir_all(&dir);
}
