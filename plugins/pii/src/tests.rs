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
        redact_one(&p, "http.target", "/risk/9?card=4539+0000+1305+8385&x=1").as_deref(),
        Some("/risk/9?card=***************8385&x=1"),
        "a form-encoded card number in a query string"
    );
    assert_eq!(
        redact_one(&p, "msg", "card 4111+1111-1111 1111"),
        None,
        "mixed separators are not a printed card"
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
        redact_one(&p, "url.query", "user=42&email=bob.smith%40example.com&x=1").as_deref(),
        Some("user=42&email=*********%40example.com&x=1"),
        "a percent-encoded email in a query string"
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

/// The byte-level gate never hides a finding: the gated scan equals running every pattern, on PII,
/// near-misses and ordinary telemetry glued together in many ways.
#[test]
fn gate_finds_what_every_pattern_finds() {
    use detect::{Detectors, Kind};
    let all = [
        Kind::Email,
        Kind::Card,
        Kind::Ssn,
        Kind::Iban,
        Kind::Ipv4,
        Kind::Ipv6,
        Kind::Jwt,
        Kind::Bearer,
        Kind::ApiKey,
        Kind::Password,
        Kind::UrlUserinfo,
        Kind::Phone,
    ];
    let d = Detectors::new(&all).expect("compiles");
    let fragments = [
        "jane.doe@example.org",
        "a@b.co",
        "4111 1111 1111 1111",
        "4111-1111-1111-1111",
        "4111111111111111",
        "378282246310005",
        "123-45-6789",
        "123 45 6789",
        "GB82 WEST 1234 5698 7654 32",
        "DE89370400440532013000",
        "192.168.1.20",
        "10.0.0.1",
        "2001:db8::8a2e:370:7334",
        "::1",
        "fe80::1%eth0",
        "::ffff:192.0.2.1",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.sig_nature-x",
        "Bearer abcdefgh12345678",
        "bearer\tabc.def~ghi+jk/l==",
        "Basic dXNlcjpwYXNzd29yZA==",
        "token  zzzzzzzzzz",
        "Digest qwertyuiop",
        "AKIAIOSFODNN7EXAMPLE",
        "ghp_abcdefghijklmnopqrstuvwxyz0123456789",
        "github_pat_11ABCDEFG0123456789_abcdefghijklmnop",
        "sk_live_abcdefghijklmnop1234",
        "xoxb-1234567890-abcdefghij",
        "AIzaSyA-abcdefghijklmnopqrstuvwxyz012345",
        "-----BEGIN RSA PRIVATE KEY-----",
        "password=hunter2",
        "PASSWORD : 'hunter2'",
        "\"api_key\": \"abc123\"",
        "apiKey=xyz",
        "db_pwd:secret",
        "client_secret = s3cr3t",
        "Token=abc",
        "https://user:pass@host.example.com/path",
        "ftp://admin:pw@10.1.1.1/",
        "+1 (555) 123-4567",
        "+44 20 7946 0958",
        "555.123.4567",
        "550e8400-e29b-41d4-a716-446655440000",
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36",
        "orders::handlers::get_order",
        "1.2.3",
        "v1.2.3.4",
        "2024-01-02T03:04:05Z",
        "SELECT * FROM t WHERE id = 42",
        "k\u{212A}ey=x",
        "pa\u{17F}\u{17F}word=x",
        "token\u{a0}abcdefghijk",
        "\u{e9}t\u{e9} caf\u{e9}",
        "GET",
        "/api/v1/orders/{id}",
        "eu-west-1",
        "",
    ];
    let glue = [
        " ", "", "=", ":", "-", ".", "\n", "x", "7", "\"", "@", "/", "A",
    ];
    let mut cases: Vec<String> = Vec::new();
    for a in &fragments {
        cases.push((*a).to_owned());
        for b in &fragments {
            for g in &glue[..4] {
                cases.push(format!("{a}{g}{b}"));
            }
        }
    }
    // Deterministic pseudo-random triples with every glue.
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let mut next = |n: usize| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % n as u64) as usize
    };
    for _ in 0..20_000 {
        let mut s = String::new();
        for _ in 0..3 {
            s.push_str(glue[next(glue.len())]);
            let f = fragments[next(fragments.len())];
            // Sometimes only a piece of a fragment, to hit near-misses.
            let cut = if next(3) == 0 {
                let mut c = next(f.len() + 1);
                while !f.is_char_boundary(c) {
                    c -= 1;
                }
                c
            } else {
                f.len()
            };
            s.push_str(&f[..cut]);
        }
        cases.push(s);
    }
    for c in &cases {
        assert_eq!(d.scan(c, false), d.scan_ungated(c), "text {c:?}");
    }
}

