//! Faults with a real Jaeger v2 downstream (`tailgate_e2e::jaeger`) and the real `tailgate` binary
//! (`TAILGATE_BIN`): Jaeger stopped under load and started again, with the memory queue and with the
//! persistent queue; and Jaeger restarted with the persistent queue while tailgate is killed with
//! SIGKILL in the middle of the outage. Every span a client sent ends in Jaeger exactly once, or is
//! counted in `tailgate_spans_lost_total{reason}` (as many missing from Jaeger as counted, none twice);
//! the accounting identity of docs/operations.md closes. Each test prints its counts, the lost ones with
//! their reason.
//!
//! The load is the OpenTelemetry Python SDK (`tests/python/load.py`: traces of four spans at a steady
//! pace over OTLP/gRPC); the policy keeps every trace (`default: keep`), so every span sent is a kept
//! span and must reach Jaeger.
//!
//! **Counting across a Jaeger restart.** Jaeger's memory storage loses everything when it stops, so each
//! test reads what Jaeger holds (`/api/v3/traces?query.raw_traces=true`: every stored span, a duplicate
//! listed twice) right before stopping it, and again at the end; the two snapshots together must be the
//! spans sent, each exactly once. For the first snapshot to be exact, no export may complete between it
//! and the stop: the test freezes tailgate (SIGSTOP), waits until Jaeger's own receiver counter
//! (`otelcol_receiver_accepted_spans_total`) is stable and equal to what the snapshot lists, stops Jaeger, and
//! only then lets tailgate go on (SIGCONT). An export that was in flight at the freeze either completed
//! before the snapshot (it is in it) or fails when Jaeger stops and is retried into the next Jaeger. The
//! client goes on sending the whole time; its requests wait while tailgate is frozen (well under its
//! 10 s timeout).
//!
//! **The SIGKILL.** A span is safe from a crash once it is in the persistent queue (docs/operations.md);
//! spans still in the buffer or the memory stages are not. So the test kills tailgate when `/metrics`
//! shows every accepted span either exported or on disk (the load has finished, Jaeger is down), then
//! starts it again on the same queue directory, sends more load to the restarted process, and only then
//! brings Jaeger back.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tailgate_e2e::binary::tailgate_bin;
use tailgate_e2e::jaeger::Jaeger;
use tailgate_e2e::otlp::{decode_hex_request, flatten, hex, metric_sum};
use tailgate_e2e::{WAIT, python, reserved_port};

/// `(trace id, span id)` in lower-case hex.
type SpanKey = (String, String);

/// The real binary on one configuration; killed when dropped.
struct Tailgate {
    child: tokio::process::Child,
    admin: u16,
}

