//! The seed policy in front of a real Jaeger v2 (memory storage, `tailgate_e2e::jaeger`), checked through
//! Jaeger's own query API.
//!
//! Two real services: a Node.js `shop-frontend` (`tests/node/jaeger_frontend.mjs`, OpenTelemetry JS SDK,
//! OTLP/HTTP to tailgate) calls a Python `users` service (`tests/python/jaeger_users.py`, a real HTTP
//! server with the OpenTelemetry Python SDK, OTLP/gRPC to tailgate) over HTTP, the W3C `traceparent` and
//! `baggage` headers injected and extracted by the SDKs' propagators. Each trace has four spans across
//! the two services; both put emails, card numbers, an SSN, a bearer token, a URL password and SQL
//! literals into attributes, baggage, a span name, events and status messages.
//!
//! tailgate runs the policy section of `examples/tailgate.yaml` (errors, slow > 1 s, 10 % of the rest,
//! the `pii` redactor) and exports to Jaeger over OTLP/gRPC in one test and OTLP/HTTP in the other. The
//! tests then ask Jaeger (`/api/traces/{id}`, `/api/v3/traces/{id}?raw_traces=true`, `/api/traces?service=`,
//! `/api/services`, `/api/services/{service}/operations`) and check:
//! - every error and slow trace is there, with every span exactly once and every parent link
//!   (`references`) as the SDKs recorded it, across both services;
//! - of the normal traces, exactly those tailgate's `/debug/traces/{id}` says `sample-10pct` kept are
//!   there (whole), and their share is about 10 % (a binomial bound of +-4 standard deviations);
//! - nothing else is there (the service search lists exactly the kept traces);
//! - every span carries `tailgate.rule` naming the rule that kept its trace;
//! - the baggage arrived (`baggage.tenant` on the users spans) and none of the planted PII appears
//!   anywhere in any body Jaeger returned.
//!
//! A third test sends one trace of 2 500 spans (about 5.5 MiB encoded, more than the 4 MiB Jaeger's gRPC
//! receiver accepts in one message) and shows it arrives whole, in several export requests (counted by
//! Jaeger's own receiver metrics).

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tailgate::config::Config;
use tailgate_e2e::jaeger::{Jaeger, JaegerTrace, http_json, seed_policy_section};
use tailgate_e2e::otlp::metric_sum;
use tailgate_e2e::proxy::{RunningAppExt, TestConfig};
use tailgate_e2e::{WAIT, python, repo_root};
use tokio::io::AsyncBufReadExt;

