//! A redactor's answer, whatever a hostile plugin returns: the host's check of the raw edits against the
//! packed trace, the application of the edits to the encoded spans, and the fail-closed fallback. Also
//! applies edits the check would have refused, straight to `apply`, which must refuse them itself.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use tailgate::config::RedactorFailurePolicy;
use tailgate::fuzzing::{WitEdit, WitEditAction, WitMaskRange, resolve_redactor_edits};
use tailgate::metrics::Metrics;
use tailgate::otlp::{SpanRecord, TraceId};
use tailgate::plugin::{EditAction, FieldKind, FieldRef, PluginFailure, RedactionEdit, pack};
use tailgate::redact::{
    KeyedHasher, Outcome, RedactionSettings, RedactorRule, Redactors, TraceRedactor, apply,
    apply_without_splicing, strict_scrub,
};
use tailgate_fuzz::trace::{TRACE_ID, TraceSpec};

#[derive(Arbitrary, Debug)]
enum Action {
    Remove,
    Replace(String),
    Mask(Vec<(u16, u16)>),
    Hash,
    RenameKey(String),
}

#[derive(Arbitrary, Debug)]
struct Edit {
    field: u16,
    action: Action,
    reason: Option<String>,
}

#[derive(Arbitrary, Debug)]
struct RawEdit {
    kind: u8,
    owner: u8,
    item: u8,
    attribute_index: u8,
    action: Action,
}

#[derive(Arbitrary, Debug)]
struct Input {
    trace: TraceSpec,
    edits: Vec<Edit>,
    raw_edits: Vec<RawEdit>,
    drop_on_failure: bool,
    dry_run: bool,
}

/// A redactor that answers what the fuzzer chose.
struct Canned(Result<Vec<RedactionEdit>, PluginFailure>);

impl TraceRedactor for Canned {
    fn redact(&self, _: TraceId, _: &[SpanRecord]) -> Result<Vec<RedactionEdit>, PluginFailure> {
        self.0.clone()
    }
}

fn metrics() -> &'static Arc<Metrics> {
    static M: OnceLock<Arc<Metrics>> = OnceLock::new();
    M.get_or_init(Metrics::new)
}

fn hasher() -> &'static KeyedHasher {
    static H: OnceLock<KeyedHasher> = OnceLock::new();
    H.get_or_init(|| KeyedHasher::new(b"fuzz key", "k1"))
}

/// Built once: the default settings hash with a random key, which would make runs non-deterministic.
fn settings(dry_run: bool) -> &'static RedactionSettings {
    static S: OnceLock<[RedactionSettings; 2]> = OnceLock::new();
    &S.get_or_init(|| {
        [false, true].map(|dry_run| RedactionSettings {
            hasher: hasher().clone(),
            dry_run,
            ..RedactionSettings::default()
        })
    })[usize::from(dry_run)]
}

fn wit_action(a: &Action, value_len: u32) -> WitEditAction {
    match a {
        Action::Remove => WitEditAction::Remove,
        Action::Replace(s) => WitEditAction::Replace(s.clone()),
        Action::Hash => WitEditAction::Hash,
        Action::RenameKey(s) => WitEditAction::RenameKey(s.clone()),
        // Mostly in range (so the check passes often enough to reach `apply`), sometimes just outside.
        Action::Mask(r) => WitEditAction::Mask(
            r.iter()
                .take(8)
                .map(|&(s, l)| WitMaskRange {
                    start: u32::from(s) % (value_len + 2),
                    len: u32::from(l) % (value_len + 2),
                })
                .collect(),
        ),
    }
}

fn host_action(a: &Action) -> EditAction {
    match a {
        Action::Remove => EditAction::Remove,
        Action::Replace(s) => EditAction::Replace(s.clone()),
        Action::Hash => EditAction::Hash,
        Action::RenameKey(s) => EditAction::RenameKey(s.clone()),
        Action::Mask(r) => EditAction::Mask(
            r.iter()
                .take(8)
                .map(|&(s, l)| {
                    let (s, l) = (u32::from(s % 64), u32::from(l % 64));
                    s..s + l
                })
                .collect(),
        ),
    }
}

const KINDS: [FieldKind; 8] = [
    FieldKind::ResourceAttribute,
    FieldKind::ScopeAttribute,
    FieldKind::SpanAttribute,
    FieldKind::SpanName,
    FieldKind::StatusMessage,
    FieldKind::EventName,
    FieldKind::EventAttribute,
    FieldKind::LinkAttribute,
];

/// What an applied redaction must preserve: the same spans (by id, parent and timestamps), each still
/// decodable, unedited ones byte for byte.
fn check_applied(before: &[SpanRecord], after: &[SpanRecord], edited: &[u64]) {
    assert_eq!(
        before.len(),
        after.len(),
        "redaction lost or invented spans"
    );
    let by_id: HashMap<u64, &SpanRecord> = before.iter().map(|s| (s.span_id, s)).collect();
    for s in after {
        let orig = by_id
            .get(&s.span_id)
            .expect("a span id the trace did not have");
        assert_eq!(
            (s.parent_span_id, s.start_unix_nano, s.end_unix_nano),
            (
                orig.parent_span_id,
                orig.start_unix_nano,
                orig.end_unix_nano
            ),
            "redaction changed ids or timestamps"
        );
        if !edited.contains(&s.span_id) {
            assert_eq!(s.raw, orig.raw, "an unedited span changed");
        }
        tailgate_fuzz::check_span(s);
    }
    for id in edited {
        assert!(by_id.contains_key(id));
    }
}

