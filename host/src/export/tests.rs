//! Exporter tests against capture servers standing in for Jaeger: an OTLP/gRPC `TraceService` and an
//! OTLP/HTTP endpoint, both able to fail the first N requests, stall, or report partial success.

use super::retry::Backoff;
use super::*;
use crate::config::{AutoSize, BatchConfig, ByteSize, Compression, SendingQueue};
use crate::metrics::ReasonLabels;
use crate::otlp::rpc::{ProtoAny, ProtoDuration, RETRY_INFO_TYPE, RetryInfo, RpcStatus};
use crate::otlp::{SpanPatch, scan_export_request};
use crate::testing::{request, span_in};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use std::collections::BTreeMap;
use std::io::Read;
use std::sync::atomic::AtomicUsize;
use std::time::SystemTime;
use tokio::net::TcpListener;
use tonic::Code;
use tonic::codec::CompressionEncoding;

const TRACE: u128 = 0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736;

/// `n` spans of one trace with span ids `first..first + n`, as the buffer would hold them.
fn kept(first: u64, n: u64) -> KeptSpans {
    let spans = (first..first + n)
        .map(|id| span_in(TRACE, id, 0, "op", 1_000 + id, 2_000 + id))
        .collect();
    let body = Bytes::from(request("svc", spans).encode_to_vec());
    let scanned = scan_export_request(&body).expect("fixture is valid");
    KeptSpans {
        spans: scanned.spans.into_iter().map(|(_, s)| s).collect(),
        patch: Bytes::new(),
        per_span: Vec::new(),
    }
}

/// Span ids of every span in the captured requests, in arrival order.
fn span_ids(requests: &[ExportTraceServiceRequest]) -> Vec<u64> {
    requests
        .iter()
        .flat_map(|r| &r.resource_spans)
        .flat_map(|rs| &rs.scope_spans)
        .flat_map(|ss| &ss.spans)
        .map(|s| u64::from_be_bytes(s.span_id.as_slice().try_into().expect("8-byte span id")))
        .collect()
}

fn span_count(r: &ExportTraceServiceRequest) -> usize {
    r.resource_spans
        .iter()
        .flat_map(|rs| &rs.scope_spans)
        .map(|ss| ss.spans.len())
        .sum()
}

fn assert_each_once(
    requests: &[ExportTraceServiceRequest],
    expected: impl IntoIterator<Item = u64>,
) {
    let mut got = span_ids(requests);
    got.sort_unstable();
    let mut want: Vec<u64> = expected.into_iter().collect();
    want.sort_unstable();
    assert_eq!(got, want, "every span exactly once");
}

fn lost(m: &Metrics, reason: &'static str) -> u64 {
    m.spans_lost.get_or_create(&ReasonLabels { reason }).get()
}

fn failures(m: &Metrics, reason: &'static str) -> u64 {
    m.export_failures
        .get_or_create(&ReasonLabels { reason })
        .get()
}

fn config(protocol: ExportProtocol, endpoint: String) -> OtlpExporter {
    OtlpExporter {
        protocol,
        endpoint,
        compression: Compression::None,
        headers: BTreeMap::new(),
        timeout: Duration::from_secs(10),
        sending_queue: SendingQueue {
            queue_size: 1000,
            queue_bytes: AutoSize::Auto,
            num_consumers: 2,
            persistent: None,
        },
        retry_on_failure: RetryConfig {
            enabled: true,
            initial_interval: Duration::from_millis(5),
            max_interval: Duration::from_millis(20),
            max_elapsed_time: Duration::from_secs(60),
        },
        tls: None,
        kafka: None,
        batch: BatchConfig {
            send_batch_size: 100,
            send_batch_max_size: 100,
            send_batch_max_bytes: Some(ByteSize::mib(3)),
            timeout: Duration::from_millis(10),
        },
    }
}

/// How a capture server behaves.
#[derive(Default)]
struct Script {
    /// Fail this many requests before accepting.
    fail_first: usize,
    /// gRPC status of a failure (default UNAVAILABLE).
    grpc_code: Option<Code>,
    /// Attach `RetryInfo` with this delay to gRPC failures.
    retry_info: Option<Duration>,
    /// HTTP status of a failure (default 503).
    http_status: Option<u16>,
    /// `Retry-After` header on HTTP failures.
    retry_after: Option<&'static str>,
    /// Never answer.
    stall: bool,
    /// Report this many spans of each accepted request as rejected (partial success).
    reject_spans: i64,
}

/// What a capture server saw.
#[derive(Default)]
struct Capture {
    script: Script,
    calls: AtomicUsize,
    accepted: Mutex<Vec<ExportTraceServiceRequest>>,
    /// `grpc-encoding` / `content-encoding` of every request ("" when absent).
    encodings: Mutex<Vec<String>>,
    /// Value of the `x-tenant` header of every request.
    tenants: Mutex<Vec<String>>,
}

