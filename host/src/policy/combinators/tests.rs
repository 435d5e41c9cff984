use super::*;
use crate::config::{Config, DefaultDecision, SamplerFailurePolicy};
use crate::metrics::Metrics;
use crate::pipeline::Policy;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A part answering a fixed verdict and counting its calls.
struct Fixed {
    answer: Result<SamplerVerdict, SamplerFailure>,
    stateful: bool,
    calls: AtomicUsize,
}

impl Sampler for Fixed {
    fn sample(&self, _: TraceId, _: &[SpanRecord]) -> Result<SamplerVerdict, SamplerFailure> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.answer.clone()
    }
    fn stateful(&self) -> bool {
        self.stateful
    }
}

fn part(v: Verdict, p: Option<f64>, stateful: bool) -> Arc<Fixed> {
    Arc::new(Fixed {
        answer: Ok(SamplerVerdict {
            verdict: v,
            probability: p,
            reason: None,
        }),
        stateful,
        calls: AtomicUsize::new(0),
    })
}

fn keeps() -> Arc<Fixed> {
    part(Verdict::Keep, None, false)
}
fn abstains() -> Arc<Fixed> {
    part(Verdict::Abstain, None, false)
}
fn drops() -> Arc<Fixed> {
    part(Verdict::Drop, None, false)
}

fn calls(f: &Fixed) -> usize {
    f.calls.load(Ordering::Relaxed)
}

fn combined(kind: Combinator, parts: &[&Arc<Fixed>]) -> Combined {
    Combined::new(
        kind,
        parts
            .iter()
            .enumerate()
            .map(|(i, p)| Rule {
                name: format!("p{i}").into(),
                sampler: (*p).clone(),
                shadow: false,
            })
            .collect(),
    )
}

fn judge(s: &dyn Sampler) -> Judged {
    s.judge(7, &[]).expect("no part fails")
}

#[test]
fn all_keeps_only_when_every_part_keeps_and_stops_at_the_first_no() {
    let (a, b) = (keeps(), keeps());
    let j = judge(&combined(Combinator::All, &[&a, &b]));
    assert_eq!(
        (j.verdict.verdict, j.applied),
        (Verdict::Keep, Applied::Everything)
    );
    for no in [abstains(), drops()] {
        let (first, last) = (keeps(), keeps());
        let j = judge(&combined(Combinator::All, &[&first, &no, &last]));
        assert_eq!(j.verdict.verdict, Verdict::Abstain);
        assert_eq!((calls(&first), calls(&no), calls(&last)), (1, 1, 0));
    }
}

#[test]
fn any_keeps_when_a_part_keeps_and_stops_at_a_certain_keep() {
    let (a, b, c) = (abstains(), keeps(), keeps());
    let j = judge(&combined(Combinator::Any, &[&a, &b, &c]));
    assert_eq!(
        (j.verdict.verdict, j.applied),
        (Verdict::Keep, Applied::Everything)
    );
    assert_eq!((calls(&a), calls(&b), calls(&c)), (1, 1, 0));
    assert_eq!(j.verdict.reason.as_deref(), Some("any: `p1` kept"));
    let (a, b) = (drops(), abstains());
    let j = judge(&combined(Combinator::Any, &[&a, &b]));
    assert_eq!(j.verdict.verdict, Verdict::Abstain);
}

#[test]
fn not_inverts_and_is_unknown_over_chance() {
    let j = judge(&combined(Combinator::Not, &[&keeps()]));
    assert_eq!(j.verdict.verdict, Verdict::Abstain);
    for no in [abstains(), drops()] {
        let j = judge(&combined(Combinator::Not, &[&no]));
        assert_eq!(
            (j.verdict.verdict, j.applied),
            (Verdict::Keep, Applied::Everything)
        );
    }
    // "Not sampled by a 10 % sampler" and "not kept by a limiter" are no consistent samples.
    for no in [
        part(Verdict::Drop, Some(0.1), false),
        part(Verdict::Abstain, None, true),
    ] {
        let j = judge(&combined(Combinator::Not, &[&no]));
        assert_eq!(
            (j.verdict.verdict, j.applied, j.verdict.probability),
            (Verdict::Keep, Applied::Unknown, None)
        );
    }
}

