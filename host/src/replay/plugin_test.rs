//! `tailgate plugin test PLUGIN [--config JSON] TRACES`: one plugin, sampler or redactor, run over
//! recorded traces outside any policy, for plugin authors in any language. It prints, per trace, the
//! sampler's decision (verdict, probability, reason) or the redactor's edits (which field, which action,
//! never the original value), and the cost of the call; then a summary. Traces come from the same files
//! as `tailgate replay` ([`super::read_recording`]: `--record` files, OTLP/JSON lines, the file
//! exporter's output), grouped by trace id over the whole file. A call that traps, times out, runs out of
//! memory or returns something the contract forbids is reported on its trace, and makes the command exit
//! non-zero.

use super::{ReplayError, read_recording};
use crate::otlp::{SpanRecord, TraceId, scan_export_request};
use crate::plugin::{
    EditAction, FieldKind, PluginError, PluginRuntime, PluginSpec, PluginWorld, RuntimeSettings,
    Verdict,
};
use serde::Serialize;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// What to run.
#[derive(Debug, Clone)]
pub struct PluginTest {
    /// A `.wasm` component or `builtin:NAME`.
    pub plugin: PathBuf,
    /// The configuration handed to `init`, as JSON text.
    pub config: String,
    /// The recorded traces.
    pub traces: PathBuf,
    /// Deadline of one call (production default: 5 ms).
    pub call_timeout: Duration,
    /// Linear memory cap of the instance (production default: 64 MiB).
    pub memory_limit: usize,
}

