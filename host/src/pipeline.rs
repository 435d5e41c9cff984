//! The pipeline: decides each due trace with the policy's ordered rules (first keep or drop wins, a
//! default when all abstain) and hands kept ones to the redaction stage (`pipeline/redaction.rs`:
//! redact, annotate with `tailgate.rule` and the sampling threshold, send to the exporter's queue).
//! Late spans follow the remembered decision of their trace.
//!
//! Runs on dedicated worker threads (plugin code never runs on a tokio worker); the buffer routes each trace
//! id to one worker, so a trace's late spans are handled after its decision. The samplers themselves run
//! on the buffer's thread by default (`InlineDecider`): the thread that is awake at a trace's deadline
//! decides it at once, and the worker does the rest (topology, shadow rules, export), so a decision waits
//! for one thread's wake-up, not two. When the policy has
//! redactors, kept spans are redacted and exported by the threads of the redaction stage, so
//! a slow redaction never delays the decisions of the traces behind it.

mod redaction;
mod second_chance;
mod shadow;
mod tracestate;

use crate::config::{DefaultDecision, SamplerFailurePolicy};
use crate::decisions::{DecisionCache, KeepInfo, Remembered};
use crate::explain::{Explanation, RedactionNotes};
use crate::export::ExportHandle;
use crate::inbox::{BufferOutput, DueTrace, LateSpans, TraceInbox};
use crate::metrics::{DecisionLabels, Metrics, PluginLabels, ReasonLabels};
use crate::otlp::predicate::{PredicateSet, PredicateSlot};
use crate::otlp::{SpanRecord, TraceId};
use crate::redact::Redactors;
use arc_swap::ArcSwap;
pub(crate) use redaction::annotate;
pub use redaction::prepare_kept;
use redaction::{Explain, KeptTrace, RedactionStage};
pub use second_chance::{RescueCondition, Rescuer, expire_ring};
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio::time::Instant;

pub use crate::plugin::{SamplerVerdict, Verdict};
pub use tracestate::{
    Applied, probability_of_threshold, threshold_for_probability, threshold_in, update_tracestate,
};

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
    ) -> Result<SamplerVerdict, SamplerFailure>;

    /// The plugin's file, hash, load time and call counters, for the status page (`None` for samplers
    /// that are not plugins).
    fn stats(&self) -> Option<crate::plugin::PluginStats> {
        None
    }

    /// The attribute predicates this sampler wants evaluated at ingest (`tailgate:plugin@0.2.0`
    /// samplers; see [`crate::predicate`]). Default: none.
    fn predicates(&self) -> &[crate::predicate::Predicate] {
        &[]
    }

    /// Binds [`Sampler::predicates`] to the policy-wide set the ingest scan evaluates. Returns false when
    /// a predicate is missing from it. Default: nothing to bind.
    fn bind_predicates(&self, _policy: &crate::predicate::PredicateSet) -> bool {
        true
    }

    /// Whether the sampler's decisions depend on the traces before (a rate limiter, a budget). A
    /// stateful sampler's probability is the share of the traces reaching it that it keeps; a stateless
    /// one's is consistent, on the trace's randomness (see [`Applied::of`]). Default: stateless.
    fn stateful(&self) -> bool {
        false
    }

    /// The verdict with what a keep does to the sampling threshold. Default: [`Applied::of`] the
    /// reported probability; a combinator (`crate::policy::combinators`) computes it from its parts.
    fn judge(&self, trace_id: TraceId, spans: &[SpanRecord]) -> Result<Judged, SamplerFailure> {
        let verdict = self.sample(trace_id, spans)?;
        let applied = Applied::of(verdict.probability, self.stateful());
        Ok(Judged { verdict, applied })
    }

    /// The samplers this one is made of (a combinator's parts; none for a plugin), for the status page,
    /// the replay report and hot reload's reuse of unchanged plugins.
    fn parts(&self) -> &[Rule] {
        &[]
    }
}

/// A sampler's verdict and, for a keep, its effect on the sampling threshold.
#[derive(Debug, Clone, PartialEq)]
pub struct Judged {
    pub verdict: SamplerVerdict,
    pub applied: Applied,
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
    /// Every rule's predicates, deduplicated: what the ingest scan evaluates while this policy is in
    /// force ([`Policy::install`]).
    pub predicates: Arc<PredicateSet>,
}

