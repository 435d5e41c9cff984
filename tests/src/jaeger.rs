//! A real Jaeger v2 as the downstream of the end-to-end tests: the `jaeger` binary that
//! `scripts/peers.sh jaeger` builds from its Go module (`tests/peers/jaeger/go.mod`), run as a child
//! process with in-memory storage on free loopback ports, and a small client of its query HTTP API.
//!
//! Jaeger v2 is an OpenTelemetry Collector distribution configured by YAML; [`Jaeger::start`] writes one
//! with only what the tests need: the `otlp` receiver (gRPC and HTTP), the `jaeger_storage` extension with
//! a `memory` backend, `jaeger_query` (the HTTP API and UI route on one port, its gRPC API on another)
//! and the `jaeger_storage_exporter`, plus the Collector's own metrics on a Prometheus port (the tests
//! read the OTLP receiver's request counts there). Every port is a free 127.0.0.1 port, so tests run in
//! parallel and never collide with a developer's Jaeger on the default ports.
//!
//! [`Jaeger::stop`] and [`Jaeger::restart`] stop the process and start it again on the same ports (an
//! outage as tailgate sees it). Memory storage loses every trace at a stop: a test that restarts Jaeger
//! counts what arrived before the stop through the query API first (see the fault tests).
//!
//! The binary is `$TAILGATE_JAEGER`. Without it the tests fail with a message naming
//! `scripts/peers.sh`; they never skip.

use crate::{WAIT, free_port};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

/// What to run when the Jaeger binary is missing.
pub const SETUP_HINT: &str = "build Jaeger v2 with `scripts/peers.sh jaeger` and set TAILGATE_JAEGER to the path it prints (`eval \"$(scripts/peers.sh jaeger | grep ^TAILGATE_)\"`; scripts/test.sh does both)";

/// The Jaeger v2 binary: `$TAILGATE_JAEGER`, checked to exist.
pub fn jaeger_binary() -> anyhow::Result<PathBuf> {
    let Some(p) = std::env::var_os("TAILGATE_JAEGER") else {
        anyhow::bail!("TAILGATE_JAEGER is not set: {SETUP_HINT}");
    };
    let p = PathBuf::from(p);
    anyhow::ensure!(
        p.is_file(),
        "TAILGATE_JAEGER={} does not exist: {SETUP_HINT}",
        p.display()
    );
    Ok(p)
}

/// How long [`Jaeger::stop`] waits after SIGTERM before SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(2);

/// The loopback ports one Jaeger listens on; kept across [`Jaeger::restart`].
#[derive(Debug, Clone, Copy)]
pub struct JaegerPorts {
    pub otlp_grpc: u16,
    pub otlp_http: u16,
    /// The query service's HTTP server: `/api/...` and the UI's routes (`/`, `/search`, `/trace/{id}`).
    pub query_http: u16,
    pub query_grpc: u16,
    /// The Collector's own metrics (Prometheus text at `/metrics`).
    pub metrics: u16,
}

/// A running Jaeger v2 with memory storage; killed when dropped.
pub struct Jaeger {
    pub ports: JaegerPorts,
    binary: PathBuf,
    dir: PathBuf,
    child: Option<tokio::process::Child>,
    /// How many times the process was started (the log of each start goes to `jaeger-<n>.log`).
    starts: u32,
    http: reqwest::Client,
}

