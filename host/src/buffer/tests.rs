use super::*;
use crate::otlp::scan_export_request;
use crate::testing::{request, span_in};
use bytes::Bytes;
use prost::Message;

const T0_NS: u64 = 1_700_000_000_000_000_000;

fn limits() -> BufferLimits {
    BufferLimits {
        settle: Duration::from_secs(2),
        idle_timeout: Duration::from_secs(10),
        max_wait: Duration::from_secs(30),
        max_spans_per_trace: 100,
        max_bytes_per_trace: 1 << 20,
        max_buffer_bytes: 1 << 30,
    }
}

fn new_buffer(l: BufferLimits) -> TraceBuffer {
    TraceBuffer::new(
        l,
        Arc::new(DecisionCache::new(1000, 1000, Duration::from_secs(300))),
    )
}

/// A batch with spans `(span_id, parent)` of one trace.
fn batch(trace: u128, spans: &[(u64, u64)]) -> SpanBatch {
    let spans = spans
        .iter()
        .map(|&(id, parent)| span_in(trace, id, parent, "op", T0_NS, T0_NS + 1000))
        .collect();
    let body = Bytes::from(request("svc", spans).encode_to_vec());
    SpanBatch::from_scanned(scan_export_request(&body).expect("valid"))
}

fn due(out: &mut Vec<BufferOutput>) -> Vec<(TraceId, Trigger, usize)> {
    out.drain(..)
        .filter_map(|o| match o {
            BufferOutput::Due(t) => Some((t.trace_id, t.trigger, t.spans.len())),
            BufferOutput::Late(_) => None,
        })
        .collect()
}

#[test]
fn settle_fires_after_root_and_quiet() {
    let mut b = new_buffer(limits());
    let t0 = Instant::now();
    let mut out = Vec::new();
    b.insert(batch(1, &[(2, 1)]), t0, &mut out);
    b.insert(batch(1, &[(1, 0)]), t0 + Duration::from_secs(1), &mut out);
    assert!(out.is_empty());
    // Root arrived at t0+1s: due at t0+3s, not before.
    assert_eq!(b.next_deadline(), Some(t0 + Duration::from_secs(3)));
    b.expire(t0 + Duration::from_millis(2999), &mut out);
    assert!(out.is_empty());
    b.expire(t0 + Duration::from_secs(3), &mut out);
    assert_eq!(due(&mut out), vec![(1, Trigger::Settle, 2)]);
    assert_eq!((b.trace_count(), b.span_count(), b.bytes()), (0, 0, 0));
}

#[test]
fn new_spans_extend_settle() {
    let mut b = new_buffer(limits());
    let t0 = Instant::now();
    let mut out = Vec::new();
    b.insert(batch(1, &[(1, 0)]), t0, &mut out);
    b.insert(
        batch(1, &[(2, 1)]),
        t0 + Duration::from_millis(1500),
        &mut out,
    );
    b.expire(t0 + Duration::from_secs(2), &mut out);
    assert!(
        out.is_empty(),
        "a span came 1.5 s after the root; settle restarts"
    );
    b.expire(t0 + Duration::from_millis(3500), &mut out);
    assert_eq!(due(&mut out), vec![(1, Trigger::Settle, 2)]);
}

#[test]
fn idle_fires_without_root() {
    let mut b = new_buffer(limits());
    let t0 = Instant::now();
    let mut out = Vec::new();
    b.insert(batch(7, &[(2, 1), (3, 1)]), t0, &mut out);
    b.expire(t0 + Duration::from_secs(9), &mut out);
    assert!(out.is_empty());
    b.expire(t0 + Duration::from_secs(10), &mut out);
    assert_eq!(due(&mut out), vec![(7, Trigger::Idle, 2)]);
}

#[test]
fn max_wait_fires_for_a_trace_that_never_goes_quiet() {
    let mut b = new_buffer(limits());
    let t0 = Instant::now();
    let mut out = Vec::new();
    for s in 0..35u64 {
        let now = t0 + Duration::from_secs(s);
        b.expire(now, &mut out);
        if !out.is_empty() {
            break;
        }
        b.insert(batch(9, &[(s + 10, 1)]), now, &mut out);
    }
    let d = due(&mut out);
    assert_eq!(d.len(), 1);
    assert_eq!((d[0].0, d[0].1), (9, Trigger::MaxWait));
    assert_eq!(d[0].2, 30, "spans at t0..t0+29s, decided at t0+30s");
}

