//! Both receivers on 127.0.0.1:0 with a real ingest queue, driven by real clients: tonic's generated
//! `TraceServiceClient` (and a raw-bytes tonic client for malformed input) and reqwest.

use super::*;
use crate::ingest::{Pressure, SpanBatch};
use crate::metrics::{ReceiverLabels, RefusedLabels};
use crate::otlp::rpc::{ProtoDuration, RETRY_INFO_TYPE_URL, RetryInfo, RpcStatus};
use crate::otlp::{SpanRecord, StatusCode as SpanStatus};
use crate::testing::{kv_str, request, sample_request, span};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use std::io::Write;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tonic::Code;
use tonic::codec::CompressionEncoding;

const TRACE_ID: u128 = 0x0102030405060708090a0b0c0d0e0f10;

#[derive(Clone, Copy)]
enum Kind {
    Grpc,
    Http,
}

/// A receiver running on port 0, with the buffer's end of its ingest queue.
struct Running {
    addr: SocketAddr,
    batches: mpsc::Receiver<SpanBatch>,
    metrics: Arc<Metrics>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

struct Options {
    max_body_bytes: usize,
    /// Ingest queue capacity in batches.
    capacity: usize,
    /// Byte bound of queue + buffer.
    memory: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_body_bytes: 1 << 20,
            capacity: 8,
            memory: 64 << 20,
        }
    }
}

async fn start(kind: Kind, opts: Options) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let metrics = Metrics::new();
    let (ingest, batches) =
        IngestHandle::channel(opts.capacity, Arc::new(Pressure::new(opts.memory)));
    let ctx = ReceiverContext {
        ingest,
        metrics: Arc::clone(&metrics),
        max_body_bytes: opts.max_body_bytes,
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let shutdown = async move {
        let _ = stopped.await;
    };
    let task = match kind {
        Kind::Grpc => tokio::spawn(grpc::serve(listener, ctx, shutdown)),
        Kind::Http => tokio::spawn(http::serve(listener, ctx, shutdown)),
    };
    Running {
        addr,
        batches,
        metrics,
        stop: Some(stop),
        task,
    }
}

impl Running {
    /// The next batch handed to the ingest queue (already there: receivers submit before answering).
    fn batch(&mut self) -> SpanBatch {
        self.batches.try_recv().expect("a batch was submitted")
    }

    fn no_batch(&mut self) {
        assert!(
            self.batches.try_recv().is_err(),
            "nothing should have been submitted"
        );
    }

    fn received(&self, receiver: &'static str) -> u64 {
        self.metrics
            .spans_received
            .get_or_create(&ReceiverLabels { receiver })
            .get()
    }

    fn spans_refused(&self, receiver: &'static str, reason: &'static str) -> u64 {
        self.metrics
            .spans_refused
            .get_or_create(&RefusedLabels { receiver, reason })
            .get()
    }

    fn requests_refused(&self, receiver: &'static str, reason: &'static str) -> u64 {
        self.metrics
            .requests_refused
            .get_or_create(&RefusedLabels { receiver, reason })
            .get()
    }

    fn url(&self) -> String {
        format!("http://{}{}", self.addr, http::TRACES_PATH)
    }

    async fn grpc_client(&self) -> TraceServiceClient<tonic::transport::Channel> {
        TraceServiceClient::connect(format!("http://{}", self.addr))
            .await
            .expect("connect")
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task
            .await
            .expect("join")
            .expect("serve returned an error");
    }
}

fn spans(batch: &SpanBatch) -> Vec<&SpanRecord> {
    batch.traces.iter().flat_map(|(_, spans)| spans).collect()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).expect("write to vec");
    enc.finish().expect("finish gzip")
}

/// A request whose one span carries a `size`-byte attribute that compresses to almost nothing.
fn big_request(size: usize) -> ExportTraceServiceRequest {
    let mut s = span(1, 0, "big");
    s.attributes = vec![kv_str("blob", &"a".repeat(size))];
    request("svc", vec![s])
}

