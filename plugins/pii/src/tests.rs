//! Native unit tests of the detectors and the edits.

use super::*;
use tailgate_plugin_sdk::{TextRange, ValueType};

/// A packed trace of span attributes `(key, value, type)`.
fn packed(fields: &[(&str, &str, ValueType)]) -> PackedTrace {
    let mut text = Vec::new();
    let mut out = Vec::new();
    for (k, v, ty) in fields {
        let key = TextRange {
            offset: text.len() as u32,
            len: k.len() as u32,
        };
        text.extend_from_slice(k.as_bytes());
        let value = TextRange {
            offset: text.len() as u32,
            len: v.len() as u32,
        };
        text.extend_from_slice(v.as_bytes());
        let kind = if k.is_empty() {
            FieldKind::SpanName
        } else {
            FieldKind::SpanAttribute
        };
        out.push(TextField {
            kind,
            owner: 0,
            item: 0,
            key,
            value,
            value_type: *ty,
        });
    }
    PackedTrace {
        text,
        fields: out,
        span_count: 1,
        resource_count: 0,
        scope_count: 0,
    }
}

fn pii(config: &str) -> Pii {
    Pii::new(tailgate_plugin_sdk::parse_config(config).expect("config")).expect("compiles")
}

/// Applies the plugin's edits to a single string value the way the host does, for assertions.
fn redact_one(p: &Pii, key: &str, value: &str) -> Option<String> {
    let t = packed(&[(key, value, ValueType::Str)]);
    let e = p.edits(&t).into_iter().next()?;
    Some(match e.action {
        EditAction::Remove => "<removed>".into(),
        EditAction::Hash => "<hash>".into(),
        EditAction::Replace(s) => s,
        EditAction::RenameKey(k) => format!("<renamed {k}>"),
        EditAction::Mask(ranges) => {
            let mut s = String::new();
            let mut at = 0usize;
            for r in ranges {
                let (a, b) = (r.start as usize, (r.start + r.len) as usize);
                s.push_str(&value[at..a]);
                s.extend(std::iter::repeat_n('*', value[a..b].chars().count()));
                at = b;
            }
            s.push_str(&value[at..]);
            s
        }
    })
}

#[test]
fn validated_detectors() {
    let p = pii("{}");
    assert_eq!(
        redact_one(&p, "msg", "card 4111 1111 1111 1111 ok").as_deref(),
        Some("card **** **** **** 1111 ok")
    );
    assert_eq!(
        redact_one(&p, "msg", "order 4111111111111112"),
        None,
        "fails Luhn"
    );
    assert_eq!(
        redact_one(&p, "msg", "mail bob.smith@example.com").as_deref(),
        Some("mail *********@example.com")
    );
    assert_eq!(
        redact_one(&p, "msg", "ssn 123-45-6789").as_deref(),
        Some("ssn ***-**-6789")
    );
    assert_eq!(
        redact_one(&p, "msg", "ssn 666-45-6789"),
        None,
        "area 666 is never issued"
    );
    assert_eq!(
        redact_one(&p, "msg", "iban GB82 WEST 1234 5698 7654 32").as_deref(),
        Some("iban **** **** **** **** **54 32")
    );
    assert_eq!(
        redact_one(&p, "msg", "iban GB82 WEST 1234 5698 7654 33"),
        None,
        "fails mod-97"
    );
    assert_eq!(
        redact_one(&p, "msg", "from 203.0.113.7:443").as_deref(),
        Some("from ***********:443")
    );
    assert_eq!(redact_one(&p, "service.version", "1.2.3.4"), None);
    assert_eq!(
        redact_one(&p, "msg", "at 2001:db8::8a2e:370:7334 now").as_deref(),
        Some("at *********************** now")
    );
    assert_eq!(redact_one(&p, "msg", "at 12:30:45 on 2024-01-15"), None);
    assert_eq!(
        redact_one(&p, "msg", "id 550e8400-e29b-41d4-a716-446655440000"),
        None
    );
    assert_eq!(
        redact_one(&p, "msg", "key AKIAIOSFODNN7EXAMPLE").as_deref(),
        Some("key [REDACTED:api_key]")
    );
    assert_eq!(
        redact_one(&p, "msg", "Authorization: Bearer abcdef123456").as_deref(),
        Some("Authorization: Bearer [REDACTED:bearer]")
    );
    assert_eq!(
        redact_one(&p, "msg", "login password=hunter2 ok").as_deref(),
        Some("login password=[REDACTED:password] ok")
    );
    assert_eq!(
        redact_one(&p, "msg", "ts 1700000000000000000"),
        None,
        "a nanosecond timestamp is not a card"
    );
}

#[test]
fn keys_urls_and_sql() {
    let p = pii("{}");
    assert_eq!(redact_one(&p, "user.email", "x").as_deref(), Some("<hash>"));
    assert_eq!(
        redact_one(
            &p,
            "http.request.header.authorization",
            "Basic Zm9vOmJhcg=="
        )
        .as_deref(),
        Some("REDACTED")
    );
    assert_eq!(
        redact_one(&p, "app.session_token", "abc").as_deref(),
        Some("REDACTED")
    );
    assert_eq!(
        redact_one(&p, "url.full", "https://u:p@example.com/x?token=abc&q=1").as_deref(),
        Some("https://REDACTED:REDACTED@example.com/x?token=REDACTED&q=1")
    );
    assert_eq!(
        redact_one(
            &p,
            "db.statement",
            "SELECT * FROM t WHERE email='bob@example.com'"
        )
        .as_deref(),
        Some("SELECT * FROM t WHERE email=?")
    );
    assert_eq!(redact_one(&p, "http.route", "/users/{id}"), None);
}

#[test]
fn modes_and_config_errors() {
    let p = pii(r#"{"mode": "allow_list", "allow_keys": ["http.*", "service.name"]}"#);
    assert_eq!(
        redact_one(&p, "app.thing", "fine").as_deref(),
        Some("<removed>")
    );
    assert_eq!(redact_one(&p, "http.route", "/a"), None);
    let err =
        tailgate_plugin_sdk::parse_config::<Config>(r#"{"detectors": {"emial": {}}}"#).unwrap_err();
    assert!(err.contains("emial"), "{err}");
    let p = pii(r#"{"detectors": {"phone": {"enabled": true}, "email": {"action": "hash"}}}"#);
    assert_eq!(
        redact_one(&p, "msg", "call +1 415-555-0100").as_deref(),
        Some("call ** ***-***-****")
    );
    assert_eq!(
        redact_one(&p, "contact", "bob@example.com").as_deref(),
        Some("<hash>")
    );
}

#[test]
fn long_values_are_cut() {
    let p = pii(r#"{"max_scan_bytes": 100}"#);
    let long = format!("{} bob@example.com", "x".repeat(200));
    let out = redact_one(&p, "msg", &long).expect("edited");
    assert!(
        out.ends_with("...[truncated]") && !out.contains("bob@"),
        "{out}"
    );
}

#[test]
fn checksums() {
    assert!(detect::luhn(&[
        4, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1
    ]));
    assert!(detect::iban_mod97(b"GB82WEST12345698765432"));
    assert!(!detect::iban_mod97(b"GB82WEST12345698765433"));
}
