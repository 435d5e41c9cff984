//! Jaeger v2 reads tailgate's Kafka messages: the OpenTelemetry Python SDK sends to a tailgate with
//! `exporters.kafka`, which publishes each trace's spans as an `otlp_proto` message keyed by trace id to
//! `jaeger_spans` on Apache Kafka; a real Jaeger v2 (`tailgate_e2e::jaeger`, memory storage) consumes the
//! topic with its `kafka` receiver (the Collector's kafkareceiver, `encoding: otlp_proto`). Every trace is
//! then in Jaeger's query API with every span the SDK sent, once. Needs `TAILGATE_KAFKA_LIBS` and
//! `TAILGATE_JAEGER` (scripts/peers.sh).

use std::collections::BTreeMap;
use tailgate::config::Config;
use tailgate_e2e::jaeger::Jaeger;
use tailgate_e2e::kafka::{self as support, KafkaCluster, TOPIC};
use tailgate_e2e::otlp::{decode_hex_request, flatten, hex};
use tailgate_e2e::proxy::RunningAppExt;
use tailgate_e2e::python::run_script;

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
