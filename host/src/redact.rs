//! Redaction of kept traces: runs the policy's redactor plugins, applies the edits they return to the
//! encoded spans, audits what changed without recording any value, and fails closed when a redactor
//! cannot be trusted.
//!
//! # How a trace is redacted
//!
//! ```text
//!  kept spans ─► redactor 1 ─► edits ─► validate + apply ─► redactor 2 ─► ... ─► exporter
//!                   │ trap / timeout / invalid edit
//!                   └──► on_redactor_failure: strict_scrub (allow-listed keys only) | drop (counted lost)
//! ```
//!
//! - Edits come back from the plugin host already resolved to [`FieldRef`]s (index in range, masks on
//!   character boundaries, remove/rename only on attributes). [`apply`] checks them again against the
//!   decoded protobuf (an edit that does not fit is a failure, never a silent skip), decodes only the
//!   spans, resources and scopes that are edited, and re-encodes them. Ids, parent ids and timestamps are
//!   never touched: no edit can name them.
//! - Spans whose resource or scope was edited are turned back into [`SpanRecord`]s by re-scanning them
//!   with the receiver's validating scanner; spans where only their own strings changed are re-encoded
//!   by prost from the decoded span (always well-formed, UTF-8 strings) and keep their ids, times and
//!   origin ([`SpanRecord::reencoded`]), so a redacted span is exactly as valid as a received one.
//! - Every edited span gets `tailgate.redacted.count` (int: edits on the span, its resource and its scope)
//!   and `tailgate.redacted.rules` (the redactor rule names, comma-separated): never a value or a reason.
//! - The `hash` action is HMAC-SHA256 with the configured secret: `hmac:<key id>:<32 hex digits>`.
//! - Values keep their types: `replace` and `hash` make a string of any value (arrays and kvlists whole),
//!   a `mask` keeps the type except that a masked bool, int or double becomes a string, and a mask of an
//!   array or kvlist (ranges of its JSON text) edits only the elements it covers (`redact/nested.rs`).
//! - Dry-run mode counts the edits in metrics and changes nothing.

mod apply;
mod hash;
mod nested;
mod scrub;
mod splice;

pub use apply::{ApplyError, SPLICE_SPAN_EDITS, apply, apply_without_splicing};
pub use hash::KeyedHasher;
pub use scrub::{DEFAULT_STRICT_ALLOW_LIST, strict_scrub};

use crate::config::{RedactionConfig, RedactorFailurePolicy};
use crate::explain::{RedactionFallback, RedactionNotes};
use crate::metrics::{Metrics, PluginLabels, RedactionFallbackLabels, RedactionLabels};
use crate::otlp::{SpanRecord, TraceId};
use crate::plugin::{FieldRef, PluginFailure, RedactionEdit};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Span attribute with the number of edits applied to a span (its own fields, its resource, its scope).
pub const AUDIT_COUNT_KEY: &str = "tailgate.redacted.count";
/// Span attribute with the names of the redactor rules that edited a span, comma-separated.
pub const AUDIT_RULES_KEY: &str = "tailgate.redacted.rules";
/// The rule name recorded when the strict fallback scrub ran.
pub const STRICT_SCRUB_RULE: &str = "strict_scrub";
/// Most distinct `(rule, reason)` metric label pairs; past it reasons are counted as `other`.
const MAX_REASON_LABELS: usize = 256;

/// Something that returns edits for a kept trace: a redactor plugin, or a fake in tests.
pub trait TraceRedactor: Send + Sync {
    fn redact(
        &self,
        trace_id: TraceId,
        spans: &[SpanRecord],
    ) -> Result<Vec<RedactionEdit>, PluginFailure>;

    /// The plugin's counters, for the status page (`None` when it is not a plugin).
    fn stats(&self) -> Option<crate::plugin::PluginStats> {
        None
    }
}

impl TraceRedactor for crate::plugin::RedactorPlugin {
    fn redact(
        &self,
        trace_id: TraceId,
        spans: &[SpanRecord],
    ) -> Result<Vec<RedactionEdit>, PluginFailure> {
        crate::plugin::RedactorPlugin::redact(self, trace_id, spans)
    }

    fn stats(&self) -> Option<crate::plugin::PluginStats> {
        Some(crate::plugin::RedactorPlugin::stats(self))
    }
}

/// One configured redactor.
pub struct RedactorRule {
    /// `policy.redactors[].name`: recorded in the audit attribute and metrics.
    pub name: Arc<str>,
    pub redactor: Arc<dyn TraceRedactor>,
}

/// How edits are applied, from `policy.redaction`.
#[derive(Debug, Clone)]
pub struct RedactionSettings {
    pub hasher: KeyedHasher,
    pub dry_run: bool,
    /// Keys the strict fallback scrub keeps.
    pub strict_allow_list: HashSet<String>,
    /// Whether the strict fallback scrub replaces span and event names.
    pub strict_scrub_names: bool,
}

