//! The Kafka sections of the configuration: `receivers.kafka` (the sampler tier reads a topic in a consumer
//! group), `exporters.kafka` (the ingest tier publishes each trace's spans to the topic, keyed by trace
//! id) and `exporters.otlp.kafka` (the topic of `exporters.otlp.protocol: kafka`, which publishes kept,
//! redacted traces, one message per export batch). Parsed in every build; running them needs the `kafka`
//! cargo feature.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// The topic the OpenTelemetry Collector's Kafka exporter and receiver use for traces by default.
pub const DEFAULT_TOPIC: &str = "otlp_spans";

/// What a build without the `kafka` feature says about a Kafka section.
pub const NO_KAFKA_FEATURE: &str =
    "tailgate was built without the `kafka` feature; rebuild with `cargo build --features kafka`";

/// `exporters.otlp.batch.send_batch_max_bytes` with `protocol: kafka` when not set: with the headroom
/// below the producer's `message.max.bytes` stays under librdkafka's default (1 000 000) and a default
/// broker's `message.max.bytes` (1 048 588), so a batch is one message Kafka accepts out of the box.
pub const DEFAULT_BATCH_MAX_BYTES: u64 = 900 * 1024;

/// Bytes allowed above `send_batch_max_bytes` for a Kafka message's framing (record and batch headers,
/// timestamp) and for the batcher's estimate of the encoded size: the producer's `message.max.bytes` is
/// the batch limit plus this.
pub const KAFKA_MESSAGE_HEADROOM: u64 = 64 * 1024;

/// librdkafka's largest `message.max.bytes`.
const LIBRDKAFKA_MAX_MESSAGE_BYTES: u64 = 1_000_000_000;

/// Message encodings tailgate reads and writes: the Collector's `otlp_proto` (a protobuf
/// `ExportTraceServiceRequest` per message).
#[derive(
    Debug, Clone, Copy, Deserialize, Serialize, schemars::JsonSchema, PartialEq, Eq, Default,
)]
pub enum KafkaEncoding {
    #[default]
    #[serde(rename = "otlp_proto")]
    OtlpProto,
}

/// Where a consumer group with no committed offset for a partition starts.
#[derive(
    Debug, Clone, Copy, Deserialize, Serialize, schemars::JsonSchema, PartialEq, Eq, Default,
)]
#[serde(rename_all = "lowercase")]
pub enum InitialOffset {
    /// The oldest message still in the topic: nothing published before the group existed is skipped.
    #[default]
    Earliest,
    /// Only messages published from now on.
    Latest,
}

/// `receivers.kafka`: read OTLP traces from a topic as one member of a consumer group.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaReceiver {
    /// Bootstrap brokers, `host:port`. Required.
    pub brokers: Vec<String>,
    /// Topic to read. Default `otlp_spans`.
    pub topic: String,
    /// Consumer group shared by the sampler replicas. Default `tailgate`.
    pub group_id: String,
    /// Message encoding. Only `otlp_proto`.
    pub encoding: KafkaEncoding,
    /// Where a new group starts. Default `earliest`.
    pub initial_offset: InitialOffset,
    /// How often decided offsets are committed. Default 1 s.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub commit_interval: Duration,
    /// How long a revoked partition's traces may take to be decided before the partition is let go
    /// (what is still undecided then is re-read by the next owner). Default 10 s.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub handoff_timeout: Duration,
    /// Replicas in the consumer group. Rules' `split_across_group` budgets are divided by it, so the
    /// cluster as a whole keeps to the configured budget. Default 1.
    pub group_size: u32,
    /// Extra librdkafka properties (`security.protocol`, `sasl.*`, `session.timeout.ms`, ...).
    #[serde(serialize_with = "super::redacted_client_options")]
    pub client_options: BTreeMap<String, String>,
}

impl Default for KafkaReceiver {
    fn default() -> Self {
        KafkaReceiver {
            brokers: Vec::new(),
            topic: DEFAULT_TOPIC.into(),
            group_id: "tailgate".into(),
            encoding: KafkaEncoding::OtlpProto,
            initial_offset: InitialOffset::Earliest,
            commit_interval: Duration::from_secs(1),
            handoff_timeout: Duration::from_secs(10),
            group_size: 1,
            client_options: BTreeMap::new(),
        }
    }
}

