//! The Kafka source's and sink's metrics (`tailgate_kafka_*`), registered whether or not the `kafka`
//! feature is built, so dashboards see the same names everywhere.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `ok` or `error`; for commits also `async_error` (an asynchronous commit, counted `ok` when sent,
    /// that the broker then refused).
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RebalanceLabels {
    /// `assign` or `revoke`.
    pub kind: &'static str,
}

/// Kafka source and sink metrics (registered under `tailgate_kafka_`).
#[derive(Default)]
pub struct KafkaMetrics {
    /// Messages read from the topic.
    pub messages_consumed: Counter,
    /// Messages that were not an OTLP `ExportTraceServiceRequest` (skipped, counted, committed past).
    pub messages_invalid: Counter,
    /// Spans re-read after a partition moved that the previous owner may already have decided (each can
    /// reach the exporter twice if its trace is kept): the bound on duplicates.
    pub replayed_spans: Counter,
    /// Messages counted in `replayed_spans`.
    pub replayed_messages: Counter,
    /// Offset commits sent, by outcome.
    pub commits: Family<OutcomeLabels, Counter>,
    /// Partitions assigned to this replica.
    pub partitions_assigned: Gauge,
    /// Rebalance events, by kind.
    pub rebalances: Family<RebalanceLabels, Counter>,
    /// Revoked partitions let go before all their traces were decided (`handoff_timeout` ran out); the
    /// next owner re-reads the rest.
    pub handoff_timeouts: Counter,
    /// Messages published by the ingest tier, by outcome (`error`: their spans are counted as lost).
    pub messages_produced: Family<OutcomeLabels, Counter>,
}

impl KafkaMetrics {
    /// Registers every metric in `registry` (under a `kafka` sub-registry).
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("kafka");
        r.register(
            "messages_consumed",
            "Messages read from Kafka",
            self.messages_consumed.clone(),
        );
        r.register(
            "messages_invalid",
            "Kafka messages that were not OTLP trace requests (skipped)",
            self.messages_invalid.clone(),
        );
        r.register(
            "replayed_spans",
            "Spans re-read after a partition moved that the previous owner may have decided",
            self.replayed_spans.clone(),
        );
        r.register(
            "replayed_messages",
            "Messages re-read after a partition moved that the previous owner may have decided",
            self.replayed_messages.clone(),
        );
        r.register("commits", "Offset commits by outcome", self.commits.clone());
        r.register(
            "partitions_assigned",
            "Partitions assigned to this replica",
            self.partitions_assigned.clone(),
        );
        r.register(
            "rebalances",
            "Consumer group rebalance events by kind",
            self.rebalances.clone(),
        );
        r.register(
            "handoff_timeouts",
            "Revoked partitions let go before all their traces were decided",
            self.handoff_timeouts.clone(),
        );
        r.register(
            "messages_produced",
            "Messages published to Kafka by the ingest tier, by outcome",
            self.messages_produced.clone(),
        );
    }
}
