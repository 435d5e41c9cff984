//! The pipeline's side of the second chance (`crate::rescue`): dropped traces go into the ring, a late
//! span of a held trace re-runs the policy on the whole trace, and [`Rescuer`] brings traces back on
//! request (`POST /rescue`). A rescued trace is handed to the redaction stage whole, like any kept trace,
//! with `tailgate.rescued_by` on its spans; its decision becomes a keep, so its later spans follow.

use super::redaction::{Explain, KeptTrace, RedactionStage};
use super::{PipelineContext, WorkItem};
use crate::decisions::{Applied, KeepInfo, Remembered};
use crate::explain::{Explanation, RescueHistory};
use crate::inbox::LateSpans;
use crate::metrics::ReasonLabels;
use crate::otlp::{SpanRecord, TraceId};
use crate::rescue::{Evicted, Ring};
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Puts a dropped trace's spans into the ring (when it is on).
pub(super) fn hold(ctx: &PipelineContext, trace_id: TraceId, spans: Vec<SpanRecord>) {
    if let Some(ring) = &ctx.ring {
        let now = Instant::now();
        let evicted = ring.hold(trace_id, spans, now, now);
        publish(ctx, ring, evicted);
    }
}

fn publish(ctx: &PipelineContext, ring: &Ring, e: Evicted) {
    publish_to(&ctx.metrics, ring, e);
}

/// Forgets held traces past the grace once a second (a ring nobody adds to still empties), until
/// `stopped` completes.
pub async fn expire_ring(
    ring: Arc<Ring>,
    metrics: Arc<crate::metrics::Metrics>,
    stopped: impl std::future::Future<Output = ()>,
) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            _ = &mut stopped => return,
            _ = tick.tick() => {
                let e = ring.expire(Instant::now());
                publish_to(&metrics, &ring, e);
            }
        }
    }
}

fn publish_to(m: &crate::metrics::Metrics, ring: &Ring, e: Evicted) {
    for (reason, n) in [("bytes", e.for_bytes), ("expired", e.expired)] {
        if n > 0 {
            m.rescue_ring_evicted
                .get_or_create(&ReasonLabels { reason })
                .inc_by(n);
        }
    }
    let (bytes, traces) = ring.usage();
    m.rescue_ring_bytes.set(bytes as i64);
    m.rescue_ring_traces.set(traces as i64);
}

/// Late spans of a dropped trace: when the ring holds the trace, the policy decides again on all of its
/// spans. `None` when the ring does not hold it (the late spans follow the drop as before); otherwise how
/// many spans now wait in the redaction stage, as [`super::late`] returns it.
pub(super) fn second_look(
    l: &mut LateSpans,
    ctx: &PipelineContext,
    stage: &RedactionStage,
) -> Option<usize> {
    let ring = ctx.ring.as_ref()?;
    let now = Instant::now();
    let (held, dropped_at) = ring.take(l.trace_id, now)?;
    let held_spans = held.len();
    let mut spans = held;
    spans.append(&mut l.spans);
    let late = (spans.len() - held_spans) as u64;
    ctx.metrics
        .late_spans
        .get_or_create(&ReasonLabels { reason: "dropped" })
        .inc_by(late);
    let policy = ctx.policy.load_full();
    let decision = policy.decide(l.trace_id, &spans, &ctx.metrics);
    if !decision.keep {
        // Still dropped: the late spans join the held ones, the drop's grace unchanged.
        ctx.metrics.spans_sampled_out.inc_by(late);
        ctx.metrics.decision_log.record_late(l.trace_id, late, None);
        let evicted = ring.hold(l.trace_id, spans, dropped_at, now);
        publish(ctx, ring, evicted);
        return Some(0);
    }
    // The late spans were never counted sampled out; the held ones were, and are counted rescued.
    let info = Arc::new(KeepInfo {
        rule: decision.rule.clone(),
        applied: decision.applied,
        rescued_by: Some(decision.rule.clone()),
    });
    let why = history(
        l.trace_id,
        &spans,
        &info,
        decision.probability,
        "late_span",
        ctx,
    );
    let acks = std::mem::take(&mut l.acks);
    let staged = bring_back(l.trace_id, spans, held_spans, info, acks, why, ctx, stage);
    publish(ctx, ring, Evicted::default());
    Some(staged)
}

/// A rescue asked for by trace id: the held trace, if any, is kept whole. Returns how many spans of the
/// item wait in the redaction stage (always 0: the item itself carries no spans, see [`bring_back`]).
pub(super) fn requested(
    trace_id: TraceId,
    by: Arc<str>,
    ctx: &PipelineContext,
    stage: &RedactionStage,
) -> usize {
    let Some(ring) = &ctx.ring else { return 0 };
    let now = Instant::now();
    // Kept meanwhile (a late span rescued it first): nothing to do.
    if matches!(ctx.cache.lookup(trace_id, now), Some(Remembered::Kept(_))) {
        return 0;
    }
    let Some((spans, _)) = ring.take(trace_id, now) else {
        return 0;
    };
    let held = spans.len();
    // Kept because someone asked, whatever its randomness: the upstream threshold stays.
    let info = Arc::new(KeepInfo {
        rule: Arc::from("rescue"),
        applied: Applied::Everything,
        rescued_by: Some(by),
    });
    let why = history(trace_id, &spans, &info, None, "request", ctx);
    let staged = bring_back(trace_id, spans, held, info, Vec::new(), why, ctx, stage);
    publish(ctx, ring, Evicted::default());
    staged
}