/// The 10-span trace of `host/benches/redaction.rs` as the host packs it (span name, attributes, the last
/// span's status message), with or without PII.
fn bench_trace(pii: bool) -> PackedTrace {
    let mut fields: Vec<(&str, &str, ValueType)> = vec![("service.name", "orders", ValueType::Str)];
    for i in 0..10 {
        fields.push(("", "GET /api/v1/orders/{id}", ValueType::Name));
        fields.extend([
            ("http.request.method", "GET", ValueType::Str),
            ("http.route", "/api/v1/orders/{id}", ValueType::Str),
            ("http.response.status_code", "200", ValueType::Int),
            (
                "server.address",
                "orders.internal.svc.cluster.local",
                ValueType::Str,
            ),
            ("server.port", "8080", ValueType::Int),
            ("network.protocol.version", "1.1", ValueType::Str),
            (
                "user_agent.original",
                "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120.0",
                ValueType::Str,
            ),
            (
                "app.request_id",
                "550e8400-e29b-41d4-a716-446655440000",
                ValueType::Str,
            ),
            ("app.tenant", "acme-industries", ValueType::Str),
            (
                "app.feature_flags",
                "new-checkout,fast-search,beta-ui",
                ValueType::Str,
            ),
            ("app.items", "3", ValueType::Int),
            ("app.region", "eu-west-1", ValueType::Str),
            ("thread.name", "tokio-runtime-worker", ValueType::Str),
            ("thread.id", "17", ValueType::Int),
            (
                "code.function.name",
                "orders::handlers::get_order",
                ValueType::Str,
            ),
            ("app.cache", "miss", ValueType::Str),
        ]);
        if pii {
            fields.extend([
                ("user.email", "jane.doe@example.org", ValueType::Str),
                (
                    "url.full",
                    "https://shop.example.com/orders/42?access_token=abc123def456&page=2",
                    ValueType::Str,
                ),
                (
                    "db.query.text",
                    "SELECT * FROM orders WHERE customer = 'jane' AND id = 42",
                    ValueType::Str,
                ),
                (
                    "app.note",
                    "paid with 4111 1111 1111 1111 yesterday",
                    ValueType::Str,
                ),
            ]);
        } else {
            fields.extend([
                ("user.tier", "gold", ValueType::Str),
                ("url.path", "/orders/42", ValueType::Str),
                ("db.operation.name", "SELECT", ValueType::Str),
                (
                    "app.note",
                    "paid by card yesterday, no issues",
                    ValueType::Str,
                ),
            ]);
        }
        if i == 9 {
            let m = if pii {
                "declined for jane.doe@example.org"
            } else {
                "declined"
            };
            fields.push(("", m, ValueType::Name));
        }
    }
    packed(&fields)
}

/// Profiling loop for callgrind (`TAILGATE_PII_PROFILE=pii|nopii`); ignored in normal runs.
#[test]
#[ignore]
fn profile_bench_trace() {
    let case = std::env::var("TAILGATE_PII_PROFILE").unwrap_or_else(|_| "pii".into());
    let t = bench_trace(case != "nopii");
    let p = pii("{}");
    let mut n = 0;
    for _ in 0..200 {
        n += std::hint::black_box(p.edits(&t)).len();
    }
    println!("{n} edits");
}

/// The secret's place found from the pattern's shape equals the regex engine's capture group, on
/// crafted texts (Unicode whitespace and case folding, quotes, several matches, near-misses).
#[test]
fn secret_of_equals_captures() {
    let d = Detectors::new(&[Kind::Bearer, Kind::Password, Kind::UrlUserinfo]).expect("compiles");
    let texts = [
        "Authorization: Bearer abcdefgh12345678",
        "bearer\t\u{00a0} abc.def/ghi+jkl==",
        "BASIC  dXNlcjpwYXNzd29yZA== and token xyzxyzxyz",
        "to\u{212a}en\u{2003}abcdefghijk",
        "di\u{017f}gest\nAAAAAAAAAAAA",
        "password=hunter2",
        "db_password = 'hunter2' user=x",
        "{\"api_key\": \"sk_abcdef\", \"secret\":\"s3cr3t\"}",
        "PWD :\u{3000}\"x\" Passwd:y apikey=z&token=w;api-key=q",
        "my_token\"=\"abc\" secret\u{2028}=\u{2028}'v'",
        "pa\u{017f}\u{017f}word=ſecret",
        "https://user:pass@host/x and ftp://a:b@c s3+x://u%20:p@h",
        "HTTPS://Ada:Lovelace@example.com:443/p",
        "redis://:onlypass@h",
        "password=",
        "token    ",
        "x://a:b@c@d",
    ];
    let mut n = 0;
    for t in texts {
        for (want, got) in d.secret_pairs(t) {
            assert_eq!(want, got, "text {t:?}");
            n += 1;
        }
    }
    assert!(
        n >= 15,
        "only {n} matches: the texts no longer exercise the patterns"
    );
}
