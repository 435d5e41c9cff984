//! Plugins in every language: the JavaScript, C and Python examples (`examples/plugins/`,
//! `plugins/python/`) are loaded through the real host and must decide and redact exactly like their Rust
//! equivalents (`keep-errors`, `example-redactor`) on the same traces. The components come from
//! `scripts/build-plugins.sh`; a missing one fails the test. Also prints (never asserts) each language's
//! load time, cold and from the compiled-code cache.

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::{Span, Status, span, status};
use prost::Message;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tailgate::otlp::{SpanRecord, scan_export_request};
use tailgate::plugin::{PluginRuntime, PluginSpec, RuntimeSettings};
use tailgate::testing::{kv_int, kv_str, request, span_in};

/// The samplers that reimplement `keep-errors`, one per language.
const SAMPLERS: [&str; 3] = ["python-keep-errors", "js-keep-errors", "c-keep-errors"];
/// The redactors that reimplement `example-redactor`, one per language.
const REDACTORS: [&str; 3] = ["python-redactor", "js-redactor", "c-redactor"];

/// A component built by `scripts/build-plugins.sh`.
fn plugin(name: &str) -> PathBuf {
    tailgate::testing::built_plugin(name)
}

fn cache_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/plugin-test-cache")
}

/// Generous deadlines: Python and JavaScript components start slowly, and tests share two cores.
fn settings() -> RuntimeSettings {
    RuntimeSettings {
        cache_dir: Some(cache_dir()),
        default_deadline: Duration::from_secs(2),
        init_deadline: Duration::from_secs(30),
        ..Default::default()
    }
}

fn runtime() -> &'static PluginRuntime {
    static RT: OnceLock<PluginRuntime> = OnceLock::new();
    RT.get_or_init(|| PluginRuntime::new(settings()).expect("runtime"))
}

const T0: u64 = 1_700_000_000_000_000_000;
const MS: u64 = 1_000_000;

/// A span of a test trace: `parent` 0 is the root, ids are 1.. in order.
fn sp(trace_id: u128, id: u64, parent: u64, name: &str, attrs: Vec<KeyValue>) -> Span {
    let mut s = span_in(trace_id, id, parent, name, T0 + id * MS, T0 + 20 * MS);
    s.attributes = attrs;
    s
}

fn error(mut s: Span) -> Span {
    s.status = Some(Status {
        code: status::StatusCode::Error as i32,
        message: "boom for jane@example.com".into(),
    });
    s
}

fn scan(req: &ExportTraceServiceRequest) -> Vec<SpanRecord> {
    let body = Bytes::from(req.encode_to_vec());
    scan_export_request(&body)
        .expect("valid")
        .spans
        .into_iter()
        .map(|(_, s)| s)
        .collect()
}

fn trace(svc: &str, spans: Vec<Span>) -> Vec<SpanRecord> {
    scan(&request(svc, spans))
}

/// Traces that exercise every branch of `keep-errors`.
fn sampler_traces() -> Vec<Vec<SpanRecord>> {
    vec![
        trace(
            "checkout",
            vec![
                sp(1, 1, 0, "GET /cart", vec![]),
                sp(1, 2, 1, "SELECT", vec![]),
            ],
        ),
        trace(
            "svc",
            vec![
                sp(2, 1, 0, "GET /", vec![]),
                error(sp(2, 2, 1, "db", vec![])),
            ],
        ),
        trace(
            "svc",
            vec![sp(
                3,
                1,
                0,
                "GET /",
                vec![kv_int("http.response.status_code", 503)],
            )],
        ),
        trace(
            "svc",
            vec![sp(
                4,
                1,
                0,
                "GET /",
                vec![kv_int("http.response.status_code", 429)],
            )],
        ),
        trace(
            "svc",
            vec![sp(
                5,
                1,
                0,
                "GET /",
                vec![kv_str("http.status_code", "404")],
            )],
        ),
        trace(
            "svc",
            vec![sp(
                6,
                1,
                0,
                "GET /",
                vec![kv_str("http.status_code", "500")],
            )],
        ),
        trace(
            "svc",
            vec![
                sp(
                    7,
                    1,
                    0,
                    "GET /",
                    vec![kv_int("http.response.status_code", 200)],
                ),
                sp(7, 2, 1, "call", vec![kv_str("http.status_code", "n/a")]),
                sp(7, 3, 1, "call", vec![kv_int("http.status_code", 502)]),
            ],
        ),
    ]
}

#[test]
fn samplers_agree_with_rust_keep_errors() {
    let configs = [
        "{}",
        r#"{"http_status": ["5xx", 429]}"#,
        r#"{"status_error": false, "http_status": ["4xx"]}"#,
        r#"{"status_error": false, "http_status": ["502", 404]}"#,
    ];
    let traces = sampler_traces();
    for name in SAMPLERS {
        for config in configs {
            let load = |file: &str| {
                runtime()
                    .load_sampler(&PluginSpec::new(file, plugin(file), config))
                    .unwrap_or_else(|e| panic!("{file} loads with {config}: {e}"))
            };
            let (rust, other) = (load("keep-errors"), load(name));
            // The Rust keep-errors is a 0.2 sampler (status classes as host-evaluated predicates);
            // the others project the status keys (0.1): the decisions must agree.
            assert_eq!(
                rust.predicates().is_empty(),
                other.projection().span_keys.is_empty(),
                "{name} {config}"
            );
            for (i, t) in traces.iter().enumerate() {
                let want = rust.decide(0x42, t).expect("rust decides");
                let got = other.decide(0x42, t).expect("decides");
                assert_eq!(got, want, "{name} with {config} on trace {i}");
            }
        }
        let e = runtime()
            .load_sampler(&PluginSpec::new(
                name,
                plugin(name),
                r#"{"http_statuses": []}"#,
            ))
            .expect_err("a bad key fails the load");
        assert!(e.to_string().contains("http_statuses"), "{name}: {e}");
    }
}

