//! Cost of the second-chance ring per dropped span: holding a dropped trace (and the evictions that keep
//! the ring in its bound), in CPU time and in bytes held. Spans are 10-span traces of the redaction
//! bench's shape (~20 attributes each). Run: `cargo bench -p tailgate --bench second_chance`.

use prost::Message;
use std::time::{Duration, Instant};
use tailgate::otlp::{SpanRecord, scan_export_request};
use tailgate::rescue::Ring;
use tailgate::testing::{kv_int, kv_str, request, span_in};

/// Trace `id`: 10 spans of ~20 attributes.
fn trace(id: u128) -> Vec<SpanRecord> {
    let t0 = 1_700_000_000_000_000_000u64;
    let spans = (0..10u64)
        .map(|i| {
            let mut s = span_in(
                id,
                i + 1,
                u64::from(i > 0),
                "GET /api/v1/orders/{id}",
                t0,
                t0 + 5_000_000,
            );
            s.attributes = (0..18)
                .map(|k| kv_str(&format!("app.attribute_{k}"), "a value of a typical length"))
                .chain([
                    kv_int("http.response.status_code", 200),
                    kv_str("http.route", "/api/v1/orders/{id}"),
                ])
                .collect();
            s
        })
        .collect();
    let body = bytes::Bytes::from(request("orders", spans).encode_to_vec());
    scan_export_request(&body)
        .expect("valid")
        .spans
        .into_iter()
        .map(|(_, s)| s)
        .collect()
}

fn main() {
    const TRACES: usize = 20_000;
    // Memory: traces built one by one and moved into a ring large enough for all of them, so what stays
    // resident is what the ring keeps alive (the requests' bodies its spans point into, the records, its
    // index), against what it counts. Measured first: the timing runs below free memory that the
    // allocator would reuse, hiding the growth.
    const HELD: usize = 5_000;
    let ring = Ring::new(usize::MAX / 4, Duration::from_secs(3600));
    let now = tokio::time::Instant::now();
    let before = tailgate::ingest::resident_bytes().unwrap_or(0);
    for id in 0..HELD as u128 {
        ring.hold(id + 1, trace(id + 1), now, now);
    }
    let (held, n) = ring.usage();
    let after = tailgate::ingest::resident_bytes().unwrap_or(0);
    let traces: Vec<(u128, Vec<SpanRecord>)> =
        (0..TRACES as u128).map(|i| (i + 1, trace(i + 1))).collect();
    let span_bytes: usize = traces[0]
        .1
        .iter()
        .map(SpanRecord::charged_bytes)
        .sum::<usize>()
        / 10;
    // A ring holding a quarter of them: three quarters of the holds also evict.
    let ring_bytes = span_bytes * 10 * TRACES / 4;
    let mut samples = Vec::new();
    for _ in 0..9 {
        let ring = Ring::new(ring_bytes, Duration::from_secs(3600));
        let batch = traces.clone();
        let now = tokio::time::Instant::now();
        let start = Instant::now();
        for (id, spans) in batch {
            ring.hold(id, spans, now, now);
        }
        samples.push(start.elapsed().as_secs_f64() / (TRACES * 10) as f64);
    }
    samples.sort_by(f64::total_cmp);
    println!(
        "second-chance ring, 10-span traces of {span_bytes} B per span, median of 9 runs of {TRACES} traces:"
    );
    println!(
        "  hold (with evictions): {:.0} ns per dropped span; {n} traces held: {:.0} B counted per span, \
         {:.0} B resident per span",
        samples[samples.len() / 2] * 1e9,
        held as f64 / (n * 10) as f64,
        after.saturating_sub(before) as f64 / (n * 10) as f64
    );
}