/// Why the test could not run at all (a failing call is a result, not an error).
#[derive(Debug, thiserror::Error)]
pub enum PluginTestError {
    #[error(transparent)]
    Traces(#[from] ReplayError),
    #[error(transparent)]
    Plugin(#[from] PluginError),
    #[error("--config is not JSON: {0}")]
    Config(String),
}

/// One trace's result.
#[derive(Debug, Clone, Serialize)]
pub struct TraceResult {
    /// 32 lowercase hex digits.
    pub trace_id: String,
    pub spans: usize,
    /// `keep`, `drop`, `abstain` (a sampler), `redact` (a redactor) or `failure`.
    pub outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probability: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// A redactor's edits, one line each.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub edits: Vec<String>,
    /// `trap`, `timeout`, `out_of_memory` or `bad_result`, with the message.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    /// Wall time of the call, marshalling included, microseconds.
    pub call_us: f64,
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub struct PluginTestReport {
    pub plugin: String,
    /// `sampler` or `redactor`.
    pub world: &'static str,
    /// Contract version the component implements.
    pub contract: &'static str,
    /// Compile (or cache load), link, instantiation and `init`, milliseconds.
    pub load_ms: f64,
    pub from_cache: bool,
    pub traces: Vec<TraceResult>,
    pub failures: usize,
    pub mean_call_us: f64,
    pub max_call_us: f64,
    pub call_timeout_ms: f64,
}

impl PluginTestReport {
    /// Whether every call answered (the exit status).
    pub fn ok(&self) -> bool {
        self.failures == 0
    }

    /// The text report: a line per trace (and per edit), then a summary.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = writeln!(
            out,
            "{}: {} (contract {}), loaded in {:.1} ms{}",
            self.plugin,
            self.world,
            self.contract,
            self.load_ms,
            if self.from_cache {
                " (compiled code from the cache)"
            } else {
                ""
            }
        );
        let mut counts: Vec<(&str, usize)> = Vec::new();
        for t in &self.traces {
            match counts.iter_mut().find(|(o, _)| *o == t.outcome) {
                Some((_, n)) => *n += 1,
                None => counts.push((t.outcome, 1)),
            }
            let _ = write!(
                out,
                "trace {} ({} spans): {}",
                t.trace_id, t.spans, t.outcome
            );
            if let Some(p) = t.probability {
                let _ = write!(out, " p={p}");
            }
            if let Some(r) = &t.reason {
                let _ = write!(out, " \"{}\"", r.escape_debug());
            }
            if t.outcome == "redact" {
                let _ = write!(out, " {} edits", t.edits.len());
            }
            if let Some(f) = &t.failure {
                let _ = write!(out, " {f}");
            }
            let _ = writeln!(out, " [{:.1} us]", t.call_us);
            for e in &t.edits {
                let _ = writeln!(out, "  {e}");
            }
        }
        let summary: Vec<String> = counts.iter().map(|(o, n)| format!("{n} {o}")).collect();
        let _ = writeln!(
            out,
            "{} traces: {}; call mean {:.1} us, max {:.1} us (deadline {} ms); {} failures",
            self.traces.len(),
            if summary.is_empty() {
                "none".to_owned()
            } else {
                summary.join(", ")
            },
            self.mean_call_us,
            self.max_call_us,
            self.call_timeout_ms,
            self.failures
        );
        out
    }
}

/// Loads the plugin, reads the traces and calls the plugin once per trace.
pub fn run(test: &PluginTest) -> Result<PluginTestReport, PluginTestError> {
    serde_json::from_str::<serde_json::Value>(&test.config)
        .map_err(|e| PluginTestError::Config(e.to_string()))?;
    let traces = read_traces(test)?;
    let runtime = PluginRuntime::new(RuntimeSettings {
        default_deadline: test.call_timeout,
        default_memory_limit: test.memory_limit,
        // Generous: a Python or JavaScript runtime on a busy laptop; the load time is printed.
        init_deadline: Duration::from_secs(30),
        ..RuntimeSettings::default()
    })?;
    let info = runtime.inspect(&test.plugin)?;
    let spec = PluginSpec::new(
        test.plugin.display().to_string(),
        &test.plugin,
        test.config.clone(),
    );
    let started = Instant::now();
    let mut results = Vec::with_capacity(traces.len());
    let (world, from_cache, load_ms);
    match info.world {
        PluginWorld::Sampler => {
            let plugin = runtime.load_sampler(&spec)?;
            load_ms = started.elapsed().as_secs_f64() * 1e3;
            from_cache = plugin.stats().from_cache;
            world = "sampler";
            for (trace_id, spans) in &traces {
                let t0 = Instant::now();
                let answer = plugin.decide(*trace_id, spans);
                let call_us = t0.elapsed().as_secs_f64() * 1e6;
                let mut r = result(*trace_id, spans.len(), call_us);
                match answer {
                    Ok(v) => {
                        r.outcome = match v.verdict {
                            Verdict::Keep => "keep",
                            Verdict::Drop => "drop",
                            Verdict::Abstain => "abstain",
                        };
                        r.probability = v.probability;
                        r.reason = v.reason;
                    }
                    Err(f) => r.failure = Some(format!("{}: {f}", f.kind())),
                }
                results.push(r);
            }
        }
        PluginWorld::Redactor => {
            let plugin = runtime.load_redactor(&spec)?;
            load_ms = started.elapsed().as_secs_f64() * 1e3;
            from_cache = plugin.stats().from_cache;
            world = "redactor";
            for (trace_id, spans) in &traces {
                let t0 = Instant::now();
                let answer = plugin.redact(*trace_id, spans);
                let call_us = t0.elapsed().as_secs_f64() * 1e6;
                let mut r = result(*trace_id, spans.len(), call_us);
                match answer {
                    Ok(edits) => {
                        r.outcome = "redact";
                        r.edits = edits.iter().map(|e| describe_edit(e, spans)).collect();
                    }
                    Err(f) => r.failure = Some(format!("{}: {f}", f.kind())),
                }
                results.push(r);
            }
        }
    }
    let failures = results.iter().filter(|r| r.failure.is_some()).count();
    for r in results.iter_mut().filter(|r| r.failure.is_some()) {
        r.outcome = "failure";
    }
    let calls: Vec<f64> = results.iter().map(|r| r.call_us).collect();
    Ok(PluginTestReport {
        plugin: test.plugin.display().to_string(),
        world,
        contract: info.version,
        load_ms,
        from_cache,
        failures,
        mean_call_us: if calls.is_empty() {
            0.0
        } else {
            calls.iter().sum::<f64>() / calls.len() as f64
        },
        max_call_us: calls.iter().copied().fold(0.0, f64::max),
        call_timeout_ms: test.call_timeout.as_secs_f64() * 1e3,
        traces: results,
    })
}

fn result(trace_id: TraceId, spans: usize, call_us: f64) -> TraceResult {
    TraceResult {
        trace_id: format!("{trace_id:032x}"),
        spans,
        outcome: "",
        probability: None,
        reason: None,
        edits: Vec::new(),
        failure: None,
        call_us,
    }
}

/// The recording's spans grouped by trace, in first-seen order; every request validated by the
/// receivers' scanner.
fn read_traces(test: &PluginTest) -> Result<Vec<(TraceId, Vec<SpanRecord>)>, ReplayError> {
    let mut index: HashMap<TraceId, usize> = HashMap::new();
    let mut traces: Vec<(TraceId, Vec<SpanRecord>)> = Vec::new();
    for (i, body) in read_recording(&test.traces)?.iter().enumerate() {
        let scanned = scan_export_request(body).map_err(|e| ReplayError::Record {
            path: test.traces.clone(),
            record: i + 1,
            message: e.to_string(),
        })?;
        for (tid, span) in scanned.spans {
            let at = *index.entry(tid).or_insert_with(|| {
                traces.push((tid, Vec::new()));
                traces.len() - 1
            });
            traces[at].1.push(span);
        }
    }
    Ok(traces)
}

/// One edit as a line: where (span by index and id, resource or scope by index), the key, the action.
/// The original value is never printed; a replacement is (it is the plugin's output).
fn describe_edit(e: &crate::plugin::RedactionEdit, spans: &[SpanRecord]) -> String {
    let f = &e.field;
    let span = |i: u32| {
        spans.get(i as usize).map_or(format!("span #{i}"), |s| {
            format!("span #{i} ({:016x})", s.span_id)
        })
    };
    let at = match f.kind {
        FieldKind::ResourceAttribute => format!("resource #{} attribute `{}`", f.owner, f.key),
        FieldKind::ScopeAttribute => format!("scope #{} attribute `{}`", f.owner, f.key),
        FieldKind::SpanAttribute => format!("{} attribute `{}`", span(f.owner), f.key),
        FieldKind::SpanName => format!("{} name", span(f.owner)),
        FieldKind::StatusMessage => format!("{} status message", span(f.owner)),
        FieldKind::EventName => format!("{} event #{} name", span(f.owner), f.item),
        FieldKind::EventAttribute => {
            format!("{} event #{} attribute `{}`", span(f.owner), f.item, f.key)
        }
        FieldKind::LinkAttribute => {
            format!("{} link #{} attribute `{}`", span(f.owner), f.item, f.key)
        }
    };
    let action = match &e.action {
        EditAction::Remove => "remove".to_owned(),
        EditAction::Replace(s) => format!("replace with \"{}\"", s.escape_debug()),
        EditAction::Mask(ranges) => {
            let r: Vec<String> = ranges
                .iter()
                .map(|r| format!("{}..{}", r.start, r.end))
                .collect();
            format!("mask bytes {}", r.join(", "))
        }
        EditAction::Hash => "hash".to_owned(),
        EditAction::RenameKey(k) => format!("rename key to `{}`", k.escape_debug()),
    };
    match &e.reason {
        Some(reason) => format!("{at}: {action} ({reason})"),
        None => format!("{at}: {action}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory under the system's temp dir, per test.
    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "tailgate-plugin-test-{}-{name}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }

    fn write_traces(dir: &std::path::Path) -> PathBuf {
        use crate::testing::{kv_str, request, span_in};
        use prost::Message;
        let mut error = span_in(7, 2, 1, "db", 10, 20);
        error.status = Some(opentelemetry_proto::tonic::trace::v1::Status {
            code: 2,
            message: String::new(),
        });
        let mut ok = span_in(8, 1, 0, "GET /", 10, 20);
        ok.attributes = vec![kv_str("user.email", "jane@example.com")];
        let mut file = Vec::new();
        for req in [
            request("svc", vec![span_in(7, 1, 0, "GET /", 10, 20), error]),
            request("svc", vec![ok]),
        ] {
            req.encode_length_delimited(&mut file).expect("vec grows");
        }
        let path = dir.join("traces.pb");
        std::fs::write(&path, file).expect("write");
        path
    }

    fn test(plugin: &str, dir: &std::path::Path) -> PluginTest {
        PluginTest {
            plugin: PathBuf::from(plugin),
            config: "{}".into(),
            traces: write_traces(dir),
            call_timeout: Duration::from_secs(1),
            memory_limit: 64 << 20,
        }
    }

    #[test]
    #[cfg(feature = "builtin-plugins")]
    fn a_builtin_sampler_decides_each_trace() {
        let dir = temp_dir("sampler");
        let report = run(&test("builtin:keep-errors", &dir)).expect("runs");
        assert_eq!(report.world, "sampler");
        let outcomes: Vec<&str> = report.traces.iter().map(|t| t.outcome).collect();
        assert_eq!(outcomes, ["keep", "abstain"]);
        assert!(report.ok());
        let text = report.to_text();
        assert!(text.contains("2 traces: 1 keep, 1 abstain"), "{text}");
    }

    #[test]
    #[cfg(feature = "builtin-plugins")]
    fn a_builtin_redactor_lists_edits_without_values() {
        let dir = temp_dir("redactor");
        let report = run(&test("builtin:pii", &dir)).expect("runs");
        assert_eq!(report.world, "redactor");
        let text = report.to_text();
        assert!(text.contains("attribute `user.email`"), "{text}");
        assert!(!text.contains("jane@example.com"), "{text}");
    }

    #[test]
    fn bad_config_json_and_missing_files_are_named() {
        let dir = temp_dir("errors");
        let mut t = test("builtin:keep-errors", &dir);
        t.config = "{nope".into();
        let e = run(&t).expect_err("bad json");
        assert!(e.to_string().contains("--config is not JSON"), "{e}");
        let mut t = test("builtin:keep-errors", &dir);
        t.traces = dir.join("missing.pb");
        let e = run(&t).expect_err("missing");
        assert!(e.to_string().contains("missing.pb"), "{e}");
    }
}