/// A valid span, one with an all-zero trace id, one with a 15-byte trace id.
fn request_with_bad_ids() -> ExportTraceServiceRequest {
    let good = span(1, 0, "good");
    let zero = Span {
        trace_id: vec![0; 16],
        ..span(2, 0, "zero trace id")
    };
    let short = Span {
        trace_id: vec![7; 15],
        ..span(3, 0, "short trace id")
    };
    request("svc", vec![zero, good, short])
}

/// Sends raw bytes as the Export message (for malformed input tonic's generated client cannot produce).
pub(super) async fn grpc_raw_export(
    addr: SocketAddr,
    body: Bytes,
) -> Result<ExportTraceServiceResponse, tonic::Status> {
    #[derive(Clone, Copy)]
    struct RawCodec;
    struct RawEncoder;
    impl tonic::codec::Encoder for RawEncoder {
        type Item = Bytes;
        type Error = tonic::Status;
        fn encode(
            &mut self,
            item: Bytes,
            dst: &mut tonic::codec::EncodeBuf<'_>,
        ) -> Result<(), tonic::Status> {
            bytes::BufMut::put(dst, item);
            Ok(())
        }
    }
    impl tonic::codec::Codec for RawCodec {
        type Encode = Bytes;
        type Decode = ExportTraceServiceResponse;
        type Encoder = RawEncoder;
        type Decoder = tonic_prost::ProstDecoder<ExportTraceServiceResponse>;
        fn encoder(&mut self) -> RawEncoder {
            RawEncoder
        }
        fn decoder(&mut self) -> Self::Decoder {
            tonic::codec::Codec::decoder(&mut tonic_prost::ProstCodec::<
                Bytes,
                ExportTraceServiceResponse,
            >::default())
        }
    }
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("ready");
    let path = ::http::uri::PathAndQuery::from_static(grpc::EXPORT_PATH);
    grpc.unary(tonic::Request::new(body), path, RawCodec)
        .await
        .map(tonic::Response::into_inner)
}

/// `sample_request()` with its last bytes cut off: the first resource_spans runs past the end.
fn truncated_body() -> Bytes {
    let body = sample_request().encode_to_vec();
    Bytes::copy_from_slice(&body[..body.len() - 3])
}

// ---------------------------------------------------------------------------------------------------
// gRPC

#[tokio::test]
async fn grpc_protobuf_request_is_delivered() {
    let mut rx = start(Kind::Grpc, Options::default()).await;
    let mut client = rx.grpc_client().await;
    let response = client
        .export(sample_request())
        .await
        .expect("export ok")
        .into_inner();
    assert_eq!(response.partial_success, None);
    let batch = rx.batch();
    assert_eq!(batch.span_count, 3);
    assert_eq!(batch.traces.len(), 1);
    assert_eq!(batch.traces[0].0, TRACE_ID);
    let names: Vec<_> = spans(&batch).iter().map(|s| s.name().to_owned()).collect();
    assert_eq!(names, ["GET /checkout", "SELECT orders", "charge card"]);
    assert_eq!(rx.received("grpc"), 3);
    rx.stop().await;
}

#[tokio::test]
async fn grpc_gzip_request_and_response() {
    let mut rx = start(Kind::Grpc, Options::default()).await;
    let mut client = rx
        .grpc_client()
        .await
        .send_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Gzip);
    let response = client
        .export(request_with_bad_ids())
        .await
        .expect("export ok");
    assert_eq!(
        response
            .metadata()
            .get("grpc-encoding")
            .and_then(|v| v.to_str().ok()),
        Some("gzip"),
        "the response is gzip-compressed when the client accepts it"
    );
    let partial = response
        .into_inner()
        .partial_success
        .expect("partial success");
    assert_eq!(partial.rejected_spans, 2);
    assert_eq!(spans(&rx.batch()).len(), 1);
    rx.stop().await;
}