impl Policy {
    /// A policy with no rules: every trace gets the default.
    pub fn with_default(default: DefaultDecision) -> Policy {
        Policy {
            rules: Vec::new(),
            default,
            on_sampler_failure: SamplerFailurePolicy::Keep,
            redactors: Redactors::none(),
            predicates: Arc::default(),
        }
    }

    /// Every plugin of the policy's samplers, combinators' parts included (depth first), with whether its
    /// rule is a shadow rule: what the status page and the replay report list.
    pub fn sampler_plugins(&self) -> Vec<(&Rule, bool)> {
        fn walk<'a>(r: &'a Rule, shadow: bool, out: &mut Vec<(&'a Rule, bool)>) {
            let parts = r.sampler.parts();
            if parts.is_empty() {
                out.push((r, shadow));
            }
            for p in parts {
                walk(p, shadow, out);
            }
        }
        let mut out = Vec::new();
        for r in &self.rules {
            walk(r, r.shadow, &mut out);
        }
        out
    }

    /// Puts `policy` in force: the pipeline decides with it from now on, and the ingest scan evaluates
    /// its predicates (spans scanned before keep the previous generation and are walked at decision time).
    pub fn install(policy: Arc<Policy>, live: &ArcSwap<Policy>, predicates: &PredicateSlot) {
        predicates.store(policy.predicates.clone());
        live.store(policy);
    }
}

/// The outcome for one trace.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub keep: bool,
    /// The rule that decided, `default`, or `<rule>:failure` when a failure policy decided.
    pub rule: Arc<str>,
    /// The probability the deciding rule reported.
    pub probability: Option<f64>,
    /// What keeping the trace does to its spans' sampling threshold.
    pub applied: Applied,
}

impl Policy {
    /// Evaluates the live rules in order.
    pub fn decide(&self, trace_id: TraceId, spans: &[SpanRecord], metrics: &Metrics) -> Decision {
        for rule in self.rules.iter().filter(|r| !r.shadow) {
            let result = rule.sampler.judge(trace_id, spans);
            metrics.record_plugin_call(
                &rule.name,
                crate::health::PluginRole::Sampler,
                result.as_ref().err().map(|f| f.kind),
            );
            let Judged {
                verdict: v,
                applied,
            } = match result {
                Ok(j) => j,
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
                                applied: Applied::Everything,
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
                        applied,
                    };
                }
                Verdict::Drop => {
                    return Decision {
                        keep: false,
                        rule: rule.name.clone(),
                        probability: v.probability,
                        applied: Applied::Everything,
                    };
                }
            }
        }
        Decision {
            keep: self.default == DefaultDecision::Keep,
            rule: "default".into(),
            probability: Some(1.0),
            applied: Applied::Everything,
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
    /// The second-chance ring (`buffer.second_chance`), when on.
    pub ring: Option<Arc<crate::rescue::Ring>>,
}

/// Starts `workers` pipeline threads and as many redaction threads (sharing one queue of `capacity`
/// kept traces); returns the pipeline's [`Inbox`] (a queue of `capacity` traces per worker) and a handle
/// that completes when all threads have finished (after the inbox is dropped and the redaction queue is
/// drained). With `decide_inline` (`plugins.decide_on_buffer_thread`), due traces are decided on the
/// thread that sends them (`InlineDecider`).
pub fn start(
    workers: usize,
    capacity: usize,
    ctx: PipelineContext,
    decide_inline: bool,
) -> std::io::Result<(Inbox, tokio::sync::oneshot::Receiver<()>)> {
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let done = Arc::new(DoneGuard(std::sync::Mutex::new(Some(done_tx))));
    let stage = redaction::start(workers, capacity, ctx.clone(), done.clone())?;
    let mut senders = Vec::with_capacity(workers);
    for i in 0..workers.max(1) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        senders.push(tx);
        let ctx = ctx.clone();
        let done = done.clone();
        let stage = stage.clone();
        std::thread::Builder::new()
            .name(format!("tailgate-pipeline-{i}"))
            .spawn(move || {
                worker(rx, ctx, stage);
                drop(done);
            })?;
    }
    // The redaction threads end when the last pipeline thread drops its sender.
    drop(stage);
    let inline = decide_inline.then(|| Arc::new(InlineDecider::new(ctx)));
    Ok((
        Inbox {
            workers: senders,
            inline,
        },
        done_rx,
    ))
}

