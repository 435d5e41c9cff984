//! Shadow rules: sampling rules marked `shadow: true`, asked about every trace after the live decision is
//! made and only counted, so an operator can see what a candidate rule would do on real traffic before
//! promoting it (a config edit: `shadow: false`).
//!
//! Semantics, per shadow rule and trace:
//! - the rule is asked on the same pipeline worker, right after the live decision; the live decision is
//!   already fixed, so nothing a shadow rule says or fails at can change it;
//! - `tailgate_shadow_decisions_total{rule, decision}` counts what it said: `keep`, `drop`, `abstain`, or
//!   `failure` (trap, timeout, bad result; also counted in `tailgate_plugin_failures_total`);
//! - `tailgate_shadow_bytes_total{rule, decision}` adds the trace's span bytes (as received) under the
//!   same label, so `keep` / `drop` read as "bytes it would keep / drop";
//! - `tailgate_shadow_agreement_total{rule, outcome}` compares its verdict with the live policy's final
//!   decision (whichever rule, default or failure policy made it): `agree` when it kept a kept trace or
//!   dropped a dropped one, `disagree` otherwise, `abstain` when it had no opinion (promoted, it would
//!   defer to the rest of the policy), `failure` when it could not answer.
//!
//! The comparison is with the final decision, not with "the policy with this rule promoted in place":
//! a shadow rule placed after the live rule that decided would not be reached once promoted. Read
//! `disagree` as "this rule, alone, would decide differently".

use super::{Decision, Policy, Verdict};
use crate::metrics::{Metrics, PluginLabels, ShadowAgreementLabels, ShadowLabels};
use crate::otlp::{SpanRecord, TraceId};

impl Policy {
    /// Asks every shadow rule about the trace and counts the answers against `live`. Never changes
    /// anything but metrics.
    pub fn evaluate_shadows(
        &self,
        trace_id: TraceId,
        spans: &[SpanRecord],
        live: &Decision,
        metrics: &Metrics,
    ) {
        let mut bytes = None;
        for rule in self.rules.iter().filter(|r| r.shadow) {
            let decision = match rule.sampler.sample(trace_id, spans) {
                Ok(v) => match v.verdict {
                    Verdict::Keep => "keep",
                    Verdict::Drop => "drop",
                    Verdict::Abstain => "abstain",
                },
                Err(f) => {
                    metrics
                        .plugin_failures
                        .get_or_create(&PluginLabels {
                            plugin: rule.name.to_string(),
                            kind: f.kind,
                        })
                        .inc();
                    "failure"
                }
            };
            let outcome = match (decision, live.keep) {
                ("keep", true) | ("drop", false) => "agree",
                ("keep", false) | ("drop", true) => "disagree",
                (other, _) => other,
            };
            let labels = ShadowLabels {
                rule: rule.name.to_string(),
                decision,
            };
            metrics.shadow_decisions.get_or_create(&labels).inc();
            let bytes =
                *bytes.get_or_insert_with(|| spans.iter().map(|s| s.raw.len() as u64).sum::<u64>());
            metrics.shadow_bytes.get_or_create(&labels).inc_by(bytes);
            metrics
                .shadow_agreement
                .get_or_create(&ShadowAgreementLabels {
                    rule: rule.name.to_string(),
                    outcome,
                })
                .inc();
        }
    }
}