/// A trace with personal data in resource, span, event and link attributes, near-misses that must
/// survive, non-string values and non-ASCII text.
fn pii_trace() -> Vec<SpanRecord> {
    let id = 0x0af7_6519_16cd_43dd_8448_eb21_1c80_319c;
    let mut root = sp(
        id,
        1,
        0,
        "GET /users/jane@example.com",
        vec![
            kv_str("user.email", "jane.doe+tag@example.com"),
            kv_str("password", "hunter2"),
            kv_str("card", "4111 1111 1111 1111"),
            kv_str("note", "card 4111-1111-1111-1111 on file"),
            kv_str(
                "contacts",
                "a@b.io, bob_smith@mail.example.org; x@localhost",
            ),
            kv_str("greeting", "grüße an müller@beispiel.de ✓"),
            kv_str("short", "123456789012"),
            kv_str("almost", "@example.com a@b c@.x d@x."),
            kv_int("account", 4_111_111_111_111_111),
        ],
    );
    root.events.push(span::Event {
        time_unix_nano: T0 + 5 * MS,
        name: "login for ops@example.com".into(),
        attributes: vec![
            kv_str("email", "ops@example.com"),
            kv_str("pan", "5500-0000-0000-0004"),
        ],
        ..Default::default()
    });
    let mut child = error(sp(
        id,
        2,
        1,
        "db",
        vec![kv_str(
            "db.statement",
            "SELECT * FROM users WHERE email = 'x.y@corp.co'",
        )],
    ));
    child.links.push(span::Link {
        trace_id: vec![7; 16],
        span_id: vec![8; 8],
        attributes: vec![kv_str("password", "p"), kv_str("by", "sam@z.dev")],
        ..Default::default()
    });
    let mut req = request("accounts", vec![root, child]);
    let resource = req.resource_spans[0].resource.as_mut().expect("resource");
    resource
        .attributes
        .push(kv_str("owner", "team-lead@example.com"));
    scan(&req)
}

#[test]
fn redactors_agree_with_rust_example_redactor() {
    let rust = runtime()
        .load_redactor(&PluginSpec::new(
            "example-redactor",
            plugin("example-redactor"),
            "{}",
        ))
        .expect("loads");
    let traces = [pii_trace(), sampler_traces().remove(0)];
    let want: Vec<_> = traces
        .iter()
        .map(|t| rust.redact(0x42, t).expect("rust redacts"))
        .collect();
    let reasons: Vec<_> = want[0].iter().filter_map(|e| e.reason.as_deref()).collect();
    for reason in ["password", "card", "email"] {
        assert!(
            reasons.contains(&reason),
            "the trace exercises {reason}: {reasons:?}"
        );
    }
    assert!(want[1].is_empty(), "nothing to redact: {:?}", want[1]);
    for name in REDACTORS {
        let other = runtime()
            .load_redactor(&PluginSpec::new(name, plugin(name), "{}"))
            .unwrap_or_else(|e| panic!("{name} loads: {e}"));
        for (i, t) in traces.iter().enumerate() {
            let got = other.redact(0x42, t).expect("redacts");
            assert_eq!(got, want[i], "{name} on trace {i}");
        }
        let e = runtime()
            .load_redactor(&PluginSpec::new(name, plugin(name), r#"{"mode": "x"}"#))
            .expect_err("an unknown key fails the load");
        assert!(e.to_string().contains("mode"), "{name}: {e}");
    }
}

/// Prints how long each language's sampler takes to load: cold (compiled from scratch, cache disabled)
/// and from the compiled-code cache. Informational only: timings are never asserted.
#[test]
fn load_times_cold_and_cached() {
    // The shared test cache: the other tests of this file have usually filled it already.
    let cached = settings();
    let cold = RuntimeSettings {
        disable_cache: true,
        ..settings()
    };
    for (language, name) in [
        ("Rust", "keep-errors"),
        ("Python", "python-keep-errors"),
        ("JavaScript", "js-keep-errors"),
        ("C", "c-keep-errors"),
    ] {
        let spec = PluginSpec::new(name, plugin(name), "{}");
        let load = |settings: &RuntimeSettings| {
            let started = Instant::now();
            let stats = PluginRuntime::new(settings.clone())
                .expect("runtime")
                .load_sampler(&spec)
                .unwrap_or_else(|e| panic!("{name} loads: {e}"))
                .stats();
            (started.elapsed(), stats)
        };
        let (cold_total, cold_stats) = load(&cold);
        load(&cached); // fills the cache, unless another test did
        let (warm_total, warm_stats) = load(&cached);
        eprintln!(
            "load time {language:<10} {name:<20} {:>6} KB: cold {:>9.1?} (compile {:>9.1?}), cached {:>7.1?} \
             (cache load {:>7.1?}, from cache: {})",
            cold_stats.size_bytes / 1024,
            cold_total,
            cold_stats.compile_time,
            warm_total,
            warm_stats.compile_time,
            warm_stats.from_cache,
        );
    }
}
