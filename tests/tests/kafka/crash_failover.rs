//! Crash failover on Apache Kafka (one broker): three tailgate processes share six partitions; one is
//! killed with SIGKILL mid-stream (no final commit, no LeaveGroup), the group evicts it after the session
//! timeout, the survivors take its partitions over and re-read from the last committed offset - the
//! oldest message the dead replica had not decided. Every trace arrives complete; spans delivered twice are
//! at most the replays the survivors counted.

use std::time::Duration;
use tailgate_e2e::capture::CaptureServer;
use tailgate_e2e::kafka::{
    self as support, KafkaCluster, ReplicaProcess, SPANS_PER_TRACE, TOPIC, Tally, wait_until,
};
use tailgate_e2e::poll_until;

/// Six partitions: two per replica while all three run, three per survivor after the crash.
const PARTITIONS: i32 = 6;

async fn owned(replicas: &[&ReplicaProcess]) -> Vec<f64> {
    let mut v = Vec::new();
    for r in replicas {
        v.push(r.partitions().await);
    }
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_replica_of_three_loses_nothing_and_duplicates_are_counted() -> anyhow::Result<()> {
    tailgate_e2e::init_logging();
    let Some(kafka) = KafkaCluster::start(1).await? else {
        return Ok(());
    };
    kafka.create_topic(TOPIC, PARTITIONS).await?;
    let brokers = kafka.bootstrap();
    let capture = CaptureServer::start().await?;
    let export = capture.grpc_endpoint();

    let mut a = ReplicaProcess::spawn("a", &brokers, &export, 3).await?;
    let b = ReplicaProcess::spawn("b", &brokers, &export, 3).await?;
    let c = ReplicaProcess::spawn("c", &brokers, &export, 3).await?;
    wait_until(
        "all three replicas to own partitions",
        Duration::from_secs(90),
        || async {
            let o = owned(&[&a, &b, &c]).await;
            o.iter().all(|n| *n >= 1.0) && o.iter().sum::<f64>() == f64::from(PARTITIONS)
        },
    )
    .await?;

    let producer = support::producer(&brokers)?;
    let first = 300;
    let mut sent = support::publish(&producer, 11, 0, first).await?;
    // Mid-stream: some traces are decided and exported, others still buffered or unread.
    poll_until("some traces exported", Duration::from_secs(30), || {
        (capture.spans().len() >= 200).then_some(())
    })
    .await?;
    let a_owned = a.partitions().await;
    a.kill().await?;
    sent += support::publish(&producer, 11, first, 2 * first).await?;

    wait_until(
        "the survivors to take every partition",
        Duration::from_secs(90),
        || async { owned(&[&b, &c]).await.iter().sum::<f64>() == f64::from(PARTITIONS) },
    )
    .await?;
    poll_until("every sent span to arrive", Duration::from_secs(60), || {
        (Tally::of(&capture.spans()).unique() >= sent).then_some(())
    })
    .await?;
    wait_until(
        "the survivors to settle",
        Duration::from_secs(30),
        || async { b.settled().await && c.settled().await },
    )
    .await?;
    let replayed = b.metric("tailgate_kafka_replayed_spans_total").await
        + c.metric("tailgate_kafka_replayed_spans_total").await;
    let spans = capture.spans();
    let tally = Tally::of(&spans);
    eprintln!(
        "Apache Kafka, replica crash (1 of 3, it owned {a_owned} partitions): sent {sent} spans ({} traces), \
         received {}, unique {}, duplicated {}, replays counted by the survivors {replayed}",
        sent / SPANS_PER_TRACE,
        spans.len(),
        tally.unique(),
        tally.duplicates()
    );
    assert_eq!(tally.unique(), sent, "every sent span arrived");
    let per_trace = tally.spans_per_trace();
    assert_eq!(per_trace.len(), sent / SPANS_PER_TRACE);
    assert!(
        per_trace.values().all(|n| *n == SPANS_PER_TRACE),
        "every trace complete"
    );
    assert!(
        tally.duplicates() as f64 <= replayed,
        "duplicates ({}) are bounded by the replays counted ({replayed})",
        tally.duplicates()
    );
    assert!(tally.duplicates() < sent, "duplicates stay bounded");

    let (mut b, mut c) = (b, c);
    b.terminate().await?;
    c.terminate().await?;
    kafka.stop();
    Ok(())
}