#[test]
fn size_limit_decides_at_once_and_later_spans_are_late() {
    let mut b = new_buffer(BufferLimits {
        max_spans_per_trace: 3,
        ..limits()
    });
    let t0 = Instant::now();
    let mut out = Vec::new();
    b.insert(batch(5, &[(1, 0), (2, 1)]), t0, &mut out);
    assert!(out.is_empty());
    b.insert(batch(5, &[(3, 1)]), t0, &mut out);
    assert_eq!(due(&mut out), vec![(5, Trigger::Size, 3)]);
    b.insert(batch(5, &[(4, 1)]), t0, &mut out);
    assert!(matches!(&out[..], [BufferOutput::Late(l)] if l.trace_id == 5 && l.spans.len() == 1));
}

#[test]
fn byte_limit_per_trace_decides_early() {
    let one = batch(5, &[(1, 0)]).charged_bytes();
    let mut b = new_buffer(BufferLimits {
        max_bytes_per_trace: one * 2,
        ..limits()
    });
    let t0 = Instant::now();
    let mut out = Vec::new();
    b.insert(batch(5, &[(1, 0)]), t0, &mut out);
    assert!(out.is_empty());
    b.insert(batch(5, &[(2, 1)]), t0, &mut out);
    assert_eq!(due(&mut out), vec![(5, Trigger::Size, 2)]);
}

#[test]
fn memory_pressure_decides_oldest_first_and_never_drops_undecided() {
    let per_trace = batch(1, &[(1, 0), (2, 1)]).charged_bytes();
    // Room for 10 traces; pressure starts past 9, relieves down to 8.
    let mut b = new_buffer(BufferLimits {
        max_buffer_bytes: per_trace * 10,
        ..limits()
    });
    let t0 = Instant::now();
    let mut out = Vec::new();
    let mut decided = Vec::new();
    for i in 1..=20u128 {
        b.insert(
            batch(i, &[(1, 0), (2, 1)]),
            t0 + Duration::from_millis(i as u64),
            &mut out,
        );
        decided.extend(due(&mut out));
        assert!(b.bytes() <= per_trace * 10, "byte bound holds");
    }
    assert!(
        decided
            .iter()
            .all(|(_, t, n)| *t == Trigger::Pressure && *n == 2)
    );
    let ids: Vec<TraceId> = decided.iter().map(|(id, _, _)| *id).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted, "oldest first");
    // Every trace is either still buffered or was decided: none vanished.
    assert_eq!(ids.len() + b.trace_count(), 20);
    assert!(b.trace_count() <= 9);
}

#[test]
fn drain_emits_everything() {
    let mut b = new_buffer(limits());
    let t0 = Instant::now();
    let mut out = Vec::new();
    b.insert(batch(1, &[(1, 0)]), t0, &mut out);
    b.insert(batch(2, &[(2, 1)]), t0, &mut out);
    b.drain(t0, &mut out);
    let mut d = due(&mut out);
    d.sort();
    assert_eq!(
        d,
        vec![(1, Trigger::Shutdown, 1), (2, Trigger::Shutdown, 1)]
    );
    assert_eq!(b.bytes(), 0);
}

#[test]
fn spans_of_one_trace_from_many_requests_and_services_are_grouped() {
    let mut b = new_buffer(limits());
    let t0 = Instant::now();
    let mut out = Vec::new();
    let a = span_in(3, 1, 0, "GET /", T0_NS, T0_NS + 10);
    let c = span_in(3, 2, 1, "SELECT", T0_NS, T0_NS + 5);
    for (svc, s) in [("frontend", a), ("db", c)] {
        let body = Bytes::from(request(svc, vec![s]).encode_to_vec());
        b.insert(
            SpanBatch::from_scanned(scan_export_request(&body).expect("valid")),
            t0,
            &mut out,
        );
    }
    b.expire(t0 + Duration::from_secs(2), &mut out);
    let BufferOutput::Due(t) = out.pop().expect("due") else {
        panic!("expected a due trace")
    };
    let services: Vec<&str> = t.spans.iter().map(|s| &*s.origin.service_name).collect();
    assert_eq!(services, vec!["frontend", "db"]);
}

