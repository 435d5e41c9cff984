//! The configuration file: serde structs in the OpenTelemetry Collector's vocabulary where it applies,
//! `${env:NAME}` substitution, unknown keys rejected with their name, documented defaults, and the
//! command-line / environment overrides applied on top.
//!
//! The full reference with every key and default is `docs/configuration.md`; keep the two in step.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

mod kafka;
pub mod memory;
pub mod otelcol;
pub use kafka::{
    InitialOffset, KAFKA_MESSAGE_HEADROOM, KafkaEncoding, KafkaExporter, KafkaReceiver, KafkaTopic,
    NO_KAFKA_FEATURE, kafka_brokers, message_max_bytes,
};

/// Why a configuration could not be loaded. Messages name the file, the key and the problem.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: environment variable `{name}` referenced as ${{env:{name}}} is not set")]
    MissingEnv { path: String, name: String },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

/// The whole configuration. Every section is optional; an empty file means all defaults.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema, Default, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub receivers: Receivers,
    pub exporters: Exporters,
    pub buffer: BufferConfig,
    pub policy: PolicyConfig,
    pub plugins: PluginRuntimeConfig,
    pub admin: AdminConfig,
    pub service: ServiceConfig,
    /// RED metrics and the service graph from every trace (see `topology`).
    pub topology: crate::topology::TopologyConfig,
    /// Record received traffic for `tailgate replay` (off unless set).
    pub record: Option<RecordConfig>,
}

/// `record:`: where and how much received traffic to record (see `record`).
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RecordConfig {
    /// The file: `.json`/`.jsonl` for OTLP/JSON lines, anything else (`.pb`) for length-delimited
    /// protobuf. Created (truncated) at startup.
    pub path: PathBuf,
    /// Recording stops (with a log line) before the file would pass this size. Default 100MiB.
    #[serde(default = "RecordConfig::default_max_bytes")]
    pub max_bytes: ByteSize,
    /// The recording holds the traffic as received, before sampling and redaction (personal data
    /// included), so tailgate refuses to record unless this says so. Default false.
    #[serde(default)]
    pub unredacted: bool,
}

impl RecordConfig {
    fn default_max_bytes() -> ByteSize {
        ByteSize::mib(100)
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema, Default, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Receivers {
    pub otlp: OtlpReceiver,
    /// Read traces from a Kafka topic as one replica of a consumer group (see `docs/kafka.md`).
    pub kafka: Option<KafkaReceiver>,
}

#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema, Default, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OtlpReceiver {
    pub protocols: OtlpProtocols,
}

#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OtlpProtocols {
    /// OTLP/gRPC; `null` disables it.
    pub grpc: Option<GrpcReceiver>,
    /// OTLP/HTTP; `null` disables it.
    pub http: Option<HttpReceiver>,
}

impl Default for OtlpProtocols {
    fn default() -> Self {
        OtlpProtocols {
            grpc: Some(GrpcReceiver::default()),
            http: Some(HttpReceiver::default()),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct GrpcReceiver {
    /// Listen address. Default `0.0.0.0:4317`.
    pub endpoint: SocketAddr,
    /// Largest accepted request, after decompression. Default 16 MiB.
    pub max_recv_msg_size: ByteSize,
    /// TLS (and optionally client certificates); default none (plaintext).
    pub tls: Option<crate::tls::ServerTls>,
    /// Bearer-token or header authentication of every request; default none.
    pub auth: Option<crate::auth::AuthConfig>,
}

impl Default for GrpcReceiver {
    fn default() -> Self {
        GrpcReceiver {
            endpoint: ([0, 0, 0, 0], 4317).into(),
            max_recv_msg_size: ByteSize::mib(16),
            tls: None,
            auth: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpReceiver {
    /// Listen address. Default `0.0.0.0:4318`.
    pub endpoint: SocketAddr,
    /// Largest accepted body, compressed and decompressed. Default 16 MiB.
    pub max_request_body_size: ByteSize,
    /// TLS (and optionally client certificates); default none (plaintext).
    pub tls: Option<crate::tls::ServerTls>,
    /// Bearer-token or header authentication of every request; default none.
    pub auth: Option<crate::auth::AuthConfig>,
}

impl Default for HttpReceiver {
    fn default() -> Self {
        HttpReceiver {
            endpoint: ([0, 0, 0, 0], 4318).into(),
            max_request_body_size: ByteSize::mib(16),
            tls: None,
            auth: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema, Default, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Exporters {
    pub otlp: OtlpExporter,
    /// Ingest tier: publish received spans to a Kafka topic, keyed by trace id, instead of sampling.
    pub kafka: Option<KafkaExporter>,
}

/// How kept spans leave tailgate.
#[derive(
    Debug,
    Clone,
    Copy,
    Deserialize,
    Serialize,
    schemars::JsonSchema,
    PartialEq,
    Eq,
    Default,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum ExportProtocol {
    /// OTLP/gRPC (Jaeger's port 4317).
    #[default]
    Grpc,
    /// OTLP/HTTP protobuf (Jaeger's port 4318, path `/v1/traces`).
    Http,
    /// OTLP/JSON lines to a file (`endpoint` is the path, `-` is standard output), like the Collector's
    /// file exporter: one `ExportTraceServiceRequest` per line. For trying tailgate without Jaeger.
    File,
    /// One Kafka message (`otlp_proto`, the encoded `ExportTraceServiceRequest`) per batch, to the topic
    /// in `exporters.otlp.kafka` (`endpoint` is the bootstrap brokers, `host:port,host:port`), as Jaeger's
    /// `kafka` receiver reads it. Needs the `kafka` cargo feature.
    Kafka,
}

impl fmt::Display for ExportProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ExportProtocol::Grpc => "grpc",
            ExportProtocol::Http => "http",
            ExportProtocol::File => "file",
            ExportProtocol::Kafka => "kafka",
        })
    }
}

#[derive(
    Debug, Clone, Copy, Deserialize, Serialize, schemars::JsonSchema, PartialEq, Eq, Default,
)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    #[default]
    Gzip,
}

#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OtlpExporter {
    /// `grpc`, `http`, `file` or `kafka`. Default `grpc`.
    pub protocol: ExportProtocol,
    /// gRPC: `http://host:4317`; HTTP: `http://host:4318` (`/v1/traces` is appended unless a path is
    /// given); file: a path or `-`; kafka: the bootstrap brokers, `host:port,host:port`. Default
    /// `http://localhost:4317`.
    pub endpoint: String,
    /// Default `gzip`.
    pub compression: Compression,
    /// Extra request headers (gRPC metadata), e.g. an authorization token.
    #[serde(serialize_with = "redacted_values")]
    pub headers: BTreeMap<String, String>,
    /// Per-request timeout. Default 10 s.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub timeout: Duration,
    pub sending_queue: SendingQueue,
    pub retry_on_failure: RetryConfig,
    pub batch: BatchConfig,
    /// CA file and client certificate for an `https://` endpoint; default: system CAs, no client
    /// certificate.
    pub tls: Option<crate::tls::ClientTls>,
    /// The topic and librdkafka options of `protocol: kafka`; required with it, an error without it.
    pub kafka: Option<KafkaTopic>,
}

impl Default for OtlpExporter {
    fn default() -> Self {
        OtlpExporter {
            protocol: ExportProtocol::Grpc,
            endpoint: "http://localhost:4317".into(),
            compression: Compression::Gzip,
            headers: BTreeMap::new(),
            timeout: Duration::from_secs(10),
            sending_queue: SendingQueue::default(),
            retry_on_failure: RetryConfig::default(),
            batch: BatchConfig::default(),
            tls: None,
            kafka: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SendingQueue {
    /// Most spans waiting for export (in batches and retries). When full, the pipeline waits, which in
    /// turn fills the buffer and pushes back on clients. Default 200 000.
    pub queue_size: usize,
    /// Most bytes of spans waiting for export, a bound beside `queue_size`. Default `auto`: a fifth of
    /// `service.memory_limit`.
    pub queue_bytes: AutoSize,
    /// Concurrent export requests. Default 4.
    pub num_consumers: usize,
    /// Optional persistent queue on disk (see `export::spool`): batches wait there, not in memory, and
    /// survive a restart. Off unless set.
    pub persistent: Option<PersistentQueue>,
}

impl Default for SendingQueue {
    fn default() -> Self {
        SendingQueue {
            queue_size: 200_000,
            queue_bytes: AutoSize::Auto,
            num_consumers: 4,
            persistent: None,
        }
    }
}

/// The exporter's persistent queue (`exporters.otlp.sending_queue.persistent`).
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PersistentQueue {
    /// Directory of the segment files (created if missing). Required. One tailgate per directory.
    pub path: PathBuf,
    /// Most bytes of undelivered batches kept on disk. Default 1 GiB.
    #[serde(default = "PersistentQueue::default_max_bytes")]
    pub max_bytes: ByteSize,
    /// Size at which a segment file is closed and a new one started. Default 16 MiB.
    #[serde(default = "PersistentQueue::default_segment_bytes")]
    pub segment_bytes: ByteSize,
    /// When a written batch is forced to disk. Default `always`.
    #[serde(default)]
    pub fsync: FsyncPolicy,
    /// With `fsync: interval`, how often. Default 1 s.
    #[serde(
        default = "PersistentQueue::default_fsync_interval",
        with = "humantime_serde"
    )]
    #[schemars(with = "String")]
    pub fsync_interval: Duration,
    /// What happens to a batch when the queue is at `max_bytes`. Default `block`.
    #[serde(default)]
    pub when_full: WhenFull,
}

impl PersistentQueue {
    fn default_max_bytes() -> ByteSize {
        ByteSize::mib(1024)
    }
    fn default_segment_bytes() -> ByteSize {
        ByteSize::mib(16)
    }
    fn default_fsync_interval() -> Duration {
        Duration::from_secs(1)
    }
}

/// When the persistent queue forces written batches to stable storage.
#[derive(
    Debug, Clone, Copy, Deserialize, Serialize, schemars::JsonSchema, PartialEq, Eq, Default,
)]
#[serde(rename_all = "snake_case")]
pub enum FsyncPolicy {
    /// `fdatasync` after every batch, before it counts as queued: survives a crash of the machine.
    #[default]
    Always,
    /// `fdatasync` every `fsync_interval`: a machine crash may lose the last interval's batches (a crash
    /// of tailgate alone loses nothing: every batch is written to the OS before it counts as queued).
    Interval,
    /// Never: the OS writes back when it likes. Survives a crash of tailgate, not of the machine.
    Never,
}

/// What the persistent queue does with a batch when it is full.
#[derive(
    Debug, Clone, Copy, Deserialize, Serialize, schemars::JsonSchema, PartialEq, Eq, Default,
)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Wait for room: the exporter stops taking spans, which pushes back on the pipeline and clients.
    #[default]
    Block,
    /// Drop the batch, counted in `tailgate_spans_lost_total{reason="persistent_queue_full"}`.
    Drop,
}