/// What a pipeline worker is handed: the buffer's output, or a trace its `InlineDecider` decided.
#[derive(Debug)]
pub(crate) enum WorkItem {
    /// A trace to decide.
    Due(DueTrace),
    /// A trace decided on the sending thread, to hand on.
    Decided(Box<DecidedTrace>),
    Late(LateSpans),
    /// A held dropped trace to bring back (`POST /rescue`), marked `by`.
    Rescue {
        trace_id: TraceId,
        by: Arc<str>,
    },
}

impl WorkItem {
    fn span_count(&self) -> usize {
        match self {
            WorkItem::Due(t) => t.spans.len(),
            WorkItem::Decided(d) => d.t.spans.len(),
            WorkItem::Late(l) => l.spans.len(),
            WorkItem::Rescue { .. } => 0,
        }
    }
}

/// The pipeline's input: one bounded queue per worker. A trace and its late spans always go to the same
/// worker (by trace id), so they are handled in order.
#[derive(Clone)]
pub struct Inbox {
    workers: Vec<mpsc::Sender<WorkItem>>,
    inline: Option<Arc<InlineDecider>>,
}

impl Inbox {
    /// The handle that brings traces held by `ring` back on request (`POST /rescue`).
    pub fn rescuer(&self, ring: Arc<crate::rescue::Ring>) -> Rescuer {
        Rescuer::new(&self.workers, ring)
    }
}

impl TraceInbox for Inbox {
    async fn send(&self, o: BufferOutput) -> bool {
        let (trace_id, item) = match o {
            BufferOutput::Due(t) => (
                t.trace_id,
                match &self.inline {
                    Some(d) => d.decide(t),
                    None => WorkItem::Due(t),
                },
            ),
            BufferOutput::Late(l) => (l.trace_id, WorkItem::Late(l)),
        };
        let i = (trace_id as usize) % self.workers.len();
        self.workers[i].send(item).await.is_ok()
    }
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

fn worker(mut rx: mpsc::Receiver<WorkItem>, ctx: PipelineContext, stage: RedactionStage) {
    // Decisions first: the bookkeeping of dropped traces (most of them) waits until the queue is empty or
    // `DROPPED_BATCH` of them piled up, so a burst of traces that became due together is decided without
    // each waiting for the bookkeeping of those ahead of it.
    let mut dropped: Vec<DecidedTrace> = Vec::new();
    loop {
        let item = match rx.try_recv() {
            Ok(item) => item,
            Err(mpsc::error::TryRecvError::Empty) => {
                finish_dropped(&mut dropped, &ctx);
                match rx.blocking_recv() {
                    Some(item) => item,
                    None => break,
                }
            }
            Err(mpsc::error::TryRecvError::Disconnected) => break,
        };
        let n = item.span_count();
        // Late spans and rescues may need a dropped trace in the second-chance ring: the held dropped
        // traces' bookkeeping (which puts them there) goes first.
        if ctx.ring.is_some() && matches!(item, WorkItem::Late(_) | WorkItem::Rescue { .. }) {
            finish_dropped(&mut dropped, &ctx);
        }
        let decided = match item {
            WorkItem::Due(t) => decide(t, &ctx, &stage),
            WorkItem::Decided(d) => hand_on(*d, &ctx, &stage),
            WorkItem::Late(l) => Decided::Kept {
                staged: late(l, &ctx, &stage),
            },
            WorkItem::Rescue { trace_id, by } => Decided::Kept {
                staged: second_chance::requested(trace_id, by, &ctx, &stage),
            },
        };
        let staged = match decided {
            Decided::Kept { staged } => staged,
            Decided::Dropped(d) => {
                dropped.push(d);
                if dropped.len() >= DROPPED_BATCH {
                    finish_dropped(&mut dropped, &ctx);
                }
                continue;
            }
        };
        // Counted in by the buffer when it handed the item over; by now every span is in the export
        // queue, sampled out, counted lost, or waiting in the redaction stage (which counts it out).
        ctx.metrics.pipeline_spans.dec_by((n - staged) as i64);
    }
    finish_dropped(&mut dropped, &ctx);
}

/// Most dropped traces a worker holds before doing their bookkeeping.
const DROPPED_BATCH: usize = 64;

/// A decided trace: its decision is remembered (so its late spans follow it) and its latency measured;
/// what is left is to hand it on (kept) or do its bookkeeping (dropped), on a pipeline worker.
pub(crate) struct DecidedTrace {
    t: DueTrace,
    decision: Decision,
    policy: Arc<Policy>,
    /// What kept spans are annotated with; `None` when dropped.
    kept: Option<Arc<KeepInfo>>,
}

impl std::fmt::Debug for DecidedTrace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecidedTrace")
            .field("trace", &self.t)
            .field("decision", &self.decision)
            .finish_non_exhaustive()
    }
}

