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

#[cfg(test)]
mod tests {
    //! Shadow metrics on a fixed trace set, against counts worked out by hand below.

    use super::*;
    use crate::config::{DefaultDecision, SamplerFailurePolicy};
    use crate::otlp::scan_export_request;
    use crate::pipeline::{Rule, Sampler, SamplerFailure, SamplerVerdict};
    use crate::plugin::{PluginRuntime, PluginSpec, RuntimeSettings};
    use crate::policy::WasmSampler;
    use crate::testing::{request, span_in};
    use opentelemetry_proto::tonic::trace::v1::{Status, status};
    use prost::Message;
    use std::path::Path;
    use std::sync::Arc;
    use std::time::Duration;

    fn wasm(runtime: &PluginRuntime, name: &str, file: &str, config: &str) -> Arc<dyn Sampler> {
        let path = crate::testing::built_plugin(file);
        let plugin = runtime
            .load_sampler(&PluginSpec::new(name, path, config))
            .expect("loads");
        Arc::new(WasmSampler(plugin))
    }

    struct Broken;

    impl Sampler for Broken {
        fn sample(&self, _: TraceId, _: &[SpanRecord]) -> Result<SamplerVerdict, SamplerFailure> {
            Err(SamplerFailure {
                kind: "trap",
                message: "unreachable".into(),
            })
        }
    }

    /// A trace of `n` spans (a root and children), the last one with status ERROR when `error`.
    fn trace(id: TraceId, n: u64, error: bool) -> Vec<SpanRecord> {
        let spans = (1..=n)
            .map(|i| {
                let mut s = span_in(id, i, u64::from(i > 1), "op", 1_000, 2_000);
                if error && i == n {
                    s.status = Some(Status {
                        message: "failed".into(),
                        code: status::StatusCode::Error as i32,
                    });
                }
                s
            })
            .collect();
        let body = bytes::Bytes::from(request("svc", spans).encode_to_vec());
        scan_export_request(&body)
            .expect("valid")
            .spans
            .into_iter()
            .map(|(_, s)| s)
            .collect()
    }

    fn bytes(t: &[SpanRecord]) -> u64 {
        t.iter().map(|s| s.raw.len() as u64).sum()
    }

    #[test]
    fn shadow_metrics_match_the_hand_count() {
        let runtime = PluginRuntime::new(RuntimeSettings {
            cache_dir: Some(
                Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/plugin-test-cache"),
            ),
            default_deadline: Duration::from_secs(2),
            init_deadline: Duration::from_secs(20),
            ..Default::default()
        })
        .expect("runtime");
        let rule = |name: &str, sampler, shadow| Rule {
            name: name.into(),
            sampler,
            shadow,
        };
        // Live: keep traces of 3+ spans, drop the rest (default). Shadows, interleaved on purpose:
        // `errors` keeps error traces (abstains otherwise), `singles` drops 0..=1-span traces (abstains
        // otherwise), `broken` always fails.
        let policy = Policy {
            rules: vec![
                rule(
                    "errors",
                    wasm(&runtime, "errors", "keep-errors", "{}"),
                    true,
                ),
                rule(
                    "big",
                    wasm(&runtime, "big", "span-count", r#"{"min": 3}"#),
                    false,
                ),
                rule(
                    "singles",
                    wasm(
                        &runtime,
                        "singles",
                        "span-count",
                        r#"{"max": 1, "action": "drop"}"#,
                    ),
                    true,
                ),
                rule("broken", Arc::new(Broken), true),
            ],
            default: DefaultDecision::Drop,
            on_sampler_failure: SamplerFailurePolicy::Keep,
            predicates: Default::default(),
            redactors: crate::redact::Redactors::none(),
        };
        //        spans error | live      | errors         | singles       | broken
        // t1     1     no    | drop      | abstain        | drop, agree   | failure
        // t2     1     yes   | drop      | keep, disagree | drop, agree   | failure
        // t3     3     no    | keep big  | abstain        | abstain       | failure
        // t4     3     yes   | keep big  | keep, agree    | abstain       | failure
        // t5     2     no    | drop      | abstain        | abstain       | failure
        let traces = [
            trace(1, 1, false),
            trace(2, 1, true),
            trace(3, 3, false),
            trace(4, 3, true),
            trace(5, 2, false),
        ];
        let m = Metrics::new();
        let mut live = Vec::new();
        for (i, t) in traces.iter().enumerate() {
            let d = policy.decide(i as u128 + 1, t, &m);
            policy.evaluate_shadows(i as u128 + 1, t, &d, &m);
            live.push(d.keep);
        }
        // Shadow rules (even a failing one placed first) never change the live decision.
        assert_eq!(live, [false, false, true, true, false]);

        let decisions = |rule: &str, decision| {
            m.shadow_decisions
                .get_or_create(&ShadowLabels {
                    rule: rule.into(),
                    decision,
                })
                .get()
        };
        let shadow_bytes = |rule: &str, decision| {
            m.shadow_bytes
                .get_or_create(&ShadowLabels {
                    rule: rule.into(),
                    decision,
                })
                .get()
        };
        let agreement = |rule: &str, outcome| {
            m.shadow_agreement
                .get_or_create(&ShadowAgreementLabels {
                    rule: rule.into(),
                    outcome,
                })
                .get()
        };
        let b: Vec<u64> = traces.iter().map(|t| bytes(t)).collect();

        assert_eq!(decisions("errors", "keep"), 2);
        assert_eq!(decisions("errors", "drop"), 0);
        assert_eq!(decisions("errors", "abstain"), 3);
        assert_eq!(agreement("errors", "agree"), 1);
        assert_eq!(agreement("errors", "disagree"), 1);
        assert_eq!(agreement("errors", "abstain"), 3);
        assert_eq!(shadow_bytes("errors", "keep"), b[1] + b[3]);
        assert_eq!(shadow_bytes("errors", "abstain"), b[0] + b[2] + b[4]);

        assert_eq!(decisions("singles", "drop"), 2);
        assert_eq!(decisions("singles", "abstain"), 3);
        assert_eq!(agreement("singles", "agree"), 2);
        assert_eq!(agreement("singles", "disagree"), 0);
        assert_eq!(shadow_bytes("singles", "drop"), b[0] + b[1]);

        assert_eq!(decisions("broken", "failure"), 5);
        assert_eq!(agreement("broken", "failure"), 5);
        assert_eq!(shadow_bytes("broken", "failure"), b.iter().sum::<u64>());

        // The live rule is not counted as a shadow; the text exposition has the documented names.
        assert_eq!(decisions("big", "keep"), 0);
        let text = m.encode();
        for needle in [
            r#"tailgate_shadow_decisions_total{rule="errors",decision="keep"} 2"#,
            r#"tailgate_shadow_agreement_total{rule="errors",outcome="disagree"} 1"#,
            r#"tailgate_shadow_bytes_total{rule="singles",decision="drop"}"#,
        ] {
            assert!(text.contains(needle), "{needle} not in:\n{text}");
        }
    }
}
