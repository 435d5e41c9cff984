//! Jaeger v2 behind Kafka (Apache Kafka, one broker; a real Jaeger v2 from `tailgate_e2e::jaeger`
//! consuming `jaeger_spans` with its `kafka` receiver, the Collector's kafkareceiver with
//! `encoding: otlp_proto`, into memory storage; checked through Jaeger's query API):
//!
//! - tailgate's Kafka messages are what Jaeger reads: the Python SDK sends to a tailgate with
//!   `exporters.kafka` publishing to `jaeger_spans`; every trace is in Jaeger with every span, once;
//! - kept, redacted traces through Kafka, the topology large Jaeger deployments run: a sampling tailgate
//!   (keep errors, drop the rest, the PII redactor) exports OTLP to a Jaeger v2 collector whose `kafka`
//!   exporter publishes to the topic that the storage-side Jaeger consumes. The error traces arrive with
//!   the email pseudonymised, the others never;
//! - the same without the collector: tailgate's own Kafka transport (`exporters.otlp.protocol: kafka`)
//!   publishes the kept, redacted traces to the topic Jaeger reads, one message per export batch (a
//!   small batch limit, so several); every kept trace arrives whole, the dropped ones and the planted
//!   email and card number never, and the topic holds every kept span once.
//!
//! Needs `TAILGATE_KAFKA_LIBS` and `TAILGATE_JAEGER` (scripts/peers.sh).

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;
use tailgate::config::Config;
use tailgate_e2e::jaeger::{Jaeger, jaeger_binary};
use tailgate_e2e::kafka::{self as support, KafkaCluster, TOPIC};
use tailgate_e2e::otlp::{decode_hex_request, flatten, hex};
use tailgate_e2e::proxy::{RunningAppExt, TestConfig};
use tailgate_e2e::python::run_script;
use tailgate_e2e::{WAIT, free_port};

/// The topic Jaeger's Kafka receiver and exporter use by default for traces in Jaeger's own examples.
const JAEGER_TOPIC: &str = "jaeger_spans";

