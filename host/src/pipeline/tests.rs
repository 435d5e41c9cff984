use super::*;
use crate::config::DefaultDecision;
use crate::otlp::scan_export_request;
use crate::testing::sample_request;
use prost::Message;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A test sampler answering a fixed verdict and counting its calls.
struct Fixed {
    answer: Result<SamplerVerdict, SamplerFailure>,
    calls: AtomicUsize,
}

impl Sampler for Fixed {
    fn sample(&self, _: TraceId, _: &[SpanRecord]) -> Result<SamplerVerdict, SamplerFailure> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.answer.clone()
    }
}

fn fixed(v: Verdict, p: Option<f64>) -> Arc<Fixed> {
    Arc::new(Fixed {
        answer: Ok(SamplerVerdict {
            verdict: v,
            probability: p,
            reason: None,
        }),
        calls: AtomicUsize::new(0),
    })
}

fn failing() -> Arc<Fixed> {
    Arc::new(Fixed {
        answer: Err(SamplerFailure {
            kind: "trap",
            message: "unreachable".into(),
        }),
        calls: AtomicUsize::new(0),
    })
}

fn rule(name: &str, s: Arc<Fixed>) -> Rule {
    Rule {
        name: name.into(),
        sampler: s,
        shadow: false,
    }
}

fn spans() -> Vec<SpanRecord> {
    let body = bytes::Bytes::from(sample_request().encode_to_vec());
    scan_export_request(&body)
        .expect("valid")
        .spans
        .into_iter()
        .map(|(_, s)| s)
        .collect()
}

#[test]
fn first_keep_or_drop_wins_in_order() {
    let (a, b, c) = (
        fixed(Verdict::Abstain, None),
        fixed(Verdict::Drop, None),
        fixed(Verdict::Keep, Some(1.0)),
    );
    let policy = Policy {
        rules: vec![
            rule("a", a.clone()),
            rule("b", b.clone()),
            rule("c", c.clone()),
        ],
        default: DefaultDecision::Keep,
        on_sampler_failure: SamplerFailurePolicy::Keep,
        predicates: Default::default(),
        redactors: Default::default(),
    };
    let d = policy.decide(1, &spans(), &Metrics::new());
    assert_eq!(
        d,
        Decision {
            keep: false,
            rule: "b".into(),
            probability: None,
            applied: Applied::Everything,
        }
    );
    assert_eq!(
        c.calls.load(Ordering::Relaxed),
        0,
        "rules after the deciding one are not called"
    );
}

#[test]
fn default_applies_when_all_abstain() {
    let policy = Policy {
        rules: vec![rule("a", fixed(Verdict::Abstain, None))],
        default: DefaultDecision::Drop,
        on_sampler_failure: SamplerFailurePolicy::Keep,
        predicates: Default::default(),
        redactors: Default::default(),
    };
    let d = policy.decide(1, &spans(), &Metrics::new());
    assert_eq!((d.keep, &*d.rule), (false, "default"));
}

#[test]
fn shadow_rules_do_not_decide() {
    let s = fixed(Verdict::Drop, None);
    let policy = Policy {
        rules: vec![Rule {
            name: "candidate".into(),
            sampler: s,
            shadow: true,
        }],
        default: DefaultDecision::Keep,
        on_sampler_failure: SamplerFailurePolicy::Keep,
        predicates: Default::default(),
        redactors: Default::default(),
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
            predicates: Default::default(),
            redactors: Default::default(),
        };
        let d = policy.decide(1, &spans(), &m);
        assert_eq!((d.keep, &*d.rule), (keep, rule_name));
    }
    let text = m.encode();
    assert!(
        text.contains(r#"tailgate_plugin_failures_total{plugin="broken",kind="trap"} 3"#),
        "{text}"
    );
}

mod workers {
    use super::*;
    use crate::config::{ExportProtocol, OtlpExporter};
    use crate::decisions::DecisionCache;
    use crate::export::Exporter;
    use crate::inbox::{DueTrace, LateSpans, Trigger};
    use crate::testing::{request, span_in};
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use std::time::Duration;

    /// Spans of trace `tid` with the given (span id, parent) pairs.
    fn trace_spans(tid: TraceId, ids: &[(u64, u64)]) -> Vec<SpanRecord> {
        let spans = ids
            .iter()
            .map(|&(id, p)| span_in(tid, id, p, "op", 1_000, 2_000))
            .collect();
        let body = bytes::Bytes::from(request("svc", spans).encode_to_vec());
        scan_export_request(&body)
            .expect("valid")
            .spans
            .into_iter()
            .map(|(_, s)| s)
            .collect()
    }

    fn due(tid: TraceId, spans: Vec<SpanRecord>) -> BufferOutput {
        let now = Instant::now();
        BufferOutput::Due(DueTrace {
            trace_id: tid,
            spans,
            acks: vec![],
            trigger: Trigger::Settle,
            first_seen: now,
            due_at: now,
            charge: Default::default(),
        })
    }

