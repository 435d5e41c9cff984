//! Kafka test helpers (feature `kafka`): Apache Kafka brokers as child processes ([`KafkaCluster`]),
//! replica configurations, a test producer of OTLP messages keyed by trace id, and span bookkeeping for
//! the sent / received / duplicated counts.

mod cluster;

pub use cluster::{KafkaCluster, LIBS_ENV, SKIP_ENV};

use crate::otlp::FlatSpan;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::collections::BTreeMap;
use std::time::Duration;

pub const TOPIC: &str = "otlp_spans";
pub const PARTITIONS: i32 = 4;

/// `a,b,c` as a YAML flow list `["a", "b", "c"]`.
fn broker_list(brokers: &str) -> String {
    let quoted: Vec<String> = brokers.split(',').map(|b| format!("\"{b}\"")).collect();
    format!("[{}]", quoted.join(", "))
}

/// A sampler replica's configuration: reads `brokers` (comma-separated), exports OTLP/gRPC to `export_to`, no OTLP
/// receivers. `policy` is the YAML of the `policy:` section indented by two spaces.
pub fn replica_yaml(brokers: &str, export_to: &str, admin: &str, policy: &str) -> String {
    let brokers = broker_list(brokers);
    format!(
        r#"receivers:
  otlp:
    protocols:
      grpc: null
      http: null
  kafka:
    brokers: {brokers}
    topic: {TOPIC}
    group_id: tailgate-e2e
    commit_interval: 200ms
    handoff_timeout: 20s
    group_size: 2
    client_options:
      session.timeout.ms: "6000"
      heartbeat.interval.ms: "300"
      topic.metadata.refresh.interval.ms: "1000"
exporters:
  otlp:
    protocol: grpc
    endpoint: "{export_to}"
    compression: none
    retry_on_failure:
      initial_interval: 50ms
      max_interval: 200ms
    batch:
      timeout: 50ms
buffer:
  settle: 300ms
  idle_timeout: 2s
  max_wait: 10s
policy:
{policy}admin:
  endpoint: {admin}
service:
  shutdown_grace: 20s
"#
    )
}

/// The ingest tier's configuration: OTLP receivers on port 0, spans published to `brokers`.
pub fn ingest_yaml(brokers: &str) -> String {
    let brokers = broker_list(brokers);
    format!(
        r#"receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:0
      http:
        endpoint: 127.0.0.1:0
exporters:
  kafka:
    brokers: {brokers}
    topic: {TOPIC}
admin:
  endpoint: 127.0.0.1:0
"#
    )
}

/// A trace id for test trace `i` of run `run` (random-looking, so partitions and sampling spread).
pub fn trace_id(run: u64, i: u64) -> u128 {
    let x = (u128::from(run) << 64 | u128::from(i))
        .wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835);
    x | 1
}

fn span(trace: u128, id: u64, parent: u64, name: &str) -> Span {
    Span {
        trace_id: trace.to_be_bytes().to_vec(),
        span_id: id.to_be_bytes().to_vec(),
        parent_span_id: if parent == 0 {
            Vec::new()
        } else {
            parent.to_be_bytes().to_vec()
        },
        name: name.into(),
        kind: 2,
        start_time_unix_nano: 1_700_000_000_000_000_000,
        end_time_unix_nano: 1_700_000_000_001_000_000,
        ..Default::default()
    }
}

fn request(spans: Vec<Span>) -> Vec<u8> {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue("kafka-e2e".into())),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            schema_url: String::new(),
        }],
    }
    .encode_to_vec()
}

/// Spans per test trace: a root and three children, published in two messages (children 1-2, then
/// child 3 and the root), the way an SDK's batches split a trace.
pub const SPANS_PER_TRACE: usize = 4;

/// A producer for the test's own messages.
pub fn producer(brokers: &str) -> anyhow::Result<FutureProducer> {
    producer_with(brokers, &[])
}