/// Jaeger's `kafka` receiver: the topic above, `otlp_proto`, from the earliest offset (the test may
/// publish before the receiver has joined its group).
fn kafka_receiver(brokers: &str) -> String {
    format!(
        "  kafka:\n    brokers: [\"{brokers}\"]\n    group_id: jaeger-e2e\n    initial_offset: earliest\n    \
         traces:\n      topic: {JAEGER_TOPIC}\n      encoding: otlp_proto\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jaeger_v2_kafka_receiver_reads_what_tailgate_publishes() -> anyhow::Result<()> {
    tailgate_e2e::init_logging();
    let Some(kafka) = KafkaCluster::start(1).await? else {
        return Ok(());
    };
    kafka.create_topic(JAEGER_TOPIC, 4).await?;
    let mut jaeger = Jaeger::start().await?;
    let result = run(&kafka, &mut jaeger).await;
    let result = result.map_err(|e| e.context(jaeger.logs()));
    if result.is_ok() {
        kafka.stop();
    }
    result
}

async fn run(kafka: &KafkaCluster, jaeger: &mut Jaeger) -> anyhow::Result<()> {
    jaeger
        .add_receiver("kafka", &kafka_receiver(&kafka.bootstrap()))
        .await?;
    let yaml = support::ingest_yaml(&kafka.bootstrap()).replace(
        &format!("topic: {TOPIC}"),
        &format!("topic: {JAEGER_TOPIC}"),
    );
    let tailgate = tailgate::app::start(Config::parse(&yaml, "kafka to jaeger")?).await?;
    let grpc = tailgate.grpc_endpoint();
    let args = [
        "--protocol",
        "grpc",
        "--endpoint",
        &grpc,
        "--traces",
        "20",
        "--seconds",
        "1",
        "--service",
        "kafka-to-jaeger",
    ];
    let report = run_script("load.py", &args).await?;
    let expected = flatten(&decode_hex_request(
        report["expected"].as_str().unwrap_or(""),
    )?);
    let mut per_trace: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for s in &expected {
        per_trace
            .entry(hex(&s.span.trace_id))
            .or_default()
            .push(hex(&s.span.span_id));
    }
    anyhow::ensure!(per_trace.len() == 20, "the SDK sent 20 traces");
    for (trace, spans) in &per_trace {
        let (_, got) = jaeger.wait_for_trace(trace, spans.len()).await?;
        let mut want = spans.clone();
        want.sort();
        let mut have: Vec<String> = got.spans.iter().map(|s| s.span_id.clone()).collect();
        have.sort();
        assert_eq!(have, want, "trace {trace}: the spans the SDK sent");
        assert!(
            got.spans.iter().all(|s| s.service == "kafka-to-jaeger"),
            "trace {trace}: the resource's service.name survived"
        );
        // The raw storage view: each span stored once (the v1 API would merge duplicates).
        let (_, raw) = jaeger
            .trace_v3_raw(trace)
            .await?
            .ok_or_else(|| anyhow::anyhow!("trace {trace} missing from /api/v3"))?;
        assert_eq!(
            raw.len(),
            spans.len(),
            "trace {trace}: every span stored once"
        );
    }
    eprintln!(
        "Jaeger through Kafka: {} traces, {} spans sent, all in Jaeger's query API",
        per_trace.len(),
        expected.len()
    );
    tailgate.shutdown().await;
    Ok(())
}

/// A Jaeger v2 in the collector role: OTLP/gRPC in, its `kafka` exporter out to [`JAEGER_TOPIC`]
/// (`otlp_proto`, keyed by trace id), nothing else, as in
/// `examples/kubernetes/kafka/60-jaeger-kafka.yaml`; killed on drop.
struct JaegerCollector {
    child: tokio::process::Child,
    otlp_grpc: u16,
    dir: std::path::PathBuf,
}

impl JaegerCollector {
    async fn start(brokers: &str) -> anyhow::Result<JaegerCollector> {
        let otlp_grpc = free_port()?;
        let dir = std::env::temp_dir().join(format!(
            "tailgate-kafka-jaeger-collector-{}-{otlp_grpc}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir)?;
        std::fs::write(
            dir.join("config.yaml"),
            format!(
                "service:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      processors: [batch]\n      \
                 exporters: [kafka]\n  telemetry:\n    metrics:\n      level: none\n\
                 receivers:\n  otlp:\n    protocols:\n      grpc:\n        endpoint: 127.0.0.1:{otlp_grpc}\n\
                 processors:\n  batch: {{}}\n\
                 exporters:\n  kafka:\n    brokers: [\"{brokers}\"]\n    traces:\n      topic: {JAEGER_TOPIC}\n      \
                 encoding: otlp_proto\n    \
                 partition_traces_by_id: true\n"
            ),
        )?;
        let log = std::fs::File::create(dir.join("collector.log"))?;
        let child = tokio::process::Command::new(jaeger_binary()?)
            .arg("--config")
            .arg(dir.join("config.yaml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()?;
        let mut c = JaegerCollector {
            child,
            otlp_grpc,
            dir,
        };
        let deadline = tokio::time::Instant::now() + WAIT;
        while std::net::TcpStream::connect(("127.0.0.1", otlp_grpc)).is_err() {
            if let Some(status) = c.child.try_wait()? {
                anyhow::bail!("the Jaeger collector exited ({status}):\n{}", c.log());
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "the Jaeger collector did not listen within {WAIT:?}:\n{}",
                c.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(c)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("collector.log")).unwrap_or_default()
    }
}

impl Drop for JaegerCollector {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Traces of two spans each; the roots of the even ones end with status ERROR; every root carries a
/// customer's email.
fn traces_with_errors(n: u64) -> (ExportTraceServiceRequest, Vec<(String, bool)>) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut spans = Vec::new();
    let mut ids = Vec::new();
    for i in 0..n {
        let trace = support::trace_id(77, i).to_be_bytes().to_vec();
        let error = i % 2 == 0;
        ids.push((hex(&trace), error));
        spans.push(Span {
            trace_id: trace.clone(),
            span_id: (2 * i + 1).to_be_bytes().to_vec(),
            name: "checkout".into(),
            kind: 2,
            start_time_unix_nano: now,
            end_time_unix_nano: now + 2_000_000,
            attributes: vec![KeyValue {
                key: "user.email".into(),
                value: Some(AnyValue {
                    value: Some(any_value::Value::StringValue(EMAIL.into())),
                }),
                ..Default::default()
            }],
            status: error.then(|| Status {
                code: 2,
                message: "payment declined".into(),
            }),
            ..Default::default()
        });
        spans.push(Span {
            trace_id: trace,
            span_id: (2 * i + 2).to_be_bytes().to_vec(),
            parent_span_id: (2 * i + 1).to_be_bytes().to_vec(),
            name: "charge card".into(),
            kind: 3,
            start_time_unix_nano: now + 500_000,
            end_time_unix_nano: now + 1_500_000,
            ..Default::default()
        });
    }
    let request = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue("shop".into())),
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
    };
    (request, ids)
}

const EMAIL: &str = "alice@example.com";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_redacted_traces_reach_jaeger_through_kafka() -> anyhow::Result<()> {
    tailgate_e2e::init_logging();
    let Some(kafka) = KafkaCluster::start(1).await? else {
        return Ok(());
    };
    kafka.create_topic(JAEGER_TOPIC, 4).await?;
    let mut jaeger = Jaeger::start().await?;
    let collector = JaegerCollector::start(&kafka.bootstrap()).await?;
    let result = through_collector(&kafka, &mut jaeger, &collector).await;
    let result = result.map_err(|e| {
        e.context(format!(
            "{}\n--- Jaeger collector ---\n{}",
            jaeger.logs(),
            collector.log()
        ))
    });
    if result.is_ok() {
        kafka.stop();
    }
    result
}

async fn through_collector(
    kafka: &KafkaCluster,
    jaeger: &mut Jaeger,
    collector: &JaegerCollector,
) -> anyhow::Result<()> {
    jaeger
        .add_receiver("kafka", &kafka_receiver(&kafka.bootstrap()))
        .await?;
    let mut config =
        TestConfig::passthrough_to(format!("http://127.0.0.1:{}", collector.otlp_grpc));
    config.policy = format!(
        "  default: drop\n  rules:\n    - name: errors\n      plugin: \"{}\"\n      call_timeout: 1s\n  \
         redactors:\n    - name: pii\n      plugin: \"{}\"\n      call_timeout: 1s\n",
        tailgate::testing::built_plugin("keep-errors").display(),
        tailgate::testing::built_plugin("pii").display()
    );
    let tailgate = config.start().await?;
    let (request, ids) = traces_with_errors(10);
    let mut client = TraceServiceClient::connect(tailgate.grpc_endpoint()).await?;
    client.export(request).await?;

    for (trace, error) in ids.iter().filter(|(_, e)| *e) {
        anyhow::ensure!(*error);
        let (raw, got) = jaeger.wait_for_trace(trace, 2).await?;
        assert!(
            !raw.contains(EMAIL),
            "trace {trace}: the email never reaches Jaeger: {raw}"
        );
        let root = got
            .spans
            .iter()
            .find(|s| s.operation == "checkout")
            .ok_or_else(|| anyhow::anyhow!("trace {trace}: no root span"))?;
        let email = root.tags.get("user.email").cloned().unwrap_or_default();
        assert!(
            !email.is_empty() && email != EMAIL,
            "trace {trace}: user.email is pseudonymised, not removed or kept: {email:?}"
        );
        assert!(
            got.spans.iter().all(|s| s.service == "shop"),
            "trace {trace}: service.name survived"
        );
    }
    // Every trace decided: the five without an error were dropped and never reach Jaeger.
    tailgate_e2e::poll_until("every trace decided", WAIT, || {
        (tailgate.metrics.spans_sampled_out.get() == 10).then_some(())
    })
    .await?;
    for (trace, _) in ids.iter().filter(|(_, e)| !*e) {
        assert!(
            jaeger.trace(trace).await?.is_none(),
            "trace {trace} had no error: dropped, not in Jaeger"
        );
    }
    eprintln!(
        "Jaeger through Kafka behind a Jaeger collector: 5 error traces kept and redacted, 5 dropped"
    );
    tailgate.shutdown().await;
    Ok(())
}

/// The root's status message of the error traces in [`tailgate_publishes_kept_redacted_traces_to_jaegers_topic`]:
/// a card number the `pii` redactor masks (all but the last four digits).
const CARD: &str = "4111 1111 1111 1111";

/// The batch limit of that test: small, so the kept traces leave in several Kafka messages.
const SMALL_BATCH: u64 = 4096;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tailgate_publishes_kept_redacted_traces_to_jaegers_topic() -> anyhow::Result<()> {
    tailgate_e2e::init_logging();
    let Some(kafka) = KafkaCluster::start(1).await? else {
        return Ok(());
    };
    kafka.create_topic(JAEGER_TOPIC, 4).await?;
    let mut jaeger = Jaeger::start().await?;
    let result = direct(&kafka, &mut jaeger).await;
    let result = result.map_err(|e| e.context(jaeger.logs()));
    if result.is_ok() {
        kafka.stop();
    }
    result
}

/// tailgate (keep errors, drop the rest, the PII redactor) with `exporters.otlp.protocol: kafka`
/// publishing to [`JAEGER_TOPIC`] -> Jaeger v2's `kafka` receiver -> memory storage; no collector.
async fn direct(kafka: &KafkaCluster, jaeger: &mut Jaeger) -> anyhow::Result<()> {
    const TRACES: u64 = 40;
    jaeger
        .add_receiver("kafka", &kafka_receiver(&kafka.bootstrap()))
        .await?;
    let mut config = TestConfig::passthrough_to(kafka.bootstrap());
    config.exporter_protocol = "kafka";
    config.exporter_extra = format!("    kafka:\n      topic: {JAEGER_TOPIC}\n");
    config.batch_extra = format!("      send_batch_max_bytes: {SMALL_BATCH}\n");
    config.policy = format!(
        "  default: drop\n  rules:\n    - name: errors\n      plugin: \"{}\"\n      call_timeout: 1s\n  \
         redactors:\n    - name: pii\n      plugin: \"{}\"\n      call_timeout: 1s\n",
        tailgate::testing::built_plugin("keep-errors").display(),
        tailgate::testing::built_plugin("pii").display()
    );
    let tailgate = config.start().await?;
    let (mut request, ids) = traces_with_errors(TRACES);
    for span in &mut request.resource_spans[0].scope_spans[0].spans {
        if let Some(status) = span.status.as_mut() {
            status.message = format!("payment declined for card {CARD}");
        }
    }
    let mut client = TraceServiceClient::connect(tailgate.grpc_endpoint()).await?;
    client.export(request).await?;

    let kept: Vec<&String> = ids.iter().filter(|(_, e)| *e).map(|(t, _)| t).collect();
    for trace in &kept {
        let (raw, got) = jaeger.wait_for_trace(trace, 2).await?;
        assert!(
            !raw.contains(EMAIL) && !raw.contains(CARD),
            "trace {trace}: the planted email and card number never reach Jaeger: {raw}"
        );
        let mut have: Vec<&str> = got.spans.iter().map(|s| s.operation.as_str()).collect();
        have.sort_unstable();
        assert_eq!(have, ["charge card", "checkout"], "trace {trace}: whole");
        let root = got
            .spans
            .iter()
            .find(|s| s.operation == "checkout")
            .ok_or_else(|| anyhow::anyhow!("trace {trace}: no root span"))?;
        let email = root.tags.get("user.email").cloned().unwrap_or_default();
        assert!(
            !email.is_empty() && email != EMAIL,
            "trace {trace}: user.email is pseudonymised, not removed or kept: {email:?}"
        );
        assert!(
            got.spans.iter().all(|s| s.service == "shop"),
            "trace {trace}: service.name survived"
        );
        let (_, stored) = jaeger
            .trace_v3_raw(trace)
            .await?
            .ok_or_else(|| anyhow::anyhow!("trace {trace} missing from /api/v3"))?;
        assert_eq!(stored.len(), 2, "trace {trace}: every span stored once");
    }
    // Every trace decided: those without an error were dropped and never reach Jaeger.
    tailgate_e2e::poll_until("every trace decided", WAIT, || {
        (tailgate.metrics.spans_sampled_out.get() == TRACES).then_some(())
    })
    .await?;
    tailgate_e2e::poll_until("every kept span acknowledged by the broker", WAIT, || {
        (tailgate.metrics.spans_exported.get() == TRACES).then_some(())
    })
    .await?;
    for (trace, _) in ids.iter().filter(|(_, e)| !*e) {
        assert!(
            jaeger.trace(trace).await?.is_none(),
            "trace {trace} had no error: dropped, not in Jaeger"
        );
    }
    tailgate.shutdown().await;

    // What is in the topic: one ExportTraceServiceRequest per batch, each within the batch limit plus
    // the framing headroom, every kept span once, nothing planted.
    let messages = read_topic(&kafka.bootstrap(), JAEGER_TOPIC, TRACES as usize).await?;
    let mut spans = Vec::new();
    for m in &messages {
        anyhow::ensure!(
            (m.len() as u64) < SMALL_BATCH + tailgate::config::KAFKA_MESSAGE_HEADROOM,
            "a {}-byte message under a {SMALL_BATCH}-byte batch limit",
            m.len()
        );
        let text = String::from_utf8_lossy(m);
        anyhow::ensure!(
            !text.contains(EMAIL) && !text.contains(CARD),
            "PII in a message"
        );
        let request = <ExportTraceServiceRequest as prost::Message>::decode(&m[..])?;
        spans.extend(flatten(&request));
    }
    let mut unique: Vec<(String, String)> = spans
        .iter()
        .map(|s| (hex(&s.span.trace_id), hex(&s.span.span_id)))
        .collect();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), spans.len(), "no span published twice");
    assert_eq!(spans.len(), TRACES as usize, "the 20 kept traces' 40 spans");
    anyhow::ensure!(
        messages.len() > 1,
        "{} spans in one message under a {SMALL_BATCH}-byte limit",
        spans.len()
    );
    eprintln!(
        "tailgate -> Kafka -> Jaeger, no collector: {} of {TRACES} traces kept, redacted and in Jaeger \
         whole, {} dropped and absent; {} spans in {} messages",
        kept.len(),
        TRACES as usize - kept.len(),
        spans.len(),
        messages.len()
    );
    Ok(())
}

/// Every message of `topic` (all partitions, from the start), read until they hold `spans` spans or
/// [`WAIT`] passes, then a further second for any duplicate.
async fn read_topic(brokers: &str, topic: &str, spans: usize) -> anyhow::Result<Vec<Vec<u8>>> {
    use rdkafka::Message;
    use rdkafka::config::ClientConfig;
    use rdkafka::consumer::{Consumer, StreamConsumer};
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("read-{}", std::process::id()))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()?;
    consumer.subscribe(&[topic])?;
    let mut out = Vec::new();
    let mut have = 0;
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut quiet_until = None;
    loop {
        let until = quiet_until.unwrap_or(deadline);
        match tokio::time::timeout_at(until, consumer.recv()).await {
            Ok(m) => {
                let payload = m?.payload().unwrap_or_default().to_vec();
                let request = <ExportTraceServiceRequest as prost::Message>::decode(&payload[..])?;
                have += flatten(&request).len();
                out.push(payload);
                if have >= spans && quiet_until.is_none() {
                    quiet_until = Some(tokio::time::Instant::now() + Duration::from_secs(1));
                }
            }
            Err(_) if quiet_until.is_some() => return Ok(out),
            Err(_) => anyhow::bail!("{have} of {spans} spans in {topic} after {WAIT:?}"),
        }
    }
}
