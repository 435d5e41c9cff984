//! The second chance: the spans of dropped traces stay in a ring, bounded in bytes and in time
//! (`buffer.second_chance`), so that evidence arriving after the decision can still bring a trace back.
//!
//! A tail sampler decides after a settle wait; an error span that arrives later finds its trace already
//! dropped. With the ring on, the pipeline re-runs the policy on the held spans plus the late ones, and a
//! keep brings the whole trace back (cause `late_span`). An operator or an alert webhook can ask for
//! traces by id or by condition (`POST /rescue`, cause `request`). A rescued trace is redacted and
//! exported whole like any kept trace, marked `tailgate.rescued_by`, and its later spans follow the new
//! decision.
//!
//! Spans of a dropped trace are counted in `tailgate_spans_sampled_out_total` when it is dropped, as
//! without the ring; a rescue counts them again in `tailgate_spans_rescued_total`, which the accounting
//! identity subtracts (docs/operations.md). The oldest traces leave the ring first when it is full
//! (`evicted{reason="bytes"}`) or once they are older than the grace (`reason="expired"`). The ring is
//! shared by the pipeline workers and outlives policy reloads.

use crate::otlp::{SpanRecord, TraceId};
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use tokio::time::{Duration, Instant};

/// A dropped trace's spans, waiting.
struct Held {
    spans: Vec<SpanRecord>,
    bytes: usize,
    /// When it was (first) dropped: the grace counts from here.
    dropped_at: Instant,
}

#[derive(Default)]
struct Inner {
    traces: HashMap<TraceId, Held>,
    /// Drop order; entries whose trace is gone or was held again later are skipped.
    order: VecDeque<(Instant, TraceId)>,
    bytes: usize,
}

/// What left the ring without a rescue, for the metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Evicted {
    /// Traces pushed out because the ring was full.
    pub for_bytes: u64,
    /// Traces older than the grace.
    pub expired: u64,
}

/// The ring. See the module header.
pub struct Ring {
    inner: Mutex<Inner>,
    max_bytes: usize,
    grace: Duration,
}

