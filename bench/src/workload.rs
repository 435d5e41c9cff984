//! A realistic trace workload, pre-encoded: traces of 5-50 spans across 3-5 services, 10-30 attributes
//! per span with semantic-convention keys and some PII, 1-5 % error traces, a long tail of durations.
//! Spans are packed per service into requests of up to 512 spans, as an SDK's batch processor does, so a
//! trace arrives in several requests. Each replay round gives every trace a fresh id by patching the
//! trace id bytes in place (the positions are recorded at generation).

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue, any_value,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    ResourceSpans, ScopeSpans, Span, Status, span, status,
};
use prost::Message;
use std::collections::{HashMap, HashSet};

/// One encoded request and where its trace ids are.
pub struct Body {
    pub bytes: Vec<u8>,
    /// Offsets of the 16 trace id bytes of every span (and link) in `bytes`.
    pub trace_id_at: Vec<usize>,
    pub spans: usize,
}

impl Body {
    /// The body with every trace id made unique for `round`.
    pub fn for_round(&self, round: u64) -> Vec<u8> {
        let mut b = self.bytes.clone();
        let mix = round.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_le_bytes();
        for &at in &self.trace_id_at {
            for (i, m) in mix.iter().enumerate() {
                b[at + 8 + i] ^= m;
            }
        }
        b
    }
}

/// The pre-encoded workload of one round.
pub struct Workload {
    pub bodies: Vec<Body>,
    pub spans: usize,
    pub traces: usize,
    pub error_traces: usize,
    pub slow_traces: usize,
}

const SERVICES: [&str; 5] = ["frontend", "checkout", "payment", "inventory", "users"];
const MAX_SPANS_PER_REQUEST: usize = 512;

fn kv(key: &str, v: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(v) }),
        ..Default::default()
    }
}

fn s(key: &str, v: impl Into<String>) -> KeyValue {
    kv(key, any_value::Value::StringValue(v.into()))
}

fn i(key: &str, v: i64) -> KeyValue {
    kv(key, any_value::Value::IntValue(v))
}

fn attributes(rng: &mut fastrand::Rng, service: &str, n: usize) -> Vec<KeyValue> {
    let user = rng.u32(1000..99999);
    let pool: Vec<KeyValue> = vec![
        s(
            "http.request.method",
            ["GET", "POST", "PUT"][rng.usize(0..3)],
        ),
        s(
            "url.full",
            format!(
                "https://{service}.shop.example/api/v1/items/{}?session={:x}&page=2",
                rng.u32(..),
                rng.u64(..)
            ),
        ),
        s(
            "url.path",
            format!("/api/v1/items/{}", rng.u32(..1_000_000)),
        ),
        i(
            "http.response.status_code",
            [200, 200, 200, 201, 404][rng.usize(0..5)],
        ),
        s("server.address", format!("{service}.internal")),
        i("server.port", 8080),
        s("network.protocol.version", "1.1"),
        s(
            "user_agent.original",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/120.0 Safari/537.36",
        ),
        s(
            "client.address",
            format!("10.{}.{}.{}", rng.u8(..), rng.u8(..), rng.u8(1..)),
        ),
        s("user.email", format!("customer{user}@example.com")),
        s("enduser.id", format!("user-{user}")),
        s("db.system.name", "postgresql"),
        s(
            "db.query.text",
            format!(
                "SELECT id, name, price FROM items WHERE id = {} AND owner = 'customer{user}'",
                rng.u32(..)
            ),
        ),
        s("db.collection.name", "items"),
        s("messaging.system", "kafka"),
        s("thread.name", format!("worker-{}", rng.u8(..16))),
        i("thread.id", rng.i64(1..64)),
        s(
            "code.function.name",
            format!("{service}::handlers::handle_{}", rng.u8(..40)),
        ),
        s("code.file.path", format!("src/{service}/handlers.rs")),
        i("code.line.number", rng.i64(1..2000)),
        s(
            "payment.card_number",
            format!("4111 1111 1111 {:04}", rng.u16(..10000)),
        ),
        s(
            "app.order.id",
            format!("ORD-{:010}", rng.u64(..10_000_000_000)),
        ),
        kv(
            "app.cart.items",
            any_value::Value::ArrayValue(ArrayValue {
                values: (0..3)
                    .map(|_| AnyValue {
                        value: Some(any_value::Value::StringValue(format!(
                            "sku-{}",
                            rng.u16(..)
                        ))),
                    })
                    .collect(),
            }),
        ),
        kv(
            "app.cart.total",
            any_value::Value::DoubleValue(rng.f64() * 500.0),
        ),
        kv(
            "app.feature.new_checkout",
            any_value::Value::BoolValue(rng.bool()),
        ),
        s("rpc.system", "grpc"),
        s("rpc.service", format!("{service}.v1.Api")),
        s("rpc.method", "Get"),
        s(
            "http.request.header.authorization",
            format!(
                "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1c2VyLXt9In0.{:x}",
                rng.u64(..)
            ),
        ),
        s("app.tenant", ["acme", "globex", "initech"][rng.usize(0..3)]),
    ];
    let mut idx: Vec<usize> = (0..pool.len()).collect();
    rng.shuffle(&mut idx);
    idx.truncate(n.min(pool.len()));
    idx.sort_unstable();
    idx.into_iter().map(|k| pool[k].clone()).collect()
}

