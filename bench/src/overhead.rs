//! Measures the buffer's memory per span beyond the span's encoded size: heap bytes held by a
//! `TraceBuffer` full of the realistic workload (after the request bodies are gone), minus the encoded
//! span bytes, divided by the spans. Counted by an instrumented global allocator, not estimated.

use bytes::Bytes;
use std::sync::Arc;
use tailgate::buffer::{BufferLimits, TraceBuffer};
use tailgate::decisions::DecisionCache;
use tailgate::ingest::SpanBatch;
use tailgate_bench::workload;
use tokio::time::{Duration, Instant};

/// Returns (spans, encoded span bytes, heap bytes held, overhead per span).
pub fn measure(traces: usize, heap_in_use: impl Fn() -> isize) -> (usize, usize, isize, f64) {
    let w = workload::generate(traces, 7);
    let limits = BufferLimits {
        settle: Duration::from_secs(2),
        idle_timeout: Duration::from_secs(10),
        max_wait: Duration::from_secs(30),
        max_spans_per_trace: 100_000,
        max_bytes_per_trace: usize::MAX,
        max_buffer_bytes: usize::MAX,
    };
    let cache = Arc::new(DecisionCache::new(1, 1, Duration::from_secs(1)));
    let before = heap_in_use();
    let mut buffer = TraceBuffer::new(limits, cache);
    let mut out = Vec::new();
    let now = Instant::now();
    let (mut spans, mut encoded) = (0, 0);
    for b in &w.bodies {
        // Each request body lives only while it is scanned, as in the receivers.
        let body = Bytes::from(b.bytes.clone());
        let scanned =
            tailgate::otlp::scan_export_request(&body).expect("generated bodies are valid");
        drop(body);
        spans += scanned.spans.len();
        encoded += scanned
            .spans
            .iter()
            .map(|(_, s)| s.raw.len())
            .sum::<usize>();
        buffer.insert(SpanBatch::from_scanned(scanned), now, &mut out);
    }
    assert!(out.is_empty(), "nothing is due yet");
    let held = heap_in_use() - before;
    let per_span = (held as f64 - encoded as f64) / spans as f64;
    drop(buffer);
    (spans, encoded, held, per_span)
}
