//! Kafka export (`exporters.otlp.protocol: kafka`, cargo feature `kafka`): each export batch of kept,
//! redacted spans, already an encoded `ExportTraceServiceRequest`, is published as one unkeyed message
//! to `exporters.otlp.kafka.topic`, which is the `otlp_proto` encoding Jaeger v2's `kafka` receiver
//! (the Collector's kafkareceiver) reads. `tailgate -> topic -> Jaeger` then needs no Collector between.
//!
//! Being a [`super::Transport`], it shares the exporter's batching, retries with backoff, bounded queue,
//! persistent queue and span accounting. A send resolves when the broker acknowledged the message (or
//! librdkafka gave up on it): the producer is idempotent (`enable.idempotence=true`, so `acks=all`), so
//! librdkafka's own retries after a broker failover write a message once. What librdkafka reports is
//! mapped to a [`Failure`]: timeouts and unavailable leaders are retried by the exporter, a message too
//! large or a refused authorization is not. After a fatal producer error (the idempotent producer's
//! state is lost) a new producer is made and the batch retried on it.
//!
//! The producer's `message.max.bytes` is `batch.send_batch_max_bytes` plus
//! [`crate::config::KAFKA_MESSAGE_HEADROOM`]; the topic's (or broker's) `max.message.bytes` must allow
//! it too (a default broker allows about 1 MiB, hence the 900 KiB default batch limit with Kafka).

use super::{Accepted, ExportError, Failure};
use crate::config::{Compression, ExportProtocol, OtlpExporter, kafka_brokers, message_max_bytes};
use arc_swap::ArcSwap;
use bytes::Bytes;
use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// A producer for one topic.
pub(crate) struct KafkaTransport {
    /// Replaced after a fatal error (see [`KafkaTransport::renew`]).
    producer: ArcSwap<FutureProducer>,
    config: ClientConfig,
    topic: String,
    /// How long a message may wait for room in librdkafka's local queue.
    queue_timeout: Duration,
    /// Serialises the renewal of a failed producer among concurrent senders.
    renewing: Mutex<()>,
}

impl KafkaTransport {
    /// Creates the producer (brokers are contacted in the background; a bad `client_options` entry fails
    /// here).
    pub fn new(cfg: &OtlpExporter) -> Result<Self, ExportError> {
        let config = producer_config(cfg)?;
        let producer = create(&config)?;
        let topic = cfg
            .kafka
            .as_ref()
            .map(|k| k.topic.clone())
            .unwrap_or_default();
        tracing::info!(%topic, brokers = %cfg.endpoint, "exporter: publishing kept traces to kafka");
        Ok(KafkaTransport {
            producer: ArcSwap::from_pointee(producer),
            config,
            topic,
            queue_timeout: cfg.timeout,
            renewing: Mutex::new(()),
        })
    }

    pub async fn send(&self, body: Bytes) -> Result<Accepted, Failure> {
        let producer = self.producer.load_full();
        let record: FutureRecord<'_, (), [u8]> = FutureRecord::to(&self.topic).payload(&body[..]);
        match producer.send(record, self.queue_timeout).await {
            Ok(_) => Ok(Accepted::default()),
            Err((e, _)) => {
                let failure = classify(&e);
                if is_fatal(&e) || producer.client().fatal_error().is_some() {
                    self.renew(&producer);
                }
                Err(failure)
            }
        }
    }

    /// Replaces `failed` with a new producer, unless another sender already did.
    fn renew(&self, failed: &Arc<FutureProducer>) {
        let _guard = self.renewing.lock().unwrap_or_else(PoisonError::into_inner);
        if !Arc::ptr_eq(&self.producer.load(), failed) {
            return;
        }
        let reason = failed
            .client()
            .fatal_error()
            .map(|(c, m)| format!("{c:?}: {m}"));
        match create(&self.config) {
            Ok(p) => {
                tracing::error!(
                    fatal = ?reason,
                    "kafka exporter: the producer failed fatally; replaced it (a message it had in flight may be written twice)"
                );
                self.producer.store(Arc::new(p));
            }
            Err(e) => {
                tracing::error!(error = %e, "kafka exporter: cannot replace the failed producer")
            }
        }
    }
}

fn create(config: &ClientConfig) -> Result<FutureProducer, ExportError> {
    config
        .create()
        .map_err(|e| ExportError::Kafka(format!("cannot create the producer: {e}")))
}

/// The librdkafka producer configuration of `cfg` (validated by `Config::validate`).
pub(crate) fn producer_config(cfg: &OtlpExporter) -> Result<ClientConfig, ExportError> {
    let brokers = kafka_brokers(&cfg.endpoint).map_err(ExportError::Kafka)?;
    let max_bytes = message_max_bytes(cfg.batch.max_bytes(ExportProtocol::Kafka));
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers.join(","))
        .set("enable.idempotence", "true")
        .set("message.max.bytes", max_bytes.to_string())
        .set(
            "message.timeout.ms",
            cfg.timeout.as_millis().max(1).to_string(),
        )
        .set(
            "compression.type",
            match cfg.compression {
                Compression::Gzip => "gzip",
                Compression::None => "none",
            },
        )
        // The batcher already batches; a short linger only joins concurrent senders' messages.
        .set("linger.ms", "5");
    for (k, v) in cfg.kafka.iter().flat_map(|k| &k.client_options) {
        c.set(k, v);
    }
    Ok(c)
}

fn code(e: &KafkaError) -> Option<RDKafkaErrorCode> {
    match e {
        KafkaError::MessageProduction(c) => Some(*c),
        _ => e.rdkafka_error_code(),
    }
}