impl Capture {
    fn accepted(&self) -> Vec<ExportTraceServiceRequest> {
        self.accepted.lock().expect("lock").clone()
    }

    /// Records the call; returns true when this call should fail.
    fn record(&self, headers: &HeaderMap, encoding_header: &str) -> bool {
        let value = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned()
        };
        self.encodings
            .lock()
            .expect("lock")
            .push(value(encoding_header));
        self.tenants.lock().expect("lock").push(value("x-tenant"));
        self.calls.fetch_add(1, Ordering::SeqCst) < self.script.fail_first
    }

    fn response(&self) -> ExportTraceServiceResponse {
        let partial = (self.script.reject_spans > 0).then(|| ExportTracePartialSuccess {
            rejected_spans: self.script.reject_spans,
            error_message: "span too old".into(),
        });
        ExportTraceServiceResponse {
            partial_success: partial,
        }
    }
}

#[derive(Clone)]
struct GrpcCapture(Arc<Capture>);

#[tonic::async_trait]
impl TraceService for GrpcCapture {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let c = &self.0;
        let fail = c.record(&req.metadata().clone().into_headers(), "grpc-encoding");
        if c.script.stall {
            std::future::pending::<()>().await;
        }
        if fail {
            let code = c.script.grpc_code.unwrap_or(Code::Unavailable);
            return Err(match c.script.retry_info {
                Some(d) => {
                    let info = RetryInfo {
                        retry_delay: Some(ProtoDuration {
                            seconds: d.as_secs() as i64,
                            nanos: d.subsec_nanos() as i32,
                        }),
                    };
                    let status = RpcStatus {
                        code: code as i32,
                        message: "busy".into(),
                        details: vec![ProtoAny {
                            type_url: format!("type.googleapis.com/{RETRY_INFO_TYPE}"),
                            value: info.encode_to_vec(),
                        }],
                    };
                    tonic::Status::with_details(code, "busy", status.encode_to_vec().into())
                }
                None => tonic::Status::new(code, "scripted failure"),
            });
        }
        c.accepted.lock().expect("lock").push(req.into_inner());
        Ok(tonic::Response::new(c.response()))
    }
}

