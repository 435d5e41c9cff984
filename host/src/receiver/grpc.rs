//! OTLP/gRPC receiver: `opentelemetry.proto.collector.trace.v1.TraceService/Export` served with tonic.
//!
//! The request is never decoded into `prost` structs: [`ExportCodec`]'s decoder hands over the raw message
//! bytes (already decompressed by tonic, within `max_body_bytes`) and the shared scan in
//! [`super::receive`] validates them. Errors raised by tonic before the service runs (message too long,
//! decompression bomb, bad gzip) are rewritten to the codes the OTLP spec asks for and counted.

use super::{
    AS_SENT, DECOMPRESSED, RETRY_AFTER, ReceiveError, ReceiverContext, count_refusal, receive,
};
use crate::auth::ReceiverAuth;
use crate::ingest::Refused;
use crate::otlp::rpc::{RetryInfo, RpcStatus};
use bytes::{Buf, Bytes};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;
use std::convert::Infallible;
use std::future::{Future, Ready, ready};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use tokio::net::TcpListener;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder};
use tonic::{Code, Status};

/// Metric label of this receiver.
pub const RECEIVER: &str = "grpc";

/// gRPC service name, as routed by tonic.
pub const SERVICE_NAME: &str = "opentelemetry.proto.collector.trace.v1.TraceService";

/// Path of the one method served.
pub const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// Serves OTLP/gRPC on `listener` until `shutdown` completes, then lets in-flight requests finish.
pub async fn serve(
    listener: TcpListener,
    ctx: ReceiverContext,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listener, ctx, None, None, shutdown).await
}

/// [`serve`] with TLS (tonic terminates it) and authentication of every request, each optional.
pub async fn serve_with(
    listener: TcpListener,
    ctx: ReceiverContext,
    tls: Option<tonic::transport::ServerTlsConfig>,
    auth: Option<ReceiverAuth>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let mut server = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        server = server.tls_config(tls).map_err(std::io::Error::other)?;
    }
    server
        .add_service(TraceExportServer {
            ctx: Arc::new(ctx),
            auth: auth.map(Arc::new),
        })
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(std::io::Error::other)
}

/// The tower service for [`EXPORT_PATH`], written the way tonic's generated servers are, but with
/// [`ExportCodec`] in place of the `prost` codec.
#[derive(Clone)]
struct TraceExportServer {
    ctx: Arc<ReceiverContext>,
    /// Checked before the request body is read; `None` costs one branch.
    auth: Option<Arc<ReceiverAuth>>,
}

impl tonic::server::NamedService for TraceExportServer {
    const NAME: &'static str = SERVICE_NAME;
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = Result<T, Infallible>> + Send + 'static>>;

impl<B> tower::Service<http::Request<B>> for TraceExportServer
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req.uri().path() != EXPORT_PATH {
            return Box::pin(async { Ok(Status::unimplemented("unknown method").into_http()) });
        }
        if let Some(auth) = &self.auth
            && let Err(failure) = auth.check(req.headers())
        {
            let status = ReceiverAuth::grpc_status(failure);
            return Box::pin(async move { Ok(status.into_http()) });
        }
        let ctx = Arc::clone(&self.ctx);
        Box::pin(async move {
            let called = Arc::new(AtomicBool::new(false));
            let method = ExportMethod {
                ctx: Arc::clone(&ctx),
                called: Arc::clone(&called),
            };
            let mut grpc = tonic::server::Grpc::new(ExportCodec)
                .accept_compressed(CompressionEncoding::Gzip)
                .send_compressed(CompressionEncoding::Gzip)
                .max_decoding_message_size(ctx.max_body_bytes);
            let response = grpc.unary(method, req).await;
            if called.load(Ordering::Acquire) {
                return Ok(response);
            }
            // tonic refused the request before our method saw it; its status is in the headers
            // (a trailers-only response).
            Ok(match Status::from_header_map(response.headers()) {
                Some(status) if status.code() != Code::Ok => {
                    let err = transport_refusal(&status, ctx.max_body_bytes);
                    count_refusal(&ctx.metrics, RECEIVER, &err);
                    match &err {
                        ReceiveError::TooLarge { .. } | ReceiveError::BadGzip(_) => {
                            to_status(&err).into_http()
                        }
                        _ => response,
                    }
                }
                _ => response,
            })
        })
    }
}

