//! The Kafka sections of the configuration: `receivers.kafka` (the sampler tier reads a topic in a consumer
//! group) and `exporters.kafka` (the ingest tier publishes each trace's spans to the topic, keyed by trace
//! id). Parsed in every build; running them needs the `kafka` cargo feature.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// The topic the OpenTelemetry Collector's Kafka exporter and receiver use for traces by default.
pub const DEFAULT_TOPIC: &str = "otlp_spans";

/// Message encodings tailgate reads and writes: the Collector's `otlp_proto` (a protobuf
/// `ExportTraceServiceRequest` per message).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
pub enum KafkaEncoding {
    #[default]
    #[serde(rename = "otlp_proto")]
    OtlpProto,
}

/// Where a consumer group with no committed offset for a partition starts.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum InitialOffset {
    /// The oldest message still in the topic: nothing published before the group existed is skipped.
    #[default]
    Earliest,
    /// Only messages published from now on.
    Latest,
}

/// `receivers.kafka`: read OTLP traces from a topic as one member of a consumer group.
#[derive(Debug, Clone, Deserialize, PartialEq)]
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
    pub commit_interval: Duration,
    /// How long a revoked partition's traces may take to be decided before the partition is let go
    /// (what is still undecided then is re-read by the next owner). Default 10 s.
    #[serde(with = "humantime_serde")]
    pub handoff_timeout: Duration,
    /// Replicas in the consumer group. Rules' `split_across_group` budgets are divided by it, so the
    /// cluster as a whole keeps to the configured budget. Default 1.
    pub group_size: u32,
    /// Extra librdkafka properties (`security.protocol`, `sasl.*`, `session.timeout.ms`, ...).
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
#[derive(Debug, Clone, Deserialize, PartialEq)]
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
    pub timeout: Duration,
    /// Extra librdkafka properties (`security.protocol`, `compression.type`, `linger.ms`, ...).
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
    for (i, rule) in rules.iter_mut().enumerate() {
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
}
