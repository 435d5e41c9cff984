//! `tailgate-bench`: drives tailgate, rotel and the OpenTelemetry Collector side by side with the same
//! pre-encoded OTLP load into the same in-process sink, and prints spans/s in and out, CPU seconds per
//! million spans, peak RSS and decision latency (`compare`); the memory a buffered span costs, as RSS
//! growth per span held, for tailgate and the Collector (`hold`); what each redaction leaks from the PII
//! corpus (`leaks`); and the buffer's heap per span (`overhead`). See BENCHMARKS.md for how to run it
//! and the results.

mod corpus;
mod grpc;
mod hold;
mod overhead;
mod systems;
use systems::{Binaries, ChildGuard, MetricsAt};
use tailgate_bench::workload;

use anyhow::Context;
use clap::Parser;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

#[global_allocator]
static GLOBAL: &stats_alloc::StatsAlloc<std::alloc::System> = &stats_alloc::INSTRUMENTED_SYSTEM;

#[derive(Parser)]
#[command(about = "tailgate's benchmark harness")]
enum Cli {
    /// tailgate (seed policy), tailgate (pass-through), rotel and the Collector on the same OTLP load.
    Compare(Args),
    /// Buffer memory per span beyond its encoded size.
    Overhead {
        #[arg(long, default_value_t = 20_000)]
        traces: usize,
    },
    /// RSS growth per span held: tailgate and the Collector each hold `--traces` traces undecided.
    Hold {
        #[command(flatten)]
        bins: BinArgs,
        #[arg(long, default_value_t = 10_000)]
        traces: usize,
        /// Systems: tailgate-hold (bench/configs/hold.yaml), collector-hold (a 10-minute decision_wait).
        #[arg(long, default_value = "tailgate-hold,collector-hold")]
        systems: String,
    },
    /// Sends the PII corpus (host/tests/redaction_corpus.rs) through each system and counts the planted
    /// values that arrive at the sink (leaks) and the near-misses that do not (false positives).
    Leaks {
        #[command(flatten)]
        bins: BinArgs,
        #[arg(long, default_value = "redact,collector-redact")]
        systems: String,
    },
    /// Writes one round of the workload's encoded requests to FILE (each preceded by its length as a
    /// 4-byte little-endian integer), for experiments outside the harness (e.g. compression).
    DumpWorkload {
        file: PathBuf,
        #[arg(long, default_value_t = 2000)]
        traces: usize,
    },
}

/// Where the systems' binaries and configurations are.
#[derive(clap::Args)]
struct BinArgs {
    /// The tailgate binary (release build).
    #[arg(long, default_value = "target/release/tailgate")]
    tailgate: PathBuf,
    /// tailgate config (the seed policy); the bench overrides receiver, exporter and admin addresses.
    #[arg(long, default_value = "examples/tailgate.yaml")]
    config: PathBuf,
    /// rotel's agent binary (from `pip install rotel`); the comparison is skipped when absent.
    #[arg(long)]
    rotel: Option<PathBuf>,
    /// tailgate config of the `redact` system: keep everything, redact with the PII plugin.
    #[arg(long, default_value = "bench/configs/redact-all.yaml")]
    redact_config: PathBuf,
    /// rotel Python processor of the `rotel-redact` system.
    #[arg(long, default_value = "bench/rotel/pii_processor.py")]
    rotel_processor: PathBuf,
    /// The OpenTelemetry Collector of bench/collector/ (`scripts/peers.sh collector` prints its path).
    #[arg(long, env = "TAILGATE_COLLECTOR")]
    collector: Option<PathBuf>,
    /// Directory of the Collector's configuration files (collector-*.yaml) and the other bench configs.
    #[arg(long, default_value = "bench/configs")]
    configs: PathBuf,
    /// The Collector's `decision_wait`: tailgate's settle (2 s) + the load's longest trace (8 s).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    collector_decision_wait: Duration,
    /// The Collector's `decision_wait_after_root_received` (0s: off).
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    collector_after_root: Duration,
}

