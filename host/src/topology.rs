//! Service topology and RED metrics from every trace, before sampling drops any of it.
//!
//! Tail sampling skews what a tracing backend can show: once most normal traces are dropped and every slow
//! or failing one is kept, latency, error rates and the dependency graph computed from stored traces are
//! wrong. tailgate sees every complete trace at decision time, so it computes them here, from 100 % of
//! traffic:
//! - per service, operation (span name) and span kind: span count, error count, duration histogram
//!   (`tailgate_span_calls_total`, `tailgate_span_errors_total`, `tailgate_span_duration_seconds`);
//! - a service graph from parent/child spans that cross services (a client/producer span in A whose
//!   server/consumer child is in B), plus calls to uninstrumented databases and queues (a client span with
//!   `db.system.name`/`db.system`/`peer.service`, or a producer with `messaging.system`, and no
//!   instrumented child), under the names Grafana's service graph panel reads:
//!   `traces_service_graph_request_total`, `traces_service_graph_request_failed_total`,
//!   `traces_service_graph_request_server_seconds`, `traces_service_graph_request_client_seconds`;
//!   and as JSON for the status page ([`Topology::graph`]).
//!
//! What the labels carry ([`labels`]): span names become their route template (`GET /users/{email}`,
//! `GET /orders/{n}`), and every service name, template and peer name passes the policy's redactors
//! once, when its series is created (cached), before it becomes a label or a graph node: these metrics
//! come from every trace, sampled out or not, so they must not carry what the export would not. A value
//! a redactor fails on becomes `{redacted}`; `tailgate_topology_label_checks_total{outcome}` counts the
//! checks (`unchanged`, `redacted`, `failed`).
//!
//! Series are bounded: past `max_series` series (or 4 x `max_series` distinct templates), new operations
//! are counted under `service="__overflow__",operation="__overflow__"` (one series per span kind) and
//! past `max_edges` edges new edges are dropped from the graph; both are counted in
//! `tailgate_topology_overflow_total{kind}`.

pub mod labels;

use crate::otlp::{KeyFinder, SpanRecord, StatusCode};
use foldhash::{HashMap as FastMap, HashSet as FastSet};
pub use labels::LabelRedactor;
use labels::{Checked, LabelPolicy, Source, template};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, OnceLock, RwLock};

/// `topology:` in the config.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TopologyConfig {
    /// Compute the metrics at all. Default true.
    pub enabled: bool,
    /// Histogram buckets in seconds. Default 2 ms .. 10 s.
    pub duration_buckets: Vec<f64>,
    /// Most (service, operation, kind) series. Default 5000.
    pub max_series: usize,
    /// Most service-graph edges. Default 1000.
    pub max_edges: usize,
}