#[tokio::test]
async fn grpc_bad_trace_ids_are_rejected_and_the_rest_delivered() {
    let mut rx = start(Kind::Grpc, Options::default()).await;
    let mut client = rx.grpc_client().await;
    let response = client
        .export(request_with_bad_ids())
        .await
        .expect("export ok")
        .into_inner();
    let partial = response.partial_success.expect("partial_success is set");
    assert_eq!(partial.rejected_spans, 2);
    assert!(
        partial
            .error_message
            .contains("2 span(s) with invalid trace id"),
        "{}",
        partial.error_message
    );
    let batch = rx.batch();
    let delivered = spans(&batch);
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0].name(), "good");
    assert_eq!(rx.received("grpc"), 1);
    assert_eq!(rx.spans_refused("grpc", "invalid_trace_id"), 2);
    rx.stop().await;
}

#[tokio::test]
async fn grpc_malformed_protobuf_is_invalid_argument_naming_the_place() {
    let mut rx = start(Kind::Grpc, Options::default()).await;
    let status = grpc_raw_export(rx.addr, truncated_body())
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("resource_spans[0]"),
        "{}",
        status.message()
    );
    rx.no_batch();
    assert_eq!(rx.requests_refused("grpc", "malformed"), 1);
    rx.stop().await;
}

#[tokio::test]
async fn grpc_request_over_the_limit_is_resource_exhausted() {
    let mut rx = start(
        Kind::Grpc,
        Options {
            max_body_bytes: 4096,
            ..Options::default()
        },
    )
    .await;
    let mut client = rx.grpc_client().await;
    let status = client.export(big_request(8192)).await.expect_err("refused");
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(status.message().contains("4096"), "{}", status.message());
    assert!(
        status.details().is_empty(),
        "too large is not retryable: no RetryInfo"
    );
    rx.no_batch();
    assert_eq!(rx.requests_refused("grpc", "too_large"), 1);
    rx.stop().await;
}

#[tokio::test]
async fn grpc_gzip_bomb_is_resource_exhausted() {
    let mut rx = start(
        Kind::Grpc,
        Options {
            max_body_bytes: 64 * 1024,
            ..Options::default()
        },
    )
    .await;
    let mut client = rx
        .grpc_client()
        .await
        .send_compressed(CompressionEncoding::Gzip);
    // About 2 KiB on the wire, 2 MiB once inflated.
    let status = client
        .export(big_request(2 << 20))
        .await
        .expect_err("refused");
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(
        status.message().contains("decompress"),
        "{}",
        status.message()
    );
    rx.no_batch();
    assert_eq!(rx.requests_refused("grpc", "too_large"), 1);
    rx.stop().await;
}

/// Posts one hand-made gRPC frame over HTTP/2 (to send what no gRPC client would: a broken gzip
/// payload), returning the `grpc-status` and `grpc-message` headers of a trailers-only (error) answer.
async fn grpc_frame(addr: SocketAddr, compressed: bool, payload: &[u8]) -> (String, String) {
    let mut frame = vec![u8::from(compressed)];
    frame.extend_from_slice(&u32::try_from(payload.len()).expect("small").to_be_bytes());
    frame.extend_from_slice(payload);
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .expect("client");
    let mut req = client
        .post(format!("http://{addr}{}", grpc::EXPORT_PATH))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(frame);
    if compressed {
        req = req.header("grpc-encoding", "gzip");
    }
    let response = req.send().await.expect("sent");
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    (header("grpc-status"), header("grpc-message"))
}

#[tokio::test]
async fn grpc_bad_gzip_is_invalid_argument() {
    let mut rx = start(Kind::Grpc, Options::default()).await;
    let (code, message) = grpc_frame(rx.addr, true, b"this is not gzip").await;
    assert_eq!(
        code,
        (Code::InvalidArgument as i32).to_string(),
        "{message}"
    );
    assert!(message.contains("decompressing"), "{message}");
    rx.no_batch();
    assert_eq!(rx.requests_refused("grpc", "bad_compression"), 1);
    // A well-formed hand-made frame is accepted (the OK status then comes in trailers, not headers).
    let (code, message) = grpc_frame(rx.addr, false, &sample_request().encode_to_vec()).await;
    assert_eq!(code, "", "{message}");
    assert_eq!(rx.batch().span_count, 3);
    rx.stop().await;
}