impl BinArgs {
    fn binaries(&self) -> Binaries {
        Binaries {
            tailgate: self.tailgate.clone(),
            seed_config: self.config.clone(),
            redact_config: self.redact_config.clone(),
            rotel: self.rotel.clone(),
            rotel_processor: self.rotel_processor.clone(),
            collector: self.collector.clone(),
            configs: self.configs.clone(),
            collector_decision_wait: self.collector_decision_wait,
            collector_after_root: self.collector_after_root,
        }
    }
}

#[derive(clap::Args)]
struct Args {
    #[command(flatten)]
    bins: BinArgs,
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
    /// Only run these systems (comma separated: tailgate, sampling, passthrough, rotel, redact,
    /// rotel-redact, collector, collector-seed, collector-redact).
    /// `sampling` is the seed policy without the PII redactor (bench/configs/seed-without-redaction.yaml);
    /// `redact` is tailgate keeping every trace and redacting it with the PII plugin (`--redact-config`);
    /// `rotel-redact` is rotel with the Python redaction processor (`--rotel-processor`); `collector` is
    /// the Collector's tail_sampling with the seed policy's equivalent, `collector-seed` the same plus
    /// the PII processors, `collector-redact` the PII processors alone (bench/configs/collector-*.yaml).
    #[arg(
        long,
        default_value = "tailgate,passthrough,rotel,sampling,collector,redact,collector-redact"
    )]
    systems: String,
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
    let cli = Cli::parse();
    if let Cli::Overhead { traces } = cli {
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
    if let Cli::DumpWorkload { file, traces } = &cli {
        let w = workload::generate(*traces, 42);
        let mut out = Vec::new();
        for b in &w.bodies {
            out.extend_from_slice(&(b.bytes.len() as u32).to_le_bytes());
            out.extend_from_slice(&b.bytes);
        }
        std::fs::write(file, &out)?;
        eprintln!(
            "wrote {} requests, {} spans, {} bytes to {}",
            w.bodies.len(),
            w.spans,
            out.len(),
            file.display()
        );
        return Ok(());
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        match cli {
            Cli::Compare(args) => run(args).await,
            Cli::Hold {
                bins,
                traces,
                systems,
            } => hold::run(&bins.binaries(), traces, &systems).await,
            Cli::Leaks { bins, systems } => hold::leaks(&bins.binaries(), &systems).await,
            Cli::Overhead { .. } | Cli::DumpWorkload { .. } => Ok(()),
        }
    })
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
    let bins = args.bins.binaries();
    let mut results = Vec::new();
    for system in args.systems.split(',') {
        let sink = grpc::Sink::start().await?;
        let Some(started) = systems::start(system, &bins, &sink.addr.to_string())? else {
            continue;
        };
        let (target, metrics) = (started.target, started.metrics);
        let guard = ChildGuard(started.child);
        grpc::wait_ready(&target, Duration::from_secs(30))
            .await
            .with_context(|| format!("{system} did not start"))?;
        let pid = guard.0.id();
        let cpu0 = systems::cpu_seconds(pid).unwrap_or(0.0);
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
        // Let the system finish what it accepted: tail sampling waits (settle, decision_wait) before
        // deciding, so nothing may arrive for a while after a short run; the quiet period must outlast
        // the Collector's decision tick (1 s).
        tokio::time::sleep(systems::longest_hold(system, &bins).saturating_sub(start.elapsed()))
            .await;
        let exported = sink
            .wait_quiet(Duration::from_secs(3), Duration::from_secs(90))
            .await;
        let cpu_secs = systems::cpu_seconds(pid).unwrap_or(0.0) - cpu0;
        let peak_rss_mib = systems::status_kib(pid, "VmHWM:").unwrap_or(0) as f64 / 1024.0;
        let (latency, handoff) = match &metrics {
            Some(MetricsAt::Tailgate(u)) => (
                histogram_quantiles(u, "tailgate_decision_latency_seconds_bucket", 1.0)
                    .await
                    .ok()
                    .flatten(),
                histogram_quantiles(u, "tailgate_handoff_latency_seconds_bucket", 1.0)
                    .await
                    .ok()
                    .flatten(),
            ),
            // The Collector's nearest figure: how long each decision tick (every second, deciding the
            // traces whose decision_wait ended during the last second) took, in ms.
            Some(MetricsAt::Collector(u)) => (
                histogram_quantiles(
                    u,
                    "otelcol_processor_tail_sampling_sampling_decision_timer_latency",
                    1e-3,
                )
                .await
                .ok()
                .flatten(),
                None,
            ),
            None => (None, None),
        };
        let shown = std::env::var("TAILGATE_BENCH_SHOW_METRICS").ok();
        let (url, always): (Option<&String>, &[&str]) = match &metrics {
            Some(MetricsAt::Tailgate(u)) => (Some(u), &[]),
            // Traces the Collector evicted before their decision invalidate a run: always shown.
            Some(MetricsAt::Collector(u)) => (
                Some(u),
                &[
                    "sampling_trace_dropped_too_early",
                    "global_count_traces_sampled",
                ],
            ),
            None => (None, &[]),
        };
        if let Some(u) = url {
            // Diagnostics: the metric lines whose names contain one of the comma-separated words.
            if let Ok(text) = reqwest::get(u).await?.text().await {
                for line in text.lines().filter(|l| !l.starts_with('#')) {
                    let wanted = shown
                        .as_deref()
                        .is_some_and(|n| n.split(',').any(|n| line.contains(n)));
                    if wanted || always.iter().any(|n| line.contains(n)) {
                        eprintln!("  {line}");
                    }
                }
            }
        }
        drop(guard);
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
    let find = |n: &str| results.iter().find(|o| o.name == n);
    let rate = |n: &str| find(n).map(|o| o.accepted as f64 / o.secs);
    // Accepted spans per CPU second.
    let per_cpu = |n: &str| {
        find(n)
            .filter(|o| o.cpu_secs > 0.0)
            .map(|o| o.accepted as f64 / o.cpu_secs)
    };
    println!();
    for (a, b, what) in [
        (
            "tailgate",
            "rotel",
            "tailgate (seed policy) / rotel (pass-through)",
        ),
        (
            "passthrough",
            "rotel",
            "tailgate (pass-through) / rotel (pass-through)",
        ),
        (
            "redact",
            "rotel-redact",
            "tailgate (keep all + PII redactor) / rotel (Python redaction processor)",
        ),
        (
            "sampling",
            "collector",
            "tailgate (seed policy, no redactor) / Collector (tail_sampling)",
        ),
        (
            "tailgate",
            "collector-seed",
            "tailgate (seed policy + PII redactor) / Collector (tail_sampling + redaction)",
        ),
        (
            "redact",
            "collector-redact",
            "tailgate (keep all + PII redactor) / Collector (redaction + transform)",
        ),
    ] {
        if let (Some(x), Some(y)) = (rate(a), rate(b)) {
            print!("{what}: accepted spans/s {:.2}x", x / y);
            if let (Some(x), Some(y)) = (per_cpu(a), per_cpu(b)) {
                print!(", accepted spans per CPU second {:.2}x", x / y);
            }
            println!();
        }
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

/// p50 and p99 of the histogram whose bucket lines start with `name` (e.g.
/// `tailgate_decision_latency_seconds_bucket`; the Collector's exporter adds a unit suffix, so a prefix),
/// as the upper bounds of the buckets they fall in, times `scale` (to seconds). Bucket lines with
/// further labels are summed per bound.
async fn histogram_quantiles(
    url: &str,
    name: &str,
    scale: f64,
) -> anyhow::Result<Option<(f64, f64)>> {
    let text = reqwest::get(url).await?.text().await?;
    let mut buckets: Vec<(f64, f64)> = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let Some(at) = rest.find("le=\"") else {
            continue;
        };
        if !line[..line.len() - rest.len() + at].contains("_bucket") {
            continue;
        }
        {
            let rest = &rest[at + 4..];
            let (le, tail) = rest.split_once('"').unwrap_or(("", ""));
            let count = tail.rsplit(' ').next().unwrap_or("");
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse::<f64>().unwrap_or(f64::INFINITY) * scale
            };
            let count: f64 = count.trim().parse().unwrap_or(0.0);
            match buckets.iter_mut().find(|(b, _)| *b == le) {
                Some((_, c)) => *c += count,
                None => buckets.push((le, count)),
            }
        }
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
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