/// Classifies an error tonic raised while reading the request (see `tonic::codec::decode`).
fn transport_refusal(status: &Status, limit: usize) -> ReceiveError {
    match status.code() {
        // The length prefix is over `max_decoding_message_size`.
        Code::OutOfRange => ReceiveError::TooLarge {
            limit,
            stage: AS_SENT,
        },
        // Inflating stopped at `max_decoding_message_size`.
        Code::ResourceExhausted => ReceiveError::TooLarge {
            limit,
            stage: DECOMPRESSED,
        },
        Code::Internal if status.message().starts_with("Error decompressing") => {
            ReceiveError::BadGzip(status.message().to_owned())
        }
        Code::Unimplemented => ReceiveError::UnsupportedEncoding(status.message().to_owned()),
        _ => ReceiveError::BodyRead(status.message().to_owned()),
    }
}

/// The gRPC status for a refusal, per the OTLP spec: retryable backpressure is `RESOURCE_EXHAUSTED` with
/// `RetryInfo` (without it clients must not retry), shutdown is `UNAVAILABLE`, bad input is
/// `INVALID_ARGUMENT`, too large is `RESOURCE_EXHAUSTED` without `RetryInfo` (not retryable).
pub fn to_status(err: &ReceiveError) -> Status {
    let message = err.to_string();
    match err {
        ReceiveError::Refused(Refused::QueueFull | Refused::MemoryPressure) => {
            let details = RpcStatus {
                code: Code::ResourceExhausted as i32,
                message: message.clone(),
                details: vec![RetryInfo::any(RETRY_AFTER)],
            };
            Status::with_details(
                Code::ResourceExhausted,
                message,
                Bytes::from(details.encode_to_vec()),
            )
        }
        ReceiveError::Refused(Refused::ShuttingDown) => Status::unavailable(message),
        ReceiveError::TooLarge { .. } => Status::resource_exhausted(message),
        ReceiveError::UnsupportedEncoding(_) | ReceiveError::UnsupportedMediaType(_) => {
            Status::unimplemented(message)
        }
        ReceiveError::BadGzip(_)
        | ReceiveError::MalformedJson(_)
        | ReceiveError::Malformed(_)
        | ReceiveError::BodyRead(_) => Status::invalid_argument(message),
        ReceiveError::Internal(_) => Status::internal(message),
    }
}

/// The unary method: scan, count, submit.
struct ExportMethod {
    ctx: Arc<ReceiverContext>,
    /// Set when tonic got as far as calling us, so errors before that are told apart.
    called: Arc<AtomicBool>,
}

impl tonic::server::UnaryService<Bytes> for ExportMethod {
    type Response = ExportTraceServiceResponse;
    type Future = Ready<Result<tonic::Response<ExportTraceServiceResponse>, Status>>;

    fn call(&mut self, request: tonic::Request<Bytes>) -> Self::Future {
        self.called.store(true, Ordering::Release);
        let body = request.into_inner();
        ready(match receive(&self.ctx, RECEIVER, &body) {
            Ok(accepted) => Ok(tonic::Response::new(accepted.response())),
            Err(err) => Err(to_status(&err)),
        })
    }
}

/// Decodes a request as its raw message bytes (for the scan) and encodes responses with `prost`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ExportCodec;

impl Codec for ExportCodec {
    type Encode = ExportTraceServiceResponse;
    type Decode = Bytes;
    type Encoder = tonic_prost::ProstEncoder<ExportTraceServiceResponse>;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        tonic_prost::ProstCodec::<ExportTraceServiceResponse, ExportTraceServiceResponse>::default()
            .encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawDecoder
    }
}

/// Yields the whole message as `Bytes` (tonic has already framed, size-checked and decompressed it).
#[derive(Debug, Clone, Copy, Default)]
pub struct RawDecoder;

impl Decoder for RawDecoder {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}
