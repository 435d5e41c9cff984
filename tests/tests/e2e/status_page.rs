//! The live status page in a real headless browser (Debian's `chromium`) with live traffic through the
//! seed policy: the DOM has the charts' series, the plugins, the last reload and recent decisions linking
//! to Jaeger, and a screenshot shows the throughput and decision charts drawn. Also `GET /api/status`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use tailgate::config::Overrides;
use tailgate_e2e::capture::CaptureServer;
use tailgate_e2e::proxy::{RunningAppExt, TestConfig};
use tailgate_e2e::{WAIT, python};

/// Where Jaeger's UI is said to be; the page links kept traces there.
const JAEGER: &str = "http://jaeger.test:16686";

pub fn plugin(name: &str) -> String {
    tailgate::testing::built_plugin(name).display().to_string()
}

/// The seed policy (`examples/tailgate.yaml`) with the test's plugin paths, and 1 s call deadlines: on a
/// loaded 2-core machine a preempted call can run past the default 5 ms (plugin_faults.rs tests that).
pub fn seed_policy() -> String {
    format!(
        "  default: drop\n  rules:\n    - name: errors\n      plugin: {}\n      call_timeout: 1s\n    - name: slow\n      plugin: {}\n      config: {{threshold: 1s}}\n      call_timeout: 1s\n    - name: sample-10pct\n      plugin: {}\n      config: {{probability: 0.1}}\n      call_timeout: 1s\n  redactors:\n    - name: pii\n      plugin: {}\n      call_timeout: 1s\n",
        plugin("keep-errors"),
        plugin("keep-slow"),
        plugin("probabilistic"),
        plugin("pii"),
    )
}

