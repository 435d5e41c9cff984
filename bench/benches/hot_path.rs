//! Criterion micro-benchmarks of the hot path on the realistic workload (one 512-span request of
//! ~20-attribute spans): tailgate's validating scan, the ingest regrouping copy, buffer insert, export
//! encode, the explanation recorded per decided trace; and the physical limit for comparison: a plain `prost` decode, and decode + encode, of the
//! same bytes on one core. Run: `cargo bench -p tailgate-bench --bench hot_path`.

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use std::hint::black_box;
use std::sync::Arc;
use tailgate::buffer::{BufferLimits, TraceBuffer};
use tailgate::decisions::DecisionCache;
use tailgate::explain::{DecisionLog, Explanation};
use tailgate::ingest::SpanBatch;
use tailgate::otlp::{ExportBuilder, scan_export_request};
use tailgate_bench::workload;
use tokio::time::{Duration, Instant};

fn hot_path(c: &mut Criterion) {
    let w = workload::generate(400, 11);
    let body = w.bodies.iter().max_by_key(|b| b.spans).expect("a body");
    let spans = body.spans as u64;
    let bytes = Bytes::from(body.bytes.clone());
    let mut g = c.benchmark_group("per_request");
    g.throughput(Throughput::Elements(spans));

    g.bench_function("prost_decode (physical limit)", |b| {
        b.iter(|| ExportTraceServiceRequest::decode(black_box(&bytes[..])).expect("valid"))
    });
    g.bench_function("prost_decode_encode (physical limit)", |b| {
        b.iter(|| {
            let r = ExportTraceServiceRequest::decode(black_box(&bytes[..])).expect("valid");
            black_box(r.encode_to_vec())
        })
    });
    g.bench_function("tailgate_scan", |b| {
        b.iter(|| scan_export_request(black_box(&bytes)).expect("valid"))
    });
    g.bench_function("tailgate_scan_and_group", |b| {
        b.iter(|| SpanBatch::from_scanned(scan_export_request(black_box(&bytes)).expect("valid")))
    });
    let limits = BufferLimits {
        settle: Duration::from_secs(2),
        idle_timeout: Duration::from_secs(10),
        max_wait: Duration::from_secs(30),
        max_spans_per_trace: 100_000,
        max_bytes_per_trace: usize::MAX,
        max_buffer_bytes: usize::MAX,
    };
    g.bench_function("buffer_insert", |b| {
        let cache = Arc::new(DecisionCache::new(1, 1, Duration::from_secs(1)));
        let mut buffer = TraceBuffer::new(limits.clone(), cache);
        let mut out = Vec::new();
        let scanned = SpanBatch::from_scanned(scan_export_request(&bytes).expect("valid"));
        let now = Instant::now();
        let mut round = 0u64;
        b.iter_batched(
            || {
                // Fresh trace ids each iteration so inserts create traces as in production.
                round += 1;
                let mut batch = SpanBatch {
                    traces: scanned.traces.clone(),
                    span_count: scanned.span_count,
                    ..Default::default()
                };
                for (tid, _) in &mut batch.traces {
                    *tid ^= u128::from(round) << 64;
                }
                batch
            },
            |batch| {
                buffer.insert(batch, now, &mut out);
                if buffer.trace_count() > 50_000 {
                    buffer.drain(now, &mut out);
                    out.clear();
                }
            },
            criterion::BatchSize::SmallInput,
        )
    });
    // What the pipeline adds per decided trace for `GET /debug/traces/{id}` and the status page: one
    // explanation built and put in the bounded log (the plugin calls it sits beside cost microseconds).
    g.bench_function("explain_record", |b| {
        let log = DecisionLog::default();
        let grouped = SpanBatch::from_scanned(scan_export_request(&bytes).expect("valid"));
        let rule: Arc<str> = "sample-10pct".into();
        b.iter(|| {
            for (tid, spans) in &grouped.traces {
                let mut e = Explanation::new(*tid, "settle", true, rule.clone(), Some(0.1), spans);
                e.set_exported_root(spans);
                log.record(e);
            }
        })
    });
    let scanned = scan_export_request(&bytes).expect("valid");
    g.bench_function("export_encode", |b| {
        b.iter(|| {
            let mut e = ExportBuilder::new();
            for (_, s) in &scanned.spans {
                e.push(s, Bytes::new());
            }
            black_box(e.finish())
        })
    });
    g.finish();
}

criterion_group!(benches, hot_path);
criterion_main!(benches);
