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
//! Series are bounded: past `max_series` operations (or `max_edges` edges) new ones are counted under
//! `operation="__overflow__"` (resp. dropped from the graph) and in `tailgate_topology_overflow_total`.

use crate::otlp::{KeyFinder, SpanRecord, StatusCode};
use foldhash::{HashMap as FastMap, HashSet as FastSet};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, OnceLock, RwLock};

/// `topology:` in the config.
#[derive(Debug, Clone, Deserialize, PartialEq)]
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
    series: AtomicUsize,
    ops: HandleMap<OpHandles>,
    edges: HandleMap<EdgeHandles>,
    registry: Registry,
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
fn op_key(key: &mut Vec<u8>, s: &SpanRecord) {
    key.clear();
    key.extend_from_slice(s.origin.service_name.as_bytes());
    key.push(0xff);
    key.extend_from_slice(s.name_bytes());
    key.push(0xff);
    key.push(s.kind);
}

fn edge_key(key: &mut Vec<u8>, client: &str, server: &str, conn: &'static str) {
    key.clear();
    key.extend_from_slice(client.as_bytes());
    key.push(0xff);
    key.extend_from_slice(server.as_bytes());
    key.push(0xff);
    key.extend_from_slice(conn.as_bytes());
}

/// The attributes that name what an uninstrumented client span calls, in [`KeyFinder`] order.
static PEER_KEYS: LazyLock<KeyFinder> = LazyLock::new(|| {
    KeyFinder::new(
        &[
            "peer.service",
            "db.system.name",
            "db.system",
            "messaging.system",
            "server.address",
            "net.peer.name",
        ]
        .map(String::from),
    )
});

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
            series: AtomicUsize::new(0),
            ops: RwLock::default(),
            edges: RwLock::default(),
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

    /// Accounts a complete trace (all its spans, whatever the decision will be).
    pub fn observe(&self, spans: &[SpanRecord]) {
        if !self.enabled || spans.is_empty() {
            return;
        }
        self.observe_ops(spans);
        self.observe_edges(spans);
    }

    /// Accounts late spans (operations only: their parents were already accounted).
    pub fn observe_late(&self, spans: &[SpanRecord]) {
        if self.enabled {
            self.observe_ops(spans);
        }
    }

    fn observe_ops(&self, spans: &[SpanRecord]) {
        let mut key = Vec::with_capacity(64);
        let mut misses = Vec::new();
        {
            let ops = read(&self.ops);
            for (i, s) in spans.iter().enumerate() {
                op_key(&mut key, s);
                match ops.get(key.as_slice()) {
                    Some(h) => h.record(s, self),
                    None => misses.push(i),
                }
            }
        }
        for i in misses {
            let s = &spans[i];
            op_key(&mut key, s);
            self.resolve_op(&key, s).record(s, self);
        }
    }

    /// The handles of a span's operation on a cache miss: creates its series, or counts it under
    /// `__overflow__` past `max_series` (such operations are not cached, so the cache stays bounded).
    fn resolve_op(&self, key: &[u8], s: &SpanRecord) -> Arc<OpHandles> {
        let mut ops = write(&self.ops);
        if let Some(h) = ops.get(key) {
            return h.clone();
        }
        let mut labels = OpLabels {
            service: s.origin.service_name.to_string(),
            operation: s.name().to_owned(),
            span_kind: kind_name(s.kind),
        };
        let mut cache = true;
        if self.calls.get(&labels).is_none() {
            if self.series.load(Ordering::Relaxed) >= self.max_series {
                self.overflow
                    .get_or_create(&OverflowLabels { kind: "series" })
                    .inc();
                labels.operation = OVERFLOW.to_owned();
                cache = false;
            } else {
                self.series.fetch_add(1, Ordering::Relaxed);
            }
        }
        let h = Arc::new(OpHandles {
            calls: self.calls.get_or_create(&labels).clone(),
            errors: OnceLock::new(),
            durations: self.durations.get_or_create(&labels).clone(),
            labels,
        });
        if cache {
            ops.insert(key.to_vec(), h.clone());
        }
        h
    }

    fn observe_edges(&self, spans: &[SpanRecord]) {
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
                &s.origin.service_name,
                conn,
                failed,
                p.duration_nanos(),
                s.duration_nanos(),
            );
        }
        // Calls into what is not instrumented: a database, a queue, an external service.
        for s in spans {
            if !(s.kind == CLIENT || s.kind == PRODUCER) || has_remote_child.contains(&s.span_id) {
                continue;
            }
            let (mut peer, mut db, mut queue, mut addr) = (None, None, None, None);
            PEER_KEYS.span_attributes(&s.raw, |i, v| match i {
                0 => peer = v.as_str(),
                1 | 2 => db = v.as_str(),
                3 => queue = v.as_str(),
                _ => addr = v.as_str(),
            });
            let target = match (peer, db, queue, addr) {
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
                    s.duration_nanos(),
                    s.duration_nanos(),
                );
            }
        }
    }

    fn edge(
        &self,
        client: &str,
        server: &str,
        conn: &'static str,
        failed: bool,
        client_ns: u64,
        server_ns: u64,
    ) {
        let mut key = Vec::with_capacity(64);
        edge_key(&mut key, client, server, conn);
        let cached = read(&self.edges).get(key.as_slice()).cloned();
        let h = match cached {
            Some(h) => h,
            None => {
                let mut edges = write(&self.edges);
                match edges.get(key.as_slice()) {
                    Some(h) => h.clone(),
                    None if edges.len() >= self.max_edges => {
                        self.overflow
                            .get_or_create(&OverflowLabels { kind: "edges" })
                            .inc();
                        return;
                    }
                    None => {
                        let labels = EdgeLabels {
                            client: client.to_owned(),
                            server: server.to_owned(),
                            connection_type: conn,
                        };
                        let h = Arc::new(EdgeHandles {
                            requests: self.edge_requests.get_or_create(&labels).clone(),
                            failed: OnceLock::new(),
                            server_seconds: self.edge_server.get_or_create(&labels).clone(),
                            client_seconds: self.edge_client.get_or_create(&labels).clone(),
                            server_nanos: AtomicU64::new(0),
                            labels,
                        });
                        edges.insert(key, h.clone());
                        h
                    }
                }
            }
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

    /// The service graph so far.
    pub fn graph(&self) -> Graph {
        let edges = read(&self.edges);
        let mut out: Vec<Edge> = edges
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
