//! The live status page on the admin server: `GET /` (an HTML page with its script and style, embedded in
//! the binary: no CDN), `GET /api/status` (the JSON it polls) and `GET /debug/traces/{trace_id}` (why a
//! recent trace was kept or dropped, see [`crate::explain`]).
//!
//! A sampler task reads the metrics once per [`SAMPLE_INTERVAL`] into a bounded ring ([`History`], ten
//! minutes): spans in and out, decisions by rule, buffer fill. Everything else (plugins, the last reload,
//! recent decisions) is read from the live policy, the reloader and the decision log when asked.

use crate::explain::{Explanation, parse_trace_id};
use crate::metrics::Metrics;
use crate::pipeline::Policy;
use crate::plugin::PluginStats;
use crate::reload::Reloader;
use arc_swap::ArcSwap;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::registry::Registry;
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How often the history is sampled.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);
/// Samples kept: ten minutes at one per second.
pub const HISTORY_SAMPLES: usize = 600;
/// Most rules charted per sample (a policy rarely has more; the rest are summed as `other`).
const MAX_CHARTED_RULES: usize = 32;

const PAGE_HTML: &str = include_str!("status/page.html");
const PAGE_JS: &str = include_str!("status/page.js");
const PAGE_CSS: &str = include_str!("status/page.css");

/// Keep/drop decisions of one rule during one sample interval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleCount {
    pub rule: String,
    pub keep: u64,
    pub drop: u64,
}

/// One point of the history: counts are per interval, gauges as sampled.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sample {
    /// Unix milliseconds.
    pub t: u64,
    /// Spans accepted by every receiver during the interval.
    pub spans_in: u64,
    /// Spans acknowledged by the downstream during the interval.
    pub spans_out: u64,
    /// Spans of dropped traces during the interval.
    pub sampled_out: u64,
    pub buffer_bytes: i64,
    pub buffer_limit: i64,
    pub decisions: Vec<RuleCount>,
}

/// Cumulative counters read at one instant.
#[derive(Debug, Clone, Default, PartialEq)]
struct Totals {
    spans_in: u64,
    spans_out: u64,
    sampled_out: u64,
    /// rule -> (keep, drop)
    decisions: BTreeMap<String, (u64, u64)>,
}

/// The bounded ring of samples and the counters of the previous sample.
pub struct History {
    /// Counter families the sampler reads (clones share the live values). Read through the text
    /// encoding, so every label value (any receiver, any rule) is included without knowing it in advance.
    families: Registry,
    metrics: Arc<Metrics>,
    inner: Mutex<HistoryInner>,
}

struct HistoryInner {
    samples: VecDeque<Sample>,
    previous: Option<Totals>,
}

impl History {
    pub fn new(metrics: Arc<Metrics>) -> History {
        let mut families = Registry::default();
        families.register("in", "", metrics.spans_received.clone());
        families.register("decisions", "", metrics.decisions.clone());
        History {
            families,
            metrics,
            inner: Mutex::new(HistoryInner {
                samples: VecDeque::with_capacity(HISTORY_SAMPLES),
                previous: None,
            }),
        }
    }

    fn totals(&self) -> Totals {
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode_registry(&mut text, &self.families);
        let mut t = Totals {
            spans_out: self.metrics.spans_exported.get(),
            sampled_out: self.metrics.spans_sampled_out.get(),
            ..Totals::default()
        };
        for line in text.lines() {
            let Some((name, labels, value)) = parse_sample_line(line) else {
                continue;
            };
            match name {
                "in_total" => t.spans_in += value,
                "decisions_total" => {
                    let label = |k: &str| labels.iter().find(|(n, _)| n == k).map(|(_, v)| v);
                    if let (Some(rule), Some(d)) = (label("rule"), label("decision")) {
                        let e = t.decisions.entry(rule.clone()).or_default();
                        if d == "keep" {
                            e.0 += value;
                        } else {
                            e.1 += value;
                        }
                    }
                }
                _ => {}
            }
        }
        t
    }

