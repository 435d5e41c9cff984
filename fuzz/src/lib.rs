//! What the fuzz targets share: the receive path from a decoded body into the trace buffer, with the
//! properties every accepted request must have checked on the way (nothing lost, nothing the downstream
//! could refuse, the buffer's accounting back to zero).

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::Span as ProtoSpan;
use prost::Message;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tailgate::buffer::{BufferLimits, TraceBuffer};
use tailgate::decisions::DecisionCache;
use tailgate::inbox::BufferOutput;
use tailgate::ingest::{IngestHandle, Pressure, SpanBatch};
use tailgate::metrics::{Metrics, ReceiverLabels};
use tailgate::otlp::{self, ExportBuilder, SpanRecord, TraceId, scan_export_request};
use tailgate::receiver::{ReceiveError, ReceiverContext, receive};
use tokio::sync::mpsc;

const RECEIVER: &str = "fuzz";

/// One receiver context for the whole run (building the metrics registry per input would dominate).
struct Receiver {
    ctx: ReceiverContext,
    batches: Mutex<mpsc::Receiver<SpanBatch>>,
}

fn receiver() -> &'static Receiver {
    static R: OnceLock<Receiver> = OnceLock::new();
    R.get_or_init(|| {
        let (ingest, batches) = IngestHandle::channel(4, Arc::new(Pressure::new(usize::MAX / 2)));
        Receiver {
            ctx: ReceiverContext {
                ingest,
                metrics: Metrics::new(),
                max_body_bytes: 4 << 20,
            },
            batches: Mutex::new(batches),
        }
    })
}

fn received(m: &Metrics) -> u64 {
    m.spans_received
        .get_or_create(&ReceiverLabels { receiver: RECEIVER })
        .get()
}

/// The fields of a span that must survive every transformation unchanged.
pub fn identity(trace_id: TraceId, s: &SpanRecord) -> (TraceId, u64, u64, u64, u64, String) {
    (
        trace_id,
        s.span_id,
        s.parent_span_id,
        s.start_unix_nano,
        s.end_unix_nano,
        s.name().to_owned(),
    )
}

/// Reads everything the engine reads from a span, and checks the span is what a downstream `prost`
/// decoder accepts (the exporter re-emits these bytes as they are).
pub fn check_span(s: &SpanRecord) {
    assert_ne!(s.span_id, 0, "an accepted span has a span id");
    let _ = s.name();
    let _ = s.duration_nanos();
    for kv in s.attributes() {
        let _ = (kv.key, kv.value.as_str(), kv.value.as_i64());
        let _ = tailgate::plugin::json_of_ref(kv.value);
    }
    for e in otlp::span_events(&s.raw) {
        let _ = otlp::event_name(e);
        for kv in otlp::event_attributes(e) {
            let _ = tailgate::plugin::json_of_ref(kv.value);
        }
    }
    for l in otlp::span_links(&s.raw) {
        otlp::link_attributes(l).for_each(drop);
    }
    let _ = otlp::span_status_message(&s.raw);
    let _ = otlp::span_trace_state(&s.raw);
    otlp::merged_resource_attributes(&s.origin.resource_fields).for_each(drop);
    otlp::merged_scope_attributes(&s.origin.scope_fields).for_each(drop);
    if let Err(e) = ProtoSpan::decode(&s.raw[..]) {
        panic!("the scan accepted a span prost cannot decode: {e}");
    }
}

/// Re-encodes spans as the exporter does and checks a `prost` decoder (what an OTLP downstream is) takes
/// the result and that a re-scan gives back the same spans.
pub fn check_export(spans: &[(TraceId, SpanRecord)]) {
    let mut b = ExportBuilder::new();
    for (_, s) in spans {
        b.push(s, Bytes::new());
    }
    let body = b.finish();
    let decoded = ExportTraceServiceRequest::decode(body.clone())
        .unwrap_or_else(|e| panic!("the export of accepted spans does not decode: {e}"));
    let n: usize = decoded
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .map(|s| s.spans.len())
        .sum();
    assert_eq!(n, spans.len(), "export lost or invented spans");
    let rescanned = scan_export_request(&body).expect("the export re-scans");
    assert_eq!(rescanned.rejected_count(), 0);
    let mut before: Vec<_> = spans.iter().map(|(t, s)| identity(*t, s)).collect();
    let mut after: Vec<_> = rescanned
        .spans
        .iter()
        .map(|(t, s)| identity(*t, s))
        .collect();
    before.sort();
    after.sort();
    assert_eq!(before, after, "export changed span identities");
}

/// Counts the spans in a request decoded with `prost` (for the accepted + rejected = sent identity).
pub fn prost_span_count(body: &[u8]) -> Option<usize> {
    let req = ExportTraceServiceRequest::decode(body).ok()?;
    Some(
        req.resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum(),
    )
}

