//! `test-bad-redactor`: a redactor for tailgate's fail-closed tests. `{"mode": ...}`: `trap` (panics),
//! `loop` (never returns), `out_of_range` (edits a field that does not exist), `split_char` (masks half
//! of a multi-byte character), `remove_name` (removes a span name, which is not an attribute), `ok`
//! (returns no edits), `huge_output` (hashes the first field 200 000 times), `slow_sometimes` (never
//! returns when the trace has a span named `slow`, returns no edits otherwise).

use tailgate_plugin_sdk::serde::Deserialize;
use tailgate_plugin_sdk::{
    Edit, EditAction, FieldKind, Interest, MaskRange, PackedTrace, Redactor, TraceSummary,
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields, crate = "tailgate_plugin_sdk::serde")]
struct Config {
    mode: String,
}

/// The misbehaving redactor.
pub struct BadRedactor {
    mode: String,
}

impl Redactor for BadRedactor {
    fn init(config: &str) -> Result<(Self, Interest), String> {
        let c: Config = tailgate_plugin_sdk::parse_config(config)?;
        match c.mode.as_str() {
            "trap" | "loop" | "out_of_range" | "split_char" | "remove_name" | "ok"
            | "huge_output" | "slow_sometimes" => {}
            other => return Err(format!("invalid configuration: unknown mode {other:?}")),
        }
        Ok((BadRedactor { mode: c.mode }, Interest::summary_only()))
    }

    fn redact(&mut self, summary: &TraceSummary, trace: &PackedTrace) -> Vec<Edit> {
        match self.mode.as_str() {
            "trap" => panic!("redactor trap requested"),
            "loop" => loop {
                std::hint::black_box(&summary);
            },
            "huge_output" => (0..200_000)
                .map(|_| Edit::new(0, EditAction::Hash, "huge"))
                .collect(),
            "slow_sometimes"
                if trace
                    .fields
                    .iter()
                    .any(|f| f.kind == FieldKind::SpanName && trace.value(f) == "slow") =>
            {
                loop {
                    std::hint::black_box(&summary);
                }
            }
            "out_of_range" => vec![Edit::new(trace.fields.len() + 1, EditAction::Remove, "bad")],
            "split_char" => {
                // The first string value with a multi-byte character, masked through its middle.
                let at = trace.fields.iter().enumerate().find_map(|(i, f)| {
                    let v = trace.value(f);
                    v.char_indices()
                        .find(|(_, c)| c.len_utf8() > 1)
                        .map(|(at, _)| (i, at))
                });
                match at {
                    Some((i, at)) => vec![Edit::new(
                        i,
                        EditAction::Mask(vec![MaskRange {
                            start: at as u32 + 1,
                            len: 1,
                        }]),
                        "bad",
                    )],
                    None => vec![Edit::new(trace.fields.len(), EditAction::Hash, "bad")],
                }
            }
            "remove_name" => trace
                .fields
                .iter()
                .position(|f| f.kind == FieldKind::SpanName)
                .map(|i| vec![Edit::new(i, EditAction::Remove, "bad")])
                .unwrap_or_default(),
            _ => Vec::new(),
        }
    }
}

tailgate_plugin_sdk::export_redactor!(BadRedactor);
