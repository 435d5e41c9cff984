//! The OpenTelemetry Collector as a decision oracle: the same generated traffic goes through the real
//! Collector's `tail_sampling` (`$TAILGATE_COLLECTOR`, built by `scripts/peers.sh collector`) and through
//! tailgate with the equivalent standard samplers, and both must keep exactly the same traces.
//!
//! Policies (Collector `tail_sampling` / tailgate rule):
//! - `status_code: [ERROR]` / `keep-errors.wasm` (defaults: status ERROR only);
//! - `latency: {threshold_ms: 1000}` / `keep-slow.wasm {threshold: 1s}`; both measure the trace from its
//!   earliest span start to its latest span end;
//! - `string_attribute: {key: app.tier, values: [gold, platinum]}` / `attribute-match.wasm` with an `in`
//!   condition on spans and one on resources (`mode: any`): the Collector looks at resource and span
//!   attributes, never event or link attributes; so does the rule;
//! - `numeric_attribute: {key: http.response.status_code, min_value: 500, max_value: 599}` /
//!   `attribute-match.wasm` `min`/`max` on spans and resources;
//! - `span_count: {min_spans: 40}` / `span-count.wasm {min: 40}`.
//!
//! The Collector samples when *any* policy says sample; tailgate takes the first rule that keeps or
//! drops, then `default`. With only keeping rules and `default: drop` the two are the same function, so
//! the order of the rules does not matter here (it would with a drop rule: see
//! docs/from-the-collector.md). The traffic has, for every policy, traces that match it and near-misses
//! that must not (a different case, a neighbouring value, another key, the wrong type, one span short,
//! a millisecond under the threshold), plus plain traces matching nothing; each trace is built to match
//! at most one policy, so a policy that is wrong on either side shows up as a difference.
//!
//! Where the two *differ by design*, the traces are in a group of their own and each side must do what
//! its documentation says (so a change on either side is noticed):
//! - latency in [1000 ms, 1001 ms): the Collector compares whole milliseconds and strictly
//!   (`duration.Milliseconds() > threshold_ms`), tailgate compares nanoseconds with `>=`: a trace of
//!   exactly 1 s or 1000.5 ms is kept by tailgate only;
//! - a numeric policy on a double (`503.0`): the Collector reads only int attributes (`Value.Int()` of a
//!   double is 0), tailgate's `min`/`max` take ints and doubles: kept by tailgate only;
//! - a string policy on a string array (`["gold"]`): the Collector compares only string values, tailgate's
//!   string conditions also match array items: kept by tailgate only.
//!
//! Probabilistic sampling hashes differently (the Collector: FNV-1a of the trace id with a salt;
//! tailgate: the W3C randomness of the low 56 bits, OpenTelemetry's consistent sampling), so the kept
//! sets differ and only the rates are compared, each against a binomial bound, on a second pipeline.

use crate::support::grpc_send;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue, any_value::Value,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, status};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use tailgate::testing::span_in;
use tailgate_e2e::capture::CaptureServer;
use tailgate_e2e::collector::Collector;
use tailgate_e2e::otlp::hex;
use tailgate_e2e::proxy::{RunningAppExt, TestConfig};
use tailgate_e2e::{WAIT, free_port};

/// What each side must do with a trace.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Expect {
    /// Both keep (`true`) or both drop.
    Same(bool),
    /// A documented difference: what tailgate does, what the Collector does.
    Differ { tailgate: bool, collector: bool },
}

/// One generated trace.
struct Trace {
    id: u128,
    what: String,
    expect: Expect,
    resource_spans: Vec<ResourceSpans>,
    spans: usize,
}

/// The shape of a generated trace.
#[derive(Default, Clone)]
struct Shape {
    spans: usize,
    /// Earliest start to latest end, in nanoseconds.
    duration: u64,
    /// A child ends last (after the root), so only the envelope is slow.
    child_ends_last: bool,
    /// Status of the last span.
    status: Option<(status::StatusCode, &'static str)>,
    /// An attribute on the middle span.
    span_attr: Option<KeyValue>,
    /// An attribute on the second service's resource.
    resource_attr: Option<KeyValue>,
}

fn kv(key: &str, v: Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    }
}

