//! A cooperative rebalance over a pre-published backlog (Apache Kafka, one broker), the case where tansu
//! lost the end of the backlog: 4 000 messages (2 000 traces of 4 spans, produced in large record
//! batches) wait in the topic before any replica runs.
//!
//! 1. Replica a starts alone with a small buffer while the downstream refuses everything, so it reads
//!    part of the backlog and stops (backpressure); replica b joins; the downstream comes back, a decides
//!    and hands two partitions over mid-backlog (their committed offsets fall inside record batches) and
//!    b reads the rest of them from there.
//! 2. Both stop, a second backlog is published, and two fresh replicas start back to back from the
//!    committed offsets (one takes all four partitions, then gives two to the other).
//!
//! Every span arrives each time; duplicates are at most the replays counted.

use std::time::Duration;
use tailgate::app::RunningApp;
use tailgate::config::Config;
use tailgate_e2e::capture::CaptureServer;
use tailgate_e2e::kafka::wait_until;
use tailgate_e2e::kafka::{
    self as support, KafkaCluster, PARTITIONS, SPANS_PER_TRACE, TOPIC, Tally,
};
use tailgate_e2e::poll_until;

/// Traces per backlog: two messages each, 4 000 messages.
const TRACES: u64 = 2_000;

async fn start(yaml: &str) -> anyhow::Result<RunningApp> {
    Ok(tailgate::app::start(Config::parse(yaml, "kafka backlog rebalance")?).await?)
}

/// Waits until `sent` unique spans have arrived, then checks completeness and the duplicates against the
/// replays of `a` and `b`, and prints the counts.
async fn check_drained(
    phase: &str,
    brokers: &str,
    capture: &CaptureServer,
    sent: usize,
    a: &RunningApp,
    b: &RunningApp,
) -> anyhow::Result<()> {
    let consumed = |r: &RunningApp| r.metrics.kafka.messages_consumed.get();
    let drained = wait_until(
        &format!("{phase}: every span of the backlog to arrive"),
        Duration::from_secs(120),
        || async { Tally::of(&capture.spans()).unique() >= sent },
    )
    .await;
    if let Err(e) = drained {
        let offsets = support::group_offsets(brokers, "tailgate-e2e");
        anyhow::bail!(
            "{e:#}: {} of {sent} spans arrived; consumed a {} b {}; partitions a {} b {}; \
             (partition, committed, end) {offsets:?}",
            Tally::of(&capture.spans()).unique(),
            consumed(a),
            consumed(b),
            a.metrics.kafka.partitions_assigned.get(),
            b.metrics.kafka.partitions_assigned.get()
        );
    }
    poll_until(
        &format!("{phase}: both replicas to own partitions"),
        Duration::from_secs(30),
        || {
            let (pa, pb) = (owned(a), owned(b));
            (pa >= 1 && pb >= 1 && pa + pb == i64::from(PARTITIONS)).then_some(())
        },
    )
    .await?;
    let spans = capture.spans();
    let tally = Tally::of(&spans);
    let replayed = a.metrics.kafka.replayed_spans.get() + b.metrics.kafka.replayed_spans.get();
    eprintln!(
        "Apache Kafka, backlog rebalance ({phase}): sent {sent} spans in all, received {}, unique {}, \
         duplicated {}, replays counted {replayed}; consumed a {} b {}; revocations on a {}, hand-off \
         timeouts {}",
        spans.len(),
        tally.unique(),
        tally.duplicates(),
        consumed(a),
        consumed(b),
        revocations(a),
        a.metrics.kafka.handoff_timeouts.get()
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
    Ok(())
}

fn owned(r: &RunningApp) -> i64 {
    r.metrics.kafka.partitions_assigned.get()
}

fn revocations(r: &RunningApp) -> u64 {
    r.metrics
        .kafka
        .rebalances
        .get_or_create(&tailgate::kafka::RebalanceLabels { kind: "revoke" })
        .get()
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
    let yaml = support::replica_yaml(
        &brokers,
        &capture.grpc_endpoint(),
        "127.0.0.1:0",
        "  default: keep\n",
    );
    // Large record batches, as a busy ingest tier produces them.
    let producer = support::producer_with(
        &brokers,
        &[
            ("linger.ms", "200"),
            ("batch.num.messages", "10000"),
            ("batch.size", "4000000"),
        ],
    )?;
    let messages = 2 * TRACES;

    // Phase 1: a reads part of the backlog and stalls on backpressure before b joins.
    let mut sent = support::publish(&producer, 21, 0, TRACES).await?;
    capture.set_outage(true);
    let throttled = yaml
        .replace(
            "  max_wait: 10s\n",
            "  max_wait: 10s\n  max_buffer_bytes: 256KiB\n",
        )
        .replace(
            "      timeout: 50ms\n",
            "      timeout: 50ms\n      send_batch_size: 100\n      send_batch_max_size: 200\n",
        )
        .replace(
            "    compression: none\n",
            "    compression: none\n    sending_queue:\n      queue_size: 400\n",
        );
    let a = start(&throttled).await?;
    let stalled_at = wait_for_stall(&a).await?;
    anyhow::ensure!(
        stalled_at < messages,
        "replica a was to stall on backpressure before the end of the backlog, but read all {stalled_at} messages"
    );
    let b = start(&yaml).await?;
    // b's join waits for a, which polls again once the downstream is back.
    tokio::time::sleep(Duration::from_secs(2)).await;
    capture.set_outage(false);
    check_drained(
        "b joins while a is mid-backlog",
        &brokers,
        &capture,
        sent,
        &a,
        &b,
    )
    .await?;
    anyhow::ensure!(
        revocations(&a) >= 1 && b.metrics.kafka.messages_consumed.get() > 0,
        "a handed partitions over to b (revocations {}, b consumed {})",
        revocations(&a),
        b.metrics.kafka.messages_consumed.get()
    );
    eprintln!("replica a had read {stalled_at} of {messages} messages when b joined");
    a.shutdown().await;
    b.shutdown().await;

    // Phase 2: a new backlog, read from the committed offsets by two replicas started back to back.
    sent += support::publish(&producer, 21, TRACES, 2 * TRACES).await?;
    let a = start(&yaml).await?;
    let b = start(&yaml).await?;
    check_drained(
        "two replicas from committed offsets",
        &brokers,
        &capture,
        sent,
        &a,
        &b,
    )
    .await?;
    a.shutdown().await;
    b.shutdown().await;
    kafka.stop();
    Ok(())
}

/// Waits until `a` has read some messages and then read nothing for a second; returns how many it read.
async fn wait_for_stall(a: &RunningApp) -> anyhow::Result<u64> {
    let consumed = || a.metrics.kafka.messages_consumed.get();
    wait_until(
        "replica a to read part of the backlog",
        Duration::from_secs(60),
        || async { consumed() >= 100 },
    )
    .await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut last = consumed();
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = consumed();
        if now == last {
            return Ok(now);
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "replica a never stalled (read {now} messages)"
        );
        last = now;
    }
}
