//! A sampler's answer, whatever a hostile plugin returns: the host's check of the raw decision, the
//! policy's first-match evaluation with failure policies, and the annotation of kept spans
//! (`tailgate.rule`, the OpenTelemetry threshold in an arbitrary incoming `tracestate`).
#![no_main]

use arbitrary::Arbitrary;
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value;
use prost::Message;
use std::sync::{Arc, OnceLock};
use tailgate::config::{DefaultDecision, SamplerFailurePolicy};
use tailgate::decisions::{Applied, KeepInfo};
use tailgate::fuzzing::{WitDecision, WitVerdict, annotate_kept, check_sampler_decision};
use tailgate::metrics::Metrics;
use tailgate::otlp::{ExportBuilder, SpanRecord, TraceId};
use tailgate::pipeline::{Policy, Rule, Sampler, SamplerFailure, SamplerVerdict, Verdict};
use tailgate::redact::Redactors;
use tailgate_fuzz::trace::{TRACE_ID, TraceSpec};

#[derive(Arbitrary, Debug)]
struct RuleSpec {
    verdict: u8,
    probability: Option<f64>,
    reason: Option<String>,
    fails: bool,
    shadow: bool,
}

#[derive(Arbitrary, Debug)]
struct Input {
    rules: Vec<RuleSpec>,
    default_keep: bool,
    on_failure: u8,
    trace_state: String,
    trace: TraceSpec,
}

struct Canned(Result<SamplerVerdict, SamplerFailure>);

impl Sampler for Canned {
    fn sample(&self, _: TraceId, _: &[SpanRecord]) -> Result<SamplerVerdict, SamplerFailure> {
        self.0.clone()
    }
}

fn metrics() -> &'static Arc<Metrics> {
    static M: OnceLock<Arc<Metrics>> = OnceLock::new();
    M.get_or_init(Metrics::new)
}

/// The `th` of the first `ot` entry, as the specification parses it.
fn threshold(tracestate: &str) -> Option<u64> {
    let ot = tracestate
        .split(',')
        .map(str::trim)
        .find_map(|e| e.strip_prefix("ot="))?;
    let th = ot.split(';').find_map(|s| s.strip_prefix("th:"))?;
    if th.is_empty() || th.len() > 14 || !th.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    Some(u64::from_str_radix(th, 16).ok()? << (4 * (14 - th.len())))
}

fuzz_target!(|input: Input| {
    let mut rules = Vec::new();
    // The decision the policy must reach, computed independently.
    let on_failure = match input.on_failure % 3 {
        0 => SamplerFailurePolicy::Keep,
        1 => SamplerFailurePolicy::Abstain,
        _ => SamplerFailurePolicy::Drop,
    };
    let mut expected: Option<(bool, String, Option<f64>)> = None;
    for (i, spec) in input.rules.iter().take(8).enumerate() {
        let raw = WitDecision {
            verdict: match spec.verdict % 3 {
                0 => WitVerdict::Keep,
                1 => WitVerdict::Drop,
                _ => WitVerdict::Abstain,
            },
            probability: spec.probability,
            reason: spec.reason.clone(),
        };
        let checked = check_sampler_decision(raw);
        let valid_p = spec.probability.is_none_or(|p| p > 0.0 && p <= 1.0);
        assert_eq!(
            checked.is_ok(),
            valid_p,
            "probability check: {:?}",
            spec.probability
        );
        let answer = match checked {
            Ok(v) => {
                let reason = v.reason.clone().unwrap_or_default();
                let original = spec.reason.clone().unwrap_or_default();
                assert!(reason.len() <= 128 && original.starts_with(&reason));
                assert!(original.len() <= 128 || reason.len() + 4 > 128);
                if spec.fails {
                    Err(SamplerFailure {
                        kind: "trap",
                        message: "fuzz".into(),
                    })
                } else {
                    Ok(v)
                }
            }
            Err(m) => Err(SamplerFailure {
                kind: "bad_result",
                message: m,
            }),
        };
        let name = format!("rule{i}");
        if !spec.shadow && expected.is_none() {
            expected = match &answer {
                Ok(v) if v.verdict == Verdict::Abstain => None,
                Ok(v) => Some((v.verdict == Verdict::Keep, name.clone(), v.probability)),
                Err(_) if on_failure == SamplerFailurePolicy::Abstain => None,
                Err(_) => Some((
                    on_failure == SamplerFailurePolicy::Keep,
                    format!("{name}:failure"),
                    None,
                )),
            };
        }
        rules.push(Rule {
            name: name.into(),
            sampler: Arc::new(Canned(answer)),
            shadow: spec.shadow,
        });
    }
    let (keep, rule, probability) =
        expected.unwrap_or((input.default_keep, "default".into(), Some(1.0)));
    let policy = Policy {
        rules,
        default: if input.default_keep {
            DefaultDecision::Keep
        } else {
            DefaultDecision::Drop
        },
        on_sampler_failure: on_failure,
        predicates: Default::default(),
        redactors: Redactors::none(),
    };
    let spans = input.trace.spans(&input.trace_state);
    let decision = policy.decide(TRACE_ID, &spans, metrics());
    policy.evaluate_shadows(TRACE_ID, &spans, &decision, metrics());
    assert_eq!(
        (decision.keep, &*decision.rule),
        (keep, rule.as_str()),
        "first matching rule"
    );
    assert_eq!(
        decision.probability.map(f64::to_bits),
        probability.map(f64::to_bits)
    );
    if !decision.keep || spans.is_empty() {
        return;
    }

    // A stateless sampler's keep: deterministic without a probability (or with 1), consistent with one.
    let applied = if decision.rule.ends_with(":failure") || &*decision.rule == "default" {
        Applied::Everything
    } else {
        Applied::of(decision.probability, false)
    };
    assert_eq!(decision.applied, applied);
    let info = KeepInfo {
        rule: decision.rule.clone(),
        applied,
        rescued_by: None,
    };
    let kept = annotate_kept(spans.clone(), &info);
    assert_eq!(kept.spans.len(), spans.len());
    let mut b = ExportBuilder::new();
    for (i, s) in kept.spans.iter().enumerate() {
        b.push(s, kept.patch_of(i).clone());
    }
    let out =
        ExportTraceServiceRequest::decode(b.finish() as Bytes).expect("annotated spans decode");
    let old_th = threshold(&input.trace_state);
    for s in out
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| &s.spans)
    {
        let last = s.attributes.last().expect("tailgate.rule appended");
        assert_eq!(last.key, "tailgate.rule");
        assert_eq!(
            last.value.as_ref().and_then(|v| v.value.as_ref()),
            Some(&any_value::Value::StringValue(rule.clone()))
        );
        let new_th = threshold(&s.trace_state);
        match info.applied {
            // A deterministic keep: the tracestate leaves as it arrived.
            Applied::Everything => assert_eq!(s.trace_state, input.trace_state),
            // Unknown probability: any threshold is erased.
            Applied::Unknown => assert_eq!(
                new_th, None,
                "{:?} -> {:?}",
                input.trace_state, s.trace_state
            ),
            // A threshold is only ever raised.
            Applied::Consistent(_) | Applied::Share(_) => {
                if let Some(old) = old_th {
                    assert!(
                        new_th.is_some_and(|t| t >= old),
                        "{:?} -> {:?}",
                        input.trace_state,
                        s.trace_state
                    );
                }
            }
        }
    }
});