impl RedactionSettings {
    /// Settings from the config. Without a `hash_key`, a random key is made (see [`KeyedHasher::ephemeral`]).
    pub fn from_config(c: &RedactionConfig) -> RedactionSettings {
        let hasher = match &c.hash_key {
            Some(k) => KeyedHasher::new(k.as_bytes(), c.hash_key_id.as_deref().unwrap_or("k1")),
            None => KeyedHasher::ephemeral(),
        };
        let strict_allow_list = match &c.strict_allow_list {
            Some(l) => l.iter().cloned().collect(),
            None => DEFAULT_STRICT_ALLOW_LIST
                .iter()
                .map(|k| (*k).to_owned())
                .collect(),
        };
        RedactionSettings {
            hasher,
            dry_run: c.dry_run,
            strict_allow_list,
            strict_scrub_names: c.strict_scrub_names,
        }
    }
}

impl Default for RedactionSettings {
    fn default() -> Self {
        RedactionSettings::from_config(&RedactionConfig::default())
    }
}

/// The redaction part of the policy: the redactors in order, how to apply their edits, and what to do
/// when one fails.
pub struct Redactors {
    pub rules: Vec<RedactorRule>,
    pub settings: RedactionSettings,
    pub on_failure: RedactorFailurePolicy,
    /// `(rule, reason)` label pairs seen, to cap metric cardinality.
    reasons: Mutex<HashSet<(Arc<str>, String)>>,
}

impl Default for Redactors {
    fn default() -> Self {
        Redactors::none()
    }
}

impl std::fmt::Debug for Redactors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.rules.iter().map(|r| &*r.name).collect();
        f.debug_struct("Redactors")
            .field("rules", &names)
            .field("dry_run", &self.settings.dry_run)
            .field("on_failure", &self.on_failure)
            .finish()
    }
}

/// What happened to one trace.
#[derive(Debug)]
pub enum Outcome {
    /// The spans to export (redacted, scrubbed, or unchanged when nothing matched).
    Export(Vec<SpanRecord>),
    /// A redactor failed and the policy is `drop`: nothing may be exported. Already counted.
    Dropped,
}

impl crate::topology::LabelRedactor for Redactors {
    fn is_empty(&self) -> bool {
        Redactors::is_empty(self)
    }

    fn redact_labels(&self, trace_id: u128, spans: Vec<SpanRecord>) -> Option<Vec<SpanRecord>> {
        let mut spans = spans;
        for rule in &self.rules {
            let edits = rule.redactor.redact(trace_id, &spans).ok()?;
            if !edits.is_empty() {
                spans = apply(&spans, &edits, &rule.name, &self.settings.hasher)
                    .ok()?
                    .spans;
            }
        }
        Some(spans)
    }
}

impl Redactors {
    /// No redactors: traces pass unchanged.
    pub fn none() -> Redactors {
        Redactors::new(
            Vec::new(),
            RedactionSettings::default(),
            RedactorFailurePolicy::StrictScrub,
        )
    }

    pub fn new(
        rules: Vec<RedactorRule>,
        settings: RedactionSettings,
        on_failure: RedactorFailurePolicy,
    ) -> Redactors {
        Redactors {
            rules,
            settings,
            on_failure,
            reasons: Mutex::new(HashSet::new()),
        }
    }

    /// True when no redactor is configured.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Runs every redactor on a kept trace, in order, each on the output of the previous one. On a
    /// failure the configured fallback applies (the trace is scrubbed or dropped, and counted).
    pub fn redact(&self, trace_id: TraceId, spans: Vec<SpanRecord>, metrics: &Metrics) -> Outcome {
        self.redact_noting(trace_id, spans, metrics, None)
    }

