//! Hostile input against both receivers on 127.0.0.1:0 (issue 9, "Hostile input"): decompression bombs,
//! oversized attributes, values nested thousands deep, invalid UTF-8, and a trace of 200 000 tiny spans.
//! Each must end in a clear refusal naming the problem or in defined, counted handling.

use super::*;
use crate::buffer::{BufferLimits, TraceBuffer};
use crate::decisions::DecisionCache;
use crate::inbox::{BufferOutput, Trigger};
use crate::ingest::{Pressure, SpanBatch};
use crate::metrics::{ReceiverLabels, RefusedLabels};
use crate::otlp::ScanError;
use crate::otlp::rpc::RpcStatus;
use crate::otlp::scan_export_request;
use crate::testing::{kv_str, request, sample_request, span, span_in};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::{Status as SpanStatus, span::Event, span::Link};
use std::io::Write;
use std::net::SocketAddr;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tonic::Code;

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Grpc,
    Http,
}

/// A receiver on port 0 with the buffer's end of its ingest queue.
struct Running {
    addr: SocketAddr,
    batches: mpsc::Receiver<SpanBatch>,
    metrics: Arc<Metrics>,
    stop: oneshot::Sender<()>,
}

async fn start(kind: Kind, max_body_bytes: usize, memory: usize) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let metrics = Metrics::new();
    let (ingest, batches) = IngestHandle::channel(8, Arc::new(Pressure::new(memory)));
    let ctx = ReceiverContext {
        ingest,
        metrics: Arc::clone(&metrics),
        max_body_bytes,
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let shutdown = async move {
        let _ = stopped.await;
    };
    match kind {
        Kind::Grpc => tokio::spawn(grpc::serve(listener, ctx, shutdown)),
        Kind::Http => tokio::spawn(http::serve(listener, ctx, shutdown)),
    };
    Running {
        addr,
        batches,
        metrics,
        stop,
    }
}

impl Running {
    fn requests_refused(&self, receiver: &'static str, reason: &'static str) -> u64 {
        self.metrics
            .requests_refused
            .get_or_create(&RefusedLabels { receiver, reason })
            .get()
    }

    fn received(&self, receiver: &'static str) -> u64 {
        self.metrics
            .spans_received
            .get_or_create(&ReceiverLabels { receiver })
            .get()
    }

    fn no_batch(&mut self) {
        assert!(self.batches.try_recv().is_err(), "nothing may be submitted");
    }

    /// Sends `body` as the request (protobuf, or JSON over HTTP) and returns the refusal as a gRPC code
    /// and message (HTTP: the status code is checked against `http_status` first).
    async fn refused(
        &self,
        kind: Kind,
        body: Vec<u8>,
        gzip: bool,
        http_status: u16,
    ) -> (Code, String) {
        match kind {
            Kind::Grpc => {
                let status = grpc_export(self.addr, Bytes::from(body), gzip)
                    .await
                    .expect_err("refused");
                (status.code(), status.message().to_owned())
            }
            Kind::Http => {
                let json = body.first() == Some(&b'{');
                let mut req = reqwest::Client::new()
                    .post(format!("http://{}{}", self.addr, http::TRACES_PATH))
                    .header(
                        "content-type",
                        if json {
                            "application/json"
                        } else {
                            "application/x-protobuf"
                        },
                    )
                    .body(body);
                if gzip {
                    req = req.header("content-encoding", "gzip");
                }
                let response = req.send().await.expect("sent");
                assert_eq!(response.status().as_u16(), http_status);
                let body = response.bytes().await.expect("body");
                let status = if json {
                    let v: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
                    RpcStatus {
                        code: v["code"].as_i64().expect("code") as i32,
                        message: v["message"].as_str().expect("message").to_owned(),
                        details: Vec::new(),
                    }
                } else {
                    RpcStatus::decode(body).expect("google.rpc.Status")
                };
                (Code::from_i32(status.code), status.message)
            }
        }
    }
}