#[test]
fn probabilities_combine_as_the_thresholds_do() {
    let (p10, p50) = (
        part(Verdict::Keep, Some(0.1), false),
        part(Verdict::Keep, Some(0.5), false),
    );
    // all: kept iff the randomness passes both thresholds -> the smaller probability.
    let j = judge(&combined(Combinator::All, &[&p50, &keeps(), &p10]));
    assert_eq!(j.applied, Applied::Consistent(0.1));
    assert_eq!(j.verdict.probability, Some(0.1));
    // any: the larger, and the remaining stateless parts are asked to find it.
    let j = judge(&combined(Combinator::Any, &[&p10, &p50]));
    assert_eq!(j.applied, Applied::Consistent(0.5));
    assert_eq!(j.verdict.reason.as_deref(), Some("any: `p1` kept"));
    // any: a certain keep after a consistent one makes it certain.
    let j = judge(&combined(Combinator::Any, &[&p10, &keeps()]));
    assert_eq!(j.applied, Applied::Everything);
    // all over limiters: each saw only what the parts before kept -> shares multiply.
    let (s1, s2) = (
        part(Verdict::Keep, Some(0.5), true),
        part(Verdict::Keep, Some(0.2), true),
    );
    let j = judge(&combined(Combinator::All, &[&s1, &keeps(), &s2]));
    match j.applied {
        Applied::Share(p) => assert!((p - 0.1).abs() < 1e-12, "{p}"),
        other => panic!("{other:?}"),
    }
    // A consistent part with a share: no single threshold says it.
    let j = judge(&combined(Combinator::All, &[&p10, &s1]));
    assert_eq!(j.applied, Applied::Unknown);
    assert!(!Combined::new(Combinator::All, vec![]).stateful());
    assert!(combined(Combinator::Any, &[&keeps(), &s1]).stateful());
}

#[test]
fn any_spends_no_limiter_budget_on_a_trace_it_already_keeps() {
    let (p10, limiter, p50) = (
        part(Verdict::Keep, Some(0.1), false),
        part(Verdict::Keep, Some(0.5), true),
        part(Verdict::Keep, Some(0.5), false),
    );
    let j = judge(&combined(Combinator::Any, &[&p10, &limiter, &p50]));
    assert_eq!(calls(&limiter), 0);
    assert_eq!(j.applied, Applied::Consistent(0.5));
    // Kept by the limiter first: its share stands, nothing after it is asked.
    let (limiter, last) = (part(Verdict::Keep, Some(0.5), true), keeps());
    let j = judge(&combined(Combinator::Any, &[&limiter, &last]));
    assert_eq!((j.applied, calls(&last)), (Applied::Share(0.5), 0));
}

#[test]
fn a_part_failure_is_the_combinator_failure_named_after_the_part() {
    let broken = Arc::new(Fixed {
        answer: Err(SamplerFailure {
            kind: "trap",
            message: "unreachable".into(),
        }),
        stateful: false,
        calls: AtomicUsize::new(0),
    });
    let err = combined(Combinator::All, &[&keeps(), &broken])
        .judge(1, &[])
        .expect_err("fails");
    assert_eq!(err.kind, "trap");
    assert_eq!(err.message, "part `p1`: unreachable");
    // The policy's failure policy applies to the rule.
    let policy = Policy {
        rules: vec![Rule {
            name: "both".into(),
            sampler: Arc::new(combined(Combinator::All, &[&keeps(), &broken])),
            shadow: false,
        }],
        on_sampler_failure: SamplerFailurePolicy::Drop,
        ..Policy::with_default(DefaultDecision::Keep)
    };
    let d = policy.decide(1, &[], &Metrics::new());
    assert_eq!((d.keep, &*d.rule), (false, "both:failure"));
}

