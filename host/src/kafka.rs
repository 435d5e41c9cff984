//! Scale-out on Kafka (cargo feature `kafka`): the ingest tier publishes each trace's spans to a topic
//! keyed by trace id (`kafka::sink`), and sampler replicas in one consumer group read it (`kafka::source`), so every
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

pub use crate::metrics::kafka::{KafkaMetrics, OutcomeLabels, RebalanceLabels};

/// The receiver label of spans read from Kafka (`tailgate_spans_received_total{receiver="kafka"}`).
pub const RECEIVER: &str = "kafka";