/// Sends raw bytes as the Export message (gzip-framed when asked, with the bytes already compressed).
async fn grpc_export(
    addr: SocketAddr,
    body: Bytes,
    compressed: bool,
) -> Result<ExportTraceServiceResponse, tonic::Status> {
    if compressed {
        // tonic compresses on its own; a pre-compressed bomb goes out as a hand-made frame instead.
        return grpc_compressed_frame(addr, body).await;
    }
    super::tests::grpc_raw_export(addr, body).await
}

/// One gRPC frame flagged as gzip-compressed carrying `payload` as it is, over HTTP/2 with hyper's
/// client; the answer is an error status (trailers-only, or in the trailers).
async fn grpc_compressed_frame(
    addr: SocketAddr,
    payload: Bytes,
) -> Result<ExportTraceServiceResponse, tonic::Status> {
    let mut frame = vec![1u8];
    frame.extend_from_slice(&u32::try_from(payload.len()).expect("< 4 GiB").to_be_bytes());
    frame.extend_from_slice(&payload);
    let response = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .expect("client")
        .post(format!("http://{addr}{}", grpc::EXPORT_PATH))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-encoding", "gzip")
        .body(frame)
        .send()
        .await
        .expect("sent");
    let headers = response.headers().clone();
    let code = headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .expect("trailers-only error answer");
    let message = headers
        .get("grpc-message")
        .and_then(|v| v.to_str().ok())
        .map(percent_decode)
        .unwrap_or_default();
    Err(tonic::Status::new(Code::from_i32(code), message))
}

/// gRPC percent-encodes `grpc-message`.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn encode(req: &ExportTraceServiceRequest) -> Vec<u8> {
    req.encode_to_vec()
}

// ---- protobuf by hand (for what prost's encoder would overflow its stack on) ----

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn varint_len(v: u64) -> usize {
    let mut out = Vec::new();
    varint(v, &mut out);
    out.len()
}

/// An `AnyValue` nested `depth` levels deep (arrays, or key-value lists when `kvlist`) around a string,
/// built outside-in in linear time.
fn nested_value(depth: usize, kvlist: bool) -> Vec<u8> {
    let leaf = [0x0a, 1, b'x']; // AnyValue { string_value: "x" }
    // Per level: AnyValue { array_value(5) | kvlist_value(6): L { values(1): inner } }, where for a
    // kvlist the inner is KeyValue { key(1): "k", value(2): AnyValue }.
    let mut lens = Vec::with_capacity(depth + 1);
    let mut len = leaf.len();
    lens.push(len);
    for _ in 0..depth {
        let inner = if kvlist {
            let kv = 3 + 1 + varint_len(len as u64) + len;
            1 + varint_len(kv as u64) + kv
        } else {
            1 + varint_len(len as u64) + len
        };
        len = 1 + varint_len(inner as u64) + inner;
        lens.push(len);
    }
    let mut out = Vec::with_capacity(len);
    for level in (1..=depth).rev() {
        let below = lens[level - 1];
        if kvlist {
            let kv = 3 + 1 + varint_len(below as u64) + below;
            let list = 1 + varint_len(kv as u64) + kv;
            out.push(0x32);
            varint(list as u64, &mut out);
            out.push(0x0a);
            varint(kv as u64, &mut out);
            out.extend_from_slice(&[0x0a, 1, b'k', 0x12]);
            varint(below as u64, &mut out);
        } else {
            let list = 1 + varint_len(below as u64) + below;
            out.push(0x2a);
            varint(list as u64, &mut out);
            out.push(0x0a);
            varint(below as u64, &mut out);
        }
    }
    out.extend_from_slice(&leaf);
    assert_eq!(out.len(), len);
    out
}

fn len_field(field: u8, body: &[u8], out: &mut Vec<u8>) {
    out.push(field << 3 | 2);
    varint(body.len() as u64, out);
    out.extend_from_slice(body);
}

/// A request of one valid span carrying `attribute` (an encoded `KeyValue`) as its last attribute.
fn request_with_attribute(attribute: &[u8]) -> Vec<u8> {
    let mut span = span(1, 0, "hostile").encode_to_vec();
    len_field(9, attribute, &mut span);
    let mut scope = Vec::new();
    len_field(2, &span, &mut scope);
    let mut resource = Vec::new();
    len_field(2, &scope, &mut resource);
    let mut req = Vec::new();
    len_field(1, &resource, &mut req);
    req
}

