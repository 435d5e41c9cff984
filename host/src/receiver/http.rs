//! OTLP/HTTP receiver: `POST /v1/traces` with `application/x-protobuf` or `application/json` bodies,
//! `Content-Encoding: gzip` or identity, served with axum.
//!
//! Responses follow the OTLP/HTTP spec: 200 with an `ExportTraceServiceResponse` in the request's content
//! type (with `partial_success` when spans were rejected); errors carry a `google.rpc.Status` body in the
//! request's content type (JSON when the content type itself was the problem): 400 bad input, 413 too
//! large, 415 unsupported content type or encoding, 429 / 503 with `Retry-After` for backpressure and
//! shutdown.

use super::{
    AS_SENT, Accepted, RETRY_AFTER, ReceiveError, ReceiverContext, count_refusal, gunzip_bounded,
    json_to_protobuf, receive,
};
use crate::auth::ReceiverAuth;
use crate::ingest::Refused;
use crate::otlp::rpc::RpcStatus;
use crate::tls::TlsListener;
use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use http::header::{
    CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER as RETRY_AFTER_HEADER,
};
use http::{HeaderMap, HeaderValue, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use prost::Message;
use std::sync::Arc;
use tokio::net::TcpListener;

/// Metric label of this receiver.
pub const RECEIVER: &str = "http";

/// The OTLP/HTTP traces path.
pub const TRACES_PATH: &str = "/v1/traces";

/// Bodies at least this large are decompressed, decoded and scanned on the blocking pool, so a big JSON
/// or gzip request does not stall the other connections of an async worker.
const OFFLOAD_BYTES: usize = 256 * 1024;

const PROTOBUF: &str = "application/x-protobuf";
const JSON: &str = "application/json";

/// Serves OTLP/HTTP on `listener` until `shutdown` completes, then lets in-flight requests finish.
pub async fn serve(
    listener: TcpListener,
    ctx: ReceiverContext,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listener, ctx, None, None, shutdown).await
}

/// [`serve`] with TLS ([`TlsListener`]) and authentication of every request, each optional. Without
/// them the request path is exactly [`serve`]'s.
pub async fn serve_with(
    listener: TcpListener,
    ctx: ReceiverContext,
    tls: Option<Arc<rustls::ServerConfig>>,
    auth: Option<ReceiverAuth>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let mut app = router(ctx);
    if let Some(auth) = auth {
        app = app.layer(axum::middleware::from_fn_with_state(
            Arc::new(auth),
            require_auth,
        ));
    }
    match tls {
        None => {
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
        }
        Some(config) => {
            axum::serve(TlsListener::new(listener, config)?, app)
                .with_graceful_shutdown(shutdown)
                .await
        }
    }
}

/// Refuses a request without the configured credential (401) before its body is read.
async fn require_auth(
    State(auth): State<Arc<ReceiverAuth>>,
    req: Request,
    next: axum::middleware::Next,
) -> Response {
    match auth.check(req.headers()) {
        Ok(()) => next.run(req).await,
        Err(failure) => auth.http_response(failure, req.headers()),
    }
}

/// The receiver's routes: `POST /v1/traces`; other methods get 405, other paths 404.
pub fn router(ctx: ReceiverContext) -> Router {
    Router::new()
        .route(TRACES_PATH, post(export))
        // The body is read with our own limit (compressed and decompressed), not axum's 2 MB default.
        .layer(DefaultBodyLimit::disable())
        .with_state(Arc::new(ctx))
}

/// The wire format of a request and of its response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Protobuf,
    Json,
}

async fn export(State(ctx): State<Arc<ReceiverContext>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let format = match format_of(&parts.headers) {
        Ok(format) => format,
        Err(err) => {
            count_refusal(&ctx.metrics, RECEIVER, &err);
            return error_response(Format::Json, &err);
        }
    };
    match handle(&ctx, &parts.headers, format, body).await {
        Ok(accepted) => success_response(format, &accepted),
        Err(err) => error_response(format, &err),
    }
}

/// Reads, decodes and receives one request; every error is counted once.
async fn handle(
    ctx: &Arc<ReceiverContext>,
    headers: &HeaderMap,
    format: Format,
    body: Body,
) -> Result<Accepted, ReceiveError> {
    let read = async {
        let gzip = is_gzip(headers)?;
        let body = read_body(body, headers, ctx.max_body_bytes).await?;
        Ok((gzip, body))
    };
    let (gzip, body) = read
        .await
        .inspect_err(|err| count_refusal(&ctx.metrics, RECEIVER, err))?;
    if body.len() < OFFLOAD_BYTES {
        return process(ctx, format, gzip, &body);
    }
    let ctx = Arc::clone(ctx);
    tokio::task::spawn_blocking(move || process(&ctx, format, gzip, &body))
        .await
        .unwrap_or_else(|e| Err(ReceiveError::Internal(e.to_string())))
}