    /// Takes one sample now (the first one only sets the baseline, with zero counts).
    pub fn sample(&self) {
        let now = self.totals();
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let prev = inner.previous.take().unwrap_or_else(|| now.clone());
        let mut decisions: Vec<RuleCount> = now
            .decisions
            .iter()
            .map(|(rule, (k, d))| {
                let (pk, pd) = prev.decisions.get(rule).copied().unwrap_or((0, 0));
                RuleCount {
                    rule: rule.clone(),
                    keep: k.saturating_sub(pk),
                    drop: d.saturating_sub(pd),
                }
            })
            .collect();
        if decisions.len() > MAX_CHARTED_RULES {
            let rest = decisions.split_off(MAX_CHARTED_RULES - 1);
            decisions.push(RuleCount {
                rule: "other".into(),
                keep: rest.iter().map(|r| r.keep).sum(),
                drop: rest.iter().map(|r| r.drop).sum(),
            });
        }
        let sample = Sample {
            t: unix_ms(),
            spans_in: now.spans_in.saturating_sub(prev.spans_in),
            spans_out: now.spans_out.saturating_sub(prev.spans_out),
            sampled_out: now.sampled_out.saturating_sub(prev.sampled_out),
            buffer_bytes: self.metrics.buffer_bytes.get(),
            buffer_limit: self.metrics.buffer_bytes_limit.get(),
            decisions,
        };
        if inner.samples.len() == HISTORY_SAMPLES {
            inner.samples.pop_front();
        }
        inner.samples.push_back(sample);
        inner.previous = Some(now);
    }

    /// The samples, oldest first.
    pub fn samples(&self) -> Vec<Sample> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.samples.iter().cloned().collect()
    }
}

/// Samples `history` every [`SAMPLE_INTERVAL`] until `stop` completes.
pub async fn run_sampler(history: Arc<History>, stop: impl std::future::Future<Output = ()>) {
    let mut tick = tokio::time::interval(SAMPLE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = tick.tick() => history.sample(),
        }
    }
}

/// Label pairs of one sample line.
type Labels = Vec<(String, String)>;

/// One line of the text exposition: `name{k="v",...} value` (comments and blank lines give `None`).
fn parse_sample_line(line: &str) -> Option<(&str, Labels, u64)> {
    if line.starts_with('#') || line.is_empty() {
        return None;
    }
    let (head, value) = line.rsplit_once(' ')?;
    let value = value.parse::<f64>().ok()? as u64;
    let Some((name, rest)) = head.split_once('{') else {
        return Some((head, Vec::new(), value));
    };
    let body = rest.strip_suffix('}')?;
    let mut labels = Vec::new();
    let mut chars = body.chars().peekable();
    loop {
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            break;
        }
        if chars.next() != Some('"') {
            return None;
        }
        let mut v = String::new();
        loop {
            match chars.next()? {
                '\\' => match chars.next()? {
                    'n' => v.push('\n'),
                    c => v.push(c),
                },
                '"' => break,
                c => v.push(c),
            }
        }
        labels.push((key.trim_start_matches(',').to_owned(), v));
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
    Some((name, labels, value))
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// What the status routes read.
pub struct StatusContext {
    pub metrics: Arc<Metrics>,
    pub policy: Arc<ArcSwap<Policy>>,
    pub reloader: Option<Arc<Reloader>>,
    pub history: Arc<History>,
    /// Base URL of Jaeger's UI: a decision links to `{jaeger_ui_url}/trace/{trace_id}`.
    pub jaeger_ui_url: String,
    pub started_unix_ms: u64,
}

/// The status routes (merged into the admin router).
pub fn router(ctx: Arc<StatusContext>) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/status.js", get(script))
        .route("/status.css", get(style))
        .route("/api/status", get(status))
        .route("/debug/traces/{trace_id}", get(explain))
        .with_state(ctx)
}

async fn page() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        PAGE_HTML,
    )
}

async fn script() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        PAGE_JS,
    )
}

async fn style() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        PAGE_CSS,
    )
}