/// `apply` (span attribute edits spliced into the encoded span) and `apply_without_splicing` (every
/// edited span decoded and re-encoded by prost) agree: both refuse, or both give the same spans as
/// decoded messages (re-encoded canonically) and the same edited span ids.
fn check_same_as_decoded(spans: &[SpanRecord], edits: &[RedactionEdit]) {
    use opentelemetry_proto::tonic::trace::v1::Span;
    use prost::Message;
    let a = apply(spans, edits, "fuzz", hasher());
    let b = apply_without_splicing(spans, edits, "fuzz", hasher());
    assert_eq!(
        a.is_ok(),
        b.is_ok(),
        "{:?} vs {:?}",
        a.as_ref().err(),
        b.as_ref().err()
    );
    let (Ok(a), Ok(b)) = (a, b) else { return };
    // Compared as prost's canonical encoding of the decoded spans (a NaN double is not equal to itself).
    let decoded = |out: &[SpanRecord]| {
        let mut v: Vec<(u64, Vec<u8>)> = out
            .iter()
            .map(|s| {
                let span = Span::decode(&s.raw[..]).expect("applied spans decode");
                (s.span_id, span.encode_to_vec())
            })
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        decoded(&a.spans),
        decoded(&b.spans),
        "spliced and decoded edits differ"
    );
    let (mut x, mut y) = (a.edited_span_ids, b.edited_span_ids);
    x.sort_unstable();
    y.sort_unstable();
    assert_eq!(x, y);
}

fuzz_target!(|input: Input| {
    let spans = input.trace.spans("");
    if spans.is_empty() {
        return;
    }
    let packed = pack(&spans);
    for f in &packed.wit.fields {
        let end = f.value.offset as usize + f.value.len as usize;
        assert!(
            end <= packed.wit.text.len(),
            "packed field outside the text"
        );
    }
    let n_fields = packed.fields.len() as u32;
    let wit_edits: Vec<WitEdit> = input
        .edits
        .iter()
        .take(16)
        .map(|e| {
            let field = u32::from(e.field) % (n_fields + 1);
            let value_len = packed.fields.get(field as usize).map_or(0, |f| f.value_len);
            WitEdit {
                field,
                action: wit_action(&e.action, value_len),
                reason: e.reason.clone(),
            }
        })
        .collect();
    let resolved = resolve_redactor_edits(&packed, wit_edits);
    if let Ok(edits) = &resolved {
        for e in edits {
            assert!(e.reason.as_ref().is_none_or(|r| r.len() <= 128));
        }
        if let Ok(applied) = apply(&spans, edits, "fuzz", hasher()) {
            check_applied(&spans, &applied.spans, &applied.edited_span_ids);
        }
        check_same_as_decoded(&spans, edits);
    }

    // The whole redaction step, with the fuzzer's result standing in for the plugin's.
    let settings = settings(input.dry_run).clone();
    let policy = if input.drop_on_failure {
        RedactorFailurePolicy::Drop
    } else {
        RedactorFailurePolicy::StrictScrub
    };
    let answer = resolved.map_err(PluginFailure::BadResult);
    let redactors = Redactors::new(
        vec![RedactorRule {
            name: "fuzz".into(),
            redactor: Arc::new(Canned(answer)),
        }],
        settings.clone(),
        policy,
    );
    match redactors.redact(TRACE_ID, spans.clone(), metrics()) {
        Outcome::Export(out) => {
            assert_eq!(out.len(), spans.len(), "redaction lost spans");
            out.iter().for_each(tailgate_fuzz::check_span);
        }
        Outcome::Dropped => assert!(input.drop_on_failure && !input.dry_run),
    }
    // The fail-closed scrub works on anything the receiver accepted.
    let scrubbed = strict_scrub(&spans, &settings).expect("the strict scrub never fails");
    assert_eq!(scrubbed.len(), spans.len());
    scrubbed.iter().for_each(tailgate_fuzz::check_span);

    // Edits the host's check never saw: `apply` must refuse what does not fit, never panic.
    let raw: Vec<RedactionEdit> = input
        .raw_edits
        .iter()
        .take(8)
        .map(|e| RedactionEdit {
            field: FieldRef {
                kind: KINDS[usize::from(e.kind) % KINDS.len()],
                owner: u32::from(e.owner % 10),
                item: u32::from(e.item % 4),
                attribute_index: u32::from(e.attribute_index % 8),
                key: String::new(),
                is_string: true,
                value_len: 64,
            },
            action: host_action(&e.action),
            reason: None,
        })
        .collect();
    if let Ok(applied) = apply(&spans, &raw, "fuzz", hasher()) {
        check_applied(&spans, &applied.spans, &applied.edited_span_ids);
    }
    check_same_as_decoded(&spans, &raw);
});