impl Default for TopologyConfig {
    fn default() -> Self {
        TopologyConfig {
            enabled: true,
            duration_buckets: vec![
                0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ],
            max_series: 5000,
            max_edges: 1000,
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabels {
    service: String,
    operation: String,
    span_kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EdgeLabels {
    client: String,
    server: String,
    connection_type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OverflowLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CheckLabels {
    /// `unchanged`, `redacted` or `failed` (see [`Checked`]).
    outcome: &'static str,
}

#[derive(Clone)]
struct Buckets(Vec<f64>);

impl MetricConstructor<Histogram> for Buckets {
    fn new_metric(&self) -> Histogram {
        Histogram::new(self.0.iter().copied())
    }
}

/// One edge of the service graph, as JSON.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Edge {
    pub client: String,
    pub server: String,
    pub connection_type: &'static str,
    pub requests: u64,
    pub failed: u64,
    /// Mean server-side duration in seconds.
    pub mean_server_seconds: f64,
}

/// The service graph as JSON.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Graph {
    pub nodes: Vec<String>,
    pub edges: Vec<Edge>,
}

/// The metrics and the graph. Shared by the pipeline workers.
pub struct Topology {
    enabled: bool,
    max_series: usize,
    max_edges: usize,
    calls: Family<OpLabels, Counter>,
    errors: Family<OpLabels, Counter>,
    durations: Family<OpLabels, Histogram, Buckets>,
    edge_requests: Family<EdgeLabels, Counter>,
    edge_failed: Family<EdgeLabels, Counter>,
    edge_server: Family<EdgeLabels, Histogram, Buckets>,
    edge_client: Family<EdgeLabels, Histogram, Buckets>,
    overflow: Family<OverflowLabels, Counter>,
    label_checks: Family<CheckLabels, Counter>,
    series: AtomicUsize,
    /// Handles by `service 0xff template 0xff kind` (see [`op_key`]): every key is a template, so a span
    /// whose raw name is found here needs no templating. Bounded by [`MAX_TEMPLATES_PER_SERIES`] x
    /// `max_series`.
    ops: HandleMap<OpHandles>,
    /// The operations past the bounds, one per span kind.
    overflow_ops: [OnceLock<Arc<OpHandles>>; 6],
    edges: RwLock<EdgeMaps>,
    /// Label values checked against the policy.
    labels: LabelPolicy,
    registry: Registry,
}

/// Distinct templates (span names as [`template`] leaves them) per series allowed before new ones
/// overflow: several templates can end up as one label once the redactors have edited them.
const MAX_TEMPLATES_PER_SERIES: usize = 4;

/// The service-graph edges: by their raw key (what spans say, see [`edge_key`]) for the lookup per span,
/// and by their labels (after the policy) for the graph, since two raw edges can share labels.
#[derive(Default)]
struct EdgeMaps {
    by_key: FastMap<Vec<u8>, Arc<EdgeHandles>>,
    by_labels: FastMap<EdgeLabels, Arc<EdgeHandles>>,
}

fn kind_name(kind: u8) -> &'static str {
    match kind {
        1 => "internal",
        2 => "server",
        3 => "client",
        4 => "producer",
        5 => "consumer",
        _ => "unspecified",
    }
}

const SERVER: u8 = 2;
const CLIENT: u8 = 3;
const PRODUCER: u8 = 4;
const CONSUMER: u8 = 5;
const OVERFLOW: &str = "__overflow__";

/// The metric handles of one operation, resolved once: a family lookup hashes and compares the label
/// strings (and allocates them), which done per span cost more than the rest of a decision.
struct OpHandles {
    labels: OpLabels,
    calls: Counter,
    /// Created at the operation's first error, so operations without errors export no error series.
    errors: OnceLock<Counter>,
    durations: Histogram,
}

/// The metric handles and graph statistics of one service-graph edge.
struct EdgeHandles {
    labels: EdgeLabels,
    requests: Counter,
    failed: OnceLock<Counter>,
    server_seconds: Histogram,
    client_seconds: Histogram,
    /// Sum of server-side durations, for the graph's mean.
    server_nanos: AtomicU64,
}

/// Resolved handles by encoded key (see [`op_key`], [`edge_key`]).
type HandleMap<T> = RwLock<FastMap<Vec<u8>, Arc<T>>>;

/// `service 0xff name 0xff kind`: 0xff never occurs in UTF-8, so distinct label sets get distinct keys.
fn op_key(key: &mut Vec<u8>, s: &SpanRecord, name: &[u8]) {
    key.clear();
    key.extend_from_slice(s.origin.service_name.as_bytes());
    key.push(0xff);
    key.extend_from_slice(name);
    key.push(0xff);
    key.push(s.kind);
}

/// What a client span calls: another service, or something uninstrumented named by an attribute.
#[derive(Debug, Clone, Copy)]
enum Server<'a> {
    Service(&'a str),
    Peer(&'static str, &'a str),
}

impl<'a> Server<'a> {
    fn source(self) -> Source<'a> {
        match self {
            Server::Service(v) => Source::Service(v),
            Server::Peer(key, value) => Source::Peer { key, value },
        }
    }
}

fn edge_key(key: &mut Vec<u8>, client: &str, server: Server<'_>, conn: &'static str) {
    key.clear();
    key.extend_from_slice(client.as_bytes());
    key.push(0xff);
    if let Server::Peer(k, _) = server {
        key.extend_from_slice(k.as_bytes());
    }
    key.push(0xff);
    let (Server::Service(v) | Server::Peer(_, v)) = server;
    key.extend_from_slice(v.as_bytes());
    key.push(0xff);
    key.extend_from_slice(conn.as_bytes());
}

/// The attributes that name what an uninstrumented client span calls, in [`KeyFinder`] order.
const PEER_KEY_NAMES: [&str; 6] = [
    "peer.service",
    "db.system.name",
    "db.system",
    "messaging.system",
    "server.address",
    "net.peer.name",
];
static PEER_KEYS: LazyLock<KeyFinder> =
    LazyLock::new(|| KeyFinder::new(&PEER_KEY_NAMES.map(String::from)));

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

impl OpHandles {
    fn record(&self, s: &SpanRecord, t: &Topology) {
        self.calls.inc();
        if s.status == StatusCode::Error {
            self.errors
                .get_or_init(|| t.errors.get_or_create(&self.labels).clone())
                .inc();
        }
        self.durations.observe(s.duration_nanos() as f64 / 1e9);
    }
}

impl Topology {
    pub fn new(cfg: &TopologyConfig) -> Topology {
        let b = Buckets(cfg.duration_buckets.clone());
        let t = Topology {
            enabled: cfg.enabled,
            max_series: cfg.max_series,
            max_edges: cfg.max_edges,
            calls: Family::default(),
            errors: Family::default(),
            durations: Family::new_with_constructor(b.clone()),
            edge_requests: Family::default(),
            edge_failed: Family::default(),
            edge_server: Family::new_with_constructor(b.clone()),
            edge_client: Family::new_with_constructor(b),
            overflow: Family::default(),
            label_checks: Family::default(),
            series: AtomicUsize::new(0),
            ops: RwLock::default(),
            overflow_ops: Default::default(),
            edges: RwLock::default(),
            labels: LabelPolicy::new(
                cfg.max_series
                    .saturating_mul(MAX_TEMPLATES_PER_SERIES + 1)
                    .saturating_add(cfg.max_edges.saturating_mul(2)),
            ),
            registry: Registry::default(),
        };
        let mut registry = Registry::default();
        {
            let r = registry.sub_registry_with_prefix("tailgate");
            r.register(
                "span_calls",
                "Spans received, by service, operation and kind (before sampling)",
                t.calls.clone(),
            );
            r.register(
                "span_errors",
                "Spans with status ERROR (before sampling)",
                t.errors.clone(),
            );
            r.register(
                "span_duration_seconds",
                "Span durations (before sampling)",
                t.durations.clone(),
            );
            r.register(
                "topology_overflow",
                "Series or edges past the cardinality bound",
                t.overflow.clone(),
            );
            r.register(
                "topology_label_checks",
                "Label values (service, operation, peer names) checked against the redaction policy, by outcome",
                t.label_checks.clone(),
            );
        }
        registry.register(
            "traces_service_graph_request",
            "Requests between two services",
            t.edge_requests.clone(),
        );
        registry.register(
            "traces_service_graph_request_failed",
            "Failed requests between two services",
            t.edge_failed.clone(),
        );
        registry.register(
            "traces_service_graph_request_server_seconds",
            "Server-side duration of requests between two services",
            t.edge_server.clone(),
        );
        registry.register(
            "traces_service_graph_request_client_seconds",
            "Client-side duration of requests between two services",
            t.edge_client.clone(),
        );
        Topology { registry, ..t }
    }

