//! Why a recent trace was kept or dropped: one small [`Explanation`] per decided trace (what made it due,
//! which rule decided, with what probability, which redactions were applied by rule and field - never a
//! value), held in a bounded LRU for `GET /debug/traces/{trace_id}`, plus a short ring of the latest
//! decisions for the status page.
//!
//! What an explanation carries from the spans: the root's service and name as exported (redacted) for a
//! kept trace, only the root's service as the topology labels it (checked against the redaction policy)
//! for a dropped one, attribute keys of redacted fields, and the redactor's reason reduced to
//! `[A-Za-z0-9_.:-]`. Never a value as received.
//!
//! Recording is on the pipeline's hot path, so it is one uncontended mutex per decided trace and a few
//! small allocations (the root span's name and service); redactions are aggregated per (rule, field), and
//! both the number of traces and the notes per trace are capped.

use crate::otlp::{SpanRecord, TraceId};
use crate::plugin::{EditAction, FieldKind, RedactionEdit};
use lru::LruCache;
use serde::Serialize;
use std::collections::VecDeque;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

/// Traces remembered for `GET /debug/traces/{trace_id}` (about 300 bytes each).
pub const DEFAULT_EXPLAINED_TRACES: usize = 4096;
/// Latest decisions listed on the status page.
pub const DEFAULT_RECENT_DECISIONS: usize = 50;
/// Distinct (rule, field, action) redaction notes kept per trace; further ones are only counted.
pub const MAX_REDACTION_NOTES: usize = 32;
/// Longest root span name or service name kept (bytes, cut on a character boundary).
const MAX_NAME: usize = 128;

/// One redaction applied to a trace: the rule, the field it touched and how, and how many times.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RedactionNote {
    /// The redactor rule (`policy.redactors[].name`).
    #[serde(serialize_with = "as_str")]
    pub rule: Arc<str>,
    /// `span_attribute`, `resource_attribute`, `span_name`, `status_message`, `event_attribute`...
    pub field: &'static str,
    /// The attribute key (empty for names and messages). A key, never a value.
    pub key: String,
    /// `remove`, `replace`, `mask`, `hash`, `rename_key`.
    pub action: &'static str,
    /// The plugin's reason (its detector, e.g. `email`), when it gave one.
    pub reason: Option<String>,
    /// Edits of this kind on this trace (over all its spans).
    pub count: u64,
}

/// What the redactors did to one trace, collected while they run.
#[derive(Debug, Default, Clone, PartialEq, Serialize)]
pub struct RedactionNotes {
    pub applied: Vec<RedactionNote>,
    /// Edits past [`MAX_REDACTION_NOTES`] distinct notes: counted, not described.
    pub more: u64,
    /// When a redactor failed: the rule and the fallback that ran (`strict_scrub`, `drop`, `dry_run`).
    pub fallback: Option<RedactionFallback>,
    /// True when the edits were only counted (`policy.redaction.dry_run`).
    pub dry_run: bool,
}

/// A redactor failure and what was done instead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RedactionFallback {
    #[serde(serialize_with = "as_str")]
    pub rule: Arc<str>,
    /// `trap`, `timeout`, `out_of_memory`, `bad_result`.
    pub kind: &'static str,
    pub action: &'static str,
}

impl RedactionNotes {
    /// Adds the edits one rule returned. An attribute the rule renamed is noted under its new key, for
    /// every edit of it: a redactor renames a key because the key itself carries personal data
    /// (`user.jane@example.com`), so the key as received is no more shown than a value.
    pub fn add(&mut self, rule: &Arc<str>, edits: &[RedactionEdit]) {
        let renamed: Vec<(&crate::plugin::FieldRef, &str)> = edits
            .iter()
            .filter_map(|e| match &e.action {
                EditAction::RenameKey(k) => Some((&e.field, k.as_str())),
                _ => None,
            })
            .collect();
        for e in edits {
            let (field, action) = (field_name(e.field.kind), action_name(&e.action));
            let reason = e.reason.as_deref().map(reason_text);
            let key = renamed
                .iter()
                .rev()
                .find(|(f, _)| same_attribute(f, &e.field))
                .map_or(e.field.key.as_str(), |(_, k)| k);
            let found = self.applied.iter().position(|n| {
                n.field == field
                    && n.action == action
                    && n.key == key
                    && *n.rule == **rule
                    && n.reason == reason
            });
            match found {
                Some(i) => self.applied[i].count += 1,
                None if self.applied.len() < MAX_REDACTION_NOTES => {
                    self.applied.push(RedactionNote {
                        rule: rule.clone(),
                        field,
                        key: key.to_owned(),
                        action,
                        reason,
                        count: 1,
                    })
                }
                None => self.more += 1,
            }
        }
    }