fn text(key: &str, v: &str) -> Option<KeyValue> {
    Some(kv(key, Value::StringValue(v.into())))
}

fn int(key: &str, v: i64) -> Option<KeyValue> {
    Some(kv(key, Value::IntValue(v)))
}

const MS: u64 = 1_000_000;

fn build(id: u128, shape: &Shape) -> Vec<ResourceSpans> {
    let t0 = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
        - 60_000 * MS;
    let n = shape.spans.max(2);
    let root_end = if shape.child_ends_last {
        t0 + shape.duration / 4
    } else {
        t0 + shape.duration
    };
    let mut front = vec![span_in(id, 1, 0, "GET /checkout", t0, root_end)];
    let mut back = Vec::new();
    for k in 2..=n as u64 {
        // Children start after the root and end before the envelope's end; the last one ends exactly
        // at the envelope's end when it is meant to be the latest.
        let start = t0 + MS / 10 + k;
        let end = if shape.child_ends_last && k == n as u64 {
            t0 + shape.duration
        } else {
            (start + MS).min(root_end)
        };
        let mut s = span_in(id, k, 1, &format!("child {k}"), start, end);
        if k == n as u64
            && let Some((code, message)) = shape.status
        {
            s.status = Some(Status {
                code: code as i32,
                message: message.into(),
            });
        }
        if k == (n as u64).div_ceil(2).max(2)
            && let Some(a) = &shape.span_attr
        {
            s.attributes.push(a.clone());
        }
        if k % 2 == 0 { &mut back } else { &mut front }.push(s);
    }
    let resource = |service: &str, extra: Option<&KeyValue>| Resource {
        attributes: std::iter::once(kv("service.name", Value::StringValue(service.into())))
            .chain(extra.cloned())
            .collect(),
        ..Default::default()
    };
    let rs = |resource: Resource, spans: Vec<Span>| ResourceSpans {
        resource: Some(resource),
        scope_spans: vec![ScopeSpans {
            scope: Some(InstrumentationScope {
                name: "oracle".into(),
                ..Default::default()
            }),
            spans,
            schema_url: String::new(),
        }],
        schema_url: String::new(),
    };
    vec![
        rs(resource("frontend", None), front),
        rs(resource("backend", shape.resource_attr.as_ref()), back),
    ]
}