/// [`producer`] with extra librdkafka properties (`enable.idempotence`, `linger.ms`, ...).
pub fn producer_with(brokers: &str, extra: &[(&str, &str)]) -> anyhow::Result<FutureProducer> {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers)
        .set("partitioner", "murmur2_random")
        .set("linger.ms", "2");
    for (k, v) in extra {
        c.set(*k, *v);
    }
    Ok(c.create()?)
}

/// Publishes traces `from..to` of `run`, each as two messages keyed by trace id, the second half of each
/// trace after the first half of the next (so one partition holds several open traces at once). Waits
/// for every acknowledgement; returns the spans sent.
pub async fn publish(p: &FutureProducer, run: u64, from: u64, to: u64) -> anyhow::Result<usize> {
    let mut sent = 0;
    let mut prev: Option<u128> = None;
    let mut deliveries = Vec::new();
    let second = |t: u128| request(vec![span(t, 4, 1, "c3"), span(t, 1, 0, "root")]);
    for i in from..to {
        let t = trace_id(run, i);
        deliveries.push(
            send(
                p,
                t,
                request(vec![span(t, 2, 1, "c1"), span(t, 3, 1, "c2")]),
            )
            .await?,
        );
        if let Some(pt) = prev.take() {
            deliveries.push(send(p, pt, second(pt)).await?);
        }
        prev = Some(t);
        sent += SPANS_PER_TRACE;
    }
    if let Some(pt) = prev {
        deliveries.push(send(p, pt, second(pt)).await?);
    }
    for d in deliveries {
        d.await?
            .map_err(|(e, _)| anyhow::anyhow!("produce failed: {e}"))?;
    }
    Ok(sent)
}

