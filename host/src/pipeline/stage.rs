//! The redaction stage: kept traces leave the deciding workers through a bounded queue and are redacted,
//! annotated and handed to the exporter by threads of their own.
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

use super::PipelineContext;
use crate::decisions::KeepInfo;
use crate::explain::{Explanation, RedactionNotes};
use crate::ingest::Ack;
use crate::otlp::{SpanRecord, TraceId};
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
pub(crate) struct StageSender {
    tx: SyncSender<KeptTrace>,
}

impl StageSender {
    /// Queues kept spans for redaction. Blocks while the queue is full (backpressure). When the stage is
    /// gone (shutdown), does the work on the calling thread so nothing is lost. Returns the number of
    /// spans queued (0 when done here): the stage counts them out of the `pipeline_spans` gauge.
    pub fn send(&self, t: KeptTrace, ctx: &PipelineContext) -> usize {
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
        finish(t, ctx);
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
) -> std::io::Result<StageSender> {
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
    Ok(StageSender { tx })
}

fn run(rx: &Mutex<Receiver<KeptTrace>>, ctx: &PipelineContext) {
    loop {
        // Hold the lock only to take one item, so the threads share the queue.
        let next = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
        match next {
            Ok(t) => {
                let n = t.spans.len() as i64;
                finish(t, ctx);
                ctx.metrics.pipeline_spans.dec_by(n);
            }
            Err(_) => return,
        }
    }
}

/// Redacts, annotates and sends kept spans to the exporter. Every kept span (late ones included) passes
/// through here, so nothing reaches the exporter without passing the redactors.
pub(crate) fn finish(t: KeptTrace, ctx: &PipelineContext) {
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
    let kept = super::prepare_kept(
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
