//! `service.memory_limit` holds for the whole process. The real binary runs with a 160 MiB limit and
//! every share on `auto` (buffer half, export queue a fifth, decision cache a tenth at most); the
//! downstream is unreachable for the whole test, and four clients offer three times the limit in
//! requests of four spans with 256 KiB attributes each (1 MiB per request), through a policy that keeps
//! everything, so the export queue, the pipeline and the buffer all fill. Shown: tailgate pushes back
//! (`memory_pressure`), its peak resident memory (`VmHWM`) stays under the limit plus
//! [`ALLOWANCE`], and at SIGTERM the accounting identity of docs/operations.md holds exactly.
//!
//! And `auto` follows the memory cgroup: the binary started inside a cgroup with a 400 MiB limit takes
//! 80 % of it (`tailgate_memory_limit_bytes`). That part needs a machine that lets the test create a
//! cgroup (root, a mounted memory controller); elsewhere it says so and checks nothing, and the cgroup
//! fixtures of `config::memory`'s unit tests still cover the parsing.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use std::path::PathBuf;
use tailgate_e2e::binary::Binary;
use tailgate_e2e::otlp::metric_sum;
use tailgate_e2e::proxy::TestConfig;
use tailgate_e2e::{WAIT, free_port};

const LIMIT: u64 = 160 << 20;
/// What resident memory may pass the limit by: allocator slack (freed pages not yet returned), and what
/// arrives in the 100 ms between two resident memory samples.
const ALLOWANCE: u64 = 32 << 20;
const ATTRIBUTE_BYTES: usize = 256 << 10;
const SPANS_PER_REQUEST: usize = 4;
const CLIENTS: u64 = 4;

fn kv(key: &str, value: String) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value)),
        }),
        ..Default::default()
    }
}