    fn late(tid: TraceId, spans: Vec<SpanRecord>) -> BufferOutput {
        BufferOutput::Late(LateSpans {
            trace_id: tid,
            spans,
            acks: vec![],
            charge: Default::default(),
        })
    }

    /// Runs the pipeline with `policy` over `items` into a file exporter; returns the exported requests.
    async fn run_pipeline(
        policy: Policy,
        items: Vec<BufferOutput>,
    ) -> (Vec<ExportTraceServiceRequest>, Arc<Metrics>) {
        run_pipeline_with(policy, items, false).await
    }

    /// [`run_pipeline`], with the due traces decided by an [`InlineDecider`] as the buffer's thread does
    /// (`plugins.decide_on_buffer_thread`) when `inline`.
    async fn run_pipeline_with(
        policy: Policy,
        items: Vec<BufferOutput>,
        inline: bool,
    ) -> (Vec<ExportTraceServiceRequest>, Arc<Metrics>) {
        run_pipeline_ring(policy, items, inline, None, |_, _| async {}).await
    }

    /// [`run_pipeline_with`] with the second-chance `ring`; `then` runs after the items are sent (with
    /// the inbox's rescuer, when there is a ring, and the metrics) and before the pipeline ends.
    async fn run_pipeline_ring<F: std::future::Future<Output = ()>>(
        policy: Policy,
        items: Vec<BufferOutput>,
        inline: bool,
        ring: Option<Arc<crate::rescue::Ring>>,
        then: impl FnOnce(Option<Rescuer>, Arc<Metrics>) -> F,
    ) -> (Vec<ExportTraceServiceRequest>, Arc<Metrics>) {
        let dir = std::env::temp_dir().join(format!(
            "tailgate-pipeline-test-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("out.jsonl");
        let metrics = Metrics::new();
        let cfg = OtlpExporter {
            protocol: ExportProtocol::File,
            endpoint: path.display().to_string(),
            ..OtlpExporter::default()
        };
        let (export, exporter) = Exporter::start(&cfg, metrics.clone()).expect("exporter");
        let ctx = PipelineContext {
            policy: Arc::new(ArcSwap::from_pointee(policy)),
            cache: Arc::new(DecisionCache::new(100, 100, Duration::from_secs(60))),
            export,
            metrics: metrics.clone(),
            ring: ring.clone(),
        };
        // The exporter's shutdown waits for every handle of it to go: the inbox holds the only one left.
        let (sender, done) = start(1, 16, ctx, inline).expect("threads");
        let rescuer = ring.map(|r| sender.rescuer(r));
        for i in items {
            assert!(sender.send(i).await, "worker alive");
        }
        then(rescuer, metrics.clone()).await;
        drop(sender);
        done.await.expect("workers finish");
        exporter.shutdown(Duration::from_secs(10)).await;
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let _ = std::fs::remove_dir_all(&dir);
        let reqs = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("OTLP/JSON line"))
            .collect();
        (reqs, metrics)
    }

    fn exported_span_ids(reqs: &[ExportTraceServiceRequest]) -> Vec<(Vec<u8>, String, String)> {
        let mut out = Vec::new();
        for r in reqs {
            for rs in &r.resource_spans {
                for ss in &rs.scope_spans {
                    for s in &ss.spans {
                        let rule = s
                            .attributes
                            .iter()
                            .find(|kv| kv.key == "tailgate.rule")
                            .and_then(|kv| kv.value.as_ref())
                            .and_then(|v| match &v.value {
                                Some(opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(s)) => {
                                    Some(s.clone())
                                }
                                _ => None,
                            })
                            .unwrap_or_default();
                        out.push((s.span_id.clone(), rule, s.trace_state.clone()));
                    }
                }
            }
        }
        out.sort();
        out
    }

    #[tokio::test]
    async fn late_spans_follow_the_decision_of_their_trace() {
        // Trace 1 is kept by rule `keep`, trace 2 dropped by rule `drop`: the policy asks each trace
        // via a sampler that keeps odd trace ids.
        struct Odd;
        impl Sampler for Odd {
            fn sample(
                &self,
                id: TraceId,
                _: &[SpanRecord],
            ) -> Result<SamplerVerdict, SamplerFailure> {
                let verdict = if id % 2 == 1 {
                    Verdict::Keep
                } else {
                    Verdict::Drop
                };
                Ok(SamplerVerdict {
                    verdict,
                    probability: Some(0.5),
                    reason: None,
                })
            }
        }
        let policy = || Policy {
            rules: vec![Rule {
                name: "odd".into(),
                sampler: Arc::new(Odd),
                shadow: false,
            }],
            default: DefaultDecision::Drop,
            on_sampler_failure: SamplerFailurePolicy::Keep,
            predicates: Default::default(),
            redactors: Default::default(),
        };
        for inline in [false, true] {
            late_spans_follow(policy(), inline).await;
        }
    }

    async fn late_spans_follow(policy: Policy, inline: bool) {
        let items = vec![
            due(1, trace_spans(1, &[(10, 0), (11, 10)])),
            due(2, trace_spans(2, &[(20, 0)])),
            late(1, trace_spans(1, &[(12, 10)])),
            late(2, trace_spans(2, &[(21, 20), (22, 20)])),
        ];
        let (reqs, metrics) = run_pipeline_with(policy, items, inline).await;
        let got = exported_span_ids(&reqs);
        let want: Vec<(Vec<u8>, String, String)> = [10u64, 11, 12]
            .iter()
            .map(|i| (i.to_be_bytes().to_vec(), "odd".into(), "ot=th:8".into()))
            .collect();
        assert_eq!(
            got, want,
            "the kept trace and its late span, annotated alike; nothing of the dropped one"
        );
        let text = metrics.encode();
        assert!(
            text.contains(r#"tailgate_late_spans_total{reason="kept"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"tailgate_late_spans_total{reason="dropped"} 2"#),
            "{text}"
        );
        assert!(
            text.contains("tailgate_spans_sampled_out_total 3"),
            "{text}"
        );
        assert!(text.contains("tailgate_spans_exported_total 3"), "{text}");
        assert!(
            text.contains("tailgate_decision_latency_seconds_count 2"),
            "both traces' decisions measured once (inline: {inline}): {text}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_inline_decision_pauses_inline_deciding() {
        // Keeps every trace; the first call takes longer than the inline budget (in real time, which
        // the budget is measured in; the pause is on the test's paused clock).
        struct SlowOnce(AtomicUsize);
        impl Sampler for SlowOnce {
            fn sample(
                &self,
                _: TraceId,
                _: &[SpanRecord],
            ) -> Result<SamplerVerdict, SamplerFailure> {
                if self.0.fetch_add(1, Ordering::Relaxed) == 0 {
                    std::thread::sleep(INLINE_DECISION_BUDGET * 3);
                }
                Ok(SamplerVerdict {
                    verdict: Verdict::Keep,
                    probability: None,
                    reason: None,
                })
            }
        }
        let policy = Policy {
            rules: vec![Rule {
                name: "slow".into(),
                sampler: Arc::new(SlowOnce(AtomicUsize::new(0))),
                shadow: false,
            }],
            ..Policy::with_default(DefaultDecision::Drop)
        };
        let out =
            std::env::temp_dir().join(format!("tailgate-inline-{}.jsonl", std::process::id()));
        let (export, _exporter) = crate::export::Exporter::start(
            &OtlpExporter {
                protocol: ExportProtocol::File,
                endpoint: out.display().to_string(),
                ..OtlpExporter::default()
            },
            Metrics::new(),
        )
        .expect("exporter");
        let cache = Arc::new(DecisionCache::new(100, 100, Duration::from_secs(60)));
        let decider = InlineDecider::new(PipelineContext {
            policy: Arc::new(ArcSwap::from_pointee(policy)),
            cache: cache.clone(),
            export,
            metrics: Metrics::new(),
            ring: None,
        });
        let t = |id| match due(id, trace_spans(id, &[(1, 0)])) {
            BufferOutput::Due(t) => t,
            other => panic!("expected a due trace, got {other:?}"),
        };
        // The slow decision stands (and is remembered); then due traces go to the workers undecided,
        // until the pause is over.
        assert!(matches!(decider.decide(t(1)), WorkItem::Decided(_)));
        assert!(cache.lookup(1, Instant::now()).is_some());
        assert!(matches!(decider.decide(t(2)), WorkItem::Due(_)));
        assert!(cache.lookup(2, Instant::now()).is_none());
        tokio::time::advance(INLINE_PAUSE).await;
        assert!(matches!(decider.decide(t(3)), WorkItem::Decided(_)));
        let _ = std::fs::remove_file(out);
    }

    #[tokio::test]
    async fn default_keep_passes_everything_through_with_the_default_rule() {
        let items = vec![due(5, trace_spans(5, &[(1, 0), (2, 1)]))];
        let (reqs, _) = run_pipeline(Policy::with_default(DefaultDecision::Keep), items).await;
        let got = exported_span_ids(&reqs);
        assert_eq!(got.len(), 2);
        assert!(
            got.iter()
                .all(|(_, rule, ts)| rule == "default" && ts.is_empty())
        );
    }

    #[tokio::test]
    async fn topology_counts_every_trace_even_when_most_are_sampled_out() {
        // Keep one trace in ten (by id), drop the rest: the RED metrics still see all of them.
        struct OneInTen;
        impl Sampler for OneInTen {
            fn sample(
                &self,
                id: TraceId,
                _: &[SpanRecord],
            ) -> Result<SamplerVerdict, SamplerFailure> {
                let verdict = if id.is_multiple_of(10) {
                    Verdict::Keep
                } else {
                    Verdict::Drop
                };
                Ok(SamplerVerdict {
                    verdict,
                    probability: None,
                    reason: None,
                })
            }
        }
        let policy = Policy {
            rules: vec![Rule {
                name: "one-in-ten".into(),
                sampler: Arc::new(OneInTen),
                shadow: false,
            }],
            default: DefaultDecision::Drop,
            on_sampler_failure: SamplerFailurePolicy::Keep,
            predicates: Default::default(),
            ..Policy::with_default(DefaultDecision::Drop)
        };
        let items = (1..=100u128)
            .map(|t| due(t, trace_spans(t, &[(1, 0), (2, 1)])))
            .collect();
        let (reqs, metrics) = run_pipeline_with(policy, items, true).await;
        assert_eq!(
            exported_span_ids(&reqs).len(),
            20,
            "10 traces of 2 spans kept"
        );
        let text = metrics.encode();
        assert!(
            text.contains(
                r#"tailgate_span_calls_total{service="svc",operation="op",span_kind="server"} 200"#
            ),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_slow_redaction_does_not_hold_up_the_decisions_behind_it() {
        use crate::plugin::{EditAction, FieldKind, FieldRef, PluginFailure, RedactionEdit};
        use crate::redact::{RedactionSettings, RedactorRule, Redactors, TraceRedactor};
        use std::sync::Mutex;
        use std::sync::mpsc::{Receiver, Sender, channel};

        // The sampler keeps every trace and reports each trace id it decides.
        struct Report(Mutex<Sender<TraceId>>);
        impl Sampler for Report {
            fn sample(
                &self,
                id: TraceId,
                _: &[SpanRecord],
            ) -> Result<SamplerVerdict, SamplerFailure> {
                let _ = self.0.lock().expect("lock").send(id);
                Ok(SamplerVerdict {
                    verdict: Verdict::Keep,
                    probability: None,
                    reason: None,
                })
            }
        }
        // The redactor renames span 0 of every trace; redacting trace 1 waits until trace 3 has been
        // decided. Run inline on the deciding worker (one worker here), trace 3 could not be decided
        // before trace 1's redaction finished, and the wait would give up.
        struct WaitFor3(Mutex<Receiver<TraceId>>);
        impl TraceRedactor for WaitFor3 {
            fn redact(
                &self,
                id: TraceId,
                spans: &[SpanRecord],
            ) -> Result<Vec<RedactionEdit>, PluginFailure> {
                if id == 1 {
                    let rx = self.0.lock().expect("lock");
                    let waited = loop {
                        match rx.recv_timeout(Duration::from_secs(60)) {
                            Ok(3) => break true,
                            Ok(_) => continue,
                            Err(_) => break false,
                        }
                    };
                    assert!(
                        waited,
                        "trace 3 was not decided while trace 1 was being redacted"
                    );
                }
                Ok(vec![RedactionEdit {
                    field: FieldRef {
                        kind: FieldKind::SpanName,
                        owner: 0,
                        item: 0,
                        attribute_index: 0,
                        key: String::new(),
                        is_string: true,
                        value_len: spans[0].name().len() as u32,
                    },
                    action: EditAction::Replace("redacted".into()),
                    reason: None,
                }])
            }
        }
        let (tx, rx) = channel();
        let policy = Policy {
            rules: vec![Rule {
                name: "all".into(),
                sampler: Arc::new(Report(Mutex::new(tx))),
                shadow: false,
            }],
            redactors: Redactors::new(
                vec![RedactorRule {
                    name: "slow".into(),
                    redactor: Arc::new(WaitFor3(Mutex::new(rx))),
                }],
                RedactionSettings::default(),
                crate::config::RedactorFailurePolicy::Drop,
            ),
            ..Policy::with_default(DefaultDecision::Drop)
        };
        let items = (1..=3u128)
            .map(|t| due(t, trace_spans(t, &[(1, 0)])))
            .collect();
        let (reqs, metrics) = run_pipeline(policy, items).await;
        let mut names = Vec::new();
        for r in &reqs {
            for rs in &r.resource_spans {
                for ss in &rs.scope_spans {
                    names.extend(ss.spans.iter().map(|s| s.name.clone()));
                }
            }
        }
        assert_eq!(
            names,
            vec!["redacted"; 3],
            "every kept trace redacted, none lost"
        );
        let text = metrics.encode();
        assert!(
            text.contains("tailgate_handoff_latency_seconds_count 3"),
            "{text}"
        );
    }

    /// Issue 19, item 5: head-sampled traffic (`ot=th:8`, 50 %) through a mixed policy - deterministic
    /// keeps (errors, slow), a stateful limiter reporting its share, consistent probabilistic sampling -
    /// with late spans and spans that carry their own vendor entries or an explicit `rv`. The adjusted
    /// count of every exported span (`1/p`, `p` from its exported `th`) summed per kind of trace matches
    /// the true totals of the traffic before head sampling, within four standard deviations of the
    /// Horvitz-Thompson estimate. Trace ids come from a fixed sequence, so the result cannot change
    /// between runs.
    #[tokio::test]
    async fn adjusted_counts_of_a_mixed_policy_over_head_sampled_traffic_stay_true() {
        use crate::plugin::{PluginRuntime, PluginSpec, RuntimeSettings};
        use crate::policy::WasmSampler;
        use opentelemetry_proto::tonic::trace::v1::{Status, status};

        /// Keeps every fourth trace of service `batch` that reaches it and drops the others; reports
        /// the share it keeps, as a stateful limiter does.
        struct EveryFourth(AtomicUsize);
        impl Sampler for EveryFourth {
            fn sample(
                &self,
                _: TraceId,
                spans: &[SpanRecord],
            ) -> Result<SamplerVerdict, SamplerFailure> {
                if spans.iter().all(|s| &*s.origin.service_name != "batch") {
                    return Ok(SamplerVerdict {
                        verdict: Verdict::Abstain,
                        probability: None,
                        reason: None,
                    });
                }
                let keep = self.0.fetch_add(1, Ordering::Relaxed).is_multiple_of(4);
                Ok(SamplerVerdict {
                    verdict: if keep { Verdict::Keep } else { Verdict::Drop },
                    probability: Some(0.25),
                    reason: None,
                })
            }
            fn stateful(&self) -> bool {
                true
            }
        }

        let rt = PluginRuntime::new(RuntimeSettings {
            default_deadline: Duration::from_secs(5),
            init_deadline: Duration::from_secs(30),
            ..Default::default()
        })
        .expect("runtime");
        let wasm = |name: &str, file: &str, config: &str| -> Arc<dyn Sampler> {
            Arc::new(WasmSampler(
                rt.load_sampler(&PluginSpec::new(
                    name,
                    crate::testing::built_plugin(file),
                    config,
                ))
                .expect("loads"),
            ))
        };
        let rule = |name: &str, sampler: Arc<dyn Sampler>| Rule {
            name: name.into(),
            sampler,
            shadow: false,
        };
        let policy = Policy {
            rules: vec![
                rule("errors", wasm("errors", "keep-errors", "{}")),
                rule("slow", wasm("slow", "keep-slow", r#"{"threshold": "1s"}"#)),
                rule("batch", Arc::new(EveryFourth(AtomicUsize::new(0)))),
                rule(
                    "sample",
                    wasm("sample", "probabilistic", r#"{"probability": 0.1}"#),
                ),
                // A shadow rule keeping everything must change nothing of what leaves.
                Rule {
                    name: "shadow".into(),
                    sampler: fixed(Verdict::Keep, Some(0.01)),
                    shadow: true,
                },
            ],
            ..Policy::with_default(DefaultDecision::Drop)
        };

        #[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
        enum Kind {
            Error,
            Slow,
            Batch,
            Plain,
        }
        // A fixed sequence of well-mixed 128-bit ids (splitmix64).
        let mut state = 0x5eed_u64;
        let mut next = || {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        const TRACES: usize = 6_000;
        const HEAD: u64 = 1 << 55; // th:8, 50 %
        let mut truth: std::collections::BTreeMap<Kind, u64> = Default::default();
        let mut kind_of: std::collections::HashMap<Vec<u8>, Kind> = Default::default();
        let mut sent_state: std::collections::HashMap<Vec<u8>, String> = Default::default();
        let mut items = Vec::new();
        let mut next_span = 1u64;
        for i in 0..TRACES {
            let tid = (u128::from(next()) << 64) | u128::from(next());
            let kind = match i % 10 {
                0 => Kind::Error,
                1 => Kind::Slow,
                2 | 3 => Kind::Batch,
                _ => Kind::Plain,
            };
            // Every third trace carries an explicit randomness, which the head decided on.
            let rv = (i % 3 == 0).then(|| next() & ((1 << 56) - 1));
            let randomness = rv.unwrap_or(tid as u64 & ((1 << 56) - 1));
            let n = 1 + (i % 4) as u64;
            let late_n = u64::from(i % 5 == 0);
            *truth.entry(kind).or_default() += n + late_n;
            kind_of.insert(tid.to_be_bytes().to_vec(), kind);
            if randomness < HEAD {
                continue; // not sampled at the head: never reaches tailgate
            }
            let ot = match rv {
                Some(rv) => format!("ot=th:8;rv:{rv:014x}"),
                None => "ot=th:8".to_owned(),
            };
            let service = if kind == Kind::Batch { "batch" } else { "web" };
            let root = next_span;
            let mut make = |j: u64, parent: u64| {
                let start = 1_000_000_000 * (i as u64 + 1);
                let end = start
                    + if kind == Kind::Slow {
                        2_000_000_000
                    } else {
                        1_000_000
                    };
                let mut sp = span_in(tid, next_span, parent, "op", start, end);
                next_span += 1;
                // Spans of one trace may carry different vendor entries; each keeps its own.
                sp.trace_state = if j % 2 == 1 {
                    format!("vendor=s{j},{ot}")
                } else {
                    ot.clone()
                };
                sent_state.insert(sp.span_id.clone(), sp.trace_state.clone());
                if kind == Kind::Error && j == 0 {
                    sp.status = Some(Status {
                        code: status::StatusCode::Error as i32,
                        message: String::new(),
                    });
                }
                sp
            };
            let spans: Vec<_> = (0..n)
                .map(|j| make(j, if j == 0 { 0 } else { root }))
                .collect();
            let late_spans: Vec<_> = (0..late_n).map(|j| make(n + j, root)).collect();
            let scan = |spans| {
                let body = bytes::Bytes::from(request(service, spans).encode_to_vec());
                scan_export_request(&body)
                    .expect("valid")
                    .spans
                    .into_iter()
                    .map(|(_, s)| s)
                    .collect::<Vec<_>>()
            };
            items.push(due(tid, scan(spans)));
            if late_n > 0 {
                items.push(late(tid, scan(late_spans)));
            }
        }
        let (reqs, _) = run_pipeline(policy, items).await;

        // Estimated total and Horvitz-Thompson variance per kind, from what was exported.
        let mut estimate: std::collections::BTreeMap<Kind, f64> = Default::default();
        let mut per_trace: std::collections::HashMap<Vec<u8>, (Kind, f64, f64)> =
            Default::default();
        for s in reqs
            .iter()
            .flat_map(|r| &r.resource_spans)
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| &s.spans)
        {
            let kind = kind_of[&s.trace_id];
            let th = threshold_in(&s.trace_state).expect("every kept span carries a threshold");
            let p = probability_of_threshold(th);
            // Everything but the threshold is as it arrived: vendors' entries, `rv`.
            let sent = &sent_state[&s.span_id];
            for entry in sent.split(',') {
                match entry.strip_prefix("ot=") {
                    Some(ot) => {
                        for sub in ot.split(';').filter(|sub| !sub.starts_with("th:")) {
                            assert!(s.trace_state.contains(sub), "{sent} -> {}", s.trace_state);
                        }
                    }
                    None => assert!(
                        s.trace_state.split(',').any(|e| e == entry),
                        "{sent} -> {}",
                        s.trace_state
                    ),
                }
            }
            if kind == Kind::Plain {
                // Consistent: the probabilistic rule decided on the randomness the head used (`rv`
                // when the span has one), so every span it kept has randomness >= its threshold.
                let r = crate::plugin::marshal::explicit_randomness(&s.trace_state).unwrap_or_else(
                    || {
                        let id: [u8; 16] = s.trace_id.as_slice().try_into().expect("16 bytes");
                        crate::plugin::marshal::randomness(u128::from_be_bytes(id))
                    },
                );
                assert!(r >= th, "randomness {r:x} under th {th:x}");
            }
            if kind != Kind::Plain && kind != Kind::Batch {
                assert_eq!(th, HEAD, "a deterministic keep leaves th:8 ({kind:?})");
            }
            *estimate.entry(kind).or_default() += 1.0 / p;
            let e = per_trace
                .entry(s.trace_id.clone())
                .or_insert((kind, p, 0.0));
            assert_eq!(e.1, p, "one threshold per trace");
            e.2 += 1.0;
        }
        let mut variance: std::collections::BTreeMap<Kind, f64> = Default::default();
        for (kind, p, n) in per_trace.values() {
            *variance.entry(*kind).or_default() += (1.0 - p) / (p * p) * n * n;
        }
        for (kind, want) in &truth {
            let got = estimate.get(kind).copied().unwrap_or(0.0);
            let sd = variance.get(kind).copied().unwrap_or(0.0).sqrt();
            assert!(
                (got - *want as f64).abs() <= 4.0 * sd + 1.0,
                "{kind:?}: estimated {got:.0} spans, true {want}, sd {sd:.0}"
            );
        }
    }

    /// Keeps a trace with a span whose status is error; drops the rest.
    struct KeepErrors;
    impl Sampler for KeepErrors {
        fn sample(
            &self,
            _: TraceId,
            spans: &[SpanRecord],
        ) -> Result<SamplerVerdict, SamplerFailure> {
            let error = spans
                .iter()
                .any(|s| s.status == crate::otlp::StatusCode::Error);
            Ok(SamplerVerdict {
                verdict: if error { Verdict::Keep } else { Verdict::Drop },
                probability: None,
                reason: None,
            })
        }
    }

    fn errors_policy() -> Policy {
        Policy {
            rules: vec![Rule {
                name: "errors".into(),
                sampler: Arc::new(KeepErrors),
                shadow: false,
            }],
            default: DefaultDecision::Drop,
            on_sampler_failure: SamplerFailurePolicy::Keep,
            predicates: Default::default(),
            redactors: Default::default(),
        }
    }

    /// Spans of `tid` as [`trace_spans`], the ones in `errors` with an error status.
    fn spans_with_errors(tid: TraceId, ids: &[(u64, u64)], errors: &[u64]) -> Vec<SpanRecord> {
        let spans = ids
            .iter()
            .map(|&(id, p)| {
                let mut s = span_in(tid, id, p, "op", 1_000, 2_000);
                if errors.contains(&id) {
                    s.status = Some(opentelemetry_proto::tonic::trace::v1::Status {
                        code: 2,
                        message: String::new(),
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

    fn attribute(reqs: &[ExportTraceServiceRequest], key: &str) -> Vec<String> {
        let mut out = Vec::new();
        for s in reqs
            .iter()
            .flat_map(|r| &r.resource_spans)
            .flat_map(|rs| &rs.scope_spans)
            .flat_map(|ss| &ss.spans)
        {
            for kv in s.attributes.iter().filter(|kv| kv.key == key) {
                if let Some(
                    opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(v),
                ) = kv.value.as_ref().and_then(|v| v.value.as_ref())
                {
                    out.push(v.clone());
                }
            }
        }
        out
    }

    /// Every one of `total` spans handed in ends exported or sampled out (less those rescued), once.
    fn assert_identity(m: &Metrics, total: u64) {
        let a = m.accounting();
        assert_eq!(a.exported + a.sampled_out + a.lost_total(), total, "{a:?}");
        assert_eq!(a.in_flight, 0, "{a:?}");
    }

    #[tokio::test]
    async fn a_late_error_span_rescues_the_dropped_trace_whole_and_once() {
        let ring = Arc::new(crate::rescue::Ring::new(1 << 20, Duration::from_secs(60)));
        let items = vec![
            due(5, trace_spans(5, &[(10, 0), (11, 10)])),
            // Arrives after the drop, with the evidence.
            late(5, spans_with_errors(5, &[(12, 10)], &[12])),
            // After the rescue: follows the new decision.
            late(5, trace_spans(5, &[(13, 10)])),
            // Another dropped trace whose late span changes nothing.
            due(6, trace_spans(6, &[(20, 0)])),
            late(6, trace_spans(6, &[(21, 20)])),
        ];
        let (reqs, metrics) = run_pipeline_ring(
            errors_policy(),
            items,
            false,
            Some(ring.clone()),
            |_, _| async {},
        )
        .await;
        let mut ids: Vec<u64> = exported_span_ids(&reqs)
            .iter()
            .map(|(id, _, _)| u64::from_be_bytes(id.as_slice().try_into().expect("8 bytes")))
            .collect();
        ids.sort_unstable();
        assert_eq!(ids, vec![10, 11, 12, 13], "the early spans too, each once");
        let rules: Vec<String> = exported_span_ids(&reqs)
            .into_iter()
            .map(|(_, r, _)| r)
            .collect();
        assert!(rules.iter().all(|r| r == "errors"), "{rules:?}");
        assert_eq!(attribute(&reqs, "tailgate.rescued_by"), vec!["errors"; 4]);
        assert_eq!(metrics.spans_rescued.get(), 2, "the two held spans");
        let text = metrics.encode();
        assert!(
            text.contains(r#"tailgate_rescued_traces_total{reason="late_span"} 1"#),
            "{text}"
        );
        // Trace 6 is held again with its late span; trace 5 left the ring.
        assert_eq!(ring.usage().1, 1);
        assert_eq!(metrics.rescue_ring_traces.get(), 1);
        assert_eq!(metrics.spans_sampled_out.get(), 2 + 2);
        assert_identity(&metrics, 6);
        let why = metrics.decision_log.get(5).expect("explained");
        let h = why.rescued.expect("the history");
        assert_eq!((h.cause, h.rescued_by.as_str()), ("late_span", "errors"));
        assert_eq!(h.dropped_by.as_deref(), Some("errors"));
        assert_eq!(why.decision, "keep");
    }

    #[tokio::test]
    async fn without_the_ring_a_late_error_span_follows_the_drop() {
        let items = vec![
            due(5, trace_spans(5, &[(10, 0), (11, 10)])),
            late(5, spans_with_errors(5, &[(12, 10)], &[12])),
        ];
        let (reqs, metrics) = run_pipeline_with(errors_policy(), items, false).await;
        assert!(exported_span_ids(&reqs).is_empty());
        assert_eq!(metrics.spans_sampled_out.get(), 3);
        assert_eq!(metrics.spans_rescued.get(), 0);
    }

    #[tokio::test]
    async fn rescue_by_request_by_id_and_by_condition() {
        let ring = Arc::new(crate::rescue::Ring::new(1 << 20, Duration::from_secs(60)));
        let watched = ring.clone();
        let items = vec![
            due(7, trace_spans(7, &[(30, 0)])),
            due(8, spans_with_errors(8, &[(40, 0)], &[])),
            due(9, trace_spans(9, &[(50, 0)])),
        ];
        let (reqs, metrics) = run_pipeline_ring(
            errors_policy(),
            items,
            false,
            Some(ring),
            |rescuer, _| async move {
                let rescuer = rescuer.expect("a rescuer with the ring");
                // Wait (not timed) until the worker has dropped all three.
                while watched.usage().1 < 3 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                let by_id = rescuer.rescue_ids(&[7, 99], "request:alert-1").await;
                assert_eq!(by_id, vec![7], "only held traces are queued");
                let cond = RescueCondition {
                    service: Some("svc".into()),
                    since_unix_ms: Some(0),
                    until_unix_ms: Some(1),
                    ..Default::default()
                };
                // Spans start at 1 000 ns: within [0, 1) ms. Trace 7 may still be held until its
                // rescue item is handled: the condition then lists it too, and the worker skips it.
                let by_cond = rescuer.rescue_matching(&cond, "request").await;
                assert!(by_cond.contains(&8) && by_cond.contains(&9), "{by_cond:?}");
                let none = RescueCondition {
                    service: Some("other".into()),
                    ..Default::default()
                };
                assert!(rescuer.rescue_matching(&none, "request").await.is_empty());
            },
        )
        .await;
        let mut ids: Vec<u64> = exported_span_ids(&reqs)
            .iter()
            .map(|(id, _, _)| u64::from_be_bytes(id.as_slice().try_into().expect("8 bytes")))
            .collect();
        ids.sort_unstable();
        assert_eq!(ids, vec![30, 40, 50], "each rescued trace once");
        let mut by = attribute(&reqs, "tailgate.rescued_by");
        by.sort();
        assert_eq!(by, vec!["request", "request", "request:alert-1"]);
        assert_eq!(attribute(&reqs, "tailgate.rule"), vec!["rescue"; 3]);
        assert_eq!(metrics.spans_rescued.get(), 3);
        assert_identity(&metrics, 3);
    }

    #[tokio::test]
    async fn the_ring_evicts_the_oldest_under_its_bound_and_counts_them() {
        let one: usize = trace_spans(1, &[(1, 0)])
            .iter()
            .map(SpanRecord::charged_bytes)
            .sum();
        let ring = Arc::new(crate::rescue::Ring::new(one * 2, Duration::from_secs(60)));
        let items = (1..=5u128)
            .map(|t| due(t, trace_spans(t, &[(t as u64, 0)])))
            .collect();
        let (_, metrics) = run_pipeline_ring(
            errors_policy(),
            items,
            false,
            Some(ring.clone()),
            |_, _| async {},
        )
        .await;
        let text = metrics.encode();
        assert!(
            text.contains(r#"tailgate_rescue_ring_evicted_total{reason="bytes"} 3"#),
            "{text}"
        );
        assert_eq!(ring.usage().1, 2);
        assert!(metrics.rescue_ring_bytes.get() as usize <= one * 2);
        // The two newest are the ones held.
        let now = tokio::time::Instant::now();
        assert!(ring.holds(4, now) && ring.holds(5, now) && !ring.holds(1, now));
    }

    #[tokio::test]
    async fn a_reload_keeps_the_ring() {
        // The ring belongs to the pipeline, not the policy: a trace dropped under one policy is rescued
        // by a late span under the next.
        let ring = Arc::new(crate::rescue::Ring::new(1 << 20, Duration::from_secs(60)));
        let metrics = Metrics::new();
        let dir = std::env::temp_dir().join(format!("tailgate-ring-reload-{}", fastrand::u64(..)));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("out.jsonl");
        let cfg = OtlpExporter {
            protocol: ExportProtocol::File,
            endpoint: path.display().to_string(),
            ..OtlpExporter::default()
        };
        let (export, exporter) = Exporter::start(&cfg, metrics.clone()).expect("exporter");
        let live = Arc::new(ArcSwap::from_pointee(Policy::with_default(
            DefaultDecision::Drop,
        )));
        let ctx = PipelineContext {
            policy: live.clone(),
            cache: Arc::new(DecisionCache::new(100, 100, Duration::from_secs(60))),
            export,
            metrics: metrics.clone(),
            ring: Some(ring.clone()),
        };
        let (sender, done) = start(1, 16, ctx, false).expect("threads");
        assert!(sender.send(due(3, trace_spans(3, &[(60, 0)]))).await);
        while ring.usage().1 < 1 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        live.store(Arc::new(errors_policy()));
        assert!(
            sender
                .send(late(3, spans_with_errors(3, &[(61, 60)], &[61])))
                .await
        );
        drop(sender);
        done.await.expect("workers finish");
        exporter.shutdown(Duration::from_secs(10)).await;
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let _ = std::fs::remove_dir_all(&dir);
        let reqs: Vec<ExportTraceServiceRequest> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("OTLP/JSON line"))
            .collect();
        assert_eq!(exported_span_ids(&reqs).len(), 2);
        assert_eq!(metrics.spans_rescued.get(), 1);
    }
}