enum Decided {
    /// Kept and handed on; `staged` of its spans wait in the redaction stage.
    Kept { staged: usize },
    /// Dropped, waiting for its bookkeeping.
    Dropped(DecidedTrace),
}

/// Does the bookkeeping of the held dropped traces.
fn finish_dropped(dropped: &mut Vec<DecidedTrace>, ctx: &PipelineContext) {
    for d in dropped.drain(..) {
        let n = d.t.spans.len();
        sample_out(d, ctx);
        ctx.metrics.pipeline_spans.dec_by(n as i64);
    }
}

/// A dropped trace's topology, shadow rules, metrics and explanation; then its spans are freed.
fn sample_out(d: DecidedTrace, ctx: &PipelineContext) {
    let DecidedTrace {
        t,
        decision,
        policy,
        ..
    } = d;
    account(&t, &decision, &policy, ctx);
    ctx.metrics.spans_sampled_out.inc_by(t.spans.len() as u64);
    let mut why = explain(&t, &decision);
    why.set_dropped_root(&t.spans, &ctx.metrics.topology);
    ctx.metrics.decision_log.record(why);
    second_chance::hold(ctx, t.trace_id, t.spans);
}

/// What every decided trace counts in: topology (from every trace, whatever the decision), shadow rules
/// (after the live decision is fixed: they cannot change it), the decision counter.
fn account(t: &DueTrace, decision: &Decision, policy: &Policy, ctx: &PipelineContext) {
    ctx.metrics.topology.observe(&t.spans, &policy.redactors);
    policy.evaluate_shadows(t.trace_id, &t.spans, decision, &ctx.metrics);
    ctx.metrics
        .decisions
        .get_or_create(&DecisionLabels {
            rule: decision.rule.to_string(),
            decision: if decision.keep { "keep" } else { "drop" },
        })
        .inc();
}

fn explain(t: &DueTrace, decision: &Decision) -> Explanation {
    Explanation::new(
        t.trace_id,
        t.trigger.as_str(),
        decision.keep,
        decision.rule.clone(),
        decision.probability,
        &t.spans,
    )
}

/// Decides a due trace: a kept trace is handed on at once, a dropped one is remembered and returned for
/// its bookkeeping.
fn decide(t: DueTrace, ctx: &PipelineContext, stage: &RedactionStage) -> Decided {
    let policy = ctx.policy.load_full();
    let decision = policy.decide(t.trace_id, &t.spans, &ctx.metrics);
    hand_on(remember(t, decision, policy, ctx), ctx, stage)
}

/// Measures a fresh decision's latency and remembers it, so the trace's late spans follow it.
fn remember(
    t: DueTrace,
    decision: Decision,
    policy: Arc<Policy>,
    ctx: &PipelineContext,
) -> DecidedTrace {
    let now = Instant::now();
    ctx.metrics
        .decision_latency
        .observe(now.duration_since(t.due_at).as_secs_f64());
    let kept = decision.keep.then(|| {
        Arc::new(KeepInfo {
            rule: decision.rule.clone(),
            applied: decision.applied,
            rescued_by: None,
        })
    });
    match &kept {
        Some(info) => ctx.cache.record_keep(t.trace_id, info.clone(), now),
        None => ctx.cache.record_drop(t.trace_id, now),
    }
    DecidedTrace {
        t,
        decision,
        policy,
        kept,
    }
}

/// Hands a kept trace on (redaction stage or exporter); a dropped one is returned for its bookkeeping.
fn hand_on(d: DecidedTrace, ctx: &PipelineContext, stage: &RedactionStage) -> Decided {
    let Some(info) = d.kept.clone() else {
        return Decided::Dropped(d);
    };
    let DecidedTrace {
        t,
        decision,
        policy,
        ..
    } = d;
    account(&t, &decision, &policy, ctx);
    let why = explain(&t, &decision);
    let staged = stage.hand_off(
        KeptTrace {
            trace_id: t.trace_id,
            spans: t.spans,
            info,
            acks: t.acks,
            due_at: Some(t.due_at),
            explain: Explain::Decided(Box::new(why)),
        },
        ctx,
    );
    Decided::Kept { staged }
}

