//! Cost of a plugin call, marshalling included: each standard sampler on a 10- and a 100-span trace, a
//! full-trace plugin and the Python keep-errors for comparison, a redactor, and plugin load time cold vs
//! cached. Needs `scripts/build-plugins.sh` first. Run: `cargo bench -p tailgate --bench plugin_call`.
//!
//! 0.2 samplers (keep-errors, attribute-match) declare predicates: each is measured as in production, its
//! trace scanned with the policy's predicate set and the plugin bound to it (the counts come from the
//! ingest-time bits), and again with the decision-time walk (`... (walk)`: spans scanned under another
//! generation, as right after a reload). The ingest-side cost is the `scan` rows: the validating scan of
//! the same request with and without the predicate sets.

use bytes::Bytes;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::{Status, status};
use prost::Message;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tailgate::otlp::{SpanRecord, scan_export_request, scan_export_request_with};
use tailgate::plugin::{PluginRuntime, PluginSpec, RuntimeSettings, SamplerPlugin};
use tailgate::predicate::PredicateSet;
use tailgate::testing::{kv_int, kv_str, request, span_in};

fn plugin(name: &str) -> PathBuf {
    tailgate::testing::built_plugin(name)
}

const TRACE_ID: u128 = 0x5b8e_fff7_9879_8388_3f2a_18d0_1a3b_c4d5;

/// A trace like the research benchmark's: 17 attributes per span (13 strings, 3 ints, 1 more string),
/// a 12-attribute resource, an error on the last span.
fn trace(n: usize) -> Vec<SpanRecord> {
    scan_with(&trace_body(n), &PredicateSet::default())
}

/// The spans of an encoded request, scanned with the predicate set `preds`.
fn scan_with(body: &Bytes, preds: &PredicateSet) -> Vec<SpanRecord> {
    scan_export_request_with(body, preds)
        .expect("valid")
        .spans
        .into_iter()
        .map(|(_, s)| s)
        .collect()
}

/// The policy set of one plugin's predicates, with the plugin bound to it (as a policy load does).
fn bind(p: &SamplerPlugin) -> PredicateSet {
    let set = PredicateSet::for_policy([p.predicates()]).expect("at most 32 predicates");
    assert!(p.bind_predicates(&set));
    set
}

/// The encoded request of [`trace`].
fn trace_body(n: usize) -> Bytes {
    let t0 = 1_700_000_000_000_000_000u64;
    let spans = (0..n)
        .map(|i| {
            let parent = if i == 0 { 0 } else { 1 };
            let mut s = span_in(
                TRACE_ID,
                i as u64 + 1,
                parent,
                "GET /api/v1/orders/{id}",
                t0 + i as u64 * 1000,
                t0 + 5_000_000,
            );
            let mut attrs: Vec<KeyValue> = (0..13)
                .map(|k| {
                    kv_str(
                        &format!("app.attribute.{k}"),
                        "some-moderately-long-attribute-value-0123456789",
                    )
                })
                .collect();
            attrs.push(kv_int("http.response.status_code", 200));
            attrs.push(kv_int("net.peer.port", 443));
            attrs.push(kv_int("thread.id", 7));
            attrs.push(kv_str("http.route", "/api/v1/orders/{id}"));
            s.attributes = attrs;
            if i == n - 1 {
                s.status = Some(Status {
                    code: status::StatusCode::Error as i32,
                    message: "timeout".into(),
                });
            }
            s
        })
        .collect();
    let mut req = request("checkout", spans);
    if let Some(r) = req.resource_spans[0].resource.as_mut() {
        for k in 0..11 {
            r.attributes.push(kv_str(
                &format!("host.label.{k}"),
                "resource-attribute-value",
            ));
        }
    }
    Bytes::from(req.encode_to_vec())
}

