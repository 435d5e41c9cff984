//! `tailgate-bench`: drives tailgate and rotel side by side with the same pre-encoded OTLP load into the
//! same in-process sink, and prints spans/s in and out, CPU seconds per million spans, peak RSS and
//! decision latency. See BENCHMARKS.md for how to run it and the results.

mod grpc;
mod overhead;
use tailgate_bench::workload;

use anyhow::{Context, bail};
use clap::Parser;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: &stats_alloc::StatsAlloc<std::alloc::System> = &stats_alloc::INSTRUMENTED_SYSTEM;

#[derive(Parser)]
#[command(about = "tailgate's benchmark harness")]
enum Cli {
    /// tailgate (seed policy), tailgate (pass-through) and rotel on the same OTLP load.
    Compare(Args),
    /// Buffer memory per span beyond its encoded size.
    Overhead {
        #[arg(long, default_value_t = 20_000)]
        traces: usize,
    },
}

#[derive(clap::Args)]
struct Args {
    /// The tailgate binary (release build).
    #[arg(long, default_value = "target/release/tailgate")]
    tailgate: PathBuf,
    /// tailgate config (the seed policy); the bench overrides receiver, exporter and admin addresses.
    #[arg(long, default_value = "examples/tailgate.yaml")]
    config: PathBuf,
    /// rotel's agent binary (from `pip install rotel`); the comparison is skipped when absent.
    #[arg(long)]
    rotel: Option<PathBuf>,
    /// Load duration per system.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Concurrent requests in flight.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Offered load in spans/s (default: as fast as the system accepts).
    #[arg(long)]
    rate: Option<f64>,
    /// Traces per generated round (the round is replayed with fresh trace ids).
    #[arg(long, default_value_t = 2000)]
    traces: usize,
    /// Only run these systems (comma separated: tailgate, passthrough, rotel, redact, rotel-redact).
    /// `redact` is tailgate keeping every trace and redacting it with the PII plugin (`--redact-config`);
    /// `rotel-redact` is rotel with the Python redaction processor (`--rotel-processor`).
    #[arg(long, default_value = "tailgate,passthrough,rotel")]
    systems: String,
    /// tailgate config of the `redact` system: keep everything, redact with the PII plugin.
    #[arg(long, default_value = "bench/configs/redact-all.yaml")]
    redact_config: PathBuf,
    /// rotel Python processor of the `rotel-redact` system.
    #[arg(long, default_value = "bench/rotel/pii_processor.py")]
    rotel_processor: PathBuf,
}

/// What one run measured.
struct Outcome {
    name: String,
    accepted: u64,
    refused: u64,
    exported: u64,
    secs: f64,
    cpu_secs: f64,
    peak_rss_mib: f64,
    latency: Option<(f64, f64)>,
    /// p50/p99 of the hand-off latency (due to the exporter's queue, redaction included) of kept traces.
    handoff: Option<(f64, f64)>,
}