/// The deterministic traffic: for each policy, matches and near-misses; plain traces; and the
/// documented differences.
fn deterministic_traffic() -> Vec<Trace> {
    let mut out = Vec::new();
    let mut add = |what: &str, expect: Expect, shape: Shape| {
        let id = 0x0dec_0000_0000_0000_0000_0000_0000_0000u128 | (out.len() as u128 + 1);
        let spans = shape.spans.max(2);
        out.push(Trace {
            id,
            what: what.into(),
            expect,
            resource_spans: build(id, &shape),
            spans,
        });
    };
    let keep = Expect::Same(true);
    let discard = Expect::Same(false);
    let plain = |spans: usize, ms: u64| Shape {
        spans,
        duration: ms * MS,
        ..Default::default()
    };
    // Plain traces: nothing matches (3-10 spans, under a second, OK/unset status, other values).
    for i in 0..60u64 {
        let mut s = plain(3 + (i % 8) as usize, 5 + (i * 37) % 900);
        s.status = (i % 3 == 0).then_some((status::StatusCode::Ok, ""));
        s.span_attr = match i % 4 {
            0 => text("app.tier", ["bronze", "silver"][(i / 4 % 2) as usize]),
            1 => int(
                "http.response.status_code",
                [200, 201, 404, 302][(i / 4 % 4) as usize],
            ),
            _ => None,
        };
        add(&format!("plain {i}"), discard, s);
    }
    // status_code ERROR / keep-errors.
    for i in 0..8 {
        let mut s = plain(3 + i, 50);
        s.status = Some((status::StatusCode::Error, "upstream failed"));
        add("error status", keep, s);
    }
    let mut s = plain(4, 50);
    s.status = Some((status::StatusCode::Ok, "error"));
    add("near-miss: status OK with message `error`", discard, s);
    let mut s = plain(4, 50);
    s.span_attr = text("error", "true");
    add("near-miss: attribute error=true, status unset", discard, s);
    let mut s = plain(4, 50);
    s.span_attr = text("otel.status_code", "ERROR");
    add(
        "near-miss: otel.status_code attribute, status unset",
        discard,
        s,
    );
    // latency / keep-slow.
    for ms in [1001, 1500, 2500, 5000] {
        add(&format!("slow: {ms} ms"), keep, plain(5, ms));
    }
    add(
        "slow: root 300 ms, a child ends at 1200 ms",
        keep,
        Shape {
            child_ends_last: true,
            ..plain(5, 1200)
        },
    );
    for ns in [999 * MS, 999 * MS + 900_000] {
        add(
            &format!("near-miss: {ns} ns"),
            discard,
            Shape {
                spans: 5,
                duration: ns,
                ..Default::default()
            },
        );
    }
    add(
        "near-miss: root 300 ms, a child ends at 990 ms",
        discard,
        Shape {
            child_ends_last: true,
            ..plain(5, 990)
        },
    );
    // string_attribute app.tier in [gold, platinum] / attribute-match `in`, span and resource.
    for (what, s) in [
        (
            "gold on a span",
            Shape {
                span_attr: text("app.tier", "gold"),
                ..plain(4, 40)
            },
        ),
        (
            "platinum on a span",
            Shape {
                span_attr: text("app.tier", "platinum"),
                ..plain(6, 40)
            },
        ),
        (
            "gold on a resource",
            Shape {
                resource_attr: text("app.tier", "gold"),
                ..plain(4, 40)
            },
        ),
    ] {
        add(what, keep, s);
    }
    for (what, s) in [
        (
            "near-miss: Gold",
            Shape {
                span_attr: text("app.tier", "Gold"),
                ..plain(4, 40)
            },
        ),
        (
            "near-miss: golden",
            Shape {
                span_attr: text("app.tier", "golden"),
                ..plain(4, 40)
            },
        ),
        (
            "near-miss: `gold `",
            Shape {
                span_attr: text("app.tier", "gold "),
                ..plain(4, 40)
            },
        ),
        (
            "near-miss: app.tiers=gold",
            Shape {
                span_attr: text("app.tiers", "gold"),
                ..plain(4, 40)
            },
        ),
        (
            "near-miss: bronze on a resource",
            Shape {
                resource_attr: text("app.tier", "bronze"),
                ..plain(4, 40)
            },
        ),
    ] {
        add(what, discard, s);
    }
    // numeric_attribute http.response.status_code in [500, 599] / attribute-match min/max.
    let code = |v: i64| int("http.response.status_code", v);
    for v in [500, 503, 599] {
        add(
            &format!("status code {v}"),
            keep,
            Shape {
                span_attr: code(v),
                ..plain(4, 30)
            },
        );
    }
    add(
        "status code 502 on a resource",
        keep,
        Shape {
            resource_attr: code(502),
            ..plain(4, 30)
        },
    );
    for v in [499, 600, 200] {
        add(
            &format!("near-miss: status code {v}"),
            discard,
            Shape {
                span_attr: code(v),
                ..plain(4, 30)
            },
        );
    }
    add(
        "near-miss: status code \"503\" as a string",
        discard,
        Shape {
            span_attr: text("http.response.status_code", "503"),
            ..plain(4, 30)
        },
    );
    add(
        "near-miss: http.status_code=503 (another key)",
        discard,
        Shape {
            span_attr: int("http.status_code", 503),
            ..plain(4, 30)
        },
    );
    // span_count >= 40 / span-count min 40.
    for n in [40, 41, 64] {
        add(&format!("{n} spans"), keep, plain(n, 80));
    }
    for n in [39, 20] {
        add(&format!("near-miss: {n} spans"), discard, plain(n, 80));
    }
    // Documented differences.
    for ns in [1000 * MS, 1000 * MS + 500_000] {
        add(
            &format!("differs: latency {ns} ns"),
            Expect::Differ {
                tailgate: true,
                collector: false,
            },
            Shape {
                spans: 5,
                duration: ns,
                ..Default::default()
            },
        );
    }
    add(
        "differs: status code 503.0 as a double",
        Expect::Differ {
            tailgate: true,
            collector: false,
        },
        Shape {
            span_attr: Some(kv("http.response.status_code", Value::DoubleValue(503.0))),
            ..plain(4, 30)
        },
    );
    add(
        "differs: app.tier = [\"gold\"] (a string array)",
        Expect::Differ {
            tailgate: true,
            collector: false,
        },
        Shape {
            span_attr: Some(kv(
                "app.tier",
                Value::ArrayValue(ArrayValue {
                    values: vec![AnyValue {
                        value: Some(Value::StringValue("gold".into())),
                    }],
                }),
            )),
            ..plain(4, 30)
        },
    );
    out
}

