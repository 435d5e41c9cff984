//! What the topology's label values may carry: every value that leaves as a metric label or a service
//! graph node (service names, span names, peer names) passes the live redaction policy first, once per
//! distinct value, and span names are cut down to their route template before that.
//!
//! - [`template`]: a span name with the parts that vary per request replaced by placeholders (e-mail
//!   addresses `{email}`, UUIDs `{uuid}`, hex ids `{hex}`, numbers `{n}`, other ids `{id}`, quoted
//!   literals `{s}`, `key={v}` values, the query string `?{query}`), so `GET /users/jane@example.com/42`
//!   becomes one series `GET /users/{email}/{n}` instead of one per user. Byte-level, one pass, no regex.
//! - [`LabelPolicy`]: runs the policy's redactors on label values. Each value is put into a synthetic span
//!   in the field it came from (a service name in the resource's `service.name`, a span name as the span's
//!   name, a peer as the client span's attribute under its own key), the redactors return edits for it as
//!   they would for a real trace, and the edited value is the label. A value the redactors removed, or
//!   could not answer for (trap, timeout, invalid edit), becomes [`REDACTED`]: labels fail closed. The
//!   results are cached (bounded), so a value is checked once, when its series is created, never per span.
//!
//! With no redactors in the policy, values pass as they are (span names still templated): a label then
//! carries what the export carries. In dry-run mode (`policy.redaction.dry_run`) labels are still edited.

use crate::otlp::{SpanRecord, scan_export_request};
use foldhash::HashMap as FastMap;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use std::sync::{Arc, Mutex};

/// Longest label value kept, in bytes (cut on a character boundary).
pub const MAX_LABEL: usize = 128;
/// The label of a value the redactors removed or could not check.
pub const REDACTED: &str = "{redacted}";
/// Trace id of the synthetic spans label values are checked in (never exported: they exist only for the
/// redactor call).
const LABEL_TRACE_ID: u128 = 0x7461_696c_6761_7465_6c61_6265_6c73_0001;

/// Bytes that separate the tokens of a span name.
fn is_delimiter(b: u8) -> bool {
    matches!(
        b,
        b' ' | b'\t'
            | b'\n'
            | b'\r'
            | b'/'
            | b'&'
            | b','
            | b';'
            | b'('
            | b')'
            | b'['
            | b']'
            | b'<'
            | b'>'
            | b'|'
            | b'#'
            | b'\\'
            | b'*'
            | b'+'
    )
}