const NORMAL: usize = 300;
const ERRORS: usize = 15;
const SLOW: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_policy_into_real_jaeger_over_otlp_grpc() -> anyhow::Result<()> {
    seed_policy_into_jaeger("grpc").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_policy_into_real_jaeger_over_otlp_http() -> anyhow::Result<()> {
    seed_policy_into_jaeger("http").await
}

/// The `users` service (`tests/python/jaeger_users.py`), a child process; killed when dropped.
struct UsersService {
    url: String,
    child: tokio::process::Child,
    log: PathBuf,
}

impl UsersService {
    async fn start(otlp_grpc: &str, dir: &std::path::Path) -> anyhow::Result<UsersService> {
        let log = dir.join("users.log");
        let mut child = tokio::process::Command::new(python::python()?)
            .arg(python::script("jaeger_users.py"))
            .args(["--otlp-grpc", otlp_grpc])
            .env("PYTHONUNBUFFERED", "1")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("OTEL_RESOURCE_ATTRIBUTES")
            .env_remove("OTEL_SERVICE_NAME")
            // The SDK's default propagators (W3C trace context and baggage), whatever the environment says.
            .env_remove("OTEL_PROPAGATORS")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(std::fs::File::create(&log)?))
            .kill_on_drop(true)
            .spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let first = tokio::time::timeout(WAIT, lines.next_line())
            .await
            .map_err(|_| anyhow::anyhow!("jaeger_users.py printed no port within {WAIT:?}"))??;
        let Some(first) = first else {
            let err = std::fs::read_to_string(&log).unwrap_or_default();
            anyhow::bail!(
                "jaeger_users.py exited before listening: {err}\n{}",
                python::SETUP_HINT
            );
        };
        let v: Value = serde_json::from_str(&first)?;
        let port = v["port"]
            .as_u64()
            .ok_or_else(|| anyhow::anyhow!("no port in {first}"))?;
        Ok(UsersService {
            url: format!("http://127.0.0.1:{port}"),
            child,
            log,
        })
    }

    /// `POST /shutdown`: flushes its SDK and answers what it sent; then waits for the process to exit.
    async fn shutdown(mut self) -> anyhow::Result<Value> {
        let r = reqwest::Client::new()
            .post(format!("{}/shutdown", self.url))
            .timeout(WAIT)
            .send()
            .await?;
        let status = r.status();
        let body = r.text().await?;
        anyhow::ensure!(
            status.is_success(),
            "users /shutdown: {status} {body}\n{}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        );
        let _ = tokio::time::timeout(WAIT, self.child.wait()).await;
        Ok(serde_json::from_str(&body)?)
    }
}

/// Runs `node tests/node/<script> <args>` (at most [`WAIT`] x 2) and parses its last line as JSON.
async fn run_node(script: &str, args: &[&str]) -> anyhow::Result<Value> {
    let dir = repo_root().join("tests/node");
    anyhow::ensure!(
        dir.join("node_modules/@opentelemetry/sdk-node").exists(),
        "tests/node/node_modules is missing: run ./scripts/test.sh (or `npm ci` in tests/node)"
    );
    let child = tokio::process::Command::new("node")
        .arg(script)
        .args(args)
        .current_dir(&dir)
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env_remove("OTEL_TRACES_EXPORTER")
        .env_remove("OTEL_PROPAGATORS")
        .env_remove("OTEL_SERVICE_NAME")
        .env_remove("OTEL_RESOURCE_ATTRIBUTES")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let out = tokio::time::timeout(WAIT * 2, child.wait_with_output())
        .await
        .map_err(|_| anyhow::anyhow!("{script} did not finish within {:?}", WAIT * 2))??;
    let stdout = String::from_utf8_lossy(&out.stdout);
    anyhow::ensure!(
        out.status.success(),
        "{script} failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let last = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    serde_json::from_str(last)
        .map_err(|e| anyhow::anyhow!("{script} printed no JSON ({e}): {stdout}"))
}

/// A span as a client recorded it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct SentSpan {
    span_id: String,
    parent_span_id: String,
    name: String,
    /// The `service.name` of the client that sent it.
    service: String,
}

fn sent_spans(report: &Value, service: &str) -> BTreeMap<String, Vec<SentSpan>> {
    let mut by_trace: BTreeMap<String, Vec<SentSpan>> = BTreeMap::new();
    for s in report["spans"].as_array().into_iter().flatten() {
        let field = |k: &str| s[k].as_str().unwrap_or_default().to_lowercase();
        by_trace
            .entry(field("trace_id"))
            .or_default()
            .push(SentSpan {
                span_id: field("span_id"),
                parent_span_id: field("parent_span_id"),
                name: s["name"].as_str().unwrap_or_default().into(),
                service: service.into(),
            });
    }
    by_trace
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(String::from))
        .collect()
}

/// The planted values and the forms they could take in JSON (a card's digits without separators).
fn pii_needles(planted: &[String]) -> Vec<String> {
    let mut needles: BTreeSet<String> = BTreeSet::new();
    for p in planted {
        let p = p.trim_matches('\'').to_string();
        let digits: String = p.chars().filter(char::is_ascii_digit).collect();
        if digits.len() >= 12
            && digits.len() == p.chars().filter(|c| !matches!(c, ' ' | '-')).count()
        {
            needles.insert(digits);
        }
        if let Some(token) = p.strip_prefix("Bearer ") {
            needles.insert(token.to_string());
        }
        needles.insert(p);
    }
    needles.into_iter().collect()
}

/// Fails naming the planted value and the endpoint if `body` contains any of `needles`.
fn assert_no_pii(what: &str, body: &str, needles: &[String]) {
    for n in needles {
        if let Some(at) = body.find(n.as_str()) {
            let excerpt: String = body[at..].chars().take(300).collect();
            panic!("planted PII {n:?} is in what Jaeger returned for {what}: ...{excerpt}");
        }
    }
}

