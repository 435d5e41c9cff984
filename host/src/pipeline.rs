//! The pipeline: decides each due trace with the policy's ordered rules (first keep or drop wins, a
//! default when all abstain), annotates kept spans (`tailgate.rule`, the OpenTelemetry sampling threshold
//! in `tracestate`), passes them through the redactors, and hands them to the exporter. Late spans follow
//! the remembered decision of their trace.
//!
//! Runs on dedicated worker threads (plugin code never runs on a tokio worker); the buffer routes each trace
//! id to one worker, so a trace's late spans are handled after its decision.

mod shadow;
mod tracestate;

use crate::buffer::{BufferOutput, DueTrace, LateSpans};
use crate::config::{DefaultDecision, SamplerFailurePolicy};
use crate::decisions::{DecisionCache, KeepInfo, Remembered};
use crate::export::{ExportHandle, KeptSpans};
use crate::metrics::{DecisionLabels, Metrics, PluginLabels, ReasonLabels};
use crate::otlp::{SpanPatch, SpanRecord, TraceId};
use crate::redact::{Outcome, Redactors};
use arc_swap::ArcSwap;
use bytes::Bytes;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio::time::Instant;

pub use tracestate::{threshold_for_probability, update_tracestate};

/// A sampler's answer for one trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Keep,
    Drop,
    Abstain,
}

/// A sampler's verdict with what it knows about it.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleVerdict {
    pub verdict: Verdict,
    /// Probability with which the sampler keeps traces like this one, when it knows it.
    pub probability: Option<f64>,
    pub reason: Option<String>,
}

/// Why a sampler could not answer; the failure policy applies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SamplerFailure {
    /// `trap`, `timeout`, `out_of_memory`, `bad_result`.
    pub kind: &'static str,
    pub message: String,
}

/// Something that votes on a complete trace: a WebAssembly sampler plugin.
pub trait Sampler: Send + Sync {
    fn sample(
        &self,
        trace_id: TraceId,
        spans: &[SpanRecord],
    ) -> Result<RuleVerdict, SamplerFailure>;
}

/// One rule of the policy.
pub struct Rule {
    pub name: Arc<str>,
    pub sampler: Arc<dyn Sampler>,
    /// Evaluated and counted only.
    pub shadow: bool,
}

/// The policy in force. Swapped atomically on reload; a trace is decided by the policy current when its
/// decision runs.
pub struct Policy {
    pub rules: Vec<Rule>,
    pub default: DefaultDecision,
    pub on_sampler_failure: SamplerFailurePolicy,
    /// Run on every kept trace (late spans included) before it is exported.
    pub redactors: Redactors,
}

impl Policy {
    /// A policy with no rules: every trace gets the default.
    pub fn with_default(default: DefaultDecision) -> Policy {
        Policy {
            rules: Vec::new(),
            default,
            on_sampler_failure: SamplerFailurePolicy::Keep,
            redactors: Redactors::none(),
        }
    }
}

/// The outcome for one trace.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub keep: bool,
    /// The rule that decided, `default`, or `<rule>:failure` when a failure policy decided.
    pub rule: Arc<str>,
    pub probability: Option<f64>,
}

impl Policy {
    /// Evaluates the live rules in order.
    pub fn decide(&self, trace_id: TraceId, spans: &[SpanRecord], metrics: &Metrics) -> Decision {
        for rule in self.rules.iter().filter(|r| !r.shadow) {
            let v = match rule.sampler.sample(trace_id, spans) {
                Ok(v) => v,
                Err(f) => {
                    metrics
                        .plugin_failures
                        .get_or_create(&PluginLabels {
                            plugin: rule.name.to_string(),
                            kind: f.kind,
                        })
                        .inc();
                    tracing::warn!(rule = %rule.name, kind = f.kind, error = %f.message, "sampler failed");
                    match self.on_sampler_failure {
                        SamplerFailurePolicy::Abstain => continue,
                        p => {
                            return Decision {
                                keep: p == SamplerFailurePolicy::Keep,
                                rule: format!("{}:failure", rule.name).into(),
                                probability: None,
                            };
                        }
                    }
                }
            };
            match v.verdict {
                Verdict::Abstain => continue,
                Verdict::Keep => {
                    return Decision {
                        keep: true,
                        rule: rule.name.clone(),
                        probability: v.probability,
                    };
                }
                Verdict::Drop => {
                    return Decision {
                        keep: false,
                        rule: rule.name.clone(),
                        probability: v.probability,
                    };
                }
            }
        }
        Decision {
            keep: self.default == DefaultDecision::Keep,
            rule: "default".into(),
            probability: Some(1.0),
        }
    }
}

/// Everything a worker needs.
#[derive(Clone)]
pub struct PipelineContext {
    pub policy: Arc<ArcSwap<Policy>>,
    pub cache: Arc<DecisionCache>,
    pub export: ExportHandle,
    pub metrics: Arc<Metrics>,
}