fn deep_attribute(depth: usize, kvlist: bool) -> Vec<u8> {
    let mut kv = Vec::new();
    len_field(1, b"deep", &mut kv);
    len_field(2, &nested_value(depth, kvlist), &mut kv);
    kv
}

/// OTLP/JSON with one span whose attribute is `depth` arrays deep.
fn deep_json(depth: usize) -> Vec<u8> {
    let v = [
        r#"{"arrayValue":{"values":["#.repeat(depth),
        r#"{"stringValue":"x"}"#.to_owned(),
        "]}}".repeat(depth),
    ]
    .concat();
    format!(
        r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{{"traceId":"0102030405060708090a0b0c0d0e0f10","spanId":"1111111111111111","name":"deep","attributes":[{{"key":"deep","value":{v}}}]}}]}}]}}]}}"#
    )
    .into_bytes()
}

/// A gzip member that inflates to `total` zero bytes, built from one compressed chunk repeated (each
/// chunk ends with a full flush, so it references nothing before it); its trailer is bogus, which a
/// bounded decoder never reaches.
fn gzip_bomb(total: u64) -> Vec<u8> {
    const CHUNK: usize = 16 << 20;
    assert_eq!(total % CHUNK as u64, 0);
    let zeros = vec![0u8; CHUNK];
    let mut deflate = flate2::Compress::new(flate2::Compression::best(), false);
    let mut chunk = Vec::new();
    while deflate.total_in() < CHUNK as u64 {
        chunk.reserve(1 << 20);
        let at = deflate.total_in() as usize;
        deflate
            .compress_vec(&zeros[at..], &mut chunk, flate2::FlushCompress::Full)
            .expect("compress");
    }
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    for _ in 0..total / CHUNK as u64 {
        out.extend_from_slice(&chunk);
    }
    out.extend_from_slice(&[0x03, 0x00]); // final, empty fixed-Huffman block
    out.extend_from_slice(&[0; 8]); // CRC-32 and size: wrong, never checked
    out
}

/// Peak resident memory of this process, from `/proc` (Linux), in bytes.
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

// ---- decompression bombs ----

#[test]
fn gzip_bomb_of_four_gib_inflates_at_most_the_limit() {
    let bomb = gzip_bomb(4 << 30);
    assert!(bomb.len() < 8 << 20, "{} bytes", bomb.len());
    let err = gunzip_bounded(&bomb, 8 << 20).expect_err("a bomb");
    assert!(
        matches!(err, ReceiveError::TooLarge { limit, stage: DECOMPRESSED } if limit == 8 << 20),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "request body exceeds the limit of 8388608 bytes once decompressed"
    );
    // Multi-member bombs (gzip allows concatenated members) are bounded the same way.
    let member = {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(&vec![0u8; 1 << 20]).expect("write");
        enc.finish().expect("finish")
    };
    let members = member.repeat(64);
    assert!(matches!(
        gunzip_bounded(&members, 8 << 20),
        Err(ReceiveError::TooLarge { .. })
    ));
    assert_eq!(
        gunzip_bounded(&members, 64 << 20).expect("fits").len(),
        64 << 20
    );
    if let Some(peak) = peak_rss() {
        assert!(
            peak < 1 << 30,
            "peak RSS {peak} bytes: the bomb was inflated"
        );
    }
}

#[tokio::test]
async fn gzip_bomb_of_four_gib_is_refused_by_both_receivers_with_bounded_memory() {
    let bomb = gzip_bomb(4 << 30);
    for kind in [Kind::Http, Kind::Grpc] {
        let mut rx = start(kind, 8 << 20, 64 << 20).await;
        let (code, message) = rx.refused(kind, bomb.clone(), true, 413).await;
        assert_eq!(code, Code::ResourceExhausted, "{message}");
        assert!(
            message.contains("8388608") && message.contains("decompress"),
            "{message}"
        );
        rx.no_batch();
        let label = if kind == Kind::Http { "http" } else { "grpc" };
        assert_eq!(rx.requests_refused(label, "too_large"), 1);
        let _ = rx.stop.send(());
    }
    if let Some(peak) = peak_rss() {
        assert!(
            peak < 1 << 30,
            "peak RSS {peak} bytes: the bomb was inflated"
        );
    }
}

