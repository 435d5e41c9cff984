//! Two measurements on running systems besides throughput:
//! - `hold`: the memory a buffered span costs, as the growth of the process's resident set while it holds
//!   N traces it will not decide for 10 minutes (tailgate: bench/configs/hold.yaml; the Collector:
//!   tail_sampling with a 10-minute decision_wait), divided by the spans accepted. RSS is what an operator
//!   provisions for; it includes allocator slack and, for the Collector, garbage its Go runtime has not
//!   collected yet (so the figure is read after the process has been idle for a while, and twice).
//! - `leaks`: the PII corpus of host/tests/redaction_corpus.rs through each redaction, counting the
//!   planted values that arrive at the sink and the near-misses that do not.

use crate::corpus;
use crate::grpc::{self, Sink};
use crate::systems::{self, Binaries, ChildGuard};
use anyhow::Context;
use bytes::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tailgate_bench::workload;

/// `tailgate-bench hold`.
pub async fn run(b: &Binaries, traces: usize, systems_list: &str) -> anyhow::Result<()> {
    let w = Arc::new(workload::generate(traces, 43));
    let encoded: usize = w.bodies.iter().map(|b| b.bytes.len()).sum();
    eprintln!(
        "hold: {} traces, {} spans, {:.1} MiB encoded ({:.0} bytes per span as sent)",
        w.traces,
        w.spans,
        encoded as f64 / 1048576.0,
        encoded as f64 / w.spans as f64
    );
    println!(
        "| system | spans held | RSS before MiB | RSS held MiB (+5 s / +15 s) | bytes per span held (+5 s / +15 s) |"
    );
    println!("|---|---|---|---|---|");
    for system in systems_list.split(',') {
        let sink = Sink::start().await?;
        let Some(started) = systems::start(system, b, &sink.addr.to_string())? else {
            continue;
        };
        let target = started.target;
        let guard = ChildGuard(started.child);
        grpc::wait_ready(&target, Duration::from_secs(30))
            .await
            .with_context(|| format!("{system} did not start"))?;
        let pid = guard.0.id();
        // Warm up the receive path (connections, buffers, thread stacks) with a round of other ids,
        // then measure from there: what grows afterwards is what holding costs.
        let warm = Arc::new(workload::generate(200, 44));
        grpc::send_round(&target, warm, 1, 4).await?;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let before = systems::status_kib(pid, "VmRSS:").unwrap_or(0);
        let start = Instant::now();
        let spans = grpc::send_round(&target, w.clone(), 0, 4).await?;
        eprintln!(
            "{system}: {spans} spans accepted in {:.1?}",
            start.elapsed()
        );
        tokio::time::sleep(Duration::from_secs(5)).await;
        let at5 = systems::status_kib(pid, "VmRSS:").unwrap_or(0);
        tokio::time::sleep(Duration::from_secs(10)).await;
        let at15 = systems::status_kib(pid, "VmRSS:").unwrap_or(0);
        let exported = sink.spans();
        anyhow::ensure!(
            exported == 0,
            "{system} exported {exported} spans: it decided traces it should have held"
        );
        let per = |kib: u64| (kib as f64 - before as f64) * 1024.0 / spans as f64;
        println!(
            "| {system} | {spans} | {:.0} | {:.0} / {:.0} | {:.0} / {:.0} |",
            before as f64 / 1024.0,
            at5 as f64 / 1024.0,
            at15 as f64 / 1024.0,
            per(at5),
            per(at15)
        );
        drop(guard);
    }
    Ok(())
}

/// `tailgate-bench leaks`.
pub async fn leaks(b: &Binaries, systems_list: &str) -> anyhow::Result<()> {
    let request = corpus::corpus();
    let sent_spans: usize = request
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .map(|s| s.spans.len())
        .sum();
    println!(
        "| system | planted values | leaked | near-misses | false positives (near-misses changed) | leaked values | changed near-misses |"
    );
    println!("|---|---|---|---|---|---|---|");
    for system in systems_list.split(',') {
        let sink = Sink::start_recording().await?;
        let Some(started) = systems::start(system, b, &sink.addr.to_string())? else {
            continue;
        };
        let target = started.target;
        let guard = ChildGuard(started.child);
        grpc::wait_ready(&target, Duration::from_secs(30))
            .await
            .with_context(|| format!("{system} did not start"))?;
        grpc::send_one(&target, Bytes::from(request.encode_to_vec())).await?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while (sink.spans() as usize) < sent_spans && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        anyhow::ensure!(
            sink.spans() as usize >= sent_spans,
            "{system}: {} of {sent_spans} corpus spans arrived within 60 s",
            sink.spans()
        );
        let mut text = String::new();
        for body in sink.recorded() {
            text.push_str(&corpus::flatten(&ExportTraceServiceRequest::decode(
                &body[..],
            )?));
        }
        let leaked: Vec<&str> = corpus::PLANTED
            .iter()
            .copied()
            .filter(|p| text.contains(p))
            .collect();
        let false_positives: Vec<&str> = corpus::NEAR_MISSES
            .iter()
            .copied()
            .filter(|p| !text.contains(p))
            .collect();
        let quoted = |v: &[&str]| {
            v.iter()
                .map(|l| format!("`{l}`"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        println!(
            "| {system} | {} | {} | {} | {} | {} | {} |",
            corpus::PLANTED.len(),
            leaked.len(),
            corpus::NEAR_MISSES.len(),
            false_positives.len(),
            quoted(&leaked),
            quoted(&false_positives)
        );
        if std::env::var_os("TAILGATE_BENCH_SHOW_OUTPUT").is_some() {
            eprintln!("--- {system} output ---\n{text}");
        }
        drop(guard);
    }
    Ok(())
}