/// 200 with the explanation; 400 for a malformed id; 404 when the trace was not decided recently.
async fn explain(State(ctx): State<Arc<StatusContext>>, Path(id): Path<String>) -> Response {
    let trace_id = match parse_trace_id(&id) {
        Ok(t) => t,
        Err(message) => {
            return (
                StatusCode::BAD_REQUEST,
                axum::Json(serde_json::json!({ "error": message })),
            )
                .into_response();
        }
    };
    match ctx.metrics.decision_log.get(trace_id) {
        Some(e) => axum::Json(RecentDecision::new(e, &ctx.jaeger_ui_url)).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            axum::Json(serde_json::json!({
                "error": format!(
                    "trace {trace_id:032x} was not decided recently: it is unknown, still buffered, or \
                     older than the last {} decisions remembered",
                    crate::explain::DEFAULT_EXPLAINED_TRACES
                ),
            })),
        )
            .into_response(),
    }
}

/// A loaded plugin as the page lists it.
#[derive(Debug, Serialize)]
pub struct PluginStatus {
    pub rule: String,
    /// `sampler`, `shadow sampler` or `redactor`.
    pub role: &'static str,
    pub path: String,
    pub sha256: String,
    pub size_bytes: u64,
    pub load_ms: f64,
    pub compile_ms: f64,
    pub from_cache: bool,
    pub calls: u64,
    /// Mean call time (marshalling included), microseconds.
    pub mean_call_us: f64,
    pub failures: u64,
    pub traps: u64,
    pub timeouts: u64,
    pub out_of_memory: u64,
    pub bad_results: u64,
}

impl PluginStatus {
    fn new(rule: &str, role: &'static str, s: PluginStats) -> PluginStatus {
        PluginStatus {
            rule: rule.to_owned(),
            role,
            path: s.path.display().to_string(),
            sha256: s.sha256,
            size_bytes: s.size_bytes,
            load_ms: s.load_time.as_secs_f64() * 1e3,
            compile_ms: s.compile_time.as_secs_f64() * 1e3,
            from_cache: s.from_cache,
            calls: s.calls,
            mean_call_us: if s.calls == 0 {
                0.0
            } else {
                s.call_nanos_total as f64 / s.calls as f64 / 1e3
            },
            failures: s.traps + s.timeouts + s.out_of_memory + s.bad_results,
            traps: s.traps,
            timeouts: s.timeouts,
            out_of_memory: s.out_of_memory,
            bad_results: s.bad_results,
        }
    }
}

/// A recent decision with its link into Jaeger.
#[derive(Debug, Serialize)]
struct RecentDecision {
    #[serde(flatten)]
    explanation: Explanation,
    /// Only kept traces reach Jaeger.
    jaeger_url: Option<String>,
}

impl RecentDecision {
    /// The explanation with `{jaeger_ui_url}/trace/{trace id}` when the trace was kept (the page's
    /// list and `GET /debug/traces/{id}` link the same way).
    fn new(explanation: Explanation, jaeger_ui_url: &str) -> RecentDecision {
        let base = jaeger_ui_url.trim_end_matches('/');
        RecentDecision {
            jaeger_url: (explanation.decision == "keep")
                .then(|| format!("{base}/trace/{:032x}", explanation.trace_id)),
            explanation,
        }
    }
}