// ---- oversized attributes ----

#[tokio::test]
async fn oversized_attributes_are_accepted_within_the_body_limit_and_decided_at_once() {
    // A 3 MiB value, a 64 KiB key and 20 000 attributes on one span: valid OTLP, within the 8 MiB body
    // limit, so accepted; the buffer's per-trace byte bound decides the trace on arrival.
    let mut big = span(1, 0, "big");
    big.attributes = vec![
        kv_str("blob", &"v".repeat(3 << 20)),
        kv_str(&"k".repeat(64 << 10), "x"),
    ];
    big.attributes
        .extend((0..20_000).map(|i| kv_str(&format!("a{i}"), "x")));
    let body = encode(&request("svc", vec![big]));
    let mut rx = start(Kind::Http, 8 << 20, 64 << 20).await;
    let response = reqwest::Client::new()
        .post(format!("http://{}{}", rx.addr, http::TRACES_PATH))
        .header("content-type", "application/x-protobuf")
        .body(body.clone())
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    let batch = rx.batches.try_recv().expect("submitted");
    assert_eq!(batch.span_count, 1);
    let record = &batch.traces[0].1[0];
    assert_eq!(record.attributes().count(), 20_002);
    assert!(batch.charged_bytes() > 3 << 20);
    let mut buffer = TraceBuffer::new(
        BufferLimits {
            max_bytes_per_trace: 1 << 20,
            ..limits()
        },
        Arc::new(DecisionCache::new(100, 100, Duration::from_secs(60))),
    );
    let mut out = Vec::new();
    buffer.insert(batch, tokio::time::Instant::now(), &mut out);
    assert!(matches!(&out[..], [BufferOutput::Due(t)] if t.trigger == Trigger::Size));
    assert_eq!(buffer.bytes(), 0);

    // Past the body limit the same request is refused whole, naming the limit.
    let mut small = start(Kind::Grpc, 1 << 20, 64 << 20).await;
    let (code, message) = small.refused(Kind::Grpc, body, false, 413).await;
    assert_eq!(code, Code::ResourceExhausted);
    assert!(message.contains("1048576"), "{message}");
    small.no_batch();
    let _ = rx.stop.send(());
    let _ = small.stop.send(());
}

#[tokio::test]
async fn a_span_larger_than_the_memory_bound_is_admitted_alone_then_backpressure() {
    // The bound admits a batch larger than itself only into an empty queue and buffer (or it could
    // never be accepted); the next request is pushed back with 429 until the buffer has decided it.
    let mut big = span(1, 0, "big");
    big.attributes = vec![kv_str("blob", &"v".repeat(2 << 20))];
    let body = encode(&request("svc", vec![big]));
    let mut rx = start(Kind::Http, 8 << 20, 1 << 20).await;
    let post = |body: Vec<u8>| {
        reqwest::Client::new()
            .post(format!("http://{}{}", rx.addr, http::TRACES_PATH))
            .header("content-type", "application/x-protobuf")
            .body(body)
            .send()
    };
    assert_eq!(post(body.clone()).await.expect("sent").status(), 200);
    let second = post(body).await.expect("sent");
    assert_eq!(second.status(), 429);
    assert!(second.headers().contains_key("retry-after"));
    assert_eq!(rx.requests_refused("http", "memory_pressure"), 1);
    assert_eq!(
        rx.metrics
            .spans_refused
            .get_or_create(&RefusedLabels {
                receiver: "http",
                reason: "memory_pressure"
            })
            .get(),
        1
    );
    assert_eq!(rx.received("http"), 1);
    assert_eq!(rx.batches.try_recv().expect("first").span_count, 1);
    rx.no_batch();
    let _ = rx.stop.send(());
}

// ---- deeply nested values ----

