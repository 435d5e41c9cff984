//! The redaction stage: the kept-trace path from a keep decision to the exporter's queue. A kept trace
//! is handed off ([`RedactionStage::hand_off`]), redacted ([`crate::redact`]), annotated (`tailgate.rule`,
//! the sampling threshold: [`annotate`]), its explanation recorded, and sent to the exporter's queue.
//! With redactors in the policy this runs on threads of its own behind a bounded queue; without, on the
//! deciding worker (annotating is cheap).
//!
//! Redacting a large kept trace takes milliseconds (the PII plugin costs tens of microseconds per span),
//! while deciding a trace takes a few microseconds. Run inline, every trace that became due while a worker
//! was redacting waited behind it, which is what made the decision latency's p99 two orders of magnitude
//! above its p50. Here the deciding workers only queue kept traces; they block on the queue only when the
//! redactors fall behind by more than its capacity, which is the backpressure the pipeline needs (it
//! reaches the receivers through the buffer's byte bound) rather than an unbounded backlog.
//!
//! Acks travel with the spans, so a batch counts as handed on only once its kept spans reached the
//! exporter's queue (or were counted as lost).

use super::{Applied, PipelineContext, update_tracestate};
use crate::decisions::KeepInfo;
use crate::explain::{Explanation, RedactionNotes};
use crate::export::KeptSpans;
use crate::ingest::Ack;
use crate::metrics::Metrics;
use crate::otlp::{SpanPatch, SpanRecord, TraceId};
use crate::redact::{Outcome, Redactors};
use bytes::Bytes;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use tokio::time::Instant;

/// Kept spans on their way to the redactors and the exporter.
pub(crate) struct KeptTrace {
    pub trace_id: TraceId,
    pub spans: Vec<SpanRecord>,
    pub info: Arc<KeepInfo>,
    pub acks: Vec<Ack>,
    /// When the trace became due (none for late spans), for the hand-off latency metric.
    pub due_at: Option<Instant>,
    /// What `GET /debug/traces/{id}` learns once the redactions are known.
    pub explain: Explain,
}

/// The explanation a kept trace's redactions complete.
pub(crate) enum Explain {
    /// A decided trace: recorded once redacted (before its spans leave for the exporter).
    Decided(Box<Explanation>),
    /// Spans that arrived after their trace was decided: added to its explanation.
    Late { spans: u64, notes: RedactionNotes },
}

/// The deciding workers' end of the stage's queue.
#[derive(Clone)]
pub(crate) struct RedactionStage {
    tx: SyncSender<KeptTrace>,
}

impl RedactionStage {
    /// Hands kept spans on: to the redaction threads when the policy has redactors, otherwise through
    /// [`redact_and_send`] right here (annotating them is cheap). Returns how many spans now wait in the
    /// redaction stage (they stay in the `pipeline_spans` gauge until it is done with them).
    pub fn hand_off(&self, t: KeptTrace, ctx: &PipelineContext) -> usize {
        if ctx.policy.load().redactors.is_empty() {
            redact_and_send(t, ctx);
            0
        } else {
            self.send(t, ctx)
        }
    }

    /// Queues kept spans for redaction. Blocks while the queue is full (backpressure). When the stage is
    /// gone (shutdown), does the work on the calling thread so nothing is lost. Returns the number of
    /// spans queued (0 when done here): the stage counts them out of the `pipeline_spans` gauge.
    fn send(&self, t: KeptTrace, ctx: &PipelineContext) -> usize {
        let n = t.spans.len();
        let t = match self.tx.try_send(t) {
            Ok(()) => return n,
            Err(TrySendError::Full(t)) => {
                ctx.metrics.redaction_queue_full.inc();
                match self.tx.send(t) {
                    Ok(()) => return n,
                    Err(e) => e.0,
                }
            }
            Err(TrySendError::Disconnected(t)) => t,
        };
        redact_and_send(t, ctx);
        0
    }
}

/// Starts `threads` redaction threads reading one queue of `capacity` traces. `on_exit` is dropped by
/// each thread when it ends (after every sender is gone and the queue is drained).
pub(crate) fn start<G: Send + Sync + 'static>(
    threads: usize,
    capacity: usize,
    ctx: PipelineContext,
    on_exit: Arc<G>,
) -> std::io::Result<RedactionStage> {
    let (tx, rx) = sync_channel(capacity.max(1));
    let rx = Arc::new(Mutex::new(rx));
    for i in 0..threads.max(1) {
        let rx = rx.clone();
        let ctx = ctx.clone();
        let guard = on_exit.clone();
        std::thread::Builder::new()
            .name(format!("tailgate-redact-{i}"))
            .spawn(move || {
                run(&rx, &ctx);
                drop(guard);
            })?;
    }
    Ok(RedactionStage { tx })
}

