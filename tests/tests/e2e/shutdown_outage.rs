//! Shutdown honours `service.shutdown_grace` whatever the downstream does. With the downstream
//! unreachable, a full buffer (long settle, so nothing is due) and a full export queue, every stage waits
//! on the one after it; the grace is counted from the shutdown request, and when it runs out the exporter
//! abandons what it holds, so the stages drain at once and the process exits.
//!
//! Shown twice: in-process (`RunningApp::shutdown`, the path SIGTERM takes), where `/metrics` is read
//! after the end and the accounting identity of docs/operations.md holds exactly, every accepted span
//! ending exported, sampled out or lost with a reason (here `shutdown`); and the real binary under
//! SIGTERM, with an idle client connection held open throughout, which exits with status 0 within the
//! grace plus one second.

use crate::support::sample_request_in;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tailgate_e2e::binary::tailgate_bin;
use tailgate_e2e::otlp::{flatten, metric_sum};
use tailgate_e2e::proxy::{RunningAppExt, TestConfig};
use tailgate_e2e::{WAIT, free_port};

const GRACE: Duration = Duration::from_secs(2);
/// What the issue allows past the grace: the last stages' bookkeeping and the process's exit.
const ALLOWANCE: Duration = Duration::from_secs(1);

/// The downstream is a loopback port nobody listens on; the buffer holds everything (nothing is due
/// before the test ends) within a small byte bound, and the export queue is small.
fn outage_config() -> anyhow::Result<TestConfig> {
    let mut config = TestConfig::passthrough_to(format!("http://127.0.0.1:{}", free_port()?));
    config.settle = "60s";
    config.idle_timeout = "120s";
    config.max_wait = "300s";
    config.batch_timeout = "20ms";
    config.retry_initial_interval = "20ms";
    config.retry_max_interval = "100ms";
    config.shutdown_grace = "2s";
    config.max_buffer_bytes = "256KiB";
    config.batch_extra = "      send_batch_size: 50\n      send_batch_max_size: 100\n".into();
    config.exporter_extra =
        "    sending_queue:\n      queue_size: 200\n      num_consumers: 2\n".into();
    config.workers = Some(1);
    Ok(config)
}