#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    pub enabled: bool,
    /// First backoff. Default 200 ms.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub initial_interval: Duration,
    /// Longest backoff. Default 10 s.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub max_interval: Duration,
    /// Give up on a batch (counted as `failed`) after this long. Default 5 min.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub max_elapsed_time: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            enabled: true,
            initial_interval: Duration::from_millis(200),
            max_interval: Duration::from_secs(10),
            max_elapsed_time: Duration::from_secs(300),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BatchConfig {
    /// Send when this many spans are waiting. Default 8192.
    pub send_batch_size: usize,
    /// Never send more spans than this in one request. Default 16384.
    pub send_batch_max_size: usize,
    /// Close a batch before its encoded size (before compression) would pass this; a single larger span
    /// goes alone. Default ([`BatchConfig::max_bytes`]) 3 MiB, below the 4 MiB that Jaeger and the
    /// Collector accept over gRPC by default (a larger request is refused with `RESOURCE_EXHAUSTED` and
    /// lost); 900 KiB with `protocol: kafka`, so that a batch is one message a default broker accepts
    /// (`message.max.bytes` about 1 MiB).
    pub send_batch_max_bytes: Option<ByteSize>,
    /// Send what is waiting after this long. Default 200 ms.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub timeout: Duration,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            send_batch_size: 8192,
            send_batch_max_size: 16384,
            send_batch_max_bytes: None,
            timeout: Duration::from_millis(200),
        }
    }
}

impl BatchConfig {
    /// `send_batch_max_bytes` as set, or its default for `protocol`.
    pub fn max_bytes(&self, protocol: ExportProtocol) -> ByteSize {
        self.send_batch_max_bytes.unwrap_or(match protocol {
            ExportProtocol::Kafka => ByteSize(kafka::DEFAULT_BATCH_MAX_BYTES),
            _ => ByteSize::mib(3),
        })
    }
}

/// When a trace is decided, and how much may wait.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BufferConfig {
    /// Decide once the root span has arrived and nothing new came for this long. Default 2 s.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub settle: Duration,
    /// Decide when nothing new came for this long, root or not. Default 10 s.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub idle_timeout: Duration,
    /// Decide at the latest this long after the first span. Default 30 s.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub max_wait: Duration,
    /// Decide a trace early when it holds this many spans. Default 10 000.
    pub max_spans_per_trace: usize,
    /// Decide a trace early when it holds this many bytes. Default 8 MiB.
    pub max_bytes_per_trace: ByteSize,
    /// Bound on all spans between the receivers and the export queue: the ingest queue, buffered traces
    /// and traces being decided or redacted. Past 90 % the oldest traces are decided early; at 100 %
    /// receivers push back. Default `auto`: half of `service.memory_limit`.
    pub max_buffer_bytes: AutoSize,
    /// Remembered decisions, for spans that arrive after their trace was decided.
    pub decision_cache: DecisionCacheConfig,
    /// Dropped traces' spans held for a while, so late evidence or `POST /rescue` can bring them back.
    /// Off unless `grace` is set.
    pub second_chance: SecondChanceConfig,
    /// Capacity of the queue between receivers and the buffer, in requests. Default 1024.
    pub queue_size: usize,
}