/// SplitMix64: trace ids with random-looking bits in both halves (both hashes see all of them).
fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

const PROBABILISTIC_TRACES: u64 = 2000;
const PROBABILITY: f64 = 0.25;

fn probabilistic_traffic() -> Vec<Trace> {
    (0..PROBABILISTIC_TRACES)
        .map(|i| {
            let id = (u128::from(splitmix(2 * i + 1)) << 64) | u128::from(splitmix(2 * i + 2));
            Trace {
                id,
                what: "probabilistic".into(),
                expect: Expect::Same(false),
                resource_spans: build(
                    id,
                    &Shape {
                        spans: 2,
                        duration: 20 * MS,
                        ..Default::default()
                    },
                ),
                spans: 2,
            }
        })
        .collect()
}

fn plugin(name: &str) -> String {
    tailgate::testing::built_plugin(name).display().to_string()
}

fn tailgate_policy() -> String {
    format!(
        r#"  default: drop
  rules:
    - name: errors
      plugin: {errors}
      call_timeout: 1s
    - name: slow
      plugin: {slow}
      config: {{threshold: 1s}}
      call_timeout: 1s
    - name: tier
      plugin: {attr}
      config:
        mode: any
        conditions:
          - {{key: app.tier, on: span, in: [gold, platinum]}}
          - {{key: app.tier, on: resource, in: [gold, platinum]}}
      call_timeout: 1s
    - name: http-5xx
      plugin: {attr}
      config:
        mode: any
        conditions:
          - {{key: http.response.status_code, on: span, min: 500, max: 599}}
          - {{key: http.response.status_code, on: resource, min: 500, max: 599}}
      call_timeout: 1s
    - name: big
      plugin: {count}
      config: {{min: 40}}
      call_timeout: 1s
"#,
        errors = plugin("keep-errors"),
        slow = plugin("keep-slow"),
        attr = plugin("attribute-match"),
        count = plugin("span-count"),
    )
}

fn probabilistic_policy() -> String {
    format!(
        "  default: drop\n  rules:\n    - name: sample\n      plugin: {}\n      config: {{probability: {PROBABILITY}}}\n      call_timeout: 1s\n",
        plugin("probabilistic")
    )
}

/// The Collector's configuration: one pipeline per traffic set, each into its own capture server.
fn collector_yaml(det_port: u16, prob_port: u16, det_to: &str, prob_to: &str) -> String {
    let strip = |e: &str| e.trim_start_matches("http://").to_owned();
    format!(
        r#"receivers:
  otlp/det:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{det_port}
  otlp/prob:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{prob_port}
processors:
  tail_sampling/det:
    decision_wait: 2s
    num_traces: 10000
    policies:
      - {{name: errors, type: status_code, status_code: {{status_codes: [ERROR]}}}}
      - {{name: slow, type: latency, latency: {{threshold_ms: 1000}}}}
      - {{name: tier, type: string_attribute, string_attribute: {{key: app.tier, values: [gold, platinum]}}}}
      - {{name: http-5xx, type: numeric_attribute, numeric_attribute: {{key: http.response.status_code, min_value: 500, max_value: 599}}}}
      - {{name: big, type: span_count, span_count: {{min_spans: 40}}}}
  tail_sampling/prob:
    decision_wait: 2s
    num_traces: 10000
    policies:
      - {{name: sample, type: probabilistic, probabilistic: {{sampling_percentage: {pct}}}}}
exporters:
  otlp_grpc/det:
    endpoint: {det_to}
    tls: {{insecure: true}}
  otlp_grpc/prob:
    endpoint: {prob_to}
    tls: {{insecure: true}}
service:
  telemetry:
    logs: {{level: warn}}
    metrics: {{level: none}}
  pipelines:
    traces/det:
      receivers: [otlp/det]
      processors: [tail_sampling/det]
      exporters: [otlp_grpc/det]
    traces/prob:
      receivers: [otlp/prob]
      processors: [tail_sampling/prob]
      exporters: [otlp_grpc/prob]
"#,
        det_to = strip(det_to),
        prob_to = strip(prob_to),
        pct = PROBABILITY * 100.0,
    )
}

