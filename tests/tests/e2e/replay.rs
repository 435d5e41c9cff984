//! Record and replay: the proxy records what it receives (`record:`), and `tailgate replay` runs the
//! recording through the seed policy (`examples/tailgate.yaml`) offline and makes the same decisions the
//! proxy made; the written result replays again (both formats), and the command line prints the report.

use crate::status_page::{scratch, seed_policy};
use std::collections::BTreeSet;
use tailgate::config::Config;
use tailgate_e2e::capture::CaptureServer;
use tailgate_e2e::otlp::{hex, metric_sum};
use tailgate_e2e::proxy::{RunningAppExt, TestConfig};
use tailgate_e2e::{WAIT, python};

fn ids(v: &serde_json::Value) -> BTreeSet<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|x| x.as_str().map(String::from))
        .collect()
}

/// Trace ids in a recording (either format), read back through `tailgate::replay::read_recording`.
fn trace_ids_in(path: &std::path::Path) -> anyhow::Result<BTreeSet<String>> {
    use prost::Message;
    let mut out = BTreeSet::new();
    for body in tailgate::replay::read_recording(path)? {
        let req =
            opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest::decode(
                body,
            )?;
        for s in tailgate_e2e::otlp::flatten(&req) {
            out.insert(hex(&s.span.trace_id));
        }
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_traffic_replays_through_the_seed_policy_with_the_proxys_decisions()
-> anyhow::Result<()> {
    let dir = scratch("replay")?;
    let recording = dir.join("traffic.pb");
    let capture = CaptureServer::start().await?;
    let mut cfg = TestConfig::passthrough_to(capture.grpc_endpoint());
    cfg.policy = seed_policy();
    let yaml = format!(
        "{}record:\n  path: {}\n  unredacted: true\n",
        cfg.yaml(),
        recording.display()
    );
    tailgate_e2e::init_logging();
    let app = tailgate::app::start(Config::parse(&yaml, "replay test")?).await?;
    let seed = python::run_script(
        "seed_traffic.py",
        &[
            "--endpoint",
            &app.grpc_endpoint(),
            "--normal",
            "300",
            "--errors",
            "10",
            "--slow",
            "10",
        ],
    )
    .await?;
    let pii = python::run_script("send_pii.py", &["--endpoint", &app.grpc_endpoint()]).await?;
    let sent_spans = seed["span_count"].as_u64().unwrap_or(0) + 2;
    let sent_traces = 320 + 2;
    // Wait for every decision, then shut down (which closes the recording).
    let metrics = format!("{}/metrics", app.admin_endpoint());
    let deadline = tokio::time::Instant::now() + WAIT;
    while metric_sum(
        &reqwest::get(&metrics).await?.text().await?,
        "tailgate_decisions_total",
    ) < sent_traces as f64
    {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "not every trace was decided"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    app.shutdown().await;
    let exported: BTreeSet<String> = capture
        .spans()
        .iter()
        .map(|s| hex(&s.span.trace_id))
        .collect();

    // Replay with the seed policy as shipped (its plugins are the built ones in target/plugins).
    let mut seed_config = Config::load(&tailgate_e2e::repo_root().join("examples/tailgate.yaml"))?;
    // A generous call deadline, as the proxy side has: on a loaded 2-core machine a preempted call ran
    // past the default 5 ms and was decided by the failure policy (tests/tests/e2e/plugin_faults.rs is
    // where that is tested).
    seed_config.plugins.call_timeout = std::time::Duration::from_secs(1);
    let output = dir.join("kept.json");
    let report = tailgate::replay::replay(&seed_config, &recording, Some(&output))?;
    assert_eq!(report.spans_in, sent_spans, "{report:#?}");
    assert_eq!(report.traces, sent_traces, "{report:#?}");
    assert_eq!(report.spans_rejected, 0);
    let kept_by = |rule: &str| report.by_rule.get(rule).map_or(0, |r| r.kept_traces);
    // Ten error traces and the PII error trace; ten slow ones.
    assert_eq!(kept_by("errors"), 11, "{report:#?}");
    // Ten slow ones (a normal trace can pass 1 s on a loaded machine: the SDK times it for real).
    assert!(kept_by("slow") >= 10, "{report:#?}");
    let decided: u64 = report
        .by_rule
        .values()
        .map(|r| r.kept_traces + r.dropped_traces)
        .sum();
    assert_eq!(decided, report.traces, "{report:#?}");
    assert!(
        report
            .by_rule
            .keys()
            .all(|r| ["errors", "slow", "sample-10pct"].contains(&r.as_str())),
        "every trace is decided by a rule (the probabilistic one decides all the rest): {report:#?}"
    );
    assert_eq!(report.kept_traces + report.dropped_traces, report.traces);
    assert_eq!(report.kept_spans + report.dropped_spans, report.spans_in);
    assert!(
        report.bytes_out > 0 && report.bytes_out < report.bytes_in,
        "{report:#?}"
    );
    assert!(
        report.redactions_by_rule.get("pii").copied().unwrap_or(0) > 0,
        "{report:#?}"
    );
    assert!(
        report
            .redactions_by_field
            .keys()
            .any(|k| k.starts_with("pii/resource_attribute host.owner.email")),
        "{report:#?}"
    );
    let plugins: Vec<&str> = report.plugins.iter().map(|p| p.rule.as_str()).collect();
    assert_eq!(plugins, ["errors", "slow", "sample-10pct", "pii"]);
    assert!(
        report
            .plugins
            .iter()
            .all(|p| p.calls > 0 && p.total_ms > 0.0),
        "{report:#?}"
    );

    // The same decisions as the proxy: the probabilistic rule is consistent on the trace id.
    let replayed = trace_ids_in(&output)?;
    // The proxy may decide a trace before its last spans arrive (settle is 200 ms here, and the SDK's two
    // services export separately); replay always sees whole traces. So: everything the proxy kept, replay
    // keeps, and what replay keeps beyond that can only be error or slow traces the proxy decided early.
    let missing: Vec<_> = exported.difference(&replayed).collect();
    assert!(
        missing.is_empty(),
        "replay dropped traces the proxy kept: {missing:?}"
    );
    let special: BTreeSet<String> = ids(&seed["error"])
        .into_iter()
        .chain(ids(&seed["slow"]))
        .chain(ids(&pii["trace_ids"]))
        .collect();
    let extra: Vec<_> = replayed
        .difference(&exported)
        .filter(|id| !special.contains(*id))
        .collect();
    assert!(
        extra.is_empty(),
        "replay kept normal traces the proxy dropped: {extra:?}"
    );
    for id in ids(&seed["error"]).iter().chain(&ids(&seed["slow"])) {
        assert!(
            replayed.contains(id),
            "error/slow trace {id} not kept by replay"
        );
    }
    // Redacted like the proxy: nothing planted in the output.
    let written = std::fs::read_to_string(&output)?;
    for planted in pii["planted"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str())
    {
        assert!(!written.contains(planted), "replay output leaks {planted}");
    }
    assert!(
        written.contains("tailgate.rule"),
        "kept spans are annotated"
    );

    // The output (OTLP/JSON lines) replays in turn, here to length-delimited protobuf.
    let keep_all = Config::parse("policy:\n  default: keep\n", "keep all")?;
    let again_out = dir.join("again.pb");
    let again = tailgate::replay::replay(&keep_all, &output, Some(&again_out))?;
    assert_eq!(again.spans_in, report.kept_spans);
    assert_eq!(again.kept_traces, report.kept_traces);
    assert_eq!(trace_ids_in(&again_out)?, replayed);

    // The command line prints the same report.
    let out = std::process::Command::new(tailgate_e2e::binary::tailgate_bin()?)
        .arg("replay")
        .arg("--config")
        .arg(tailgate_e2e::repo_root().join("examples/tailgate.yaml"))
        .arg(&recording)
        .arg("--json")
        .output()?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cli: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(cli["kept_traces"], report.kept_traces, "{cli}");
    assert_eq!(cli["by_rule"]["errors"]["kept_traces"], 11, "{cli}");
    let text = std::process::Command::new(tailgate_e2e::binary::tailgate_bin()?)
        .args(["replay", "--config"])
        .arg(tailgate_e2e::repo_root().join("examples/tailgate.yaml"))
        .arg(&recording)
        .output()?;
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("by rule")
            && text.contains("sample-10pct")
            && text.contains("pii (redactor)"),
        "{text}"
    );
    Ok(())
}

#[tokio::test]
async fn the_recording_stops_at_its_byte_bound() -> anyhow::Result<()> {
    let dir = scratch("record-bound")?;
    let recording = dir.join("small.json");
    let capture = CaptureServer::start().await?;
    let cfg = TestConfig::passthrough_to(capture.grpc_endpoint());
    // Unredacted traffic goes to disk only when the config says so by name: refused before anything
    // starts otherwise.
    let unasked = format!("{}record:\n  path: {}\n", cfg.yaml(), recording.display());
    let refused = tailgate::app::start(Config::parse(&unasked, "record refusal test")?).await;
    assert!(
        refused.is_err_and(|e| e.to_string().contains("record.unredacted")),
        "a recording without record.unredacted must be refused"
    );
    assert!(!recording.exists(), "nothing was written");
    let yaml = format!(
        "{}record:\n  path: {}\n  max_bytes: 3KiB\n  unredacted: true\n",
        cfg.yaml(),
        recording.display()
    );
    let app = tailgate::app::start(Config::parse(&yaml, "record bound test")?).await?;
    for i in 0..20u128 {
        let request = crate::support::sample_request_in(0xbb00 + i);
        crate::support::grpc_send(&app.grpc_endpoint(), request, false).await?;
    }
    app.shutdown().await;
    let size = std::fs::metadata(&recording)?.len();
    assert!(
        size > 0 && size <= 3 * 1024,
        "recording is {size} bytes, bound 3 KiB"
    );
    // What was recorded is whole records: it replays.
    let report = tailgate::replay::replay(&Config::default(), &recording, None)?;
    assert!(report.requests > 0 && report.requests < 20, "{report:#?}");
    Ok(())
}
