//! `tailgate replay`: runs recorded traces through a policy offline - the same rules, plugins, redactors
//! and annotation code as the proxy's pipeline, no network - and reports what the policy would do: traces
//! and spans kept and dropped by rule, bytes in and out, redactions by rule, plugin time. This is how a
//! policy is tested before it is deployed.
//!
//! Input is a recording (see [`crate::record`] for the formats: OTLP/JSON lines, or length-delimited
//! protobuf). Every request is validated by the receivers' scanner. Spans are grouped by trace over the
//! whole file, and each trace is decided once all of its spans are read - as if the buffer had waited long
//! enough for every trace (the proxy's timing triggers do not apply offline). The kept, redacted and
//! annotated spans can be written out (`--output`) in either format.

pub mod plugin_test;

use crate::config::Config;
use crate::decisions::KeepInfo;
use crate::explain::RedactionNotes;
use crate::metrics::Metrics;
use crate::otlp::{ExportBuilder, SpanRecord, TraceId, scan_export_request_with};
use crate::pipeline::prepare_kept;
use crate::record::RecordFormat;
use bytes::Bytes;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

/// Largest encoded request written to the output in one record.
const OUTPUT_REQUEST_BYTES: usize = 4 << 20;

/// Why a replay could not run; names the file and the record.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: record {record}: {message}")]
    Record {
        path: PathBuf,
        /// 1-based record (line for JSON) number.
        record: usize,
        message: String,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("policy: {0}")]
    Policy(#[from] crate::policy::PolicyError),
}

/// Reads a recording: each `ExportTraceServiceRequest` as protobuf bytes. The format follows the
/// extension (`.json`/`.jsonl`: OTLP/JSON lines; otherwise length-delimited protobuf), except that a file
/// starting with `{` is read as JSON whatever its name.
pub fn read_recording(path: &Path) -> Result<Vec<Bytes>, ReplayError> {
    let data = std::fs::read(path).map_err(|source| ReplayError::Read {
        path: path.to_owned(),
        source,
    })?;
    let json = RecordFormat::for_path(path) == RecordFormat::Json
        || data.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    let bad = |record: usize, message: String| ReplayError::Record {
        path: path.to_owned(),
        record,
        message,
    };
    let mut out = Vec::new();
    if json {
        for (i, line) in data.split(|b| *b == b'\n').enumerate() {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let body =
                crate::receiver::json_to_protobuf(line).map_err(|e| bad(i + 1, e.to_string()))?;
            out.push(body);
        }
    } else {
        let data = Bytes::from(data);
        let mut at = 0;
        while at < data.len() {
            let record = out.len() + 1;
            let mut rest = &data[at..];
            let before = rest.len();
            let len = prost::decode_length_delimiter(&mut rest)
                .map_err(|e| bad(record, format!("bad length prefix: {e}")))?;
            at += before - rest.len();
            if len > data.len() - at {
                return Err(bad(
                    record,
                    format!(
                        "length prefix says {len} bytes but only {} remain (truncated file?)",
                        data.len() - at
                    ),
                ));
            }
            out.push(data.slice(at..at + len));
            at += len;
        }
    }
    Ok(out)
}

/// Decisions of one rule.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct RuleReport {
    pub kept_traces: u64,
    pub dropped_traces: u64,
    pub kept_spans: u64,
    pub dropped_spans: u64,
}

/// Time spent in one plugin.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PluginTime {
    pub rule: String,
    /// `sampler` or `redactor`.
    pub role: &'static str,
    pub calls: u64,
    pub total_ms: f64,
    pub mean_us: f64,
    pub failures: u64,
}