impl Default for BufferConfig {
    fn default() -> Self {
        BufferConfig {
            settle: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(10),
            max_wait: Duration::from_secs(30),
            max_spans_per_trace: 10_000,
            max_bytes_per_trace: ByteSize::mib(8),
            max_buffer_bytes: AutoSize::Auto,
            decision_cache: DecisionCacheConfig::default(),
            second_chance: SecondChanceConfig::default(),
            queue_size: 1024,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DecisionCacheConfig {
    /// Kept trace ids remembered (with the rule that kept them). Default: from a tenth of
    /// `service.memory_limit`, a sixth of the entries, at most 200 000.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kept_traces: Option<usize>,
    /// Dropped trace ids remembered. Default: from a tenth of `service.memory_limit`, five sixths of the
    /// entries, at most 1 000 000.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dropped_traces: Option<usize>,
    /// Forget a decision after this long. Default 5 min.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub ttl: Duration,
}

impl Default for DecisionCacheConfig {
    fn default() -> Self {
        DecisionCacheConfig {
            kept_traces: None,
            dropped_traces: None,
            ttl: Duration::from_secs(300),
        }
    }
}

/// The second chance for dropped traces (see `rescue`).
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct SecondChanceConfig {
    /// How long a dropped trace's spans are held. Default `0s`: off.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub grace: Duration,
    /// Most bytes held; the oldest traces leave first. Default `auto`: a twentieth of
    /// `service.memory_limit`.
    pub max_bytes: AutoSize,
}

impl SecondChanceConfig {
    pub fn enabled(&self) -> bool {
        !self.grace.is_zero()
    }
}

/// What happens to a trace when no rule keeps or drops it.
#[derive(
    Debug, Clone, Copy, Deserialize, Serialize, schemars::JsonSchema, PartialEq, Eq, Default,
)]
#[serde(rename_all = "lowercase")]
pub enum DefaultDecision {
    Keep,
    #[default]
    Drop,
}

/// What a sampler failure (trap, timeout, bad result) counts as.
#[derive(
    Debug, Clone, Copy, Deserialize, Serialize, schemars::JsonSchema, PartialEq, Eq, Default,
)]
#[serde(rename_all = "snake_case")]
pub enum SamplerFailurePolicy {
    /// Keep the trace (fail open). Default.
    #[default]
    Keep,
    /// Treat the rule as having no opinion.
    Abstain,
    /// Drop the trace.
    Drop,
}

/// What happens to a kept trace whose redactor fails.
#[derive(
    Debug, Clone, Copy, Deserialize, Serialize, schemars::JsonSchema, PartialEq, Eq, Default,
)]
#[serde(rename_all = "snake_case")]
pub enum RedactorFailurePolicy {
    /// Remove every attribute not on the strict allow-list and clear messages. Default.
    #[default]
    StrictScrub,
    /// Drop the trace (counted).
    Drop,
}

/// The sampling policy: ordered rules (first keep/drop wins), then redactors on kept traces.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema, Default, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// Decision when every rule abstains. Default `drop`.
    pub default: DefaultDecision,
    pub rules: Vec<RuleConfig>,
    pub redactors: Vec<RuleConfig>,
    pub on_sampler_failure: SamplerFailurePolicy,
    pub on_redactor_failure: RedactorFailurePolicy,
    /// How redactors' edits are applied (hash key, dry run, strict fallback).
    pub redaction: RedactionConfig,
}

/// How the host applies redactors' edits: the keyed hash, dry-run mode and the strict fallback scrub.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema, Default, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RedactionConfig {
    /// Secret of the keyed hash (HMAC-SHA256) behind the `hash` action, usually `${env:NAME}`; at least 16
    /// bytes. Default: none, and then a random key is made at startup (hashes are stable only until a
    /// restart, and tagged with key id `ephemeral`).
    #[serde(serialize_with = "redacted_option")]
    pub hash_key: Option<String>,
    /// Written into every hash (`hmac:<key id>:<hex>`) so that the secret can rotate and tokens made
    /// with different keys are told apart. Default `k1` (`ephemeral` when no `hash_key` is set).
    pub hash_key_id: Option<String>,
    /// Count what the redactors would change (metrics) without changing any span. Default false. A
    /// redactor failure in dry-run mode is counted and the trace passes unchanged.
    pub dry_run: bool,
    /// Attribute keys kept by the strict fallback scrub (`on_redactor_failure: strict_scrub`); replaces the
    /// built-in list of safe semantic-convention keys (`service.name`, `http.route`, ...). Default: the
    /// built-in list (see docs/configuration.md).
    pub strict_allow_list: Option<Vec<String>>,
    /// Whether the strict fallback scrub also replaces span names and event names with `redacted`.
    /// Default false: names are kept, because semantic conventions make them low-cardinality templates
    /// (`GET /users/{id}`) and a trace without them is hard to use.
    pub strict_scrub_names: bool,
}

/// One rule: a plugin file and the configuration passed to its `init`, or a combinator (`all`, `any`,
/// `not`) over other rules (its parts). Exactly one of `plugin`, `all`, `any`, `not` is set.
#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// Unique name, used in metrics, logs and the `tailgate.rule` span attribute. Required for a rule;
    /// a part of a combinator defaults to `<rule>/all[0]`, `<rule>/any[1]`, `<rule>/not`.
    #[serde(default)]
    pub name: String,
    /// The plugin: `builtin:NAME` (a standard plugin built into the binary, `tailgate plugin list`) or a
    /// path to a `.wasm` component, relative to the config file (then to `plugins.search_path`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin: Option<PathBuf>,
    /// Keeps when every part keeps (asked in order, stopping at the first that does not).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub all: Vec<RuleConfig>,
    /// Keeps when any part keeps (asked in order; see docs/plugins.md for probabilities).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub any: Vec<RuleConfig>,
    /// Keeps when its part does not keep.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not: Option<Box<RuleConfig>>,
    /// What the rule does with a trace its plugin or combinator keeps: `keep` (default) or `drop` (the
    /// Collector's `drop` policy: e.g. drop health checks before any other rule). Rules only, not parts.
    #[serde(default)]
    pub action: RuleAction,
    /// Any YAML; handed to the plugin's `init` as JSON text.
    #[serde(default)]
    pub config: serde_json::Value,
    /// Evaluated beside the live policy, decisions only counted (samplers only).
    #[serde(default)]
    pub shadow: bool,
    /// Per-call deadline, overriding `plugins.call_timeout`.
    #[serde(default, with = "humantime_serde")]
    #[schemars(with = "Option<String>")]
    pub call_timeout: Option<Duration>,
    /// Memory cap, overriding `plugins.memory_limit`.
    #[serde(default)]
    pub memory_limit: Option<ByteSize>,
    /// Numeric keys of `config` that are cluster-wide budgets (a rate limit's `traces_per_second`,
    /// `burst`): divided by `receivers.kafka.group_size` before the plugin sees them.
    #[serde(default)]
    pub split_across_group: Vec<String>,
}