/// Sends traces over OTLP/gRPC until tailgate pushes back (its buffer is full), at most `limit`
/// requests; returns the spans accepted and whether backpressure was met.
async fn fill(endpoint: String, base: u128, limit: u128) -> anyhow::Result<(u64, bool)> {
    let mut client = TraceServiceClient::connect(endpoint).await?;
    let mut accepted = 0;
    for i in 0..limit {
        let request = sample_request_in(base | i);
        let spans = flatten(&request).len() as u64;
        match tokio::time::timeout(WAIT, client.export(request)).await {
            Err(_) => anyhow::bail!("tailgate did not answer an export within {WAIT:?}"),
            Ok(Ok(_)) => accepted += spans,
            Ok(Err(s))
                if matches!(
                    s.code(),
                    tonic::Code::ResourceExhausted | tonic::Code::Unavailable
                ) =>
            {
                return Ok((accepted, true));
            }
            Ok(Err(s)) => anyhow::bail!("unexpected answer {:?}: {}", s.code(), s.message()),
        }
    }
    Ok((accepted, false))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_during_an_outage_with_a_full_buffer_ends_within_the_grace_and_accounts_for_every_span()
-> anyhow::Result<()> {
    let app = outage_config()?.start().await?;
    let metrics = app.metrics.clone();
    let (accepted, pushed_back) = fill(
        app.grpc_endpoint(),
        0x5107_0000_0000_0000_0000_0000_0000_0000,
        20_000,
    )
    .await?;
    assert!(pushed_back, "the buffer filled up and tailgate pushed back");
    assert!(accepted > 0);

    let started = Instant::now();
    tokio::time::timeout(WAIT, app.shutdown())
        .await
        .map_err(|_| anyhow::anyhow!("shutdown did not end within {WAIT:?}"))?;
    let took = started.elapsed();
    eprintln!(
        "shutdown with the downstream unreachable took {took:?} (grace {GRACE:?}); {accepted} spans accepted"
    );
    assert!(
        took <= GRACE + ALLOWANCE,
        "shutdown took {took:?}, more than the {GRACE:?} grace plus {ALLOWANCE:?}"
    );

    let text = metrics.encode();
    let m = |name: &str| metric_sum(&text, name);
    let received = m("tailgate_spans_received_total");
    let settled = m("tailgate_spans_exported_total")
        + m("tailgate_spans_sampled_out_total")
        + m("tailgate_spans_lost_total");
    let in_flight = m("tailgate_ingest_queue_spans")
        + m("tailgate_buffer_spans")
        + m("tailgate_pipeline_spans")
        + m("tailgate_export_queue_spans")
        + m("tailgate_persistent_queue_spans");
    assert_eq!(received, accepted as f64, "every accepted span is counted");
    assert_eq!(
        settled, received,
        "the accounting identity holds exactly after shutdown:\n{text}"
    );
    assert_eq!(in_flight, 0.0, "nothing is left in flight:\n{text}");
    assert_eq!(
        m("tailgate_spans_exported_total"),
        0.0,
        "the downstream was never reachable"
    );
    let lost_to_shutdown: f64 = text
        .lines()
        .filter(|l| {
            l.starts_with("tailgate_spans_lost_total{") && l.contains("reason=\"shutdown\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(
        lost_to_shutdown, received,
        "what could not be exported is counted as lost to shutdown:\n{text}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_exits_on_sigterm_within_the_grace_during_an_outage() -> anyhow::Result<()> {
    let (grpc, http, admin) = (free_port()?, free_port()?, free_port()?);
    let yaml = outage_config()?
        .yaml()
        .replacen("127.0.0.1:0", &format!("127.0.0.1:{grpc}"), 1)
        .replacen("127.0.0.1:0", &format!("127.0.0.1:{http}"), 1)
        .replacen("127.0.0.1:0", &format!("127.0.0.1:{admin}"), 1);
    let dir = std::env::temp_dir().join(format!(
        "tailgate-e2e-shutdown-outage-{}-{grpc}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir)?;
    let config = dir.join("tailgate.yaml");
    std::fs::write(&config, yaml)?;
    let log = dir.join("tailgate.log");
    let mut child = Command::new(tailgate_bin()?)
        .arg("--config")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(std::fs::File::create(&log)?))
        .spawn()?;
    let endpoint = format!("http://127.0.0.1:{grpc}");
    // The connection that saw the receiver listening stays open, idle, until the end: a client that
    // never finishes its connection must not hold the shutdown past the grace either.
    let _idle_client = match tailgate_e2e::poll_until("the binary to listen", WAIT, || {
        std::net::TcpStream::connect(("127.0.0.1", grpc)).ok()
    })
    .await
    {
        Ok(c) => c,
        Err(e) => {
            let _ = child.kill();
            anyhow::bail!("{e}; log:\n{}", std::fs::read_to_string(&log)?);
        }
    };
    let (accepted, pushed_back) =
        fill(endpoint, 0x5108_0000_0000_0000_0000_0000_0000_0000, 20_000).await?;
    assert!(pushed_back && accepted > 0, "the buffer filled up");

    let started = Instant::now();
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()?;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if started.elapsed() > WAIT {
            let _ = child.kill();
            anyhow::bail!(
                "tailgate was still running {WAIT:?} after SIGTERM; log:\n{}",
                std::fs::read_to_string(&log)?
            );
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let took = started.elapsed();
    let text = std::fs::read_to_string(&log)?;
    eprintln!("SIGTERM to exit with the downstream unreachable: {took:?} (grace {GRACE:?})");
    assert!(status.success(), "exit status {status}; log:\n{text}");
    assert!(
        took <= GRACE + ALLOWANCE,
        "exit took {took:?} after SIGTERM, more than the {GRACE:?} grace plus {ALLOWANCE:?}; log:\n{text}"
    );
    assert!(
        text.contains("tailgate stopped"),
        "the shutdown ran to its end; log:\n{text}"
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