/// Sends the traffic in requests of 25 traces (each trace's two resources together).
async fn send(endpoint: &str, traffic: &[Trace]) -> anyhow::Result<()> {
    for chunk in traffic.chunks(25) {
        let request = ExportTraceServiceRequest {
            resource_spans: chunk
                .iter()
                .flat_map(|t| t.resource_spans.iter().cloned())
                .collect(),
        };
        grpc_send(endpoint, request, false).await?;
    }
    Ok(())
}

/// Spans per trace id that arrived at `capture`.
fn kept(capture: &CaptureServer) -> BTreeMap<u128, usize> {
    let mut out = BTreeMap::new();
    for s in capture.spans() {
        let id = s
            .span
            .trace_id
            .as_slice()
            .try_into()
            .map(u128::from_be_bytes)
            .unwrap_or(0);
        *out.entry(id).or_insert(0) += 1;
    }
    out
}

/// Waits until `capture` holds `spans` spans, then 3 s more (past the Collector's 1 s decision tick and
/// tailgate's settle) so that a trace kept by mistake has time to arrive too.
async fn settle(capture: &CaptureServer, spans: usize, who: &str) -> anyhow::Result<()> {
    capture
        .wait_for_spans_within(spans, WAIT)
        .await
        .map_err(|e| e.context(format!("{who}: the expected kept spans did not arrive")))?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_collector_and_tailgate_keep_the_same_traces() -> anyhow::Result<()> {
    let det = deterministic_traffic();
    let prob = probabilistic_traffic();

    let (tg_det, tg_prob, col_det, col_prob) = (
        CaptureServer::start().await?,
        CaptureServer::start().await?,
        CaptureServer::start().await?,
        CaptureServer::start().await?,
    );
    let (det_port, prob_port) = (free_port()?, free_port()?);
    let collector = Collector::start(
        &collector_yaml(
            det_port,
            prob_port,
            &col_det.grpc_endpoint(),
            &col_prob.grpc_endpoint(),
        ),
        &[det_port, prob_port],
    )
    .await?;
    let config = |to: &CaptureServer, policy: String| TestConfig {
        settle: "1s",
        idle_timeout: "2s",
        max_wait: "10s",
        policy,
        ..TestConfig::passthrough_to(to.grpc_endpoint())
    };
    let tailgate_det = config(&tg_det, tailgate_policy()).start().await?;
    let tailgate_prob = config(&tg_prob, probabilistic_policy()).start().await?;

    send(&format!("http://127.0.0.1:{det_port}"), &det).await?;
    send(&tailgate_det.grpc_endpoint(), &det).await?;
    send(&format!("http://127.0.0.1:{prob_port}"), &prob).await?;
    send(&tailgate_prob.grpc_endpoint(), &prob).await?;

    let spans_kept_by = |tailgate: bool| -> usize {
        det.iter()
            .filter(|t| match t.expect {
                Expect::Same(k) => k,
                Expect::Differ {
                    tailgate: a,
                    collector: b,
                } => {
                    if tailgate {
                        a
                    } else {
                        b
                    }
                }
            })
            .map(|t| t.spans)
            .sum()
    };
    settle(&tg_det, spans_kept_by(true), "tailgate").await?;
    settle(
        &col_det,
        spans_kept_by(false),
        &format!("the Collector\n{}", collector.logs()),
    )
    .await?;

    // Deterministic policies: every trace decided the same way (and kept whole), except the documented
    // differences, which must go the documented way on each side.
    let (tg, col) = (kept(&tg_det), kept(&col_det));
    let mut wrong = Vec::new();
    let (mut compared, mut same_kept, mut differ) = (0, 0, 0);
    for t in &det {
        let (want_tg, want_col) = match t.expect {
            Expect::Same(k) => (k, k),
            Expect::Differ {
                tailgate,
                collector,
            } => (tailgate, collector),
        };
        let (got_tg, got_col) = (tg.get(&t.id).copied(), col.get(&t.id).copied());
        for (who, want, got) in [
            ("tailgate", want_tg, got_tg),
            ("the Collector", want_col, got_col),
        ] {
            match (want, got) {
                (true, Some(n)) if n == t.spans => {}
                (false, None) => {}
                (true, Some(n)) => wrong.push(format!(
                    "{who} kept {} ({}) with {n} of {} spans",
                    t.what,
                    hex(&t.id.to_be_bytes()),
                    t.spans
                )),
                (true, None) => wrong.push(format!(
                    "{who} dropped {} ({})",
                    t.what,
                    hex(&t.id.to_be_bytes())
                )),
                (false, Some(_)) => wrong.push(format!(
                    "{who} kept {} ({})",
                    t.what,
                    hex(&t.id.to_be_bytes())
                )),
            }
        }
        match t.expect {
            Expect::Same(k) => {
                compared += 1;
                same_kept += usize::from(k);
            }
            Expect::Differ { .. } => differ += 1,
        }
    }
    let unknown: BTreeSet<u128> = tg
        .keys()
        .chain(col.keys())
        .filter(|id| !det.iter().any(|t| t.id == **id))
        .copied()
        .collect();
    assert!(
        unknown.is_empty(),
        "traces nobody sent arrived: {unknown:x?}"
    );
    assert!(
        wrong.is_empty(),
        "the Collector and tailgate disagree with the expected decisions:\n  {}\n--- Collector log ---\n{}",
        wrong.join("\n  "),
        collector.logs()
    );
    println!(
        "collector oracle: {compared} traces decided alike ({same_kept} kept by both, {} dropped by both), \
         {differ} documented differences as documented",
        compared - same_kept
    );

    // Probabilistic: rates only, each within 4.5 standard deviations of the configured probability.
    let n = PROBABILISTIC_TRACES as f64;
    let bound = 4.5 * (n * PROBABILITY * (1.0 - PROBABILITY)).sqrt();
    let expected = n * PROBABILITY;
    let deadline = tokio::time::Instant::now() + WAIT;
    let (mut tg_n, mut col_n);
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        (tg_n, col_n) = (kept(&tg_prob).len() as f64, kept(&col_prob).len() as f64);
        if (tg_n >= expected - bound && col_n >= expected - bound)
            || tokio::time::Instant::now() >= deadline
        {
            break;
        }
    }
    // Whatever is still on its way.
    tokio::time::sleep(Duration::from_secs(3)).await;
    (tg_n, col_n) = (kept(&tg_prob).len() as f64, kept(&col_prob).len() as f64);
    println!(
        "collector oracle: probabilistic {PROBABILITY}: tailgate kept {tg_n} of {n}, the Collector {col_n} \
         (expected {expected} +- {bound:.0})"
    );
    for (who, k) in [("tailgate", tg_n), ("the Collector", col_n)] {
        assert!(
            (k - expected).abs() <= bound,
            "{who} kept {k} of {n} traces at probability {PROBABILITY} (bound {expected} +- {bound:.0})"
        );
    }
    // Every probabilistically kept trace arrived whole.
    for (who, c) in [("tailgate", &tg_prob), ("the Collector", &col_prob)] {
        let partial: Vec<_> = kept(c).into_iter().filter(|(_, n)| *n != 2).collect();
        assert!(
            partial.is_empty(),
            "{who} kept partial traces: {partial:x?}"
        );
    }
    tailgate_det.shutdown().await;
    tailgate_prob.shutdown().await;
    drop(collector);
    Ok(())
}