/// What a rule does with what it matches.
#[derive(
    Debug, Clone, Copy, Deserialize, Serialize, schemars::JsonSchema, Default, PartialEq, Eq,
)]
#[serde(rename_all = "snake_case")]
pub enum RuleAction {
    #[default]
    Keep,
    Drop,
}

/// Which combinator a rule is (`crate::policy` builds it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Combinator {
    All,
    Any,
    Not,
}

impl Combinator {
    pub fn name(self) -> &'static str {
        match self {
            Combinator::All => "all",
            Combinator::Any => "any",
            Combinator::Not => "not",
        }
    }
}

impl RuleConfig {
    /// The combinator and its parts, or `None` for a plugin rule.
    pub fn combinator(&self) -> Option<(Combinator, Vec<&RuleConfig>)> {
        if let Some(n) = &self.not {
            Some((Combinator::Not, vec![&**n]))
        } else if !self.all.is_empty() {
            Some((Combinator::All, self.all.iter().collect()))
        } else if !self.any.is_empty() {
            Some((Combinator::Any, self.any.iter().collect()))
        } else {
            None
        }
    }

    /// The plugin rules of this rule: itself, or its combinator's parts', depth first.
    pub fn leaves(&self) -> Vec<&RuleConfig> {
        match self.combinator() {
            None => vec![self],
            Some((_, parts)) => parts.into_iter().flat_map(RuleConfig::leaves).collect(),
        }
    }

    /// Every rule and part below and including this one, mutably, depth first.
    fn each_mut(
        &mut self,
        f: &mut dyn FnMut(&mut RuleConfig) -> Result<(), String>,
    ) -> Result<(), String> {
        f(self)?;
        for p in self.all.iter_mut().chain(self.any.iter_mut()) {
            p.each_mut(f)?;
        }
        if let Some(n) = self.not.as_deref_mut() {
            n.each_mut(f)?;
        }
        Ok(())
    }

    /// Gives unnamed parts their default names (`<rule>/all[0]`, ...).
    fn name_parts(&mut self) {
        let base = self.name.clone();
        for (kind, parts) in [("all", &mut self.all), ("any", &mut self.any)] {
            for (i, p) in parts.iter_mut().enumerate() {
                if p.name.is_empty() {
                    p.name = format!("{base}/{kind}[{i}]");
                }
                p.name_parts();
            }
        }
        if let Some(n) = self.not.as_deref_mut() {
            if n.name.is_empty() {
                n.name = format!("{base}/not");
            }
            n.name_parts();
        }
    }

    /// The checks of one rule or part (`at` names it in errors).
    fn validate(&self, at: &str, redactor: bool, part: bool) -> Result<(), String> {
        let set = [
            self.plugin.is_some(),
            !self.all.is_empty(),
            !self.any.is_empty(),
            self.not.is_some(),
        ];
        match set.iter().filter(|s| **s).count() {
            1 => {}
            0 => {
                return Err(format!(
                    "{at}: set one of `plugin`, `all`, `any` or `not` (an empty `all`/`any` has no parts)"
                ));
            }
            _ => {
                return Err(format!(
                    "{at}: set only one of `plugin`, `all`, `any` and `not`"
                ));
            }
        }
        if redactor && self.plugin.is_none() {
            return Err(format!(
                "{at}: a redactor is a plugin; `all`, `any` and `not` are for sampling rules"
            ));
        }
        if (redactor || part) && self.action != RuleAction::Keep {
            return Err(format!(
                "{at}: `action` is for sampling rules, not for {}",
                if redactor {
                    "redactors"
                } else {
                    "parts of a combinator"
                }
            ));
        }
        if part && self.shadow {
            return Err(format!(
                "{at}: `shadow` is for whole rules, not for parts of a combinator"
            ));
        }
        if self.plugin.is_none() {
            let plugin_only = [
                ("config", !self.config.is_null()),
                ("call_timeout", self.call_timeout.is_some()),
                ("memory_limit", self.memory_limit.is_some()),
                ("split_across_group", !self.split_across_group.is_empty()),
            ];
            if let Some((key, _)) = plugin_only.iter().find(|(_, set)| *set) {
                return Err(format!(
                    "{at}: `{key}` belongs on the plugin parts of a combinator, not on the combinator"
                ));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct PluginRuntimeConfig {
    /// Where compiled plugins are cached. Default `$XDG_CACHE_HOME/tailgate` or `~/.cache/tailgate`.
    pub cache_dir: Option<PathBuf>,
    /// Directories searched, in order, for a relative plugin path that is not found next to the config
    /// file (relative entries are relative to the config file). Default: none.
    pub search_path: Vec<PathBuf>,
    /// Deadline for one plugin call. Default 5 ms.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub call_timeout: Duration,
    /// Linear memory cap per plugin instance. Default 64 MiB.
    pub memory_limit: ByteSize,
    /// Threads that run plugin calls. Default: the number of cores.
    pub workers: Option<usize>,
    /// Run the samplers on the buffer's thread, which is awake when a trace becomes due, instead of
    /// waking a worker for them (the worker still does the rest). Default true; after a decision that
    /// takes over 1 ms, traces are decided on the workers for 10 s.
    pub decide_on_buffer_thread: bool,
}

impl Default for PluginRuntimeConfig {
    fn default() -> Self {
        PluginRuntimeConfig {
            cache_dir: None,
            search_path: Vec::new(),
            call_timeout: Duration::from_millis(5),
            memory_limit: ByteSize::mib(64),
            workers: None,
            decide_on_buffer_thread: true,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// `/healthz`, `/metrics`. Default `127.0.0.1:8888` (localhost only).
    pub endpoint: SocketAddr,
    /// When set, `POST` endpoints (`/reload`) require `Authorization: Bearer <token>`; `GET` endpoints
    /// stay open. Default none.
    pub token: Option<crate::auth::Secret>,
    /// Base URL of Jaeger's UI: the status page links each kept trace to `{jaeger_ui_url}/trace/{id}`.
    /// Default `http://localhost:16686`.
    pub jaeger_ui_url: String,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            endpoint: ([127, 0, 0, 1], 8888).into(),
            token: None,
            jaeger_ui_url: "http://localhost:16686".into(),
        }
    }
}

#[derive(
    Debug,
    Clone,
    Copy,
    Deserialize,
    Serialize,
    schemars::JsonSchema,
    PartialEq,
    Eq,
    Default,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize, Serialize, schemars::JsonSchema, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceConfig {
    /// `text` (default) or `json`.
    pub log_format: LogFormat,
    /// `tracing` filter, e.g. `info` or `tailgate=debug`. Default `info`; `RUST_LOG` overrides it, and
    /// `--log-level` / `TAILGATE_LOG_LEVEL` override both.
    pub log_level: String,
    /// On SIGINT/SIGTERM: time allowed to decide what is buffered and drain the exporter. Default 10 s.
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub shutdown_grace: Duration,
    /// Memory for the whole process, from which the buffer, the export queue and the decision cache take
    /// their shares (see `config::memory`); resident memory past it refuses new data. Default `auto`: 80 %
    /// of the memory cgroup's limit when there is one, else a quarter of the machine's memory, at most
    /// 8 GiB.
    pub memory_limit: AutoSize,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            log_format: LogFormat::Text,
            log_level: "info".into(),
            shutdown_grace: Duration::from_secs(10),
            memory_limit: AutoSize::Auto,
        }
    }
}

/// What `tailgate config print` writes in place of a secret (defined beside [`crate::auth::Secret`]).
pub use crate::auth::REDACTED;

/// Serializes a secret string as [`REDACTED`] (absent stays absent).
fn redacted_option<S: serde::Serializer>(v: &Option<String>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(_) => s.serialize_some(REDACTED),
        None => s.serialize_none(),
    }
}

/// Serializes a map of header values with every value [`REDACTED`]: headers carry credentials.
fn redacted_values<S: serde::Serializer>(
    m: &BTreeMap<String, String>,
    s: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut out = s.serialize_map(Some(m.len()))?;
    for k in m.keys() {
        out.serialize_entry(k, REDACTED)?;
    }
    out.end()
}

/// Serializes librdkafka options with the values of credential-like keys (`sasl.password`,
/// `ssl.key.password`, anything naming a secret or token) [`REDACTED`].
pub(crate) fn redacted_client_options<S: serde::Serializer>(
    m: &BTreeMap<String, String>,
    s: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut out = s.serialize_map(Some(m.len()))?;
    for (k, v) in m {
        let key = k.to_ascii_lowercase();
        let secret = ["password", "secret", "token", "credential", "jaas"]
            .iter()
            .any(|w| key.contains(w));
        out.serialize_entry(k, if secret { REDACTED } else { v.as_str() })?;
    }
    out.end()
}

/// A size in bytes, written as an integer or with a unit: `512KiB`, `16MiB`, `2GiB`, `1.5GB`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

impl ByteSize {
    pub const fn mib(n: u64) -> Self {
        ByteSize(n * 1024 * 1024)
    }

