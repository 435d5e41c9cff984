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
    let d = Detectors::new(&Kind::ALL);
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
        "AWS_SECRET_ACCESS_KEY=wJalr/K7MDENG",
        "\"clientSecret\": \"abc def\"",
        "{\\\"token\\\":\\\"x1\\\"}",
        "'api-key': 'q w'",
        "max_tokens=4096",
        "author: x",
        "+44 20 7946 0958",
        "+14155550100",
        "(415) 555-0100",
        "06 12 34 56 78",
        "-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----",
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
    let d = Detectors::new(&[Kind::Bearer, Kind::Password, Kind::UrlUserinfo]);
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
        "AWS_SECRET_ACCESS_KEY=wJalr/K7",
        "{\"clientSecret\": \"a b\\\"c\", \\\"token\\\":\\\"x\\\"}",
        "'api-key':'q w' password=\\\"z\\\"",
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

/// Issue 22, item 3: credentials in `KEY=value`, `key: value`, JSON and YAML forms whose key names a
/// secret, in any case and separator style; the secret goes, the key stays.
#[test]
fn credentials_by_key_name_in_text() {
    let p = pii("{}");
    for (text, want) in [
        (
            "AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
            "AWS_SECRET_ACCESS_KEY=[REDACTED:password]",
        ),
        (
            "export DB_PASSWORD=hunter2 && run",
            "export DB_PASSWORD=[REDACTED:password] && run",
        ),
        (
            r#"{"clientSecret": "9f8e7d6c5b4a3928", "clientId": "web"}"#,
            r#"{"clientSecret": "[REDACTED:password]", "clientId": "web"}"#,
        ),
        (
            r#"{"password": "correct horse battery staple"}"#,
            r#"{"password": "[REDACTED:password]"}"#,
        ),
        (
            r#"{"token":"a\"b\"c"}"#,
            r#"{"token":"[REDACTED:password]"}"#,
        ),
        (
            r#"{\"api_key\":\"k-12345\",\"n\":1}"#,
            r#"{\"api_key\":\"[REDACTED:password]\",\"n\":1}"#,
        ),
        ("api-key: abc123XYZ", "api-key: [REDACTED:password]"),
        ("X-Api-Key: abc123XYZ", "X-Api-Key: [REDACTED:password]"),
        (
            "spring.datasource.password: 's3cr3t!'",
            "spring.datasource.password: '[REDACTED:password]'",
        ),
        (
            "private_key = AbCdEf012345",
            "private_key = [REDACTED:password]",
        ),
        (
            "PRIVATE-KEY: AbCdEf012345",
            "PRIVATE-KEY: [REDACTED:password]",
        ),
        ("accessKey=AbCdEf012345", "accessKey=[REDACTED:password]"),
        ("credentials=user:pw", "credentials=[REDACTED:password]"),
        ("auth=dXNlcjpwYXNz", "auth=[REDACTED:password]"),
        ("authToken: zz-top-77", "authToken: [REDACTED:password]"),
        (
            "Server=db;User Id=app;Password=Pa$$w0rd;",
            "Server=db;User Id=app;Password=[REDACTED:password];",
        ),
        ("--db-pass=hunter2", "--db-pass=[REDACTED:password]"),
        (
            "SECRET_KEY_BASE=abcdef0123",
            "SECRET_KEY_BASE=[REDACTED:password]",
        ),
        ("password2=again", "password2=[REDACTED:password]"),
        (
            "GITHUB_TOKEN=plain-text-77",
            "GITHUB_TOKEN=[REDACTED:password]",
        ),
        (
            "pa\u{17f}\u{17f}word=x1",
            "pa\u{17f}\u{17f}word=[REDACTED:password]",
        ),
    ] {
        assert_eq!(
            redact_one(&p, "msg", text).as_deref(),
            Some(want),
            "{text:?}"
        );
    }
}

/// Look-alikes of credentials: keys about a secret (counts, types, names, policies, settings), words
/// that merely contain a secret word, values that stand for nothing.
#[test]
fn credential_near_misses_pass() {
    let p = pii("{}");
    for text in [
        "max_tokens=4096",
        "token_count: 17",
        "input_tokens=120 output_tokens=80",
        "token_type: bearer",
        "tokenizer=cl100k",
        "secret_name=db-creds",
        "secretName: db-creds",
        "password_policy=strict",
        "password_length: 12",
        "auth_method: oauth",
        "author: Jane Austen",
        "authors=3",
        "passenger_count=2",
        "bypass=true",
        "compass: north",
        "monkey=banana",
        "cache_key=orders:42",
        "partition_key: 7",
        "aws_access_key_id=ASIDE",
        "password=?",
        "password: required",
        "password=${DB_PASSWORD}",
        r#"{"password": "********"}"#,
        "PWD=/home/app",
        "require_password: yes",
        "is_secret=false",
        "secretary: Jane",
        "keyboard: us",
    ] {
        assert_eq!(redact_one(&p, "msg", text), None, "{text:?}");
    }
    assert_eq!(
        redact_one(&p, "msg", "Authorization: Bearer abcdefgh12345678").as_deref(),
        Some("Authorization: Bearer [REDACTED:bearer]"),
        "the scheme stays, the bearer detector takes the credential"
    );
}