/// A fresh scratch directory for one test.
pub fn scratch(name: &str) -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("tailgate-e2e-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// Debian's chromium (`TAILGATE_CHROMIUM` overrides); `scripts/test.sh` installs it.
fn chromium() -> anyhow::Result<PathBuf> {
    let p = std::env::var_os("TAILGATE_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    anyhow::ensure!(
        p.exists(),
        "{} is missing: run ./scripts/test.sh (it installs Debian's chromium) or set TAILGATE_CHROMIUM",
        p.display()
    );
    Ok(p)
}

/// Runs headless Chromium on `url` with `args` (a fresh profile, nothing that calls Google).
async fn run_chromium(profile: &Path, url: &str, args: &[&str]) -> anyhow::Result<String> {
    let child = tokio::process::Command::new(chromium()?)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--window-size=1264,1400",
            "--virtual-time-budget=5000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let out = tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .map_err(|_| anyhow::anyhow!("chromium did not finish within {WAIT:?}"))??;
    anyhow::ensure!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Pixels in the rectangle whose colour is within a small distance of `rgb`.
fn pixels_like(png_path: &Path, rect: (u32, u32, u32, u32), rgb: [u8; 3]) -> anyhow::Result<usize> {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(png_path)?));
    let mut reader = decoder.read_info()?;
    let mut buf = vec![0; reader.output_buffer_size().unwrap_or(0)];
    let info = reader.next_frame(&mut buf)?;
    let channels = info.color_type.samples();
    anyhow::ensure!(
        info.bit_depth == png::BitDepth::Eight && channels >= 3,
        "unexpected PNG format {:?} {:?}",
        info.color_type,
        info.bit_depth
    );
    let (x0, y0, x1, y1) = rect;
    let mut n = 0;
    for y in y0..y1.min(info.height) {
        for x in x0..x1.min(info.width) {
            let i = (y as usize * info.width as usize + x as usize) * channels;
            let d: i32 = (0..3)
                .map(|c| (buf[i + c] as i32 - rgb[c] as i32).abs())
                .sum();
            if d < 60 {
                n += 1;
            }
        }
    }
    Ok(n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_renders_live_data_in_headless_chromium() -> anyhow::Result<()> {
    let dir = scratch("status-page")?;
    let capture = CaptureServer::start().await?;
    let mut cfg = TestConfig::passthrough_to(capture.grpc_endpoint());
    cfg.policy = seed_policy();
    let yaml = cfg.yaml().replace(
        "admin:\n  endpoint: 127.0.0.1:0\n",
        &format!("admin:\n  endpoint: 127.0.0.1:0\n  jaeger_ui_url: {JAEGER}/\n"),
    );
    let config = dir.join("tailgate.yaml");
    std::fs::write(&config, yaml)?;
    tailgate_e2e::init_logging();
    let app = tailgate::app::start_from_file(&config, &Overrides::default()).await?;
    let admin = app.admin_endpoint();

    let seed = python::run_script(
        "seed_traffic.py",
        &[
            "--endpoint",
            &app.grpc_endpoint(),
            "--normal",
            "200",
            "--errors",
            "10",
            "--slow",
            "10",
        ],
    )
    .await?;
    let pii = python::run_script("send_pii.py", &["--endpoint", &app.grpc_endpoint()]).await?;
    let sent = seed["span_count"].as_u64().unwrap_or(0) + pii["span_count"].as_u64().unwrap_or(0);
    anyhow::ensure!(sent > 0, "the scripts reported no spans: {seed} {pii}");

    // Wait until the history has counted every span in and the decisions are listed.
    let client = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    let status = loop {
        let s: serde_json::Value = serde_json::from_str(
            &client
                .get(format!("{admin}/api/status"))
                .send()
                .await?
                .text()
                .await?,
        )?;
        let counted: u64 = s["history"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|h| h["spans_in"].as_u64())
            .sum();
        let kept: u64 = s["history"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|h| h["decisions"].as_array().cloned().unwrap_or_default())
            .filter_map(|d| d["keep"].as_u64())
            .sum();
        if counted == sent && kept > 0 && s["recent"].as_array().is_some_and(|r| !r.is_empty()) {
            break s;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the status history did not count {sent} spans in: {s}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    let plugins: Vec<&str> = status["plugins"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["rule"].as_str())
        .collect();
    assert_eq!(
        plugins,
        ["errors", "slow", "sample-10pct", "pii"],
        "{status}"
    );
    for p in status["plugins"].as_array().into_iter().flatten() {
        assert_eq!(p["sha256"].as_str().map(str::len), Some(64), "{p}");
        assert!(
            p["calls"].as_u64() > Some(0),
            "every plugin was called: {p}"
        );
    }
    assert_eq!(status["buffer"]["limit"], 64 << 20, "{status}");
    assert!(
        status["memory"]["limit"].as_u64() > Some(0)
            && status["memory"]["resident"].as_u64() > Some(0),
        "the process's memory against its limit: {status}"
    );
    assert!(
        status["second_chance"]["ring_traces"].is_u64(),
        "the second-chance ring: {status}"
    );
    assert!(
        status["reload"]["last"].is_null(),
        "no reload yet: {status}"
    );

    // A reload, so the page has an outcome to show.
    let r = client.post(format!("{admin}/reload")).send().await?;
    assert_eq!(r.status(), 200, "{}", r.text().await?);

    let profile = dir.join("chromium-profile");
    let dom = run_chromium(&profile, &format!("{admin}/"), &["--dump-dom"]).await?;
    for needle in [
        r#"data-series="in""#,
        r#"data-series="out (exported)""#,
        r#"data-series="errors keep""#,
        r#"data-series="sample-10pct drop""#,
        r#"data-series="fill""#,
        "keep-errors.wasm",
        "probabilistic.wasm",
        "pii.wasm",
        "reloaded (admin)",
        &format!(r#"href="{JAEGER}/trace/"#),
        r#"class="decision""#,
        "Process: ",
        "Second chance: ",
    ] {
        assert!(
            dom.contains(needle),
            "the rendered page has no {needle}:\n{dom}"
        );
    }
    // Recent decisions show no personal data (kept names are redacted, dropped names are not shown).
    for planted in pii["planted"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str())
    {
        assert!(!dom.contains(planted), "the status page shows {planted}");
    }
    // The throughput line has points (not an empty polyline).
    let points = dom
        .split(r#"data-series="in""#)
        .next()
        .and_then(|before| before.rsplit("points=\"").next())
        .map(|p| p.split('"').next().unwrap_or("").split(' ').count())
        .unwrap_or(0);
    assert!(
        points >= 2,
        "the throughput line has {points} points:\n{dom}"
    );

    let shot = dir.join("status.png");
    run_chromium(
        &profile,
        &format!("{admin}/"),
        &[&format!("--screenshot={}", shot.display())],
    )
    .await?;
    // The throughput chart (left panel, top) draws "in" in #2563eb; the decisions chart (right panel)
    // draws the first rule in the same blue and the others in orange / green.
    let throughput = pixels_like(&shot, (32, 80, 600, 300), [0x25, 0x63, 0xeb])?;
    let decisions = pixels_like(&shot, (640, 80, 1210, 300), [0xea, 0x58, 0x0c])?
        + pixels_like(&shot, (640, 80, 1210, 300), [0x25, 0x63, 0xeb])?;
    assert!(
        throughput > 40 && decisions > 40,
        "the charts are not drawn in {}: {throughput} throughput pixels, {decisions} decision pixels",
        shot.display()
    );
    app.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_says_why_a_trace_was_kept_or_dropped() -> anyhow::Result<()> {
    let capture = CaptureServer::start().await?;
    let mut cfg = TestConfig::passthrough_to(capture.grpc_endpoint());
    cfg.policy = seed_policy();
    let app = cfg.start().await?;
    let admin = app.admin_endpoint();
    let seed = python::run_script(
        "seed_traffic.py",
        &[
            "--endpoint",
            &app.grpc_endpoint(),
            "--normal",
            "40",
            "--errors",
            "3",
            "--slow",
            "0",
        ],
    )
    .await?;
    let pii = python::run_script("send_pii.py", &["--endpoint", &app.grpc_endpoint()]).await?;
    let first = |v: &serde_json::Value, k: &str| v[k][0].as_str().map(String::from);
    let error_id =
        first(&seed, "error").ok_or_else(|| anyhow::anyhow!("no error trace: {seed}"))?;
    let normal_ids: Vec<String> = seed["normal"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(String::from))
        .collect();
    // The second PII trace has an error status: kept by `errors`, then redacted.
    let pii_id = pii["trace_ids"][1]
        .as_str()
        .map(String::from)
        .ok_or_else(|| anyhow::anyhow!("no PII trace: {pii}"))?;

    let client = reqwest::Client::new();
    let explain = |id: String| {
        let client = client.clone();
        let url = format!("{admin}/debug/traces/{id}");
        async move {
            let r = client.get(&url).send().await?;
            let status = r.status().as_u16();
            let body = r.text().await?;
            anyhow::Ok((status, body))
        }
    };
    // Decided once settled: poll until the PII trace is explained.
    let deadline = tokio::time::Instant::now() + WAIT;
    let pii_body = loop {
        let (status, body) = explain(pii_id.clone()).await?;
        if status == 200 {
            break body;
        }
        assert_eq!(status, 404, "{body}");
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "never explained: {body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let p: serde_json::Value = serde_json::from_str(&pii_body)?;
    assert_eq!(p["trace_id"], pii_id.as_str());
    assert_eq!(p["decision"], "keep", "{p}");
    assert_eq!(p["rule"], "errors", "{p}");
    // The explanation links into Jaeger like the page does (`admin.jaeger_ui_url`, its default here).
    assert_eq!(
        p["jaeger_url"],
        format!("http://localhost:16686/trace/{pii_id}").as_str(),
        "{p}"
    );
    assert!(
        ["settle", "idle", "max_wait", "size", "pressure", "shutdown"]
            .contains(&p["trigger"].as_str().unwrap_or("")),
        "{p}"
    );
    let applied = p["redactions"]["applied"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(!applied.is_empty(), "the PII trace was redacted: {p}");
    assert!(applied.iter().all(|n| n["rule"] == "pii"), "{p}");
    assert!(
        applied
            .iter()
            .any(|n| n["field"] == "resource_attribute" && n["key"] == "host.owner.email"),
        "redactions name the field: {p}"
    );
    for planted in pii["planted"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str())
    {
        assert!(
            !pii_body.contains(planted),
            "the explanation leaks {planted}: {pii_body}"
        );
    }
    assert!(
        p["root_name"]
            .as_str()
            .is_some_and(|n| n.starts_with("notify ")),
        "the redacted root name: {p}"
    );

    let (status, body) = explain(error_id.clone()).await?;
    assert_eq!(status, 200, "{body}");
    let e: serde_json::Value = serde_json::from_str(&body)?;
    assert_eq!(
        (e["decision"].as_str(), e["rule"].as_str()),
        (Some("keep"), Some("errors")),
        "{e}"
    );
    assert_eq!(e["spans"], 3, "{e}");
    assert_eq!(e["root_service"], "api", "{e}");

    // Normal traces are decided by the probabilistic rule, kept or dropped, with its probability.
    let mut sampled = 0;
    for id in &normal_ids {
        let (status, body) = explain(id.clone()).await?;
        if status == 200 {
            let n: serde_json::Value = serde_json::from_str(&body)?;
            assert_eq!(n["rule"], "sample-10pct", "{n}");
            assert_eq!(n["probability"], 0.1, "{n}");
            // Only a kept trace is in Jaeger to link to.
            assert_eq!(n["jaeger_url"].is_string(), n["decision"] == "keep", "{n}");
            assert!(
                n["redactions"]["applied"]
                    .as_array()
                    .is_some_and(|a| a.is_empty()),
                "{n}"
            );
            sampled += 1;
        }
    }
    assert!(sampled > 0, "no normal trace was explained");

    let (status, body) = explain("0123456789abcdef0123456789abcdef".into()).await?;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("not decided recently"), "{body}");
    for bad in ["not-hex", "0123456789abcdef0123456789abcdef00"] {
        let (status, body) = explain(bad.into()).await?;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body.contains("malformed trace id"), "{body}");
    }
    app.shutdown().await;
    Ok(())
}
