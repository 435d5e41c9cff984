//! Scale-out on Kafka (cargo feature `kafka`): the ingest tier publishes each trace's spans to a topic
//! keyed by trace id ([`sink`]), and sampler replicas in one consumer group read it ([`source`]), so every
//! span of a trace reaches the same replica and a dead replica's partitions move to the others.
//!
//! ```text
//!  services ─OTLP─► tailgate (exporters.kafka) ─key=trace id─► topic ─► tailgate replicas (receivers.kafka,
//!                   or an OTel Collector with                    (N      one consumer group) ─OTLP─► Jaeger
//!                   the Kafka exporter, otlp_proto)               partitions)
//! ```
//!
//! No loss on failover: a message's offset is committed only once every span in it is decided and handed
//! to the exporter ([`crate::ingest::Ack`]); the committed offset of a partition is the oldest message
//! still undecided ([`offsets`]). A replica that takes a partition over re-reads from there and decides
//! those traces again; the offsets it re-reads below the previous owner's reserved read position are
//! counted as replays (`tailgate_kafka_replayed_spans_total`), an upper bound on spans exported twice. On
//! a graceful rebalance the revoked partitions' traces are decided at once (trigger `handoff`) and their
//! offsets committed before the revocation completes. See `docs/kafka.md`.

pub mod offsets;
#[cfg(feature = "kafka")]
pub mod sink;
#[cfg(feature = "kafka")]
pub mod source;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The receiver label of spans read from Kafka (`tailgate_spans_received_total{receiver="kafka"}`).
pub const RECEIVER: &str = "kafka";

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