#[tokio::test]
async fn large_bodies_are_refused_and_the_connection_stays_usable() {
    // Megabytes sent against a 64 KiB limit: the client sees the refusal, not a reset, and can go on.
    let opts = || Options {
        max_body_bytes: 64 * 1024,
        ..Options::default()
    };
    let mut rx = start(Kind::Grpc, opts()).await;
    let mut client = rx.grpc_client().await;
    for _ in 0..3 {
        let status = client
            .export(big_request(4 << 20))
            .await
            .expect_err("refused");
        assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    }
    client
        .export(sample_request())
        .await
        .expect("the channel still works");
    assert_eq!(rx.batch().span_count, 3);
    assert_eq!(rx.requests_refused("grpc", "too_large"), 3);
    rx.stop().await;

    let mut rx = start(Kind::Http, opts()).await;
    for _ in 0..3 {
        let response = post(
            &rx,
            "application/x-protobuf",
            None,
            big_request(4 << 20).encode_to_vec(),
        )
        .await;
        assert_eq!(response.status(), 413);
    }
    assert_eq!(
        post(
            &rx,
            "application/x-protobuf",
            None,
            sample_request().encode_to_vec()
        )
        .await
        .status(),
        200
    );
    assert_eq!(rx.batch().span_count, 3);
    assert_eq!(rx.requests_refused("http", "too_large"), 3);
    rx.stop().await;
}

#[tokio::test]
async fn grpc_full_queue_is_resource_exhausted_with_retry_info() {
    let mut rx = start(
        Kind::Grpc,
        Options {
            capacity: 1,
            ..Options::default()
        },
    )
    .await;
    let mut client = rx.grpc_client().await;
    client
        .export(sample_request())
        .await
        .expect("first request fills the queue");
    let status = client
        .export(sample_request())
        .await
        .expect_err("second is refused");
    assert_eq!(status.code(), Code::ResourceExhausted);
    let details = RpcStatus::decode(status.details()).expect("google.rpc.Status details");
    assert_eq!(details.details.len(), 1);
    assert_eq!(details.details[0].type_url, RETRY_INFO_TYPE_URL);
    let info = RetryInfo::decode(details.details[0].value.as_slice()).expect("RetryInfo");
    assert_eq!(
        info.retry_delay,
        Some(ProtoDuration {
            seconds: 1,
            nanos: 0
        })
    );
    assert_eq!(rx.received("grpc"), 3);
    assert_eq!(rx.spans_refused("grpc", "queue_full"), 3);
    assert_eq!(rx.requests_refused("grpc", "queue_full"), 1);
    assert_eq!(rx.batch().span_count, 3);
    rx.no_batch();
    rx.stop().await;
}

#[tokio::test]
async fn grpc_closed_queue_is_unavailable() {
    let mut rx = start(Kind::Grpc, Options::default()).await;
    let (_, closed) = mpsc::channel(1);
    drop(std::mem::replace(&mut rx.batches, closed));
    let mut client = rx.grpc_client().await;
    let status = client.export(sample_request()).await.expect_err("refused");
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(rx.requests_refused("grpc", "shutting_down"), 1);
    rx.stop().await;
}

// ---------------------------------------------------------------------------------------------------
// HTTP

async fn post(
    rx: &Running,
    content_type: &str,
    encoding: Option<&str>,
    body: Vec<u8>,
) -> reqwest::Response {
    let mut req = reqwest::Client::new()
        .post(rx.url())
        .header("content-type", content_type)
        .body(body);
    if let Some(encoding) = encoding {
        req = req.header("content-encoding", encoding);
    }
    req.send().await.expect("request sent")
}

/// The `google.rpc.Status` of an error response, in whichever format it came.
async fn error_status(response: reqwest::Response) -> RpcStatus {
    let json = response
        .headers()
        .get("content-type")
        .is_some_and(|v| v == "application/json");
    let body = response.bytes().await.expect("body");
    if json {
        let v: serde_json::Value = serde_json::from_slice(&body).expect("JSON status");
        RpcStatus {
            code: v["code"].as_i64().expect("code") as i32,
            message: v["message"].as_str().expect("message").to_owned(),
            details: Vec::new(),
        }
    } else {
        RpcStatus::decode(body).expect("protobuf status")
    }
}