    pub fn as_usize(self) -> usize {
        usize::try_from(self.0).unwrap_or(usize::MAX)
    }

    fn parse(s: &str) -> Result<Self, String> {
        let t = s.trim();
        if t == "auto" {
            return Err("`auto` is not allowed here: give a size such as 64MiB".into());
        }
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: f64 = num
            .parse()
            .map_err(|_| format!("invalid size `{s}` (use e.g. 512KiB, 16MiB, 1GiB)"))?;
        let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "kb" => 1000,
            "kib" | "k" => 1 << 10,
            "mb" => 1000 * 1000,
            "mib" | "m" => 1 << 20,
            "gb" => 1000 * 1000 * 1000,
            "gib" | "g" => 1 << 30,
            other => {
                return Err(format!(
                    "unknown size unit `{other}` in `{s}` (use B, KiB, MiB, GiB, KB, MB, GB)"
                ));
            }
        };
        Ok(ByteSize((n * mult as f64) as u64))
    }
}

impl std::str::FromStr for ByteSize {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        ByteSize::parse(s)
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        if b >= 1 << 30 && b.is_multiple_of(1 << 20) {
            write!(f, "{:.1}GiB", b as f64 / (1u64 << 30) as f64)
        } else if b >= 1 << 20 {
            write!(f, "{:.1}MiB", b as f64 / (1u64 << 20) as f64)
        } else {
            write!(f, "{b}B")
        }
    }
}

/// Written exactly, in the largest binary unit that divides it (`256MiB`), else as an integer.
impl Serialize for ByteSize {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let b = self.0;
        match [(1u64 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")]
            .into_iter()
            .find(|(unit, _)| b >= *unit && b.is_multiple_of(*unit))
        {
            Some((unit, name)) => s.serialize_str(&format!("{}{name}", b / unit)),
            None => s.serialize_u64(b),
        }
    }
}

impl schemars::JsonSchema for ByteSize {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ByteSize".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A size in bytes: an integer, or a number with a unit (B, KiB, MiB, GiB, KB, MB, GB), e.g. `512KiB`, `1.5GB`; `auto` where the key's documentation allows it.",
            "anyOf": [
                {"type": "integer", "minimum": 0},
                {"type": "string", "pattern": "^\\s*(auto|[0-9]+(\\.[0-9]+)?\\s*([kKmMgG]([iI]?[bB])?|[bB])?)\\s*$"}
            ]
        })
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(ByteSize(n)),
            Raw::S(s) => ByteSize::parse(&s).map_err(serde::de::Error::custom),
        }
    }
}

/// A size, or `auto` for the share computed from `service.memory_limit` (see [`memory`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AutoSize {
    #[default]
    Auto,
    Set(ByteSize),
}

impl AutoSize {
    /// The size set, `None` for `auto`.
    pub fn get(self) -> Option<ByteSize> {
        match self {
            AutoSize::Auto => None,
            AutoSize::Set(b) => Some(b),
        }
    }
}

impl From<ByteSize> for AutoSize {
    fn from(b: ByteSize) -> Self {
        AutoSize::Set(b)
    }
}

impl Serialize for AutoSize {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            AutoSize::Auto => s.serialize_str("auto"),
            AutoSize::Set(b) => b.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for AutoSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(AutoSize::Set(ByteSize(n))),
            Raw::S(s) if s.trim() == "auto" => Ok(AutoSize::Auto),
            Raw::S(s) => ByteSize::parse(&s)
                .map(AutoSize::Set)
                .map_err(serde::de::Error::custom),
        }
    }
}

impl schemars::JsonSchema for AutoSize {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ByteSize".into()
    }

    fn json_schema(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
        ByteSize::json_schema(g)
    }
}

/// Settings given on the command line or in `TAILGATE_*` environment variables; they win over the file.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Overrides {
    /// OTLP/gRPC listen address (file: receivers.otlp.protocols.grpc.endpoint).
    #[arg(long, global = true, env = "TAILGATE_OTLP_GRPC_ENDPOINT")]
    pub otlp_grpc_endpoint: Option<SocketAddr>,
    /// OTLP/HTTP listen address (file: receivers.otlp.protocols.http.endpoint).
    #[arg(long, global = true, env = "TAILGATE_OTLP_HTTP_ENDPOINT")]
    pub otlp_http_endpoint: Option<SocketAddr>,
    /// Where kept traces go: a URL, or a path / `-` with `--exporter-protocol file`
    /// (file: exporters.otlp.endpoint).
    #[arg(long, global = true, env = "TAILGATE_EXPORTER_ENDPOINT")]
    pub exporter_endpoint: Option<String>,
    /// grpc, http or file (file: exporters.otlp.protocol).
    #[arg(long, global = true, env = "TAILGATE_EXPORTER_PROTOCOL")]
    pub exporter_protocol: Option<ExportProtocol>,
    /// Admin server address for /healthz and /metrics (file: admin.endpoint).
    #[arg(long, global = true, env = "TAILGATE_ADMIN_ENDPOINT")]
    pub admin_endpoint: Option<SocketAddr>,
    /// Log level or filter, e.g. `debug` or `info,tailgate::export=debug` (file: service.log_level). Wins
    /// over `RUST_LOG`, which wins over the file.
    #[arg(long, global = true, env = "TAILGATE_LOG_LEVEL", value_name = "FILTER")]
    pub log_level: Option<String>,
    /// Log format, text or json (file: service.log_format).
    #[arg(long, global = true, env = "TAILGATE_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Record received traffic to this file for `tailgate replay` (.json: OTLP/JSON lines, else
    /// length-delimited protobuf) (file: record.path).
    #[arg(long, global = true, env = "TAILGATE_RECORD")]
    pub record: Option<PathBuf>,
    /// Stop recording before the file passes this size, e.g. 100MiB (file: record.max_bytes).
    #[arg(long, global = true, env = "TAILGATE_RECORD_MAX_BYTES")]
    pub record_max_bytes: Option<ByteSize>,
    /// Allow the recording: it holds the traffic as received, not redacted, personal data included
    /// (file: record.unredacted). Without it tailgate refuses to record.
    #[arg(long, global = true)]
    pub record_unredacted: bool,
}