/// Queues one message (waiting while the producer's queue is full).
async fn send(
    p: &FutureProducer,
    trace: u128,
    body: Vec<u8>,
) -> anyhow::Result<rdkafka::producer::DeliveryFuture> {
    let key = tailgate::kafka::sink::trace_key(trace);
    let mut record = FutureRecord::to(TOPIC).key(&key).payload(&body);
    loop {
        match p.send_result(record) {
            Ok(d) => return Ok(d),
            Err((
                rdkafka::error::KafkaError::MessageProduction(
                    rdkafka::types::RDKafkaErrorCode::QueueFull,
                ),
                r,
            )) => {
                record = r;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err((e, _)) => anyhow::bail!("produce failed: {e}"),
        }
    }
}

/// Received spans counted per (trace, span): unique spans, total deliveries, and spans delivered more
/// than once (their extra copies).
pub struct Tally {
    pub per_span: BTreeMap<(Vec<u8>, Vec<u8>), usize>,
}

impl Tally {
    pub fn of(spans: &[FlatSpan]) -> Tally {
        let mut per_span = BTreeMap::new();
        for s in spans {
            *per_span
                .entry((s.span.trace_id.clone(), s.span.span_id.clone()))
                .or_insert(0) += 1;
        }
        Tally { per_span }
    }

    pub fn unique(&self) -> usize {
        self.per_span.len()
    }

    pub fn duplicates(&self) -> usize {
        self.per_span.values().map(|n| n - 1).sum()
    }

    /// Spans per trace id, counting each span once.
    pub fn spans_per_trace(&self) -> BTreeMap<Vec<u8>, usize> {
        let mut m = BTreeMap::new();
        for (t, _) in self.per_span.keys() {
            *m.entry(t.clone()).or_insert(0) += 1;
        }
        m
    }
}

/// Sum of a metric over the admin `/metrics` of a replica.
pub async fn metric(admin: &str, name: &str) -> anyhow::Result<f64> {
    let text = reqwest::get(format!("http://{admin}/metrics"))
        .await?
        .text()
        .await?;
    Ok(crate::otlp::metric_sum(&text, name))
}

/// Polls (async) every 100 ms until `f` is true, or fails after `timeout` naming `what`.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut f: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while !f().await {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// A sampler replica as a `tailgate` process of its own (so it can be killed with SIGKILL), with its
/// admin endpoint on a free port; killed on drop.
pub struct ReplicaProcess {
    pub child: tokio::process::Child,
    /// `127.0.0.1:PORT` of its admin endpoint (`/metrics`).
    pub admin: String,
    dir: std::path::PathBuf,
}

impl ReplicaProcess {
    /// Starts `tailgate --config` on [`replica_yaml`] for `brokers` with `default: keep`, exporting to
    /// `export_to`; `group_size` is written into the configuration.
    pub async fn spawn(
        name: &str,
        brokers: &str,
        export_to: &str,
        group_size: usize,
    ) -> anyhow::Result<ReplicaProcess> {
        use std::process::Stdio;
        let admin = format!("127.0.0.1:{}", crate::free_port()?);
        let dir = std::env::temp_dir().join(format!(
            "tailgate-kafka-{name}-{}-{}",
            std::process::id(),
            crate::free_port()?
        ));
        std::fs::create_dir_all(&dir)?;
        let config = dir.join("tailgate.yaml");
        std::fs::write(
            &config,
            replica_yaml(brokers, export_to, &admin, "  default: keep\n")
                .replace("group_size: 2", &format!("group_size: {group_size}")),
        )?;
        let child = tokio::process::Command::new(crate::binary::tailgate_bin()?)
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "tailgate=info,librdkafka=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()?;
        Ok(ReplicaProcess { child, admin, dir })
    }

    /// A metric's sum from its `/metrics`, `-1` while it does not answer.
    pub async fn metric(&self, name: &str) -> f64 {
        metric(&self.admin, name).await.unwrap_or(-1.0)
    }

    /// Partitions it owns (`-1` while it does not answer).
    pub async fn partitions(&self) -> f64 {
        self.metric("tailgate_kafka_partitions_assigned").await
    }

    /// True once nothing is buffered or waiting for the exporter.
    pub async fn settled(&self) -> bool {
        self.metric("tailgate_buffer_spans").await == 0.0
            && self.metric("tailgate_export_queue_spans").await == 0.0
    }

    /// SIGKILL: no final commit, no LeaveGroup.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        self.child.start_kill()?;
        self.child.wait().await?;
        Ok(())
    }

    /// SIGTERM, then waits (bounded) for a clean exit.
    pub async fn terminate(&mut self) -> anyhow::Result<()> {
        if let Some(pid) = self.child.id() {
            std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()?;
        }
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await??;
        anyhow::ensure!(status.success(), "replica exits cleanly: {status}");
        Ok(())
    }
}

impl Drop for ReplicaProcess {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The first copy of each (trace, span) in `spans`, in arrival order: what arrived, duplicates aside.
pub fn first_copies(spans: &[FlatSpan]) -> Vec<FlatSpan> {
    let mut seen = std::collections::BTreeSet::new();
    spans
        .iter()
        .filter(|s| seen.insert((s.span.trace_id.clone(), s.span.span_id.clone())))
        .cloned()
        .collect()
}

/// Per partition of [`TOPIC`]: the offset committed by `group` (-1: none) and the high watermark, for
/// error messages about what a group has not read.
pub fn group_offsets(brokers: &str, group: &str) -> anyhow::Result<Vec<(i32, i64, i64)>> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .create()?;
    let md = c.fetch_metadata(Some(TOPIC), Duration::from_secs(5))?;
    let mut tpl = TopicPartitionList::new();
    for t in md.topics() {
        for p in t.partitions() {
            tpl.add_partition(TOPIC, p.id());
        }
    }
    let committed = c.committed_offsets(tpl, Duration::from_secs(5))?;
    let mut out = Vec::new();
    for e in committed.elements_for_topic(TOPIC) {
        let (_, high) = c.fetch_watermarks(TOPIC, e.partition(), Duration::from_secs(5))?;
        let at = match e.offset() {
            Offset::Offset(o) => o,
            _ => -1,
        };
        out.push((e.partition(), at, high));
    }
    out.sort_unstable();
    Ok(out)
}