#[tokio::test]
async fn http_protobuf_request_is_delivered() {
    let mut rx = start(Kind::Http, Options::default()).await;
    let response = post(
        &rx,
        "application/x-protobuf",
        None,
        sample_request().encode_to_vec(),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/x-protobuf");
    let body = response.bytes().await.expect("body");
    assert_eq!(
        ExportTraceServiceResponse::decode(body).expect("response"),
        ExportTraceServiceResponse::default()
    );
    let batch = rx.batch();
    assert_eq!(batch.span_count, 3);
    assert_eq!(batch.traces[0].0, TRACE_ID);
    assert_eq!(rx.received("http"), 3);
    rx.stop().await;
}

/// Hand-written OTLP/JSON: hex ids, lowerCamelCase, integer enums, int64 as strings, an unknown field.
const JSON_REQUEST: &str = r#"{
  "resourceSpans": [{
    "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "checkout"}}]},
    "scopeSpans": [{
      "scope": {"name": "manual", "version": "1"},
      "spans": [
        {
          "traceId": "5B8EFFF798038103D269B633813FC60C",
          "spanId": "eee19b7ec3c1b174",
          "parentSpanId": "",
          "name": "POST /pay",
          "kind": 2,
          "startTimeUnixNano": "1700000000000000000",
          "endTimeUnixNano": 1700000000000500000,
          "attributes": [
            {"key": "http.method", "value": {"stringValue": "POST"}},
            {"key": "http.status_code", "value": {"intValue": "502"}},
            {"key": "retry", "value": {"boolValue": true}}
          ],
          "status": {"code": 2, "message": "upstream failed"},
          "someFutureField": {"ignored": true}
        },
        {
          "traceId": "5b8efff798038103d269b633813fc60c",
          "spanId": "0000000000000001",
          "parentSpanId": "eee19b7ec3c1b174",
          "name": "db",
          "kind": 3
        },
        {
          "spanId": "0000000000000002",
          "name": "no trace id"
        }
      ]
    }]
  }]
}"#;

fn check_json_spans(batch: &SpanBatch) {
    assert_eq!(batch.traces.len(), 1);
    assert_eq!(batch.traces[0].0, 0x5b8efff798038103d269b633813fc60c);
    let delivered = spans(batch);
    assert_eq!(delivered.len(), 2);
    let pay = delivered[0];
    assert_eq!(pay.span_id, 0xeee19b7ec3c1b174);
    assert!(pay.is_root());
    assert_eq!(pay.name(), "POST /pay");
    assert_eq!(pay.kind, SpanKind::Server as u8);
    assert_eq!(pay.status, SpanStatus::Error);
    assert_eq!(pay.start_unix_nano, 1_700_000_000_000_000_000);
    assert_eq!(pay.end_unix_nano, 1_700_000_000_000_500_000);
    assert_eq!(pay.origin.service_name.as_ref(), "checkout");
    let decoded = Span::decode(pay.raw.clone()).expect("span bytes decode");
    assert_eq!(decoded.attributes[0], kv_str("http.method", "POST"));
    assert_eq!(
        decoded.attributes[1],
        crate::testing::kv_int("http.status_code", 502)
    );
    assert_eq!(decoded.attributes.len(), 3);
    assert_eq!(decoded.status.expect("status").message, "upstream failed");
    let db = delivered[1];
    assert_eq!(db.parent_span_id, 0xeee19b7ec3c1b174);
    assert_eq!(db.kind, SpanKind::Client as u8);
}