fn is_fatal(e: &KafkaError) -> bool {
    code(e) == Some(RDKafkaErrorCode::Fatal)
}

/// Maps a producer error to a failure. librdkafka has already retried what it retries itself (within
/// `message.timeout.ms`); the exporter retries timeouts, unavailable brokers and leaders and a full local
/// queue with its backoff, and gives up on what cannot succeed by waiting.
pub(super) fn classify(e: &KafkaError) -> Failure {
    use RDKafkaErrorCode as C;
    let (reason, retryable) = match code(e) {
        Some(C::MessageTimedOut | C::RequestTimedOut | C::OperationTimedOut) => {
            ("kafka_timeout", true)
        }
        Some(C::MessageSizeTooLarge | C::MessageBatchTooLarge) => ("kafka_msg_too_large", false),
        Some(C::QueueFull) => ("kafka_queue_full", true),
        Some(
            C::AllBrokersDown
            | C::BrokerTransportFailure
            | C::NetworkException
            | C::LeaderNotAvailable
            | C::NotLeaderForPartition
            | C::PreferredLeaderNotAvailable
            | C::NotEnoughReplicas
            | C::NotEnoughReplicasAfterAppend
            | C::KafkaStorageError
            | C::UnknownPartition,
        ) => ("kafka_unavailable", true),
        // The topic may be created after tailgate starts (auto-creation is off on most clusters).
        Some(C::UnknownTopic | C::UnknownTopicOrPartition) => ("kafka_unknown_topic", true),
        Some(
            C::TopicAuthorizationFailed
            | C::ClusterAuthorizationFailed
            | C::SaslAuthenticationFailed
            | C::Authentication,
        ) => ("kafka_auth", false),
        Some(C::InvalidMessage | C::InvalidRecord) => ("kafka_invalid", false),
        // The producer is replaced (see `KafkaTransport::renew`); the batch goes again on the new one.
        Some(
            C::Fatal | C::OutOfOrderSequenceNumber | C::InvalidProducerEpoch | C::ProducerFenced,
        ) => ("kafka_fatal", true),
        // Purged by a producer being dropped (shutdown, renewal).
        Some(C::PurgeQueue | C::PurgeInflight) => ("kafka_purged", true),
        _ if matches!(e, KafkaError::Canceled) => ("kafka_purged", true),
        // What librdkafka reports after its own retries is, otherwise, not worth waiting for.
        _ => ("kafka_error", false),
    };
    Failure {
        reason,
        retryable,
        retry_after: None,
        message: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ByteSize, Config, KafkaTopic};

    fn exporter(yaml_extra: &str) -> OtlpExporter {
        let y = format!(
            "exporters:\n  otlp:\n    protocol: kafka\n    endpoint: \"a:9092, b:9093\"\n    kafka:\n      topic: kept\n{yaml_extra}"
        );
        Config::parse(&y, "t").expect("valid").exporters.otlp
    }

    #[test]
    fn producer_is_idempotent_and_sized_from_the_batch_limit() {
        let cfg = exporter("");
        let c = producer_config(&cfg).expect("config");
        assert_eq!(c.get("bootstrap.servers"), Some("a:9092,b:9093"));
        assert_eq!(c.get("enable.idempotence"), Some("true"));
        assert_eq!(
            c.get("message.max.bytes"),
            Some("987136"),
            "900 KiB + 64 KiB"
        );
        assert_eq!(c.get("compression.type"), Some("gzip"));
        assert_eq!(c.get("message.timeout.ms"), Some("10000"));
        // librdkafka accepts it (no broker is contacted to create a producer).
        KafkaTransport::new(&cfg).expect("producer");

        let cfg = exporter(
            "      client_options: {linger.ms: \"20\", message.max.bytes: \"4000000\"}\n    batch:\n      send_batch_max_bytes: 3MiB\n",
        );
        let c = producer_config(&cfg).expect("config");
        assert_eq!(c.get("linger.ms"), Some("20"));
        assert_eq!(c.get("message.max.bytes"), Some("4000000"));
        KafkaTransport::new(&cfg).expect("a 3 MiB batch limit with room for it");
    }

    #[test]
    fn a_bad_client_option_fails_at_start() {
        let mut cfg = exporter("");
        cfg.kafka = Some(KafkaTopic {
            topic: "kept".into(),
            client_options: [("no.such.option".to_string(), "1".to_string())].into(),
        });
        cfg.batch.send_batch_max_bytes = Some(ByteSize::mib(1));
        let err = KafkaTransport::new(&cfg).err().expect("refused");
        assert!(err.to_string().contains("no.such.option"), "{err}");
    }

    #[test]
    fn errors_map_to_short_reasons() {
        let f = |c| classify(&KafkaError::MessageProduction(c));
        let timeout = f(RDKafkaErrorCode::MessageTimedOut);
        assert_eq!((timeout.reason, timeout.retryable), ("kafka_timeout", true));
        let large = f(RDKafkaErrorCode::MessageSizeTooLarge);
        assert_eq!(
            (large.reason, large.retryable),
            ("kafka_msg_too_large", false)
        );
        let down = f(RDKafkaErrorCode::AllBrokersDown);
        assert_eq!((down.reason, down.retryable), ("kafka_unavailable", true));
        let auth = f(RDKafkaErrorCode::TopicAuthorizationFailed);
        assert_eq!((auth.reason, auth.retryable), ("kafka_auth", false));
        let fatal = f(RDKafkaErrorCode::Fatal);
        assert_eq!((fatal.reason, fatal.retryable), ("kafka_fatal", true));
    }
}