#[tokio::test(start_paused = true)]
async fn run_loop_decides_on_the_paused_clock_and_flushes_on_close() {
    let cache = Arc::new(DecisionCache::new(1000, 1000, Duration::from_secs(300)));
    let pressure = Arc::new(Pressure::new(1 << 30));
    let (ingest, rx) = crate::ingest::IngestHandle::channel(16, pressure.clone());
    let (ptx, mut prx) = mpsc::channel(16);
    let task = tokio::spawn(run(
        rx,
        TraceBuffer::new(limits(), cache),
        ptx,
        pressure,
        crate::metrics::Metrics::new(),
        tokio_util::sync::CancellationToken::new(),
    ));
    let start = Instant::now();
    ingest.try_submit(batch(1, &[(1, 0)])).expect("room");
    ingest.try_submit(batch(2, &[(5, 4)])).expect("room");
    let BufferOutput::Due(first) = prx.recv().await.expect("due") else {
        panic!("due")
    };
    assert_eq!((first.trace_id, first.trigger), (1, Trigger::Settle));
    assert_eq!(Instant::now() - start, Duration::from_secs(2));
    drop(ingest);
    let BufferOutput::Due(second) = prx.recv().await.expect("flushed") else {
        panic!("due")
    };
    assert_eq!((second.trace_id, second.trigger), (2, Trigger::Shutdown));
    task.await.expect("buffer task");
}

#[tokio::test]
async fn acks_complete_when_spans_leave_the_buffer() {
    let (ack, mut done) = crate::ingest::Ack::new();
    let mut b = new_buffer(limits());
    let t0 = Instant::now();
    let mut out = Vec::new();
    b.insert(batch(1, &[(1, 0)]).with_ack(ack), t0, &mut out);
    assert!(done.try_recv().is_err());
    b.expire(t0 + Duration::from_secs(2), &mut out);
    assert!(done.try_recv().is_err(), "still held by the due trace");
    out.clear();
    done.await.expect("ack fires once the due trace is dropped");
}

#[tokio::test(start_paused = true)]
async fn memory_bound_pushes_back_and_every_accepted_span_is_decided() {
    let per_trace = batch(1, &[(1, 0), (2, 1)]).charged_bytes();
    let limit = per_trace * 10;
    let cache = Arc::new(DecisionCache::new(1000, 1000, Duration::from_secs(300)));
    let pressure = Arc::new(Pressure::new(limit));
    let (ingest, rx) = crate::ingest::IngestHandle::channel(64, pressure.clone());
    // A pipeline that is not reading yet: early decisions pile up in its queue of 2.
    let (ptx, mut prx) = mpsc::channel(2);
    let metrics = crate::metrics::Metrics::new();
    let task = tokio::spawn(run(
        rx,
        TraceBuffer::new(
            BufferLimits {
                max_buffer_bytes: limit,
                ..limits()
            },
            cache,
        ),
        ptx,
        pressure.clone(),
        metrics.clone(),
        tokio_util::sync::CancellationToken::new(),
    ));
    let (mut accepted, mut refused) = (0usize, 0usize);
    for i in 1..=100u128 {
        match ingest.try_submit(batch(i, &[(1, 0), (2, 1)])) {
            Ok(()) => accepted += 1,
            Err(crate::ingest::Refused::MemoryPressure | crate::ingest::Refused::QueueFull) => {
                refused += 1
            }
            Err(e) => panic!("unexpected refusal {e}"),
        }
        tokio::task::yield_now().await;
        let text = metrics.encode();
        let buffered: usize = text
            .lines()
            .find_map(|l| l.strip_prefix("tailgate_buffer_bytes "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        assert!(buffered <= limit, "buffered {buffered} > bound {limit}");
    }
    assert!(refused > 0, "clients were pushed back");
    assert!(accepted >= 10, "the buffer took what fit");
    // Now the pipeline reads: every accepted trace comes out decided, early (pressure) or at shutdown.
    drop(ingest);
    let mut out_traces = 0;
    let mut triggers = std::collections::HashSet::new();
    while let Some(o) = prx.recv().await {
        if let BufferOutput::Due(t) = o {
            out_traces += 1;
            triggers.insert(t.trigger);
        }
    }
    task.await.expect("buffer task");
    assert_eq!(out_traces, accepted, "no accepted trace was lost");
    assert!(triggers.contains(&Trigger::Pressure), "{triggers:?}");
}

#[test]
fn decide_now_hands_listed_traces_on_at_once() {
    let mut b = new_buffer(limits());
    let t0 = Instant::now();
    let mut out = Vec::new();
    b.insert(batch(1, &[(1, 0)]), t0, &mut out);
    b.insert(batch(2, &[(2, 9)]), t0, &mut out);
    assert!(due(&mut out).is_empty());
    // A Kafka hand-off: trace 2 (and an unknown trace 3) decided now, trace 1 keeps waiting.
    let handoff = SpanBatch {
        decide_now: vec![2, 3],
        ..Default::default()
    };
    b.insert(handoff, t0, &mut out);
    assert_eq!(due(&mut out), vec![(2, Trigger::Handoff, 1)]);
    assert_eq!(b.trace_count(), 1);
}