    /// Edits recorded (described or not).
    pub fn total(&self) -> u64 {
        self.applied.iter().map(|n| n.count).sum::<u64>() + self.more
    }

    fn merge(&mut self, other: RedactionNotes) {
        for n in other.applied {
            match self.applied.iter().position(|m| {
                m.field == n.field
                    && m.action == n.action
                    && m.key == n.key
                    && m.rule == n.rule
                    && m.reason == n.reason
            }) {
                Some(i) => self.applied[i].count += n.count,
                None if self.applied.len() < MAX_REDACTION_NOTES => self.applied.push(n),
                None => self.more += n.count,
            }
        }
        self.more += other.more;
        self.fallback = self.fallback.take().or(other.fallback);
        self.dry_run |= other.dry_run;
    }
}

/// Whether two edits name the same attribute (kind, owner, item and position; keys may repeat).
fn same_attribute(a: &crate::plugin::FieldRef, b: &crate::plugin::FieldRef) -> bool {
    a.kind == b.kind
        && a.owner == b.owner
        && a.item == b.item
        && a.attribute_index == b.attribute_index
}

/// A plugin's reason as shown: plugin output, so only `[A-Za-z0-9_.:-]` (others become `_`) and at most
/// 64 characters, as its metric label is (a reason is meant to name a detector, never to quote a value).
fn reason_text(r: &str) -> String {
    r.chars()
        .take(64)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn field_name(k: FieldKind) -> &'static str {
    match k {
        FieldKind::ResourceAttribute => "resource_attribute",
        FieldKind::ScopeAttribute => "scope_attribute",
        FieldKind::SpanAttribute => "span_attribute",
        FieldKind::SpanName => "span_name",
        FieldKind::StatusMessage => "status_message",
        FieldKind::EventName => "event_name",
        FieldKind::EventAttribute => "event_attribute",
        FieldKind::LinkAttribute => "link_attribute",
    }
}

fn action_name(a: &EditAction) -> &'static str {
    match a {
        EditAction::Remove => "remove",
        EditAction::Replace(_) => "replace",
        EditAction::Mask(_) => "mask",
        EditAction::Hash => "hash",
        EditAction::RenameKey(_) => "rename_key",
    }
}

/// Why one trace was kept or dropped.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Explanation {
    /// 32 lowercase hex digits.
    #[serde(serialize_with = "hex_id")]
    pub trace_id: TraceId,
    /// When the decision was made (Unix milliseconds).
    pub decided_at_unix_ms: u64,
    /// What made the trace due: `settle`, `idle`, `max_wait`, `size`, `pressure`, `shutdown`.
    pub trigger: &'static str,
    /// `keep` or `drop`.
    pub decision: &'static str,
    /// The rule that decided, `default`, or `<rule>:failure` when the failure policy decided.
    #[serde(serialize_with = "as_str")]
    pub rule: Arc<str>,
    /// The probability the deciding rule gave (1 for the default).
    pub probability: Option<f64>,
    /// Spans decided together (late spans are counted in `late_spans`).
    pub spans: usize,
    /// Spans that arrived after the decision and followed it.
    pub late_spans: u64,
    /// The root span's service (`service.name`), when the root was there: as exported (after redaction)
    /// for kept traces, as the topology metrics label it (checked against the redaction policy) for
    /// dropped ones, never as received.
    pub root_service: Option<String>,
    /// The root span's name as exported (after redaction), for kept traces only: a name can hold personal
    /// data, and dropped traces are never redacted.
    pub root_name: Option<String>,
    /// Redactions applied to the kept spans (late spans included).
    pub redactions: RedactionNotes,
    /// Set when the trace was dropped first and brought back by the second chance (`rescue`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rescued: Option<RescueHistory>,
}

/// A rescued trace's history: the drop, then what brought it back.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RescueHistory {
    /// `late_span` (a late span made a rule keep it) or `request` (`POST /rescue`).
    pub cause: &'static str,
    /// The rule that kept it on the second look, or `request:<reason>`.
    pub rescued_by: String,
    /// The rule that had dropped it, when the drop is still remembered.
    pub dropped_by: Option<String>,
    /// When it was dropped (Unix milliseconds), when remembered.
    pub dropped_at_unix_ms: Option<u64>,
}