/// Attribute keys are classified by their words too: a count of tokens is no secret.
#[test]
fn secret_attribute_keys_by_words() {
    let p = pii("{}");
    for key in [
        "aws.secret_access_key",
        "app.clientSecret",
        "http.request.header.x-auth-token",
        "db.password",
        "app.password_hash",
        "app.credentials",
        "app.apiKey",
    ] {
        assert_eq!(
            redact_one(&p, key, "v").as_deref(),
            Some("REDACTED"),
            "{key}"
        );
    }
    for key in [
        "gen_ai.usage.input_tokens",
        "gen_ai.usage.output_tokens",
        "app.token_count",
        "auth.method",
        "app.secret_name",
        "app.author",
    ] {
        assert_eq!(redact_one(&p, key, "v"), None, "{key}");
    }
}

/// PEM private key blocks go whole: header, key material, footer; without a footer, to the end.
#[test]
fn pem_blocks_go_whole() {
    let p = pii("{}");
    let pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo\n4lgOEePzNm0tRgeLezV6ffAt0gunVTLw\n-----END RSA PRIVATE KEY-----";
    assert_eq!(
        redact_one(&p, "msg", &format!("key: {pem} done")).as_deref(),
        Some("key: [REDACTED:api_key] done")
    );
    let json = r#"{"type":"service_account","private_key":"-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----\n","client_email":"x"}"#;
    let out = redact_one(&p, "body", json).expect("edited");
    assert!(!out.contains("MIIEvQ") && !out.contains("BEGIN"), "{out}");
    assert!(out.ends_with(r#"","client_email":"x"}"#), "{out}");
    let cut = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAE";
    assert_eq!(
        redact_one(&p, "msg", cut).as_deref(),
        Some("[REDACTED:api_key]")
    );
    let enc = "-----BEGIN ENCRYPTED PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,0A1B\n\nMIIFHzBJBgkq\n-----END ENCRYPTED PRIVATE KEY-----";
    assert_eq!(
        redact_one(&p, "msg", enc).as_deref(),
        Some("[REDACTED:api_key]")
    );
    assert_eq!(
        redact_one(
            &p,
            "msg",
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----"
        ),
        None,
        "a certificate is public"
    );
}

/// The edits of one attribute, as `(action, reason)`.
fn edits_of(p: &Pii, key: &str, value: &str, ty: ValueType) -> Vec<(EditAction, String)> {
    p.edits(&packed(&[(key, value, ty)]))
        .into_iter()
        .map(|e| (e.action, e.reason.unwrap_or_default()))
        .collect()
}

/// A key that carries personal data is renamed with the data masked, and its value is still scanned.
#[test]
fn keys_with_personal_data_are_renamed() {
    let p = pii("{}");
    assert_eq!(
        edits_of(&p, "user.jane@example.com", "1", ValueType::Int),
        vec![(
            EditAction::RenameKey("*********@example.com".into()),
            "key_email".into()
        )]
    );
    let e = edits_of(&p, "seen.10.20.30.40", "bob@example.com", ValueType::Str);
    assert_eq!(e.len(), 2, "{e:?}");
    assert_eq!(e[0].0, EditAction::RenameKey("seen.***********".into()));
    assert!(matches!(e[1].0, EditAction::Mask(_)), "{e:?}");
    assert_eq!(
        edits_of(&p, "cc.4111111111111111", "x", ValueType::Str),
        vec![(
            EditAction::RenameKey("cc.************1111".into()),
            "key_card".into()
        )]
    );
    let removing = pii(r#"{"detectors": {"email": {"action": "remove"}}}"#);
    assert_eq!(
        edits_of(&removing, "user.jane@example.com", "1", ValueType::Int),
        vec![(EditAction::Remove, "key_email".into())]
    );
    for key in [
        "http.response.status_code",
        "k8s.pod.uid",
        "service.version",
        "app.1.2",
    ] {
        assert_eq!(edits_of(&p, key, "x", ValueType::Str), vec![], "{key}");
    }
}

/// Redacted findings in arrays and maps are masks (the host keeps the array or map), not replacements.
#[test]
fn redactions_in_containers_keep_their_shape() {
    let p = pii("{}");
    let json = r#"{"db_password":"pa55word!","retries":3}"#;
    let e = edits_of(&p, "config", json, ValueType::Kvlist);
    let [(EditAction::Mask(r), reason)] = &e[..] else {
        panic!("{e:?}")
    };
    assert_eq!(reason, "password");
    let masked: Vec<&str> = r
        .iter()
        .map(|r| &json[r.start as usize..(r.start + r.len) as usize])
        .collect();
    assert_eq!(masked, ["pa55word!"]);
}

/// The phone detector is on by default, and ids, times and numbers in ordinary telemetry stay.
#[test]
fn phones_on_by_default() {
    let p = pii("{}");
    assert_eq!(
        redact_one(&p, "msg", "call +44 20 7946 0958 today").as_deref(),
        Some("call *** ** **** **** today")
    );
    assert_eq!(
        redact_one(&p, "contact.phone", "(415) 555-0100").as_deref(),
        Some("***** ***-****")
    );
    for v in [
        "550e8400-e29b-41d4-a716-446655440000",
        "2024-01-15T10:20:30.123456789Z",
        "1700000000123",
        "ORD-2024-000123",
        "took 1234 ms at 12:30:45",
        "v2.14.3-rc.1",
        "/api/v1/orders/{id}/items/12345678",
    ] {
        assert_eq!(redact_one(&p, "msg", v), None, "{v}");
    }
}