fn is_uuid(t: &[u8]) -> bool {
    t.len() == 36
        && t.iter().enumerate().all(|(i, &b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

fn contains_ci(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

/// The placeholder a token of a span name stands for, or `None` when the token stays.
fn placeholder(t: &[u8]) -> Option<&'static str> {
    if t.is_empty() {
        return None;
    }
    if t.iter().skip(1).any(|&b| b == b'@') || contains_ci(t, b"%40") {
        return Some("{email}");
    }
    if is_uuid(t) {
        return Some("{uuid}");
    }
    let digits = t.iter().filter(|b| b.is_ascii_digit()).count();
    if digits == 0 {
        return None;
    }
    if digits == t.len() {
        return Some("{n}");
    }
    if t.len() >= 8 && t.iter().all(u8::is_ascii_hexdigit) {
        return Some("{hex}");
    }
    if digits >= 4 || t.len() >= 16 {
        return Some("{id}");
    }
    None
}

/// The route template of a span name (see the module header), at most [`MAX_LABEL`] bytes. Idempotent
/// on its own output (a template is its own template), which lets the topology look a span up by its raw
/// name first: a raw name found among the templates is one.
pub fn template(name: &str, out: &mut String) {
    out.clear();
    let b = name.as_bytes();
    let mut i = 0;
    // Start of the token being read, and whether it directly follows `=`.
    let mut start = 0;
    let mut after_eq = false;
    let flush = |out: &mut String, from: usize, to: usize, after_eq: bool| {
        if from >= to {
            return;
        }
        let tok = &name[from..to];
        match placeholder(tok.as_bytes()) {
            _ if after_eq => out.push_str("{v}"),
            Some(p) => out.push_str(p),
            None => out.push_str(tok),
        }
    };
    while i < b.len() {
        let c = b[i];
        if c == b'?' && i + 1 < b.len() && !b[i + 1].is_ascii_whitespace() {
            flush(out, start, i, after_eq);
            out.push_str("?{query}");
            start = b.len();
            break;
        }
        if c == b'\'' || c == b'"' || c == b'`' {
            flush(out, start, i, after_eq);
            after_eq = false;
            out.push(c as char);
            out.push_str("{s}");
            match b[i + 1..].iter().position(|&x| x == c) {
                Some(close) => {
                    out.push(c as char);
                    i += close + 2;
                    start = i;
                    continue;
                }
                None => {
                    start = b.len();
                    break;
                }
            }
        }
        if c == b'=' || is_delimiter(c) {
            flush(out, start, i, after_eq);
            out.push(c as char);
            after_eq = c == b'=';
            i += 1;
            start = i;
            continue;
        }
        i += 1;
    }
    flush(out, start, b.len(), after_eq);
    cut(out, MAX_LABEL);
}

/// Cuts `s` to at most `max` bytes on a character boundary.
pub fn cut(s: &mut String, max: usize) {
    if s.len() > max {
        let mut at = max;
        while !s.is_char_boundary(at) {
            at -= 1;
        }
        s.truncate(at);
    }
}

/// Where a label value comes from: the field a redactor sees it in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source<'a> {
    /// A resource's `service.name`.
    Service(&'a str),
    /// A span name (already a [`template`]).
    Operation(&'a str),
    /// A client or producer span's attribute naming what it calls (`peer.service`, `db.system.name`,
    /// `server.address`, ...).
    Peer { key: &'static str, value: &'a str },
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Service(Box<str>),
    Operation(Box<str>),
    Peer(&'static str, Box<str>),
}

impl Source<'_> {
    fn key(&self) -> Key {
        match *self {
            Source::Service(v) => Key::Service(v.into()),
            Source::Operation(v) => Key::Operation(v.into()),
            Source::Peer { key, value } => Key::Peer(key, value.into()),
        }
    }

    fn value(&self) -> &str {
        match self {
            Source::Service(v) | Source::Operation(v) => v,
            Source::Peer { value, .. } => value,
        }
    }
}

/// How a label value came out of the policy: counted in `tailgate_topology_label_checks_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checked {
    /// The redactors left it as it was.
    Unchanged,
    /// The redactors edited or removed it.
    Redacted,
    /// A redactor failed on it: the label is [`REDACTED`].
    Failed,
}

/// The label values checked so far, by source, bounded in number.
pub struct LabelPolicy {
    cache: Mutex<FastMap<Key, Arc<str>>>,
    max_cached: usize,
}

impl LabelPolicy {
    /// Remembers at most `max_cached` checked values; past that, values are checked again when asked
    /// (the topology asks only when it creates a series, so that is rare and bounded by its own caps).
    pub fn new(max_cached: usize) -> LabelPolicy {
        LabelPolicy {
            cache: Mutex::new(FastMap::default()),
            max_cached,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FastMap<Key, Arc<str>>> {
        // Inserts only: a poisoned map is still consistent.
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The label of a value checked before, without checking anything.
    pub fn cached(&self, source: Source<'_>) -> Option<Arc<str>> {
        self.lock().get(&source.key()).cloned()
    }

    /// The labels of `sources`, in order: from the cache, or checked now with one redactor call for all
    /// the values not seen before. `checked` is called once for each value checked now.
    pub fn labels(
        &self,
        sources: &[Source<'_>],
        redactors: &dyn LabelRedactor,
        mut checked: impl FnMut(Checked),
    ) -> Vec<Arc<str>> {
        let mut out: Vec<Option<Arc<str>>> = {
            let cache = self.lock();
            sources
                .iter()
                .map(|s| cache.get(&s.key()).cloned())
                .collect()
        };
        let missing: Vec<usize> = (0..sources.len()).filter(|&i| out[i].is_none()).collect();
        if !missing.is_empty() {
            let asked: Vec<Source<'_>> = missing.iter().map(|&i| sources[i]).collect();
            let answers = check(&asked, redactors);
            let mut cache = self.lock();
            for (n, &i) in missing.iter().enumerate() {
                let (label, how) = match &answers {
                    Ok(a) => match &a[n] {
                        Some(v) if v == sources[i].value() => (v.clone(), Checked::Unchanged),
                        Some(v) => (v.clone(), Checked::Redacted),
                        None => (REDACTED.to_owned(), Checked::Redacted),
                    },
                    Err(()) => (REDACTED.to_owned(), Checked::Failed),
                };
                checked(how);
                let label: Arc<str> = label.into();
                if cache.len() < self.max_cached {
                    cache.insert(sources[i].key(), label.clone());
                }
                out[i] = Some(label);
            }
        }
        out.into_iter()
            .map(|l| l.unwrap_or_else(|| REDACTED.into()))
            .collect()
    }
}

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

/// The synthetic request that puts each source in its own field: one resource and one span per source.
fn synthetic(sources: &[Source<'_>]) -> ExportTraceServiceRequest {
    let resource_spans = sources
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let mut span = Span {
                trace_id: LABEL_TRACE_ID.to_be_bytes().to_vec(),
                span_id: (i as u64 + 1).to_be_bytes().to_vec(),
                name: "tailgate.label".into(),
                // Internal: these spans are nobody's client or server.
                kind: 1,
                start_time_unix_nano: 1,
                end_time_unix_nano: 2,
                ..Default::default()
            };
            let mut resource = Resource::default();
            match *s {
                Source::Service(v) => resource.attributes.push(kv("service.name", v)),
                Source::Operation(v) => span.name = v.into(),
                Source::Peer { key, value } => {
                    span.kind = 3;
                    span.attributes.push(kv(key, value));
                }
            }
            ResourceSpans {
                resource: Some(resource),
                scope_spans: vec![ScopeSpans {
                    spans: vec![span],
                    ..Default::default()
                }],
                ..Default::default()
            }
        })
        .collect();
    ExportTraceServiceRequest { resource_spans }
}

/// What the topology needs of the redaction policy: to run it on spans built from label values. The
/// policy's `Redactors` implement it (in `redact.rs`); the topology names no redaction type, so the
/// stage that redacts can record topology without a loop between the two.
pub trait LabelRedactor {
    /// No redactor in the policy: labels go as they are (templated and cut).
    fn is_empty(&self) -> bool;
    /// `spans` as every redactor of the policy leaves them, in order; `None` when one failed or its
    /// edits did not apply (the caller fails closed). Not counted in the redaction metrics.
    fn redact_labels(&self, trace_id: u128, spans: Vec<SpanRecord>) -> Option<Vec<SpanRecord>>;
}

/// Runs the redactors on the sources; each answer is the value as the redactors left it, or `None` when
/// they removed it. `Err` when one of them failed (or the edits did not fit).
fn check(sources: &[Source<'_>], redactors: &dyn LabelRedactor) -> Result<Vec<Option<String>>, ()> {
    let cut_value = |v: &str| {
        let mut v = v.to_owned();
        cut(&mut v, MAX_LABEL);
        v
    };
    if redactors.is_empty() {
        return Ok(sources.iter().map(|s| Some(cut_value(s.value()))).collect());
    }
    let body = bytes::Bytes::from(synthetic(sources).encode_to_vec());
    let Ok(scanned) = scan_export_request(&body) else {
        // The request is built here from valid strings; a refusal would be a bug. Fail closed.
        return Err(());
    };
    if scanned.spans.len() != sources.len() {
        return Err(());
    }
    let spans: Vec<SpanRecord> = scanned.spans.into_iter().map(|(_, s)| s).collect();
    let spans = redactors.redact_labels(LABEL_TRACE_ID, spans).ok_or(())?;
    Ok(sources
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let span = spans.iter().find(|r| r.span_id == i as u64 + 1)?;
            let v = match *s {
                Source::Service(_) => Some(&*span.origin.service_name).filter(|v| !v.is_empty()),
                Source::Operation(_) => Some(span.name()),
                Source::Peer { key, .. } => span
                    .attributes()
                    .find(|a| a.key == key)
                    .and_then(|a| a.value.as_str()),
            }?;
            Some(cut_value(v))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redact::Redactors;

    fn t(name: &str) -> String {
        let mut out = String::new();
        template(name, &mut out);
        out
    }

    #[test]
    fn templates_replace_what_varies_per_request() {
        let cases = [
            (
                "GET /api/users/jane.doe@example.com",
                "GET /api/users/{email}",
            ),
            (
                "GET /api/users/JANE%40EXAMPLE.COM/orders",
                "GET /api/users/{email}/orders",
            ),
            ("GET /orders/12345", "GET /orders/{n}"),
            (
                "GET /orders/550e8400-e29b-41d4-a716-446655440000/items/7",
                "GET /orders/{uuid}/items/{n}",
            ),
            (
                "GET /commits/9fceb02d0ae598e95dc970b74767f19372d61af8",
                "GET /commits/{hex}",
            ),
            ("GET /search?q=jane&page=2", "GET /search?{query}"),
            (
                "charge card 4111 1111 1111 1111",
                "charge card {n} {n} {n} {n}",
            ),
            ("charge 5500-0055-5555-5559", "charge {id}"),
            ("transfer DE89370400440532013000", "transfer {hex}"),
            ("transfer GB82WEST12345698765432", "transfer {id}"),
            ("connect 203.0.113.77", "connect {id}"),
            ("key AKIAIOSFODNN7EXAMPLE", "key {id}"),
            (
                "login user=bob password=hunter2",
                "login user={v} password={v}",
            ),
            (
                "SELECT * FROM users WHERE name = 'Jane Doe'",
                "SELECT * FROM users WHERE name = '{s}'",
            ),
            ("notify \"jane\" now", "notify \"{s}\" now"),
            ("unterminated 'quote jane", "unterminated '{s}"),
            // What stays: route templates, words, versions with few digits, short codes.
            ("GET /api/v1/users/{id}", "GET /api/v1/users/{id}"),
            ("GET /users/:id/profile", "GET /users/:id/profile"),
            ("SELECT orders", "SELECT orders"),
            (
                "oauth2 callback sha256 utf-8",
                "oauth2 callback sha256 utf-8",
            ),
            ("HTTP GET", "HTTP GET"),
            ("what? ok", "what? ok"),
            ("", ""),
        ];
        for (name, want) in cases {
            assert_eq!(t(name), want, "{name}");
        }
    }

    #[test]
    fn templates_are_their_own_templates_and_bounded() {
        let names = [
            "GET /api/users/jane.doe@example.com/orders/12?x=1",
            "a='b' c=\"d\" e=f 1234 abcdef0123456789 ünïcödé 42",
            "x?{query}",
            "'{s}' \"{s}\" k={v}",
        ];
        for n in names {
            let once = t(n);
            assert_eq!(t(&once), once, "{n}");
        }
        let long = "é".repeat(200);
        let out = t(&long);
        assert!(out.len() <= MAX_LABEL && out.is_char_boundary(out.len()));
    }

    #[test]
    fn without_redactors_values_pass_as_they_are() {
        let p = LabelPolicy::new(10);
        let mut checks = Vec::new();
        let labels = p.labels(
            &[Source::Service("svc"), Source::Operation("GET /x/{n}")],
            &Redactors::none(),
            |c| checks.push(c),
        );
        assert_eq!(labels, vec![Arc::<str>::from("svc"), "GET /x/{n}".into()]);
        assert_eq!(checks, vec![Checked::Unchanged, Checked::Unchanged]);
        assert_eq!(p.cached(Source::Service("svc")).as_deref(), Some("svc"));
    }
}
