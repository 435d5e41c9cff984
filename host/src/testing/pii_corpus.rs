//! The PII corpus: realistic spans with known personal data planted in every field kind a span can carry
//! (resource, scope, span and event and link attributes, span names, status messages, event names) and
//! in every value type (string, int, bytes, array, map, nested map), plus near-misses that must survive.
//! One copy for the host's redaction test (`host/tests/redaction_corpus.rs`: zero leaks, zero false
//! positives through the `pii` plugin) and the benchmark's `leaks` measurement (`bench/src/corpus.rs`:
//! the same corpus through tailgate and the Collector).

use super::span_in;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList, any_value::Value,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Status, span, status};

pub const TRACE_ID: u128 = 0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736;

fn v(value: Value) -> Option<AnyValue> {
    Some(AnyValue { value: Some(value) })
}

fn s(text: &str) -> Value {
    Value::StringValue(text.into())
}

fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: v(value),
        ..Default::default()
    }
}

fn arr(items: Vec<Value>) -> Value {
    Value::ArrayValue(ArrayValue {
        values: items
            .into_iter()
            .map(|i| AnyValue { value: Some(i) })
            .collect(),
    })
}

fn map(entries: Vec<KeyValue>) -> Value {
    Value::KvlistValue(KeyValueList { values: entries })
}

/// Personal data planted in the corpus: none of it may appear anywhere in the output.
pub const PLANTED: &[&str] = &[
    // resource / scope attributes
    "ops-lead@acme-corp.io",
    "10.20.30.40",
    "dev@acme-corp.io",
    // span name
    "jane.doe@example.org",
    // URL: credentials, sensitive query values
    "shopadmin77",
    "S3cretPassw0rd",
    "abc123def456",
    "tok_9f8e7d6c5b4a",
    // headers (arrays), cookies
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    "abcXYZ987",
    // identity keys
    "u-77812",
    "4242424242",
    "198.51.100.23",
    // a card as an int, a card in an array, SSN and IBAN in a nested map, an email in bytes
    "4111111111111111",
    "5555 5555 5555 4444",
    "123-45-6789",
    "DE89 3704 0044 0532 0130 00",
    "bob.builder@example.net",
    // SQL literals
    "carol@example.com",
    "4012888888881881",
    "078-05-1121",
    // status message
    "4012 8888 8888 1881",
    "dave@example.com",
    // event name and attributes (exception)
    "frank@example.com",
    "ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789",
    "erin@example.com",
    "Hunter2!",
    "5105105105105100",
    // link attributes
    "2001:db8:85a3::8a2e:370:7334",
    "AKIAIOSFODNN7EXAMPLE",
    "xoxb-123456789012-abcdefghij",
    // second resource's span
    "GB82WEST12345698765432",
    "sk_live_4eC39HqLyjWDarjtT1zdp7dc",
    "pa55word!",
    "192.0.2.146",
    "4539-5787-6362-1486",
    // issue 22, item 3: credentials by key name (env, JSON, YAML), a PEM block whole, phone numbers,
    // attribute keys that carry personal data
    "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "cS-91f0e2d4c7b8a6",
    "Tr0ub4dor&3",
    "ak_7Hq2Lm9Zx4",
    "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6",
    "ffAt0gunVTLw7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u",
    "-----END RSA PRIVATE KEY-----",
    "+1 415-555-0132",
    "(212) 555-0187",
    "+44 20 7946 0958",
    "carla@example.net",
    "maria@acme-corp.io",
];

/// Look-alikes that must come out exactly as they went in.
pub const NEAR_MISSES: &[&str] = &[
    "4111111111111112",
    "1234567812345678",
    "1.2.3.4",
    "10.2.0.1",
    "550e8400-e29b-41d4-a716-446655440000",
    "2024-01-15",
    "2024-01-15T10:20:30Z",
    "/users/{id}",
    "GB82WEST12345698765433",
    "666-12-3456",
    "SELECT orders",
    "postgresql",
    "1700000000000000000",
    "12:30:45",
    "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36",
    "1Z999AA10123456784",
    "checkout",
    "POST /pay",
    "0.75",
    "ORD-2024-000123",
    // issue 22, item 3: keys about secrets, ids, hashes, versions, times, epochs, templates, digit groups
    "gen_ai.usage.input_tokens=1200",
    "token_count: 17",
    "secret_name=db-creds",
    "auth_method: oauth",
    "author: Jane Austen",
    "max_tokens=4096",
    "3f786850e387550fdab836ed7e6dc881de23001b",
    "3f78685",
    "9e107d9d372bb6826bd81d3542a419d6",
    "f47ac10b-58cc-4372-a567-0e02b2c3d479",
    "v2.14.3-rc.1+build.5",
    "1733234567",
    "1733234567123",
    "2024-12-03T14:10:49+01:00",
    "Tue, 03 Dec 2024 14:10:49 GMT",
    "/api/v1/users/{user_id}/orders/{order_id}",
    "checkout-7d9f8b6c5d-x2k4q",
    "100-200-3000",
    "20240115 102030",
    "1 234 567 890",
];