/// Everything the page shows, as `GET /api/status` answers it.
pub fn snapshot(ctx: &StatusContext) -> serde_json::Value {
    let policy = ctx.policy.load();
    let mut plugins = Vec::new();
    for (r, shadow) in policy.sampler_plugins() {
        if let Some(s) = r.sampler.stats() {
            let role = if shadow { "shadow sampler" } else { "sampler" };
            plugins.push(PluginStatus::new(&r.name, role, s));
        }
    }
    for r in &policy.redactors.rules {
        if let Some(s) = r.redactor.stats() {
            plugins.push(PluginStatus::new(&r.name, "redactor", s));
        }
    }
    let base = ctx.jaeger_ui_url.trim_end_matches('/');
    let recent: Vec<RecentDecision> = ctx
        .metrics
        .decision_log
        .recent()
        .into_iter()
        .map(|e| RecentDecision::new(e, base))
        .collect();
    let reload = ctx.reloader.as_ref().map(|r| {
        serde_json::json!({
            "config": r.path().display().to_string(),
            "last": r.last_outcome().map(|(at, o)| serde_json::json!({"at_unix": at, "outcome": o})),
        })
    });
    let m = &ctx.metrics;
    serde_json::json!({
        "now_unix_ms": unix_ms(),
        "started_unix_ms": ctx.started_unix_ms,
        "sample_interval_ms": SAMPLE_INTERVAL.as_millis() as u64,
        "jaeger_ui_url": base,
        "history": ctx.history.samples(),
        "buffer": {
            "bytes": m.buffer_bytes.get(),
            "limit": m.buffer_bytes_limit.get(),
            "traces": m.buffer_traces.get(),
            "spans": m.buffer_spans.get(),
        },
        "totals": {
            "spans_out": m.spans_exported.get(),
            "sampled_out": m.spans_sampled_out.get(),
        },
        "memory": {
            "limit": m.memory_limit_bytes.get(),
            "resident": m.resident_memory_bytes.get(),
            "resident_peak": m.resident_memory_peak_bytes.get(),
            "export_queue_bytes": m.export_queue_bytes.get(),
            "export_queue_limit": m.export_queue_capacity_bytes.get(),
        },
        "second_chance": {
            "ring_bytes": m.rescue_ring_bytes.get(),
            "ring_traces": m.rescue_ring_traces.get(),
            "rescued_late_span": m.rescued_traces.get_or_create(&crate::metrics::ReasonLabels { reason: "late_span" }).get(),
            "rescued_request": m.rescued_traces.get_or_create(&crate::metrics::ReasonLabels { reason: "request" }).get(),
            "evicted_bytes": m.rescue_ring_evicted.get_or_create(&crate::metrics::ReasonLabels { reason: "bytes" }).get(),
            "evicted_expired": m.rescue_ring_evicted.get_or_create(&crate::metrics::ReasonLabels { reason: "expired" }).get(),
        },
        "policy": {
            "rules": policy.rules.iter().map(|r| serde_json::json!({"name": &*r.name, "shadow": r.shadow})).collect::<Vec<_>>(),
            "default": format!("{:?}", policy.default).to_lowercase(),
            "redactors": policy.redactors.rules.iter().map(|r| &*r.name).collect::<Vec<_>>(),
        },
        "plugins": plugins,
        "reload": reload,
        "last_load_unix": m.reload_success_timestamp.get(),
        "recent": recent,
    })
}

async fn status(State(ctx): State<Arc<StatusContext>>) -> impl IntoResponse {
    axum::Json(snapshot(&ctx))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_lines_parse_with_escaped_labels() {
        let (name, labels, v) =
            parse_sample_line(r#"decisions_total{rule="a \"b\", c",decision="keep"} 12"#)
                .expect("test value");
        assert_eq!(name, "decisions_total");
        assert_eq!(labels[0], ("rule".into(), "a \"b\", c".into()));
        assert_eq!(labels[1], ("decision".into(), "keep".into()));
        assert_eq!(v, 12);
        assert!(parse_sample_line("# HELP x").is_none());
        assert_eq!(parse_sample_line("in_total 3").expect("test value").2, 3);
    }

    #[test]
    fn history_counts_per_interval_and_is_bounded() {
        let metrics = Metrics::new();
        let h = History::new(metrics.clone());
        h.sample();
        metrics
            .spans_received
            .get_or_create(&crate::metrics::ReceiverLabels { receiver: "grpc" })
            .inc_by(5);
        metrics
            .spans_received
            .get_or_create(&crate::metrics::ReceiverLabels { receiver: "http" })
            .inc_by(2);
        metrics
            .decisions
            .get_or_create(&crate::metrics::DecisionLabels {
                rule: "errors".into(),
                decision: "keep",
            })
            .inc_by(3);
        metrics.spans_exported.inc_by(4);
        h.sample();
        let s = h.samples();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].spans_in, 0);
        assert_eq!(s[1].spans_in, 7);
        assert_eq!(s[1].spans_out, 4);
        assert_eq!(
            s[1].decisions,
            vec![RuleCount {
                rule: "errors".into(),
                keep: 3,
                drop: 0
            }]
        );
        for _ in 0..HISTORY_SAMPLES + 10 {
            h.sample();
        }
        assert_eq!(h.samples().len(), HISTORY_SAMPLES);
    }
}