#[tokio::test]
async fn values_nested_thousands_deep_are_refused_naming_the_attribute() {
    for (depth, kvlist) in [(100_000, false), (20_000, true), (33, false)] {
        let body = request_with_attribute(&deep_attribute(depth, kvlist));
        let err = scan_export_request(&Bytes::from(body.clone())).expect_err("too deep");
        assert_eq!(
            err.path,
            "resource_spans[0].scope_spans[0].spans[0].attributes[0]"
        );
        assert_eq!(err.problem, "attribute value nested deeper than 32 levels");
        for kind in [Kind::Grpc, Kind::Http] {
            let mut rx = start(kind, 4 << 20, 64 << 20).await;
            let (code, message) = rx.refused(kind, body.clone(), false, 400).await;
            assert_eq!(code, Code::InvalidArgument);
            assert!(
                message.contains("spans[0].attributes[0]")
                    && message.contains("nested deeper than 32 levels"),
                "{message}"
            );
            rx.no_batch();
            let _ = rx.stop.send(());
        }
    }
    // At the limit it is accepted.
    let ok = request_with_attribute(&deep_attribute(31, false));
    assert_eq!(
        scan_export_request(&Bytes::from(ok))
            .expect("32 levels")
            .spans
            .len(),
        1
    );
}

#[tokio::test]
async fn json_values_nested_thousands_deep_are_400() {
    let mut rx = start(Kind::Http, 4 << 20, 64 << 20).await;
    // Deeper than serde_json's recursion limit: refused while parsing, without deep recursion.
    let (code, message) = rx.refused(Kind::Http, deep_json(5_000), false, 400).await;
    assert_eq!(code, Code::InvalidArgument);
    assert!(
        message.starts_with("malformed OTLP/JSON trace request: recursion limit exceeded"),
        "{message}"
    );
    // Within the parser's limit but past the scan's.
    let (code, message) = rx.refused(Kind::Http, deep_json(36), false, 400).await;
    assert_eq!(code, Code::InvalidArgument);
    assert!(
        message.contains("nested deeper than 32 levels"),
        "{message}"
    );
    rx.no_batch();
    assert_eq!(rx.requests_refused("http", "malformed"), 2);
    let _ = rx.stop.send(());
}

// ---- invalid UTF-8 ----

/// Replaces the (unique) marker `ZZZZ` in an encoded request with bytes that are not UTF-8.
fn corrupt_marker(req: &ExportTraceServiceRequest) -> Vec<u8> {
    let mut body = encode(req);
    let at = body
        .windows(4)
        .position(|w| w == b"ZZZZ")
        .expect("marker in the body");
    body[at..at + 4].copy_from_slice(&[0xc3, 0x28, 0xff, 0xfe]);
    body
}

#[test]
fn invalid_utf8_in_any_string_field_is_refused_naming_it() {
    type Edit = fn(&mut ExportTraceServiceRequest);
    let cases: Vec<(Edit, &str)> = vec![
        (
            |r| r.resource_spans[0].scope_spans[0].spans[0].name = "ZZZZ".into(),
            "spans[0].name",
        ),
        (
            |r| r.resource_spans[0].scope_spans[0].spans[0].trace_state = "ZZZZ".into(),
            "spans[0].trace_state",
        ),
        (
            |r| r.resource_spans[0].scope_spans[0].spans[1].attributes = vec![kv_str("ZZZZ", "v")],
            "spans[1].attributes[0].key",
        ),
        (
            |r| r.resource_spans[0].scope_spans[0].spans[1].attributes = vec![kv_str("k", "ZZZZ")],
            "spans[1].attributes[0].value",
        ),
        (
            |r| {
                r.resource_spans[0]
                    .resource
                    .as_mut()
                    .expect("resource")
                    .attributes = vec![kv_str("service.name", "ZZZZ")]
            },
            "resource_spans[0].resource.attributes[0].value",
        ),
        (
            |r| {
                r.resource_spans[0].scope_spans[0]
                    .scope
                    .as_mut()
                    .expect("scope")
                    .name = "ZZZZ".into()
            },
            "scope_spans[0].scope.name",
        ),
        (
            |r| {
                r.resource_spans[0].scope_spans[0].spans[2].events = vec![Event {
                    name: "ZZZZ".into(),
                    ..Default::default()
                }]
            },
            "spans[2].events[0].name",
        ),
        (
            |r| {
                r.resource_spans[0].scope_spans[0].spans[2].links = vec![Link {
                    trace_state: "ZZZZ".into(),
                    ..Default::default()
                }]
            },
            "spans[2].links[0].trace_state",
        ),
        (
            |r| {
                r.resource_spans[0].scope_spans[0].spans[2].status = Some(SpanStatus {
                    message: "ZZZZ".into(),
                    code: 2,
                })
            },
            "spans[2].status.message",
        ),
        (
            |r| r.resource_spans[0].schema_url = "ZZZZ".into(),
            "resource_spans[0].schema_url",
        ),
    ];
    for (edit, place) in cases {
        let mut req = sample_request();
        edit(&mut req);
        let err: ScanError =
            scan_export_request(&Bytes::from(corrupt_marker(&req))).expect_err("invalid UTF-8");
        assert!(
            err.to_string().contains(place) && err.problem == "invalid UTF-8",
            "{place}: {err}"
        );
    }
}