async fn grpc_capture(script: Script) -> (String, Arc<Capture>) {
    let capture = Arc::new(Capture {
        script,
        ..Default::default()
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let svc = TraceServiceServer::new(GrpcCapture(capture.clone()))
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    (format!("http://{addr}"), capture)
}

async fn http_capture(script: Script) -> (String, Arc<Capture>) {
    async fn handle(
        axum::extract::State(c): axum::extract::State<Arc<Capture>>,
        headers: HeaderMap,
        body: Bytes,
    ) -> axum::response::Response {
        let fail = c.record(&headers, "content-encoding");
        if c.script.stall {
            std::future::pending::<()>().await;
        }
        if fail {
            let status =
                StatusCode::from_u16(c.script.http_status.unwrap_or(503)).expect("valid status");
            let body = RpcStatus {
                code: 14,
                message: "scripted failure".into(),
                details: vec![],
            }
            .encode_to_vec();
            let mut resp = (status, body).into_response();
            if let Some(ra) = c.script.retry_after {
                resp.headers_mut()
                    .insert("retry-after", ra.parse().expect("header value"));
            }
            return resp;
        }
        let body = if headers.get("content-encoding").is_some_and(|v| v == "gzip") {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&body[..])
                .read_to_end(&mut out)
                .expect("valid gzip");
            Bytes::from(out)
        } else {
            body
        };
        let req = ExportTraceServiceRequest::decode(body).expect("valid protobuf");
        c.accepted.lock().expect("lock").push(req);
        (
            [("content-type", "application/x-protobuf")],
            c.response().encode_to_vec(),
        )
            .into_response()
    }
    let capture = Arc::new(Capture {
        script,
        ..Default::default()
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let app = axum::Router::new()
        .route("/v1/traces", axum::routing::post(handle))
        .with_state(capture.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), capture)
}

const DRAIN: Duration = Duration::from_secs(60);

#[tokio::test]
async fn grpc_retries_unavailable_then_every_span_arrives_once() {
    let (endpoint, capture) = grpc_capture(Script {
        fail_first: 2,
        ..Default::default()
    })
    .await;
    let metrics = Metrics::new();
    let (handle, exporter) =
        Exporter::start(&config(ExportProtocol::Grpc, endpoint), metrics.clone()).expect("start");
    for i in 0..3 {
        handle.send(kept(1 + i * 50, 50)).await.expect("send");
    }
    drop(handle);
    exporter.shutdown(DRAIN).await;
    assert_each_once(&capture.accepted(), 1..=150);
    assert_eq!(metrics.spans_exported.get(), 150);
    assert_eq!(failures(&metrics, "unavailable"), 2);
    assert_eq!(lost(&metrics, "export_failed"), 0);
    assert_eq!(metrics.export_queue_spans.get(), 0);
}

#[tokio::test]
async fn grpc_resource_exhausted_is_retried_only_with_retry_info() {
    let script = Script {
        fail_first: 1,
        grpc_code: Some(Code::ResourceExhausted),
        retry_info: Some(Duration::from_millis(5)),
        ..Default::default()
    };
    let (endpoint, capture) = grpc_capture(script).await;
    let metrics = Metrics::new();
    let (handle, exporter) =
        Exporter::start(&config(ExportProtocol::Grpc, endpoint), metrics.clone()).expect("start");
    handle.send(kept(1, 10)).await.expect("send");
    drop(handle);
    exporter.shutdown(DRAIN).await;
    assert_each_once(&capture.accepted(), 1..=10);
    assert_eq!(failures(&metrics, "resource_exhausted"), 1);

    let script = Script {
        fail_first: 1,
        grpc_code: Some(Code::ResourceExhausted),
        ..Default::default()
    };
    let (endpoint, capture) = grpc_capture(script).await;
    let metrics = Metrics::new();
    let (handle, exporter) =
        Exporter::start(&config(ExportProtocol::Grpc, endpoint), metrics.clone()).expect("start");
    handle.send(kept(1, 10)).await.expect("send");
    drop(handle);
    exporter.shutdown(DRAIN).await;
    assert!(capture.accepted().is_empty());
    assert_eq!(
        capture.calls.load(Ordering::SeqCst),
        1,
        "no RetryInfo: not retried"
    );
    assert_eq!(lost(&metrics, "export_failed"), 10);
}

#[tokio::test]
async fn http_retries_503_with_retry_after_then_every_span_arrives_once() {
    let script = Script {
        fail_first: 3,
        retry_after: Some("0"),
        ..Default::default()
    };
    let (endpoint, capture) = http_capture(script).await;
    let metrics = Metrics::new();
    let (handle, exporter) =
        Exporter::start(&config(ExportProtocol::Http, endpoint), metrics.clone()).expect("start");
    for i in 0..4 {
        handle.send(kept(1 + i * 30, 30)).await.expect("send");
    }
    drop(handle);
    exporter.shutdown(DRAIN).await;
    assert_each_once(&capture.accepted(), 1..=120);
    assert_eq!(metrics.spans_exported.get(), 120);
    assert_eq!(failures(&metrics, "http_503"), 3);
}

#[tokio::test]
async fn batches_respect_size_limits_and_split_large_groups() {
    let (endpoint, capture) = http_capture(Script::default()).await;
    let metrics = Metrics::new();
    let mut cfg = config(ExportProtocol::Http, endpoint);
    cfg.batch = BatchConfig {
        send_batch_size: 10,
        send_batch_max_size: 15,
        send_batch_max_bytes: Some(ByteSize::mib(3)),
        timeout: Duration::from_millis(10),
    };
    let (handle, exporter) = Exporter::start(&cfg, metrics.clone()).expect("start");
    let mut next = 1;
    for n in [4, 4, 4, 40, 3, 1] {
        handle.send(kept(next, n)).await.expect("send");
        next += n;
    }
    drop(handle);
    exporter.shutdown(DRAIN).await;
    let accepted = capture.accepted();
    assert!(
        accepted.iter().all(|r| span_count(r) <= 15),
        "{:?}",
        accepted.iter().map(span_count).collect::<Vec<_>>()
    );
    assert!(
        accepted.len() >= 4,
        "56 spans need at least 4 requests of <= 15"
    );
    assert_each_once(&accepted, 1..next);
    assert_eq!(metrics.spans_exported.get(), next - 1);
}

#[tokio::test]
async fn batches_respect_the_byte_limit() {
    let (endpoint, capture) = grpc_capture(Script::default()).await;
    let metrics = Metrics::new();
    let mut cfg = config(ExportProtocol::Grpc, endpoint);
    let limit = 1000;
    cfg.batch.send_batch_max_bytes = Some(ByteSize(limit));
    let (handle, exporter) = Exporter::start(&cfg, metrics.clone()).expect("start");
    handle.send(kept(1, 100)).await.expect("send");
    drop(handle);
    exporter.shutdown(DRAIN).await;
    let accepted = capture.accepted();
    assert!(accepted.len() > 1, "100 spans do not fit in {limit} bytes");
    // The limit counts span bytes; the one resource and scope of the fixture add well under 200.
    for r in &accepted {
        assert!(
            r.encoded_len() as u64 <= limit + 200,
            "request of {} bytes",
            r.encoded_len()
        );
    }
    assert_each_once(&accepted, 1..=100);
}

#[tokio::test]
async fn grpc_gzip_and_headers_reach_the_downstream() {
    let (endpoint, capture) = grpc_capture(Script::default()).await;
    let metrics = Metrics::new();
    let mut cfg = config(ExportProtocol::Grpc, endpoint);
    cfg.compression = Compression::Gzip;
    cfg.headers.insert("X-Tenant".into(), "acme".into());
    let (handle, exporter) = Exporter::start(&cfg, metrics.clone()).expect("start");
    handle.send(kept(1, 20)).await.expect("send");
    drop(handle);
    exporter.shutdown(DRAIN).await;
    assert_each_once(&capture.accepted(), 1..=20);
    assert_eq!(
        *capture.encodings.lock().expect("lock"),
        vec!["gzip".to_owned()]
    );
    assert_eq!(
        *capture.tenants.lock().expect("lock"),
        vec!["acme".to_owned()]
    );
}

#[tokio::test]
async fn http_gzip_and_headers_reach_the_downstream() {
    let (endpoint, capture) = http_capture(Script::default()).await;
    let metrics = Metrics::new();
    let mut cfg = config(ExportProtocol::Http, endpoint);
    cfg.compression = Compression::Gzip;
    cfg.headers.insert("x-tenant".into(), "acme".into());
    let (handle, exporter) = Exporter::start(&cfg, metrics.clone()).expect("start");
    handle.send(kept(1, 20)).await.expect("send");
    drop(handle);
    exporter.shutdown(DRAIN).await;
    assert_each_once(&capture.accepted(), 1..=20);
    assert_eq!(
        *capture.encodings.lock().expect("lock"),
        vec!["gzip".to_owned()]
    );
    assert_eq!(
        *capture.tenants.lock().expect("lock"),
        vec!["acme".to_owned()]
    );
}

#[tokio::test]
async fn grpc_invalid_argument_gives_up_at_once() {
    let script = Script {
        fail_first: usize::MAX,
        grpc_code: Some(Code::InvalidArgument),
        ..Default::default()
    };
    let (endpoint, capture) = grpc_capture(script).await;
    let metrics = Metrics::new();
    let (handle, exporter) =
        Exporter::start(&config(ExportProtocol::Grpc, endpoint), metrics.clone()).expect("start");
    handle.send(kept(1, 10)).await.expect("send");
    drop(handle);
    exporter.shutdown(DRAIN).await;
    assert_eq!(capture.calls.load(Ordering::SeqCst), 1);
    assert_eq!(lost(&metrics, "export_failed"), 10);
    assert_eq!(failures(&metrics, "invalid_argument"), 1);
    assert_eq!(metrics.spans_exported.get(), 0);
    assert_eq!(metrics.export_queue_spans.get(), 0);
}

#[tokio::test]
async fn http_400_gives_up_at_once() {
    let script = Script {
        fail_first: usize::MAX,
        http_status: Some(400),
        ..Default::default()
    };
    let (endpoint, capture) = http_capture(script).await;
    let metrics = Metrics::new();
    let (handle, exporter) =
        Exporter::start(&config(ExportProtocol::Http, endpoint), metrics.clone()).expect("start");
    handle.send(kept(1, 10)).await.expect("send");
    drop(handle);
    exporter.shutdown(DRAIN).await;
    assert_eq!(capture.calls.load(Ordering::SeqCst), 1);
    assert_eq!(lost(&metrics, "export_failed"), 10);
    assert_eq!(failures(&metrics, "http_4xx"), 1);
}

#[tokio::test]
async fn retries_stop_after_max_elapsed_time() {
    let (endpoint, capture) = http_capture(Script {
        fail_first: usize::MAX,
        ..Default::default()
    })
    .await;
    let metrics = Metrics::new();
    let mut cfg = config(ExportProtocol::Http, endpoint);
    cfg.retry_on_failure.max_elapsed_time = Duration::from_millis(50);
    let (handle, exporter) = Exporter::start(&cfg, metrics.clone()).expect("start");
    handle.send(kept(1, 10)).await.expect("send");
    drop(handle);
    exporter.shutdown(DRAIN).await;
    assert!(capture.calls.load(Ordering::SeqCst) >= 1);
    assert_eq!(lost(&metrics, "export_failed"), 10);
    assert_eq!(
        failures(&metrics, "http_503"),
        capture.calls.load(Ordering::SeqCst) as u64
    );
}

#[tokio::test]
async fn partial_success_counts_rejected_downstream() {
    let (endpoint, _capture) = grpc_capture(Script {
        reject_spans: 3,
        ..Default::default()
    })
    .await;
    let metrics = Metrics::new();
    let (handle, exporter) =
        Exporter::start(&config(ExportProtocol::Grpc, endpoint), metrics.clone()).expect("start");
    handle.send(kept(1, 10)).await.expect("send");
    drop(handle);
    exporter.shutdown(DRAIN).await;
    assert_eq!(metrics.spans_exported.get(), 7);
    assert_eq!(lost(&metrics, "rejected_downstream"), 3);
}

#[tokio::test]
async fn send_waits_while_queue_is_full_and_shutdown_counts_the_rest() {
    let (endpoint, _capture) = grpc_capture(Script {
        stall: true,
        ..Default::default()
    })
    .await;
    let metrics = Metrics::new();
    let mut cfg = config(ExportProtocol::Grpc, endpoint);
    cfg.sending_queue = SendingQueue {
        queue_size: 20,
        queue_bytes: AutoSize::Auto,
        num_consumers: 1,
        persistent: None,
    };
    cfg.batch = BatchConfig {
        send_batch_size: 10,
        send_batch_max_size: 10,
        send_batch_max_bytes: Some(ByteSize::mib(3)),
        timeout: Duration::from_secs(3600),
    };
    let (handle, exporter) = Exporter::start(&cfg, metrics.clone()).expect("start");
    handle.send(kept(1, 10)).await.expect("send");
    handle.send(kept(11, 10)).await.expect("send");
    assert_eq!(metrics.export_queue_spans.get(), 20);
    assert_eq!(metrics.export_queue_capacity.get(), 20);
    // The queue holds 20 spans that cannot leave: one more waits (observed with a timeout, not timed).
    let blocked = tokio::time::timeout(Duration::from_millis(200), handle.send(kept(21, 1))).await;
    assert!(blocked.is_err(), "send must wait while the queue is full");
    drop(handle);
    exporter.shutdown(Duration::from_millis(100)).await;
    assert_eq!(lost(&metrics, "shutdown"), 20);
    assert_eq!(metrics.spans_exported.get(), 0);
    assert_eq!(metrics.export_queue_spans.get(), 0);
}

#[tokio::test]
async fn the_queue_is_bounded_in_bytes_too() {
    let (endpoint, _capture) = grpc_capture(Script {
        stall: true,
        ..Default::default()
    })
    .await;
    let metrics = Metrics::new();
    let mut cfg = config(ExportProtocol::Grpc, endpoint);
    cfg.batch = BatchConfig {
        send_batch_size: 10,
        send_batch_max_size: 10,
        send_batch_max_bytes: Some(ByteSize::mib(3)),
        timeout: Duration::from_secs(3600),
    };
    let ten = kept(1, 10);
    let cost: usize = ten
        .spans
        .iter()
        .map(|s| super::span_cost(s, &ten.patch))
        .sum();
    // Room for 25 spans by bytes, 1000 by count: the byte bound is the one that holds.
    let (handle, exporter) =
        Exporter::start_with_queue_bytes(&cfg, (cost * 5 / 2) as u64, metrics.clone())
            .expect("start");
    handle.send(ten).await.expect("send");
    handle.send(kept(11, 10)).await.expect("send");
    assert_eq!(metrics.export_queue_bytes.get(), 2 * cost as i64);
    assert_eq!(
        metrics.export_queue_capacity_bytes.get(),
        (cost * 5 / 2) as i64
    );
    let blocked = tokio::time::timeout(Duration::from_millis(200), handle.send(kept(21, 10))).await;
    assert!(
        blocked.is_err(),
        "send must wait while the queue's bytes are taken"
    );
    assert!(metrics.export_queue_bytes.get() <= (cost * 5 / 2) as i64);
    drop(handle);
    exporter.shutdown(Duration::from_millis(100)).await;
    assert_eq!(metrics.export_queue_bytes.get(), 0, "every byte given back");
    assert_eq!(metrics.export_queue_spans.get(), 0);
    assert_eq!(lost(&metrics, "shutdown"), 20);
}

#[tokio::test]
async fn a_span_larger_than_the_byte_bound_still_goes_alone() {
    let (endpoint, capture) = grpc_capture(Script::default()).await;
    let metrics = Metrics::new();
    let cfg = config(ExportProtocol::Grpc, endpoint);
    let (handle, exporter) =
        Exporter::start_with_queue_bytes(&cfg, 10, metrics.clone()).expect("start");
    handle.send(kept(1, 3)).await.expect("send");
    drop(handle);
    exporter.shutdown(DRAIN).await;
    assert_each_once(&capture.accepted(), 1..4);
    assert_eq!(metrics.export_queue_bytes.get(), 0);
}

#[tokio::test]
async fn a_group_larger_than_the_queue_is_queued_in_parts() {
    let (endpoint, capture) = grpc_capture(Script::default()).await;
    let metrics = Metrics::new();
    let mut cfg = config(ExportProtocol::Grpc, endpoint);
    cfg.sending_queue = SendingQueue {
        queue_size: 10,
        queue_bytes: AutoSize::Auto,
        num_consumers: 1,
        persistent: None,
    };
    cfg.batch = BatchConfig {
        send_batch_size: 10,
        send_batch_max_size: 10,
        send_batch_max_bytes: Some(ByteSize::mib(3)),
        timeout: Duration::from_millis(10),
    };
    let (handle, exporter) = Exporter::start(&cfg, metrics.clone()).expect("start");
    handle.send(kept(1, 35)).await.expect("send");
    drop(handle);
    exporter.shutdown(DRAIN).await;
    assert_each_once(&capture.accepted(), 1..=35);
}

#[tokio::test]
async fn shutdown_flushes_a_partial_batch() {
    let (endpoint, capture) = http_capture(Script::default()).await;
    let metrics = Metrics::new();
    let mut cfg = config(ExportProtocol::Http, endpoint);
    // Nothing would leave before shutdown: the batch is never full and its timeout is an hour.
    cfg.batch = BatchConfig {
        send_batch_size: 1000,
        send_batch_max_size: 1000,
        send_batch_max_bytes: Some(ByteSize::mib(3)),
        timeout: Duration::from_secs(3600),
    };
    let (handle, exporter) = Exporter::start(&cfg, metrics.clone()).expect("start");
    handle.send(kept(1, 30)).await.expect("send");
    handle.send(kept(31, 30)).await.expect("send");
    drop(handle);
    exporter.shutdown(DRAIN).await;
    assert_each_once(&capture.accepted(), 1..=60);
    assert_eq!(metrics.spans_exported.get(), 60);
    assert_eq!(lost(&metrics, "shutdown"), 0);
}

#[tokio::test]
async fn starts_before_the_downstream_and_delivers_once_it_is_up() {
    // A free port with nothing listening yet.
    let probe = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = probe.local_addr().expect("addr");
    drop(probe);
    let metrics = Metrics::new();
    let (handle, exporter) = Exporter::start(
        &config(ExportProtocol::Grpc, format!("http://{addr}")),
        metrics.clone(),
    )
    .expect("start");
    handle.send(kept(1, 5)).await.expect("send");
    // Wait until the first attempt has failed, then bring the downstream up on that port.
    while metrics
        .export_failures
        .get_or_create(&ReasonLabels {
            reason: "unavailable",
        })
        .get()
        == 0
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let capture = Arc::new(Capture::default());
    let listener = TcpListener::bind(addr)
        .await
        .expect("rebind the probed port");
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(GrpcCapture(capture.clone())))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    drop(handle);
    exporter.shutdown(DRAIN).await;
    assert_each_once(&capture.accepted(), 1..=5);
}

#[tokio::test]
async fn file_exporter_writes_otlp_json_lines_that_parse_back() {
    let path = std::env::temp_dir().join(format!(
        "tailgate-export-{}-{}.jsonl",
        std::process::id(),
        fastrand::u64(..)
    ));
    let metrics = Metrics::new();
    let mut cfg = config(ExportProtocol::File, path.display().to_string());
    cfg.batch = BatchConfig {
        send_batch_size: 5,
        send_batch_max_size: 5,
        send_batch_max_bytes: Some(ByteSize::mib(3)),
        timeout: Duration::from_millis(10),
    };
    let (handle, exporter) = Exporter::start(&cfg, metrics.clone()).expect("start");
    let mut patch = SpanPatch::new();
    patch.string_attribute("tailgate.rule", "keep-errors");
    // Pipeline workers are plain threads: use the blocking variant from one.
    let patch = Bytes::copy_from_slice(patch.as_bytes());
    tokio::task::spawn_blocking(move || {
        let mut k = kept(1, 12);
        k.patch = patch;
        handle.blocking_send(k).expect("send");
    })
    .await
    .expect("thread");
    exporter.shutdown(DRAIN).await;
    let text = std::fs::read_to_string(&path).expect("file written");
    let _ = std::fs::remove_file(&path);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "12 spans in batches of 5");
    assert!(
        lines[0].contains(&format!("\"traceId\":\"{TRACE:032x}\"")),
        "hex ids: {}",
        lines[0]
    );
    let requests: Vec<ExportTraceServiceRequest> = lines
        .iter()
        .map(|l| serde_json::from_str(l).expect("valid OTLP/JSON"))
        .collect();
    assert_each_once(&requests, 1..=12);
    let span = &requests[0].resource_spans[0].scope_spans[0].spans[0];
    assert!(
        span.attributes.iter().any(|kv| kv.key == "tailgate.rule"),
        "patch applied"
    );
    assert_eq!(metrics.spans_exported.get(), 12);
}