impl Jaeger {
    /// Starts Jaeger on free loopback ports and returns once its OTLP receivers accept connections and its
    /// query API answers.
    pub async fn start() -> anyhow::Result<Jaeger> {
        let binary = jaeger_binary()?;
        let ports = JaegerPorts {
            otlp_grpc: free_port()?,
            otlp_http: free_port()?,
            query_http: free_port()?,
            query_grpc: free_port()?,
            metrics: free_port()?,
        };
        let dir = std::env::temp_dir().join(format!(
            "tailgate-e2e-jaeger-{}-{}",
            std::process::id(),
            ports.query_http
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("config.yaml"), config_yaml(&ports))?;
        let mut jaeger = Jaeger {
            ports,
            binary,
            dir,
            child: None,
            starts: 0,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()?,
        };
        jaeger.spawn().await?;
        Ok(jaeger)
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        self.starts += 1;
        let log = self.dir.join(format!("jaeger-{}.log", self.starts));
        let out = std::fs::File::create(&log)?;
        let child = tokio::process::Command::new(&self.binary)
            .arg("--config")
            .arg(self.dir.join("config.yaml"))
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out.try_clone()?))
            .stderr(Stdio::from(out))
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| anyhow::anyhow!("cannot start {}: {e}", self.binary.display()))?;
        self.child = Some(child);
        let ready = self.wait_ready().await;
        ready.map_err(|e| e.context(self.logs()))
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + WAIT;
        let services = format!("{}/api/services", self.query_url());
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                anyhow::bail!("jaeger exited early ({status})");
            }
            let listening = [self.ports.otlp_grpc, self.ports.otlp_http]
                .iter()
                .all(|p| {
                    std::net::TcpStream::connect_timeout(
                        &std::net::SocketAddr::from(([127, 0, 0, 1], *p)),
                        Duration::from_millis(100),
                    )
                    .is_ok()
                });
            if listening
                && let Ok(r) = self.http.get(&services).send().await
                && r.status().is_success()
            {
                return Ok(());
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "jaeger did not listen on its OTLP ports and answer {services} within {WAIT:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops Jaeger (SIGTERM, then SIGKILL if it has not exited within [`STOP_GRACE`]: its gRPC server
    /// waits for open calls, and a frozen client's call never ends); its memory storage, and so every
    /// trace it held, is gone. Its ports refuse connections until [`Jaeger::restart`].
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        if let Some(pid) = child.id() {
            let _ = tokio::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await;
        }
        if tokio::time::timeout(STOP_GRACE, child.wait())
            .await
            .is_err()
        {
            child.start_kill()?;
            child.wait().await?;
        }
        Ok(())
    }

    /// Starts Jaeger again on the same ports (empty: memory storage) and waits until it is ready.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop().await?;
        self.spawn().await
    }

    /// Adds a receiver to the traces pipeline beside `otlp` and restarts Jaeger with it (empty, on the
    /// same ports): `name` and its YAML, the lines under `receivers:` indented by two spaces (the Kafka
    /// tests add Jaeger's `kafka` receiver this way).
    pub async fn add_receiver(&mut self, name: &str, yaml: &str) -> anyhow::Result<()> {
        let path = self.dir.join("config.yaml");
        let config = std::fs::read_to_string(&path)?;
        anyhow::ensure!(
            config.contains("      receivers: [otlp]\n") && config.contains("\nreceivers:\n"),
            "tests/src/jaeger.rs: the configuration no longer has the shape add_receiver edits"
        );
        let config = config
            .replace(
                "      receivers: [otlp]\n",
                &format!("      receivers: [otlp, {name}]\n"),
            )
            .replace("\nreceivers:\n", &format!("\nreceivers:\n{yaml}"));
        std::fs::write(&path, config)?;
        self.restart().await
    }

    /// Whether the process is running (not stopped, not exited).
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// `http://127.0.0.1:PORT` of the OTLP/gRPC receiver.
    pub fn otlp_grpc_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports.otlp_grpc)
    }

    /// `http://127.0.0.1:PORT` of the OTLP/HTTP receiver (without `/v1/traces`).
    pub fn otlp_http_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports.otlp_http)
    }

    /// `http://127.0.0.1:PORT` of the query service: the API under `/api/` and the UI's routes.
    pub fn query_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports.query_http)
    }

    /// Every start's log, for failure messages.
    pub fn logs(&self) -> String {
        (1..=self.starts)
            .map(|n| {
                let path = self.dir.join(format!("jaeger-{n}.log"));
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                // The tail is what explains a failure; a whole log of a long run is noise.
                let tail: String = {
                    let lines: Vec<&str> = text.lines().collect();
                    lines[lines.len().saturating_sub(40)..].join("\n")
                };
                format!("--- jaeger start {n} ({}) ---\n{tail}", path.display())
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// `GET {query_url}{path}`: the status and the body as text.
    pub async fn get(&self, path: &str) -> anyhow::Result<(u16, String)> {
        let r = self
            .http
            .get(format!("{}{path}", self.query_url()))
            .send()
            .await?;
        let status = r.status().as_u16();
        Ok((status, r.text().await?))
    }

    /// `GET {query_url}{path}` of any query API route: the raw body and its JSON, `None` on 404 (a trace
    /// or service Jaeger does not have); any other non-200 answer is an error.
    pub async fn get_json(&self, path: &str) -> anyhow::Result<Option<(String, Value)>> {
        let (status, body) = self.get(path).await?;
        if status == 404 {
            return Ok(None);
        }
        anyhow::ensure!(status == 200, "GET {path}: {status} {body}");
        let v = serde_json::from_str(&body)
            .map_err(|e| anyhow::anyhow!("GET {path}: not JSON ({e}): {body}"))?;
        Ok(Some((body, v)))
    }

    /// `GET /api/services`: the raw body and the service names.
    pub async fn services(&self) -> anyhow::Result<(String, Vec<String>)> {
        let (raw, v) = self
            .get_json("/api/services")
            .await?
            .ok_or_else(|| anyhow::anyhow!("/api/services: 404"))?;
        let names = v["data"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        Ok((raw, names))
    }

    /// `GET /api/traces/{id}` (the API the UI uses): the raw body and the trace, or `None` when Jaeger
    /// does not have it.
    pub async fn trace(&self, trace_id: &str) -> anyhow::Result<Option<(String, JaegerTrace)>> {
        let Some((raw, v)) = self.get_json(&format!("/api/traces/{trace_id}")).await? else {
            return Ok(None);
        };
        let data = &v["data"][0];
        anyhow::ensure!(
            data.is_object(),
            "/api/traces/{trace_id} has no data[0]: {raw}"
        );
        Ok(Some((raw, JaegerTrace::from_v1(data)?)))
    }

    /// `GET /api/v3/traces/{id}?raw_traces=true`: the trace as OTLP JSON exactly as stored, without the
    /// query service's adjusters (which would merge duplicate spans and so hide a double delivery).
    /// Returns the raw body and the span ids in storage order (a duplicate appears twice), or `None`.
    pub async fn trace_v3_raw(
        &self,
        trace_id: &str,
    ) -> anyhow::Result<Option<(String, Vec<String>)>> {
        let Some((raw, v)) = self
            .get_json(&format!("/api/v3/traces/{trace_id}?raw_traces=true"))
            .await?
        else {
            return Ok(None);
        };
        let mut ids = Vec::new();
        for rs in v["result"]["resourceSpans"]
            .as_array()
            .into_iter()
            .flatten()
        {
            for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                for s in ss["spans"].as_array().into_iter().flatten() {
                    ids.push(s["spanId"].as_str().unwrap_or_default().to_lowercase());
                }
            }
        }
        Ok(Some((raw, ids)))
    }

    /// Every span of `service`'s traces that started in the last hour, exactly as stored:
    /// `GET /api/v3/traces?query.service_name=...&query.raw_traces=true` (no adjusters, so a span stored
    /// twice is listed twice). Returns `(trace id, span id)` pairs in lower-case hex, in storage order.
    pub async fn stored_spans(&self, service: &str) -> anyhow::Result<Vec<(String, String)>> {
        let now = std::time::SystemTime::now();
        let hour = Duration::from_secs(3600);
        let rfc3339 = |t: std::time::SystemTime| -> anyhow::Result<String> {
            let d = t.duration_since(std::time::UNIX_EPOCH)?;
            Ok(format_rfc3339(d.as_secs()))
        };
        let path = format!(
            "/api/v3/traces?query.service_name={service}&query.start_time_min={}&query.start_time_max={}&query.num_traces=100000&query.raw_traces=true",
            rfc3339(now - hour)?,
            rfc3339(now + hour)?,
        );
        let Some((_, v)) = self.get_json(&path).await? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for rs in v["result"]["resourceSpans"]
            .as_array()
            .into_iter()
            .flatten()
        {
            for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                for s in ss["spans"].as_array().into_iter().flatten() {
                    let id = |k: &str| s[k].as_str().unwrap_or_default().to_lowercase();
                    out.push((id("traceId"), id("spanId")));
                }
            }
        }
        Ok(out)
    }

    /// `GET /api/traces?service=...&limit=...` over the last `lookback`: the raw body and the trace ids
    /// found (lower-case hex, as the API prints them).
    pub async fn search(
        &self,
        service: &str,
        limit: usize,
        lookback: Duration,
    ) -> anyhow::Result<(String, Vec<String>)> {
        let end = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_micros()
            + 60_000_000;
        let start = end.saturating_sub(lookback.as_micros() + 60_000_000);
        let path = format!("/api/traces?service={service}&limit={limit}&start={start}&end={end}");
        let (raw, v) = self
            .get_json(&path)
            .await?
            .ok_or_else(|| anyhow::anyhow!("{path}: 404"))?;
        let ids = v["data"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t["traceID"].as_str().map(normalise_trace_id))
            .collect();
        Ok((raw, ids))
    }

    /// Jaeger's own metrics (the Collector's telemetry, Prometheus text).
    pub async fn metrics(&self) -> anyhow::Result<String> {
        let r = self
            .http
            .get(format!("http://127.0.0.1:{}/metrics", self.ports.metrics))
            .send()
            .await?;
        Ok(r.text().await?)
    }

    /// Spans Jaeger's OTLP receiver has accepted so far (`otelcol_receiver_accepted_spans_total`, both
    /// transports), since this start.
    pub async fn accepted_spans(&self) -> anyhow::Result<f64> {
        Ok(crate::otlp::metric_sum(
            &self.metrics().await?,
            "otelcol_receiver_accepted_spans_total",
        ))
    }

    /// Polls `GET /api/traces/{id}` until the trace has at least `spans` spans (the test's bound
    /// [`WAIT`]); returns it.
    pub async fn wait_for_trace(
        &self,
        trace_id: &str,
        spans: usize,
    ) -> anyhow::Result<(String, JaegerTrace)> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let got = self.trace(trace_id).await?;
            let have = got.as_ref().map_or(0, |(_, t)| t.spans.len());
            if have >= spans
                && let Some(t) = got
            {
                return Ok(t);
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "trace {trace_id} has {have} of {spans} spans in Jaeger after {WAIT:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Jaeger {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The configuration of one test Jaeger: OTLP in, memory storage, the query API; nothing else listens.
fn config_yaml(p: &JaegerPorts) -> String {
    format!(
        r#"# Written by tailgate's end-to-end tests (tests/src/jaeger.rs).
service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: detailed
      readers:
        - pull:
            exporter:
              prometheus:
                host: 127.0.0.1
                port: {metrics}
    logs:
      level: info

extensions:
  jaeger_query:
    storage:
      traces: memstore
    # Jaeger would trace its own queries into the same storage ("jaeger" in /api/services).
    enable_tracing: false
    http:
      endpoint: 127.0.0.1:{query_http}
    grpc:
      endpoint: 127.0.0.1:{query_grpc}
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 100000

receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{otlp_grpc}
      http:
        endpoint: 127.0.0.1:{otlp_http}

exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
"#,
        metrics = p.metrics,
        query_http = p.query_http,
        query_grpc = p.query_grpc,
        otlp_grpc = p.otlp_grpc,
        otlp_http = p.otlp_http,
    )
}

/// A trace id as the query API prints it compared with one from an SDK: lower case, 32 hex digits (the
/// v1 API drops leading zeros of a 64-bit-high-half-zero id).
pub fn normalise_trace_id(id: &str) -> String {
    format!("{:0>32}", id.to_lowercase())
}

/// One span of `/api/traces/{id}` (the v1 JSON the UI reads).
#[derive(Debug, Clone)]
pub struct JaegerSpan {
    pub span_id: String,
    /// The `CHILD_OF` reference's span id, empty for a root.
    pub parent_span_id: String,
    pub operation: String,
    pub service: String,
    /// Tags as `key -> value` rendered as a string.
    pub tags: BTreeMap<String, String>,
    /// Start (Unix microseconds) and duration (microseconds).
    pub start_us: u64,
    pub duration_us: u64,
}

/// A trace of `/api/traces/{id}`.
#[derive(Debug, Clone)]
pub struct JaegerTrace {
    pub trace_id: String,
    pub spans: Vec<JaegerSpan>,
}

impl JaegerTrace {
    /// Reads `data[0]` of `/api/traces/{id}`: spans with `spanID`, `references`, `tags` and `processID`
    /// into `processes`.
    pub fn from_v1(data: &Value) -> anyhow::Result<JaegerTrace> {
        let trace_id = normalise_trace_id(data["traceID"].as_str().unwrap_or_default());
        let processes = &data["processes"];
        let mut spans = Vec::new();
        for s in data["spans"].as_array().into_iter().flatten() {
            let parent_span_id = s["references"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|r| r["refType"] == "CHILD_OF")
                .and_then(|r| r["spanID"].as_str())
                .unwrap_or_default()
                .to_lowercase();
            let tags = s["tags"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|t| {
                    let v = match &t["value"] {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    (t["key"].as_str().unwrap_or_default().to_string(), v)
                })
                .collect();
            let pid = s["processID"].as_str().unwrap_or_default();
            spans.push(JaegerSpan {
                span_id: s["spanID"].as_str().unwrap_or_default().to_lowercase(),
                parent_span_id,
                operation: s["operationName"].as_str().unwrap_or_default().into(),
                service: processes[pid]["serviceName"]
                    .as_str()
                    .unwrap_or_default()
                    .into(),
                tags,
                start_us: s["startTime"].as_u64().unwrap_or(0),
                duration_us: s["duration"].as_u64().unwrap_or(0),
            });
        }
        anyhow::ensure!(!spans.is_empty(), "trace {trace_id} has no spans");
        Ok(JaegerTrace { trace_id, spans })
    }

    /// From the earliest start to the latest end of its spans, in microseconds.
    pub fn duration_us(&self) -> u64 {
        let start = self.spans.iter().map(|s| s.start_us).min().unwrap_or(0);
        let end = self
            .spans
            .iter()
            .map(|s| s.start_us + s.duration_us)
            .max()
            .unwrap_or(0);
        end.saturating_sub(start)
    }

    /// `span id -> parent span id` of every span.
    pub fn parent_links(&self) -> BTreeMap<String, String> {
        self.spans
            .iter()
            .map(|s| (s.span_id.clone(), s.parent_span_id.clone()))
            .collect()
    }
}

/// The seed policy of `examples/tailgate.yaml` (its `policy:` section: the rules `errors`, `slow`,
/// `sample-10pct`, the `pii` redactor and the failure policies) for [`crate::proxy::TestConfig::policy`],
/// with every plugin call given `call_timeout` (a
/// preempted call on a loaded test machine must not be decided by the failure policy). Fails if the file
/// no longer has what is rewritten, so the tests cannot silently drift from the example.
pub fn seed_policy_section(call_timeout: &str) -> anyhow::Result<String> {
    let path = crate::repo_root().join("examples/tailgate.yaml");
    let text = std::fs::read_to_string(&path)?;
    let start = text
        .find("\npolicy:\n")
        .ok_or_else(|| anyhow::anyhow!("{} has no `policy:` section", path.display()))?
        + "\npolicy:\n".len();
    let len = text[start..]
        .find("\nadmin:")
        .ok_or_else(|| anyhow::anyhow!("{}: no `admin:` after `policy:`", path.display()))?;
    let section = format!("{}\n", text[start..start + len].trim_end());
    anyhow::ensure!(
        section.contains("plugin: builtin:") && section.contains("      call_timeout: 100ms\n"),
        "{}'s policy no longer has built-in plugins and the redactor's call_timeout: update tailgate_e2e::jaeger",
        path.display()
    );
    let mut out = String::new();
    for line in section.replace("      call_timeout: 100ms\n", "").lines() {
        out.push_str(line);
        out.push('\n');
        if line.trim_start().starts_with("plugin: ") {
            let indent = line.len() - line.trim_start().len();
            out.push_str(&format!(
                "{}call_timeout: {call_timeout}\n",
                " ".repeat(indent)
            ));
        }
    }
    Ok(out)
}

/// `secs` since the Unix epoch as RFC 3339 in UTC (`2026-12-02T15:04:05Z`), for the v3 API's time
/// bounds (civil-from-days, Howard Hinnant's algorithm; no date crate for one format).
pub fn format_rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// `GET url` (any server: tailgate's admin API, Jaeger's): fails unless it answers 200 with JSON.
pub async fn http_json(url: &str) -> anyhow::Result<Value> {
    let r = reqwest::Client::new()
        .get(url)
        .timeout(Duration::from_secs(10))
        .send()
        .await?;
    let status = r.status();
    let body = r.text().await?;
    anyhow::ensure!(status.is_success(), "GET {url}: {status} {body}");
    serde_json::from_str(&body).map_err(|e| anyhow::anyhow!("GET {url}: not JSON ({e}): {body}"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339_of_known_instants() {
        assert_eq!(super::format_rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::format_rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(super::format_rfc3339(1_798_819_445), "2027-01-01T16:04:05Z");
    }
}