#[tokio::test]
async fn invalid_utf8_is_invalid_argument_and_400_for_protobuf_and_json() {
    let mut req = sample_request();
    req.resource_spans[0].scope_spans[0].spans[1].attributes = vec![kv_str("db.statement", "ZZZZ")];
    let body = corrupt_marker(&req);
    for kind in [Kind::Grpc, Kind::Http] {
        let mut rx = start(kind, 1 << 20, 64 << 20).await;
        let (code, message) = rx.refused(kind, body.clone(), false, 400).await;
        assert_eq!(code, Code::InvalidArgument);
        assert!(
            message.contains("spans[1].attributes[0].value: invalid UTF-8"),
            "{message}"
        );
        rx.no_batch();
        let _ = rx.stop.send(());
    }
    // JSON: raw bytes that are not UTF-8 inside a string, and an escaped lone surrogate.
    let mut rx = start(Kind::Http, 1 << 20, 64 << 20).await;
    let json = |name: &[u8]| {
        [
            &br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"0102030405060708090a0b0c0d0e0f10","spanId":"1111111111111111","name":""#[..],
            name,
            &br#""}]}]}]}"#[..],
        ]
        .concat()
    };
    let (code, message) = rx
        .refused(Kind::Http, json(&[0xc3, 0x28]), false, 400)
        .await;
    assert_eq!(code, Code::InvalidArgument);
    assert!(message.contains("invalid unicode code point"), "{message}");
    let (code, message) = rx.refused(Kind::Http, json(br"\ud800"), false, 400).await;
    assert_eq!(code, Code::InvalidArgument);
    assert!(message.contains("hex escape"), "{message}");
    rx.no_batch();
    assert_eq!(rx.requests_refused("http", "malformed"), 2);
    let _ = rx.stop.send(());
}

// ---- a trace of 200 000 tiny spans ----

fn limits() -> BufferLimits {
    BufferLimits {
        settle: Duration::from_secs(2),
        idle_timeout: Duration::from_secs(10),
        max_wait: Duration::from_secs(30),
        max_spans_per_trace: 10_000,
        max_bytes_per_trace: 8 << 20,
        max_buffer_bytes: 1 << 30,
    }
}

