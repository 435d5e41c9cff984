//! Sampler plugins: a trace in (summary, projection, full trace when asked), a checked verdict out.
use super::host_api::truncate;
use super::instances::{PluginCore, SamplerPre, SamplerWorld, now_unix_nano};
use super::*;

/// A loaded sampler plugin. `Send + Sync`: share it (e.g. in an `Arc`) between worker threads.
pub struct SamplerPlugin {
    pub(super) core: PluginCore<SamplerWorld>,
    /// The declared predicates as a set (bit i = predicate i), for the decision-time walk.
    pub(super) own_predicates: crate::predicate::PredicateSet,
    /// How the predicates map to the bits of the policy set the spans were scanned with.
    pub(super) binding: arc_swap::ArcSwap<crate::predicate::Binding>,
}

impl fmt::Debug for SamplerPlugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SamplerPlugin")
            .field("name", &self.core.shared.name)
            .finish()
    }
}

impl SamplerPlugin {
    /// The rule name the plugin was loaded under.
    pub fn name(&self) -> &str {
        &self.core.shared.name
    }

    /// The attribute keys the plugin declared at `init`.
    pub fn projection(&self) -> &Projection {
        &self.core.projection
    }

    /// Whether the plugin declared itself stateful (one instance, serialized calls): its decisions
    /// depend on the traces before, so a probability it reports is a share (see `pipeline::Applied`).
    pub fn is_stateful(&self) -> bool {
        self.core.stateful
    }

    /// Whether the plugin asked for the full trace.
    pub fn wants_full_trace(&self) -> bool {
        self.core.full_trace
    }

    /// The predicates the plugin declared at `init` (0.2 samplers; empty for 0.1).
    pub fn predicates(&self) -> &[crate::predicate::Predicate] {
        &self.core.predicates
    }

    /// Uses the bits of `policy` (the set the ingest scan evaluates, which must contain this plugin's
    /// predicates) for spans scanned with it. Returns false, leaving the binding as it was, when a
    /// predicate is missing from `policy`.
    pub fn bind_predicates(&self, policy: &crate::predicate::PredicateSet) -> bool {
        match crate::predicate::Binding::new(&self.core.predicates, policy) {
            Some(b) => {
                self.binding.store(Arc::new(b));
                true
            }
            None => false,
        }
    }

    /// For each declared predicate, the number of spans of `spans` for which it holds: what `decide`
    /// passes a 0.2 sampler as `predicate-matches`.
    pub fn predicate_matches(&self, spans: &[SpanRecord]) -> Vec<u32> {
        crate::predicate::count_matches(&self.own_predicates, &self.binding.load(), spans)
    }

    /// Asks the plugin about one complete trace. Never panics; every failure is a [`PluginFailure`].
    pub fn decide(
        &self,
        trace_id: TraceId,
        spans: &[SpanRecord],
    ) -> Result<SamplerVerdict, PluginFailure> {
        let summary = marshal::summary(trace_id, spans, now_unix_nano());
        let attributes =
            marshal::project_with(&self.core.projection, &self.core.span_finder, spans);
        let full = self.core.full_trace.then(|| marshal::full_trace(spans));
        let matches = match self.core.pre {
            SamplerPre::V2(_) => self.predicate_matches(spans),
            SamplerPre::V1(_) => Vec::new(),
        };
        let d = self.core.call(spans, |w, store| {
            store.data().clock.set(summary.now_unix_nano);
            match w {
                SamplerWorld::V1(w) => w.tailgate_plugin_sampling().call_decide(
                    store,
                    &summary,
                    &attributes,
                    full.as_ref(),
                ),
                SamplerWorld::V2(w) => w
                    .tailgate_plugin_sampling()
                    .call_decide(store, &summary, &matches, &attributes, full.as_ref())
                    .map(|d| bindings::sampling::Decision {
                        verdict: match d.verdict {
                            bindings::sampling_v2::Verdict::Keep => WitVerdict::Keep,
                            bindings::sampling_v2::Verdict::Drop => WitVerdict::Drop,
                            bindings::sampling_v2::Verdict::Abstain => WitVerdict::Abstain,
                        },
                        probability: d.probability,
                        reason: d.reason,
                    }),
            }
        })?;
        check_decision(d).map_err(|m| self.core.bad_result(m))
    }

    /// Counters for metrics and status.
    pub fn stats(&self) -> PluginStats {
        self.core.stats()
    }
}

/// Checks a sampler's raw decision: the probability must be in (0, 1]; the reason is cut to
/// [`MAX_REASON`] bytes.
pub(crate) fn check_decision(d: bindings::sampling::Decision) -> Result<SamplerVerdict, String> {
    if let Some(p) = d.probability
        && !(p > 0.0 && p <= 1.0)
    {
        return Err(format!("probability {p} is outside (0, 1]"));
    }
    Ok(SamplerVerdict {
        verdict: match d.verdict {
            WitVerdict::Keep => Verdict::Keep,
            WitVerdict::Drop => Verdict::Drop,
            WitVerdict::Abstain => Verdict::Abstain,
        },
        probability: d.probability,
        reason: d.reason.map(|r| truncate(r, MAX_REASON)),
    })
}
