//! Redactor plugins: a trace's strings packed in one buffer in ([`super::packing`]), checked edits out.
use super::host_api::truncate;
use super::instances::{PluginCore, RedactorWorld, now_unix_nano};
use super::*;

/// A loaded redactor plugin. `Send + Sync`, like [`SamplerPlugin`].
pub struct RedactorPlugin {
    pub(super) core: PluginCore<RedactorWorld>,
}

impl fmt::Debug for RedactorPlugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedactorPlugin")
            .field("name", &self.core.shared.name)
            .finish()
    }
}

impl RedactorPlugin {
    /// The rule name the plugin was loaded under.
    pub fn name(&self) -> &str {
        &self.core.shared.name
    }

    /// Asks the plugin for the edits to one kept trace, validated and resolved to [`FieldRef`]s. Resource
    /// and scope indexes in them follow [`layout`]`(spans)`. Applying them is the caller's job.
    pub fn redact(
        &self,
        trace_id: TraceId,
        spans: &[SpanRecord],
    ) -> Result<Vec<RedactionEdit>, PluginFailure> {
        let summary = marshal::summary(trace_id, spans, now_unix_nano());
        let packed = packing::pack(spans);
        let edits = self.core.call(spans, |w, store| {
            store.data().clock.set(summary.now_unix_nano);
            w.0.tailgate_plugin_redaction()
                .call_redact(store, &summary, &packed.wit)
        })?;
        let max = packed.fields.len() * MAX_EDITS_PER_FIELD + MAX_EDITS_SLACK;
        if edits.len() > max {
            return Err(self.core.bad_result(format!(
                "returned {} edits for a trace of {} fields (at most {max})",
                edits.len(),
                packed.fields.len()
            )));
        }
        edits
            .into_iter()
            .map(|e| resolve_edit(&packed, e))
            .collect::<Result<Vec<_>, String>>()
            .map_err(|m| self.core.bad_result(m))
    }

    /// Counters for metrics and status.
    pub fn stats(&self) -> PluginStats {
        self.core.stats()
    }
}

/// Checks one edit against the packed trace and resolves its field.
pub(crate) fn resolve_edit(
    packed: &packing::Packed,
    e: bindings::redaction::Edit,
) -> Result<RedactionEdit, String> {
    let fields = &packed.fields;
    let field = fields.get(e.field as usize).ok_or_else(|| {
        format!(
            "edit of field {} but the trace has {} fields",
            e.field,
            fields.len()
        )
    })?;
    let action = match e.action {
        WitEditAction::Remove | WitEditAction::RenameKey(_) if !field.kind.is_attribute() => {
            return Err(format!(
                "edit of field {}: {:?} can only remove or rename attributes",
                e.field, field.kind
            ));
        }
        WitEditAction::Remove => EditAction::Remove,
        WitEditAction::RenameKey(k) => EditAction::RenameKey(k),
        WitEditAction::Replace(v) => EditAction::Replace(v),
        WitEditAction::Hash => EditAction::Hash,
        WitEditAction::Mask(ranges) => {
            let mut out: Vec<std::ops::Range<u32>> = Vec::with_capacity(ranges.len());
            for r in ranges {
                let end = r
                    .start
                    .checked_add(r.len)
                    .filter(|&end| end <= field.value_len);
                let Some(end) = end else {
                    return Err(format!(
                        "mask {}+{} of field {} is outside its {}-byte value",
                        r.start, r.len, e.field, field.value_len
                    ));
                };
                if field.is_string {
                    let at = packed.wit.fields[e.field as usize].value.offset as usize;
                    let value =
                        std::str::from_utf8(&packed.wit.text[at..at + field.value_len as usize])
                            .unwrap_or("");
                    if !value.is_char_boundary(r.start as usize)
                        || !value.is_char_boundary(end as usize)
                    {
                        return Err(format!(
                            "mask {}+{} of field {} splits a UTF-8 character",
                            r.start, r.len, e.field
                        ));
                    }
                }
                if out.last().is_some_and(|prev| prev.end > r.start) {
                    return Err(format!(
                        "mask ranges of field {} overlap or are not sorted",
                        e.field
                    ));
                }
                out.push(r.start..end);
            }
            EditAction::Mask(out)
        }
    };
    Ok(RedactionEdit {
        field: field.clone(),
        action,
        reason: e.reason.map(|r| truncate(r, MAX_REASON)),
    })
}
