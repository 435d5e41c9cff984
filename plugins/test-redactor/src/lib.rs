//! `test-redactor`: a redactor for tailgate's host tests. Removes `password` attributes, hashes
//! `user.email`, masks all but the last 4 digits of `card`, renames the key `ssn` to `ssn.redacted`, and
//! replaces span names containing `secret`. `{"mode": "bad_edit"}` returns an edit of a field that does
//! not exist.

use tailgate_plugin_sdk::serde::Deserialize;
use tailgate_plugin_sdk::{
    Edit, EditAction, FieldKind, Interest, MaskRange, PackedTrace, Redactor, TraceSummary,
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields, crate = "tailgate_plugin_sdk::serde")]
struct Config {
    #[serde(default)]
    mode: Option<String>,
}

/// The redactor.
pub struct TestRedactor {
    bad: bool,
}

/// The edits for a packed trace.
pub fn edits(t: &PackedTrace) -> Vec<Edit> {
    let mut out = Vec::new();
    for (i, f) in t.fields.iter().enumerate() {
        let value = t.value(f);
        match (f.kind, t.key(f)) {
            (FieldKind::SpanName, _) if value.contains("secret") => out.push(Edit::new(
                i,
                EditAction::Replace("redacted".into()),
                "secret_name",
            )),
            (FieldKind::SpanName | FieldKind::EventName | FieldKind::StatusMessage, _) => {}
            (_, "password") => out.push(Edit::new(i, EditAction::Remove, "password")),
            (_, "user.email") => out.push(Edit::new(i, EditAction::Hash, "email")),
            (_, "ssn") => out.push(Edit::new(
                i,
                EditAction::RenameKey("ssn.redacted".into()),
                "ssn",
            )),
            (_, "card") => {
                let digits: Vec<usize> = value
                    .bytes()
                    .enumerate()
                    .filter(|(_, b)| b.is_ascii_digit())
                    .map(|(i, _)| i)
                    .collect();
                let ranges = digits[..digits.len().saturating_sub(4)]
                    .iter()
                    .map(|&at| MaskRange {
                        start: at as u32,
                        len: 1,
                    })
                    .collect();
                out.push(Edit::new(i, EditAction::Mask(ranges), "card"));
            }
            _ => {}
        }
    }
    out
}

impl Redactor for TestRedactor {
    fn init(config: &str) -> Result<(Self, Interest), String> {
        let c: Config = tailgate_plugin_sdk::parse_config(config)?;
        Ok((
            TestRedactor {
                bad: c.mode.as_deref() == Some("bad_edit"),
            },
            Interest::summary_only(),
        ))
    }

    fn redact(&mut self, _: &TraceSummary, trace: &PackedTrace) -> Vec<Edit> {
        if self.bad {
            return vec![Edit::new(trace.fields.len() + 5, EditAction::Remove, "bad")];
        }
        edits(trace)
    }
}

tailgate_plugin_sdk::export_redactor!(TestRedactor);