/// What the policy did to the recording.
#[derive(Debug, Default, Clone, PartialEq, Serialize)]
pub struct ReplayReport {
    pub requests: u64,
    pub traces: u64,
    pub spans_in: u64,
    /// Spans the scanner refused (bad ids), as the receivers would.
    pub spans_rejected: u64,
    /// Encoded size of the recorded requests.
    pub bytes_in: u64,
    pub kept_traces: u64,
    pub kept_spans: u64,
    pub dropped_traces: u64,
    pub dropped_spans: u64,
    /// Spans of kept traces lost because a redactor failed under `on_redactor_failure: drop`.
    pub lost_spans: u64,
    /// Encoded size of what would be exported (redacted and annotated).
    pub bytes_out: u64,
    /// By the rule that decided (`default`, `<rule>:failure`).
    pub by_rule: BTreeMap<String, RuleReport>,
    /// Redaction edits by redactor rule.
    pub redactions_by_rule: BTreeMap<String, u64>,
    /// Redaction edits by redactor rule, field kind, key and action (`rule/field key action`).
    pub redactions_by_field: BTreeMap<String, u64>,
    /// Traces whose redactor failed, by `rule: fallback`.
    pub redaction_fallbacks: BTreeMap<String, u64>,
    pub plugins: Vec<PluginTime>,
    /// Wall time of the decisions and redactions (the file read excluded), milliseconds.
    pub elapsed_ms: f64,
}

/// Runs the recording at `input` through the policy of `config`, writing the kept spans to `output`
/// when given.
pub fn replay(
    config: &Config,
    input: &Path,
    output: Option<&Path>,
) -> Result<ReplayReport, ReplayError> {
    let requests = read_recording(input)?;
    let policy = crate::policy::load(config)?;
    let metrics = Metrics::new();
    let mut report = ReplayReport {
        requests: requests.len() as u64,
        ..ReplayReport::default()
    };
    // Group by trace over the whole file, in first-seen order.
    let mut index: HashMap<TraceId, usize> = HashMap::new();
    let mut traces: Vec<(TraceId, Vec<SpanRecord>)> = Vec::new();
    for (i, body) in requests.iter().enumerate() {
        report.bytes_in += body.len() as u64;
        let scanned = scan_export_request_with(body, &policy.predicates).map_err(|e| {
            ReplayError::Record {
                path: input.to_owned(),
                record: i + 1,
                message: e.to_string(),
            }
        })?;
        report.spans_rejected += scanned.rejected_count();
        for (tid, span) in scanned.spans {
            report.spans_in += 1;
            let at = *index.entry(tid).or_insert_with(|| {
                traces.push((tid, Vec::new()));
                traces.len() - 1
            });
            traces[at].1.push(span);
        }
    }
    report.traces = traces.len() as u64;

    let mut out = match output {
        Some(p) => Some(Output::create(p)?),
        None => None,
    };
    let started = Instant::now();
    let mut builder = ExportBuilder::new();
    for (trace_id, spans) in traces {
        let n = spans.len() as u64;
        let decision = policy.decide(trace_id, &spans, &metrics);
        let r = report.by_rule.entry(decision.rule.to_string()).or_default();
        if !decision.keep {
            r.dropped_traces += 1;
            r.dropped_spans += n;
            report.dropped_traces += 1;
            report.dropped_spans += n;
            continue;
        }
        r.kept_traces += 1;
        r.kept_spans += n;
        report.kept_traces += 1;
        let info = KeepInfo {
            rule: decision.rule.clone(),
            applied: decision.applied,
            rescued_by: None,
        };
        let mut notes = RedactionNotes::default();
        let kept = prepare_kept(
            &policy.redactors,
            trace_id,
            spans,
            &info,
            &metrics,
            Some(&mut notes),
        );
        for note in &notes.applied {
            *report
                .redactions_by_rule
                .entry(note.rule.to_string())
                .or_default() += note.count;
            let key = if note.key.is_empty() {
                format!("{}/{} {}", note.rule, note.field, note.action)
            } else {
                format!("{}/{} {} {}", note.rule, note.field, note.key, note.action)
            };
            *report.redactions_by_field.entry(key).or_default() += note.count;
        }
        if let Some(f) = &notes.fallback {
            *report
                .redaction_fallbacks
                .entry(format!("{}: {}", f.rule, f.action))
                .or_default() += 1;
        }
        let Some(kept) = kept else {
            report.lost_spans += n;
            continue;
        };
        report.kept_spans += kept.spans.len() as u64;
        for (i, s) in kept.spans.iter().enumerate() {
            builder.push(s, kept.patch_of(i).clone());
        }
        if builder.approx_encoded_len() >= OUTPUT_REQUEST_BYTES {
            let b = std::mem::take(&mut builder);
            flush(b, &mut report, out.as_mut())?;
        }
    }
    if !builder.is_empty() {
        flush(builder, &mut report, out.as_mut())?;
    }
    if let Some(o) = out.as_mut() {
        o.finish()?;
    }
    report.elapsed_ms = started.elapsed().as_secs_f64() * 1e3;
    for (r, _) in policy.sampler_plugins() {
        if let Some(s) = r.sampler.stats() {
            report.plugins.push(plugin_time(&r.name, "sampler", &s));
        }
    }
    for r in &policy.redactors.rules {
        if let Some(s) = r.redactor.stats() {
            report.plugins.push(plugin_time(&r.name, "redactor", &s));
        }
    }
    Ok(report)
}