/// `exporters.kafka`: the ingest tier. Spans accepted by the OTLP receivers are published to the topic,
/// one message per trace per request, keyed by the trace id, instead of being sampled here.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaExporter {
    /// Bootstrap brokers, `host:port`. Required.
    pub brokers: Vec<String>,
    /// Topic to publish to. Default `otlp_spans`.
    pub topic: String,
    /// Message encoding. Only `otlp_proto`.
    pub encoding: KafkaEncoding,
    /// How long a message may wait for the broker's acknowledgement (librdkafka `message.timeout.ms`)
    /// before its spans are counted as lost. Default 30 s.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub timeout: Duration,
    /// Extra librdkafka properties (`security.protocol`, `compression.type`, `linger.ms`, ...).
    #[serde(serialize_with = "super::redacted_client_options")]
    pub client_options: BTreeMap<String, String>,
}

impl Default for KafkaExporter {
    fn default() -> Self {
        KafkaExporter {
            brokers: Vec::new(),
            topic: DEFAULT_TOPIC.into(),
            encoding: KafkaEncoding::OtlpProto,
            timeout: Duration::from_secs(30),
            client_options: BTreeMap::new(),
        }
    }
}

/// `exporters.otlp.kafka`: where `exporters.otlp.protocol: kafka` publishes kept, redacted traces (the
/// brokers are `exporters.otlp.endpoint`). Each export batch is one message, unkeyed.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaTopic {
    /// Topic to publish to. Required: no default, because the Collector's default (`otlp_spans`) is
    /// where the sampler tier reads its input, and kept traces published there would be sampled again.
    pub topic: String,
    /// Extra librdkafka producer properties (`compression.type`, `linger.ms`, `security.protocol`,
    /// `sasl.*`, ...), strings. `bootstrap.servers` is `endpoint`; `message.max.bytes` must leave room
    /// for `batch.send_batch_max_bytes`.
    #[serde(serialize_with = "super::redacted_client_options")]
    pub client_options: BTreeMap<String, String>,
}

/// The bootstrap brokers of `exporters.otlp.endpoint` with `protocol: kafka`: `host:port`, comma-separated.
pub fn kafka_brokers(endpoint: &str) -> Result<Vec<String>, String> {
    let brokers: Vec<String> = endpoint
        .split(',')
        .map(str::trim)
        .filter(|b| !b.is_empty())
        .map(String::from)
        .collect();
    if brokers.is_empty() {
        return Err(
            "exporters.otlp.endpoint must list at least one Kafka broker (`host:port,host:port`) for protocol kafka"
                .into(),
        );
    }
    for b in &brokers {
        let port_ok = b
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if b.contains("://") || !port_ok {
            return Err(format!(
                "exporters.otlp.endpoint `{endpoint}`: `{b}` is not a Kafka broker; protocol kafka takes the \
                 bootstrap brokers as `host:port,host:port`"
            ));
        }
    }
    Ok(brokers)
}

/// The producer's `message.max.bytes` for a batch limit: the limit plus [`KAFKA_MESSAGE_HEADROOM`].
pub fn message_max_bytes(batch_max_bytes: super::ByteSize) -> u64 {
    batch_max_bytes.0.saturating_add(KAFKA_MESSAGE_HEADROOM)
}