#[test]
fn action_drop_drops_what_its_sampler_keeps() {
    let drop_health = Dropping(Rule {
        name: "health".into(),
        sampler: keeps(),
        shadow: false,
    });
    let policy = Policy {
        rules: vec![
            Rule {
                name: "health".into(),
                sampler: Arc::new(drop_health),
                shadow: false,
            },
            Rule {
                name: "rest".into(),
                sampler: keeps(),
                shadow: false,
            },
        ],
        ..Policy::with_default(DefaultDecision::Keep)
    };
    let d = policy.decide(1, &[], &Metrics::new());
    assert_eq!((d.keep, &*d.rule), (false, "health"));
    // What it does not match, it leaves to the rules after it (a drop verdict of its own included).
    for inner in [abstains(), drops()] {
        let j = judge(&Dropping(Rule {
            name: "x".into(),
            sampler: inner,
            shadow: false,
        }));
        assert_eq!(j.verdict.verdict, Verdict::Abstain);
    }
}

// A generous call deadline: the machine running the tests is shared, and a timing is no assertion here.
const POLICY: &str = r#"
plugins:
  call_timeout: 10s
policy:
  rules:
    - name: drop-health
      action: drop
      plugin: builtin:attribute-match
      config: {conditions: [{key: http.route, equals: /healthz}]}
    - name: checkout-errors
      all:
        - plugin: builtin:keep-errors
        - name: checkout
          plugin: builtin:attribute-match
          config: {conditions: [{key: service.name, on: resource, equals: checkout}]}
    - name: not-checkout
      not:
        plugin: builtin:attribute-match
        config: {conditions: [{key: service.name, on: resource, equals: checkout}]}
"#;

#[test]
fn parts_get_default_names_and_mistakes_are_named() {
    let c = Config::parse(POLICY, "t").expect("valid");
    let names: Vec<&str> = c.policy.rules[1]
        .leaves()
        .into_iter()
        .map(|r| r.name.as_str())
        .collect();
    assert_eq!(names, ["checkout-errors/all[0]", "checkout"]);
    assert_eq!(
        c.policy.rules[2].leaves()[0].name,
        "not-checkout/not".to_owned()
    );
    let bad = |yaml: &str| Config::parse(yaml, "t").expect_err("invalid").to_string();
    let e = bad("policy:\n  rules:\n    - {name: x}\n");
    assert!(
        e.contains("policy.rules[0]: set one of `plugin`, `all`, `any` or `not`"),
        "{e}"
    );
    let e = bad("policy:\n  rules:\n    - {name: x, plugin: a.wasm, all: [{plugin: b.wasm}]}\n");
    assert!(e.contains("set only one of"), "{e}");
    let e = bad("policy:\n  rules:\n    - {name: x, all: [{plugin: b.wasm, shadow: true}]}\n");
    assert!(
        e.contains("policy.rules[0].all[0]: `shadow` is for whole rules"),
        "{e}"
    );
    let e = bad("policy:\n  rules:\n    - {name: x, any: [{plugin: b.wasm, action: drop}]}\n");
    assert!(
        e.contains("policy.rules[0].any[0]: `action` is for sampling rules"),
        "{e}"
    );
    let e = bad("policy:\n  rules:\n    - {name: x, not: {plugin: b.wasm}, config: {a: 1}}\n");
    assert!(e.contains("`config` belongs on the plugin parts"), "{e}");
    let e = bad("policy:\n  redactors:\n    - {name: x, not: {plugin: b.wasm}}\n");
    assert!(e.contains("a redactor is a plugin"), "{e}");
    let e = bad(
        "policy:\n  rules:\n    - {name: x, plugin: a.wasm}\n    - {name: y, all: [{name: x, plugin: b.wasm}]}\n",
    );
    assert!(
        e.contains("policy.rules[1].all[0]: name `x` is used twice"),
        "{e}"
    );
}

