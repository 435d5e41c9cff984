//! The exporter's persistent queue survives `kill -9` during a downstream outage: the real binary queues
//! kept traces on disk while Jaeger (the capture server) refuses everything, is killed with SIGKILL once
//! `/metrics` shows every span acknowledged into the queue, is started again on the same directory, and
//! when the downstream returns every one of those traces arrives, exactly once.

use crate::support::{grpc_send, sample_request_in};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tailgate_e2e::WAIT;
use tailgate_e2e::binary::tailgate_bin;
use tailgate_e2e::capture::CaptureServer;
use tailgate_e2e::otlp::{flatten, hex, metric_sum};
use tailgate_e2e::{free_port, poll_until};

const TRACES: u128 = 30;

struct Ports {
    grpc: u16,
    admin: u16,
}

fn spawn(config: &Path, log: &Path) -> anyhow::Result<Child> {
    Ok(Command::new(tailgate_bin()?)
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)?,
        ))
        .spawn()?)
}

async fn get_metrics(admin: u16) -> Option<String> {
    let r = reqwest::get(format!("http://127.0.0.1:{admin}/metrics"))
        .await
        .ok()?;
    r.text().await.ok()
}

/// Polls `/metrics` until `check` holds on it.
async fn wait_metrics(
    what: &str,
    admin: u16,
    check: impl Fn(&str) -> bool,
) -> anyhow::Result<String> {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut last = String::new();
    loop {
        if let Some(text) = get_metrics(admin).await {
            if check(&text) {
                return Ok(text);
            }
            last = text;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}; last /metrics:\n{last}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn stop(child: &mut Child) -> anyhow::Result<()> {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = std::time::Instant::now() + WAIT;
    while child.try_wait()?.is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            anyhow::bail!("tailgate did not exit within 30 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_traces_in_the_persistent_queue_survive_kill_9() -> anyhow::Result<()> {
    let capture = CaptureServer::start().await?;
    capture.set_outage(true);
    let dir: PathBuf = std::env::temp_dir().join(format!(
        "tailgate-e2e-spool-{}-{}",
        std::process::id(),
        free_port()?
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let ports = Ports {
        grpc: free_port()?,
        admin: free_port()?,
    };
    let config = dir.join("tailgate.yaml");
    std::fs::write(
        &config,
        format!(
            r#"receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{grpc}
      http: null
exporters:
  otlp:
    endpoint: "{downstream}"
    retry_on_failure:
      initial_interval: 20ms
      max_interval: 100ms
      max_elapsed_time: 10m
    batch:
      timeout: 20ms
    sending_queue:
      persistent:
        path: "{spool}"
        max_bytes: 16MiB
        segment_bytes: 64KiB
        fsync: always
buffer:
  settle: 20ms
policy:
  default: keep
admin:
  endpoint: 127.0.0.1:{admin}
service:
  shutdown_grace: 1s
"#,
            grpc = ports.grpc,
            admin = ports.admin,
            downstream = capture.grpc_endpoint(),
            spool = dir.join("queue").display(),
        ),
    )?;
    let log = dir.join("tailgate.log");
    let result = run(&capture, &config, &log, &ports).await;
    let stderr = std::fs::read_to_string(&log).unwrap_or_default();
    let result = result.map_err(|e| e.context(format!("tailgate stderr:\n{stderr}")));
    if result.is_ok() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

async fn run(
    capture: &CaptureServer,
    config: &Path,
    log: &Path,
    ports: &Ports,
) -> anyhow::Result<()> {
    let mut first = spawn(config, log)?;
    let endpoint = format!("http://127.0.0.1:{}", ports.grpc);
    let mut expected_traces = BTreeSet::new();
    let mut spans = 0;
    let sent: anyhow::Result<()> = async {
        for i in 0..TRACES {
            let id = 0x5b00_0000_0000_0000_0000_0000_0000_0000 + i;
            let request = sample_request_in(id);
            spans += flatten(&request).len();
            // The first request waits for the binary to listen.
            let deadline = tokio::time::Instant::now() + WAIT;
            while let Err(e) = grpc_send(&endpoint, request.clone(), false).await {
                anyhow::ensure!(
                    tokio::time::Instant::now() < deadline,
                    "tailgate never accepted: {e}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            expected_traces.insert(hex(&id.to_be_bytes()));
        }
        // Every span acknowledged into the persistent queue (and none anywhere else).
        let n = spans as f64;
        wait_metrics("every span in the persistent queue", ports.admin, |t| {
            metric_sum(t, "tailgate_persistent_queue_spans") == n
        })
        .await?;
        Ok(())
    }
    .await;
    // kill -9, mid-outage.
    first.kill()?;
    first.wait()?;
    sent?;
    assert!(capture.spans().is_empty(), "the downstream was down");

    let mut second = spawn(config, log)?;
    let outcome: anyhow::Result<()> = async {
        let n = spans as f64;
        let text = wait_metrics("the queue recovered", ports.admin, |t| {
            metric_sum(t, "tailgate_persistent_queue_recovered_spans_total") == n
        })
        .await?;
        assert_eq!(metric_sum(&text, "tailgate_persistent_queue_corrupt_records_total"), 0.0);
        eprintln!(
            "persistent queue: {} traces ({spans} spans) queued on disk, tailgate killed with SIGKILL, \
             {} spans recovered at restart; downstream refused {} exports during the outage",
            expected_traces.len(),
            metric_sum(&text, "tailgate_persistent_queue_recovered_spans_total"),
            capture.refused()
        );
        // The restarted tailgate retries the recovered batches while the downstream is still down.
        let refused_before = capture.refused();
        tailgate_e2e::poll_until("retries from the recovered queue", WAIT, || {
            (capture.refused() >= refused_before + 5).then_some(())
        })
        .await?;
        capture.set_outage(false);
        let arrived = capture.wait_for_spans(spans).await?;
        let traces: BTreeSet<String> = arrived.iter().map(|s| hex(&s.span.trace_id)).collect();
        assert_eq!(traces, expected_traces, "every queued trace arrived");
        assert_eq!(arrived.len(), spans, "exactly once");
        // Settled on disk too: the queue empties and the accounting closes.
        wait_metrics("the queue drained", ports.admin, |t| {
            metric_sum(t, "tailgate_persistent_queue_spans") == 0.0
                && metric_sum(t, "tailgate_spans_exported_total") == n
        })
        .await?;
        Ok(())
    }
    .await;
    stop(&mut second)?;
    outcome?;
    // Nothing is left to replay.
    let segments = poll_until("segments deleted", WAIT, || {
        let left = std::fs::read_dir(config.with_file_name("queue"))
            .ok()?
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".seg"))
            .count();
        (left == 0).then_some(left)
    })
    .await?;
    assert_eq!(segments, 0);
    Ok(())
}
