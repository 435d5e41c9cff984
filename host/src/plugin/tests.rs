//! Host tests against the real components in `target/plugins/` (built by `scripts/build-plugins.sh`).

use super::*;
use crate::otlp::scan_export_request;
use crate::testing::{kv_int, kv_str, request, span_in};
use bytes::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::{Span, Status, span, status};
use prost::Message;
use std::sync::OnceLock;

/// A component built by `scripts/build-plugins.sh`. Missing files fail the test: they are part of the
/// build, not optional.
pub(crate) fn plugin_path(name: &str) -> PathBuf {
    crate::testing::built_plugin(name)
}

fn test_cache_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/plugin-test-cache")
}

/// One runtime for the whole test binary (as in production), with generous deadlines: tests run in
/// parallel on small machines. Tests of the limits pass their own.
fn runtime() -> &'static PluginRuntime {
    static RT: OnceLock<PluginRuntime> = OnceLock::new();
    RT.get_or_init(|| {
        PluginRuntime::new(RuntimeSettings {
            cache_dir: Some(test_cache_dir()),
            default_deadline: Duration::from_secs(2),
            init_deadline: Duration::from_secs(20),
            ..Default::default()
        })
        .expect("runtime")
    })
}

fn sampler(file: &str, config: &str) -> SamplerPlugin {
    runtime()
        .load_sampler(&PluginSpec::new(file, plugin_path(file), config))
        .expect("loads")
}

const T0: u64 = 1_700_000_000_000_000_000;
const MS: u64 = 1_000_000;

/// What one test span looks like.
#[derive(Clone)]
struct S {
    name: &'static str,
    parent: u64,
    start_ms: u64,
    end_ms: u64,
    error: bool,
    attrs: Vec<KeyValue>,
}

fn s(name: &'static str, parent: u64, start_ms: u64, end_ms: u64) -> S {
    S {
        name,
        parent,
        start_ms,
        end_ms,
        error: false,
        attrs: Vec::new(),
    }
}

impl S {
    fn error(mut self) -> Self {
        self.error = true;
        self
    }
    fn attr(mut self, kv: KeyValue) -> Self {
        self.attrs.push(kv);
        self
    }
}

