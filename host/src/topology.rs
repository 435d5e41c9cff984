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

use crate::otlp::{SpanRecord, StatusCode};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

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

#[derive(Default)]
struct EdgeStats {
    requests: u64,
    failed: u64,
    server_seconds: f64,
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
    edges: Mutex<HashMap<(String, String, &'static str), EdgeStats>>,
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

/// Spans, errors and durations (seconds) of one operation within a trace.
type OpTally = (u64, u64, Vec<f64>);

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
            edges: Mutex::new(HashMap::new()),
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
        // Aggregate within the trace first, so the shared families see one update per distinct operation.
        let mut local: HashMap<(&str, &str, u8), OpTally> = HashMap::new();
        for s in spans {
            let e = local
                .entry((&*s.origin.service_name, s.name(), s.kind))
                .or_default();
            e.0 += 1;
            e.1 += u64::from(s.status == StatusCode::Error);
            e.2.push(s.duration_nanos() as f64 / 1e9);
        }
        for ((service, op, kind), (n, errors, durations)) in local {
            let mut labels = OpLabels {
                service: service.to_owned(),
                operation: op.to_owned(),
                span_kind: kind_name(kind),
            };
            if self.calls.get(&labels).is_none() {
                if self.series.load(Ordering::Relaxed) >= self.max_series {
                    self.overflow
                        .get_or_create(&OverflowLabels { kind: "series" })
                        .inc_by(n);
                    labels.operation = OVERFLOW.to_owned();
                } else {
                    self.series.fetch_add(1, Ordering::Relaxed);
                }
            }
            self.calls.get_or_create(&labels).inc_by(n);
            if errors > 0 {
                self.errors.get_or_create(&labels).inc_by(errors);
            }
            let h = self.durations.get_or_create(&labels);
            for d in durations {
                h.observe(d);
            }
        }
    }

    fn observe_edges(&self, spans: &[SpanRecord]) {
        let by_id: HashMap<u64, &SpanRecord> = spans.iter().map(|s| (s.span_id, s)).collect();
        let mut has_remote_child: HashMap<u64, bool> = HashMap::new();
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
            has_remote_child.insert(p.span_id, true);
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
            if !(s.kind == CLIENT || s.kind == PRODUCER)
                || has_remote_child.contains_key(&s.span_id)
            {
                continue;
            }
            let (mut peer, mut db, mut queue, mut addr) = (None, None, None, None);
            for kv in s.attributes() {
                match kv.key {
                    "peer.service" => peer = kv.value.as_str(),
                    "db.system.name" | "db.system" => db = kv.value.as_str(),
                    "messaging.system" => queue = kv.value.as_str(),
                    "server.address" | "net.peer.name" => addr = kv.value.as_str(),
                    _ => {}
                }
            }
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
        {
            let mut edges = self.edges.lock().unwrap_or_else(|p| p.into_inner());
            let key = (client.to_owned(), server.to_owned(), conn);
            if !edges.contains_key(&key) && edges.len() >= self.max_edges {
                self.overflow
                    .get_or_create(&OverflowLabels { kind: "edges" })
                    .inc();
                return;
            }
            let e = edges.entry(key).or_default();
            e.requests += 1;
            e.failed += u64::from(failed);
            e.server_seconds += server_ns as f64 / 1e9;
        }
        let labels = EdgeLabels {
            client: client.to_owned(),
            server: server.to_owned(),
            connection_type: conn,
        };
        self.edge_requests.get_or_create(&labels).inc();
        if failed {
            self.edge_failed.get_or_create(&labels).inc();
        }
        self.edge_server
            .get_or_create(&labels)
            .observe(server_ns as f64 / 1e9);
        self.edge_client
            .get_or_create(&labels)
            .observe(client_ns as f64 / 1e9);
    }

    /// The service graph so far.
    pub fn graph(&self) -> Graph {
        let edges = self.edges.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<Edge> = edges
            .iter()
            .map(|((c, s, conn), st)| Edge {
                client: c.clone(),
                server: s.clone(),
                connection_type: conn,
                requests: st.requests,
                failed: st.failed,
                mean_server_seconds: if st.requests > 0 {
                    st.server_seconds / st.requests as f64
                } else {
                    0.0
                },
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
