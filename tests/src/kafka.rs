//! Kafka test helpers (feature `kafka`): replica configurations, a test producer of OTLP messages keyed by trace id, and span
//! bookkeeping for the sent / received / duplicated counts.

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

/// A sampler replica's configuration: reads `brokers`, exports OTLP/gRPC to `export_to`, no OTLP
/// receivers. `policy` is the YAML of the `policy:` section indented by two spaces.
pub fn replica_yaml(brokers: &str, export_to: &str, admin: &str, policy: &str) -> String {
    format!(
        r#"receivers:
  otlp:
    protocols:
      grpc: null
      http: null
  kafka:
    brokers: ["{brokers}"]
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
    brokers: ["{brokers}"]
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
    Ok(ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("partitioner", "murmur2_random")
        .set("linger.ms", "2")
        .create()?)
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

/// A tansu broker (in-memory storage) on a loopback port with the topic created, killed on drop.
pub struct Tansu {
    _child: tokio::process::Child,
    /// `127.0.0.1:PORT`.
    pub brokers: String,
}

impl Tansu {
    /// Starts tansu from `$TAILGATE_TANSU` (`None` when it is not set) and creates [`TOPIC`] with
    /// [`PARTITIONS`] partitions (tansu creates no topic by itself).
    pub async fn start() -> anyhow::Result<Option<Tansu>> {
        use std::process::Stdio;
        let Some(bin) = std::env::var_os("TAILGATE_TANSU") else {
            return Ok(None);
        };
        let port = crate::free_port()?;
        let url = format!("tcp://127.0.0.1:{port}");
        let child = tokio::process::Command::new(&bin)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "memory://tansu/"])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let addr = format!("127.0.0.1:{port}");
        crate::poll_until("tansu to listen", Duration::from_secs(30), || {
            std::net::TcpStream::connect(&addr).ok()
        })
        .await?;
        let status = tokio::process::Command::new(&bin)
            .args(["topic", "create", TOPIC, "--broker", &url])
            .args(["--partitions", &PARTITIONS.to_string()])
            .stdin(Stdio::null())
            .status()
            .await?;
        anyhow::ensure!(status.success(), "tansu topic create failed: {status}");
        Ok(Some(Tansu {
            _child: child,
            brokers: addr,
        }))
    }
}