fn as_str<S: serde::Serializer>(v: &Arc<str>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(v)
}

fn hex_id<S: serde::Serializer>(id: &TraceId, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{id:032x}"))
}

impl Explanation {
    /// The explanation of a decision just made on `spans`.
    pub fn new(
        trace_id: TraceId,
        trigger: &'static str,
        keep: bool,
        rule: Arc<str>,
        probability: Option<f64>,
        spans: &[SpanRecord],
    ) -> Explanation {
        Explanation {
            trace_id,
            decided_at_unix_ms: unix_ms(),
            trigger,
            decision: if keep { "keep" } else { "drop" },
            rule,
            probability,
            spans: spans.len(),
            late_spans: 0,
            root_service: None,
            root_name: None,
            redactions: RedactionNotes::default(),
            rescued: None,
        }
    }

    /// Notes a dropped trace's root service as the topology metrics label it (already checked against
    /// the redaction policy); nothing when the topology has not labelled it (topology off).
    pub fn set_dropped_root(&mut self, spans: &[SpanRecord], topology: &crate::topology::Topology) {
        self.root_service = spans
            .iter()
            .find(|s| s.is_root())
            .and_then(|r| topology.service_label(&r.origin.service_name))
            .map(|l| cut(&l));
    }

    /// Notes the root span as it is exported (redacted).
    pub fn set_exported_root(&mut self, spans: &[SpanRecord]) {
        if let Some(root) = spans.iter().find(|s| s.is_root()) {
            self.root_service = Some(cut(&root.origin.service_name));
            self.root_name = Some(cut(root.name()));
        }
    }
}

fn cut(s: &str) -> String {
    let mut end = s.len().min(MAX_NAME);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Parses a trace id as given in a URL: 32 hex digits (W3C and Jaeger's form); shorter ids are
/// left-padded with zeros, as Jaeger does for 64-bit ids.
pub fn parse_trace_id(s: &str) -> Result<TraceId, String> {
    if s.is_empty() || s.len() > 32 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "malformed trace id {:?}: expected up to 32 hexadecimal digits",
            s.chars().take(64).collect::<String>()
        ));
    }
    TraceId::from_str_radix(s, 16).map_err(|e| format!("malformed trace id {s:?}: {e}"))
}

/// The recent decisions: an LRU of explanations by trace id and a ring of the latest trace ids.
pub struct DecisionLog {
    inner: Mutex<Inner>,
}

struct Inner {
    traces: LruCache<TraceId, Explanation>,
    recent: VecDeque<TraceId>,
    recent_cap: usize,
}

impl Default for DecisionLog {
    fn default() -> Self {
        DecisionLog::new(DEFAULT_EXPLAINED_TRACES, DEFAULT_RECENT_DECISIONS)
    }
}