fn plugin_time(rule: &Arc<str>, role: &'static str, s: &crate::plugin::PluginStats) -> PluginTime {
    PluginTime {
        rule: rule.to_string(),
        role,
        calls: s.calls,
        total_ms: s.call_nanos_total as f64 / 1e6,
        mean_us: if s.calls == 0 {
            0.0
        } else {
            s.call_nanos_total as f64 / s.calls as f64 / 1e3
        },
        failures: s.traps + s.timeouts + s.out_of_memory + s.bad_results,
    }
}

fn flush(
    builder: ExportBuilder,
    report: &mut ReplayReport,
    out: Option<&mut Output>,
) -> Result<(), ReplayError> {
    let body = builder.finish();
    report.bytes_out += body.len() as u64;
    if let Some(o) = out {
        o.write(&body)?;
    }
    Ok(())
}

/// The `--output` file.
struct Output {
    path: PathBuf,
    format: RecordFormat,
    out: std::io::BufWriter<std::fs::File>,
}

impl Output {
    fn create(path: &Path) -> Result<Output, ReplayError> {
        let file = std::fs::File::create(path).map_err(|source| ReplayError::Write {
            path: path.to_owned(),
            source,
        })?;
        Ok(Output {
            path: path.to_owned(),
            format: RecordFormat::for_path(path),
            out: std::io::BufWriter::new(file),
        })
    }

    fn write(&mut self, request: &[u8]) -> Result<(), ReplayError> {
        let record = self.format.frame(request).map_err(|m| ReplayError::Write {
            path: self.path.clone(),
            source: std::io::Error::other(m),
        })?;
        self.out
            .write_all(&record)
            .map_err(|source| ReplayError::Write {
                path: self.path.clone(),
                source,
            })
    }

    fn finish(&mut self) -> Result<(), ReplayError> {
        self.out.flush().map_err(|source| ReplayError::Write {
            path: self.path.clone(),
            source,
        })
    }
}