    /// The registry to expose on `/metrics` (its names carry their own prefixes).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Accounts a complete trace (all its spans, whatever the decision will be). New label values pass
    /// `redactors` (the live policy's) before they are exposed.
    pub fn observe(&self, spans: &[SpanRecord], redactors: &dyn LabelRedactor) {
        if !self.enabled || spans.is_empty() {
            return;
        }
        self.observe_ops(spans, redactors);
        self.observe_edges(spans, redactors);
    }

    /// Accounts late spans (operations only: their parents were already accounted).
    pub fn observe_late(&self, spans: &[SpanRecord], redactors: &dyn LabelRedactor) {
        if self.enabled {
            self.observe_ops(spans, redactors);
        }
    }

    /// The label of a service name already checked against the policy (for the status page's list of
    /// dropped traces); `None` when it was not (yet) seen or topology is off.
    pub fn service_label(&self, service: &str) -> Option<Arc<str>> {
        self.labels.cached(Source::Service(service))
    }

    fn count_check(&self, c: Checked) {
        let outcome = match c {
            Checked::Unchanged => "unchanged",
            Checked::Redacted => "redacted",
            Checked::Failed => "failed",
        };
        self.label_checks
            .get_or_create(&CheckLabels { outcome })
            .inc();
    }

    fn observe_ops(&self, spans: &[SpanRecord], redactors: &dyn LabelRedactor) {
        let mut key = Vec::with_capacity(64);
        let mut tpl = String::new();
        let mut misses = Vec::new();
        {
            let ops = read(&self.ops);
            for (i, s) in spans.iter().enumerate() {
                // Most names are their own template: one lookup by the raw name finds them.
                op_key(&mut key, s, s.name_bytes());
                if let Some(h) = ops.get(key.as_slice()) {
                    h.record(s, self);
                    continue;
                }
                template(s.name(), &mut tpl);
                if tpl.as_bytes() != s.name_bytes() {
                    op_key(&mut key, s, tpl.as_bytes());
                    if let Some(h) = ops.get(key.as_slice()) {
                        h.record(s, self);
                        continue;
                    }
                }
                misses.push(i);
            }
        }
        for i in misses {
            let s = &spans[i];
            template(s.name(), &mut tpl);
            op_key(&mut key, s, tpl.as_bytes());
            self.resolve_op(&key, s, &tpl, redactors).record(s, self);
        }
    }