impl DecisionLog {
    /// Remembers up to `traces` explanations and lists the latest `recent` decisions (both at least 1).
    pub fn new(traces: usize, recent: usize) -> DecisionLog {
        DecisionLog {
            inner: Mutex::new(Inner {
                traces: LruCache::new(NonZeroUsize::new(traces).unwrap_or(NonZeroUsize::MIN)),
                recent: VecDeque::with_capacity(recent.max(1)),
                recent_cap: recent.max(1),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every update leaves the state consistent, so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a decision.
    pub fn record(&self, e: Explanation) {
        let mut inner = self.lock();
        let id = e.trace_id;
        inner.traces.put(id, e);
        if inner.recent.len() == inner.recent_cap {
            inner.recent.pop_front();
        }
        inner.recent.push_back(id);
    }

    /// Notes spans that arrived after their trace's decision (and what the redactors did to them).
    pub fn record_late(&self, trace_id: TraceId, spans: u64, notes: Option<RedactionNotes>) {
        let mut inner = self.lock();
        if let Some(e) = inner.traces.get_mut(&trace_id) {
            e.late_spans += spans;
            if let Some(n) = notes {
                e.redactions.merge(n);
            }
        }
    }

    /// The explanation of a recently decided trace.
    pub fn get(&self, trace_id: TraceId) -> Option<Explanation> {
        self.lock().traces.peek(&trace_id).cloned()
    }

    /// The latest decisions, newest first.
    pub fn recent(&self) -> Vec<Explanation> {
        let inner = self.lock();
        inner
            .recent
            .iter()
            .rev()
            .filter_map(|id| inner.traces.peek(id).cloned())
            .collect()
    }
}

#[cfg(test)]
#[allow(clippy::single_range_in_vec_init)]
mod tests {
    use super::*;
    use crate::plugin::FieldRef;

    fn edit(kind: FieldKind, key: &str, action: EditAction) -> RedactionEdit {
        RedactionEdit {
            field: FieldRef {
                kind,
                owner: 0,
                item: 0,
                attribute_index: 0,
                key: key.into(),
                is_string: true,
                value_len: 10,
            },
            action,
            reason: Some("email".into()),
        }
    }

    #[test]
    fn notes_aggregate_by_rule_field_and_action_without_values() {
        let mut n = RedactionNotes::default();
        let rule: Arc<str> = "pii".into();
        let edits = vec![
            edit(
                FieldKind::SpanAttribute,
                "user.email",
                EditAction::Replace("secret@example.com".into()),
            ),
            edit(
                FieldKind::SpanAttribute,
                "user.email",
                EditAction::Replace("other@example.com".into()),
            ),
            edit(FieldKind::SpanName, "", EditAction::Mask(vec![0..3])),
        ];
        n.add(&rule, &edits);
        assert_eq!(n.applied.len(), 2);
        assert_eq!(n.applied[0].count, 2);
        assert_eq!(n.applied[0].field, "span_attribute");
        assert_eq!(n.applied[0].action, "replace");
        assert_eq!(n.total(), 3);
        let json = serde_json::to_string(&n).expect("test value");
        assert!(!json.contains("example.com"), "{json}");
    }

    /// A key that carries personal data is renamed by the redactor; the notes show the new key for the
    /// rename and for the other edits of that attribute, never the key as received.
    #[test]
    fn renamed_keys_are_noted_under_their_new_name() {
        let mut n = RedactionNotes::default();
        let rule: Arc<str> = "pii".into();
        let key = "seen.jane@example.com";
        n.add(
            &rule,
            &[
                edit(
                    FieldKind::SpanAttribute,
                    key,
                    EditAction::RenameKey("seen.****@example.com".into()),
                ),
                edit(FieldKind::SpanAttribute, key, EditAction::Mask(vec![0..3])),
            ],
        );
        assert_eq!(n.applied.len(), 2, "{:?}", n.applied);
        assert!(n.applied.iter().all(|a| a.key == "seen.****@example.com"));
        let json = serde_json::to_string(&n).expect("test value");
        assert!(!json.contains("jane@"), "{json}");
    }

    #[test]
    fn notes_are_capped() {
        let mut n = RedactionNotes::default();
        let rule: Arc<str> = "pii".into();
        let edits: Vec<_> = (0..MAX_REDACTION_NOTES + 5)
            .map(|i| edit(FieldKind::SpanAttribute, &format!("k{i}"), EditAction::Hash))
            .collect();
        n.add(&rule, &edits);
        assert_eq!(n.applied.len(), MAX_REDACTION_NOTES);
        assert_eq!(n.more, 5);
    }

    #[test]
    fn log_is_bounded_and_lists_newest_first() {
        let log = DecisionLog::new(3, 2);
        for id in 1..=4u128 {
            log.record(Explanation::new(
                id,
                "settle",
                id % 2 == 0,
                "r".into(),
                None,
                &[],
            ));
        }
        assert!(log.get(1).is_none(), "evicted");
        assert_eq!(log.get(4).expect("test value").decision, "keep");
        let recent: Vec<_> = log.recent().iter().map(|e| e.trace_id).collect();
        assert_eq!(recent, vec![4, 3]);
        log.record_late(4, 3, None);
        assert_eq!(log.get(4).expect("test value").late_spans, 3);
    }

    #[test]
    fn trace_ids_parse_strictly() {
        assert_eq!(
            parse_trace_id("0af7651916cd43dd8448eb211c80319c").expect("test value"),
            0x0af7651916cd43dd8448eb211c80319c
        );
        assert_eq!(parse_trace_id("ff").expect("test value"), 0xff);
        assert!(parse_trace_id("").is_err());
        assert!(parse_trace_id("xyz").is_err());
        assert!(parse_trace_id(&"1".repeat(33)).is_err());
        assert!(parse_trace_id("+1").is_err());
    }
}