#[test]
fn two_hundred_thousand_tiny_spans_of_one_trace_are_bounded_and_all_accounted() {
    const TRACE: u128 = 0xfeed;
    const PER_REQUEST: u64 = 50_000;
    let metrics = Metrics::new();
    let (ingest, mut batches) = IngestHandle::channel(8, Arc::new(Pressure::new(1 << 30)));
    let ctx = ReceiverContext {
        ingest,
        metrics: Arc::clone(&metrics),
        max_body_bytes: 8 << 20,
    };
    let mut buffer = TraceBuffer::new(
        limits(),
        Arc::new(DecisionCache::new(100, 100, Duration::from_secs(60))),
    );
    let t0 = tokio::time::Instant::now();
    let mut out = Vec::new();
    for r in 0..4u64 {
        let spans = (0..PER_REQUEST)
            .map(|i| {
                let id = r * PER_REQUEST + i + 1;
                span_in(TRACE, id, if id == 1 { 0 } else { 1 }, "t", id, id + 1)
            })
            .collect();
        let body = Bytes::from(encode(&request("svc", spans)));
        let accepted = receive(&ctx, "http", &body).expect("accepted");
        assert_eq!(accepted.spans, PER_REQUEST);
        let batch = batches.try_recv().expect("submitted");
        buffer.insert(batch, t0 + Duration::from_millis(r), &mut out);
        // The per-trace bound holds the trace for at most one request's worth past max_spans_per_trace:
        // it is decided on the insert that reaches the bound, and later spans follow as late spans.
        assert_eq!(buffer.span_count(), 0);
        assert_eq!(buffer.bytes(), 0);
    }
    assert_eq!(
        metrics
            .spans_received
            .get_or_create(&ReceiverLabels { receiver: "http" })
            .get(),
        4 * PER_REQUEST
    );
    let (mut due, mut late) = (0, 0);
    for o in &out {
        match o {
            BufferOutput::Due(t) => {
                assert_eq!(t.trigger, Trigger::Size);
                due += t.spans.len();
            }
            BufferOutput::Late(l) => late += l.spans.len(),
        }
    }
    assert_eq!(due, PER_REQUEST as usize, "decided once, at the size bound");
    assert_eq!(
        late,
        3 * PER_REQUEST as usize,
        "the rest follow the decision"
    );
    assert_eq!(buffer.trace_count(), 0);
}

// ---- duplicate span ids and clock-skewed timestamps ----

/// Runs spans through what follows the receiver: the buffer (drained), the policy's default keep, the
/// exporter's annotation and encoding; returns the exported spans as a downstream decodes them.
fn through_pipeline(
    batches: Vec<SpanBatch>,
    metrics: &Metrics,
) -> Vec<opentelemetry_proto::tonic::trace::v1::Span> {
    let mut buffer = TraceBuffer::new(
        limits(),
        Arc::new(DecisionCache::new(100, 100, Duration::from_secs(60))),
    );
    let t0 = tokio::time::Instant::now();
    let mut out = Vec::new();
    for b in batches {
        buffer.insert(b, t0, &mut out);
    }
    buffer.drain(t0, &mut out);
    let policy = crate::pipeline::Policy::with_default(crate::config::DefaultDecision::Keep);
    let mut builder = crate::otlp::ExportBuilder::new();
    for o in out {
        let BufferOutput::Due(t) = o else {
            panic!("nothing was decided before, so nothing is late")
        };
        // Everything a trace meets before export must take the hostile spans too.
        metrics.topology.observe(&t.spans, &policy.redactors);
        let _ = crate::plugin::pack(&t.spans);
        let _ = crate::plugin::marshal::full_trace(&t.spans);
        let summary = crate::plugin::marshal::summary(t.trace_id, &t.spans, u64::MAX);
        assert_eq!(summary.span_count as usize, t.spans.len());
        assert!(summary.duration_nanos <= summary.end_unix_nano);
        let d = policy.decide(t.trace_id, &t.spans, metrics);
        assert!(d.keep);
        let info = crate::decisions::KeepInfo {
            rule: d.rule,
            applied: d.applied,
            rescued_by: None,
        };
        let kept = crate::pipeline::annotate(t.spans, &info);
        for (i, s) in kept.spans.iter().enumerate() {
            builder.push(s, kept.patch_of(i).clone());
        }
    }
    ExportTraceServiceRequest::decode(builder.finish())
        .expect("the export decodes")
        .resource_spans
        .into_iter()
        .flat_map(|r| r.scope_spans)
        .flat_map(|s| s.spans)
        .collect()
}