#[tokio::test]
async fn http_json_request_is_delivered_with_ids_kinds_status_and_attributes() {
    let mut rx = start(Kind::Http, Options::default()).await;
    let response = post(
        &rx,
        "application/json; charset=utf-8",
        None,
        JSON_REQUEST.into(),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let body: serde_json::Value =
        serde_json::from_slice(&response.bytes().await.expect("body")).expect("JSON response");
    assert_eq!(
        body,
        serde_json::json!({"partialSuccess": {
            "rejectedSpans": "1",
            "errorMessage": "rejected 1 span(s) with invalid trace id"
        }})
    );
    check_json_spans(&rx.batch());
    assert_eq!(rx.received("http"), 2);
    assert_eq!(rx.spans_refused("http", "invalid_trace_id"), 1);
    rx.stop().await;
}

#[tokio::test]
async fn http_gzip_protobuf_and_json() {
    let mut rx = start(Kind::Http, Options::default()).await;
    let response = post(
        &rx,
        "application/x-protobuf",
        Some("gzip"),
        gzip(&sample_request().encode_to_vec()),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(rx.batch().span_count, 3);
    let response = post(
        &rx,
        "application/json",
        Some("gzip"),
        gzip(JSON_REQUEST.as_bytes()),
    )
    .await;
    assert_eq!(response.status(), 200);
    check_json_spans(&rx.batch());
    let response = post(
        &rx,
        "application/x-protobuf",
        Some("identity"),
        sample_request().encode_to_vec(),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert_eq!(rx.received("http"), 8);
    rx.stop().await;
}

#[tokio::test]
async fn http_large_request_is_decoded_on_the_blocking_pool() {
    // Over OFFLOAD_BYTES as sent, so decompression, JSON decoding and the scan run off the async worker.
    let mut rx = start(Kind::Http, Options::default()).await;
    let mut big = big_request(600 * 1024);
    big.resource_spans[0].scope_spans[0]
        .spans
        .push(span(2, 1, "child"));
    let response = post(&rx, "application/x-protobuf", None, big.encode_to_vec()).await;
    assert_eq!(response.status(), 200);
    assert_eq!(rx.batch().span_count, 2);
    let json = serde_json::to_vec(&big).expect("serialize as OTLP/JSON");
    let response = post(&rx, "application/json", None, json).await;
    assert_eq!(response.status(), 200);
    let batch = rx.batch();
    assert_eq!(spans(&batch)[1].name(), "child");
    assert_eq!(rx.received("http"), 4);
    rx.stop().await;
}

#[tokio::test]
async fn http_bad_trace_ids_are_rejected_and_the_rest_delivered() {
    let mut rx = start(Kind::Http, Options::default()).await;
    let response = post(
        &rx,
        "application/x-protobuf",
        None,
        request_with_bad_ids().encode_to_vec(),
    )
    .await;
    assert_eq!(response.status(), 200);
    let body = response.bytes().await.expect("body");
    let partial = ExportTraceServiceResponse::decode(body)
        .expect("response")
        .partial_success
        .expect("partial");
    assert_eq!(partial.rejected_spans, 2);
    assert_eq!(
        partial.error_message,
        "rejected 2 span(s) with invalid trace id"
    );
    let batch = rx.batch();
    assert_eq!(
        spans(&batch).iter().map(|s| s.name()).collect::<Vec<_>>(),
        ["good"]
    );
    assert_eq!(rx.spans_refused("http", "invalid_trace_id"), 2);
    assert_eq!(rx.received("http"), 1);
    let text = rx.metrics.encode();
    assert!(
        text.contains(r#"tailgate_spans_received_total{receiver="http"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(
            r#"tailgate_spans_refused_total{receiver="http",reason="invalid_trace_id"} 2"#
        ),
        "{text}"
    );
    rx.stop().await;
}

#[tokio::test]
async fn http_malformed_protobuf_is_400_naming_the_place() {
    let mut rx = start(Kind::Http, Options::default()).await;
    let response = post(
        &rx,
        "application/x-protobuf",
        None,
        truncated_body().to_vec(),
    )
    .await;
    assert_eq!(response.status(), 400);
    assert_eq!(response.headers()["content-type"], "application/x-protobuf");
    let status = error_status(response).await;
    assert_eq!(status.code, Code::InvalidArgument as i32);
    assert!(
        status.message.contains("resource_spans[0]"),
        "{}",
        status.message
    );
    rx.no_batch();
    assert_eq!(rx.requests_refused("http", "malformed"), 1);
    rx.stop().await;
}

#[tokio::test]
async fn http_malformed_json_is_400() {
    let mut rx = start(Kind::Http, Options::default()).await;
    for body in [
        r#"{"resourceSpans": [{"scopeSpans": ["#,
        r#"{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "not hex"}]}]}]}"#,
        r#"{"resourceSpans": [{"scopeSpans": [{"spans": [{"kind": "SPAN_KIND_SERVER"}]}]}]}"#,
    ] {
        let response = post(&rx, "application/json", None, body.into()).await;
        assert_eq!(response.status(), 400, "{body}");
        assert_eq!(response.headers()["content-type"], "application/json");
        let status = error_status(response).await;
        assert_eq!(status.code, Code::InvalidArgument as i32);
        assert!(
            status
                .message
                .starts_with("malformed OTLP/JSON trace request: "),
            "{}",
            status.message
        );
    }
    rx.no_batch();
    assert_eq!(rx.requests_refused("http", "malformed"), 3);
    rx.stop().await;
}

#[tokio::test]
async fn http_unsupported_content_type_and_encoding_are_415() {
    let mut rx = start(Kind::Http, Options::default()).await;
    let response = post(&rx, "text/plain", None, b"hello".to_vec()).await;
    assert_eq!(response.status(), 415);
    let status = error_status(response).await;
    assert!(status.message.contains("text/plain"), "{}", status.message);
    let response = post(
        &rx,
        "application/x-protobuf",
        Some("br"),
        sample_request().encode_to_vec(),
    )
    .await;
    assert_eq!(response.status(), 415);
    assert!(error_status(response).await.message.contains("\"br\""));
    rx.no_batch();
    assert_eq!(rx.requests_refused("http", "unsupported_media_type"), 1);
    assert_eq!(rx.requests_refused("http", "unsupported_encoding"), 1);
    rx.stop().await;
}

#[tokio::test]
async fn http_bad_gzip_is_400() {
    let mut rx = start(Kind::Http, Options::default()).await;
    let response = post(
        &rx,
        "application/x-protobuf",
        Some("gzip"),
        sample_request().encode_to_vec(),
    )
    .await;
    assert_eq!(response.status(), 400);
    assert!(
        error_status(response)
            .await
            .message
            .starts_with("invalid gzip body")
    );
    rx.no_batch();
    assert_eq!(rx.requests_refused("http", "bad_compression"), 1);
    rx.stop().await;
}

#[tokio::test]
async fn http_body_over_the_limit_is_413() {
    let mut rx = start(
        Kind::Http,
        Options {
            max_body_bytes: 4096,
            ..Options::default()
        },
    )
    .await;
    let response = post(
        &rx,
        "application/x-protobuf",
        None,
        big_request(8192).encode_to_vec(),
    )
    .await;
    assert_eq!(response.status(), 413);
    let status = error_status(response).await;
    assert_eq!(status.code, Code::ResourceExhausted as i32);
    assert!(status.message.contains("4096"), "{}", status.message);
    rx.no_batch();
    assert_eq!(rx.requests_refused("http", "too_large"), 1);
    rx.stop().await;
}

#[tokio::test]
async fn http_chunked_body_over_the_limit_is_413() {
    // No Content-Length: the limit is enforced while reading.
    let rx = start(
        Kind::Http,
        Options {
            max_body_bytes: 4096,
            ..Options::default()
        },
    )
    .await;
    let mut conn = tokio::net::TcpStream::connect(rx.addr)
        .await
        .expect("connect");
    let head = "POST /v1/traces HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-protobuf\r\n\
                transfer-encoding: chunked\r\nconnection: close\r\n\r\n";
    conn.write_all(head.as_bytes()).await.expect("write head");
    for _ in 0..3 {
        let chunk = vec![b'x'; 2048];
        conn.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
            .await
            .expect("write");
        conn.write_all(&chunk).await.expect("write");
        conn.write_all(b"\r\n").await.expect("write");
    }
    let _ = conn.write_all(b"0\r\n\r\n").await;
    let mut answer = Vec::new();
    let _ = conn.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert_eq!(rx.requests_refused("http", "too_large"), 1);
    rx.stop().await;
}

#[tokio::test]
async fn http_gzip_bomb_is_413() {
    let mut rx = start(
        Kind::Http,
        Options {
            max_body_bytes: 64 * 1024,
            ..Options::default()
        },
    )
    .await;
    let bomb = gzip(&vec![0u8; 8 << 20]);
    assert!(bomb.len() < 64 * 1024);
    let response = post(&rx, "application/x-protobuf", Some("gzip"), bomb).await;
    assert_eq!(response.status(), 413);
    let status = error_status(response).await;
    assert!(
        status.message.contains("once decompressed"),
        "{}",
        status.message
    );
    rx.no_batch();
    assert_eq!(rx.requests_refused("http", "too_large"), 1);
    rx.stop().await;
}

#[tokio::test]
async fn http_full_queue_is_429_with_retry_after() {
    let mut rx = start(
        Kind::Http,
        Options {
            capacity: 1,
            ..Options::default()
        },
    )
    .await;
    let body = sample_request().encode_to_vec();
    assert_eq!(
        post(&rx, "application/x-protobuf", None, body.clone())
            .await
            .status(),
        200
    );
    let response = post(&rx, "application/x-protobuf", None, body).await;
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "1");
    let status = error_status(response).await;
    assert_eq!(status.code, Code::ResourceExhausted as i32);
    assert_eq!(rx.spans_refused("http", "queue_full"), 3);
    assert_eq!(rx.requests_refused("http", "queue_full"), 1);
    assert_eq!(rx.batch().span_count, 3);
    rx.no_batch();
    rx.stop().await;
}

#[tokio::test]
async fn http_memory_pressure_is_429() {
    let rx = start(
        Kind::Http,
        Options {
            memory: 1,
            ..Options::default()
        },
    )
    .await;
    let body = sample_request().encode_to_vec();
    // The first batch is always let in (so a single large batch cannot deadlock); the next is not.
    assert_eq!(
        post(&rx, "application/x-protobuf", None, body.clone())
            .await
            .status(),
        200
    );
    let response = post(&rx, "application/json", None, JSON_REQUEST.into()).await;
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "1");
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(rx.spans_refused("http", "memory_pressure"), 2);
    assert_eq!(rx.requests_refused("http", "memory_pressure"), 1);
    rx.stop().await;
}

#[tokio::test]
async fn http_closed_queue_is_503_with_retry_after() {
    let mut rx = start(Kind::Http, Options::default()).await;
    let (_, closed) = mpsc::channel(1);
    drop(std::mem::replace(&mut rx.batches, closed));
    let response = post(
        &rx,
        "application/x-protobuf",
        None,
        sample_request().encode_to_vec(),
    )
    .await;
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    assert_eq!(error_status(response).await.code, Code::Unavailable as i32);
    assert_eq!(rx.requests_refused("http", "shutting_down"), 1);
    rx.stop().await;
}

#[tokio::test]
async fn http_wrong_method_is_405_and_other_paths_404() {
    let rx = start(Kind::Http, Options::default()).await;
    let client = reqwest::Client::new();
    assert_eq!(
        client.get(rx.url()).send().await.expect("sent").status(),
        405
    );
    let other = format!("http://{}/v1/metrics", rx.addr);
    let response = client
        .post(other)
        .header("content-type", "application/x-protobuf")
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 404);
    rx.stop().await;
}

#[tokio::test]
async fn empty_protobuf_request_is_ok_and_submits_nothing() {
    let mut rx = start(Kind::Http, Options::default()).await;
    let response = post(&rx, "application/x-protobuf", None, Vec::new()).await;
    assert_eq!(response.status(), 200);
    rx.no_batch();
    rx.stop().await;
}

#[test]
fn gunzip_stops_at_the_limit() {
    let bomb = gzip(&vec![0u8; 1 << 20]);
    assert!(matches!(
        gunzip_bounded(&bomb, 1000),
        Err(ReceiveError::TooLarge { limit: 1000, .. })
    ));
    assert_eq!(
        gunzip_bounded(&gzip(&[1u8; 1000]), 1000)
            .expect("at the limit")
            .len(),
        1000
    );
    assert!(matches!(
        gunzip_bounded(b"not gzip", 1000),
        Err(ReceiveError::BadGzip(_))
    ));
}