/// One trace of [`SPANS_PER_REQUEST`] spans (a root and its children), each with a large attribute.
fn large_request(trace: u128) -> ExportTraceServiceRequest {
    let filler: String = (0..ATTRIBUTE_BYTES)
        .map(|i| char::from(b'a' + ((i as u128 * 7 + trace) % 26) as u8))
        .collect();
    let spans = (0..SPANS_PER_REQUEST)
        .map(|i| Span {
            trace_id: trace.to_be_bytes().to_vec(),
            span_id: (i as u64 + 1).to_be_bytes().to_vec(),
            parent_span_id: if i == 0 {
                vec![]
            } else {
                1u64.to_be_bytes().to_vec()
            },
            name: format!("large-{i}"),
            start_time_unix_nano: 1_700_000_000_000_000_000,
            end_time_unix_nano: 1_700_000_000_100_000_000,
            attributes: vec![kv("payload", filler.clone())],
            ..Default::default()
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", "memory-test".into())],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

#[derive(Debug, Default)]
struct Offered {
    accepted_spans: u64,
    refused_requests: u64,
    offered_bytes: u64,
}

/// Sends `requests` large traces, one at a time; refusals are counted and the next one is sent.
async fn client(endpoint: String, id: u64, requests: u64) -> anyhow::Result<Offered> {
    let mut c = TraceServiceClient::connect(endpoint)
        .await?
        .max_decoding_message_size(16 << 20)
        .max_encoding_message_size(16 << 20);
    let mut o = Offered::default();
    for i in 0..requests {
        let trace =
            0x3e30_0000_0000_0000_0000_0000_0000_0000 | (u128::from(id) << 32) | u128::from(i);
        o.offered_bytes += (SPANS_PER_REQUEST * ATTRIBUTE_BYTES) as u64;
        match tokio::time::timeout(WAIT, c.export(large_request(trace))).await {
            Err(_) => anyhow::bail!("tailgate did not answer an export within {WAIT:?}"),
            Ok(Ok(_)) => o.accepted_spans += SPANS_PER_REQUEST as u64,
            Ok(Err(s)) => {
                anyhow::ensure!(
                    matches!(
                        s.code(),
                        tonic::Code::ResourceExhausted | tonic::Code::Unavailable
                    ),
                    "unexpected answer {:?}: {}",
                    s.code(),
                    s.message()
                );
                o.refused_requests += 1;
                // A client honouring backpressure would wait for RetryInfo; this one offers more at once.
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
        }
    }
    Ok(o)
}

fn temp_dir(name: &str) -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "tailgate-e2e-{name}-{}-{}",
        std::process::id(),
        free_port()?
    ));
    let _ = std::fs::remove_dir_all(&dir);
    Ok(dir)
}

async fn metrics(binary: &Binary) -> anyhow::Result<String> {
    Ok(reqwest::get(format!("{}/metrics", binary.admin_endpoint()))
        .await?
        .text()
        .await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resident_memory_stays_under_the_limit_with_large_spans_an_outage_and_3x_overload()
-> anyhow::Result<()> {
    let unreachable = format!("http://127.0.0.1:{}", free_port()?);
    let mut config = TestConfig::passthrough_to(unreachable);
    config.settle = "100ms";
    config.idle_timeout = "500ms";
    config.max_wait = "5s";
    config.batch_timeout = "20ms";
    config.shutdown_grace = "2s";
    config.max_buffer_bytes = "auto";
    config.service_extra = format!("  memory_limit: {}MiB\n", LIMIT >> 20);
    config.exporter_extra = "    sending_queue:\n      num_consumers: 2\n".into();
    config.batch_extra = "      send_batch_size: 32\n      send_batch_max_size: 64\n".into();
    let dir = temp_dir("memory-limit")?;
    let mut binary = Binary::start(&config, &dir).await?;
    let baseline = binary.status_bytes("VmRSS")?;

    let requests = LIMIT * 3 / (SPANS_PER_REQUEST * ATTRIBUTE_BYTES) as u64 / CLIENTS + 1;
    let mut tasks = Vec::new();
    for id in 0..CLIENTS {
        tasks.push(tokio::spawn(client(binary.endpoint(), id, requests)));
    }
    let mut offered = Offered::default();
    for t in tasks {
        let o = t.await??;
        offered.accepted_spans += o.accepted_spans;
        offered.refused_requests += o.refused_requests;
        offered.offered_bytes += o.offered_bytes;
    }
    let text = metrics(&binary).await?;
    let peak = binary.status_bytes("VmHWM")?;
    let sampled_peak = metric_sum(&text, "tailgate_resident_memory_peak_bytes") as u64;
    let mib = |b: u64| b as f64 / f64::from(1 << 20);
    eprintln!(
        "memory limit {:.0} MiB: offered {:.0} MiB, accepted {} spans, refused {} requests; \
         resident at start {:.1} MiB, peak (VmHWM) {:.1} MiB = {:.2}x the limit (sampled peak {:.1} MiB); \
         export queue {:.1}/{:.1} MiB, buffer peak {:.1} MiB of {:.1} MiB",
        mib(LIMIT),
        mib(offered.offered_bytes),
        offered.accepted_spans,
        offered.refused_requests,
        mib(baseline),
        mib(peak),
        peak as f64 / LIMIT as f64,
        mib(sampled_peak),
        mib(metric_sum(&text, "tailgate_export_queue_bytes") as u64),
        mib(metric_sum(&text, "tailgate_export_queue_capacity_bytes") as u64),
        mib(metric_sum(&text, "tailgate_buffer_bytes_peak") as u64),
        mib(metric_sum(&text, "tailgate_buffer_bytes_limit") as u64),
    );
    assert_eq!(
        metric_sum(&text, "tailgate_memory_limit_bytes") as u64,
        LIMIT
    );
    assert!(
        offered.refused_requests > 0,
        "three times the limit offered during an outage, and nothing was refused"
    );
    assert!(
        metric_sum(&text, "tailgate_export_queue_bytes") > 0.0,
        "kept spans wait in the export queue during the outage"
    );
    assert!(
        peak <= LIMIT + ALLOWANCE,
        "peak resident memory {:.1} MiB passed the {:.0} MiB limit plus the {:.0} MiB allowance",
        mib(peak),
        mib(LIMIT),
        mib(ALLOWANCE)
    );

    let (status, _) = binary.sigterm().await?;
    let log = binary.log_text();
    assert!(status.success(), "exit status {status}; log:\n{log}");
    let summary = tailgate_e2e::binary::last_summary(&log)
        .ok_or_else(|| anyhow::anyhow!("no `tailgate stopped` line in the log:\n{log}"))?;
    summary.assert_balanced(offered.accepted_spans, 0);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// The `cgroup.procs` file of a new memory cgroup limited to `limit` bytes (v2 `memory.max`, else v1
/// `memory.limit_in_bytes`), or why none could be made.
fn make_cgroup(name: &str, limit: u64) -> Result<(PathBuf, PathBuf), String> {
    let candidates = [
        ("/sys/fs/cgroup", "memory.max"),
        ("/sys/fs/cgroup/unified", "memory.max"),
        ("/sys/fs/cgroup/memory", "memory.limit_in_bytes"),
    ];
    let mut why = Vec::new();
    for (root, file) in candidates {
        let root = PathBuf::from(root);
        let v2 = file == "memory.max";
        if v2 {
            let controllers =
                std::fs::read_to_string(root.join("cgroup.controllers")).unwrap_or_default();
            if !controllers.split_whitespace().any(|c| c == "memory") {
                why.push(format!("{}: no memory controller", root.display()));
                continue;
            }
        } else if !root.join(file).exists() {
            why.push(format!("{}: not mounted", root.display()));
            continue;
        }
        let dir = root.join(name);
        if let Err(e) = std::fs::create_dir(&dir) {
            why.push(format!("mkdir {}: {e}", dir.display()));
            continue;
        }
        if let Err(e) = std::fs::write(dir.join(file), limit.to_string()) {
            let _ = std::fs::remove_dir(&dir);
            why.push(format!("{}: {e}", dir.join(file).display()));
            continue;
        }
        return Ok((dir.join("cgroup.procs"), dir));
    }
    Err(why.join("; "))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_memory_limit_follows_the_cgroup_limit() -> anyhow::Result<()> {
    const CGROUP_LIMIT: u64 = 400 << 20;
    let name = format!("tailgate-e2e-{}-{}", std::process::id(), free_port()?);
    let (procs, cgroup) = match make_cgroup(&name, CGROUP_LIMIT) {
        Ok(made) => made,
        Err(why) => {
            eprintln!(
                "no cgroup could be created here ({why}); the unit tests' fixtures cover `auto`"
            );
            return Ok(());
        }
    };
    let mut config = TestConfig::passthrough_to(format!("http://127.0.0.1:{}", free_port()?));
    config.max_buffer_bytes = "auto";
    config.shutdown_grace = "1s";
    let dir = temp_dir("cgroup")?;
    let result = async {
        let mut binary = Binary::start_in(&config, &dir, Some(&procs)).await?;
        let text = metrics(&binary).await?;
        let _ = binary.sigterm().await;
        let limit = metric_sum(&text, "tailgate_memory_limit_bytes") as u64;
        let buffer = metric_sum(&text, "tailgate_buffer_bytes_limit") as u64;
        eprintln!(
            "in a cgroup limited to {} MiB: memory limit {} bytes, buffer {} bytes",
            CGROUP_LIMIT >> 20,
            limit,
            buffer
        );
        assert_eq!(limit, CGROUP_LIMIT / 5 * 4, "80 % of the cgroup's limit");
        assert_eq!(buffer, limit / 100 * 50, "the buffer takes half of it");
        let log = binary.log_text();
        assert!(
            log.contains("80% of the cgroup limit 400.0MiB"),
            "the start log says where the limit came from:\n{log}"
        );
        anyhow::Ok(())
    }
    .await;
    // The cgroup can be removed once the process in it has exited.
    for _ in 0..50 {
        if std::fs::remove_dir(&cgroup).is_ok() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let _ = std::fs::remove_dir_all(&dir);
    result
}