    /// [`Redactors::redact`], also noting in `notes` which rule edited which field how (never a value),
    /// and the fallback when a redactor failed: what `GET /debug/traces/{id}` and replay report.
    pub fn redact_noting(
        &self,
        trace_id: TraceId,
        spans: Vec<SpanRecord>,
        metrics: &Metrics,
        mut notes: Option<&mut RedactionNotes>,
    ) -> Outcome {
        if self.rules.is_empty() || spans.is_empty() {
            return Outcome::Export(spans);
        }
        let started = Instant::now();
        let mut current = spans;
        let mut edited = HashSet::new();
        for rule in &self.rules {
            let result = rule
                .redactor
                .redact(trace_id, &current)
                .map_err(|f| (f.kind(), f.to_string()))
                .and_then(|edits| {
                    if self.settings.dry_run {
                        return Ok((edits, None));
                    }
                    apply(&current, &edits, &rule.name, &self.settings.hasher)
                        .map(|applied| (edits, Some(applied)))
                        .map_err(|e| ("bad_result", e.to_string()))
                });
            metrics.record_plugin_call(
                &rule.name,
                crate::health::PluginRole::Redactor,
                result.as_ref().err().map(|(kind, _)| *kind),
            );
            match result {
                Ok((edits, applied)) => {
                    let mode = if applied.is_some() {
                        "applied"
                    } else {
                        "dry_run"
                    };
                    self.count_edits(&rule.name, &edits, mode, metrics);
                    if let Some(n) = notes.as_deref_mut() {
                        n.add(&rule.name, &edits);
                        n.dry_run |= applied.is_none();
                    }
                    if let Some(a) = applied {
                        edited.extend(a.edited_span_ids);
                        current = a.spans;
                    }
                }
                Err((kind, message)) => {
                    metrics
                        .plugin_failures
                        .get_or_create(&PluginLabels {
                            plugin: rule.name.to_string(),
                            kind,
                        })
                        .inc();
                    let outcome = self.fail(&rule.name, kind, &message, current, metrics, started);
                    if let Some(n) = notes {
                        n.fallback = Some(RedactionFallback {
                            rule: rule.name.clone(),
                            kind,
                            action: self.fallback_action(),
                        });
                    }
                    return outcome;
                }
            }
        }
        metrics.redacted_spans.inc_by(edited.len() as u64);
        metrics
            .redaction_latency
            .observe(started.elapsed().as_secs_f64());
        Outcome::Export(current)
    }

    fn fail(
        &self,
        rule: &str,
        kind: &str,
        message: &str,
        spans: Vec<SpanRecord>,
        metrics: &Metrics,
        started: Instant,
    ) -> Outcome {
        let n = spans.len() as u64;
        let action = self.fallback_action();
        tracing::warn!(
            rule,
            kind,
            error = message,
            action,
            spans = n,
            "redactor failed; failing closed"
        );
        metrics
            .redaction_fallbacks
            .get_or_create(&RedactionFallbackLabels {
                rule: rule.to_owned(),
                action,
            })
            .inc();
        metrics
            .redaction_latency
            .observe(started.elapsed().as_secs_f64());
        match action {
            "dry_run" => Outcome::Export(spans),
            "strict_scrub" => match strict_scrub(&spans, &self.settings) {
                Ok(scrubbed) => {
                    metrics.redaction_scrubbed_spans.inc_by(n);
                    metrics.redacted_spans.inc_by(n);
                    Outcome::Export(scrubbed)
                }
                Err(e) => {
                    // The scrub re-encodes spans that were received valid; failing here would be a bug.
                    // Still, nothing unscrubbed may leave.
                    tracing::error!(rule, error = %e, "strict scrub failed; dropping the trace");
                    metrics.lost("redactor_failed", n);
                    Outcome::Dropped
                }
            },
            _ => {
                metrics.lost("redactor_failed", n);
                Outcome::Dropped
            }
        }
    }

    /// What runs instead of a failed redactor: `dry_run`, `strict_scrub` or `drop`.
    fn fallback_action(&self) -> &'static str {
        if self.settings.dry_run {
            "dry_run"
        } else {
            match self.on_failure {
                RedactorFailurePolicy::StrictScrub => "strict_scrub",
                RedactorFailurePolicy::Drop => "drop",
            }
        }
    }

    fn count_edits(
        &self,
        rule: &Arc<str>,
        edits: &[RedactionEdit],
        mode: &'static str,
        metrics: &Metrics,
    ) {
        for e in edits {
            let reason = self.reason_label(rule, e.reason.as_deref());
            metrics
                .redactions
                .get_or_create(&RedactionLabels {
                    rule: rule.to_string(),
                    reason,
                    mode,
                })
                .inc();
        }
    }

    /// A metric label for a plugin's reason: only `[A-Za-z0-9_.:-]`, at most 64 bytes, at most
    /// [`MAX_REASON_LABELS`] distinct pairs (a reason is plugin output and must not blow up the registry).
    fn reason_label(&self, rule: &Arc<str>, reason: Option<&str>) -> String {
        let Some(r) = reason.filter(|r| !r.is_empty()) else {
            return "none".into();
        };
        let clean: String = r
            .chars()
            .take(64)
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-') {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let mut seen = self.reasons.lock().unwrap_or_else(|p| p.into_inner());
        let key = (rule.clone(), clean);
        if seen.contains(&key) {
            return key.1;
        }
        if seen.len() >= MAX_REASON_LABELS {
            return "other".into();
        }
        let label = key.1.clone();
        seen.insert(key);
        label
    }
}

/// A field reference as a short description for error messages (never the value).
pub(crate) fn describe(f: &FieldRef) -> String {
    format!(
        "{:?} owner {} item {} attribute {}",
        f.kind, f.owner, f.item, f.attribute_index
    )
}

#[cfg(test)]
mod tests;