fn trace_without_status_codes(n: usize) -> Vec<SpanRecord> {
    let mut t = trace(n);
    let raw: Vec<_> = t.iter().map(|s| s.raw.clone()).collect();
    drop(raw);
    // Rebuild with the status attribute renamed so the projection finds nothing.
    let t0 = 1_700_000_000_000_000_000u64;
    let spans = (0..n)
        .map(|i| {
            let mut s = span_in(
                TRACE_ID,
                i as u64 + 1,
                if i == 0 { 0 } else { 1 },
                "GET /x",
                t0,
                t0 + 5_000_000,
            );
            s.attributes = (0..17)
                .map(|k| kv_str(&format!("app.attribute.{k}"), "value-0123456789"))
                .collect();
            s
        })
        .collect();
    let body = Bytes::from(request("checkout", spans).encode_to_vec());
    t = scan_export_request(&body)
        .expect("valid")
        .spans
        .into_iter()
        .map(|(_, s)| s)
        .collect();
    t
}

/// Median nanoseconds per call of `f` over `rounds` rounds of `per_round` calls.
fn measure(mut f: impl FnMut(), rounds: usize, per_round: usize) -> f64 {
    for _ in 0..per_round {
        f();
    }
    let mut samples: Vec<f64> = (0..rounds)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..per_round {
                f();
            }
            t.elapsed().as_nanos() as f64 / per_round as f64
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

fn main() {
    let cache = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/plugin-bench-cache");
    let settings = RuntimeSettings {
        cache_dir: Some(cache),
        default_deadline: Duration::from_secs(1),
        ..Default::default()
    };
    let rt = PluginRuntime::new(settings).expect("runtime");
    let (t10, t100) = (trace(10), trace(100));

    let samplers: &[(&str, &str, &str)] = &[
        ("keep-errors", "keep-errors", "{}"),
        (
            "keep-errors (http 5xx)",
            "keep-errors",
            r#"{"status_error": false, "http_status": ["5xx"]}"#,
        ),
        ("keep-slow", "keep-slow", r#"{"threshold": "1s"}"#),
        ("probabilistic", "probabilistic", r#"{"probability": 0.1}"#),
        (
            "attribute-match",
            "attribute-match",
            r#"{"conditions": [{"key": "http.route", "regex": "^/admin"}, {"key": "host.label.3", "on": "resource", "equals": "x"}]}"#,
        ),
        ("span-count", "span-count", r#"{"min": 1000}"#),
        ("rate-limit", "rate-limit", r#"{"traces_per_second": 1e12}"#),
        (
            "full trace (test-hostile)",
            "test-hostile",
            r#"{"mode": "full"}"#,
        ),
        ("python keep-errors", "python-keep-errors", "{}"),
        (
            "python keep-errors (http 5xx)",
            "python-keep-errors",
            r#"{"status_error": false, "http_status": ["5xx"]}"#,
        ),
    ];
    // Profiling mode (for `valgrind --tool=callgrind --collect-atstart=no
    // --toggle-collect=*profile_loop*`): TAILGATE_PROFILE_ITERS calls of the sampler labelled
    // TAILGATE_PROFILE_CASE on the 10-span trace (`... none present` for the trace without the keys).
    if let Some(iters) = std::env::var("TAILGATE_PROFILE_ITERS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        let case = std::env::var("TAILGATE_PROFILE_CASE").unwrap_or_else(|_| "keep-errors".into());
        // The ingest scan of the 10-span request, without predicates or with a sampler's.
        if let Some(label) = case.strip_prefix("scan ") {
            let set = match samplers.iter().find(|(l, _, _)| *l == label) {
                Some((_, file, config)) => bind(
                    &rt.load_sampler(&PluginSpec::new(label, plugin(file), *config))
                        .expect("loads"),
                ),
                None => PredicateSet::default(),
            };
            let body = trace_body(10);
            profile_loop(
                &mut || drop(std::hint::black_box(scan_with(&body, &set))),
                iters,
            );
            println!("profiled {iters} scans ({case})");
            return;
        }
        // The host's attribute lookup alone, old (walk every attribute) and new (byte search first).
        if let Some(how) = case.strip_prefix("host ") {
            let keys = vec![
                "http.response.status_code".to_owned(),
                "http.status_code".to_owned(),
            ];
            let finder = tailgate::otlp::KeyFinder::new(&keys);
            let t = if how.ends_with("absent") {
                trace_without_status_codes(10)
            } else {
                trace(10)
            };
            let walk = how.starts_with("walk");
            profile_loop(
                &mut || {
                    let mut n = 0usize;
                    for s in &t {
                        if walk {
                            n += s.attributes().matching(&keys).count();
                        } else {
                            finder.span_attributes(&s.raw, |_, _| n += 1);
                        }
                    }
                    std::hint::black_box(n);
                },
                iters,
            );
            println!("profiled {iters} lookups ({case})");
            return;
        }
        let (case_name, walk) = match case.strip_suffix(" walk") {
            Some(l) => (l.to_owned(), true),
            None => (case.clone(), false),
        };
        let (label, absent) = match case_name.strip_suffix(" none present") {
            Some(l) => (l.to_owned(), true),
            None => (case_name.clone(), false),
        };
        let (_, file, config) = samplers
            .iter()
            .find(|(l, _, _)| *l == label)
            .expect("TAILGATE_PROFILE_CASE names a sampler of the table");
        let p = rt
            .load_sampler(&PluginSpec::new(label.as_str(), plugin(file), *config))
            .expect("loads");
        // Bits from the ingest scan, unless `walk` (spans of another generation).
        let set = bind(&p);
        let t = if absent {
            trace_without_status_codes(10)
        } else if walk {
            trace(10)
        } else {
            scan_with(&trace_body(10), &set)
        };
        profile_loop(
            &mut || drop(std::hint::black_box(p.decide(TRACE_ID, &t))),
            iters,
        );
        println!("profiled {iters} calls of {case}");
        return;
    }
    println!(
        "{:<32} {:>14} {:>14}",
        "sampler call (median)", "10 spans", "100 spans"
    );
    let (body10, body100) = (trace_body(10), trace_body(100));
    for (label, file, config) in samplers {
        let p = rt
            .load_sampler(&PluginSpec::new(*label, plugin(file), *config))
            .expect("loads");
        let slow = file.starts_with("python") || file.starts_with("test-hostile");
        let (rounds, per) = if slow { (15, 200) } else { (31, 2000) };
        let pushdown = !p.predicates().is_empty();
        // Production: the trace scanned with the policy's predicate set, the plugin bound to it.
        let set = bind(&p);
        let (b10, b100) = (scan_with(&body10, &set), scan_with(&body100, &set));
        let mut runs = vec![(label.to_string(), &b10, &b100)];
        if pushdown {
            runs.push((format!("{label} (walk)"), &t10, &t100));
        }
        for (name, x10, x100) in runs {
            let ns10 = measure(
                || drop(std::hint::black_box(p.decide(TRACE_ID, x10))),
                rounds,
                per,
            );
            let ns100 = measure(
                || drop(std::hint::black_box(p.decide(TRACE_ID, x100))),
                rounds,
                per / 4,
            );
            println!(
                "{name:<32} {:>11.2} us {:>11.2} us",
                ns10 / 1e3,
                ns100 / 1e3
            );
        }
    }

    // The ingest side: the validating scan of the same requests, without and with predicate sets.
    println!();
    println!(
        "{:<32} {:>14} {:>14}",
        "scan (median, per span)", "10 spans", "100 spans"
    );
    let sets: Vec<(&str, PredicateSet)> = [
        ("scan, no predicates", None),
        ("scan, keep-errors http preds", Some(1)),
        ("scan, attribute-match preds", Some(4)),
    ]
    .into_iter()
    .map(|(name, at)| {
        let set = match at {
            Some(i) => {
                let (l, f, c) = samplers[i];
                bind(
                    &rt.load_sampler(&PluginSpec::new(l, plugin(f), c))
                        .expect("loads"),
                )
            }
            None => PredicateSet::default(),
        };
        (name, set)
    })
    .collect();
    for (name, set) in &sets {
        let ns10 = measure(
            || drop(std::hint::black_box(scan_with(&body10, set))),
            31,
            2000,
        );
        let ns100 = measure(
            || drop(std::hint::black_box(scan_with(&body100, set))),
            31,
            200,
        );
        println!(
            "{name:<32} {:>11.1} ns {:>11.1} ns",
            ns10 / 10.0,
            ns100 / 100.0
        );
    }

    // Diagnostics: the projection with nothing present vs one value per span.
    let bare = trace_without_status_codes(10);
    let p = rt
        .load_sampler(&PluginSpec::new(
            "diag",
            plugin("keep-errors"),
            r#"{"status_error": false, "http_status": ["5xx"]}"#,
        ))
        .expect("loads");
    let ns = measure(
        || drop(std::hint::black_box(p.decide(TRACE_ID, &bare))),
        31,
        2000,
    );
    println!(
        "{:<32} {:>11.2} us",
        "keep-errors http, none present",
        ns / 1e3
    );
    let keys = vec![
        "http.response.status_code".to_owned(),
        "http.status_code".to_owned(),
    ];
    let ns = measure(
        || {
            let n: usize = bare
                .iter()
                .map(|s| s.attributes().matching(&keys).count())
                .sum();
            std::hint::black_box(n);
        },
        31,
        2000,
    );
    println!(
        "{:<32} {:>11.2} us",
        "host: scan 10x17 attrs for 2 keys",
        ns / 1e3
    );
    let ns = measure(
        || {
            let n: usize = bare.iter().map(|s| s.attributes().count()).sum();
            std::hint::black_box(n);
        },
        31,
        2000,
    );
    println!(
        "{:<32} {:>11.2} us",
        "host: AttrIter over 10x17 attrs",
        ns / 1e3
    );

    let r = rt
        .load_redactor(&PluginSpec::new("redactor", plugin("test-redactor"), "{}"))
        .expect("loads");
    let ns10 = measure(
        || drop(std::hint::black_box(r.redact(TRACE_ID, &t10))),
        15,
        500,
    );
    let ns100 = measure(
        || drop(std::hint::black_box(r.redact(TRACE_ID, &t100))),
        15,
        100,
    );
    println!(
        "{:<32} {:>11.2} us {:>11.2} us",
        "redactor (packed strings)",
        ns10 / 1e3,
        ns100 / 1e3
    );

    println!();
    println!(
        "{:<24} {:>16} {:>16} {:>16} {:>16}",
        "load", "compile cold", "compile cached", "load cold", "load cached"
    );
    let configs = [
        ("keep-errors", "{}"),
        (
            "attribute-match",
            r#"{"conditions": [{"key": "a", "equals": "b"}]}"#,
        ),
        ("python-keep-errors", "{}"),
    ];
    for (file, config) in configs {
        let dir = std::env::temp_dir().join(format!(
            "tailgate-bench-cache-{}-{file}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let s = RuntimeSettings {
            cache_dir: Some(dir.clone()),
            ..Default::default()
        };
        let spec = PluginSpec::new(file, plugin(file), config);
        let cold = PluginRuntime::new(s.clone())
            .expect("rt")
            .load_sampler(&spec)
            .expect("loads")
            .stats();
        let warm = PluginRuntime::new(s)
            .expect("rt")
            .load_sampler(&spec)
            .expect("loads")
            .stats();
        assert!(warm.from_cache, "second load should hit the cache");
        let ms = |d: Duration| format!("{:.2} ms", d.as_secs_f64() * 1e3);
        println!(
            "{file:<24} {:>16} {:>16} {:>16} {:>16}",
            ms(cold.compile_time),
            ms(warm.compile_time),
            ms(cold.load_time),
            ms(warm.load_time)
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// The loop callgrind collects in profiling mode (not inlined, so `--toggle-collect` can name it).
#[inline(never)]
fn profile_loop(f: &mut dyn FnMut(), iters: usize) {
    for _ in 0..iters {
        f();
    }
}