#[test]
fn a_policy_of_combinators_over_standard_plugins_decides() {
    use crate::otlp::scan_export_request;
    use crate::testing::{kv_str, request, span_in};
    use prost::Message;
    let config = Config::parse(POLICY, "t").expect("valid");
    let policy = crate::policy::load(&config).expect("loads the built-in plugins");
    let decide = |service: &str, route: &str, error: bool| {
        let mut s = span_in(9, 1, 0, "GET", 1_000, 2_000);
        s.attributes.push(kv_str("http.route", route));
        if error {
            s.status = Some(opentelemetry_proto::tonic::trace::v1::Status {
                code: 2,
                message: String::new(),
            });
        }
        let body = bytes::Bytes::from(request(service, vec![s]).encode_to_vec());
        let scanned = scan_export_request(&body).expect("valid");
        let spans: Vec<SpanRecord> = scanned.spans.into_iter().map(|(_, s)| s).collect();
        let d = policy.decide(9, &spans, &Metrics::new());
        (d.keep, d.rule.to_string())
    };
    assert_eq!(
        decide("checkout", "/healthz", true),
        (false, "drop-health".into())
    );
    assert_eq!(
        decide("checkout", "/pay", true),
        (true, "checkout-errors".into())
    );
    assert_eq!(decide("checkout", "/pay", false), (false, "default".into()));
    assert_eq!(decide("cart", "/pay", false), (true, "not-checkout".into()));
    // Every plugin part is listed for the status page, under its own name.
    let listed: Vec<String> = policy
        .sampler_plugins()
        .iter()
        .map(|(r, _)| r.name.to_string())
        .collect();
    assert_eq!(
        listed,
        [
            "drop-health",
            "checkout-errors/all[0]",
            "checkout",
            "not-checkout/not"
        ]
    );
}

#[test]
fn the_guides_combinator_example_is_a_valid_config() {
    let guide = include_str!("../../../../docs/plugins.md");
    let section = guide
        .split("### Combinators")
        .nth(1)
        .expect("docs/plugins.md has the combinators section");
    let yaml = section
        .split("```yaml\n")
        .nth(1)
        .and_then(|s| s.split("```").next())
        .expect("with a YAML example");
    let c = Config::parse(yaml, "docs/plugins.md").expect("the example parses and validates");
    let kinds: Vec<Option<Combinator>> = c
        .policy
        .rules
        .iter()
        .map(|r| r.combinator().map(|(k, _)| k))
        .collect();
    assert_eq!(
        kinds,
        [
            None,
            Some(Combinator::All),
            Some(Combinator::Any),
            Some(Combinator::All)
        ]
    );
    assert_eq!(c.policy.rules[0].action, crate::config::RuleAction::Drop);
}

/// Over consistent samplers, `any` keeps with the largest probability and `all` with the smallest, and
/// each keep reports it: the adjusted counts (1/p per kept trace) add up to the traffic, within four
/// standard deviations. Trace ids come from a fixed sequence, so the result cannot change between runs.
#[test]
fn adjusted_counts_through_any_and_all_over_probabilistic_plugins_stay_true() {
    use crate::otlp::scan_export_request;
    use crate::testing::{request, span_in};
    use prost::Message;
    let yaml = r#"
plugins: {call_timeout: 10s}
policy:
  rules:
    - name: either
      any:
        - {plugin: builtin:probabilistic, config: {probability: 0.1, otherwise: abstain}}
        - {plugin: builtin:probabilistic, config: {probability: 0.3, otherwise: abstain}}
"#;
    let both = yaml
        .replace("either", "both")
        .replace("any:", "all:")
        .replace("0.1", "0.5")
        .replace("0.3", "0.2");
    for (text, p) in [(yaml.to_owned(), 0.3), (both, 0.2)] {
        let config = Config::parse(&text, "t").expect("valid");
        let policy = crate::policy::load(&config).expect("loads");
        let mut state = 0x5eed_u64;
        let (n, mut kept, mut adjusted) = (3_000u32, 0u32, 0.0);
        for _ in 0..n {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            let id = u128::from(z ^ (z >> 31)) | (1 << 100);
            let body = bytes::Bytes::from(
                request("svc", vec![span_in(id, 1, 0, "GET", 1, 2)]).encode_to_vec(),
            );
            let spans: Vec<SpanRecord> = scan_export_request(&body)
                .expect("valid")
                .spans
                .into_iter()
                .map(|(_, s)| s)
                .collect();
            let d = policy.decide(id, &spans, &Metrics::new());
            if d.keep {
                kept += 1;
                assert_eq!(d.applied, Applied::Consistent(p));
                adjusted += 1.0 / d.probability.expect("reported");
            }
        }
        let sd = (f64::from(n) * (1.0 - p) / p).sqrt();
        assert!(
            (adjusted - f64::from(n)).abs() < 4.0 * sd,
            "p {p}: {kept} kept, adjusted {adjusted:.0} of {n}"
        );
    }
}