impl Tailgate {
    async fn start(config: &Path, admin: u16, log: &Path) -> anyhow::Result<Tailgate> {
        let err = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        let child = tokio::process::Command::new(tailgate_bin()?)
            .arg("--config")
            .arg(config)
            .env("RUST_LOG", "tailgate=info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(err))
            .kill_on_drop(true)
            .spawn()?;
        let t = Tailgate { child, admin };
        t.wait_metrics("tailgate to answer /metrics", |_| true)
            .await?;
        Ok(t)
    }

    fn pid(&self) -> anyhow::Result<String> {
        Ok(self
            .child
            .id()
            .ok_or_else(|| anyhow::anyhow!("tailgate has exited"))?
            .to_string())
    }

    async fn signal(&self, sig: &str) -> anyhow::Result<()> {
        let status = tokio::process::Command::new("kill")
            .args([sig, &self.pid()?])
            .status()
            .await?;
        anyhow::ensure!(status.success(), "kill {sig} failed");
        Ok(())
    }

    async fn metrics(&self) -> Option<String> {
        let r = reqwest::Client::new()
            .get(format!("http://127.0.0.1:{}/metrics", self.admin))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .ok()?;
        r.text().await.ok()
    }

    /// Polls `/metrics` until `check` holds (at most [`WAIT`] x 2); returns that exposition.
    async fn wait_metrics(
        &self,
        what: &str,
        check: impl Fn(&str) -> bool,
    ) -> anyhow::Result<String> {
        let deadline = tokio::time::Instant::now() + WAIT * 2;
        let mut last = String::new();
        loop {
            if let Some(text) = self.metrics().await {
                if check(&text) {
                    return Ok(text);
                }
                last = text;
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}; last /metrics:\n{}",
                accounting_lines(&last)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM and a clean exit.
    async fn stop(mut self) -> anyhow::Result<()> {
        self.signal("-TERM").await?;
        let status = tokio::time::timeout(WAIT, self.child.wait())
            .await
            .map_err(|_| anyhow::anyhow!("tailgate did not exit within {WAIT:?} of SIGTERM"))??;
        anyhow::ensure!(status.success(), "tailgate exited with {status}");
        Ok(())
    }

    /// SIGKILL, and wait until the process is gone.
    async fn kill_9(mut self) -> anyhow::Result<()> {
        self.signal("-KILL").await?;
        tokio::time::timeout(WAIT, self.child.wait())
            .await
            .map_err(|_| anyhow::anyhow!("tailgate did not die of SIGKILL"))??;
        Ok(())
    }
}

/// The accounting counters and gauges of an exposition, for failure messages and the run's summary.
fn accounting_lines(text: &str) -> String {
    text.lines()
        .filter(|l| {
            !l.starts_with('#')
                && [
                    "tailgate_spans_received_total",
                    "tailgate_spans_exported_total",
                    "tailgate_spans_sampled_out_total",
                    "tailgate_spans_lost_total",
                    "tailgate_ingest_queue_spans",
                    "tailgate_buffer_spans",
                    "tailgate_pipeline_spans",
                    "tailgate_export_queue_spans",
                    "tailgate_persistent_queue_spans",
                    "tailgate_persistent_queue_recovered_spans_total",
                    "tailgate_persistent_queue_corrupt_records_total",
                    "tailgate_export_failures_total",
                ]
                .iter()
                .any(|m| l.starts_with(m))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Spans in one of the in-flight gauges (memory stages and the persistent queue).
fn in_flight(t: &str) -> f64 {
    [
        "tailgate_ingest_queue_spans",
        "tailgate_buffer_spans",
        "tailgate_pipeline_spans",
        "tailgate_export_queue_spans",
        "tailgate_persistent_queue_spans",
    ]
    .iter()
    .map(|m| metric_sum(t, m))
    .sum()
}

/// The identity of docs/operations.md ("Span accounting"): in = settled + in flight.
fn identity_holds(t: &str) -> bool {
    let inflow = metric_sum(t, "tailgate_spans_received_total")
        + metric_sum(t, "tailgate_persistent_queue_recovered_spans_total");
    let settled = metric_sum(t, "tailgate_spans_exported_total")
        + metric_sum(t, "tailgate_spans_sampled_out_total")
        + metric_sum(t, "tailgate_spans_lost_total");
    inflow == settled + in_flight(t)
}

fn config(
    dir: &Path,
    grpc: u16,
    admin: u16,
    jaeger: &Jaeger,
    persistent: bool,
) -> anyhow::Result<PathBuf> {
    let queue = if persistent {
        format!(
            "    sending_queue:\n      persistent:\n        path: \"{}\"\n        max_bytes: 64MiB\n        segment_bytes: 256KiB\n        fsync: always\n",
            dir.join("queue").display()
        )
    } else {
        String::new()
    };
    let path = dir.join("tailgate.yaml");
    std::fs::write(
        &path,
        format!(
            r#"# Written by tests/tests/e2e/jaeger_faults.rs.
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{grpc}
      http: null
exporters:
  otlp:
    endpoint: "{jaeger}"
    # Longer than the freeze (SIGSTOP, see the module doc): an export in flight at the freeze whose answer
    # arrived meanwhile must not time out on SIGCONT and be sent again (Jaeger stored it: a duplicate).
    timeout: 30s
    retry_on_failure:
      initial_interval: 50ms
      max_interval: 300ms
      max_elapsed_time: 10m
    batch:
      timeout: 50ms
{queue}buffer:
  settle: 200ms
  idle_timeout: 2s
policy:
  default: keep
admin:
  endpoint: 127.0.0.1:{admin}
service:
  shutdown_grace: 5s
"#,
            jaeger = jaeger.otlp_grpc_endpoint(),
        ),
    )?;
    Ok(path)
}

/// Starts `tests/python/load.py` (N traces of 4 spans over `seconds`) against tailgate's gRPC receiver.
fn start_load(
    grpc: u16,
    traces: usize,
    seconds: f64,
) -> tokio::task::JoinHandle<anyhow::Result<Vec<SpanKey>>> {
    tokio::spawn(async move {
        let report = python::run_script(
            "load.py",
            &[
                "--protocol",
                "grpc",
                "--endpoint",
                &format!("http://127.0.0.1:{grpc}"),
                "--traces",
                &traces.to_string(),
                "--seconds",
                &seconds.to_string(),
            ],
        )
        .await?;
        let request = decode_hex_request(report["expected"].as_str().unwrap_or_default())?;
        Ok(flatten(&request)
            .iter()
            .map(|s| (hex(&s.span.trace_id), hex(&s.span.span_id)))
            .collect())
    })
}

/// What Jaeger stores for the load's service, counted: the span -> how many times it is stored.
async fn snapshot(jaeger: &Jaeger) -> anyhow::Result<BTreeMap<SpanKey, usize>> {
    let mut counts = BTreeMap::new();
    for key in jaeger.stored_spans("load").await? {
        *counts.entry(key).or_insert(0) += 1;
    }
    Ok(counts)
}

/// Freezes tailgate, takes Jaeger's snapshot once Jaeger's receiver has settled, stops Jaeger and lets
/// tailgate go on (see the module documentation). Returns the snapshot.
async fn stop_jaeger_between_exports(
    tailgate: &Tailgate,
    jaeger: &mut Jaeger,
) -> anyhow::Result<BTreeMap<SpanKey, usize>> {
    let frozen_at = std::time::Instant::now();
    tailgate.signal("-STOP").await?;
    let taken: anyhow::Result<BTreeMap<SpanKey, usize>> = async {
        let deadline = tokio::time::Instant::now() + WAIT;
        let mut last = -1.0;
        loop {
            tokio::time::sleep(Duration::from_millis(150)).await;
            let accepted = jaeger.accepted_spans().await?;
            if accepted == last {
                let snap = snapshot(jaeger).await?;
                let stored: usize = snap.values().sum();
                if stored as f64 == accepted && jaeger.accepted_spans().await? == accepted {
                    return Ok(snap);
                }
            }
            last = accepted;
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "Jaeger's accepted-span count did not settle while tailgate was frozen"
            );
        }
    }
    .await;
    let stopped = match &taken {
        Ok(_) => jaeger.stop().await,
        Err(_) => Ok(()),
    };
    tailgate.signal("-CONT").await?;
    eprintln!(
        "tailgate frozen for {} ms while Jaeger's contents were read and Jaeger stopped",
        frozen_at.elapsed().as_millis()
    );
    stopped?;
    taken
}

/// Both snapshots together hold every span sent exactly once, except the spans tailgate counted lost
/// (`tailgate_spans_lost_total{reason}`, summed over `expositions`: one per tailgate process): no span
/// twice, none that no client sent, and as many missing as counted. Returns the lost spans by reason.
fn check_exactly_once_or_counted(
    sent: &[SpanKey],
    before: &BTreeMap<SpanKey, usize>,
    after: &BTreeMap<SpanKey, usize>,
    expositions: &[&str],
) -> anyhow::Result<BTreeMap<String, f64>> {
    let mut seen: BTreeMap<&SpanKey, usize> = BTreeMap::new();
    for (k, n) in before.iter().chain(after.iter()) {
        *seen.entry(k).or_insert(0) += n;
    }
    let sent_set: std::collections::BTreeSet<&SpanKey> = sent.iter().collect();
    anyhow::ensure!(sent_set.len() == sent.len(), "the client sent a span twice");
    let missing: Vec<_> = sent.iter().filter(|k| !seen.contains_key(k)).collect();
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    let foreign = seen.keys().filter(|k| !sent_set.contains(*k)).count();
    let mut lost: BTreeMap<String, f64> = BTreeMap::new();
    for text in expositions {
        for line in text
            .lines()
            .filter(|l| l.starts_with("tailgate_spans_lost_total{"))
        {
            let reason = line
                .split("reason=\"")
                .nth(1)
                .and_then(|r| r.split('"').next())
                .unwrap_or("?");
            let n: f64 = line
                .rsplit(' ')
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0.0);
            *lost.entry(reason.to_string()).or_insert(0.0) += n;
        }
    }
    let counted: f64 = lost.values().sum();
    let accounting = expositions
        .iter()
        .map(|t| accounting_lines(t))
        .collect::<Vec<_>>()
        .join("\n--\n");
    anyhow::ensure!(
        twice.is_empty() && foreign == 0 && missing.len() as f64 == counted,
        "{} spans sent never reached Jaeger (e.g. {:?}) and tailgate counted {counted} lost ({lost:?}); {} \
         are in Jaeger more than once (e.g. {:?}); {foreign} in Jaeger that no client sent:\n{accounting}",
        missing.len(),
        &missing[..missing.len().min(3)],
        twice.len(),
        &twice[..twice.len().min(3)],
    );
    Ok(lost)
}

/// `{reason: n}` as `n reason, ...`, or `0` when nothing was lost.
fn lost_summary(lost: &BTreeMap<String, f64>) -> String {
    let parts: Vec<String> = lost
        .iter()
        .filter(|(_, n)| **n > 0.0)
        .map(|(r, n)| format!("{n} lost, counted as reason={r}"))
        .collect();
    if parts.is_empty() {
        "0 lost".into()
    } else {
        parts.join(", ")
    }
}

fn scratch(name: &str) -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "tailgate-e2e-{name}-{}-{}",
        std::process::id(),
        reserved_port()?
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jaeger_stopped_under_load_with_the_memory_queue_delivers_or_counts_every_span()
-> anyhow::Result<()> {
    stopped_under_load(false).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jaeger_stopped_under_load_with_the_persistent_queue_delivers_or_counts_every_span()
-> anyhow::Result<()> {
    stopped_under_load(true).await
}

async fn stopped_under_load(persistent: bool) -> anyhow::Result<()> {
    let name = if persistent {
        "jaeger-outage-persistent"
    } else {
        "jaeger-outage-memory"
    };
    let dir = scratch(name)?;
    let mut jaeger = Jaeger::start().await?;
    let (grpc, admin) = (reserved_port()?, reserved_port()?);
    let config = config(&dir, grpc, admin, &jaeger, persistent)?;
    let log = dir.join("tailgate.log");
    let tailgate = Tailgate::start(&config, admin, &log).await?;
    let result = stopped_under_load_run(&tailgate, &mut jaeger, grpc, persistent).await;
    let result = match result {
        Ok(()) => tailgate.stop().await,
        Err(e) => Err(e),
    };
    let result = result.map_err(|e| {
        e.context(format!(
            "tailgate log:\n{}\n{}",
            std::fs::read_to_string(&log).unwrap_or_default(),
            jaeger.logs()
        ))
    });
    if result.is_ok() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

async fn stopped_under_load_run(
    tailgate: &Tailgate,
    jaeger: &mut Jaeger,
    grpc: u16,
    persistent: bool,
) -> anyhow::Result<()> {
    // 600 traces (2 400 spans) over 6 s; Jaeger goes down after a few hundred spans have reached it.
    let load = start_load(grpc, 600, 6.0);
    tailgate
        .wait_metrics("some spans exported before the outage", |t| {
            metric_sum(t, "tailgate_spans_exported_total") >= 400.0
        })
        .await?;
    let before = stop_jaeger_between_exports(tailgate, jaeger).await?;
    let failures_at_stop = metric_sum(
        &tailgate.metrics().await.unwrap_or_default(),
        "tailgate_export_failures_total",
    );
    // The outage lasts while tailgate retries a dozen times against the stopped Jaeger.
    let during = tailgate
        .wait_metrics("exports refused during the outage", |t| {
            metric_sum(t, "tailgate_export_failures_total") >= failures_at_stop + 12.0
        })
        .await?;
    let waiting_during_outage = if persistent {
        metric_sum(&during, "tailgate_persistent_queue_spans")
    } else {
        metric_sum(&during, "tailgate_export_queue_spans")
    };
    jaeger.restart().await?;
    let sent = load.await??;
    let n = sent.len() as f64;
    let text = tailgate
        .wait_metrics("every span settled", |t| {
            metric_sum(t, "tailgate_spans_received_total") == n
                && in_flight(t) == 0.0
                && identity_holds(t)
        })
        .await?;
    let after = snapshot(jaeger).await?;
    assert_eq!(
        jaeger.accepted_spans().await?,
        after.values().sum::<usize>() as f64,
        "the restarted Jaeger stores what its receiver accepted"
    );
    let lost = check_exactly_once_or_counted(&sent, &before, &after, &[&text])?;
    eprintln!(
        "jaeger outage ({} queue): {} spans sent under load; {} in Jaeger before it stopped, {} waiting in \
         tailgate's {} queue during the outage ({} export attempts refused), {} delivered to the restarted \
         Jaeger; every span in Jaeger exactly once, {}",
        if persistent { "persistent" } else { "memory" },
        sent.len(),
        before.values().sum::<usize>(),
        waiting_during_outage,
        if persistent { "persistent" } else { "memory" },
        metric_sum(&text, "tailgate_export_failures_total") - failures_at_stop,
        after.values().sum::<usize>(),
        lost_summary(&lost),
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jaeger_restarted_and_tailgate_killed_with_sigkill_delivers_or_counts_every_span()
-> anyhow::Result<()> {
    let dir = scratch("jaeger-sigkill")?;
    let mut jaeger = Jaeger::start().await?;
    let (grpc, admin) = (reserved_port()?, reserved_port()?);
    let config = config(&dir, grpc, admin, &jaeger, true)?;
    let log = dir.join("tailgate.log");
    let result = sigkill_run(&config, &log, &mut jaeger, grpc, admin).await;
    let result = result.map_err(|e| {
        e.context(format!(
            "tailgate log:\n{}\n{}",
            std::fs::read_to_string(&log).unwrap_or_default(),
            jaeger.logs()
        ))
    });
    if result.is_ok() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

async fn sigkill_run(
    config: &Path,
    log: &Path,
    jaeger: &mut Jaeger,
    grpc: u16,
    admin: u16,
) -> anyhow::Result<()> {
    let first = Tailgate::start(config, admin, log).await?;
    // Load A: 300 traces over 3 s; Jaeger stops after 300 spans reached it, the rest goes to disk.
    let load = start_load(grpc, 300, 3.0);
    first
        .wait_metrics("some spans exported before the outage", |t| {
            metric_sum(t, "tailgate_spans_exported_total") >= 300.0
        })
        .await?;
    let before = stop_jaeger_between_exports(&first, jaeger).await?;
    let mut sent = load.await??;
    let n = sent.len() as f64;
    // Every accepted span is either in Jaeger already or acknowledged into the persistent queue: nothing
    // is held only in memory, so a SIGKILL now may lose nothing.
    let at_kill = first
        .wait_metrics("every span exported, counted lost or on disk", |t| {
            metric_sum(t, "tailgate_spans_received_total") == n
                && in_flight(t) == metric_sum(t, "tailgate_persistent_queue_spans")
                && identity_holds(t)
        })
        .await?;
    let on_disk = metric_sum(&at_kill, "tailgate_persistent_queue_spans");
    assert!(
        on_disk > 0.0,
        "the outage left spans in the persistent queue"
    );
    first.kill_9().await?;

    // The restarted tailgate recovers the queue, takes more load while Jaeger is still down...
    let second = Tailgate::start(config, admin, log).await?;
    let recovered = second
        .wait_metrics("the queue recovered", |t| {
            metric_sum(t, "tailgate_persistent_queue_recovered_spans_total") == on_disk
        })
        .await?;
    assert_eq!(
        metric_sum(
            &recovered,
            "tailgate_persistent_queue_corrupt_records_total"
        ),
        0.0
    );
    let more = start_load(grpc, 100, 1.0).await??;
    let m = more.len() as f64;
    sent.extend(more);
    second
        .wait_metrics("load B on disk too", |t| {
            metric_sum(t, "tailgate_spans_received_total") == m
                && metric_sum(t, "tailgate_persistent_queue_spans") == on_disk + m
        })
        .await?;
    // ...and delivers everything once Jaeger is back.
    jaeger.restart().await?;
    let text = second
        .wait_metrics("the queue drained into the restarted Jaeger", |t| {
            in_flight(t) == 0.0
                && identity_holds(t)
                && metric_sum(t, "tailgate_spans_received_total") == m
        })
        .await?;
    let after = snapshot(jaeger).await?;
    let lost = check_exactly_once_or_counted(&sent, &before, &after, &[&at_kill, &text])?;
    second.stop().await?;
    eprintln!(
        "jaeger restart + SIGKILL: {} spans sent ({} before the kill, {} after); {} in Jaeger before it \
         stopped, {} on disk when tailgate was killed with SIGKILL, {} recovered by the restarted tailgate \
         (0 corrupt), {} delivered to the restarted Jaeger; every span in Jaeger exactly once, {}",
        sent.len(),
        n,
        m,
        before.values().sum::<usize>(),
        on_disk,
        metric_sum(
            &recovered,
            "tailgate_persistent_queue_recovered_spans_total"
        ),
        after.values().sum::<usize>(),
        lost_summary(&lost),
    );
    Ok(())
}