/// A PEM private key block (header, key material, footer) as a log line would carry it.
const PEM_BLOCK: &str = "loaded -----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6\nffAt0gunVTLw7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u\n-----END RSA PRIVATE KEY----- from disk";

pub fn corpus() -> ExportTraceServiceRequest {
    let t0 = 1_700_000_000_000_000_000u64;
    let mut root = span_in(
        TRACE_ID,
        1,
        0,
        "GET /users/jane.doe@example.org",
        t0,
        t0 + 9_000_000,
    );
    root.attributes = vec![
        kv(
            "url.full",
            s(
                "https://shopadmin77:S3cretPassw0rd@shop.example.com/cart?session=abc123def456&item=42",
            ),
        ),
        kv("url.query", s("q=shoes&access_token=tok_9f8e7d6c5b4a")),
        kv(
            "http.request.header.authorization",
            arr(vec![s(
                "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
            )]),
        ),
        kv(
            "http.request.header.cookie",
            arr(vec![s("sid=s%3AabcXYZ987")]),
        ),
        kv("user.email", s("jane.doe@example.org")),
        kv("user.id", Value::IntValue(4242424242)),
        kv("enduser.id", s("u-77812")),
        kv("client.address", s("198.51.100.23")),
        kv("payment.card", Value::IntValue(4111111111111111)),
        kv("app.flags", Value::BoolValue(true)),
        kv(
            "app.blob",
            Value::BytesValue(b"contact: bob.builder@example.net \xff\xfe end".to_vec()),
        ),
        kv(
            "app.tags",
            arr(vec![s("vip"), s("card 5555 5555 5555 4444")]),
        ),
        kv(
            "app.profile",
            map(vec![
                kv("ssn", s("123-45-6789")),
                kv(
                    "nested",
                    map(vec![
                        kv("iban", s("DE89 3704 0044 0532 0130 00")),
                        kv("n", Value::IntValue(3)),
                    ]),
                ),
            ]),
        ),
        // near-misses
        kv("order.id", s("4111111111111112")),
        kv("app.order_ref", Value::IntValue(1234567812345678)),
        kv("app.build.version", s("10.2.0.1")),
        kv("request.id", s("550e8400-e29b-41d4-a716-446655440000")),
        kv("event.date", s("2024-01-15")),
        kv("event.at", s("2024-01-15T10:20:30Z")),
        kv("http.route", s("/users/{id}")),
        kv("http.response.status_code", Value::IntValue(200)),
        kv("app.ratio", Value::DoubleValue(0.75)),
        kv("app.ts_nanos", Value::IntValue(1_700_000_000_000_000_000)),
        kv("app.local_time", s("12:30:45")),
        kv(
            "container.image.digest",
            s("sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"),
        ),
        kv(
            "user_agent.original",
            s("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36"),
        ),
        kv("shipment.tracking", s("1Z999AA10123456784")),
        kv("order.number", s("ORD-2024-000123")),
        // the key carries the personal data
        kv("seen.carla@example.net", Value::IntValue(1)),
        kv(
            "http.request.body",
            s(r#"{"clientId":"web","clientSecret":"cS-91f0e2d4c7b8a6"}"#),
        ),
        kv(
            "app.settings",
            s(
                "token_count: 17, secret_name=db-creds, auth_method: oauth, author: Jane Austen, max_tokens=4096",
            ),
        ),
        kv("gen_ai.usage.input_tokens", Value::IntValue(1200)),
        kv(
            "vcs.ref.head.revision",
            s("3f786850e387550fdab836ed7e6dc881de23001b"),
        ),
        kv("app.short_sha", s("3f78685")),
        kv("app.md5", s("9e107d9d372bb6826bd81d3542a419d6")),
        kv("app.trace_ref", s("f47ac10b-58cc-4372-a567-0e02b2c3d479")),
        kv("service.build", s("v2.14.3-rc.1+build.5")),
        kv("app.epoch_s", Value::IntValue(1_733_234_567)),
        kv("app.epoch_ms", s("1733234567123")),
        kv("app.sent_at", s("2024-12-03T14:10:49+01:00")),
        kv(
            "http.response.header.date",
            arr(vec![s("Tue, 03 Dec 2024 14:10:49 GMT")]),
        ),
        kv(
            "app.route_template",
            s("/api/v1/users/{user_id}/orders/{order_id}"),
        ),
        kv("k8s.pod.name", s("checkout-7d9f8b6c5d-x2k4q")),
        kv(
            "app.batch",
            s("batch 100-200-3000 at 20240115 102030, 1 234 567 890 rows"),
        ),
    ];

    let mut db = span_in(
        TRACE_ID,
        2,
        1,
        "SELECT orders",
        t0 + 1_000_000,
        t0 + 3_000_000,
    );
    db.kind = span::SpanKind::Client as i32;
    db.attributes = vec![
        kv("db.system", s("postgresql")),
        kv(
            "db.query.text",
            s(
                "SELECT * FROM orders WHERE email = 'carol@example.com' AND card = '4012888888881881' AND total > 100.50",
            ),
        ),
        kv(
            "db.statement",
            s("UPDATE users SET ssn='078-05-1121' WHERE id=7"),
        ),
        kv("payment.ref", s("GB82WEST12345698765433")),
        kv("app.code", s("666-12-3456")),
    ];
    db.status = Some(Status {
        code: status::StatusCode::Error as i32,
        message: "payment failed for card 4012 8888 8888 1881 of dave@example.com".into(),
    });
    db.events = vec![
        span::Event {
            time_unix_nano: t0 + 2_000_000,
            name: "exception".into(),
            attributes: vec![
                kv("exception.type", s("AuthError")),
                kv(
                    "exception.message",
                    s(
                        "Invalid token ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789 for user erin@example.com",
                    ),
                ),
                kv(
                    "exception.stacktrace",
                    s("at login(password=Hunter2!)\n  at main()"),
                ),
                kv(
                    "log.message",
                    s(
                        "env: AWS_REGION=eu-west-1 AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
                    ),
                ),
            ],
            dropped_attributes_count: 0,
        },
        span::Event {
            time_unix_nano: t0 + 2_500_000,
            name: "sent email to frank@example.com".into(),
            attributes: vec![kv("retry.card", Value::IntValue(5105105105105100))],
            dropped_attributes_count: 0,
        },
    ];
    db.links = vec![span::Link {
        trace_id: vec![7; 16],
        span_id: vec![3; 8],
        trace_state: String::new(),
        attributes: vec![
            kv("link.peer", s("2001:db8:85a3::8a2e:370:7334")),
            kv("link.note", s("aws key AKIAIOSFODNN7EXAMPLE")),
            kv("link.slack", s("xoxb-123456789012-abcdefghij")),
            kv("link.contact", s("uk desk +44 20 7946 0958")),
        ],
        dropped_attributes_count: 0,
        flags: 0,
    }];

    let mut pay = span_in(TRACE_ID, 3, 1, "POST /pay", t0 + 4_000_000, t0 + 8_000_000);
    pay.attributes = vec![
        kv("payment.iban", s("GB82WEST12345698765432")),
        kv("stripe.key_in_use", s("sk_live_4eC39HqLyjWDarjtT1zdp7dc")),
        kv(
            "config",
            map(vec![
                kv("db_password", s("pa55word!")),
                kv("retries", Value::IntValue(3)),
            ]),
        ),
        kv("net.sock.peer.addr", s("192.0.2.146")),
        kv("message", s("charged 4539-5787-6362-1486 ok")),
        kv(
            "app.config_dump",
            s("db:\n  host: db.internal\n  password: 'Tr0ub4dor&3'\napi-key: ak_7Hq2Lm9Zx4\n"),
        ),
        kv("app.debug", s(PEM_BLOCK)),
        kv(
            "customer.note",
            s("callback requested at +1 415-555-0132 or (212) 555-0187"),
        ),
    ];

    let checkout = ResourceSpans {
        resource: Some(Resource {
            attributes: vec![
                kv("service.name", s("checkout")),
                kv("service.version", s("1.2.3.4")),
                kv("owner.contact", s("ops-lead@acme-corp.io")),
                kv("host.ip", arr(vec![s("10.20.30.40")])),
                kv("oncall.maria@acme-corp.io", s("primary")),
            ],
            ..Default::default()
        }),
        scope_spans: vec![ScopeSpans {
            scope: Some(InstrumentationScope {
                name: "shop".into(),
                version: "2.0".into(),
                attributes: vec![kv("scope.owner", s("dev@acme-corp.io"))],
                dropped_attributes_count: 0,
            }),
            spans: vec![root, db],
            schema_url: String::new(),
        }],
        schema_url: String::new(),
    };
    let payments = ResourceSpans {
        resource: Some(Resource {
            attributes: vec![kv("service.name", s("payments"))],
            ..Default::default()
        }),
        scope_spans: vec![ScopeSpans {
            scope: Some(InstrumentationScope {
                name: "pay".into(),
                ..Default::default()
            }),
            spans: vec![pay],
            schema_url: String::new(),
        }],
        schema_url: String::new(),
    };
    ExportTraceServiceRequest {
        resource_spans: vec![checkout, payments],
    }
}