#[test]
fn duplicate_span_ids_are_passed_through_and_counted_not_merged() {
    // The same span id twice in one request, again in a second request, and a span that is its own
    // parent: tailgate forwards what it is sent (deduplicating would need per-span state and would
    // guess which copy is right); each copy is counted as received and exported.
    let metrics = Metrics::new();
    let (ingest, mut batches) = IngestHandle::channel(8, Arc::new(Pressure::new(1 << 30)));
    let ctx = ReceiverContext {
        ingest,
        metrics: Arc::clone(&metrics),
        max_body_bytes: 1 << 20,
    };
    const T: u128 = 0xd0d0;
    let first = request(
        "svc",
        vec![
            span_in(T, 7, 0, "root", 10, 20),
            span_in(T, 7, 0, "root again", 10, 20),
            span_in(T, 8, 8, "own parent", 11, 12),
        ],
    );
    let second = request(
        "other",
        vec![span_in(T, 7, 0, "root from elsewhere", 10, 20)],
    );
    let mut got = Vec::new();
    for req in [first, second] {
        let accepted = receive(&ctx, "grpc", &Bytes::from(encode(&req))).expect("accepted");
        assert_eq!(accepted.rejected, 0);
        got.push(batches.try_recv().expect("submitted"));
    }
    assert_eq!(
        metrics
            .spans_received
            .get_or_create(&ReceiverLabels { receiver: "grpc" })
            .get(),
        4
    );
    let exported = through_pipeline(got, &metrics);
    let mut names: Vec<&str> = exported.iter().map(|s| s.name.as_str()).collect();
    names.sort();
    assert_eq!(
        names,
        ["own parent", "root", "root again", "root from elsewhere"]
    );
    assert_eq!(
        exported
            .iter()
            .filter(|s| s.span_id == 7u64.to_be_bytes())
            .count(),
        3
    );
}

#[test]
fn clock_skewed_timestamps_are_kept_as_sent_and_never_overflow() {
    // End before start, zero, the far past and the far future (u64::MAX ns is the year 2554): OTLP
    // does not forbid them, tailgate keeps them as sent. Durations saturate at 0, the buffer's timers run
    // on arrival time (a span "from the future" is not held longer), and nothing overflows.
    let metrics = Metrics::new();
    const T: u128 = 0x5e3e;
    let spans = vec![
        span_in(T, 1, 0, "end before start", 2_000, 1_000),
        span_in(T, 2, 1, "zero", 0, 0),
        span_in(T, 3, 1, "far future", u64::MAX - 1, u64::MAX),
        span_in(T, 4, 1, "whole range", 0, u64::MAX),
        span_in(T, 5, 1, "end zero", u64::MAX, 0),
    ];
    let body = Bytes::from(encode(&request("svc", spans)));
    let scanned = scan_export_request(&body).expect("valid");
    let durations: Vec<u64> = scanned
        .spans
        .iter()
        .map(|(_, s)| s.duration_nanos())
        .collect();
    assert_eq!(durations, [0, 0, 1, u64::MAX, 0]);

    // The buffer decides by arrival: idle/max-wait from when the spans came, whatever they claim.
    let mut buffer = TraceBuffer::new(
        limits(),
        Arc::new(DecisionCache::new(100, 100, Duration::from_secs(60))),
    );
    let t0 = tokio::time::Instant::now();
    let mut out = Vec::new();
    buffer.insert(SpanBatch::from_scanned(scanned), t0, &mut out);
    assert_eq!(buffer.next_deadline(), Some(t0 + limits().settle));
    buffer.expire(t0 + limits().settle, &mut out);
    assert!(matches!(&out[..], [BufferOutput::Due(t)] if t.trigger == Trigger::Settle));

    let batch = SpanBatch::from_scanned(scan_export_request(&body).expect("valid"));
    let exported = through_pipeline(vec![batch], &metrics);
    let mut times: Vec<(u64, u64)> = exported
        .iter()
        .map(|s| (s.start_time_unix_nano, s.end_time_unix_nano))
        .collect();
    times.sort();
    assert_eq!(
        times,
        [
            (0, 0),
            (0, u64::MAX),
            (2_000, 1_000),
            (u64::MAX - 1, u64::MAX),
            (u64::MAX, 0)
        ]
    );
}
