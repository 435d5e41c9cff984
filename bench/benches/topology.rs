//! Criterion benchmarks of what the topology metrics (RED series and service-graph edges from every
//! trace, `tailgate::topology`) cost now that their labels are safe to expose, on 10-span traces across 3
//! services:
//! - `observe/templates`: span names that are their own route template (`GET /api/v1/orders/{id}`), the
//!   same every trace: one map lookup per span;
//! - `observe/ids`: span names with an e-mail or a number that changes every trace
//!   (`GET /api/users/<email>`, `GET /api/orders/<n>`): each name is templated, then looked up (20 000
//!   distinct traces observed once before measuring, so every series exists);
//! - `label_check/pii`: what a *new* series costs once: its service name and operation template checked
//!   through the real `pii` redactor (one plugin call on a synthetic 2-span request). Skipped when
//!   `target/plugins/pii.wasm` is missing (`scripts/build-plugins.sh` builds it).
//!
//! Run: `cargo bench -p tailgate-bench --bench topology`.

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message;
use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tailgate::config::RedactorFailurePolicy;
use tailgate::metrics::Metrics;
use tailgate::otlp::{SpanRecord, scan_export_request};
use tailgate::plugin::{PluginRuntime, PluginSpec, RuntimeSettings};
use tailgate::redact::{KeyedHasher, RedactionSettings, RedactorRule, Redactors};
use tailgate::testing::{kv_str, request, span_in};
use tailgate::topology::labels::{LabelPolicy, Source};

const TRACES: usize = 20_000;
const SPANS_PER_TRACE: u64 = 10;

/// Trace `i`: frontend (server root, client call) -> orders (server, client call) -> payments (server,
/// a database call): 10 spans.
fn trace(i: usize, ids: bool) -> Vec<SpanRecord> {
    let t0 = 1_700_000_000_000_000_000u64;
    let trace_id = i as u128 + 1;
    let name = |n: usize| -> String {
        match (ids, n % 2) {
            (false, 0) => format!("GET /api/v1/orders/{{id}}/items/{n}x"),
            (false, _) => format!("SELECT orders_{n}x"),
            (true, 0) => format!("GET /api/users/user{i}.{n}@example.com"),
            (true, _) => format!("GET /api/orders/{}/items/{n}", 100_000 + i),
        }
    };
    let span = |id: u64, parent: u64, n: usize, kind: SpanKind| {
        let mut s = span_in(trace_id, id, parent, &name(n), t0, t0 + 1_000_000 * id);
        s.kind = kind as i32;
        s
    };
    let mut db = span(10, 9, 9, SpanKind::Client);
    db.attributes.push(kv_str("db.system.name", "postgresql"));
    let parts = [
        (
            "frontend",
            vec![
                span(1, 0, 0, SpanKind::Server),
                span(2, 1, 1, SpanKind::Client),
                span(3, 1, 2, SpanKind::Internal),
            ],
        ),
        (
            "orders",
            vec![
                span(4, 2, 3, SpanKind::Server),
                span(5, 4, 4, SpanKind::Internal),
                span(6, 4, 5, SpanKind::Client),
            ],
        ),
        (
            "payments",
            vec![
                span(7, 6, 6, SpanKind::Server),
                span(8, 7, 7, SpanKind::Internal),
                span(9, 7, 8, SpanKind::Internal),
                db,
            ],
        ),
    ];
    let mut out = Vec::new();
    for (service, spans) in parts {
        let body = Bytes::from(request(service, spans).encode_to_vec());
        out.extend(
            scan_export_request(&body)
                .expect("valid")
                .spans
                .into_iter()
                .map(|(_, s)| s),
        );
    }
    out
}

/// The `tailgate_span_calls_total` series on `/metrics`.
fn series(m: &Metrics) -> usize {
    m.encode()
        .lines()
        .filter(|l| l.starts_with("tailgate_span_calls_total{"))
        .count()
}

fn pii_redactors() -> Option<Redactors> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let wasm = root.join("target/plugins/pii.wasm");
    if !wasm.exists() {
        eprintln!(
            "{} is missing (scripts/build-plugins.sh): label_check/pii skipped",
            wasm.display()
        );
        return None;
    }
    let runtime = PluginRuntime::new(RuntimeSettings {
        cache_dir: Some(root.join("target/plugin-bench-cache")),
        default_deadline: Duration::from_secs(1),
        ..Default::default()
    })
    .expect("runtime");
    let plugin = runtime
        .load_redactor(&PluginSpec::new("pii", &wasm, "{}"))
        .expect("pii loads");
    Some(Redactors::new(
        vec![RedactorRule {
            name: "pii".into(),
            redactor: Arc::new(plugin),
        }],
        RedactionSettings {
            hasher: KeyedHasher::new(b"bench-key-0123456789", "k1"),
            ..Default::default()
        },
        RedactorFailurePolicy::StrictScrub,
    ))
}

fn topology(c: &mut Criterion) {
    let none = Redactors::none();
    let mut g = c.benchmark_group("observe");
    g.throughput(Throughput::Elements(SPANS_PER_TRACE));
    for (case, ids) in [("templates", false), ("ids", true)] {
        let traces: Vec<_> = (0..TRACES).map(|i| trace(i, ids)).collect();
        let metrics = Metrics::new();
        for t in &traces {
            metrics.topology.observe(t, &none);
        }
        eprintln!(
            "observe/{case}: {TRACES} traces of {SPANS_PER_TRACE} spans -> {} span series",
            series(&metrics)
        );
        let mut k = 0;
        g.bench_function(case, |b| {
            b.iter(|| {
                k = (k + 1) % TRACES;
                metrics.topology.observe(black_box(&traces[k]), &none)
            })
        });
    }
    g.finish();

    let Some(pii) = pii_redactors() else {
        return;
    };
    let mut g = c.benchmark_group("label_check");
    g.throughput(Throughput::Elements(1));
    // Room for every value checked: the measured call always misses the cache, as a new series does.
    let labels = LabelPolicy::new(usize::MAX);
    let mut n = 0u64;
    g.bench_function("pii", |b| {
        b.iter(|| {
            n += 1;
            let op = format!("GET /api/v{n}/orders/{{id}}");
            labels.labels(
                &[Source::Service("orders"), Source::Operation(&op)],
                &pii,
                |_| {},
            )
        })
    });
    g.finish();
}

criterion_group!(benches, topology);
criterion_main!(benches);
