//! Against Apache Kafka (one broker on loopback ports): the ingest tier publishes what the OpenTelemetry
//! Python SDK sends, two sampler replicas split the partitions, every trace arrives complete and exactly
//! once, and a graceful stop of one replica moves its partitions with nothing lost or duplicated. Needs
//! `TAILGATE_KAFKA_LIBS` (scripts/peers.sh kafka); without it the test fails, unless
//! `TAILGATE_SKIP_KAFKA=1` asks to skip it.

use std::time::Duration;
use tailgate::app::RunningApp;
use tailgate::config::Config;
use tailgate_e2e::capture::CaptureServer;
use tailgate_e2e::kafka::{self as support, KafkaCluster, PARTITIONS, TOPIC, Tally};
use tailgate_e2e::otlp::{assert_same_spans, assert_unique, decode_hex_request, flatten};
use tailgate_e2e::poll_until;
use tailgate_e2e::proxy::RunningAppExt;
use tailgate_e2e::python::run_script;

async fn start(yaml: &str) -> anyhow::Result<RunningApp> {
    tailgate_e2e::init_logging();
    Ok(tailgate::app::start(Config::parse(yaml, "kafka e2e")?).await?)
}

fn owned(app: &RunningApp) -> i64 {
    app.metrics.kafka.partitions_assigned.get()
}

fn exported(app: &RunningApp) -> u64 {
    app.metrics.spans_exported.get()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_traces_through_the_ingest_tier_split_over_two_replicas_and_survive_a_graceful_stop()
-> anyhow::Result<()> {
    let Some(kafka) = KafkaCluster::start(1).await? else {
        return Ok(());
    };
    kafka.create_topic(TOPIC, PARTITIONS).await?;
    let brokers = kafka.bootstrap();
    let capture = CaptureServer::start().await?;
    let ingest = start(&support::ingest_yaml(&brokers)).await?;
    let replica = |_: &str| {
        support::replica_yaml(
            &brokers,
            &capture.grpc_endpoint(),
            "127.0.0.1:0",
            "  default: keep\n",
        )
    };
    let a = start(&replica("a")).await?;
    let b = start(&replica("b")).await?;
    poll_until(
        "both replicas to own partitions",
        Duration::from_secs(60),
        || {
            (owned(&a) >= 1 && owned(&b) >= 1 && owned(&a) + owned(&b) == i64::from(PARTITIONS))
                .then_some(())
        },
    )
    .await?;

    // Phase 1: the Python SDK sends 40 traces over OTLP/gRPC to the ingest tier.
    let grpc = ingest.grpc_endpoint();
    let args = [
        "--protocol",
        "grpc",
        "--endpoint",
        &grpc,
        "--traces",
        "40",
        "--seconds",
        "1",
    ];
    let report = run_script("load.py", &args).await?;
    let expected = flatten(&decode_hex_request(
        report["expected"].as_str().unwrap_or(""),
    )?);
    let arrived = capture.wait_for_spans(expected.len()).await?;
    assert_same_spans(&expected, &arrived);
    assert_unique(&arrived);
    assert!(
        exported(&a) > 0 && exported(&b) > 0,
        "both replicas decided traces: a {} b {}",
        exported(&a),
        exported(&b)
    );

    // Phase 2: traffic keeps flowing while replica a stops gracefully.
    let sender = tokio::spawn({
        let grpc = grpc.clone();
        async move {
            let args = [
                "--protocol",
                "grpc",
                "--endpoint",
                &grpc,
                "--traces",
                "60",
                "--seconds",
                "3",
            ];
            run_script("load.py", &args).await
        }
    });
    let before = expected.len();
    poll_until("phase 2 to be under way", Duration::from_secs(30), || {
        (capture.spans().len() >= before + 40).then_some(())
    })
    .await?;
    a.shutdown().await;
    poll_until(
        "replica b to own every partition",
        Duration::from_secs(60),
        || (owned(&b) == i64::from(PARTITIONS)).then_some(()),
    )
    .await?;
    let report2 = sender.await??;
    let mut expected_all = expected;
    expected_all.extend(flatten(&decode_hex_request(
        report2["expected"].as_str().unwrap_or(""),
    )?));
    let arrived = capture.wait_for_spans(expected_all.len()).await?;
    let tally = Tally::of(&arrived);
    eprintln!(
        "Apache Kafka, graceful stop: sent {} spans, received {}, unique {}, duplicated {}, b replayed {}",
        expected_all.len(),
        arrived.len(),
        tally.unique(),
        tally.duplicates(),
        b.metrics.kafka.replayed_spans.get()
    );
    assert_same_spans(&expected_all, &arrived);
    assert_unique(&arrived);
    b.shutdown().await;
    ingest.shutdown().await;
    kafka.stop();
    Ok(())
}