/// The whole receive path for a protobuf body: scan, count, submit to the ingest queue, then into a
/// trace buffer with tiny limits so every trigger fires. Returns the number of accepted spans, or the
/// error (always a "malformed" one: the queue and memory bound are sized never to refuse).
pub fn receive_into_buffer(body: &Bytes) -> Result<u64, ReceiveError> {
    let r = receiver();
    let before = received(&r.ctx.metrics);
    let result = receive(&r.ctx, RECEIVER, body);
    let direct = scan_export_request(body);
    let accepted = match result {
        Ok(a) => a,
        Err(e) => {
            assert!(
                matches!(e, ReceiveError::Malformed(_)),
                "only malformed input may be refused here: {e}"
            );
            assert!(direct.is_err(), "receive refused what the scan accepts");
            assert!(!e.to_string().is_empty());
            return Err(e);
        }
    };
    let scanned = direct.expect("receive accepted what the scan refuses");
    assert_eq!(accepted.spans, scanned.spans.len() as u64);
    assert_eq!(accepted.rejected, scanned.rejected_count());
    assert_eq!(accepted.rejection_message.is_some(), accepted.rejected > 0);
    assert_eq!(received(&r.ctx.metrics) - before, accepted.spans);
    // Nothing silently lost: every span prost sees was either accepted or rejected with a reason.
    if let Some(n) = prost_span_count(body) {
        assert_eq!(
            n as u64,
            accepted.spans + accepted.rejected,
            "spans neither accepted nor rejected"
        );
    }
    for (_, s) in &scanned.spans {
        check_span(s);
    }
    check_export(&scanned.spans);

    let batch = {
        let mut rx = r.batches.lock().unwrap_or_else(|p| p.into_inner());
        let batch = rx.try_recv().ok();
        assert!(rx.try_recv().is_err(), "one request, at most one batch");
        batch
    };
    match batch {
        None => assert_eq!(accepted.spans, 0),
        Some(b) => {
            assert_eq!(b.span_count as u64, accepted.spans);
            buffer_accounting(b);
        }
    }
    Ok(accepted.spans)
}

/// Feeds a batch (and a second copy of its spans, as late or duplicate spans) through a buffer with tiny
/// limits and checks every span comes out exactly once per copy and the byte accounting returns to zero.
pub fn buffer_accounting(batch: SpanBatch) {
    let limits = BufferLimits {
        settle: Duration::from_millis(10),
        idle_timeout: Duration::from_millis(50),
        max_wait: Duration::from_millis(100),
        max_spans_per_trace: 3,
        max_bytes_per_trace: 2048,
        max_buffer_bytes: 8192,
    };
    let mut buffer = TraceBuffer::new(
        limits,
        Arc::new(DecisionCache::new(16, 16, Duration::from_secs(60))),
    );
    let n = batch.span_count;
    let copy = SpanBatch {
        traces: batch.traces.clone(),
        span_count: n,
        ack: None,
        charged: 0,
        decide_now: Vec::new(),
    };
    let t0 = tokio::time::Instant::now();
    let mut out = Vec::new();
    buffer.insert(batch, t0, &mut out);
    buffer.expire(t0 + Duration::from_millis(20), &mut out);
    buffer.insert(copy, t0 + Duration::from_millis(30), &mut out);
    buffer.expire(t0 + Duration::from_secs(1), &mut out);
    buffer.drain(t0 + Duration::from_secs(2), &mut out);
    let emitted: usize = out.iter().map(BufferOutput::span_count).sum();
    assert_eq!(emitted, 2 * n, "the buffer lost or invented spans");
    assert_eq!(buffer.bytes(), 0);
    assert_eq!(buffer.span_count(), 0);
    assert_eq!(buffer.trace_count(), 0);
}