/// Root duration in nanoseconds: mostly 5-300 ms, a few percent over a second.
fn root_duration(rng: &mut fastrand::Rng) -> u64 {
    let ms = if rng.f64() < 0.03 {
        rng.u64(1_000..8_000)
    } else {
        (5.0 * (rng.f64() * 4.1).exp()) as u64
    };
    ms * 1_000_000
}

/// Generates one round of `traces` traces.
pub fn generate(traces: usize, seed: u64) -> Workload {
    let mut rng = fastrand::Rng::with_seed(seed);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut by_service: HashMap<&str, Vec<Span>> = HashMap::new();
    let mut ids = HashSet::new();
    let (mut errors, mut slow, mut total) = (0, 0, 0);
    for _ in 0..traces {
        let trace_id: [u8; 16] = rng.u128(..).to_be_bytes();
        ids.insert(trace_id);
        let n_services = rng.usize(3..=5);
        let services = &SERVICES[..n_services];
        let n_spans = rng.usize(5..=50);
        let duration = root_duration(&mut rng);
        if duration > 1_000_000_000 {
            slow += 1;
        }
        let is_error = rng.f64() < 0.03;
        if is_error {
            errors += 1;
        }
        let start = now - duration - rng.u64(..1_000_000_000);
        let mut spans: Vec<(u64, u64, u64, &str)> = Vec::with_capacity(n_spans); // id, start, end, service
        for k in 0..n_spans {
            let id = rng.u64(1..);
            let (parent, p_start, p_end, service) = if k == 0 {
                (0, start, start + duration, services[0])
            } else {
                let p = spans[rng.usize(..k)];
                (p.0, p.1, p.2, services[rng.usize(..n_services)])
            };
            let len = (p_end - p_start).max(2);
            let s0 = p_start + rng.u64(..len / 2);
            let s1 = (s0 + rng.u64(1..len / 2 + 1)).min(p_end);
            spans.push((id, s0, s1, service));
            let n_attrs = rng.usize(10..=30);
            let mut sp = Span {
                trace_id: trace_id.to_vec(),
                span_id: id.to_be_bytes().to_vec(),
                parent_span_id: if parent == 0 {
                    vec![]
                } else {
                    parent.to_be_bytes().to_vec()
                },
                name: format!(
                    "{} /api/v1/op{}",
                    ["GET", "POST"][rng.usize(0..2)],
                    rng.u8(..20)
                ),
                kind: [
                    span::SpanKind::Server,
                    span::SpanKind::Client,
                    span::SpanKind::Internal,
                ][rng.usize(0..3)] as i32,
                start_time_unix_nano: s0,
                end_time_unix_nano: s1,
                attributes: attributes(&mut rng, service, n_attrs),
                ..Default::default()
            };
            if is_error && k == n_spans - 1 {
                sp.status = Some(Status {
                    message: "upstream failed".into(),
                    code: status::StatusCode::Error as i32,
                });
                sp.events.push(span::Event {
                    time_unix_nano: s1,
                    name: "exception".into(),
                    attributes: vec![
                        s("exception.type", "TimeoutError"),
                        s(
                            "exception.message",
                            format!(
                                "timeout talking to db for customer{}@example.com",
                                rng.u16(..)
                            ),
                        ),
                    ],
                    dropped_attributes_count: 0,
                });
            }
            by_service.entry(service).or_default().push(sp);
        }
        total += n_spans;
    }
    let mut bodies = Vec::new();
    for service in SERVICES {
        let Some(spans) = by_service.remove(service) else {
            continue;
        };
        for chunk in spans.chunks(MAX_SPANS_PER_REQUEST) {
            let req = ExportTraceServiceRequest {
                resource_spans: vec![ResourceSpans {
                    resource: Some(Resource {
                        attributes: vec![
                            s("service.name", service),
                            s("service.version", "1.4.2"),
                            s("deployment.environment.name", "production"),
                            s("host.name", format!("{service}-7d9f8b6c4-x2x9z")),
                            s("telemetry.sdk.language", "rust"),
                            s("telemetry.sdk.name", "opentelemetry"),
                            s("telemetry.sdk.version", "0.31.0"),
                        ],
                        ..Default::default()
                    }),
                    scope_spans: vec![ScopeSpans {
                        scope: Some(InstrumentationScope {
                            name: "bench".into(),
                            version: "1.0".into(),
                            ..Default::default()
                        }),
                        spans: chunk.to_vec(),
                        schema_url: String::new(),
                    }],
                    schema_url: String::new(),
                }],
            };
            let bytes = req.encode_to_vec();
            let trace_id_at = find_trace_ids(&bytes, &ids);
            bodies.push(Body {
                bytes,
                trace_id_at,
                spans: chunk.len(),
            });
        }
    }
    fastrand::Rng::with_seed(seed ^ 1).shuffle(&mut bodies);
    Workload {
        bodies,
        spans: total,
        traces,
        error_traces: errors,
        slow_traces: slow,
    }
}

