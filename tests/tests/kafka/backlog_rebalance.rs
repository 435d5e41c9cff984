//! A cooperative rebalance over a pre-published backlog (Apache Kafka, one broker), the case where tansu
//! lost the end of the backlog: 4 000 messages (2 000 traces of 4 spans, produced in large record
//! batches) wait in the topic before any replica runs; replica a starts and takes all four partitions,
//! replica b joins at once and a hands two of them over mid-read. Then both stop, a second backlog is
//! published, and two fresh replicas do the same from the committed offsets (a fetch that starts in the
//! middle of a record batch). Every span arrives each time; duplicates are at most the replays counted.

use std::time::Duration;
use tailgate::app::RunningApp;
use tailgate::config::Config;
use tailgate_e2e::capture::CaptureServer;
use tailgate_e2e::kafka::{
    self as support, KafkaCluster, PARTITIONS, SPANS_PER_TRACE, TOPIC, Tally,
};
use tailgate_e2e::poll_until;

/// Traces per backlog: two messages each, 4 000 messages.
const TRACES: u64 = 2_000;

async fn start(yaml: &str) -> anyhow::Result<RunningApp> {
    Ok(tailgate::app::start(Config::parse(yaml, "kafka backlog rebalance")?).await?)
}

/// Starts two replicas back to back, waits until they have read and exported `sent` unique spans in
/// all, checks the duplicates against the replays, and stops both.
async fn two_replicas_drain(
    phase: &str,
    brokers: &str,
    capture: &CaptureServer,
    sent: usize,
) -> anyhow::Result<()> {
    let yaml = support::replica_yaml(
        brokers,
        &capture.grpc_endpoint(),
        "127.0.0.1:0",
        "  default: keep\n",
    );
    let a = start(&yaml).await?;
    let b = start(&yaml).await?;
    let consumed = |r: &RunningApp| r.metrics.kafka.messages_consumed.get();
    let drained = poll_until(
        &format!("{phase}: every span of the backlog to arrive"),
        Duration::from_secs(90),
        || (Tally::of(&capture.spans()).unique() >= sent).then_some(()),
    )
    .await;
    if let Err(e) = drained {
        let offsets = support::group_offsets(brokers, "tailgate-e2e");
        anyhow::bail!(
            "{e:#}: {} of {sent} spans arrived; consumed a {} b {}; partitions a {} b {}; \
             (partition, committed, end) {offsets:?}",
            Tally::of(&capture.spans()).unique(),
            consumed(&a),
            consumed(&b),
            a.metrics.kafka.partitions_assigned.get(),
            b.metrics.kafka.partitions_assigned.get()
        );
    }
    poll_until(
        &format!("{phase}: both replicas to own partitions"),
        Duration::from_secs(30),
        || {
            let (pa, pb) = (
                a.metrics.kafka.partitions_assigned.get(),
                b.metrics.kafka.partitions_assigned.get(),
            );
            (pa >= 1 && pb >= 1 && pa + pb == i64::from(PARTITIONS)).then_some(())
        },
    )
    .await?;
    let spans = capture.spans();
    let tally = Tally::of(&spans);
    let replayed = a.metrics.kafka.replayed_spans.get() + b.metrics.kafka.replayed_spans.get();
    let handoffs = a
        .metrics
        .kafka
        .rebalances
        .get_or_create(&tailgate::kafka::RebalanceLabels { kind: "revoke" })
        .get();
    eprintln!(
        "Apache Kafka, backlog rebalance ({phase}): sent {sent} spans in all, received {}, unique {}, \
         duplicated {}, replays counted {replayed}; consumed a {} b {}; revocations on a {handoffs}",
        spans.len(),
        tally.unique(),
        tally.duplicates(),
        consumed(&a),
        consumed(&b)
    );
    assert_eq!(tally.unique(), sent, "{phase}: every sent span arrived");
    assert!(
        tally
            .spans_per_trace()
            .values()
            .all(|n| *n == SPANS_PER_TRACE),
        "{phase}: every trace complete"
    );
    assert!(
        tally.duplicates() as u64 <= replayed,
        "{phase}: duplicates ({}) are bounded by the replays counted ({replayed})",
        tally.duplicates()
    );
    a.shutdown().await;
    b.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cooperative_rebalance_over_a_pre_published_backlog_loses_nothing() -> anyhow::Result<()>
{
    tailgate_e2e::init_logging();
    let Some(kafka) = KafkaCluster::start(1).await? else {
        return Ok(());
    };
    kafka.create_topic(TOPIC, PARTITIONS).await?;
    let brokers = kafka.bootstrap();
    let capture = CaptureServer::start().await?;
    // Large record batches, as a busy ingest tier produces them.
    let producer = support::producer_with(
        &brokers,
        &[
            ("linger.ms", "200"),
            ("batch.num.messages", "10000"),
            ("batch.size", "4000000"),
        ],
    )?;

    let mut sent = support::publish(&producer, 21, 0, TRACES).await?;
    two_replicas_drain("from the start of the topic", &brokers, &capture, sent).await?;

    sent += support::publish(&producer, 21, TRACES, 2 * TRACES).await?;
    two_replicas_drain("from committed offsets", &brokers, &capture, sent).await?;
    kafka.stop();
    Ok(())
}
