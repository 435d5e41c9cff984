//! The capture server: stands in for Jaeger. Serves OTLP/gRPC `TraceService/Export` and OTLP/HTTP
//! `POST /v1/traces` (protobuf or JSON, gzip or not) on 127.0.0.1, records every request it accepts, and
//! can refuse the first N requests, or every request during an outage, with `UNAVAILABLE` / 503 to
//! exercise the exporter's retries and queues.

use crate::WAIT;
use crate::otlp::{FlatSpan, flatten, hex};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tonic::codec::CompressionEncoding;

/// Which of the capture server's endpoints a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Grpc,
    Http,
}

/// One accepted request.
#[derive(Debug, Clone)]
pub struct Captured {
    pub via: Via,
    /// `grpc-encoding` or `Content-Encoding` of the request, if any.
    pub encoding: Option<String>,
    pub request: ExportTraceServiceRequest,
}

#[derive(Default)]
struct Recorder {
    requests: Mutex<Vec<Captured>>,
    /// Requests still to refuse.
    refuse: AtomicUsize,
    /// Requests refused so far.
    refused: AtomicUsize,
    /// While set, every request is refused (a downstream outage).
    outage: AtomicBool,
}

impl Recorder {
    fn lock(&self) -> MutexGuard<'_, Vec<Captured>> {
        // A panic while holding the lock only happens in a failing test; keep the data anyway.
        self.requests.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// True when this request is to be refused.
    fn take_refusal(&self) -> bool {
        if self.outage.load(Ordering::SeqCst) {
            self.refused.fetch_add(1, Ordering::SeqCst);
            return true;
        }
        let refuse = self
            .refuse
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if refuse {
            self.refused.fetch_add(1, Ordering::SeqCst);
        }
        refuse
    }
}

/// A running capture server; stops when dropped.
pub struct CaptureServer {
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    recorder: Arc<Recorder>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for CaptureServer {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl CaptureServer {
    /// Starts a server that accepts everything.
    pub async fn start() -> anyhow::Result<CaptureServer> {
        CaptureServer::refusing_first(0).await
    }

    /// Starts a server that refuses its first `n` requests (gRPC `UNAVAILABLE`, HTTP 503), then accepts.
    pub async fn refusing_first(n: usize) -> anyhow::Result<CaptureServer> {
        let recorder = Arc::new(Recorder {
            refuse: AtomicUsize::new(n),
            ..Default::default()
        });

        let grpc = TcpListener::bind("127.0.0.1:0").await?;
        let grpc_addr = grpc.local_addr()?;
        let service = TraceServiceServer::new(GrpcCapture(recorder.clone()))
            .accept_compressed(CompressionEncoding::Gzip)
            .max_decoding_message_size(64 << 20);
        let grpc_task = tokio::spawn(async move {
            let incoming = tonic::transport::server::TcpIncoming::from(grpc);
            if let Err(e) = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(incoming)
                .await
            {
                eprintln!("capture gRPC server failed: {e}");
            }
        });

        let http = TcpListener::bind("127.0.0.1:0").await?;
        let http_addr = http.local_addr()?;
        let app = Router::new()
            .route("/v1/traces", post(http_export))
            .layer(axum::extract::DefaultBodyLimit::max(64 << 20))
            .with_state(recorder.clone());
        let http_task = tokio::spawn(async move {
            if let Err(e) = axum::serve(http, app).await {
                eprintln!("capture HTTP server failed: {e}");
            }
        });

        Ok(CaptureServer {
            grpc_addr,
            http_addr,
            recorder,
            tasks: vec![grpc_task, http_task],
        })
    }

    /// `http://127.0.0.1:PORT` of the gRPC endpoint, as an OTLP/gRPC exporter wants it.
    pub fn grpc_endpoint(&self) -> String {
        format!("http://{}", self.grpc_addr)
    }

    /// `http://127.0.0.1:PORT` of the HTTP endpoint (the server listens on `/v1/traces`).
    pub fn http_endpoint(&self) -> String {
        format!("http://{}", self.http_addr)
    }

    /// Every request accepted so far.
    pub fn requests(&self) -> Vec<Captured> {
        self.recorder.lock().clone()
    }

    /// Every span accepted so far, in arrival order.
    pub fn spans(&self) -> Vec<FlatSpan> {
        self.recorder
            .lock()
            .iter()
            .flat_map(|c| flatten(&c.request))
            .collect()
    }

    /// Starts (`true`) or ends an outage: while it lasts every request is refused with `UNAVAILABLE` /
    /// 503, as from a Jaeger that is down behind a load balancer.
    pub fn set_outage(&self, on: bool) {
        self.recorder.outage.store(on, Ordering::SeqCst);
    }

    /// How many requests were refused on purpose.
    pub fn refused(&self) -> usize {
        self.recorder.refused.load(Ordering::SeqCst)
    }

    /// Waits (at most [`WAIT`]) until at least `n` spans have arrived and returns all arrived spans.
    pub async fn wait_for_spans(&self, n: usize) -> anyhow::Result<Vec<FlatSpan>> {
        self.wait_for_spans_within(n, WAIT).await
    }

    /// [`CaptureServer::wait_for_spans`] with an explicit bound.
    pub async fn wait_for_spans_within(
        &self,
        n: usize,
        timeout: Duration,
    ) -> anyhow::Result<Vec<FlatSpan>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let spans = self.spans();
            if spans.len() >= n {
                return Ok(spans);
            }
            if tokio::time::Instant::now() >= deadline {
                let names: Vec<String> = spans
                    .iter()
                    .map(|s| format!("{} ({})", s.span.name, hex(&s.span.span_id)))
                    .collect();
                anyhow::bail!(
                    "timed out after {timeout:?}: {} of {n} spans arrived downstream in {} requests ({} refused on purpose): {names:?}",
                    spans.len(),
                    self.requests().len(),
                    self.refused()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

struct GrpcCapture(Arc<Recorder>);

#[tonic::async_trait]
impl TraceService for GrpcCapture {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        if self.0.take_refusal() {
            return Err(tonic::Status::unavailable(
                "capture server: refusing on purpose",
            ));
        }
        let encoding = request
            .metadata()
            .get("grpc-encoding")
            .and_then(|v| v.to_str().ok())
            .map(String::from);
        self.0.lock().push(Captured {
            via: Via::Grpc,
            encoding,
            request: request.into_inner(),
        });
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

async fn http_export(
    State(rec): State<Arc<Recorder>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if rec.take_refusal() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "0")],
            "refusing on purpose",
        )
            .into_response();
    }
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let raw = match encoding.as_deref() {
        Some("gzip") => {
            let mut out = Vec::new();
            if let Err(e) = flate2::read::GzDecoder::new(&body[..]).read_to_end(&mut out) {
                return (StatusCode::BAD_REQUEST, format!("bad gzip: {e}")).into_response();
            }
            out
        }
        None | Some("identity") => body.to_vec(),
        Some(other) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("unsupported encoding {other}"),
            )
                .into_response();
        }
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if content_type.starts_with("application/json") {
        return (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "capture server takes protobuf only",
        )
            .into_response();
    }
    match ExportTraceServiceRequest::decode(&raw[..]) {
        Ok(request) => {
            rec.lock().push(Captured {
                via: Via::Http,
                encoding,
                request,
            });
            let body = ExportTraceServiceResponse::default().encode_to_vec();
            ([(header::CONTENT_TYPE, "application/x-protobuf")], body).into_response()
        }
        Err(e) => (StatusCode::BAD_REQUEST, format!("bad protobuf: {e}")).into_response(),
    }
}