    /// The handles of a span's operation on a cache miss: checks its labels against the policy and
    /// creates its series, or counts it under `__overflow__` past the bounds (such operations are not
    /// cached, so the cache stays bounded, and are not checked, so the redactor calls are bounded too).
    fn resolve_op(
        &self,
        key: &[u8],
        s: &SpanRecord,
        tpl: &str,
        redactors: &dyn LabelRedactor,
    ) -> Arc<OpHandles> {
        let full = |ops: &FastMap<Vec<u8>, Arc<OpHandles>>| {
            self.series.load(Ordering::Relaxed) >= self.max_series
                || ops.len() >= self.max_series.saturating_mul(MAX_TEMPLATES_PER_SERIES)
        };
        {
            let ops = read(&self.ops);
            if let Some(h) = ops.get(key) {
                return h.clone();
            }
            if full(&ops) {
                return self.overflow_op(s.kind);
            }
        }
        // Checked without holding the map: a redactor call takes microseconds to milliseconds.
        let checked = self.labels.labels(
            &[
                Source::Service(&s.origin.service_name),
                Source::Operation(tpl),
            ],
            redactors,
            |c| self.count_check(c),
        );
        let labels = OpLabels {
            service: checked[0].to_string(),
            operation: checked[1].to_string(),
            span_kind: kind_name(s.kind),
        };
        let mut ops = write(&self.ops);
        if let Some(h) = ops.get(key) {
            return h.clone();
        }
        if self.calls.get(&labels).is_none() {
            if full(&ops) {
                drop(ops);
                return self.overflow_op(s.kind);
            }
            self.series.fetch_add(1, Ordering::Relaxed);
        } else if full(&ops) {
            // The templates' bound: an existing series, but no room to remember this template.
            drop(ops);
            return self.overflow_op(s.kind);
        }
        let h = Arc::new(OpHandles {
            calls: self.calls.get_or_create(&labels).clone(),
            errors: OnceLock::new(),
            durations: self.durations.get_or_create(&labels).clone(),
            labels,
        });
        ops.insert(key.to_vec(), h.clone());
        h
    }

    /// The overflow series of a span kind, counted once per span.
    fn overflow_op(&self, kind: u8) -> Arc<OpHandles> {
        self.overflow
            .get_or_create(&OverflowLabels { kind: "series" })
            .inc();
        let i = if kind <= CONSUMER { kind as usize } else { 0 };
        self.overflow_ops[i]
            .get_or_init(|| {
                let labels = OpLabels {
                    service: OVERFLOW.to_owned(),
                    operation: OVERFLOW.to_owned(),
                    span_kind: kind_name(kind),
                };
                Arc::new(OpHandles {
                    calls: self.calls.get_or_create(&labels).clone(),
                    errors: OnceLock::new(),
                    durations: self.durations.get_or_create(&labels).clone(),
                    labels,
                })
            })
            .clone()
    }

    fn observe_edges(&self, spans: &[SpanRecord], redactors: &dyn LabelRedactor) {
        let by_id: FastMap<u64, &SpanRecord> = spans.iter().map(|s| (s.span_id, s)).collect();
        let mut has_remote_child: FastSet<u64> = FastSet::default();
        for s in spans {
            if !(s.kind == SERVER || s.kind == CONSUMER) || s.parent_span_id == 0 {
                continue;
            }
            let Some(p) = by_id.get(&s.parent_span_id) else {
                continue;
            };
            if !(p.kind == CLIENT || p.kind == PRODUCER) {
                continue;
            }
            has_remote_child.insert(p.span_id);
            if p.origin.service_name == s.origin.service_name {
                continue;
            }
            let conn = if p.kind == PRODUCER {
                "messaging_system"
            } else {
                ""
            };
            let failed = p.status == StatusCode::Error || s.status == StatusCode::Error;
            self.edge(
                &p.origin.service_name,
                Server::Service(&s.origin.service_name),
                conn,
                failed,
                (p.duration_nanos(), s.duration_nanos()),
                redactors,
            );
        }
        // Calls into what is not instrumented: a database, a queue, an external service.
        for s in spans {
            if !(s.kind == CLIENT || s.kind == PRODUCER) || has_remote_child.contains(&s.span_id) {
                continue;
            }
            let mut found: [Option<&str>; 6] = [None; 6];
            PEER_KEYS.span_attributes(&s.raw, |i, v| {
                if let Some(slot) = found.get_mut(i) {
                    *slot = v.as_str();
                }
            });
            let peer = |i: usize| found[i].map(|v| Server::Peer(PEER_KEY_NAMES[i], v));
            let target = match (peer(0), peer(1).or(peer(2)), peer(3), peer(4).or(peer(5))) {
                (Some(p), ..) => Some((p, "virtual_node")),
                (None, Some(d), ..) => Some((d, "database")),
                (None, None, Some(q), _) => Some((q, "messaging_system")),
                (None, None, None, Some(a)) if s.kind == CLIENT => Some((a, "virtual_node")),
                _ => None,
            };
            if let Some((server, conn)) = target {
                let failed = s.status == StatusCode::Error;
                self.edge(
                    &s.origin.service_name,
                    server,
                    conn,
                    failed,
                    (s.duration_nanos(), s.duration_nanos()),
                    redactors,
                );
            }
        }
    }

