//! The partition leader broker killed under load (Apache Kafka, three brokers, every partition replicated
//! three times with `min.insync.replicas=2`): the OpenTelemetry Python SDK sends through the ingest tier
//! while two sampler replicas read; the broker leading partition 0 is killed with SIGKILL mid-stream.
//! The controller fences it and moves leadership to an in-sync follower; the ingest tier's producer and
//! the replicas' consumers follow the new leaders (and the group coordinator, if it was on the dead
//! broker). Every span the SDK sent arrives, every trace decided and exported; spans delivered twice are
//! at most the replays the replicas counted.

use std::time::Duration;
use tailgate::app::RunningApp;
use tailgate::config::Config;
use tailgate_e2e::capture::CaptureServer;
use tailgate_e2e::kafka::{self as support, KafkaCluster, PARTITIONS, TOPIC, Tally};
use tailgate_e2e::otlp::{assert_same_spans, decode_hex_request, flatten};
use tailgate_e2e::poll_until;
use tailgate_e2e::proxy::RunningAppExt;
use tailgate_e2e::python::run_script;

async fn start(yaml: &str) -> anyhow::Result<RunningApp> {
    Ok(tailgate::app::start(Config::parse(yaml, "kafka broker failover")?).await?)
}

fn owned(app: &RunningApp) -> i64 {
    app.metrics.kafka.partitions_assigned.get()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_partition_leader_broker_under_load_loses_nothing() -> anyhow::Result<()> {
    tailgate_e2e::init_logging();
    let Some(mut kafka) = KafkaCluster::start(3).await? else {
        return Ok(());
    };
    kafka.create_topic(TOPIC, PARTITIONS).await?;
    let brokers = kafka.bootstrap();
    let capture = CaptureServer::start().await?;
    let ingest = start(&support::ingest_yaml(&brokers)).await?;
    let replica = || {
        support::replica_yaml(
            &brokers,
            &capture.grpc_endpoint(),
            "127.0.0.1:0",
            "  default: keep\n",
        )
    };
    let a = start(&replica()).await?;
    let b = start(&replica()).await?;
    poll_until(
        "both replicas to own partitions",
        Duration::from_secs(90),
        || {
            (owned(&a) >= 1 && owned(&b) >= 1 && owned(&a) + owned(&b) == i64::from(PARTITIONS))
                .then_some(())
        },
    )
    .await?;

    // 300 traces over 6 s from the SDK; the leader of partition 0 dies once some have arrived.
    let grpc = ingest.grpc_endpoint();
    let sender = tokio::spawn(async move {
        let args = [
            "--protocol",
            "grpc",
            "--endpoint",
            &grpc,
            "--traces",
            "300",
            "--seconds",
            "6",
        ];
        run_script("load.py", &args).await
    });
    poll_until("the load to be under way", Duration::from_secs(30), || {
        (capture.spans().len() >= 200).then_some(())
    })
    .await?;
    let leaders_before = kafka.leaders(TOPIC).await?;
    let victim = kafka.leader(TOPIC, 0).await?;
    kafka.kill_broker(victim)?;
    let at_kill = capture.spans().len();

    let report = sender.await??;
    let expected = flatten(&decode_hex_request(
        report["expected"].as_str().unwrap_or(""),
    )?);
    poll_until(
        "every sent span to arrive",
        Duration::from_secs(120),
        || (Tally::of(&capture.spans()).unique() >= expected.len()).then_some(()),
    )
    .await?;
    poll_until("both replicas to settle", Duration::from_secs(30), || {
        [&a, &b]
            .iter()
            .all(|r| r.metrics.buffer_spans.get() == 0 && r.metrics.export_queue_spans.get() == 0)
            .then_some(())
    })
    .await?;
    let leaders_after = kafka.leaders(TOPIC).await?;
    let arrived = capture.spans();
    let tally = Tally::of(&arrived);
    let replayed = a.metrics.kafka.replayed_spans.get() + b.metrics.kafka.replayed_spans.get();
    let lost = ingest
        .metrics
        .spans_lost
        .get_or_create(&tailgate::metrics::ReasonLabels {
            reason: "kafka_produce",
        })
        .get();
    eprintln!(
        "Apache Kafka, leader broker killed (broker {} of 3; leaders before {leaders_before:?}, after \
         {leaders_after:?}; {at_kill} spans had arrived): sent {} spans, received {}, unique {}, \
         duplicated {}, replays counted {replayed}, ingest lost {lost}",
        victim + 1,
        expected.len(),
        arrived.len(),
        tally.unique(),
        tally.duplicates()
    );
    assert_eq!(
        lost, 0,
        "the ingest tier lost no span to the broker's death"
    );
    assert_same_spans(&expected, &support::first_copies(&arrived));
    assert!(
        tally.duplicates() as u64 <= replayed,
        "duplicates ({}) are bounded by the replays counted ({replayed})",
        tally.duplicates()
    );
    assert!(
        leaders_after.iter().all(|l| l.is_some_and(|l| l != victim)),
        "every partition has a live leader: {leaders_after:?}"
    );
    a.shutdown().await;
    b.shutdown().await;
    ingest.shutdown().await;
    kafka.stop();
    Ok(())
}
