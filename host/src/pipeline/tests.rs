use super::*;
use crate::config::DefaultDecision;
use crate::otlp::scan_export_request;
use crate::testing::sample_request;
use prost::Message;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A test sampler answering a fixed verdict and counting its calls.
struct Fixed {
    answer: Result<RuleVerdict, SamplerFailure>,
    calls: AtomicUsize,
}

impl Sampler for Fixed {
    fn sample(&self, _: TraceId, _: &[SpanRecord]) -> Result<RuleVerdict, SamplerFailure> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.answer.clone()
    }
}

fn fixed(v: Verdict, p: Option<f64>) -> Arc<Fixed> {
    Arc::new(Fixed { answer: Ok(RuleVerdict { verdict: v, probability: p, reason: None }), calls: AtomicUsize::new(0) })
}

fn failing() -> Arc<Fixed> {
    Arc::new(Fixed {
        answer: Err(SamplerFailure { kind: "trap", message: "unreachable".into() }),
        calls: AtomicUsize::new(0),
    })
}

fn rule(name: &str, s: Arc<Fixed>) -> Rule {
    Rule { name: name.into(), sampler: s, shadow: false }
}

fn spans() -> Vec<SpanRecord> {
    let body = bytes::Bytes::from(sample_request().encode_to_vec());
    scan_export_request(&body).expect("valid").spans.into_iter().map(|(_, s)| s).collect()
}

#[test]
fn first_keep_or_drop_wins_in_order() {
    let (a, b, c) = (fixed(Verdict::Abstain, None), fixed(Verdict::Drop, None), fixed(Verdict::Keep, Some(1.0)));
    let policy = Policy {
        rules: vec![rule("a", a.clone()), rule("b", b.clone()), rule("c", c.clone())],
        default: DefaultDecision::Keep,
        on_sampler_failure: SamplerFailurePolicy::Keep,
    };
    let d = policy.decide(1, &spans(), &Metrics::new());
    assert_eq!(d, Decision { keep: false, rule: "b".into(), probability: None });
    assert_eq!(c.calls.load(Ordering::Relaxed), 0, "rules after the deciding one are not called");
}

#[test]
fn default_applies_when_all_abstain() {
    let policy = Policy {
        rules: vec![rule("a", fixed(Verdict::Abstain, None))],
        default: DefaultDecision::Drop,
        on_sampler_failure: SamplerFailurePolicy::Keep,
    };
    let d = policy.decide(1, &spans(), &Metrics::new());
    assert_eq!((d.keep, &*d.rule), (false, "default"));
}

#[test]
fn shadow_rules_do_not_decide() {
    let s = fixed(Verdict::Drop, None);
    let policy = Policy {
        rules: vec![Rule { name: "candidate".into(), sampler: s, shadow: true }],
        default: DefaultDecision::Keep,
        on_sampler_failure: SamplerFailurePolicy::Keep,
    };
    assert!(policy.decide(1, &spans(), &Metrics::new()).keep);
}

#[test]
fn sampler_failure_follows_the_failure_policy_and_is_counted() {
    let m = Metrics::new();
    for (on_failure, keep, rule_name) in [
        (SamplerFailurePolicy::Keep, true, "broken:failure"),
        (SamplerFailurePolicy::Drop, false, "broken:failure"),
        (SamplerFailurePolicy::Abstain, false, "default"),
    ] {
        let policy = Policy {
            rules: vec![rule("broken", failing())],
            default: DefaultDecision::Drop,
            on_sampler_failure: on_failure,
        };
        let d = policy.decide(1, &spans(), &m);
        assert_eq!((d.keep, &*d.rule), (keep, rule_name));
    }
    let text = m.encode();
    assert!(text.contains(r#"tailgate_plugin_failures_total{plugin="broken",kind="trap"} 3"#), "{text}");
}