/// Small traces described by the fuzzer, built with the `opentelemetry-proto` types and scanned as a
/// receiver would, for the targets that start after the buffer (plugin results).
pub mod trace {
    use arbitrary::Arbitrary;
    use bytes::Bytes;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{
        AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList, any_value,
    };
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span};
    use prost::Message;
    use tailgate::otlp::{SpanRecord, scan_export_request};

    /// The trace id every built span has.
    pub const TRACE_ID: u128 = 0x0af7651916cd43dd8448eb211c80319c;

    #[derive(Arbitrary, Debug, Clone)]
    pub enum Value {
        Str(String),
        Int(i64),
        Double(f64),
        Bool(bool),
        Bytes(Vec<u8>),
        Array(Vec<String>),
        Kv(Vec<(String, String)>),
        Empty,
    }

    #[derive(Arbitrary, Debug, Clone)]
    pub struct SpanSpec {
        pub name: String,
        pub attributes: Vec<(String, Value)>,
        pub status_message: Option<String>,
        pub events: Vec<(String, Vec<(String, Value)>)>,
        pub links: Vec<Vec<(String, Value)>>,
        /// Which resource / scope the span is sent under (modulo the number there are).
        pub resource: u8,
        pub scope: u8,
        pub parent: Option<u8>,
        pub start: u64,
        pub end: u64,
    }

    #[derive(Arbitrary, Debug, Clone)]
    pub struct TraceSpec {
        pub resources: Vec<Vec<(String, Value)>>,
        pub scopes: Vec<Vec<(String, Value)>>,
        pub spans: Vec<SpanSpec>,
    }

    fn any(v: &Value) -> Option<AnyValue> {
        use any_value::Value as V;
        let s = |s: &String| AnyValue {
            value: Some(V::StringValue(s.clone())),
        };
        let value = match v {
            Value::Str(x) => V::StringValue(x.clone()),
            Value::Int(x) => V::IntValue(*x),
            Value::Double(x) => V::DoubleValue(*x),
            Value::Bool(x) => V::BoolValue(*x),
            Value::Bytes(x) => V::BytesValue(x.clone()),
            Value::Array(x) => V::ArrayValue(ArrayValue {
                values: x.iter().map(s).collect(),
            }),
            Value::Kv(x) => V::KvlistValue(KeyValueList {
                values: x
                    .iter()
                    .map(|(k, v)| KeyValue {
                        key: k.clone(),
                        value: Some(s(v)),
                        ..Default::default()
                    })
                    .collect(),
            }),
            Value::Empty => return None,
        };
        Some(AnyValue { value: Some(value) })
    }

    fn attrs(a: &[(String, Value)]) -> Vec<KeyValue> {
        a.iter()
            .take(6)
            .map(|(k, v)| KeyValue {
                key: k.clone(),
                value: any(v),
                ..Default::default()
            })
            .collect()
    }

    impl TraceSpec {
        /// The request (at most 8 spans, 3 resources, 2 scopes per resource), with `trace_state` on
        /// every span.
        pub fn request(&self, trace_state: &str) -> ExportTraceServiceRequest {
            let n_res = self.resources.len().clamp(1, 3);
            let n_scopes = self.scopes.len().clamp(1, 2);
            let mut out: Vec<ResourceSpans> = (0..n_res)
                .map(|r| ResourceSpans {
                    resource: Some(Resource {
                        attributes: attrs(self.resources.get(r).map_or(&[][..], |a| a)),
                        ..Default::default()
                    }),
                    scope_spans: (0..n_scopes)
                        .map(|s| ScopeSpans {
                            scope: Some(InstrumentationScope {
                                name: format!("scope{s}"),
                                attributes: attrs(self.scopes.get(s).map_or(&[][..], |a| a)),
                                ..Default::default()
                            }),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                })
                .collect();
            for (i, s) in self.spans.iter().take(8).enumerate() {
                let id = i as u64 + 1;
                let parent = s.parent.map(|p| u64::from(p) % 9).unwrap_or(0);
                let span = Span {
                    trace_id: TRACE_ID.to_be_bytes().to_vec(),
                    span_id: id.to_be_bytes().to_vec(),
                    parent_span_id: if parent == 0 {
                        Vec::new()
                    } else {
                        parent.to_be_bytes().to_vec()
                    },
                    trace_state: trace_state.to_owned(),
                    name: s.name.clone(),
                    kind: (i % 6) as i32,
                    start_time_unix_nano: s.start,
                    end_time_unix_nano: s.end,
                    attributes: attrs(&s.attributes),
                    events: s
                        .events
                        .iter()
                        .take(3)
                        .map(|(name, a)| span::Event {
                            name: name.clone(),
                            attributes: attrs(a),
                            ..Default::default()
                        })
                        .collect(),
                    links: s
                        .links
                        .iter()
                        .take(2)
                        .map(|a| span::Link {
                            trace_id: vec![1; 16],
                            span_id: vec![2; 8],
                            attributes: attrs(a),
                            ..Default::default()
                        })
                        .collect(),
                    status: s.status_message.as_ref().map(|m| Status {
                        message: m.clone(),
                        code: 2,
                    }),
                    ..Default::default()
                };
                out[usize::from(s.resource) % n_res].scope_spans[usize::from(s.scope) % n_scopes]
                    .spans
                    .push(span);
            }
            ExportTraceServiceRequest {
                resource_spans: out,
            }
        }

        /// The spans as the buffer holds them.
        pub fn spans(&self, trace_state: &str) -> Vec<SpanRecord> {
            let body = Bytes::from(self.request(trace_state).encode_to_vec());
            let scanned = scan_export_request(&body).expect("a built request scans");
            assert_eq!(scanned.rejected_count(), 0);
            scanned.spans.into_iter().map(|(_, s)| s).collect()
        }
    }
}