/// Starts `workers` pipeline threads; returns their input queues (`capacity` traces each) and a handle
/// that completes when all have finished (after their queues close).
pub fn start(
    workers: usize,
    capacity: usize,
    ctx: PipelineContext,
) -> std::io::Result<(
    Vec<mpsc::Sender<BufferOutput>>,
    tokio::sync::oneshot::Receiver<()>,
)> {
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let done = Arc::new(DoneGuard(std::sync::Mutex::new(Some(done_tx))));
    let mut senders = Vec::with_capacity(workers);
    for i in 0..workers.max(1) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        senders.push(tx);
        let ctx = ctx.clone();
        let done = done.clone();
        std::thread::Builder::new()
            .name(format!("tailgate-pipeline-{i}"))
            .spawn(move || {
                worker(rx, ctx);
                drop(done);
            })?;
    }
    Ok((senders, done_rx))
}

/// Signals completion when the last worker drops its clone.
struct DoneGuard(std::sync::Mutex<Option<tokio::sync::oneshot::Sender<()>>>);

impl Drop for DoneGuard {
    fn drop(&mut self) {
        if let Some(tx) = self.0.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = tx.send(());
        }
    }
}

fn worker(mut rx: mpsc::Receiver<BufferOutput>, ctx: PipelineContext) {
    while let Some(item) = rx.blocking_recv() {
        match item {
            BufferOutput::Due(t) => decide(t, &ctx),
            BufferOutput::Late(l) => late(l, &ctx),
        }
    }
}

fn decide(t: DueTrace, ctx: &PipelineContext) {
    // Every trace, before the decision can drop it.
    ctx.metrics.topology.observe(&t.spans);
    let policy = ctx.policy.load();
    let decision = policy.decide(t.trace_id, &t.spans, &ctx.metrics);
    let now = Instant::now();
    ctx.metrics
        .decision_latency
        .observe(now.duration_since(t.due_at).as_secs_f64());
    // After the live decision is fixed (and its latency measured): shadow rules cannot change it.
    policy.evaluate_shadows(t.trace_id, &t.spans, &decision, &ctx.metrics);
    ctx.metrics
        .decisions
        .get_or_create(&DecisionLabels {
            rule: decision.rule.to_string(),
            decision: if decision.keep { "keep" } else { "drop" },
        })
        .inc();
    if decision.keep {
        let info = Arc::new(KeepInfo {
            rule: decision.rule.clone(),
            probability: decision.probability,
        });
        ctx.cache.record_keep(t.trace_id, info.clone(), now);
        export(t.trace_id, t.spans, &info, ctx);
    } else {
        ctx.cache.record_drop(t.trace_id, now);
        ctx.metrics.spans_sampled_out.inc_by(t.spans.len() as u64);
    }
    drop(t.acks);
}

fn late(l: LateSpans, ctx: &PipelineContext) {
    ctx.metrics.topology.observe_late(&l.spans);
    let n = l.spans.len() as u64;
    match ctx.cache.lookup(l.trace_id, Instant::now()) {
        Some(Remembered::Kept(info)) => {
            ctx.metrics
                .late_spans
                .get_or_create(&ReasonLabels { reason: "kept" })
                .inc_by(n);
            export(l.trace_id, l.spans, &info, ctx);
        }
        Some(Remembered::Dropped) => {
            ctx.metrics
                .late_spans
                .get_or_create(&ReasonLabels { reason: "dropped" })
                .inc_by(n);
            ctx.metrics.spans_sampled_out.inc_by(n);
        }
        // The decision was forgotten between the buffer's check and now (evicted): this worker decided
        // the trace before (same queue), so this only happens when the cache is too small. Decide the
        // spans as a trace of their own rather than lose them.
        Some(Remembered::Pending) | None => {
            ctx.metrics
                .late_spans
                .get_or_create(&ReasonLabels {
                    reason: "forgotten",
                })
                .inc_by(n);
            let now = Instant::now();
            decide(
                DueTrace {
                    trace_id: l.trace_id,
                    spans: l.spans,
                    acks: l.acks,
                    trigger: crate::buffer::Trigger::Idle,
                    first_seen: now,
                    due_at: now,
                },
                ctx,
            );
            return;
        }
    }
    drop(l.acks);
}

/// Redacts, annotates and sends kept spans to the exporter. Every kept span (late ones included) passes
/// through here, so nothing reaches the exporter without passing the redactors.
fn export(trace_id: TraceId, spans: Vec<SpanRecord>, info: &KeepInfo, ctx: &PipelineContext) {
    let spans = match ctx
        .policy
        .load()
        .redactors
        .redact(trace_id, spans, &ctx.metrics)
    {
        Outcome::Export(spans) => spans,
        // A redactor failed under `on_redactor_failure: drop`; already counted as lost.
        Outcome::Dropped => return,
    };
    let n = spans.len() as u64;
    if ctx.export.blocking_send(annotate(spans, info)).is_err() {
        ctx.metrics.lost("exporter_closed", n);
    }
}

/// Kept spans with what tailgate adds to each of them: `tailgate.rule`, and the sampling threshold in
/// `tracestate` (from the first span's `tracestate`, see [`update_tracestate`]).
pub(crate) fn annotate(spans: Vec<SpanRecord>, info: &KeepInfo) -> KeptSpans {
    let mut patch = SpanPatch::new();
    patch.string_attribute("tailgate.rule", &info.rule);
    let existing = spans
        .first()
        .map(|s| crate::otlp::span_trace_state(&s.raw))
        .unwrap_or("");
    if let Some(ts) = update_tracestate(existing, info.probability) {
        patch.trace_state(&ts);
    }
    KeptSpans {
        spans,
        patch: Bytes::copy_from_slice(patch.as_bytes()),
    }
}

#[cfg(test)]
mod tests;