fn proto_span(trace_id: u128, i: usize, x: &S) -> Span {
    let mut sp = span_in(
        trace_id,
        i as u64 + 1,
        x.parent,
        x.name,
        T0 + x.start_ms * MS,
        T0 + x.end_ms * MS,
    );
    sp.attributes = x.attrs.clone();
    if x.error {
        sp.status = Some(Status {
            code: status::StatusCode::Error as i32,
            message: "boom happened".into(),
        });
    }
    sp
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

/// A trace of `spans` from service `svc`. Span ids are 1.., parents refer to them (0 = root).
fn trace(trace_id: u128, svc: &str, spans: &[S]) -> Vec<SpanRecord> {
    let spans = spans
        .iter()
        .enumerate()
        .map(|(i, x)| proto_span(trace_id, i, x))
        .collect();
    scan(&request(svc, spans))
}

fn ok_trace() -> Vec<SpanRecord> {
    trace(
        1,
        "checkout",
        &[s("GET /cart", 0, 0, 20), s("SELECT", 1, 2, 10)],
    )
}

fn verdict(p: &SamplerPlugin, spans: &[SpanRecord]) -> Verdict {
    p.decide(0x42, spans).expect("decides").verdict
}

// ---- marshalling ----

#[test]
fn summary_covers_the_trace() {
    let spans = trace(
        0xabcd_ef01_2345_6789_0011_2233_4455_6677,
        "front",
        &[
            s("child", 1, 5, 50).error(),
            s("GET /", 0, 1, 30),
            s("late", 1, 40, 120).error(),
        ],
    );
    let sum = marshal::summary(0xabcd_ef01_2345_6789_0011_2233_4455_6677, &spans, 99);
    assert_eq!(sum.trace_id.hi, 0xabcd_ef01_2345_6789);
    assert_eq!(sum.randomness, 0x11_2233_4455_6677);
    assert_eq!((sum.span_count, sum.error_span_count), (3, 2));
    assert_eq!(sum.duration_nanos, 119 * MS);
    assert_eq!(sum.root.as_ref().map(|r| r.name.as_str()), Some("GET /"));
    assert_eq!(
        (
            sum.service_name.as_str(),
            sum.service_count,
            sum.now_unix_nano
        ),
        ("front", 1, 99)
    );
}

#[test]
fn projection_passes_only_declared_keys() {
    let spans = trace(
        7,
        "svc",
        &[
            s("a", 0, 0, 1)
                .attr(kv_int("http.response.status_code", 503))
                .attr(kv_str("other", "x")),
            s("b", 1, 0, 1).attr(kv_str("http.status_code", "200")),
        ],
    );
    let p = Projection {
        span_keys: vec![
            "http.status_code".into(),
            "http.response.status_code".into(),
        ],
        resource_keys: vec!["service.name".into()],
        scope_keys: vec![],
    };
    let got = marshal::project(&p, &spans);
    assert_eq!(got.len(), 3, "{got:?}");
    assert_eq!(
        (got[0].span_index, got[0].key_index, &got[0].value),
        (0, 1, &AttributeValue::Int(503))
    );
    assert_eq!(
        got[1].value,
        AttributeValue::Str("svc".into()),
        "resource once, on the first span"
    );
    assert_eq!((got[2].span_index, got[2].key_index), (1, 0));
}

#[test]
fn nested_values_become_json() {
    let nested = AnyValue {
        value: Some(any_value::Value::ArrayValue(ArrayValue {
            values: vec![
                AnyValue {
                    value: Some(any_value::Value::IntValue(1)),
                },
                AnyValue {
                    value: Some(any_value::Value::ArrayValue(ArrayValue {
                        values: vec![AnyValue {
                            value: Some(any_value::Value::StringValue("a\"b".into())),
                        }],
                    })),
                },
                AnyValue {
                    value: Some(any_value::Value::BytesValue(vec![0xff, 0, 1])),
                },
            ],
        })),
    };
    let bytes = nested.encode_to_vec();
    let v = marshal::value_from_ref(crate::otlp::AnyValueRef::decode(&bytes));
    assert_eq!(
        v,
        AttributeValue::NestedJson(r#"[1,["a\"b"],"/wAB"]"#.into())
    );
    assert_eq!(marshal::value_from_proto(&nested), v);
}

// ---- the standard samplers ----

#[test]
fn keep_errors_decides() {
    let p = sampler("keep-errors", "{}");
    assert_eq!(verdict(&p, &ok_trace()), Verdict::Abstain);
    let err = trace(2, "svc", &[s("GET /", 0, 0, 10), s("db", 1, 1, 5).error()]);
    let v = p.decide(2, &err).expect("decides");
    assert_eq!(
        (v.verdict, v.reason.as_deref()),
        (Verdict::Keep, Some("error"))
    );

    let http = sampler("keep-errors", r#"{"http_status": ["5xx"]}"#);
    // 0.2: the status classes are predicates evaluated by the host, nothing is projected.
    assert!(http.projection().span_keys.is_empty());
    assert_eq!(http.predicates().len(), 2);
    let t503 = trace(
        3,
        "svc",
        &[s("GET /", 0, 0, 10).attr(kv_int("http.response.status_code", 503))],
    );
    let t404 = trace(
        3,
        "svc",
        &[s("GET /", 0, 0, 10).attr(kv_str("http.status_code", "404"))],
    );
    assert_eq!(verdict(&http, &t503), Verdict::Keep);
    assert_eq!(verdict(&http, &t404), Verdict::Abstain);
}

#[test]
fn keep_slow_decides() {
    let p = sampler(
        "keep-slow",
        r#"{"threshold": "1s", "per_root_name": {"GET /report": "10s"}}"#,
    );
    // Trace duration runs from the earliest start to the latest end, whichever spans they are.
    let slow = trace(4, "svc", &[s("GET /", 0, 0, 300), s("async", 1, 900, 1100)]);
    let fast = trace(4, "svc", &[s("GET /", 0, 0, 300), s("db", 1, 10, 999)]);
    let report = trace(4, "svc", &[s("GET /report", 0, 0, 5000)]);
    assert_eq!(verdict(&p, &slow), Verdict::Keep);
    assert_eq!(verdict(&p, &fast), Verdict::Abstain);
    assert_eq!(verdict(&p, &report), Verdict::Abstain);
}

#[test]
fn probabilistic_is_consistent_on_randomness() {
    let p = sampler("probabilistic", r#"{"probability": 0.25}"#);
    let spans = ok_trace();
    // Keep iff randomness >= (1 - 0.25) * 2^56 = 0xc0000000000000.
    let keep = p
        .decide(0xffff_0000_0000_0000_00c0_0000_0000_0000, &spans)
        .expect("decides");
    let drop = p
        .decide(0x0000_0000_0000_0000_00bf_ffff_ffff_ffff, &spans)
        .expect("decides");
    assert_eq!(
        (keep.verdict, keep.probability),
        (Verdict::Keep, Some(0.25))
    );
    assert_eq!(drop.verdict, Verdict::Drop);
    // Only the low 56 bits count.
    let high_bits = p
        .decide(0xff00_0000_0000_0000_ff00_0000_0000_0000, &spans)
        .expect("decides");
    assert_eq!(high_bits.verdict, Verdict::Drop);
}

#[test]
fn attribute_match_decides() {
    let p = sampler(
        "attribute-match",
        r#"{"conditions": [{"key": "http.route", "regex": "^/admin"},
                           {"key": "service.name", "on": "resource", "equals": "billing"}]}"#,
    );
    let admin = trace(
        5,
        "shop",
        &[
            s("GET", 0, 0, 1),
            s("h", 1, 0, 1).attr(kv_str("http.route", "/admin/users")),
        ],
    );
    let user = trace(
        5,
        "shop",
        &[s("GET", 0, 0, 1).attr(kv_str("http.route", "/users"))],
    );
    let billing = trace(5, "billing", &[s("GET", 0, 0, 1)]);
    assert_eq!(verdict(&p, &admin), Verdict::Keep);
    assert_eq!(verdict(&p, &user), Verdict::Abstain);
    assert_eq!(verdict(&p, &billing), Verdict::Keep);
}

#[test]
fn span_count_decides() {
    let p = sampler("span-count", r#"{"min": 3}"#);
    let three = trace(
        6,
        "svc",
        &[s("a", 0, 0, 1), s("b", 1, 0, 1), s("c", 1, 0, 1)],
    );
    assert_eq!(verdict(&p, &three), Verdict::Keep);
    assert_eq!(verdict(&p, &ok_trace()), Verdict::Abstain);
}

#[test]
fn rate_limit_is_per_key_and_stateful() {
    let p = sampler("rate-limit", r#"{"traces_per_second": 0.001, "burst": 2}"#);
    let a = trace(8, "a", &[s("x", 0, 0, 1)]);
    let b = trace(8, "b", &[s("x", 0, 0, 1)]);
    let got: Vec<_> = [&a, &a, &a, &b].iter().map(|t| verdict(&p, t)).collect();
    assert_eq!(
        got,
        [Verdict::Keep, Verdict::Keep, Verdict::Drop, Verdict::Keep]
    );
    // Keeps report the share kept (stateful: a share, multiplied with the upstream probability).
    assert!(p.is_stateful());
    let fresh = trace(8, "c", &[s("x", 0, 0, 1)]);
    assert_eq!(p.decide(8, &fresh).expect("decides").probability, Some(1.0));
    // Stateful: the bucket survives across calls from several threads because there is one instance.
    std::thread::scope(|sc| {
        for _ in 0..3 {
            sc.spawn(|| assert_eq!(verdict(&p, &a), Verdict::Drop));
        }
    });
    assert_eq!(p.stats().instances_created, 1);
}

// ---- failure modes ----

fn hostile(mode: &str) -> SamplerPlugin {
    sampler("test-hostile", &format!(r#"{{"mode": "{mode}"}}"#))
}

#[test]
fn trap_is_reported_and_the_next_call_works() {
    let p = hostile("trap_on_boom");
    let boom = trace(9, "svc", &[s("boom", 0, 0, 1)]);
    let e = p.decide(9, &boom).expect_err("traps");
    assert!(matches!(e, PluginFailure::Trap(_)), "{e:?}");
    assert_eq!(
        verdict(&p, &ok_trace()),
        Verdict::Keep,
        "a fresh instance answers"
    );
    let st = p.stats();
    assert_eq!((st.calls, st.traps), (2, 1));
    assert_eq!(st.instances_created, 2);
}

#[test]
fn infinite_loop_times_out() {
    let spec = PluginSpec {
        deadline: Some(Duration::from_millis(20)),
        ..PluginSpec::new("loop", plugin_path("test-hostile"), r#"{"mode": "loop"}"#)
    };
    let p = runtime().load_sampler(&spec).expect("loads");
    let started = Instant::now();
    assert_eq!(p.decide(1, &ok_trace()), Err(PluginFailure::Timeout));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(p.stats().timeouts, 1);
}

#[test]
fn memory_bomb_hits_the_cap() {
    let spec = PluginSpec {
        memory_limit: Some(16 << 20),
        ..PluginSpec::new("oom", plugin_path("test-hostile"), r#"{"mode": "oom"}"#)
    };
    let p = runtime().load_sampler(&spec).expect("loads");
    assert_eq!(p.decide(1, &ok_trace()), Err(PluginFailure::OutOfMemory));
    assert_eq!(
        p.decide(1, &ok_trace()),
        Err(PluginFailure::OutOfMemory),
        "again on a fresh instance"
    );
    assert_eq!(p.stats().out_of_memory, 2);
}

#[test]
fn slow_only_sometimes_times_out_only_then() {
    let spec = PluginSpec {
        deadline: Some(Duration::from_millis(20)),
        ..PluginSpec::new(
            "sometimes",
            plugin_path("test-hostile"),
            r#"{"mode": "slow_sometimes"}"#,
        )
    };
    let p = runtime().load_sampler(&spec).expect("loads");
    let slow = trace(9, "svc", &[s("slow", 0, 0, 1)]);
    for _ in 0..3 {
        assert_eq!(verdict(&p, &ok_trace()), Verdict::Keep);
        let started = Instant::now();
        assert_eq!(p.decide(9, &slow), Err(PluginFailure::Timeout));
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "bounded by the deadline: {:?}",
            started.elapsed()
        );
    }
    assert_eq!(verdict(&p, &ok_trace()), Verdict::Keep, "still answers");
    let st = p.stats();
    assert_eq!((st.calls, st.timeouts), (7, 3));
}

#[test]
fn huge_output_is_cut_to_size_or_stopped_by_the_memory_cap() {
    // 8 MiB of reason and of log line: the host keeps 128 bytes of the reason and 4 KiB of the line.
    let p = hostile("huge_output");
    let v = p.decide(1, &ok_trace()).expect("decides");
    assert_eq!(v.verdict, Verdict::Keep);
    assert_eq!(v.reason.as_deref().map(str::len), Some(MAX_REASON));
    // Under a 4 MiB cap the same output cannot even be built.
    let spec = PluginSpec {
        memory_limit: Some(4 << 20),
        ..PluginSpec::new(
            "huge",
            plugin_path("test-hostile"),
            r#"{"mode": "huge_output"}"#,
        )
    };
    let p = runtime().load_sampler(&spec).expect("loads");
    assert_eq!(p.decide(1, &ok_trace()), Err(PluginFailure::OutOfMemory));
}

#[test]
fn bad_results_are_rejected() {
    let p = hostile("bad_probability");
    let e = p.decide(1, &ok_trace()).expect_err("invalid");
    assert!(
        matches!(&e, PluginFailure::BadResult(m) if m.contains("probability 7")),
        "{e:?}"
    );
    assert_eq!(p.stats().bad_results, 1);
}

#[test]
fn init_failures_name_the_plugin() {
    let e = runtime().load_sampler(&PluginSpec::new(
        "slow-rule",
        plugin_path("keep-slow"),
        r#"{"treshold": "1s"}"#,
    ));
    let msg = e.expect_err("bad config").to_string();
    assert!(
        msg.contains("slow-rule") && msg.contains("treshold"),
        "{msg}"
    );

    let e = runtime().load_sampler(&PluginSpec::new(
        "t",
        plugin_path("test-hostile"),
        r#"{"mode": "init_trap"}"#,
    ));
    assert!(
        matches!(
            e,
            Err(PluginError::Init {
                failure: PluginFailure::Trap(_),
                ..
            })
        ),
        "{e:?}"
    );

    let rt = PluginRuntime::new(RuntimeSettings {
        cache_dir: Some(test_cache_dir()),
        init_deadline: Duration::from_millis(50),
        ..Default::default()
    })
    .expect("runtime");
    let e = rt.load_sampler(&PluginSpec::new(
        "l",
        plugin_path("test-hostile"),
        r#"{"mode": "init_loop"}"#,
    ));
    assert!(
        matches!(
            e,
            Err(PluginError::Init {
                failure: PluginFailure::Timeout,
                ..
            })
        ),
        "{e:?}"
    );
}

#[test]
fn wrong_world_and_garbage_are_clear_errors() {
    let e = runtime()
        .load_sampler(&PluginSpec::new("r", plugin_path("test-redactor"), "{}"))
        .expect_err("redactor");
    let msg = e.to_string();
    assert!(
        msg.contains("it is a redactor") && msg.contains("expected a sampler"),
        "{msg}"
    );
    let e = runtime()
        .load_redactor(&PluginSpec::new("s", plugin_path("keep-errors"), "{}"))
        .expect_err("sampler");
    assert!(e.to_string().contains("it is a sampler"), "{e}");

    let dir = std::env::temp_dir().join(format!("tailgate-plugin-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    let junk = dir.join("junk.wasm");
    std::fs::write(&junk, b"\0asm garbage").expect("write");
    let e = runtime().inspect(&junk).expect_err("garbage");
    assert!(matches!(e, PluginError::Compile { .. }), "{e:?}");
    let e = runtime()
        .inspect(&dir.join("missing.wasm"))
        .expect_err("missing");
    assert!(matches!(e, PluginError::Read { .. }), "{e:?}");
}

#[test]
fn inspect_reports_world_and_imports() {
    let info = runtime()
        .inspect(&plugin_path("keep-errors"))
        .expect("inspects");
    assert_eq!(info.world, PluginWorld::Sampler);
    assert_eq!(info.export, "tailgate:plugin/sampling@0.2.0");
    assert_eq!(info.version, "0.2.0");
    assert_eq!(info.world_name(), "tailgate:plugin/sampler@0.2.0");
    let v1 = runtime()
        .inspect(&plugin_path("keep-slow"))
        .expect("inspects");
    assert_eq!(
        (v1.world, v1.export.as_str(), v1.version),
        (
            PluginWorld::Sampler,
            "tailgate:plugin/sampling@0.1.0",
            "0.1.0"
        )
    );
    assert!(info.size_bytes > 0 && info.sha256.len() == 64);
    assert!(
        info.imports.iter().any(|i| i.starts_with("wasi:")),
        "{:?}",
        info.imports
    );
    let info = runtime()
        .inspect(&plugin_path("test-redactor"))
        .expect("inspects");
    assert_eq!(info.world, PluginWorld::Redactor);
    assert_eq!(info.version, "0.1.0");
}

#[test]
fn full_trace_carries_everything() {
    let p = hostile("full");
    assert!(p.wants_full_trace());
    let mut root = proto_span(11, 0, &s("GET /", 0, 0, 10).error());
    root.attributes = vec![kv_str("a", "b"), kv_int("n", 1)];
    root.events = vec![span::Event {
        name: "exception".into(),
        time_unix_nano: T0,
        ..Default::default()
    }];
    root.links = vec![span::Link {
        trace_id: vec![9; 16],
        span_id: vec![8; 8],
        ..Default::default()
    }];
    let child = proto_span(11, 1, &s("db", 1, 1, 2));
    let mut req = request("svc", vec![root]);
    let mut other = request("db", vec![child]);
    req.resource_spans.append(&mut other.resource_spans);
    let spans = scan(&req);
    let v = p.decide(11, &spans).expect("decides");
    assert_eq!(
        v.reason.as_deref(),
        Some(r#"spans=2 attrs=2 events=1 links=1 resources=2 scopes=2 messages=["boom happened"]"#)
    );
}

#[test]
fn host_accessors_log_and_counters() {
    let p = hostile("accessors");
    let spans = trace(
        12,
        "svc",
        &[s("GET /x", 0, 0, 1).attr(kv_str("http.method", "GET"))],
    );
    let v = p.decide(12, &spans).expect("decides");
    assert_eq!(
        v.reason.as_deref(),
        Some(
            r#"Some("GET /x") Some(AttributeValue::Str("GET")) Some(AttributeValue::Str("svc")) None"#
        )
    );
    p.decide(12, &spans).expect("decides");
    assert_eq!(p.stats().counters, vec![("accessor_calls".to_owned(), 2)]);
}

#[test]
fn concurrent_callers_get_their_own_instances() {
    let p = sampler("keep-errors", "{}");
    let spans = ok_trace();
    std::thread::scope(|sc| {
        for _ in 0..4 {
            sc.spawn(|| {
                for _ in 0..200 {
                    assert_eq!(verdict(&p, &spans), Verdict::Abstain);
                }
            });
        }
    });
    let st = p.stats();
    assert_eq!(st.calls, 800);
    assert!((1..=5).contains(&st.instances_created), "{st:?}");
}

#[test]
fn compile_cache_is_used_on_the_second_load() {
    let dir = std::env::temp_dir().join(format!("tailgate-cache-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let settings = RuntimeSettings {
        cache_dir: Some(dir.clone()),
        ..Default::default()
    };
    let spec = PluginSpec::new("errors", plugin_path("keep-errors"), "{}");
    let cold = PluginRuntime::new(settings.clone())
        .expect("rt")
        .load_sampler(&spec)
        .expect("loads")
        .stats();
    let warm = PluginRuntime::new(settings)
        .expect("rt")
        .load_sampler(&spec)
        .expect("loads")
        .stats();
    assert!(!cold.from_cache && warm.from_cache, "{cold:?} {warm:?}");
    eprintln!(
        "keep-errors compile cold {:?} / cached {:?}; load cold {:?} / cached {:?}",
        cold.compile_time, warm.compile_time, cold.load_time, warm.load_time
    );
    let _ = std::fs::remove_dir_all(&dir);
}

// ---- Python ----

#[test]
fn python_keep_errors_agrees_with_rust() {
    for config in [
        "{}",
        r#"{"http_status": ["5xx", 429]}"#,
        r#"{"status_error": false, "http_status": ["4xx"]}"#,
    ] {
        let rust = sampler("keep-errors", config);
        let py = sampler("python-keep-errors", config);
        // The Rust plugin is a 0.2 sampler (status classes as predicates, evaluated by the host), the
        // Python one a 0.1 sampler (values projected and matched in the guest): same decisions.
        assert_eq!(
            rust.predicates().is_empty(),
            py.projection().span_keys.is_empty(),
            "{config}"
        );
        let traces = [
            ok_trace(),
            trace(2, "svc", &[s("GET /", 0, 0, 10), s("db", 1, 1, 5).error()]),
            trace(
                3,
                "svc",
                &[s("GET /", 0, 0, 10).attr(kv_int("http.response.status_code", 503))],
            ),
            trace(
                3,
                "svc",
                &[s("GET /", 0, 0, 10).attr(kv_int("http.response.status_code", 429))],
            ),
            trace(
                3,
                "svc",
                &[s("GET /", 0, 0, 10).attr(kv_str("http.status_code", "404"))],
            ),
            trace(
                3,
                "svc",
                &[
                    s("GET /", 0, 0, 10).attr(kv_int("http.response.status_code", 200)),
                    s("call", 1, 1, 5).attr(kv_str("http.status_code", "502")),
                ],
            ),
        ];
        for t in &traces {
            let (r, y) = (
                rust.decide(1, t).expect("rust"),
                py.decide(1, t).expect("python"),
            );
            assert_eq!(r, y, "{config}");
        }
    }
    let e = runtime()
        .load_sampler(&PluginSpec::new(
            "py",
            plugin_path("python-keep-errors"),
            r#"{"http_statuses": []}"#,
        ))
        .expect_err("bad config");
    assert!(e.to_string().contains("http_statuses"), "{e}");
}

// ---- redactors ----

#[test]
fn redactor_edits_are_resolved() {
    let r = runtime()
        .load_redactor(&PluginSpec::new("pii", plugin_path("test-redactor"), "{}"))
        .expect("loads");
    let spans = trace(
        13,
        "svc",
        &[s("secret op", 0, 0, 1)
            .attr(kv_str("password", "hunter2"))
            .attr(kv_str("user.email", "a@b.c"))
            .attr(kv_str("card", "4111 1111 1111 1234"))
            .attr(kv_str("ssn", "x"))
            .attr(kv_str("keep", "me"))],
    );
    let edits = r.redact(13, &spans).expect("redacts");
    let summary: Vec<_> = edits
        .iter()
        .map(|e| (e.field.kind, e.field.key.as_str(), e.action.clone()))
        .collect();
    assert_eq!(summary.len(), 5, "{summary:?}");
    assert_eq!(
        summary[0],
        (
            FieldKind::SpanName,
            "",
            EditAction::Replace("redacted".into())
        )
    );
    assert_eq!(
        summary[1],
        (FieldKind::SpanAttribute, "password", EditAction::Remove)
    );
    assert_eq!(
        summary[2],
        (FieldKind::SpanAttribute, "user.email", EditAction::Hash)
    );
    let EditAction::Mask(ranges) = &summary[3].2 else {
        panic!("{summary:?}")
    };
    assert_eq!(ranges.len(), 12);
    assert_eq!(summary[4].2, EditAction::RenameKey("ssn.redacted".into()));
    assert_eq!(edits[1].field.attribute_index, 0);
    assert_eq!(edits[4].field.attribute_index, 3);

    let bad = runtime()
        .load_redactor(&PluginSpec::new(
            "bad",
            plugin_path("test-redactor"),
            r#"{"mode": "bad_edit"}"#,
        ))
        .expect("loads");
    let e = bad.redact(13, &spans).expect_err("bad edit");
    assert!(
        matches!(&e, PluginFailure::BadResult(m) if m.contains("fields")),
        "{e:?}"
    );
}

#[test]
fn packing_lists_every_string() {
    let mut root = proto_span(14, 0, &s("GET /", 0, 0, 10).error().attr(kv_int("n", 5)));
    root.events = vec![span::Event {
        name: "ev".into(),
        attributes: vec![kv_str("k", "v")],
        ..Default::default()
    }];
    let spans = scan(&request("svc", vec![root]));
    let packed = packing::pack(&spans);
    let kinds: Vec<_> = packed
        .fields
        .iter()
        .map(|f| (f.kind, f.key.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [
            (FieldKind::ResourceAttribute, "service.name"),
            (FieldKind::SpanName, ""),
            (FieldKind::StatusMessage, ""),
            (FieldKind::SpanAttribute, "n"),
            (FieldKind::EventName, ""),
            (FieldKind::EventAttribute, "k"),
        ]
    );
    let value = |i: usize| {
        let r = &packed.wit.fields[i].value;
        std::str::from_utf8(&packed.wit.text[r.offset as usize..(r.offset + r.len) as usize])
            .expect("utf8")
    };
    assert_eq!(
        (value(0), value(1), value(2), value(3), value(5)),
        ("svc", "GET /", "boom happened", "5", "v")
    );
}

// ---- predicate pushdown (0.2 samplers) ----

/// `trace` scanned with an explicit predicate set (as the ingest scan does with the policy's).
fn trace_with(set: &crate::predicate::PredicateSet, svc: &str, spans: &[S]) -> Vec<SpanRecord> {
    let spans = spans
        .iter()
        .enumerate()
        .map(|(i, x)| proto_span(9, i, x))
        .collect();
    let body = Bytes::from(request(svc, spans).encode_to_vec());
    crate::otlp::scan_export_request_with(&body, set)
        .expect("valid")
        .spans
        .into_iter()
        .map(|(_, s)| s)
        .collect()
}

/// The standard 0.2 samplers decide the same whether the counts come from ingest-time bits or from the
/// decision-time walk, and those decisions are the expected ones.
#[test]
fn pushdown_bits_and_walk_decide_alike() {
    use opentelemetry_proto::tonic::common::v1::any_value::Value as V;
    let val = |k: &str, v: V| KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    };
    let am = r#"{"conditions": [
        {"key": "http.route", "regex": "^/admin"},
        {"key": "deployment.environment", "on": "resource", "equals": "prod"},
        {"key": "size", "min": 500, "max": 599},
        {"key": "debug", "bool": true},
        {"key": "tier", "in": ["gold", "platinum"]}]}"#;
    let all = r#"{"mode": "all", "action": "drop", "conditions": [
        {"key": "a", "equals": "x"}, {"key": "b", "bool": true}]}"#;
    let tiers = V::ArrayValue(ArrayValue {
        values: ["bronze", "gold"]
            .iter()
            .map(|t| AnyValue {
                value: Some(V::StringValue((*t).into())),
            })
            .collect(),
    });
    type Case = (&'static str, Vec<S>, Verdict);
    let cases: Vec<(&str, &str, Vec<Case>)> = vec![
        (
            "keep-errors",
            r#"{"status_error": false, "http_status": ["5xx", 429]}"#,
            vec![
                (
                    "svc",
                    vec![s("a", 0, 0, 1).attr(kv_int("http.response.status_code", 503))],
                    Verdict::Keep,
                ),
                (
                    "svc",
                    vec![s("a", 0, 0, 1).attr(kv_str("http.status_code", "429"))],
                    Verdict::Keep,
                ),
                (
                    "svc",
                    vec![
                        s("a", 0, 0, 1),
                        s("b", 1, 0, 1).attr(kv_str("http.status_code", "599")),
                    ],
                    Verdict::Keep,
                ),
                (
                    "svc",
                    vec![
                        s("a", 0, 0, 1)
                            .attr(val("http.response.status_code", V::DoubleValue(503.0))),
                    ],
                    Verdict::Abstain,
                ),
                (
                    "svc",
                    vec![s("a", 0, 0, 1).attr(kv_int("http.response.status_code", 404))],
                    Verdict::Abstain,
                ),
                ("svc", vec![s("a", 0, 0, 1).error()], Verdict::Abstain),
            ],
        ),
        (
            "attribute-match",
            am,
            vec![
                (
                    "svc",
                    vec![s("a", 0, 0, 1).attr(kv_str("http.route", "/admin/x"))],
                    Verdict::Keep,
                ),
                (
                    "svc",
                    vec![s("a", 0, 0, 1).attr(kv_str("http.route", "/x/admin"))],
                    Verdict::Abstain,
                ),
                (
                    "svc",
                    vec![s("a", 0, 0, 1).attr(val("size", V::DoubleValue(599.5)))],
                    Verdict::Abstain,
                ),
                (
                    "svc",
                    vec![s("a", 0, 0, 1).attr(val("size", V::DoubleValue(500.0)))],
                    Verdict::Keep,
                ),
                (
                    "svc",
                    vec![s("a", 0, 0, 1).attr(kv_int("size", 550))],
                    Verdict::Keep,
                ),
                (
                    "svc",
                    vec![s("a", 0, 0, 1).attr(kv_str("size", "550"))],
                    Verdict::Abstain,
                ),
                (
                    "svc",
                    vec![s("a", 0, 0, 1).attr(val("debug", V::BoolValue(true)))],
                    Verdict::Keep,
                ),
                (
                    "svc",
                    vec![s("a", 0, 0, 1).attr(val("debug", V::BoolValue(false)))],
                    Verdict::Abstain,
                ),
                (
                    "svc",
                    vec![s("a", 0, 0, 1).attr(val("tier", tiers.clone()))],
                    Verdict::Keep,
                ),
                (
                    "svc",
                    vec![s("a", 0, 0, 1).attr(kv_str("tier", "silver"))],
                    Verdict::Abstain,
                ),
            ],
        ),
        (
            "attribute-match",
            all,
            vec![
                (
                    "svc",
                    vec![s("a", 0, 0, 1).attr(kv_str("a", "x"))],
                    Verdict::Abstain,
                ),
                (
                    "svc",
                    vec![
                        s("a", 0, 0, 1).attr(kv_str("a", "x")),
                        s("b", 1, 0, 1).attr(val("b", V::BoolValue(true))),
                    ],
                    Verdict::Drop,
                ),
            ],
        ),
    ];
    for (file, config, traces) in cases {
        let p = sampler(file, config);
        assert!(!p.predicates().is_empty(), "{file} {config}");
        // Another rule's predicate first, so the plugin's bits are not its own indexes.
        let other = [crate::predicate::Predicate::new(
            crate::predicate::Level::Span,
            "other".into(),
            crate::predicate::Test::Exists,
        )
        .expect("valid")];
        let set =
            crate::predicate::PredicateSet::for_policy([&other[..], p.predicates()]).expect("set");
        let unbound: Vec<Verdict> = traces
            .iter()
            .map(|(svc, spans, _)| verdict(&p, &trace_with(&set, svc, spans)))
            .collect();
        assert!(p.bind_predicates(&set));
        for (i, (svc, spans, expected)) in traces.iter().enumerate() {
            let t = trace_with(&set, svc, spans);
            let walked = trace_with(&crate::predicate::PredicateSet::default(), svc, spans);
            assert_eq!(
                p.predicate_matches(&t),
                p.predicate_matches(&walked),
                "{file} case {i}"
            );
            assert_eq!(
                verdict(&p, &t),
                *expected,
                "{file} {config} case {i} (bits)"
            );
            assert_eq!(unbound[i], *expected, "{file} {config} case {i} (walk)");
        }
    }
    // A resource-level condition, from the bits.
    let p = sampler("attribute-match", am);
    let set = crate::predicate::PredicateSet::for_policy([p.predicates()]).expect("set");
    assert!(p.bind_predicates(&set));
    let mut req = request("svc", vec![proto_span(9, 0, &s("a", 0, 0, 1))]);
    if let Some(r) = req.resource_spans[0].resource.as_mut() {
        r.attributes.push(kv_str("deployment.environment", "prod"));
    }
    let body = Bytes::from(req.encode_to_vec());
    let spans: Vec<SpanRecord> = crate::otlp::scan_export_request_with(&body, &set)
        .expect("valid")
        .spans
        .into_iter()
        .map(|(_, s)| s)
        .collect();
    assert_eq!(spans[0].pred_gen(), set.generation());
    assert_eq!(p.predicate_matches(&spans), [0, 1, 0, 0, 0]);
    assert_eq!(verdict(&p, &spans), Verdict::Keep);
}

#[test]
fn a_bad_predicate_fails_the_load_naming_it() {
    let e = runtime()
        .load_sampler(&PluginSpec::new(
            "routes",
            plugin_path("attribute-match"),
            r#"{"conditions": [{"key": "a", "equals": "x"}, {"key": "http.route", "regex": "(admin"}]}"#,
        ))
        .expect_err("bad regex");
    let msg = e.to_string();
    assert!(
        msg.contains("routes")
            && msg.contains("predicate 1")
            && msg.contains("http.route")
            && msg.contains("invalid regex \"(admin\""),
        "{msg}"
    );
}