fn main() -> anyhow::Result<()> {
    let args = match Cli::parse() {
        Cli::Compare(a) => a,
        Cli::Overhead { traces } => {
            let heap = || {
                let s = GLOBAL.stats();
                s.bytes_allocated as isize - s.bytes_deallocated as isize
            };
            let (spans, encoded, held, per_span) = overhead::measure(traces, heap);
            println!(
                "buffered {spans} spans: encoded {:.1} MiB, heap held {:.1} MiB, overhead {per_span:.0} bytes per span beyond the encoded size",
                encoded as f64 / 1048576.0,
                held as f64 / 1048576.0
            );
            return Ok(());
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    rt.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let gen_start = Instant::now();
    let w = Arc::new(workload::generate(args.traces, 42));
    let bytes: usize = w.bodies.iter().map(|b| b.bytes.len()).sum();
    eprintln!(
        "workload: {} traces, {} spans, {} requests, {:.1} MiB per round ({} error, {} slow traces), generated in {:.1?}",
        w.traces,
        w.spans,
        w.bodies.len(),
        bytes as f64 / 1048576.0,
        w.error_traces,
        w.slow_traces,
        gen_start.elapsed()
    );
    let mut results = Vec::new();
    for system in args.systems.split(',') {
        let sink = grpc::Sink::start().await?;
        let port = free_port()?;
        let admin = free_port()?;
        let http = free_port()?;
        let (child, metrics_url) = match system {
            "tailgate" | "passthrough" | "redact" => {
                let mut cmd = Command::new(&args.tailgate);
                if system == "tailgate" {
                    cmd.arg("--config").arg(&args.config);
                }
                if system == "redact" {
                    cmd.arg("--config").arg(&args.redact_config);
                }
                cmd.args(["--otlp-grpc-endpoint", &format!("127.0.0.1:{port}")])
                    .args(["--otlp-http-endpoint", &format!("127.0.0.1:{http}")])
                    .args(["--admin-endpoint", &format!("127.0.0.1:{admin}")])
                    .args(["--exporter-endpoint", &format!("http://{}", sink.addr)])
                    .args(["--exporter-protocol", "grpc"])
                    .env("RUST_LOG", "warn");
                (
                    spawn(cmd)?,
                    Some(format!("http://127.0.0.1:{admin}/metrics")),
                )
            }
            "rotel" | "rotel-redact" => {
                let Some(rotel) = &args.rotel else {
                    eprintln!("rotel: skipped (no --rotel binary given)");
                    continue;
                };
                let mut cmd = Command::new(rotel);
                cmd.arg("start")
                    .args(["--otlp-grpc-endpoint", &format!("127.0.0.1:{port}")])
                    .args(["--otlp-http-endpoint", &format!("127.0.0.1:{http}")])
                    .args(["--exporter", "otlp"])
                    .args(["--otlp-exporter-endpoint", &format!("http://{}", sink.addr)])
                    .args(["--otlp-exporter-protocol", "grpc"]);
                if system == "rotel-redact" {
                    cmd.arg("--otlp-with-trace-processor")
                        .arg(&args.rotel_processor);
                }
                (spawn(cmd)?, None)
            }
            other => bail!("unknown system `{other}`"),
        };
        let mut guard = ChildGuard(child);
        let target = format!("http://127.0.0.1:{port}");
        grpc::wait_ready(&target, Duration::from_secs(30))
            .await
            .with_context(|| format!("{system} did not start"))?;
        let pid = guard.0.id();
        let cpu0 = cpu_seconds(pid).unwrap_or(0.0);
        let accepted = Arc::new(AtomicU64::new(0));
        let refused = Arc::new(AtomicU64::new(0));
        let start = Instant::now();
        grpc::drive(
            &target,
            w.clone(),
            args.concurrency,
            args.duration,
            args.rate,
            accepted.clone(),
            refused.clone(),
        )
        .await?;
        let secs = start.elapsed().as_secs_f64();
        // Let the system finish what it accepted: tail sampling waits `settle` before deciding.
        let exported = sink
            .wait_quiet(Duration::from_secs(3), Duration::from_secs(60))
            .await;
        let cpu_secs = cpu_seconds(pid).unwrap_or(0.0) - cpu0;
        let peak_rss_mib = peak_rss_kib(pid).unwrap_or(0) as f64 / 1024.0;
        let (latency, handoff) = match &metrics_url {
            Some(u) => (
                histogram_quantiles(u, "tailgate_decision_latency_seconds")
                    .await
                    .ok()
                    .flatten(),
                histogram_quantiles(u, "tailgate_handoff_latency_seconds")
                    .await
                    .ok()
                    .flatten(),
            ),
            None => (None, None),
        };
        if let (Some(u), Ok(names)) = (&metrics_url, std::env::var("TAILGATE_BENCH_SHOW_METRICS")) {
            // Diagnostics: the metric lines whose names contain one of the comma-separated words.
            if let Ok(text) = reqwest::get(u).await?.text().await {
                for line in text.lines().filter(|l| !l.starts_with('#')) {
                    if names.split(',').any(|n| line.contains(n)) {
                        eprintln!("  {line}");
                    }
                }
            }
        }
        let _ = guard.0.kill();
        let _ = guard.0.wait();
        let o = Outcome {
            name: system.into(),
            accepted: accepted.load(Ordering::Relaxed),
            refused: refused.load(Ordering::Relaxed),
            exported,
            secs,
            cpu_secs,
            peak_rss_mib,
            latency,
            handoff,
        };
        print_row(&o, true);
        results.push(o);
    }
    println!();
    println!(
        "| system | spans/s in | spans/s out | refused | CPU s per M spans in | peak RSS MiB | decision latency p50 / p99 | hand-off latency p50 / p99 |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for o in &results {
        print_row(o, false);
    }
    let rate = |n: &str| {
        results
            .iter()
            .find(|o| o.name == n)
            .map(|o| o.accepted as f64 / o.secs)
    };
    if let (Some(t), Some(r)) = (rate("tailgate"), rate("rotel")) {
        println!(
            "\ntailgate (seed policy) / rotel (pass-through) accepted spans/s: {:.2}x",
            t / r
        );
    }
    if let (Some(t), Some(r)) = (rate("passthrough"), rate("rotel")) {
        println!(
            "tailgate (pass-through) / rotel (pass-through) accepted spans/s: {:.2}x",
            t / r
        );
    }
    if let (Some(t), Some(r)) = (rate("redact"), rate("rotel-redact")) {
        println!(
            "tailgate (keep all + PII redactor) / rotel (Python redaction processor) accepted spans/s: {:.2}x",
            t / r
        );
    }
    Ok(())
}

fn print_row(o: &Outcome, progress: bool) {
    let fmt = |l: Option<(f64, f64)>| {
        l.map_or("-".into(), |(p50, p99)| {
            format!("≤ {} ms / ≤ {} ms", p50 * 1e3, p99 * 1e3)
        })
    };
    let (lat, handoff) = (fmt(o.latency), fmt(o.handoff));
    let cpu_per_m = if o.accepted > 0 {
        o.cpu_secs / (o.accepted as f64 / 1e6)
    } else {
        0.0
    };
    if progress {
        eprintln!(
            "{}: accepted {} refused {} exported {} in {:.1}s, cpu {:.1}s, peak RSS {:.0} MiB, decision latency {}, hand-off latency {}",
            o.name,
            o.accepted,
            o.refused,
            o.exported,
            o.secs,
            o.cpu_secs,
            o.peak_rss_mib,
            lat,
            handoff
        );
    } else {
        println!(
            "| {} | {:.0} | {:.0} | {} | {:.2} | {:.0} | {} | {} |",
            o.name,
            o.accepted as f64 / o.secs,
            o.exported as f64 / o.secs,
            o.refused,
            cpu_per_m,
            o.peak_rss_mib,
            lat,
            handoff
        );
    }
}

struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(mut cmd: Command) -> anyhow::Result<Child> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    cmd.spawn()
        .with_context(|| format!("starting {:?}", cmd.get_program()))
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// p50 and p99 of the histogram `name` (e.g. `tailgate_decision_latency_seconds`), as the upper bounds of
/// the buckets they fall in.
async fn histogram_quantiles(url: &str, name: &str) -> anyhow::Result<Option<(f64, f64)>> {
    let prefix = format!("{name}_bucket{{le=\"");
    let text = reqwest::get(url).await?.text().await?;
    let mut buckets: Vec<(f64, f64)> = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix(prefix.as_str()) {
            let (le, count) = rest.split_once("\"} ").unwrap_or(("", ""));
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap_or(f64::INFINITY)
            };
            buckets.push((le, count.trim().parse().unwrap_or(0.0)));
        }
    }
    let Some(&(_, total)) = buckets.last() else {
        return Ok(None);
    };
    if total == 0.0 {
        return Ok(None);
    }
    let q = |p: f64| {
        buckets
            .iter()
            .find(|(_, c)| *c >= p * total)
            .map_or(f64::INFINITY, |(le, _)| *le)
    };
    Ok(Some((q(0.5), q(0.99))))
}
