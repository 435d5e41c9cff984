//! `example-redactor`: the reference for the example redactors in other languages
//! (`examples/plugins/{javascript,c,python}/redactor`), which implement exactly this rule so that
//! `host/tests/languages.rs` can check they return the same edits. Only string-typed attribute values are
//! looked at (names and messages, and non-string values, are left alone):
//!
//! 1. key `password`: the attribute is removed (reason `password`);
//! 2. a value made only of ASCII digits, spaces and `-` with 13 to 19 digits (a payment card number):
//!    every digit but the last four is masked, one 1-byte range per digit (reason `card`);
//! 3. otherwise each email-looking token is masked from the start of its local part to the `@`
//!    (reason `email`). An email is an `@` with at least one byte of `[A-Za-z0-9._%+-]` right before it
//!    and, right after it, a run of `[A-Za-z0-9.-]` holding a `.` that is neither its first nor its last
//!    byte. Scanning goes on after the domain.
//!
//! All matching is on ASCII bytes, so ranges always fall on UTF-8 boundaries.
//! Config: `{}` (no options).

use tailgate_plugin_sdk::serde::Deserialize;
use tailgate_plugin_sdk::{
    Edit, EditAction, FieldKind, Interest, MaskRange, PackedTrace, Redactor, TraceSummary,
    ValueType,
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields, crate = "tailgate_plugin_sdk::serde")]
struct Config {}

/// The redactor (stateless).
pub struct ExampleRedactor;

fn is_local(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'%' | b'+' | b'-')
}

fn is_domain(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-')
}

/// The digit positions to mask when `value` is a card number (all but the last four), or `None`.
pub fn card_digits(value: &[u8]) -> Option<Vec<u32>> {
    if !value
        .iter()
        .all(|b| b.is_ascii_digit() || matches!(b, b' ' | b'-'))
    {
        return None;
    }
    let digits: Vec<u32> = (0..value.len() as u32)
        .filter(|&i| value[i as usize].is_ascii_digit())
        .collect();
    if !(13..=19).contains(&digits.len()) {
        return None;
    }
    Some(digits[..digits.len() - 4].to_vec())
}

/// The `(start, len)` of each email local part in `value`.
pub fn email_locals(value: &[u8]) -> Vec<(u32, u32)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < value.len() {
        if value[i] != b'@' {
            i += 1;
            continue;
        }
        let mut start = i;
        while start > 0 && is_local(value[start - 1]) {
            start -= 1;
        }
        let mut end = i + 1;
        while end < value.len() && is_domain(value[end]) {
            end += 1;
        }
        let domain = &value[i + 1..end];
        let dotted = domain.len() >= 3 && domain[1..domain.len() - 1].contains(&b'.');
        if start < i && dotted {
            out.push((start as u32, (i - start) as u32));
            i = end;
        } else {
            i += 1;
        }
    }
    out
}

/// The edits for a packed trace.
pub fn edits(t: &PackedTrace) -> Vec<Edit> {
    let mut out = Vec::new();
    for (i, f) in t.fields.iter().enumerate() {
        let attribute = matches!(
            f.kind,
            FieldKind::ResourceAttribute
                | FieldKind::ScopeAttribute
                | FieldKind::SpanAttribute
                | FieldKind::EventAttribute
                | FieldKind::LinkAttribute
        );
        if !attribute || f.value_type != ValueType::Str {
            continue;
        }
        if t.bytes(&f.key) == b"password" {
            out.push(Edit::new(i, EditAction::Remove, "password"));
            continue;
        }
        let value = t.bytes(&f.value);
        if let Some(digits) = card_digits(value) {
            let ranges = digits
                .into_iter()
                .map(|start| MaskRange { start, len: 1 })
                .collect();
            out.push(Edit::new(i, EditAction::Mask(ranges), "card"));
            continue;
        }
        let emails = email_locals(value);
        if !emails.is_empty() {
            let ranges = emails
                .into_iter()
                .map(|(start, len)| MaskRange { start, len })
                .collect();
            out.push(Edit::new(i, EditAction::Mask(ranges), "email"));
        }
    }
    out
}

impl Redactor for ExampleRedactor {
    fn init(config: &str) -> Result<(Self, Interest), String> {
        let _: Config = tailgate_plugin_sdk::parse_config(config)?;
        Ok((ExampleRedactor, Interest::summary_only()))
    }

    fn redact(&mut self, _: &TraceSummary, trace: &PackedTrace) -> Vec<Edit> {
        edits(trace)
    }
}

tailgate_plugin_sdk::export_redactor!(ExampleRedactor);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cards_keep_their_last_four_digits() {
        assert_eq!(
            card_digits(b"4111 1111-1111 1111"),
            Some(vec![0, 1, 2, 3, 5, 6, 7, 8, 10, 11, 12, 13])
        );
        assert_eq!(card_digits(b"123456789012"), None, "12 digits");
        assert_eq!(card_digits(b"4111 1111 1111 111x"), None);
    }

    #[test]
    fn email_local_parts() {
        assert_eq!(
            email_locals(b"to: jane.doe+x@example.com, bob@b.io"),
            vec![(4, 10), (28, 3)]
        );
        assert!(email_locals(b"@example.com a@b c@.x d@x.").is_empty());
    }
}