#[test]
fn retry_after_parses_seconds_and_http_dates() {
    let now = at(784_111_000);
    assert_eq!(
        retry::parse_retry_after("120", now),
        Some(Duration::from_secs(120))
    );
    // Sun, 06 Nov 1994 08:49:37 GMT is 784111777.
    assert_eq!(
        retry::parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now),
        Some(Duration::from_secs(777))
    );
    let later = at(784_200_000);
    assert_eq!(
        retry::parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", later),
        Some(Duration::ZERO)
    );
    assert_eq!(retry::parse_retry_after("soon", now), None);
}

fn at(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

#[test]
fn retry_info_is_read_from_status_details() {
    let info = RetryInfo {
        retry_delay: Some(ProtoDuration {
            seconds: 2,
            nanos: 500_000_000,
        }),
    };
    let status = RpcStatus {
        code: 8,
        message: "slow down".into(),
        details: vec![
            ProtoAny {
                type_url: "type.googleapis.com/google.rpc.ErrorInfo".into(),
                value: vec![],
            },
            ProtoAny {
                type_url: format!("type.googleapis.com/{RETRY_INFO_TYPE}"),
                value: info.encode_to_vec(),
            },
        ],
    };
    assert_eq!(
        RetryInfo::delay_in(&status.encode_to_vec()),
        Some(Duration::from_millis(2500))
    );
    assert_eq!(RetryInfo::delay_in(&[]), None);
    let s =
        tonic::Status::with_details(Code::ResourceExhausted, "x", status.encode_to_vec().into());
    let f = grpc::classify(&s);
    assert!(f.retryable);
    assert_eq!(f.retry_after, Some(Duration::from_millis(2500)));
    assert!(!grpc::classify(&tonic::Status::resource_exhausted("too big")).retryable);
    assert!(grpc::classify(&tonic::Status::unavailable("down")).retryable);
    assert!(!grpc::classify(&tonic::Status::invalid_argument("bad")).retryable);
    // A connection reset mid-call comes back from tonic as UNKNOWN with the I/O error as its source: retry.
    let reset = tonic::Status::from_error(Box::new(std::io::Error::new(
        std::io::ErrorKind::ConnectionReset,
        "connection reset by peer",
    )));
    assert_eq!(reset.code(), Code::Unknown, "{reset:?}");
    let f = grpc::classify(&reset);
    assert!(f.retryable && f.reason == "transport", "{f:?}");
    // An UNKNOWN status the server sent stays final.
    assert!(!grpc::classify(&tonic::Status::unknown("server said so")).retryable);
}

#[test]
fn backoff_grows_with_jitter_up_to_the_max() {
    let cfg = RetryConfig {
        enabled: true,
        initial_interval: Duration::from_millis(100),
        max_interval: Duration::from_millis(400),
        max_elapsed_time: Duration::from_secs(60),
    };
    let mut b = Backoff::new(&cfg);
    for centre in [100u64, 200, 400, 400, 400] {
        let d = b.next_delay();
        let c = Duration::from_millis(centre);
        assert!(d >= c / 2 && d <= c * 3 / 2, "{d:?} around {c:?}");
    }
}

#[test]
fn http_url_gets_the_traces_path_only_when_missing() {
    assert_eq!(
        http::traces_url("http://jaeger:4318")
            .expect("url")
            .as_str(),
        "http://jaeger:4318/v1/traces"
    );
    assert_eq!(
        http::traces_url("http://jaeger:4318/")
            .expect("url")
            .as_str(),
        "http://jaeger:4318/v1/traces"
    );
    assert_eq!(
        http::traces_url("http://gw:8080/otlp/traces")
            .expect("url")
            .as_str(),
        "http://gw:8080/otlp/traces"
    );
}

#[test]
fn bad_headers_and_tls_endpoints_are_start_errors() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let _guard = rt.enter();
    let mut cfg = config(ExportProtocol::Grpc, "http://127.0.0.1:4317".into());
    cfg.headers.insert("bad header".into(), "x".into());
    assert!(matches!(
        Exporter::start(&cfg, Metrics::new()),
        Err(ExportError::Header { .. })
    ));
    // TLS material is read at start: a missing CA file is a start error naming the key.
    for protocol in [ExportProtocol::Http, ExportProtocol::Grpc] {
        let mut cfg = config(protocol, "https://jaeger:4318".into());
        cfg.tls = Some(crate::tls::ClientTls {
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..Default::default()
        });
        match Exporter::start(&cfg, Metrics::new()) {
            Err(ExportError::Tls(e)) => {
                assert!(e.to_string().contains("exporters.otlp.tls.ca_file"), "{e}")
            }
            Err(e) => panic!("expected a TLS error, got {e}"),
            Ok(_) => panic!("expected a TLS error"),
        }
    }
}