    /// Counts one call on an edge; `nanos` is (client side, server side).
    fn edge(
        &self,
        client: &str,
        server: Server<'_>,
        conn: &'static str,
        failed: bool,
        (client_ns, server_ns): (u64, u64),
        redactors: &dyn LabelRedactor,
    ) {
        let mut key = Vec::with_capacity(64);
        edge_key(&mut key, client, server, conn);
        let cached = read(&self.edges).by_key.get(key.as_slice()).cloned();
        let h = match cached {
            Some(h) => h,
            None => match self.resolve_edge(key, client, server, conn, redactors) {
                Some(h) => h,
                None => {
                    self.overflow
                        .get_or_create(&OverflowLabels { kind: "edges" })
                        .inc();
                    return;
                }
            },
        };
        h.requests.inc();
        if failed {
            h.failed
                .get_or_init(|| self.edge_failed.get_or_create(&h.labels).clone())
                .inc();
        }
        h.server_nanos.fetch_add(server_ns, Ordering::Relaxed);
        h.server_seconds.observe(server_ns as f64 / 1e9);
        h.client_seconds.observe(client_ns as f64 / 1e9);
    }

    /// The handles of a new edge, its labels checked against the policy; `None` past `max_edges`.
    fn resolve_edge(
        &self,
        key: Vec<u8>,
        client: &str,
        server: Server<'_>,
        conn: &'static str,
        redactors: &dyn LabelRedactor,
    ) -> Option<Arc<EdgeHandles>> {
        if read(&self.edges).by_key.len() >= self.max_edges {
            return None;
        }
        let checked = self.labels.labels(
            &[Source::Service(client), server.source()],
            redactors,
            |c| self.count_check(c),
        );
        let labels = EdgeLabels {
            client: checked[0].to_string(),
            server: checked[1].to_string(),
            connection_type: conn,
        };
        let mut edges = write(&self.edges);
        if let Some(h) = edges.by_key.get(key.as_slice()) {
            return Some(h.clone());
        }
        if edges.by_key.len() >= self.max_edges {
            return None;
        }
        let h = match edges.by_labels.get(&labels) {
            Some(h) => h.clone(),
            None => {
                let h = Arc::new(EdgeHandles {
                    requests: self.edge_requests.get_or_create(&labels).clone(),
                    failed: OnceLock::new(),
                    server_seconds: self.edge_server.get_or_create(&labels).clone(),
                    client_seconds: self.edge_client.get_or_create(&labels).clone(),
                    server_nanos: AtomicU64::new(0),
                    labels: labels.clone(),
                });
                edges.by_labels.insert(labels, h.clone());
                h
            }
        };
        edges.by_key.insert(key, h.clone());
        Some(h)
    }

    /// The service graph so far.
    pub fn graph(&self) -> Graph {
        let edges = read(&self.edges);
        let mut out: Vec<Edge> = edges
            .by_labels
            .values()
            .map(|h| {
                let requests = h.requests.get();
                Edge {
                    client: h.labels.client.clone(),
                    server: h.labels.server.clone(),
                    connection_type: h.labels.connection_type,
                    requests,
                    failed: h.failed.get().map_or(0, Counter::get),
                    mean_server_seconds: if requests > 0 {
                        h.server_nanos.load(Ordering::Relaxed) as f64 / 1e9 / requests as f64
                    } else {
                        0.0
                    },
                }
            })
            .collect();
        out.sort_by(|a, b| (&a.client, &a.server).cmp(&(&b.client, &b.server)));
        let mut nodes: Vec<String> = out
            .iter()
            .flat_map(|e| [e.client.clone(), e.server.clone()])
            .collect();
        nodes.sort();
        nodes.dedup();
        Graph { nodes, edges: out }
    }
}

#[cfg(test)]
mod tests;