/// Where a rule's plugin is: `builtin:NAME` as it is; an absolute path as it is; a relative path next to
/// the config file (`base`) when it exists there, else in the first `search` directory that has it, else
/// next to the config file (where the error will say it is missing).
pub fn resolve_plugin_path(plugin: &Path, base: &Path, search: &[PathBuf]) -> PathBuf {
    if crate::plugin::builtin::name_of(plugin).is_some() || plugin.is_absolute() {
        return plugin.to_owned();
    }
    let beside = base.join(plugin);
    if beside.exists() {
        return beside;
    }
    search
        .iter()
        .map(|dir| dir.join(plugin))
        .find(|p| p.exists())
        .unwrap_or(beside)
}

impl Config {
    /// Reads, substitutes `${env:NAME}`, parses and validates a config file. Relative plugin paths are
    /// resolved against the file's directory, then `plugins.search_path` (see [`resolve_plugin_path`]).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut cfg = Config::parse(&text, &path.display().to_string())?;
        let base = path.parent().unwrap_or(Path::new("."));
        let search: Vec<PathBuf> = cfg
            .plugins
            .search_path
            .iter()
            .map(|dir| base.join(dir))
            .collect();
        for rule in cfg
            .policy
            .rules
            .iter_mut()
            .chain(cfg.policy.redactors.iter_mut())
        {
            // Infallible: the closure never fails.
            let _ = rule.each_mut(&mut |r| {
                if let Some(p) = &r.plugin {
                    r.plugin = Some(resolve_plugin_path(p, base, &search));
                }
                Ok(())
            });
        }
        cfg.resolve_security_paths(base);
        Ok(cfg)
    }

    /// Parses config text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        Config::parse_with_env(text, origin, |name| std::env::var(name).ok())
    }

    /// [`Config::parse`] with a custom environment lookup (tests).
    pub fn parse_with_env(
        text: &str,
        origin: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let text = substitute_env(text, origin, env)?;
        let mut cfg: Config = if text.trim().is_empty() {
            Config::default()
        } else {
            serde_norway::from_str(&text).map_err(|e| ConfigError::Invalid {
                path: origin.to_owned(),
                message: e.to_string(),
            })?
        };
        for r in &mut cfg.policy.rules {
            r.name_parts();
        }
        cfg.validate()
            .and_then(|()| {
                let group = cfg.receivers.kafka.as_ref().map_or(1, |k| k.group_size);
                kafka::split_budgets(&mut cfg.policy.rules, group)
            })
            .map_err(|message| ConfigError::Invalid {
                path: origin.to_owned(),
                message,
            })?;
        Ok(cfg)
    }

    /// Applies command-line / environment overrides.
    pub fn apply(&mut self, o: &Overrides) {
        if let Some(a) = o.otlp_grpc_endpoint {
            self.receivers
                .otlp
                .protocols
                .grpc
                .get_or_insert_with(Default::default)
                .endpoint = a;
        }
        if let Some(a) = o.otlp_http_endpoint {
            self.receivers
                .otlp
                .protocols
                .http
                .get_or_insert_with(Default::default)
                .endpoint = a;
        }
        if let Some(e) = &o.exporter_endpoint {
            self.exporters.otlp.endpoint = e.clone();
        }
        if let Some(p) = o.exporter_protocol {
            self.exporters.otlp.protocol = p;
        }
        if let Some(a) = o.admin_endpoint {
            self.admin.endpoint = a;
        }
        if let Some(f) = o.log_format {
            self.service.log_format = f;
        }
        if let Some(l) = &o.log_level {
            self.service.log_level = l.clone();
        }
        if let Some(p) = &o.record {
            let max_bytes = self
                .record
                .as_ref()
                .map_or_else(RecordConfig::default_max_bytes, |r| r.max_bytes);
            let unredacted = self.record.as_ref().is_some_and(|r| r.unredacted);
            self.record = Some(RecordConfig {
                path: p.clone(),
                max_bytes,
                unredacted,
            });
        }
        if let (Some(m), Some(r)) = (o.record_max_bytes, self.record.as_mut()) {
            r.max_bytes = m;
        }
        if let (true, Some(r)) = (o.record_unredacted, self.record.as_mut()) {
            r.unredacted = true;
        }
    }

    /// Resolves relative TLS file paths against `base` (the config file's folder).
    fn resolve_security_paths(&mut self, base: &Path) {
        let p = &mut self.receivers.otlp.protocols;
        let receivers = [
            p.grpc.as_mut().and_then(|g| g.tls.as_mut()),
            p.http.as_mut().and_then(|h| h.tls.as_mut()),
        ];
        for tls in receivers.into_iter().flatten() {
            crate::tls::resolve_server_paths(tls, base);
        }
        if let Some(tls) = self.exporters.otlp.tls.as_mut() {
            crate::tls::resolve_client_paths(tls, base);
        }
    }

    /// Checks the TLS and authentication keys (files are read when tailgate starts).
    fn validate_security(&self) -> Result<(), String> {
        let p = &self.receivers.otlp.protocols;
        let auths = [
            ("grpc", p.grpc.as_ref().and_then(|g| g.auth.as_ref())),
            ("http", p.http.as_ref().and_then(|h| h.auth.as_ref())),
        ];
        for (name, auth) in auths {
            if let Some(auth) = auth {
                auth.validate(&format!("receivers.otlp.protocols.{name}.auth"))
                    .map_err(|e| e.to_string())?;
            }
        }
        if let Some(token) = &self.admin.token {
            crate::auth::Authenticator::bearer(token, "admin.token").map_err(|e| e.to_string())?;
        }
        let e = &self.exporters.otlp;
        if e.tls.is_some() && !e.endpoint.starts_with("https://") {
            return Err(format!(
                "exporters.otlp.tls is set but the endpoint `{}` is not https:// (TLS is used for https:// endpoints only)",
                e.endpoint
            ));
        }
        if let Some(tls) = &e.tls
            && tls.cert_file.is_some() != tls.key_file.is_some()
        {
            return Err("exporters.otlp.tls: cert_file and key_file must be set together".into());
        }
        Ok(())
    }

    /// Refuses a recording that does not say it may hold unredacted traffic (`record.unredacted`,
    /// `--record-unredacted`). Checked after the flags are applied (a flag can allow a recording the
    /// file configures), by `tailgate validate` and again when the proxy starts.
    pub fn validate_record(&self) -> Result<(), String> {
        if let Some(r) = self.record.as_ref().filter(|r| !r.unredacted) {
            Err(format!(
                "record: the recording ({}) would hold the traffic as received, before sampling and \
                 redaction, personal data included; tailgate records only when told so: set \
                 `record.unredacted: true` or pass --record-unredacted (and protect the file)",
                r.path.display()
            ))
        } else {
            Ok(())
        }
    }

    /// The memory limit and its shares, from this machine's cgroup and memory where set to `auto`.
    pub fn memory_budget(&self) -> Result<memory::MemoryBudget, String> {
        self.memory_budget_on(&memory::SystemMemory::detect())
    }

    /// [`Config::memory_budget`] on a machine described by `system`.
    pub fn memory_budget_on(
        &self,
        system: &memory::SystemMemory,
    ) -> Result<memory::MemoryBudget, String> {
        let cache = &self.buffer.decision_cache;
        let ring = &self.buffer.second_chance;
        memory::budget(
            memory::Requested {
                limit: self.service.memory_limit.get(),
                buffer: self.buffer.max_buffer_bytes.get(),
                export_queue: self.exporters.otlp.sending_queue.queue_bytes.get(),
                kept_traces: cache.kept_traces,
                dropped_traces: cache.dropped_traces,
                second_chance: ring.enabled().then(|| ring.max_bytes.get()),
            },
            system,
        )
    }

    /// Checks relations between keys that serde cannot.
    pub fn validate(&self) -> Result<(), String> {
        kafka::validate(self.receivers.kafka.as_ref(), self.exporters.kafka.as_ref())?;
        let budget = self.memory_budget()?;
        // A buffer share of the memory limit that cannot hold one trace of the largest allowed size
        // is a limit set too small. A buffer bound set explicitly is the user's choice and simply
        // the tighter of the two bounds.
        if self.buffer.max_buffer_bytes.get().is_none()
            && budget.buffer < self.buffer.max_bytes_per_trace.0
        {
            return Err(format!(
                "the buffer's share of service.memory_limit ({} of {}) is smaller than \
                 buffer.max_bytes_per_trace ({}): raise service.memory_limit, set \
                 buffer.max_buffer_bytes or lower buffer.max_bytes_per_trace",
                ByteSize(budget.buffer),
                ByteSize(budget.limit),
                self.buffer.max_bytes_per_trace
            ));
        }
        kafka::validate_transport(self)?;
        self.validate_security()?;
        let b = &self.buffer;
        if b.settle.is_zero() || b.idle_timeout.is_zero() || b.max_wait.is_zero() {
            return Err(
                "buffer.settle, buffer.idle_timeout and buffer.max_wait must be greater than 0"
                    .into(),
            );
        }
        if b.max_spans_per_trace == 0 || b.queue_size == 0 {
            return Err(
                "buffer.max_spans_per_trace and buffer.queue_size must be greater than 0".into(),
            );
        }
        let e = &self.exporters.otlp;
        if e.batch.send_batch_size == 0 || e.batch.send_batch_max_size < e.batch.send_batch_size {
            return Err(
                "exporters.otlp.batch: send_batch_size must be > 0 and <= send_batch_max_size"
                    .into(),
            );
        }
        if e.sending_queue.queue_size < e.batch.send_batch_max_size {
            return Err(
                "exporters.otlp.sending_queue.queue_size must be >= batch.send_batch_max_size"
                    .into(),
            );
        }
        if e.sending_queue.num_consumers == 0 {
            return Err("exporters.otlp.sending_queue.num_consumers must be greater than 0".into());
        }
        if let Some(p) = &e.sending_queue.persistent {
            if p.path.as_os_str().is_empty() {
                return Err(
                    "exporters.otlp.sending_queue.persistent.path must not be empty".into(),
                );
            }
            if p.segment_bytes.0 == 0 || p.max_bytes.0 < p.segment_bytes.0 {
                return Err("exporters.otlp.sending_queue.persistent: segment_bytes must be > 0 and <= max_bytes".into());
            }
            if p.fsync == FsyncPolicy::Interval && p.fsync_interval.is_zero() {
                return Err(
                    "exporters.otlp.sending_queue.persistent.fsync_interval must be greater than 0"
                        .into(),
                );
            }
        }
        let url = e.endpoint.starts_with("http://") || e.endpoint.starts_with("https://");
        if matches!(e.protocol, ExportProtocol::Grpc | ExportProtocol::Http) && !url {
            return Err(format!(
                "exporters.otlp.endpoint `{}` must start with http:// or https:// for protocol {}",
                e.endpoint, e.protocol
            ));
        }
        let mut names = std::collections::HashSet::new();
        for (section, rules) in [
            ("rules", &self.policy.rules),
            ("redactors", &self.policy.redactors),
        ] {
            for (i, r) in rules.iter().enumerate() {
                if r.name.is_empty() {
                    return Err(format!("policy.{section}[{i}].name must not be empty"));
                }
                if section == "redactors" && r.shadow {
                    return Err(format!(
                        "policy.redactors[{i}] `{}`: shadow is only for sampling rules",
                        r.name
                    ));
                }
                let mut stack = vec![(r, format!("policy.{section}[{i}]"), false)];
                while let Some((node, at, part)) = stack.pop() {
                    if !names.insert(node.name.as_str()) {
                        return Err(format!("{at}: name `{}` is used twice", node.name));
                    }
                    node.validate(&at, section == "redactors", part)?;
                    for (kind, parts) in [("all", &node.all), ("any", &node.any)] {
                        for (j, p) in parts.iter().enumerate() {
                            stack.push((p, format!("{at}.{kind}[{j}]"), true));
                        }
                    }
                    if let Some(n) = &node.not {
                        stack.push((n, format!("{at}.not"), true));
                    }
                }
            }
        }
        Ok(())
    }
}

