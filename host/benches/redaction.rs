//! Cost of redaction per span through the real `pii` plugin: packing, the plugin call, edit validation,
//! re-encoding and re-scanning, on spans with ~20 realistic attributes (a few with PII) and on the same
//! spans without PII. Needs `scripts/build-plugins.sh` first.
//! Run: `cargo bench -p tailgate --bench redaction`.

use bytes::Bytes;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::{Status, status};
use prost::Message;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tailgate::config::RedactorFailurePolicy;
use tailgate::metrics::Metrics;
use tailgate::otlp::{SpanRecord, scan_export_request};
use tailgate::plugin::{PluginRuntime, PluginSpec, RuntimeSettings};
use tailgate::redact::{KeyedHasher, Outcome, RedactionSettings, RedactorRule, Redactors};
use tailgate::testing::{kv_int, kv_str, request, span_in};

const TRACE_ID: u128 = 0x5b8e_fff7_9879_8388_3f2a_18d0_1a3b_c4d5;

/// A trace of `n` spans with 20 attributes each; with `pii`, 4 of them carry personal data (an email
/// key, a URL with a token, SQL with literals, a card in a message) and one span has an error message
/// with an email.
fn trace(n: usize, pii: bool) -> Vec<SpanRecord> {
    let t0 = 1_700_000_000_000_000_000u64;
    let spans = (0..n)
        .map(|i| {
            let parent = if i == 0 { 0 } else { 1 };
            let mut s = span_in(
                TRACE_ID,
                i as u64 + 1,
                parent,
                "GET /api/v1/orders/{id}",
                t0,
                t0 + 5_000_000,
            );
            let mut attrs: Vec<KeyValue> = vec![
                kv_str("http.request.method", "GET"),
                kv_str("http.route", "/api/v1/orders/{id}"),
                kv_int("http.response.status_code", 200),
                kv_str("server.address", "orders.internal.svc.cluster.local"),
                kv_int("server.port", 8080),
                kv_str("network.protocol.version", "1.1"),
                kv_str(
                    "user_agent.original",
                    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120.0",
                ),
                kv_str("app.request_id", "550e8400-e29b-41d4-a716-446655440000"),
                kv_str("app.tenant", "acme-industries"),
                kv_str("app.feature_flags", "new-checkout,fast-search,beta-ui"),
                kv_int("app.items", 3),
                kv_str("app.region", "eu-west-1"),
                kv_str("thread.name", "tokio-runtime-worker"),
                kv_int("thread.id", 17),
                kv_str("code.function.name", "orders::handlers::get_order"),
                kv_str("app.cache", "miss"),
            ];
            if pii {
                attrs.push(kv_str("user.email", "jane.doe@example.org"));
                attrs.push(kv_str(
                    "url.full",
                    "https://shop.example.com/orders/42?access_token=abc123def456&page=2",
                ));
                attrs.push(kv_str(
                    "db.query.text",
                    "SELECT * FROM orders WHERE customer = 'jane' AND id = 42",
                ));
                attrs.push(kv_str(
                    "app.note",
                    "paid with 4111 1111 1111 1111 yesterday",
                ));
            } else {
                attrs.push(kv_str("user.tier", "gold"));
                attrs.push(kv_str("url.path", "/orders/42"));
                attrs.push(kv_str("db.operation.name", "SELECT"));
                attrs.push(kv_str("app.note", "paid by card yesterday, no issues"));
            }
            s.attributes = attrs;
            if i == n - 1 {
                let message = if pii {
                    "declined for jane.doe@example.org"
                } else {
                    "declined"
                };
                s.status = Some(Status {
                    code: status::StatusCode::Error as i32,
                    message: message.into(),
                });
            }
            s
        })
        .collect();
    let body = Bytes::from(request("orders", spans).encode_to_vec());
    scan_export_request(&body)
        .expect("valid")
        .spans
        .into_iter()
        .map(|(_, s)| s)
        .collect()
}

fn main() {
    let wasm = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/plugins/pii.wasm");
    assert!(
        wasm.exists(),
        "{} is missing: run scripts/build-plugins.sh first",
        wasm.display()
    );
    let runtime = PluginRuntime::new(RuntimeSettings {
        cache_dir: Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/plugin-bench-cache")),
        default_deadline: Duration::from_secs(1),
        ..Default::default()
    })
    .expect("runtime");
    let plugin = runtime
        .load_redactor(&PluginSpec::new("pii", &wasm, "{}"))
        .expect("pii loads");
    let redactors = Redactors::new(
        vec![RedactorRule {
            name: "pii".into(),
            redactor: Arc::new(plugin),
        }],
        RedactionSettings {
            hasher: KeyedHasher::new(b"bench-key-0123456789", "k1"),
            ..Default::default()
        },
        RedactorFailurePolicy::StrictScrub,
    );
    let metrics = Metrics::new();
    // Profiling mode (for `valgrind --tool=callgrind --collect-atstart=no
    // --toggle-collect=*profile_loop*`, whose instruction counts stay stable on a busy machine): redact a
    // 10-span trace with PII (`TAILGATE_PROFILE_CASE=pii`) or without (`nopii`) a fixed number of times.
    if let Some(iters) = std::env::var("TAILGATE_PROFILE_ITERS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        let pii = std::env::var("TAILGATE_PROFILE_CASE").as_deref() != Ok("nopii");
        let spans = trace(10, pii);
        profile_loop(
            &mut || match redactors.redact(TRACE_ID, spans.clone(), &metrics) {
                Outcome::Export(out) => assert_eq!(out.len(), 10),
                Outcome::Dropped => panic!("dropped"),
            },
            iters,
        );
        println!("profiled {iters} redactions of a 10-span trace (PII: {pii})");
        return;
    }
    println!("redaction through pii.wasm (20 attributes per span), median of 9 runs");
    for (n, pii) in [
        (1, true),
        (10, true),
        (100, true),
        (10, false),
        (100, false),
    ] {
        let spans = trace(n, pii);
        let iters = (20_000 / n).max(50);
        let mut samples = Vec::new();
        for _ in 0..9 {
            let start = Instant::now();
            for _ in 0..iters {
                match redactors.redact(TRACE_ID, spans.clone(), &metrics) {
                    Outcome::Export(out) => assert_eq!(out.len(), n),
                    Outcome::Dropped => panic!("dropped"),
                }
            }
            samples.push(start.elapsed().as_secs_f64() / iters as f64);
        }
        samples.sort_by(f64::total_cmp);
        let per_trace = samples[samples.len() / 2];
        println!(
            "  {n:>3} spans, {:<7}: {:>9.1} us/trace  {:>6.2} us/span",
            if pii { "PII" } else { "no PII" },
            per_trace * 1e6,
            per_trace * 1e6 / n as f64
        );
    }
}

/// The loop callgrind collects in profiling mode (not inlined, so `--toggle-collect` can name it).
#[inline(never)]
fn profile_loop(f: &mut dyn FnMut(), iters: usize) {
    for _ in 0..iters {
        f();
    }
}