fn run(rx: &Mutex<Receiver<KeptTrace>>, ctx: &PipelineContext) {
    loop {
        // Hold the lock only to take one item, so the threads share the queue.
        let next = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
        match next {
            Ok(t) => {
                let n = t.spans.len() as i64;
                redact_and_send(t, ctx);
                ctx.metrics.pipeline_spans.dec_by(n);
            }
            Err(_) => return,
        }
    }
}

/// Redacts, annotates and sends kept spans to the exporter. Every kept span (late ones included) passes
/// through here, so nothing reaches the exporter without passing the redactors.
fn redact_and_send(t: KeptTrace, ctx: &PipelineContext) {
    let KeptTrace {
        trace_id,
        spans,
        info,
        acks,
        due_at,
        mut explain,
    } = t;
    let notes = match &mut explain {
        Explain::Decided(why) => &mut why.redactions,
        Explain::Late { notes, .. } => notes,
    };
    let kept = prepare_kept(
        &ctx.policy.load().redactors,
        trace_id,
        spans,
        &info,
        &ctx.metrics,
        Some(notes),
    );
    // Recorded before the spans leave, so the explanation exists once they arrive downstream.
    match explain {
        Explain::Decided(mut why) => {
            if let Some(k) = &kept {
                why.set_exported_root(&k.spans);
            }
            ctx.metrics.decision_log.record(*why)
        }
        Explain::Late { spans, notes } => {
            ctx.metrics
                .decision_log
                .record_late(trace_id, spans, Some(notes))
        }
    }
    // `None`: a redactor failed under `on_redactor_failure: drop`; already counted as lost.
    if let Some(kept) = kept {
        let n = kept.spans.len() as u64;
        // The exporter refuses only once the shutdown grace has run out (see `app`'s grace clock).
        if ctx.export.blocking_send(kept).is_err() {
            ctx.metrics.lost("shutdown", n);
        }
    }
    if let Some(due) = due_at {
        ctx.metrics
            .handoff_latency
            .observe(Instant::now().duration_since(due).as_secs_f64());
    }
    drop(acks);
}

/// Redacts and annotates kept spans (`tailgate.rule`, the sampling threshold in `tracestate`). Every kept
/// span (late ones included, and replayed ones) passes through here, so nothing reaches the exporter
/// without passing the redactors. `None` when a redactor failed under `on_redactor_failure: drop` (already
/// counted as lost).
pub fn prepare_kept(
    redactors: &Redactors,
    trace_id: TraceId,
    spans: Vec<SpanRecord>,
    info: &KeepInfo,
    metrics: &Metrics,
    notes: Option<&mut RedactionNotes>,
) -> Option<KeptSpans> {
    match redactors.redact_noting(trace_id, spans, metrics, notes) {
        Outcome::Export(spans) => Some(annotate(spans, info)),
        Outcome::Dropped => None,
    }
}

/// Kept spans with what tailgate adds to each of them: `tailgate.rule`, and the sampling threshold in
/// `tracestate`, rewritten from each span's own `tracestate` (see [`update_tracestate`]; a deterministic
/// keep leaves it as it is).
pub(crate) fn annotate(spans: Vec<SpanRecord>, info: &KeepInfo) -> KeptSpans {
    let mut rule = SpanPatch::new();
    rule.string_attribute("tailgate.rule", &info.rule);
    if let Some(by) = &info.rescued_by {
        rule.string_attribute("tailgate.rescued_by", by);
    }
    let rule = Bytes::copy_from_slice(rule.as_bytes());
    if info.applied == Applied::Everything {
        return KeptSpans {
            spans,
            patch: rule,
            per_span: Vec::new(),
        };
    }
    // The spans of a trace nearly always carry one `tracestate`: the first span's patch is shared, and
    // `per_span` is only filled once a span needs another one.
    let patch_for = |existing: &str| match update_tracestate(existing, info.applied) {
        Some(ts) => {
            let mut patch = SpanPatch::new();
            patch.trace_state(&ts);
            let mut b = Vec::with_capacity(rule.len() + patch.as_bytes().len());
            b.extend_from_slice(&rule);
            b.extend_from_slice(patch.as_bytes());
            Bytes::from(b)
        }
        None => rule.clone(),
    };
    let first = spans
        .first()
        .map(|s| crate::otlp::span_trace_state(&s.raw))
        .unwrap_or("");
    let patch = patch_for(first);
    let mut per_span: Vec<Bytes> = Vec::new();
    let mut last: (&str, Bytes) = (first, patch.clone());
    for (i, s) in spans.iter().enumerate().skip(1) {
        let existing = crate::otlp::span_trace_state(&s.raw);
        if existing != last.0 {
            last = (existing, patch_for(existing));
            if per_span.is_empty() {
                per_span = vec![patch.clone(); i];
            }
        }
        if !per_span.is_empty() {
            per_span.push(last.1.clone());
        }
    }
    KeptSpans {
        spans,
        patch,
        per_span,
    }
}