impl Ring {
    pub fn new(max_bytes: usize, grace: Duration) -> Ring {
        Ring {
            inner: Mutex::new(Inner::default()),
            max_bytes,
            grace,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Holds a dropped trace's spans (added to what is held for it already), dropped at `dropped_at` (the
    /// grace counts from there); makes room by pushing out the oldest traces, and forgets those past the
    /// grace. A trace larger than the whole ring is not held.
    pub fn hold(
        &self,
        id: TraceId,
        mut spans: Vec<SpanRecord>,
        dropped_at: Instant,
        now: Instant,
    ) -> Evicted {
        let mut g = self.lock();
        let mut out = self.expire_locked(&mut g, now);
        let mut bytes: usize = spans.iter().map(SpanRecord::charged_bytes).sum();
        let mut dropped_at = dropped_at;
        // Whether `order` has a live entry for `id` (it has while the trace is held).
        let mut ordered = false;
        if let Some(h) = g.traces.remove(&id) {
            g.bytes -= h.bytes;
            bytes += h.bytes;
            dropped_at = h.dropped_at;
            let mut all = h.spans;
            all.append(&mut spans);
            spans = all;
            ordered = true;
        }
        if bytes > self.max_bytes {
            out.for_bytes += 1;
            return out;
        }
        while g.bytes + bytes > self.max_bytes {
            let Some((at, oldest)) = g.order.pop_front() else {
                break;
            };
            if oldest == id {
                ordered = false;
            } else if g.traces.get(&oldest).is_some_and(|h| h.dropped_at == at) {
                let h = g.traces.remove(&oldest).map_or(0, |h| h.bytes);
                g.bytes -= h;
                out.for_bytes += 1;
            }
        }
        if !ordered {
            g.order.push_back((dropped_at, id));
        }
        g.bytes += bytes;
        g.traces.insert(
            id,
            Held {
                spans,
                bytes,
                dropped_at,
            },
        );
        out
    }

    fn expire_locked(&self, g: &mut Inner, now: Instant) -> Evicted {
        let mut out = Evicted::default();
        while let Some(&(at, id)) = g.order.front() {
            if now.saturating_duration_since(at) < self.grace {
                break;
            }
            g.order.pop_front();
            if g.traces.get(&id).is_some_and(|h| h.dropped_at == at) {
                let h = g.traces.remove(&id).map_or(0, |h| h.bytes);
                g.bytes -= h;
                out.expired += 1;
            }
        }
        out
    }

    /// Forgets what is past the grace.
    pub fn expire(&self, now: Instant) -> Evicted {
        let mut g = self.lock();
        self.expire_locked(&mut g, now)
    }

    /// Takes a held trace's spans out (for a rescue) with when it was dropped, unless it is past the
    /// grace or not held.
    pub fn take(&self, id: TraceId, now: Instant) -> Option<(Vec<SpanRecord>, Instant)> {
        let mut g = self.lock();
        let h = g.traces.remove(&id)?;
        g.bytes -= h.bytes;
        (now.saturating_duration_since(h.dropped_at) < self.grace)
            .then_some((h.spans, h.dropped_at))
    }

    /// Whether the ring holds `id` within the grace.
    pub fn holds(&self, id: TraceId, now: Instant) -> bool {
        self.lock()
            .traces
            .get(&id)
            .is_some_and(|h| now.saturating_duration_since(h.dropped_at) < self.grace)
    }

    /// Ids of the held traces within the grace for which `matches` is true, oldest first.
    pub fn matching(&self, now: Instant, matches: impl Fn(&[SpanRecord]) -> bool) -> Vec<TraceId> {
        let g = self.lock();
        // A trace held again after a second look can have two entries in `order`: list it once.
        let mut seen = std::collections::HashSet::new();
        g.order
            .iter()
            .filter_map(|(at, id)| {
                let h = g.traces.get(id)?;
                (h.dropped_at == *at
                    && now.saturating_duration_since(*at) < self.grace
                    && seen.insert(*id)
                    && matches(&h.spans))
                .then_some(*id)
            })
            .collect()
    }

    /// Bytes and traces held.
    pub fn usage(&self) -> (usize, usize) {
        let g = self.lock();
        (g.bytes, g.traces.len())
    }

    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::scan_export_request;
    use crate::testing::{request, span_in};
    use prost::Message;

    fn spans(trace: u128, ids: std::ops::Range<u64>) -> Vec<SpanRecord> {
        let body = bytes::Bytes::from(
            request(
                "svc",
                ids.map(|i| span_in(trace, i, 0, "op", 1_000, 2_000))
                    .collect(),
            )
            .encode_to_vec(),
        );
        scan_export_request(&body)
            .expect("valid")
            .spans
            .into_iter()
            .map(|(_, s)| s)
            .collect()
    }

    fn cost(s: &[SpanRecord]) -> usize {
        s.iter().map(SpanRecord::charged_bytes).sum()
    }

    #[test]
    fn holds_takes_once_and_forgets_after_the_grace() {
        let ring = Ring::new(1 << 20, Duration::from_secs(10));
        let t0 = Instant::now();
        ring.hold(1, spans(1, 1..4), t0, t0);
        ring.hold(
            1,
            spans(1, 4..5),
            t0 + Duration::from_secs(1),
            t0 + Duration::from_secs(1),
        );
        assert_eq!(ring.usage().1, 1);
        assert!(ring.holds(1, t0));
        let (back, dropped_at) = ring.take(1, t0 + Duration::from_secs(2)).expect("held");
        assert_eq!(dropped_at, t0, "held again, the first drop's time stays");
        assert_eq!(back.len(), 4, "the later spans joined the trace");
        assert!(ring.take(1, t0).is_none(), "taken once");
        assert_eq!(ring.usage(), (0, 0));
        ring.hold(2, spans(2, 1..2), t0, t0);
        assert!(
            ring.take(2, t0 + Duration::from_secs(10)).is_none(),
            "past the grace"
        );
        ring.hold(3, spans(3, 1..2), t0, t0);
        let e = ring.expire(t0 + Duration::from_secs(11));
        assert_eq!(e.expired, 1);
        assert_eq!(ring.usage(), (0, 0));
    }

    #[test]
    fn the_oldest_leave_first_when_full_and_are_counted() {
        let one = cost(&spans(9, 1..3));
        let ring = Ring::new(one * 3, Duration::from_secs(60));
        let t0 = Instant::now();
        let mut evicted = 0;
        for id in 1..=5u128 {
            let at = t0 + Duration::from_millis(id as u64);
            evicted += ring.hold(id, spans(id, 1..3), at, at).for_bytes;
        }
        assert_eq!(evicted, 2);
        let (bytes, traces) = ring.usage();
        assert_eq!(traces, 3);
        assert!(bytes <= ring.max_bytes());
        assert!(ring.take(1, t0).is_none() && ring.take(2, t0).is_none());
        assert!(ring.take(3, t0).is_some());
        // A trace larger than the ring is not held at all.
        let big = Ring::new(one / 2, Duration::from_secs(60));
        assert_eq!(big.hold(1, spans(1, 1..3), t0, t0).for_bytes, 1);
        assert_eq!(big.usage(), (0, 0));
    }

    #[test]
    fn matching_finds_held_traces_in_drop_order() {
        let ring = Ring::new(1 << 20, Duration::from_secs(60));
        let t0 = Instant::now();
        for id in 1..=4u128 {
            let first = id as u64;
            let at = t0 + Duration::from_millis(first);
            ring.hold(id, spans(id, first..first + 1), at, at);
        }
        let odd = ring.matching(t0, |s| s[0].span_id % 2 == 1);
        assert_eq!(odd, vec![1, 3]);
    }
}