/// Checks `exporters.otlp` with `protocol: kafka` (and that `exporters.otlp.kafka` is not set without it).
pub(super) fn validate_transport(cfg: &super::Config) -> Result<(), String> {
    let e = &cfg.exporters.otlp;
    if e.protocol != super::ExportProtocol::Kafka {
        if e.kafka.is_some() {
            return Err(format!(
                "exporters.otlp.kafka is set but exporters.otlp.protocol is `{}`: set `protocol: kafka` to \
                 publish kept traces to Kafka, or remove exporters.otlp.kafka",
                e.protocol
            ));
        }
        return Ok(());
    }
    let brokers = kafka_brokers(&e.endpoint)?;
    let Some(k) = &e.kafka else {
        return Err(
            "exporters.otlp.kafka.topic is required with exporters.otlp.protocol: kafka (there is no default: \
             `otlp_spans` is where sampler replicas read their input)"
                .into(),
        );
    };
    if k.topic.trim().is_empty() {
        return Err("exporters.otlp.kafka.topic must not be empty".into());
    }
    if e.tls.is_some() {
        return Err(
            "exporters.otlp.tls does not apply to protocol kafka; set librdkafka's `security.protocol` and \
             `ssl.*` in exporters.otlp.kafka.client_options"
                .into(),
        );
    }
    if !e.headers.is_empty() {
        return Err(
            "exporters.otlp.headers does not apply to protocol kafka; set credentials (`sasl.*`) in \
             exporters.otlp.kafka.client_options"
                .into(),
        );
    }
    if k.client_options.contains_key("bootstrap.servers") {
        return Err(
            "exporters.otlp.kafka.client_options must not set bootstrap.servers: the brokers are \
             exporters.otlp.endpoint"
                .into(),
        );
    }
    let limit = e.batch.max_bytes(super::ExportProtocol::Kafka);
    let need = message_max_bytes(limit);
    if need > LIBRDKAFKA_MAX_MESSAGE_BYTES {
        return Err(format!(
            "exporters.otlp.batch.send_batch_max_bytes ({} bytes) is too large for a Kafka message (at most \
             {} bytes with the framing headroom)",
            limit.0,
            LIBRDKAFKA_MAX_MESSAGE_BYTES - KAFKA_MESSAGE_HEADROOM
        ));
    }
    if let Some(v) = k.client_options.get("message.max.bytes") {
        let max: u64 = v.trim().parse().map_err(|_| {
            format!("exporters.otlp.kafka.client_options.message.max.bytes `{v}` is not a number of bytes")
        })?;
        if max < need {
            return Err(format!(
                "exporters.otlp.batch.send_batch_max_bytes ({} bytes) is larger than the Kafka \
                 producer's message.max.bytes ({max}, exporters.otlp.kafka.client_options) allows: a batch is \
                 one message and needs up to {need} bytes with its framing; raise message.max.bytes to at \
                 least {need} or lower send_batch_max_bytes",
                limit.0
            ));
        }
    }
    if cfg.exporters.kafka.is_some() {
        return Err(
            "exporters.otlp.protocol: kafka cannot be combined with exporters.kafka: the ingest tier samples \
             nothing and exports nothing through exporters.otlp"
                .into(),
        );
    }
    if let Some(r) = &cfg.receivers.kafka
        && r.topic == k.topic
        && r.brokers.iter().any(|b| brokers.contains(b))
    {
        return Err(format!(
            "exporters.otlp.kafka.topic `{}` is the topic receivers.kafka reads: kept traces would be read \
             and sampled again; publish them to another topic (e.g. jaeger_spans)",
            k.topic
        ));
    }
    if !cfg!(feature = "kafka") {
        return Err(format!(
            "exporters.otlp.protocol: kafka: {NO_KAFKA_FEATURE}"
        ));
    }
    Ok(())
}

/// Checks the Kafka sections.
pub(super) fn validate(
    receiver: Option<&KafkaReceiver>,
    exporter: Option<&KafkaExporter>,
) -> Result<(), String> {
    if let Some(r) = receiver {
        if r.brokers.is_empty() {
            return Err("receivers.kafka.brokers must list at least one broker".into());
        }
        if r.topic.is_empty() || r.group_id.is_empty() {
            return Err(
                "receivers.kafka.topic and receivers.kafka.group_id must not be empty".into(),
            );
        }
        if r.group_size == 0 {
            return Err("receivers.kafka.group_size must be at least 1".into());
        }
        if r.commit_interval.is_zero() {
            return Err("receivers.kafka.commit_interval must be greater than 0".into());
        }
    }
    if let Some(e) = exporter {
        if e.brokers.is_empty() {
            return Err("exporters.kafka.brokers must list at least one broker".into());
        }
        if e.topic.is_empty() {
            return Err("exporters.kafka.topic must not be empty".into());
        }
    }
    if receiver.is_some() && exporter.is_some() {
        return Err(
            "receivers.kafka and exporters.kafka cannot both be set: an instance is either the ingest \
             tier (exporters.kafka) or a sampler replica (receivers.kafka)"
                .into(),
        );
    }
    Ok(())
}