/// Replaces `${env:NAME}` and `${NAME}` with the variable's value, as the Collector does. `$$` is a `$`.
fn substitute_env(
    text: &str,
    origin: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<String, ConfigError> {
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        // Comments are not configuration: `${env:X}` in a comment is left alone, as the Collector (which
        // substitutes after parsing) does.
        let (code, comment) = line.split_at(comment_start(line));
        substitute_line(code, origin, &env, &mut out)?;
        out.push_str(comment);
    }
    Ok(out)
}

/// Byte offset where a YAML comment starts in `line` (a `#` at the start or after whitespace, outside
/// quotes), or the line's length.
fn comment_start(line: &str) -> usize {
    let (mut single, mut double) = (false, false);
    let mut prev_space = true;
    for (i, c) in line.char_indices() {
        match c {
            '\'' if !double => single = !single,
            '"' if !single => double = !double,
            '#' if !single && !double && prev_space => return i,
            _ => {}
        }
        prev_space = c.is_whitespace();
    }
    line.len()
}

fn substitute_line(
    text: &str,
    origin: &str,
    env: &impl Fn(&str) -> Option<String>,
    out: &mut String,
) -> Result<(), ConfigError> {
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(body) = after.strip_prefix('{') {
            let Some(end) = body.find('}') else {
                return Err(ConfigError::Invalid {
                    path: origin.into(),
                    message: "unclosed `${` in config".into(),
                });
            };
            let name = body[..end].strip_prefix("env:").unwrap_or(&body[..end]);
            let value = env(name).ok_or_else(|| ConfigError::MissingEnv {
                path: origin.into(),
                name: name.into(),
            })?;
            out.push_str(&value);
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_all_defaults() {
        let c = Config::parse("", "t").expect("ok");
        assert_eq!(c, Config::default());
        assert_eq!(
            c.receivers
                .otlp
                .protocols
                .grpc
                .as_ref()
                .map(|g| g.endpoint.port()),
            Some(4317)
        );
        assert_eq!(c.admin.endpoint.to_string(), "127.0.0.1:8888");
    }

    #[test]
    fn unknown_key_is_named() {
        let e = Config::parse("buffer:\n  setle: 1s\n", "cfg.yaml").expect_err("typo");
        let m = e.to_string();
        assert!(m.contains("setle") && m.contains("cfg.yaml"), "{m}");
    }

    #[test]
    fn env_references_in_comments_are_ignored() {
        let env = |_: &str| None;
        let y = "# use ${env:SECRET} here\nexporters:\n  otlp:\n    endpoint: \"http://a#b\" # ${env:X}\n";
        let c = Config::parse_with_env(y, "t", env).expect("comments are not substituted");
        assert_eq!(c.exporters.otlp.endpoint, "http://a#b");
    }

    #[test]
    fn env_substitution_and_missing_env() {
        let env = |k: &str| (k == "EP").then(|| "http://jaeger:4317".to_owned());
        let c = Config::parse_with_env("exporters:\n  otlp:\n    endpoint: ${env:EP}\n", "t", env)
            .expect("ok");
        assert_eq!(c.exporters.otlp.endpoint, "http://jaeger:4317");
        let c = Config::parse_with_env("exporters:\n  otlp:\n    endpoint: ${EP}\n", "t", env)
            .expect("ok");
        assert_eq!(c.exporters.otlp.endpoint, "http://jaeger:4317");
        let e =
            Config::parse_with_env("exporters:\n  otlp:\n    endpoint: ${env:NOPE}\n", "t", env)
                .expect_err("missing");
        assert!(e.to_string().contains("NOPE"));
    }

    #[test]
    fn a_small_explicit_buffer_is_allowed_a_too_small_memory_limit_is_named() {
        // An explicit buffer bound below the per-trace maximum is simply the tighter bound.
        Config::parse("buffer:\n  max_buffer_bytes: 64KiB\n", "t").expect("validates");
        // A memory limit whose buffer share cannot hold one largest trace is an error naming it.
        let e = Config::parse(
            "service:\n  memory_limit: 64MiB\nbuffer:\n  max_bytes_per_trace: 48MiB\n",
            "t",
        )
        .expect_err("buffer share too small")
        .to_string();
        assert!(e.contains("service.memory_limit"), "{e}");
        assert!(e.contains("max_bytes_per_trace"), "{e}");
    }

    #[test]
    fn sizes_and_durations_parse() {
        let c = Config::parse(
            "buffer:\n  max_buffer_bytes: 512MiB\n  settle: 1500ms\nreceivers:\n  otlp:\n    protocols:\n      http:\n        max_request_body_size: 1048576\n",
            "t",
        )
        .expect("ok");
        assert_eq!(c.buffer.max_buffer_bytes, AutoSize::Set(ByteSize::mib(512)));
        assert!(Config::parse("buffer:\n  max_bytes_per_trace: auto\n", "t").is_err());
        assert_eq!(c.buffer.settle, Duration::from_millis(1500));
        assert_eq!(
            c.receivers
                .otlp
                .protocols
                .http
                .map(|h| h.max_request_body_size),
            Some(ByteSize::mib(1))
        );
        assert!(Config::parse("buffer:\n  max_buffer_bytes: 5 parsecs\n", "t").is_err());
    }

    #[test]
    fn overrides_win() {
        let mut c = Config::default();
        c.apply(&Overrides {
            exporter_protocol: Some(ExportProtocol::File),
            exporter_endpoint: Some("-".into()),
            ..Default::default()
        });
        assert_eq!(c.exporters.otlp.protocol, ExportProtocol::File);
        assert!(c.validate().is_ok());
    }

    #[test]
    fn duplicate_rule_names_rejected() {
        let y =
            "policy:\n  rules:\n    - {name: a, plugin: x.wasm}\n    - {name: a, plugin: y.wasm}\n";
        assert!(
            Config::parse(y, "t")
                .expect_err("dup")
                .to_string()
                .contains("used twice")
        );
    }

    #[test]
    fn record_flags_and_keys() {
        let mut c = Config::parse("record:\n  path: a.pb\n", "t").expect("valid");
        assert_eq!(
            c.record.as_ref().map(|r| r.max_bytes),
            Some(ByteSize::mib(100))
        );
        c.apply(&Overrides {
            record_max_bytes: Some("1MiB".parse().expect("size")),
            ..Default::default()
        });
        assert_eq!(
            c.record.as_ref().map(|r| r.max_bytes),
            Some(ByteSize::mib(1))
        );
        let mut c = Config::default();
        c.apply(&Overrides {
            record: Some("t.json".into()),
            ..Default::default()
        });
        let r = c.record.clone().expect("set by the flag");
        assert_eq!((r.path, r.max_bytes), ("t.json".into(), ByteSize::mib(100)));
        // Unredacted traffic on disk only when asked for by name.
        let err = c.validate_record().expect_err("refused without the flag");
        assert!(err.contains("--record-unredacted"), "{err}");
        c.apply(&Overrides {
            record_unredacted: true,
            ..Default::default()
        });
        assert!(c.record.as_ref().is_some_and(|r| r.unredacted));
        assert!(c.validate_record().is_ok());
        let c = Config::parse("record:\n  path: a.pb\n", "t").expect("parses");
        let err = c.validate_record().expect_err("refused");
        assert!(err.contains("record.unredacted"), "{err}");
        let c = Config::parse("record:\n  path: a.pb\n  unredacted: true\n", "t").expect("valid");
        assert!(c.validate_record().is_ok());
        let err = Config::parse("record:\n  path: a.pb\n  max_byte: 1\n", "t").expect_err("typo");
        assert!(err.to_string().contains("max_byte"), "{err}");
        let c = Config::parse("admin:\n  jaeger_ui_url: http://j:16686\n", "t").expect("valid");
        assert_eq!(c.admin.jaeger_ui_url, "http://j:16686");
    }
}