/// The explanation of a rescued trace, with the drop it replaces.
fn history(
    trace_id: TraceId,
    spans: &[SpanRecord],
    info: &KeepInfo,
    probability: Option<f64>,
    cause: &'static str,
    ctx: &PipelineContext,
) -> Explanation {
    let dropped = ctx.metrics.decision_log.get(trace_id);
    let mut why = Explanation::new(
        trace_id,
        "rescue",
        true,
        info.rule.clone(),
        probability,
        spans,
    );
    why.rescued = Some(RescueHistory {
        cause,
        rescued_by: info.rescued_by.as_deref().unwrap_or("").to_owned(),
        dropped_by: dropped.as_ref().map(|d| d.rule.to_string()),
        dropped_at_unix_ms: dropped.map(|d| d.decided_at_unix_ms),
    });
    why
}

/// Keeps a rescued trace: remembers the keep, counts the rescue and hands the spans on. `held` of the
/// spans came from the ring (counted sampled out once, now rescued). They join the `pipeline_spans`
/// gauge while the redaction stage holds them; the return value is what the stage holds of the rest
/// (the late spans the worker counted in), as `late` returns it.
#[allow(clippy::too_many_arguments)]
fn bring_back(
    trace_id: TraceId,
    spans: Vec<SpanRecord>,
    held: usize,
    info: Arc<KeepInfo>,
    acks: Vec<crate::ingest::Ack>,
    why: Explanation,
    ctx: &PipelineContext,
    stage: &RedactionStage,
) -> usize {
    let cause = why.rescued.as_ref().map_or("request", |r| r.cause);
    ctx.cache
        .record_keep(trace_id, info.clone(), Instant::now());
    ctx.metrics.spans_rescued.inc_by(held as u64);
    ctx.metrics
        .rescued_traces
        .get_or_create(&ReasonLabels { reason: cause })
        .inc();
    ctx.metrics.pipeline_spans.inc_by(held as i64);
    let staged = stage.hand_off(
        KeptTrace {
            trace_id,
            spans,
            info,
            acks,
            due_at: None,
            explain: Explain::Decided(Box::new(why)),
        },
        ctx,
    );
    if staged == 0 {
        ctx.metrics.pipeline_spans.dec_by(held as i64);
    }
    staged.saturating_sub(held)
}

/// What `POST /rescue` may ask for besides trace ids: traces with a span matching every field given.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RescueCondition {
    /// The span's `service.name`.
    pub service: Option<String>,
    /// The span's name, exactly (a route template such as `POST /checkout`).
    pub span_name: Option<String>,
    /// Only spans with an error status.
    #[serde(default)]
    pub error: bool,
    /// Spans that started at or after this instant (Unix milliseconds).
    pub since_unix_ms: Option<u64>,
    /// Spans that started before this instant (Unix milliseconds).
    pub until_unix_ms: Option<u64>,
}

impl RescueCondition {
    /// Whether a condition was given at all (an empty one would rescue everything held).
    pub fn is_empty(&self) -> bool {
        self.service.is_none()
            && self.span_name.is_none()
            && !self.error
            && self.since_unix_ms.is_none()
            && self.until_unix_ms.is_none()
    }

    fn matches(&self, s: &SpanRecord) -> bool {
        let start_ms = s.start_unix_nano / 1_000_000;
        self.service
            .as_deref()
            .is_none_or(|v| &*s.origin.service_name == v)
            && self.span_name.as_deref().is_none_or(|v| s.name() == v)
            && (!self.error || s.status == crate::otlp::StatusCode::Error)
            && self.since_unix_ms.is_none_or(|t| start_ms >= t)
            && self.until_unix_ms.is_none_or(|t| start_ms < t)
    }
}

/// Brings held traces back on request, from the admin server. Holds the workers' queues weakly, so it
/// never keeps the pipeline from ending at shutdown.
#[derive(Clone)]
pub struct Rescuer {
    workers: Vec<mpsc::WeakSender<WorkItem>>,
    ring: Arc<Ring>,
}

impl Rescuer {
    pub(super) fn new(workers: &[mpsc::Sender<WorkItem>], ring: Arc<Ring>) -> Rescuer {
        Rescuer {
            workers: workers.iter().map(mpsc::Sender::downgrade).collect(),
            ring,
        }
    }

    /// The ring it rescues from.
    pub fn ring(&self) -> Arc<Ring> {
        self.ring.clone()
    }

    /// Of `ids`, those the ring holds, queued for rescue on their workers, marked `by`.
    pub async fn rescue_ids(&self, ids: &[TraceId], by: &str) -> Vec<TraceId> {
        let now = Instant::now();
        let held: Vec<TraceId> = ids
            .iter()
            .copied()
            .filter(|id| self.ring.holds(*id, now))
            .collect();
        self.queue(held, by).await
    }

    /// Every held trace with a span matching `c`, queued for rescue, marked `by`.
    pub async fn rescue_matching(&self, c: &RescueCondition, by: &str) -> Vec<TraceId> {
        let ids = self
            .ring
            .matching(Instant::now(), |spans| spans.iter().any(|s| c.matches(s)));
        self.queue(ids, by).await
    }

    async fn queue(&self, ids: Vec<TraceId>, by: &str) -> Vec<TraceId> {
        let by: Arc<str> = Arc::from(by);
        let mut queued = Vec::with_capacity(ids.len());
        for id in ids {
            let i = (id as usize) % self.workers.len().max(1);
            let Some(tx) = self.workers.get(i).and_then(mpsc::WeakSender::upgrade) else {
                break;
            };
            if tx
                .send(WorkItem::Rescue {
                    trace_id: id,
                    by: by.clone(),
                })
                .await
                .is_err()
            {
                break;
            }
            queued.push(id);
        }
        queued
    }
}