impl ReplayReport {
    /// The report as text, for the terminal.
    pub fn to_text(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let pct = |a: u64, b: u64| {
            if b == 0 {
                0.0
            } else {
                100.0 * a as f64 / b as f64
            }
        };
        let _ = writeln!(
            s,
            "read     {} requests, {} traces, {} spans, {} bytes{}",
            self.requests,
            self.traces,
            self.spans_in,
            self.bytes_in,
            if self.spans_rejected > 0 {
                format!(" ({} spans rejected)", self.spans_rejected)
            } else {
                String::new()
            }
        );
        let _ = writeln!(
            s,
            "kept     {} traces ({:.1} %), {} spans",
            self.kept_traces,
            pct(self.kept_traces, self.traces),
            self.kept_spans
        );
        let _ = writeln!(
            s,
            "dropped  {} traces ({:.1} %), {} spans",
            self.dropped_traces,
            pct(self.dropped_traces, self.traces),
            self.dropped_spans
        );
        if self.lost_spans > 0 {
            let _ = writeln!(
                s,
                "lost     {} spans (redactor failed, on_redactor_failure: drop)",
                self.lost_spans
            );
        }
        let _ = writeln!(
            s,
            "bytes    {} in, {} out ({:.1} %)",
            self.bytes_in,
            self.bytes_out,
            pct(self.bytes_out, self.bytes_in)
        );
        let _ = writeln!(
            s,
            "\nby rule                          kept traces  dropped traces  kept spans  dropped spans"
        );
        for (rule, r) in &self.by_rule {
            let _ = writeln!(
                s,
                "  {rule:<30} {:>11}  {:>14}  {:>10}  {:>13}",
                r.kept_traces, r.dropped_traces, r.kept_spans, r.dropped_spans
            );
        }
        if !self.redactions_by_rule.is_empty() || !self.redaction_fallbacks.is_empty() {
            let _ = writeln!(s, "\nredactions");
            for (rule, n) in &self.redactions_by_rule {
                let _ = writeln!(s, "  {rule:<30} {n:>8} edits");
            }
            for (what, n) in &self.redactions_by_field {
                let _ = writeln!(s, "    {what:<50} {n:>8}");
            }
            for (what, n) in &self.redaction_fallbacks {
                let _ = writeln!(s, "  failed: {what:<22} {n:>8} traces");
            }
        }
        if !self.plugins.is_empty() {
            let _ = writeln!(
                s,
                "\nplugins                          calls    total ms   mean us  failures"
            );
            for p in &self.plugins {
                let _ = writeln!(
                    s,
                    "  {:<30} {:>6} {:>10.1} {:>9.1} {:>9}",
                    format!("{} ({})", p.rule, p.role),
                    p.calls,
                    p.total_ms,
                    p.mean_us,
                    p.failures
                );
            }
        }
        let _ = writeln!(s, "\ndecided and redacted in {:.1} ms", self.elapsed_ms);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        std::env::temp_dir().join(format!("tailgate-replay-{name}-{}", std::process::id()))
    }

    #[test]
    fn both_formats_read_back_what_was_framed() {
        let request = crate::testing::sample_request();
        let body = prost::Message::encode_to_vec(&request);
        for (name, format) in [
            ("r.pb", RecordFormat::Protobuf),
            ("r.json", RecordFormat::Json),
        ] {
            let path = scratch(name);
            let mut data = format.frame(&body).expect("frame");
            data.extend(format.frame(&body).expect("frame"));
            std::fs::write(&path, data).expect("write");
            let read = read_recording(&path).expect("read");
            assert_eq!(read.len(), 2, "{name}");
            for r in read {
                let back: opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest =
                    prost::Message::decode(r).expect("decode");
                assert_eq!(back, request, "{name}");
            }
            let _ = std::fs::remove_file(&path);
        }
    }

    #[test]
    fn a_truncated_or_malformed_recording_is_an_error_naming_the_record() {
        let body = prost::Message::encode_to_vec(&crate::testing::sample_request());
        let path = scratch("truncated.pb");
        let mut data = RecordFormat::Protobuf.frame(&body).expect("frame");
        let full = data.clone();
        data.extend_from_slice(&full[..full.len() / 2]);
        std::fs::write(&path, data).expect("write");
        let err = read_recording(&path).expect_err("truncated").to_string();
        assert!(
            err.contains("record 2") && err.contains("truncated"),
            "{err}"
        );
        let path = scratch("bad.json");
        std::fs::write(&path, "{\"resourceSpans\": []}\n{not json\n").expect("write");
        let err = read_recording(&path).expect_err("malformed").to_string();
        assert!(
            err.contains("record 2") && err.contains("malformed OTLP/JSON"),
            "{err}"
        );
        let err = read_recording(&scratch("missing.pb"))
            .expect_err("missing")
            .to_string();
        assert!(err.contains("cannot read"), "{err}");
    }
}
