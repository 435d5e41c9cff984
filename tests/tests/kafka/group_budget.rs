//! A cluster-wide budget holds across the consumer group: a rate-limit rule with `burst: 10` marked
//! `split_across_group` keeps 5 traces on each of two replicas (`group_size: 2`), 10 in all, however the
//! partitions are spread (Apache Kafka, one broker).

use std::time::Duration;
use tailgate::config::Config;
use tailgate_e2e::capture::CaptureServer;
use tailgate_e2e::kafka::{
    self as support, KafkaCluster, PARTITIONS, SPANS_PER_TRACE, TOPIC, Tally,
};
use tailgate_e2e::poll_until;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_keep_the_group_budget_not_twice_it() -> anyhow::Result<()> {
    tailgate_e2e::init_logging();
    let Some(kafka) = KafkaCluster::start(1).await? else {
        return Ok(());
    };
    kafka.create_topic(TOPIC, PARTITIONS).await?;
    let brokers = kafka.bootstrap();
    let capture = CaptureServer::start().await?;
    let plugin = tailgate::testing::built_plugin("rate-limit");
    // Almost no refill: only the burst is kept within the test.
    let policy = format!(
        "  rules:\n    - name: budget\n      plugin: \"{}\"\n      config: {{traces_per_second: 0.0002, burst: 10}}\n      split_across_group: [traces_per_second, burst]\n  default: drop\n",
        plugin.display()
    );
    let yaml = support::replica_yaml(&brokers, &capture.grpc_endpoint(), "127.0.0.1:0", &policy);
    let config = Config::parse(&yaml, "group budget")?;
    let a = tailgate::app::start(config.clone()).await?;
    let b = tailgate::app::start(config).await?;
    let owned = |app: &tailgate::app::RunningApp| app.metrics.kafka.partitions_assigned.get();
    poll_until(
        "both replicas to own partitions",
        Duration::from_secs(60),
        || {
            (owned(&a) >= 1 && owned(&b) >= 1 && owned(&a) + owned(&b) == i64::from(PARTITIONS))
                .then_some(())
        },
    )
    .await?;

    let traces = 200;
    support::publish(&support::producer(&brokers)?, 7, 0, traces).await?;
    let decided = |app: &tailgate::app::RunningApp| {
        app.metrics.spans_exported.get() + app.metrics.spans_sampled_out.get()
    };
    poll_until("every trace decided", Duration::from_secs(60), || {
        (decided(&a) + decided(&b) == traces * SPANS_PER_TRACE as u64).then_some(())
    })
    .await?;
    let spans = capture.wait_for_spans(10 * SPANS_PER_TRACE).await?;
    let kept = Tally::of(&spans).spans_per_trace();
    let (ka, kb) = (
        a.metrics.spans_exported.get() / SPANS_PER_TRACE as u64,
        b.metrics.spans_exported.get() / SPANS_PER_TRACE as u64,
    );
    eprintln!(
        "group budget: {traces} traces sent, kept {} (a {ka}, b {kb})",
        kept.len()
    );
    assert_eq!(
        kept.len(),
        10,
        "the cluster keeps its burst of 10, not 10 per replica"
    );
    assert_eq!((ka, kb), (5, 5), "each replica keeps half");
    a.shutdown().await;
    b.shutdown().await;
    kafka.stop();
    Ok(())
}