/// Offsets of `0x0a 0x10 <16 bytes of a known trace id>` (field 1, 16 bytes) in `b`.
fn find_trace_ids(b: &[u8], ids: &HashSet<[u8; 16]>) -> Vec<usize> {
    let mut out = Vec::new();
    let mut k = 0;
    while k + 18 <= b.len() {
        if b[k] == 0x0a && b[k + 1] == 0x10 {
            let cand: [u8; 16] = b[k + 2..k + 18].try_into().unwrap_or([0; 16]);
            if ids.contains(&cand) {
                out.push(k + 2);
                k += 18;
                continue;
            }
        }
        k += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_span_has_its_trace_id_found_and_rounds_differ() {
        let w = generate(50, 7);
        for b in &w.bodies {
            assert_eq!(b.trace_id_at.len(), b.spans);
            let r1 = b.for_round(1);
            let req = ExportTraceServiceRequest::decode(&r1[..]).expect("still valid");
            let orig = ExportTraceServiceRequest::decode(&b.bytes[..]).expect("valid");
            let a = &req.resource_spans[0].scope_spans[0].spans[0];
            let o = &orig.resource_spans[0].scope_spans[0].spans[0];
            assert_ne!(a.trace_id, o.trace_id);
            assert_eq!(a.span_id, o.span_id);
        }
        assert_eq!(w.bodies.iter().map(|b| b.spans).sum::<usize>(), w.spans);
    }
}