#[tokio::test]
async fn a_full_persistent_queue_drops_with_a_named_reason_and_keeps_the_rest_on_disk() {
    let (endpoint, _capture) = grpc_capture(Script {
        stall: true,
        ..Default::default()
    })
    .await;
    let dir = std::env::temp_dir().join(format!(
        "tailgate-export-spool-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    let metrics = Metrics::new();
    let mut cfg = config(ExportProtocol::Grpc, endpoint);
    cfg.sending_queue = SendingQueue {
        queue_size: 10,
        queue_bytes: AutoSize::Auto,
        num_consumers: 1,
        persistent: Some(crate::config::PersistentQueue {
            path: dir.clone(),
            max_bytes: ByteSize(1000),
            segment_bytes: ByteSize(1000),
            fsync: crate::config::FsyncPolicy::Never,
            fsync_interval: Duration::from_secs(1),
            when_full: crate::config::WhenFull::Drop,
        }),
    };
    cfg.batch = BatchConfig {
        send_batch_size: 10,
        send_batch_max_size: 10,
        send_batch_max_bytes: Some(ByteSize::mib(3)),
        timeout: Duration::from_secs(3600),
    };
    let (handle, exporter) = Exporter::start(&cfg, metrics.clone()).expect("start");
    // Three batches of 10 spans (each more than a third of the queue's 1000 bytes) into a queue whose
    // downstream never answers: the memory queue (10 spans) never blocks, the disk queue overflows.
    for first in [1, 11, 21] {
        handle.send(kept(first, 10)).await.expect("send");
    }
    drop(handle);
    exporter.shutdown(Duration::from_millis(200)).await;
    let on_disk = metrics.persistent_queue_spans.get() as u64;
    let dropped = lost(&metrics, "persistent_queue_full");
    assert!(
        dropped > 0 && on_disk > 0,
        "{on_disk} on disk, {dropped} dropped"
    );
    assert_eq!(on_disk + dropped, 30, "every span on disk or counted");
    assert!(metrics.persistent_queue_bytes.get() <= 1000);
    assert_eq!(
        lost(&metrics, "shutdown"),
        0,
        "undelivered batches stay on disk"
    );
    assert_eq!(metrics.export_queue_spans.get(), 0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn at_the_shutdown_deadline_what_the_batcher_holds_goes_to_the_persistent_queue() {
    // A downstream that never answers, and a batch that is never full and never times out: at the
    // deadline the spans are still in the batcher (built or queued), not on disk.
    let (endpoint, _capture) = grpc_capture(Script {
        stall: true,
        ..Default::default()
    })
    .await;
    let dir = std::env::temp_dir().join(format!(
        "tailgate-export-spool-deadline-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    let persistent = crate::config::PersistentQueue {
        path: dir.clone(),
        max_bytes: ByteSize::mib(1),
        segment_bytes: ByteSize::mib(1),
        fsync: crate::config::FsyncPolicy::Never,
        fsync_interval: Duration::from_secs(1),
        when_full: crate::config::WhenFull::Block,
    };
    let metrics = Metrics::new();
    let mut cfg = config(ExportProtocol::Grpc, endpoint);
    cfg.sending_queue = SendingQueue {
        queue_size: 1000,
        queue_bytes: AutoSize::Auto,
        num_consumers: 1,
        persistent: Some(persistent.clone()),
    };
    cfg.batch = BatchConfig {
        send_batch_size: 1000,
        send_batch_max_size: 1000,
        send_batch_max_bytes: Some(ByteSize::mib(3)),
        timeout: Duration::from_secs(3600),
    };
    let (handle, exporter) = Exporter::start(&cfg, metrics.clone()).expect("start");
    handle.send(kept(1, 30)).await.expect("send");
    // The handle stays alive, as the pipeline's does when the deadline passes while it still drains.
    exporter.shutdown_by(tokio::time::Instant::now()).await;
    assert_eq!(metrics.persistent_queue_spans.get(), 30, "on disk");
    assert_eq!(lost(&metrics, "shutdown"), 0, "nothing lost");
    assert_eq!(metrics.export_queue_spans.get(), 0);
    assert!(
        handle.send(kept(31, 1)).await.is_err(),
        "past the deadline the exporter refuses (the pipeline counts the spans lost to shutdown)"
    );
    drop(handle);
    let reopened = Metrics::new();
    let _spool = spool::Spool::open(&persistent, reopened.clone()).expect("reopens");
    assert_eq!(
        reopened.persistent_queue_recovered_spans.get(),
        30,
        "the next start sends them"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