/// The CPU part: decompress (bounded), JSON to protobuf, scan and submit.
fn process(
    ctx: &ReceiverContext,
    format: Format,
    gzip: bool,
    body: &Bytes,
) -> Result<Accepted, ReceiveError> {
    let decode = || {
        let body = if gzip {
            gunzip_bounded(body, ctx.max_body_bytes)?
        } else {
            body.clone()
        };
        match format {
            Format::Protobuf => Ok(body),
            Format::Json => json_to_protobuf(&body),
        }
    };
    let body = decode().inspect_err(|err| count_refusal(&ctx.metrics, RECEIVER, err))?;
    receive(ctx, RECEIVER, &body)
}

/// Reads the whole body, refusing it as soon as it passes `limit` bytes (or up front, when its
/// `Content-Length` says it will).
async fn read_body(body: Body, headers: &HeaderMap, limit: usize) -> Result<Bytes, ReceiveError> {
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(ReceiveError::TooLarge {
            limit,
            stage: AS_SENT,
        });
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(ReceiveError::TooLarge {
            limit,
            stage: AS_SENT,
        }),
        Err(e) => Err(ReceiveError::BodyRead(e.to_string())),
    }
}

/// The request's format from `Content-Type` (parameters such as `charset` are ignored).
fn format_of(headers: &HeaderMap) -> Result<Format, ReceiveError> {
    let value = headers
        .get(CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let raw = value.as_deref().unwrap_or("");
    let media = raw.split(';').next().unwrap_or("").trim();
    if media.eq_ignore_ascii_case(PROTOBUF) {
        Ok(Format::Protobuf)
    } else if media.eq_ignore_ascii_case(JSON) {
        Ok(Format::Json)
    } else if value.is_none() {
        Err(ReceiveError::UnsupportedMediaType("(none)".into()))
    } else {
        Err(ReceiveError::UnsupportedMediaType(raw.into()))
    }
}

/// True for `Content-Encoding: gzip`, false for none or `identity`; anything else is refused.
fn is_gzip(headers: &HeaderMap) -> Result<bool, ReceiveError> {
    let Some(value) = headers.get(CONTENT_ENCODING) else {
        return Ok(false);
    };
    let raw = String::from_utf8_lossy(value.as_bytes());
    match raw.trim() {
        v if v.eq_ignore_ascii_case("gzip") || v.eq_ignore_ascii_case("x-gzip") => Ok(true),
        v if v.is_empty() || v.eq_ignore_ascii_case("identity") => Ok(false),
        v => Err(ReceiveError::UnsupportedEncoding(v.into())),
    }
}

fn success_response(format: Format, accepted: &Accepted) -> Response {
    match format {
        Format::Protobuf => (
            [(CONTENT_TYPE, PROTOBUF)],
            accepted.response().encode_to_vec(),
        )
            .into_response(),
        Format::Json => {
            ([(CONTENT_TYPE, JSON)], accepted.response_json().to_string()).into_response()
        }
    }
}

/// The HTTP status for a refusal (see the module header).
fn http_status(err: &ReceiveError) -> StatusCode {
    match err {
        ReceiveError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        ReceiveError::UnsupportedEncoding(_) | ReceiveError::UnsupportedMediaType(_) => {
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        }
        ReceiveError::BadGzip(_)
        | ReceiveError::MalformedJson(_)
        | ReceiveError::Malformed(_)
        | ReceiveError::BodyRead(_) => StatusCode::BAD_REQUEST,
        ReceiveError::Refused(Refused::QueueFull | Refused::MemoryPressure) => {
            StatusCode::TOO_MANY_REQUESTS
        }
        ReceiveError::Refused(Refused::ShuttingDown) => StatusCode::SERVICE_UNAVAILABLE,
        ReceiveError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// An error response with a `google.rpc.Status` body in `format`, and `Retry-After` when retryable.
fn error_response(format: Format, err: &ReceiveError) -> Response {
    let status = RpcStatus {
        code: super::grpc::to_status(err).code() as i32,
        message: err.to_string(),
        details: Vec::new(),
    };
    let mut response = match format {
        Format::Protobuf => ([(CONTENT_TYPE, PROTOBUF)], status.encode_to_vec()).into_response(),
        Format::Json => {
            let body = serde_json::json!({ "code": status.code, "message": status.message });
            ([(CONTENT_TYPE, JSON)], body.to_string()).into_response()
        }
    };
    *response.status_mut() = http_status(err);
    if err.is_retryable() {
        response
            .headers_mut()
            .insert(RETRY_AFTER_HEADER, HeaderValue::from(RETRY_AFTER.as_secs()));
    }
    response
}
