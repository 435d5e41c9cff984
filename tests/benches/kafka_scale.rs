//! Kafka scale-out throughput: the same backlog of traces (pre-published to a 4-partition topic) read,
//! decided and exported by one replica, then by two replicas in one consumer group. On one 2-core
//! machine two replicas share the same cores, so this shows the cost of the split (correctness is what the
//! tests check), not a gain; see the capacity model in docs/kafka.md for N machines.
//!
//! Broker: Apache Kafka (one broker started from the jars in `TAILGATE_KAFKA_LIBS`, see
//! `scripts/peers.sh kafka`) when that is set, else librdkafka's mock cluster.
//! Run: `cargo build -p tailgate-e2e --features kafka --bench kafka_scale` and run the binary it names
//! (`target/debug/deps/kafka_scale-*`), or `cargo bench -p tailgate-e2e --features kafka --bench
//! kafka_scale` for an optimized build. `KAFKA_SCALE_TRACES` sets the backlog (default 10 000 traces).

use std::time::{Duration, Instant};
use tailgate::config::Config;
use tailgate_e2e::capture::CaptureServer;
use tailgate_e2e::kafka::{
    self as support, KafkaCluster, LIBS_ENV, PARTITIONS, SPANS_PER_TRACE, TOPIC, Tally,
};

enum Broker {
    Kafka(KafkaCluster),
    Mock(rdkafka::mocking::MockCluster<'static, rdkafka::producer::DefaultProducerContext>),
}

impl Broker {
    async fn start() -> anyhow::Result<Broker> {
        if std::env::var_os(LIBS_ENV).is_some()
            && let Some(k) = KafkaCluster::start(1).await?
        {
            k.create_topic(TOPIC, PARTITIONS).await?;
            return Ok(Broker::Kafka(k));
        }
        let m = rdkafka::mocking::MockCluster::new(1)?;
        m.create_topic(TOPIC, PARTITIONS, 1)?;
        Ok(Broker::Mock(m))
    }

    fn brokers(&self) -> String {
        match self {
            Broker::Kafka(k) => k.bootstrap(),
            Broker::Mock(m) => m.bootstrap_servers(),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Broker::Kafka(_) => "Apache Kafka (1 broker)",
            Broker::Mock(_) => "librdkafka mock cluster",
        }
    }
}

async fn run(replicas: usize, traces: u64) -> anyhow::Result<(f64, &'static str)> {
    let broker = Broker::start().await?;
    let brokers = broker.brokers();
    let publish_started = Instant::now();
    let spans = support::publish(&support::producer(&brokers)?, 3, 0, traces).await? as u64;
    let publish_secs = publish_started.elapsed().as_secs_f64();
    let capture = CaptureServer::start().await?;
    let yaml = support::replica_yaml(
        &brokers,
        &capture.grpc_endpoint(),
        "127.0.0.1:0",
        "  default: keep\n",
    )
    .replace("settle: 300ms", "settle: 100ms")
    .replace("group_size: 2", &format!("group_size: {replicas}"));
    let config = Config::parse(&yaml, "bench")?;
    let mut apps = Vec::new();
    for _ in 0..replicas {
        apps.push(tailgate::app::start(config.clone()).await?);
    }
    let consumed = |apps: &[tailgate::app::RunningApp]| -> u64 {
        apps.iter()
            .map(|a| a.metrics.kafka.messages_consumed.get())
            .sum()
    };
    let exported = |apps: &[tailgate::app::RunningApp]| -> u64 {
        apps.iter().map(|a| a.metrics.spans_exported.get()).sum()
    };
    let deadline = Instant::now() + Duration::from_secs(600);
    while consumed(&apps) == 0 {
        anyhow::ensure!(Instant::now() < deadline, "nothing consumed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let started = Instant::now();
    let mut report = Instant::now();
    while exported(&apps) < spans {
        anyhow::ensure!(Instant::now() < deadline, "not everything exported");
        if report.elapsed() > Duration::from_secs(5) {
            report = Instant::now();
            for a in &apps {
                let m = &a.metrics;
                eprintln!(
                    "waiting: consumed {} received {} exported {} buffered {} partitions {} replayed {}",
                    m.kafka.messages_consumed.get(),
                    m.spans_received
                        .get_or_create(&tailgate::metrics::ReceiverLabels { receiver: "kafka" })
                        .get(),
                    m.spans_exported.get(),
                    m.buffer_spans.get(),
                    m.kafka.partitions_assigned.get(),
                    m.kafka.replayed_spans.get()
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    // Everything exported: check nothing is missing (duplicates after a rebalance are possible).
    let deadline = Instant::now() + Duration::from_secs(30);
    let tally = loop {
        let t = Tally::of(&capture.spans());
        if t.unique() as u64 >= spans || Instant::now() >= deadline {
            break t;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let per_replica: Vec<u64> = apps
        .iter()
        .map(|a| a.metrics.spans_exported.get())
        .collect();
    for a in apps {
        a.shutdown().await;
    }
    anyhow::ensure!(
        tally.unique() as u64 == spans,
        "{} of {spans} spans arrived",
        tally.unique()
    );
    println!(
        "{replicas} replica(s): {spans} spans ({traces} traces, {} messages) in {secs:.2} s = {:.0} spans/s \
         (per replica {per_replica:?}, duplicated {}; publishing the backlog took {publish_secs:.2} s)",
        traces * 2,
        spans as f64 / secs,
        tally.duplicates()
    );
    let name = broker.name();
    if let Broker::Kafka(k) = broker {
        k.stop();
    }
    Ok((spans as f64 / secs, name))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    tailgate_e2e::init_logging();
    let traces = std::env::var("KAFKA_SCALE_TRACES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let (one, broker) = run(1, traces).await?;
    let (two, _) = run(2, traces).await?;
    println!(
        "broker: {broker}; {SPANS_PER_TRACE} spans per trace in 2 messages; two replicas / one: {:.2}x",
        two / one
    );
    Ok(())
}
