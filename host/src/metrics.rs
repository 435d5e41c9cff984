//! Prometheus metrics: one registry per running app, with every counter and gauge the stages update.
//! Served as text on the admin server's `/metrics`.
//!
//! Span accounting identity (checked by tests, documented in docs/operations.md): every accepted span ends
//! in exactly one of `tailgate_spans_exported_total`, `tailgate_spans_sampled_out_total`, or
//! `tailgate_spans_lost_total{reason}`; until then it is counted in exactly one of the in-flight gauges:
//!
//! ```text
//! spans_received_total + persistent_queue_recovered_spans_total
//!   = spans_exported_total + (spans_sampled_out_total - spans_rescued_total) + sum(spans_lost_total{reason})
//!   + ingest_queue_spans + buffer_spans + pipeline_spans + export_queue_spans + persistent_queue_spans
//! ```
//!
//! (A span moving between stages may be counted in two gauges for an instant; once idle it is exact.) A
//! span rescued by the second chance (`rescue`) was counted sampled out when its trace was dropped and
//! is counted again in `spans_rescued_total` when it is brought back.

pub mod kafka;

use crate::health::{PluginHealth, PluginRole};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReceiverLabels {
    /// `grpc`, `http`, or another source's name.
    pub receiver: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusedLabels {
    pub receiver: &'static str,
    /// `invalid_trace_id`, `malformed`, `too_large`, `backpressure`, ...
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    /// Rule that decided, or `default`, or `failure`.
    pub rule: String,
    /// `keep` or `drop`.
    pub decision: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TriggerLabels {
    /// `settle`, `idle`, `max_wait`, `size`, `pressure`, `shutdown`.
    pub trigger: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginLabels {
    pub plugin: String,
    /// `trap`, `timeout`, `out_of_memory`, `bad_result`.
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginNameLabels {
    /// The rule name of the plugin.
    pub plugin: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RedactionLabels {
    /// The redactor rule (`policy.redactors[].name`).
    pub rule: String,
    /// The reason the plugin gave for the edit (its detector, e.g. `email`), sanitized and capped in
    /// number; `other` past the cap, `none` when the plugin gave none.
    pub reason: String,
    /// `applied`, or `dry_run` when the edit was only counted.
    pub mode: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RedactionFallbackLabels {
    /// The redactor rule that failed.
    pub rule: String,
    /// What was done instead: `strict_scrub`, `drop`, or `dry_run` (counted, passed unchanged).
    pub action: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ShadowLabels {
    /// The shadow rule (`policy.rules[].name` with `shadow: true`).
    pub rule: String,
    /// What the shadow rule said: `keep`, `drop`, `abstain`, or `failure` (trap, timeout, bad result).
    pub decision: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ShadowAgreementLabels {
    pub rule: String,
    /// `agree` / `disagree` (the shadow rule kept or dropped, the same as / unlike the live decision),
    /// `abstain` (the shadow rule had no opinion), `failure` (it could not answer).
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    /// `ok` or `error`.
    pub outcome: &'static str,
}

/// All metrics of one tailgate instance.
pub struct Metrics {
    pub registry: Registry,
    /// RED metrics and the service graph from every trace (their own registry: the Grafana service-graph
    /// names carry no `tailgate_` prefix).
    pub topology: crate::topology::Topology,
    /// Spans accepted by a receiver (handed to the buffer).
    pub spans_received: Family<ReceiverLabels, Counter>,
    /// Spans not accepted, by receiver and reason (the client was told).
    pub spans_refused: Family<RefusedLabels, Counter>,
    /// Requests refused whole, by receiver and reason.
    pub requests_refused: Family<RefusedLabels, Counter>,
    /// Spans handed to the exporter and acknowledged by the downstream.
    pub spans_exported: Counter,
    /// Spans of traces that the policy dropped (on purpose).
    pub spans_sampled_out: Counter,
    /// Spans of dropped traces brought back by the second chance (counted in `spans_sampled_out` when
    /// dropped; the identity subtracts them).
    pub spans_rescued: Counter,
    /// Traces brought back by the second chance, by cause (`late_span`, `request`).
    pub rescued_traces: Family<ReasonLabels, Counter>,
    /// Bytes of dropped traces held by the second-chance ring.
    pub rescue_ring_bytes: Gauge,
    /// Dropped traces held by the second-chance ring.
    pub rescue_ring_traces: Gauge,
    /// Traces that left the ring unrescued, by reason (`bytes`: pushed out when full, `expired`).
    pub rescue_ring_evicted: Family<ReasonLabels, Counter>,
    /// Accepted spans that were lost, by reason (export gave up, redactor failed closed with drop, ...).
    pub spans_lost: Family<ReasonLabels, Counter>,
    /// Export requests that failed (each retry counts), by reason.
    pub export_failures: Family<ReasonLabels, Counter>,
    /// Spans waiting in the export queue (batching or retrying).
    pub export_queue_spans: Gauge,
    /// Capacity of the export queue in spans.
    pub export_queue_capacity: Gauge,
    /// Bytes of spans waiting in the export queue.
    pub export_queue_bytes: Gauge,
    /// Capacity of the export queue in bytes (`sending_queue.queue_bytes`).
    pub export_queue_capacity_bytes: Gauge,
    /// Bytes of traces handed by the buffer to the pipeline and not yet in the export queue or dropped.
    pub pipeline_bytes: Gauge,
    /// `service.memory_limit`, resolved.
    pub memory_limit_bytes: Gauge,
    /// The process's resident memory, sampled every 100 ms.
    pub resident_memory_bytes: Gauge,
    /// Highest resident memory sampled.
    pub resident_memory_peak_bytes: Gauge,
    /// Traces currently buffered.
    pub buffer_traces: Gauge,
    /// Spans currently buffered.
    pub buffer_spans: Gauge,
    /// Spans accepted by a receiver and waiting in the queue into the buffer.
    pub ingest_queue_spans: Gauge,
    /// Spans handed by the buffer to the pipeline and not yet decided (queued for or in a worker).
    pub pipeline_spans: Gauge,
    /// Highest bytes ever charged against `max_buffer_bytes` (ingest queue plus buffer).
    pub buffer_bytes_peak: Gauge,
    /// Spans in the exporter's persistent queue, waiting for delivery.
    pub persistent_queue_spans: Gauge,
    /// Bytes of undelivered batches in the persistent queue.
    pub persistent_queue_bytes: Gauge,
    /// The persistent queue's bound in bytes (`sending_queue.persistent.max_bytes`).
    pub persistent_queue_capacity_bytes: Gauge,
    /// Spans found undelivered in the persistent queue at startup (they join the accounting here).
    pub persistent_queue_recovered_spans: Counter,
    /// Records of the persistent queue that failed their checksum or were cut short (a write torn by a
    /// crash), skipped at startup or on read.
    pub persistent_queue_corrupt_records: Counter,
    /// Per-plugin call outcomes over a recent window, for `/health` (see [`crate::health`]).
    pub plugin_health: PluginHealth,
    /// 1 while a plugin is degraded (most of its recent calls failed), by plugin.
    pub plugin_degraded: Family<PluginNameLabels, Gauge>,
    /// Bytes charged to the buffer.
    pub buffer_bytes: Gauge,
    /// The byte bound.
    pub buffer_bytes_limit: Gauge,
    /// Traces decided, by rule and outcome.
    pub decisions: Family<DecisionLabels, Counter>,
    /// What made a trace due for decision.
    pub decision_triggers: Family<TriggerLabels, Counter>,
    /// Spans arriving after their trace was decided, by outcome (`kept`, `dropped`).
    pub late_spans: Family<ReasonLabels, Counter>,
    /// Seconds from a trace being due (the end of its settle, idle or max wait) to its decision being
    /// made (a late buffer timer, queueing, plugin time).
    pub decision_latency: Histogram,
    /// Plugin failures by plugin and kind.
    pub plugin_failures: Family<PluginLabels, Counter>,
    /// Traces seen by each shadow rule, by what it would have decided.
    pub shadow_decisions: Family<ShadowLabels, Counter>,
    /// Shadow rules' decisions compared with the live decision.
    pub shadow_agreement: Family<ShadowAgreementLabels, Counter>,
    /// Bytes of spans (as received) each shadow rule would keep / drop.
    pub shadow_bytes: Family<ShadowLabels, Counter>,
    /// Reload attempts (file change, SIGHUP, `POST /reload`), by outcome.
    pub reloads: Family<ReloadLabels, Counter>,
    /// Reload attempts that changed nothing because the new configuration or a plugin was bad.
    pub reload_failures: Counter,
    /// Unix time of the last successful (re)load, in seconds; set at startup by the first load.
    pub reload_success_timestamp: Gauge<f64, AtomicU64>,
    /// Redaction edits applied (or counted in dry-run mode), by redactor rule and reason.
    pub redactions: Family<RedactionLabels, Counter>,
    /// Spans changed by redaction (edited or scrubbed).
    pub redacted_spans: Counter,
    /// Traces whose redactor failed (trap, timeout, invalid edits), by rule and what was done instead.
    pub redaction_fallbacks: Family<RedactionFallbackLabels, Counter>,
    /// Spans scrubbed by the strict fallback.
    pub redaction_scrubbed_spans: Counter,
    /// Seconds spent redacting one kept trace (plugin calls and edit application).
    pub redaction_latency: Histogram,
    /// Why recent traces were kept or dropped (`GET /debug/traces/{id}`, the status page). Not
    /// Prometheus: a bounded log beside the metrics, fed by the same stage.
    pub decision_log: crate::explain::DecisionLog,
    /// The Kafka source and sink (see `crate::kafka`).
    pub kafka: kafka::KafkaMetrics,
    /// Seconds from a kept trace being due to its spans reaching the exporter's queue (decision,
    /// redaction queue, redaction), for traces decided while due (not late spans).
    pub handoff_latency: Histogram,
    /// Times a pipeline worker found the redaction queue full and waited for room.
    pub redaction_queue_full: Counter,
}

/// Bucket bounds of the latency histograms: 1-2-5 steps from 50 us to 20 s, so a bound falls on the
/// targets that are quoted against them (5 ms).
fn latency_buckets() -> impl Iterator<Item = f64> {
    [
        0.000_05, 0.000_1, 0.000_2, 0.000_5, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5,
        1.0, 2.0, 5.0, 10.0, 20.0,
    ]
    .into_iter()
}

impl Metrics {
    /// Records a plugin call in [`Metrics::plugin_health`], keeps `tailgate_plugin_degraded` in step, and logs
    /// when a plugin becomes degraded or recovers.
    pub fn record_plugin_call(
        &self,
        plugin: &str,
        role: PluginRole,
        failure: Option<&'static str>,
    ) {
        let Some(degraded) = self.plugin_health.record(plugin, role, failure) else {
            return;
        };
        self.plugin_degraded
            .get_or_create(&PluginNameLabels {
                plugin: plugin.to_owned(),
            })
            .set(i64::from(degraded));
        if degraded {
            tracing::error!(
                plugin,
                ?role,
                "plugin degraded: at least half of its recent calls failed (see /health)"
            );
        } else {
            tracing::info!(plugin, ?role, "plugin recovered");
        }
    }

    pub fn new() -> Arc<Metrics> {
        Metrics::with_topology(&crate::topology::TopologyConfig::default())
    }

    /// Metrics whose topology part (RED metrics and the service graph) follows `topology`.
    pub fn with_topology(topology: &crate::topology::TopologyConfig) -> Arc<Metrics> {
        let mut registry = Registry::with_prefix("tailgate");
        let m = Metrics {
            topology: crate::topology::Topology::new(topology),
            spans_received: Family::default(),
            spans_refused: Family::default(),
            requests_refused: Family::default(),
            spans_exported: Counter::default(),
            spans_sampled_out: Counter::default(),
            spans_rescued: Counter::default(),
            rescued_traces: Family::default(),
            rescue_ring_bytes: Gauge::default(),
            rescue_ring_traces: Gauge::default(),
            rescue_ring_evicted: Family::default(),
            spans_lost: Family::default(),
            export_failures: Family::default(),
            export_queue_spans: Gauge::default(),
            export_queue_capacity: Gauge::default(),
            export_queue_bytes: Gauge::default(),
            export_queue_capacity_bytes: Gauge::default(),
            pipeline_bytes: Gauge::default(),
            memory_limit_bytes: Gauge::default(),
            resident_memory_bytes: Gauge::default(),
            resident_memory_peak_bytes: Gauge::default(),
            buffer_traces: Gauge::default(),
            buffer_spans: Gauge::default(),
            ingest_queue_spans: Gauge::default(),
            pipeline_spans: Gauge::default(),
            buffer_bytes_peak: Gauge::default(),
            persistent_queue_spans: Gauge::default(),
            persistent_queue_bytes: Gauge::default(),
            persistent_queue_capacity_bytes: Gauge::default(),
            persistent_queue_recovered_spans: Counter::default(),
            persistent_queue_corrupt_records: Counter::default(),
            plugin_health: PluginHealth::default(),
            plugin_degraded: Family::default(),
            buffer_bytes: Gauge::default(),
            buffer_bytes_limit: Gauge::default(),
            decisions: Family::default(),
            decision_triggers: Family::default(),
            late_spans: Family::default(),
            decision_latency: Histogram::new(latency_buckets()),
            plugin_failures: Family::default(),
            shadow_decisions: Family::default(),
            shadow_agreement: Family::default(),
            shadow_bytes: Family::default(),
            reloads: Family::default(),
            reload_failures: Counter::default(),
            reload_success_timestamp: Gauge::default(),
            redactions: Family::default(),
            redacted_spans: Counter::default(),
            redaction_fallbacks: Family::default(),
            redaction_scrubbed_spans: Counter::default(),
            redaction_latency: Histogram::new(exponential_buckets(0.000_002, 2.0, 18)),
            decision_log: crate::explain::DecisionLog::default(),
            kafka: kafka::KafkaMetrics::default(),
            handoff_latency: Histogram::new(latency_buckets()),
            redaction_queue_full: Counter::default(),
            registry: Registry::default(),
        };
        registry.register(
            "spans_received",
            "Spans accepted by a receiver",
            m.spans_received.clone(),
        );
        registry.register(
            "spans_refused",
            "Spans refused by a receiver, by reason",
            m.spans_refused.clone(),
        );
        registry.register(
            "requests_refused",
            "Requests refused whole, by reason",
            m.requests_refused.clone(),
        );
        registry.register(
            "spans_exported",
            "Spans acknowledged by the downstream",
            m.spans_exported.clone(),
        );
        registry.register(
            "spans_sampled_out",
            "Spans of traces dropped by the policy",
            m.spans_sampled_out.clone(),
        );
        registry.register(
            "spans_rescued",
            "Spans of dropped traces brought back by the second chance",
            m.spans_rescued.clone(),
        );
        registry.register(
            "rescued_traces",
            "Dropped traces brought back by the second chance, by cause",
            m.rescued_traces.clone(),
        );
        registry.register(
            "rescue_ring_bytes",
            "Bytes of dropped traces held for a second chance",
            m.rescue_ring_bytes.clone(),
        );
        registry.register(
            "rescue_ring_traces",
            "Dropped traces held for a second chance",
            m.rescue_ring_traces.clone(),
        );
        registry.register(
            "rescue_ring_evicted",
            "Traces that left the second-chance ring unrescued, by reason",
            m.rescue_ring_evicted.clone(),
        );
        registry.register(
            "spans_lost",
            "Accepted spans lost, by reason",
            m.spans_lost.clone(),
        );
        registry.register(
            "export_failures",
            "Failed export attempts, by reason",
            m.export_failures.clone(),
        );
        registry.register(
            "export_queue_spans",
            "Spans waiting for export",
            m.export_queue_spans.clone(),
        );
        registry.register(
            "export_queue_capacity",
            "Export queue capacity in spans",
            m.export_queue_capacity.clone(),
        );
        registry.register(
            "export_queue_bytes",
            "Bytes of spans waiting for export",
            m.export_queue_bytes.clone(),
        );
        registry.register(
            "export_queue_capacity_bytes",
            "Export queue capacity in bytes",
            m.export_queue_capacity_bytes.clone(),
        );
        registry.register(
            "pipeline_bytes",
            "Bytes of traces being decided or redacted (counted against the buffer bound)",
            m.pipeline_bytes.clone(),
        );
        registry.register(
            "memory_limit_bytes",
            "The process's memory limit (service.memory_limit)",
            m.memory_limit_bytes.clone(),
        );
        registry.register(
            "resident_memory_bytes",
            "Resident memory of the process",
            m.resident_memory_bytes.clone(),
        );
        registry.register(
            "resident_memory_peak_bytes",
            "Highest resident memory of the process sampled",
            m.resident_memory_peak_bytes.clone(),
        );
        registry.register("buffer_traces", "Traces buffered", m.buffer_traces.clone());
        registry.register("buffer_spans", "Spans buffered", m.buffer_spans.clone());
        registry.register(
            "ingest_queue_spans",
            "Spans accepted and waiting to enter the buffer",
            m.ingest_queue_spans.clone(),
        );
        registry.register(
            "pipeline_spans",
            "Spans handed to the pipeline and not yet decided",
            m.pipeline_spans.clone(),
        );
        registry.register(
            "buffer_bytes_peak",
            "Highest bytes charged against the buffer bound",
            m.buffer_bytes_peak.clone(),
        );
        registry.register(
            "persistent_queue_spans",
            "Spans waiting in the persistent export queue",
            m.persistent_queue_spans.clone(),
        );
        registry.register(
            "persistent_queue_bytes",
            "Bytes of undelivered batches in the persistent export queue",
            m.persistent_queue_bytes.clone(),
        );
        registry.register(
            "persistent_queue_capacity_bytes",
            "Bound of the persistent export queue in bytes",
            m.persistent_queue_capacity_bytes.clone(),
        );
        registry.register(
            "persistent_queue_recovered_spans",
            "Spans found undelivered in the persistent queue at startup",
            m.persistent_queue_recovered_spans.clone(),
        );
        registry.register(
            "persistent_queue_corrupt_records",
            "Persistent queue records skipped for a bad checksum or a torn write",
            m.persistent_queue_corrupt_records.clone(),
        );
        registry.register(
            "plugin_degraded",
            "1 while most of a plugin's recent calls failed",
            m.plugin_degraded.clone(),
        );
        registry.register(
            "buffer_bytes",
            "Bytes charged to the buffer",
            m.buffer_bytes.clone(),
        );
        registry.register(
            "buffer_bytes_limit",
            "Buffer byte bound",
            m.buffer_bytes_limit.clone(),
        );
        registry.register(
            "decisions",
            "Traces decided, by rule and outcome",
            m.decisions.clone(),
        );
        registry.register(
            "decision_triggers",
            "Why traces became due",
            m.decision_triggers.clone(),
        );
        registry.register(
            "late_spans",
            "Spans after their trace's decision, by outcome",
            m.late_spans.clone(),
        );
        registry.register(
            "decision_latency_seconds",
            "Time from a trace being due to its decision",
            m.decision_latency.clone(),
        );
        registry.register(
            "handoff_latency_seconds",
            "Time from a kept trace being due to its spans reaching the exporter's queue",
            m.handoff_latency.clone(),
        );
        registry.register(
            "redaction_queue_full",
            "Times a pipeline worker waited for room in the redaction queue",
            m.redaction_queue_full.clone(),
        );
        registry.register(
            "plugin_failures",
            "Plugin call failures by plugin and kind",
            m.plugin_failures.clone(),
        );
        registry.register(
            "redactions",
            "Redaction edits by redactor rule and reason",
            m.redactions.clone(),
        );
        registry.register(
            "redacted_spans",
            "Spans changed by redaction",
            m.redacted_spans.clone(),
        );
        registry.register(
            "redaction_fallbacks",
            "Traces whose redactor failed, by rule and fallback action",
            m.redaction_fallbacks.clone(),
        );
        registry.register(
            "redaction_scrubbed_spans",
            "Spans scrubbed by the strict fallback",
            m.redaction_scrubbed_spans.clone(),
        );
        registry.register(
            "redaction_latency_seconds",
            "Time to redact one kept trace",
            m.redaction_latency.clone(),
        );
        registry.register(
            "shadow_decisions",
            "Traces seen by shadow rules, by what they would have decided",
            m.shadow_decisions.clone(),
        );
        registry.register(
            "shadow_agreement",
            "Shadow rules' decisions compared with the live decision",
            m.shadow_agreement.clone(),
        );
        registry.register(
            "shadow_bytes",
            "Bytes of spans shadow rules would keep or drop",
            m.shadow_bytes.clone(),
        );
        registry.register("reloads", "Reload attempts by outcome", m.reloads.clone());
        registry.register(
            "reload_failures",
            "Reloads refused because the new configuration or a plugin was bad",
            m.reload_failures.clone(),
        );
        registry.register(
            "reload_success_timestamp_seconds",
            "Unix time of the last successful configuration load",
            m.reload_success_timestamp.clone(),
        );
        m.kafka.register(&mut registry);
        Arc::new(Metrics { registry, ..m })
    }

    /// Prometheus text exposition of everything.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode_registry(&mut out, &self.registry);
        let _ =
            prometheus_client::encoding::text::encode_registry(&mut out, self.topology.registry());
        let _ = prometheus_client::encoding::text::encode_eof(&mut out);
        out
    }

    pub fn refused(&self, receiver: &'static str, reason: &'static str, spans: u64) {
        self.spans_refused
            .get_or_create(&RefusedLabels { receiver, reason })
            .inc_by(spans);
    }

    pub fn lost(&self, reason: &'static str, spans: u64) {
        self.spans_lost
            .get_or_create(&ReasonLabels { reason })
            .inc_by(spans);
    }

    /// The terms of the accounting identity (docs/operations.md) as they are now.
    pub fn accounting(&self) -> Accounting {
        // The families are read through the text encoding, so every label value is included.
        let mut families = Registry::default();
        families.register("received", "", self.spans_received.clone());
        families.register("lost", "", self.spans_lost.clone());
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode_registry(&mut text, &families);
        let mut a = Accounting {
            recovered: self.persistent_queue_recovered_spans.get(),
            exported: self.spans_exported.get(),
            // A rescued span was counted sampled out when its trace was dropped, then exported.
            sampled_out: self
                .spans_sampled_out
                .get()
                .saturating_sub(self.spans_rescued.get()),
            in_flight: [
                &self.ingest_queue_spans,
                &self.buffer_spans,
                &self.pipeline_spans,
                &self.export_queue_spans,
            ]
            .iter()
            .map(|g| u64::try_from(g.get()).unwrap_or(0))
            .sum(),
            persistent_queue: u64::try_from(self.persistent_queue_spans.get()).unwrap_or(0),
            ..Accounting::default()
        };
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((head, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<u64>() else {
                continue;
            };
            if head.starts_with("received_total") {
                a.received += value;
            } else if let Some(reason) = head
                .strip_prefix("lost_total{reason=\"")
                .and_then(|r| r.split('"').next())
            {
                *a.lost.entry(reason.to_owned()).or_default() += value;
            }
        }
        a
    }
}

/// The terms of the accounting identity of docs/operations.md at one instant: every span accepted (by
/// this run, or by a previous one and recovered from the persistent queue) is exported, sampled out,
/// lost with a reason, in flight in a memory stage, or on disk in the persistent queue.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Accounting {
    /// `tailgate_spans_received_total`, all receivers.
    pub received: u64,
    /// `tailgate_persistent_queue_recovered_spans_total`: left on disk by a previous run.
    pub recovered: u64,
    pub exported: u64,
    pub sampled_out: u64,
    /// `tailgate_spans_lost_total` by reason.
    pub lost: std::collections::BTreeMap<String, u64>,
    /// The memory stages: ingest queue, buffer, pipeline, export queue.
    pub in_flight: u64,
    /// `tailgate_persistent_queue_spans`.
    pub persistent_queue: u64,
}

impl Accounting {
    pub fn lost_total(&self) -> u64 {
        self.lost.values().sum()
    }

    pub fn lost_to(&self, reason: &str) -> u64 {
        self.lost.get(reason).copied().unwrap_or(0)
    }

    /// `reason=spans` pairs, comma-separated (`-` when nothing was lost), for a log line.
    pub fn lost_by_reason(&self) -> String {
        if self.lost.is_empty() {
            return "-".into();
        }
        let pairs: Vec<String> = self.lost.iter().map(|(r, n)| format!("{r}={n}")).collect();
        pairs.join(",")
    }

    /// Whether the identity holds: what came in equals where it went.
    pub fn balanced(&self) -> bool {
        self.received + self.recovered
            == self.exported
                + self.sampled_out
                + self.lost_total()
                + self.in_flight
                + self.persistent_queue
    }
}