/// Divides each rule's `split_across_group` budgets by the group size, so N replicas together keep to
/// the configured cluster-wide budget. Every listed key must be a number in the rule's `config`.
pub(super) fn split_budgets(
    rules: &mut [super::RuleConfig],
    group_size: u32,
) -> Result<(), String> {
    for (i, top) in rules.iter_mut().enumerate() {
        // A combinator's plugin parts carry their own budgets.
        top.each_mut(&mut |rule| {
            for key in &rule.split_across_group {
                let value = rule.config.get_mut(key.as_str()).ok_or_else(|| {
                    format!(
                        "policy.rules[{i}] (`{}`): split_across_group names `{key}`, which is not in its config",
                        rule.name
                    )
                })?;
                let n = value.as_f64().ok_or_else(|| {
                    format!(
                        "policy.rules[{i}] (`{}`): config key `{key}` in split_across_group is not a number",
                        rule.name
                    )
                })?;
                *value = serde_json::json!(n / f64::from(group_size));
            }
            Ok(())
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    const REPLICA: &str = "receivers:\n  kafka:\n    brokers: [\"k:9092\"]\n    group_size: 4\n";

    #[test]
    fn defaults_follow_the_collector() {
        let c = Config::parse(REPLICA, "t").expect("valid");
        let k = c.receivers.kafka.expect("set");
        assert_eq!(
            (k.topic.as_str(), k.group_id.as_str(), k.group_size),
            ("otlp_spans", "tailgate", 4)
        );
        let c =
            Config::parse("exporters:\n  kafka:\n    brokers: [\"k:9092\"]\n", "t").expect("valid");
        assert_eq!(c.exporters.kafka.expect("set").topic, "otlp_spans");
    }

    #[test]
    fn budgets_are_split_across_the_group() {
        let text = format!(
            "{REPLICA}policy:\n  rules:\n    - name: budget\n      plugin: r.wasm\n      config: {{traces_per_second: 100, burst: 200, key: tenant}}\n      split_across_group: [traces_per_second, burst]\n"
        );
        let c = Config::parse(&text, "t").expect("valid");
        let cfg = &c.policy.rules[0].config;
        assert_eq!(cfg["traces_per_second"], 25.0);
        assert_eq!(cfg["burst"], 50.0);
        assert_eq!(cfg["key"], "tenant");
        // Without a Kafka receiver the group is one instance: nothing changes.
        let single = text.replace(REPLICA, "");
        let c = Config::parse(&single, "t").expect("valid");
        assert_eq!(c.policy.rules[0].config["burst"], 200.0);
    }

    #[test]
    fn mistakes_are_named() {
        let err = |text: &str| Config::parse(text, "t").expect_err("invalid").to_string();
        let missing = format!(
            "{REPLICA}policy:\n  rules:\n    - name: budget\n      plugin: r.wasm\n      config: {{burst: 2}}\n      split_across_group: [rate]\n"
        );
        assert!(err(&missing).contains("`rate`"), "{}", err(&missing));
        let text_value = missing.replace("{burst: 2}", "{rate: fast}");
        assert!(err(&text_value).contains("not a number"));
        assert!(err("receivers:\n  kafka:\n    topic: x\n").contains("brokers"));
        assert!(
            err("receivers:\n  kafka:\n    brokers: [a]\n    group_size: 0\n")
                .contains("group_size")
        );
        assert!(
            err("receivers:\n  kafka:\n    brokers: [a]\n    encoding: json\n").contains("json")
        );
        assert!(err("receivers:\n  kafka:\n    brokers: [a]\n    topics: x\n").contains("topics"));
        let both =
            "receivers:\n  kafka:\n    brokers: [a]\nexporters:\n  kafka:\n    brokers: [a]\n";
        assert!(err(both).contains("cannot both be set"));
    }

    /// `exporters.otlp` publishing kept traces to `jaeger_spans` on two brokers, plus `extra` (indented
    /// under `otlp:`).
    fn kafka_transport(endpoint: &str, extra: &str) -> String {
        format!(
            "exporters:\n  otlp:\n    protocol: kafka\n    endpoint: \"{endpoint}\"\n    kafka:\n      topic: jaeger_spans\n{extra}"
        )
    }

    #[cfg(feature = "kafka")]
    #[test]
    fn kafka_transport_defaults() {
        use crate::config::{ByteSize, ExportProtocol, kafka_brokers, message_max_bytes};
        let c = Config::parse(&kafka_transport("k0:9092, k1:9092", ""), "t").expect("valid");
        let e = &c.exporters.otlp;
        assert_eq!(e.protocol, ExportProtocol::Kafka);
        assert_eq!(
            e.kafka.as_ref().map(|k| k.topic.as_str()),
            Some("jaeger_spans")
        );
        assert_eq!(
            kafka_brokers(&e.endpoint).expect("brokers"),
            ["k0:9092", "k1:9092"]
        );
        // A batch is one message a default broker accepts; other protocols keep 3 MiB.
        let limit = e.batch.max_bytes(ExportProtocol::Kafka);
        assert_eq!(limit, ByteSize(900 * 1024));
        assert!(
            message_max_bytes(limit) <= 1_000_000,
            "librdkafka's default"
        );
        assert_eq!(e.batch.max_bytes(ExportProtocol::Grpc), ByteSize::mib(3));
        // An explicit limit with room for it in message.max.bytes.
        let big = kafka_transport(
            "k0:9092",
            "      client_options: {message.max.bytes: \"3211264\"}\n    batch:\n      send_batch_max_bytes: 3MiB\n",
        );
        let c = Config::parse(&big, "t").expect("valid");
        assert_eq!(
            c.exporters.otlp.batch.max_bytes(ExportProtocol::Kafka),
            ByteSize::mib(3)
        );
        // A sampler replica reading one topic and publishing its kept traces to another.
        let replica = format!(
            "receivers:\n  kafka:\n    brokers: [\"k0:9092\"]\n{}",
            kafka_transport("k0:9092", "")
        );
        Config::parse(&replica, "t").expect("different topics");
    }

    #[test]
    fn kafka_transport_mistakes_are_named() {
        let err = |text: &str| Config::parse(text, "t").expect_err("invalid").to_string();
        let e = err(&kafka_transport("", ""));
        assert!(
            e.contains("exporters.otlp.endpoint must list at least one Kafka broker"),
            "{e}"
        );
        let e = err(&kafka_transport(" , ", ""));
        assert!(e.contains("at least one Kafka broker"), "{e}");
        let e = err(&kafka_transport("http://localhost:4317", ""));
        assert!(
            e.contains("is not a Kafka broker") && e.contains("host:port"),
            "{e}"
        );
        let e = err(&kafka_transport("k0", ""));
        assert!(e.contains("`k0` is not a Kafka broker"), "{e}");
        let e = err("exporters:\n  otlp:\n    protocol: kafka\n    endpoint: k0:9092\n");
        assert!(e.contains("exporters.otlp.kafka.topic is required"), "{e}");
        let e = err(&kafka_transport("k0:9092", "").replace("topic: jaeger_spans", "topic: \"\""));
        assert!(
            e.contains("exporters.otlp.kafka.topic must not be empty"),
            "{e}"
        );
        let e = err(&kafka_transport("k0:9092", "").replace("topic:", "topics:"));
        assert!(e.contains("topics"), "{e}");
        let e = err("exporters:\n  otlp:\n    kafka:\n      topic: t\n");
        assert!(
            e.contains("exporters.otlp.kafka is set but exporters.otlp.protocol is `grpc`"),
            "{e}"
        );
        let e = err(&kafka_transport("k0:9092", "    tls: {ca_file: ca.pem}\n"));
        assert!(
            e.contains("exporters.otlp.tls does not apply to protocol kafka"),
            "{e}"
        );
        let e = err(&kafka_transport(
            "k0:9092",
            "    headers: {authorization: x}\n",
        ));
        assert!(e.contains("exporters.otlp.headers does not apply"), "{e}");
        let e = err(&kafka_transport(
            "k0:9092",
            "      client_options: {bootstrap.servers: \"x:1\"}\n",
        ));
        assert!(e.contains("bootstrap.servers"), "{e}");
        // The batch limit against the producer's message.max.bytes.
        let e = err(&kafka_transport(
            "k0:9092",
            "      client_options: {message.max.bytes: \"1000000\"}\n    batch:\n      send_batch_max_bytes: 3MiB\n",
        ));
        assert!(
            e.contains("exporters.otlp.batch.send_batch_max_bytes (3145728 bytes) is larger than")
                && e.contains("message.max.bytes (1000000")
                && e.contains("at least 3211264"),
            "{e}"
        );
        let e = err(&kafka_transport(
            "k0:9092",
            "      client_options: {message.max.bytes: lots}\n",
        ));
        assert!(
            e.contains("message.max.bytes `lots` is not a number"),
            "{e}"
        );
        let e = err(&kafka_transport(
            "k0:9092",
            "    batch:\n      send_batch_max_bytes: 2GiB\n",
        ));
        assert!(e.contains("too large for a Kafka message"), "{e}");
        // Kept traces into the sampler tier's own input, or beside the ingest tier.
        let e = err(&format!(
            "receivers:\n  kafka:\n    brokers: [\"k0:9092\"]\n    topic: jaeger_spans\n{}",
            kafka_transport("k0:9092", "")
        ));
        assert!(e.contains("is the topic receivers.kafka reads"), "{e}");
        let e = err(&format!(
            "{}  kafka:\n    brokers: [\"k0:9092\"]\n",
            kafka_transport("k0:9092", "")
        ));
        assert!(e.contains("cannot be combined with exporters.kafka"), "{e}");
    }

    #[cfg(not(feature = "kafka"))]
    #[test]
    fn kafka_transport_needs_the_feature() {
        let e = Config::parse(&kafka_transport("k0:9092", ""), "t")
            .expect_err("no kafka in this build")
            .to_string();
        assert!(
            e.contains("exporters.otlp.protocol: kafka") && e.contains("--features kafka"),
            "{e}"
        );
    }
}