/// Longest an inline decision may take before the `InlineDecider` stops deciding on the buffer's thread
/// for [`INLINE_PAUSE`]. Samplers answer in microseconds; one that runs into its call timeout would
/// otherwise hold up span intake and the buffer's timers.
pub const INLINE_DECISION_BUDGET: std::time::Duration = std::time::Duration::from_millis(1);

/// How long due traces go to the workers after an inline decision over [`INLINE_DECISION_BUDGET`]. A
/// pause, not a switch: a decision can be slow because the thread was preempted, not the samplers.
pub const INLINE_PAUSE: std::time::Duration = std::time::Duration::from_secs(10);

/// Runs the samplers of due traces on the buffer's thread (`plugins.decide_on_buffer_thread`), which is
/// awake at the trace's deadline anyway; the worker the trace is routed to does the rest. After a
/// decision slower than [`INLINE_DECISION_BUDGET`], traces are decided on the workers for
/// [`INLINE_PAUSE`] (with a warning).
pub(crate) struct InlineDecider {
    ctx: PipelineContext,
    /// Until when due traces go to the workers undecided.
    paused_until: std::sync::Mutex<Option<Instant>>,
}

impl InlineDecider {
    pub(crate) fn new(ctx: PipelineContext) -> InlineDecider {
        InlineDecider {
            ctx,
            paused_until: std::sync::Mutex::new(None),
        }
    }

    /// Decides a due trace now, or hands it back as it is while inline decisions are paused.
    pub(crate) fn decide(&self, t: DueTrace) -> WorkItem {
        let paused_until = || self.paused_until.lock().unwrap_or_else(|p| p.into_inner());
        if paused_until().is_some_and(|until| Instant::now() < until) {
            return WorkItem::Due(t);
        }
        let policy = self.ctx.policy.load_full();
        // Real time (the buffer's clock, tokio's, stands still in tests with a paused clock).
        let started = std::time::Instant::now();
        let decision = policy.decide(t.trace_id, &t.spans, &self.ctx.metrics);
        let took = started.elapsed();
        if took > INLINE_DECISION_BUDGET {
            tracing::warn!(
                took_us = took.as_micros() as u64,
                budget_us = INLINE_DECISION_BUDGET.as_micros() as u64,
                pause_s = INLINE_PAUSE.as_secs(),
                "a decision on the buffer's thread took longer than its budget: traces are decided on \
                 the pipeline workers for a while"
            );
            *paused_until() = Some(Instant::now() + INLINE_PAUSE);
        }
        WorkItem::Decided(Box::new(remember(t, decision, policy, &self.ctx)))
    }
}

/// Handles spans of an already decided trace; returns how many wait in the redaction stage.
fn late(mut l: LateSpans, ctx: &PipelineContext, stage: &RedactionStage) -> usize {
    ctx.metrics
        .topology
        .observe_late(&l.spans, &ctx.policy.load().redactors);
    let n = l.spans.len() as u64;
    match ctx.cache.lookup(l.trace_id, Instant::now()) {
        Some(Remembered::Kept(info)) => {
            ctx.metrics
                .late_spans
                .get_or_create(&ReasonLabels { reason: "kept" })
                .inc_by(n);
            return stage.hand_off(
                KeptTrace {
                    trace_id: l.trace_id,
                    spans: l.spans,
                    info,
                    acks: l.acks,
                    due_at: None,
                    explain: Explain::Late {
                        spans: n,
                        notes: RedactionNotes::default(),
                    },
                },
                ctx,
            );
        }
        Some(Remembered::Dropped) => {
            if let Some(staged) = second_chance::second_look(&mut l, ctx, stage) {
                return staged;
            }
            ctx.metrics
                .late_spans
                .get_or_create(&ReasonLabels { reason: "dropped" })
                .inc_by(n);
            ctx.metrics.spans_sampled_out.inc_by(n);
            ctx.metrics.decision_log.record_late(l.trace_id, n, None);
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
            let decided = decide(
                DueTrace {
                    trace_id: l.trace_id,
                    spans: l.spans,
                    acks: l.acks,
                    trigger: crate::inbox::Trigger::Idle,
                    first_seen: now,
                    due_at: now,
                    charge: l.charge,
                },
                ctx,
                stage,
            );
            return match decided {
                Decided::Kept { staged } => staged,
                Decided::Dropped(d) => {
                    sample_out(d, ctx);
                    0
                }
            };
        }
    }
    drop(l.acks);
    0
}

#[cfg(test)]
mod tests;