/// tailgate's explanation of one decision (`GET /debug/traces/{id}`).
async fn explain(admin: &str, trace_id: &str) -> anyhow::Result<Value> {
    http_json(&format!("{admin}/debug/traces/{trace_id}")).await
}

async fn seed_policy_into_jaeger(protocol: &'static str) -> anyhow::Result<()> {
    let jaeger = Jaeger::start().await?;
    let result = run_seed(&jaeger, protocol).await;
    result.map_err(|e| e.context(jaeger.logs()))
}

async fn run_seed(jaeger: &Jaeger, protocol: &'static str) -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!(
        "tailgate-e2e-jaeger-seed-{protocol}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;

    let mut cfg = match protocol {
        "grpc" => TestConfig::passthrough_to(jaeger.otlp_grpc_endpoint()),
        _ => TestConfig::passthrough_to("").http_exporter(jaeger.otlp_http_endpoint()),
    };
    cfg.policy = seed_policy_section("2s")?;
    // The root (Node.js) ends after the users spans; a second of quiet after it decides the trace.
    cfg.settle = "1s";
    cfg.idle_timeout = "5s";
    cfg.max_wait = "20s";
    let yaml = cfg.yaml().replace(
        "admin:\n  endpoint: 127.0.0.1:0\n",
        &format!(
            "admin:\n  endpoint: 127.0.0.1:0\n  jaeger_ui_url: {}\n",
            jaeger.query_url()
        ),
    );
    tailgate_e2e::init_logging();
    let app = tailgate::app::start(Config::parse(&yaml, "jaeger seed test")?).await?;
    let admin = app.admin_endpoint();
    let metrics = app.metrics.clone();

    let users = UsersService::start(&app.grpc_endpoint(), &dir).await?;
    let (normal, errors, slow) = (NORMAL.to_string(), ERRORS.to_string(), SLOW.to_string());
    let frontend = run_node(
        "jaeger_frontend.mjs",
        &[
            "--users",
            &users.url,
            "--otlp",
            &app.http_endpoint(),
            "--normal",
            &normal,
            "--errors",
            &errors,
            "--slow",
            &slow,
            "--concurrency",
            "8",
        ],
    )
    .await;
    let users_report = users.shutdown().await?;
    let frontend = frontend?;

    // What the clients sent: four spans per trace over two services, the users server span a child of
    // the frontend's client span (the context crossed the HTTP call).
    let mut sent = sent_spans(&frontend, "shop-frontend");
    for (trace, spans) in sent_spans(&users_report, "users") {
        sent.entry(trace).or_default().extend(spans);
    }
    let kinds: BTreeMap<String, String> = frontend["traces"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            (
                t["trace_id"].as_str().unwrap_or_default().to_lowercase(),
                t["kind"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let total = NORMAL + ERRORS + SLOW;
    assert_eq!(kinds.len(), total, "one trace per checkout");
    assert_eq!(sent.len(), total, "spans of exactly the checkouts' traces");
    for (trace, spans) in &sent {
        assert_eq!(spans.len(), 4, "trace {trace}: {spans:?}");
        let client = spans
            .iter()
            .find(|s| s.name.starts_with("lookup "))
            .expect("client span");
        let server = spans
            .iter()
            .find(|s| s.name == "GET /users/{id}")
            .expect("server span");
        assert_eq!(
            server.parent_span_id, client.span_id,
            "trace {trace}: context propagated"
        );
    }
    let mut planted = strings(&frontend["planted"]);
    planted.extend(strings(&users_report["planted"]));
    let needles = pii_needles(&planted);

    // tailgate decided every trace; wait until everything kept has been acknowledged by Jaeger.
    let sent_span_count: usize = sent.values().map(Vec::len).sum();
    let deadline = tokio::time::Instant::now() + WAIT * 2;
    loop {
        let text = metrics.encode();
        let settled = metric_sum(&text, "tailgate_spans_exported_total")
            + metric_sum(&text, "tailgate_spans_sampled_out_total")
            + metric_sum(&text, "tailgate_spans_lost_total");
        if metric_sum(&text, "tailgate_decisions_total") >= total as f64
            && settled >= sent_span_count as f64
        {
            assert_eq!(
                metric_sum(&text, "tailgate_spans_lost_total"),
                0.0,
                "{text}"
            );
            assert_eq!(
                metric_sum(&text, "tailgate_spans_received_total"),
                sent_span_count as f64,
                "every span the SDKs sent was accepted once:\n{text}"
            );
            break;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "{settled} of {sent_span_count} spans settled in tailgate:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Per trace: tailgate's decision, then what Jaeger has.
    let mut kept: BTreeMap<String, String> = BTreeMap::new();
    let mut sampled_normal = 0usize;
    let mut slow_normal = 0usize;
    let mut bodies = 0usize;
    for (trace, kind) in &kinds {
        let why = explain(&admin, trace).await?;
        let (decision, rule) = (why["decision"].as_str(), why["rule"].as_str().unwrap_or(""));
        match kind.as_str() {
            "error" => assert_eq!((decision, rule), (Some("keep"), "errors"), "{why}"),
            "slow" => assert_eq!((decision, rule), (Some("keep"), "slow"), "{why}"),
            _ => match (decision, rule) {
                (Some("keep"), "sample-10pct") => sampled_normal += 1,
                // A normal request that took over 1 s on a loaded machine is a slow trace: checked below
                // against Jaeger's timings, and left out of the sampled share.
                (Some("keep"), "slow") => slow_normal += 1,
                // The probabilistic plugin drops the other 90 % itself (`default: drop` would too).
                _ => assert!(
                    decision == Some("drop") && ["sample-10pct", "default"].contains(&rule),
                    "{why}"
                ),
            },
        }
        let spans = &sent[trace];
        if decision == Some("keep") {
            kept.insert(trace.clone(), rule.to_string());
            let (raw, got) = jaeger.wait_for_trace(trace, spans.len()).await?;
            assert_no_pii(&format!("/api/traces/{trace}"), &raw, &needles);
            if let Err(e) = check_trace(&got, spans, rule) {
                let v3 = jaeger
                    .get(&format!("/api/v3/traces/{trace}?raw_traces=true"))
                    .await?;
                anyhow::bail!(
                    "{e:#}\nsent: {spans:?}\n/api/traces/{trace}: {raw}\n/api/v3 (raw): {}",
                    v3.1
                );
            }
            if rule == "slow" {
                assert!(
                    got.duration_us() > 1_000_000,
                    "trace {trace} kept as slow lasts {} us in Jaeger",
                    got.duration_us()
                );
            }
            let (raw3, ids) = jaeger
                .trace_v3_raw(trace)
                .await?
                .ok_or_else(|| anyhow::anyhow!("v3 API has no trace {trace}"))?;
            assert_no_pii(&format!("/api/v3/traces/{trace}"), &raw3, &needles);
            let mut ids_sorted = ids.clone();
            ids_sorted.sort();
            let mut want: Vec<String> = spans.iter().map(|s| s.span_id.clone()).collect();
            want.sort();
            assert_eq!(
                ids_sorted, want,
                "trace {trace}: every span stored exactly once"
            );
            bodies += 2;
        } else {
            assert!(
                jaeger.trace(trace).await?.is_none(),
                "trace {trace} was dropped by tailgate but is in Jaeger"
            );
        }
    }

    // Nothing but the kept traces, for either service; the service list and operations carry no PII.
    let (raw, services) = jaeger.services().await?;
    assert_no_pii("/api/services", &raw, &needles);
    assert_eq!(
        services.iter().collect::<BTreeSet<_>>(),
        BTreeSet::from([&"shop-frontend".to_string(), &"users".to_string()]),
        "{raw}"
    );
    for service in ["shop-frontend", "users"] {
        let (raw, found) = jaeger
            .search(service, 10_000, Duration::from_secs(3600))
            .await?;
        assert_no_pii(&format!("search service={service}"), &raw, &needles);
        let found: BTreeSet<String> = found.into_iter().collect();
        let want: BTreeSet<String> = kept.keys().cloned().collect();
        assert_eq!(
            found, want,
            "Jaeger's search for {service} finds exactly the kept traces"
        );
        let (status, ops) = jaeger
            .get(&format!("/api/services/{service}/operations"))
            .await?;
        assert_eq!(status, 200, "{ops}");
        assert_no_pii(
            &format!("/api/services/{service}/operations"),
            &ops,
            &needles,
        );
        bodies += 2;
    }

    // The status page's links (admin.jaeger_ui_url) name Jaeger's UI route for the kept trace: the same
    // server answers it (a Go-built Jaeger serves its placeholder page there) and the id in the link is
    // the trace Jaeger has.
    let status = http_json(&format!("{admin}/api/status")).await?;
    let prefix = format!("{}/trace/", jaeger.query_url());
    let mut links = 0;
    for r in status["recent"].as_array().into_iter().flatten() {
        let Some(url) = r["jaeger_url"].as_str() else {
            assert_ne!(r["decision"], "keep", "a kept trace without a link: {r}");
            continue;
        };
        let id = url
            .strip_prefix(&prefix)
            .unwrap_or_else(|| panic!("status page link {url} is not {prefix}<trace id>"));
        assert!(
            kept.contains_key(id),
            "{url} links a trace tailgate did not keep"
        );
        let (code, page) = jaeger.get(&format!("/trace/{id}")).await?;
        assert_eq!(code, 200, "Jaeger answers its UI route {url}: {page}");
        assert!(
            jaeger.trace(id).await?.is_some(),
            "{url}: Jaeger has the trace"
        );
        links += 1;
    }
    assert!(
        links > 0,
        "the status page links some kept traces: {status}"
    );

    // About 10 % of the normal traces: a binomial bound of +-4 standard deviations.
    let (n, p) = ((NORMAL - slow_normal) as f64, 0.1);
    let sd = (n * p * (1.0 - p)).sqrt();
    let share = sampled_normal as f64 / n;
    assert!(
        (sampled_normal as f64 - n * p).abs() <= 4.0 * sd,
        "sample-10pct kept {sampled_normal} of {n} normal traces ({:.1} %), outside 10 % +- 4 sd",
        share * 100.0
    );
    let kept_spans: usize = kept.keys().map(|t| sent[t].len()).sum();
    let text = metrics.encode();
    assert_eq!(
        metric_sum(&text, "tailgate_spans_exported_total"),
        kept_spans as f64,
        "tailgate counted exactly the spans Jaeger has as exported"
    );
    let accepted = jaeger.accepted_spans().await?;
    assert_eq!(
        accepted, kept_spans as f64,
        "Jaeger's receiver accepted each kept span once (otelcol_receiver_accepted_spans)"
    );
    app.shutdown().await;
    eprintln!(
        "jaeger seed ({protocol}): {total} traces ({sent_span_count} spans) from shop-frontend (Node.js) and \
         users (Python); tailgate kept {} traces ({kept_spans} spans) and Jaeger has exactly those: {ERRORS} \
         errors, {SLOW} slow, {sampled_normal} of {n} normal ({:.1} %){}; {} PII values checked absent \
         from {bodies} Jaeger responses",
        kept.len(),
        share * 100.0,
        if slow_normal > 0 {
            format!(" (+{slow_normal} normal traces slower than 1 s, kept as slow)")
        } else {
            String::new()
        },
        needles.len(),
    );
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// One kept trace as Jaeger shows it against what the clients sent: the same spans with the same parents,
/// the right services, `tailgate.rule` on every span, the baggage on the users spans.
fn check_trace(got: &JaegerTrace, sent: &[SentSpan], rule: &str) -> anyhow::Result<()> {
    let want: BTreeMap<String, String> = sent
        .iter()
        .map(|s| (s.span_id.clone(), s.parent_span_id.clone()))
        .collect();
    let trace = &got.trace_id;
    anyhow::ensure!(
        got.spans.len() == sent.len(),
        "trace {trace}: {} spans",
        got.spans.len()
    );
    anyhow::ensure!(
        got.parent_links() == want,
        "trace {trace}: spans and parent links differ"
    );
    for s in &got.spans {
        let what = format!("trace {trace} span {} ({})", s.span_id, s.operation);
        anyhow::ensure!(
            s.tags.get("tailgate.rule").map(String::as_str) == Some(rule),
            "{what}: tailgate.rule is {:?}, not {rule}",
            s.tags.get("tailgate.rule")
        );
        let sent_by = sent
            .iter()
            .find(|x| x.span_id == s.span_id)
            .map(|x| x.service.as_str())
            .unwrap_or("?");
        anyhow::ensure!(
            s.service == sent_by,
            "{what}: in Jaeger under service {:?}, sent by {sent_by:?}",
            s.service
        );
        if s.operation == "GET /users/{id}" {
            anyhow::ensure!(
                s.tags.get("baggage.tenant").map(String::as_str) == Some("acme"),
                "{what}: the baggage did not cross the call: {:?}",
                s.tags
            );
            anyhow::ensure!(
                s.tags.contains_key("baggage.user.email"),
                "{what}: {:?}",
                s.tags
            );
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trace_larger_than_one_grpc_message_arrives_whole_in_jaeger() -> anyhow::Result<()> {
    let jaeger = Jaeger::start().await?;
    let result = run_large(&jaeger).await;
    result.map_err(|e| e.context(jaeger.logs()))
}

async fn run_large(jaeger: &Jaeger) -> anyhow::Result<()> {
    let mut cfg = TestConfig::passthrough_to(jaeger.otlp_grpc_endpoint());
    cfg.policy = seed_policy_section("10s")?;
    cfg.settle = "1s";
    let app = cfg.start().await?;
    let metrics = app.metrics.clone();
    let before = jaeger.metrics().await?;
    let report = python::run_script(
        "jaeger_large_trace.py",
        &[
            "--endpoint",
            &app.grpc_endpoint(),
            "--spans",
            "2500",
            "--payload",
            "2048",
        ],
    )
    .await?;
    let trace = report["trace_id"].as_str().unwrap_or_default().to_string();
    let spans = report["span_count"].as_u64().unwrap_or(0) as usize;
    let encoded = report["encoded_bytes"].as_u64().unwrap_or(0);
    assert_eq!(spans, 2501);
    assert!(
        encoded > 4 * 1024 * 1024,
        "the trace must be larger than one 4 MiB gRPC message: {encoded} bytes"
    );
    let (raw, got) = jaeger.wait_for_trace(&trace, spans).await?;
    let want: BTreeMap<String, String> = report["spans"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            (
                s["span_id"].as_str().unwrap_or_default().to_string(),
                s["parent_span_id"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert_eq!(got.parent_links(), want, "every span with its parent");
    assert!(
        got.spans
            .iter()
            .all(|s| s.tags.get("tailgate.rule").map(String::as_str) == Some("errors"))
    );
    assert_no_pii(
        "the large trace",
        &raw,
        &pii_needles(&strings(&report["planted"])),
    );
    let (_, ids) = jaeger
        .trace_v3_raw(&trace)
        .await?
        .ok_or_else(|| anyhow::anyhow!("v3 API has no trace {trace}"))?;
    assert_eq!(ids.len(), spans, "each span stored once");

    // How it travelled: Jaeger's OTLP/gRPC receiver counts the Export calls it served.
    let after = jaeger.metrics().await?;
    let requests = grpc_export_calls(&after) - grpc_export_calls(&before);
    let text = metrics.encode();
    assert_eq!(
        metric_sum(&text, "tailgate_spans_exported_total"),
        spans as f64
    );
    assert_eq!(
        metric_sum(&text, "tailgate_export_failures_total"),
        0.0,
        "no request was refused: {text}"
    );
    assert!(
        requests >= 2.0,
        "a {encoded}-byte trace needs several export requests under send_batch_max_bytes (3 MiB); Jaeger \
         served {requests}:\n{after}"
    );
    app.shutdown().await;
    eprintln!(
        "jaeger large trace: {spans} spans, {encoded} bytes encoded ({:.1} MiB), exported in {requests} \
         OTLP/gRPC requests, all {spans} spans in Jaeger with their parents",
        encoded as f64 / (1024.0 * 1024.0)
    );
    Ok(())
}

/// Export calls Jaeger's OTLP/gRPC receiver served, from its own metrics (the gRPC server's
/// instrumentation counts every call in its duration histogram).
fn grpc_export_calls(exposition: &str) -> f64 {
    exposition
        .lines()
        .filter(|l| {
            !l.starts_with('#')
                && l.contains("_count")
                && l.contains("rpc_server")
                && l.contains("duration")
                && l.contains("Export")
                && l.contains("TraceService")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
