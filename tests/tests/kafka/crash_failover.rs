//! Crash failover against librdkafka's mock cluster: two tailgate processes share four partitions; one is
//! killed with SIGKILL mid-stream (no final commit, no LeaveGroup), the group evicts it after the session
//! timeout, the survivor takes its partitions over and re-reads from the last committed offset - the
//! oldest message the dead replica had not decided. Every trace arrives complete; spans delivered twice are
//! at most the replays the survivor counted.

use rdkafka::mocking::MockCluster;
use std::process::Stdio;
use std::time::Duration;
use tailgate_e2e::capture::CaptureServer;
use tailgate_e2e::kafka::{self as support, PARTITIONS, SPANS_PER_TRACE, TOPIC, Tally};
use tailgate_e2e::{binary::tailgate_bin, free_port, poll_until};

struct Replica {
    child: tokio::process::Child,
    admin: String,
    _dir: std::path::PathBuf,
}

async fn spawn_replica(name: &str, brokers: &str, export_to: &str) -> anyhow::Result<Replica> {
    let admin = format!("127.0.0.1:{}", free_port()?);
    let dir = std::env::temp_dir().join(format!(
        "tailgate-kafka-{name}-{}-{}",
        std::process::id(),
        free_port()?
    ));
    std::fs::create_dir_all(&dir)?;
    let config = dir.join("tailgate.yaml");
    std::fs::write(
        &config,
        support::replica_yaml(brokers, export_to, &admin, "  default: keep\n"),
    )?;
    let child = tokio::process::Command::new(tailgate_bin()?)
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "tailgate=info,librdkafka=warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()?;
    Ok(Replica {
        child,
        admin,
        _dir: dir,
    })
}

async fn partitions(r: &Replica) -> f64 {
    support::metric(&r.admin, "tailgate_kafka_partitions_assigned")
        .await
        .unwrap_or(-1.0)
}

/// Polls (async) until `f` is true.
async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut f: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while !f().await {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_replica_loses_nothing_and_duplicates_are_counted() -> anyhow::Result<()> {
    tailgate_e2e::init_logging();
    let cluster = MockCluster::new(1)?;
    cluster.create_topic(TOPIC, PARTITIONS, 1)?;
    let brokers = cluster.bootstrap_servers();
    let capture = CaptureServer::start().await?;

    let mut a = spawn_replica("a", &brokers, &capture.grpc_endpoint()).await?;
    let b = spawn_replica("b", &brokers, &capture.grpc_endpoint()).await?;
    wait_until(
        "both replicas to own partitions",
        Duration::from_secs(60),
        || async {
            let (pa, pb) = (partitions(&a).await, partitions(&b).await);
            pa >= 1.0 && pb >= 1.0 && pa + pb == f64::from(PARTITIONS)
        },
    )
    .await?;

    let producer = support::producer(&brokers)?;
    let first = 300;
    let mut sent = support::publish(&producer, 1, 0, first).await?;
    // Mid-stream: some traces are decided and exported, others still buffered or unread.
    poll_until("some traces exported", Duration::from_secs(30), || {
        (capture.spans().len() >= 200).then_some(())
    })
    .await?;
    a.child.start_kill()?; // SIGKILL: no final commit, no LeaveGroup
    a.child.wait().await?;
    sent += support::publish(&producer, 1, first, 2 * first).await?;

    // The survivor owns every partition once the group has evicted the dead member.
    wait_until(
        "the survivor to take every partition",
        Duration::from_secs(60),
        || async { partitions(&b).await == f64::from(PARTITIONS) },
    )
    .await?;
    poll_until("every sent span to arrive", Duration::from_secs(60), || {
        (Tally::of(&capture.spans()).unique() >= sent).then_some(())
    })
    .await?;
    // The survivor has nothing undecided left: every replayed message is decided and exported.
    wait_until(
        "the survivor to settle",
        Duration::from_secs(30),
        || async {
            support::metric(&b.admin, "tailgate_buffer_spans")
                .await
                .unwrap_or(1.0)
                == 0.0
                && support::metric(&b.admin, "tailgate_export_queue_spans")
                    .await
                    .unwrap_or(1.0)
                    == 0.0
        },
    )
    .await?;
    let replayed = support::metric(&b.admin, "tailgate_kafka_replayed_spans_total").await?;
    let tally = Tally::of(&capture.spans());
    let received = capture.spans().len();
    eprintln!(
        "crash failover: sent {sent} spans ({} traces), received {received}, unique {}, duplicated {}, \
         replays counted by the survivor {replayed}",
        sent / SPANS_PER_TRACE,
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
    // Spans that were never read twice are never exported twice: the duplicates are a small share.
    assert!(tally.duplicates() < sent, "duplicates stay bounded");

    // The survivor stops gracefully and commits everything.
    let mut b = b;
    if let Some(pid) = b.child.id() {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
    }
    let status = tokio::time::timeout(Duration::from_secs(30), b.child.wait()).await??;
    assert!(status.success(), "survivor exits cleanly: {status}");
    Ok(())
}
