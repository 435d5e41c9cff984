//! OTLP receivers: gRPC `TraceService/Export` and HTTP `POST /v1/traces` (protobuf and JSON, gzip). They
//! validate, count, and hand spans to the buffer through the ingest queue; a full queue or memory pressure
//! becomes backpressure for the client.
//!
//! Both receivers share one path once the transport is peeled off: [`gunzip_bounded`] (HTTP only: tonic
//! decompresses gRPC itself, within the same bound), [`json_to_protobuf`] (OTLP/JSON is decoded with
//! `prost` and re-encoded, so JSON and protobuf meet in the same validating scan), then [`receive`], which
//! scans, counts and submits. Each transport only maps a [`ReceiveError`] to its own status codes.

pub mod grpc;
pub mod http;

use crate::ingest::{IngestHandle, Refused, SpanBatch};
use crate::metrics::{Metrics, ReceiverLabels, RefusedLabels};
use crate::otlp::{ScanError, scan_export_request_with};
use bytes::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceResponse,
};
use prost::Message;
use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

/// What every receiver needs.
#[derive(Clone)]
pub struct ReceiverContext {
    /// Where accepted spans go.
    pub ingest: IngestHandle,
    /// Where receivers count received and refused spans and requests.
    pub metrics: Arc<Metrics>,
    /// Largest request accepted, counted both as received (compressed) and decompressed.
    pub max_body_bytes: usize,
}

/// How long a client told to back off (429 / `RESOURCE_EXHAUSTED` / 503) should wait before retrying:
/// long enough for the buffer to decide a few traces, short enough not to build a backlog in the client.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Why a request was not accepted (as a whole). Each receiver maps these to its transport's codes; the
/// messages are sent to the client, so they say what was wrong and where.
#[derive(Debug, thiserror::Error)]
pub enum ReceiveError {
    /// The body, compressed or decompressed, is larger than the configured maximum.
    #[error("request body exceeds the limit of {limit} bytes {stage}")]
    TooLarge {
        /// The configured maximum in bytes.
        limit: usize,
        /// `as sent` or `once decompressed` (a compression bomb, or just a big batch).
        stage: &'static str,
    },
    /// `Content-Encoding: gzip` but the body is not valid gzip.
    #[error("invalid gzip body: {0}")]
    BadGzip(String),
    /// A `Content-Encoding` other than gzip or identity.
    #[error("unsupported Content-Encoding {0:?}: use gzip or identity")]
    UnsupportedEncoding(String),
    /// A `Content-Type` other than protobuf or JSON.
    #[error("unsupported Content-Type {0:?}: use application/x-protobuf or application/json")]
    UnsupportedMediaType(String),
    /// The body is not an OTLP/JSON `ExportTraceServiceRequest`.
    #[error("malformed OTLP/JSON trace request: {0}")]
    MalformedJson(String),
    /// The body is not a valid protobuf `ExportTraceServiceRequest`; the message names the place.
    #[error(transparent)]
    Malformed(#[from] ScanError),
    /// The body could not be read off the connection.
    #[error("could not read the request body: {0}")]
    BodyRead(String),
    /// The ingest queue refused the spans (backpressure or shutdown).
    #[error(transparent)]
    Refused(#[from] Refused),
    /// A bug: the decoding task failed.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ReceiveError {
    /// Label for `tailgate_requests_refused_total{reason}`.
    pub fn reason(&self) -> &'static str {
        match self {
            ReceiveError::TooLarge { .. } => "too_large",
            ReceiveError::BadGzip(_) => "bad_compression",
            ReceiveError::UnsupportedEncoding(_) => "unsupported_encoding",
            ReceiveError::UnsupportedMediaType(_) => "unsupported_media_type",
            ReceiveError::MalformedJson(_) | ReceiveError::Malformed(_) => "malformed",
            ReceiveError::BodyRead(_) => "body_read",
            ReceiveError::Refused(r) => r.reason(),
            ReceiveError::Internal(_) => "internal",
        }
    }

    /// True when the client should retry the same request later (backpressure or shutdown).
    pub fn is_retryable(&self) -> bool {
        matches!(self, ReceiveError::Refused(_))
    }
}

/// An accepted request: how many spans went to the buffer and how many were refused one by one.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// Spans handed to the ingest queue.
    pub spans: u64,
    /// Spans refused one by one (bad ids); reported in `partial_success`.
    pub rejected: u64,
    /// For `partial_success.error_message`; `None` when nothing was rejected.
    pub rejection_message: Option<String>,
}

impl Accepted {
    /// The OTLP response: `partial_success` only when spans were rejected, as the spec asks.
    pub fn response(&self) -> ExportTraceServiceResponse {
        ExportTraceServiceResponse {
            partial_success: (self.rejected > 0).then(|| ExportTracePartialSuccess {
                rejected_spans: i64::try_from(self.rejected).unwrap_or(i64::MAX),
                error_message: self.rejection_message.clone().unwrap_or_default(),
            }),
        }
    }

    /// The OTLP/JSON form of [`Accepted::response`] (int64 as a string, per the protobuf JSON mapping).
    pub fn response_json(&self) -> serde_json::Value {
        match self.rejected {
            0 => serde_json::json!({}),
            n => serde_json::json!({
                "partialSuccess": {
                    "rejectedSpans": n.to_string(),
                    "errorMessage": self.rejection_message.clone().unwrap_or_default(),
                }
            }),
        }
    }
}

/// Scans a protobuf `ExportTraceServiceRequest`, counts what was rejected span by span, and hands the
/// valid spans to the ingest queue. On error, the request is counted as refused (with its spans where
/// they are known) and logged; the caller only maps the error to its transport.
pub fn receive(
    ctx: &ReceiverContext,
    receiver: &'static str,
    body: &Bytes,
) -> Result<Accepted, ReceiveError> {
    let result = scan_and_submit(ctx, receiver, body);
    if let Err(err) = &result {
        count_refusal(&ctx.metrics, receiver, err);
    }
    result
}

fn scan_and_submit(
    ctx: &ReceiverContext,
    receiver: &'static str,
    body: &Bytes,
) -> Result<Accepted, ReceiveError> {
    let scanned = scan_export_request_with(body, &ctx.ingest.predicates())?;
    for (why, n) in &scanned.rejected {
        ctx.metrics.refused(receiver, why.as_str(), *n);
    }
    let accepted = Accepted {
        spans: scanned.spans.len() as u64,
        rejected: scanned.rejected_count(),
        rejection_message: scanned.rejection_message(),
    };
    if accepted.rejected > 0 {
        tracing::debug!(
            receiver,
            rejected = accepted.rejected,
            accepted = accepted.spans,
            message = accepted.rejection_message.as_deref().unwrap_or(""),
            "rejected spans of an OTLP export request"
        );
    }
    if accepted.spans > 0 {
        if let Err(refused) = ctx.ingest.try_submit(SpanBatch::from_scanned(scanned)) {
            ctx.metrics
                .refused(receiver, refused.reason(), accepted.spans);
            return Err(refused.into());
        }
        ctx.metrics
            .spans_received
            .get_or_create(&ReceiverLabels { receiver })
            .inc_by(accepted.spans);
    }
    Ok(accepted)
}

/// Counts and logs a request refused whole. [`receive`] calls it itself; receivers call it for what they
/// refuse before [`receive`] (size, encoding, content type).
pub fn count_refusal(metrics: &Metrics, receiver: &'static str, err: &ReceiveError) {
    let reason = err.reason();
    metrics
        .requests_refused
        .get_or_create(&RefusedLabels { receiver, reason })
        .inc();
    tracing::debug!(receiver, reason, error = %err, "refused OTLP export request");
}

/// `ReceiveError::TooLarge::stage` when the body as sent is too large.
pub const AS_SENT: &str = "as sent";
/// `ReceiveError::TooLarge::stage` when the body is too large once decompressed.
pub const DECOMPRESSED: &str = "once decompressed";

/// Decompresses a gzip body, refusing it as soon as the output would pass `limit` bytes: at most
/// `limit + 1` bytes are ever inflated, whatever the compression ratio.
pub fn gunzip_bounded(body: &[u8], limit: usize) -> Result<Bytes, ReceiveError> {
    // Guess a typical OTLP ratio for the first allocation; the vector grows as needed up to the limit.
    let mut out = Vec::with_capacity(body.len().saturating_mul(4).min(limit.saturating_add(1)));
    let mut decoder = flate2::read::MultiGzDecoder::new(body).take(limit as u64 + 1);
    decoder
        .read_to_end(&mut out)
        .map_err(|e| ReceiveError::BadGzip(e.to_string()))?;
    if out.len() > limit {
        return Err(ReceiveError::TooLarge {
            limit,
            stage: DECOMPRESSED,
        });
    }
    Ok(Bytes::from(out))
}

/// Decodes an OTLP/JSON `ExportTraceServiceRequest` (hex ids, lowerCamelCase names, integer enums, unknown
/// fields ignored) and re-encodes it as protobuf for the scan.
pub fn json_to_protobuf(body: &[u8]) -> Result<Bytes, ReceiveError> {
    let request: opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest =
        serde_json::from_slice(body).map_err(|e| ReceiveError::MalformedJson(e.to_string()))?;
    Ok(Bytes::from(request.encode_to_vec()))
}

#[cfg(test)]
mod hostile_tests;
#[cfg(test)]
mod tests;
